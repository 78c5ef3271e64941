//! The device: a CUDA context, one stream, a cuBLAS handle and the compiled kernels, plus the raw
//! copies and fills the stack needs. Everything is queued on the one stream, in order.
//!
//! Buffers are cudarc `CudaSlice`s (freed on drop); inside the hot loops they are addressed by raw
//! device pointers with element offsets (`ptr + 4*off`), which keeps per-step launches free of
//! cudarc's per-buffer event bookkeeping (switched off: one stream needs none).

use crate::kernels::Kernels;
use crate::{DevBuf, DevIds};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DeviceRepr, ValidAsZeroBits};
use recur::{Error, Result};
use std::sync::Arc;

/// Turns the errors of the CUDA libraries (driver, cuBLAS) into recur's [`Error::Device`],
/// naming the library: `call().cu()?`.
pub(crate) trait Cu<T> {
    fn cu(self) -> Result<T>;
}

impl<T> Cu<T> for std::result::Result<T, cudarc::driver::DriverError> {
    fn cu(self) -> Result<T> {
        self.map_err(|e| Error::device(format!("CUDA driver error: {e:?}")))
    }
}

impl<T> Cu<T> for std::result::Result<T, cudarc::cublas::result::CublasError> {
    fn cu(self) -> Result<T> {
        self.map_err(|e| Error::device(format!("cuBLAS error: {e:?}")))
    }
}

/// "no CUDA device found", and why.
pub(crate) fn no_library(lib: &str) -> Error {
    Error::device(format!(
        "no CUDA device found: the {lib} library could not be loaded (is an NVIDIA driver installed?)"
    ))
}

/// A device pointer (`CUdeviceptr`).
pub(crate) type Ptr = u64;
/// The null pointer: an absent optional buffer.
pub(crate) const NULL: Ptr = 0;

/// One CUDA device with one stream, a cuBLAS handle and the compiled kernels.
pub struct Gpu {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) blas: CudaBlas,
    pub(crate) k: Kernels,
    /// Streaming multiprocessors, and the most shared memory one block may opt in to (bytes):
    /// the persistent kernel's limits.
    pub(crate) sms: usize,
    pub(crate) smem_optin: usize,
}

