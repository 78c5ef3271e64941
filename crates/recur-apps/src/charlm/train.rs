//! Training a character language model: the [`CharTask`] of the one training loop
//! ([`recur::train::Trainer`]). Truncated BPTT over B parallel streams with the hidden state
//! carried from batch to batch, step-wise learning-rate decay, the validation text's loss as the
//! metric. The loop gives it budgets, evaluation, the best and the latest checkpoints, exact
//! resume, the stop flag and the NaN stop; [`start`] and [`resume`] open a run on a corpus.

use crate::charlm::data::{self, Streams};
use recur::checkpoint::Checkpoint;
use recur::engine::{Batch, Engine, LossTargets, Start};
use recur::error::{Error, Result};
use recur::model::ModelConfig;
use recur::optim::OptimKind;
use recur::rng::Rng;
use recur::train::{Schedule, Settings, StepLoss, Task};
use serde::{Deserialize, Serialize};

pub use recur::train::{
    check_dir_writable, Budget, Event, LogRow, Run, StepInfo, StopReason, BEST, LATEST,
};

/// A character-model run: the one training loop on a [`CharTask`].
pub type Trainer = recur::train::Trainer<CharTask>;
/// A character-model run's saved state.
pub type TrainState = recur::train::TrainState<TrainConfig>;

/// What a run trains and how. Fixed for the life of a run (a resumed run keeps it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The model (its vocabulary size must match the corpus').
    pub model: ModelConfig,
    /// B: parallel streams per batch.
    pub batch_size: usize,
    /// T: steps per batch (the truncation length of BPTT).
    pub seq_length: usize,
    /// The update rule. Default Adam.
    pub optim: OptimKind,
    /// Initial learning rate.
    pub lr: f64,
    /// The learning rate is multiplied by this every `lr_decay_every` steps (1 = no decay).
    pub lr_decay: f64,
    /// Steps between decays (0 = never).
    pub lr_decay_every: u64,
    /// Clip the global gradient norm to this (0 = off).
    pub grad_clip: f64,
    /// Clamp every gradient element to [-v, v] (0 = off), before the norm clipping.
    pub grad_clip_value: f64,
    /// Seeds the initial weights and the dropout masks.
    pub seed: u64,
    /// Steps between evaluations on the validation text (0 = only at the end).
    pub eval_every: u64,
    /// Steps between training-loss rows in the log between evaluations (0 = only at evaluations).
    #[serde(default)]
    pub log_every: u64,
    /// The learning-rate schedule; `None` (and older runs): step decay by `lr_decay` every
    /// `lr_decay_every` steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// Decay of a moving average of the weights kept beside them, evaluated and checkpointed
    /// (0 = none; [`recur::train::Settings::ema`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ema: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// The character model as a [`Task`]: the training text as B streams read T steps at a time in
/// order (the hidden state carried from batch to batch, zeroed at each epoch), the validation
/// text's loss (nats/char) as the metric.
pub struct CharTask {
    streams: Streams,
    train: Vec<u32>,
    val: Vec<u32>,
    // inputs, targets: (T, B)
    inputs: Vec<u32>,
    targets: Vec<u32>,
    t: usize,
    b: usize,
    // a data-parallel rank's streams of the B, and its columns of inputs and targets
    share: Option<std::ops::Range<usize>>,
    share_inputs: Vec<u32>,
    share_targets: Vec<u32>,
    // streams per validation batch (0: no validation text)
    val_b: usize,
    vocab: Option<Vec<char>>,
}

/// What a character run remembers of its data: fingerprints of the two texts.
#[derive(Serialize, Deserialize)]
struct CharState {
    train_fingerprint: u64,
    val_fingerprint: u64,
}

