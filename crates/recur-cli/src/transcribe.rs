//! `recur speech train-strings | eval-strings | transcribe`: the CTC transcriber of connected
//! digit strings. Its sets are built from a directory of single-digit recordings
//! (`recur_apps::speech::strings`), its model is trained on the one training loop
//! (`recur_apps::speech::transcriber_train`), and it is scored by digit and string error rates.
//!
//! This file turns flags into a plan, prints progress and results and draws the curves; the
//! strings, features, CTC, decoding and scoring are computed in the library.

use anyhow::{anyhow, bail, Context, Result};
use indicatif::ProgressBar;
use recur::checkpoint::{self, Checkpoint};
use recur::engine::Engine;
use recur::model::Model;
use recur::train::{LogRow, Run, StopReason, Task, BEST, LATEST};
use recur_apps::speech::classifier::Normalizer;
use recur_apps::speech::dataset::{list_dir, Utterance};
use recur_apps::speech::features::Extractor;
use recur_apps::speech::scoring::{align, Score};
use recur_apps::speech::streaming::{stream_recording, StreamingTranscriber};
use recur_apps::speech::strings::{DigitString, SetName, StringSets};
use recur_apps::speech::transcriber::{
    evaluate, load_strings, model_config, normalise, transcribe, Decoder, StringExample,
    Transcript, BLANK, NUM_CLASSES,
};
use recur_apps::speech::transcriber_train::{
    self as tt, Hyper, TranscriberConfig, TranscriberTrainer, EVAL_BATCH,
};
use recur_apps::speech::wav::read_wav;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::args::{DeviceArgs, EpochTraining, PrecisionArgs, RunDir, Shape};
use crate::epochs;
use crate::plot;
use crate::speech::{check_speaker, set_threads, spinner, FeatureArgs, DEFAULT_DATA, THREADS_HELP};

const DEFAULT_RUN_DIR: &str = "transcriber-run";

