//! The one training loop: a [`Trainer`] generic over a [`Task`] (what its batches are, how its
//! loss and held-out metric are computed, what it must remember to resume). Every application
//! (the character model, the long-memory tasks, spoken digits) trains through it, so all of them
//! get the same things:
//! - budgets (epochs, optimizer steps, wall-clock minutes: whichever comes first) and a learning
//!   rate [`Schedule`];
//! - evaluation at intervals, with the best and the latest checkpoints written atomically;
//! - exact resume: a run stopped and resumed gives bit for bit the numbers of one never stopped;
//! - a stop flag (Ctrl-C) that saves the latest state, and a stop on a NaN or infinite loss or
//!   gradient that leaves the checkpoints on disk alone ([`StopReason::Diverged`]);
//! - progress reported to a callback ([`Event`]); nothing here prints.
//!
//! One step is: the task's forward and loss -> backward -> (the one place where a data-parallel
//! run all-reduces the gradients) -> clipping -> learning rate -> optimizer update. See
//! [`Trainer::step`]. The math runs in an [`Engine`] of the [`Backend`] the run was opened on.
//!
//! A run is opened one way, whatever the task: a [`Run`] names the backend, the checkpoint
//! directory, the budget and what else to keep, then [`Run::start`] builds a fresh run from the
//! task's configuration (model, seed, optimizer, memory check) or [`Run::resume`] continues a
//! checkpoint.

use crate::checkpoint::{self, Checkpoint};
use crate::collective::{self, Collective};
use crate::engine::{Backend, Engine};
use crate::error::{Error, Result};
use crate::model::{Model, ModelConfig};
use crate::optim::{OptimKind, Optimizer};
use crate::rng::Rng;
use crate::stream::Carry;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// File name of the latest checkpoint inside the checkpoint directory.
pub const LATEST: &str = "latest.safetensors";
/// File name of the checkpoint with the best held-out metric so far.
pub const BEST: &str = "best.safetensors";

/// What a training run trains on: its batches, its loss and metric, its own resume state.
pub trait Task {
    /// The run's configuration, kept in every checkpoint (a resumed run keeps it).
    type Config: Clone + Debug + PartialEq + Serialize + DeserializeOwned;

    /// The loop's settings this configuration implies.
    fn settings(cfg: &Self::Config) -> Settings;

    /// What a fresh run of this configuration draws its initial weights from (the seed, which
    /// then drives the loop's RNG: dropout masks and whatever the task draws) and how it updates
    /// them (the optimizer; its learning rate is [`Settings::lr`]).
    fn init(cfg: &Self::Config) -> (u64, OptimKind);

    /// Added after the default draw to the bias of the gate that carries the state (the
    /// LSTM's forget gate, the GRU's update gate; [`Stack::open_carry_gates`](crate::stack::Stack::open_carry_gates)); 0 keeps
    /// PyTorch's initialization.
    fn carry_gate_bias(_cfg: &Self::Config) -> f64 {
        0.0
    }

    /// Checks that a configuration belongs to a model (on a fresh start and on resume).
    fn check_config(_cfg: &Self::Config, _model: &ModelConfig) -> Result<()> {
        Ok(())
    }

    /// The largest batch the task feeds, (T steps, B sequences): a fresh run checks that its
    /// memory fits before anything is allocated.
    fn largest_batch(&self) -> (usize, usize);

    /// Batches in one epoch; `None` for an endless stream of fresh batches.
    fn batches_per_epoch(&self) -> Option<u64>;

    /// The start of epoch `epoch` (e.g. a new shuffle from `rng`, or a zeroed carried state).
    fn start_epoch(&mut self, epoch: u64, eng: &mut dyn Engine, rng: &mut Rng) -> Result<()>;

    /// Forward and loss of batch `k` of the current epoch (the next fresh batch for an endless
    /// task), leaving the engine ready for backward; dropout masks from `rng`.
    fn forward_loss(&mut self, k: u64, eng: &mut dyn Engine, rng: &mut Rng) -> Result<StepLoss>;

    /// Backward of the last [`Task::forward_loss`] into the engine's gradients.
    fn backward(&mut self, eng: &mut dyn Engine) -> Result<()>;

    /// After the optimizer's update (e.g. keep the final states as the next batch's start).
    fn after_update(&mut self, _eng: &mut dyn Engine) -> Result<()> {
        Ok(())
    }

    /// The held-out metric of the current parameters; `None` without held-out data.
    fn evaluate(&mut self, eng: &mut dyn Engine) -> Result<Option<f64>>;

    /// [`Task::evaluate`] in a data-parallel run, the held-out data shared out among the
    /// workers: this one measures part `part.rank()` of `part.size()` and adds what it found to
    /// the others' with `part.sum_f64` (every worker calls it alike, so every worker ends with
    /// the same metric). By default every worker measures all of it.
    fn evaluate_shared(
        &mut self,
        eng: &mut dyn Engine,
        part: &dyn Collective,
    ) -> Result<Option<f64>> {
        let _ = part;
        self.evaluate(eng)
    }

    /// Whether `metric` is better than the best so far (`None`: no best yet). Lower is better
    /// unless a task says otherwise.
    fn better(&self, metric: Option<f64>, best: Option<f64>) -> bool {
        match (metric, best) {
            (Some(_), None) => true,
            (Some(m), Some(b)) => m < b,
            _ => false,
        }
    }

