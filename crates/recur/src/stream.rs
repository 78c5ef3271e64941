//! State carried from call to call: a model's recurrent state between chunks of a long stream
//! ([`Carry`]), a model fed one step or one chunk of steps at a time ([`Streamer`]), and the loss
//! of a token stream read in chunks (B parallel streams, state carried from chunk to chunk, so
//! that the number does not depend on the chunk length).

use crate::error::{Error, Result};
use crate::model::{Input, InputKind, Model, ModelWorkspace};

/// A recurrent state carried between calls: h (L*D, B, P) and c (L*D, B, H; LSTM only).
#[derive(Clone, Debug, PartialEq)]
pub struct Carry {
    pub h: Vec<f32>,
    pub c: Vec<f32>,
}

impl Carry {
    /// The zero state of `model` for `b` sequences.
    pub fn zeros(model: &Model, b: usize) -> Self {
        let cfg = &model.cfg().rnn;
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

/// The most workspaces (one per chunk length) a [`Streamer`] keeps; beyond that the least
/// recently used one is dropped.
const MAX_WORKSPACES: usize = 4;

/// A model fed one step, or one chunk of steps, at a time, for `B` parallel streams, with the
/// recurrent state carried from call to call: the outputs are those of one forward over the
/// whole sequence ([`Model::forward`] with the same initial state), however the sequence is cut.
///
/// Inference only (no dropout, no backward): each call keeps only what the next step needs, and
/// the parameters, borrowed for the streamer's life, are packed once and reused by every call.
/// One workspace is made per chunk length and kept for the next call of that length (at most a
/// few; the least recently used goes first), so a steady stream makes no new workspaces (the
/// `gemm` crate still allocates a packing buffer in each of its products: the decoder, and the
/// input product of dense inputs and of every layer above the first).
///
/// Per-step heads return every step's outputs; a last-step head (many-to-one, see
/// [`crate::model::Head`]) returns, after each call, its outputs for everything fed so far: the
/// head applied to the chunk's last step. A bidirectional stack is refused: its reverse direction
/// needs the end of the sequence first.
///
/// ```rust
/// use recur::cell::CellKind;
/// use recur::model::{Head, Input, Model, ModelConfig};
/// use recur::rng::Rng;
/// use recur::stack::StackConfig;
/// use recur::stream::Streamer;
///
/// // 3 features in, a 1-layer GRU of 8, 2 values out at every step
/// let cfg = ModelConfig::dense(3, StackConfig::new(CellKind::Gru, 3, 8), 2, Head::StepRegression);
/// let model = Model::new(cfg).unwrap();
/// let mut params = vec![0.0f32; model.num_params()];
/// model.init(&mut params, &mut Rng::new(1));
///
/// // 5 steps of 1 stream, fed whole ...
/// let x: Vec<f32> = (0..15).map(|i| (i as f32 * 0.3).sin()).collect();
/// let mut ws = model.workspace(5, 1);
/// model.forward(&mut ws, &params, Input::Dense(&x), None, None, None, None);
///
/// // ... and as 2 + 1 + 2 steps: the same outputs
/// let mut s = Streamer::new(&model, &params, 1).unwrap();
/// let mut streamed = s.chunk(Input::Dense(&x[..6]), 2).to_vec();
/// streamed.extend_from_slice(s.step(Input::Dense(&x[6..9])));
/// streamed.extend_from_slice(s.chunk(Input::Dense(&x[9..]), 2));
/// assert_eq!(streamed.len(), ws.logits.len());
/// for (a, b) in streamed.iter().zip(&ws.logits) {
///     assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0));
/// }
/// ```
pub struct Streamer<'a> {
    model: &'a Model,
    // the caller's parameters, or in bf16 a copy with its weights rounded
    params: std::borrow::Cow<'a, [f32]>,
    precision: crate::Precision,
    b: usize,
    carry: Carry,
    // workspaces by chunk length, the most recently used last
    ws: Vec<ModelWorkspace<f32>>,
}

impl<'a> Streamer<'a> {
    /// A streamer of `batch` parallel streams, from the zero state. Refuses a bidirectional
    /// stack, `batch = 0` and a parameter buffer that is not the model's size.
    pub fn new(model: &'a Model, params: &'a [f32], batch: usize) -> Result<Self> {
        if model.cfg().rnn.bidirectional {
            return Err(Error::invalid(
                "a bidirectional model cannot be streamed: its reverse direction needs the \
                 whole sequence (use Model::forward)",
            ));
        }
        if params.len() != model.num_params() {
            return Err(Error::invalid(format!(
                "params has {} values but the model has {}",
                params.len(),
                model.num_params()
            )));
        }
        if batch == 0 {
            return Err(Error::invalid(
                "a streamer needs at least one stream (batch >= 1)",
            ));
        }
        Ok(Streamer {
            model,
            params: std::borrow::Cow::Borrowed(params),
            precision: crate::Precision::F32,
            b: batch,
            carry: Carry::zeros(model, batch),
            ws: Vec::new(),
        })
    }

