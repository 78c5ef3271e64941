//! Transcribing as the audio arrives: samples in chunks -> features decided so far
//! ([`FeatureStream`]) -> the run's normaliser -> a unidirectional model carrying its state from
//! chunk to chunk ([`recur::stream::Streamer`]) -> best-path decoding frame by frame
//! ([`GreedyStream`]). Each digit comes out at the first frame whose most probable class is that
//! digit, so it is printed as soon as that frame's audio (plus the features' lookahead) is in.
//!
//! Fed a whole recording, in chunks of any size, it gives the digits and frames of the
//! whole-recording best path ([`super::transcriber::transcribe`]) over the same model: the
//! features are equal bit for bit and the streamer's outputs equal the whole forward's.

use super::classifier::Normalizer;
use super::feature_stream::FeatureStream;
use super::features::Extractor;
use super::transcriber::{check_model, BLANK, NUM_CLASSES};
use recur::ctc::GreedyStream;
use recur::error::Result;
use recur::model::{Input, Model};
use recur::stream::Streamer;

/// A digit as it is decided: the digit, and the frame at which the best path emits it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Emitted {
    pub digit: u8,
    pub frame: usize,
}

/// A unidirectional transcriber fed audio in chunks.
pub struct StreamingTranscriber<'a> {
    features: FeatureStream,
    normalizer: Normalizer,
    streamer: Streamer<'a>,
    decoder: GreedyStream,
    /// Every frame's scores so far, (frames, 11), when kept.
    scores: Option<Vec<f32>>,
}

impl<'a> StreamingTranscriber<'a> {
    /// A transcriber of `model` with `params`, over the features of `ex` normalised by
    /// `normalizer` (a run's `TranscriberConfig` has both). Refused: a bidirectional model (its
    /// reverse direction needs the whole recording), per-utterance mean normalisation, a model
    /// that is not a transcriber's or does not take these features.
    pub fn new(
        model: &'a Model,
        params: &'a [f32],
        ex: &Extractor,
        normalizer: &Normalizer,
    ) -> Result<Self> {
        check_model(model.cfg())?;
        super::train::check_input(&ex.cfg, normalizer, model.cfg())?;
        Ok(StreamingTranscriber {
            features: FeatureStream::new(ex.clone())?,
            normalizer: normalizer.clone(),
            streamer: Streamer::new(model, params, 1)?,
            decoder: GreedyStream::new(NUM_CLASSES, BLANK),
            scores: None,
        })
    }

    /// Also keeps every frame's scores (for plots and checks): see [`Self::scores`].
    pub fn keep_scores(mut self) -> Self {
        self.scores = Some(Vec::new());
        self
    }

    /// The same transcriber computing in `p` (see `recur::precision`).
    pub fn with_precision(mut self, p: recur::Precision) -> Result<Self> {
        self.streamer = self.streamer.with_precision(p)?;
        Ok(self)
    }

    /// The feature settings (sample rate, hop).
    pub fn extractor(&self) -> &Extractor {
        self.features.extractor()
    }

    /// How far the audio must run past a frame's centre before the frame is computed, in samples.
    pub fn lookahead_samples(&self) -> usize {
        self.features.lookahead_samples()
    }

    /// Frames decoded so far.
    pub fn frames(&self) -> usize {
        self.decoder.frames()
    }

    /// Every frame's scores so far, (frames, 11), if [`Self::keep_scores`] was asked for.
    pub fn scores(&self) -> Option<&[f32]> {
        self.scores.as_deref()
    }

    /// Feeds the next samples (mono, at the features' sample rate); returns the digits they
    /// decided.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<Emitted>> {
        let f = self.features.push(samples)?;
        Ok(self.run(f))
    }

    /// Ends the recording; returns the digits its last frames decided.
    pub fn finish(&mut self) -> Result<Vec<Emitted>> {
        let f = self.features.finish()?;
        Ok(self.run(f))
    }

    fn run(&mut self, mut f: super::features::Features) -> Vec<Emitted> {
        if f.t == 0 {
            return Vec::new();
        }
        self.normalizer.apply(&mut f);
        let logits = self.streamer.chunk(Input::Dense(&f.data), f.t);
        if let Some(s) = &mut self.scores {
            s.extend_from_slice(logits);
        }
        logits
            .chunks(NUM_CLASSES)
            .filter_map(|row| self.decoder.push(row))
            .map(|(k, frame)| Emitted {
                digit: (k - BLANK - 1) as u8,
                frame,
            })
            .collect()
    }
}

/// A recording streamed through a [`StreamingTranscriber`], timed.
#[derive(Clone, Debug, PartialEq)]
pub struct Streamed {
    pub emitted: Vec<Emitted>,
    /// For each digit, when it was out, in seconds from the start of the audio: the end of the
    /// chunk that decided it (the audio cannot arrive sooner) plus the time that chunk took to
    /// compute.
    pub out_s: Vec<f64>,
    /// Time spent computing, over all chunks and the finish.
    pub compute_s: f64,
    /// The recording's length.
    pub audio_s: f64,
}

impl Streamed {
    /// The digits.
    pub fn digits(&self) -> Vec<u8> {
        self.emitted.iter().map(|e| e.digit).collect()
    }

    /// Compute time over audio time.
    pub fn real_time_factor(&self) -> f64 {
        self.compute_s / self.audio_s.max(f64::MIN_POSITIVE)
    }
}

/// Feeds `x` to `st` in chunks of `chunk` samples as if it arrived in real time (but without
/// waiting for it), then finishes; `on_digit` sees each digit as it is decided, with the time it
/// is out (see [`Streamed::out_s`]).
pub fn stream_recording(
    st: &mut StreamingTranscriber,
    x: &[f32],
    chunk: usize,
    on_digit: &mut dyn FnMut(Emitted, f64),
) -> Result<Streamed> {
    let rate = st.extractor().cfg.sample_rate as f64;
    let mut out = Streamed {
        emitted: Vec::new(),
        out_s: Vec::new(),
        compute_s: 0.0,
        audio_s: x.len() as f64 / rate,
    };
    let mut fed = 0usize;
    let pieces = x
        .chunks(chunk.max(1))
        .map(Some)
        .chain(std::iter::once(None));
    for piece in pieces {
        let t0 = std::time::Instant::now();
        let got = match piece {
            Some(p) => {
                fed += p.len();
                st.push(p)?
            }
            None => st.finish()?,
        };
        let dt = t0.elapsed().as_secs_f64();
        out.compute_s += dt;
        let at = fed as f64 / rate + dt;
        for e in got {
            on_digit(e, at);
            out.emitted.push(e);
            out.out_s.push(at);
        }
    }
    Ok(out)
}
