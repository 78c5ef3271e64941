//! The CUDA model, optimizers and clipping against the CPU's, and against the PyTorch fixtures.
//!
//! - `gpu_model_matches_cpu`: random models (one-hot, embedding or dense input; every cell; 1-2
//!   layers, directions, projection, dropout, lengths, initial states; every head) on the GPU in
//!   float32 against the CPU model in float64 on the same float32 values: logits, loss, final
//!   states and every parameter gradient (and dx for dense input).
//! - `gpu_optimizers_match_cpu`: ten updates of every optimizer against `recur::optim` in
//!   float32, with the state moved CPU -> GPU after five (a run continued on the other device).
//! - `gpu_clipping_matches_cpu`: the global norm, norm clipping and value clipping.
//! - `gpu_matches_torch_fixtures`: the character models (logits, loss, every gradient), the ten
//!   optimizer steps and `clip_grad_norm_` of `crates/recur/tests/fixtures`, written by PyTorch.
//!
//! Every GPU test needs a CUDA device and prints `skipping ...` without one (CI).
//! `cpu_f32_model_is_within_tolerance` runs everywhere: the CPU's own float32 run of the same
//! random cases, held to the same bound, calibrates it.

#[path = "../../recur/tests/support/fixture.rs"]
mod fixture;
#[path = "../../recur-apps/tests/support/small_run.rs"]
mod small_run;

use fixture::{check, compare, Cmp, Fixture};
use recur::cell::CellKind;
use recur::model::{Head, Input, InputKind, Model, ModelConfig};
use recur::ops::loss::IGNORE;
use recur::ops::Float;
use recur::optim::{clip_grad_norm, clip_grad_value, grad_norm, OptimKind, Optimizer};
use recur::rng::Rng;
use recur::stack::StackConfig;
use recur_cuda::{Gpu, GpuModel, GpuOptimizer, NormScratch};
use small_run::{losses, small_resumed, small_trainer};

/// Per tensor, the worst |ours - ref| over the tensor's largest |ref|, float32 against float64.
/// As in vs_cpu.rs: float32 rounds at 6e-8, the sums here run over at most a few hundred terms
/// and the recurrences over at most 10 steps, so accumulated rounding stays near 1e-6 (the CPU's
/// own float32 run, `cpu_f32_model_is_within_tolerance`, is held to the same bound); a wrong term
/// gives errors of order 1e-2. The bound.
const TOL: f64 = 1e-5;
/// Optimizer trajectories in float32 (torch_parity.rs's bound): ten updates of a few rounded
/// operations per element. The GPU kernels round each operation as the CPU does (no FMA
/// contraction), so they are expected to agree exactly; the bound is the torch one.
const OPTIM_TOL: f64 = 1e-6;
/// The global norm: float64 sums of squares in a different order than the CPU's; relative
/// rounding of order 1e-16 per addition over at most 1e5 terms.
const NORM_TOL: f64 = 1e-10;

fn gpu(test: &str) -> Option<Gpu> {
    match Gpu::new(0) {
        Ok(g) => Some(g),
        Err(e) => {
            println!("skipping {test}: {e}");
            None
        }
    }
}

#[derive(Clone, Debug)]
struct Case {
    cfg: ModelConfig,
    t: usize,
    b: usize,
    lengths: Option<Vec<usize>>,
    init_state: bool,
    dropout: bool,
    seed: u64,
}

