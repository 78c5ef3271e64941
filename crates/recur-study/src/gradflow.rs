//! Gradient flow through time: how large dL/dh_t is when the loss sits at the last step only.
//!
//! The lecture's argument for gates: in a tanh RNN, `dL/dh_{t-1} = W_hh^T (tanh'(.) * dL/dh_t)`, a
//! product of T - t Jacobians that shrinks geometrically at the default initialization
//! (vanishing) and grows when W_hh is scaled up (exploding); the LSTM's cell state and the GRU's
//! `z * h_prev` path carry it further. This module measures that, in f64.
//!
//! Setup, per random sequence: inputs x_1..x_T ~ N(0, 1) (I features), zero initial state,
//! a one-layer stack with PyTorch's default initialization and `weight_hh` multiplied by `scale`,
//! and a loss on the last state only, `L = (w . h_T - y)^2` with `w` initialized like nn.Linear
//! and `y ~ N(0, 1)`. The result is `||dL/dh_t||` for t = T, T-1, ..., 0 (distance T - t from the
//! loss), averaged over sequences, and the same norm relative to `||dL/dh_T||`.
//!
//! How, using only the stack's public forward and backward (the cells are not touched): the
//! gradient with respect to the state h_t, holding the LSTM's cell state c_t as a separate input,
//! is the initial-state gradient `dh0` of a run that starts at (h_t, c_t) and reads x_{t+1}..x_T.
//! One batch holds all those runs: sequence j starts at (h_j, c_j) with length T - j, every one
//! receives `dh_n = dL/dh_T`. The states (h_j, c_j) come from one batched forward of T copies of
//! the sequence with lengths 1..T (their final states). This costs O(T^2) steps per sequence,
//! fine for the lengths studied here (hundreds), and keeps the training path unchanged.
//!
//! Not here: multi-layer or bidirectional stacks, and losses on every step.

use recur::cell::{CellKind, LayerInput};
use recur::error::{Error, Result};
use recur::rng::Rng;
use recur::stack::{Stack, StackConfig};

/// What to measure.
#[derive(Clone, Debug)]
pub struct GradflowSpec {
    pub cell: CellKind,
    /// I: input features per step.
    pub input_size: usize,
    /// H: hidden units.
    pub hidden: usize,
    /// T: steps (>= 1).
    pub t: usize,
    /// Random sequences to average over (all through one draw of the weights).
    pub sequences: usize,
    /// Factor applied to `weight_hh` after the default initialization.
    pub scale: f64,
    /// Added to `bias_ih` of the gate that keeps the old state: the LSTM's forget gate f and
    /// the GRU's update gate z (rows H..2H in both gate orders). 0 = PyTorch's initialization;
    /// a positive value opens the carry path (f, z near 1). Ignored by the Elman RNN.
    pub gate_bias: f64,
    pub seed: u64,
}

/// The measured curve; index k is the distance from the loss (h_{T-k}), k = 0..=T.
#[derive(Clone, Debug)]
pub struct GradflowResult {
    /// Mean over sequences of `||dL/dh_{T-k}||`.
    pub norm: Vec<f64>,
    /// Mean over sequences of `||dL/dh_{T-k}|| / ||dL/dh_T||`.
    pub rel: Vec<f64>,
}

/// One stack's weights and the loss's decoder, drawn as [`gradflow`] draws them.
pub struct GradflowNet {
    pub stack: Stack,
    /// The stack's parameters (f64, PyTorch layout), `weight_hh_l0` already scaled.
    pub params: Vec<f64>,
    /// The loss's read-out `w` (H).
    pub w: Vec<f64>,
}

impl GradflowNet {
    /// Draws the network of `spec` from `rng`.
    pub fn new(spec: &GradflowSpec, rng: &mut Rng) -> Result<Self> {
        if spec.t == 0 || spec.hidden == 0 || spec.input_size == 0 {
            return Err(Error::invalid("gradflow needs T, H and I of at least 1"));
        }
        if !(spec.scale.is_finite()) {
            return Err(Error::invalid(format!(
                "scale must be finite, got {}",
                spec.scale
            )));
        }
        let stack = Stack::new(StackConfig::new(spec.cell, spec.input_size, spec.hidden))?;
        let mut params = vec![0.0; stack.num_params()];
        stack.init(&mut params, rng);
        let whh = stack
            .layout()
            .get("weight_hh_l0")
            .expect("one layer")
            .range();
        for v in &mut params[whh] {
            *v *= spec.scale;
        }
        stack.open_carry_gates(&mut params, spec.gate_bias);
        let k = 1.0 / (spec.hidden as f64).sqrt();
        let w = (0..spec.hidden).map(|_| rng.uniform_in(-k, k)).collect();
        Ok(GradflowNet { stack, params, w })
    }

