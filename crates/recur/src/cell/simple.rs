//! The simple sequence driver: a product per step for all rows, then an element-wise pass per
//! batch row. It computes two ways ([`Kernels`]): the reference arithmetic (general GEMMs, the
//! C library's activations, one thread), which the fast driver (`fast.rs`) is tested against
//! (`tests/drivers.rs`); and the fast one, which the library runs for LSTMs with projections
//! (`proj_size > 0`, which the fast driver does not handle), in every precision: the fast
//! driver's vectorised LSTM passes, the per-step products on packed panels (int8: the packed
//! int8 product), the time loop split by batch rows over the threads.

use super::cache::{active, stale_copy};
use super::fast::{self, Raw};
use super::products::{input_projection, input_projection_int8, quant_scratch, weight_grads};
use super::{gru, lstm, rnn, CellKind, DirBackward, DirCache, DirForward, LayerInput};
use crate::ops::int8::{QuantMatrix, QuantScratch};
use crate::ops::panel::{pack_gates_t, pack_n, panel_gemm, panels, NR};
use crate::ops::{add_assign, as_f32, as_f32_mut, gemm, Float, Trans};

/// How the driver computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    /// General GEMMs per step and the C library's activations one value at a time: the
    /// reference the fast driver is tested against (`tests/drivers.rs`).
    Reference,
    /// The fast driver's pieces, which the library runs LSTMs with projections on: the per-step
    /// products (recurrent and projection, float32 and bf16) on the packed kernel (`ops::panel`)
    /// with the weights packed once per pass (once while they are fixed), the LSTM's
    /// element-wise passes vectorised (its polynomial activations; other cells as the
    /// reference).
    Fast,
}

/// Forward over the whole sequence, as [`super::forward`]: the arguments are [`DirForward`]'s;
/// computed as the reference ([`Kernels::Reference`]).
pub fn forward<F: Float>(cache: &mut DirCache<F>, args: DirForward<F>) {
    forward_with(cache, args, Kernels::Reference)
}

