//! Random "recordings" for training tests of the spoken-digit classifier: no audio, features
//! drawn with a label-dependent offset so that a model can learn something.

use recur::rng::Rng;
use recur_apps::speech::classifier::{Example, Normalizer};
use recur_apps::speech::features::{FeatureConfig, Features};
use recur_apps::speech::train::{Hyper, SpeechConfig, KIND};

/// Random "recordings": `n` utterances of 3..12 frames of `dim` features, labels 0..9.
pub fn examples(n: usize, dim: usize, seed: u64) -> Vec<Example> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let t = 3 + rng.below(10) as usize;
            let label = (i % 10) as u8;
            let data = (0..t * dim)
                .map(|k| {
                    (rng.normal() + 0.3 * label as f64 * ((k % dim) as f64 / dim as f64)) as f32
                })
                .collect();
            Example {
                feats: Features { t, dim, data },
                label,
            }
        })
        .collect()
}

/// A short run's configuration for `train`: default features, 3 epochs of Adam 5e-3 in batches
/// of `batch_size`, seed 4, no augmentation.
pub fn small_config(train: &[Example], batch_size: usize) -> SpeechConfig {
    SpeechConfig {
        kind: KIND.into(),
        features: FeatureConfig::default(),
        normalizer: Normalizer::fit(train),
        hyper: Hyper {
            holdout: None,
            val_takes: Some((5, 6)),
            epochs: 3,
            batch_size,
            learning_rate: 5e-3,
            lr_floor: 0.1,
            grad_clip: 1.0,
            seed: 4,
            warp_copies: 0,
            warp_max: 0.1,
        },
    }
}
