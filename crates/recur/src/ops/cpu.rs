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
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            Isa::ALL
                .into_iter()
                .find(|i| i.available())
                .unwrap_or(Isa::Portable)
        })
    }

    /// Whether this CPU runs code built for `self`.
    pub fn available(self) -> bool {
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
    let panel = super::panel::Kernel::best();
    let transpose = if isa == Isa::Avx512 {
        "avx512 16x16 tiles"
    } else {
        "portable loop"
    };
    vec![
        ("instruction set", isa.name().to_string()),
        ("per-step product (packed panels)", panel.describe()),
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
        (
            "input products, weight gradients",
            "gemm crate (its own run-time dispatch)".to_string(),
        ),
    ]
}
