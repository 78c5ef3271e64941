//! `recur sample`: generates text from a character-model checkpoint, streaming each character
//! to stdout as it is drawn.

use crate::args::{DeviceArgs, PrecisionArgs, WeightArgs};
use crate::charlm_common::load_char_model;
use anyhow::{bail, Result};
use recur::rng::Rng;
use recur_apps::charlm::sample::SampleOptions;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint written by `recur train`.
    #[arg(long, default_value = "checkpoints/best.safetensors")]
    checkpoint: PathBuf,
    /// Characters to generate (after the priming text).
    #[arg(long, default_value_t = 1000)]
    length: usize,
    /// Divides the logits: below 1 is more conservative, above 1 more varied.
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Draw only among the k most likely characters (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Seed of the draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Text run through the model first and printed before the sample [default: a newline].
    #[arg(long)]
    prime: Option<String>,
    #[command(flatten)]
    dev: DeviceArgs,
    #[command(flatten)]
    precision: PrecisionArgs,
    #[command(flatten)]
    weights: WeightArgs,
}

pub fn run(a: Args) -> Result<()> {
    if !(a.temperature > 0.0) || !a.temperature.is_finite() {
        bail!(
            "--temperature must be a positive number, got {}",
            a.temperature
        );
    }
    a.dev.set_threads()?;
    let device = crate::device::open(a.dev.device)?;
    let (ckpt, model, vocab) = load_char_model(&a.checkpoint)?;
    let prime = a.prime.clone().unwrap_or_else(|| "\n".to_string());
    if prime.is_empty() {
        bail!("--prime must not be empty (it gives the model its first character)");
    }
    let prime_ids = vocab
        .encode(&prime)
        .map_err(|e| anyhow::anyhow!("--prime: {e}"))?;
    let mut g = crate::device::Gen::new(
        &*device,
        &model,
        a.weights.of(&ckpt),
        a.precision.or(ckpt.precision),
    )?;
    let mut rng = Rng::new(a.seed);
    let opts = SampleOptions {
        temperature: a.temperature,
        top_k: a.top_k,
    };
    let mut out = std::io::stdout().lock();
    if a.prime.is_some() {
        out.write_all(prime.as_bytes())?;
    }
    for &id in &prime_ids {
        g.feed(id)?;
    }
    let mut buf = [0u8; 4];
    for _ in 0..a.length {
        let id = g.sample(&opts, &mut rng);
        out.write_all(vocab.char(id).encode_utf8(&mut buf).as_bytes())?;
        out.flush()?;
        g.feed(id)?;
    }
    writeln!(out)?;
    Ok(())
}
