//! `recur bench --device cuda`: times a recurrent stack's inference (forward) and training step
//! (forward plus BPTT) on the GPU (the recur-cuda backend, float32, TF32 off), on one shape or on
//! the reference grid (`--grid`), eager and replayed from a CUDA graph. Prints medians; `--json`
//! one object per line. The side-by-side comparison with PyTorch/cuDNN is bench/gpu_vs_cudnn.py,
//! which runs this.
//!
//! Without the `cuda` cargo feature, `--device cuda` says that CUDA support was not compiled in.
//! This file only drives and times; all math is in recur and recur-cuda.

use crate::values::Mode;
use anyhow::bail;
use serde::Serialize;

/// One shape to time.
#[derive(Clone, Copy, Serialize)]
pub struct StackShape {
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
    pub shape: StackShape,
    pub mode: &'static str,
    pub eager_ms: f64,
    pub graph_ms: Option<f64>,
    pub iters: usize,
    pub small_batch: usize,
    pub persistent: bool,
}

/// The reference grid of `--grid`: LSTM, GRU and RNN at five (H, B, T) each (large and small
/// batches, long sequences), and LSTM at H = 2048 and with two layers.
pub fn reference_grid() -> Vec<StackShape> {
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
            v.push(StackShape {
                cell,
                h,
                b,
                t,
                layers: 1,
            });
        }
        if cell == "lstm" {
            v.push(StackShape {
                cell,
                h: 2048,
                b: 32,
                t: 50,
                layers: 1,
            });
            v.push(StackShape {
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

/// Times `shapes` on the GPU in `mode` (`both`: inference, then training), `warmup` untimed and
/// `iters` timed calls each; prints a table, or one JSON object per line.
#[allow(clippy::too_many_arguments)]
pub fn run(
    shapes: Vec<StackShape>,
    mode: Mode,
    warmup: usize,
    iters: usize,
    small_batch: usize,
    persistent: bool,
    json: bool,
) -> anyhow::Result<()> {
    if iters == 0 {
        bail!("--repeats must be at least 1");
    }
    let mut rows = cuda::rows_fn(warmup, iters, small_batch, persistent)?;
    if !json {
        println!("device  cell      H     B     T    L  mode    eager ms   graph ms");
    }
    for s in shapes {
        for r in rows(s)?
            .into_iter()
            .filter(|r| mode.each().iter().any(|m| m.name() == r.mode))
        {
            if json {
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

#[cfg(not(feature = "cuda"))]
mod cuda {
    use super::{Row, StackShape};

    pub type RowsFn = Box<dyn FnMut(StackShape) -> anyhow::Result<Vec<Row>>>;

    pub fn rows_fn(
        _warmup: usize,
        _iters: usize,
        _small: usize,
        _persistent: bool,
    ) -> anyhow::Result<RowsFn> {
        anyhow::bail!(crate::device::NOT_COMPILED)
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::{Row, StackShape};
    use anyhow::Context;
    use recur::cell::CellKind;
    use recur::rng::Rng;
    use recur::stack::{Stack, StackConfig};
    use recur_cuda::{Gpu, GpuInput, GpuStack};

    pub fn median(v: &mut [f64]) -> f64 {
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            0.5 * (v[n / 2 - 1] + v[n / 2])
        }
    }

    /// The stack, parameters, input (T, B, H) and output gradient (T, B, H) of one shape (seeded).
    pub type Setup = (Stack, Vec<f32>, Vec<f32>, Vec<f32>);

    pub fn setup(s: StackShape) -> anyhow::Result<Setup> {
        let kind = CellKind::parse(s.cell).context("cell name")?;
        let stack = Stack::new(StackConfig::new(kind, s.h, s.h).with_layers(s.layers))?;
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

    pub type RowsFn = Box<dyn FnMut(StackShape) -> anyhow::Result<Vec<Row>>>;

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
        s: StackShape,
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
             -> recur::Result<()> {
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
                Err(e) => crate::ranks::say!("recur: warning: CUDA graph capture failed: {e}"),
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
