//! Independent chains of one vector instruction and nothing else: the loops that time an
//! instruction's rate (the bf16 multiplier's choice in [`super::multiplier`], and the ceilings
//! `recur bench --fma-peak` and `--peak` print). Each of the `N` accumulators is one dependency
//! chain, so with enough of them (more than the instruction's latency times its pipes) a loop
//! runs at the instruction's throughput rather than its latency; too many spill out of the
//! registers. No loads or stores inside the loop.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

/// The float32 FMA chains on `$lanes`-wide vectors: lane values start at the chain's index and
/// follow `a <- a * 0.999999 + 1e-7`; the sum of every lane after `iters` rounds.
macro_rules! fma_chains {
    ($name:ident, $feat:literal, $lanes:literal, $zero:ident, $set1:ident, $fmadd:ident,
     $store:ident) => {
        /// `iters` rounds of `N` chains of FMAs (see the macro): the sum of every lane.
        ///
        /// # Safety
        /// The CPU has the features named.
        #[target_feature(enable = $feat)]
        pub unsafe fn $name<const N: usize>(iters: u64) -> f32 {
            let mut acc = [$zero(); N];
            for (i, a) in acc.iter_mut().enumerate() {
                *a = $set1(i as f32);
            }
            let b = $set1(std::hint::black_box(0.999_999));
            let c = $set1(std::hint::black_box(1e-7));
            for _ in 0..iters {
                for a in &mut acc {
                    *a = $fmadd(*a, b, c);
                }
            }
            let mut out = [0.0f32; $lanes];
            let mut s = 0.0;
            for a in acc {
                // SAFETY: `out` holds one vector of floats.
                unsafe { $store(out.as_mut_ptr(), a) };
                s += out.iter().sum::<f32>();
            }
            s
        }
    };
}

fma_chains!(
    fma512,
    "avx512f",
    16,
    _mm512_setzero_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_storeu_ps
);
fma_chains!(
    fma256,
    "avx2,fma",
    8,
    _mm256_setzero_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_storeu_ps
);

/// `iters` rounds of `N` chains of `vdpbf16ps zmm` (16 lanes, each adding two bf16 products a
/// round): the sum of every lane.
///
/// # Safety
/// The CPU has AVX-512F and AVX512-BF16.
#[target_feature(enable = "avx512bf16,avx512f")]
pub unsafe fn dpbf16<const N: usize>(iters: u64) -> f32 {
    let a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5), _mm512_set1_ps(0.25));
    let b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3), _mm512_set1_ps(2e-3));
    let mut acc = [_mm512_setzero_ps(); N];
    for _ in 0..iters {
        let a = std::hint::black_box(a);
        for x in &mut acc {
            *x = _mm512_dpbf16_ps(*x, a, b);
        }
    }
    acc.iter().map(|&x| _mm512_reduce_add_ps(x)).sum()
}
