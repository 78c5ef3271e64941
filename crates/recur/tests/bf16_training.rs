//! Training in bf16 (mixed precision, `Engine::set_precision(Precision::Bf16)` on a training
//! engine): the gradients of LSTM, GRU and RNN stacks with a dense input, dropout and a head
//! against float32's on the same rounded weights (close, as bf16 rounding allows, and not the
//! same: the bf16 path runs); a tanh RNN's, an LSTM's and a GRU's bf16 gradients against a
//! forward and backward written out here in f64 with the same roundings (states, the logits'
//! and the gates' gradients); the engine's float32 master weights (what it returns and the
//! optimizer updates) and the bf16 copy it computes with; int8 refused for training. The f64
//! reference covers an LSTM with a projection too (the simple driver).

use recur::cell::CellKind;
use recur::engine::{Backend, Batch, Cpu, Engine, LossTargets, Start};
use recur::model::{Head, Input, Model, ModelConfig};
use recur::ops::bf16::round;
use recur::optim::{OptimKind, Optimizer};
use recur::precision::prepare_weights;
use recur::rng::Rng;
use recur::stack::StackConfig;
use recur::Precision;

/// bf16 against float32 gradients of the same rounded weights, relative to each tensor's
/// largest: every state and every gate gradient is rounded to 8 significant bits (2^-9
/// relative), and the differences add up over the steps and layers. Measured on these sizes:
/// at most 1.3e-2 (a bias of the head or of a layer).
const GRAD_REL_TOL: f64 = 5e-2;

const T: usize = 6;
const B: usize = 4;
const I: usize = 10;
const V: usize = 5;

fn model(kind: CellKind) -> Model {
    let rnn = StackConfig::new(kind, I, 24)
        .with_layers(2)
        .with_dropout(0.2);
    Model::new(ModelConfig::dense(I, rnn, V, Head::StepClasses)).unwrap()
}

/// Gradients of the mean cross-entropy after one forward in `p` on `params` (dropout masks
/// from the same seed).
fn grads(model: &Model, params: &[f32], x: &[f32], targets: &[u32], p: Precision) -> Vec<f32> {
    let mut ws = model.workspace::<f32>(T, B);
    ws.set_precision(p);
    let mut masks = Rng::new(3);
    model.forward(
        &mut ws,
        params,
        Input::Dense(x),
        None,
        None,
        None,
        Some(&mut masks),
    );
    if p == Precision::Bf16 {
        // every layer's output and the head's input are bf16 values
        assert!(ws.stack.output().iter().all(|&v| round(v) == v));
    }
    model.loss(&mut ws, targets, 1.0 / (T * B) as f32);
    let mut g = vec![0f32; params.len()];
    model.backward(
        &mut ws,
        params,
        &mut g,
        Input::Dense(x),
        None,
        None,
        None,
        None,
    );
    g
}

#[test]
fn bf16_gradients_follow_float32_within_bf16_rounding() {
    for kind in [
        CellKind::Lstm,
        CellKind::Gru,
        CellKind::parse("rnn_tanh").unwrap(),
    ] {
        let m = model(kind);
        let mut rng = Rng::new(11);
        let mut params = vec![0f32; m.num_params()];
        m.init(&mut params, &mut rng);
        prepare_weights(m.layout(), &mut params, Precision::Bf16);
        let x: Vec<f32> = (0..T * B * I).map(|_| rng.normal() as f32).collect();
        let targets: Vec<u32> = (0..T * B).map(|i| (i * 7 % V) as u32).collect();
        let g32 = grads(&m, &params, &x, &targets, Precision::F32);
        let g16 = grads(&m, &params, &x, &targets, Precision::Bf16);
        assert_ne!(g32, g16, "{kind:?}: bf16 computed what float32 did");
        for e in &m.layout().entries {
            let (a, b) = (&g16[e.range()], &g32[e.range()]);
            let scale = b.iter().fold(1e-12f64, |s, &v| s.max(v.abs() as f64));
            let worst = a
                .iter()
                .zip(b)
                .map(|(&p, &q)| (p as f64 - q as f64).abs())
                .fold(0.0, f64::max);
            eprintln!("{kind:?} {}: {:e}", e.name, worst / scale);
            assert!(
                worst / scale <= GRAD_REL_TOL,
                "{kind:?} {}: bf16 gradient off by {:e} of its largest",
                e.name,
                worst / scale
            );
        }
    }
}

