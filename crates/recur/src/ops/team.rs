//! A team of threads that walks a loop of steps together, meeting at a spinning barrier after
//! each step: what the recurrent drivers need, since every step reads the whole state the step
//! before wrote, and a step lasts only microseconds.
//!
//! Why not one rayon join per step (what the fast driver did first): a join hands a job to a
//! worker that may have gone to sleep meanwhile, and waking it is a system call and a context
//! switch (what that cost, and what this gained: docs/performance.md, "Spinning barrier instead
//! of a join per step"). Here each thread is handed its part once per loop and keeps it for
//! every step; between steps the threads spin on two atomics (yielding the core after a while, in
//! case it is shared), which removes a system call per step from the path.
//!
//! Never a deadlock: the helpers are rayon jobs, and if the pool's other threads are busy
//! elsewhere (the caller is itself inside a parallel loop, say) a job may not start soon. So a
//! part belongs to whichever thread claims it first: the calling thread waits a little for the
//! helpers to claim theirs, then claims what is left and runs those parts itself, one after the
//! other within each step; a helper that starts later finds nothing to do.

use std::hint::spin_loop;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The most parts a team runs (more threads than this are not useful for one step).
pub const MAX_PARTS: usize = 64;

/// How long the calling thread waits for the helpers to claim their parts before running the
/// unclaimed ones itself. A sleeping rayon worker wakes in tens of microseconds; a busy one may
/// take any time.
const CLAIM_WAIT: Duration = Duration::from_micros(500);

/// Spins before a waiting thread starts yielding its core between checks.
const SPINS_BEFORE_YIELD: u32 = 1 << 10;

/// A sense-reversing barrier for a fixed number of spinning threads.
struct Barrier {
    arrived: AtomicUsize,
    generation: AtomicUsize,
}

impl Barrier {
    fn wait(&self, threads: usize) {
        let gen = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == threads {
            self.arrived.store(0, Ordering::Relaxed);
            // Release: everything written in this step is visible to whoever sees the new
            // generation
            self.generation.fetch_add(1, Ordering::Release);
        } else {
            wait_until(|| self.generation.load(Ordering::Acquire) != gen);
        }
    }
}

/// Spins until `done()`, yielding the core once the wait gets long.
#[inline]
fn wait_until(done: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !done() {
        if spins < SPINS_BEFORE_YIELD {
            spins += 1;
            spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// Runs `f(step, part)` for every step in `0..steps` and every part in `0..parts`: within a step
/// the parts run concurrently (on up to `parts` threads), and step `s + 1` starts only after every
/// part of step `s` has finished, with its writes visible. `f` must not itself wait for another
/// part of the same step.
pub fn for_steps(parts: usize, steps: usize, f: &(dyn Fn(usize, usize) + Sync)) {
    assert!(parts <= MAX_PARTS, "team: at most {MAX_PARTS} parts");
    if parts <= 1 || steps == 0 {
        for s in 0..steps {
            for k in 0..parts.max(1) {
                f(s, k);
            }
        }
        return;
    }
    if rayon::current_thread_index().is_none() {
        // run the calling side on a pool thread too: otherwise the calling thread, the helpers
        // and an idle pool thread looking for work would be one thread more than the cores
        return rayon::scope(|_| team(parts, steps, f));
    }
    team(parts, steps, f)
}

/// [`for_steps`] on a pool thread, for `parts >= 2`.
fn team(parts: usize, steps: usize, f: &(dyn Fn(usize, usize) + Sync)) {
    let claimed: [AtomicBool; MAX_PARTS] = std::array::from_fn(|_| AtomicBool::new(false));
    // 0 until the calling thread has settled who runs what; then the number of threads
    let threads = AtomicUsize::new(0);
    let barrier = Barrier {
        arrived: AtomicUsize::new(0),
        generation: AtomicUsize::new(0),
    };
    let claim = |k: usize| {
        claimed[k]
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    };
    rayon::in_place_scope(|scope| {
        for k in 1..parts {
            let (claim, threads, barrier) = (&claim, &threads, &barrier);
            scope.spawn(move |_| {
                if !claim(k) {
                    return; // the calling thread runs this part
                }
                wait_until(|| threads.load(Ordering::Acquire) != 0);
                let n = threads.load(Ordering::Acquire);
                for s in 0..steps {
                    f(s, k);
                    barrier.wait(n);
                }
            });
        }
        // the calling thread: part 0, and whatever the helpers have not claimed in time
        let start = Instant::now();
        let all_claimed = || (1..parts).all(|k| claimed[k].load(Ordering::Acquire));
        while !all_claimed() && start.elapsed() < CLAIM_WAIT {
            spin_loop();
        }
        let mut mine = [false; MAX_PARTS];
        mine[0] = true;
        let mut n = 1;
        for k in 1..parts {
            if claim(k) {
                mine[k] = true;
            } else {
                n += 1; // a helper holds part k
            }
        }
        threads.store(n, Ordering::Release);
        for s in 0..steps {
            for (k, _) in mine[..parts].iter().enumerate().filter(|(_, &m)| m) {
                f(s, k);
            }
            if n > 1 {
                barrier.wait(n);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every part of every step runs exactly once, and no part of step s+1 starts before every
    /// part of step s has finished (each part checks that the previous step is complete).
    fn check(parts: usize, steps: usize) {
        let done: Vec<AtomicUsize> = (0..steps).map(|_| AtomicUsize::new(0)).collect();
        let runs = AtomicUsize::new(0);
        for_steps(parts, steps, &|s, k| {
            assert!(k < parts);
            if s > 0 {
                assert_eq!(
                    done[s - 1].load(Ordering::Acquire),
                    parts,
                    "step {s} part {k} started before step {} finished",
                    s - 1
                );
            }
            runs.fetch_add(1, Ordering::Relaxed);
            done[s].fetch_add(1, Ordering::AcqRel);
        });
        assert_eq!(runs.load(Ordering::Relaxed), parts.max(1) * steps);
    }

    #[test]
    fn steps_are_ordered_and_complete() {
        for parts in [1, 2, 3, 4, 8] {
            for steps in [0, 1, 2, 100] {
                check(parts, steps);
            }
        }
    }

    /// With every pool thread busy inside an outer parallel loop, the helpers' jobs cannot start
    /// before the caller gives up waiting: the caller must then run all parts itself.
    #[test]
    fn no_deadlock_inside_a_busy_pool() {
        use rayon::prelude::*;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool");
        pool.install(|| {
            (0..8).into_par_iter().for_each(|_| check(2, 50));
        });
    }
}
