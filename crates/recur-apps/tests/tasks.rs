//! The long-memory tasks: generators (shapes, ranges, the targets they promise), baselines
//! computed two ways (closed form against the data; constant velocity against a hand-made
//! parabola), and short training runs that must beat each baseline by a clear margin.

use recur::cell::CellKind;
use recur::engine::Cpu;
use recur::optim::OptimKind;
use recur::rng::Rng;
use recur::stack::StackConfig;
use recur::train::Run;
use recur_apps::tasks::train::{train, TrainSpec};
use recur_apps::tasks::{
    Inputs, Targets, Task, TaskKind, BALL_DT, BALL_G, COPY_ALPHABET, COPY_BLANK, COPY_DELIM,
    COPY_SYMBOLS,
};

/// Sequences for the empirical baselines.
const N_BIG: usize = 20_000;
/// Adding: the squared error of answering 1 has standard deviation ~0.197 per sequence, so its
/// mean over N_BIG sequences has a standard error of ~0.0014; 0.006 is four of them.
const ADDING_BASELINE_TOL: f64 = 0.006;
/// Copy: the empirical per-step class frequencies of N_BIG sequences underestimate the entropy of
/// 8 uniform symbols by about (8 - 1) / (2 N_BIG) = 1.75e-4 nats per symbol step; 1e-3 relative
/// leaves room for that and the sampling noise.
const COPY_BASELINE_REL_TOL: f64 = 1e-3;

#[test]
fn adding_generator_and_baseline() {
    let task = Task::new(TaskKind::Adding, 30).unwrap();
    let mut rng = Rng::new(3);
    let batch = task.sample(N_BIG, &mut rng);
    assert_eq!((batch.t, batch.b), (30, N_BIG));
    let (Inputs::Dense(x), Targets::Values(y)) = (&batch.inputs, &batch.targets) else {
        panic!("adding has dense inputs and values")
    };
    assert_eq!(x.len(), 30 * N_BIG * 2);
    assert_eq!(y.len(), N_BIG);
    for b in 0..N_BIG {
        let marks: Vec<usize> = (0..30)
            .filter(|&t| x[(t * N_BIG + b) * 2 + 1] != 0.0)
            .collect();
        assert_eq!(marks.len(), 2, "sequence {b}: markers at {marks:?}");
        assert!(
            marks[0] < 15 && marks[1] >= 15,
            "one marker per half: {marks:?}"
        );
        let sum: f32 = marks.iter().map(|&t| x[(t * N_BIG + b) * 2]).sum();
        assert_eq!(y[b], sum, "sequence {b}");
        for t in 0..30 {
            let v = x[(t * N_BIG + b) * 2];
            let m = x[(t * N_BIG + b) * 2 + 1];
            assert!((0.0..1.0).contains(&v) && (m == 0.0 || m == 1.0));
        }
    }
    // the closed form (variance of a sum of two U(0,1): 1/6) against the data
    let (s, n) = task.baseline_on(&batch);
    let emp = s / n as f64;
    let formula = task.baseline_formula().unwrap();
    assert!((formula - 1.0 / 6.0).abs() < 1e-15);
    assert!(
        (emp - formula).abs() < ADDING_BASELINE_TOL,
        "empirical {emp} vs {formula}"
    );
    // and the variance of the targets computed directly
    let mean = y.iter().map(|&v| v as f64).sum::<f64>() / N_BIG as f64;
    let var = y.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / N_BIG as f64;
    assert!(
        (var - formula).abs() < ADDING_BASELINE_TOL,
        "variance {var}"
    );
    assert!((mean - 1.0).abs() < 0.01, "mean {mean}");
}

