//! The GRU cell, element-wise part (PyTorch's equations, gate order r, z, n):
//!
//! ```text
//! r = sigmoid(x W_ir^T + b_ir + h_{t-1} W_hr^T + b_hr)
//! z = sigmoid(x W_iz^T + b_iz + h_{t-1} W_hz^T + b_hz)
//! n = tanh(x W_in^T + b_in + r * (h_{t-1} W_hn^T + b_hn))
//! h_t = (1 - z) * n + z * h_{t-1}
//! ```
//!
//! The reset gate multiplies `(W_hn h + b_hn)`, so the recurrent side's n-part is kept apart
//! (`hn`), and its gradient differs from the input side's (`dgh` vs `dgx`).

use crate::ops::Float;

/// Forward, one row. `xw` holds `x W_ih^T + b_ih` (3H), `hw` holds `h_{t-1} W_hh^T` (3H).
/// Writes the activated gates r, z, n (3H), `hn = W_hn h_{t-1} + b_hn` (H) and the new `h` (H).
#[inline]
pub fn forward_row<F: Float>(
    xw: &[F],
    hw: &[F],
    b_hh: Option<&[F]>,
    h_prev: &[F],
    gates: &mut [F],
    hn: &mut [F],
    h: &mut [F],
) {
    let nh = h.len();
    let bias = |j: usize| b_hh.map_or(F::ZERO, |b| b[j]);
    for j in 0..nh {
        let r = (xw[j] + hw[j] + bias(j)).sigmoid();
        let z = (xw[nh + j] + hw[nh + j] + bias(nh + j)).sigmoid();
        let hnj = hw[2 * nh + j] + bias(2 * nh + j);
        let n = (xw[2 * nh + j] + r * hnj).tanh();
        gates[j] = r;
        gates[nh + j] = z;
        gates[2 * nh + j] = n;
        hn[j] = hnj;
        h[j] = (F::ONE - z) * n + z * h_prev[j];
    }
}

/// Backward, one row. `dh` is dL/dh_t. Writes dL/d(input-side pre-activations) into `dgx` (3H),
/// dL/d(recurrent-side pre-activations) into `dgh` (3H), and the direct part of dL/dh_{t-1}
/// (the path through `z * h_{t-1}`) into `dh_prev` (H).
#[inline]
pub fn backward_row<F: Float>(
    gates: &[F],
    hn: &[F],
    h_prev: &[F],
    dh: &[F],
    dgx: &mut [F],
    dgh: &mut [F],
    dh_prev: &mut [F],
) {
    let nh = hn.len();
    for j in 0..nh {
        let (r, z, n) = (gates[j], gates[nh + j], gates[2 * nh + j]);
        // forward was: h = (1 - z) * n + z * h_prev
        let dn = dh[j] * (F::ONE - z);
        let dz = dh[j] * (h_prev[j] - n);
        dh_prev[j] = dh[j] * z;
        // forward was: n = tanh(xn + r * hn); backprop through tanh
        let dnp = dn * (F::ONE - n * n);
        let dr = dnp * hn[j];
        // backprop through the sigmoids
        let drp = dr * r * (F::ONE - r);
        let dzp = dz * z * (F::ONE - z);
        dgx[j] = drp;
        dgx[nh + j] = dzp;
        dgx[2 * nh + j] = dnp;
        dgh[j] = drp;
        dgh[nh + j] = dzp;
        dgh[2 * nh + j] = dnp * r;
    }
}

/// Forward over a run of units of one row (the fast driver). `x*` hold each gate's `x W_ih^T`,
/// `b*` its bias (`b_ih + b_hh` for r and z, `b_in` for n), `h*` its `h_{t-1} W_hh^T`, `bhn` is
/// `b_hn`. Writes the gates, `hn = W_hn h_{t-1} + b_hn` and the new `h`. All slices have one
/// length.
#[inline(always)]
pub fn forward_units<F: Float>(
    xr: &[F],
    xz: &[F],
    xn: &[F],
    br: &[F],
    bz: &[F],
    bn: &[F],
    hr: &[F],
    hz: &[F],
    hh: &[F],
    bhn: &[F],
    h_prev: &[F],
    gr: &mut [F],
    gz: &mut [F],
    gn: &mut [F],
    hn: &mut [F],
    h: &mut [F],
) {
    let n = h.len();
    let (xr, xz, xn) = (&xr[..n], &xz[..n], &xn[..n]);
    let (br, bz, bn) = (&br[..n], &bz[..n], &bn[..n]);
    let (hr, hz, hh) = (&hr[..n], &hz[..n], &hh[..n]);
    let (gr, gz, gn) = (&mut gr[..n], &mut gz[..n], &mut gn[..n]);
    let (bhn, h_prev, hn) = (&bhn[..n], &h_prev[..n], &mut hn[..n]);
    for j in 0..n {
        let r = (xr[j] + br[j] + hr[j]).sigmoid_act();
        let z = (xz[j] + bz[j] + hz[j]).sigmoid_act();
        let hnj = hh[j] + bhn[j];
        let nn = (xn[j] + bn[j] + r * hnj).tanh_act();
        gr[j] = r;
        gz[j] = z;
        gn[j] = nn;
        hn[j] = hnj;
        // h_t = (1 - z) * n + z * h_{t-1}
        h[j] = (F::ONE - z) * nn + z * h_prev[j];
    }
}

/// Backward over a run of units of one row (the fast driver); [`backward_row`] per gate.
#[inline(always)]
pub fn backward_units<F: Float>(
    r: &[F],
    z: &[F],
    nn: &[F],
    hn: &[F],
    h_prev: &[F],
    dh: &[F],
    dxr: &mut [F],
    dxz: &mut [F],
    dxn: &mut [F],
    dhr: &mut [F],
    dhz: &mut [F],
    dhn: &mut [F],
    dh_prev: &mut [F],
) {
    let n = dh_prev.len();
    let (r, z, nn) = (&r[..n], &z[..n], &nn[..n]);
    let (dxr, dxz, dxn) = (&mut dxr[..n], &mut dxz[..n], &mut dxn[..n]);
    let (dhr, dhz, dhn) = (&mut dhr[..n], &mut dhz[..n], &mut dhn[..n]);
    let (hn, h_prev, dh) = (&hn[..n], &h_prev[..n], &dh[..n]);
    for j in 0..n {
        // forward was: h = (1 - z) * n + z * h_prev
        let dn = dh[j] * (F::ONE - z[j]);
        let dz = dh[j] * (h_prev[j] - nn[j]);
        dh_prev[j] = dh[j] * z[j];
        // forward was: n = tanh(xn + r * hn); backprop through tanh
        let dnp = dn * (F::ONE - nn[j] * nn[j]);
        let dr = dnp * hn[j];
        // backprop through the sigmoids
        let drp = dr * r[j] * (F::ONE - r[j]);
        let dzp = dz * z[j] * (F::ONE - z[j]);
        dxr[j] = drp;
        dxz[j] = dzp;
        dxn[j] = dnp;
        dhr[j] = drp;
        dhz[j] = dzp;
        dhn[j] = dnp * r[j];
    }
}
