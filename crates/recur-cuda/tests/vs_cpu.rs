//! The CUDA stack against the CPU stack on random shapes and options: outputs, final states and
//! every gradient (parameters, inputs, initial states), forward and BPTT.
//!
//! The reference is the CPU stack in float64 on the same (float32-valued) parameters and inputs;
//! the GPU runs in float32. Per tensor the error is the worst element's |gpu - ref| over the
//! tensor's largest |ref| (so tiny elements far below the tensor's scale are not over-weighted).
//! The same measure is applied to the CPU's own float32 run, which calibrates the tolerance:
//! `cpu_f32_is_within_tolerance` runs everywhere; `gpu_matches_cpu` needs a CUDA device and is
//! skipped, with a message, on machines without one (CI).

use recur::cell::{CellKind, LayerInput};
use recur::ops::Float;
use recur::rng::Rng;
use recur::stack::{Stack, StackConfig};
use recur_cuda::{Gpu, GpuInput, GpuStack};

/// Worst element error relative to the tensor's largest magnitude, float32 against float64.
/// float32 rounds at 6e-8; the sums here run over at most a few hundred terms per GEMM entry and
/// the recurrences over <= 12 steps, so accumulated rounding stays near 1e-6 (the CPU's own f32
/// run, measured by `cpu_f32_is_within_tolerance`, stays under 2e-6 on these cases). The issue
/// asks for 1e-5; a wrong term (a missed gate, bias or step) gives errors of order 1e-2 and up.
const TOL: f64 = 1e-5;

#[derive(Clone, Debug)]
struct Case {
    cfg: StackConfig,
    t: usize,
    b: usize,
    onehot: bool,
    lengths: Option<Vec<usize>>,
    init_state: bool,
    dy: bool,
    dstate: bool,
    seed: u64,
}

/// Four fixed cases, then `n` random ones covering every cell and option; awkward sizes.
fn cases(n: usize) -> Vec<Case> {
    let mut rng = Rng::new(2024);
    let kinds = ["rnn_tanh", "rnn_relu", "lstm", "gru"];
    // Fixed cases first: the fused small-batch kernel's 16-byte path (P % 4 == 0, aligned
    // weights), its largest batch (8) and the first batch above it (9, cuBLAS path).
    let fixed = |kind: &str, i: usize, h: usize, t: usize, b: usize| Case {
        cfg: StackConfig::new(CellKind::parse(kind).unwrap(), i, h),
        t,
        b,
        onehot: false,
        lengths: None,
        init_state: true,
        dy: true,
        dstate: true,
        seed: 7 + b as u64,
    };
    let mut out = vec![
        fixed("lstm", 32, 32, 5, 3),
        fixed("gru", 16, 64, 4, 8),
        fixed("rnn_relu", 8, 20, 6, 9),
        fixed("rnn_tanh", 12, 128, 3, 1),
    ];
    for k in 0..n {
        let kind = CellKind::parse(kinds[k % 4]).unwrap();
        let h = [1, 5, 16, 17, 33][rng.below(5) as usize];
        let onehot = rng.uniform() < 0.25;
        let input = [1, 3, 8, 13][rng.below(4) as usize];
        let proj = if kind == CellKind::Lstm && h > 2 && rng.uniform() < 0.4 {
            1 + rng.below(h as u64 - 1) as usize
        } else {
            0
        };
        let layers = 1 + rng.below(2) as usize;
        let cfg = StackConfig::new(kind, input, h)
            .with_layers(layers)
            .with_bidirectional(rng.uniform() < 0.5)
            .with_bias(rng.uniform() < 0.8)
            .with_proj_size(proj)
            .with_dropout(if layers > 1 && rng.uniform() < 0.5 {
                0.3
            } else {
                0.0
            });
        let t = 1 + rng.below(12) as usize;
        let b = [1, 2, 3, 7][rng.below(4) as usize];
        let lengths = if rng.uniform() < 0.5 {
            // PyTorch's packed sequences also allow unsorted lengths >= 1
            Some((0..b).map(|_| 1 + rng.below(t as u64) as usize).collect())
        } else {
            None
        };
        out.push(Case {
            cfg,
            t,
            b,
            onehot,
            lengths,
            init_state: rng.uniform() < 0.6,
            dy: rng.uniform() < 0.85,
            dstate: rng.uniform() < 0.6,
            seed: 100 + k as u64,
        });
    }
    out
}

/// The random numbers of one case, as float32 values.
struct Data {
    params: Vec<f32>,
    x: Vec<f32>,
    ids: Vec<u32>,
    h0: Vec<f32>,
    c0: Vec<f32>,
    dy: Vec<f32>,
    dh_n: Vec<f32>,
    dc_n: Vec<f32>,
}

