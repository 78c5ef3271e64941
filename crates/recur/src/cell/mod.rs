//! Recurrent cells: forward and backward (BPTT) of one direction of one layer over a sequence.
//!
//! The sequence driver shared by the three cells, following the fast path of DESIGN.md:
//! 1. the input projection of all T steps is one GEMM `[T*B, I] x [I, G*H]`;
//! 2. per step, one recurrent GEMM `[B, P] x [P, G*H]`, then one fused element-wise pass
//!    (`rnn.rs`, `lstm.rs`, `gru.rs`);
//! 3. backward walks the steps in reverse doing only the element-wise backward and the
//!    `[B, G*H] x [G*H, P]` product for dh_{t-1}; the weight gradients are one GEMM each over all
//!    steps at the end (`dW_hh = sum_t dG_t^T h_{t-1}`, `dW_ih = dG^T X`);
//! 4. nothing is allocated inside the time loop: [`DirCache`] is sized once.
//!
//! Conventions: activations are row-major and time-major, `(T, B, features)`; weights are stored
//! as PyTorch stores them, `(G*H, in)`. Per-sequence lengths follow PyTorch's packed sequences:
//! at a step `t >= len[b]` row `b` is inactive, its state is carried unchanged, its output is zero,
//! and it takes no gradient. In the reverse direction each sequence therefore starts at its own
//! last step.
//!
//! Where things are: `types.rs` the cell kind, sizes, weights, gradients and input of one
//! direction; `cache.rs` its workspace, [`DirCache`]; `products.rs` the products shared by both
//! drivers (the input projection before the time loop, the weight gradients after it); `fast.rs`
//! and `simple.rs` the two drivers; `rnn.rs`, `lstm.rs`, `gru.rs` the element-wise passes. This
//! file picks the driver ([`forward`], [`backward`]).

mod cache;
mod fast;
pub mod gru;
pub mod lstm;
mod products;
pub mod rnn;
pub mod simple;
mod types;

pub use cache::DirCache;
pub use rnn::Activation;
pub use types::{CellKind, DirDims, DirGrads, DirWeights, LayerInput};

use crate::ops::Float;

/// Forward over the whole sequence: the fast driver (`fast.rs`), or for LSTM projections the
/// simple one (`simple.rs`).
///
/// - `h0`: (B, P) and `c0`: (B, H, LSTM only) initial states, zero when `None`;
/// - `y`: (T, B, P) outputs, written at row stride `ldy` (so two directions can interleave);
/// - `h_n`: (B, P), `c_n`: (B, H, LSTM only; empty otherwise): the final states, each sequence's
///   taken at its own last step.
pub fn forward<F: Float>(
    cache: &mut DirCache<F>,
    w: &DirWeights<F>,
    input: LayerInput<F>,
    h0: Option<&[F]>,
    c0: Option<&[F]>,
    lengths: Option<&[usize]>,
    y: &mut [F],
    ldy: usize,
    h_n: &mut [F],
    c_n: &mut [F],
) {
    if cache.dims.proj() {
        simple::forward(cache, w, input, h0, c0, lengths, y, ldy, h_n, c_n)
    } else {
        fast::forward(cache, w, input, h0, c0, lengths, y, ldy, h_n, c_n)
    }
}

/// Backward (BPTT) over the whole sequence (the same driver as the forward), after [`forward`] on the same cache and input.
///
/// - `dy`: gradient of the outputs, (T, B, P) at row stride `ldy`, or `None` when only the final
///   states feed the loss;
/// - `dh_n`, `dc_n`: gradients of the final states, zero when `None`;
/// - parameter gradients are accumulated into `g`; `dx` (dense input only; (T, B, I) at row
///   stride `lddx`) is accumulated too;
/// - `dh0` (B, P) and `dc0` (B, H, LSTM only) are overwritten with the initial states' gradients.
pub fn backward<F: Float>(
    cache: &mut DirCache<F>,
    w: &DirWeights<F>,
    g: &mut DirGrads<F>,
    input: LayerInput<F>,
    lengths: Option<&[usize]>,
    dy: Option<(&[F], usize)>,
    dh_n: Option<&[F]>,
    dc_n: Option<&[F]>,
    dx: Option<(&mut [F], usize)>,
    dh0: &mut [F],
    dc0: &mut [F],
) {
    if cache.dims.proj() {
        simple::backward(cache, w, g, input, lengths, dy, dh_n, dc_n, dx, dh0, dc0)
    } else {
        fast::backward(cache, w, g, input, lengths, dy, dh_n, dc_n, dx, dh0, dc0)
    }
}
