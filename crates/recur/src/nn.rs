//! Recurrent layers that own their parameters, gradients and workspace, with PyTorch's shapes:
//! the newcomer's way in. One line builds a layer, one runs it forward, one backward:
//!
//! ```
//! use recur::nn::{Lstm, Tensor};
//!
//! let mut lstm = Lstm::new(8, 32).layers(2).build().unwrap(); // torch.nn.LSTM(8, 32, 2)
//! let x = Tensor::randn(&[20, 4, 8], 0); // (T, B, I), time-major like PyTorch (.batch_first(true): (B, T, I))
//! let (y, state) = lstm.forward(&x, None).unwrap(); // y (T, B, H), state.h and state.c (L, B, H)
//! assert_eq!(y.shape(), [20, 4, 32]);
//! assert_eq!(state.h.shape(), [2, 4, 32]);
//! let grads = lstm.backward(&y).unwrap(); // dL/dy = y, i.e. L = 0.5 * sum(y^2)
//! assert_eq!(grads.x.shape(), [20, 4, 8]);
//! assert_eq!(lstm.grad("weight_hh_l1").unwrap().len(), 4 * 32 * 32);
//! ```
//!
//! [`Lstm`], [`Gru`] and [`Rnn`] are builders of the same [`Recurrent`] layer (as
//! `torch.nn.LSTM`, `GRU` and `RNN`); its parameters are one flat buffer in PyTorch's order and
//! names ([`Recurrent::param`], [`Recurrent::layout`]), drawn as PyTorch draws them. The
//! flat-buffer API underneath ([`crate::stack::Stack`] and its workspace) stays for those who want
//! control over every buffer.

use crate::cell::{Activation, CellKind, LayerInput};
use crate::error::{Error, Result};
use crate::params::ParamLayout;
use crate::rng::Rng;
use crate::stack::{Stack, StackConfig, StackWorkspace};

/// A float32 array with a shape, row-major (the last index varies fastest), as a PyTorch tensor
/// of the same shape is laid out in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    data: Vec<f32>,
    shape: Vec<usize>,
}

impl Tensor {
    /// `data` read as `shape`; an error when the sizes differ.
    pub fn new(data: Vec<f32>, shape: &[usize]) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::invalid(format!(
                "a tensor of shape {shape:?} holds {n} values, {} given",
                data.len()
            )));
        }
        Ok(Tensor {
            data,
            shape: shape.to_vec(),
        })
    }

    /// Zeros of `shape`.
    pub fn zeros(shape: &[usize]) -> Self {
        Tensor {
            data: vec![0.0; shape.iter().product()],
            shape: shape.to_vec(),
        }
    }

    /// Standard normal values of `shape`, drawn from `seed`.
    pub fn randn(shape: &[usize], seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let n = shape.iter().product();
        Tensor {
            data: (0..n).map(|_| rng.normal() as f32).collect(),
            shape: shape.to_vec(),
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }
}

/// The hidden state between calls: `h` (L*D, B, P) and, for an LSTM, `c` (L*D, B, H), as
/// PyTorch's `h_n` and `(h_n, c_n)`.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    pub h: Tensor,
    pub c: Option<Tensor>,
}

/// The gradients of one [`Recurrent::backward`]: of the input (T, B, I) and of the initial
/// state; the parameters' are kept in the layer ([`Recurrent::grads`], [`Recurrent::grad`]).
#[derive(Clone, Debug)]
pub struct Grads {
    pub x: Tensor,
    pub state: State,
}

/// A recurrent layer's settings, as the keyword arguments of `torch.nn.LSTM` / `GRU` / `RNN`;
/// [`Lstm::new`], [`Gru::new`] and [`Rnn::new`] start one.
#[derive(Clone, Debug)]
pub struct Builder {
    cfg: StackConfig,
    seed: u64,
    batch_first: bool,
}

impl Builder {
    fn new(cell: CellKind, input_size: usize, hidden_size: usize) -> Self {
        Builder {
            cfg: StackConfig::new(cell, input_size, hidden_size),
            seed: 0,
            batch_first: false,
        }
    }

    /// `num_layers` (default 1).
    pub fn layers(mut self, n: usize) -> Self {
        self.cfg = self.cfg.with_layers(n);
        self
    }

