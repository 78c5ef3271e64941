//! int8: quantization of weights and activations, and the per-step product on int8 panels with
//! int32 sums.
//!
//! The scheme is PyTorch's dynamic quantization on x86 (`quantize_dynamic` with fbgemm):
//! - weights symmetric per output row: `w ~ s_w[j] * q_w`, `q_w` in -127..=127,
//!   `s_w[j] = max_k |W[j][k]| / 127`;
//! - activations asymmetric per row, on 7 bits ("reduce_range"): `a ~ s_a * (q_a - z)`, `q_a` in
//!   0..=127, so that the AVX2 instruction without VNNI (`vpmaddubsw`, which adds two u8 x s8
//!   products in a saturating i16) never saturates: 2 x 127 x 127 = 32,258 < 32,767;
//! - `C[i][j] = s_a[i] s_w[j] (sum_k q_a[i][k] q_w[j][k] - z[i] colsum[j])`, the sum exact in
//!   int32 (|sum| <= K x 127 x 127 fits for K below 133,000).
//!
//! The packed layout is the one the int8 dot-product instructions read (AVX-VNNI and
//! AVX512-VNNI `vpdpbusd`, AMX `tdpbusd`): panels of [`NR`] columns, rows taken four at a time,
//! each 32-bit lane holding rows `4p..4p+3` of one column. A quarter of float32's bytes.
//!
//! Kernels: the portable loop, AVX2 (`vpmaddubsw`, `vpmaddwd` by ones, `vpaddd`) and AVX512-VNNI
//! (`vpdpbusd zmm`: one instruction per quad row of a panel and batch row). Integer sums are
//! exact, so every kernel gives the same int32 results, bit for bit.

use super::cpu::Isa;
use super::panel::{panels, Groups, OutPtr, NR};
use super::tiles::TileRun;
use std::ops::Range;

/// Calls `$f($args)` compiled for the widest vectors this CPU has (AVX-512, else AVX2 + FMA,
/// else the build's baseline): the same loop and the same operations per element, so the same
/// bits, in a wider build. `$f` must be `#[inline(always)]` so that each build vectorizes it.
macro_rules! widest {
    ($f:ident($($a:ident: $t:ty),*) $(-> $r:ty)?) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw")]
            unsafe fn wide512($($a: $t),*) $(-> $r)? {
                $f($($a),*)
            }
            #[target_feature(enable = "avx2,fma")]
            unsafe fn wide256($($a: $t),*) $(-> $r)? {
                $f($($a),*)
            }
            if Isa::Avx512.available() {
                // SAFETY: the CPU runs AVX-512 (checked).
                unsafe { wide512($($a),*) }
            } else if Isa::Avx2Fma.available() {
                // SAFETY: the CPU runs AVX2 and FMA (checked).
                unsafe { wide256($($a),*) }
            } else {
                $f($($a),*)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $f($($a),*)
        }
    }};
}

/// The largest activation code: 7 bits.
pub const QA_MAX: i32 = 127;

/// Row quads a packed panel of `k` rows has.
pub fn quads(k: usize) -> usize {
    k.div_ceil(4)
}

/// Bytes of `n_panels` packed panels of `k` rows.
pub fn packed_len(n_panels: usize, k: usize) -> usize {
    n_panels * quads(k) * 4 * NR
}

/// The row stride activations of `k` columns need: `k` rounded up to whole quads.
pub fn padded(k: usize) -> usize {
    quads(k) * 4
}

/// Symmetric int8 quantization of each row of `w` (`n` rows of `k`): the codes (row-major, as
/// `w`) and each row's scale (0 for a row of zeros, whose codes are 0). Rounding to nearest,
/// ties to even.
pub fn quantize_rows(w: &[f32], n: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
    assert!(w.len() >= n * k, "int8::quantize_rows: W too small");
    let mut q = vec![0i8; n * k];
    let mut scales = vec![0f32; n];
    let mut bytes = vec![0u8; k];
    for j in 0..n {
        let row = &w[j * k..(j + 1) * k];
        let amax = abs_max(row);
        if !(amax > 0.0) || !amax.is_finite() {
            continue;
        }
        let s = amax / 127.0;
        scales[j] = s;
        codes(row, Scale::Div(s), 0, -127, &mut bytes);
        for (o, &b) in q[j * k..(j + 1) * k].iter_mut().zip(&bytes) {
            *o = b as i8;
        }
    }
    (q, scales)
}

/// How [`codes`] scales a value before rounding.
#[derive(Clone, Copy)]
enum Scale {
    /// `x / s`: the weights' definition.
    Div(f32),
    /// `x * inv`: the activations', once per step.
    Mul(f32),
}

