//! A small character-model training run for the tests that move a run between engines through
//! its checkpoint (`tests/engine.rs` here, and `crates/recur-cuda/tests/model_vs_cpu.rs`, which
//! includes this file by path): a 2-layer LSTM 16 with dropout on a short repeated text, Adam with
//! learning-rate decay, both kinds of clipping, evaluation every 5 steps. Its short text serves
//! the tests of the moving average and of data-parallel runs too.

// each test binary uses its own subset of these
#![allow(dead_code)]

use recur::cell::CellKind;
use recur::checkpoint::Checkpoint;
use recur::engine::{Backend, Cpu};
use recur::model::ModelConfig;
use recur::optim::OptimKind;
use recur::stack::StackConfig;
use recur_apps::charlm::data::{self, Vocab};
use recur_apps::charlm::train::{self as charlm, Budget, Event, Run, TrainConfig, Trainer};
use std::sync::atomic::AtomicBool;

/// The training and validation ids and the vocabulary size.
pub fn small_data() -> (Vec<u32>, Vec<u32>, usize) {
    let text = "to be or not to be, that is the question\nROMEO:\nwhether 'tis nobler\n".repeat(30);
    let vocab = Vocab::from_text(&text);
    let ids = vocab.encode(&text).unwrap();
    let (tr, va) = data::split(&ids, 0.1);
    (tr.to_vec(), va.to_vec(), vocab.len())
}

fn steps_budget(steps: u64) -> Budget {
    Budget {
        max_steps: Some(steps),
        ..Budget::default()
    }
}

/// The run on the CPU, to stop after `steps` steps.
pub fn small_trainer(steps: u64) -> Trainer {
    let (tr, va, v) = small_data();
    // two layers with dropout: the dropout RNG stays with the trainer, the masks must agree too
    let rnn = StackConfig::new(CellKind::Lstm, 0, 16)
        .with_layers(2)
        .with_dropout(0.25);
    let cfg = TrainConfig {
        model: ModelConfig::char_model(v, 0, rnn),
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
        schedule: None,
        ema: 0.0,
    };
    charlm::start(Run::on(&Cpu).budget(steps_budget(steps)), cfg, tr, va, None).unwrap()
}

/// The run saved in `ckpt` continued on `backend` until `steps` steps in all: how a run moves
/// to another device.
pub fn small_resumed(ckpt: Checkpoint, backend: &dyn Backend, steps: u64) -> Trainer {
    let (tr, va, _) = small_data();
    let run = Run::on(backend).budget(steps_budget(steps));
    charlm::resume(run, ckpt, tr, va).unwrap()
}

/// Runs `t` to its budget: the training loss of every step and every evaluation's loss.
pub fn losses(t: &mut Trainer) -> (Vec<f64>, Vec<Option<f64>>) {
    let (mut l, mut v) = (Vec::new(), Vec::new());
    t.run(&AtomicBool::new(false), &mut |ev| match ev {
        Event::Step(s) => l.push(s.loss),
        Event::Eval { row, .. } => v.push(row.val_loss),
        Event::Log { .. } => {}
    })
    .unwrap();
    (l, v)
}
