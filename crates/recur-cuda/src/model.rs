//! A sequence model on the device: the GPU twin of `recur::model::Model` (input -> stack ->
//! decoder, with the loss of each [`Head`]), with the same configuration and the same flat
//! parameter and gradient layout, so that a checkpoint is the host copy of the device buffer and a
//! run trained on one device continues on the other.
//!
//! - input: one-hot token ids (the stack's one-hot gather), an embedding (a gather kernel, and its
//!   scatter-add backward), or dense vectors; inputs and targets are passed from the host and
//!   copied into the workspace;
//! - the [`GpuStack`] on the model's `rnn.` block of the buffer;
//! - the decoder as one cuBLAS GEMM over all rows (every step's output, or each sequence's last
//!   one), its bias added after the product as on the CPU;
//! - softmax cross-entropy (float64 inside, as the CPU) and squared error, with the summed loss
//!   and count reduced on the device in a fixed order and `scale * dL/dlogits` written for
//!   backward.
//!
//! What it is not: the optimizers and clipping (optim.rs), the training loop (recur_apps::charlm::train, through
//! the engine in engine.rs). The library never prints.

use crate::device::{at, Gpu, Ptr};
use crate::kernels::{launch, launch_cfg, Arg};
use crate::stack::{GpuInput, GpuStack, GpuStackWorkspace};
use crate::{DevBuf, DevIds};
use cudarc::driver::{CudaSlice, LaunchConfig};
use recur::model::{Input, InputKind, Model};
use recur::ops::Trans::{N, T};
use recur::rng::Rng;
use recur::{Error, Result};

/// A [`Model`] on the device.
pub struct GpuModel {
    /// The CPU model: configuration and parameter layout.
    pub model: Model,
    /// The stack, addressing the model's `rnn.` block of the parameter buffer.
    pub stack: GpuStack,
    // element offsets in the flat buffer
    emb: Option<usize>,
    dec_w: usize,
    dec_b: Option<usize>,
}

/// Buffers for one forward/backward of a [`GpuModel`] at fixed (T, B), sized once.
pub struct GpuModelWorkspace {
    pub t: usize,
    pub b: usize,
    // R: rows of logits
    rows: usize,
    /// The stack's workspace (outputs, final states, initial-state gradients).
    pub stack: GpuStackWorkspace,
    // ids: (T, B) token ids of the last forward; x: (T, B, I) dense input of the last forward
    ids: DevIds,
    x: DevBuf,
    // emb: (T, B, E) looked-up embeddings; demb: their gradient
    emb: DevBuf,
    demb: DevBuf,
    /// logits: (R, V) decoder outputs; R = T*B (per-step heads) or B (last-step heads).
    pub logits: DevBuf,
    /// dlogits: (R, V), written by [`GpuModel::loss`] / [`GpuModel::loss_mse`].
    pub dlogits: DevBuf,
    // dy: (T, B, D*P) gradient of the stack output
    dy: DevBuf,
    // last, dlast: (B, D*P) last-step heads' decoder input and its gradient
    last: DevBuf,
    dlast: DevBuf,
    // last_src: (B*D) element offsets in y of each sequence's last output per direction
    last_src: CudaSlice<i32>,
    // targets of the last loss: class ids (R) or values (R, V)
    tgt_ids: DevIds,
    tgt_f: DevBuf,
    // per row (classes) or element (regression): loss (f64) and counted flag
    row_loss: CudaSlice<f64>,
    row_n: CudaSlice<i32>,
    // sums: [loss, count, bad target flag]
    sums: CudaSlice<f64>,
    // ones: (R) for the decoder bias gradient as a GEMM
    ones: DevBuf,
    // which input the last forward had
    input: Option<InputKind>,
}

impl GpuModelWorkspace {
    /// R: rows of `logits`.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

impl GpuModel {
    /// The device twin of `model` (same configuration and layout).
    pub fn new(model: &Model) -> GpuModel {
        let off = |n: &str| model.layout().get(n).map(|e| e.offset);
        GpuModel {
            stack: GpuStack::new_at(model.stack(), model.rnn_range().start),
            emb: off("embedding.weight"),
            dec_w: off("decoder.weight").expect("a model has decoder.weight"),
            dec_b: off("decoder.bias"),
            model: model.clone(),
        }
    }

    /// Parameters in the flat buffer.
    pub fn num_params(&self) -> usize {
        self.model.num_params()
    }

