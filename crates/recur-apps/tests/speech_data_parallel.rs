//! The spoken-digit classifier (`recur speech train`) trained data-parallel through the
//! training loop's seam, ranks as threads: 2 ranks give one process's step losses, validation
//! losses and weights, although a batch of 5 recordings splits into shares of 2 and 3 (each
//! rank scales its summed loss by the ranks over the whole batch); each rank measures its own
//! part of the validation recordings; batches that cannot give every rank a recording are
//! refused.

#[path = "support/random_speech.rs"]
mod random_speech;
#[path = "support/threads.rs"]
mod threads;

use random_speech::{examples, small_config};
use recur::cell::CellKind;
use recur::engine::Cpu;
use recur::train::{Event, Run, StopReason};
use recur_apps::speech::classifier::{model_config, Pooling};
use recur_apps::speech::features::FeatureConfig;
use recur_apps::speech::train::{self as speech, SpeechConfig};
use std::sync::atomic::AtomicBool;
use threads::{close, largest_gap, on_ranks, Outcome, Recorder, Threads};

/// A step's loss and a validation loss, 2 ranks against one process: the same float32 sums in
/// another order, over 3 epochs of Adam.
const LOSS_TOL: f64 = 1e-5;
/// The weights after those epochs.
const WEIGHT_TOL: f32 = 1e-4;

fn config(batch_size: usize) -> SpeechConfig {
    small_config(&examples(22, FeatureConfig::default().dim(), 1), batch_size)
}

/// A fresh classifier run opened as `r` says: 22 training recordings in batches of 5, `n_val`
/// validation ones; no dropout (with it the ranks draw their own masks, equal to one process's
/// in distribution only).
fn open(r: Run, n_val: usize) -> speech::SpeechTrainer {
    let cfg = config(5);
    let dim = cfg.features.dim();
    let model = model_config(dim, CellKind::Gru, 12, 2, true, 0.0, Pooling::Mean).unwrap();
    speech::start(r, model, cfg, examples(22, dim, 1), examples(n_val, dim, 2)).unwrap()
}

/// 3 epochs on `ranks` ranks (0: no seam): the two series `pick` takes from the events, and the
/// weights.
fn run_picking(
    ranks: usize,
    pick: impl Fn(&Event, &mut Vec<f64>, &mut Vec<f64>) + Sync,
) -> Outcome {
    on_ranks(ranks, |c: Option<Threads>| {
        let mut r = Run::on(&Cpu);
        if let Some(c) = c {
            r = r.collective(Box::new(c));
        }
        let mut t = open(r, 8);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let reason = t
            .run(&AtomicBool::new(false), &mut |ev| pick(ev, &mut a, &mut b))
            .unwrap();
        assert_eq!(reason, StopReason::Epochs);
        (a, b, t.params().unwrap())
    })
}

/// (step losses, validation losses, weights) of 3 epochs on `ranks` ranks (0: no seam).
fn run(ranks: usize) -> Outcome {
    run_picking(ranks, |ev, losses, vals| match ev {
        Event::Step(s) => losses.push(s.loss),
        Event::Eval { row, .. } => vals.push(row.val_loss.unwrap()),
        Event::Log { .. } => {}
    })
}

#[test]
fn two_ranks_train_the_classifier_as_one_process() {
    recur::set_threads(1);
    let (one, one_val, one_w) = run(0);
    let (two, two_val, two_w) = run(2);
    // 22 recordings in batches of 5: 5 steps an epoch, the last batch of 2
    assert_eq!(one.len(), 15);
    close(&one, &two, LOSS_TOL, "step loss");
    close(&one_val, &two_val, LOSS_TOL, "validation loss");
    let worst = largest_gap(&one_w, &two_w);
    assert!(worst < WEIGHT_TOL, "weights off by {worst}");
    // the run learned: the comparison is of a run that trained
    assert!(one_val[2] < one_val[0], "{one_val:?}");
}

#[test]
fn batches_that_leave_a_rank_without_a_recording_are_refused() {
    let cfg = config(5);
    let dim = cfg.features.dim();
    let model = model_config(dim, CellKind::Gru, 8, 1, false, 0.0, Pooling::Mean).unwrap();
    // 22 recordings in batches of 5 end with a batch of 2: fine for 2 ranks, not for 3
    let mut ranks = Threads::group(3);
    let run = Run::on(&Cpu).collective(Box::new(ranks.remove(0)));
    let e = speech::start(run, model, cfg, examples(22, dim, 1), examples(8, dim, 2))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("end with a batch of 2, fewer than the 3 ranks"),
        "{e}"
    );
}

#[test]
fn each_rank_measures_its_part_of_the_validation_recordings() {
    let want = open(Run::on(&Cpu), 7).evaluate().unwrap().unwrap();
    // [summed loss, hits, recordings] of each rank alone
    let mut parts = Vec::new();
    for rank in 0..2 {
        let (rec, seen) = Recorder::new(rank, 2);
        let mut t = open(Run::on(&Cpu).collective(Box::new(rec)), 7);
        seen.lock().unwrap().clear();
        t.evaluate().unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "one sum per evaluation");
        parts.push(seen[0].clone());
    }
    // 7 recordings: 4 and 3
    assert_eq!((parts[0][2], parts[1][2]), (4.0, 3.0), "{parts:?}");
    let got = (parts[0][0] + parts[1][0]) / 7.0;
    assert!(
        ((got - want) / want).abs() < LOSS_TOL,
        "two parts {got} against once {want}"
    );
}

/// The training accuracy and loss of each log row: the ranks' tallies summed, so 2 ranks log
/// what one process logs.
#[test]
fn the_training_accuracy_covers_every_rank() {
    let pick = |ev: &Event, acc: &mut Vec<f64>, loss: &mut Vec<f64>| {
        if let Event::Eval { row, .. } = ev {
            acc.push(row.extra["train_acc"].as_f64().unwrap());
            loss.push(row.extra["train_loss_per_utterance"].as_f64().unwrap());
        }
    };
    let (one_acc, one_loss, _) = run_picking(0, pick);
    let (two_acc, two_loss, _) = run_picking(2, pick);
    assert_eq!(one_acc.len(), 3);
    // 22 recordings an epoch: a rank's share alone would count 10 or 12 of them
    assert_eq!(one_acc, two_acc, "training accuracy");
    close(
        &one_loss,
        &two_loss,
        LOSS_TOL,
        "training loss per recording",
    );
}
