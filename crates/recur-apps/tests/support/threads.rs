//! Ranks of a data-parallel run as threads of one test, summing through shared memory (the
//! command line's ranks sum through MPI; the training loop cannot tell).

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
