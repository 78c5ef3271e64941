//! Recurrent cells: forward and backward (BPTT) of one direction of one layer over a sequence.
//!
//! The sequence driver shared by the three cells, on the fast path:
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
//! and `simple.rs` the two drivers, `schedule.rs` the fast driver's choices and their override; `rnn.rs`, `lstm.rs`, `gru.rs` the element-wise passes. This
//! file picks the driver ([`forward`], [`backward`]).

mod bf16_choice;
mod cache;
mod fast;
/// The schedule sizes the fast driver derives from the machine (for `recur bench --dispatch`).
pub(crate) use bf16_choice::max_rows as bf16_max_rows;
pub(crate) use fast::{chunk_bytes, split_weights};
pub mod gru;
pub mod lstm;
mod products;
pub mod rnn;
pub mod schedule;
pub mod simple;
mod types;

pub use cache::{CacheSizes, DirCache};
pub use rnn::Activation;
pub use types::{CellKind, DirDims, DirGrads, DirWeights, LayerInput};

use crate::ops::Float;

/// What [`forward`] reads and writes besides the cache; [`simple::forward`] takes the same.
pub struct DirForward<'a, F> {
    /// The direction's weights.
    pub weights: &'a DirWeights<'a, F>,
    /// The direction's input.
    pub input: LayerInput<'a, F>,
    /// Per-sequence lengths (one per batch row, each in `1..=T`), or `None`: all `T` steps.
    pub lengths: Option<&'a [usize]>,
    /// Initial state h_0: (B, P), zero when `None`.
    pub h0: Option<&'a [F]>,
    /// Initial cell state c_0: (B, H), LSTM only, zero when `None`.
    pub c0: Option<&'a [F]>,
    /// The outputs: (T, B, P), written at row stride `ldy` (so two directions can interleave).
    pub y: &'a mut [F],
    /// Row stride of `y`.
    pub ldy: usize,
    /// The final state: (B, P), each sequence's taken at its own last step.
    pub h_n: &'a mut [F],
    /// The final cell state: (B, H), LSTM only; empty otherwise.
    pub c_n: &'a mut [F],
}

/// What [`backward`] reads and writes besides the cache; [`simple::backward`] takes the same.
pub struct DirBackward<'a, F> {
    /// The direction's weights, as given to the forward.
    pub weights: &'a DirWeights<'a, F>,
    /// The parameter gradients, accumulated (`+=`).
    pub grads: DirGrads<'a, F>,
    /// The direction's input, as given to the forward.
    pub input: LayerInput<'a, F>,
    /// Per-sequence lengths, as given to the forward.
    pub lengths: Option<&'a [usize]>,
    /// Gradient of the outputs, (T, B, P) at the given row stride, or `None` when only the final
    /// states feed the loss.
    pub dy: Option<(&'a [F], usize)>,
    /// Gradient of the final state h_n, (B, P), zero when `None`.
    pub dh_n: Option<&'a [F]>,
    /// Gradient of the final cell state c_n, (B, H, LSTM only), zero when `None`.
    pub dc_n: Option<&'a [F]>,
    /// Gradient of the input, (T, B, I) at the given row stride, accumulated (`+=`); dense input
    /// only.
    pub dx: Option<(&'a mut [F], usize)>,
    /// Overwritten with the gradient of h_0: (B, P).
    pub dh0: &'a mut [F],
    /// Overwritten with the gradient of c_0: (B, H), LSTM only; empty otherwise.
    pub dc0: &'a mut [F],
}

/// Forward over the whole sequence: the fast driver (`fast.rs`), or for LSTM projections the
/// simple one (`simple.rs`).
pub fn forward<F: Float>(cache: &mut DirCache<F>, args: DirForward<F>) {
    if cache.dims.proj() {
        simple::forward_with(cache, args, simple::Kernels::Fast)
    } else {
        fast::forward(cache, args)
    }
}

/// Backward (BPTT) over the whole sequence (the same driver as the forward), after [`forward`]
/// on the same cache, weights, input and lengths.
pub fn backward<F: Float>(cache: &mut DirCache<F>, args: DirBackward<F>) {
    assert!(
        cache.precision != crate::Precision::Int8,
        "int8 has no backward"
    );
    if cache.dims.proj() {
        simple::backward_with(cache, args, simple::Kernels::Fast)
    } else {
        fast::backward(cache, args)
    }
}
