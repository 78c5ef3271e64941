//! The fast sequence driver (every cell except LSTMs with projections, which `simple.rs` runs).
//!
//! Per pass, `W_hh` is packed once into column panels (`ops::panel`), and nothing in the time
//! loop allocates. On several threads a pass is split one of two ways ([`Split`]):
//!
//! - **by batch rows** (batches of at least 8 rows per thread): each thread runs its own
//!   sequences through every step, all hidden units, and never waits for another: a sequence's
//!   recurrence reads only its own state. Each thread streams all of `W_hh` per step.
//! - **by hidden units** (small batches, or large weights that do not fit in L2 with few rows per
//!   thread): a thread computes the recurrent product only for its own units' columns of every
//!   gate and runs the element-wise pass for those units, for all rows; the next step reads the
//!   whole new state, so the threads meet at a barrier (`ops::team`) after every step.
//!
//! Forward, step t, rows R and units U of one thread:
//!   hw[R, g, U] = h_{t-1}[R] W_hh[g, U]^T                  (panel product, every gate g)
//!   element-wise on (x W_ih^T + b)[R, g, U] + hw[R, g, U] -> gates, c_t[R, U], h_t[R, U]
//! h_{t-1} is read from `hprev[t]` and h_t written into `hprev[next t]`, so the threads never read
//! what another is writing in the same step. In inference mode (`DirCache::keep` off) the states
//! alternate between two slots and the gates of every step share one set of rows, and (for dense
//! input, while the weights fit in the L3) each thread computes `x W_ih^T` for its own rows or
//! units a few steps at a time, just before they run ([`Chunks`]), instead of for all steps
//! before the loop.
//!
//! Backward, in reverse, rows R and units U (of the state, P = H here):
//!   dh[R, U] = dh_next[R, U] + dy_t[R, U]; element-wise backward -> dG_t[R, g, U]
//!   (split by units, synchronise: the product needs all of dG_t)
//!   dh_next[R, U] = dGh_t[R] W_hh[:, U]                     (panel product)
//! The product of step t and the element-wise part of step t-1 run in one walking step.
//!
//! Threads: `ops::gemm::threads()`, through rayon; a step runs on one thread when its product is
//! too small to pay for the hand-over ([`PAR_MIN_STEP_WORK`]).

use super::cache::{active, grow, stale_copy};
use super::products::{
    dgt16_ld, dgt_in_bf16, dgt_ld, grow_dgt16, input_projection, input_projection_int8,
    input_projection_tiles, l3_bytes, tiles_for_input, weight_grads,
};
use super::schedule::{ChunkChoice, SplitChoice};
use super::{
    gru, lstm, rnn, Activation, CellKind, DirBackward, DirCache, DirDims, DirForward, LayerInput,
};
use crate::ops::bf16;
use crate::ops::cpu::Isa;
use crate::ops::gemm::threads;
use crate::ops::int8::{self, RowQuant};
use crate::ops::panel::{
    has_avx512, kernel_for, pack_gates_t, pack_n, panel_gemm_groups_raw, panel_gemm_raw, panels,
    Groups, OutPtr, NR,
};
use crate::ops::team;
use crate::ops::transpose::{transpose_bf16_raw, transpose_raw};
use crate::ops::Float;
use crate::Precision;
use rayon::prelude::*;
use std::ops::Range;

/// Below this many multiply-adds in a step's recurrent product, the step runs on one thread: a
/// hand-over between threads costs a few microseconds, about what one core needs for this much.
const PAR_MIN_STEP_WORK: usize = 1 << 18;

/// A raw pointer to a workspace buffer, shared by the threads of a step. Each thread makes slices
/// only of its own units' elements (see the SAFETY comments at the uses).
pub(super) struct Raw<F>(*mut F);
// by hand: a copy of the pointer, whatever F is (derive would ask F: Copy)
impl<F> Clone for Raw<F> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<F> Copy for Raw<F> {}
// SAFETY: a pointer with no ownership; the code that dereferences it keeps threads on disjoint
// elements within one parallel region.
unsafe impl<F: Send> Send for Raw<F> {}
unsafe impl<F: Sync> Sync for Raw<F> {}

impl<F> Raw<F> {
    pub(super) fn of(v: &mut [F]) -> Self {
        Raw(v.as_mut_ptr())
    }
    /// # Safety
    /// `off..off+len` inside the buffer; no other live reference to these elements.
    #[inline(always)]
    pub(super) unsafe fn mut_at<'a>(self, off: usize, len: usize) -> &'a mut [F] {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(off), len) }
    }
    /// # Safety
    /// `off..off+len` inside the buffer; nobody writes these elements while the slice lives.
    #[inline(always)]
    pub(super) unsafe fn at<'a>(self, off: usize, len: usize) -> &'a [F] {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts(self.0.add(off), len) }
    }
}

/// How a pass is split over threads.
#[derive(Clone, Copy, Debug)]
struct Split {
    parts: usize,
    /// By batch rows: each thread runs its own sequences through every step, all units, with no
    /// synchronisation at all (a row's recurrence never reads another row). Else by hidden units:
    /// every thread works on every row, a barrier per step.
    by_rows: bool,
    rows: usize,
    panels: usize,
}

/// Rows per part below which a split by rows wastes the panel product's 8-row tiles.
const MIN_ROWS_PER_PART: usize = 8;

/// The weight size (W_hh, bytes) up to which parts with few rows still split by rows: one core's
/// L2 (read from the machine), where W_hh stays from step to step for a part that streams all of
/// it. First measured as 1 MiB on a Zen 5 whose L2 is 1 MiB; on a Zen 1 EPYC (512 KiB of L2) the
/// two splits ran within 2% of each other at 768 KiB (`recur bench --tune`, GRU 256, B = 16);
/// docs/performance.md, "Split by batch rows or by hidden units".
pub(crate) fn split_weights() -> usize {
    crate::ops::cpu::Caches::get().l2
}

