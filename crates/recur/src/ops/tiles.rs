//! The per-step products on AMX tiles: bf16 (`tdpbf16ps`, float32 sums) and int8 (`tdpbusd`,
//! u8 activation codes times s8 weights, int32 sums). The panels are used as packed
//! ([`super::bf16::pack_gates_t`]: each 64-byte row sixteen columns' pair of consecutive k;
//! [`super::int8::pack_gates_t`]: their quad of consecutive k): that is the layout of an AMX B
//! tile, so a panel's chunk of k (32 bf16 or 64 int8 rows) loads as one tile with a stride of
//! 64 bytes and nothing is repacked.
//!
//! The products are written once, generic over [`Tiles`] (the six tile instructions they use),
//! and run either on the hardware ([`Hardware`]: one `asm!` block per instruction, the tile
//! registers named in the template, as the AMX intrinsics are not stable Rust) or on
//! [`Emulated`], a scalar model of the same instructions that any CPU runs. The tests run the
//! model everywhere and the hardware where the CPU and the OS grant the tiles, so the blocking,
//! the padding and the stores are checked on every machine, and only the instructions
//! themselves wait for an AMX one.
//!
//! Blocking: tiles 0-3 accumulate C (16 x 16 sums each), 4-5 hold A (16 rows of 64 bytes), 6-7
//! B. With two or more row tiles a block is 2 row tiles x 2 panels (each B tile loaded feeds two
//! products); with one (a batch of at most 16 rows) 1 x 4. A is copied into a zero-padded
//! buffer (rows to a multiple of 16, each row to whole 64-byte chunks) once per call; the last
//! chunk of each panel, when partial, is copied into a zero-padded tile, so no tile reads past
//! the panels. A whole C tile (16 rows and 16 columns that exist) is stored straight into the
//! output (and, when the product adds to the output, started from it); the others go through a
//! 1 KiB buffer into the rows and columns that exist.

use super::amx::{Amx, TileConfig};
use super::bf16::to_bf16;
use super::panel::{Groups, OutPtr, NR};
use std::cell::RefCell;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Rows of a tile, and bytes of a tile row.
const TR: usize = 16;
const ROW: usize = 64;
/// bf16 values in a tile row.
const KC: usize = ROW / 2;

/// The tile instructions the product uses, on tiles named by number (0-7), all shaped 16 rows
/// of 64 bytes ([`TileConfig::full`]).
pub trait Tiles {
    /// `tilezero`.
    ///
    /// # Safety
    /// The tiles are configured (a [`Hardware`] exists on this thread, or the model).
    unsafe fn zero<const T: u8>(&mut self);
    /// `tileloadd`: 16 rows of 64 bytes at `p + i * stride`.
    ///
    /// # Safety
    /// Those 16 rows are readable; the tiles are configured.
    unsafe fn load<const T: u8>(&mut self, p: *const u8, stride: usize);
    /// `tdpbf16ps`: `C (16 x 16 f32) += A (16 x 32 bf16) * B (16 pair rows x 16 columns)`.
    ///
    /// # Safety
    /// The tiles are configured.
    unsafe fn dot<const C: u8, const A: u8, const B: u8>(&mut self);
    /// `tdpbusd`: `C (16 x 16 i32) += A (16 x 64 u8) * B (16 quad rows x 16 columns of s8)`.
    ///
    /// # Safety
    /// The tiles are configured.
    unsafe fn dot_u8<const C: u8, const A: u8, const B: u8>(&mut self);
    /// `tilestored`: 16 rows of 64 bytes to `p + i * stride`.
    ///
    /// # Safety
    /// Those 16 rows are writable; the tiles are configured.
    unsafe fn store<const T: u8>(&mut self, p: *mut u8, stride: usize);
}

/// The tiles of this CPU. Made by [`Hardware::begin`], which loads the configuration; dropping
/// it releases the tile state (`tilerelease`), so a thread holds none between products.
pub struct Hardware {
    _private: (),
}

