//! `--device cpu|cuda`: opens the device's backend before any work starts. Every command then
//! talks to `recur::engine::Backend` only; no command matches on the device.
//!
//! Without the `cuda` cargo feature, `--device cuda` is one error: CUDA support was not compiled
//! in. With it, on a machine without a GPU, opening the backend says that no CUDA device was
//! found. No math lives here: recur and recur-cuda do it.

use crate::values::Device;
#[cfg(not(feature = "cuda"))]
use anyhow::bail;
use anyhow::Result;
use recur::engine::{Backend, Cpu, Stepper};
use recur::model::Model;
use recur::rng::Rng;
use recur::Precision;
use recur_apps::charlm::sample::{draw, SampleOptions};

/// What a CPU-only build says to `--device cuda`.
#[cfg(not(feature = "cuda"))]
pub const NOT_COMPILED: &str =
    "CUDA support was not compiled in (rebuild with `cargo build --release -p recur-cli --features cuda`)";

/// Opens the CPU or CUDA device 0.
pub fn open(device: Device) -> Result<Box<dyn Backend>> {
    match device {
        Device::Cpu => Ok(Box::new(Cpu)),
        Device::Cuda => open_cuda(),
    }
}

#[cfg(feature = "cuda")]
fn open_cuda() -> Result<Box<dyn Backend>> {
    Ok(Box::new(recur_cuda::Cuda::new(0)?))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda() -> Result<Box<dyn Backend>> {
    bail!(NOT_COMPILED)
}

/// A character generator on any device: the backend's one-token stepper and the sampler's draw.
pub struct Gen<'a> {
    stepper: Box<dyn Stepper + 'a>,
    probs: Vec<f32>,
    order: Vec<u32>,
}

impl<'a> Gen<'a> {
    pub fn new(
        backend: &'a dyn Backend,
        model: &'a Model,
        params: &'a [f32],
        precision: Precision,
    ) -> Result<Self> {
        let v = model.cfg().output_size;
        Ok(Gen {
            stepper: backend.stepper(model, params, precision)?,
            probs: vec![0.0; v],
            order: Vec::with_capacity(v),
        })
    }

    /// Runs one character through the model.
    pub fn feed(&mut self, id: u32) -> Result<()> {
        Ok(self.stepper.feed(id)?)
    }

    /// Draws the next character (feed one first).
    pub fn sample(&mut self, opts: &SampleOptions, rng: &mut Rng) -> u32 {
        let logits = self.stepper.logits();
        assert!(!logits.is_empty(), "feed a character first");
        draw(logits, opts, rng, &mut self.probs, &mut self.order)
    }
}
