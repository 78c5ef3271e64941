//! Training a recurrent model on a [`Task`]: fresh random batches every step, full BPTT over the
//! whole sequence, gradient-norm clipping, an optimizer, and evaluation on a fixed held-out set at
//! intervals, reported through a callback that can stop the run (a step limit, a time budget and
//! the caller's stop flag all end it cleanly with what was learned so far).
//!
//! Nothing here prints; the clock is read only for the time budget. The math runs in an
//! [`Engine`] of the backend of the [`Run`] given to [`train`] or [`resume`], so the loop is the
//! same on every device; a run given a checkpoint directory writes its best and latest
//! checkpoints there and continues from the latest with [`resume`].

use super::{Batch, Inputs, Targets, Task};
use recur::checkpoint::Checkpoint;
use recur::engine::{Batch as EngineBatch, Engine, LossTargets, Start};
use recur::error::{Error, Result as EngineResult};
use recur::model::{Input, Model};
use recur::optim::OptimKind;
use recur::rng::Rng;
use recur::stack::StackConfig;
use recur::train::{
    initial_weights, Budget, Event as TrainEvent, LogRow, Run, Schedule, Settings, StepLoss,
    StopReason, TrainState, Trainer,
};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How to train.
#[derive(Clone, Debug)]
pub struct TrainSpec {
    pub task: Task,
    /// The recurrent stack (its input size is set from the task).
    pub rnn: StackConfig,
    pub optim: OptimKind,
    pub lr: f64,
    /// B: sequences per step.
    pub batch: usize,
    /// Stop after this many steps.
    pub max_steps: usize,
    /// Stop once this much time has passed (checked after every step).
    pub budget: Option<Duration>,
    /// Clip the global gradient norm to this (0 = no clipping).
    pub clip: f64,
    /// Evaluate every this many steps (and at the end).
    pub eval_every: usize,
    /// Held-out sequences, drawn once from `seed` (in batches of `batch`, rounded up).
    pub eval_size: usize,
    pub seed: u64,
    /// Added to the carry gate's bias at initialization (the LSTM's forget gate, the GRU's
    /// update gate; [`recur::stack::Stack::open_carry_gates`]); 0 = PyTorch's initialization.
    pub carry_gate_bias: f64,
}

/// One evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalPoint {
    /// Optimizer steps taken.
    pub step: usize,
    pub elapsed: Duration,
    /// Mean training loss over the steps since the previous evaluation (the task's metric on the
    /// training batches).
    pub train_metric: f64,
    /// The metric on the held-out set.
    pub metric: f64,
}

/// What the callback is told.
pub enum Event<'a> {
    /// A step was taken.
    Step { step: usize, loss: f64 },
    /// An evaluation on the held-out set.
    Eval(&'a EvalPoint),
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct TrainResult {
    pub model: Model,
    /// Trained parameters.
    pub params: Vec<f32>,
    /// The parameters before the first step.
    pub initial: Vec<f32>,
    /// The baseline: the closed form where there is one (adding, copy), else its metric on the
    /// held-out set.
    pub baseline: f64,
    /// The baseline's metric computed on the held-out set (see [`Task::baseline_on`]).
    pub baseline_held_out: f64,
    /// Evaluations, the last one after the final step.
    pub curve: Vec<EvalPoint>,
    /// Steps taken.
    pub steps: usize,
    /// Why it stopped: the step limit, the time budget, the callback, or a non-finite loss
    /// (the parameters are then those before the bad step).
    pub reason: StopReason,
}

impl TrainResult {
    /// The final held-out metric.
    pub fn metric(&self) -> f64 {
        self.curve.last().map_or(f64::NAN, |p| p.metric)
    }
}

/// The model's input for a batch.
fn input(batch: &Batch) -> Input<'_, f32> {
    match &batch.inputs {
        Inputs::Dense(x) => Input::Dense(x),
        Inputs::Tokens(ids) => Input::Tokens(ids),
    }
}

/// The engine's view of a batch.
fn engine_batch(batch: &Batch) -> EngineBatch<'_> {
    EngineBatch {
        input: input(batch),
        t: batch.t,
        b: batch.b,
        lengths: None,
    }
}

