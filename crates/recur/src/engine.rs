//! The math of a character-model training run behind one trait, so that the training loop
//! ([`crate::apps::charlm::train::Trainer`]: budgets, evaluation, checkpoints, resume, the stop flag, the NaN
//! stop) is one implementation whatever device computes.
//!
//! An [`Engine`] owns the parameters, gradients, optimizer state, the carried hidden state and the
//! workspaces, wherever they live. [`CpuEngine`] is the CPU model of this crate; the CUDA backend
//! (crate `recur-cuda`) implements the same trait on the GPU. Host copies of the parameters,
//! optimizer and carried state ([`Engine::params`], [`Engine::optimizer`], [`Engine::carry`]) are
//! what checkpoints hold, in the same format for every engine, so a run trained on one device
//! continues on another.
//!
//! What this is not: the loop itself, data handling, or anything that prints.

use crate::model::{Input, Model, ModelWorkspace};
use crate::optim::{clip_grad_norm, clip_grad_value, grad_norm, Optimizer};
use crate::rng::Rng;
use crate::stream::{stream_loss, Carry};
use std::borrow::Cow;

/// Everything an engine starts from: the model, its parameters, the optimizer and carried state,
/// and the batch shapes of training (T, B) and of evaluation (T, `val_b`; 0 = no evaluation).
pub struct EngineParts {
    pub model: Model,
    pub params: Vec<f32>,
    pub opt: Optimizer<f32>,
    pub carry: Carry,
    pub t: usize,
    pub b: usize,
    pub val_b: usize,
}

/// Why an engine could not do its work (a device error); one line.
pub type EngineError = String;

/// One training step is `forward_loss`, `backward_clip`, then (if both gave finite numbers)
/// `update`; the trainer decides, in between, whether the step counts.
pub trait Engine {
    /// Where it computes, e.g. `cpu` or `cuda (NVIDIA H100 80GB HBM3)`.
    fn device(&self) -> String;

    /// Zeroes the carried hidden state (a new epoch).
    fn reset_carry(&mut self);

    /// Training-mode forward of one (T, B) batch of token ids from the carried state, dropout
    /// masks drawn from `rng`; the mean cross-entropy against `targets` (returned) with its
    /// gradient kept for [`Engine::backward_clip`].
    fn forward_loss(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        rng: &mut Rng,
    ) -> Result<f64, EngineError>;

    /// Backward of the last forward (same `inputs`) into zeroed gradients, then clipping: each
    /// element to `[-clip_value, clip_value]` when `clip_value > 0`, then the global norm to
    /// `clip_norm` when `clip_norm > 0`. Returns the global norm before the norm clipping (after
    /// the value clipping).
    fn backward_clip(
        &mut self,
        inputs: &[u32],
        clip_value: f64,
        clip_norm: f64,
    ) -> Result<f64, EngineError>;

    /// The optimizer's update with learning rate `lr`; then the carried state becomes the last
    /// forward's final states.
    fn update(&mut self, lr: f64) -> Result<(), EngineError>;

    /// Summed cross-entropy and count of the current parameters over `ids` read as `val_b`
    /// streams from a zero state (`crate::stream::stream_loss`); (0, 0) without evaluation.
    fn stream_loss(&mut self, ids: &[u32]) -> Result<(f64, usize), EngineError>;

    /// The parameters (a host copy for device engines).
    fn params(&self) -> Result<Cow<'_, [f32]>, EngineError>;

    /// Replaces the parameters.
    fn set_params(&mut self, params: &[f32]) -> Result<(), EngineError>;

    /// The optimizer with its state (a host copy for device engines).
    fn optimizer(&self) -> Result<Cow<'_, Optimizer<f32>>, EngineError>;

    /// The carried hidden state (a host copy for device engines).
    fn carry(&self) -> Result<Cow<'_, Carry>, EngineError>;
}

/// What every CPU engine holds: the model, its parameters and their gradients, the optimizer.
struct Core {
    model: Model,
    params: Vec<f32>,
    grads: Vec<f32>,
    opt: Optimizer<f32>,
}

