//! Finite-difference gradient checks in f64 (central differences): every parameter tensor, the
//! inputs and the initial states, for every cell and stack option.

use recur::cell::CellKind;
use recur::model::{Head, InputKind, ModelConfig};
use recur::stack::StackConfig;
use recur_study::gradcheck::{gradcheck, GradcheckSpec};

/// The bound on the worst relative error per tensor (formula in recur_study::gradcheck). With
/// eps = 1e-5 in f64 the truncation error is ~eps^2 and the rounding error ~1e-16/eps, both near
/// 1e-10, so 1e-6 leaves a wide margin while still catching any wrong term.
const GRAD_TOL: f64 = 1e-6;

#[derive(Clone, Copy)]
struct Case {
    cell: &'static str,
    layers: usize,
    bidir: bool,
    bias: bool,
    proj: usize,
    dropout: f64,
    varlen: bool,
    b: usize,
    init_state: bool,
    head: Head,
}

const BASE: Case = Case {
    cell: "rnn_tanh",
    layers: 1,
    bidir: false,
    bias: true,
    proj: 0,
    dropout: 0.0,
    varlen: false,
    b: 3,
    init_state: true,
    head: Head::StepClasses,
};

fn run(c: Case) {
    let kind = CellKind::parse(c.cell).unwrap();
    let rnn = StackConfig::new(kind, 3, 5)
        .with_layers(c.layers)
        .with_bidirectional(c.bidir)
        .with_bias(c.bias)
        .with_proj_size(c.proj)
        .with_dropout(c.dropout);
    let cfg = ModelConfig {
        input: InputKind::Dense,
        input_size: 3,
        embed_dim: 0,
        rnn,
        output_size: 4,
        decoder_bias: c.bias,
        head: c.head,
        tie_weights: false,
    };
    let spec = GradcheckSpec {
        cfg,
        t: 9,
        b: c.b,
        varlen: c.varlen,
        init_state: c.init_state,
        seed: 11,
        eps: 1e-5,
    };
    let res = gradcheck(&spec).unwrap();
    // every parameter tensor plus input and h0 (and c0) were checked
    let expected = recur::model::Model::new(spec.cfg.clone())
        .unwrap()
        .layout()
        .entries
        .len()
        + 2
        + usize::from(kind == CellKind::Lstm);
    assert_eq!(res.len(), expected);
    for r in &res {
        assert!(
            r.max_rel_err < GRAD_TOL,
            "{} head {} (layers {}, bidir {}, bias {}, proj {}, dropout {}, varlen {}, B {}): tensor {} rel err {:.3e} (abs {:.3e}) at element {}",
            c.cell, c.head.name(), c.layers, c.bidir, c.bias, c.proj, c.dropout, c.varlen, c.b, r.name, r.max_rel_err, r.max_abs_err, r.worst_index
        );
    }
}

#[test]
fn rnn_tanh_and_relu_with_and_without_bias_b1_and_b3() {
    for cell in ["rnn_tanh", "rnn_relu"] {
        for bias in [true, false] {
            for b in [1, 3] {
                run(Case {
                    cell,
                    bias,
                    b,
                    ..BASE
                });
                run(Case {
                    cell,
                    bias,
                    b,
                    init_state: false,
                    ..BASE
                });
            }
        }
    }
}

#[test]
fn every_cell_with_stack_options() {
    for cell in ["rnn_tanh", "rnn_relu", "lstm", "gru"] {
        run(Case { cell, ..BASE });
        run(Case {
            cell,
            layers: 2,
            bidir: true,
            ..BASE
        });
        run(Case {
            cell,
            layers: 3,
            varlen: true,
            b: 4,
            ..BASE
        });
        run(Case {
            cell,
            layers: 2,
            bidir: true,
            varlen: true,
            bias: false,
            ..BASE
        });
        run(Case {
            cell,
            layers: 2,
            bidir: true,
            dropout: 0.4,
            varlen: true,
            ..BASE
        });
        run(Case {
            cell,
            b: 1,
            bidir: true,
            ..BASE
        });
    }
}

