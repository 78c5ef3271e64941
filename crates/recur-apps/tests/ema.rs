//! The moving average of the weights (`recur::train::Settings::ema`) on a small character-model
//! run: the average against one recomputed here in f64 from the parameters after every step, the
//! evaluation of the average (equal to a fresh engine's on the averaged weights, the raw
//! parameters left bit for bit as they were), what the log and the best checkpoint hold, the
//! checkpoint's `ema.` tensors, and a run stopped and resumed equal to an unbroken one.

#[path = "support/small_run.rs"]
mod small_run;

use recur::cell::CellKind;
use recur::checkpoint::{self, Checkpoint};
use recur::engine::{Backend, Cpu};
use recur::model::ModelConfig;
use recur::optim::OptimKind;
use recur::stack::StackConfig;
use recur::train::{ema_decay, Budget, Event, Run, BEST, LATEST};
use recur_apps::charlm::train::{resume, start, TrainConfig, Trainer};
use small_run::small_data;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

const DECAY: f64 = 0.9;
/// f32 averaging against the f64 recomputation over 12 steps: a few float32 roundings of
/// values under 1 per step.
const AVG_TOL: f64 = 1e-6;

fn config(v: usize, ema: f64) -> TrainConfig {
    let rnn = StackConfig::new(CellKind::Gru, 0, 12)
        .with_layers(2)
        .with_dropout(0.2);
    TrainConfig {
        model: ModelConfig::char_model(v, 0, rnn),
        batch_size: 3,
        seq_length: 6,
        optim: OptimKind::parse("adam", 0.0).unwrap(),
        lr: 2e-2,
        lr_decay: 1.0,
        lr_decay_every: 0,
        grad_clip: 1.0,
        grad_clip_value: 0.0,
        seed: 4,
        eval_every: 4,
        log_every: 0,
        schedule: None,
        ema,
    }
}

