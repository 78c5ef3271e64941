//! `recur train`: trains a character language model on a text file (Tiny Shakespeare by
//! default), with a progress bar on stderr, validation loss and a sample at every evaluation,
//! checkpoints, a CSV log and a loss-curve plot in the checkpoint directory.
//!
//! This module turns flags into a [`recur_apps::charlm::train::TrainConfig`] (presets, then explicit flags),
//! checks them, and reports; the loop itself is [`recur_apps::charlm::train::Trainer`].

use crate::args::{DeviceArgs, RunDir};
use crate::charlm_common::{default_corpus, load_corpus, print_sample_text, read_corpus};
use crate::values::{choice, Cell, DropoutModeArg, LrScheduleArg, Optim, Preset as PresetName};
use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use recur::cell::CellKind;
use recur::checkpoint;
use recur::engine::Backend;
use recur::model::ModelConfig;
use recur::stack::{DropoutMode, StackConfig};
use recur::train::{Schedule, StepInfo};
use recur_apps::charlm::data::{self, Vocab};
use recur_apps::charlm::train::{
    self as charlm_train, Budget, Event, LogRow, Run, StopReason, TrainConfig, TrainState, Trainer,
    BEST, LATEST,
};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Name of the CSV log inside the checkpoint directory.
pub const LOG: &str = "log.csv";

#[derive(clap::Args)]
#[command(mut_arg("device", |a| a.help(
    "Where the training math runs (cuda needs the `cuda` cargo feature); checkpoints are the \
     same either way, so a run continues on the other device with --resume"
)))]
pub struct Args {
    /// UTF-8 text to train on [default: Tiny Shakespeare, data/tinyshakespeare/input.txt, built
    /// into the binary].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Starting values for everything below; explicit flags override them. All: one-hot input,
    /// Adam, clip 5, no lr decay. tiny: LSTM 1x128, B=16, T=32, lr 3e-3, 1 minute, eval every
    /// 200 (a smoke run). default: LSTM 2x256, dropout 0.2, B=16, T=64, lr 2e-3, weights
    /// averaged (--ema 0.999), 10 minutes, eval every 500.
    /// large: LSTM 2x512, dropout 0.25, output dropout 0.25, weight drop 0.2, B=32, T=64, lr 2e-3
    /// on a cosine over the hour (warm-up 500 steps, floor 0.05), weights averaged (--ema 0.999),
    /// 60 minutes, eval every 500.
    #[arg(long, value_parser = choice::<PresetName>(), default_value = "default")]
    preset: PresetName,
    /// The recurrent cell [default: the preset's, lstm].
    #[arg(long, value_parser = choice::<Cell>())]
    cell: Option<Cell>,
    /// Stacked recurrent layers.
    #[arg(long = "num-layers", visible_alias = "layers")]
    num_layers: Option<usize>,
    /// Hidden units per layer.
    #[arg(long = "rnn-size", visible_alias = "hidden")]
    rnn_size: Option<usize>,
    /// Dropout between layers (needs --num-layers 2 or more).
    #[arg(long)]
    dropout: Option<f64>,
    /// Weight drop: zero each recurrent weight (weight_hh) with this probability, one mask per
    /// batch (DropConnect, as AWD-LSTM) [default: the preset's: 0.2 for large, else 0].
    #[arg(long)]
    weight_drop: Option<f64>,
    /// Dropout on the last layer's outputs, before the decoder [default: the preset's: 0.25 for
    /// large, else 0].
    #[arg(long)]
    dropout_output: Option<f64>,
    /// Dropout on the first layer's input: with one-hot input whole characters are dropped
    /// (locked: the same symbols for every step of a stream's batch, an embedding dropout);
    /// with --embed, elements of the embedded vectors [default: 0].
    #[arg(long)]
    dropout_input: Option<f64>,
    /// Dropout masks (--dropout, --dropout-output, --dropout-input) drawn anew at every step, or one per
    /// sequence for all its steps (locked: variational dropout, as AWD-LSTM) [default: step].
    #[arg(long, value_parser = choice::<DropoutModeArg>())]
    dropout_mode: Option<DropoutModeArg>,
    /// LSTM projection size (0 = none).
    #[arg(long)]
    proj_size: Option<usize>,
    /// Embedding width (0 = one-hot input).
    #[arg(long)]
    embed: Option<usize>,
    /// Tie the decoder's weight to the embedding's (AWD-LSTM's weight tying: one matrix, both
    /// gradients): needs --embed equal to the top layer's output width (--proj-size if set,
    /// else --rnn-size).
    #[arg(long)]
    tie_weights: bool,
    /// B: parallel streams per batch.
    #[arg(long = "batch-size", visible_alias = "batch")]
    batch_size: Option<usize>,
    /// T: characters per stream per batch (the BPTT truncation length).
    #[arg(long)]
    seq_length: Option<usize>,
    /// The update rule [default: adam].
    #[arg(long, value_parser = choice::<Optim>())]
    optim: Option<Optim>,
    /// Momentum of --optim sgd.
    #[arg(long)]
    momentum: Option<f64>,
    /// Learning rate.
    #[arg(long = "learning-rate", visible_alias = "lr")]
    learning_rate: Option<f64>,
    /// Multiply the learning rate by this every --lr-decay-every steps.
    #[arg(long)]
    lr_decay: Option<f64>,
    /// Steps between learning-rate decays (0 = never).
    #[arg(long)]
    lr_decay_every: Option<u64>,
    /// The learning-rate schedule [default: the preset's: cosine for large, else step].
    #[arg(long, value_parser = choice::<LrScheduleArg>())]
    lr_schedule: Option<LrScheduleArg>,
    /// Warm-up steps of --lr-schedule cosine or plateau (the rate rising linearly to --lr)
    /// [default: the preset's: 500 for large, else 0].
    #[arg(long)]
    warmup: Option<u64>,
    /// The lowest rate of --lr-schedule cosine or plateau, as a fraction of --lr [default: 0.05].
    #[arg(long)]
    lr_floor: Option<f64>,
    /// --lr-schedule plateau: the factor of each cut [default: 0.5].
    #[arg(long)]
    plateau_factor: Option<f64>,
    /// --lr-schedule plateau: evaluations without a new best before a cut [default: 2].
    #[arg(long)]
    plateau_patience: Option<u64>,
    /// Keep a moving average of the weights with this decay (e.g. 0.999): evaluations measure
    /// it (the raw weights' loss printed beside), checkpoints hold it beside the raw weights,
    /// and `recur eval` and `recur sample` use it [default: the preset's; 0.999 for default and
    /// large, else 0 (none)].
    #[arg(long)]
    ema: Option<f64>,
    /// Clip the global gradient norm to this (0 = off).
    #[arg(long)]
    grad_clip: Option<f64>,
    /// Clamp each gradient element to [-v, v] (0 = off).
    #[arg(long)]
    grad_clip_value: Option<f64>,
    /// Seed for the initial weights, dropout and the printed samples.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop after this many passes over the training text.
    #[arg(long)]
    epochs: Option<f64>,
    /// Stop after this many optimizer steps.
    #[arg(long)]
    max_steps: Option<u64>,
    /// Stop after this many minutes of training.
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Steps between evaluations on the validation text (0 = only at the end).
    #[arg(long)]
    eval_every: Option<u64>,
    /// Fraction of the text, taken from its end, used for validation.
    #[arg(long)]
    val_frac: Option<f64>,
    #[command(flatten)]
    run: RunDir,
    /// Characters of the sample printed at each evaluation (0 = none).
    #[arg(long, default_value_t = 300)]
    sample_length: usize,
    /// Temperature of those samples.
    #[arg(long, default_value_t = 0.8)]
    sample_temperature: f64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Print one JSON object with the final numbers on stdout; evaluations go to stderr.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    precision: crate::args::TrainPrecisionArgs,
    #[command(flatten)]
    dev: DeviceArgs,
}