fn engine_pair() -> (Box<dyn Engine>, Vec<f32>, Vec<f32>, Vec<u32>) {
    let m = model(CellKind::Lstm);
    let mut rng = Rng::new(5);
    let mut params = vec![0f32; m.num_params()];
    m.init(&mut params, &mut rng);
    let x: Vec<f32> = (0..T * B * I).map(|_| rng.normal() as f32).collect();
    let targets: Vec<u32> = (0..T * B).map(|i| (i * 3 % V) as u32).collect();
    let opt = Optimizer::new(OptimKind::parse("adam", 0.0).unwrap(), 1e-2, params.len());
    let mut eng = Cpu.engine(m, params.clone(), Some(opt)).unwrap();
    eng.set_precision(Precision::Bf16).unwrap();
    (eng, params, x, targets)
}

#[test]
fn the_engine_updates_float32_master_weights_and_computes_with_their_bf16_copy() {
    let (mut eng, start, x, targets) = engine_pair();
    // what it returns are the float32 weights it was given, not their rounding
    assert_eq!(eng.params().unwrap().as_ref(), &start[..]);
    let mut master = start.clone();
    let mut opt = Optimizer::new(OptimKind::parse("adam", 0.0).unwrap(), 1e-2, start.len());
    let mut rng = Rng::new(1);
    let mut losses = Vec::new();
    for _ in 0..20 {
        let batch = Batch::dense(&x, T, B);
        eng.forward(&batch, Start::Zero, Some(&mut rng)).unwrap();
        let (l, n) = eng
            .loss(LossTargets::Classes(&targets), 1.0 / (T * B) as f32)
            .unwrap();
        losses.push(l / n as f64);
        eng.backward(&batch).unwrap();
        let g = eng.grads().unwrap().into_owned();
        eng.update(1e-2).unwrap();
        // the engine's update is the optimizer's on the master weights, with bf16 gradients
        opt.update(&mut master, &g);
        assert_eq!(eng.params().unwrap().as_ref(), &master[..]);
    }
    // master weights move by less than a bf16 step: they are not rounded
    let weights = eng.params().unwrap().into_owned();
    assert!(weights.iter().any(|&v| round(v) != v));
    assert!(
        losses[19] < losses[0] - 0.2,
        "bf16 training did not learn: {losses:?}"
    );
    // a forward in bf16 on the master weights is what the engine computes with
    let m = model(CellKind::Lstm);
    let mut ws = m.workspace::<f32>(T, B);
    ws.set_precision(Precision::Bf16);
    let mut rounded = weights.clone();
    prepare_weights(m.layout(), &mut rounded, Precision::Bf16);
    m.forward(&mut ws, &rounded, Input::Dense(&x), None, None, None, None);
    let batch = Batch::dense(&x, T, B);
    eng.forward(&batch, Start::Zero, None).unwrap();
    assert_eq!(eng.logits().unwrap().as_ref(), &ws.logits[..]);
}

#[test]
fn int8_does_not_train() {
    let m = model(CellKind::Gru);
    let n = m.num_params();
    let opt = Optimizer::new(OptimKind::parse("sgd", 0.0).unwrap(), 1e-2, n);
    let mut eng = Cpu.engine(m, vec![0.01; n], Some(opt)).unwrap();
    let e = eng.set_precision(Precision::Int8).unwrap_err().to_string();
    assert!(e.contains("int8 runs inference only"), "{e}");
}