    /// Numbers of the task's own to add to a log row (e.g. accuracies), taken and reset at each
    /// row.
    fn row_extra(&mut self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// [`Task::row_extra`] in a data-parallel run, for numbers that must cover every worker's
    /// share (e.g. a training accuracy): summed with `part.sum_f64`, which every worker calls
    /// alike. By default this worker's own numbers.
    fn row_extra_shared(&mut self, part: &dyn Collective) -> Result<serde_json::Value> {
        let _ = part;
        Ok(self.row_extra())
    }

    /// What the task must remember to resume exactly (e.g. data fingerprints, its own RNG).
    fn state(&self) -> serde_json::Value;

    /// Takes back [`Task::state`] of a checkpoint; an error when it belongs to other data.
    fn restore(&mut self, state: &serde_json::Value) -> Result<()>;

    /// The vocabulary stored in the checkpoints, for token models.
    fn vocab(&self) -> Option<Vec<char>> {
        None
    }

    /// Takes rank `rank`'s share of every batch of a data-parallel run over `size` ranks
    /// ([`crate::collective`]): its batches, losses and carried state are then the share's.
    /// By default a task does not train data-parallel.
    fn split(&mut self, _rank: usize, _size: usize) -> Result<()> {
        Err(Error::invalid("this task does not train data-parallel yet"))
    }
}

/// One step's loss as the task computed it.
#[derive(Clone, Copy, Debug)]
pub struct StepLoss {
    /// Mean loss of the batch.
    pub loss: f64,
    /// Items (characters, sequences) the batch trained on.
    pub items: u64,
}

/// The learning rate as a function of the step and epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// The base rate times `decay` every `every` steps (0: never).
    StepDecay { decay: f64, every: u64 },
    /// A cosine from the base rate at epoch 0 down to `base * floor` at epoch `epochs - 1`.
    CosineEpochs { floor: f64, epochs: u64 },
    /// A linear warm-up over the first `warmup` steps (step k at `base * (k+1) / warmup`), then a
    /// cosine from the base rate down to `base * floor` at the run's end: its step limit (steps or
    /// epochs) or its time budget, whichever comes first (the cosine's progress is the larger of
    /// the two fractions done; where the time budget leads, the rate follows the elapsed time,
    /// so runs on machines of different speeds differ). With neither, the base rate after the
    /// warm-up.
    Cosine { warmup: u64, floor: f64 },
    /// After the same warm-up, the base rate times `factor` once for every `patience`
    /// evaluations in a row that did not improve the best held-out metric (the count restarts
    /// after each cut and at each new best), never below `base * floor`.
    Plateau {
        factor: f64,
        patience: u64,
        floor: f64,
        warmup: u64,
    },
}

/// The loop's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Base learning rate.
    pub lr: f64,
    pub schedule: Schedule,
    /// Clip the global gradient norm to this (0 = off).
    pub grad_clip: f64,
    /// Clamp every gradient element to [-v, v] (0 = off), before the norm clipping.
    pub grad_clip_value: f64,
    /// Steps between evaluations (0 = only at the end).
    pub eval_every: u64,
    /// Also evaluate at the end of every epoch.
    pub eval_each_epoch: bool,
    /// Steps between training-loss rows between evaluations (0 = only at evaluations).
    pub log_every: u64,
    /// On a NaN or infinite loss, put back the parameters before the previous update (which
    /// produced them) instead of keeping them; costs one parameter copy per step.
    pub undo_on_divergence: bool,
    /// Keep an exponential moving average of the weights with this decay (0 = off; see
    /// [`ema_decay`]). It is what evaluations measure (the raw weights' metric is logged beside
    /// it), and it is checkpointed beside the raw weights, which training goes on from.
    pub ema: f64,
}

/// When a run ends: whichever limit comes first. A resumed run may be given new limits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Passes over the training data (fractions allowed).
    pub epochs: Option<f64>,
    /// Optimizer steps in all (counting those before a resume).
    pub max_steps: Option<u64>,
    /// Wall-clock minutes of training in all (counting those before a resume).
    pub max_minutes: Option<f64>,
}

/// Why [`Trainer::run`] ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StopReason {
    /// The epochs were done.
    Epochs,
    /// `max_steps` was reached.
    MaxSteps,
    /// `max_minutes` ran out.
    MaxMinutes,
    /// The stop flag was raised (Ctrl-C); the latest checkpoint holds the state.
    Stopped,
    /// A NaN or infinite loss or gradient norm at `step`: the step did not count, nothing was
    /// saved for it, and the checkpoints on disk are the last good ones.
    Diverged {
        step: u64,
        what: &'static str,
        value: f64,
    },
}

impl StopReason {
    /// One word: `epochs`, `steps`, `budget`, `stopped` or `diverged`.
    pub fn name(&self) -> &'static str {
        match self {
            StopReason::Epochs => "epochs",
            StopReason::MaxSteps => "steps",
            StopReason::MaxMinutes => "budget",
            StopReason::Stopped => "stopped",
            StopReason::Diverged { .. } => "diverged",
        }
    }

    /// A short phrase for messages: the one wording every command and example prints.
    pub fn describe(&self) -> String {
        match self {
            StopReason::Epochs => "the epochs are done".into(),
            StopReason::MaxSteps => "the step limit was reached".into(),
            StopReason::MaxMinutes => "the time budget ran out".into(),
            StopReason::Stopped => "interrupted".into(),
            StopReason::Diverged { step, what, value } => {
                format!("the {what} became {value} at step {step}")
            }
        }
    }
}

