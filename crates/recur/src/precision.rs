//! The number format a model computes in: float32 (the default, and all that training uses
//! today) or bf16 for inference.
//!
//! bf16 here means what PyTorch's bf16 autocast means for a recurrent layer, with the cell
//! state kept in float32: every weight matrix (input, recurrent and head weights, the
//! embedding table) is rounded to bf16 once ([`round_weights`]); a dense model input is rounded
//! to bf16 as it enters; every hidden state h is rounded to bf16 as the layer writes it (so the
//! layer's outputs, its final state and what the next step multiplies are bf16 values); every
//! product multiplies bf16 values and accumulates in float32; the gates, the LSTM's cell
//! state, the biases, the logits, softmax and loss stay float32. The recurrent product reads
//! its weights packed as bf16 (half the bytes: `ops::bf16`); the others run the float32 GEMM on
//! the rounded values, which gives the same sums (a product of two bf16 numbers is exact in
//! float32).

use crate::error::{Error, Result};
use crate::params::ParamLayout;

/// float32 or bf16.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl Precision {
    /// Every precision, as `--precision` takes them.
    pub const ALL: [Precision; 2] = [Precision::F32, Precision::Bf16];

    /// Its name on the command line: `f32`, `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// The precision of a name ([`Precision::name`]); an error listing the names otherwise.
    pub fn parse(s: &str) -> Result<Precision> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown precision '{s}' (one of: {})",
                    Precision::ALL.map(Precision::name).join(", ")
                ))
            })
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Rounds every weight matrix of `params` (the tensors of two dimensions in `layout`) to bf16
/// in place; vectors (biases) stay float32.
pub fn round_weights(layout: &ParamLayout, params: &mut [f32]) {
    for e in layout.entries.iter().filter(|e| e.shape.len() == 2) {
        crate::ops::bf16::round_slice(&mut params[e.range()]);
    }
}

/// Why `model` cannot run in `p`, if it cannot: bf16 has no LSTM projections yet.
pub fn check_model(model: &crate::model::Model, p: Precision) -> Result<()> {
    if p == Precision::Bf16 && model.cfg().rnn.proj_size > 0 {
        return Err(Error::invalid(
            "bf16 does not run LSTMs with projections (proj_size > 0) yet; use --precision f32",
        ));
    }
    Ok(())
}
