//! Transcription as the audio arrives, against the whole recording at once: the streamed
//! features equal `Extractor::compute` bit for bit however the samples are cut, and a
//! unidirectional transcriber fed in chunks emits the digits, at the frames, of the
//! whole-recording best path over the same model (its scores within float32 rounding of the
//! engine's).

use recur::cell::CellKind;
use recur::engine::{Backend, Cpu};
use recur::model::Model;
use recur::rng::Rng;
use recur_apps::speech::classifier::Normalizer;
use recur_apps::speech::dataset::list_dir;
use recur_apps::speech::feature_stream::FeatureStream;
use recur_apps::speech::features::{Extractor, FeatureConfig, FeatureKind, Features};
use recur_apps::speech::streaming::StreamingTranscriber;
use recur_apps::speech::strings::{build, StringSpec};
use recur_apps::speech::transcriber::{model_config, transcribe, Decoder};
use std::path::PathBuf;

/// Scores of the streamed and the whole forward may differ by float32 rounding in the products
/// (the input projection is one product over all frames in one, per chunk in the other).
const SCORE_TOL: f32 = 1e-4;

/// A rendered 5-digit string of the sample recordings (about 2 s).
fn a_string() -> Vec<f32> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/fsdd-sample");
    let all = list_dir(&dir).unwrap();
    let mut spec = StringSpec::new(1, 4);
    spec.min_digits = 5;
    spec.max_digits = 5;
    build(&all, &spec).unwrap()[0].render(8000).unwrap().samples
}

/// The features of `x` fed in pieces of `sizes` (cycled), then finished.
fn streamed(ex: &Extractor, x: &[f32], sizes: &[usize]) -> Features {
    let mut s = FeatureStream::new(ex.clone()).unwrap();
    let mut out = Features {
        t: 0,
        dim: ex.cfg.dim(),
        data: Vec::new(),
    };
    let (mut at, mut k) = (0, 0);
    while at < x.len() {
        let n = sizes[k % sizes.len()].min(x.len() - at);
        let f = s.push(&x[at..at + n]).unwrap();
        // a frame comes out only once the audio is a lookahead past its centre
        let hop = ex.cfg.hop_length;
        assert!(
            s.frames_out() == 0 || (s.frames_out() - 1) * hop + s.lookahead_samples() <= at + n
        );
        out.t += f.t;
        out.data.extend(f.data);
        at += n;
        k += 1;
    }
    let f = s.finish().unwrap();
    out.t += f.t;
    out.data.extend(f.data);
    assert!(s.push(&[0.0]).is_err() && s.finish().is_err());
    out
}

#[test]
fn streamed_features_equal_the_whole_recordings_bit_for_bit() {
    let x = a_string();
    let configs = [
        FeatureConfig::default(),
        FeatureConfig {
            deltas: 0,
            ..FeatureConfig::default()
        },
        FeatureConfig {
            deltas: 1,
            delta_width: 3,
            ..FeatureConfig::default()
        },
        FeatureConfig {
            kind: FeatureKind::LogMel,
            ..FeatureConfig::default()
        },
    ];
    for cfg in configs {
        let ex = Extractor::new(cfg.clone()).unwrap();
        let whole = ex.compute(&x);
        for sizes in [
            &[1usize][..],
            &[7, 80, 333][..],
            &[80][..],
            &[4000][..],
            &[x.len()][..],
        ] {
            let s = streamed(&ex, &x, sizes);
            assert_eq!(s.t, whole.t, "{cfg:?} {sizes:?}");
            let same = s
                .data
                .iter()
                .zip(&whole.data)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "features differ for {cfg:?} fed in {sizes:?}");
        }
    }
    // a long recording (over 1,500 frames: what is no longer needed is dropped on the way), one
    // shorter than one window, and one of a single sample
    let ex = Extractor::new(FeatureConfig::default()).unwrap();
    let long: Vec<f32> = (0..8).flat_map(|_| x.iter().copied()).collect();
    let whole = ex.compute(&long);
    assert!(whole.t > 1500);
    assert_eq!(streamed(&ex, &long, &[7, 80, 333]), whole);
    for x in [&x[..100], &x[..1]] {
        assert_eq!(streamed(&ex, x, &[30]), ex.compute(x));
    }
}

#[test]
fn mean_normalised_features_cannot_be_streamed() {
    let ex = Extractor::new(FeatureConfig {
        cmn: true,
        ..FeatureConfig::default()
    })
    .unwrap();
    let e = FeatureStream::new(ex).err().unwrap().to_string();
    assert!(e.contains("cmn"), "{e}");
}

#[test]
fn a_streamed_transcription_equals_the_whole_recordings() {
    recur::set_threads(1);
    let x = a_string();
    let ex = Extractor::new(FeatureConfig::default()).unwrap();
    let whole_feats = ex.compute(&x);
    let norm = Normalizer::fit_features(std::iter::once(&whole_feats));
    for cell in [CellKind::Gru, CellKind::Lstm] {
        let cfg = model_config(ex.cfg.dim(), cell, 24, 2, false).unwrap();
        let model = Model::new(cfg.clone()).unwrap();
        let mut params = vec![0.0f32; model.num_params()];
        // weights large enough that the best path changes class often: many digits to compare
        let mut rng = Rng::new(7);
        for p in params.iter_mut() {
            *p = (rng.normal() * 0.6) as f32;
        }
        let mut feats = whole_feats.clone();
        norm.apply(&mut feats);
        let mut eng = Backend::engine(&Cpu, model.clone(), params.clone(), None).unwrap();
        let (scores, whole) = transcribe(&mut *eng, &feats, Decoder::Greedy).unwrap();
        assert!(
            whole.digits.len() >= 3,
            "too few digits to compare: {whole:?}"
        );
        for chunk in [80usize, 400, 1234] {
            let mut st = StreamingTranscriber::new(&model, &params, &ex, &norm)
                .unwrap()
                .keep_scores();
            let mut got = Vec::new();
            for piece in x.chunks(chunk) {
                got.extend(st.push(piece).unwrap());
            }
            got.extend(st.finish().unwrap());
            let digits: Vec<u8> = got.iter().map(|e| e.digit).collect();
            let frames: Vec<usize> = got.iter().map(|e| e.frame).collect();
            assert_eq!(digits, whole.digits, "{cell:?}, chunks of {chunk}");
            assert_eq!(frames, whole.frames, "{cell:?}, chunks of {chunk}");
            let s = st.scores().unwrap();
            assert_eq!(s.len(), scores.len());
            let worst = s
                .iter()
                .zip(&scores)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst <= SCORE_TOL, "{cell:?}: scores differ by {worst}");
        }
    }
}

#[test]
fn a_bidirectional_transcriber_is_refused() {
    let ex = Extractor::new(FeatureConfig::default()).unwrap();
    let cfg = model_config(ex.cfg.dim(), CellKind::Gru, 8, 1, true).unwrap();
    let model = Model::new(cfg).unwrap();
    let params = vec![0.0f32; model.num_params()];
    let norm = Normalizer {
        mean: vec![0.0; ex.cfg.dim()],
        std: vec![1.0; ex.cfg.dim()],
    };
    let e = StreamingTranscriber::new(&model, &params, &ex, &norm)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("bidirectional"), "{e}");
}
