//! The machine's arithmetic ceilings for every number format recur computes in: float32 FMA,
//! the bf16 and int8 dot-product instructions, and AMX tiles. Each is measured like the FMA
//! ceiling ([`crate::peak`]): every thread runs independent chains of the one instruction with
//! no loads or stores, and the rate of all threads together is reported, so that a kernel's
//! speed can be read as a share of what the hardware can do in its format.
//!
//! Rates count 2 operations per multiply-add (GFLOP/s for float formats, GOP/s for integer
//! ones). A ceiling the CPU cannot run is reported with what it lacks.

use recur::ops::amx::{Amx, TileConfig};
use recur::ops::cpu::Isa;
use std::time::{Duration, Instant};

/// One ceiling: what it measures, with which instruction, and its rate (or why not).
#[derive(Clone, Debug)]
pub struct Ceiling {
    /// The number format and what is multiplied.
    pub what: &'static str,
    /// The instruction timed.
    pub instruction: &'static str,
    /// "GFLOP/s" or "GOP/s".
    pub unit: &'static str,
    /// The rate in G per second, or what this CPU lacks.
    pub rate: Result<f64, String>,
}

/// The kernel `$f` at each count of independent accumulators per thread tried for a vector
/// instruction (8, 12 and 16), as plain functions; its ceiling is the best of them. Enough
/// chains must cover the instruction's latency times its pipes (from 5 x 2 to about 12 on the
/// CPUs measured: the Zen 4's `vdpbf16ps` and `vpdpbusd` ran 13% under their rate with 10), too
/// many spill out of the 32 registers (24 lost a third of `vdpbf16ps`'s rate there).
macro_rules! each_chains {
    ($m:ident :: $f:ident) => {
        // SAFETY (each): the caller checked that the CPU runs the kernel.
        [
            |n| unsafe { $m::$f::<8>(n) },
            |n| unsafe { $m::$f::<12>(n) },
            |n| unsafe { $m::$f::<16>(n) },
        ]
    };
}

/// Every ceiling on `threads` threads, each measured for about `time`.
pub fn measure(threads: usize, time: Duration) -> Vec<Ceiling> {
    let threads = threads.max(1);
    let isa = Isa::detect();
    let fma_instr = match isa {
        Isa::Avx512 => "vfmadd231ps zmm (AVX-512)",
        Isa::Avx2Fma => "vfmadd231ps ymm (AVX2+FMA)",
        Isa::Portable => "scalar mul_add",
    };
    let mut out = vec![Ceiling {
        what: "float32 FMA",
        instruction: fma_instr,
        unit: "GFLOP/s",
        rate: Ok(rate(threads, time, |n| {
            let (ops, _) = crate::peak::one_thread(n);
            ops
        })),
    }];
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let run = |ok: bool, lacks: &str, fs: [fn(u64) -> f64; 3]| {
            if ok {
                let each = time / fs.len() as u32;
                Ok(fs
                    .iter()
                    .map(|&f| rate(threads, each, f))
                    .fold(0.0, f64::max))
            } else {
                Err(format!("not on this CPU (no {lacks})"))
            }
        };
        out.push(Ceiling {
            what: "bf16 dot product",
            instruction: "vdpbf16ps zmm (AVX512-BF16)",
            unit: "GFLOP/s",
            rate: run(
                has!("avx512bf16") && has!("avx512f"),
                "avx512_bf16",
                each_chains!(x86::dpbf16),
            ),
        });
        out.push(Ceiling {
            what: "int8 dot product",
            instruction: "vpdpbusd zmm (AVX512-VNNI)",
            unit: "GOP/s",
            rate: run(
                has!("avx512vnni") && has!("avx512f"),
                "avx512_vnni",
                each_chains!(x86::dpbusd512),
            ),
        });
        out.push(Ceiling {
            what: "int8 dot product, 256-bit",
            instruction: "vpdpbusd ymm (AVX-VNNI)",
            unit: "GOP/s",
            rate: run(has!("avxvnni"), "avx_vnni", each_chains!(x86::dpbusd256)),
        });
        out.push(Ceiling {
            what: "int8 without VNNI",
            instruction: "vpmaddubsw + vpmaddwd + vpaddd ymm (AVX2)",
            unit: "GOP/s",
            rate: run(has!("avx2"), "avx2", each_chains!(x86::maddubs)),
        });
    }
    let amx = Amx::get();
    let tiles = |ok: bool, f: fn(u64) -> f64| -> Result<f64, String> {
        if ok {
            Ok(rate(threads, time, f))
        } else {
            Err(amx.describe())
        }
    };
    out.push(Ceiling {
        what: "AMX bf16 tiles",
        instruction: "tdpbf16ps",
        unit: "GFLOP/s",
        rate: tiles(amx.bf16(), |n| amx_run(n, false).0),
    });
    out.push(Ceiling {
        what: "AMX int8 tiles",
        instruction: "tdpbusd",
        unit: "GOP/s",
        rate: tiles(amx.int8(), |n| amx_run(n, true).0),
    });
    out
}

