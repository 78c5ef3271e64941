//! The simple sequence driver: one general GEMM per step (int8: the packed int8 product) and a
//! scalar element-wise pass per batch row, on one thread. It serves LSTMs with projections
//! (`proj_size > 0`), which the fast driver (`fast.rs`) does not handle, in every precision,
//! and it is the reference the fast driver is tested against (`tests/drivers.rs`).

use super::cache::{active, stale_copy};
use super::products::{input_projection, input_projection_int8, weight_grads};
use super::{fast, gru, lstm, rnn, CellKind, DirBackward, DirCache, DirForward, LayerInput};
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

    for s in 0..nt {
        let t = if d.reverse { nt - 1 - s } else { s };
        let tb = t * nb;
        c.hprev[tb * np..(tb + nb) * np].copy_from_slice(&c.h);
        if d.kind == CellKind::Lstm {
            c.cprev[tb * nh..(tb + nb) * nh].copy_from_slice(&c.c);
        }
        // hw = h_{t-1} W_hh^T: (B, P) x (P, G*H)
        if int8 {
            c.q_hh
                .product(as_f32(&c.h), nb, np, as_f32_mut(&mut c.hw), gh);
        } else if packed {
            let n = panels(gh) * np * NR;
            panel_gemm(
                nb,
                np,
                &c.h,
                np,
                &c.wpack[..n],
                0..panels(gh),
                &mut c.hw,
                gh,
                gh,
            );
        } else {
            gemm(
                Trans::N,
                Trans::T,
                nb,
                gh,
                np,
                F::ONE,
                &c.h,
                np,
                w.w_hh,
                np,
                F::ZERO,
                &mut c.hw,
                gh,
            );
        }
        for b in 0..nb {
            if !active(lengths, t, b) {
                continue;
            }
            let r = tb + b;
            let xw = &c.xw[r * gh..(r + 1) * gh];
            let hw = &c.hw[b * gh..(b + 1) * gh];
            let gates = &mut c.gates[r * gh..(r + 1) * gh];
            match d.kind {
                CellKind::Rnn(act) => {
                    rnn::forward_row(act, xw, hw, w.b_hh, gates);
                    c.h[b * nh..(b + 1) * nh].copy_from_slice(gates);
                }
                CellKind::Lstm => {
                    let cell = &mut c.cell[r * nh..(r + 1) * nh];
                    // hpre is kept per step only for the projection's backward; else a scratch row
                    let hpre = if d.proj() {
                        &mut c.hpre[r * nh..(r + 1) * nh]
                    } else {
                        &mut c.hnew[b * nh..(b + 1) * nh]
                    };
                    let c_prev = &c.c[b * nh..(b + 1) * nh];
                    if pass == Kernels::Fast {
                        let (gi, rest) = gates.split_at_mut(nh);
                        let (gf, rest) = rest.split_at_mut(nh);
                        let (gg, go) = rest.split_at_mut(nh);
                        fn q<F>(v: &[F], k: usize, n: usize) -> &[F] {
                            &v[k * n..(k + 1) * n]
                        }
                        fast::lstm_fwd(
                            simd,
                            q(xw, 0, nh),
                            q(xw, 1, nh),
                            q(xw, 2, nh),
                            q(xw, 3, nh),
                            q(b_hh, 0, nh),
                            q(b_hh, 1, nh),
                            q(b_hh, 2, nh),
                            q(b_hh, 3, nh),
                            q(hw, 0, nh),
                            q(hw, 1, nh),
                            q(hw, 2, nh),
                            q(hw, 3, nh),
                            c_prev,
                            gi,
                            gf,
                            gg,
                            go,
                            cell,
                            hpre,
                        );
                    } else {
                        lstm::forward_row(xw, hw, w.b_hh, c_prev, gates, cell, hpre);
                    }
                    c.c[b * nh..(b + 1) * nh].copy_from_slice(cell);
                    if !d.proj() {
                        c.h[b * nh..(b + 1) * nh].copy_from_slice(hpre);
                    }
                }
                CellKind::Gru => {
                    let hprev = &c.hprev[r * nh..(r + 1) * nh];
                    let hn = &mut c.hn[r * nh..(r + 1) * nh];
                    gru::forward_row(
                        xw,
                        hw,
                        w.b_hh,
                        hprev,
                        gates,
                        hn,
                        &mut c.h[b * nh..(b + 1) * nh],
                    );
                }
            }
        }
        if bf16 {
            // the new states as bf16 values before anything reads them (for a projection,
            // o * tanh(c_t): the product below multiplies it)
            let states = if d.proj() {
                &mut c.hpre[tb * nh..(tb + nb) * nh]
            } else {
                &mut c.h[..]
            };
            crate::ops::bf16::round_float(states);
        }
        if d.proj() {
            // h_t = (o * tanh(c_t)) W_hr^T: (B, H) x (H, P)
            let w_hr = w.w_hr.expect("LSTM with projection needs weight_hr");
            let hpre = &c.hpre[tb * nh..(tb + nb) * nh];
            if int8 {
                c.q_hr
                    .product(as_f32(hpre), nb, nh, as_f32_mut(&mut c.hnew), np);
            } else if packed {
                let n = panels(np) * nh * NR;
                panel_gemm(
                    nb,
                    nh,
                    hpre,
                    nh,
                    &c.rpack[..n],
                    0..panels(np),
                    &mut c.hnew,
                    np,
                    np,
                );
            } else {
                gemm(
                    Trans::N,
                    Trans::T,
                    nb,
                    np,
                    nh,
                    F::ONE,
                    hpre,
                    nh,
                    w_hr,
                    nh,
                    F::ZERO,
                    &mut c.hnew,
                    np,
                );
            }
            if bf16 {
                crate::ops::bf16::round_float(&mut c.hnew[..nb * np]);
            }
            for b in 0..nb {
                if active(lengths, t, b) {
                    c.h[b * np..(b + 1) * np].copy_from_slice(&c.hnew[b * np..(b + 1) * np]);
                }
            }
        }
        for b in 0..nb {
            let out = &mut y[(tb + b) * ldy..(tb + b) * ldy + np];
            if active(lengths, t, b) {
                out.copy_from_slice(&c.h[b * np..(b + 1) * np]);
            } else {
                out.fill(F::ZERO);
            }
        }
    }
    h_n[..nb * np].copy_from_slice(&c.h);
    if d.kind == CellKind::Lstm {
        c_n[..nb * nh].copy_from_slice(&c.c);
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
    let (nt, nb, nh, np) = (d.t, d.b, d.h, d.p);
    let gh = d.gh();
    let c = cache;
    let is_lstm = d.kind == CellKind::Lstm;
    let is_gru = d.kind == CellKind::Gru;
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

    for s in (0..nt).rev() {
        let t = if d.reverse { nt - 1 - s } else { s };
        let tb = t * nb;
        // dh = dL/dh_t: from the step after (dh_next) plus from this step's output (dy)
        for b in 0..nb {
            let dh = &mut c.dh[b * np..(b + 1) * np];
            dh.copy_from_slice(&c.dh_next[b * np..(b + 1) * np]);
            if let (Some((dy, ldy)), true) = (dy, active(lengths, t, b)) {
                let r = (tb + b) * ldy;
                for (a, &v) in dh.iter_mut().zip(&dy[r..r + np]) {
                    *a += v;
                }
            }
        }
        if d.proj() {
            // forward was: h_t = hpre W_hr^T; keep dh_t for dW_hr, then dhpre = dh_t W_hr
            let dhp = &mut c.dhp[tb * np..(tb + nb) * np];
            for b in 0..nb {
                let row = &mut dhp[b * np..(b + 1) * np];
                if active(lengths, t, b) {
                    row.copy_from_slice(&c.dh[b * np..(b + 1) * np]);
                } else {
                    row.fill(F::ZERO);
                }
            }
            if bf16 {
                // dh_t enters two products (dhpre here, dW_hr after the loop)
                crate::ops::bf16::round_float(dhp);
            }
            let w_hr = w.w_hr.expect("LSTM with projection needs weight_hr");
            if packed {
                let n = panels(nh) * np * NR;
                panel_gemm(
                    nb,
                    np,
                    dhp,
                    np,
                    &c.rpack[..n],
                    0..panels(nh),
                    &mut c.dhpre,
                    nh,
                    nh,
                );
            } else {
                gemm(
                    Trans::N,
                    Trans::N,
                    nb,
                    nh,
                    np,
                    F::ONE,
                    dhp,
                    np,
                    w_hr,
                    nh,
                    F::ZERO,
                    &mut c.dhpre,
                    nh,
                );
            }
        } else if is_lstm {
            c.dhpre.copy_from_slice(&c.dh);
        }
        for b in 0..nb {
            let r = tb + b;
            let dg = &mut c.xw[r * gh..(r + 1) * gh];
            if !active(lengths, t, b) {
                dg.fill(F::ZERO);
                if is_gru {
                    c.dgh[r * gh..(r + 1) * gh].fill(F::ZERO);
                }
                continue;
            }
            let gates = &c.gates[r * gh..(r + 1) * gh];
            match d.kind {
                CellKind::Rnn(act) => {
                    rnn::backward_row(act, gates, &c.dh[b * nh..(b + 1) * nh], dg);
                }
                CellKind::Lstm => {
                    let c_prev = &c.cprev[r * nh..(r + 1) * nh];
                    let cell = &c.cell[r * nh..(r + 1) * nh];
                    let dhpre = &c.dhpre[b * nh..(b + 1) * nh];
                    let dc = &mut c.dc[b * nh..(b + 1) * nh];
                    if pass == Kernels::Fast {
                        let q = |k: usize| &gates[k * nh..(k + 1) * nh];
                        let (di, rest) = dg.split_at_mut(nh);
                        let (df, rest) = rest.split_at_mut(nh);
                        let (dgg, d_o) = rest.split_at_mut(nh);
                        fast::lstm_bwd(
                            simd,
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
                    &c.hn[r * nh..(r + 1) * nh],
                    &c.hprev[r * nh..(r + 1) * nh],
                    &c.dh[b * nh..(b + 1) * nh],
                    dg,
                    &mut c.dgh[r * gh..(r + 1) * gh],
                    &mut c.direct[b * nh..(b + 1) * nh],
                ),
            }
        }
        if bf16 {
            // the gates' gradients as bf16 values before the products they enter (here and the
            // weight gradients after the loop)
            crate::ops::bf16::round_float(&mut c.xw[tb * gh..(tb + nb) * gh]);
            if is_gru {
                crate::ops::bf16::round_float(&mut c.dgh[tb * gh..(tb + nb) * gh]);
            }
        }
        // dh_{t-1} = dGh_t W_hh: (B, G*H) x (G*H, P), plus the direct paths
        let dgh_t = if is_gru {
            &c.dgh[tb * gh..(tb + nb) * gh]
        } else {
            &c.xw[tb * gh..(tb + nb) * gh]
        };
        if packed {
            let n = panels(np) * gh * NR;
            panel_gemm(
                nb,
                gh,
                dgh_t,
                gh,
                &c.wpack[..n],
                0..panels(np),
                &mut c.dh_next,
                np,
                np,
            );
        } else {
            gemm(
                Trans::N,
                Trans::N,
                nb,
                np,
                gh,
                F::ONE,
                dgh_t,
                gh,
                w.w_hh,
                np,
                F::ZERO,
                &mut c.dh_next,
                np,
            );
        }
        for b in 0..nb {
            let dn = &mut c.dh_next[b * np..(b + 1) * np];
            if !active(lengths, t, b) {
                // the state was carried unchanged: so is its gradient
                dn.copy_from_slice(&c.dh[b * np..(b + 1) * np]);
            } else if is_gru {
                // forward was: h = (1 - z) * n + z * h_prev
                for (a, &v) in dn.iter_mut().zip(&c.direct[b * nh..(b + 1) * nh]) {
                    *a += v;
                }
            }
        }
    }
    dh0[..nb * np].copy_from_slice(&c.dh_next);
    if is_lstm {
        dc0[..nb * nh].copy_from_slice(&c.dc);
    }

    weight_grads(c, w, &mut grads, input, dx, false);
}