impl Split {
    /// `step_work`: multiply-adds of one step's recurrent product; `rows`: batch size;
    /// `panels`: the panels of NR units one gate has.
    fn plan(step_work: usize, rows: usize, panels: usize) -> Split {
        let n = threads();
        let mut sp = Split {
            parts: 1,
            by_rows: false,
            rows,
            panels,
        };
        let forced = super::schedule::get().split;
        if n > 1 && step_work >= PAR_MIN_STEP_WORK {
            // split by rows, each part streams all of W_hh every step instead of its share of
            // the units; not when the parts have few rows and the weights exceed one core's L2.
            // Why: docs/performance.md, "Split by batch rows or by hidden units".
            let weight_bytes = step_work / rows.max(1) * std::mem::size_of::<f32>();
            let by_rows = match forced {
                SplitChoice::Rows => rows >= n,
                SplitChoice::Units => false,
                SplitChoice::Auto => {
                    rows >= n * MIN_ROWS_PER_PART
                        && (rows >= n * 2 * MIN_ROWS_PER_PART || weight_bytes <= split_weights())
                }
            };
            sp.by_rows = by_rows;
            sp.parts = if by_rows { n.min(rows) } else { n.min(panels) }.max(1);
        }
        sp
    }

    /// Part `k`: its panels (of each gate) and its batch rows.
    fn part(&self, k: usize) -> (Range<usize>, Range<usize>) {
        let cut = |n: usize| (k * n / self.parts)..((k + 1) * n / self.parts);
        if self.by_rows {
            (0..self.panels, cut(self.rows))
        } else {
            (cut(self.panels), 0..self.rows)
        }
    }

    /// Runs `f(step, part)` for every step and part: split by rows, each part walks all steps on
    /// its own; split by units, the parts of a step meet at a barrier before the next step.
    fn for_steps(&self, steps: usize, f: &(dyn Fn(usize, usize) + Sync)) {
        if self.by_rows && self.parts > 1 {
            (0..self.parts).into_par_iter().for_each(|k| {
                for s in 0..steps {
                    f(s, k)
                }
            });
        } else {
            team::for_steps(self.parts, steps, f);
        }
    }
}

/// For each element-wise pass, a dispatcher: the AVX-512 build of the loop (a separate function
/// whose slice arguments the compiler knows not to overlap, so the loop becomes 16-wide vector
/// code) when the CPU has it, else the portable one.
macro_rules! simd_variant {
    ($name:ident, $avx:ident, $avx2:ident, $f:path, ($($a:ident: $t:ty),*)) => {
        #[inline(always)]
        pub(super) fn $name<F: Float>(simd: bool, $($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                if simd {
                    // SAFETY: `simd` is true only when has_avx512(), which checks these features.
                    return unsafe { $avx($($a),*) };
                }
                if has_avx2_fma() {
                    // SAFETY: checked just now.
                    return unsafe { $avx2($($a),*) };
                }
            }
            let _ = simd;
            $f($($a),*)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
        #[inline(never)]
        unsafe fn $avx<F: Float>($($a: $t),*) {
            $f($($a),*)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        #[inline(never)]
        unsafe fn $avx2<F: Float>($($a: $t),*) {
            $f($($a),*)
        }
    };
}

/// Whether this CPU has AVX2 and FMA (the gate passes' second build, for CPUs without AVX-512:
/// 8-wide, and the activations' `mul_add` one instruction instead of a C library call).
#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    Isa::Avx2Fma.available()
}

simd_variant!(rnn_fwd, rnn_fwd_avx512, rnn_fwd_avx2, rnn::forward_units,
    (act: Activation, x: &[F], b: &[F], hw: &[F], h: &mut [F]));
simd_variant!(rnn_bwd, rnn_bwd_avx512, rnn_bwd_avx2, rnn::backward_units,
    (act: Activation, h: &[F], dh: &[F], dg: &mut [F]));
simd_variant!(lstm_fwd, lstm_fwd_avx512, lstm_fwd_avx2, lstm::forward_units,
    (xi: &[F], xf: &[F], xg: &[F], xo: &[F], bi: &[F], bf: &[F], bg: &[F], bo: &[F],
     hi: &[F], hf: &[F], hg: &[F], ho: &[F],
     c_prev: &[F], gi: &mut [F], gf: &mut [F], gg: &mut [F], go: &mut [F], c: &mut [F],
     h: &mut [F]));
simd_variant!(lstm_bwd, lstm_bwd_avx512, lstm_bwd_avx2, lstm::backward_units,
    (i: &[F], f: &[F], g: &[F], o: &[F], c_prev: &[F], c: &[F], dh: &[F], dc: &mut [F],
     di: &mut [F], df: &mut [F], dgg: &mut [F], d_o: &mut [F]));
simd_variant!(gru_fwd, gru_fwd_avx512, gru_fwd_avx2, gru::forward_units,
    (xr: &[F], xz: &[F], xn: &[F], br: &[F], bz: &[F], bn: &[F], hr: &[F], hz: &[F],
     hh: &[F], bhn: &[F], h_prev: &[F],
     gr: &mut [F], gz: &mut [F], gn: &mut [F], hn: &mut [F], h: &mut [F]));
simd_variant!(gru_bwd, gru_bwd_avx512, gru_bwd_avx2, gru::backward_units,
    (r: &[F], z: &[F], nn: &[F], hn: &[F], h_prev: &[F], dh: &[F], dxr: &mut [F],
     dxz: &mut [F], dxn: &mut [F], dhr: &mut [F], dhz: &mut [F], dhn: &mut [F],
     dh_prev: &mut [F]));

/// Everything one forward step needs, as raw views (threads write disjoint units).
struct Fwd<'a, F> {
    kind: CellKind,
    /// whether to keep every step's gates and states for backward
    keep: bool,
    nt: usize,
    nb: usize,
    nh: usize,
    reverse: bool,
    lengths: Option<&'a [usize]>,
    wpack: &'a [F],
    /// bf16 mode: every new state rounded to bf16 (F is f32)
    bf16: bool,
    /// bf16 mode, bf16 panels: W_hh^T packed as bf16 (then `wpack` is unused)
    wpack16: Option<&'a [u16]>,
    /// int8 mode: the quantized W_hh^T and the step's buffers (then `wpack` is unused)
    int8: Option<Int8Step<'a>>,
    bias: &'a [F],
    bhn: &'a [F],
    xw: Raw<F>,
    gates: Raw<F>,
    hn: Raw<F>,
    hprev: Raw<F>,
    cprev: Raw<F>,
    cell: Raw<F>,
    hw: Raw<F>,
    h: Raw<F>,
    c: Raw<F>,
    y: Raw<F>,
    ldy: usize,
    /// the input product per chunk of steps (else `xw` holds all steps')
    chunks: Option<Chunks<'a, F>>,
}
// SAFETY: see `Raw`; the shared slices are read-only.
unsafe impl<F: Sync> Sync for Fwd<'_, F> {}

