//! The packed per-step product (`ops::panel`) against the naive GEMM on awkward sizes: m, k and
//! the column counts around the panel width (1, 15, 16, 17, 33) and the batch tile (7, 8, 9),
//! output pre-filled with NaN so that an unwritten element shows, and padding columns of C
//! (past `n`) checked to stay untouched. Both packings, f32 on every kernel this CPU runs
//! (AVX-512, AVX2 + FMA, portable; the others are skipped, saying so) and f64 (the portable loop). Also: the product over row groups (the input product of
//! several steps at once) against one naive product per group, and packing split over two
//! threads against the packed layout's definition.

use recur::ops::cpu::Isa;
use recur::ops::gemm::set_threads;
use recur::ops::panel::{
    pack_gates_t, pack_n, panel_gemm_groups_with, panel_gemm_with, panels, Groups, OutPtr, NR,
};
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

fn check<F: Float>(kernel: Isa, tol: f64) {
    let mut rng = Rng::new(5);
    for &m in &[1usize, 2, 7, 8, 9, 12, 13, 17, 25] {
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
                panel_gemm_with(
                    kernel,
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
                assert!(
                    e <= tol,
                    "{kernel:?} gates_t m={m} k={k} h={h}: rel err {e:e} at {at}"
                );

                // backward form: C (m, n) = A (m, k) W, W (k, n), split over two panel ranges
                let n = h;
                let w = r(k * n);
                let mut packed = vec![F::ZERO; panels(n) * k * NR];
                pack_n(&mut packed, &w, k, n);
                let ld = n + 2;
                let mut c = vec![F::from_f64(f64::NAN); m * ld];
                let half = panels(n) / 2;
                panel_gemm_with(kernel, m, k, &a, k + 2, &packed, 0..half, &mut c, ld, n);
                panel_gemm_with(
                    kernel,
                    m,
                    k,
                    &a,
                    k + 2,
                    &packed,
                    half..panels(n),
                    &mut c,
                    ld,
                    n,
                );
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
                assert!(
                    e <= tol,
                    "{kernel:?} n m={m} k={k} n={n}: rel err {e:e} at {at}"
                );
            }
        }
    }
}

/// The f32 kernels this CPU runs; the others are named as skipped.
fn f32_kernels(test: &str) -> Vec<Isa> {
    Isa::ALL
        .into_iter()
        .filter(|k| {
            if !k.available() {
                println!(
                    "{test}: skipping the {} kernel: this CPU cannot run it",
                    k.name()
                );
            }
            k.available()
        })
        .collect()
}

#[test]
fn packed_product_matches_naive_f32() {
    for kernel in f32_kernels("packed_product_matches_naive_f32") {
        check::<f32>(kernel, TOL_F32);
    }
}

#[test]
fn packed_product_matches_naive_f64() {
    check::<f64>(Isa::Portable, TOL_F64);
}

