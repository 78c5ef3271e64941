//! The enumerated flag values of every command (`--cell`, `--optim`, `--device`, ...), parsed by
//! clap: `--help` lists the possible values, and an unknown one is a usage error (one line, exit
//! code 2) naming the value and the choices, before any work starts.
//!
//! Each enum maps onto the library's own type (`CellKind`, `OptimKind`, `Head`, ...); no command
//! parses these names by hand.

use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::ErrorKind;
use clap::ValueEnum;
use recur::cell::{Activation, CellKind};
use recur::model::Head;
use recur::optim::OptimKind;
use recur_apps::speech::classifier::Pooling;
use recur_apps::speech::features::FeatureKind;
use std::ffi::OsStr;
use std::marker::PhantomData;

/// An enumerated flag value: its possible values come from [`ValueEnum`]; `WHAT` names it in the
/// error for an unknown value: "unknown WHAT 'x' for --flag (expected a, b or c)", or, where
/// `WHAT` is empty, "unknown --flag 'x' (expected a, b or c)".
pub trait Choice: ValueEnum + Clone + Send + Sync + 'static {
    const WHAT: &'static str;
}

/// clap's parser for a [`Choice`]: exact names (and their aliases); otherwise a usage error whose
/// first line names the value and the choices.
pub struct ChoiceParser<E>(PhantomData<fn() -> E>);

impl<E> Clone for ChoiceParser<E> {
    fn clone(&self) -> Self {
        ChoiceParser(PhantomData)
    }
}

/// "a, b or c": the visible names of `E`'s values.
pub fn expected<E: Choice>() -> String {
    let names: Vec<String> = E::value_variants()
        .iter()
        .filter_map(|v| v.to_possible_value())
        .filter(|p| !p.is_hide_set())
        .map(|p| p.get_name().to_string())
        .collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

impl<E: Choice> TypedValueParser for ChoiceParser<E> {
    type Value = E;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<E, clap::Error> {
        let s = value.to_string_lossy();
        E::from_str(&s, false).map_err(|_| {
            let flag = arg
                .and_then(|a| a.get_long())
                .map_or_else(|| "the flag".to_string(), |l| format!("--{l}"));
            let what = if E::WHAT.is_empty() {
                format!("{flag} '{s}'")
            } else {
                format!("{} '{s}' for {flag}", E::WHAT)
            };
            let msg = format!("unknown {what} (expected {})\n", expected::<E>());
            clap::Error::raw(ErrorKind::InvalidValue, msg).with_cmd(cmd)
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            E::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value()),
        ))
    }
}

/// The parser of a [`Choice`] flag: `#[arg(long, value_parser = choice::<Cell>())]` (given
/// explicitly: clap's derive would otherwise pick its own `ValueEnum` parser, whose error spans
/// several lines and does not say what the value is).
pub fn choice<E: Choice>() -> ChoiceParser<E> {
    ChoiceParser(PhantomData)
}

macro_rules! choice {
    ($t:ty, $what:literal) => {
        impl Choice for $t {
            const WHAT: &'static str = $what;
        }
    };
}

/// `--cell`: the recurrent cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Cell {
    /// Elman RNN with tanh (also `rnn`).
    #[value(alias = "rnn")]
    RnnTanh,
    /// Elman RNN with ReLU.
    RnnRelu,
    /// Long short-term memory.
    Lstm,
    /// Gated recurrent unit.
    Gru,
}
choice!(Cell, "cell");

impl Cell {
    pub fn kind(self) -> CellKind {
        match self {
            Cell::RnnTanh => CellKind::Rnn(Activation::Tanh),
            Cell::RnnRelu => CellKind::Rnn(Activation::Relu),
            Cell::Lstm => CellKind::Lstm,
            Cell::Gru => CellKind::Gru,
        }
    }
}

/// `--activation`: the Elman RNN's non-linearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Act {
    Tanh,
    Relu,
}
choice!(Act, "activation");

impl Act {
    pub fn activation(self) -> Activation {
        match self {
            Act::Tanh => Activation::Tanh,
            Act::Relu => Activation::Relu,
        }
    }
}

/// `--optim`: the update rule (PyTorch's default hyper-parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Optim {
    Sgd,
    Adagrad,
    Rmsprop,
    Adam,
}
choice!(Optim, "optimizer");

impl Optim {
    pub fn name(self) -> &'static str {
        match self {
            Optim::Sgd => "sgd",
            Optim::Adagrad => "adagrad",
            Optim::Rmsprop => "rmsprop",
            Optim::Adam => "adam",
        }
    }

    /// The library's optimizer (`momentum` applies to `sgd` only).
    pub fn kind(self, momentum: f64) -> OptimKind {
        OptimKind::parse(self.name(), momentum).expect("every Optim is a known optimizer")
    }
}

