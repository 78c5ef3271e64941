//! [`DirCache`], the workspace of one direction: the activations the forward pass saves for
//! the backward pass, the backward pass's scratch, and the packed copies of the weights; plus
//! the small helpers the drivers use on it.

use super::{CellKind, DirDims};
use crate::ops::panel::{panels, NR};
use crate::ops::Float;

/// Activations saved by the forward pass of one direction, and the backward pass's scratch.
/// Sized once from [`DirDims`]; reused across calls with the same dims.
pub struct DirCache<F> {
    pub dims: DirDims,
    /// Whether forward keeps every step's gates and states for backward (the default). Off
    /// (inference), the fast driver writes them into one step's rows and two alternating state
    /// slots, which halves the memory traffic of a step's element-wise pass.
    pub keep: bool,
    // whether the weights stay the same from one forward to the next (`set_fixed_weights`):
    // forward then packs a weight matrix only when it comes from another address than last
    // time (the text generator holds them borrowed for its whole life); backward always
    // repacks (and forgets the forward's packs)
    pub(crate) fixed_weights: bool,
    // the addresses of the W_hh, W_ih the packed copies (wpack, wipack, wt) were made from, while
    // fixed_weights is on (0: none)
    pub(super) packed_hh: usize,
    pub(super) packed_ih: usize,
    pub(super) packed_wt: usize,
    // xw: (T, B, G*H) input projection x_t W_ih^T + b_ih
    pub(super) xw: Vec<F>,
    // gates: (T, B, G*H) activated gates (RNN: the new h itself)
    pub(super) gates: Vec<F>,
    // hn: (T, B, H) GRU only: W_hn h_{t-1} + b_hn
    pub(super) hn: Vec<F>,
    // hprev: (T, B, P) the state entering step t
    pub(super) hprev: Vec<F>,
    // cprev, cell: (T, B, H) LSTM only: c_{t-1} and c_t
    pub(super) cprev: Vec<F>,
    pub(super) cell: Vec<F>,
    // hpre: (T, B, H) LSTM with projection only: o * tanh(c), before the projection
    pub(super) hpre: Vec<F>,
    // hw: (B, G*Hp) per-step recurrent product, each gate padded to Hp = whole panels (the
    // simple driver uses the first B*G*H elements as (B, G*H))
    pub(super) hw: Vec<F>,
    // wpack: W_hh packed into column panels (ops::panel): forward as W_hh^T per gate,
    // backward as W_hh; one buffer, repacked at the start of each pass
    pub(super) wpack: Vec<F>,
    // wipack: W_ih^T packed per gate like wpack, and xc: (C, B, G*Hp) the input product of the
    // C steps of one chunk; both for the fast driver's per-chunk input product (sized when it
    // first runs, empty otherwise)
    pub(super) wipack: Vec<F>,
    pub(super) xc: Vec<F>,
    // wt: (I, G*H) W_ih^T, for the input product of large layers and one-hot input's gather;
    // one-hot input's backward uses it as scratch for its per-symbol sums (sized when first used)
    pub(super) wt: Vec<F>,
    // dgt: (G*H, T*B) dG transposed, written by the fast driver's backward step by step for
    // the weight gradients (sized when first used)
    pub(super) dgt: Vec<F>,
    // dbias: (G*H) scratch for the bias gradients' column sums
    pub(super) dbias: Vec<F>,
    // bias: (G*H) the biases the fast driver's gate pass adds: b_ih + b_hh (GRU n gate: b_in
    // only), zeros without biases; bhn: (H) GRU only: b_hn, or zeros
    pub(super) bias: Vec<F>,
    pub(super) bhn: Vec<F>,
    // h, c: (B, P), (B, H) running state; hnew: (B, P) projection output
    pub(super) h: Vec<F>,
    pub(super) c: Vec<F>,
    pub(super) hnew: Vec<F>,
    // backward: the input-side gate gradients dG (T, B, G*H) are written over `xw`, which the
    // backward pass no longer needs; dgh (T, B, G*H) GRU recurrent side
    pub(super) dgh: Vec<F>,
    // dhp: (T, B, P) LSTM projection: dL/dh_t after the projection
    pub(super) dhp: Vec<F>,
    // dh, dh_next: (B, P); dc: (B, H); dhpre: (B, H); direct: (B, H) GRU's z * dh path
    pub(super) dh: Vec<F>,
    pub(super) dh_next: Vec<F>,
    pub(super) dc: Vec<F>,
    pub(super) dhpre: Vec<F>,
    pub(super) direct: Vec<F>,
}