    /// `dL/dh_t` for t = 0..=T (index t; h_0 is the zero initial state) of one sequence `x`
    /// (T, I) with target `y`, for `L = (w . h_T - y)^2`.
    pub fn state_grads(&self, x: &[f64], y: f64) -> Vec<Vec<f64>> {
        let cfg = &self.stack.cfg();
        let (ni, nh) = (cfg.input_size, cfg.hidden_size);
        let nt = x.len() / ni;
        let lstm = self.stack.kind() == CellKind::Lstm;

        // States after each step: T copies of the sequence with lengths 1..T; copy j-1 ends at
        // step j, so its final states are (h_j, c_j). xs: (T, B=T, I)
        let mut xs = vec![0.0; nt * nt * ni];
        for s in 0..nt {
            for b in 0..nt {
                xs[(s * nt + b) * ni..][..ni].copy_from_slice(&x[s * ni..(s + 1) * ni]);
            }
        }
        let lens: Vec<usize> = (1..=nt).collect();
        let mut ws = self.stack.workspace::<f64>(nt, nt);
        let input = LayerInput::Dense { x: &xs, ld: ni };
        self.stack
            .forward(&mut ws, &self.params, input, None, None, Some(&lens), None);
        // h0s, c0s: (B=T, H) the state each restarted run begins from: (h_j, c_j), j = 0..T-1
        let mut h0s = vec![0.0; nt * nh];
        let mut c0s = vec![0.0; if lstm { nt * nh } else { 0 }];
        h0s[nh..].copy_from_slice(&ws.h_n[..(nt - 1) * nh]);
        if lstm {
            c0s[nh..].copy_from_slice(&ws.c_n[..(nt - 1) * nh]);
        }
        let h_last = &ws.h_n[(nt - 1) * nh..nt * nh];
        // forward was: L = (w . h_T - y)^2, so dL/dh_T = 2 (w . h_T - y) w
        let err: f64 = h_last.iter().zip(&self.w).map(|(a, b)| a * b).sum::<f64>() - y;
        let dh_t: Vec<f64> = self.w.iter().map(|&wi| 2.0 * err * wi).collect();

        // Restarted runs: sequence j reads x_{j+1}..x_T at steps 0..T-j-1 (zero padding after).
        let mut xr = vec![0.0; nt * nt * ni];
        for j in 0..nt {
            for s in 0..nt - j {
                xr[(s * nt + j) * ni..][..ni].copy_from_slice(&x[(j + s) * ni..(j + s + 1) * ni]);
            }
        }
        let lens: Vec<usize> = (0..nt).map(|j| nt - j).collect();
        let dh_n: Vec<f64> = (0..nt).flat_map(|_| dh_t.iter().copied()).collect();
        let input = LayerInput::Dense { x: &xr, ld: ni };
        self.stack.forward(
            &mut ws,
            &self.params,
            input,
            Some(&h0s),
            lstm.then_some(&c0s[..]),
            Some(&lens),
            None,
        );
        let mut grads = vec![0.0; self.params.len()];
        self.stack.backward(
            &mut ws,
            &self.params,
            &mut grads,
            input,
            Some(&lens),
            None,
            Some(&dh_n),
            None,
            None,
        );
        let mut out: Vec<Vec<f64>> = (0..nt)
            .map(|j| ws.dh0[j * nh..(j + 1) * nh].to_vec())
            .collect();
        out.push(dh_t);
        out
    }
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|a| a * a).sum::<f64>().sqrt()
}

/// Running sums of the per-distance norms.
struct Sums {
    norm: Vec<f64>,
    rel: Vec<f64>,
    n: usize,
}

impl Sums {
    fn new(nt: usize) -> Self {
        Sums {
            norm: vec![0.0; nt + 1],
            rel: vec![0.0; nt + 1],
            n: 0,
        }
    }

    /// Adds one sequence's `dL/dh_t`, t = 0..=T.
    fn add(&mut self, g: &[Vec<f64>]) {
        let nt = g.len() - 1;
        let top = norm(&g[nt]);
        for k in 0..=nt {
            let n = norm(&g[nt - k]);
            self.norm[k] += n;
            self.rel[k] += if top > 0.0 { n / top } else { 0.0 };
        }
        self.n += 1;
    }

    fn mean(self) -> GradflowResult {
        let m = self.n.max(1) as f64;
        GradflowResult {
            norm: self.norm.iter().map(|v| v / m).collect(),
            rel: self.rel.iter().map(|v| v / m).collect(),
        }
    }
}

/// Runs the measurement; `progress(done)` is called after each sequence.
pub fn gradflow(spec: &GradflowSpec, progress: &mut dyn FnMut(usize)) -> Result<GradflowResult> {
    if spec.sequences == 0 {
        return Err(Error::invalid("gradflow needs at least one sequence"));
    }
    let mut rng = Rng::new(spec.seed);
    let net = GradflowNet::new(spec, &mut rng)?;
    let nt = spec.t;
    let mut sums = Sums::new(nt);
    for s in 0..spec.sequences {
        let x: Vec<f64> = (0..nt * spec.input_size).map(|_| rng.normal()).collect();
        let y = rng.normal();
        sums.add(&net.state_grads(&x, y));
        progress(s + 1);
    }
    Ok(sums.mean())
}

/// The same measurement for a given network on given sequences: `xs[i]` (T, I) with targets
/// `ys[i]` (e.g. a trained model on its task's data).
pub fn gradflow_on(net: &GradflowNet, xs: &[Vec<f64>], ys: &[f64]) -> GradflowResult {
    let ni = net.stack.cfg().input_size;
    let nt = xs.first().map_or(0, |x| x.len() / ni);
    let mut sums = Sums::new(nt);
    for (x, &y) in xs.iter().zip(ys) {
        sums.add(&net.state_grads(x, y));
    }
    sums.mean()
}