    /// The same streamer computing in `p` (see [`crate::precision`]): bf16 keeps a copy of the
    /// parameters with their weights rounded.
    pub fn with_precision(mut self, p: crate::Precision) -> Result<Self> {
        if p != self.precision {
            if self.precision != crate::Precision::F32 {
                return Err(Error::invalid(
                    "this streamer's weights were rounded: make a new one for another precision",
                ));
            }
            let mut own = self.params.to_vec();
            crate::precision::prepare_weights(self.model.layout(), &mut own, p);
            self.params = std::borrow::Cow::Owned(own);
            self.precision = p;
            self.ws.clear();
        }
        Ok(self)
    }

    /// The precision it computes in.
    pub fn precision(&self) -> crate::Precision {
        self.precision
    }

    /// The model.
    pub fn model(&self) -> &'a Model {
        self.model
    }

    /// B: the number of parallel streams.
    pub fn batch(&self) -> usize {
        self.b
    }

    /// One time step of every stream: `input` is (B) token ids or (B, I) vectors. Returns the
    /// outputs (B, V), V the model's `output_size`.
    ///
    /// # Panics
    /// As [`Streamer::chunk`] with `t = 1`.
    pub fn step(&mut self, input: Input<'_, f32>) -> &[f32] {
        self.chunk(input, 1)
    }

    /// `t` time steps of every stream: `input` is (T, B) token ids or (T, B, I) vectors, row j =
    /// step j of every stream. Returns the outputs: (T*B, V), step j of stream b at row
    /// `j * B + b`, for a per-step head; (B, V) after the chunk's last step for a last-step head.
    ///
    /// # Panics
    /// When `t` is 0, when `input` is not the model's kind of input or not exactly T*B ids
    /// (T*B*I values), or when a token id is out of range.
    pub fn chunk(&mut self, input: Input<'_, f32>, t: usize) -> &[f32] {
        assert!(t >= 1, "a chunk needs at least one step");
        let cfg = &self.model.cfg();
        let n = t * self.b;
        match (cfg.input, input) {
            (InputKind::OneHot | InputKind::Embedding, Input::Tokens(ids)) => assert_eq!(
                ids.len(),
                n,
                "{t} steps of {} streams need {n} token ids",
                self.b
            ),
            (InputKind::Dense, Input::Dense(x)) => assert_eq!(
                x.len(),
                n * cfg.input_size,
                "{t} steps of {} streams of {} features need {} values",
                self.b,
                cfg.input_size,
                n * cfg.input_size
            ),
            _ => panic!(
                "input does not match the model's input kind {:?}",
                cfg.input
            ),
        }
        let i = match self.ws.iter().position(|w| w.t == t) {
            Some(i) => i,
            None => {
                if self.ws.len() == MAX_WORKSPACES {
                    self.ws.remove(0);
                }
                let mut w = self.model.workspace(t, self.b);
                w.set_precision(self.precision);
                // no backward: keep only what the next step needs; the parameters are borrowed
                // for the streamer's life, so pack them once
                w.stack.set_inference(true);
                w.stack.set_fixed_weights(true);
                self.ws.push(w);
                self.ws.len() - 1
            }
        };
        let w = self.ws.remove(i);
        self.ws.push(w);
        let ws = self.ws.last_mut().expect("just pushed");
        let (h0, c0) = self.carry.as_init();
        self.model
            .forward(ws, &self.params, input, h0, c0, None, None);
        self.carry.take_from(ws);
        &ws.logits
    }

    /// The outputs of the last [`Streamer::step`] or [`Streamer::chunk`] (empty before the
    /// first).
    pub fn logits(&self) -> &[f32] {
        self.ws.last().map_or(&[], |w| &w.logits[..])
    }

    /// The stack's top-layer outputs (the hidden states, or the projections) of the last call:
    /// (T*B, P), P the stack's `out_size`; empty before the first call.
    pub fn outputs(&self) -> &[f32] {
        self.ws.last().map_or(&[], |w| w.stack.output())
    }

    /// The state after the last call: every layer's h (L, B, P) and c (L, B, H, LSTM only), as
    /// [`Model::forward`]'s final states.
    pub fn state(&self) -> &Carry {
        &self.carry
    }

    /// Continues from `carry` (for instance a state saved with [`Streamer::state`], or PyTorch's
    /// `h0`/`c0`); refused unless its sizes are the model's for this batch.
    pub fn set_state(&mut self, carry: Carry) -> Result<()> {
        let want = Carry::zeros(self.model, self.b);
        if carry.h.len() != want.h.len() || carry.c.len() != want.c.len() {
            return Err(Error::invalid(format!(
                "a state of {} h and {} c values given, the model's for {} streams has {} and {}",
                carry.h.len(),
                carry.c.len(),
                self.b,
                want.h.len(),
                want.c.len()
            )));
        }
        self.carry = carry;
        Ok(())
    }

    /// Back to the zero state (the workspaces and packed weights are kept).
    pub fn reset(&mut self) {
        self.carry.reset();
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
    let precision = ws.precision();
    let Ok(()) = for_stream_chunks::<std::convert::Infallible>(ids, t, b, |tt, inputs, targets| {
        let ws = if tt == t {
            &mut *ws
        } else {
            tail_ws.get_or_insert_with(|| {
                let mut w = model.workspace(tt, b);
                w.set_precision(precision);
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
