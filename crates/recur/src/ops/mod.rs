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
pub fn add_col_sums<F: Float>(sum: &mut [F], x: &[F], rows: usize, cols: usize, ld: usize) {
    for r in 0..rows {
        add_assign(sum, &x[r * ld..r * ld + cols]);
    }
}
