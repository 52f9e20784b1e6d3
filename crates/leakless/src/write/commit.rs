//! Publishing a dataset: one lock per destination, one staging folder per
//! run, one atomic rename that publishes, and the cleanup of dead runs.
//!
//! The protocol (also in `docs/semantics.md`), for `--out PARENT/NAME`:
//! 1. Lock `PARENT/.NAME.leakless-lock` with `flock`, held until the run
//!    ends. A second run fails at once naming the holder written in the
//!    file (or waits). The kernel drops the lock of a dead process, so a
//!    lock file left by a crash is simply taken over; the file itself is
//!    never deleted (deleting a lock file races with its next taker).
//! 2. Under the lock no other run is alive, so every
//!    `.NAME.leakless-staging-*` and `.NAME.leakless-old-*` folder is a dead
//!    run's and is removed; if `NAME` itself is missing while a moved-aside
//!    dataset exists (a crash inside the fallback's two renames), that
//!    dataset is put back first.
//! 3. Data goes to `PARENT/.NAME.leakless-staging-RUN`, `RUN` random per
//!    run (not the pid, which two containers share).
//! 4. The manifest is written last; every file and folder is fsynced.
//! 5. One `renameat2(RENAME_EXCHANGE)` swaps the staging folder and the old
//!    dataset: readers see the old dataset, then the new one, never
//!    neither. The old one, now under the staging name, is removed after.
//!    Without a previous dataset, `RENAME_NOREPLACE` publishes. Where the
//!    file system cannot exchange, the fallback moves the old dataset to
//!    `.NAME.leakless-old-RUN` and renames the new one into place (a reader
//!    can then see no dataset for the instant between the two renames; a
//!    crash there is repaired by step 2 of the next run).
//!
//! Invariants: nothing is written to `NAME` except by the final rename;
//! staging and moved-aside names are unique per run; only the lock holder
//! removes anything.

use std::fs::{File, OpenOptions, TryLockError};
use std::hash::{BuildHasher, Hasher};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use super::manifest;
use crate::error::{Error, Result};

/// The outcome of looking at what is at a destination.
fn check_destination(out: &Path, overwrite: bool) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(out) else {
        return Ok(());
    };
    let why = if !meta.is_dir() {
        Some("it is not a folder".to_owned())
    } else {
        match std::fs::read(out.join(manifest::FILE_NAME)) {
            Err(_) if out.join(super::delta::LOG).is_dir() => {
                return Err(Error::OtherFormat {
                    path: out.to_owned(),
                    found: "Delta Lake table",
                    wanted: "Parquet dataset",
                });
            }
            Err(_) => Some(format!("it has no {}", manifest::FILE_NAME)),
            Ok(bytes) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(m) if m.get("tool").and_then(|t| t.as_str()) == Some(manifest::TOOL) => None,
                Ok(_) => Some(format!(
                    "its {} was not written by leakless",
                    manifest::FILE_NAME
                )),
                Err(_) => Some(format!("its {} is not JSON", manifest::FILE_NAME)),
            },
        }
    };
    match (why, overwrite) {
        (None, true) => Ok(()),
        (why, _) => Err(Error::OutputExists {
            path: out.to_owned(),
            why,
        }),
    }
}

/// The right to write one destination, held from before the first byte is
/// written until the dataset is published (or the run fails).
#[derive(Debug)]
pub struct Destination {
    out: PathBuf,
    parent: PathBuf,
    name: String,
    run: String,
    /// Holds the `flock`; closing it releases the lock.
    _lock: File,
    stale_removed: usize,
}

impl Destination {
    /// Takes the destination's lock (waiting for it with `wait`, else
    /// failing with [`Error::Locked`]), cleans up after dead runs and
    /// checks that `out` may be written.
    pub fn acquire(out: &Path, overwrite: bool, wait: bool) -> Result<Destination> {
        let mut destination = Destination::lock(out, wait)?;
        // A Delta table is refused before its dead runs' staging folders
        // go: they tell a Delta build what to remove from the table.
        if out.join(super::delta::LOG).is_dir() {
            return Err(Error::OtherFormat {
                path: out.to_owned(),
                found: "Delta Lake table",
                wanted: "Parquet dataset",
            });
        }
        destination.clean_up_dead_runs()?;
        check_destination(out, overwrite)?;
        Ok(destination)
    }

