//! Gradient checks: BPTT gradients against centred finite differences, in f64.
//!
//! The checked scalar is `J = loss(outputs, targets) + sum(h_n * S) + sum(c_n * S_c)` with fixed
//! random `S`, `S_c`, so that every parameter, the inputs and the initial states all receive
//! gradient. The loss is the model head's (see [`recur::model::Head`]): mean cross-entropy against
//! random classes, or mean squared error against random normal targets, on every step or on each
//! sequence's last step. Each element `w` gets `n = (J(w + eps) - J(w - eps)) / (2 eps)`.
//!
//! Error per tensor: `max_i |a_i - n_i| / max(max_i |a_i|, max_i |n_i|, 1e-12)`, the worst
//! element's error relative to the tensor's largest gradient (`a` analytic, `n` numeric). Relative
//! to the tensor's scale rather than element by element, so that an element whose gradient is
//! zero up to rounding does not read as a large relative error.

use recur::error::{Error, Result};
use recur::model::{Input, InputKind, Model, ModelConfig};
use recur::ops::loss::IGNORE;
use recur::rng::Rng;
use serde::Serialize;

/// What to check.
#[derive(Clone, Debug)]
pub struct GradcheckSpec {
    /// The model. Dense input: the inputs are checked too. Token input (one-hot or an
    /// embedding): random symbols, no input gradient to check.
    pub cfg: ModelConfig,
    /// T steps (>= 1).
    pub t: usize,
    /// B sequences.
    pub b: usize,
    /// Give the sequences random lengths in 1..=T (the first keeps T).
    pub varlen: bool,
    /// Random initial states (h0, c0) instead of zero.
    pub init_state: bool,
    /// Seed for weights, data and dropout and weight-drop masks.
    pub seed: u64,
    /// Finite-difference step.
    pub eps: f64,
}

/// Result for one tensor.
#[derive(Clone, Debug, Serialize)]
pub struct TensorCheck {
    pub name: String,
    pub numel: usize,
    pub max_rel_err: f64,
    pub max_abs_err: f64,
    /// Flat index of the worst element.
    pub worst_index: usize,
}

fn compare(name: &str, a: &[f64], n: &[f64]) -> TensorCheck {
    let mut worst = (0.0f64, 0usize);
    let mut scale = 1e-12f64;
    for (i, (&x, &y)) in a.iter().zip(n).enumerate() {
        let d = (x - y).abs();
        if d > worst.0 || i == 0 {
            worst = (d.max(worst.0), if d >= worst.0 { i } else { worst.1 });
        }
        scale = scale.max(x.abs()).max(y.abs());
    }
    TensorCheck {
        name: name.to_string(),
        numel: a.len(),
        max_rel_err: worst.0 / scale,
        max_abs_err: worst.0,
        worst_index: worst.1,
    }
}

