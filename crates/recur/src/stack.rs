//! A stack of recurrent layers x directions, as torch.nn.RNN / LSTM / GRU: inter-layer dropout
//! (training only, inverted, seeded), optional biases, LSTM projections, initial states, and
//! per-sequence lengths (PyTorch's packed sequences).
//!
//! Parameters are a slice of the model's flat buffer, in PyTorch's order: for each layer, for
//! each direction: `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`, `weight_hr`.

use crate::cell::{self, CellKind, DirCache, DirDims, DirGrads, DirWeights, LayerInput};
use crate::ops::aligned::AVec;
use crate::ops::Float;
use crate::params::ParamLayout;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Configuration of a recurrent stack (the arguments of torch.nn.LSTM and friends).
///
/// ```rust
/// use recur::cell::CellKind;
/// use recur::stack::StackConfig;
///
/// // torch.nn.LSTM(10, 32, num_layers=2, bidirectional=True, proj_size=16)
/// let cfg = StackConfig::new(CellKind::Lstm, 10, 32)
///     .with_layers(2)
///     .with_bidirectional(true)
///     .with_proj_size(16);
/// assert!(cfg.validate().is_ok());
/// assert_eq!(cfg.output_size(), 2 * 16); // D * P per step
/// assert_eq!(cfg.layer_input(1), 32); // layer 1 reads layer 0's two directions
/// assert!(cfg.clone().with_proj_size(32).validate().is_err()); // proj_size < hidden_size
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StackConfig {
    /// The cell. Stored on disk (checkpoint metadata) by its name, `rnn_tanh`, `rnn_relu`,
    /// `lstm` or `gru` (see [`CellKind::name`]); an unknown name fails to load with an error
    /// that names it.
    #[serde(with = "cell_name")]
    pub cell: CellKind,
    /// Features of each input step.
    pub input_size: usize,
    /// H: hidden units per direction.
    pub hidden_size: usize,
    /// L: stacked layers. Default 1.
    pub num_layers: usize,
    /// Two directions, outputs concatenated (forward first). Default false.
    pub bidirectional: bool,
    /// Biases `bias_ih` and `bias_hh`. Default true.
    pub bias: bool,
    /// LSTM only: project h to this size (0 = no projection). Default 0.
    pub proj_size: usize,
    /// Dropout probability on the inputs of layers 1.. during training. Default 0.
    pub dropout: f64,
    /// Weight drop (DropConnect on the recurrent weights, as AWD-LSTM's `WeightDrop`): during
    /// training, each element of every `weight_hh` is zeroed with this probability (the rest
    /// scaled by 1/(1-p)), one mask per forward call, i.e. per batch of sequences. Default 0.
    #[serde(default)]
    pub weight_drop: f64,
    /// Dropout on the last layer's outputs (what a decoder reads) during training. Default 0.
    #[serde(default)]
    pub dropout_output: f64,
    /// Dropout on the first layer's inputs during training (AWD-LSTM's `dropouti`): on a dense
    /// input (features, an embedding's output) each element; on one-hot tokens each element of
    /// the one-hot vector, so a token is dropped whole (locked: the same symbols for all the
    /// steps of a sequence, an embedding dropout per sequence). Default 0.
    #[serde(default)]
    pub dropout_input: f64,
    /// How dropout masks (input, between layers, output) are drawn: a new one at every step, or one per sequence kept for all its
    /// steps (locked, or variational, dropout). Default step.
    #[serde(default)]
    pub dropout_mode: DropoutMode,
}

/// How a dropout mask is drawn over the steps of a sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropoutMode {
    /// Every element of every step drawn anew (torch.nn's dropout between layers).
    #[default]
    Step,
    /// One mask per sequence, the same at every step (Gal and Ghahramani's variational dropout,
    /// AWD-LSTM's `LockedDropout`).
    Locked,
}

impl DropoutMode {
    pub fn name(self) -> &'static str {
        match self {
            DropoutMode::Step => "step",
            DropoutMode::Locked => "locked",
        }
    }
}

