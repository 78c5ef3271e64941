//! The seam of data-parallel training: the sums a run needs from all of its workers
//! ([`Collective`]), and how the one training loop splits its state over them.
//!
//! A data-parallel run is N copies of the same process (ranks 0..N), each on its share of every
//! global batch: the character model's B streams split into N equal, contiguous shares, rank r
//! holding streams `r*B/N .. (r+1)*B/N`. Every rank starts from the same weights (drawn from the
//! same seed), and at each step:
//! - the ranks' mean losses are averaged (each share has the same size, so this is the global
//!   batch's mean) and their item counts summed, so that every rank sees the same loss;
//! - the gradients are averaged with one sum over the flat gradient buffer (the one
//!   `MPI_Allreduce` per step), before the clipping, so that clipping uses the global norm and
//!   every rank applies the same update;
//! - the stop flag and rank 0's clock are agreed on, so that every rank stops after the same step;
//! - evaluation: where the task can share its held-out data out (`Task::evaluate_shared`), each
//!   rank measures its part and the sums and counts are added up, so every rank gets the metric
//!   of the whole held-out set ([`part`] cuts a list of items); otherwise every rank measures
//!   all of it.
//!
//! Dropout masks: every rank draws its masks of a step from a generator seeded by the loop's
//! generator (which all ranks advance alike, and which the masks leave as it is), the step and
//! the rank, so the loop's generator saved in a checkpoint continues on any number of ranks.
//! The carried hidden state is gathered into the global batch's layout for a checkpoint (every share summed into zeros, which is exact) and cut
//! into shares again on resume: a checkpoint written by N ranks resumes on any other number that
//! divides B.
//!
//! The library knows nothing of MPI: the command-line tool implements [`Collective`] over it
//! (its `mpi` feature); a test may implement it over threads.

use crate::error::Result;
use crate::rng::Rng;
use crate::stream::Carry;

/// Sums over the workers of a data-parallel run. Every worker calls each method at the same
/// point of the run with buffers of the same length; on return every worker holds the sum.
pub trait Collective {
    /// This worker's index, 0..size.
    fn rank(&self) -> usize;
    /// The number of workers.
    fn size(&self) -> usize;
    /// Element-wise sum of `buf` over all workers, in place.
    fn sum_f32(&self, buf: &mut [f32]) -> Result<()>;
    /// Element-wise sum of `buf` over all workers, in place.
    fn sum_f64(&self, buf: &mut [f64]) -> Result<()>;
}

/// Rank `rank`'s share of `b` sequences over `size` ranks: the range of its sequences; an error
/// unless the shares are equal.
pub fn share(b: usize, rank: usize, size: usize) -> Result<std::ops::Range<usize>> {
    if size == 0 || !b.is_multiple_of(size) {
        return Err(crate::Error::invalid(format!(
            "a batch of {b} sequences does not split into {size} equal shares: choose a batch \
             size that the number of ranks divides"
        )));
    }
    let n = b / size;
    Ok(rank * n..(rank + 1) * n)
}

/// Part `rank` of `n` items shared out among `size` workers for evaluation: contiguous, the
/// first `n % size` parts one item longer (any `n`; a part may be empty).
pub fn part(n: usize, rank: usize, size: usize) -> std::ops::Range<usize> {
    let size = size.max(1);
    let (q, r) = (n / size, n % size);
    let start = rank * q + rank.min(r);
    start..start + q + usize::from(rank < r)
}

/// The generator of dropout masks for step `step` on `rank`: seeded by the loop's generator,
/// the step and the rank, without advancing the loop's generator (a copy draws the seed), so
/// that the loop's generator moves as in one process and, without dropout, the ranks shuffle
/// the epochs of a task (e.g. the speech classifier's batch order) as one process does.
pub fn step_rng(loop_rng: &Rng, step: u64, rank: usize) -> Rng {
    let seed = loop_rng.clone().next_u64();
    Rng::new(
        seed ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03)
            ^ (rank as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    )
}

/// Columns `range` of every (rows, `b`, `width`) block of `global`: a share of a carried state
/// laid out (L*D, B, width).
fn cut(global: &[f32], b: usize, width: usize, range: &std::ops::Range<usize>) -> Vec<f32> {
    if width == 0 || global.is_empty() {
        return Vec::new();
    }
    global
        .chunks_exact(b * width)
        .flat_map(|block| {
            block[range.start * width..range.end * width]
                .iter()
                .copied()
        })
        .collect()
}

/// `local` (a share's rows) placed into a zeroed (rows, `b`, `width`) layout.
fn place(local: &[f32], b: usize, width: usize, range: &std::ops::Range<usize>) -> Vec<f32> {
    let n = range.len() * width;
    if n == 0 || local.is_empty() {
        return Vec::new();
    }
    let blocks = local.len() / n;
    let mut out = vec![0.0; blocks * b * width];
    for (k, src) in local.chunks_exact(n).enumerate() {
        let dst = &mut out[k * b * width + range.start * width..][..n];
        dst.copy_from_slice(src);
    }
    out
}

/// The global batch's carried state from every rank's share of `b` sequences (`h` rows of `p`,
/// `c` rows of `h`): each share placed into zeros, then summed over the ranks.
pub fn gather_carry(
    c: &dyn Collective,
    local: &Carry,
    b: usize,
    p: usize,
    h: usize,
) -> Result<Carry> {
    let range = share(b, c.rank(), c.size())?;
    let mut out = Carry {
        h: place(&local.h, b, p, &range),
        c: place(&local.c, b, h, &range),
    };
    c.sum_f32(&mut out.h)?;
    c.sum_f32(&mut out.c)?;
    Ok(out)
}

/// This rank's share of a global carried state of `b` sequences.
pub fn cut_carry(
    global: &Carry,
    b: usize,
    p: usize,
    h: usize,
    rank: usize,
    size: usize,
) -> Result<Carry> {
    let range = share(b, rank, size)?;
    Ok(Carry {
        h: cut(&global.h, b, p, &range),
        c: cut(&global.c, b, h, &range),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_equal_and_contiguous_or_refused() {
        assert_eq!(share(8, 0, 2).unwrap(), 0..4);
        assert_eq!(share(8, 1, 2).unwrap(), 4..8);
        assert_eq!(share(9, 2, 3).unwrap(), 6..9);
        let e = share(10, 0, 4).unwrap_err().to_string();
        assert!(e.contains("10") && e.contains("4 equal shares"), "{e}");
    }

    #[test]
    fn cut_and_place_are_inverse_over_the_shares() {
        // 2 blocks (layers) of B = 4 sequences of width 3
        let global: Vec<f32> = (0..24).map(|x| x as f32).collect();
        let mut sum = vec![0.0; 24];
        for r in 0..2 {
            let range = share(4, r, 2).unwrap();
            let local = cut(&global, 4, 3, &range);
            assert_eq!(local.len(), 12);
            // rank 1's first row is sequence 2 of block 0
            if r == 1 {
                assert_eq!(&local[..3], &[6.0, 7.0, 8.0]);
            }
            for (s, v) in sum.iter_mut().zip(place(&local, 4, 3, &range)) {
                *s += v;
            }
        }
        assert_eq!(sum, global);
    }
}
