//! The CTC loss and its gradient, computed in log space by the forward-backward recursions.
//!
//! For one sequence with logits z_t (t < T_b, the sequence's input length) and target
//! l_1..l_L, the extended target l' puts a blank before, between and after the labels
//! (S = 2L + 1 states). alpha_t(s) is the log probability of all paths over frames 0..=t that end
//! in state s having emitted l'_1..l'_s; beta_t(s) that of the paths over t..T_b-1 that start in s
//! and finish the target; both include frame t's emission. Then
//!
//!   -ln p(l | z) = -logsumexp(alpha_{T_b-1}(S-1), alpha_{T_b-1}(S-2)),
//!   dL/dz_t(c) = softmax(z_t)(c) - sum_{s: l'_s = c} exp(alpha_t(s) + beta_t(s) - lp_t(c) + L),
//!
//! the second from the log-softmax folded into the gradient (its rows sum to zero). A state may be
//! skipped from s - 2 only when it is a label that differs from the label two states back, so a
//! repeated label needs a blank between its copies. A target that no path can produce (too long
//! for the input once the blanks between repeats are counted) has probability 0: loss infinity
//! and a NaN gradient, as PyTorch gives, or 0 and a zero gradient with `zero_infinity`.
//!
//! Everything runs in f64 whatever the scores' type; the sequences run in parallel on up to
//! [`crate::threads`] threads.

use crate::error::{Error, Result};
use crate::ops::Float;
use rayon::prelude::*;

/// How the per-sequence losses become one number, as `torch.nn.CTCLoss`'s `reduction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// No reduction: [`CtcLoss::losses`] is the result; the gradient is that of their sum.
    None,
    /// The sum over the batch.
    Sum,
    /// Each sequence's loss divided by its target length (at least 1), then the mean over the
    /// batch.
    Mean,
}

/// The loss's settings; [`Ctc::default`] is PyTorch's (blank 0, mean, no zero_infinity).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ctc {
    /// The blank's class index.
    pub blank: usize,
    pub reduction: Reduction,
    /// Count an impossible target as loss 0 with a zero gradient (instead of infinity and NaN).
    pub zero_infinity: bool,
}

impl Default for Ctc {
    fn default() -> Self {
        Ctc {
            blank: 0,
            reduction: Reduction::Mean,
            zero_infinity: false,
        }
    }
}

/// A batch's shapes and targets. The logits are (T, B, C) row-major; sequence b uses frames
/// 0..input_lengths[b]; the targets are concatenated, sequence b's being the next
/// target_lengths[b] entries (PyTorch's one-dimensional form).
#[derive(Clone, Copy, Debug)]
pub struct CtcBatch<'a> {
    pub t: usize,
    pub b: usize,
    pub c: usize,
    pub targets: &'a [usize],
    pub input_lengths: &'a [usize],
    pub target_lengths: &'a [usize],
}

/// What [`Ctc::loss`] computed.
#[derive(Clone, Debug, PartialEq)]
pub struct CtcLoss {
    /// -ln p(target | input) per sequence, before the reduction (infinity for an impossible
    /// target, 0 with `zero_infinity`).
    pub losses: Vec<f64>,
    /// The reduced loss (the sum for [`Reduction::None`]).
    pub loss: f64,
}

impl Ctc {
    /// Checks a batch against the logits' length: one line naming the problem.
    pub fn check(&self, logits_len: usize, batch: &CtcBatch) -> Result<()> {
        let CtcBatch { t, b, c, .. } = *batch;
        if logits_len != t * b * c {
            return Err(Error::invalid(format!(
                "CTC: {logits_len} logits for T = {t}, B = {b}, C = {c} ({} expected)",
                t * b * c
            )));
        }
        if self.blank >= c {
            return Err(Error::invalid(format!(
                "CTC: blank index {} is not one of the {c} classes",
                self.blank
            )));
        }
        if batch.input_lengths.len() != b || batch.target_lengths.len() != b {
            return Err(Error::invalid(format!(
                "CTC: {} input lengths and {} target lengths for a batch of {b}",
                batch.input_lengths.len(),
                batch.target_lengths.len()
            )));
        }
        if let Some((i, &n)) = batch.input_lengths.iter().enumerate().find(|(_, &n)| n > t) {
            return Err(Error::invalid(format!(
                "CTC: sequence {i}'s input length {n} exceeds the {t} frames given"
            )));
        }
        let total: usize = batch.target_lengths.iter().sum();
        if total != batch.targets.len() {
            return Err(Error::invalid(format!(
                "CTC: the target lengths add up to {total}, but {} targets were given",
                batch.targets.len()
            )));
        }
        if let Some(&l) = batch.targets.iter().find(|&&l| l >= c || l == self.blank) {
            return Err(Error::invalid(format!(
                "CTC: target label {l} is {} (classes 0..{c}, blank {})",
                if l >= c { "not a class" } else { "the blank" },
                self.blank
            )));
        }
        Ok(())
    }

