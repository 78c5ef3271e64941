//! The one GEMM wrapper: `C <- alpha*op(A)*op(B) + beta*C`, row-major, explicit leading dimensions.
//!
//! Every matrix product in recur goes through [`gemm()`]; the third-party `gemm` crate (which computes
//! `dst = alpha*dst + beta*lhs*rhs` and takes column strides first) is called here and nowhere
//! else. [`gemm_naive`] is the plain triple loop the tests compare it against.

use super::Float;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Whether an operand is used as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trans {
    /// `op(X) = X`
    N,
    /// `op(X) = X^T`
    T,
}

// 0: not set, so every core the process may use
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Sets how many threads a large product may use (through the rayon global pool). The default is
/// every core this process may run on (`std::thread::available_parallelism`); 1 makes every
/// product single-threaded.
pub fn set_threads(n: usize) {
    THREADS.store(n.max(1), Ordering::Relaxed);
}

/// The cores this process may run on (at least 1): the default of [`set_threads`].
pub fn all_cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

thread_local! {
    /// This thread's own limit, set by [`with_threads`] (0: none).
    static LOCAL: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The thread count set by [`set_threads`], or inside [`with_threads`] the count given there.
pub fn threads() -> usize {
    match LOCAL.with(|l| l.get()) {
        0 => match THREADS.load(Ordering::Relaxed) {
            0 => all_cores(),
            n => n,
        },
        n => n,
    }
}

/// Runs `f` with [`threads`] returning `n` on this thread: for independent products run side
/// by side, each on its share of the threads.
pub fn with_threads<R>(n: usize, f: impl FnOnce() -> R) -> R {
    let before = LOCAL.with(|l| l.replace(n.max(1)));
    let r = f();
    LOCAL.with(|l| l.set(before));
    r
}

/// Below this many multiply-adds a product runs on one thread: splitting it costs more than it saves.
const PAR_MIN_WORK: usize = 48 * 48 * 48;

/// Row/column strides of op(X) for a row-major X with leading dimension `ld`.
#[inline]
fn strides(t: Trans, ld: usize) -> (isize, isize) {
    match t {
        Trans::N => (ld as isize, 1),
        Trans::T => (1, ld as isize),
    }
}

/// Smallest slice length that holds a row-major `rows x cols` matrix with leading dimension `ld`.
#[inline]
fn need(rows: usize, cols: usize, ld: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * ld + cols
    }
}

/// `C (m x n) <- alpha * op(A) (m x k) * op(B) (k x n) + beta * C`, all row-major.
///
/// `lda`, `ldb`, `ldc` are the leading dimensions (row strides) of A, B, C as stored. With
/// `beta == 0`, C is not read (NaN in C does not propagate). Panics if a slice is too short.
pub fn gemm<F: Float>(
    ta: Trans,
    tb: Trans,
    m: usize,
    n: usize,
    k: usize,
    alpha: F,
    a: &[F],
    lda: usize,
    b: &[F],
    ldb: usize,
    beta: F,
    c: &mut [F],
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= need(m, n, ldc) && ldc >= n, "gemm: C too small");
    if k == 0 || alpha == F::ZERO {
        for i in 0..m {
            for v in &mut c[i * ldc..i * ldc + n] {
                *v = if beta == F::ZERO { F::ZERO } else { beta * *v };
            }
        }
        return;
    }
    let (a_rows, a_cols) = if ta == Trans::N { (m, k) } else { (k, m) };
    let (b_rows, b_cols) = if tb == Trans::N { (k, n) } else { (n, k) };
    assert!(
        a.len() >= need(a_rows, a_cols, lda) && lda >= a_cols,
        "gemm: A too small"
    );
    assert!(
        b.len() >= need(b_rows, b_cols, ldb) && ldb >= b_cols,
        "gemm: B too small"
    );
    let (a_rs, a_cs) = strides(ta, lda);
    let (b_rs, b_cs) = strides(tb, ldb);
    let nt = threads();
    let par = if nt > 1 && m * n * k >= PAR_MIN_WORK {
        gemm::Parallelism::Rayon(nt)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above check that every element addressed through the given strides lies
    // inside its slice; C does not alias A or B (it is borrowed mutably, they immutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            beta != F::ZERO,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            beta,
            alpha,
            false,
            false,
            false,
            par,
        );
    }
}

/// The reference: a plain triple loop with the same contract as [`gemm()`], accumulating in f64.
pub fn gemm_naive<F: Float>(
    ta: Trans,
    tb: Trans,
    m: usize,
    n: usize,
    k: usize,
    alpha: F,
    a: &[F],
    lda: usize,
    b: &[F],
    ldb: usize,
    beta: F,
    c: &mut [F],
    ldc: usize,
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                let av = match ta {
                    Trans::N => a[i * lda + p],
                    Trans::T => a[p * lda + i],
                };
                let bv = match tb {
                    Trans::N => b[p * ldb + j],
                    Trans::T => b[j * ldb + p],
                };
                s += av.to_f64() * bv.to_f64();
            }
            let prev = if beta == F::ZERO {
                F::ZERO
            } else {
                beta * c[i * ldc + j]
            };
            c[i * ldc + j] = alpha * F::from_f64(s) + prev;
        }
    }
}
