//! Runs of small stacks and a char model in bf16 or int8, for the tests that compare two ways
//! of running the same products (tests/amx_model.rs, tests/dp_products.rs): the caller sets
//! the process-wide switch, runs, and compares.

use recur::cell::{CellKind, LayerInput};
use recur::ops::bf16::round;
use recur::precision::prepare_weights;
use recur::rng::Rng;
use recur::stack::{Stack, StackConfig};
use recur::Precision;

/// What [`stack_outputs`] returns, in order (inference runs give the first two).
pub const OUTPUTS: [&str; 5] = [
    "inference output",
    "final h",
    "training output",
    "weight gradients",
    "dx",
];

/// A 2-layer stack of `kind` (T, B, I, H), its input dense or one-hot (ids in 0..I): inference
/// outputs and final states, then (bf16 only) training's outputs, weight gradients and input
/// gradients (what backward added to buffers that did not start at zero).
pub fn stack_outputs(
    precision: Precision,
    kind: CellKind,
    (t, b, i, h): (usize, usize, usize, usize),
    one_hot: bool,
) -> Vec<Vec<f32>> {
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
    out
}

/// A char model in bf16 (one-hot input, 2 x 32 LSTM, a decoder of 65 classes): logits, and
/// every gradient after the loss (what backward added to buffers that started at 0.5).
pub fn char_model_step() -> (Vec<f32>, Vec<f32>) {
    use recur::model::{Input, Model, ModelConfig};
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
    // what backward added (a lost start shows as -0.5)
    (logits, grads.iter().map(|g| g - 0.5).collect())
}