impl StackConfig {
    /// A one-layer, one-direction stack with biases.
    pub fn new(kind: CellKind, input_size: usize, hidden_size: usize) -> Self {
        StackConfig {
            cell: kind,
            input_size,
            hidden_size,
            num_layers: 1,
            bidirectional: false,
            bias: true,
            proj_size: 0,
            dropout: 0.0,
            weight_drop: 0.0,
            dropout_output: 0.0,
            dropout_input: 0.0,
            dropout_mode: DropoutMode::Step,
        }
    }
    /// `num_layers`: stacked layers, each reading the one below (default 1).
    pub fn with_layers(mut self, n: usize) -> Self {
        self.num_layers = n;
        self
    }
    /// `bidirectional`: a second direction reading the sequence backwards in every layer, its
    /// outputs beside the first's (default false).
    pub fn with_bidirectional(mut self, on: bool) -> Self {
        self.bidirectional = on;
        self
    }
    /// `bias`: the `b_ih` and `b_hh` vectors (default true).
    pub fn with_bias(mut self, on: bool) -> Self {
        self.bias = on;
        self
    }
    /// `proj_size`: LSTM only, h_t projected to `p` units by `weight_hr` (default 0: none).
    pub fn with_proj_size(mut self, p: usize) -> Self {
        self.proj_size = p;
        self
    }
    /// `dropout`: the probability of zeroing each output of every layer but the last, in
    /// training mode (default 0).
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }

    /// `weight_drop`: the probability of zeroing each recurrent weight (`weight_hh`) for a
    /// training forward, one mask per call (default 0).
    pub fn with_weight_drop(mut self, p: f64) -> Self {
        self.weight_drop = p;
        self
    }

    /// `dropout_output`: the probability of zeroing each output of the last layer in training
    /// mode (default 0).
    pub fn with_dropout_output(mut self, p: f64) -> Self {
        self.dropout_output = p;
        self
    }

    /// `dropout_input`: the probability of zeroing each element of the first layer's input in
    /// training mode (default 0).
    pub fn with_dropout_input(mut self, p: f64) -> Self {
        self.dropout_input = p;
        self
    }

    /// `dropout_mode`: a new mask at every step (default) or one per sequence (locked).
    pub fn with_dropout_mode(mut self, m: DropoutMode) -> Self {
        self.dropout_mode = m;
        self
    }

    /// The cell kind.
    pub fn kind(&self) -> CellKind {
        self.cell
    }

    /// Checks the configuration; the error names the offending field.
    pub fn validate(&self) -> crate::Result<()> {
        let kind = self.cell;
        if self.hidden_size == 0 {
            return Err(crate::Error::invalid("hidden_size must be at least 1"));
        }
        if self.num_layers == 0 {
            return Err(crate::Error::invalid("num_layers must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(crate::Error::invalid(format!(
                "dropout must be in [0, 1), got {}",
                self.dropout
            )));
        }
        if !(0.0..1.0).contains(&self.dropout_output) {
            return Err(crate::Error::invalid(format!(
                "dropout_output must be in [0, 1), got {}",
                self.dropout_output
            )));
        }
        if !(0.0..1.0).contains(&self.dropout_input) {
            return Err(crate::Error::invalid(format!(
                "dropout_input must be in [0, 1), got {}",
                self.dropout_input
            )));
        }
        if !(0.0..1.0).contains(&self.weight_drop) {
            return Err(crate::Error::invalid(format!(
                "weight_drop must be in [0, 1), got {}",
                self.weight_drop
            )));
        }
        if self.proj_size > 0 && kind != CellKind::Lstm {
            return Err(crate::Error::invalid(
                "proj_size is only supported by the LSTM",
            ));
        }
        if self.proj_size >= self.hidden_size && self.proj_size > 0 {
            return Err(crate::Error::invalid(format!(
                "proj_size ({}) must be smaller than hidden_size ({})",
                self.proj_size, self.hidden_size
            )));
        }
        // the flat parameter buffer's offsets are usize, and its bytes must fit one allocation
        let n = crate::memory::stack_params(self);
        if n > (isize::MAX as u128) / 8 {
            return Err(crate::Error::invalid(format!(
                "{n} parameters (hidden_size {}, {} layers) are more than any machine can hold",
                self.hidden_size, self.num_layers
            )));
        }
        Ok(())
    }

    /// D: 1 or 2 directions.
    pub fn dirs(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// P: size of each direction's output and recurrent state.
    pub fn out_size(&self) -> usize {
        if self.proj_size > 0 {
            self.proj_size
        } else {
            self.hidden_size
        }
    }

    /// Size of the stack's output per step: D * P.
    pub fn output_size(&self) -> usize {
        self.dirs() * self.out_size()
    }

    /// Input size of layer `l`.
    pub fn layer_input(&self, l: usize) -> usize {
        if l == 0 {
            self.input_size
        } else {
            self.output_size()
        }
    }
}

