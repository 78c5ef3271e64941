//! Branch-free float32 `exp`, `tanh` and `sigmoid` for the cells' element-wise passes.
//!
//! The C library's `expf`/`tanhf` are scalar calls; inside a gate loop they stop the compiler from
//! vectorising (what that cost: docs/performance.md, "Branch-free activations"). These are
//! written with arithmetic, compares and bit casts only, so a loop over a row of gates becomes
//! SIMD code. Accuracy, checked in the tests at the bottom against f64 over the whole useful
//! range: `exp` within 2 ulp, `tanh` and `sigmoid` within 4 ulp of the correctly rounded value (a
//! few parts in 1e7 relative), far inside the PyTorch-parity tolerance. float64 does not use
//! these: it keeps the C library's functions, so the f64 gradient checks see exact activations.
//!
//! The polynomials are written with `mul_add`: in the drivers' AVX-512 and AVX2 builds of the
//! gate passes (functions compiled with the `fma` target feature) each is one fused multiply-add,
//! which shortens the dependency chains that bound these passes (docs/performance.md,
//! "Branch-free activations"); elsewhere `mul_add` is the C library's `fmaf`, slower but the same
//! value.
//!
//! Method (all constants derived here, none copied):
//! - `exp(x) = 2^n * e^r` with `n = round(x / ln 2)`, `r = x - n ln 2` (ln 2 split in two parts
//!   so that `n ln 2` is exact), `|r| <= ln(2)/2`, and `e^r` by its Taylor series to `r^7`
//!   (truncation error below `(ln 2 / 2)^8 / 8! = 5e-9`), evaluated in Estrin's form (a chain of 4
//!   multiply-adds rather than 7); `2^n` is built in the exponent bits.
//! - `tanh(x)`: for `|x| < 0.55` an odd polynomial `x + x^3 P(x^2)` fitted (least squares at
//!   Chebyshev nodes, relative error 9e-9 in exact arithmetic); above, `1 - 2 / (e^{2|x|} + 1)`
//!   with the sign put back (no cancellation worse than a factor 2 there, since tanh >= 0.5).
//! - `sigmoid(x) = 1 / (1 + e^{-x})`, with `x` clamped so that `e^{-x}` stays finite.

/// Largest argument whose `exp` is finite in f32 with the construction below (n <= 127).
const EXP_HI: f32 = 88.0;
/// Smallest argument kept normal (n >= -126): below it the result is flushed towards 0.
const EXP_LO: f32 = -87.0;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 = LN2_HI + LN2_LO, LN2_HI with few significant bits so that `n * LN2_HI` is exact.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5 * 2^23: adding and subtracting it rounds an f32 of magnitude < 2^22 to the nearest integer.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// e^x for f32, within 2 ulp for x in [-87, 88]; clamped outside (so never inf or NaN for finite x).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(EXP_LO, EXP_HI);
    // k = 1.5 * 2^23 + n exactly, so n sits in k's low mantissa bits (bits(k) = 0x4B40_0000 + n)
    let k = x * LOG2E + ROUND_MAGIC;
    let n = k - ROUND_MAGIC;
    let r = (-n).mul_add(LN2_HI, x);
    let r = (-n).mul_add(LN2_LO, r);
    // e^r, Taylor to r^7, in Estrin's form: pairs of terms in parallel, then r^2 and r^4 join
    // them, so the dependency chain is 4 fused multiply-adds deep instead of Horner's 7 (the
    // gate passes are bound by these chains' latency, not by the number of operations)
    let r2 = r * r;
    let r4 = r2 * r2;
    let p01 = r + 1.0;
    let p23 = r.mul_add(1.0 / 6.0, 0.5);
    let p45 = r.mul_add(1.0 / 120.0, 1.0 / 24.0);
    let p67 = r.mul_add(1.0 / 5040.0, 1.0 / 720.0);
    let p03 = p23.mul_add(r2, p01);
    let p47 = p67.mul_add(r2, p45);
    let p = p47.mul_add(r4, p03);
    // 2^n from the bits of k, with integer operations only (an `as i32` conversion would stop
    // the loop from vectorising: its saturating semantics need scalar code)
    let scale = f32::from_bits(k.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23);
    p * scale
}

