//! Speech features: log-mel filterbank energies and MFCCs, with delta coefficients.
//!
//! The pipeline, for a signal x of N samples at `sample_rate` Hz (defaults for FSDD's 8 kHz):
//! 1. framing, centred: frame t covers samples `t*hop - n_fft/2 .. t*hop + n_fft/2`, zeros
//!    outside the signal, so there are `1 + N / hop` frames (hop 80 = 10 ms, n_fft 256);
//! 2. a periodic Hann window of `win_length` samples (200 = 25 ms), centred in the n_fft frame;
//! 3. the power spectrum |FFT|^2 of each frame, bins 0..=n_fft/2 (realfft);
//! 4. `n_mels` (40) triangular filters spaced evenly on the HTK mel scale
//!    `mel = 2595 log10(1 + f/700)` between `fmin` (0 Hz) and `fmax` (4000 Hz), each scaled to unit
//!    area ("Slaney" normalisation: weight 2 / (f_right - f_left));
//! 5. log-mel = ln(max(energy, LOG_FLOOR));
//! 6. MFCC: the orthonormal DCT-II of the log-mel vector, first `n_mfcc` (13) coefficients, no
//!    liftering;
//! 7. deltas: the regression `d_t = sum_{n=1..W} n (c_{t+n} - c_{t-n}) / (2 sum_{n=1..W} n^2)`
//!    with W = `delta_width` (2) and the first/last frame repeated at the edges; delta-deltas are
//!    the deltas of the deltas;
//! 8. optionally (`cmn`), before the deltas, each base feature minus its mean over the utterance.
//!
//! These are the conventions of librosa's `stft(center=True, pad_mode="constant")`,
//! `filters.mel(htk=True, norm="slaney")`, `feature.mfcc(dct_type=2, norm="ortho")` and
//! `feature.delta(mode="nearest")`, which the tests check against
//! (crates/recur/tests/fixtures/gen_speech_features.py). Arithmetic is in f64; results are f32.
//! Not here: pre-emphasis, dithering, liftering, energy terms, resampling.

use realfft::{RealFftPlanner, RealToComplex};
use recur::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Floor under the filterbank energies before the logarithm (ln(1e-10) = -23.03).
pub const LOG_FLOOR: f64 = 1e-10;

/// Which base features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// `n_mels` log filterbank energies per frame.
    LogMel,
    /// `n_mfcc` cepstral coefficients per frame.
    Mfcc,
}

/// Feature extraction settings; the defaults suit 8 kHz speech.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureConfig {
    /// Expected sample rate in Hz. Default 8000.
    pub sample_rate: u32,
    /// Window length in samples. Default 200 (25 ms).
    pub win_length: usize,
    /// Hop between frames in samples. Default 80 (10 ms).
    pub hop_length: usize,
    /// FFT size, at least `win_length`. Default 256.
    pub n_fft: usize,
    /// Mel filters. Default 40.
    pub n_mels: usize,
    /// Lowest filter edge in Hz. Default 0.
    pub fmin: f64,
    /// Highest filter edge in Hz, at most sample_rate / 2. Default 4000.
    pub fmax: f64,
    /// Base features. Default MFCC.
    pub kind: FeatureKind,
    /// Cepstral coefficients kept (MFCC only), at most `n_mels`. Default 13.
    pub n_mfcc: usize,
    /// Delta orders appended: 0 (none), 1 (deltas) or 2 (deltas and delta-deltas). Default 2.
    pub deltas: usize,
    /// W, the half-width of the delta regression window (2W+1 frames). Default 2.
    pub delta_width: usize,
    /// Per-utterance mean normalisation: subtract each base feature's mean over the utterance's
    /// frames before the deltas (cepstral mean normalisation for MFCCs). It removes a fixed
    /// channel or speaker colouring. Default false.
    #[serde(default)]
    pub cmn: bool,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            sample_rate: 8000,
            win_length: 200,
            hop_length: 80,
            n_fft: 256,
            n_mels: 40,
            fmin: 0.0,
            fmax: 4000.0,
            kind: FeatureKind::Mfcc,
            n_mfcc: 13,
            deltas: 2,
            delta_width: 2,
            cmn: false,
        }
    }
}

