//! `recur gradcheck`: BPTT gradients against centred finite differences in f64, per tensor.

use anyhow::{bail, Result};
use recur::cell::CellKind;
use recur::model::{Head, InputKind, ModelConfig};
use recur::stack::StackConfig;
use recur::study::gradcheck::{gradcheck, GradcheckSpec};
use serde_json::json;
use std::io::Write;

#[derive(clap::Args)]
pub struct Args {
    /// Cell: rnn (= rnn_tanh), rnn_relu, lstm or gru.
    #[arg(long, default_value = "rnn")]
    cell: String,
    /// Non-linearity of the Elman RNN: tanh or relu (overrides the one implied by --cell rnn).
    #[arg(long)]
    activation: Option<String>,
    /// Input features per step.
    #[arg(long, default_value_t = 3)]
    input_size: usize,
    /// Hidden units per direction.
    #[arg(long, default_value_t = 5)]
    hidden: usize,
    /// Output classes (or values, for a regression head) of the decoder.
    #[arg(long, default_value_t = 4)]
    classes: usize,
    /// Head: step_classes, last_classes, step_regression or last_regression.
    #[arg(long, default_value = "step_classes")]
    head: String,
    /// Steps (at least 8 is the documented check).
    #[arg(long, default_value_t = 8)]
    seq_length: usize,
    /// Sequences per batch.
    #[arg(long, default_value_t = 3)]
    batch: usize,
    /// Stacked layers.
    #[arg(long, default_value_t = 1)]
    num_layers: usize,
    /// Two directions.
    #[arg(long)]
    bidirectional: bool,
    /// Leave out the biases.
    #[arg(long)]
    no_bias: bool,
    /// LSTM projection size (0 = none).
    #[arg(long, default_value_t = 0)]
    proj_size: usize,
    /// Inter-layer dropout (a fixed mask during the check).
    #[arg(long, default_value_t = 0.0)]
    dropout: f64,
    /// Random per-sequence lengths in 1..=T.
    #[arg(long)]
    varlen: bool,
    /// Zero initial states instead of random ones.
    #[arg(long)]
    zero_state: bool,
    /// Finite-difference step.
    #[arg(long, default_value_t = 1e-5)]
    eps: f64,
    /// Seed for weights and data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fail (exit 2) when any tensor's error exceeds this.
    #[arg(long, default_value_t = 1e-6)]
    tol: f64,
    /// Print {"tensors": [...], "max_rel_err": x} on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let mut kind = CellKind::parse(&a.cell).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown cell '{}' (expected rnn, rnn_relu, lstm or gru)",
            a.cell
        )
    })?;
    if let Some(act) = &a.activation {
        kind = match (kind, act.as_str()) {
            (CellKind::Rnn(_), "tanh") => CellKind::parse("rnn_tanh").expect("known"),
            (CellKind::Rnn(_), "relu") => CellKind::parse("rnn_relu").expect("known"),
            (CellKind::Rnn(_), other) => {
                bail!("unknown activation '{other}' (expected tanh or relu)")
            }
            _ => bail!("--activation applies to --cell rnn only"),
        };
    }
    if a.seq_length == 0 || a.batch == 0 || a.input_size == 0 || a.classes == 0 {
        bail!("--seq-length, --batch, --input-size and --classes must be at least 1");
    }
    if !(a.eps > 0.0) {
        bail!("--eps must be positive, got {}", a.eps);
    }
    let head = Head::parse(&a.head).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown head '{}' (expected step_classes, last_classes, step_regression or last_regression)",
            a.head
        )
    })?;
    let rnn = StackConfig::new(kind, a.input_size, a.hidden)
        .with_layers(a.num_layers)
        .with_bidirectional(a.bidirectional)
        .with_bias(!a.no_bias)
        .with_proj_size(a.proj_size)
        .with_dropout(a.dropout);
    let cfg = ModelConfig {
        input: InputKind::Dense,
        input_size: a.input_size,
        embed_dim: 0,
        rnn,
        output_size: a.classes,
        decoder_bias: !a.no_bias,
        head,
    };
    cfg.validate().map_err(anyhow::Error::msg)?;
    let spec = GradcheckSpec {
        cfg,
        t: a.seq_length,
        b: a.batch,
        varlen: a.varlen,
        init_state: !a.zero_state,
        seed: a.seed,
        eps: a.eps,
    };
    let res = gradcheck(&spec).map_err(anyhow::Error::msg)?;
    let worst = res.iter().map(|r| r.max_rel_err).fold(0.0, f64::max);
    let mut out = std::io::stdout().lock();
    if a.json {
        let tensors: Vec<_> = res
            .iter()
            .map(|r| json!({"name": r.name, "numel": r.numel, "max_rel_err": r.max_rel_err, "max_abs_err": r.max_abs_err}))
            .collect();
        writeln!(
            out,
            "{}",
            json!({"cell": kind.name(), "head": head.name(), "tensors": tensors, "max_rel_err": worst})
        )?;
    } else {
        writeln!(
            out,
            "gradcheck {} head={} T={} B={} I={} H={} layers={} dirs={} bias={} proj={} dropout={} varlen={} eps={:e}",
            kind.name(),
            head.name(),
            a.seq_length,
            a.batch,
            a.input_size,
            a.hidden,
            a.num_layers,
            if a.bidirectional { 2 } else { 1 },
            !a.no_bias,
            a.proj_size,
            a.dropout,
            a.varlen,
            a.eps
        )?;
        writeln!(
            out,
            "rel err = max_i |analytic_i - numeric_i| / max_i max(|analytic_i|, |numeric_i|)"
        )?;
        for r in &res {
            writeln!(
                out,
                "  {:28} {:6} elements  max rel err {:.3e}",
                r.name, r.numel, r.max_rel_err
            )?;
        }
        writeln!(out, "worst: {worst:.3e} (tolerance {:e})", a.tol)?;
    }
    if !(worst <= a.tol) {
        bail!(
            "gradient check failed: worst relative error {worst:.3e} exceeds {:e}",
            a.tol
        );
    }
    Ok(())
}
