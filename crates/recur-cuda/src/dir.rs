//! One direction of one layer of a [`GpuStack`](crate::GpuStack) on the device: where its
//! tensors sit ([`Slots`]), its sizes ([`Dims`]), the pointers of one call ([`DirView`]) and the
//! launches of its steps: the forward of every step at once (persistent) or step by step (fused
//! for small batches, else a cuBLAS GEMM and a cell kernel), the LSTM projection, the backward
//! steps, and the weight gradients over all steps. The stack (stack.rs) walks the layers and
//! directions and calls these in order.

use crate::device::{at, Gpu, Ptr, NULL};
use crate::kernels::{launch, launch_cfg, launch_coop, small_cfg, Arg, PERSIST_THREADS};
use recur::cell::{Activation, CellKind};
use recur::ops::Trans::{N, T};
use recur::Result;

/// Where one direction's tensors sit in the flat parameter buffer (element offsets).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slots {
    pub w_ih: usize,
    pub w_hh: usize,
    pub b_ih: Option<usize>,
    pub b_hh: Option<usize>,
    pub w_hr: Option<usize>,
}

/// Sizes of one direction.
#[derive(Clone, Copy)]
pub(crate) struct Dims {
    pub kind: CellKind,
    pub t: usize,
    pub b: usize,
    pub i: usize,
    pub h: usize,
    pub p: usize,
    pub rev: usize,
}

impl Dims {
    pub fn gh(&self) -> usize {
        self.kind.gates() * self.h
    }
    pub fn proj(&self) -> bool {
        self.kind == CellKind::Lstm && self.p != self.h
    }
}

/// One direction of one layer for one call ([`GpuStack::view`]): its dimensions, where its
/// weights sit (device pointers into the parameter buffer; NULL for an absent bias or
/// projection), the lengths (NULL: every sequence runs T steps) and its workspace buffers.
#[derive(Clone, Copy)]
pub(crate) struct DirView {
    pub idx: usize,
    pub dm: Dims,
    pub sl: Slots,
    pub w_ih: Ptr,
    pub w_hh: Ptr,
    pub w_hr: Ptr,
    pub b_ih: Ptr,
    pub b_hh: Ptr,
    pub len: Ptr,
    pub xw: Ptr,
    pub gates: Ptr,
    pub s: Ptr,
    pub cs: Ptr,
    pub hn: Ptr,
    pub hpre: Ptr,
    pub hw: Ptr,
    pub hnew: Ptr,
    pub dg: Ptr,
    pub dgh: Ptr,
    pub dhp: Ptr,
    pub dc: Ptr,
    pub dhpre: Ptr,
    pub dh_a: Ptr,
    pub dh_b: Ptr,
}

pub(crate) fn act_code(kind: CellKind) -> i32 {
    match kind {
        CellKind::Rnn(Activation::Relu) => 1,
        _ => 0,
    }
}

pub(crate) fn i(v: usize) -> Arg {
    Arg::I(v as i32)
}
pub(crate) fn p(v: Ptr) -> Arg {
    Arg::P(v)
}

/// All forward steps of one direction in one cooperative launch (`persist_fwd`), with the
/// launch plan of [`GpuStack::persist_plan`] and the grid barrier `bar`.
pub(crate) fn forward_persistent(
    gpu: &Gpu,
    v: &DirView,
    (blocks, units, smem): (u32, usize, usize),
    bar: Ptr,
    y: Ptr,
    ldy: usize,
) -> Result<()> {
    let DirView {
        dm,
        w_hh,
        b_ih,
        b_hh,
        len,
        xw,
        gates,
        s,
        cs,
        hn,
        ..
    } = *v;
    let Dims {
        t: nt,
        b: nb,
        h: nh,
        rev,
        kind,
        ..
    } = dm;
    // every step in one launch; the barrier starts from zero
    gpu.zero(bar, 2)?;
    let cell = match kind {
        CellKind::Rnn(_) => 0,
        CellKind::Lstm => 1,
        CellKind::Gru => 2,
    };
    launch_coop(
        gpu,
        &gpu.k.persist_fwd,
        cudarc::driver::LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (PERSIST_THREADS, 1, 1),
            shared_mem_bytes: smem as u32,
        },
        &[
            Arg::I(cell),
            Arg::I(act_code(kind)),
            i(nb),
            i(nh),
            i(nt),
            i(rev),
            i(units),
            p(len),
            p(w_hh),
            p(xw),
            p(b_ih),
            p(b_hh),
            p(s),
            p(cs),
            p(gates),
            p(hn),
            p(y),
            i(ldy),
            p(bar),
        ],
    )?;
    Ok(())
}