impl CharTask {
    /// The task of `cfg` on `train` / `val` token ids (val may be empty: no evaluation).
    pub fn new(
        cfg: &TrainConfig,
        train: Vec<u32>,
        val: Vec<u32>,
        vocab: Option<Vec<char>>,
    ) -> Result<Self> {
        let (b, t) = (cfg.batch_size, cfg.seq_length);
        if b == 0 || t == 0 {
            return Err(Error::invalid(
                "batch size and sequence length must be at least 1",
            ));
        }
        let v = cfg.model.input_size as u32;
        if let Some(&bad) = train.iter().chain(&val).find(|&&id| id >= v) {
            return Err(Error::invalid(format!(
                "token id {bad} is outside the model's vocabulary of {v}"
            )));
        }
        let streams = Streams::new(train.len(), b, t)?;
        Ok(CharTask {
            streams,
            val_b: b.min(val.len().saturating_sub(1)),
            train,
            val,
            inputs: vec![0; t * b],
            targets: vec![0; t * b],
            t,
            b,
            share: None,
            share_inputs: Vec::new(),
            share_targets: Vec::new(),
            vocab,
        })
    }

    /// The validation text's ids.
    pub fn val_ids(&self) -> &[u32] {
        &self.val
    }

    /// The inputs, targets and width of the batch this process trains on: the whole (T, B) one,
    /// or its rank's share.
    fn batch(&self) -> (&[u32], &[u32], usize) {
        match &self.share {
            Some(r) => (&self.share_inputs, &self.share_targets, r.len()),
            None => (&self.inputs, &self.targets, self.b),
        }
    }

    /// Batches per epoch (the streams' length over the sequence length).
    pub fn batches(&self) -> u64 {
        self.streams.batches() as u64
    }
}

impl Task for CharTask {
    type Config = TrainConfig;

    fn settings(cfg: &TrainConfig) -> Settings {
        Settings {
            lr: cfg.lr,
            schedule: cfg.schedule.clone().unwrap_or(Schedule::StepDecay {
                decay: cfg.lr_decay,
                every: cfg.lr_decay_every,
            }),
            grad_clip: cfg.grad_clip,
            grad_clip_value: cfg.grad_clip_value,
            eval_every: cfg.eval_every,
            eval_each_epoch: false,
            log_every: cfg.log_every,
            undo_on_divergence: false,
            ema: cfg.ema,
        }
    }

    fn init(cfg: &TrainConfig) -> (u64, OptimKind) {
        (cfg.seed, cfg.optim.clone())
    }

    fn largest_batch(&self) -> (usize, usize) {
        (self.t, self.share.as_ref().map_or(self.b, |r| r.len()))
    }

    /// Rank `rank` trains on streams `rank*B/size .. (rank+1)*B/size` of every batch; the
    /// validation text is read whole by every rank (the same metric everywhere).
    fn split(&mut self, rank: usize, size: usize) -> Result<()> {
        let range = recur::collective::share(self.b, rank, size)?;
        self.share_inputs = vec![0; self.t * range.len()];
        self.share_targets = vec![0; self.t * range.len()];
        self.share = Some(range);
        Ok(())
    }

    fn check_config(cfg: &TrainConfig, model: &ModelConfig) -> Result<()> {
        if &cfg.model != model {
            return Err(Error::invalid(
                "the checkpoint's model differs from its training state's",
            ));
        }
        Ok(())
    }

    fn batches_per_epoch(&self) -> Option<u64> {
        Some(self.streams.batches() as u64)
    }

    fn start_epoch(&mut self, _epoch: u64, eng: &mut dyn Engine, _rng: &mut Rng) -> Result<()> {
        // every stream starts again from its beginning
        eng.reset_carry()
    }

    fn forward_loss(&mut self, k: u64, eng: &mut dyn Engine, rng: &mut Rng) -> Result<StepLoss> {
        self.streams
            .fill(&self.train, k as usize, &mut self.inputs, &mut self.targets);
        if let Some(r) = &self.share {
            // this rank's columns of the (T, B) batch
            let w = r.len();
            for step in 0..self.t {
                let (src, dst) = (step * self.b + r.start..step * self.b + r.end, step * w);
                self.share_inputs[dst..dst + w].copy_from_slice(&self.inputs[src.clone()]);
                self.share_targets[dst..dst + w].copy_from_slice(&self.targets[src]);
            }
        }
        let (inputs, targets, b) = self.batch();
        let n = inputs.len();
        let batch = Batch::tokens(inputs, self.t, b);
        eng.forward(&batch, Start::Carried, Some(rng))?;
        let (sum, count) = eng.loss(LossTargets::Classes(targets), 1.0 / n as f32)?;
        Ok(StepLoss {
            loss: sum / count as f64,
            items: n as u64,
        })
    }

