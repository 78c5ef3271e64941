//! `recur speech train | eval | predict`: the spoken-digit recognizer on a directory of
//! `{digit}_{speaker}_{take}.wav` recordings (the Free Spoken Digit Dataset's layout). The
//! transcriber of digit strings (`train-strings | eval-strings | transcribe`) is in
//! `transcribe.rs`.
//!
//! This file turns flags into a plan, drives the library (`recur_apps::speech`) epoch by epoch, saves
//! checkpoints, draws the charts and prints the results. The features, the model, the training
//! step and the evaluation are computed in the library; none of that math lives here.

use anyhow::{anyhow, bail, Context, Result};
use indicatif::ProgressBar;
use recur::checkpoint::{self, Checkpoint};
use recur::model::{Model, ModelConfig};
use recur::train::{LogRow, Run, StopReason, Task, BEST, LATEST};
use recur_apps::speech::classifier::{
    self, evaluate, load_examples, load_examples_multi, make_batch, model_config, predict_batch,
    Evaluation, Example, Normalizer, NUM_CLASSES,
};
use recur_apps::speech::dataset::{list_dir, Split, Utterance};
use recur_apps::speech::features::{warp_factors, Extractor, FeatureConfig};
use recur_apps::speech::train::{
    self as speech_train, Hyper, SpeechConfig, SpeechTrainer, EVAL_BATCH,
};
use recur_apps::speech::wav::read_wav;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::args::{DeviceArgs, EpochTraining, PrecisionArgs, RunDir, Shape};
use crate::epochs;
use crate::plot;
use crate::transcribe;
use crate::values::{choice, Features, Pool};

/// Where `--data` points unless told otherwise: the full dataset, cloned as docs/speech.md says.
pub(crate) const DEFAULT_DATA: &str = "data/fsdd/recordings";
const DEFAULT_RUN_DIR: &str = "speech-run";
/// `--threads` of `speech train` and `speech eval`.
pub(crate) const THREADS_HELP: &str =
    "Threads for large matrix products and for reading files [default: all cores]";

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Train a recognizer: features, a recurrent stack, mean-pooled digit scores.
    #[command(allow_negative_numbers = true)]
    Train(TrainArgs),
    /// Accuracy, per-digit accuracy and the confusion matrix of a trained recognizer.
    Eval(EvalArgs),
    /// The digit spoken in one WAV file, with the probabilities of all ten.
    Predict(PredictArgs),
    /// Train a transcriber of connected digit strings: features, a recurrent stack, CTC.
    #[command(name = "train-strings", allow_negative_numbers = true)]
    TrainStrings(transcribe::TrainArgs),
    /// Digit and string error rates, and the worst strings, of a trained transcriber.
    #[command(name = "eval-strings")]
    EvalStrings(transcribe::EvalArgs),
    /// The digits spoken in one WAV file, by a trained transcriber.
    Transcribe(transcribe::TranscribeArgs),
}

