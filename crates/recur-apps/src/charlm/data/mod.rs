//! Text corpora for character-level language models: reading and checking a UTF-8 file, the
//! vocabulary (sorted Unicode scalar values), the train/validation split, and the B parallel
//! streams x T steps batches that truncated BPTT walks through.
//!
//! Not here: tokenisers other than characters, shuffling (streams are read in order so that the
//! hidden state can be carried from one batch to the next), and anything that prints.

mod streams;
mod vocab;

pub use streams::Streams;
pub use vocab::Vocab;

use recur::{Error, Result};
use std::path::Path;

/// Reads a text file and checks that it is non-empty UTF-8 without NUL bytes.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    text_from_bytes(path, bytes)
}

/// The checks of [`read_text`] on bytes already read (`path` only names them in errors).
pub fn text_from_bytes(path: &Path, bytes: Vec<u8>) -> Result<String> {
    if bytes.is_empty() {
        return Err(Error::data(format!("'{}' is empty", path.display())));
    }
    if let Some(offset) = bytes.iter().position(|&b| b == 0) {
        return Err(Error::data(format!(
            "'{}' looks binary, not text (NUL byte at offset {offset})",
            path.display()
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        Error::data(format!(
            "'{}' is not valid UTF-8 (bad byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Splits token ids into the first `1 - val_frac` (training) and the last `val_frac`
/// (validation), the validation part rounded to the nearest id.
pub fn split(ids: &[u32], val_frac: f64) -> (&[u32], &[u32]) {
    assert!(
        (0.0..1.0).contains(&val_frac),
        "val_frac must be in [0, 1), got {val_frac}"
    );
    let n_val = (ids.len() as f64 * val_frac).round() as usize;
    ids.split_at(ids.len() - n_val.min(ids.len()))
}

/// A 64-bit FNV-1a hash of token ids: a checkpoint records it so that a resumed run can tell
/// that it is reading the same corpus.
pub fn fingerprint(ids: &[u32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &id in ids {
        for b in id.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}
