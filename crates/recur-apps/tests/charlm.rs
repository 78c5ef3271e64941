//! The character language model pipeline: vocabulary, split, stream batches, the training loop's
//! exact resume, stop flag and NaN handling, sampling determinism, and that a text's loss does
//! not depend on the chunk length it is computed in.

use recur::cell::CellKind;
use recur::checkpoint;
use recur::engine::Cpu;
use recur::model::{Input, Model, ModelConfig};
use recur::optim::OptimKind;
use recur::rng::Rng;
use recur::stack::StackConfig;
use recur::stream::stream_loss;
use recur::Error;
use recur_apps::charlm::data::{self, Streams, Vocab};
use recur_apps::charlm::sample::{Generator, SampleOptions};
use recur_apps::charlm::train::{
    self as train, Budget, Event, Run, StopReason as Outcome, TrainConfig, Trainer, LATEST,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// Losses computed in chunks of different lengths agree to this relative error: the same sums
/// in f32 kernels, only grouped differently by the GEMM over T*B rows.
const CHUNK_REL_TOL: f64 = 1e-5;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("recur-charlm-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A small corpus with some structure (a few repeated phrases) so that training makes progress.
fn corpus(n: usize) -> String {
    let words = [
        "to be ",
        "or not ",
        "that is ",
        "the question\n",
        "ROMEO:\n",
        "whether ",
        "'tis nobler ",
    ];
    let mut rng = Rng::new(7);
    let mut s = String::new();
    while s.len() < n {
        s.push_str(words[rng.below(words.len() as u64) as usize]);
    }
    s.truncate(n);
    s
}

#[test]
fn vocab_is_sorted_unicode_scalars_and_round_trips() {
    let text = "héllo, wörld ✓\nhé";
    let v = Vocab::from_text(text);
    let chars = v.chars();
    assert!(chars.windows(2).all(|w| w[0] < w[1]), "sorted: {chars:?}");
    assert_eq!(chars.len(), 12, "{chars:?}");
    assert_eq!(chars[0], '\n');
    assert_eq!(*chars.last().unwrap(), '✓');
    let ids = v.encode(text).unwrap();
    assert_eq!(ids.len(), text.chars().count());
    assert_eq!(v.decode(&ids), text);
    assert_eq!(
        v.id('h'),
        Some(chars.iter().position(|&c| c == 'h').unwrap() as u32)
    );
    match v.encode("hello Zürich Z") {
        Err(Error::Data(m)) => assert_eq!(
            m,
            "5 character(s) not in the model's vocabulary: 'e', 'Z', 'ü', 'i', 'c'"
        ),
        other => panic!("expected unknown chars, got {other:?}"),
    }
    assert!(Vocab::from_chars(vec!['b', 'a']).is_err());
    assert!(Vocab::from_chars(vec!['a', 'a']).is_err());
    assert_eq!(Vocab::from_chars(chars.to_vec()).unwrap(), v);
}

#[test]
fn read_text_rejects_empty_binary_and_non_utf8() {
    let p = std::path::Path::new("x.txt");
    let data_error = |r: recur::Result<String>| match r {
        Err(Error::Data(m)) => m,
        other => panic!("expected a data error, got {other:?}"),
    };
    assert_eq!(
        data_error(data::text_from_bytes(p, vec![])),
        "'x.txt' is empty"
    );
    assert!(data_error(data::text_from_bytes(p, b"ab\0cd".to_vec()))
        .ends_with("looks binary, not text (NUL byte at offset 2)"));
    assert!(data_error(data::text_from_bytes(p, b"abc\xff".to_vec()))
        .ends_with("is not valid UTF-8 (bad byte at offset 3)"));
    assert_eq!(
        data::text_from_bytes(p, "é".as_bytes().to_vec()).unwrap(),
        "é"
    );
    let e = data::read_text(std::path::Path::new("/no/such/file.txt")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert_eq!(e.to_string(), "'/no/such/file.txt': no such file");
}

#[test]
fn split_takes_validation_from_the_end() {
    let ids: Vec<u32> = (0..1000).collect();
    let (tr, va) = data::split(&ids, 0.1);
    assert_eq!((tr.len(), va.len()), (900, 100));
    assert_eq!(va[0], 900);
    let ids2: Vec<u32> = (0..1005).collect();
    let (tr, va) = data::split(&ids2, 0.1); // 100.5 rounds to 101 (away from zero)
    assert_eq!((tr.len(), va.len()), (904, 101));
    let (tr, va) = data::split(&ids, 0.0);
    assert_eq!((tr.len(), va.len()), (1000, 0));
}

#[test]
fn streams_are_contiguous_and_targets_are_next_ids() {
    // ids 0..N, so that every id names its own position
    let n = 203;
    let ids: Vec<u32> = (0..n as u32).collect();
    let (b, t) = (4, 5);
    let st = Streams::new(n, b, t).unwrap();
    assert_eq!(st.stream_len, (n - 1) / b); // 50
    assert_eq!(st.batches(), 10);
    let mut inp = vec![0; t * b];
    let mut tgt = vec![0; t * b];
    let mut prev_last: Vec<u32> = vec![];
    for k in 0..st.batches() {
        st.fill(&ids, k, &mut inp, &mut tgt);
        for i in 0..b {
            for j in 0..t {
                let x = inp[j * b + i];
                assert_eq!(
                    x as usize,
                    i * 50 + k * t + j,
                    "batch {k} stream {i} step {j}"
                );
                assert_eq!(tgt[j * b + i], x + 1);
            }
            if k > 0 {
                // batch k of stream i starts right after batch k-1 of stream i
                assert_eq!(inp[i], prev_last[i] + 1);
            }
        }
        prev_last = (0..b).map(|i| inp[(t - 1) * b + i]).collect();
    }
    match Streams::new(20, 4, 5) {
        Err(Error::Data(what)) => {
            assert!(what.contains("4 x sequence length 5 + 1 = 21"), "{what}")
        }
        other => panic!("expected TooShort, got {other:?}"),
    }
    assert!(Streams::new(21, 4, 5).is_ok());
}

fn small_config(v: usize, layers: usize, dropout: f64) -> TrainConfig {
    let rnn = StackConfig::new(CellKind::Lstm, 0, 24)
        .with_layers(layers)
        .with_dropout(dropout);
    TrainConfig {
        model: ModelConfig::char_model(v, 0, rnn),
        batch_size: 4,
        seq_length: 8,
        optim: OptimKind::parse("adam", 0.0).unwrap(),
        lr: 1e-2,
        lr_decay: 0.9,
        lr_decay_every: 5,
        grad_clip: 1.0,
        grad_clip_value: 0.0,
        seed: 3,
        eval_every: 4,
        log_every: 3,
        schedule: None,
        ema: 0.0,
    }
}

struct Record {
    losses: Vec<f64>,
    vals: Vec<(u64, Option<f64>)>,
}

fn record(trainer: &mut Trainer, stop_after: Option<u64>) -> (Record, recur::Result<Outcome>) {
    let stop = AtomicBool::new(false);
    let mut run = Record {
        losses: vec![],
        vals: vec![],
    };
    let out = trainer.run(&stop, &mut |ev| match ev {
        Event::Step(s) => {
            run.losses.push(s.loss);
            if Some(s.step) == stop_after {
                stop.store(true, Ordering::Relaxed);
            }
        }
        Event::Eval { row, .. } => run.vals.push((row.step, row.val_loss)),
        Event::Log { .. } => {}
    });
    (run, out)
}

#[test]
fn resumed_run_gives_the_same_losses_as_an_uninterrupted_one() {
    recur::ops::gemm::set_threads(1);
    // 8 batches per epoch, 19 steps: the run crosses two epoch boundaries (state resets) and the
    // interruption at step 10 falls between evaluations (steps 8 and 12).
    let text = corpus(4 * 8 * 8 + 1 + 60);
    let vocab = Vocab::from_text(&text);
    let ids = vocab.encode(&text).unwrap();
    let (tr, va) = data::split(&ids, 0.1);
    let cfg = small_config(vocab.len(), 2, 0.2);
    let budget = Budget {
        max_steps: Some(19),
        ..Budget::default()
    };
    let new = |dir: PathBuf| {
        let run = Run::on(&Cpu)
            .budget(budget.clone())
            .checkpoints(dir)
            .extra(serde_json::json!({"test": true}));
        let (tr, va) = (tr.to_vec(), va.to_vec());
        train::start(run, cfg.clone(), tr, va, Some(vocab.chars().to_vec())).unwrap()
    };
    let dir_a = temp_dir("uninterrupted");
    let mut a = new(dir_a.clone());
    assert_eq!(a.task.batches(), 8);
    let (ra, out) = record(&mut a, None);
    assert_eq!(out.unwrap(), Outcome::MaxSteps);
    assert_eq!(ra.losses.len(), 19);

    let dir_b = temp_dir("interrupted");
    let mut b = new(dir_b.clone());
    let (rb1, out) = record(&mut b, Some(10));
    assert_eq!(out.unwrap(), Outcome::Stopped);
    assert_eq!(rb1.losses.len(), 10);
    drop(b);
    let ckpt = checkpoint::load(&dir_b.join(LATEST)).unwrap();
    let run = Run::on(&Cpu).checkpoints(dir_b.clone());
    let mut b2 = train::resume(run, ckpt, tr.to_vec(), va.to_vec()).unwrap();
    assert_eq!(b2.state.step, 10);
    let (rb2, out) = record(&mut b2, None);
    assert_eq!(out.unwrap(), Outcome::MaxSteps);
    let losses_b: Vec<f64> = rb1.losses.iter().chain(&rb2.losses).copied().collect();
    for (i, (x, y)) in ra.losses.iter().zip(&losses_b).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "step {}: {x} vs {y}", i + 1);
    }
    assert_eq!(losses_b.len(), 19);
    let vals_b: Vec<_> = rb1.vals.iter().chain(&rb2.vals).cloned().collect();
    assert_eq!(ra.vals, vals_b);
    assert_eq!(
        ra.vals.iter().map(|v| v.0).collect::<Vec<_>>(),
        vec![4, 8, 12, 16, 19]
    );
    assert_eq!(
        a.params().unwrap(),
        b2.params().unwrap(),
        "final parameters"
    );
    // the logs agree except for the clock
    let strip = |t: &Trainer| {
        t.state
            .history
            .iter()
            .map(|r| {
                (
                    r.step,
                    r.items_seen,
                    r.lr.to_bits(),
                    r.train_loss.to_bits(),
                    r.val_loss,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&a), strip(&b2), "logs");
    // the training made progress
    assert!(
        ra.losses[18] < ra.losses[0] - 0.1,
        "{} -> {}",
        ra.losses[0],
        ra.losses[18]
    );
    let _ = std::fs::remove_dir_all(dir_a);
    let _ = std::fs::remove_dir_all(dir_b);
}

#[test]
fn a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let text = corpus(600);
    let vocab = Vocab::from_text(&text);
    let ids = vocab.encode(&text).unwrap();
    let (tr, va) = data::split(&ids, 0.1);
    let dir = temp_dir("nan");
    let run = Run::on(&Cpu).checkpoints(dir.clone()).budget(Budget {
        max_steps: Some(4),
        ..Budget::default()
    });
    let cfg = small_config(vocab.len(), 1, 0.0);
    let (tr, va) = (tr.to_vec(), va.to_vec());
    let mut t = train::start(run, cfg, tr, va, Some(vocab.chars().to_vec())).unwrap();
    let (_, out) = record(&mut t, None);
    assert_eq!(out.unwrap(), Outcome::MaxSteps);
    let good = checkpoint::load(&dir.join(LATEST)).unwrap();
    // inject a NaN into the decoder bias: every logit row, hence the loss, becomes NaN
    let bias = t.model.layout().get("decoder.bias").unwrap().range();
    let mut p = t.params().unwrap();
    p[bias.start] = f32::NAN;
    t.set_params(&p).unwrap();
    t.state.budget.max_steps = Some(8);
    let poisoned = t.params().unwrap();
    let (run, out) = record(&mut t, None);
    match out {
        Ok(Outcome::Diverged {
            step: 5,
            what,
            value,
        }) => {
            assert_eq!(what, "training loss");
            assert!(value.is_nan());
        }
        other => panic!("expected a NaN stop at step 5, got {other:?}"),
    }
    assert!(run.losses.is_empty(), "no step was reported");
    assert_eq!(t.state.step, 4, "the step did not count");
    let after_stop = t.params().unwrap();
    assert_eq!(after_stop.len(), poisoned.len());
    assert!(
        after_stop
            .iter()
            .zip(&poisoned)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "no update"
    );
    let after = checkpoint::load(&dir.join(LATEST)).unwrap();
    assert_eq!(
        after.params, good.params,
        "the checkpoint on disk is the last good one"
    );
    assert!(after.params.iter().all(|x| x.is_finite()));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_training_text_must_hold_one_batch_and_the_checkpoint_dir_be_writable() {
    let vocab = Vocab::from_text("abc");
    let short: Vec<u32> = vec![0; 32];
    let cfg = small_config(3, 1, 0.0);
    let e = train::start(Run::on(&Cpu), cfg.clone(), short, vec![], None)
        .err()
        .unwrap();
    assert!(e.to_string().contains("fewer than one batch needs"), "{e}");
    let file = temp_dir("file");
    std::fs::write(&file, b"x").unwrap();
    let run = Run::on(&Cpu).checkpoints(file.join("sub"));
    let e = train::start(run, cfg, vec![0; 40], vec![], Some(vocab.chars().to_vec()))
        .err()
        .unwrap();
    assert!(e.to_string().contains("cannot be written"), "{e}");
    let _ = std::fs::remove_file(file);
}

fn random_model(cell: CellKind, v: usize, layers: usize, seed: u64) -> (Model, Vec<f32>) {
    let rnn = StackConfig::new(cell, 0, 16).with_layers(layers);
    let model = Model::new(ModelConfig::char_model(v, 0, rnn)).unwrap();
    let mut params = vec![0.0f32; model.num_params()];
    model.init(&mut params, &mut Rng::new(seed));
    (model, params)
}

#[test]
fn text_loss_does_not_depend_on_the_chunk_length() {
    let v = 11;
    let mut rng = Rng::new(5);
    let ids: Vec<u32> = (0..157).map(|_| rng.below(v as u64) as u32).collect();
    for cell in [CellKind::Lstm, CellKind::parse("gru").unwrap()] {
        let (model, params) = random_model(cell, v, 2, 9);
        for b in [1, 3] {
            let mut reference = None;
            for t in [1, 7, 64, 156, 400] {
                let mut ws = model.workspace(t, b);
                let (sum, n) = stream_loss(&model, &params, &ids, &mut ws);
                assert_eq!(n, (ids.len() - 1) / b * b, "predictions counted");
                let mean = sum / n as f64;
                let r = *reference.get_or_insert(mean);
                let rel = ((mean - r) / r).abs();
                assert!(
                    rel <= CHUNK_REL_TOL,
                    "{cell:?} B={b} T={t}: {mean} vs {r} (rel {rel:e})"
                );
            }
        }
        // B = 1 from a zero state is the mean over t = 1..N-1 of -ln p(c_t | c_<t): check it
        // against feeding one character at a time.
        let mut g = Generator::new(&model, &params).unwrap();
        let mut total = 0.0f64;
        for w in ids.windows(2) {
            g.feed(w[0]);
            let l = g.logits();
            let mx = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let lse = mx + l.iter().map(|&x| (x as f64 - mx).exp()).sum::<f64>().ln();
            total += lse - l[w[1] as usize] as f64;
        }
        let step_by_step = total / (ids.len() - 1) as f64;
        let mut ws = model.workspace(32, 1);
        let (sum, n) = stream_loss(&model, &params, &ids, &mut ws);
        let rel = ((sum / n as f64 - step_by_step) / step_by_step).abs();
        assert!(
            rel <= CHUNK_REL_TOL,
            "{cell:?}: chunked {} vs one at a time {step_by_step}",
            sum / n as f64
        );
    }
}

#[test]
fn sampling_is_deterministic_for_a_seed_and_top_k_1_is_greedy() {
    let v = 9;
    let (model, params) = random_model(CellKind::Lstm, v, 1, 4);
    let draw = |seed: u64, opts: SampleOptions| {
        let mut g = Generator::new(&model, &params).unwrap();
        let mut rng = Rng::new(seed);
        let mut id = 0;
        let mut out = vec![];
        for _ in 0..60 {
            g.feed(id);
            id = g.sample(&opts, &mut rng);
            out.push(id);
        }
        out
    };
    let hot = SampleOptions {
        temperature: 2.0,
        top_k: 0,
    };
    assert_eq!(draw(1, hot), draw(1, hot));
    assert_ne!(draw(1, hot), draw(2, hot));
    // top-k 1: always the most likely character, whatever the seed
    let greedy = SampleOptions {
        temperature: 1.0,
        top_k: 1,
    };
    let a = draw(1, greedy);
    assert_eq!(a, draw(99, greedy));
    let mut g = Generator::new(&model, &params).unwrap();
    let mut id = 0;
    for (i, &want) in a.iter().enumerate() {
        g.feed(id);
        let l = g.logits();
        let argmax = (0..v)
            .max_by(|&x, &y| l[x].partial_cmp(&l[y]).unwrap().then(y.cmp(&x)))
            .unwrap();
        assert_eq!(want as usize, argmax, "step {i}");
        id = want;
    }
    // top-k 3 never draws outside the 3 most likely
    let k3 = SampleOptions {
        temperature: 5.0,
        top_k: 3,
    };
    let mut g = Generator::new(&model, &params).unwrap();
    let mut rng = Rng::new(3);
    let mut id = 0;
    for _ in 0..200 {
        g.feed(id);
        let l = g.logits().to_vec();
        let mut order: Vec<usize> = (0..v).collect();
        order.sort_by(|&x, &y| l[y].partial_cmp(&l[x]).unwrap().then(x.cmp(&y)));
        id = g.sample(&k3, &mut rng);
        assert!(
            order[..3].contains(&(id as usize)),
            "drew {id} outside the top 3 {:?}",
            &order[..3]
        );
    }
}

/// Evaluation packs the weights once per call (`set_fixed_weights`) and forgets the packed
/// copies at the end: after the parameters are changed in place (as by a training step), the
/// same workspace gives exactly what a fresh one gives, both for another evaluation and for a
/// plain forward pass.
#[test]
fn evaluation_after_the_weights_changed_in_place_repacks_them() {
    let v = 11;
    let mut rng = Rng::new(8);
    let ids: Vec<u32> = (0..157).map(|_| rng.below(v as u64) as u32).collect();
    let (t, b) = (7, 3);
    for cell in [CellKind::Lstm, CellKind::parse("gru").unwrap()] {
        let (model, mut params) = random_model(cell, v, 2, 9);
        let mut ws = model.workspace(t, b);
        let before = stream_loss(&model, &params, &ids, &mut ws);
        for p in params.iter_mut() {
            *p *= 1.5;
        }
        // a forward pass on the evaluation's workspace, against a fresh workspace's
        let inputs = &ids[..t * b];
        model.forward(
            &mut ws,
            &params,
            Input::Tokens(inputs),
            None,
            None,
            None,
            None,
        );
        let mut fresh_ws = model.workspace(t, b);
        model.forward(
            &mut fresh_ws,
            &params,
            Input::Tokens(inputs),
            None,
            None,
            None,
            None,
        );
        assert_eq!(
            ws.logits, fresh_ws.logits,
            "{cell:?}: forward saw the old weights"
        );
        let after = stream_loss(&model, &params, &ids, &mut ws);
        let fresh = stream_loss(&model, &params, &ids, &mut model.workspace(t, b));
        assert_eq!(after, fresh, "{cell:?}: evaluation saw the old weights");
        assert_ne!(after.0, before.0, "{cell:?}: the change made no difference");
    }
}
