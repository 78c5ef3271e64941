//! A sequence model: input (one-hot tokens, an embedding, or dense vectors) -> recurrent stack ->
//! linear decoder (the head), with its loss: softmax cross-entropy for classes, mean squared error
//! for real values, on every step or on each sequence's last step only (see [`Head`]).
//!
//! Parameter names are those of the equivalent PyTorch module's state_dict: `embedding.weight`
//! (V, E) when an embedding is used, `rnn.` + the torch.nn.RNN/LSTM/GRU names, `decoder.weight`
//! (V_out, D*P) and `decoder.bias` (V_out). With tied weights ([`ModelConfig::tie_weights`])
//! `decoder.weight` is a second name of `embedding.weight`, as in a PyTorch module that sets
//! `decoder.weight = embedding.weight`: one matrix, which receives both gradients.

use crate::cell::LayerInput;
use crate::ops::bf16::{tile_gemm, Left, Right};
use crate::ops::loss::softmax_xent;
use crate::ops::{add_col_sums, gemm, Float, Trans};
use crate::ops::{as_f32 as f32s, as_f32_mut as f32m};
use crate::params::ParamLayout;
use crate::rng::Rng;
use crate::stack::{Stack, StackConfig, StackWorkspace};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// How inputs enter the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// Token ids, fed as one-hot vectors of length `input_size` (the lecture's encoding).
    OneHot,
    /// Token ids looked up in `embedding.weight` (input_size x embed_dim).
    Embedding,
    /// Real-valued vectors of `input_size` features per step.
    Dense,
}

/// What the decoder reads and what its outputs mean.
///
/// Per-step heads decode every step's output (T*B rows). Last-step heads (many-to-one) decode one
/// row per sequence: the stack's output at that sequence's own last valid step (`lengths[b] - 1`).
/// With two directions that row is the forward direction's output at the last valid step
/// concatenated with the reverse direction's output at step 0 (where the reverse pass ends): the
/// top layer's final states, PyTorch's `torch.cat([h_n[-2], h_n[-1]], dim=1)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Head {
    /// Class scores at every step, softmax cross-entropy (a character model's head).
    #[default]
    StepClasses,
    /// Class scores per sequence from its last step, softmax cross-entropy (many-to-one).
    LastClasses,
    /// Real values at every step, mean squared error.
    StepRegression,
    /// Real values per sequence from its last step, mean squared error.
    LastRegression,
}

impl Head {
    /// `step_classes`, `last_classes`, `step_regression`, `last_regression`.
    pub fn name(self) -> &'static str {
        match self {
            Head::StepClasses => "step_classes",
            Head::LastClasses => "last_classes",
            Head::StepRegression => "step_regression",
            Head::LastRegression => "last_regression",
        }
    }

    /// Parses [`Head::name`].
    pub fn parse(s: &str) -> Option<Head> {
        Some(match s {
            "step_classes" => Head::StepClasses,
            "last_classes" => Head::LastClasses,
            "step_regression" => Head::StepRegression,
            "last_regression" => Head::LastRegression,
            _ => return None,
        })
    }

    /// All heads, in the order above.
    pub const ALL: [Head; 4] = [
        Head::StepClasses,
        Head::LastClasses,
        Head::StepRegression,
        Head::LastRegression,
    ];

    /// Decodes only each sequence's last step.
    pub fn last_step(self) -> bool {
        matches!(self, Head::LastClasses | Head::LastRegression)
    }

    /// Real-valued outputs with a squared-error loss (otherwise classes with cross-entropy).
    pub fn regression(self) -> bool {
        matches!(self, Head::StepRegression | Head::LastRegression)
    }
}

