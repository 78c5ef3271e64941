//! bfloat16: the conversions (round to nearest even, as PyTorch's `c10::BFloat16`) and the
//! per-step recurrent product with weights packed as bf16.
//!
//! A bf16 number is the upper half of a float32: same exponent range, 8 bits of significand.
//! The product of two bf16 numbers has at most 16 significant bits, so it is exact in float32;
//! a sum of such products accumulated in float32 is therefore the same whether the hardware
//! multiplies bf16 directly or widens both operands to float32 first. That is what lets the
//! kernels here widen the weights (`x << 16`) and use the float32 FMA, and lets every other
//! product of a bf16 model (input projection, head) run on the float32 GEMM over operands that
//! were rounded to bf16 beforehand.
//!
//! The packed layout ([`pack_gates_t`]) is the one the bf16 dot-product instructions read
//! (AVX512-BF16's `vdpbf16ps`, AMX's `tdpbf16ps`): panels of [`NR`] columns as
//! [`panel_gemm`](super::panel) uses, but rows taken in pairs, each 32-bit lane holding rows
//! `2p` (low half) and `2p + 1` (high half) of one column. Half the bytes of the float32
//! panels: a per-step product that streams its weights from memory or the L3 (a batch of one)
//! moves half as much.
//!
//! Kernels: the portable loop (the reference), AVX2 + FMA and AVX-512 (weights widened to
//! float32 in registers), and for one row AVX512-BF16 (`vdpbf16ps`, bf16 multiplied directly).
//! The widening kernels sum the products of a column in order of `k`, so they agree with the
//! portable loop bit for bit when `A` holds bf16 values (they then compute the same exact
//! products); `vdpbf16ps` adds each pair's products in the instruction's order (see
//! [`panel_gemm_with`]).

use super::cpu::{has_avx512_bf16, Isa};
use super::panel::{panels, Groups, OutPtr, NR};
use super::tiles::TileRun;
use std::ops::Range;

/// `x` rounded to the nearest bf16 (ties to even) as its 16 bits; NaN gives the quiet NaN
/// `0x7fc0` (as PyTorch), infinities and overflow to infinity keep their sign.
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return 0x7fc0;
    }
    (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// The float32 a bf16 stands for (exact).
#[inline(always)]
pub fn from_bf16(x: u16) -> f32 {
    f32::from_bits((x as u32) << 16)
}

/// `x` rounded to bf16, as a float32.
#[inline(always)]
pub fn round(x: f32) -> f32 {
    from_bf16(to_bf16(x))
}

/// Rounds every element of `x` to bf16 in place (sixteen at a time with AVX-512: the same bits
/// as [`round`]).
pub fn round_slice(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if Isa::Avx512.available() {
        // SAFETY: the CPU runs AVX-512F (checked).
        unsafe { round_slice_512(x) };
        return;
    }
    for v in x {
        *v = round(*v);
    }
}

/// Sixteen float32 (as their bits) rounded to bf16 as [`to_bf16`] rounds them: each lane's
/// bf16 in its high half, zeros in its low half (the float32 the bf16 stands for).
///
/// # Safety
/// AVX-512F present (inlined into a function compiled for it).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn round_bits_512(v: std::arch::x86_64::__m512i) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    // SAFETY: register arithmetic only, on AVX-512F (the caller's contract).
    unsafe {
        let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(v), _mm512_set1_epi32(1));
        let up = _mm512_add_epi32(v, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
        let r = _mm512_and_si512(up, _mm512_set1_epi32(0xffff_0000u32 as i32));
        // NaN (magnitude above infinity's) becomes the quiet NaN, as to_bf16 makes it
        let mag = _mm512_and_si512(v, _mm512_set1_epi32(0x7fff_ffff));
        let nan = _mm512_cmpgt_epi32_mask(mag, _mm512_set1_epi32(0x7f80_0000));
        _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7fc0_0000))
    }
}

/// One panel of [`pack_n`] on AVX-512F: per pair row, the two rows' 16 columns (masked to the
/// `cols` that exist, the second row zero past `k`) rounded as [`to_bf16`] and interleaved into
/// 32-bit lanes (the first row's bf16 in the low half), one store: the same bits as the plain
/// loop.
///
/// # Safety
/// AVX-512F present; `w` holds rows `0..k` of columns `c0..c0 + cols` at row stride `ld`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pack_n_panel_512(
    panel: &mut [u16],
    w: &[f32],
    ld: usize,
    k: usize,
    c0: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    let mask = super::panel::panel_mask(c0 + cols, c0);
    for (pp, pair) in panel.chunks_exact_mut(2 * NR).enumerate() {
        // SAFETY: masked loads read only the columns that exist, inside `w` (the contract); the
        // store writes the pair row's 64 bytes inside `panel`.
        unsafe {
            let row = |p: usize| {
                _mm512_maskz_loadu_epi32(mask, w.as_ptr().add(p * ld + c0) as *const i32)
            };
            let lo = row(2 * pp);
            let hi = if 2 * pp + 1 < k {
                row(2 * pp + 1)
            } else {
                _mm512_setzero_si512()
            };
            let v = _mm512_or_si512(
                _mm512_srli_epi32::<16>(round_bits_512(lo)),
                round_bits_512(hi),
            );
            _mm512_storeu_si512(pair.as_mut_ptr() as *mut _, v);
        }
    }
}

