//! End-to-end tests of `recur train`, `recur sample` and `recur eval` through the built binary:
//! a short training run with its files, resume, Ctrl-C, sampling determinism, eval against
//! PyTorch's number for a fixture checkpoint, and every bad input (exit code 2, one line).

mod common;
use common::{json_of, one_line_error, recur, scratch, write_corpus};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `recur eval` against torch's float64 loss of the same f32 weights: the gap is f32 rounding
/// over a ~60-character text through a tiny model (measured: below 1e-6).
const EVAL_TORCH_REL_TOL: f64 = 2e-5;

fn tmp(name: &str) -> PathBuf {
    scratch(&format!("charlm-{name}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const SMALL: &[&str] = &[
    "--num-layers",
    "1",
    "--rnn-size",
    "32",
    "--batch-size",
    "4",
    "--seq-length",
    "16",
    "--sample-length",
    "20",
    "--quiet",
];

#[test]
fn train_resume_sample_and_eval_end_to_end() {
    let d = tmp("e2e");
    let corpus = write_corpus(&d);
    let ck = d.join("ck");
    let mut args = vec!["train", "--data", s(&corpus), "--checkpoint-dir", s(&ck)];
    args.extend_from_slice(SMALL);
    let mut first = args.clone();
    first.extend_from_slice(&["--max-steps", "30", "--eval-every", "10", "--json"]);
    let j = json_of(&recur(&first));
    assert_eq!(j["steps"], 30);
    assert_eq!(j["chars_seen"], 30 * 4 * 16);
    let v = j["val_loss"].as_f64().unwrap();
    assert!(v.is_finite() && v > 0.0);
    assert!((j["val_bpc"].as_f64().unwrap() - v / std::f64::consts::LN_2).abs() < 1e-12);
    for f in [
        "best.safetensors",
        "latest.safetensors",
        "log.csv",
        "loss.png",
        "loss.svg",
    ] {
        assert!(ck.join(f).is_file(), "{f} written");
    }
    let log = std::fs::read_to_string(ck.join("log.csv")).unwrap();
    let rows: Vec<&str> = log.lines().collect();
    // the default preset averages the weights: the raw weights' loss is the last column
    assert_eq!(
        rows[0],
        "step,epoch,chars_seen,elapsed_secs,lr,train_loss,val_loss,val_bpc,raw_val_loss"
    );
    // a training-loss row every step (eval interval / 10), the validation loss every 10 steps
    assert_eq!(rows.len(), 1 + 30, "{log}");
    let evals: Vec<&str> = rows[1..]
        .iter()
        .copied()
        .filter(|r| !r.ends_with(",,"))
        .collect();
    assert_eq!(evals.len(), 3, "{log}");
    assert!(evals[2].starts_with("30,"), "{log}");

    // a second run into the same directory must not overwrite the first
    let again = recur(&first);
    one_line_error(&again, &["--resume"]);

    // resuming on another text is refused, the run left as it was: the same characters in
    // another order (the saved run's fingerprints of its training and validation parts), and
    // a character the checkpoint's vocabulary lacks
    let saved = std::fs::read(ck.join("latest.safetensors")).unwrap();
    let text = std::fs::read_to_string(&corpus).unwrap();
    let resume_on = |name: &str, text: &str| {
        let other = d.join(name);
        std::fs::write(&other, text).unwrap();
        let a = [
            "train",
            "--resume",
            "--checkpoint-dir",
            s(&ck),
            "--data",
            s(&other),
            "--max-steps",
            "45",
        ];
        recur(&a)
    };
    let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
    lines.reverse();
    one_line_error(
        &resume_on("reordered.txt", &lines.concat()),
        &["differs from the one the checkpoint was trained on"],
    );
    let e = one_line_error(&resume_on("new-char.txt", &format!("{text}Zounds!")), &[]);
    assert!(e.contains('Z'), "{e}");
    assert_eq!(std::fs::read(ck.join("latest.safetensors")).unwrap(), saved);

    // resume to 45 steps: the log grows by the evaluations at 40 and 45
    let mut res = vec![
        "train",
        "--resume",
        "--checkpoint-dir",
        s(&ck),
        "--data",
        s(&corpus),
    ];
    res.extend_from_slice(&[
        "--max-steps",
        "45",
        "--quiet",
        "--json",
        "--sample-length",
        "0",
    ]);
    let j = json_of(&recur(&res));
    assert_eq!(j["steps"], 45);
    let log = std::fs::read_to_string(ck.join("log.csv")).unwrap();
    assert_eq!(log.lines().count(), 1 + 45, "{log}");
    let evals = log.lines().skip(1).filter(|r| !r.ends_with(",,")).count();
    assert_eq!(evals, 5, "{log}");

    // sampling: the same seed gives the same text; the prime comes first
    let best = ck.join("best.safetensors");
    let sample = |seed: &str| {
        let o = recur(&[
            "sample",
            "--checkpoint",
            s(&best),
            "--length",
            "80",
            "--seed",
            seed,
            "--prime",
            "ROMEO:",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let a = sample("5");
    assert_eq!(a, sample("5"));
    assert_ne!(a, sample("6"));
    assert!(a.starts_with("ROMEO:"));
    assert_eq!(a.strip_suffix('\n').unwrap().chars().count(), 6 + 80);
    let bad = recur(&["sample", "--checkpoint", s(&best), "--prime", "Zebra!"]);
    one_line_error(&bad, &["'Z'"]);

    // eval: the numbers, and characters outside the vocabulary
    let text = d.join("eval.txt");
    std::fs::write(&text, "ROMEO:\nTo be, or not to be.\n").unwrap();
    let j = json_of(&recur(&[
        "eval",
        "--checkpoint",
        s(&best),
        "--text",
        s(&text),
        "--json",
    ]));
    assert_eq!(j["chars"], 28);
    let l = j["loss_nats"].as_f64().unwrap();
    assert!((j["bpc"].as_f64().unwrap() - l / std::f64::consts::LN_2).abs() < 1e-12);
    let j3 = json_of(&recur(&[
        "eval",
        "--checkpoint",
        s(&best),
        "--text",
        s(&text),
        "--json",
        "--chunk",
        "3",
    ]));
    assert!(
        (j3["loss_nats"].as_f64().unwrap() - l).abs() <= 1e-5 * l,
        "chunking changed the loss"
    );
    std::fs::write(&text, "Zounds! Quoth 7.").unwrap();
    one_line_error(
        &recur(&["eval", "--checkpoint", s(&best), "--text", s(&text)]),
        &["4 character(s) not in the model's vocabulary: 'Z', '!', 'Q', '7'"],
    );
    let _ = std::fs::remove_dir_all(d);
}

/// Ctrl-C (SIGINT), and SIGTERM and SIGHUP as schedulers, `docker stop` and a closed terminal
/// send them: the run finishes its step, saves, says how to resume and exits 0.
#[test]
fn ctrl_c_sigterm_and_sighup_save_a_checkpoint_and_exit_cleanly() {
    for sig in ["INT", "TERM", "HUP"] {
        let d = tmp(&format!("signal-{sig}"));
        let corpus = write_corpus(&d);
        let ck = d.join("ck");
        let mut child = Command::new(env!("CARGO_BIN_EXE_recur"))
            .args([
                "train",
                "--data",
                s(&corpus),
                "--checkpoint-dir",
                s(&ck),
                "--max-minutes",
                "2",
            ])
            .args(["--eval-every", "0"])
            .args(SMALL)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // the header line on stderr comes after the signal handler is installed
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut header = String::new();
        err.read_line(&mut header).unwrap();
        assert!(header.starts_with("recur train:"), "{header}");
        std::thread::sleep(std::time::Duration::from_millis(300));
        common::signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "SIG{sig}: stdout: {stdout}");
        assert!(
            stdout.contains("done: interrupted after"),
            "SIG{sig}: {stdout}"
        );
        assert!(stdout.contains("--resume"), "{stdout}");
        assert!(ck.join("latest.safetensors").is_file());
        // and the saved run continues
        let j = json_of(&recur(&[
            "train",
            "--resume",
            "--checkpoint-dir",
            s(&ck),
            "--max-steps",
            "3",
            "--quiet",
            "--json",
        ]));
        assert!(j["steps"].as_u64().unwrap() >= 3);
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The fixture generator's torch loss for its character models over its eval text.
#[test]
fn eval_matches_pytorch_on_the_fixture_models() {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recur/tests/fixtures");
    let bytes = std::fs::read(fx.join("char_models.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let meta = &header["__metadata__"];
    let d = tmp("fixture");
    let text = d.join("eval.txt");
    std::fs::write(&text, meta["eval_text"].as_str().unwrap()).unwrap();
    for name in ["char_lstm_emb", "char_gru_onehot", "char_lstm_tied"] {
        let want: f64 = meta[format!("eval_nats.{name}")]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let ckpt = fx.join(format!("{name}.ckpt.safetensors"));
        for chunk in ["1", "5", "256"] {
            let j = json_of(&recur(&[
                "eval",
                "--checkpoint",
                s(&ckpt),
                "--text",
                s(&text),
                "--json",
                "--chunk",
                chunk,
            ]));
            let got = j["loss_nats"].as_f64().unwrap();
            let rel = ((got - want) / want).abs();
            assert!(
                rel <= EVAL_TORCH_REL_TOL,
                "{name} chunk {chunk}: recur {got} vs torch {want} (rel {rel:e})"
            );
            assert_eq!(
                j["chars"].as_u64().unwrap() as usize,
                meta["eval_text"].as_str().unwrap().chars().count()
            );
        }
    }
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn bad_corpora_and_flags_are_one_line_errors_with_exit_code_2() {
    let d = tmp("bad");
    let ck = d.join("ck");
    let train = |data: &Path, extra: &[&str]| {
        let mut a = vec![
            "train",
            "--data",
            s(data),
            "--checkpoint-dir",
            s(&ck),
            "--quiet",
        ];
        a.extend_from_slice(extra);
        recur(&a)
    };
    one_line_error(&train(&d.join("missing.txt"), &[]), &["no such file"]);
    let empty = d.join("empty.txt");
    std::fs::write(&empty, b"").unwrap();
    one_line_error(&train(&empty, &[]), &["is empty"]);
    let bin = d.join("bin.dat");
    std::fs::write(&bin, b"\x7fELF\x02\x01\x01\x00\x00\x00").unwrap();
    one_line_error(&train(&bin, &[]), &["looks binary"]);
    let latin1 = d.join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9 cr\xe8me").unwrap();
    one_line_error(
        &train(&latin1, &[]),
        &["not valid UTF-8 (bad byte at offset 3)"],
    );
    let short = d.join("short.txt");
    std::fs::write(
        &short,
        "To be, or not to be: that is the question.\n".repeat(20),
    )
    .unwrap();
    one_line_error(
        &train(&short, &[]),
        &["fewer than one batch needs (batch size 16 x sequence length 64 + 1 = 1025)"],
    );
    let corpus = write_corpus(&d);
    let file = d.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let mut a = vec!["train", "--data", s(&corpus), "--checkpoint-dir"];
    let sub = file.join("sub");
    a.push(s(&sub));
    a.extend_from_slice(SMALL);
    one_line_error(&recur(&a), &["cannot be written"]);
    one_line_error(
        &train(&corpus, &["--resume", "--rnn-size", "64"]),
        &["drop --rnn-size"],
    );
    one_line_error(
        &train(&corpus, &["--cell", "gru", "--proj-size", "8"]),
        &["--proj-size applies to --cell lstm only"],
    );
    one_line_error(
        &train(&corpus, &["--num-layers", "1", "--dropout", "0.5"]),
        &["needs --num-layers 2 or more"],
    );
    one_line_error(
        &train(&corpus, &["--momentum", "0.9"]),
        &["--momentum applies to --optim sgd only"],
    );
    one_line_error(
        &train(&corpus, &["--lr-decay", "0.5"]),
        &["--lr-decay needs --lr-decay-every"],
    );
    one_line_error(
        &train(&corpus, &["--val-frac", "1.5"]),
        &["--val-frac must be in [0, 1)"],
    );
    one_line_error(
        &train(&corpus, &["--cell", "transformer"]),
        &["unknown cell 'transformer'"],
    );
    one_line_error(
        &train(&corpus, &["--preset", "huge"]),
        &["unknown preset 'huge'"],
    );
    one_line_error(
        &train(&corpus, &["--resume"]),
        &["no checkpoint to resume from"],
    );
    one_line_error(
        &recur(&["sample", "--checkpoint", s(&d.join("nope.safetensors"))]),
        &["no such file"],
    );
    one_line_error(
        &recur(&["eval", "--checkpoint", s(&corpus), "--text", s(&corpus)]),
        &["corpus.txt"],
    );
    assert!(
        !ck.join("latest.safetensors").exists(),
        "no failed run wrote a checkpoint"
    );
    let _ = std::fs::remove_dir_all(d);
}

/// `--precision bf16|int8` on eval of the fixture models against their float32 loss: the models
/// are small and their predictions near uniform, so bf16 or int8 weights and states move the
/// loss in the fifth or sixth digit; a tenth of a percent is far outside that and far inside
/// what a wrong path (states read as garbage, a wrong weight or scale) would do.
const EVAL_REDUCED_REL_TOL: f64 = 1e-3;

#[test]
fn reduced_precisions_evaluate_sample_and_refuse_what_they_cannot_run() {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recur/tests/fixtures");
    let bytes = std::fs::read(fx.join("char_models.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let d = tmp("bf16");
    let text = d.join("eval.txt");
    std::fs::write(&text, header["__metadata__"]["eval_text"].as_str().unwrap()).unwrap();
    for name in ["char_lstm_emb", "char_gru_onehot"] {
        let ckpt = fx.join(format!("{name}.ckpt.safetensors"));
        let eval = |precision: &str| {
            let j = json_of(&recur(&[
                "eval",
                "--checkpoint",
                s(&ckpt),
                "--text",
                s(&text),
                "--json",
                "--precision",
                precision,
            ]));
            j["loss_nats"].as_f64().unwrap()
        };
        let f32_loss = eval("f32");
        for p in ["bf16", "int8"] {
            let loss = eval(p);
            let rel = ((loss - f32_loss) / f32_loss).abs();
            assert!(
                rel <= EVAL_REDUCED_REL_TOL,
                "{name}: {p} {loss} vs f32 {f32_loss}"
            );
            assert_ne!(loss, f32_loss, "{name}: --precision {p} changed nothing");
            assert_eq!(eval(p), loss, "{name}: {p} eval not repeatable");
        }

        let sample = |precision: &str| {
            let o = recur(&[
                "sample",
                "--checkpoint",
                s(&ckpt),
                "--length",
                "40",
                "--precision",
                precision,
            ]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8(o.stdout).unwrap()
        };
        for p in ["bf16", "int8"] {
            let a = sample(p);
            assert_eq!(a, sample(p), "{name}: {p} sample not repeatable");
            assert_eq!(a.trim_end_matches('\n').chars().count(), 40);
        }
    }
    // recur quantize: the int8 file evaluates and samples exactly as --precision int8 on the
    // float32 file (the same codes and scales), by default in int8; it is refused as input to
    // quantize and to training
    let ckpt = fx.join("char_lstm_emb.ckpt.safetensors");
    let q8 = d.join("q8.safetensors");
    let j = json_of(&recur(&[
        "quantize",
        "--checkpoint",
        s(&ckpt),
        "--out",
        s(&q8),
        "--json",
    ]));
    assert!(
        j["out_bytes"].as_u64().unwrap() < j["in_bytes"].as_u64().unwrap(),
        "{j}"
    );
    let loss = |ck: &Path, extra: &[&str]| {
        let mut args = vec!["eval", "--checkpoint", s(ck), "--text", s(&text), "--json"];
        args.extend_from_slice(extra);
        json_of(&recur(&args))["loss_nats"].as_f64().unwrap()
    };
    let int8_loss = loss(&ckpt, &["--precision", "int8"]);
    assert_eq!(
        loss(&q8, &[]),
        int8_loss,
        "the int8 file differs from quantizing on load"
    );
    assert_ne!(loss(&q8, &["--precision", "f32"]), int8_loss);
    let sample_of = |ck: &Path, extra: &[&str]| {
        let mut args = vec!["sample", "--checkpoint", s(ck), "--length", "60"];
        args.extend_from_slice(extra);
        let o = recur(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    };
    assert_eq!(
        sample_of(&q8, &[]),
        sample_of(&ckpt, &["--precision", "int8"])
    );
    one_line_error(
        &recur(&[
            "quantize",
            "--checkpoint",
            s(&q8),
            "--out",
            s(&d.join("q9.safetensors")),
        ]),
        &["already an int8 checkpoint"],
    );
    one_line_error(
        &recur(&["quantize", "--checkpoint", s(&ckpt), "--out", s(&ckpt)]),
        &["--out must differ"],
    );
    let run = d.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::copy(&q8, run.join("latest.safetensors")).unwrap();
    one_line_error(
        &recur(&[
            "train",
            "--resume",
            "--checkpoint-dir",
            s(&run),
            "--data",
            s(&text),
        ]),
        &["an int8 checkpoint is for inference"],
    );
    one_line_error(
        &recur(&["bench", "--precision", "int8", "--mode", "train"]),
        &["--precision int8 times inference only"],
    );
    one_line_error(
        &recur(&["bench", "--charlm", "--precision", "int8"]),
        &["the char-model step trains"],
    );
    let step = json_of(&recur(&[
        "bench",
        "--charlm",
        "--precision",
        "bf16",
        "--repeats",
        "1",
        "--json",
    ]));
    assert_eq!(step["precision"], "bf16");
    assert!(step["last_loss"].as_f64().unwrap().is_finite());
    one_line_error(
        &recur(&[
            "train",
            "--data",
            s(&write_corpus(&d)),
            "--checkpoint-dir",
            s(&d.join("int8-run")),
            "--precision",
            "int8",
        ]),
        &["int8 runs inference only"],
    );
    one_line_error(
        &recur(&["eval", "--text", s(&text), "--precision", "fp8"]),
        &["unknown precision 'fp8'"],
    );
    let _ = std::fs::remove_dir_all(d);
}

/// The default corpus is built into the binary: a copy of `recur` run outside the source tree
/// trains on it, names it, and `--resume` finds it again.
#[test]
fn an_installed_binary_trains_on_the_built_in_corpus() {
    let d = tmp("installed");
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let exe = bin.join("recur");
    std::fs::copy(env!("CARGO_BIN_EXE_recur"), &exe).unwrap();
    let work = d.join("elsewhere");
    std::fs::create_dir_all(&work).unwrap();
    // Another test thread forking while the copy was open for writing keeps a writable handle
    // to it in that child until the child execs: running the copy meanwhile fails with "text
    // file busy" (ETXTBSY), so a run retries for a while.
    let run = |args: &[&str]| {
        let mut tries = 0;
        loop {
            match Command::new(&exe).current_dir(&work).args(args).output() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => break r.unwrap(),
            }
        }
    };
    let out = run(&[
        "train",
        "--preset",
        "tiny",
        "--max-steps",
        "2",
        "--checkpoint-dir",
        "ck",
        "--json",
        "--sample-length",
        "0",
        "--quiet",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("recur train: tinyshakespeare (built in) (1.12M chars"),
        "{err}"
    );
    assert_eq!(json_of(&out)["steps"], 2);
    let out = run(&[
        "train",
        "--resume",
        "--max-steps",
        "3",
        "--checkpoint-dir",
        "ck",
        "--json",
        "--quiet",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tinyshakespeare (built in)"), "{err}");
    assert_eq!(json_of(&out)["steps"], 3);
    let _ = std::fs::remove_dir_all(d);
}

/// Weight drop and locked dropout draw their masks from the training generator, which the
/// checkpoint keeps: a run stopped and resumed ends bit for bit where an unbroken run ends, and
/// differs from a run without them.
#[test]
fn weight_drop_runs_resume_bit_for_bit() {
    let d = tmp("weight-drop");
    let corpus = write_corpus(&d);
    let run = |dir: &str, steps: &str, extra: &[&str], resume: bool| -> Value {
        let ck = d.join(dir);
        let mut a = vec!["train", "--data", s(&corpus), "--checkpoint-dir", s(&ck)];
        a.extend_from_slice(&[
            "--sample-length",
            "0",
            "--quiet",
            "--json",
            "--max-steps",
            steps,
        ]);
        if resume {
            a.push("--resume");
        } else {
            a.extend_from_slice(&[
                "--num-layers",
                "2",
                "--rnn-size",
                "24",
                "--batch-size",
                "4",
                "--seq-length",
                "16",
                "--eval-every",
                "10",
                "--dropout",
                "0.2",
            ]);
            a.extend_from_slice(extra);
        }
        json_of(&recur(&a))
    };
    let regs = [
        "--weight-drop",
        "0.3",
        "--dropout-mode",
        "locked",
        "--dropout-output",
        "0.1",
        "--dropout-input",
        "0.15",
    ];
    let whole = run("whole", "20", &regs, false);
    run("halves", "10", &regs, false);
    let resumed = run("halves", "20", &[], true);
    assert_eq!(resumed["steps"], 20);
    assert_eq!(whole["val_loss"], resumed["val_loss"]);
    assert_eq!(whole["train_loss"], resumed["train_loss"]);
    // the weights and the optimizer's moments, bit for bit (the run records differ: budgets,
    // times)
    let load =
        |dir: &str| recur::checkpoint::load(&d.join(dir).join("latest.safetensors")).unwrap();
    let (a, b) = (load("whole"), load("halves"));
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(a.model, b.model);
    assert_eq!(a.model.rnn.weight_drop, 0.3);
    assert_eq!(a.model.rnn.dropout_output, 0.1);
    assert_eq!(a.model.rnn.dropout_input, 0.15);
    assert_eq!(a.model.rnn.dropout_mode, recur::stack::DropoutMode::Locked);
    assert!(
        bits(&a.params) == bits(&b.params),
        "weights differ after resume"
    );
    let (oa, ob) = (a.optimizer.unwrap(), b.optimizer.unwrap());
    assert!(bits(&oa.m) == bits(&ob.m) && bits(&oa.v) == bits(&ob.v));
    let plain = run("plain", "20", &[], false);
    assert_ne!(plain["val_loss"], whole["val_loss"]);
    one_line_error(
        &recur(&[
            "train",
            "--data",
            s(&corpus),
            "--checkpoint-dir",
            s(&d.join("bad")),
            "--weight-drop",
            "1",
        ]),
        &["--weight-drop"],
    );
}

/// `--tie-weights`: the decoder's weight is the embedding's (one matrix in the checkpoint under
/// both names), the run resumes bit for bit, and the sizes that cannot be tied are one-line
/// errors naming the flag.
#[test]
fn tied_weights_train_resume_and_refuse_mismatched_sizes() {
    let d = tmp("tied");
    let corpus = write_corpus(&d);
    let run = |dir: &str, steps: &str, resume: bool| -> Value {
        let ck = d.join(dir);
        let mut a = vec!["train", "--data", s(&corpus), "--checkpoint-dir", s(&ck)];
        a.extend_from_slice(&["--sample-length", "0", "--quiet", "--json"]);
        a.extend_from_slice(&["--max-steps", steps]);
        if resume {
            a.push("--resume");
        } else {
            a.extend_from_slice(&["--num-layers", "2", "--rnn-size", "24", "--proj-size"]);
            a.extend_from_slice(&["12", "--embed", "12", "--tie-weights", "--batch-size", "4"]);
            a.extend_from_slice(&["--seq-length", "16", "--eval-every", "10"]);
        }
        json_of(&recur(&a))
    };
    let whole = run("whole", "20", false);
    run("halves", "10", false);
    let resumed = run("halves", "20", true);
    assert_eq!(whole["val_loss"], resumed["val_loss"]);
    let load =
        |dir: &str| recur::checkpoint::load(&d.join(dir).join("latest.safetensors")).unwrap();
    let (a, b) = (load("whole"), load("halves"));
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(a.model.tie_weights && a.model == b.model);
    assert!(
        bits(&a.params) == bits(&b.params),
        "weights differ after resume"
    );
    let model = recur::model::Model::new(a.model.clone()).unwrap();
    let range = |n: &str| model.layout().get(n).unwrap().range();
    assert_eq!(range("embedding.weight"), range("decoder.weight"));
    assert_eq!(a.params.len(), model.num_params());
    for (bad, what) in [
        (vec!["--rnn-size", "24", "--tie-weights"], "no --embed"),
        (
            vec!["--rnn-size", "24", "--embed", "12", "--tie-weights"],
            "--embed 12",
        ),
    ] {
        let mut args = vec!["train", "--data", s(&corpus), "--checkpoint-dir"];
        let ck = d.join("bad");
        args.push(s(&ck));
        args.extend_from_slice(&bad);
        one_line_error(&recur(&args), &["--tie-weights", what]);
    }
}

/// The learning rate of every row of a run's log.csv (its fifth column).
fn rates(log: &str) -> Vec<f64> {
    log.lines()
        .skip(1)
        .map(|r| r.split(',').nth(4).unwrap().parse().unwrap())
        .collect()
}

/// `--lr-schedule cosine`: the log's rate rises over the warm-up, then falls; the schedules'
/// flags out of place are one-line errors.
#[test]
fn lr_schedule_flags() {
    let d = tmp("lr-schedule");
    let corpus = write_corpus(&d);
    let ck = d.join("ck");
    let mut a = vec!["train", "--data", s(&corpus), "--checkpoint-dir", s(&ck)];
    a.extend_from_slice(SMALL);
    a.extend_from_slice(&[
        "--max-steps",
        "20",
        "--eval-every",
        "10",
        "--lr-schedule",
        "cosine",
        "--warmup",
        "4",
        "--lr-floor",
        "0.1",
        "--learning-rate",
        "0.01",
        "--json",
    ]);
    json_of(&recur(&a));
    let log = std::fs::read_to_string(ck.join("log.csv")).unwrap();
    let lrs = rates(&log);
    assert_eq!(lrs.len(), 20, "{log}");
    assert!(
        (lrs[0] - 0.0025).abs() < 1e-12 && (lrs[3] - 0.01).abs() < 1e-12,
        "{lrs:?}"
    );
    assert!(lrs[4..].windows(2).all(|w| w[1] <= w[0]), "{lrs:?}");
    assert!(lrs[19] < 0.0015 && lrs[19] >= 0.001, "{lrs:?}");
    for (flags, needle) in [
        (
            &["--lr-schedule", "cosine", "--plateau-factor", "0.5"][..],
            "--plateau-factor",
        ),
        (&["--warmup", "10"][..], "--warmup"),
        (
            &["--lr-schedule", "cosine", "--lr-decay", "0.5"][..],
            "--lr-decay",
        ),
        (
            &["--lr-schedule", "cosine", "--lr-floor", "2"][..],
            "--lr-floor",
        ),
        (
            &["--lr-schedule", "plateau", "--plateau-factor", "1"][..],
            "--plateau-factor",
        ),
        (&["--lr-schedule", "sometimes"][..], "--lr-schedule"),
        // the large preset's cosine: the step schedule's flags need --lr-schedule step
        (
            &["--preset", "large", "--lr-decay", "0.5"][..],
            "--lr-decay",
        ),
    ] {
        let bad = d.join("bad");
        let mut b = vec!["train", "--data", s(&corpus), "--checkpoint-dir", s(&bad)];
        b.extend_from_slice(flags);
        one_line_error(&recur(&b), &[needle]);
    }

    // the large preset runs the cosine (warm-up 500 steps) with the weights averaged, output
    // dropout and weight drop; a smaller network through the flags, so that the test is quick
    // (two layers, for the dropout between them)
    let ck = d.join("large");
    let mut a = vec!["train", "--data", s(&corpus), "--checkpoint-dir", s(&ck)];
    a.extend_from_slice(&["--preset", "large", "--num-layers", "2"]);
    a.extend_from_slice(&SMALL[2..]);
    a.extend_from_slice(&["--max-steps", "3", "--eval-every", "10", "--json"]);
    let out = recur(&a);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("(cosine to x0.05, warm-up 500 steps), weights averaged (decay 0.999)"),
        "{err}"
    );
    assert!(
        err.contains("lstm 2x32, dropout 0.25, output dropout 0.25, weight drop 0.2,"),
        "{err}"
    );
    json_of(&out);
    let log = std::fs::read_to_string(ck.join("log.csv")).unwrap();
    let lrs = rates(&log);
    // the rate rises over the warm-up: 2e-3 * step / 500
    assert!((lrs[0] - 2e-3 / 500.0).abs() < 1e-12, "{lrs:?}");
    assert!((lrs[2] - 3.0 * 2e-3 / 500.0).abs() < 1e-12, "{lrs:?}");
}

/// `--ema`: the log gains the raw weights' column, `recur eval` and `recur sample` use the
/// average unless given `--raw-weights`, `recur quantize` keeps the average; a bad decay and
/// `--ema` with `--resume` are one-line errors.
#[test]
fn ema_flag_logs_both_and_predicts_with_the_average() {
    let d = tmp("ema");
    let corpus = write_corpus(&d);
    let ck = d.join("ck");
    let mut a = vec!["train", "--data", s(&corpus), "--checkpoint-dir", s(&ck)];
    a.extend_from_slice(SMALL);
    a.extend_from_slice(&[
        "--max-steps",
        "20",
        "--eval-every",
        "10",
        "--ema",
        "0.95",
        "--json",
    ]);
    let out = recur(&a);
    let j = json_of(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("weights averaged (decay 0.95)"), "{err}");
    assert!(err.contains("moving average; raw weights"), "{err}");
    let log = std::fs::read_to_string(ck.join("log.csv")).unwrap();
    let rows: Vec<&str> = log.lines().collect();
    assert!(rows[0].ends_with(",val_bpc,raw_val_loss"), "{log}");
    let evals: Vec<Vec<&str>> = rows[1..]
        .iter()
        .map(|r| r.split(',').collect::<Vec<_>>())
        .filter(|c| !c[6].is_empty())
        .collect();
    assert_eq!(evals.len(), 2, "{log}");
    assert!(evals.iter().all(|c| c.len() == 9 && !c[8].is_empty()));
    // the printed loss is the average's: the log's column (written to 6 decimals)
    let logged: f64 = evals[1][6].parse().unwrap();
    assert!(
        (j["val_loss"].as_f64().unwrap() - logged).abs() < 1e-6,
        "{j} {log}"
    );

    let latest = ck.join("latest.safetensors");
    let eval = |path: &Path, extra: &[&str]| -> f64 {
        let mut e = vec![
            "eval",
            "--checkpoint",
            s(path),
            "--text",
            s(&corpus),
            "--json",
        ];
        e.extend_from_slice(extra);
        json_of(&recur(&e))["loss_nats"].as_f64().unwrap()
    };
    let avg = eval(&latest, &[]);
    let raw = eval(&latest, &["--raw-weights"]);
    assert_ne!(avg, raw);
    // the same file with the average as its only weights: the same loss as the default
    let mut c = recur::checkpoint::load(&latest).unwrap();
    let plain = d.join("avg-only.safetensors");
    c.params = c.ema.take().expect("an average");
    recur::checkpoint::save(&plain, &c).unwrap();
    assert_eq!(eval(&plain, &[]), avg);
    // and with the raw ones: the same as --raw-weights
    let mut c = recur::checkpoint::load(&latest).unwrap();
    c.ema = None;
    let raw_only = d.join("raw-only.safetensors");
    recur::checkpoint::save(&raw_only, &c).unwrap();
    assert_eq!(eval(&raw_only, &[]), raw);
    // samples: from the average by default
    let sample = |path: &Path, extra: &[&str]| {
        let mut e = vec![
            "sample",
            "--checkpoint",
            s(path),
            "--length",
            "40",
            "--seed",
            "3",
        ];
        e.extend_from_slice(extra);
        let o = recur(&e);
        assert!(o.status.success());
        o.stdout
    };
    assert_eq!(sample(&latest, &[]), sample(&plain, &[]));
    assert_eq!(sample(&latest, &["--raw-weights"]), sample(&raw_only, &[]));
    // quantize writes the average
    let q = d.join("q.safetensors");
    let qo = recur(&["quantize", "--checkpoint", s(&latest), "--out", s(&q)]);
    assert!(qo.status.success());
    let qp = d.join("q-plain.safetensors");
    let qo = recur(&["quantize", "--checkpoint", s(&plain), "--out", s(&qp)]);
    assert!(qo.status.success());
    assert_eq!(eval(&q, &[]), eval(&qp, &[]));

    let bad = d.join("bad");
    let mut b = vec!["train", "--data", s(&corpus), "--checkpoint-dir", s(&bad)];
    b.extend_from_slice(&["--ema", "1"]);
    one_line_error(&recur(&b), &["--ema"]);
    let mut r = vec!["train", "--data", s(&corpus), "--checkpoint-dir", s(&ck)];
    r.extend_from_slice(&["--resume", "--ema", "0.9"]);
    one_line_error(&recur(&r), &["--ema"]);
}

/// bf16 against float32 validation loss after the same 40 steps of the same run: rounding
/// moves each step a little; measured here 1e-4 nats.
const BF16_TRAIN_TOL: f64 = 0.05;

#[test]
fn trains_in_bf16_and_resumes() {
    let d = tmp("bf16-train");
    let corpus = write_corpus(&d);
    let run = |name: &str, extra: &[&str]| {
        let ck = d.join(name);
        let mut args = vec!["train", "--data", s(&corpus), "--checkpoint-dir", s(&ck)];
        args.extend_from_slice(SMALL);
        args.extend_from_slice(&["--max-steps", "40", "--eval-every", "20", "--json"]);
        args.extend_from_slice(extra);
        let out = recur(&args);
        let header = String::from_utf8_lossy(&out.stderr).to_string();
        (json_of(&out)["val_loss"].as_f64().unwrap(), header, ck)
    };
    let (f32_loss, f32_header, _) = run("f32", &[]);
    let (bf16_loss, header, ck) = run("bf16", &["--precision", "bf16"]);
    eprintln!("validation loss after 40 steps: f32 {f32_loss}, bf16 {bf16_loss}");
    assert!(header.contains(" in bf16"), "{header}");
    assert!(!f32_header.contains(" in bf16"), "{f32_header}");
    assert!(
        (bf16_loss - f32_loss).abs() <= BF16_TRAIN_TOL,
        "bf16 {bf16_loss} against f32 {f32_loss}"
    );
    assert_ne!(bf16_loss, f32_loss, "--precision bf16 changed nothing");
    // the checkpoint holds float32 master weights: it resumes, in bf16 or not
    let j = json_of(&recur(&[
        "train",
        "--resume",
        "--checkpoint-dir",
        s(&ck),
        "--data",
        s(&corpus),
        "--max-steps",
        "50",
        "--precision",
        "bf16",
        "--quiet",
        "--json",
    ]));
    assert_eq!(j["steps"], 50);
    let _ = std::fs::remove_dir_all(d);
}