#[test]
fn copy_generator_and_baseline() {
    for len in [1, 5, 40] {
        let task = Task::new(TaskKind::Copy, len).unwrap();
        let nt = len + 2 * COPY_SYMBOLS;
        assert_eq!(task.steps(), nt);
        let mut rng = Rng::new(len as u64);
        let nb = N_BIG;
        let batch = task.sample(nb, &mut rng);
        let (Inputs::Tokens(ids), Targets::Classes(tg)) = (&batch.inputs, &batch.targets) else {
            panic!("copy has tokens and classes")
        };
        assert_eq!((ids.len(), tg.len()), (nt * nb, nt * nb));
        for b in (0..nb).step_by(97) {
            let col = |v: &[u32]| (0..nt).map(|t| v[t * nb + b]).collect::<Vec<_>>();
            let (i, o) = (col(ids), col(tg));
            let syms = &i[..COPY_SYMBOLS];
            assert!(syms
                .iter()
                .all(|&s| (1..=COPY_ALPHABET as u32).contains(&s)));
            // T - 1 blanks, the delimiter, 10 blanks
            assert!(i[COPY_SYMBOLS..nt - COPY_SYMBOLS - 1]
                .iter()
                .all(|&s| s == COPY_BLANK));
            assert_eq!(i[nt - COPY_SYMBOLS - 1], COPY_DELIM);
            assert!(i[nt - COPY_SYMBOLS..].iter().all(|&s| s == COPY_BLANK));
            assert!(o[..nt - COPY_SYMBOLS].iter().all(|&s| s == COPY_BLANK));
            assert_eq!(&o[nt - COPY_SYMBOLS..], syms);
        }
        let (s, n) = task.baseline_on(&batch);
        let emp = s / n as f64;
        let formula = task.baseline_formula().unwrap();
        let direct = 10.0 * 8f64.ln() / (len as f64 + 20.0);
        assert!((formula - direct).abs() < 1e-15);
        assert!(
            (emp - formula).abs() < COPY_BASELINE_REL_TOL * formula,
            "T={len}: empirical {emp} vs {formula}"
        );
    }
}

#[test]
fn ball_generator_physics_and_baseline() {
    let task = Task::new(TaskKind::Ball, 60).unwrap();
    let mut rng = Rng::new(8);
    let paths: Vec<Vec<[f64; 2]>> = (0..200).map(|_| task.ball_path(&mut rng)).collect();
    let (mut free, mut total) = (0, 0);
    let drop = -BALL_G * BALL_DT * BALL_DT;
    for p in &paths {
        assert_eq!(p.len(), 61);
        for q in p {
            // inside the box; energy never grows (start below 0.9 with |vy| <= 0.5)
            assert!((0.0..=1.0).contains(&q[0]) && q[1] >= 0.0, "{q:?}");
            assert!(q[1] <= 0.9 + 0.25 / (2.0 * BALL_G) + 1e-12, "{q:?}");
        }
        for t in 1..60 {
            let ddx = p[t + 1][0] - 2.0 * p[t][0] + p[t - 1][0];
            let ddy = p[t + 1][1] - 2.0 * p[t][1] + p[t - 1][1];
            total += 1;
            if ddx.abs() < 1e-9 && (ddy - drop).abs() < 1e-9 {
                free += 1;
            }
        }
    }
    // most windows are free flight (exact parabola), the rest contain a bounce
    assert!(free * 10 > total * 6 && free < total, "{free} of {total}");

    let batch = task.ball_batch(&paths);
    let (Inputs::Dense(x), Targets::Values(y)) = (&batch.inputs, &batch.targets) else {
        panic!("ball has dense inputs and values")
    };
    let nb = paths.len();
    assert!(
        y[..nb * 2].iter().all(|v| v.is_nan()),
        "step 0 is not scored"
    );
    for t in 1..59 {
        for k in 0..nb * 2 {
            // target: the displacement to the next input, in units of dt
            let next = x[t * nb * 2 + k] as f64 + BALL_DT * y[t * nb * 2 + k] as f64;
            let want = x[(t + 1) * nb * 2 + k] as f64;
            assert!(
                (next - want).abs() < 1e-6,
                "step {t} element {k}: {next} vs {want}"
            );
        }
    }

    // constant velocity on a hand-made parabola: off by g dt^2 in y, exact in x
    let para: Vec<[f64; 2]> = (0..=60)
        .map(|t| {
            let s = t as f64 * BALL_DT;
            [0.1 + 0.01 * s, 50.0 + 0.3 * s - 0.5 * BALL_G * s * s]
        })
        .collect();
    let (s, n) = task.baseline_on(&task.ball_batch(&[para]));
    let want = drop * drop / 2.0;
    // positions go through f32 (~50 * 6e-8 = 3e-6 each), errors of ~1e-5 on a 5e-3 difference
    assert!(
        (s / n as f64 - want).abs() < 0.01 * want,
        "{} vs {want}",
        s / n as f64
    );
}

