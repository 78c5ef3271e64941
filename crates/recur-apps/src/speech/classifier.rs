//! The spoken-digit classifier: a (bi)directional recurrent stack over normalised feature frames
//! and one of two heads ([`Pooling`]):
//! - mean (default): the model's linear decoder applied at every valid step (its per-step head)
//!   and the class scores averaged over each utterance's valid steps. Because the decoder is
//!   affine, the average of the per-step logits equals the decoder applied to the mean of the
//!   stack outputs: the usual "mean-pooled states -> linear -> softmax" head, built on [`Model`]
//!   without changing it;
//! - last: the model's last-step head ([`Head::LastClasses`]: the final states of both directions).
//!
//! Utterances of different lengths share a batch through per-sequence lengths (PyTorch's packed
//! sequences): padded steps take no part in the recurrence, the pooling or the gradient.
//!
//! Here: feature normalisation, batching, the loss, evaluation. Not here: reading files (see
//! `wav.rs`, `dataset.rs`), training (`train.rs`, on the one training loop) and printing.

use super::dataset::Utterance;
use super::features::{Extractor, Features};
use super::wav::read_wav;
use rayon::prelude::*;
use recur::cell::CellKind;
use recur::engine::{Batch as EngineBatch, Engine, Start};
use recur::error::{Error, Result};
use recur::model::{Head, Model, ModelConfig};
use recur::ops::loss::{softmax_rows, softmax_xent};
use recur::rng::Rng;
use recur::stack::StackConfig;
use serde::{Deserialize, Serialize};

/// Ten digits.
pub const NUM_CLASSES: usize = 10;

/// Smallest standard deviation a feature is divided by (guards constant features).
pub const MIN_STD: f32 = 1e-5;

/// One recording's features and its label.
#[derive(Clone, Debug)]
pub struct Example {
    pub feats: Features,
    pub label: u8,
}

/// Reads and featurises `utts` (in parallel); the first failing file, in list order, is the error.
pub fn load_examples(utts: &[Utterance], ex: &Extractor) -> Result<Vec<Example>> {
    utts.par_iter()
        .map(|u| {
            let x = read_wav(&u.path, ex.cfg.sample_rate)?;
            Ok(Example {
                feats: ex.compute(&x),
                label: u.digit,
            })
        })
        .collect()
}

/// Reads `utts` (in parallel) and featurises each with every extractor of `exs` (e.g. the
/// plain one and warped copies for augmentation): `result[i][j]` is utterance i through `exs[j]`.
pub fn load_examples_multi(utts: &[Utterance], exs: &[Extractor]) -> Result<Vec<Vec<Example>>> {
    let rate = exs[0].cfg.sample_rate;
    utts.par_iter()
        .map(|u| {
            let x = read_wav(&u.path, rate)?;
            Ok(exs
                .iter()
                .map(|ex| Example {
                    feats: ex.compute(&x),
                    label: u.digit,
                })
                .collect())
        })
        .collect()
}

/// Per-feature mean and standard deviation over all frames of the training set; applied to
/// every utterance before the model sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalizer {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalizer {
    /// Fits to the frames of `examples` (all of the same dimension, at least one frame).
    pub fn fit(examples: &[Example]) -> Self {
        Self::fit_features(examples.iter().map(|e| &e.feats))
    }

    /// Fits to the frames of `feats` (all of the same dimension, at least one frame).
    pub fn fit_features<'a>(feats: impl Iterator<Item = &'a Features> + Clone) -> Self {
        let dim = feats.clone().next().map_or(0, |f| f.dim);
        let (mut sum, mut sq, mut n) = (vec![0.0f64; dim], vec![0.0f64; dim], 0usize);
        for f in feats {
            for row in f.data.chunks_exact(dim) {
                for (k, &v) in row.iter().enumerate() {
                    sum[k] += v as f64;
                    sq[k] += (v as f64) * (v as f64);
                }
                n += 1;
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| ((s / n as f64 - m * m).max(0.0).sqrt() as f32).max(MIN_STD))
            .collect();
        Normalizer {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std,
        }
    }

    /// `(x - mean) / std`, feature by feature.
    pub fn apply(&self, f: &mut Features) {
        for row in f.data.chunks_exact_mut(f.dim) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = (*v - m) / s;
            }
        }
    }
}

