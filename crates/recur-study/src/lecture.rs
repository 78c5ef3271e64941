//! The seed lecture's worked example: a 3-unit tanh RNN without biases that reads "hell" and
//! should predict "ello", with the lecture's weights (worked-example.md).
//!
//! The lecture writes row vectors, `h_t = tanh(x_t W_xh + h_{t-1} W_hh)`, `o_t = h_t W_ho`; recur
//! stores weights as PyTorch does, so `weight_ih = W_xh^T`, `weight_hh = W_hh^T` and
//! `decoder.weight = W_ho^T`. The conversion happens here and nowhere else.

use recur::cell::{Activation, CellKind};
use recur::model::{Input, Model, ModelConfig, ModelWorkspace};
use recur::ops::loss::softmax_rows;
use recur::ops::Float;
use recur::stack::StackConfig;
use serde::Serialize;

/// The vocabulary, in the lecture's order.
pub const VOCAB: [char; 4] = ['h', 'e', 'l', 'o'];
/// Inputs h, e, l, l.
pub const INPUTS: [u32; 4] = [0, 1, 2, 2];
/// Targets e, l, l, o.
pub const TARGETS: [u32; 4] = [1, 2, 2, 3];

/// W_xh (4 x 3), row-vector convention.
pub const W_XH: [[f64; 3]; 4] = [
    [0.2973, 0.2766, 0.7974],
    [0.3869, 0.9170, 0.4125],
    [0.5538, 0.5646, 0.5026],
    [0.2206, 0.6801, 0.3880],
];
/// W_hh (3 x 3), row-vector convention.
pub const W_HH: [[f64; 3]; 3] = [
    [0.3152, 0.5083, 0.9454],
    [0.3008, 0.6058, 0.2999],
    [0.9741, 0.3419, 0.9133],
];
/// W_ho (3 x 4), row-vector convention.
pub const W_HO: [[f64; 4]; 3] = [
    [0.3189, 0.6216, 0.5164, 0.7501],
    [0.0260, 0.6230, 0.0179, 0.6123],
    [0.1320, 0.9009, 0.3873, 0.8142],
];

/// The lecture's model: one-hot over 4 symbols, one tanh RNN layer of 3 units, no biases, a
/// decoder without bias.
pub fn model() -> Model {
    let rnn = StackConfig::new(CellKind::Rnn(Activation::Tanh), 4, 3).with_bias(false);
    let mut cfg = ModelConfig::char_model(4, 0, rnn);
    cfg.decoder_bias = false;
    Model::new(cfg).expect("the lecture's model is valid")
}

/// The lecture's weights in recur's (PyTorch's) layout: weight_ih (3, 4), weight_hh (3, 3),
/// decoder.weight (4, 3).
pub fn params<F: Float>(m: &Model) -> Vec<F> {
    let mut p = vec![F::ZERO; m.num_params()];
    let get = |name: &str| m.layout().get(name).expect("lecture tensor").clone();
    let (wih, whh, dec) = (
        get("rnn.weight_ih_l0"),
        get("rnn.weight_hh_l0"),
        get("decoder.weight"),
    );
    for i in 0..3 {
        for j in 0..4 {
            // weight_ih[i][j] = W_xh[j][i]
            p[wih.offset + i * 4 + j] = F::from_f64(W_XH[j][i]);
            // decoder.weight[j][i] = W_ho[i][j]
            p[dec.offset + j * 3 + i] = F::from_f64(W_HO[i][j]);
        }
        for j in 0..3 {
            p[whh.offset + i * 3 + j] = F::from_f64(W_HH[j][i]);
        }
    }
    p
}

/// One step of the lecture's table.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub t: usize,
    pub input: String,
    pub target: String,
    /// x_t W_xh
    pub xw: Vec<f64>,
    /// h_{t-1} W_hh
    pub hw: Vec<f64>,
    /// h_t
    pub h: Vec<f64>,
    /// o_t (logits)
    pub logits: Vec<f64>,
    /// softmax(o_t)
    pub probs: Vec<f64>,
    pub pred: String,
}

