//! Synthetic sequence tasks that need memory, with their baselines: the adding problem, the copy
//! task, and the lecture's bouncing ball. Generators are seeded; every batch is freshly drawn.
//!
//! - **adding** (Hochreiter & Schmidhuber 1997; the setting of Le et al. 2015): T steps of two
//!   channels, a value U(0, 1) and a marker that is 1 at two steps (one in each half, 0
//!   elsewhere); the target is the sum of the two marked values, read at the last step (MSE).
//!   Always answering the mean, 1, scores the variance of a sum of two U(0, 1): 2/12 = 0.1667.
//! - **copy** (Arjovsky et al. 2016): 10 symbols from an alphabet of 8, then T - 1 blanks, a
//!   delimiter, and 10 blanks (T + 20 steps); the target is blank for T + 10 steps, then the 10
//!   symbols. A memoryless model can do no better than blanks and then uniform guesses:
//!   cross-entropy 10 ln 8 / (T + 20) nats per step.
//! - **ball**: 2-D trajectories under gravity in a box open at the top, bouncing off the floor
//!   and both walls with a restitution factor; input the position at each frame; the model predicts
//!   the next position as `p_t + dt * v` with `v` its output (the displacement in units of dt, so
//!   that the regression target is of order 1); the metric is the squared error of the predicted
//!   position per coordinate, steps 1..T (step 0 has no velocity yet). Baseline: constant-velocity
//!   extrapolation `p_{t+1} = 2 p_t - p_{t-1}`, exact in x between bounces and off by g dt^2 in y.
//!
//! Training lives in [`train`]. Nothing here prints or touches files.

pub mod train;

use recur::error::{Error, Result};
use recur::model::{Head, ModelConfig};
use recur::ops::loss::softmax_xent;
use recur::rng::Rng;
use recur::stack::StackConfig;
use std::ops::Range;

/// Copy task: symbols to remember.
pub const COPY_SYMBOLS: usize = 10;
/// Copy task: alphabet size (symbols are tokens 1..=8).
pub const COPY_ALPHABET: usize = 8;
/// Copy task: the blank token.
pub const COPY_BLANK: u32 = 0;
/// Copy task: the delimiter token (inputs only).
pub const COPY_DELIM: u32 = 9;

/// Ball physics: gravity (box units per s^2), frame interval (s), integration substeps per frame.
pub const BALL_G: f64 = 2.0;
pub const BALL_DT: f64 = 0.05;
const BALL_SUBSTEPS: usize = 20;

/// Which task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    Adding,
    Copy,
    Ball,
}

impl TaskKind {
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Adding => "adding",
            TaskKind::Copy => "copy",
            TaskKind::Ball => "ball",
        }
    }
}

/// A task at a given length.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub kind: TaskKind,
    /// T: adding: steps; copy: the delay (sequences are T + 20 steps); ball: frames.
    pub len: usize,
    /// Ball: restitution factor of every bounce (speed kept, 0..=1). Default 0.85.
    pub restitution: f64,
}

/// Model inputs of a batch.
#[derive(Clone, Debug)]
pub enum Inputs {
    /// (T, B, I)
    Dense(Vec<f32>),
    /// (T, B) token ids
    Tokens(Vec<u32>),
}

/// Targets of a batch, one row per decoded output.
#[derive(Clone, Debug)]
pub enum Targets {
    /// (R, V) values; NaN marks an element that takes no loss.
    Values(Vec<f32>),
    /// (R) classes.
    Classes(Vec<u32>),
}

/// One batch of B sequences of T steps.
#[derive(Clone, Debug)]
pub struct Batch {
    pub t: usize,
    pub b: usize,
    pub inputs: Inputs,
    pub targets: Targets,
}

