//! A character vocabulary: the sorted set of Unicode scalar values of a text, and the mapping
//! between characters and token ids (ids are positions in the sorted list).

use recur::{Error, Result};
use std::collections::HashMap;

/// Characters in ascending order; a character's id is its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocab {
    chars: Vec<char>,
    index: HashMap<char, u32>,
}

impl Vocab {
    /// The set of characters of `text`, sorted.
    pub fn from_text(text: &str) -> Self {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Self::build(chars)
    }

    /// A vocabulary from a stored list (a checkpoint's), which must be sorted without repeats.
    pub fn from_chars(chars: Vec<char>) -> Result<Self> {
        if chars.is_empty() {
            return Err(Error::data("bad vocabulary: it is empty"));
        }
        if let Some(w) = chars.windows(2).find(|w| w[0] >= w[1]) {
            return Err(Error::data(format!(
                "bad vocabulary: not sorted or repeated: {:?} before {:?}",
                w[0], w[1]
            )));
        }
        Ok(Self::build(chars))
    }

    fn build(chars: Vec<char>) -> Self {
        let index = chars
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as u32))
            .collect();
        Vocab { chars, index }
    }

    /// V: the number of characters.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The characters in id order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// The id of `c`, if it is in the vocabulary.
    pub fn id(&self, c: char) -> Option<u32> {
        self.index.get(&c).copied()
    }

    /// The character with id `id` (panics if out of range).
    pub fn char(&self, id: u32) -> char {
        self.chars[id as usize]
    }

    /// Token ids of `text`; the error lists every character (once, in order of first appearance)
    /// that is not in the vocabulary.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len());
        let mut unknown: Vec<char> = Vec::new();
        for c in text.chars() {
            match self.id(c) {
                Some(id) => ids.push(id),
                None => {
                    if !unknown.contains(&c) {
                        unknown.push(c);
                    }
                }
            }
        }
        if unknown.is_empty() {
            Ok(ids)
        } else {
            let list: Vec<String> = unknown.iter().map(|c| format!("{c:?}")).collect();
            Err(Error::data(format!(
                "{} character(s) not in the model's vocabulary: {}",
                unknown.len(),
                list.join(", ")
            )))
        }
    }

    /// The text of token ids.
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter().map(|&i| self.char(i)).collect()
    }
}
