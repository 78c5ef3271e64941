//! The one training loop resumes exactly for every application: a run stopped part-way (here in
//! the middle of an epoch, or between evaluations), saved, and resumed from its latest
//! checkpoint gives bit for bit the losses, evaluations and final parameters of the same run
//! never stopped. The character model's version of this test is in `charlm.rs`; here are the
//! spoken-digit classifier and a long-memory task.

#[path = "support/random_speech.rs"]
mod random_speech;

use random_speech::{examples, small_config};
use recur::cell::CellKind;
use recur::checkpoint;
use recur::engine::Cpu;
use recur::model::Model;
use recur::optim::{OptimKind, Optimizer};
use recur::rng::Rng;
use recur::stack::StackConfig;
use recur::train::{Budget, Event, Run, StopReason, Trainer, LATEST};
use recur_apps::speech::classifier::{model_config, Pooling};
use recur_apps::speech::features::FeatureConfig;
use recur_apps::speech::train as speech;
use recur_apps::tasks::train::{LongMemory, RunConfig};
use recur_apps::tasks::{Task, TaskKind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("recur-resume-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// What a run reports: every step's loss and every evaluation (step, metric), as bit patterns.
#[derive(Debug, Default, PartialEq)]
struct Trace {
    losses: Vec<u64>,
    evals: Vec<(u64, Option<u64>)>,
}

/// Runs `t` until its budget, or until `stop_after` steps when given.
fn record<T: recur::train::Task>(
    t: &mut Trainer<T>,
    stop_after: Option<u64>,
) -> (Trace, StopReason) {
    let stop = AtomicBool::new(false);
    let mut tr = Trace::default();
    let reason = t
        .run(&stop, &mut |ev| match ev {
            Event::Step(s) => {
                tr.losses.push(s.loss.to_bits());
                if Some(s.step) == stop_after {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            Event::Eval { row, .. } => tr.evals.push((row.step, row.val_loss.map(f64::to_bits))),
            Event::Log { .. } => {}
        })
        .unwrap();
    (tr, reason)
}

fn same_params(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn a_speech_run_stopped_mid_epoch_resumes_bit_for_bit() {
    recur::set_threads(1);
    let features = FeatureConfig::default();
    let dim = features.dim();
    let (train, val) = (examples(22, dim, 1), examples(8, dim, 2));
    let config = small_config(&train, 5);
    // two layers with dropout: the masks come from the loop's RNG, which must resume too
    let model = model_config(dim, CellKind::Gru, 12, 2, true, 0.2, Pooling::Mean).unwrap();
    let fresh = |dir: PathBuf| {
        let run = Run::on(&Cpu).checkpoints(dir);
        speech::start(
            run,
            model.clone(),
            config.clone(),
            train.clone(),
            val.clone(),
        )
        .unwrap()
    };
    let mut whole = fresh(temp_dir("speech-a"));
    let bpe = 5; // 22 recordings in batches of 5
    let (ta, ra) = record(&mut whole, None);
    assert_eq!(ra, StopReason::Epochs);
    assert_eq!(ta.losses.len(), 3 * bpe);
    assert_eq!(
        ta.evals.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![5, 10, 15]
    );

    let dir = temp_dir("speech-b");
    let mut first = fresh(dir.clone());
    // step 7: in the middle of the second epoch
    let (t1, r1) = record(&mut first, Some(7));
    assert_eq!(r1, StopReason::Stopped);
    drop(first);
    let ckpt = checkpoint::load(&dir.join(LATEST)).unwrap();
    let run = Run::on(&Cpu).checkpoints(dir.clone());
    let mut second = speech::resume(run, ckpt, train.clone(), val.clone()).unwrap();
    assert_eq!(second.state.step, 7);
    let (t2, r2) = record(&mut second, None);
    assert_eq!(r2, StopReason::Epochs);
    let mut losses = t1.losses.clone();
    losses.extend(&t2.losses);
    assert_eq!(losses, ta.losses, "losses step by step (bit patterns)");
    let mut evals = t1.evals.clone();
    evals.extend(&t2.evals);
    assert_eq!(evals, ta.evals, "validation losses");
    assert!(same_params(
        &whole.params().unwrap(),
        &second.params().unwrap()
    ));
    assert_eq!(whole.state.best_step, second.state.best_step);
    // resuming on other recordings is refused, naming the counts
    let ckpt = checkpoint::load(&dir.join(LATEST)).unwrap();
    let e = speech::resume(Run::on(&Cpu), ckpt, examples(21, dim, 1), val.clone())
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("22 training and 8 validation"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_long_memory_task_stopped_between_evaluations_resumes_bit_for_bit() {
    recur::set_threads(1);
    let task = Task::new(TaskKind::Adding, 12).unwrap();
    let model = Model::new(task.model_config(StackConfig::new(CellKind::Lstm, 0, 10))).unwrap();
    let fresh = |dir: PathBuf| {
        let mut rng = Rng::new(5);
        let mut params = vec![0.0f32; model.num_params()];
        model.init(&mut params, &mut rng);
        let adam = OptimKind::parse("adam", 0.0).unwrap();
        let opt = Optimizer::new(adam, 1e-2, params.len());
        let run = Run::on(&Cpu).checkpoints(dir).budget(Budget {
            max_steps: Some(14),
            ..Budget::default()
        });
        let config = RunConfig {
            task: task.kind.name().into(),
            len: task.len,
            lr: 1e-2,
            clip: 1.0,
            eval_every: 4,
            batch: 6,
            eval_size: 12,
            seed: 5,
            optim: OptimKind::parse("adam", 0.0).unwrap(),
            carry_gate_bias: 0.0,
        };
        let task = LongMemory::new(task.clone(), 6, 12, 5);
        run.start_with(model.clone(), params, opt, rng, task, config)
            .unwrap()
    };
    let mut whole = fresh(temp_dir("task-a"));
    let (ta, ra) = record(&mut whole, None);
    assert_eq!(ra, StopReason::MaxSteps);
    assert_eq!(ta.losses.len(), 14);
    assert_eq!(
        ta.evals.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![4, 8, 12, 14]
    );

    let dir = temp_dir("task-b");
    let mut first = fresh(dir.clone());
    let (t1, r1) = record(&mut first, Some(6));
    assert_eq!(r1, StopReason::Stopped);
    drop(first);
    let ckpt = checkpoint::load(&dir.join(LATEST)).unwrap();
    let mut second = Run::on(&Cpu)
        .resume(ckpt, LongMemory::new(task.clone(), 6, 12, 5))
        .unwrap();
    assert_eq!(second.state.step, 6);
    let (t2, _) = record(&mut second, None);
    let mut losses = t1.losses.clone();
    losses.extend(&t2.losses);
    assert_eq!(losses, ta.losses, "losses step by step (bit patterns)");
    let mut evals = t1.evals.clone();
    evals.extend(&t2.evals);
    assert_eq!(evals, ta.evals, "held-out metrics");
    assert!(same_params(
        &whole.params().unwrap(),
        &second.params().unwrap()
    ));
    let _ = std::fs::remove_dir_all(dir);
}
