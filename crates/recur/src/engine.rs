//! The one device seam: an [`Engine`] does the math of a training or inference step on a model
//! (forward, loss, backward, clipping, the optimizer's update) wherever its numbers live, and a
//! [`Backend`] makes engines and one-step generators for a model. The CPU ([`Cpu`], [`CpuEngine`])
//! is here; the GPU's implement the same two traits in the `recur-cuda` crate. Every training loop
//! and command talks to these traits only, so choosing a device is one value.
//!
//! An engine owns the parameters, their gradients, the optimizer state, a carried hidden state
//! and one workspace per batch shape it has seen (a few are kept). Host copies of the
//! parameters, optimizer and carried state ([`Engine::params`], [`Engine::optimizer`],
//! [`Engine::carry`]) are what checkpoints hold, in the same format for every engine, so a run
//! trained on one device continues on another.
//!
//! One training step is [`Engine::forward`], then [`Engine::loss`] (or the caller's own loss on
//! [`Engine::logits`] handed back with [`Engine::set_dlogits`]), [`Engine::backward`],
//! [`Engine::clip`] and [`Engine::update`]. A workspace is allocated only after its memory
//! estimate ([`crate::memory`]) fits.
//!
//! ```
//! use recur::cell::CellKind;
//! use recur::engine::{Backend, Batch, Cpu, LossTargets, Start};
//! use recur::model::{Head, Model, ModelConfig};
//! use recur::optim::{OptimKind, Optimizer};
//! use recur::stack::StackConfig;
//!
//! // a one-layer LSTM reading 3 features per step, one class score pair per sequence
//! let cfg = ModelConfig::dense(3, StackConfig::new(CellKind::Lstm, 3, 8), 2, Head::LastClasses);
//! let model = Model::new(cfg).unwrap();
//! let mut params = vec![0.0; model.num_params()];
//! model.init(&mut params, &mut recur::rng::Rng::new(7));
//! let opt = Optimizer::new(OptimKind::Sgd { momentum: 0.0, nesterov: false }, 0.1, params.len());
//! let mut eng = Cpu.engine(model, params, Some(opt)).unwrap();
//!
//! let (t, b) = (5, 4);
//! let x = vec![0.25f32; t * b * 3];
//! let batch = Batch::dense(&x, t, b);
//! let mut losses = Vec::new();
//! for _ in 0..3 {
//!     eng.forward(&batch, Start::Zero, None).unwrap();
//!     let (sum, n) = eng.loss(LossTargets::Classes(&[0, 1, 0, 1]), 0.25).unwrap();
//!     losses.push(sum / n as f64);
//!     eng.backward(&batch).unwrap();
//!     eng.clip(0.0, 5.0).unwrap();
//!     eng.update(0.1).unwrap();
//! }
//! assert!(losses.iter().all(|l| l.is_finite()));
//! ```

use crate::error::{Error, Result};
use crate::model::{Input, Model, ModelWorkspace};
use crate::optim::{clip_grad_norm, clip_grad_value, grad_norm, Optimizer};
use crate::precision::{self, Precision};
use crate::rng::Rng;
use crate::stream::{stream_loss, Carry};
use std::borrow::Cow;

/// One batch as the model reads it: (T, B) token ids or (T, B, I) features, with optional
/// per-sequence lengths (PyTorch's packed sequences; all T when `None`).
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    pub input: Input<'a, f32>,
    /// T: steps.
    pub t: usize,
    /// B: sequences.
    pub b: usize,
    pub lengths: Option<&'a [usize]>,
}

impl<'a> Batch<'a> {
    /// (T, B) token ids, row `t*B + b` = step t of sequence b.
    pub fn tokens(ids: &'a [u32], t: usize, b: usize) -> Self {
        Batch {
            input: Input::Tokens(ids),
            t,
            b,
            lengths: None,
        }
    }

    /// (T, B, I) features.
    pub fn dense(x: &'a [f32], t: usize, b: usize) -> Self {
        Batch {
            input: Input::Dense(x),
            t,
            b,
            lengths: None,
        }
    }

    /// The same batch with per-sequence lengths.
    pub fn with_lengths(mut self, lengths: &'a [usize]) -> Self {
        self.lengths = Some(lengths);
        self
    }
}

/// The state a forward starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Zeros.
    Zero,
    /// The engine's carried state ([`Engine::set_carry`], [`Engine::keep_carry`]); zeros the
    /// first time.
    Carried,
}

