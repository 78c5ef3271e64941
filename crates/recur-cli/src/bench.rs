//! `recur bench`: times one recurrent stack (inference or a training step), a full char-model
//! training step, or one large GEMM, with warm-up and the median of repeated samples.
//!
//! This is the measuring harness only: it builds inputs, calls the library and reads the clock.
//! It asserts nothing about speed (the side-by-side comparison with PyTorch is `bench/compare.py`),
//! and the numbers it prints are what it measured on this run, on this machine.

use crate::args::{DeviceArgs, PrecisionArgs, Shape};
use crate::bench_cuda::{self, StackShape};
use crate::values::{choice, Device, Mode};
use anyhow::{bail, Result};
use recur::cell::{CellKind, LayerInput};
use recur::model::{Input, Model, ModelConfig};
use recur::ops::gemm::set_threads;
use recur::ops::{gemm, Trans};
use recur::optim::{clip_grad_norm, OptimKind, Optimizer};
use recur::rng::Rng;
use recur::stack::{Stack, StackConfig};
use recur::Precision;
use serde_json::json;
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
#[command(mut_arg("rnn_size", |a| a.default_value("512").help(
    "H: hidden units per layer (the input size is H too)"
)))]
#[command(mut_arg("threads", |a| a.default_value("1").help(
    "Threads for the CPU's matrix products and per-step work"
)))]
#[command(mut_arg("device", |a| a.help(
    "Where the stack runs: cpu, or cuda (needs the `cuda` cargo feature; prints eager and \
     CUDA-graph times); with --charlm, where the char-model step runs"
)))]
pub struct Args {
    #[command(flatten)]
    shape: Shape,
    /// B: sequences per batch.
    #[arg(long = "batch-size", visible_alias = "batch", default_value_t = 32)]
    pub(crate) batch_size: usize,
    /// T: steps per sequence.
    #[arg(long, alias = "steps", default_value_t = 64)]
    pub(crate) seq_length: usize,
    /// P: an LSTM projection (`h = W_hr (o * tanh(c))`, PyTorch's proj_size) of this size, 0 for
    /// none; such stacks run the simple driver's fast kernels, the time loop split by batch rows
    /// over the threads (at least 4 rows a part).
    #[arg(long, default_value_t = 0)]
    proj_size: usize,
    /// What is timed: the forward pass, a training step (forward + backward, gradients of the
    /// weights and the inputs), or both.
    #[arg(long, value_parser = choice::<Mode>(), default_value = "train")]
    mode: Mode,
    #[command(flatten)]
    dev: DeviceArgs,
    /// Number format of the timed stack: bf16 times inference (--mode infer) with bf16 weights
    /// and states (the char-model step, --gemm and --fma-peak are float32).
    #[command(flatten)]
    precision: PrecisionArgs,
    /// Time the reference grid of shapes (LSTM, GRU and RNN at five (H, B, T) each, LSTM at two
    /// more) instead of one shape.
    #[arg(long)]
    grid: bool,
    /// Time a full char-model training step instead (vocab 65 one-hot, 2-layer LSTM 512,
    /// B = 32, T = 64, decoder, cross-entropy, clipping at 5, Adam); on cuda with --batch-size and
    /// --seq-length as given.
    #[arg(long)]
    charlm: bool,
    /// Time the CTC loss alone instead: forward and backward (the gradient with respect to the
    /// logits) at T = --seq-length, B = --batch-size, C = --classes, random digit strings of 1
    /// to 7 labels.
    #[arg(long)]
    ctc: bool,
    /// C for --ctc: the classes, blank included.
    #[arg(long, default_value_t = 11, requires = "ctc")]
    classes: usize,
    /// Time one square float32 GEMM of this size instead (the GEMM throughput on this machine).
    #[arg(long)]
    gemm: Option<usize>,
    /// Measure the float32 FMA ceiling of this machine instead: --threads threads running only
    /// independent vector fused multiply-adds (the hardware's limit, above any GEMM's).
    #[arg(long)]
    fma_peak: bool,
    /// Inference with the weights packed (and in bf16/int8 converted) once, as `eval`, `sample`
    /// and the streamer run, instead of at every forward.
    #[arg(long)]
    packed_once: bool,
    /// Measure every arithmetic ceiling of this machine instead (float32 FMA, bf16 and int8 dot
    /// products, AMX tiles; each with --threads threads and the median of --repeats), saying
    /// what the CPU lacks for the ones it cannot run.
    #[arg(long)]
    peak: bool,
    /// Time the stack under every schedule the fast driver can take (split of a step by batch
    /// rows or by hidden units; inference: the input product in chunks or in one product) and
    /// say which wins and what the driver's own choice costs against it.
    #[arg(long)]
    tune: bool,
    /// --tune: rounds over the candidates, each round timing every candidate once in turn; each
    /// candidate's figure is its median over the rounds, so that a drift of the machine's speed
    /// during the run does not pick the winner.
    #[arg(long, default_value_t = 3, requires = "tune")]
    tune_rounds: usize,
    /// Print which kernel each hot float32 operation runs on this CPU (the dispatch table:
    /// instruction set, per-step product, element-wise passes, transpositions) and time nothing.
    #[arg(long)]
    dispatch: bool,
    /// Untimed runs before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed samples; the median is reported.
    #[arg(long, alias = "iters", default_value_t = 7)]
    repeats: usize,
    /// Each sample repeats the work until it lasts at least this many milliseconds (cpu).
    #[arg(long, default_value_t = 50)]
    min_sample_ms: u64,
    /// cuda: batches up to this size (at most 8) run each forward step as one fused kernel;
    /// 0 uses cuBLAS plus the cell kernel for every step.
    #[arg(long, default_value_t = 8)]
    small_batch: usize,
    /// cuda: batches up to 8 (no projection, H <= 1024) run each layer's forward as one
    /// persistent launch (W_hh in shared memory across the steps) where the device allows it.
    #[arg(long)]
    persistent: bool,
    /// Print JSON on stdout: one object (one per line for --grid or cuda).
    #[arg(long)]
    pub(crate) json: bool,
}

