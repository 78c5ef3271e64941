//! The GPU's side of the device seam: [`Cuda`] (a `recur::engine::Backend`), [`GpuEngine`] (a
//! `recur::engine::Engine`: the training loops' device math), [`GpuStepper`] (one token at a time,
//! for sampling) and a character model's loss on a text: the twins of `recur::engine::Cpu`,
//! `CpuEngine`, `CpuStepper` and `recur::stream::stream_loss`.
//!
//! Parameters, gradients, optimizer moments and the carried hidden state stay on the device;
//! the host sees them only when the loop asks for a checkpoint or an evaluation's sample (one
//! copy each). Per step the host uploads the batch's token ids and targets and reads back two
//! numbers (the loss and the gradient norm, which the loop checks for NaN).
//!
//! What it is not: a training loop, or a multi-GPU engine.

use crate::device::Gpu;
use crate::model::{GpuModel, GpuModelWorkspace};
use crate::optim::{clip_grad_norm, clip_grad_value, grad_norm, GpuOptimizer, NormScratch};
use crate::DevBuf;
use recur::engine::{
    carry_batch, check_batch, check_carry, check_len, state_sizes, Backend, Batch, Engine,
    LossTargets, Start, Stepper,
};
use recur::error::{Error, Result};
use recur::model::{Input, Model};
use recur::optim::Optimizer;
use recur::rng::Rng;
use recur::stream::{for_stream_chunks, Carry};
use recur::Precision;
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
    pub fn from_host(gpu: &Gpu, carry: &Carry) -> Result<GpuCarry> {
        Ok(GpuCarry {
            h: gpu.upload(&carry.h)?,
            c: gpu.upload(&carry.c)?,
            nh: carry.h.len(),
            nc: carry.c.len(),
        })
    }

    /// The zero state of `model` for `b` sequences.
    pub fn zeros(gpu: &Gpu, model: &Model, b: usize) -> Result<GpuCarry> {
        GpuCarry::from_host(gpu, &Carry::zeros(model, b))
    }

    /// Zeroes it.
    pub fn reset(&mut self, gpu: &Gpu) -> Result<()> {
        gpu.zero(gpu.ptr(&self.h), self.nh)?;
        gpu.zero(gpu.ptr(&self.c), self.nc)
    }

    /// `h0` and `c0` arguments for [`GpuModel::forward`].
    pub fn as_init(&self) -> (Option<&DevBuf>, Option<&DevBuf>) {
        (Some(&self.h), (self.nc > 0).then_some(&self.c))
    }

    /// Takes the final states of the last forward on `ws`.
    pub fn take_from(&mut self, gpu: &Gpu, ws: &GpuModelWorkspace) -> Result<()> {
        gpu.copy(gpu.ptr(&self.h), gpu.ptr(&ws.stack.h_n), self.nh)?;
        gpu.copy(gpu.ptr(&self.c), gpu.ptr(&ws.stack.c_n), self.nc)
    }

    /// A host copy.
    pub fn to_host(&self, gpu: &Gpu) -> Result<Carry> {
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
) -> Result<(f64, usize)> {
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

/// The GPU as a `recur::engine::Backend`: each engine and stepper it makes opens its own context
/// handle, stream and kernels on device `ordinal`, so that runs side by side on several threads
/// each have their own.
pub struct Cuda {
    ordinal: usize,
    name: String,
}

impl Cuda {
    /// Opens device `ordinal` once, to report a missing device or library before any work.
    pub fn new(ordinal: usize) -> Result<Cuda> {
        let gpu = Gpu::new(ordinal)?;
        Ok(Cuda {
            ordinal,
            name: gpu.name(),
        })
    }
}

impl Backend for Cuda {
    fn name(&self) -> String {
        format!("cuda ({})", self.name)
    }

    fn engine(
        &self,
        model: Model,
        params: Vec<f32>,
        opt: Option<Optimizer<f32>>,
    ) -> Result<Box<dyn Engine>> {
        let rnn = &model.cfg().rnn;
        if rnn.weight_drop > 0.0
            || rnn.dropout_output > 0.0
            || rnn.dropout_input > 0.0
            || rnn.dropout_mode != recur::stack::DropoutMode::Step
        {
            return Err(Error::invalid(
                "weight drop, input and output dropout and locked dropout are not on the GPU \
                 yet: train this model on the CPU",
            ));
        }
        if model.cfg().tie_weights {
            // the device model reads and accumulates through the same offsets, so it should
            // hold; its test (tests/model_vs_cpu.rs, tied cases) has not run on a GPU yet
            return Err(Error::invalid(
                "training with tied weights is not checked on the GPU yet: train this model on \
                 the CPU",
            ));
        }
        let gpu = Gpu::new(self.ordinal)?;
        Ok(Box::new(GpuEngine::new(gpu, model, &params, opt.as_ref())?))
    }

    fn stepper<'a>(
        &'a self,
        model: &'a Model,
        params: &'a [f32],
        precision: Precision,
    ) -> Result<Box<dyn Stepper + 'a>> {
        if precision != Precision::F32 {
            return Err(Error::invalid(format!(
                "the GPU computes in float32 only (--precision f32, not {precision})"
            )));
        }
        let gpu = Gpu::new(self.ordinal)?;
        Ok(Box::new(GpuStepper::new(gpu, model, params)?))
    }
}

