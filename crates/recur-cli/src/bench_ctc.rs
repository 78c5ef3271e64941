//! `recur bench --ctc`: the CTC loss alone, forward and backward (loss and the gradient with
//! respect to the logits, log-softmax included), on random logits (T, B, C) and random digit
//! strings of 1 to 7 labels; bench/ctc_vs_torch.py times PyTorch's `ctc_loss` on the same shapes.

use crate::bench::{time_median, Args};
use anyhow::{bail, Result};
use recur::ctc::{Ctc, CtcBatch};
use recur::rng::Rng;
use serde_json::json;

pub fn run(a: &Args, classes: usize, threads: usize) -> Result<()> {
    let (t, b, c) = (a.seq_length, a.batch_size, classes);
    if t == 0 || b == 0 || c < 2 {
        bail!(
            "--ctc needs --seq-length and --batch-size of at least 1 and --classes of at least 2"
        );
    }
    let mut rng = Rng::new(1);
    let logits: Vec<f32> = (0..t * b * c).map(|_| 2.0 * rng.normal() as f32).collect();
    let mut targets = Vec::new();
    let mut target_lengths = Vec::new();
    let mut input_lengths = Vec::new();
    for i in 0..b {
        // input lengths T down to 4/5 T; 1 to 7 labels (within what the frames can carry)
        let n = t - (i % 5) * t / 25;
        let len = (1 + (rng.uniform_in(0.0, 7.0) as usize)).min(n.div_ceil(2));
        for _ in 0..len {
            targets.push(1 + (rng.uniform_in(0.0, (c - 1) as f64) as usize).min(c - 2));
        }
        target_lengths.push(len);
        input_lengths.push(n);
    }
    let batch = CtcBatch {
        t,
        b,
        c,
        targets: &targets,
        input_lengths: &input_lengths,
        target_lengths: &target_lengths,
    };
    let ctc = Ctc::default();
    let mut grad = vec![0.0f32; logits.len()];
    let mut loss = 0.0;
    // bench::run has set the threads
    let timing = time_median(a, || {
        loss = ctc
            .loss(&logits, &batch, Some(&mut grad))
            .expect("a valid batch")
            .loss;
    });
    let ms = timing.wall_s * 1e3;
    if a.json {
        println!(
            "{}",
            json!({"ctc": true, "t": t, "b": b, "c": c, "threads": threads, "ms": ms,
                   "cpu_ms": timing.cpu_s.map(|s| s * 1e3), "sequences_per_s": b as f64 / timing.wall_s,
                   "loss": loss})
        );
    } else {
        println!(
            "CTC loss + gradient, T = {t}, B = {b}, C = {c}, {threads} thread(s): {ms:.3} ms a call \
             ({:.0} sequences/s; mean loss {loss:.4})",
            b as f64 / timing.wall_s
        );
    }
    Ok(())
}
