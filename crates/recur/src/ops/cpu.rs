//! What this CPU can run, detected once: the vector instruction set every kernel dispatches on,
//! and the dispatch table (which kernel each hot operation uses here) that `recur bench` prints.

use std::sync::OnceLock;

/// The vector instruction sets recur has kernels for, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F (with VL, DQ, BW for the element-wise passes): 16 float32 lanes.
    Avx512,
    /// AVX2 with FMA: 8 float32 lanes.
    Avx2Fma,
    /// Plain Rust, whatever the compiler makes of it for the build's baseline.
    Portable,
}

impl Isa {
    /// Every instruction set, best first.
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2Fma, Isa::Portable];

    /// The best instruction set this CPU runs (detected once).
    pub fn detect() -> Isa {
        Isa::ALL
            .into_iter()
            .find(|i| i.available())
            .unwrap_or(Isa::Portable)
    }

    /// Whether this CPU runs code built for `self` (the CPU is asked once; every kernel call
    /// checks this, so it is one load afterwards).
    pub fn available(self) -> bool {
        static AVAILABLE: OnceLock<[bool; 3]> = OnceLock::new();
        AVAILABLE.get_or_init(|| Isa::ALL.map(Isa::ask_cpu))[self as usize]
    }

    fn ask_cpu(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Isa::Avx512 => {
                    has!("avx512f") && has!("avx512vl") && has!("avx512dq") && has!("avx512bw")
                }
                Isa::Avx2Fma => has!("avx2") && has!("fma"),
                Isa::Portable => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Isa::Portable
        }
    }

    /// The name `recur bench` prints.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2Fma => "avx2+fma",
            Isa::Portable => "portable",
        }
    }

    /// float32 lanes per vector.
    pub fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2Fma => 8,
            Isa::Portable => 1,
        }
    }
}

/// Which kernel each hot float32 operation runs on this CPU: (operation, kernel) rows.
pub fn dispatch_table() -> Vec<(&'static str, String)> {
    let isa = Isa::detect();
    let panel = super::panel::kernel_for::<f32>();
    let caches = Caches::get();
    let transpose = match isa {
        Isa::Avx512 => "avx512 16x16 tiles",
        Isa::Avx2Fma => "avx2 8x8 tiles",
        Isa::Portable => "portable loop",
    };
    vec![
        ("instruction set", isa.name().to_string()),
        (
            "per-step product (packed panels)",
            super::panel::describe(panel).to_string(),
        ),
        (
            "gate element-wise passes",
            match isa {
                Isa::Avx512 => "avx512 build (16 lanes)",
                Isa::Avx2Fma => "avx2+fma build (8 lanes)",
                Isa::Portable => "portable loop",
            }
            .to_string(),
        ),
        ("weight transpositions (packing)", transpose.to_string()),
        ("bf16 multiplier", super::multiplier::describe()),
        (
            "per-step product in bf16",
            if super::multiplier::multiplier() == super::multiplier::Multiplier::Vdpbf16ps {
                "avx512_bf16 vdpbf16ps zmm on bf16 panels at every shape (tiles 1x8 (B=1), 2x8, \
                 4x4 (B<=4), 8x2)"
                    .to_string()
            } else if super::tiles::available() {
                "AMX tdpbf16ps tiles (blocks of 2x2 tiles of 16 rows x 16 columns; 1x4 for up to \
                 16 rows), bf16 panels at every shape"
                    .to_string()
            } else {
                format!(
                "{}; bf16 panels for steps of up to {} rows where W_hh streams from memory{} (timed against float32 once per shape where it streams from the L3), else the float32 kernel",
                super::bf16::describe(super::bf16::kernel()),
                crate::cell::bf16_max_rows(),
                if super::bf16::native() {
                    " or the batch is one row"
                } else {
                    ""
                }
            )
            },
        ),
        (
            "per-step product in int8",
            if super::tiles::available_int8() {
                "AMX tdpbusd tiles (blocks of 2x2 tiles of 16 rows x 16 columns; 1x4 for up to \
                 16 rows)"
                    .to_string()
            } else {
                super::int8::describe(super::int8::kernel()).to_string()
            },
        ),
        ("bf16 and int8 instructions", low_precision_features()),
        ("AMX tiles", super::amx::Amx::get().describe()),
        (
            "caches (the schedules' sizes)",
            format!(
                "L2 {} KiB per core, L3 {} MiB{}; split by rows up to {} KiB of W_hh for few rows, \
                 input-product chunks up to {} KiB a thread",
                caches.l2 >> 10,
                caches.l3 >> 20,
                if caches.measured {
                    ""
                } else {
                    " (not reported here: fallback)"
                },
                crate::cell::split_weights() >> 10,
                crate::cell::chunk_bytes() >> 10,
            ),
        ),
        (
            "input products, weight gradients",
            "gemm crate (its own run-time dispatch)".to_string(),
        ),
    ]
}

