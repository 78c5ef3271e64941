//! End-to-end tests of the digit-string transcriber's commands (`recur speech train-strings |
//! eval-strings | transcribe`): a short run on strings built from the committed sample
//! (data/fsdd-sample, one speaker held out, since the sample has no takes above 9), resume, and
//! bad input through the real binary (one line on stderr, exit code 2).

mod common;
use common::{json_of, one_line_error, recur, scratch, tone, wav_bytes};
use std::path::{Path, PathBuf};

fn sample_dir() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/fsdd-sample")
        .to_string_lossy()
        .into_owned()
}

/// `train-strings` on the sample with theo held out: small, fast settings.
fn train_args(run: &Path, epochs: &str) -> Vec<String> {
    [
        "speech",
        "train-strings",
        "--data",
        &sample_dir(),
        "--holdout",
        "theo",
        "--strings",
        "50",
        "--val-strings",
        "10",
        "--test-strings",
        "12",
        "--rnn-size",
        "32",
        "--num-layers",
        "1",
        "--batch-size",
        "10",
        "--learning-rate",
        "0.01",
        "--epochs",
        epochs,
        "--checkpoint-dir",
        run.to_str().unwrap(),
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn train_eval_transcribe_on_strings_of_the_sample() {
    let dir = scratch("transcribe-e2e");
    let run = dir.join("run");
    let data = sample_dir();
    let j = json_of(&recur(&train_args(&run, "40")));
    assert_eq!(j["epochs"], 40);
    assert_eq!(j["train_strings"], 50);
    assert_eq!(j["val_strings"], 10);
    assert_eq!(j["interrupted"], false);
    for f in [
        "best.safetensors",
        "latest.safetensors",
        "loss.png",
        "loss.svg",
        "digit-error-rate.svg",
    ] {
        assert!(run.join(f).exists(), "{f}");
    }
    let last = run.join("latest.safetensors");
    let ckpt = last.to_str().unwrap();

    // On its own training strings, 40 epochs take the digit error rate far below an untrained
    // model's (which inserts digits everywhere: rates above 1).
    let tr = json_of(&recur(&[
        "speech",
        "eval-strings",
        "--checkpoint",
        ckpt,
        "--data",
        &data,
        "--set",
        "train",
        "--json",
    ]));
    assert_eq!(tr["strings"], 50);
    let der = tr["digit_error_rate"].as_f64().unwrap();
    assert!(der < 0.3, "training-string digit error rate {der}");
    let edits = ["substitutions", "deletions", "insertions"]
        .iter()
        .map(|k| tr[k].as_u64().unwrap())
        .sum::<u64>();
    let digits = tr["digits"].as_u64().unwrap();
    assert!((der - edits as f64 / digits as f64).abs() < 1e-12);

    // The test set is the held-out speaker's: rebuilt from the checkpoint's recipe, the same
    // strings every time (the worst list is the same), with a beam as with best path.
    let test = |beam: Option<&str>| {
        let mut a = vec![
            "speech",
            "eval-strings",
            "--checkpoint",
            ckpt,
            "--data",
            &data,
            "--worst",
            "3",
            "--json",
        ];
        if let Some(w) = beam {
            a.extend(["--beam", w]);
        }
        json_of(&recur(&a))
    };
    let (t1, t2, tb) = (test(None), test(None), test(Some("8")));
    assert_eq!(t1["strings"], 12);
    assert!(
        t1["set"].as_str().unwrap().contains("theo"),
        "{}",
        t1["set"]
    );
    assert_eq!(t1["worst"], t2["worst"]);
    assert_eq!(t1["digits"], tb["digits"]);
    for w in t1["worst"].as_array().unwrap() {
        assert!(w["edits"].as_u64().unwrap() > 0);
        assert_eq!(w["speaker"], "theo");
    }

    // The posterior charts: one string of the set, one file (streamed or not).
    let j = json_of(&recur(&[
        "speech",
        "eval-strings",
        "--checkpoint",
        ckpt,
        "--data",
        &data,
        "--plot-string",
        "3",
        "--json",
    ]));
    assert_eq!(
        j["charts"][0],
        run.join("latest-string-3.png").to_str().unwrap()
    );
    assert!(run.join("latest-string-3.png").exists() && run.join("latest-string-3.svg").exists());
    one_line_error(
        &recur(&[
            "speech",
            "eval-strings",
            "--checkpoint",
            ckpt,
            "--data",
            &data,
            "--plot-string",
            "12",
        ]),
        &["--plot-string 12", "0 to 11"],
    );

    // One file: the transcript is digits, each with a time inside the recording.
    let wav = Path::new(&data).join("3_george_3.wav");
    let one = json_of(&recur(&[
        "speech",
        "transcribe",
        "--checkpoint",
        ckpt,
        wav.to_str().unwrap(),
        "--json",
    ]));
    let digits = one["digits"].as_str().unwrap();
    assert!(digits.chars().all(|c| c.is_ascii_digit()), "{digits}");
    let times = one["times_s"].as_array().unwrap();
    assert_eq!(times.len(), digits.len());
    let plain = recur(&[
        "speech",
        "transcribe",
        "--checkpoint",
        ckpt,
        wav.to_str().unwrap(),
    ]);
    assert!(plain.status.success());
    let text = String::from_utf8_lossy(&plain.stdout);
    assert!(text.trim_end().ends_with(&format!(": {digits}")), "{text}");
}

#[test]
fn resume_continues_only_with_the_same_settings() {
    let dir = scratch("transcribe-resume");
    let run = dir.join("run");
    let a = json_of(&recur(&train_args(&run, "3")));
    assert_eq!(a["epochs"], 3);
    let mut again = train_args(&run, "3");
    again.push("--resume".into());
    let b = json_of(&recur(&again));
    assert_eq!(b["epochs"], 3);
    assert_eq!(b["best_epoch"], a["best_epoch"]);
    assert_eq!(b["best_val_loss"], a["best_val_loss"]);
    let mut other = train_args(&run, "4");
    other.push("--resume".into());
    one_line_error(&recur(&other), &["latest.safetensors", "other settings"]);
    let mut other_strings = train_args(&run, "3");
    other_strings[7] = "51".into(); // --strings N
    other_strings.push("--resume".into());
    one_line_error(&recur(&other_strings), &["other settings"]);
}

#[test]
fn bad_input_is_one_line_errors() {
    let data = sample_dir();
    let dir = scratch("transcribe-bad");
    // The sample has no takes above 9: without a held-out speaker there is nothing to build
    // training strings from.
    one_line_error(
        &recur(&["speech", "train-strings", "--data", &data]),
        &["no recordings to build the train strings"],
    );
    one_line_error(
        &recur(&[
            "speech",
            "train-strings",
            "--data",
            &data,
            "--holdout",
            "nobody",
        ]),
        &["speaker 'nobody'"],
    );
    one_line_error(
        &recur(&["speech", "train-strings", "--data", &data, "--strings", "0"]),
        &["--strings"],
    );
    // A label outside the alphabet: the file name's digit.
    let odd = dir.join("odd");
    std::fs::create_dir_all(&odd).unwrap();
    std::fs::write(
        odd.join("x_george_12.wav"),
        wav_bytes(1, 1, 8000, 16, &tone(800)),
    )
    .unwrap();
    one_line_error(
        &recur(&["speech", "train-strings", "--data", odd.to_str().unwrap()]),
        &["x_george_12.wav", "digit"],
    );
    // A recording of the wrong rate inside a training string names the file.
    let rate = dir.join("rate");
    std::fs::create_dir_all(&rate).unwrap();
    std::fs::write(
        rate.join("4_ann_12.wav"),
        wav_bytes(1, 1, 16000, 16, &tone(800)),
    )
    .unwrap();
    one_line_error(
        &recur(&["speech", "train-strings", "--data", rate.to_str().unwrap()]),
        &["4_ann_12.wav", "sample rate 16000 Hz"],
    );

    // A trained transcriber for the checks below.
    let run = dir.join("run");
    json_of(&recur(&train_args(&run, "1")));
    let ckpt = run.join("latest.safetensors");
    let ck = ckpt.to_str().unwrap();
    let stereo = dir.join("stereo.wav");
    std::fs::write(&stereo, wav_bytes(1, 2, 8000, 16, &tone(1600))).unwrap();
    one_line_error(
        &recur(&[
            "speech",
            "transcribe",
            "--checkpoint",
            ck,
            stereo.to_str().unwrap(),
        ]),
        &["stereo.wav", "2 channels"],
    );
    let missing = dir.join("missing.wav");
    one_line_error(
        &recur(&[
            "speech",
            "transcribe",
            "--checkpoint",
            ck,
            missing.to_str().unwrap(),
        ]),
        &["missing.wav"],
    );
    let wav = Path::new(&data).join("0_george_0.wav");
    one_line_error(
        &recur(&[
            "speech",
            "transcribe",
            "--checkpoint",
            ck,
            "--beam",
            "0",
            wav.to_str().unwrap(),
        ]),
        &["--beam"],
    );
    one_line_error(
        &recur(&[
            "speech",
            "eval-strings",
            "--checkpoint",
            ck,
            "--data",
            &data,
            "--set",
            "dev",
        ]),
        &["--set", "dev"],
    );
    // A transcriber is not a recognizer, and the other way round.
    one_line_error(
        &recur(&[
            "speech",
            "predict",
            "--checkpoint",
            ck,
            wav.to_str().unwrap(),
        ]),
        &["latest.safetensors", "not a speech"],
    );
    let rec = dir.join("rec");
    json_of(&recur(&[
        "speech",
        "train",
        "--data",
        &data,
        "--checkpoint-dir",
        rec.to_str().unwrap(),
        "--val-takes",
        "none",
        "--epochs",
        "1",
        "--rnn-size",
        "8",
        "--json",
    ]));
    one_line_error(
        &recur(&[
            "speech",
            "transcribe",
            "--checkpoint",
            rec.join("latest.safetensors").to_str().unwrap(),
            wav.to_str().unwrap(),
        ]),
        &["not a transcriber"],
    );
}

#[test]
fn a_unidirectional_transcriber_streams_what_it_transcribes_whole() {
    let dir = scratch("transcribe-stream");
    let run = dir.join("run");
    let data = sample_dir();
    let mut args = train_args(&run, "40");
    args.push("--unidirectional".into());
    json_of(&recur(&args));
    let last = run.join("latest.safetensors");
    let ckpt = last.to_str().unwrap();
    let eval = |stream: bool| {
        let mut a = vec![
            "speech",
            "eval-strings",
            "--checkpoint",
            ckpt,
            "--data",
            &data,
            "--set",
            "train",
            "--threads",
            "1",
            "--json",
        ];
        if stream {
            a.extend(["--stream", "--chunk-ms", "30"]);
        }
        json_of(&recur(&a))
    };
    let (whole, streamed) = (eval(false), eval(true));
    assert_eq!(streamed["strings"], 50);
    assert_eq!(streamed["same_as_whole_recording"], 50);
    assert_eq!(streamed["digit_error_rate"], whole["digit_error_rate"]);
    let rtf = streamed["real_time_factor"].as_f64().unwrap();
    assert!(rtf > 0.0 && rtf < 1.0, "real-time factor {rtf}");
    // 40 epochs transcribe some training strings exactly: their digits' delays are measured
    let n = streamed["delays_measured"].as_u64().unwrap();
    assert!(n > 0, "no exactly transcribed string: {streamed}");
    let (median, max) = (
        streamed["delay_median_s"].as_f64().unwrap(),
        streamed["delay_max_s"].as_f64().unwrap(),
    );
    assert!(median.is_finite() && median <= max, "{streamed}");
    assert_eq!(streamed["lookahead_ms"], 56.0);

    // files, streamed and whole: the same digits at the same frames; each out no sooner than
    // its frame. (Single recordings are short: the model, trained on strings, emits digits for
    // some of them only; at least one must have some.)
    let file = |wav: &Path, stream: bool| {
        let mut a = vec![
            "speech",
            "transcribe",
            "--checkpoint",
            ckpt,
            wav.to_str().unwrap(),
            "--json",
        ];
        if stream {
            a.push("--stream");
        }
        json_of(&recur(&a))
    };
    let mut heard = 0;
    for d in 0..10 {
        let wav = Path::new(&data).join(format!("{d}_george_{d}.wav"));
        let (w, s) = (file(&wav, false), file(&wav, true));
        assert_eq!(w["digits"], s["digits"]);
        assert_eq!(w["times_s"], s["times_s"]);
        let outs = s["out_s"].as_array().unwrap();
        heard += outs.len();
        for (o, t) in outs.iter().zip(s["times_s"].as_array().unwrap()) {
            assert!(o.as_f64().unwrap() >= t.as_f64().unwrap());
        }
    }
    assert!(heard > 0, "no digit in any of george's recordings");
    let wav = Path::new(&data).join("4_george_4.wav");
    let stem = dir.join("posteriors");
    let plain = recur(&[
        "speech",
        "transcribe",
        "--checkpoint",
        ckpt,
        wav.to_str().unwrap(),
        "--stream",
        "--plot",
        stem.to_str().unwrap(),
    ]);
    assert!(plain.status.success());
    assert!(String::from_utf8_lossy(&plain.stdout).contains("real-time factor"));
    assert!(dir.join("posteriors.png").exists() && dir.join("posteriors.svg").exists());

    // streaming is best path on a one-directional model only
    one_line_error(
        &recur(&[
            "speech",
            "transcribe",
            "--checkpoint",
            ckpt,
            wav.to_str().unwrap(),
            "--stream",
            "--beam",
            "4",
        ]),
        &["--beam"],
    );
    let bi = dir.join("bi");
    json_of(&recur(&train_args(&bi, "1")));
    one_line_error(
        &recur(&[
            "speech",
            "eval-strings",
            "--checkpoint",
            bi.join("latest.safetensors").to_str().unwrap(),
            "--data",
            &data,
            "--stream",
        ]),
        &["latest.safetensors", "bidirectional"],
    );
}