/// [`round_slice`] on AVX-512F: [`to_bf16`]'s integer steps on sixteen lanes.
///
/// # Safety
/// AVX-512F present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn round_slice_512(x: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut chunks = x.chunks_exact_mut(16);
    for c in &mut chunks {
        // SAFETY: `c` holds 16 floats; unaligned loads and stores.
        unsafe {
            let v = _mm512_loadu_si512(c.as_ptr() as *const _);
            _mm512_storeu_si512(c.as_mut_ptr() as *mut _, round_bits_512(v));
        }
    }
    for v in chunks.into_remainder() {
        *v = round(*v);
    }
}

/// Rounds every element of `x` to bf16 in place, `F` being f32.
///
/// # Panics
/// When `F` is not f32.
pub fn round_float<F: super::Float>(x: &mut [F]) {
    assert!(
        std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>(),
        "bf16 rounding of a type other than f32"
    );
    // SAFETY: F is f32 (asserted): the cast is an identity
    round_slice(unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr() as *mut f32, x.len()) });
}

/// Rows of 32-bit pairs a packed panel of `k` rows has.
pub fn pair_rows(k: usize) -> usize {
    k.div_ceil(2)
}

/// Elements (u16) of `n` packed panels of `k` rows.
pub fn packed_len(n_panels: usize, k: usize) -> usize {
    n_panels * pair_rows(k) * 2 * NR
}

/// Packs `W^T` as bf16 for `C = A W^T`, `W` being `(G*H, K)` row-major (PyTorch's
/// `weight_hh`), with the panel order of [`super::panel::pack_gates_t`] (gate block `g` gets
/// `panels(H)` panels) and the pair layout of this module: element (row `p`, column `j`) of
/// panel `q` at `q * packed_len(1, K) + ((p / 2) * NR + j) * 2 + p % 2`. Padding (columns past
/// H, the second row of the last pair when K is odd) is zero.
pub fn pack_gates_t(dst: &mut [u16], w: &[f32], g: usize, h: usize, k: usize) {
    let hp = panels(h);
    let size = packed_len(1, k);
    assert_eq!(dst.len(), g * hp * size, "bf16::pack_gates_t: dst size");
    assert!(w.len() >= g * h * k, "bf16::pack_gates_t: W too small");
    let per = (g * hp).div_ceil(super::gemm::threads()).max(1) * size;
    super::for_parts_mut(dst, per, dst.len() >= 1 << 16, |e0, part| {
        for (i, panel) in part.chunks_exact_mut(size).enumerate() {
            let q = e0 / size + i;
            let (gi, u) = (q / hp, q % hp);
            let cols = NR.min(h - u * NR);
            panel.fill(0);
            for j in 0..cols {
                let row = &w[(gi * h + u * NR + j) * k..][..k];
                for (p, &v) in row.iter().enumerate() {
                    panel[((p / 2) * NR + j) * 2 + p % 2] = to_bf16(v);
                }
            }
        }
    });
}

/// Packs `W` as bf16 for `C = A W`, `W` being `(K, N)` at row stride `ld` (not transposed: the
/// backward's `dG W_hh`, the gradients' `dG^T X`), in this module's pair layout: element (row
/// `p`, column `j`) of panel `q` at `q * packed_len(1, K) + ((p / 2) * NR + j) * 2 + p % 2`,
/// column `q * NR + j` of W. Padding (columns past N, the second row of the last pair when K
/// is odd) is zero. The panels shared out over the threads.
pub fn pack_n(dst: &mut [u16], w: &[f32], ld: usize, k: usize, n: usize) {
    let size = packed_len(1, k);
    assert_eq!(dst.len(), panels(n) * size, "bf16::pack_n: dst size");
    assert!(
        k == 0 || w.len() >= (k - 1) * ld + n,
        "bf16::pack_n: W too small"
    );
    let per = panels(n).div_ceil(super::gemm::threads()).max(1) * size;
    super::for_parts_mut(dst, per, dst.len() >= 1 << 16, |e0, part| {
        for (i, panel) in part.chunks_exact_mut(size).enumerate() {
            let c0 = (e0 / size + i) * NR;
            let cols = NR.min(n - c0);
            #[cfg(target_arch = "x86_64")]
            if Isa::Avx512.available() {
                // SAFETY: the CPU runs AVX-512F (checked); rows 0..k of these columns are
                // inside `w` (asserted above).
                unsafe { pack_n_panel_512(panel, w, ld, k, c0, cols) };
                continue;
            }
            for (pp, pair) in panel.chunks_exact_mut(2 * NR).enumerate() {
                let lo = &w[2 * pp * ld + c0..][..cols];
                let hi = (2 * pp + 1 < k).then(|| &w[(2 * pp + 1) * ld + c0..][..cols]);
                for j in 0..NR {
                    pair[2 * j] = if j < cols { to_bf16(lo[j]) } else { 0 };
                    pair[2 * j + 1] = match hi {
                        Some(h) if j < cols => to_bf16(h[j]),
                        _ => 0,
                    };
                }
            }
        }
    });
}

