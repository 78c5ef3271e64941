//! The digit-string transcriber: a (bi)directional recurrent stack over normalised feature
//! frames and a linear head that scores, at every frame, the blank (class 0) and the ten digits
//! (class d + 1), trained with CTC (`recur::ctc`) and read by best-path or beam decoding.
//!
//! Here: the examples (a rendered string's features and digits), batching, the loss with its
//! gradient, decoding and evaluation. Not here: building the strings (`strings.rs`), training on
//! the loop (`transcriber_train.rs`), printing.

use super::classifier::{pad_time_major, Normalizer};
use super::features::{Extractor, Features};
use super::scoring::Score;
use super::strings::DigitString;
use rayon::prelude::*;
use recur::cell::CellKind;
use recur::ctc::{beam_search, greedy, Ctc, CtcBatch, Reduction};
use recur::engine::{Batch as EngineBatch, Engine, Start};
use recur::error::{Error, Result};
use recur::model::{Head, ModelConfig};
use recur::stack::StackConfig;

/// The blank's class; digit d is class d + 1.
pub const BLANK: usize = 0;
/// Blank + ten digits.
pub const NUM_CLASSES: usize = 11;

/// One string's features and its digits.
#[derive(Clone, Debug)]
pub struct StringExample {
    pub feats: Features,
    pub digits: Vec<u8>,
}

/// Renders and featurises `strings` (in parallel); the first failing file, in list order, is
/// the error, as is a string too short for its digits (see [`check_frames`]).
pub fn load_strings(strings: &[DigitString], ex: &Extractor) -> Result<Vec<StringExample>> {
    strings
        .par_iter()
        .map(|s| {
            let r = s.render(ex.cfg.sample_rate)?;
            let e = StringExample {
                feats: ex.compute(&r.samples),
                digits: s.digits(),
            };
            check_frames(&e).map_err(|m| Error::data(format!("{}: {m}", s.files())))?;
            Ok(e)
        })
        .collect()
}

/// The fewest frames CTC needs for `digits`: one per digit, and a blank between two equal ones.
pub fn min_frames(digits: &[u8]) -> usize {
    digits.len() + digits.windows(2).filter(|w| w[0] == w[1]).count()
}

/// An error when `e`'s frames are too few to carry its digits under CTC.
pub fn check_frames(e: &StringExample) -> std::result::Result<(), String> {
    let need = min_frames(&e.digits);
    if e.feats.t < need {
        return Err(format!(
            "{} frames cannot carry {} digits (CTC needs at least {need})",
            e.feats.t,
            e.digits.len()
        ));
    }
    Ok(())
}

/// Normalises every example's features with `n`.
pub fn normalise(examples: &mut [StringExample], n: &Normalizer) {
    for e in examples {
        n.apply(&mut e.feats);
    }
}

/// The model for `dim` features per frame: dense input, the given stack, per-frame scores over
/// blank + ten digits.
pub fn model_config(
    dim: usize,
    cell: CellKind,
    hidden: usize,
    layers: usize,
    bidirectional: bool,
) -> Result<ModelConfig> {
    let rnn = StackConfig::new(cell, dim, hidden)
        .with_layers(layers)
        .with_bidirectional(bidirectional);
    let cfg = ModelConfig::dense(dim, rnn, NUM_CLASSES, Head::StepClasses);
    cfg.validate()?;
    Ok(cfg)
}

/// Whether a model configuration is a transcriber's.
pub fn check_model(cfg: &ModelConfig) -> Result<()> {
    if cfg.output_size != NUM_CLASSES || cfg.head != Head::StepClasses {
        return Err(Error::invalid(format!(
            "not a digit transcriber: {} outputs with head {} (expected {NUM_CLASSES} per step)",
            cfg.output_size,
            cfg.head.name()
        )));
    }
    Ok(())
}

/// A padded batch, time-major, with its CTC targets.
#[derive(Clone, Debug)]
pub struct Batch {
    pub t: usize,
    pub b: usize,
    /// (T, B, I), zeros after each string's end
    pub x: Vec<f32>,
    /// (B) frames per string
    pub lengths: Vec<usize>,
    /// The strings' classes (digit + 1), concatenated
    pub targets: Vec<usize>,
    pub target_lengths: Vec<usize>,
}

/// The batch of `examples[idx]`, padded to the longest.
pub fn make_batch(examples: &[StringExample], idx: &[usize]) -> Batch {
    let feats: Vec<&Features> = idx.iter().map(|&i| &examples[i].feats).collect();
    let (t, x) = pad_time_major(&feats);
    Batch {
        t,
        b: idx.len(),
        x,
        lengths: idx.iter().map(|&i| examples[i].feats.t).collect(),
        targets: idx
            .iter()
            .flat_map(|&i| examples[i].digits.iter().map(|&d| d as usize + 1))
            .collect(),
        target_lengths: idx.iter().map(|&i| examples[i].digits.len()).collect(),
    }
}