#[derive(clap::Args)]
#[command(mut_arg("checkpoint_dir", |a| a.help(
    "Where the run goes: its checkpoints (best.safetensors, latest.safetensors), log and charts \
     [default: speech-run]"
)))]
#[command(mut_arg("cell", |a| a.default_value("gru")))]
#[command(mut_arg("rnn_size", |a| a.default_value("64")))]
#[command(mut_arg("threads", |a| a.help(THREADS_HELP)))]
struct TrainArgs {
    /// Directory of {digit}_{speaker}_{take}.wav files (8 kHz mono PCM).
    #[arg(long, default_value = DEFAULT_DATA)]
    data: PathBuf,
    #[command(flatten)]
    precision: crate::args::TrainPrecisionArgs,
    #[command(flatten)]
    run: RunDir,
    /// Train on every speaker but this one (all takes); without it, the official split
    /// (takes 5+ train, 0-4 test).
    #[arg(long)]
    holdout: Option<String>,
    /// Takes held out of training for validation, "A-B" (inclusive) or "none".
    #[arg(long, default_value = "5-9")]
    val_takes: String,
    #[command(flatten)]
    feat: FeatureArgs,
    /// Augmentation: this many extra copies of each training recording, their filterbanks
    /// warped by factors spread evenly over [1 - --warp-max, 1 + --warp-max] (VTLP).
    #[arg(long, default_value_t = 0)]
    warp_copies: usize,
    /// Largest relative frequency warp of the augmentation copies.
    #[arg(long, default_value_t = 0.1)]
    warp_max: f64,
    #[command(flatten)]
    shape: Shape,
    /// One direction only (default: bidirectional).
    #[arg(long)]
    unidirectional: bool,
    /// How the per-utterance digit scores are formed.
    #[arg(long, value_parser = choice::<Pool>(), default_value = "mean")]
    pool: Pool,
    /// Dropout between layers (needs --num-layers 2 or more).
    #[arg(long, default_value_t = 0.0)]
    dropout: f64,
    #[command(flatten)]
    train: EpochTraining,
    #[command(flatten)]
    dev: DeviceArgs,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// The feature flags, shared by the recognizer and the transcriber.
#[derive(clap::Args)]
pub(crate) struct FeatureArgs {
    /// Base features per frame.
    #[arg(long, value_parser = choice::<Features>(), default_value = "mfcc")]
    pub features: Features,
    /// Mel bands.
    #[arg(long, default_value_t = 40)]
    pub n_mels: usize,
    /// Cepstral coefficients (mfcc only).
    #[arg(long, default_value_t = 13)]
    pub n_mfcc: usize,
    /// Delta orders appended: 0, 1 or 2.
    #[arg(long, default_value_t = 2)]
    pub deltas: usize,
    /// Subtract each utterance's mean from its base features (cepstral mean normalisation).
    #[arg(long)]
    pub cmn: bool,
}

impl FeatureArgs {
    /// The feature settings the flags give (the rest at their defaults).
    pub fn config(&self) -> FeatureConfig {
        FeatureConfig {
            kind: self.features.kind(),
            n_mels: self.n_mels,
            n_mfcc: self.n_mfcc,
            deltas: self.deltas,
            cmn: self.cmn,
            ..FeatureConfig::default()
        }
    }
}

#[derive(clap::Args)]
#[command(mut_arg("threads", |a| a.help(THREADS_HELP)))]
struct EvalArgs {
    /// A checkpoint written by `recur speech train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Directory of {digit}_{speaker}_{take}.wav files.
    #[arg(long, default_value = DEFAULT_DATA)]
    data: PathBuf,
    /// Which recordings: test (takes 0-4), train (takes 5+), all, or speaker:NAME. Default: the
    /// held-out speaker for a --holdout run, otherwise test.
    #[arg(long)]
    split: Option<String>,
    /// Stem of the confusion-matrix charts (<stem>.png, <stem>.svg). Default: beside the
    /// checkpoint, <checkpoint stem>-confusion.
    #[arg(long)]
    plot: Option<PathBuf>,
    #[command(flatten)]
    dev: DeviceArgs,
    #[command(flatten)]
    precision: PrecisionArgs,
    /// Print {"n", "accuracy", "per_digit", ...} as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct PredictArgs {
    /// A checkpoint written by `recur speech train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The recording (8 kHz mono PCM WAV).
    file: PathBuf,
    #[command(flatten)]
    precision: PrecisionArgs,
    /// Print {"digit", "probs"} as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    match args.cmd {
        Cmd::Train(a) => crate::ranks::run(|ranks| train(a, ranks)),
        Cmd::Eval(a) => eval(a),
        Cmd::Predict(a) => predict(a),
        Cmd::TrainStrings(a) => crate::ranks::run(|ranks| transcribe::train(a, ranks)),
        Cmd::EvalStrings(a) => transcribe::eval(a),
        Cmd::Transcribe(a) => transcribe::transcribe_file(a),
    }
}