    /// A workspace for batches of `b` sequences of `t` steps.
    pub fn workspace(&self, gpu: &Gpu, t: usize, b: usize) -> Result<GpuModelWorkspace> {
        let cfg = &self.model.cfg();
        let n = t * b;
        let v = cfg.output_size;
        let dp = cfg.rnn.output_size();
        let rows = if cfg.head.last_step() { b } else { n };
        let e = if self.emb.is_some() {
            n * cfg.embed_dim
        } else {
            0
        };
        let dense = if cfg.input == InputKind::Dense {
            n * cfg.input_size
        } else {
            0
        };
        let last = if cfg.head.last_step() { b * dp } else { 0 };
        let z = |k: usize| gpu.zeros::<f32>(k);
        let ones = z(rows)?;
        launch(
            gpu,
            &gpu.k.fill,
            rows,
            &[Arg::L(rows as i64), Arg::F(1.0), Arg::P(gpu.ptr(&ones))],
        )?;
        Ok(GpuModelWorkspace {
            t,
            b,
            rows,
            stack: self.stack.workspace(gpu, t, b)?,
            ids: gpu.zeros::<u32>(n)?,
            x: z(dense)?,
            emb: z(e)?,
            demb: z(e)?,
            logits: z(rows * v)?,
            dlogits: z(rows * v)?,
            dy: z(n * dp)?,
            last: z(last)?,
            dlast: z(last)?,
            last_src: gpu.zeros::<i32>(b * cfg.rnn.dirs())?,
            tgt_ids: gpu.zeros::<u32>(rows)?,
            tgt_f: z(rows * v)?,
            row_loss: gpu.zeros::<f64>(rows * v)?,
            row_n: gpu.zeros::<i32>(rows * v)?,
            sums: gpu.zeros::<f64>(3)?,
            ones,
            input: None,
        })
    }

    /// Forward, as `Model::forward`: stack outputs and final states in `ws.stack`, logits in
    /// `ws.logits`. The input comes from the host (token ids or dense vectors) and is kept in the
    /// workspace for [`GpuModel::backward`]; `h0` (L*D, B, P) and `c0` (L*D, B, H) are device
    /// buffers (zero when `None`); with `dropout_rng`, training mode (the CPU's masks).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        gpu: &Gpu,
        ws: &mut GpuModelWorkspace,
        params: &DevBuf,
        input: Input<f32>,
        h0: Option<&DevBuf>,
        c0: Option<&DevBuf>,
        lengths: Option<&[usize]>,
        dropout_rng: Option<&mut Rng>,
    ) -> Result<()> {
        let cfg = &self.model.cfg();
        if params.len() < self.num_params() {
            return Err(Error::invalid(format!(
                "parameter buffer holds {} values, the model has {}",
                params.len(),
                self.num_params()
            )));
        }
        let n = ws.t * ws.b;
        recur::stack::check_lengths(lengths, ws.t, ws.b)?;
        self.upload_input(gpu, ws, input)?;
        ws.input = Some(cfg.input);
        let pw = gpu.ptr(params);
        if let Some(off) = self.emb {
            // emb[r, :] = embedding.weight[ids[r], :]: (T*B, E)
            let e = cfg.embed_dim;
            launch(
                gpu,
                &gpu.k.m.embed_gather,
                n * e,
                &[
                    Arg::I(n as i32),
                    Arg::I(e as i32),
                    Arg::P(gpu.ptr(&ws.ids)),
                    Arg::P(at(pw, off)),
                    Arg::P(gpu.ptr(&ws.emb)),
                ],
            )?;
        }
        {
            let GpuModelWorkspace {
                stack: sws,
                ids,
                x,
                emb,
                ..
            } = ws;
            let li = match cfg.input {
                InputKind::OneHot => GpuInput::OneHot(ids),
                InputKind::Embedding => GpuInput::Dense(emb),
                InputKind::Dense => GpuInput::Dense(x),
            };
            self.stack
                .forward(gpu, sws, params, li, h0, c0, lengths, dropout_rng)?;
        }
        self.decode(gpu, ws, pw, lengths)
    }

