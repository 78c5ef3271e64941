//! The training loop of a character language model, as a library: truncated BPTT over B
//! parallel streams with the hidden state carried from batch to batch, an optimizer with
//! clipping and step-wise learning-rate decay, evaluation on the validation text at intervals,
//! the best and the latest checkpoints written atomically, exact resume, a stop flag, and a
//! stop on a NaN or infinite loss that leaves the last good checkpoint alone.
//!
//! Progress goes to a callback ([`Event`]); nothing here prints, reads files other than
//! checkpoints, or looks at the clock except for the `max_minutes` budget and chars/s.
//!
//! One step is: forward -> loss -> backward -> (the slot where a data-parallel all-reduce of the
//! gradients would go) -> clipping -> optimizer update. See [`Trainer::step`]. The math runs in an
//! [`Engine`] (the CPU's by default; [`Trainer::on_backend`] moves the run to another device, e.g.
//! the GPU), so this loop is the same on every device.

use crate::apps::charlm::data::{self, Streams};
use crate::checkpoint::{self, Checkpoint, CheckpointError};
use crate::engine::{Backend, Batch, Cpu, Engine, LossTargets, Start};
use crate::model::{Model, ModelConfig};
use crate::optim::{OptimKind, Optimizer};
use crate::rng::Rng;
use crate::stream::Carry;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// File name of the latest checkpoint inside the checkpoint directory.
pub const LATEST: &str = "latest.safetensors";
/// File name of the checkpoint with the lowest validation loss so far.
pub const BEST: &str = "best.safetensors";

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
}

/// When a run ends: whichever limit comes first. A resumed run may be given new limits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Passes over the training text (fractions allowed).
    pub epochs: Option<f64>,
    /// Optimizer steps in all (counting those before a resume).
    pub max_steps: Option<u64>,
    /// Wall-clock minutes of training in all (counting those before a resume).
    pub max_minutes: Option<f64>,
}

/// One line of the training log: written at every evaluation (with the validation loss) and
/// every `log_every` steps in between (without).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogRow {
    pub step: u64,
    pub epoch: f64,
    pub chars_seen: u64,
    pub elapsed_secs: f64,
    pub lr: f64,
    /// Mean training loss (nats/char) over the steps since the previous row.
    pub train_loss: f64,
    /// Validation loss (nats/char), when there is validation text.
    pub val_loss: Option<f64>,
}

/// Everything besides parameters and optimizer that a resumed run needs; stored as the
/// checkpoint's `train_state`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    pub config: TrainConfig,
    pub budget: Budget,
    /// Optimizer steps taken.
    pub step: u64,
    pub chars_seen: u64,
    /// Training time so far, over all sessions.
    pub elapsed_secs: f64,
    /// The RNG (dropout masks) after the last step.
    pub rng: [u64; 4],
    /// The carried hidden state, as f32 bit patterns so that it is restored exactly.
    pub carry_h: Vec<u32>,
    pub carry_c: Vec<u32>,
    /// Training loss summed over the steps since the last log row, and their count.
    pub acc_loss: f64,
    pub acc_steps: u64,
    /// The lowest validation loss so far and its step.
    pub best_val: Option<f64>,
    pub best_step: Option<u64>,
    pub last_eval_step: Option<u64>,
    pub history: Vec<LogRow>,
    /// Fingerprints ([`data::fingerprint`]) of the training and validation ids.
    pub train_fingerprint: u64,
    pub val_fingerprint: u64,
    /// Whatever the caller wants kept with the run (the CLI: data path, split, preset).
    pub extra: serde_json::Value,
}

/// Why [`Trainer::run`] returned normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The epochs were done.
    Epochs,
    /// `max_steps` was reached.
    MaxSteps,
    /// `max_minutes` ran out.
    MaxMinutes,
    /// The stop flag was raised (Ctrl-C); the latest checkpoint holds the state.
    Stopped,
}

/// Why training could not start or go on.
#[derive(Debug)]
pub enum TrainError {
    /// A bad configuration or data; the message names it.
    Invalid(String),
    /// A loss or gradient norm that is NaN or infinite. Nothing was saved for this step.
    NonFinite {
        step: u64,
        what: &'static str,
        value: f64,
    },
    Checkpoint(CheckpointError),
    /// The engine's device failed (a driver error); the message names it.
    Device(String),
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrainError::Invalid(s) => write!(f, "{s}"),
            TrainError::NonFinite { step, what, value } => {
                write!(f, "the {what} became {value} at step {step}")
            }
            TrainError::Checkpoint(e) => write!(f, "{e}"),
            TrainError::Device(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TrainError {}

impl From<CheckpointError> for TrainError {
    fn from(e: CheckpointError) -> Self {
        TrainError::Checkpoint(e)
    }
}

impl From<crate::Error> for TrainError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Invalid(s) | crate::Error::Data(s) => TrainError::Invalid(s),
            crate::Error::Checkpoint(c) => TrainError::Checkpoint(c),
            e @ crate::Error::OutOfMemory { .. } => TrainError::Invalid(e.to_string()),
            e => TrainError::Device(e.to_string()),
        }
    }
}