fn parse_take_range(s: &str) -> Result<Option<(u32, u32)>> {
    if s == "none" {
        return Ok(None);
    }
    let bad = || anyhow!("--val-takes must be A-B (e.g. 5-9) or none, got '{s}'");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u32, u32) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a > b {
        return Err(bad());
    }
    Ok(Some((a, b)))
}

fn parse_split(s: &str) -> Result<Split> {
    Ok(match s {
        "test" => Split::Test,
        "train" => Split::Train,
        "all" => Split::All,
        _ => match s.strip_prefix("speaker:") {
            Some(name) if !name.is_empty() => Split::Speaker(name.to_string()),
            _ => bail!("--split must be test, train, all or speaker:NAME, got '{s}'"),
        },
    })
}

pub(crate) fn set_threads(dev: &DeviceArgs) -> Result<()> {
    let n = dev.set_threads()?;
    // Ignore a second initialisation (only possible in-process, e.g. never from the binary).
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
    Ok(())
}

pub(crate) fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

/// Lists `dir`, keeps the recordings of `split`, reads and featurises them, normalises them.
fn load_split(
    all: &[Utterance],
    split: &Split,
    ex: &Extractor,
) -> Result<(Vec<Utterance>, Vec<Example>)> {
    let utts = split.select(all).map_err(|e| anyhow!(e))?;
    let pb = spinner(&format!("reading {} recordings", utts.len()));
    let examples = load_examples(&utts, ex).map_err(|e| anyhow!(e));
    pb.finish_and_clear();
    Ok((utts, examples?))
}

pub(crate) fn check_speaker(all: &[Utterance], name: &str, data: &Path) -> Result<()> {
    if !all.iter().any(|u| u.speaker == name) {
        let mut names: Vec<&str> = all.iter().map(|u| u.speaker.as_str()).collect();
        names.sort();
        names.dedup();
        bail!(
            "speaker '{name}' has no recordings in {} (speakers: {})",
            data.display(),
            names.join(", ")
        );
    }
    Ok(())
}

/// The recordings of a training run, as features normalised by the run's normaliser.
struct TrainingData {
    split: Split,
    /// The plain recordings, then their warped copies.
    train: Vec<Example>,
    val: Vec<Example>,
    /// Training recordings before augmentation.
    n_plain: usize,
    normalizer: Normalizer,
}

/// Reads the training and validation recordings of `--data` (the validation takes held out),
/// with the warped copies of the training ones, and normalises them: by `saved` (a resumed run's
/// normaliser) or by one fitted to the plain training recordings.
fn training_data(
    a: &TrainArgs,
    ex: &Extractor,
    warps: &[f64],
    val_takes: Option<(u32, u32)>,
    saved: Option<Normalizer>,
) -> Result<TrainingData> {
    let all = list_dir(&a.data).map_err(|e| anyhow!(e))?;
    let train_split = match &a.holdout {
        Some(h) => {
            check_speaker(&all, h, &a.data)?;
            Split::AllBut(h.clone())
        }
        None => Split::Train,
    };
    let utts = train_split.select(&all).map_err(|e| anyhow!(e))?;
    let mut exs = vec![ex.clone()];
    exs.extend(warps.iter().map(|&w| ex.with_warp(w)));
    let pb = spinner(&format!(
        "reading {} recordings ({} feature sets each)",
        utts.len(),
        exs.len()
    ));
    let loaded = load_examples_multi(&utts, &exs).map_err(|e| anyhow!(e));
    pb.finish_and_clear();
    // train_set: the plain features, then the warped copies; val_set: plain only
    let (mut train_set, mut val_set, mut copies) = (Vec::new(), Vec::new(), Vec::new());
    for (u, mut versions) in utts.iter().zip(loaded?) {
        let plain = versions.remove(0);
        match val_takes {
            Some((lo, hi)) if (lo..=hi).contains(&u.take) => val_set.push(plain),
            _ => {
                train_set.push(plain);
                copies.extend(versions);
            }
        }
    }
    if train_set.is_empty() {
        bail!(
            "no training recordings left in {} after holding out takes {} for validation",
            a.data.display(),
            a.val_takes
        );
    }
    let normalizer = saved.unwrap_or_else(|| Normalizer::fit(&train_set));
    let n_plain = train_set.len();
    train_set.extend(copies);
    for e in train_set.iter_mut().chain(val_set.iter_mut()) {
        normalizer.apply(&mut e.feats);
    }
    Ok(TrainingData {
        split: train_split,
        train: train_set,
        val: val_set,
        n_plain,
        normalizer,
    })
}

