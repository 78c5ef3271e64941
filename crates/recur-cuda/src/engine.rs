//! The GPU's `recur::engine::Engine` (the training loop's device math), and a character model's
//! loss on a text and its sampling on the GPU: the twins of `recur::engine::CpuEngine`,
//! `recur::stream::stream_loss` and `recur::apps::charlm::sample::Generator`.
//!
//! Parameters, gradients, optimizer moments and the carried hidden state stay on the device;
//! the host sees them only when the loop asks for a checkpoint or an evaluation's sample (one
//! copy each). Per step the host uploads the batch's token ids and targets and reads back two
//! numbers (the loss and the gradient norm, which the loop checks for NaN).
//!
//! What it is not: the loop itself (recur::apps::charlm::train), or a multi-GPU engine.

use crate::device::{Gpu, GpuError};
use crate::model::{GpuModel, GpuModelWorkspace};
use crate::optim::{clip_grad_norm, clip_grad_value, grad_norm, GpuOptimizer, NormScratch};
use crate::DevBuf;
use recur::apps::charlm::sample::{draw, SampleOptions};
use recur::engine::{
    check_len, BatchEngine, BatchEngineParts, Engine, EngineError, EngineParts, LossTargets,
    ModelEngine, ModelEngineParts,
};
use recur::model::{Input, Model};
use recur::optim::Optimizer;
use recur::rng::Rng;
use recur::stream::{for_stream_chunks, Carry};
use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;

/// A carried hidden state on the device: h (L*D, B, P) and c (L*D, B, H; LSTM only).
pub struct GpuCarry {
    pub h: DevBuf,
    pub c: DevBuf,
    nh: usize,
    nc: usize,
}

impl GpuCarry {
    /// Uploads a host state.
    pub fn from_host(gpu: &Gpu, carry: &Carry) -> Result<GpuCarry, GpuError> {
        Ok(GpuCarry {
            h: gpu.upload(&carry.h)?,
            c: gpu.upload(&carry.c)?,
            nh: carry.h.len(),
            nc: carry.c.len(),
        })
    }

    /// The zero state of `model` for `b` sequences.
    pub fn zeros(gpu: &Gpu, model: &Model, b: usize) -> Result<GpuCarry, GpuError> {
        GpuCarry::from_host(gpu, &Carry::zeros(model, b))
    }

    /// Zeroes it.
    pub fn reset(&mut self, gpu: &Gpu) -> Result<(), GpuError> {
        gpu.zero(gpu.ptr(&self.h), self.nh)?;
        gpu.zero(gpu.ptr(&self.c), self.nc)
    }

    /// `h0` and `c0` arguments for [`GpuModel::forward`].
    pub fn as_init(&self) -> (Option<&DevBuf>, Option<&DevBuf>) {
        (Some(&self.h), (self.nc > 0).then_some(&self.c))
    }

    /// Takes the final states of the last forward on `ws`.
    pub fn take_from(&mut self, gpu: &Gpu, ws: &GpuModelWorkspace) -> Result<(), GpuError> {
        gpu.copy(gpu.ptr(&self.h), gpu.ptr(&ws.stack.h_n), self.nh)?;
        gpu.copy(gpu.ptr(&self.c), gpu.ptr(&ws.stack.c_n), self.nc)
    }

    /// A host copy.
    pub fn to_host(&self, gpu: &Gpu) -> Result<Carry, GpuError> {
        Ok(Carry {
            h: gpu.download(&self.h, self.nh)?,
            c: gpu.download(&self.c, self.nc)?,
        })
    }
}

/// A character model's loss on a text on the GPU, as `recur::stream::stream_loss`: `ids` read as
/// `ws.b` parallel streams, each from a zero state, in chunks of at most `ws.t` steps with the
/// state carried across chunks; the summed cross-entropy (nats) and the count. The last, shorter
/// chunk gets its own workspace (kept in `tail` for the next call).
pub fn stream_loss(
    gpu: &Gpu,
    gm: &GpuModel,
    params: &DevBuf,
    ids: &[u32],
    ws: &mut GpuModelWorkspace,
    tail: &mut Option<GpuModelWorkspace>,
) -> Result<(f64, usize), GpuError> {
    let (t, b) = (ws.t, ws.b);
    let mut carry = GpuCarry::zeros(gpu, &gm.model, b)?;
    let (mut total, mut count) = (0.0, 0);
    for_stream_chunks(ids, t, b, |tt, inputs, targets| {
        let w = if tt == t {
            &mut *ws
        } else {
            if tail.as_ref().is_none_or(|w| w.t != tt || w.b != b) {
                *tail = Some(gm.workspace(gpu, tt, b)?);
            }
            tail.as_mut().expect("just set")
        };
        let (h0, c0) = carry.as_init();
        gm.forward(gpu, w, params, Input::Tokens(inputs), h0, c0, None, None)?;
        let (l, n) = gm.loss(gpu, w, targets, 1.0)?;
        total += l;
        count += n;
        carry.take_from(gpu, w)
    })?;
    Ok((total, count))
}

