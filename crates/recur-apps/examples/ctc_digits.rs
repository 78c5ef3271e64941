//! Training the CTC digit-string transcriber through the library alone (`recur speech
//! train-strings` and `eval-strings` do the same from the command line): strings built from the
//! official training takes (validation from takes 5-9, training from takes 10-49), tested on
//! strings from the test takes 0-4; MFCCs with deltas, a bidirectional GRU, CTC, best-path and
//! beam decoding.
//!
//! Run with
//! `cargo run --release -p recur-apps --example ctc_digits -- DIR [EPOCHS] [TRAIN_STRINGS] [THREADS] [DUMP] [HOLDOUT]`
//! where DIR holds the Free Spoken Digit Dataset's recordings. With DUMP (`-` for none), the
//! three sets' normalised features and digits are also written there (safetensors:
//! `{set}/frames` (frames, dim) f32, `{set}/lengths`, `{set}/digits`, `{set}/digit_counts` i64,
//! set = train, val, test), which bench/ctc_digits_torch.py trains PyTorch's model on. With
//! HOLDOUT (a speaker), that speaker is left out of training and validation altogether: training
//! strings from the other five speakers' takes 0-4 and 10-49, validation from their takes 5-9,
//! test strings from all the held-out speaker's recordings.

use recur::cell::CellKind;
use recur::engine::Cpu;
use recur::train::{Event, Run};
use recur_apps::speech::classifier::Normalizer;
use recur_apps::speech::dataset::list_dir;
use recur_apps::speech::features::{Extractor, FeatureConfig};
use recur_apps::speech::strings::{SetName, StringSets};
use recur_apps::speech::transcriber::StringExample;
use recur_apps::speech::transcriber::{evaluate, load_strings, model_config, normalise, Decoder};
use recur_apps::speech::transcriber_train::{start, Hyper, TranscriberConfig, KIND};
use safetensors::tensor::{Dtype, TensorView};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

fn main() -> recur::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).expect("DIR: the recordings");
    let num = |i: usize, d: usize| args.get(i).map_or(d, |s| s.parse().expect("a number"));
    let (epochs, n_train, threads) = (num(2, 12), num(3, 3000), num(4, recur::all_cores()));
    recur::set_threads(threads);
    let all = list_dir(std::path::Path::new(dir))?;
    let holdout = args.get(6);
    let sets = StringSets {
        train: n_train,
        val: 200,
        test: 500,
        holdout: holdout.cloned(),
        seed: 1,
    };
    let train_s = sets.build(SetName::Train, &all)?;
    let val_s = sets.build(SetName::Val, &all)?;
    let test_s = sets.build(SetName::Test, &all)?;
    let ex = Extractor::new(FeatureConfig::default())?;
    let t0 = Instant::now();
    let mut train = load_strings(&train_s, &ex)?;
    let mut val = load_strings(&val_s, &ex)?;
    let mut test = load_strings(&test_s, &ex)?;
    let norm = Normalizer::fit_features(train.iter().map(|e| &e.feats));
    for set in [&mut train, &mut val, &mut test] {
        normalise(set, &norm);
    }
    let frames: usize = train.iter().map(|e| e.feats.t).sum();
    println!(
        "{} training strings ({frames} frames), {} validation, {} test; features in {:.1} s",
        train.len(),
        val.len(),
        test.len(),
        t0.elapsed().as_secs_f64()
    );
    if let Some(path) = args.get(5).filter(|p| p.as_str() != "-") {
        dump(path, &[("train", &train), ("val", &val), ("test", &test)]);
        println!("wrote the sets to {path}");
    }
    let dim = ex.cfg.dim();
    let model = model_config(dim, CellKind::Gru, 128, 2, true)?;
    let config = TranscriberConfig {
        kind: KIND.into(),
        features: ex.cfg.clone(),
        normalizer: norm,
        hyper: Hyper {
            epochs,
            batch_size: 16,
            learning_rate: 2e-3,
            lr_floor: 0.05,
            grad_clip: 5.0,
            seed: 1,
        },
        sets: Some(sets),
    };
    let mut trainer = start(Run::on(&Cpu), model, config, train, val)?;
    let t1 = Instant::now();
    trainer.run(&AtomicBool::new(false), &mut |ev| {
        if let Event::Eval { row, .. } = ev {
            println!(
                "epoch {:5.2} ({:.0} s): train CTC {:.4}, validation CTC {:.4}, digit error rate {}",
                row.epoch,
                t1.elapsed().as_secs_f64(),
                row.train_loss,
                row.val_loss.unwrap_or(f64::NAN),
                row.extra["val_digit_error_rate"]
            );
        }
    })?;
    let train_s = t1.elapsed().as_secs_f64();
    println!(
        "trained in {train_s:.0} s: {:.0} frames/s",
        frames as f64 * epochs as f64 / train_s
    );
    for decoder in [Decoder::Greedy, Decoder::Beam(8)] {
        let ev = evaluate(trainer.engine(), &test, 32, decoder)?;
        let s = ev.score;
        println!(
            "test strings{}, {decoder:?}: digit error rate {:.4} ({} substitutions, {} deletions, {} \
             insertions over {} digits), string error rate {:.4}",
            holdout.map_or(String::new(), |h| format!(" of held-out speaker {h}")),
            s.digit_error_rate(),
            s.edits.substitutions,
            s.edits.deletions,
            s.edits.insertions,
            s.reference_digits,
            s.string_error_rate()
        );
    }
    Ok(())
}

/// The sets as safetensors (see the header).
fn dump(path: &str, sets: &[(&str, &Vec<StringExample>)]) {
    let mut bufs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, set) in sets {
        let dim = set[0].feats.dim;
        let frames: Vec<u8> = set
            .iter()
            .flat_map(|e| e.feats.data.iter().flat_map(|v| v.to_le_bytes()))
            .collect();
        let n: usize = set.iter().map(|e| e.feats.t).sum();
        bufs.push((format!("{name}/frames"), Dtype::F32, vec![n, dim], frames));
        let ints = |v: Vec<i64>| -> (Vec<usize>, Vec<u8>) {
            (
                vec![v.len()],
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        };
        for (key, v) in [
            ("lengths", set.iter().map(|e| e.feats.t as i64).collect()),
            (
                "digits",
                set.iter()
                    .flat_map(|e| e.digits.iter().map(|&d| d as i64))
                    .collect(),
            ),
            (
                "digit_counts",
                set.iter().map(|e| e.digits.len() as i64).collect(),
            ),
        ] {
            let (shape, bytes) = ints(v);
            bufs.push((format!("{name}/{key}"), Dtype::I64, shape, bytes));
        }
    }
    let views: Vec<(String, TensorView)> = bufs
        .iter()
        .map(|(k, d, s, b)| {
            (
                k.clone(),
                TensorView::new(*d, s.clone(), b).expect("a tensor"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, std::path::Path::new(path)).expect("written");
}
