//! The streaming API (`recur::stream::Streamer`) against the whole-sequence forward: the same
//! model fed one step at a time, or in uneven chunks, with the state carried between calls, must
//! give the whole sequence's outputs and final states.

#[path = "support/close.rs"]
mod close;

use close::{assert_close, worst};
use recur::cell::{Activation, CellKind};
use recur::model::{Head, Input, InputKind, Model, ModelConfig};
use recur::rng::Rng;
use recur::stack::StackConfig;
use recur::stream::{Carry, Streamer};

/// Streamed against whole: worst |a - b| relative to the tensor's largest |b|.
///
/// A chunk of T steps runs the same operations as the whole sequence does for those steps: the
/// recurrence and the element-wise gate passes are the same code on the same numbers, and one-hot
/// and embedding inputs are copies; the LSTM with a projection (the simple driver) comes out
/// bit-identical. What differs is the row count, T*B, of two products made by the `gemm` crate:
/// the input product `X W_ih^T` (dense input, and every layer above the first) and the decoder.
/// The crate picks its kernel by the matrix's shape, and a kernel for a few rows sums a dot
/// product's terms in another order (or fuses its multiply-adds differently) than the one for
/// many: measured here, with B < 8 streams the stack's outputs differ by up to 1.7e-7, and the
/// logits by up to 2.7e-7 for any B (one step is B rows, the whole sequence 17*B), while with
/// 8 or more streams and one-hot or embedding input the stack's outputs are bit-identical. That
/// is one f32 rounding (6e-8) per term of a dot product of at most 24 terms, carried through
/// at most 17 steps of a contracting recurrence. 1e-6 leaves a margin of 4 over the worst seen
/// and stays orders of magnitude below a real mistake (a state not carried, a step dropped or
/// repeated gives errors of order 1e-2 to 1).
const STREAM_REL_TOL: f64 = 1e-6;

/// The uneven chunks the tests cut a 17-step sequence into.
const CHUNKS: [usize; 6] = [3, 1, 5, 2, 1, 5];
const T: usize = 17;

struct Case {
    name: &'static str,
    cfg: ModelConfig,
    b: usize,
}

fn cases() -> Vec<Case> {
    let lstm = StackConfig::new(CellKind::Lstm, 0, 24);
    vec![
        Case {
            name: "rnn_tanh one-hot",
            cfg: ModelConfig::char_model(
                11,
                0,
                StackConfig::new(CellKind::Rnn(Activation::Tanh), 0, 16),
            ),
            b: 3,
        },
        Case {
            name: "rnn_relu dense 2 layers",
            cfg: ModelConfig::dense(
                5,
                StackConfig::new(CellKind::Rnn(Activation::Relu), 5, 12).with_layers(2),
                4,
                Head::StepRegression,
            ),
            b: 2,
        },
        Case {
            name: "lstm embedding",
            cfg: ModelConfig::char_model(13, 6, lstm.clone()),
            b: 4,
        },
        Case {
            name: "lstm dense",
            cfg: ModelConfig::dense(7, lstm.clone(), 3, Head::StepClasses),
            b: 1,
        },
        Case {
            name: "lstm dense 8 streams",
            // 8 or more streams: inference computes the input product on the packed-panel
            // kernel (with AVX-512), the whole forward with the gemm crate
            cfg: ModelConfig::dense(7, lstm.clone(), 3, Head::StepRegression),
            b: 9,
        },
        Case {
            name: "lstm proj_size 2 layers",
            cfg: ModelConfig::dense(
                6,
                lstm.clone().with_proj_size(10).with_layers(2),
                5,
                Head::StepClasses,
            ),
            b: 3,
        },
        Case {
            name: "gru one-hot 2 layers",
            cfg: ModelConfig::char_model(
                9,
                0,
                StackConfig::new(CellKind::Gru, 0, 20).with_layers(2),
            ),
            b: 2,
        },
        Case {
            name: "gru dense",
            cfg: ModelConfig::dense(
                4,
                StackConfig::new(CellKind::Gru, 4, 24),
                6,
                Head::StepRegression,
            ),
            b: 8,
        },
    ]
}

/// A random input of `t` steps for `b` streams: token ids or vectors in [-1, 1).
enum Data {
    Tokens(Vec<u32>),
    Dense(Vec<f32>),
}

