//! Connectionist Temporal Classification (Graves et al., 2006): training a sequence model on
//! label strings without frame-level alignments.
//!
//! - [`loss`]: the CTC loss of a batch and its gradient with respect to the logits, with
//!   `torch.nn.CTCLoss`'s meaning (blank index, reduction none / sum / mean, `zero_infinity`);
//! - [`decode`]: from per-frame scores to a label string with the frame of each label: best path
//!   (greedy) and prefix beam search.
//!
//! Scores are logits, (T, B, C) row-major for a batch and (T, C) for one sequence: the loss
//! applies log-softmax over C itself, as a model's linear head feeds it.

pub mod decode;
pub mod loss;

pub use decode::{beam_search, greedy, Decoded, GreedyStream};
pub use loss::{Ctc, CtcBatch, CtcLoss, Reduction};
