//! `recur train` over MPI ranks (`mpirun -np 2`, the `mpi` feature): two ranks give one process's
//! losses on the same global batch, checkpoints move between rank counts, a failing rank ends the
//! job with one line naming it. Without the feature, a run under a launcher with several ranks is
//! refused. Open MPI runs as root only when told to: the two variables below.

mod common;
#[cfg(not(feature = "mpi"))]
use common::one_line_error;
#[cfg(feature = "mpi")]
use common::recur;
use common::{scratch, write_corpus};
use std::path::Path;
use std::process::Command;
#[cfg(feature = "mpi")]
use std::process::Output;

/// Losses of 2 ranks against one process: the same float32 sums in another order (measured:
/// under 1e-9 on these runs), printed with 6 decimals in the log.
#[cfg(feature = "mpi")]
const LOSS_TOL: f64 = 2e-6;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The flags of a small run on `corpus` into `dir` (without dropout: each rank draws its own
/// masks, so with dropout the runs agree in distribution, not number for number).
fn small<'a>(corpus: &'a Path, dir: &'a Path, steps: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        s(corpus),
        "--checkpoint-dir",
        s(dir),
        "--num-layers",
        "2",
        "--rnn-size",
        "24",
        "--dropout",
        "0",
        "--batch-size",
        "4",
        "--seq-length",
        "16",
        "--max-steps",
        steps,
        "--eval-every",
        "5",
        "--threads",
        "1",
        "--sample-length",
        "0",
        "--quiet",
        "--json",
    ]
}

#[cfg(feature = "mpi")]
fn mpirun(parts: &[&[&str]]) -> Output {
    let mut cmd = Command::new("mpirun");
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .arg("--oversubscribe");
    for (k, args) in parts.iter().enumerate() {
        if k > 0 {
            cmd.arg(":");
        }
        cmd.args(["-np", "1", env!("CARGO_BIN_EXE_recur")])
            .args(*args);
    }
    cmd.output().expect("run mpirun")
}

/// (step, train loss, val loss) of every row of a run's log.
#[cfg(feature = "mpi")]
fn log(dir: &Path) -> Vec<(u64, f64, Option<f64>)> {
    let text = std::fs::read_to_string(dir.join("log.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|r| {
            let c: Vec<&str> = r.split(',').collect();
            (
                c[0].parse().unwrap(),
                c[5].parse().unwrap(),
                c[6].parse().ok(),
            )
        })
        .collect()
}

#[cfg(feature = "mpi")]
fn same(a: &[(u64, f64, Option<f64>)], b: &[(u64, f64, Option<f64>)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: {a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.0, y.0, "{what}");
        assert!((x.1 - y.1).abs() < LOSS_TOL, "{what}: {x:?} vs {y:?}");
        match (x.2, y.2) {
            (Some(u), Some(v)) => assert!((u - v).abs() < LOSS_TOL, "{what}: {x:?} vs {y:?}"),
            (None, None) => {}
            _ => panic!("{what}: {x:?} vs {y:?}"),
        }
    }
}

