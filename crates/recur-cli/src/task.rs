//! `recur task adding|copy|ball`: train a cell on a long-memory task and compare it with the
//! task's baseline; progress on stderr, the result on stdout (or `--json`), a learning-curve chart,
//! and for the ball the true and predicted paths. The tasks and the training loop are
//! `recur::tasks`; this file parses, reports and draws.

use crate::plot::{write_chart, Chart, Legend, Series};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use recur::cell::CellKind;
use recur::checkpoint::{save, Checkpoint};
use recur::optim::OptimKind;
use recur::stack::StackConfig;
use recur::tasks::train::{predict, train, Event, TrainResult, TrainSpec};
use recur::tasks::{Task, TaskKind};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    task: Which,
}

#[derive(clap::Subcommand)]
enum Which {
    /// The adding problem: sum the two marked values of a T-step sequence (MSE; baseline 0.167).
    #[command(allow_negative_numbers = true)]
    Adding(Common),
    /// The copy task: reproduce 10 symbols after T blanks (cross-entropy; baseline 10 ln 8/(T+20)).
    #[command(allow_negative_numbers = true)]
    Copy(Common),
    /// The bouncing ball: predict the next position (MSE; baseline: constant velocity).
    #[command(allow_negative_numbers = true)]
    Ball(Common),
}