/// Runs the check; one [`TensorCheck`] per parameter tensor (an aliased one, such as tied
/// weights, under each of its names), then `input` (dense input only), `h0` (and `c0`).
pub fn gradcheck(spec: &GradcheckSpec) -> Result<Vec<TensorCheck>> {
    let dense = spec.cfg.input == InputKind::Dense;
    if spec.t == 0 || spec.b == 0 {
        return Err(Error::invalid("gradcheck needs T >= 1 and B >= 1"));
    }
    let model = Model::new(spec.cfg.clone())?;
    let (t, b) = (spec.t, spec.b);
    let rc = &spec.cfg.rnn;
    let (ld, h, p) = (rc.num_layers * rc.dirs(), rc.hidden_size, rc.out_size());
    let lstm = model.stack().kind() == recur::cell::CellKind::Lstm;
    let mut rng = Rng::new(spec.seed);
    let mut params = vec![0.0f64; model.num_params()];
    model.init(&mut params, &mut rng);
    let x: Vec<f64> = if dense {
        (0..t * b * spec.cfg.input_size)
            .map(|_| rng.normal())
            .collect()
    } else {
        Vec::new()
    };
    let ids: Vec<u32> = if dense {
        Vec::new()
    } else {
        (0..t * b)
            .map(|_| rng.below(spec.cfg.input_size as u64) as u32)
            .collect()
    };
    fn input<'a>(dense: bool, x: &'a [f64], ids: &'a [u32]) -> Input<'a, f64> {
        if dense {
            Input::Dense(x)
        } else {
            Input::Tokens(ids)
        }
    }
    let lengths: Option<Vec<usize>> = spec.varlen.then(|| {
        (0..b)
            .map(|i| {
                if i == 0 {
                    t
                } else {
                    1 + rng.below(t as u64) as usize
                }
            })
            .collect()
    });
    let head = spec.cfg.head;
    let v = spec.cfg.output_size;
    let rows = if head.last_step() { b } else { t * b };
    // classes (classification heads) or values (regression heads), one row per decoded output;
    // padded steps of the per-step heads take no loss (IGNORE, NaN)
    let padded = |r: usize| -> bool {
        !head.last_step() && lengths.as_ref().is_some_and(|l| r / b >= l[r % b])
    };
    let targets: Vec<u32> = if head.regression() {
        Vec::new()
    } else {
        (0..rows)
            .map(|r| {
                let c = rng.below(v as u64) as u32;
                if padded(r) {
                    IGNORE
                } else {
                    c
                }
            })
            .collect()
    };
    let values: Vec<f64> = if head.regression() {
        (0..rows * v)
            .map(|i| {
                let y = rng.normal();
                if padded(i / v) {
                    f64::NAN
                } else {
                    y
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut rand_vec = |n: usize, on: bool| -> Vec<f64> {
        (0..n)
            .map(|_| if on { rng.normal() } else { 0.0 })
            .collect()
    };
    let h0 = rand_vec(ld * b * p, spec.init_state);
    let c0 = rand_vec(if lstm { ld * b * h } else { 0 }, spec.init_state);
    let s_h = rand_vec(ld * b * p, true);
    let s_c = rand_vec(if lstm { ld * b * h } else { 0 }, true);
    let drop_seed = spec.seed ^ 0x5eed;
    let r = &spec.cfg.rnn;
    let training =
        r.dropout > 0.0 || r.weight_drop > 0.0 || r.dropout_output > 0.0 || r.dropout_input > 0.0;

    let mut ws = model.workspace::<f64>(t, b);
    let lens = lengths.as_deref();
    let mut objective = |params: &[f64],
                         x: &[f64],
                         h0: &[f64],
                         c0: &[f64],
                         grads: Option<(&mut [f64], &mut [f64])>|
     -> (f64, Vec<f64>, Vec<f64>) {
        let mut drng = Rng::new(drop_seed);
        model.forward(
            &mut ws,
            params,
            input(dense, x, &ids),
            Some(h0),
            lstm.then_some(c0),
            lens,
            training.then_some(&mut drng),
        );
        let mut j = if head.regression() {
            let count = values.iter().filter(|v| !v.is_nan()).count().max(1);
            let (se, _) = model.loss_mse(&mut ws, &values, 1.0 / count as f64);
            se / count as f64
        } else {
            let count = targets.iter().filter(|&&v| v != IGNORE).count().max(1);
            let (ce, _) = model.loss(&mut ws, &targets, 1.0 / count as f64);
            ce / count as f64
        };
        j += ws
            .stack
            .h_n
            .iter()
            .zip(&s_h)
            .map(|(a, b)| a * b)
            .sum::<f64>();
        j += ws
            .stack
            .c_n
            .iter()
            .zip(&s_c)
            .map(|(a, b)| a * b)
            .sum::<f64>();
        if let Some((g, dx)) = grads {
            model.backward(
                &mut ws,
                params,
                g,
                input(dense, x, &ids),
                lens,
                Some(&s_h),
                lstm.then_some(&s_c[..]),
                dense.then_some(dx),
            );
            return (j, ws.stack.dh0.clone(), ws.stack.dc0.clone());
        }
        (j, Vec::new(), Vec::new())
    };

    let mut g = vec![0.0f64; params.len()];
    let mut dx = vec![0.0f64; x.len()];
    let (_, dh0, dc0) = objective(&params, &x, &h0, &c0, Some((&mut g, &mut dx)));

    let eps = spec.eps;
    let mut out = Vec::new();
    let numeric =
        |buf: &mut Vec<f64>, which: usize, f: &mut dyn FnMut(&[f64], usize) -> f64| -> Vec<f64> {
            let _ = which;
            let mut n = vec![0.0; buf.len()];
            for i in 0..buf.len() {
                let orig = buf[i];
                buf[i] = orig + eps;
                let jp = f(buf, i);
                buf[i] = orig - eps;
                let jm = f(buf, i);
                buf[i] = orig;
                n[i] = (jp - jm) / (2.0 * eps);
            }
            n
        };
    // parameters
    let mut pbuf = params.clone();
    let num_p = numeric(&mut pbuf, 0, &mut |pp, _| {
        objective(pp, &x, &h0, &c0, None).0
    });
    for e in &model.layout().entries {
        out.push(compare(&e.name, &g[e.range()], &num_p[e.range()]));
    }
    if dense {
        let mut xbuf = x.clone();
        let num_x = numeric(&mut xbuf, 1, &mut |xx, _| {
            objective(&params, xx, &h0, &c0, None).0
        });
        out.push(compare("input", &dx, &num_x));
    }
    let mut hbuf = h0.clone();
    let num_h = numeric(&mut hbuf, 2, &mut |hh, _| {
        objective(&params, &x, hh, &c0, None).0
    });
    out.push(compare("h0", &dh0, &num_h));
    if lstm {
        let mut cbuf = c0.clone();
        let num_c = numeric(&mut cbuf, 3, &mut |cc, _| {
            objective(&params, &x, &h0, cc, None).0
        });
        out.push(compare("c0", &dc0, &num_c));
    }
    Ok(out)
}