/// What an int8 step needs besides the float32 views (see `DirCache`'s int8 fields).
struct Int8Step<'a> {
    wpack8: &'a [i8],
    wscale: &'a [f32],
    wsum: &'a [i32],
    /// per part: B rows of padded(H) codes, and B rows' scales
    hq: Raw<u8>,
    hrq: Raw<RowQuant>,
    /// (B, G*Hp) int32 sums
    acc: Raw<i32>,
}

/// The input product computed by each thread for its own rows and units, a chunk of steps at a
/// time, just before they run: `xc[t - t_min, b, g*Hp + u] = x_t[b] W_ih[g, u]^T`.
struct Chunks<'a, F> {
    x: &'a [F],
    ldx: usize,
    ni: usize,
    /// W_ih^T packed per gate, like `wpack`
    wipack: &'a [F],
    xc: Raw<F>,
    /// steps per chunk
    len: usize,
}

impl<F: Float> Fwd<'_, F> {
    fn t_of(&self, s: usize) -> usize {
        if self.reverse {
            self.nt - 1 - s
        } else {
            s
        }
    }

    /// Step `s` (in walking order) for the units of panels `pan` of batch rows `rows`.
    fn step(&self, s: usize, part: usize, (pan, rows): (Range<usize>, Range<usize>), simd: bool) {
        let (nb, nh) = (self.nb, self.nh);
        let ng = self.kind.gates();
        let gh = ng * nh;
        let hp = panels(nh);
        let hs = hp * NR;
        let (u0, u1) = (pan.start * NR, (pan.end * NR).min(nh));
        if u0 >= u1 {
            return;
        }
        let n = u1 - u0;
        let (b0, mb) = (rows.start, rows.len());
        if mb == 0 {
            return;
        }
        let t = self.t_of(s);
        let next = (s + 1 < self.nt).then(|| self.t_of(s + 1));
        let ldc = ng * hs;
        // the first step (in the chunk buffer) of the chunk that step s belongs to
        let mut t_min = 0;
        if let Some(ch) = &self.chunks {
            let s0 = s - s % ch.len;
            let s1 = (s0 + ch.len).min(self.nt);
            t_min = if self.reverse { self.nt - s1 } else { s0 };
            if s == s0 {
                // SAFETY: rows b0..b0+mb of steps t_min..t_min+(s1-s0) lie inside x (T*B rows
                // of stride ldx) and inside xc (sized for ch.len steps of nb rows); this
                // thread's panels of those rows are written by it alone and read only by
                // steps of this chunk (after this call, by the same part).
                unsafe {
                    let a = &ch.x[(t_min * nb + b0) * ch.ldx..];
                    let out = OutPtr {
                        ptr: ch.xc.0.add(b0 * ldc),
                        ld: ldc,
                        n: ldc,
                    };
                    let groups = Groups {
                        n: s1 - s0,
                        a_step: nb * ch.ldx,
                        c_step: nb,
                    };
                    for g in 0..ng {
                        panel_gemm_groups_raw(
                            mb,
                            groups,
                            ch.ni,
                            a,
                            ch.ldx,
                            ch.wipack,
                            g * hp + pan.start..g * hp + pan.end,
                            out,
                        );
                    }
                }
            }
        }
        // where the state entering step t lives, and the row where step t's gates and cell state
        // go: per step when backward will need them, else two alternating slots and one row set
        let sl = |t: usize| if self.keep { t } else { t % 2 };
        let at = t * nb;
        let st = sl(t) * nb;
        // SAFETY (all the slices below): offsets stay inside the buffers sized by DirCache::new
        // for these dims; this thread writes only units u0..u1 (columns g*hs + u0.. of hw) of
        // its rows b0.. of step t / the next step's state, which no other thread touches in this
        // step; hprev[t] and cprev[t] were completed in the previous step (by this thread, when
        // split by rows) and are only read here.
        unsafe {
            let a = self.hprev.at((st + b0) * nh, mb * nh);
            let out = OutPtr {
                ptr: self.hw.0.add(b0 * ng * hs),
                ld: ng * hs,
                n: ng * hs,
            };
            if let Some(q8) = &self.int8 {
                // F is f32 in int8 mode (DirCache::set_precision): the casts are identities.
                // This part quantizes its rows of the state (all units) for itself, multiplies
                // its panels in int32, and dequantizes its columns into hw.
                let a = std::slice::from_raw_parts(a.as_ptr() as *const f32, a.len());
                let ldq = int8::padded(nh);
                let codes = q8.hq.mut_at(part * nb * ldq, mb * ldq);
                let rq = q8.hrq.mut_at(part * nb, mb);
                for i in 0..mb {
                    let row = &a[i * nh..(i + 1) * nh];
                    rq[i] = int8::row_params(row);
                    int8::quantize_row(row, rq[i], &mut codes[i * ldq..(i + 1) * ldq]);
                }
                let ldc = ng * hs;
                for g in 0..ng {
                    int8::panel_gemm(
                        mb,
                        Groups::ONE,
                        nh,
                        codes,
                        ldq,
                        q8.wpack8,
                        g * hp + pan.start..g * hp + pan.end,
                        OutPtr {
                            ptr: q8.acc.0.add(b0 * ldc),
                            ld: ldc,
                            n: ldc,
                        },
                    );
                }
                for (i, &r) in rq.iter().enumerate() {
                    for g in 0..ng {
                        let c0 = g * hs + u0;
                        let hw = self.hw.mut_at((b0 + i) * ldc + c0, n);
                        int8::dequantize(
                            r,
                            q8.acc.at((b0 + i) * ldc + c0, n),
                            &q8.wscale[c0..c0 + n],
                            &q8.wsum[c0..c0 + n],
                            std::slice::from_raw_parts_mut(hw.as_mut_ptr() as *mut f32, n),
                        );
                    }
                }
            } else if let Some(w16) = self.wpack16 {
                // every gate's share in one call (on the bf16 multiplier, A is copied once for them)
                let sets: [Range<usize>; 4] =
                    std::array::from_fn(|g| g * hp + pan.start..g * hp + pan.end);
                // F is f32 in bf16 mode (DirCache::set_precision): the casts are identities
                bf16::panel_sets_raw(
                    mb,
                    nh,
                    std::slice::from_raw_parts(a.as_ptr() as *const f32, a.len()),
                    nh,
                    w16,
                    &sets[..ng],
                    OutPtr {
                        ptr: out.ptr as *mut f32,
                        ld: out.ld,
                        n: out.n,
                    },
                );
            } else {
                for g in 0..ng {
                    let cols = g * hp + pan.start..g * hp + pan.end;
                    panel_gemm_raw(mb, nh, a, nh, self.wpack, cols, out);
                }
            }
            let (hdst, cdst) = match next {
                Some(_) => (self.hprev, self.cprev),
                None => (self.h, self.c),
            };
            let dst_off = |b: usize| match next {
                Some(tn) => (sl(tn) * nb + b) * nh + u0,
                None => b * nh + u0,
            };
            for b in rows {
                let r = at + b;
                // state row of step t, and the row of the kept values
                let sr = st + b;
                let rk = if self.keep { r } else { b };
                let yrow = self.y.mut_at(r * self.ldy + u0, n);
                let hnew = hdst.mut_at(dst_off(b), n);
                if !active(self.lengths, t, b) {
                    // the state is carried unchanged; the output is zero
                    hnew.copy_from_slice(self.hprev.at(sr * nh + u0, n));
                    if self.kind == CellKind::Lstm {
                        cdst.mut_at(dst_off(b), n)
                            .copy_from_slice(self.cprev.at(sr * nh + u0, n));
                    }
                    yrow.fill(F::ZERO);
                    continue;
                }
                let xg = |g: usize| match &self.chunks {
                    Some(ch) => ch.xc.at(((t - t_min) * nb + b) * ldc + g * hs + u0, n),
                    None => self.xw.at(r * gh + g * nh + u0, n),
                };
                let bg = |g: usize| &self.bias[g * nh + u0..g * nh + u1];
                let hg = |g: usize| self.hw.at(b * ng * hs + g * hs + u0, n);
                let gg = |g: usize| self.gates.mut_at(rk * gh + g * nh + u0, n);
                match self.kind {
                    CellKind::Rnn(act) => {
                        let out = gg(0);
                        rnn_fwd(simd, act, xg(0), bg(0), hg(0), out);
                        hnew.copy_from_slice(out);
                    }
                    CellKind::Lstm => {
                        let cell = self.cell.mut_at(rk * nh + u0, n);
                        lstm_fwd(
                            simd,
                            xg(0),
                            xg(1),
                            xg(2),
                            xg(3),
                            bg(0),
                            bg(1),
                            bg(2),
                            bg(3),
                            hg(0),
                            hg(1),
                            hg(2),
                            hg(3),
                            self.cprev.at(sr * nh + u0, n),
                            gg(0),
                            gg(1),
                            gg(2),
                            gg(3),
                            cell,
                            hnew,
                        );
                        cdst.mut_at(dst_off(b), n).copy_from_slice(cell);
                    }
                    CellKind::Gru => gru_fwd(
                        simd,
                        xg(0),
                        xg(1),
                        xg(2),
                        bg(0),
                        bg(1),
                        bg(2),
                        hg(0),
                        hg(1),
                        hg(2),
                        &self.bhn[u0..u1],
                        self.hprev.at(sr * nh + u0, n),
                        gg(0),
                        gg(1),
                        gg(2),
                        self.hn.mut_at(rk * nh + u0, n),
                        hnew,
                    ),
                }
                if self.bf16 {
                    bf16::round_float(hnew);
                }
                yrow.copy_from_slice(hnew);
            }
        }
    }
}

