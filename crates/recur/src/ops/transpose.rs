//! Out-of-place transposition of a block: `dst[c * ldd + r] = src[r * lds + c]` for `r < m`,
//! `c < n`. The backward pass uses it to keep a second copy of dG laid out gate unit by gate
//! unit (`(G*H, T*B)`), written step by step while each step's rows are still in cache, so that
//! the weight gradients `dG^T X` read their left operand as stored: the `gemm` crate runs that
//! form faster than reading dG transposed (docs/performance.md, "Weight gradients from dG^T").
//!
//! f32 on CPUs with AVX-512 moves whole 16 x 16 tiles through registers (16 loads, 64 shuffles,
//! 16 stores), on CPUs with AVX2 8 x 8 tiles (8 loads, 24 shuffles, 8 stores); edges and every
//! other case take the plain loop, which gives the same values.

use super::Float;

/// `dst (cols, rows at ldd) = src^T`, `src` being `(rows, cols)` row-major: [`transpose_raw`]
/// by blocks of `dst`'s rows (multiples of 16) shared out over the threads.
pub fn transpose_split<F: Float>(src: &[F], rows: usize, cols: usize, dst: &mut [F], ldd: usize) {
    // SAFETY: by_blocks hands over columns of src's rows and whole blocks of dst (its contract)
    by_blocks(src, rows, cols, dst, ldd, |n, s, d| unsafe {
        transpose_raw(rows, n, s, cols, d, ldd)
    });
}

/// [`transpose_split`] into bf16: `dst (cols, rows at ldd)` = the upper 16 bits of `src^T`'s
/// elements ([`transpose_bf16_raw`]).
pub fn transpose_bf16_split(src: &[f32], rows: usize, cols: usize, dst: &mut [u16], ldd: usize) {
    // SAFETY: as transpose_split
    by_blocks(src, rows, cols, dst, ldd, |n, s, d| unsafe {
        transpose_bf16_raw(rows, n, s, cols, d, ldd)
    });
}

/// The frame of the split transpositions: `dst`'s rows (the columns of `src`, `(rows, cols)`)
/// cut into blocks of multiples of 16, one per thread; `block(n, s, d)` transposes `n` columns,
/// `s` pointing at the first of them in src's first row, `d` at the block.
fn by_blocks<S: Sync, D: Send>(
    src: &[S],
    rows: usize,
    cols: usize,
    dst: &mut [D],
    ldd: usize,
    block: impl Fn(usize, *const S, *mut D) + Sync + Send,
) {
    assert!(
        ldd >= rows && src.len() >= rows * cols && dst.len() >= cols * ldd,
        "transpose: sizes"
    );
    let per = cols.div_ceil(super::gemm::threads()).next_multiple_of(16);
    super::for_parts_mut(
        &mut dst[..cols * ldd],
        per * ldd,
        rows * cols >= 1 << 16,
        |e0, part| {
            let (c0, n) = (e0 / ldd, part.len() / ldd);
            // columns c0..c0+n of src's rows (stride cols) lie inside it (asserted); the part
            // holds n rows of ldd >= rows
            block(n, src[c0..].as_ptr(), part.as_mut_ptr());
        },
    );
}

/// `dst[c * ldd + r] = src[r * lds + c]` for `r < m`, `c < n`.
///
/// # Safety
/// `src` addresses `m` rows of `lds >= n` elements, readable; `dst` addresses `n` rows of
/// `ldd >= m` elements, writable, not overlapping `src`, and no other thread reads or writes
/// those elements meanwhile.
pub unsafe fn transpose_raw<F: Float>(
    m: usize,
    n: usize,
    src: *const F,
    lds: usize,
    dst: *mut F,
    ldd: usize,
) {
    let (mut r0, mut c_done) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>() {
        use super::cpu::Isa;
        let (src, dst) = (src as *const f32, dst as *mut f32);
        match Isa::detect() {
            // SAFETY: F is f32 (checked); the ISA is present (detected); the tiles lie inside
            // the caller's blocks
            Isa::Avx512 => unsafe {
                (r0, c_done) = (m / 16 * 16, n / 16 * 16);
                avx512::tiles(r0, c_done, src, lds, dst, ldd);
            },
            // SAFETY: as above
            Isa::Avx2Fma => unsafe {
                (r0, c_done) = (m / 8 * 8, n / 8 * 8);
                avx2::tiles(r0, c_done, src, lds, dst, ldd);
            },
            Isa::Portable => {}
        }
    }
    // SAFETY: the caller's contract
    unsafe { edges(m, n, (r0, c_done), src, lds, dst, ldd, |x| x) }
}

