//! The model's heads read the right outputs: a last-step head decodes PyTorch's final states
//! (`cat(h_n[-2], h_n[-1])` with two directions), taken at each sequence's own last step; a
//! per-step head decodes every step; the squared-error loss is PyTorch's `MSELoss()`; configs
//! written before heads existed still load. (The gradients of every head are checked against
//! finite differences in crates/recur-study/tests/gradcheck.rs.)

use recur::cell::CellKind;
use recur::model::{Head, Input, Model, ModelConfig};
use recur::rng::Rng;
use recur::stack::StackConfig;

/// The decoder computed here and inside the model differ only by summation order in f64.
const TOL: f64 = 1e-12;

/// y = W x + b for one row.
fn decode(params: &[f64], model: &Model, x: &[f64]) -> Vec<f64> {
    let w = &params[model.layout().get("decoder.weight").unwrap().range()];
    let b = &params[model.layout().get("decoder.bias").unwrap().range()];
    let v = model.cfg().output_size;
    (0..v)
        .map(|j| b[j] + (0..x.len()).map(|k| w[j * x.len() + k] * x[k]).sum::<f64>())
        .collect()
}

fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (i, d) = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold((0, 0.0), |m, (i, d)| if d > m.1 { (i, d) } else { m });
    assert!(
        d <= TOL,
        "{what}: worst element {i}: {} vs {} (diff {d:e})",
        got[i],
        want[i]
    );
}

fn setup(cell: CellKind, head: Head, bidir: bool) -> (Model, Vec<f64>, Vec<f64>) {
    let rnn = StackConfig::new(cell, 3, 4)
        .with_layers(2)
        .with_bidirectional(bidir);
    let model = Model::new(ModelConfig::dense(3, rnn, 5, head)).unwrap();
    let mut rng = Rng::new(7);
    let mut params = vec![0.0; model.num_params()];
    model.init(&mut params, &mut rng);
    let x: Vec<f64> = (0..6 * 3 * 3).map(|_| rng.normal()).collect();
    (model, params, x)
}

#[test]
fn last_step_head_decodes_the_final_states_at_each_sequences_own_length() {
    let (t, b) = (6, 3);
    let lengths = [6, 2, 4];
    for cell in [
        CellKind::Lstm,
        CellKind::Gru,
        CellKind::parse("rnn").unwrap(),
    ] {
        for bidir in [false, true] {
            for head in [Head::LastClasses, Head::LastRegression] {
                let (model, params, x) = setup(cell, head, bidir);
                let mut ws = model.workspace::<f64>(t, b);
                model.forward(
                    &mut ws,
                    &params,
                    Input::Dense(&x),
                    None,
                    None,
                    Some(&lengths),
                    None,
                );
                assert_eq!(ws.rows(), b);
                let (nd, p) = (model.cfg().rnn.dirs(), 4);
                let top = model.cfg().rnn.num_layers - 1;
                for s in 0..b {
                    // torch: h_n is (L*D, B, P); the top layer's directions, concatenated
                    let mut feat = Vec::new();
                    for d in 0..nd {
                        let idx = top * nd + d;
                        feat.extend_from_slice(&ws.stack.h_n[(idx * b + s) * p..][..p]);
                    }
                    // and the same read off the outputs: forward at len-1, reverse at 0
                    let y = ws.stack.output();
                    let at = |step: usize, d: usize| &y[(step * b + s) * nd * p + d * p..][..p];
                    assert_close("h_n vs forward output", &feat[..p], at(lengths[s] - 1, 0));
                    if bidir {
                        assert_close("h_n vs reverse output", &feat[p..], at(0, 1));
                    }
                    let want = decode(&params, &model, &feat);
                    assert_close(
                        &format!("{} {head:?} bidir {bidir} seq {s}", cell.name()),
                        &ws.logits[s * 5..(s + 1) * 5],
                        &want,
                    );
                }
            }
        }
    }
}

#[test]
fn per_step_regression_decodes_every_step_and_mse_is_the_mean() {
    let (t, b) = (6, 3);
    let (model, params, x) = setup(CellKind::Gru, Head::StepRegression, true);
    let mut ws = model.workspace::<f64>(t, b);
    model.forward(&mut ws, &params, Input::Dense(&x), None, None, None, None);
    assert_eq!(ws.rows(), t * b);
    let dp = model.cfg().rnn.output_size();
    for r in 0..t * b {
        let want = decode(&params, &model, &ws.stack.output()[r * dp..(r + 1) * dp]);
        assert_close("step row", &ws.logits[r * 5..(r + 1) * 5], &want);
    }
    let mut rng = Rng::new(3);
    let mut targets: Vec<f64> = (0..t * b * 5).map(|_| rng.normal()).collect();
    targets[7] = f64::NAN; // a padded element takes no loss
    let logits = ws.logits.clone();
    let (sum, count) = model.loss_mse(&mut ws, &targets, 1.0);
    assert_eq!(count, t * b * 5 - 1);
    let want: f64 = logits
        .iter()
        .zip(&targets)
        .filter(|(_, y)| !y.is_nan())
        .map(|(a, y)| (a - y) * (a - y))
        .sum();
    assert!((sum - want).abs() <= TOL * want, "{sum} vs {want}");
    assert_eq!(ws.dlogits[7], 0.0);
    assert!((ws.dlogits[0] - 2.0 * (logits[0] - targets[0])).abs() <= TOL);
}

#[test]
fn head_defaults_to_per_step_classes_for_old_configs() {
    let cfg = ModelConfig::char_model(5, 0, StackConfig::new(CellKind::Lstm, 5, 8).with_layers(2));
    let mut json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(json["head"], "step_classes");
    json.as_object_mut().unwrap().remove("head");
    let back: ModelConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back.head, Head::StepClasses);
    assert_eq!(back, cfg);
    for h in Head::ALL {
        assert_eq!(Head::parse(h.name()), Some(h));
        let mut c = cfg.clone();
        c.head = h;
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<ModelConfig>(&s).unwrap(), c);
    }
}

/// A checkpoint carries the head in its config: every head survives save -> load, and the loaded
/// model computes the same outputs bit for bit.
#[test]
fn checkpoint_round_trip_for_every_head() {
    use recur::checkpoint::{load, save, Checkpoint};
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("heads-ckpt");
    std::fs::create_dir_all(&dir).unwrap();
    for head in Head::ALL {
        let rnn = StackConfig::new(CellKind::Gru, 2, 4).with_bidirectional(true);
        let cfg = ModelConfig::dense(2, rnn, 3, head);
        let model = Model::new(cfg.clone()).unwrap();
        let mut params = vec![0.0f32; model.num_params()];
        model.init(&mut params, &mut Rng::new(5));
        let path = dir.join(format!("{}.safetensors", head.name()));
        let ckpt = Checkpoint {
            model: cfg.clone(),
            params: params.clone(),
            vocab: None,
            optimizer: None,
            ema: None,
            train_state: None,
            precision: recur::Precision::F32,
        };
        save(&path, &ckpt).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.model, cfg, "{}", head.name());
        assert_eq!(back.model.head, head);
        let x: Vec<f32> = (0..4 * 2 * 2).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = |c: &ModelConfig, p: &[f32]| {
            let m = Model::new(c.clone()).unwrap();
            let mut ws = m.workspace::<f32>(4, 2);
            m.forward(
                &mut ws,
                p,
                Input::Dense(&x),
                None,
                None,
                Some(&[4, 3]),
                None,
            );
            ws.logits.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        assert_eq!(run(&back.model, &back.params), run(&cfg, &params));
    }
}
