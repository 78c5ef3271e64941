//! [`AVec`], a buffer whose first element starts on a cache line (64 bytes).
//!
//! Why: the AVX-512 kernels load and store 64 bytes at a time. From a buffer that starts on a
//! cache line, every panel row and every vector of a row whose length is a multiple of 16 lies in
//! one line; from a plain `Vec` (glibc's large allocations start 16 bytes past a page) every one of
//! them straddles two lines, and on Intel's cores a load that straddles costs two. The per-step
//! product ran 24-44% faster from aligned panels on an Intel Xeon (docs/performance.md, "Buffers
//! on cache lines").

use std::alloc::{alloc, alloc_zeroed, dealloc, handle_alloc_error, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// The alignment of every [`AVec`]: one cache line, one 512-bit vector.
pub const ALIGN: usize = 64;

/// Buffers of at least this many bytes start on a huge-page boundary (2 MiB on x86-64), and on
/// Linux ask for huge pages (`madvise(MADV_HUGEPAGE)`, which Linux honours where transparent
/// huge pages are set to `madvise` or `always`): a layer's packed weights then take a few TLB
/// entries instead of one per 4 KiB. Why: docs/performance.md, "Huge pages".
pub const HUGE: usize = 2 << 20;

/// A fixed-length buffer of `T` on a [`ALIGN`]-byte boundary, used as a slice. Made zeroed
/// ([`AVec::zeroed`]); its length changes only by making a new one.
pub struct AVec<T> {
    ptr: NonNull<T>,
    len: usize,
}

// SAFETY: an AVec owns its elements as a Vec does; T: Copy has no drop glue.
unsafe impl<T: Send> Send for AVec<T> {}
unsafe impl<T: Sync> Sync for AVec<T> {}

impl<T: Copy + Default> AVec<T> {
    /// An empty buffer (no allocation).
    pub const fn new() -> Self {
        AVec {
            ptr: NonNull::dangling(),
            len: 0,
        }
    }

    /// `len` elements whose bytes are all zero, which is `T::default()` for the number types
    /// it holds (f32, f64, the integer types) and for records of them.
    pub fn zeroed(len: usize) -> Self {
        let Some(layout) = layout_of::<T>(len) else {
            return AVec::new();
        };
        if layout.align() < HUGE {
            // SAFETY: the layout has a non-zero size (checked in `layout_of`).
            let raw = unsafe { alloc_zeroed(layout) } as *mut T;
            let ptr = NonNull::new(raw).unwrap_or_else(|| handle_alloc_error(layout));
            return AVec { ptr, len };
        }
        // SAFETY: as above; the block is then asked for huge pages before its first write
        // (which is when Linux gives a block its pages), and zeroed.
        unsafe {
            let raw = alloc(layout);
            let ptr = NonNull::new(raw as *mut T).unwrap_or_else(|| handle_alloc_error(layout));
            #[cfg(target_os = "linux")]
            libc::madvise(raw as *mut libc::c_void, layout.size(), libc::MADV_HUGEPAGE);
            std::ptr::write_bytes(raw, 0, layout.size());
            AVec { ptr, len }
        }
    }
}

/// The allocation's layout for `len` elements, or None when there is nothing to allocate.
fn layout_of<T>(len: usize) -> Option<Layout> {
    let bytes = len.checked_mul(std::mem::size_of::<T>())?;
    if bytes == 0 {
        return None;
    }
    let align = if bytes >= HUGE {
        HUGE
    } else {
        ALIGN.max(std::mem::align_of::<T>())
    };
    Some(Layout::from_size_align(bytes, align).expect("AVec: size overflows"))
}

impl<T> Drop for AVec<T> {
    fn drop(&mut self) {
        if let Some(layout) = layout_of::<T>(self.len) {
            // SAFETY: allocated in `zeroed` with this same layout (T: Copy there, so the elements need
            // no drop).
            unsafe { dealloc(self.ptr.as_ptr() as *mut u8, layout) };
        }
    }
}

impl<T: Copy + Default> Default for AVec<T> {
    fn default() -> Self {
        AVec::new()
    }
}

impl<T: Copy + Default> Deref for AVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` holds `len` initialised elements (or is dangling with len 0).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy + Default> DerefMut for AVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy + Default> AsRef<[T]> for AVec<T> {
    fn as_ref(&self) -> &[T] {
        self
    }
}

impl<'a, T: Copy + Default> IntoIterator for &'a AVec<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a, T: Copy + Default> IntoIterator for &'a mut AVec<T> {
    type Item = &'a mut T;
    type IntoIter = std::slice::IterMut<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

impl<T: Copy + Default> Clone for AVec<T> {
    fn clone(&self) -> Self {
        let mut out = AVec::zeroed(self.len);
        out.copy_from_slice(self);
        out
    }
}

impl<T: Copy + Default + std::fmt::Debug> std::fmt::Debug for AVec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_start_on_a_cache_line_and_hold_zeros() {
        for len in [1usize, 3, 16, 1000, 1 << 18, (HUGE / 4) + 5] {
            let mut v = AVec::<f32>::zeroed(len);
            assert_eq!(v.as_ptr() as usize % ALIGN, 0, "len {len}");
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x == 0.0));
            v[len - 1] = 2.5;
            let w = v.clone();
            assert_eq!(w[len - 1], 2.5);
            assert_eq!(w.as_ptr() as usize % ALIGN, 0);
        }
        let e = AVec::<u8>::zeroed(0);
        assert!(e.is_empty());
        let i = AVec::<i32>::zeroed(5);
        assert_eq!(&i[..], &[0; 5]);
    }
}
