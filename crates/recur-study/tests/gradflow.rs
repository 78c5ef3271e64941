//! `recur_study::gradflow` against an independent computation: the cells' equations written out here
//! (PyTorch's, as in docs/semantics.md) in plain f64, then
//! - for the tanh RNN, the explicit Jacobian product `dL/dh_{t-1} = W_hh^T ((1 - h_t^2) * dL/dh_t)`;
//! - for every cell, central finite differences of L with respect to each component of h_t
//!   (holding the LSTM's c_t fixed), by re-running the written-out forward from step t.

use recur::cell::{Activation, CellKind};
use recur::rng::Rng;
use recur_study::gradflow::{gradflow, GradflowNet, GradflowSpec};

/// Jacobian product vs the library: both exact in f64, differing by rounding only.
const JAC_TOL: f64 = 1e-12;
/// Finite differences with eps = 1e-6: truncation ~eps^2 and rounding ~1e-16/eps, relative to
/// the largest gradient component.
const FD_TOL: f64 = 1e-7;
const FD_EPS: f64 = 1e-6;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The named tensor of the stack's flat parameters.
fn tensor<'a>(net: &'a GradflowNet, name: &str) -> &'a [f64] {
    &net.params[net.stack.layout().get(name).unwrap().range()]
}

/// row-major (rows, cols) matrix times vector
fn matvec(m: &[f64], v: &[f64]) -> Vec<f64> {
    let cols = v.len();
    m.chunks_exact(cols)
        .map(|r| r.iter().zip(v).map(|(a, b)| a * b).sum())
        .collect()
}

/// One step of the cell, PyTorch's equations: (h, c) -> (h', c').
fn step(net: &GradflowNet, x: &[f64], h: &[f64], c: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let nh = h.len();
    let wi = matvec(tensor(net, "weight_ih_l0"), x);
    let wh = matvec(tensor(net, "weight_hh_l0"), h);
    let (bi, bh) = (tensor(net, "bias_ih_l0"), tensor(net, "bias_hh_l0"));
    let gi: Vec<f64> = (0..wi.len()).map(|k| wi[k] + bi[k]).collect();
    let gh: Vec<f64> = (0..wh.len()).map(|k| wh[k] + bh[k]).collect();
    match net.stack.kind() {
        CellKind::Rnn(Activation::Tanh) => {
            ((0..nh).map(|k| (gi[k] + gh[k]).tanh()).collect(), vec![])
        }
        CellKind::Rnn(Activation::Relu) => {
            ((0..nh).map(|k| (gi[k] + gh[k]).max(0.0)).collect(), vec![])
        }
        CellKind::Lstm => {
            let g = |k: usize| gi[k] + gh[k];
            let mut h2 = vec![0.0; nh];
            let mut c2 = vec![0.0; nh];
            for k in 0..nh {
                let (i, f) = (sigmoid(g(k)), sigmoid(g(nh + k)));
                let (gg, o) = (g(2 * nh + k).tanh(), sigmoid(g(3 * nh + k)));
                c2[k] = f * c[k] + i * gg;
                h2[k] = o * c2[k].tanh();
            }
            (h2, c2)
        }
        CellKind::Gru => {
            let mut h2 = vec![0.0; nh];
            for k in 0..nh {
                let r = sigmoid(gi[k] + gh[k]);
                let z = sigmoid(gi[nh + k] + gh[nh + k]);
                let n = (gi[2 * nh + k] + r * gh[2 * nh + k]).tanh();
                h2[k] = (1.0 - z) * n + z * h[k];
            }
            (h2, vec![])
        }
    }
}

/// States h_0..h_T and c_0..c_T.
fn states(net: &GradflowNet, x: &[f64], ni: usize, nh: usize) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let mut hs = vec![vec![0.0; nh]];
    let mut cs = vec![vec![0.0; nh]];
    for xt in x.chunks_exact(ni) {
        let (h, c) = step(net, xt, hs.last().unwrap(), cs.last().unwrap());
        hs.push(h);
        cs.push(if c.is_empty() { vec![0.0; nh] } else { c });
    }
    (hs, cs)
}

/// L = (w . h_T - y)^2 when the run restarts at step t from (h, c).
fn loss_from(
    net: &GradflowNet,
    x: &[f64],
    ni: usize,
    t: usize,
    h: &[f64],
    c: &[f64],
    y: f64,
) -> f64 {
    let (mut h, mut c) = (h.to_vec(), c.to_vec());
    for xt in x.chunks_exact(ni).skip(t) {
        let (h2, c2) = step(net, xt, &h, &c);
        h = h2;
        if !c2.is_empty() {
            c = c2;
        }
    }
    let e: f64 = h.iter().zip(&net.w).map(|(a, b)| a * b).sum::<f64>() - y;
    e * e
}

