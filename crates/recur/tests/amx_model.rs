//! The library's use of the AMX tile products, on any machine: with `tiles::use_model(true)`
//! every product the library sends to the tiles runs on the scalar model of the tile
//! instructions instead (`ops::tiles::Emulated`, itself checked in tests/amx_tiles.rs), so a
//! stack takes the paths an AMX machine takes: in bf16 the per-step products on the tiles with
//! bf16 panels at every shape and, where H is whole 16-column panels, the input product on the
//! tiles too, and in training dh's per-step product and (where the backward keeps dG^T) the
//! weight and input gradients; in int8 the per-step and input products on the tiles. Compared
//! with the same stack without the tiles: int8 bit for bit (int32 sums are exact either way);
//! bf16 within one bf16 rounding (the tiles add some products in another order): inference,
//! and training's outputs, weight gradients and input gradients. One test, so that the process-wide switch
//! meets no other test's products.

#[path = "support/close.rs"]
#[allow(dead_code)]
mod close;

use recur::cell::{CellKind, LayerInput};
use recur::ops::bf16::round;
use recur::ops::gemm::set_threads;
use recur::ops::tiles;
use recur::precision::prepare_weights;
use recur::rng::Rng;
use recur::stack::{Stack, StackConfig};
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

/// [`run`], the input one-hot (ids in 0..I) when `one_hot`.
fn run_on(
    precision: Precision,
    kind: CellKind,
    (t, b, i, h): (usize, usize, usize, usize),
    on_tiles: bool,
    one_hot: bool,
) -> Vec<Vec<f32>> {
    tiles::use_model(on_tiles);
    let stack = Stack::new(StackConfig::new(kind, i, h).with_layers(2)).unwrap();
    let mut rng = Rng::new(21);
    let mut params = vec![0f32; stack.num_params()];
    stack.init(&mut params, &mut rng);
    prepare_weights(stack.layout(), &mut params, precision);
    let x: Vec<f32> = (0..t * b * i).map(|_| round(rng.normal() as f32)).collect();
    let dy: Vec<f32> = (0..t * b * h).map(|_| rng.normal() as f32).collect();
    let ids: Vec<u32> = (0..t * b).map(|r| ((r * 7 + 3) % i) as u32).collect();
    let input = if one_hot {
        LayerInput::OneHot { ids: &ids }
    } else {
        LayerInput::Dense { x: &x, ld: i }
    };
    let mut ws = stack.workspace::<f32>(t, b);
    ws.set_precision(precision);
    ws.set_inference(true);
    stack.forward_from_zeros(&mut ws, &params, input);
    let mut out = vec![ws.output().to_vec(), ws.h_n.clone()];
    if precision == Precision::Bf16 {
        ws.set_inference(false);
        stack.forward(&mut ws, &params, input, None, None, None, None);
        out.push(ws.output().to_vec());
        // backward adds to what the gradients hold: start them away from zero
        let mut grads = vec![0.5f32; stack.num_params()];
        let mut dx = vec![0.25f32; x.len()];
        let dx_arg = (!one_hot).then_some(&mut dx[..]);
        stack.backward(
            &mut ws,
            &params,
            &mut grads,
            input,
            None,
            Some(&dy),
            None,
            None,
            dx_arg,
        );
        // what backward added (a lost start shows as -0.5 and -0.25)
        out.push(grads.iter().map(|g| g - 0.5).collect());
        out.push(dx.iter().map(|d| d - 0.25).collect());
    }
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
    let names = [
        "inference output",
        "final h",
        "training output",
        "weight gradients",
        "dx",
    ];
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
}

/// A char model in bf16 (one-hot input, 2 x 32 LSTM, a decoder of 65 classes: the decoder's
/// three products on the tiles too): logits, and every gradient after the loss.
fn char_model_step(on_tiles: bool) -> (Vec<f32>, Vec<f32>) {
    use recur::model::{Input, Model, ModelConfig};
    tiles::use_model(on_tiles);
    let (t, b, v) = (5, 19, 65);
    let model = Model::new(ModelConfig::char_model(
        v,
        0,
        StackConfig::new(CellKind::Lstm, v, 32).with_layers(2),
    ))
    .unwrap();
    let mut rng = Rng::new(23);
    let mut params = vec![0f32; model.num_params()];
    model.init(&mut params, &mut rng);
    prepare_weights(model.layout(), &mut params, Precision::Bf16);
    let ids: Vec<u32> = (0..t * b).map(|r| ((r * 11 + 5) % v) as u32).collect();
    let targets: Vec<u32> = (0..t * b).map(|r| ((r * 3 + 1) % v) as u32).collect();
    let mut ws = model.workspace::<f32>(t, b);
    ws.set_precision(Precision::Bf16);
    model.forward(
        &mut ws,
        &params,
        Input::Tokens(&ids),
        None,
        None,
        None,
        None,
    );
    let logits = ws.logits.clone();
    model.loss(&mut ws, &targets, 1.0 / (t * b) as f32);
    let mut grads = vec![0.5f32; params.len()];
    model.backward(
        &mut ws,
        &params,
        &mut grads,
        Input::Tokens(&ids),
        None,
        None,
        None,
        None,
    );
    tiles::use_model(false);
    // what backward added (a lost start shows as -0.5)
    (logits, grads.iter().map(|g| g - 0.5).collect())
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
        let names = [
            "inference output",
            "final h",
            "training output",
            "weight gradients",
        ];
        for ((w, g), name) in want.iter().zip(&got).zip(names) {
            let e = rel(g, w);
            println!("{kind:?} one-hot {dims:?} {name}: tiles vs none, rel {e:e}");
            assert!(e <= BF16_REL_TOL, "{kind:?} one-hot {name}: rel err {e:e}");
        }
    }
}
