//! `recur gpu-bench`: times a recurrent stack's inference (forward) and training step (forward
//! plus BPTT) on `--device cuda` (the recur-cuda backend, float32, TF32 off) or `--device cpu`,
//! on one shape or on the CUDA issue's grid (`--grid`). Prints medians; `--json` one object per
//! line. The side-by-side comparison with PyTorch/cuDNN is bench/gpu_vs_cudnn.py, which runs this.
//!
//! Without the `cuda` cargo feature, `--device cuda` says that CUDA support was not compiled in.
//! This file only drives and times; all math is in recur and recur-cuda.

use anyhow::{bail, Context};
use recur::cell::{CellKind, LayerInput};
use recur::rng::Rng;
use recur::stack::{Stack, StackConfig};
use serde::Serialize;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Where to run: cuda or cpu.
    #[arg(long, default_value = "cuda")]
    device: String,
    /// rnn_tanh, rnn_relu, lstm or gru.
    #[arg(long, default_value = "lstm")]
    cell: String,
    /// H: hidden units (the input size is H too, as in the PyTorch comparison).
    #[arg(long, default_value_t = 512)]
    hidden: usize,
    /// B: batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// T: steps.
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// L: layers.
    #[arg(long, default_value_t = 1)]
    layers: usize,
    /// Run the CUDA issue's grid (LSTM, GRU, RNN at five (H, B, T) each, LSTM at two more)
    /// instead of one shape.
    #[arg(long)]
    grid: bool,
    /// Timed repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Untimed repetitions first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// CUDA: batches up to this size (at most 8) run each forward step as one fused kernel;
    /// 0 uses cuBLAS plus the cell kernel for every step.
    #[arg(long, default_value_t = 8)]
    small_batch: usize,
    /// CUDA: batches up to 8 (no projection, H <= 1024) run each layer's forward as one
    /// persistent launch (W_hh in shared memory across the steps) where the device allows it.
    #[arg(long)]
    persistent: bool,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

/// One shape to time.
#[derive(Clone, Copy, Serialize)]
pub struct Shape {
    pub cell: &'static str,
    pub h: usize,
    pub b: usize,
    pub t: usize,
    pub layers: usize,
}

/// One measurement: median milliseconds per call, eager (every launch from the host) and, on
/// CUDA, replayed from a captured CUDA graph.
#[derive(Serialize)]
pub struct Row {
    pub device: String,
    #[serde(flatten)]
    pub shape: Shape,
    pub mode: &'static str,
    pub eager_ms: f64,
    pub graph_ms: Option<f64>,
    pub iters: usize,
    pub small_batch: usize,
    pub persistent: bool,
}

