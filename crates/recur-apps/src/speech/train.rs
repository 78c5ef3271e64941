//! Training the spoken-digit classifier: the [`SpeechTask`] of the one training loop
//! ([`recur::train::Trainer`]). Each epoch is a new length-bucketed shuffle of the training
//! recordings ([`epoch_batches`]); the loss is the cross-entropy of the pooled digit scores; the
//! learning rate follows a cosine over the epochs; the validation recordings' loss is the metric,
//! evaluated after every epoch (without validation recordings the last epoch counts as the best).
//! The loop gives it the budgets, the best and latest checkpoints, exact resume (also in the
//! middle of an epoch: the epoch's batch order is part of the saved state), the stop flag and the
//! NaN stop.

use super::classifier::{
    engine_batch, epoch_batches, evaluate, loss_and_dlogits, make_batch, Batch, Example,
    Normalizer, Tally,
};
use super::features::FeatureConfig;
use recur::checkpoint::Checkpoint;
use recur::engine::{Engine, Start};
use recur::error::{Error, Result};
use recur::model::ModelConfig;
use recur::optim::OptimKind;
use recur::rng::Rng;
use recur::train::{Budget, Run, Schedule, Settings, StepLoss, Task, TrainState, Trainer};
use serde::{Deserialize, Serialize};

/// Marks a checkpoint's training state as a speech run's (`config.kind`).
pub const KIND: &str = "speech";
/// Utterances per batch when evaluating.
pub const EVAL_BATCH: usize = 64;

/// Settings of a run that must stay fixed across a resume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    /// The speaker held out of training entirely, if any.
    pub holdout: Option<String>,
    /// Takes (inclusive range) held out of training for validation.
    pub val_takes: Option<(u32, u32)>,
    pub epochs: usize,
    pub batch_size: usize,
    /// Adam's learning rate at the first epoch.
    pub learning_rate: f64,
    /// The last epoch's learning rate as a fraction of the first.
    pub lr_floor: f64,
    /// Clip the gradient's global norm to this (0 = off).
    pub grad_clip: f64,
    /// Seeds the initial weights, the batch order and the dropout masks.
    pub seed: u64,
    pub warp_copies: usize,
    pub warp_max: f64,
}

/// A speech run's configuration, kept in its checkpoints: what the recognizer needs to turn a
/// recording into its input (features, normaliser) and the run's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpeechConfig {
    /// Always [`KIND`].
    pub kind: String,
    pub features: FeatureConfig,
    pub normalizer: Normalizer,
    pub hyper: Hyper,
}

/// The spoken-digit classifier as a [`Task`].
pub struct SpeechTask {
    train: Vec<Example>,
    val: Vec<Example>,
    batch_size: usize,
    // this epoch's batches (indices into train)
    order: Vec<Vec<usize>>,
    current: Option<Batch>,
    // the training loss and accuracy since the last log row; the last validation accuracy
    tally: Tally,
    val_acc: Option<f64>,
    // a data-parallel run: this rank and the number of ranks
    share: Option<(usize, usize)>,
}

/// What a speech run remembers besides the loop's state.
#[derive(Serialize, Deserialize)]
struct SpeechState {
    train_size: usize,
    val_size: usize,
    order: Vec<Vec<usize>>,
    tally: Tally,
    val_acc: Option<f64>,
}

impl SpeechTask {
    /// The task on normalised `train` and `val` examples in batches of `batch_size`.
    pub fn new(train: Vec<Example>, val: Vec<Example>, batch_size: usize) -> Result<Self> {
        if train.is_empty() {
            return Err(Error::data("no training recordings"));
        }
        if batch_size == 0 {
            return Err(Error::invalid("the batch size must be at least 1"));
        }
        Ok(SpeechTask {
            train,
            val,
            batch_size,
            order: Vec::new(),
            current: None,
            tally: Tally::default(),
            val_acc: None,
            share: None,
        })
    }

    /// The validation recordings.
    pub fn val(&self) -> &[Example] {
        &self.val
    }

    /// The task's numbers of a log row: the training tally `t` since the last row and the
    /// last validation accuracy.
    fn row(&self, t: &Tally) -> serde_json::Value {
        serde_json::json!({
            "train_acc": t.accuracy(),
            "train_loss_per_utterance": t.mean_loss(),
            "val_acc": self.val_acc,
        })
    }
}

impl Task for SpeechTask {
    type Config = SpeechConfig;