/// Step `t`'s pointers: the state read and the one written (their slots in `s`), its rows of
/// the input projection, the gates and the output `y`.
pub(crate) fn step_ptrs(v: &DirView, t: usize, y: Ptr, ldy: usize) -> (Ptr, Ptr, Ptr, Ptr, Ptr) {
    let (nb, np, rev, gh) = (v.dm.b, v.dm.p, v.dm.rev, v.dm.gh());
    (
        at(v.s, (t + rev) * nb * np),
        at(v.s, (t + 1 - rev) * nb * np),
        at(v.xw, t * nb * gh),
        at(v.gates, t * nb * gh),
        at(y, t * nb * ldy),
    )
}

/// Forward step `t` of a small batch: the recurrent product and the cell in one launch
/// (`step_small`).
pub(crate) fn step_fused(gpu: &Gpu, v: &DirView, t: usize, y: Ptr, ldy: usize) -> Result<()> {
    let DirView {
        dm,
        w_hh,
        b_ih,
        b_hh,
        len,
        cs,
        hn,
        hpre,
        ..
    } = *v;
    let Dims {
        b: nb,
        h: nh,
        p: np,
        rev,
        kind,
        ..
    } = dm;
    let is_gru = kind == CellKind::Gru;
    let (h_in, h_out, xw_t, gates_t, y_t) = step_ptrs(v, t, y, ldy);
    // hw = h_{t-1} W_hh^T and the cell, fused: one launch for the step
    let (cell, c_in, c_out) = match kind {
        CellKind::Rnn(_) => (0, NULL, NULL),
        CellKind::Lstm => (
            1,
            at(cs, (t + rev) * nb * nh),
            at(cs, (t + 1 - rev) * nb * nh),
        ),
        CellKind::Gru => (2, NULL, NULL),
    };
    let proj = dm.proj();
    // 16-byte loads need P % 4 == 0 and 16-byte aligned W_hh and state rows
    let vec4 = np.is_multiple_of(4) && w_hh.is_multiple_of(16) && h_in.is_multiple_of(16);
    launch_cfg(
        gpu,
        &gpu.k.step_small,
        small_cfg(nh),
        &[
            Arg::I(cell),
            Arg::I(act_code(kind)),
            i(nb),
            i(nh),
            i(np),
            i(t),
            i(proj as usize),
            i(vec4 as usize),
            p(len),
            p(w_hh),
            p(xw_t),
            p(b_ih),
            p(b_hh),
            p(h_in),
            p(h_out),
            p(c_in),
            p(c_out),
            p(gates_t),
            p(if is_gru { at(hn, t * nb * nh) } else { NULL }),
            p(if proj { at(hpre, t * nb * nh) } else { NULL }),
            p(y_t),
            i(ldy),
        ],
    )?;
    if proj {
        project(gpu, v, t, h_in, h_out, y_t, ldy)?;
    }
    Ok(())
}

