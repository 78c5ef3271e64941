//! Ranks of a data-parallel run as threads of one test, summing through shared memory (the
//! command line's ranks sum through MPI; the training loop cannot tell).

#![allow(dead_code)]

use recur::collective::Collective;
use recur::error::Result;
use std::sync::{Arc, Barrier, Mutex};

/// Ranks as threads: each sum adds every rank's buffer into a shared one (in f64, so a sum of two
/// float32 values is rounded once, as MPI's float32 sum does).
pub struct Threads {
    rank: usize,
    size: usize,
    acc: Arc<Mutex<Vec<f64>>>,
    gate: Arc<Barrier>,
}

impl Threads {
    pub fn group(size: usize) -> Vec<Threads> {
        let acc = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Barrier::new(size));
        (0..size)
            .map(|rank| Threads {
                rank,
                size,
                acc: acc.clone(),
                gate: gate.clone(),
            })
            .collect()
    }

    fn sum(&self, buf: &mut [f64]) {
        if self.rank == 0 {
            *self.acc.lock().unwrap() = vec![0.0; buf.len()];
        }
        self.gate.wait();
        {
            let mut acc = self.acc.lock().unwrap();
            for (a, &x) in acc.iter_mut().zip(buf.iter()) {
                *a += x;
            }
        }
        self.gate.wait();
        buf.copy_from_slice(&self.acc.lock().unwrap());
        self.gate.wait();
    }
}

impl Collective for Threads {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        let mut wide: Vec<f64> = buf.iter().map(|&x| x as f64).collect();
        self.sum(&mut wide);
        for (b, w) in buf.iter_mut().zip(wide) {
            *b = w as f32;
        }
        Ok(())
    }
    fn sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.sum(buf);
        Ok(())
    }
}

/// What a test run reports: its step losses, its held-out metrics and its final weights.
pub type Outcome = (Vec<f64>, Vec<f64>, Vec<f32>);

/// `go` on `ranks` thread ranks (0: once, without the seam), each rank with its collective;
/// checks that every rank ends with the same weights and returns rank 0's outcome.
pub fn on_ranks(ranks: usize, go: impl Fn(Option<Threads>) -> Outcome + Sync) -> Outcome {
    if ranks == 0 {
        return go(None);
    }
    let go = &go;
    let mut out: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = Threads::group(ranks)
            .into_iter()
            .map(|c| s.spawn(move || go(Some(c))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &out[1..] {
        assert_eq!(o.2, out[0].2, "ranks disagree on the weights");
    }
    out.swap_remove(0)
}

/// Asserts that `a` and `b` agree to `tol` relative to the larger of |a| and 1.
pub fn close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() < tol * x.abs().max(1.0),
            "{what} {k}: {x} vs {y}"
        );
    }
}

/// The largest element-wise difference of two weight vectors.
pub fn largest_gap(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

/// One rank of `size` whose sums only record what this rank brings (the other ranks are taken
/// to bring zeros): what a rank measures alone. [`Recorder::new`] also gives the record.
pub struct Recorder {
    rank: usize,
    size: usize,
    seen: Arc<Mutex<Vec<Vec<f64>>>>,
}

impl Recorder {
    pub fn new(rank: usize, size: usize) -> (Recorder, Arc<Mutex<Vec<Vec<f64>>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let r = Recorder {
            rank,
            size,
            seen: seen.clone(),
        };
        (r, seen)
    }
}

impl Collective for Recorder {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn sum_f32(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.seen.lock().unwrap().push(buf.to_vec());
        Ok(())
    }
}