/// [`forward`] computed with `pass`.
pub fn forward_with<F: Float>(cache: &mut DirCache<F>, args: DirForward<F>, pass: Kernels) {
    let DirForward {
        weights: w,
        input,
        lengths,
        h0,
        c0,
        y,
        ldy,
        h_n,
        c_n,
    } = args;
    let d = cache.dims;
    let (nt, nb, nh, np) = (d.t, d.b, d.h, d.p);
    let gh = d.gh();
    let c = cache;
    // bf16: every state rounded as written (the products then multiply bf16 values, the input
    // and the weights being rounded by the model); int8: the products in int8 (`ops::int8::QuantMatrix`)
    let bf16 = c.precision == crate::Precision::Bf16;
    let int8 = c.precision == crate::Precision::Int8;
    let simd = crate::ops::panel::has_avx512();
    // the fast LSTM pass takes b_hh per gate: zeros when the layer has none
    let no_bias = vec![F::ZERO; if w.b_hh.is_none() { gh } else { 0 }];
    let b_hh = w.b_hh.unwrap_or(&no_bias);

    match input {
        // F is f32 in int8 mode (DirCache::set_precision): the casts are identities
        LayerInput::Dense { x, ld } if int8 => {
            input_projection_int8(c, w, x, ld);
            if let Some(b_ih) = w.b_ih {
                for row in c.xw[..nt * nb * gh].chunks_exact_mut(gh) {
                    add_assign(row, &b_ih[..gh]);
                }
            }
        }
        _ => input_projection(c, w, input, true),
    }
    // the per-step products on packed panels: W_hh^T (K = P, N = G*H) and W_hr^T (K = H, N =
    // P), the columns in order (one block of G*H), so the products land in hw and hnew as the
    // GEMMs would write them
    let packed = pass == Kernels::Fast && !int8;
    if packed {
        let fixed = c.fixed_weights;
        let n = panels(gh) * np * NR;
        if stale_copy(&mut c.wpack, n, &mut c.packed_hh, fixed, w.w_hh) {
            pack_gates_t(&mut c.wpack[..n], w.w_hh, 1, gh, np);
        }
        if let Some(w_hr) = w.w_hr {
            let n = panels(np) * nh * NR;
            if stale_copy(&mut c.rpack, n, &mut c.packed_hr, fixed, w_hr) {
                pack_gates_t(&mut c.rpack[..n], w_hr, 1, np, nh);
            }
        }
    }
    if int8 {
        let fixed = c.fixed_weights;
        c.q_hh
            .prepare(as_f32(w.w_hh), d.kind.gates(), nh, np, fixed);
        if let Some(w_hr) = w.w_hr {
            c.q_hr.prepare(as_f32(w_hr), 1, np, nh, fixed);
        }
    }

    match h0 {
        Some(h0) => c.h.copy_from_slice(&h0[..nb * np]),
        None => c.h.fill(F::ZERO),
    }
    if bf16 {
        crate::ops::bf16::round_float(&mut c.h[..]);
    }
    if d.kind == CellKind::Lstm {
        match c0 {
            Some(c0) => c.c.copy_from_slice(&c0[..nb * nh]),
            None => c.c.fill(F::ZERO),
        }
    }

    // The time loop over batch rows: a part runs its own sequences through every step (a row's
    // recurrence never reads another row), so the parts need no synchronisation. With the fast
    // kernels the rows are split over the threads (int8: each part with its own products'
    // scratch); the reference runs one part.
    let parts = if pass == Kernels::Fast {
        row_parts(nb)
    } else {
        1
    };
    let scratch = Raw::of(quant_scratch(
        &mut c.q_scratch,
        if int8 { parts } else { 0 },
    ));
    let wlen = if packed { panels(gh) * np * NR } else { 0 };
    let rlen = if packed && d.proj() {
        panels(np) * nh * NR
    } else {
        0
    };
    let step = FwdStep {
        d,
        w,
        b_hh,
        lengths,
        pass,
        simd,
        bf16,
        xw: Raw::of(&mut c.xw),
        gates: Raw::of(&mut c.gates),
        cell: Raw::of(&mut c.cell),
        hpre: Raw::of(&mut c.hpre),
        hprev: Raw::of(&mut c.hprev),
        cprev: Raw::of(&mut c.cprev),
        hw: Raw::of(&mut c.hw),
        h: Raw::of(&mut c.h),
        c: Raw::of(&mut c.c),
        hnew: Raw::of(&mut c.hnew),
        hn: Raw::of(&mut c.hn),
        y: Raw::of(y),
        ldy,
        wpack: &c.wpack[..wlen],
        rpack: &c.rpack[..rlen],
        q8: int8.then_some((&c.q_hh, &c.q_hr)),
        scratch,
    };
    // SAFETY: the parts' rows are disjoint and part k alone uses scratch slot k (int8: `parts`
    // slots); the buffers are this cache's
    in_row_parts(nb, parts, &|k, b0, b1| unsafe {
        forward_rows(&step, k, b0, b1)
    });
    h_n[..nb * np].copy_from_slice(&c.h);
    if d.kind == CellKind::Lstm {
        c_n[..nb * nh].copy_from_slice(&c.c);
    }
}

/// Rows per part at least, when the time loop is split by batch rows: fewer leave the packed
/// product's row tiles mostly empty.
const MIN_ROWS_PER_PART: usize = 4;

/// Parts of `nb` batch rows for the threads.
fn row_parts(nb: usize) -> usize {
    crate::ops::gemm::threads()
        .min(nb / MIN_ROWS_PER_PART)
        .clamp(1, crate::ops::team::MAX_PARTS)
}

/// Runs `f(k, b0, b1)` for `parts` consecutive ranges of the `nb` batch rows (`k`: the part),
/// concurrently on the fast driver's team (`ops::team`, one step); one part on this thread.
fn in_row_parts(nb: usize, parts: usize, f: &(dyn Fn(usize, usize, usize) + Sync)) {
    if parts == 1 {
        return f(0, 0, nb);
    }
    let per = nb.div_ceil(parts);
    crate::ops::team::for_steps(parts, 1, &|_, k| {
        let b0 = k * per;
        if b0 < nb {
            f(k, b0, (b0 + per).min(nb));
        }
    });
}

/// What the forward's time loop reads and writes: the cache's buffers as raw pointers (each part
/// makes slices of its own rows only), the weights and the settings.
struct FwdStep<'a, F> {
    d: super::DirDims,
    w: &'a super::DirWeights<'a, F>,
    b_hh: &'a [F],
    lengths: Option<&'a [usize]>,
    pass: Kernels,
    simd: bool,
    bf16: bool,
    xw: Raw<F>,
    gates: Raw<F>,
    cell: Raw<F>,
    hpre: Raw<F>,
    hprev: Raw<F>,
    cprev: Raw<F>,
    hw: Raw<F>,
    h: Raw<F>,
    c: Raw<F>,
    hnew: Raw<F>,
    hn: Raw<F>,
    y: Raw<F>,
    ldy: usize,
    wpack: &'a [F],
    rpack: &'a [F],
    /// int8: W_hh and W_hr quantized, and one scratch slot per part for their products
    q8: Option<(&'a QuantMatrix, &'a QuantMatrix)>,
    scratch: Raw<QuantScratch>,
}