impl Data {
    fn random(cfg: &ModelConfig, t: usize, b: usize, rng: &mut Rng) -> Data {
        match cfg.input {
            InputKind::Dense => Data::Dense(
                (0..t * b * cfg.input_size)
                    .map(|_| rng.uniform_in(-1.0, 1.0) as f32)
                    .collect(),
            ),
            _ => Data::Tokens(
                (0..t * b)
                    .map(|_| rng.below(cfg.input_size as u64) as u32)
                    .collect(),
            ),
        }
    }

    /// Steps `s0..s1` (each step B ids or B*I values).
    fn steps(&self, s0: usize, s1: usize, per_step: usize) -> Input<'_, f32> {
        match self {
            Data::Tokens(ids) => Input::Tokens(&ids[s0 * per_step..s1 * per_step]),
            Data::Dense(x) => Input::Dense(&x[s0 * per_step..s1 * per_step]),
        }
    }
}

fn random_state(model: &Model, b: usize, rng: &mut Rng) -> Carry {
    let mut c = Carry::zeros(model, b);
    for v in c.h.iter_mut().chain(c.c.iter_mut()) {
        *v = rng.uniform_in(-0.8, 0.8) as f32;
    }
    c
}

/// The whole-sequence forward (training-mode workspace, as a user would run it): logits, top
/// outputs, h_n, c_n.
fn whole(
    model: &Model,
    params: &[f32],
    data: &Data,
    b: usize,
    init: &Carry,
) -> (Vec<f32>, Vec<f32>, Carry) {
    let mut ws = model.workspace(T, b);
    let (h0, c0) = init.as_init();
    let per_step = step_len(model.cfg(), b);
    model.forward(
        &mut ws,
        params,
        data.steps(0, T, per_step),
        h0,
        c0,
        None,
        None,
    );
    let mut fin = Carry::zeros(model, b);
    fin.take_from(&ws);
    (ws.logits.clone(), ws.stack.output().to_vec(), fin)
}

fn step_len(cfg: &ModelConfig, b: usize) -> usize {
    match cfg.input {
        InputKind::Dense => b * cfg.input_size,
        _ => b,
    }
}

/// Streams `data` cut into `chunks` (summing to T) from `init`: logits and top outputs of all
/// steps, concatenated.
fn streamed(s: &mut Streamer, data: &Data, chunks: &[usize], init: &Carry) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(chunks.iter().sum::<usize>(), T);
    s.set_state(init.clone()).unwrap();
    let per_step = step_len(s.model().cfg(), s.batch());
    let (mut logits, mut outs) = (Vec::new(), Vec::new());
    let mut s0 = 0;
    for &t in chunks {
        let input = data.steps(s0, s0 + t, per_step);
        let l = if t == 1 {
            s.step(input)
        } else {
            s.chunk(input, t)
        };
        logits.extend_from_slice(l);
        outs.extend_from_slice(s.outputs());
        s0 += t;
    }
    (logits, outs)
}

#[test]
fn streaming_matches_the_whole_sequence() {
    for (k, case) in cases().into_iter().enumerate() {
        let mut worst_seen = 0.0f64;
        let model = Model::new(case.cfg.clone()).unwrap();
        let mut rng = Rng::new(100 + k as u64);
        let mut params = vec![0.0f32; model.num_params()];
        model.init(&mut params, &mut rng);
        let data = Data::random(&case.cfg, T, case.b, &mut rng);
        let mut s = Streamer::new(&model, &params, case.b).unwrap();
        for init in [
            Carry::zeros(&model, case.b),
            random_state(&model, case.b, &mut rng),
        ] {
            let (logits, outs, fin) = whole(&model, &params, &data, case.b, &init);
            for (how, chunks) in [
                ("one step at a time", vec![1; T]),
                ("chunks", CHUNKS.to_vec()),
            ] {
                let what = format!("{} ({how})", case.name);
                let (sl, so) = streamed(&mut s, &data, &chunks, &init);
                let st = s.state();
                assert_close(
                    &what,
                    &[
                        ("logits", &sl[..], &logits[..]),
                        ("outputs", &so[..], &outs[..]),
                        ("h_n", &st.h[..], &fin.h[..]),
                        ("c_n", &st.c[..], &fin.c[..]),
                    ],
                    STREAM_REL_TOL,
                );
                for (a, b) in [
                    (&sl, &logits),
                    (&so, &outs),
                    (&st.h, &fin.h),
                    (&st.c, &fin.c),
                ] {
                    worst_seen = worst_seen.max(worst::<f32>(a, b).0);
                }
            }
        }
        println!(
            "{:24} worst relative difference streamed vs whole {worst_seen:.1e}",
            case.name
        );
    }
}