    /// Checks the host input against the model and the workspace and copies it to the device.
    fn upload_input(&self, gpu: &Gpu, ws: &mut GpuModelWorkspace, input: Input<f32>) -> Result<()> {
        let cfg = &self.model.cfg();
        let n = ws.t * ws.b;
        match (cfg.input, input) {
            (InputKind::OneHot | InputKind::Embedding, Input::Tokens(ids)) => {
                if ids.len() < n {
                    return Err(Error::invalid(format!(
                        "need {n} token ids, got {}",
                        ids.len()
                    )));
                }
                if let Some(&bad) = ids[..n].iter().find(|&&id| id as usize >= cfg.input_size) {
                    return Err(Error::invalid(format!(
                        "token id {bad} out of range for input_size {}",
                        cfg.input_size
                    )));
                }
                gpu.put(&ws.ids, &ids[..n])?;
            }
            (InputKind::Dense, Input::Dense(x)) => {
                let need = n * cfg.input_size;
                if x.len() < need {
                    return Err(Error::invalid(format!(
                        "need {need} input values, got {}",
                        x.len()
                    )));
                }
                gpu.put(&ws.x, &x[..need])?;
            }
            _ => {
                return Err(Error::invalid(format!(
                    "input does not match the model's input kind {:?}",
                    cfg.input
                )))
            }
        }
        Ok(())
    }

    /// logits = Y W_dec^T + b_dec from the stack's output (each sequence's last step for a
    /// last-step head).
    fn decode(
        &self,
        gpu: &Gpu,
        ws: &mut GpuModelWorkspace,
        pw: Ptr,
        lengths: Option<&[usize]>,
    ) -> Result<()> {
        let cfg = &self.model.cfg();
        let n = ws.t * ws.b;
        let (v, dp) = (cfg.output_size, cfg.rnn.output_size());
        let last = cfg.head.last_step();
        let y = gpu.ptr(ws.stack.output());
        let (rows, yin) = if last {
            self.gather_last(gpu, ws, lengths)?;
            (ws.b, gpu.ptr(&ws.last))
        } else {
            (n, y)
        };
        // logits = Y W_dec^T + b_dec: (R, D*P) x (D*P, V)
        let logits = gpu.ptr(&ws.logits);
        gpu.gemm(
            N,
            T,
            rows,
            v,
            dp,
            1.0,
            yin,
            dp,
            at(pw, self.dec_w),
            dp,
            0.0,
            logits,
            v,
        )?;
        if let Some(off) = self.dec_b {
            launch(
                gpu,
                &gpu.k.m.add_row_bias,
                rows * v,
                &[
                    Arg::I(rows as i32),
                    Arg::I(v as i32),
                    Arg::P(at(pw, off)),
                    Arg::P(logits),
                ],
            )?;
        }
        Ok(())
    }

    /// last[b] = each direction's output at sequence b's last step (as `Model`'s gather: the
    /// forward direction at `lengths[b] - 1`, the reverse direction at step 0): (B, D*P).
    fn gather_last(
        &self,
        gpu: &Gpu,
        ws: &mut GpuModelWorkspace,
        lengths: Option<&[usize]>,
    ) -> Result<()> {
        let rnn = &self.model.cfg().rnn;
        let (nb, p, nd) = (ws.b, rnn.out_size(), rnn.dirs());
        let dp = nd * p;
        let mut src = vec![0i32; nb * nd];
        for b in 0..nb {
            for d in 0..nd {
                let s = match (d, lengths) {
                    (1, _) => 0,
                    (_, Some(l)) => l[b] - 1,
                    (_, None) => ws.t - 1,
                };
                src[b * nd + d] = ((s * nb + b) * dp + d * p) as i32;
            }
        }
        gpu.put(&ws.last_src, &src)?;
        launch(
            gpu,
            &gpu.k.m.gather_last,
            nb * dp,
            &[
                Arg::I(nb as i32),
                Arg::I(nd as i32),
                Arg::I(p as i32),
                Arg::P(gpu.ptr(&ws.last_src)),
                Arg::P(gpu.ptr(ws.stack.output())),
                Arg::P(gpu.ptr(&ws.last)),
            ],
        )
    }

