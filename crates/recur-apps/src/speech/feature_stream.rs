//! Speech features as the audio arrives: samples go in by chunks of any size, and each frame of
//! features comes out as soon as no later sample can change it, equal bit for bit to that frame
//! of [`Extractor::compute`] over the whole recording.
//!
//! When a frame is decided: its base features (log-mel or MFCC) need the samples up to
//! `t * hop + n_fft / 2` (its centred window); its deltas need the base features `W` frames
//! later, and delta-deltas the deltas `W` frames later again. So with the defaults (10 ms hop,
//! n_fft 256 = 32 ms, W = 2, two delta orders) frame t comes out once the audio reaches 16 ms +
//! 40 ms past its centre ([`FeatureStream::lookahead_samples`]). At the end ([`FeatureStream::finish`])
//! the remaining frames come out as the whole recording's do: zeros after the last sample, the
//! last frame repeated for the deltas. Memory stays bounded: samples and frames no later frame
//! needs are dropped.
//!
//! Per-utterance mean normalisation (`cmn`) needs the whole recording and is refused.

use super::features::{delta_frame, Extractor, Features, FrameScratch};
use recur::error::{Error, Result};

/// Drop what is no longer needed once this many samples or frames have piled up before it.
const TRIM_AFTER: usize = 1024;

/// Features of a recording fed in chunks.
pub struct FeatureStream {
    ex: Extractor,
    scratch: FrameScratch,
    /// Samples from `first_sample` on.
    samples: Vec<f32>,
    first_sample: usize,
    /// Samples received so far.
    received: usize,
    /// levels[l]: the frames of level l (0 base features, l deltas of order l) from
    /// `first[l]` on, each base_dim long.
    levels: Vec<Vec<f64>>,
    first: Vec<usize>,
    /// Frames of each level computed so far (all final).
    done: Vec<usize>,
    /// Frames handed out so far.
    emitted: usize,
    finished: bool,
}

impl FeatureStream {
    /// A stream with `ex`'s settings; an error for per-utterance mean normalisation.
    pub fn new(ex: Extractor) -> Result<Self> {
        if ex.cfg.cmn {
            return Err(Error::invalid(
                "per-utterance mean normalisation (cmn) needs the whole recording: it cannot be \
                 streamed",
            ));
        }
        let levels = ex.cfg.deltas + 1;
        Ok(FeatureStream {
            scratch: ex.scratch(),
            ex,
            samples: Vec::new(),
            first_sample: 0,
            received: 0,
            levels: vec![Vec::new(); levels],
            first: vec![0; levels],
            done: vec![0; levels],
            emitted: 0,
            finished: false,
        })
    }

    /// Features per frame.
    pub fn dim(&self) -> usize {
        self.ex.cfg.dim()
    }

    /// The settings.
    pub fn extractor(&self) -> &Extractor {
        &self.ex
    }

    /// How far past a frame's centre the audio must reach before the frame comes out, in
    /// samples (before the end of the recording).
    pub fn lookahead_samples(&self) -> usize {
        let c = &self.ex.cfg;
        c.n_fft / 2 + c.deltas * c.delta_width * c.hop_length
    }

    /// Frames handed out so far.
    pub fn frames_out(&self) -> usize {
        self.emitted
    }

    /// Samples received so far.
    pub fn samples_in(&self) -> usize {
        self.received
    }

    /// Feeds `x`; returns the frames it decided (possibly none). An error after [`Self::finish`].
    pub fn push(&mut self, x: &[f32]) -> Result<Features> {
        if self.finished {
            return Err(Error::invalid("the feature stream has been finished"));
        }
        self.samples.extend_from_slice(x);
        self.received += x.len();
        let (hop, half) = (self.ex.cfg.hop_length, self.ex.cfg.n_fft / 2);
        while self.done[0] * hop + half <= self.received {
            self.add_base_frame();
        }
        self.advance(None);
        Ok(self.take())
    }