/// Forward step `t`: hw = h_{t-1} W_hh^T by cuBLAS, then the cell's kernel.
pub(crate) fn step_cell(gpu: &Gpu, v: &DirView, t: usize, y: Ptr, ldy: usize) -> Result<()> {
    let DirView {
        dm,
        w_hh,
        b_ih,
        b_hh,
        len,
        cs,
        hn,
        hpre,
        hw,
        ..
    } = *v;
    let Dims {
        b: nb,
        h: nh,
        p: np,
        rev,
        kind,
        ..
    } = dm;
    let gh = dm.gh();
    let (h_in, h_out, xw_t, gates_t, y_t) = step_ptrs(v, t, y, ldy);
    let n = nb * nh;
    // hw = h_{t-1} W_hh^T: (B, P) x (P, G*H)
    gpu.gemm(N, T, nb, gh, np, 1.0, h_in, np, w_hh, np, 0.0, hw, gh)?;
    match kind {
        CellKind::Rnn(_) => launch(
            gpu,
            &gpu.k.rnn_fwd,
            n,
            &[
                i(nb),
                i(nh),
                i(t),
                Arg::I(act_code(kind)),
                p(len),
                p(xw_t),
                p(hw),
                p(b_ih),
                p(b_hh),
                p(h_in),
                p(h_out),
                p(gates_t),
                p(y_t),
                i(ldy),
            ],
        )?,
        CellKind::Lstm => {
            let proj = dm.proj();
            launch(
                gpu,
                &gpu.k.lstm_fwd,
                n,
                &[
                    i(nb),
                    i(nh),
                    i(t),
                    i(proj as usize),
                    p(len),
                    p(xw_t),
                    p(hw),
                    p(b_ih),
                    p(b_hh),
                    p(at(cs, (t + rev) * nb * nh)),
                    p(at(cs, (t + 1 - rev) * nb * nh)),
                    p(h_in),
                    p(h_out),
                    p(gates_t),
                    p(if proj { at(hpre, t * nb * nh) } else { NULL }),
                    p(y_t),
                    i(ldy),
                ],
            )?;
            if proj {
                project(gpu, v, t, h_in, h_out, y_t, ldy)?;
            }
        }
        CellKind::Gru => launch(
            gpu,
            &gpu.k.gru_fwd,
            n,
            &[
                i(nb),
                i(nh),
                i(t),
                p(len),
                p(xw_t),
                p(hw),
                p(b_ih),
                p(b_hh),
                p(h_in),
                p(h_out),
                p(gates_t),
                p(at(hn, t * nb * nh)),
                p(y_t),
                i(ldy),
            ],
        )?,
    }
    Ok(())
}

/// LSTM projection of step t: h_t = (o * tanh(c_t)) W_hr^T: (B, H) x (H, P), then the state
/// and output rows of sequences still running.
pub(crate) fn project(
    gpu: &Gpu,
    v: &DirView,
    t: usize,
    h_in: Ptr,
    h_out: Ptr,
    y_t: Ptr,
    ldy: usize,
) -> Result<()> {
    let DirView {
        dm,
        w_hr,
        len,
        hpre,
        hnew,
        ..
    } = *v;
    let (nb, nh, np) = (dm.b, dm.h, dm.p);
    let hpre_t = at(hpre, t * nb * nh);
    gpu.gemm(N, T, nb, np, nh, 1.0, hpre_t, nh, w_hr, nh, 0.0, hnew, np)?;
    let args = [
        i(nb),
        i(np),
        i(t),
        p(len),
        p(hnew),
        p(h_in),
        p(h_out),
        p(y_t),
        i(ldy),
    ];
    launch(gpu, &gpu.k.proj_select, nb * np, &args)
}