/// A preset's values for every flag that has one.
struct Preset {
    cell: Cell,
    num_layers: usize,
    rnn_size: usize,
    dropout: f64,
    /// DropConnect on W_hh (`--weight-drop`) and dropout on the last layer's output
    /// (`--dropout-output`).
    weight_drop: f64,
    dropout_output: f64,
    embed: usize,
    batch_size: usize,
    seq_length: usize,
    lr: f64,
    lr_decay: f64,
    lr_decay_every: u64,
    grad_clip: f64,
    ema: f64,
    /// The learning-rate schedule, its warm-up steps and floor (cosine and plateau only).
    schedule: LrScheduleArg,
    warmup: u64,
    lr_floor: f64,
    max_minutes: Option<f64>,
    epochs: Option<f64>,
    eval_every: u64,
}

fn preset(name: PresetName) -> Preset {
    match name {
        // A smoke run: learns spelling and line structure in a minute.
        PresetName::Tiny => Preset {
            cell: Cell::Lstm,
            num_layers: 1,
            rnn_size: 128,
            dropout: 0.0,
            weight_drop: 0.0,
            dropout_output: 0.0,
            embed: 0,
            batch_size: 16,
            seq_length: 32,
            lr: 3e-3,
            lr_decay: 1.0,
            lr_decay_every: 0,
            grad_clip: 5.0,
            ema: 0.0,
            schedule: LrScheduleArg::Step,
            warmup: 0,
            lr_floor: 0.05,
            max_minutes: Some(1.0),
            epochs: None,
            eval_every: 200,
        },
        // What a newcomer runs: ends by itself in about ten minutes on two cores. Chosen by
        // measurement (docs/results.md): in nine minutes a 2x256 LSTM with B = 16 gets further
        // than 2x512 (fewer characters) or B = 32 (fewer updates); it sees about ten epochs, so
        // without dropout it overfits (best 1.52, final 1.57); dropout 0.2 keeps it near 1.51.
        // The weights' moving average takes it under 1.48 in ten minutes; the AWD regularisers
        // slow the fit more than they save at this length (docs/results.md, section 7).
        PresetName::Default => Preset {
            cell: Cell::Lstm,
            num_layers: 2,
            rnn_size: 256,
            dropout: 0.2,
            weight_drop: 0.0,
            dropout_output: 0.0,
            embed: 0,
            batch_size: 16,
            seq_length: 64,
            lr: 2e-3,
            lr_decay: 1.0,
            lr_decay_every: 0,
            grad_clip: 5.0,
            ema: 0.999,
            schedule: LrScheduleArg::Step,
            warmup: 0,
            lr_floor: 0.05,
            max_minutes: Some(10.0),
            epochs: None,
            eval_every: 500,
        },
        // A serious run: an hour, a bigger network with dropout between the layers and on the
        // output, weight drop on W_hh, the rate on a cosine over the hour (warm-up 500 steps,
        // down to 5%) and the weights averaged. Chosen by measurement (docs/results.md,
        // sections 8-12): on the model-207 Xeon (about 33 M characters an hour) best 1.4141
        // nats/char, under 1.42 from 24 minutes. With dropout 0.5 between the layers it was
        // worse at every budget (best 1.4174); without dropout there it overfits from 22
        // minutes, without the weight drop from 23; without the output dropout it ends 0.016
        // higher. On a machine a third as fast, AWD-LSTM's stronger values underfit (section 8).
        PresetName::Large => Preset {
            cell: Cell::Lstm,
            num_layers: 2,
            rnn_size: 512,
            dropout: 0.25,
            weight_drop: 0.2,
            dropout_output: 0.25,
            embed: 0,
            batch_size: 32,
            seq_length: 64,
            lr: 2e-3,
            lr_decay: 1.0,
            lr_decay_every: 0,
            grad_clip: 5.0,
            ema: 0.999,
            schedule: LrScheduleArg::Cosine,
            warmup: 500,
            lr_floor: 0.05,
            max_minutes: Some(60.0),
            epochs: None,
            eval_every: 500,
        },
    }
}

