//! A stack in bf16 (`recur::precision`) against a reference written out here in f64 from
//! PyTorch's cell equations, with the same roundings: weights and input rounded to bf16 once,
//! every new h rounded to bf16 before anything reads it; gates and cell state unrounded. Also:
//! every output and final state is a bf16 value, and the inference and training layouts of the
//! workspace give the same bits.

use recur::cell::{Activation, CellKind, LayerInput};
use recur::ops::bf16::round;
use recur::precision::round_weights;
use recur::rng::Rng;
use recur::stack::{Stack, StackConfig};

/// Absolute, on states in (-1, 1): one bf16 ulp near 1 (2^-8). The reference sums in f64 where
/// the stack sums in float32, and a float32 ulp of difference can move a state across a bf16
/// rounding boundary. (On the sizes here every state agrees exactly; whether the states are
/// rounded at all is checked on their bits.)
const TOL: f64 = 1.0 / 256.0;

fn sig(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// One direction, one layer, in f64 with bf16 rounding of every new h: (outputs (T, B, H),
/// final h, final c).
#[allow(clippy::too_many_arguments)]
fn reference(
    kind: CellKind,
    w_ih: &[f32],
    w_hh: &[f32],
    b_ih: &[f32],
    b_hh: &[f32],
    x: &[f64],
    (t, b, i, h): (usize, usize, usize, usize),
    h0: &[f64],
    c0: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut hs = h0.to_vec();
    let mut cs = c0.to_vec();
    let mut y = vec![0.0; t * b * h];
    let dot = |w: &[f32], row: usize, n: usize, v: &[f64]| -> f64 {
        (0..n).map(|k| w[row * n + k] as f64 * v[k]).sum()
    };
    for s in 0..t {
        let mut hn = vec![0.0; b * h];
        for r in 0..b {
            let xr = &x[(s * b + r) * i..(s * b + r + 1) * i];
            let hr = &hs[r * h..(r + 1) * h];
            let xi = |q: usize| dot(w_ih, q, i, xr) + b_ih[q] as f64;
            let hh = |q: usize| dot(w_hh, q, h, hr) + b_hh[q] as f64;
            for u in 0..h {
                let new = match kind {
                    CellKind::Lstm => {
                        let pre = |gi: usize| xi(gi * h + u) + hh(gi * h + u);
                        let (ig, fg, gg, og) =
                            (sig(pre(0)), sig(pre(1)), pre(2).tanh(), sig(pre(3)));
                        let c = fg * cs[r * h + u] + ig * gg;
                        cs[r * h + u] = c;
                        og * c.tanh()
                    }
                    CellKind::Gru => {
                        let rg = sig(xi(u) + hh(u));
                        let zg = sig(xi(h + u) + hh(h + u));
                        let ng = (xi(2 * h + u) + rg * hh(2 * h + u)).tanh();
                        (1.0 - zg) * ng + zg * hr[u]
                    }
                    CellKind::Rnn(_) => (xi(u) + hh(u)).tanh(),
                };
                hn[r * h + u] = round(new as f32) as f64;
            }
        }
        y[s * b * h..(s + 1) * b * h].copy_from_slice(&hn);
        hs = hn;
    }
    (y, hs, cs)
}

fn check(kind: CellKind, inference: bool) {
    let (t, b, i, h, layers) = (7, 3, 5, 13, 2);
    let stack = Stack::new(StackConfig::new(kind, i, h).with_layers(layers)).unwrap();
    let mut rng = Rng::new(17);
    let mut params = vec![0f32; stack.num_params()];
    stack.init(&mut params, &mut rng);
    round_weights(stack.layout(), &mut params);
    let x: Vec<f32> = (0..t * b * i).map(|_| round(rng.normal() as f32)).collect();
    let h0: Vec<f32> = (0..layers * b * h)
        .map(|_| 0.5 * rng.normal() as f32)
        .collect();
    let c0: Vec<f32> = (0..layers * b * h)
        .map(|_| 0.5 * rng.normal() as f32)
        .collect();
    let lstm = kind == CellKind::Lstm;

    let mut ws = stack.workspace::<f32>(t, b);
    ws.set_inference(inference);
    ws.set_bf16(true);
    stack.forward(
        &mut ws,
        &params,
        LayerInput::Dense { x: &x, ld: i },
        Some(&h0),
        lstm.then_some(&c0[..]),
        None,
        None,
    );

    // every state the stack hands out is a bf16 value
    for (what, v) in [("output", ws.output()), ("h_n", &ws.h_n[..])] {
        assert!(
            v.iter().all(|x| x.to_bits() & 0xffff == 0),
            "{kind:?}: an element of {what} is not a bf16 value"
        );
    }

    let layout = stack.layout();
    let get = |name: String| &params[layout.get(&name).unwrap().range()];
    let mut input: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mut width = i;
    for l in 0..layers {
        let h0l: Vec<f64> = h0[l * b * h..(l + 1) * b * h]
            .iter()
            .map(|&v| round(v) as f64)
            .collect();
        let c0l: Vec<f64> = c0[l * b * h..(l + 1) * b * h]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let (y, hn, cn) = reference(
            kind,
            get(format!("weight_ih_l{l}")),
            get(format!("weight_hh_l{l}")),
            get(format!("bias_ih_l{l}")),
            get(format!("bias_hh_l{l}")),
            &input,
            (t, b, width, h),
            &h0l,
            &c0l,
        );
        let worst = |got: &[f32], want: &[f64]| {
            got.iter()
                .zip(want)
                .map(|(&g, &w)| (g as f64 - w).abs())
                .fold(0.0, f64::max)
        };
        let got_hn = &ws.h_n[l * b * h..(l + 1) * b * h];
        let e = worst(got_hn, &hn);
        assert!(e <= TOL, "{kind:?} layer {l}: h_n off by {e:e}");
        if lstm {
            let e = worst(&ws.c_n[l * b * h..(l + 1) * b * h], &cn);
            assert!(e <= TOL, "{kind:?} layer {l}: c_n off by {e:e}");
        }
        if l == layers - 1 {
            let e = worst(ws.output(), &y);
            assert!(e <= TOL, "{kind:?}: outputs off by {e:e}");
        }
        // the next layer reads the reference's outputs (the stack's own layer-0 outputs are
        // not exposed; they are within TOL of these)
        input = y;
        width = h;
    }
}

#[test]
fn lstm_matches_the_reference() {
    check(CellKind::Lstm, true);
}

#[test]
fn gru_matches_the_reference() {
    check(CellKind::Gru, true);
}

#[test]
fn rnn_matches_the_reference() {
    check(CellKind::Rnn(Activation::Tanh), true);
}

#[test]
fn inference_and_training_layouts_agree_bit_for_bit() {
    for kind in [
        CellKind::Lstm,
        CellKind::Gru,
        CellKind::Rnn(Activation::Relu),
    ] {
        let (t, b, i, h) = (9, 4, 6, 20);
        let stack = Stack::new(StackConfig::new(kind, i, h).with_layers(2)).unwrap();
        let mut rng = Rng::new(3);
        let mut params = vec![0f32; stack.num_params()];
        stack.init(&mut params, &mut rng);
        round_weights(stack.layout(), &mut params);
        let x: Vec<f32> = (0..t * b * i).map(|_| round(rng.normal() as f32)).collect();
        let run = |inference: bool| {
            let mut ws = stack.workspace::<f32>(t, b);
            ws.set_inference(inference);
            ws.set_bf16(true);
            stack.forward_from_zeros(&mut ws, &params, LayerInput::Dense { x: &x, ld: i });
            (ws.output().to_vec(), ws.h_n.clone())
        };
        let (a, b2) = (run(true), run(false));
        assert!(a == b2, "{kind:?}: inference and training layouts differ");
    }
}

#[test]
fn the_training_layout_matches_the_reference() {
    check(CellKind::Lstm, false);
}