/// Backward step `t`: the cell's kernel (gate gradients into dg, the carry into `dh_other`),
/// then dh_{t-1} += dGh_t W_hh.
pub(crate) fn step_backward(
    gpu: &Gpu,
    v: &DirView,
    t: usize,
    dy: Ptr,
    ldy: usize,
    dh_cur: Ptr,
    dh_other: Ptr,
) -> Result<()> {
    let DirView {
        dm,
        w_hh,
        len,
        gates,
        s,
        hn,
        dg,
        dgh,
        ..
    } = *v;
    let Dims {
        b: nb,
        h: nh,
        p: np,
        rev,
        kind,
        ..
    } = dm;
    let gh = dm.gh();
    let is_gru = kind == CellKind::Gru;
    let n = nb * nh;
    let dy_t = at(dy, t * nb * ldy);
    let gates_t = at(gates, t * nb * gh);
    let dg_t = at(dg, t * nb * gh);
    // dh_other = carry (set by the kernel), then += dGh_t W_hh below
    match kind {
        CellKind::Rnn(_) => launch(
            gpu,
            &gpu.k.rnn_bwd,
            n,
            &[
                i(nb),
                i(nh),
                i(t),
                Arg::I(act_code(kind)),
                p(len),
                p(gates_t),
                p(dh_cur),
                p(dy_t),
                i(ldy),
                p(dg_t),
                p(dh_other),
            ],
        )?,
        CellKind::Lstm => lstm_step_backward(gpu, v, t, dy_t, ldy, dh_cur, dh_other)?,
        CellKind::Gru => launch(
            gpu,
            &gpu.k.gru_bwd,
            n,
            &[
                i(nb),
                i(nh),
                i(t),
                p(len),
                p(gates_t),
                p(at(hn, t * nb * nh)),
                p(at(s, (t + rev) * nb * np)),
                p(dh_cur),
                p(dy_t),
                i(ldy),
                p(dg_t),
                p(at(dgh, t * nb * gh)),
                p(dh_other),
            ],
        )?,
    }
    // dh_{t-1} = dGh_t W_hh + carry: (B, G*H) x (G*H, P)
    let dgh_t = if is_gru { at(dgh, t * nb * gh) } else { dg_t };
    gpu.gemm(
        N, N, nb, np, gh, 1.0, dgh_t, gh, w_hh, np, 1.0, dh_other, np,
    )?;
    Ok(())
}

/// The LSTM's backward step `t` (with its projection, when it has one).
pub(crate) fn lstm_step_backward(
    gpu: &Gpu,
    v: &DirView,
    t: usize,
    dy_t: Ptr,
    ldy: usize,
    dh_cur: Ptr,
    dh_other: Ptr,
) -> Result<()> {
    let DirView {
        dm,
        w_hr,
        len,
        gates,
        cs,
        dg,
        dhp,
        dc,
        dhpre,
        ..
    } = *v;
    let Dims {
        b: nb,
        h: nh,
        p: np,
        rev,
        ..
    } = dm;
    let gh = dm.gh();
    let proj = dm.proj();
    let n = nb * nh;
    let gates_t = at(gates, t * nb * gh);
    let dg_t = at(dg, t * nb * gh);
    let c_prev = at(cs, (t + rev) * nb * nh);
    let c_cur = at(cs, (t + 1 - rev) * nb * nh);
    if proj {
        // forward was: h_t = hpre W_hr^T; keep dh_t for dW_hr, then dhpre = dh_t W_hr
        let dhp_t = at(dhp, t * nb * np);
        launch(
            gpu,
            &gpu.k.proj_bwd_pre,
            nb * np,
            &[
                i(nb),
                i(np),
                i(t),
                p(len),
                p(dh_cur),
                p(dy_t),
                i(ldy),
                p(dhp_t),
                p(dh_other),
            ],
        )?;
        gpu.gemm(N, N, nb, nh, np, 1.0, dhp_t, np, w_hr, nh, 0.0, dhpre, nh)?;
    }
    // the cell's gradient from dh (with a projection: dhpre, the output gradient already in
    // it and the carry written by proj_bwd_pre)
    let (dh, dy_t, ldy, carry) = if proj {
        (dhpre, NULL, 0, NULL)
    } else {
        (dh_cur, dy_t, ldy, dh_other)
    };
    launch(
        gpu,
        &gpu.k.lstm_bwd,
        n,
        &[
            i(nb),
            i(nh),
            i(t),
            p(len),
            p(gates_t),
            p(c_prev),
            p(c_cur),
            p(dh),
            p(dy_t),
            i(ldy),
            p(dc),
            p(dg_t),
            p(carry),
        ],
    )?;
    Ok(())
}