/// A character model run one token at a time on the GPU (B = 1, T = 1): the logits come back to
/// the host after every token.
pub struct GpuStepper {
    gpu: Gpu,
    gm: GpuModel,
    params: DevBuf,
    ws: GpuModelWorkspace,
    carry: GpuCarry,
    logits: Vec<f32>,
}

impl GpuStepper {
    pub fn new(gpu: Gpu, model: &Model, params: &[f32]) -> Result<Self> {
        if params.len() != model.num_params() {
            return Err(Error::invalid(format!(
                "{} parameters for a model of {}",
                params.len(),
                model.num_params()
            )));
        }
        let gm = GpuModel::new(model);
        Ok(GpuStepper {
            ws: gm.workspace(&gpu, 1, 1)?,
            carry: GpuCarry::zeros(&gpu, model, 1)?,
            params: gpu.upload(params)?,
            gm,
            gpu,
            logits: Vec::new(),
        })
    }
}

impl Stepper for GpuStepper {
    fn feed(&mut self, id: u32) -> Result<()> {
        let v = self.gm.model.cfg().input_size;
        if id as usize >= v {
            return Err(Error::invalid(format!(
                "token id {id} is outside the model's vocabulary of {v}"
            )));
        }
        let (h0, c0) = self.carry.as_init();
        let g = &self.gpu;
        self.gm.forward(
            g,
            &mut self.ws,
            &self.params,
            Input::Tokens(&[id]),
            h0,
            c0,
            None,
            None,
        )?;
        self.carry.take_from(g, &self.ws)?;
        self.logits = g.download(&self.ws.logits, self.gm.model.cfg().output_size)?;
        Ok(())
    }

    fn logits(&self) -> &[f32] {
        &self.logits
    }
}

/// How many workspaces (batch shapes) an engine keeps; the oldest goes first.
const KEEP_SHAPES: usize = 4;

/// `recur::engine::Engine` on the GPU: parameters, gradients, optimizer moments, the carried
/// state and one workspace per batch shape (a few kept) on the device.
pub struct GpuEngine {
    gpu: Gpu,
    gm: GpuModel,
    params: DevBuf,
    grads: DevBuf,
    opt: Option<GpuOptimizer>,
    norm: NormScratch,
    n: usize,
    // the copy of the parameters for restore (made at the first snapshot)
    backup: Option<DevBuf>,
    carry: Option<GpuCarry>,
    // workspaces by shape, the newest last; the shape of the last forward
    ws: Vec<GpuModelWorkspace>,
    last: Option<(usize, usize)>,
    // the stream loss's last, shorter chunk
    tail: Option<GpuModelWorkspace>,
    logits: Vec<f32>,
}

