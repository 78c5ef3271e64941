//! The fast sequence driver (`cell/fast.rs`: packed weights, SIMD activations, steps split over
//! threads) against the simple one (`cell/simple.rs`: a general GEMM per step, scalar loops, one
//! thread), which the f64 gradient checks also cover. Every cell, both directions, per-sequence
//! lengths, given initial states and final-state gradients, with and without biases, on 1 and 2
//! threads, in f32 (the AVX-512 kernels where the CPU has them) and f64. The hidden size 150 is
//! not a multiple of the 16-column panels, and each step's product is big enough to be split:
//! with 13 sequences the 2-thread runs split every step by hidden units (barrier per step), with
//! 37 by batch rows (each thread its own sequences, 18 and 19 of them). The fast driver's
//! inference mode (nothing kept for backward; the input product in chunks of steps) is held to
//! the same tolerance. LSTMs with projections run the simple driver either way: there its fast
//! kernels (`simple::Kernels::Fast`: packed products, vectorised passes, the time loop split
//! by batch rows over the threads) are held against its reference arithmetic the same way.

use recur::cell::{
    self, simple, CellKind, DirBackward, DirCache, DirDims, DirForward, DirGrads, DirWeights,
    LayerInput,
};
use recur::ops::gemm::set_threads;
use recur::ops::Float;
use recur::rng::Rng;

#[path = "support/close.rs"]
mod close;
use close::assert_close;

/// f32: relative to each tensor's largest magnitude; the two drivers add the same terms in
/// different orders (bias folded early, blocked sums), and use different tanh/sigmoid (4 ulp).
const TOL_F32: f64 = 1e-5;
/// f64: the same activations (the C library's) and sums that differ only in order.
const TOL_F64: f64 = 1e-12;

/// Steps, batch, input and hidden sizes of one comparison, and an LSTM projection's size (0:
/// none).
#[derive(Clone, Copy, Debug)]
struct Shape {
    t: usize,
    b: usize,
    i: usize,
    h: usize,
    p: usize,
}

/// Batch sizes 13 and 37: below and above the fast driver's threshold for splitting by rows on
/// 2 threads. The third shape is large enough (I * G * H * T * B >= 2^22 multiply-adds for the
/// LSTM and the GRU) for the weight gradients and dX to be computed as two concurrent halves
/// on 2 threads, with I != H so that the halves cut dX's rows unevenly (`weight_grads` in
/// `cell/products.rs`).
/// The fourth has I + H >= 512 and T * B = 256 rows: the backward keeps dG transposed for the
/// weight gradients (every cell but the GRU), with its row stride padded, on 1 thread and (as
/// concurrent halves) on 2.
const SHAPES: [Shape; 4] = [
    Shape {
        t: 6,
        b: 13,
        i: 7,
        h: 150,
        p: 0,
    },
    Shape {
        t: 6,
        b: 37,
        i: 7,
        h: 150,
        p: 0,
    },
    Shape {
        t: 16,
        b: 16,
        i: 96,
        h: 64,
        p: 0,
    },
    Shape {
        t: 8,
        b: 32,
        i: 256,
        h: 256,
        p: 0,
    },
];

/// LSTMs with projections (the simple driver with the fast kernels, `Kernels::Fast`, against
/// its reference arithmetic): P and H off the 16-column panels; 3 sequences (one part), 13 and
/// 37 (on 2 threads the time loop split by batch rows: 7 + 6, 19 + 18).
const PROJ_SHAPES: [Shape; 3] = [
    Shape {
        t: 5,
        b: 3,
        i: 9,
        h: 40,
        p: 11,
    },
    Shape {
        t: 6,
        b: 13,
        i: 7,
        h: 150,
        p: 37,
    },
    Shape {
        t: 7,
        b: 37,
        i: 20,
        h: 70,
        p: 33,
    },
];

struct Out<F> {
    y: Vec<F>,
    h_n: Vec<F>,
    c_n: Vec<F>,
    grads: Vec<F>,
    dx: Vec<F>,
    dh0: Vec<F>,
    dc0: Vec<F>,
}