impl Hardware {
    /// Configures this thread's tiles, or None when the CPU or the OS does not grant them (for
    /// the bf16 or the int8 products; which of those the caller may run is its own check).
    pub fn begin() -> Option<Hardware> {
        let amx = Amx::get();
        if !(amx.bf16() || amx.int8()) {
            return None;
        }
        let cfg = TileConfig::full();
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AMX tiles are present and the process holds the tile permission (Amx::get);
        // the configuration is 64 valid bytes.
        unsafe {
            std::arch::asm!("ldtilecfg [{c}]", c = in(reg) cfg.as_ptr(), options(nostack))
        };
        let _ = cfg;
        Some(Hardware { _private: () })
    }
}

impl Drop for Hardware {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the tiles were configured by `begin`.
        unsafe {
            std::arch::asm!("tilerelease", options(nostack))
        };
    }
}

#[cfg(target_arch = "x86_64")]
impl Tiles for Hardware {
    #[inline(always)]
    unsafe fn zero<const T: u8>(&mut self) {
        // SAFETY: configured tiles (a Hardware exists).
        unsafe { std::arch::asm!("tilezero tmm{t}", t = const T, options(nostack)) };
    }

    #[inline(always)]
    unsafe fn load<const T: u8>(&mut self, p: *const u8, stride: usize) {
        // SAFETY: the trait's contract (16 readable rows).
        unsafe {
            std::arch::asm!(
                "tileloadd tmm{t}, [{p} + {s}*1]",
                t = const T,
                p = in(reg) p,
                s = in(reg) stride,
                options(nostack)
            )
        };
    }

    #[inline(always)]
    unsafe fn dot<const C: u8, const A: u8, const B: u8>(&mut self) {
        // SAFETY: configured tiles.
        unsafe {
            std::arch::asm!(
                "tdpbf16ps tmm{c}, tmm{a}, tmm{b}",
                c = const C,
                a = const A,
                b = const B,
                options(nostack)
            )
        };
    }

    #[inline(always)]
    unsafe fn dot_u8<const C: u8, const A: u8, const B: u8>(&mut self) {
        // SAFETY: configured tiles.
        unsafe {
            std::arch::asm!(
                "tdpbusd tmm{c}, tmm{a}, tmm{b}",
                c = const C,
                a = const A,
                b = const B,
                options(nostack)
            )
        };
    }