/// A character model run one character at a time on the GPU (B = 1, T = 1), as
/// `recur::apps::charlm::sample::Generator`: the logits come back to the host and are drawn from there by the same
/// code (`recur::apps::charlm::sample::draw`).
pub struct GpuGenerator<'a> {
    gpu: &'a Gpu,
    gm: GpuModel,
    params: DevBuf,
    ws: GpuModelWorkspace,
    carry: GpuCarry,
    logits: Vec<f32>,
    probs: Vec<f32>,
    order: Vec<u32>,
}

impl<'a> GpuGenerator<'a> {
    pub fn new(gpu: &'a Gpu, model: &Model, params: &[f32]) -> Result<Self, GpuError> {
        let gm = GpuModel::new(model);
        let v = model.cfg.output_size;
        Ok(GpuGenerator {
            ws: gm.workspace(gpu, 1, 1)?,
            carry: GpuCarry::zeros(gpu, model, 1)?,
            params: gpu.upload(params)?,
            gm,
            gpu,
            logits: Vec::new(),
            probs: vec![0.0; v],
            order: Vec::with_capacity(v),
        })
    }

    /// Runs one character through the model and brings its next-character logits back.
    pub fn feed(&mut self, id: u32) -> Result<(), GpuError> {
        let (h0, c0) = self.carry.as_init();
        self.gm.forward(
            self.gpu,
            &mut self.ws,
            &self.params,
            Input::Tokens(&[id]),
            h0,
            c0,
            None,
            None,
        )?;
        self.carry.take_from(self.gpu, &self.ws)?;
        self.logits = self
            .gpu
            .download(&self.ws.logits, self.gm.model.cfg.output_size)?;
        Ok(())
    }

    /// Logits (V) after the last [`GpuGenerator::feed`] (empty before).
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Draws the next character after the last [`GpuGenerator::feed`].
    pub fn sample(&mut self, opts: &SampleOptions, rng: &mut Rng) -> u32 {
        assert!(!self.logits.is_empty(), "feed a character first");
        draw(&self.logits, opts, rng, &mut self.probs, &mut self.order)
    }
}

/// What every GPU engine holds: the device, the model, its parameters and their gradients, the
/// optimizer and the norm scratch, all on the device.
struct Core {
    gpu: Gpu,
    gm: GpuModel,
    params: DevBuf,
    grads: DevBuf,
    opt: GpuOptimizer,
    norm: NormScratch,
    n: usize,
}

impl Core {
    /// Uploads a run's parameters and optimizer state, checking their sizes against the model.
    fn new(
        gpu: Gpu,
        model: &Model,
        params: &[f32],
        opt: &Optimizer<f32>,
    ) -> Result<Core, GpuError> {
        let n = model.num_params();
        if params.len() != n || opt.m.len() != n {
            return Err(GpuError::Shape(format!(
                "{} parameters and {} optimizer values for a model of {n}",
                params.len(),
                opt.m.len()
            )));
        }
        Ok(Core {
            gm: GpuModel::new(model),
            params: gpu.upload(params)?,
            grads: gpu.zeros::<f32>(n)?,
            opt: GpuOptimizer::from_host(&gpu, opt)?,
            norm: NormScratch::new(&gpu)?,
            n,
            gpu,
        })
    }

    fn device(&self) -> String {
        format!("cuda ({})", self.gpu.name())
    }

    /// Backward of the forward held in `ws` (its dlogits set) into zeroed gradients.
    fn backward(&mut self, ws: &mut GpuModelWorkspace) -> Result<(), EngineError> {
        let g = &self.gpu;
        g.zero(g.ptr(&self.grads), self.n).map_err(e)?;
        self.gm
            .backward(g, ws, &self.params, &mut self.grads, None, None, None)
            .map_err(e)
    }

    /// Global-norm clipping when `clip > 0`: the norm before it.
    fn clip_norm(&mut self, clip: f64) -> Result<Option<f64>, EngineError> {
        if clip > 0.0 {
            clip_grad_norm(&self.gpu, &self.norm, &mut self.grads, self.n, clip)
                .map(Some)
                .map_err(e)
        } else {
            Ok(None)
        }
    }

    /// One optimizer update, with learning rate `lr` when given.
    fn update(&mut self, lr: Option<f64>) -> Result<(), EngineError> {
        if let Some(lr) = lr {
            self.opt.lr = lr;
        }
        self.opt
            .update(&self.gpu, &mut self.params, &self.grads)
            .map_err(e)
    }

