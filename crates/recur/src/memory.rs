//! Memory counted before it is allocated: what a model's parameters and a workspace for (T, B)
//! batches will take, and the check that refuses a plan the machine cannot hold, with one line
//! naming the size, instead of an allocation failure that aborts the process.
//!
//! The counts are in `u128`, so a configuration whose sizes overflow `usize` is refused like any
//! other that does not fit. They follow the allocations of `Stack::workspace`, `DirCache::new`
//! and `Model::workspace`, plus the buffers the fast path sizes on first use (packed input
//! weights, the transposed gate gradients), so they err on the large side; a test keeps them
//! from falling below what the workspaces really hold.

use crate::cell::{CacheSizes, CellKind, DirDims};
use crate::error::{Error, Result};
use crate::model::{InputKind, Model};
use crate::stack::StackConfig;

/// Bytes of memory this machine has free for a new allocation (Linux's `MemAvailable`), or
/// `None` where it cannot be read.
pub fn available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Refuses `bytes` for `what` when they exceed the memory [`available`] now, or what one
/// allocation can ever hold (`isize::MAX`).
pub fn check(what: &str, bytes: u128) -> Result<()> {
    let free = available();
    let limit = free.map_or(isize::MAX as u128, |a| (a as u128).min(isize::MAX as u128));
    if bytes > limit {
        return Err(Error::OutOfMemory {
            what: what.to_string(),
            bytes,
            available: free,
        });
    }
    Ok(())
}

/// Parameters of one stack, counted without overflow (whatever the sizes a damaged file claims).
pub fn stack_params(cfg: &StackConfig) -> u128 {
    let (h, p) = (cfg.hidden_size as u128, cfg.out_size() as u128);
    let gh = cfg.kind().gates() as u128 * h;
    let per_dir = |l: usize| {
        let i = cfg.layer_input(l) as u128;
        let mut n = gh * (i + p);
        if cfg.bias {
            n += 2 * gh;
        }
        if cfg.proj_size > 0 {
            n += p * h;
        }
        n * cfg.dirs() as u128
    };
    // layer 0, then num_layers - 1 layers of the same size
    let rest = (cfg.num_layers as u128).saturating_sub(1);
    per_dir(0).saturating_add(per_dir(1).saturating_mul(rest))
}

/// Parameters of a whole model (embedding, stack, decoder), counted without overflow.
pub fn model_params(cfg: &crate::model::ModelConfig) -> u128 {
    let mut n = stack_params(&cfg.rnn);
    if cfg.input == InputKind::Embedding {
        n = n.saturating_add(cfg.input_size as u128 * cfg.embed_dim as u128);
    }
    let out = cfg.output_size as u128;
    n = n.saturating_add(out * cfg.rnn.output_size() as u128);
    if cfg.decoder_bias {
        n = n.saturating_add(out);
    }
    n
}

/// Elements of one direction's [`crate::cell::DirCache`] after a forward and backward at `d`, the
/// buffers sized on first use at their largest ([`CacheSizes::total`]).
pub fn dir_cache_elems(d: &DirDims) -> u128 {
    CacheSizes::of(d).total()
}

/// Bytes of a stack's workspace ([`crate::stack::StackWorkspace`]) for batches of `b`
/// sequences of `t` steps, elements of `elem_bytes` each.
pub fn stack_workspace_bytes(r: &StackConfig, t: usize, b: usize, elem_bytes: usize) -> u128 {
    let (tb, bb) = (t as u128 * b as u128, b as u128);
    let (nl, nd) = (r.num_layers as u128, r.dirs() as u128);
    let (h, p) = (r.hidden_size as u128, r.out_size() as u128);
    let out = tb * nd * p;
    let lstm = r.kind() == CellKind::Lstm;
    let drop = r.dropout > 0.0;
    let mut n = 0u128;
    for l in 0..r.num_layers {
        for d in 0..r.dirs() {
            n += dir_cache_elems(&DirDims {
                kind: r.kind(),
                t,
                b,
                i: r.layer_input(l),
                h: r.hidden_size,
                p: r.out_size(),
                reverse: d == 1,
            });
        }
    }
    // per layer outputs and their gradients; dropped inputs and masks; the input's gradient;
    // the final states and their gradients
    n += 2 * nl * out;
    if drop {
        n += 2 * (nl - 1) * out;
    }
    if r.num_layers > 1 {
        n += out;
    }
    n += 2 * nl * nd * bb * p + if lstm { 2 * nl * nd * bb * h } else { 0 };
    // weight drop: a masked copy of every weight_hh and its mask, one weight_hh's gradient
    if r.weight_drop > 0.0 {
        let w_hh = r.kind().gates() as u128 * h * p;
        n += 2 * nl * nd * w_hh + w_hh;
    }
    // output dropout: the dropped outputs and their mask
    if r.dropout_output > 0.0 {
        n += 2 * out;
    }
    // input dropout: the dropped input, its mask and its gradient
    if r.dropout_input > 0.0 {
        n += 3 * tb * r.input_size as u128;
    }
    n * elem_bytes as u128
}