/// The rate (G per second) of `threads` threads each running `work(iters)` (which returns the
/// operations it did), with `iters` grown until one run lasts about `time`.
fn rate(threads: usize, time: Duration, work: impl Fn(u64) -> f64 + Sync) -> f64 {
    let mut iters = 1u64 << 10;
    loop {
        let start = Instant::now();
        work(iters);
        let took = start.elapsed();
        if took * 8 >= time || iters >= 1 << 40 {
            let scale = time.as_secs_f64() / took.as_secs_f64().max(1e-9);
            iters = ((iters as f64 * scale) as u64).max(1);
            break;
        }
        iters *= 4;
    }
    let start = Instant::now();
    let ops: f64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads).map(|_| s.spawn(|| work(iters))).collect();
        hs.into_iter()
            .map(|h| h.join().expect("ceiling thread panicked"))
            .sum()
    });
    ops / start.elapsed().as_secs_f64() / 1e9
}

/// `iters` rounds of four tile products into four accumulators (tmm0-3) from tiles of ones
/// (bf16 1.0, or int8 1) and twos (bf16 2.0, or int8 1): returns the operations done and
/// accumulator 0's first element, which must be `iters` times 64 (int8: `iters` x 64).
///
/// Panics unless [`Amx::get`] says the products can run.
pub fn amx_run(iters: u64, int8: bool) -> (f64, f64) {
    let amx = Amx::get();
    assert!(
        if int8 { amx.int8() } else { amx.bf16() },
        "AMX {} products cannot run here: {}",
        if int8 { "int8" } else { "bf16" },
        amx.describe()
    );
    #[cfg(target_arch = "x86_64")]
    {
        let cfg = TileConfig::full();
        // 16 rows x 64 bytes: bf16 1.0 (0x3f80) / 2.0 (0x4000), or int8 ones
        let (a, b): (Vec<u16>, Vec<u16>) = if int8 {
            (vec![0x0101; 512], vec![0x0101; 512])
        } else {
            (vec![0x3f80; 512], vec![0x4000; 512])
        };
        let mut c = [0u32; 256];
        let n = iters.max(1);
        // SAFETY: the process holds the tile data permission and the CPU runs these products
        // (asserted through Amx::get); the configuration, A, B and C buffers are 64-byte rows of
        // 16 rows each, as the tiles read and write them with a stride of 64; the tile state
        // is released before the block ends.
        unsafe {
            macro_rules! tiles {
                ($op:literal) => {
                    std::arch::asm!(
                        "ldtilecfg [{cfg}]",
                        "tilezero tmm0",
                        "tilezero tmm1",
                        "tilezero tmm2",
                        "tilezero tmm3",
                        "tileloadd tmm4, [{a} + {s}*1]",
                        "tileloadd tmm5, [{a} + {s}*1]",
                        "tileloadd tmm6, [{b} + {s}*1]",
                        "tileloadd tmm7, [{b} + {s}*1]",
                        "2:",
                        concat!($op, " tmm0, tmm4, tmm6"),
                        concat!($op, " tmm1, tmm4, tmm7"),
                        concat!($op, " tmm2, tmm5, tmm6"),
                        concat!($op, " tmm3, tmm5, tmm7"),
                        "dec {n}",
                        "jnz 2b",
                        "tilestored [{c} + {s}*1], tmm0",
                        "tilerelease",
                        cfg = in(reg) cfg.as_ptr(),
                        a = in(reg) a.as_ptr(),
                        b = in(reg) b.as_ptr(),
                        c = in(reg) c.as_mut_ptr(),
                        s = in(reg) 64usize,
                        n = inout(reg) n => _,
                        options(nostack)
                    )
                };
            }
            if int8 {
                tiles!("tdpbusd");
            } else {
                tiles!("tdpbf16ps");
            }
        }
        // per product: 16 x 16 outputs of 32 (bf16) or 64 (int8) multiply-adds, 2 ops each
        let k = if int8 { 64.0 } else { 32.0 };
        let ops = 4.0 * n as f64 * 16.0 * 16.0 * k * 2.0;
        let first = if int8 {
            c[0] as i32 as f64
        } else {
            f32::from_bits(c[0]) as f64
        };
        (ops, first)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (iters, TileConfig::full());
        unreachable!("AMX is x86-64 only")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `iters` rounds of CHAINS `vdpbf16ps` (16 lanes x 2 products, `recur::ops::chains`): the
    /// operations done.
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX512-BF16.
    pub unsafe fn dpbf16<const CHAINS: usize>(iters: u64) -> f64 {
        // SAFETY: the caller's contract.
        let s = unsafe { recur::ops::chains::dpbf16::<CHAINS>(iters) };
        assert!(s.is_finite());
        (iters * CHAINS as u64) as f64 * 16.0 * 2.0 * 2.0
    }

    /// `iters` rounds of CHAINS 512-bit `vpdpbusd` (16 lanes x 4 products).
    #[target_feature(enable = "avx512vnni,avx512f")]
    pub unsafe fn dpbusd512<const CHAINS: usize>(iters: u64) -> f64 {
        let (a, b) = (_mm512_set1_epi8(3), _mm512_set1_epi8(-2));
        let mut acc = [_mm512_setzero_si512(); CHAINS];
        for _ in 0..iters {
            let a = std::hint::black_box(a);
            for x in &mut acc {
                *x = _mm512_dpbusd_epi32(*x, a, b);
            }
        }
        std::hint::black_box(acc);
        (iters * CHAINS as u64) as f64 * 16.0 * 4.0 * 2.0
    }

    /// `iters` rounds of CHAINS 256-bit `vpdpbusd` (8 lanes x 4 products).
    #[target_feature(enable = "avxvnni")]
    pub unsafe fn dpbusd256<const CHAINS: usize>(iters: u64) -> f64 {
        let (a, b) = (_mm256_set1_epi8(3), _mm256_set1_epi8(-2));
        let mut acc = [_mm256_setzero_si256(); CHAINS];
        for _ in 0..iters {
            let a = std::hint::black_box(a);
            for x in &mut acc {
                *x = _mm256_dpbusd_avx_epi32(*x, a, b);
            }
        }
        std::hint::black_box(acc);
        (iters * CHAINS as u64) as f64 * 8.0 * 4.0 * 2.0
    }

    /// `iters` rounds of CHAINS int8 dot products without VNNI: `vpmaddubsw` (32 u8 x s8
    /// products summed in pairs to i16), `vpmaddwd` by ones (pairs to i32), `vpaddd`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn maddubs<const CHAINS: usize>(iters: u64) -> f64 {
        let (a, ones) = (_mm256_set1_epi8(3), _mm256_set1_epi16(1));
        // a right operand of its own per chain: with one for all, the compiler computes the
        // shared product once per round and the chains time `vpaddd` alone
        let mut b = [_mm256_setzero_si256(); CHAINS];
        for (i, v) in b.iter_mut().enumerate() {
            *v = _mm256_set1_epi8(-2 - i as i8);
        }
        let mut acc = [_mm256_setzero_si256(); CHAINS];
        for _ in 0..iters {
            let a = std::hint::black_box(a);
            for (x, &bi) in acc.iter_mut().zip(&b) {
                let p = _mm256_maddubs_epi16(a, bi);
                *x = _mm256_add_epi32(*x, _mm256_madd_epi16(p, ones));
            }
        }
        std::hint::black_box(acc);
        (iters * CHAINS as u64) as f64 * 32.0 * 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every ceiling this CPU has comes out positive and finite; the others say what is
    /// missing. Where AMX runs, its products compute what they claim (64 per round).
    #[test]
    fn every_ceiling_measures_or_says_why_not() {
        let all = measure(1, Duration::from_millis(20));
        assert_eq!(all.len(), 7);
        assert!(all[0].rate.is_ok(), "the float32 ceiling always runs");
        for c in &all {
            match &c.rate {
                Ok(r) => assert!(r.is_finite() && *r > 0.0, "{}: {r}", c.what),
                Err(why) => {
                    assert!(!why.is_empty());
                    eprintln!("skipped: {} ({}): {why}", c.what, c.instruction);
                }
            }
        }
        let amx = Amx::get();
        for (int8, ok) in [(false, amx.bf16()), (true, amx.int8())] {
            if ok {
                let (_, first) = amx_run(1000, int8);
                assert_eq!(first, 64.0 * 1000.0, "AMX int8={int8}: wrong products");
            } else {
                eprintln!("skipped: AMX int8={int8} products ({})", amx.describe());
            }
        }
    }
}