/// CPU time consumed so far by all threads of this process, in seconds, where Linux reports it
/// (`/proc/self/task/*/schedstat`, nanoseconds on a CPU); `None` elsewhere. On a loaded machine
/// the wall clock counts time spent waiting for a core; this does not, so the two side by side
/// show how much the load distorted a sample.
fn cpu_seconds() -> Option<f64> {
    let mut ns = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let path = entry.ok()?.path().join("schedstat");
        let text = std::fs::read_to_string(path).ok()?;
        ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 * 1e-9)
}

/// The peak resident set size of this process so far, in KiB (`VmHWM` in `/proc/self/status`),
/// where Linux reports it; `None` elsewhere.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Medians over `repeats` samples (after `warmup` untimed calls) of the wall-clock time and the
/// process CPU time per call of `work`.
pub(crate) struct Timing {
    pub(crate) wall_s: f64,
    pub(crate) cpu_s: Option<f64>,
}

/// Calls slower than this get at most 3 samples (the same rule as `bench/torch_bench.py`).
const SLOW_CALL_S: f64 = 0.5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|x, y| x.total_cmp(y));
    v[v.len() / 2]
}

pub(crate) fn time_median(a: &Args, mut work: impl FnMut()) -> Timing {
    for _ in 0..a.warmup {
        work();
    }
    // How many calls make one sample last at least min_sample_ms (decided from one timed call).
    let t0 = Instant::now();
    work();
    let one = t0.elapsed().max(Duration::from_nanos(1));
    let min = Duration::from_millis(a.min_sample_ms);
    let iters = (min.as_secs_f64() / one.as_secs_f64()).ceil().max(1.0) as usize;
    // A call that takes over half a second (a badly loaded machine) gets at most 3 samples.
    let repeats = if one.as_secs_f64() > SLOW_CALL_S {
        a.repeats.clamp(1, 3)
    } else {
        a.repeats.max(1)
    };
    let mut wall = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..repeats {
        let c0 = cpu_seconds();
        let t = Instant::now();
        for _ in 0..iters {
            work();
        }
        wall.push(t.elapsed().as_secs_f64() / iters as f64);
        if let (Some(c0), Some(c1)) = (c0, cpu_seconds()) {
            cpu.push((c1 - c0) / iters as f64);
        }
    }
    Timing {
        wall_s: median(wall),
        cpu_s: (!cpu.is_empty()).then(|| median(cpu)),
    }
}

fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform_in(-1.0, 1.0) as f32).collect()
}

/// The one shape of the flags, or the reference grid.
fn shapes(a: &Args) -> Result<Vec<StackShape>> {
    if a.grid {
        return Ok(bench_cuda::reference_grid());
    }
    a.shape.check()?;
    if a.batch_size == 0 || a.seq_length == 0 {
        bail!("--batch-size and --seq-length must be at least 1");
    }
    Ok(vec![StackShape {
        cell: a.shape.cell.kind().name(),
        h: a.shape.rnn_size,
        b: a.batch_size,
        t: a.seq_length,
        layers: a.shape.num_layers,
    }])
}

pub fn run(a: Args) -> Result<()> {
    let threads = a.dev.threads()?;
    if a.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    let other = a.charlm || a.ctc || a.gemm.is_some() || a.fma_peak || a.peak;
    if a.grid && other {
        bail!("--grid times stacks (no --charlm, --gemm or --fma-peak)");
    }
    if a.tune && other {
        bail!("--tune times a stack's schedules (no --charlm, --gemm or --fma-peak)");
    }
    let precision = a.precision.get();
    if precision != Precision::F32 {
        if (other && !a.charlm) || a.dev.device == Device::Cuda {
            bail!(
                "--precision {precision} times a stack on the CPU, or in bf16 the char-model step \
                 (no --gemm, --ctc, --fma-peak, --peak or --device cuda)"
            );
        }
        if precision == Precision::Int8 && a.charlm {
            bail!(
                "--precision int8 times inference only: the char-model step trains (int8 does not)"
            );
        }
        if precision == Precision::Int8 && a.mode != Mode::Infer {
            bail!("--precision int8 times inference only (--mode infer): int8 does not train");
        }
    }
    if a.packed_once && (other || a.mode != Mode::Infer || a.dev.device == Device::Cuda) {
        bail!("--packed-once times a stack's inference on the CPU (--mode infer)");
    }
    if a.proj_size > 0 {
        if other || a.grid || a.tune || a.dev.device == Device::Cuda {
            bail!("--proj-size times one LSTM stack on the CPU (no --grid, --tune or --device cuda, nor another benchmark)");
        }
        if a.shape.cell.kind() != CellKind::Lstm || a.proj_size >= a.shape.rnn_size {
            bail!(
                "--proj-size needs --cell lstm and a size below --rnn-size ({})",
                a.shape.rnn_size
            );
        }
    }
    if (a.tune || a.dispatch) && a.dev.device == Device::Cuda {
        bail!("--tune and --dispatch are about the CPU's kernels (no --device cuda)");
    }
    match a.dev.device {
        Device::Cpu => {}
        Device::Cuda => {
            if a.gemm.is_some() || a.fma_peak || a.peak || a.ctc {
                bail!(
                    "--device cuda times the stack or the char-model step (no --gemm, \
                     --fma-peak or --ctc on the GPU)"
                );
            }
            if a.charlm {
                return charlm_on_cuda(&a);
            }
            let shapes = shapes(&a)?;
            return bench_cuda::run(
                shapes,
                a.mode,
                a.warmup,
                a.repeats,
                a.small_batch,
                a.persistent,
                a.json,
            );
        }
    }
    set_threads(threads);
    if a.dispatch {
        return print_dispatch(a.json);
    }
    if a.fma_peak {
        return run_fma_peak(&a, threads);
    }
    if a.peak {
        return run_peak(&a, threads);
    }
    if let Some(n) = a.gemm {
        return run_gemm(&a, n, threads);
    }
    if a.charlm {
        return run_charlm(&a, threads);
    }
    if a.ctc {
        return crate::bench_ctc::run(&a, a.classes, threads);
    }
    for s in shapes(&a)? {
        for &mode in a.mode.each() {
            if a.tune {
                tune_stack(&a, s, mode, threads)?;
            } else {
                run_stack(&a, s, mode, threads)?;
            }
        }
    }
    Ok(())
}