/// `groups` blocks of `m` rows, with gaps between the blocks in both A and C (a gap row of C must
/// stay NaN), against one naive product per block.
fn check_groups<F: Float>(kernel: Isa, tol: f64) {
    let mut rng = Rng::new(9);
    for &m in &[1usize, 7, 8, 16, 25] {
        for &ng in &[1usize, 3] {
            for &(k, h) in &[(5usize, 17usize), (70, 48)] {
                let mut r =
                    |n: usize| -> Vec<F> { (0..n).map(|_| F::from_f64(rng.normal())).collect() };
                let g = 4;
                let hp = panels(h) * NR;
                let lda = k + 1;
                let a_step = m * lda + 3;
                let c_step = m + 1;
                let a = r(ng * a_step);
                let w = r(g * h * k);
                let mut packed = vec![F::ZERO; g * panels(h) * k * NR];
                pack_gates_t(&mut packed, &w, g, h, k);
                let ld = g * hp;
                let rows = ng * c_step;
                let mut c = vec![F::from_f64(f64::NAN); rows * ld];
                let groups = Groups {
                    n: ng,
                    a_step,
                    c_step,
                };
                let out = OutPtr {
                    ptr: c.as_mut_ptr(),
                    ld,
                    n: ld,
                };
                // SAFETY: C holds ng * c_step rows of ld elements, and nothing else uses it
                unsafe {
                    panel_gemm_groups_with(
                        kernel,
                        m,
                        groups,
                        k,
                        &a,
                        lda,
                        &packed,
                        0..g * panels(h),
                        out,
                    )
                };
                let mut want = vec![F::from_f64(f64::NAN); rows * ld];
                for gr in 0..ng {
                    for gi in 0..g {
                        let c0 = gr * c_step * ld + gi * hp;
                        gemm_naive(
                            Trans::N,
                            Trans::T,
                            m,
                            h,
                            k,
                            F::ONE,
                            &a[gr * a_step..],
                            lda,
                            &w[gi * h * k..],
                            k,
                            F::ZERO,
                            &mut want[c0..],
                            ld,
                        );
                        for i in 0..m {
                            want[c0 + i * ld + h..c0 + i * ld + hp].fill(F::ZERO);
                        }
                    }
                }
                let scale = want
                    .iter()
                    .map(|v| v.to_f64().abs())
                    .filter(|v| !v.is_nan())
                    .fold(1e-30, f64::max);
                for (i, (x, y)) in c.iter().zip(&want).enumerate() {
                    let (x, y) = (x.to_f64(), y.to_f64());
                    if y.is_nan() {
                        assert!(
                            x.is_nan(),
                            "groups m={m} n={ng}: gap element {i} was written"
                        );
                    } else {
                        let e = (x - y).abs() / scale;
                        assert!(
                            e <= tol,
                            "groups m={m} n={ng} k={k} h={h}: rel err {e:e} at {i}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn grouped_product_matches_naive_f32() {
    for kernel in f32_kernels("grouped_product_matches_naive_f32") {
        check_groups::<f32>(kernel, TOL_F32);
    }
}

#[test]
fn grouped_product_matches_naive_f64() {
    check_groups::<f64>(Isa::Portable, TOL_F64);
}

/// Packing large enough to be split over the threads gives the layout it defines: column `j` of
/// gate `g` at packed column `g * Hp + j`, zero padding (pack_gates_t); panel `q` = columns
/// `q * NR ..` (pack_n).
#[test]
fn packing_split_over_threads_keeps_the_layout() {
    set_threads(2);
    let (g, h, k) = (4, 100, 200);
    let w: Vec<f32> = (0..g * h * k).map(|i| i as f32).collect();
    let hp = panels(h);
    let mut packed = vec![f32::NAN; g * hp * k * NR];
    assert!(packed.len() >= 1 << 16, "too small to be split");
    pack_gates_t(&mut packed, &w, g, h, k);
    for gi in 0..g {
        for u in 0..hp {
            for p in 0..k {
                for j in 0..NR {
                    let col = u * NR + j;
                    let want = if col < h {
                        w[(gi * h + col) * k + p]
                    } else {
                        0.0
                    };
                    let got = packed[((gi * hp + u) * k + p) * NR + j];
                    assert_eq!(
                        got, want,
                        "pack_gates_t gate {gi} panel {u} row {p} col {j}"
                    );
                }
            }
        }
    }
    let n = g * h;
    let mut packed = vec![f32::NAN; panels(n) * k * NR];
    pack_n(&mut packed, &w, k, n);
    for q in 0..panels(n) {
        for p in 0..k {
            for j in 0..NR {
                let col = q * NR + j;
                let want = if col < n { w[p * n + col] } else { 0.0 };
                assert_eq!(
                    packed[(q * k + p) * NR + j],
                    want,
                    "pack_n panel {q} row {p} col {j}"
                );
            }
        }
    }
    set_threads(1);
}
