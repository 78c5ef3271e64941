//! recur's speech features against librosa: the mel filterbank, log-mel energies and MFCCs with
//! deltas on recordings of data/fsdd-sample/. The reference comes from
//! tests/fixtures/gen_speech_features.py (librosa 0.11, f64 arithmetic, stored as f32).

use recur_apps::speech::features::{
    mel_filterbank, mel_filterbank_warped, warp_factors, Extractor, FeatureConfig, FeatureKind,
};
use recur_apps::speech::wav::read_wav;
use safetensors::SafeTensors;
use std::path::PathBuf;

/// Filterbank weights are at most ~0.02; both sides compute them in f64 and the fixture rounds
/// to f32 (relative 6e-8), so anything above 1e-8 absolute would be a different formula.
const FB_TOL: f64 = 1e-8;
/// Log-mel values lie in about [-23, 2]: both sides compute in f64 (their difference is ~1e-13)
/// and round to f32, whose step there is at most 2e-6. 1e-5 allows a few steps and still
/// catches any change of window, padding, filter shape or log base (those move values by 1e-2
/// or more). Measured: identical f32 values.
const LOGMEL_TOL: f64 = 1e-5;
/// MFCC c0 reaches about -150 (the sum of 40 log-mels / sqrt(40)), where an f32 step is 1.5e-5;
/// deltas are smaller. 1e-4 allows a few steps there. Measured: identical f32 values.
const MFCC_TOL: f64 = 1e-4;

const FILES: [&str; 4] = ["6_yweweler_1", "8_lucas_0", "0_george_0", "5_nicolas_8"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture() -> Vec<u8> {
    std::fs::read(root().join("crates/recur-apps/tests/fixtures/speech_features.safetensors"))
        .expect("read fixture")
}

fn tensor(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f64>) {
    let t = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("fixture has {name}"));
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
        .collect();
    (t.shape().to_vec(), v)
}

/// Asserts |got - want| <= tol everywhere; the failure names the worst element.
fn assert_close(what: &str, got: &[f64], want: &[f64], cols: usize, tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut worst, mut at) = (0.0f64, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let e = (g - w).abs();
        if e > worst || e.is_nan() {
            worst = e;
            at = i;
        }
    }
    assert!(
        worst <= tol,
        "{what}: worst |error| {worst:.3e} > {tol:e} at row {}, column {} (got {}, want {})",
        at / cols,
        at % cols,
        got[at],
        want[at]
    );
}

#[test]
fn mel_filterbank_matches_librosa() {
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (shape, want) = tensor(&st, "mel_fb");
    assert_eq!(shape, [40, 129]);
    let got = mel_filterbank(&FeatureConfig::default());
    assert_close("mel_fb", &got, &want, 129, FB_TOL);
}

#[test]
fn log_mel_and_mfcc_with_deltas_match_librosa() {
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let logmel = Extractor::new(FeatureConfig {
        kind: FeatureKind::LogMel,
        deltas: 0,
        ..FeatureConfig::default()
    })
    .unwrap();
    let mfcc = Extractor::new(FeatureConfig::default()).unwrap();
    assert_eq!(mfcc.cfg.dim(), 39);
    for name in FILES {
        let x = read_wav(&root().join(format!("data/fsdd-sample/{name}.wav")), 8000).unwrap();
        let (shape, want) = tensor(&st, &format!("{name}.logmel"));
        let f = logmel.compute(&x);
        assert_eq!([f.t, f.dim], [shape[0], shape[1]], "{name}: log-mel shape");
        let got: Vec<f64> = f.data.iter().map(|&v| v as f64).collect();
        assert_close(&format!("{name}.logmel"), &got, &want, f.dim, LOGMEL_TOL);

        let (shape, want) = tensor(&st, &format!("{name}.mfcc"));
        let f = mfcc.compute(&x);
        assert_eq!([f.t, f.dim], [shape[0], shape[1]], "{name}: mfcc shape");
        let got: Vec<f64> = f.data.iter().map(|&v| v as f64).collect();
        assert_close(&format!("{name}.mfcc"), &got, &want, f.dim, MFCC_TOL);
    }
}

#[test]
fn warp_factors_and_the_warped_filterbank() {
    let w = warp_factors(4, 0.1);
    let want = [0.9, 0.95, 1.05, 1.1];
    assert_eq!(w.len(), 4);
    for (g, e) in w.iter().zip(want) {
        assert!((g - e).abs() < 1e-12, "{w:?}");
    }
    assert_eq!(warp_factors(0, 0.1), Vec::<f64>::new());
    let cfg = FeatureConfig::default();
    assert_eq!(mel_filterbank_warped(&cfg, 1.0), mel_filterbank(&cfg));
    // Stretching the frequency axis by 1.1 moves every filter's peak to a lower FFT bin.
    let nb = cfg.n_fft / 2 + 1;
    let peak = |fb: &[f64], i: usize| {
        let row = &fb[i * nb..(i + 1) * nb];
        (0..nb).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap()
    };
    let (plain, warped) = (mel_filterbank(&cfg), mel_filterbank_warped(&cfg, 1.1));
    for i in [10, 20, 30] {
        assert!(peak(&warped, i) < peak(&plain, i), "filter {i}");
    }
}