impl Gpu {
    /// Opens device `ordinal`: loads the CUDA libraries, creates the context, stream and cuBLAS
    /// handle (float32 math: TF32 off), and compiles the kernels with NVRTC for this device.
    pub fn new(ordinal: usize) -> Result<Gpu> {
        // SAFETY: these only try to dlopen the libraries by their usual names.
        unsafe {
            if !cudarc::driver::sys::is_culib_present() {
                return Err(no_library("CUDA driver (libcuda)"));
            }
            if !cudarc::cublas::sys::is_culib_present() {
                return Err(no_library("cuBLAS (libcublas)"));
            }
            if !cudarc::nvrtc::sys::is_culib_present() {
                return Err(no_library("NVRTC (libnvrtc)"));
            }
        }
        let count =
            CudaContext::device_count().map_err(|_| Error::device("no CUDA device found"))?;
        if count <= 0 || ordinal >= count as usize {
            return Err(Error::device("no CUDA device found"));
        }
        let ctx = CudaContext::new(ordinal).cu()?;
        // SAFETY: recur queues all its work on one stream, in order; cudarc's cross-stream
        // event tracking is not needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().cu()?;
        let blas = CudaBlas::new(stream.clone()).cu()?;
        // Pure float32 GEMMs: CUBLAS_DEFAULT_MATH never uses TF32 tensor cores for SGEMM (only
        // CUBLAS_TF32_TENSOR_OP_MATH or NVIDIA_TF32_OVERRIDE would).
        // SAFETY: a valid handle, a valid enum value.
        unsafe {
            cudarc::cublas::sys::cublasSetMathMode(
                *blas.handle(),
                cudarc::cublas::sys::cublasMath_t::CUBLAS_DEFAULT_MATH,
            )
            .result()
            .cu()?;
        }
        let cc = ctx.compute_capability().cu()?;
        let k = Kernels::compile(&ctx, cc)?;
        use cudarc::driver::sys::CUdevice_attribute as A;
        let sms = ctx
            .attribute(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .cu()? as usize;
        let smem_optin = ctx
            .attribute(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .cu()? as usize;
        Ok(Gpu {
            ctx,
            stream,
            blas,
            k,
            sms,
            smem_optin,
        })
    }

    /// The device's name, e.g. `NVIDIA H100 80GB HBM3`.
    pub fn name(&self) -> String {
        self.ctx
            .name()
            .unwrap_or_else(|_| "unknown CUDA device".into())
    }

    /// Compute capability (major, minor).
    pub fn compute_capability(&self) -> (i32, i32) {
        self.ctx.compute_capability().unwrap_or((0, 0))
    }

    /// The CUDA driver's version, e.g. 13000 for 13.0.
    pub fn driver_version(&self) -> i32 {
        let mut v = 0;
        // SAFETY: writes one int.
        unsafe {
            let _ = cudarc::driver::sys::cuDriverGetVersion(&mut v);
        }
        v
    }

    /// The stream everything is queued on (for events and graph capture by callers).
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits until all queued work is done.
    pub fn sync(&self) -> Result<()> {
        self.stream.synchronize().cu()
    }

    /// A new zeroed buffer of `n` elements (at least one element is allocated).
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>> {
        self.stream.alloc_zeros::<T>(n.max(1)).cu()
    }

    /// Copies a host slice to a new device buffer.
    pub fn upload(&self, v: &[f32]) -> Result<DevBuf> {
        if v.is_empty() {
            return self.zeros(1);
        }
        self.stream.clone_htod(v).cu()
    }

    /// Copies token ids to a new device buffer.
    pub fn upload_ids(&self, v: &[u32]) -> Result<DevIds> {
        if v.is_empty() {
            return self.zeros(1);
        }
        self.stream.clone_htod(v).cu()
    }

    /// Overwrites the start of `dst` with `v`.
    pub fn write(&self, dst: &mut DevBuf, v: &[f32]) -> Result<()> {
        self.put(dst, v)
    }

    /// Copies the first `n` elements of a device buffer to the host (waits for the stream).
    pub fn download(&self, src: &DevBuf, n: usize) -> Result<Vec<f32>> {
        let mut out = vec![0.0f32; n];
        if n > 0 {
            assert!(n <= src.len(), "download past the end of a buffer");
            // SAFETY: `out` holds n elements, the source at least n.
            unsafe {
                cudarc::driver::result::memcpy_dtoh_async(
                    &mut out,
                    self.ptr(src),
                    self.stream.cu_stream(),
                )
                .cu()?
            };
        }
        self.sync()?;
        Ok(out)
    }

    /// Copies `v` to the start of `dst` (any element type: ids, lengths, offsets). The copy is
    /// from pageable memory: CUDA has taken the values when this returns.
    pub(crate) fn put<T: DeviceRepr>(&self, dst: &CudaSlice<T>, v: &[T]) -> Result<()> {
        if v.len() > dst.len() {
            return Err(Error::invalid(format!(
                "copy of {} values into a buffer of {}",
                v.len(),
                dst.len()
            )));
        }
        if !v.is_empty() {
            // SAFETY: the destination holds at least v.len() elements of T.
            unsafe {
                cudarc::driver::result::memcpy_htod_async(self.ptr(dst), v, self.stream.cu_stream())
                    .cu()?
            };
        }
        Ok(())
    }

    /// Copies the first `n` elements of a buffer of any element type to the host (waits).
    pub(crate) fn get<T: DeviceRepr + Default + Clone>(
        &self,
        src: &CudaSlice<T>,
        n: usize,
    ) -> Result<Vec<T>> {
        let mut out = vec![T::default(); n];
        if n > 0 {
            if n > src.len() {
                return Err(Error::invalid(format!(
                    "download of {n} values from a buffer of {}",
                    src.len()
                )));
            }
            // SAFETY: `out` holds n elements, the source at least n.
            unsafe {
                cudarc::driver::result::memcpy_dtoh_async(
                    &mut out,
                    self.ptr(src),
                    self.stream.cu_stream(),
                )
                .cu()?
            };
        }
        self.sync()?;
        Ok(out)
    }

    /// Runs `f` (which queues work on the stream) between two events and returns its result
    /// and the device time between the events, in milliseconds (waits for the stream).
    pub fn timed<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<(R, f64)> {
        let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let (a, b) = (
            self.ctx.new_event(flags).cu()?,
            self.ctx.new_event(flags).cu()?,
        );
        a.record(&self.stream).cu()?;
        let r = f()?;
        b.record(&self.stream).cu()?;
        b.synchronize().cu()?;
        Ok((r, a.elapsed_ms(&b).cu()? as f64))
    }

    /// Records the work `f` queues on the stream into a CUDA graph instead of running it; the
    /// graph replays it, with the same buffers, at the cost of one launch. `f` must not wait on
    /// the stream or copy from pageable host memory (no lengths, no dropout masks).
    pub fn capture(&self, f: impl FnOnce() -> Result<()>) -> Result<GpuGraph> {
        use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
        self.stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .cu()?;
        let r = f();
        let g = self.stream.end_capture(CUgraphInstantiate_flags(0)).cu()?;
        r?;
        let g =
            g.ok_or_else(|| Error::device("CUDA driver error: stream capture produced no graph"))?;
        g.upload().cu()?;
        Ok(GpuGraph { g })
    }

    /// The raw device pointer of a buffer.
    pub(crate) fn ptr<T>(&self, s: &CudaSlice<T>) -> Ptr {
        let (p, _guard) = s.device_ptr(&self.stream);
        p
    }

    /// `n` float32 zeros at `dst`.
    pub(crate) fn zero(&self, dst: Ptr, n: usize) -> Result<()> {
        if n > 0 {
            // SAFETY: callers pass a pointer into a buffer with at least n more elements.
            unsafe {
                cudarc::driver::result::memset_d8_async(dst, 0, 4 * n, self.stream.cu_stream())
                    .cu()?
            };
        }
        Ok(())
    }

    /// Copies `n` float32 values from `src` to `dst` (device to device).
    pub(crate) fn copy(&self, dst: Ptr, src: Ptr, n: usize) -> Result<()> {
        if n > 0 {
            // SAFETY: callers pass pointers into buffers with at least n more elements.
            unsafe {
                cudarc::driver::result::memcpy_dtod_async(dst, src, 4 * n, self.stream.cu_stream())
                    .cu()?
            };
        }
        Ok(())
    }
}

/// A captured sequence of device work (see [`Gpu::capture`]).
pub struct GpuGraph {
    g: cudarc::driver::CudaGraph,
}

impl GpuGraph {
    /// Queues one replay on the stream it was captured from.
    pub fn launch(&self) -> Result<()> {
        self.g.launch().cu()
    }
}

/// `p` advanced by `off` float32 elements.
#[inline]
pub(crate) fn at(p: Ptr, off: usize) -> Ptr {
    p + 4 * off as u64
}