impl Core {
    fn new(model: Model, params: Vec<f32>, opt: Optimizer<f32>) -> Core {
        Core {
            grads: vec![0.0; params.len()],
            model,
            params,
            opt,
        }
    }

    /// Backward of the forward held in `ws` into zeroed gradients.
    fn backward(
        &mut self,
        ws: &mut ModelWorkspace<f32>,
        input: Input<f32>,
        lengths: Option<&[usize]>,
    ) {
        self.grads.fill(0.0);
        let (m, p) = (&self.model, &self.params);
        m.backward(ws, p, &mut self.grads, input, lengths, None, None, None);
    }

    /// Global-norm clipping when `clip > 0`: the norm before it.
    fn clip_norm(&mut self, clip: f64) -> Option<f64> {
        (clip > 0.0).then(|| clip_grad_norm(&mut self.grads, clip))
    }

    /// One optimizer update, with learning rate `lr` when given.
    fn update(&mut self, lr: Option<f64>) {
        if let Some(lr) = lr {
            self.opt.lr = lr;
        }
        self.opt.update(&mut self.params, &self.grads);
    }
}

/// The CPU engine: this crate's model, optimizer and clipping, in float32.
pub struct CpuEngine {
    core: Core,
    carry: Carry,
    ws: ModelWorkspace<f32>,
    val_ws: Option<ModelWorkspace<f32>>,
}

impl CpuEngine {
    pub fn new(p: EngineParts) -> CpuEngine {
        CpuEngine {
            ws: p.model.workspace(p.t, p.b),
            val_ws: (p.val_b > 0).then(|| p.model.workspace(p.t, p.val_b)),
            core: Core::new(p.model, p.params, p.opt),
            carry: p.carry,
        }
    }
}

impl Engine for CpuEngine {
    fn device(&self) -> String {
        "cpu".into()
    }

    fn reset_carry(&mut self) {
        self.carry.reset();
    }

    fn forward_loss(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        rng: &mut Rng,
    ) -> Result<f64, EngineError> {
        let n = inputs.len();
        let (h0, c0) = self.carry.as_init();
        let (m, p) = (&self.core.model, &self.core.params);
        m.forward(
            &mut self.ws,
            p,
            Input::Tokens(inputs),
            h0,
            c0,
            None,
            Some(rng),
        );
        let (sum, count) = m.loss(&mut self.ws, targets, 1.0 / n as f32);
        Ok(sum / count as f64)
    }

    fn backward_clip(
        &mut self,
        inputs: &[u32],
        clip_value: f64,
        clip_norm: f64,
    ) -> Result<f64, EngineError> {
        self.core
            .backward(&mut self.ws, Input::Tokens(inputs), None);
        // A data-parallel run would all-reduce (average) the gradients across workers here.
        let grads = &mut self.core.grads;
        if clip_value > 0.0 {
            clip_grad_value(grads, clip_value);
        }
        Ok(self
            .core
            .clip_norm(clip_norm)
            .unwrap_or_else(|| grad_norm(&self.core.grads)))
    }

    fn update(&mut self, lr: f64) -> Result<(), EngineError> {
        self.core.update(Some(lr));
        self.carry.take_from(&self.ws);
        Ok(())
    }

    fn stream_loss(&mut self, ids: &[u32]) -> Result<(f64, usize), EngineError> {
        Ok(match self.val_ws.as_mut() {
            Some(ws) => stream_loss(&self.core.model, &self.core.params, ids, ws),
            None => (0.0, 0),
        })
    }

    fn params(&self) -> Result<Cow<'_, [f32]>, EngineError> {
        Ok(Cow::Borrowed(&self.core.params))
    }

    fn set_params(&mut self, params: &[f32]) -> Result<(), EngineError> {
        check_len(params.len(), self.core.params.len())?;
        self.core.params.copy_from_slice(params);
        Ok(())
    }

    fn optimizer(&self) -> Result<Cow<'_, Optimizer<f32>>, EngineError> {
        Ok(Cow::Borrowed(&self.core.opt))
    }

    fn carry(&self) -> Result<Cow<'_, Carry>, EngineError> {
        Ok(Cow::Borrowed(&self.carry))
    }
}