/// The least I + H for which the backward keeps dG^T as well (see `backward`); why this value:
/// docs/performance.md, "Keeping dG^T in the backward".
const DGT_MIN_WORK: usize = 512;

/// Rows of the input product per thread and chunk, i.e. per stream of `W_ih` through the cache:
/// 64 rows make 32 flops per byte of weights.
const CHUNK_ROWS: usize = 64;

/// The most bytes of one thread's share of a chunk of the input product, so that it stays in L2
/// beside the streaming weights until its steps read it: a quarter of one core's L2 (read from
/// the machine; 256 KiB on the 1 MiB L2 of the Zen 5 where it was first measured).
pub(crate) fn chunk_bytes() -> usize {
    crate::ops::cpu::Caches::get().l2 / 4
}

/// In bf16 mode, whether the per-step product reads W_hh as bf16 panels rather than float32
/// panels of the rounded weights (the same bits either way): `--tune`'s override, else the rule
/// of [`super::bf16_choice::auto`] (sizes first, a measurement where they do not decide).
fn bf16_panels(split: &Split, d: &DirDims) -> bool {
    use super::schedule::PanelChoice;
    match super::schedule::get().panels {
        PanelChoice::F32 => return false,
        PanelChoice::Bf16 => return true,
        PanelChoice::Auto => {}
    }
    let rows = if split.by_rows {
        d.b / split.parts
    } else {
        d.b
    };
    super::bf16_choice::auto(d.gh(), d.h, rows, split.parts)
}