/// `--tune`: the shape under the driver's own schedule and under each forced one.
fn tune_stack(a: &Args, s: StackShape, mode: Mode, threads: usize) -> Result<()> {
    use recur::cell::schedule::{
        self, ChunkChoice as C, PanelChoice as P, Schedule, SplitChoice as S,
    };
    let mut candidates = vec![("auto".to_string(), Schedule::AUTO)];
    // in bf16, W_hh as float32 panels of the rounded weights or as bf16 panels
    let formats: &[(P, &str)] = if a.precision.get() == Precision::Bf16 {
        &[(P::F32, ", f32 panels"), (P::Bf16, ", bf16 panels")]
    } else {
        &[(P::Auto, "")]
    };
    for (name, split) in [("rows", S::Rows), ("units", S::Units)] {
        for &(panels, fmt) in formats {
            if mode == Mode::Train {
                candidates.push((
                    format!("{name}{fmt}"),
                    Schedule {
                        split,
                        chunks: C::Off,
                        panels,
                    },
                ));
            } else {
                let both = [(C::Off, "one input product"), (C::On, "input in chunks")];
                for (chunks, how) in both {
                    candidates.push((
                        format!("{name}, {how}{fmt}"),
                        Schedule {
                            split,
                            chunks,
                            panels,
                        },
                    ));
                }
            }
        }
    }
    let mut times = vec![Vec::new(); candidates.len()];
    for _ in 0..a.tune_rounds.max(1) {
        for ((_, sched), t) in candidates.iter().zip(&mut times) {
            schedule::set(*sched);
            let r = measure_stack(a, s, mode);
            schedule::set(Schedule::AUTO);
            let (secs, _, _, gflops) = r?;
            t.push((secs, gflops));
        }
    }
    let rows: Vec<(String, f64, f64)> = candidates
        .into_iter()
        .zip(times)
        .map(|((name, _), mut t)| {
            t.sort_by(|x, y| x.0.total_cmp(&y.0));
            let (secs, gflops) = t[t.len() / 2];
            (name, secs, gflops)
        })
        .collect();
    let best = rows
        .iter()
        .min_by(|x, y| x.1.total_cmp(&y.1))
        .expect("candidates")
        .clone();
    let auto = rows[0].clone();
    let mut out = std::io::stdout().lock();
    let what = format!(
        "{} H={} B={} T={} L={} {} threads={threads}",
        s.cell,
        s.h,
        s.b,
        s.t,
        s.layers,
        mode.name()
    );
    if a.json {
        let cands: Vec<_> = rows
            .iter()
            .map(|(n, secs, g)| json!({"schedule": n, "median_s": secs, "gflops": g}))
            .collect();
        writeln!(
            out,
            "{}",
            json!({"tune": what, "candidates": cands, "best": best.0, "auto_vs_best": auto.1 / best.1})
        )?;
        return Ok(());
    }
    writeln!(out, "{what} (medians of {} rounds)", a.tune_rounds.max(1))?;
    for (name, secs, gflops) in &rows {
        let mark = if *name == best.0 { "  <- best" } else { "" };
        writeln!(
            out,
            "  {name:36} {:9.3} ms {gflops:6.1} GFLOP/s{mark}",
            secs * 1e3
        )?;
    }
    writeln!(
        out,
        "  the driver's own choice takes {:.2}x the best's time",
        auto.1 / best.1
    )?;
    Ok(())
}