/// The targets of one batch for [`Engine::loss`].
#[derive(Clone, Copy)]
pub enum LossTargets<'a> {
    /// One class per decoded row (softmax cross-entropy).
    Classes(&'a [u32]),
    /// (R, V) values, NaN for padding (squared error).
    Values(&'a [f32]),
}

/// The math of a step on one model, on one device.
pub trait Engine {
    /// Where it computes, e.g. `cpu` or `cuda (NVIDIA H100 80GB HBM3)`.
    fn device(&self) -> String;

    /// The model it computes.
    fn model(&self) -> &Model;

    /// Forward of `batch` from `start`; training mode (dropout masks drawn from `rng`) when `rng`
    /// is given, inference mode otherwise. The logits stay in the engine.
    fn forward(&mut self, batch: &Batch, start: Start, rng: Option<&mut Rng>) -> Result<()>;

    /// The head's loss of the last forward against `targets`, keeping `scale * dL/dlogits` for
    /// [`Engine::backward`]: the summed loss and its count (as [`Model::loss`],
    /// [`Model::loss_mse`]).
    fn loss(&mut self, targets: LossTargets, scale: f32) -> Result<(f64, usize)>;

    /// The logits (R, V) of the last forward (a host copy for device engines).
    fn logits(&mut self) -> Result<Cow<'_, [f32]>>;

    /// Sets dL/dlogits (R, V) of the last forward, for a loss computed by the caller.
    fn set_dlogits(&mut self, dlogits: &[f32]) -> Result<()>;

    /// Backward of the last forward (same `batch`) into zeroed gradients.
    fn backward(&mut self, batch: &Batch) -> Result<()>;

    /// Clips the gradients: each element to `[-value, value]` when `value > 0`, then the global
    /// norm to `norm` when `norm > 0`. Returns the global norm before the norm clipping.
    fn clip(&mut self, value: f64, norm: f64) -> Result<f64>;

    /// The gradients of the last backward (a host copy for device engines): what a data-parallel
    /// run averages across workers between [`Engine::backward`] and [`Engine::clip`].
    fn grads(&self) -> Result<Cow<'_, [f32]>>;

    /// Replaces the gradients (e.g. with the average across workers).
    fn set_grads(&mut self, grads: &[f32]) -> Result<()>;

    /// One optimizer update with learning rate `lr`. An error without an optimizer.
    fn update(&mut self, lr: f64) -> Result<()>;

    /// Keeps a copy of the parameters, for [`Engine::restore`].
    fn snapshot(&mut self) -> Result<()>;

    /// Puts back the parameters of the last [`Engine::snapshot`].
    fn restore(&mut self) -> Result<()>;

    /// The carried state becomes the last forward's final states.
    fn keep_carry(&mut self) -> Result<()>;

    /// Zeroes the carried state.
    fn reset_carry(&mut self) -> Result<()>;

    /// The carried state (a host copy for device engines); `None` before there is one.
    fn carry(&self) -> Result<Option<Cow<'_, Carry>>>;

    /// Replaces the carried state.
    fn set_carry(&mut self, carry: &Carry) -> Result<()>;

    /// Summed cross-entropy and count of the current parameters over `ids` read as `b` parallel
    /// streams from a zero state, `t` steps at a time ([`crate::stream::stream_loss`]).
    fn stream_loss(&mut self, ids: &[u32], t: usize, b: usize) -> Result<(f64, usize)>;

    /// The parameters (a host copy for device engines).
    fn params(&self) -> Result<Cow<'_, [f32]>>;

    /// Replaces the parameters.
    fn set_params(&mut self, params: &[f32]) -> Result<()>;

    /// The optimizer with its state (a host copy for device engines); `None` for an
    /// inference-only engine.
    fn optimizer(&self) -> Result<Option<Cow<'_, Optimizer<f32>>>>;

    /// Waits until the work queued so far is done (device engines queue it; for timing).
    fn sync(&self) -> Result<()> {
        Ok(())
    }

    /// The number format it computes in ([`Precision`]); float32 unless set.
    fn precision(&self) -> Precision {
        Precision::F32
    }

    /// Computes in `p` from now on (see [`crate::precision`]). On an inference-only engine
    /// (no optimizer) bf16 and int8 convert the weights held, so the engine does not go back to
    /// float32. On a training engine bf16 is mixed precision: the engine keeps float32 master
    /// weights (what [`Engine::params`] returns and the optimizer updates) and computes with a
    /// copy rounded to bf16 after every update; int8 does not train. An error where the engine
    /// cannot.
    fn set_precision(&mut self, p: Precision) -> Result<()> {
        if p == Precision::F32 {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "{} computes in float32 only (--precision f32)",
                self.device()
            )))
        }
    }
}