/// Steps per chunk of the input product computed inside the time loop, or None for one product
/// of all steps before it. Chunks are for inference only: there they spare the round trip of
/// every step's input product through memory and run it on the packed kernel; training keeps
/// all steps' products anyway (backward writes dG over them). They need f32 and a vector kernel
/// for the packed product (AVX-512 or AVX2), a tile's rows (8) per thread, and weights that fit
/// in half the L3 (chunks stream `W_ih` once per chunk). Why these limits: docs/performance.md,
/// "Chunked input product in inference".
fn chunk_len<F: Float>(split: &Split, d: &DirDims, keep: bool, cols: usize) -> Option<usize> {
    let forced = super::schedule::get().chunks;
    let f32_type = std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>();
    if keep || forced == ChunkChoice::Off || !f32_type {
        return None;
    }
    let weight_bytes = (d.i + d.h) * d.gh() * std::mem::size_of::<F>();
    let (rows, cols) = if split.by_rows {
        (d.b / split.parts, cols)
    } else {
        (d.b, cols / split.parts)
    };
    let vector_kernel = kernel_for::<F>() != Isa::Portable;
    let rule = vector_kernel && weight_bytes <= l3_bytes() / 2 && rows >= MIN_ROWS_PER_PART;
    if forced == ChunkChoice::Auto && !rule {
        return None;
    }
    let rows = rows.max(1);
    let mut len = (CHUNK_ROWS / rows).clamp(1, d.t);
    while len > 1 && len * rows * cols * std::mem::size_of::<F>() > chunk_bytes() {
        len -= 1;
    }
    Some(len)
}

