//! `recur gradcheck`: BPTT gradients against centred finite differences in f64, per tensor.

use crate::args::Shape;
use crate::values::{choice, Act, DropoutModeArg, HeadArg};
use anyhow::{bail, Result};
use recur::cell::CellKind;
use recur::model::{InputKind, ModelConfig};
use recur::stack::StackConfig;
use recur_study::gradcheck::{gradcheck, GradcheckSpec};
use serde_json::json;
use std::io::Write;

#[derive(clap::Args)]
#[command(mut_arg("cell", |a| a.default_value("rnn_tanh")))]
#[command(mut_arg("rnn_size", |a| a.default_value("5")))]
pub struct Args {
    #[command(flatten)]
    shape: Shape,
    /// Non-linearity of the Elman RNN (overrides the one implied by --cell).
    #[arg(long, value_parser = choice::<Act>())]
    activation: Option<Act>,
    /// Input features per step (with --embed: symbols in the vocabulary).
    #[arg(long, default_value_t = 3)]
    input_size: usize,
    /// Symbols in, looked up in an embedding of this width, instead of dense features (random
    /// symbols; no input gradient to check); 0 for dense input.
    #[arg(long, default_value_t = 0)]
    embed: usize,
    /// Tie the decoder's weight to the embedding's (AWD-LSTM's weight tying): needs --embed
    /// equal to the stack's output width and --classes equal to --input-size.
    #[arg(long)]
    tie_weights: bool,
    /// Output classes (or values, for a regression head) of the decoder.
    #[arg(long, default_value_t = 4)]
    classes: usize,
    /// What the decoder predicts, and its loss.
    #[arg(long, value_parser = choice::<HeadArg>(), default_value = "step_classes")]
    head: HeadArg,
    /// Steps (at least 8 is the documented check).
    #[arg(long, default_value_t = 8)]
    seq_length: usize,
    /// Sequences per batch.
    #[arg(long = "batch-size", visible_alias = "batch", default_value_t = 3)]
    batch_size: usize,
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
    /// Weight drop on the recurrent weights (a fixed mask during the check).
    #[arg(long, default_value_t = 0.0)]
    weight_drop: f64,
    /// Dropout on the last layer's outputs (a fixed mask during the check).
    #[arg(long, default_value_t = 0.0)]
    dropout_output: f64,
    /// Dropout on the first layer's inputs (a fixed mask during the check).
    #[arg(long, default_value_t = 0.0)]
    dropout_input: f64,
    /// Dropout masks drawn anew at every step, or one per sequence (locked).
    #[arg(long, value_parser = choice::<DropoutModeArg>(), default_value = "step")]
    dropout_mode: DropoutModeArg,
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
    let mut kind = a.shape.cell.kind();
    if let Some(act) = a.activation {
        kind = match kind {
            CellKind::Rnn(_) => CellKind::Rnn(act.activation()),
            _ => bail!("--activation applies to --cell rnn_tanh or rnn_relu only"),
        };
    }
    if a.seq_length == 0 || a.batch_size == 0 || a.input_size == 0 || a.classes == 0 {
        bail!("--seq-length, --batch-size, --input-size and --classes must be at least 1");
    }
    if !(a.eps > 0.0) {
        bail!("--eps must be positive, got {}", a.eps);
    }
    let head = a.head.head();
    let rnn_in = if a.embed > 0 { a.embed } else { a.input_size };
    let rnn = StackConfig::new(kind, rnn_in, a.shape.rnn_size)
        .with_layers(a.shape.num_layers)
        .with_bidirectional(a.bidirectional)
        .with_bias(!a.no_bias)
        .with_proj_size(a.proj_size)
        .with_dropout(a.dropout)
        .with_weight_drop(a.weight_drop)
        .with_dropout_output(a.dropout_output)
        .with_dropout_input(a.dropout_input)
        .with_dropout_mode(a.dropout_mode.mode());
    let cfg = ModelConfig {
        input: if a.embed > 0 {
            InputKind::Embedding
        } else {
            InputKind::Dense
        },
        input_size: a.input_size,
        embed_dim: a.embed,
        rnn,
        output_size: a.classes,
        decoder_bias: !a.no_bias,
        head,
        tie_weights: a.tie_weights,
    };
    cfg.validate()?;
    let spec = GradcheckSpec {
        cfg,
        t: a.seq_length,
        b: a.batch_size,
        varlen: a.varlen,
        init_state: !a.zero_state,
        seed: a.seed,
        eps: a.eps,
    };
    let res = gradcheck(&spec)?;
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
            "gradcheck {} head={} T={} B={} I={}{} H={} layers={} dirs={} bias={} proj={} dropout={} ({}) dropout_input={} dropout_output={} weight_drop={} varlen={} eps={:e}",
            kind.name(),
            head.name(),
            a.seq_length,
            a.batch_size,
            a.input_size,
            match (a.embed, a.tie_weights) {
                (0, _) => String::new(),
                (e, false) => format!(" (symbols) E={e}"),
                (e, true) => format!(" (symbols) E={e} tied"),
            },
            a.shape.rnn_size,
            a.shape.num_layers,
            if a.bidirectional { 2 } else { 1 },
            !a.no_bias,
            a.proj_size,
            a.dropout,
            a.dropout_mode.mode().name(),
            a.dropout_input,
            a.dropout_output,
            a.weight_drop,
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
