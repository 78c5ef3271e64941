//! `recur task adding|copy|ball`: train a cell on a long-memory task and compare it with the
//! task's baseline; progress on stderr, the result on stdout (or `--json`), a learning-curve chart,
//! and for the ball the true and predicted paths. The tasks and the training loop are
//! `recur_apps::tasks`; this file parses, reports and draws.

use crate::args::{DeviceArgs, Optimizer, RunDir};
use crate::plot::{write_chart, Chart, Legend, Series};
use crate::values::{choice, Cell};
use anyhow::{bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use recur::cell::CellKind;
use recur::checkpoint;
use recur::engine::Backend;
use recur::stack::StackConfig;
use recur::train::{Run, StopReason, BEST, LATEST};
use recur_apps::tasks::train::{
    adding_gradflow, predict, resume, train, Event, TrainResult, TrainSpec,
};
use recur_apps::tasks::{Task, TaskKind};
use recur_study::gradflow::GradflowResult;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `--carry-gate-bias`'s default: the carry gates start at sigmoid(3) = 0.95. With it, the
/// default learning rate (2e-3) and steps (5,000), LSTM and GRU solve adding at T = 100 and
/// the tanh RNN does not (docs/long-memory.md, "What a plain `recur task adding` shows").
const CARRY_GATE_BIAS: f64 = 3.0;

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
#[command(mut_arg("checkpoint_dir", |a| a.help(
    "Where the run goes: the charts (curve.*, paths.*, gradflow.*) and each cell's checkpoints \
     in <dir>/<cell>/ (best.safetensors, latest.safetensors) [default: task-<task>-<cells>-<T>]"
).alias("out")))]
#[command(mut_arg("resume", |a| a.help(
    "Continue each cell's run saved in --checkpoint-dir where it stopped (the same flags; \
     --max-steps and --max-minutes may be raised)"
)))]
#[command(mut_arg("learning_rate", |a| a.default_value("2e-3")))]
#[command(mut_arg("threads", |a| a.help(
    "Threads for each cell's matrix products [default: all cores for one cell, 1 each for \
     several cells training side by side]"
)))]
struct Common {
    /// T: adding: sequence length; copy: delay between the symbols and their recall; ball: frames.
    /// Default 100 (adding), 20 (copy), 50 (ball).
    #[arg(long = "seq-length", visible_alias = "len")]
    len: Option<usize>,
    /// The recurrent cell; several, comma-separated, train side by side (one thread each) and
    /// share one learning-curve chart.
    #[arg(long, value_parser = choice::<Cell>(), value_delimiter = ',', default_value = "lstm")]
    cell: Vec<Cell>,
    /// Hidden units per layer.
    #[arg(long = "rnn-size", visible_alias = "hidden", default_value_t = 64)]
    rnn_size: usize,
    /// Stacked recurrent layers.
    #[arg(long = "num-layers", visible_alias = "layers", default_value_t = 1)]
    num_layers: usize,
    #[command(flatten)]
    precision: crate::args::TrainPrecisionArgs,
    #[command(flatten)]
    opt: Optimizer,
    /// Sequences per step.
    #[arg(long = "batch-size", visible_alias = "batch", default_value_t = 32)]
    batch_size: usize,
    /// Stop after this many optimizer steps.
    #[arg(long, alias = "steps", default_value_t = 5000)]
    max_steps: usize,
    /// Stop after this many minutes of training (whichever of this and --max-steps comes first).
    #[arg(long, alias = "minutes")]
    max_minutes: Option<f64>,
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
    /// Added at initialization to the bias of the gate that carries the state (LSTM: forget
    /// gate f, GRU: update gate z; the tanh RNN has none): with f, z near 1 the gradient reaches
    /// the start of a long sequence from the first step (see `recur gradflow --gate-biases`).
    /// 0 = PyTorch's initialization.
    #[arg(long, visible_alias = "forget-bias", default_value_t = CARRY_GATE_BIAS, allow_negative_numbers = true)]
    carry_gate_bias: f64,
    /// Adding only: after training, measure the gradient flow (||dL/dh_t|| / ||dL/dh_T|| against
    /// the distance from the loss) through the trained and the initial weights on this many fresh
    /// sequences, and chart it as gradflow.* in the run directory. 0 = off.
    #[arg(long, default_value_t = 0)]
    gradflow: usize,
    /// Print one JSON object per cell (one per line) on stdout instead of the summary.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    run: RunDir,
    #[command(flatten)]
    dev: DeviceArgs,
}

