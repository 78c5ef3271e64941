//! The per-step recurrent product with weights packed once per sequence: `C = A * Bp`, where `A`
//! is a small row-major matrix (the batch's state, `B x K`) and `Bp` a weight matrix packed into
//! column panels of [`NR`] = 16 columns, each panel stored `K x 16` contiguously.
//!
//! Why not the general [`super::gemm()`]: the `gemm` crate packs its right operand on every call
//! and allocates the buffer for it. In the time loop that operand is always the same recurrent
//! weight matrix, so here it is packed once per forward (or backward) pass, the per-step product
//! reads the packed panels straight from cache, and nothing is allocated. Panels also let the
//! caller hand disjoint column ranges to different threads and fuse each thread's element-wise
//! work with its own columns (see `cell/fast.rs`).
//!
//! This is not a general GEMM: `A` is read in place (no packing), `K` is not blocked (the state
//! rows and one panel fit in L1/L2 for the sizes recurrent layers use), and `C` is overwritten.
//! Three kernels, one per instruction set ([`Isa`], [`kernel_for`]): AVX-512 (a panel row is one
//! vector) and AVX2 + FMA (two vectors)
//! serve f32 on the CPUs that have them; every other case runs the portable loop, which computes
//! the same sums in the same order (f64 gradient checks go through it).

use super::cpu::Isa;
use super::transpose::transpose_raw;
use super::Float;
use std::any::TypeId;
use std::ops::Range;

/// Columns per panel: one 512-bit vector of f32.
pub const NR: usize = 16;

/// Number of panels covering `n` columns.
pub fn panels(n: usize) -> usize {
    n.div_ceil(NR)
}

/// Packs `W^T` for `C = A W^T`, where `W` is `(G*H, K)` row-major (PyTorch's `weight_hh`): gate
/// block `g` gets its own `panels(H)` panels, so that column `j` of gate `g` lands at packed
/// column `g * Hp + j` with `Hp = panels(H) * NR` (the product's row is then `(G, Hp)`, each gate
/// padded to a whole panel). Padding columns are zero.
///
/// `dst`: `G * panels(H) * K * NR` elements.
pub fn pack_gates_t<F: Float>(dst: &mut [F], w: &[F], g: usize, h: usize, k: usize) {
    let hp = panels(h);
    assert_eq!(dst.len(), g * hp * k * NR, "pack_gates_t: dst size");
    assert!(w.len() >= g * h * k, "pack_gates_t: W too small");
    for_panels(dst, k, |q, panel| {
        // the panel is the transpose of the panel's rows of W: `cols` rows of k
        let (gi, u) = (q / hp, q % hp);
        let cols = NR.min(h - u * NR);
        let rows = &w[(gi * h + u * NR) * k..(gi * h + u * NR + cols) * k];
        // SAFETY: `rows` holds cols rows of k, the panel k rows of NR >= cols
        unsafe { transpose_raw(cols, k, rows.as_ptr(), k, panel.as_mut_ptr(), NR) };
        if cols < NR {
            for p in 0..k {
                panel[p * NR + cols..(p + 1) * NR].fill(F::ZERO);
            }
        }
    });
}

/// Runs `f(q, panel q)` for every panel of `dst` (panels of `k * NR` elements), split over the
/// threads when there is enough to copy. Why: docs/performance.md, "Packing on all threads".
fn for_panels<F: Float>(dst: &mut [F], k: usize, f: impl Fn(usize, &mut [F]) + Sync + Send) {
    let size = k * NR;
    let n = dst.len() / size.max(1);
    let per = n.div_ceil(super::gemm::threads()).max(1) * size;
    super::for_parts_mut(dst, per, dst.len() >= 1 << 16, |e0, part| {
        for (i, panel) in part.chunks_exact_mut(size).enumerate() {
            f(e0 / size + i, panel);
        }
    });
}

