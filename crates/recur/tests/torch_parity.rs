//! Parity with PyTorch: recur's stacks, character models, optimizers and gradient clipping
//! against the fixtures written by `tests/fixtures/gen_torch.py` (see its header for how to
//! regenerate them and what each file holds).
//!
//! Error per tensor, as in `recur_study::gradcheck`: `max_i |a_i - t_i| / max(max_i |a_i|, max_i |t_i|)`
//! (`a` recur, `t` torch): the worst element's error relative to the tensor's largest magnitude,
//! so that an element that is zero up to rounding does not read as a large relative error.
//!
//! This file checks only against torch's numbers; finite-difference checks are in gradcheck.rs.

#[path = "support/fixture.rs"]
mod fixture;

use fixture::{check, compare, fixture_path, stack_cases, Cmp, Fixture, StackCase};
use recur::cell::{CellKind, LayerInput};
use recur::checkpoint;
use recur::model::{Head, Input, InputKind, Model, ModelConfig};
use recur::ops::Float;
use recur::optim::{clip_grad_norm, OptimKind, Optimizer};
use recur::stack::{Stack, StackConfig};
use safetensors::tensor::Dtype;
use std::path::PathBuf;

/// f32 bound (the target). f32 rounding is 6e-8 per operation; the fixtures' sums run over
/// at most ~20 terms and the recurrences over at most 7 steps with weights in U(-0.7, 0.7), which
/// amplify rounding by one to two orders of magnitude, so correct code lands near 1e-7..1e-6 while
/// a wrong term (a missing bias, a swapped gate, a wrong step) gives errors of order 1e-2 or more.
const F32_REL_TOL: f64 = 1e-5;
/// f64 bound: the same reasoning with f64 rounding (1.1e-16) gives ~1e-14; 1e-12 leaves a margin.
const F64_REL_TOL: f64 = 1e-12;
/// Optimizer trajectories in f32: ten updates, each a few rounded operations per element (Adam's
/// sqrt and division), compared relative to the trajectory's magnitude.
const OPTIM_REL_TOL: f64 = 1e-6;

/// Runs one stack case in precision F; returns every comparison.
fn run_stack_case<F: Float>(fx: &Fixture, c: &StackCase) -> Vec<Cmp> {
    let kind = CellKind::parse(&c.cell).unwrap();
    let cfg = StackConfig::new(kind, c.input_size, c.hidden_size)
        .with_layers(c.num_layers)
        .with_bidirectional(c.bidirectional)
        .with_bias(c.bias)
        .with_proj_size(c.proj_size);
    let stack = Stack::new(cfg).unwrap();
    let key = |k: &str| format!("{}/{k}", c.name);
    let lstm = kind == CellKind::Lstm;

    // Parameters in recur's layout, which must be torch's names and shapes.
    let mut params = vec![F::ZERO; stack.num_params()];
    for e in &stack.layout().entries {
        let (v, shape) = fx.floats(&key(&format!("param/{}", e.name)));
        assert_eq!(shape, e.shape, "{}: shape of {}", c.name, e.name);
        for (p, x) in params[e.range()].iter_mut().zip(v) {
            *p = F::from_f64(x);
        }
    }
    let n_torch_params = fx
        .st()
        .names()
        .iter()
        .filter(|n| n.starts_with(&key("param/")))
        .count();
    assert_eq!(
        n_torch_params,
        stack.layout().entries.len(),
        "{}: tensor count",
        c.name
    );

    let x: Vec<F> = fx.vec(&key("x"));
    let lengths: Vec<usize> = fx
        .ints(&key("lengths"))
        .iter()
        .map(|&l| l as usize)
        .collect();
    let lens = c.varlen.then_some(&lengths[..]);
    let h0: Vec<F> = fx.vec(&key("h0"));
    let c0: Vec<F> = if lstm { fx.vec(&key("c0")) } else { Vec::new() };
    let (h0o, c0o) = if c.zero_state {
        (None, None)
    } else {
        (Some(&h0[..]), lstm.then_some(&c0[..]))
    };
    let input = LayerInput::Dense {
        x: &x,
        ld: c.input_size,
    };

    let mut ws = stack.workspace::<F>(c.t, c.b);
    stack.forward(&mut ws, &params, input, h0o, c0o, lens, None);
    let mut out = vec![
        compare("y", ws.output(), &fx.floats(&key("y")).0),
        compare("h_n", &ws.h_n, &fx.floats(&key("h_n")).0),
    ];
    if lstm {
        out.push(compare("c_n", &ws.c_n, &fx.floats(&key("c_n")).0));
    }

    let r: Vec<F> = fx.vec(&key("R"));
    let s: Vec<F> = fx.vec(&key("S"));
    let sc: Vec<F> = if lstm { fx.vec(&key("Sc")) } else { Vec::new() };
    let mut grads = vec![F::ZERO; params.len()];
    let mut dx = vec![F::ZERO; x.len()];
    stack.backward(
        &mut ws,
        &params,
        &mut grads,
        input,
        lens,
        Some(&r),
        Some(&s),
        lstm.then_some(&sc[..]),
        Some(&mut dx),
    );
    for e in &stack.layout().entries {
        let want = fx.floats(&key(&format!("grad/{}", e.name))).0;
        out.push(compare(
            &format!("grad {}", e.name),
            &grads[e.range()],
            &want,
        ));
    }
    out.push(compare("grad x", &dx, &fx.floats(&key("grad/x")).0));
    out.push(compare("grad h0", &ws.dh0, &fx.floats(&key("grad/h0")).0));
    if lstm {
        out.push(compare("grad c0", &ws.dc0, &fx.floats(&key("grad/c0")).0));
    }
    out
}