/// The forward's time loop for batch rows `b0..b1`, part `part` of the loop.
///
/// # Safety
/// No other part works on rows `b0..b1` or (int8) on scratch slot `part` meanwhile; `k`'s
/// pointers are the buffers of a cache of `k.d`'s dimensions, and `y` holds T*B rows at
/// stride `ldy`.
unsafe fn forward_rows<F: Float>(k: &FwdStep<F>, part: usize, b0: usize, b1: usize) {
    let d = k.d;
    let (nt, nb, nh, np) = (d.t, d.b, d.h, d.p);
    let gh = d.gh();
    let m = b1 - b0;
    let (lstm, proj) = (d.kind == CellKind::Lstm, d.proj());
    // SAFETY (whole body): every slice below is of rows b0..b1 (of the state, or of step t),
    // inside the buffers (the caller's contract), and lives only while no other slice of the
    // same elements does; the scratch slot is this part's.
    unsafe {
        let mut q8 =
            k.q8.map(|(q_hh, q_hr)| (q_hh, q_hr, &mut k.scratch.mut_at(part, 1)[0]));
        for s in 0..nt {
            let t = if d.reverse { nt - 1 - s } else { s };
            let tb = t * nb;
            let h = k.h.mut_at(b0 * np, m * np);
            k.hprev.mut_at((tb + b0) * np, m * np).copy_from_slice(h);
            if lstm {
                let c = k.c.at(b0 * nh, m * nh);
                k.cprev.mut_at((tb + b0) * nh, m * nh).copy_from_slice(c);
            }
            // hw = h_{t-1} W_hh^T: (rows, P) x (P, G*H)
            let hw = k.hw.mut_at(b0 * gh, m * gh);
            match q8 {
                Some((q_hh, _, ref mut s)) => q_hh.product(as_f32(h), m, np, as_f32_mut(hw), gh, s),
                None if k.pass == Kernels::Fast => {
                    panel_gemm(m, np, h, np, k.wpack, 0..panels(gh), hw, gh, gh)
                }
                None => gemm(
                    Trans::N,
                    Trans::T,
                    m,
                    gh,
                    np,
                    F::ONE,
                    h,
                    np,
                    k.w.w_hh,
                    np,
                    F::ZERO,
                    hw,
                    gh,
                ),
            }
            for b in b0..b1 {
                if !active(k.lengths, t, b) {
                    continue;
                }
                let r = tb + b;
                let xw = k.xw.at(r * gh, gh);
                let hw = k.hw.at(b * gh, gh);
                let gates = k.gates.mut_at(r * gh, gh);
                match d.kind {
                    CellKind::Rnn(act) => {
                        rnn::forward_row(act, xw, hw, k.w.b_hh, gates);
                        k.h.mut_at(b * nh, nh).copy_from_slice(gates);
                    }
                    CellKind::Lstm => {
                        let cell = k.cell.mut_at(r * nh, nh);
                        // hpre is kept per step only for the projection's backward; else a
                        // scratch row
                        let hpre = if proj {
                            k.hpre.mut_at(r * nh, nh)
                        } else {
                            k.hnew.mut_at(b * nh, nh)
                        };
                        let c_prev = k.c.mut_at(b * nh, nh);
                        if k.pass == Kernels::Fast {
                            let (gi, rest) = gates.split_at_mut(nh);
                            let (gf, rest) = rest.split_at_mut(nh);
                            let (gg, go) = rest.split_at_mut(nh);
                            let (x, bb, hh) = (xw, k.b_hh, hw);
                            fast::lstm_fwd(
                                k.simd,
                                &x[..nh],
                                &x[nh..2 * nh],
                                &x[2 * nh..3 * nh],
                                &x[3 * nh..4 * nh],
                                &bb[..nh],
                                &bb[nh..2 * nh],
                                &bb[2 * nh..3 * nh],
                                &bb[3 * nh..4 * nh],
                                &hh[..nh],
                                &hh[nh..2 * nh],
                                &hh[2 * nh..3 * nh],
                                &hh[3 * nh..4 * nh],
                                c_prev,
                                gi,
                                gf,
                                gg,
                                go,
                                cell,
                                hpre,
                            );
                        } else {
                            lstm::forward_row(xw, hw, k.w.b_hh, c_prev, gates, cell, hpre);
                        }
                        c_prev.copy_from_slice(cell);
                        if !proj {
                            k.h.mut_at(b * nh, nh).copy_from_slice(hpre);
                        }
                    }
                    CellKind::Gru => {
                        let hprev = k.hprev.at(r * nh, nh);
                        let hn = k.hn.mut_at(r * nh, nh);
                        let h = k.h.mut_at(b * nh, nh);
                        gru::forward_row(xw, hw, k.w.b_hh, hprev, gates, hn, h);
                    }
                }
            }
            if k.bf16 {
                // the new states as bf16 values before anything reads them (for a projection,
                // o * tanh(c_t): the product below multiplies it)
                let states = if proj {
                    k.hpre.mut_at((tb + b0) * nh, m * nh)
                } else {
                    k.h.mut_at(b0 * np, m * np)
                };
                crate::ops::bf16::round_float(states);
            }
            if proj {
                // h_t = (o * tanh(c_t)) W_hr^T: (rows, H) x (H, P)
                let w_hr = k.w.w_hr.expect("LSTM with projection needs weight_hr");
                let hpre = k.hpre.at((tb + b0) * nh, m * nh);
                let hnew = k.hnew.mut_at(b0 * np, m * np);
                match q8 {
                    Some((_, q_hr, ref mut s)) => {
                        q_hr.product(as_f32(hpre), m, nh, as_f32_mut(hnew), np, s)
                    }
                    None if k.pass == Kernels::Fast => {
                        panel_gemm(m, nh, hpre, nh, k.rpack, 0..panels(np), hnew, np, np)
                    }
                    None => gemm(
                        Trans::N,
                        Trans::T,
                        m,
                        np,
                        nh,
                        F::ONE,
                        hpre,
                        nh,
                        w_hr,
                        nh,
                        F::ZERO,
                        hnew,
                        np,
                    ),
                }
                if k.bf16 {
                    crate::ops::bf16::round_float(hnew);
                }
                for b in b0..b1 {
                    if active(k.lengths, t, b) {
                        let row = &hnew[(b - b0) * np..(b - b0 + 1) * np];
                        k.h.mut_at(b * np, np).copy_from_slice(row);
                    }
                }
            }
            for b in b0..b1 {
                let out = k.y.mut_at((tb + b) * k.ldy, np);
                if active(k.lengths, t, b) {
                    out.copy_from_slice(k.h.at(b * np, np));
                } else {
                    out.fill(F::ZERO);
                }
            }
        }
    }
}

