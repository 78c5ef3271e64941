//! Optimizers over the flat parameter buffer (PyTorch's update rules), and gradient clipping.
//!
//! Each optimizer keeps its moments in flat buffers with the parameters' layout, so a step is one
//! loop and the state is one tensor each in a checkpoint.

use crate::ops::Float;
use serde::{Deserialize, Serialize};

use rayon::prelude::*;

/// Which update rule, with its hyper-parameters (PyTorch's defaults in brackets).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimKind {
    /// `buf = momentum*buf + g` (buf = g on the first step); `p -= lr*buf` (nesterov: `g + momentum*buf`).
    Sgd { momentum: f64, nesterov: bool },
    /// `sum += g^2; p -= lr*g/(sqrt(sum)+eps)` [eps 1e-10].
    Adagrad { eps: f64 },
    /// `sq = alpha*sq + (1-alpha)*g^2; p -= lr*g/(sqrt(sq)+eps)` [alpha 0.99, eps 1e-8].
    Rmsprop { alpha: f64, eps: f64 },
    /// Adam with bias correction [beta1 0.9, beta2 0.999, eps 1e-8].
    Adam { beta1: f64, beta2: f64, eps: f64 },
}

impl OptimKind {
    /// Parses `sgd`, `adagrad`, `rmsprop`, `adam` with PyTorch's default hyper-parameters
    /// (`sgd` gets `momentum`; 0 for plain SGD).
    pub fn parse(name: &str, momentum: f64) -> Option<OptimKind> {
        Some(match name {
            "sgd" => OptimKind::Sgd {
                momentum,
                nesterov: false,
            },
            "adagrad" => OptimKind::Adagrad { eps: 1e-10 },
            "rmsprop" => OptimKind::Rmsprop {
                alpha: 0.99,
                eps: 1e-8,
            },
            "adam" => OptimKind::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            _ => return None,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            OptimKind::Sgd { .. } => "sgd",
            OptimKind::Adagrad { .. } => "adagrad",
            OptimKind::Rmsprop { .. } => "rmsprop",
            OptimKind::Adam { .. } => "adam",
        }
    }
}

/// An optimizer and its state.
///
/// ```rust
/// use recur::optim::{OptimKind, Optimizer};
///
/// let mut params = vec![1.0f32, -2.0];
/// let grads = vec![0.5f32, -1.0];
/// // torch.optim.SGD(lr=0.1, momentum=0.9): the first step is p -= lr * g
/// let mut opt = Optimizer::new(OptimKind::parse("sgd", 0.9).unwrap(), 0.1, params.len());
/// opt.update(&mut params, &grads);
/// assert!((params[0] - 0.95).abs() < 1e-6 && (params[1] + 1.9).abs() < 1e-6);
/// assert_eq!(opt.step, 1);
/// // Adam's first step moves every parameter by about lr, against its gradient's sign
/// let mut adam = Optimizer::new(OptimKind::parse("adam", 0.0).unwrap(), 1e-3, 2);
/// let before = params.clone();
/// adam.update(&mut params, &grads);
/// assert!((before[0] - params[0] - 1e-3).abs() < 1e-6);
/// assert!((params[1] - before[1] - 1e-3).abs() < 1e-6);
/// ```
#[derive(Clone, Debug)]
pub struct Optimizer<F> {
    pub kind: OptimKind,
    /// Learning rate (may be changed between steps, e.g. by a decay schedule).
    pub lr: f64,
    /// Steps taken so far.
    pub step: u64,
    /// First moment / momentum buffer / Adagrad sum / RMSprop square average (layout of params).
    pub m: Vec<F>,
    /// Second moment (Adam only; empty otherwise).
    pub v: Vec<F>,
}

impl<F: Float> Optimizer<F> {
    pub fn new(kind: OptimKind, lr: f64, n: usize) -> Self {
        let v = if matches!(kind, OptimKind::Adam { .. }) {
            n
        } else {
            0
        };
        Optimizer {
            kind,
            lr,
            step: 0,
            m: vec![F::ZERO; n],
            v: vec![F::ZERO; v],
        }
    }

