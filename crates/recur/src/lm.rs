//! Using a trained character model: its loss on a text (B parallel streams, state carried from
//! chunk to chunk, so that the number does not depend on the chunk length) and generating text
//! one character at a time (temperature, top-k).
//!
//! Not here: the training loop ([`crate::train`]) and file handling (the CLI).

use crate::model::{Input, Model, ModelWorkspace};
use crate::ops::loss::softmax_rows;
use crate::rng::Rng;

/// A recurrent state carried between calls: h (L*D, B, P) and c (L*D, B, H; LSTM only).
#[derive(Clone, Debug, PartialEq)]
pub struct Carry {
    pub h: Vec<f32>,
    pub c: Vec<f32>,
}

impl Carry {
    /// The zero state of `model` for `b` sequences.
    pub fn zeros(model: &Model, b: usize) -> Self {
        let cfg = &model.cfg.rnn;
        let ld = cfg.num_layers * cfg.dirs();
        let c = if cfg.kind() == crate::cell::CellKind::Lstm {
            ld * b * cfg.hidden_size
        } else {
            0
        };
        Carry {
            h: vec![0.0; ld * b * cfg.out_size()],
            c: vec![0.0; c],
        }
    }

    pub fn reset(&mut self) {
        self.h.fill(0.0);
        self.c.fill(0.0);
    }

    /// `h0` and `c0` arguments for [`Model::forward`].
    pub fn as_init(&self) -> (Option<&[f32]>, Option<&[f32]>) {
        (
            Some(&self.h[..]),
            (!self.c.is_empty()).then_some(&self.c[..]),
        )
    }

    /// Takes the final states of the last forward.
    pub fn take_from(&mut self, ws: &ModelWorkspace<f32>) {
        self.h.copy_from_slice(&ws.stack.h_n);
        if !self.c.is_empty() {
            self.c.copy_from_slice(&ws.stack.c_n);
        }
    }
}

/// Summed cross-entropy (nats) and count over `ids` read as `b` parallel streams of
/// S = (N - 1) / b ids, each from a zero state, in chunks of at most `t` steps with the state
/// carried across chunks. With `b = 1` this is the loss of every character given all the ones
/// before it: the mean over t = 1..N-1 of -ln p(c_t | c_0..c_{t-1}).
///
/// `ws` must be a workspace for (t, b); the last, shorter chunk gets its own.
pub fn stream_loss(
    model: &Model,
    params: &[f32],
    ids: &[u32],
    ws: &mut ModelWorkspace<f32>,
) -> (f64, usize) {
    let (t, b) = (ws.t, ws.b);
    let mut carry = Carry::zeros(model, b);
    let (mut total, mut count) = (0.0, 0);
    // no backward here: keep only what the next step needs, and the parameters (borrowed for
    // this call) packed once for all chunks; both switched back at the end
    ws.stack.set_inference(true);
    ws.stack.set_fixed_weights(true);
    let mut tail_ws: Option<ModelWorkspace<f32>> = None;
    let Ok(()) = for_stream_chunks::<std::convert::Infallible>(ids, t, b, |tt, inputs, targets| {
        let ws = if tt == t {
            &mut *ws
        } else {
            tail_ws.get_or_insert_with(|| {
                let mut w = model.workspace(tt, b);
                w.stack.set_inference(true);
                w.stack.set_fixed_weights(true);
                w
            })
        };
        let (h0, c0) = carry.as_init();
        model.forward(ws, params, Input::Tokens(inputs), h0, c0, None, None);
        let (l, n) = model.loss(ws, targets, 1.0);
        total += l;
        count += n;
        carry.take_from(ws);
        Ok(())
    });
    ws.stack.set_inference(false);
    ws.stack.set_fixed_weights(false);
    (total, count)
}

/// The batches [`stream_loss`] reads (and the GPU's twin of it): `ids` as `b` parallel streams of
/// `(len - 1) / b` steps each, cut into chunks of at most `t` steps; `f(tt, inputs, targets)` for
/// each chunk in order, with inputs and targets (tt, B), row j = step j of every stream. Nothing
/// when the text is shorter than b + 1 ids.
pub fn for_stream_chunks<E>(
    ids: &[u32],
    t: usize,
    b: usize,
    mut f: impl FnMut(usize, &[u32], &[u32]) -> Result<(), E>,
) -> Result<(), E> {
    if ids.len() < b + 1 {
        return Ok(());
    }
    let s = (ids.len() - 1) / b;
    let mut inputs = vec![0u32; t * b];
    let mut targets = vec![0u32; t * b];
    let mut off = 0;
    while off < s {
        let tt = t.min(s - off);
        for j in 0..tt {
            for i in 0..b {
                let pos = i * s + off + j;
                inputs[j * b + i] = ids[pos];
                targets[j * b + i] = ids[pos + 1];
            }
        }
        f(tt, &inputs[..tt * b], &targets[..tt * b])?;
        off += tt;
    }
    Ok(())
}

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

/// A model run one character at a time (B = 1, T = 1), for priming and sampling.
pub struct Generator<'a> {
    model: &'a Model,
    params: &'a [f32],
    ws: ModelWorkspace<f32>,
    carry: Carry,
    probs: Vec<f32>,
    order: Vec<u32>,
    fed: bool,
}

impl<'a> Generator<'a> {
    pub fn new(model: &'a Model, params: &'a [f32]) -> Self {
        let v = model.cfg.output_size;
        Generator {
            model,
            params,
            ws: {
                let mut ws = model.workspace(1, 1);
                ws.stack.set_inference(true);
                // the parameters are borrowed for the generator's whole life: pack them once
                ws.stack.set_fixed_weights(true);
                ws
            },
            carry: Carry::zeros(model, 1),
            probs: vec![0.0; v],
            order: Vec::with_capacity(v),
            fed: false,
        }
    }

    /// Runs one character through the model; its next-character logits are then in
    /// [`Generator::logits`].
    pub fn feed(&mut self, id: u32) {
        let (h0, c0) = self.carry.as_init();
        self.model.forward(
            &mut self.ws,
            self.params,
            Input::Tokens(&[id]),
            h0,
            c0,
            None,
            None,
        );
        self.carry.take_from(&self.ws);
        self.fed = true;
    }

    /// Logits (V) after the last [`Generator::feed`].
    pub fn logits(&self) -> &[f32] {
        assert!(self.fed, "feed a character first");
        &self.ws.logits
    }

    /// Draws the next character from the distribution after the last [`Generator::feed`].
    pub fn sample(&mut self, opts: &SampleOptions, rng: &mut Rng) -> u32 {
        assert!(self.fed, "feed a character first");
        draw(&self.ws.logits, opts, rng, &mut self.probs, &mut self.order)
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