/// The same stream twice, with a reset between: the same numbers (the kept workspaces and
/// packed weights change nothing).
#[test]
fn reset_starts_the_stream_again() {
    let cfg = ModelConfig::char_model(10, 4, StackConfig::new(CellKind::Lstm, 0, 8));
    let model = Model::new(cfg.clone()).unwrap();
    let mut rng = Rng::new(7);
    let mut params = vec![0.0f32; model.num_params()];
    model.init(&mut params, &mut rng);
    let data = Data::random(&cfg, T, 2, &mut rng);
    let mut s = Streamer::new(&model, &params, 2).unwrap();
    let run = |s: &mut Streamer| {
        let mut out = Vec::new();
        let mut s0 = 0;
        for &t in &CHUNKS {
            out.extend_from_slice(s.chunk(data.steps(s0, s0 + t, 2), t));
            s0 += t;
        }
        out
    };
    let first = run(&mut s);
    assert_ne!(s.state(), &Carry::zeros(&model, 2));
    s.reset();
    assert_eq!(s.state(), &Carry::zeros(&model, 2));
    assert_eq!(run(&mut s), first);
}

/// A last-step head streamed: after the last chunk, its outputs are the whole sequence's (the
/// classification of everything fed so far).
#[test]
fn last_step_head_gives_the_prefix_result() {
    let cfg = ModelConfig::dense(
        3,
        StackConfig::new(CellKind::Gru, 3, 10),
        4,
        Head::LastClasses,
    );
    let model = Model::new(cfg.clone()).unwrap();
    let mut rng = Rng::new(3);
    let mut params = vec![0.0f32; model.num_params()];
    model.init(&mut params, &mut rng);
    let b = 2;
    let data = Data::random(&cfg, T, b, &mut rng);
    let zero = Carry::zeros(&model, b);
    let (logits, _, fin) = whole(&model, &params, &data, b, &zero);
    assert_eq!(logits.len(), b * 4);
    let mut s = Streamer::new(&model, &params, b).unwrap();
    let (sl, _) = streamed(&mut s, &data, &CHUNKS, &zero);
    // one (B, V) block per chunk; the last is the whole sequence's
    assert_eq!(sl.len(), CHUNKS.len() * b * 4);
    assert_close(
        "last-step head",
        &[
            ("logits", &sl[sl.len() - b * 4..], &logits[..]),
            ("h_n", &s.state().h[..], &fin.h[..]),
        ],
        STREAM_REL_TOL,
    );
}

#[test]
fn refusals() {
    let bi = ModelConfig::dense(
        3,
        StackConfig::new(CellKind::Lstm, 3, 4).with_bidirectional(true),
        2,
        Head::StepRegression,
    );
    let model = Model::new(bi).unwrap();
    let params = vec![0.0f32; model.num_params()];
    let err = Streamer::new(&model, &params, 1).err().unwrap();
    assert!(err.to_string().contains("bidirectional"), "{err}");

    let model = Model::new(ModelConfig::char_model(
        5,
        0,
        StackConfig::new(CellKind::Lstm, 0, 4).with_layers(2),
    ))
    .unwrap();
    let params = vec![0.0f32; model.num_params()];
    assert!(Streamer::new(&model, &params[1..], 1).is_err());
    assert!(Streamer::new(&model, &params, 0).is_err());
    let mut s = Streamer::new(&model, &params, 3).unwrap();
    assert!(s.logits().is_empty() && s.outputs().is_empty());
    // a state for 2 streams does not fit 3
    let err = s.set_state(Carry::zeros(&model, 2)).unwrap_err();
    assert!(err.to_string().contains("3 streams"), "{err}");
    assert_eq!(s.state().h.len(), 2 * 3 * 4);
    assert_eq!(s.state().c.len(), 2 * 3 * 4);
}
