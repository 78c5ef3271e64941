//! Scoring a transcription against its reference: the Levenshtein alignment's substitutions,
//! deletions and insertions, and the digit and string error rates over a set.

use serde::{Deserialize, Serialize};

/// The edits that turn a reference into a hypothesis, by a minimal alignment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edits {
    pub substitutions: usize,
    pub deletions: usize,
    pub insertions: usize,
}

impl Edits {
    pub fn total(&self) -> usize {
        self.substitutions + self.deletions + self.insertions
    }
}

/// A minimal alignment of `hyp` to `reference` (unit costs). Among alignments of equal cost the
/// one with the most substitutions is reported (fewer, paired deletions and insertions), as
/// speech scoring tools do.
pub fn align<T: PartialEq>(reference: &[T], hyp: &[T]) -> Edits {
    let (n, m) = (reference.len(), hyp.len());
    // cost[i][j] over prefixes, with (cost, substitutions) compared lexicographically: lower
    // cost, then more substitutions
    let key = |c: usize, s: usize| (c, usize::MAX - s);
    let mut d = vec![(0usize, 0usize, 0usize, 0usize); (n + 1) * (m + 1)]; // cost, S, D, I
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in 1..=n {
        d[at(i, 0)] = (i, 0, i, 0);
    }
    for j in 1..=m {
        d[at(0, j)] = (j, 0, 0, j);
    }
    for i in 1..=n {
        for j in 1..=m {
            let same = reference[i - 1] == hyp[j - 1];
            let (c, s, de, ins) = d[at(i - 1, j - 1)];
            let diag = if same {
                (c, s, de, ins)
            } else {
                (c + 1, s + 1, de, ins)
            };
            let (c, s, de, ins) = d[at(i - 1, j)];
            let del = (c + 1, s, de + 1, ins);
            let (c, s, de, ins) = d[at(i, j - 1)];
            let add = (c + 1, s, de, ins + 1);
            d[at(i, j)] = [diag, del, add]
                .into_iter()
                .min_by_key(|x| key(x.0, x.1))
                .expect("three candidates");
        }
    }
    let (_, s, de, ins) = d[at(n, m)];
    Edits {
        substitutions: s,
        deletions: de,
        insertions: ins,
    }
}

/// The error counts over a set of transcriptions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Score {
    pub edits: Edits,
    /// Digits in the references.
    pub reference_digits: usize,
    pub strings: usize,
    /// Strings whose transcription is not exactly the reference.
    pub wrong_strings: usize,
}

impl Score {
    /// Adds one transcription.
    pub fn add<T: PartialEq>(&mut self, reference: &[T], hyp: &[T]) {
        let e = align(reference, hyp);
        self.edits.substitutions += e.substitutions;
        self.edits.deletions += e.deletions;
        self.edits.insertions += e.insertions;
        self.reference_digits += reference.len();
        self.strings += 1;
        self.wrong_strings += usize::from(e.total() > 0);
    }

    /// (substitutions + deletions + insertions) / reference digits.
    pub fn digit_error_rate(&self) -> f64 {
        self.edits.total() as f64 / self.reference_digits.max(1) as f64
    }

    /// Strings not transcribed exactly, over all strings.
    pub fn string_error_rate(&self) -> f64 {
        self.wrong_strings as f64 / self.strings.max(1) as f64
    }
}
