//! `recur gradflow`: the norm of dL/dh_t against the distance from a loss at the last step, for
//! several cells and recurrent-weight scales; a table on stdout (or `--json`), the full curves as
//! CSV, and one chart (PNG and SVG). The measurement itself is `recur_study::gradflow`.

use crate::plot::{write_chart, Chart, Legend, Series};
use crate::values::{choice, Cell};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use recur::cell::CellKind;
use recur_study::gradflow::{gradflow, GradflowResult, GradflowSpec};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// The recurrent cells, comma-separated: one curve each.
    #[arg(
        long,
        value_parser = choice::<Cell>(),
        alias = "cells",
        value_delimiter = ',',
        default_value = "rnn_tanh,lstm,gru"
    )]
    cell: Vec<Cell>,
    /// Factors for weight_hh after the default initialization, comma-separated (e.g. 1,4).
    #[arg(long, default_value = "1")]
    scales: String,
    /// Biases added to the LSTM's forget gate and the GRU's update gate (bias_ih), comma-separated
    /// (0 = PyTorch's initialization; the Elman RNN ignores it).
    #[arg(long, default_value = "0")]
    gate_biases: String,
    /// T: sequence length; distances 0..=T are reported.
    #[arg(long, alias = "len", default_value_t = 100)]
    seq_length: usize,
    /// Hidden units.
    #[arg(long = "rnn-size", visible_alias = "hidden", default_value_t = 32)]
    rnn_size: usize,
    /// Input features per step (drawn N(0, 1)).
    #[arg(long, default_value_t = 4)]
    input_size: usize,
    /// Random sequences averaged over.
    #[arg(long, default_value_t = 16)]
    sequences: usize,
    /// Seed for weights and data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output stem: writes <stem>.csv, <stem>.png, <stem>.svg [default: gradflow, or none
    /// with --html].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the curves as one self-contained HTML page to FILE: the log-scale chart with a
    /// distance cursor (arrow keys), the values at each distance, and what they show (works
    /// offline).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

struct Curve {
    cell: CellKind,
    scale: f64,
    gate_bias: f64,
    res: GradflowResult,
}

impl Curve {
    fn label(&self) -> String {
        let mut s = self.cell.name().to_string();
        if self.scale != 1.0 {
            s += &format!(" W_hh x{}", self.scale);
        }
        if self.gate_bias != 0.0 {
            let g = if self.cell == CellKind::Lstm {
                "f"
            } else {
                "z"
            };
            s += &format!(" {g}-bias {:+}", self.gate_bias);
        }
        s
    }

    /// Geometric mean factor per step over the whole span: (rel_T)^(1/T).
    fn per_step(&self) -> f64 {
        let t = self.res.rel.len() - 1;
        self.res.rel[t].powf(1.0 / t as f64)
    }
}

pub fn run(a: Args) -> Result<()> {
    let cells: Vec<CellKind> = a.cell.iter().map(|c| c.kind()).collect();
    let scales = numbers("--scales", &a.scales)?;
    let gate_biases = numbers("--gate-biases", &a.gate_biases)?;
    if a.seq_length == 0 || a.rnn_size == 0 || a.input_size == 0 || a.sequences == 0 {
        bail!("--seq-length, --rnn-size, --input-size and --sequences must be at least 1");
    }
    let stem = match (&a.out, &a.html) {
        (Some(o), _) => Some(o.clone()),
        (None, None) => Some(PathBuf::from("gradflow")),
        (None, Some(_)) => None,
    };
    let mut files = Vec::new();
    if let Some(stem) = &stem {
        let csv = crate::plot::with_ext(stem, "csv");
        crate::plot::check_dir(&csv)?;
        files.push(csv);
        files.extend(crate::plot::outputs(stem));
    }
    if let Some(h) = &a.html {
        crate::plot::check_dir(h)?;
    }

    // every cell at every scale; the gated cells also at every gate bias
    let mut plan = Vec::new();
    for &scale in &scales {
        for &cell in &cells {
            let gated = matches!(cell, CellKind::Lstm | CellKind::Gru);
            for &gb in &gate_biases {
                if gated || gb == gate_biases[0] {
                    plan.push((cell, scale, if gated { gb } else { 0.0 }));
                }
            }
        }
    }
    let curves = measure(&a, plan)?;

    if let Some(h) = &a.html {
        crate::page::write(h, &page(&a, &curves)?)?;
        files.push(h.clone());
    }
    if let Some(stem) = &stem {
        write_csv(&files[0], &curves)?;
        write_chart(&chart(&a, &curves), stem)?;
    }

    let mut out = std::io::stdout().lock();
    if a.json {
        let cs: Vec<_> = curves
            .iter()
            .map(|c| {
                json!({"cell": c.cell.name(), "scale": c.scale, "gate_bias": c.gate_bias, "per_step_factor": c.per_step(),
                       "mean_norm": c.res.norm, "mean_rel_norm": c.res.rel})
            })
            .collect();
        writeln!(
            out,
            "{}",
            json!({"len": a.seq_length, "hidden": a.rnn_size, "input_size": a.input_size,
                   "sequences": a.sequences, "seed": a.seed, "curves": cs,
                   "files": files})
        )?;
        return Ok(());
    }
    print_table(&mut out, &a, &curves)?;
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    writeln!(out, "wrote {}", names.join(", "))?;
    Ok(())
}