/// The targets of a batch that take a loss (NaN values take none).
fn count(batch: &Batch) -> usize {
    match &batch.targets {
        Targets::Values(y) => y.iter().filter(|v| !v.is_nan()).count(),
        Targets::Classes(c) => c.len(),
    }
}

/// Forward and loss: (summed metric, count), the gradient scaled by `scale` as in
/// [`Model::loss`].
fn forward_loss(eng: &mut dyn Engine, batch: &Batch, scale: f32) -> EngineResult<(f64, usize)> {
    let targets = match &batch.targets {
        Targets::Values(y) => LossTargets::Values(y),
        Targets::Classes(c) => LossTargets::Classes(c),
    };
    eng.forward(&engine_batch(batch), Start::Zero, None)?;
    eng.loss(targets, scale)
}

/// The model's outputs on a batch: (R, V) as in [`ModelWorkspace::logits`](recur::model::ModelWorkspace::logits).
pub fn predict(model: &Model, params: &[f32], batch: &Batch) -> Vec<f32> {
    let mut ws = model.workspace::<f32>(batch.t, batch.b);
    model.forward(&mut ws, params, input(batch), None, None, None, None);
    ws.logits.clone()
}

/// The held-out set: `n` sequences in batches of `b`, from its own seed.
pub fn eval_set(task: &Task, n: usize, b: usize, seed: u64) -> Vec<Batch> {
    let mut rng = Rng::new(seed ^ 0x0E7A_15E7);
    (0..n.div_ceil(b))
        .map(|_| task.sample(b, &mut rng))
        .collect()
}

/// The task's metric on `set` (the mean loss times [`Task::metric_scale`]).
fn evaluate(task: &Task, eng: &mut dyn Engine, set: &[Batch]) -> EngineResult<f64> {
    let [s, n] = loss_sums(eng, set)?;
    Ok(task.metric_scale() * s / n.max(1.0))
}

/// The summed loss and count of `set`.
fn loss_sums(eng: &mut dyn Engine, set: &[Batch]) -> EngineResult<[f64; 2]> {
    let mut total = [0.0, 0.0];
    for batch in set {
        let (a, c) = forward_loss(eng, batch, 1.0)?;
        total[0] += a;
        total[1] += c as f64;
    }
    Ok(total)
}

/// The settings of a task run kept with its state: everything but the budget, which a resumed
/// run may change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The task's name ([`TaskKind::name`](super::TaskKind::name)) and its T.
    pub task: String,
    pub len: usize,
    pub lr: f64,
    pub clip: f64,
    pub eval_every: u64,
    /// Sequences per step and in the held-out set.
    pub batch: usize,
    pub eval_size: usize,
    /// Seeds the initial weights, the held-out set and the training batches.
    pub seed: u64,
    pub optim: OptimKind,
    /// [`TrainSpec::carry_gate_bias`] (0 in runs saved before it existed).
    #[serde(default)]
    pub carry_gate_bias: f64,
}

impl RunConfig {
    /// The configuration `spec` describes.
    pub fn of(spec: &TrainSpec) -> Self {
        RunConfig {
            task: spec.task.kind.name().to_string(),
            len: spec.task.len,
            lr: spec.lr,
            clip: spec.clip,
            eval_every: spec.eval_every as u64,
            batch: spec.batch,
            eval_size: spec.eval_size,
            seed: spec.seed,
            optim: spec.optim.clone(),
            carry_gate_bias: spec.carry_gate_bias,
        }
    }

    /// The first setting in which `self` (a saved run's) differs from `other` (the one asked
    /// for), as "name saved vs asked"; `None` when they agree.
    pub fn difference(&self, other: &RunConfig) -> Option<String> {
        let a = serde_json::to_value(self).unwrap_or_default();
        let b = serde_json::to_value(other).unwrap_or_default();
        let (a, b) = (a.as_object()?, b.as_object()?);
        a.iter()
            .find(|(k, v)| b.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k} {v} vs {}", b.get(k).cloned().unwrap_or_default()))
    }
}