/// Coefficients of `tanh(x) = x + x^3 (T0 + T1 x^2 + T2 x^4 + T3 x^6 + T4 x^8)` on |x| < 0.55.
const T0: f32 = -0.333_333_3;
const T1: f32 = 0.133_331_6;
const T2: f32 = -0.053_915_747;
const T3: f32 = 0.021_339_778;
const T4: f32 = -0.006_657_488_6;
/// Below this magnitude tanh uses the polynomial.
const TANH_SMALL: f32 = 0.55;

/// tanh for f32, within 4 ulp.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    let ax = x.abs();
    // small |x|: odd polynomial
    let x2 = x * x;
    let q = T4;
    let q = q.mul_add(x2, T3);
    let q = q.mul_add(x2, T2);
    let q = q.mul_add(x2, T1);
    let q = q.mul_add(x2, T0);
    let small = (x * x2).mul_add(q, x);
    // large |x|: 1 - 2 / (e^{2|x|} + 1), sign restored
    let e = exp_f32(2.0 * ax);
    let large = (1.0 - 2.0 / (e + 1.0)).copysign(x);
    if ax < TANH_SMALL {
        small
    } else {
        large
    }
}

/// The logistic sigmoid `1 / (1 + e^{-x})` for f32, within 4 ulp where it is above 1e-37.
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between an f32 and the exact value (given in f64).
    fn ulps(got: f32, exact: f64) -> f64 {
        let want = exact as f32;
        let ulp = (f32::from_bits(want.abs().to_bits() + 1) - want.abs()) as f64;
        ((got as f64) - exact).abs() / ulp
    }

    /// 400,001 evenly spaced points of [lo, hi].
    fn grid(lo: f32, hi: f32) -> impl Iterator<Item = f32> {
        let n = 400_000;
        (0..=n).map(move |i| lo + (hi - lo) * (i as f32 / n as f32))
    }

    /// exp: at most 2 ulp from the correctly rounded value.
    const EXP_MAX_ULP: f64 = 2.0;
    /// tanh and sigmoid: at most 4 ulp.
    const ACT_MAX_ULP: f64 = 4.0;

    #[test]
    fn exp_within_two_ulp() {
        let (mut worst, mut at) = (0.0, 0.0);
        for x in grid(-87.0, 88.0) {
            let e = ulps(exp_f32(x), (x as f64).exp());
            if e > worst {
                (worst, at) = (e, x);
            }
        }
        assert!(worst <= EXP_MAX_ULP, "exp: {worst} ulp at x = {at}");
        assert!(exp_f32(1000.0).is_finite() && exp_f32(-1000.0) >= 0.0);
    }

    #[test]
    fn tanh_within_four_ulp() {
        let (mut worst, mut at) = (0.0, 0.0);
        for x in grid(-20.0, 20.0).chain(grid(-1e-3, 1e-3)) {
            let e = ulps(tanh_f32(x), (x as f64).tanh());
            if e > worst {
                (worst, at) = (e, x);
            }
        }
        assert!(worst <= ACT_MAX_ULP, "tanh: {worst} ulp at x = {at}");
        assert_eq!(tanh_f32(100.0), 1.0);
        assert_eq!(tanh_f32(-100.0), -1.0);
        assert_eq!(tanh_f32(0.0), 0.0);
    }

    #[test]
    fn sigmoid_within_four_ulp() {
        let (mut worst, mut at) = (0.0, 0.0);
        for x in grid(-80.0, 40.0) {
            let exact = 1.0 / (1.0 + (-(x as f64)).exp());
            let e = ulps(sigmoid_f32(x), exact);
            if e > worst {
                (worst, at) = (e, x);
            }
        }
        assert!(worst <= ACT_MAX_ULP, "sigmoid: {worst} ulp at x = {at}");
        assert_eq!(sigmoid_f32(200.0), 1.0);
        assert!(sigmoid_f32(-200.0) >= 0.0 && sigmoid_f32(-200.0) < 1e-37);
    }
}