/// `out[i] = clamp(round(scale(x[i])) + add, lo, 127) as u8`: each value scaled, rounded to the
/// nearest integer (ties to even), offset by `add` and clamped to `lo..=127` (both schemes'
/// codes end at 127), then stored as its low byte (a negative weight code in two's complement,
/// as `i8` reads it). Sixteen values at a time with AVX-512, else four with SSE2's conversion on
/// x86-64 (the same rounding as [`round_even`]); the rest one at a time.
fn codes(x: &[f32], scale: Scale, add: i32, lo: i32, out: &mut [u8]) {
    let n = x.len().min(out.len());
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    #[cfg(target_arch = "x86_64")]
    let done = if Isa::Avx512.available() {
        // SAFETY: the CPU runs AVX-512 (checked).
        unsafe { codes_avx512(&x[..n], scale, add, lo, out) }
    } else {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of every x86-64 CPU; the loads read whole chunks of x.
        unsafe {
            let (vadd, vlo, vhi) = (
                _mm_set1_epi32(add),
                _mm_set1_epi32(lo),
                _mm_set1_epi32(QA_MAX),
            );
            let mut lanes = [0i32; 4];
            for (xs, os) in x[..n].chunks_exact(4).zip(out.chunks_exact_mut(4)) {
                let v = _mm_loadu_ps(xs.as_ptr());
                let v = match scale {
                    Scale::Div(s) => _mm_div_ps(v, _mm_set1_ps(s)),
                    Scale::Mul(inv) => _mm_mul_ps(v, _mm_set1_ps(inv)),
                };
                let q = _mm_add_epi32(_mm_cvtps_epi32(v), vadd);
                // clamp without SSE4.1's min/max: select by comparisons
                let below = _mm_cmpgt_epi32(vlo, q);
                let q = _mm_or_si128(_mm_and_si128(below, vlo), _mm_andnot_si128(below, q));
                let above = _mm_cmpgt_epi32(q, vhi);
                let q = _mm_or_si128(_mm_and_si128(above, vhi), _mm_andnot_si128(above, q));
                _mm_storeu_si128(lanes.as_mut_ptr() as *mut __m128i, q);
                for (o, &c) in os.iter_mut().zip(&lanes) {
                    *o = c as u8;
                }
            }
        }
        n / 4 * 4
    };
    for (o, &v) in out[done..n].iter_mut().zip(&x[done..n]) {
        let r = match scale {
            Scale::Div(s) => round_even(v / s),
            Scale::Mul(inv) => round_even(v * inv),
        };
        *o = (r as i32 + add).clamp(lo, QA_MAX) as u8;
    }
}

/// [`codes`] sixteen values at a time: the same scaling, the same conversion (to nearest, ties
/// to even, in the default rounding mode) and clamp, so the same codes. Returns how many it did.
///
/// # Safety
/// The CPU runs AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn codes_avx512(x: &[f32], scale: Scale, add: i32, lo: i32, out: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    let (vadd, vlo, vhi) = (
        _mm512_set1_epi32(add),
        _mm512_set1_epi32(lo),
        _mm512_set1_epi32(QA_MAX),
    );
    for (xs, os) in x.chunks_exact(16).zip(out.chunks_exact_mut(16)) {
        // SAFETY: xs holds 16 values, os 16 bytes.
        unsafe {
            let v = _mm512_loadu_ps(xs.as_ptr());
            let v = match scale {
                Scale::Div(s) => _mm512_div_ps(v, _mm512_set1_ps(s)),
                Scale::Mul(inv) => _mm512_mul_ps(v, _mm512_set1_ps(inv)),
            };
            let q = _mm512_add_epi32(_mm512_cvtps_epi32(v), vadd);
            let q = _mm512_min_epi32(_mm512_max_epi32(q, vlo), vhi);
            // each lane's low byte (vpmovdb truncates), as `as u8` does
            _mm_storeu_si128(os.as_mut_ptr() as *mut __m128i, _mm512_cvtepi32_epi8(q));
        }
    }
    x.len() / 16 * 16
}

/// The largest |x| (0 for none; NaN-free input), in eight independent lanes so that it compiles
/// to vector code.
fn abs_max(x: &[f32]) -> f32 {
    let mut m = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in m.iter_mut().zip(c) {
            *a = if v.abs() > *a { v.abs() } else { *a };
        }
    }
    let tail = chunks.remainder().iter().fold(0f32, |a, v| a.max(v.abs()));
    m.iter().fold(tail, |a, &v| a.max(v))
}

/// `x` rounded to the nearest integer, ties to even (x finite, well inside i32). On x86-64 one
/// SSE2 conversion in the default rounding mode; `round_ties_even` would be a library call
/// below SSE4.1, most of the time of quantizing.
#[inline(always)]
fn round_even(x: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_cvtss_si32, _mm_set_ss};
        // SAFETY: SSE is part of every x86-64 CPU (the target's baseline).
        unsafe { _mm_cvtss_si32(_mm_set_ss(x)) as f32 }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        x.round_ties_even()
    }
}

/// The sum of each row's codes (`n` rows of `k`): the zero point's correction.
pub fn row_sums(q: &[i8], n: usize, k: usize) -> Vec<i32> {
    (0..n)
        .map(|j| q[j * k..(j + 1) * k].iter().map(|&v| v as i32).sum())
        .collect()
}

