//! The CTC digit-string transcriber (`recur_apps::speech::{transcriber, transcriber_train,
//! scoring}`): the alignment behind the error rates against a plain edit distance, batching of
//! CTC targets, and training on strings built from data/fsdd-sample through the one training
//! loop (the loss falls, decoding gives digits, a checkpoint resumes only on the same strings).

use recur::cell::CellKind;
use recur::checkpoint;
use recur::engine::Cpu;
use recur::rng::Rng;
use recur::train::{Run, LATEST};
use recur_apps::speech::classifier::Normalizer;
use recur_apps::speech::dataset::list_dir;
use recur_apps::speech::features::{Extractor, FeatureConfig};
use recur_apps::speech::scoring::{align, Edits, Score};
use recur_apps::speech::strings::{build, StringSpec};
use recur_apps::speech::transcriber::{
    evaluate, load_strings, make_batch, model_config, normalise, Decoder, StringExample,
};
use recur_apps::speech::transcriber_train::{resume, start, Hyper, TranscriberConfig, KIND};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

fn edits(s: usize, d: usize, i: usize) -> Edits {
    Edits {
        substitutions: s,
        deletions: d,
        insertions: i,
    }
}

#[test]
fn alignment_counts_substitutions_deletions_and_insertions() {
    let a = |r: &str, h: &str| align(r.as_bytes(), h.as_bytes());
    assert_eq!(a("123", "123"), edits(0, 0, 0));
    assert_eq!(a("123", "13"), edits(0, 1, 0));
    assert_eq!(a("13", "123"), edits(0, 0, 1));
    assert_eq!(a("123", "143"), edits(1, 0, 0));
    assert_eq!(a("1234", ""), edits(0, 4, 0));
    assert_eq!(a("", "12"), edits(0, 0, 2));
    // two substitutions rather than a deletion and an insertion of the same cost
    assert_eq!(a("12", "21"), edits(2, 0, 0));
    assert_eq!(a("1123", "123"), edits(0, 1, 0));
    let mut s = Score::default();
    s.add(b"123", b"123");
    s.add(b"4567", b"457");
    s.add(b"89", b"899");
    assert_eq!(s.reference_digits, 9);
    assert!((s.digit_error_rate() - 2.0 / 9.0).abs() < 1e-15);
    assert!((s.string_error_rate() - 2.0 / 3.0).abs() < 1e-15);
}

/// The textbook edit distance, written independently of `align`.
fn levenshtein(a: &[u8], b: &[u8]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, y) in b.iter().enumerate() {
            let v = (prev[j] + usize::from(x != y))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
            cur.push(v);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[test]
fn alignment_cost_is_the_edit_distance() {
    let mut rng = Rng::new(4);
    for _ in 0..500 {
        let mut word =
            |n: u64| -> Vec<u8> { (0..rng.below(n)).map(|_| rng.below(4) as u8).collect() };
        let (r, h) = (word(9), word(9));
        let e = align(&r, &h);
        assert_eq!(e.total(), levenshtein(&r, &h), "{r:?} {h:?}");
        // the counts are those of an alignment: the lengths must add up
        assert_eq!(
            r.len() - e.deletions + e.insertions,
            h.len(),
            "{r:?} {h:?} {e:?}"
        );
    }
}

fn sample_strings(n: usize, seed: u64, ex: &Extractor) -> Vec<StringExample> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/fsdd-sample");
    let all = list_dir(&dir).unwrap();
    let mut spec = StringSpec::new(n, seed);
    spec.max_digits = 3;
    load_strings(&build(&all, &spec).unwrap(), ex).unwrap()
}

#[test]
fn batches_carry_the_digits_as_classes_one_to_ten() {
    let ex = Extractor::new(FeatureConfig::default()).unwrap();
    let set = sample_strings(4, 9, &ex);
    let b = make_batch(&set, &[2, 0]);
    let want: Vec<usize> = set[2]
        .digits
        .iter()
        .chain(&set[0].digits)
        .map(|&d| d as usize + 1)
        .collect();
    assert_eq!(b.targets, want);
    assert_eq!(b.target_lengths, [set[2].digits.len(), set[0].digits.len()]);
    assert_eq!(b.lengths, [set[2].feats.t, set[0].feats.t]);
    assert_eq!(b.t, set[2].feats.t.max(set[0].feats.t));
}

#[test]
fn training_lowers_the_ctc_loss_and_resumes_only_on_its_strings() {
    recur::set_threads(1);
    let ex = Extractor::new(FeatureConfig::default()).unwrap();
    let mut train = sample_strings(12, 1, &ex);
    let norm = Normalizer::fit_features(train.iter().map(|e| &e.feats));
    normalise(&mut train, &norm);
    let model = model_config(ex.cfg.dim(), CellKind::Gru, 24, 1, true).unwrap();
    let config = TranscriberConfig {
        kind: KIND.into(),
        features: ex.cfg.clone(),
        normalizer: norm,
        hyper: Hyper {
            epochs: 25,
            batch_size: 4,
            learning_rate: 1e-2,
            lr_floor: 0.1,
            grad_clip: 5.0,
            seed: 3,
        },
        sets: None,
    };
    let dir = std::env::temp_dir().join(format!("recur-transcriber-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut tr = start(
        Run::on(&Cpu).checkpoints(dir.clone()),
        model,
        config,
        train.clone(),
        train[..4].to_vec(),
    )
    .unwrap();
    let before = evaluate(tr.engine(), &train, 8, Decoder::Greedy).unwrap();
    tr.run(&AtomicBool::new(false), &mut |_| {}).unwrap();
    let after = evaluate(tr.engine(), &train, 8, Decoder::Greedy).unwrap();
    assert!(
        after.loss < 0.5 * before.loss,
        "CTC loss {} -> {}",
        before.loss,
        after.loss
    );
    assert_eq!(after.hyps.len(), train.len());
    assert!(after.hyps.iter().flatten().all(|&d| d <= 9));
    let beam = evaluate(tr.engine(), &train, 8, Decoder::Beam(4)).unwrap();
    assert_eq!(beam.score.reference_digits, after.score.reference_digits);
    // the saved run continues only on the strings it was trained on
    let ck = checkpoint::load(&dir.join(LATEST)).unwrap();
    let err = resume(Run::on(&Cpu), ck, train[..6].to_vec(), train[..4].to_vec())
        .err()
        .expect("other strings are refused");
    assert!(err.to_string().contains("12 training"), "{err}");
    let ck = checkpoint::load(&dir.join(LATEST)).unwrap();
    assert!(resume(Run::on(&Cpu), ck, train.clone(), train[..4].to_vec()).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}