fn spec(task: Task, cell: &str, hidden: usize, steps: usize, lr: f64) -> TrainSpec {
    TrainSpec {
        task,
        rnn: StackConfig::new(CellKind::parse(cell).unwrap(), 0, hidden),
        optim: OptimKind::parse("adam", 0.0).unwrap(),
        lr,
        batch: 32,
        max_steps: steps,
        budget: None,
        clip: 1.0,
        eval_every: steps,
        eval_size: 256,
        seed: 5,
        carry_gate_bias: 0.0,
    }
}

#[test]
fn short_training_beats_the_adding_baseline() {
    let sp = spec(
        Task::new(TaskKind::Adding, 10).unwrap(),
        "lstm",
        16,
        600,
        1e-2,
    );
    let r = train(&sp, Run::on(&Cpu), &mut |_| true).unwrap();
    let m = r.metric();
    assert!(
        m < 0.25 * r.baseline,
        "adding T=10: mse {m} vs baseline {}",
        r.baseline
    );
}

#[test]
fn short_training_beats_the_copy_baseline() {
    // Copy learns slowly (10 random symbols to hold); any memoryless model scores at least the
    // baseline, so 10% below it needs memory.
    let sp = spec(Task::new(TaskKind::Copy, 5).unwrap(), "gru", 64, 2000, 3e-3);
    let r = train(&sp, Run::on(&Cpu), &mut |_| true).unwrap();
    let m = r.metric();
    assert!(
        m < 0.9 * r.baseline,
        "copy T=5: ce {m} vs baseline {}",
        r.baseline
    );
}

#[test]
fn short_training_beats_the_ball_baseline() {
    let sp = spec(Task::new(TaskKind::Ball, 30).unwrap(), "gru", 32, 400, 1e-2);
    let r = train(&sp, Run::on(&Cpu), &mut |_| true).unwrap();
    let m = r.metric();
    assert!(
        m < 0.5 * r.baseline,
        "ball: mse {m} vs baseline {}",
        r.baseline
    );
}

#[test]
fn the_callback_stops_training() {
    let mut sp = spec(
        Task::new(TaskKind::Adding, 8).unwrap(),
        "rnn_tanh",
        8,
        1000,
        1e-3,
    );
    sp.eval_every = 10;
    let mut seen = 0;
    let r = train(&sp, Run::on(&Cpu), &mut |_| {
        seen += 1;
        seen < 25
    })
    .unwrap();
    assert_eq!(r.reason.name(), "stopped");
    assert!(r.steps < 30, "{}", r.steps);
    assert!(r.metric().is_finite());
}

