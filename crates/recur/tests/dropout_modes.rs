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

/// The mask the stack draws for input dropout: element by element from the generator (0 with
/// probability p, else 1/(1-p)), over (T, B, I), or over one (B, I) row repeated when locked
/// (the documented draw, re-derived here).
fn input_mask(t: usize, row: usize, p: f64, mode: DropoutMode, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let keep = (1.0 / (1.0 - p)) as f32;
    let n = if mode == DropoutMode::Locked {
        row
    } else {
        t * row
    };
    let drawn: Vec<f32> = (0..n)
        .map(|_| if rng.uniform() < p { 0.0 } else { keep })
        .collect();
    (0..t * row).map(|k| drawn[k % n]).collect()
}

/// Input dropout on a dense input: the training forward is the plain forward on the input
/// times the mask, and the input's gradient the plain one (on that input) times the mask.
#[test]
fn input_dropout_on_a_dense_input_is_the_plain_stack_on_the_masked_input() {
    let (t, b, i, p) = (6, 3, 4, 0.3);
    for mode in [DropoutMode::Step, DropoutMode::Locked] {
        let cfg = StackConfig::new(CellKind::Lstm, i, 5)
            .with_layers(2)
            .with_dropout_input(p)
            .with_dropout_mode(mode);
        let stack = Stack::new(cfg.clone()).unwrap();
        let plain_stack = Stack::new(cfg.clone().with_dropout_input(0.0)).unwrap();
        let params = randn(stack.num_params(), 3);
        let x = randn(t * b * i, 4);
        let mask = input_mask(t, b * i, p, mode, 8);
        let xm: Vec<f32> = x.iter().zip(&mask).map(|(a, m)| a * m).collect();
        let input = LayerInput::Dense { x: &x, ld: i };
        let masked = LayerInput::Dense { x: &xm, ld: i };

        let mut train = stack.workspace::<f32>(t, b);
        stack.forward(
            &mut train,
            &params,
            input,
            None,
            None,
            None,
            Some(&mut Rng::new(8)),
        );
        let mut plain = plain_stack.workspace::<f32>(t, b);
        plain_stack.forward(&mut plain, &params, masked, None, None, None, None);
        assert_eq!(train.output(), plain.output(), "{mode:?}");

        let dy = randn(t * b * 5, 5);
        let (mut g1, mut g2) = (vec![0.0; params.len()], vec![0.0; params.len()]);
        let (mut dx1, mut dx2) = (vec![0.5f32; x.len()], vec![0.0f32; x.len()]);
        stack.backward(
            &mut train,
            &params,
            &mut g1,
            input,
            None,
            Some(&dy),
            None,
            None,
            Some(&mut dx1),
        );
        plain_stack.backward(
            &mut plain,
            &params,
            &mut g2,
            masked,
            None,
            Some(&dy),
            None,
            None,
            Some(&mut dx2),
        );
        assert_eq!(g1, g2, "{mode:?}: parameter gradients");
        // accumulated into dx (which held 0.5), through the mask
        for ((a, g), m) in dx1.iter().zip(&dx2).zip(&mask) {
            assert_eq!(*a, 0.5 + g * m, "{mode:?}");
        }
        // evaluation (no generator): the raw input
        let mut eval = stack.workspace::<f32>(t, b);
        stack.forward(&mut eval, &params, input, None, None, None, None);
        let mut raw = plain_stack.workspace::<f32>(t, b);
        plain_stack.forward(&mut raw, &params, input, None, None, None, None);
        assert_eq!(eval.output(), raw.output());
    }
}

/// Input dropout on one-hot tokens drops whole tokens: the forward is the dense one-hot input
/// times the mask; locked, a symbol is dropped at every step of a sequence or at none.
#[test]
fn input_dropout_on_tokens_drops_whole_symbols() {
    let (t, b, v, p) = (12, 4, 5, 0.4);
    let ids: Vec<u32> = (0..t * b).map(|k| ((k * 7 + k / 3) % v) as u32).collect();
    for mode in [DropoutMode::Step, DropoutMode::Locked] {
        let cfg = StackConfig::new(CellKind::Gru, v, 6)
            .with_dropout_input(p)
            .with_dropout_mode(mode);
        let stack = Stack::new(cfg.clone()).unwrap();
        let plain_stack = Stack::new(cfg.clone().with_dropout_input(0.0)).unwrap();
        let params = randn(stack.num_params(), 6);
        let mask = input_mask(t, b * v, p, mode, 2);
        let dense: Vec<f32> = (0..t * b * v)
            .map(|k| {
                if ids[k / v] as usize == k % v {
                    mask[k]
                } else {
                    0.0
                }
            })
            .collect();
        let mut train = stack.workspace::<f32>(t, b);
        let tokens = LayerInput::OneHot { ids: &ids };
        stack.forward(
            &mut train,
            &params,
            tokens,
            None,
            None,
            None,
            Some(&mut Rng::new(2)),
        );
        let mut plain = plain_stack.workspace::<f32>(t, b);
        let masked = LayerInput::Dense { x: &dense, ld: v };
        plain_stack.forward(&mut plain, &params, masked, None, None, None, None);
        assert_eq!(train.output(), plain.output(), "{mode:?}");
        let dy = randn(t * b * 6, 7);
        let (mut g1, mut g2) = (vec![0.0; params.len()], vec![0.0; params.len()]);
        stack.backward(
            &mut train,
            &params,
            &mut g1,
            tokens,
            None,
            Some(&dy),
            None,
            None,
            None,
        );
        plain_stack.backward(
            &mut plain,
            &params,
            &mut g2,
            masked,
            None,
            Some(&dy),
            None,
            None,
            None,
        );
        assert_eq!(g1, g2, "{mode:?}: parameter gradients");
        if mode == DropoutMode::Locked {
            // per sequence: each symbol kept at all its steps or dropped at all of them
            for s in 0..b {
                for sym in 0..v as u32 {
                    let kept: Vec<bool> = (0..t)
                        .filter(|&k| ids[k * b + s] == sym)
                        .map(|k| dense[(k * b + s) * v + sym as usize] != 0.0)
                        .collect();
                    assert!(kept.windows(2).all(|w| w[0] == w[1]), "seq {s} sym {sym}");
                }
            }
        }
        let dropped = (0..t * b)
            .filter(|&k| dense[k * v + ids[k] as usize] == 0.0)
            .count();
        assert!(
            dropped > 0 && dropped < t * b,
            "{mode:?}: {dropped} tokens dropped"
        );
    }
}