/// Packs `W` for `C = A W`, where `W` is `(K, N)` row-major: panel `q` holds columns
/// `q*NR .. q*NR + NR` (zero past `N`). `dst`: `panels(N) * K * NR` elements.
pub fn pack_n<F: Float>(dst: &mut [F], w: &[F], k: usize, n: usize) {
    let np = panels(n);
    assert_eq!(dst.len(), np * k * NR, "pack_n: dst size");
    assert!(w.len() >= k * n, "pack_n: W too small");
    for_panels(dst, k, |q, panel| {
        let c0 = q * NR;
        let width = NR.min(n - c0);
        for p in 0..k {
            let out = &mut panel[p * NR..(p + 1) * NR];
            let src = &w[p * n + c0..p * n + c0 + width];
            if let (Ok(out), Ok(src)) = (
                <&mut [F; NR]>::try_from(&mut *out),
                <&[F; NR]>::try_from(src),
            ) {
                // a whole panel row: a fixed-size copy, which compiles to vector moves instead of
                // a call to memmove (docs/performance.md, "Panel rows as fixed-size copies")
                *out = *src;
            } else {
                out[..width].copy_from_slice(src);
                out[width..].fill(F::ZERO);
            }
        }
    });
}

/// Whether this CPU runs the AVX-512 kernels (the element-wise passes are compiled for it too).
pub fn has_avx512() -> bool {
    Isa::detect() == Isa::Avx512
}

/// Whether `F` runs on the AVX-512 f32 kernels here (the packed product, the tile
/// transposition): `F` is f32 and the CPU has AVX-512.
pub fn avx512_f32<F: Float>() -> bool {
    TypeId::of::<F>() == TypeId::of::<f32>() && has_avx512()
}

/// The kernel the packed product of `F` runs here: the CPU's best instruction set for f32, the
/// plain loop for every other type. The kernels: AVX-512 (a panel row is one 16-lane vector,
/// tiles of up to 8 rows x 2 panels), AVX2 + FMA (two 8-lane vectors, tiles of up to 6 rows x 1
/// panel), portable.
pub fn kernel_for<F: Float>() -> Isa {
    if TypeId::of::<F>() == TypeId::of::<f32>() {
        Isa::detect()
    } else {
        Isa::Portable
    }
}

/// A kernel of the packed product and its tile shapes (rows x panels by batch rows), for the
/// dispatch table.
pub fn describe(kernel: Isa) -> &'static str {
    match kernel {
        Isa::Avx512 => "avx512: tiles 1x8 (B=1), 2x8, 4x4 (B<=4), 12x2 rows x panels of 16",
        Isa::Avx2Fma => "avx2+fma: tiles 1x4 (B=1), 2x2, 3x2, 6x1 rows x panels of 16",
        Isa::Portable => "portable loop",
    }
}

/// The loop every packed-product kernel (float32, bf16, int8) shares: the panels in steps of
/// the widest of `widths` that fits (at most `vmax`), every block of `groups`, the rows in
/// tiles of at most `mr`; `tile(rows, v, i, q, gi)` computes rows `i..i + rows` of block `gi`
/// against panels `q..q + v`. Inlined into each kernel, so the kernel's instruction set applies.
#[inline(always)]
pub(crate) fn for_tiles(
    m: usize,
    groups: Groups,
    panels: Range<usize>,
    (mr, vmax): (usize, usize),
    widths: &[usize],
    mut tile: impl FnMut(usize, usize, usize, usize, usize),
) {
    let mut q = panels.start;
    while q < panels.end {
        let left = panels.end - q;
        let v = widths
            .iter()
            .copied()
            .find(|&v| v <= vmax && v <= left)
            .unwrap_or(1);
        for gi in 0..groups.n {
            let mut i = 0;
            while i < m {
                let rows = mr.min(m - i);
                tile(rows, v, i, q, gi);
                i += rows;
            }
        }
        q += v;
    }
}

