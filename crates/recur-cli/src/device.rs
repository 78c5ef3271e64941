//! `--device cpu|cuda` of `train`, `eval`, `sample` and `bench --charlm`: opens the device before
//! any work starts, and hands each command the engine, loss or generator of that device.
//!
//! Without the `cuda` cargo feature, `--device cuda` is one error: CUDA support was not compiled
//! in. With it, on a machine without a GPU, `recur_cuda::Gpu::new` says that no CUDA device was
//! found. No math lives here: recur and recur-cuda do it.

use anyhow::{bail, Result};
use recur::apps::charlm::sample::{Generator, SampleOptions};
use recur::apps::charlm::train::Trainer;
use recur::engine::{
    BatchEngine, BatchEngineParts, CpuBatchEngine, CpuModelEngine, EngineError, ModelEngine,
    ModelEngineParts,
};
use recur::model::Model;
use recur::rng::Rng;

/// What a CPU-only build says to `--device cuda`.
#[cfg(not(feature = "cuda"))]
pub const NOT_COMPILED: &str =
    "CUDA support was not compiled in (rebuild with `cargo build --release -p recur-cli --features cuda`)";

/// An opened device.
pub enum Device {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda(Box<recur_cuda::Gpu>),
}

/// Opens `cpu` or `cuda` (device 0).
pub fn open(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => open_cuda(),
        other => bail!("unknown --device '{other}' (expected cpu or cuda)"),
    }
}

#[cfg(feature = "cuda")]
fn open_cuda() -> Result<Device> {
    recur_cuda::Gpu::new(0)
        .map(|g| Device::Cuda(Box::new(g)))
        .map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda() -> Result<Device> {
    bail!(NOT_COMPILED)
}

/// A character generator on either device.
pub enum Gen<'a> {
    Cpu(Box<Generator<'a>>),
    #[cfg(feature = "cuda")]
    Cuda(Box<recur_cuda::GpuGenerator<'a>>),
}

impl Gen<'_> {
    /// Runs one character through the model.
    pub fn feed(&mut self, id: u32) -> Result<()> {
        match self {
            Gen::Cpu(g) => g.feed(id),
            #[cfg(feature = "cuda")]
            Gen::Cuda(g) => g.feed(id)?,
        }
        Ok(())
    }

    /// Draws the next character.
    pub fn sample(&mut self, opts: &SampleOptions, rng: &mut Rng) -> u32 {
        match self {
            Gen::Cpu(g) => g.sample(opts, rng),
            #[cfg(feature = "cuda")]
            Gen::Cuda(g) => g.sample(opts, rng),
        }
    }
}

impl Device {
    /// `cpu`, or `cuda (NAME)`.
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            #[cfg(feature = "cuda")]
            Device::Cuda(g) => format!("cuda ({})", g.name()),
        }
    }

    /// What builds the long-memory tasks' engine on this device: a plain function, so that each
    /// of several runs side by side (one thread each) builds its own (on the GPU: its own
    /// context handle, stream and kernels).
    pub fn batch_engine_maker(
        &self,
    ) -> fn(BatchEngineParts) -> Result<Box<dyn BatchEngine>, EngineError> {
        match self {
            Device::Cpu => |p| Ok(Box::new(CpuBatchEngine::new(p))),
            #[cfg(feature = "cuda")]
            Device::Cuda(_) => |p| {
                let gpu = recur_cuda::Gpu::new(0).map_err(|e| e.to_string())?;
                Ok(Box::new(
                    recur_cuda::GpuBatchEngine::new(gpu, p).map_err(|e| e.to_string())?,
                ))
            },
        }
    }

    /// A [`ModelEngine`] on this device (the spoken-digit classifier's training and evaluation).
    pub fn into_model_engine(self, p: ModelEngineParts) -> Result<Box<dyn ModelEngine>> {
        match self {
            Device::Cpu => Ok(Box::new(CpuModelEngine::new(p))),
            #[cfg(feature = "cuda")]
            Device::Cuda(gpu) => Ok(Box::new(recur_cuda::GpuModelEngine::new(*gpu, p)?)),
        }
    }

    /// Moves a training run onto this device (the CPU's engine is already there).
    pub fn attach(self, trainer: Trainer) -> Result<Trainer> {
        match self {
            Device::Cpu => Ok(trainer),
            #[cfg(feature = "cuda")]
            Device::Cuda(gpu) => Ok(trainer.with_engine(move |parts| {
                recur_cuda::GpuEngine::new(*gpu, parts)
                    .map(|e| Box::new(e) as Box<dyn recur::engine::Engine>)
                    .map_err(|e| e.to_string())
            })?),
        }
    }

    /// A character model's summed loss and count on `ids` from a zero state, in chunks of
    /// `chunk` characters (`recur::stream::stream_loss` on this device).
    pub fn stream_loss(
        &self,
        model: &Model,
        params: &[f32],
        ids: &[u32],
        chunk: usize,
    ) -> Result<(f64, usize)> {
        match self {
            Device::Cpu => {
                let mut ws = model.workspace(chunk, 1);
                Ok(recur::stream::stream_loss(model, params, ids, &mut ws))
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(gpu) => {
                let gm = recur_cuda::GpuModel::new(model);
                let mut ws = gm.workspace(gpu, chunk, 1)?;
                let p = gpu.upload(params)?;
                Ok(recur_cuda::stream_loss(
                    gpu, &gm, &p, ids, &mut ws, &mut None,
                )?)
            }
        }
    }

    /// A generator of `model` with `params` on this device.
    pub fn generator<'a>(&'a self, model: &'a Model, params: &'a [f32]) -> Result<Gen<'a>> {
        match self {
            Device::Cpu => Ok(Gen::Cpu(Box::new(Generator::new(model, params)))),
            #[cfg(feature = "cuda")]
            Device::Cuda(gpu) => Ok(Gen::Cuda(Box::new(recur_cuda::GpuGenerator::new(
                gpu, model, params,
            )?))),
        }
    }
}
