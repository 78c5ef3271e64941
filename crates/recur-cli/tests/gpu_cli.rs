//! `--device cuda` end to end: without the `cuda` feature the binary says that CUDA support was
//! not compiled in; with it, on a machine without a GPU, that no device was found; each as one
//! line with exit code 2. (On a machine with a GPU and the feature, the tiny run must succeed.)

mod common;

use std::process::Command;

fn recur(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(args)
        .output()
        .expect("run recur");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check(args: &[&str]) {
    let (code, stdout, stderr) = recur(args);
    if cfg!(feature = "cuda") && code == 0 {
        assert!(
            stdout.contains("infer") || stdout.contains("train"),
            "{stdout}"
        );
        return;
    }
    assert_device_error(args, code, &stderr);
}

#[test]
fn device_cuda_without_support_or_gpu_is_one_line_error() {
    let tiny = [
        "--rnn-size",
        "4",
        "--batch-size",
        "2",
        "--repeats",
        "1",
        "--warmup",
        "0",
    ];
    let mut a = vec!["gpu-bench", "--device", "cuda", "--seq-length", "3"];
    a.extend(tiny);
    check(&a);
    check(&[
        "bench",
        "--device",
        "cuda",
        "--rnn-size",
        "4",
        "--batch-size",
        "2",
        "--seq-length",
        "3",
        "--repeats",
        "1",
        "--warmup",
        "0",
    ]);
}

#[test]
fn unknown_device_is_rejected() {
    let (code, _, stderr) = recur(&["gpu-bench", "--device", "tpu"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown --device 'tpu'"), "{stderr}");
}

/// A few thousand characters of play-like text in a fresh temporary directory.
fn corpus(name: &str) -> std::path::PathBuf {
    let d = common::scratch(&format!("gpu-cli-{name}"));
    let mut text = String::new();
    for i in 0..40 {
        text.push_str(
            [
                "ROMEO:\nBut soft, what light through yonder window breaks?\n\n",
                "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n\n",
            ][i % 2],
        );
    }
    std::fs::write(d.join("corpus.txt"), text).unwrap();
    d
}

/// The one-line error of `--device cuda` without support or without a GPU.
fn assert_device_error(args: &[&str], code: i32, stderr: &str) {
    assert_eq!(code, 2, "{args:?}: exit code {code}, stderr {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "{args:?}: one line, got {stderr}"
    );
    let want = if cfg!(feature = "cuda") {
        "recur: error: no CUDA device found"
    } else {
        "recur: error: CUDA support was not compiled in"
    };
    assert!(stderr.starts_with(want), "{args:?}: {stderr}");
}

/// `train`, `eval`, `sample` and `bench --charlm` with `--device cuda`: one line, exit 2, without
/// support or without a GPU. With both, a run trained on the CPU continues on the GPU with
/// --resume, and the GPU's checkpoint evaluates and samples on either device.
#[test]
fn char_model_commands_on_cuda_or_one_line_error() {
    let d = corpus("charlm");
    let data = d.join("corpus.txt");
    let ck = d.join("ck");
    let (data, ck) = (data.to_str().unwrap(), ck.to_str().unwrap());
    let small = [
        "--data",
        data,
        "--checkpoint-dir",
        ck,
        "--num-layers",
        "2",
        "--rnn-size",
        "16",
        "--batch-size",
        "4",
        "--seq-length",
        "8",
        "--sample-length",
        "0",
        "--quiet",
        "--json",
    ];
    // a CPU run of 3 steps
    let mut a = vec!["train", "--max-steps", "3"];
    a.extend(small);
    let (code, _, stderr) = recur(&a);
    assert_eq!(code, 0, "cpu train: {stderr}");
    let best = format!("{ck}/best.safetensors");
    let runs: Vec<Vec<&str>> = vec![
        vec![
            "train",
            "--resume",
            "--checkpoint-dir",
            ck,
            "--max-steps",
            "6",
            "--quiet",
            "--json",
            "--sample-length",
            "0",
            "--device",
            "cuda",
        ],
        vec![
            "eval",
            "--checkpoint",
            &best,
            "--text",
            data,
            "--json",
            "--device",
            "cuda",
        ],
        vec![
            "sample",
            "--checkpoint",
            &best,
            "--length",
            "20",
            "--device",
            "cuda",
        ],
        vec![
            "bench",
            "--charlm",
            "--device",
            "cuda",
            "--batch-size",
            "2",
            "--seq-length",
            "4",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--min-sample-ms",
            "1",
            "--json",
        ],
    ];
    for args in &runs {
        let (code, stdout, stderr) = recur(args);
        if cfg!(feature = "cuda") && code == 0 {
            // a GPU: each command did its work
            match args[0] {
                "train" => assert!(stdout.contains("\"steps\":6"), "{stdout}"),
                "eval" => assert!(stdout.contains("loss_nats"), "{stdout}"),
                "sample" => assert!(stdout.trim_end().chars().count() >= 20, "{stdout}"),
                _ => assert!(stdout.contains("chars_per_s"), "{stdout}"),
            }
            continue;
        }
        assert_device_error(args, code, &stderr);
    }
    if cfg!(feature = "cuda") {
        // whichever device wrote it, the latest checkpoint continues on the CPU
        let (code, _, stderr) = recur(&[
            "train",
            "--resume",
            "--checkpoint-dir",
            ck,
            "--max-steps",
            "8",
            "--quiet",
            "--json",
            "--sample-length",
            "0",
        ]);
        assert_eq!(code, 0, "resume on the cpu: {stderr}");
    }
    let _ = std::fs::remove_dir_all(d);
}

/// `task --device cuda`: one line, exit 2, without support or without a GPU; with both, a short
/// run reports its result.
#[test]
fn task_on_cuda_or_one_line_error() {
    let d = corpus("task");
    let out = d.join("chart");
    let args = [
        "task",
        "adding",
        "--len",
        "6",
        "--rnn-size",
        "8",
        "--batch-size",
        "4",
        "--max-steps",
        "3",
        "--eval-every",
        "1",
        "--eval-size",
        "8",
        "--json",
        "--device",
        "cuda",
        "--out",
        out.to_str().unwrap(),
    ];
    let (code, stdout, stderr) = recur(&args);
    if cfg!(feature = "cuda") && code == 0 {
        assert!(stdout.contains("\"steps\":3"), "{stdout}");
    } else {
        assert_device_error(&args, code, &stderr);
    }
    let _ = std::fs::remove_dir_all(d);
}

/// `speech train|eval --device cuda` on the committed sample recordings: one line, exit 2,
/// without support or without a GPU; with both, 2 epochs train and the checkpoint evaluates.
#[test]
fn speech_on_cuda_or_one_line_error() {
    let d = corpus("speech");
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fsdd-sample");
    let run = d.join("run");
    let (data, run_s) = (data.to_str().unwrap(), run.to_str().unwrap());
    let train = [
        "speech",
        "train",
        "--data",
        data,
        "--checkpoint-dir",
        run_s,
        "--val-takes",
        "none",
        "--epochs",
        "2",
        "--batch-size",
        "6",
        "--rnn-size",
        "16",
        "--json",
        "--device",
        "cuda",
    ];
    let (code, stdout, stderr) = recur(&train);
    if cfg!(feature = "cuda") && code == 0 {
        assert!(stdout.contains("\"epochs\":2"), "{stdout}");
    } else {
        assert_device_error(&train, code, &stderr);
    }
    let best = run.join("best.safetensors");
    let best = best.to_str().unwrap();
    let eval = [
        "speech",
        "eval",
        "--checkpoint",
        best,
        "--data",
        data,
        "--json",
        "--device",
        "cuda",
    ];
    let (code, stdout, stderr) = recur(&eval);
    if cfg!(feature = "cuda") && code == 0 {
        assert!(stdout.contains("accuracy"), "{stdout}");
    } else {
        assert_device_error(&eval, code, &stderr);
    }
    let _ = std::fs::remove_dir_all(d);
}