    /// `bidirectional` (default false).
    pub fn bidirectional(mut self, on: bool) -> Self {
        self.cfg = self.cfg.with_bidirectional(on);
        self
    }

    /// `bias` (default true).
    pub fn bias(mut self, on: bool) -> Self {
        self.cfg = self.cfg.with_bias(on);
        self
    }

    /// `dropout` between layers in training mode (default 0).
    pub fn dropout(mut self, p: f64) -> Self {
        self.cfg = self.cfg.with_dropout(p);
        self
    }

    /// `proj_size` (LSTM only, default 0: none).
    pub fn proj_size(mut self, p: usize) -> Self {
        self.cfg = self.cfg.with_proj_size(p);
        self
    }

    /// `batch_first` (default false): inputs and outputs (and their gradients) are (B, T, ...)
    /// instead of (T, B, ...); the states stay (L*D, B, H), as in PyTorch.
    pub fn batch_first(mut self, on: bool) -> Self {
        self.batch_first = on;
        self
    }

    /// The seed of the initial weights and of the dropout masks (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The layer, its weights drawn as PyTorch draws them (U(-1/sqrt(H), 1/sqrt(H))); an error
    /// naming the setting that is out of range.
    pub fn build(self) -> Result<Recurrent> {
        let stack = Stack::new(self.cfg)?;
        let mut rng = Rng::new(self.seed);
        let mut params = vec![0.0f32; stack.num_params()];
        stack.init(&mut params, &mut rng);
        Ok(Recurrent {
            grads: vec![0.0; params.len()],
            params,
            stack,
            rng,
            training: false,
            batch_first: self.batch_first,
            ws: None,
            last_x: None,
        })
    }
}

/// `torch.nn.LSTM`.
pub struct Lstm;
/// `torch.nn.GRU`.
pub struct Gru;
/// `torch.nn.RNN` (tanh unless [`Rnn::relu`]).
pub struct Rnn;

impl Lstm {
    /// An LSTM reading `input_size` features per step with `hidden_size` units.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(input_size: usize, hidden_size: usize) -> Builder {
        Builder::new(CellKind::Lstm, input_size, hidden_size)
    }
}

impl Gru {
    /// A GRU reading `input_size` features per step with `hidden_size` units.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(input_size: usize, hidden_size: usize) -> Builder {
        Builder::new(CellKind::Gru, input_size, hidden_size)
    }
}

impl Rnn {
    /// An Elman RNN with tanh, reading `input_size` features per step with `hidden_size` units.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(input_size: usize, hidden_size: usize) -> Builder {
        Builder::new(CellKind::Rnn(Activation::Tanh), input_size, hidden_size)
    }

    /// The same with ReLU (`nonlinearity='relu'`).
    pub fn relu(input_size: usize, hidden_size: usize) -> Builder {
        Builder::new(CellKind::Rnn(Activation::Relu), input_size, hidden_size)
    }
}

/// A recurrent layer (one or more stacked layers, one or two directions) with its parameters,
/// their gradients and a workspace sized for the last (T, B) it ran.
pub struct Recurrent {
    stack: Stack,
    params: Vec<f32>,
    grads: Vec<f32>,
    rng: Rng,
    training: bool,
    // inputs and outputs (B, T, ...): swapped to and from the stack's (T, B, ...)
    batch_first: bool,
    ws: Option<StackWorkspace<f32>>,
    // the last forward's input, which backward reads again
    last_x: Option<Vec<f32>>,
}

impl Recurrent {
    /// The settings it was built from.
    pub fn cfg(&self) -> &StackConfig {
        self.stack.cfg()
    }

    /// Names, shapes and offsets of the parameters in the flat buffer (PyTorch's names:
    /// `weight_ih_l0`, `bias_hh_l1_reverse`, ...).
    pub fn layout(&self) -> &ParamLayout {
        self.stack.layout()
    }