#[test]
fn lstm_projection() {
    run(Case {
        cell: "lstm",
        proj: 2,
        ..BASE
    });
    run(Case {
        cell: "lstm",
        proj: 3,
        layers: 2,
        bidir: true,
        varlen: true,
        ..BASE
    });
    run(Case {
        cell: "lstm",
        proj: 2,
        layers: 2,
        dropout: 0.3,
        bias: false,
        ..BASE
    });
}

/// Every head (per-step and last-step, classes and regression) on every cell, alone and with the
/// options that change which output is the last one: two directions, per-sequence lengths, stacked
/// layers, an LSTM projection.
#[test]
fn every_head() {
    for head in Head::ALL {
        for cell in ["rnn_tanh", "lstm", "gru"] {
            run(Case { cell, head, ..BASE });
            run(Case {
                cell,
                head,
                layers: 2,
                bidir: true,
                varlen: true,
                b: 4,
                ..BASE
            });
        }
        run(Case {
            cell: "lstm",
            head,
            proj: 2,
            bidir: true,
            varlen: true,
            ..BASE
        });
    }
}

#[test]
fn lengths_are_checked() {
    use recur::stack::check_lengths;
    assert!(check_lengths(None, 5, 3).is_ok());
    assert!(check_lengths(Some(&[5, 1, 3]), 5, 3).is_ok());
    let e = check_lengths(Some(&[5, 0, 3]), 5, 3).unwrap_err();
    assert!(e.to_string().contains("length 0 of sequence 1"), "{e}");
    let e = check_lengths(Some(&[5, 6, 3]), 5, 3).unwrap_err();
    assert!(
        e.to_string()
            .contains("length 6 of sequence 1 is outside 1..=5"),
        "{e}"
    );
    let e = check_lengths(Some(&[5, 5]), 5, 3).unwrap_err();
    assert!(
        e.to_string().contains("2 lengths given for a batch of 3"),
        "{e}"
    );
}

/// Token input through an embedding, untied and with the decoder's weight tied to it (the one
/// matrix gets both gradients): an LSTM whose projection gives the embedding's width, a
/// two-directional GRU (D*H = E), an Elman RNN with per-sequence lengths and locked dropout.
#[test]
fn embedding_and_tied_weights() {
    let (v, e) = (5, 6);
    let cases = [
        StackConfig::new(CellKind::Lstm, e, 9).with_proj_size(e),
        StackConfig::new(CellKind::Gru, e, 3)
            .with_layers(2)
            .with_bidirectional(true),
        StackConfig::new(CellKind::parse("rnn_tanh").unwrap(), e, e)
            .with_layers(2)
            .with_dropout(0.3)
            .with_dropout_mode(recur::stack::DropoutMode::Locked),
    ];
    for (i, rnn) in cases.into_iter().enumerate() {
        for tie in [false, true] {
            let mut cfg = ModelConfig::char_model(v, e, rnn.clone());
            cfg.tie_weights = tie;
            let spec = GradcheckSpec {
                cfg: cfg.clone(),
                t: 8,
                b: 3,
                varlen: i == 2,
                init_state: true,
                seed: 5,
                eps: 1e-5,
            };
            let res = gradcheck(&spec).unwrap();
            let model = recur::model::Model::new(cfg).unwrap();
            let names: Vec<&str> = res.iter().map(|r| r.name.as_str()).collect();
            assert!(names.contains(&"embedding.weight") && names.contains(&"decoder.weight"));
            assert!(
                !names.contains(&"input"),
                "token input has no input gradient"
            );
            assert_eq!(
                model.layout().get("decoder.weight").unwrap().offset
                    == model.layout().get("embedding.weight").unwrap().offset,
                tie,
                "case {i}: tied means one matrix"
            );
            for r in &res {
                assert!(
                    r.max_rel_err < GRAD_TOL,
                    "case {i} tied {tie}: tensor {} rel err {:.3e} at element {}",
                    r.name,
                    r.max_rel_err,
                    r.worst_index
                );
            }
        }
    }
}
