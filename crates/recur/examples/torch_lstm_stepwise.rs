//! A PyTorch `nn.LSTM` loaded from its state dict (safetensors, `torch.nn.LSTM.state_dict()`
//! names: `weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, `weight_hr_l0`, ...) and
//! run one step at a time with `recur::stream::Streamer`, checked against the whole-sequence
//! forward.
//!
//! ```sh
//! cargo run --release -p recur --example torch_lstm_stepwise [-- FILE [PREFIX]]
//! ```
//!
//! Without arguments it reads the LSTM of case `lstm_proj_l1` (a projection, h0 and c0 given) in
//! the PyTorch fixture `tests/fixtures/stack_f32.safetensors` (written by
//! `tests/fixtures/gen_torch.py`), and checks against torch's own outputs and final states too.
//! With FILE, it reads the tensors `PREFIX` + torch's names (PREFIX is empty by default), e.g. a
//! file written by
//!
//! ```python
//! from safetensors.torch import save_file
//! save_file(lstm.state_dict(), "lstm.safetensors")
//! ```
//!
//! and, when the file also holds `x` (T, B, I), and optionally `h0`, `c0` (and torch's `y`,
//! `h_n`, `c_n` to compare against), runs on those; otherwise on random input from zero states.

use recur::cell::CellKind;
use recur::model::{Head, Input, Model, ModelConfig};
use recur::rng::Rng;
use recur::stack::StackConfig;
use recur::stream::{Carry, Streamer};
use safetensors::tensor::{Dtype, SafeTensors};
use std::path::PathBuf;

/// Step by step against the whole sequence: the same operations on the same numbers (see
/// `tests/streaming.rs`), so a few f32 roundings apart at most.
const STREAM_REL_TOL: f64 = 1e-6;
/// recur against torch, as in `tests/torch_parity.rs`.
const TORCH_REL_TOL: f64 = 1e-5;

type Res<T> = Result<T, String>;

/// The f32 tensor `name` and its shape, or None when the file has no such tensor.
fn tensor(st: &SafeTensors, name: &str) -> Res<Option<(Vec<f32>, Vec<usize>)>> {
    let Ok(t) = st.tensor(name) else {
        return Ok(None);
    };
    if t.dtype() != Dtype::F32 {
        return Err(format!("{name} is {}, expected F32", t.dtype()));
    }
    let v = t.data().chunks_exact(4);
    let v = v.map(|c| f32::from_le_bytes(c.try_into().unwrap()));
    Ok(Some((v.collect(), t.shape().to_vec())))
}

/// Worst |a - b| relative to the largest |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-30f64, |m, v| m.max(v.abs() as f64));
    let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64);
    worst.fold(0.0, f64::max) / scale
}

fn check(what: &str, a: &[f32], b: &[f32], tol: f64) -> Res<()> {
    let e = rel_err(a, b);
    println!("  {what:32} relative difference {e:.1e}");
    if e <= tol {
        Ok(())
    } else {
        Err(format!("{what}: relative difference {e:e} above {tol:e}"))
    }
}

/// The LSTM's configuration read off the shapes of its tensors.
fn lstm_config(st: &SafeTensors, prefix: &str) -> Res<StackConfig> {
    let shape = |n: &str| tensor(st, &format!("{prefix}{n}")).map(|t| t.map(|t| t.1));
    let w_ih = shape("weight_ih_l0")?.ok_or(format!("no tensor {prefix}weight_ih_l0"))?;
    let w_hh = shape("weight_hh_l0")?.ok_or(format!("no tensor {prefix}weight_hh_l0"))?;
    if shape("weight_ih_l0_reverse")?.is_some() {
        return Err("a bidirectional LSTM cannot run step by step".into());
    }
    let layers = (0..).take_while(|l| st.tensor(&format!("{prefix}weight_ih_l{l}")).is_ok());
    let (hidden, proj) = (w_ih[0] / 4, shape("weight_hr_l0")?.map_or(0, |s| s[0]));
    Ok(StackConfig::new(CellKind::Lstm, w_ih[1], hidden)
        .with_layers(layers.count())
        .with_bias(shape("bias_ih_l0")?.is_some())
        .with_proj_size(if proj == w_hh[1] { proj } else { 0 }))
}

