//! In bf16 inference, whether the per-step product reads W_hh as bf16 panels (half the bytes)
//! or as float32 panels of the rounded weights (the float32 kernel).
//!
//! Where the CPU multiplies bf16 directly (AVX512-BF16's `vdpbf16ps`), the bf16 panels are
//! multiplied by it; elsewhere each bf16 weight is widened in registers and goes through the
//! float32 FMA, and both formats then add the same exact products in the same order (the same
//! bits). Either way the choice is speed alone, and it depends on how fast this machine streams
//! weights from its shared cache, which cache sizes do not tell, so where it is not clear from
//! the sizes it is measured: both formats timed once per shape and thread count, in this
//! process, on the machine it runs on. `vdpbf16ps` does twice a float32 FMA's products per
//! instruction but need not retire as many instructions: on the Xeon it was measured on, it
//! did about half the float32 FMA's products per second, so it pays where the step waits on
//! the weights' bytes, not where it waits on arithmetic. Why: docs/performance.md, "bf16 panels
//! or float32 panels", "bf16 panels measured where the L3 decides" and docs/precision.md,
//! "vdpbf16ps".

use crate::ops::aligned::AVec;
use crate::ops::cpu::Caches;
use crate::ops::gemm::threads;
use crate::ops::panel::{self, panels, OutPtr, NR};
use crate::ops::{bf16, for_parts_mut};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Rows up to which bf16 panels can pay: with more, each loaded weight serves enough rows that
/// the product waits on arithmetic, where the widening only costs. The AVX-512 kernel widens a
/// pair row of 32 weights with two instructions for 2 x rows FMAs, the AVX2 one with four for as
/// many: measured, AVX-512's bf16 panels still won at 8 rows from the L3 (1.33-1.42x on the
/// model-207 Xeon) and tied at 32 (docs/precision.md).
pub(crate) fn max_rows() -> usize {
    if bf16::kernel() == crate::ops::cpu::Isa::Avx512 {
        8
    } else {
        4
    }
}

/// The decision for a step of `rows` batch rows (a thread's rows) against W_hh of `gh x h`
/// (float32 bytes `gh * h * 4`), split over `parts` threads by units:
/// - a bf16 multiplier (AMX tiles granted to this process, or `vdpbf16ps` where it outruns the
///   float32 FMA: `ops::multiplier`): bf16 panels (multiplied on it);
/// - one row on a CPU that multiplies bf16 directly ([`bf16::native`]): bf16 panels (one load
///   of 32 weights feeds one `vdpbf16ps`, where float32 needs two loads for two FMAs);
/// - more than [`max_rows`] rows, or weights that fit in the threads' L2s: float32 panels
///   (the step does not wait on the weights' bytes);
/// - weights beyond the L3 and the L2s together: bf16 panels (the step streams them from
///   memory; measured 1.45-1.59x on the first machine);
/// - in between (the weights stream from the L3 every step): measured ([`measured`]).
pub(super) fn auto(gh: usize, h: usize, rows: usize, parts: usize) -> bool {
    if crate::ops::multiplier::native() {
        // a tile product does 16 x 16 x 32 multiply-adds per 1 KiB of weights loaded: it
        // outruns the float32 FMA at every shape by that count (not measured yet: no AMX
        // machine has run it)
        return true;
    }
    if rows == 1 && bf16::native() {
        return true;
    }
    let caches = Caches::get();
    let weight_bytes = gh * h * std::mem::size_of::<f32>();
    if rows > max_rows() || weight_bytes <= parts.max(1) * caches.l2 {
        return false;
    }
    if weight_bytes > caches.l3 + threads() * caches.l2 {
        return true;
    }
    measured(gh, h, rows, parts)
}

/// A measured shape: (gh, h, rows, parts).
type Shape = (usize, usize, usize, usize);

/// Shapes already measured in this process, and whether bf16 panels won.
static MEASURED: Mutex<Option<HashMap<Shape, bool>>> = Mutex::new(None);

/// Rounds of the measurement: each times one product of each format, alternating.
const ROUNDS: usize = 7;

/// The least time bf16 panels must save to be chosen (float32 is the default).
const MARGIN: f64 = 0.9;