    /// A host copy of the parameters.
    fn params(&self) -> Result<Cow<'_, [f32]>, EngineError> {
        Ok(Cow::Owned(
            self.gpu.download(&self.params, self.n).map_err(e)?,
        ))
    }

    /// A host copy of the optimizer and its state.
    fn optimizer(&self) -> Result<Cow<'_, Optimizer<f32>>, EngineError> {
        Ok(Cow::Owned(self.opt.to_host(&self.gpu).map_err(e)?))
    }
}

fn e(err: GpuError) -> EngineError {
    err.to_string()
}

/// The training loop's engine on the GPU (see the file header).
pub struct GpuEngine {
    core: Core,
    carry: GpuCarry,
    ws: GpuModelWorkspace,
    val_ws: Option<GpuModelWorkspace>,
    val_tail: Option<GpuModelWorkspace>,
}

impl GpuEngine {
    /// Moves a run's state onto `gpu` and sizes the workspaces.
    pub fn new(gpu: Gpu, p: EngineParts) -> Result<GpuEngine, GpuError> {
        let core = Core::new(gpu, &p.model, &p.params, &p.opt)?;
        let (g, gm) = (&core.gpu, &core.gm);
        Ok(GpuEngine {
            carry: GpuCarry::from_host(g, &p.carry)?,
            ws: gm.workspace(g, p.t, p.b)?,
            val_ws: if p.val_b > 0 {
                Some(gm.workspace(g, p.t, p.val_b)?)
            } else {
                None
            },
            val_tail: None,
            core,
        })
    }

    /// The device.
    pub fn gpu(&self) -> &Gpu {
        &self.core.gpu
    }
}

impl Engine for GpuEngine {
    fn device(&self) -> String {
        self.core.device()
    }

    fn reset_carry(&mut self) {
        // a failure here shows up at the next launch of the step, which reports it
        let _ = self.carry.reset(&self.core.gpu);
    }

    fn forward_loss(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        rng: &mut Rng,
    ) -> Result<f64, EngineError> {
        let n = inputs.len();
        let (h0, c0) = self.carry.as_init();
        let c = &self.core;
        let tokens = Input::Tokens(inputs);
        c.gm.forward(
            &c.gpu,
            &mut self.ws,
            &c.params,
            tokens,
            h0,
            c0,
            None,
            Some(rng),
        )
        .map_err(e)?;
        let (sum, count) =
            c.gm.loss(&c.gpu, &mut self.ws, targets, 1.0 / n as f32)
                .map_err(e)?;
        Ok(sum / count as f64)
    }

    fn backward_clip(
        &mut self,
        _inputs: &[u32],
        clip_value: f64,
        clip_norm: f64,
    ) -> Result<f64, EngineError> {
        self.core.backward(&mut self.ws)?;
        let c = &mut self.core;
        if clip_value > 0.0 {
            clip_grad_value(&c.gpu, &mut c.grads, c.n, clip_value).map_err(e)?;
        }
        match c.clip_norm(clip_norm)? {
            Some(norm) => Ok(norm),
            None => grad_norm(&c.gpu, &c.norm, &c.grads, c.n).map_err(e),
        }
    }

    fn update(&mut self, lr: f64) -> Result<(), EngineError> {
        self.core.update(Some(lr))?;
        self.carry.take_from(&self.core.gpu, &self.ws).map_err(e)
    }

    fn stream_loss(&mut self, ids: &[u32]) -> Result<(f64, usize), EngineError> {
        let c = &self.core;
        match self.val_ws.as_mut() {
            Some(ws) => {
                stream_loss(&c.gpu, &c.gm, &c.params, ids, ws, &mut self.val_tail).map_err(e)
            }
            None => Ok((0.0, 0)),
        }
    }

    fn params(&self) -> Result<Cow<'_, [f32]>, EngineError> {
        self.core.params()
    }

    fn set_params(&mut self, params: &[f32]) -> Result<(), EngineError> {
        check_len(params.len(), self.core.n)?;
        self.core
            .gpu
            .write(&mut self.core.params, params)
            .map_err(e)
    }

    fn optimizer(&self) -> Result<Cow<'_, Optimizer<f32>>, EngineError> {
        self.core.optimizer()
    }

    fn carry(&self) -> Result<Cow<'_, Carry>, EngineError> {
        Ok(Cow::Owned(self.carry.to_host(&self.core.gpu).map_err(e)?))
    }
}

/// The long-memory tasks' engine on the GPU (`recur::engine::BatchEngine`): fixed-shape batches
/// from a zero state, the head's loss, clipping and the optimizer on the device, with a device
/// copy of the parameters for the one-step undo.
pub struct GpuBatchEngine {
    core: Core,
    backup: DevBuf,
    ws: GpuModelWorkspace,
}

