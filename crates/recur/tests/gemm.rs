//! The GEMM wrapper against its naive reference on awkward sizes, every transpose combination,
//! beta = 0 (C pre-filled with NaN, which must not leak) and beta != 0, padded leading dimensions.

use recur::ops::{gemm, gemm_naive, Float, Trans};
use recur::rng::Rng;

/// f32 tolerance: relative to sqrt(k) * |a||b| rounding growth of a blocked sum of k products.
const TOL_F32: f64 = 1e-5;
const TOL_F64: f64 = 1e-12;
const SIZES: [usize; 10] = [0, 1, 2, 15, 16, 17, 127, 128, 129, 33];

fn check<F: Float>(tol: f64, threads: usize) {
    recur::ops::gemm::set_threads(threads);
    let mut rng = Rng::new(42);
    let mut n_cases = 0;
    for (ci, &m) in SIZES.iter().enumerate() {
        for (cj, &n) in SIZES.iter().enumerate() {
            // vary k with the case so that every size appears as m, n and k
            let k = SIZES[(ci + 2 * cj) % SIZES.len()];
            for &ta in &[Trans::N, Trans::T] {
                for &tb in &[Trans::N, Trans::T] {
                    for &beta in &[0.0, 0.5] {
                        let pad = 3;
                        let (ar, ac) = if ta == Trans::N { (m, k) } else { (k, m) };
                        let (br, bc) = if tb == Trans::N { (k, n) } else { (n, k) };
                        let (lda, ldb, ldc) = (ac + pad, bc + pad, n + pad);
                        let a: Vec<F> = (0..ar * lda).map(|_| F::from_f64(rng.normal())).collect();
                        let b: Vec<F> = (0..br * ldb).map(|_| F::from_f64(rng.normal())).collect();
                        let c0: Vec<F> = (0..m * ldc)
                            .map(|i| {
                                if beta == 0.0 || i % ldc >= n {
                                    F::from_f64(f64::NAN)
                                } else {
                                    F::from_f64(rng.normal())
                                }
                            })
                            .collect();
                        let (alpha, beta_f) = (F::from_f64(1.25), F::from_f64(beta));
                        let mut c = c0.clone();
                        let mut r = c0.clone();
                        gemm(
                            ta, tb, m, n, k, alpha, &a, lda, &b, ldb, beta_f, &mut c, ldc,
                        );
                        gemm_naive(
                            ta, tb, m, n, k, alpha, &a, lda, &b, ldb, beta_f, &mut r, ldc,
                        );
                        let scale = (k.max(1) as f64).sqrt() * 1.25 * 4.0;
                        let mut worst = (0.0f64, 0usize);
                        for i in 0..m {
                            for j in 0..n {
                                let idx = i * ldc + j;
                                let (x, y) = (c[idx].to_f64(), r[idx].to_f64());
                                assert!(
                                    x.is_finite(),
                                    "m={m} n={n} k={k} {ta:?}{tb:?} beta={beta}: C[{i},{j}] = {x}"
                                );
                                let d = (x - y).abs() / scale;
                                if d > worst.0 {
                                    worst = (d, idx);
                                }
                            }
                            // padding columns of C are never written
                            for j in n..ldc {
                                assert!(
                                    c[i * ldc + j].to_f64().is_nan(),
                                    "padding of C written at ({i},{j})"
                                );
                            }
                        }
                        assert!(
                            worst.0 <= tol,
                            "m={m} n={n} k={k} {ta:?}{tb:?} beta={beta}: worst scaled error {:.3e} at flat index {}",
                            worst.0,
                            worst.1
                        );
                        n_cases += 1;
                    }
                }
            }
        }
    }
    assert_eq!(n_cases, SIZES.len() * SIZES.len() * 8);
}

#[test]
fn gemm_f32_matches_naive() {
    check::<f32>(TOL_F32, 1);
}

#[test]
fn gemm_f64_matches_naive() {
    check::<f64>(TOL_F64, 1);
}

#[test]
fn gemm_f32_two_threads_matches_naive() {
    check::<f32>(TOL_F32, 2);
    recur::ops::gemm::set_threads(1);
}