impl FeatureConfig {
    /// Checks the settings; the error names the offending field.
    pub fn validate(&self) -> Result<()> {
        if self.sample_rate == 0 {
            return Err(Error::invalid("sample_rate must be positive"));
        }
        if self.win_length == 0 || self.hop_length == 0 {
            return Err(Error::invalid(
                "win_length and hop_length must be at least 1",
            ));
        }
        if self.n_fft < self.win_length {
            return Err(Error::invalid(format!(
                "n_fft ({}) must be at least win_length ({})",
                self.n_fft, self.win_length
            )));
        }
        if self.n_mels == 0 {
            return Err(Error::invalid("n_mels must be at least 1"));
        }
        let nyquist = self.sample_rate as f64 / 2.0;
        if !(self.fmin >= 0.0 && self.fmin < self.fmax && self.fmax <= nyquist) {
            return Err(Error::invalid(format!(
                "need 0 <= fmin < fmax <= {nyquist} Hz, got fmin {} and fmax {}",
                self.fmin, self.fmax
            )));
        }
        if self.kind == FeatureKind::Mfcc && !(1..=self.n_mels).contains(&self.n_mfcc) {
            return Err(Error::invalid(format!(
                "n_mfcc must be in 1..={} (n_mels), got {}",
                self.n_mels, self.n_mfcc
            )));
        }
        if self.deltas > 2 {
            return Err(Error::invalid(format!(
                "deltas must be 0, 1 or 2, got {}",
                self.deltas
            )));
        }
        if self.deltas > 0 && self.delta_width == 0 {
            return Err(Error::invalid("delta_width must be at least 1"));
        }
        Ok(())
    }

    /// Features per frame before deltas.
    pub fn base_dim(&self) -> usize {
        match self.kind {
            FeatureKind::LogMel => self.n_mels,
            FeatureKind::Mfcc => self.n_mfcc,
        }
    }

    /// Features per frame: the base features, then each delta order in turn.
    pub fn dim(&self) -> usize {
        self.base_dim() * (1 + self.deltas)
    }

    /// Frames produced for `n` samples.
    pub fn frames(&self, n: usize) -> usize {
        1 + n / self.hop_length
    }
}

/// Features of one recording: `data` is (T, dim), row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    pub t: usize,
    pub dim: usize,
    pub data: Vec<f32>,
}

/// HTK mel scale.
pub fn hz_to_mel(f: f64) -> f64 {
    2595.0 * (1.0 + f / 700.0).log10()
}

/// Inverse of [`hz_to_mel`].
pub fn mel_to_hz(m: f64) -> f64 {
    700.0 * (10f64.powf(m / 2595.0) - 1.0)
}

/// The filterbank: (n_mels, n_fft/2 + 1), triangles on the HTK mel scale, unit area.
pub fn mel_filterbank(cfg: &FeatureConfig) -> Vec<f64> {
    mel_filterbank_warped(cfg, 1.0)
}

/// The filterbank read on a frequency axis stretched by `warp`: filter weights are taken at
/// `warp * f` for the FFT bin at frequency f. A warp above 1 moves spectral content to higher
/// filters, as a shorter vocal tract would (vocal tract length perturbation, Jaitly and Hinton
/// 2013, here as a plain linear warp). `warp = 1` is [`mel_filterbank`].
pub fn mel_filterbank_warped(cfg: &FeatureConfig, warp: f64) -> Vec<f64> {
    let nb = cfg.n_fft / 2 + 1;
    let m = cfg.n_mels;
    let (lo, hi) = (hz_to_mel(cfg.fmin), hz_to_mel(cfg.fmax));
    // edges: n_mels + 2 frequencies, evenly spaced in mel
    let edges: Vec<f64> = (0..m + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (m + 1) as f64))
        .collect();
    let mut fb = vec![0.0; m * nb];
    for i in 0..m {
        let (left, centre, right) = (edges[i], edges[i + 1], edges[i + 2]);
        let area = 2.0 / (right - left);
        for k in 0..nb {
            let f = warp * k as f64 * cfg.sample_rate as f64 / cfg.n_fft as f64;
            let rise = (f - left) / (centre - left);
            let fall = (right - f) / (right - centre);
            fb[i * nb + k] = rise.min(fall).max(0.0) * area;
        }
    }
    fb
}

/// `n` warp factors for augmentation, spread evenly over [1 - max, 1 + max] and leaving out 1
/// itself: for even n they are symmetric (n = 4, max = 0.1: 0.9, 0.95, 1.05, 1.1); for odd n
/// the grid is that of n + 1 points without its largest.
pub fn warp_factors(n: usize, max: f64) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![1.0 + max],
        _ => {
            // n points on [-1, 1] without 0: -1, .., -1/h, 1/h, .., 1 for even n
            let mut v: Vec<f64> = (0..=n)
                .map(|i| -1.0 + 2.0 * i as f64 / n as f64)
                .filter(|x| x.abs() > 1e-9)
                .collect();
            v.truncate(n);
            v.into_iter().map(|x| 1.0 + max * x).collect()
        }
    }
}