/// The training settings of the flags, checked, and the warp factors of the augmentation.
fn hyper_of(a: &TrainArgs, val_takes: Option<(u32, u32)>) -> Result<(Hyper, Vec<f64>)> {
    if !(a.warp_max > 0.0 && a.warp_max < 0.5) {
        bail!("--warp-max must be in (0, 0.5), got {}", a.warp_max);
    }
    a.train.check()?;
    let hyper = Hyper {
        holdout: a.holdout.clone(),
        val_takes,
        epochs: a.train.epochs,
        batch_size: a.train.batch_size,
        learning_rate: a.train.learning_rate,
        lr_floor: a.train.lr_floor,
        grad_clip: a.train.grad_clip,
        seed: a.train.seed,
        warp_copies: a.warp_copies,
        warp_max: a.warp_max,
    };
    Ok((hyper, warp_factors(a.warp_copies, a.warp_max)))
}

/// The classifier the flags describe, over features of `feat`.
fn fresh_model(a: &TrainArgs, feat: &FeatureConfig) -> Result<ModelConfig> {
    model_config(
        feat.dim(),
        a.shape.cell.kind(),
        a.shape.rnn_size,
        a.shape.num_layers,
        !a.unidirectional,
        a.dropout,
        a.pool.pooling(),
    )
    .map_err(|e| anyhow!("model: {e}"))
}

fn train(a: TrainArgs, ranks: Option<&crate::ranks::Ranks>) -> Result<()> {
    // rank 0 alone prints, charts and writes checkpoints
    let root = crate::ranks::root(ranks);
    // ---- flags -> plan, before any work
    set_threads(&a.dev)?;
    let device = crate::device::open(a.dev.device)?;
    let val_takes = parse_take_range(&a.val_takes)?;
    a.shape.check()?;
    let (hyper, warps) = hyper_of(&a, val_takes)?;
    let run_dir = a.run.dir(DEFAULT_RUN_DIR);
    let last_path = run_dir.join(LATEST);
    let best_path = run_dir.join(BEST);
    let resumed = if a.run.resume {
        let ck = checkpoint::load(&last_path)?;
        ck.check_trainable()?;
        let st = speech_config(&ck, &last_path)?;
        if st.hyper != hyper {
            bail!(
                "{} was trained with other settings ({}); resume with the same flags",
                last_path.display(),
                serde_json::to_string(&st.hyper)?
            );
        }
        Some((ck, st))
    } else {
        None
    };
    let feat_cfg = match &resumed {
        Some((_, st)) => st.features.clone(),
        None => a.feat.config(),
    };
    let ex = Extractor::new(feat_cfg.clone()).map_err(|e| anyhow!("features: {e}"))?;
    let model_cfg = match &resumed {
        Some((ck, _)) => ck.model.clone(),
        None => fresh_model(&a, &feat_cfg)?,
    };
    let model = Model::new(model_cfg.clone()).map_err(|e| anyhow!("model: {e}"))?;

    // ---- data
    let saved_normalizer = resumed.as_ref().map(|(_, st)| st.normalizer.clone());
    let data = training_data(&a, &ex, &warps, val_takes, saved_normalizer)?;
    let (train_split, n_plain, normalizer) = (data.split, data.n_plain, data.normalizer);
    let (train_set, val_set) = (data.train, data.val);

    // ---- the run: fresh or resumed, on the chosen device; the directory is held from here
    // until the run ends (a second run on it is refused)
    let _lock = crate::ranks::lock_run_dir(ranks, &run_dir)?;
    let out_dir = run_dir.clone();
    let (train_n, val_n) = (train_set.len(), val_set.len());
    let mut run = Run::on(&*device)
        .checkpoints(out_dir.clone())
        .precision(a.precision.get());
    if let Some(r) = ranks {
        run = run.collective(r.collective());
    }
    let mut trainer = match resumed {
        Some((ck, _)) => speech_train::resume(run, ck, train_set, val_set)
            .with_context(|| format!("resuming {}", last_path.display()))?,
        None => {
            let config = SpeechConfig {
                kind: speech_train::KIND.into(),
                features: feat_cfg.clone(),
                normalizer: normalizer.clone(),
                hyper: hyper.clone(),
            };
            speech_train::start(run, model_cfg.clone(), config, train_set, val_set)?
        }
    };

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second handler cannot be installed in one process; the binary installs one.
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    if root {
        crate::ranks::say!(
        "speech: {} training ({} with augmentation) and {} validation recordings ({}), {} features per frame, {} {} x {}{}, head {}, {} parameters{}",
        n_plain,
        train_n,
        val_n,
        train_split.describe(),
        feat_cfg.dim(),
        model_cfg.rnn.cell.name(),
        model_cfg.rnn.num_layers,
        model_cfg.rnn.hidden_size,
        if model_cfg.rnn.bidirectional { ", bidirectional" } else { "" },
        model_cfg.head.name(),
        model.num_params(),
        ranks.map_or(String::new(), |r| format!(", {} MPI ranks", r.size()))
    );
    }

    let reason = run_epochs(&mut trainer, &stop, a.train.epochs, !root)?;
    if let StopReason::Diverged { .. } = reason {
        bail!(
            "{}: training stopped; {} holds the last good epoch",
            reason.describe(),
            last_path.display()
        );
    }
    if !root {
        return Ok(());
    }
    let facts = RunFacts {
        n_plain,
        train_n,
        val_n,
        split: train_split.describe(),
        params: model.num_params(),
        dir: out_dir,
        best: best_path,
        last: last_path,
    };
    report_run(a.json, &trainer, reason, &facts)
}