fn run_stack_file<F: Float>(file: &str, tol: f64) {
    let fx = Fixture::open(file);
    let cases = stack_cases(&fx);
    assert!(cases.len() >= 20, "{file}: only {} cases", cases.len());
    let mut failures = Vec::new();
    // worst error per cell, outputs and gradients apart, for the summary
    let mut summary: Vec<(String, f64, f64)> = Vec::new();
    for c in &cases {
        let cmps = run_stack_case::<F>(&fx, c);
        let worst = |grad: bool| {
            cmps.iter()
                .filter(|m| m.what.starts_with("grad") == grad)
                .map(|m| m.rel)
                .fold(0.0, f64::max)
        };
        match summary.iter_mut().find(|s| s.0 == c.cell) {
            Some(s) => {
                s.1 = s.1.max(worst(false));
                s.2 = s.2.max(worst(true));
            }
            None => summary.push((c.cell.clone(), worst(false), worst(true))),
        }
        if std::panic::catch_unwind(|| check(&cmps, tol, &format!("{file} case {}", c.name)))
            .is_err()
        {
            failures.push(c.name.clone());
        }
    }
    println!(
        "{file}: {} cases, worst relative error per cell:",
        cases.len()
    );
    for (cell, fwd, grad) in &summary {
        println!("  {cell:9} outputs/states {fwd:.2e}  gradients {grad:.2e}");
    }
    assert!(failures.is_empty(), "{file}: failing cases {failures:?}");
}

#[test]
fn stacks_match_torch_f32() {
    run_stack_file::<f32>("stack_f32.safetensors", F32_REL_TOL);
}

#[test]
fn stacks_match_torch_f64() {
    run_stack_file::<f64>("stack_f64.safetensors", F64_REL_TOL);
}