/// Computes features; built once per configuration (it holds the FFT plan and the filterbank).
#[derive(Clone)]
pub struct Extractor {
    pub cfg: FeatureConfig,
    fft: Arc<dyn RealToComplex<f64>>,
    // window: (n_fft), the Hann window centred, zeros around it
    window: Vec<f64>,
    // fb: (n_mels, n_fft/2 + 1)
    fb: Vec<f64>,
    // dct: (n_mfcc, n_mels), orthonormal DCT-II rows
    dct: Vec<f64>,
}

impl Extractor {
    pub fn new(cfg: FeatureConfig) -> Result<Self> {
        cfg.validate()?;
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(cfg.n_fft);
        let (w, nf) = (cfg.win_length, cfg.n_fft);
        let lpad = (nf - w) / 2;
        let mut window = vec![0.0; nf];
        for n in 0..w {
            // periodic Hann: 0.5 - 0.5 cos(2 pi n / W)
            window[lpad + n] = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / w as f64).cos();
        }
        let fb = mel_filterbank(&cfg);
        let (nm, nc) = (cfg.n_mels, cfg.n_mfcc);
        let mut dct = vec![0.0; nc * nm];
        for k in 0..nc {
            let s = if k == 0 {
                (1.0 / nm as f64).sqrt()
            } else {
                (2.0 / nm as f64).sqrt()
            };
            for m in 0..nm {
                let arg = std::f64::consts::PI * k as f64 * (2 * m + 1) as f64 / (2 * nm) as f64;
                dct[k * nm + m] = s * arg.cos();
            }
        }
        Ok(Extractor {
            cfg,
            fft,
            window,
            fb,
            dct,
        })
    }

    /// The same extractor with its filterbank warped by `warp` (see [`mel_filterbank_warped`]):
    /// for data augmentation only.
    pub fn with_warp(&self, warp: f64) -> Self {
        Extractor {
            fb: mel_filterbank_warped(&self.cfg, warp),
            ..self.clone()
        }
    }

    /// The power spectrogram: (T, n_fft/2 + 1).
    pub fn power_spectrogram(&self, x: &[f32]) -> Vec<f64> {
        let nb = self.cfg.n_fft / 2 + 1;
        let t_len = self.cfg.frames(x.len());
        let mut s = self.scratch();
        let mut out = vec![0.0; t_len * nb];
        for t in 0..t_len {
            self.frame_power(&|j| sample_at(x, j), t, &mut s);
            out[t * nb..(t + 1) * nb].copy_from_slice(&s.pow);
        }
        out
    }

    /// Buffers for one frame's transform.
    pub(super) fn scratch(&self) -> FrameScratch {
        FrameScratch {
            frame: self.fft.make_input_vec(),
            spec: self.fft.make_output_vec(),
            fft: self.fft.make_scratch_vec(),
            pow: vec![0.0; self.cfg.n_fft / 2 + 1],
            logmel: vec![0.0; self.cfg.n_mels],
        }
    }

    /// Frame t's power spectrum into `s.pow`; `sample(j)` is the signal's sample j (zero before
    /// the first and after the last).
    fn frame_power(&self, sample: &dyn Fn(isize) -> f64, t: usize, s: &mut FrameScratch) {
        let (nf, hop) = (self.cfg.n_fft, self.cfg.hop_length);
        for (k, v) in s.frame.iter_mut().enumerate() {
            // sample index of position k in frame t (centred framing)
            let j = (t * hop + k) as isize - (nf / 2) as isize;
            *v = sample(j) * self.window[k];
        }
        self.fft
            .process_with_scratch(&mut s.frame, &mut s.spec, &mut s.fft)
            .expect("buffer sizes come from the plan");
        for (o, c) in s.pow.iter_mut().zip(&s.spec) {
            *o = c.norm_sqr();
        }
    }

    /// Frame t's base features (log-mel or MFCC, before mean normalisation and deltas) into
    /// `out` (base_dim); `sample` as for [`Self::frame_power`]. The whole-recording features
    /// and the streamed ones (`feature_stream.rs`) are both made of this.
    pub(super) fn base_frame(
        &self,
        sample: &dyn Fn(isize) -> f64,
        t: usize,
        s: &mut FrameScratch,
        out: &mut [f64],
    ) {
        self.frame_power(sample, t, s);
        let nb = self.cfg.n_fft / 2 + 1;
        for (i, lm) in s.logmel.iter_mut().enumerate() {
            let e: f64 = self.fb[i * nb..(i + 1) * nb]
                .iter()
                .zip(&s.pow)
                .map(|(a, b)| a * b)
                .sum();
            *lm = e.max(LOG_FLOOR).ln();
        }
        match self.cfg.kind {
            FeatureKind::LogMel => out.copy_from_slice(&s.logmel),
            FeatureKind::Mfcc => {
                let nm = self.cfg.n_mels;
                for (k, o) in out.iter_mut().enumerate() {
                    *o = self.dct[k * nm..(k + 1) * nm]
                        .iter()
                        .zip(&s.logmel)
                        .map(|(a, b)| a * b)
                        .sum();
                }
            }
        }
    }

    /// The configured features of one recording: base features, then deltas.
    pub fn compute(&self, x: &[f32]) -> Features {
        let t_len = self.cfg.frames(x.len());
        let bd = self.cfg.base_dim();
        let dim = self.cfg.dim();
        let mut s = self.scratch();
        let mut base = vec![0.0; t_len * bd];
        for t in 0..t_len {
            self.base_frame(
                &|j| sample_at(x, j),
                t,
                &mut s,
                &mut base[t * bd..(t + 1) * bd],
            );
        }
        if self.cfg.cmn {
            subtract_mean(&mut base, t_len, bd);
        }
        let mut blocks = vec![base];
        for _ in 0..self.cfg.deltas {
            let prev = blocks.last().expect("base block");
            blocks.push(deltas(prev, t_len, bd, self.cfg.delta_width));
        }
        let mut data = vec![0.0f32; t_len * dim];
        for t in 0..t_len {
            for (j, blk) in blocks.iter().enumerate() {
                for f in 0..bd {
                    data[t * dim + j * bd + f] = blk[t * bd + f] as f32;
                }
            }
        }
        Features {
            t: t_len,
            dim,
            data,
        }
    }
}