/// Converts float32 panels (`super::panel::pack_gates_t`'s or `pack_n`'s layout, `n_panels`
/// panels of `k` rows) into bf16 panels of this module's pair layout: the same result as
/// [`pack_gates_t`] on the same weights, from the fast transposition of the float32 packing.
pub fn from_panels(dst: &mut [u16], src: &[f32], n_panels: usize, k: usize) {
    let size = packed_len(1, k);
    assert_eq!(dst.len(), n_panels * size, "bf16::from_panels: dst size");
    assert!(
        src.len() >= n_panels * k * NR,
        "bf16::from_panels: src too small"
    );
    let per = n_panels.div_ceil(super::gemm::threads()).max(1) * size;
    super::for_parts_mut(dst, per, dst.len() >= 1 << 16, |e0, part| {
        for (i, panel) in part.chunks_exact_mut(size).enumerate() {
            let q = e0 / size + i;
            let f = &src[q * k * NR..(q + 1) * k * NR];
            for (pp, pair) in panel.chunks_exact_mut(2 * NR).enumerate() {
                let lo: &[f32; NR] = f[2 * pp * NR..][..NR].try_into().expect("a panel row");
                let hi = f.get((2 * pp + 1) * NR..(2 * pp + 2) * NR);
                for j in 0..NR {
                    pair[2 * j] = to_bf16(lo[j]);
                    pair[2 * j + 1] = hi.map_or(0, |h| to_bf16(h[j]));
                }
            }
        }
    });
}

/// The bf16 kernels, best first: one per instruction set, so the CPU runs each kernel its
/// [`Isa`] names. [`Isa::Avx512`] here: a one-row product on AVX512-BF16's `vdpbf16ps` where the
/// CPU has it, every other product with the weights widened to float32 in 512-bit registers.
pub const KERNELS: [Isa; 3] = Isa::ALL;

/// The kernel the bf16 product runs here: the best instruction set the CPU runs.
pub fn kernel() -> Isa {
    Isa::detect()
}

/// Whether the bf16 product of one row here multiplies bf16 directly (`vdpbf16ps`: twice the
/// products of a float32 FMA per instruction), rather than widening the weights to float32.
pub fn native() -> bool {
    kernel() == Isa::Avx512 && has_avx512_bf16()
}

/// The bf16 product's kernel, for the dispatch table.
pub fn describe(kernel: Isa) -> &'static str {
    match kernel {
        Isa::Avx512 if has_avx512_bf16() => {
            "avx512: one row on avx512_bf16 vdpbf16ps zmm (tile 1x8), more rows with the weights \
             widened to float32 (tiles 2x8, 4x4 (B<=4), 8x2)"
        }
        Isa::Avx512 => {
            "avx512, bf16 weights widened to float32 in registers: tiles 1x8 (B=1), 2x8, 4x4 \
             (B<=4), 8x2"
        }
        Isa::Avx2Fma => "avx2+fma, bf16 weights widened in registers: tiles 1x4, 2x2, 3x2, 6x1",
        Isa::Portable => "portable loop",
    }
}

/// `C[:, q*NR..] = A * panel q` for every `q` in `panels`, `A` being `m x k` at row stride
/// `lda` (float32 holding bf16 values, for the exact bf16 product) and `packed` the panels of
/// [`pack_gates_t`], on the bf16 multiplier where this process has one (AMX tiles, or
/// `vdpbf16ps` where [`super::multiplier`] chose it), else on [`kernel`].
///
/// # Safety
/// As [`super::panel::panel_gemm_raw`].
pub unsafe fn panel_gemm_raw(
    m: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    packed: &[u16],
    panels: Range<usize>,
    out: OutPtr<f32>,
) {
    if super::multiplier::native() {
        // SAFETY: forwarded contract; the process holds the tiles (checked).
        return unsafe {
            panel_gemm_tiles(
                TileRun::Native,
                m,
                Groups::ONE,
                k,
                a,
                lda,
                packed,
                panels,
                out,
                false,
            )
        };
    }
    // SAFETY: forwarded contract.
    unsafe { panel_gemm_with(kernel(), m, Groups::ONE, k, a, lda, packed, panels, out) }
}

/// [`panel_gemm_with`]'s product on AMX tiles (`tdpbf16ps`, [`super::tiles`]), or on their
/// model; with `accumulate`, `C += A * panels` instead. The hardware sums a tile's products in
/// its own order: within rounding of the portable loop, not in bits.
///
/// # Safety
/// As [`super::panel::panel_gemm_raw`], for the rows of every block. Panics when `on` is
/// [`TileRun::Native`] and this process cannot use the tiles.
#[allow(clippy::too_many_arguments)]
pub unsafe fn panel_gemm_tiles(
    on: TileRun,
    m: usize,
    groups: Groups,
    k: usize,
    a: &[f32],
    lda: usize,
    packed: &[u16],
    panels: Range<usize>,
    out: OutPtr<f32>,
    accumulate: bool,
) {
    // SAFETY: forwarded contract.
    unsafe { panel_sets_tiles(on, m, groups, k, a, lda, packed, &[panels], out, accumulate) }
}

