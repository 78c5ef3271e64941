//! Output dropout and locked dropout on a stack: in training mode the last layer's outputs are the
//! plain outputs times a mask of 0 and 1/(1-p), one mask per sequence for all its steps when
//! locked, new at every step otherwise; evaluation leaves them alone. (The gradients are checked
//! by f64 finite differences in recur-cli's gradcheck tests; the masks' draw order in
//! src/stack.rs's tests.)

use recur::cell::{CellKind, LayerInput};
use recur::rng::Rng;
use recur::stack::{DropoutMode, Stack, StackConfig};

fn randn(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.normal() as f32).collect()
}

/// The ratio of the training outputs to the plain ones, (T, B*D*P), for `mode`.
fn ratios(mode: DropoutMode, p: f64) -> (Vec<Vec<f32>>, f32) {
    let (t, b) = (7, 3);
    let cfg = StackConfig::new(CellKind::Gru, 4, 5)
        .with_bidirectional(true)
        .with_dropout_output(p)
        .with_dropout_mode(mode);
    let stack = Stack::new(cfg.clone()).unwrap();
    let params = randn(stack.num_params(), 1);
    let x = randn(t * b * 4, 2);
    let input = LayerInput::Dense { x: &x, ld: 4 };
    let mut plain = stack.workspace::<f32>(t, b);
    stack.forward(&mut plain, &params, input, None, None, None, None);
    let mut train = stack.workspace::<f32>(t, b);
    stack.forward(
        &mut train,
        &params,
        input,
        None,
        None,
        None,
        Some(&mut Rng::new(9)),
    );
    // the final states are not dropped out
    assert_eq!(train.h_n, plain.h_n);
    let row = b * cfg.dirs() * cfg.out_size();
    let r = train
        .output()
        .chunks(row)
        .zip(plain.output().chunks(row))
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x / y).collect())
        .collect();
    (r, (1.0 / (1.0 - p)) as f32)
}

#[test]
fn output_dropout_is_a_mask_locked_over_time_or_drawn_per_step() {
    let p = 0.4;
    for mode in [DropoutMode::Locked, DropoutMode::Step] {
        let (r, keep) = ratios(mode, p);
        let mut zeros = 0;
        for row in &r {
            for &v in row {
                assert!(v == 0.0 || (v - keep).abs() < 1e-6, "{mode:?}: ratio {v}");
                zeros += usize::from(v == 0.0);
            }
        }
        assert!(zeros > 0, "{mode:?}: nothing dropped");
        let same_every_step = r.iter().all(|row| {
            row.iter()
                .zip(&r[0])
                .all(|(a, b)| (*a == 0.0) == (*b == 0.0))
        });
        assert_eq!(same_every_step, mode == DropoutMode::Locked, "{mode:?}");
    }
}