    #[inline(always)]
    unsafe fn store<const T: u8>(&mut self, p: *mut u8, stride: usize) {
        // SAFETY: the trait's contract (16 writable rows).
        unsafe {
            std::arch::asm!(
                "tilestored [{p} + {s}*1], tmm{t}",
                t = const T,
                p = in(reg) p,
                s = in(reg) stride,
                options(nostack)
            )
        };
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl Tiles for Hardware {
    unsafe fn zero<const T: u8>(&mut self) {
        unreachable!("AMX is x86-64 only")
    }
    unsafe fn load<const T: u8>(&mut self, _: *const u8, _: usize) {
        unreachable!("AMX is x86-64 only")
    }
    unsafe fn dot<const C: u8, const A: u8, const B: u8>(&mut self) {
        unreachable!("AMX is x86-64 only")
    }
    unsafe fn dot_u8<const C: u8, const A: u8, const B: u8>(&mut self) {
        unreachable!("AMX is x86-64 only")
    }
    unsafe fn store<const T: u8>(&mut self, _: *mut u8, _: usize) {
        unreachable!("AMX is x86-64 only")
    }
}

/// A scalar model of the tile instructions: eight tiles of 16 x 64 bytes. `dot` adds each
/// pair's two exact products to the float32 sum in order of k (the hardware's order and
/// rounding may differ within a sum's rounding; the tests allow for that); `dot_u8` sums in
/// int32, exactly as the hardware (wrapping, which the codes' range never reaches).
pub struct Emulated {
    t: [[u8; 1024]; 8],
}

impl Default for Emulated {
    fn default() -> Self {
        Emulated { t: [[0; 1024]; 8] }
    }
}

impl Emulated {
    fn f32_at(&self, t: usize, i: usize) -> f32 {
        f32::from_le_bytes(self.t[t][4 * i..4 * i + 4].try_into().expect("4 bytes"))
    }
    fn bf16_at(&self, t: usize, i: usize) -> f32 {
        let b = u16::from_le_bytes(self.t[t][2 * i..2 * i + 2].try_into().expect("2 bytes"));
        f32::from_bits((b as u32) << 16)
    }
}

impl Tiles for Emulated {
    unsafe fn zero<const T: u8>(&mut self) {
        self.t[T as usize] = [0; 1024];
    }

    unsafe fn load<const T: u8>(&mut self, p: *const u8, stride: usize) {
        for r in 0..TR {
            // SAFETY: the trait's contract (16 readable rows of 64 bytes).
            let row = unsafe { std::slice::from_raw_parts(p.add(r * stride), 64) };
            self.t[T as usize][r * 64..(r + 1) * 64].copy_from_slice(row);
        }
    }

    unsafe fn dot<const C: u8, const A: u8, const B: u8>(&mut self) {
        MODEL_PRODUCTS.fetch_add(1, Ordering::Relaxed);
        let (c, a, b) = (C as usize, A as usize, B as usize);
        for i in 0..TR {
            for j in 0..TR {
                let mut s = self.f32_at(c, i * TR + j);
                for p in 0..TR {
                    // A row i, bf16 2p and 2p+1; B pair row p, column j's two halves
                    s += self.bf16_at(a, i * KC + 2 * p) * self.bf16_at(b, p * KC + 2 * j);
                    s += self.bf16_at(a, i * KC + 2 * p + 1) * self.bf16_at(b, p * KC + 2 * j + 1);
                }
                self.t[c][4 * (i * TR + j)..4 * (i * TR + j) + 4].copy_from_slice(&s.to_le_bytes());
            }
        }
    }

    unsafe fn dot_u8<const C: u8, const A: u8, const B: u8>(&mut self) {
        MODEL_PRODUCTS.fetch_add(1, Ordering::Relaxed);
        let (c, a, b) = (C as usize, A as usize, B as usize);
        for i in 0..TR {
            for j in 0..TR {
                let at = 4 * (i * TR + j);
                let mut s = i32::from_le_bytes(self.t[c][at..at + 4].try_into().expect("4 bytes"));
                for p in 0..TR {
                    for e in 0..4 {
                        let x = self.t[a][i * ROW + 4 * p + e] as i32;
                        let w = self.t[b][p * ROW + 4 * j + e] as i8 as i32;
                        s = s.wrapping_add(x * w);
                    }
                }
                self.t[c][at..at + 4].copy_from_slice(&s.to_le_bytes());
            }
        }
    }

    unsafe fn store<const T: u8>(&mut self, p: *mut u8, stride: usize) {
        for r in 0..TR {
            // SAFETY: the trait's contract (16 writable rows of 64 bytes).
            let row = unsafe { std::slice::from_raw_parts_mut(p.add(r * stride), 64) };
            row.copy_from_slice(&self.t[T as usize][r * 64..(r + 1) * 64]);
        }
    }
}

/// Which machine runs a tile product: this CPU's multiplier (AMX tiles; for bf16 without them,
/// `vdpbf16ps` on the same panels where [`super::multiplier`] picks it), or the scalar model of
/// the tile instructions ([`Emulated`], for tests on any CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileRun {
    /// This process's multiplier: AMX tiles, or for bf16 `vdpbf16ps` where it was chosen.
    Native,
    /// `vdpbf16ps` whatever [`super::multiplier`] chose (bf16 only; for tests, where the CPU
    /// has AVX512-BF16).
    Vdpbf16ps,
    /// The scalar model of the tile instructions.
    Emulated,
}

/// Calls `f` with the tiles `on` names: the hardware's, configured for this call and released
/// after it, or a fresh model. (`vdpbf16ps` is no tile machine: the bf16 products send
/// [`TileRun::Vdpbf16ps`], and [`TileRun::Native`] where it was chosen, to its kernel before
/// they get here, [`super::bf16::panel_sets_tiles`].)
///
/// # Panics
/// When `on` is [`TileRun::Native`] and this process cannot use the tiles (`int8`: the int8
/// products; else the bf16 ones), or is [`TileRun::Vdpbf16ps`].
pub fn with_tiles(on: TileRun, int8: bool, f: impl FnOnce(&mut dyn TileUse)) {
    match on {
        TileRun::Native if MODEL.load(Ordering::Relaxed) => f(&mut Emulated::default()),
        TileRun::Vdpbf16ps => panic!("vdpbf16ps runs no tile products (bf16::panel_sets_tiles)"),
        TileRun::Native => {
            let ok = if int8 { available_int8() } else { available() };
            let mut t = ok.then(Hardware::begin).flatten().unwrap_or_else(|| {
                panic!(
                    "AMX {} tiles cannot run here: {}",
                    if int8 { "int8" } else { "bf16" },
                    Amx::get().describe()
                )
            });
            f(&mut t)
        }
        TileRun::Emulated => f(&mut Emulated::default()),
    }
}

/// The two products on some [`Tiles`], behind one object so that callers need not be generic.
pub trait TileUse {
    /// [`product`] on these tiles.
    ///
    /// # Safety
    /// As [`product`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn bf16(
        &mut self,
        m: usize,
        groups: Groups,
        k: usize,
        a: &[f32],
        lda: usize,
        packed: &[u16],
        panels: &[Range<usize>],
        out: OutPtr<f32>,
        accumulate: bool,
    );
    /// [`product_int8`] on these tiles.
    ///
    /// # Safety
    /// As [`product_int8`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn int8(
        &mut self,
        m: usize,
        groups: Groups,
        k: usize,
        a: &[u8],
        lda: usize,
        packed: &[i8],
        panels: &[Range<usize>],
        out: OutPtr<i32>,
    );
}