/// The error of [`Engine::set_params`] when `given` parameters do not fit a model of `want`.
pub fn check_len(given: usize, want: usize) -> Result<(), EngineError> {
    if given == want {
        Ok(())
    } else {
        Err(format!("{given} parameters given, the model has {want}"))
    }
}

/// The targets of one batch for [`BatchEngine::forward_loss`].
#[derive(Clone, Copy)]
pub enum LossTargets<'a> {
    /// One class per decoded row (softmax cross-entropy).
    Classes(&'a [u32]),
    /// (R, V) values, NaN for padding (squared error).
    Values(&'a [f32]),
}

/// Everything a [`BatchEngine`] starts from: the model, its parameters, the optimizer, and the
/// one batch shape (T, B) it runs.
pub struct BatchEngineParts {
    pub model: Model,
    pub params: Vec<f32>,
    pub opt: Optimizer<f32>,
    pub t: usize,
    pub b: usize,
}

/// The math of a run on independent fixed-shape batches (the long-memory tasks), behind one trait
/// as [`Engine`] is for the character model: forward and loss, backward and clipping, the
/// optimizer step with a one-step undo (a diverged run keeps the parameters before its bad step).
pub trait BatchEngine {
    /// Where it computes.
    fn device(&self) -> String;

    /// Forward (inference mode: no dropout) of one (T, B) batch from a zero state, then the
    /// head's loss against `targets` with `scale * dL/dlogits` kept for backward; returns the
    /// summed loss and count (as `Model::loss` / `Model::loss_mse`).
    fn forward_loss(
        &mut self,
        input: Input<f32>,
        targets: LossTargets,
        scale: f32,
    ) -> Result<(f64, usize), EngineError>;

    /// Backward of the last forward (same input) into zeroed gradients, then global-norm clipping
    /// when `clip > 0`; returns the norm before clipping (`None` without clipping: not computed).
    fn backward_clip(&mut self, input: Input<f32>, clip: f64) -> Result<Option<f64>, EngineError>;

    /// Keeps a copy of the parameters, then one optimizer update.
    fn update(&mut self) -> Result<(), EngineError>;

    /// Puts back the parameters kept by the last [`BatchEngine::update`].
    fn undo_update(&mut self) -> Result<(), EngineError>;

    /// The parameters (a host copy for device engines).
    fn params(&self) -> Result<Cow<'_, [f32]>, EngineError>;
}

/// The CPU's [`BatchEngine`].
pub struct CpuBatchEngine {
    core: Core,
    backup: Vec<f32>,
    ws: ModelWorkspace<f32>,
}

impl CpuBatchEngine {
    pub fn new(p: BatchEngineParts) -> CpuBatchEngine {
        CpuBatchEngine {
            ws: p.model.workspace(p.t, p.b),
            backup: p.params.clone(),
            core: Core::new(p.model, p.params, p.opt),
        }
    }
}

impl BatchEngine for CpuBatchEngine {
    fn device(&self) -> String {
        "cpu".into()
    }

    fn forward_loss(
        &mut self,
        input: Input<f32>,
        targets: LossTargets,
        scale: f32,
    ) -> Result<(f64, usize), EngineError> {
        let m = &self.core.model;
        m.forward(
            &mut self.ws,
            &self.core.params,
            input,
            None,
            None,
            None,
            None,
        );
        Ok(match targets {
            LossTargets::Values(y) => m.loss_mse(&mut self.ws, y, scale),
            LossTargets::Classes(c) => m.loss(&mut self.ws, c, scale),
        })
    }

    fn backward_clip(&mut self, input: Input<f32>, clip: f64) -> Result<Option<f64>, EngineError> {
        self.core.backward(&mut self.ws, input, None);
        Ok(self.core.clip_norm(clip))
    }

    fn update(&mut self) -> Result<(), EngineError> {
        self.backup.copy_from_slice(&self.core.params);
        self.core.update(None);
        Ok(())
    }

    fn undo_update(&mut self) -> Result<(), EngineError> {
        self.core.params.copy_from_slice(&self.backup);
        Ok(())
    }

    fn params(&self) -> Result<Cow<'_, [f32]>, EngineError> {
        Ok(Cow::Borrowed(&self.core.params))
    }
}

