//! Recurrent cells: forward and backward (BPTT) of one direction of one layer over a sequence.
//!
//! This file is the sequence driver shared by the three cells, following the fast path of
//! DESIGN.md:
//! 1. the input projection of all T steps is one GEMM `[T*B, I] x [I, G*H]`;
//! 2. per step, one recurrent GEMM `[B, P] x [P, G*H]`, then one fused element-wise pass
//!    (`rnn.rs`, `lstm.rs`, `gru.rs`);
//! 3. backward walks the steps in reverse doing only the element-wise backward and the
//!    `[B, G*H] x [G*H, P]` product for dh_{t-1}; the weight gradients are one GEMM each over all
//!    steps at the end (`dW_hh = sum_t dG_t^T h_{t-1}`, `dW_ih = dG^T X`);
//! 4. nothing is allocated inside the time loop: [`DirCache`] is sized once.
//!
//! Conventions: activations are row-major and time-major, `(T, B, features)`; weights are stored
//! as PyTorch stores them, `(G*H, in)`. Per-sequence lengths follow PyTorch's packed sequences:
//! at a step `t >= len[b]` row `b` is inactive, its state is carried unchanged, its output is zero,
//! and it takes no gradient. In the reverse direction each sequence therefore starts at its own
//! last step.

mod fast;
pub mod gru;
pub mod lstm;
pub mod rnn;
pub mod simple;

pub use rnn::Activation;

use crate::ops::gemm::{threads, with_threads};
use crate::ops::panel::{panels, NR};
use crate::ops::transpose::transpose_raw;
use crate::ops::{add_assign, add_col_sums, for_parts_mut, gemm, Float, Trans};

/// Which recurrent cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellKind {
    /// Elman RNN with the given non-linearity.
    Rnn(Activation),
    /// LSTM, gates i, f, g, o.
    Lstm,
    /// GRU, gates r, z, n.
    Gru,
}

impl CellKind {
    /// Number of gate blocks G: the rows of `weight_ih` are `G * hidden`.
    pub fn gates(self) -> usize {
        match self {
            CellKind::Rnn(_) => 1,
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }

    /// The name used on the command line and in checkpoints: `rnn_tanh`, `rnn_relu`, `lstm`, `gru`.
    pub fn name(self) -> &'static str {
        match self {
            CellKind::Rnn(Activation::Tanh) => "rnn_tanh",
            CellKind::Rnn(Activation::Relu) => "rnn_relu",
            CellKind::Lstm => "lstm",
            CellKind::Gru => "gru",
        }
    }

    /// Parses [`CellKind::name`] (also `rnn` for `rnn_tanh`).
    pub fn parse(s: &str) -> Option<CellKind> {
        Some(match s {
            "rnn" | "rnn_tanh" => CellKind::Rnn(Activation::Tanh),
            "rnn_relu" => CellKind::Rnn(Activation::Relu),
            "lstm" => CellKind::Lstm,
            "gru" => CellKind::Gru,
            _ => return None,
        })
    }
}

/// Sizes of one direction of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirDims {
    pub kind: CellKind,
    /// T: steps.
    pub t: usize,
    /// B: sequences in the batch.
    pub b: usize,
    /// I: input features.
    pub i: usize,
    /// H: hidden units.
    pub h: usize,
    /// P: output (and recurrent state) size: the LSTM's `proj_size` when projecting, else H.
    pub p: usize,
    /// Walk the steps from T-1 down to 0.
    pub reverse: bool,
}

impl DirDims {
    fn gh(&self) -> usize {
        self.kind.gates() * self.h
    }
    fn proj(&self) -> bool {
        self.kind == CellKind::Lstm && self.p != self.h
    }
}

/// The weights of one direction of one layer, shaped as PyTorch's.
pub struct DirWeights<'a, F> {
    /// `weight_ih`: (G*H, I)
    pub w_ih: &'a [F],
    /// `weight_hh`: (G*H, P)
    pub w_hh: &'a [F],
    /// `bias_ih`: (G*H)
    pub b_ih: Option<&'a [F]>,
    /// `bias_hh`: (G*H)
    pub b_hh: Option<&'a [F]>,
    /// `weight_hr` (LSTM projection): (P, H)
    pub w_hr: Option<&'a [F]>,
}

