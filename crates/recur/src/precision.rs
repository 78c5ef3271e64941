//! The number format a model computes in: float32 (the default), bf16 (inference, and training
//! in mixed precision: float32 master weights, see `Engine::set_precision`) or int8 (inference).
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

/// float32, bf16 or int8.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    Int8,
}

impl Precision {
    /// Every precision, as `--precision` takes them.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Bf16, Precision::Int8];

    /// Its name on the command line: `f32`, `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
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

/// `dst = src` with every weight matrix rounded to bf16 on the way (vectors copied as they are):
/// [`round_weights`] of a copy in one pass, split over the threads. A bf16 training engine
/// writes its computing weights from the master weights with it after every update.
///
/// # Panics
/// When `src` and `dst` differ in length or are shorter than `layout`.
pub fn copy_rounded(layout: &ParamLayout, src: &[f32], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "copy_rounded: lengths");
    // whole cache lines per part; small models on one thread
    const PART: usize = 1 << 16;
    crate::ops::for_parts_mut(dst, PART, src.len() >= 2 * PART, |d0, part| {
        let d1 = d0 + part.len();
        part.copy_from_slice(&src[d0..d1]);
        for e in layout.entries.iter().filter(|e| e.shape.len() == 2) {
            let r = e.range();
            let (a, b) = (r.start.max(d0), r.end.min(d1));
            if a < b {
                crate::ops::bf16::round_slice(&mut part[a - d0..b - d0]);
            }
        }
    });
}

/// Replaces every weight matrix of `params` by its int8 quantization per row, dequantized
/// (`scale * code`, PyTorch's symmetric per-channel scheme: `crate::ops::int8::quantize_rows`);
/// vectors (biases) stay float32. Quantizing the result again gives the same codes.
pub fn quantize_weights(layout: &ParamLayout, params: &mut [f32]) {
    for e in layout.entries.iter().filter(|e| e.shape.len() == 2) {
        let (n, k) = (e.shape[0], e.shape[1]);
        if n * k == 0 {
            continue;
        }
        let w = &mut params[e.range()];
        let (q, s) = crate::ops::int8::quantize_rows(w, n, k);
        for (j, row) in w.chunks_exact_mut(k).enumerate() {
            for (v, &c) in row.iter_mut().zip(&q[j * k..(j + 1) * k]) {
                *v = s[j] * c as f32;
            }
        }
    }
}

/// Puts the weights of `params` in format `p`: [`round_weights`] for bf16,
/// [`quantize_weights`] for int8, nothing for float32.
pub fn prepare_weights(layout: &ParamLayout, params: &mut [f32], p: Precision) {
    match p {
        Precision::F32 => {}
        Precision::Bf16 => round_weights(layout, params),
        Precision::Int8 => quantize_weights(layout, params),
    }
}