/// Forward over the whole sequence; see [`super::forward`] and [`DirForward`] for the arguments.
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
    let (nt, nb, nh) = (d.t, d.b, d.h);
    debug_assert_eq!(d.p, nh, "the fast driver has no projection");
    let ng = d.kind.gates();
    let gh = ng * nh;
    let is_lstm = d.kind == CellKind::Lstm;
    let is_gru = d.kind == CellKind::Gru;
    let c = cache;
    if nt == 0 || nb == 0 {
        return;
    }
    assert!(
        y.len() >= ((nt * nb - 1) * ldy + nh),
        "forward: y too small"
    );

    let hp = panels(nh);
    let split = Split::plan(nb * gh * nh, nb, hp);
    // the input product: per chunk of steps inside the time loop, or all steps at once here
    // (xw = X W_ih^T); either way without the biases, which the gate pass adds: bias = b_ih +
    // b_hh, except the GRU's b_hn, which r multiplies, kept apart
    let chunk = match input {
        // (int8 multiplies all steps' inputs at once, in int8; bf16 on its multiplier too)
        LayerInput::Dense { x, ld } if c.precision != Precision::Int8 && !tiles_for_input(c) => {
            chunk_len::<F>(&split, &d, c.keep, ng * hp * NR).map(|len| (x, ld, len))
        }
        LayerInput::Dense { .. } => None,
        LayerInput::OneHot { .. } => None,
    };
    match chunk {
        Some((_, _, len)) => {
            let wi = super::cache::wipack_len(&d);
            if stale_copy(&mut c.wipack, wi, &mut c.packed_ih, c.fixed_weights, w.w_ih) {
                pack_gates_t(&mut c.wipack[..wi], w.w_ih, ng, nh, d.i);
            }
            grow(&mut c.xc, super::cache::xc_len(&d, len));
        }
        None => match input {
            LayerInput::Dense { x, ld } if c.precision == Precision::Int8 => {
                input_projection_int8(c, w, x, ld)
            }
            LayerInput::Dense { x, ld } if tiles_for_input(c) => {
                input_projection_tiles(c, w, x, ld)
            }
            _ => input_projection(c, w, input, false),
        },
    }
    c.bias.fill(F::ZERO);
    let summed = if is_gru { 2 * nh } else { gh };
    if let Some(b_ih) = w.b_ih {
        c.bias.copy_from_slice(&b_ih[..gh]);
    }
    match w.b_hh {
        Some(b_hh) => {
            for (v, &bb) in c.bias[..summed].iter_mut().zip(&b_hh[..summed]) {
                *v += bb;
            }
            if is_gru {
                c.bhn.copy_from_slice(&b_hh[2 * nh..]);
            }
        }
        None => c.bhn.fill(F::ZERO),
    }
    let packed = ng * hp * nh * NR;
    let packed16 = bf16::packed_len(ng * hp, nh);
    let use16 = c.precision == Precision::Bf16 && bf16_panels(&split, &d);
    let is_int8 = c.precision == Precision::Int8;
    let packed8 = int8::packed_len(ng * hp, nh);
    if is_int8 {
        if stale_copy(
            &mut c.wpack8,
            packed8,
            &mut c.packed_hh8,
            c.fixed_weights,
            w.w_hh,
        ) {
            // SAFETY: F is f32 in int8 mode (DirCache::set_precision): the cast is an identity
            let w_hh =
                unsafe { std::slice::from_raw_parts(w.w_hh.as_ptr() as *const f32, gh * nh) };
            int8::quantize_pack_gates_t(
                &mut c.wpack8[..packed8],
                &mut c.wscale,
                &mut c.wsum,
                w_hh,
                ng,
                nh,
                nh,
            );
        }
        let ldq = int8::padded(nh);
        grow(&mut c.hq, split.parts * nb * ldq);
        grow(&mut c.hrq, split.parts * nb);
        grow(&mut c.acc, nb * ng * hp * NR);
    }
    if use16 {
        if stale_copy(
            &mut c.wpack16,
            packed16,
            &mut c.packed_hh16,
            c.fixed_weights,
            w.w_hh,
        ) {
            // through the float32 packing (its fast transposition) into the unused wpack
            pack_gates_t(&mut c.wpack[..packed], w.w_hh, ng, nh, nh);
            c.packed_hh = 0;
            // SAFETY: F is f32 in bf16 mode (DirCache::set_bf16): the cast is an identity
            let f = unsafe { std::slice::from_raw_parts(c.wpack.as_ptr() as *const f32, packed) };
            bf16::from_panels(&mut c.wpack16[..packed16], f, ng * hp, nh);
        }
    } else if stale_copy(
        &mut c.wpack,
        packed,
        &mut c.packed_hh,
        c.fixed_weights,
        w.w_hh,
    ) {
        pack_gates_t(&mut c.wpack[..packed], w.w_hh, ng, nh, nh);
    }

    // the state entering the first step (in its slot: see Fwd::step)
    let t0 = if d.reverse { nt - 1 } else { 0 };
    let s0 = if c.keep { t0 } else { t0 % 2 };
    let first = s0 * nb * nh..(s0 + 1) * nb * nh;
    match h0 {
        Some(h0) => c.hprev[first.clone()].copy_from_slice(&h0[..nb * nh]),
        None => c.hprev[first.clone()].fill(F::ZERO),
    }
    if c.precision == Precision::Bf16 {
        bf16::round_float(&mut c.hprev[first.clone()]);
    }
    if is_lstm {
        match c0 {
            Some(c0) => c.cprev[first].copy_from_slice(&c0[..nb * nh]),
            None => c.cprev[first].fill(F::ZERO),
        }
    }

    let simd = has_avx512();
    let ctx = Fwd {
        kind: d.kind,
        keep: c.keep,
        nt,
        nb,
        nh,
        reverse: d.reverse,
        lengths,
        wpack: &c.wpack[..packed],
        bf16: c.precision == Precision::Bf16,
        wpack16: use16.then(|| &c.wpack16[..packed16]),
        int8: is_int8.then(|| Int8Step {
            wpack8: &c.wpack8[..packed8],
            wscale: &c.wscale,
            wsum: &c.wsum,
            hq: Raw::of(&mut c.hq),
            hrq: Raw::of(&mut c.hrq),
            acc: Raw::of(&mut c.acc),
        }),
        bias: &c.bias,
        bhn: &c.bhn,
        xw: Raw::of(&mut c.xw),
        gates: Raw::of(&mut c.gates),
        hn: Raw::of(&mut c.hn),
        hprev: Raw::of(&mut c.hprev),
        cprev: Raw::of(&mut c.cprev),
        cell: Raw::of(&mut c.cell),
        hw: Raw::of(&mut c.hw),
        h: Raw::of(&mut c.h),
        c: Raw::of(&mut c.c),
        y: Raw::of(y),
        ldy,
        chunks: chunk.map(|(x, ldx, len)| Chunks {
            x,
            ldx,
            ni: d.i,
            wipack: &c.wipack[..ng * hp * d.i * NR],
            xc: Raw::of(&mut c.xc),
            len,
        }),
    };
    split.for_steps(nt, &|s, k| ctx.step(s, k, split.part(k), simd));
    h_n[..nb * nh].copy_from_slice(&c.h);
    if is_lstm {
        c_n[..nb * nh].copy_from_slice(&c.c);
    }
}

/// Everything one backward step needs, as raw views (threads write disjoint units).
struct Bwd<'a, F> {
    kind: CellKind,
    nt: usize,
    nb: usize,
    nh: usize,
    reverse: bool,
    lengths: Option<&'a [usize]>,
    wpack: &'a [F],
    /// bf16 on its multiplier (AMX tiles or `vdpbf16ps`): W_hh as bf16 panels, dh's product on
    /// it (`wpack` unused)
    wpack16: Option<&'a [u16]>,
    dy: Option<(&'a [F], usize)>,
    gates: &'a [F],
    hn: &'a [F],
    hprev: &'a [F],
    cprev: &'a [F],
    cell: &'a [F],
    // dG (written over xw) and the GRU's recurrent-side dGh
    dg: Raw<F>,
    dgh: Raw<F>,
    dh: Raw<F>,
    dh_next: Raw<F>,
    dc: Raw<F>,
    direct: Raw<F>,
    /// dG again, transposed: (G*H, T*B), for the weight gradients (`DirCache::dgt`)
    dgt: Option<Raw<F>>,
    /// or so as bf16 bits (`DirCache::dgt16`, row stride `dgt16_ld`)
    dgt16: Option<Raw<u16>>,
    /// bf16 training: dG (and the GRU's dGh) rounded to bf16 as they are written, since every
    /// product they enter (dh, the weight and input gradients) multiplies bf16 values
    bf16: bool,
}
// SAFETY: see `Raw`; the shared slices are read-only.
unsafe impl<F: Sync> Sync for Bwd<'_, F> {}

