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
use std::fmt;
use std::sync::Arc;

/// Why the device could not be used.
#[derive(Debug)]
pub enum GpuError {
    /// A CUDA library (driver, cuBLAS, NVRTC) could not be loaded: the name of the library.
    NoLibrary(&'static str),
    /// The driver loaded but reports no CUDA device.
    NoDevice,
    /// A CUDA driver call failed.
    Driver(String),
    /// A cuBLAS call failed.
    Blas(String),
    /// NVRTC could not compile the kernels (the compiler's log).
    Compile(String),
    /// Arguments that do not fit the workspace (a message naming the problem).
    Shape(String),
}

impl fmt::Display for GpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuError::NoLibrary(l) => write!(
                f,
                "no CUDA device found: the {l} library could not be loaded (is an NVIDIA driver installed?)"
            ),
            GpuError::NoDevice => write!(f, "no CUDA device found"),
            GpuError::Driver(e) => write!(f, "CUDA driver error: {e}"),
            GpuError::Blas(e) => write!(f, "cuBLAS error: {e}"),
            GpuError::Compile(e) => write!(f, "NVRTC could not compile the kernels: {e}"),
            GpuError::Shape(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for GpuError {}

impl From<cudarc::driver::DriverError> for GpuError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        GpuError::Driver(format!("{e:?}"))
    }
}