/// What the summary of a speech run reports besides the trainer's state.
struct RunFacts {
    /// Training recordings, with the augmented copies, and validation recordings.
    n_plain: usize,
    train_n: usize,
    val_n: usize,
    split: String,
    params: usize,
    /// The run directory and its checkpoints.
    dir: PathBuf,
    best: PathBuf,
    last: PathBuf,
}

/// The run's summary on stdout (one JSON object with `json`), and its learning curves.
fn report_run(
    json: bool,
    trainer: &SpeechTrainer,
    reason: StopReason,
    facts: &RunFacts,
) -> Result<()> {
    let RunFacts {
        n_plain,
        train_n,
        val_n,
        ..
    } = *facts;
    let (best_path, last_path) = (&facts.best, &facts.last);
    let bpe = trainer.task.batches_per_epoch().unwrap_or(1);
    let interrupted = reason == StopReason::Stopped;
    let st = &trainer.state;
    let epochs_done = st.step as f64 / bpe as f64;
    let best_epoch = st.best_step.map(|s| s.div_ceil(bpe));
    let best_val_acc = st
        .history
        .iter()
        .find(|r| Some(r.step) == st.best_step)
        .and_then(|r| r.extra["val_acc"].as_f64());
    let charts = write_curves(&st.history, &facts.dir)?;
    let summary = json!({
        "epochs": st.step / bpe,
        "steps": st.step,
        "interrupted": interrupted,
        "train": n_plain,
        "train_with_augmentation": train_n,
        "val": val_n,
        "split": facts.split,
        "parameters": facts.params,
        "train_seconds": st.elapsed_secs,
        "best_epoch": best_epoch,
        "best_val_acc": best_val_acc,
        "best": best_path,
        "last": last_path,
        "charts": charts,
    });
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{summary}")?;
    } else {
        if interrupted {
            writeln!(
                out,
                "interrupted: {} holds the run after {} steps ({epochs_done:.2} epochs); continue with --resume",
                last_path.display(),
                st.step
            )?;
        }
        writeln!(
            out,
            "trained {epochs_done:.2} epochs in {:.1} s on {} recordings ({} with augmentation)",
            st.elapsed_secs, n_plain, train_n
        )?;
        if let (Some(v), Some(e)) = (best_val_acc, best_epoch) {
            writeln!(
                out,
                "best epoch (lowest validation loss): {e}, validation accuracy {v:.4} ({val_n} recordings)"
            )?;
        }
        writeln!(out, "best checkpoint: {}", best_path.display())?;
        writeln!(out, "last checkpoint: {}", last_path.display())?;
        for c in &charts {
            writeln!(out, "chart: {}", c.display())?;
        }
    }
    Ok(())
}