/// One line of the training log: written at every evaluation (with the held-out metric) and
/// every `log_every` steps in between (without).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogRow {
    pub step: u64,
    pub epoch: f64,
    /// Items (characters, sequences) trained on so far.
    #[serde(alias = "chars_seen")]
    pub items_seen: u64,
    pub elapsed_secs: f64,
    pub lr: f64,
    /// Mean training loss over the steps since the previous row.
    pub train_loss: f64,
    /// The held-out metric, when there is held-out data: of the weights' moving average when
    /// the run keeps one ([`Settings::ema`]).
    pub val_loss: Option<f64>,
    /// With a moving average: the raw weights' held-out metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_val_loss: Option<f64>,
    /// The task's own numbers ([`Task::row_extra`]).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub extra: serde_json::Value,
}

/// Everything besides parameters and optimizer that a resumed run needs; stored as the
/// checkpoint's `train_state`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState<C> {
    pub config: C,
    pub budget: Budget,
    /// Optimizer steps taken.
    pub step: u64,
    #[serde(alias = "chars_seen")]
    pub items_seen: u64,
    /// Training time so far, over all sessions.
    pub elapsed_secs: f64,
    /// The loop's RNG after the last step.
    pub rng: [u64; 4],
    /// The engine's carried hidden state, as f32 bit patterns so that it is restored exactly
    /// (empty when it carries none).
    pub carry_h: Vec<u32>,
    pub carry_c: Vec<u32>,
    /// Training loss summed over the steps since the last log row, and their count.
    pub acc_loss: f64,
    pub acc_steps: u64,
    /// The best held-out metric so far and its step.
    pub best_val: Option<f64>,
    pub best_step: Option<u64>,
    pub last_eval_step: Option<u64>,
    pub history: Vec<LogRow>,
    /// Evaluations since the best one, and the learning-rate cuts so far ([`Schedule::Plateau`]).
    #[serde(default)]
    pub evals_since_best: u64,
    #[serde(default)]
    pub lr_cuts: u32,
    /// The task's own resume state ([`Task::state`]).
    #[serde(default)]
    pub task: serde_json::Value,
    /// Whatever the caller wants kept with the run (the CLI: data path, split, preset).
    pub extra: serde_json::Value,
}

/// After every optimizer step.
#[derive(Clone, Debug)]
pub struct StepInfo {
    pub step: u64,
    /// The step at which the step or epoch limit ends the run, if there is one.
    pub total_steps: Option<u64>,
    pub epoch: f64,
    /// Mean loss of this batch.
    pub loss: f64,
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    pub items_seen: u64,
    /// Items trained on per second in this session.
    pub items_per_sec: f64,
    pub elapsed_secs: f64,
    /// `max_minutes` in seconds, if set.
    pub budget_secs: Option<f64>,
}

/// Progress reports of [`Trainer::run`].
pub enum Event<'a> {
    Step(&'a StepInfo),
    /// A training-loss row of the log (no evaluation); `history` is the whole log so far, this
    /// row last.
    Log {
        row: &'a LogRow,
        history: &'a [LogRow],
    },
    /// After an evaluation (and the checkpoints it wrote). `params` are the evaluated ones (the
    /// moving average when the run keeps one, else the current parameters);
    /// `history` is the whole log so far, this row last.
    Eval {
        row: &'a LogRow,
        history: &'a [LogRow],
        /// This evaluation set a new best.
        best: bool,
        /// The run ends after this evaluation.
        last: bool,
        params: &'a [f32],
    },
}

/// A training run in memory.
pub struct Trainer<T: Task> {
    pub model: Model,
    pub task: T,
    // parameters, gradients, optimizer, carried state and workspaces
    engine: Box<dyn Engine>,
    settings: Settings,
    // the learning rate of the last step (the optimizer's before the first)
    lr: f64,
    rng: Rng,
    ckpt_dir: Option<PathBuf>,
    // the weights' moving average ([`Settings::ema`]), from the first update on
    ema: Option<Vec<f32>>,
    // the other ranks of a data-parallel run
    collective: Option<Box<dyn Collective>>,
    pub state: TrainState<T::Config>,
}

/// Checks that `dir` exists or can be created and that a file can be written in it.
pub fn check_dir_writable(dir: &Path) -> Result<()> {
    let bad = |e: std::io::Error| {
        Error::invalid(format!(
            "checkpoint directory '{}' cannot be written: {}",
            dir.display(),
            crate::error::io_reason(&e)
        ))
    };
    std::fs::create_dir_all(dir).map_err(bad)?;
    let probe = dir.join(format!(".recur-write-test-{}", std::process::id()));
    let written = std::fs::write(&probe, b"ok");
    // removed whether or not the write went through (a full disk still creates the file)
    let _ = std::fs::remove_file(&probe);
    written.map_err(bad)
}

/// The weights a fresh run of configuration `cfg` starts from, drawn from its seed
/// ([`Task::init`], the carry gates opened by [`Task::carry_gate_bias`]), and the RNG after the draw (which then drives the loop). [`Run::start`]
/// draws them this way; a caller that wants a run's starting point again calls this.
pub fn initial_weights<T: Task>(model: &Model, cfg: &T::Config) -> (Vec<f32>, Rng) {
    let mut rng = Rng::new(T::init(cfg).0);
    let mut params = vec![0.0f32; model.num_params()];
    model.init(&mut params, &mut rng);
    model
        .stack()
        .open_carry_gates(&mut params[model.rnn_range()], T::carry_gate_bias(cfg));
    (params, rng)
}