/// Flags that fix the run's configuration, so that `--resume` must not be given them.
fn config_flags(a: &Args) -> Vec<&'static str> {
    let mut v = Vec::new();
    let mut check = |on: bool, name: &'static str| {
        if on {
            v.push(name)
        }
    };
    check(a.cell.is_some(), "--cell");
    check(a.num_layers.is_some(), "--num-layers");
    check(a.rnn_size.is_some(), "--rnn-size");
    check(a.dropout.is_some(), "--dropout");
    check(a.weight_drop.is_some(), "--weight-drop");
    check(a.dropout_output.is_some(), "--dropout-output");
    check(a.dropout_input.is_some(), "--dropout-input");
    check(a.dropout_mode.is_some(), "--dropout-mode");
    check(a.proj_size.is_some(), "--proj-size");
    check(a.embed.is_some(), "--embed");
    check(a.tie_weights, "--tie-weights");
    check(a.batch_size.is_some(), "--batch-size");
    check(a.seq_length.is_some(), "--seq-length");
    check(a.optim.is_some(), "--optim");
    check(a.momentum.is_some(), "--momentum");
    check(a.learning_rate.is_some(), "--learning-rate");
    check(a.lr_decay.is_some(), "--lr-decay");
    check(a.lr_decay_every.is_some(), "--lr-decay-every");
    check(a.lr_schedule.is_some(), "--lr-schedule");
    check(a.warmup.is_some(), "--warmup");
    check(a.lr_floor.is_some(), "--lr-floor");
    check(a.plateau_factor.is_some(), "--plateau-factor");
    check(a.ema.is_some(), "--ema");
    check(a.plateau_patience.is_some(), "--plateau-patience");
    check(a.grad_clip.is_some(), "--grad-clip");
    check(a.grad_clip_value.is_some(), "--grad-clip-value");
    check(a.seed.is_some(), "--seed");
    check(a.eval_every.is_some(), "--eval-every");
    v
}

fn positive(name: &str, x: f64) -> Result<f64> {
    if !(x > 0.0) || !x.is_finite() {
        bail!("{name} must be a positive number, got {x}");
    }
    Ok(x)
}

fn non_negative(name: &str, x: f64) -> Result<f64> {
    if !(x >= 0.0) || !x.is_finite() {
        bail!("{name} must be zero or positive, got {x}");
    }
    Ok(x)
}