impl<F: Float> Bwd<'_, F> {
    fn t_of(&self, s: usize) -> usize {
        if self.reverse {
            self.nt - 1 - s
        } else {
            s
        }
    }

    /// The recurrent product of step `t` for the state units of panels `pan`, batch rows `rows`:
    /// `dh_next[rows, U] = dGh_t[rows] W_hh[:, U]`, plus the direct paths.
    #[inline(always)]
    fn product(&self, t: usize, pan: Range<usize>, rows: Range<usize>) {
        let (nb, nh) = (self.nb, self.nh);
        let gh = self.kind.gates() * nh;
        let (u0, u1) = (pan.start * NR, (pan.end * NR).min(nh));
        if u0 >= u1 {
            return;
        }
        let n = u1 - u0;
        let (b0, mb) = (rows.start, rows.len());
        if mb == 0 {
            return;
        }
        let is_gru = self.kind == CellKind::Gru;
        // SAFETY: dG_t / dGh_t were completed by all threads in the previous parallel region and
        // are only read now; this thread writes columns u0..u1 of dh_next, and reads its own
        // units of dh and direct.
        unsafe {
            let src = if is_gru { self.dgh } else { self.dg };
            let a = src.at((t * nb + b0) * gh, mb * gh);
            let out = OutPtr {
                ptr: self.dh_next.0.add(b0 * nh),
                ld: nh,
                n: nh,
            };
            match self.wpack16 {
                // F is f32 in bf16 mode (DirCache::set_precision): the casts are identities; dG
                // holds bf16 values (rounded as written)
                Some(w16) => bf16::panel_gemm_tiles(
                    crate::ops::tiles::TileRun::Native,
                    mb,
                    Groups::ONE,
                    gh,
                    std::slice::from_raw_parts(a.as_ptr() as *const f32, a.len()),
                    gh,
                    w16,
                    pan,
                    OutPtr {
                        ptr: out.ptr as *mut f32,
                        ld: out.ld,
                        n: out.n,
                    },
                    false,
                ),
                None => panel_gemm_raw(mb, gh, a, gh, self.wpack, pan, out),
            }
            for b in rows {
                let dn = self.dh_next.mut_at(b * nh + u0, n);
                if !active(self.lengths, t, b) {
                    // the state was carried unchanged: so is its gradient
                    dn.copy_from_slice(self.dh.at(b * nh + u0, n));
                } else if is_gru {
                    // forward was: h = (1 - z) * n + z * h_prev
                    for (v, &e) in dn.iter_mut().zip(self.direct.at(b * nh + u0, n)) {
                        *v += e;
                    }
                }
            }
        }
    }

    /// The element-wise backward of step `t` for the units of panels `pan`, batch rows `rows`.
    #[inline(always)]
    fn elementwise(&self, t: usize, pan: Range<usize>, rows: Range<usize>, simd: bool) {
        let (nb, nh) = (self.nb, self.nh);
        let ng = self.kind.gates();
        let gh = ng * nh;
        let (u0, u1) = (pan.start * NR, (pan.end * NR).min(nh));
        if u0 >= u1 {
            return;
        }
        let n = u1 - u0;
        let (b0, mb) = (rows.start, rows.len());
        // SAFETY: this thread writes units u0..u1 of its rows of dh, dc, direct and of step t's
        // rows of dG and dGh; dh_next's units u0..u1 of these rows were written by this same
        // thread.
        unsafe {
            for b in rows {
                let r = t * nb + b;
                let on = active(self.lengths, t, b);
                // dh = dL/dh_t: from the step after (dh_next) plus from this step's output (dy)
                let dh = self.dh.mut_at(b * nh + u0, n);
                dh.copy_from_slice(self.dh_next.at(b * nh + u0, n));
                if let (Some((dy, ldy)), true) = (self.dy, on) {
                    for (v, &e) in dh.iter_mut().zip(&dy[r * ldy + u0..r * ldy + u1]) {
                        *v += e;
                    }
                }
                let dgg = |g: usize| self.dg.mut_at(r * gh + g * nh + u0, n);
                let dhg = |g: usize| self.dgh.mut_at(r * gh + g * nh + u0, n);
                if !on {
                    for g in 0..ng {
                        dgg(g).fill(F::ZERO);
                        if self.kind == CellKind::Gru {
                            dhg(g).fill(F::ZERO);
                        }
                    }
                    continue;
                }
                let gv = |g: usize| &self.gates[r * gh + g * nh + u0..r * gh + g * nh + u1];
                let span = r * nh + u0..r * nh + u1;
                match self.kind {
                    CellKind::Rnn(act) => rnn_bwd(simd, act, gv(0), dh, dgg(0)),
                    CellKind::Lstm => lstm_bwd(
                        simd,
                        gv(0),
                        gv(1),
                        gv(2),
                        gv(3),
                        &self.cprev[span.clone()],
                        &self.cell[span.clone()],
                        dh,
                        self.dc.mut_at(b * nh + u0, n),
                        dgg(0),
                        dgg(1),
                        dgg(2),
                        dgg(3),
                    ),
                    CellKind::Gru => gru_bwd(
                        simd,
                        gv(0),
                        gv(1),
                        gv(2),
                        &self.hn[span.clone()],
                        &self.hprev[span.clone()],
                        dh,
                        dgg(0),
                        dgg(1),
                        dgg(2),
                        dhg(0),
                        dhg(1),
                        dhg(2),
                        self.direct.mut_at(b * nh + u0, n),
                    ),
                }
                if self.bf16 {
                    for g in 0..ng {
                        bf16::round_float(dgg(g));
                        if self.kind == CellKind::Gru {
                            bf16::round_float(dhg(g));
                        }
                    }
                }
            }
            if let Some(dgt) = self.dgt {
                // the block of dG just written (this thread's rows and units, every gate), into
                // its place in dG^T while it is still in cache
                let ld = dgt_ld(self.nt * nb);
                for g in 0..ng {
                    transpose_raw(
                        mb,
                        n,
                        self.dg.0.add((t * nb + b0) * gh + g * nh + u0),
                        gh,
                        dgt.0.add((g * nh + u0) * ld + t * nb + b0),
                        ld,
                    );
                }
            }
            if let Some(dgt16) = self.dgt16 {
                // the same as bf16 bits (F is f32 in bf16 mode; dG was rounded above)
                let ld = dgt16_ld(self.nt * nb);
                for g in 0..ng {
                    transpose_bf16_raw(
                        mb,
                        n,
                        self.dg.0.add((t * nb + b0) * gh + g * nh + u0) as *const f32,
                        gh,
                        dgt16.0.add((g * nh + u0) * ld + t * nb + b0),
                        ld,
                    );
                }
            }
        }
    }

    /// One parallel region: the product of the step walked before (`prev`), then the
    /// element-wise part of step `s` (in reverse walking order), for the units of `pan` of the
    /// batch rows `rows`.
    fn run(
        &self,
        prev: Option<usize>,
        s: Option<usize>,
        (pan, rows): (Range<usize>, Range<usize>),
        simd: bool,
    ) {
        if let Some(p) = prev {
            self.product(self.t_of(p), pan.clone(), rows.clone());
        }
        if let Some(s) = s {
            self.elementwise(self.t_of(s), pan, rows, simd);
        }
    }
}

