//! recur: recurrent neural networks (Elman RNN, LSTM, GRU) trained with backpropagation through
//! time, with PyTorch's semantics and a fast CPU path.
//!
//! The library never prints, parses argv or exits; the `recur` binary does that.
//!
//! The core:
//! - [`nn`]: [`nn::Lstm`], [`nn::Gru`], [`nn::Rnn`]: layers that own their parameters and
//!   workspace, with PyTorch's shapes (the place to start);
//! - [`ops`]: the scalar trait, the one GEMM wrapper, the packed-panel kernels, softmax
//!   cross-entropy;
//! - [`cell`]: the cells' forward and backward over a sequence (one direction of one layer);
//! - [`stack`]: layers x directions, dropout, lengths;
//! - [`model`]: input (one-hot, embedding or dense) -> stack -> linear head, with the loss;
//! - [`ctc`]: the CTC loss (PyTorch's `CTCLoss`) and decoding (best path, prefix beam search);
//! - [`params`]: the flat parameter buffer and its named views;
//! - [`precision`]: float32 or bf16 (inference), and what bf16 rounds;
//! - [`optim`]: SGD, Adagrad, RMSprop, Adam, gradient clipping;
//! - [`checkpoint`]: safetensors checkpoints with PyTorch's names;
//! - [`engine`]: the math of a training step behind one trait (the CPU engine; recur-cuda's GPU one);
//! - [`stream`]: state carried between calls, a model fed one step or chunk at a time
//!   ([`stream::Streamer`]), and the loss of a long token stream;
//! - [`error`]: the one [`Error`] type of the public API;
//! - [`rng`]: the seeded random numbers behind initialisation, dropout and data order;
//! - [`rundir`]: one run per checkpoint directory (an advisory lock).
//!
//! Beside it, in crates of their own so that the core depends only on what it uses: `recur-apps`
//! (the character model, long-memory tasks, spoken digits: each built on the core alone) and
//! `recur-study` (the lecture's example, gradient checks, gradient flow, the machine's FMA
//! ceiling).

pub mod cell;
pub mod checkpoint;
pub mod collective;
pub mod ctc;
pub mod engine;
pub mod error;
pub mod memory;
pub mod model;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod params;
pub mod precision;
pub mod rng;
pub mod rundir;
pub mod stack;
pub mod stream;
pub mod train;

pub use error::{Error, Result};
pub use ops::gemm::{all_cores, set_threads, threads};
pub use precision::Precision;