#[cfg(feature = "mpi")]
fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(feature = "mpi")]
#[test]
fn two_ranks_train_as_one_process_and_checkpoints_move_between_rank_counts() {
    let d = scratch("mpi-train");
    let corpus = write_corpus(&d);
    let (one, two) = (d.join("one"), d.join("two"));
    ok(&recur(&small(&corpus, &one, "20")));
    let a = small(&corpus, &two, "20");
    let out = mpirun(&[&a, &a]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    // rank 0 alone prints its header
    assert_eq!(err.matches("recur train:").count(), 1, "{err}");
    assert!(err.contains("x 2 MPI ranks"), "{err}");
    same(&log(&one), &log(&two), "2 ranks vs 1 process");
    assert_eq!(log(&two).len(), 20);

    // 2 ranks for 10 steps, resumed by 1 process; 1 process for 10, resumed by 2 ranks
    for (name, first_mpi) in [("two-then-one", true), ("one-then-two", false)] {
        let dir = d.join(name);
        let first = small(&corpus, &dir, "10");
        if first_mpi {
            ok(&mpirun(&[&first, &first]));
        } else {
            ok(&recur(&first));
        }
        let resume: Vec<&str> = vec![
            "train",
            "--data",
            s(&corpus),
            "--checkpoint-dir",
            s(&dir),
            "--resume",
            "--max-steps",
            "20",
            "--threads",
            "1",
            "--sample-length",
            "0",
            "--quiet",
            "--json",
        ];
        if first_mpi {
            ok(&recur(&resume));
        } else {
            ok(&mpirun(&[&resume, &resume]));
        }
        same(&log(&one), &log(&dir), name);
    }
}

#[cfg(feature = "mpi")]
#[test]
fn a_failing_rank_ends_the_job_with_one_line_naming_it() {
    let d = scratch("mpi-fail");
    let corpus = write_corpus(&d);
    let dir = d.join("ck");
    let good = small(&corpus, &dir, "20");
    let missing = d.join("missing.txt");
    let mut bad = small(&corpus, &dir, "20");
    bad[2] = s(&missing);
    let out = mpirun(&[&good, &bad]);
    assert_eq!(out.status.code(), Some(2));
    // recur's one line for the failure (Open MPI's own note about the abort may come before or
    // after it: mpirun forwards the ranks' stderr as it arrives)
    let err = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("recur: error:"))
        .collect();
    assert_eq!(ours.len(), 1, "{err}");
    assert!(
        ours[0].starts_with("recur: error: rank 1 of 2: ") && ours[0].contains("missing.txt"),
        "{err}"
    );
    // a batch the ranks cannot share equally: refused by every rank, one line each
    let odd_dir = d.join("odd");
    let mut odd = small(&corpus, &odd_dir, "20");
    odd[12] = "5";
    let out = mpirun(&[&odd, &odd]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not split into 2 equal shares"), "{err}");
}

/// Without the `mpi` feature, a process that an MPI launcher started as one of several ranks
/// refuses to run (it would be one of N copies of the same run).
#[cfg(not(feature = "mpi"))]
#[test]
fn several_ranks_without_mpi_are_refused() {
    let d = scratch("mpi-absent");
    let corpus = write_corpus(&d);
    let dir = d.join("ck");
    let out = Command::new(env!("CARGO_BIN_EXE_recur"))
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .args(small(&corpus, &dir, "5"))
        .output()
        .unwrap();
    one_line_error(&out, &["built without MPI", "--features mpi"]);
    let task = Command::new(env!("CARGO_BIN_EXE_recur"))
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .args(["task", "adding", "--cell", "lstm", "--max-steps", "2"])
        .arg("--checkpoint-dir")
        .arg(d.join("task"))
        .output()
        .unwrap();
    one_line_error(&task, &["built without MPI", "--features mpi"]);
    // one rank is a plain run
    let one = Command::new(env!("CARGO_BIN_EXE_recur"))
        .env("OMPI_COMM_WORLD_SIZE", "1")
        .args(small(&corpus, &dir, "5"))
        .output()
        .unwrap();
    assert!(
        one.status.success(),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
}

/// A small `recur task adding` run of one cell into `dir`.
#[cfg(feature = "mpi")]
fn small_task<'a>(dir: &'a Path, cell: &'a str) -> Vec<&'a str> {
    vec![
        "task",
        "adding",
        "--cell",
        cell,
        "--len",
        "8",
        "--rnn-size",
        "12",
        "--batch-size",
        "4",
        "--max-steps",
        "12",
        "--eval-every",
        "4",
        "--eval-size",
        "8",
        "--gradflow",
        "0",
        "--threads",
        "1",
        "--checkpoint-dir",
        s(dir),
        "--json",
    ]
}

/// `recur task` under `mpirun -np 2`: the one cell's run equals one process's (its held-out
/// curve), rank 0 alone reports; several cells at once are refused by every rank.
#[cfg(feature = "mpi")]
#[test]
fn two_ranks_train_a_task_as_one_process() {
    let d = scratch("mpi-task");
    let (one, two) = (d.join("one"), d.join("two"));
    let out = recur(&small_task(&one, "lstm"));
    ok(&out);
    let a = small_task(&two, "lstm");
    let out2 = mpirun(&[&a, &a]);
    ok(&out2);
    let curve = |out: &Output| -> Vec<f64> {
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('{')).collect();
        // rank 0 alone prints its result
        assert_eq!(lines.len(), 1, "{text}");
        let j: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(j["steps"], 12);
        j["curve"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["metric"].as_f64().unwrap())
            .collect()
    };
    let (c1, c2) = (curve(&out), curve(&out2));
    assert_eq!(c1.len(), c2.len());
    for (x, y) in c1.iter().zip(&c2) {
        assert!(
            (x - y).abs() < LOSS_TOL * x.abs().max(1.0),
            "{c1:?} vs {c2:?}"
        );
    }
    assert!(two.join("lstm").join("latest.safetensors").is_file());

    let all_dir = d.join("all");
    let all = small_task(&all_dir, "lstm,gru");
    let out = mpirun(&[&all, &all]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("under MPI, train one cell at a time"), "{err}");
}

/// A small `recur speech train` run on the committed sample recordings into `dir`: 30
/// recordings in batches of 5, which 2 ranks share as 2 and 3.
#[cfg(feature = "mpi")]
fn small_speech<'a>(data: &'a str, dir: &'a Path, batch: &'a str) -> Vec<&'a str> {
    vec![
        "speech",
        "train",
        "--data",
        data,
        "--checkpoint-dir",
        s(dir),
        "--val-takes",
        "none",
        "--epochs",
        "2",
        "--batch-size",
        batch,
        "--rnn-size",
        "16",
        "--threads",
        "1",
        "--json",
    ]
}

