//! The learning-rate schedules of the training loop (`recur::train::Schedule::Cosine` and
//! `Plateau`) on a small character-model run: every step's rate against the documented formula,
//! re-derived here from the run's own log (the warm-up line, the cosine over the step limit, the
//! cuts after evaluations without a new best), and a plateau run stopped and resumed ends where
//! an unbroken one does.

use recur::cell::CellKind;
use recur::checkpoint;
use recur::engine::Cpu;
use recur::model::ModelConfig;
use recur::optim::OptimKind;
use recur::rng::Rng;
use recur::stack::StackConfig;
use recur::train::{Budget, Event, Run, Schedule, LATEST};
use recur_apps::charlm::data::Vocab;
use recur_apps::charlm::train::{resume, start, TrainConfig};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

const BASE: f64 = 0.05;

fn text() -> String {
    let words = [
        "to be ",
        "or not ",
        "that is ",
        "the question\n",
        "ROMEO:\n",
    ];
    let mut rng = Rng::new(5);
    let mut s = String::new();
    while s.len() < 3000 {
        s.push_str(words[rng.below(words.len() as u64) as usize]);
    }
    s
}

fn config(v: usize, schedule: Schedule) -> TrainConfig {
    TrainConfig {
        model: ModelConfig::char_model(v, 0, StackConfig::new(CellKind::Lstm, 0, 16)),
        batch_size: 4,
        seq_length: 8,
        optim: OptimKind::parse("adam", 0.0).unwrap(),
        lr: BASE,
        lr_decay: 1.0,
        lr_decay_every: 0,
        grad_clip: 1.0,
        grad_clip_value: 0.0,
        seed: 2,
        eval_every: 3,
        log_every: 0,
        schedule: Some(schedule),
        ema: 0.0,
    }
}

/// (step, rate) of every step, and (step, new best?) of every evaluation.
type Record = (Vec<(u64, f64)>, Vec<(u64, bool)>);

fn train(schedule: Schedule, steps: u64, dir: Option<PathBuf>) -> Record {
    let t = text();
    let vocab = Vocab::from_text(&t);
    let ids = vocab.encode(&t).unwrap();
    let (tr, va) = ids.split_at(2400);
    let mut run = Run::on(&Cpu).budget(Budget {
        max_steps: Some(steps),
        ..Budget::default()
    });
    if let Some(d) = dir {
        run = run.checkpoints(d);
    }
    let cfg = config(vocab.len(), schedule);
    let mut trainer = start(run, cfg, tr.to_vec(), va.to_vec(), None).unwrap();
    let (mut lrs, mut evals) = (Vec::new(), Vec::new());
    trainer
        .run(&AtomicBool::new(false), &mut |ev| match ev {
            Event::Step(s) => lrs.push((s.step, s.lr)),
            Event::Eval { row, best, .. } => evals.push((row.step, *best)),
            Event::Log { .. } => {}
        })
        .unwrap();
    (lrs, evals)
}

#[test]
fn cosine_warms_up_then_falls_to_its_floor_over_the_step_limit() {
    let (warmup, floor, n) = (5u64, 0.1, 40u64);
    let (lrs, _) = train(Schedule::Cosine { warmup, floor }, n, None);
    assert_eq!(lrs.len(), n as usize);
    for &(step, lr) in &lrs {
        // step k (1-based in the events) was taken with the rate for k - 1 steps done
        let k = step - 1;
        let want = if k < warmup {
            BASE * (k + 1) as f64 / warmup as f64
        } else {
            let p = (k - warmup) as f64 / (n - warmup) as f64;
            BASE * (floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
        };
        assert!((lr - want).abs() <= 1e-15, "step {step}: {lr} vs {want}");
    }
    let last = lrs.last().unwrap().1;
    assert!(last < BASE * (floor + 0.01) && last > BASE * floor);
}

/// The rate of each step as the plateau rule gives it, from the evaluations seen before it.
fn plateau_rates(
    lrs: &[(u64, f64)],
    evals: &[(u64, bool)],
    patience: u64,
    factor: f64,
    floor: f64,
) -> Vec<f64> {
    let (mut bad, mut cuts) = (0u64, 0i32);
    let mut out = Vec::new();
    let mut e = evals.iter().peekable();
    for &(step, _) in lrs {
        out.push(BASE * factor.powi(cuts).max(floor));
        while let Some(&&(s, best)) = e.peek() {
            if s > step {
                break;
            }
            if best {
                bad = 0;
            } else {
                bad += 1;
                if bad >= patience {
                    cuts += 1;
                    bad = 0;
                }
            }
            e.next();
        }
    }
    out
}

#[test]
fn plateau_cuts_after_evaluations_without_a_new_best_and_resumes_exactly() {
    let (factor, patience, floor) = (0.5, 1u64, 0.1);
    let sched = Schedule::Plateau {
        factor,
        patience,
        floor,
        warmup: 0,
    };
    let (lrs, evals) = train(sched.clone(), 90, None);
    let want = plateau_rates(&lrs, &evals, patience, factor, floor);
    for ((step, lr), w) in lrs.iter().zip(&want) {
        assert!((lr - w).abs() <= 1e-15, "step {step}: {lr} vs {w}");
    }
    let cuts = want.iter().filter(|&&w| w < BASE).count();
    assert!(cuts > 0, "no cut in 90 steps: {evals:?}");
    assert!(want.iter().all(|&w| w >= BASE * floor));

    // stopped at 40 steps and resumed to 90: the same rates and weights as the unbroken run
    let dir = std::env::temp_dir().join(format!("recur-lr-schedules-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let whole_dir = dir.join("whole");
    train(sched.clone(), 90, Some(whole_dir.clone()));
    let half_dir = dir.join("half");
    let (first, _) = train(sched, 40, Some(half_dir.clone()));
    let t = text();
    let vocab = Vocab::from_text(&t);
    let ids = vocab.encode(&t).unwrap();
    let (tr, va) = ids.split_at(2400);
    let ck = checkpoint::load(&half_dir.join(LATEST)).unwrap();
    let run = Run::on(&Cpu).checkpoints(half_dir.clone()).budget(Budget {
        max_steps: Some(90),
        ..Budget::default()
    });
    let mut tr2 = resume(run, ck, tr.to_vec(), va.to_vec()).unwrap();
    let mut rest = Vec::new();
    tr2.run(&AtomicBool::new(false), &mut |ev| {
        if let Event::Step(s) = ev {
            rest.push((s.step, s.lr));
        }
    })
    .unwrap();
    let joined: Vec<(u64, f64)> = first.into_iter().chain(rest).collect();
    assert_eq!(joined, lrs);
    let a = checkpoint::load(&whole_dir.join(LATEST)).unwrap();
    let b = checkpoint::load(&half_dir.join(LATEST)).unwrap();
    assert!(a
        .params
        .iter()
        .zip(&b.params)
        .all(|(x, y)| x.to_bits() == y.to_bits()));
    let _ = std::fs::remove_dir_all(&dir);
}