/// Times both formats on this shape (random weights, `parts` threads each taking its share of
/// the panels, as the split by units does), the best of [`ROUNDS`] each, once per process and
/// shape: bf16 panels when they take under [`MARGIN`] of float32's time.
pub(super) fn measured(gh: usize, h: usize, rows: usize, parts: usize) -> bool {
    let key = (gh, h, rows, parts);
    if let Some(&won) = MEASURED
        .lock()
        .expect("lock")
        .get_or_insert_default()
        .get(&key)
    {
        return won;
    }
    // timed without holding the lock: the timing runs on the thread pool, whose threads may
    // reach this function themselves (two layers or directions at once), and the lock is not
    // reentrant; at worst two threads time the same shape once each
    let (t32, t16) = time_formats(gh, h, rows, parts);
    let won = t16 < MARGIN * t32;
    MEASURED
        .lock()
        .expect("lock")
        .get_or_insert_default()
        .insert(key, won);
    won
}

/// The best time of one product in each format, float32 and bf16 panels, in seconds.
fn time_formats(gh: usize, h: usize, rows: usize, parts: usize) -> (f64, f64) {
    let g = gh / h.max(1);
    let (k, np) = (h, g * panels(h));
    let mut w = AVec::<f32>::zeroed(gh * h);
    for (i, x) in w.iter_mut().enumerate() {
        *x = bf16::round(((i % 13) as f32 - 6.0) * 0.01);
    }
    let mut p32 = AVec::<f32>::zeroed(np * k * NR);
    panel::pack_gates_t(&mut p32, &w, g, h, k);
    let mut p16 = AVec::<u16>::zeroed(bf16::packed_len(np, k));
    bf16::from_panels(&mut p16, &p32, np, k);
    drop(w);
    let a = AVec::<f32>::zeroed(rows * k);
    let ld = np * NR;
    let parts = parts.clamp(1, np);
    let mut c = AVec::<f32>::zeroed(parts * rows * ld);
    let mut time = |bf: bool| {
        let t = Instant::now();
        // each part its share of the panels into its own rows of `c`
        for_parts_mut(&mut c, rows * ld, parts > 1, |e0, part| {
            let k0 = e0 / (rows * ld);
            let pan = (k0 * np / parts)..((k0 + 1) * np / parts);
            if bf {
                let out = OutPtr {
                    ptr: part.as_mut_ptr(),
                    ld,
                    n: ld,
                };
                // SAFETY: `part` holds `rows` rows of `ld` and is this part's alone.
                unsafe { bf16::panel_gemm_raw(rows, k, &a, k, &p16, pan, out) };
            } else {
                panel::panel_gemm(rows, k, &a, k, &p32, pan, part, ld, ld);
            }
        });
        t.elapsed().as_secs_f64()
    };
    // one untimed call of each (pages, caches), then the rounds
    time(false);
    time(true);
    let (mut t32, mut t16) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..ROUNDS {
        t32 = t32.min(time(false));
        t16 = t16.min(time(true));
    }
    (t32, t16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_decide_first_and_a_measurement_is_kept() {
        // with a bf16 multiplier (AMX or vdpbf16ps): bf16 panels at every shape
        let tiles = crate::ops::multiplier::native();
        // many rows, or weights that stay in the L2s: float32 panels, nothing timed (unless
        // one row on a CPU that multiplies bf16 directly: then bf16 panels)
        assert_eq!(auto(4 * 1024, 1024, max_rows() + 1, 1), tiles);
        assert_eq!(auto(4 * 16, 16, 2, 1), tiles);
        assert_eq!(auto(4 * 16, 16, 1, 1), bf16::native() || tiles);
        // both formats timed: finite, positive times
        let (t32, t16) = time_formats(4 * 64, 64, 2, 2);
        assert!(t32 > 0.0 && t32.is_finite() && t16 > 0.0 && t16.is_finite());
        // a measured shape is measured once: the second answer is the first
        let first = measured(3 * 48, 48, 1, 1);
        assert_eq!(measured(3 * 48, 48, 1, 1), first);
        assert!(MEASURED
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .contains_key(&(3 * 48, 48, 1, 1)));
    }
}