/// dW_ih (a scatter-add for one-hot input, else dG^T X) and, for dense input, dX += dG W_ih.
#[allow(clippy::too_many_arguments)]
pub(crate) fn input_weight_grads(
    gpu: &Gpu,
    v: &DirView,
    pg: Ptr,
    x: Option<Ptr>,
    ldx: usize,
    ids: Option<Ptr>,
    dx: Option<Ptr>,
    lddx: usize,
) -> Result<()> {
    let DirView {
        dm, sl, w_ih, dg, ..
    } = *v;
    let (ni, gh, rows) = (dm.i, dm.gh(), dm.t * dm.b);
    match (x, ids) {
        (_, Some(ids)) => {
            // dW_ih[:, id] += dG row: the one-hot product's gradient is a scatter-add
            launch(
                gpu,
                &gpu.k.onehot_scatter,
                rows * gh,
                &[i(rows), i(gh), i(ni), p(ids), p(dg), p(at(pg, sl.w_ih))],
            )?;
        }
        (Some(x), None) => {
            // dW_ih += dG^T X: (G*H, T*B) x (T*B, I)
            gpu.gemm(
                T,
                N,
                gh,
                ni,
                rows,
                1.0,
                dg,
                gh,
                x,
                ldx,
                1.0,
                at(pg, sl.w_ih),
                ni,
            )?;
            if let Some(dx) = dx {
                // dX += dG W_ih: (T*B, G*H) x (G*H, I)
                gpu.gemm(N, N, rows, ni, gh, 1.0, dg, gh, w_ih, ni, 1.0, dx, lddx)?;
            }
        }
        (None, None) => unreachable!("layer input is dense or one-hot"),
    }
    Ok(())
}

/// dW_hh, the biases' gradients (column sums of dG as a GEMM with `ones`) and dW_hr, one GEMM
/// each over all steps.
pub(crate) fn recurrent_weight_grads(gpu: &Gpu, v: &DirView, pg: Ptr, ones: Ptr) -> Result<()> {
    let DirView {
        dm,
        sl,
        s,
        hpre,
        dg,
        dgh,
        dhp,
        ..
    } = *v;
    let Dims {
        b: nb,
        h: nh,
        p: np,
        rev,
        kind,
        ..
    } = dm;
    let (gh, rows, proj) = (dm.gh(), dm.t * nb, dm.proj());
    let dgh_all = if kind == CellKind::Gru { dgh } else { dg };
    // dW_hh += dGh^T H_prev: (G*H, T*B) x (T*B, P); H_prev = slots rev..rev+T
    gpu.gemm(
        T,
        N,
        gh,
        np,
        rows,
        1.0,
        dgh_all,
        gh,
        at(s, rev * nb * np),
        np,
        1.0,
        at(pg, sl.w_hh),
        np,
    )?;
    // bias gradients: column sums as (1, T*B) x (T*B, G*H)
    if let Some(o) = sl.b_ih {
        gpu.gemm(
            N,
            N,
            1,
            gh,
            rows,
            1.0,
            ones,
            rows,
            dg,
            gh,
            1.0,
            at(pg, o),
            gh,
        )?;
    }
    if let Some(o) = sl.b_hh {
        gpu.gemm(
            N,
            N,
            1,
            gh,
            rows,
            1.0,
            ones,
            rows,
            dgh_all,
            gh,
            1.0,
            at(pg, o),
            gh,
        )?;
    }
    if let (true, Some(o)) = (proj, sl.w_hr) {
        // dW_hr += dH^T Hpre: (P, T*B) x (T*B, H)
        gpu.gemm(
            T,
            N,
            np,
            nh,
            rows,
            1.0,
            dhp,
            np,
            hpre,
            nh,
            1.0,
            at(pg, o),
            nh,
        )?;
    }
    Ok(())
}