#[derive(clap::Args)]
#[command(mut_arg("checkpoint_dir", |a| a.help(
    "Where the run goes: its checkpoints (best.safetensors, latest.safetensors), log and charts \
     [default: transcriber-run]"
)))]
#[command(mut_arg("cell", |a| a.default_value("gru")))]
#[command(mut_arg("num_layers", |a| a.default_value("2")))]
#[command(mut_arg("epochs", |a| a.default_value("12")))]
#[command(mut_arg("batch_size", |a| a.default_value("16")))]
#[command(mut_arg("learning_rate", |a| a.default_value("0.002")))]
#[command(mut_arg("threads", |a| a.help(THREADS_HELP)))]
pub struct TrainArgs {
    /// Directory of {digit}_{speaker}_{take}.wav files (8 kHz mono PCM) the strings are built from.
    #[arg(long, default_value = DEFAULT_DATA)]
    data: PathBuf,
    #[command(flatten)]
    run: RunDir,
    #[command(flatten)]
    precision: crate::args::TrainPrecisionArgs,
    /// Leave this speaker out of training and validation; the test strings are then theirs.
    #[arg(long)]
    holdout: Option<String>,
    /// Training strings (from takes 10-49, or every take but 5-9 with --holdout).
    #[arg(long, default_value_t = 3000)]
    strings: usize,
    /// Validation strings (from takes 5-9).
    #[arg(long, default_value_t = 200)]
    val_strings: usize,
    /// Test strings, built by `eval-strings` (from takes 0-4, or the held-out speaker).
    #[arg(long, default_value_t = 500)]
    test_strings: usize,
    /// Seed of the strings: training uses it, validation seed + 1, test seed + 2.
    #[arg(long, default_value_t = 1)]
    string_seed: u64,
    #[command(flatten)]
    feat: FeatureArgs,
    #[command(flatten)]
    shape: Shape,
    /// One direction only (needed for streaming; default: bidirectional).
    #[arg(long)]
    unidirectional: bool,
    #[command(flatten)]
    train: EpochTraining,
    #[command(flatten)]
    dev: DeviceArgs,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
#[command(mut_arg("threads", |a| a.help(THREADS_HELP)))]
pub struct EvalArgs {
    /// A checkpoint written by `recur speech train-strings`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Directory of the recordings the run's strings were built from.
    #[arg(long, default_value = DEFAULT_DATA)]
    data: PathBuf,
    /// Which of the run's sets: test, val or train.
    #[arg(long, default_value = "test")]
    set: String,
    /// Prefix beam search of this width (default: best path).
    #[arg(long)]
    beam: Option<usize>,
    /// How many of the worst strings to print.
    #[arg(long, default_value_t = 5)]
    worst: usize,
    /// Also draw string N of the set (0 = the first): each class's probability over time, the
    /// decoded digits under the curves, to <checkpoint stem>-string-N.{png,svg}.
    #[arg(long)]
    plot_string: Option<usize>,
    /// Stream each string through the model in chunks (unidirectional models): also report the
    /// real-time factor and each digit's delay after the end of its recording. Best path only.
    #[arg(long)]
    stream: bool,
    /// Chunk length when streaming, in milliseconds.
    #[arg(long, default_value_t = 50)]
    chunk_ms: u32,
    #[command(flatten)]
    dev: DeviceArgs,
    #[command(flatten)]
    precision: PrecisionArgs,
    /// Print {"strings", "digit_error_rate", "string_error_rate", ...} as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct TranscribeArgs {
    /// A checkpoint written by `recur speech train-strings`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The recording (8 kHz mono PCM WAV).
    file: PathBuf,
    /// Prefix beam search of this width (default: best path).
    #[arg(long)]
    beam: Option<usize>,
    /// Draw each class's probability over time, with the decoded digits under the curves, to
    /// <PLOT>.png and <PLOT>.svg.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Feed the file to the model in chunks, as if it were arriving, and print each digit as
    /// soon as it is decided (unidirectional models; best path).
    #[arg(long)]
    stream: bool,
    /// Chunk length when streaming, in milliseconds.
    #[arg(long, default_value_t = 50)]
    chunk_ms: u32,
    #[command(flatten)]
    precision: PrecisionArgs,
    /// Print {"digits", "times_s"} as one JSON object (with --stream also "out_s", "real_time_factor").
    #[arg(long)]
    json: bool,
}

fn decoder_of(beam: Option<usize>) -> Result<Decoder> {
    match beam {
        None | Some(1) => Ok(Decoder::Greedy),
        Some(0) => bail!("--beam must be at least 1"),
        Some(w) => Ok(Decoder::Beam(w)),
    }
}

fn set_of(s: &str) -> Result<SetName> {
    Ok(match s {
        "test" => SetName::Test,
        "val" => SetName::Val,
        "train" => SetName::Train,
        _ => bail!("--set must be test, val or train, got '{s}'"),
    })
}

/// The training settings of the flags, checked.
fn hyper_of(a: &TrainArgs) -> Result<Hyper> {
    a.train.check()?;
    if a.strings == 0 {
        bail!("--strings must be at least 1");
    }
    Ok(Hyper {
        epochs: a.train.epochs,
        batch_size: a.train.batch_size,
        learning_rate: a.train.learning_rate,
        lr_floor: a.train.lr_floor,
        grad_clip: a.train.grad_clip,
        seed: a.train.seed,
    })
}

/// Builds, renders and featurises the strings of `set`.
fn load_set(
    sets: &StringSets,
    set: SetName,
    all: &[Utterance],
    ex: &Extractor,
) -> Result<(Vec<DigitString>, Vec<StringExample>)> {
    let strings = sets.build(set, all).map_err(|e| anyhow!(e))?;
    let pb = spinner(&format!(
        "rendering {} {} strings",
        strings.len(),
        set.name()
    ));
    let examples = load_strings(&strings, ex).map_err(|e| anyhow!(e));
    pb.finish_and_clear();
    Ok((strings, examples?))
}

/// The transcriber configuration of a checkpoint, or an error naming the file.
fn config_of(ck: &Checkpoint, path: &Path) -> Result<TranscriberConfig> {
    tt::config_of(ck).map_err(|e| anyhow!("{}: {e}", path.display()))
}

pub fn train(a: TrainArgs, ranks: Option<&crate::ranks::Ranks>) -> Result<()> {
    // rank 0 alone prints, charts and writes checkpoints
    let root = crate::ranks::root(ranks);
    // ---- flags -> plan, before any work
    set_threads(&a.dev)?;
    let device = crate::device::open(a.dev.device)?;
    a.shape.check()?;
    let hyper = hyper_of(&a)?;
    let sets = StringSets {
        train: a.strings,
        val: a.val_strings,
        test: a.test_strings,
        holdout: a.holdout.clone(),
        seed: a.string_seed,
    };
    let run_dir = a.run.dir(DEFAULT_RUN_DIR);
    let (last_path, best_path) = (run_dir.join(LATEST), run_dir.join(BEST));
    let resumed = if a.run.resume {
        let ck = checkpoint::load(&last_path)?;
        ck.check_trainable()?;
        let cfg = config_of(&ck, &last_path)?;
        if cfg.hyper != hyper || cfg.sets.as_ref() != Some(&sets) {
            bail!(
                "{} was trained with other settings ({} on {}); resume with the same flags",
                last_path.display(),
                serde_json::to_string(&cfg.hyper)?,
                serde_json::to_string(&cfg.sets)?
            );
        }
        Some((ck, cfg))
    } else {
        None
    };
    let feat_cfg = match &resumed {
        Some((_, cfg)) => cfg.features.clone(),
        None => a.feat.config(),
    };
    let ex = Extractor::new(feat_cfg.clone()).map_err(|e| anyhow!("features: {e}"))?;
    let model_cfg = match &resumed {
        Some((ck, _)) => ck.model.clone(),
        None => model_config(
            feat_cfg.dim(),
            a.shape.cell.kind(),
            a.shape.rnn_size,
            a.shape.num_layers,
            !a.unidirectional,
        )
        .map_err(|e| anyhow!("model: {e}"))?,
    };
    let params = Model::new(model_cfg.clone())
        .map_err(|e| anyhow!("model: {e}"))?
        .num_params();

    // ---- data
    let all = list_dir(&a.data).map_err(|e| anyhow!(e))?;
    if let Some(h) = &a.holdout {
        check_speaker(&all, h, &a.data)?;
    }
    let t0 = Instant::now();
    let (_, mut train_set) = load_set(&sets, SetName::Train, &all, &ex)?;
    let (_, mut val_set) = load_set(&sets, SetName::Val, &all, &ex)?;
    let normalizer = match &resumed {
        Some((_, cfg)) => cfg.normalizer.clone(),
        None => Normalizer::fit_features(train_set.iter().map(|e| &e.feats)),
    };
    normalise(&mut train_set, &normalizer);
    normalise(&mut val_set, &normalizer);
    let frames: usize = train_set.iter().map(|e| e.feats.t).sum();
    if root {
        crate::ranks::say!(
        "transcriber: {} training strings ({frames} frames) and {} validation strings{} in {:.1} s; \
         {} features per frame, {} {} x {}{}, {params} parameters{}",
        train_set.len(),
        val_set.len(),
        a.holdout
            .as_ref()
            .map_or(String::new(), |h| format!(" (speaker {h} held out)")),
        t0.elapsed().as_secs_f64(),
        feat_cfg.dim(),
        model_cfg.rnn.cell.name(),
        model_cfg.rnn.num_layers,
        model_cfg.rnn.hidden_size,
        if model_cfg.rnn.bidirectional {
            ", bidirectional"
        } else {
            ""
        },
        ranks.map_or(String::new(), |r| format!(", {} MPI ranks", r.size()))
    );
    }

    // ---- the run: the directory is held from here until the run ends
    let _lock = crate::ranks::lock_run_dir(ranks, &run_dir)?;
    let val_n = val_set.len();
    let mut run = Run::on(&*device)
        .checkpoints(run_dir.clone())
        .precision(a.precision.get());
    if let Some(r) = ranks {
        run = run.collective(r.collective());
    }
    let mut trainer = match resumed {
        Some((ck, _)) => tt::resume(run, ck, train_set, val_set)
            .with_context(|| format!("resuming {}", last_path.display()))?,
        None => {
            let config = TranscriberConfig {
                kind: tt::KIND.into(),
                features: feat_cfg,
                normalizer,
                hyper,
                sets: Some(sets),
            };
            tt::start(run, model_cfg, config, train_set, val_set)?
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second handler cannot be installed in one process; the binary installs one.
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
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

    // ---- summary
    let st = &trainer.state;
    let bpe = trainer.task.batches_per_epoch().unwrap_or(1);
    let interrupted = reason == StopReason::Stopped;
    let epochs_done = st.step as f64 / bpe as f64;
    let best = st.history.iter().find(|r| Some(r.step) == st.best_step);
    let best_der = best.and_then(|r| r.extra["val_digit_error_rate"].as_f64());
    let charts = write_curves(&st.history, &run_dir)?;
    let seconds = st.elapsed_secs;
    let mut out = std::io::stdout().lock();
    if a.json {
        let j = json!({
            "epochs": st.step / bpe,
            "steps": st.step,
            "interrupted": interrupted,
            "train_strings": a.strings,
            "train_frames": frames,
            "val_strings": val_n,
            "parameters": params,
            "train_seconds": seconds,
            "best_epoch": st.best_step.map(|s| s.div_ceil(bpe)),
            "best_val_loss": best.and_then(|r| r.val_loss),
            "best_val_digit_error_rate": best_der,
            "best": best_path,
            "last": last_path,
            "charts": charts,
        });
        writeln!(out, "{j}")?;
        return Ok(());
    }
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
        "trained {epochs_done:.2} epochs in {seconds:.1} s ({:.0} frames/s)",
        frames as f64 * epochs_done / seconds.max(1e-9)
    )?;
    if let (Some(r), Some(d)) = (best, best_der) {
        writeln!(
            out,
            "best epoch (lowest validation CTC): {:.0}, validation CTC {:.4}, digit error rate {d:.4} ({val_n} strings)",
            r.epoch,
            r.val_loss.unwrap_or(f64::NAN)
        )?;
    }
    writeln!(out, "best checkpoint: {}", best_path.display())?;
    writeln!(out, "last checkpoint: {}", last_path.display())?;
    for c in &charts {
        writeln!(out, "chart: {}", c.display())?;
    }
    writeln!(
        out,
        "test it: recur speech eval-strings --checkpoint {} --data {}",
        best_path.display(),
        a.data.display()
    )?;
    Ok(())
}

/// Runs `trainer` to its end: a progress bar through each epoch, a line per evaluation.
fn run_epochs(
    trainer: &mut TranscriberTrainer,
    stop: &AtomicBool,
    epochs: usize,
    quiet: bool,
) -> Result<StopReason> {
    epochs::run_epochs(trainer, stop, epochs, quiet, "CTC", &|row| match (
        row.val_loss,
        row.extra["val_digit_error_rate"].as_f64(),
    ) {
        (Some(l), Some(d)) => format!("  val CTC {l:.4} digit error rate {d:.4}"),
        _ => String::new(),
    })
}

/// The learning curves: CTC loss per epoch (training and validation) and the validation digit
/// error rate.
fn write_curves(history: &[LogRow], out: &Path) -> Result<Vec<PathBuf>> {
    if history.is_empty() {
        return Ok(Vec::new());
    }
    let loss = epochs::loss_chart(history, "transcriber: CTC loss", "CTC (nats per digit)");
    let mut files = Vec::new();
    let der = epochs::per_epoch(history, &|l| l.extra["val_digit_error_rate"].as_f64());
    if !der.is_empty() {
        let mut chart = plot::Chart::new(
            "transcriber: validation digit error rate",
            "epoch",
            "digit error rate",
        );
        chart.push(plot::Series::line("validation", der));
        files.extend(plot::write_chart(&chart, &out.join("digit-error-rate"))?);
    }
    files.extend(plot::write_chart(&loss, &out.join("loss"))?);
    Ok(files)
}

/// A trained transcriber: its model and parameters, extractor, configuration, stored precision.
struct Transcriber {
    model: Model,
    params: Vec<f32>,
    ex: Extractor,
    cfg: TranscriberConfig,
    precision: recur::Precision,
}

fn load_transcriber(path: &Path) -> Result<Transcriber> {
    let ck = checkpoint::load(path)?;
    let cfg = config_of(&ck, path)?;
    let model = Model::new(ck.model.clone()).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let ex = Extractor::new(cfg.features.clone())
        .map_err(|e| anyhow!("{}: features: {e}", path.display()))?;
    Ok(Transcriber {
        model,
        params: ck.params,
        ex,
        cfg,
        precision: ck.precision,
    })
}

fn digits_text(d: &[u8]) -> String {
    d.iter().map(|&d| char::from(b'0' + d)).collect()
}

pub fn eval(a: EvalArgs) -> Result<()> {
    set_threads(&a.dev)?;
    let device = crate::device::open(a.dev.device)?;
    let set = set_of(&a.set)?;
    let decoder = decoder_of(a.beam)?;
    if a.stream && decoder != Decoder::Greedy {
        bail!("--stream decodes by best path: leave out --beam");
    }
    let tr = load_transcriber(&a.checkpoint)?;
    if a.stream {
        // refused now (a bidirectional model, mean-normalised features), before any work
        streaming(&tr, &a.checkpoint, &a.precision)?;
    }
    let sets = tr.cfg.sets.clone().ok_or_else(|| {
        anyhow!(
            "{}: the run kept no recipe of its strings (trained through the library?); \
             transcribe files with `recur speech transcribe`",
            a.checkpoint.display()
        )
    })?;
    let all = list_dir(&a.data).map_err(|e| anyhow!(e))?;
    if let Some(h) = &sets.holdout {
        check_speaker(&all, h, &a.data)?;
    }
    let (strings, mut examples) = load_set(&sets, set, &all, &tr.ex)?;
    if examples.is_empty() {
        bail!("the run's {} set has no strings", set.name());
    }
    normalise(&mut examples, &tr.cfg.normalizer);
    let mut eng = device.engine(tr.model.clone(), tr.params.clone(), None)?;
    eng.set_precision(a.precision.or(tr.precision))?;
    let t0 = Instant::now();
    let ev = evaluate(&mut *eng, &examples, EVAL_BATCH, decoder)?;
    let secs = t0.elapsed().as_secs_f64();
    let what = match (&sets.holdout, set) {
        (Some(h), SetName::Test) => format!("test strings of held-out speaker {h}"),
        _ => format!("{} strings", set.name()),
    };
    let charts = match a.plot_string {
        Some(n) => {
            let e = examples.get(n).ok_or_else(|| {
                anyhow!(
                    "--plot-string {n}: the {what} are numbered 0 to {}",
                    examples.len() - 1
                )
            })?;
            let (scores, t) = transcribe(&mut *eng, &e.feats, decoder)?;
            let hop_s = tr.ex.cfg.hop_length as f64 / tr.ex.cfg.sample_rate as f64;
            let title = format!(
                "string {n} of the {what}: said {}, heard {}",
                digits_text(&e.digits),
                digits_text(&t.digits)
            );
            let stem = a.checkpoint.with_file_name(format!(
                "{}-string-{n}",
                a.checkpoint
                    .file_stem()
                    .map_or("transcriber".into(), |s| s.to_string_lossy())
            ));
            write_posteriors(&scores, &t, hop_s, title, &stem)?.to_vec()
        }
        None => Vec::new(),
    };
    if a.stream {
        return eval_stream(&a, &tr, &strings, &ev.hyps, &what);
    }
    // the worst strings: most edits, then the longest first
    let mut order: Vec<(usize, usize)> = examples
        .iter()
        .zip(&ev.hyps)
        .enumerate()
        .map(|(i, (e, h))| (i, align(&e.digits, h).total()))
        .filter(|&(_, n)| n > 0)
        .collect();
    order.sort_by_key(|&(i, n)| {
        (
            std::cmp::Reverse(n),
            std::cmp::Reverse(examples[i].digits.len()),
            i,
        )
    });
    order.truncate(a.worst);
    let s = &ev.score;
    let worst: Vec<serde_json::Value> = order
        .iter()
        .map(|&(i, n)| {
            json!({
                "reference": digits_text(&examples[i].digits),
                "hypothesis": digits_text(&ev.hyps[i]),
                "edits": n,
                "speaker": strings[i].speaker,
                "files": strings[i].parts.iter().map(|u| u.path.display().to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if a.json {
        let j = json!({
            "set": what,
            "strings": s.strings,
            "digits": s.reference_digits,
            "decoder": format!("{decoder:?}"),
            "digit_error_rate": s.digit_error_rate(),
            "string_error_rate": s.string_error_rate(),
            "substitutions": s.edits.substitutions,
            "deletions": s.edits.deletions,
            "insertions": s.edits.insertions,
            "ctc_loss": ev.loss,
            "seconds": secs,
            "worst": worst,
            "charts": charts,
        });
        writeln!(out, "{j}")?;
        return Ok(());
    }
    writeln!(
        out,
        "{what}: {} strings, {} digits, {}",
        s.strings,
        s.reference_digits,
        match decoder {
            Decoder::Greedy => "best path".to_string(),
            Decoder::Beam(w) => format!("beam search, width {w}"),
        }
    )?;
    writeln!(
        out,
        "digit error rate {:.4} ({} substitutions, {} deletions, {} insertions)",
        s.digit_error_rate(),
        s.edits.substitutions,
        s.edits.deletions,
        s.edits.insertions
    )?;
    writeln!(
        out,
        "string error rate {:.4}; mean CTC loss {:.4}; {secs:.1} s",
        s.string_error_rate(),
        ev.loss
    )?;
    if !worst.is_empty() {
        writeln!(out, "worst strings (reference -> heard):")?;
        for w in &worst {
            writeln!(
                out,
                "  {} -> {} ({} edits; speaker {}; {})",
                w["reference"].as_str().unwrap_or(""),
                w["hypothesis"].as_str().unwrap_or(""),
                w["edits"],
                w["speaker"].as_str().unwrap_or(""),
                w["files"]
                    .as_array()
                    .map(|f| f
                        .iter()
                        .filter_map(|p| Path::new(p.as_str()?).file_name()?.to_str())
                        .collect::<Vec<_>>()
                        .join(" "))
                    .unwrap_or_default()
            )?;
        }
    }
    for c in &charts {
        writeln!(out, "chart: {}", c.display())?;
    }
    Ok(())
}

/// Colours of the ten digits' curves (the blank's is grey).
const DIGIT_COLORS: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [23, 190, 207],
    [188, 189, 34],
    [0, 0, 0],
];

/// The posterior chart of one recording: each class's probability per frame (softmax of the
/// scores (T, 11)), the decoded digits under the curves at their frames.
fn write_posteriors(
    scores: &[f32],
    t: &Transcript,
    hop_s: f64,
    title: String,
    stem: &Path,
) -> Result<[PathBuf; 2]> {
    let c = NUM_CLASSES;
    let probs: Vec<Vec<f64>> = scores
        .chunks(c)
        .map(|row| {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
            let z: f64 = e.iter().sum();
            e.iter().map(|v| v / z).collect()
        })
        .collect();
    let curve = |k: usize| -> Vec<(f64, f64)> {
        probs
            .iter()
            .enumerate()
            .map(|(f, p)| (f as f64 * hop_s, p[k]))
            .collect()
    };
    let marks = t
        .digits
        .iter()
        .zip(&t.frames)
        .map(|(&d, &f)| (f as f64 * hop_s, d.to_string()))
        .collect();
    let mut chart = plot::Chart::new(title, "time (s)", "probability")
        .with_marks(marks)
        .with_legend(plot::Legend::UpperLeft);
    chart.push(plot::Series::line("blank", curve(BLANK)).with_color([190, 190, 190]));
    for d in 0..10 {
        chart.push(plot::Series::line(d.to_string(), curve(d + 1)).with_color(DIGIT_COLORS[d]));
    }
    plot::write_chart(&chart, stem)
}

/// Samples per chunk of `ms` milliseconds.
fn chunk_samples(ms: u32, rate: u32) -> Result<usize> {
    let n = ms as usize * rate as usize / 1000;
    if n == 0 {
        bail!("--chunk-ms must give at least one sample, got {ms}");
    }
    Ok(n)
}

/// The streaming transcriber of a loaded run, or an error naming the checkpoint.
fn streaming<'a>(
    tr: &'a Transcriber,
    path: &Path,
    precision: &PrecisionArgs,
) -> Result<StreamingTranscriber<'a>> {
    StreamingTranscriber::new(&tr.model, &tr.params, &tr.ex, &tr.cfg.normalizer)
        .and_then(|s| s.with_precision(precision.or(tr.precision)))
        .map_err(|e| anyhow!("{}: {e}", path.display()))
}

pub fn transcribe_file(a: TranscribeArgs) -> Result<()> {
    let decoder = decoder_of(a.beam)?;
    let tr = load_transcriber(&a.checkpoint)?;
    if a.stream {
        return transcribe_stream(&a, &tr, decoder);
    }
    let x = read_wav(&a.file, tr.ex.cfg.sample_rate).map_err(|e| anyhow!(e))?;
    let mut feats = tr.ex.compute(&x);
    tr.cfg.normalizer.apply(&mut feats);
    let mut eng: Box<dyn Engine> =
        recur::engine::Backend::engine(&recur::engine::Cpu, tr.model, tr.params, None)?;
    eng.set_precision(a.precision.or(tr.precision))?;
    let (scores, t) = transcribe(&mut *eng, &feats, decoder)?;
    let hop_s = tr.ex.cfg.hop_length as f64 / tr.ex.cfg.sample_rate as f64;
    let charts = match &a.plot {
        Some(stem) => {
            let title = format!("{}: heard {}", file_name(&a.file), digits_text(&t.digits));
            write_posteriors(&scores, &t, hop_s, title, stem)?.to_vec()
        }
        None => Vec::new(),
    };
    let times: Vec<f64> = t.frames.iter().map(|&f| f as f64 * hop_s).collect();
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(
            out,
            "{}",
            json!({"digits": digits_text(&t.digits), "times_s": times, "charts": charts})
        )?;
        return Ok(());
    }
    writeln!(out, "{}: {}", a.file.display(), digits_text(&t.digits))?;
    for c in &charts {
        writeln!(out, "chart: {}", c.display())?;
    }
    Ok(())
}

/// `transcribe --stream`: the file fed in chunks, each digit printed when decided.
fn transcribe_stream(a: &TranscribeArgs, tr: &Transcriber, decoder: Decoder) -> Result<()> {
    if decoder != Decoder::Greedy {
        bail!("--stream decodes by best path: leave out --beam");
    }
    let rate = tr.ex.cfg.sample_rate;
    let chunk = chunk_samples(a.chunk_ms, rate)?;
    let x = read_wav(&a.file, rate).map_err(|e| anyhow!(e))?;
    let mut st = streaming(tr, &a.checkpoint, &a.precision)?;
    if a.plot.is_some() {
        st = st.keep_scores();
    }
    let hop_s = tr.ex.cfg.hop_length as f64 / rate as f64;
    let lookahead_ms = st.lookahead_samples() as f64 * 1000.0 / rate as f64;
    let mut out = std::io::stdout().lock();
    if !a.json {
        writeln!(
            out,
            "{}: streaming in chunks of {} ms (features decided {lookahead_ms:.0} ms after a frame's centre)",
            a.file.display(),
            a.chunk_ms
        )?;
    }
    let json = a.json;
    let mut failed = None;
    let r = stream_recording(&mut st, &x, chunk, &mut |e, at| {
        if json || failed.is_some() {
            return;
        }
        let w = writeln!(
            out,
            "  {} at {at:.3} s of audio (its frame: {:.3} s)",
            e.digit,
            e.frame as f64 * hop_s
        )
        .and_then(|_| out.flush());
        if let Err(e) = w {
            failed = Some(e);
        }
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    let digits = digits_text(&r.digits());
    let charts = match (&a.plot, st.scores()) {
        (Some(stem), Some(scores)) => {
            let t = Transcript {
                digits: r.digits(),
                frames: r.emitted.iter().map(|e| e.frame).collect(),
            };
            let title = format!("{}: heard {digits} (streamed)", file_name(&a.file));
            write_posteriors(scores, &t, hop_s, title, stem)?.to_vec()
        }
        _ => Vec::new(),
    };
    if a.json {
        let times: Vec<f64> = r.emitted.iter().map(|e| e.frame as f64 * hop_s).collect();
        writeln!(
            out,
            "{}",
            json!({
                "digits": digits,
                "times_s": times,
                "out_s": r.out_s,
                "audio_s": r.audio_s,
                "compute_s": r.compute_s,
                "real_time_factor": r.real_time_factor(),
                "chunk_ms": a.chunk_ms,
                "charts": charts,
            })
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "{}: {digits} ({:.2} s of audio in {:.1} ms: real-time factor {:.4})",
        a.file.display(),
        r.audio_s,
        r.compute_s * 1e3,
        r.real_time_factor()
    )?;
    for c in &charts {
        writeln!(out, "chart: {}", c.display())?;
    }
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Percentile `q` (0-1) of sorted values, by the nearest rank.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let k = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[k - 1]
}

/// `eval-strings --stream`: every string fed in chunks through the streaming transcriber, one at a
/// time; the error rates, the real-time factor, and each digit's delay after the end of its
/// recording (over the strings transcribed exactly, where each digit's output is known to be
/// its own).
fn eval_stream(
    a: &EvalArgs,
    tr: &Transcriber,
    strings: &[DigitString],
    whole: &[Vec<u8>],
    what: &str,
) -> Result<()> {
    let rate = tr.ex.cfg.sample_rate;
    let chunk = chunk_samples(a.chunk_ms, rate)?;
    let lookahead_ms = streaming(tr, &a.checkpoint, &a.precision)?.lookahead_samples() as f64
        * 1000.0
        / rate as f64;
    let mut score = Score::default();
    let (mut compute_s, mut audio_s) = (0.0, 0.0);
    let mut delays = Vec::new();
    let mut same_as_whole = 0usize;
    let pb = ProgressBar::new(strings.len() as u64);
    for (i, s) in strings.iter().enumerate() {
        let r = s.render(rate).map_err(|e| anyhow!(e))?;
        let mut st = streaming(tr, &a.checkpoint, &a.precision)?;
        let got = stream_recording(&mut st, &r.samples, chunk, &mut |_, _| {})?;
        let (reference, hyp) = (s.digits(), got.digits());
        score.add(&reference, &hyp);
        same_as_whole += usize::from(hyp == whole[i]);
        compute_s += got.compute_s;
        audio_s += got.audio_s;
        if hyp == reference {
            for (span, out) in r.spans.iter().zip(&got.out_s) {
                delays.push(out - span.end as f64 / rate as f64);
            }
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    delays.sort_by(f64::total_cmp);
    let within = delays.iter().filter(|&&d| d <= 0.3).count();
    let rtf = compute_s / audio_s;
    let (median, p95, max) = (
        percentile(&delays, 0.5),
        percentile(&delays, 0.95),
        delays.last().copied().unwrap_or(f64::NAN),
    );
    let mut out = std::io::stdout().lock();
    if a.json {
        let j = json!({
            "set": what,
            "strings": score.strings,
            "digits": score.reference_digits,
            "decoder": "Greedy",
            "streamed": true,
            "chunk_ms": a.chunk_ms,
            "lookahead_ms": lookahead_ms,
            "digit_error_rate": score.digit_error_rate(),
            "string_error_rate": score.string_error_rate(),
            "substitutions": score.edits.substitutions,
            "deletions": score.edits.deletions,
            "insertions": score.edits.insertions,
            "same_as_whole_recording": same_as_whole,
            "real_time_factor": rtf,
            "audio_s": audio_s,
            "compute_s": compute_s,
            "delays_measured": delays.len(),
            "delay_median_s": median,
            "delay_p95_s": p95,
            "delay_max_s": max,
            "delays_within_300ms": within,
        });
        writeln!(out, "{j}")?;
        return Ok(());
    }
    writeln!(
        out,
        "{what}: {} strings, {} digits, streamed in chunks of {} ms (features decided {lookahead_ms:.0} ms after a frame's centre), best path",
        score.strings, score.reference_digits, a.chunk_ms
    )?;
    writeln!(
        out,
        "digit error rate {:.4} ({} substitutions, {} deletions, {} insertions); string error rate {:.4}",
        score.digit_error_rate(),
        score.edits.substitutions,
        score.edits.deletions,
        score.edits.insertions,
        score.string_error_rate()
    )?;
    writeln!(
        out,
        "the same digits as the whole-recording best path on {same_as_whole} of {} strings",
        score.strings
    )?;
    writeln!(
        out,
        "real-time factor {rtf:.4} ({audio_s:.1} s of audio in {compute_s:.2} s, {} thread(s))",
        recur::ops::gemm::threads()
    )?;
    writeln!(
        out,
        "delay after the end of each digit's recording ({} digits of exactly transcribed strings): median {:.0} ms, 95th percentile {:.0} ms, max {:.0} ms; {within} within 300 ms",
        delays.len(),
        median * 1e3,
        p95 * 1e3,
        max * 1e3
    )?;
    Ok(())
}
