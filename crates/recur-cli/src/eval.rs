//! `recur eval`: a character model's loss on a text. From a zero state, the mean over
//! t = 1..N-1 of -ln p(c_t | c_0..c_{t-1}), the state carried through the whole text (computed in
//! chunks; the chunk length does not change the number).

use crate::args::{DeviceArgs, PrecisionArgs, WeightArgs};
use crate::charlm_common::load_char_model;
use anyhow::{bail, Context, Result};
use recur_apps::charlm::data;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint written by `recur train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// UTF-8 text to evaluate.
    #[arg(long)]
    text: PathBuf,
    /// Characters per chunk (only speed and memory depend on it).
    #[arg(long, default_value_t = 256)]
    chunk: usize,
    #[command(flatten)]
    dev: DeviceArgs,
    #[command(flatten)]
    precision: PrecisionArgs,
    #[command(flatten)]
    weights: WeightArgs,
    /// Print {"chars": N, "loss_nats": x, "bpc": y} on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.chunk == 0 {
        bail!("--chunk must be at least 1");
    }
    a.dev.set_threads()?;
    let device = crate::device::open(a.dev.device)?;
    let (ckpt, model, vocab) = load_char_model(&a.checkpoint)?;
    let text = data::read_text(&a.text)?;
    let ids = vocab
        .encode(&text)
        .with_context(|| format!("'{}'", a.text.display()))?;
    if ids.len() < 2 {
        bail!(
            "'{}' has {} character; at least 2 are needed for a loss",
            a.text.display(),
            ids.len()
        );
    }
    let mut eng = device.engine(model.clone(), a.weights.of(&ckpt).to_vec(), None)?;
    eng.set_precision(a.precision.or(ckpt.precision))?;
    let (sum, count) = eng.stream_loss(&ids, a.chunk, 1)?;
    let loss = sum / count as f64;
    let bpc = loss / std::f64::consts::LN_2;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(
            out,
            "{}",
            json!({"chars": ids.len(), "loss_nats": loss, "bpc": bpc})
        )?;
    } else {
        writeln!(
            out,
            "{}: {} chars, loss {:.4} nats/char = {:.4} bits/char",
            a.text.display(),
            ids.len(),
            loss,
            bpc
        )?;
    }
    Ok(())
}