/// The dispatch table: one line per operation (or one JSON object).
fn print_dispatch(json_out: bool) -> Result<()> {
    let rows = recur::ops::cpu::dispatch_table();
    let mut out = std::io::stdout().lock();
    if json_out {
        let map: serde_json::Map<String, serde_json::Value> = rows
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect();
        writeln!(out, "{}", serde_json::Value::Object(map))?;
    } else {
        for (what, kernel) in rows {
            writeln!(out, "{what:34} {kernel}")?;
        }
    }
    Ok(())
}

fn run_fma_peak(a: &Args, threads: usize) -> Result<()> {
    // one sample: 2e8 vector FMAs per thread (about 0.1 s at 4 GHz with 2 FMA pipes)
    const ITERS: u64 = 200_000_000 / 12;
    let _ = recur_study::peak::fma_gflops(threads, ITERS / 10); // warm-up (clocks, page-in)
    let mut samples: Vec<f64> = (0..a.repeats)
        .map(|_| recur_study::peak::fma_gflops(threads, ITERS))
        .collect();
    samples.sort_by(f64::total_cmp);
    let gflops = samples[samples.len() / 2];
    let isa = recur_study::peak::isa();
    let mut out = std::io::stdout().lock();
    if a.json {
        let j = json!({"fma_peak": true, "isa": isa, "threads": threads, "gflops": gflops});
        writeln!(out, "{j}")?;
    } else {
        writeln!(
            out,
            "float32 FMA ceiling ({isa}), {} threads: {gflops:.1} GFLOP/s (median of {})",
            threads,
            samples.len()
        )?;
    }
    Ok(())
}

/// `--peak`: every ceiling, the median of `--repeats` measurements of about 0.2 s each.
fn run_peak(a: &Args, threads: usize) -> Result<()> {
    use recur_study::ceilings::{measure, Ceiling};
    let time = Duration::from_millis(200);
    let _ = measure(threads, time / 10); // warm-up (clocks, page-in)
    let runs: Vec<Vec<Ceiling>> = (0..a.repeats).map(|_| measure(threads, time)).collect();
    let mut out = std::io::stdout().lock();
    for (i, c) in runs[0].iter().enumerate() {
        let rate = c.rate.as_ref().map(|_| {
            median(
                runs.iter()
                    .map(|r| *r[i].rate.as_ref().expect("the same CPU each time"))
                    .collect(),
            )
        });
        if a.json {
            let j = match &rate {
                Ok(r) => json!({"ceiling": c.what, "instruction": c.instruction,
                    "threads": threads, "rate": r, "unit": c.unit}),
                Err(why) => json!({"ceiling": c.what, "instruction": c.instruction,
                    "threads": threads, "rate": null, "why": why}),
            };
            writeln!(out, "{j}")?;
        } else {
            let shown = match &rate {
                Ok(r) => format!("{r:9.1} {}", c.unit),
                Err(why) => why.to_string(),
            };
            writeln!(out, "{:26} {:42} {shown}", c.what, c.instruction)?;
        }
    }
    if !a.json {
        writeln!(out, "({threads} threads, median of {})", runs.len())?;
    }
    Ok(())
}

fn run_gemm(a: &Args, n: usize, threads: usize) -> Result<()> {
    if n == 0 {
        bail!("--gemm must be at least 1");
    }
    let mut rng = Rng::new(1);
    let x = random(&mut rng, n * n);
    let y = random(&mut rng, n * n);
    let mut z = vec![0f32; n * n];
    let tm = time_median(a, || {
        gemm(
            Trans::N,
            Trans::N,
            n,
            n,
            n,
            1.0,
            &x,
            n,
            &y,
            n,
            0.0,
            &mut z,
            n,
        )
    });
    let s = tm.wall_s;
    let gflops = 2.0 * (n as f64).powi(3) / s / 1e9;
    let mut out = std::io::stdout().lock();
    if a.json {
        let j = json!({"gemm": n, "threads": threads, "median_s": s, "cpu_s": tm.cpu_s, "gflops": gflops});
        writeln!(out, "{j}")?;
    } else {
        writeln!(
            out,
            "gemm {n}x{n}x{n} f32, {} threads: {:.3} ms, {gflops:.1} GFLOP/s",
            threads,
            s * 1e3
        )?;
    }
    Ok(())
}

