//! bf16 (`ops::bf16`): the conversion against its definition (round to nearest, ties to even,
//! on the bits; NaN, infinities, overflow, subnormals), and the packed bf16 product on every
//! kernel this CPU runs (AVX512-BF16, AVX2 + FMA, portable; the others are skipped, saying so)
//! against an f64 reference computed from the same rounded operands, on awkward sizes (m, k, H
//! around the tile and panel widths, odd k for the half-filled last pair), output pre-filled with
//! NaN so that an unwritten element shows and padding columns stay untouched. The AVX2 and
//! AVX-512 kernels must also agree with the portable loop bit for bit (the same exact products
//! in the same order), except the AVX-512 kernel's one-row product where the CPU has
//! AVX512-BF16: that one with the order `vdpbf16ps` is defined to add them in (Intel SDM: per
//! pair of rows, the second row's product, then the first's, each sum rounded).

use recur::ops::bf16::{self, from_bf16, from_panels, pack_gates_t, packed_len, round, to_bf16};
use recur::ops::cpu::Isa;
use recur::ops::gemm::set_threads;
use recur::ops::panel::{panels, Groups, OutPtr, NR};
use recur::rng::Rng;

/// Relative to the largest |C| element: float32 accumulation of up to 70 exact products of
/// N(0,1)-sized numbers, against the f64 sum of the same products.
const TOL_SUM: f64 = 1e-5;

