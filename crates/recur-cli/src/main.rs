//! The `recur` command-line tool: one module per command. This file parses flags, dispatches,
//! and turns every error into one line on stderr with exit code 2. No math lives here.

mod args;
mod bench;
mod bench_ctc;
mod bench_cuda;
mod charlm_common;
mod device;
mod epochs;
mod eval;
mod gradcheck;
mod gradflow;
mod hello;
mod page;
mod plot;
mod quantize;
mod ranks;
mod sample;
mod speech;
mod task;
mod train;
mod transcribe;
mod values;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "recur",
    version,
    about = "Recurrent neural networks (RNN, LSTM, GRU) trained with BPTT"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The lecture's worked example: predict "ello" from "hell" with a 3-unit RNN, then train it.
    #[command(allow_negative_numbers = true)]
    Hello(hello::Args),
    /// Compare BPTT gradients with centred finite differences in f64.
    #[command(allow_negative_numbers = true)]
    Gradcheck(gradcheck::Args),
    /// Train a character language model (Tiny Shakespeare by default).
    #[command(allow_negative_numbers = true)]
    Train(Box<train::Args>),
    /// Generate text from a character-model checkpoint.
    #[command(allow_negative_numbers = true)]
    Sample(sample::Args),
    /// A character model's loss (nats and bits per character) on a text.
    #[command(allow_negative_numbers = true)]
    Eval(eval::Args),
    /// Time a recurrent stack (on the CPU or, with --device cuda, the GPU), a char-model training
    /// step or one GEMM (median of repeated runs).
    #[command(alias = "gpu-bench")]
    Bench(bench::Args),
    /// Norm of dL/dh_t against the distance from a loss at the last step (vanishing/exploding
    /// gradients), for several cells; a table, CSV and a chart.
    #[command(allow_negative_numbers = true)]
    Gradflow(gradflow::Args),
    /// Long-memory tasks (adding, copy, bouncing ball): train a cell, compare with the baseline.
    #[command(allow_negative_numbers = true)]
    Task(task::Args),
    /// Spoken digits: train, evaluate and run a recognizer on WAV recordings.
    Speech(speech::Args),
    /// Write an int8 copy of a float32 checkpoint (weights quantized per row) for inference.
    Quantize(quantize::Args),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Hello(a) => hello::run(a),
        Command::Gradcheck(a) => gradcheck::run(a),
        Command::Train(a) => train::run(*a),
        Command::Sample(a) => sample::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Gradflow(a) => gradflow::run(a),
        Command::Task(a) => task::run(a),
        Command::Speech(a) => speech::run(a),
        Command::Quantize(a) => quantize::run(a),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are not errors; everything else is a usage error: one line,
            // exit code 2.
            if !e.use_stderr() {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let msg = first.strip_prefix("error: ").unwrap_or(first);
            ranks::say!("recur: error: {msg} (see 'recur --help')");
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            ranks::say!("recur: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A closed stdout (e.g. `recur sample | head`) is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
