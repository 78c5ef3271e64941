//! The one error type of the public API. Every variant displays as one line that names the
//! problem (the file, tensor, field, value or size at fault), fit for `recur: error: ...`. It
//! depends on nothing else of recur's.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a call into recur could not do what was asked.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A configuration, argument or shape that is out of range or does not fit; the message
    /// names it and the value given.
    Invalid(String),
    /// Input data that cannot be used (a corpus, a recording, a batch); the message names it.
    Data(String),
    /// A file that could not be read or written.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A checkpoint that is malformed or does not fit the model.
    Checkpoint(CheckpointError),
    /// A plan (a model, a workspace, a batch) that needs more memory than this machine has:
    /// `what` needs `bytes`, `available` is what could be had (when known).
    OutOfMemory {
        what: String,
        bytes: u128,
        available: Option<u64>,
    },
    /// A device (a GPU, its driver or libraries) failed; the message names the call.
    Device(String),
}

/// `std::result::Result` with recur's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Invalid`] from anything that displays.
    pub fn invalid(msg: impl fmt::Display) -> Self {
        Error::Invalid(msg.to_string())
    }

    /// An [`Error::Data`] from anything that displays.
    pub fn data(msg: impl fmt::Display) -> Self {
        Error::Data(msg.to_string())
    }

    /// An [`Error::Device`] from anything that displays.
    pub fn device(msg: impl fmt::Display) -> Self {
        Error::Device(msg.to_string())
    }
}

/// An I/O error in a few lower-case words, without the OS's error number: "no such file",
/// "permission denied", "is a directory".
pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => {
            let s = e.to_string();
            s.split(" (os error").next().unwrap_or(&s).to_lowercase()
        }
    }
}

/// Bytes in a short human form: 1536 -> "1.5 KiB".
pub fn human_bytes(bytes: u128) -> String {
    const UNITS: [&str; 7] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid(s) | Error::Data(s) | Error::Device(s) => write!(f, "{s}"),
            Error::Io { path, source } => write!(f, "'{}': {}", path.display(), io_reason(source)),
            Error::Checkpoint(e) => write!(f, "{e}"),
            Error::OutOfMemory {
                what,
                bytes,
                available,
            } => {
                write!(f, "{what} needs {}", human_bytes(*bytes))?;
                match available {
                    Some(a) => write!(
                        f,
                        ", more than the {} this machine has",
                        human_bytes(*a as u128)
                    ),
                    None => write!(f, ", more than can be allocated"),
                }
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            // a checkpoint error displays in full already: as a source too, `{:#}` would
            // print it twice
            _ => None,
        }
    }
}

/// Why a checkpoint could not be saved or loaded. Displays as one line naming the file and the
/// tensor, field or value at fault.
#[derive(Debug)]
pub struct CheckpointError {
    path: PathBuf,
    what: String,
}

impl CheckpointError {
    pub(crate) fn new(path: &Path, what: impl Into<String>) -> Self {
        CheckpointError {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }

    /// The file concerned.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The problem, without the file name.
    pub fn what(&self) -> &str {
        &self.what
    }
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "checkpoint {}: {}", self.path.display(), self.what)
    }
}

impl std::error::Error for CheckpointError {}

impl From<CheckpointError> for Error {
    fn from(e: CheckpointError) -> Self {
        Error::Checkpoint(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_name_the_size() {
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12), "12 bytes");
        let e = Error::OutOfMemory {
            what: "the model's parameters".into(),
            bytes: 3 << 40,
            available: Some(24 << 30),
        };
        assert_eq!(
            e.to_string(),
            "the model's parameters needs 3.0 TiB, more than the 24.0 GiB this machine has"
        );
    }
}