/// What a packed product reads and writes, for [`check_product`].
pub(crate) struct ProductArgs<'a, T> {
    /// The product's name in the panics ("panel_gemm", "bf16 panel_gemm", ...).
    pub what: &'static str,
    pub kernel: Isa,
    pub m: usize,
    pub groups: Groups,
    /// Elements of A read per row (k, or k padded to whole quads), A's length and row stride.
    pub row: usize,
    pub a_len: usize,
    pub lda: usize,
    /// Elements the packed panels need and have.
    pub packed_need: usize,
    pub packed_len: usize,
    pub panels: &'a Range<usize>,
    pub out: &'a OutPtr<T>,
}

/// The checks every packed product (float32, bf16, int8) makes before its kernel runs: the CPU
/// runs the kernel's instruction set, and A, the panels and C are large enough.
/// Returns whether there is anything to compute.
pub(crate) fn check_product<T>(p: ProductArgs<T>) -> bool {
    assert!(
        p.kernel.available(),
        "this CPU cannot run the {} kernel",
        p.kernel.name()
    );
    if p.m == 0 || p.groups.n == 0 || p.panels.is_empty() {
        return false;
    }
    assert!(
        p.a_len >= (p.groups.n - 1) * p.groups.a_step + (p.m - 1) * p.lda + p.row,
        "{}: A too small",
        p.what
    );
    assert!(
        p.packed_len >= p.packed_need,
        "{}: packed too small",
        p.what
    );
    assert!(
        p.out.n <= p.out.ld && p.panels.end <= p.out.n.div_ceil(NR),
        "{}: panels past C's columns",
        p.what
    );
    true
}

/// Raw view of the output matrix, shared between threads that write disjoint panels.
#[derive(Clone, Copy)]
pub struct OutPtr<F> {
    pub ptr: *mut F,
    /// Row stride.
    pub ld: usize,
    /// Columns that exist: stores past this are dropped (the last panel may be partial).
    pub n: usize,
}
// SAFETY: an OutPtr is only a pointer plus sizes; the functions that write through it require
// their callers to give each thread disjoint panels (see `panel_gemm_raw`).
unsafe impl<F: Send> Send for OutPtr<F> {}
unsafe impl<F: Sync> Sync for OutPtr<F> {}

/// `C[:, q*NR..] = A * panel q` for every `q` in `panels`, `A` being `m x k` at row stride `lda`.
///
/// # Safety
/// `out.ptr` must address `m` rows of `out.ld >= out.n` elements, valid for writes; no other thread
/// may read or write the columns of these panels meanwhile; `packed` must hold the panels.
pub unsafe fn panel_gemm_raw<F: Float>(
    m: usize,
    k: usize,
    a: &[F],
    lda: usize,
    packed: &[F],
    panels: Range<usize>,
    out: OutPtr<F>,
) {
    // SAFETY: forwarded contract (one group).
    unsafe { panel_gemm_groups_raw(m, Groups::ONE, k, a, lda, packed, panels, out) }
}

/// Row groups of a product: `n` blocks of `m` rows each, block `j`'s rows starting `a_step`
/// elements into `A` and `c_step` rows into `C` after block `j - 1`'s. Used for the input
/// product of several steps at once, where a thread's rows of one step are a block and the
/// steps' blocks lie at a fixed distance from each other.
#[derive(Clone, Copy, Debug)]
pub struct Groups {
    pub n: usize,
    pub a_step: usize,
    pub c_step: usize,
}

impl Groups {
    pub const ONE: Groups = Groups {
        n: 1,
        a_step: 0,
        c_step: 0,
    };
}

/// [`panel_gemm_raw`] over `groups.n` blocks of `m` rows: each panel (pair) is read once for
/// all the blocks, so the weights stream through the cache once per call rather than once per
/// block.
///
/// # Safety
/// As [`panel_gemm_raw`], for the rows of every block.
pub unsafe fn panel_gemm_groups_raw<F: Float>(
    m: usize,
    groups: Groups,
    k: usize,
    a: &[F],
    lda: usize,
    packed: &[F],
    panels: Range<usize>,
    out: OutPtr<F>,
) {
    // SAFETY: forwarded contract.
    unsafe { panel_gemm_groups_with(kernel_for::<F>(), m, groups, k, a, lda, packed, panels, out) }
}