/// The grid of the CUDA issue.
pub fn issue_grid() -> Vec<Shape> {
    let hbt = [
        (512, 64, 100),
        (1024, 64, 100),
        (512, 256, 100),
        (256, 1, 512),
        (1024, 1, 256),
    ];
    let mut v = Vec::new();
    for cell in ["lstm", "gru", "rnn_tanh"] {
        for &(h, b, t) in &hbt {
            v.push(Shape {
                cell,
                h,
                b,
                t,
                layers: 1,
            });
        }
        if cell == "lstm" {
            v.push(Shape {
                cell,
                h: 2048,
                b: 32,
                t: 50,
                layers: 1,
            });
            v.push(Shape {
                cell,
                h: 512,
                b: 64,
                t: 100,
                layers: 2,
            });
        }
    }
    v
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// One shape on one device, one mode (`infer`, `train`) or both (`both`): the entry point of
/// `recur bench --device cuda`.
pub fn run_stack_on(
    device: &str,
    cell: &str,
    hidden: usize,
    batch: usize,
    steps: usize,
    layers: usize,
    mode: &str,
    warmup: usize,
    iters: usize,
    json: bool,
) -> anyhow::Result<()> {
    if !matches!(mode, "infer" | "train" | "both") {
        bail!("unknown --mode '{mode}' (expected infer or train)");
    }
    run_modes(
        Args {
            device: device.into(),
            cell: cell.into(),
            hidden,
            batch,
            steps,
            layers,
            grid: false,
            iters,
            warmup,
            small_batch: 8,
            persistent: false,
            json,
        },
        mode,
    )
}

pub fn run(a: Args) -> anyhow::Result<()> {
    run_modes(a, "both")
}

fn run_modes(a: Args, mode: &str) -> anyhow::Result<()> {
    if a.iters == 0 {
        bail!("--iters must be at least 1");
    }
    let shapes = if a.grid {
        issue_grid()
    } else {
        let kind = CellKind::parse(&a.cell).with_context(|| {
            format!(
                "unknown --cell '{}' (expected rnn_tanh, rnn_relu, lstm or gru)",
                a.cell
            )
        })?;
        for (name, v) in [
            ("--hidden", a.hidden),
            ("--batch", a.batch),
            ("--steps", a.steps),
            ("--layers", a.layers),
        ] {
            if v == 0 {
                bail!("{name} must be at least 1");
            }
        }
        vec![Shape {
            cell: kind.name(),
            h: a.hidden,
            b: a.batch,
            t: a.steps,
            layers: a.layers,
        }]
    };
    let rows: Box<dyn FnMut(Shape) -> anyhow::Result<Vec<Row>>> = match a.device.as_str() {
        "cpu" => Box::new(|s| cpu_rows(s, a.warmup, a.iters)),
        "cuda" => cuda::rows_fn(a.warmup, a.iters, a.small_batch, a.persistent)?,
        other => bail!("unknown --device '{other}' (expected cpu or cuda)"),
    };
    let mut rows = rows;
    if !a.json {
        println!("device  cell      H     B     T    L  mode    eager ms   graph ms");
    }
    for s in shapes {
        for r in rows(s)?
            .into_iter()
            .filter(|r| mode == "both" || r.mode == mode)
        {
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                let g = r.graph_ms.map_or("-".to_string(), |g| format!("{g:.3}"));
                println!(
                    "{:<7} {:<8} {:>5} {:>5} {:>5} {:>4}  {:<6} {:>9.3} {:>10}",
                    r.device,
                    r.shape.cell,
                    r.shape.h,
                    r.shape.b,
                    r.shape.t,
                    r.shape.layers,
                    r.mode,
                    r.eager_ms,
                    g
                );
            }
        }
    }
    Ok(())
}

/// The stack, parameters, input (T, B, H) and output gradient (T, B, H) of one shape (seeded).
pub type Setup = (Stack, Vec<f32>, Vec<f32>, Vec<f32>);

pub fn setup(s: Shape) -> anyhow::Result<Setup> {
    let kind = CellKind::parse(s.cell).context("cell name")?;
    let stack = Stack::new(StackConfig::new(kind, s.h, s.h).with_layers(s.layers))
        .map_err(anyhow::Error::msg)?;
    let mut rng = Rng::new(7);
    let mut params = vec![0.0f32; stack.num_params()];
    stack.init(&mut params, &mut rng);
    let x = (0..s.t * s.b * s.h)
        .map(|_| rng.uniform_in(-1.0, 1.0) as f32)
        .collect();
    let dy = (0..s.t * s.b * s.h)
        .map(|_| rng.uniform_in(-1.0, 1.0) as f32)
        .collect();
    Ok((stack, params, x, dy))
}