/// Buffers for one frame: the FFT's input, output and scratch, the power spectrum, the log-mel
/// energies.
pub(super) struct FrameScratch {
    frame: Vec<f64>,
    spec: Vec<realfft::num_complex::Complex<f64>>,
    fft: Vec<realfft::num_complex::Complex<f64>>,
    pow: Vec<f64>,
    logmel: Vec<f64>,
}

/// Sample j of `x`, zero outside it.
fn sample_at(x: &[f32], j: isize) -> f64 {
    if j >= 0 && (j as usize) < x.len() {
        x[j as usize] as f64
    } else {
        0.0
    }
}

/// Subtracts from each of the `f` columns of `c` (T, F) its mean over the T rows.
pub fn subtract_mean(c: &mut [f64], t_len: usize, f: usize) {
    for k in 0..f {
        let mean = (0..t_len).map(|t| c[t * f + k]).sum::<f64>() / t_len as f64;
        for t in 0..t_len {
            c[t * f + k] -= mean;
        }
    }
}

/// Delta coefficients of `c` (T, F) over a window of 2W+1 frames, edges repeated:
/// `d_t = sum_{n=1..W} n (c_{t+n} - c_{t-n}) / (2 sum_{n=1..W} n^2)`.
pub fn deltas(c: &[f64], t_len: usize, f: usize, w: usize) -> Vec<f64> {
    let mut d = vec![0.0; t_len * f];
    for t in 0..t_len {
        delta_frame(
            &|u| &c[u * f..(u + 1) * f],
            t,
            t_len - 1,
            w,
            &mut d[t * f..(t + 1) * f],
        );
    }
    d
}

/// Frame t's deltas into `out` (zeroed here), `row(u)` being frame u's coefficients and `last`
/// the index of the last frame (frames past it are taken as it, those before 0 as frame 0).
pub(super) fn delta_frame<'a>(
    row: &dyn Fn(usize) -> &'a [f64],
    t: usize,
    last: usize,
    w: usize,
    out: &mut [f64],
) {
    let denom = 2.0 * (1..=w).map(|n| (n * n) as f64).sum::<f64>();
    let at = |t: isize| t.clamp(0, last as isize) as usize;
    out.fill(0.0);
    for n in 1..=w {
        let (fwd, bwd) = (
            row(at(t as isize + n as isize)),
            row(at(t as isize - n as isize)),
        );
        for (k, o) in out.iter_mut().enumerate() {
            *o += n as f64 * (fwd[k] - bwd[k]);
        }
    }
    for v in out.iter_mut() {
        *v /= denom;
    }
}