/// [`panel_gemm_groups_raw`] on a chosen kernel (tests run every kernel the CPU has).
///
/// # Safety
/// As [`panel_gemm_raw`], for the rows of every block. Panics when this CPU cannot run `kernel`
/// or when a vector kernel is asked for a type other than f32.
pub unsafe fn panel_gemm_groups_with<F: Float>(
    kernel: Isa,
    m: usize,
    groups: Groups,
    k: usize,
    a: &[F],
    lda: usize,
    packed: &[F],
    panels: Range<usize>,
    out: OutPtr<F>,
) {
    let f32_only = TypeId::of::<F>() == TypeId::of::<f32>() || kernel == Isa::Portable;
    assert!(f32_only, "the {} kernel is float32 only", kernel.name());
    let go = check_product(ProductArgs {
        what: "panel_gemm",
        kernel,
        m,
        groups,
        row: k,
        a_len: a.len(),
        lda,
        packed_need: panels.end * k * NR,
        packed_len: packed.len(),
        panels: &panels,
        out: &out,
    });
    if !go {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if kernel != Isa::Portable {
        // SAFETY: F is f32 (asserted above), so the casts are identities; the CPU runs the
        // kernel (asserted above); the caller's contract covers the writes.
        unsafe {
            let a = std::slice::from_raw_parts(a.as_ptr() as *const f32, a.len());
            let packed = std::slice::from_raw_parts(packed.as_ptr() as *const f32, packed.len());
            let out = OutPtr {
                ptr: out.ptr as *mut f32,
                ld: out.ld,
                n: out.n,
            };
            match kernel {
                Isa::Avx512 => avx512::run(m, groups, k, a, lda, packed, panels, out),
                Isa::Avx2Fma => avx2::run(m, groups, k, a, lda, packed, panels, out),
                Isa::Portable => unreachable!(),
            }
        }
        return;
    }
    // SAFETY: forwarded contract.
    unsafe { portable(m, groups, k, a, lda, packed, panels, out) }
}

/// Safe single-caller form of [`panel_gemm_raw`]: `c` is `m x n` at row stride `ldc`.
pub fn panel_gemm<F: Float>(
    m: usize,
    k: usize,
    a: &[F],
    lda: usize,
    packed: &[F],
    panels: Range<usize>,
    c: &mut [F],
    ldc: usize,
    n: usize,
) {
    panel_gemm_with(kernel_for::<F>(), m, k, a, lda, packed, panels, c, ldc, n)
}

/// [`panel_gemm`] on a chosen kernel; panics as [`panel_gemm_groups_with`] does.
pub fn panel_gemm_with<F: Float>(
    kernel: Isa,
    m: usize,
    k: usize,
    a: &[F],
    lda: usize,
    packed: &[F],
    panels: Range<usize>,
    c: &mut [F],
    ldc: usize,
    n: usize,
) {
    if m == 0 {
        return;
    }
    assert!(
        n <= ldc && c.len() >= (m - 1) * ldc + n,
        "panel_gemm: C too small"
    );
    let out = OutPtr {
        ptr: c.as_mut_ptr(),
        ld: ldc,
        n,
    };
    // SAFETY: `c` is borrowed mutably for the whole call and its size was checked.
    unsafe { panel_gemm_groups_with(kernel, m, Groups::ONE, k, a, lda, packed, panels, out) }
}

/// The plain loop: one output element at a time, products summed in order of `p`.
unsafe fn portable<F: Float>(
    m: usize,
    groups: Groups,
    k: usize,
    a: &[F],
    lda: usize,
    packed: &[F],
    panels: Range<usize>,
    out: OutPtr<F>,
) {
    // SAFETY: forwarded contract.
    unsafe {
        for_elements(m, groups, lda, panels, out, |a0, q, j| {
            let panel = &packed[q * k * NR..(q + 1) * k * NR];
            let mut s = F::ZERO;
            for (p, &av) in a[a0..a0 + k].iter().enumerate() {
                s += av * panel[p * NR + j];
            }
            s
        })
    }
}

/// The portable loops' walk (float32, bf16, int8): `dot(a0, q, j)` is the element of C in
/// column `q * NR + j` (panel q) whose row of A starts at `a0`, for every row of every block
/// and every column of `panels` that exists.
///
/// # Safety
/// As [`panel_gemm_raw`], for the rows of every block.
pub(crate) unsafe fn for_elements<T>(
    m: usize,
    groups: Groups,
    lda: usize,
    panels: Range<usize>,
    out: OutPtr<T>,
    mut dot: impl FnMut(usize, usize, usize) -> T,
) {
    for q in panels {
        let width = NR.min(out.n.saturating_sub(q * NR));
        for gi in 0..groups.n {
            for i in 0..m {
                let row = gi * groups.c_step + i;
                for j in 0..width {
                    let v = dot(gi * groups.a_step + i * lda, q, j);
                    // SAFETY: the row is inside a block, column q*NR + j < out.n <= out.ld
                    // (caller's contract).
                    unsafe { *out.ptr.add(row * out.ld + q * NR + j) = v };
                }
            }
        }
    }
}

/// The body every packed-product kernel (float32, bf16, int8) shares around [`for_tiles`]: each
/// tile's A rows, B panels and C block, then the kernel module's own `tile::<R, V>(k, ap, lda,
/// bp, ps, out, i, q)` for the (rows, panels) shapes listed. Written inside the kernel's
/// `#[target_feature]` function, so `tile`, `tile_shape` and `OutPtr` are that module's.
macro_rules! tiled_product {
    ($m:expr, $k:expr, $a:expr, $lda:expr, $packed:expr, $ps:expr, $groups:expr, $panels:expr,
     $out:expr, $widths:expr; $($r:literal, $v:literal);* $(;)?) => {
        $crate::ops::panel::for_tiles(
            $m,
            $groups,
            $panels,
            tile_shape($m),
            $widths,
            |rows, v, i, q, gi| {
                // SAFETY: rows i..i+rows of block gi and panels q..q+v lie inside the slices the
                // caller checked; the stores are masked to columns < out.n.
                unsafe {
                    let ap = $a.as_ptr().add(gi * $groups.a_step + i * $lda);
                    let bp = $packed.as_ptr().add(q * $ps);
                    let out = OutPtr {
                        ptr: $out.ptr.add(gi * $groups.c_step * $out.ld),
                        ..$out
                    };
                    match (rows, v) {
                        $(($r, $v) => tile::<$r, $v>($k, ap, $lda, bp, $ps, out, i, q),)*
                        _ => unreachable!("tile shape {rows} x {v}"),
                    }
                }
            },
        )
    };
}
pub(crate) use tiled_product;

/// The tile shape of the AVX-512 packed kernels (float32, bf16, int8) for `m` rows: `R` rows x
/// `V` panels, with enough accumulators (R*V >= 8) to keep both FMA pipes busy despite the FMA's
/// latency (each accumulator is one dependency chain), and at most 16 of the 32 vector registers
/// for them. A batch of one (a matrix-vector product) therefore works on 8 panels at once. A
/// kernel module imports it as its `tile_shape`, which [`tiled_product`] calls.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512_tile_shape(m: usize) -> (usize, usize) {
    match m {
        1 => (1, 8),
        2 => (2, 8),
        3 | 4 => (m, 4),
        _ => (8, 2),
    }
}