/// A model fed one token at a time (B = 1, T = 1) with its state carried: what text generation
/// and real-time use sit on.
pub trait Stepper {
    /// Runs one token through the model.
    fn feed(&mut self, id: u32) -> Result<()>;

    /// The logits (V) after the last [`Stepper::feed`] (empty before).
    fn logits(&self) -> &[f32];
}

/// A device: makes engines and steppers for models.
pub trait Backend: Send + Sync {
    /// Where it computes, e.g. `cpu` or `cuda (NVIDIA H100 80GB HBM3)`.
    fn name(&self) -> String;

    /// An engine computing `model` from `params`, training with `opt` (`None`: inference only).
    fn engine(
        &self,
        model: Model,
        params: Vec<f32>,
        opt: Option<Optimizer<f32>>,
    ) -> Result<Box<dyn Engine>>;

    /// A one-token-at-a-time runner of `model` with `params`, computing in `precision` (an
    /// error where the device does not).
    fn stepper<'a>(
        &'a self,
        model: &'a Model,
        params: &'a [f32],
        precision: Precision,
    ) -> Result<Box<dyn Stepper + 'a>>;
}

/// The CPU: this crate's model, optimizer and clipping, in float32, on the threads of
/// [`crate::set_threads`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

impl Backend for Cpu {
    fn name(&self) -> String {
        "cpu".into()
    }

    fn engine(
        &self,
        model: Model,
        params: Vec<f32>,
        opt: Option<Optimizer<f32>>,
    ) -> Result<Box<dyn Engine>> {
        Ok(Box::new(CpuEngine::new(model, params, opt)?))
    }

    fn stepper<'a>(
        &'a self,
        model: &'a Model,
        params: &'a [f32],
        precision: Precision,
    ) -> Result<Box<dyn Stepper + 'a>> {
        check_len(params.len(), model.num_params())?;
        Ok(Box::new(CpuStepper::new(model, params, precision)?))
    }
}

/// The error of a parameter buffer of `given` values for a model of `want`.
pub fn check_len(given: usize, want: usize) -> Result<()> {
    if given == want {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{given} parameters given, the model has {want}"
        )))
    }
}

/// How many workspaces (batch shapes) an engine keeps; the oldest goes first.
const KEEP_SHAPES: usize = 4;

/// Workspaces by batch shape, the newest last.
pub(crate) struct Workspaces {
    list: Vec<ModelWorkspace<f32>>,
}

impl Workspaces {
    fn new() -> Self {
        Workspaces { list: Vec::new() }
    }

    /// The workspace for (t, b), made (after its memory check) if there is none, computing in
    /// `precision`.
    fn get(
        &mut self,
        model: &Model,
        t: usize,
        b: usize,
        precision: Precision,
    ) -> Result<&mut ModelWorkspace<f32>> {
        let i = match self.list.iter().position(|w| w.t == t && w.b == b) {
            Some(i) => i,
            None => {
                crate::memory::check(
                    &format!("a workspace for batches of {b} x {t} steps"),
                    crate::memory::workspace_bytes(model, t, b, 4),
                )?;
                if self.list.len() == KEEP_SHAPES {
                    self.list.remove(0);
                }
                let mut ws = model.workspace(t, b);
                ws.set_precision(precision);
                self.list.push(ws);
                self.list.len() - 1
            }
        };
        Ok(&mut self.list[i])
    }

    /// The workspace of (t, b), if kept.
    fn find(&mut self, t: usize, b: usize) -> Option<&mut ModelWorkspace<f32>> {
        self.list.iter_mut().find(|w| w.t == t && w.b == b)
    }
}

/// The CPU's [`Engine`].
pub struct CpuEngine {
    model: Model,
    /// The weights computed with: in bf16 and int8 converted to that format.
    params: Vec<f32>,
    /// Training in bf16: the float32 master weights, which the optimizer updates and
    /// `params` is rounded from.
    master: Option<Vec<f32>>,
    // sized at the first backward
    grads: Vec<f32>,
    opt: Option<Optimizer<f32>>,
    // sized at the first snapshot
    backup: Vec<f32>,
    carry: Option<Carry>,
    ws: Workspaces,
    // the shape of the last forward
    last: Option<(usize, usize)>,
    precision: Precision,
}