/// Configuration of a [`Model`].
///
/// ```rust
/// use recur::cell::CellKind;
/// use recur::model::{Head, InputKind, ModelConfig};
/// use recur::stack::StackConfig;
///
/// // a character model: 65 symbols embedded in 16, a 2-layer LSTM of 128, scores over 65
/// let lm = ModelConfig::char_model(65, 16, StackConfig::new(CellKind::Lstm, 0, 128).with_layers(2));
/// assert_eq!((lm.input, lm.rnn.input_size), (InputKind::Embedding, 16));
/// assert!(lm.validate().is_ok());
///
/// // 40 features per step, a GRU of 64, one of 10 classes per sequence
/// let clf = ModelConfig::dense(40, StackConfig::new(CellKind::Gru, 0, 64), 10, Head::LastClasses);
/// assert_eq!(clf.rnn.input_size, 40);
/// assert!(clf.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// How inputs enter.
    pub input: InputKind,
    /// Vocabulary size (one-hot, embedding) or features per step (dense).
    pub input_size: usize,
    /// Embedding width E (embedding input only; 0 otherwise).
    pub embed_dim: usize,
    /// The recurrent stack; its `input_size` must be `input_size` (one-hot, dense) or `embed_dim`.
    pub rnn: StackConfig,
    /// Decoder outputs: the number of classes, or of real values for a regression head.
    pub output_size: usize,
    /// Whether the decoder has a bias. Default true.
    pub decoder_bias: bool,
    /// What the decoder reads and its loss. Default (and for configurations written before heads
    /// existed): per-step classes.
    #[serde(default)]
    pub head: Head,
    /// The decoder's weight is the embedding's (weight tying, as in AWD-LSTM): needs embedding
    /// input, as many classes as symbols and E equal to the stack's output width D*P. The one
    /// matrix starts as the decoder would (`nn.Linear`'s uniform), not as the embedding's
    /// N(0, 1), whose logits would start far too large. Default false.
    #[serde(default)]
    pub tie_weights: bool,
}

impl ModelConfig {
    /// A character model: one-hot (or embedding, when `embed_dim > 0`) input over `vocab`
    /// symbols, the given stack, a decoder back to `vocab`.
    pub fn char_model(vocab: usize, embed_dim: usize, rnn: StackConfig) -> Self {
        let (input, rnn) = if embed_dim > 0 {
            (
                InputKind::Embedding,
                StackConfig {
                    input_size: embed_dim,
                    ..rnn
                },
            )
        } else {
            (
                InputKind::OneHot,
                StackConfig {
                    input_size: vocab,
                    ..rnn
                },
            )
        };
        ModelConfig {
            input,
            input_size: vocab,
            embed_dim,
            rnn,
            output_size: vocab,
            decoder_bias: true,
            head: Head::StepClasses,
            tie_weights: false,
        }
    }

    /// A model of real-valued sequences: `features` inputs per step, the given stack (its input
    /// size is set to `features`), `outputs` values or classes decoded as `head` says.
    pub fn dense(features: usize, rnn: StackConfig, outputs: usize, head: Head) -> Self {
        ModelConfig {
            input: InputKind::Dense,
            input_size: features,
            embed_dim: 0,
            rnn: StackConfig {
                input_size: features,
                ..rnn
            },
            output_size: outputs,
            decoder_bias: true,
            head,
            tie_weights: false,
        }
    }

    /// Checks the configuration; the error names the offending field.
    pub fn validate(&self) -> crate::Result<()> {
        self.rnn.validate()?;
        if self.input_size == 0 {
            return Err(crate::Error::invalid("input_size must be at least 1"));
        }
        if self.output_size == 0 {
            return Err(crate::Error::invalid("output_size must be at least 1"));
        }
        let want = match self.input {
            InputKind::Embedding => {
                if self.embed_dim == 0 {
                    return Err(crate::Error::invalid("embedding input needs embed_dim > 0"));
                }
                self.embed_dim
            }
            _ => self.input_size,
        };
        if self.rnn.input_size != want {
            return Err(crate::Error::invalid(format!(
                "rnn.input_size is {} but the input gives {} features",
                self.rnn.input_size, want
            )));
        }
        if self.tie_weights {
            if self.input != InputKind::Embedding {
                return Err(crate::Error::invalid(
                    "tied weights need embedding input (an embedding to tie the decoder to)",
                ));
            }
            if self.output_size != self.input_size {
                return Err(crate::Error::invalid(format!(
                    "tied weights need as many classes as symbols: output_size is {} but the vocabulary {}",
                    self.output_size, self.input_size
                )));
            }
            if self.embed_dim != self.rnn.output_size() {
                return Err(crate::Error::invalid(format!(
                    "tied weights need the embedding width equal to the stack's output width: embed_dim is {} but the top layer gives {} (its hidden or projection size times its directions)",
                    self.embed_dim,
                    self.rnn.output_size()
                )));
            }
        }
        Ok(())
    }
}

