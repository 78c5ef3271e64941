//! A recurrent stack (layers x directions) on the device: the GPU twin of `recur::stack::Stack`
//! and `recur::cell::{forward, backward}`, with the same arguments, layouts and semantics
//! (PyTorch's): inter-layer dropout (masks drawn on the host by the same `Rng` calls as the CPU,
//! so a seed gives the same masks on both), optional biases, LSTM projection, initial states and
//! per-sequence lengths.
//!
//! Per direction, states live in one buffer of T+1 slots, `s: (T+1, B, P)`: the step at time t
//! reads slot `t + rev` and writes slot `t + 1 - rev` (rev = 1 for the reverse direction), so the
//! states entering steps 0..T are the contiguous slots `rev..rev+T`, in time order, ready for the
//! one GEMM `dW_hh = dG^T H_prev`. The LSTM cell states `cs: (T+1, B, H)` use the same slots.
//!
//! What it is not: the model's embedding, head and loss, or the optimizers (the parameters and
//! gradients are flat device buffers laid out as on the CPU: callers copy them with one copy).

use crate::device::{at, Cu, Gpu, Ptr, NULL};
use crate::dir::{
    forward_persistent, i, input_weight_grads, p, recurrent_weight_grads, step_backward, step_cell,
    step_fused, Dims, DirView, Slots,
};
use crate::kernels::{launch, Arg, PERSIST_THREADS, SMALL_B};
use crate::{DevBuf, DevIds};
use cudarc::driver::CudaSlice;
use recur::cell::CellKind;
use recur::ops::Trans::{N, T};
use recur::rng::Rng;
use recur::stack::Stack;
use recur::{Error, Result};

