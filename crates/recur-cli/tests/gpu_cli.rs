//! `--device cuda` end to end: without the `cuda` feature the binary says that CUDA support was
//! not compiled in; with it, on a machine without a GPU, that no device was found; each as one
//! line with exit code 2. (On a machine with a GPU and the feature, the tiny run must succeed.)

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

#[test]
fn device_cuda_without_support_or_gpu_is_one_line_error() {
    let tiny = [
        "--hidden", "4", "--batch", "2", "--iters", "1", "--warmup", "0",
    ];
    let mut a = vec!["gpu-bench", "--device", "cuda", "--steps", "3"];
    a.extend(tiny);
    check(&a);
    check(&[
        "bench",
        "--device",
        "cuda",
        "--hidden",
        "4",
        "--batch",
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