/// Gradient buffers of one direction of one layer, same shapes as [`DirWeights`]; accumulated (`+=`).
pub struct DirGrads<'a, F> {
    pub w_ih: &'a mut [F],
    pub w_hh: &'a mut [F],
    pub b_ih: Option<&'a mut [F]>,
    pub b_hh: Option<&'a mut [F]>,
    pub w_hr: Option<&'a mut [F]>,
}

/// The input of a layer: dense vectors, or token ids standing for one-hot vectors.
#[derive(Clone, Copy)]
pub enum LayerInput<'a, F> {
    /// `(T, B, I)` with row stride `ld` (>= I).
    Dense { x: &'a [F], ld: usize },
    /// `(T, B)` token ids in `0..I`: the one-hot rows `e_id`, so `x W_ih^T` is column `id` of
    /// `W_ih`. Gives the same numbers as the dense one-hot product at a fraction of the work.
    OneHot { ids: &'a [u32] },
}

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
    packed_hh: usize,
    packed_ih: usize,
    packed_wt: usize,
    // xw: (T, B, G*H) input projection x_t W_ih^T + b_ih
    xw: Vec<F>,
    // gates: (T, B, G*H) activated gates (RNN: the new h itself)
    gates: Vec<F>,
    // hn: (T, B, H) GRU only: W_hn h_{t-1} + b_hn
    hn: Vec<F>,
    // hprev: (T, B, P) the state entering step t
    hprev: Vec<F>,
    // cprev, cell: (T, B, H) LSTM only: c_{t-1} and c_t
    cprev: Vec<F>,
    cell: Vec<F>,
    // hpre: (T, B, H) LSTM with projection only: o * tanh(c), before the projection
    hpre: Vec<F>,
    // hw: (B, G*Hp) per-step recurrent product, each gate padded to Hp = whole panels (the
    // simple driver uses the first B*G*H elements as (B, G*H))
    hw: Vec<F>,
    // wpack: W_hh packed into column panels (ops::panel): forward as W_hh^T per gate,
    // backward as W_hh; one buffer, repacked at the start of each pass
    wpack: Vec<F>,
    // wipack: W_ih^T packed per gate like wpack, and xc: (C, B, G*Hp) the input product of the
    // C steps of one chunk; both for the fast driver's per-chunk input product (sized when it
    // first runs, empty otherwise)
    wipack: Vec<F>,
    xc: Vec<F>,
    // wt: (I, G*H) W_ih^T, for the input product of large layers and one-hot input's gather;
    // one-hot input's backward uses it as scratch for its per-symbol sums (sized when first used)
    wt: Vec<F>,
    // dgt: (G*H, T*B) dG transposed, written by the fast driver's backward step by step for
    // the weight gradients (sized when first used)
    dgt: Vec<F>,
    // dbias: (G*H) scratch for the bias gradients' column sums
    dbias: Vec<F>,
    // bias: (G*H) the biases the fast driver's gate pass adds: b_ih + b_hh (GRU n gate: b_in
    // only), zeros without biases; bhn: (H) GRU only: b_hn, or zeros
    bias: Vec<F>,
    bhn: Vec<F>,
    // h, c: (B, P), (B, H) running state; hnew: (B, P) projection output
    h: Vec<F>,
    c: Vec<F>,
    hnew: Vec<F>,
    // backward: the input-side gate gradients dG (T, B, G*H) are written over `xw`, which the
    // backward pass no longer needs; dgh (T, B, G*H) GRU recurrent side
    dgh: Vec<F>,
    // dhp: (T, B, P) LSTM projection: dL/dh_t after the projection
    dhp: Vec<F>,
    // dh, dh_next: (B, P); dc: (B, H); dhpre: (B, H); direct: (B, H) GRU's z * dh path
    dh: Vec<F>,
    dh_next: Vec<F>,
    dc: Vec<F>,
    dhpre: Vec<F>,
    direct: Vec<F>,
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

/// `c.wt = W_ih^T`, `(I, G*H)`, by 16 x 16 tiles ([`transpose_raw`]), the rows of `c.wt` split
/// over the threads; kept from the last call while the weights are fixed.
fn transpose_w_ih<F: Float>(c: &mut DirCache<F>, w: &DirWeights<F>) {
    let (ni, gh) = (c.dims.i, c.dims.gh());
    if !stale_copy(
        &mut c.wt,
        ni * gh,
        &mut c.packed_wt,
        c.fixed_weights,
        w.w_ih,
    ) {
        return;
    }
    let w_ih = w.w_ih;
    assert!(w_ih.len() >= gh * ni, "W_ih too small");
    let per = ni.div_ceil(threads()).next_multiple_of(16);
    for_parts_mut(
        &mut c.wt[..ni * gh],
        per * gh,
        ni * gh >= 1 << 16,
        |e0, block| {
            let (i0, n) = (e0 / gh, block.len() / gh);
            // SAFETY: columns i0..i0+n of W_ih's gh rows (stride ni) lie inside it (asserted); the
            // block holds n rows of gh
            unsafe { transpose_raw(gh, n, w_ih[i0..].as_ptr(), ni, block.as_mut_ptr(), gh) };
        },
    );
}

/// `xw = X W_ih^T` (+ `b_ih` when `add_bias`) for all steps at once: `(T*B, I) x (I, G*H)` (a
/// gather of columns for one-hot input). The fast driver adds the biases in its gate pass
/// instead, which saves a pass over `xw`.
fn input_projection<F: Float>(
    c: &mut DirCache<F>,
    w: &DirWeights<F>,
    input: LayerInput<F>,
    add_bias: bool,
) {
    let d = c.dims;
    let (rows, ni) = (d.t * d.b, d.i);
    let gh = d.gh();
    match input {
        LayerInput::Dense { x, ld } => {
            // a large W_ih is transposed first, so that the `gemm` crate gets W^T as stored: it
            // packs a transposed right operand far more slowly (alone: 330 against 445 GFLOP/s
            // at 512 x 4096 x 1024). Measured with the transposition: LSTM 1024/16/32 +6.9%
            // inference, +2.8% training, GRU 1024 training +3.4%; with W_ih of 4 MiB (LSTM
            // 512) no gain either way, so only above L3/4, and only with AVX-512 (where the
            // transposition moves whole tiles; measured there).
            let large = ni * gh * std::mem::size_of::<F>() > L3_BYTES / 4;
            let (wt, ldw, tw) = if large && crate::ops::panel::has_avx512() {
                transpose_w_ih(c, w);
                (&c.wt[..], gh, Trans::N)
            } else {
                (w.w_ih, ni, Trans::T)
            };
            gemm(
                Trans::N,
                tw,
                rows,
                gh,
                ni,
                F::ONE,
                x,
                ld,
                wt,
                ldw,
                F::ZERO,
                &mut c.xw,
                gh,
            );
        }
        LayerInput::OneHot { ids } => {
            // xw row r = column ids[r] of W_ih (a gather). With at least as many rows as
            // symbols, W_ih^T is made first, so that each row is one contiguous copy instead of
            // G*H loads I elements apart. Rows shared out over the threads.
            let transposed = rows >= ni;
            if transposed {
                transpose_w_ih(c, w);
            }
            let wt = &c.wt;
            for_parts_mut(
                &mut c.xw[..rows * gh],
                ONE_HOT_ROWS * gh,
                true,
                |e0, block| {
                    for (row, &id) in block.chunks_exact_mut(gh).zip(&ids[e0 / gh..]) {
                        let id = id as usize;
                        if transposed {
                            row.copy_from_slice(&wt[id * gh..(id + 1) * gh]);
                        } else {
                            for (g, v) in row.iter_mut().enumerate() {
                                *v = w.w_ih[g * ni + id];
                            }
                        }
                    }
                },
            );
        }
    }
    if let (Some(b_ih), true) = (w.b_ih, add_bias) {
        for row in c.xw.chunks_exact_mut(gh) {
            for (v, &bb) in row.iter_mut().zip(b_ih) {
                *v += bb;
            }
        }
    }
}

/// The L3 cache shared by the cores (32 MiB on the machine measured): a few choices between
/// ways of computing a product depend on whether its operands stay in it.
pub(crate) const L3_BYTES: usize = 32 << 20;

/// Rows of the one-hot gather per job when it is split over threads.
const ONE_HOT_ROWS: usize = 256;

/// The row stride of dG^T (`DirCache::dgt`) for `rows` rows of dG: 16 more when `rows` is a
/// multiple of 256, so that the rows a step writes (one cache line each) do not all fall into
/// the same cache sets (measured: LSTM 128/32/64 training 0.89x without the padding, 0.97x
/// with; 512: 1.017x and 1.028x).
pub(crate) fn dgt_ld(rows: usize) -> usize {
    if rows.is_multiple_of(256) {
        rows + 16
    } else {
        rows
    }
}

/// `out (G*H, n) += dG^T B`, `B` being `(T*B, n)` at row stride `ldb`: from the fast driver's
/// transposed copy of dG when given (`dgt`: the left operand read as stored, which the `gemm`
/// crate runs 10-12% faster), else from `dg` read transposed.
fn dg_t_product<F: Float>(
    dgt: Option<&[F]>,
    dg: &[F],
    gh: usize,
    rows: usize,
    b: &[F],
    ldb: usize,
    n: usize,
    out: &mut [F],
) {
    let (ta, a, lda) = match dgt {
        Some(t) => (Trans::N, t, dgt_ld(rows)),
        None => (Trans::T, dg, gh),
    };
    gemm(
        ta,
        Trans::N,
        gh,
        n,
        rows,
        F::ONE,
        a,
        lda,
        b,
        ldb,
        F::ONE,
        out,
        n,
    );
}

/// The weight gradients after the time loop, one GEMM each over all steps; `dx` too. Reads dG
/// from `c.xw` (and the GRU's recurrent-side dGh from `c.dgh`), and from `c.dgt` as well when
/// `dgt` says the backward kept it there (dense input, every cell but the GRU).
///
/// On several threads, while dG is small (under a quarter of the L3), the three products run
/// side by side instead of one after another: half the threads compute dW_ih and the first rows
/// of dX, the other half dW_hh and the rest of dX, the rows cut so that both halves have the
/// same work; each product then runs without the hand-overs of a product split over all threads
/// (LSTM 128/32/64 training: +5%). With dG of 8-16 MiB each half streaming all of it (and
/// packing its own operands) cost 3-4% instead (docs/performance.md).
fn weight_grads<F: Float>(
    c: &mut DirCache<F>,
    w: &DirWeights<F>,
    g: &mut DirGrads<F>,
    input: LayerInput<F>,
    dx: Option<(&mut [F], usize)>,
    dgt: bool,
) {
    let d = c.dims;
    let (ni, np) = (d.i, d.p);
    let gh = d.gh();
    let rows = d.t * d.b;
    let is_gru = d.kind == CellKind::Gru;
    let (xw, hprev, w_ih) = (&c.xw, &c.hprev, w.w_ih);
    let dgh_all: &[F] = if is_gru { &c.dgh } else { xw };
    let dgt_ih = dgt.then_some(&c.dgt[..]);
    let dgt_hh = if is_gru { None } else { dgt_ih };
    // dW_hh += dGh^T H_prev: (G*H, T*B) x (T*B, P)
    let dw_hh = |out: &mut [F]| dg_t_product(dgt_hh, dgh_all, gh, rows, hprev, np, np, out);
    // dX[r0..r1] += dG[r0..r1] W_ih: (rows, G*H) x (G*H, I)
    let dx_rows = |r0: usize, r1: usize, dx: &mut [F], lddx: usize| {
        if r1 > r0 {
            let a = &xw[r0 * gh..];
            gemm(
                Trans::N,
                Trans::N,
                r1 - r0,
                ni,
                gh,
                F::ONE,
                a,
                gh,
                w_ih,
                ni,
                F::ONE,
                dx,
                lddx,
            );
        }
    };
    match input {
        LayerInput::Dense { x, ld } => {
            // dW_ih += dG^T X: (G*H, T*B) x (T*B, I)
            let dw_ih = |out: &mut [F]| dg_t_product(dgt_ih, xw, gh, rows, x, ld, ni, out);
            let nt = threads();
            // dX's rows in the first half: balances the two halves' work (equal when I = P)
            let cut = (rows * np).div_ceil(2 * ni.max(1)).min(rows);
            let dg_bytes = rows * gh * std::mem::size_of::<F>();
            let concurrent =
                nt >= 2 && ni * gh * rows >= 1 << 22 && cut >= rows / 4 && dg_bytes < L3_BYTES / 4;
            let (g_ih, g_hh) = (&mut *g.w_ih, &mut *g.w_hh);
            match dx {
                Some((dx, lddx)) if concurrent => {
                    let (dx_a, dx_b) = dx.split_at_mut((cut * lddx).min(dx.len()));
                    let half = nt / 2;
                    rayon::join(
                        || {
                            with_threads(half, || {
                                dw_ih(g_ih);
                                dx_rows(0, cut, dx_a, lddx);
                            })
                        },
                        || {
                            with_threads(nt - half, || {
                                dw_hh(g_hh);
                                dx_rows(cut, rows, dx_b, lddx);
                            })
                        },
                    );
                }
                dx => {
                    dw_ih(g_ih);
                    if let Some((dx, lddx)) = dx {
                        dx_rows(0, rows, dx, lddx);
                    }
                    dw_hh(g_hh);
                }
            }
        }
        LayerInput::OneHot { ids } => {
            // dW_ih[:, id] += dG row: the one-hot product's gradient is a scatter-add. Split over
            // the threads by gate units, so no two threads add into one element; each element
            // still receives its terms in the order of r (the same sums on any number of
            // threads). The rows are first summed per symbol into a scratch (`wt`, which then no
            // longer holds W_ih^T) laid out symbol by symbol (each part's units contiguous: one
            // vector add per row), then added into dW_ih, whose elements for one unit lie I
            // apart.
            let per = gh.div_ceil(threads()).max(1);
            let split = rows * gh >= 1 << 16;
            grow(&mut c.wt, ni * gh);
            c.packed_wt = 0;
            // scratch part k: (I, units of part k), for units k*per..
            for_parts_mut(&mut c.wt[..ni * gh], per * ni, split, |e0, sums| {
                let (g0, units) = (e0 / ni, sums.len() / ni);
                sums.fill(F::ZERO);
                for (r, &id) in ids.iter().enumerate().take(rows) {
                    let id = id as usize;
                    add_assign(
                        &mut sums[id * units..(id + 1) * units],
                        &xw[r * gh + g0..r * gh + g0 + units],
                    );
                }
            });
            let sums_all = &c.wt;
            for_parts_mut(&mut g.w_ih[..gh * ni], per * ni, split, |e0, block| {
                let (g0, units) = (e0 / ni, block.len() / ni);
                let sums = &sums_all[g0 * ni..(g0 + units) * ni];
                for (gi, row) in block.chunks_exact_mut(ni).enumerate() {
                    for (i, v) in row.iter_mut().enumerate() {
                        *v += sums[i * units + gi];
                    }
                }
            });
            dw_hh(g.w_hh);
        }
    }
    bias_and_proj_grads(c, g);
}

/// The bias gradients (column sums of dG) and the projection's dW_hr, after the time loop.
fn bias_and_proj_grads<F: Float>(c: &mut DirCache<F>, g: &mut DirGrads<F>) {
    let d = c.dims;
    let (nh, np) = (d.h, d.p);
    let gh = d.gh();
    let rows = d.t * d.b;
    let dgh_all: &[F] = if d.kind == CellKind::Gru {
        &c.dgh
    } else {
        &c.xw
    };
    match (g.b_ih.as_deref_mut(), g.b_hh.as_deref_mut()) {
        // every cell but the GRU: both biases have the same gradient, dG's column sums; one
        // pass over dG (16 MiB at LSTM 512/32/64) instead of two
        (Some(db_ih), Some(db_hh)) if d.kind != CellKind::Gru => {
            let sum = &mut c.dbias[..gh];
            sum.fill(F::ZERO);
            add_col_sums(sum, &c.xw, rows, gh, gh);
            add_assign(db_ih, sum);
            add_assign(db_hh, sum);
        }
        (db_ih, db_hh) => {
            if let Some(db) = db_ih {
                add_col_sums(db, &c.xw, rows, gh, gh);
            }
            if let Some(db) = db_hh {
                add_col_sums(db, dgh_all, rows, gh, gh);
            }
        }
    }
    if d.proj() {
        if let Some(dw) = g.w_hr.as_deref_mut() {
            // dW_hr += dH^T Hpre: (P, T*B) x (T*B, H)
            gemm(
                Trans::T,
                Trans::N,
                np,
                nh,
                rows,
                F::ONE,
                &c.dhp,
                np,
                &c.hpre,
                nh,
                F::ONE,
                dw,
                nh,
            );
        }
    }
}

/// Forward over the whole sequence: the fast driver (`fast.rs`), or for LSTM projections the
/// simple one (`simple.rs`).
///
/// - `h0`: (B, P) and `c0`: (B, H, LSTM only) initial states, zero when `None`;
/// - `y`: (T, B, P) outputs, written at row stride `ldy` (so two directions can interleave);
/// - `h_n`: (B, P), `c_n`: (B, H, LSTM only; empty otherwise): the final states, each sequence's
///   taken at its own last step.
pub fn forward<F: Float>(
    cache: &mut DirCache<F>,
    w: &DirWeights<F>,
    input: LayerInput<F>,
    h0: Option<&[F]>,
    c0: Option<&[F]>,
    lengths: Option<&[usize]>,
    y: &mut [F],
    ldy: usize,
    h_n: &mut [F],
    c_n: &mut [F],
) {
    if cache.dims.proj() {
        simple::forward(cache, w, input, h0, c0, lengths, y, ldy, h_n, c_n)
    } else {
        fast::forward(cache, w, input, h0, c0, lengths, y, ldy, h_n, c_n)
    }
}

/// Backward (BPTT) over the whole sequence (the same driver as the forward), after [`forward`] on the same cache and input.
///
/// - `dy`: gradient of the outputs, (T, B, P) at row stride `ldy`, or `None` when only the final
///   states feed the loss;
/// - `dh_n`, `dc_n`: gradients of the final states, zero when `None`;
/// - parameter gradients are accumulated into `g`; `dx` (dense input only; (T, B, I) at row
///   stride `lddx`) is accumulated too;
/// - `dh0` (B, P) and `dc0` (B, H, LSTM only) are overwritten with the initial states' gradients.
pub fn backward<F: Float>(
    cache: &mut DirCache<F>,
    w: &DirWeights<F>,
    g: &mut DirGrads<F>,
    input: LayerInput<F>,
    lengths: Option<&[usize]>,
    dy: Option<(&[F], usize)>,
    dh_n: Option<&[F]>,
    dc_n: Option<&[F]>,
    dx: Option<(&mut [F], usize)>,
    dh0: &mut [F],
    dc0: &mut [F],
) {
    if cache.dims.proj() {
        simple::backward(cache, w, g, input, lengths, dy, dh_n, dc_n, dx, dh0, dc0)
    } else {
        fast::backward(cache, w, g, input, lengths, dy, dh_n, dc_n, dx, dh0, dc0)
    }
}
