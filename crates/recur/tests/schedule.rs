//! Every schedule the fast driver can be made to take (`recur::cell::schedule`, what
//! `recur bench --tune` times) computes the same thing: split by rows or by units, the results
//! are bit for bit those of the driver's own choice (each element is one thread's, summed in the
//! same order); with the input product in chunks (inference) they agree within float32 rounding
//! (the chunks run on the packed kernel, the one product on the `gemm` crate). In bf16 inference,
//! each panel format (W_hh as float32 panels of the rounded weights, or as bf16 panels) gives
//! the same bits under either split; the two formats give the same bits as each other where the
//! bf16 kernel widens the weights, and agree within a few bf16 roundings where it multiplies bf16
//! directly (`vdpbf16ps` adds a pair's products in its own order, AMX tiles in theirs). int8 gives the same bits
//! under either split. One test, so that the process-wide override meets no other test's
//! products.

use recur::cell::schedule::{self, ChunkChoice, PanelChoice, Schedule, SplitChoice};
use recur::cell::{CellKind, LayerInput};
use recur::ops::gemm::set_threads;
use recur::rng::Rng;
use recur::stack::{Stack, StackConfig};

/// Chunked against one product: sums of up to 96 float32 products, rounded in another order.
const CHUNK_REL_TOL: f32 = 1e-5;

/// bf16 states from sums rounded in another order (`vdpbf16ps` or AMX tiles against the
/// float32 kernel): a float32 rounding may move a state to the neighbouring bf16 (2^-8
/// relative), and that difference goes on through the steps and layers; a few such roundings,
/// relative to the largest state.
const BF16_ORDER_REL_TOL: f32 = 2e-2;

/// Outputs of inference, and outputs, parameter and input gradients of training.
fn run(kind: CellKind, s: Schedule) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    schedule::set(s);
    // B*G*H*H well above the threshold for splitting a step over threads
    let (t, b, h) = (5, 32, 96);
    let stack = Stack::new(StackConfig::new(kind, h, h).with_layers(2)).unwrap();
    let mut rng = Rng::new(3);
    let mut params = vec![0f32; stack.num_params()];
    stack.init(&mut params, &mut rng);
    let x: Vec<f32> = (0..t * b * h).map(|_| rng.normal() as f32).collect();
    let dy: Vec<f32> = (0..t * b * h).map(|_| rng.normal() as f32).collect();
    let input = LayerInput::Dense { x: &x, ld: h };
    let mut ws = stack.workspace::<f32>(t, b);
    ws.set_inference(true);
    stack.forward(&mut ws, &params, input, None, None, None, None);
    let infer = ws.output().to_vec();
    ws.set_inference(false);
    stack.forward(&mut ws, &params, input, None, None, None, None);
    let y = ws.output().to_vec();
    let mut grads = vec![0f32; stack.num_params()];
    let mut dx = vec![0f32; x.len()];
    stack.backward(
        &mut ws,
        &params,
        &mut grads,
        input,
        None,
        Some(&dy),
        None,
        None,
        Some(&mut dx),
    );
    schedule::set(Schedule::AUTO);
    (infer, y, grads, dx)
}

/// bf16 or int8 inference outputs and final states under `s` (the input product in one product, whose
/// order of sums no schedule changes).
fn run_reduced(
    precision: recur::Precision,
    kind: CellKind,
    b: usize,
    s: Schedule,
) -> (Vec<f32>, Vec<f32>) {
    schedule::set(s);
    let (t, h) = (4, 80);
    let stack = Stack::new(StackConfig::new(kind, h, h).with_layers(2)).unwrap();
    let mut rng = Rng::new(8);
    let mut params = vec![0f32; stack.num_params()];
    stack.init(&mut params, &mut rng);
    recur::precision::prepare_weights(stack.layout(), &mut params, precision);
    let x: Vec<f32> = (0..t * b * h)
        .map(|_| recur::ops::bf16::round(rng.normal() as f32))
        .collect();
    let mut ws = stack.workspace::<f32>(t, b);
    ws.set_inference(true);
    ws.set_precision(precision);
    stack.forward_from_zeros(&mut ws, &params, LayerInput::Dense { x: &x, ld: h });
    schedule::set(Schedule::AUTO);
    (ws.output().to_vec(), ws.h_n.clone())
}

