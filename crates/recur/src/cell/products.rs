//! The products the two drivers share around the time loop: the input projection of all steps
//! before it, and the weight gradients (one GEMM each over all steps) after it.

use super::cache::{grow, stale_copy};
use super::{CellKind, DirCache, DirGrads, DirWeights, LayerInput};
use crate::ops::bf16::{tile_gemm, Left, Right};
use crate::ops::gemm::{threads, with_threads};
use crate::ops::transpose::{transpose_bf16_split, transpose_split};
use crate::ops::{add_assign, add_col_sums, for_parts_mut, gemm, Float, Trans};
use crate::ops::{as_f32 as f32s, as_f32_mut as f32m};

/// `c.wt = W_ih^T`, `(I, G*H)`, by 16 x 16 tiles ([`transpose_split`]), the rows of `c.wt` split
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
    transpose_split(w.w_ih, gh, ni, &mut c.wt, gh);
}

/// `xw = X W_ih^T` (+ `b_ih` when `add_bias`) for all steps at once: `(T*B, I) x (I, G*H)` (a
/// gather of columns for one-hot input). The fast driver adds the biases in its gate pass
/// instead, which saves a pass over `xw`.
pub(super) fn input_projection<F: Float>(
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
            // a large W_ih (above L3/4, with AVX-512) is transposed first, so that the `gemm`
            // crate gets W^T as stored, which it packs faster than a transposed right operand.
            // Why these limits: docs/performance.md, "Input projection: W_ih transposed first
            // for large layers".
            let large = ni * gh * std::mem::size_of::<F>() > l3_bytes() / 4;
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

/// int8 inference's input product over all T*B rows (dense input): `xw = s_x s_w (q_x q_w^T -
/// z rowsum)`, the input's rows quantized as each step's state is (`ops::int8`), W_ih
/// quantized per row and packed once while the weights are fixed (`c.q_ih`); the rows split
/// over the threads, each part with its own scratch. As [`input_projection`] without biases.
/// F is f32 (int8 runs on float32 caches only).
pub(super) fn input_projection_int8<F: Float>(
    c: &mut DirCache<F>,
    w: &DirWeights<F>,
    x: &[F],
    ld: usize,
) {
    let d = c.dims;
    let (rows, gh) = (d.t * d.b, d.gh());
    c.q_ih
        .prepare(f32s(w.w_ih), d.kind.gates(), d.h, d.i, c.fixed_weights);
    let parts = if rows >= 16 { threads().min(rows) } else { 1 };
    let per = rows.div_ceil(parts);
    let scratch = quant_scratch(&mut c.q_scratch, parts);
    let (q, x, xw) = (&c.q_ih, f32s(x), f32m(&mut c.xw[..rows * gh]));
    if parts == 1 {
        q.product(x, rows, ld, xw, gh, &mut scratch[0]);
    } else {
        use rayon::prelude::*;
        xw.par_chunks_mut(per * gh)
            .zip(scratch.par_iter_mut())
            .enumerate()
            .for_each(|(k, (out, s))| {
                q.product(&x[k * per * ld..], out.len() / gh, ld, out, gh, s)
            });
    }
}

/// The first `parts` of the int8 products' scratch slots, made when missing.
pub(super) fn quant_scratch(
    slots: &mut Vec<crate::ops::int8::QuantScratch>,
    parts: usize,
) -> &mut [crate::ops::int8::QuantScratch] {
    if slots.len() < parts {
        slots.resize_with(parts, Default::default);
    }
    &mut slots[..parts]
}

/// Whether the bf16 input product of this direction runs on the bf16 multiplier (AMX tiles,
/// or `vdpbf16ps` where `ops::multiplier` chose it)
/// ([`input_projection_tiles`]): bf16, the tiles granted, and whole panels per gate (so that the
/// tiles' columns are xw's).
pub(super) fn tiles_for_input<F: Float>(c: &DirCache<F>) -> bool {
    c.precision == crate::Precision::Bf16
        && c.dims.h.is_multiple_of(crate::ops::panel::NR)
        && crate::ops::multiplier::native()
}

/// bf16's input product over all T*B rows (dense input) on the bf16 multiplier: `xw = X W_ih^T`, W_ih
/// packed as bf16 panels once while the weights are fixed (else at every call), the rows split
/// over the threads, each part's rows multiplied on its own thread's tiles. As
/// [`input_projection`] without biases; X holds bf16 values (the layer below rounds its states,
/// the model rounds its input). F is f32 (bf16 runs on float32 caches only).
pub(super) fn input_projection_tiles<F: Float>(
    c: &mut DirCache<F>,
    w: &DirWeights<F>,
    x: &[F],
    ld: usize,
) {
    use crate::ops::bf16;
    use crate::ops::panel::{panels, Groups, OutPtr};
    let d = c.dims;
    let (rows, ni, nh, ng) = (d.t * d.b, d.i, d.h, d.kind.gates());
    let gh = d.gh();
    // F is f32 in bf16 and int8 mode (DirCache::set_precision)
    let n16 = bf16::packed_len(ng * panels(nh), ni);
    if stale_copy(
        &mut c.wipack16,
        n16,
        &mut c.packed_ih16,
        c.fixed_weights,
        w.w_ih,
    ) {
        bf16::pack_gates_t(&mut c.wipack16[..n16], f32s(w.w_ih), ng, nh, ni);
    }
    let packed = &c.wipack16[..n16];
    let x = f32s(x);
    let per = rows.div_ceil(crate::ops::gemm::threads()).max(1) * gh;
    crate::ops::for_parts_mut(&mut c.xw[..rows * gh], per, rows >= 16, |e0, part| {
        let (r0, m) = (e0 / gh, part.len() / gh);
        let out = OutPtr {
            ptr: part.as_mut_ptr() as *mut f32,
            ld: gh,
            n: gh,
        };
        // SAFETY: `part` holds this part's m rows of gh floats (F = f32) and is its alone; H is
        // whole panels (tiles_for_input), so the panels' columns are xw's.
        unsafe {
            bf16::panel_gemm_tiles(
                crate::ops::tiles::TileRun::Native,
                m,
                Groups::ONE,
                ni,
                &x[r0 * ld..],
                ld,
                packed,
                0..ng * panels(nh),
                out,
                false,
            )
        };
    });
}

/// bf16 training's weight and input gradients on the bf16 multiplier (AMX tiles or `vdpbf16ps`), where [`weight_grads`] would run the
/// float32 GEMM on bf16 values. `dW_hh += dGh^T H_prev`; dense input: `dW_ih += dG^T X`, `dX +=
/// dG W_ih`; one-hot input: dW_ih's scatter-add as in float32. The left operand dG^T is the one
/// the backward kept (`dgt`), else transposed here into the same buffer (the GRU: dGh^T, then
/// dG^T). F is f32 (bf16 runs on float32 caches only).
fn weight_grads_tiles<F: Float>(
    c: &mut DirCache<F>,
    w: &DirWeights<F>,
    g: &mut DirGrads<F>,
    input: LayerInput<F>,
    dx: Option<(&mut [F], usize)>,
    dgt: bool,
) {
    let d = c.dims;
    let (ni, np, gh, rows) = (d.i, d.p, d.gh(), d.t * d.b);
    let is_gru = d.kind == CellKind::Gru;
    // F is f32 in bf16 and int8 mode (DirCache::set_precision)
    let (ldt, ld16, in_bf16) = (dgt_ld(rows), dgt16_ld(rows), dgt_in_bf16(c));
    // `dW += dG^T B`, dG^T as the backward kept it or as transposed here
    let dgt_product = |c: &DirCache<F>, b: Right, n: usize, out: &mut [f32]| {
        let a = if in_bf16 {
            Left::Bf16(&c.dgt16, ld16)
        } else {
            Left::F32(f32s(&c.dgt), ldt)
        };
        tile_gemm(a, gh, rows, b, n, out, n, true)
    };
    // dG^T (the GRU: dGh^T first, then dG^T) where the backward did not keep it
    let transpose = |c: &mut DirCache<F>, src_is_dgh: bool| {
        if in_bf16 {
            grow_dgt16(c);
            let src = f32s(if src_is_dgh { &c.dgh } else { &c.xw });
            transpose_bf16_split(src, rows, gh, &mut c.dgt16, ld16);
        } else {
            grow(&mut c.dgt, super::cache::dgt_len(&d));
            let src = if src_is_dgh { &c.dgh } else { &c.xw };
            transpose_split(src, rows, gh, &mut c.dgt, ldt);
        }
    };
    if !dgt || is_gru {
        transpose(c, is_gru);
    }
    let (hprev, dw_hh) = (Right::Kn(f32s(&c.hprev), np), f32m(g.w_hh));
    dgt_product(c, hprev, np, dw_hh);
    match input {
        LayerInput::Dense { x, ld } => {
            if is_gru {
                transpose(c, false);
            }
            let (x, dw_ih) = (Right::Kn(f32s(x), ld), f32m(g.w_ih));
            dgt_product(c, x, ni, dw_ih);
            if let Some((dx, lddx)) = dx {
                let w_ih = Right::Kn(f32s(w.w_ih), ni);
                let dg = Left::F32(f32s(&c.xw), gh);
                tile_gemm(dg, rows, gh, w_ih, ni, f32m(dx), lddx, true);
            }
        }
        LayerInput::OneHot { ids } => one_hot_w_ih_grads(c, g, ids),
    }
    bias_and_proj_grads(c, g);
}

/// The L3 cache shared by the cores (read from the machine: `ops::cpu::Caches`): a few choices
/// between ways of computing a product depend on whether its operands stay in it.
pub(crate) fn l3_bytes() -> usize {
    crate::ops::cpu::Caches::get().l3
}

/// Rows of the one-hot gather per job when it is split over threads.
const ONE_HOT_ROWS: usize = 256;

/// The row stride of dG^T (`DirCache::dgt`) for `rows` rows of dG: 16 more when `rows` is a
/// multiple of 256, so that the rows a step writes (one cache line each) do not all fall into
/// the same cache sets. What it gains: docs/performance.md, "dG^T row padding".
pub(crate) fn dgt_ld(rows: usize) -> usize {
    if rows.is_multiple_of(256) {
        rows + 16
    } else {
        rows
    }
}

/// Whether dG^T is held as bf16 bits (`DirCache::dgt16`) rather than float32 (`dgt`): bf16
/// training with its products on `vdpbf16ps`, which reads the bits as its pairs.
pub(super) fn dgt_in_bf16<F: Float>(c: &DirCache<F>) -> bool {
    c.precision == crate::Precision::Bf16 && crate::ops::bf16::dp_native()
}

/// Grows `DirCache::dgt16` for this direction's dG^T and zeroes the element that pairs each
/// row's last when T*B is odd (the kernel reads it; the transpositions write only the elements
/// before it).
pub(super) fn grow_dgt16<F: Float>(c: &mut DirCache<F>) {
    let (rows, gh) = (c.dims.t * c.dims.b, c.dims.gh());
    let ld = dgt16_ld(rows);
    grow(&mut c.dgt16, ld * gh);
    if ld > rows {
        for r in 0..gh {
            c.dgt16[r * ld + rows] = 0;
        }
    }
}

/// The row stride of the bf16 dG^T (`DirCache::dgt16`) for `rows` rows of dG: even (A's rows
/// are read as pairs), one element past `rows` when that is odd (the zero that pairs the last
/// element), and a cache line more when `rows` is a multiple of 256, as [`dgt_ld`].
pub(crate) fn dgt16_ld(rows: usize) -> usize {
    if rows.is_multiple_of(256) {
        rows + 32
    } else {
        rows.next_multiple_of(2)
    }
}

/// `out (G*H, n) += dG^T B`, `B` being `(T*B, n)` at row stride `ldb`: from the fast driver's
/// transposed copy of dG when given (`dgt`: the left operand read as stored, which the `gemm`
/// crate runs faster: docs/performance.md, "Weight gradients from dG^T"), else from `dg` read
/// transposed.
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
/// same work; each product then runs without the hand-overs of a product split over all threads.
/// Why only while dG is small: docs/performance.md, "Weight gradients as two concurrent halves".
pub(super) fn weight_grads<F: Float>(
    c: &mut DirCache<F>,
    w: &DirWeights<F>,
    g: &mut DirGrads<F>,
    input: LayerInput<F>,
    dx: Option<(&mut [F], usize)>,
    dgt: bool,
) {
    if c.precision == crate::Precision::Bf16 && crate::ops::multiplier::native() {
        return weight_grads_tiles(c, w, g, input, dx, dgt);
    }
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
            let concurrent = nt >= 2
                && ni * gh * rows >= 1 << 22
                && cut >= rows / 4
                && dg_bytes < l3_bytes() / 4;
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
            one_hot_w_ih_grads(c, g, ids);
            let (dgh_all, hprev) = (if is_gru { &c.dgh[..] } else { &c.xw[..] }, &c.hprev);
            dg_t_product(None, dgh_all, gh, rows, hprev, np, np, g.w_hh);
        }
    }
    bias_and_proj_grads(c, g);
}

/// `dW_ih[:, id] += dG row` for one-hot input (`ids`, T*B of them), reading dG from `c.xw`.
fn one_hot_w_ih_grads<F: Float>(c: &mut DirCache<F>, g: &mut DirGrads<F>, ids: &[u32]) {
    let d = c.dims;
    let (ni, gh, rows) = (d.i, d.gh(), d.t * d.b);
    let xw = &c.xw;
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
