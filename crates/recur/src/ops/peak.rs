//! The machine's float32 arithmetic ceiling: how many fused multiply-adds per second the cores
//! can retire, measured with a loop that does nothing else.
//!
//! Why: a GEMM's GFLOP/s says how well that GEMM is written as much as what the hardware can do.
//! To judge the recurrent layers (and PyTorch's), we need the hardware's own ceiling: each thread
//! runs 12 independent chains of vector FMAs (enough to cover the FMA latency on both pipes), with
//! no loads or stores, and the rate of all threads together is reported. AVX-512 where the CPU has
//! it, else AVX2 + FMA, else the portable loop (which only says what scalar code gets).

use std::time::Instant;

/// Independent accumulators per thread: more than latency x pipes (4 x 2 on the CPUs measured).
const CHAINS: usize = 12;

/// Runs `iters` rounds of CHAINS FMAs on one thread; returns the flops done (2 per lane per FMA)
/// and the sum of the results (so the loop cannot be optimised away, and can be checked).
fn one_thread(iters: u64) -> (f64, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { x86::avx512(iters) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { x86::avx2(iters) };
        }
    }
    portable(iters)
}

fn portable(iters: u64) -> (f64, f32) {
    let mut acc = [0.0f32; CHAINS];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = i as f32;
    }
    let (b, c) = (
        std::hint::black_box(0.999_999f32),
        std::hint::black_box(1e-7f32),
    );
    for _ in 0..iters {
        for a in &mut acc {
            *a = a.mul_add(b, c);
        }
    }
    (2.0 * (iters * CHAINS as u64) as f64, acc.iter().sum())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::CHAINS;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512(iters: u64) -> (f64, f32) {
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        for (i, a) in acc.iter_mut().enumerate() {
            *a = _mm512_set1_ps(i as f32);
        }
        let b = _mm512_set1_ps(std::hint::black_box(0.999_999));
        let c = _mm512_set1_ps(std::hint::black_box(1e-7));
        for _ in 0..iters {
            for a in &mut acc {
                *a = _mm512_fmadd_ps(*a, b, c);
            }
        }
        let mut s = 0.0;
        for a in acc {
            s += _mm512_reduce_add_ps(a);
        }
        (2.0 * 16.0 * (iters * CHAINS as u64) as f64, s)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2(iters: u64) -> (f64, f32) {
        let mut acc = [_mm256_setzero_ps(); CHAINS];
        for (i, a) in acc.iter_mut().enumerate() {
            *a = _mm256_set1_ps(i as f32);
        }
        let b = _mm256_set1_ps(std::hint::black_box(0.999_999));
        let c = _mm256_set1_ps(std::hint::black_box(1e-7));
        for _ in 0..iters {
            for a in &mut acc {
                *a = _mm256_fmadd_ps(*a, b, c);
            }
        }
        let mut out = [0.0f32; 8];
        let mut s = 0.0;
        for a in acc {
            // SAFETY: `out` holds 8 floats.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), a) };
            s += out.iter().sum::<f32>();
        }
        (2.0 * 8.0 * (iters * CHAINS as u64) as f64, s)
    }
}

/// Which instruction set the measurement uses on this CPU.
pub fn isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return "avx2+fma";
        }
    }
    "portable"
}

/// The float32 FMA rate of `threads` threads running at once, in GFLOP/s (2 flops per FMA lane):
/// each runs `iters` rounds; the rate is the total work over the wall time of the whole run.
pub fn fma_gflops(threads: usize, iters: u64) -> f64 {
    let threads = threads.max(1);
    let start = Instant::now();
    let results: Vec<(f64, f32)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| s.spawn(move || one_thread(iters)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("FMA thread panicked"))
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    assert!(
        results.iter().all(|r| r.1.is_finite()),
        "FMA chains diverged"
    );
    results.iter().map(|r| r.0).sum::<f64>() / secs / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loop computes what it claims: each chain is a <- a*b + c, so after n rounds
    /// a_n = fixed + (a_0 - fixed) b^n with fixed = c / (1 - b). (The rate itself is not tested.)
    #[test]
    fn chains_follow_the_recurrence() {
        let n = 2_000_000u64;
        let (flops, s) = one_thread(n);
        let lanes = match isa() {
            "avx512" => 16.0,
            "avx2+fma" => 8.0,
            _ => 1.0,
        };
        assert_eq!(flops, 2.0 * lanes * n as f64 * CHAINS as f64);
        let b = 0.999_999f32 as f64;
        let fixed = 1e-7f32 as f64 / (1.0 - b);
        // the lanes start at 0..11, mean 5.5
        let want = fixed + (5.5 - fixed) * b.powf(n as f64);
        let per_lane = s as f64 / (lanes * CHAINS as f64);
        // float32 rounding over 2e6 steps moves this by well under 1%
        assert!(
            (per_lane - want).abs() <= 0.01 * want,
            "per-lane mean {per_lane}, expected {want}"
        );
    }
}
