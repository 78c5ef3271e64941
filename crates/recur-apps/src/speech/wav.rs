//! Reading one recording: a mono PCM WAV file at the expected sample rate, as samples in [-1, 1).
//!
//! Uses the `hound` crate for the RIFF/WAVE parsing. This file checks what recur needs and turns
//! every problem into one message naming the file; it does not resample (a wrong sample rate is an
//! error) and does not mix channels down (more than one channel is an error).

use recur::error::{Error, Result};
use std::path::Path;

/// Below this peak amplitude (full scale = 1.0) a recording counts as silent: -60 dBFS, about 33
/// steps of a 16-bit sample. The quietest file of the Free Spoken Digit Dataset peaks at 0.0105.
pub const SILENCE_PEAK: f32 = 1e-3;

/// Reads `path` as mono integer PCM (8 to 32 bits) sampled at `sample_rate` Hz and returns the
/// samples scaled to [-1, 1). Errors (each naming the file): unreadable or malformed file,
/// floating-point or other non-PCM data, more than one channel, another sample rate, no samples,
/// or a silent recording (peak below [`SILENCE_PEAK`]).
pub fn read_wav(path: &Path, sample_rate: u32) -> Result<Vec<f32>> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode(path, std::io::BufReader::new(file), sample_rate)
}

/// [`read_wav`] of a file's bytes already in memory; `path` only names it in errors.
pub fn parse_wav(path: &Path, bytes: &[u8], sample_rate: u32) -> Result<Vec<f32>> {
    decode(path, std::io::Cursor::new(bytes), sample_rate)
}

fn decode<R: std::io::Read>(path: &Path, from: R, sample_rate: u32) -> Result<Vec<f32>> {
    let shown = path.display();
    let mut reader = hound::WavReader::new(from).map_err(|e| match e {
        hound::Error::IoError(source) => Error::Io {
            path: path.to_path_buf(),
            source,
        },
        hound::Error::Unsupported => Error::data(format!(
            "{shown}: unsupported WAV encoding (expected integer PCM)"
        )),
        other => Error::data(format!("{shown}: not a valid WAV file ({other})")),
    })?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int {
        return Err(Error::data(format!(
            "{shown}: samples are floating point; expected integer PCM"
        )));
    }
    if spec.channels != 1 {
        return Err(Error::data(format!(
            "{shown}: {} channels; expected mono",
            spec.channels
        )));
    }
    if spec.sample_rate != sample_rate {
        return Err(Error::data(format!(
            "{shown}: sample rate {} Hz; expected {sample_rate} Hz (resample the file first)",
            spec.sample_rate
        )));
    }
    // hound reads integer samples of up to 32 bits; a header may claim anything (found by the
    // wav fuzz target: 2048 bits per sample overflowed the scale's shift)
    if !(1..=32).contains(&spec.bits_per_sample) {
        return Err(Error::data(format!(
            "{shown}: {} bits per sample; expected 8 to 32",
            spec.bits_per_sample
        )));
    }
    let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
    let samples = reader
        .samples::<i32>()
        .map(|s| s.map(|v| v as f32 * scale))
        .collect::<Result<Vec<f32>, _>>()
        .map_err(|e| Error::data(format!("{shown}: corrupt sample data ({e})")))?;
    if samples.is_empty() {
        return Err(Error::data(format!(
            "{shown}: no samples (empty recording)"
        )));
    }
    let peak = samples.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
    if peak < SILENCE_PEAK {
        return Err(Error::data(format!(
            "{shown}: silent recording (peak amplitude {peak:.2e}, below {SILENCE_PEAK:e})"
        )));
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header the wav fuzz target found: PCM, mono, 8 kHz, 2048 bits per sample, no data.
    const FUZZ_2048_BITS: &[u8] = b"RIFF\x9c\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x40\x1f\0\0\0\x40\x1f\0\0\x01\0\x08data\0\0\0\0";

    #[test]
    fn an_impossible_sample_width_is_an_error_not_a_panic() {
        let e = parse_wav(Path::new("x.wav"), FUZZ_2048_BITS, 8000).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("x.wav: 2048 bits per sample; expected 8 to 32"),
            "{s}"
        );
    }
}