/// Backward (BPTT) over the whole sequence, as [`super::backward`], after [`forward`] on the same
/// cache and input: the arguments are [`DirBackward`]'s.
pub fn backward<F: Float>(cache: &mut DirCache<F>, args: DirBackward<F>) {
    backward_with(cache, args, Kernels::Reference)
}

/// [`backward`] after [`forward_with`], computed with `pass`.
pub fn backward_with<F: Float>(cache: &mut DirCache<F>, args: DirBackward<F>, pass: Kernels) {
    let DirBackward {
        weights: w,
        mut grads,
        input,
        lengths,
        dy,
        dh_n,
        dc_n,
        dx,
        dh0,
        dc0,
    } = args;
    let d = cache.dims;
    let (nb, nh, np) = (d.b, d.h, d.p);
    let gh = d.gh();
    let c = cache;
    let is_lstm = d.kind == CellKind::Lstm;
    let bf16 = c.precision == crate::Precision::Bf16;
    let simd = crate::ops::panel::has_avx512();
    // the per-step products on packed panels: W_hh (K = G*H, N = P) and W_hr (K = P, N = H),
    // packed at every backward (the forward's packs forgotten)
    let packed = pass == Kernels::Fast;
    if packed {
        pack_n(&mut c.wpack[..panels(np) * gh * NR], w.w_hh, gh, np);
        if let Some(w_hr) = w.w_hr {
            pack_n(&mut c.rpack[..panels(nh) * np * NR], w_hr, np, nh);
        }
        c.packed_hh = 0;
        c.packed_hr = 0;
    }

    match dh_n {
        Some(v) => c.dh_next.copy_from_slice(&v[..nb * np]),
        None => c.dh_next.fill(F::ZERO),
    }
    if is_lstm {
        match dc_n {
            Some(v) => c.dc.copy_from_slice(&v[..nb * nh]),
            None => c.dc.fill(F::ZERO),
        }
    }

    // the time loop over batch rows, split as the forward's (see there)
    let parts = if packed { row_parts(nb) } else { 1 };
    let wlen = if packed { panels(np) * gh * NR } else { 0 };
    let rlen = if packed && d.proj() {
        panels(nh) * np * NR
    } else {
        0
    };
    let step = BwdStep {
        d,
        w,
        lengths,
        pass,
        simd,
        bf16,
        dy,
        xw: Raw::of(&mut c.xw),
        gates: Raw::of(&mut c.gates),
        cell: Raw::of(&mut c.cell),
        cprev: Raw::of(&mut c.cprev),
        hprev: Raw::of(&mut c.hprev),
        hn: Raw::of(&mut c.hn),
        dgh: Raw::of(&mut c.dgh),
        direct: Raw::of(&mut c.direct),
        dh: Raw::of(&mut c.dh),
        dh_next: Raw::of(&mut c.dh_next),
        dhp: Raw::of(&mut c.dhp),
        dhpre: Raw::of(&mut c.dhpre),
        dc: Raw::of(&mut c.dc),
        wpack: &c.wpack[..wlen],
        rpack: &c.rpack[..rlen],
    };
    // SAFETY: the parts' rows are disjoint; the buffers are this cache's
    in_row_parts(nb, parts, &|_, b0, b1| unsafe {
        backward_rows(&step, b0, b1)
    });
    dh0[..nb * np].copy_from_slice(&c.dh_next);
    if is_lstm {
        dc0[..nb * nh].copy_from_slice(&c.dc);
    }

    weight_grads(c, w, &mut grads, input, dx, false);
}

