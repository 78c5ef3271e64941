//! One vocabulary for every command: each command's `--help` lists exactly the shared long flags
//! that apply to it (`--rnn-size`, `--num-layers`, `--batch-size`, `--learning-rate`,
//! `--checkpoint-dir`, `--resume`, `--device`, `--threads`, `--json`, `--cell`, `--seq-length`,
//! `--max-steps`), with the old spellings only as aliases; an unknown enumerated value is clap's
//! one-line usage error (exit code 2); the old spellings still parse.

mod common;
use common::{json_of, one_line_error, recur, recur_in, scratch};

/// Every shared long flag.
const SHARED: &[&str] = &[
    "--rnn-size",
    "--num-layers",
    "--batch-size",
    "--learning-rate",
    "--checkpoint-dir",
    "--resume",
    "--device",
    "--threads",
    "--json",
    "--cell",
    "--seq-length",
    "--max-steps",
];

/// Spellings of other dialects that no command may have as its primary long flag.
const OLD: &[&str] = &[
    "--hidden",
    "--layers",
    "--batch",
    "--lr",
    "--steps",
    "--minutes",
    "--cells",
    "--iters",
];

/// The visible alias each shared flag carries, where it has one.
const ALIASES: &[(&str, &str)] = &[
    ("--rnn-size", "--hidden"),
    ("--num-layers", "--layers"),
    ("--batch-size", "--batch"),
    ("--learning-rate", "--lr"),
];

/// One option of a `--help` text: its primary long flag and its visible aliases.
#[derive(Debug)]
struct Opt {
    long: String,
    aliases: Vec<String>,
}

/// The options `recur <cmd> --help` lists. An option's line starts with two spaces and `-x,` or
/// six spaces and `--name`; its description (and its `[alias: ...]` note) follows, indented more.
fn options(cmd: &[&str]) -> Vec<Opt> {
    let mut args = cmd.to_vec();
    args.push("--help");
    let out = recur(&args);
    assert!(out.status.success(), "{args:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut opts: Vec<Opt> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if (indent == 2 || indent == 6) && trimmed.starts_with('-') {
            let long = trimmed
                .split_whitespace()
                .map(|t| t.trim_end_matches(','))
                .find(|t| t.starts_with("--"))
                .unwrap_or_else(|| panic!("{args:?}: no long flag in '{line}'"));
            opts.push(Opt {
                long: long.to_string(),
                aliases: Vec::new(),
            });
        }
        for note in ["[alias: ", "[aliases: "] {
            if let Some(i) = line.find(note) {
                let rest = &line[i + note.len()..];
                let list = &rest[..rest.find(']').expect("closed alias note")];
                let last = opts.last_mut().expect("an alias note after an option");
                last.aliases
                    .extend(list.split(", ").map(|a| a.trim().to_string()));
            }
        }
    }
    assert!(!opts.is_empty(), "{args:?}: no options in:\n{text}");
    opts
}

/// `cmd` has exactly the shared flags in `want` (and not the others), none of the old
/// spellings as a primary flag, and the visible aliases of the shared flags it has.
fn check(cmd: &[&str], want: &[&str]) {
    let opts = options(cmd);
    let longs: Vec<&str> = opts.iter().map(|o| o.long.as_str()).collect();
    for f in SHARED {
        assert_eq!(
            longs.contains(f),
            want.contains(f),
            "{cmd:?}: shared flag {f} {} (flags: {longs:?})",
            if want.contains(f) {
                "missing"
            } else {
                "unexpected"
            }
        );
    }
    for f in OLD {
        assert!(
            !longs.contains(f),
            "{cmd:?}: old spelling {f} is a primary flag"
        );
    }
    for (f, alias) in ALIASES {
        if let Some(o) = opts.iter().find(|o| o.long == *f) {
            assert!(
                o.aliases.iter().any(|a| a == alias),
                "{cmd:?}: {f} lacks its alias {alias} (aliases: {:?})",
                o.aliases
            );
        }
    }
}

/// `cmd --cell foo` (and `--device tpu` where it has `--device`) is a one-line usage error.
fn unknown_values(cmd: &[&str], device: bool) {
    let mut a = cmd.to_vec();
    a.extend(["--cell", "foo"]);
    let line = one_line_error(
        &recur(&a),
        &[
            "unknown cell 'foo'",
            "--cell",
            "rnn_tanh, rnn_relu, lstm or gru",
        ],
    );
    assert!(!line.contains("panicked"), "{line}");
    if device {
        let mut a = cmd.to_vec();
        a.extend(["--device", "tpu"]);
        one_line_error(&recur(&a), &["unknown --device 'tpu'", "cpu or cuda"]);
    }
}

#[test]
fn hello_flags() {
    check(&["hello"], &["--learning-rate", "--json"]);
    one_line_error(
        &recur(&["hello", "--optim", "lbfgs"]),
        &["unknown optimizer 'lbfgs'", "sgd, adagrad, rmsprop or adam"],
    );
    // the old spelling still parses
    let j = json_of(&recur(&["hello", "--json", "--lr", "0.5"]));
    assert_eq!(j["trained"]["lr"], 0.5);
}

#[test]
fn gradcheck_flags() {
    check(
        &["gradcheck"],
        &[
            "--cell",
            "--rnn-size",
            "--num-layers",
            "--batch-size",
            "--seq-length",
            "--json",
        ],
    );
    unknown_values(&["gradcheck"], false);
    one_line_error(
        &recur(&["gradcheck", "--activation", "sigmoid"]),
        &["unknown activation 'sigmoid'", "tanh or relu"],
    );
    one_line_error(
        &recur(&["gradcheck", "--head", "pooled"]),
        &["unknown head 'pooled'", "step_classes"],
    );
}