/// The on-disk form of [`StackConfig::cell`]: the cell's name as a string.
mod cell_name {
    use crate::cell::CellKind;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(kind: &CellKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<CellKind, D::Error> {
        let name = String::deserialize(d)?;
        CellKind::parse(&name).ok_or_else(|| {
            D::Error::custom(format!(
                "unknown cell '{name}' (expected rnn_tanh, rnn_relu, lstm or gru)"
            ))
        })
    }
}

/// Checks per-sequence lengths against a batch of `b` sequences of `t` steps: one length per
/// sequence, each in `1..=t` (PyTorch's packed sequences refuse empty ones too). Callers that take
/// lengths from users call this and report the error; [`Stack::forward`] panics on bad lengths.
pub fn check_lengths(lengths: Option<&[usize]>, t: usize, b: usize) -> crate::Result<()> {
    let Some(l) = lengths else { return Ok(()) };
    if l.len() != b {
        return Err(crate::Error::invalid(format!(
            "{} lengths given for a batch of {b} sequences",
            l.len()
        )));
    }
    if let Some((i, &bad)) = l.iter().enumerate().find(|(_, &n)| n == 0 || n > t) {
        return Err(crate::Error::invalid(format!(
            "length {bad} of sequence {i} is outside 1..={t}"
        )));
    }
    Ok(())
}

/// Where one direction's tensors sit inside the stack's parameter slice.
#[derive(Clone, Debug)]
struct DirSlots {
    all: Range<usize>,
    w_ih: Range<usize>,
    w_hh: Range<usize>,
    b_ih: Option<Range<usize>>,
    b_hh: Option<Range<usize>>,
    w_hr: Option<Range<usize>>,
}

/// A recurrent stack: configuration plus parameter layout. Holds no numbers itself: the
/// parameters are a flat slice (in PyTorch's order, named by [`Stack::layout`]), and everything a
/// forward and backward of one (T, B) shape need is a [`StackWorkspace`].
///
/// ```rust
/// use recur::cell::{CellKind, LayerInput};
/// use recur::rng::Rng;
/// use recur::stack::{Stack, StackConfig};
///
/// let (t, b, i, h) = (6, 2, 3, 5);
/// let stack = Stack::new(StackConfig::new(CellKind::Gru, i, h)).unwrap();
/// assert_eq!(stack.layout().entries[0].name, "weight_ih_l0"); // torch's names and shapes
/// assert_eq!(stack.layout().entries[0].shape, [3 * h, i]);
/// let mut params = vec![0.0f32; stack.num_params()];
/// stack.init(&mut params, &mut Rng::new(0));
///
/// let x = vec![0.5f32; t * b * i]; // (T, B, I)
/// let mut ws = stack.workspace(t, b);
/// stack.forward(&mut ws, &params, LayerInput::Dense { x: &x, ld: i }, None, None, None, None);
/// assert_eq!(ws.output().len(), t * b * h); // (T, B, H)
/// // one layer, one direction: h_n is the last step's output
/// assert_eq!(ws.h_n[..], ws.output()[(t - 1) * b * h..]);
/// ```
#[derive(Clone, Debug)]
pub struct Stack {
    cfg: StackConfig,
    kind: CellKind,
    slots: Vec<DirSlots>,
    /// Names and shapes relative to the stack (`weight_ih_l0`, ...), offsets from its start.
    layout: ParamLayout,
}

/// Per-call shapes: steps and batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqShape {
    pub t: usize,
    pub b: usize,
}

/// Everything a forward and backward of a stack needs besides the parameters, sized once.
pub struct StackWorkspace<F> {
    pub shape: SeqShape,
    caches: Vec<DirCache<F>>,
    /// Per layer: outputs (T, B, D*P).
    pub outs: Vec<AVec<F>>,
    // per layer l > 0: the dropped-out input and the mask (0 or 1/(1-p)), (T, B, D*P)
    dropped: Vec<AVec<F>>,
    masks: Vec<AVec<F>>,
    dropout_on: Vec<bool>,
    // weight drop, per layer x direction: the masked weight_hh of this call and its mask (0 or
    // 1/(1-p)); a buffer for weight_hh's gradient; whether the last forward dropped weights
    wd_w: Vec<AVec<F>>,
    wd_mask: Vec<AVec<F>>,
    wd_grad: AVec<F>,
    wd_on: bool,
    // output dropout: the last layer's dropped-out outputs and their mask, (T, B, D*P)
    out_dropped: AVec<F>,
    out_mask: AVec<F>,
    out_drop_on: bool,
    // input dropout: layer 0's dropped-out input (dense, (T, B, I)), its mask, the gradient
    // of the dropped input (for a dense input's gradient); whether the last forward dropped
    in_dropped: AVec<F>,
    in_mask: AVec<F>,
    in_grad: AVec<F>,
    in_drop_on: bool,
    // per layer: gradient of its outputs (T, B, D*P)
    douts: Vec<AVec<F>>,
    dinput: AVec<F>,
    /// Final states: h_n (L*D, B, P) and c_n (L*D, B, H, LSTM only), PyTorch's layout.
    pub h_n: Vec<F>,
    pub c_n: Vec<F>,
    /// Gradients of the initial states after [`Stack::backward`]: (L*D, B, P) and (L*D, B, H).
    pub dh0: Vec<F>,
    pub dc0: Vec<F>,
}

impl<F: Float> StackWorkspace<F> {
    /// Whether the layers compute in bf16 ([`StackWorkspace::set_precision`]).
    fn bf16(&self) -> bool {
        self.caches
            .first()
            .is_some_and(|c| c.precision == crate::Precision::Bf16)
    }

    /// The last layer's outputs (T, B, D*P).
    pub fn output(&self) -> &[F] {
        if self.out_drop_on {
            return &self.out_dropped;
        }
        self.outs.last().expect("at least one layer")
    }

    /// Inference mode: forward keeps only what the next step needs, not every step's gates and
    /// states, which makes it faster (less memory traffic per step); [`Stack::backward`] then
    /// refuses to run (it panics) until inference mode is switched off and forward run again.
    /// Off by default.
    pub fn set_inference(&mut self, on: bool) {
        for c in &mut self.caches {
            c.keep = !on;
        }
    }

    /// Fixed weights: the caller promises that the parameters given to forward do not change
    /// (are not written) until this is switched off; forward then packs each weight matrix once
    /// and reuses the packed copy (see [`DirCache::set_fixed_weights`](crate::cell::DirCache::set_fixed_weights)). For running many short
    /// forwards with one set of weights, as the text generator does one character at a time.
    /// Switching it off forgets the packed copies. Off by default.
    pub fn set_fixed_weights(&mut self, on: bool) {
        for c in &mut self.caches {
            c.set_fixed_weights(on);
        }
    }

