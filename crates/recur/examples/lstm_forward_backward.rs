//! An LSTM's forward and backward pass on random data: a 2-layer LSTM of 32 units over 20 steps
//! of 4 sequences of 8 features, the loss 0.5 * sum(y^2) of its outputs y, and the gradient of
//! that loss with respect to every parameter. (`flat_buffers.rs` does the same on the flat-buffer
//! API underneath.)
//!
//! Run with `cargo run --release -p recur --example lstm_forward_backward`.

use recur::nn::{Lstm, Tensor};
use recur::optim::grad_norm;

fn main() -> recur::Result<()> {
    let mut lstm = Lstm::new(8, 32).layers(2).build()?; // torch.nn.LSTM(8, 32, num_layers=2)
    let x = Tensor::randn(&[20, 4, 8], 0); // (T, B, I), time-major like PyTorch
    let (y, state) = lstm.forward(&x, None)?; // from zero states: y (T, B, H), state.h (L, B, H)
    let loss: f32 = 0.5 * y.data().iter().map(|v| v * v).sum::<f32>();
    let grads = lstm.backward(&y)?; // dL/dy = y; dL/dx in grads.x, dL/dW in lstm.grads()
    println!(
        "output {:?}, h_n {:?}, loss {loss:.4}, gradient norm {:.4}, dL/dx {:?}",
        y.shape(),
        state.h.shape(),
        grad_norm(lstm.grads()),
        grads.x.shape()
    );
    Ok(())
}