/// Whether the CPU has AVX512-BF16 (`vdpbf16ps`), which the bf16 product uses for one row.
pub(crate) fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU has AVX512-VNNI (`vpdpbusd zmm`), which the int8 product uses.
pub(crate) fn has_avx512_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU has AVX-VNNI (`vpdpbusd` on 256-bit registers, VEX-encoded).
pub(crate) fn has_avx_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The bf16 and int8 vector instructions this CPU has, each with the kernel that uses it.
fn low_precision_features() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        use super::int8::Kernel;
        use std::arch::is_x86_feature_detected as has;
        let int8 = super::int8::kernel();
        let vnni = (int8 == Kernel::Vnni512).then_some("the int8 product");
        let avx_vnni = Some(if int8 == Kernel::AvxVnni {
            "the int8 product"
        } else {
            "its int8 kernel unused: a wider one runs"
        });
        let bf16 = super::bf16::native().then_some("the bf16 product");
        let found: Vec<String> = [
            ("avx512_bf16", has!("avx512bf16"), bf16),
            ("avx512_vnni", has!("avx512vnni"), vnni),
            ("avx_vnni", has!("avxvnni"), avx_vnni),
        ]
        .into_iter()
        .filter(|&(_, on, _)| on)
        .map(|(name, _, used)| format!("{name} ({})", used.unwrap_or("no kernel yet")))
        .collect();
        if !found.is_empty() {
            return found.join(", ");
        }
    }
    "none".to_string()
}

/// The cache sizes the schedules are derived from, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caches {
    /// One core's L2 (its private share, where W_hh of a step can stay from step to step).
    pub l2: usize,
    /// The last-level cache the cores share (in a VM: what the guest is shown).
    pub l3: usize,
    /// Whether the sizes were read from the machine (else they are the fallbacks below).
    pub measured: bool,
}

/// Fallbacks where the machine does not say (not Linux, no sysfs): the sizes of the machine the
/// schedules were first tuned on (an AMD EPYC Zen 5: 1 MiB of L2 per core, 32 MiB of L3).
const FALLBACK: Caches = Caches {
    l2: 1 << 20,
    l3: 32 << 20,
    measured: false,
};

impl Caches {
    /// This machine's caches, read once from `/sys/devices/system/cpu/cpu0/cache` (the sizes the
    /// kernel reports from CPUID), else [`FALLBACK`].
    pub fn get() -> Caches {
        static C: OnceLock<Caches> = OnceLock::new();
        *C.get_or_init(|| {
            Caches::from_sysfs(std::path::Path::new("/sys/devices/system/cpu/cpu0/cache"))
                .unwrap_or(FALLBACK)
        })
    }

    /// The data or unified caches of levels 2 and 3 listed under `dir` (`index*/level`,
    /// `index*/type`, `index*/size` as Linux writes them, e.g. `512K`); `None` when either is
    /// missing.
    pub fn from_sysfs(dir: &std::path::Path) -> Option<Caches> {
        let mut found = (None, None);
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let read = |name: &str| std::fs::read_to_string(entry.path().join(name)).ok();
            let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size"))
            else {
                continue;
            };
            if kind.trim() == "Instruction" {
                continue;
            }
            let bytes = parse_size(size.trim())?;
            match level.trim() {
                "2" => found.0 = Some(bytes),
                "3" => found.1 = Some(bytes),
                _ => {}
            }
        }
        Some(Caches {
            l2: found.0?,
            l3: found.1?,
            measured: true,
        })
    }
}

/// "512K", "32M", "1024" (bytes) as bytes.
fn parse_size(s: &str) -> Option<usize> {
    let (num, unit) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<usize>().ok().map(|n| n * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_linux_writes_them() {
        assert_eq!(parse_size("512K"), Some(512 << 10));
        assert_eq!(parse_size("32M"), Some(32 << 20));
        assert_eq!(parse_size("2048"), Some(2048));
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn caches_are_read_from_a_sysfs_tree() {
        let dir = std::env::temp_dir().join(format!("recur-caches-{}", std::process::id()));
        for (i, (level, kind, size)) in [
            ("1", "Data", "32K"),
            ("1", "Instruction", "64K"),
            ("2", "Unified", "512K"),
            ("3", "Unified", "8192K"),
        ]
        .into_iter()
        .enumerate()
        {
            let d = dir.join(format!("index{i}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("level"), format!("{level}\n")).unwrap();
            std::fs::write(d.join("type"), format!("{kind}\n")).unwrap();
            std::fs::write(d.join("size"), format!("{size}\n")).unwrap();
        }
        let c = Caches::from_sysfs(&dir).unwrap();
        assert_eq!((c.l2, c.l3, c.measured), (512 << 10, 8 << 20, true));
        // no level 3: not enough to derive from
        std::fs::remove_dir_all(dir.join("index3")).unwrap();
        assert_eq!(Caches::from_sysfs(&dir), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
