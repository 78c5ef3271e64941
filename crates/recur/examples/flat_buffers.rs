//! The example of `lstm_forward_backward.rs` on the flat-buffer API underneath `recur::nn`: the
//! parameters, gradients and workspace are the caller's own buffers (a 2-layer LSTM of 32 units
//! over 20 steps of 4 sequences of 8 features, the loss 0.5 * sum(y^2) of its outputs y, and the
//! gradient of that loss with respect to every parameter).
//!
//! Run with `cargo run --release -p recur --example flat_buffers`.

use recur::cell::{CellKind, LayerInput};
use recur::optim::grad_norm;
use recur::rng::Rng;
use recur::stack::{Stack, StackConfig};

fn main() {
    let (t, b, i, h) = (20, 4, 8, 32);
    let stack = Stack::new(StackConfig::new(CellKind::Lstm, i, h).with_layers(2)).unwrap();
    let mut rng = Rng::new(0);
    let mut params = vec![0.0f32; stack.num_params()];
    stack.init(&mut params, &mut rng); // PyTorch's default: U(-1/sqrt(h), 1/sqrt(h))
    let x: Vec<f32> = (0..t * b * i).map(|_| rng.normal() as f32).collect();
    let input = LayerInput::Dense { x: &x, ld: i }; // (T, B, I), time-major like PyTorch
    let mut ws = stack.workspace(t, b);
    stack.forward_from_zeros(&mut ws, &params, input); // zero states, full lengths, no dropout
    let y = ws.output().to_vec(); // (T, B, H)
    let loss: f32 = 0.5 * y.iter().map(|v| v * v).sum::<f32>();
    let mut grads = vec![0.0f32; stack.num_params()];
    stack.backward_from_outputs(&mut ws, &params, &mut grads, input, &y); // dL/dy = y
    println!(
        "output shape [{t}, {b}, {h}], loss {loss:.4}, gradient norm {:.4}",
        grad_norm(&grads)
    );
}
