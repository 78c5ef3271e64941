//! int8 (`ops::int8`): the quantization of weights (symmetric per row) and activations
//! (asymmetric 7-bit per row) against their definitions, and the packed int8 product on every
//! kernel this CPU runs (AVX512-VNNI, AVX-VNNI, AVX2, portable; the others are skipped, saying so) against an integer
//! reference, bit for bit, on awkward sizes (m around the tiles, k around the quads, H around
//! the panel width), output pre-filled with a sentinel so that an unwritten element shows and
//! padding columns stay untouched. Then the dequantized product against the f64 product of the
//! unquantized operands, within the bound that the two roundings allow, element by element.

use recur::ops::gemm::set_threads;
use recur::ops::int8::{
    pack_gates_t, packed_len, padded, panel_gemm_with, quantize_activations, quantize_rows,
    row_sums, Kernel, QA_MAX,
};
use recur::ops::panel::{panels, Groups, OutPtr, NR};
use recur::rng::Rng;

const SENTINEL: i32 = i32::MIN;

fn kernels() -> Vec<Kernel> {
    let mut out = Vec::new();
    for k in recur::ops::int8::KERNELS {
        if recur::ops::int8::available(k) {
            out.push(k);
        } else {
            eprintln!("skipped: this CPU cannot run the {} int8 kernel", k.name());
        }
    }
    out
}

#[test]
fn weights_quantize_symmetrically_per_row() {
    let mut rng = Rng::new(2);
    let (n, k) = (9, 37);
    let mut w: Vec<f32> = (0..n * k).map(|_| rng.normal() as f32).collect();
    w[3 * k..4 * k].fill(0.0); // a row of zeros
    let (q, s) = quantize_rows(&w, n, k);
    for j in 0..n {
        let row = &q[j * k..(j + 1) * k];
        assert!(row.iter().all(|&c| (-127..=127).contains(&c)));
        if j == 3 {
            assert_eq!(s[j], 0.0);
            assert!(row.iter().all(|&c| c == 0));
            continue;
        }
        assert_eq!(row.iter().map(|c| c.unsigned_abs()).max(), Some(127));
        for p in 0..k {
            let e = (w[j * k + p] - s[j] * q[j * k + p] as f32).abs();
            assert!(
                e <= 0.5 * s[j] * (1.0 + 1e-6),
                "row {j} col {p}: error {e} > s/2"
            );
        }
    }
    let sums = row_sums(&q, n, k);
    assert_eq!(sums[1], q[k..2 * k].iter().map(|&c| c as i32).sum::<i32>());
}

#[test]
fn activations_quantize_to_seven_bits_per_row() {
    let mut rng = Rng::new(4);
    let (m, k, lda) = (5, 21, 23);
    let mut a: Vec<f32> = (0..m * lda).map(|_| rng.normal() as f32).collect();
    for v in &mut a[lda..2 * lda] {
        *v = v.abs(); // a row with no negative value: zero point 0
    }
    a[2 * lda..3 * lda].fill(0.0);
    let ldq = padded(k) + 4;
    let mut q = vec![255u8; m * ldq];
    let rq = quantize_activations(&a, m, k, lda, &mut q, ldq);
    assert_eq!(rq[1].zero, 0);
    assert_eq!(rq[2].scale, 0.0);
    for i in 0..m {
        let row = &q[i * ldq..i * ldq + padded(k)];
        assert!(row.iter().all(|&c| c as i32 <= QA_MAX));
        assert!(row[k..].iter().all(|&c| c == 0), "padding not zero");
        for p in 0..k {
            let back = rq[i].scale * (row[p] as i32 - rq[i].zero) as f32;
            let e = (a[i * lda + p] - back).abs();
            assert!(
                e <= rq[i].scale * (1.0 + 1e-5),
                "row {i} col {p}: error {e} > one step {}",
                rq[i].scale
            );
        }
    }
}

