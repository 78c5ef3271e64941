//! The library's bf16 products on `vdpbf16ps` (`ops::multiplier`: chosen without AMX where it
//! outruns the float32 FMA), on any CPU with AVX512-BF16 (skipped elsewhere, saying so): the
//! multiplier forced to `vdpbf16ps` and to the float32 kernels in turn, the same stacks and
//! char model compared (bf16 within one bf16 rounding of the largest element: the instruction
//! adds a pair's products before the running sum, and the float32 kernels one at a time), and
//! the `vdpbf16ps` products counted, so a path that silently skips them fails. The kernel
//! itself is checked against f64 sums in tests/amx_tiles.rs. One test, so that the
//! process-wide switch meets no other test's products.

#[path = "support/close.rs"]
#[allow(dead_code)]
mod close;
#[path = "support/stack_runs.rs"]
mod stack_runs;

use recur::cell::CellKind;
use recur::ops::gemm::set_threads;
use recur::ops::multiplier::{self, Multiplier};
use recur::Precision;

/// One bf16 rounding of the largest element: a value that rounds the other way moves by one
/// bf16 step of its binade, 2^-8 to 2^-7 of the largest element (2^-7 when that is just
/// above a power of two: GRU states near 0.85 flipped by 2^-8 in one case here).
const BF16_REL_TOL: f64 = 1.0 / 128.0;

/// `f` with the bf16 products on `m`, and how many `vdpbf16ps` products it ran.
fn on<T>(m: Multiplier, f: impl FnOnce() -> T) -> (T, usize) {
    multiplier::force(Some(m));
    let before = multiplier::dp_products();
    let out = f();
    let ran = multiplier::dp_products() - before;
    multiplier::force(None);
    (out, ran)
}

fn compare(what: &str, got: &[Vec<f32>], want: &[Vec<f32>], names: &[&str]) {
    assert_eq!(got.len(), want.len(), "{what}: outputs");
    for ((g, w), name) in got.iter().zip(want).zip(names) {
        assert!(w.iter().all(|v| v.is_finite()), "{what} {name}: not finite");
        let (e, at) = close::worst(g, w);
        println!("{what} {name}: vdpbf16ps vs float32 kernels, rel {e:e}");
        assert!(
            e <= BF16_REL_TOL,
            "{what} {name}: rel err {e:e} at {at} ({} vs {})",
            g[at],
            w[at]
        );
    }
}

#[test]
fn bf16_stacks_on_vdpbf16ps_match_the_float32_kernels() {
    if !multiplier::dp_runs() {
        eprintln!("skipped: no AVX-512 with AVX512-BF16 on this CPU (vdpbf16ps cannot run)");
        return;
    }
    set_threads(2);
    let names = stack_runs::OUTPUTS;
    for kind in [
        CellKind::Lstm,
        CellKind::Gru,
        CellKind::parse("rnn_tanh").unwrap(),
    ] {
        // H in whole panels (the input product on vdpbf16ps too) and not; batches of 1, 3, 17
        // and 40 rows (every tile height); I + H of 512 (the backward keeps dG^T, as bf16, for
        // the weight gradients, but for the GRU) with T*B even, odd (the last pair's zero) and
        // a multiple of 256 (dG^T's rows padded)
        for (dims, one_hot) in [
            ((4, 3, 32, 32), false),
            ((3, 40, 48, 32), false),
            ((5, 1, 24, 20), false),
            ((3, 17, 20, 20), false),
            ((2, 17, 256, 256), false),
            ((3, 17, 256, 256), false),
            ((16, 16, 256, 256), false),
            ((3, 20, 65, 32), true),
        ] {
            let what = format!("{kind:?} {dims:?}{}", if one_hot { " one-hot" } else { "" });
            let (want, none) = on(Multiplier::Float32, || {
                stack_runs::stack_outputs(Precision::Bf16, kind, dims, one_hot)
            });
            let (got, ran) = on(Multiplier::Vdpbf16ps, || {
                stack_runs::stack_outputs(Precision::Bf16, kind, dims, one_hot)
            });
            assert_eq!(
                none, 0,
                "{what}: a vdpbf16ps product ran with float32 forced"
            );
            assert!(ran > 0, "{what}: nothing ran on vdpbf16ps");
            compare(&what, &got, &want, &names[..got.len()]);
        }
    }
    let (want, _) = on(Multiplier::Float32, stack_runs::char_model_step);
    let (got, ran) = on(Multiplier::Vdpbf16ps, stack_runs::char_model_step);
    assert!(ran > 0, "the char model: nothing ran on vdpbf16ps");
    compare(
        "char model",
        &[got.0, got.1],
        &[want.0, want.1],
        &["logits", "gradients"],
    );
}