/// Packs the codes of `W^T` for `C = A W^T`, `q` being the `(G*H, K)` codes of
/// [`quantize_rows`], with the panel order of [`super::panel::pack_gates_t`] and this module's
/// quad layout: element (row `p`, column `j`) of panel `q` at
/// `q * packed_len(1, K) + ((p / 4) * NR + j) * 4 + p % 4`. Padding is zero.
pub fn pack_gates_t(dst: &mut [i8], q: &[i8], g: usize, h: usize, k: usize) {
    let hp = panels(h);
    let size = packed_len(1, k);
    assert_eq!(dst.len(), g * hp * size, "int8::pack_gates_t: dst size");
    assert!(q.len() >= g * h * k, "int8::pack_gates_t: codes too small");
    let per = (g * hp).div_ceil(super::gemm::threads()).max(1) * size;
    super::for_parts_mut(dst, per, dst.len() >= 1 << 16, |e0, part| {
        for (i, panel) in part.chunks_exact_mut(size).enumerate() {
            let pq = e0 / size + i;
            let (gi, u) = (pq / hp, pq % hp);
            let cols = NR.min(h - u * NR);
            panel.fill(0);
            for j in 0..cols {
                let row = &q[(gi * h + u * NR + j) * k..][..k];
                // four codes of a row at a time: one quad of the column
                for (p4, quad) in row.chunks(4).enumerate() {
                    let at = (p4 * NR + j) * 4;
                    panel[at..at + quad.len()].copy_from_slice(quad);
                }
            }
        }
    });
}

/// Quantizes `W` (`(G*H, K)`, PyTorch's layout) per row and packs its codes for `C = A W^T`
/// ([`pack_gates_t`] into `dst`), with each row's scale and code sum laid out in packed column
/// order (`g * panels(H) * NR + u`; 0 in the padding), as [`dequantize`] reads them.
pub fn quantize_pack_gates_t(
    dst: &mut [i8],
    scale: &mut Vec<f32>,
    sum: &mut Vec<i32>,
    w: &[f32],
    g: usize,
    h: usize,
    k: usize,
) {
    let (q, s) = quantize_rows(&w[..g * h * k], g * h, k);
    pack_gates_t(dst, &q, g, h, k);
    let sums = row_sums(&q, g * h, k);
    let hs = panels(h) * NR;
    scale.clear();
    scale.resize(g * hs, 0.0);
    sum.clear();
    sum.resize(g * hs, 0);
    for gi in 0..g {
        scale[gi * hs..gi * hs + h].copy_from_slice(&s[gi * h..(gi + 1) * h]);
        sum[gi * hs..gi * hs + h].copy_from_slice(&sums[gi * h..(gi + 1) * h]);
    }
}

/// A weight matrix in int8 for `C = A W^T`: `W` (`(G*H, K)`, gate blocks of `H` rows, PyTorch's
/// layout) quantized per row and packed ([`quantize_pack_gates_t`]), with the rows' scales and
/// code sums. Read-only once prepared, so that the threads share it; each thread's products keep
/// their activations' codes and int32 sums in a [`QuantScratch`] of their own.
#[derive(Default)]
pub struct QuantMatrix {
    dims: (usize, usize, usize),
    packed: super::aligned::AVec<i8>,
    scale: Vec<f32>,
    sum: Vec<i32>,
    /// The address of the weights packed last, while they are fixed (0: pack again).
    from: usize,
}

/// One thread's scratch for [`QuantMatrix::product`]: the codes of its rows and their int32
/// sums, grown to the largest product asked of it.
#[derive(Default)]
pub struct QuantScratch {
    codes: super::aligned::AVec<u8>,
    acc: super::aligned::AVec<i32>,
}

impl QuantScratch {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.codes.len() + 4 * self.acc.len()
    }
}

impl QuantMatrix {
    /// Quantizes and packs `w` (`g` blocks of `h` rows of `k`), unless `fixed` and `w` (by its
    /// address) is what this matrix was last prepared from.
    pub fn prepare(&mut self, w: &[f32], g: usize, h: usize, k: usize, fixed: bool) {
        let key = w.as_ptr() as usize;
        if fixed && self.from == key && self.dims == (g, h, k) {
            return;
        }
        let n = packed_len(g * panels(h), k);
        if self.packed.len() != n {
            self.packed = super::aligned::AVec::zeroed(n);
        }
        quantize_pack_gates_t(&mut self.packed, &mut self.scale, &mut self.sum, w, g, h, k);
        self.dims = (g, h, k);
        self.from = if fixed { key } else { 0 };
    }

    /// Forgets which weights were packed: the next [`QuantMatrix::prepare`] packs again.
    pub fn forget(&mut self) {
        self.from = 0;
    }

