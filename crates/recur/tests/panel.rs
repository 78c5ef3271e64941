//! The packed per-step product (`ops::panel`) against the naive GEMM on awkward sizes: m, k and
//! the column counts around the panel width (1, 15, 16, 17, 33) and the batch tile (7, 8, 9),
//! output pre-filled with NaN so that an unwritten element shows, and padding columns of C
//! (past `n`) checked to stay untouched. Both packings, f32 (the AVX-512 kernel where the CPU has
//! it) and f64 (the portable loop).

use recur::ops::panel::{pack_gates_t, pack_n, panel_gemm, panels, NR};
use recur::ops::{gemm_naive, Float, Trans};
use recur::rng::Rng;

/// f32: relative to the largest |C| element; sums of up to 70 products of N(0,1) numbers.
const TOL_F32: f64 = 1e-5;
const TOL_F64: f64 = 1e-12;

fn worst<F: Float>(got: &[F], want: &[F], ld: usize, n: usize) -> (f64, usize) {
    let scale = want
        .iter()
        .enumerate()
        .filter(|(i, _)| i % ld < n)
        .map(|(_, v)| v.to_f64().abs())
        .fold(1e-30, f64::max);
    let mut w = (0.0, 0);
    for (i, (g, r)) in got.iter().zip(want).enumerate() {
        if i % ld >= n {
            assert!(g.to_f64().is_nan(), "padding element {i} was written");
            continue;
        }
        let e = (g.to_f64() - r.to_f64()).abs() / scale;
        if !(e <= w.0) {
            w = (if e.is_nan() { f64::INFINITY } else { e }, i);
        }
    }
    w
}

fn check<F: Float>(tol: f64) {
    let mut rng = Rng::new(5);
    for &m in &[1usize, 2, 7, 8, 9, 17] {
        for &k in &[1usize, 3, 16, 33, 70] {
            for &h in &[1usize, 15, 16, 17, 33] {
                let mut r =
                    |n: usize| -> Vec<F> { (0..n).map(|_| F::from_f64(rng.normal())).collect() };
                let g = 3;
                // forward form: C (m, G*Hp) = A (m, k) W^T, W (G*h, k)
                let a = r(m * (k + 2));
                let w = r(g * h * k);
                let mut packed = vec![F::ZERO; g * panels(h) * k * NR];
                pack_gates_t(&mut packed, &w, g, h, k);
                let hp = panels(h) * NR;
                let ld = g * hp + 3;
                let mut c = vec![F::from_f64(f64::NAN); m * ld];
                panel_gemm(
                    m,
                    k,
                    &a,
                    k + 2,
                    &packed,
                    0..g * panels(h),
                    &mut c,
                    ld,
                    g * hp,
                );
                let mut want = vec![F::from_f64(f64::NAN); m * ld];
                for gi in 0..g {
                    gemm_naive(
                        Trans::N,
                        Trans::T,
                        m,
                        h,
                        k,
                        F::ONE,
                        &a,
                        k + 2,
                        &w[gi * h * k..],
                        k,
                        F::ZERO,
                        &mut want[gi * hp..],
                        ld,
                    );
                    for i in 0..m {
                        for j in h..hp {
                            want[i * ld + gi * hp + j] = F::ZERO; // zero padding columns
                        }
                    }
                }
                let (e, at) = worst(&c, &want, ld, g * hp);
                assert!(e <= tol, "gates_t m={m} k={k} h={h}: rel err {e:e} at {at}");

                // backward form: C (m, n) = A (m, k) W, W (k, n), split over two panel ranges
                let n = h;
                let w = r(k * n);
                let mut packed = vec![F::ZERO; panels(n) * k * NR];
                pack_n(&mut packed, &w, k, n);
                let ld = n + 2;
                let mut c = vec![F::from_f64(f64::NAN); m * ld];
                let half = panels(n) / 2;
                panel_gemm(m, k, &a, k + 2, &packed, 0..half, &mut c, ld, n);
                panel_gemm(m, k, &a, k + 2, &packed, half..panels(n), &mut c, ld, n);
                let mut want = vec![F::from_f64(f64::NAN); m * ld];
                gemm_naive(
                    Trans::N,
                    Trans::N,
                    m,
                    n,
                    k,
                    F::ONE,
                    &a,
                    k + 2,
                    &w,
                    n,
                    F::ZERO,
                    &mut want,
                    ld,
                );
                let (e, at) = worst(&c, &want, ld, n);
                assert!(e <= tol, "n m={m} k={k} n={n}: rel err {e:e} at {at}");
            }
        }
    }
}

#[test]
fn packed_product_matches_naive_f32() {
    check::<f32>(TOL_F32);
}

#[test]
fn packed_product_matches_naive_f64() {
    check::<f64>(TOL_F64);
}