/// `--device`: where the math runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Device {
    Cpu,
    /// The GPU (needs the `cuda` cargo feature).
    Cuda,
}
choice!(Device, "");

/// `--lr-schedule`: how the learning rate moves during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LrScheduleArg {
    /// Multiplied by --lr-decay every --lr-decay-every steps (constant without them).
    Step,
    /// A linear warm-up over --warmup steps, then a cosine down to lr * --lr-floor at the run's
    /// end (--max-steps, --epochs or --max-minutes, whichever comes first).
    Cosine,
    /// After the warm-up, multiplied by --plateau-factor whenever --plateau-patience evaluations
    /// in a row bring no new best validation loss, down to lr * --lr-floor.
    Plateau,
}
choice!(LrScheduleArg, "learning-rate schedule");

/// `--dropout-mode`: how dropout masks are drawn over a sequence's steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DropoutModeArg {
    /// A new mask at every step.
    Step,
    /// One mask per sequence for all its steps (variational dropout).
    Locked,
}
choice!(DropoutModeArg, "dropout mode");

impl DropoutModeArg {
    pub fn mode(self) -> recur::stack::DropoutMode {
        match self {
            DropoutModeArg::Step => recur::stack::DropoutMode::Step,
            DropoutModeArg::Locked => recur::stack::DropoutMode::Locked,
        }
    }
}

/// `--precision`: the number format of the math (see `recur::precision`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// float32.
    F32,
    /// bf16 weights and states, float32 sums, gates and cell state; in training float32 master
    /// weights, bf16 gradients of the gates.
    Bf16,
    /// int8 weights per row and int8 states per step in the recurrent product, int32 sums
    /// (inference only).
    Int8,
}
choice!(PrecisionArg, "precision");

impl PrecisionArg {
    pub fn precision(self) -> recur::Precision {
        match self {
            PrecisionArg::F32 => recur::Precision::F32,
            PrecisionArg::Bf16 => recur::Precision::Bf16,
            PrecisionArg::Int8 => recur::Precision::Int8,
        }
    }
}

/// `--head`: what the decoder predicts, and its loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum HeadArg {
    StepClasses,
    LastClasses,
    StepRegression,
    LastRegression,
}
choice!(HeadArg, "head");

impl HeadArg {
    pub fn head(self) -> Head {
        match self {
            HeadArg::StepClasses => Head::StepClasses,
            HeadArg::LastClasses => Head::LastClasses,
            HeadArg::StepRegression => Head::StepRegression,
            HeadArg::LastRegression => Head::LastRegression,
        }
    }
}

/// `--mode` of `bench`: what is timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Forward only.
    Infer,
    /// Forward and backward (gradients of the weights and the inputs).
    Train,
    /// Both, one after the other.
    Both,
}
choice!(Mode, "");

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Infer => "infer",
            Mode::Train => "train",
            Mode::Both => "both",
        }
    }

    /// The single modes this one stands for.
    pub fn each(self) -> &'static [Mode] {
        match self {
            Mode::Infer => &[Mode::Infer],
            Mode::Train => &[Mode::Train],
            Mode::Both => &[Mode::Infer, Mode::Train],
        }
    }
}

/// `--preset` of `train`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    Tiny,
    Default,
    Large,
}
choice!(Preset, "preset");

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::Tiny => "tiny",
            Preset::Default => "default",
            Preset::Large => "large",
        }
    }
}

/// `--features` of `speech train`: the base features per frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Features {
    /// Cepstral coefficients.
    Mfcc,
    /// Log filterbank energies.
    Logmel,
}
choice!(Features, "");

impl Features {
    pub fn kind(self) -> FeatureKind {
        match self {
            Features::Mfcc => FeatureKind::Mfcc,
            Features::Logmel => FeatureKind::LogMel,
        }
    }
}

/// `--pool` of `speech train`: how the per-utterance scores are formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Pool {
    /// Per-step scores averaged over the utterance.
    Mean,
    /// The final states' scores.
    Last,
}
choice!(Pool, "");

impl Pool {
    pub fn pooling(self) -> Pooling {
        match self {
            Pool::Mean => Pooling::Mean,
            Pool::Last => Pooling::Last,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every cell name the library knows parses to the same kind here, and back.
    #[test]
    fn cells_match_the_library() {
        for name in ["rnn", "rnn_tanh", "rnn_relu", "lstm", "gru"] {
            let c = Cell::from_str(name, false).unwrap();
            assert_eq!(Some(c.kind()), CellKind::parse(name), "{name}");
        }
        assert_eq!(expected::<Cell>(), "rnn_tanh, rnn_relu, lstm or gru");
        for h in Head::ALL {
            let a = HeadArg::from_str(h.name(), false).unwrap();
            assert_eq!(a.head(), h);
        }
        for o in Optim::value_variants() {
            assert_eq!(o.kind(0.0).name(), o.name());
        }
    }
}
