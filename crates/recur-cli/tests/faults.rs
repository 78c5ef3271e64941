//! Faults a long training run meets, through the built binary: a second run started on a live
//! run's directory, SIGKILL at random moments (during checkpoint writes too), a full disk.
//! The promise under test: nothing already saved is lost, and every refusal is one line.

mod common;
use common::{json_of, one_line_error, recur, scratch, write_corpus};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A tiny model that trains fast and saves often.
const SMALL: &[&str] = &[
    "--num-layers",
    "1",
    "--rnn-size",
    "16",
    "--batch-size",
    "4",
    "--seq-length",
    "16",
    "--sample-length",
    "0",
    "--quiet",
];

/// `recur train ARGS` started in the background; returns once its header is on stderr (the
/// signal handler and the directory lock are in place by then).
fn start_train(args: &[&str]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_recur"))
        .arg("train")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut header = String::new();
    err.read_line(&mut header).unwrap();
    assert!(header.starts_with("recur train:"), "{header}");
    // keep draining stderr so the child never blocks on a full pipe
    std::thread::spawn(move || {
        let mut sink = String::new();
        while err.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    child
}

fn step_of(path: &Path) -> u64 {
    let ck = recur::checkpoint::load(path)
        .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()));
    ck.train_state.unwrap()["step"].as_u64().unwrap()
}

fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect()
}

#[test]
fn a_second_run_on_a_live_directory_is_refused_and_a_killed_runs_lock_is_not() {
    let d = scratch("faults-lock");
    let corpus = write_corpus(&d);
    let ck = d.join("ck");
    let mut first = start_train(&[
        "--data",
        s(&corpus),
        "--checkpoint-dir",
        s(&ck),
        "--max-minutes",
        "2",
        "--eval-every",
        "0",
        "--quiet",
    ]);
    let pid = first.id().to_string();
    let held = format!("is in use by another recur run (process {pid})");
    // a fresh run and a --resume on the same directory, while the first lives
    for extra in [&["--data", s(&corpus)][..], &["--resume"][..]] {
        let mut args = vec!["train", "--checkpoint-dir", s(&ck), "--max-steps", "2"];
        args.extend_from_slice(extra);
        args.extend_from_slice(SMALL);
        one_line_error(&recur(&args), &[s(&ck), &held]);
    }
    // SIGKILL leaves the lock file but no lock: the next run starts
    common::signal(&first, "KILL");
    first.wait().unwrap();
    assert!(ck.join(recur::rundir::LOCK_FILE).is_file());
    let mut args = vec!["train", "--data", s(&corpus), "--checkpoint-dir", s(&ck)];
    args.extend_from_slice(&["--max-steps", "2", "--json"]);
    args.extend_from_slice(SMALL);
    assert_eq!(json_of(&recur(&args))["steps"], 2);
    let _ = std::fs::remove_dir_all(d);
}

/// SIGKILL at random moments, many times (`RECUR_KILLS`, default 50), with a checkpoint
/// written every step so that many kills land in a write: after each, `best` and `latest` load,
/// and `--resume` continues from the last complete checkpoint (the step never goes back).
#[test]
fn sigkill_at_random_moments_loses_no_saved_checkpoint() {
    let kills: usize = std::env::var("RECUR_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let d = scratch("faults-sigkill");
    let corpus = write_corpus(&d);
    let ck = d.join("ck");
    let mut args = vec!["train", "--data", s(&corpus), "--checkpoint-dir", s(&ck)];
    args.extend_from_slice(&["--max-steps", "2", "--eval-every", "1", "--json"]);
    args.extend_from_slice(SMALL);
    json_of(&recur(&args));
    let mut rng = recur::rng::Rng::new(11);
    let (mut last_step, mut mid_write) = (step_of(&ck.join("latest.safetensors")), 0);
    for k in 0..kills {
        let child = start_train(&[
            "--resume",
            "--checkpoint-dir",
            s(&ck),
            "--max-steps",
            "1000000",
            "--quiet",
        ]);
        std::thread::sleep(Duration::from_millis(20 + (rng.uniform() * 400.0) as u64));
        let mut child = child;
        common::signal(&child, "KILL");
        child.wait().unwrap();
        if !temporaries(&ck).is_empty() {
            mid_write += 1;
        }
        let latest = step_of(&ck.join("latest.safetensors"));
        step_of(&ck.join("best.safetensors"));
        assert!(
            latest >= last_step,
            "kill {k}: latest went back from step {last_step} to {latest}"
        );
        last_step = latest;
    }
    eprintln!("{kills} SIGKILLs, {mid_write} of them left a checkpoint write unfinished; the run reached step {last_step}");
    // the next run removes what an unfinished write left, and continues from the last step
    let mut args = vec!["train", "--resume", "--checkpoint-dir", s(&ck)];
    let target = (last_step + 2).to_string();
    args.extend_from_slice(&["--max-steps", &target, "--json", "--quiet"]);
    let j = json_of(&recur(&args));
    assert_eq!(j["steps"].as_u64().unwrap(), last_step + 2);
    assert_eq!(temporaries(&ck), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(d);
}

/// A full disk: on a small tmpfs (root only; skipped, saying so, where mounting is not
/// allowed), a run whose next checkpoint cannot be written stops with one line naming the
/// problem, and the checkpoints and log written before stay whole.
#[test]
fn a_full_disk_stops_the_run_with_one_line_and_keeps_what_was_saved() {
    let d = scratch("faults-full-disk");
    let corpus = write_corpus(&d);
    let mnt = d.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs", s(&mnt)])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|st| st.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (needs root and mount permission)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let ck = mnt.join("ck");
    let mut args = vec!["train", "--data", s(&corpus), "--checkpoint-dir", s(&ck)];
    args.extend_from_slice(&["--max-steps", "2", "--eval-every", "1", "--json"]);
    args.extend_from_slice(SMALL);
    json_of(&recur(&args));
    let log = std::fs::read_to_string(ck.join("log.csv")).unwrap();
    let listing = || {
        let mut v: Vec<String> = std::fs::read_dir(&ck)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let files = listing();
    // fill what is left of the disk, then free `room` bytes: with none, the run's check that
    // its directory is writable refuses it before training; with 40 KiB (less than a
    // checkpoint), it trains a step and its first checkpoint write fails
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
        let small = [0u8; 512];
        while f.write_all(&small).is_ok() {}
        let _ = f.sync_all();
    }
    let full = std::fs::metadata(&filler).unwrap().len();
    for (room, says) in [
        (0, "checkpoint directory"),
        (40 << 10, "writing: no space left on device"),
    ] {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&filler)
            .unwrap()
            .set_len(full - room)
            .unwrap();
        let out = recur(&[
            "train",
            "--resume",
            "--checkpoint-dir",
            s(&ck),
            "--max-steps",
            "6",
            "--quiet",
        ]);
        // the run's header may come first; the error is its one last line
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("");
        assert_eq!(out.status.code(), Some(2), "room {room}: {err}");
        assert!(
            last.starts_with("recur: error: ") && last.contains(says),
            "room {room}: {err}"
        );
        assert!(
            last.contains("no space left on device") && !err.contains("panicked"),
            "{err}"
        );
        assert_eq!(step_of(&ck.join("latest.safetensors")), 2);
        step_of(&ck.join("best.safetensors"));
        assert_eq!(std::fs::read_to_string(ck.join("log.csv")).unwrap(), log);
        assert_eq!(listing(), files, "room {room}: files left behind");
    }
    drop(_guard);
    let _ = std::fs::remove_dir_all(d);
}