/// How a run is opened: the backend it computes on, where its checkpoints go, its budget and
/// what else the caller wants kept with it. The one way into the loop for every task:
///
/// ```no_run
/// # use recur::train::{Budget, Run, Task, Trainer};
/// # fn open<T: Task>(model: recur::model::ModelConfig, task: T, cfg: T::Config) -> recur::Result<Trainer<T>> {
/// let budget = Budget { max_steps: Some(1000), ..Budget::default() };
/// Run::on(&recur::engine::Cpu)
///     .checkpoints(std::path::PathBuf::from("checkpoints"))
///     .budget(budget)
///     .start(model, task, cfg)
/// # }
/// ```
pub struct Run<'a> {
    backend: &'a dyn Backend,
    ckpt_dir: Option<PathBuf>,
    budget: Option<Budget>,
    extra: serde_json::Value,
    collective: Option<Box<dyn Collective>>,
    precision: crate::Precision,
}

impl<'a> Run<'a> {
    /// A run computing on `backend`, with no checkpoint directory, no limits and nothing extra.
    pub fn on(backend: &'a dyn Backend) -> Self {
        Run {
            backend,
            ckpt_dir: None,
            budget: None,
            extra: serde_json::Value::Null,
            collective: None,
            precision: crate::Precision::F32,
        }
    }

    /// The number format the run computes in (float32 unless set): bf16 trains in mixed
    /// precision ([`Engine::set_precision`]); a fresh or a resumed run alike, since the
    /// checkpoints hold the float32 master weights either way.
    pub fn precision(mut self, p: crate::Precision) -> Self {
        self.precision = p;
        self
    }

    /// A data-parallel run: this process is one rank of `c` ([`crate::collective`]). Every rank
    /// opens the same run; rank 0 alone writes the checkpoints.
    pub fn collective(mut self, c: Box<dyn Collective>) -> Self {
        self.collective = Some(c);
        self
    }

    /// The task's share of every batch, when the run is data-parallel.
    fn split<T: Task>(&self, task: &mut T) -> Result<()> {
        match &self.collective {
            Some(c) => task.split(c.rank(), c.size()),
            None => Ok(()),
        }
    }

    /// The directory (created if needed) that receives the best and latest checkpoints; `None`
    /// writes none.
    pub fn checkpoints(mut self, dir: impl Into<Option<PathBuf>>) -> Self {
        self.ckpt_dir = dir.into();
        self
    }

    /// The limits of the run; on resume they replace the saved ones (without this call a
    /// resumed run keeps its own, and a fresh run has none).
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Whatever the caller wants kept with the run (the CLI: data path, split, preset); a
    /// resumed run keeps the saved one.
    pub fn extra(mut self, extra: serde_json::Value) -> Self {
        self.extra = extra;
        self
    }

    /// A fresh run of `task` on a model of `model`: the configuration checked against the model,
    /// the memory of the task's largest batch checked, the weights drawn from the configuration's
    /// seed, a new optimizer.
    pub fn start<T: Task>(
        self,
        model: ModelConfig,
        task: T,
        config: T::Config,
    ) -> Result<Trainer<T>> {
        T::check_config(&config, &model)?;
        let model = Model::new(model)?;
        let (t, b) = task.largest_batch();
        crate::memory::check_training(&model, t, b)?;
        let (params, rng) = initial_weights::<T>(&model, &config);
        let opt = Optimizer::new(T::init(&config).1, T::settings(&config).lr, params.len());
        self.start_with(model, params, opt, rng, task, config)
    }

    /// A fresh run from parameters, optimizer and RNG of the caller's own (e.g. weights loaded
    /// from elsewhere); `rng` then draws the dropout masks and whatever the task draws.
    pub fn start_with<T: Task>(
        mut self,
        model: Model,
        params: Vec<f32>,
        opt: Optimizer<f32>,
        rng: Rng,
        mut task: T,
        config: T::Config,
    ) -> Result<Trainer<T>> {
        self.split(&mut task)?;
        let state = TrainState {
            config,
            budget: self.budget.take().unwrap_or_default(),
            step: 0,
            items_seen: 0,
            elapsed_secs: 0.0,
            rng: rng.state(),
            carry_h: Vec::new(),
            carry_c: Vec::new(),
            acc_loss: 0.0,
            acc_steps: 0,
            best_val: None,
            best_step: None,
            last_eval_step: None,
            history: Vec::new(),
            evals_since_best: 0,
            lr_cuts: 0,
            task: task.state(),
            extra: std::mem::take(&mut self.extra),
        };
        self.assemble(model, params, None, opt, task, state)
    }

    /// Continues the run saved in `ckpt` with `task` (which must be built on the same data:
    /// [`Task::restore`] checks), on this run's backend: a run trained on one device continues
    /// on another.
    pub fn resume<T: Task>(mut self, ckpt: Checkpoint, mut task: T) -> Result<Trainer<T>> {
        ckpt.check_trainable()?;
        let mut state = TrainState::<T::Config>::of(&ckpt)?;
        T::check_config(&state.config, &ckpt.model)?;
        task.restore(&state.task)?;
        self.split(&mut task)?;
        let opt = ckpt.optimizer.ok_or_else(|| {
            Error::invalid("the checkpoint has no optimizer state to resume from")
        })?;
        if let Some(b) = self.budget.take() {
            state.budget = b;
        }
        let model = Model::new(ckpt.model)?;
        self.assemble(model, ckpt.params, ckpt.ema, opt, task, state)
    }