    /// `out (m, G*H) = A W^T` at row stride `ldo`, `A` (`m` rows of `k` at stride `lda`)
    /// quantized per row as every int8 product quantizes its activations: `s_a s_w (q_a q_w^T -
    /// z rowsum)`, the sums exact in int32; `s` the calling thread's scratch.
    ///
    /// # Panics
    /// Before [`QuantMatrix::prepare`], or when `a` or `out` is too small.
    pub fn product(
        &self,
        a: &[f32],
        m: usize,
        lda: usize,
        out: &mut [f32],
        ldo: usize,
        s: &mut QuantScratch,
    ) {
        let (g, h, k) = self.dims;
        assert!(
            !self.packed.is_empty(),
            "QuantMatrix::product before prepare"
        );
        if m == 0 {
            return;
        }
        assert!(
            a.len() >= (m - 1) * lda + k && out.len() >= (m - 1) * ldo + g * h && ldo >= g * h,
            "QuantMatrix::product: A or C too small"
        );
        let (ldq, hs) = (padded(k), panels(h) * NR);
        let ldc = g * hs;
        if s.codes.len() < m * ldq {
            s.codes = super::aligned::AVec::zeroed(m * ldq);
        }
        if s.acc.len() < m * ldc {
            s.acc = super::aligned::AVec::zeroed(m * ldc);
        }
        let rq = quantize_activations(a, m, k, lda, &mut s.codes, ldq);
        let c = OutPtr {
            ptr: s.acc.as_mut_ptr(),
            ld: ldc,
            n: ldc,
        };
        // SAFETY: `codes` holds m rows of ldq codes, `packed` g * panels(h) panels of k rows
        // (prepare), `acc` m rows of ldc sums, owned by `s`.
        unsafe {
            panel_gemm(
                m,
                Groups::ONE,
                k,
                &s.codes,
                ldq,
                &self.packed,
                0..g * panels(h),
                c,
            )
        };
        for (i, &r) in rq.iter().enumerate() {
            for gi in 0..g {
                let col = i * ldc + gi * hs;
                dequantize(
                    r,
                    &s.acc[col..col + h],
                    &self.scale[gi * hs..gi * hs + h],
                    &self.sum[gi * hs..gi * hs + h],
                    &mut out[i * ldo + gi * h..i * ldo + (gi + 1) * h],
                );
            }
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.packed.len() + 4 * (self.scale.len() + self.sum.len())
    }
}

/// One row of a product back in float32: `out[j] = a.scale * scale[j] * (acc[j] - a.zero *
/// sum[j])`, `acc` the int32 sums of the row's codes against the weight codes, `scale` and
/// `sum` the weight rows' ([`quantize_pack_gates_t`]).
pub fn dequantize(a: RowQuant, acc: &[i32], scale: &[f32], sum: &[i32], out: &mut [f32]) {
    widest!(dequantize_loop(a: RowQuant, acc: &[i32], scale: &[f32], sum: &[i32], out: &mut [f32]))
}

#[inline(always)]
fn dequantize_loop(a: RowQuant, acc: &[i32], scale: &[f32], sum: &[i32], out: &mut [f32]) {
    for (((o, &s), &w), &z) in out.iter_mut().zip(acc).zip(scale).zip(sum) {
        *o = a.scale * w * (s - a.zero * z) as f32;
    }
}

/// One row's activation quantization: `a ~ scale * (code - zero)`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RowQuant {
    pub scale: f32,
    pub zero: i32,
}

/// Quantizes `m` rows of `k` activations (row stride `lda`) to 7-bit codes in `dst` (row stride
/// `ldq >= padded(k)`, the padding set to 0), each row with its own scale and zero point
/// (PyTorch's asymmetric scheme over `[min(a, 0), max(a, 0)]`). Returns the rows' parameters.
pub fn quantize_activations(
    a: &[f32],
    m: usize,
    k: usize,
    lda: usize,
    dst: &mut [u8],
    ldq: usize,
) -> Vec<RowQuant> {
    assert!(
        ldq >= padded(k),
        "int8::quantize_activations: ldq below padded(k)"
    );
    assert!(
        m == 0 || dst.len() >= (m - 1) * ldq + padded(k),
        "int8: dst too small"
    );
    (0..m)
        .map(|i| {
            let row = &a[i * lda..i * lda + k];
            let out = &mut dst[i * ldq..i * ldq + padded(k)];
            let rq = row_params(row);
            quantize_row(row, rq, out);
            rq
        })
        .collect()
}

/// The scale and zero point of one row.
pub fn row_params(row: &[f32]) -> RowQuant {
    let (lo, hi) = widest!(min_max(row: &[f32]) -> (f32, f32));
    let span = hi - lo;
    if !(span > 0.0) || !span.is_finite() {
        return RowQuant {
            scale: 0.0,
            zero: 0,
        };
    }
    let scale = span / QA_MAX as f32;
    let zero = round_even(-lo / scale).clamp(0.0, QA_MAX as f32) as i32;
    RowQuant { scale, zero }
}

