//! End-to-end tests of `recur speech`: a short train / eval / predict run on the committed sample
//! (data/fsdd-sample, 60 recordings), and every kind of bad input through the real binary (one
//! line on stderr, exit code 2).

mod common;
use common::{json_of, one_line_error, recur, scratch, tone, wav_bytes};
use std::path::{Path, PathBuf};
use std::process::Output;

fn sample_dir() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/fsdd-sample")
        .to_string_lossy()
        .into_owned()
}

/// A fresh directory for one test.
fn tmpdir(name: &str) -> PathBuf {
    scratch(&format!("speech-{name}"))
}

/// `recur speech train` on a directory holding only `name` with `bytes`.
fn train_on_one(test: &str, name: &str, bytes: &[u8]) -> (Output, PathBuf) {
    let dir = tmpdir(test);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join(name), bytes).unwrap();
    let out = recur(&[
        "speech",
        "train",
        "--data",
        data.to_str().unwrap(),
        "--checkpoint-dir",
        dir.join("run").to_str().unwrap(),
        "--val-takes",
        "none",
        "--epochs",
        "1",
    ]);
    (out, dir)
}

#[test]
fn train_eval_predict_on_the_committed_sample() {
    let dir = tmpdir("e2e");
    let run = dir.join("run");
    let data = sample_dir();
    // Train on the sample's official training takes (30 recordings); no validation takes.
    let j = json_of(&recur(&[
        "speech",
        "train",
        "--data",
        &data,
        "--checkpoint-dir",
        run.to_str().unwrap(),
        "--val-takes",
        "none",
        "--epochs",
        "30",
        "--batch-size",
        "6",
        "--rnn-size",
        "32",
        "--learning-rate",
        "0.01",
        "--json",
    ]));
    assert_eq!(j["epochs"], 30);
    assert_eq!(j["train"], 30);
    assert_eq!(j["interrupted"], false);
    let best = run.join("best.safetensors");
    assert!(best.exists() && run.join("latest.safetensors").exists());
    for chart in ["loss.png", "loss.svg", "accuracy.png", "accuracy.svg"] {
        assert!(run.join(chart).exists(), "{chart}");
    }
    let ckpt = best.to_str().unwrap();

    // On the recordings it was trained on, a model that learned anything is far above chance
    // (0.1); 30 epochs of 5 steps take the training loss near zero.
    let tr = json_of(&recur(&[
        "speech",
        "eval",
        "--checkpoint",
        ckpt,
        "--data",
        &data,
        "--split",
        "train",
        "--json",
    ]));
    assert_eq!(tr["n"], 30);
    assert!(
        tr["accuracy"].as_f64().unwrap() >= 0.9,
        "training accuracy {}",
        tr["accuracy"]
    );

    // Default split: the official test takes (0-4), 3 per digit in the sample.
    let plot = dir.join("confusion");
    let te = json_of(&recur(&[
        "speech",
        "eval",
        "--checkpoint",
        ckpt,
        "--data",
        &data,
        "--plot",
        plot.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(te["n"], 30);
    let per_digit = te["per_digit"].as_array().unwrap();
    assert_eq!(per_digit.len(), 10);
    let confusion: Vec<Vec<u64>> = serde_json::from_value(te["confusion"].clone()).unwrap();
    let correct: u64 = (0..10).map(|d| confusion[d][d]).sum();
    let total: u64 = confusion.iter().flatten().sum();
    assert_eq!(total, 30);
    let acc = te["accuracy"].as_f64().unwrap();
    assert!((acc - correct as f64 / 30.0).abs() < 1e-12);
    for (d, p) in per_digit.iter().enumerate() {
        let row: u64 = confusion[d].iter().sum();
        let want = confusion[d][d] as f64 / row as f64;
        assert!((p.as_f64().unwrap() - want).abs() < 1e-12, "digit {d}");
    }
    assert!(dir.join("confusion.png").exists() && dir.join("confusion.svg").exists());

    // In bf16 and int8 (quantizing on load, and from a `recur quantize` file, which gives the
    // same numbers and runs in int8 by default) the training split stays far above chance and
    // the loss close to float32's: a tenth of a nat covers rounding on this tiny model, not a
    // broken path.
    let eval_train = |ck: &str, extra: &[&str]| {
        let mut args = vec![
            "speech",
            "eval",
            "--checkpoint",
            ck,
            "--data",
            &data,
            "--split",
            "train",
            "--json",
        ];
        args.extend_from_slice(extra);
        json_of(&recur(&args))
    };
    let q8 = dir.join("int8.safetensors");
    let o = recur(&[
        "quantize",
        "--checkpoint",
        ckpt,
        "--out",
        q8.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let int8 = eval_train(ckpt, &["--precision", "int8"]);
    let from_file = eval_train(q8.to_str().unwrap(), &[]);
    for key in ["loss", "accuracy", "confusion"] {
        assert_eq!(from_file[key], int8[key], "{key}: the int8 file differs");
    }
    for (p, j) in [
        ("bf16", eval_train(ckpt, &["--precision", "bf16"])),
        ("int8", int8),
    ] {
        assert!(
            j["accuracy"].as_f64().unwrap() >= 0.9,
            "{p}: {}",
            j["accuracy"]
        );
        let dl = (j["loss"].as_f64().unwrap() - tr["loss"].as_f64().unwrap()).abs();
        assert!(dl <= 0.1, "{p}: loss {} vs f32 {}", j["loss"], tr["loss"]);
    }

    // Text output names the split and prints the matrix.
    let out = recur(&["speech", "eval", "--checkpoint", ckpt, "--data", &data]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("official test split"), "{text}");
    assert!(text.contains("confusion (rows: spoken, columns: predicted)"));

    // Predict a training recording: the right digit, probabilities summing to 1.
    let file = Path::new(&data).join("7_theo_1.wav");
    let j = json_of(&recur(&[
        "speech",
        "predict",
        "--checkpoint",
        ckpt,
        file.to_str().unwrap(),
        "--json",
    ]));
    let probs: Vec<f64> = serde_json::from_value(j["probs"].clone()).unwrap();
    assert_eq!(probs.len(), 10);
    assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-4);
    let digit = j["digit"].as_u64().unwrap() as usize;
    assert!(probs.iter().all(|&p| p <= probs[digit]));
    // 7_theo_1 is a test take: check a training take for the label instead.
    let file = Path::new(&data).join("7_george_7.wav");
    let j = json_of(&recur(&[
        "speech",
        "predict",
        "--checkpoint",
        ckpt,
        file.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(j["digit"], 7, "{j}");
    let out = recur(&[
        "speech",
        "predict",
        "--checkpoint",
        ckpt,
        file.to_str().unwrap(),
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("digit 7"), "{text}");

    // predict reads the file with the same checks as training.
    let bad = dir.join("8k-stereo.wav");
    std::fs::write(&bad, wav_bytes(1, 2, 8000, 16, &tone(2000))).unwrap();
    one_line_error(
        &recur(&[
            "speech",
            "predict",
            "--checkpoint",
            ckpt,
            bad.to_str().unwrap(),
        ]),
        &["8k-stereo.wav", "2 channels"],
    );
    // A speaker absent from the data is refused by eval too.
    one_line_error(
        &recur(&[
            "speech",
            "eval",
            "--checkpoint",
            ckpt,
            "--data",
            &data,
            "--split",
            "speaker:nobody",
        ]),
        &["speaker 'nobody'"],
    );
}

#[test]
fn resume_of_a_finished_run_continues_to_the_same_place() {
    let dir = tmpdir("resume");
    let data = sample_dir();
    let args = |run: &str, epochs: &str| -> Vec<String> {
        [
            "speech",
            "train",
            "--data",
            &data,
            "--checkpoint-dir",
            dir.join(run).to_str().unwrap(),
            "--val-takes",
            "5-6",
            "--epochs",
            epochs,
            "--batch-size",
            "8",
            "--rnn-size",
            "16",
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let a = json_of(&recur(&args("a", "4")));
    assert_eq!(a["epochs"], 4);
    assert_eq!(a["val"], 12);
    // Resuming a run that is complete trains nothing more and reports the same best epoch.
    let mut again = args("a", "4");
    again.push("--resume".into());
    let b = json_of(&recur(&again));
    assert_eq!(b["epochs"], 4);
    assert_eq!(b["best_epoch"], a["best_epoch"]);
    // Resuming with other settings is refused.
    let mut other = args("a", "5");
    other.push("--resume".into());
    one_line_error(&recur(&other), &["latest.safetensors", "other settings"]);
}

#[test]
fn bad_recordings_are_one_line_errors() {
    let good = tone(2000);
    let cases: Vec<(&str, &str, Vec<u8>, Vec<&str>)> = vec![
        (
            "name",
            "seven_george_0.wav",
            wav_bytes(1, 1, 8000, 16, &good),
            vec!["seven_george_0.wav", "does not parse"],
        ),
        (
            "name-fields",
            "7_george.wav",
            wav_bytes(1, 1, 8000, 16, &good),
            vec!["7_george.wav", "three fields"],
        ),
        (
            "garbage",
            "1_x_5.wav",
            b"this is not a wav file at all".to_vec(),
            vec!["1_x_5.wav", "not a valid WAV"],
        ),
        (
            "float",
            "2_x_5.wav",
            wav_bytes(3, 1, 8000, 32, &[0u8; 400]),
            vec!["2_x_5.wav", "floating point"],
        ),
        (
            "mulaw",
            "3_x_5.wav",
            wav_bytes(7, 1, 8000, 8, &[1u8; 400]),
            vec!["3_x_5.wav", "PCM"],
        ),
        (
            "rate",
            "4_x_5.wav",
            wav_bytes(1, 1, 16000, 16, &good),
            vec!["4_x_5.wav", "sample rate 16000 Hz", "8000"],
        ),
        (
            "stereo",
            "5_x_5.wav",
            wav_bytes(1, 2, 8000, 16, &good),
            vec!["5_x_5.wav", "2 channels"],
        ),
        (
            "empty",
            "6_x_5.wav",
            wav_bytes(1, 1, 8000, 16, &[]),
            vec!["6_x_5.wav", "empty"],
        ),
        (
            "silent",
            "7_x_5.wav",
            wav_bytes(1, 1, 8000, 16, &[0u8; 4000]),
            vec!["7_x_5.wav", "silent"],
        ),
    ];
    for (test, name, bytes, needles) in cases {
        let (out, _) = train_on_one(test, name, &bytes);
        one_line_error(&out, &needles);
    }
}

#[test]
fn bad_arguments_and_files_are_one_line_errors() {
    let data = sample_dir();
    let dir = tmpdir("args");
    let missing = dir.join("no-such-dir");
    one_line_error(
        &recur(&["speech", "train", "--data", missing.to_str().unwrap()]),
        &["cannot read directory", "no-such-dir"],
    );
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    one_line_error(
        &recur(&["speech", "train", "--data", empty.to_str().unwrap()]),
        &["no .wav files"],
    );
    one_line_error(
        &recur(&["speech", "train", "--data", &data, "--holdout", "nobody"]),
        &["speaker 'nobody'", "george"],
    );
    one_line_error(
        &recur(&["speech", "train", "--data", &data, "--val-takes", "9-5"]),
        &["--val-takes"],
    );
    one_line_error(
        &recur(&["speech", "train", "--data", &data, "--cell", "transformer"]),
        &["--cell", "transformer"],
    );
    one_line_error(
        &recur(&["speech", "train", "--data", &data, "--features", "pcm"]),
        &["--features"],
    );
    let nockpt = dir.join("missing.ckpt");
    one_line_error(
        &recur(&[
            "speech",
            "eval",
            "--checkpoint",
            nockpt.to_str().unwrap(),
            "--data",
            &data,
        ]),
        &["missing.ckpt"],
    );
    // A file that is not a checkpoint at all.
    let junk = dir.join("junk.ckpt");
    std::fs::write(&junk, b"junk").unwrap();
    let wav = Path::new(&data).join("0_george_0.wav");
    one_line_error(
        &recur(&[
            "speech",
            "predict",
            "--checkpoint",
            junk.to_str().unwrap(),
            wav.to_str().unwrap(),
        ]),
        &["junk.ckpt"],
    );
}

#[test]
fn a_checkpoint_of_another_kind_is_refused() {
    use recur::cell::CellKind;
    use recur::checkpoint::{save, Checkpoint};
    use recur::model::{Model, ModelConfig};
    use recur::stack::StackConfig;
    // A character model's checkpoint (no speech train_state).
    let cfg = ModelConfig::char_model(5, 0, StackConfig::new(CellKind::Gru, 0, 4));
    let n = Model::new(cfg.clone()).unwrap().num_params();
    let dir = tmpdir("other-kind");
    let path = dir.join("char.ckpt");
    let ck = Checkpoint {
        model: cfg,
        params: vec![0.0; n],
        vocab: Some("abcde".chars().collect()),
        optimizer: None,
        ema: None,
        train_state: None,
        precision: recur::Precision::F32,
    };
    save(&path, &ck).unwrap();
    let wav = Path::new(&sample_dir()).join("0_george_0.wav");
    one_line_error(
        &recur(&[
            "speech",
            "predict",
            "--checkpoint",
            path.to_str().unwrap(),
            wav.to_str().unwrap(),
        ]),
        &["char.ckpt", "not a speech checkpoint"],
    );
}
