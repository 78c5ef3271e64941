//! A directory of spoken-digit recordings named `{digit}_{speaker}_{take}.wav` (the Free Spoken
//! Digit Dataset's convention), and the splits recur uses: the official one (takes 0-4 test,
//! 5-49 train) and one speaker held out.
//!
//! This file lists and names files; it does not read audio (see `wav.rs`).

use recur::error::{Error, Result};
use std::path::{Path, PathBuf};

/// One recording, known by its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Utterance {
    pub path: PathBuf,
    /// The spoken digit, 0..=9: the class label.
    pub digit: u8,
    pub speaker: String,
    /// The take number (`index` in FSDD's README).
    pub take: u32,
}

/// The official FSDD split: takes 0..=4 are the test set, the rest the training set.
pub const OFFICIAL_TEST_TAKES: u32 = 5;

/// Parses a file name `{digit}_{speaker}_{take}.wav`: digit 0-9, a speaker name of letters,
/// digits or '-', a non-negative take number.
pub fn parse_name(name: &str) -> Result<(u8, String, u32)> {
    let bad = |why: &str| {
        Error::data(format!(
            "file name '{name}' does not parse as {{digit}}_{{speaker}}_{{take}}.wav: {why}"
        ))
    };
    let stem = name
        .strip_suffix(".wav")
        .ok_or_else(|| bad("no .wav extension"))?;
    let parts: Vec<&str> = stem.split('_').collect();
    if parts.len() != 3 {
        return Err(bad("expected three fields separated by '_'"));
    }
    let digit = match parts[0].as_bytes() {
        [c @ b'0'..=b'9'] => c - b'0',
        _ => return Err(bad("the digit must be one of 0-9")),
    };
    let speaker = parts[1];
    if speaker.is_empty()
        || !speaker
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(bad("the speaker must be letters, digits or '-'"));
    }
    let take = parts[2]
        .parse::<u32>()
        .ok()
        .filter(|_| parts[2].chars().all(|c| c.is_ascii_digit()))
        .ok_or_else(|| bad("the take must be a non-negative integer"))?;
    Ok((digit, speaker.to_string(), take))
}

/// Lists the `.wav` files of `dir` (other files are ignored), sorted by name. Errors: the
/// directory cannot be read, a `.wav` name does not parse, or there is no `.wav` file at all.
pub fn list_dir(dir: &Path) -> Result<Vec<Utterance>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::data(format!("cannot read directory {}: {e}", dir.display())))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| Error::data(format!("cannot read directory {}: {e}", dir.display())))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.to_ascii_lowercase().ends_with(".wav") {
            continue;
        }
        let (digit, speaker, take) =
            parse_name(name).map_err(|e| Error::data(format!("in {}: {e}", dir.display())))?;
        out.push(Utterance {
            path: entry.path(),
            digit,
            speaker,
            take,
        });
    }
    if out.is_empty() {
        return Err(Error::data(format!("no .wav files in {}", dir.display())));
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Which recordings a command works on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Split {
    /// Every recording.
    All,
    /// Official training split: takes >= 5.
    Train,
    /// Official test split: takes 0..=4.
    Test,
    /// Every recording of one speaker.
    Speaker(String),
    /// Every recording except those of one speaker.
    AllBut(String),
}

impl Split {
    pub fn contains(&self, u: &Utterance) -> bool {
        match self {
            Split::All => true,
            Split::Train => u.take >= OFFICIAL_TEST_TAKES,
            Split::Test => u.take < OFFICIAL_TEST_TAKES,
            Split::Speaker(s) => &u.speaker == s,
            Split::AllBut(s) => &u.speaker != s,
        }
    }

    /// A short description for messages and reports.
    pub fn describe(&self) -> String {
        match self {
            Split::All => "all recordings".into(),
            Split::Train => "official training split (takes 5+)".into(),
            Split::Test => "official test split (takes 0-4)".into(),
            Split::Speaker(s) => format!("speaker {s}"),
            Split::AllBut(s) => format!("all speakers but {s}"),
        }
    }

    /// The recordings of `all` in this split; an error when there are none.
    pub fn select(&self, all: &[Utterance]) -> Result<Vec<Utterance>> {
        let v: Vec<Utterance> = all.iter().filter(|u| self.contains(u)).cloned().collect();
        if v.is_empty() {
            return Err(Error::data(format!(
                "no recordings in the {}",
                self.describe()
            )));
        }
        Ok(v)
    }
}