    fn backward(&mut self, eng: &mut dyn Engine) -> Result<()> {
        let (inputs, _, b) = self.batch();
        eng.backward(&Batch::tokens(inputs, self.t, b))
    }

    fn after_update(&mut self, eng: &mut dyn Engine) -> Result<()> {
        eng.keep_carry()
    }

    /// Mean validation loss (nats/char): the validation text read as B streams from a zero
    /// state, T steps at a time with the state carried.
    fn evaluate(&mut self, eng: &mut dyn Engine) -> Result<Option<f64>> {
        if self.val_b == 0 {
            return Ok(None);
        }
        let (sum, count) = eng.stream_loss(&self.val, self.t, self.val_b)?;
        Ok((count > 0).then(|| sum / count as f64))
    }

    /// The validation streams shared out among the ranks (each rank its contiguous share of the
    /// B streams, which is a contiguous piece of the text), losses and counts summed; where B
    /// does not split evenly, every rank measures all of it.
    fn evaluate_shared(
        &mut self,
        eng: &mut dyn Engine,
        part: &dyn recur::collective::Collective,
    ) -> Result<Option<f64>> {
        let (b, size) = (self.val_b, part.size());
        if b == 0 || !b.is_multiple_of(size) || self.val.len() < b + 1 {
            return self.evaluate(eng);
        }
        let s = (self.val.len() - 1) / b;
        let n = b / size;
        let first = part.rank() * n * s;
        let (sum, count) = eng.stream_loss(&self.val[first..first + n * s + 1], self.t, n)?;
        let mut total = [sum, count as f64];
        part.sum_f64(&mut total)?;
        Ok((total[1] > 0.0).then(|| total[0] / total[1]))
    }

    fn state(&self) -> serde_json::Value {
        serde_json::to_value(CharState {
            train_fingerprint: data::fingerprint(&self.train),
            val_fingerprint: data::fingerprint(&self.val),
        })
        .expect("two numbers serialise")
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        let saved: CharState = serde_json::from_value(state.clone()).map_err(|e| {
            Error::invalid(format!(
                "the checkpoint's training state is unreadable: {e}"
            ))
        })?;
        if saved.train_fingerprint != data::fingerprint(&self.train)
            || saved.val_fingerprint != data::fingerprint(&self.val)
        {
            return Err(Error::invalid(
                "the training or validation text differs from the one the checkpoint was trained on \
                 (use the same --data and --val-frac to resume)",
            ));
        }
        Ok(())
    }

    fn vocab(&self) -> Option<Vec<char>> {
        self.vocab.clone()
    }
}

/// A fresh run of `cfg` on `train` / `val` token ids (val may be empty: no evaluation then),
/// opened as `run` says (backend, checkpoint directory, budget, extra). `vocab` is stored in the
/// checkpoints.
pub fn start(
    run: Run,
    cfg: TrainConfig,
    train: Vec<u32>,
    val: Vec<u32>,
    vocab: Option<Vec<char>>,
) -> Result<Trainer> {
    let task = CharTask::new(&cfg, train, val, vocab)?;
    run.start(cfg.model.clone(), task, cfg)
}

/// Continues the run saved in `ckpt` on the same `train` / `val` ids (checked by their
/// fingerprints); a budget given to `run` replaces the saved limits.
pub fn resume(run: Run, ckpt: Checkpoint, train: Vec<u32>, val: Vec<u32>) -> Result<Trainer> {
    let state = TrainState::of(&ckpt)?;
    let task = CharTask::new(&state.config, train, val, ckpt.vocab.clone())?;
    run.resume(ckpt, task)
}