    /// The underlying stack, for the flat-buffer API.
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    /// All parameters, in PyTorch's order.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// All parameters, to change in place (e.g. an optimizer's update).
    pub fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }

    /// The gradients of the parameters, accumulated by every [`Recurrent::backward`] since the
    /// last [`Recurrent::zero_grad`] (as PyTorch's `.grad`).
    pub fn grads(&self) -> &[f32] {
        &self.grads
    }

    /// Sets the gradients to zero.
    pub fn zero_grad(&mut self) {
        self.grads.fill(0.0);
    }

    /// The parameter called `name` (PyTorch's name), row-major.
    pub fn param(&self, name: &str) -> Result<&[f32]> {
        Ok(&self.params[self.range(name)?])
    }

    /// The gradient of the parameter called `name`.
    pub fn grad(&self, name: &str) -> Result<&[f32]> {
        Ok(&self.grads[self.range(name)?])
    }

    /// Replaces the parameter called `name` (e.g. from a PyTorch state dict).
    pub fn set_param(&mut self, name: &str, values: &[f32]) -> Result<()> {
        let r = self.range(name)?;
        if values.len() != r.len() {
            return Err(Error::invalid(format!(
                "{name} holds {} values, {} given",
                r.len(),
                values.len()
            )));
        }
        self.params[r].copy_from_slice(values);
        Ok(())
    }

    fn range(&self, name: &str) -> Result<std::ops::Range<usize>> {
        self.stack
            .layout()
            .get(name)
            .map(|e| e.range())
            .ok_or_else(|| Error::invalid(format!("the layer has no parameter '{name}'")))
    }

    /// Training mode (dropout between layers is drawn) or evaluation mode (the default), as
    /// PyTorch's `train()` and `eval()`.
    pub fn train(&mut self, on: bool) {
        self.training = on;
    }

    /// The shape of the state for `b` sequences: (L*D, B, P) and (L*D, B, H).
    fn state_shapes(&self, b: usize) -> ([usize; 3], [usize; 3]) {
        let c = self.stack.cfg();
        let ld = c.num_layers * c.dirs();
        ([ld, b, c.out_size()], [ld, b, c.hidden_size])
    }

    fn is_lstm(&self) -> bool {
        self.stack.kind() == CellKind::Lstm
    }

    /// A [`State`] for `b` sequences holding copies of `h` and (LSTM only) `c`.
    fn state(&self, b: usize, h: &[f32], c: &[f32]) -> State {
        let (hs, cs) = self.state_shapes(b);
        State {
            h: Tensor {
                data: h.to_vec(),
                shape: hs.to_vec(),
            },
            c: self.is_lstm().then(|| Tensor {
                data: c.to_vec(),
                shape: cs.to_vec(),
            }),
        }
    }

    /// Checks a state given for `b` sequences.
    fn check_state(&self, s: &State, b: usize, what: &str) -> Result<()> {
        let (hs, cs) = self.state_shapes(b);
        if s.h.shape() != hs {
            return Err(Error::invalid(format!(
                "{what}.h has shape {:?}, the layer needs {hs:?}",
                s.h.shape()
            )));
        }
        match (&s.c, self.is_lstm()) {
            (Some(c), true) if c.shape() != cs => Err(Error::invalid(format!(
                "{what}.c has shape {:?}, the layer needs {cs:?}",
                c.shape()
            ))),
            (Some(_), false) => Err(Error::invalid(format!(
                "{what}.c is given, but only an LSTM has a cell state"
            ))),
            _ => Ok(()),
        }
    }

    /// Runs `x` (T, B, I; (B, T, I) with `batch_first`) from `state` (zeros when `None`): the
    /// last layer's outputs (T, B, D*P; (B, T, D*P)) and the final state, as PyTorch's
    /// `y, h_n = rnn(x, h0)` (`y, (h_n, c_n)` for an LSTM).
    pub fn forward(&mut self, x: &Tensor, state: Option<&State>) -> Result<(Tensor, State)> {
        let cfg = self.stack.cfg().clone();
        let [t, b, i] = match (x.shape(), self.batch_first) {
            (&[t, b, i], false) => [t, b, i],
            (&[b, t, i], true) => [t, b, i],
            (s, bf) => {
                return Err(Error::invalid(format!(
                    "the input must be {}, got shape {s:?}",
                    if bf { "(B, T, I)" } else { "(T, B, I)" }
                )))
            }
        };
        if i != cfg.input_size {
            return Err(Error::invalid(format!(
                "the input has {i} features per step, the layer reads {}",
                cfg.input_size
            )));
        }
        if t == 0 || b == 0 {
            return Err(Error::invalid(format!(
                "the input must have at least one step and one sequence, got shape {:?}",
                x.shape()
            )));
        }
        if let Some(s) = state {
            self.check_state(s, b, "state")?;
        }
        if self
            .ws
            .as_ref()
            .is_none_or(|w| w.shape.t != t || w.shape.b != b)
        {
            crate::memory::check(
                &format!("a layer's workspace for batches of {b} x {t} steps"),
                crate::memory::stack_workspace_bytes(&cfg, t, b, 4),
            )?;
            self.ws = Some(self.stack.workspace(t, b));
        }
        let ws = self.ws.as_mut().expect("made above");
        let h0 = state.map(|s| s.h.data());
        let c0 = state.and_then(|s| s.c.as_ref()).map(|c| c.data());
        let rng = (self.training && cfg.dropout > 0.0).then_some(&mut self.rng);
        let xt = match self.batch_first {
            true => swap_first_two(x.data(), b, t, i),
            false => x.data().to_vec(),
        };
        let input = LayerInput::Dense { x: &xt, ld: i };
        self.stack
            .forward(ws, &self.params, input, h0, c0, None, rng);
        let o = cfg.dirs() * cfg.out_size();
        let y = match self.batch_first {
            true => Tensor {
                data: swap_first_two(ws.output(), t, b, o),
                shape: vec![b, t, o],
            },
            false => Tensor {
                data: ws.output().to_vec(),
                shape: vec![t, b, o],
            },
        };
        let ws = self.ws.as_ref().expect("made above");
        let out = self.state(b, &ws.h_n, &ws.c_n);
        self.last_x = Some(xt);
        Ok((y, out))
    }

    /// Backward of the last forward with `dy` = dL/dy (T, B, D*P; (B, T, D*P) with
    /// `batch_first`): the parameters' gradients are added to [`Recurrent::grads`], the input's
    /// (shaped as the input) and initial state's are returned.
    pub fn backward(&mut self, dy: &Tensor) -> Result<Grads> {
        self.backward_with_state(dy, None)
    }

    /// [`Recurrent::backward`] when the loss also depends on the final state: `dstate` holds
    /// dL/dh_n (and dL/dc_n for an LSTM; `None` there counts as zeros).
    pub fn backward_with_state(&mut self, dy: &Tensor, dstate: Option<&State>) -> Result<Grads> {
        let (Some(ws), Some(x)) = (self.ws.as_ref(), self.last_x.as_ref()) else {
            return Err(Error::invalid("backward needs a forward first"));
        };
        let (t, b) = (ws.shape.t, ws.shape.b);
        let cfg = self.stack.cfg();
        let o = cfg.dirs() * cfg.out_size();
        let want = if self.batch_first {
            [b, t, o]
        } else {
            [t, b, o]
        };
        if dy.shape() != want {
            return Err(Error::invalid(format!(
                "dy has shape {:?}, the last forward's output is {want:?}",
                dy.shape()
            )));
        }
        if let Some(s) = dstate {
            self.check_state(s, b, "dstate")?;
        }
        let i = cfg.input_size;
        let mut dx = vec![0.0f32; t * b * i];
        let ws = self.ws.as_mut().expect("checked above");
        let input = LayerInput::Dense { x, ld: i };
        let dh_n = dstate.map(|s| s.h.data());
        let dc_n = dstate.and_then(|s| s.c.as_ref()).map(|c| c.data());
        let dyt = match self.batch_first {
            true => swap_first_two(dy.data(), b, t, o),
            false => dy.data().to_vec(),
        };
        self.stack.backward(
            ws,
            &self.params,
            &mut self.grads,
            input,
            None,
            Some(&dyt),
            dh_n,
            dc_n,
            Some(&mut dx),
        );
        let ws = self.ws.as_ref().expect("checked above");
        let x = match self.batch_first {
            true => Tensor {
                data: swap_first_two(&dx, t, b, i),
                shape: vec![b, t, i],
            },
            false => Tensor {
                data: dx,
                shape: vec![t, b, i],
            },
        };
        Ok(Grads {
            x,
            state: self.state(b, &ws.dh0, &ws.dc0),
        })
    }
}

/// `v` (A, B, C) row-major as (B, A, C).
fn swap_first_two(v: &[f32], a: usize, b: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; a * b * c];
    for i in 0..a {
        for j in 0..b {
            out[(j * a + i) * c..(j * a + i + 1) * c]
                .copy_from_slice(&v[(i * b + j) * c..(i * b + j + 1) * c]);
        }
    }
    out
}