/// A long-memory task as a [`recur::train::Task`] of the one training loop: a fresh batch every
/// step from the task's own data RNG, full BPTT from a zero state, the task's metric on a fixed
/// held-out set; a diverged run keeps the parameters before its bad step.
pub struct LongMemory {
    task: Task,
    batch: usize,
    data_rng: Rng,
    set: Vec<Batch>,
    current: Option<Batch>,
    /// A data-parallel rank's sequences of every batch and the number of ranks.
    share: Option<(Range<usize>, usize)>,
}

impl LongMemory {
    /// The task with sequences per step `batch`, its held-out set of `eval_size` sequences and
    /// its data drawn from `seed`.
    pub fn new(task: Task, batch: usize, eval_size: usize, seed: u64) -> Self {
        LongMemory {
            set: eval_set(&task, eval_size, batch, seed),
            data_rng: Rng::new(seed.wrapping_add(1)),
            task,
            batch,
            current: None,
            share: None,
        }
    }
}

impl recur::train::Task for LongMemory {
    type Config = RunConfig;

    fn settings(cfg: &RunConfig) -> Settings {
        Settings {
            lr: cfg.lr,
            schedule: Schedule::Constant,
            grad_clip: cfg.clip,
            grad_clip_value: 0.0,
            eval_every: cfg.eval_every,
            eval_each_epoch: false,
            log_every: 0,
            undo_on_divergence: true,
            ema: 0.0,
        }
    }

    fn init(cfg: &RunConfig) -> (u64, OptimKind) {
        (cfg.seed, cfg.optim.clone())
    }

    fn carry_gate_bias(cfg: &RunConfig) -> f64 {
        cfg.carry_gate_bias
    }

    fn largest_batch(&self) -> (usize, usize) {
        (self.task.steps(), self.batch)
    }

    fn batches_per_epoch(&self) -> Option<u64> {
        None
    }

    fn start_epoch(&mut self, _e: u64, _eng: &mut dyn Engine, _rng: &mut Rng) -> EngineResult<()> {
        Ok(())
    }

    fn forward_loss(
        &mut self,
        _k: u64,
        eng: &mut dyn Engine,
        _rng: &mut Rng,
    ) -> EngineResult<StepLoss> {
        // every rank draws the whole batch (the data generator advances alike everywhere)
        let batch = self.task.sample(self.batch, &mut self.data_rng);
        let n = count(&batch).max(1);
        let (batch, ranks) = match &self.share {
            None => (batch, 1),
            Some((r, size)) => (batch.share(r.clone(), self.task.per_step_targets()), *size),
        };
        // the share's summed loss over the global batch's count, times the ranks (the loop
        // averages the ranks' losses and gradients): exactly the global batch's mean, whatever
        // each share's count
        let (s, _) = forward_loss(eng, &batch, ranks as f32 / n as f32)?;
        let items = batch.b as u64;
        self.current = Some(batch);
        Ok(StepLoss {
            loss: s * ranks as f64 / n as f64,
            items,
        })
    }

    fn backward(&mut self, eng: &mut dyn Engine) -> EngineResult<()> {
        let batch = self
            .current
            .as_ref()
            .expect("forward_loss comes before backward");
        eng.backward(&engine_batch(batch))
    }

    fn evaluate(&mut self, eng: &mut dyn Engine) -> EngineResult<Option<f64>> {
        evaluate(&self.task, eng, &self.set).map(Some)
    }

    /// The held-out batches shared out among the ranks, losses and counts summed.
    fn evaluate_shared(
        &mut self,
        eng: &mut dyn Engine,
        part: &dyn recur::collective::Collective,
    ) -> EngineResult<Option<f64>> {
        let mine = recur::collective::part(self.set.len(), part.rank(), part.size());
        let mut total = loss_sums(eng, &self.set[mine])?;
        part.sum_f64(&mut total)?;
        Ok(Some(
            self.task.metric_scale() * total[0] / total[1].max(1.0),
        ))
    }