/// [`panel_gemm_tiles`] over several ranges of panels at once (A copied for the tiles once for
/// all of them): one gate block's share each in the time loop.
///
/// # Safety
/// As [`panel_gemm_tiles`], for every range.
#[allow(clippy::too_many_arguments)]
pub unsafe fn panel_sets_tiles(
    on: TileRun,
    m: usize,
    groups: Groups,
    k: usize,
    a: &[f32],
    lda: usize,
    packed: &[u16],
    sets: &[Range<usize>],
    out: OutPtr<f32>,
    accumulate: bool,
) {
    let mut go = false;
    for panels in sets {
        go |= super::panel::check_product(super::panel::ProductArgs {
            what: "bf16 tile product",
            kernel: Isa::Portable,
            m,
            groups,
            row: k,
            a_len: a.len(),
            lda,
            packed_need: packed_len(panels.end, k),
            packed_len: packed.len(),
            panels,
            out: &out,
        });
    }
    if !go {
        return;
    }
    let dp = match on {
        TileRun::Vdpbf16ps => true,
        TileRun::Native => dp_native(),
        TileRun::Emulated => false,
    };
    if dp {
        // the same panels on vdpbf16ps: any number of rows, no padding to whole tiles
        #[cfg(target_arch = "x86_64")]
        {
            assert!(
                super::multiplier::dp_runs(),
                "vdpbf16ps products: no AVX512-BF16 here"
            );
            super::multiplier::count_dp_product();
            // SAFETY: the CPU runs the kernel (asserted); the sizes were checked above; the
            // caller's contract covers the writes.
            return unsafe { dp512::run(m, groups, k, a, lda, packed, sets, out, accumulate) };
        }
    }
    // SAFETY: the sizes were checked above; the caller's contract covers the writes.
    super::tiles::with_tiles(on, false, |t| unsafe {
        t.bf16(m, groups, k, a, lda, packed, sets, out, accumulate)
    });
}

/// `C[:, q*NR..] = A * panel q` for every `q` in each of `sets`, on the bf16 multiplier (AMX
/// tiles or `vdpbf16ps`) where this process has one (A copied once for all the sets), else one
/// [`panel_gemm_raw`] per set.
///
/// # Safety
/// As [`panel_gemm_raw`], for every set.
pub unsafe fn panel_sets_raw(
    m: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    packed: &[u16],
    sets: &[Range<usize>],
    out: OutPtr<f32>,
) {
    // SAFETY (both): forwarded contract.
    unsafe {
        if super::multiplier::native() {
            panel_sets_tiles(
                TileRun::Native,
                m,
                Groups::ONE,
                k,
                a,
                lda,
                packed,
                sets,
                out,
                false,
            )
        } else {
            for panels in sets {
                panel_gemm_with(
                    kernel(),
                    m,
                    Groups::ONE,
                    k,
                    a,
                    lda,
                    packed,
                    panels.clone(),
                    out,
                )
            }
        }
    }
}