    /// Cross-entropy of `ws.logits` against `targets` (one per row; `recur::ops::loss::IGNORE`
    /// for rows without loss), as `Model::loss`: writes `scale * dL/dlogits` into `ws.dlogits`
    /// and returns (summed loss, count). Waits for the device (the sums come back to the host).
    pub fn loss(
        &self,
        gpu: &Gpu,
        ws: &mut GpuModelWorkspace,
        targets: &[u32],
        scale: f32,
    ) -> Result<(f64, usize)> {
        let cfg = &self.model.cfg();
        if cfg.head.regression() {
            return Err(Error::invalid(format!(
                "cross-entropy needs a classification head, not {}",
                cfg.head.name()
            )));
        }
        let r = ws.rows();
        if targets.len() < r {
            return Err(Error::invalid(format!(
                "need {r} targets, got {}",
                targets.len()
            )));
        }
        gpu.put(&ws.tgt_ids, &targets[..r])?;
        // one warp per row
        launch(
            gpu,
            &gpu.k.m.xent_rows,
            r * 32,
            &[
                Arg::I(r as i32),
                Arg::I(cfg.output_size as i32),
                Arg::P(gpu.ptr(&ws.logits)),
                Arg::P(gpu.ptr(&ws.tgt_ids)),
                Arg::F(scale),
                Arg::P(gpu.ptr(&ws.dlogits)),
                Arg::P(gpu.ptr(&ws.row_loss)),
                Arg::P(gpu.ptr(&ws.row_n)),
            ],
        )?;
        let (sum, count, bad) = self.sum_rows(gpu, ws, r)?;
        if bad {
            return Err(Error::invalid(format!(
                "a target is outside the {} classes",
                cfg.output_size
            )));
        }
        Ok((sum, count))
    }

    /// Squared error of `ws.logits` against `targets` (R, V) for a regression head, as
    /// `Model::loss_mse` (NaN targets mark padded elements). Waits for the device.
    pub fn loss_mse(
        &self,
        gpu: &Gpu,
        ws: &mut GpuModelWorkspace,
        targets: &[f32],
        scale: f32,
    ) -> Result<(f64, usize)> {
        let cfg = &self.model.cfg();
        if !cfg.head.regression() {
            return Err(Error::invalid(format!(
                "squared error needs a regression head, not {}",
                cfg.head.name()
            )));
        }
        let n = ws.rows() * cfg.output_size;
        if targets.len() < n {
            return Err(Error::invalid(format!(
                "need {n} regression targets, got {}",
                targets.len()
            )));
        }
        gpu.put(&ws.tgt_f, &targets[..n])?;
        launch(
            gpu,
            &gpu.k.m.mse_elems,
            n,
            &[
                Arg::L(n as i64),
                Arg::P(gpu.ptr(&ws.logits)),
                Arg::P(gpu.ptr(&ws.tgt_f)),
                Arg::F(scale),
                Arg::P(gpu.ptr(&ws.dlogits)),
                Arg::P(gpu.ptr(&ws.row_loss)),
                Arg::P(gpu.ptr(&ws.row_n)),
            ],
        )?;
        let (sum, count, _) = self.sum_rows(gpu, ws, n)?;
        Ok((sum, count))
    }

    /// Sums the first `n` row losses and counts on the device (fixed order) and brings them back.
    fn sum_rows(&self, gpu: &Gpu, ws: &GpuModelWorkspace, n: usize) -> Result<(f64, usize, bool)> {
        launch_cfg(
            gpu,
            &gpu.k.m.sum_rows,
            LaunchConfig {
                grid_dim: (1, 1, 1),
                block_dim: (1024, 1, 1),
                shared_mem_bytes: 0,
            },
            &[
                Arg::L(n as i64),
                Arg::P(gpu.ptr(&ws.row_loss)),
                Arg::P(gpu.ptr(&ws.row_n)),
                Arg::P(gpu.ptr(&ws.sums)),
            ],
        )?;
        let s = gpu.get(&ws.sums, 3)?;
        Ok((s[0], s[1] as usize, s[2] != 0.0))
    }