/// How the per-utterance class scores are formed from the stack's outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Average of the per-step scores over the valid steps.
    Mean,
    /// Scores of the final states (the model's last-step head).
    Last,
}

impl Pooling {
    pub fn parse(s: &str) -> Option<Pooling> {
        match s {
            "mean" => Some(Pooling::Mean),
            "last" => Some(Pooling::Last),
            _ => None,
        }
    }
}

/// The model for `dim` features per frame: dense input, the given stack, ten classes.
pub fn model_config(
    dim: usize,
    cell: CellKind,
    hidden: usize,
    layers: usize,
    bidirectional: bool,
    dropout: f64,
    pooling: Pooling,
) -> Result<ModelConfig> {
    let head = match pooling {
        Pooling::Mean => Head::StepClasses,
        Pooling::Last => Head::LastClasses,
    };
    let rnn = StackConfig::new(cell, dim, hidden)
        .with_layers(layers)
        .with_bidirectional(bidirectional)
        .with_dropout(dropout);
    let cfg = ModelConfig::dense(dim, rnn, NUM_CLASSES, head);
    cfg.validate()?;
    Ok(cfg)
}

/// Whether a model configuration is one this module can train and run.
pub fn check_model(cfg: &ModelConfig) -> Result<()> {
    if cfg.output_size != NUM_CLASSES {
        return Err(Error::invalid(format!(
            "the model has {} outputs; a digit classifier has {NUM_CLASSES}",
            cfg.output_size
        )));
    }
    match cfg.head {
        Head::StepClasses | Head::LastClasses => Ok(()),
        h => Err(Error::invalid(format!(
            "head {} is not a classification head",
            h.name()
        ))),
    }
}

/// A padded batch, time-major.
#[derive(Clone, Debug)]
pub struct Batch {
    pub t: usize,
    pub b: usize,
    /// x: (T, B, I), zeros after each utterance's end
    pub x: Vec<f32>,
    /// (B) valid steps per utterance
    pub lengths: Vec<usize>,
    /// (B) digits
    pub labels: Vec<u32>,
}

/// The batch of `examples[idx]`, padded to the longest.
pub fn make_batch(examples: &[Example], idx: &[usize]) -> Batch {
    let feats: Vec<&Features> = idx.iter().map(|&i| &examples[i].feats).collect();
    let (t, x) = pad_time_major(&feats);
    Batch {
        t,
        b: idx.len(),
        x,
        lengths: idx.iter().map(|&i| examples[i].feats.t).collect(),
        labels: idx.iter().map(|&i| examples[i].label as u32).collect(),
    }
}

/// The frames of `feats` as one time-major (T, B, dim) buffer, zeros after each one's end;
/// T is the longest (also the transcriber's batches).
pub fn pad_time_major(feats: &[&Features]) -> (usize, Vec<f32>) {
    let b = feats.len();
    let dim = feats.first().map_or(0, |f| f.dim);
    let t = feats.iter().map(|f| f.t).max().unwrap_or(0);
    let mut x = vec![0.0f32; t * b * dim];
    for (j, f) in feats.iter().enumerate() {
        for s in 0..f.t {
            x[(s * b + j) * dim..(s * b + j + 1) * dim]
                .copy_from_slice(&f.data[s * dim..(s + 1) * dim]);
        }
    }
    (t, x)
}

/// One epoch's batches: a random permutation, cut into pools of 16 batches whose members are
/// sorted by length (so a batch pads little), then the batches in random order.
pub fn epoch_batches(examples: &[Example], batch_size: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let lengths: Vec<usize> = examples.iter().map(|e| e.feats.t).collect();
    epoch_batches_by(&lengths, batch_size, rng)
}

