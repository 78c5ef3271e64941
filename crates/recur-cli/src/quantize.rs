//! `recur quantize`: writes an int8 copy of a float32 checkpoint (every weight matrix as int8
//! codes with a scale per row, docs/checkpoint-format.md) for inference: `eval`, `sample` and
//! `speech eval|predict` run it in int8 by default.

use anyhow::{bail, Result};
use recur::checkpoint;
use recur::Precision;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The float32 checkpoint (as `recur train`, `task` or `speech train` write it).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Where the int8 checkpoint goes (written atomically; not the input file).
    #[arg(long)]
    out: PathBuf,
    /// Print {"in_bytes", "out_bytes", "tensors"} as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.out == a.checkpoint {
        bail!("--out must differ from --checkpoint (the float32 weights would be lost)");
    }
    let mut ck = checkpoint::load(&a.checkpoint)?;
    if ck.precision != Precision::F32 {
        bail!(
            "'{}' is already an {} checkpoint",
            a.checkpoint.display(),
            ck.precision
        );
    }
    let model = recur::model::Model::new(ck.model.clone())?;
    // an inference file: no optimizer (the training state stays: a speech model's features
    // live there; an int8 file cannot be resumed)
    ck.optimizer = None;
    // the weights a float32 file predicts with: the moving average when the run kept one
    if let Some(avg) = ck.ema.take() {
        ck.params = avg;
    }
    ck.precision = Precision::Int8;
    checkpoint::save(&a.out, &ck)?;
    let size = |p: &PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let (inb, outb) = (size(&a.checkpoint), size(&a.out));
    let matrices = model
        .layout()
        .entries
        .iter()
        .filter(|e| e.shape.len() == 2)
        .count();
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(
            out,
            "{}",
            json!({"in_bytes": inb, "out_bytes": outb, "tensors": matrices})
        )?;
    } else {
        writeln!(
            out,
            "{}: {matrices} weight matrices in int8, {inb} -> {outb} bytes",
            a.out.display()
        )?;
    }
    Ok(())
}