/// The schedule of `--lr-schedule cosine | plateau` with its flags, checked; `None` for `step`
/// (the decay flags' schedule).
fn lr_schedule(a: &Args, p: &Preset) -> Result<Option<Schedule>> {
    let kind = a.lr_schedule.unwrap_or(p.schedule);
    let only = |on: bool, flag: &str, which: &str| -> Result<()> {
        if on {
            bail!("{flag} applies to --lr-schedule {which} only");
        }
        Ok(())
    };
    only(
        kind != LrScheduleArg::Plateau
            && (a.plateau_factor.is_some() || a.plateau_patience.is_some()),
        "--plateau-factor and --plateau-patience",
        "plateau",
    )?;
    only(
        kind == LrScheduleArg::Step && (a.warmup.is_some() || a.lr_floor.is_some()),
        "--warmup and --lr-floor",
        "cosine or plateau",
    )?;
    only(
        kind != LrScheduleArg::Step && (a.lr_decay.is_some() || a.lr_decay_every.is_some()),
        "--lr-decay and --lr-decay-every",
        "step",
    )?;
    let warmup = a.warmup.unwrap_or(p.warmup);
    let floor = a.lr_floor.unwrap_or(p.lr_floor);
    if !(0.0..=1.0).contains(&floor) {
        bail!("--lr-floor must be in [0, 1], got {floor}");
    }
    Ok(match kind {
        LrScheduleArg::Step => None,
        LrScheduleArg::Cosine => Some(Schedule::Cosine { warmup, floor }),
        LrScheduleArg::Plateau => {
            let factor = a.plateau_factor.unwrap_or(0.5);
            if !(factor > 0.0 && factor < 1.0) {
                bail!("--plateau-factor must be in (0, 1), got {factor}");
            }
            let patience = a.plateau_patience.unwrap_or(2);
            if patience == 0 {
                bail!("--plateau-patience must be at least 1");
            }
            Some(Schedule::Plateau {
                factor,
                patience,
                floor,
                warmup,
            })
        }
    })
}

/// The model and loop configuration from the preset and the explicit flags.
fn plan(a: &Args, vocab_len: usize) -> Result<(TrainConfig, Budget)> {
    let p = preset(a.preset);
    let kind = a.cell.unwrap_or(p.cell).kind();
    let num_layers = a.num_layers.unwrap_or(p.num_layers);
    let rnn_size = a.rnn_size.unwrap_or(p.rnn_size);
    let dropout = a.dropout.unwrap_or(p.dropout);
    let proj_size = a.proj_size.unwrap_or(0);
    let embed = a.embed.unwrap_or(p.embed);
    if num_layers == 0 || rnn_size == 0 {
        bail!("--num-layers and --rnn-size must be at least 1");
    }
    let dropout = probability("--dropout", dropout)?;
    let weight_drop = probability("--weight-drop", a.weight_drop.unwrap_or(p.weight_drop))?;
    let dropout_output = probability(
        "--dropout-output",
        a.dropout_output.unwrap_or(p.dropout_output),
    )?;
    let dropout_input = probability("--dropout-input", a.dropout_input.unwrap_or(0.0))?;
    let dropout_mode = a
        .dropout_mode
        .map_or(DropoutMode::Step, DropoutModeArg::mode);
    if a.dropout.is_some_and(|d| d > 0.0) && num_layers < 2 {
        bail!("--dropout acts between layers: it needs --num-layers 2 or more");
    }
    if proj_size > 0 && kind != CellKind::Lstm {
        bail!("--proj-size applies to --cell lstm only");
    }
    if proj_size >= rnn_size && proj_size > 0 {
        bail!("--proj-size ({proj_size}) must be smaller than --rnn-size ({rnn_size})");
    }
    let optim_name = a.optim.unwrap_or(Optim::Adam);
    if a.momentum.is_some() && optim_name != Optim::Sgd {
        bail!("--momentum applies to --optim sgd only");
    }
    let momentum = non_negative("--momentum", a.momentum.unwrap_or(0.0))?;
    let optim = optim_name.kind(momentum);
    let batch_size = a.batch_size.unwrap_or(p.batch_size);
    let seq_length = a.seq_length.unwrap_or(p.seq_length);
    if batch_size == 0 || seq_length == 0 {
        bail!("--batch-size and --seq-length must be at least 1");
    }
    let lr = positive("--learning-rate", a.learning_rate.unwrap_or(p.lr))?;
    let lr_decay = positive("--lr-decay", a.lr_decay.unwrap_or(p.lr_decay))?;
    if lr_decay > 1.0 {
        bail!("--lr-decay must be at most 1, got {lr_decay}");
    }
    let lr_decay_every = a.lr_decay_every.unwrap_or(p.lr_decay_every);
    if a.lr_decay.is_some_and(|d| d < 1.0) && lr_decay_every == 0 {
        bail!("--lr-decay needs --lr-decay-every N (steps between decays)");
    }
    let schedule = lr_schedule(a, &p)?;
    let ema = probability("--ema", a.ema.unwrap_or(p.ema))?;
    let grad_clip = non_negative("--grad-clip", a.grad_clip.unwrap_or(p.grad_clip))?;
    let grad_clip_value = non_negative("--grad-clip-value", a.grad_clip_value.unwrap_or(0.0))?;
    let rnn = StackConfig::new(kind, 0, rnn_size)
        .with_layers(num_layers)
        .with_dropout(dropout)
        .with_weight_drop(weight_drop)
        .with_dropout_output(dropout_output)
        .with_dropout_input(dropout_input)
        .with_dropout_mode(dropout_mode)
        .with_proj_size(proj_size);
    let mut model = ModelConfig::char_model(vocab_len, embed, rnn);
    if a.tie_weights {
        let top = model.rnn.output_size();
        if embed != top {
            bail!(
                "--tie-weights needs --embed equal to the top layer's output width ({top}: --proj-size if set, else --rnn-size), got {}",
                if embed == 0 { "no --embed".to_string() } else { format!("--embed {embed}") }
            );
        }
        model.tie_weights = true;
    }
    model.validate()?;
    let eval_every = a.eval_every.unwrap_or(p.eval_every);
    let cfg = TrainConfig {
        model,
        batch_size,
        seq_length,
        optim,
        lr,
        lr_decay,
        lr_decay_every,
        grad_clip,
        grad_clip_value,
        seed: a.seed.unwrap_or(1),
        eval_every,
        // ten training-loss rows per evaluation interval for the log and the plot
        log_every: if eval_every == 0 {
            50
        } else {
            (eval_every / 10).max(1)
        },
        schedule,
        ema,
    };
    Ok((cfg, budget(a, Some(&p))?))
}

