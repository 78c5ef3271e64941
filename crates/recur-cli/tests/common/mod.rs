//! What the end-to-end tests of the `recur` binary share: running it (here or in a directory),
//! reading the JSON it prints, a fresh scratch directory per test, and the check of a bad input's
//! one-line error (exit code 2, `recur: error: ...`).

// each test binary uses its own subset of these
#![allow(dead_code)]

use serde_json::Value;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

/// Runs the built `recur` with `args`.
pub fn recur<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(args)
        .output()
        .expect("run recur")
}

/// Runs the built `recur` with `args` in the directory `cwd`.
pub fn recur_in<S: AsRef<OsStr>>(cwd: &Path, args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_recur"))
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("run recur")
}

/// The one JSON object a successful run printed on stdout.
pub fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// A fresh, empty directory `name` under cargo's per-target temporary directory.
pub fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Asserts exit code 2 and exactly one line on stderr, `recur: error: ...`, that contains every
/// one of `needles` and no panic; returns that line.
pub fn one_line_error(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected, got: {err}");
    assert!(err.starts_with("recur: error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "expected '{n}' in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Sends the signal `name` (INT, TERM, HUP, KILL, ...) to a running `recur`.
pub fn signal(child: &Child, name: &str) {
    let k = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(k.success(), "kill -{name} failed");
}

/// A few thousand characters of play-like text.
pub fn write_corpus(dir: &Path) -> PathBuf {
    let lines = [
        "ROMEO:\nBut soft, what light through yonder window breaks?\n\n",
        "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n\n",
        "HAMLET:\nTo be, or not to be, that is the question.\n\n",
    ];
    let mut text = String::new();
    for i in 0..40 {
        text.push_str(lines[i % 3]);
    }
    let p = dir.join("corpus.txt");
    std::fs::write(&p, text).unwrap();
    p
}

/// A WAV file: RIFF header, a `fmt ` chunk with the given format tag, then `data`.
pub fn wav_bytes(format_tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
    let block = channels * bits / 8;
    let mut fmt = Vec::new();
    fmt.extend_from_slice(&format_tag.to_le_bytes());
    fmt.extend_from_slice(&channels.to_le_bytes());
    fmt.extend_from_slice(&rate.to_le_bytes());
    fmt.extend_from_slice(&(rate * block as u32).to_le_bytes());
    fmt.extend_from_slice(&block.to_le_bytes());
    fmt.extend_from_slice(&bits.to_le_bytes());
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&((4 + 8 + fmt.len() + 8 + data.len()) as u32).to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(b"fmt ");
    out.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
    out.extend_from_slice(&fmt);
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// 16-bit PCM bytes of a 440 Hz tone at half scale, `n` samples at 8 kHz.
pub fn tone(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            let v =
                (16000.0 * (i as f64 * 440.0 * 2.0 * std::f64::consts::PI / 8000.0).sin()) as i16;
            v.to_le_bytes()
        })
        .collect()
}
