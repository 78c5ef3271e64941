//! Moving a run to another engine mid-way (its checkpoint resumed on a `Run` of another backend)
//! hands over the parameters, optimizer state and carried hidden state exactly. Moved from the
//! CPU engine to a fresh CPU engine after 5 steps, a run must give bit-for-bit the losses,
//! evaluations and final parameters of the same run never moved (the GPU engine is checked the
//! same way, against a tolerance, in crates/recur-cuda/tests/model_vs_cpu.rs).

#[path = "support/small_run.rs"]
mod small_run;

use recur::engine::Cpu;
use recur_apps::charlm::train::Trainer;
use small_run::{losses, small_resumed, small_trainer};

/// The losses of a run as f64 bit patterns (compared exactly).
fn run(t: &mut Trainer) -> (Vec<u64>, Vec<Option<u64>>) {
    let (l, v) = losses(t);
    let bits = |x: f64| x.to_bits();
    (
        l.into_iter().map(bits).collect(),
        v.into_iter().map(|x| x.map(bits)).collect(),
    )
}

#[test]
fn moving_a_run_to_a_fresh_engine_changes_nothing() {
    let mut whole = small_trainer(12);
    let (l_whole, v_whole) = run(&mut whole);

    let mut first = small_trainer(5);
    let (mut l, mut v) = run(&mut first);
    let mut moved = small_resumed(first.checkpoint().unwrap(), &Cpu, 12);
    let (l2, v2) = run(&mut moved);
    l.extend(l2);
    v.extend(v2);
    assert_eq!(l.len(), 12);
    assert_eq!(l, l_whole, "losses step by step (f64 bit patterns)");
    // the moved run evaluates at step 5 (end of its first part) and 10, 12; the whole one at 5,
    // 10, 12: the same evaluations
    assert_eq!(v, v_whole, "validation losses");
    let (a, b) = (whole.params().unwrap(), moved.params().unwrap());
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "final parameters"
    );
    let (oa, ob) = (whole.optimizer().unwrap(), moved.optimizer().unwrap());
    assert_eq!(oa.step, 12);
    assert_eq!(oa.step, ob.step);
    assert!(oa
        .m
        .iter()
        .zip(&ob.m)
        .all(|(x, y)| x.to_bits() == y.to_bits()));
    assert!(oa
        .v
        .iter()
        .zip(&ob.v)
        .all(|(x, y)| x.to_bits() == y.to_bits()));
    assert_eq!(moved.device(), "cpu");
}