impl From<cudarc::cublas::result::CublasError> for GpuError {
    fn from(e: cudarc::cublas::result::CublasError) -> Self {
        GpuError::Blas(format!("{e:?}"))
    }
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
    pub fn new(ordinal: usize) -> Result<Gpu, GpuError> {
        // SAFETY: these only try to dlopen the libraries by their usual names.
        unsafe {
            if !cudarc::driver::sys::is_culib_present() {
                return Err(GpuError::NoLibrary("CUDA driver (libcuda)"));
            }
            if !cudarc::cublas::sys::is_culib_present() {
                return Err(GpuError::NoLibrary("cuBLAS (libcublas)"));
            }
            if !cudarc::nvrtc::sys::is_culib_present() {
                return Err(GpuError::NoLibrary("NVRTC (libnvrtc)"));
            }
        }
        let count = CudaContext::device_count().map_err(|_| GpuError::NoDevice)?;
        if count <= 0 || ordinal >= count as usize {
            return Err(GpuError::NoDevice);
        }
        let ctx = CudaContext::new(ordinal)?;
        // SAFETY: recur queues all its work on one stream, in order; cudarc's cross-stream
        // event tracking is not needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream()?;
        let blas = CudaBlas::new(stream.clone())?;
        // Pure float32 GEMMs: CUBLAS_DEFAULT_MATH never uses TF32 tensor cores for SGEMM (only
        // CUBLAS_TF32_TENSOR_OP_MATH or NVIDIA_TF32_OVERRIDE would).
        // SAFETY: a valid handle, a valid enum value.
        unsafe {
            cudarc::cublas::sys::cublasSetMathMode(
                *blas.handle(),
                cudarc::cublas::sys::cublasMath_t::CUBLAS_DEFAULT_MATH,
            )
            .result()?;
        }
        let cc = ctx.compute_capability()?;
        let k = Kernels::compile(&ctx, cc)?;
        use cudarc::driver::sys::CUdevice_attribute as A;
        let sms = ctx.attribute(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as usize;
        let smem_optin =
            ctx.attribute(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)? as usize;
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
    pub fn sync(&self) -> Result<(), GpuError> {
        Ok(self.stream.synchronize()?)
    }

    /// A new zeroed buffer of `n` elements (at least one element is allocated).
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        n: usize,
    ) -> Result<CudaSlice<T>, GpuError> {
        Ok(self.stream.alloc_zeros::<T>(n.max(1))?)
    }

    /// Copies a host slice to a new device buffer.
    pub fn upload(&self, v: &[f32]) -> Result<DevBuf, GpuError> {
        if v.is_empty() {
            return self.zeros(1);
        }
        Ok(self.stream.clone_htod(v)?)
    }

    /// Copies token ids to a new device buffer.
    pub fn upload_ids(&self, v: &[u32]) -> Result<DevIds, GpuError> {
        if v.is_empty() {
            return self.zeros(1);
        }
        Ok(self.stream.clone_htod(v)?)
    }

    /// Overwrites the start of `dst` with `v`.
    pub fn write(&self, dst: &mut DevBuf, v: &[f32]) -> Result<(), GpuError> {
        self.put(dst, v)
    }

    /// Copies the first `n` elements of a device buffer to the host (waits for the stream).
    pub fn download(&self, src: &DevBuf, n: usize) -> Result<Vec<f32>, GpuError> {
        let mut out = vec![0.0f32; n];
        if n > 0 {
            assert!(n <= src.len(), "download past the end of a buffer");
            // SAFETY: `out` holds n elements, the source at least n.
            unsafe {
                cudarc::driver::result::memcpy_dtoh_async(
                    &mut out,
                    self.ptr(src),
                    self.stream.cu_stream(),
                )?
            };
        }
        self.sync()?;
        Ok(out)
    }

    /// Copies `v` to the start of `dst` (any element type: ids, lengths, offsets). The copy is
    /// from pageable memory: CUDA has taken the values when this returns.
    pub(crate) fn put<T: DeviceRepr>(&self, dst: &CudaSlice<T>, v: &[T]) -> Result<(), GpuError> {
        if v.len() > dst.len() {
            return Err(GpuError::Shape(format!(
                "copy of {} values into a buffer of {}",
                v.len(),
                dst.len()
            )));
        }
        if !v.is_empty() {
            // SAFETY: the destination holds at least v.len() elements of T.
            unsafe {
                cudarc::driver::result::memcpy_htod_async(
                    self.ptr(dst),
                    v,
                    self.stream.cu_stream(),
                )?
            };
        }
        Ok(())
    }

    /// Copies the first `n` elements of a buffer of any element type to the host (waits).
    pub(crate) fn get<T: DeviceRepr + Default + Clone>(
        &self,
        src: &CudaSlice<T>,
        n: usize,
    ) -> Result<Vec<T>, GpuError> {
        let mut out = vec![T::default(); n];
        if n > 0 {
            if n > src.len() {
                return Err(GpuError::Shape(format!(
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
                )?
            };
        }
        self.sync()?;
        Ok(out)
    }

    /// Runs `f` (which queues work on the stream) between two events and returns its result
    /// and the device time between the events, in milliseconds (waits for the stream).
    pub fn timed<R>(&self, f: impl FnOnce() -> Result<R, GpuError>) -> Result<(R, f64), GpuError> {
        let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let (a, b) = (self.ctx.new_event(flags)?, self.ctx.new_event(flags)?);
        a.record(&self.stream)?;
        let r = f()?;
        b.record(&self.stream)?;
        b.synchronize()?;
        Ok((r, a.elapsed_ms(&b)? as f64))
    }

    /// Records the work `f` queues on the stream into a CUDA graph instead of running it; the
    /// graph replays it, with the same buffers, at the cost of one launch. `f` must not wait on
    /// the stream or copy from pageable host memory (no lengths, no dropout masks).
    pub fn capture(&self, f: impl FnOnce() -> Result<(), GpuError>) -> Result<GpuGraph, GpuError> {
        use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
        self.stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
        let r = f();
        let g = self.stream.end_capture(CUgraphInstantiate_flags(0))?;
        r?;
        let g = g.ok_or_else(|| GpuError::Driver("stream capture produced no graph".into()))?;
        g.upload()?;
        Ok(GpuGraph { g })
    }

    /// The raw device pointer of a buffer.
    pub(crate) fn ptr<T>(&self, s: &CudaSlice<T>) -> Ptr {
        let (p, _guard) = s.device_ptr(&self.stream);
        p
    }

    /// `n` float32 zeros at `dst`.
    pub(crate) fn zero(&self, dst: Ptr, n: usize) -> Result<(), GpuError> {
        if n > 0 {
            // SAFETY: callers pass a pointer into a buffer with at least n more elements.
            unsafe {
                cudarc::driver::result::memset_d8_async(dst, 0, 4 * n, self.stream.cu_stream())?
            };
        }
        Ok(())
    }

    /// Copies `n` float32 values from `src` to `dst` (device to device).
    pub(crate) fn copy(&self, dst: Ptr, src: Ptr, n: usize) -> Result<(), GpuError> {
        if n > 0 {
            // SAFETY: callers pass pointers into buffers with at least n more elements.
            unsafe {
                cudarc::driver::result::memcpy_dtod_async(dst, src, 4 * n, self.stream.cu_stream())?
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
    pub fn launch(&self) -> Result<(), GpuError> {
        Ok(self.g.launch()?)
    }
}

/// `p` advanced by `off` float32 elements.
#[inline]
pub(crate) fn at(p: Ptr, off: usize) -> Ptr {
    p + 4 * off as u64
}