/// Bytes of `model`'s workspace for batches of `b` sequences of `t` steps, elements of
/// `elem_bytes` each: the stack's and the model's own buffers around it.
pub fn workspace_bytes(model: &Model, t: usize, b: usize, elem_bytes: usize) -> u128 {
    let cfg = &model.cfg();
    let r = &cfg.rnn;
    let (tb, bb) = (t as u128 * b as u128, b as u128);
    let mut n = 0u128;
    // the model around the stack: embeddings and their gradient, logits and their gradient,
    // the stack output's gradient, last-step outputs
    let e = if cfg.input == InputKind::Embedding {
        tb * cfg.embed_dim as u128
    } else {
        0
    };
    let dp = r.output_size() as u128;
    let v = cfg.output_size as u128;
    let rows = if cfg.head.last_step() { bb } else { tb };
    n += 2 * e + 2 * rows * v + tb * dp + if cfg.head.last_step() { 2 * bb * dp } else { 0 };
    n * elem_bytes as u128 + stack_workspace_bytes(r, t, b, elem_bytes)
}

/// Bytes a float32 training run of `model` on (T, B) batches holds: parameters, gradients, the
/// optimizer's two moments and a copy for undoing a step (five copies), and the workspace.
pub fn training_bytes(model: &Model, t: usize, b: usize) -> u128 {
    5 * 4 * model.num_params() as u128 + workspace_bytes(model, t, b, 4)
}