/// Backward over the whole sequence; see [`super::backward`] and [`DirBackward`] for the
/// arguments.
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
    let (nt, nb, nh) = (d.t, d.b, d.h);
    let gh = d.gh();
    let is_lstm = d.kind == CellKind::Lstm;
    assert!(
        cache.keep,
        "backward after a forward that did not keep its steps (inference mode)"
    );
    let c = cache;
    if nt == 0 || nb == 0 {
        return;
    }
    if let Some((dy, ldy)) = dy {
        assert!(
            dy.len() >= (nt * nb - 1) * ldy + nh,
            "backward: dy too small"
        );
    }
    match dh_n {
        Some(v) => c.dh_next.copy_from_slice(&v[..nb * nh]),
        None => c.dh_next.fill(F::ZERO),
    }
    if is_lstm {
        match dc_n {
            Some(v) => c.dc.copy_from_slice(&v[..nb * nh]),
            None => c.dc.fill(F::ZERO),
        }
    }
    let pp = panels(nh);
    let packed = pp * gh * NR;
    // bf16 on its multiplier (AMX tiles or `vdpbf16ps`, ops::multiplier): dh's product on it,
    // W_hh as bf16 panels (in wpack16)
    let tiles = c.precision == Precision::Bf16 && crate::ops::multiplier::native();
    let packed16 = bf16::packed_len(pp, gh);
    if tiles {
        grow(&mut c.wpack16, packed16);
        // SAFETY: F is f32 in bf16 mode (DirCache::set_precision): the cast is an identity
        let w_hh = unsafe { std::slice::from_raw_parts(w.w_hh.as_ptr() as *const f32, gh * nh) };
        bf16::pack_n(&mut c.wpack16[..packed16], w_hh, nh, gh, nh);
        c.packed_hh16 = 0;
    } else {
        pack_n(&mut c.wpack[..packed], w.w_hh, gh, nh);
    }
    // wpack (or wpack16) now holds the backward's packing of W_hh, not the forward's
    c.packed_hh = 0;

    let split = Split::plan(nb * gh * nh, nb, pp);
    let simd = has_avx512();
    // dG^T for the weight gradients, when both come from dG (every cell but the GRU, whose
    // recurrent side has its own dGh), the input is dense, and each element of dG takes part in
    // enough of their multiply-adds (I + H) to pay for writing it a second time; with AVX-512
    // only, where the transposition moves whole 16 x 16 tiles (with AVX2's 8 x 8 tiles it
    // measured no gain).
    // Why these limits: docs/performance.md, "Keeping dG^T in the backward".
    let dgt = d.kind != CellKind::Gru
        && matches!(input, LayerInput::Dense { .. })
        && d.i + d.p >= DGT_MIN_WORK
        && simd;
    // with the products on `vdpbf16ps`, dG^T kept as bf16 bits, as that kernel reads it
    let in_bf16 = dgt_in_bf16(c);
    match (dgt, in_bf16) {
        (false, _) => {}
        (true, false) => {
            grow(&mut c.dgt, super::cache::dgt_len(&d));
        }
        (true, true) => grow_dgt16(c),
    }
    let ctx = Bwd {
        kind: d.kind,
        nt,
        nb,
        nh,
        reverse: d.reverse,
        lengths,
        wpack: &c.wpack[..packed],
        wpack16: tiles.then(|| &c.wpack16[..packed16]),
        dy,
        gates: &c.gates,
        hn: &c.hn,
        hprev: &c.hprev,
        cprev: &c.cprev,
        cell: &c.cell,
        dg: Raw::of(&mut c.xw),
        dgh: Raw::of(&mut c.dgh),
        dh: Raw::of(&mut c.dh),
        dh_next: Raw::of(&mut c.dh_next),
        dc: Raw::of(&mut c.dc),
        direct: Raw::of(&mut c.direct),
        dgt: (dgt && !in_bf16).then(|| Raw::of(&mut c.dgt)),
        dgt16: (dgt && in_bf16).then(|| Raw::of(&mut c.dgt16)),
        bf16: c.precision == Precision::Bf16,
    };
    // walking step i runs the product of the step walked before and the element-wise part of
    // step nt-1-i; one more walking step finishes the last product
    split.for_steps(nt + 1, &|i, k| {
        let s = (i < nt).then(|| nt - 1 - i);
        let prev = (i > 0).then(|| nt - i);
        ctx.run(prev, s, split.part(k), simd)
    });
    dh0[..nb * nh].copy_from_slice(&c.dh_next);
    if is_lstm {
        dc0[..nb * nh].copy_from_slice(&c.dc);
    }
    weight_grads(c, w, &mut grads, input, dx, dgt);
}
