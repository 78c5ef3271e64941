//! End-to-end tests of `recur gradflow` and `recur task`: run the binary in a temporary directory,
//! read its JSON, check the files it promises and its one-line errors.

mod common;
use common::{json_of, one_line_error, recur_in, scratch};
use std::path::PathBuf;
use std::process::Command;

fn dir(name: &str) -> PathBuf {
    scratch(&format!("lm-cli-{name}"))
}

#[test]
fn gradflow_shows_vanishing_and_exploding_and_writes_its_files() {
    let d = dir("gradflow");
    let j = json_of(&recur_in(
        &d,
        &[
            "gradflow",
            "--seq-length",
            "20",
            "--rnn-size",
            "8",
            "--sequences",
            "3",
            "--scales",
            "1,4",
            "--out",
            "gf",
            "--json",
        ],
    ));
    let curves = j["curves"].as_array().unwrap();
    assert_eq!(curves.len(), 6, "3 cells x 2 scales");
    let rel = |cell: &str, scale: f64| -> Vec<f64> {
        let c = curves
            .iter()
            .find(|c| c["cell"] == cell && c["scale"] == scale)
            .unwrap();
        c["mean_rel_norm"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let v = rel("rnn_tanh", 1.0);
    assert_eq!(v.len(), 21);
    assert_eq!(v[0], 1.0);
    // default init: shrinks by orders of magnitude over 20 steps; W_hh x4: grows
    assert!(v[20] < 1e-2, "tanh RNN at default init: {}", v[20]);
    assert!(rel("rnn_tanh", 4.0)[20] > 1.0, "tanh RNN with W_hh x4");
    for f in ["gf.csv", "gf.png", "gf.svg"] {
        assert!(d.join(f).metadata().unwrap().len() > 100, "{f}");
    }
    let csv = std::fs::read_to_string(d.join("gf.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 6 * 21);
}

#[test]
fn task_adding_json_beats_the_baseline() {
    let d = dir("adding");
    let j = json_of(&recur_in(
        &d,
        &[
            "task",
            "adding",
            "--len",
            "10",
            "--rnn-size",
            "16",
            "--learning-rate",
            "1e-2",
            "--max-steps",
            "600",
            "--eval-every",
            "200",
            "--eval-size",
            "128",
            "--seed",
            "5",
            "--json",
        ],
    ));
    for k in [
        "task", "cell", "len", "steps", "metric", "baseline", "solved",
    ] {
        assert!(j.get(k).is_some(), "missing {k}");
    }
    assert_eq!(j["task"], "adding");
    assert_eq!(j["len"], 10);
    assert_eq!(j["steps"], 600);
    let (m, b) = (
        j["metric"].as_f64().unwrap(),
        j["baseline"].as_f64().unwrap(),
    );
    assert!((b - 1.0 / 6.0).abs() < 1e-12);
    assert!(m < 0.25 * b, "metric {m}");
    assert_eq!(j["solved"], m < 0.01);
    // the carry gates start open by default; the first evaluation under 0.01, if any, is named
    assert_eq!(j["carry_gate_bias"], 3.0);
    let curve = j["curve"].as_array().unwrap();
    let first = curve
        .iter()
        .find(|p| p["metric"].as_f64().unwrap() < 0.01)
        .map(|p| p["step"].clone());
    assert_eq!(j["first_solved_step"], first.unwrap_or_default());
    // the default run directory: the charts, and the cell's checkpoints in their own folder
    let run = d.join("task-adding-lstm-10");
    for f in [
        "curve.png",
        "curve.svg",
        "lstm/best.safetensors",
        "lstm/latest.safetensors",
    ] {
        assert!(run.join(f).exists(), "{f}");
    }
}

#[test]
fn task_ball_writes_the_paths_chart() {
    let d = dir("ball");
    let j = json_of(&recur_in(
        &d,
        &[
            "task",
            "ball",
            "--len",
            "20",
            "--rnn-size",
            "16",
            "--cell",
            "gru",
            "--max-steps",
            "50",
            "--eval-size",
            "64",
            "--checkpoint-dir",
            "b",
            "--json",
        ],
    ));
    assert_eq!(j["task"], "ball");
    for f in ["curve.png", "curve.svg", "paths.png", "paths.svg"] {
        assert!(d.join("b").join(f).exists(), "{f}");
    }
}

#[test]
fn bad_arguments_are_one_line_errors() {
    let d = dir("errors");
    let e = one_line_error(&recur_in(&d, &["task", "copy", "--len", "0"]), &[]);
    assert!(e.contains("length"), "{e}");
    let e = one_line_error(&recur_in(&d, &["task", "adding", "--cell", "tcn"]), &[]);
    assert!(e.contains("tcn"), "{e}");
    std::fs::write(d.join("a-file"), "not a directory").unwrap();
    let e = one_line_error(
        &recur_in(
            &d,
            &[
                "task",
                "adding",
                "--len",
                "4",
                "--max-steps",
                "2",
                "--eval-size",
                "8",
                "--checkpoint-dir",
                "a-file/x",
            ],
        ),
        &[],
    );
    assert!(e.contains("a-file/x"), "{e}");
    let e = one_line_error(&recur_in(&d, &["task", "copy", "--resume"]), &[]);
    assert!(
        e.contains("--resume") && e.contains("latest.safetensors"),
        "{e}"
    );
    let e = one_line_error(&recur_in(&d, &["gradflow", "--scales", "1,x"]), &[]);
    assert!(e.contains("'x'"), "{e}");
    let e = one_line_error(&recur_in(&d, &["task", "ball", "--max-minutes", "-1"]), &[]);
    assert!(e.contains("--max-minutes"), "{e}");
    let e = one_line_error(
        &recur_in(&d, &["task", "adding", "--carry-gate-bias", "inf"]),
        &[],
    );
    assert!(e.contains("--carry-gate-bias"), "{e}");
    let e = one_line_error(
        &recur_in(&d, &["gradflow", "--html", "no-such-folder/g.html"]),
        &[],
    );
    assert!(e.contains("no-such-folder"), "{e}");
}

#[test]
fn gradflow_html_writes_one_page_and_no_other_file() {
    let d = dir("gradflow-html");
    let out = recur_in(
        &d,
        &[
            "gradflow",
            "--seq-length",
            "12",
            "--rnn-size",
            "6",
            "--sequences",
            "2",
            "--html",
            "g.html",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("wrote g.html"), "{stdout}");
    let page = std::fs::read_to_string(d.join("g.html")).unwrap();
    // the three curves embedded, the shared script and style put in
    assert!(page.contains("\"label\":\"rnn_tanh\"") && page.contains("\"label\":\"gru\""));
    assert!(page.contains("function logChart") && page.contains("--bg:"));
    assert!(
        !page.contains("/*DATA*/") && !page.contains("/*COMMON*/") && !page.contains("/*STYLE*/")
    );
    let names: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["g.html"], "--html alone writes no CSV or chart");
}

#[test]
fn task_adding_gradflow_charts_trained_and_initial_weights() {
    let d = dir("adding-gradflow");
    let j = json_of(&recur_in(
        &d,
        &[
            "task",
            "adding",
            "--len",
            "12",
            "--rnn-size",
            "8",
            "--cell",
            "gru",
            "--max-steps",
            "20",
            "--eval-size",
            "32",
            "--gradflow",
            "4",
            "--checkpoint-dir",
            "a",
            "--json",
        ],
    ));
    let g = &j["gradflow"];
    for k in ["trained_rel", "initial_rel"] {
        let v = g[k].as_array().unwrap();
        assert_eq!(v.len(), 13, "{k}: distances 0..=T");
        assert_eq!(v[0].as_f64().unwrap(), 1.0);
    }
    assert!(d.join("a/gradflow.png").exists() && d.join("a/gradflow.svg").exists());
    let e = one_line_error(&recur_in(&d, &["task", "copy", "--gradflow", "4"]), &[]);
    assert!(e.contains("--gradflow"), "{e}");
}

/// SIGTERM (handled as Ctrl-C) ends training cleanly: the result so far is printed, charted and
/// saved, exit code 0.
#[cfg(unix)]
#[test]
fn sigterm_stops_training_with_the_result_so_far() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let d = dir("ctrl-c");
    let mut child = Command::new(env!("CARGO_BIN_EXE_recur"))
        .current_dir(&d)
        .args([
            "task",
            "adding",
            "--len",
            "10",
            "--rnn-size",
            "8",
            "--max-steps",
            "100000000",
            "--eval-every",
            "20",
            "--eval-size",
            "32",
            "--checkpoint-dir",
            "c",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run recur");
    // wait for the first evaluation line, so that training is under way
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 && !line.contains("held-out") {
        line.clear();
    }
    assert!(line.contains("held-out"), "no progress line before exit");
    common::signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    let j = json_of(&out);
    assert_eq!(j["stopped_by"], "stopped");
    let steps = j["steps"].as_u64().unwrap();
    assert!(steps > 0 && steps < 100_000_000, "{steps}");
    assert!(d.join("c/curve.png").exists() && d.join("c/lstm/latest.safetensors").exists());
}

/// A run stopped at its step limit continues with --resume to a higher one and ends where one
/// uninterrupted run ends (the same held-out metric, bit for bit); the curve keeps the
/// evaluations before the stop. A fresh run refuses a directory that holds one, and a resume
/// refuses other settings.
#[test]
fn task_resumes_where_it_stopped() {
    let d = dir("resume");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "task",
            "adding",
            "--len",
            "8",
            "--rnn-size",
            "8",
            "--cell",
            "gru",
            "--eval-every",
            "20",
            "--eval-size",
            "32",
            "--seed",
            "3",
            "--json",
        ];
        args.extend(extra);
        recur_in(&d, &args)
    };
    let whole = json_of(&run(&["--max-steps", "80", "--checkpoint-dir", "whole"]));
    let first = json_of(&run(&["--max-steps", "40", "--checkpoint-dir", "parts"]));
    assert_eq!(first["steps"], 40);
    let rest = json_of(&run(&[
        "--max-steps",
        "80",
        "--checkpoint-dir",
        "parts",
        "--resume",
    ]));
    assert_eq!(rest["steps"], 80);
    assert_eq!(rest["metric"], whole["metric"], "resumed vs uninterrupted");
    let steps: Vec<u64> = (rest["curve"].as_array().unwrap().iter())
        .map(|p| p["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![20, 40, 60, 80]);
    let e = one_line_error(&run(&["--checkpoint-dir", "parts"]), &[]);
    assert!(
        e.contains("already holds a run") && e.contains("--resume"),
        "{e}"
    );
    let e = one_line_error(
        &run(&[
            "--checkpoint-dir",
            "parts",
            "--resume",
            "--learning-rate",
            "0.5",
        ]),
        &[],
    );
    assert!(e.contains("other settings") && e.contains("lr"), "{e}");
    let e = one_line_error(
        &run(&["--checkpoint-dir", "parts", "--resume", "--num-layers", "2"]),
        &[],
    );
    assert!(e.contains("another model"), "{e}");
}
