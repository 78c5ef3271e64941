//! Compiles `kernels.cu` and `model.cu` with NVRTC for the device at hand and holds the loaded functions.
//!
//! Compiled once per [`crate::Gpu`], for the device's own compute capability; precise math (no
//! `--use_fast_math`), so `expf`/`tanhf` are the accurate library versions, as the CPU's.

use crate::device::{no_library, Cu};
use cudarc::driver::{CudaContext, CudaFunction, LaunchConfig};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions, Ptx};
use recur::{Error, Result};
use std::sync::Arc;

/// The CUDA C sources, one NVRTC program (and one loaded module) each: the stack's kernels and
/// the model's (embedding, loss, clipping, optimizers).
pub const SOURCES: [(&str, &str); 2] = [
    ("kernels.cu", include_str!("kernels.cu")),
    ("model.cu", include_str!("model.cu")),
];

/// Threads per block of the element-wise kernels.
const BLOCK: u32 = 256;

/// NVRTC's options for a device of compute capability `cc`: PTX for exactly that architecture,
/// precise math (NVRTC's defaults: no fast math, IEEE division and square root, FMA contraction
/// as nvcc does by default).
fn options(cc: (i32, i32)) -> CompileOptions {
    CompileOptions {
        options: vec![format!("--gpu-architecture=compute_{}{}", cc.0, cc.1)],
        ..Default::default()
    }
}

/// Whether NVRTC (libnvrtc) can be loaded here: [`compile_ptx`] needs it, and nothing else.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen libnvrtc by its usual names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles one of [`SOURCES`] to PTX for compute capability `cc`, exactly as [`crate::Gpu::new`]
/// does. Needs only NVRTC (libnvrtc), no GPU and no driver: `tests/nvrtc_compiles.rs` uses it to
/// check every kernel on machines without a GPU. On failure the error holds NVRTC's log.
pub fn compile_ptx(name: &str, source: &str, cc: (i32, i32)) -> Result<Ptx> {
    if !nvrtc_present() {
        return Err(no_library("NVRTC (libnvrtc)"));
    }
    let opts = CompileOptions {
        name: Some(name.into()),
        ..options(cc)
    };
    compile_ptx_with_opts(source, opts).map_err(|e| match e {
        CompileError::CompileError { log, options, .. } => Error::device(format!(
            "NVRTC could not compile the kernels: {name} for compute_{}{} (options {options:?}):\n{}",
            cc.0,
            cc.1,
            log.to_string_lossy().trim_end()
        )),
        other => Error::device(format!(
            "NVRTC could not compile the kernels: {name}: {other:?}"
        )),
    })
}

pub(crate) struct Kernels {
    pub rnn_fwd: CudaFunction,
    pub rnn_bwd: CudaFunction,
    pub lstm_fwd: CudaFunction,
    pub lstm_bwd: CudaFunction,
    pub proj_select: CudaFunction,
    pub proj_bwd_pre: CudaFunction,
    pub gru_fwd: CudaFunction,
    pub step_small: CudaFunction,
    pub persist_fwd: CudaFunction,
    pub gru_bwd: CudaFunction,
    pub onehot_gather: CudaFunction,
    pub onehot_scatter: CudaFunction,
    pub mul: CudaFunction,
    pub fill: CudaFunction,
    /// The model's kernels (model.cu).
    pub m: crate::model_kernels::ModelKernels,
}

