//! `recur hello`: the lecture's worked example, printed as the lecture lays it out, then trained
//! with BPTT until it predicts "ello".

use crate::args::Optimizer;
use anyhow::Result;
use recur::optim;
use recur_study::lecture::{self, Step};
use serde_json::json;
use std::io::Write;

#[derive(clap::Args)]
#[command(mut_arg("optim", |a| a.default_value("sgd")))]
#[command(mut_arg("learning_rate", |a| a.default_value("0.5")))]
pub struct Args {
    /// Print one JSON object on stdout instead of the tables.
    #[arg(long)]
    json: bool,
    /// Also write the example as one self-contained HTML page to FILE: the unrolled network
    /// with every number, a forward and a BPTT stepper, the training by epoch (works offline).
    #[arg(long, value_name = "FILE")]
    html: Option<std::path::PathBuf>,
    #[command(flatten)]
    opt: Optimizer,
    /// Stop once all four predictions are right and the mean loss is below this.
    #[arg(long, default_value_t = 0.1)]
    target_loss: f64,
    /// Give up after this many epochs (one epoch = one BPTT update on "hell" -> "ello").
    #[arg(long, default_value_t = 5000)]
    max_epochs: usize,
}

fn v(x: &[f64]) -> String {
    let parts: Vec<String> = x.iter().map(|v| format!("{v:7.4}")).collect();
    format!("({})", parts.join(", "))
}

fn print_table(out: &mut impl Write, steps: &[Step]) -> std::io::Result<()> {
    for s in steps {
        writeln!(
            out,
            "t = {}: input '{}', target '{}'",
            s.t, s.input, s.target
        )?;
        writeln!(out, "  x_t W_xh       = {}", v(&s.xw))?;
        writeln!(out, "  h_(t-1) W_hh   = {}", v(&s.hw))?;
        writeln!(out, "  h_t = tanh(..) = {}", v(&s.h))?;
        writeln!(out, "  o_t = h_t W_ho = {}", v(&s.logits))?;
        writeln!(out, "  softmax(o_t)   = {}", v(&s.probs))?;
        let mark = if s.pred == s.target { "right" } else { "WRONG" };
        writeln!(out, "  prediction     = '{}' ({mark})", s.pred)?;
    }
    Ok(())
}

fn step_json(s: &Step) -> serde_json::Value {
    json!({"t": s.t, "input": s.input, "target": s.target, "xw": s.xw, "hw": s.hw, "h": s.h,
           "logits": s.logits, "probs": s.probs, "pred": s.pred})
}

/// Whether the page's slider stops at the model after `e` updates: 0-3, then 1, 2, 3, 5 times
/// powers of ten.
fn shown_epoch(e: usize) -> bool {
    if e <= 3 {
        return true;
    }
    let mut p = 1;
    while p * 10 <= e {
        p *= 10;
    }
    e.is_multiple_of(p) && [1, 2, 3, 5].contains(&(e / p))
}

fn snapshot(m: &recur::model::Model, epoch: usize, params: &[f64]) -> serde_json::Value {
    let (steps, loss) = lecture::trace(m, params);
    json!({"epoch": epoch, "loss": loss, "preds": lecture::preds(&steps),
           "steps": steps.iter().map(step_json).collect::<Vec<_>>()})
}

/// The page: page/hello.html with the example's numbers embedded as JSON.
fn html_page(
    m: &recur::model::Model,
    before: &[Step],
    curve: &[(usize, f64)],
    snapshots: &[serde_json::Value],
) -> Result<String> {
    let p0 = lecture::params::<f64>(m);
    let bptt = lecture::backward_trace(m, &p0);
    let sum_hh: Vec<Vec<f64>> = (0..3)
        .map(|i| {
            (0..3)
                .map(|j| bptt.iter().map(|b| b.d_w_hh[i][j]).sum())
                .collect()
        })
        .collect();
    let norms = lecture::jacobian_norms(m, &p0);
    let low = before
        .iter()
        .flat_map(|s| s.h.iter().map(|h| 1.0 - h * h))
        .fold(f64::INFINITY, f64::min);
    let vanish = format!(
        "Each step back multiplies the gradient by diag(1 &minus; h<sub>t</sub><sup>2</sup>) W<sub>hh</sub><sup>T</sup>. \
         For these weights its size (Frobenius norm) after 1, 2 and 3 steps back from t = 4 is \
         <span class=num id=jac-norms>{:.4}, {:.4}, {:.4}</span>: tanh's slope 1 &minus; h<sup>2</sup> is below 1 \
         (here down to {low:.4}, where h is near 1), so over a long sequence the product \
         shrinks towards zero and the early steps stop learning (vanishing gradient, 기울기 소실). \
         LSTM and GRU carry their state through a gated sum instead of this product, which lets the \
         gradient pass many steps without shrinking; <code>recur gradflow</code> measures both.",
        norms[0], norms[1], norms[2]
    );
    let data = json!({
        "gradflow": gradflow_curves()?,
        "vocab": lecture::VOCAB.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        "steps": before.iter().map(step_json).collect::<Vec<_>>(),
        "bptt": bptt,
        "grads": {"w_hh": sum_hh},
        "training": {"curve": curve, "snapshots": snapshots},
        "vanish": vanish,
    });
    crate::page::render(include_str!("page/hello.html"), &data)
}

