//! One run per directory: a training run holds an advisory lock on its checkpoint directory for
//! as long as it lives, so a second run started there by mistake (at the same moment, or as a
//! second `--resume`) is refused instead of overwriting the first one's checkpoints.
//!
//! The lock is the operating system's (`flock` on `<dir>/.recur.lock`), so it goes away with
//! the process however it ends: a run killed with SIGKILL leaves no lock that blocks the next
//! `--resume`. The file itself stays, holding the last holder's process id for the message.
//! Taking the lock also removes the temporary files a write cut short left behind
//! (`.<name>.tmp<pid>`, see [`crate::checkpoint::save`]): no other run can be writing them.

use crate::error::{io_reason, Error, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside a run directory.
pub const LOCK_FILE: &str = ".recur.lock";

/// A held run directory; dropping it releases the lock. A directory the lock created and
/// nothing else was written to (the command failed before its run began) is removed again.
#[derive(Debug)]
pub struct RunLock {
    dir: PathBuf,
    created: bool,
    // the lock lives as long as this open file
    _file: File,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if !self.created {
            return;
        }
        let only_the_lock = std::fs::read_dir(&self.dir).is_ok_and(|entries| {
            entries
                .flatten()
                .all(|e| e.file_name().to_str() == Some(LOCK_FILE))
        });
        if only_the_lock {
            let _ = std::fs::remove_file(self.dir.join(LOCK_FILE));
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

impl RunLock {
    /// Creates `dir` if needed and locks it for this process; an error naming the directory
    /// (and the process holding it, when known) if another run holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let bad = |e: std::io::Error| {
            Error::invalid(format!(
                "checkpoint directory '{}' cannot be written: {}",
                dir.display(),
                io_reason(&e)
            ))
        };
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(bad)?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(bad)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let who = match holder.trim().parse::<u32>() {
                    Ok(pid) => format!(" (process {pid})"),
                    Err(_) => String::new(),
                };
                return Err(Error::invalid(format!(
                    "'{}' is in use by another recur run{who}: wait for it to end, stop it, or \
                     choose another --checkpoint-dir",
                    dir.display()
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::invalid(format!(
                    "cannot lock '{}': {}",
                    path.display(),
                    io_reason(&e)
                )))
            }
        }
        // the holder's id, for the message a second run prints (best effort: the lock is what
        // counts)
        let _ = file.set_len(0);
        let _ = file.seek(SeekFrom::Start(0));
        let _ = write!(file, "{}", std::process::id());
        let _ = file.flush();
        remove_stale_temporaries(dir);
        Ok(RunLock {
            dir: dir.to_path_buf(),
            created,
            _file: file,
        })
    }

    /// The directory held.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Removes `.<name>.tmp<digits>` files (temporary checkpoint files of an earlier run that
/// was killed while writing) in `dir`, where the lock guarantees nobody is writing them now.
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let stale = name.starts_with('.')
            && name
                .rsplit_once(".tmp")
                .is_some_and(|(_, pid)| pid.bytes().all(|c| c.is_ascii_digit()));
        if stale && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("recur-rundir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_held_directory_is_refused_until_released() {
        let d = fresh("held");
        let first = RunLock::acquire(&d).unwrap();
        assert_eq!(first.dir(), d.as_path());
        let e = RunLock::acquire(&d).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "'{}' is in use by another recur run (process {})",
                d.display(),
                std::process::id()
            )),
            "{e}"
        );
        drop(first);
        // nothing was written: the directory the lock made is gone again
        assert!(!d.exists());
        let again = RunLock::acquire(&d).unwrap();
        std::fs::write(d.join("latest.safetensors"), b"x").unwrap();
        drop(again);
        assert!(d.join(LOCK_FILE).exists() && d.join("latest.safetensors").exists());
        let _ = RunLock::acquire(&d).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn taking_the_lock_removes_only_stale_temporaries() {
        let d = fresh("stale");
        std::fs::create_dir_all(&d).unwrap();
        let stale = [".latest.safetensors.tmp4242", ".log.csv.tmp"];
        let kept = ["latest.safetensors", "notes.tmp", ".hidden", ".x.tmpfile"];
        for n in stale.iter().chain(&kept) {
            std::fs::write(d.join(n), b"x").unwrap();
        }
        let _lock = RunLock::acquire(&d).unwrap();
        for n in stale {
            assert!(!d.join(n).exists(), "{n} should be gone");
        }
        for n in kept {
            assert!(d.join(n).exists(), "{n} should be kept");
        }
        drop(_lock);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
