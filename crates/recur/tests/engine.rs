//! `Trainer::with_engine`: moving a run to another engine mid-way hands over the parameters,
//! optimizer state and carried hidden state exactly. Moved from the CPU engine to a fresh CPU
//! engine after 5 steps, a run must give bit-for-bit the losses, evaluations and final parameters
//! of the same run never moved (the GPU engine is checked the same way, against a tolerance, in
//! crates/recur-cuda/tests/model_vs_cpu.rs).

use recur::cell::CellKind;
use recur::data::{self, Vocab};
use recur::engine::{CpuEngine, Engine};
use recur::model::ModelConfig;
use recur::optim::OptimKind;
use recur::stack::StackConfig;
use recur::train::{Budget, Event, TrainConfig, Trainer};
use std::sync::atomic::AtomicBool;

fn trainer(steps: u64) -> Trainer {
    let text = "to be or not to be, that is the question\nROMEO:\nwhether 'tis nobler\n".repeat(30);
    let vocab = Vocab::from_text(&text);
    let ids = vocab.encode(&text).unwrap();
    let (tr, va) = data::split(&ids, 0.1);
    // two layers with dropout: the dropout RNG stays with the trainer, the masks must agree too
    let rnn = StackConfig::new(CellKind::Lstm, 0, 16)
        .with_layers(2)
        .with_dropout(0.25);
    let cfg = TrainConfig {
        model: ModelConfig::char_model(vocab.len(), 0, rnn),
        batch_size: 3,
        seq_length: 7,
        optim: OptimKind::parse("adam", 0.0).unwrap(),
        lr: 1e-2,
        lr_decay: 0.9,
        lr_decay_every: 4,
        grad_clip: 1.0,
        grad_clip_value: 0.5,
        seed: 11,
        eval_every: 5,
        log_every: 0,
    };
    let budget = Budget {
        max_steps: Some(steps),
        ..Budget::default()
    };
    Trainer::new(
        cfg,
        budget,
        tr.to_vec(),
        va.to_vec(),
        None,
        None,
        serde_json::Value::Null,
    )
    .unwrap()
}

fn run(t: &mut Trainer) -> (Vec<u64>, Vec<Option<u64>>) {
    let mut losses = Vec::new();
    let mut vals = Vec::new();
    t.run(&AtomicBool::new(false), &mut |ev| match ev {
        Event::Step(s) => losses.push(s.loss.to_bits()),
        Event::Eval { row, .. } => vals.push(row.val_loss.map(f64::to_bits)),
        Event::Log(_) => {}
    })
    .unwrap();
    (losses, vals)
}

#[test]
fn moving_a_run_to_a_fresh_engine_changes_nothing() {
    let mut whole = trainer(12);
    let (l_whole, v_whole) = run(&mut whole);

    let mut first = trainer(5);
    let (mut l, mut v) = run(&mut first);
    first.state.budget.max_steps = Some(12);
    let mut moved = first
        .with_engine(|p| Ok(Box::new(CpuEngine::new(p)) as Box<dyn Engine>))
        .unwrap();
    let (l2, v2) = run(&mut moved);
    l.extend(l2);
    v.extend(v2);
    assert_eq!(l.len(), 12);
    assert_eq!(l, l_whole, "losses step by step (f64 bit patterns)");
    // the moved run evaluates at step 5 (end of its first part) and 10, 12; the whole one at 5,
    // 10, 12: the same evaluations
    assert_eq!(v, v_whole, "validation losses");
    let (a, b) = (whole.params().unwrap(), moved.params().unwrap());
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "final parameters"
    );
    let (oa, ob) = (whole.optimizer().unwrap(), moved.optimizer().unwrap());
    assert_eq!(oa.step, 12);
    assert_eq!(oa.step, ob.step);
    assert!(oa
        .m
        .iter()
        .zip(&ob.m)
        .all(|(x, y)| x.to_bits() == y.to_bits()));
    assert!(oa
        .v
        .iter()
        .zip(&ob.v)
        .all(|(x, y)| x.to_bits() == y.to_bits()));
    assert_eq!(moved.device(), "cpu");
}
