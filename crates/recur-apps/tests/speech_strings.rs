//! The connected-digit-string builder (`recur_apps::speech::strings`) on the sample recordings in
//! data/fsdd-sample: the same seed gives the same strings, a split's strings hold only that
//! split's recordings, every string is one speaker's, and rendering puts each recording's
//! samples exactly where its span says with silence between.

use recur_apps::speech::dataset::{list_dir, Split, Utterance};
use recur_apps::speech::strings::{build, SetName, StringSets, StringSpec};
use recur_apps::speech::wav::read_wav;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn sample() -> Vec<Utterance> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/fsdd-sample");
    list_dir(&dir).unwrap()
}

#[test]
fn the_same_seed_builds_the_same_strings() {
    let all = sample();
    let a = build(&all, &StringSpec::new(50, 7)).unwrap();
    let b = build(&all, &StringSpec::new(50, 7)).unwrap();
    assert_eq!(a, b);
    let c = build(&all, &StringSpec::new(50, 8)).unwrap();
    assert_ne!(a, c);
    // the pool's order does not matter: it is sorted by name first
    let mut shuffled = all.clone();
    shuffled.reverse();
    assert_eq!(build(&shuffled, &StringSpec::new(50, 7)).unwrap(), a);
}

#[test]
fn strings_stay_inside_their_split_and_their_speaker() {
    let all = sample();
    for (split, n) in [
        (Split::Train, 400),
        (Split::Test, 400),
        (Split::AllBut("george".into()), 200),
        (Split::Speaker("george".into()), 100),
    ] {
        let pool = split.select(&all).unwrap();
        let strings = build(&pool, &StringSpec::new(n, 3)).unwrap();
        let mut lengths = BTreeSet::new();
        let mut speakers = BTreeSet::new();
        for s in &strings {
            assert!(
                s.parts.iter().all(|u| split.contains(u)),
                "{split:?}: {s:?}"
            );
            assert!(s.parts.iter().all(|u| u.speaker == s.speaker));
            assert!((1..=7).contains(&s.parts.len()));
            assert_eq!(s.silences_ms.len(), s.parts.len() + 1);
            let (first, last) = (s.silences_ms[0], *s.silences_ms.last().unwrap());
            assert!(first <= 200 && last <= 200);
            assert!(s.silences_ms[1..s.parts.len()]
                .iter()
                .all(|&g| (50..=300).contains(&g)));
            assert_eq!(s.text().len(), s.parts.len());
            lengths.insert(s.parts.len());
            speakers.insert(s.speaker.clone());
        }
        assert_eq!(
            lengths.len(),
            7,
            "{split:?}: every length from 1 to 7 drawn"
        );
        let pool_speakers: BTreeSet<String> = pool.iter().map(|u| u.speaker.clone()).collect();
        assert_eq!(speakers, pool_speakers, "{split:?}: every speaker drawn");
    }
    // a training string never holds a test take, and the reverse
    let train = build(
        &Split::Train.select(&all).unwrap(),
        &StringSpec::new(300, 1),
    )
    .unwrap();
    assert!(train.iter().flat_map(|s| &s.parts).all(|u| u.take >= 5));
    let test = build(&Split::Test.select(&all).unwrap(), &StringSpec::new(300, 1)).unwrap();
    assert!(test.iter().flat_map(|s| &s.parts).all(|u| u.take < 5));
}

#[test]
fn rendering_joins_the_recordings_with_silence() {
    let all = sample();
    let strings = build(&all, &StringSpec::new(5, 11)).unwrap();
    for s in &strings {
        let r = s.render(8000).unwrap();
        assert_eq!(r.spans.len(), s.parts.len());
        let mut expected_len = 0;
        let mut prev_end = 0;
        for ((u, span), &gap) in s.parts.iter().zip(&r.spans).zip(&s.silences_ms) {
            let x = read_wav(&u.path, 8000).unwrap();
            assert_eq!(&r.samples[span.clone()], &x[..]);
            // the silence before it: zeros, gap ms at 8 samples a millisecond
            assert_eq!(span.start - prev_end, gap as usize * 8);
            assert!(r.samples[prev_end..span.start].iter().all(|&v| v == 0.0));
            expected_len += gap as usize * 8 + x.len();
            prev_end = span.end;
        }
        expected_len += *s.silences_ms.last().unwrap() as usize * 8;
        assert_eq!(r.samples.len(), expected_len);
    }
}

