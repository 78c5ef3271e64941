//! The products on AMX tiles (`ops::tiles`), on the scalar model of the tile instructions on
//! every CPU and on the hardware where the CPU and the OS grant the tiles (skipped elsewhere,
//! saying so); the bf16 ones also on `vdpbf16ps` (the multiplier chosen without AMX where it
//! outruns the float32 FMA) where the CPU has AVX512-BF16. bf16 (`bf16::panel_gemm_tiles`) against an f64 reference from the same rounded
//! operands; int8 (`int8::panel_gemm_tiles`) against the portable int8 loop, bit for bit (int32
//! sums are exact). On awkward sizes: rows around the 16-row tile (1, 15, 16, 17, 31, 33, 40),
//! k around the 32-wide chunk (1, 2, 15, 16, 17, 31, 32, 33, 70, 511, 513: a partial last chunk,
//! an odd last pair; for int8 also 64 +- 1, a partial last quad), units around the 16-column
//! panel, and two row groups. The output is
//! pre-filled with NaN: an unwritten element shows, and the columns past C's and the rows
//! between the groups must stay NaN.

use recur::ops::bf16::{self, pack_gates_t, packed_len, round};
use recur::ops::int8;
use recur::ops::panel::{panels, Groups, OutPtr, NR};
use recur::ops::tiles::{self, TileRun};
use recur::rng::Rng;

/// Relative to the largest |C| element: float32 accumulation of up to 513 exact products of
/// N(0,1)-sized numbers (the model and the hardware each in their own order), against the f64
/// sum of the same products.
const TOL_SUM: f64 = 2e-5;

fn machines(int8: bool) -> Vec<TileRun> {
    let mut v = vec![TileRun::Emulated];
    let (on, what) = if int8 {
        (tiles::available_int8(), "int8")
    } else {
        (tiles::available(), "bf16")
    };
    if on {
        v.push(TileRun::Native);
    } else {
        eprintln!(
            "skipped: the AMX {what} tile product on the hardware (AMX tiles here: {})",
            recur::ops::amx::Amx::get().describe()
        );
    }
    if !int8 {
        if recur::ops::multiplier::dp_runs() {
            v.push(TileRun::Vdpbf16ps);
        } else {
            eprintln!("skipped: the bf16 products on vdpbf16ps (no AVX-512 with AVX512-BF16 here)");
        }
    }
    v
}

/// One product of `groups` blocks of `m` rows against `g` gates of `h` units, checked.
fn check(on: TileRun, m: usize, k: usize, h: usize, ngroups: usize, rng: &mut Rng) {
    let g = 2;
    let lda = k + 3;
    // group j's rows start a_step elements after group j-1's; its C rows c_step rows after
    let groups = Groups {
        n: ngroups,
        a_step: m * lda + 5,
        c_step: m + 2,
    };
    let rows_a = (ngroups - 1) * groups.a_step + m * lda;
    let a: Vec<f32> = (0..rows_a).map(|_| round(rng.normal() as f32)).collect();
    let w: Vec<f32> = (0..g * h * k).map(|_| rng.normal() as f32).collect();
    let np = g * panels(h);
    let mut packed = vec![0u16; packed_len(np, k)];
    pack_gates_t(&mut packed, &w, g, h, k);
    let hp = panels(h) * NR;
    let n = g * hp;
    let ld = n + 3;
    let crow = (ngroups - 1) * groups.c_step + m;
    let mut c = vec![f32::NAN; crow * ld];
    let out = OutPtr {
        ptr: c.as_mut_ptr(),
        ld,
        n,
    };
    // SAFETY: `c` holds crow rows of ld >= n columns and is borrowed for the call.
    unsafe { bf16::panel_gemm_tiles(on, m, groups, k, &a, lda, &packed, 0..np, out, false) };
    let mut scale = 1e-30f64;
    let mut want = vec![f64::NAN; crow * ld];
    for gr in 0..ngroups {
        for i in 0..m {
            for gi in 0..g {
                for j in 0..h {
                    let s: f64 = (0..k)
                        .map(|p| {
                            a[gr * groups.a_step + i * lda + p] as f64
                                * round(w[(gi * h + j) * k + p]) as f64
                        })
                        .sum();
                    want[(gr * groups.c_step + i) * ld + gi * hp + j] = s;
                    scale = scale.max(s.abs());
                }
            }
        }
    }
    for r in 0..crow {
        let in_block =
            (0..ngroups).any(|gr| (gr * groups.c_step..gr * groups.c_step + m).contains(&r));
        for col in 0..ld {
            let got = c[r * ld + col];
            let (gi, j) = (col / hp, col % hp);
            let at = format!("{on:?} m={m} k={k} h={h} groups={ngroups} row {r} col {col}");
            if !in_block || col >= n {
                assert!(got.is_nan(), "{at}: written outside the blocks: {got}");
            } else if j >= h {
                assert_eq!(got, 0.0, "{at}: padding unit of gate {gi}");
            } else {
                let e = (got as f64 - want[r * ld + col]).abs() / scale;
                assert!(e <= TOL_SUM, "{at}: rel err {e:e}");
            }
        }
    }
}

#[test]
fn tile_product_matches_the_reference() {
    let mut rng = Rng::new(11);
    for on in machines(false) {
        for &m in &[1usize, 15, 16, 17, 33] {
            for &k in &[1usize, 2, 15, 17, 31, 32, 33, 70] {
                for &h in &[1usize, 16, 17, 40] {
                    check(on, m, k, h, 1, &mut rng);
                }
            }
        }
        // long k (a partial last chunk or none), more rows and panels, two row groups
        for &(m, k, h) in &[(31, 511, 33), (40, 513, 20), (2, 512, 70), (16, 64, 64)] {
            check(on, m, k, h, 1, &mut rng);
            check(on, m, k, h, 2, &mut rng);
        }
    }
}