/// Gradient flow through the trained and the initial weights of each cell (adding only, with
/// `--gradflow N`), and its chart (added to `files`).
fn gradflow(
    task: &Task,
    cells: &[CellKind],
    results: &[TrainResult],
    c: &Common,
    len: usize,
    dir: &Path,
    files: &mut Vec<PathBuf>,
) -> Result<Vec<(GradflowResult, GradflowResult)>> {
    let mut flows = Vec::new();
    if c.gradflow == 0 {
        return Ok(flows);
    }
    {
        for res in results {
            let seed = c.seed ^ 0x6F10;
            let trained = adding_gradflow(task, &res.model, &res.params, c.gradflow, seed)?;
            let initial = adding_gradflow(task, &res.model, &res.initial, c.gradflow, seed)?;
            flows.push((trained, initial));
        }
        let mut chart = Chart::new(
            format!(
                "adding T={len}: gradient flow, trained (lines) and initial (dots) weights, {} sequences",
                c.gradflow
            ),
            "distance from the loss, T - t (steps)",
            "||dL/dh_t|| / ||dL/dh_T||",
        )
        .with_log_y(true)
        .with_legend(Legend::LowerLeft);
        let palette = [[0, 114, 178], [213, 94, 0], [0, 158, 115], [204, 121, 167]];
        for (i, (cell, (tr, ini))) in cells.iter().zip(&flows).enumerate() {
            let col = palette[i % palette.len()];
            let pts = |v: &[f64]| v.iter().enumerate().map(|(k, &r)| (k as f64, r)).collect();
            chart.push(
                Series::line(format!("{} trained", cell.name()), pts(&tr.rel)).with_color(col),
            );
            chart.push(
                Series::dots(format!("{} initial", cell.name()), pts(&ini.rel)).with_color(col),
            );
        }
        files.extend(write_chart(&chart, &dir.join("gradflow"))?);
    }
    Ok(flows)
}

/// What the flags ask for, checked.
struct Plan {
    kind: TaskKind,
    task: Task,
    len: usize,
    cells: Vec<CellKind>,
    budget: Option<Duration>,
    /// The run directory, and each cell's checkpoint directory in it.
    dir: PathBuf,
    cell_dirs: Vec<PathBuf>,
}

impl Plan {
    fn of(kind: TaskKind, c: &Common) -> Result<Plan> {
        let len = c.len.unwrap_or(match kind {
            TaskKind::Adding => 100,
            TaskKind::Copy => 20,
            TaskKind::Ball => 50,
        });
        let task = Task::new(kind, len)?;
        let cells: Vec<CellKind> = c.cell.iter().map(|k| k.kind()).collect();
        if c.rnn_size == 0
            || c.num_layers == 0
            || c.batch_size == 0
            || c.eval_every == 0
            || c.eval_size == 0
        {
            bail!(
                "--rnn-size, --num-layers, --batch-size, --eval-every and --eval-size must be at least 1"
            );
        }
        c.opt.check()?;
        if !(c.grad_clip >= 0.0) {
            bail!("--grad-clip must be 0 or positive, got {}", c.grad_clip);
        }
        if !c.carry_gate_bias.is_finite() {
            bail!(
                "--carry-gate-bias must be a finite number, got {}",
                c.carry_gate_bias
            );
        }
        let budget = match c.max_minutes {
            Some(m) if !(m > 0.0) || !m.is_finite() => {
                bail!("--max-minutes must be a positive number, got {m}")
            }
            Some(m) => Some(Duration::from_secs_f64(m * 60.0)),
            None => None,
        };
        if c.gradflow > 0 && (kind != TaskKind::Adding || c.num_layers != 1) {
            bail!("--gradflow is measured on the adding problem with one layer");
        }
        let names: Vec<&str> = cells.iter().map(|k| k.name()).collect();
        let dir = c
            .run
            .dir(format!("task-{}-{}-{len}", kind.name(), names.join("-")));
        let cell_dirs: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
        for d in &cell_dirs {
            let latest = d.join(LATEST);
            if c.run.resume && !latest.exists() {
                bail!("--resume: no run to continue at '{}'", latest.display());
            }
            if !c.run.resume && latest.exists() {
                bail!(
                    "'{}' already holds a run: continue it with --resume, or choose another \
                     --checkpoint-dir",
                    d.display()
                );
            }
        }
        Ok(Plan {
            kind,
            task,
            len,
            cells,
            budget,
            dir,
            cell_dirs,
        })
    }