/// Forward (and backward unless `infer`) of one layer direction with the fast or simple driver.
#[allow(non_snake_case)]
fn run<F: Float>(
    fast: bool,
    infer: bool,
    kind: CellKind,
    reverse: bool,
    bias: bool,
    seed: u64,
    shape: Shape,
) -> Out<F> {
    let Shape {
        t: T,
        b: B,
        i: I,
        h: H,
        p,
    } = shape;
    // P: the size of h (H without a projection)
    let P = if p > 0 { p } else { H };
    let g = kind.gates();
    let lstm = kind == CellKind::Lstm;
    let mut rng = Rng::new(seed);
    let mut r = |n: usize, s: f64| -> Vec<F> {
        (0..n).map(|_| F::from_f64(rng.uniform_in(-s, s))).collect()
    };
    let w_ih = r(g * H * I, 0.3);
    let w_hh = r(g * H * P, 0.15);
    let w_hr = r(P * H, 0.2);
    let b_ih = r(g * H, 0.2);
    let b_hh = r(g * H, 0.2);
    let x = r(T * B * I, 1.0);
    let dy = r(T * B * P, 1.0);
    let h0 = r(B * P, 0.5);
    let c0 = r(B * H, 0.5);
    let dh_n = r(B * P, 0.5);
    let dc_n = r(B * H, 0.5);
    let lengths: Vec<usize> = (0..B).map(|b| 1 + (b * 5) % T).collect();
    let dims = DirDims {
        kind,
        t: T,
        b: B,
        i: I,
        h: H,
        p: P,
        reverse,
    };
    let w = DirWeights {
        w_ih: &w_ih,
        w_hh: &w_hh,
        b_ih: bias.then_some(&b_ih[..]),
        b_hh: bias.then_some(&b_hh[..]),
        w_hr: (p > 0).then_some(&w_hr[..]),
    };
    let mut cache = DirCache::<F>::new(dims);
    cache.keep = !infer;
    let z = |n: usize| vec![F::ZERO; n];
    let mut o = Out {
        y: z(T * B * P),
        h_n: z(B * P),
        c_n: z(if lstm { B * H } else { 0 }),
        grads: z(g * H * (I + P) + 2 * g * H + P * H),
        dx: z(T * B * I),
        dh0: z(B * P),
        dc0: z(if lstm { B * H } else { 0 }),
    };
    let input = LayerInput::Dense { x: &x, ld: I };
    let c0o = lstm.then_some(&c0[..]);
    let dcno = lstm.then_some(&dc_n[..]);
    let f = if fast { cell::forward } else { simple::forward };
    f(
        &mut cache,
        DirForward {
            weights: &w,
            input,
            lengths: Some(&lengths),
            h0: Some(&h0),
            c0: c0o,
            y: &mut o.y,
            ldy: P,
            h_n: &mut o.h_n,
            c_n: &mut o.c_n,
        },
    );
    if infer {
        return o;
    }
    let (gw_ih, rest) = o.grads.split_at_mut(g * H * I);
    let (gw_hh, rest) = rest.split_at_mut(g * H * P);
    let (gb_ih, rest) = rest.split_at_mut(g * H);
    let (gb_hh, gw_hr) = rest.split_at_mut(g * H);
    let grads = DirGrads {
        w_ih: gw_ih,
        w_hh: gw_hh,
        b_ih: bias.then_some(gb_ih),
        b_hh: bias.then_some(gb_hh),
        w_hr: (p > 0).then_some(gw_hr),
    };
    let bwd = if fast {
        cell::backward
    } else {
        simple::backward
    };
    bwd(
        &mut cache,
        DirBackward {
            weights: &w,
            grads,
            input,
            lengths: Some(&lengths),
            dy: Some((&dy, P)),
            dh_n: Some(&dh_n),
            dc_n: dcno,
            dx: Some((&mut o.dx, I)),
            dh0: &mut o.dh0,
            dc0: &mut o.dc0,
        },
    );
    o
}

fn compare<F: Float>(tol: f64) {
    let kinds = ["rnn_tanh", "rnn_relu", "lstm", "gru"].map(|n| CellKind::parse(n).unwrap());
    let lstm = CellKind::parse("lstm").unwrap();
    let cases = SHAPES
        .iter()
        .flat_map(|&s| kinds.iter().map(move |&k| (s, k)))
        .chain(PROJ_SHAPES.iter().map(|&s| (s, lstm)));
    let cases: Vec<(Shape, CellKind)> = cases.collect();
    for threads in [1, 2] {
        set_threads(threads);
        for &(shape, kind) in &cases {
            {
                let ki = kinds.iter().position(|&k| k == kind).unwrap();
                for reverse in [false, true] {
                    for bias in [true, false] {
                        let seed = 100 + ki as u64;
                        let a = run::<F>(true, false, kind, reverse, bias, seed, shape);
                        // the simple driver on one thread, so that the products it shares with
                        // the fast one (the weight gradients after the time loop) take their
                        // one-thread path
                        set_threads(1);
                        let b = run::<F>(false, false, kind, reverse, bias, seed, shape);
                        set_threads(threads);
                        let what = format!(
                            "{} {shape:?} reverse={reverse} bias={bias} threads={threads}, fast vs simple",
                            kind.name()
                        );
                        assert_close::<F>(
                            &what,
                            &[
                                ("y", &a.y, &b.y),
                                ("h_n", &a.h_n, &b.h_n),
                                ("c_n", &a.c_n, &b.c_n),
                                ("grads", &a.grads, &b.grads),
                                ("dx", &a.dx, &b.dx),
                                ("dh0", &a.dh0, &b.dh0),
                                ("dc0", &a.dc0, &b.dc0),
                            ],
                            tol,
                        );
                        // inference mode: other storage, and the input product computed in
                        // chunks of steps inside the time loop (a different kernel, so the sums
                        // may round differently): within the same tolerance of the simple driver
                        let c = run::<F>(true, true, kind, reverse, bias, seed, shape);
                        assert_close::<F>(
                            &format!("{what} (inference mode)"),
                            &[
                                ("y", &c.y, &b.y),
                                ("h_n", &c.h_n, &b.h_n),
                                ("c_n", &c.c_n, &b.c_n),
                            ],
                            tol,
                        );
                    }
                }
            }
        }
    }
    set_threads(1);
}

/// One test, so that nothing else in this binary changes the global thread count meanwhile.
#[test]
fn fast_driver_matches_simple_f32_and_f64() {
    compare::<f32>(TOL_F32);
    compare::<f64>(TOL_F64);
}
