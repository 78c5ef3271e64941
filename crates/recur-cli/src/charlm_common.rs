//! What `recur train`, `sample` and `eval` share: the bundled corpus (built in), reading a
//! corpus, loading a character-model checkpoint, drawing a short sample, and the loss plot.

use crate::plot::{self, Chart, Series};
use anyhow::{anyhow, Result};
use recur::checkpoint::{self, Checkpoint};
use recur::model::Model;
use recur::rng::Rng;
use recur_apps::charlm::data::{self, Vocab};
use recur_apps::charlm::sample::{Generator, SampleOptions};
use recur_apps::charlm::train::LogRow;
use std::path::{Path, PathBuf};

/// The loss-curve plots inside the checkpoint directory.
pub const PLOT_PNG: &str = "loss.png";
pub const PLOT_SVG: &str = "loss.svg";
const PLOT_STEM: &str = "loss";

/// The name `recur train` gives the bundled Tiny Shakespeare (`data/tinyshakespeare/`, built
/// into the binary so that an installed or copied binary trains without the source tree); it
/// is stored as the run's corpus, so `--resume` finds it again.
pub const BUILT_IN: &str = "tinyshakespeare (built in)";
const BUILT_IN_TEXT: &str = include_str!("../../../data/tinyshakespeare/input.txt");

/// The corpus `recur train` reads without --data: the built-in one.
pub fn default_corpus() -> PathBuf {
    PathBuf::from(BUILT_IN)
}

/// A corpus' text: the file at `path`, or the built-in text for [`BUILT_IN`].
pub fn read_corpus(path: &Path) -> Result<String> {
    if path == Path::new(BUILT_IN) {
        return Ok(BUILT_IN_TEXT.to_string());
    }
    Ok(data::read_text(path)?)
}

/// Reads a corpus and builds its vocabulary.
pub fn load_corpus(path: &Path) -> Result<(String, Vocab)> {
    let text = read_corpus(path)?;
    let vocab = Vocab::from_text(&text);
    Ok((text, vocab))
}

/// A character model from a checkpoint: the checkpoint, its model and its vocabulary.
pub fn load_char_model(path: &Path) -> Result<(Checkpoint, Model, Vocab)> {
    if !path.exists() {
        return Err(anyhow!("cannot read '{}': no such file", path.display()));
    }
    let ckpt = checkpoint::load(path)?;
    let model = Model::new(ckpt.model.clone())
        .map_err(|e| anyhow!("checkpoint {}: {e}", path.display()))?;
    let chars = ckpt.vocab.clone().ok_or_else(|| {
        anyhow!(
            "checkpoint {}: no vocabulary (not a character model)",
            path.display()
        )
    })?;
    let vocab = Vocab::from_chars(chars)?;
    Ok((ckpt, model, vocab))
}

/// `n` characters drawn after a newline (or the first character when there is no newline).
pub fn print_sample_text(
    model: &Model,
    params: &[f32],
    vocab: &Vocab,
    n: usize,
    temperature: f64,
    seed: u64,
) -> recur::Result<String> {
    let mut g = Generator::new(model, params)?;
    let mut rng = Rng::new(seed);
    let opts = SampleOptions {
        temperature,
        top_k: 0,
    };
    let mut id = vocab.id('\n').unwrap_or(0);
    let mut out = String::with_capacity(n);
    for _ in 0..n {
        g.feed(id);
        id = g.sample(&opts, &mut rng);
        out.push(vocab.char(id));
    }
    Ok(out)
}

/// Train and validation loss against characters seen, as PNG and SVG in `dir`.
pub fn write_plot(dir: &Path, rows: &[LogRow]) -> Result<()> {
    let mut chart = Chart::new(
        "recur train: loss per character",
        "characters seen",
        "cross-entropy (nats/char)",
    );
    let train: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.train_loss.is_finite())
        .map(|r| (r.items_seen as f64, r.train_loss))
        .collect();
    let val: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| r.val_loss.map(|v| (r.items_seen as f64, v)))
        .collect();
    chart.push(Series::line("train (mean since previous point)", train));
    if !val.is_empty() {
        chart.push(Series::line("validation", val));
    }
    let stem = dir.join(PLOT_STEM);
    plot::write_chart(&chart, &stem)?;
    Ok(())
}
