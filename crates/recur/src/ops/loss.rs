//! Softmax and cross-entropy over rows of logits.

use super::Float;

/// A target equal to this value marks a row that takes no loss and no gradient (a padded step).
pub const IGNORE: u32 = u32::MAX;

/// Writes `softmax(logits)` into `probs`, row by row (`n` rows of `v`).
pub fn softmax_rows<F: Float>(logits: &[F], probs: &mut [F], n: usize, v: usize) {
    for r in 0..n {
        let row = &logits[r * v..(r + 1) * v];
        let out = &mut probs[r * v..(r + 1) * v];
        let mx = row
            .iter()
            .copied()
            .fold(F::from_f64(f64::NEG_INFINITY), F::max);
        let mut sum = F::ZERO;
        for (o, &x) in out.iter_mut().zip(row) {
            *o = (x - mx).exp();
            sum += *o;
        }
        for o in out.iter_mut() {
            *o /= sum;
        }
    }
}

/// Cross-entropy of `n` rows of `v` logits against `targets`; returns the summed loss (in f64)
/// and the number of rows that counted (targets equal to [`IGNORE`] do not).
///
/// If `dlogits` is given it receives `scale * (softmax(logits) - onehot(target))` for counted rows
/// and zero for ignored ones (it is overwritten, not accumulated).
pub fn softmax_xent<F: Float>(
    logits: &[F],
    n: usize,
    v: usize,
    targets: &[u32],
    mut dlogits: Option<&mut [F]>,
    scale: F,
) -> (f64, usize) {
    let mut total = 0.0f64;
    let mut count = 0usize;
    for r in 0..n {
        let row = &logits[r * v..(r + 1) * v];
        let tgt = targets[r];
        if tgt == IGNORE {
            if let Some(d) = dlogits.as_deref_mut() {
                d[r * v..(r + 1) * v].fill(F::ZERO);
            }
            continue;
        }
        let tgt = tgt as usize;
        assert!(tgt < v, "target {tgt} out of range for {v} classes");
        let mx = row
            .iter()
            .copied()
            .fold(F::from_f64(f64::NEG_INFINITY), F::max);
        let mut sum = 0.0f64;
        for &x in row {
            sum += (x - mx).to_f64().exp();
        }
        let lse = mx.to_f64() + sum.ln();
        total += lse - row[tgt].to_f64();
        count += 1;
        if let Some(d) = dlogits.as_deref_mut() {
            let d = &mut d[r * v..(r + 1) * v];
            for (j, (o, &x)) in d.iter_mut().zip(row).enumerate() {
                let p = (x.to_f64() - lse).exp();
                let g = if j == tgt { p - 1.0 } else { p };
                *o = scale * F::from_f64(g);
            }
        }
    }
    (total, count)
}