fn trainer(ema: f64, steps: u64, dir: Option<PathBuf>) -> Trainer {
    let (tr, va, v) = small_data();
    let mut run = Run::on(&Cpu).budget(Budget {
        max_steps: Some(steps),
        ..Budget::default()
    });
    if let Some(d) = dir {
        run = run.checkpoints(d);
    }
    start(run, config(v, ema), tr, va, None).unwrap()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("recur-ema-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The held-out loss of `weights` on a fresh engine.
fn loss_of(model: &ModelConfig, weights: &[f32], val: &[u32], t: usize, b: usize) -> f64 {
    let m = recur::model::Model::new(model.clone()).unwrap();
    let mut eng = Cpu.engine(m, weights.to_vec(), None).unwrap();
    let (sum, n) = eng.stream_loss(val, t, b).unwrap();
    sum / n as f64
}

#[test]
fn average_follows_the_documented_recurrence() {
    let mut t = trainer(DECAY, 12, None);
    assert!(t.ema().is_none(), "no average before the first update");
    let mut want: Vec<f64> = Vec::new();
    for step in 1..=12u64 {
        t.step().unwrap().unwrap();
        let p = t.params().unwrap();
        if step == 1 {
            want = p.iter().map(|&x| x as f64).collect();
            assert_eq!(
                t.ema().unwrap(),
                &p[..],
                "the average starts as the weights"
            );
            continue;
        }
        let d = ema_decay(DECAY, step);
        for (w, &x) in want.iter_mut().zip(&p) {
            *w = d * *w + (1.0 - d) * x as f64;
        }
        let got = t.ema().unwrap();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(&g, &w)| (g as f64 - w).abs())
            .fold(0.0, f64::max);
        assert!(worst < AVG_TOL, "step {step}: off by {worst}");
    }
    // the average lags the weights: it is not them
    assert_ne!(t.ema().unwrap(), &t.params().unwrap()[..]);
    // the warm-up of the decay: (1 + n) / (10 + n) until it reaches the decay
    assert_eq!(ema_decay(0.999, 1), 2.0 / 11.0);
    assert_eq!(ema_decay(0.5, 100), 0.5);
}

#[test]
fn evaluation_measures_the_average_and_keeps_the_weights() {
    let mut t = trainer(DECAY, 9, None);
    for _ in 0..9 {
        t.step().unwrap().unwrap();
    }
    let raw = t.params().unwrap();
    let avg = t.ema().unwrap().to_vec();
    let (_, va, _) = small_data();
    let cfg = t.state.config.clone();
    let b = cfg.batch_size.min(va.len() - 1);
    let got = t.evaluate_ema().unwrap().unwrap();
    let want = loss_of(&cfg.model, &avg, &va, cfg.seq_length, b);
    assert_eq!(got, want, "the average's loss is a fresh engine's on it");
    assert_eq!(
        t.params().unwrap(),
        raw,
        "the raw weights are back, bit for bit"
    );
    let raw_loss = t.evaluate().unwrap().unwrap();
    assert_eq!(raw_loss, loss_of(&cfg.model, &raw, &va, cfg.seq_length, b));
    assert_ne!(got, raw_loss);
}

#[test]
fn log_best_and_checkpoints_hold_both() {
    let dir = tmpdir("files");
    let mut t = trainer(DECAY, 12, Some(dir.clone()));
    let mut rows: Vec<(recur::train::LogRow, Vec<f32>)> = Vec::new();
    t.run(&AtomicBool::new(false), &mut |ev| {
        if let Event::Eval { row, params, .. } = ev {
            rows.push(((*row).clone(), params.to_vec()));
        }
    })
    .unwrap();
    assert_eq!(rows.len(), 3);
    for (row, params) in &rows {
        assert!(
            row.val_loss.is_some() && row.raw_val_loss.is_some(),
            "{row:?}"
        );
        assert_ne!(row.val_loss, row.raw_val_loss);
        // the evaluated weights reported are the average
        let cfg = &t.state.config;
        let (_, va, _) = small_data();
        let b = cfg.batch_size.min(va.len() - 1);
        let l = loss_of(&cfg.model, params, &va, cfg.seq_length, b);
        assert_eq!(Some(l), row.val_loss);
    }
    // best: chosen on the average's loss
    let best_row = rows
        .iter()
        .map(|(r, _)| r)
        .min_by(|a, b| a.val_loss.partial_cmp(&b.val_loss).unwrap())
        .unwrap();
    assert_eq!(t.state.best_val, best_row.val_loss);
    let best = checkpoint::load(&dir.join(BEST)).unwrap();
    let latest = checkpoint::load(&dir.join(LATEST)).unwrap();
    assert_eq!(latest.params, t.params().unwrap());
    assert_eq!(latest.ema.as_deref(), t.ema());
    assert_eq!(latest.weights(), t.ema().unwrap());
    let (_, va, _) = small_data();
    let cfg = &t.state.config;
    let b = cfg.batch_size.min(va.len() - 1);
    let l = loss_of(&best.model, best.weights(), &va, cfg.seq_length, b);
    assert_eq!(Some(l), t.state.best_val);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_without_average_saves_none() {
    let dir = tmpdir("none");
    let mut t = trainer(0.0, 4, Some(dir.clone()));
    t.run(&AtomicBool::new(false), &mut |_| {}).unwrap();
    assert!(t.ema().is_none());
    let ck = checkpoint::load(&dir.join(LATEST)).unwrap();
    assert!(ck.ema.is_none());
    assert_eq!(ck.weights(), &ck.params[..]);
    assert!(t.state.history.iter().all(|r| r.raw_val_loss.is_none()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resume_continues_the_average_exactly() {
    let dir = tmpdir("resume");
    let mut whole = trainer(DECAY, 14, None);
    whole.run(&AtomicBool::new(false), &mut |_| {}).unwrap();

    let mut first = trainer(DECAY, 6, Some(dir.clone()));
    first.run(&AtomicBool::new(false), &mut |_| {}).unwrap();
    let (tr, va, _) = small_data();
    let ck = checkpoint::load(&dir.join(LATEST)).unwrap();
    let run = Run::on(&Cpu).budget(Budget {
        max_steps: Some(14),
        ..Budget::default()
    });
    let mut second = resume(run, ck, tr, va).unwrap();
    second.run(&AtomicBool::new(false), &mut |_| {}).unwrap();
    assert_eq!(second.params().unwrap(), whole.params().unwrap());
    assert_eq!(second.ema(), whole.ema());
    let vals = |t: &Trainer| {
        t.state
            .history
            .iter()
            // the first part's last step was evaluated as its end
            .filter(|r| r.step != 6)
            .map(|r| (r.step, r.val_loss, r.raw_val_loss))
            .collect::<Vec<_>>()
    };
    assert_eq!(vals(&second), vals(&whole));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn checkpoint_keeps_the_average_and_refuses_it_broken() {
    let dir = tmpdir("ckpt");
    let mut t = trainer(DECAY, 3, Some(dir.clone()));
    t.run(&AtomicBool::new(false), &mut |_| {}).unwrap();
    let path = dir.join(LATEST);
    let ck: Checkpoint = checkpoint::load(&path).unwrap();
    let avg = ck.ema.clone().expect("an average");

    // saved and loaded again: the same numbers
    let again = dir.join("again.safetensors");
    checkpoint::save(&again, &ck).unwrap();
    assert_eq!(checkpoint::load(&again).unwrap().ema, Some(avg.clone()));

    // wrong length, or beside int8 weights: refused on save with one line
    let mut short = ck.clone();
    short.ema = Some(avg[1..].to_vec());
    let e = checkpoint::save(&dir.join("short.safetensors"), &short)
        .unwrap_err()
        .to_string();
    assert!(e.contains("moving average") && !e.contains('\n'), "{e}");
    let mut int8 = ck.clone();
    int8.optimizer = None;
    int8.precision = recur::Precision::Int8;
    let e = checkpoint::save(&dir.join("int8.safetensors"), &int8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("moving average"), "{e}");

    // a file with only some of the average's tensors: refused on load, naming the missing one
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let dropped = "ema.decoder.bias";
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != dropped)
        .collect();
    let broken = safetensors::serialize(kept, meta.metadata().clone()).unwrap();
    let bad = dir.join("bad.safetensors");
    std::fs::write(&bad, broken).unwrap();
    let e = checkpoint::load(&bad).unwrap_err().to_string();
    assert!(e.contains(dropped), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_decay_outside_zero_to_one_is_refused() {
    let (tr, va, v) = small_data();
    for bad in [1.0, -0.1, f64::NAN] {
        let e = start(Run::on(&Cpu), config(v, bad), tr.clone(), va.clone(), None)
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("moving average"), "{e}");
    }
}
