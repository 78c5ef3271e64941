//! The library's use of the AMX tile products, on any machine: with `tiles::use_model(true)`
//! every product the library sends to the tiles runs on the scalar model of the tile
//! instructions instead (`ops::tiles::Emulated`, itself checked in tests/amx_tiles.rs), so a
//! stack takes the paths an AMX machine takes: in bf16 the per-step products on the tiles with
//! bf16 panels at every shape and, where H is whole 16-column panels, the input product on the
//! tiles too, and in training dh's per-step product and (where the backward keeps dG^T) the
//! weight and input gradients; in int8 the per-step and input products on the tiles. Compared
//! with the same stack without the tiles: int8 bit for bit (int32 sums are exact either way);
//! bf16 within one bf16 rounding (the tiles add some products in another order): inference,
//! and training's outputs, weight gradients and input gradients. "Without" is the float32 kernels
//! on bf16 values, forced where this CPU would choose `vdpbf16ps` (tests/dp_products.rs). One
//! test, so that the process-wide switches meet no other test's products.

#[path = "support/close.rs"]
#[allow(dead_code)]
mod close;
#[path = "support/stack_runs.rs"]
mod stack_runs;

use recur::cell::CellKind;
use recur::ops::gemm::set_threads;
use recur::ops::multiplier::{self, Multiplier};
use recur::ops::tiles;
use recur::Precision;

/// bf16, relative to the largest element: one bf16 rounding (2^-8). The model adds a tile's
/// products in order of k, as the widening kernels do, so the per-step products give the same
/// bits; the input product's sums differ from the `gemm` crate's in order only, which may move
/// a state to the neighbouring bf16. (Scaling every tile sum by 1.01 in the model gave 5e-3 and
/// more: a wrong product does not pass.)
const BF16_REL_TOL: f32 = 1.0 / 256.0;

/// Inference outputs and final states, then (bf16 only) training's outputs, weight gradients
/// and input gradients, with or without the tiles.
fn run(
    precision: Precision,
    kind: CellKind,
    (t, b, i, h): (usize, usize, usize, usize),
    on_tiles: bool,
) -> Vec<Vec<f32>> {
    run_on(precision, kind, (t, b, i, h), on_tiles, false)
}

/// [`stack_runs::stack_outputs`] with the tiles' model on or off.
fn run_on(
    precision: Precision,
    kind: CellKind,
    dims: (usize, usize, usize, usize),
    on_tiles: bool,
    one_hot: bool,
) -> Vec<Vec<f32>> {
    tiles::use_model(on_tiles);
    let out = stack_runs::stack_outputs(precision, kind, dims, one_hot);
    tiles::use_model(false);
    out
}

/// Worst |a - b| relative to the largest |b| (NaN: infinite).
fn rel(a: &[f32], b: &[f32]) -> f32 {
    close::worst(a, b).0 as f32
}

#[test]
fn stacks_on_the_tile_model_match_the_stacks_without() {
    set_threads(2);
    // without the model: the float32 kernels, also where vdpbf16ps would be chosen
    multiplier::force(Some(Multiplier::Float32));
    let names = stack_runs::OUTPUTS;
    for kind in [
        CellKind::Lstm,
        CellKind::Gru,
        CellKind::parse("rnn_tanh").unwrap(),
    ] {
        // H in whole panels (the input product on the tiles as well) and not; one row tile
        // and three (2 x 2 blocks and a row tile left over); I + H of 512 (the backward keeps
        // dG^T: the weight and input gradients on the tiles too, but for the GRU)
        for dims in [
            (4, 3, 32, 32),
            (3, 40, 48, 32),
            (4, 5, 24, 20),
            (3, 33, 20, 20),
            (2, 17, 256, 256),
        ] {
            for precision in [Precision::Bf16, Precision::Int8] {
                let before = tiles::model_products();
                let want = run(precision, kind, dims, false);
                let between = tiles::model_products();
                let got = run(precision, kind, dims, true);
                assert_eq!(before, between, "a tile product ran with the tiles off");
                assert!(
                    tiles::model_products() > between,
                    "{kind:?} {precision} {dims:?}: nothing ran on the tiles"
                );
                for ((w, g), name) in want.iter().zip(&got).zip(names) {
                    assert!(w.iter().all(|v| v.is_finite()), "{name}: not finite");
                    if precision == Precision::Int8 {
                        assert!(
                            w == g,
                            "{kind:?} int8 {dims:?} {name}: tiles differ in bits"
                        );
                    } else {
                        let e = rel(g, w);
                        println!("{kind:?} bf16 {dims:?} {name}: tiles vs none, rel {e:e}");
                        assert!(
                            e <= BF16_REL_TOL,
                            "{kind:?} bf16 {dims:?} {name}: tiles vs none, rel err {e:e}"
                        );
                    }
                }
            }
        }
    }
    one_hot_training_matches();
    let want = char_model_step(false);
    let before = tiles::model_products();
    let got = char_model_step(true);
    assert!(
        tiles::model_products() > before,
        "the char model: nothing ran on the tiles"
    );
    for (name, g, w) in [("logits", &got.0, &want.0), ("gradients", &got.1, &want.1)] {
        let e = rel(g, w);
        println!("char model bf16 {name}: tiles vs none, rel {e:e}");
        assert!(e <= BF16_REL_TOL, "char model {name}: rel err {e:e}");
    }
    multiplier::force(None);
}

/// [`stack_runs::char_model_step`] (the decoder's three products on the tiles too) with the
/// tiles' model on or off.
fn char_model_step(on_tiles: bool) -> (Vec<f32>, Vec<f32>) {
    tiles::use_model(on_tiles);
    let out = stack_runs::char_model_step();
    tiles::use_model(false);
    out
}

/// One-hot input (the char model's first layer): dW_ih's scatter-add as without the tiles,
/// dW_hh on the tiles from a dG^T made for it (the backward keeps none for one-hot input).
fn one_hot_training_matches() {
    for kind in [CellKind::Lstm, CellKind::Gru] {
        let dims = (3, 20, 65, 32);
        let want = run_on(Precision::Bf16, kind, dims, false, true);
        let before = tiles::model_products();
        let got = run_on(Precision::Bf16, kind, dims, true, true);
        assert!(
            tiles::model_products() > before,
            "{kind:?}: nothing ran on the tiles"
        );
        // dx is not asked of a one-hot input
        for ((w, g), name) in want.iter().zip(&got).zip(&stack_runs::OUTPUTS[..4]) {
            let e = rel(g, w);
            println!("{kind:?} one-hot {dims:?} {name}: tiles vs none, rel {e:e}");
            assert!(e <= BF16_REL_TOL, "{kind:?} one-hot {name}: rel err {e:e}");
        }
    }
}