    fn split(&mut self, rank: usize, size: usize) -> EngineResult<()> {
        self.share = Some((recur::collective::share(self.batch, rank, size)?, size));
        Ok(())
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "data_rng": self.data_rng.state() })
    }

    fn restore(&mut self, state: &serde_json::Value) -> EngineResult<()> {
        let s: [u64; 4] = serde_json::from_value(state["data_rng"].clone()).map_err(|e| {
            recur::Error::invalid(format!(
                "the task's saved data generator is unreadable: {e}"
            ))
        })?;
        self.data_rng = Rng::from_state(s);
        Ok(())
    }
}

/// Trains a fresh run of `spec` as `run` says (backend, checkpoint directory); the spec's step
/// limit and time budget replace any budget of `run`. `on_event` returns false to stop (the run
/// then ends with a final evaluation, and its latest checkpoint holds it). The loop is the one
/// training loop ([`recur::train::Trainer`]) on a [`LongMemory`] task.
pub fn train(
    spec: &TrainSpec,
    run: Run,
    on_event: &mut dyn FnMut(Event) -> bool,
) -> EngineResult<TrainResult> {
    check(spec)?;
    let task = LongMemory::new(spec.task.clone(), spec.batch, spec.eval_size, spec.seed);
    let model = spec.task.model_config(spec.rnn.clone());
    let trainer = run
        .budget(budget(spec))
        .start(model, task, RunConfig::of(spec))?;
    let initial = trainer.params()?;
    finish(spec, trainer, initial, on_event)
}

/// Continues the run saved in `ckpt` (a checkpoint of [`train`]'s) as `run` says, up to the
/// spec's new step limit and time budget. The spec must describe the saved run (the same task,
/// model and settings); the curve returned includes the evaluations before the checkpoint.
pub fn resume(
    spec: &TrainSpec,
    run: Run,
    ckpt: Checkpoint,
    on_event: &mut dyn FnMut(Event) -> bool,
) -> EngineResult<TrainResult> {
    check(spec)?;
    let saved = TrainState::<RunConfig>::of(&ckpt)?.config;
    if let Some(d) = saved.difference(&RunConfig::of(spec)) {
        return Err(Error::invalid(format!(
            "the saved run has other settings ({d}); resume with the same flags"
        )));
    }
    let model = spec.task.model_config(spec.rnn.clone());
    if ckpt.model != model {
        return Err(Error::invalid(
            "the saved run has another model (cell, sizes or layers); resume with the same flags",
        ));
    }
    // the weights the run started from, drawn again as the fresh run drew them
    let (initial, _) = initial_weights::<LongMemory>(&Model::new(model)?, &saved);
    let task = LongMemory::new(spec.task.clone(), spec.batch, spec.eval_size, spec.seed);
    let trainer = run.budget(budget(spec)).resume(ckpt, task)?;
    finish(spec, trainer, initial, on_event)
}

fn check(spec: &TrainSpec) -> EngineResult<()> {
    if spec.batch == 0 || spec.eval_every == 0 || spec.eval_size == 0 {
        return Err(Error::invalid(
            "batch, eval_every and eval_size must be at least 1",
        ));
    }
    Ok(())
}

fn budget(spec: &TrainSpec) -> Budget {
    Budget {
        epochs: None,
        max_steps: Some(spec.max_steps as u64),
        max_minutes: spec.budget.map(|d| d.as_secs_f64() / 60.0),
    }
}

/// A log row with a held-out metric as an evaluation point (`scale`: the task's metric scale).
fn eval_point(row: &LogRow, scale: f64) -> Option<EvalPoint> {
    Some(EvalPoint {
        step: row.step as usize,
        elapsed: Duration::from_secs_f64(row.elapsed_secs),
        train_metric: row.train_loss * scale,
        metric: row.val_loss?,
    })
}