/// `v` when it is in [0, 1) (a dropout probability, a decay), else the error naming `flag`.
fn probability(flag: &str, v: f64) -> Result<f64> {
    if !(0.0..1.0).contains(&v) {
        bail!("{flag} must be in [0, 1), got {v}");
    }
    Ok(v)
}

/// The limits from the flags (falling back to the preset's when there is one).
fn budget(a: &Args, p: Option<&Preset>) -> Result<Budget> {
    if let Some(e) = a.epochs {
        positive("--epochs", e)?;
    }
    if let Some(m) = a.max_minutes {
        positive("--max-minutes", m)?;
    }
    if a.max_steps == Some(0) {
        bail!("--max-steps must be at least 1");
    }
    let explicit = a.epochs.is_some() || a.max_steps.is_some() || a.max_minutes.is_some();
    Ok(match (explicit, p) {
        (false, Some(p)) => Budget {
            epochs: p.epochs,
            max_steps: None,
            max_minutes: p.max_minutes,
        },
        _ => Budget {
            epochs: a.epochs,
            max_steps: a.max_steps,
            max_minutes: a.max_minutes,
        },
    })
}

fn fmt_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

fn fmt_chars(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.2}M", n as f64 / 1e6)
    } else if n >= 1_000 {
        format!("{:.1}k", n as f64 / 1e3)
    } else {
        n.to_string()
    }
}