    /// One update of `params` with `grads`. Element-wise, so the buffers are cut in fixed chunks
    /// shared out over the configured threads ([`crate::ops::gemm::threads`]); the result does not
    /// depend on the thread count.
    pub fn update(&mut self, params: &mut [F], grads: &[F]) {
        assert_eq!(params.len(), grads.len());
        assert_eq!(params.len(), self.m.len());
        self.step += 1;
        let lr = F::from_f64(self.lr);
        match self.kind {
            OptimKind::Sgd { momentum, nesterov } => {
                let mu = F::from_f64(momentum);
                let first = self.step == 1;
                chunked(params, grads, &mut self.m, |p, g, b| {
                    if momentum == 0.0 {
                        for (p, &g) in p.iter_mut().zip(g) {
                            *p -= lr * g;
                        }
                    } else {
                        for ((p, &g), b) in p.iter_mut().zip(g).zip(b) {
                            *b = if first { g } else { mu * *b + g };
                            let d = if nesterov { g + mu * *b } else { *b };
                            *p -= lr * d;
                        }
                    }
                });
            }
            OptimKind::Adagrad { eps } => {
                let eps = F::from_f64(eps);
                chunked(params, grads, &mut self.m, |p, g, s| {
                    for ((p, &g), s) in p.iter_mut().zip(g).zip(s) {
                        *s += g * g;
                        *p -= lr * g / (s.sqrt() + eps);
                    }
                });
            }
            OptimKind::Rmsprop { alpha, eps } => {
                let (a, eps) = (F::from_f64(alpha), F::from_f64(eps));
                chunked(params, grads, &mut self.m, |p, g, s| {
                    for ((p, &g), s) in p.iter_mut().zip(g).zip(s) {
                        *s = a * *s + (F::ONE - a) * g * g;
                        *p -= lr * g / (s.sqrt() + eps);
                    }
                });
            }
            OptimKind::Adam { beta1, beta2, eps } => {
                let t = self.step as i32;
                let bc1 = 1.0 - beta1.powi(t);
                let bc2 = 1.0 - beta2.powi(t);
                let step_size = F::from_f64(self.lr / bc1);
                let bc2_sqrt = F::from_f64(bc2.sqrt());
                let (b1, b2, eps) = (F::from_f64(beta1), F::from_f64(beta2), F::from_f64(eps));
                let n = params.len();
                let adam = |p: &mut [F], g: &[F], m: &mut [F], v: &mut [F]| {
                    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
                        *m = b1 * *m + (F::ONE - b1) * g;
                        *v = b2 * *v + (F::ONE - b2) * g * g;
                        *p -= step_size * *m / (v.sqrt() / bc2_sqrt + eps);
                    }
                };
                if parallel(n) {
                    params
                        .par_chunks_mut(CHUNK)
                        .zip(grads.par_chunks(CHUNK))
                        .zip(self.m.par_chunks_mut(CHUNK))
                        .zip(self.v.par_chunks_mut(CHUNK))
                        .for_each(|(((p, g), m), v)| adam(p, g, m, v));
                } else {
                    adam(params, grads, &mut self.m, &mut self.v);
                }
            }
        }
    }
}

/// Elements per chunk when an element-wise pass over the parameters is split over threads.
const CHUNK: usize = 1 << 15;

/// Whether a pass over `n` elements is worth splitting over the configured threads.
fn parallel(n: usize) -> bool {
    crate::ops::gemm::threads() > 1 && n >= 2 * CHUNK
}

/// Runs `f` over matching chunks of `p`, `g` and `m` (on several threads when it pays).
fn chunked<F: Float>(
    p: &mut [F],
    g: &[F],
    m: &mut [F],
    f: impl Fn(&mut [F], &[F], &mut [F]) + Sync + Send,
) {
    if parallel(p.len()) {
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .for_each(|((p, g), m)| f(p, g, m));
    } else {
        f(p, g, m);
    }
}

/// The global L2 norm of `grads` (accumulated in f64: per fixed chunk, the chunks' sums then
/// added in order, so the value does not depend on the thread count).
pub fn grad_norm<F: Float>(grads: &[F]) -> f64 {
    let part = |c: &[F]| c.iter().map(|g| g.to_f64() * g.to_f64()).sum::<f64>();
    let sums: Vec<f64> = if parallel(grads.len()) {
        grads.par_chunks(CHUNK).map(part).collect()
    } else {
        grads.chunks(CHUNK).map(part).collect()
    };
    sums.iter().sum::<f64>().sqrt()
}

/// Scales `grads` so that their global norm is at most `max_norm` (PyTorch's clip_grad_norm_,
/// factor `max_norm / (norm + 1e-6)` applied only when it is below 1). Returns the norm before.
pub fn clip_grad_norm<F: Float>(grads: &mut [F], max_norm: f64) -> f64 {
    let norm = grad_norm(grads);
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let c = F::from_f64(coef);
        crate::ops::for_parts_mut(grads, CHUNK, parallel(grads.len()), |_, g| {
            g.iter_mut().for_each(|g| *g *= c)
        });
    }
    norm
}

/// Clamps every gradient element to `[-clip, clip]` (PyTorch's clip_grad_value_).
pub fn clip_grad_value<F: Float>(grads: &mut [F], clip: f64) {
    let (lo, hi) = (F::from_f64(-clip), F::from_f64(clip));
    for g in grads.iter_mut() {
        *g = g.max(lo).min(hi);
    }
}