    /// The number format of inference (float32 by default; the others on float32 workspaces
    /// only): see [`DirCache::set_precision`](crate::cell::DirCache::set_precision) and
    /// [`crate::precision`]. The parameters given to forward must then hold the format's
    /// weights ([`crate::precision::prepare_weights`]), and in bf16 a dense input bf16 values.
    pub fn set_precision(&mut self, p: crate::Precision) {
        for c in &mut self.caches {
            c.set_precision(p);
        }
    }

    /// Bytes held by this workspace.
    pub fn bytes(&self) -> usize {
        let v = |x: &Vec<AVec<F>>| x.iter().map(|v| v.len()).sum::<usize>();
        let n = v(&self.outs)
            + v(&self.dropped)
            + v(&self.masks)
            + v(&self.douts)
            + self.dinput.len()
            + v(&self.wd_w)
            + v(&self.wd_mask)
            + self.wd_grad.len()
            + self.out_dropped.len()
            + self.out_mask.len()
            + self.in_dropped.len()
            + self.in_mask.len()
            + self.in_grad.len()
            + self.h_n.len()
            + self.c_n.len()
            + self.dh0.len()
            + self.dc0.len();
        n * std::mem::size_of::<F>() + self.caches.iter().map(|c| c.bytes()).sum::<usize>()
    }
}

impl Stack {
    /// The configuration it was built from (fixed: the parameter layout follows from it).
    pub fn cfg(&self) -> &StackConfig {
        &self.cfg
    }

    /// Names and shapes relative to the stack (`weight_ih_l0`, ...), offsets from its start.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// Builds the layout; the configuration must be valid.
    pub fn new(cfg: StackConfig) -> crate::Result<Self> {
        cfg.validate()?;
        let kind = cfg.kind();
        let gh = kind.gates() * cfg.hidden_size;
        let (h, p) = (cfg.hidden_size, cfg.out_size());
        let mut layout = ParamLayout::default();
        let mut slots = Vec::new();
        for l in 0..cfg.num_layers {
            for d in 0..cfg.dirs() {
                let sfx = if d == 1 {
                    format!("_l{l}_reverse")
                } else {
                    format!("_l{l}")
                };
                let start = layout.total;
                let w_ih = layout.push(format!("weight_ih{sfx}"), &[gh, cfg.layer_input(l)]);
                let w_hh = layout.push(format!("weight_hh{sfx}"), &[gh, p]);
                let (b_ih, b_hh) = if cfg.bias {
                    (
                        Some(layout.push(format!("bias_ih{sfx}"), &[gh])),
                        Some(layout.push(format!("bias_hh{sfx}"), &[gh])),
                    )
                } else {
                    (None, None)
                };
                let w_hr = if cfg.proj_size > 0 {
                    Some(layout.push(format!("weight_hr{sfx}"), &[p, h]))
                } else {
                    None
                };
                slots.push(DirSlots {
                    all: start..layout.total,
                    w_ih,
                    w_hh,
                    b_ih,
                    b_hh,
                    w_hr,
                });
            }
        }
        Ok(Stack {
            cfg,
            kind,
            slots,
            layout,
        })
    }

    pub fn kind(&self) -> CellKind {
        self.kind
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.layout.total
    }

    /// PyTorch's default initialization: every tensor U(-1/sqrt(H), 1/sqrt(H)).
    pub fn init<F: Float>(&self, params: &mut [F], rng: &mut Rng) {
        let k = 1.0 / (self.cfg.hidden_size as f64).sqrt();
        for v in params[..self.layout.total].iter_mut() {
            *v = F::from_f64(rng.uniform_in(-k, k));
        }
    }

    /// Opens the carry path: adds `bias` to the `bias_ih` rows of the gate that keeps the old
    /// state, in every layer and direction: the LSTM's forget gate f and the GRU's update gate z
    /// (rows H..2H in both gate orders). With `bias` = 1 this is the LSTM forget-gate bias of
    /// Jozefowicz et al. (2015); larger values hold f, z near 1 from the first step, so the
    /// gradient reaches far back before training has learnt to keep it. The Elman RNN has no
    /// such gate and a stack without biases nowhere to put it: both are left unchanged.
    pub fn open_carry_gates<F: Float>(&self, params: &mut [F], bias: f64) {
        if !matches!(self.kind, CellKind::Lstm | CellKind::Gru) || bias == 0.0 {
            return;
        }
        let h = self.cfg.hidden_size;
        for s in &self.slots {
            if let Some(r) = &s.b_ih {
                for v in &mut params[r.start + h..r.start + 2 * h] {
                    *v = F::from_f64(v.to_f64() + bias);
                }
            }
        }
    }