/// The least and largest of 0 and the values of `row` (NaN ignored), in sixteen independent
/// lanes so that it compiles to vector code. Minimum and maximum are exact, so the lanes give
/// what one pass in order gives.
#[inline(always)]
fn min_max(row: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = ([0f32; 16], [0f32; 16]);
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        for ((l, h), &v) in lo.iter_mut().zip(&mut hi).zip(c) {
            *l = if v < *l { v } else { *l };
            *h = if v > *h { v } else { *h };
        }
    }
    let fold = |(lo, hi): (f32, f32), &v: &f32| (lo.min(v), hi.max(v));
    let tail = chunks.remainder().iter().fold((0f32, 0f32), fold);
    let lo = lo.iter().fold(tail.0, |a, &v| a.min(v));
    let hi = hi.iter().fold(tail.1, |a, &v| a.max(v));
    (lo, hi)
}

/// Writes the codes of `row` under `rq` into `out` (at least `row.len()` bytes; the rest 0).
pub fn quantize_row(row: &[f32], rq: RowQuant, out: &mut [u8]) {
    out.fill(0);
    if rq.scale == 0.0 {
        return;
    }
    codes(row, Scale::Mul(1.0 / rq.scale), rq.zero, 0, out);
}

/// An int8 product kernel: the instructions that multiply the codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// AVX512-VNNI `vpdpbusd zmm`: 16 columns x 4 codes per instruction.
    Vnni512,
    /// AVX-VNNI `vpdpbusd ymm` (the VEX form, on CPUs with AVX2 and AVX-VNNI but not
    /// necessarily AVX-512): 8 columns x 4 codes per instruction.
    AvxVnni,
    /// AVX2 without VNNI: `vpmaddubsw` (pairs into a saturating i16, which the 7-bit codes never
    /// reach), `vpmaddwd` by ones, `vpaddd`: three instructions where VNNI needs one.
    Avx2,
    /// The plain loop.
    Portable,
}

impl Kernel {
    /// The name `recur bench` and the tests print.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Vnni512 => "avx512_vnni",
            Kernel::AvxVnni => "avx_vnni",
            Kernel::Avx2 => "avx2",
            Kernel::Portable => "portable",
        }
    }

    /// The vector instruction set the kernel's loop is built for.
    pub fn isa(self) -> Isa {
        match self {
            Kernel::Vnni512 => Isa::Avx512,
            Kernel::AvxVnni | Kernel::Avx2 => Isa::Avx2Fma,
            Kernel::Portable => Isa::Portable,
        }
    }
}

/// The int8 kernels, best first.
pub const KERNELS: [Kernel; 4] = [
    Kernel::Vnni512,
    Kernel::AvxVnni,
    Kernel::Avx2,
    Kernel::Portable,
];

/// Whether this CPU runs the int8 kernel `kernel`.
pub fn available(kernel: Kernel) -> bool {
    match kernel {
        Kernel::Vnni512 => Isa::Avx512.available() && super::cpu::has_avx512_vnni(),
        Kernel::AvxVnni => Isa::Avx2Fma.available() && super::cpu::has_avx_vnni(),
        other => other.isa().available(),
    }
}

/// The kernel the int8 product runs here: the best of [`KERNELS`] the CPU runs.
pub fn kernel() -> Kernel {
    KERNELS
        .into_iter()
        .find(|&k| available(k))
        .unwrap_or(Kernel::Portable)
}

/// The int8 product's kernel, for the dispatch table.
pub fn describe(kernel: Kernel) -> &'static str {
    match kernel {
        Kernel::Vnni512 => "avx512_vnni vpdpbusd zmm: tiles 1x8 (B=1), 2x8, 4x4 (B<=4), 8x2",
        Kernel::AvxVnni => "avx_vnni vpdpbusd ymm: tiles 1x4 (B=1), 2x2, 3x2, 6x1",
        Kernel::Avx2 => "avx2 vpmaddubsw + vpmaddwd + vpaddd: tiles 1x4, 2x2, 4x1",
        Kernel::Portable => "portable loop",
    }
}

/// [`panel_gemm_with`] on AMX tiles where this process has them (`tdpbusd`,
/// [`super::tiles`]), else on [`kernel`]: the same int32 sums either way.
///
/// # Safety
/// As [`panel_gemm_with`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn panel_gemm(
    m: usize,
    groups: Groups,
    k: usize,
    a: &[u8],
    lda: usize,
    packed: &[i8],
    panels: Range<usize>,
    out: OutPtr<i32>,
) {
    // SAFETY (both): forwarded contract.
    unsafe {
        if super::tiles::available_int8() {
            panel_gemm_tiles(TileRun::Native, m, groups, k, a, lda, packed, panels, out)
        } else {
            panel_gemm_with(kernel(), m, groups, k, a, lda, packed, panels, out)
        }
    }
}

