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

use std::fmt;
use std::path::{Path, PathBuf};

/// What can be wrong with a corpus. Each variant's message is one line naming the problem.
#[derive(Debug, Clone, PartialEq)]
pub enum DataError {
    /// The file could not be read (missing, a directory, no permission).
    Read { path: PathBuf, reason: String },
    /// The file has no bytes.
    Empty { path: PathBuf },
    /// The file holds a NUL byte: binary data, not text.
    Binary { path: PathBuf, offset: usize },
    /// The file is not valid UTF-8.
    NotUtf8 { path: PathBuf, offset: usize },
    /// Characters that the vocabulary does not have.
    UnknownChars { chars: Vec<char> },
    /// Too little text for what was asked.
    TooShort { what: String },
    /// A vocabulary that is not sorted and free of duplicates.
    BadVocab { reason: String },
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::Read { path, reason } => {
                write!(f, "cannot read '{}': {reason}", path.display())
            }
            DataError::Empty { path } => write!(f, "'{}' is empty", path.display()),
            DataError::Binary { path, offset } => write!(
                f,
                "'{}' looks binary, not text (NUL byte at offset {offset})",
                path.display()
            ),
            DataError::NotUtf8 { path, offset } => write!(
                f,
                "'{}' is not valid UTF-8 (bad byte at offset {offset})",
                path.display()
            ),
            DataError::UnknownChars { chars } => {
                let list: Vec<String> = chars.iter().map(|c| format!("{c:?}")).collect();
                write!(
                    f,
                    "{} character(s) not in the model's vocabulary: {}",
                    chars.len(),
                    list.join(", ")
                )
            }
            DataError::TooShort { what } => write!(f, "{what}"),
            DataError::BadVocab { reason } => write!(f, "bad vocabulary: {reason}"),
        }
    }
}

impl std::error::Error for DataError {}

/// Reads a text file and checks that it is non-empty UTF-8 without NUL bytes.
pub fn read_text(path: &Path) -> Result<String, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::Read {
        path: path.to_path_buf(),
        reason: io_reason(&e),
    })?;
    text_from_bytes(path, bytes)
}

/// The checks of [`read_text`] on bytes already read (`path` only names them in errors).
pub fn text_from_bytes(path: &Path, bytes: Vec<u8>) -> Result<String, DataError> {
    if bytes.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    if let Some(offset) = bytes.iter().position(|&b| b == 0) {
        return Err(DataError::Binary {
            path: path.to_path_buf(),
            offset,
        });
    }
    String::from_utf8(bytes).map_err(|e| DataError::NotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => {
            // Linux reports reading a directory as "Is a directory (os error 21)": keep the words.
            let s = e.to_string();
            s.split(" (os error").next().unwrap_or(&s).to_lowercase()
        }
    }
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
