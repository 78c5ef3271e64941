//! The digit-string transcriber (`recur speech train-strings`) trained data-parallel through the
//! training loop's seam, ranks as threads: 2 ranks give one process's step losses, validation
//! losses, logged training CTC and weights, although a batch of 5 strings splits into shares of
//! 2 and 3 (each rank weights its share's mean CTC by its size); batches that cannot give every
//! rank a string are refused.

#[path = "support/threads.rs"]
mod threads;

use recur::cell::CellKind;
use recur::engine::Cpu;
use recur::train::{Event, Run};
use recur_apps::speech::classifier::Normalizer;
use recur_apps::speech::dataset::list_dir;
use recur_apps::speech::features::{Extractor, FeatureConfig};
use recur_apps::speech::strings::{build, StringSpec};
use recur_apps::speech::transcriber::{load_strings, model_config, normalise, StringExample};
use recur_apps::speech::transcriber_train::{start, Hyper, TranscriberConfig, KIND};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use threads::{close, largest_gap, on_ranks, Outcome, Threads};

/// A step's loss, a validation loss and the logged training CTC, 2 ranks against one process:
/// the same float32 sums in another order, over 3 epochs of Adam.
const LOSS_TOL: f64 = 1e-5;
/// The weights after those epochs.
const WEIGHT_TOL: f32 = 1e-4;

fn strings(n: usize, seed: u64, ex: &Extractor) -> Vec<StringExample> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/fsdd-sample");
    let all = list_dir(&dir).unwrap();
    let mut spec = StringSpec::new(n, seed);
    spec.max_digits = 3;
    load_strings(&build(&all, &spec).unwrap(), ex).unwrap()
}

fn config(ex: &Extractor, norm: Normalizer, batch_size: usize) -> TranscriberConfig {
    TranscriberConfig {
        kind: KIND.into(),
        features: ex.cfg.clone(),
        normalizer: norm,
        hyper: Hyper {
            epochs: 3,
            batch_size,
            learning_rate: 1e-2,
            lr_floor: 0.1,
            grad_clip: 5.0,
            seed: 3,
        },
        sets: None,
    }
}

/// (step losses, then validation losses and logged training CTC, weights) of 3 epochs on
/// `ranks` ranks (0: no seam).
fn run(ranks: usize) -> Outcome {
    let ex = Extractor::new(FeatureConfig::default()).unwrap();
    let mut train = strings(12, 1, &ex);
    let mut val = strings(4, 2, &ex);
    let norm = Normalizer::fit_features(train.iter().map(|e| &e.feats));
    normalise(&mut train, &norm);
    normalise(&mut val, &norm);
    let model = model_config(ex.cfg.dim(), CellKind::Gru, 16, 1, true).unwrap();
    let cfg = config(&ex, norm, 5);
    let go = |c: Option<Threads>| {
        let mut r = Run::on(&Cpu);
        if let Some(c) = c {
            r = r.collective(Box::new(c));
        }
        let mut t = start(r, model.clone(), cfg.clone(), train.clone(), val.clone()).unwrap();
        let (mut losses, mut rows) = (Vec::new(), Vec::new());
        t.run(&AtomicBool::new(false), &mut |ev| match ev {
            Event::Step(s) => losses.push(s.loss),
            Event::Eval { row, .. } => {
                rows.push(row.val_loss.unwrap());
                rows.push(row.extra["train_ctc"].as_f64().unwrap());
            }
            Event::Log { .. } => {}
        })
        .unwrap();
        (losses, rows, t.params().unwrap())
    };
    on_ranks(ranks, go)
}

#[test]
fn two_ranks_train_the_transcriber_as_one_process() {
    recur::set_threads(1);
    let (one, one_rows, one_w) = run(0);
    let (two, two_rows, two_w) = run(2);
    // 12 strings in batches of 5: 3 batches an epoch, the last of 2 (one string a rank)
    assert_eq!(one.len(), 9);
    close(&one, &two, LOSS_TOL, "step loss");
    close(
        &one_rows,
        &two_rows,
        LOSS_TOL,
        "validation loss and training CTC",
    );
    let gap = largest_gap(&one_w, &two_w);
    assert!(gap < WEIGHT_TOL, "weights differ by {gap}");
    assert!(one[8] < one[0], "{one:?}");
}

#[test]
fn batches_that_leave_a_rank_without_a_string_are_refused() {
    let ex = Extractor::new(FeatureConfig::default()).unwrap();
    let train = strings(11, 1, &ex);
    let norm = Normalizer::fit_features(train.iter().map(|e| &e.feats));
    let model = model_config(ex.cfg.dim(), CellKind::Gru, 8, 1, false).unwrap();
    // 11 strings in batches of 5 end with a batch of 1: not for 2 ranks
    let mut ranks = Threads::group(2);
    let run = Run::on(&Cpu).collective(Box::new(ranks.remove(0)));
    let e = start(run, model, config(&ex, norm, 5), train, Vec::new())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("end with a batch of 1, fewer than the 2 ranks"),
        "{e}"
    );
}