fn cpu_rows(s: Shape, warmup: usize, iters: usize) -> anyhow::Result<Vec<Row>> {
    let (stack, params, x, dy) = setup(s)?;
    let mut ws = stack.workspace::<f32>(s.t, s.b);
    let mut grads = vec![0.0f32; params.len()];
    let input = LayerInput::Dense { x: &x, ld: s.h };
    let mut out = Vec::new();
    for mode in ["infer", "train"] {
        let mut times = Vec::new();
        for k in 0..warmup + iters {
            let t0 = Instant::now();
            stack.forward(&mut ws, &params, input, None, None, None, None);
            if mode == "train" {
                stack.backward(
                    &mut ws,
                    &params,
                    &mut grads,
                    input,
                    None,
                    Some(&dy),
                    None,
                    None,
                    None,
                );
            }
            if k >= warmup {
                times.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        out.push(Row {
            device: "cpu".into(),
            shape: s,
            mode,
            eager_ms: median(&mut times),
            graph_ms: None,
            iters,
            small_batch: 0,
            persistent: false,
        });
    }
    Ok(out)
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    use super::{Row, Shape};

    pub type RowsFn = Box<dyn FnMut(Shape) -> anyhow::Result<Vec<Row>>>;

    pub fn rows_fn(
        _warmup: usize,
        _iters: usize,
        _small: usize,
        _persistent: bool,
    ) -> anyhow::Result<RowsFn> {
        anyhow::bail!(
            "CUDA support was not compiled in (rebuild with `cargo build --release -p recur-cli --features cuda`)"
        )
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::{median, setup, Row, Shape};
    use recur_cuda::{Gpu, GpuInput, GpuStack};

    pub type RowsFn = Box<dyn FnMut(Shape) -> anyhow::Result<Vec<Row>>>;

    pub fn rows_fn(
        warmup: usize,
        iters: usize,
        small: usize,
        persistent: bool,
    ) -> anyhow::Result<RowsFn> {
        let gpu = Gpu::new(0)?;
        let name = gpu.name();
        Ok(Box::new(move |s| {
            rows(&gpu, &name, s, warmup, iters, small, persistent)
        }))
    }

    fn rows(
        gpu: &Gpu,
        name: &str,
        s: Shape,
        warmup: usize,
        iters: usize,
        small: usize,
        persistent: bool,
    ) -> anyhow::Result<Vec<Row>> {
        let (stack, params, x, dy) = setup(s)?;
        let mut gs = GpuStack::new(&stack);
        gs.small_batch = small;
        gs.persistent = persistent;
        let mut ws = gs.workspace(gpu, s.t, s.b)?;
        let params = gpu.upload(&params)?;
        let mut grads = gpu.zeros::<f32>(params.len())?;
        let x = gpu.upload(&x)?;
        let dy = gpu.upload(&dy)?;
        let input = GpuInput::Dense(&x);
        let mut out = Vec::new();
        for mode in ["infer", "train"] {
            let train = mode == "train";
            let step = |ws: &mut recur_cuda::GpuStackWorkspace,
                        grads: &mut recur_cuda::DevBuf|
             -> Result<(), recur_cuda::GpuError> {
                gs.forward(gpu, ws, &params, input, None, None, None, None)?;
                if train {
                    gs.backward(gpu, ws, &params, grads, input, Some(&dy), None, None, None)?;
                }
                Ok(())
            };
            let mut eager = Vec::new();
            for k in 0..warmup + iters {
                let ((), ms) = gpu.timed(|| step(&mut ws, &mut grads))?;
                if k >= warmup {
                    eager.push(ms);
                }
            }
            // The same work replayed from a CUDA graph (one launch instead of a few per step).
            let mut replay = Vec::new();
            match gpu.capture(|| step(&mut ws, &mut grads)) {
                Ok(graph) => {
                    for k in 0..warmup + iters {
                        let ((), ms) = gpu.timed(|| graph.launch())?;
                        if k >= warmup {
                            replay.push(ms);
                        }
                    }
                }
                Err(e) => eprintln!("recur: warning: CUDA graph capture failed: {e}"),
            }
            out.push(Row {
                device: format!("cuda:{name}"),
                shape: s,
                mode,
                eager_ms: median(&mut eager),
                graph_ms: (!replay.is_empty()).then(|| median(&mut replay)),
                iters,
                small_batch: small,
                persistent,
            });
        }
        Ok(out)
    }
}