    fn weights<'a, F: Float>(&self, params: &'a [F], idx: usize) -> DirWeights<'a, F> {
        let s = &self.slots[idx];
        DirWeights {
            w_ih: &params[s.w_ih.clone()],
            w_hh: &params[s.w_hh.clone()],
            b_ih: s.b_ih.clone().map(|r| &params[r]),
            b_hh: s.b_hh.clone().map(|r| &params[r]),
            w_hr: s.w_hr.clone().map(|r| &params[r]),
        }
    }

    fn grads<'a, F: Float>(&self, grads: &'a mut [F], idx: usize) -> DirGrads<'a, F> {
        let s = &self.slots[idx];
        // The tensors of one direction are contiguous and in this order: split them apart.
        let base = s.all.start;
        let region = &mut grads[s.all.clone()];
        let (w_ih, rest) = region.split_at_mut(s.w_ih.len());
        let (w_hh, mut rest) = rest.split_at_mut(s.w_hh.len());
        let mut take = |r: &Option<Range<usize>>| -> Option<&'a mut [F]> {
            r.as_ref().map(|r| {
                let tmp = std::mem::take(&mut rest);
                let (a, b) = tmp.split_at_mut(r.len());
                rest = b;
                a
            })
        };
        let b_ih = take(&s.b_ih);
        let b_hh = take(&s.b_hh);
        let w_hr = take(&s.w_hr);
        debug_assert_eq!(s.w_ih.start, base);
        DirGrads {
            w_ih,
            w_hh,
            b_ih,
            b_hh,
            w_hr,
        }
    }

    fn dir_dims(&self, shape: SeqShape, l: usize, d: usize) -> DirDims {
        DirDims {
            kind: self.kind,
            t: shape.t,
            b: shape.b,
            i: self.cfg.layer_input(l),
            h: self.cfg.hidden_size,
            p: self.cfg.out_size(),
            reverse: d == 1,
        }
    }

    /// A workspace for sequences of `t` steps in batches of `b`.
    pub fn workspace<F: Float>(&self, t: usize, b: usize) -> StackWorkspace<F> {
        let shape = SeqShape { t, b };
        let (nl, nd) = (self.cfg.num_layers, self.cfg.dirs());
        let (h, p) = (self.cfg.hidden_size, self.cfg.out_size());
        let out = t * b * nd * p;
        let lstm = self.kind == CellKind::Lstm;
        let mut caches = Vec::new();
        for l in 0..nl {
            for d in 0..nd {
                caches.push(DirCache::new(self.dir_dims(shape, l, d)));
            }
        }
        let z = |n: usize| AVec::zeroed(n);
        let v = |n: usize| vec![F::ZERO; n];
        let drop = self.cfg.dropout > 0.0;
        // weight drop: a masked copy of each direction's weight_hh and its mask
        let wd_len = |idx: usize| {
            if self.cfg.weight_drop > 0.0 {
                self.slots[idx].w_hh.len()
            } else {
                0
            }
        };
        let wd = || (0..nl * nd).map(|idx| z(wd_len(idx))).collect::<Vec<_>>();
        let out_drop = if self.cfg.dropout_output > 0.0 {
            out
        } else {
            0
        };
        let in_drop = if self.cfg.dropout_input > 0.0 {
            t * b * self.cfg.input_size
        } else {
            0
        };
        StackWorkspace {
            shape,
            caches,
            outs: (0..nl).map(|_| z(out)).collect(),
            // only a stack with dropout needs the dropped-out inputs and their masks
            dropped: (0..nl)
                .map(|l| z(if l > 0 && drop { out } else { 0 }))
                .collect(),
            masks: (0..nl)
                .map(|l| z(if l > 0 && drop { out } else { 0 }))
                .collect(),
            dropout_on: vec![false; nl],
            wd_w: wd(),
            wd_mask: wd(),
            wd_grad: z((0..nl * nd).map(wd_len).max().unwrap_or(0)),
            wd_on: false,
            out_dropped: z(out_drop),
            out_mask: z(out_drop),
            out_drop_on: false,
            in_dropped: z(in_drop),
            in_mask: z(in_drop),
            in_grad: z(in_drop),
            in_drop_on: false,
            douts: (0..nl).map(|_| z(out)).collect(),
            dinput: z(if nl > 1 { out } else { 0 }),
            h_n: v(nl * nd * b * p),
            c_n: v(if lstm { nl * nd * b * h } else { 0 }),
            dh0: v(nl * nd * b * p),
            dc0: v(if lstm { nl * nd * b * h } else { 0 }),
        }
    }

    /// Forward through all layers. `input` is layer 0's input; `h0` (L*D, B, P) and `c0`
    /// (L*D, B, H) are the initial states (zero when `None`); `lengths` (B) the per-sequence
    /// lengths (all T when `None`). With `dropout_rng`, training mode: dropout masks are drawn.
    /// Results: `ws.output()`, `ws.h_n`, `ws.c_n`.
    pub fn forward<F: Float>(
        &self,
        ws: &mut StackWorkspace<F>,
        params: &[F],
        input: LayerInput<F>,
        h0: Option<&[F]>,
        c0: Option<&[F]>,
        lengths: Option<&[usize]>,
        mut dropout_rng: Option<&mut Rng>,
    ) {
        let SeqShape { t, b } = ws.shape;
        if let Err(e) = check_lengths(lengths, t, b) {
            panic!("Stack::forward: {e} (validate with stack::check_lengths first)");
        }
        let (nl, nd) = (self.cfg.num_layers, self.cfg.dirs());
        let (h, p) = (self.cfg.hidden_size, self.cfg.out_size());
        let ldy = nd * p;
        // Weight drop: every direction's recurrent weights masked once for this call, drawn
        // before the dropout masks (layer by layer, forward direction first).
        // In bf16 every masked copy is rounded again (a mask scales by 1/(1-p)), so that the
        // products read bf16 values.
        let bf16 = ws.bf16();
        let to_format = |x: &mut [F]| {
            if bf16 {
                crate::ops::bf16::round_float(x)
            }
        };
        ws.wd_on = false;
        if let (Some(rng), true) = (dropout_rng.as_deref_mut(), self.cfg.weight_drop > 0.0) {
            for idx in 0..nl * nd {
                let (mask, w) = (&mut ws.wd_mask[idx], &mut ws.wd_w[idx]);
                let n = mask.len();
                draw_mask(mask, self.cfg.weight_drop, DropoutMode::Step, n, rng);
                apply_mask(w, &params[self.slots[idx].w_hh.clone()], mask);
                to_format(w);
            }
            ws.wd_on = true;
        }
        // Input dropout: layer 0's input as a dense (T, B, I) copy times its mask.
        ws.in_drop_on = false;
        if let (Some(rng), true) = (dropout_rng.as_deref_mut(), self.cfg.dropout_input > 0.0) {
            let i = self.cfg.input_size;
            let p = self.cfg.dropout_input;
            draw_mask(&mut ws.in_mask, p, self.cfg.dropout_mode, b * i, rng);
            mask_input(&mut ws.in_dropped, input, &ws.in_mask, i);
            to_format(&mut ws.in_dropped);
            ws.in_drop_on = true;
        }
        for l in 0..nl {
            // Layer input: the real input, or the previous layer's output (dropped out in training).
            let (prev, cur) = ws.outs.split_at_mut(l);
            let layer_in = if l == 0 {
                if ws.in_drop_on {
                    LayerInput::Dense {
                        x: &ws.in_dropped,
                        ld: self.cfg.input_size,
                    }
                } else {
                    input
                }
            } else {
                let prev_out = &prev[l - 1];
                let pdrop = self.cfg.dropout;
                match (dropout_rng.as_deref_mut(), pdrop > 0.0) {
                    (Some(rng), true) => {
                        draw_mask(&mut ws.masks[l], pdrop, self.cfg.dropout_mode, b * ldy, rng);
                        apply_mask(&mut ws.dropped[l], prev_out, &ws.masks[l]);
                        to_format(&mut ws.dropped[l]);
                        ws.dropout_on[l] = true;
                        LayerInput::Dense {
                            x: &ws.dropped[l],
                            ld: ldy,
                        }
                    }
                    _ => {
                        ws.dropout_on[l] = false;
                        LayerInput::Dense {
                            x: prev_out,
                            ld: ldy,
                        }
                    }
                }
            };
            let y = &mut cur[0];
            for d in 0..nd {
                let idx = l * nd + d;
                let mut w = self.weights(params, idx);
                if ws.wd_on {
                    w.w_hh = &ws.wd_w[idx];
                }
                let h0d = h0.map(|v| &v[idx * b * p..(idx + 1) * b * p]);
                let c0d = c0.map(|v| &v[idx * b * h..(idx + 1) * b * h]);
                let (hn, cn) = (
                    &mut ws.h_n[idx * b * p..(idx + 1) * b * p],
                    if ws.c_n.is_empty() {
                        &mut [][..]
                    } else {
                        &mut ws.c_n[idx * b * h..(idx + 1) * b * h]
                    },
                );
                cell::forward(
                    &mut ws.caches[idx],
                    cell::DirForward {
                        weights: &w,
                        input: layer_in,
                        lengths,
                        h0: h0d,
                        c0: c0d,
                        y: &mut y[d * p..],
                        ldy,
                        h_n: hn,
                        c_n: cn,
                    },
                );
            }
        }
        // Dropout on the last layer's outputs (drawn after every other mask of the call).
        ws.out_drop_on = false;
        if let (Some(rng), true) = (dropout_rng, self.cfg.dropout_output > 0.0) {
            let pout = self.cfg.dropout_output;
            draw_mask(&mut ws.out_mask, pout, self.cfg.dropout_mode, b * ldy, rng);
            let top = ws.outs.last().expect("at least one layer");
            apply_mask(&mut ws.out_dropped, top, &ws.out_mask);
            to_format(&mut ws.out_dropped);
            ws.out_drop_on = true;
        }
    }
    /// [`Stack::forward`] in the common case: zero initial states, every sequence T steps long,
    /// no dropout.
    pub fn forward_from_zeros<F: Float>(
        &self,
        ws: &mut StackWorkspace<F>,
        params: &[F],
        input: LayerInput<F>,
    ) {
        self.forward(ws, params, input, None, None, None, None);
    }

    /// [`Stack::backward`] of [`Stack::forward_from_zeros`] with the gradient `dy` (T, B, D*P) of
    /// the outputs only (none for h_n, c_n; no input gradient).
    pub fn backward_from_outputs<F: Float>(
        &self,
        ws: &mut StackWorkspace<F>,
        params: &[F],
        grads: &mut [F],
        input: LayerInput<F>,
        dy: &[F],
    ) {
        self.backward(ws, params, grads, input, None, Some(dy), None, None, None);
    }

    /// Backward through all layers, after [`Stack::forward`] with the same arguments.
    ///
    /// `dy`: gradient of the last layer's outputs (T, B, D*P), or `None`; `dh_n`, `dc_n`: gradients
    /// of the final states, or `None`. Parameter gradients are accumulated into `grads`; `dx`
    /// (dense input only, (T, B, I)) is accumulated; `ws.dh0`, `ws.dc0` receive the initial
    /// states' gradients.
    pub fn backward<F: Float>(
        &self,
        ws: &mut StackWorkspace<F>,
        params: &[F],
        grads: &mut [F],
        input: LayerInput<F>,
        lengths: Option<&[usize]>,
        dy: Option<&[F]>,
        dh_n: Option<&[F]>,
        dc_n: Option<&[F]>,
        mut dx: Option<&mut [F]>,
    ) {
        let SeqShape { t: _, b } = ws.shape;
        let (nl, nd) = (self.cfg.num_layers, self.cfg.dirs());
        let (h, p) = (self.cfg.hidden_size, self.cfg.out_size());
        let ldy = nd * p;
        let top = nl - 1;
        match dy {
            Some(dy) => {
                let n = ws.douts[top].len();
                ws.douts[top].copy_from_slice(&dy[..n]);
                // through the output dropout: d(output) = d(dropped output) * mask
                if ws.out_drop_on {
                    for (g, &m) in ws.douts[top].iter_mut().zip(&ws.out_mask) {
                        *g *= m;
                    }
                }
            }
            None => ws.douts[top].fill(F::ZERO),
        }
        // with input dropout, a dense input's gradient goes through the mask: the cell's goes
        // to a buffer first
        let in_grad = ws.in_drop_on && dx.is_some();
        if in_grad {
            ws.in_grad.fill(F::ZERO);
        }
        for l in (0..nl).rev() {
            let layer_in = if l == 0 && ws.in_drop_on {
                LayerInput::Dense {
                    x: &ws.in_dropped,
                    ld: self.cfg.input_size,
                }
            } else if l == 0 {
                input
            } else if ws.dropout_on[l] {
                LayerInput::Dense {
                    x: &ws.dropped[l],
                    ld: ldy,
                }
            } else {
                LayerInput::Dense {
                    x: &ws.outs[l - 1],
                    ld: ldy,
                }
            };
            if l > 0 {
                ws.dinput.fill(F::ZERO);
            }
            for d in 0..nd {
                let idx = l * nd + d;
                let mut w = self.weights(params, idx);
                let g = self.grads(grads, idx);
                // weight drop: the cell sees the masked weight_hh; its gradient wrt the raw
                // weights is the mask times the gradient wrt the masked ones
                if ws.wd_on {
                    w.w_hh = &ws.wd_w[idx];
                    let n = g.w_hh.len();
                    ws.wd_grad[..n].copy_from_slice(g.w_hh);
                    g.w_hh.fill(F::ZERO);
                }
                let dhn = dh_n.map(|v| &v[idx * b * p..(idx + 1) * b * p]);
                let dcn = dc_n.map(|v| &v[idx * b * h..(idx + 1) * b * h]);
                let dxd = if l > 0 {
                    Some((&mut ws.dinput[..], ldy))
                } else if in_grad {
                    Some((&mut ws.in_grad[..], self.cfg.input_size))
                } else {
                    dx.as_deref_mut().map(|v| (v, self.cfg.input_size))
                };
                let dc0 = if ws.dc0.is_empty() {
                    &mut [][..]
                } else {
                    &mut ws.dc0[idx * b * h..(idx + 1) * b * h]
                };
                cell::backward(
                    &mut ws.caches[idx],
                    cell::DirBackward {
                        weights: &w,
                        grads: g,
                        input: layer_in,
                        lengths,
                        dy: Some((&ws.douts[l][d * p..], ldy)),
                        dh_n: dhn,
                        dc_n: dcn,
                        dx: dxd,
                        dh0: &mut ws.dh0[idx * b * p..(idx + 1) * b * p],
                        dc0,
                    },
                );
                if ws.wd_on {
                    let gw = &mut grads[self.slots[idx].w_hh.clone()];
                    for ((gv, &m), &old) in gw.iter_mut().zip(&ws.wd_mask[idx]).zip(&ws.wd_grad) {
                        *gv = old + *gv * m;
                    }
                }
            }
            if l == 0 && in_grad {
                // through the input dropout: dx += d(dropped input) * mask
                let dx = dx.as_deref_mut().expect("checked above");
                for ((o, &g), &m) in dx.iter_mut().zip(&ws.in_grad).zip(&ws.in_mask) {
                    *o += g * m;
                }
            }
            if l > 0 {
                // through the dropout: d(prev_out) = d(input) * mask
                let dprev = &mut ws.douts[l - 1];
                if ws.dropout_on[l] {
                    for ((o, &g), &m) in dprev.iter_mut().zip(&ws.dinput).zip(&ws.masks[l]) {
                        *o = g * m;
                    }
                } else {
                    dprev.copy_from_slice(&ws.dinput);
                }
            }
        }
    }
}

