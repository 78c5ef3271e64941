//! The long-memory tasks (`recur task`) trained data-parallel through the training loop's seam,
//! ranks as threads: a batch's shares hold exactly its sequences, and 2 ranks give the step
//! losses, held-out metrics and weights of one process on the same global batches, for a target
//! per sequence (adding), per step (copy) and per step with untargeted steps (ball).

#[path = "support/threads.rs"]
mod threads;

use recur::cell::CellKind;
use recur::engine::Cpu;
use recur::optim::OptimKind;
use recur::rng::Rng;
use recur::stack::StackConfig;
use recur::train::Run;
use recur_apps::tasks::train::{train, Event, TrainSpec};
use recur_apps::tasks::{Batch, Inputs, Targets, Task, TaskKind};
use threads::{close, largest_gap, on_ranks, Outcome, Threads};

/// A step's loss and a held-out metric, 2 ranks against one process: the same float32 sums in
/// another order, over 12 steps of Adam.
const LOSS_TOL: f64 = 1e-5;
/// The weights after those steps.
const WEIGHT_TOL: f32 = 1e-4;

fn spec(kind: TaskKind, len: usize) -> TrainSpec {
    TrainSpec {
        task: Task::new(kind, len).unwrap(),
        rnn: StackConfig::new(CellKind::Lstm, 0, 12),
        optim: OptimKind::parse("adam", 0.0).unwrap(),
        lr: 1e-2,
        batch: 4,
        max_steps: 12,
        budget: None,
        clip: 1.0,
        eval_every: 4,
        eval_size: 8,
        seed: 3,
        carry_gate_bias: 1.0,
    }
}

/// (step losses, held-out metrics, weights) of `spec` on `ranks` ranks (0: no seam).
fn run(spec: &TrainSpec, ranks: usize) -> Outcome {
    let go = |c: Option<Threads>| {
        let mut r = Run::on(&Cpu);
        if let Some(c) = c {
            r = r.collective(Box::new(c));
        }
        let mut losses = Vec::new();
        let res = train(spec, r, &mut |ev| {
            if let Event::Step { loss, .. } = ev {
                losses.push(loss);
            }
            true
        })
        .unwrap();
        let metrics = res.curve.iter().map(|p| p.metric).collect();
        (losses, metrics, res.params)
    };
    on_ranks(ranks, go)
}

#[test]
fn two_ranks_train_each_task_as_one_process() {
    for (kind, len) in [
        (TaskKind::Adding, 8),
        (TaskKind::Copy, 3),
        (TaskKind::Ball, 6),
    ] {
        let sp = spec(kind, len);
        let (one, one_m, one_w) = run(&sp, 0);
        let (two, two_m, two_w) = run(&sp, 2);
        let name = kind.name();
        assert_eq!(one.len(), 12, "{name}");
        close(&one, &two, LOSS_TOL, &format!("{name} step loss"));
        close(&one_m, &two_m, LOSS_TOL, &format!("{name} held-out metric"));
        let worst = largest_gap(&one_w, &two_w);
        assert!(worst < WEIGHT_TOL, "{name}: weights off by {worst}");
        // the steps changed the weights: the comparison is of a run that trained
        let (_, _, start) = {
            let mut s0 = sp.clone();
            s0.max_steps = 1;
            run(&s0, 0)
        };
        assert!(start != one_w, "{name}");
    }
}

/// The values of a (blocks, B, width) layout for sequences `seqs`, in order.
fn cols<V: Copy>(all: &[V], blocks: usize, b: usize, seqs: std::ops::Range<usize>) -> Vec<V> {
    let w = all.len() / (blocks * b);
    (0..blocks)
        .flat_map(|k| all[(k * b + seqs.start) * w..(k * b + seqs.end) * w].to_vec())
        .collect()
}

#[test]
fn a_share_holds_exactly_its_sequences() {
    for (kind, len) in [
        (TaskKind::Adding, 5),
        (TaskKind::Copy, 2),
        (TaskKind::Ball, 4),
    ] {
        let task = Task::new(kind, len).unwrap();
        let whole: Batch = task.sample(6, &mut Rng::new(9));
        let per_step = task.per_step_targets();
        let rows = if per_step { whole.t } else { 1 };
        for seqs in [0..2, 2..4, 4..6, 1..6] {
            let part = whole.share(seqs.clone(), per_step);
            assert_eq!((part.t, part.b), (whole.t, seqs.len()));
            match (&whole.inputs, &part.inputs) {
                (Inputs::Dense(a), Inputs::Dense(p)) => {
                    assert_eq!(p, &cols(a, whole.t, 6, seqs.clone()))
                }
                (Inputs::Tokens(a), Inputs::Tokens(p)) => {
                    assert_eq!(p, &cols(a, whole.t, 6, seqs.clone()))
                }
                _ => panic!("{}: the inputs changed kind", kind.name()),
            }
            match (&whole.targets, &part.targets) {
                (Targets::Values(a), Targets::Values(p)) => {
                    // NaN marks untargeted values: compare the bits
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(p), bits(&cols(a, rows, 6, seqs.clone())))
                }
                (Targets::Classes(a), Targets::Classes(p)) => {
                    assert_eq!(p, &cols(a, rows, 6, seqs.clone()))
                }
                _ => panic!("{}: the targets changed kind", kind.name()),
            }
        }
    }
}