    /// Backward from `ws.dlogits` (and optional final-state gradients) through the decoder, the
    /// stack and the embedding, after [`GpuModel::forward`] on this workspace (whose input,
    /// lengths and dropout masks it reuses), as `Model::backward`. Gradients are accumulated into
    /// `grads` (the parameters' layout); `dx` (dense input only, (T, B, I)) is accumulated too;
    /// `ws.stack.dh0` / `dc0` receive the initial states' gradients.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        gpu: &Gpu,
        ws: &mut GpuModelWorkspace,
        params: &DevBuf,
        grads: &mut DevBuf,
        dh_n: Option<&DevBuf>,
        dc_n: Option<&DevBuf>,
        dx: Option<&mut DevBuf>,
    ) -> Result<()> {
        let cfg = &self.model.cfg();
        let kind = ws
            .input
            .ok_or_else(|| Error::invalid("backward needs a forward on this workspace first"))?;
        if grads.len() < self.num_params() {
            return Err(Error::invalid(format!(
                "gradient buffer holds {} values, the model has {}",
                grads.len(),
                self.num_params()
            )));
        }
        let n = ws.t * ws.b;
        self.decode_backward(gpu, ws, gpu.ptr(params), gpu.ptr(grads))?;
        let GpuModelWorkspace {
            stack: sws,
            ids,
            x,
            emb,
            demb,
            dy,
            ..
        } = ws;
        match kind {
            InputKind::OneHot => self.stack.backward(
                gpu,
                sws,
                params,
                grads,
                GpuInput::OneHot(ids),
                Some(dy),
                dh_n,
                dc_n,
                None,
            )?,
            InputKind::Dense => self.stack.backward(
                gpu,
                sws,
                params,
                grads,
                GpuInput::Dense(x),
                Some(dy),
                dh_n,
                dc_n,
                dx,
            )?,
            InputKind::Embedding => {
                gpu.zero(gpu.ptr(demb), n * cfg.embed_dim)?;
                self.stack.backward(
                    gpu,
                    sws,
                    params,
                    grads,
                    GpuInput::Dense(&*emb),
                    Some(dy),
                    dh_n,
                    dc_n,
                    Some(demb),
                )?;
                // embedding backward: scatter-add each step's gradient into its token's row
                let e = cfg.embed_dim;
                let off = self.emb.expect("embedding input has embedding.weight");
                launch(
                    gpu,
                    &gpu.k.m.embed_scatter,
                    n * e,
                    &[
                        Arg::I(n as i32),
                        Arg::I(e as i32),
                        Arg::P(gpu.ptr(ids)),
                        Arg::P(gpu.ptr(demb)),
                        Arg::P(at(gpu.ptr(grads), off)),
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Backward through the decoder: dW_dec and db_dec accumulated into the gradients at `pg`,
    /// dY into `ws.dy` (scattered back to each sequence's last step for a last-step head).
    fn decode_backward(
        &self,
        gpu: &Gpu,
        ws: &mut GpuModelWorkspace,
        pw: Ptr,
        pg: Ptr,
    ) -> Result<()> {
        let cfg = &self.model.cfg();
        let n = ws.t * ws.b;
        let (v, dp) = (cfg.output_size, cfg.rnn.output_size());
        let last = cfg.head.last_step();
        let rows = ws.rows();
        let dlogits = gpu.ptr(&ws.dlogits);
        let yin = if last {
            gpu.ptr(&ws.last)
        } else {
            gpu.ptr(ws.stack.output())
        };
        // forward was: logits = Y W_dec^T + b_dec
        // dW_dec += dlogits^T Y: (V, R) x (R, D*P)
        gpu.gemm(
            T,
            N,
            v,
            dp,
            rows,
            1.0,
            dlogits,
            v,
            yin,
            dp,
            1.0,
            at(pg, self.dec_w),
            dp,
        )?;
        if let Some(off) = self.dec_b {
            // db_dec += column sums of dlogits: (1, R) x (R, V)
            gpu.gemm(
                N,
                N,
                1,
                v,
                rows,
                1.0,
                gpu.ptr(&ws.ones),
                rows,
                dlogits,
                v,
                1.0,
                at(pg, off),
                v,
            )?;
        }
        // dY = dlogits W_dec: (R, V) x (V, D*P)
        let dyin = if last {
            gpu.ptr(&ws.dlast)
        } else {
            gpu.ptr(&ws.dy)
        };
        gpu.gemm(
            N,
            N,
            rows,
            dp,
            v,
            1.0,
            dlogits,
            v,
            at(pw, self.dec_w),
            dp,
            0.0,
            dyin,
            dp,
        )?;
        if last {
            // forward was: last[b] = y[last step of b, b]: scatter back, zero elsewhere
            let rnn = &cfg.rnn;
            let (nb, p, nd) = (ws.b, rnn.out_size(), rnn.dirs());
            gpu.zero(gpu.ptr(&ws.dy), n * dp)?;
            launch(
                gpu,
                &gpu.k.m.scatter_last,
                nb * dp,
                &[
                    Arg::I(nb as i32),
                    Arg::I(nd as i32),
                    Arg::I(p as i32),
                    Arg::P(gpu.ptr(&ws.last_src)),
                    Arg::P(gpu.ptr(&ws.dlast)),
                    Arg::P(gpu.ptr(&ws.dy)),
                ],
            )?;
        }
        Ok(())
    }
}