impl CpuEngine {
    /// An engine for `model` from `params` (checked against its layout), training with `opt`.
    pub fn new(model: Model, params: Vec<f32>, opt: Option<Optimizer<f32>>) -> Result<Self> {
        check_len(params.len(), model.num_params())?;
        if let Some(o) = &opt {
            check_len(o.m.len(), model.num_params())?;
        }
        Ok(CpuEngine {
            model,
            params,
            master: None,
            grads: Vec::new(),
            opt,
            backup: Vec::new(),
            carry: None,
            ws: Workspaces::new(),
            last: None,
            precision: Precision::F32,
        })
    }

    /// The model and the workspace of the last forward.
    fn last_ws(&mut self) -> Result<(&Model, &mut ModelWorkspace<f32>)> {
        let none = || Error::invalid("the engine has run no forward yet");
        let (t, b) = self.last.ok_or_else(none)?;
        let ws = self.ws.find(t, b).ok_or_else(none)?;
        Ok((&self.model, ws))
    }
}

impl Engine for CpuEngine {
    fn device(&self) -> String {
        "cpu".into()
    }

    fn model(&self) -> &Model {
        &self.model
    }

    fn forward(&mut self, batch: &Batch, start: Start, rng: Option<&mut Rng>) -> Result<()> {
        let m = &self.model;
        check_batch(m, batch)?;
        if start == Start::Carried {
            let c = self.carry.get_or_insert_with(|| Carry::zeros(m, batch.b));
            check_carry(m, c, batch.b)?;
        }
        let ws = self.ws.get(m, batch.t, batch.b, self.precision)?;
        let (h0, c0) = match (start, &self.carry) {
            (Start::Carried, Some(c)) => c.as_init(),
            _ => (None, None),
        };
        m.forward(ws, &self.params, batch.input, h0, c0, batch.lengths, rng);
        self.last = Some((batch.t, batch.b));
        Ok(())
    }

    fn loss(&mut self, targets: LossTargets, scale: f32) -> Result<(f64, usize)> {
        let (m, ws) = self.last_ws()?;
        check_targets(m, ws.rows(), targets)?;
        Ok(match targets {
            LossTargets::Values(y) => m.loss_mse(ws, y, scale),
            LossTargets::Classes(c) => m.loss(ws, c, scale),
        })
    }