/// The glue between a trained adding model and the gradient-flow measurement: at distance 0 the
/// mean `||dL/dh_T||` must be the mean of `|2 (prediction - target)| * ||w||` with the model's own
/// predictions (decoder weight w, decoder bias moved into the target).
#[test]
fn adding_gradflow_uses_the_models_own_loss() {
    use recur_apps::tasks::train::{adding_gradflow, predict};
    let mut sp = spec(Task::new(TaskKind::Adding, 12).unwrap(), "gru", 8, 30, 1e-2);
    sp.eval_size = 32;
    let r = train(&sp, Run::on(&Cpu), &mut |_| true).unwrap();
    let g = adding_gradflow(&sp.task, &r.model, &r.params, 6, 77).unwrap();
    assert_eq!(g.norm.len(), 13);
    assert!((g.rel[0] - 1.0).abs() < 1e-12);
    let batch = sp.task.sample(6, &mut Rng::new(77));
    let pred = predict(&r.model, &r.params, &batch);
    let Targets::Values(y) = &batch.targets else {
        panic!()
    };
    let w = &r.params[r.model.layout().get("decoder.weight").unwrap().range()];
    let wn = w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    let want: f64 = (0..6)
        .map(|i| (2.0 * (pred[i] as f64 - y[i] as f64)).abs() * wn)
        .sum::<f64>()
        / 6.0;
    // f32 forward pass against the f64 one: agreement to ~1e-6 relative; 1e-4 leaves room
    assert!(
        (g.norm[0] - want).abs() <= 1e-4 * want,
        "{} vs {want}",
        g.norm[0]
    );
    // and it refuses the other tasks
    assert!(adding_gradflow(
        &Task::new(TaskKind::Ball, 5).unwrap(),
        &r.model,
        &r.params,
        2,
        1
    )
    .is_err());
}

/// A resumed run reports the weights its fresh start drew (for the gradient flow "through the
/// initial weights"), the same as the uninterrupted run's, and ends where that run ends.
#[test]
fn a_resumed_run_keeps_its_initial_weights() {
    use recur::checkpoint;
    use recur::train::LATEST;
    use recur_apps::tasks::train::resume;
    let dir = std::env::temp_dir().join(format!("recur-task-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let task = Task::new(TaskKind::Adding, 6).unwrap();
    let mut sp = spec(task, "gru", 8, 12, 1e-2);
    sp.eval_every = 4;
    sp.carry_gate_bias = 2.5;
    let whole = train(&sp, Run::on(&Cpu), &mut |_| true).unwrap();
    sp.max_steps = 4;
    train(&sp, Run::on(&Cpu).checkpoints(dir.clone()), &mut |_| true).unwrap();
    sp.max_steps = 12;
    // another carry-gate bias is another run
    let mut other = sp.clone();
    other.carry_gate_bias = 0.0;
    let ck = checkpoint::load(&dir.join(LATEST)).unwrap();
    let err = resume(&other, Run::on(&Cpu), ck, &mut |_| true).unwrap_err();
    assert!(
        err.to_string().contains("carry_gate_bias 2.5 vs 0.0"),
        "{err}"
    );
    let ck = checkpoint::load(&dir.join(LATEST)).unwrap();
    let rest = resume(&sp, Run::on(&Cpu).checkpoints(dir.clone()), ck, &mut |_| {
        true
    })
    .unwrap();
    assert_eq!(rest.initial, whole.initial);
    assert_eq!(rest.params, whole.params);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_carry_gate_bias_is_added_to_the_initial_forget_and_update_gates() {
    for cell in ["lstm", "gru", "rnn_tanh"] {
        let task = Task::new(TaskKind::Adding, 5).unwrap();
        let mut sp = spec(task, cell, 6, 1, 1e-3);
        let plain = train(&sp, Run::on(&Cpu), &mut |_| true).unwrap();
        sp.carry_gate_bias = 3.0;
        let open = train(&sp, Run::on(&Cpu), &mut |_| true).unwrap();
        let layout = recur::model::Model::new(sp.task.model_config(sp.rnn.clone()))
            .unwrap()
            .layout()
            .clone();
        let rows = match layout.get("rnn.bias_ih_l0") {
            Some(b) if cell != "rnn_tanh" => b.range().start + 6..b.range().start + 12,
            _ => 0..0,
        };
        for (i, (&a, &b)) in plain.initial.iter().zip(&open.initial).enumerate() {
            let want = if rows.contains(&i) { a + 3.0 } else { a };
            assert_eq!(b, want, "{cell} parameter {i}");
        }
    }
}
