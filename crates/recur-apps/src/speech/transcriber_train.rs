//! Training the digit-string transcriber: the [`TranscriberTask`] of the one training loop. Each
//! epoch is a new length-bucketed shuffle of the training strings; the loss is CTC's (PyTorch's
//! mean reduction); the learning rate follows a cosine over the epochs; after every epoch the
//! validation strings' loss is the metric (the best checkpoint follows it) and their digit error
//! rate (best path) is logged beside it. The loop gives the budgets, checkpoints, exact resume,
//! the stop flag and the NaN stop.

use super::classifier::{epoch_batches_by, Normalizer};
use super::features::FeatureConfig;
use super::strings::StringSets;
use super::train::{check_input, check_saved_sets, check_shares, config_of_kind, rank_share};
use super::transcriber::{
    check_model, ctc_loss, engine_batch, evaluate, make_batch, Batch, Decoder, StringExample,
};
use recur::checkpoint::Checkpoint;
use recur::engine::{Engine, Start};
use recur::error::{Error, Result};
use recur::model::ModelConfig;
use recur::optim::OptimKind;
use recur::rng::Rng;
use recur::train::{Budget, Run, Schedule, Settings, StepLoss, Task, Trainer};
use serde::{Deserialize, Serialize};

/// Marks a checkpoint's training state as a transcriber run's (`config.kind`).
pub const KIND: &str = "transcriber";
/// Strings per batch when evaluating.
pub const EVAL_BATCH: usize = 32;

/// Settings of a run that must stay fixed across a resume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    pub epochs: usize,
    pub batch_size: usize,
    /// Adam's learning rate at the first epoch.
    pub learning_rate: f64,
    /// The last epoch's learning rate as a fraction of the first.
    pub lr_floor: f64,
    /// Clip the gradient's global norm to this (0 = off).
    pub grad_clip: f64,
    /// Seeds the initial weights and the batch order.
    pub seed: u64,
}

/// A transcriber run's configuration, kept in its checkpoints: what turns audio into the model's
/// input (features, normaliser), the run's settings and, when the run was trained on strings
/// built from a directory of recordings, the recipe of its sets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TranscriberConfig {
    /// Always [`KIND`].
    pub kind: String,
    pub features: FeatureConfig,
    pub normalizer: Normalizer,
    pub hyper: Hyper,
    #[serde(default)]
    pub sets: Option<StringSets>,
}

/// The transcriber as a [`Task`].
pub struct TranscriberTask {
    train: Vec<StringExample>,
    val: Vec<StringExample>,
    batch_size: usize,
    order: Vec<Vec<usize>>,
    current: Option<Batch>,
    /// Training loss summed since the last log row, and the batches in it.
    loss_sum: f64,
    batches: usize,
    val_der: Option<f64>,
    /// A data-parallel rank's place: (rank, ranks); `None` in one process.
    share: Option<(usize, usize)>,
}

#[derive(Serialize, Deserialize)]
struct TranscriberState {
    train_size: usize,
    val_size: usize,
    order: Vec<Vec<usize>>,
    loss_sum: f64,
    batches: usize,
    val_der: Option<f64>,
}

impl TranscriberTask {
    /// The task on normalised `train` and `val` strings in batches of `batch_size`.
    pub fn new(
        train: Vec<StringExample>,
        val: Vec<StringExample>,
        batch_size: usize,
    ) -> Result<Self> {
        if train.is_empty() {
            return Err(Error::data("no training strings"));
        }
        if batch_size == 0 {
            return Err(Error::invalid("the batch size must be at least 1"));
        }
        Ok(TranscriberTask {
            train,
            val,
            batch_size,
            order: Vec::new(),
            current: None,
            loss_sum: 0.0,
            batches: 0,
            val_der: None,
            share: None,
        })
    }
}

impl Task for TranscriberTask {
    type Config = TranscriberConfig;

    fn settings(cfg: &TranscriberConfig) -> Settings {
        let h = &cfg.hyper;
        Settings {
            lr: h.learning_rate,
            schedule: Schedule::CosineEpochs {
                floor: h.lr_floor,
                epochs: h.epochs as u64,
            },
            grad_clip: h.grad_clip,
            grad_clip_value: 0.0,
            eval_every: 0,
            eval_each_epoch: true,
            log_every: 0,
            undo_on_divergence: false,
            ema: 0.0,
        }
    }

    fn init(cfg: &TranscriberConfig) -> (u64, OptimKind) {
        let adam = OptimKind::parse("adam", 0.0).expect("adam is an optimizer");
        (cfg.hyper.seed, adam)
    }

    fn check_config(cfg: &TranscriberConfig, model: &ModelConfig) -> Result<()> {
        check_config(cfg, model)
    }

    fn largest_batch(&self) -> (usize, usize) {
        let longest = self.train.iter().map(|e| e.feats.t).max().unwrap_or(1);
        (longest, self.batch_size)
    }

    fn batches_per_epoch(&self) -> Option<u64> {
        Some(self.train.len().div_ceil(self.batch_size) as u64)
    }

    fn start_epoch(&mut self, _epoch: u64, _eng: &mut dyn Engine, rng: &mut Rng) -> Result<()> {
        let lengths: Vec<usize> = self.train.iter().map(|e| e.feats.t).collect();
        self.order = epoch_batches_by(&lengths, self.batch_size, rng);
        Ok(())
    }