/// The tile shape of the AVX2 packed kernels with one accumulator per half panel (float32, and
/// int8 on AVX-VNNI) for `m` rows: `R` rows x `V` panels. A panel row is two 8-lane vectors, so
/// a tile keeps 2*R*V accumulators; with the two panel vectors of a step (or the loads folded
/// into the FMAs) and the broadcast, at most 12 accumulators fit AVX2's 16 registers. 8 to 12
/// independent chains cover the FMA latency (4-5 cycles) on two pipes.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2_tile_shape(m: usize) -> (usize, usize) {
    match m {
        1 => (1, 4),
        2 => (2, 2),
        3 => (3, 2),
        _ => (6, 1),
    }
}

/// Stores an AVX-512 float32 tile: `acc[r][v]` into row `i0 + r` and panel `q + v` of `out`,
/// each panel row one store masked to the columns that exist.
///
/// # Safety
/// Called from a kernel compiled for AVX-512F (it is inlined there); rows `i0..i0 + R` of `out`
/// must be valid for writes in the panels' columns.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn store_tile_512<const R: usize, const V: usize>(
    acc: &[[std::arch::x86_64::__m512; V]; R],
    out: OutPtr<f32>,
    i0: usize,
    q: usize,
) {
    for v in 0..V {
        let c0 = (q + v) * NR;
        let mask = panel_mask(out.n, c0);
        for (r, row) in acc.iter().enumerate() {
            // SAFETY: the caller's contract: the row and the panel's existing columns are valid.
            unsafe {
                let dst = out.ptr.add((i0 + r) * out.ld + c0);
                std::arch::x86_64::_mm512_mask_storeu_ps(dst, mask, row[v]);
            }
        }
    }
}