    /// Takes the destination's lock; nothing is cleaned up or checked
    /// yet (a Delta table first removes what dead runs moved into it,
    /// [`Destination::dead_runs`], then [`Destination::clean_up_dead_runs`]).
    pub(crate) fn lock(out: &Path, wait: bool) -> Result<Destination> {
        let name = (out.file_name().and_then(|n| n.to_str()))
            .ok_or_else(|| {
                Error::Invalid(format!("`{}` is not a folder name in UTF-8", out.display()))
            })?
            .to_owned();
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| Error::io("creating", &parent, e))?;
        let lock_path = parent.join(format!(".{name}.leakless-lock"));
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io("opening", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) if wait => lock
                .lock()
                .map_err(|e| Error::io("locking", &lock_path, e))?,
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
                return Err(Error::Locked {
                    path: out.to_owned(),
                    lock: lock_path,
                    holder: match holder.trim() {
                        "" => "a run that has not yet written its name".to_owned(),
                        h => h.to_owned(),
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("locking", &lock_path, e)),
        }
        let run = run_id();
        let holder = format!(
            "leakless run {run}, pid {} on host {}, since {}\n",
            std::process::id(),
            hostname(),
            crate::time::format_rfc3339(now_micros())
        );
        lock.set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| lock.write_all(holder.as_bytes()))
            .map_err(|e| Error::io("writing", &lock_path, e))?;
        Ok(Destination {
            out: out.to_owned(),
            parent,
            name,
            run,
            _lock: lock,
            stale_removed: 0,
        })
    }

    /// This run's id (in its staging folder's name).
    #[cfg(feature = "delta")]
    pub(crate) fn run(&self) -> &str {
        &self.run
    }

    /// The ids of the dead runs whose staging folders are still there.
    #[cfg(feature = "delta")]
    pub(crate) fn dead_runs(&self) -> Result<Vec<String>> {
        let prefix = format!(".{}.leakless-staging-", self.name);
        Ok((self.leftovers("staging")?.iter())
            .filter_map(|p| {
                p.file_name()?
                    .to_str()?
                    .strip_prefix(&prefix)
                    .map(str::to_owned)
            })
            .collect())
    }

    /// Folders of dead runs removed when the lock was taken.
    pub fn stale_removed(&self) -> usize {
        self.stale_removed
    }

    /// Folders `.NAME.leakless-MARK-RUN` beside the destination, `RUN` a
    /// run id (16 hex digits) and nothing else.
    fn leftovers(&self, mark: &str) -> Result<Vec<PathBuf>> {
        let prefix = format!(".{}.leakless-{mark}-", self.name);
        let entries =
            std::fs::read_dir(&self.parent).map_err(|e| Error::io("listing", &self.parent, e))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing", &self.parent, e))?;
            let name = entry.file_name();
            let is_run = (name.to_str())
                .and_then(|n| n.strip_prefix(&prefix))
                .is_some_and(|run| run.len() == 16 && run.bytes().all(|b| b.is_ascii_hexdigit()));
            if is_run && entry.file_type().is_ok_and(|t| t.is_dir()) {
                found.push(entry.path());
            }
        }
        found.sort();
        Ok(found)
    }

    pub(crate) fn clean_up_dead_runs(&mut self) -> Result<()> {
        let aside = self.leftovers("old")?;
        if std::fs::symlink_metadata(&self.out).is_err()
            && let Some(previous) = aside.iter().find(|p| p.join(manifest::FILE_NAME).is_file())
        {
            std::fs::rename(previous, &self.out)
                .map_err(|e| Error::io("restoring", previous, e))?;
        }
        for dead in aside.into_iter().chain(self.leftovers("staging")?) {
            if std::fs::symlink_metadata(&dead).is_ok() {
                std::fs::remove_dir_all(&dead).map_err(|e| Error::io("removing", &dead, e))?;
                self.stale_removed += 1;
            }
        }
        Ok(())
    }

    /// Creates this run's staging folder.
    pub fn stage(&self) -> Result<Staging> {
        let dir = self
            .parent
            .join(format!(".{}.leakless-staging-{}", self.name, self.run));
        std::fs::create_dir(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        Ok(Staging { dir })
    }

    /// Writes the manifest into `staging`, makes everything durable, and
    /// publishes it in one rename, replacing the previous dataset.
    pub fn publish(&self, staging: Staging, manifest_json: &[u8], overwrite: bool) -> Result<()> {
        let manifest_path = staging.dir.join(manifest::FILE_NAME);
        std::fs::write(&manifest_path, manifest_json)
            .map_err(|e| Error::io("writing", &manifest_path, e))?;
        sync_tree(&staging.dir)?;
        crash_point("before-publish");
        check_destination(&self.out, overwrite)?;
        let published = if std::fs::symlink_metadata(&self.out).is_ok() {
            match rename2(&staging.dir, &self.out, libc::RENAME_EXCHANGE) {
                // The old dataset is now under the staging name, which
                // `staging`'s drop removes.
                Ok(()) => Ok(()),
                Err(e) if unsupported(&e) => self.move_aside_and_rename(&staging.dir),
                Err(e) => Err(Error::io("publishing", &self.out, e)),
            }
        } else {
            match rename2(&staging.dir, &self.out, libc::RENAME_NOREPLACE) {
                Err(e) if unsupported(&e) => std::fs::rename(&staging.dir, &self.out),
                other => other,
            }
            .map_err(|e| Error::io("publishing", &self.out, e))
        };
        published?;
        // Published: a failed fsync of the parent can no longer undo it, so
        // it is not reported as a failed build.
        let _ = sync_dir(&self.parent);
        crash_point("after-publish");
        Ok(())
    }

    /// The fallback where the file system cannot exchange two folders.
    fn move_aside_and_rename(&self, staged: &Path) -> Result<()> {
        let aside = self
            .parent
            .join(format!(".{}.leakless-old-{}", self.name, self.run));
        std::fs::rename(&self.out, &aside).map_err(|e| Error::io("moving aside", &self.out, e))?;
        crash_point("after-move-aside");
        if let Err(e) = std::fs::rename(staged, &self.out) {
            let _ = std::fs::rename(&aside, &self.out);
            return Err(Error::io("publishing", &self.out, e));
        }
        let _ = std::fs::remove_dir_all(&aside);
        Ok(())
    }
}