/// Every option the issue lists appears in the fixtures (so that the tests above cover it).
#[test]
fn fixtures_cover_every_option() {
    let fx = Fixture::open("stack_f32.safetensors");
    let cases = stack_cases(&fx);
    for cell in ["rnn_tanh", "rnn_relu", "lstm", "gru"] {
        let cs: Vec<&StackCase> = cases.iter().filter(|c| c.cell == cell).collect();
        assert!(cs.iter().any(|c| c.bidirectional) && cs.iter().any(|c| !c.bidirectional));
        assert!(
            cs.iter().any(|c| c.bias) && cs.iter().any(|c| !c.bias),
            "{cell}"
        );
        assert!(
            cs.iter().any(|c| c.varlen) && cs.iter().any(|c| !c.varlen),
            "{cell}"
        );
        assert!(
            cs.iter().any(|c| c.b == 1) && cs.iter().any(|c| c.b > 1),
            "{cell}"
        );
        assert!(cs.iter().any(|c| c.num_layers > 1), "{cell}");
    }
    for layers in 1..=3 {
        assert!(cases.iter().any(|c| c.num_layers == layers));
    }
    assert!(cases
        .iter()
        .any(|c| c.proj_size > 0 && c.bidirectional && c.num_layers > 1));
    assert!(cases.iter().any(|c| c.proj_size > 0 && c.varlen));
    assert!(cases.iter().any(|c| c.zero_state));
}

/// The third ties the decoder's weight to the embedding's: torch's gradients of that matrix
/// (under both names) are the sum of its two uses, as recur's.
const CHAR_MODELS: [&str; 3] = ["char_lstm_emb", "char_gru_onehot", "char_lstm_tied"];

fn tokens(v: &[i64]) -> Vec<u32> {
    v.iter().map(|&x| x as u32).collect()
}

/// Character models (embedding or one-hot -> LSTM/GRU -> linear): logits, mean cross-entropy
/// and every parameter's gradient against torch.
#[test]
fn char_models_match_torch() {
    let fx = Fixture::open("char_models.safetensors");
    for name in CHAR_MODELS {
        let cfg: ModelConfig = serde_json::from_str(&fx.meta[&format!("config.{name}")]).unwrap();
        let model = Model::new(cfg).unwrap();
        let key = |k: &str| format!("{name}/{k}");
        let mut params = vec![0.0f32; model.num_params()];
        for e in &model.layout().entries {
            let (v, shape) = fx.floats(&key(&format!("param/{}", e.name)));
            assert_eq!(shape, e.shape, "{name}: {}", e.name);
            for (p, x) in params[e.range()].iter_mut().zip(v) {
                *p = x as f32;
            }
        }
        let ids = tokens(&fx.ints(&key("tokens")));
        let targets = tokens(&fx.ints(&key("targets")));
        let (_, shape) = fx.floats(&key("logits"));
        let (t, b) = (shape[0], shape[1]);
        let mut ws = model.workspace::<f32>(t, b);
        model.forward(
            &mut ws,
            &params,
            Input::Tokens(&ids),
            None,
            None,
            None,
            None,
        );
        let count = t * b;
        let (sum, n) = model.loss(&mut ws, &targets, 1.0 / count as f32);
        assert_eq!(n, count);
        let mut cmps = vec![
            compare("logits", &ws.logits, &fx.floats(&key("logits")).0),
            compare("loss", &[sum / n as f64], &fx.floats(&key("loss")).0),
        ];
        let mut grads = vec![0.0f32; params.len()];
        model.backward(
            &mut ws,
            &params,
            &mut grads,
            Input::Tokens(&ids),
            None,
            None,
            None,
            None,
        );
        for e in &model.layout().entries {
            let want = fx.floats(&key(&format!("grad/{}", e.name))).0;
            cmps.push(compare(
                &format!("grad {}", e.name),
                &grads[e.range()],
                &want,
            ));
        }
        let worst = cmps.iter().map(|c| c.rel).fold(0.0, f64::max);
        println!("{name}: worst relative error {worst:.2e} over logits, loss and gradients");
        check(&cmps, F32_REL_TOL, name);
    }
}

