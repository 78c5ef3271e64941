//! The LSTM cell, element-wise part (PyTorch's equations, gate order i, f, g, o):
//!
//! ```text
//! [i, f, g, o] = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh     (4H pre-activations)
//! i = sigmoid(i), f = sigmoid(f), g = tanh(g), o = sigmoid(o)
//! c_t = f * c_{t-1} + i * g
//! h_t = o * tanh(c_t)                     (then h_t = h_t W_hr^T when proj_size > 0)
//! ```
//!
//! The matrix products, and the projection, are done by the sequence driver in `cell/mod.rs`.

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
    let h = c.len();
    let (i, rest) = gates.split_at(h);
    let (f, rest) = rest.split_at(h);
    let (g, o) = rest.split_at(h);
    let (di, rest) = dg.split_at_mut(h);
    let (df, rest) = rest.split_at_mut(h);
    let (dgg, d_o) = rest.split_at_mut(h);
    for j in 0..h {
        let tc = c[j].tanh();
        // forward was: hpre = o * tanh(c)
        let dob = dhpre[j] * tc;
        let dcj = dc[j] + dhpre[j] * o[j] * (F::ONE - tc * tc);
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