/// [`check`] of a float32 training run of `model` on (T, B) batches, before anything of it is
/// allocated; the error names the model's size and the batch.
pub fn check_training(model: &Model, t: usize, b: usize) -> Result<()> {
    check(
        &format!(
            "training a model of {} parameters on batches of {b} x {t} steps",
            model.num_params()
        ),
        training_bytes(model, t, b),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Head, ModelConfig};
    use crate::stack::Stack;

    fn models() -> Vec<Model> {
        let mut v = Vec::new();
        for kind in [
            CellKind::Lstm,
            CellKind::Gru,
            CellKind::Rnn(crate::cell::Activation::Tanh),
        ] {
            let rnn = StackConfig::new(kind, 12, 20).with_layers(2);
            v.push(Model::new(ModelConfig::char_model(30, 12, rnn)).unwrap());
            let rnn = StackConfig::new(kind, 5, 16)
                .with_bidirectional(true)
                .with_dropout(0.2);
            v.push(Model::new(ModelConfig::dense(5, rnn, 3, Head::LastRegression)).unwrap());
        }
        let rnn = StackConfig::new(CellKind::Lstm, 7, 24).with_proj_size(9);
        v.push(Model::new(ModelConfig::dense(7, rnn, 4, Head::StepClasses)).unwrap());
        // every regulariser's buffers, on a projected LSTM (weight_hh of 4H x P)
        let rnn = StackConfig::new(CellKind::Lstm, 7, 24)
            .with_proj_size(9)
            .with_layers(2)
            .with_bidirectional(true)
            .with_dropout(0.1)
            .with_weight_drop(0.2)
            .with_dropout_output(0.3)
            .with_dropout_input(0.4);
        v.push(Model::new(ModelConfig::dense(7, rnn, 4, Head::StepClasses)).unwrap());
        v
    }

    #[test]
    fn parameter_count_matches_the_layout() {
        for m in models() {
            assert_eq!(
                stack_params(&m.cfg().rnn),
                Stack::new(m.cfg().rnn.clone()).unwrap().num_params() as u128
            );
        }
    }

    #[test]
    fn workspace_estimate_covers_what_is_allocated() {
        for m in models() {
            let (t, b) = (9, 4);
            let mut ws = m.workspace::<f32>(t, b);
            // one forward and backward sizes the buffers the fast path allocates on first use
            let mut params = vec![0.0f32; m.num_params()];
            m.init(&mut params, &mut crate::rng::Rng::new(1));
            let mut grads = vec![0.0f32; m.num_params()];
            let ids: Vec<u32> = (0..t * b)
                .map(|k| (k % m.cfg().input_size) as u32)
                .collect();
            let x = vec![0.5f32; t * b * m.cfg().input_size];
            let input = match m.cfg().input {
                InputKind::Dense => crate::model::Input::Dense(&x),
                _ => crate::model::Input::Tokens(&ids),
            };
            m.forward(&mut ws, &params, input, None, None, None, None);
            m.backward(&mut ws, &params, &mut grads, input, None, None, None, None);
            let held = ws.stack.bytes() as u128;
            let est = workspace_bytes(&m, t, b, 4);
            // the estimate includes the buffers the fast path sizes on first use, so it is above
            // what a fresh workspace holds, but by less than those buffers could ever take
            assert!(est >= held, "{est} < {held}");
            assert!(est < 4 * held, "estimate {est} far above {held}");
        }
    }

    /// A fresh stack workspace holds exactly the estimate less the buffers the fast path sizes on
    /// first use (at their largest in the estimate); after a forward and backward it holds no
    /// more than the estimate, in training and in inference mode.
    #[test]
    fn stack_workspace_estimate_equals_the_allocation() {
        for m in models() {
            let r = &m.cfg().rnn;
            for (t, b) in [(9, 4), (1, 1), (16, 16)] {
                let mut lazy = 0u128;
                for l in 0..r.num_layers {
                    for d in 0..r.dirs() {
                        let s = CacheSizes::of(&DirDims {
                            kind: r.kind(),
                            t,
                            b,
                            i: r.layer_input(l),
                            h: r.hidden_size,
                            p: r.out_size(),
                            reverse: d == 1,
                        });
                        lazy += s.total() - s.eager();
                    }
                }
                let est = stack_workspace_bytes(r, t, b, 4);
                let stack = Stack::new(r.clone()).unwrap();
                let mut ws = stack.workspace::<f32>(t, b);
                assert_eq!(ws.bytes() as u128, est - 4 * lazy, "{r:?} T={t} B={b}");
                let mut params = vec![0.0f32; stack.num_params()];
                stack.init(&mut params, &mut crate::rng::Rng::new(2));
                let mut grads = vec![0.0f32; stack.num_params()];
                let x = vec![0.25f32; t * b * r.input_size];
                let input = crate::cell::LayerInput::Dense {
                    x: &x,
                    ld: r.input_size,
                };
                stack.forward_from_zeros(&mut ws, &params, input);
                let dy = vec![0.5f32; t * b * r.output_size()];
                stack.backward_from_outputs(&mut ws, &params, &mut grads, input, &dy);
                assert!(ws.bytes() as u128 <= est, "{r:?} T={t} B={b}: training");
                ws.set_inference(true);
                stack.forward_from_zeros(&mut ws, &params, input);
                assert!(ws.bytes() as u128 <= est, "{r:?} T={t} B={b}: inference");
            }
        }
    }

    #[test]
    fn an_impossible_plan_is_refused_with_its_size() {
        let rnn = StackConfig::new(CellKind::Lstm, 65, 100_000_000);
        let m = Model::new(ModelConfig::char_model(65, 65, rnn)).unwrap();
        let e = check_training(&m, 50, 50).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::OutOfMemory { .. }), "{msg}");
        assert!(msg.contains("PiB") || msg.contains("EiB"), "{msg}");
        assert!(!msg.contains('\n'));
        // a small one fits
        let rnn = StackConfig::new(CellKind::Lstm, 8, 8);
        let m = Model::new(ModelConfig::char_model(8, 8, rnn)).unwrap();
        check_training(&m, 4, 2).unwrap();
    }
}
