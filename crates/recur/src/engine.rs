//! The math of a character-model training run behind one trait, so that the training loop
//! ([`crate::train::Trainer`]: budgets, evaluation, checkpoints, resume, the stop flag, the NaN
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

use crate::lm::{stream_loss, Carry};
use crate::model::{Input, Model, ModelWorkspace};
use crate::optim::{clip_grad_norm, clip_grad_value, grad_norm, Optimizer};
use crate::rng::Rng;
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
    /// streams from a zero state (`crate::lm::stream_loss`); (0, 0) without evaluation.
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

/// The CPU engine: this crate's model, optimizer and clipping, in float32.
pub struct CpuEngine {
    model: Model,
    params: Vec<f32>,
    grads: Vec<f32>,
    opt: Optimizer<f32>,
    carry: Carry,
    ws: ModelWorkspace<f32>,
    val_ws: Option<ModelWorkspace<f32>>,
}

impl CpuEngine {
    pub fn new(p: EngineParts) -> CpuEngine {
        let ws = p.model.workspace(p.t, p.b);
        let val_ws = (p.val_b > 0).then(|| p.model.workspace(p.t, p.val_b));
        CpuEngine {
            grads: vec![0.0; p.params.len()],
            ws,
            val_ws,
            model: p.model,
            params: p.params,
            opt: p.opt,
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
        self.model.forward(
            &mut self.ws,
            &self.params,
            Input::Tokens(inputs),
            h0,
            c0,
            None,
            Some(rng),
        );
        let (sum, count) = self.model.loss(&mut self.ws, targets, 1.0 / n as f32);
        Ok(sum / count as f64)
    }

    fn backward_clip(
        &mut self,
        inputs: &[u32],
        clip_value: f64,
        clip_norm: f64,
    ) -> Result<f64, EngineError> {
        self.grads.fill(0.0);
        self.model.backward(
            &mut self.ws,
            &self.params,
            &mut self.grads,
            Input::Tokens(inputs),
            None,
            None,
            None,
            None,
        );
        // A data-parallel run would all-reduce (average) `self.grads` across workers here.
        if clip_value > 0.0 {
            clip_grad_value(&mut self.grads, clip_value);
        }
        Ok(if clip_norm > 0.0 {
            clip_grad_norm(&mut self.grads, clip_norm)
        } else {
            grad_norm(&self.grads)
        })
    }

    fn update(&mut self, lr: f64) -> Result<(), EngineError> {
        self.opt.lr = lr;
        self.opt.update(&mut self.params, &self.grads);
        self.carry.take_from(&self.ws);
        Ok(())
    }

    fn stream_loss(&mut self, ids: &[u32]) -> Result<(f64, usize), EngineError> {
        Ok(match self.val_ws.as_mut() {
            Some(ws) => stream_loss(&self.model, &self.params, ids, ws),
            None => (0.0, 0),
        })
    }

    fn params(&self) -> Result<Cow<'_, [f32]>, EngineError> {
        Ok(Cow::Borrowed(&self.params))
    }

    fn set_params(&mut self, params: &[f32]) -> Result<(), EngineError> {
        if params.len() != self.params.len() {
            return Err(format!(
                "{} parameters given, the model has {}",
                params.len(),
                self.params.len()
            ));
        }
        self.params.copy_from_slice(params);
        Ok(())
    }

    fn optimizer(&self) -> Result<Cow<'_, Optimizer<f32>>, EngineError> {
        Ok(Cow::Borrowed(&self.opt))
    }

    fn carry(&self) -> Result<Cow<'_, Carry>, EngineError> {
        Ok(Cow::Borrowed(&self.carry))
    }
}
