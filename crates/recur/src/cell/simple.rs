//! The simple sequence driver: one general GEMM per step and a scalar element-wise pass per
//! batch row, on one thread. It serves LSTMs with projections (`proj_size > 0`), which the fast
//! driver (`fast.rs`) does not handle, and it is the reference the fast driver is tested against
//! (`tests/drivers.rs`).

use super::cache::active;
use super::products::{input_projection, weight_grads};
use super::{gru, lstm, rnn, CellKind, DirBackward, DirCache, DirForward};
use crate::ops::{gemm, Float, Trans};

/// Forward over the whole sequence, as [`super::forward`]: the arguments are [`DirForward`]'s.
pub fn forward<F: Float>(cache: &mut DirCache<F>, args: DirForward<F>) {
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

    input_projection(c, w, input, true);

    match h0 {
        Some(h0) => c.h.copy_from_slice(&h0[..nb * np]),
        None => c.h.fill(F::ZERO),
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
                    lstm::forward_row(
                        xw,
                        hw,
                        w.b_hh,
                        &c.c[b * nh..(b + 1) * nh],
                        gates,
                        cell,
                        hpre,
                    );
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
        if d.proj() {
            // h_t = (o * tanh(c_t)) W_hr^T: (B, H) x (H, P)
            let w_hr = w.w_hr.expect("LSTM with projection needs weight_hr");
            gemm(
                Trans::N,
                Trans::T,
                nb,
                np,
                nh,
                F::ONE,
                &c.hpre[tb * nh..(tb + nb) * nh],
                nh,
                w_hr,
                nh,
                F::ZERO,
                &mut c.hnew,
                np,
            );
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
            let w_hr = w.w_hr.expect("LSTM with projection needs weight_hr");
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
                CellKind::Lstm => lstm::backward_row(
                    gates,
                    &c.cprev[r * nh..(r + 1) * nh],
                    &c.cell[r * nh..(r + 1) * nh],
                    &c.dhpre[b * nh..(b + 1) * nh],
                    &mut c.dc[b * nh..(b + 1) * nh],
                    dg,
                ),
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
        // dh_{t-1} = dGh_t W_hh: (B, G*H) x (G*H, P), plus the direct paths
        let dgh_t = if is_gru {
            &c.dgh[tb * gh..(tb + nb) * gh]
        } else {
            &c.xw[tb * gh..(tb + nb) * gh]
        };
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