/// [`tiled_product`] with the AVX-512 kernels' tiles: [`avx512_tile_shape`]'s, and the narrower
/// ones the end of a range of panels or of rows leaves.
macro_rules! avx512_tiled_product {
    ($m:expr, $k:expr, $a:expr, $lda:expr, $packed:expr, $ps:expr, $groups:expr, $panels:expr,
     $out:expr) => {
        $crate::ops::panel::tiled_product!($m, $k, $a, $lda, $packed, $ps, $groups, $panels, $out, &[8, 4, 2, 1]; 1, 8; 2, 8; 1, 4; 2, 4; 3, 4; 4, 4; 1, 2; 2, 2; 3, 2; 4, 2; 5, 2; 6, 2; 7, 2; 8, 2; 1, 1; 2, 1; 3, 1; 4, 1; 5, 1; 6, 1; 7, 1; 8, 1)
    };
}
pub(crate) use avx512_tiled_product;

/// The store mask of the panel starting at column `c0` of a C with `n` columns: one bit per
/// column that exists (the AVX-512 kernels store a panel row as one masked vector).
#[cfg(target_arch = "x86_64")]
pub(crate) fn panel_mask(n: usize, c0: usize) -> u16 {
    let width = NR.min(n.saturating_sub(c0));
    if width >= NR {
        0xffff
    } else {
        ((1u32 << width) - 1) as u16
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Groups, OutPtr, NR};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// The float32 kernel's tile shape for `m` rows: [`super::avx512_tile_shape`]'s up to 4 rows,
    /// then 12 rows x 2 panels, 24 accumulators (with the two panel vectors and a broadcast, 27
    /// of the 32 registers). Every row tile reads the panel pair again (64 KiB at K = 512: over
    /// an L1), so taller tiles mean fewer passes over it: 32 rows take 3 passes, not 4. Why:
    /// docs/performance.md, "Taller float32 tiles".
    fn tile_shape(m: usize) -> (usize, usize) {
        match m {
            1..=4 => super::avx512_tile_shape(m),
            _ => (12, 2),
        }
    }

    /// # Safety
    /// AVX-512F present; `panel_gemm_raw`'s contract.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn run(
        m: usize,
        groups: Groups,
        k: usize,
        a: &[f32],
        lda: usize,
        packed: &[f32],
        panels: Range<usize>,
        out: OutPtr<f32>,
    ) {
        let ps = k * NR;
        crate::ops::panel::tiled_product!(m, k, a, lda, packed, ps, groups, panels, out, &[8, 4, 2, 1]; 1, 8; 2, 8; 1, 4; 2, 4; 3, 4; 4, 4; 1, 2; 2, 2; 3, 2; 4, 2; 5, 2; 6, 2; 7, 2; 8, 2; 9, 2; 10, 2; 11, 2; 12, 2; 1, 1; 2, 1; 3, 1; 4, 1; 5, 1; 6, 1; 7, 1; 8, 1; 9, 1; 10, 1; 11, 1; 12, 1);
    }

    /// `R` rows x `V` panels of C from `k` products. `bp` points at panel q, `ps` is the panel
    /// stride; C's tile starts at row `i0`, panel `q`.
    #[inline(always)]
    unsafe fn tile<const R: usize, const V: usize>(
        k: usize,
        ap: *const f32,
        lda: usize,
        bp: *const f32,
        ps: usize,
        out: OutPtr<f32>,
        i0: usize,
        q: usize,
    ) {
        // SAFETY (whole body): the caller guarantees R rows of A with k columns at stride lda,
        // V panels of k*NR at stride ps, and C rows i0..i0+R; columns are masked below.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); V]; R];
            for p in 0..k {
                let mut b = [_mm512_setzero_ps(); V];
                for v in 0..V {
                    b[v] = _mm512_loadu_ps(bp.add(v * ps + p * NR));
                }
                for r in 0..R {
                    let av = _mm512_set1_ps(*ap.add(r * lda + p));
                    for v in 0..V {
                        acc[r][v] = _mm512_fmadd_ps(av, b[v], acc[r][v]);
                    }
                }
            }
            crate::ops::panel::store_tile_512(&acc, out, i0, q);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{avx2_tile_shape as tile_shape, Groups, OutPtr, NR};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// # Safety
    /// AVX2 and FMA present; `panel_gemm_raw`'s contract.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn run(
        m: usize,
        groups: Groups,
        k: usize,
        a: &[f32],
        lda: usize,
        packed: &[f32],
        panels: Range<usize>,
        out: OutPtr<f32>,
    ) {
        let ps = k * NR;
        crate::ops::panel::tiled_product!(m, k, a, lda, packed, ps, groups, panels, out, &[4, 2, 1]; 1, 4; 1, 2; 1, 1; 2, 2; 2, 1; 3, 2; 3, 1; 4, 1; 5, 1; 6, 1);
    }

    /// `R` rows x `V` panels of C from `k` products. `bp` points at panel q, `ps` is the panel
    /// stride; C's tile starts at row `i0`, panel `q`.
    #[inline(always)]
    unsafe fn tile<const R: usize, const V: usize>(
        k: usize,
        ap: *const f32,
        lda: usize,
        bp: *const f32,
        ps: usize,
        out: OutPtr<f32>,
        i0: usize,
        q: usize,
    ) {
        // SAFETY (whole body): the caller guarantees R rows of A with k columns at stride lda,
        // V panels of k*NR at stride ps, and C rows i0..i0+R; columns are masked below.
        unsafe {
            let mut acc = [[[_mm256_setzero_ps(); 2]; V]; R];
            for p in 0..k {
                let mut b = [[_mm256_setzero_ps(); 2]; V];
                for v in 0..V {
                    let row = bp.add(v * ps + p * NR);
                    b[v] = [_mm256_loadu_ps(row), _mm256_loadu_ps(row.add(8))];
                }
                for r in 0..R {
                    let av = _mm256_broadcast_ss(&*ap.add(r * lda + p));
                    for v in 0..V {
                        acc[r][v][0] = _mm256_fmadd_ps(av, b[v][0], acc[r][v][0]);
                        acc[r][v][1] = _mm256_fmadd_ps(av, b[v][1], acc[r][v][1]);
                    }
                }
            }
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            for v in 0..V {
                let c0 = (q + v) * NR;
                let width = NR.min(out.n.saturating_sub(c0));
                for r in 0..R {
                    let dst = out.ptr.add((i0 + r) * out.ld + c0);
                    if width == NR {
                        _mm256_storeu_ps(dst, acc[r][v][0]);
                        _mm256_storeu_ps(dst.add(8), acc[r][v][1]);
                    } else {
                        // lanes j < width of each half; masked-out lanes are neither written
                        // nor touched
                        for (h, half) in acc[r][v].iter().enumerate() {
                            let w = width.saturating_sub(8 * h).min(8) as i32;
                            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(w), lane);
                            _mm256_maskstore_ps(dst.wrapping_add(8 * h), mask, *half);
                        }
                    }
                }
            }
        }
    }
}
