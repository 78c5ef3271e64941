//! Which multiplier runs the bf16 products (the per-step products, the input product, the
//! weight and input gradients, the decoder's products): AMX tiles where this process has them;
//! else AVX512-BF16's `vdpbf16ps` where it does more multiply-adds per second than the float32
//! FMA on this machine, measured once per process; else the float32 kernels on the bf16 values.
//!
//! `vdpbf16ps zmm` does 32 multiply-adds where `vfmadd231ps zmm` does 16, but how many of them a
//! core retires per cycle differs from one CPU to the next: on the model-207 Xeon it ran at
//! about half the FMA's multiply-adds per second, on the Zen 4 EPYC at about 1.85 times
//! (docs/precision.md). Neither the CPU's features nor its caches tell which, so the two are
//! timed against each other on the calling thread (about a millisecond) the first time a bf16
//! product asks.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The machine that multiplies bf16 values here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Multiplier {
    /// AMX `tdpbf16ps` tiles, granted to this process (or their model, `tiles::use_model`).
    Tiles,
    /// AVX512-BF16 `vdpbf16ps` on 512-bit registers, on the same bf16 panels as the tiles.
    Vdpbf16ps,
    /// The float32 kernels on bf16 values: the `gemm` crate for the large products, and for the
    /// per-step product bf16 panels widened in registers or float32 panels
    /// (`cell::bf16_choice`), one row on `vdpbf16ps` where the CPU has it.
    Float32,
}

/// How many times the float32 FMA's multiply-adds per second `vdpbf16ps` must do to be chosen:
/// its products also pay a conversion of the left operand to bf16 pairs and add a pair's
/// products in another order than the float32 kernels, so a tie keeps float32.
pub const MARGIN: f64 = 1.25;

/// Calls of the `vdpbf16ps` products ([`dp_products`]).
static DP_PRODUCTS: AtomicUsize = AtomicUsize::new(0);

/// How many bf16 products this process has sent to `vdpbf16ps` as a multiplier (each call of
/// a tile product; the one-row per-step product of [`Multiplier::Float32`] is not counted):
/// tests check with it that a path meant for it went there.
pub fn dp_products() -> usize {
    DP_PRODUCTS.load(Ordering::Relaxed)
}

pub(crate) fn count_dp_product() {
    DP_PRODUCTS.fetch_add(1, Ordering::Relaxed);
}

/// Set by [`force`]: 0 none, else 1 + the index of the forced multiplier.
static FORCED: AtomicU8 = AtomicU8::new(0);

/// The multiplier of this process's bf16 products: [`Multiplier::Tiles`] where the tiles are
/// available, else [`Multiplier::Vdpbf16ps`] where the AVX-512 kernels run, the CPU has
/// AVX512-BF16 and [`measured_ratio`] is at least [`MARGIN`], else [`Multiplier::Float32`]
/// ([`force`] overrides all but the tiles' model).
pub fn multiplier() -> Multiplier {
    if super::tiles::model_on() {
        return Multiplier::Tiles;
    }
    match FORCED.load(Ordering::Relaxed) {
        1 => return Multiplier::Tiles,
        2 => return Multiplier::Vdpbf16ps,
        3 => return Multiplier::Float32,
        _ => {}
    }
    static AUTO: OnceLock<Multiplier> = OnceLock::new();
    *AUTO.get_or_init(|| {
        if super::tiles::available() {
            Multiplier::Tiles
        } else if dp_runs() && measured_ratio().is_some_and(|r| r >= MARGIN) {
            Multiplier::Vdpbf16ps
        } else {
            Multiplier::Float32
        }
    })
}

/// Whether the bf16 products run on a bf16 multiplier (tiles or `vdpbf16ps`), not on the
/// float32 kernels.
pub fn native() -> bool {
    multiplier() != Multiplier::Float32
}

/// Whether this CPU runs the `vdpbf16ps` products (the AVX-512 kernels and AVX512-BF16).
pub fn dp_runs() -> bool {
    super::bf16::kernel() == super::cpu::Isa::Avx512 && super::cpu::has_avx512_bf16()
}

/// Process-wide, for tests and measurements: the bf16 products on `m` (None: chosen as
/// [`multiplier`] says). The tiles' model, while on, still takes precedence.
///
/// # Panics
/// When this CPU cannot run `m`.
pub fn force(m: Option<Multiplier>) {
    let code = match m {
        None => 0,
        Some(Multiplier::Tiles) => {
            assert!(
                super::tiles::available(),
                "AMX bf16 tiles are not available here"
            );
            1
        }
        Some(Multiplier::Vdpbf16ps) => {
            assert!(
                dp_runs(),
                "vdpbf16ps (AVX-512 with AVX512-BF16) is not on this CPU"
            );
            2
        }
        Some(Multiplier::Float32) => 3,
    };
    FORCED.store(code, Ordering::Relaxed);
}

/// The choice and why, for `recur bench --dispatch`.
pub fn describe() -> String {
    let ratio = match measured_ratio() {
        Some(r) => format!("vdpbf16ps measured {r:.2}x the float32 FMA's multiply-adds per second"),
        None => "no vdpbf16ps on this CPU".to_string(),
    };
    match multiplier() {
        Multiplier::Tiles => format!(
            "AMX tdpbf16ps tiles for every bf16 product (per-step, input, gradients, decoder); {ratio}"
        ),
        Multiplier::Vdpbf16ps => format!(
            "vdpbf16ps for every bf16 product (per-step, input, gradients, decoder): {ratio} \
             (chosen from {MARGIN}x)"
        ),
        Multiplier::Float32 => format!(
            "the float32 kernels on bf16 values ({ratio}; vdpbf16ps is chosen from {MARGIN}x)"
        ),
    }
}

/// `vdpbf16ps zmm`'s multiply-adds per second over `vfmadd231ps zmm`'s, on the calling thread
/// (independent chains of each, [`super::chains`], timed alternately, the best of several
/// rounds each), measured
/// once per process; None where the CPU lacks either.
pub fn measured_ratio() -> Option<f64> {
    static RATIO: OnceLock<Option<f64>> = OnceLock::new();
    *RATIO.get_or_init(|| {
        if !dp_runs() {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        {
            // about 0.1 ms a timing on a 3 GHz core at one instruction a cycle; 12 chains cover
            // either instruction's latency on the CPUs measured (docs/performance.md, "The
            // ceilings of every number format")
            const ITERS: u64 = 25_000;
            use super::chains::{dpbf16, fma512};
            let (mut fma, mut dp) = (f64::INFINITY, f64::INFINITY);
            for _ in 0..7 {
                let t = std::time::Instant::now();
                // SAFETY: the AVX-512 kernels run here (dp_runs).
                std::hint::black_box(unsafe { fma512::<12>(ITERS) });
                fma = fma.min(t.elapsed().as_secs_f64());
                let t = std::time::Instant::now();
                // SAFETY: AVX-512F and AVX512-BF16 present (dp_runs).
                std::hint::black_box(unsafe { dpbf16::<12>(ITERS) });
                dp = dp.min(t.elapsed().as_secs_f64());
            }
            // the same number of instructions each: 32 multiply-adds per vdpbf16ps, 16 per FMA
            Some((32.0 / dp) / (16.0 / fma))
        }
        #[cfg(not(target_arch = "x86_64"))]
        None
    })
}
