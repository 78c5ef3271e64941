//! What the epoch-based speech commands (`speech train`, `speech train-strings`) share around the
//! training loop: a progress bar through each epoch with a line per evaluation, the log's points
//! per epoch, and the loss curve.

use crate::plot;
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use recur::train::{Event, LogRow, StopReason, Task, Trainer};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// Runs `trainer` to its end: a progress bar through each epoch (its message `"{loss_name}
/// {batch loss}"`), and after each evaluation the line `"epoch E/N: lr ...  train {loss_name}
/// ...{rest(row)}  (seconds)"` on stderr; nothing with `quiet` (a rank other than 0).
pub fn run_epochs<T: Task>(
    trainer: &mut Trainer<T>,
    stop: &AtomicBool,
    epochs: usize,
    quiet: bool,
    loss_name: &str,
    rest: &dyn Fn(&LogRow) -> String,
) -> Result<StopReason> {
    let bpe = trainer.task.batches_per_epoch().unwrap_or(1);
    let pb = match quiet {
        true => ProgressBar::hidden(),
        false => ProgressBar::new(bpe),
    };
    pb.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut epoch_start = Instant::now();
    let reason = trainer.run(stop, &mut |ev| match ev {
        Event::Step(s) => {
            pb.set_prefix(format!("{}/{epochs}", (s.step - 1) / bpe + 1));
            pb.set_position((s.step - 1) % bpe + 1);
            pb.set_message(format!("{loss_name} {:.4}", s.loss));
        }
        Event::Eval { .. } if quiet => {}
        Event::Eval { row, .. } => {
            pb.suspend(|| {
                crate::ranks::say!(
                    "epoch {:>3}/{epochs}: lr {:.2e}  train {loss_name} {:.4}{}  ({:.1} s)",
                    row.epoch.round() as u64,
                    row.lr,
                    row.train_loss,
                    rest(row),
                    epoch_start.elapsed().as_secs_f64()
                );
            });
            epoch_start = Instant::now();
        }
        Event::Log { .. } => {}
    })?;
    pb.finish_and_clear();
    Ok(reason)
}

/// (epoch, f(row)) for every row of the log where `f` gives a value.
pub fn per_epoch(history: &[LogRow], f: &dyn Fn(&LogRow) -> Option<f64>) -> Vec<(f64, f64)> {
    history
        .iter()
        .filter_map(|l| f(l).map(|y| (l.epoch, y)))
        .collect()
}

/// The loss per epoch on a log scale: training, and validation where the log has it.
pub fn loss_chart(history: &[LogRow], title: &str, y_label: &str) -> plot::Chart {
    let mut loss = plot::Chart::new(title, "epoch", y_label).with_log_y(true);
    loss.push(plot::Series::line(
        "train",
        per_epoch(history, &|l| Some(l.train_loss)),
    ));
    let vl = per_epoch(history, &|l| l.val_loss);
    if !vl.is_empty() {
        loss.push(plot::Series::line("validation", vl));
    }
    loss
}