/// torch -> recur: checkpoints written by the docs' Python snippet (from a torch state_dict)
/// load in recur with the same parameters, bit for bit, and give torch's logits; recur -> file
/// -> recur is bit-exact for them too.
#[test]
fn torch_written_checkpoints_load() {
    let fx = Fixture::open("char_models.safetensors");
    let vocab: Vec<char> = serde_json::from_str(&fx.meta["vocab"]).unwrap();
    for name in CHAR_MODELS {
        let ck = checkpoint::load(&fixture_path(&format!("{name}.ckpt.safetensors"))).unwrap();
        let cfg: ModelConfig = serde_json::from_str(&fx.meta[&format!("config.{name}")]).unwrap();
        assert_eq!(ck.model, cfg, "{name}: config");
        assert_eq!(ck.vocab.as_deref(), Some(&vocab[..]), "{name}: vocab");
        assert!(ck.optimizer.is_none() && ck.train_state.is_none());
        let model = Model::new(ck.model.clone()).unwrap();
        for e in &model.layout().entries {
            let want = fx.floats(&format!("{name}/param/{}", e.name)).0;
            let same = ck.params[e.range()]
                .iter()
                .zip(&want)
                .all(|(&a, &b)| a.to_bits() == (b as f32).to_bits());
            assert!(same, "{name}: {} differs from the torch state_dict", e.name);
        }
        let ids = tokens(&fx.ints(&format!("{name}/tokens")));
        let (want, shape) = fx.floats(&format!("{name}/logits"));
        let mut ws = model.workspace::<f32>(shape[0], shape[1]);
        model.forward(
            &mut ws,
            &ck.params,
            Input::Tokens(&ids),
            None,
            None,
            None,
            None,
        );
        check(
            &[compare("logits", &ws.logits, &want)],
            F32_REL_TOL,
            &format!("{name} checkpoint"),
        );
        // recur -> file -> recur
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.resaved"));
        checkpoint::save(&tmp, &ck).unwrap();
        let back = checkpoint::load(&tmp).unwrap();
        assert_eq!(back.model, ck.model);
        assert_eq!(back.vocab, ck.vocab);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&back.params),
            bits(&ck.params),
            "{name}: resaved params"
        );
    }
}

/// The `eval_nats.<model>` values stored for `recur eval` (mean next-character loss over
/// `eval_text`, one sequence from a zero state) agree with the library's forward and loss.
#[test]
fn eval_nats_match_library() {
    let fx = Fixture::open("char_models.safetensors");
    let text = &fx.meta["eval_text"];
    for name in CHAR_MODELS {
        let ck = checkpoint::load(&fixture_path(&format!("{name}.ckpt.safetensors"))).unwrap();
        let vocab = ck.vocab.clone().unwrap();
        let ids: Vec<u32> = text
            .chars()
            .map(|c| vocab.iter().position(|&v| v == c).unwrap() as u32)
            .collect();
        let t = ids.len() - 1;
        let model = Model::new(ck.model.clone()).unwrap();
        let mut ws = model.workspace::<f32>(t, 1);
        model.forward(
            &mut ws,
            &ck.params,
            Input::Tokens(&ids[..t]),
            None,
            None,
            None,
            None,
        );
        let (sum, n) = model.loss(&mut ws, &ids[1..], 1.0);
        let ours = sum / n as f64;
        let want: f64 = fx.meta[&format!("eval_nats.{name}")].parse().unwrap();
        let rel = (ours - want).abs() / want.abs();
        println!("{name}: eval nats recur {ours:.9} torch {want:.9} (rel {rel:.1e})");
        assert!(rel <= F32_REL_TOL, "{name}: {ours} vs {want}");
    }
}