/// Writes the CSV log of every evaluation so far (the whole file, atomically); a run with a
/// moving average of its weights has a last column, the raw weights' validation loss.
fn write_log(dir: &Path, rows: &[LogRow], ema: bool) -> Result<()> {
    let mut s = String::from("step,epoch,chars_seen,elapsed_secs,lr,train_loss,val_loss,val_bpc");
    s.push_str(if ema { ",raw_val_loss\n" } else { "\n" });
    for r in rows {
        let (v, bpc) = match r.val_loss {
            Some(v) => (
                format!("{v:.6}"),
                format!("{:.6}", v / std::f64::consts::LN_2),
            ),
            None => (String::new(), String::new()),
        };
        s.push_str(&format!(
            "{},{:.4},{},{:.2},{:e},{:.6},{},{}\n",
            r.step, r.epoch, r.items_seen, r.elapsed_secs, r.lr, r.train_loss, v, bpc
        ));
        if ema {
            s.pop();
            s.push(',');
            if let Some(raw) = r.raw_val_loss {
                s.push_str(&format!("{raw:.6}"));
            }
            s.push('\n');
        }
    }
    let path = dir.join(LOG);
    let tmp = dir.join(format!(".{LOG}.tmp"));
    std::fs::write(&tmp, s).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The run the flags ask for: the one saved in the checkpoint directory (`--resume`) or a fresh
/// one; with its vocabulary and the corpus it reads.
fn open_run(
    a: &Args,
    backend: &dyn Backend,
    threads: usize,
    ranks: Option<&crate::ranks::Ranks>,
    dir: &Path,
) -> Result<(Trainer, Vocab, PathBuf)> {
    // every rank opens the same run; the loop sums over them
    let on = |backend| {
        let run = Run::on(backend)
            .checkpoints(dir.to_path_buf())
            .precision(a.precision.get());
        match ranks {
            Some(r) => run.collective(r.collective()),
            None => run,
        }
    };
    Ok(if a.run.resume {
        let given = config_flags(a);
        if !given.is_empty() {
            bail!(
                "--resume continues the saved run with its own settings; drop {}",
                given.join(", ")
            );
        }
        if a.preset != PresetName::Default {
            bail!("--resume continues the saved run with its own settings; drop --preset");
        }
        let path = dir.join(LATEST);
        if !path.exists() {
            bail!(
                "--resume: no checkpoint to resume from at '{}'",
                path.display()
            );
        }
        let ckpt = checkpoint::load(&path)?;
        ckpt.check_trainable()?;
        let extra = &TrainState::of(&ckpt)?.extra;
        let data_path = a
            .data
            .clone()
            .or_else(|| extra["data"].as_str().map(PathBuf::from))
            .unwrap_or_else(default_corpus);
        let val_frac = a
            .val_frac
            .or_else(|| extra["val_frac"].as_f64())
            .unwrap_or(0.1);
        let chars = ckpt
            .vocab
            .clone()
            .ok_or_else(|| anyhow!("{}: the checkpoint has no vocabulary", path.display()))?;
        let vocab = Vocab::from_chars(chars)?;
        let text = read_corpus(&data_path)?;
        let ids = vocab
            .encode(&text)
            .with_context(|| format!("'{}' does not fit the checkpoint", data_path.display()))?;
        let (tr, va) = split_checked(&ids, val_frac)?;
        let explicit = a.epochs.is_some() || a.max_steps.is_some() || a.max_minutes.is_some();
        let b = if explicit {
            Some(budget(a, None)?)
        } else {
            None
        };
        let mut run = on(backend);
        if let Some(b) = b {
            run = run.budget(b);
        }
        let t = charlm_train::resume(run, ckpt, tr.to_vec(), va.to_vec())?;
        (t, vocab, data_path)
    } else {
        let data_path = a.data.clone().unwrap_or_else(default_corpus);
        let (text, vocab) = load_corpus(&data_path)?;
        let ids = vocab.encode(&text)?;
        let val_frac = a.val_frac.unwrap_or(0.1);
        let (cfg, b) = plan(a, vocab.len())?;
        let (tr, va) = split_checked(&ids, val_frac)?;
        let extra = json!({
            "data": data_path.display().to_string(),
            "val_frac": val_frac,
            "preset": a.preset.name(),
            "threads": threads,
        });
        if dir.join(LATEST).exists() {
            bail!(
                "'{}' already holds a run (latest.safetensors): continue it with --resume, or \
                 choose another --checkpoint-dir",
                dir.display()
            );
        }
        let run = on(backend).budget(b).extra(extra);
        let t = charlm_train::start(
            run,
            cfg,
            tr.to_vec(),
            va.to_vec(),
            Some(vocab.chars().to_vec()),
        )?;
        (t, vocab, data_path)
    })
}

/// The one line that opens a run: data, model, batch, optimizer, threads, device.
fn header(
    a: &Args,
    trainer: &Trainer,
    data_path: &Path,
    vocab: &Vocab,
    threads: usize,
    ranks: Option<&crate::ranks::Ranks>,
) -> String {
    let cfg = &trainer.state.config;
    let m = &cfg.model;
    format!(
        "recur train: {} ({} chars: {} train, {} validation; vocabulary {}), {} {}x{}{}{}, {} parameters, B={} T={}, {} lr {}{}{}, clip {}, {} thread(s){} on {}{}{}",
        data_path.display(),
        fmt_chars((trainer.task.val_ids().len() + trainer.task.batches() as usize * cfg.batch_size * cfg.seq_length) as u64),
        fmt_chars(trainer.task.batches() * (cfg.batch_size * cfg.seq_length) as u64),
        fmt_chars(trainer.task.val_ids().len() as u64),
        vocab.len(),
        m.rnn.cell.name(),
        m.rnn.num_layers,
        m.rnn.hidden_size,
        match (m.embed_dim, m.tie_weights) {
            (0, _) => String::new(),
            (e, false) => format!(", embedding {e}"),
            (e, true) => format!(", embedding {e} tied to the decoder"),
        },
        regularisers(&m.rnn),
        trainer.model.num_params(),
        cfg.batch_size,
        cfg.seq_length,
        cfg.optim.name(),
        cfg.lr,
        match &cfg.schedule {
            Some(Schedule::Cosine { warmup, floor }) => {
                format!(" (cosine to x{floor}, warm-up {warmup} steps)")
            }
            Some(Schedule::Plateau {
                factor,
                patience,
                floor,
                warmup,
            }) => format!(
                " (x{factor} after {patience} evaluations without a new best, down to x{floor}; \
                 warm-up {warmup} steps)"
            ),
            _ if cfg.lr_decay < 1.0 => {
                format!(" (x{} every {} steps)", cfg.lr_decay, cfg.lr_decay_every)
            }
            _ => String::new(),
        },
        averaging(cfg.ema),
        cfg.grad_clip,
        threads,
        ranks.map_or(String::new(), |r| format!(" x {} MPI ranks", r.size())),
        trainer.device(),
        match trainer.precision() {
            recur::Precision::F32 => String::new(),
            p => format!(" in {p}"),
        },
        if a.run.resume { format!(", resumed at step {}", trainer.state.step) } else { String::new() },
    )
}

/// The end of a run: why it stopped, where it stands, where its files are (JSON with --json).
fn report(trainer: &Trainer, outcome: StopReason, dir: &Path, json_mode: bool) -> Result<()> {
    let st = &trainer.state;
    let history = &st.history;
    let reason = outcome.describe();
    let last_val = history.last().and_then(|r| r.val_loss);
    let elapsed = st.elapsed_secs;
    if json_mode {
        let j = json!({
            "outcome": reason,
            "steps": st.step,
            "epoch": st.step as f64 / trainer.task.batches() as f64,
            "chars_seen": st.items_seen,
            "elapsed_secs": elapsed,
            "val_loss": last_val,
            "val_bpc": last_val.map(|v| v / std::f64::consts::LN_2),
            "best_val_loss": st.best_val,
            "best_step": st.best_step,
            "checkpoint_dir": dir.display().to_string(),
        });
        writeln!(std::io::stdout().lock(), "{j}")?;
    } else {
        let mut o = std::io::stdout().lock();
        writeln!(
            o,
            "done: {reason} after {} steps ({} chars, {}).",
            st.step,
            fmt_chars(st.items_seen),
            fmt_duration(elapsed)
        )?;
        if let (Some(b), Some(s)) = (st.best_val, st.best_step) {
            writeln!(
                o,
                "best validation loss {:.4} nats/char ({:.4} bits/char) at step {s}",
                b,
                b / std::f64::consts::LN_2
            )?;
        }
        if outcome == StopReason::Stopped {
            writeln!(
                o,
                "saved {}; continue with: recur train --resume --checkpoint-dir {}",
                dir.join(LATEST).display(),
                dir.display()
            )?;
        }
        writeln!(
            o,
            "checkpoints: {} and {}; log: {}; plots: {} and {}",
            dir.join(BEST).display(),
            dir.join(LATEST).display(),
            dir.join(LOG).display(),
            dir.join(crate::charlm_common::PLOT_PNG).display(),
            dir.join(crate::charlm_common::PLOT_SVG).display(),
        )?;
    }
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    crate::ranks::run(|ranks| train(a, ranks))
}

fn train(a: Args, ranks: Option<&crate::ranks::Ranks>) -> Result<()> {
    // rank 0 alone prints, logs, plots and writes checkpoints
    let root = crate::ranks::root(ranks);
    let threads = a.dev.set_threads()?;
    if a.sample_length > 0 {
        positive("--sample-temperature", a.sample_temperature)?;
    }
    let dir = a.run.dir("checkpoints");
    let device = crate::device::open(a.dev.device)?;
    // held until the run ends: a second run on this directory is refused
    let _lock = crate::ranks::lock_run_dir(ranks, &dir)?;

    let (mut trainer, vocab, data_path) = open_run(&a, &*device, threads, ranks, &dir)?;

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // First Ctrl-C (or SIGTERM, SIGHUP): finish the current step, save, exit cleanly.
        // Second: exit at once (the checkpoints on disk are whole either way: they are written
        // atomically, and a temporary file left by a write cut short is removed by the next run).
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        })
        .context("installing the Ctrl-C/SIGTERM/SIGHUP handler")?;
    }

    if root {
        crate::ranks::say_line(&header(&a, &trainer, &data_path, &vocab, threads, ranks));
    }
    let cfg = trainer.state.config.clone();
    let bar = progress_bar(a.quiet || !root);
    let mut io_err: Option<anyhow::Error> = None;
    let model = trainer.model.clone();
    let outcome = trainer.run(&stop, &mut |ev: &Event| {
        if !root {
            return;
        }
        let written = match ev {
            Event::Step(s) => {
                let (pos, msg) = step_progress(s, &cfg);
                bar.set_position(pos);
                bar.set_message(msg);
                Ok(())
            }
            Event::Log { history, .. } => write_log(&dir, history, cfg.ema > 0.0),
            Event::Eval {
                row,
                history,
                best,
                last,
                params,
            } => {
                let mut text = eval_text(row, *best, *last);
                if a.sample_length > 0 {
                    let seed = cfg.seed ^ row.step.wrapping_mul(0x9E37_79B9);
                    let s = print_sample_text(
                        &model,
                        params,
                        &vocab,
                        a.sample_length,
                        a.sample_temperature,
                        seed,
                    )
                    .unwrap_or_else(|e| format!("(no sample: {e})"));
                    text.push_str(&format!(
                        "--- sample (temperature {}) ---\n{}\n---\n",
                        a.sample_temperature, s
                    ));
                }
                let printed = bar.suspend(|| {
                    if a.json {
                        std::io::stderr().write_all(text.as_bytes())
                    } else {
                        let mut o = std::io::stdout().lock();
                        o.write_all(text.as_bytes()).and_then(|_| o.flush())
                    }
                });
                // the log and the chart are written even when printing failed
                let logged = write_log(&dir, history, cfg.ema > 0.0);
                let plotted = crate::charlm_common::write_plot(&dir, history);
                printed
                    .map_err(anyhow::Error::from)
                    .and(logged)
                    .and(plotted)
            }
        };
        if let Err(e) = written {
            io_err.get_or_insert(e);
        }
    });
    bar.finish_and_clear();
    if let Some(e) = io_err {
        return Err(e);
    }
    let outcome = match outcome? {
        StopReason::Diverged { step, what, value } => {
            let kept = match trainer.state.last_eval_step {
                Some(s) => format!(
                    "the last good checkpoint (step {s}) is kept in '{}'",
                    dir.join(LATEST).display()
                ),
                None => "no checkpoint had been written yet".to_string(),
            };
            let why = StopReason::Diverged { step, what, value }.describe();
            bail!("{why}: training stopped; {kept}");
        }
        o => o,
    };
    if !root {
        return Ok(());
    }
    if let Some(r) = ranks {
        let (n, mean) = r.reduced();
        let per_step = trainer.state.elapsed_secs / trainer.state.step.max(1) as f64;
        crate::ranks::say!(
            "MPI: {n} float32 sums (gradients, carried states), mean {:.2} ms on rank 0 ({:.1}% \
             of a step's {:.1} ms, waiting for the other ranks included)",
            mean * 1e3,
            100.0 * mean / per_step,
            per_step * 1e3
        );
    }
    report(&trainer, outcome, &dir, a.json)
}

