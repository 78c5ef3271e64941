//! Spoken-digit recognition: reading recordings, computing speech features, and (in
//! `classifier.rs`) a recurrent classifier over the feature frames.
//!
//! - [`wav`]: one mono PCM WAV file -> samples in [-1, 1), with clear errors;
//! - [`dataset`]: a directory of `{digit}_{speaker}_{take}.wav` files and its splits;
//! - [`features`]: log-mel filterbank energies, MFCCs, deltas;
//! - [`feature_stream`]: the same features computed as the audio arrives;
//! - [`strings`]: connected digit strings built from the recordings, for transcription;
//! - [`transcriber`], [`transcriber_train`]: the CTC digit-string transcriber and its training;
//! - [`streaming`]: a unidirectional transcriber fed audio in chunks;
//! - [`scoring`]: digit and string error rates;
//! - [`classifier`]: normalisation, batching, the pooled recurrent classifier, evaluation;
//! - [`train`]: its training, as a task of the one training loop.

pub mod classifier;
pub mod dataset;
pub mod feature_stream;
pub mod features;
pub mod scoring;
pub mod streaming;
pub mod strings;
pub mod train;
pub mod transcriber;
pub mod transcriber_train;
pub mod wav;
