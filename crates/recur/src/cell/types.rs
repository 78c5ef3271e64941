//! The vocabulary of one direction of one layer: which cell ([`CellKind`]), its sizes
//! ([`DirDims`]), its weights and gradient buffers ([`DirWeights`], [`DirGrads`]), and its input
//! ([`LayerInput`]).

use super::rnn::Activation;

/// Which recurrent cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellKind {
    /// Elman RNN with the given non-linearity.
    Rnn(Activation),
    /// LSTM, gates i, f, g, o.
    Lstm,
    /// GRU, gates r, z, n.
    Gru,
}

impl CellKind {
    /// Number of gate blocks G: the rows of `weight_ih` are `G * hidden`.
    pub fn gates(self) -> usize {
        match self {
            CellKind::Rnn(_) => 1,
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }

    /// The name used on the command line and in checkpoints: `rnn_tanh`, `rnn_relu`, `lstm`, `gru`.
    pub fn name(self) -> &'static str {
        match self {
            CellKind::Rnn(Activation::Tanh) => "rnn_tanh",
            CellKind::Rnn(Activation::Relu) => "rnn_relu",
            CellKind::Lstm => "lstm",
            CellKind::Gru => "gru",
        }
    }

    /// Parses [`CellKind::name`] (also `rnn` for `rnn_tanh`).
    pub fn parse(s: &str) -> Option<CellKind> {
        Some(match s {
            "rnn" | "rnn_tanh" => CellKind::Rnn(Activation::Tanh),
            "rnn_relu" => CellKind::Rnn(Activation::Relu),
            "lstm" => CellKind::Lstm,
            "gru" => CellKind::Gru,
            _ => return None,
        })
    }
}

/// Sizes of one direction of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirDims {
    pub kind: CellKind,
    /// T: steps.
    pub t: usize,
    /// B: sequences in the batch.
    pub b: usize,
    /// I: input features.
    pub i: usize,
    /// H: hidden units.
    pub h: usize,
    /// P: output (and recurrent state) size: the LSTM's `proj_size` when projecting, else H.
    pub p: usize,
    /// Walk the steps from T-1 down to 0.
    pub reverse: bool,
}

impl DirDims {
    pub(super) fn gh(&self) -> usize {
        self.kind.gates() * self.h
    }
    pub(super) fn proj(&self) -> bool {
        self.kind == CellKind::Lstm && self.p != self.h
    }
}

/// The weights of one direction of one layer, shaped as PyTorch's.
pub struct DirWeights<'a, F> {
    /// `weight_ih`: (G*H, I)
    pub w_ih: &'a [F],
    /// `weight_hh`: (G*H, P)
    pub w_hh: &'a [F],
    /// `bias_ih`: (G*H)
    pub b_ih: Option<&'a [F]>,
    /// `bias_hh`: (G*H)
    pub b_hh: Option<&'a [F]>,
    /// `weight_hr` (LSTM projection): (P, H)
    pub w_hr: Option<&'a [F]>,
}

/// Gradient buffers of one direction of one layer, same shapes as [`DirWeights`]; accumulated (`+=`).
pub struct DirGrads<'a, F> {
    pub w_ih: &'a mut [F],
    pub w_hh: &'a mut [F],
    pub b_ih: Option<&'a mut [F]>,
    pub b_hh: Option<&'a mut [F]>,
    pub w_hr: Option<&'a mut [F]>,
}

/// The input of a layer: dense vectors, or token ids standing for one-hot vectors.
#[derive(Clone, Copy)]
pub enum LayerInput<'a, F> {
    /// `(T, B, I)` with row stride `ld` (>= I).
    Dense { x: &'a [F], ld: usize },
    /// `(T, B)` token ids in `0..I`: the one-hot rows `e_id`, so `x W_ih^T` is column `id` of
    /// `W_ih`. Gives the same numbers as the dense one-hot product at a fraction of the work.
    OneHot { ids: &'a [u32] },
}
