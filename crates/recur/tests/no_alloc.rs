//! Nothing is allocated inside the time loop (the fast path of `recur::cell`), shown with a
//! counting global allocator: a stack's forward and backward make as many allocations for 128
//! steps as for 32 steps (up to [`SLACK`], far below the 96 that one allocation per step would
//! add), for every cell, on 1 and 2 threads (with steps large enough to
//! be split over the threads). The allocations that do happen are the `gemm` crate's packing
//! buffers in the all-steps products (input projection, weight gradients), outside the time loop;
//! the workspaces are sized once, before the counting. On several threads that crate allocates
//! one buffer per thread per block of the summed dimension, which grows with T; so the 2-thread
//! case keeps those products on one thread (`gemm::set_threading_threshold`) while the time
//! loop's steps are still split over 2 threads by recur's own code.

use recur::cell::{CellKind, LayerInput};
use recur::ops::gemm::set_threads;
use recur::rng::Rng;
use recur::stack::{Stack, StackConfig};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by one forward and one backward of a 2-layer stack over `t` steps (after a
/// first, uncounted, pair of calls that lets the thread pool and the like start up).
fn allocations(kind: CellKind, t: usize) -> (usize, usize) {
    // B*H*H = 294,912 multiply-adds per step: above the fast driver's threshold for splitting
    let (b, h) = (32, 96);
    let stack = Stack::new(StackConfig::new(kind, h, h).with_layers(2)).expect("valid config");
    let mut rng = Rng::new(1);
    let mut params = vec![0f32; stack.num_params()];
    stack.init(&mut params, &mut rng);
    let mut grads = vec![0f32; stack.num_params()];
    let x: Vec<f32> = (0..t * b * h).map(|_| rng.normal() as f32).collect();
    let dy: Vec<f32> = (0..t * b * h).map(|_| rng.normal() as f32).collect();
    let mut dx = vec![0f32; t * b * h];
    let mut ws = stack.workspace::<f32>(t, b);
    let input = LayerInput::Dense { x: &x, ld: h };
    let mut pass = |count: bool| {
        let a0 = ALLOCS.load(Ordering::SeqCst);
        stack.forward(&mut ws, &params, input, None, None, None, None);
        let a1 = ALLOCS.load(Ordering::SeqCst);
        stack.backward(
            &mut ws,
            &params,
            &mut grads,
            input,
            None,
            Some(&dy),
            None,
            None,
            Some(&mut dx),
        );
        let a2 = ALLOCS.load(Ordering::SeqCst);
        count.then_some((a1 - a0, a2 - a1))
    };
    pass(false);
    pass(true).expect("counted")
}

/// Allocations that may differ between two passes whatever their length, outside the time loop:
/// rayon hands work from outside its pool through a queue that takes a new block of slots every 63
/// jobs (so a pass may or may not be the one that needs it), and the `gemm` crate allocates its
/// packing workspace the first time a thread runs a product, per thread: on 2 threads the weight
/// gradients run as two concurrent halves (`weight_grads` in `cell/products.rs`), and which pool
/// thread runs which half changes from pass to pass, so a thread may run its first product of a
/// size in the counted pass (4 products, so up to 4 allocations, plus the queue's one). Seen: 1
/// before the concurrent halves; after, 0-2 in 40 runs with a second copy of the test beside it,
/// and once a failure of the earlier limit of 2 in a full `cargo test`. Far below the 96 that one
/// allocation per step would add.
const SLACK: usize = 6;

/// One test, so that no other test in this binary allocates while the counter is read.
#[test]
fn time_loop_allocates_nothing() {
    for threads in [1, 2] {
        set_threads(threads);
        if threads > 1 {
            gemm::set_threading_threshold(usize::MAX);
        }
        for name in ["rnn_tanh", "lstm", "gru"] {
            let kind = CellKind::parse(name).expect("known cell");
            let (f_short, b_short) = allocations(kind, 32);
            let (f_long, b_long) = allocations(kind, 128);
            // 96 more steps: one allocation per step would add at least 96
            assert!(
                f_long.abs_diff(f_short) <= SLACK,
                "{name}, {threads} thread(s): forward allocates {f_short} times for T=32, {f_long} for T=128"
            );
            assert!(
                b_long.abs_diff(b_short) <= SLACK,
                "{name}, {threads} thread(s): backward allocates {b_short} times for T=32, {b_long} for T=128"
            );
        }
    }
    set_threads(1);
}