/// The page's gradient-flow chart: ||dL/dh_(T-k)|| / ||dL/dh_T|| against k for the tanh RNN,
/// and for LSTM and GRU at PyTorch's initialization (gate bias 0) and with the carry gate opened
/// (forget / update gate bias 3), measured as `recur gradflow --gate-biases 0,3` measures them
/// with its defaults (T = 100, H = 32, 16 sequences, seed 1).
fn gradflow_curves() -> Result<serde_json::Value> {
    use recur::cell::{Activation, CellKind};
    use recur_study::gradflow::{gradflow, GradflowSpec};
    let mut out = Vec::new();
    for (cell, bias) in [
        (CellKind::Rnn(Activation::Tanh), 0.0),
        (CellKind::Lstm, 0.0),
        (CellKind::Lstm, 3.0),
        (CellKind::Gru, 0.0),
        (CellKind::Gru, 3.0),
    ] {
        let spec = GradflowSpec {
            cell,
            input_size: 4,
            hidden: 32,
            t: 100,
            sequences: 16,
            scale: 1.0,
            gate_bias: bias,
            seed: 1,
        };
        let res = gradflow(&spec, &mut |_| {})?;
        out.push(json!({"cell": cell.name(), "gate_bias": bias, "rel": res.rel}));
    }
    Ok(json!(out))
}

pub fn run(a: Args) -> Result<()> {
    a.opt.check()?;
    let kind = a.opt.optim.kind(0.0);
    let lr = a.opt.learning_rate;
    let m = lecture::model();
    let mut params: Vec<f64> = lecture::params(&m);
    let (before, loss0) = lecture::trace(&m, &params);
    let mut opt = optim::Optimizer::new(kind.clone(), lr, params.len());
    let mut curve = Vec::new();
    // the page's epoch slider: the model after 0, 1, 2, 3, 5, 10, 20, 30, 50, ... updates
    let mut snapshots = Vec::new();
    let epochs = lecture::train(
        &m,
        &mut params,
        &mut opt,
        a.max_epochs,
        a.target_loss,
        |e, l, p| {
            curve.push((e, l));
            if a.html.is_some() && shown_epoch(e - 1) {
                snapshots.push(snapshot(&m, e - 1, p));
            }
        },
    );
    let (after, loss1) = lecture::trace(&m, &params);
    if let Some(path) = &a.html {
        snapshots.push(snapshot(&m, epochs, &params));
        let page = html_page(&m, &before, &curve, &snapshots)?;
        crate::page::write(path, &page)?;
    }
    let trained_ok = lecture::preds(&after) == "ello";

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if a.json {
        let j = json!({
            "vocab": lecture::VOCAB.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "steps": before.iter().map(step_json).collect::<Vec<_>>(),
            "loss": loss0,
            "trained": {"optimizer": kind.name(), "lr": lr, "epochs": epochs, "loss": loss1,
                        "preds": lecture::preds(&after),
                        "steps": after.iter().map(step_json).collect::<Vec<_>>()},
        });
        writeln!(out, "{j}")?;
    } else {
        writeln!(
            out,
            "The lecture's RNN: vocabulary h=0 e=1 l=2 o=3, 3 tanh units, no biases, h_0 = 0."
        )?;
        writeln!(
            out,
            "Row vectors: h_t = tanh(x_t W_xh + h_(t-1) W_hh), o_t = h_t W_ho.\n"
        )?;
        print_table(&mut out, &before)?;
        writeln!(
            out,
            "\nAt t = 2 the input 'e' should predict 'l' (index 2), but o_2 is largest at index 3:\n\
             the untrained model predicts '{}'. Predictions: \"{}\", mean cross-entropy {:.4}.\n",
            before[1].pred,
            lecture::preds(&before),
            loss0
        )?;
        writeln!(
            out,
            "Training with BPTT: {} with learning rate {}, mean cross-entropy over the 4 steps.",
            kind.name(),
            lr
        )?;
        let marks: Vec<usize> = {
            let n = curve.len();
            let mut m: Vec<usize> = (0..n)
                .filter(|&i| i < 5 || (i + 1).is_power_of_two())
                .collect();
            if n > 0 && !m.contains(&(n - 1)) {
                m.push(n - 1);
            }
            m
        };
        for i in marks {
            let (e, l) = curve[i];
            writeln!(out, "  epoch {e:5}  loss {l:.4}")?;
        }
        writeln!(out, "\nAfter {epochs} epochs (loss {loss1:.4}):\n")?;
        print_table(&mut out, &after)?;
        writeln!(
            out,
            "\nPredictions: \"{}\" for inputs \"hell\".",
            lecture::preds(&after)
        )?;
    }
    if !trained_ok {
        anyhow::bail!(
            "training stopped after {epochs} epochs without predicting \"ello\" (got \"{}\"); try another --learning-rate or more --max-epochs",
            lecture::preds(&after)
        );
    }
    Ok(())
}
