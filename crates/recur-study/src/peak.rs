//! The machine's float32 arithmetic ceiling: how many fused multiply-adds per second the cores
//! can retire, measured with a loop that does nothing else.
//!
//! Why: a GEMM's GFLOP/s says how well that GEMM is written as much as what the hardware can do.
//! To judge the recurrent layers (and PyTorch's), we need the hardware's own ceiling: each thread
//! runs 12 independent chains of vector FMAs (enough to cover the FMA latency on both pipes), with
//! no loads or stores, and the rate of all threads together is reported. AVX-512 where the CPU has
//! it, else AVX2 + FMA, else the portable loop (which only says what scalar code gets).

use recur::ops::cpu::Isa;
use std::time::Instant;

/// Independent accumulators per thread: more than latency x pipes (4 x 2 on the CPUs measured).
const CHAINS: usize = 12;

/// Which instruction set the measurement uses on this CPU.
pub fn isa() -> &'static str {
    Isa::detect().name()
}

/// Runs `iters` rounds of CHAINS FMAs on one thread; returns the flops done (2 per lane per FMA)
/// and the sum of the results (so the loop cannot be optimised away, and can be checked).
pub(crate) fn one_thread(iters: u64) -> (f64, f32) {
    let isa = Isa::detect();
    let sum = match isa {
        // SAFETY: the CPU has AVX-512F (detected).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { recur::ops::chains::fma512::<CHAINS>(iters) },
        // SAFETY: the CPU has AVX2 and FMA (detected).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => unsafe { recur::ops::chains::fma256::<CHAINS>(iters) },
        _ => portable(iters),
    };
    let flops = 2.0 * isa.lanes() as f64 * (iters * CHAINS as u64) as f64;
    (flops, sum)
}

/// The chains on scalars (as `recur::ops::chains`' vector ones): the sum of their values after
/// `iters` rounds.
fn portable(iters: u64) -> f32 {
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
    acc.iter().sum()
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
        let lanes = Isa::detect().lanes() as f64;
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