/// Everything a [`ModelEngine`] starts from.
pub struct ModelEngineParts {
    pub model: Model,
    pub params: Vec<f32>,
    pub opt: Optimizer<f32>,
}

/// A model's forward and backward on batches of any shape with the loss computed by the caller
/// from the logits (the spoken-digit classifier pools them over time): forward returns the
/// logits, backward takes their gradient. One workspace per batch shape is kept.
pub trait ModelEngine {
    /// Where it computes.
    fn device(&self) -> String;

    /// Forward of a (T, B) batch with per-sequence `lengths`, in training mode (dropout) when
    /// `rng` is given; returns the logits (R, V) (a host copy for device engines).
    fn forward(
        &mut self,
        input: Input<f32>,
        t: usize,
        b: usize,
        lengths: Option<&[usize]>,
        rng: Option<&mut Rng>,
    ) -> Result<Cow<'_, [f32]>, EngineError>;

    /// Backward of the last forward (same input and lengths) from `dlogits` (R, V) into zeroed
    /// gradients, then global-norm clipping when `clip > 0` (the norm before it is returned).
    fn backward(
        &mut self,
        input: Input<f32>,
        lengths: Option<&[usize]>,
        dlogits: &[f32],
        clip: f64,
    ) -> Result<Option<f64>, EngineError>;

    /// One optimizer update with learning rate `lr`.
    fn update(&mut self, lr: f64) -> Result<(), EngineError>;

    /// The parameters (a host copy for device engines).
    fn params(&self) -> Result<Cow<'_, [f32]>, EngineError>;

    /// The optimizer with its state (a host copy for device engines).
    fn optimizer(&self) -> Result<Cow<'_, Optimizer<f32>>, EngineError>;
}

/// The CPU's [`ModelEngine`].
pub struct CpuModelEngine {
    core: Core,
    // the workspace of the last batch shape
    ws: Option<ModelWorkspace<f32>>,
}

impl CpuModelEngine {
    pub fn new(p: ModelEngineParts) -> CpuModelEngine {
        CpuModelEngine {
            core: Core::new(p.model, p.params, p.opt),
            ws: None,
        }
    }
}

impl ModelEngine for CpuModelEngine {
    fn device(&self) -> String {
        "cpu".into()
    }

    fn forward(
        &mut self,
        input: Input<f32>,
        t: usize,
        b: usize,
        lengths: Option<&[usize]>,
        rng: Option<&mut Rng>,
    ) -> Result<Cow<'_, [f32]>, EngineError> {
        let m = &self.core.model;
        if self.ws.as_ref().is_none_or(|w| w.t != t || w.b != b) {
            self.ws = Some(m.workspace(t, b));
        }
        let ws = self.ws.as_mut().expect("just set");
        m.forward(ws, &self.core.params, input, None, None, lengths, rng);
        Ok(Cow::Borrowed(&ws.logits))
    }

    fn backward(
        &mut self,
        input: Input<f32>,
        lengths: Option<&[usize]>,
        dlogits: &[f32],
        clip: f64,
    ) -> Result<Option<f64>, EngineError> {
        let ws = self
            .ws
            .as_mut()
            .ok_or_else(|| "backward needs a forward first".to_string())?;
        if dlogits.len() != ws.dlogits.len() {
            return Err(format!(
                "{} logit gradients for {} logits",
                dlogits.len(),
                ws.dlogits.len()
            ));
        }
        ws.dlogits.copy_from_slice(dlogits);
        self.core.backward(ws, input, lengths);
        Ok(self.core.clip_norm(clip))
    }

    fn update(&mut self, lr: f64) -> Result<(), EngineError> {
        self.core.update(Some(lr));
        Ok(())
    }

    fn params(&self) -> Result<Cow<'_, [f32]>, EngineError> {
        Ok(Cow::Borrowed(&self.core.params))
    }

    fn optimizer(&self) -> Result<Cow<'_, Optimizer<f32>>, EngineError> {
        Ok(Cow::Borrowed(&self.core.opt))
    }
}