    fn assemble<T: Task>(
        mut self,
        model: Model,
        params: Vec<f32>,
        ema: Option<Vec<f32>>,
        opt: Optimizer<f32>,
        task: T,
        state: TrainState<T::Config>,
    ) -> Result<Trainer<T>> {
        let settings = T::settings(&state.config);
        if !(settings.lr > 0.0) {
            return Err(Error::invalid(format!(
                "the learning rate must be positive, got {}",
                settings.lr
            )));
        }
        if !(0.0..1.0).contains(&settings.ema) {
            return Err(Error::invalid(format!(
                "the moving average's decay must be in [0, 1), got {}",
                settings.ema
            )));
        }
        if let Some(d) = &self.ckpt_dir {
            check_dir_writable(d)?;
        }
        // a moving average only while the run keeps one
        let ema = ema.filter(|_| settings.ema > 0.0);
        let lr = opt.lr;
        let mut engine = self.backend.engine(model.clone(), params, Some(opt))?;
        engine.set_precision(self.precision)?;
        if !state.carry_h.is_empty() {
            let mut carry = Carry {
                h: vec![0.0; state.carry_h.len()],
                c: vec![0.0; state.carry_c.len()],
            };
            unbits(&state.carry_h, &mut carry.h);
            unbits(&state.carry_c, &mut carry.c);
            // a checkpoint holds the global batch's state: this rank's share of it
            if let Some(c) = &self.collective {
                let (p, h, b) = carry_dims(&model, &carry);
                carry = collective::cut_carry(&carry, b, p, h, c.rank(), c.size())?;
            }
            engine.set_carry(&carry).map_err(|_| {
                Error::invalid("the saved hidden state does not match the model and batch size")
            })?;
        }
        Ok(Trainer {
            rng: Rng::from_state(state.rng),
            engine,
            settings,
            lr,
            ckpt_dir: self.ckpt_dir,
            ema,
            collective: self.collective.take(),
            model,
            task,
            state,
        })
    }
}

impl<C: DeserializeOwned> TrainState<C> {
    /// The training state saved in `ckpt`: the one place a checkpoint's `train_state` is read.
    pub fn of(ckpt: &Checkpoint) -> Result<Self> {
        let ts = ckpt
            .train_state
            .as_ref()
            .ok_or_else(|| Error::invalid("the checkpoint has no training state to resume from"))?;
        Self::deserialize(ts).map_err(|e| {
            Error::invalid(format!(
                "the checkpoint's training state is unreadable: {e}"
            ))
        })
    }
}

impl<T: Task> Trainer<T> {
    /// Where the math runs.
    pub fn device(&self) -> String {
        self.engine.device()
    }

    /// The number format the engine computes in ([`Engine::set_precision`]).
    pub fn precision(&self) -> crate::Precision {
        self.engine.precision()
    }

    /// The engine (for a task's own evaluation outside the loop).
    pub fn engine(&mut self) -> &mut dyn Engine {
        &mut *self.engine
    }

    /// The current parameters (a host copy).
    pub fn params(&self) -> Result<Vec<f32>> {
        Ok(self.engine.params()?.into_owned())
    }

    /// Replaces the parameters.
    pub fn set_params(&mut self, params: &[f32]) -> Result<()> {
        self.engine.set_params(params)
    }

    /// The optimizer with its state (a host copy).
    pub fn optimizer(&self) -> Result<Optimizer<f32>> {
        Ok(self
            .engine
            .optimizer()?
            .ok_or_else(|| Error::invalid("the engine has no optimizer"))?
            .into_owned())
    }

    /// The loop's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The epoch count at `step` steps (fractional; steps when the task has no epochs).
    pub fn epoch_at(&self, step: u64) -> f64 {
        match self.task.batches_per_epoch() {
            Some(b) => step as f64 / b as f64,
            None => step as f64,
        }
    }

    /// The learning rate for the step after `step` steps.
    pub fn lr_at(&self, step: u64) -> f64 {
        let base = self.settings.lr;
        match self.settings.schedule {
            Schedule::Constant => base,
            Schedule::StepDecay { decay, every } => match step.checked_div(every) {
                None => base,
                Some(n) => base * decay.powi(n as i32),
            },
            Schedule::CosineEpochs { floor, epochs } => {
                let e = self.task.batches_per_epoch().map_or(0, |b| step / b.max(1));
                cosine_lr(base, floor, e, epochs)
            }
            Schedule::Cosine { warmup, floor } => {
                if step < warmup {
                    return base * warm_up(step, warmup);
                }
                let progress = cosine_progress(
                    step,
                    warmup,
                    self.total_steps(),
                    self.state.budget.max_minutes,
                    self.state.elapsed_secs,
                );
                match progress {
                    Some(p) => {
                        let w = 0.5 * (1.0 + (std::f64::consts::PI * p.clamp(0.0, 1.0)).cos());
                        base * (floor + (1.0 - floor) * w)
                    }
                    None => base,
                }
            }
            Schedule::Plateau {
                factor,
                floor,
                warmup,
                ..
            } => warm_up(step, warmup) * base * factor.powi(self.state.lr_cuts as i32).max(floor),
        }
    }

    /// The step at which the epoch or step limit ends the run.
    pub fn total_steps(&self) -> Option<u64> {
        let b = &self.state.budget;
        let from_epochs = match (b.epochs, self.task.batches_per_epoch()) {
            (Some(e), Some(n)) => Some((e * n as f64).ceil() as u64),
            _ => None,
        };
        match (from_epochs, b.max_steps) {
            (Some(a), Some(m)) => Some(a.min(m)),
            (a, m) => a.or(m),
        }
    }