/// One stack's pass timed: (median wall seconds, median CPU seconds, tokens/s, GFLOP/s).
fn measure_stack(a: &Args, s: StackShape, mode: Mode) -> Result<(f64, Option<f64>, f64, f64)> {
    let kind = CellKind::parse(s.cell).expect("a known cell name");
    let train = mode == Mode::Train;
    let layers = s.layers;
    let (h, b, t) = (s.h, s.b, s.t);
    // P: the width of each layer's output (the next layer's input), H without a projection
    let p = if a.proj_size > 0 { a.proj_size } else { h };
    let cfg = StackConfig::new(kind, h, h)
        .with_layers(layers)
        .with_proj_size(a.proj_size);
    let stack = Stack::new(cfg).map_err(|e| anyhow::anyhow!(e))?;
    let mut rng = Rng::new(7);
    let mut params = vec![0f32; stack.num_params()];
    stack.init(&mut params, &mut rng);
    let mut grads = vec![0f32; stack.num_params()];
    let mut x = random(&mut rng, t * b * h);
    let precision = a.precision.get();
    recur::precision::prepare_weights(stack.layout(), &mut params, precision);
    if precision == Precision::Bf16 {
        recur::ops::bf16::round_slice(&mut x);
    }
    let dy = random(&mut rng, t * b * p);
    let mut dx = vec![0f32; t * b * h];
    let mut ws = stack.workspace::<f32>(t, b);
    // inference keeps no per-step values for backward, as PyTorch's does under inference_mode
    ws.set_inference(!train);
    ws.set_precision(precision);
    ws.set_fixed_weights(a.packed_once && !train);
    let input = LayerInput::Dense { x: &x, ld: h };
    let tm = time_median(a, || {
        stack.forward(&mut ws, &params, input, None, None, None, None);
        if train {
            grads.fill(0.0);
            dx.fill(0.0);
            stack.backward(
                &mut ws,
                &params,
                &mut grads,
                input,
                None,
                Some(&dy),
                None,
                None,
                Some(&mut dx),
            );
        }
    });
    let secs = tm.wall_s;
    let tokens = (b * t) as f64;
    // GEMM work: 2*B*T*(G*H*(I+P) + P*H) per layer forward (I = H for the first layer, P after
    // it; P = H and no P*H term without a projection), three times that for training.
    let gh = (kind.gates() * h) as f64;
    let proj = if a.proj_size > 0 { (p * h) as f64 } else { 0.0 };
    let layer = |i: usize| 2.0 * tokens * (gh * (i + p) as f64 + proj);
    let forward = layer(h) + (layers - 1) as f64 * layer(p);
    let flops = forward * if train { 3.0 } else { 1.0 };
    Ok((secs, tm.cpu_s, tokens / secs, flops / secs / 1e9))
}

fn run_stack(a: &Args, s: StackShape, mode: Mode, threads: usize) -> Result<()> {
    let kind = CellKind::parse(s.cell).expect("a known cell name");
    let (layers, h, b, t) = (s.layers, s.h, s.b, s.t);
    let (secs, cpu_s, tokens_per_s, gflops) = measure_stack(a, s, mode)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let j = json!({
            "cell": kind.name(), "hidden": h, "proj_size": a.proj_size, "batch": b, "seq_length": t, "layers": layers,
            "mode": mode.name(), "precision": a.precision.get().name(), "packed_once": a.packed_once, "threads": threads, "median_s": secs, "tokens_per_s": tokens_per_s,
            "gflops": gflops, "cpu_s": cpu_s, "peak_rss_kib": peak_rss_kib(),
        });
        writeln!(out, "{j}")?;
    } else {
        writeln!(
            out,
            "{} H={h}{} B={b} T={t} L={} {}{} threads={}: {:.3} ms, {:.0} tokens/s, {:.1} GFLOP/s",
            kind.name(),
            match a.proj_size {
                0 => String::new(),
                p => format!(" P={p}"),
            },
            layers,
            mode.name(),
            match a.precision.get() {
                Precision::F32 => String::new(),
                p => format!(" {p}"),
            },
            threads,
            secs * 1e3,
            tokens_per_s,
            gflops
        )?;
    }
    Ok(())
}

