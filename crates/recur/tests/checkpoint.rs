//! Checkpoint tests: recur -> file -> recur is bit-exact (parameters, optimizer moments,
//! metadata), and every malformed file (truncated, not safetensors, missing or extra tensor,
//! wrong shape or dtype, unknown version, bad config, inconsistent vocabulary) fails with one
//! error that names the tensor or field, never a panic.
//!
//! The torch -> recur direction (a state_dict written by the docs' Python snippet) is checked in
//! `torch_parity.rs` against the committed fixtures.

use recur::cell::CellKind;
use recur::checkpoint::{load, save, Checkpoint, CheckpointError};
use recur::model::{Model, ModelConfig};
use recur::optim::{OptimKind, Optimizer};
use recur::rng::Rng;
use recur::stack::StackConfig;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::PathBuf;

/// A fresh directory for one test under cargo's per-target temporary directory.
fn tmpdir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("ckpt-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A 2-layer LSTM char model with an embedding, random parameters and Adam state after 3 steps.
fn sample(kind: OptimKind) -> Checkpoint {
    let vocab: Vec<char> = "\n !,.abcdehlorw".chars().collect();
    let rnn = StackConfig::new(CellKind::Lstm, 0, 6)
        .with_layers(2)
        .with_bidirectional(true);
    let cfg = ModelConfig::char_model(vocab.len(), 4, rnn);
    let model = Model::new(cfg.clone()).unwrap();
    let mut rng = Rng::new(7);
    let mut params = vec![0.0f32; model.num_params()];
    model.init(&mut params, &mut rng);
    let mut opt = Optimizer::<f32>::new(kind, 2e-3, params.len());
    for _ in 0..3 {
        let g: Vec<f32> = (0..params.len()).map(|_| rng.normal() as f32).collect();
        opt.update(&mut params, &g);
    }
    Checkpoint {
        model: cfg,
        params,
        vocab: Some(vocab),
        optimizer: Some(opt),
        ema: None,
        train_state: Some(
            serde_json::json!({"epoch": 2, "position": 12345, "rng": [1u64, 2, 3, u64::MAX]}),
        ),
        precision: recur::Precision::F32,
    }
}

fn adam() -> OptimKind {
    OptimKind::parse("adam", 0.0).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn round_trip_is_bit_exact() {
    let dir = tmpdir("roundtrip");
    for kind in [
        adam(),
        OptimKind::parse("sgd", 0.9).unwrap(),
        OptimKind::parse("adagrad", 0.0).unwrap(),
        OptimKind::parse("rmsprop", 0.0).unwrap(),
    ] {
        let c = sample(kind.clone());
        let path = dir.join(format!("{}.safetensors", kind.name()));
        save(&path, &c).unwrap();
        let r = load(&path).unwrap();
        assert_eq!(r.model, c.model);
        assert_eq!(bits(&r.params), bits(&c.params));
        assert_eq!(r.vocab, c.vocab);
        assert_eq!(r.train_state, c.train_state);
        let (a, b) = (r.optimizer.unwrap(), c.optimizer.as_ref().unwrap());
        assert_eq!(a.kind, b.kind);
        assert_eq!(a.lr.to_bits(), b.lr.to_bits());
        assert_eq!(a.step, b.step);
        assert_eq!(bits(&a.m), bits(&b.m));
        assert_eq!(bits(&a.v), bits(&b.v));
        // Saving what was loaded and loading again changes nothing. (The files' bytes may differ:
        // the safetensors crate writes metadata keys in hash-map order.)
        let again = dir.join("again.safetensors");
        save(&again, &load(&path).unwrap()).unwrap();
        let r2 = load(&again).unwrap();
        assert_eq!(bits(&r2.params), bits(&c.params));
        assert_eq!(bits(&r2.optimizer.unwrap().v), bits(&b.v));
    }
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

#[test]
fn minimal_checkpoint_round_trips() {
    let dir = tmpdir("minimal");
    let mut c = sample(adam());
    c.optimizer = None;
    c.vocab = None;
    c.train_state = None;
    let path = dir.join("m.safetensors");
    save(&path, &c).unwrap();
    let r = load(&path).unwrap();
    assert!(r.optimizer.is_none() && r.vocab.is_none() && r.train_state.is_none());
    assert_eq!(bits(&r.params), bits(&c.params));
    // Tensor names are the PyTorch state_dict's.
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort_unstable();
    assert!(names.contains(&"embedding.weight"));
    assert!(names.contains(&"rnn.weight_ih_l1_reverse"));
    assert!(names.contains(&"decoder.bias"));
    assert_eq!(
        names.len(),
        Model::new(c.model).unwrap().layout().entries.len()
    );
}

#[test]
fn save_overwrites_atomically_and_reports_bad_paths() {
    let dir = tmpdir("atomic");
    let path = dir.join("c.safetensors");
    let c = sample(adam());
    save(&path, &c).unwrap();
    let mut c2 = c.clone();
    c2.params[0] += 1.0;
    save(&path, &c2).unwrap();
    assert_eq!(load(&path).unwrap().params[0], c2.params[0]);
    let e = save(&dir.join("no/such/dir/c.safetensors"), &c).unwrap_err();
    assert!(e.to_string().contains("no/such/dir"), "{e}");
    // A params buffer of the wrong length is refused before anything is written.
    let mut bad = c.clone();
    bad.params.pop();
    let p = dir.join("bad.safetensors");
    let e = save(&p, &bad).unwrap_err();
    assert!(e.to_string().contains("params has"), "{e}");
    assert!(!p.exists());
}

/// The tensors and metadata of a file, to be edited and written back.
struct Raw {
    tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
    meta: HashMap<String, String>,
}

impl Raw {
    fn read(path: &std::path::Path) -> Raw {
        let bytes = std::fs::read(path).unwrap();
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
            .collect();
        Raw {
            tensors,
            meta: header.metadata().clone().unwrap_or_default(),
        }
    }
    fn write(&self, path: &std::path::Path) {
        let views: Vec<(String, TensorView)> = self
            .tensors
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        std::fs::write(
            path,
            safetensors::serialize(views, Some(self.meta.clone())).unwrap(),
        )
        .unwrap();
    }
    fn remove(&mut self, name: &str) -> (String, Dtype, Vec<usize>, Vec<u8>) {
        let i = self.tensors.iter().position(|t| t.0 == name).unwrap();
        self.tensors.remove(i)
    }
}

/// Saves the sample, applies `edit` to the raw file, loads it and returns the error's text.
fn broken(name: &str, edit: impl FnOnce(&mut Raw)) -> String {
    let dir = tmpdir(name);
    let good = dir.join("good.safetensors");
    save(&good, &sample(adam())).unwrap();
    let mut raw = Raw::read(&good);
    edit(&mut raw);
    let bad = dir.join("bad.safetensors");
    raw.write(&bad);
    let e: CheckpointError = match load(&bad).unwrap_err() {
        recur::Error::Checkpoint(e) => e,
        other => panic!("not a checkpoint error: {other}"),
    };
    let s = e.to_string();
    assert!(
        s.contains("bad.safetensors"),
        "error does not name the file: {s}"
    );
    assert!(!s.contains('\n'), "error is not one line: {s}");
    s
}

#[test]
fn unedited_rewrite_loads() {
    // The editing helper itself does not break files: the errors below come from the edits.
    let dir = tmpdir("rewrite");
    let good = dir.join("good.safetensors");
    let c = sample(adam());
    save(&good, &c).unwrap();
    let again = dir.join("again.safetensors");
    Raw::read(&good).write(&again);
    assert_eq!(bits(&load(&again).unwrap().params), bits(&c.params));
}

#[test]
fn truncated_file_fails() {
    let dir = tmpdir("truncated");
    let path = dir.join("t.safetensors");
    save(&path, &sample(adam())).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for cut in [0, 5, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("not a valid safetensors file"), "cut {cut}: {e}");
    }
}

#[test]
fn non_safetensors_file_fails() {
    let dir = tmpdir("garbage");
    let path = dir.join("notes.txt");
    std::fs::write(&path, "hello, this is a text file and not a checkpoint\n").unwrap();
    let e = load(&path).unwrap_err().to_string();
    assert!(
        e.contains("notes.txt") && e.contains("not a valid safetensors"),
        "{e}"
    );
    let e = load(&dir.join("missing.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing.safetensors") && e.contains("cannot read"),
        "{e}"
    );
}

#[test]
fn missing_tensor_fails() {
    let e = broken("missing", |r| {
        r.remove("rnn.bias_hh_l1_reverse");
    });
    assert!(
        e.contains("tensor 'rnn.bias_hh_l1_reverse' is missing"),
        "{e}"
    );
    let e = broken("missing-optim", |r| {
        r.remove("optim.v.decoder.weight");
    });
    assert!(
        e.contains("tensor 'optim.v.decoder.weight' is missing"),
        "{e}"
    );
}

#[test]
fn extra_tensor_fails() {
    let e = broken("extra", |r| {
        r.tensors
            .push(("rnn.weight_ih_l2".into(), Dtype::F32, vec![2], vec![0u8; 8]))
    });
    assert!(e.contains("unexpected tensor 'rnn.weight_ih_l2'"), "{e}");
    let e = broken("extra-optim", |r| {
        r.meta.remove("optimizer");
    });
    assert!(e.contains("unexpected tensor 'optim."), "{e}");
}

#[test]
fn wrong_shape_fails() {
    let e = broken("shape", |r| {
        let t = r
            .tensors
            .iter_mut()
            .find(|t| t.0 == "rnn.weight_hh_l0")
            .unwrap();
        // Same number of elements, transposed shape: only the shape check can catch it.
        t.2 = vec![t.2[1], t.2[0]];
    });
    assert!(
        e.contains("tensor 'rnn.weight_hh_l0' has shape [6, 24], expected [24, 6]"),
        "{e}"
    );
}

#[test]
fn wrong_dtype_fails() {
    let e = broken("dtype", |r| {
        let t = r
            .tensors
            .iter_mut()
            .find(|t| t.0 == "decoder.weight")
            .unwrap();
        // The same bytes read as half as many f64 values of shape (n/2,).
        t.1 = Dtype::F64;
        t.2 = vec![t.3.len() / 8];
    });
    assert!(
        e.contains("tensor 'decoder.weight' has dtype F64, expected F32"),
        "{e}"
    );
}

#[test]
fn unknown_format_version_fails() {
    let e = broken("version", |r| {
        r.meta.insert("format_version".into(), "2".into());
    });
    assert!(e.contains("unknown format_version '2'"), "{e}");
    let e = broken("noversion", |r| {
        r.meta.remove("format_version");
    });
    assert!(e.contains("'format_version' is missing"), "{e}");
    let e = broken("format", |r| {
        r.meta.remove("format");
    });
    assert!(e.contains("'format' is missing"), "{e}");
    let e = broken("format2", |r| {
        r.meta.insert("format".into(), "something-else".into());
    });
    assert!(e.contains("'format' is 'something-else'"), "{e}");
}

#[test]
fn bad_config_fails() {
    let e = broken("config-json", |r| {
        r.meta.insert("config".into(), "{not json".into());
    });
    assert!(e.contains("metadata field 'config'"), "{e}");
    let e = broken("config-field", |r| {
        let mut v: serde_json::Value = serde_json::from_str(&r.meta["config"]).unwrap();
        v.as_object_mut().unwrap().remove("output_size");
        r.meta.insert("config".into(), v.to_string());
    });
    assert!(
        e.contains("metadata field 'config'") && e.contains("output_size"),
        "{e}"
    );
    let e = broken("config-value", |r| {
        let mut v: serde_json::Value = serde_json::from_str(&r.meta["config"]).unwrap();
        v["rnn"]["cell"] = "transformer".into();
        r.meta.insert("config".into(), v.to_string());
    });
    assert!(e.contains("unknown cell 'transformer'"), "{e}");
    // Sizes a damaged file could claim: refused before anything is allocated.
    for (field, value) in [
        ("hidden_size", 1usize << 40),
        ("num_layers", 1usize << 50),
        ("hidden_size", usize::MAX / 2),
    ] {
        let e = broken("config-huge", |r| {
            let mut v: serde_json::Value = serde_json::from_str(&r.meta["config"]).unwrap();
            v["rnn"][field] = value.into();
            r.meta.insert("config".into(), v.to_string());
        });
        assert!(
            e.contains("parameters, more than the file's"),
            "{field}: {e}"
        );
    }
    let e = broken("config-missing", |r| {
        r.meta.remove("config");
    });
    assert!(e.contains("'config' is missing"), "{e}");
}

#[test]
fn bad_vocab_and_optimizer_fail() {
    let e = broken("vocab-len", |r| {
        r.meta.insert("vocab".into(), "[\"a\",\"b\"]".into());
    });
    assert!(
        e.contains("vocab has 2 symbols but config.input_size is 15"),
        "{e}"
    );
    let e = broken("vocab-json", |r| {
        r.meta.insert("vocab".into(), "[\"ab\"]".into());
    });
    assert!(e.contains("metadata field 'vocab'"), "{e}");
    let e = broken("optim-kind", |r| {
        r.meta
            .insert("optimizer".into(), "{\"kind\":\"lbfgs\"}".into());
    });
    assert!(e.contains("metadata field 'optimizer'"), "{e}");
    let e = broken("train-state", |r| {
        r.meta.insert("train_state".into(), "{".into());
    });
    assert!(e.contains("metadata field 'train_state'"), "{e}");
}

#[test]
fn config_gaining_fields_still_loads() {
    // A config written by a later build with an extra field: loading ignores what it does not
    // know (new fields get serde defaults when missing, the other way round).
    let dir = tmpdir("newfield");
    let good = dir.join("good.safetensors");
    let c = sample(adam());
    save(&good, &c).unwrap();
    let mut raw = Raw::read(&good);
    let mut v: serde_json::Value = serde_json::from_str(&raw.meta["config"]).unwrap();
    v["some_future_field"] = serde_json::json!({"x": 1});
    raw.meta.insert("config".into(), v.to_string());
    let p = dir.join("future.safetensors");
    raw.write(&p);
    assert_eq!(load(&p).unwrap().model, c.model);
}

/// The sample as an int8 checkpoint: no optimizer, int8 storage.
fn sample_int8() -> Checkpoint {
    let mut c = sample(adam());
    c.optimizer = None;
    c.precision = recur::Precision::Int8;
    c
}

/// Saves `c` (int8) to a fresh file, applies `edit` to the raw file, loads it: the error's text.
fn broken_int8(name: &str, edit: impl FnOnce(&mut Raw)) -> String {
    let dir = tmpdir(name);
    let good = dir.join("good.safetensors");
    save(&good, &sample_int8()).unwrap();
    let mut raw = Raw::read(&good);
    edit(&mut raw);
    let bad = dir.join("bad.safetensors");
    raw.write(&bad);
    let s = load(&bad).unwrap_err().to_string();
    assert!(s.contains("bad.safetensors") && !s.contains('\n'), "{s}");
    s
}

/// An int8 checkpoint stores every weight matrix as I8 codes with an F32 scale per row and the
/// biases as F32; loading gives back exactly the weights that quantizing on load gives
/// (`precision::quantize_weights`), bit for bit, and precision Int8.
#[test]
fn int8_round_trip_gives_the_quantized_weights() {
    let dir = tmpdir("int8");
    let path = dir.join("q.safetensors");
    let c = sample_int8();
    save(&path, &c).unwrap();
    let back = load(&path).unwrap();
    assert_eq!(back.precision, recur::Precision::Int8);
    assert!(back.optimizer.is_none());
    let model = Model::new(c.model.clone()).unwrap();
    let mut want = c.params.clone();
    recur::precision::quantize_weights(model.layout(), &mut want);
    assert_eq!(bits(&back.params), bits(&want));
    assert_ne!(bits(&back.params), bits(&c.params), "nothing was quantized");
    assert_eq!(back.vocab, c.vocab);
    assert_eq!(back.train_state, c.train_state);

    let raw = Raw::read(&path);
    assert_eq!(raw.meta.get("precision").map(String::as_str), Some("int8"));
    for e in &model.layout().entries {
        let t = raw.tensors.iter().find(|t| t.0 == e.name).unwrap();
        if e.shape.len() == 2 {
            assert_eq!(t.1, Dtype::I8, "{}", e.name);
            let s = raw
                .tensors
                .iter()
                .find(|t| t.0 == format!("{}.scale", e.name))
                .unwrap();
            assert_eq!((s.1, s.2.clone()), (Dtype::F32, vec![e.shape[0]]));
        } else {
            assert_eq!(t.1, Dtype::F32, "{}", e.name);
        }
    }
    // smaller than the float32 file of the same parameters
    let f = dir.join("f.safetensors");
    let mut plain = c.clone();
    plain.precision = recur::Precision::F32;
    save(&f, &plain).unwrap();
    let size = |p: &PathBuf| std::fs::metadata(p).unwrap().len();
    assert!(size(&path) < size(&f), "{} vs {}", size(&path), size(&f));
}

#[test]
fn int8_checkpoints_refuse_what_they_cannot_hold() {
    let dir = tmpdir("int8-refuse");
    let mut with_opt = sample(adam());
    with_opt.precision = recur::Precision::Int8;
    let e = save(&dir.join("a.safetensors"), &with_opt)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no optimizer"), "{e}");
    let mut bf16 = sample_int8();
    bf16.precision = recur::Precision::Bf16;
    let e = save(&dir.join("b.safetensors"), &bf16)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a stored format"), "{e}");

    let e = broken_int8("int8-missing-scale", |r| {
        r.remove("rnn.weight_hh_l0.scale");
    });
    assert!(e.contains("'rnn.weight_hh_l0.scale' is missing"), "{e}");
    let e = broken_int8("int8-dtype", |r| {
        let t = r
            .tensors
            .iter_mut()
            .find(|t| t.0 == "decoder.weight")
            .unwrap();
        t.1 = Dtype::U8;
    });
    assert!(
        e.contains("'decoder.weight'") && e.contains("expected I8 and F32"),
        "{e}"
    );
    let e = broken_int8("int8-scale-shape", |r| {
        let t = r
            .tensors
            .iter_mut()
            .find(|t| t.0 == "embedding.weight.scale")
            .unwrap();
        t.2 = vec![1, t.2[0]];
    });
    assert!(
        e.contains("'embedding.weight.scale'") && e.contains("shapes"),
        "{e}"
    );
    let e = broken_int8("int8-unknown", |r| {
        r.meta.insert("precision".into(), "int4".into());
    });
    assert!(e.contains("'precision' is 'int4'"), "{e}");
    let e = broken_int8("int8-extra", |r| {
        let t = r
            .tensors
            .iter()
            .find(|t| t.0 == "decoder.bias")
            .unwrap()
            .clone();
        r.tensors.push(("decoder.bias.scale".into(), t.1, t.2, t.3));
    });
    assert!(e.contains("unexpected tensor 'decoder.bias.scale'"), "{e}");
}

/// Sets the f32 value at `index` of tensor `name` in a raw file to `v`.
fn poke(raw: &mut Raw, name: &str, index: usize, v: f32) {
    let t = raw.tensors.iter_mut().find(|t| t.0 == name).unwrap();
    t.3[index * 4..index * 4 + 4].copy_from_slice(&v.to_le_bytes());
}

/// A weight, an optimizer moment or an int8 scale that is NaN or infinite (a diverged run
/// saved, a damaged file) is refused on load with the tensor's name, the count and the first
/// bad index, instead of loading a model that computes nothing but NaN.
#[test]
fn non_finite_tensors_fail() {
    let names: Vec<String> = Raw::read(&{
        let dir = tmpdir("finite-names");
        let p = dir.join("c.safetensors");
        save(&p, &sample(adam())).unwrap();
        p
    })
    .tensors
    .iter()
    .map(|t| t.0.clone())
    .collect();
    let weight = names
        .iter()
        .find(|n| n.contains("weight_hh") && !n.starts_with("optim."))
        .unwrap()
        .clone();
    let moment = names
        .iter()
        .find(|n| n.starts_with("optim.v."))
        .unwrap()
        .clone();
    for (name, v) in [
        (&weight, f32::NAN),
        (&weight, f32::INFINITY),
        (&moment, f32::NEG_INFINITY),
    ] {
        let e = broken("finite", |raw| {
            poke(raw, name, 3, v);
            poke(raw, name, 5, v);
        });
        assert!(
            e.contains(&format!("tensor '{name}' holds 2 non-finite value(s) of"))
                && e.contains(&format!("the first, {v}, at index 3")),
            "{e}"
        );
    }
    let scale = format!("{weight}.scale");
    let e = broken_int8("finite-int8", |raw| poke(raw, &scale, 0, f32::NAN));
    assert!(
        e.contains(&format!("tensor '{scale}' holds 1 non-finite value(s)")),
        "{e}"
    );
}

/// Tied weights (`ModelConfig::tie_weights`): the file holds the one matrix under both of its
/// PyTorch names (a module with `decoder.weight = embedding.weight` has both in its state_dict),
/// loads bit for bit, and a file whose two copies differ (an edit, or an untied model's file
/// given a tied configuration) is refused with the tensor's name instead of loading one of them.
#[test]
fn tied_weights_round_trip_and_refuse_differing_copies() {
    let dir = tmpdir("tied");
    let mut c = sample(adam());
    c.model.embed_dim = c.model.rnn.output_size();
    c.model.rnn.input_size = c.model.embed_dim;
    c.model.tie_weights = true;
    let model = Model::new(c.model.clone()).unwrap();
    let mut rng = Rng::new(9);
    c.params = vec![0.0f32; model.num_params()];
    model.init(&mut c.params, &mut rng);
    let mut opt = Optimizer::<f32>::new(adam(), 2e-3, c.params.len());
    let g: Vec<f32> = (0..c.params.len()).map(|_| rng.normal() as f32).collect();
    opt.update(&mut c.params, &g);
    c.optimizer = Some(opt);
    let good = dir.join("good.safetensors");
    save(&good, &c).unwrap();
    let r = load(&good).unwrap();
    assert_eq!(r.model, c.model);
    assert_eq!(bits(&r.params), bits(&c.params));
    assert_eq!(
        bits(&r.optimizer.unwrap().m),
        bits(&c.optimizer.as_ref().unwrap().m)
    );
    let raw = Raw::read(&good);
    let data = |name: &str| raw.tensors.iter().find(|t| t.0 == name).unwrap().3.clone();
    assert_eq!(data("embedding.weight"), data("decoder.weight"));
    for name in ["decoder.weight", "optim.m.decoder.weight"] {
        let mut raw = Raw::read(&good);
        let old = f32::from_le_bytes(data(name)[4..8].try_into().unwrap());
        poke(&mut raw, name, 1, old + 1.0);
        let bad = dir.join("bad.safetensors");
        raw.write(&bad);
        let e = load(&bad).unwrap_err().to_string();
        assert!(
            e.contains(name) && e.contains("tied"),
            "{name}: unexpected error: {e}"
        );
    }
}