    fn limit_reached(&self) -> Option<StopReason> {
        let b = &self.state.budget;
        let s = self.state.step;
        if let Some(m) = b.max_steps {
            if s >= m {
                return Some(StopReason::MaxSteps);
            }
        }
        if let (Some(e), Some(n)) = (b.epochs, self.task.batches_per_epoch()) {
            if s >= (e * n as f64).ceil() as u64 {
                return Some(StopReason::Epochs);
            }
        }
        if let Some(m) = b.max_minutes {
            if self.state.elapsed_secs >= m * 60.0 {
                return Some(StopReason::MaxMinutes);
            }
        }
        None
    }

    /// One optimizer step on the next batch: its mean loss and the gradient norm before
    /// clipping. On a NaN or infinite loss or gradient the step does not count: the parameters,
    /// optimizer, carried state and RNG stay as they were before it (and with
    /// `undo_on_divergence`, the parameters go back to before the previous update), and
    /// `Err(StopReason::Diverged)` says why.
    pub fn step(&mut self) -> Result<std::result::Result<(f64, f64), StopReason>> {
        let step = self.state.step + 1;
        let k = match self.task.batches_per_epoch() {
            Some(n) => {
                let k = self.state.step % n.max(1);
                if k == 0 {
                    let epoch = self.state.step / n.max(1);
                    self.task
                        .start_epoch(epoch, &mut *self.engine, &mut self.rng)?;
                }
                k
            }
            None => self.state.step,
        };
        let rng_before = self.rng.clone();
        let mut sl = match &self.collective {
            None => self
                .task
                .forward_loss(k, &mut *self.engine, &mut self.rng)?,
            Some(c) => {
                // this rank's masks; the loop's generator advances alike on every rank
                let mut masks = collective::step_rng(&self.rng, step, c.rank());
                self.task.forward_loss(k, &mut *self.engine, &mut masks)?
            }
        };
        if let Some(c) = &self.collective {
            // the global batch's mean loss (equal shares) and items, the same on every rank
            let mut v = [sl.loss, sl.items as f64];
            c.sum_f64(&mut v)?;
            sl.loss = v[0] / c.size() as f64;
            sl.items = v[1] as u64;
        }
        let diverged = |what, value| StopReason::Diverged { step, what, value };
        if !sl.loss.is_finite() {
            self.rng = rng_before;
            if self.settings.undo_on_divergence && self.state.step > 0 {
                self.engine.restore()?;
            }
            return Ok(Err(diverged("training loss", sl.loss)));
        }
        self.task.backward(&mut *self.engine)?;
        // A data-parallel run averages the gradients across ranks here, before the clipping
        // (which then sees the global norm): one sum over the flat buffer.
        if let Some(c) = &self.collective {
            let mut g = self.engine.grads()?.into_owned();
            c.sum_f32(&mut g)?;
            let inv = 1.0 / c.size() as f32;
            g.iter_mut().for_each(|x| *x *= inv);
            self.engine.set_grads(&g)?;
        }
        let s = &self.settings;
        let norm = self.engine.clip(s.grad_clip_value, s.grad_clip)?;
        if !norm.is_finite() {
            self.rng = rng_before;
            return Ok(Err(diverged("gradient norm", norm)));
        }
        self.lr = self.lr_at(self.state.step);
        if self.settings.undo_on_divergence {
            self.engine.snapshot()?;
        }
        self.engine.update(self.lr)?;
        self.task.after_update(&mut *self.engine)?;
        if self.settings.ema > 0.0 {
            let params = self.engine.params()?;
            match &mut self.ema {
                None => self.ema = Some(params.into_owned()),
                Some(avg) => {
                    let d = ema_decay(self.settings.ema, step) as f32;
                    for (a, &p) in avg.iter_mut().zip(params.iter()) {
                        *a = d * *a + (1.0 - d) * p;
                    }
                }
            }
        }
        self.state.step = step;
        self.state.items_seen += sl.items;
        self.state.acc_loss += sl.loss;
        self.state.acc_steps += 1;
        Ok(Ok((sl.loss, norm)))
    }

    /// The held-out metric of the current parameters; `None` without held-out data.
    pub fn evaluate(&mut self) -> Result<Option<f64>> {
        match shared(&self.collective) {
            Some(c) => self.task.evaluate_shared(&mut *self.engine, c),
            None => self.task.evaluate(&mut *self.engine),
        }
    }

    /// The weights' moving average, when the run keeps one and has taken a step.
    pub fn ema(&self) -> Option<&[f32]> {
        self.ema.as_deref()
    }

    /// The held-out metric of the moving average (`None` without one): the engine holds the
    /// average while the task evaluates, then the raw parameters again, bit for bit.
    pub fn evaluate_ema(&mut self) -> Result<Option<f64>> {
        let Some(avg) = &self.ema else {
            return Ok(None);
        };
        let raw = self.engine.params()?.into_owned();
        self.engine.set_params(avg)?;
        let metric = self.evaluate();
        self.engine.set_params(&raw)?;
        metric
    }