/// Fills `mask` (T rows of `row` elements) with 0 (probability `p`) and 1/(1-p) from `rng`,
/// element by element in order: every element anew (`Step`), or the first row's draws repeated
/// on every row (`Locked`: one mask per sequence for all its steps).
fn draw_mask<F: Float>(mask: &mut [F], p: f64, mode: DropoutMode, row: usize, rng: &mut Rng) {
    let keep = F::from_f64(1.0 / (1.0 - p));
    let mut draw = || if rng.uniform() < p { F::ZERO } else { keep };
    match mode {
        DropoutMode::Step => mask.iter_mut().for_each(|m| *m = draw()),
        DropoutMode::Locked => {
            let (first, rest) = mask.split_at_mut(row.min(mask.len()));
            first.iter_mut().for_each(|m| *m = draw());
            for r in rest.chunks_mut(row) {
                r.copy_from_slice(&first[..r.len()]);
            }
        }
    }
}

/// `dst` (T*B rows of `i`) = the layer input times `mask`: a dense input's rows (stride `ld`)
/// element by element; one-hot tokens as the mask's value at the token and 0 elsewhere.
fn mask_input<F: Float>(dst: &mut [F], input: LayerInput<F>, mask: &[F], i: usize) {
    match input {
        LayerInput::Dense { x, ld } => {
            for ((d, m), r) in dst.chunks_exact_mut(i).zip(mask.chunks_exact(i)).zip(0..) {
                apply_mask(d, &x[r * ld..r * ld + i], m);
            }
        }
        LayerInput::OneHot { ids } => {
            dst.fill(F::ZERO);
            for (r, &id) in ids.iter().enumerate() {
                let k = r * i + id as usize;
                dst[k] = mask[k];
            }
        }
    }
}

