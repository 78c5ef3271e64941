//! recur: recurrent neural networks (Elman RNN, LSTM, GRU) trained with backpropagation through
//! time, with PyTorch's semantics and a fast CPU path.
//!
//! The library never prints, parses argv or exits; the `recur` binary does that.
//!
//! - [`ops`]: the scalar trait, the one GEMM wrapper, softmax cross-entropy;
//! - [`cell`]: the cells' forward and backward over a sequence (one direction of one layer);
//! - [`stack`]: layers x directions, dropout, lengths;
//! - [`model`]: input (one-hot, embedding or dense) -> stack -> linear head, with the loss;
//! - [`params`]: the flat parameter buffer and its named views;
//! - [`optim`]: SGD, Adagrad, RMSprop, Adam, gradient clipping;
//! - [`data`]: text corpora: vocabulary, train/validation split, B streams x T steps batches;
//! - [`train`]: the character-model training loop (progress by callback, checkpoints, resume);
//! - [`engine`]: the math of a training step behind one trait (the CPU engine; recur-cuda's GPU one);
//! - [`lm`]: a character model's loss on a text, and sampling;
//! - [`gradcheck`]: central finite differences in f64;
//! - [`lecture`]: the seed lecture's "hello" example.
//! - [`speech`]: spoken-digit recognition (WAV reading, log-mel and MFCC features, classifier).

pub mod cell;
pub mod checkpoint;
pub mod data;
pub mod engine;
pub mod gradcheck;
pub mod gradflow;
pub mod lecture;
pub mod lm;
pub mod model;
pub mod ops;
pub mod optim;
pub mod params;
pub mod rng;
pub mod speech;
pub mod stack;
pub mod tasks;
pub mod train;