/// Runs `trainer` to its end and gathers the result.
fn finish(
    spec: &TrainSpec,
    mut trainer: Trainer<LongMemory>,
    initial: Vec<f32>,
    on_event: &mut dyn FnMut(Event) -> bool,
) -> EngineResult<TrainResult> {
    let (bs, bn) = trainer
        .task
        .set
        .iter()
        .map(|b| spec.task.baseline_on(b))
        .fold((0.0, 0), |a, x| (a.0 + x.0, a.1 + x.1));
    let baseline_held_out = bs / bn.max(1) as f64;
    let baseline = spec.task.baseline_formula().unwrap_or(baseline_held_out);
    let model = trainer.model.clone();
    let scale = spec.task.metric_scale();
    let stop = AtomicBool::new(false);
    let mut curve: Vec<EvalPoint> = (trainer.state.history.iter())
        .filter_map(|r| eval_point(r, scale))
        .collect();
    let reason = trainer.run(&stop, &mut |ev| match ev {
        TrainEvent::Step(s) => {
            if !on_event(Event::Step {
                step: s.step as usize,
                loss: s.loss,
            }) {
                stop.store(true, Ordering::Relaxed);
            }
        }
        TrainEvent::Eval { row, .. } => {
            if let Some(p) = eval_point(row, scale) {
                if !on_event(Event::Eval(&p)) {
                    stop.store(true, Ordering::Relaxed);
                }
                curve.push(p);
            }
        }
        TrainEvent::Log { .. } => {}
    })?;
    // a run stopped by the callback between evaluations, or diverged, ends with one
    let step = trainer.state.step as usize;
    if curve.last().is_none_or(|p| p.step != step) {
        let st = &trainer.state;
        let train_metric = if st.acc_steps > 0 {
            st.acc_loss / st.acc_steps as f64 * scale
        } else {
            f64::NAN
        };
        let p = EvalPoint {
            step,
            elapsed: Duration::from_secs_f64(st.elapsed_secs),
            train_metric,
            metric: trainer.evaluate()?.unwrap_or(f64::NAN),
        };
        on_event(Event::Eval(&p));
        curve.push(p);
    }
    Ok(TrainResult {
        params: trainer.params()?,
        model,
        initial,
        baseline,
        baseline_held_out,
        curve,
        steps: step,
        reason,
    })
}

/// Gradient flow through a model trained on the adding problem (or its initial weights): the mean
/// `||dL/dh_t|| / ||dL/dh_T||` over `n` fresh sequences, for the model's own loss
/// `(w . h_T + b - y)^2`, in f64 (see [`crate::gradflow`]). Needs a one-layer, one-direction stack.
pub fn adding_gradflow(
    task: &Task,
    model: &Model,
    params: &[f32],
    n: usize,
    seed: u64,
) -> EngineResult<recur_study::gradflow::GradflowResult> {
    use recur::model::Head;
    use recur_study::gradflow::{gradflow_on, GradflowNet};
    let cfg = &model.cfg();
    if task.kind != super::TaskKind::Adding || cfg.head != Head::LastRegression {
        return Err(Error::invalid(
            "gradient flow of a trained model is measured on the adding problem",
        ));
    }
    if cfg.rnn.num_layers != 1 || cfg.rnn.bidirectional || cfg.rnn.proj_size > 0 {
        return Err(Error::invalid(
            "gradient flow needs a one-layer, one-direction stack",
        ));
    }
    let to64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let entry = |name: &str| model.layout().get(name).map(|e| e.range());
    let w =
        entry("decoder.weight").ok_or_else(|| Error::invalid("the model has no decoder.weight"))?;
    let bias = entry("decoder.bias").map_or(0.0, |r| params[r.start] as f64);
    let net = GradflowNet {
        stack: model.stack().clone(),
        params: to64(&params[model.rnn_range()]),
        w: to64(&params[w]),
    };
    let batch = task.sample(n, &mut Rng::new(seed));
    let (Inputs::Dense(x), Targets::Values(y)) = (&batch.inputs, &batch.targets) else {
        return Err(Error::invalid("adding batches are dense with values"));
    };
    let (nt, nb) = (batch.t, batch.b);
    // per sequence: (T, 2) inputs; the decoder bias moves into the target
    let xs: Vec<Vec<f64>> = (0..nb)
        .map(|b| {
            (0..nt)
                .flat_map(|t| {
                    x[(t * nb + b) * 2..(t * nb + b) * 2 + 2]
                        .iter()
                        .map(|&v| v as f64)
                })
                .collect()
        })
        .collect();
    let ys: Vec<f64> = y.iter().map(|&v| v as f64 - bias).collect();
    Ok(gradflow_on(&net, &xs, &ys))
}