/// `dst = src * mask`, element by element.
fn apply_mask<F: Float>(dst: &mut [F], src: &[F], mask: &[F]) {
    for ((d, &v), &m) in dst.iter_mut().zip(src).zip(mask) {
        *d = v * m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::Activation;

    #[test]
    fn masks_are_drawn_per_element_or_locked_per_sequence() {
        let (t, row, p) = (5, 12, 0.4);
        let keep = 1.0 / (1.0 - p);
        // step: element by element from the generator, in order
        let mut step = vec![0.0f64; t * row];
        draw_mask(&mut step, p, DropoutMode::Step, row, &mut Rng::new(3));
        let mut rng = Rng::new(3);
        for &m in &step {
            assert_eq!(m, if rng.uniform() < p { 0.0 } else { keep });
        }
        assert_ne!(step[..row], step[row..2 * row], "step masks repeat");
        // locked: the first row's draws, the same on every row
        let mut locked = vec![0.0f64; t * row];
        draw_mask(&mut locked, p, DropoutMode::Locked, row, &mut Rng::new(3));
        assert_eq!(locked[..row], step[..row]);
        for r in locked.chunks(row) {
            assert_eq!(r, &locked[..row]);
        }
        assert!(locked.contains(&0.0) && locked.contains(&keep));
    }

    #[test]
    fn cell_is_stored_by_name_and_an_unknown_name_is_refused() {
        let cfg = StackConfig::new(CellKind::Rnn(Activation::Relu), 3, 5);
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains("\"cell\":\"rnn_relu\""), "{json}");
        let back: StackConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
        let bad = json.replace("rnn_relu", "transformer");
        let err = serde_json::from_str::<StackConfig>(&bad).unwrap_err();
        assert!(
            err.to_string().contains("unknown cell 'transformer'"),
            "{err}"
        );
    }

    #[test]
    fn open_carry_gates_moves_only_the_forget_and_update_gate_biases() {
        for (kind, gate) in [(CellKind::Lstm, 1), (CellKind::Gru, 1)] {
            let cfg = StackConfig::new(kind, 3, 4)
                .with_layers(2)
                .with_bidirectional(true);
            let stack = Stack::new(cfg).unwrap();
            let mut p = vec![0.0f64; stack.num_params()];
            stack.init(&mut p, &mut Rng::new(7));
            let before = p.clone();
            stack.open_carry_gates(&mut p, 3.0);
            let mut moved = vec![false; p.len()];
            for l in 0..2 {
                for sfx in ["", "_reverse"] {
                    let r = stack
                        .layout()
                        .get(&format!("bias_ih_l{l}{sfx}"))
                        .unwrap()
                        .range();
                    for i in r.start + gate * 4..r.start + (gate + 1) * 4 {
                        moved[i] = true;
                    }
                }
            }
            for i in 0..p.len() {
                let want = before[i] + if moved[i] { 3.0 } else { 0.0 };
                assert_eq!(p[i], want, "{kind:?} parameter {i}");
            }
            assert_eq!(moved.iter().filter(|&&m| m).count(), 2 * 2 * 4);
        }
        // the Elman RNN has no carry gate, a stack without biases nowhere to put one
        for cfg in [
            StackConfig::new(CellKind::Rnn(Activation::Tanh), 3, 4),
            StackConfig::new(CellKind::Lstm, 3, 4).with_bias(false),
        ] {
            let stack = Stack::new(cfg).unwrap();
            let mut p = vec![0.5f32; stack.num_params()];
            stack.open_carry_gates(&mut p, 3.0);
            assert!(p.iter().all(|&v| v == 0.5));
        }
    }
}