#[test]
fn bad_specs_and_empty_pools_are_refused() {
    let all = sample();
    let mut spec = StringSpec::new(3, 1);
    spec.min_digits = 0;
    assert!(build(&all, &spec)
        .unwrap_err()
        .to_string()
        .contains("digits per string"));
    let mut spec = StringSpec::new(3, 1);
    spec.gap_ms = (300, 50);
    assert!(build(&all, &spec)
        .unwrap_err()
        .to_string()
        .contains("silence ranges"));
    assert!(build(&[], &StringSpec::new(3, 1)).is_err());
}

/// Utterances of two speakers with every digit at takes 0-49 (names only; nothing is read).
fn fake_pool() -> Vec<Utterance> {
    let mut v = Vec::new();
    for speaker in ["ann", "bob"] {
        for digit in 0..10u8 {
            for take in 0..50u32 {
                v.push(Utterance {
                    path: PathBuf::from(format!("{digit}_{speaker}_{take}.wav")),
                    digit,
                    speaker: speaker.into(),
                    take,
                });
            }
        }
    }
    v
}

#[test]
fn a_runs_sets_use_their_own_takes_and_seeds() {
    let all = fake_pool();
    let sets = StringSets {
        train: 300,
        val: 100,
        test: 100,
        holdout: None,
        seed: 11,
    };
    let takes = |s: &[recur_apps::speech::strings::DigitString]| -> BTreeSet<u32> {
        s.iter()
            .flat_map(|d| d.parts.iter().map(|u| u.take))
            .collect()
    };
    let train = sets.build(SetName::Train, &all).unwrap();
    let val = sets.build(SetName::Val, &all).unwrap();
    let test = sets.build(SetName::Test, &all).unwrap();
    assert_eq!((train.len(), val.len(), test.len()), (300, 100, 100));
    assert!(takes(&train).iter().all(|&t| t >= 10));
    assert!(takes(&val).iter().all(|&t| (5..=9).contains(&t)));
    assert!(takes(&test).iter().all(|&t| t <= 4));
    // each set is the documented draw: its pool, seed, seed + 1, seed + 2
    let pool = |keep: &dyn Fn(u32) -> bool| -> Vec<Utterance> {
        all.iter().filter(|u| keep(u.take)).cloned().collect()
    };
    assert_eq!(
        train,
        build(&pool(&|t| t >= 10), &StringSpec::new(300, 11)).unwrap()
    );
    assert_eq!(
        val,
        build(&pool(&|t| (5..=9).contains(&t)), &StringSpec::new(100, 12)).unwrap()
    );
    assert_eq!(
        test,
        build(&pool(&|t| t <= 4), &StringSpec::new(100, 13)).unwrap()
    );

    // one speaker held out: training and validation never hear them, the test set is theirs
    let held = StringSets {
        holdout: Some("bob".into()),
        ..sets.clone()
    };
    let train = held.build(SetName::Train, &all).unwrap();
    let val = held.build(SetName::Val, &all).unwrap();
    let test = held.build(SetName::Test, &all).unwrap();
    assert!(train.iter().chain(&val).all(|s| s.speaker == "ann"));
    assert!(test.iter().all(|s| s.speaker == "bob"));
    assert!(takes(&train).iter().all(|t| !(5..=9).contains(t)));
    assert!(takes(&val).iter().all(|t| (5..=9).contains(t)));
    assert_eq!(takes(&test).len(), 50);

    // an empty set is no error; an empty pool for a wanted set is, naming the set
    let none = StringSets {
        val: 0,
        ..sets.clone()
    };
    assert!(none.build(SetName::Val, &[]).unwrap().is_empty());
    let only_test: Vec<Utterance> = all.iter().filter(|u| u.take < 5).cloned().collect();
    let e = sets
        .build(SetName::Train, &only_test)
        .unwrap_err()
        .to_string();
    assert!(e.contains("train strings"), "{e}");
}

#[test]
fn a_string_must_have_the_frames_ctc_needs() {
    use recur_apps::speech::features::Features;
    use recur_apps::speech::transcriber::{check_frames, min_frames, StringExample};
    assert_eq!(min_frames(&[1, 2, 3]), 3);
    assert_eq!(min_frames(&[1, 1, 1]), 5);
    assert_eq!(min_frames(&[]), 0);
    let ex = |t: usize, digits: Vec<u8>| StringExample {
        feats: Features {
            t,
            dim: 1,
            data: vec![0.0; t],
        },
        digits,
    };
    assert!(check_frames(&ex(5, vec![7, 7, 7])).is_ok());
    let e = check_frames(&ex(4, vec![7, 7, 7])).unwrap_err();
    assert!(e.contains("4 frames") && e.contains("at least 5"), "{e}");
}