/// The char-model's training step: the same shapes as `bench/torch_bench.py`'s.
const CHARLM_VOCAB: usize = 65;
const CHARLM_HIDDEN: usize = 512;
const CHARLM_LAYERS: usize = 2;
const CHARLM_BATCH: usize = 32;
const CHARLM_STEPS: usize = 64;
const CHARLM_CLIP: f64 = 5.0;
const CHARLM_LR: f64 = 2e-3;

fn run_charlm(a: &Args, threads: usize) -> Result<()> {
    let (v, t, b) = (CHARLM_VOCAB, CHARLM_STEPS, CHARLM_BATCH);
    let rnn = StackConfig::new(CellKind::Lstm, v, CHARLM_HIDDEN).with_layers(CHARLM_LAYERS);
    let model = Model::new(ModelConfig::char_model(v, 0, rnn)).map_err(|e| anyhow::anyhow!(e))?;
    let mut rng = Rng::new(3);
    let mut params = vec![0f32; model.num_params()];
    model.init(&mut params, &mut rng);
    let mut grads = vec![0f32; model.num_params()];
    let adam = OptimKind::parse("adam", 0.0).expect("adam is a known optimizer");
    let mut opt = Optimizer::<f32>::new(adam, CHARLM_LR, model.num_params());
    let ids: Vec<u32> = (0..t * b).map(|_| rng.below(v as u64) as u32).collect();
    let targets: Vec<u32> = (0..t * b).map(|_| rng.below(v as u64) as u32).collect();
    let mut ws = model.workspace::<f32>(t, b);
    // bf16: mixed precision as the training engine runs it (the float32 master weights updated,
    // the step computing with their copy rounded to bf16 after each update)
    let precision = a.precision.get();
    let bf16 = precision == Precision::Bf16;
    ws.set_precision(precision);
    let mut rounded = if bf16 { params.clone() } else { Vec::new() };
    recur::precision::prepare_weights(model.layout(), &mut rounded, precision);
    let mut loss = 0.0;
    let tm = time_median(a, || {
        grads.fill(0.0);
        let w = if bf16 { &rounded } else { &params };
        model.forward(&mut ws, w, Input::Tokens(&ids), None, None, None, None);
        let scale = 1.0 / (t * b) as f32;
        let (sum, count) = model.loss(&mut ws, &targets, scale);
        loss = sum / count as f64;
        model.backward(
            &mut ws,
            w,
            &mut grads,
            Input::Tokens(&ids),
            None,
            None,
            None,
            None,
        );
        clip_grad_norm(&mut grads, CHARLM_CLIP);
        opt.update(&mut params, &grads);
        if bf16 {
            recur::precision::copy_rounded(model.layout(), &params, &mut rounded);
        }
    });
    let s = tm.wall_s;
    let chars_per_s = (t * b) as f64 / s;
    let mut out = std::io::stdout().lock();
    if a.json {
        let j = json!({
            "charlm": true, "vocab": v, "hidden": CHARLM_HIDDEN, "layers": CHARLM_LAYERS,
            "batch": b, "seq_length": t, "threads": threads, "precision": precision.name(), "median_s": s,
            "chars_per_s": chars_per_s, "cpu_s": tm.cpu_s, "peak_rss_kib": peak_rss_kib(), "last_loss": loss,
        });
        writeln!(out, "{j}")?;
    } else {
        writeln!(
            out,
            "char-model step (V={v}, LSTM {CHARLM_HIDDEN}x{CHARLM_LAYERS}, B={b}, T={t}){}, {} threads: {:.3} ms, {chars_per_s:.0} chars/s",
            if bf16 { " in bf16" } else { "" },
            threads,
            s * 1e3
        )?;
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn charlm_on_cuda(_a: &Args) -> Result<()> {
    bail!(crate::device::NOT_COMPILED)
}

#[cfg(feature = "cuda")]
fn charlm_on_cuda(a: &Args) -> Result<()> {
    let backend = crate::device::open(Device::Cuda)?;
    charlm_cuda(a, &*backend)
}

/// The char-model training step on the GPU: the same model, initial values, Adam and clipping as
/// [`run_charlm`], through the engine every training loop uses (forward, loss, backward,
/// clipping, Adam, each step from a zero state), timed by the wall clock with the device
/// synchronised at the end of every step.
#[cfg(feature = "cuda")]
fn charlm_cuda(a: &Args, backend: &dyn recur::engine::Backend) -> Result<()> {
    use recur::engine::{Batch, LossTargets, Start};
    let (v, t, b) = (CHARLM_VOCAB, a.seq_length, a.batch_size);
    if t == 0 || b == 0 {
        bail!("--batch-size and --seq-length must be at least 1");
    }
    let rnn = StackConfig::new(CellKind::Lstm, v, CHARLM_HIDDEN).with_layers(CHARLM_LAYERS);
    let model = Model::new(ModelConfig::char_model(v, 0, rnn)).map_err(|e| anyhow::anyhow!(e))?;
    let mut rng = Rng::new(3);
    let mut params = vec![0f32; model.num_params()];
    model.init(&mut params, &mut rng);
    let adam = OptimKind::parse("adam", 0.0).expect("adam is a known optimizer");
    let opt = Optimizer::<f32>::new(adam, CHARLM_LR, model.num_params());
    let ids: Vec<u32> = (0..t * b).map(|_| rng.below(v as u64) as u32).collect();
    let targets: Vec<u32> = (0..t * b).map(|_| rng.below(v as u64) as u32).collect();
    let name = backend.name();
    let mut eng = backend.engine(model, params, Some(opt))?;
    let mut err: Option<String> = None;
    let mut loss = 0.0;
    let tm = time_median(a, || {
        if err.is_some() {
            return;
        }
        let mut step = || -> recur::Result<f64> {
            let batch = Batch::tokens(&ids, t, b);
            eng.forward(&batch, Start::Zero, Some(&mut rng))?;
            let (sum, n) = eng.loss(LossTargets::Classes(&targets), 1.0 / (t * b) as f32)?;
            eng.backward(&batch)?;
            eng.clip(0.0, CHARLM_CLIP)?;
            eng.update(CHARLM_LR)?;
            eng.sync()?;
            Ok(sum / n as f64)
        };
        match step() {
            Ok(l) => loss = l,
            Err(e) => err = Some(e.to_string()),
        }
    });
    if let Some(e) = err {
        bail!(e);
    }
    let s = tm.wall_s;
    let chars_per_s = (t * b) as f64 / s;
    let mut out = std::io::stdout().lock();
    if a.json {
        let j = json!({
            "charlm": true, "device": name, "vocab": v,
            "hidden": CHARLM_HIDDEN, "layers": CHARLM_LAYERS, "batch": b, "seq_length": t,
            "median_s": s, "chars_per_s": chars_per_s, "last_loss": loss,
        });
        writeln!(out, "{j}")?;
    } else {
        writeln!(
            out,
            "char-model step on {name} (V={v}, LSTM {CHARLM_HIDDEN}x{CHARLM_LAYERS}, B={b}, T={t}): {:.3} ms, {chars_per_s:.0} chars/s",
            s * 1e3
        )?;
    }
    Ok(())
}