#[test]
fn packed_product_is_exact_on_every_kernel() {
    let kernels = kernels();
    set_threads(2);
    let mut rng = Rng::new(5);
    for &m in &[1usize, 2, 3, 4, 5, 6, 7, 8, 9, 13, 17] {
        for &k in &[1usize, 3, 4, 5, 15, 16, 17, 31, 33, 70] {
            for &h in &[1usize, 15, 16, 17, 33] {
                let g = 3;
                let w: Vec<f32> = (0..g * h * k).map(|_| rng.normal() as f32).collect();
                let (qw, _) = quantize_rows(&w, g * h, k);
                let mut packed = vec![0i8; packed_len(g * panels(h), k)];
                pack_gates_t(&mut packed, &qw, g, h, k);
                // activation codes, the extreme ones included, row stride past the padding
                let lda = padded(k) + 4;
                let qa: Vec<u8> = (0..m * lda)
                    .map(|i| match i % 7 {
                        0 => QA_MAX as u8,
                        1 => 0,
                        _ => (rng.uniform() * 128.0).min(127.0) as u8,
                    })
                    .collect();
                let hp = panels(h) * NR;
                let ld = g * hp + 3;
                for &kern in &kernels {
                    let mut c = vec![SENTINEL; m * ld];
                    let out = OutPtr {
                        ptr: c.as_mut_ptr(),
                        ld,
                        n: g * hp,
                    };
                    // SAFETY: `c` holds m rows of ld columns and is borrowed for the call.
                    unsafe {
                        panel_gemm_with(
                            kern,
                            m,
                            Groups::ONE,
                            k,
                            &qa,
                            lda,
                            &packed,
                            0..g * panels(h),
                            out,
                        )
                    };
                    for i in 0..m {
                        for col in 0..ld {
                            let got = c[i * ld + col];
                            let (gi, j) = (col / hp, col % hp);
                            if col >= g * hp {
                                assert_eq!(got, SENTINEL, "padding column {col} written");
                            } else if j >= h {
                                assert_eq!(got, 0, "padding unit of gate {gi}");
                            } else {
                                let want: i64 = (0..k)
                                    .map(|p| {
                                        qa[i * lda + p] as i64 * qw[(gi * h + j) * k + p] as i64
                                    })
                                    .sum();
                                assert_eq!(
                                    got as i64, want,
                                    "{kern:?} m={m} k={k} h={h} row {i} col {col}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    set_threads(1);
}

#[test]
fn dequantized_product_is_within_the_rounding_bound() {
    let mut rng = Rng::new(9);
    let (m, k, n) = (6, 200, 40);
    let a: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
    let w: Vec<f32> = (0..n * k).map(|_| 0.1 * rng.normal() as f32).collect();
    let (qw, sw) = quantize_rows(&w, n, k);
    let sums = row_sums(&qw, n, k);
    let mut packed = vec![0i8; packed_len(panels(n), k)];
    pack_gates_t(&mut packed, &qw, 1, n, k);
    let lda = padded(k);
    let mut qa = vec![0u8; m * lda];
    let rq = quantize_activations(&a, m, k, k, &mut qa, lda);
    let ld = panels(n) * NR;
    let mut c = vec![0i32; m * ld];
    let out = OutPtr {
        ptr: c.as_mut_ptr(),
        ld,
        n: ld,
    };
    // SAFETY: `c` holds m rows of ld columns and is borrowed for the call.
    unsafe {
        panel_gemm_with(
            recur::ops::int8::kernel(),
            m,
            Groups::ONE,
            k,
            &qa,
            lda,
            &packed,
            0..panels(n),
            out,
        )
    };
    let mut worst_share = 0f64;
    for i in 0..m {
        for j in 0..n {
            let got = rq[i].scale as f64
                * sw[j] as f64
                * (c[i * ld + j] as f64 - rq[i].zero as f64 * sums[j] as f64);
            let exact: f64 = (0..k)
                .map(|p| a[i * k + p] as f64 * w[j * k + p] as f64)
                .sum();
            // |a w - a' w'| <= |a| e_w + |w'| e_a with e_w = s_w / 2, e_a = s_a (one step)
            let bound: f64 = (0..k)
                .map(|p| {
                    a[i * k + p].abs() as f64 * 0.5 * sw[j] as f64
                        + (sw[j] * qw[j * k + p] as f32).abs() as f64 * rq[i].scale as f64
                })
                .sum();
            let e = (got - exact).abs();
            assert!(
                e <= bound * (1.0 + 1e-6),
                "row {i} col {j}: error {e} > bound {bound}"
            );
            worst_share = worst_share.max(e / bound);
        }
    }
    eprintln!("worst error as a share of its bound: {worst_share:.3}");
}
