//! How the fast driver schedules a direction's work, and a process-wide override of its choices
//! for measuring them: `recur bench --tune` times every candidate on a shape, so that a
//! threshold set wrong for a machine shows itself. Every choice computes the same products;
//! only their split over threads and their order in time differ.

use std::sync::atomic::{AtomicU8, Ordering};

/// How one step's recurrent product (and its element-wise pass) is shared among the threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitChoice {
    /// The driver's own rule (by rows when each thread gets enough rows and W_hh is small).
    Auto,
    /// By batch rows: each thread streams all of W_hh for its rows.
    Rows,
    /// By hidden units: each thread streams its share of W_hh for every row.
    Units,
}

/// Whether inference computes the input product in chunks of steps inside the time loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkChoice {
    /// The driver's own rule (the AVX-512 kernel, weights within half the L3, enough rows).
    Auto,
    /// One product of all steps before the time loop.
    Off,
    /// In chunks whenever the input is dense and f32 (training keeps one product regardless).
    On,
}

/// In bf16 inference, the format of the packed W_hh the per-step product reads. Either gives
/// the same bits: the weights hold bf16 values, and both kernels add the same exact products
/// in the same order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PanelChoice {
    /// The driver's own rule (bf16 panels when the step is bound by reading W_hh from memory).
    Auto,
    /// float32 panels of the rounded weights: the float32 kernel, twice the bytes.
    F32,
    /// bf16 panels: half the bytes, the weights widened in registers.
    Bf16,
}

/// The driver's choices as overridden (all `Auto`: no override).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub split: SplitChoice,
    pub chunks: ChunkChoice,
    pub panels: PanelChoice,
}

impl Schedule {
    pub const AUTO: Schedule = Schedule {
        split: SplitChoice::Auto,
        chunks: ChunkChoice::Auto,
        panels: PanelChoice::Auto,
    };
}

static SPLIT: AtomicU8 = AtomicU8::new(0);
static CHUNKS: AtomicU8 = AtomicU8::new(0);
static PANELS: AtomicU8 = AtomicU8::new(0);

/// Overrides the driver's choices for every call after this one, on every thread of the process
/// (for benchmarks; [`Schedule::AUTO`] restores the rules).
pub fn set(s: Schedule) {
    let split = match s.split {
        SplitChoice::Auto => 0,
        SplitChoice::Rows => 1,
        SplitChoice::Units => 2,
    };
    let chunks = match s.chunks {
        ChunkChoice::Auto => 0,
        ChunkChoice::Off => 1,
        ChunkChoice::On => 2,
    };
    let panels = match s.panels {
        PanelChoice::Auto => 0,
        PanelChoice::F32 => 1,
        PanelChoice::Bf16 => 2,
    };
    SPLIT.store(split, Ordering::Relaxed);
    CHUNKS.store(chunks, Ordering::Relaxed);
    PANELS.store(panels, Ordering::Relaxed);
}

/// The choices in force.
pub fn get() -> Schedule {
    Schedule {
        split: match SPLIT.load(Ordering::Relaxed) {
            1 => SplitChoice::Rows,
            2 => SplitChoice::Units,
            _ => SplitChoice::Auto,
        },
        chunks: match CHUNKS.load(Ordering::Relaxed) {
            1 => ChunkChoice::Off,
            2 => ChunkChoice::On,
            _ => ChunkChoice::Auto,
        },
        panels: match PANELS.load(Ordering::Relaxed) {
            1 => PanelChoice::F32,
            2 => PanelChoice::Bf16,
            _ => PanelChoice::Auto,
        },
    }
}