    fn logits(&mut self) -> Result<Cow<'_, [f32]>> {
        Ok(Cow::Borrowed(&self.last_ws()?.1.logits))
    }

    fn set_dlogits(&mut self, dlogits: &[f32]) -> Result<()> {
        let (_, ws) = self.last_ws()?;
        if dlogits.len() != ws.dlogits.len() {
            return Err(Error::invalid(format!(
                "{} logit gradients for {} logits",
                dlogits.len(),
                ws.dlogits.len()
            )));
        }
        ws.dlogits.copy_from_slice(dlogits);
        Ok(())
    }

    fn backward(&mut self, batch: &Batch) -> Result<()> {
        if self.precision == Precision::Int8 {
            return Err(Error::invalid(
                "no backward in int8: it is for inference only",
            ));
        }
        if self.last != Some((batch.t, batch.b)) {
            return Err(Error::invalid(
                "backward needs a forward of the same batch first",
            ));
        }
        let n = self.params.len();
        if self.grads.len() != n {
            self.grads = vec![0.0; n];
        } else {
            self.grads.fill(0.0);
        }
        let ws = self
            .ws
            .find(batch.t, batch.b)
            .expect("the last forward's workspace is kept");
        self.model.backward(
            ws,
            &self.params,
            &mut self.grads,
            batch.input,
            batch.lengths,
            None,
            None,
            None,
        );
        Ok(())
    }

    fn clip(&mut self, value: f64, norm: f64) -> Result<f64> {
        let g = &mut self.grads;
        if value > 0.0 {
            clip_grad_value(g, value);
        }
        Ok(if norm > 0.0 {
            clip_grad_norm(g, norm)
        } else {
            grad_norm(g)
        })
    }

    fn grads(&self) -> Result<Cow<'_, [f32]>> {
        Ok(Cow::Borrowed(&self.grads))
    }

    fn set_grads(&mut self, grads: &[f32]) -> Result<()> {
        check_len(grads.len(), self.params.len())?;
        self.grads.clear();
        self.grads.extend_from_slice(grads);
        Ok(())
    }

    fn update(&mut self, lr: f64) -> Result<()> {
        let opt = self
            .opt
            .as_mut()
            .ok_or_else(|| Error::invalid("an inference-only engine has no optimizer"))?;
        if self.grads.len() != self.params.len() {
            return Err(Error::invalid("update needs a backward first"));
        }
        opt.lr = lr;
        match &mut self.master {
            Some(master) => {
                opt.update(master, &self.grads);
                // a master copy exists in bf16 training only (int8 does not train)
                precision::copy_rounded(self.model.layout(), master, &mut self.params);
            }
            None => opt.update(&mut self.params, &self.grads),
        }
        Ok(())
    }

    fn snapshot(&mut self) -> Result<()> {
        let held = self.master.as_ref().unwrap_or(&self.params);
        self.backup.clear();
        self.backup.extend_from_slice(held);
        Ok(())
    }

    fn restore(&mut self) -> Result<()> {
        if self.backup.len() != self.params.len() {
            return Err(Error::invalid("restore needs a snapshot first"));
        }
        let backup = std::mem::take(&mut self.backup);
        self.set_params(&backup)?;
        self.backup = backup;
        Ok(())
    }

    fn keep_carry(&mut self) -> Result<()> {
        let (_, b) = self
            .last
            .ok_or_else(|| Error::invalid("the engine has run no forward yet"))?;
        let none = || Error::invalid("the engine has run no forward yet");
        let ws = self
            .ws
            .find(self.last.ok_or_else(none)?.0, b)
            .ok_or_else(none)?;
        match &mut self.carry {
            Some(c) if check_carry(&self.model, c, b).is_ok() => c.take_from(ws),
            slot => {
                let mut c = Carry::zeros(&self.model, b);
                c.take_from(ws);
                *slot = Some(c);
            }
        }
        Ok(())
    }

    fn reset_carry(&mut self) -> Result<()> {
        if let Some(c) = &mut self.carry {
            c.reset();
        }
        Ok(())
    }

    fn carry(&self) -> Result<Option<Cow<'_, Carry>>> {
        Ok(self.carry.as_ref().map(Cow::Borrowed))
    }

    fn set_carry(&mut self, carry: &Carry) -> Result<()> {
        let b = carry_batch(&self.model, carry)?;
        check_carry(&self.model, carry, b)?;
        self.carry = Some(carry.clone());
        Ok(())
    }

    fn stream_loss(&mut self, ids: &[u32], t: usize, b: usize) -> Result<(f64, usize)> {
        if let Some(&bad) = ids
            .iter()
            .find(|&&id| id as usize >= self.model.cfg().input_size)
        {
            return Err(Error::invalid(format!(
                "token id {bad} is outside the model's vocabulary of {}",
                self.model.cfg().input_size
            )));
        }
        let ws = self.ws.get(&self.model, t, b, self.precision)?;
        let r = stream_loss(&self.model, &self.params, ids, ws);
        // the workspace now holds the stream's last chunk, not the last training forward
        if self.last == Some((t, b)) {
            self.last = None;
        }
        Ok(r)
    }

    fn params(&self) -> Result<Cow<'_, [f32]>> {
        Ok(Cow::Borrowed(self.master.as_ref().unwrap_or(&self.params)))
    }

    fn set_params(&mut self, params: &[f32]) -> Result<()> {
        check_len(params.len(), self.params.len())?;
        if let Some(master) = &mut self.master {
            master.copy_from_slice(params);
        }
        self.params.copy_from_slice(params);
        precision::prepare_weights(self.model.layout(), &mut self.params, self.precision);
        Ok(())
    }

    fn optimizer(&self) -> Result<Option<Cow<'_, Optimizer<f32>>>> {
        Ok(self.opt.as_ref().map(Cow::Borrowed))
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn set_precision(&mut self, p: Precision) -> Result<()> {
        if p == self.precision {
            return Ok(());
        }
        // from float32 only: another format's weights were rounded (and p is not float32 below)
        if self.precision != Precision::F32 {
            return Err(Error::invalid(
                "this engine's weights were rounded to another format: make a new engine",
            ));
        }
        if self.opt.is_some() && p == Precision::Int8 {
            return Err(Error::invalid(
                "int8 runs inference only (eval, sample, bench, speech eval): train in f32 or bf16",
            ));
        }
        if self.opt.is_some() {
            self.master = Some(self.params.clone());
        }
        precision::prepare_weights(self.model.layout(), &mut self.params, p);
        for ws in &mut self.ws.list {
            ws.set_precision(p);
        }
        self.precision = p;
        Ok(())
    }
}

