//! The optimizers and gradient clipping on the device: `recur::optim` element by element (the
//! kernels are in model.cu), with the moments in device buffers of the parameters' layout.
//!
//! [`GpuOptimizer`] converts to and from `recur::optim::Optimizer<f32>` (one copy per buffer), so
//! a checkpoint's optimizer state moves between devices unchanged. The hyper-parameters are
//! rounded to float32 on the host exactly as the CPU rounds them, and the Adam bias corrections
//! are computed in float64 on the host as on the CPU.

use crate::device::Gpu;
use crate::kernels::{launch, launch_cfg, Arg};
use crate::DevBuf;
use cudarc::driver::{CudaSlice, LaunchConfig};
use recur::optim::{OptimKind, Optimizer};
use recur::{Error, Result};

/// An optimizer with its state on the device.
pub struct GpuOptimizer {
    pub kind: OptimKind,
    /// Learning rate (may be changed between steps).
    pub lr: f64,
    /// Steps taken so far.
    pub step: u64,
    // m: first moment / momentum / Adagrad sum / RMSprop square average; v: Adam's second moment
    m: DevBuf,
    v: DevBuf,
    n: usize,
}

impl GpuOptimizer {
    /// Uploads a host optimizer (kind, lr, step and moments).
    pub fn from_host(gpu: &Gpu, opt: &Optimizer<f32>) -> Result<GpuOptimizer> {
        let n = opt.m.len();
        if !opt.v.is_empty() && opt.v.len() != n {
            return Err(Error::invalid(format!(
                "optimizer moments of {} and {} values",
                n,
                opt.v.len()
            )));
        }
        Ok(GpuOptimizer {
            kind: opt.kind.clone(),
            lr: opt.lr,
            step: opt.step,
            m: gpu.upload(&opt.m)?,
            v: gpu.upload(&opt.v)?,
            n,
        })
    }

    /// Downloads it as a host optimizer (waits for the device).
    pub fn to_host(&self, gpu: &Gpu) -> Result<Optimizer<f32>> {
        let mut o = Optimizer::<f32>::new(self.kind.clone(), self.lr, self.n);
        o.step = self.step;
        o.m = gpu.download(&self.m, self.n)?;
        if !o.v.is_empty() {
            o.v = gpu.download(&self.v, self.n)?;
        }
        Ok(o)
    }

    /// One update of `params` with `grads`, as `Optimizer::update`.
    pub fn update(&mut self, gpu: &Gpu, params: &mut DevBuf, grads: &DevBuf) -> Result<()> {
        let n = self.n;
        if params.len() < n || grads.len() < n {
            return Err(Error::invalid(format!(
                "optimizer of {n} values, parameters {} and gradients {}",
                params.len(),
                grads.len()
            )));
        }
        self.step += 1;
        let lr = self.lr as f32;
        let (g, m, v, p) = (
            gpu.ptr(grads),
            gpu.ptr(&self.m),
            gpu.ptr(&self.v),
            gpu.ptr(params),
        );
        let k = &gpu.k.m;
        let nl = Arg::L(n as i64);
        match self.kind {
            OptimKind::Sgd { momentum, nesterov } => {
                if momentum == 0.0 {
                    launch(
                        gpu,
                        &k.sgd_plain,
                        n,
                        &[nl, Arg::F(lr), Arg::P(g), Arg::P(p)],
                    )
                } else {
                    launch(
                        gpu,
                        &k.sgd_momentum,
                        n,
                        &[
                            nl,
                            Arg::F(lr),
                            Arg::F(momentum as f32),
                            Arg::I((self.step == 1) as i32),
                            Arg::I(nesterov as i32),
                            Arg::P(g),
                            Arg::P(m),
                            Arg::P(p),
                        ],
                    )
                }
            }
            OptimKind::Adagrad { eps } => launch(
                gpu,
                &k.adagrad,
                n,
                &[
                    nl,
                    Arg::F(lr),
                    Arg::F(eps as f32),
                    Arg::P(g),
                    Arg::P(m),
                    Arg::P(p),
                ],
            ),
            OptimKind::Rmsprop { alpha, eps } => launch(
                gpu,
                &k.rmsprop,
                n,
                &[
                    nl,
                    Arg::F(lr),
                    Arg::F(alpha as f32),
                    Arg::F(eps as f32),
                    Arg::P(g),
                    Arg::P(m),
                    Arg::P(p),
                ],
            ),
            OptimKind::Adam { beta1, beta2, eps } => {
                // as the CPU: bias corrections in f64, then rounded to f32
                let t = self.step as i32;
                let bc1 = 1.0 - beta1.powi(t);
                let bc2 = 1.0 - beta2.powi(t);
                launch(
                    gpu,
                    &k.adam,
                    n,
                    &[
                        nl,
                        Arg::F((self.lr / bc1) as f32),
                        Arg::F(bc2.sqrt() as f32),
                        Arg::F(beta1 as f32),
                        Arg::F(beta2 as f32),
                        Arg::F(eps as f32),
                        Arg::P(g),
                        Arg::P(m),
                        Arg::P(v),
                        Arg::P(p),
                    ],
                )
            }
        }
    }
}