fn run() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stack_f32.safetensors");
    // where the weights are, and where the input (and torch's results) are
    let (path, prefix, data) = match args.first() {
        None => (fixture, "lstm_proj_l1/param/".to_string(), "lstm_proj_l1/"),
        Some(p) => (
            PathBuf::from(p),
            args.get(1).cloned().unwrap_or_default(),
            "",
        ),
    };
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let rnn = lstm_config(&st, &prefix)?;
    let (ni, p) = (rnn.input_size, rnn.out_size());
    println!(
        "{}: LSTM input {ni}, hidden {}, proj {}, {} layer(s)",
        path.display(),
        rnn.hidden_size,
        rnn.proj_size,
        rnn.num_layers
    );

    // A model around the stack: dense input, and a decoder (left at zero) that nothing here
    // reads; the stack's outputs are the LSTM's.
    let model = Model::new(ModelConfig::dense(ni, rnn, 1, Head::StepRegression))
        .map_err(|e| format!("config: {e}"))?;
    let mut params = vec![0.0f32; model.num_params()];
    for e in &model.layout().entries {
        let Some(torch_name) = e.name.strip_prefix("rnn.") else {
            continue;
        };
        let (v, shape) = tensor(&st, &format!("{prefix}{torch_name}"))?
            .ok_or(format!("no tensor {prefix}{torch_name}"))?;
        if shape != e.shape {
            return Err(format!(
                "{torch_name}: shape {shape:?}, expected {:?}",
                e.shape
            ));
        }
        params[e.range()].copy_from_slice(&v);
    }

    // the input: the file's x (T, B, I) and initial states, or random ones
    let (x, t, b, init) = match tensor(&st, &format!("{data}x"))? {
        Some((x, s)) => {
            let mut init = Carry::zeros(&model, s[1]);
            if let Some((h0, _)) = tensor(&st, &format!("{data}h0"))? {
                init.h = h0;
            }
            if let Some((c0, _)) = tensor(&st, &format!("{data}c0"))? {
                init.c = c0;
            }
            (x, s[0], s[1], init)
        }
        None => {
            let (t, b) = (10, 2);
            let mut rng = Rng::new(1);
            let x = (0..t * b * ni).map(|_| rng.normal() as f32).collect();
            (x, t, b, Carry::zeros(&model, b))
        }
    };
    println!("input: {t} steps of {b} sequences");

    // the whole sequence at once
    let mut ws = model.workspace(t, b);
    let (h0, c0) = init.as_init();
    model.forward(&mut ws, &params, Input::Dense(&x), h0, c0, None, None);

    // one step at a time, the state carried by the streamer
    let mut stream = Streamer::new(&model, &params, b).map_err(|e| e.to_string())?;
    stream.set_state(init).map_err(|e| e.to_string())?;
    let mut y = Vec::with_capacity(t * b * p);
    for step in x.chunks_exact(b * ni) {
        stream.step(Input::Dense(step));
        y.extend_from_slice(stream.outputs());
    }
    let whole = ws.stack.output();
    check("step by step vs whole: y", &y, whole, STREAM_REL_TOL)?;
    check(
        "step by step vs whole: h_n",
        &stream.state().h,
        &ws.stack.h_n,
        STREAM_REL_TOL,
    )?;
    check(
        "step by step vs whole: c_n",
        &stream.state().c,
        &ws.stack.c_n,
        STREAM_REL_TOL,
    )?;
    for (name, ours) in [
        ("y", &y[..]),
        ("h_n", &stream.state().h[..]),
        ("c_n", &stream.state().c[..]),
    ] {
        if let Some((theirs, _)) = tensor(&st, &format!("{data}{name}"))? {
            check(
                &format!("step by step vs torch: {name}"),
                ours,
                &theirs,
                TORCH_REL_TOL,
            )?;
        }
    }
    println!("ok");
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("torch_lstm_stepwise: error: {e}");
        std::process::exit(1);
    }
}
