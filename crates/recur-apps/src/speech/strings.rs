//! Connected digit strings built from single-digit recordings: each string is 1 to 7 digits of
//! one speaker, recordings joined with silences of random length, all drawn from a seed, so that
//! anyone with the same recordings rebuilds the same sets.
//!
//! The construction ([`build`]): the pool of recordings (one split of the directory: the official
//! training takes 5-49, the test takes 0-4, or one speaker held out) is sorted by file name and
//! grouped by speaker (speakers in name order). String i draws, from one random number generator
//! seeded with `seed` and used in this order: the speaker (uniform over the pool's speakers), the
//! number of digits (uniform in min..=max), then for each digit one recording of that speaker
//! (uniform over the speaker's recordings in the pool, with replacement), then the silences in
//! the order they are heard: before the first digit (`edge_ms` range), between each two digits
//! (`gap_ms` range), after the last (`edge_ms`), each uniform in whole milliseconds. A string therefore only ever holds
//! recordings of the pool it was built from: strings built from the training split contain no
//! test take.
//!
//! A run's three sets ([`StringSets`]): without a held-out speaker, training strings come from
//! takes 10-49, validation strings from takes 5-9 (both official training takes) and test
//! strings from the official test takes 0-4; with one (`holdout`), training strings come from
//! the other speakers' takes 0-4 and 10-49, validation strings from their takes 5-9, and test
//! strings from every recording of the held-out speaker. The training set is drawn with `seed`,
//! validation with `seed + 1`, test with `seed + 2`.
//!
//! Rendering ([`DigitString::render`]) reads the recordings and writes silence as zeros; it also
//! returns where each digit's recording starts and ends in the samples.

use super::dataset::Utterance;
use super::wav::read_wav;
use recur::error::{Error, Result};
use recur::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Takes 5-9 of the official training takes hold the validation strings' recordings.
pub const VAL_TAKES: std::ops::RangeInclusive<u32> = 5..=9;

/// How strings are drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct StringSpec {
    /// How many strings.
    pub count: usize,
    /// Digits per string: uniform in min_digits..=max_digits.
    pub min_digits: usize,
    pub max_digits: usize,
    /// Silence between two digits, in milliseconds: uniform in the range (inclusive).
    pub gap_ms: (u32, u32),
    /// Silence before the first digit and after the last.
    pub edge_ms: (u32, u32),
    pub seed: u64,
}

impl StringSpec {
    /// `count` strings of 1 to 7 digits, 50-300 ms between digits, 0-200 ms at the ends.
    pub fn new(count: usize, seed: u64) -> Self {
        StringSpec {
            count,
            min_digits: 1,
            max_digits: 7,
            gap_ms: (50, 300),
            edge_ms: (0, 200),
            seed,
        }
    }

    fn check(&self) -> Result<()> {
        if self.min_digits == 0 || self.min_digits > self.max_digits {
            return Err(Error::invalid(format!(
                "digits per string: need 1 <= min <= max, got {}..{}",
                self.min_digits, self.max_digits
            )));
        }
        if self.gap_ms.0 > self.gap_ms.1 || self.edge_ms.0 > self.edge_ms.1 {
            return Err(Error::invalid(format!(
                "silence ranges must run low to high, got gaps {:?} ms and edges {:?} ms",
                self.gap_ms, self.edge_ms
            )));
        }
        Ok(())
    }
}

/// One string: its speaker, its recordings in order, and the silences around them.
#[derive(Clone, Debug, PartialEq)]
pub struct DigitString {
    pub speaker: String,
    pub parts: Vec<Utterance>,
    /// Milliseconds of silence before each part, and after the last: parts.len() + 1 entries.
    pub silences_ms: Vec<u32>,
}

/// A rendered string: its samples and, per digit, the sample range of its recording.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    pub samples: Vec<f32>,
    pub spans: Vec<std::ops::Range<usize>>,
}

impl DigitString {
    /// The spoken digits, in order.
    pub fn digits(&self) -> Vec<u8> {
        self.parts.iter().map(|u| u.digit).collect()
    }

    /// The digits as text, e.g. "3141".
    pub fn text(&self) -> String {
        self.parts
            .iter()
            .map(|u| char::from(b'0' + u.digit))
            .collect()
    }

    /// The files of the string's recordings, in order, for messages.
    pub fn files(&self) -> String {
        self.parts
            .iter()
            .map(|u| u.path.display().to_string())
            .collect::<Vec<_>>()
            .join(" + ")
    }