#[test]
fn conversion_rounds_to_nearest_even() {
    // exactly representable values stay
    for v in [
        0.0f32,
        -0.0,
        1.0,
        -2.5,
        0.15625,
        65280.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ] {
        assert_eq!(round(v).to_bits(), v.to_bits(), "{v}");
    }
    // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1); 1 + 3*2^-8 to 1 + 2^-6
    assert_eq!(round(1.0 + 2f32.powi(-8)), 1.0);
    assert_eq!(round(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
    // just above halfway rounds up
    assert_eq!(
        round(f32::from_bits(1f32.to_bits() + 0x8001)),
        1.0 + 2f32.powi(-7)
    );
    // the sign is kept; overflow goes to infinity
    assert_eq!(round(-1.0 - 3.0 * 2f32.powi(-8)), -1.0 - 2f32.powi(-6));
    assert_eq!(round(f32::MAX), f32::INFINITY);
    assert_eq!(round(-f32::MAX), f32::NEG_INFINITY);
    // NaN stays NaN (the quiet NaN PyTorch uses), whatever its payload
    assert_eq!(to_bf16(f32::NAN), 0x7fc0);
    assert_eq!(to_bf16(f32::from_bits(0xff80_0001)), 0x7fc0);
    assert!(from_bf16(0x7fc0).is_nan());
    // subnormals round on the same bits
    let tiny = f32::from_bits(0x0000_8000); // halfway between 0 and the least bf16 subnormal
    assert_eq!(round(tiny), 0.0);
    assert_eq!(round(f32::from_bits(0x0001_8000)).to_bits(), 0x0002_0000);
    // against the definition on random bit patterns: the nearest of the two neighbours
    let mut rng = Rng::new(11);
    for _ in 0..100_000 {
        let x = f32::from_bits((rng.uniform() * u32::MAX as f64) as u32);
        if !x.is_finite() {
            continue;
        }
        let r = round(x);
        let down = f32::from_bits(x.to_bits() & 0xffff_0000);
        let up_bits = (x.to_bits() & 0xffff_0000).wrapping_add(0x1_0000);
        let (dd, du) = (
            (x as f64 - down as f64).abs(),
            (f32::from_bits(up_bits) as f64 - x as f64).abs(),
        );
        let want = if dd < du || (dd == du && (down.to_bits() >> 16) & 1 == 0) {
            down
        } else {
            f32::from_bits(up_bits)
        };
        assert_eq!(
            r.to_bits(),
            want.to_bits(),
            "x = {x:e} ({:#x})",
            x.to_bits()
        );
    }
    // a slice at once (sixteen lanes at a time where the CPU has AVX-512): the same bits, NaN,
    // infinities and a tail past the last whole vector included
    let mut bits: Vec<u32> = (0..10_007)
        .map(|_| (rng.uniform() * u32::MAX as f64) as u32)
        .collect();
    bits.extend([
        0x7f80_0000,
        0xff80_0000,
        0x7f80_0001,
        0xffc0_1234,
        0x0000_8000,
        0x7f7f_ffff,
    ]);
    let mut x: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
    bf16::round_slice(&mut x);
    for (&b, &got) in bits.iter().zip(&x) {
        let want = round(f32::from_bits(b));
        assert_eq!(got.to_bits(), want.to_bits(), "slice rounding of {b:#x}");
    }
}

fn kernels() -> Vec<Isa> {
    let mut out = Vec::new();
    for k in bf16::KERNELS {
        if k.available() {
            out.push(k);
        } else {
            eprintln!("skipped: this CPU cannot run the {} bf16 kernel", k.name());
        }
    }
    out
}

/// C = A W^T per gate on `kernel`, through the packed bf16 panels, into a NaN-filled buffer of
/// row stride `ld`.
fn product(
    kernel: Isa,
    m: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    packed: &[u16],
    g: usize,
    h: usize,
    ld: usize,
) -> Vec<f32> {
    let mut c = vec![f32::NAN; m * ld];
    let n = g * panels(h) * NR;
    let out = OutPtr {
        ptr: c.as_mut_ptr(),
        ld,
        n,
    };
    // SAFETY: `c` holds m rows of ld >= n columns and is borrowed for the call.
    unsafe {
        bf16::panel_gemm_with(
            kernel,
            m,
            Groups::ONE,
            k,
            a,
            lda,
            packed,
            0..g * panels(h),
            out,
        )
    };
    c
}

#[test]
fn packed_product_matches_the_reference_on_every_kernel() {
    let kernels = kernels();
    let mut rng = Rng::new(5);
    for &m in &[1usize, 2, 3, 5, 6, 7, 8, 9, 17] {
        for &k in &[1usize, 2, 15, 16, 17, 31, 33, 70] {
            for &h in &[1usize, 15, 16, 17, 33] {
                let g = 3;
                let lda = k + 2;
                let a: Vec<f32> = (0..m * lda).map(|_| round(rng.normal() as f32)).collect();
                let w: Vec<f32> = (0..g * h * k).map(|_| rng.normal() as f32).collect();
                let mut packed = vec![0u16; packed_len(g * panels(h), k)];
                pack_gates_t(&mut packed, &w, g, h, k);
                let hp = panels(h) * NR;
                let ld = g * hp + 3;
                let mut first: Option<Vec<f32>> = None;
                for &kern in &kernels {
                    let c = product(kern, m, k, &a, lda, &packed, g, h, ld);
                    // the reference: f64 sums of the rounded operands
                    let mut scale = 1e-30f64;
                    let mut want = vec![0.0f64; m * ld];
                    for i in 0..m {
                        for gi in 0..g {
                            for j in 0..h {
                                let s: f64 = (0..k)
                                    .map(|p| {
                                        a[i * lda + p] as f64
                                            * round(w[(gi * h + j) * k + p]) as f64
                                    })
                                    .sum();
                                want[i * ld + gi * hp + j] = s;
                                scale = scale.max(s.abs());
                            }
                        }
                    }
                    for i in 0..m {
                        for col in 0..ld {
                            let got = c[i * ld + col];
                            let (gi, j) = (col / hp, col % hp);
                            if col >= g * hp {
                                assert!(got.is_nan(), "padding column {col} was written");
                            } else if j >= h {
                                assert_eq!(got, 0.0, "padding unit of gate {gi}");
                            } else {
                                let e = (got as f64 - want[i * ld + col]).abs() / scale;
                                assert!(
                                    e <= TOL_SUM,
                                    "{kern:?} m={m} k={k} h={h} row {i} col {col}: rel err {e:e}"
                                );
                            }
                        }
                    }
                    if kern == Isa::Avx512 && m == 1 && bf16::native() {
                        let want = in_instruction_order(m, k, &a, lda, &packed, g, h, ld);
                        for (col, (x, y)) in c.iter().zip(&want).enumerate() {
                            assert_eq!(
                                x.to_bits(),
                                y.to_bits(),
                                "vdpbf16ps order m={m} k={k} h={h} element {col}: {x:e} vs {y:e}"
                            );
                        }
                        continue;
                    }
                    match &first {
                        None => first = Some(c),
                        Some(f) => {
                            let same = f.iter().zip(&c).all(|(x, y)| x.to_bits() == y.to_bits());
                            assert!(
                                same,
                                "{kern:?} differs in bits from {:?}, m={m} k={k} h={h}",
                                kernels[0]
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The product as `vdpbf16ps` defines it, in float32 (subnormals do not occur in these operands):
/// per pair of rows `(2p, 2p + 1)`, `s += a[2p+1] w[2p+1]` and then `s += a[2p] w[2p]`, each
/// product exact and each sum rounded; a missing second row of the last pair adds zero.
#[allow(clippy::too_many_arguments)]
fn in_instruction_order(
    m: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    packed: &[u16],
    g: usize,
    h: usize,
    ld: usize,
) -> Vec<f32> {
    let mut c = vec![f32::NAN; m * ld];
    let size = packed_len(1, k);
    for i in 0..m {
        for q in 0..g * panels(h) {
            for j in 0..NR {
                let w = |p: usize| from_bf16(packed[q * size + ((p / 2) * NR + j) * 2 + p % 2]);
                let mut s = 0.0f32;
                for pp in 0..bf16::pair_rows(k) {
                    let (p0, p1) = (2 * pp, 2 * pp + 1);
                    let a1 = if p1 < k { a[i * lda + p1] } else { 0.0 };
                    s += a1 * w(p1);
                    s += a[i * lda + p0] * w(p0);
                }
                c[i * ld + q * NR + j] = s;
            }
        }
    }
    c
}

#[test]
fn packing_follows_the_pair_layout_on_two_threads() {
    let (g, h, k) = (4, 70, 301);
    let mut rng = Rng::new(3);
    let w: Vec<f32> = (0..g * h * k).map(|_| rng.normal() as f32).collect();
    let mut one = vec![7u16; packed_len(g * panels(h), k)];
    pack_gates_t(&mut one, &w, g, h, k);
    set_threads(2);
    let mut two = vec![7u16; one.len()];
    pack_gates_t(&mut two, &w, g, h, k);
    set_threads(1);
    assert_eq!(one, two, "packing depends on the thread count");
    // through the float32 packing, as the fast driver packs: the same
    let mut f = vec![0f32; g * panels(h) * k * NR];
    recur::ops::panel::pack_gates_t(&mut f, &w, g, h, k);
    let mut via = vec![7u16; one.len()];
    from_panels(&mut via, &f, g * panels(h), k);
    assert_eq!(one, via, "from_panels differs from the direct packing");
    let size = packed_len(1, k);
    let hp = panels(h);
    for q in 0..g * hp {
        let (gi, u) = (q / hp, q % hp);
        for p in 0..2 * bf16::pair_rows(k) {
            for j in 0..NR {
                let got = one[q * size + ((p / 2) * NR + j) * 2 + p % 2];
                let unit = u * NR + j;
                let want = if unit < h && p < k {
                    to_bf16(w[(gi * h + unit) * k + p])
                } else {
                    0
                };
                assert_eq!(got, want, "panel {q} row {p} column {j}");
            }
        }
    }
}

/// `pack_n` (W not transposed: the backward's and the gradients' right operands) against its
/// definition, bit for bit: element (row p, column j) of panel q is `to_bf16(W[p][q*NR + j])`,
/// zero past N and on the missing row of an odd K. On awkward sizes, with a row stride wider
/// than N, and values that test the rounding (ties both ways, NaN of either sign, infinities,
/// overflow to infinity, subnormals, -0), on one thread and on two (the AVX-512 path where the
/// CPU runs it, the plain loop elsewhere: the same bits either way).
#[test]
fn pack_n_follows_the_pair_layout() {
    let special = [
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        -0.0,
        1e-40,
        -1e-41,
        f32::from_bits(0x3f80_8000), // a tie: rounds down to even
        f32::from_bits(0x3f81_8000), // a tie: rounds up to even
        f32::from_bits(0x3f80_8001),
    ];
    let mut rng = Rng::new(17);
    for threads in [1, 2] {
        set_threads(threads);
        for &k in &[1usize, 2, 3, 31, 33, 130, 301] {
            // 300 columns of 301 rows: enough panels to be shared out over two threads
            for &n in &[1usize, 15, 16, 17, 33, 70, 300] {
                let ld = n + 3;
                let w: Vec<f32> = (0..k * ld)
                    .map(|i| {
                        if i % 7 == 3 {
                            special[(i / 7) % special.len()]
                        } else {
                            rng.normal() as f32
                        }
                    })
                    .collect();
                let size = packed_len(1, k);
                let mut got = vec![7u16; panels(n) * size];
                bf16::pack_n(&mut got, &w, ld, k, n);
                for q in 0..panels(n) {
                    for p in 0..2 * bf16::pair_rows(k) {
                        for j in 0..NR {
                            let col = q * NR + j;
                            let want = if col < n && p < k {
                                to_bf16(w[p * ld + col])
                            } else {
                                0
                            };
                            let at = q * size + ((p / 2) * NR + j) * 2 + p % 2;
                            assert_eq!(
                                got[at], want,
                                "k={k} n={n} threads={threads}: panel {q} row {p} column {j}"
                            );
                        }
                    }
                }
            }
        }
    }
    set_threads(1);
}
