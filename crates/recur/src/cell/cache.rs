//! [`DirCache`], the workspace of one direction: the activations the forward pass saves for
//! the backward pass, the backward pass's scratch, and the packed copies of the weights; plus
//! the small helpers the drivers use on it.

use super::{CellKind, DirDims};
use crate::ops::aligned::AVec;
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
    // the number format of the forward (`set_precision`). bf16: the forward rounds every state
    // h to bf16 as it writes it and may pack W_hh^T as bf16 pairs (`ops::bf16`) into wpack16.
    // int8: W_hh^T quantized per row and packed in quads (`ops::int8`) into wpack8, with its
    // rows' scales and code sums in packed column order (wscale, wsum, G*Hp); each step's state
    // quantized per row by every part for itself (hq: parts x B x padded(H) codes, hrq: their
    // scales), the int32 product in acc (B, G*Hp)
    pub(crate) precision: crate::Precision,
    pub(super) wpack16: AVec<u16>,
    pub(super) wpack8: AVec<i8>,
    pub(super) wscale: Vec<f32>,
    pub(super) wsum: Vec<i32>,
    pub(super) hq: AVec<u8>,
    pub(super) hrq: AVec<crate::ops::int8::RowQuant>,
    pub(super) acc: AVec<i32>,
    pub(super) packed_hh8: usize,
    // int8, dense input: W_ih quantized and packed (q_ih); empty until first used
    pub(super) q_ih: crate::ops::int8::QuantMatrix,
    // the address of the W_hh wpack16 was packed from (as packed_hh)
    pub(super) packed_hh16: usize,
    // bf16 on AMX tiles, dense input: W_ih^T as bf16 panels (`ops::bf16`), sized when first
    // used, and the address it was packed from
    pub(super) wipack16: AVec<u16>,
    pub(super) packed_ih16: usize,
    // int8 in the simple driver (LSTMs with projections): W_hh and W_hr quantized and packed;
    // empty until first used
    pub(super) q_hh: crate::ops::int8::QuantMatrix,
    pub(super) q_hr: crate::ops::int8::QuantMatrix,
    // the scratch of the int8 products above (codes and int32 sums), one per part of a split
    // product or time loop; grown when first used
    pub(super) q_scratch: Vec<crate::ops::int8::QuantScratch>,
    // xw: (T, B, G*H) input projection x_t W_ih^T + b_ih
    pub(super) xw: AVec<F>,
    // gates: (T, B, G*H) activated gates (RNN: the new h itself)
    pub(super) gates: AVec<F>,
    // hn: (T, B, H) GRU only: W_hn h_{t-1} + b_hn
    pub(super) hn: AVec<F>,
    // hprev: (T, B, P) the state entering step t
    pub(super) hprev: AVec<F>,
    // cprev, cell: (T, B, H) LSTM only: c_{t-1} and c_t
    pub(super) cprev: AVec<F>,
    pub(super) cell: AVec<F>,
    // hpre: (T, B, H) LSTM with projection only: o * tanh(c), before the projection
    pub(super) hpre: AVec<F>,
    // hw: (B, G*Hp) per-step recurrent product, each gate padded to Hp = whole panels (the
    // simple driver uses the first B*G*H elements as (B, G*H))
    pub(super) hw: AVec<F>,
    // wpack: W_hh packed into column panels (ops::panel): forward as W_hh^T per gate,
    // backward as W_hh; one buffer, repacked at the start of each pass
    pub(super) wpack: AVec<F>,
    // wipack: W_ih^T packed per gate like wpack, and xc: (C, B, G*Hp) the input product of the
    // C steps of one chunk; both for the fast driver's per-chunk input product (sized when it
    // first runs, empty otherwise)
    pub(super) wipack: AVec<F>,
    pub(super) xc: AVec<F>,
    // rpack: an LSTM projection's W_hr packed for the simple driver's per-step product with
    // packed weights (forward as W_hr^T, backward as W_hr; wpack holds W_hh the same way), and
    // the address it was packed from while the weights are fixed
    pub(super) rpack: AVec<F>,
    pub(super) packed_hr: usize,
    // wt: (I, G*H) W_ih^T, for the input product of large layers and one-hot input's gather;
    // one-hot input's backward uses it as scratch for its per-symbol sums (sized when first used)
    pub(super) wt: AVec<F>,
    // dgt: (G*H, T*B) dG transposed, written by the fast driver's backward step by step for
    // the weight gradients (sized when first used)
    pub(super) dgt: AVec<F>,
    // dgt16: the same dG^T as bf16 bits instead, where bf16 training's products run on
    // `vdpbf16ps` (which reads A's rows as pairs of bf16: no conversion of A per product); row
    // stride `products::dgt16_ld` (sized when first used; `dgt` then stays empty)
    pub(super) dgt16: AVec<u16>,
    // dbias: (G*H) scratch for the bias gradients' column sums
    pub(super) dbias: AVec<F>,
    // bias: (G*H) the biases the fast driver's gate pass adds: b_ih + b_hh (GRU n gate: b_in
    // only), zeros without biases; bhn: (H) GRU only: b_hn, or zeros
    pub(super) bias: AVec<F>,
    pub(super) bhn: AVec<F>,
    // h, c: (B, P), (B, H) running state; hnew: (B, P) projection output
    pub(super) h: AVec<F>,
    pub(super) c: AVec<F>,
    pub(super) hnew: AVec<F>,
    // backward: the input-side gate gradients dG (T, B, G*H) are written over `xw`, which the
    // backward pass no longer needs; dgh (T, B, G*H) GRU recurrent side
    pub(super) dgh: AVec<F>,
    // dhp: (T, B, P) LSTM projection: dL/dh_t after the projection
    pub(super) dhp: AVec<F>,
    // dh, dh_next: (B, P); dc: (B, H); dhpre: (B, H); direct: (B, H) GRU's z * dh path
    pub(super) dh: AVec<F>,
    pub(super) dh_next: AVec<F>,
    pub(super) dc: AVec<F>,
    pub(super) dhpre: AVec<F>,
    pub(super) direct: AVec<F>,
}

