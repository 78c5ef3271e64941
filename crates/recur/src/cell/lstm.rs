//! The LSTM cell, element-wise part (PyTorch's equations, gate order i, f, g, o):
//!
//! ```text
//! [i, f, g, o] = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh     (4H pre-activations)
//! i = sigmoid(i), f = sigmoid(f), g = tanh(g), o = sigmoid(o)
//! c_t = f * c_{t-1} + i * g
//! h_t = o * tanh(c_t)                     (then h_t = h_t W_hr^T when proj_size > 0)
//! ```
//!
//! The matrix products, and the projection, are done by the sequence drivers (`cell/fast.rs`,
//! `cell/simple.rs`, and `cell/products.rs` for what they share).

use crate::ops::Float;

/// Forward, one row. `xw` holds `x W_ih^T + b_ih` (4H), `hw` holds `h_{t-1} W_hh^T` (4H).
/// Writes the activated gates (4H), the new cell state `c` and `hpre = o * tanh(c)` (H each).
#[inline]
pub fn forward_row<F: Float>(
    xw: &[F],
    hw: &[F],
    b_hh: Option<&[F]>,
    c_prev: &[F],
    gates: &mut [F],
    c: &mut [F],
    hpre: &mut [F],
) {
    let h = c.len();
    for j in 0..4 * h {
        let mut a = xw[j] + hw[j];
        if let Some(b) = b_hh {
            a += b[j];
        }
        gates[j] = if (2 * h..3 * h).contains(&j) {
            a.tanh()
        } else {
            a.sigmoid()
        };
    }
    let (i, rest) = gates.split_at(h);
    let (f, rest) = rest.split_at(h);
    let (g, o) = rest.split_at(h);
    for j in 0..h {
        c[j] = f[j] * c_prev[j] + i[j] * g[j];
        hpre[j] = o[j] * c[j].tanh();
    }
}

/// Backward, one row. `dhpre` is dL/d(o * tanh(c)) at this step; `dc` comes in as dL/dc_t from
/// the step after and leaves as dL/dc_{t-1}. Writes dL/d(pre-activations) into `dg` (4H).
#[inline]
pub fn backward_row<F: Float>(
    gates: &[F],
    c_prev: &[F],
    c: &[F],
    dhpre: &[F],
    dc: &mut [F],
    dg: &mut [F],
) {
    // The same chain rule as the fast driver's, on the row's gates split per gate, with the tanh
    // this driver's forward used (the C library's)
    let h = c.len();
    let (i, rest) = gates.split_at(h);
    let (f, rest) = rest.split_at(h);
    let (g, o) = rest.split_at(h);
    let (di, rest) = dg.split_at_mut(h);
    let (df, rest) = rest.split_at_mut(h);
    let (dgg, d_o) = rest.split_at_mut(h);
    backward_units_with(F::tanh, i, f, g, o, c_prev, c, dhpre, dc, di, df, dgg, d_o);
}

/// Forward over a run of units of one row (the fast driver). `x*` hold each gate's `x W_ih^T`,
/// `b*` its `b_ih + b_hh`, `h*` its `h_{t-1} W_hh^T`, for the units of the run; writes the
/// activated gates, the new cell state `c` and `h = o * tanh(c)`. All slices have one length.
/// (Each slice is its own argument, so that the compiler knows that they do not overlap and
/// vectorises the loop.)
#[inline(always)]
pub fn forward_units<F: Float>(
    xi: &[F],
    xf: &[F],
    xg: &[F],
    xo: &[F],
    bi: &[F],
    bf: &[F],
    bg: &[F],
    bo: &[F],
    hi: &[F],
    hf: &[F],
    hg: &[F],
    ho: &[F],
    c_prev: &[F],
    gi: &mut [F],
    gf: &mut [F],
    gg: &mut [F],
    go: &mut [F],
    c: &mut [F],
    h: &mut [F],
) {
    let n = h.len();
    let (xi, xf, xg, xo) = (&xi[..n], &xf[..n], &xg[..n], &xo[..n]);
    let (bi, bf, bg, bo) = (&bi[..n], &bf[..n], &bg[..n], &bo[..n]);
    let (hi, hf, hg, ho) = (&hi[..n], &hf[..n], &hg[..n], &ho[..n]);
    let (gi, gf, gg, go) = (&mut gi[..n], &mut gf[..n], &mut gg[..n], &mut go[..n]);
    let (c_prev, c) = (&c_prev[..n], &mut c[..n]);
    for j in 0..n {
        let i = (xi[j] + bi[j] + hi[j]).sigmoid_act();
        let f = (xf[j] + bf[j] + hf[j]).sigmoid_act();
        let g = (xg[j] + bg[j] + hg[j]).tanh_act();
        let o = (xo[j] + bo[j] + ho[j]).sigmoid_act();
        // c_t = f * c_{t-1} + i * g; h_t = o * tanh(c_t)
        let cn = f * c_prev[j] + i * g;
        gi[j] = i;
        gf[j] = f;
        gg[j] = g;
        go[j] = o;
        c[j] = cn;
        h[j] = o * cn.tanh_act();
    }
}

/// Backward over a run of units of one row (the fast driver); same as [`backward_row`] with the
/// gates and their gradients given per gate. `dc` comes in as dL/dc_t, leaves as dL/dc_{t-1}.
#[inline(always)]
pub fn backward_units<F: Float>(
    i: &[F],
    f: &[F],
    g: &[F],
    o: &[F],
    c_prev: &[F],
    c: &[F],
    dh: &[F],
    dc: &mut [F],
    di: &mut [F],
    df: &mut [F],
    dgg: &mut [F],
    d_o: &mut [F],
) {
    backward_units_with(F::tanh_act, i, f, g, o, c_prev, c, dh, dc, di, df, dgg, d_o)
}

/// [`backward_units`] with the tanh that recomputes `tanh(c_t)` given: the forward's own.
#[inline(always)]
pub fn backward_units_with<F: Float>(
    tanh: impl Fn(F) -> F,
    i: &[F],
    f: &[F],
    g: &[F],
    o: &[F],
    c_prev: &[F],
    c: &[F],
    dh: &[F],
    dc: &mut [F],
    di: &mut [F],
    df: &mut [F],
    dgg: &mut [F],
    d_o: &mut [F],
) {
    let n = dc.len();
    let (i, f, g, o) = (&i[..n], &f[..n], &g[..n], &o[..n]);
    let (di, df, dgg, d_o) = (&mut di[..n], &mut df[..n], &mut dgg[..n], &mut d_o[..n]);
    let (c_prev, c, dh) = (&c_prev[..n], &c[..n], &dh[..n]);
    for j in 0..n {
        let tc = tanh(c[j]);
        // forward was: h = o * tanh(c)
        let dob = dh[j] * tc;
        let dcj = dc[j] + dh[j] * o[j] * (F::ONE - tc * tc);
        // forward was: c = f * c_prev + i * g
        let dib = dcj * g[j];
        let dgb = dcj * i[j];
        let dfb = dcj * c_prev[j];
        dc[j] = dcj * f[j];
        // backprop through the gate non-linearities (sigmoid' = s(1-s), tanh' = 1-t^2)
        di[j] = dib * i[j] * (F::ONE - i[j]);
        df[j] = dfb * f[j] * (F::ONE - f[j]);
        dgg[j] = dgb * (F::ONE - g[j] * g[j]);
        d_o[j] = dob * o[j] * (F::ONE - o[j]);
    }
}