/// The input of the stack's first layer, on the device.
#[derive(Clone, Copy)]
pub enum GpuInput<'a> {
    /// `(T, B, I)` dense vectors, contiguous.
    Dense(&'a DevBuf),
    /// `(T, B)` token ids in `0..I`, standing for one-hot vectors.
    OneHot(&'a DevIds),
}

/// Largest W_hh (G*H x P elements) for which `step_small` is used. Measured on an H200
/// (docs/gpu.md): at B = 1 the fused kernel won with W_hh of 64K (RNN, H = 256), 192K (GRU) and
/// 256K elements (LSTM), and lost to cuBLAS with 1M (RNN, H = 1024), 3M (GRU) and 4M (LSTM):
/// once W_hh is megabytes, one block per unit re-reading it each step is slower than cuBLAS's
/// GEMV. The bound sits between the measured sizes.
pub const SMALL_MAX_WEIGHTS: usize = 512 * 1024;

/// Largest hidden size the persistent kernel takes (the bound for it; with 132 SMs an
/// LSTM of 1024 units keeps 8 units' rows of W_hh, 128 KiB, per block).
pub const PERSIST_MAX_H: usize = 1024;

/// A stack on the device: the CPU stack's configuration and parameter layout.
pub struct GpuStack {
    pub stack: Stack,
    slots: Vec<Slots>,
    /// Forward steps of batches up to this size (at most 8) run as one fused kernel per step
    /// (`step_small`: recurrent product and cell together) instead of a cuBLAS GEMM plus the
    /// cell kernel, when W_hh has at most [`SMALL_MAX_WEIGHTS`] elements. Default 8; 0 always
    /// uses cuBLAS.
    pub small_batch: usize,
    /// Forward of batches up to 8 (no LSTM projection, H <= [`PERSIST_MAX_H`]) as ONE persistent
    /// cooperative launch per layer and direction (`persist_fwd`: W_hh in shared memory for the
    /// whole sequence, a grid-wide barrier per step) when the device has the shared memory and
    /// SMs for it; otherwise as `small_batch` says. Default off: not yet measured on a GPU.
    pub persistent: bool,
    /// Where the stack's parameters start in the parameter and gradient buffers.
    base: usize,
}

/// One direction of one layer: saved activations and backward scratch, sized once.
struct DirBufs {
    // xw: (T, B, G*H) x_t W_ih^T (the bias b_ih is added in the step kernel)
    xw: DevBuf,
    // gates: (T, B, G*H) activated gates (RNN: h itself)
    gates: DevBuf,
    // hn: (T, B, H) GRU only: h_{t-1} W_hn^T + b_hn
    hn: DevBuf,
    // s: (T+1, B, P) states; cs: (T+1, B, H) LSTM cell states (see the file header)
    s: DevBuf,
    cs: DevBuf,
    // hpre: (T, B, H) LSTM with projection: o * tanh(c) before the projection
    hpre: DevBuf,
    // hw: (B, G*H) per-step recurrent product; hnew: (B, P) projection output
    hw: DevBuf,
    hnew: DevBuf,
    // dg: (T, B, G*H) input-side gate gradients; dgh: (T, B, G*H) GRU recurrent side
    dg: DevBuf,
    dgh: DevBuf,
    // dhp: (T, B, P) LSTM projection: dL/dh_t of active rows
    dhp: DevBuf,
    // dh_a, dh_b: (B, P) dL/dh ping-pong; dc: (B, H); dhpre: (B, H) projection
    dh_a: DevBuf,
    dh_b: DevBuf,
    dc: DevBuf,
    dhpre: DevBuf,
}

/// Everything a forward and backward of a [`GpuStack`] needs on the device, sized once for
/// sequences of `t` steps in batches of `b`.
pub struct GpuStackWorkspace {
    pub t: usize,
    pub b: usize,
    dirs: Vec<DirBufs>,
    /// Per layer: outputs (T, B, D*P).
    pub outs: Vec<DevBuf>,
    // per layer l > 0: dropped-out input and mask (T, B, D*P)
    dropped: Vec<DevBuf>,
    masks: Vec<DevBuf>,
    mask_host: Vec<f32>,
    dropout_on: Vec<bool>,
    // per layer: gradient of the outputs (T, B, D*P); dinput: (T, B, D*P) layers > 0
    douts: Vec<DevBuf>,
    dinput: DevBuf,
    /// Final states (L*D, B, P) and (L*D, B, H, LSTM), PyTorch's layout.
    pub h_n: DevBuf,
    pub c_n: DevBuf,
    /// Initial-state gradients after backward: (L*D, B, P) and (L*D, B, H, LSTM).
    pub dh0: DevBuf,
    pub dc0: DevBuf,
    // lengths (B) on the device, and whether this call uses them
    len: CudaSlice<i32>,
    len_on: bool,
    // ones: (T*B) for the bias gradients as a GEMM (a row of ones times dG)
    ones: DevBuf,
    // bar: the persistent kernel's grid barrier (arrival count, generation)
    bar: CudaSlice<u32>,
}

impl GpuStackWorkspace {
    /// The last layer's outputs (T, B, D*P).
    pub fn output(&self) -> &DevBuf {
        self.outs.last().expect("at least one layer")
    }
}

impl GpuStack {
    /// The device twin of a CPU stack (same configuration and parameter layout).
    pub fn new(stack: &Stack) -> GpuStack {
        GpuStack::new_at(stack, 0)
    }

    /// As [`GpuStack::new`], for a stack whose parameters (and gradients) start at element `base`
    /// of the buffers passed to `forward` and `backward` (a model's `rnn.` block).
    pub fn new_at(stack: &Stack, base: usize) -> GpuStack {
        let cfg = &stack.cfg();
        let off = |n: &str| stack.layout().get(n).map(|e| base + e.offset);
        let mut slots = Vec::new();
        for l in 0..cfg.num_layers {
            for d in 0..cfg.dirs() {
                let sfx = if d == 1 {
                    format!("_l{l}_reverse")
                } else {
                    format!("_l{l}")
                };
                slots.push(Slots {
                    w_ih: off(&format!("weight_ih{sfx}")).expect("layout has weight_ih"),
                    w_hh: off(&format!("weight_hh{sfx}")).expect("layout has weight_hh"),
                    b_ih: off(&format!("bias_ih{sfx}")),
                    b_hh: off(&format!("bias_hh{sfx}")),
                    w_hr: off(&format!("weight_hr{sfx}")),
                });
            }
        }
        GpuStack {
            stack: stack.clone(),
            slots,
            small_batch: SMALL_B,
            persistent: false,
            base,
        }
    }

    /// Whether this direction's forward runs as one persistent launch: (blocks, units per block,
    /// shared-memory bytes), or `None` for the per-step path. Sets the kernel's shared-memory
    /// limit when it does.
    fn persist_plan(&self, gpu: &Gpu, dm: &Dims) -> Result<Option<(u32, usize, usize)>> {
        if !self.persistent || dm.b == 0 || dm.b > SMALL_B || dm.proj() || dm.h > PERSIST_MAX_H {
            return Ok(None);
        }
        let g = dm.kind.gates();
        let sms = gpu.sms.max(1);
        // units per block: spread H over the SMs, one block each
        let units = dm.h.div_ceil(sms);
        let blocks = dm.h.div_ceil(units);
        // wsm (U, G, P) and hsm (B, P), float32
        let smem = (units * g + dm.b) * dm.p * 4;
        if smem > gpu.smem_optin {
            return Ok(None);
        }
        use cudarc::driver::sys::CUfunction_attribute as FA;
        let f = &gpu.k.persist_fwd;
        f.set_attribute(
            FA::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            smem as i32,
        )
        .cu()?;
        // a cooperative launch needs every block resident at once
        let per_sm = f
            .occupancy_max_active_blocks_per_multiprocessor(PERSIST_THREADS, smem, None)
            .cu()?;
        if (per_sm as usize) * sms < blocks {
            return Ok(None);
        }
        Ok(Some((blocks as u32, units, smem)))
    }

    fn dims(&self, t: usize, b: usize, l: usize, d: usize) -> Dims {
        let cfg = &self.stack.cfg();
        Dims {
            kind: self.stack.kind(),
            t,
            b,
            i: cfg.layer_input(l),
            h: cfg.hidden_size,
            p: cfg.out_size(),
            rev: d,
        }
    }

    /// A workspace for sequences of `t` steps in batches of `b`.
    pub fn workspace(&self, gpu: &Gpu, t: usize, b: usize) -> Result<GpuStackWorkspace> {
        let cfg = &self.stack.cfg();
        let (nl, nd) = (cfg.num_layers, cfg.dirs());
        let (h, pp) = (cfg.hidden_size, cfg.out_size());
        let kind = self.stack.kind();
        let lstm = kind == CellKind::Lstm;
        let gru = kind == CellKind::Gru;
        let out = t * b * nd * pp;
        let z = |n: usize| gpu.zeros::<f32>(n);
        let mut dirs = Vec::new();
        for l in 0..nl {
            for d in 0..nd {
                let dm = self.dims(t, b, l, d);
                let gh = dm.gh();
                dirs.push(DirBufs {
                    xw: z(t * b * gh)?,
                    gates: z(t * b * gh)?,
                    hn: z(if gru { t * b * h } else { 0 })?,
                    s: z((t + 1) * b * pp)?,
                    cs: z(if lstm { (t + 1) * b * h } else { 0 })?,
                    hpre: z(if dm.proj() { t * b * h } else { 0 })?,
                    hw: z(b * gh)?,
                    hnew: z(if dm.proj() { b * pp } else { 0 })?,
                    dg: z(t * b * gh)?,
                    dgh: z(if gru { t * b * gh } else { 0 })?,
                    dhp: z(if dm.proj() { t * b * pp } else { 0 })?,
                    dh_a: z(b * pp)?,
                    dh_b: z(b * pp)?,
                    dc: z(if lstm { b * h } else { 0 })?,
                    dhpre: z(if dm.proj() { b * h } else { 0 })?,
                });
            }
        }
        let ones = z(t * b)?;
        launch(
            gpu,
            &gpu.k.fill,
            t * b,
            &[Arg::L((t * b) as i64), Arg::F(1.0), p(gpu.ptr(&ones))],
        )?;
        let v = |n: usize| -> Result<Vec<DevBuf>> {
            (0..nl).map(|l| z(n * (l > 0) as usize)).collect()
        };
        Ok(GpuStackWorkspace {
            t,
            b,
            dirs,
            outs: (0..nl).map(|_| z(out)).collect::<Result<_, _>>()?,
            dropped: v(out)?,
            masks: v(out)?,
            mask_host: vec![0.0; out],
            dropout_on: vec![false; nl],
            douts: (0..nl).map(|_| z(out)).collect::<Result<_, _>>()?,
            dinput: z(if nl > 1 { out } else { 0 })?,
            h_n: z(nl * nd * b * pp)?,
            c_n: z(if lstm { nl * nd * b * h } else { 0 })?,
            dh0: z(nl * nd * b * pp)?,
            dc0: z(if lstm { nl * nd * b * h } else { 0 })?,
            len: gpu.zeros::<i32>(b)?,
            len_on: false,
            ones,
            bar: gpu.zeros::<u32>(2)?,
        })
    }

    fn set_lengths(
        &self,
        gpu: &Gpu,
        ws: &mut GpuStackWorkspace,
        lengths: Option<&[usize]>,
    ) -> Result<()> {
        ws.len_on = false;
        if let Some(l) = lengths {
            if l.len() != ws.b {
                return Err(Error::invalid(format!(
                    "lengths has {} entries, the batch has {}",
                    l.len(),
                    ws.b
                )));
            }
            if let Some(&bad) = l.iter().find(|&&v| v > ws.t) {
                return Err(Error::invalid(format!(
                    "a sequence length ({bad}) exceeds the {} steps",
                    ws.t
                )));
            }
            let v: Vec<i32> = l.iter().map(|&x| x as i32).collect();
            // SAFETY: `len` holds b = v.len() ints.
            unsafe {
                cudarc::driver::result::memcpy_htod_async(
                    gpu.ptr(&ws.len),
                    &v,
                    gpu.stream.cu_stream(),
                )
                .cu()?
            };
            // the host vector must outlive the asynchronous copy
            gpu.sync()?;
            ws.len_on = true;
        }
        Ok(())
    }

    /// Forward through all layers, as `recur::stack::Stack::forward`. `h0` (L*D, B, P) and `c0`
    /// (L*D, B, H) are the initial states (zero when `None`); `lengths` (B) the per-sequence
    /// lengths (all T when `None`). With `dropout_rng`, training mode: dropout masks are drawn
    /// on the host, in the CPU's order. Results: `ws.output()`, `ws.h_n`, `ws.c_n`.
    pub fn forward(
        &self,
        gpu: &Gpu,
        ws: &mut GpuStackWorkspace,
        params: &DevBuf,
        input: GpuInput,
        h0: Option<&DevBuf>,
        c0: Option<&DevBuf>,
        lengths: Option<&[usize]>,
        mut dropout_rng: Option<&mut Rng>,
    ) -> Result<()> {
        self.check(ws, params, input)?;
        self.set_lengths(gpu, ws, lengths)?;
        let cfg = &self.stack.cfg();
        let (nl, nd) = (cfg.num_layers, cfg.dirs());
        let pp = cfg.out_size();
        let ldy = nd * pp;
        let n = ws.t * ws.b * ldy;
        for l in 0..nl {
            let (x, ldx) = if l == 0 {
                match input {
                    GpuInput::Dense(x) => (Some(gpu.ptr(x)), cfg.input_size),
                    GpuInput::OneHot(_) => (None, cfg.input_size),
                }
            } else {
                let prev = gpu.ptr(&ws.outs[l - 1]);
                let pdrop = cfg.dropout;
                match (dropout_rng.as_deref_mut(), pdrop > 0.0) {
                    (Some(rng), true) => {
                        // the CPU's mask, drawn by the same calls in the same order
                        let keep = (1.0 / (1.0 - pdrop)) as f32;
                        for m in ws.mask_host.iter_mut() {
                            *m = if rng.uniform() < pdrop { 0.0 } else { keep };
                        }
                        gpu.write(&mut ws.masks[l], &ws.mask_host)?;
                        launch(
                            gpu,
                            &gpu.k.mul,
                            n,
                            &[
                                Arg::L(n as i64),
                                p(prev),
                                p(gpu.ptr(&ws.masks[l])),
                                p(gpu.ptr(&ws.dropped[l])),
                            ],
                        )?;
                        // the mask's host copy is reused: wait for the upload
                        gpu.sync()?;
                        ws.dropout_on[l] = true;
                        (Some(gpu.ptr(&ws.dropped[l])), ldy)
                    }
                    _ => {
                        ws.dropout_on[l] = false;
                        (Some(prev), ldy)
                    }
                }
            };
            let ids = match (l, input) {
                (0, GpuInput::OneHot(ids)) => Some(gpu.ptr(ids)),
                _ => None,
            };
            let y = gpu.ptr(&ws.outs[l]);
            for d in 0..nd {
                let idx = l * nd + d;
                self.dir_forward(
                    gpu,
                    ws,
                    params,
                    l,
                    d,
                    x,
                    ldx,
                    ids,
                    h0,
                    c0,
                    at(y, d * pp),
                    ldy,
                )?;
                let _ = idx;
            }
        }
        Ok(())
    }

    fn check(&self, ws: &GpuStackWorkspace, params: &DevBuf, input: GpuInput) -> Result<()> {
        if params.len() < self.base + self.stack.num_params() {
            return Err(Error::invalid(format!(
                "parameter buffer holds {} values, the stack needs {}",
                params.len(),
                self.base + self.stack.num_params()
            )));
        }
        let rows = ws.t * ws.b;
        let need = match input {
            GpuInput::Dense(x) => (x.len(), rows * self.stack.cfg().input_size),
            GpuInput::OneHot(ids) => (ids.len(), rows),
        };
        if need.0 < need.1 {
            return Err(Error::invalid(format!(
                "input buffer holds {} values, (T, B) = ({}, {}) needs {}",
                need.0, ws.t, ws.b, need.1
            )));
        }
        Ok(())
    }

    /// One direction of one layer for a call on `ws`: its dimensions, weight pointers into
    /// `params` and workspace buffers. Forward and backward both start from it.
    fn view(
        &self,
        gpu: &Gpu,
        ws: &GpuStackWorkspace,
        params: &DevBuf,
        l: usize,
        d: usize,
    ) -> DirView {
        let idx = l * self.stack.cfg().dirs() + d;
        let sl = self.slots[idx];
        let pw = gpu.ptr(params);
        let c = &ws.dirs[idx];
        DirView {
            idx,
            dm: self.dims(ws.t, ws.b, l, d),
            sl,
            w_ih: at(pw, sl.w_ih),
            w_hh: at(pw, sl.w_hh),
            w_hr: sl.w_hr.map_or(NULL, |o| at(pw, o)),
            b_ih: sl.b_ih.map_or(NULL, |o| at(pw, o)),
            b_hh: sl.b_hh.map_or(NULL, |o| at(pw, o)),
            len: if ws.len_on { gpu.ptr(&ws.len) } else { NULL },
            xw: gpu.ptr(&c.xw),
            gates: gpu.ptr(&c.gates),
            s: gpu.ptr(&c.s),
            cs: gpu.ptr(&c.cs),
            hn: gpu.ptr(&c.hn),
            hpre: gpu.ptr(&c.hpre),
            hw: gpu.ptr(&c.hw),
            hnew: gpu.ptr(&c.hnew),
            dg: gpu.ptr(&c.dg),
            dgh: gpu.ptr(&c.dgh),
            dhp: gpu.ptr(&c.dhp),
            dc: gpu.ptr(&c.dc),
            dhpre: gpu.ptr(&c.dhpre),
            dh_a: gpu.ptr(&c.dh_a),
            dh_b: gpu.ptr(&c.dh_b),
        }
    }

    /// Forward of one direction of layer `l`: the input projection of all steps, then the
    /// steps (one persistent launch, a fused kernel per step, or a GEMM and a cell kernel per
    /// step), then the final states.
    #[allow(clippy::too_many_arguments)]
    fn dir_forward(
        &self,
        gpu: &Gpu,
        ws: &mut GpuStackWorkspace,
        params: &DevBuf,
        l: usize,
        d: usize,
        x: Option<Ptr>,
        ldx: usize,
        ids: Option<Ptr>,
        h0: Option<&DevBuf>,
        c0: Option<&DevBuf>,
        y: Ptr,
        ldy: usize,
    ) -> Result<()> {
        let v = self.view(gpu, ws, params, l, d);
        let DirView {
            idx,
            w_ih,
            xw,
            s,
            cs,
            ..
        } = v;
        let Dims {
            t: nt,
            b: nb,
            i: ni,
            h: nh,
            p: np,
            rev,
            kind,
        } = v.dm;
        let gh = v.dm.gh();
        let rows = nt * nb;

        // xw = X W_ih^T, all steps at once: (T*B, I) x (I, G*H)
        match (x, ids) {
            (_, Some(ids)) => launch(
                gpu,
                &gpu.k.onehot_gather,
                rows * gh,
                &[i(rows), i(gh), i(ni), p(ids), p(w_ih), p(xw)],
            )?,
            (Some(x), None) => gpu.gemm(N, T, rows, gh, ni, 1.0, x, ldx, w_ih, ni, 0.0, xw, gh)?,
            (None, None) => unreachable!("layer input is dense or one-hot"),
        }
        // initial states into the entry slot
        let first = if rev == 1 { nt } else { 0 };
        match h0 {
            Some(h0) => gpu.copy(
                at(s, first * nb * np),
                at(gpu.ptr(h0), idx * nb * np),
                nb * np,
            )?,
            None => gpu.zero(at(s, first * nb * np), nb * np)?,
        }
        if kind == CellKind::Lstm {
            match c0 {
                Some(c0) => gpu.copy(
                    at(cs, first * nb * nh),
                    at(gpu.ptr(c0), idx * nb * nh),
                    nb * nh,
                )?,
                None => gpu.zero(at(cs, first * nb * nh), nb * nh)?,
            }
        }
        match self.persist_plan(gpu, &v.dm)? {
            Some(plan) => forward_persistent(gpu, &v, plan, gpu.ptr(&ws.bar), y, ldy)?,
            None => {
                let small = nb <= self.small_batch.min(SMALL_B) && gh * np <= SMALL_MAX_WEIGHTS;
                for st in 0..nt {
                    let t = if rev == 1 { nt - 1 - st } else { st };
                    if small {
                        step_fused(gpu, &v, t, y, ldy)?;
                    } else {
                        step_cell(gpu, &v, t, y, ldy)?;
                    }
                }
            }
        }
        // final states: the exit slot (each sequence's state at its own last step)
        let last = if rev == 1 { 0 } else { nt };
        gpu.copy(
            at(gpu.ptr(&ws.h_n), idx * nb * np),
            at(s, last * nb * np),
            nb * np,
        )?;
        if kind == CellKind::Lstm {
            gpu.copy(
                at(gpu.ptr(&ws.c_n), idx * nb * nh),
                at(cs, last * nb * nh),
                nb * nh,
            )?;
        }
        Ok(())
    }

    /// Backward through all layers after [`GpuStack::forward`] with the same arguments, as
    /// `recur::stack::Stack::backward`: `dy` (T, B, D*P) or `None`; `dh_n`, `dc_n` or `None`;
    /// gradients accumulated into `grads` (the parameters' layout); `dx` (dense input only,
    /// (T, B, I)) accumulated; `ws.dh0`, `ws.dc0` receive the initial states' gradients.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        gpu: &Gpu,
        ws: &mut GpuStackWorkspace,
        params: &DevBuf,
        grads: &mut DevBuf,
        input: GpuInput,
        dy: Option<&DevBuf>,
        dh_n: Option<&DevBuf>,
        dc_n: Option<&DevBuf>,
        dx: Option<&mut DevBuf>,
    ) -> Result<()> {
        self.check(ws, params, input)?;
        if grads.len() < self.base + self.stack.num_params() {
            return Err(Error::invalid(
                "gradient buffer smaller than the parameters",
            ));
        }
        let cfg = &self.stack.cfg();
        let (nl, nd) = (cfg.num_layers, cfg.dirs());
        let pp = cfg.out_size();
        let ldy = nd * pp;
        let n = ws.t * ws.b * ldy;
        let top = nl - 1;
        match dy {
            Some(dy) => gpu.copy(gpu.ptr(&ws.douts[top]), gpu.ptr(dy), n)?,
            None => gpu.zero(gpu.ptr(&ws.douts[top]), n)?,
        }
        let dx_ptr = dx.map(|v| gpu.ptr(v));
        for l in (0..nl).rev() {
            let (x, ldx, ids) = if l == 0 {
                match input {
                    GpuInput::Dense(x) => (Some(gpu.ptr(x)), cfg.input_size, None),
                    GpuInput::OneHot(v) => (None, cfg.input_size, Some(gpu.ptr(v))),
                }
            } else if ws.dropout_on[l] {
                (Some(gpu.ptr(&ws.dropped[l])), ldy, None)
            } else {
                (Some(gpu.ptr(&ws.outs[l - 1])), ldy, None)
            };
            if l > 0 {
                gpu.zero(gpu.ptr(&ws.dinput), n)?;
            }
            let (ddx, lddx) = if l > 0 {
                (Some(gpu.ptr(&ws.dinput)), ldy)
            } else {
                (dx_ptr, cfg.input_size)
            };
            for d in 0..nd {
                let dyd = at(gpu.ptr(&ws.douts[l]), d * pp);
                self.dir_backward(
                    gpu, ws, params, grads, l, d, x, ldx, ids, dyd, ldy, dh_n, dc_n, ddx, lddx,
                )?;
            }
            if l > 0 {
                // through the dropout: d(prev_out) = d(input) * mask
                let dprev = gpu.ptr(&ws.douts[l - 1]);
                if ws.dropout_on[l] {
                    launch(
                        gpu,
                        &gpu.k.mul,
                        n,
                        &[
                            Arg::L(n as i64),
                            p(gpu.ptr(&ws.dinput)),
                            p(gpu.ptr(&ws.masks[l])),
                            p(dprev),
                        ],
                    )?;
                } else {
                    gpu.copy(dprev, gpu.ptr(&ws.dinput), n)?;
                }
            }
        }
        Ok(())
    }

    /// Backward of one direction of layer `l` after its forward: the steps in reverse (one
    /// kernel and one GEMM each), the initial states' gradients, then the weight gradients.
    #[allow(clippy::too_many_arguments)]
    fn dir_backward(
        &self,
        gpu: &Gpu,
        ws: &mut GpuStackWorkspace,
        params: &DevBuf,
        grads: &mut DevBuf,
        l: usize,
        d: usize,
        x: Option<Ptr>,
        ldx: usize,
        ids: Option<Ptr>,
        dy: Ptr,
        ldy: usize,
        dh_n: Option<&DevBuf>,
        dc_n: Option<&DevBuf>,
        dx: Option<Ptr>,
        lddx: usize,
    ) -> Result<()> {
        let v = self.view(gpu, ws, params, l, d);
        let DirView { idx, dc, .. } = v;
        let Dims {
            t: nt,
            b: nb,
            h: nh,
            p: np,
            rev,
            kind,
            ..
        } = v.dm;
        let (mut dh_cur, mut dh_other) = (v.dh_a, v.dh_b);
        match dh_n {
            Some(v) => gpu.copy(dh_cur, at(gpu.ptr(v), idx * nb * np), nb * np)?,
            None => gpu.zero(dh_cur, nb * np)?,
        }
        if kind == CellKind::Lstm {
            match dc_n {
                Some(v) => gpu.copy(dc, at(gpu.ptr(v), idx * nb * nh), nb * nh)?,
                None => gpu.zero(dc, nb * nh)?,
            }
        }
        for st in (0..nt).rev() {
            let t = if rev == 1 { nt - 1 - st } else { st };
            step_backward(gpu, &v, t, dy, ldy, dh_cur, dh_other)?;
            std::mem::swap(&mut dh_cur, &mut dh_other);
        }
        gpu.copy(at(gpu.ptr(&ws.dh0), idx * nb * np), dh_cur, nb * np)?;
        if kind == CellKind::Lstm {
            gpu.copy(at(gpu.ptr(&ws.dc0), idx * nb * nh), dc, nb * nh)?;
        }

        let pg = gpu.ptr(grads);
        input_weight_grads(gpu, &v, pg, x, ldx, ids, dx, lddx)?;
        recurrent_weight_grads(gpu, &v, pg, gpu.ptr(&ws.ones))
    }
}