impl GpuBatchEngine {
    pub fn new(gpu: Gpu, p: BatchEngineParts) -> Result<GpuBatchEngine, GpuError> {
        let core = Core::new(gpu, &p.model, &p.params, &p.opt)?;
        Ok(GpuBatchEngine {
            backup: core.gpu.upload(&p.params)?,
            ws: core.gm.workspace(&core.gpu, p.t, p.b)?,
            core,
        })
    }
}

impl BatchEngine for GpuBatchEngine {
    fn device(&self) -> String {
        self.core.device()
    }

    fn forward_loss(
        &mut self,
        input: Input<f32>,
        targets: LossTargets,
        scale: f32,
    ) -> Result<(f64, usize), EngineError> {
        let (g, gm) = (&self.core.gpu, &self.core.gm);
        gm.forward(
            g,
            &mut self.ws,
            &self.core.params,
            input,
            None,
            None,
            None,
            None,
        )
        .map_err(e)?;
        match targets {
            LossTargets::Values(y) => gm.loss_mse(g, &mut self.ws, y, scale),
            LossTargets::Classes(c) => gm.loss(g, &mut self.ws, c, scale),
        }
        .map_err(e)
    }

    fn backward_clip(&mut self, _input: Input<f32>, clip: f64) -> Result<Option<f64>, EngineError> {
        self.core.backward(&mut self.ws)?;
        self.core.clip_norm(clip)
    }

    fn update(&mut self) -> Result<(), EngineError> {
        let (g, n) = (&self.core.gpu, self.core.n);
        g.copy(g.ptr(&self.backup), g.ptr(&self.core.params), n)
            .map_err(e)?;
        self.core.update(None)
    }

    fn undo_update(&mut self) -> Result<(), EngineError> {
        let (g, n) = (&self.core.gpu, self.core.n);
        g.copy(g.ptr(&self.core.params), g.ptr(&self.backup), n)
            .map_err(e)
    }

    fn params(&self) -> Result<Cow<'_, [f32]>, EngineError> {
        self.core.params()
    }
}

/// `recur::engine::ModelEngine` on the GPU: batches of any shape (one workspace per shape is
/// kept), the logits back to the host after forward, their gradient to the device for backward.
pub struct GpuModelEngine {
    core: Core,
    // workspaces by (T, B), and the shape of the last forward
    ws: HashMap<(usize, usize), GpuModelWorkspace>,
    last: Option<(usize, usize)>,
    logits: Vec<f32>,
}

impl GpuModelEngine {
    pub fn new(gpu: Gpu, p: ModelEngineParts) -> Result<GpuModelEngine, GpuError> {
        Ok(GpuModelEngine {
            core: Core::new(gpu, &p.model, &p.params, &p.opt)?,
            ws: HashMap::new(),
            last: None,
            logits: Vec::new(),
        })
    }
}

impl ModelEngine for GpuModelEngine {
    fn device(&self) -> String {
        self.core.device()
    }

    fn forward(
        &mut self,
        input: Input<f32>,
        t: usize,
        b: usize,
        lengths: Option<&[usize]>,
        rng: Option<&mut Rng>,
    ) -> Result<Cow<'_, [f32]>, EngineError> {
        let (g, gm) = (&self.core.gpu, &self.core.gm);
        let ws = match self.ws.entry((t, b)) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => v.insert(gm.workspace(g, t, b).map_err(e)?),
        };
        self.last = Some((t, b));
        gm.forward(g, ws, &self.core.params, input, None, None, lengths, rng)
            .map_err(e)?;
        let k = ws.rows() * gm.model.cfg.output_size;
        self.logits = g.download(&ws.logits, k).map_err(e)?;
        Ok(Cow::Borrowed(&self.logits))
    }

    fn backward(
        &mut self,
        _input: Input<f32>,
        _lengths: Option<&[usize]>,
        dlogits: &[f32],
        clip: f64,
    ) -> Result<Option<f64>, EngineError> {
        let ws = self
            .last
            .and_then(|k| self.ws.get_mut(&k))
            .ok_or_else(|| "backward needs a forward first".to_string())?;
        let k = ws.rows() * self.core.gm.model.cfg.output_size;
        if dlogits.len() != k {
            return Err(format!("{} logit gradients for {k} logits", dlogits.len()));
        }
        self.core.gpu.write(&mut ws.dlogits, dlogits).map_err(e)?;
        self.core.backward(ws)?;
        self.core.clip_norm(clip)
    }

    fn update(&mut self, lr: f64) -> Result<(), EngineError> {
        self.core.update(Some(lr))
    }

    fn params(&self) -> Result<Cow<'_, [f32]>, EngineError> {
        self.core.params()
    }

    fn optimizer(&self) -> Result<Cow<'_, Optimizer<f32>>, EngineError> {
        self.core.optimizer()
    }
}