/// The progress bar on stderr (hidden with --quiet).
fn progress_bar(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr_with_hz(4));
    pb.set_style(
        ProgressStyle::with_template("{bar:24.cyan/blue} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb
}

/// The bar's position (of 1000: the larger of the steps' and the time budget's share done) and
/// its message after a step.
fn step_progress(s: &StepInfo, cfg: &TrainConfig) -> (u64, String) {
    let frac_steps = s.total_steps.map(|t| s.step as f64 / t as f64);
    let frac_time = s.budget_secs.map(|b| s.elapsed_secs / b);
    let frac = frac_steps
        .unwrap_or(0.0)
        .max(frac_time.unwrap_or(0.0))
        .min(1.0);
    let steps_per_sec = s.items_per_sec / (cfg.batch_size * cfg.seq_length) as f64;
    let eta_steps = s
        .total_steps
        .map(|t| t.saturating_sub(s.step) as f64 / steps_per_sec.max(1e-9));
    let eta_time = s.budget_secs.map(|b| b - s.elapsed_secs);
    let eta = match (eta_steps, eta_time) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    let msg = format!(
        "step {}{} epoch {:.2} loss {:.3} {:.0} chars/s ETA {}",
        s.step,
        s.total_steps.map(|t| format!("/{t}")).unwrap_or_default(),
        s.epoch,
        s.loss,
        s.items_per_sec,
        eta.map(fmt_duration).unwrap_or_else(|| "-".into())
    );
    ((frac * 1000.0) as u64, msg)
}

/// The lines printed after an evaluation.
fn eval_text(row: &LogRow, best: bool, last: bool) -> String {
    let mut text = format!(
        "step {} (epoch {:.2}, {} chars, {}): train loss {:.4}",
        row.step,
        row.epoch,
        fmt_chars(row.items_seen),
        fmt_duration(row.elapsed_secs),
        row.train_loss
    );
    if let Some(v) = row.val_loss {
        text.push_str(&format!(
            ", val loss {:.4} nats/char = {:.4} bits/char{}",
            v,
            v / std::f64::consts::LN_2,
            if best { " (best)" } else { "" }
        ));
    }
    if let Some(raw) = row.raw_val_loss {
        text.push_str(&format!(" (moving average; raw weights {raw:.4})"));
    }
    if last {
        text.push_str(" [final]");
    }
    text.push('\n');
    text
}

/// The split, with the errors a user can act on.
fn split_checked(ids: &[u32], val_frac: f64) -> Result<(&[u32], &[u32])> {
    if !(0.0..1.0).contains(&val_frac) {
        bail!("--val-frac must be in [0, 1), got {val_frac}");
    }
    let (tr, va) = data::split(ids, val_frac);
    if val_frac > 0.0 && va.len() < 2 {
        bail!(
            "--val-frac {val_frac} leaves {} validation character(s) of {}; at least 2 are needed",
            va.len(),
            ids.len()
        );
    }
    Ok((tr, va))
}

/// ", dropout 0.2 (locked), output dropout 0.1, weight drop 0.3": the stack's regularisers that
/// are on, for the run's first line.
fn regularisers(r: &StackConfig) -> String {
    let mut s = String::new();
    for (p, what) in [
        (r.dropout_input, "input dropout"),
        (r.dropout, "dropout"),
        (r.dropout_output, "output dropout"),
    ] {
        if p > 0.0 {
            s += &format!(", {what} {p}");
            if r.dropout_mode != DropoutMode::Step {
                s += &format!(" ({})", r.dropout_mode.name());
            }
        }
    }
    if r.weight_drop > 0.0 {
        s += &format!(", weight drop {}", r.weight_drop);
    }
    s
}

/// ", weights averaged (decay 0.999)" when the run keeps a moving average, for the first line.
fn averaging(decay: f64) -> String {
    if decay > 0.0 {
        format!(", weights averaged (decay {decay})")
    } else {
        String::new()
    }
}
