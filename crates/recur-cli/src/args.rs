//! Flag groups that several commands share, flattened into each command's arguments so that the
//! same thing has the same flag everywhere (char-rnn's names where they fit):
//!
//! - [`Shape`]: `--cell`, `--rnn-size` (alias `--hidden`), `--num-layers` (alias `--layers`);
//! - [`DeviceArgs`]: `--device cpu|cuda`, `--threads N`;
//! - [`PrecisionArgs`]: `--precision f32|bf16|int8` (the commands that run a model without training it);
//! - [`TrainPrecisionArgs`]: `--precision f32|bf16` (the commands that train);
//! - [`RunDir`]: `--checkpoint-dir`, `--resume`;
//! - [`Optimizer`]: `--optim`, `--learning-rate` (alias `--lr`);
//! - [`EpochTraining`]: `--epochs`, `--batch-size`, `--learning-rate`, `--lr-floor`,
//!   `--grad-clip`, `--seed` (the epoch-based speech commands).
//!
//! A command whose defaults differ sets them with `#[command(mut_arg(...))]` next to its
//! `#[command(flatten)]`. Flags that a command has alone, or with a different type (an optional
//! value a preset fills in), stay in the command with the same long name and aliases.

use crate::values::{choice, Cell, Device, Optim, PrecisionArg};
use anyhow::{bail, Result};
use std::path::PathBuf;

/// The recurrent stack's shape.
#[derive(clap::Args, Clone, Debug)]
pub struct Shape {
    /// The recurrent cell.
    #[arg(long, value_parser = choice::<Cell>(), default_value = "lstm")]
    pub cell: Cell,
    /// Hidden units per layer (per direction when bidirectional).
    #[arg(long = "rnn-size", visible_alias = "hidden", default_value_t = 128)]
    pub rnn_size: usize,
    /// Stacked recurrent layers.
    #[arg(long = "num-layers", visible_alias = "layers", default_value_t = 1)]
    pub num_layers: usize,
}

impl Shape {
    /// Both sizes at least 1.
    pub fn check(&self) -> Result<()> {
        if self.rnn_size == 0 || self.num_layers == 0 {
            bail!("--rnn-size and --num-layers must be at least 1");
        }
        Ok(())
    }
}

/// Where the math runs, and with how many CPU threads.
#[derive(clap::Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Where the math runs (cuda needs the `cuda` cargo feature).
    #[arg(long, value_parser = choice::<Device>(), default_value = "cpu")]
    pub device: Device,
    /// Threads for the CPU's matrix products [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
}

impl DeviceArgs {
    /// The thread count: as given (at least 1), else all cores.
    pub fn threads(&self) -> Result<usize> {
        match self.threads {
            Some(0) => bail!("--threads must be at least 1"),
            Some(n) => Ok(n),
            None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
        }
    }

    /// Sets the thread count of the matrix products; returns it.
    pub fn set_threads(&self) -> Result<usize> {
        let n = self.threads()?;
        recur::ops::gemm::set_threads(n);
        Ok(n)
    }
}

/// The number format the model computes in, for the commands that run a trained model.
#[derive(clap::Args, Clone, Debug)]
pub struct PrecisionArgs {
    /// f32; bf16: weights and hidden states rounded to bf16, products summed in float32; int8:
    /// weights quantized per row, the recurrent product on int8 states in int32; gates and
    /// cell state float32 in both (docs/precision.md).
    /// [default: the checkpoint's: f32, or int8 for a `recur quantize` file]
    #[arg(long, value_parser = choice::<PrecisionArg>())]
    pub precision: Option<PrecisionArg>,
}

/// The number format a training run computes in.
#[derive(clap::Args, Clone, Debug)]
pub struct TrainPrecisionArgs {
    /// f32; bf16: mixed precision, float32 master weights and optimizer state, every product on
    /// bf16 values summed in float32, gates, cell state and loss in float32
    /// (docs/precision.md); faster than f32 where the CPU multiplies bf16 faster than float32
    /// (AMX, or vdpbf16ps where it outruns the FMA: `recur bench --dispatch` says which), else
    /// about f32's speed; int8 does not train [default: f32]
    #[arg(long, value_parser = choice::<PrecisionArg>())]
    pub precision: Option<PrecisionArg>,
}

