//! AMX (Advanced Matrix Extensions): whether this CPU has the tiles, whether the OS lets this
//! process use them, and the tile configuration.
//!
//! Three conditions, checked once: CPUID leaf 7 says AMX-TILE (with AMX-BF16 or AMX-INT8); XCR0
//! says the OS manages the tile state (bits 17 and 18); and Linux grants this process the tile
//! data when asked (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`), without which the
//! first tile instruction kills the process. Each thread then loads its own configuration
//! (`ldtilecfg`) before it uses tiles and releases them (`tilerelease`) after.

use std::sync::OnceLock;

/// What the tiles can do here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amx {
    /// Tiles usable, with bf16 products (`tdpbf16ps`) and/or int8 ones (`tdpbusd`, `tdpbssd`).
    Ready { bf16: bool, int8: bool },
    /// The CPU has no AMX tiles (or reports none: a hypervisor may hide them).
    NotOnCpu,
    /// The CPU has them but the OS does not manage their state (XCR0).
    NotEnabledByOs,
    /// Linux refused the tile data to this process (the errno).
    NotGranted(i32),
}

impl Amx {
    /// Detected (and the permission asked for) once per process.
    pub fn get() -> Amx {
        static A: OnceLock<Amx> = OnceLock::new();
        *A.get_or_init(detect)
    }

    /// Whether tile bf16 products can run.
    pub fn bf16(self) -> bool {
        matches!(self, Amx::Ready { bf16: true, .. })
    }

    /// Whether tile int8 products can run.
    pub fn int8(self) -> bool {
        matches!(self, Amx::Ready { int8: true, .. })
    }

    /// One line for the dispatch table and the ceilings.
    pub fn describe(self) -> String {
        match self {
            Amx::Ready { bf16, int8 } => format!(
                "tiles granted ({})",
                match (bf16, int8) {
                    (true, true) => "bf16, int8",
                    (true, false) => "bf16",
                    (false, true) => "int8",
                    (false, false) => "no products",
                }
            ),
            Amx::NotOnCpu => "not on this CPU".into(),
            Amx::NotEnabledByOs => "on the CPU, but the OS does not enable the tile state".into(),
            Amx::NotGranted(e) => {
                format!("on the CPU, but Linux refused the tile data (errno {e})")
            }
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> Amx {
    use std::arch::x86_64::__cpuid_count;
    // CPUID exists on every x86-64 CPU (the intrinsic is safe)
    let max_leaf = __cpuid_count(0, 0).eax;
    if max_leaf < 7 {
        return Amx::NotOnCpu;
    }
    let edx = __cpuid_count(7, 0).edx;
    let (bf16, tile, int8) = (edx >> 22 & 1 == 1, edx >> 24 & 1 == 1, edx >> 25 & 1 == 1);
    if !tile {
        return Amx::NotOnCpu;
    }
    if !std::arch::is_x86_feature_detected!("xsave") {
        return Amx::NotEnabledByOs;
    }
    // SAFETY: XSAVE (and so XGETBV) is present (checked).
    let xcr0 = unsafe { xgetbv0() };
    if xcr0 >> 17 & 3 != 3 {
        return Amx::NotEnabledByOs;
    }
    const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
    const XFEATURE_XTILEDATA: usize = 18;
    const SYS_ARCH_PRCTL: usize = 158;
    let ret: isize;
    // SAFETY: the arch_prctl system call with two integer arguments; it reads and writes no
    // memory of ours. The kernel clobbers rcx and r11.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL as isize => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    if ret != 0 {
        return Amx::NotGranted((-ret) as i32);
    }
    Amx::Ready { bf16, int8 }
}

/// XCR0, the OS-enabled state components.
///
/// # Safety
/// The CPU has XSAVE.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[target_feature(enable = "xsave")]
unsafe fn xgetbv0() -> u64 {
    // SAFETY: the caller's contract (XSAVE present).
    unsafe { std::arch::x86_64::_xgetbv(0) }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> Amx {
    Amx::NotOnCpu
}

/// A tile configuration (`ldtilecfg`'s 64 bytes, palette 1): tile `i` gets `rows[i]` rows of
/// `colsb[i]` bytes (at most 16 and 64).
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
pub struct TileConfig {
    bytes: [u8; 64],
}

impl TileConfig {
    /// Palette 1 with the eight tiles shaped as given ((rows, bytes per row); (0, 0): unused).
    pub fn new(tiles: [(u8, u16); 8]) -> TileConfig {
        let mut bytes = [0u8; 64];
        bytes[0] = 1;
        for (i, (rows, colsb)) in tiles.into_iter().enumerate() {
            assert!(
                rows <= 16 && colsb <= 64,
                "a tile is at most 16 rows of 64 bytes"
            );
            bytes[16 + 2 * i..18 + 2 * i].copy_from_slice(&colsb.to_le_bytes());
            bytes[48 + i] = rows;
        }
        TileConfig { bytes }
    }

    /// All eight tiles 16 rows of 64 bytes.
    pub fn full() -> TileConfig {
        TileConfig::new([(16, 64); 8])
    }

    /// The 64 bytes `ldtilecfg` reads.
    pub fn as_ptr(&self) -> *const u8 {
        self.bytes.as_ptr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration's bytes where the architecture puts them.
    #[test]
    fn tile_config_layout() {
        let c = TileConfig::new([
            (16, 64),
            (8, 32),
            (0, 0),
            (0, 0),
            (0, 0),
            (0, 0),
            (0, 0),
            (1, 4),
        ]);
        assert_eq!(c.bytes[0], 1);
        assert_eq!(&c.bytes[16..20], &[64, 0, 32, 0]);
        assert_eq!(&c.bytes[30..32], &[4, 0]);
        assert_eq!(&c.bytes[48..50], &[16, 8]);
        assert_eq!(c.bytes[55], 1);
        assert!(c.bytes[1..16].iter().all(|&b| b == 0));
        assert_eq!(c.as_ptr() as usize % 64, 0);
    }

    /// Detection answers without crashing, and says the same twice.
    #[test]
    fn detection_is_stable() {
        assert_eq!(Amx::get(), Amx::get());
        eprintln!("AMX here: {}", Amx::get().describe());
    }
}