    fn forward_loss(&mut self, k: u64, eng: &mut dyn Engine, rng: &mut Rng) -> Result<StepLoss> {
        let idx = self
            .order
            .get(k as usize)
            .ok_or_else(|| Error::invalid(format!("batch {k} is past this epoch's batches")))?;
        // a data-parallel rank takes its contiguous share of the (length-bucketed) batch. CTC's
        // mean is over the strings of a batch, so a share's mean is weighted by its size: times
        // ranks * share / batch, the loop's average over the ranks is the whole batch's mean
        // (one process is rank 0 of 1: weight 1)
        let (idx, ranks, whole) = rank_share(idx, self.share);
        let weight = (ranks * idx.len()) as f64 / whole as f64;
        let batch = make_batch(&self.train, idx);
        eng.forward(&engine_batch(&batch), Start::Zero, Some(rng))?;
        let logits = eng.logits()?.into_owned();
        let mut dlogits = vec![0.0f32; logits.len()];
        let mut loss = ctc_loss(&logits, &batch, Some(&mut dlogits))?;
        if ranks > 1 {
            loss *= weight;
            for d in &mut dlogits {
                *d *= weight as f32;
            }
        }
        eng.set_dlogits(&dlogits)?;
        self.loss_sum += loss;
        self.batches += 1;
        let b = batch.b;
        self.current = Some(batch);
        Ok(StepLoss {
            loss,
            items: b as u64,
        })
    }

    fn backward(&mut self, eng: &mut dyn Engine) -> Result<()> {
        let batch = self
            .current
            .as_ref()
            .ok_or_else(|| Error::invalid("backward needs a forward first"))?;
        eng.backward(&engine_batch(batch))
    }

    fn evaluate(&mut self, eng: &mut dyn Engine) -> Result<Option<f64>> {
        if self.val.is_empty() {
            return Ok(None);
        }
        let ev = evaluate(eng, &self.val, EVAL_BATCH, Decoder::Greedy)?;
        self.val_der = Some(ev.score.digit_error_rate());
        Ok(Some(ev.loss))
    }

    fn better(&self, metric: Option<f64>, best: Option<f64>) -> bool {
        match (metric, best) {
            (Some(m), Some(b)) => m < b,
            _ => true,
        }
    }

    fn split(&mut self, rank: usize, size: usize) -> Result<()> {
        check_shares(self.train.len(), self.batch_size, size, "strings")?;
        self.share = Some((rank, size));
        Ok(())
    }

    fn row_extra(&mut self) -> serde_json::Value {
        let mean = self.loss_sum / self.batches.max(1) as f64;
        self.loss_sum = 0.0;
        self.batches = 0;
        serde_json::json!({"train_ctc": mean, "val_digit_error_rate": self.val_der})
    }

    /// The training CTC of the log over every rank: the ranks' weighted losses averaged, as the
    /// step losses are.
    fn row_extra_shared(
        &mut self,
        part: &dyn recur::collective::Collective,
    ) -> Result<serde_json::Value> {
        let mut sum = [self.loss_sum];
        part.sum_f64(&mut sum)?;
        self.loss_sum = sum[0] / part.size() as f64;
        Ok(self.row_extra())
    }

    fn state(&self) -> serde_json::Value {
        serde_json::to_value(TranscriberState {
            train_size: self.train.len(),
            val_size: self.val.len(),
            order: self.order.clone(),
            loss_sum: self.loss_sum,
            batches: self.batches,
            val_der: self.val_der,
        })
        .expect("the transcriber state serialises")
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        let s: TranscriberState = serde_json::from_value(state.clone()).map_err(|e| {
            Error::invalid(format!(
                "the checkpoint's transcriber state is unreadable: {e}"
            ))
        })?;
        check_saved_sets(
            (s.train_size, s.val_size),
            (self.train.len(), self.val.len()),
            &s.order,
            "strings",
            "the same strings",
        )?;
        self.order = s.order;
        self.loss_sum = s.loss_sum;
        self.batches = s.batches;
        self.val_der = s.val_der;
        Ok(())
    }
}

/// A transcriber run.
pub type TranscriberTrainer = Trainer<TranscriberTask>;

fn budget(cfg: &TranscriberConfig) -> Budget {
    Budget {
        epochs: Some(cfg.hyper.epochs as f64),
        ..Budget::default()
    }
}

/// A fresh run of `model` with `config` on normalised `train` / `val` strings, opened as `run`
/// says: weights from `config.hyper.seed`, Adam, `config.hyper.epochs` epochs.
pub fn start(
    run: Run,
    model: ModelConfig,
    config: TranscriberConfig,
    train: Vec<StringExample>,
    val: Vec<StringExample>,
) -> Result<TranscriberTrainer> {
    let task = TranscriberTask::new(train, val, config.hyper.batch_size)?;
    run.budget(budget(&config)).start(model, task, config)
}

/// Continues the run saved in `ckpt` on the same strings.
pub fn resume(
    run: Run,
    ckpt: Checkpoint,
    train: Vec<StringExample>,
    val: Vec<StringExample>,
) -> Result<TranscriberTrainer> {
    let cfg = config_of(&ckpt)?;
    let task = TranscriberTask::new(train, val, cfg.hyper.batch_size)?;
    run.budget(budget(&cfg)).resume(ckpt, task)
}

/// The transcriber configuration of a checkpoint, checked against its model.
pub fn config_of(ckpt: &Checkpoint) -> Result<TranscriberConfig> {
    let cfg: TranscriberConfig = config_of_kind(ckpt, KIND, "transcriber")?;
    check_config(&cfg, &ckpt.model)?;
    Ok(cfg)
}

fn check_config(cfg: &TranscriberConfig, model: &ModelConfig) -> Result<()> {
    check_model(model)?;
    check_input(&cfg.features, &cfg.normalizer, model)
}