/// A one-layer tanh RNN, LSTM or GRU with a per-step head, forward and backward written out here in
/// f64 (PyTorch's equations) with bf16 rounding where the library's bf16 training rounds: the
/// input and weights (given as bf16 values), every state h (the derivatives use the unrounded
/// activations and cell state), the logits' gradient and the gates' gradient dG. Returns the
/// gradients by tensor name; `round_dg: false` leaves dG unrounded (to show the comparison can
/// tell).
#[allow(clippy::too_many_arguments)]
fn reference(
    kind: &str,
    m: &Model,
    p: &[f32],
    x: &[f32],
    targets: &[u32],
    (t, b, i, h, v): (usize, usize, usize, usize, usize),
    round_dg: bool,
) -> Vec<(String, Vec<f64>)> {
    // "lstmp": an LSTM with a projection to P = h - 3 (h_t = W_hr (o * tanh(c_t)), both sides
    // of it rounded, and its gradient rounded before its two products)
    let proj = kind == "lstmp";
    let p_ = if proj { h - 3 } else { h };
    let get = |name: &str| -> Vec<f64> {
        p[m.layout().get(name).unwrap().range()]
            .iter()
            .map(|&w| w as f64)
            .collect()
    };
    let r16 = |x: f64| round(x as f32) as f64;
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let (lstm, gru) = (kind == "lstm" || proj, kind == "gru");
    let g = match kind {
        "lstm" | "lstmp" => 4,
        "gru" => 3,
        _ => 1,
    };
    let gh = g * h;
    let (wih, whh, bih, bhh, wo, bo) = (
        get("rnn.weight_ih_l0"),
        get("rnn.weight_hh_l0"),
        get("rnn.bias_ih_l0"),
        get("rnn.bias_hh_l0"),
        get("decoder.weight"),
        get("decoder.bias"),
    );
    let whr = if proj {
        get("rnn.weight_hr_l0")
    } else {
        Vec::new()
    };
    // forward: each row's activations (G*H: the RNN's tanh, or the LSTM's i, f, g, o), cell
    // states (c[0] = zeros) and states h, rounded (hs[0] = zeros, hs[s+1] = step s's)
    let mut act = vec![0.0; t * b * gh];
    // the GRU's W_hn h + b_hn, which r multiplies
    let mut hn = vec![0.0; t * b * h];
    let mut cs = vec![0.0; (t + 1) * b * h];
    let mut hs = vec![0.0; (t + 1) * b * p_];
    // with a projection: o * tanh(c_t), rounded, per row
    let mut hf = vec![0.0; t * b * h];
    for s in 0..t {
        for r in 0..b {
            let row = s * b + r;
            // the input's and the state's sides of every gate
            let side = |w: &[f64], bias: &[f64], v: &dyn Fn(usize) -> f64, k_n: usize| {
                (0..gh)
                    .map(|j| bias[j] + (0..k_n).map(|k| w[j * k_n + k] * v(k)).sum::<f64>())
                    .collect::<Vec<f64>>()
            };
            let px = side(&wih, &bih, &|k| x[row * i + k] as f64, i);
            let ph = side(&whh, &bhh, &|k| hs[row * p_ + k], p_);
            let pre: Vec<f64> = px.iter().zip(&ph).map(|(a, b)| a + b).collect();
            for u in 0..h {
                let y = if gru {
                    let (rg, zg) = (sig(pre[u]), sig(pre[h + u]));
                    let ng = (px[2 * h + u] + rg * ph[2 * h + u]).tanh();
                    for (q, val) in [rg, zg, ng].into_iter().enumerate() {
                        act[row * gh + q * h + u] = val;
                    }
                    hn[row * h + u] = ph[2 * h + u];
                    (1.0 - zg) * ng + zg * hs[row * h + u]
                } else if lstm {
                    let (ig, fg) = (sig(pre[u]), sig(pre[h + u]));
                    let (gg, og) = (pre[2 * h + u].tanh(), sig(pre[3 * h + u]));
                    for (q, val) in [ig, fg, gg, og].into_iter().enumerate() {
                        act[row * gh + q * h + u] = val;
                    }
                    let c = fg * cs[row * h + u] + ig * gg;
                    cs[(row + b) * h + u] = c;
                    og * c.tanh()
                } else {
                    act[row * gh + u] = pre[u].tanh();
                    pre[u].tanh()
                };
                if proj {
                    hf[row * h + u] = r16(y);
                } else {
                    hs[(row + b) * h + u] = r16(y);
                }
            }
            if proj {
                for j in 0..p_ {
                    let y: f64 = (0..h).map(|u| whr[j * h + u] * hf[row * h + u]).sum();
                    hs[(row + b) * p_ + j] = r16(y);
                }
            }
        }
    }
    // the head and the logits' gradient of the mean cross-entropy, rounded
    let n = (t * b) as f64;
    let (mut dwo, mut dbo) = (vec![0.0; v * p_], vec![0.0; v]);
    let mut dy = vec![0.0; t * b * p_];
    for row in 0..t * b {
        let hrow = &hs[(b + row) * p_..(b + row + 1) * p_];
        let logits: Vec<f64> = (0..v)
            .map(|c| bo[c] + (0..p_).map(|k| wo[c * p_ + k] * hrow[k]).sum::<f64>())
            .collect();
        let mx = logits.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = logits.iter().map(|l| (l - mx).exp()).sum();
        for c in 0..v {
            let onehot = if targets[row] as usize == c { 1.0 } else { 0.0 };
            let d = r16(((logits[c] - mx).exp() / z - onehot) / n);
            dbo[c] += d;
            for k in 0..p_ {
                dwo[c * p_ + k] += d * hrow[k];
                dy[row * p_ + k] += d * wo[c * p_ + k];
            }
        }
    }
    // BPTT
    let (mut dwih, mut dwhh, mut db) = (vec![0.0; gh * i], vec![0.0; gh * p_], vec![0.0; gh]);
    let (mut dhn, mut dcn) = (vec![0.0; b * p_], vec![0.0; b * h]);
    let mut dwhr = vec![0.0; p_ * h];
    let mut dbh = vec![0.0; gh];
    for s in (0..t).rev() {
        // dG: the input side's gates' gradients; dGh: the state side's (the GRU's n differs)
        let mut dg = vec![0.0; b * gh];
        let mut dgh = vec![0.0; b * gh];
        let mut direct = vec![0.0; b * p_];
        for r in 0..b {
            let row = s * b + r;
            // with a projection: dL/dh_t rounded, then through W_hr to o * tanh(c_t)
            let mut dfull = vec![0.0; h];
            if proj {
                for j in 0..p_ {
                    let dp = r16(dy[row * p_ + j] + dhn[r * p_ + j]);
                    for u in 0..h {
                        dfull[u] += dp * whr[j * h + u];
                        dwhr[j * h + u] += dp * hf[row * h + u];
                    }
                }
            }
            for u in 0..h {
                let dh = if proj {
                    dfull[u]
                } else {
                    dy[row * h + u] + dhn[r * h + u]
                };
                let a = |q: usize| act[row * gh + q * h + u];
                let grads: Vec<f64> = if gru {
                    let (rg, zg, ng) = (a(0), a(1), a(2));
                    direct[r * h + u] = dh * zg;
                    let dn = dh * (1.0 - zg) * (1.0 - ng * ng);
                    let dr = dn * hn[row * h + u] * rg * (1.0 - rg);
                    let dz = dh * (hs[row * h + u] - ng) * zg * (1.0 - zg);
                    let rd = |d: f64| if round_dg { r16(d) } else { d };
                    dgh[r * gh + u] = rd(dr);
                    dgh[r * gh + h + u] = rd(dz);
                    dgh[r * gh + 2 * h + u] = rd(dn * rg);
                    vec![dr, dz, dn]
                } else if lstm {
                    let (ig, fg, gg, og) = (a(0), a(1), a(2), a(3));
                    let tc = cs[(row + b) * h + u].tanh();
                    let dc = dcn[r * h + u] + dh * og * (1.0 - tc * tc);
                    dcn[r * h + u] = dc * fg;
                    vec![
                        dc * gg * ig * (1.0 - ig),
                        dc * cs[row * h + u] * fg * (1.0 - fg),
                        dc * ig * (1.0 - gg * gg),
                        dh * tc * og * (1.0 - og),
                    ]
                } else {
                    vec![dh * (1.0 - a(0) * a(0))]
                };
                for (q, d) in grads.into_iter().enumerate() {
                    dg[r * gh + q * h + u] = if round_dg { r16(d) } else { d };
                }
            }
        }
        if !gru {
            dgh.copy_from_slice(&dg);
        }
        dhn.copy_from_slice(&direct);
        for r in 0..b {
            let row = s * b + r;
            for j in 0..gh {
                let (d, dhs) = (dg[r * gh + j], dgh[r * gh + j]);
                db[j] += d;
                dbh[j] += dhs;
                for k in 0..i {
                    dwih[j * i + k] += d * x[row * i + k] as f64;
                }
                for k in 0..p_ {
                    dwhh[j * p_ + k] += dhs * hs[row * p_ + k];
                    dhn[r * p_ + k] += dhs * whh[j * p_ + k];
                }
            }
        }
    }
    let mut out = vec![
        ("rnn.weight_ih_l0".into(), dwih),
        ("rnn.weight_hh_l0".into(), dwhh),
        ("rnn.bias_ih_l0".into(), db),
        ("rnn.bias_hh_l0".into(), dbh),
        ("decoder.weight".into(), dwo),
        ("decoder.bias".into(), dbo),
    ];
    if proj {
        out.push(("rnn.weight_hr_l0".into(), dwhr));
    }
    out
}