/// A run's own folder beside the destination; removed when dropped (after
/// a publish by exchange it holds the previous dataset).
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
}

impl Staging {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Leaves the folder where it is: it marks a dead run for the next
    /// one, which cleans up after it (a Delta table's files moved in).
    #[cfg(feature = "delta")]
    pub(crate) fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `renameat2(from, to, flags)`.
fn rename2(from: &Path, to: &Path, flags: libc::c_uint) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both paths are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// The file system or kernel does not offer this rename.
fn unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
    )
}

/// Starts writing `file`'s pages to disk without waiting for them, so
/// that the fsync before the publish finds most of them written: the
/// writers call it on each file they close while the build goes on (10 M
/// rows: the commit stage, which waited for 135 MB to reach the disk, fell
/// from 0.15-0.53 s to 0.05 s). Best effort: a failure only leaves the
/// work to the fsync.
pub(crate) fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open for the duration of the call;
        // `sync_file_range` only schedules writeback of its pages.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// fsyncs every file and folder below `dir`, and `dir`.
pub(crate) fn sync_tree(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::io("listing", dir, e))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io("syncing", &path, e))?;
        }
    }
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("syncing", dir, e))
}

/// The process id and 16 hex digits drawn once per process: in the names
/// of files that processes on several machines may write into one folder
/// (spill files, files being written), where a process id alone may repeat
/// (containers).
pub(crate) fn process_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| format!("{}-{}", std::process::id(), run_id()))
}