fn worst(a: &[f64], b: &[f64]) -> (usize, f64, f64) {
    let scale = a.iter().chain(b).fold(1e-300f64, |m, v| m.max(v.abs()));
    let (i, d) = a
        .iter()
        .zip(b)
        .map(|(p, q)| (p - q).abs())
        .enumerate()
        .fold((0, 0.0), |m, (i, d)| if d > m.1 { (i, d) } else { m });
    (i, d / scale, d)
}

fn spec(cell: CellKind, scale: f64) -> GradflowSpec {
    GradflowSpec {
        cell,
        input_size: 2,
        hidden: 3,
        t: 6,
        sequences: 1,
        scale,
        gate_bias: 0.0,
        seed: 9,
    }
}

#[test]
fn tanh_rnn_matches_the_explicit_jacobian_product() {
    for scale in [1.0, 3.0] {
        let sp = spec(CellKind::parse("rnn_tanh").unwrap(), scale);
        let net = GradflowNet::new(&sp, &mut Rng::new(1)).unwrap();
        let mut rng = Rng::new(2);
        let x: Vec<f64> = (0..sp.t * 2).map(|_| rng.normal()).collect();
        let y = 0.3;
        let got = net.state_grads(&x, y);
        let (hs, _) = states(&net, &x, 2, 3);
        let whh = tensor(&net, "weight_hh_l0");
        let e: f64 = hs[sp.t].iter().zip(&net.w).map(|(a, b)| a * b).sum::<f64>() - y;
        let mut g: Vec<f64> = net.w.iter().map(|w| 2.0 * e * w).collect();
        for t in (0..=sp.t).rev() {
            let (i, rel, abs) = worst(&got[t], &g);
            assert!(
                rel <= JAC_TOL,
                "scale {scale}: dL/dh_{t} element {i}: {} vs {} (rel {rel:e}, abs {abs:e})",
                got[t][i],
                g[i]
            );
            if t > 0 {
                // forward was: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
                let d: Vec<f64> = (0..3).map(|k| (1.0 - hs[t][k] * hs[t][k]) * g[k]).collect();
                g = (0..3)
                    .map(|j| (0..3).map(|k| whh[k * 3 + j] * d[k]).sum())
                    .collect();
            }
        }
    }
}

#[test]
fn every_cell_matches_finite_differences() {
    for name in ["rnn_tanh", "rnn_relu", "lstm", "gru"] {
        let mut sp = spec(CellKind::parse(name).unwrap(), 1.5);
        sp.gate_bias = 0.7;
        let net = GradflowNet::new(&sp, &mut Rng::new(4)).unwrap();
        let mut rng = Rng::new(5);
        let x: Vec<f64> = (0..sp.t * 2).map(|_| rng.normal()).collect();
        let y = -0.7;
        let got = net.state_grads(&x, y);
        assert_eq!(got.len(), sp.t + 1);
        let (hs, cs) = states(&net, &x, 2, 3);
        for t in 0..=sp.t {
            let num: Vec<f64> = (0..3)
                .map(|i| {
                    let mut hp = hs[t].clone();
                    hp[i] += FD_EPS;
                    let lp = loss_from(&net, &x, 2, t, &hp, &cs[t], y);
                    hp[i] -= 2.0 * FD_EPS;
                    let lm = loss_from(&net, &x, 2, t, &hp, &cs[t], y);
                    (lp - lm) / (2.0 * FD_EPS)
                })
                .collect();
            let (i, rel, abs) = worst(&got[t], &num);
            assert!(
                rel <= FD_TOL,
                "{name}: dL/dh_{t} element {i}: {} vs numeric {} (rel {rel:e}, abs {abs:e})",
                got[t][i],
                num[i]
            );
        }
    }
}

#[test]
fn averages_have_one_entry_per_distance_and_start_at_one() {
    let mut sp = spec(CellKind::Gru, 1.0);
    sp.sequences = 3;
    let mut calls = 0;
    let r = gradflow(&sp, &mut |_| calls += 1).unwrap();
    assert_eq!(calls, 3);
    assert_eq!(r.norm.len(), sp.t + 1);
    assert!((r.rel[0] - 1.0).abs() < 1e-15, "{}", r.rel[0]);
    assert!(r.norm.iter().all(|v| v.is_finite() && *v >= 0.0));
    // the same seed gives the same numbers
    let r2 = gradflow(&sp, &mut |_| {}).unwrap();
    assert_eq!(r.norm, r2.norm);
}