    /// Ends the recording: returns the frames left. The stream then has exactly the frames of
    /// `compute` over everything pushed.
    pub fn finish(&mut self) -> Result<Features> {
        if self.finished {
            return Err(Error::invalid("the feature stream has been finished"));
        }
        self.finished = true;
        let total = self.ex.cfg.frames(self.received);
        while self.done[0] < total {
            self.add_base_frame();
        }
        self.advance(Some(total));
        Ok(self.take())
    }

    /// Computes base frame `done[0]` from the samples held (zeros past the last received).
    fn add_base_frame(&mut self) {
        let bd = self.ex.cfg.base_dim();
        let t = self.done[0];
        let (samples, first) = (&self.samples, self.first_sample as isize);
        let sample = |j: isize| {
            let i = j - first;
            if j >= 0 && i >= 0 && (i as usize) < samples.len() {
                samples[i as usize] as f64
            } else {
                0.0
            }
        };
        let base = &mut self.levels[0];
        let at = base.len();
        base.resize(at + bd, 0.0);
        self.ex
            .base_frame(&sample, t, &mut self.scratch, &mut base[at..at + bd]);
        self.done[0] += 1;
    }

    /// Computes every delta frame now decided: all of them once `total` (the recording's frame
    /// count) is known, else those whose window lies inside the frames below.
    fn advance(&mut self, total: Option<usize>) {
        let (bd, w) = (self.ex.cfg.base_dim(), self.ex.cfg.delta_width);
        for l in 1..self.levels.len() {
            let below = self.done[l - 1];
            let target = match total {
                Some(_) => below,
                None => below.saturating_sub(w),
            };
            // frames past the last are taken as the last: only reached once `total` is known
            let last = total.map_or(usize::MAX / 2, |t| t.max(1) - 1);
            let (lower, upper) = self.levels.split_at_mut(l);
            let (src, first_src) = (&lower[l - 1], self.first[l - 1]);
            let row = |u: usize| &src[(u - first_src) * bd..(u - first_src + 1) * bd];
            for t in self.done[l]..target {
                let dst = &mut upper[0];
                let at = dst.len();
                dst.resize(at + bd, 0.0);
                delta_frame(&row, t, last, w, &mut dst[at..at + bd]);
            }
            self.done[l] = self.done[l].max(target);
        }
    }

    /// Hands out the frames decided at every level, and drops what is no longer needed.
    fn take(&mut self) -> Features {
        let (bd, dim) = (self.ex.cfg.base_dim(), self.dim());
        let top = *self.done.last().expect("at least the base level");
        let n = top - self.emitted;
        let mut data = vec![0.0f32; n * dim];
        for (i, t) in (self.emitted..top).enumerate() {
            for (l, level) in self.levels.iter().enumerate() {
                let from = (t - self.first[l]) * bd;
                for (o, v) in data[i * dim + l * bd..i * dim + (l + 1) * bd]
                    .iter_mut()
                    .zip(&level[from..from + bd])
                {
                    *o = *v as f32;
                }
            }
        }
        self.emitted = top;
        self.trim();
        Features { t: n, dim, data }
    }

    /// Drops samples before the next base frame's window, and frames that neither the output
    /// nor the next level's windows will read again.
    fn trim(&mut self) {
        let (bd, w) = (self.ex.cfg.base_dim(), self.ex.cfg.delta_width);
        let (hop, half) = (self.ex.cfg.hop_length, self.ex.cfg.n_fft / 2);
        let need = (self.done[0] * hop).saturating_sub(half);
        if need - self.first_sample >= TRIM_AFTER.max(half) {
            self.samples.drain(..need - self.first_sample);
            self.first_sample = need;
        }
        let levels = self.levels.len();
        for l in 0..levels {
            let mut keep = self.emitted;
            if l + 1 < levels {
                keep = keep.min(self.done[l + 1].saturating_sub(w));
            }
            if keep > self.first[l] && keep - self.first[l] >= TRIM_AFTER {
                self.levels[l].drain(..(keep - self.first[l]) * bd);
                self.first[l] = keep;
            }
        }
    }
}