impl<T: Tiles> TileUse for T {
    unsafe fn bf16(
        &mut self,
        m: usize,
        groups: Groups,
        k: usize,
        a: &[f32],
        lda: usize,
        packed: &[u16],
        panels: &[Range<usize>],
        out: OutPtr<f32>,
        accumulate: bool,
    ) {
        // SAFETY: forwarded contract.
        unsafe { product(self, m, groups, k, a, lda, packed, panels, out, accumulate) }
    }
    unsafe fn int8(
        &mut self,
        m: usize,
        groups: Groups,
        k: usize,
        a: &[u8],
        lda: usize,
        packed: &[i8],
        panels: &[Range<usize>],
        out: OutPtr<i32>,
    ) {
        // SAFETY: forwarded contract.
        unsafe { product_int8(self, m, groups, k, a, lda, packed, panels, out) }
    }
}

/// Set by [`use_model`].
static MODEL: AtomicBool = AtomicBool::new(false);

/// Tile products the model has run in this process (both kinds).
static MODEL_PRODUCTS: AtomicUsize = AtomicUsize::new(0);

/// How many tile products ([`Tiles::dot`], [`Tiles::dot_u8`]) the model has run in this
/// process: tests check with it that a path they meant to send to the tiles went there.
pub fn model_products() -> usize {
    MODEL_PRODUCTS.load(Ordering::Relaxed)
}

/// For tests, process-wide: while on, the tile products count as available on every CPU and
/// whatever asks for the hardware's tiles runs on the model ([`Emulated`]) instead, so that the
/// callers' use of the tiles (which products, which rows and columns) is checked on machines
/// without AMX. Slow: the model is a scalar loop.
pub fn use_model(on: bool) {
    MODEL.store(on, Ordering::Relaxed);
}

