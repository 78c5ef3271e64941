//! A layer whose input weights are large enough (over 8 MiB) for the input product to go through a
//! transposed copy of W_ih (`input_projection` in `cell/products.rs`), against an LSTM written out
//! here from its definition in f64: both drivers share that product, so they cannot check it
//! against each other. Forward outputs and final states, 1 and 2 threads.

use recur::cell::{self, CellKind, DirCache, DirDims, DirForward, DirWeights, LayerInput};
use recur::ops::gemm::set_threads;
use recur::rng::Rng;

/// Relative to the largest |output|: f32 sums of 1,024 + 640 products against f64.
const TOL: f64 = 1e-5;

const I: usize = 1024;
const H: usize = 640;
const T: usize = 2;
const B: usize = 3;
// W_ih (4H x I floats) must exceed 8 MiB for the transposed path
const _: () = assert!(4 * H * I * 4 > 8 << 20);

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn input_product_through_transposed_weights() {
    let mut rng = Rng::new(17);
    let mut r =
        |n: usize, s: f64| -> Vec<f32> { (0..n).map(|_| rng.uniform_in(-s, s) as f32).collect() };
    let w_ih = r(4 * H * I, 0.05);
    let w_hh = r(4 * H * H, 0.05);
    let b_ih = r(4 * H, 0.2);
    let b_hh = r(4 * H, 0.2);
    let x = r(T * B * I, 1.0);

    // the reference, in f64
    let mut h = vec![0.0f64; B * H];
    let mut c = vec![0.0f64; B * H];
    let mut want = vec![0.0f64; T * B * H];
    for t in 0..T {
        let mut hn = vec![0.0f64; B * H];
        for b in 0..B {
            let xr = &x[(t * B + b) * I..(t * B + b + 1) * I];
            let pre = |row: usize| -> f64 {
                let wi = &w_ih[row * I..(row + 1) * I];
                let wh = &w_hh[row * H..(row + 1) * H];
                let s1: f64 = wi.iter().zip(xr).map(|(&w, &v)| w as f64 * v as f64).sum();
                let s2: f64 = wh
                    .iter()
                    .zip(&h[b * H..(b + 1) * H])
                    .map(|(&w, &v)| w as f64 * v)
                    .sum();
                s1 + s2 + b_ih[row] as f64 + b_hh[row] as f64
            };
            for u in 0..H {
                let (i, f) = (sigmoid(pre(u)), sigmoid(pre(H + u)));
                let (g, o) = (pre(2 * H + u).tanh(), sigmoid(pre(3 * H + u)));
                let cn = f * c[b * H + u] + i * g;
                c[b * H + u] = cn;
                hn[b * H + u] = o * cn.tanh();
                want[(t * B + b) * H + u] = hn[b * H + u];
            }
        }
        h = hn;
    }

    let dims = DirDims {
        kind: CellKind::Lstm,
        t: T,
        b: B,
        i: I,
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
    for threads in [1, 2] {
        set_threads(threads);
        let mut cache = DirCache::<f32>::new(dims);
        let mut y = vec![0.0f32; T * B * H];
        let (mut h_n, mut c_n) = (vec![0.0f32; B * H], vec![0.0f32; B * H]);
        let input = LayerInput::Dense { x: &x, ld: I };
        cell::forward(
            &mut cache,
            DirForward {
                weights: &w,
                input,
                lengths: None,
                h0: None,
                c0: None,
                y: &mut y,
                ldy: H,
                h_n: &mut h_n,
                c_n: &mut c_n,
            },
        );
        let scale = want.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
        for (k, (&got, &exp)) in y.iter().zip(&want).enumerate() {
            let e = (got as f64 - exp).abs() / scale;
            assert!(
                e <= TOL,
                "{threads} thread(s): y[{k}] = {got}, reference {exp} (rel err {e:e})"
            );
        }
        for (k, (&got, &exp)) in h_n.iter().zip(&want[(T - 1) * B * H..]).enumerate() {
            assert!(
                (got as f64 - exp).abs() / scale <= TOL,
                "{threads} thread(s): h_n[{k}]"
            );
        }
    }
    set_threads(1);
}