/// The hardware and the model agree within rounding on a larger product, with weights from a
/// real packing of 512 units (the shape of the LSTM this product was written for).
#[test]
fn tile_product_on_the_lstm_shape() {
    let mut rng = Rng::new(12);
    for on in machines(false) {
        check(on, 32, 512, 128, 1, &mut rng);
    }
}

/// One int8 product of `groups` blocks of `m` rows of codes against `g` gates of `h` units on
/// the tiles, against the portable loop in bits; padding and the rows between blocks untouched.
fn check_int8(on: TileRun, m: usize, k: usize, h: usize, ngroups: usize, rng: &mut Rng) {
    let g = 3;
    let lda = int8::padded(k) + 4;
    let groups = Groups {
        n: ngroups,
        a_step: m * lda + 8,
        c_step: m + 1,
    };
    let len = (ngroups - 1) * groups.a_step + m * lda;
    // codes 0..=127 (7 bits), the padding of each row included (it multiplies zero weights)
    let a: Vec<u8> = (0..len)
        .map(|_| (rng.uniform() * 128.0) as u8 & 127)
        .collect();
    let w: Vec<f32> = (0..g * h * k).map(|_| rng.normal() as f32).collect();
    let (q, _) = int8::quantize_rows(&w, g * h, k);
    let np = g * panels(h);
    let mut packed = vec![0i8; int8::packed_len(np, k)];
    int8::pack_gates_t(&mut packed, &q, g, h, k);
    let n = np * NR;
    let ld = n + 5;
    let crow = (ngroups - 1) * groups.c_step + m;
    let run = |tiles: Option<TileRun>| {
        let mut c = vec![i32::MIN; crow * ld];
        let out = OutPtr {
            ptr: c.as_mut_ptr(),
            ld,
            n,
        };
        // SAFETY: `c` holds crow rows of ld >= n columns and is borrowed for the call.
        unsafe {
            match tiles {
                Some(on) => int8::panel_gemm_tiles(on, m, groups, k, &a, lda, &packed, 0..np, out),
                None => int8::panel_gemm_with(
                    int8::Kernel::Portable,
                    m,
                    groups,
                    k,
                    &a,
                    lda,
                    &packed,
                    0..np,
                    out,
                ),
            }
        }
        c
    };
    let (got, want) = (run(Some(on)), run(None));
    let written = want.iter().filter(|&&x| x != i32::MIN).count();
    assert_eq!(written, ngroups * m * n, "the portable loop's own coverage");
    for (i, (x, y)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            x,
            y,
            "{on:?} int8 m={m} k={k} h={h} groups={ngroups}: row {} col {}",
            i / ld,
            i % ld
        );
    }
}

#[test]
fn int8_tile_product_is_exact() {
    let mut rng = Rng::new(13);
    for on in machines(true) {
        for &m in &[1usize, 15, 16, 17, 33] {
            for &k in &[1usize, 3, 4, 5, 63, 64, 65, 130] {
                for &h in &[1usize, 16, 17, 40] {
                    check_int8(on, m, k, h, 1, &mut rng);
                }
            }
        }
        for &(m, k, h) in &[(31, 511, 33), (40, 513, 20), (2, 1024, 70), (32, 512, 64)] {
            check_int8(on, m, k, h, 1, &mut rng);
            check_int8(on, m, k, h, 2, &mut rng);
        }
    }
}

/// With `accumulate`, the bf16 tile product adds to what C holds (the weight gradients' `+=`),
/// on whole tiles (started from C) and partial ones (added after) alike.
#[test]
fn tile_product_accumulates() {
    let mut rng = Rng::new(14);
    let (m, k, h, g) = (19, 45, 20, 2);
    let a: Vec<f32> = (0..m * k).map(|_| round(rng.normal() as f32)).collect();
    let w: Vec<f32> = (0..g * h * k).map(|_| rng.normal() as f32).collect();
    let np = g * panels(h);
    let mut packed = vec![0u16; packed_len(np, k)];
    pack_gates_t(&mut packed, &w, g, h, k);
    let n = np * NR;
    let start: Vec<f32> = (0..m * n).map(|_| rng.normal() as f32).collect();
    for on in machines(false) {
        let run = |accumulate: bool| {
            let mut c = start.clone();
            let out = OutPtr {
                ptr: c.as_mut_ptr(),
                ld: n,
                n,
            };
            // SAFETY: `c` holds m rows of n columns and is borrowed for the call.
            unsafe {
                bf16::panel_gemm_tiles(
                    on,
                    m,
                    Groups::ONE,
                    k,
                    &a,
                    k,
                    &packed,
                    0..np,
                    out,
                    accumulate,
                )
            };
            c
        };
        let added = run(true);
        // the reference: what C held plus the f64 sums of the same rounded operands
        let mut scale = 1e-30f64;
        let mut want = vec![0f64; m * n];
        for i in 0..m {
            for q in 0..n {
                let (gi, j) = (q / (panels(h) * NR), q % (panels(h) * NR));
                let s: f64 = if j < h {
                    (0..k)
                        .map(|p| a[i * k + p] as f64 * round(w[(gi * h + j) * k + p]) as f64)
                        .sum()
                } else {
                    0.0
                };
                want[i * n + q] = start[i * n + q] as f64 + s;
                scale = scale.max(want[i * n + q].abs());
            }
        }
        for (i, (got, want)) in added.iter().zip(&want).enumerate() {
            let e = (*got as f64 - want).abs() / scale;
            assert!(
                e <= TOL_SUM,
                "{on:?}: element {i} not added to what C held: {e:e}"
            );
        }
    }
}