/// 16 hex digits, different for every run (the OS seeds `RandomState`).
pub(crate) fn run_id() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_i64(now_micros());
    format!("{:016x}", hasher.finish())
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// For the crash tests: when `LEAKLESS_CRASH_AT` names this point, the
/// process kills itself with SIGKILL here, as `kill -9` would.
pub(crate) fn crash_point(name: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if AT
        .get_or_init(|| std::env::var("LEAKLESS_CRASH_AT").ok())
        .as_deref()
        == Some(name)
    {
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(dir: &Path, tool: &str, marker: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join(manifest::FILE_NAME),
            format!("{{\"tool\": \"{tool}\"}}"),
        )
        .unwrap();
        std::fs::write(dir.join("data"), marker).unwrap();
    }

    #[test]
    fn a_second_run_fails_at_once_naming_the_holder_or_waits() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("ds");
        let first = Destination::acquire(&out, false, false).unwrap();
        let err = Destination::acquire(&out, false, false).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Locked { .. }), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains(&first.run), "{text}");
        // `wait` blocks until the holder is done.
        let waiter = std::thread::spawn({
            let out = out.clone();
            move || Destination::acquire(&out, false, true).map(|d| d.run.clone())
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!waiter.is_finished());
        drop(first);
        let second = waiter.join().unwrap().unwrap();
        assert_eq!(second.len(), 16);
    }

    #[test]
    fn a_lock_file_left_by_a_dead_run_is_taken_over_and_its_staging_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("ds");
        std::fs::write(
            tmp.path().join(".ds.leakless-lock"),
            "leakless run 0000000000000000, pid 1 on host gone\n",
        )
        .unwrap();
        for dead in [
            ".ds.leakless-staging-00000000000000aa",
            ".ds.leakless-old-00000000000000bb",
        ] {
            dataset(&tmp.path().join(dead), "leakless", "dead");
        }
        // Another destination's staging is not this run's business, nor is
        // anything but a run id's folder.
        let others = [
            ".other.leakless-staging-00000000000000dd",
            ".ds.leakless-staging-mine",
        ];
        for other in others {
            dataset(&tmp.path().join(other), "leakless", "x");
        }
        std::fs::write(tmp.path().join(".ds.leakless-staging-00000000000000cc"), "").unwrap();
        let d = Destination::acquire(&out, true, false).unwrap();
        // Nothing was published; the moved-aside dataset is put back.
        assert_eq!(std::fs::read(out.join("data")).unwrap(), b"dead");
        assert_eq!(d.stale_removed(), 1);
        let mut left: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".ds.leakless-lock",
                ".ds.leakless-staging-00000000000000cc",
                ".ds.leakless-staging-mine",
                ".other.leakless-staging-00000000000000dd",
                "ds"
            ]
        );
        let holder = std::fs::read_to_string(tmp.path().join(".ds.leakless-lock")).unwrap();
        assert!(holder.contains(&d.run), "{holder}");
    }

    #[test]
    fn publish_replaces_only_a_leakless_dataset_and_leaves_no_staging() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("ds");
        let manifest = br#"{"tool": "leakless"}"#;
        // First publish, then a replacement.
        for (round, marker) in ["one", "two"].iter().enumerate() {
            let d = Destination::acquire(&out, round > 0, false).unwrap();
            let staging = d.stage().unwrap();
            std::fs::write(staging.dir().join("data"), marker).unwrap();
            d.publish(staging, manifest, round > 0).unwrap();
            assert_eq!(std::fs::read(out.join("data")).unwrap(), marker.as_bytes());
        }
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(names.len(), 2, "the dataset and its lock file: {names:?}");
        // Without --overwrite, or when another tool wrote it: refused.
        let err = Destination::acquire(&out, false, false).unwrap_err();
        assert!(
            matches!(err, Error::OutputExists { why: None, .. }),
            "{err}"
        );
        dataset(&out, "spark", "theirs");
        let err = Destination::acquire(&out, true, false).unwrap_err();
        assert!(err.to_string().contains("not written by leakless"), "{err}");
        std::fs::remove_file(out.join(manifest::FILE_NAME)).unwrap();
        let err = Destination::acquire(&out, true, false).unwrap_err();
        assert!(err.to_string().contains("has no _manifest.json"), "{err}");
        assert_eq!(std::fs::read(out.join("data")).unwrap(), b"theirs");
    }

    #[test]
    fn the_fallback_without_exchange_publishes_too() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("ds");
        dataset(&out, "leakless", "old");
        let d = Destination::acquire(&out, true, false).unwrap();
        let staging = d.stage().unwrap();
        dataset(staging.dir(), "leakless", "new");
        d.move_aside_and_rename(&staging.dir).unwrap();
        assert_eq!(std::fs::read(out.join("data")).unwrap(), b"new");
        drop(staging);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 2);
    }
}