impl From<data::DataError> for TrainError {
    fn from(e: data::DataError) -> Self {
        TrainError::Invalid(e.to_string())
    }
}

/// After every optimizer step.
#[derive(Clone, Debug)]
pub struct StepInfo {
    pub step: u64,
    /// The step at which the step or epoch limit ends the run, if there is one.
    pub total_steps: Option<u64>,
    pub epoch: f64,
    /// Mean cross-entropy of this batch (nats/char).
    pub loss: f64,
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    pub chars_seen: u64,
    /// Training characters per second in this session.
    pub chars_per_sec: f64,
    pub elapsed_secs: f64,
    /// `max_minutes` in seconds, if set.
    pub budget_secs: Option<f64>,
}

/// Progress reports of [`Trainer::run`].
pub enum Event<'a> {
    Step(&'a StepInfo),
    /// A training-loss row of the log (no evaluation).
    Log(&'a LogRow),
    /// After an evaluation (and the checkpoints it wrote). `params` are the current ones.
    Eval {
        row: &'a LogRow,
        /// This evaluation set a new best validation loss.
        best: bool,
        /// The run ends after this evaluation.
        last: bool,
        params: &'a [f32],
    },
}

/// A training run in memory.
pub struct Trainer {
    pub model: Model,
    // parameters, gradients, optimizer, carried state and workspaces
    engine: Box<dyn Engine>,
    // the learning rate of the last step (the checkpoint's before the first)
    lr: f64,
    // streams per validation batch (0: no validation text)
    val_b: usize,
    rng: Rng,
    streams: Streams,
    train: Vec<u32>,
    val: Vec<u32>,
    // inputs, targets: (T, B)
    inputs: Vec<u32>,
    targets: Vec<u32>,
    vocab: Option<Vec<char>>,
    ckpt_dir: Option<PathBuf>,
    pub state: TrainState,
}

/// Checks that `dir` exists or can be created and that a file can be written in it.
pub fn check_dir_writable(dir: &Path) -> Result<(), TrainError> {
    let bad = |e: std::io::Error| {
        TrainError::Invalid(format!(
            "checkpoint directory '{}' cannot be written: {}",
            dir.display(),
            e.to_string()
                .split(" (os error")
                .next()
                .unwrap_or("")
                .to_lowercase()
        ))
    };
    std::fs::create_dir_all(dir).map_err(bad)?;
    let probe = dir.join(format!(".recur-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"ok").map_err(bad)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

impl Trainer {
    /// A fresh run on `train` / `val` token ids (val may be empty: no evaluation then).
    /// `vocab` is stored in the checkpoints; `ckpt_dir` (created if needed) receives them.
    pub fn new(
        cfg: TrainConfig,
        budget: Budget,
        train: Vec<u32>,
        val: Vec<u32>,
        vocab: Option<Vec<char>>,
        ckpt_dir: Option<PathBuf>,
        extra: serde_json::Value,
    ) -> Result<Self, TrainError> {
        let model = Model::new(cfg.model.clone()).map_err(TrainError::Invalid)?;
        crate::memory::check_training(&model, cfg.seq_length, cfg.batch_size)
            .map_err(|e| TrainError::Invalid(e.to_string()))?;
        let mut rng = Rng::new(cfg.seed);
        let mut params = vec![0.0f32; model.num_params()];
        model.init(&mut params, &mut rng);
        let opt = Optimizer::new(cfg.optim.clone(), cfg.lr, params.len());
        let carry = Carry::zeros(&model, cfg.batch_size);
        let state = TrainState {
            budget,
            step: 0,
            chars_seen: 0,
            elapsed_secs: 0.0,
            rng: rng.state(),
            carry_h: bits(&carry.h),
            carry_c: bits(&carry.c),
            acc_loss: 0.0,
            acc_steps: 0,
            best_val: None,
            best_step: None,
            last_eval_step: None,
            history: Vec::new(),
            train_fingerprint: data::fingerprint(&train),
            val_fingerprint: data::fingerprint(&val),
            extra,
            config: cfg,
        };
        Self::assemble(model, params, opt, state, train, val, vocab, ckpt_dir)
    }

    /// Continues the run saved in `ckpt` on the same `train` / `val` ids (checked by their
    /// fingerprints). `budget`, when given, replaces the saved limits.
    pub fn resume(
        ckpt: Checkpoint,
        budget: Option<Budget>,
        train: Vec<u32>,
        val: Vec<u32>,
        ckpt_dir: Option<PathBuf>,
    ) -> Result<Self, TrainError> {
        let ts = ckpt.train_state.ok_or_else(|| {
            TrainError::Invalid("the checkpoint has no training state to resume from".into())
        })?;
        let mut state: TrainState = serde_json::from_value(ts).map_err(|e| {
            TrainError::Invalid(format!(
                "the checkpoint's training state is unreadable: {e}"
            ))
        })?;
        if state.config.model != ckpt.model {
            return Err(TrainError::Invalid(
                "the checkpoint's model differs from its training state's".into(),
            ));
        }
        if state.train_fingerprint != data::fingerprint(&train)
            || state.val_fingerprint != data::fingerprint(&val)
        {
            return Err(TrainError::Invalid(
                "the training or validation text differs from the one the checkpoint was trained on \
                 (use the same --data and --val-frac to resume)"
                    .into(),
            ));
        }
        let opt = ckpt.optimizer.ok_or_else(|| {
            TrainError::Invalid("the checkpoint has no optimizer state to resume from".into())
        })?;
        if let Some(b) = budget {
            state.budget = b;
        }
        let model = Model::new(ckpt.model).map_err(TrainError::Invalid)?;
        Self::assemble(
            model,
            ckpt.params,
            opt,
            state,
            train,
            val,
            ckpt.vocab,
            ckpt_dir,
        )
    }

    fn assemble(
        model: Model,
        params: Vec<f32>,
        opt: Optimizer<f32>,
        state: TrainState,
        train: Vec<u32>,
        val: Vec<u32>,
        vocab: Option<Vec<char>>,
        ckpt_dir: Option<PathBuf>,
    ) -> Result<Self, TrainError> {
        let cfg = &state.config;
        let (b, t) = (cfg.batch_size, cfg.seq_length);
        if b == 0 || t == 0 {
            return Err(TrainError::Invalid(
                "batch size and sequence length must be at least 1".into(),
            ));
        }
        let v = model.cfg.input_size as u32;
        if let Some(&bad) = train.iter().chain(&val).find(|&&id| id >= v) {
            return Err(TrainError::Invalid(format!(
                "token id {bad} is outside the model's vocabulary of {v}"
            )));
        }
        let streams = Streams::new(train.len(), b, t)?;
        if let Some(d) = &ckpt_dir {
            check_dir_writable(d)?;
        }
        let mut carry = Carry::zeros(&model, b);
        if state.carry_h.len() != carry.h.len() || state.carry_c.len() != carry.c.len() {
            return Err(TrainError::Invalid(
                "the saved hidden state does not match the model and batch size".into(),
            ));
        }
        unbits(&state.carry_h, &mut carry.h);
        unbits(&state.carry_c, &mut carry.c);
        let val_b = b.min(val.len().saturating_sub(1));
        let lr = opt.lr;
        let mut engine = Cpu.engine(model.clone(), params, Some(opt))?;
        engine.set_carry(&carry)?;
        Ok(Trainer {
            engine,
            lr,
            val_b,
            rng: Rng::from_state(state.rng),
            streams,
            train,
            val,
            inputs: vec![0; t * b],
            targets: vec![0; t * b],
            vocab,
            ckpt_dir,
            model,
            state,
        })
    }

    /// Moves the run to an engine of `backend` (e.g. the GPU): it receives the current
    /// parameters, optimizer and carried state (host copies) and computes from then on. The loop,
    /// checkpoints and their format stay the same.
    pub fn on_backend(mut self, backend: &dyn Backend) -> Result<Self, TrainError> {
        let params = self.engine.params()?.into_owned();
        let opt = self.optimizer()?;
        let carry = self.engine.carry()?.map(|c| c.into_owned());
        let mut engine = backend.engine(self.model.clone(), params, Some(opt))?;
        if let Some(c) = carry {
            engine.set_carry(&c)?;
        }
        self.engine = engine;
        Ok(self)
    }

    /// Where the math runs (`cpu`, or the device of [`Trainer::on_backend`]).
    pub fn device(&self) -> String {
        self.engine.device()
    }

    /// The current parameters (a host copy).
    pub fn params(&self) -> Result<Vec<f32>, TrainError> {
        Ok(self.engine.params()?.into_owned())
    }

    /// Replaces the parameters.
    pub fn set_params(&mut self, params: &[f32]) -> Result<(), TrainError> {
        Ok(self.engine.set_params(params)?)
    }

    /// The optimizer with its state (a host copy).
    pub fn optimizer(&self) -> Result<Optimizer<f32>, TrainError> {
        Ok(self
            .engine
            .optimizer()?
            .ok_or_else(|| TrainError::Invalid("the engine has no optimizer".into()))?
            .into_owned())
    }

    /// Batches per epoch.
    pub fn batches_per_epoch(&self) -> u64 {
        self.streams.batches() as u64
    }

    /// The learning rate for the step after `step` steps.
    pub fn lr_at(&self, step: u64) -> f64 {
        let c = &self.state.config;
        match step.checked_div(c.lr_decay_every) {
            None => c.lr,
            Some(n) => c.lr * c.lr_decay.powi(n as i32),
        }
    }

    /// The step at which the epoch or step limit ends the run.
    pub fn total_steps(&self) -> Option<u64> {
        let b = &self.state.budget;
        let from_epochs = b
            .epochs
            .map(|e| (e * self.batches_per_epoch() as f64).ceil() as u64);
        match (from_epochs, b.max_steps) {
            (Some(a), Some(m)) => Some(a.min(m)),
            (a, m) => a.or(m),
        }
    }

    fn limit_reached(&self) -> Option<Outcome> {
        let b = &self.state.budget;
        let s = self.state.step;
        if let Some(m) = b.max_steps {
            if s >= m {
                return Some(Outcome::MaxSteps);
            }
        }
        if let Some(e) = b.epochs {
            if s >= (e * self.batches_per_epoch() as f64).ceil() as u64 {
                return Some(Outcome::Epochs);
            }
        }
        if let Some(m) = b.max_minutes {
            if self.state.elapsed_secs >= m * 60.0 {
                return Some(Outcome::MaxMinutes);
            }
        }
        None
    }

    /// One optimizer step on the next batch; returns its mean loss (nats/char) and the gradient
    /// norm before clipping. On a NaN or infinite loss or gradient the parameters, optimizer and
    /// carried state are left as they were before the step.
    pub fn step(&mut self) -> Result<(f64, f64), TrainError> {
        let bpe = self.streams.batches() as u64;
        let k = (self.state.step % bpe) as usize;
        if k == 0 {
            // a new epoch: every stream starts again from its beginning
            self.engine.reset_carry()?;
        }
        self.streams
            .fill(&self.train, k, &mut self.inputs, &mut self.targets);
        let n = self.inputs.len();
        let rng_before = self.rng.clone();
        let (t, b) = (self.state.config.seq_length, self.state.config.batch_size);
        let batch = Batch::tokens(&self.inputs, t, b);
        self.engine
            .forward(&batch, Start::Carried, Some(&mut self.rng))?;
        let (sum, count) = self
            .engine
            .loss(LossTargets::Classes(&self.targets), 1.0 / n as f32)?;
        let loss = sum / count as f64;
        let step = self.state.step + 1;
        if !loss.is_finite() {
            self.rng = rng_before;
            return Err(TrainError::NonFinite {
                step,
                what: "training loss",
                value: loss,
            });
        }
        let cfg = &self.state.config;
        self.engine.backward(&batch)?;
        // A data-parallel run averages the gradients across workers here
        // (Engine::grads / Engine::set_grads), before the clipping.
        let norm = self.engine.clip(cfg.grad_clip_value, cfg.grad_clip)?;
        if !norm.is_finite() {
            self.rng = rng_before;
            return Err(TrainError::NonFinite {
                step,
                what: "gradient norm",
                value: norm,
            });
        }
        self.lr = self.lr_at(self.state.step);
        self.engine.update(self.lr)?;
        self.engine.keep_carry()?;
        self.state.step = step;
        self.state.chars_seen += n as u64;
        self.state.acc_loss += loss;
        self.state.acc_steps += 1;
        Ok((loss, norm))
    }

    /// Mean validation loss (nats/char) of the current parameters: the validation text read as
    /// B streams from a zero state, T steps at a time with the state carried. `None` without
    /// validation text.
    pub fn evaluate(&mut self) -> Result<Option<f64>, TrainError> {
        if self.val_b == 0 {
            return Ok(None);
        }
        let t = self.state.config.seq_length;
        let (sum, count) = self.engine.stream_loss(&self.val, t, self.val_b)?;
        Ok((count > 0).then(|| sum / count as f64))
    }

    /// The checkpoint of the current state.
    pub fn checkpoint(&self) -> Result<Checkpoint, TrainError> {
        let mut st = self.state.clone();
        st.rng = self.rng.state();
        if let Some(carry) = self.engine.carry()? {
            st.carry_h = bits(&carry.h);
            st.carry_c = bits(&carry.c);
        }
        Ok(Checkpoint {
            model: self.model.cfg.clone(),
            params: self.params()?,
            vocab: self.vocab.clone(),
            optimizer: Some(self.optimizer()?),
            train_state: Some(serde_json::to_value(&st).expect("train state serialises")),
        })
    }

    fn save(&self, name: &str) -> Result<(), TrainError> {
        if let Some(d) = &self.ckpt_dir {
            checkpoint::save(&d.join(name), &self.checkpoint()?)?;
        }
        Ok(())
    }

    /// Evaluates, appends a log row, writes the latest (and, on a new best, the best)
    /// checkpoint, and reports.
    /// A log row of the training loss since the previous row (which it resets) and `val`.
    fn log_row(&mut self, val: Option<f64>) -> LogRow {
        let st = &mut self.state;
        let row = LogRow {
            step: st.step,
            epoch: st.step as f64 / self.streams.batches() as f64,
            chars_seen: st.chars_seen,
            elapsed_secs: st.elapsed_secs,
            lr: self.lr,
            train_loss: if st.acc_steps > 0 {
                st.acc_loss / st.acc_steps as f64
            } else {
                f64::NAN
            },
            val_loss: val,
        };
        st.acc_loss = 0.0;
        st.acc_steps = 0;
        st.history.push(row.clone());
        row
    }

    fn eval_and_save(&mut self, last: bool, on: &mut dyn FnMut(&Event)) -> Result<(), TrainError> {
        let val = self.evaluate()?;
        let row = self.log_row(val);
        let st = &mut self.state;
        st.last_eval_step = Some(st.step);
        let best = match (val, st.best_val) {
            (Some(_), None) => true,
            (Some(v), Some(b)) => v < b,
            _ => false,
        };
        if best {
            st.best_val = val;
            st.best_step = Some(st.step);
        }
        if best {
            self.save(BEST)?;
        }
        self.save(LATEST)?;
        let params = self.engine.params()?;
        on(&Event::Eval {
            row: &row,
            best,
            last,
            params: &params,
        });
        Ok(())
    }

    /// Trains until a limit of the budget is reached or `stop` is raised, evaluating every
    /// `eval_every` steps and at the end. Returns why it ended; on a NaN or infinite loss,
    /// returns the error and leaves the checkpoints on disk as they were.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        on: &mut dyn FnMut(&Event),
    ) -> Result<Outcome, TrainError> {
        let start = Instant::now();
        let base_elapsed = self.state.elapsed_secs;
        let base_chars = self.state.chars_seen;
        let total_steps = self.total_steps();
        let budget_secs = self.state.budget.max_minutes.map(|m| m * 60.0);
        loop {
            self.state.elapsed_secs = base_elapsed + start.elapsed().as_secs_f64();
            if let Some(outcome) = self.limit_reached() {
                // the latest checkpoint is written by the evaluation (skipped when the last step
                // was just evaluated and saved)
                if self.state.last_eval_step != Some(self.state.step) {
                    self.eval_and_save(true, on)?;
                }
                return Ok(outcome);
            }
            if stop.load(Ordering::Relaxed) {
                self.save(LATEST)?;
                return Ok(Outcome::Stopped);
            }
            let (loss, norm) = self.step()?;
            let secs = start.elapsed().as_secs_f64();
            self.state.elapsed_secs = base_elapsed + secs;
            let info = StepInfo {
                step: self.state.step,
                total_steps,
                epoch: self.state.step as f64 / self.streams.batches() as f64,
                loss,
                lr: self.lr,
                grad_norm: norm,
                chars_seen: self.state.chars_seen,
                chars_per_sec: (self.state.chars_seen - base_chars) as f64 / secs.max(1e-9),
                elapsed_secs: self.state.elapsed_secs,
                budget_secs,
            };
            on(&Event::Step(&info));
            let (every, log_every) = (self.state.config.eval_every, self.state.config.log_every);
            let step = self.state.step;
            // the last step of the run is evaluated here, so that its row has the training loss
            let last = self.limit_reached().is_some();
            if last || (every > 0 && step.is_multiple_of(every)) {
                self.eval_and_save(last, on)?;
            } else if log_every > 0 && step.is_multiple_of(log_every) {
                let row = self.log_row(None);
                on(&Event::Log(&row));
            }
        }
    }

    /// The validation text's ids.
    pub fn val_ids(&self) -> &[u32] {
        &self.val
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn unbits(b: &[u32], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(b) {
        *o = f32::from_bits(x);
    }
}
