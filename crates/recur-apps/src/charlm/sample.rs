//! Generating text from a character model one character at a time (temperature, top-k), with
//! the state carried between characters.

use recur::model::{Input, Model};
use recur::ops::loss::softmax_rows;
use recur::rng::Rng;
use recur::stream::Streamer;
use recur::Result;

/// How the next character is drawn from the model's distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleOptions {
    /// Logits are divided by this; below 1 sharpens, above 1 flattens. Must be > 0.
    pub temperature: f64,
    /// Draw only among the k most likely characters (0 = all).
    pub top_k: usize,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            temperature: 1.0,
            top_k: 0,
        }
    }
}

/// A model run one character at a time (B = 1, T = 1), for priming and sampling: a
/// [`Streamer`] of one stream, fed one step per character.
pub struct Generator<'a> {
    stream: Streamer<'a>,
    probs: Vec<f32>,
    order: Vec<u32>,
    fed: bool,
}

impl<'a> Generator<'a> {
    /// A generator over `model` with weights `params`; refuses what [`Streamer::new`] refuses (a
    /// bidirectional model, a parameter buffer of the wrong size).
    pub fn new(model: &'a Model, params: &'a [f32]) -> Result<Self> {
        let v = model.cfg().output_size;
        Ok(Generator {
            stream: Streamer::new(model, params, 1)?,
            probs: vec![0.0; v],
            order: Vec::with_capacity(v),
            fed: false,
        })
    }

    /// Runs one character through the model; its next-character logits are then in
    /// [`Generator::logits`].
    pub fn feed(&mut self, id: u32) {
        self.stream.step(Input::Tokens(&[id]));
        self.fed = true;
    }

    /// Logits (V) after the last [`Generator::feed`].
    pub fn logits(&self) -> &[f32] {
        assert!(self.fed, "feed a character first");
        self.stream.logits()
    }

    /// Draws the next character from the distribution after the last [`Generator::feed`].
    pub fn sample(&mut self, opts: &SampleOptions, rng: &mut Rng) -> u32 {
        assert!(self.fed, "feed a character first");
        draw(
            self.stream.logits(),
            opts,
            rng,
            &mut self.probs,
            &mut self.order,
        )
    }
}

/// Draws a class from `logits` (V) as [`Generator::sample`] does (temperature, top-k), with
/// `probs` (V) and `order` as scratch; shared by every device's generator.
pub fn draw(
    logits: &[f32],
    opts: &SampleOptions,
    rng: &mut Rng,
    probs: &mut [f32],
    order: &mut Vec<u32>,
) -> u32 {
    assert!(opts.temperature > 0.0, "temperature must be positive");
    let v = probs.len();
    let inv_t = (1.0 / opts.temperature) as f32;
    let scaled: Vec<f32> = logits.iter().map(|&x| x * inv_t).collect();
    softmax_rows(&scaled, probs, 1, v);
    if opts.top_k > 0 && opts.top_k < v {
        // keep the k largest probabilities (ties broken by id), renormalise below
        order.clear();
        order.extend(0..v as u32);
        let p = &*probs;
        order.sort_by(|&a, &b| {
            p[b as usize]
                .partial_cmp(&p[a as usize])
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(&b))
        });
        for &i in &order[opts.top_k..] {
            probs[i as usize] = 0.0;
        }
    }
    let total: f64 = probs.iter().map(|&p| p as f64).sum();
    let mut u = rng.uniform() * total;
    let mut last = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            last = i;
            u -= p as f64;
            if u < 0.0 {
                return i as u32;
            }
        }
    }
    last as u32
}
