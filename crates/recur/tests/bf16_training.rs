//! Training in bf16 (mixed precision, `Engine::set_precision(Precision::Bf16)` on a training
//! engine): the gradients of LSTM, GRU and RNN stacks with a dense input, dropout and a head
//! against float32's on the same rounded weights (close, as bf16 rounding allows, and not the
//! same: the bf16 path runs); every product reading bf16 values (the logits' and the gates'
//! gradients rounded); the engine's float32 master weights (what it returns and the optimizer
//! updates) and the bf16 copy it computes with; int8 refused for training.

use recur::cell::CellKind;
use recur::engine::{Backend, Batch, Cpu, Engine, LossTargets, Start};
use recur::model::{Head, Input, Model, ModelConfig};
use recur::ops::bf16::round;
use recur::optim::{OptimKind, Optimizer};
use recur::precision::prepare_weights;
use recur::rng::Rng;
use recur::stack::StackConfig;
use recur::Precision;

/// bf16 against float32 gradients of the same rounded weights, relative to each tensor's
/// largest: every state and every gate gradient is rounded to 8 significant bits (2^-9
/// relative), and the differences add up over the steps and layers. Measured on these sizes:
/// at most 1.3e-2 (a bias of the head or of a layer).
const GRAD_REL_TOL: f64 = 5e-2;

const T: usize = 6;
const B: usize = 4;
const I: usize = 10;
const V: usize = 5;

fn model(kind: CellKind) -> Model {
    let rnn = StackConfig::new(kind, I, 24)
        .with_layers(2)
        .with_dropout(0.2);
    Model::new(ModelConfig::dense(I, rnn, V, Head::StepClasses)).unwrap()
}

/// Gradients of the mean cross-entropy after one forward in `p` on `params` (dropout masks
/// from the same seed).
fn grads(model: &Model, params: &[f32], x: &[f32], targets: &[u32], p: Precision) -> Vec<f32> {
    let mut ws = model.workspace::<f32>(T, B);
    ws.set_precision(p);
    let mut masks = Rng::new(3);
    model.forward(
        &mut ws,
        params,
        Input::Dense(x),
        None,
        None,
        None,
        Some(&mut masks),
    );
    if p == Precision::Bf16 {
        // every layer's output and the head's input are bf16 values
        assert!(ws.stack.output().iter().all(|&v| round(v) == v));
    }
    model.loss(&mut ws, targets, 1.0 / (T * B) as f32);
    let mut g = vec![0f32; params.len()];
    model.backward(
        &mut ws,
        params,
        &mut g,
        Input::Dense(x),
        None,
        None,
        None,
        None,
    );
    g
}

#[test]
fn bf16_gradients_follow_float32_within_bf16_rounding() {
    for kind in [
        CellKind::Lstm,
        CellKind::Gru,
        CellKind::parse("rnn_tanh").unwrap(),
    ] {
        let m = model(kind);
        let mut rng = Rng::new(11);
        let mut params = vec![0f32; m.num_params()];
        m.init(&mut params, &mut rng);
        prepare_weights(m.layout(), &mut params, Precision::Bf16);
        let x: Vec<f32> = (0..T * B * I).map(|_| rng.normal() as f32).collect();
        let targets: Vec<u32> = (0..T * B).map(|i| (i * 7 % V) as u32).collect();
        let g32 = grads(&m, &params, &x, &targets, Precision::F32);
        let g16 = grads(&m, &params, &x, &targets, Precision::Bf16);
        assert_ne!(g32, g16, "{kind:?}: bf16 computed what float32 did");
        for e in &m.layout().entries {
            let (a, b) = (&g16[e.range()], &g32[e.range()]);
            let scale = b.iter().fold(1e-12f64, |s, &v| s.max(v.abs() as f64));
            let worst = a
                .iter()
                .zip(b)
                .map(|(&p, &q)| (p as f64 - q as f64).abs())
                .fold(0.0, f64::max);
            eprintln!("{kind:?} {}: {:e}", e.name, worst / scale);
            assert!(
                worst / scale <= GRAD_REL_TOL,
                "{kind:?} {}: bf16 gradient off by {:e} of its largest",
                e.name,
                worst / scale
            );
        }
    }
}

fn engine_pair() -> (Box<dyn Engine>, Vec<f32>, Vec<f32>, Vec<u32>) {
    let m = model(CellKind::Lstm);
    let mut rng = Rng::new(5);
    let mut params = vec![0f32; m.num_params()];
    m.init(&mut params, &mut rng);
    let x: Vec<f32> = (0..T * B * I).map(|_| rng.normal() as f32).collect();
    let targets: Vec<u32> = (0..T * B).map(|i| (i * 3 % V) as u32).collect();
    let opt = Optimizer::new(OptimKind::parse("adam", 0.0).unwrap(), 1e-2, params.len());
    let mut eng = Cpu.engine(m, params.clone(), Some(opt)).unwrap();
    eng.set_precision(Precision::Bf16).unwrap();
    (eng, params, x, targets)
}

#[test]
fn the_engine_updates_float32_master_weights_and_computes_with_their_bf16_copy() {
    let (mut eng, start, x, targets) = engine_pair();
    // what it returns are the float32 weights it was given, not their rounding
    assert_eq!(eng.params().unwrap().as_ref(), &start[..]);
    let mut master = start.clone();
    let mut opt = Optimizer::new(OptimKind::parse("adam", 0.0).unwrap(), 1e-2, start.len());
    let mut rng = Rng::new(1);
    let mut losses = Vec::new();
    for _ in 0..20 {
        let batch = Batch::dense(&x, T, B);
        eng.forward(&batch, Start::Zero, Some(&mut rng)).unwrap();
        let (l, n) = eng
            .loss(LossTargets::Classes(&targets), 1.0 / (T * B) as f32)
            .unwrap();
        losses.push(l / n as f64);
        eng.backward(&batch).unwrap();
        let g = eng.grads().unwrap().into_owned();
        eng.update(1e-2).unwrap();
        // the engine's update is the optimizer's on the master weights, with bf16 gradients
        opt.update(&mut master, &g);
        assert_eq!(eng.params().unwrap().as_ref(), &master[..]);
    }
    // master weights move by less than a bf16 step: they are not rounded
    let weights = eng.params().unwrap().into_owned();
    assert!(weights.iter().any(|&v| round(v) != v));
    assert!(
        losses[19] < losses[0] - 0.2,
        "bf16 training did not learn: {losses:?}"
    );
    // a forward in bf16 on the master weights is what the engine computes with
    let m = model(CellKind::Lstm);
    let mut ws = m.workspace::<f32>(T, B);
    ws.set_precision(Precision::Bf16);
    let mut rounded = weights.clone();
    prepare_weights(m.layout(), &mut rounded, Precision::Bf16);
    m.forward(&mut ws, &rounded, Input::Dense(&x), None, None, None, None);
    let batch = Batch::dense(&x, T, B);
    eng.forward(&batch, Start::Zero, None).unwrap();
    assert_eq!(eng.logits().unwrap().as_ref(), &ws.logits[..]);
}

#[test]
fn int8_does_not_train() {
    let m = model(CellKind::Gru);
    let n = m.num_params();
    let opt = Optimizer::new(OptimKind::parse("sgd", 0.0).unwrap(), 1e-2, n);
    let mut eng = Cpu.engine(m, vec![0.01; n], Some(opt)).unwrap();
    let e = eng.set_precision(Precision::Int8).unwrap_err().to_string();
    assert!(e.contains("int8 runs inference only"), "{e}");
}