/// A model's input for one batch.
#[derive(Clone, Copy)]
pub enum Input<'a, F> {
    /// (T, B) token ids, for one-hot and embedding inputs.
    Tokens(&'a [u32]),
    /// (T, B, I) vectors, for dense input.
    Dense(&'a [F]),
}

/// Configuration plus parameter layout; holds no numbers itself. One training step is forward,
/// loss, backward (then an [`crate::optim::Optimizer`] update):
///
/// ```rust
/// use recur::cell::CellKind;
/// use recur::model::{Input, Model, ModelConfig};
/// use recur::rng::Rng;
/// use recur::stack::StackConfig;
///
/// let (v, t, b) = (5, 4, 2);
/// let model = Model::new(ModelConfig::char_model(v, 0, StackConfig::new(CellKind::Lstm, 0, 8))).unwrap();
/// let names: Vec<&str> = model.layout().entries.iter().map(|e| e.name.as_str()).collect();
/// assert_eq!(names[0], "rnn.weight_ih_l0");
/// assert_eq!(names.last(), Some(&"decoder.bias"));
/// let mut params = vec![0.0f32; model.num_params()];
/// model.init(&mut params, &mut Rng::new(0));
///
/// let inputs = [0, 1, 2, 3, 4, 0, 1, 2]; // (T, B) token ids
/// let targets = [1, 2, 3, 4, 0, 1, 2, 3];
/// let mut ws = model.workspace(t, b);
/// model.forward(&mut ws, &params, Input::Tokens(&inputs), None, None, None, None);
/// let n = (t * b) as f32;
/// let (sum, count) = model.loss(&mut ws, &targets, 1.0 / n); // mean cross-entropy's gradient
/// assert_eq!(count, t * b);
/// assert!((sum / count as f64 - (v as f64).ln()).abs() < 0.2); // about ln V at the start
/// let mut grads = vec![0.0f32; model.num_params()];
/// model.backward(&mut ws, &params, &mut grads, Input::Tokens(&inputs), None, None, None, None);
/// assert!(grads.iter().any(|&g| g != 0.0));
/// ```
#[derive(Clone, Debug)]
pub struct Model {
    cfg: ModelConfig,
    stack: Stack,
    /// Names, shapes and offsets of every tensor in the flat buffer.
    layout: ParamLayout,
    emb: Option<Range<usize>>,
    rnn: Range<usize>,
    dec_w: Range<usize>,
    dec_b: Option<Range<usize>>,
}

/// Buffers for one forward/backward of a model at fixed (T, B), sized once.
pub struct ModelWorkspace<F> {
    pub t: usize,
    pub b: usize,
    // V: decoder outputs per row
    v: usize,
    pub stack: StackWorkspace<F>,
    // emb: (T, B, E) looked-up embeddings; demb: its gradient
    emb: Vec<F>,
    demb: Vec<F>,
    /// logits: (R, V) decoder outputs (class scores, or predicted values for a regression head);
    /// R = T*B rows (step t, sequence b at row t*B + b) for per-step heads, B for last-step heads.
    pub logits: Vec<F>,
    /// dlogits: (R, V), filled by [`Model::loss`] / [`Model::loss_mse`]
    pub dlogits: Vec<F>,
    // dy: (T, B, D*P) gradient of the stack output
    dy: Vec<F>,
    // last: (B, D*P) last-step heads: each sequence's last output, the decoder's input;
    // dlast: its gradient
    last: Vec<F>,
    dlast: Vec<F>,
    // the number format (`set_precision`), and xq: (T, B, I) a dense input rounded to bf16
    precision: crate::Precision,
    xq: Vec<F>,
    // bf16 on its multiplier: dlogits^T (V, R), the left operand of dW_dec's product; sized when
    // first used
    dlogits_t: Vec<F>,
}

impl<F: Float> ModelWorkspace<F> {
    /// R: rows of `logits` (T*B for per-step heads, B for last-step heads).
    pub fn rows(&self) -> usize {
        self.logits.len() / self.v.max(1)
    }

    /// The number format of inference (float32 by default; the others on float32 workspaces
    /// only; see [`crate::precision`]): in bf16 the recurrent layers round their states and
    /// read their recurrent weights as bf16, and a dense input is rounded to bf16 before the
    /// first layer reads it; in int8 the recurrent products run on int8 codes. The parameters
    /// given to [`Model::forward`] must hold the format's weights
    /// ([`crate::precision::prepare_weights`]). Backward runs in float32 and bf16 (where the
    /// gradients of the logits and of the gates are rounded to bf16 before the products they
    /// enter), not in int8.
    pub fn set_precision(&mut self, p: crate::Precision) {
        self.stack.set_precision(p);
        self.precision = p;
    }

    /// The number format ([`ModelWorkspace::set_precision`]).
    pub fn precision(&self) -> crate::Precision {
        self.precision
    }
}

impl Model {
    /// The configuration it was built from (fixed: the parameter layout follows from it).
    pub fn cfg(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The recurrent stack inside.
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    /// Names, shapes and offsets of every tensor in the flat parameter buffer.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    pub fn new(cfg: ModelConfig) -> crate::Result<Self> {
        cfg.validate()?;
        let stack = Stack::new(cfg.rnn.clone())?;
        let mut layout = ParamLayout::default();
        let emb = (cfg.input == InputKind::Embedding)
            .then(|| layout.push("embedding.weight", &[cfg.input_size, cfg.embed_dim]));
        let start = layout.total;
        for e in &stack.layout().entries {
            layout.push(format!("rnn.{}", e.name), &e.shape);
        }
        let rnn = start..layout.total;
        let dec_w = if cfg.tie_weights {
            layout.alias("decoder.weight", "embedding.weight")
        } else {
            layout.push("decoder.weight", &[cfg.output_size, cfg.rnn.output_size()])
        };
        let dec_b = cfg
            .decoder_bias
            .then(|| layout.push("decoder.bias", &[cfg.output_size]));
        Ok(Model {
            cfg,
            stack,
            layout,
            emb,
            rnn,
            dec_w,
            dec_b,
        })
    }

    pub fn num_params(&self) -> usize {
        self.layout.total
    }

    /// PyTorch's defaults: embedding N(0, 1); the stack U(-1/sqrt(H), 1/sqrt(H)); the decoder
    /// (nn.Linear) U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias. Tied weights: the
    /// same draws, the decoder's written last, so the one matrix is the decoder's uniform and
    /// the stack's weights are those of the untied model with the same seed.
    pub fn init<F: Float>(&self, params: &mut [F], rng: &mut Rng) {
        if let Some(r) = &self.emb {
            for v in &mut params[r.clone()] {
                *v = F::from_f64(rng.normal());
            }
        }
        self.stack.init(&mut params[self.rnn.clone()], rng);
        let k = 1.0 / (self.cfg.rnn.output_size() as f64).sqrt();
        for v in &mut params[self.dec_w.clone()] {
            *v = F::from_f64(rng.uniform_in(-k, k));
        }
        if let Some(r) = &self.dec_b {
            for v in &mut params[r.clone()] {
                *v = F::from_f64(rng.uniform_in(-k, k));
            }
        }
    }

    /// A workspace for batches of `b` sequences of `t` steps.
    pub fn workspace<F: Float>(&self, t: usize, b: usize) -> ModelWorkspace<F> {
        let e = if self.emb.is_some() {
            t * b * self.cfg.embed_dim
        } else {
            0
        };
        let v = self.cfg.output_size;
        let dp = self.cfg.rnn.output_size();
        let (rows, last) = if self.cfg.head.last_step() {
            (b, b * dp)
        } else {
            (t * b, 0)
        };
        ModelWorkspace {
            t,
            b,
            v,
            stack: self.stack.workspace(t, b),
            emb: vec![F::ZERO; e],
            demb: vec![F::ZERO; e],
            logits: vec![F::ZERO; rows * v],
            dlogits: vec![F::ZERO; rows * v],
            dy: vec![F::ZERO; t * b * dp],
            last: vec![F::ZERO; last],
            dlast: vec![F::ZERO; last],
            precision: crate::Precision::F32,
            xq: Vec::new(),
            dlogits_t: Vec::new(),
        }
    }

    fn check_tokens(&self, ids: &[u32], n: usize) {
        assert!(ids.len() >= n, "need {n} token ids, got {}", ids.len());
        if let Some(&bad) = ids[..n]
            .iter()
            .find(|&&id| id as usize >= self.cfg.input_size)
        {
            panic!(
                "token id {bad} out of range for input_size {}",
                self.cfg.input_size
            );
        }
    }

    /// Forward: stack outputs and final states in `ws.stack`, logits in `ws.logits`.
    /// `h0` (L*D, B, P) and `c0` (L*D, B, H) default to zero; with `dropout_rng`, training mode.
    pub fn forward<F: Float>(
        &self,
        ws: &mut ModelWorkspace<F>,
        params: &[F],
        input: Input<F>,
        h0: Option<&[F]>,
        c0: Option<&[F]>,
        lengths: Option<&[usize]>,
        dropout_rng: Option<&mut Rng>,
    ) {
        let n = ws.t * ws.b;
        if let Input::Tokens(ids) = input {
            self.check_tokens(ids, n);
        }
        if let (Some(r), Input::Tokens(ids)) = (&self.emb, input) {
            let e = self.cfg.embed_dim;
            let table = &params[r.clone()];
            for (row, &id) in ws.emb.chunks_exact_mut(e).zip(&ids[..n]) {
                row.copy_from_slice(&table[id as usize * e..(id as usize + 1) * e]);
            }
        }
        let rnn_params = &params[self.rnn.clone()];
        // Split borrows: the stack workspace is written while the embedding buffer is read.
        let ModelWorkspace {
            stack: sws,
            emb,
            precision,
            xq,
            ..
        } = ws;
        let input = match input {
            Input::Dense(x) if *precision == crate::Precision::Bf16 => {
                // the input rounded to bf16 (F is f32: set_precision allows nothing else)
                let x = &x[..n * self.cfg.input_size];
                xq.clear();
                xq.extend_from_slice(x);
                crate::ops::bf16::round_float(xq);
                Input::Dense(&xq[..])
            }
            other => other,
        };
        let layer_in = match (self.cfg.input, input) {
            (InputKind::Embedding, Input::Tokens(_)) => LayerInput::Dense {
                x: &emb[..],
                ld: self.cfg.embed_dim,
            },
            (InputKind::OneHot, Input::Tokens(ids)) => LayerInput::OneHot { ids },
            (InputKind::Dense, Input::Dense(x)) => LayerInput::Dense {
                x,
                ld: self.cfg.input_size,
            },
            _ => panic!(
                "input does not match the model's input kind {:?}",
                self.cfg.input
            ),
        };
        self.stack
            .forward(sws, rnn_params, layer_in, h0, c0, lengths, dropout_rng);
        let (v, dp) = (self.cfg.output_size, self.cfg.rnn.output_size());
        if self.cfg.head.last_step() {
            self.gather_last(ws, lengths);
        }
        // logits = Y W_dec^T + b_dec: (R, D*P) x (D*P, V), Y the outputs of every step or the
        // last ones
        let (rows, y) = if self.cfg.head.last_step() {
            (ws.b, &ws.last[..])
        } else {
            (n, ws.stack.output())
        };
        if head_on_tiles::<F>(ws.precision) {
            let w = Right::Nk(f32s(&params[self.dec_w.clone()]));
            tile_gemm(
                Left::F32(f32s(y), dp),
                rows,
                dp,
                w,
                v,
                f32m(&mut ws.logits),
                v,
                false,
            );
        } else {
            gemm(
                Trans::N,
                Trans::T,
                rows,
                v,
                dp,
                F::ONE,
                y,
                dp,
                &params[self.dec_w.clone()],
                dp,
                F::ZERO,
                &mut ws.logits,
                v,
            );
        }
        if let Some(r) = &self.dec_b {
            let bias = &params[r.clone()];
            for row in ws.logits.chunks_exact_mut(v) {
                for (x, &bb) in row.iter_mut().zip(bias) {
                    *x += bb;
                }
            }
        }
    }

    /// Where sequence `b`'s last output sits for direction `d`: the step index.
    fn last_step_of(&self, lengths: Option<&[usize]>, t: usize, b: usize, d: usize) -> usize {
        if d == 1 {
            // the reverse direction ends at step 0
            return 0;
        }
        match lengths {
            Some(l) => {
                assert!(
                    (1..=t).contains(&l[b]),
                    "sequence {b} has length {}; lengths must be in 1..={t}",
                    l[b]
                );
                l[b] - 1
            }
            None => t - 1,
        }
    }

    /// last[b] = each direction's output at that sequence's last step: (B, D*P).
    fn gather_last<F: Float>(&self, ws: &mut ModelWorkspace<F>, lengths: Option<&[usize]>) {
        let (nb, p, nd) = (ws.b, self.cfg.rnn.out_size(), self.cfg.rnn.dirs());
        let dp = nd * p;
        let y = ws.stack.output();
        for b in 0..nb {
            for d in 0..nd {
                let s = self.last_step_of(lengths, ws.t, b, d);
                let src = (s * nb + b) * dp + d * p;
                ws.last[b * dp + d * p..b * dp + (d + 1) * p].copy_from_slice(&y[src..src + p]);
            }
        }
    }

    /// Cross-entropy of `ws.logits` against `targets` (one per row: T*B for the per-step head,
    /// B for the last-step head; [`crate::ops::loss::IGNORE`] for padded steps). Writes
    /// `scale * dL/dlogits` into `ws.dlogits`; returns (summed loss, count). With
    /// `scale = 1/count` the gradient is that of the mean, PyTorch's default reduction.
    pub fn loss<F: Float>(
        &self,
        ws: &mut ModelWorkspace<F>,
        targets: &[u32],
        scale: F,
    ) -> (f64, usize) {
        assert!(
            !self.cfg.head.regression(),
            "cross-entropy needs a classification head, not {}",
            self.cfg.head.name()
        );
        let n = ws.rows();
        softmax_xent(
            &ws.logits,
            n,
            self.cfg.output_size,
            targets,
            Some(&mut ws.dlogits),
            scale,
        )
    }

    /// Squared error of `ws.logits` against `targets` (R, V) for a regression head: the summed
    /// `(y - target)^2` over the elements whose target is not NaN (a NaN target marks a padded
    /// step) and their count. Writes `scale * dL/dlogits = scale * 2 (y - target)` into
    /// `ws.dlogits` (0 where the target is NaN). With `scale = 1/count` the gradient is that of
    /// the mean, PyTorch's `MSELoss()`.
    pub fn loss_mse<F: Float>(
        &self,
        ws: &mut ModelWorkspace<F>,
        targets: &[F],
        scale: F,
    ) -> (f64, usize) {
        assert!(
            self.cfg.head.regression(),
            "squared error needs a regression head, not {}",
            self.cfg.head.name()
        );
        let n = ws.rows() * self.cfg.output_size;
        assert!(
            targets.len() >= n,
            "need {n} regression targets, got {}",
            targets.len()
        );
        let (mut total, mut count) = (0.0f64, 0usize);
        let two = F::ONE + F::ONE;
        for ((d, &y), &tg) in ws.dlogits[..n].iter_mut().zip(&ws.logits[..n]).zip(targets) {
            if tg.to_f64().is_nan() {
                *d = F::ZERO;
                continue;
            }
            let e = y - tg;
            total += e.to_f64() * e.to_f64();
            count += 1;
            *d = scale * two * e;
        }
        (total, count)
    }

    /// Backward from `ws.dlogits` (and optional final-state gradients) through the decoder, the
    /// stack and the embedding. Gradients are accumulated into `grads`; `dx` (dense input only)
    /// is accumulated too; `ws.stack.dh0` / `dc0` receive the initial states' gradients.
    pub fn backward<F: Float>(
        &self,
        ws: &mut ModelWorkspace<F>,
        params: &[F],
        grads: &mut [F],
        input: Input<F>,
        lengths: Option<&[usize]>,
        dh_n: Option<&[F]>,
        dc_n: Option<&[F]>,
        dx: Option<&mut [F]>,
    ) {
        let n = ws.t * ws.b;
        let (v, dp) = (self.cfg.output_size, self.cfg.rnn.output_size());
        let last = self.cfg.head.last_step();
        let rows = ws.rows();
        if ws.precision == crate::Precision::Bf16 {
            // the logits' gradient as the head's bf16 products see it (and its bias)
            crate::ops::bf16::round_float(&mut ws.dlogits);
        }
        // forward was: logits = Y W_dec^T + b_dec, Y every step's output or the last ones
        // dW_dec += dlogits^T Y: (V, R) x (R, D*P)
        let tiles = head_on_tiles::<F>(ws.precision);
        let y = if last {
            &ws.last[..]
        } else {
            ws.stack.output()
        };
        if tiles {
            // the tiles read their left operand by rows: dlogits^T made first
            ws.dlogits_t.resize(v * rows, F::ZERO);
            crate::ops::transpose::transpose_split(&ws.dlogits, rows, v, &mut ws.dlogits_t, rows);
            let dw = f32m(&mut grads[self.dec_w.clone()]);
            let y = Right::Kn(f32s(y), dp);
            tile_gemm(
                Left::F32(f32s(&ws.dlogits_t), rows),
                v,
                rows,
                y,
                dp,
                dw,
                dp,
                true,
            );
        } else {
            gemm(
                Trans::T,
                Trans::N,
                v,
                dp,
                rows,
                F::ONE,
                &ws.dlogits,
                v,
                y,
                dp,
                F::ONE,
                &mut grads[self.dec_w.clone()],
                dp,
            );
        }
        if let Some(r) = &self.dec_b {
            add_col_sums(&mut grads[r.clone()], &ws.dlogits, rows, v, v);
        }
        // dY = dlogits W_dec: (R, V) x (V, D*P)
        let dy = if last { &mut ws.dlast } else { &mut ws.dy };
        if tiles {
            let w = Right::Kn(f32s(&params[self.dec_w.clone()]), dp);
            tile_gemm(
                Left::F32(f32s(&ws.dlogits), v),
                rows,
                v,
                w,
                dp,
                f32m(dy),
                dp,
                false,
            );
        } else {
            gemm(
                Trans::N,
                Trans::N,
                rows,
                dp,
                v,
                F::ONE,
                &ws.dlogits,
                v,
                &params[self.dec_w.clone()],
                dp,
                F::ZERO,
                dy,
                dp,
            );
        }
        if last {
            // forward was: last[b] = y[last step of b, b]: scatter back, zero elsewhere
            ws.dy.fill(F::ZERO);
            let (nb, p, nd) = (ws.b, self.cfg.rnn.out_size(), self.cfg.rnn.dirs());
            for b in 0..nb {
                for d in 0..nd {
                    let s = self.last_step_of(lengths, ws.t, b, d);
                    let dst = (s * nb + b) * dp + d * p;
                    ws.dy[dst..dst + p]
                        .copy_from_slice(&ws.dlast[b * dp + d * p..b * dp + (d + 1) * p]);
                }
            }
        }
        let rnn_params = &params[self.rnn.clone()];
        let (gemb, grest) = grads.split_at_mut(self.rnn.start);
        let rnn_grads = &mut grest[..self.rnn.len()];
        let ModelWorkspace {
            stack: sws,
            emb,
            demb,
            dy,
            precision,
            xq,
            ..
        } = ws;
        // The stack's input as in the forward pass, and where its input gradient goes.
        let (li, dx_in) = match (self.cfg.input, input) {
            (InputKind::Embedding, Input::Tokens(_)) => {
                demb.fill(F::ZERO);
                let li = LayerInput::Dense {
                    x: &emb[..],
                    ld: self.cfg.embed_dim,
                };
                (li, Some(&mut demb[..]))
            }
            (InputKind::OneHot, Input::Tokens(ids)) => (LayerInput::OneHot { ids }, None),
            (InputKind::Dense, Input::Dense(x)) => {
                // in bf16 the forward read the input rounded
                let x = if *precision == crate::Precision::Bf16 {
                    &xq[..]
                } else {
                    x
                };
                let li = LayerInput::Dense {
                    x,
                    ld: self.cfg.input_size,
                };
                (li, dx)
            }
            _ => panic!(
                "input does not match the model's input kind {:?}",
                self.cfg.input
            ),
        };
        self.stack.backward(
            sws,
            rnn_params,
            rnn_grads,
            li,
            lengths,
            Some(dy),
            dh_n,
            dc_n,
            dx_in,
        );
        if let (Some(r), Input::Tokens(ids)) = (self.emb.clone(), input) {
            // embedding backward: scatter-add each step's gradient into its token's row
            let e = self.cfg.embed_dim;
            let table = &mut gemb[r];
            for (row, &id) in demb.chunks_exact(e).zip(&ids[..n]) {
                let dst = &mut table[id as usize * e..(id as usize + 1) * e];
                for (a, &g) in dst.iter_mut().zip(row) {
                    *a += g;
                }
            }
        }
    }

    /// The range of the stack's parameters inside the flat buffer.
    pub fn rnn_range(&self) -> Range<usize> {
        self.rnn.clone()
    }
}

/// Whether the decoder's products run on the bf16 multiplier (AMX tiles or `vdpbf16ps`): bf16 (whose workspaces are float32 only)
/// and the tiles granted to this process.
fn head_on_tiles<F: Float>(precision: crate::Precision) -> bool {
    precision == crate::Precision::Bf16
        && std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>()
        && crate::ops::multiplier::native()
}
