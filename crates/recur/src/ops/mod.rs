//! Numeric building blocks: the scalar trait, the GEMM wrapper, the packed per-step products
//! (float32 and bf16), softmax cross-entropy.

pub mod act;
pub mod aligned;
pub mod amx;
pub mod bf16;
pub mod chains;
pub mod cpu;
mod float;
pub mod gemm;
pub mod int8;
pub mod loss;
pub mod multiplier;
pub mod panel;
pub mod team;
pub mod tiles;
pub mod transpose;

pub use float::Float;
pub use gemm::{gemm, gemm_naive, Trans};

/// `y += x`, element-wise.
#[inline]
pub fn add_assign<F: Float>(y: &mut [F], x: &[F]) {
    for (a, b) in y.iter_mut().zip(x) {
        *a += *b;
    }
}

/// Runs `f(first, part)` over `data` cut into parts of `chunk` elements (`first`: the index of the
/// part's first element), on the threads set by [`gemm::set_threads`] when `split` is asked and
/// there is more than one part; else once, on all of `data`, on this thread. For passes in which
/// every element is computed on its own, so that the result does not depend on the thread count.
pub fn for_parts_mut<T: Send>(
    data: &mut [T],
    chunk: usize,
    split: bool,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    if split && gemm::threads() > 1 && data.len() > chunk {
        use rayon::prelude::*;
        data.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(k, part)| f(k * chunk, part));
    } else {
        f(0, data);
    }
}

/// Adds every row of `x` (`rows x cols`, leading dimension `ld`) into `sum` (length `cols`).
/// Large sums are split by columns over [`gemm::threads`]; every element still adds its rows in
/// order, so the result does not depend on the thread count.
pub fn add_col_sums<F: Float>(sum: &mut [F], x: &[F], rows: usize, cols: usize, ld: usize) {
    // whole cache lines (16 floats) per part
    let per = cols.div_ceil(gemm::threads()).next_multiple_of(16);
    for_parts_mut(&mut sum[..cols], per, rows * cols >= 1 << 16, |c0, s| {
        for r in 0..rows {
            add_assign(s, &x[r * ld + c0..r * ld + c0 + s.len()]);
        }
    });
}

/// `v` as f32, where the caller's mode admits float32 only (bf16 and int8 run on float32
/// workspaces).
///
/// # Panics
/// When `F` is not f32.
pub(crate) fn as_f32<F: Float>(v: &[F]) -> &[f32] {
    assert!(
        std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>(),
        "not float32"
    );
    // SAFETY: F is f32 (asserted): the cast is an identity
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const f32, v.len()) }
}

/// [`as_f32`], writable.
pub(crate) fn as_f32_mut<F: Float>(v: &mut [F]) -> &mut [f32] {
    assert!(
        std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>(),
        "not float32"
    );
    // SAFETY: F is f32 (asserted): the cast is an identity
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut f32, v.len()) }
}