/// `n` random cases covering every input kind, cell, head and option.
fn cases(n: usize) -> Vec<Case> {
    let mut rng = Rng::new(4242);
    let kinds = ["rnn_tanh", "rnn_relu", "lstm", "gru"];
    let inputs = [InputKind::OneHot, InputKind::Embedding, InputKind::Dense];
    (0..n)
        .map(|k| {
            let kind = CellKind::parse(kinds[k % 4]).unwrap();
            let input = inputs[(k / 4) % 3];
            let head = Head::ALL[(k / 12 + k) % 4];
            let h = [1, 5, 16, 17, 33][rng.below(5) as usize];
            let proj = if kind == CellKind::Lstm && h > 2 && rng.uniform() < 0.4 {
                1 + rng.below(h as u64 - 1) as usize
            } else {
                0
            };
            let layers = 1 + rng.below(2) as usize;
            let rnn = StackConfig::new(kind, 1, h)
                .with_layers(layers)
                .with_bidirectional(rng.uniform() < 0.5)
                .with_bias(rng.uniform() < 0.8)
                .with_proj_size(proj)
                .with_dropout(if layers > 1 { 0.3 } else { 0.0 });
            let vocab = [2, 7, 65][rng.below(3) as usize];
            let outputs = if head.regression() {
                1 + rng.below(3) as usize
            } else {
                vocab
            };
            let mut cfg = match input {
                InputKind::Dense => {
                    ModelConfig::dense(1 + rng.below(9) as usize, rnn, outputs, head)
                }
                InputKind::OneHot => ModelConfig::char_model(vocab, 0, rnn),
                InputKind::Embedding => {
                    ModelConfig::char_model(vocab, 1 + rng.below(12) as usize, rnn)
                }
            };
            cfg.head = head;
            cfg.output_size = outputs;
            cfg.decoder_bias = rng.uniform() < 0.8;
            if input == InputKind::Embedding && !head.regression() && k % 24 < 12 {
                // tied weights: the embedding as wide as the stack's output (no draw taken,
                // so the other cases stay as they were)
                cfg.embed_dim = cfg.rnn.output_size();
                cfg.rnn.input_size = cfg.embed_dim;
                cfg.tie_weights = true;
            }
            let t = 1 + rng.below(10) as usize;
            let b = [1, 2, 3, 8, 9][rng.below(5) as usize];
            let lengths = (head.last_step() || rng.uniform() < 0.3)
                .then(|| (0..b).map(|_| 1 + rng.below(t as u64) as usize).collect());
            Case {
                cfg,
                t,
                b,
                lengths,
                init_state: rng.uniform() < 0.5,
                dropout: layers > 1 && rng.uniform() < 0.5,
                seed: 500 + k as u64,
            }
        })
        .collect()
}

