//! One flat buffer for parameters (and one of the same layout for gradients, and for each
//! optimizer moment), with named views: zeroing, clipping, the optimizer step and checkpoints
//! are then one loop each.

use std::ops::Range;

/// One named tensor inside the flat buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamEntry {
    /// PyTorch state_dict name, e.g. `rnn.weight_ih_l0`.
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
}

impl ParamEntry {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// The layout of a flat parameter buffer: tensors in order, packed without gaps, and aliases:
/// a second name for a tensor already in the buffer (tied weights), which shares its elements.
/// A loop over `entries` meets an aliased tensor under each of its names; whatever it does to
/// the elements must then be the same done twice (rounding, quantizing, saving under both
/// names), or it skips the aliases ([`ParamLayout::is_alias`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParamLayout {
    pub entries: Vec<ParamEntry>,
    pub total: usize,
    /// The indices in `entries` of the aliases, in order.
    pub aliases: Vec<usize>,
}

impl ParamLayout {
    /// Appends a tensor and returns its range.
    pub fn push(&mut self, name: impl Into<String>, shape: &[usize]) -> Range<usize> {
        let e = ParamEntry {
            name: name.into(),
            shape: shape.to_vec(),
            offset: self.total,
        };
        self.total += e.len();
        let r = e.range();
        self.entries.push(e);
        r
    }

    /// The entry with this name.
    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Adds `name` as a second name of the tensor `of` (same shape, same elements) and returns
    /// its range.
    ///
    /// # Panics
    /// When `of` is not in the layout.
    pub fn alias(&mut self, name: impl Into<String>, of: &str) -> Range<usize> {
        let e = self
            .get(of)
            .unwrap_or_else(|| panic!("ParamLayout::alias: no tensor '{of}'"));
        let e = ParamEntry {
            name: name.into(),
            shape: e.shape.clone(),
            offset: e.offset,
        };
        let r = e.range();
        self.aliases.push(self.entries.len());
        self.entries.push(e);
        r
    }

    /// Whether `entries[i]` is an alias ([`ParamLayout::alias`]).
    pub fn is_alias(&self, i: usize) -> bool {
        self.aliases.contains(&i)
    }
}