/// [`epoch_batches`] of items with these lengths (also the transcriber's).
pub fn epoch_batches_by(lengths: &[usize], batch_size: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let n = lengths.len();
    let mut perm: Vec<usize> = (0..n).collect();
    shuffle(&mut perm, rng);
    let mut batches = Vec::new();
    for pool in perm.chunks_mut(batch_size * 16) {
        pool.sort_by_key(|&i| lengths[i]);
        batches.extend(pool.chunks(batch_size).map(|c| c.to_vec()));
    }
    shuffle(&mut batches, rng);
    batches
}

fn shuffle<T>(v: &mut [T], rng: &mut Rng) {
    // Fisher-Yates
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

/// Per-utterance class scores (B, V) after a forward pass: the last-step head's logits as they
/// are, or the per-step logits averaged over each utterance's valid steps.
fn scores(model: &Model, logits: &[f32], batch: &Batch) -> Vec<f32> {
    let v = NUM_CLASSES;
    if model.cfg().head == Head::LastClasses {
        return logits[..batch.b * v].to_vec();
    }
    let mut pooled = vec![0.0f32; batch.b * v];
    pool_logits(logits, batch, &mut pooled);
    pooled
}

/// Mean over each utterance's valid steps of the per-step logits.
/// logits: (T*B, V) -> pooled: (B, V)
fn pool_logits(logits: &[f32], batch: &Batch, pooled: &mut [f32]) {
    let v = NUM_CLASSES;
    pooled.fill(0.0);
    for s in 0..batch.t {
        for j in 0..batch.b {
            if s < batch.lengths[j] {
                let row = &logits[(s * batch.b + j) * v..(s * batch.b + j + 1) * v];
                for (p, &l) in pooled[j * v..(j + 1) * v].iter_mut().zip(row) {
                    *p += l;
                }
            }
        }
    }
    for (j, &len) in batch.lengths.iter().enumerate() {
        for p in &mut pooled[j * v..(j + 1) * v] {
            *p /= len as f32;
        }
    }
}

/// Index of the largest value (the first, on ties).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (k, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = k;
        }
    }
    best
}

/// Loss and accuracy counts of some batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Summed cross-entropy (nats).
    pub loss: f64,
    pub correct: usize,
    pub n: usize,
}

impl Tally {
    pub fn add(&mut self, o: Tally) {
        self.loss += o.loss;
        self.correct += o.correct;
        self.n += o.n;
    }
    pub fn mean_loss(&self) -> f64 {
        self.loss / self.n.max(1) as f64
    }
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.n.max(1) as f64
    }
    /// The tallies of every worker of a data-parallel run added up (`part.sum_f64`, which
    /// every worker calls alike).
    pub fn summed(self, part: &dyn recur::collective::Collective) -> recur::Result<Tally> {
        let mut total = [self.loss, self.correct as f64, self.n as f64];
        part.sum_f64(&mut total)?;
        Ok(Tally {
            loss: total[0],
            correct: total[1] as usize,
            n: total[2] as usize,
        })
    }
}