/// The batch fits the model: input size, token range, lengths.
pub fn check_batch(model: &Model, batch: &Batch) -> Result<()> {
    let (t, b) = (batch.t, batch.b);
    if t == 0 || b == 0 {
        return Err(Error::invalid(format!(
            "a batch needs at least one step and one sequence, got {t} x {b}"
        )));
    }
    match batch.input {
        Input::Tokens(ids) => {
            if ids.len() != t * b {
                return Err(Error::invalid(format!(
                    "{} token ids for a batch of {b} x {t} steps",
                    ids.len()
                )));
            }
            let v = model.cfg().input_size;
            if let Some(&bad) = ids.iter().find(|&&id| id as usize >= v) {
                return Err(Error::invalid(format!(
                    "token id {bad} is outside the model's vocabulary of {v}"
                )));
            }
        }
        Input::Dense(x) => {
            let i = model.cfg().input_size;
            if x.len() != t * b * i {
                return Err(Error::invalid(format!(
                    "{} input values for a batch of {b} x {t} steps of {i} features",
                    x.len()
                )));
            }
        }
    }
    crate::stack::check_lengths(batch.lengths, t, b)
}

fn check_targets(model: &Model, rows: usize, targets: LossTargets) -> Result<()> {
    let v = model.cfg().output_size;
    match targets {
        LossTargets::Classes(c) => {
            if c.len() != rows {
                return Err(Error::invalid(format!(
                    "{} class targets for {rows} output rows",
                    c.len()
                )));
            }
            if let Some(&bad) = c.iter().find(|&&k| k as usize >= v) {
                return Err(Error::invalid(format!(
                    "class {bad} is outside the model's {v} outputs"
                )));
            }
        }
        LossTargets::Values(y) => {
            if y.len() != rows * v {
                return Err(Error::invalid(format!(
                    "{} target values for {rows} rows of {v} outputs",
                    y.len()
                )));
            }
        }
    }
    Ok(())
}

/// Values in `model`'s state for `b` sequences: (h, c), c empty but for the LSTM.
pub fn state_sizes(model: &Model, b: usize) -> (usize, usize) {
    let r = &model.cfg().rnn;
    let ld = r.num_layers * r.dirs();
    let c = if r.kind() == crate::cell::CellKind::Lstm {
        ld * b * r.hidden_size
    } else {
        0
    };
    (ld * b * r.out_size(), c)
}

/// B of a carried state, from its size.
pub fn carry_batch(model: &Model, carry: &Carry) -> Result<usize> {
    let (per, _) = state_sizes(model, 1);
    if per == 0 || !carry.h.len().is_multiple_of(per) {
        return Err(Error::invalid(
            "the carried state does not fit the model's layers and sizes",
        ));
    }
    Ok(carry.h.len() / per)
}

/// The carried state has the shape of `model`'s state for `b` sequences.
pub fn check_carry(model: &Model, carry: &Carry, b: usize) -> Result<()> {
    let (h, c) = state_sizes(model, b);
    if h != carry.h.len() || c != carry.c.len() {
        return Err(Error::invalid(format!(
            "the carried state holds {} values, the model's state for {b} sequences {}",
            carry.h.len() + carry.c.len(),
            h + c
        )));
    }
    Ok(())
}

/// The CPU's [`Stepper`]: a [`crate::stream::Streamer`] of one stream, one token per step.
pub struct CpuStepper<'a> {
    stream: crate::stream::Streamer<'a>,
    fed: bool,
}

impl<'a> CpuStepper<'a> {
    pub fn new(model: &'a Model, params: &'a [f32], precision: Precision) -> Result<Self> {
        Ok(CpuStepper {
            stream: crate::stream::Streamer::new(model, params, 1)?.with_precision(precision)?,
            fed: false,
        })
    }
}

impl Stepper for CpuStepper<'_> {
    fn feed(&mut self, id: u32) -> Result<()> {
        let v = self.stream.model().cfg().input_size;
        if id as usize >= v {
            return Err(Error::invalid(format!(
                "token id {id} is outside the model's vocabulary of {v}"
            )));
        }
        self.stream.step(Input::Tokens(&[id]));
        self.fed = true;
        Ok(())
    }

    fn logits(&self) -> &[f32] {
        if self.fed {
            self.stream.logits()
        } else {
            &[]
        }
    }
}