    fn settings(cfg: &SpeechConfig) -> Settings {
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

    fn init(cfg: &SpeechConfig) -> (u64, OptimKind) {
        let adam = OptimKind::parse("adam", 0.0).expect("adam is an optimizer");
        (cfg.hyper.seed, adam)
    }

    fn check_config(cfg: &SpeechConfig, model: &ModelConfig) -> Result<()> {
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
        self.order = epoch_batches(&self.train, self.batch_size, rng);
        Ok(())
    }

    fn forward_loss(&mut self, k: u64, eng: &mut dyn Engine, rng: &mut Rng) -> Result<StepLoss> {
        let idx = self
            .order
            .get(k as usize)
            .ok_or_else(|| Error::invalid(format!("batch {k} is past this epoch's batches")))?;
        // a data-parallel rank takes its contiguous share of the (length-sorted) batch; the
        // shares differ by at most one utterance, so each scales its summed loss by the ranks
        // over the whole batch's size, and the loop's average over the ranks is the batch's mean
        // (one process is rank 0 of 1: the batch's mean itself)
        let (idx, ranks, whole) = rank_share(idx, self.share);
        let scale = ranks as f32 / whole as f32;
        let batch = make_batch(&self.train, idx);
        eng.forward(&engine_batch(&batch), Start::Zero, Some(rng))?;
        let logits = eng.logits()?.into_owned();
        let mut dlogits = vec![0.0f32; logits.len()];
        let tally = loss_and_dlogits(eng.model(), &logits, &batch, &mut dlogits, scale);
        eng.set_dlogits(&dlogits)?;
        self.tally.add(tally);
        let b = batch.b;
        self.current = Some(batch);
        Ok(StepLoss {
            loss: tally.loss * ranks as f64 / whole as f64,
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

    fn split(&mut self, rank: usize, size: usize) -> Result<()> {
        check_shares(self.train.len(), self.batch_size, size, "recordings")?;
        self.share = Some((rank, size));
        Ok(())
    }

    fn evaluate(&mut self, eng: &mut dyn Engine) -> Result<Option<f64>> {
        if self.val.is_empty() {
            return Ok(None);
        }
        let ev = evaluate(eng, &self.val, EVAL_BATCH)?;
        self.val_acc = Some(ev.tally.accuracy());
        Ok(Some(ev.tally.mean_loss()))
    }

    /// The validation recordings shared out among the ranks; losses, hits and counts summed.
    fn evaluate_shared(
        &mut self,
        eng: &mut dyn Engine,
        part: &dyn recur::collective::Collective,
    ) -> Result<Option<f64>> {
        if self.val.is_empty() {
            return Ok(None);
        }
        let mine = recur::collective::part(self.val.len(), part.rank(), part.size());
        let t = evaluate(eng, &self.val[mine], EVAL_BATCH)?
            .tally
            .summed(part)?;
        self.val_acc = Some(t.accuracy());
        Ok(Some(t.mean_loss()))
    }

    fn better(&self, metric: Option<f64>, best: Option<f64>) -> bool {
        // without validation recordings the last epoch is the best
        match (metric, best) {
            (Some(m), Some(b)) => m < b,
            _ => true,
        }
    }

    fn row_extra(&mut self) -> serde_json::Value {
        let t = std::mem::take(&mut self.tally);
        self.row(&t)
    }

    /// The training accuracy and loss over every rank's recordings since the last row.
    fn row_extra_shared(
        &mut self,
        part: &dyn recur::collective::Collective,
    ) -> Result<serde_json::Value> {
        let t = std::mem::take(&mut self.tally).summed(part)?;
        Ok(self.row(&t))
    }

    fn state(&self) -> serde_json::Value {
        serde_json::to_value(SpeechState {
            train_size: self.train.len(),
            val_size: self.val.len(),
            order: self.order.clone(),
            tally: self.tally,
            val_acc: self.val_acc,
        })
        .expect("the speech state serialises")
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        let s: SpeechState = serde_json::from_value(state.clone()).map_err(|e| {
            Error::invalid(format!("the checkpoint's speech state is unreadable: {e}"))
        })?;
        check_saved_sets(
            (s.train_size, s.val_size),
            (self.train.len(), self.val.len()),
            &s.order,
            "recordings",
            "the same --data, --holdout, --val-takes and augmentation",
        )?;
        self.order = s.order;
        self.tally = s.tally;
        self.val_acc = s.val_acc;
        Ok(())
    }
}

/// That a saved run's (training, validation) set sizes are these and its batch order indexes
/// into the training set (shared with the transcriber's runs); `what` names the items, `hint`
/// how to resume.
pub(super) fn check_saved_sets(
    saved: (usize, usize),
    now: (usize, usize),
    order: &[Vec<usize>],
    what: &str,
    hint: &str,
) -> Result<()> {
    if saved != now {
        return Err(Error::invalid(format!(
            "the checkpoint was trained on {} training and {} validation {what}, these are {} and \
             {} (resume with {hint})",
            saved.0, saved.1, now.0, now.1
        )));
    }
    if order.iter().flatten().any(|&i| i >= now.0) {
        return Err(Error::invalid(format!(
            "the checkpoint's batch order does not fit the {what}"
        )));
    }
    Ok(())
}

/// Checks that every batch of `bs` of `n` training items gives each of `size` ranks at least
/// one (a data-parallel run of a classifier or of the transcriber).
pub(super) fn check_shares(n: usize, bs: usize, size: usize, what: &str) -> Result<()> {
    if bs < size {
        return Err(Error::invalid(format!(
            "a batch of {bs} {what} does not give each of {size} ranks one: choose \
             --batch-size {size} or more"
        )));
    }
    let last = n % bs;
    if last > 0 && last < size {
        return Err(Error::invalid(format!(
            "{n} training {what} in batches of {bs} end with a batch of {last}, fewer than the \
             {size} ranks: choose another --batch-size"
        )));
    }
    Ok(())
}

/// A data-parallel rank's contiguous share of a batch `idx` (`share`: (rank, ranks); the whole
/// batch in one process), with the rank count and the batch's size, by which a rank scales
/// what it sums over its share so that the loop's average over the ranks is the batch's.
pub(super) fn rank_share(idx: &[usize], share: Option<(usize, usize)>) -> (&[usize], usize, usize) {
    let (r, ranks) = share.unwrap_or((0, 1));
    let whole = idx.len();
    (
        &idx[r * whole / ranks..(r + 1) * whole / ranks],
        ranks,
        whole,
    )
}

/// A speech run.
pub type SpeechTrainer = Trainer<SpeechTask>;

/// The budget of a speech run: its configuration's epochs.
fn budget(cfg: &SpeechConfig) -> Budget {
    Budget {
        epochs: Some(cfg.hyper.epochs as f64),
        ..Budget::default()
    }
}

/// A fresh run of the classifier `model` with `config` on normalised `train` / `val` examples,
/// opened as `run` says (backend, checkpoint directory): weights from `config.hyper.seed`,
/// Adam, `config.hyper.epochs` epochs.
pub fn start(
    run: Run,
    model: ModelConfig,
    config: SpeechConfig,
    train: Vec<Example>,
    val: Vec<Example>,
) -> Result<SpeechTrainer> {
    let task = SpeechTask::new(train, val, config.hyper.batch_size)?;
    run.budget(budget(&config)).start(model, task, config)
}

/// Continues the run saved in `ckpt` on the same `train` / `val` examples.
pub fn resume(
    run: Run,
    ckpt: Checkpoint,
    train: Vec<Example>,
    val: Vec<Example>,
) -> Result<SpeechTrainer> {
    let cfg = config_of(&ckpt)?;
    let task = SpeechTask::new(train, val, cfg.hyper.batch_size)?;
    run.budget(budget(&cfg)).resume(ckpt, task)
}

/// The speech configuration of a checkpoint (features, normaliser, settings), checked against
/// its model.
pub fn config_of(ckpt: &Checkpoint) -> Result<SpeechConfig> {
    let cfg: SpeechConfig = config_of_kind(ckpt, KIND, "speech")?;
    check_config(&cfg, &ckpt.model)?;
    Ok(cfg)
}

/// A checkpoint's training configuration when its `config.kind` is `kind` (`what` names the
/// kind of run in the error); shared with the transcriber's runs.
pub(super) fn config_of_kind<C: serde::de::DeserializeOwned>(
    ckpt: &Checkpoint,
    kind: &str,
    what: &str,
) -> Result<C> {
    let v = ckpt
        .train_state
        .as_ref()
        .ok_or_else(|| Error::invalid(format!("not a {what} checkpoint (no train_state)")))?;
    let c = v.get("config").unwrap_or(&serde_json::Value::Null);
    if c.get("kind").and_then(|k| k.as_str()) != Some(kind) {
        return Err(Error::invalid(format!(
            "not a {what} checkpoint (train_state.config.kind is not \"{kind}\")"
        )));
    }
    Ok(TrainState::<C>::of(ckpt)?.config)
}

fn check_config(cfg: &SpeechConfig, model: &ModelConfig) -> Result<()> {
    super::classifier::check_model(model)?;
    check_input(&cfg.features, &cfg.normalizer, model)
}

/// That the normaliser and the model take the features' dimension (shared with the
/// transcriber's runs).
pub(super) fn check_input(
    features: &FeatureConfig,
    normalizer: &Normalizer,
    model: &ModelConfig,
) -> Result<()> {
    let dim = features.dim();
    if normalizer.mean.len() != dim || normalizer.std.len() != dim {
        return Err(Error::invalid(format!(
            "normaliser has {} features but the feature settings give {dim}",
            normalizer.mean.len()
        )));
    }
    if model.input_size != dim {
        return Err(Error::invalid(format!(
            "the model takes {} features per frame but the feature settings give {dim}",
            model.input_size
        )));
    }
    Ok(())
}