    /// The loss of `logits` (T, B, C) for `batch`; with `grad` (the logits' length), also the
    /// gradient of the reduced loss with respect to the logits, written over `grad`.
    pub fn loss<F: Float>(
        &self,
        logits: &[F],
        batch: &CtcBatch,
        grad: Option<&mut [F]>,
    ) -> Result<CtcLoss> {
        self.check(logits.len(), batch)?;
        if let Some(g) = &grad {
            if g.len() != logits.len() {
                return Err(Error::invalid(format!(
                    "CTC: a gradient buffer of {} for {} logits",
                    g.len(),
                    logits.len()
                )));
            }
        }
        let CtcBatch { b, c, .. } = *batch;
        let mut offsets = Vec::with_capacity(b);
        let mut o = 0;
        for &n in batch.target_lengths {
            offsets.push(o);
            o += n;
        }
        let want_grad = grad.is_some();
        let one = |i: usize| {
            let labels = &batch.targets[offsets[i]..offsets[i] + batch.target_lengths[i]];
            let frames: Vec<f64> = (0..batch.input_lengths[i])
                .flat_map(|f| logits[(f * b + i) * c..(f * b + i + 1) * c].iter())
                .map(|v| v.to_f64())
                .collect();
            sequence(&frames, c, labels, self.blank, want_grad)
        };
        // the sequences in as many contiguous groups as recur may use threads
        let groups = crate::threads().min(b).max(1);
        let per = b.div_ceil(groups);
        let seqs: Vec<Sequence> = (0..groups)
            .into_par_iter()
            .flat_map_iter(|k| (k * per..b.min((k + 1) * per)).map(one))
            .collect();

        let weight = |i: usize| match self.reduction {
            Reduction::None | Reduction::Sum => 1.0,
            Reduction::Mean => 1.0 / (batch.target_lengths[i].max(1) as f64 * b as f64),
        };
        let mut losses = Vec::with_capacity(b);
        let mut loss = 0.0;
        for (i, s) in seqs.iter().enumerate() {
            let zeroed = self.zero_infinity && s.nll.is_infinite();
            let l = if zeroed { 0.0 } else { s.nll };
            losses.push(l);
            loss += weight(i) * l;
        }
        if let Some(g) = grad {
            g.fill(F::ZERO);
            for (i, s) in seqs.iter().enumerate() {
                if self.zero_infinity && s.nll.is_infinite() {
                    continue;
                }
                let w = weight(i);
                for f in 0..batch.input_lengths[i] {
                    let row = &mut g[(f * b + i) * c..(f * b + i + 1) * c];
                    for (k, v) in row.iter_mut().enumerate() {
                        *v = F::from_f64(w * s.grad[f * c + k]);
                    }
                }
            }
        }
        Ok(CtcLoss { losses, loss })
    }
}

/// One sequence's result: its loss and the gradient of it over its frames (T_b, C).
struct Sequence {
    nll: f64,
    grad: Vec<f64>,
}

/// ln(e^a + e^b), exact at -infinity (also the decoders').
pub(super) fn log_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// The extended target l' (a blank before, between and after the labels) and, per state,
/// whether it may be entered from two states back: only a label that differs from the label
/// two states back (so a repeated label needs a blank between its copies).
fn extended(labels: &[usize], blank: usize) -> (Vec<usize>, Vec<bool>) {
    let ext: Vec<usize> = (0..2 * labels.len() + 1)
        .map(|s| if s % 2 == 1 { labels[s / 2] } else { blank })
        .collect();
    let skip = (0..ext.len())
        .map(|s| s % 2 == 1 && s >= 2 && ext[s] != ext[s - 2])
        .collect();
    (ext, skip)
}

/// Log-softmax over each row of C (also the decoders').
pub(super) fn log_softmax(frames: &[f64], c: usize) -> Vec<f64> {
    let mut lp = frames.to_vec();
    for row in lp.chunks_mut(c) {
        log_softmax_row(row);
    }
    lp
}

/// One frame's log-softmax, in place.
pub(super) fn log_softmax_row(row: &mut [f64]) {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let z = row.iter().map(|v| (v - m).exp()).sum::<f64>().ln() + m;
    for v in row.iter_mut() {
        *v -= z;
    }
}