/// Runs `trainer` to its end: a progress bar through each epoch, a line per evaluation.
fn run_epochs(
    trainer: &mut SpeechTrainer,
    stop: &AtomicBool,
    epochs: usize,
    quiet: bool,
) -> Result<StopReason> {
    epochs::run_epochs(trainer, stop, epochs, quiet, "loss", &|row| {
        format!(
            " acc {:.4}{}",
            row.extra["train_acc"].as_f64().unwrap_or(f64::NAN),
            match (row.val_loss, row.extra["val_acc"].as_f64()) {
                (Some(l), Some(acc)) => format!("  val loss {l:.4} acc {acc:.4}"),
                _ => String::new(),
            }
        )
    })
}

/// The learning curves: loss and accuracy per epoch, training and validation.
fn write_curves(history: &[LogRow], out: &Path) -> Result<Vec<PathBuf>> {
    if history.is_empty() {
        return Ok(Vec::new());
    }
    let pts = |f: &dyn Fn(&LogRow) -> Option<f64>| epochs::per_epoch(history, f);
    let loss = epochs::loss_chart(history, "speech: loss", "cross-entropy (nats)");
    let mut acc = plot::Chart::new("speech: accuracy", "epoch", "accuracy");
    acc.push(plot::Series::line(
        "train",
        pts(&|l| l.extra["train_acc"].as_f64()),
    ));
    let va = pts(&|l| l.extra["val_acc"].as_f64());
    if !va.is_empty() {
        acc.push(plot::Series::line("validation", va));
    }
    let mut files = Vec::new();
    files.extend(plot::write_chart(&loss, &out.join("loss"))?);
    files.extend(plot::write_chart(&acc, &out.join("accuracy"))?);
    Ok(files)
}