/// [`panel_gemm_with`]'s product on AMX tiles (`tdpbusd`), or on their model: the same int32
/// sums as every kernel.
///
/// # Safety
/// As [`panel_gemm_with`]. Panics when `on` is [`TileRun::Native`] and this process cannot use
/// the int8 tiles.
#[allow(clippy::too_many_arguments)]
pub unsafe fn panel_gemm_tiles(
    on: TileRun,
    m: usize,
    groups: Groups,
    k: usize,
    a: &[u8],
    lda: usize,
    packed: &[i8],
    panels: Range<usize>,
    out: OutPtr<i32>,
) {
    assert!(lda >= padded(k), "int8 tile product: lda below padded(k)");
    let go = super::panel::check_product(super::panel::ProductArgs {
        what: "int8 tile product",
        kernel: Isa::Portable,
        m,
        groups,
        row: padded(k),
        a_len: a.len(),
        lda,
        packed_need: packed_len(panels.end, k),
        packed_len: packed.len(),
        panels: &panels,
        out: &out,
    });
    if go {
        // SAFETY: the sizes were checked above; the caller's contract covers the writes.
        super::tiles::with_tiles(on, true, |t| unsafe {
            t.int8(m, groups, k, a, lda, packed, &[panels], out)
        });
    }
}