#[derive(clap::Args)]
struct Common {
    /// T: adding: sequence length; copy: delay between the symbols and their recall; ball: frames.
    /// Default 100 (adding), 20 (copy), 50 (ball).
    #[arg(long)]
    len: Option<usize>,
    /// Cell: rnn (= rnn_tanh), rnn_relu, lstm or gru.
    #[arg(long, default_value = "lstm")]
    cell: String,
    /// Hidden units.
    #[arg(long = "rnn-size", visible_alias = "hidden", default_value_t = 64)]
    rnn_size: usize,
    /// Stacked layers.
    #[arg(long, default_value_t = 1)]
    num_layers: usize,
    /// Optimizer: sgd, adagrad, rmsprop or adam.
    #[arg(long, default_value = "adam")]
    optim: String,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Sequences per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Optimizer steps.
    #[arg(long, default_value_t = 2000)]
    steps: usize,
    /// Time budget in minutes (stops at whichever of --steps and this comes first).
    #[arg(long)]
    minutes: Option<f64>,
    /// Clip the gradient's global norm to this (0 = off).
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    /// Evaluate on the held-out set every this many steps.
    #[arg(long, default_value_t = 100)]
    eval_every: usize,
    /// Held-out sequences.
    #[arg(long, default_value_t = 512)]
    eval_size: usize,
    /// Seed for weights, data and the held-out set.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Chart stem: writes <stem>.png and <stem>.svg (ball: also <stem>-paths.*).
    /// Default: task-<task>-<cell>-<len>.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also save the trained model as a checkpoint here.
    #[arg(long)]
    save: Option<PathBuf>,
    /// Print one JSON object on stdout instead of the summary.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let (kind, c) = match a.task {
        Which::Adding(c) => (TaskKind::Adding, c),
        Which::Copy(c) => (TaskKind::Copy, c),
        Which::Ball(c) => (TaskKind::Ball, c),
    };
    let len = c.len.unwrap_or(match kind {
        TaskKind::Adding => 100,
        TaskKind::Copy => 20,
        TaskKind::Ball => 50,
    });
    let task = Task::new(kind, len).map_err(anyhow::Error::msg)?;
    let cell = CellKind::parse(&c.cell).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown cell '{}' (expected rnn, rnn_relu, lstm or gru)",
            c.cell
        )
    })?;
    let optim = OptimKind::parse(&c.optim, 0.0).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown optimizer '{}' (expected sgd, adagrad, rmsprop or adam)",
            c.optim
        )
    })?;
    if c.rnn_size == 0 || c.num_layers == 0 || c.batch == 0 || c.eval_every == 0 || c.eval_size == 0
    {
        bail!("--rnn-size, --num-layers, --batch, --eval-every and --eval-size must be at least 1");
    }
    if !(c.lr > 0.0) || !c.lr.is_finite() {
        bail!("--lr must be a positive number, got {}", c.lr);
    }
    if !(c.grad_clip >= 0.0) {
        bail!("--grad-clip must be 0 or positive, got {}", c.grad_clip);
    }
    let budget = match c.minutes {
        Some(m) if !(m > 0.0) || !m.is_finite() => {
            bail!("--minutes must be a positive number, got {m}")
        }
        Some(m) => Some(Duration::from_secs_f64(m * 60.0)),
        None => None,
    };
    let stem = c
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("task-{}-{}-{len}", kind.name(), cell.name())));
    crate::plot::check_dir(&crate::plot::outputs(&stem)[0])?;
    if let Some(p) = &c.save {
        crate::plot::check_dir(p)?;
    }
    let spec = TrainSpec {
        task: task.clone(),
        rnn: StackConfig::new(cell, 0, c.rnn_size).with_layers(c.num_layers),
        optim,
        lr: c.lr,
        batch: c.batch,
        max_steps: c.steps,
        budget,
        clip: c.grad_clip,
        eval_every: c.eval_every,
        eval_size: c.eval_size,
        seed: c.seed,
    };

    // Ctrl-C stops training cleanly: the result so far is reported, charted and saved.
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second handler cannot be installed (e.g. in tests running several commands in one
        // process); training then simply runs to its limit.
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let bar = ProgressBar::new(c.steps as u64).with_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{} T={len} {}", kind.name(), cell.name()));
    let metric_name = task.metric_name();
    let mut baseline_note = task
        .baseline_formula()
        .map(|b| format!("{b:.4}"))
        .unwrap_or_else(|| "held-out".into());
    let res = train(&spec, &mut |ev| {
        match ev {
            Event::Step { step, loss } => {
                bar.set_position(step as u64);
                bar.set_message(format!("loss {loss:.4}"));
            }
            Event::Eval(p) => {
                let line = format!(
                    "step {:6}  {:7.1}s  train {:.5}  held-out {metric_name} {:.5}  (baseline {baseline_note})",
                    p.step,
                    p.elapsed.as_secs_f64(),
                    p.train_metric,
                    p.metric
                );
                // the bar draws only on a terminal; the evaluations reach a redirected stderr too
                if bar.is_hidden() {
                    eprintln!("{line}");
                } else {
                    bar.println(line);
                }
            }
        }
        !stop.load(Ordering::SeqCst)
    })
    .map_err(anyhow::Error::msg)?;
    bar.finish_and_clear();
    baseline_note = format!("{:.5}", res.baseline);
    let metric = res.metric();
    let solved = task.solved(metric, res.baseline);

    let mut files = Vec::new();
    files.extend(learning_curve(&task, cell, &res, &stem)?);
    if kind == TaskKind::Ball {
        files.extend(ball_paths(&task, &res, &stem, c.seed)?);
    }
    if let Some(path) = &c.save {
        let ckpt = Checkpoint {
            model: res.model.cfg.clone(),
            params: res.params.clone(),
            vocab: None,
            optimizer: None,
            train_state: Some(json!({"task": kind.name(), "len": len, "steps": res.steps})),
        };
        save(path, &ckpt)?;
        files.push(path.clone());
    }

    let mut out = std::io::stdout().lock();
    if c.json {
        writeln!(
            out,
            "{}",
            json!({
                "task": kind.name(), "cell": cell.name(), "len": len, "steps": res.steps,
                "metric": metric, "baseline": res.baseline, "solved": solved,
                "baseline_held_out": res.baseline_held_out,
                "metric_name": metric_name, "baseline_formula": task.baseline_formula(),
                "stopped_by": res.reason, "seconds": res.curve.last().map(|p| p.elapsed.as_secs_f64()),
                "hidden": c.rnn_size, "layers": c.num_layers, "optim": c.optim, "lr": c.lr,
                "batch": c.batch, "seed": c.seed,
                "curve": res.curve.iter().map(|p| json!({"step": p.step, "train": p.train_metric, "metric": p.metric})).collect::<Vec<_>>(),
                "files": files,
            })
        )?;
    } else {
        writeln!(
            out,
            "{} T={len} {} H={} layers={}: {metric_name} {metric:.5} after {} steps ({:.1} s, stopped by {})",
            kind.name(),
            cell.name(),
            c.rnn_size,
            c.num_layers,
            res.steps,
            res.curve.last().map_or(0.0, |p| p.elapsed.as_secs_f64()),
            res.reason
        )?;
        writeln!(
            out,
            "baseline {baseline_note} ({}; on the held-out set {:.5}); ratio {:.4}; solved: {}",
            if task.baseline_formula().is_some() {
                "closed form"
            } else {
                "held-out"
            },
            res.baseline_held_out,
            metric / res.baseline,
            if solved { "yes" } else { "no" }
        )?;
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        writeln!(out, "wrote {}", names.join(", "))?;
    }
    Ok(())
}