fn rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

#[test]
fn every_schedule_computes_the_same() {
    set_threads(2);
    for kind in [
        CellKind::Lstm,
        CellKind::Gru,
        CellKind::parse("rnn_tanh").unwrap(),
    ] {
        let auto = run(kind, Schedule::AUTO);
        for split in [SplitChoice::Rows, SplitChoice::Units] {
            let s = Schedule {
                split,
                chunks: ChunkChoice::Off,
                panels: PanelChoice::Auto,
            };
            let got = run(kind, s);
            // chunks off: the same products as auto where auto does not chunk; training never does
            assert_eq!(got.1, auto.1, "{kind:?} {split:?}: training outputs");
            assert_eq!(got.2, auto.2, "{kind:?} {split:?}: parameter gradients");
            assert_eq!(got.3, auto.3, "{kind:?} {split:?}: input gradients");
            let on = run(
                kind,
                Schedule {
                    split,
                    chunks: ChunkChoice::On,
                    panels: PanelChoice::Auto,
                },
            );
            let e = rel(&on.0, &got.0);
            println!("{kind:?} {split:?}: chunked vs one product, rel {e:e}");
            assert!(
                e <= CHUNK_REL_TOL,
                "{kind:?} {split:?}: chunked inference, rel err {e:e}"
            );
            // inference and training forward agree whatever the schedule
            let e = rel(&got.0, &got.1);
            assert!(
                e <= CHUNK_REL_TOL,
                "{kind:?} {split:?}: inference vs training, rel err {e:e}"
            );
        }
        // bf16: one batch row (split by units only) and 40 (either split)
        for b in [1, 40] {
            let off = |split, panels| Schedule {
                split,
                chunks: ChunkChoice::Off,
                panels,
            };
            let bf16 = recur::Precision::Bf16;
            let f32_panels = run_reduced(bf16, kind, b, off(SplitChoice::Units, PanelChoice::F32));
            let bf16_panels =
                run_reduced(bf16, kind, b, off(SplitChoice::Units, PanelChoice::Bf16));
            for (panels, want) in [
                (PanelChoice::F32, &f32_panels),
                (PanelChoice::Bf16, &bf16_panels),
            ] {
                let got = run_reduced(bf16, kind, b, off(SplitChoice::Rows, panels));
                assert!(
                    got == *want,
                    "{kind:?} bf16 B={b} {panels:?}: rows and units differ"
                );
            }
            let amx = recur::ops::tiles::available();
            if recur::ops::bf16::native() || amx {
                let what = if amx { "AMX tiles" } else { "vdpbf16ps" };
                let e = rel(&bf16_panels.0, &f32_panels.0);
                println!("{kind:?} bf16 B={b}: {what} vs float32 panels, rel {e:e}");
                assert!(
                    e <= BF16_ORDER_REL_TOL,
                    "{kind:?} bf16 B={b}: {what} vs float32 panels, rel err {e:e}"
                );
            } else {
                assert!(
                    bf16_panels == f32_panels,
                    "{kind:?} bf16 B={b}: bf16 and float32 panels differ in bits"
                );
            }
            // int8: each part quantizes the rows it multiplies; the sums are exact
            let int8 = recur::Precision::Int8;
            let want = run_reduced(int8, kind, b, off(SplitChoice::Units, PanelChoice::Auto));
            let got = run_reduced(int8, kind, b, off(SplitChoice::Rows, PanelChoice::Auto));
            assert!(got == want, "{kind:?} int8 B={b}: rows and units differ");
        }
    }
}