/// The summed cross-entropy of the pooled `logits` (R, V) of a forward on `batch` and the
/// accuracy counts; writes dL/dlogits (R, V) into `dlogits` for the loss scaled by `scale` (1/B:
/// the batch's mean).
pub(crate) fn loss_and_dlogits(
    model: &Model,
    logits: &[f32],
    batch: &Batch,
    dlogits: &mut [f32],
    scale: f32,
) -> Tally {
    let (b, v) = (batch.b, NUM_CLASSES);
    // pooled, dpooled: (B, V)
    let pooled = scores(model, logits, batch);
    let mut dpooled = vec![0.0f32; b * v];
    let (loss, n) = softmax_xent(&pooled, b, v, &batch.labels, Some(&mut dpooled), scale);
    let correct = (0..b)
        .filter(|&j| argmax(&pooled[j * v..(j + 1) * v]) == batch.labels[j] as usize)
        .count();
    if model.cfg().head == Head::LastClasses {
        dlogits[..b * v].copy_from_slice(&dpooled);
    } else {
        // forward was: pooled_j = (1/len_j) sum_{s < len_j} logits_{s,j}; padded steps get nothing
        for s in 0..batch.t {
            for j in 0..b {
                let d = &mut dlogits[(s * b + j) * v..(s * b + j + 1) * v];
                if s < batch.lengths[j] {
                    let inv = 1.0 / batch.lengths[j] as f32;
                    for (o, &g) in d.iter_mut().zip(&dpooled[j * v..(j + 1) * v]) {
                        *o = g * inv;
                    }
                } else {
                    d.fill(0.0);
                }
            }
        }
    }
    Tally { loss, correct, n }
}

/// The engine's view of a batch: (T, B, F) features with the utterances' lengths.
pub(crate) fn engine_batch(batch: &Batch) -> EngineBatch<'_> {
    EngineBatch::dense(&batch.x, batch.t, batch.b).with_lengths(&batch.lengths)
}

/// Class probabilities (B, V) for a batch, in inference mode (no dropout).
pub fn predict_batch(eng: &mut dyn Engine, batch: &Batch) -> Result<Vec<f32>> {
    let v = NUM_CLASSES;
    eng.forward(&engine_batch(batch), Start::Zero, None)?;
    let model = eng.model().clone();
    let logits = eng.logits()?;
    let pooled = scores(&model, &logits, batch);
    let mut probs = vec![0.0f32; batch.b * v];
    softmax_rows(&pooled, &mut probs, batch.b, v);
    Ok(probs)
}

/// Results on a set of recordings.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub tally: Tally,
    /// confusion[true digit][predicted digit]: counts
    pub confusion: [[usize; NUM_CLASSES]; NUM_CLASSES],
    /// Predicted digit of each example, in input order.
    pub predictions: Vec<u8>,
}

impl Evaluation {
    /// Accuracy per true digit (NaN for a digit with no recording).
    pub fn per_digit(&self) -> [f64; NUM_CLASSES] {
        let mut out = [f64::NAN; NUM_CLASSES];
        for (d, row) in self.confusion.iter().enumerate() {
            let n: usize = row.iter().sum();
            if n > 0 {
                out[d] = row[d] as f64 / n as f64;
            }
        }
        out
    }
}

/// Evaluates on `examples` in batches of `batch_size` (sorted by length to pad little).
pub fn evaluate(
    eng: &mut dyn Engine,
    examples: &[Example],
    batch_size: usize,
) -> Result<Evaluation> {
    evaluate_with(examples, batch_size, |batch| predict_batch(eng, batch))
}

/// [`evaluate`] with class probabilities (B, V) from `predict`.
fn evaluate_with<E>(
    examples: &[Example],
    batch_size: usize,
    mut predict: impl FnMut(&Batch) -> Result<Vec<f32>, E>,
) -> Result<Evaluation, E> {
    let v = NUM_CLASSES;
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| examples[i].feats.t);
    let mut tally = Tally::default();
    let mut confusion = [[0usize; NUM_CLASSES]; NUM_CLASSES];
    let mut predictions = vec![0u8; examples.len()];
    for idx in order.chunks(batch_size.max(1)) {
        let batch = make_batch(examples, idx);
        let probs = predict(&batch)?;
        for (j, &i) in idx.iter().enumerate() {
            let p = &probs[j * v..(j + 1) * v];
            let pred = argmax(p);
            let label = examples[i].label as usize;
            tally.loss -= (p[label].max(f32::MIN_POSITIVE) as f64).ln();
            tally.n += 1;
            if pred == label {
                tally.correct += 1;
            }
            confusion[label][pred] += 1;
            predictions[i] = pred as u8;
        }
    }
    Ok(Evaluation {
        tally,
        confusion,
        predictions,
    })
}
