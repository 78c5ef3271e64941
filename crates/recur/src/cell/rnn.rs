//! The Elman RNN cell, element-wise part: `h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`.
//!
//! The two matrix products are done by the sequence drivers (`cell/fast.rs`, `cell/simple.rs`,
//! and `cell/products.rs` for what they share): one GEMM for the input side over all steps, one
//! per step for the recurrent side; this file holds only the fused element-wise pass of one batch
//! row at one step, forward and backward.

use crate::ops::Float;

/// The non-linearity of an Elman RNN (PyTorch's `nonlinearity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Tanh,
    Relu,
}

/// Forward, one row: `h = act(xw + hw + b_hh)`, where `xw` already holds `x W_ih^T + b_ih`.
#[inline]
pub fn forward_row<F: Float>(act: Activation, xw: &[F], hw: &[F], b_hh: Option<&[F]>, h: &mut [F]) {
    let n = h.len();
    for j in 0..n {
        let mut a = xw[j] + hw[j];
        if let Some(b) = b_hh {
            a += b[j];
        }
        h[j] = match act {
            Activation::Tanh => a.tanh(),
            Activation::Relu => a.max(F::ZERO),
        };
    }
}

/// Backward, one row: `dg = dh * act'(a)`, written in terms of the output `h = act(a)`.
#[inline]
pub fn backward_row<F: Float>(act: Activation, h: &[F], dh: &[F], dg: &mut [F]) {
    for j in 0..h.len() {
        // forward was: h = act(a)
        dg[j] = match act {
            // backprop through tanh: tanh'(a) = 1 - h^2
            Activation::Tanh => dh[j] * (F::ONE - h[j] * h[j]),
            // backprop through relu: 1 where the unit was on (PyTorch takes relu'(0) = 0)
            Activation::Relu => {
                if h[j] > F::ZERO {
                    dh[j]
                } else {
                    F::ZERO
                }
            }
        };
    }
}

/// Forward over a run of units of one row (the fast driver): `h = act(x + b + hw)`, where `x`
/// holds `x W_ih^T` and `b` is `b_ih + b_hh`. All slices have the same length.
#[inline(always)]
pub fn forward_units<F: Float>(act: Activation, x: &[F], b: &[F], hw: &[F], h: &mut [F]) {
    let n = h.len();
    let (x, b, hw) = (&x[..n], &b[..n], &hw[..n]);
    match act {
        Activation::Tanh => {
            for j in 0..n {
                h[j] = (x[j] + b[j] + hw[j]).tanh_act();
            }
        }
        Activation::Relu => {
            for j in 0..n {
                h[j] = (x[j] + b[j] + hw[j]).max(F::ZERO);
            }
        }
    }
}

/// Backward over a run of units of one row: `dg = dh * act'`, in terms of the output `h`.
#[inline(always)]
pub fn backward_units<F: Float>(act: Activation, h: &[F], dh: &[F], dg: &mut [F]) {
    let n = dg.len();
    let (h, dh) = (&h[..n], &dh[..n]);
    match act {
        // backprop through tanh: tanh'(a) = 1 - h^2
        Activation::Tanh => {
            for j in 0..n {
                dg[j] = dh[j] * (F::ONE - h[j] * h[j]);
            }
        }
        // backprop through relu: 1 where the unit was on
        Activation::Relu => {
            for j in 0..n {
                dg[j] = if h[j] > F::ZERO { dh[j] } else { F::ZERO };
            }
        }
    }
}
