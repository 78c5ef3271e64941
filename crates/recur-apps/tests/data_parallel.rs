//! Data-parallel training through the training loop's seam (`recur::collective`), with ranks as
//! threads of this test summing through shared memory (the command line's ranks sum through
//! MPI; the loop cannot tell): 2 ranks give the losses of one process on the same global batch,
//! a checkpoint written by 2 ranks resumes on 1 and the reverse, ending where an unbroken run
//! does, and a batch that does not split is refused.

#[path = "support/small_run.rs"]
mod small_run;
#[path = "support/threads.rs"]
mod threads;

use recur::cell::CellKind;
use recur::checkpoint;
use recur::engine::Cpu;
use recur::model::ModelConfig;
use recur::optim::OptimKind;
use recur::stack::StackConfig;
use recur::train::{Budget, Run, LATEST};
use recur_apps::charlm::train::{resume, start, TrainConfig, Trainer};
use small_run::small_data;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use threads::{Recorder, Threads};

/// One step's loss, 2 ranks against one process: the same sums in another order (each rank's
/// share of the batch summed, then the shares), float32, over 20 steps of Adam (measured: under
/// 2e-8).
const LOSS_TOL: f64 = 1e-6;

fn config(v: usize, batch: usize) -> TrainConfig {
    TrainConfig {
        model: ModelConfig::char_model(
            v,
            0,
            StackConfig::new(CellKind::Lstm, 0, 16).with_layers(2),
        ),
        batch_size: batch,
        seq_length: 8,
        optim: OptimKind::parse("adam", 0.0).unwrap(),
        lr: 1e-2,
        lr_decay: 1.0,
        lr_decay_every: 0,
        grad_clip: 1.0,
        grad_clip_value: 0.0,
        seed: 5,
        eval_every: 5,
        log_every: 0,
        schedule: None,
        ema: 0.0,
    }
}

fn budget(steps: u64) -> Budget {
    Budget {
        max_steps: Some(steps),
        ..Budget::default()
    }
}

/// The losses of every step and the evaluations' of a run of `steps` steps on `ranks` ranks
/// (0: one process without the seam), fresh or resumed from `from`, writing to `dir`.
fn train(
    ranks: usize,
    steps: u64,
    from: Option<PathBuf>,
    dir: Option<PathBuf>,
) -> (Vec<f64>, Vec<f64>, Vec<f32>) {
    let (tr, va, v) = small_data();
    let open = move |c: Option<Threads>| -> Trainer {
        let mut run = Run::on(&Cpu).budget(budget(steps));
        if let Some(d) = &dir {
            run = run.checkpoints(d.clone());
        }
        if let Some(c) = c {
            run = run.collective(Box::new(c));
        }
        match &from {
            Some(path) => resume(run, checkpoint::load(path).unwrap(), tr.clone(), va.clone()),
            None => start(run, config(v, 4), tr.clone(), va.clone(), None),
        }
        .unwrap()
    };
    let go = |mut t: Trainer| {
        let (mut losses, mut vals) = (Vec::new(), Vec::new());
        t.run(&AtomicBool::new(false), &mut |ev| match ev {
            recur::train::Event::Step(s) => losses.push(s.loss),
            recur::train::Event::Eval { row, .. } => vals.push(row.val_loss.unwrap()),
            _ => {}
        })
        .unwrap();
        (losses, vals, t.params().unwrap())
    };
    if ranks == 0 {
        return go(open(None));
    }
    let handles: Vec<_> = Threads::group(ranks)
        .into_iter()
        .map(|c| {
            let open = open.clone();
            std::thread::spawn(move || go(open(Some(c))))
        })
        .collect();
    let mut results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // every rank holds the same weights
    for r in &results[1..] {
        assert_eq!(r.2, results[0].2, "ranks disagree on the weights");
        assert_eq!(r.0, results[0].0, "ranks disagree on the losses");
    }
    results.swap_remove(0)
}

fn close(a: &[f64], b: &[f64], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    let mut worst = 0.0f64;
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() < LOSS_TOL, "{what} {k}: {x} vs {y}");
        worst = worst.max((x - y).abs());
    }
    eprintln!("{what}: largest difference {worst:e}");
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("recur-dp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn two_ranks_train_as_one_process_on_the_global_batch() {
    let (one, one_val, _) = train(0, 20, None, None);
    let (two, two_val, _) = train(2, 20, None, None);
    assert_eq!(one.len(), 20);
    close(&one, &two, "step loss");
    close(&one_val, &two_val, "validation loss");
    // the losses fell: the run trained
    assert!(one[19] < one[0] - 0.3, "{one:?}");
    // and the seam with one rank is the plain loop, bit for bit (no dropout here)
    let (single, _, _) = train(1, 20, None, None);
    assert_eq!(single, one);
}

#[test]
fn checkpoints_move_between_rank_counts() {
    let (whole, _, whole_w) = train(0, 16, None, None);
    // 2 ranks for 8 steps, then 1 process; and 1 process, then 2 ranks
    for (first, second, name) in [(2, 0, "two-then-one"), (0, 2, "one-then-two")] {
        let dir = tmpdir(name);
        let (a, _, _) = train(first, 8, None, Some(dir.clone()));
        let (b, _, w) = train(second, 16, Some(dir.join(LATEST)), None);
        let joined: Vec<f64> = a.into_iter().chain(b).collect();
        close(&joined, &whole, name);
        let worst = w
            .iter()
            .zip(&whole_w)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-3, "{name}: weights off by {worst}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_batch_that_does_not_split_is_refused() {
    let (tr, va, v) = small_data();
    let mut ranks = Threads::group(3);
    let c = ranks.remove(0);
    let run = Run::on(&Cpu).collective(Box::new(c));
    let e = start(run, config(v, 4), tr, va, None)
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("does not split into 3 equal shares"), "{e}");
}

/// Relative difference of the validation loss measured in two halves against once: the same
/// float32 losses summed in f64 in another order.
const SHARED_EVAL_TOL: f64 = 1e-9;

#[test]
fn each_rank_measures_its_share_of_the_validation_text() {
    let (tr, va, v) = small_data();
    let mut whole = start(Run::on(&Cpu), config(v, 4), tr.clone(), va.clone(), None).unwrap();
    let want = whole.evaluate().unwrap().expect("a validation loss");
    let mut parts = Vec::new();
    for rank in 0..2 {
        let (rec, seen) = Recorder::new(rank, 2);
        let run = Run::on(&Cpu).collective(Box::new(rec));
        let mut t = start(run, config(v, 4), tr.clone(), va.clone(), None).unwrap();
        seen.lock().unwrap().clear();
        t.evaluate().unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "one sum of [loss, count] per evaluation");
        parts.push((seen[0][0], seen[0][1]));
    }
    let (a, b) = (parts[0], parts[1]);
    assert!(a.1 > 0.0 && a.1 == b.1, "unequal shares: {parts:?}");
    let got = (a.0 + b.0) / (a.1 + b.1);
    assert!(
        ((got - want) / want).abs() < SHARED_EVAL_TOL,
        "two halves {got} against once {want}"
    );
}