const BENCH: &[&str] = &[
    "--cell",
    "--rnn-size",
    "--num-layers",
    "--batch-size",
    "--seq-length",
    "--device",
    "--threads",
    "--json",
];

#[test]
fn bench_flags() {
    check(&["bench"], BENCH);
    unknown_values(&["bench"], true);
    one_line_error(
        &recur(&["bench", "--mode", "fast"]),
        &["unknown --mode 'fast'", "infer, train or both"],
    );
    // the old spellings (of `bench` and of the former `gpu-bench`) still parse, to the same shape
    let j = json_of(&recur(&[
        "bench",
        "--hidden",
        "8",
        "--layers",
        "2",
        "--batch",
        "2",
        "--steps",
        "3",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--min-sample-ms",
        "0",
        "--json",
    ]));
    assert_eq!(
        (&j["hidden"], &j["layers"], &j["batch"], &j["seq_length"]),
        (&8.into(), &2.into(), &2.into(), &3.into()),
        "{j}"
    );
}

/// `gpu-bench` is `bench` under its former name: not listed, the same flags.
#[test]
fn gpu_bench_is_a_hidden_alias_of_bench() {
    let top = String::from_utf8(recur(&["--help"]).stdout).unwrap();
    assert!(top.contains("bench"), "{top}");
    assert!(!top.contains("gpu-bench"), "{top}");
    check(&["gpu-bench"], BENCH);
    let help = |c: &str| String::from_utf8(recur(&[c, "--help"]).stdout).unwrap();
    assert_eq!(help("gpu-bench"), help("bench"));
}

#[test]
fn train_flags() {
    check(
        &["train"],
        &[
            "--cell",
            "--rnn-size",
            "--num-layers",
            "--batch-size",
            "--seq-length",
            "--learning-rate",
            "--checkpoint-dir",
            "--resume",
            "--device",
            "--threads",
            "--json",
            "--max-steps",
        ],
    );
    unknown_values(&["train"], true);
    one_line_error(
        &recur(&["train", "--optim", "lbfgs"]),
        &["unknown optimizer 'lbfgs'", "--optim"],
    );
}

#[test]
fn sample_flags() {
    check(&["sample"], &["--device", "--threads"]);
    one_line_error(
        &recur(&["sample", "--device", "tpu"]),
        &["unknown --device 'tpu'"],
    );
}

#[test]
fn eval_flags() {
    check(&["eval"], &["--device", "--threads", "--json"]);
    one_line_error(
        &recur(&["eval", "--device", "tpu"]),
        &["unknown --device 'tpu'"],
    );
}

#[test]
fn gradflow_flags() {
    check(
        &["gradflow"],
        &["--cell", "--rnn-size", "--seq-length", "--json"],
    );
    unknown_values(&["gradflow"], false);
    // the old spellings still parse
    let d = scratch("flags-gradflow");
    let j = json_of(&recur_in(
        &d,
        &[
            "gradflow",
            "--cells",
            "lstm",
            "--len",
            "4",
            "--hidden",
            "3",
            "--sequences",
            "1",
            "--out",
            "gf",
            "--json",
        ],
    ));
    assert_eq!((&j["len"], &j["hidden"]), (&4.into(), &3.into()), "{j}");
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn task_flags() {
    for task in ["adding", "copy", "ball"] {
        check(
            &["task", task],
            &[
                "--cell",
                "--rnn-size",
                "--num-layers",
                "--batch-size",
                "--learning-rate",
                "--checkpoint-dir",
                "--resume",
                "--device",
                "--threads",
                "--json",
                "--max-steps",
                "--seq-length",
            ],
        );
        unknown_values(&["task", task], true);
    }
    one_line_error(
        &recur(&["task", "adding", "--cell", "lstm,foo"]),
        &["unknown cell 'foo'"],
    );
    // the old spellings still parse
    let d = scratch("flags-task");
    let j = json_of(&recur_in(
        &d,
        &[
            "task",
            "adding",
            "--len",
            "5",
            "--hidden",
            "4",
            "--batch",
            "2",
            "--lr",
            "0.01",
            "--steps",
            "2",
            "--minutes",
            "1",
            "--eval-every",
            "1",
            "--eval-size",
            "4",
            "--out",
            "chart",
            "--json",
        ],
    ));
    assert_eq!(
        (&j["steps"], &j["hidden"], &j["batch"], &j["lr"]),
        (&2.into(), &4.into(), &2.into(), &0.01.into()),
        "{j}"
    );
    // --out names the run directory now
    assert!(d.join("chart/curve.png").exists());
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn speech_flags() {
    check(
        &["speech", "train"],
        &[
            "--cell",
            "--rnn-size",
            "--num-layers",
            "--batch-size",
            "--learning-rate",
            "--checkpoint-dir",
            "--resume",
            "--device",
            "--threads",
            "--json",
        ],
    );
    let longs: Vec<String> = options(&["speech", "train"])
        .into_iter()
        .map(|o| o.long)
        .collect();
    assert!(!longs.iter().any(|l| l == "--out"), "{longs:?}");
    unknown_values(&["speech", "train"], true);
    one_line_error(
        &recur(&["speech", "train", "--pool", "max"]),
        &["unknown --pool 'max'", "mean or last"],
    );
    check(&["speech", "eval"], &["--device", "--threads", "--json"]);
    check(&["speech", "predict"], &["--json"]);
}