impl Batch {
    /// The batch of sequences `range` only (a data-parallel rank's share): the same steps, the
    /// columns of those sequences in the (T, B, I) inputs and in the targets, which are (T*B, V)
    /// when `per_step` (a target at every step) and (B, V) otherwise (one per sequence).
    pub fn share(&self, range: Range<usize>, per_step: bool) -> Batch {
        // the values of sequences `range` in a (blocks, B, width) layout
        fn cut<V: Copy>(all: &[V], blocks: usize, b: usize, range: &Range<usize>) -> Vec<V> {
            let w = all.len() / (blocks * b);
            (0..blocks)
                .flat_map(|k| &all[(k * b + range.start) * w..(k * b + range.end) * w])
                .copied()
                .collect()
        }
        let (t, b) = (self.t, self.b);
        let tb = if per_step { t } else { 1 };
        let inputs = match &self.inputs {
            Inputs::Dense(x) => Inputs::Dense(cut(x, t, b, &range)),
            Inputs::Tokens(x) => Inputs::Tokens(cut(x, t, b, &range)),
        };
        let targets = match &self.targets {
            Targets::Values(y) => Targets::Values(cut(y, tb, b, &range)),
            Targets::Classes(y) => Targets::Classes(cut(y, tb, b, &range)),
        };
        Batch {
            t: self.t,
            b: range.len(),
            inputs,
            targets,
        }
    }
}

impl Task {
    pub fn new(kind: TaskKind, len: usize) -> Result<Self> {
        let min = match kind {
            TaskKind::Adding => 2,
            TaskKind::Copy => 1,
            TaskKind::Ball => 3,
        };
        if len < min {
            return Err(Error::invalid(format!(
                "{} needs a length of at least {min}, got {len}",
                kind.name()
            )));
        }
        Ok(Task {
            kind,
            len,
            restitution: 0.85,
        })
    }

    /// Steps per sequence.
    pub fn steps(&self) -> usize {
        match self.kind {
            TaskKind::Copy => self.len + 2 * COPY_SYMBOLS,
            _ => self.len,
        }
    }

    /// The model for this task around `rnn` (whose input size is set here).
    pub fn model_config(&self, rnn: StackConfig) -> ModelConfig {
        match self.kind {
            TaskKind::Adding => ModelConfig::dense(2, rnn, 1, Head::LastRegression),
            TaskKind::Ball => ModelConfig::dense(2, rnn, 2, Head::StepRegression),
            TaskKind::Copy => {
                let vocab = COPY_DELIM as usize + 1;
                let mut cfg = ModelConfig::char_model(vocab, 0, rnn);
                cfg.output_size = COPY_ALPHABET + 1;
                cfg
            }
        }
    }