fn n_cases() -> usize {
    std::env::var("RECUR_CUDA_TEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(36)
}

/// The random numbers of one case, as float32 values.
struct Data {
    params: Vec<f32>,
    ids: Vec<u32>,
    x: Vec<f32>,
    h0: Vec<f32>,
    c0: Vec<f32>,
    targets: Vec<u32>,
    targets_f: Vec<f32>,
}

fn data(c: &Case, model: &Model) -> Data {
    let mut rng = Rng::new(c.seed);
    let mut params = vec![0.0f32; model.num_params()];
    model.init(&mut params, &mut rng);
    let cfg = &c.cfg;
    let rnn = &cfg.rnn;
    let ld = rnn.num_layers * rnn.dirs();
    let n = c.t * c.b;
    let mut v =
        |k: usize| -> Vec<f32> { (0..k).map(|_| rng.uniform_in(-1.0, 1.0) as f32).collect() };
    let x = v(n * cfg.input_size);
    let h0 = v(ld * c.b * rnn.out_size());
    let c0 = v(ld * c.b * rnn.hidden_size);
    let rows = if cfg.head.last_step() { c.b } else { n };
    let mut targets_f = v(rows * cfg.output_size);
    let ids = (0..n)
        .map(|_| rng.below(cfg.input_size as u64) as u32)
        .collect();
    let mut targets: Vec<u32> = (0..rows)
        .map(|_| rng.below(cfg.output_size as u64) as u32)
        .collect();
    // per-step heads with lengths: padded steps take no loss
    if let (false, Some(l)) = (cfg.head.last_step(), &c.lengths) {
        for s in 0..c.t {
            for b in 0..c.b {
                if s >= l[b] {
                    let r = s * c.b + b;
                    targets[r] = IGNORE;
                    for o in 0..cfg.output_size {
                        targets_f[r * cfg.output_size + o] = f32::NAN;
                    }
                }
            }
        }
    }
    Data {
        params,
        ids,
        x,
        h0,
        c0,
        targets,
        targets_f,
    }
}

/// What one run produces, in f64 for comparison.
struct Out {
    logits: Vec<f64>,
    loss: f64,
    count: usize,
    h_n: Vec<f64>,
    grads: Vec<f64>,
    dx: Vec<f64>,
}

fn to64<F: Float>(v: &[F]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

/// The CPU model in precision F on the case's values.
fn run_cpu<F: Float>(c: &Case, model: &Model, d: &Data) -> Out {
    let cv = |v: &[f32]| -> Vec<F> { v.iter().map(|&x| F::from_f64(x as f64)).collect() };
    let params = cv(&d.params);
    let x = cv(&d.x);
    let (h0, c0) = (cv(&d.h0), cv(&d.c0));
    let lstm = c.cfg.rnn.kind() == CellKind::Lstm;
    let mut ws = model.workspace::<F>(c.t, c.b);
    let input = match c.cfg.input {
        InputKind::Dense => Input::Dense(&x),
        _ => Input::Tokens(&d.ids),
    };
    let mut rng = Rng::new(c.seed ^ 0xd0);
    let init = c.init_state;
    model.forward(
        &mut ws,
        &params,
        input,
        init.then_some(&h0[..]),
        (init && lstm).then_some(&c0[..]),
        c.lengths.as_deref(),
        c.dropout.then_some(&mut rng),
    );
    let rows = ws.rows();
    let (loss, count) = if c.cfg.head.regression() {
        let k = rows * c.cfg.output_size;
        let tf = cv(&d.targets_f);
        let cnt = d.targets_f[..k].iter().filter(|v| !v.is_nan()).count();
        model.loss_mse(&mut ws, &tf, F::from_f64(1.0 / cnt.max(1) as f64))
    } else {
        let cnt = d.targets.iter().filter(|&&t| t != IGNORE).count();
        model.loss(&mut ws, &d.targets, F::from_f64(1.0 / cnt.max(1) as f64))
    };
    let mut grads = vec![F::ZERO; params.len()];
    let mut dx = vec![F::ZERO; x.len()];
    let dense = c.cfg.input == InputKind::Dense;
    model.backward(
        &mut ws,
        &params,
        &mut grads,
        input,
        c.lengths.as_deref(),
        None,
        None,
        dense.then_some(&mut dx[..]),
    );
    Out {
        logits: to64(&ws.logits),
        loss,
        count,
        h_n: to64(&ws.stack.h_n),
        grads: to64(&grads),
        dx: to64(&dx),
    }
}

/// The GPU model on the case's values.
fn run_gpu(gpu: &Gpu, c: &Case, model: &Model, d: &Data) -> Out {
    let gm = GpuModel::new(model);
    let mut ws = gm.workspace(gpu, c.t, c.b).unwrap();
    let params = gpu.upload(&d.params).unwrap();
    let mut grads = gpu.zeros::<f32>(d.params.len()).unwrap();
    let (h0, c0) = (gpu.upload(&d.h0).unwrap(), gpu.upload(&d.c0).unwrap());
    let lstm = c.cfg.rnn.kind() == CellKind::Lstm;
    let input = match c.cfg.input {
        InputKind::Dense => Input::Dense(&d.x),
        _ => Input::Tokens(&d.ids),
    };
    let mut rng = Rng::new(c.seed ^ 0xd0);
    let init = c.init_state;
    // poison what forward and loss must write, so that an element left unwritten shows as NaN
    let poison =
        |gpu: &Gpu, b: &mut recur_cuda::DevBuf| gpu.write(b, &vec![f32::NAN; b.len()]).unwrap();
    poison(gpu, &mut ws.logits);
    poison(gpu, &mut ws.dlogits);
    poison(gpu, &mut ws.stack.h_n);
    for o in ws.stack.outs.iter_mut() {
        poison(gpu, o);
    }
    gm.forward(
        gpu,
        &mut ws,
        &params,
        input,
        init.then_some(&h0),
        (init && lstm).then_some(&c0),
        c.lengths.as_deref(),
        c.dropout.then_some(&mut rng),
    )
    .unwrap();
    let rows = ws.rows();
    let (loss, count) = if c.cfg.head.regression() {
        let k = rows * c.cfg.output_size;
        let cnt = d.targets_f[..k].iter().filter(|v| !v.is_nan()).count();
        gm.loss_mse(gpu, &mut ws, &d.targets_f, 1.0 / cnt.max(1) as f32)
            .unwrap()
    } else {
        let cnt = d.targets.iter().filter(|&&t| t != IGNORE).count();
        gm.loss(gpu, &mut ws, &d.targets, 1.0 / cnt.max(1) as f32)
            .unwrap()
    };
    let dense = c.cfg.input == InputKind::Dense;
    let mut dx = gpu.zeros::<f32>(d.x.len()).unwrap();
    gm.backward(
        gpu,
        &mut ws,
        &params,
        &mut grads,
        None,
        None,
        dense.then_some(&mut dx),
    )
    .unwrap();
    let rnn = &c.cfg.rnn;
    let nh = rnn.num_layers * rnn.dirs() * c.b * rnn.out_size();
    Out {
        logits: to64(&gpu.download(&ws.logits, rows * c.cfg.output_size).unwrap()),
        loss,
        count,
        h_n: to64(&gpu.download(&ws.stack.h_n, nh).unwrap()),
        grads: to64(&gpu.download(&grads, d.params.len()).unwrap()),
        dx: to64(&gpu.download(&dx, d.x.len()).unwrap()),
    }
}

/// Every comparison of one run against the reference.
fn compare_runs(model: &Model, ours: &Out, want: &Out) -> Vec<Cmp> {
    assert_eq!(ours.count, want.count, "loss count");
    let mut v = vec![
        compare("logits", &ours.logits, &want.logits),
        compare("loss", &[ours.loss], &[want.loss]),
        compare("h_n", &ours.h_n, &want.h_n),
        compare("dx", &ours.dx, &want.dx),
    ];
    for e in &model.layout().entries {
        v.push(compare(
            &format!("grad {}", e.name),
            &ours.grads[e.range()],
            &want.grads[e.range()],
        ));
    }
    v
}

fn describe(c: &Case) -> String {
    let r = &c.cfg.rnn;
    format!(
        "{:?} input, {} {}x{} (proj {}, {} dir, bias {}, dropout {}), head {}, T={} B={} lengths {:?} init {}",
        c.cfg.input,
        r.kind().name(),
        r.num_layers,
        r.hidden_size,
        r.proj_size,
        r.dirs(),
        r.bias,
        c.dropout,
        c.cfg.head.name(),
        c.t,
        c.b,
        c.lengths,
        c.init_state
    )
}

#[test]
fn cpu_f32_model_is_within_tolerance() {
    let all = cases(n_cases());
    // the cases cover every input kind with every head, and every option
    for input in [InputKind::OneHot, InputKind::Embedding, InputKind::Dense] {
        for head in Head::ALL {
            assert!(
                all.iter()
                    .any(|c| c.cfg.input == input && c.cfg.head == head),
                "no case with {input:?} input and head {}",
                head.name()
            );
        }
    }
    assert!(all.iter().any(|c| c.cfg.rnn.proj_size > 0));
    assert!(all
        .iter()
        .any(|c| c.cfg.rnn.dirs() == 2 && c.cfg.head.last_step()));
    assert!(all.iter().any(|c| c.dropout));
    assert!(all.iter().any(|c| c.init_state));
    assert!(all
        .iter()
        .any(|c| c.lengths.is_some() && !c.cfg.head.last_step()));
    assert!(all.iter().any(|c| !c.cfg.decoder_bias));
    let mut worst = 0.0f64;
    for c in all {
        let model = Model::new(c.cfg.clone()).unwrap();
        let d = data(&c, &model);
        let want = run_cpu::<f64>(&c, &model, &d);
        let ours = run_cpu::<f32>(&c, &model, &d);
        worst = worst.max(check(
            &compare_runs(&model, &ours, &want),
            TOL,
            &format!("CPU f32, {}", describe(&c)),
        ));
    }
    println!("CPU f32 vs CPU f64, worst over all cases: {worst:.3e}");
}

#[test]
fn gpu_model_matches_cpu() {
    let Some(gpu) = gpu("gpu_model_matches_cpu") else {
        return;
    };
    let mut worst = 0.0f64;
    let all = cases(n_cases());
    for c in &all {
        let model = Model::new(c.cfg.clone()).unwrap();
        let d = data(c, &model);
        let want = run_cpu::<f64>(c, &model, &d);
        let ours = run_gpu(&gpu, c, &model, &d);
        worst = worst.max(check(
            &compare_runs(&model, &ours, &want),
            TOL,
            &format!("GPU f32 vs CPU f64, {}", describe(c)),
        ));
    }
    println!(
        "GPU model f32 vs CPU f64 on {} cases ({}): worst {worst:.3e}",
        all.len(),
        gpu.name()
    );
}

fn all_optimizers() -> Vec<(&'static str, OptimKind, f64)> {
    vec![
        (
            "sgd",
            OptimKind::Sgd {
                momentum: 0.0,
                nesterov: false,
            },
            0.1,
        ),
        (
            "sgd_momentum",
            OptimKind::Sgd {
                momentum: 0.9,
                nesterov: false,
            },
            0.05,
        ),
        (
            "sgd_nesterov",
            OptimKind::Sgd {
                momentum: 0.9,
                nesterov: true,
            },
            0.05,
        ),
        ("adagrad", OptimKind::Adagrad { eps: 1e-10 }, 0.1),
        (
            "rmsprop",
            OptimKind::Rmsprop {
                alpha: 0.99,
                eps: 1e-8,
            },
            0.01,
        ),
        (
            "adam",
            OptimKind::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            0.002,
        ),
    ]
}

#[test]
fn gpu_optimizers_match_cpu() {
    let Some(gpu) = gpu("gpu_optimizers_match_cpu") else {
        return;
    };
    // awkward sizes: one element, a block boundary, a few blocks and a tail
    for n in [1usize, 256, 1000, 70_001] {
        for (name, kind, lr) in all_optimizers() {
            let mut rng = Rng::new(n as u64 + 17);
            let mut p: Vec<f32> = (0..n).map(|_| rng.uniform_in(-1.0, 1.0) as f32).collect();
            let mut cpu = Optimizer::<f32>::new(kind.clone(), lr, n);
            let mut dp = gpu.upload(&p).unwrap();
            let mut dopt: Option<GpuOptimizer> = None;
            let (mut worst, mut exact) = (0.0f64, true);
            for s in 0..10 {
                let g: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
                if s == 5 {
                    // continue on the GPU from the CPU's state after five steps
                    dp = gpu.upload(&p).unwrap();
                    dopt = Some(GpuOptimizer::from_host(&gpu, &cpu).unwrap());
                }
                let o = dopt.get_or_insert_with(|| GpuOptimizer::from_host(&gpu, &cpu).unwrap());
                let dg = gpu.upload(&g).unwrap();
                o.update(&gpu, &mut dp, &dg).unwrap();
                cpu.update(&mut p, &g);
                let got = gpu.download(&dp, n).unwrap();
                exact &= got.iter().zip(&p).all(|(a, b)| a.to_bits() == b.to_bits());
                worst = worst.max(check(
                    &[compare(&format!("params after step {}", s + 1), &got, &p)],
                    OPTIM_TOL,
                    &format!("{name}, n = {n}"),
                ));
                let back = o.to_host(&gpu).unwrap();
                assert_eq!(back.step, cpu.step, "{name}: step count");
                check(
                    &[compare("m", &back.m, &cpu.m), compare("v", &back.v, &cpu.v)],
                    OPTIM_TOL,
                    &format!("{name} moments, n = {n}"),
                );
            }
            println!("{name} n={n}: worst {worst:.2e}, bit-exact: {exact}");
        }
    }
}

#[test]
fn gpu_clipping_matches_cpu() {
    let Some(gpu) = gpu("gpu_clipping_matches_cpu") else {
        return;
    };
    let s = NormScratch::new(&gpu).unwrap();
    for n in [1usize, 255, 256, 257, 100_000, 1_000_003] {
        let mut rng = Rng::new(n as u64);
        let g: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        let want = grad_norm(&g);
        let dg = gpu.upload(&g).unwrap();
        let norm = recur_cuda::grad_norm(&gpu, &s, &dg, n).unwrap();
        check(
            &[compare("norm", &[norm], &[want])],
            NORM_TOL,
            &format!("norm n={n}"),
        );
        for max in [want * 0.5, want * 2.0] {
            let mut cg = g.clone();
            let cn = clip_grad_norm(&mut cg, max);
            let mut dg = gpu.upload(&g).unwrap();
            let gn = recur_cuda::clip_grad_norm(&gpu, &s, &mut dg, n, max).unwrap();
            let got = gpu.download(&dg, n).unwrap();
            check(
                &[compare("norm", &[gn], &[cn]), compare("clipped", &got, &cg)],
                OPTIM_TOL,
                &format!("clip_grad_norm n={n} max={max}"),
            );
        }
        let mut cg = g.clone();
        clip_grad_value(&mut cg, 0.7);
        let mut dg = gpu.upload(&g).unwrap();
        recur_cuda::clip_grad_value(&gpu, &mut dg, n, 0.7).unwrap();
        let got = gpu.download(&dg, n).unwrap();
        assert!(
            got.iter().zip(&cg).all(|(a, b)| a.to_bits() == b.to_bits()),
            "clip_grad_value n={n} differs from the CPU's"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// PyTorch fixtures (crates/recur/tests/fixtures, written by gen_torch.py).

/// Bound for the fixtures: torch_parity.rs's float32 bound.
const TORCH_TOL: f64 = 1e-5;

fn optim_from_hparams(name: &str, h: &serde_json::Value) -> OptimKind {
    let f = |k: &str| h[k].as_f64().unwrap_or_else(|| panic!("{name}: {k}"));
    match name {
        "sgd" | "sgd_momentum" | "sgd_nesterov" => OptimKind::Sgd {
            momentum: f("momentum"),
            nesterov: h["nesterov"].as_bool().unwrap(),
        },
        "adagrad" => OptimKind::Adagrad { eps: f("eps") },
        "rmsprop" => OptimKind::Rmsprop {
            alpha: f("alpha"),
            eps: f("eps"),
        },
        "adam" => OptimKind::Adam {
            beta1: h["betas"][0].as_f64().unwrap(),
            beta2: h["betas"][1].as_f64().unwrap(),
            eps: f("eps"),
        },
        _ => panic!("unknown optimizer {name}"),
    }
}

#[test]
fn gpu_matches_torch_fixtures() {
    let Some(gpu) = gpu("gpu_matches_torch_fixtures") else {
        return;
    };
    // character models: logits, mean cross-entropy, every gradient
    let fx = Fixture::open("char_models.safetensors");
    for name in ["char_lstm_emb", "char_gru_onehot"] {
        let cfg: ModelConfig = serde_json::from_str(&fx.meta[&format!("config.{name}")]).unwrap();
        let model = Model::new(cfg).unwrap();
        let key = |k: &str| format!("{name}/{k}");
        let mut params = vec![0.0f32; model.num_params()];
        for e in &model.layout().entries {
            params[e.range()].copy_from_slice(&fx.vec::<f32>(&key(&format!("param/{}", e.name))));
        }
        let ids = fx.tokens(&key("tokens"));
        let targets = fx.tokens(&key("targets"));
        let (want_logits, shape) = fx.floats(&key("logits"));
        let (t, b) = (shape[0], shape[1]);
        let gm = GpuModel::new(&model);
        let mut ws = gm.workspace(&gpu, t, b).unwrap();
        let dp = gpu.upload(&params).unwrap();
        let mut dg = gpu.zeros::<f32>(params.len()).unwrap();
        gm.forward(
            &gpu,
            &mut ws,
            &dp,
            Input::Tokens(&ids),
            None,
            None,
            None,
            None,
        )
        .unwrap();
        let (sum, n) = gm
            .loss(&gpu, &mut ws, &targets, 1.0 / (t * b) as f32)
            .unwrap();
        assert_eq!(n, t * b);
        gm.backward(&gpu, &mut ws, &dp, &mut dg, None, None, None)
            .unwrap();
        let logits = gpu.download(&ws.logits, want_logits.len()).unwrap();
        let grads = gpu.download(&dg, params.len()).unwrap();
        let mut cmps = vec![
            compare("logits", &logits, &want_logits),
            compare("loss", &[sum / n as f64], &fx.floats(&key("loss")).0),
        ];
        for e in &model.layout().entries {
            let want = fx.floats(&key(&format!("grad/{}", e.name))).0;
            cmps.push(compare(
                &format!("grad {}", e.name),
                &grads[e.range()],
                &want,
            ));
        }
        let worst = check(&cmps, TORCH_TOL, name);
        println!("{name}: GPU vs torch, worst {worst:.2e}");
    }
    // ten optimizer steps on torch's gradients
    let fx = Fixture::open("optim.safetensors");
    let p0 = fx.vec::<f32>("p0");
    let (grads, gshape) = fx.floats("grads");
    let (steps, n) = (gshape[0], gshape[1]);
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
        let host =
            Optimizer::<f32>::new(optim_from_hparams(name, &h), h["lr"].as_f64().unwrap(), n);
        let mut opt = GpuOptimizer::from_host(&gpu, &host).unwrap();
        let want = fx.floats(&format!("{name}/params")).0;
        let mut p = gpu.upload(&p0).unwrap();
        let mut cmps = Vec::new();
        for s in 0..steps {
            let g: Vec<f32> = grads[s * n..(s + 1) * n]
                .iter()
                .map(|&x| x as f32)
                .collect();
            let dg = gpu.upload(&g).unwrap();
            opt.update(&gpu, &mut p, &dg).unwrap();
            let got = gpu.download(&p, n).unwrap();
            cmps.push(compare(
                &format!("params after step {}", s + 1),
                &got,
                &want[s * n..(s + 1) * n],
            ));
        }
        let worst = check(&cmps, OPTIM_TOL, name);
        println!("{name}: GPU vs torch over {steps} steps, worst {worst:.2e}");
    }
    // clip_grad_norm_
    let s = NormScratch::new(&gpu).unwrap();
    for name in ["clip_active", "clip_inactive"] {
        let max_norm: f64 = fx.meta[&format!("{name}.max_norm")].parse().unwrap();
        let g = fx.vec::<f32>(&format!("{name}/before"));
        let mut dg = gpu.upload(&g).unwrap();
        let norm = recur_cuda::clip_grad_norm(&gpu, &s, &mut dg, g.len(), max_norm).unwrap();
        let got = gpu.download(&dg, g.len()).unwrap();
        check(
            &[
                compare("norm", &[norm], &fx.floats(&format!("{name}/norm")).0),
                compare("clipped", &got, &fx.floats(&format!("{name}/after")).0),
            ],
            TORCH_TOL,
            name,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The training loop on the GPU engine.

/// The loss of the first step after moving to the GPU: its parameters, optimizer and carried
/// state are the CPU's exactly, only the forward's rounding differs (TOL). Later steps compound
/// rounding through Adam, which divides by the gradients' running magnitude: a bound of 1e-3 on
/// the loss still tells a working engine (differences of 1e-6 to 1e-4) from a wrong one (a
/// dropped carry or moment changes the loss in the second or first decimal).
const LATER_LOSS_TOL: f64 = 1e-3;

#[test]
fn gpu_engine_continues_a_cpu_run() {
    if gpu("gpu_engine_continues_a_cpu_run").is_none() {
        return;
    }
    let cuda = recur_cuda::Cuda::new(0).unwrap();
    let mut whole = small_trainer(12);
    let (l_cpu, v_cpu) = losses(&mut whole);
    let mut first = small_trainer(5);
    let (mut l, mut v) = losses(&mut first);
    let mut moved = small_resumed(first.checkpoint().unwrap(), &cuda, 12);
    assert!(moved.device().starts_with("cuda"), "{}", moved.device());
    let (l2, v2) = losses(&mut moved);
    l.extend(l2);
    v.extend(v2);
    assert_eq!(l.len(), 12);
    // steps 1-5 ran on the CPU in both runs
    assert_eq!(l[..5], l_cpu[..5]);
    check(
        &[compare("loss of step 6", &l[5..6], &l_cpu[5..6])],
        TOL,
        "first GPU step",
    );
    check(
        &[
            compare("losses of steps 7-12", &l[6..], &l_cpu[6..]),
            compare(
                "validation losses",
                &v.iter().map(|x| x.unwrap()).collect::<Vec<_>>(),
                &v_cpu.iter().map(|x| x.unwrap()).collect::<Vec<_>>(),
            ),
        ],
        LATER_LOSS_TOL,
        "GPU steps 7-12",
    );
    // and back: the GPU's state as a checkpoint continues on the CPU
    let ck = moved.checkpoint().unwrap();
    assert_eq!(ck.optimizer.as_ref().unwrap().step, 12);
    assert_eq!(ck.params.len(), moved.model.num_params());
    println!("CPU run moved to the GPU after 5 steps: losses {l:?}, CPU only {l_cpu:?}");
}

/// The long-memory tasks' loop on the GPU engine against the CPU's: the same data, initial
/// weights and steps; the held-out metric of every evaluation (LATER_LOSS_TOL: rounding
/// compounded through Adam).
#[test]
fn gpu_task_training_matches_cpu() {
    use recur_apps::tasks::train::{train, TrainSpec};
    use recur_apps::tasks::{Task, TaskKind};
    if gpu("gpu_task_training_matches_cpu").is_none() {
        return;
    }
    let cuda = recur_cuda::Cuda::new(0).unwrap();
    for (kind, cell) in [
        (TaskKind::Adding, "lstm"),
        (TaskKind::Copy, "gru"),
        (TaskKind::Ball, "rnn_tanh"),
    ] {
        let spec = TrainSpec {
            task: Task::new(kind, 6).unwrap(),
            rnn: StackConfig::new(CellKind::parse(cell).unwrap(), 0, 12),
            optim: OptimKind::parse("adam", 0.0).unwrap(),
            lr: 1e-2,
            batch: 5,
            max_steps: 6,
            budget: None,
            clip: 1.0,
            eval_every: 1,
            eval_size: 10,
            seed: 9,
            carry_gate_bias: 0.0,
        };
        let cpu = train(
            &spec,
            recur::train::Run::on(&recur::engine::Cpu),
            &mut |_| true,
        )
        .unwrap();
        let gpu = train(&spec, recur::train::Run::on(&cuda), &mut |_| true).unwrap();
        assert_eq!(gpu.steps, cpu.steps);
        let m = |r: &recur_apps::tasks::train::TrainResult| -> Vec<f64> {
            r.curve.iter().map(|p| p.metric).collect()
        };
        let (mg, mc) = (m(&gpu), m(&cpu));
        // Adam's first update moves every parameter by about lr * sign(gradient), so an element
        // whose gradient is at rounding level may move the other way on the other device: the
        // parameters are not compared, the metrics (where such elements weigh nothing) are.
        check(
            &[compare("held-out metrics", &mg, &mc)],
            LATER_LOSS_TOL,
            &format!("{kind:?}"),
        );
        println!("{kind:?} {cell}: held-out metrics GPU {mg:?} CPU {mc:?}");
    }
}

/// The spoken-digit classifier's engine (logits out, their gradient in) on the GPU against the
/// CPU's, on batches of two shapes (the GPU keeps a workspace per shape): logits, and the
/// parameters after a clipped SGD step (plain SGD: the update is proportional to the gradient,
/// so the TOL bound applies).
#[test]
fn gpu_model_engine_matches_cpu() {
    use recur::engine::{Backend, Batch, Cpu, Start};
    if gpu("gpu_model_engine_matches_cpu").is_none() {
        return;
    }
    let cuda = recur_cuda::Cuda::new(0).unwrap();
    let rnn = StackConfig::new(CellKind::Gru, 1, 12)
        .with_layers(2)
        .with_bidirectional(true)
        .with_dropout(0.2);
    let model = Model::new(ModelConfig::dense(5, rnn, 10, Head::StepClasses)).unwrap();
    let mut rng = Rng::new(77);
    let mut params = vec![0.0f32; model.num_params()];
    model.init(&mut params, &mut rng);
    let opt = Optimizer::<f32>::new(OptimKind::parse("sgd", 0.0).unwrap(), 0.1, params.len());
    let mut cpu = Cpu
        .engine(model.clone(), params.clone(), Some(opt.clone()))
        .unwrap();
    let mut gpu_eng = cuda
        .engine(model.clone(), params.clone(), Some(opt))
        .unwrap();
    for (s, (t, b)) in [(7usize, 3usize), (4, 5), (7, 3)].into_iter().enumerate() {
        let x: Vec<f32> = (0..t * b * 5)
            .map(|_| rng.uniform_in(-1.0, 1.0) as f32)
            .collect();
        let lengths: Vec<usize> = (0..b).map(|_| 1 + rng.below(t as u64) as usize).collect();
        let dl: Vec<f32> = (0..t * b * 10).map(|_| rng.normal() as f32 * 0.1).collect();
        let (mut r1, mut r2) = (Rng::new(s as u64), Rng::new(s as u64));
        let batch = Batch::dense(&x, t, b).with_lengths(&lengths);
        cpu.forward(&batch, Start::Zero, Some(&mut r1)).unwrap();
        gpu_eng.forward(&batch, Start::Zero, Some(&mut r2)).unwrap();
        let lc = cpu.logits().unwrap().into_owned();
        let lg = gpu_eng.logits().unwrap().into_owned();
        let step = |e: &mut dyn recur::engine::Engine| {
            e.set_dlogits(&dl).unwrap();
            e.backward(&batch).unwrap();
            e.clip(0.0, 0.5).unwrap()
        };
        let nc = step(&mut *cpu);
        let ng = step(&mut *gpu_eng);
        cpu.update(0.1).unwrap();
        gpu_eng.update(0.1).unwrap();
        let (pc, pg) = (cpu.params().unwrap(), gpu_eng.params().unwrap());
        check(
            &[
                compare("logits", &lg, &lc),
                compare("norm", &[ng], &[nc]),
                compare("params after the step", &pg, &pc),
            ],
            TOL,
            &format!("batch {s} (T={t}, B={b})"),
        );
    }
}