impl Kernels {
    pub fn compile(ctx: &Arc<CudaContext>, cc: (i32, i32)) -> Result<Kernels> {
        let (name, src) = SOURCES[0];
        let m = ctx.load_module(compile_ptx(name, src, cc)?).cu()?;
        let (name, src) = SOURCES[1];
        let mm = ctx.load_module(compile_ptx(name, src, cc)?).cu()?;
        let f = |n: &str| m.load_function(n);
        Ok(Kernels {
            rnn_fwd: f("rnn_fwd").cu()?,
            rnn_bwd: f("rnn_bwd").cu()?,
            lstm_fwd: f("lstm_fwd").cu()?,
            lstm_bwd: f("lstm_bwd").cu()?,
            proj_select: f("proj_select").cu()?,
            proj_bwd_pre: f("proj_bwd_pre").cu()?,
            gru_fwd: f("gru_fwd").cu()?,
            step_small: f("step_small").cu()?,
            persist_fwd: f("persist_fwd").cu()?,
            gru_bwd: f("gru_bwd").cu()?,
            onehot_gather: f("onehot_gather").cu()?,
            onehot_scatter: f("onehot_scatter").cu()?,
            mul: f("mul").cu()?,
            fill: f("fill").cu()?,
            m: crate::model_kernels::ModelKernels::load(&mm).cu()?,
        })
    }
}

/// A 1-D launch covering `n` threads.
pub(crate) fn cfg(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((n as u32).div_ceil(BLOCK).max(1), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One kernel argument, passed by value.
#[derive(Clone, Copy)]
pub(crate) enum Arg {
    /// `int`
    I(i32),
    /// `long long`
    L(i64),
    /// `float`
    F(f32),
    /// a device pointer (`const real*`, `const int*`, ...; 0 for null)
    P(u64),
}

/// Largest batch `step_small` handles (`SMALL_B` in kernels.cu).
pub const SMALL_B: usize = 8;
/// Threads per block of `step_small` (`SMALL_THREADS` in kernels.cu).
const SMALL_THREADS: u32 = 128;

/// `step_small`'s launch: one block per hidden unit.
pub(crate) fn small_cfg(h: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (h as u32, 1, 1),
        block_dim: (SMALL_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Launches `f` over `n` threads (1-D) on the device's stream.
pub(crate) fn launch(gpu: &crate::Gpu, f: &CudaFunction, n: usize, args: &[Arg]) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    launch_cfg(gpu, f, cfg(n), args)
}

/// Threads per block of `persist_fwd` (`PERSIST_THREADS` in kernels.cu).
pub const PERSIST_THREADS: u32 = 256;

/// A launch of `f` on the device's stream with `args` pushed in order.
fn builder<'a>(
    gpu: &'a crate::Gpu,
    f: &'a CudaFunction,
    args: &'a [Arg],
) -> cudarc::driver::LaunchArgs<'a> {
    use cudarc::driver::PushKernelArg;
    let mut b = gpu.stream.launch_builder(f);
    for a in args {
        match a {
            Arg::I(v) => b.arg(v),
            Arg::L(v) => b.arg(v),
            Arg::F(v) => b.arg(v),
            Arg::P(v) => b.arg(v),
        };
    }
    b
}

/// Launches `f` as a cooperative kernel (every block resident at once, or the launch fails) on
/// the device's stream.
pub(crate) fn launch_coop(
    gpu: &crate::Gpu,
    f: &CudaFunction,
    c: LaunchConfig,
    args: &[Arg],
) -> Result<()> {
    let mut b = builder(gpu, f, args);
    // SAFETY: as in `launch_cfg`; the caller sized the grid so that every block can be resident
    // (checked by the driver for a cooperative launch) and the shared memory to the kernel's need.
    unsafe { b.launch_cooperative(c) }.cu()?;
    Ok(())
}

/// Launches `f` with an explicit configuration on the device's stream.
pub(crate) fn launch_cfg(
    gpu: &crate::Gpu,
    f: &CudaFunction,
    c: LaunchConfig,
    args: &[Arg],
) -> Result<()> {
    let mut b = builder(gpu, f, args);
    // SAFETY: each kernel in kernels.cu is launched with the argument list its signature names
    // (the callers in stack.rs list them in order) and with pointers into live buffers sized by
    // the workspace; `args` outlives the launch call, which copies the values.
    unsafe { b.launch(c) }.cu()?;
    Ok(())
}