impl<F: Float> DirCache<F> {
    pub fn new(dims: DirDims) -> Self {
        let DirDims { t, b, h, p, .. } = dims;
        let gh = dims.gh();
        let lstm = dims.kind == CellKind::Lstm;
        let gru = dims.kind == CellKind::Gru;
        let z = |n: usize| vec![F::ZERO; n];
        DirCache {
            dims,
            keep: true,
            fixed_weights: false,
            packed_hh: 0,
            packed_ih: 0,
            packed_wt: 0,
            xw: z(t * b * gh),
            gates: z(t * b * gh),
            hn: z(if gru { t * b * h } else { 0 }),
            hprev: z(t * b * p),
            cprev: z(if lstm { t * b * h } else { 0 }),
            cell: z(if lstm { t * b * h } else { 0 }),
            hpre: z(if dims.proj() { t * b * h } else { 0 }),
            hw: z(b * dims.kind.gates() * panels(h) * NR),
            wpack: z((dims.kind.gates() * panels(h) * p).max(panels(p) * gh) * NR),
            wipack: Vec::new(),
            xc: Vec::new(),
            dgt: Vec::new(),
            wt: Vec::new(),
            dbias: z(gh),
            bias: z(gh),
            bhn: z(if gru { h } else { 0 }),
            h: z(b * p),
            c: z(if lstm { b * h } else { 0 }),
            hnew: z(b * p),
            dgh: z(if gru { t * b * gh } else { 0 }),
            dhp: z(if dims.proj() { t * b * p } else { 0 }),
            dh: z(b * p),
            dh_next: z(b * p),
            dc: z(if lstm { b * h } else { 0 }),
            dhpre: z(if lstm { b * h } else { 0 }),
            direct: z(if gru { b * h } else { 0 }),
        }
    }

    /// Fixed weights on or off (off by default): while on, forward packs (or transposes) each
    /// weight matrix once and reuses the copy for as long as it is given the same matrix, and the
    /// caller guarantees that nothing writes to the weights meanwhile. Either way the packed
    /// copies made so far are forgotten.
    pub fn set_fixed_weights(&mut self, on: bool) {
        self.fixed_weights = on;
        self.packed_hh = 0;
        self.packed_ih = 0;
        self.packed_wt = 0;
    }

    /// Bytes held by this cache.
    pub fn bytes(&self) -> usize {
        let n = self.xw.len()
            + self.gates.len()
            + self.hn.len()
            + self.hprev.len()
            + self.cprev.len()
            + self.cell.len()
            + self.hpre.len()
            + self.hw.len()
            + self.wpack.len()
            + self.wipack.len()
            + self.xc.len()
            + self.bias.len()
            + self.dbias.len()
            + self.dgt.len()
            + self.wt.len()
            + self.bhn.len()
            + self.h.len()
            + self.c.len()
            + self.hnew.len()
            + self.dgh.len()
            + self.dhp.len()
            + self.dh.len()
            + self.dh_next.len()
            + self.dc.len()
            + self.dhpre.len()
            + self.direct.len();
        n * std::mem::size_of::<F>()
    }
}

#[inline]
pub(crate) fn active(lengths: Option<&[usize]>, t: usize, b: usize) -> bool {
    lengths.is_none_or(|l| t < l[b])
}

/// Grows `buf` to at least `n` elements (zeroed); whether it had to.
pub(crate) fn grow<F: Float>(buf: &mut Vec<F>, n: usize) -> bool {
    let short = buf.len() < n;
    if short {
        *buf = vec![F::ZERO; n];
    }
    short
}

/// Makes `buf` hold at least `n` elements for a packed (or transposed) copy of `w`, and says
/// whether the copy must be made: always, unless the weights are fixed
/// ([`DirCache::set_fixed_weights`]) and `buf` still holds the copy made from this same `w`, whose
/// address `slot` records.
pub(crate) fn stale_copy<F: Float>(
    buf: &mut Vec<F>,
    n: usize,
    slot: &mut usize,
    fixed: bool,
    w: &[F],
) -> bool {
    if grow(buf, n) {
        *slot = 0;
    }
    let key = w.as_ptr() as usize;
    let stale = !(fixed && *slot == key);
    *slot = if fixed { key } else { 0 };
    stale
}