    /// The metric's name: `mse` or `cross-entropy`.
    pub fn metric_name(&self) -> &'static str {
        match self.kind {
            TaskKind::Copy => "cross-entropy (nats/step)",
            _ => "mse",
        }
    }

    /// The baseline in closed form where there is one (adding, copy).
    pub fn baseline_formula(&self) -> Option<f64> {
        match self.kind {
            TaskKind::Adding => Some(1.0 / 6.0),
            TaskKind::Copy => {
                Some(COPY_SYMBOLS as f64 * (COPY_ALPHABET as f64).ln() / self.steps() as f64)
            }
            TaskKind::Ball => None,
        }
    }

    /// The task's metric is the model's loss times this: 1, except for the ball, whose targets
    /// are displacements in units of dt, so that position errors are dt^2 times theirs.
    pub fn metric_scale(&self) -> f64 {
        match self.kind {
            TaskKind::Ball => BALL_DT * BALL_DT,
            _ => 1.0,
        }
    }

    /// Whether `metric` counts as solving the task: adding MSE < 0.01; copy cross-entropy below
    /// 1% of the baseline; ball error below half the baseline's.
    pub fn solved(&self, metric: f64, baseline: f64) -> bool {
        match self.kind {
            TaskKind::Adding => metric < 0.01,
            TaskKind::Copy => metric < 0.01 * baseline,
            TaskKind::Ball => metric < 0.5 * baseline,
        }
    }

    /// Whether the targets are per step ((T*B, V) rows: copy, ball) or one per sequence ((B, V):
    /// adding's sum at the last step).
    pub fn per_step_targets(&self) -> bool {
        !matches!(self.kind, TaskKind::Adding)
    }

    /// B fresh sequences.
    pub fn sample(&self, b: usize, rng: &mut Rng) -> Batch {
        match self.kind {
            TaskKind::Adding => self.adding(b, rng),
            TaskKind::Copy => self.copy(b, rng),
            TaskKind::Ball => {
                let paths: Vec<Vec<[f64; 2]>> = (0..b).map(|_| self.ball_path(rng)).collect();
                self.ball_batch(&paths)
            }
        }
    }

    fn adding(&self, nb: usize, rng: &mut Rng) -> Batch {
        let nt = self.len;
        // x: (T, B, 2) channel 0 the value, channel 1 the marker
        let mut x = vec![0.0f32; nt * nb * 2];
        let mut y = vec![0.0f32; nb];
        let half = nt / 2;
        for b in 0..nb {
            for t in 0..nt {
                x[(t * nb + b) * 2] = rng.uniform() as f32;
            }
            let first = rng.below(half as u64) as usize;
            let second = half + rng.below((nt - half) as u64) as usize;
            for t in [first, second] {
                x[(t * nb + b) * 2 + 1] = 1.0;
                y[b] += x[(t * nb + b) * 2];
            }
        }
        Batch {
            t: nt,
            b: nb,
            inputs: Inputs::Dense(x),
            targets: Targets::Values(y),
        }
    }

    fn copy(&self, nb: usize, rng: &mut Rng) -> Batch {
        let nt = self.steps();
        let mut ids = vec![COPY_BLANK; nt * nb];
        let mut tg = vec![COPY_BLANK; nt * nb];
        for b in 0..nb {
            for s in 0..COPY_SYMBOLS {
                let sym = 1 + rng.below(COPY_ALPHABET as u64) as u32;
                ids[s * nb + b] = sym;
                tg[(nt - COPY_SYMBOLS + s) * nb + b] = sym;
            }
            ids[(nt - COPY_SYMBOLS - 1) * nb + b] = COPY_DELIM;
        }
        Batch {
            t: nt,
            b: nb,
            inputs: Inputs::Tokens(ids),
            targets: Targets::Classes(tg),
        }
    }

    /// One trajectory of T + 1 frames (positions in the box [0, 1] x [0, inf)).
    pub fn ball_path(&self, rng: &mut Rng) -> Vec<[f64; 2]> {
        let e = self.restitution;
        let (mut x, mut y) = (rng.uniform_in(0.1, 0.9), rng.uniform_in(0.3, 0.9));
        let (mut vx, mut vy) = (rng.uniform_in(-1.0, 1.0), rng.uniform_in(-0.5, 0.5));
        let h = BALL_DT / BALL_SUBSTEPS as f64;
        let mut out = Vec::with_capacity(self.len + 1);
        out.push([x, y]);
        for _ in 0..self.len {
            for _ in 0..BALL_SUBSTEPS {
                // exact free flight over the substep, then reflect what crossed a wall or the floor
                x += vx * h;
                y += vy * h - 0.5 * BALL_G * h * h;
                vy -= BALL_G * h;
                if y < 0.0 {
                    y = -y * e;
                    vy = -vy * e;
                }
                if x < 0.0 {
                    x = -x * e;
                    vx = -vx * e;
                } else if x > 1.0 {
                    x = 1.0 - (x - 1.0) * e;
                    vx = -vx * e;
                }
            }
            out.push([x, y]);
        }
        out
    }

    /// A batch from trajectories of T + 1 frames: inputs p_0..p_{T-1}, targets the displacements
    /// `(p_{t+1} - p_t) / dt` (NaN at step 0, which the baseline cannot predict either).
    pub fn ball_batch(&self, paths: &[Vec<[f64; 2]>]) -> Batch {
        let (nt, nb) = (self.len, paths.len());
        let mut x = vec![0.0f32; nt * nb * 2];
        let mut y = vec![0.0f32; nt * nb * 2];
        for (b, p) in paths.iter().enumerate() {
            for t in 0..nt {
                let r = (t * nb + b) * 2;
                for k in 0..2 {
                    x[r + k] = p[t][k] as f32;
                    y[r + k] = if t == 0 {
                        f32::NAN
                    } else {
                        ((p[t + 1][k] - p[t][k]) / BALL_DT) as f32
                    };
                }
            }
        }
        Batch {
            t: nt,
            b: nb,
            inputs: Inputs::Dense(x),
            targets: Targets::Values(y),
        }
    }

    /// Ball: the positions a model predicts, from its outputs on [`Task::ball_batch`]`(paths)`
    /// ((T, B, 2) displacements in units of dt): for each path, frames 2..=T, `p_t + dt * v_t`.
    pub fn ball_predictions(&self, paths: &[Vec<[f64; 2]>], out: &[f32]) -> Vec<Vec<[f64; 2]>> {
        let nb = paths.len();
        paths
            .iter()
            .enumerate()
            .map(|(b, p)| {
                (1..self.len)
                    .map(|t| {
                        let r = (t * nb + b) * 2;
                        [
                            p[t][0] + BALL_DT * out[r] as f64,
                            p[t][1] + BALL_DT * out[r + 1] as f64,
                        ]
                    })
                    .collect()
            })
            .collect()
    }

    /// The baseline's metric on a batch, computed from the data: adding, the MSE of answering
    /// the mean 1; copy, the cross-entropy of a memoryless model that knows each step's class
    /// frequencies in this batch (which underestimates the closed form on small batches: it has
    /// seen the answers); ball, constant-velocity extrapolation, in position units. Returns
    /// (sum, count) so that batches can be pooled.
    pub fn baseline_on(&self, batch: &Batch) -> (f64, usize) {
        let (nt, nb) = (batch.t, batch.b);
        match (&self.kind, &batch.targets, &batch.inputs) {
            (TaskKind::Adding, Targets::Values(y), _) => {
                let s = y.iter().map(|&v| (v as f64 - 1.0).powi(2)).sum();
                (s, y.len())
            }
            (TaskKind::Copy, Targets::Classes(tg), _) => {
                // per step: the empirical class distribution as a fixed prediction
                let v = COPY_ALPHABET + 1;
                let mut logits = vec![0.0f64; nt * nb * v];
                for t in 0..nt {
                    let mut count = vec![0usize; v];
                    for b in 0..nb {
                        count[tg[t * nb + b] as usize] += 1;
                    }
                    for b in 0..nb {
                        for (k, &c) in count.iter().enumerate() {
                            // ln(frequency); a class never seen gets a negligible weight
                            logits[(t * nb + b) * v + k] = if c > 0 {
                                (c as f64 / nb as f64).ln()
                            } else {
                                -1e30
                            };
                        }
                    }
                }
                softmax_xent(&logits, nt * nb, v, tg, None, 1.0)
            }
            (TaskKind::Ball, Targets::Values(y), Inputs::Dense(x)) => {
                let (mut s, mut n) = (0.0, 0);
                for t in 1..nt {
                    for b in 0..nb {
                        for k in 0..2 {
                            let cur = x[(t * nb + b) * 2 + k] as f64;
                            let prev = x[((t - 1) * nb + b) * 2 + k] as f64;
                            let next = cur + BALL_DT * y[(t * nb + b) * 2 + k] as f64;
                            s += (2.0 * cur - prev - next).powi(2);
                            n += 1;
                        }
                    }
                }
                (s, n)
            }
            _ => panic!("batch does not belong to the {} task", self.kind.name()),
        }
    }
}