fn optim_kind(name: &str, h: &serde_json::Value) -> OptimKind {
    let f = |k: &str| h[k].as_f64().unwrap_or_else(|| panic!("{name}: {k}"));
    assert_eq!(f("weight_decay"), 0.0, "{name}");
    match name {
        "sgd" | "sgd_momentum" | "sgd_nesterov" => {
            assert_eq!(f("dampening"), 0.0);
            OptimKind::Sgd {
                momentum: f("momentum"),
                nesterov: h["nesterov"].as_bool().unwrap(),
            }
        }
        "adagrad" => {
            assert_eq!(f("lr_decay"), 0.0);
            assert_eq!(f("initial_accumulator_value"), 0.0);
            OptimKind::Adagrad { eps: f("eps") }
        }
        "rmsprop" => {
            assert_eq!(f("momentum"), 0.0);
            assert_eq!(h["centered"].as_bool(), Some(false));
            OptimKind::Rmsprop {
                alpha: f("alpha"),
                eps: f("eps"),
            }
        }
        "adam" => {
            assert_eq!(h["amsgrad"].as_bool(), Some(false));
            OptimKind::Adam {
                beta1: h["betas"][0].as_f64().unwrap(),
                beta2: h["betas"][1].as_f64().unwrap(),
                eps: f("eps"),
            }
        }
        _ => panic!("unknown optimizer {name}"),
    }
}

/// Ten steps of each optimizer on torch's gradient sequence: the parameters after every step.
#[test]
fn optimizers_match_torch() {
    let fx = Fixture::open("optim.safetensors");
    let p0: Vec<f32> = fx.vec("p0");
    let (grads, gshape) = fx.floats("grads");
    let (steps, n) = (gshape[0], gshape[1]);
    assert_eq!(steps, 10);
    for name in [
        "sgd",
        "sgd_momentum",
        "sgd_nesterov",
        "adagrad",
        "rmsprop",
        "adam",
    ] {
        let h: serde_json::Value =
            serde_json::from_str(&fx.meta[&format!("{name}.hparams")]).unwrap();
        let mut opt = Optimizer::<f32>::new(optim_kind(name, &h), h["lr"].as_f64().unwrap(), n);
        let want = fx.floats(&format!("{name}/params")).0;
        let mut p = p0.clone();
        let mut cmps = Vec::new();
        for s in 0..steps {
            let g: Vec<f32> = grads[s * n..(s + 1) * n]
                .iter()
                .map(|&x| x as f32)
                .collect();
            opt.update(&mut p, &g);
            cmps.push(compare(
                &format!("params after step {}", s + 1),
                &p,
                &want[s * n..(s + 1) * n],
            ));
        }
        let worst = cmps.iter().map(|c| c.rel).fold(0.0, f64::max);
        println!("{name}: worst relative error over 10 steps {worst:.2e}");
        check(&cmps, OPTIM_REL_TOL, name);
    }
}

/// clip_grad_norm_: the returned norm and the clipped gradients, when clipping and when not.
#[test]
fn clip_grad_norm_matches_torch() {
    let fx = Fixture::open("optim.safetensors");
    for name in ["clip_active", "clip_inactive"] {
        let max_norm: f64 = fx.meta[&format!("{name}.max_norm")].parse().unwrap();
        let mut g: Vec<f32> = fx.vec(&format!("{name}/before"));
        let before = g.clone();
        let norm = clip_grad_norm(&mut g, max_norm);
        let cmps = [
            compare("norm", &[norm], &fx.floats(&format!("{name}/norm")).0),
            compare("clipped", &g, &fx.floats(&format!("{name}/after")).0),
        ];
        check(&cmps, F32_REL_TOL, name);
        assert_eq!(
            g != before,
            name == "clip_active",
            "{name}: clipping happened or not"
        );
    }
    assert!(fx.has("clip_active/norm"));
}