/// One sequence: `frames` (T_b, C) logits, `labels` its target. The scaled recursions when they
/// hold the answer (almost always), the log-space ones when an emission or the whole forward
/// variable underflowed f64 (logits hundreds apart, or an impossible target).
fn sequence(frames: &[f64], c: usize, labels: &[usize], blank: usize, grad: bool) -> Sequence {
    let lp = log_softmax(frames, c);
    scaled(&lp, c, labels, blank, grad).unwrap_or_else(|| log_space(&lp, c, labels, blank, grad))
}

/// The forward-backward recursions in probabilities, each frame's forward variable rescaled to
/// sum 1 (Rabiner's scaling; ln p is the sum of the logs of the scales), so that a step costs
/// multiplications and additions, not exp and ln. beta' here excludes frame t's emission, so
/// that sum_s alpha_t(s) beta'_t(s) = p at every t and the posterior of class k at t is
/// sum_{s: l'_s = k} alpha_t(s) beta'_t(s) over that sum: the scales cancel. `None` when a scale
/// or the final sum is 0 (an underflow or p = 0), which the log-space recursions then decide.
/// `lp`: the sequence's log-softmax (T_b, C).
fn scaled(lp: &[f64], c: usize, labels: &[usize], blank: usize, grad: bool) -> Option<Sequence> {
    let tb = lp.len() / c;
    let big_s = 2 * labels.len() + 1;
    if tb == 0 {
        return None;
    }
    let y: Vec<f64> = lp.iter().map(|v| v.exp()).collect();
    let (ext, skip) = extended(labels, blank);
    let mut alpha = vec![0.0; tb * big_s];
    alpha[0] = y[blank];
    if big_s > 1 {
        alpha[1] = y[ext[1]];
    }
    let mut log_scale = 0.0;
    let rescale = |row: &mut [f64], log_scale: &mut f64| -> Option<()> {
        let sum: f64 = row.iter().sum();
        if !(sum > 0.0) || !sum.is_finite() {
            return None;
        }
        row.iter_mut().for_each(|v| *v /= sum);
        *log_scale += sum.ln();
        Some(())
    };
    rescale(&mut alpha[..big_s], &mut log_scale)?;
    for t in 1..tb {
        let (done, rest) = alpha.split_at_mut(t * big_s);
        let prev = &done[(t - 1) * big_s..];
        let cur = &mut rest[..big_s];
        let yt = &y[t * c..(t + 1) * c];
        for s in 0..big_s {
            let mut a = prev[s];
            if s >= 1 {
                a += prev[s - 1];
            }
            if skip[s] {
                a += prev[s - 2];
            }
            cur[s] = a * yt[ext[s]];
        }
        rescale(cur, &mut log_scale)?;
    }
    let last = &alpha[(tb - 1) * big_s..];
    let end = if big_s > 1 {
        last[big_s - 1] + last[big_s - 2]
    } else {
        last[0]
    };
    if !(end > 0.0) {
        return None;
    }
    let nll = -(log_scale + end.ln());
    if !grad {
        return Some(Sequence {
            nll,
            grad: Vec::new(),
        });
    }
    // beta'_t(s): the paths from s at t to the end, frame t's emission excluded; rescaled per
    // frame (any positive factor: the posterior divides it out)
    let mut beta = vec![0.0; tb * big_s];
    beta[(tb - 1) * big_s + big_s - 1] = 1.0;
    if big_s > 1 {
        beta[(tb - 1) * big_s + big_s - 2] = 1.0;
    }
    let mut ignored = 0.0;
    for t in (0..tb - 1).rev() {
        let (head, tail) = beta.split_at_mut((t + 1) * big_s);
        let next = &tail[..big_s];
        let cur = &mut head[t * big_s..];
        let y1 = &y[(t + 1) * c..(t + 2) * c];
        for s in 0..big_s {
            let mut v = next[s] * y1[ext[s]];
            if s + 1 < big_s {
                v += next[s + 1] * y1[ext[s + 1]];
            }
            if s + 2 < big_s && skip[s + 2] {
                v += next[s + 2] * y1[ext[s + 2]];
            }
            cur[s] = v;
        }
        rescale(cur, &mut ignored)?;
    }
    let mut g = vec![0.0; tb * c];
    let mut post = vec![0.0; c];
    for t in 0..tb {
        post.fill(0.0);
        let mut total = 0.0;
        for s in 0..big_s {
            let v = alpha[t * big_s + s] * beta[t * big_s + s];
            post[ext[s]] += v;
            total += v;
        }
        if !(total > 0.0) {
            return None;
        }
        for k in 0..c {
            g[t * c + k] = y[t * c + k] - post[k] / total;
        }
    }
    Some(Sequence { nll, grad: g })
}

