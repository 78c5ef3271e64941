//! A plan too large for the machine is refused before anything is allocated: one line naming the
//! size it needs, exit code 2, no abort and no backtrace.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(args)
        .output()
        .expect("run recur");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_refused(args: &[&str], unit: &str) {
    let (code, err) = run(args);
    assert_eq!(code, 2, "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    assert!(
        err.contains("needs") && err.contains(unit),
        "{args:?}: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("memory allocation"),
        "{err}"
    );
}

#[test]
fn an_oversized_char_model_is_refused_with_its_size() {
    let dir = std::env::temp_dir().join(format!("recur-oversized-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let corpus = dir.join("text.txt");
    std::fs::write(&corpus, "hello world, hello recurrent world\n".repeat(200)).unwrap();
    let ck = dir.join("ck");
    let args = [
        "train",
        "--data",
        corpus.to_str().unwrap(),
        "--checkpoint-dir",
        ck.to_str().unwrap(),
        "--rnn-size",
        "100000000",
        "--max-steps",
        "1",
    ];
    assert_refused(&args, "EiB");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A run directory of its own for each test (tests run side by side; a shared default directory
/// would be held by whichever runs first).
fn own_dir(name: &str) -> String {
    let d = std::env::temp_dir().join(format!("recur-oversized-{name}-{}", std::process::id()));
    d.to_str().unwrap().to_string()
}

#[test]
fn an_oversized_task_model_is_refused_with_its_size() {
    let d = own_dir("task");
    assert_refused(
        &[
            "task",
            "adding",
            "--rnn-size",
            "100000000",
            "--checkpoint-dir",
            &d,
        ],
        "PiB",
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_parameter_count_past_any_machine_is_refused() {
    let d = own_dir("count");
    let (code, err) = run(&[
        "task",
        "adding",
        "--rnn-size",
        "10000000000",
        "--checkpoint-dir",
        &d,
    ]);
    let _ = std::fs::remove_dir_all(&d);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("more than any machine can hold"), "{err}");
}
