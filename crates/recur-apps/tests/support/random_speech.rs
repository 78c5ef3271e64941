//! Random "recordings" for training tests of the spoken-digit classifier: no audio, features
//! drawn with a label-dependent offset so that a model can learn something.

use recur::rng::Rng;
use recur_apps::speech::classifier::Example;
use recur_apps::speech::features::Features;

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