/// The same recursions in log space on `lp`: exact where the scaled ones underflow.
fn log_space(lp: &[f64], c: usize, labels: &[usize], blank: usize, grad: bool) -> Sequence {
    let tb = lp.len() / c;
    let big_s = 2 * labels.len() + 1;
    if tb == 0 {
        // no frames: only the empty target is possible, with probability 1
        let nll = if labels.is_empty() {
            0.0
        } else {
            f64::INFINITY
        };
        return Sequence {
            nll,
            grad: Vec::new(),
        };
    }
    let (ext, skip) = extended(labels, blank);
    let ninf = f64::NEG_INFINITY;
    let mut alpha = vec![ninf; tb * big_s];
    alpha[0] = lp[blank];
    if big_s > 1 {
        alpha[1] = lp[ext[1]];
    }
    for t in 1..tb {
        for s in 0..big_s {
            let prev = &alpha[(t - 1) * big_s..t * big_s];
            let mut a = prev[s];
            if s >= 1 {
                a = log_add(a, prev[s - 1]);
            }
            if skip[s] {
                a = log_add(a, prev[s - 2]);
            }
            alpha[t * big_s + s] = a + lp[t * c + ext[s]];
        }
    }
    let last = &alpha[(tb - 1) * big_s..];
    let log_p = if big_s > 1 {
        log_add(last[big_s - 1], last[big_s - 2])
    } else {
        last[0]
    };
    let nll = -log_p;
    if !grad {
        return Sequence {
            nll,
            grad: Vec::new(),
        };
    }
    if nll.is_infinite() {
        // p = 0: the gradient is undefined, as in PyTorch
        return Sequence {
            nll,
            grad: vec![f64::NAN; tb * c],
        };
    }
    let mut beta = vec![ninf; tb * big_s];
    beta[(tb - 1) * big_s + big_s - 1] = lp[(tb - 1) * c + ext[big_s - 1]];
    if big_s > 1 {
        beta[(tb - 1) * big_s + big_s - 2] = lp[(tb - 1) * c + ext[big_s - 2]];
    }
    for t in (0..tb - 1).rev() {
        for s in 0..big_s {
            let next = &beta[(t + 1) * big_s..(t + 2) * big_s];
            let mut v = next[s];
            if s + 1 < big_s {
                v = log_add(v, next[s + 1]);
            }
            if s + 2 < big_s && skip[s + 2] {
                v = log_add(v, next[s + 2]);
            }
            beta[t * big_s + s] = v + lp[t * c + ext[s]];
        }
    }
    let mut g = vec![0.0; tb * c];
    let mut lcab = vec![ninf; c];
    for t in 0..tb {
        lcab.fill(ninf);
        for s in 0..big_s {
            let k = ext[s];
            lcab[k] = log_add(lcab[k], alpha[t * big_s + s] + beta[t * big_s + s]);
        }
        for k in 0..c {
            let l = lp[t * c + k];
            g[t * c + k] = l.exp() - (lcab[k] - l + nll).exp();
        }
    }
    Sequence { nll, grad: g }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn scaled_and_log_space_recursions_agree() {
        let mut rng = Rng::new(5);
        for (t, c, labels) in [
            (30, 5, vec![1, 1, 2, 3]),
            (12, 3, vec![]),
            (9, 4, vec![3, 3, 3, 3]),
        ] {
            let frames: Vec<f64> = (0..t * c).map(|_| 3.0 * rng.normal()).collect();
            let lp = log_softmax(&frames, c);
            let a = scaled(&lp, c, &labels, 0, true).expect("no underflow here");
            let b = log_space(&lp, c, &labels, 0, true);
            assert!(
                (a.nll - b.nll).abs() <= 1e-12 * b.nll.abs(),
                "{} vs {}",
                a.nll,
                b.nll
            );
            for (x, y) in a.grad.iter().zip(&b.grad) {
                assert!((x - y).abs() <= 1e-12, "{x} vs {y}");
            }
        }
    }

    #[test]
    fn an_underflowing_emission_falls_back_to_log_space() {
        // one frame, target [1]: the blank's logit is 1000 above the label's, so the label's
        // probability e^-1000 is 0 in f64; the loss is still 1000 and the gradient (y - posterior)
        // is (1, -1)
        let frames = [1000.0, 0.0];
        assert!(scaled(&log_softmax(&frames, 2), 2, &[1], 0, true).is_none());
        let s = sequence(&frames, 2, &[1], 0, true);
        assert!((s.nll - 1000.0).abs() < 1e-9, "{}", s.nll);
        assert!((s.grad[0] - 1.0).abs() < 1e-12 && (s.grad[1] + 1.0).abs() < 1e-12);
    }
}