/// The speech configuration of a checkpoint, or an error naming the file.
fn speech_config(ck: &Checkpoint, path: &Path) -> Result<SpeechConfig> {
    speech_train::config_of(ck).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Loads a speech checkpoint: model, parameters, feature extractor, normaliser, settings.
/// A recognizer from a checkpoint: its model, parameters, feature extractor, configuration
/// and stored precision.
type Recognizer = (Model, Vec<f32>, Extractor, SpeechConfig, recur::Precision);

fn load_recognizer(path: &Path) -> Result<Recognizer> {
    let ck = checkpoint::load(path)?;
    let st = speech_config(&ck, path)?;
    let model = Model::new(ck.model.clone()).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let ex = Extractor::new(st.features.clone())
        .map_err(|e| anyhow!("{}: features: {e}", path.display()))?;
    Ok((model, ck.params, ex, st, ck.precision))
}

fn eval(a: EvalArgs) -> Result<()> {
    set_threads(&a.dev)?;
    let device = crate::device::open(a.dev.device)?;
    let split = a.split.as_deref().map(parse_split).transpose()?;
    let (model, params, ex, st, stored) = load_recognizer(&a.checkpoint)?;
    let split = split.unwrap_or_else(|| match &st.hyper.holdout {
        Some(h) => Split::Speaker(h.clone()),
        None => Split::Test,
    });
    let all = list_dir(&a.data).map_err(|e| anyhow!(e))?;
    if let Split::Speaker(s) = &split {
        check_speaker(&all, s, &a.data)?;
    }
    let (_, mut examples) = load_split(&all, &split, &ex)?;
    for e in &mut examples {
        st.normalizer.apply(&mut e.feats);
    }
    let mut eng = device.engine(model.clone(), params, None)?;
    eng.set_precision(a.precision.or(stored))?;
    let ev: Evaluation = evaluate(&mut *eng, &examples, EVAL_BATCH)?;
    let per_digit = ev.per_digit();
    let stem = a.plot.clone().unwrap_or_else(|| {
        let name = a
            .checkpoint
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "speech".into());
        a.checkpoint.with_file_name(format!("{name}-confusion"))
    });
    let digits: Vec<String> = (0..NUM_CLASSES).map(|d| d.to_string()).collect();
    let map = plot::Heatmap {
        title: format!(
            "confusion, {} (accuracy {:.4})",
            split.describe(),
            ev.tally.accuracy()
        ),
        row_axis: "true".into(),
        col_axis: "predicted".into(),
        row_labels: digits.clone(),
        col_labels: digits,
        values: ev
            .confusion
            .iter()
            .flat_map(|r| r.iter().map(|&c| c as f64))
            .collect(),
    };
    let charts = plot::write_heatmap(&map, &stem)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let j = json!({
            "n": ev.tally.n,
            "accuracy": ev.tally.accuracy(),
            "per_digit": per_digit.iter().map(|&x| if x.is_nan() { None } else { Some(x) }).collect::<Vec<_>>(),
            "loss": ev.tally.mean_loss(),
            "split": split.describe(),
            "confusion": ev.confusion,
            "charts": charts,
        });
        writeln!(out, "{j}")?;
        return Ok(());
    }
    writeln!(
        out,
        "{}: {} recordings, accuracy {:.4} ({} correct), mean cross-entropy {:.4}",
        split.describe(),
        ev.tally.n,
        ev.tally.accuracy(),
        ev.tally.correct,
        ev.tally.mean_loss()
    )?;
    writeln!(out, "per digit:")?;
    for (d, acc) in per_digit.iter().enumerate() {
        let n: usize = ev.confusion[d].iter().sum();
        if n > 0 {
            writeln!(out, "  {d}: {acc:.4} ({}/{n})", ev.confusion[d][d])?;
        } else {
            writeln!(out, "  {d}: no recordings")?;
        }
    }
    writeln!(out, "confusion (rows: spoken, columns: predicted):")?;
    writeln!(
        out,
        "      {}",
        (0..NUM_CLASSES)
            .map(|d| format!("{d:>4}"))
            .collect::<String>()
    )?;
    for (d, row) in ev.confusion.iter().enumerate() {
        writeln!(
            out,
            "  {d}:  {}",
            row.iter().map(|c| format!("{c:>4}")).collect::<String>()
        )?;
    }
    for c in &charts {
        writeln!(out, "chart: {}", c.display())?;
    }
    Ok(())
}

fn predict(a: PredictArgs) -> Result<()> {
    let (model, params, ex, st, stored) = load_recognizer(&a.checkpoint)?;
    let x = read_wav(&a.file, ex.cfg.sample_rate).map_err(|e| anyhow!(e))?;
    let mut ex1 = vec![Example {
        feats: ex.compute(&x),
        label: 0,
    }];
    st.normalizer.apply(&mut ex1[0].feats);
    let batch = make_batch(&ex1, &[0]);
    let mut eng = recur::engine::Backend::engine(&recur::engine::Cpu, model, params, None)?;
    eng.set_precision(a.precision.or(stored))?;
    let probs = predict_batch(&mut *eng, &batch)?;
    let digit = classifier::argmax(&probs);
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", json!({"digit": digit, "probs": probs}))?;
        return Ok(());
    }
    writeln!(
        out,
        "{}: digit {digit} (p = {:.4})",
        a.file.display(),
        probs[digit]
    )?;
    for (d, p) in probs.iter().enumerate() {
        writeln!(out, "  {d}: {p:.4}")?;
    }
    Ok(())
}
