//! Nothing lost, nothing half-written: kills at any moment, locks, long
//! ranges under a small file-descriptor limit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;

fn leakless() -> Command {
    Command::cargo_bin("leakless").unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `leakless generate` into `dir`.
fn generate(dir: &Path, extra: &[&str]) {
    let out = leakless()
        .arg("generate")
        .arg("--out")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// The `build` command on generated `data` into `out`.
fn build(data: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = leakless();
    cmd.arg("build")
        .arg("--impressions")
        .arg(data.join("impressions.csv"))
        .arg("--clicks")
        .arg(data.join("clicks.csv"))
        .arg("--listings")
        .arg(data.join("listings.csv"))
        .arg("--out")
        .arg(out)
        .arg("-q")
        .args(extra);
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.output().unwrap()
}

/// Every file of a dataset but the manifest (relative path, bytes), and the
/// manifest without its `settings` (which name `--out`).
fn contents(dir: &Path) -> (Vec<(String, Vec<u8>)>, serde_json::Value) {
    let files = leakless::write::data_files(dir)
        .unwrap()
        .into_iter()
        .map(|path| {
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("_manifest.json")).unwrap()).unwrap();
    manifest.as_object_mut().unwrap().remove("settings");
    (files, manifest)
}

/// Whether `out` holds a complete dataset right now: the folder is opened
/// once and everything is read through that handle, so that a swap between
/// two reads cannot mix datasets. Returns its row count, or `None` when the
/// folder was replaced during the probe (the old one's files are removed
/// after a publish: a reader that had opened only the folder retries).
fn probe(out: &Path) -> Result<Option<u64>, String> {
    use std::os::unix::fs::MetadataExt;
    let dir = std::fs::File::open(out).map_err(|e| format!("opening the folder: {e}"))?;
    let inode = dir.metadata().map_err(|e| e.to_string())?.ino();
    match read_through(&dir) {
        Ok(rows) => Ok(Some(rows)),
        Err(_) if std::fs::metadata(out).map_or(0, |m| m.ino()) != inode => Ok(None),
        Err(e) => Err(e),
    }
}

/// [`probe`] when nothing runs.
fn readable(out: &Path) -> Result<u64, String> {
    probe(out)?.ok_or_else(|| "replaced while read".to_owned())
}

fn read_through(dir: &std::fs::File) -> Result<u64, String> {
    use std::os::fd::AsRawFd;
    let root = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    let bytes = std::fs::read(root.join("_manifest.json"))
        .map_err(|e| format!("reading the manifest: {e}"))?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("manifest: {e}"))?;
    let mut rows = 0;
    for partition in manifest["partitions"].as_array().ok_or("no partitions")? {
        for file in partition["files"].as_array().ok_or("no files")? {
            let path = root.join(file["path"].as_str().ok_or("no path")?);
            let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if !data.ends_with(b"PAR1") {
                return Err(format!("{} is not a whole Parquet file", path.display()));
            }
            rows += file["rows"].as_u64().ok_or("no rows")?;
        }
    }
    Ok(rows)
}

/// Names in `dir` starting with `.out.leakless-` other than the lock.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".out.leakless-") && n != ".out.leakless-lock")
        .collect()
}