/// `recur speech train` under `mpirun -np 2` ends with one process's weights (float32 rounding
/// of the sums aside); a batch smaller than the ranks is refused.
#[cfg(feature = "mpi")]
#[test]
fn two_ranks_train_the_speech_classifier_as_one_process() {
    let d = scratch("mpi-speech");
    let data = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/fsdd-sample");
    let data = s(&data);
    let (one, two) = (d.join("one"), d.join("two"));
    ok(&recur(&small_speech(data, &one, "5")));
    let a = small_speech(data, &two, "5");
    let out = mpirun(&[&a, &a]);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    // rank 0 alone reports
    assert_eq!(
        text.lines().filter(|l| l.starts_with('{')).count(),
        1,
        "{text}"
    );
    let weights = |dir: &Path| {
        recur::checkpoint::load(&dir.join("latest.safetensors"))
            .unwrap()
            .params
    };
    let (w1, w2) = (weights(&one), weights(&two));
    assert_eq!(w1.len(), w2.len());
    let worst = w1
        .iter()
        .zip(&w2)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "weights off by {worst}");

    let small_dir = d.join("small");
    let b = small_speech(data, &small_dir, "1");
    let out = mpirun(&[&b, &b]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not give each of 2 ranks one"), "{err}");
}

/// A small `recur speech train-strings` run on the committed sample recordings into `dir`: 20
/// strings (speaker george held out) in batches of 5, which 2 ranks share as 2 and 3.
#[cfg(feature = "mpi")]
fn small_strings<'a>(data: &'a str, dir: &'a Path, batch: &'a str) -> Vec<&'a str> {
    vec![
        "speech",
        "train-strings",
        "--data",
        data,
        "--checkpoint-dir",
        s(dir),
        "--holdout",
        "george",
        "--strings",
        "20",
        "--val-strings",
        "4",
        "--test-strings",
        "4",
        "--epochs",
        "2",
        "--batch-size",
        batch,
        "--rnn-size",
        "16",
        "--threads",
        "1",
        "--json",
    ]
}

/// `recur speech train-strings` under `mpirun -np 2` ends with one process's weights and
/// validation CTC (float32 rounding of the sums aside); a batch smaller than the ranks is
/// refused.
#[cfg(feature = "mpi")]
#[test]
fn two_ranks_train_the_transcriber_as_one_process() {
    let d = scratch("mpi-strings");
    let data = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/fsdd-sample");
    let data = s(&data);
    let (one, two) = (d.join("one"), d.join("two"));
    let single = recur(&small_strings(data, &one, "5"));
    ok(&single);
    let a = small_strings(data, &two, "5");
    let out = mpirun(&[&a, &a]);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let reports: Vec<&str> = text.lines().filter(|l| l.starts_with('{')).collect();
    // rank 0 alone reports
    assert_eq!(reports.len(), 1, "{text}");
    let val = |report: &str| {
        let j: serde_json::Value = serde_json::from_str(report).unwrap();
        j["best_val_loss"].as_f64().unwrap()
    };
    let one_report = String::from_utf8_lossy(&single.stdout).to_string();
    let (v1, v2) = (val(one_report.trim()), val(reports[0]));
    assert!(
        (v1 - v2).abs() < 1e-4 * v1.abs(),
        "validation CTC {v1} vs {v2}"
    );
    let weights = |dir: &Path| {
        recur::checkpoint::load(&dir.join("latest.safetensors"))
            .unwrap()
            .params
    };
    let (w1, w2) = (weights(&one), weights(&two));
    let worst = w1
        .iter()
        .zip(&w2)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "weights off by {worst}");

    let small_dir = d.join("small");
    let b = small_strings(data, &small_dir, "1");
    let out = mpirun(&[&b, &b]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not give each of 2 ranks one"), "{err}");
}