/// The page of `recur gradflow --html`: page/gradflow.html with the curves embedded.
fn page(a: &Args, curves: &[Curve]) -> Result<String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cs: Vec<_> = curves
        .iter()
        .map(|c| {
            json!({"cell": c.cell.name(), "scale": c.scale, "gate_bias": c.gate_bias,
                   "label": c.label(), "rel": c.res.rel, "norm": c.res.norm})
        })
        .collect();
    let data = json!({"len": a.seq_length, "hidden": a.rnn_size, "input_size": a.input_size,
                      "sequences": a.sequences, "seed": a.seed,
                      "command": format!("recur {}", args.join(" ")), "curves": cs});
    crate::page::render(include_str!("page/gradflow.html"), &data)
}

/// The curves as one chart (PNG and SVG).
fn chart(a: &Args, curves: &[Curve]) -> Chart {
    let mut chart = Chart::new(
        format!(
            "Gradient flow: loss at step T = {}, H = {}, mean of {} sequences",
            a.seq_length, a.rnn_size, a.sequences
        ),
        "distance from the loss, T - t (steps)",
        "||dL/dh_t|| / ||dL/dh_T||",
    )
    .with_log_y(true)
    .with_legend(Legend::LowerLeft);
    for c in curves {
        let pts = c
            .res
            .rel
            .iter()
            .enumerate()
            .map(|(k, &v)| (k as f64, v))
            .collect();
        chart.push(Series::line(c.label(), pts));
    }
    chart
}

/// Every curve of the plan, with a progress bar over all sequences.
fn measure(a: &Args, plan: Vec<(CellKind, f64, f64)>) -> Result<Vec<Curve>> {
    let total = (plan.len() * a.sequences) as u64;
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "gradflow {msg:24} [{bar:30}] {pos}/{len} sequences {elapsed}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let mut curves = Vec::new();
    for (cell, scale, gate_bias) in plan {
        bar.set_message(format!("{} x{scale}", cell.name()));
        let spec = GradflowSpec {
            cell,
            input_size: a.input_size,
            hidden: a.rnn_size,
            t: a.seq_length,
            sequences: a.sequences,
            scale,
            gate_bias,
            seed: a.seed,
        };
        let res = gradflow(&spec, &mut |_| bar.inc(1))?;
        curves.push(Curve {
            cell,
            scale,
            gate_bias,
            res,
        });
    }
    bar.finish_and_clear();

    Ok(curves)
}

/// The curves as CSV: one row per curve and distance.
fn write_csv(csv: &Path, curves: &[Curve]) -> Result<()> {
    let mut text = String::from("cell,scale,gate_bias,distance,mean_norm,mean_rel_norm\n");
    for c in curves {
        for (k, (n, r)) in c.res.norm.iter().zip(&c.res.rel).enumerate() {
            text.push_str(&format!(
                "{},{},{},{k},{n:e},{r:e}\n",
                c.cell.name(),
                c.scale,
                c.gate_bias
            ));
        }
    }
    std::fs::write(csv, text).with_context(|| format!("cannot write {}", csv.display()))?;

    Ok(())
}

/// The relative norms at a few distances and the per-step factor, one row per curve.
fn print_table(out: &mut impl Write, a: &Args, curves: &[Curve]) -> Result<()> {
    writeln!(
        out,
        "||dL/dh_t|| / ||dL/dh_T|| (mean over {} sequences), loss at T = {}, H = {}, I = {}",
        a.sequences, a.seq_length, a.rnn_size, a.input_size
    )?;
    let ks: Vec<usize> = [0, 1, 5, 10, 25, 50, 100, 200, 500, 1000]
        .into_iter()
        .filter(|&k| k < a.seq_length)
        .chain(std::iter::once(a.seq_length))
        .collect();
    write!(out, "{:22}", "distance T - t:")?;
    for k in &ks {
        write!(out, " {k:>9}")?;
    }
    writeln!(out, " {:>10}", "per step")?;
    for c in curves {
        write!(out, "{:22}", c.label())?;
        for &k in &ks {
            write!(out, " {:>9.2e}", c.res.rel[k])?;
        }
        writeln!(out, " {:>10.4}", c.per_step())?;
    }
    Ok(())
}

/// Parses a comma-separated list of finite numbers.
fn numbers(flag: &str, s: &str) -> Result<Vec<f64>> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| anyhow::anyhow!("{flag}: '{p}' is not a finite number"))
        })
        .collect()
}