/// `dst[c * ldd + r]` = the upper 16 bits of `src[r * lds + c]` for `r < m`, `c < n`: the
/// transposition of a block of float32 holding bf16 values into those bf16 values.
///
/// # Safety
/// As [`transpose_raw`], `dst` holding u16.
pub unsafe fn transpose_bf16_raw(
    m: usize,
    n: usize,
    src: *const f32,
    lds: usize,
    dst: *mut u16,
    ldd: usize,
) {
    let (mut r0, mut c_done) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if super::cpu::Isa::detect() == super::cpu::Isa::Avx512 {
        (r0, c_done) = (m / 16 * 16, n / 16 * 16);
        // SAFETY: the ISA is present (detected); the tiles lie inside the caller's blocks
        unsafe { avx512::tiles_bf16(r0, c_done, src, lds, dst, ldd) };
    }
    // SAFETY: the caller's contract
    unsafe {
        edges(m, n, (r0, c_done), src, lds, dst, ldd, |x| {
            (x.to_bits() >> 16) as u16
        })
    }
}

/// The plain loop of a transposition, `dst[c * ldd + r] = f(src[r * lds + c])`, for what the
/// tiles did not cover: the rows from `r0` of the first `c_done` columns (the tiles' columns),
/// then the columns from `c_done` of every row.
///
/// # Safety
/// As [`transpose_raw`].
#[allow(clippy::too_many_arguments)]
unsafe fn edges<S: Copy, D>(
    m: usize,
    n: usize,
    (r0, c_done): (usize, usize),
    src: *const S,
    lds: usize,
    dst: *mut D,
    ldd: usize,
    f: impl Fn(S) -> D,
) {
    // SAFETY (both loops): r < m and c < n stay inside the caller's blocks
    unsafe {
        for r in r0..m {
            for c in 0..c_done {
                *dst.add(c * ldd + r) = f(*src.add(r * lds + c));
            }
        }
        for r in 0..m {
            for c in c_done..n {
                *dst.add(c * ldd + r) = f(*src.add(r * lds + c));
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Every 16 x 16 tile of an `m x n` block (`m`, `n` multiples of 16).
    ///
    /// # Safety
    /// AVX-512F present; `transpose_raw`'s contract for these `m`, `n`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tiles(
        m: usize,
        n: usize,
        src: *const f32,
        lds: usize,
        dst: *mut f32,
        ldd: usize,
    ) {
        for r0 in (0..m).step_by(16) {
            for c0 in (0..n).step_by(16) {
                // SAFETY: the tile's rows r0.. and columns c0.. are inside the block
                unsafe {
                    tile(src.add(r0 * lds + c0), lds, |j, v| {
                        _mm512_storeu_ps(dst.add((c0 + j) * ldd + r0), v)
                    })
                };
            }
        }
    }

    /// [`tiles`] into bf16: each element's upper 16 bits (its bf16 value when it holds one).
    ///
    /// # Safety
    /// As [`tiles`], `dst` holding u16.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tiles_bf16(
        m: usize,
        n: usize,
        src: *const f32,
        lds: usize,
        dst: *mut u16,
        ldd: usize,
    ) {
        for r0 in (0..m).step_by(16) {
            for c0 in (0..n).step_by(16) {
                // SAFETY: the tile's rows r0.. and columns c0.. are inside the block
                unsafe {
                    tile(src.add(r0 * lds + c0), lds, |j, v| {
                        let high = _mm512_srli_epi32::<16>(_mm512_castps_si512(v));
                        let d = dst.add((c0 + j) * ldd + r0) as *mut __m256i;
                        _mm256_storeu_si256(d, _mm512_cvtepi32_epi16(high))
                    })
                };
            }
        }
    }

    /// One 16 x 16 tile: row `i` of `s` (stride `lds`) becomes the vector `store(j, v)` is
    /// given for column `j`.
    #[inline(always)]
    unsafe fn tile(s: *const f32, lds: usize, mut store: impl FnMut(usize, __m512)) {
        // SAFETY: 16 rows of 16 readable elements at s, 16 rows of 16 writable ones at d
        unsafe {
            let mut r = [_mm512_setzero_ps(); 16];
            for (i, v) in r.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(s.add(i * lds));
            }
            // pairs of rows interleaved by element, then by pairs of elements: each 128-bit lane
            // of u[4q + j] holds element 4*lane + j of rows 4q..4q+4
            let mut t = [_mm512_setzero_ps(); 16];
            for q in 0..8 {
                t[2 * q] = _mm512_unpacklo_ps(r[2 * q], r[2 * q + 1]);
                t[2 * q + 1] = _mm512_unpackhi_ps(r[2 * q], r[2 * q + 1]);
            }
            let mut u = [_mm512_setzero_ps(); 16];
            for q in 0..4 {
                let (a, b, c, e) = (t[4 * q], t[4 * q + 1], t[4 * q + 2], t[4 * q + 3]);
                u[4 * q] = _mm512_shuffle_ps::<0x44>(a, c);
                u[4 * q + 1] = _mm512_shuffle_ps::<0xEE>(a, c);
                u[4 * q + 2] = _mm512_shuffle_ps::<0x44>(b, e);
                u[4 * q + 3] = _mm512_shuffle_ps::<0xEE>(b, e);
            }
            // gather the 128-bit lanes: first lanes 0 and 2 / 1 and 3 of row groups 0-1 and
            // 2-3, then across the halves
            let mut v = [_mm512_setzero_ps(); 16];
            for j in 0..4 {
                v[j] = _mm512_shuffle_f32x4::<0x88>(u[j], u[4 + j]);
                v[4 + j] = _mm512_shuffle_f32x4::<0xDD>(u[j], u[4 + j]);
                v[8 + j] = _mm512_shuffle_f32x4::<0x88>(u[8 + j], u[12 + j]);
                v[12 + j] = _mm512_shuffle_f32x4::<0xDD>(u[8 + j], u[12 + j]);
            }
            for j in 0..8 {
                store(j, _mm512_shuffle_f32x4::<0x88>(v[j], v[8 + j]));
                store(8 + j, _mm512_shuffle_f32x4::<0xDD>(v[j], v[8 + j]));
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Every 8 x 8 tile of an `m x n` block (`m`, `n` multiples of 8).
    ///
    /// # Safety
    /// AVX2 present; `transpose_raw`'s contract for these `m`, `n`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn tiles(
        m: usize,
        n: usize,
        src: *const f32,
        lds: usize,
        dst: *mut f32,
        ldd: usize,
    ) {
        for r0 in (0..m).step_by(8) {
            for c0 in (0..n).step_by(8) {
                // SAFETY: the tile's rows r0.. and columns c0.. are inside the block
                unsafe { tile(src.add(r0 * lds + c0), lds, dst.add(c0 * ldd + r0), ldd) };
            }
        }
    }

    /// One 8 x 8 tile: rows of `s` (stride `lds`) become columns of `d` (stride `ldd`).
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn tile(s: *const f32, lds: usize, d: *mut f32, ldd: usize) {
        // SAFETY: 8 rows of 8 readable elements at s, 8 rows of 8 writable ones at d
        unsafe {
            let mut r = [_mm256_setzero_ps(); 8];
            for (i, v) in r.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(s.add(i * lds));
            }
            // pairs of rows interleaved by element, then by pairs of elements: each 128-bit lane
            // of u[4q + j] holds element 4*lane + j of rows 4q..4q+4
            let mut t = [_mm256_setzero_ps(); 8];
            for q in 0..4 {
                t[2 * q] = _mm256_unpacklo_ps(r[2 * q], r[2 * q + 1]);
                t[2 * q + 1] = _mm256_unpackhi_ps(r[2 * q], r[2 * q + 1]);
            }
            let mut u = [_mm256_setzero_ps(); 8];
            for q in 0..2 {
                let (a, b, c, e) = (t[4 * q], t[4 * q + 1], t[4 * q + 2], t[4 * q + 3]);
                u[4 * q] = _mm256_shuffle_ps::<0x44>(a, c);
                u[4 * q + 1] = _mm256_shuffle_ps::<0xEE>(a, c);
                u[4 * q + 2] = _mm256_shuffle_ps::<0x44>(b, e);
                u[4 * q + 3] = _mm256_shuffle_ps::<0xEE>(b, e);
            }
            // low lanes of rows 0-3 and 4-7 make columns 0-3, high lanes columns 4-7
            for j in 0..4 {
                let lo = _mm256_permute2f128_ps::<0x20>(u[j], u[4 + j]);
                let hi = _mm256_permute2f128_ps::<0x31>(u[j], u[4 + j]);
                _mm256_storeu_ps(d.add(j * ldd), lo);
                _mm256_storeu_ps(d.add((4 + j) * ldd), hi);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(m: usize, n: usize) {
        let (lds, ldd) = (n + 3, m + 5);
        let src: Vec<f32> = (0..m * lds).map(|i| i as f32).collect();
        let mut dst = vec![f32::NAN; n * ldd];
        // SAFETY: sizes as required
        unsafe { transpose_raw(m, n, src.as_ptr(), lds, dst.as_mut_ptr(), ldd) };
        for c in 0..n {
            for r in 0..ldd {
                let got = dst[c * ldd + r];
                if r < m {
                    assert_eq!(got, src[r * lds + c], "m={m} n={n}: dst[{c}][{r}]");
                } else {
                    assert!(got.is_nan(), "m={m} n={n}: padding dst[{c}][{r}] written");
                }
            }
        }
    }

    /// Every element lands where the definition says, nothing past the block is written; sizes
    /// around the 8 x 8 and 16 x 16 tiles (whichever this CPU runs).
    #[test]
    fn transposes_blocks_of_any_size() {
        for m in [1, 7, 8, 9, 15, 16, 17, 32, 40] {
            for n in [1, 7, 8, 9, 15, 16, 17, 48, 50] {
                check(m, n);
            }
        }
    }

    /// The bf16 transposition: each element's upper half lands where the definition says (the
    /// values differ in their upper halves, including NaN and infinities, and carry low bits
    /// that must be dropped), nothing past the block is written.
    #[test]
    fn transposes_into_bf16_blocks_of_any_size() {
        for m in [1, 15, 16, 17, 33, 40] {
            for n in [1, 15, 16, 17, 48, 50] {
                let (lds, ldd) = (n + 3, m + 5);
                let special = [f32::NAN, f32::INFINITY, -f32::INFINITY, -0.0];
                let src: Vec<f32> = (0..m * lds)
                    .map(|i| match i % 11 {
                        0..4 => special[i % 11],
                        _ => f32::from_bits(((i as u32 * 2_654_435_761) & 0x7fff_ffff) | 0x3f00),
                    })
                    .collect();
                let mut dst = vec![0x7777u16; n * ldd];
                // SAFETY: sizes as required
                unsafe { transpose_bf16_raw(m, n, src.as_ptr(), lds, dst.as_mut_ptr(), ldd) };
                // the split over threads writes the same (src read as m rows of lds columns)
                let mut split = vec![0x7777u16; lds * ldd];
                transpose_bf16_split(&src, m, lds, &mut split, ldd);
                assert_eq!(split[..n * ldd], dst[..], "m={m} n={n}: split");
                for c in 0..n {
                    for r in 0..ldd {
                        let got = dst[c * ldd + r];
                        let want = if r < m {
                            (src[r * lds + c].to_bits() >> 16) as u16
                        } else {
                            0x7777
                        };
                        assert_eq!(got, want, "m={m} n={n}: dst[{c}][{r}]");
                    }
                }
            }
        }
    }
}