impl GpuEngine {
    /// Uploads a model's parameters and optimizer state, checking their sizes against it.
    pub fn new(
        gpu: Gpu,
        model: Model,
        params: &[f32],
        opt: Option<&Optimizer<f32>>,
    ) -> Result<GpuEngine> {
        let n = model.num_params();
        check_len(params.len(), n)?;
        if let Some(o) = opt {
            check_len(o.m.len(), n)?;
        }
        let opt = match opt {
            Some(o) => Some(GpuOptimizer::from_host(&gpu, o)?),
            None => None,
        };
        Ok(GpuEngine {
            gm: GpuModel::new(&model),
            params: gpu.upload(params)?,
            grads: gpu.zeros::<f32>(n)?,
            opt,
            norm: NormScratch::new(&gpu)?,
            n,
            backup: None,
            carry: None,
            ws: Vec::new(),
            last: None,
            tail: None,
            logits: Vec::new(),
            gpu,
        })
    }

    /// The device.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    fn ws_index(&mut self, t: usize, b: usize) -> Result<usize> {
        if let Some(i) = self.ws.iter().position(|w| w.t == t && w.b == b) {
            return Ok(i);
        }
        if self.ws.len() == KEEP_SHAPES {
            self.ws.remove(0);
        }
        self.ws.push(self.gm.workspace(&self.gpu, t, b)?);
        Ok(self.ws.len() - 1)
    }

    fn last_index(&self) -> Result<usize> {
        let none = || Error::invalid("the engine has run no forward yet");
        let (t, b) = self.last.ok_or_else(none)?;
        self.ws
            .iter()
            .position(|w| w.t == t && w.b == b)
            .ok_or_else(none)
    }
}

impl Engine for GpuEngine {
    fn device(&self) -> String {
        format!("cuda ({})", self.gpu.name())
    }

    fn model(&self) -> &Model {
        &self.gm.model
    }

    fn forward(&mut self, batch: &Batch, start: Start, rng: Option<&mut Rng>) -> Result<()> {
        check_batch(&self.gm.model, batch)?;
        if start == Start::Carried {
            if self.carry.is_none() {
                self.carry = Some(GpuCarry::zeros(&self.gpu, &self.gm.model, batch.b)?);
            }
            let c = self.carry.as_ref().expect("just set");
            if c.nh != state_sizes(&self.gm.model, batch.b).0 {
                return Err(Error::invalid(
                    "the carried state is for another number of sequences",
                ));
            }
        }
        let i = self.ws_index(batch.t, batch.b)?;
        let (h0, c0) = match (start, &self.carry) {
            (Start::Carried, Some(c)) => c.as_init(),
            _ => (None, None),
        };
        self.gm.forward(
            &self.gpu,
            &mut self.ws[i],
            &self.params,
            batch.input,
            h0,
            c0,
            batch.lengths,
            rng,
        )?;
        self.last = Some((batch.t, batch.b));
        Ok(())
    }

    fn loss(&mut self, targets: LossTargets, scale: f32) -> Result<(f64, usize)> {
        let i = self.last_index()?;
        let (g, gm, ws) = (&self.gpu, &self.gm, &mut self.ws[i]);
        match targets {
            LossTargets::Values(y) => gm.loss_mse(g, ws, y, scale),
            LossTargets::Classes(c) => gm.loss(g, ws, c, scale),
        }
    }

