//! `recur gradcheck` from the command line with the stack options, for the LSTM and the GRU:
//! every tensor the options imply is checked (and no other), each below the 1e-6.

use serde_json::Value;

/// The bound on each tensor's worst relative error in f64.
const GRAD_TOL: f64 = 1e-6;

mod common;
use common::recur;

/// Runs `recur gradcheck --json ARGS`; returns (name, max_rel_err) per tensor.
fn gradcheck(args: &[&str]) -> Vec<(String, f64)> {
    let mut all = vec!["gradcheck", "--json"];
    all.extend_from_slice(args);
    let out = recur(&all);
    assert!(
        out.status.success(),
        "{args:?}: stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let tensors: Vec<(String, f64)> = j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["max_rel_err"].as_f64().unwrap(),
            )
        })
        .collect();
    for (name, err) in &tensors {
        assert!(*err < GRAD_TOL, "{args:?}: {name} rel err {err:.3e}");
    }
    let worst = j["max_rel_err"].as_f64().unwrap();
    assert!(worst < GRAD_TOL, "{args:?}: worst {worst:.3e}");
    tensors
}

fn names(t: &[(String, f64)]) -> Vec<&str> {
    t.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn lstm_with_layers_directions_projection_dropout_and_lengths() {
    let t = gradcheck(&[
        "--cell",
        "lstm",
        "--num-layers",
        "2",
        "--bidirectional",
        "--proj-size",
        "2",
        "--dropout",
        "0.3",
        "--varlen",
        "--no-bias",
        "--rnn-size",
        "4",
        "--seq-length",
        "8",
    ]);
    let n = names(&t);
    for want in [
        "rnn.weight_ih_l0",
        "rnn.weight_hh_l0",
        "rnn.weight_hr_l0",
        "rnn.weight_ih_l1_reverse",
        "rnn.weight_hh_l1_reverse",
        "rnn.weight_hr_l1_reverse",
        "decoder.weight",
        "input",
        "h0",
        "c0",
    ] {
        assert!(n.contains(&want), "{want} missing from {n:?}");
    }
    assert!(!n.iter().any(|x| x.contains("bias")), "--no-bias: {n:?}");
    // 2 layers x 2 directions x (w_ih, w_hh, w_hr) + decoder.weight + input, h0, c0
    assert_eq!(t.len(), 12 + 1 + 3, "{n:?}");
}

#[test]
fn weight_drop_gradients_for_every_cell() {
    for cell in ["lstm", "gru", "rnn_tanh"] {
        let t = gradcheck(&[
            "--cell",
            cell,
            "--num-layers",
            "2",
            "--bidirectional",
            "--weight-drop",
            "0.4",
            "--dropout",
            "0.2",
            "--varlen",
            "--rnn-size",
            "4",
            "--seq-length",
            "7",
        ]);
        let n = names(&t);
        for want in ["rnn.weight_hh_l0", "rnn.weight_hh_l1_reverse", "h0"] {
            assert!(n.contains(&want), "{cell}: {want} missing from {n:?}");
        }
    }
}

#[test]
fn locked_and_output_dropout_gradients() {
    for (cell, mode) in [("lstm", "locked"), ("gru", "locked"), ("lstm", "step")] {
        let t = gradcheck(&[
            "--cell",
            cell,
            "--num-layers",
            "2",
            "--bidirectional",
            "--dropout",
            "0.3",
            "--dropout-output",
            "0.3",
            "--dropout-input",
            "0.25",
            "--dropout-mode",
            mode,
            "--weight-drop",
            "0.2",
            "--varlen",
            "--rnn-size",
            "4",
            "--seq-length",
            "6",
        ]);
        let n = names(&t);
        // the input's gradient goes back through the input dropout's mask
        for want in ["decoder.weight", "input", "rnn.weight_ih_l0"] {
            assert!(
                n.contains(&want),
                "{cell} {mode}: {want} missing from {n:?}"
            );
        }
    }
    // with a last-step head too: the dropped outputs are what it reads
    gradcheck(&[
        "--cell",
        "gru",
        "--head",
        "last_classes",
        "--dropout-output",
        "0.5",
        "--dropout-mode",
        "locked",
        "--varlen",
    ]);
}

#[test]
fn gru_three_layers_bidirectional_b1_zero_state() {
    let t = gradcheck(&[
        "--cell",
        "gru",
        "--num-layers",
        "3",
        "--bidirectional",
        "--batch-size",
        "1",
        "--zero-state",
        "--varlen",
        "--seq-length",
        "8",
    ]);
    let n = names(&t);
    for want in [
        "rnn.bias_ih_l2_reverse",
        "rnn.bias_hh_l2_reverse",
        "rnn.weight_hh_l1",
        "decoder.bias",
        "h0",
    ] {
        assert!(n.contains(&want), "{want} missing from {n:?}");
    }
    assert!(!n.contains(&"c0"), "GRU has no c0: {n:?}");
    // 3 layers x 2 directions x 4 tensors + decoder (2) + input, h0
    assert_eq!(t.len(), 24 + 2 + 2, "{n:?}");
}

#[test]
fn rnn_relu_and_lstm_text_output_lists_every_tensor() {
    for cell in ["rnn_relu", "lstm"] {
        let out = recur(&["gradcheck", "--cell", cell, "--num-layers", "2"]);
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.starts_with(&format!("gradcheck {cell} ")), "{text}");
        assert!(text.contains("rnn.weight_hh_l1"), "{text}");
        assert!(text.contains("worst: "), "{text}");
    }
}

#[test]
fn an_impossible_tolerance_fails_with_exit_code_2() {
    // The check can fail: with a tolerance no floating-point result meets, it reports the error.
    let out = recur(&["gradcheck", "--cell", "gru", "--tol", "1e-300"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("recur: error: gradient check failed"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