    /// The checkpoint of the current state.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        let mut st = self.state.clone();
        st.rng = self.rng.state();
        st.task = self.task.state();
        if let Some(carry) = self.saved_carry()? {
            st.carry_h = bits(&carry.h);
            st.carry_c = bits(&carry.c);
        }
        Ok(Checkpoint {
            model: self.model.cfg().clone(),
            params: self.params()?,
            vocab: self.task.vocab(),
            optimizer: Some(self.optimizer()?),
            ema: self.ema.clone(),
            train_state: Some(serde_json::to_value(&st).map_err(|e| {
                Error::invalid(format!("the training state cannot be written: {e}"))
            })?),
            precision: crate::Precision::F32,
        })
    }

    /// Writes the checkpoint `name` (rank 0 of a data-parallel run; every rank takes part in
    /// gathering its carried state).
    fn save(&self, name: &str) -> Result<()> {
        let Some(d) = &self.ckpt_dir else {
            return Ok(());
        };
        if self.collective.as_ref().is_some_and(|c| c.rank() != 0) {
            // only the gather of the carried state needs this rank
            self.saved_carry()?;
            return Ok(());
        }
        checkpoint::save(&d.join(name), &self.checkpoint()?)
    }

    /// The carried state as a checkpoint holds it: the global batch's, gathered from every
    /// rank's share in a data-parallel run (every rank must call this together).
    fn saved_carry(&self) -> Result<Option<Cow<'_, Carry>>> {
        let Some(carry) = self.engine.carry()? else {
            return Ok(None);
        };
        Ok(Some(match &self.collective {
            Some(c) => {
                let (p, h, b) = carry_dims(&self.model, &carry);
                Cow::Owned(collective::gather_carry(&**c, &carry, b * c.size(), p, h)?)
            }
            None => carry,
        }))
    }

    /// Whether the run should stop now, and the training time so far: rank 0's clock and any
    /// rank's stop flag in a data-parallel run, so that all ranks stop after the same step.
    fn agree(&self, stop: bool, elapsed: f64) -> Result<(bool, f64)> {
        let Some(c) = &self.collective else {
            return Ok((stop, elapsed));
        };
        let mut v = [
            f64::from(u8::from(stop)),
            if c.rank() == 0 { elapsed } else { 0.0 },
        ];
        c.sum_f64(&mut v)?;
        Ok((v[0] > 0.0, v[1]))
    }

    /// A log row of the training loss since the previous row (which it resets), `val` and
    /// (with a moving average) the raw weights' `raw_val`.
    fn log_row(&mut self, val: Option<f64>, raw_val: Option<f64>) -> Result<LogRow> {
        let extra = match shared(&self.collective) {
            Some(c) => self.task.row_extra_shared(c)?,
            None => self.task.row_extra(),
        };
        let epoch = self.epoch_at(self.state.step);
        let st = &mut self.state;
        let row = LogRow {
            step: st.step,
            epoch,
            items_seen: st.items_seen,
            elapsed_secs: st.elapsed_secs,
            lr: self.lr,
            train_loss: if st.acc_steps > 0 {
                st.acc_loss / st.acc_steps as f64
            } else {
                f64::NAN
            },
            val_loss: val,
            raw_val_loss: raw_val,
            extra,
        };
        st.acc_loss = 0.0;
        st.acc_steps = 0;
        st.history.push(row.clone());
        Ok(row)
    }

    /// Evaluates, appends a log row, writes the latest (and, on a new best, the best)
    /// checkpoint, and reports.
    fn eval_and_save(&mut self, last: bool, on: &mut dyn FnMut(&Event)) -> Result<()> {
        let raw = self.evaluate()?;
        let (val, raw_val) = match self.ema.is_some() {
            true => (self.evaluate_ema()?, raw),
            false => (raw, None),
        };
        let row = self.log_row(val, raw_val)?;
        let best = self.task.better(val, self.state.best_val);
        let st = &mut self.state;
        st.last_eval_step = Some(st.step);
        if best {
            st.evals_since_best = 0;
            st.best_val = val;
            st.best_step = Some(st.step);
            self.save(BEST)?;
        } else {
            st.evals_since_best += 1;
            if let Schedule::Plateau { patience, .. } = self.settings.schedule {
                if patience > 0 && st.evals_since_best >= patience {
                    st.lr_cuts += 1;
                    st.evals_since_best = 0;
                }
            }
        }
        self.save(LATEST)?;
        let raw = self.engine.params()?;
        on(&Event::Eval {
            row: &row,
            history: &self.state.history,
            best,
            last,
            params: self.ema.as_deref().unwrap_or(&raw),
        });
        Ok(())
    }

    /// Trains until a limit of the budget is reached, `stop` is raised or the loss diverges,
    /// evaluating every `eval_every` steps and at the end; says why it ended.
    pub fn run(&mut self, stop: &AtomicBool, on: &mut dyn FnMut(&Event)) -> Result<StopReason> {
        let start = Instant::now();
        let base_elapsed = self.state.elapsed_secs;
        let base_items = self.state.items_seen;
        let total_steps = self.total_steps();
        let budget_secs = self.state.budget.max_minutes.map(|m| m * 60.0);
        loop {
            let (stopped, elapsed) = self.agree(
                stop.load(Ordering::Relaxed),
                base_elapsed + start.elapsed().as_secs_f64(),
            )?;
            self.state.elapsed_secs = elapsed;
            if let Some(reason) = self.limit_reached() {
                // the latest checkpoint is written by the evaluation (skipped when the last step
                // was just evaluated and saved)
                if self.state.last_eval_step != Some(self.state.step) {
                    self.eval_and_save(true, on)?;
                }
                return Ok(reason);
            }
            if stopped {
                self.save(LATEST)?;
                return Ok(StopReason::Stopped);
            }
            let (loss, norm) = match self.step()? {
                Ok(x) => x,
                Err(diverged) => return Ok(diverged),
            };
            let secs = start.elapsed().as_secs_f64();
            // rank 0's clock on every rank: the budget ends the run after the same step
            self.state.elapsed_secs = self.agree(false, base_elapsed + secs)?.1;
            let info = StepInfo {
                step: self.state.step,
                total_steps,
                epoch: self.epoch_at(self.state.step),
                loss,
                lr: self.lr,
                grad_norm: norm,
                items_seen: self.state.items_seen,
                items_per_sec: (self.state.items_seen - base_items) as f64 / secs.max(1e-9),
                elapsed_secs: self.state.elapsed_secs,
                budget_secs,
            };
            on(&Event::Step(&info));
            let (every, log_every) = (self.settings.eval_every, self.settings.log_every);
            let step = self.state.step;
            // the last step of the run is evaluated here, so that its row has the training loss
            let last = self.limit_reached().is_some();
            let epoch_end = self.settings.eval_each_epoch
                && self
                    .task
                    .batches_per_epoch()
                    .is_some_and(|n| step.is_multiple_of(n.max(1)));
            if last || epoch_end || (every > 0 && step.is_multiple_of(every)) {
                self.eval_and_save(last, on)?;
            } else if log_every > 0 && step.is_multiple_of(log_every) {
                let row = self.log_row(None, None)?;
                on(&Event::Log {
                    row: &row,
                    history: &self.state.history,
                });
            }
        }
    }
}