/// The library's bf16 gradients against the f64 reference with the same roundings, relative to
/// each tensor's largest: float32 sums against f64 ones (a bf16 rounding that falls the other
/// way would show as about 4e-3; none does on these sizes).
const REF_REL_TOL: f64 = 1e-5;

#[test]
fn bf16_backward_matches_a_reference_with_the_same_roundings() {
    let (t, b, i, h, v) = (5, 3, 6, 8, 5);
    for kind in ["rnn_tanh", "lstm", "gru", "lstmp"] {
        let cell = CellKind::parse(kind.trim_end_matches('p')).unwrap();
        let proj = if kind == "lstmp" { h - 3 } else { 0 };
        let rnn = StackConfig::new(cell, i, h).with_proj_size(proj);
        let m = Model::new(ModelConfig::dense(i, rnn, v, Head::StepClasses)).unwrap();
        let mut rng = Rng::new(21);
        let mut params = vec![0f32; m.num_params()];
        m.init(&mut params, &mut rng);
        prepare_weights(m.layout(), &mut params, Precision::Bf16);
        let x: Vec<f32> = (0..t * b * i).map(|_| round(rng.normal() as f32)).collect();
        let targets: Vec<u32> = (0..t * b).map(|k| (k * 3 % v) as u32).collect();
        let mut ws = m.workspace::<f32>(t, b);
        ws.set_precision(Precision::Bf16);
        m.forward(&mut ws, &params, Input::Dense(&x), None, None, None, None);
        m.loss(&mut ws, &targets, 1.0 / (t * b) as f32);
        let mut g = vec![0f32; params.len()];
        m.backward(
            &mut ws,
            &params,
            &mut g,
            Input::Dense(&x),
            None,
            None,
            None,
            None,
        );
        let worst = |reference: &[(String, Vec<f64>)]| {
            reference
                .iter()
                .map(|(name, want)| {
                    let got = &g[m.layout().get(name).unwrap().range()];
                    let scale = want.iter().fold(1e-30f64, |s, w| s.max(w.abs()));
                    got.iter()
                        .zip(want)
                        .map(|(&a, &w)| (a as f64 - w).abs() / scale)
                        .fold(0.0, f64::max)
                })
                .fold(0.0, f64::max)
        };
        let dims = (t, b, i, h, v);
        let same = worst(&reference(kind, &m, &params, &x, &targets, dims, true));
        let unrounded = worst(&reference(kind, &m, &params, &x, &targets, dims, false));
        eprintln!("{kind}: against the reference {same:e}; without dG rounded {unrounded:e}");
        assert!(
            same <= REF_REL_TOL,
            "{kind}: bf16 backward off the reference by {same:e}"
        );
        // the comparison can tell a missing rounding of dG
        assert!(unrounded > 10.0 * REF_REL_TOL, "{kind}: {unrounded:e}");
    }
}