/// Blocks of the first pass of the norm (each 256 threads, grid-stride).
const NORM_BLOCKS: usize = 1024;

/// Scratch for [`grad_norm`]: the per-block partial sums and the total.
pub struct NormScratch {
    partial: CudaSlice<f64>,
    total: CudaSlice<f64>,
}

impl NormScratch {
    pub fn new(gpu: &Gpu) -> Result<NormScratch> {
        Ok(NormScratch {
            partial: gpu.zeros::<f64>(NORM_BLOCKS)?,
            total: gpu.zeros::<f64>(1)?,
        })
    }
}

/// The global L2 norm of the first `n` gradients, sums of squares in float64 in a fixed order
/// (as `recur::optim::grad_norm`, up to the order of the float64 additions). Waits for the device.
pub fn grad_norm(gpu: &Gpu, s: &NormScratch, grads: &DevBuf, n: usize) -> Result<f64> {
    let blocks = n.div_ceil(256).clamp(1, NORM_BLOCKS);
    let one = |b: usize| LaunchConfig {
        grid_dim: (b as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    launch_cfg(
        gpu,
        &gpu.k.m.sumsq_partial,
        one(blocks),
        &[
            Arg::L(n as i64),
            Arg::P(gpu.ptr(grads)),
            Arg::P(gpu.ptr(&s.partial)),
        ],
    )?;
    launch_cfg(
        gpu,
        &gpu.k.m.sum_partials,
        one(1),
        &[
            Arg::I(blocks as i32),
            Arg::P(gpu.ptr(&s.partial)),
            Arg::P(gpu.ptr(&s.total)),
        ],
    )?;
    Ok(gpu.get(&s.total, 1)?[0].sqrt())
}

/// Scales the first `n` gradients so that their global norm is at most `max_norm`, as
/// `recur::optim::clip_grad_norm` (factor `max_norm / (norm + 1e-6)` when below 1). Returns the
/// norm before. Waits for the device (the norm comes back to the host).
pub fn clip_grad_norm(
    gpu: &Gpu,
    s: &NormScratch,
    grads: &mut DevBuf,
    n: usize,
    max_norm: f64,
) -> Result<f64> {
    let norm = grad_norm(gpu, s, grads, n)?;
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        launch(
            gpu,
            &gpu.k.m.scale_by,
            n,
            &[
                Arg::L(n as i64),
                Arg::F(coef as f32),
                Arg::P(gpu.ptr(grads)),
            ],
        )?;
    }
    Ok(norm)
}

/// Clamps each of the first `n` gradients to `[-clip, clip]`, as `recur::optim::clip_grad_value`.
pub fn clip_grad_value(gpu: &Gpu, grads: &mut DevBuf, n: usize, clip: f64) -> Result<()> {
    launch(
        gpu,
        &gpu.k.m.clamp_value,
        n,
        &[
            Arg::L(n as i64),
            Arg::F(clip as f32),
            Arg::P(gpu.ptr(grads)),
        ],
    )
}