    /// The training of one cell.
    fn spec(&self, c: &Common, cell: CellKind) -> TrainSpec {
        TrainSpec {
            task: self.task.clone(),
            rnn: StackConfig::new(cell, 0, c.rnn_size).with_layers(c.num_layers),
            optim: c.opt.optim.kind(0.0),
            lr: c.opt.learning_rate,
            batch: c.batch_size,
            max_steps: c.max_steps,
            budget: self.budget,
            clip: c.grad_clip,
            eval_every: c.eval_every,
            eval_size: c.eval_size,
            seed: c.seed,
            carry_gate_bias: c.carry_gate_bias,
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    crate::ranks::run(|ranks| run_task(a, ranks))
}

fn run_task(a: Args, ranks: Option<&crate::ranks::Ranks>) -> Result<()> {
    let (kind, c) = match a.task {
        Which::Adding(c) => (TaskKind::Adding, c),
        Which::Copy(c) => (TaskKind::Copy, c),
        Which::Ball(c) => (TaskKind::Ball, c),
    };
    let plan = Plan::of(kind, &c)?;
    if ranks.is_some() && plan.cells.len() > 1 {
        bail!(
            "under MPI, train one cell at a time (e.g. --cell lstm), not {}",
            plan.cells.len()
        );
    }
    // rank 0 alone prints, charts and writes checkpoints
    let root = crate::ranks::root(ranks);
    // held until every cell is trained: a second run on this directory is refused
    let _lock = crate::ranks::lock_run_dir(ranks, &plan.dir)?;
    // opened once here, so that a missing device is reported before any work
    let backend = crate::device::open(c.dev.device)?;
    let threads = match (c.dev.threads, plan.cells.len()) {
        (Some(_), _) | (None, 1) => c.dev.threads()?,
        (None, _) => 1,
    };
    recur::set_threads(threads);

    // Ctrl-C stops training cleanly: the results so far are reported and charted, and each
    // cell's latest checkpoint holds its run.
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second handler cannot be installed (e.g. in tests running several commands in one
        // process); training then simply runs to its limit.
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let results = train_cells(&plan, &c, &*backend, &stop, ranks)?;
    if !root {
        return Ok(());
    }

    let mut files = vec![];
    files.extend(learning_curve(
        &plan.task,
        &plan.cells,
        &results,
        &plan.dir.join("curve"),
    )?);
    if kind == TaskKind::Ball {
        for (cell, res) in plan.cells.iter().zip(&results) {
            let name = match plan.cells.len() {
                1 => "paths".to_string(),
                _ => format!("paths-{}", cell.name()),
            };
            files.extend(ball_paths(&plan.task, res, &plan.dir.join(name), c.seed)?);
        }
    }
    let flows = gradflow(
        &plan.task,
        &plan.cells,
        &results,
        &c,
        plan.len,
        &plan.dir,
        &mut files,
    )?;
    for d in &plan.cell_dirs {
        files.extend(
            [d.join(BEST), d.join(LATEST)]
                .into_iter()
                .filter(|p| p.exists()),
        );
    }
    report(&plan, &c, &results, &flows, &files)?;
    if results.iter().any(|r| r.reason == StopReason::Stopped) {
        crate::ranks::say!(
            "interrupted: '{}' holds the runs; continue with --resume",
            plan.dir.display()
        );
    }
    Ok(())
}

/// Trains every cell, side by side (each on its own threads), fresh or resumed from its
/// checkpoint directory; progress bars and evaluations on stderr. Under MPI ranks the one cell
/// trains data-parallel, rank 0 alone printing.
fn train_cells(
    plan: &Plan,
    c: &Common,
    backend: &dyn Backend,
    stop: &AtomicBool,
    ranks: Option<&crate::ranks::Ranks>,
) -> Result<Vec<TrainResult>> {
    let bars = MultiProgress::new();
    if let Some(r) = ranks {
        // one cell (checked by the caller): its run's sums cannot leave this thread
        let quiet = r.rank() != 0;
        if quiet {
            bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let run = Run::on(backend)
            .checkpoints(plan.cell_dirs[0].clone())
            .precision(c.precision.get())
            .collective(r.collective());
        let (cell, dir) = (plan.cells[0], &plan.cell_dirs[0]);
        return Ok(vec![train_cell(
            plan, c, cell, dir, run, &bars, quiet, stop,
        )?]);
    }
    let results: Vec<recur::Result<TrainResult>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (plan.cells.iter().zip(&plan.cell_dirs))
            .map(|(&cell, cell_dir)| {
                let bars = &bars;
                sc.spawn(move || {
                    let run = Run::on(backend)
                        .checkpoints(cell_dir.clone())
                        .precision(c.precision.get());
                    train_cell(plan, c, cell, cell_dir, run, bars, false, stop)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("training thread"))
            .collect()
    });
    Ok(results.into_iter().collect::<recur::Result<_>>()?)
}

/// Trains (or resumes) one cell as `run` says, with its progress bar among `bars`; `quiet`
/// prints no evaluations (a rank other than 0).
#[allow(clippy::too_many_arguments)]
fn train_cell(
    plan: &Plan,
    c: &Common,
    cell: CellKind,
    cell_dir: &Path,
    run: Run,
    bars: &MultiProgress,
    quiet: bool,
    stop: &AtomicBool,
) -> recur::Result<TrainResult> {
    let metric_name = plan.task.metric_name();
    let note = plan
        .task
        .baseline_formula()
        .map(|b| format!("{b:.4}"))
        .unwrap_or_else(|| "held-out".into());
    let (len, kind) = (plan.len, plan.kind);
    let bar = bars.add(
        ProgressBar::new(c.max_steps as u64).with_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} {elapsed}")
                .expect("valid template")
                .progress_chars("=> "),
        ),
    );
    bar.set_prefix(format!("{} T={len} {:8}", kind.name(), cell.name()));
    let spec = plan.spec(c, cell);
    let mut on_event = |ev: Event| {
        match ev {
            Event::Step { step, loss } => {
                bar.set_position(step as u64);
                bar.set_message(format!("loss {loss:.4}"));
            }
            Event::Eval(p) if !quiet => {
                let line = format!(
                    "{:8} step {:6}  {:7.1}s  train {:.5}  held-out {metric_name} {:.5}  (baseline {note})",
                    cell.name(),
                    p.step,
                    p.elapsed.as_secs_f64(),
                    p.train_metric,
                    p.metric
                );
                // bars draw only on a terminal; evaluations reach a redirected stderr too
                if bar.is_hidden() {
                    crate::ranks::say_line(&line);
                } else {
                    let _ = bars.println(line);
                }
            }
            Event::Eval(_) => {}
        }
        !stop.load(Ordering::SeqCst)
    };
    let r = if c.run.resume {
        checkpoint::load(&cell_dir.join(LATEST))
            .and_then(|ck| resume(&spec, run, ck, &mut on_event))
    } else {
        train(&spec, run, &mut on_event)
    };
    bar.finish_and_clear();
    r
}

/// The result of each cell on stdout: one JSON object a line (`--json`) or a summary.
fn report(
    plan: &Plan,
    c: &Common,
    results: &[TrainResult],
    flows: &[(GradflowResult, GradflowResult)],
    files: &[PathBuf],
) -> Result<()> {
    let (task, len, metric_name) = (&plan.task, plan.len, plan.task.metric_name());
    let mut out = std::io::stdout().lock();
    for (i, (cell, res)) in plan.cells.iter().zip(results).enumerate() {
        let metric = res.metric();
        let solved = task.solved(metric, res.baseline);
        let seconds = res.curve.last().map_or(0.0, |p| p.elapsed.as_secs_f64());
        // the first evaluation that met the task's criterion
        let first_solved = res
            .curve
            .iter()
            .find(|p| task.solved(p.metric, res.baseline))
            .map(|p| p.step);
        if c.json {
            // one object per cell, one per line
            writeln!(
                out,
                "{}",
                json!({
                    "task": plan.kind.name(), "cell": cell.name(), "len": len, "steps": res.steps,
                    "metric": metric, "baseline": res.baseline, "solved": solved,
                    "baseline_held_out": res.baseline_held_out,
                    "metric_name": metric_name, "baseline_formula": task.baseline_formula(),
                    "stopped_by": res.reason.name(), "seconds": seconds,
                    "hidden": c.rnn_size, "layers": c.num_layers, "optim": c.opt.optim.name(),
                    "lr": c.opt.learning_rate, "batch": c.batch_size, "seed": c.seed,
                    "carry_gate_bias": c.carry_gate_bias, "first_solved_step": first_solved,
                    "curve": res.curve.iter().map(|p| json!({"step": p.step, "train": p.train_metric, "metric": p.metric})).collect::<Vec<_>>(),
                    "gradflow": flows.get(i).map(|(t, ini)| json!({"trained_rel": t.rel, "initial_rel": ini.rel})),
                    "checkpoint_dir": plan.cell_dirs[i],
                    "files": files,
                })
            )?;
            continue;
        }
        writeln!(
            out,
            "{} T={len} {} H={} layers={}: {metric_name} {metric:.5} after {} steps ({seconds:.1} s; {})",
            plan.kind.name(),
            cell.name(),
            c.rnn_size,
            c.num_layers,
            res.steps,
            res.reason.describe()
        )?;
        writeln!(
            out,
            "  baseline {:.5} ({}; on the held-out set {:.5}); ratio {:.4}; solved: {}",
            res.baseline,
            if task.baseline_formula().is_some() {
                "closed form"
            } else {
                "held-out"
            },
            res.baseline_held_out,
            metric / res.baseline,
            match (solved, first_solved) {
                (true, Some(k)) => format!("yes (first met at step {k})"),
                (true, None) => "yes".to_string(),
                (false, Some(k)) => format!("no (met at step {k}, lost since)"),
                (false, None) => "no".to_string(),
            }
        )?;
        if let Some((t, ini)) = flows.get(i) {
            let at = |v: &[f64], k: usize| v.get(k).copied().unwrap_or(f64::NAN);
            let mut ks = vec![10.min(len), len / 2, len];
            ks.sort_unstable();
            ks.dedup();
            let fmt = |v: &[f64]| {
                ks.iter()
                    .map(|&k| format!("{k}: {:.2e}", at(v, k)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            writeln!(
                out,
                "  gradient flow ||dL/dh_t||/||dL/dh_T|| at distance {}; initial weights {}",
                fmt(&t.rel),
                fmt(&ini.rel)
            )?;
        }
    }
    if !c.json {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        writeln!(out, "wrote {}", names.join(", "))?;
    }
    Ok(())
}

/// Held-out metric against steps for each cell (and the training batches' for a single cell),
/// with the baseline as a flat line.
fn learning_curve(
    task: &Task,
    cells: &[CellKind],
    results: &[TrainResult],
    stem: &std::path::Path,
) -> Result<[PathBuf; 2]> {
    let names: Vec<&str> = cells.iter().map(|k| k.name()).collect();
    let mut chart = Chart::new(
        format!(
            "{} T={}: {} against steps ({})",
            task.kind.name(),
            task.len,
            task.metric_name(),
            names.join(", ")
        ),
        "optimizer steps",
        task.metric_name(),
    )
    .with_log_y(true)
    .with_legend(Legend::LowerLeft);
    let mut last = 1.0f64;
    for (cell, res) in cells.iter().zip(results) {
        let pts = |f: &dyn Fn(&recur_apps::tasks::train::EvalPoint) -> f64| {
            res.curve
                .iter()
                .map(|p| (p.step as f64, f(p)))
                .collect::<Vec<_>>()
        };
        if cells.len() == 1 {
            chart.push(Series::line("held-out", pts(&|p| p.metric)));
            chart.push(Series::dots("training batches", pts(&|p| p.train_metric)));
        } else {
            chart.push(Series::line(
                format!("{} held-out", cell.name()),
                pts(&|p| p.metric),
            ));
        }
        last = last.max(res.curve.last().map_or(1.0, |p| p.step as f64));
    }
    let b = results.first().map_or(f64::NAN, |r| r.baseline);
    chart.push(Series::line("baseline", vec![(0.0, b), (last, b)]).with_color([120, 120, 120]));
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
            res.model.cfg().rnn.cell.name()
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
    write_chart(&chart, stem).context("ball paths chart")
}
