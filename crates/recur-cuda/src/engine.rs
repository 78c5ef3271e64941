//! The GPU's `recur::engine::Engine` (the training loop's device math), and a character model's
//! loss on a text and its sampling on the GPU: the twins of `recur::engine::CpuEngine`,
//! `recur::lm::stream_loss` and `recur::lm::Generator`.
//!
//! Parameters, gradients, optimizer moments and the carried hidden state stay on the device;
//! the host sees them only when the loop asks for a checkpoint or an evaluation's sample (one
//! copy each). Per step the host uploads the batch's token ids and targets and reads back two
//! numbers (the loss and the gradient norm, which the loop checks for NaN).
//!
//! What it is not: the loop itself (recur::train), or a multi-GPU engine.

use crate::device::{Gpu, GpuError};
use crate::model::{GpuModel, GpuModelWorkspace};
use crate::optim::{clip_grad_norm, clip_grad_value, grad_norm, GpuOptimizer, NormScratch};
use crate::DevBuf;
use recur::engine::{
    BatchEngine, BatchEngineParts, Engine, EngineError, EngineParts, LossTargets, ModelEngine,
    ModelEngineParts,
};
use recur::lm::{draw, for_stream_chunks, Carry, SampleOptions};
use recur::model::{Input, Model};
use recur::optim::Optimizer;
use recur::rng::Rng;
use std::borrow::Cow;

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

/// A character model's loss on a text on the GPU, as `recur::lm::stream_loss`: `ids` read as
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
/// `recur::lm::Generator`: the logits come back to the host and are drawn from there by the same
/// code (`recur::lm::draw`).
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

/// The training loop's engine on the GPU (see the file header).
pub struct GpuEngine {
    gpu: Gpu,
    gm: GpuModel,
    params: DevBuf,
    grads: DevBuf,
    opt: GpuOptimizer,
    norm: NormScratch,
    carry: GpuCarry,
    ws: GpuModelWorkspace,
    val_ws: Option<GpuModelWorkspace>,
    val_tail: Option<GpuModelWorkspace>,
    n: usize,
}

impl GpuEngine {
    /// Moves a run's state onto `gpu` and sizes the workspaces.
    pub fn new(gpu: Gpu, p: EngineParts) -> Result<GpuEngine, GpuError> {
        let gm = GpuModel::new(&p.model);
        let n = p.model.num_params();
        if p.params.len() != n || p.opt.m.len() != n {
            return Err(GpuError::Shape(format!(
                "{} parameters and {} optimizer values for a model of {n}",
                p.params.len(),
                p.opt.m.len()
            )));
        }
        Ok(GpuEngine {
            params: gpu.upload(&p.params)?,
            grads: gpu.zeros::<f32>(n)?,
            opt: GpuOptimizer::from_host(&gpu, &p.opt)?,
            norm: NormScratch::new(&gpu)?,
            carry: GpuCarry::from_host(&gpu, &p.carry)?,
            ws: gm.workspace(&gpu, p.t, p.b)?,
            val_ws: if p.val_b > 0 {
                Some(gm.workspace(&gpu, p.t, p.val_b)?)
            } else {
                None
            },
            val_tail: None,
            n,
            gm,
            gpu,
        })
    }

    /// The device.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
}

fn e(err: GpuError) -> EngineError {
    err.to_string()
}

impl Engine for GpuEngine {
    fn device(&self) -> String {
        format!("cuda ({})", self.gpu.name())
    }

    fn reset_carry(&mut self) {
        // a failure here shows up at the next launch of the step, which reports it
        let _ = self.carry.reset(&self.gpu);
    }

    fn forward_loss(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        rng: &mut Rng,
    ) -> Result<f64, EngineError> {
        let n = inputs.len();
        let (h0, c0) = self.carry.as_init();
        self.gm
            .forward(
                &self.gpu,
                &mut self.ws,
                &self.params,
                Input::Tokens(inputs),
                h0,
                c0,
                None,
                Some(rng),
            )
            .map_err(e)?;
        let (sum, count) = self
            .gm
            .loss(&self.gpu, &mut self.ws, targets, 1.0 / n as f32)
            .map_err(e)?;
        Ok(sum / count as f64)
    }

    fn backward_clip(
        &mut self,
        _inputs: &[u32],
        clip_value: f64,
        clip_norm: f64,
    ) -> Result<f64, EngineError> {
        let g = &self.gpu;
        g.zero(g.ptr(&self.grads), self.n).map_err(e)?;
        self.gm
            .backward(
                g,
                &mut self.ws,
                &self.params,
                &mut self.grads,
                None,
                None,
                None,
            )
            .map_err(e)?;
        if clip_value > 0.0 {
            clip_grad_value(g, &mut self.grads, self.n, clip_value).map_err(e)?;
        }
        if clip_norm > 0.0 {
            clip_grad_norm(g, &self.norm, &mut self.grads, self.n, clip_norm).map_err(e)
        } else {
            grad_norm(g, &self.norm, &self.grads, self.n).map_err(e)
        }
    }

