//! The one cuBLAS GEMM wrapper: `C <- alpha*op(A)*op(B) + beta*C`, row-major, explicit leading
//! dimensions, the same contract as `recur::ops::gemm` on the CPU.
//!
//! cuBLAS is column-major. A row-major matrix with leading dimension `ld` is, read column-major,
//! its transpose with the same `ld`; so the row-major `C = op(A) op(B)` is computed as the
//! column-major `C^T = op(B)^T op(A)^T`: B and A swap places, m and n swap, the flags stay.

use crate::device::{Cu, Gpu, Ptr};
use cudarc::cublas::sys::cublasOperation_t;
use recur::ops::Trans;
use recur::{Error, Result};

fn op(t: Trans) -> cublasOperation_t {
    match t {
        Trans::N => cublasOperation_t::CUBLAS_OP_N,
        Trans::T => cublasOperation_t::CUBLAS_OP_T,
    }
}

impl Gpu {
    /// `C (m x n) <- alpha * op(A) (m x k) * op(B) (k x n) + beta * C`, all row-major, on device
    /// pointers. With `beta == 0`, C is not read.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm(
        &self,
        ta: Trans,
        tb: Trans,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: Ptr,
        lda: usize,
        b: Ptr,
        ldb: usize,
        beta: f32,
        c: Ptr,
        ldc: usize,
    ) -> Result<()> {
        if m == 0 || n == 0 {
            return Ok(());
        }
        let i = |v: usize| -> Result<i32> {
            i32::try_from(v).map_err(|_| Error::invalid(format!("GEMM size {v} exceeds i32")))
        };
        // cuBLAS wants every leading dimension >= 1 even when k == 0.
        let (lda, ldb, ldc) = (lda.max(1), ldb.max(1), ldc.max(1));
        // SAFETY: the callers pass pointers into device buffers that hold the matrices at the
        // given sizes and leading dimensions (the workspace is sized from the same dims).
        unsafe {
            cudarc::cublas::result::sgemm(
                *self.blas.handle(),
                op(tb),
                op(ta),
                i(n)?,
                i(m)?,
                i(k)?,
                &alpha,
                b as *const f32,
                i(ldb)?,
                a as *const f32,
                i(lda)?,
                &beta,
                c as *mut f32,
                i(ldc)?,
            )
            .cu()?;
        }
        Ok(())
    }
}
