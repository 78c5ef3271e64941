//! recur-cuda: the CUDA backend of recur, float32.
//!
//! The same fast path as the CPU cells (`recur::cell`): per layer and direction, the input
//! projection of all steps is one cuBLAS GEMM; per step, one recurrent GEMM and one fused
//! element-wise kernel (compiled at run time by NVRTC from `kernels.cu`); backward walks the steps
//! in reverse with one fused kernel and one GEMM per step; the weight gradients are one GEMM each
//! over all steps.
//!
//! The CUDA libraries (driver, cuBLAS, NVRTC) are loaded at run time (cudarc's dynamic loading),
//! so this crate builds, links and tests on machines with no CUDA toolkit and no GPU:
//! [`Gpu::new`] then returns an [`recur::Error::Device`] saying that no CUDA device was found
//! and why, and [`nvrtc_present`] tells whether the kernels can be compiled here.
//!
//! - [`Gpu`]: a context, one stream, a cuBLAS handle (pure float32: no TF32), the kernels;
//! - [`GpuStack`]: a [`recur::stack::Stack`] on the device: forward, backward, dropout, lengths,
//!   initial states, with parameters and gradients in one flat device buffer each, laid out as the
//!   CPU's (so host/device copies are one copy each).
//!
//! For batches of at most 8 with a small W_hh, each forward step is one fused kernel
//! (`step_small`: the recurrent product and the cell together).
//!
//! - [`GpuModel`]: a `recur::model::Model` on the device (input, stack, decoder, every head's loss,
//!   backward) with the CPU's flat parameter layout; [`GpuOptimizer`] and the clipping functions:
//!   `recur::optim` on the device;
//! - [`Cuda`]: the `recur::engine::Backend` of the GPU, making [`GpuEngine`]s
//!   (`recur::engine::Engine` on the device, so every training loop runs on the GPU with the same
//!   code and checkpoints) and [`GpuStepper`]s (sampling); [`stream_loss`] for evaluation;
//! - [`compile_ptx`] and [`SOURCES`]: the kernels' NVRTC compilation, also used without a GPU by
//!   `tests/nvrtc_compiles.rs`.
//!
//! What it is not (yet): float64 kernels, the persistent small-batch kernel. The library never
//! prints.

mod device;
mod dir;
mod engine;
mod gemm;
mod kernels;
mod model;
mod model_kernels;
mod optim;
mod stack;

pub use device::{Gpu, GpuGraph};
pub use engine::{stream_loss, Cuda, GpuCarry, GpuEngine, GpuStepper};
pub use kernels::{compile_ptx, nvrtc_present, SOURCES};
pub use model::{GpuModel, GpuModelWorkspace};
pub use optim::{clip_grad_norm, clip_grad_value, grad_norm, GpuOptimizer, NormScratch};
pub use recur::ops::Trans;
pub use stack::{GpuInput, GpuStack, GpuStackWorkspace, SMALL_MAX_WEIGHTS};

/// A float32 buffer on the device.
pub type DevBuf = cudarc::driver::CudaSlice<f32>;
/// A buffer of token ids on the device.
pub type DevIds = cudarc::driver::CudaSlice<u32>;