/// What the backward's time loop reads and writes, as [`FwdStep`] for the forward.
struct BwdStep<'a, F> {
    d: super::DirDims,
    w: &'a super::DirWeights<'a, F>,
    lengths: Option<&'a [usize]>,
    pass: Kernels,
    simd: bool,
    bf16: bool,
    dy: Option<(&'a [F], usize)>,
    xw: Raw<F>,
    gates: Raw<F>,
    cell: Raw<F>,
    cprev: Raw<F>,
    hprev: Raw<F>,
    hn: Raw<F>,
    dgh: Raw<F>,
    direct: Raw<F>,
    dh: Raw<F>,
    dh_next: Raw<F>,
    dhp: Raw<F>,
    dhpre: Raw<F>,
    dc: Raw<F>,
    wpack: &'a [F],
    rpack: &'a [F],
}

/// The backward's time loop for batch rows `b0..b1`.
///
/// # Safety
/// As [`forward_rows`].
unsafe fn backward_rows<F: Float>(k: &BwdStep<F>, b0: usize, b1: usize) {
    let d = k.d;
    let (nt, nb, nh, np) = (d.t, d.b, d.h, d.p);
    let gh = d.gh();
    let m = b1 - b0;
    let (is_lstm, is_gru, proj) = (d.kind == CellKind::Lstm, d.kind == CellKind::Gru, d.proj());
    // SAFETY (whole body): as in forward_rows, every slice is of rows b0..b1.
    unsafe {
        for s in (0..nt).rev() {
            let t = if d.reverse { nt - 1 - s } else { s };
            let tb = t * nb;
            // dh = dL/dh_t: from the step after (dh_next) plus from this step's output (dy)
            for b in b0..b1 {
                let dh = k.dh.mut_at(b * np, np);
                dh.copy_from_slice(k.dh_next.at(b * np, np));
                if let (Some((dy, ldy)), true) = (k.dy, active(k.lengths, t, b)) {
                    let r = (tb + b) * ldy;
                    for (a, &v) in dh.iter_mut().zip(&dy[r..r + np]) {
                        *a += v;
                    }
                }
            }
            if proj {
                // forward was: h_t = hpre W_hr^T; keep dh_t for dW_hr, then dhpre = dh_t W_hr
                let dhp = k.dhp.mut_at((tb + b0) * np, m * np);
                for b in b0..b1 {
                    let row = &mut dhp[(b - b0) * np..(b - b0 + 1) * np];
                    if active(k.lengths, t, b) {
                        row.copy_from_slice(k.dh.at(b * np, np));
                    } else {
                        row.fill(F::ZERO);
                    }
                }
                if k.bf16 {
                    // dh_t enters two products (dhpre here, dW_hr after the loop)
                    crate::ops::bf16::round_float(dhp);
                }
                let w_hr = k.w.w_hr.expect("LSTM with projection needs weight_hr");
                let dhpre = k.dhpre.mut_at(b0 * nh, m * nh);
                if k.pass == Kernels::Fast {
                    panel_gemm(m, np, dhp, np, k.rpack, 0..panels(nh), dhpre, nh, nh);
                } else {
                    gemm(
                        Trans::N,
                        Trans::N,
                        m,
                        nh,
                        np,
                        F::ONE,
                        dhp,
                        np,
                        w_hr,
                        nh,
                        F::ZERO,
                        dhpre,
                        nh,
                    );
                }
            } else if is_lstm {
                k.dhpre
                    .mut_at(b0 * nh, m * nh)
                    .copy_from_slice(k.dh.at(b0 * np, m * np));
            }
            for b in b0..b1 {
                let r = tb + b;
                let dg = k.xw.mut_at(r * gh, gh);
                if !active(k.lengths, t, b) {
                    dg.fill(F::ZERO);
                    if is_gru {
                        k.dgh.mut_at(r * gh, gh).fill(F::ZERO);
                    }
                    continue;
                }
                let gates = k.gates.at(r * gh, gh);
                match d.kind {
                    CellKind::Rnn(act) => {
                        rnn::backward_row(act, gates, k.dh.at(b * nh, nh), dg);
                    }
                    CellKind::Lstm => {
                        let c_prev = k.cprev.at(r * nh, nh);
                        let cell = k.cell.at(r * nh, nh);
                        let dhpre = k.dhpre.at(b * nh, nh);
                        let dc = k.dc.mut_at(b * nh, nh);
                        if k.pass == Kernels::Fast {
                            let q = |g: usize| &gates[g * nh..(g + 1) * nh];
                            let (di, rest) = dg.split_at_mut(nh);
                            let (df, rest) = rest.split_at_mut(nh);
                            let (dgg, d_o) = rest.split_at_mut(nh);
                            fast::lstm_bwd(
                                k.simd,
                                q(0),
                                q(1),
                                q(2),
                                q(3),
                                c_prev,
                                cell,
                                dhpre,
                                dc,
                                di,
                                df,
                                dgg,
                                d_o,
                            );
                        } else {
                            lstm::backward_row(gates, c_prev, cell, dhpre, dc, dg);
                        }
                    }
                    CellKind::Gru => gru::backward_row(
                        gates,
                        k.hn.at(r * nh, nh),
                        k.hprev.at(r * nh, nh),
                        k.dh.at(b * nh, nh),
                        dg,
                        k.dgh.mut_at(r * gh, gh),
                        k.direct.mut_at(b * nh, nh),
                    ),
                }
            }
            if k.bf16 {
                // the gates' gradients as bf16 values before the products they enter (here and
                // the weight gradients after the loop)
                crate::ops::bf16::round_float(k.xw.mut_at((tb + b0) * gh, m * gh));
                if is_gru {
                    crate::ops::bf16::round_float(k.dgh.mut_at((tb + b0) * gh, m * gh));
                }
            }
            // dh_{t-1} = dGh_t W_hh: (rows, G*H) x (G*H, P), plus the direct paths
            let dgh_t = if is_gru {
                k.dgh.at((tb + b0) * gh, m * gh)
            } else {
                k.xw.at((tb + b0) * gh, m * gh)
            };
            let dh_next = k.dh_next.mut_at(b0 * np, m * np);
            if k.pass == Kernels::Fast {
                panel_gemm(m, gh, dgh_t, gh, k.wpack, 0..panels(np), dh_next, np, np);
            } else {
                gemm(
                    Trans::N,
                    Trans::N,
                    m,
                    np,
                    gh,
                    F::ONE,
                    dgh_t,
                    gh,
                    k.w.w_hh,
                    np,
                    F::ZERO,
                    dh_next,
                    np,
                );
            }
            for b in b0..b1 {
                let dn = &mut dh_next[(b - b0) * np..(b - b0 + 1) * np];
                if !active(k.lengths, t, b) {
                    // the state was carried unchanged: so is its gradient
                    dn.copy_from_slice(k.dh.at(b * np, np));
                } else if is_gru {
                    // forward was: h = (1 - z) * n + z * h_prev
                    for (a, &v) in dn.iter_mut().zip(k.direct.at(b * nh, nh)) {
                        *a += v;
                    }
                }
            }
        }
    }
}