    fn update(&mut self, lr: f64) -> Result<(), EngineError> {
        self.opt.lr = lr;
        self.opt
            .update(&self.gpu, &mut self.params, &self.grads)
            .map_err(e)?;
        self.carry.take_from(&self.gpu, &self.ws).map_err(e)
    }

    fn stream_loss(&mut self, ids: &[u32]) -> Result<(f64, usize), EngineError> {
        match self.val_ws.as_mut() {
            Some(ws) => stream_loss(
                &self.gpu,
                &self.gm,
                &self.params,
                ids,
                ws,
                &mut self.val_tail,
            )
            .map_err(e),
            None => Ok((0.0, 0)),
        }
    }

    fn params(&self) -> Result<Cow<'_, [f32]>, EngineError> {
        Ok(Cow::Owned(
            self.gpu.download(&self.params, self.n).map_err(e)?,
        ))
    }

    fn set_params(&mut self, params: &[f32]) -> Result<(), EngineError> {
        if params.len() != self.n {
            return Err(format!(
                "{} parameters given, the model has {}",
                params.len(),
                self.n
            ));
        }
        self.gpu.write(&mut self.params, params).map_err(e)
    }

    fn optimizer(&self) -> Result<Cow<'_, Optimizer<f32>>, EngineError> {
        Ok(Cow::Owned(self.opt.to_host(&self.gpu).map_err(e)?))
    }

    fn carry(&self) -> Result<Cow<'_, Carry>, EngineError> {
        Ok(Cow::Owned(self.carry.to_host(&self.gpu).map_err(e)?))
    }
}

/// The long-memory tasks' engine on the GPU (`recur::engine::BatchEngine`): fixed-shape batches
/// from a zero state, the head's loss, clipping and the optimizer on the device, with a device
/// copy of the parameters for the one-step undo.
pub struct GpuBatchEngine {
    gpu: Gpu,
    gm: GpuModel,
    params: DevBuf,
    backup: DevBuf,
    grads: DevBuf,
    opt: GpuOptimizer,
    norm: NormScratch,
    ws: GpuModelWorkspace,
    n: usize,
}

impl GpuBatchEngine {
    pub fn new(gpu: Gpu, p: BatchEngineParts) -> Result<GpuBatchEngine, GpuError> {
        let gm = GpuModel::new(&p.model);
        let n = p.model.num_params();
        if p.params.len() != n || p.opt.m.len() != n {
            return Err(GpuError::Shape(format!(
                "{} parameters and {} optimizer values for a model of {n}",
                p.params.len(),
                p.opt.m.len()
            )));
        }
        Ok(GpuBatchEngine {
            params: gpu.upload(&p.params)?,
            backup: gpu.upload(&p.params)?,
            grads: gpu.zeros::<f32>(n)?,
            opt: GpuOptimizer::from_host(&gpu, &p.opt)?,
            norm: NormScratch::new(&gpu)?,
            ws: gm.workspace(&gpu, p.t, p.b)?,
            n,
            gm,
            gpu,
        })
    }
}

impl BatchEngine for GpuBatchEngine {
    fn device(&self) -> String {
        format!("cuda ({})", self.gpu.name())
    }

    fn forward_loss(
        &mut self,
        input: Input<f32>,
        targets: LossTargets,
        scale: f32,
    ) -> Result<(f64, usize), EngineError> {
        let g = &self.gpu;
        self.gm
            .forward(g, &mut self.ws, &self.params, input, None, None, None, None)
            .map_err(e)?;
        match targets {
            LossTargets::Values(y) => self.gm.loss_mse(g, &mut self.ws, y, scale),
            LossTargets::Classes(c) => self.gm.loss(g, &mut self.ws, c, scale),
        }
        .map_err(e)
    }

    fn backward_clip(&mut self, _input: Input<f32>, clip: f64) -> Result<Option<f64>, EngineError> {
        let g = &self.gpu;
        g.zero(g.ptr(&self.grads), self.n).map_err(e)?;
        self.gm
            .backward(
                g,
                &mut self.ws,
                &self.params,
                &mut self.grads,
                None,
                None,
                None,
            )
            .map_err(e)?;
        if clip > 0.0 {
            clip_grad_norm(g, &self.norm, &mut self.grads, self.n, clip)
                .map(Some)
                .map_err(e)
        } else {
            Ok(None)
        }
    }

