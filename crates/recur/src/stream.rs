//! State carried from call to call: a model's recurrent state between chunks of a long stream,
//! and the loss of a token stream read in chunks (B parallel streams, state carried from chunk
//! to chunk, so that the number does not depend on the chunk length).

use crate::model::{Input, Model, ModelWorkspace};

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