/// recur -> torch: writes recur checkpoints of several shapes, with recur's logits on a probe
/// batch beside them, to `target/tmp/recur_to_torch/`. CI has no torch, so the other half is
/// manual: `python3 crates/recur/tests/fixtures/gen_torch.py --check-recur target/tmp/recur_to_torch`
/// loads each checkpoint with the docs' snippet (`load_state_dict(strict=True)`) and compares
/// torch's logits with recur's. Here the files are checked to load back in recur.
#[test]
fn recur_checkpoints_for_torch() {
    use recur::rng::Rng;
    use safetensors::tensor::TensorView;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("recur_to_torch");
    std::fs::create_dir_all(&dir).unwrap();
    let vocab: Vec<char> = "\n abcdefghij".chars().collect();
    let v = vocab.len();
    let lstm = |h| StackConfig::new(CellKind::Lstm, 3, h);
    let gru = |h| StackConfig::new(CellKind::Gru, 3, h);
    let relu = StackConfig::new(CellKind::parse("rnn_relu").unwrap(), 0, 9);
    let models = [
        (
            "lstm_proj_bi_emb",
            ModelConfig::char_model(
                v,
                5,
                lstm(7)
                    .with_layers(2)
                    .with_bidirectional(true)
                    .with_proj_size(4),
            ),
        ),
        (
            "gru_onehot_nobias",
            ModelConfig::char_model(v, 0, gru(6).with_layers(3).with_bias(false)),
        ),
        ("rnn_relu_emb", ModelConfig::char_model(v, 4, relu)),
        ("lstm_proj_tied", {
            let mut c = ModelConfig::char_model(v, 4, lstm(7).with_layers(2).with_proj_size(4));
            c.tie_weights = true;
            c
        }),
        (
            "lstm_dense_last_classes_bi",
            ModelConfig::dense(
                3,
                lstm(5).with_layers(2).with_bidirectional(true),
                4,
                Head::LastClasses,
            ),
        ),
        (
            "gru_dense_step_regression",
            ModelConfig::dense(3, gru(5), 2, Head::StepRegression),
        ),
    ];
    for (k, (name, cfg)) in models.into_iter().enumerate() {
        let model = Model::new(cfg.clone()).unwrap();
        let mut rng = Rng::new(100 + k as u64);
        let mut params = vec![0.0f32; model.num_params()];
        model.init(&mut params, &mut rng);
        let (t, b) = (6, 2);
        let dense = cfg.input == InputKind::Dense;
        // input: (T, B) token ids, or (T, B, I) values for a dense model
        let ids: Vec<u32> = (0..t * b).map(|_| rng.below(v as u64) as u32).collect();
        let x: Vec<f32> = (0..t * b * cfg.input_size)
            .map(|_| rng.normal() as f32)
            .collect();
        let input = if dense {
            Input::Dense(&x)
        } else {
            Input::Tokens(&ids)
        };
        let mut ws = model.workspace::<f32>(t, b);
        model.forward(&mut ws, &params, input, None, None, None, None);
        let rows = if cfg.head.last_step() {
            vec![b]
        } else {
            vec![t, b]
        };
        let ck = checkpoint::Checkpoint {
            model: cfg,
            params,
            vocab: (!dense).then(|| vocab.clone()),
            optimizer: None,
            ema: None,
            train_state: None,
            precision: recur::Precision::F32,
        };
        let path = dir.join(format!("{name}.safetensors"));
        checkpoint::save(&path, &ck).unwrap();
        assert_eq!(checkpoint::load(&path).unwrap().params, ck.params);
        let ids64: Vec<u8> = ids.iter().flat_map(|&i| (i as i64).to_le_bytes()).collect();
        let xb: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let logits: Vec<u8> = ws.logits.iter().flat_map(|x| x.to_le_bytes()).collect();
        let input_view = if dense {
            let shape = vec![t, b, ck.model.input_size];
            TensorView::new(Dtype::F32, shape, &xb).unwrap()
        } else {
            TensorView::new(Dtype::I64, vec![t, b], &ids64).unwrap()
        };
        let lshape = [rows, vec![ck.model.output_size]].concat();
        let probe = vec![
            ("input", input_view),
            (
                "logits",
                TensorView::new(Dtype::F32, lshape, &logits).unwrap(),
            ),
        ];
        let bytes = safetensors::serialize(probe, None).unwrap();
        std::fs::write(dir.join(format!("{name}.probe")), bytes).unwrap();
    }
}