/// Held-out and training metric against steps, with the baseline as a flat line.
fn learning_curve(
    task: &Task,
    cell: CellKind,
    res: &TrainResult,
    stem: &std::path::Path,
) -> Result<[PathBuf; 2]> {
    let mut chart = Chart::new(
        format!(
            "{} T={} {}: {} against steps",
            task.kind.name(),
            task.len,
            cell.name(),
            task.metric_name()
        ),
        "optimizer steps",
        task.metric_name(),
    )
    .with_log_y(true)
    .with_legend(Legend::LowerLeft);
    let pts = |f: &dyn Fn(&recur::tasks::train::EvalPoint) -> f64| {
        res.curve
            .iter()
            .map(|p| (p.step as f64, f(p)))
            .collect::<Vec<_>>()
    };
    chart.push(Series::line("held-out", pts(&|p| p.metric)));
    chart.push(Series::dots("training batches", pts(&|p| p.train_metric)));
    let last = res.curve.last().map_or(1.0, |p| p.step as f64);
    chart.push(
        Series::line("baseline", vec![(0.0, res.baseline), (last, res.baseline)])
            .with_color([120, 120, 120]),
    );
    write_chart(&chart, stem)
}

/// Four held-out trajectories: the true path and the one-step-ahead predictions.
fn ball_paths(
    task: &Task,
    res: &TrainResult,
    stem: &std::path::Path,
    seed: u64,
) -> Result<[PathBuf; 2]> {
    let mut rng = recur::rng::Rng::new(seed ^ 0xBA11);
    let paths: Vec<Vec<[f64; 2]>> = (0..4).map(|_| task.ball_path(&mut rng)).collect();
    let batch = task.ball_batch(&paths);
    let pred = task.ball_predictions(&paths, &predict(&res.model, &res.params, &batch));
    let mut chart = Chart::new(
        format!(
            "ball: true paths (lines) and next-position predictions (dots), {}",
            res.model.cfg.rnn.cell
        ),
        "x",
        "y",
    )
    .with_equal_aspect(true);
    let palette = [[0, 114, 178], [213, 94, 0], [0, 158, 115], [204, 121, 167]];
    for (b, (p, g)) in paths.iter().zip(&pred).enumerate() {
        let col = palette[b % palette.len()];
        let truth = p.iter().map(|q| (q[0], q[1])).collect();
        let guess = g.iter().map(|q| (q[0], q[1])).collect();
        let name = if b == 0 { "true" } else { "" };
        chart.push(Series::line(name, truth).with_color(col));
        let name = if b == 0 { "predicted" } else { "" };
        chart.push(Series::dots(name, guess).with_color(col));
    }
    let mut name = stem.as_os_str().to_owned();
    name.push("-paths");
    let stem = PathBuf::from(name);
    write_chart(&chart, &stem).context("ball paths chart")
}