/// `copy_rounded` (the engine's copy of its master weights after each update, split over the
/// threads) gives the bits of a plain copy followed by `round_weights`, on a model large enough
/// to be split into parts whose edges fall inside its matrices, on one thread and on two.
#[test]
fn the_rounded_copy_of_the_master_weights_is_a_copy_then_a_rounding() {
    let rnn = StackConfig::new(CellKind::Lstm, 100, 200).with_layers(2);
    let m = Model::new(ModelConfig::dense(100, rnn, 7, Head::StepClasses)).unwrap();
    let n = m.num_params();
    assert!(n > 4 << 16, "the model is split into several parts: {n}");
    let mut rng = Rng::new(9);
    let mut src: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * 0.3).collect();
    src[3] = f32::NAN;
    src[n - 1] = f32::INFINITY;
    let mut want = src.clone();
    recur::precision::round_weights(m.layout(), &mut want);
    // the vectors are copied unrounded, so the two differ from a rounding of everything
    assert!(want
        .iter()
        .zip(&src)
        .any(|(a, b)| a.to_bits() == b.to_bits() && round(*b) != *b));
    for threads in [1, 2] {
        recur::set_threads(threads);
        let mut got = vec![f32::NAN; n];
        recur::precision::copy_rounded(m.layout(), &src, &mut got);
        let bad = got
            .iter()
            .zip(&want)
            .position(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(bad, None, "{threads} thread(s): first difference");
    }
}