impl TrainPrecisionArgs {
    /// The format given, float32 by default.
    pub fn get(&self) -> recur::Precision {
        self.precision
            .map_or(recur::Precision::F32, PrecisionArg::precision)
    }
}

/// Which of a checkpoint's weights to predict with.
#[derive(clap::Args, Clone, Debug)]
pub struct WeightArgs {
    /// Use the raw weights of a run that kept a moving average of them (`recur train --ema`)
    /// [default: the moving average, which the run's validation loss measured].
    #[arg(long)]
    pub raw_weights: bool,
}

impl WeightArgs {
    /// The checkpoint's weights as asked.
    pub fn of<'a>(&self, ck: &'a recur::checkpoint::Checkpoint) -> &'a [f32] {
        if self.raw_weights {
            &ck.params
        } else {
            ck.weights()
        }
    }
}

impl PrecisionArgs {
    /// As given, else `default` (the checkpoint's own).
    pub fn or(&self, default: recur::Precision) -> recur::Precision {
        self.precision.map_or(default, PrecisionArg::precision)
    }

    /// As given, else float32.
    pub fn get(&self) -> recur::Precision {
        self.or(recur::Precision::F32)
    }
}

/// A training run's directory.
#[derive(clap::Args, Clone, Debug)]
pub struct RunDir {
    /// Where the run goes: its checkpoints (best.safetensors, latest.safetensors), log and
    /// charts [default: checkpoints].
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue the run saved in --checkpoint-dir (latest.safetensors) where it stopped.
    #[arg(long)]
    pub resume: bool,
}

impl RunDir {
    /// The directory given, else the command's `default`.
    pub fn dir(&self, default: impl Into<PathBuf>) -> PathBuf {
        self.checkpoint_dir
            .clone()
            .unwrap_or_else(|| default.into())
    }
}

/// The update rule and its step size.
#[derive(clap::Args, Clone, Debug)]
pub struct Optimizer {
    /// The update rule (PyTorch's default hyper-parameters).
    #[arg(long, value_parser = choice::<Optim>(), default_value = "adam")]
    pub optim: Optim,
    /// Learning rate.
    #[arg(long = "learning-rate", visible_alias = "lr", default_value_t = 1e-3)]
    pub learning_rate: f64,
}

impl Optimizer {
    /// A positive, finite learning rate.
    pub fn check(&self) -> Result<()> {
        if !(self.learning_rate > 0.0) || !self.learning_rate.is_finite() {
            bail!(
                "--learning-rate must be a positive number, got {}",
                self.learning_rate
            );
        }
        Ok(())
    }
}

/// An epoch-based run's schedule (the speech commands): Adam from `--learning-rate`, a cosine over
/// the epochs down to lr * `--lr-floor`, clipping, the seed of the weights and batch order.
#[derive(clap::Args, Clone, Debug)]
pub struct EpochTraining {
    /// Passes over the training set.
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Examples (recordings, strings) per batch.
    #[arg(long = "batch-size", visible_alias = "batch", default_value_t = 32)]
    pub batch_size: usize,
    /// Adam's learning rate at the start; a cosine schedule takes it to lr * --lr-floor.
    #[arg(long = "learning-rate", visible_alias = "lr", default_value_t = 3e-3)]
    pub learning_rate: f64,
    /// Final learning rate as a fraction of the first.
    #[arg(long, default_value_t = 0.05)]
    pub lr_floor: f64,
    /// Clip the gradient's global norm to this (0 = no clipping).
    #[arg(long, default_value_t = 5.0)]
    pub grad_clip: f64,
    /// Seed for initialisation and batch order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl EpochTraining {
    /// Counts at least 1, a positive finite rate, a floor in [0, 1], clipping 0 or positive.
    pub fn check(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 {
            bail!("--epochs and --batch-size must be at least 1");
        }
        if !(self.learning_rate > 0.0) || !self.learning_rate.is_finite() {
            bail!(
                "--learning-rate must be positive, got {}",
                self.learning_rate
            );
        }
        if !(0.0..=1.0).contains(&self.lr_floor) {
            bail!("--lr-floor must be in [0, 1], got {}", self.lr_floor);
        }
        if !(self.grad_clip >= 0.0) {
            bail!("--grad-clip must be 0 or positive, got {}", self.grad_clip);
        }
        Ok(())
    }
}