    fn logits(&mut self) -> Result<Cow<'_, [f32]>> {
        let i = self.last_index()?;
        let ws = &self.ws[i];
        let k = ws.rows() * self.gm.model.cfg().output_size;
        self.logits = self.gpu.download(&ws.logits, k)?;
        Ok(Cow::Borrowed(&self.logits))
    }

    fn set_dlogits(&mut self, dlogits: &[f32]) -> Result<()> {
        let i = self.last_index()?;
        let ws = &mut self.ws[i];
        let k = ws.rows() * self.gm.model.cfg().output_size;
        if dlogits.len() != k {
            return Err(Error::invalid(format!(
                "{} logit gradients for {k} logits",
                dlogits.len()
            )));
        }
        self.gpu.write(&mut ws.dlogits, dlogits)
    }

    fn backward(&mut self, batch: &Batch) -> Result<()> {
        if self.last != Some((batch.t, batch.b)) {
            return Err(Error::invalid(
                "backward needs a forward of the same batch first",
            ));
        }
        let i = self.last_index()?;
        let g = &self.gpu;
        g.zero(g.ptr(&self.grads), self.n)?;
        self.gm.backward(
            g,
            &mut self.ws[i],
            &self.params,
            &mut self.grads,
            None,
            None,
            None,
        )
    }

    fn clip(&mut self, value: f64, norm: f64) -> Result<f64> {
        let g = &self.gpu;
        if value > 0.0 {
            clip_grad_value(g, &mut self.grads, self.n, value)?;
        }
        if norm > 0.0 {
            clip_grad_norm(g, &self.norm, &mut self.grads, self.n, norm)
        } else {
            grad_norm(g, &self.norm, &self.grads, self.n)
        }
    }

    fn grads(&self) -> Result<Cow<'_, [f32]>> {
        Ok(Cow::Owned(self.gpu.download(&self.grads, self.n)?))
    }

    fn set_grads(&mut self, grads: &[f32]) -> Result<()> {
        check_len(grads.len(), self.n)?;
        self.gpu.write(&mut self.grads, grads)
    }

    fn update(&mut self, lr: f64) -> Result<()> {
        let opt = self
            .opt
            .as_mut()
            .ok_or_else(|| Error::invalid("an inference-only engine has no optimizer"))?;
        opt.lr = lr;
        opt.update(&self.gpu, &mut self.params, &self.grads)
    }

    fn snapshot(&mut self) -> Result<()> {
        let g = &self.gpu;
        if self.backup.is_none() {
            self.backup = Some(g.zeros::<f32>(self.n)?);
        }
        let b = self.backup.as_ref().expect("just set");
        g.copy(g.ptr(b), g.ptr(&self.params), self.n)
    }

    fn restore(&mut self) -> Result<()> {
        let g = &self.gpu;
        let b = self
            .backup
            .as_ref()
            .ok_or_else(|| Error::invalid("restore needs a snapshot first"))?;
        g.copy(g.ptr(&self.params), g.ptr(b), self.n)
    }

    fn keep_carry(&mut self) -> Result<()> {
        let i = self.last_index()?;
        let b = self.ws[i].b;
        let fits = self
            .carry
            .as_ref()
            .is_some_and(|c| c.nh == state_sizes(&self.gm.model, b).0);
        if !fits {
            self.carry = Some(GpuCarry::zeros(&self.gpu, &self.gm.model, b)?);
        }
        let c = self.carry.as_mut().expect("just set");
        c.take_from(&self.gpu, &self.ws[i])
    }

    fn reset_carry(&mut self) -> Result<()> {
        match &mut self.carry {
            Some(c) => c.reset(&self.gpu),
            None => Ok(()),
        }
    }

    fn carry(&self) -> Result<Option<Cow<'_, Carry>>> {
        match &self.carry {
            Some(c) => Ok(Some(Cow::Owned(c.to_host(&self.gpu)?))),
            None => Ok(None),
        }
    }

    fn set_carry(&mut self, carry: &Carry) -> Result<()> {
        let b = carry_batch(&self.gm.model, carry)?;
        check_carry(&self.gm.model, carry, b)?;
        self.carry = Some(GpuCarry::from_host(&self.gpu, carry)?);
        Ok(())
    }

    fn stream_loss(&mut self, ids: &[u32], t: usize, b: usize) -> Result<(f64, usize)> {
        let v = self.gm.model.cfg().input_size;
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= v) {
            return Err(Error::invalid(format!(
                "token id {bad} is outside the model's vocabulary of {v}"
            )));
        }
        let i = self.ws_index(t, b)?;
        let r = stream_loss(
            &self.gpu,
            &self.gm,
            &self.params,
            ids,
            &mut self.ws[i],
            &mut self.tail,
        )?;
        if self.last == Some((t, b)) {
            self.last = None;
        }
        Ok(r)
    }

    fn params(&self) -> Result<Cow<'_, [f32]>> {
        Ok(Cow::Owned(self.gpu.download(&self.params, self.n)?))
    }

    fn set_params(&mut self, params: &[f32]) -> Result<()> {
        check_len(params.len(), self.n)?;
        self.gpu.write(&mut self.params, params)
    }

    fn optimizer(&self) -> Result<Option<Cow<'_, Optimizer<f32>>>> {
        match &self.opt {
            Some(o) => Ok(Some(Cow::Owned(o.to_host(&self.gpu)?))),
            None => Ok(None),
        }
    }

    fn sync(&self) -> Result<()> {
        self.gpu.sync()
    }
}