/// The workers of a data-parallel run of more than one ([`crate::collective`]): where the
/// evaluation and the log rows are shared out among them.
fn shared(c: &Option<Box<dyn Collective>>) -> Option<&dyn Collective> {
    c.as_deref().filter(|c| c.size() > 1)
}

/// (P, H, B) of a carried state of `model`: h rows of P, c rows of H, B sequences.
fn carry_dims(model: &Model, carry: &Carry) -> (usize, usize, usize) {
    let r = &model.cfg().rnn;
    let (p, h) = (r.out_size(), r.hidden_size);
    (p, h, carry.h.len() / (r.num_layers * r.dirs() * p))
}

/// The moving average's decay at update `step` (1-based): `decay`, but no more than
/// (1 + step) / (10 + step), so that the first updates, when the weights move fastest, are not
/// averaged with the initial ones for long (TensorFlow's `ExponentialMovingAverage` with
/// `num_updates`). The average starts as a copy of the weights after the first update.
pub fn ema_decay(decay: f64, step: u64) -> f64 {
    decay.min((1 + step) as f64 / (10 + step) as f64)
}

/// How far a run is, from 0 to 1, through [`Schedule::Cosine`]'s cosine at `step` (after the
/// `warmup` steps): the larger of the fractions done of its step limit (`total` steps) and of
/// its time budget (`minutes`, `elapsed` seconds spent), so that the cosine ends where
/// whichever limit comes first ends the run; `None` with neither.
fn cosine_progress(
    step: u64,
    warmup: u64,
    total: Option<u64>,
    minutes: Option<f64>,
    elapsed: f64,
) -> Option<f64> {
    let by_steps = total
        .filter(|&n| n > warmup)
        .map(|n| step.saturating_sub(warmup) as f64 / (n - warmup) as f64);
    let by_time = minutes.filter(|&m| m > 0.0).map(|m| elapsed / (m * 60.0));
    match (by_steps, by_time) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The warm-up's share of the base rate for the step after `step` steps: (step + 1) / warmup
/// during the warm-up, 1 after it.
fn warm_up(step: u64, warmup: u64) -> f64 {
    if step < warmup {
        (step + 1) as f64 / warmup as f64
    } else {
        1.0
    }
}

/// Cosine learning-rate schedule: `base` at epoch 0, falling to `base * floor` at the last epoch.
pub fn cosine_lr(base: f64, floor: f64, epoch: u64, epochs: u64) -> f64 {
    if epochs <= 1 {
        return base;
    }
    let progress = epoch.min(epochs - 1) as f64 / (epochs - 1) as f64;
    let w = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    base * (floor + (1.0 - floor) * w)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn unbits(b: &[u32], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(b) {
        *o = f32::from_bits(x);
    }
}

#[cfg(test)]
mod tests {
    use super::cosine_progress;

    /// The cosine follows whichever limit is nearer its end: the steps when they lead, the
    /// time when it does; either alone; neither gives none.
    #[test]
    fn the_cosine_ends_with_whichever_limit_comes_first() {
        // 1,000 steps after a warm-up of 100, or 10 minutes
        let p = |step, secs| cosine_progress(step, 100, Some(1100), Some(10.0), secs);
        assert_eq!(p(600, 60.0), Some(0.5), "steps ahead of the clock");
        assert_eq!(p(200, 450.0), Some(0.75), "the clock ahead of the steps");
        assert_eq!(p(1100, 600.0), Some(1.0));
        assert_eq!(cosine_progress(600, 100, Some(1100), None, 1e9), Some(0.5));
        assert_eq!(
            cosine_progress(600, 100, None, Some(10.0), 150.0),
            Some(0.25)
        );
        assert_eq!(cosine_progress(600, 100, None, None, 150.0), None);
        // a step limit inside the warm-up gives the clock alone
        assert_eq!(
            cosine_progress(50, 100, Some(80), Some(10.0), 300.0),
            Some(0.5)
        );
    }
}
