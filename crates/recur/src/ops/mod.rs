//! Numeric building blocks: the scalar trait, the GEMM wrapper, softmax cross-entropy.

pub mod act;
mod float;
pub mod gemm;
pub mod loss;
pub mod panel;
pub mod peak;
pub mod team;

pub use float::Float;
pub use gemm::{gemm, gemm_naive, Trans};

/// `y += x`, element-wise.
#[inline]
pub fn add_assign<F: Float>(y: &mut [F], x: &[F]) {
    for (a, b) in y.iter_mut().zip(x) {
        *a += *b;
    }
}

/// Adds every row of `x` (`rows x cols`, leading dimension `ld`) into `sum` (length `cols`).
/// Large sums are split by columns over [`gemm::threads`]; every element still adds its rows in
/// order, so the result does not depend on the thread count.
pub fn add_col_sums<F: Float>(sum: &mut [F], x: &[F], rows: usize, cols: usize, ld: usize) {
    let part = |c0: usize, s: &mut [F]| {
        for r in 0..rows {
            add_assign(s, &x[r * ld + c0..r * ld + c0 + s.len()]);
        }
    };
    let nt = gemm::threads();
    if nt > 1 && rows * cols >= 1 << 16 && cols >= 2 * 16 {
        use rayon::prelude::*;
        // whole cache lines per part (16 floats)
        let per = cols.div_ceil(nt).next_multiple_of(16);
        sum[..cols]
            .par_chunks_mut(per)
            .enumerate()
            .for_each(|(k, s)| part(k * per, s));
    } else {
        part(0, &mut sum[..cols]);
    }
}