#[test]
fn a_build_killed_at_any_moment_leaves_the_old_or_the_new_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let (old_data, new_data) = (tmp.path().join("old"), tmp.path().join("new"));
    generate(&old_data, &["--impressions", "3000", "--days", "10"]);
    generate(&new_data, &["--impressions", "150000", "--days", "10"]);
    let outs = tmp.path().join("outs");
    std::fs::create_dir(&outs).unwrap();
    let (out, reference) = (outs.join("out"), tmp.path().join("reference"));
    // Spill to disk, so that kills also land in spills.
    let args = [
        "--overwrite",
        "--partitions",
        "2",
        "--spill-bytes",
        "4000000",
        "--watermark",
        "2026-10-09T00:00:00Z",
    ];

    let started = Instant::now();
    let done = run(build(&new_data, &reference, &args));
    assert!(done.status.success(), "{}", text(&done.stderr));
    let uninterrupted = started.elapsed();
    let new_rows = readable(&reference).unwrap();
    let done = run(build(&old_data, &out, &args));
    assert!(done.status.success(), "{}", text(&done.stderr));
    let old_rows = readable(&out).unwrap();
    assert_ne!(old_rows, new_rows);

    // Five kills at named moments, fifteen at random times over the run.
    let named = [
        "after-staging",
        "after-spill",
        "after-data",
        "before-publish",
        "after-publish",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut stale_seen, mut probes) = (0, 0u64);
    for kill in 0..20 {
        // Each kill replaces the old dataset (which also cleans up after
        // the previous kill).
        if kill > 0 {
            let done = run(build(&old_data, &out, &args));
            assert!(done.status.success(), "{}", text(&done.stderr));
            assert_eq!(readable(&out), Ok(old_rows));
        }
        let mut cmd = build(&new_data, &out, &args);
        let delay = match named.get(kill) {
            Some(point) => {
                cmd.env("LEAKLESS_CRASH_AT", point);
                None
            }
            None => Some(uninterrupted.mul_f64((random() % 1000) as f64 / 1000.0)),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = std::thread::spawn({
            let (out, stop) = (out.clone(), stop.clone());
            move || {
                let mut probes = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match probe(&out)? {
                        Some(rows) if rows != old_rows && rows != new_rows => {
                            return Err(format!("{rows} rows: neither dataset"));
                        }
                        Some(_) => probes += 1,
                        None => {}
                    }
                }
                Ok::<u64, String>(probes)
            }
        });
        let mut child = cmd.spawn().unwrap();
        if let Some(delay) = delay {
            std::thread::sleep(delay);
            let _ = child.kill();
        }
        let status = child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        probes += watcher.join().unwrap().unwrap_or_else(|e| {
            panic!("kill {kill} ({delay:?}): the destination was unreadable: {e}")
        });
        if delay.is_none() {
            assert_eq!(status.code(), None, "{} was not reached", named[kill]);
        }
        let rows = readable(&out).unwrap();
        assert!(rows == old_rows || rows == new_rows);
        stale_seen += leftovers(&outs).len();
        if delay.is_none() {
            // Killed before the publish: the old dataset; after: the new.
            assert_eq!(
                rows == new_rows,
                named[kill] == "after-publish",
                "{}",
                named[kill]
            );
        }
    }
    assert!(
        probes > 20,
        "the watcher read the destination {probes} times"
    );
    assert!(stale_seen > 0, "no kill left a staging folder behind");

    // The rerun cleans up after the dead runs and writes the same bytes as
    // the uninterrupted build.
    let done = run(build(&new_data, &out, &args));
    assert!(done.status.success(), "{}", text(&done.stderr));
    assert_eq!(leftovers(&outs), Vec::<String>::new());
    assert!(
        contents(&out) == contents(&reference),
        "the rerun wrote other bytes"
    );
}

#[test]
fn a_second_build_fails_at_once_naming_the_holder_or_waits_for_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate(&data, &["--impressions", "2000", "--days", "10"]);
    let out = tmp.path().join("out");
    let holder = leakless::write::Destination::acquire(&out, false, false).unwrap();
    // A live run's staging folder is not touched by the run refused.
    let live = tmp.path().join(".out.leakless-staging-live");
    std::fs::create_dir(&live).unwrap();
    let started = Instant::now();
    let refused = run(build(&data, &out, &["--watermark", "2026-10-09T00:00:00Z"]));
    assert_eq!(refused.status.code(), Some(2));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains(&format!("pid {}", std::process::id())),
        "{stderr}"
    );
    assert!(stderr.contains("--wait"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(live.is_dir());
    assert!(!out.exists());

    let mut waiting = build(
        &data,
        &out,
        &["--wait", "--watermark", "2026-10-09T00:00:00Z"],
    )
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert!(waiting.try_wait().unwrap().is_none(), "--wait did not wait");
    drop(holder);
    assert!(waiting.wait().unwrap().success());
    assert!(readable(&out).is_ok());
}

#[test]
fn five_years_of_daily_partitions_build_under_256_open_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate(&data, &["--impressions", "40000", "--days", "1826"]);
    let out = tmp.path().join("out");
    let cmd = build(&data, &out, &["--watermark", "2031-12-31T00:00:00Z"]);
    let mut limited = Command::new("sh");
    limited
        .arg("-c")
        .arg("ulimit -n 256 && exec \"$@\"")
        .arg("sh")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    let done = run(limited);
    assert!(done.status.success(), "{}", text(&done.stderr));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_manifest.json")).unwrap()).unwrap();
    let partitions = manifest["partitions"].as_array().unwrap().len();
    assert!(partitions > 1700, "{partitions} daily partitions");
    assert!(readable(&out).is_ok());
}