/// Whether [`use_model`] is on.
pub(crate) fn model_on() -> bool {
    MODEL.load(Ordering::Relaxed)
}

/// Whether this process can run the bf16 product on the hardware's tiles (or [`use_model`]).
pub fn available() -> bool {
    MODEL.load(Ordering::Relaxed) || Amx::get().bf16()
}

/// Whether this process can run the int8 product on the hardware's tiles (or [`use_model`]).
pub fn available_int8() -> bool {
    MODEL.load(Ordering::Relaxed) || Amx::get().int8()
}

/// Scratch buffers of the calling thread, reused across calls.
#[derive(Default)]
struct Scratch {
    /// A, rows padded to whole tiles, each row to whole 64-byte chunks.
    a: Vec<u8>,
    /// The last chunk of up to four panels, zero-padded to whole tiles (1 KiB each).
    tail: Vec<u8>,
    /// One C tile on its way to the output.
    c: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The bf16 product: `C[:, q*NR..] = A * panel q` for every `q` in each range of `panels` (A
/// copied once for all of them) over the row
/// groups (`+=` with `accumulate`), on `t`'s tiles, `A` holding bf16 values (as float32) and
/// `packed` bf16 panels ([`super::bf16::pack_gates_t`], [`super::bf16::pack_n`]). The checks
/// are [`super::bf16::panel_gemm_tiles`]'s.
///
/// # Safety
/// As [`super::panel::panel_gemm_raw`], for the rows of every block; the sizes checked.
#[allow(clippy::too_many_arguments)]
pub unsafe fn product<T: Tiles>(
    t: &mut T,
    m: usize,
    groups: Groups,
    k: usize,
    a: &[f32],
    lda: usize,
    packed: &[u16],
    panels: &[Range<usize>],
    out: OutPtr<f32>,
    accumulate: bool,
) {
    let rows = super::bf16::pair_rows(k);
    let write = |dst: &mut [u8], i: usize| {
        let src = &a[i..][..k];
        for (d, &v) in dst.chunks_exact_mut(2).zip(src) {
            d.copy_from_slice(&to_bf16(v).to_le_bytes());
        }
    };
    let bytes = packed.len() * 2;
    // SAFETY: u16 panels read as their bytes (little-endian, as the tiles read them); forwarded
    // contract; float32 sums stored as their bits.
    unsafe {
        let packed = std::slice::from_raw_parts(packed.as_ptr() as *const u8, bytes);
        let out = OutPtr {
            ptr: out.ptr as *mut u32,
            ld: out.ld,
            n: out.n,
        };
        let sums = if accumulate {
            Sums::AddF32
        } else {
            Sums::Store
        };
        run::<T, false>(t, m, groups, lda, rows, &write, packed, panels, out, sums)
    }
}

/// The int8 product: `C[:, q*NR..] = A * panel q` in int32 for every `q` in each range of
/// `panels` over the
/// row groups, on `t`'s tiles, `A` being 7-bit codes (`k` of each row read; the padding to
/// whole quads multiplies zero weights) and `packed` the panels of
/// [`super::int8::pack_gates_t`]. The checks are [`super::int8::panel_gemm_tiles`]'s.
///
/// # Safety
/// As [`super::panel::panel_gemm_raw`], for the rows of every block; the sizes checked.
#[allow(clippy::too_many_arguments)]
pub unsafe fn product_int8<T: Tiles>(
    t: &mut T,
    m: usize,
    groups: Groups,
    k: usize,
    a: &[u8],
    lda: usize,
    packed: &[i8],
    panels: &[Range<usize>],
    out: OutPtr<i32>,
) {
    let rows = super::int8::quads(k);
    let write = |dst: &mut [u8], i: usize| dst[..k].copy_from_slice(&a[i..][..k]);
    // SAFETY: i8 panels read as their bytes; forwarded contract; int32 sums stored as bits.
    unsafe {
        let packed = std::slice::from_raw_parts(packed.as_ptr() as *const u8, packed.len());
        let out = OutPtr {
            ptr: out.ptr as *mut u32,
            ld: out.ld,
            n: out.n,
        };
        run::<T, true>(
            t,
            m,
            groups,
            lda,
            rows,
            &write,
            packed,
            panels,
            out,
            Sums::Store,
        )
    }
}

/// What becomes of a C tile's sums in the output.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sums {
    /// Stored as their 32-bit patterns.
    Store,
    /// Added (as float32) to what the output holds.
    AddF32,
}

/// Both products: panels of `rows` 64-byte rows each; `write(dst, i)` puts the A row that
/// starts at element `i` into `dst` (a zeroed row of the padded buffer); `sums` says what the
/// tiles' sums do to the output.
///
/// # Safety
/// As [`product`].
#[allow(clippy::too_many_arguments)]
unsafe fn run<T: Tiles, const INT8: bool>(
    t: &mut T,
    m: usize,
    groups: Groups,
    lda: usize,
    rows: usize,
    write: &dyn Fn(&mut [u8], usize),
    packed: &[u8],
    panels: &[Range<usize>],
    out: OutPtr<u32>,
    sums: Sums,
) {
    if m == 0 || groups.n == 0 || panels.iter().all(|r| r.is_empty()) {
        return;
    }
    SCRATCH.with(|s| {
        let s = &mut *s.borrow_mut();
        s.c.resize(TR * TR, 0);
        let chunks = rows.div_ceil(TR);
        let astride = chunks * ROW;
        let mt = m.div_ceil(TR);
        // A: group g's row tile r at rows (g * mt + r) * 16 of an astride-wide buffer
        s.a.clear();
        s.a.resize(groups.n * mt * TR * astride, 0);
        for g in 0..groups.n {
            for i in 0..m {
                write(
                    &mut s.a[(g * mt * TR + i) * astride..][..astride],
                    g * groups.a_step + i * lda,
                );
            }
        }
        let size = rows * ROW;
        let full = rows / TR;
        let tail = (rows % TR) * ROW;
        let (rr, pp) = if mt >= 2 { (2, 2) } else { (1, 4) };
        s.tail.clear();
        s.tail.resize(pp * TR * ROW, 0);
        for (mut q0, end) in panels.iter().map(|r| (r.start, r.end)) {
            while q0 < end {
                let np = pp.min(end - q0);
                // each panel's last chunk, when partial, zero-padded to a whole tile
                if tail > 0 {
                    for p in 0..np {
                        let src = &packed[(q0 + p) * size + full * TR * ROW..][..tail];
                        let dst = &mut s.tail[p * TR * ROW..(p + 1) * TR * ROW];
                        dst[..tail].copy_from_slice(src);
                        dst[tail..].fill(0);
                    }
                }
                let bfirst: [[*const u8; 2]; 4] = std::array::from_fn(|p| {
                    if p < np {
                        [
                            packed[(q0 + p) * size..].as_ptr(),
                            s.tail[p * TR * ROW..].as_ptr(),
                        ]
                    } else {
                        [std::ptr::null(); 2]
                    }
                });
                let blk = Block {
                    chunks,
                    full,
                    astride,
                    bfirst,
                };
                for g in 0..groups.n {
                    let mut r0 = 0;
                    while r0 < mt {
                        let nr = rr.min(mt - r0);
                        let ap = s.a[(g * mt + r0) * TR * astride..].as_ptr();
                        // tile (r, p) is tile r * np + p, as block accumulates. A whole tile (16
                        // rows of the block, 16 columns of C) goes to and from the output directly;
                        // the others through the scratch tile.
                        let whole = |r: usize, p: usize| -> Option<*mut u8> {
                            let (row, col) = ((r0 + r) * TR, (q0 + p) * NR);
                            (row + TR <= m && col + NR <= out.n).then(|| {
                                // SAFETY: the tile's rows and columns exist in the output.
                                unsafe {
                                    out.ptr.add((g * groups.c_step + row) * out.ld + col) as *mut u8
                                }
                            })
                        };
                        let mut direct = [None; 4];
                        for r in 0..nr {
                            for p in 0..np {
                                direct[r * np + p] = whole(r, p);
                            }
                        }
                        let stride = out.ld * 4;
                        // SAFETY: A holds nr row tiles of `chunks` chunks from ap; the panels hold
                        // `full` whole chunks and the tail buffer the last one when partial; each
                        // tile started from the output addresses 16 rows of 64 bytes at `stride`.
                        unsafe {
                            for (i, d) in direct.iter().enumerate().take(nr * np) {
                                match (d, sums) {
                                    (Some(c), Sums::AddF32) => load_any(t, i, *c, stride),
                                    _ => zero_any(t, i),
                                }
                            }
                            match (nr, np) {
                                (2, 2) => block::<T, 2, 2, INT8>(t, &blk, ap),
                                (2, _) => block::<T, 2, 1, INT8>(t, &blk, ap),
                                (_, 4) => block::<T, 1, 4, INT8>(t, &blk, ap),
                                (_, 3) => block::<T, 1, 3, INT8>(t, &blk, ap),
                                (_, 2) => block::<T, 1, 2, INT8>(t, &blk, ap),
                                _ => block::<T, 1, 1, INT8>(t, &blk, ap),
                            }
                        }
                        for r in 0..nr {
                            for p in 0..np {
                                let ti = r * np + p;
                                if let Some(c) = direct[ti] {
                                    // SAFETY: as above; the tile holds the final sums (started from
                                    // the output's own when adding).
                                    unsafe { store_any(t, ti, c, stride) };
                                    continue;
                                }
                                // SAFETY: the scratch tile is 16 rows of 64 bytes.
                                unsafe { store_any(t, ti, s.c.as_mut_ptr() as *mut u8, ROW) };
                                let q = q0 + p;
                                let width = NR.min(out.n.saturating_sub(q * NR));
                                for i in 0..TR {
                                    let row = (r0 + r) * TR + i;
                                    if row >= m {
                                        break;
                                    }
                                    let orow = g * groups.c_step + row;
                                    for j in 0..width {
                                        // SAFETY: the row lies in block g and the column under
                                        // out.n (the caller's contract).
                                        unsafe {
                                            let o = out.ptr.add(orow * out.ld + q * NR + j);
                                            *o = match sums {
                                                Sums::Store => s.c[i * TR + j],
                                                Sums::AddF32 => (f32::from_bits(*o)
                                                    + f32::from_bits(s.c[i * TR + j]))
                                                .to_bits(),
                                            };
                                        }
                                    }
                                }
                            }
                        }
                        r0 += nr;
                    }
                }
                q0 += np;
            }
        }
    });
}

/// One block's pointers: the chunk count, how many are whole in the panels, A's row stride in
/// bytes, and each panel's start and its tail tile.
struct Block {
    chunks: usize,
    full: usize,
    astride: usize,
    bfirst: [[*const u8; 2]; 4],
}

impl Block {
    /// Panel `p`'s chunk `c`: 1 KiB steps through the panel, the tail tile for a partial last.
    #[inline(always)]
    fn b(&self, p: usize, c: usize) -> *const u8 {
        if c < self.full {
            self.bfirst[p][0].wrapping_add(c * TR * ROW)
        } else {
            self.bfirst[p][1]
        }
    }
}

/// Tile `i` (0-3) stored to `p` at `stride`.
///
/// # Safety
/// `p` addresses 16 rows of 64 bytes at `stride`; the tiles are configured.
unsafe fn store_any<T: Tiles>(t: &mut T, i: usize, p: *mut u8, stride: usize) {
    // SAFETY: forwarded contract.
    unsafe {
        match i {
            0 => t.store::<0>(p, stride),
            1 => t.store::<1>(p, stride),
            2 => t.store::<2>(p, stride),
            _ => t.store::<3>(p, stride),
        }
    }
}

/// Tile `i` (0-3) loaded from `p` at `stride`.
///
/// # Safety
/// `p` addresses 16 readable rows of 64 bytes at `stride`; the tiles are configured.
unsafe fn load_any<T: Tiles>(t: &mut T, i: usize, p: *const u8, stride: usize) {
    // SAFETY: forwarded contract.
    unsafe {
        match i {
            0 => t.load::<0>(p, stride),
            1 => t.load::<1>(p, stride),
            2 => t.load::<2>(p, stride),
            _ => t.load::<3>(p, stride),
        }
    }
}

/// Tile `i` (0-3) zeroed.
///
/// # Safety
/// The tiles are configured.
unsafe fn zero_any<T: Tiles>(t: &mut T, i: usize) {
    // SAFETY: forwarded contract.
    unsafe {
        match i {
            0 => t.zero::<0>(),
            1 => t.zero::<1>(),
            2 => t.zero::<2>(),
            _ => t.zero::<3>(),
        }
    }
}

/// `C += A * B` on tiles C, A, B: `tdpbusd` for int8, else `tdpbf16ps`.
///
/// # Safety
/// The tiles are configured.
#[inline(always)]
unsafe fn dot<T: Tiles, const INT8: bool, const C: u8, const A: u8, const B: u8>(t: &mut T) {
    // SAFETY: forwarded contract.
    unsafe {
        if INT8 {
            t.dot_u8::<C, A, B>()
        } else {
            t.dot::<C, A, B>()
        }
    }
}

/// R row tiles x P panels accumulated in tiles `r * P + p` over every chunk, onto what those
/// tiles hold (the caller zeroes or loads them); A's row tile `r` at `ap + r * 16 * astride`.
///
/// # Safety
/// The block's pointers address whole tiles for every chunk; the tiles are configured.
#[inline(always)]
unsafe fn block<T: Tiles, const R: usize, const P: usize, const INT8: bool>(
    t: &mut T,
    blk: &Block,
    ap: *const u8,
) {
    // SAFETY (all the tile operations): the caller's contract.
    unsafe {
        let s = blk.astride;
        for c in 0..blk.chunks {
            let a = ap.add(c * ROW);
            t.load::<4>(a, s);
            if R == 2 {
                t.load::<5>(a.add(TR * s), s);
                // tiles 0, 1: row tile 0 x panels 0, 1; tiles 2, 3 (P = 2) or 1 (P = 1): row tile 1
                t.load::<6>(blk.b(0, c), ROW);
                dot::<T, INT8, 0, 4, 6>(t);
                if P == 2 {
                    dot::<T, INT8, 2, 5, 6>(t);
                    t.load::<7>(blk.b(1, c), ROW);
                    dot::<T, INT8, 1, 4, 7>(t);
                    dot::<T, INT8, 3, 5, 7>(t);
                } else {
                    dot::<T, INT8, 1, 5, 6>(t);
                }
            } else {
                t.load::<6>(blk.b(0, c), ROW);
                dot::<T, INT8, 0, 4, 6>(t);
                if P >= 2 {
                    t.load::<7>(blk.b(1, c), ROW);
                    dot::<T, INT8, 1, 4, 7>(t);
                }
                if P >= 3 {
                    t.load::<6>(blk.b(2, c), ROW);
                    dot::<T, INT8, 2, 4, 6>(t);
                }
                if P >= 4 {
                    t.load::<7>(blk.b(3, c), ROW);
                    dot::<T, INT8, 3, 4, 7>(t);
                }
            }
        }
    }
}