/// Runs the model over "hell" and returns the four steps, with the intermediate products the
/// lecture prints, and the mean cross-entropy against "ello".
pub fn trace<F: Float>(m: &Model, params: &[F]) -> (Vec<Step>, f64) {
    let mut ws: ModelWorkspace<F> = m.workspace(4, 1);
    m.forward(
        &mut ws,
        params,
        Input::Tokens(&INPUTS),
        None,
        None,
        None,
        None,
    );
    let mut probs = vec![F::ZERO; 16];
    softmax_rows(&ws.logits, &mut probs, 4, 4);
    let (loss, n) = m.loss(&mut ws, &TARGETS, F::ONE);
    let wih = &params[m.layout().get("rnn.weight_ih_l0").expect("tensor").range()];
    let whh = &params[m.layout().get("rnn.weight_hh_l0").expect("tensor").range()];
    let out = ws.stack.output();
    let mut steps = Vec::new();
    for t in 0..4 {
        let id = INPUTS[t] as usize;
        let hprev: Vec<f64> = if t == 0 {
            vec![0.0; 3]
        } else {
            out[(t - 1) * 3..t * 3].iter().map(|v| v.to_f64()).collect()
        };
        let xw: Vec<f64> = (0..3).map(|i| wih[i * 4 + id].to_f64()).collect();
        let hw: Vec<f64> = (0..3)
            .map(|i| (0..3).map(|j| hprev[j] * whh[i * 3 + j].to_f64()).sum())
            .collect();
        let logits: Vec<f64> = ws.logits[t * 4..(t + 1) * 4]
            .iter()
            .map(|v| v.to_f64())
            .collect();
        let pr: Vec<f64> = probs[t * 4..(t + 1) * 4]
            .iter()
            .map(|v| v.to_f64())
            .collect();
        let pred = (0..4).fold(0, |best, j| if pr[j] > pr[best] { j } else { best });
        steps.push(Step {
            t: t + 1,
            input: VOCAB[id].to_string(),
            target: VOCAB[TARGETS[t] as usize].to_string(),
            xw,
            hw,
            h: out[t * 3..(t + 1) * 3].iter().map(|v| v.to_f64()).collect(),
            logits,
            probs: pr,
            pred: VOCAB[pred].to_string(),
        });
    }
    (steps, loss / n as f64)
}

/// One step of BPTT through the lecture's model for the mean cross-entropy over the four steps
/// (row vectors, the lecture's matrices: W_xh 4x3, W_hh 3x3, W_ho 3x4; a_t is the
/// pre-activation, h_t = tanh(a_t)).
#[derive(Clone, Debug, Serialize)]
pub struct BackStep {
    pub t: usize,
    /// dL/do_t = (softmax(o_t) - y_t) / 4
    pub d_logits: Vec<f64>,
    /// The part of dL/dh_t carried back from step t+1 (zero at t = 4).
    pub dh_next: Vec<f64>,
    /// dL/dh_t = dL/do_t W_ho^T + dh_next
    pub d_h: Vec<f64>,
    /// dL/da_t = dL/dh_t * (1 - h_t^2)
    pub d_a: Vec<f64>,
    /// What goes back to step t-1: dL/da_t W_hh^T.
    pub dh_prev: Vec<f64>,
    /// This step's terms of the weights' gradients: h_t^T dL/do_t (3x4), h_(t-1)^T dL/da_t
    /// (3x3), x_t^T dL/da_t (4x3).
    pub d_w_ho: Vec<Vec<f64>>,
    pub d_w_hh: Vec<Vec<f64>>,
    pub d_w_xh: Vec<Vec<f64>>,
}

/// The lecture's matrices W_xh (4x3), W_hh (3x3), W_ho (3x4) read back from recur's layout.
pub fn matrices(m: &Model, params: &[f64]) -> [Vec<Vec<f64>>; 3] {
    let get = |name: &str| &params[m.layout().get(name).expect("lecture tensor").range()];
    let (wih, whh, dec) = (
        get("rnn.weight_ih_l0"),
        get("rnn.weight_hh_l0"),
        get("decoder.weight"),
    );
    let w_xh = (0..4)
        .map(|j| (0..3).map(|i| wih[i * 4 + j]).collect())
        .collect();
    let w_hh = (0..3)
        .map(|j| (0..3).map(|i| whh[i * 3 + j]).collect())
        .collect();
    let w_ho = (0..3)
        .map(|i| (0..4).map(|j| dec[j * 3 + i]).collect())
        .collect();
    [w_xh, w_hh, w_ho]
}

