//! B parallel streams x T steps: the batches of truncated BPTT over one long token sequence.
//!
//! The sequence of N ids is cut into B contiguous streams of S = (N - 1) / B ids each (the
//! last N - 1 - B*S ids are not used for inputs). Batch k holds, for every stream i and step j,
//! the input `ids[i*S + k*T + j]` and the target `ids[i*S + k*T + j + 1]`, so batch k + 1 of a
//! stream continues exactly where batch k stopped and the hidden state can be carried across.
//! An epoch is S / T batches (the remainder of each stream, shorter than T, is left out).

use recur::{Error, Result};

/// The batch layout of one token sequence.
#[derive(Clone, Debug)]
pub struct Streams {
    /// B: parallel streams.
    pub b: usize,
    /// T: steps per batch.
    pub t: usize,
    /// S: ids per stream.
    pub stream_len: usize,
}

impl Streams {
    /// The layout of `n` ids in `b` streams of batches of `t` steps; an error when there is not
    /// enough text for one batch (n must be at least B*T + 1).
    pub fn new(n: usize, b: usize, t: usize) -> Result<Self> {
        assert!(b > 0 && t > 0, "B and T must be at least 1");
        if n < b * t + 1 {
            return Err(Error::data(format!(
                "the training text has {n} characters, fewer than one batch needs \
                 (batch size {b} x sequence length {t} + 1 = {})",
                b * t + 1
            )));
        }
        Ok(Streams {
            b,
            t,
            stream_len: (n - 1) / b,
        })
    }

    /// Batches per epoch: S / T.
    pub fn batches(&self) -> usize {
        self.stream_len / self.t
    }

    /// Fills `inputs` and `targets` (T, B), row t holding step t of every stream, with batch
    /// `k` (0 <= k < [`Streams::batches`]).
    pub fn fill(&self, ids: &[u32], k: usize, inputs: &mut [u32], targets: &mut [u32]) {
        assert!(k < self.batches(), "batch {k} out of range");
        let (b, t, s) = (self.b, self.t, self.stream_len);
        for j in 0..t {
            for i in 0..b {
                let pos = i * s + k * t + j;
                inputs[j * b + i] = ids[pos];
                targets[j * b + i] = ids[pos + 1];
            }
        }
    }
}