impl<F: Float> DirCache<F> {
    /// A cache for `dims`, its eager buffers at the lengths of [`CacheSizes::of`].
    pub fn new(dims: DirDims) -> Self {
        let s = CacheSizes::of(&dims);
        let z = |n: u128| AVec::zeroed(n as usize);
        DirCache {
            dims,
            keep: true,
            fixed_weights: false,
            packed_hh: 0,
            packed_ih: 0,
            packed_wt: 0,
            precision: crate::Precision::F32,
            wpack16: AVec::new(),
            wpack8: AVec::new(),
            wscale: Vec::new(),
            wsum: Vec::new(),
            hq: AVec::new(),
            hrq: AVec::new(),
            acc: AVec::new(),
            packed_hh8: 0,
            q_ih: Default::default(),
            wipack16: AVec::new(),
            packed_ih16: 0,
            q_hh: Default::default(),
            q_hr: Default::default(),
            q_scratch: Vec::new(),
            packed_hh16: 0,
            xw: z(s.xw),
            gates: z(s.gates),
            hn: z(s.hn),
            hprev: z(s.hprev),
            cprev: z(s.cprev),
            cell: z(s.cell),
            hpre: z(s.hpre),
            hw: z(s.hw),
            wpack: z(s.wpack),
            wipack: AVec::new(),
            xc: AVec::new(),
            rpack: z(s.rpack),
            packed_hr: 0,
            dgt: AVec::new(),
            dgt16: AVec::new(),
            wt: AVec::new(),
            dbias: z(s.dbias),
            bias: z(s.bias),
            bhn: z(s.bhn),
            h: z(s.h),
            c: z(s.c),
            hnew: z(s.hnew),
            dgh: z(s.dgh),
            dhp: z(s.dhp),
            dh: z(s.dh),
            dh_next: z(s.dh_next),
            dc: z(s.dc),
            dhpre: z(s.dhpre),
            direct: z(s.direct),
        }
    }

    /// Fixed weights on or off (off by default): while on, forward packs (or transposes) each
    /// weight matrix once and reuses the copy for as long as it is given the same matrix, and the
    /// caller guarantees that nothing writes to the weights meanwhile. Either way the packed
    /// copies made so far are forgotten.
    pub fn set_fixed_weights(&mut self, on: bool) {
        self.fixed_weights = on;
        self.packed_hh = 0;
        self.packed_hh16 = 0;
        self.packed_hh8 = 0;
        self.packed_ih16 = 0;
        self.packed_ih = 0;
        self.packed_wt = 0;
        self.packed_hr = 0;
        self.q_ih.forget();
        self.q_hh.forget();
        self.q_hr.forget();
    }