/// BPTT through the four steps by hand, step by step in the lecture's notation (returned in
/// the order t = 1..4; computed from t = 4 back to 1). Summing each step's terms gives the
/// weights' gradients, which `crate`'s tests check against recur's own backward.
pub fn backward_trace(m: &Model, params: &[f64]) -> Vec<BackStep> {
    let (steps, _) = trace(m, params);
    let [_, w_hh, w_ho] = matrices(m, params);
    let outer = |a: &[f64], b: &[f64]| -> Vec<Vec<f64>> {
        a.iter()
            .map(|&x| b.iter().map(|&y| x * y).collect())
            .collect()
    };
    let mut out: Vec<Option<BackStep>> = vec![None; 4];
    let mut dh_next = vec![0.0; 3];
    for t in (0..4).rev() {
        let s = &steps[t];
        let d_logits: Vec<f64> = (0..4)
            .map(|j| (s.probs[j] - f64::from(TARGETS[t] as u8 == j as u8)) / 4.0)
            .collect();
        let d_h: Vec<f64> = (0..3)
            .map(|i| (0..4).map(|j| d_logits[j] * w_ho[i][j]).sum::<f64>() + dh_next[i])
            .collect();
        let d_a: Vec<f64> = (0..3).map(|i| d_h[i] * (1.0 - s.h[i] * s.h[i])).collect();
        let dh_prev: Vec<f64> = (0..3)
            .map(|j| (0..3).map(|i| d_a[i] * w_hh[j][i]).sum())
            .collect();
        let h_prev = if t == 0 {
            vec![0.0; 3]
        } else {
            steps[t - 1].h.clone()
        };
        let x: Vec<f64> = (0..4)
            .map(|j| f64::from(INPUTS[t] as u8 == j as u8))
            .collect();
        out[t] = Some(BackStep {
            t: t + 1,
            d_w_ho: outer(&s.h, &d_logits),
            d_w_hh: outer(&h_prev, &d_a),
            d_w_xh: outer(&x, &d_a),
            dh_next: dh_next.clone(),
            d_logits,
            d_h,
            d_a,
            dh_prev: dh_prev.clone(),
        });
        dh_next = dh_prev;
    }
    out.into_iter().map(|b| b.expect("every step")).collect()
}

/// How much of a gradient survives k steps back from t = 4 (k = 1, 2, 3): the Frobenius norm
/// of the product of the step Jacobians diag(1 - h_g^2) W_hh^T for g = 4 down to 4 - k + 1 (a
/// row vector dL/dh_g times it gives dL/dh_(g-k)).
pub fn jacobian_norms(m: &Model, params: &[f64]) -> Vec<f64> {
    let (steps, _) = trace(m, params);
    let [_, w_hh, _] = matrices(m, params);
    let mut prod: Vec<Vec<f64>> = (0..3)
        .map(|i| (0..3).map(|j| f64::from(i == j)).collect())
        .collect();
    let mut norms = Vec::new();
    for g in (1..4).rev() {
        let h = &steps[g].h;
        // J[i][j] = (1 - h_i^2) W_hh[j][i]: row vector v -> v J
        let jac: Vec<Vec<f64>> = (0..3)
            .map(|i| (0..3).map(|j| (1.0 - h[i] * h[i]) * w_hh[j][i]).collect())
            .collect();
        prod = (0..3)
            .map(|i| {
                (0..3)
                    .map(|j| (0..3).map(|k| prod[i][k] * jac[k][j]).sum())
                    .collect()
            })
            .collect();
        norms.push(prod.iter().flatten().map(|v| v * v).sum::<f64>().sqrt());
    }
    norms
}

/// The predicted string of a trace ("ello" when trained).
pub fn preds(steps: &[Step]) -> String {
    steps.iter().map(|s| s.pred.as_str()).collect()
}

/// Trains the lecture's model on "hell" -> "ello" with BPTT (full sequence, mean cross-entropy)
/// until every prediction is right and the loss is below `target_loss`, or `max_epochs` pass.
/// `on_epoch(epoch, loss, params)` sees the loss and the weights before each update. Returns
/// the epochs run.
pub fn train<F: Float>(
    m: &Model,
    params: &mut [F],
    opt: &mut recur::optim::Optimizer<F>,
    max_epochs: usize,
    target_loss: f64,
    mut on_epoch: impl FnMut(usize, f64, &[F]),
) -> usize {
    let mut ws: ModelWorkspace<F> = m.workspace(4, 1);
    let mut grads = vec![F::ZERO; params.len()];
    for epoch in 1..=max_epochs {
        m.forward(
            &mut ws,
            params,
            Input::Tokens(&INPUTS),
            None,
            None,
            None,
            None,
        );
        let (loss, n) = m.loss(&mut ws, &TARGETS, F::from_f64(0.25));
        let loss = loss / n as f64;
        let (steps, _) = trace(m, params);
        if preds(&steps) == "ello" && loss < target_loss {
            return epoch - 1;
        }
        on_epoch(epoch, loss, params);
        grads.fill(F::ZERO);
        m.backward(
            &mut ws,
            params,
            &mut grads,
            Input::Tokens(&INPUTS),
            None,
            None,
            None,
            None,
        );
        opt.update(params, &grads);
    }
    max_epochs
}
