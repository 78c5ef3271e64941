//! From one sequence's per-frame scores to a label string: best path (greedy) and prefix beam
//! search (Graves 2012, ch. 7; Hannun et al. 2014). Scores are (T, C) row-major logits or log
//! probabilities (both are normalised here); the blank is one of the C classes.

use super::loss::{log_add, log_softmax, log_softmax_row};
use crate::ops::Float;
use std::collections::HashMap;

/// A decoded string: its labels, the frame at which each was emitted, and a log probability.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    pub labels: Vec<usize>,
    /// For each label, the first frame of the path's run that emitted it.
    pub frames: Vec<usize>,
    /// Best path: the log probability of that one path. Beam search: the log probability of the
    /// string summed over the paths the beam kept.
    pub log_prob: f64,
}

/// Log-softmax of each frame, in f64.
fn log_probs<F: Float>(scores: &[F], c: usize) -> Vec<f64> {
    let v: Vec<f64> = scores.iter().map(|v| v.to_f64()).collect();
    log_softmax(&v, c)
}

/// Best path: the most probable class at every frame, then repeats merged and blanks removed.
/// A label's frame is the first frame of its run. Ties go to the lower class index.
pub fn greedy<F: Float>(scores: &[F], c: usize, blank: usize) -> Decoded {
    let mut g = GreedyStream::new(c, blank);
    let mut out = Decoded {
        labels: Vec::new(),
        frames: Vec::new(),
        log_prob: 0.0,
    };
    for row in scores.chunks(c) {
        if let Some((label, frame)) = g.push(row) {
            out.labels.push(label);
            out.frames.push(frame);
        }
    }
    out.log_prob = g.log_prob();
    out
}

/// Best-path decoding one frame at a time, for a stream: each frame's scores go in as they
/// arrive and a label comes out at the first frame of its run, so it is decided as soon as that
/// frame is seen. [`greedy`] is this over all the frames.
#[derive(Clone, Debug)]
pub struct GreedyStream {
    c: usize,
    blank: usize,
    prev: usize,
    t: usize,
    log_prob: f64,
    /// The frame's log probabilities.
    lp: Vec<f64>,
}

impl GreedyStream {
    /// A decoder of `c` classes, `blank` among them.
    pub fn new(c: usize, blank: usize) -> Self {
        GreedyStream {
            c,
            blank,
            prev: blank,
            t: 0,
            log_prob: 0.0,
            lp: vec![0.0; c],
        }
    }

    /// The next frame's scores (C logits or log probabilities); the label it starts, with its
    /// frame, if any.
    pub fn push<F: Float>(&mut self, row: &[F]) -> Option<(usize, usize)> {
        assert_eq!(row.len(), self.c, "a frame has one score per class");
        let lp = &mut self.lp;
        for (l, v) in lp.iter_mut().zip(row) {
            *l = v.to_f64();
        }
        log_softmax_row(lp);
        let mut best = 0;
        for k in 1..self.c {
            if lp[k] > lp[best] {
                best = k;
            }
        }
        self.log_prob += lp[best];
        let t = self.t;
        self.t += 1;
        let new = best != self.blank && best != self.prev;
        self.prev = best;
        new.then_some((best, t))
    }

    /// Frames seen.
    pub fn frames(&self) -> usize {
        self.t
    }

    /// The log probability of the best path so far.
    pub fn log_prob(&self) -> f64 {
        self.log_prob
    }
}

/// One prefix in the beam: the log probabilities of its paths ending in a blank and in its last
/// label, and the frames of its labels.
#[derive(Clone)]
struct Beam {
    blank: f64,
    label: f64,
    frames: Vec<usize>,
    /// The largest single route into the prefix at this frame: the one whose frames are kept.
    best_route: f64,
}

impl Beam {
    fn total(&self) -> f64 {
        log_add(self.blank, self.label)
    }
}

/// Adds a route into `prefix` at this frame: `blank` or `label` log probability, with the frames
/// it brings (kept when it is the most probable route into the prefix so far).
fn add(
    next: &mut HashMap<Vec<usize>, Beam>,
    prefix: Vec<usize>,
    to_blank: bool,
    lp: f64,
    frames: &[usize],
) {
    let e = next.entry(prefix).or_insert_with(|| Beam {
        blank: f64::NEG_INFINITY,
        label: f64::NEG_INFINITY,
        frames: frames.to_vec(),
        best_route: f64::NEG_INFINITY,
    });
    if to_blank {
        e.blank = log_add(e.blank, lp);
    } else {
        e.label = log_add(e.label, lp);
    }
    if lp > e.best_route {
        e.best_route = lp;
        e.frames = frames.to_vec();
    }
}

/// Prefix beam search with `width` prefixes kept after each frame: every prefix's probability is
/// summed over all the paths that collapse to it (a path ending in a blank and one ending in the
/// label are tracked apart, so that a repeat is merged or starts a new label correctly). Returns
/// the most probable prefix at the end. A label's frame is the frame at which the most probable
/// route into the prefix emitted it. `width` 1 is not greedy decoding: it still sums paths.
/// Ties between prefixes of equal probability go to the lexicographically smaller one.
pub fn beam_search<F: Float>(scores: &[F], c: usize, blank: usize, width: usize) -> Decoded {
    let lp = log_probs(scores, c);
    let width = width.max(1);
    let mut beams: Vec<(Vec<usize>, Beam)> = vec![(
        Vec::new(),
        Beam {
            blank: 0.0,
            label: f64::NEG_INFINITY,
            frames: Vec::new(),
            best_route: 0.0,
        },
    )];
    for (t, row) in lp.chunks(c).enumerate() {
        let mut next: HashMap<Vec<usize>, Beam> = HashMap::new();
        for (prefix, b) in &beams {
            let total = b.total();
            for (k, &p) in row.iter().enumerate() {
                if k == blank {
                    add(&mut next, prefix.clone(), true, total + p, &b.frames);
                    continue;
                }
                let mut longer = prefix.clone();
                longer.push(k);
                let mut frames = b.frames.clone();
                frames.push(t);
                if prefix.last() == Some(&k) {
                    // the same label again: a new copy only after a blank; else the run continues
                    add(&mut next, longer, false, b.blank + p, &frames);
                    add(&mut next, prefix.clone(), false, b.label + p, &b.frames);
                } else {
                    add(&mut next, longer, false, total + p, &frames);
                }
            }
        }
        let mut all: Vec<(Vec<usize>, Beam)> = next.into_iter().collect();
        all.sort_by(|a, b| {
            b.1.total()
                .partial_cmp(&a.1.total())
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| a.0.cmp(&b.0))
        });
        all.truncate(width);
        beams = all;
    }
    let (labels, b) = beams.swap_remove(0);
    Decoded {
        labels,
        log_prob: b.total(),
        frames: b.frames,
    }
}