    /// The number format (float32 by default; the others on float32 caches only; int8 for
    /// inference only, bf16 for training too, where the backward rounds the gates' gradients to
    /// bf16 as it writes them). With an LSTM projection, `o * tanh(c)` is an operand of the
    /// projection's product, so it is rounded (bf16) or quantized (int8) as a state is, and in
    /// bf16 training so is the gradient of the projected h, which enters two products. bf16: the recurrent product reads
    /// `W_hh` as bf16 values (packed in half the bytes where that pays), and every state h is
    /// rounded to bf16 as it is written (the outputs, the final state, what the next step
    /// multiplies); the other weights and the layer's input must already hold bf16 values. int8:
    /// the recurrent product multiplies W_hh quantized per row by each step's state quantized
    /// per row (`crate::ops::int8`), in int32; the other weights must already hold their int8
    /// values dequantized. Gates and the LSTM's cell state stay float32 in both.
    /// `crate::precision` prepares the weights. Either way the packed copies made so far are
    /// forgotten.
    pub fn set_precision(&mut self, p: crate::Precision) {
        assert!(
            p == crate::Precision::F32
                || std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>(),
            "{p} runs on float32 caches only"
        );
        self.precision = p;
        self.set_fixed_weights(self.fixed_weights);
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
            + self.rpack.len()
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
            + (self.wpack16.len() + self.wipack16.len() + self.dgt16.len()) * 2
            + self.wpack8.len()
            + (self.wscale.len() + self.wsum.len() + self.acc.len()) * 4
            + self.hq.len()
            + self.hrq.len() * std::mem::size_of::<crate::ops::int8::RowQuant>()
            + self.q_ih.bytes()
            + self.q_hh.bytes()
            + self.q_hr.bytes()
            + self.q_scratch.iter().map(|s| s.bytes()).sum::<usize>()
    }
}

/// The length, in elements, of every buffer of a [`DirCache`] at some [`DirDims`]: the one place
/// that knows them. [`DirCache::new`] allocates the eager ones; the fast driver grows the lazy ones
/// (`wipack`, `xc`, `wt`, `dgt`) to at most these lengths when it first needs them; the memory
/// estimates ([`crate::memory`]) add them up. Counted in u128, so that a plan too large for the
/// machine is measured before anything is allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSizes {
    pub xw: u128,
    pub gates: u128,
    pub hn: u128,
    pub hprev: u128,
    pub cprev: u128,
    pub cell: u128,
    pub hpre: u128,
    pub hw: u128,
    pub wpack: u128,
    /// An LSTM projection's W_hr packed (the simple driver).
    pub rpack: u128,
    pub dbias: u128,
    pub bias: u128,
    pub bhn: u128,
    pub h: u128,
    pub c: u128,
    pub hnew: u128,
    pub dgh: u128,
    pub dhp: u128,
    pub dh: u128,
    pub dh_next: u128,
    pub dc: u128,
    pub dhpre: u128,
    pub direct: u128,
    /// Lazy: the packed W_ih^T of the chunked input product.
    pub wipack: u128,
    /// Lazy: one chunk of the input product, at its longest (all T steps).
    pub xc: u128,
    /// Lazy: W_ih^T (and one-hot input's backward scratch).
    pub wt: u128,
    /// Lazy: dG transposed, rows padded ([`dgt_len`]); in bf16 on `vdpbf16ps` kept as bf16
    /// (`dgt16`) instead, in fewer bytes.
    pub dgt: u128,
}

/// The chunk buffer `xc` for chunks of `steps` steps.
pub(crate) fn xc_len(d: &DirDims, steps: usize) -> usize {
    steps * d.b * d.kind.gates() * panels(d.h) * NR
}

/// The packed W_ih^T `wipack`.
pub(crate) fn wipack_len(d: &DirDims) -> usize {
    d.kind.gates() * panels(d.h) * d.i * NR
}

/// dG transposed, `dgt`: (G*H) rows of T*B, the row stride padded off multiples of 256
/// ([`super::products::dgt_ld`]).
pub(crate) fn dgt_len(d: &DirDims) -> usize {
    super::products::dgt_ld(d.t * d.b) * d.gh()
}