    /// The recordings read (mono, at `sample_rate`) and joined with the silences.
    pub fn render(&self, sample_rate: u32) -> Result<Rendered> {
        let ms = |m: u32| (m as u64 * sample_rate as u64 / 1000) as usize;
        let mut samples = Vec::new();
        let mut spans = Vec::with_capacity(self.parts.len());
        for (u, &gap) in self.parts.iter().zip(&self.silences_ms) {
            samples.resize(samples.len() + ms(gap), 0.0);
            let x = read_wav(&u.path, sample_rate)?;
            let start = samples.len();
            samples.extend_from_slice(&x);
            spans.push(start..samples.len());
        }
        let tail = *self.silences_ms.last().expect("parts + 1 silences");
        samples.resize(samples.len() + ms(tail), 0.0);
        Ok(Rendered { samples, spans })
    }
}

/// Draws `spec.count` strings from `pool` as the module's documentation describes.
pub fn build(pool: &[Utterance], spec: &StringSpec) -> Result<Vec<DigitString>> {
    spec.check()?;
    let mut by_speaker: BTreeMap<&str, Vec<&Utterance>> = BTreeMap::new();
    let mut sorted: Vec<&Utterance> = pool.iter().collect();
    sorted.sort_by(|a, b| a.path.file_name().cmp(&b.path.file_name()));
    for u in sorted {
        by_speaker.entry(u.speaker.as_str()).or_default().push(u);
    }
    if by_speaker.is_empty() {
        return Err(Error::data("no recordings to build digit strings from"));
    }
    let speakers: Vec<&str> = by_speaker.keys().copied().collect();
    let mut rng = Rng::new(spec.seed);
    let mut pick = |n: usize| ((rng.uniform_in(0.0, 1.0) * n as f64) as usize).min(n - 1);
    let mut strings = Vec::with_capacity(spec.count);
    for _ in 0..spec.count {
        let speaker = speakers[pick(speakers.len())];
        let n = spec.min_digits + pick(spec.max_digits - spec.min_digits + 1);
        let own = &by_speaker[speaker];
        let parts: Vec<Utterance> = (0..n).map(|_| own[pick(own.len())].clone()).collect();
        let mut draw_ms = |(lo, hi): (u32, u32)| lo + pick((hi - lo + 1) as usize) as u32;
        let mut silences_ms = vec![draw_ms(spec.edge_ms)];
        for _ in 1..n {
            silences_ms.push(draw_ms(spec.gap_ms));
        }
        silences_ms.push(draw_ms(spec.edge_ms));
        strings.push(DigitString {
            speaker: speaker.to_string(),
            parts,
            silences_ms,
        });
    }
    Ok(strings)
}

/// One of a run's three sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetName {
    Train,
    Val,
    Test,
}

impl SetName {
    pub fn name(self) -> &'static str {
        match self {
            SetName::Train => "train",
            SetName::Val => "val",
            SetName::Test => "test",
        }
    }
}

/// The recipe of a transcriber run's three sets (see the module's documentation): kept in the
/// run's checkpoints so that a resumed run and its evaluation rebuild the same strings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StringSets {
    /// Strings in each set.
    pub train: usize,
    pub val: usize,
    pub test: usize,
    /// A speaker left out of training and validation, whose recordings make the test strings.
    pub holdout: Option<String>,
    /// Seeds the training strings; validation uses `seed + 1`, test `seed + 2`.
    pub seed: u64,
}

impl StringSets {
    /// The recordings of `all` that `set`'s strings are drawn from.
    pub fn pool(&self, set: SetName, all: &[Utterance]) -> Vec<Utterance> {
        let val_take = |u: &Utterance| VAL_TAKES.contains(&u.take);
        let keep = |u: &Utterance| match (&self.holdout, set) {
            (None, SetName::Train) => u.take > *VAL_TAKES.end(),
            (None, SetName::Val) => val_take(u),
            (None, SetName::Test) => u.take < *VAL_TAKES.start(),
            (Some(h), SetName::Train) => &u.speaker != h && !val_take(u),
            (Some(h), SetName::Val) => &u.speaker != h && val_take(u),
            (Some(h), SetName::Test) => &u.speaker == h,
        };
        all.iter().filter(|u| keep(u)).cloned().collect()
    }

    /// The strings of `set`, drawn from its pool of `all`; an error names the set when its pool
    /// is empty (e.g. a held-out speaker with no recordings).
    pub fn build(&self, set: SetName, all: &[Utterance]) -> Result<Vec<DigitString>> {
        let (count, offset) = match set {
            SetName::Train => (self.train, 0),
            SetName::Val => (self.val, 1),
            SetName::Test => (self.test, 2),
        };
        if count == 0 {
            return Ok(Vec::new());
        }
        let pool = self.pool(set, all);
        if pool.is_empty() {
            return Err(Error::data(format!(
                "no recordings to build the {} strings from{}",
                set.name(),
                self.holdout
                    .as_ref()
                    .map_or(String::new(), |h| format!(" (speaker {h} held out)"))
            )));
        }
        build(
            &pool,
            &StringSpec::new(count, self.seed.wrapping_add(offset)),
        )
    }
}