/// `C[:, q*NR..] = A * panel q` in int32 for every `q` in `panels`: `A` is `m` rows of 7-bit
/// codes at row stride `lda >= padded(k)` (its padding multiplies zero weights), `packed` the
/// panels of [`pack_gates_t`]; on a chosen kernel.
///
/// # Safety
/// As [`super::panel::panel_gemm_raw`], for the rows of every block. Panics when this CPU cannot
/// run `kernel` ([`available`]).
#[allow(clippy::too_many_arguments)]
pub unsafe fn panel_gemm_with(
    kernel: Kernel,
    m: usize,
    groups: Groups,
    k: usize,
    a: &[u8],
    lda: usize,
    packed: &[i8],
    panels: Range<usize>,
    out: OutPtr<i32>,
) {
    // every row is read in whole quads, so the stride must cover them (even for one row)
    assert!(lda >= padded(k), "int8 panel_gemm: lda below padded(k)");
    assert!(
        available(kernel),
        "this CPU cannot run the {} int8 kernel",
        kernel.name()
    );
    let go = super::panel::check_product(super::panel::ProductArgs {
        what: "int8 panel_gemm",
        kernel: kernel.isa(),
        m,
        groups,
        row: padded(k),
        a_len: a.len(),
        lda,
        packed_need: packed_len(panels.end, k),
        packed_len: packed.len(),
        panels: &panels,
        out: &out,
    });
    if !go {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    match kernel {
        // SAFETY (all three): the CPU runs the kernel (asserted); sizes checked above; the
        // caller's contract covers the writes.
        Kernel::Vnni512 => {
            return unsafe { vnni512::run(m, groups, k, a, lda, packed, panels, out) }
        }
        Kernel::AvxVnni => {
            return unsafe { avxvnni::run(m, groups, k, a, lda, packed, panels, out) }
        }
        Kernel::Avx2 => return unsafe { avx2::run(m, groups, k, a, lda, packed, panels, out) },
        Kernel::Portable => {}
    }
    // SAFETY: forwarded contract.
    unsafe { portable(m, groups, k, a, lda, packed, panels, out) }
}

/// The plain loop.
#[allow(clippy::too_many_arguments)]
unsafe fn portable(
    m: usize,
    groups: Groups,
    k: usize,
    a: &[u8],
    lda: usize,
    packed: &[i8],
    panels: Range<usize>,
    out: OutPtr<i32>,
) {
    let size = packed_len(1, k);
    // SAFETY: forwarded contract.
    unsafe {
        super::panel::for_elements(m, groups, lda, panels, out, |a0, q, j| {
            let panel = &packed[q * size..(q + 1) * size];
            let mut s = 0i32;
            for (p, &av) in a[a0..a0 + k].iter().enumerate() {
                s += av as i32 * panel[((p / 4) * NR + j) * 4 + p % 4] as i32;
            }
            s
        })
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{packed_len, quads, Groups, OutPtr, NR};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// Rows x panels: 2*R*V accumulators (at most 8), with the ones, a weight vector, a
    /// broadcast and a temporary within AVX2's 16 registers.
    fn tile_shape(m: usize) -> (usize, usize) {
        match m {
            1 => (1, 4),
            2 | 3 => (2, 2),
            _ => (4, 1),
        }
    }

    /// # Safety
    /// AVX2 present; the checks and contract of `panel_gemm_with`.
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run(
        m: usize,
        groups: Groups,
        k: usize,
        a: &[u8],
        lda: usize,
        packed: &[i8],
        panels: Range<usize>,
        out: OutPtr<i32>,
    ) {
        let ps = packed_len(1, k);
        crate::ops::panel::tiled_product!(m, k, a, lda, packed, ps, groups, panels, out, &[4, 2, 1]; 1, 4; 1, 2; 1, 1; 2, 2; 2, 1; 3, 1; 4, 1);
    }

    /// `R` rows x `V` panels of C: per quad of rows, a 32-bit broadcast of the row's four codes
    /// against each panel's two vectors of 8 columns x 4 codes.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize, const V: usize>(
        k: usize,
        ap: *const u8,
        lda: usize,
        bp: *const i8,
        ps: usize,
        out: OutPtr<i32>,
        i0: usize,
        q: usize,
    ) {
        // SAFETY (whole body): the caller guarantees R rows of padded(k) codes at stride lda, V
        // panels of ps bytes, and C rows i0..i0+R; columns are masked below.
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let mut acc = [[[_mm256_setzero_si256(); 2]; V]; R];
            for p4 in 0..quads(k) {
                for v in 0..V {
                    let src = bp.add(v * ps + p4 * 4 * NR) as *const __m256i;
                    for h in 0..2 {
                        let w = _mm256_loadu_si256(src.add(h));
                        for r in 0..R {
                            let quad = (ap.add(r * lda + 4 * p4) as *const i32).read_unaligned();
                            let av = _mm256_set1_epi32(quad);
                            let pairs = _mm256_maddubs_epi16(av, w);
                            let sums = _mm256_madd_epi16(pairs, ones);
                            acc[r][v][h] = _mm256_add_epi32(acc[r][v][h], sums);
                        }
                    }
                }
            }
            super::store_tile_256(&acc, out, i0, q);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avxvnni {
    use super::{packed_len, quads, Groups, OutPtr, NR};
    // `vpdpbusd` needs no ones and no temporary, so the float32 AVX2 kernel's tiles fit
    use crate::ops::panel::avx2_tile_shape as tile_shape;
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// # Safety
    /// AVX2 and AVX-VNNI present; the checks and contract of `panel_gemm_with`.
    #[target_feature(enable = "avx2,avxvnni")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run(
        m: usize,
        groups: Groups,
        k: usize,
        a: &[u8],
        lda: usize,
        packed: &[i8],
        panels: Range<usize>,
        out: OutPtr<i32>,
    ) {
        let ps = packed_len(1, k);
        crate::ops::panel::tiled_product!(m, k, a, lda, packed, ps, groups, panels, out, &[4, 2, 1]; 1, 4; 1, 2; 1, 1; 2, 2; 2, 1; 3, 2; 3, 1; 4, 1; 5, 1; 6, 1);
    }

    /// `R` rows x `V` panels of C: per quad of rows, a 32-bit broadcast of the row's four codes
    /// against each panel's two vectors of 8 columns x 4 codes, one `vpdpbusd ymm` each.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize, const V: usize>(
        k: usize,
        ap: *const u8,
        lda: usize,
        bp: *const i8,
        ps: usize,
        out: OutPtr<i32>,
        i0: usize,
        q: usize,
    ) {
        // SAFETY (whole body): the caller guarantees R rows of padded(k) codes at stride lda, V
        // panels of ps bytes, and C rows i0..i0+R; columns are masked below.
        unsafe {
            let mut acc = [[[_mm256_setzero_si256(); 2]; V]; R];
            for p4 in 0..quads(k) {
                let mut w = [[_mm256_setzero_si256(); 2]; V];
                for v in 0..V {
                    let src = bp.add(v * ps + p4 * 4 * NR) as *const __m256i;
                    w[v] = [_mm256_loadu_si256(src), _mm256_loadu_si256(src.add(1))];
                }
                for r in 0..R {
                    let quad = (ap.add(r * lda + 4 * p4) as *const i32).read_unaligned();
                    let av = _mm256_set1_epi32(quad);
                    for v in 0..V {
                        for h in 0..2 {
                            acc[r][v][h] = _mm256_dpbusd_avx_epi32(acc[r][v][h], av, w[v][h]);
                        }
                    }
                }
            }
            super::store_tile_256(&acc, out, i0, q);
        }
    }
}

/// Stores an AVX2 int32 tile: `acc[r][v]` (two halves of 8 columns) into row `i0 + r` and panel
/// `q + v` of `out`, masked to the columns that exist.
///
/// # Safety
/// Called from a kernel compiled for AVX2 (it is inlined there); rows `i0..i0 + R` of `out` must
/// be valid for writes in the panels' columns.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_tile_256<const R: usize, const V: usize>(
    acc: &[[[std::arch::x86_64::__m256i; 2]; V]; R],
    out: OutPtr<i32>,
    i0: usize,
    q: usize,
) {
    use std::arch::x86_64::*;
    // SAFETY (whole body): the caller's contract; each store is masked to existing columns.
    unsafe {
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for v in 0..V {
            let c0 = (q + v) * NR;
            let width = NR.min(out.n.saturating_sub(c0));
            for (r, row) in acc.iter().enumerate() {
                let dst = out.ptr.add((i0 + r) * out.ld + c0);
                for (h, half) in row[v].iter().enumerate() {
                    let w = width.saturating_sub(8 * h).min(8) as i32;
                    if w == 8 {
                        _mm256_storeu_si256(dst.add(8 * h) as *mut __m256i, *half);
                    } else if w > 0 {
                        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(w), lane);
                        _mm256_maskstore_epi32(dst.add(8 * h), mask, *half);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni512 {
    use super::{packed_len, quads, Groups, OutPtr, NR};
    use crate::ops::panel::avx512_tile_shape as tile_shape;
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// # Safety
    /// AVX-512F and AVX512-VNNI present; the checks and contract of `panel_gemm_with`.
    #[target_feature(enable = "avx512f,avx512vnni")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run(
        m: usize,
        groups: Groups,
        k: usize,
        a: &[u8],
        lda: usize,
        packed: &[i8],
        panels: Range<usize>,
        out: OutPtr<i32>,
    ) {
        let ps = packed_len(1, k);
        crate::ops::panel::avx512_tiled_product!(m, k, a, lda, packed, ps, groups, panels, out);
    }

    /// `R` rows x `V` panels of C: per quad of rows, a 32-bit broadcast of the row's four codes
    /// against each panel's one vector of 16 columns x 4 codes.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize, const V: usize>(
        k: usize,
        ap: *const u8,
        lda: usize,
        bp: *const i8,
        ps: usize,
        out: OutPtr<i32>,
        i0: usize,
        q: usize,
    ) {
        // SAFETY (whole body): the caller guarantees R rows of padded(k) codes at stride lda, V
        // panels of ps bytes, and C rows i0..i0+R; columns are masked below.
        unsafe {
            let mut acc = [[_mm512_setzero_si512(); V]; R];
            for p4 in 0..quads(k) {
                let mut w = [_mm512_setzero_si512(); V];
                for v in 0..V {
                    w[v] = _mm512_loadu_si512(bp.add(v * ps + p4 * 4 * NR) as *const __m512i);
                }
                for r in 0..R {
                    let quad = (ap.add(r * lda + 4 * p4) as *const i32).read_unaligned();
                    let av = _mm512_set1_epi32(quad);
                    for v in 0..V {
                        acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], av, w[v]);
                    }
                }
            }
            for v in 0..V {
                let c0 = (q + v) * NR;
                let mask = crate::ops::panel::panel_mask(out.n, c0);
                for r in 0..R {
                    let dst = out.ptr.add((i0 + r) * out.ld + c0);
                    _mm512_mask_storeu_epi32(dst, mask, acc[r][v]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values that meet every edge of the quantization: ties at .5 after scaling, values past
    /// both clamps, zeros of both signs, and ordinary ones; lengths around the vector widths.
    fn awkward(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let u = (state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
                match i % 9 {
                    0 => (i % 50) as f32 + 0.5,
                    1 => -((i % 50) as f32 + 0.5),
                    2 => 1e6,
                    3 => -1e6,
                    4 => -0.0,
                    _ => 3.0 * u,
                }
            })
            .collect()
    }

    /// Every vector path of the quantization gives what its definition gives, element by
    /// element: the codes (against one rounding at a time), the row's range and the
    /// dequantized products. On a CPU without AVX-512 this checks the SSE2 and portable paths
    /// the same way.
    #[test]
    fn vector_paths_match_the_definitions() {
        for n in [1usize, 3, 4, 15, 16, 17, 33, 64, 100] {
            let x = awkward(n, n as u32);
            for (scale, add, lo) in [(Scale::Mul(1.0), 3, 0), (Scale::Div(0.5), 0, -127)] {
                let mut got = vec![0u8; n];
                codes(&x, scale, add, lo, &mut got);
                for (i, (&v, &g)) in x.iter().zip(&got).enumerate() {
                    let r = match scale {
                        Scale::Div(s) => (v / s).round_ties_even(),
                        Scale::Mul(inv) => (v * inv).round_ties_even(),
                    };
                    let want = (r.clamp(-1e9, 1e9) as i32 + add).clamp(lo, QA_MAX);
                    assert_eq!(g, want as u8, "n={n} element {i} ({v})");
                }
            }
            let (lo, hi) = min_max(&x);
            let want = x
                .iter()
                .fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
            assert_eq!((lo, hi), want, "n={n}");
            let acc: Vec<i32> = (0..n as i32).map(|i| i * 977 - 40_000).collect();
            let sum: Vec<i32> = (0..n as i32).map(|i| 31 - i * 7).collect();
            let scale: Vec<f32> = x.iter().map(|v| v.abs() * 1e-3 + 1e-4).collect();
            let rq = RowQuant {
                scale: 0.0173,
                zero: 41,
            };
            let mut out = vec![0f32; n];
            dequantize(rq, &acc, &scale, &sum, &mut out);
            for j in 0..n {
                let want = rq.scale * scale[j] * (acc[j] - rq.zero * sum[j]) as f32;
                assert_eq!(out[j].to_bits(), want.to_bits(), "n={n} column {j}");
            }
        }
    }
}