/// The engine's view of a batch.
pub fn engine_batch(batch: &Batch) -> EngineBatch<'_> {
    EngineBatch::dense(&batch.x, batch.t, batch.b).with_lengths(&batch.lengths)
}

/// The CTC loss of a forward pass's logits (T, B, 11), PyTorch's mean reduction, with
/// zero_infinity (a string its frames cannot carry adds nothing rather than stopping the run);
/// with `dlogits`, its gradient is written there.
pub fn ctc_loss(logits: &[f32], batch: &Batch, dlogits: Option<&mut [f32]>) -> Result<f64> {
    let ctc = Ctc {
        blank: BLANK,
        reduction: Reduction::Mean,
        zero_infinity: true,
    };
    let cb = CtcBatch {
        t: batch.t,
        b: batch.b,
        c: NUM_CLASSES,
        targets: &batch.targets,
        input_lengths: &batch.lengths,
        target_lengths: &batch.target_lengths,
    };
    Ok(ctc.loss(logits, &cb, dlogits)?.loss)
}

/// How per-frame scores become digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoder {
    Greedy,
    Beam(usize),
}

/// A transcription: the digits and, for each, the frame at which the decoder emitted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transcript {
    pub digits: Vec<u8>,
    pub frames: Vec<usize>,
}

/// The transcript of one string's per-frame scores (T, 11).
pub fn decode_frames(scores: &[f32], decoder: Decoder) -> Transcript {
    let d = match decoder {
        Decoder::Greedy => greedy(scores, NUM_CLASSES, BLANK),
        Decoder::Beam(w) => beam_search(scores, NUM_CLASSES, BLANK, w),
    };
    Transcript {
        digits: d.labels.iter().map(|&k| (k - BLANK - 1) as u8).collect(),
        frames: d.frames,
    }
}

/// One string's frames of a batch's logits (T, B, 11): (lengths[j], 11).
fn frames_of(logits: &[f32], batch: &Batch, j: usize) -> Vec<f32> {
    let c = NUM_CLASSES;
    (0..batch.lengths[j])
        .flat_map(|s| logits[(s * batch.b + j) * c..(s * batch.b + j + 1) * c].iter())
        .copied()
        .collect()
}

/// The digits of each string of a batch from its logits (T, B, 11), over its own frames.
pub fn decode(logits: &[f32], batch: &Batch, decoder: Decoder) -> Vec<Vec<u8>> {
    (0..batch.b)
        .map(|j| decode_frames(&frames_of(logits, batch, j), decoder).digits)
        .collect()
}

/// Runs one recording's normalised features through the model on `eng`: its per-frame scores
/// (T, 11) and their transcript.
pub fn transcribe(
    eng: &mut dyn Engine,
    feats: &Features,
    decoder: Decoder,
) -> Result<(Vec<f32>, Transcript)> {
    // one sequence: its frames are already the (T, 1, I) batch, and its scores the logits
    let lengths = [feats.t];
    let batch = EngineBatch::dense(&feats.data, feats.t, 1).with_lengths(&lengths);
    eng.forward(&batch, Start::Zero, None)?;
    let scores = eng.logits()?[..feats.t * NUM_CLASSES].to_vec();
    let t = decode_frames(&scores, decoder);
    Ok((scores, t))
}

/// A set's evaluation: the mean CTC loss, the error counts, and each string's transcription.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub loss: f64,
    pub score: Score,
    pub hyps: Vec<Vec<u8>>,
}

/// Runs `examples` through the model in batches of `batch_size` (in order) and scores them.
pub fn evaluate(
    eng: &mut dyn Engine,
    examples: &[StringExample],
    batch_size: usize,
    decoder: Decoder,
) -> Result<Evaluation> {
    let mut score = Score::default();
    let mut hyps = Vec::with_capacity(examples.len());
    let (mut loss_sum, mut n) = (0.0, 0usize);
    let idx: Vec<usize> = (0..examples.len()).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let batch = make_batch(examples, chunk);
        eng.forward(&engine_batch(&batch), Start::Zero, None)?;
        let logits = eng.logits()?.into_owned();
        loss_sum += ctc_loss(&logits, &batch, None)? * batch.b as f64;
        n += batch.b;
        for (k, h) in decode(&logits, &batch, decoder).into_iter().enumerate() {
            score.add(&examples[chunk[k]].digits, &h);
            hyps.push(h);
        }
    }
    Ok(Evaluation {
        loss: loss_sum / n.max(1) as f64,
        score,
        hyps,
    })
}
