//! Weight drop (DropConnect on `weight_hh`, AWD-LSTM's `WeightDrop`): a training forward with
//! weight drop is, bit for bit, the plain forward on weights whose `weight_hh` were multiplied by
//! the call's mask (0 or 1/(1-p), drawn element by element from the training generator, layer by
//! layer, forward direction first, before any dropout mask); its gradient is the plain gradient
//! on those weights with `weight_hh`'s multiplied by the mask (the chain rule through
//! `w * mask`), accumulated onto what `grads` held. Without a generator (evaluation) the raw
//! weights are used. (PyTorch has no weight-drop operation: the plain stack on the masked
//! weights is what tests/torch_parity.rs checks against PyTorch.)

use recur::cell::{Activation, CellKind, LayerInput};
use recur::rng::Rng;
use recur::stack::{Stack, StackConfig};

fn randn(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.normal() as f32 * 0.5).collect()
}

/// The names of every direction's `weight_hh`, in the order masks are drawn.
fn whh_names(cfg: &StackConfig) -> Vec<String> {
    (0..cfg.num_layers)
        .flat_map(|l| {
            (0..cfg.dirs())
                .map(move |d| format!("weight_hh_l{l}{}", if d == 1 { "_reverse" } else { "" }))
        })
        .collect()
}

fn check(cfg: StackConfig) {
    let (t, b) = (6, 3);
    let stack = Stack::new(cfg.clone()).unwrap();
    let n = stack.num_params();
    let params = randn(n, 1);
    let i = cfg.input_size;
    let x = randn(t * b * i, 2);
    let input = LayerInput::Dense { x: &x, ld: i };
    let dy = randn(t * b * cfg.dirs() * cfg.out_size(), 3);
    let seed = 77;

    // with weight drop, from the generator
    let mut ws = stack.workspace::<f32>(t, b);
    stack.forward(
        &mut ws,
        &params,
        input,
        None,
        None,
        None,
        Some(&mut Rng::new(seed)),
    );
    let y = ws.output().to_vec();
    let before = randn(n, 4); // what the gradient buffer held before
    let mut g = before.clone();
    stack.backward(
        &mut ws,
        &params,
        &mut g,
        input,
        None,
        Some(&dy),
        None,
        None,
        None,
    );

    // the same masks, drawn here in the documented order
    let p = cfg.weight_drop;
    let keep = (1.0 / (1.0 - p)) as f32;
    let mut rng = Rng::new(seed);
    let mut masked = params.clone();
    let mut mask = vec![1.0f32; n];
    let mut dropped = 0usize;
    for name in whh_names(&cfg) {
        let r = stack.layout().get(&name).unwrap().range();
        for k in r {
            mask[k] = if rng.uniform() < p { 0.0 } else { keep };
            dropped += usize::from(mask[k] == 0.0);
            masked[k] = params[k] * mask[k];
        }
    }
    assert!(dropped > 0, "no weight was dropped");
    // the reference: the same stack without weight drop, its dropout masks (if any) drawn next
    let plain_stack = Stack::new(cfg.clone().with_weight_drop(0.0)).unwrap();
    let mut plain = plain_stack.workspace::<f32>(t, b);
    let drng = (cfg.dropout > 0.0).then_some(&mut rng);
    plain_stack.forward(&mut plain, &masked, input, None, None, None, drng);
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    assert!(same(&y, plain.output()), "{cfg:?}: outputs differ");
    let mut gp = vec![0.0f32; n];
    plain_stack.backward(
        &mut plain,
        &masked,
        &mut gp,
        input,
        None,
        Some(&dy),
        None,
        None,
        None,
    );
    let whh: Vec<std::ops::Range<usize>> = whh_names(&cfg)
        .iter()
        .map(|nm| stack.layout().get(nm).unwrap().range())
        .collect();
    for k in 0..n {
        let want = if whh.iter().any(|r| r.contains(&k)) {
            before[k] + gp[k] * mask[k]
        } else {
            // the other gradients add onto the buffer as a plain backward does
            let mut one = [before[k]];
            one[0] += gp[k];
            one[0]
        };
        let tol = 1e-6 * (1.0 + want.abs());
        assert!(
            (g[k] - want).abs() <= tol,
            "{cfg:?}: gradient {k}: {} vs {want}",
            g[k]
        );
    }

    // evaluation (no generator): the raw weights
    let mut ev = stack.workspace::<f32>(t, b);
    stack.forward(&mut ev, &params, input, None, None, None, None);
    let mut raw = stack.workspace::<f32>(t, b);
    stack.forward(&mut raw, &params, input, None, None, None, None);
    assert!(same(ev.output(), raw.output()));
    assert!(!same(ev.output(), &y), "evaluation should not drop weights");
}

#[test]
fn weight_drop_is_the_plain_stack_on_masked_recurrent_weights() {
    for kind in [
        CellKind::Lstm,
        CellKind::Gru,
        CellKind::Rnn(Activation::Tanh),
    ] {
        check(
            StackConfig::new(kind, 5, 7)
                .with_layers(2)
                .with_weight_drop(0.3),
        );
        check(
            StackConfig::new(kind, 4, 6)
                .with_bidirectional(true)
                .with_weight_drop(0.5),
        );
    }
    check(
        StackConfig::new(CellKind::Lstm, 5, 8)
            .with_proj_size(3)
            .with_layers(2)
            .with_dropout(0.2)
            .with_weight_drop(0.4),
    );
}

#[test]
fn weight_drop_out_of_range_is_refused() {
    for p in [-0.1, 1.0, f64::NAN] {
        let e = Stack::new(StackConfig::new(CellKind::Lstm, 3, 4).with_weight_drop(p))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("weight_drop"), "{e}");
    }
}
