//! One-hot input (`LayerInput::OneHot`: a gather of W_ih's columns forward, a scatter-add into
//! dW_ih backward) against the same layer fed the dense one-hot vectors (a general GEMM each
//! way): outputs, final states and every gradient, for the LSTM and the GRU, on 1 and 2 threads,
//! in f32 and f64. Two shapes: more rows (T*B) than symbols, where the gather first transposes
//! W_ih and the scatter-add sums per symbol split over the threads, and fewer rows than
//! symbols, where the gather reads W_ih in place.

use recur::cell::{
    self, CellKind, DirBackward, DirCache, DirDims, DirForward, DirGrads, DirWeights, LayerInput,
};
use recur::ops::gemm::set_threads;
use recur::ops::Float;
use recur::rng::Rng;

#[path = "support/close.rs"]
mod close;
use close::assert_close;

/// f32: relative to each tensor's largest magnitude; the dense path sums zeros and the chosen
/// column in a GEMM's order, the one-hot path adds the column alone, and the gradients of dW_ih
/// are summed per symbol first.
const TOL_F32: f64 = 1e-5;
const TOL_F64: f64 = 1e-12;

/// Symbols.
const V: usize = 11;
const H: usize = 72;

struct Out<F> {
    y: Vec<F>,
    h_n: Vec<F>,
    grads: Vec<F>,
}

fn run<F: Float>(kind: CellKind, t: usize, b: usize, one_hot: bool, seed: u64) -> Out<F> {
    let g = kind.gates();
    let lstm = kind == CellKind::Lstm;
    let mut rng = Rng::new(seed);
    let mut r = |n: usize, s: f64| -> Vec<F> {
        (0..n).map(|_| F::from_f64(rng.uniform_in(-s, s))).collect()
    };
    let w_ih = r(g * H * V, 0.5);
    let w_hh = r(g * H * H, 0.1);
    let b_ih = r(g * H, 0.2);
    let b_hh = r(g * H, 0.2);
    let dy = r(t * b * H, 1.0);
    let ids: Vec<u32> = (0..t * b).map(|i| ((i * 7 + i / 3) % V) as u32).collect();
    let mut x = vec![F::ZERO; t * b * V];
    for (row, &id) in ids.iter().enumerate() {
        x[row * V + id as usize] = F::ONE;
    }
    let dims = DirDims {
        kind,
        t,
        b,
        i: V,
        h: H,
        p: H,
        reverse: false,
    };
    let w = DirWeights {
        w_ih: &w_ih,
        w_hh: &w_hh,
        b_ih: Some(&b_ih[..]),
        b_hh: Some(&b_hh[..]),
        w_hr: None,
    };
    let input = if one_hot {
        LayerInput::OneHot { ids: &ids }
    } else {
        LayerInput::Dense { x: &x, ld: V }
    };
    let mut cache = DirCache::<F>::new(dims);
    let z = |n: usize| vec![F::ZERO; n];
    let mut o = Out {
        y: z(t * b * H),
        h_n: z(b * H),
        grads: z(g * H * (V + H + 2)),
    };
    let mut c_n = z(if lstm { b * H } else { 0 });
    cell::forward(
        &mut cache,
        DirForward {
            weights: &w,
            input,
            lengths: None,
            h0: None,
            c0: None,
            y: &mut o.y,
            ldy: H,
            h_n: &mut o.h_n,
            c_n: &mut c_n,
        },
    );
    let (gw_ih, rest) = o.grads.split_at_mut(g * H * V);
    let (gw_hh, rest) = rest.split_at_mut(g * H * H);
    let (gb_ih, gb_hh) = rest.split_at_mut(g * H);
    let grads = DirGrads {
        w_ih: gw_ih,
        w_hh: gw_hh,
        b_ih: Some(gb_ih),
        b_hh: Some(gb_hh),
        w_hr: None,
    };
    let mut dh0 = z(b * H);
    let mut dc0 = z(if lstm { b * H } else { 0 });
    cell::backward(
        &mut cache,
        DirBackward {
            weights: &w,
            grads,
            input,
            lengths: None,
            dy: Some((&dy, H)),
            dh_n: None,
            dc_n: None,
            dx: None,
            dh0: &mut dh0,
            dc0: &mut dc0,
        },
    );
    o
}

fn compare<F: Float>(tol: f64) {
    for threads in [1, 2] {
        set_threads(threads);
        for kind in [CellKind::Lstm, CellKind::Gru] {
            // (T, B): 240 rows > 11 symbols (transposed gather, scatter split over threads:
            // rows * G * H >= 2^16), and 6 rows < 11 symbols (gather in place)
            for (t, b) in [(12, 20), (2, 3)] {
                let oh = run::<F>(kind, t, b, true, 7);
                let dense = run::<F>(kind, t, b, false, 7);
                let what = format!(
                    "{} T={t} B={b} threads={threads}, one-hot vs dense",
                    kind.name()
                );
                assert_close::<F>(
                    &what,
                    &[
                        ("y", &oh.y, &dense.y),
                        ("h_n", &oh.h_n, &dense.h_n),
                        ("grads", &oh.grads, &dense.grads),
                    ],
                    tol,
                );
            }
        }
    }
    set_threads(1);
}

/// One test, so that nothing else in this binary changes the global thread count meanwhile.
#[test]
fn one_hot_input_matches_dense_one_hot_vectors() {
    compare::<f32>(TOL_F32);
    compare::<f64>(TOL_F64);
}