    fn update(&mut self) -> Result<(), EngineError> {
        let g = &self.gpu;
        g.copy(g.ptr(&self.backup), g.ptr(&self.params), self.n)
            .map_err(e)?;
        self.opt.update(g, &mut self.params, &self.grads).map_err(e)
    }

    fn undo_update(&mut self) -> Result<(), EngineError> {
        let g = &self.gpu;
        g.copy(g.ptr(&self.params), g.ptr(&self.backup), self.n)
            .map_err(e)
    }

    fn params(&self) -> Result<Cow<'_, [f32]>, EngineError> {
        Ok(Cow::Owned(
            self.gpu.download(&self.params, self.n).map_err(e)?,
        ))
    }
}

/// `recur::engine::ModelEngine` on the GPU: batches of any shape (one workspace per shape is
/// kept), the logits back to the host after forward, their gradient to the device for backward.
pub struct GpuModelEngine {
    gpu: Gpu,
    gm: GpuModel,
    params: DevBuf,
    grads: DevBuf,
    opt: GpuOptimizer,
    norm: NormScratch,
    // workspaces by (T, B), and the shape of the last forward
    ws: std::collections::HashMap<(usize, usize), GpuModelWorkspace>,
    last: Option<(usize, usize)>,
    logits: Vec<f32>,
    n: usize,
}

impl GpuModelEngine {
    pub fn new(gpu: Gpu, p: ModelEngineParts) -> Result<GpuModelEngine, GpuError> {
        let gm = GpuModel::new(&p.model);
        let n = p.model.num_params();
        if p.params.len() != n || p.opt.m.len() != n {
            return Err(GpuError::Shape(format!(
                "{} parameters and {} optimizer values for a model of {n}",
                p.params.len(),
                p.opt.m.len()
            )));
        }
        Ok(GpuModelEngine {
            params: gpu.upload(&p.params)?,
            grads: gpu.zeros::<f32>(n)?,
            opt: GpuOptimizer::from_host(&gpu, &p.opt)?,
            norm: NormScratch::new(&gpu)?,
            ws: std::collections::HashMap::new(),
            last: None,
            logits: Vec::new(),
            n,
            gm,
            gpu,
        })
    }
}

impl ModelEngine for GpuModelEngine {
    fn device(&self) -> String {
        format!("cuda ({})", self.gpu.name())
    }

    fn forward(
        &mut self,
        input: Input<f32>,
        t: usize,
        b: usize,
        lengths: Option<&[usize]>,
        rng: Option<&mut Rng>,
    ) -> Result<Cow<'_, [f32]>, EngineError> {
        let g = &self.gpu;
        if !self.ws.contains_key(&(t, b)) {
            let w = self.gm.workspace(g, t, b).map_err(e)?;
            self.ws.insert((t, b), w);
        }
        let ws = self.ws.get_mut(&(t, b)).expect("just inserted");
        self.last = Some((t, b));
        self.gm
            .forward(g, ws, &self.params, input, None, None, lengths, rng)
            .map_err(e)?;
        let k = ws.rows() * self.gm.model.cfg.output_size;
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
        let g = &self.gpu;
        let ws = self
            .last
            .and_then(|k| self.ws.get_mut(&k))
            .ok_or_else(|| "backward needs a forward first".to_string())?;
        let k = ws.rows() * self.gm.model.cfg.output_size;
        if dlogits.len() != k {
            return Err(format!("{} logit gradients for {k} logits", dlogits.len()));
        }
        g.write(&mut ws.dlogits, dlogits).map_err(e)?;
        g.zero(g.ptr(&self.grads), self.n).map_err(e)?;
        self.gm
            .backward(g, ws, &self.params, &mut self.grads, None, None, None)
            .map_err(e)?;
        if clip > 0.0 {
            clip_grad_norm(g, &self.norm, &mut self.grads, self.n, clip)
                .map(Some)
                .map_err(e)
        } else {
            Ok(None)
        }
    }

    fn update(&mut self, lr: f64) -> Result<(), EngineError> {
        self.opt.lr = lr;
        self.opt
            .update(&self.gpu, &mut self.params, &self.grads)
            .map_err(e)
    }

    fn params(&self) -> Result<Cow<'_, [f32]>, EngineError> {
        Ok(Cow::Owned(
            self.gpu.download(&self.params, self.n).map_err(e)?,
        ))
    }

    fn optimizer(&self) -> Result<Cow<'_, Optimizer<f32>>, EngineError> {
        Ok(Cow::Owned(self.opt.to_host(&self.gpu).map_err(e)?))
    }
}
