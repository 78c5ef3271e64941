//! Closeness of two tensors for the driver tests (`tests/drivers.rs`, `tests/one_hot.rs`,
//! `tests/streaming.rs`, `tests/amx_model.rs`, which include this file by path).

use recur::ops::Float;

/// Worst |a - b| over the tensor, relative to the tensor's largest |b|; with its index. A NaN
/// counts as infinitely far.
pub fn worst<F: Float>(a: &[F], b: &[F]) -> (f64, usize) {
    let scale = b.iter().map(|v| v.to_f64().abs()).fold(1e-30, f64::max);
    let mut w = (0.0, 0);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let e = (x.to_f64() - y.to_f64()).abs() / scale;
        if !(e <= w.0) {
            w = (if e.is_nan() { f64::INFINITY } else { e }, i);
        }
    }
    w
}

/// Asserts that every `(name, got, want)` is within `tol` of `want` ([`worst`]); `what` says which
/// case failed.
pub fn assert_close<F: Float>(what: &str, pairs: &[(&str, &[F], &[F])], tol: f64) {
    for &(name, got, want) in pairs {
        let (e, at) = worst(got, want);
        assert!(
            e <= tol,
            "{what}: {name}[{at}] {} vs {} (rel err {e:e})",
            got[at],
            want[at]
        );
    }
}