fn data(c: &Case, stack: &Stack) -> Data {
    let mut rng = Rng::new(c.seed);
    let mut params = vec![0.0f32; stack.num_params()];
    stack.init(&mut params, &mut rng);
    let cfg = &c.cfg;
    let ld = cfg.num_layers * cfg.dirs();
    let mut v =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.uniform_in(-1.0, 1.0) as f32).collect() };
    let x = v(c.t * c.b * cfg.input_size);
    let h0 = v(ld * c.b * cfg.out_size());
    let c0 = v(ld * c.b * cfg.hidden_size);
    let dy = v(c.t * c.b * cfg.output_size());
    let dh_n = v(ld * c.b * cfg.out_size());
    let dc_n = v(ld * c.b * cfg.hidden_size);
    let ids = (0..c.t * c.b)
        .map(|_| rng.below(cfg.input_size as u64) as u32)
        .collect();
    Data {
        params,
        x,
        ids,
        h0,
        c0,
        dy,
        dh_n,
        dc_n,
    }
}

/// Named result tensors of one run, as float64.
type Results = Vec<(String, Vec<f64>)>;

fn up<F: Float>(v: &[f32]) -> Vec<F> {
    v.iter().map(|&x| F::from_f64(x as f64)).collect()
}
fn f64s<F: Float>(v: &[F]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

/// Forward and backward on the CPU in precision F.
fn cpu_run<F: Float>(c: &Case, stack: &Stack, d: &Data) -> Results {
    let cfg = &c.cfg;
    let lstm = stack.kind() == CellKind::Lstm;
    let params: Vec<F> = up(&d.params);
    let x: Vec<F> = up(&d.x);
    let (h0, c0, dy, dh_n, dc_n) = (
        up::<F>(&d.h0),
        up::<F>(&d.c0),
        up::<F>(&d.dy),
        up::<F>(&d.dh_n),
        up::<F>(&d.dc_n),
    );
    let input = if c.onehot {
        LayerInput::OneHot { ids: &d.ids }
    } else {
        LayerInput::Dense {
            x: &x,
            ld: cfg.input_size,
        }
    };
    let mut ws = stack.workspace::<F>(c.t, c.b);
    let mut drop_rng = Rng::new(c.seed ^ 0xd0);
    stack.forward(
        &mut ws,
        &params,
        input,
        c.init_state.then_some(&h0[..]),
        (c.init_state && lstm).then_some(&c0[..]),
        c.lengths.as_deref(),
        Some(&mut drop_rng),
    );
    let mut grads = vec![F::ZERO; params.len()];
    let mut dx = vec![F::ZERO; x.len()];
    stack.backward(
        &mut ws,
        &params,
        &mut grads,
        input,
        c.lengths.as_deref(),
        c.dy.then_some(&dy[..]),
        c.dstate.then_some(&dh_n[..]),
        (c.dstate && lstm).then_some(&dc_n[..]),
        (!c.onehot).then_some(&mut dx[..]),
    );
    let mut r: Results = vec![
        ("output".into(), f64s(ws.output())),
        ("h_n".into(), f64s(&ws.h_n)),
        ("dh0".into(), f64s(&ws.dh0)),
    ];
    if lstm {
        r.push(("c_n".into(), f64s(&ws.c_n)));
        r.push(("dc0".into(), f64s(&ws.dc0)));
    }
    if !c.onehot {
        r.push(("dx".into(), f64s(&dx)));
    }
    for e in &stack.layout().entries {
        r.push((format!("d{}", e.name), f64s(&grads[e.range()])));
    }
    r
}

/// Forward and backward on the GPU; `small_batch` as `GpuStack::small_batch` (0: the cuBLAS path
/// for every step, 8: the fused `step_small` kernel for the batches here, all <= 9), `persistent`
/// as `GpuStack::persistent` (the one-launch forward for batches <= 8 without projection).
fn gpu_run(
    gpu: &Gpu,
    c: &Case,
    stack: &Stack,
    d: &Data,
    small_batch: usize,
    persistent: bool,
) -> Results {
    let cfg = &c.cfg;
    let lstm = stack.kind() == CellKind::Lstm;
    let mut gs = GpuStack::new(stack);
    gs.small_batch = small_batch;
    gs.persistent = persistent;
    let mut ws = gs.workspace(gpu, c.t, c.b).unwrap();
    let params = gpu.upload(&d.params).unwrap();
    let x = gpu.upload(&d.x).unwrap();
    let ids = gpu.upload_ids(&d.ids).unwrap();
    let (h0, c0) = (gpu.upload(&d.h0).unwrap(), gpu.upload(&d.c0).unwrap());
    let (dy, dh_n, dc_n) = (
        gpu.upload(&d.dy).unwrap(),
        gpu.upload(&d.dh_n).unwrap(),
        gpu.upload(&d.dc_n).unwrap(),
    );
    let input = if c.onehot {
        GpuInput::OneHot(&ids)
    } else {
        GpuInput::Dense(&x)
    };
    let mut drop_rng = Rng::new(c.seed ^ 0xd0);
    gs.forward(
        gpu,
        &mut ws,
        &params,
        input,
        c.init_state.then_some(&h0),
        (c.init_state && lstm).then_some(&c0),
        c.lengths.as_deref(),
        Some(&mut drop_rng),
    )
    .unwrap();
    // Gradients and dx accumulate: they start from zeros.
    let mut grads = gpu.zeros::<f32>(d.params.len()).unwrap();
    let mut dx = gpu.zeros::<f32>(d.x.len()).unwrap();
    gs.backward(
        gpu,
        &mut ws,
        &params,
        &mut grads,
        input,
        c.dy.then_some(&dy),
        c.dstate.then_some(&dh_n),
        (c.dstate && lstm).then_some(&dc_n),
        (!c.onehot).then_some(&mut dx),
    )
    .unwrap();
    let dl = |b: &recur_cuda::DevBuf, n: usize| -> Vec<f64> {
        gpu.download(b, n)
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect()
    };
    let ldn = cfg.num_layers * cfg.dirs() * c.b;
    let mut r: Results = vec![
        (
            "output".into(),
            dl(ws.output(), c.t * c.b * cfg.output_size()),
        ),
        ("h_n".into(), dl(&ws.h_n, ldn * cfg.out_size())),
        ("dh0".into(), dl(&ws.dh0, ldn * cfg.out_size())),
    ];
    if lstm {
        r.push(("c_n".into(), dl(&ws.c_n, ldn * cfg.hidden_size)));
        r.push(("dc0".into(), dl(&ws.dc0, ldn * cfg.hidden_size)));
    }
    if !c.onehot {
        r.push(("dx".into(), dl(&dx, d.x.len())));
    }
    let g = dl(&grads, d.params.len());
    for e in &stack.layout().entries {
        r.push((format!("d{}", e.name), g[e.range()].to_vec()));
    }
    r
}

/// Per tensor: (name, worst relative error, index of the worst element, value, reference).
fn worst(got: &Results, want: &Results) -> Vec<(String, f64, usize, f64, f64)> {
    let mut out = Vec::new();
    for ((name, a), (name2, b)) in got.iter().zip(want) {
        assert_eq!(name, name2);
        assert_eq!(a.len(), b.len(), "{name}: length");
        let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
        let mut w = (name.clone(), 0.0, 0, 0.0, 0.0);
        for (k, (&x, &y)) in a.iter().zip(b).enumerate() {
            let e = if x.is_nan() {
                f64::INFINITY
            } else {
                (x - y).abs() / scale
            };
            if e > w.1 || (k == 0 && e.is_nan()) {
                w = (name.clone(), e, k, x, y);
            }
        }
        out.push(w);
    }
    out
}

fn check(label: &str, got: &Results, want: &Results, c: &Case) -> f64 {
    let mut max = 0.0f64;
    for (name, e, k, x, y) in worst(got, want) {
        assert!(
            e <= TOL,
            "{label}: {name} off by {e:.3e} (relative to its max) at [{k}]: {x} vs {y}; case {c:?}"
        );
        max = max.max(e);
    }
    max
}

#[test]
fn cpu_f32_is_within_tolerance() {
    let mut max = 0.0f64;
    for c in cases(48) {
        let stack = Stack::new(c.cfg.clone()).unwrap();
        let d = data(&c, &stack);
        let want = cpu_run::<f64>(&c, &stack, &d);
        let got = cpu_run::<f32>(&c, &stack, &d);
        max = max.max(check("cpu f32", &got, &want, &c));
    }
    eprintln!("cpu f32 vs f64: worst relative error {max:.3e} (tolerance {TOL:.0e})");
}

#[test]
fn gpu_matches_cpu() {
    let gpu = match Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("skipping gpu_matches_cpu: {e}");
            return;
        }
    };
    eprintln!("gpu: {}", gpu.name());
    let (mut max_gpu, mut max_cpu) = (0.0f64, 0.0f64);
    // fewer cases under compute-sanitizer, which slows every launch down
    let n = std::env::var("RECUR_CUDA_TEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    for c in cases(n) {
        let stack = Stack::new(c.cfg.clone()).unwrap();
        let d = data(&c, &stack);
        let want = cpu_run::<f64>(&c, &stack, &d);
        let cpu = cpu_run::<f32>(&c, &stack, &d);
        max_cpu = max_cpu.max(check("cpu f32", &cpu, &want, &c));
        for (small, persistent) in [(0, false), (8, false), (8, true)] {
            let got = gpu_run(&gpu, &c, &stack, &d, small, persistent);
            max_gpu = max_gpu.max(check(
                &format!("gpu f32 (small_batch {small}, persistent {persistent})"),
                &got,
                &want,
                &c,
            ));
        }
    }
    eprintln!(
        "gpu f32 vs cpu f64: worst relative error {max_gpu:.3e}; cpu f32 vs f64: {max_cpu:.3e} (tolerance {TOL:.0e})"
    );
}