/// How [`tile_gemm`]'s left operand is stored: `(m, k)` at row stride `lda`.
#[derive(Clone, Copy, Debug)]
pub enum Left<'a> {
    /// float32 holding bf16 values.
    F32(&'a [f32], usize),
    /// bf16 bit patterns, read as the pairs `vdpbf16ps` takes, with no conversion: an even
    /// `lda`, aligned to 4 bytes, each row's element `k` zero when `k` is odd. On `vdpbf16ps`
    /// only ([`dp_native`]).
    Bf16(&'a [u16], usize),
}

/// How [`tile_gemm`]'s right operand is stored.
#[derive(Clone, Copy, Debug)]
pub enum Right<'a> {
    /// `B`, `(k, n)` at row stride `ld`.
    Kn(&'a [f32], usize),
    /// `B^T`, `(n, k)` rows of `k` one after another (a weight of `C = A W^T`).
    Nk(&'a [f32]),
}

thread_local! {
    /// The calling thread's packing of [`tile_gemm`]'s right operand (reused across calls).
    static RIGHT: std::cell::RefCell<super::aligned::AVec<u16>> =
        const { std::cell::RefCell::new(super::aligned::AVec::new()) };
}

/// Whether the bf16 products of this process run on `vdpbf16ps` (the multiplier chose it and
/// no model of the AMX tiles is switched on): where [`Left::Bf16`] may be given.
pub fn dp_native() -> bool {
    use super::multiplier::{multiplier, Multiplier};
    super::multiplier::native()
        && !super::tiles::model_on()
        && multiplier() == Multiplier::Vdpbf16ps
}

/// bf16 bit patterns as 32-bit pairs.
///
/// # Panics
/// When `a` is not aligned to 4 bytes.
fn as_pairs(a: &[u16]) -> &[u32] {
    assert!(
        (a.as_ptr() as usize).is_multiple_of(4),
        "tile_gemm: bf16 A not aligned to pairs"
    );
    // SAFETY: aligned to 4 bytes (asserted), a.len() / 2 whole pairs inside `a`
    unsafe { std::slice::from_raw_parts(a.as_ptr() as *const u32, a.len() / 2) }
}

/// `C (m, n at ldc) = A B`, or `+=` with `accumulate`, on the bf16 multiplier (AMX tiles, or
/// `vdpbf16ps` where chosen): `A` `(m, k)` ([`Left`]), every operand bf16 values. B is packed
/// as bf16 panels on the calling thread ([`pack_n`] or [`pack_gates_t`]), then the rows of A
/// and C are shared out over the threads, each part on its own thread's multiplier.
///
/// # Panics
/// When the operands are too small, when this process cannot use the bf16 tiles, or when A is
/// [`Left::Bf16`] and not as that says.
#[allow(clippy::too_many_arguments)]
pub fn tile_gemm(
    a: Left,
    m: usize,
    k: usize,
    b: Right,
    n: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        ldc >= n && c.len() >= (m - 1) * ldc + n,
        "tile_gemm: C too small"
    );
    if let Left::Bf16(a, lda) = a {
        assert!(
            dp_native(),
            "tile_gemm: bf16 A given where vdpbf16ps is not the multiplier"
        );
        assert!(
            lda.is_multiple_of(2) && a.len() >= (m - 1) * lda + 2 * pair_rows(k),
            "tile_gemm: bf16 A too small or its rows not whole pairs"
        );
        assert!(
            k.is_multiple_of(2) || (0..m).all(|i| a[i * lda + k] == 0),
            "tile_gemm: a padding element of bf16 A is not zero"
        );
    }
    RIGHT.with(|p| {
        let pack = &mut *p.borrow_mut();
        let len = packed_len(panels(n), k);
        if pack.len() < len {
            *pack = super::aligned::AVec::zeroed(len);
        }
        match b {
            Right::Kn(b, ldb) => pack_n(&mut pack[..len], b, ldb, k, n),
            Right::Nk(w) => pack_gates_t(&mut pack[..len], w, 1, n, k),
        }
        let packed = &pack[..len];
        let per = m.div_ceil(super::gemm::threads()).max(1) * ldc;
        let used = (m - 1) * ldc + n;
        super::for_parts_mut(&mut c[..used], per, m >= 16, |e0, part| {
            let (r0, rows) = (e0 / ldc, part.len().div_ceil(ldc));
            let out = OutPtr {
                ptr: part.as_mut_ptr(),
                ld: ldc,
                n,
            };
            match a {
                // SAFETY: `part` holds this part's rows (the last one n long) and is its alone;
                // the sizes of A and the panels are checked by panel_gemm_tiles.
                Left::F32(a, lda) => unsafe {
                    panel_gemm_tiles(
                        TileRun::Native,
                        rows,
                        Groups::ONE,
                        k,
                        &a[r0 * lda..],
                        lda,
                        packed,
                        0..panels(n),
                        out,
                        accumulate,
                    )
                },
                #[cfg(target_arch = "x86_64")]
                Left::Bf16(a, lda) => {
                    super::multiplier::count_dp_product();
                    let ldp = lda / 2;
                    // SAFETY: dp_native (asserted) says the CPU runs the kernel; rows r0.. of
                    // the pairs lie inside A and the panels hold panels(n) of k rows (both
                    // checked above); `part` is this part's rows alone.
                    unsafe {
                        dp512::run_pairs(
                            rows,
                            Groups::ONE,
                            pair_rows(k),
                            &as_pairs(a)[r0 * ldp..],
                            ldp,
                            packed,
                            0..panels(n),
                            out,
                            accumulate,
                        )
                    }
                }
                #[cfg(not(target_arch = "x86_64"))]
                Left::Bf16(..) => unreachable!("vdpbf16ps outside x86-64"),
            }
        });
    });
}

/// [`panel_gemm_raw`] over row groups (see [`Groups`]) on a chosen kernel.
///
/// The portable loop and the AVX2 and AVX-512 kernels sum a column's products in order of `k`
/// (and so agree bit for bit), except the AVX-512 kernel's one-row product on `vdpbf16ps`, which
/// adds each pair's second product before its first, as the instruction is defined (Intel SDM),
/// and treats subnormal inputs and results as zero: it agrees with them within rounding, not in
/// bits.
///
/// # Safety
/// As [`super::panel::panel_gemm_raw`], for the rows of every block. Panics when this CPU
/// cannot run `kernel`.
pub unsafe fn panel_gemm_with(
    kernel: Isa,
    m: usize,
    groups: Groups,
    k: usize,
    a: &[f32],
    lda: usize,
    packed: &[u16],
    panels: Range<usize>,
    out: OutPtr<f32>,
) {
    let go = super::panel::check_product(super::panel::ProductArgs {
        what: "bf16 panel_gemm",
        kernel,
        m,
        groups,
        row: k,
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
        // SAFETY (both): the CPU runs the kernel (asserted); the sizes were checked above; the
        // caller's contract covers the writes.
        Isa::Avx512 if m == 1 && has_avx512_bf16() => {
            return unsafe { dp512::run(m, groups, k, a, lda, packed, &[panels], out, false) }
        }
        Isa::Avx512 => return unsafe { wide512::run(m, groups, k, a, lda, packed, panels, out) },
        Isa::Avx2Fma => return unsafe { avx2::run(m, groups, k, a, lda, packed, panels, out) },
        Isa::Portable => {}
    }
    // SAFETY: forwarded contract.
    unsafe { portable(m, groups, k, a, lda, packed, panels, out) }
}

/// The plain loop: one output element at a time, products summed in order of `p`.
#[allow(clippy::too_many_arguments)]
unsafe fn portable(
    m: usize,
    groups: Groups,
    k: usize,
    a: &[f32],
    lda: usize,
    packed: &[u16],
    panels: Range<usize>,
    out: OutPtr<f32>,
) {
    let size = packed_len(1, k);
    // SAFETY: forwarded contract.
    unsafe {
        super::panel::for_elements(m, groups, lda, panels, out, |a0, q, j| {
            let panel = &packed[q * size..(q + 1) * size];
            let mut s = 0.0f32;
            for (p, &av) in a[a0..a0 + k].iter().enumerate() {
                s += av * from_bf16(panel[((p / 2) * NR + j) * 2 + p % 2]);
            }
            s
        })
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{packed_len, Groups, OutPtr, NR};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// Tile shapes as the float32 AVX2 kernel's (rows x panels): 2*R*V accumulators, at most 12.
    fn tile_shape(m: usize) -> (usize, usize) {
        match m {
            1 => (1, 4),
            2 => (2, 2),
            3 => (3, 2),
            _ => (6, 1),
        }
    }

    /// # Safety
    /// AVX2 and FMA present; the checks and contract of `panel_gemm_with`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run(
        m: usize,
        groups: Groups,
        k: usize,
        a: &[f32],
        lda: usize,
        packed: &[u16],
        panels: Range<usize>,
        out: OutPtr<f32>,
    ) {
        let ps = packed_len(1, k);
        crate::ops::panel::tiled_product!(m, k, a, lda, packed, ps, groups, panels, out, &[4, 2, 1]; 1, 4; 1, 2; 1, 1; 2, 2; 2, 1; 3, 2; 3, 1; 4, 1; 5, 1; 6, 1);
    }

    /// `R` rows x `V` panels of C from `k` products. `bp` points at panel q's pairs, `ps` is
    /// the panel stride (u16); C's tile starts at row `i0`, panel `q`. Per pair of rows, a
    /// 32-bit lane holds row 2p in its low half and row 2p+1 in its high half: shifted left by
    /// 16 and masked to the high half they are the two rows as float32.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize, const V: usize>(
        k: usize,
        ap: *const f32,
        lda: usize,
        bp: *const u16,
        ps: usize,
        out: OutPtr<f32>,
        i0: usize,
        q: usize,
    ) {
        // SAFETY (whole body): the caller guarantees R rows of A with k columns at stride lda,
        // V panels of ps elements, and C rows i0..i0+R; columns are masked below.
        unsafe {
            let high = _mm256_set1_epi32(0xffff_0000u32 as i32);
            let mut acc = [[[_mm256_setzero_ps(); 2]; V]; R];
            for pp in 0..k / 2 {
                let p = 2 * pp;
                let mut raw = [[_mm256_setzero_si256(); 2]; V];
                for v in 0..V {
                    let src = bp.add(v * ps + pp * 2 * NR) as *const __m256i;
                    raw[v] = [_mm256_loadu_si256(src), _mm256_loadu_si256(src.add(1))];
                }
                for v in 0..V {
                    for h in 0..2 {
                        let lo = _mm256_castsi256_ps(_mm256_slli_epi32(raw[v][h], 16));
                        for r in 0..R {
                            let av = _mm256_broadcast_ss(&*ap.add(r * lda + p));
                            acc[r][v][h] = _mm256_fmadd_ps(av, lo, acc[r][v][h]);
                        }
                    }
                }
                for v in 0..V {
                    for h in 0..2 {
                        let hi = _mm256_castsi256_ps(_mm256_and_si256(raw[v][h], high));
                        for r in 0..R {
                            let av = _mm256_broadcast_ss(&*ap.add(r * lda + p + 1));
                            acc[r][v][h] = _mm256_fmadd_ps(av, hi, acc[r][v][h]);
                        }
                    }
                }
            }
            if k % 2 == 1 {
                // the last row is alone in its pair (the high halves are zero padding)
                let (pp, p) = (k / 2, k - 1);
                for v in 0..V {
                    let src = bp.add(v * ps + pp * 2 * NR) as *const __m256i;
                    for h in 0..2 {
                        let raw = _mm256_loadu_si256(src.add(h));
                        let lo = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));
                        for r in 0..R {
                            let av = _mm256_broadcast_ss(&*ap.add(r * lda + p));
                            acc[r][v][h] = _mm256_fmadd_ps(av, lo, acc[r][v][h]);
                        }
                    }
                }
            }
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            for v in 0..V {
                let c0 = (q + v) * NR;
                let width = NR.min(out.n.saturating_sub(c0));
                for r in 0..R {
                    let dst = out.ptr.add((i0 + r) * out.ld + c0);
                    if width == NR {
                        _mm256_storeu_ps(dst, acc[r][v][0]);
                        _mm256_storeu_ps(dst.add(8), acc[r][v][1]);
                    } else {
                        for (h, half) in acc[r][v].iter().enumerate() {
                            let w = width.saturating_sub(8 * h).min(8) as i32;
                            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(w), lane);
                            _mm256_maskstore_ps(dst.wrapping_add(8 * h), mask, *half);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod dp512 {
    use super::{packed_len, pair_rows, Groups, OutPtr, NR};
    use std::arch::x86_64::*;
    use std::cell::RefCell;
    use std::ops::Range;

    thread_local! {
        /// Each calling thread's copy of A as bf16 pairs (reused across calls).
        static PAIRS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    }

    /// Writes row `src` (k float32 holding bf16 values) as `pair_rows(k)` 32-bit pairs, row
    /// `2p` in the low half and `2p + 1` in the high half (a zero high half when k is odd): the
    /// order bf16 numbers have in memory, which `vdpbf16ps` reads.
    #[inline(always)]
    unsafe fn to_pairs(src: *const f32, k: usize, dst: *mut u32) {
        // SAFETY: the caller gives k readable floats and pair_rows(k) writable pairs.
        unsafe {
            let mut p = 0;
            while p + 32 <= k {
                let lo = _mm512_loadu_ps(src.add(p));
                let hi = _mm512_loadu_ps(src.add(p + 16));
                // 32 bf16 in order: the first 16 from `lo`, the next from `hi`
                let v = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(dst.add(p / 2) as *mut _, v);
                p += 32;
            }
            while p < k {
                let lo = super::to_bf16(*src.add(p)) as u32;
                let hi = if p + 1 < k {
                    super::to_bf16(*src.add(p + 1)) as u32
                } else {
                    0
                };
                *dst.add(p / 2) = lo | (hi << 16);
                p += 2;
            }
        }
    }

    /// The product of `panel_gemm_with` over each range of `sets` (A converted to bf16 pairs
    /// once for all of them), `C +=` with `add`.
    ///
    /// # Safety
    /// AVX-512F and AVX512-BF16 present; the checks and contract of `panel_gemm_with`, for
    /// every range.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run(
        m: usize,
        groups: Groups,
        k: usize,
        a: &[f32],
        lda: usize,
        packed: &[u16],
        sets: &[Range<usize>],
        out: OutPtr<f32>,
        add: bool,
    ) {
        let kp = pair_rows(k);
        PAIRS.with_borrow_mut(|pairs| {
            // to_pairs writes every pair of every row, so the buffer is grown, never refilled
            let len = groups.n * m * kp;
            if pairs.len() < len {
                pairs.resize(len, 0);
            }
            for gi in 0..groups.n {
                for i in 0..m {
                    // SAFETY: row i of block gi has k elements inside `a` (checked by the
                    // caller); `pairs` holds groups.n * m rows of kp.
                    unsafe {
                        to_pairs(
                            a.as_ptr().add(gi * groups.a_step + i * lda),
                            k,
                            pairs.as_mut_ptr().add((gi * m + i) * kp),
                        )
                    };
                }
            }
            let pairs: &[u32] = pairs;
            let groups = Groups {
                a_step: m * kp,
                ..groups
            };
            for panels in sets {
                // SAFETY: the features are this function's; forwarded contract.
                unsafe { run_pairs(m, groups, kp, pairs, kp, packed, panels.clone(), out, add) };
            }
        });
    }

    /// [`run`]'s product for one range of panels, A given as bf16 pairs already: `m` rows of
    /// `kp` pairs at a stride of `ldp` pairs (each row's last high half zero when k is odd) in
    /// each block of `groups`, C stored or (`add`) added to.
    ///
    /// # Safety
    /// AVX-512F and AVX512-BF16 present; `pairs` holds the rows of every block, `packed` the
    /// panels of `2 * kp` rows, and `out` the blocks' rows with the panels' columns, this
    /// caller's alone.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run_pairs(
        m: usize,
        groups: Groups,
        kp: usize,
        pairs: &[u32],
        ldp: usize,
        packed: &[u16],
        panels: Range<usize>,
        out: OutPtr<f32>,
        add: bool,
    ) {
        let ps = packed_len(1, 2 * kp);
        // SAFETY: forwarded contract.
        unsafe {
            if add {
                sum::product(m, kp, pairs, ldp, groups, packed, ps, panels, out)
            } else {
                store::product(m, kp, pairs, ldp, groups, packed, ps, panels, out)
            }
        }
    }

    /// The tiled product of [`run`] with `tile` storing C (`store`) or adding to it (`sum`).
    macro_rules! variant {
        ($name:ident, $add:literal) => {
            mod $name {
                use super::{Groups, OutPtr};
                use std::ops::Range;

                /// # Safety
                /// As [`super::run`], `pairs` its copy of A.
                #[target_feature(enable = "avx512f,avx512bf16")]
                #[allow(clippy::too_many_arguments)]
                pub(super) unsafe fn product(
                    m: usize,
                    kp: usize,
                    pairs: &[u32],
                    ldp: usize,
                    groups: Groups,
                    packed: &[u16],
                    ps: usize,
                    panels: Range<usize>,
                    out: OutPtr<f32>,
                ) {
                    use crate::ops::panel::avx512_tile_shape as tile_shape;
                    crate::ops::panel::avx512_tiled_product!(
                        m, kp, pairs, ldp, packed, ps, groups, panels, out
                    );
                }

                #[inline(always)]
                #[allow(clippy::too_many_arguments)]
                unsafe fn tile<const R: usize, const V: usize>(
                    kp: usize,
                    ap: *const u32,
                    lda: usize,
                    bp: *const u16,
                    ps: usize,
                    out: OutPtr<f32>,
                    i0: usize,
                    q: usize,
                ) {
                    // SAFETY: forwarded contract.
                    unsafe { super::tile::<R, V, $add>(kp, ap, lda, bp, ps, out, i0, q) }
                }
            }
        };
    }
    variant!(store, false);
    variant!(sum, true);

    /// `R` rows x `V` panels of C from `kp` pairs of rows: per pair, a 32-bit broadcast of the
    /// row's two bf16 against each panel's one vector of 16 columns x 2 rows; with `ADD` the
    /// sums start from C's elements.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize, const V: usize, const ADD: bool>(
        kp: usize,
        ap: *const u32,
        lda: usize,
        bp: *const u16,
        ps: usize,
        out: OutPtr<f32>,
        i0: usize,
        q: usize,
    ) {
        // SAFETY (whole body): the caller guarantees R rows of kp pairs at stride lda, V panels
        // of ps elements, and C rows i0..i0+R; columns are masked below.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); V]; R];
            if ADD {
                for v in 0..V {
                    let c0 = (q + v) * NR;
                    let mask = crate::ops::panel::panel_mask(out.n, c0);
                    for (r, row) in acc.iter_mut().enumerate() {
                        let src = out.ptr.add((i0 + r) * out.ld + c0);
                        row[v] = _mm512_maskz_loadu_ps(mask, src);
                    }
                }
            }
            let bh = |x: __m512i| std::mem::transmute::<__m512i, __m512bh>(x);
            for pp in 0..kp {
                let mut b = [bh(_mm512_setzero_si512()); V];
                for v in 0..V {
                    b[v] = bh(_mm512_loadu_si512(bp.add(v * ps + pp * 2 * NR) as *const _));
                }
                for r in 0..R {
                    let av = bh(_mm512_set1_epi32(*ap.add(r * lda + pp) as i32));
                    for v in 0..V {
                        acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, b[v]);
                    }
                }
            }
            crate::ops::panel::store_tile_512(&acc, out, i0, q);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod wide512 {
    use super::{packed_len, Groups, OutPtr, NR};
    use crate::ops::panel::avx512_tile_shape as tile_shape;
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// # Safety
    /// AVX-512F present; the checks and contract of `panel_gemm_with`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run(
        m: usize,
        groups: Groups,
        k: usize,
        a: &[f32],
        lda: usize,
        packed: &[u16],
        panels: Range<usize>,
        out: OutPtr<f32>,
    ) {
        let ps = packed_len(1, k);
        crate::ops::panel::avx512_tiled_product!(m, k, a, lda, packed, ps, groups, panels, out);
    }

    /// `R` rows x `V` panels of C from `k` products, in order of `k` (as the portable loop).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize, const V: usize>(
        k: usize,
        ap: *const f32,
        lda: usize,
        bp: *const u16,
        ps: usize,
        out: OutPtr<f32>,
        i0: usize,
        q: usize,
    ) {
        // SAFETY (whole body): the caller guarantees R rows of A with k columns at stride lda,
        // V panels of ps elements, and C rows i0..i0+R; columns are masked below.
        unsafe {
            let high = _mm512_set1_epi32(0xffff_0000u32 as i32);
            let mut acc = [[_mm512_setzero_ps(); V]; R];
            for pp in 0..k.div_ceil(2) {
                let p = 2 * pp;
                let mut raw = [_mm512_setzero_si512(); V];
                for v in 0..V {
                    raw[v] = _mm512_loadu_si512(bp.add(v * ps + pp * 2 * NR) as *const _);
                }
                for v in 0..V {
                    let lo = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(raw[v]));
                    for r in 0..R {
                        let av = _mm512_set1_ps(*ap.add(r * lda + p));
                        acc[r][v] = _mm512_fmadd_ps(av, lo, acc[r][v]);
                    }
                }
                // the last pair of an odd k has no second row (nor A an element for it)
                if p + 1 < k {
                    for v in 0..V {
                        let hi = _mm512_castsi512_ps(_mm512_and_si512(raw[v], high));
                        for r in 0..R {
                            let av = _mm512_set1_ps(*ap.add(r * lda + p + 1));
                            acc[r][v] = _mm512_fmadd_ps(av, hi, acc[r][v]);
                        }
                    }
                }
            }
            crate::ops::panel::store_tile_512(&acc, out, i0, q);
        }
    }
}