impl CacheSizes {
    /// The lengths at `d`.
    pub fn of(d: &DirDims) -> Self {
        let [t, b, i, h, p] = [d.t, d.b, d.i, d.h, d.p].map(|x| x as u128);
        let g = d.kind.gates() as u128;
        let gh = g * h;
        let (hp, pp) = ((panels(d.h) * NR) as u128, (panels(d.p) * NR) as u128);
        let tb = t * b;
        let lstm = d.kind == CellKind::Lstm;
        let gru = d.kind == CellKind::Gru;
        let proj = d.proj();
        let on = |c: bool, n: u128| if c { n } else { 0 };
        CacheSizes {
            xw: tb * gh,
            gates: tb * gh,
            hn: on(gru, tb * h),
            hprev: tb * p,
            cprev: on(lstm, tb * h),
            cell: on(lstm, tb * h),
            hpre: on(proj, tb * h),
            hw: b * g * hp,
            wpack: (g * hp * p).max(pp * gh),
            rpack: on(proj, (pp * h).max(hp * p)),
            dbias: gh,
            bias: gh,
            bhn: on(gru, h),
            h: b * p,
            c: on(lstm, b * h),
            hnew: b * p,
            dgh: on(gru, tb * gh),
            dhp: on(proj, tb * p),
            dh: b * p,
            dh_next: b * p,
            dc: on(lstm, b * h),
            dhpre: on(lstm, b * h),
            direct: on(gru, b * h),
            wipack: g * hp * i,
            xc: tb * g * hp,
            wt: i * gh,
            dgt: (if (t * b) % 256 == 0 { tb + 16 } else { tb }) * gh,
        }
    }

    /// The buffers [`DirCache::new`] allocates.
    pub fn eager(&self) -> u128 {
        self.xw
            + self.gates
            + self.hn
            + self.hprev
            + self.cprev
            + self.cell
            + self.hpre
            + self.hw
            + self.wpack
            + self.rpack
            + self.dbias
            + self.bias
            + self.bhn
            + self.h
            + self.c
            + self.hnew
            + self.dgh
            + self.dhp
            + self.dh
            + self.dh_next
            + self.dc
            + self.dhpre
            + self.direct
    }

    /// Every buffer, the lazy ones at their largest: the most a forward and backward can hold.
    pub fn total(&self) -> u128 {
        self.eager() + self.wipack + self.xc + self.wt + self.dgt
    }
}

#[inline]
pub(crate) fn active(lengths: Option<&[usize]>, t: usize, b: usize) -> bool {
    lengths.is_none_or(|l| t < l[b])
}

/// Grows `buf` to at least `n` elements (zeroed); whether it had to.
pub(crate) fn grow<T: Copy + Default>(buf: &mut AVec<T>, n: usize) -> bool {
    let short = buf.len() < n;
    if short {
        *buf = AVec::zeroed(n);
    }
    short
}

/// Makes `buf` hold at least `n` elements for a packed (or transposed) copy of `w`, and says
/// whether the copy must be made: always, unless the weights are fixed
/// ([`DirCache::set_fixed_weights`]) and `buf` still holds the copy made from this same `w`, whose
/// address `slot` records.
pub(crate) fn stale_copy<T: Copy + Default, F>(
    buf: &mut AVec<T>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::Activation;

    /// A new cache holds exactly the eager lengths of [`CacheSizes`] (a buffer added to the
    /// cache but not to the sizes would make the memory estimates lie; this catches it), and its
    /// lazy buffers are empty.
    #[test]
    fn a_new_cache_holds_exactly_the_eager_sizes() {
        let kinds = [
            CellKind::Lstm,
            CellKind::Gru,
            CellKind::Rnn(Activation::Tanh),
        ];
        for kind in kinds {
            for (t, b, i, h, p) in [(1, 1, 1, 1, 1), (9, 4, 12, 20, 20), (5, 3, 70, 33, 33)] {
                for p in [p, if kind == CellKind::Lstm { 7 } else { p }] {
                    let d = DirDims {
                        kind,
                        t,
                        b,
                        i,
                        h,
                        p,
                        reverse: false,
                    };
                    let c = DirCache::<f32>::new(d);
                    let s = CacheSizes::of(&d);
                    assert_eq!(c.bytes() as u128, 4 * s.eager(), "{d:?}");
                    assert!(c.wipack.is_empty() && c.xc.is_empty());
                    assert!(c.wt.is_empty() && c.dgt.is_empty() && c.dgt16.is_empty());
                    assert!(s.total() > s.eager(), "{d:?}");
                    let c64 = DirCache::<f64>::new(d);
                    assert_eq!(c64.bytes() as u128, 8 * s.eager(), "{d:?}");
                }
            }
        }
    }
}
