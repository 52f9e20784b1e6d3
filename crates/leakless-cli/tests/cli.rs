//! The `leakless` binary: exit codes, messages, determinism, read-back.

use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;

mod common;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/marketplace")
}

fn leakless() -> Command {
    Command::cargo_bin("leakless").unwrap()
}

/// `leakless build` on the example inputs (or `impressions` instead) into `out`.
fn build(impressions: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    leakless()
        .arg("build")
        .arg("--impressions")
        .arg(impressions)
        .arg("--clicks")
        .arg(examples().join("clicks.csv"))
        .arg("--listings")
        .arg(examples().join("listings.csv"))
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_names_the_build_command() {
    let output = leakless().arg("--help").output().unwrap();
    assert!(output.status.success());
    assert!(text(&output.stdout).contains("build"));
    let output = leakless().args(["build", "--help"]).output().unwrap();
    assert!(text(&output.stdout).contains("--watermark"));
}

#[test]
fn a_missing_flag_is_a_usage_error() {
    let output = leakless().args(["build", "--out", "x"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("--impressions"));
}

#[test]
fn build_end_to_end_with_json_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dataset");
    let output = build(&examples().join("impressions.csv"), &out, &["--json"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["rows_read"]["impressions"], 10);
    assert_eq!(summary["rows_written"], 9);
    assert_eq!(summary["immature_held_back"], 1);
    assert_eq!(summary["partitions"], 3);
    assert!(summary["seconds"].as_f64().unwrap() >= 0.0);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("9 rows in 3 partitions"), "{stderr}");
    assert!(stderr.contains("held back: 1"), "{stderr}");
    assert!(out.join("_manifest.json").is_file());
    assert!(out.join("dt=2026-10-02/part-00000.parquet").is_file());
}

#[test]
fn a_malformed_row_exits_2_naming_file_line_column_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let impressions = dir.path().join("impressions.csv");
    std::fs::write(
        &impressions,
        "impression_id,user_id,listing_id,impression_ts\n1,10,1,2026-10-01T09:00:00Z\n2,ten,1,2026-10-01T09:00:00Z\n",
    )
    .unwrap();
    let out = dir.path().join("dataset");
    let output = build(&impressions, &out, &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    let expected = format!(
        "caused by: bad input row: `{}` line 3, column `user_id`: not a valid int64: \"ten\"",
        impressions.display()
    );
    assert!(stderr.starts_with("error: building `"), "{stderr}");
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("hint: "), "{stderr}");
    assert!(!out.exists());
}

/// The example's impressions with two bad rows among them.
fn messy_impressions(dir: &Path) -> PathBuf {
    let good = std::fs::read_to_string(examples().join("impressions.csv")).unwrap();
    let mut lines: Vec<&str> = good.lines().collect();
    lines.insert(3, "90,ninety,1,2026-10-01T10:00:00Z");
    lines.insert(6, "91,100,1,2026-13-01T10:00:00Z,extra");
    let path = dir.join("impressions.csv");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn quarantine_sets_bad_rows_aside_and_the_gate_stops_above_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let impressions = messy_impressions(dir.path());
    let clean = dir.path().join("clean");
    assert!(
        build(&examples().join("impressions.csv"), &clean, &[])
            .status
            .success()
    );

    // 2 bad rows of 12: above the default bound (0.1%), exit 1 and
    // nothing published.
    let out = dir.path().join("dataset");
    let output = build(&impressions, &out, &["--bad-rows", "quarantine"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(
            "source `impressions` has 2 bad rows of 12 read (16.7%), above max_bad_rows 0.001"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("1 x not a valid int64"), "{stderr}");
    let place = format!(
        "e.g. `{}` line 4, column `user_id`: not a valid int64: \"ninety\"",
        impressions.display()
    );
    assert!(stderr.contains(&place), "{stderr}");
    assert!(!out.exists(), "a failed gate published {}", out.display());

    // A gate without quarantine is a usage mistake, not ignored.
    let output = build(&impressions, &out, &["--max-bad-rows", "0.2"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("--max-bad-rows is the gate of --bad-rows quarantine"),
        "{}",
        text(&output.stderr)
    );
    assert!(!out.exists());

    // Within the bound: the good rows' dataset, and the bad rows in the
    // quarantine file.
    let output = build(
        &impressions,
        &out,
        &[
            "--bad-rows",
            "quarantine",
            "--max-bad-rows",
            "0.2",
            "--json",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(parquet_files(&out), parquet_files(&clean));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let rows = &summary["reconciliation"]["impressions"];
    assert_eq!(rows["read"], 12);
    assert_eq!(rows["quarantined"], 2);
    assert_eq!(rows["spine"]["written"], 9);
    assert_eq!(rows["spine"]["held_back_immature"], 1);
    assert_eq!(summary["quarantined"]["impressions"]["rows"], 2);
    assert!(out.join("_quarantine/impressions.parquet").is_file());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("impressions (spine): 12 = 2 quarantined + 0 dropped by [spine] where + 1 held back + 9 written"), "{stderr}");

    // A quote no later `"` closes swallows the rest of the file: it stops
    // the run even under quarantine.
    let stray = dir.path().join("stray.csv");
    let mut text_in = std::fs::read_to_string(examples().join("impressions.csv")).unwrap();
    text_in = text_in.replacen(",100,1,", ",\"100,1,", 1);
    std::fs::write(&stray, text_in).unwrap();
    let output = build(
        &stray,
        &dir.path().join("stray"),
        &["--bad-rows", "quarantine", "--max-bad-rows", "1"],
    );
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("unterminated quoted value"),
        "{}",
        text(&output.stderr)
    );

    // Strict (the default): the first bad row stops the run, exit 2.
    let output = build(&impressions, &dir.path().join("strict"), &[]);
    assert_eq!(output.status.code(), Some(2));
}

/// The example spec and inputs in `dir`, with `checks` appended.
fn example_with_checks(dir: &Path, checks: &str) -> PathBuf {
    for name in [
        "impressions.csv",
        "clicks.csv",
        "listings.csv",
        "leakless.toml",
    ] {
        std::fs::copy(examples().join(name), dir.join(name)).unwrap();
    }
    let spec = dir.join("leakless.toml");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, format!("{text}\n[checks]\n{checks}\n")).unwrap();
    spec
}

fn build_spec(spec: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    leakless()
        .args(["build", "--spec"])
        .arg(spec)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn checks_pass_fail_with_exit_1_naming_check_partition_and_value_or_publish_on_request() {
    let dir = tempfile::tempdir().unwrap();
    // The days have 2, 5 and 2 rows, clicked at rates 1, 0.6 and 0.5;
    // one price of 10-02 is null.
    let spec = example_with_checks(
        dir.path(),
        "clicked.rate = [0.5, 1.0]\nprice.null_rate = \"<= 0.2\"\nrows_per_day = { min = 2 }",
    );
    let out = dir.path().join("dataset");
    let output = build_spec(&spec, &out, &["--json"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let checks = summary["checks"].as_array().unwrap();
    assert!(
        !checks.is_empty() && checks.iter().all(|c| c["passed"] == true),
        "{checks:?}"
    );
    assert!(out.join("_profile.json").is_file());

    let spec = example_with_checks(dir.path(), "rows_per_day = { min = 3 }");
    let failed = dir.path().join("failed");
    let output = build_spec(&spec, &failed, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("check `rows_per_partition >= 3` failed in dt=2026-10-01: 2"),
        "{stderr}"
    );
    assert!(!failed.exists());

    let output = build_spec(&spec, &failed, &["--publish-on-failed-checks"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(failed.join("_manifest.json").is_file());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(failed.join("_manifest.json")).unwrap()).unwrap();
    let outcomes = manifest["checks"].as_array().unwrap();
    let failed_days: Vec<&str> = (outcomes.iter())
        .filter(|c| c["passed"] == false)
        .map(|c| c["partition"].as_str().unwrap())
        .collect();
    assert_eq!(failed_days, ["dt=2026-10-01", "dt=2026-10-03"]);

    // `--no-profile` does not skip the checks.
    let output = build_spec(&spec, &dir.path().join("unprofiled"), &["--no-profile"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));

    // A day all held back has a held-back rate of 1.
    let spec = example_with_checks(dir.path(), "held_back_rate = \"<= 0.5\"");
    let output = build_spec(&spec, &dir.path().join("held"), &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("check `held_back_rate <= 0.5` failed in dt=2026-10-04: 1"),
        "{}",
        text(&output.stderr)
    );

    // A mistake in [checks] is a spec error with its place.
    let spec = example_with_checks(dir.path(), "prices.null_rate = [0, 1]");
    let output = build_spec(&spec, &dir.path().join("x"), &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("`prices` is not an output column"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn an_existing_dataset_needs_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dataset");
    let impressions = examples().join("impressions.csv");
    assert!(build(&impressions, &out, &[]).status.success());
    let output = build(&impressions, &out, &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("hint: pass --overwrite"));
    assert!(build(&impressions, &out, &["--overwrite"]).status.success());
}

#[test]
fn two_runs_write_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dataset");
    let impressions = examples().join("impressions.csv");
    let snapshot = || {
        let mut files = Vec::new();
        let mut stack = vec![out.clone()];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else {
                files.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
        files.sort();
        files
    };
    assert!(build(&impressions, &out, &["--overwrite"]).status.success());
    let first = snapshot();
    assert!(build(&impressions, &out, &["--overwrite"]).status.success());
    assert_eq!(first.len(), 5, "3 data files, the manifest and the profile");
    assert!(first == snapshot(), "the second run wrote different bytes");
}

/// `--shards N` writes the Parquet files of a build without it; no shards
/// is a usage mistake.
#[test]
fn shards_write_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let impressions = examples().join("impressions.csv");
    let (whole, sharded) = (dir.path().join("whole"), dir.path().join("sharded"));
    assert!(build(&impressions, &whole, &[]).status.success());
    let output = build(&impressions, &sharded, &["--shards", "7", "--json"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(parquet_files(&sharded) == parquet_files(&whole));
    assert!(!parquet_files(&whole).is_empty());
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let groups = summary["key_groups"].as_array().unwrap();
    assert!(
        !groups.is_empty() && groups.iter().all(|g| g["tasks"] == 7),
        "{groups:?}"
    );
    let none = build(&impressions, &dir.path().join("none"), &["--shards", "0"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(text(&none.stderr).contains("--shards must be at least 1"));
}

/// A Python interpreter that can `import pyarrow`: the machine's `python3`
/// when it can, else a virtualenv's.
fn python_with_pyarrow() -> PathBuf {
    let system = PathBuf::from("python3");
    let has_pyarrow = Command::new(&system)
        .args(["-c", "import pyarrow"])
        .output()
        .is_ok_and(|o| o.status.success());
    match has_pyarrow {
        true => system,
        false => common::venv_python("pyarrow-venv", "import pyarrow", &["pyarrow>=14"]),
    }
}

#[test]
fn pyarrow_reads_the_dataset_with_dt_as_a_partition() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dataset");
    assert!(
        build(&examples().join("impressions.csv"), &out, &[])
            .status
            .success()
    );
    let script = r#"
import sys
import pyarrow.dataset as ds
t = ds.dataset(sys.argv[1], partitioning="hive").to_table()
print(t.num_rows)
print(",".join(t.schema.names))
print(t.schema.field("impression_ts").type)
print(",".join(sorted(set(t.column("dt").to_pylist()))))
print(sum(t.column("clicked").to_pylist()))
"#;
    let output = Command::new(python_with_pyarrow())
        .arg("-c")
        .arg(script)
        .arg(&out)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "pyarrow failed: {}",
        text(&output.stderr)
    );
    assert_eq!(
        text(&output.stdout),
        "9\n\
         impression_id,user_id,listing_id,impression_ts,listing_age_seconds,price,category,prior_listing_clicks,listing_clicks_24h,clicked,dt\n\
         timestamp[us, tz=UTC]\n\
         2026-10-01,2026-10-02,2026-10-03\n\
         6\n"
    );
}

#[test]
fn generate_writes_the_tables_and_reports_totals_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let output = leakless()
        .args([
            "generate",
            "--impressions",
            "5000",
            "--days",
            "7",
            "--seed",
            "9",
            "--format",
            "parquet",
            "--json",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let totals: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(totals["impressions"], 5000);
    assert_eq!(totals["watermark"], "2026-10-08T00:00:00.000000Z");
    for name in [
        "impressions.parquet",
        "clicks.parquet",
        "listings.parquet",
        "_generator.json",
    ] {
        assert!(dir.path().join(name).is_file(), "{name}");
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("_generator.json")).unwrap())
            .unwrap();
    assert_eq!(meta["params"]["seed"], 9);
    assert_eq!(meta["params"]["format"], "parquet");
    assert_eq!(meta["totals"], totals);
}

#[test]
fn a_bad_start_date_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = leakless()
        .args(["generate", "--start", "October", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("--start \"October\" is not a date"));
}

#[test]
fn demo_generates_builds_and_shows_rows() {
    let dir = tempfile::tempdir().unwrap();
    let output = leakless()
        .args(["demo", "--impressions", "20000", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("label rate: "), "{stdout}");
    assert!(stdout.contains("| impression_id |"), "{stdout}");
    // Prices change during the period: the snapshot differs from the as-of
    // price on some rows, not on all.
    let leak = stdout
        .lines()
        .find(|l| l.starts_with("snapshot leak: on "))
        .unwrap_or_else(|| panic!("{stdout}"));
    let counts: Vec<u64> = leak
        .split(' ')
        .filter_map(|w| w.parse().ok())
        .take(2)
        .collect();
    assert!(counts[0] > 0 && counts[0] < counts[1], "{leak}");
    assert!(dir.path().join("dataset/_manifest.json").is_file());
    assert!(dir.path().join("data/impressions.csv").is_file());
    // The built label rate is the one the generator computed independently.
    let line = stdout
        .lines()
        .find(|l| l.starts_with("label rate: "))
        .unwrap();
    let numbers: Vec<&str> = line
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|s| s.contains('.'))
        .collect();
    assert_eq!(numbers[0], numbers[1], "{line}");
}

/// Every Parquet file of the dataset `dir`: (relative path, bytes).
fn parquet_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    leakless::write::data_files(dir)
        .unwrap()
        .into_iter()
        .map(|path| {
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            (name, std::fs::read(&path).unwrap())
        })
        .collect()
}

#[test]
fn the_marketplace_spec_and_the_shorthand_write_identical_parquet() {
    let dir = tempfile::tempdir().unwrap();
    // A generated marketplace (organic clicks without a user included) and
    // the hand-written example with its edge cases.
    let data = dir.path().join("data");
    let generated = leakless()
        .args(["generate", "--impressions", "20000", "--days", "4", "--out"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(generated.status.success(), "{}", text(&generated.stderr));
    for (name, inputs) in [("generated", data.clone()), ("example", examples())] {
        let shorthand = dir.path().join(format!("{name}-shorthand"));
        let output = leakless()
            .arg("build")
            .arg("--impressions")
            .arg(inputs.join("impressions.csv"))
            .arg("--clicks")
            .arg(inputs.join("clicks.csv"))
            .arg("--listings")
            .arg(inputs.join("listings.csv"))
            .arg("--out")
            .arg(&shorthand)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
        let spec = dir.path().join(format!("{name}-spec"));
        let mut command = leakless();
        command
            .arg("build")
            .arg("--spec")
            .arg(examples().join("leakless.toml"))
            .arg("--out")
            .arg(&spec);
        for source in ["impressions", "clicks", "listings"] {
            command.arg("--source").arg(format!(
                "{source}={}",
                inputs.join(format!("{source}.csv")).display()
            ));
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
        let (a, b) = (parquet_files(&shorthand), parquet_files(&spec));
        assert!(!a.is_empty());
        assert_eq!(
            a.iter().map(|f| &f.0).collect::<Vec<_>>(),
            b.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        assert!(
            a == b,
            "{name}: the spec and the shorthand wrote different bytes"
        );
    }
}

#[test]
fn check_validates_against_headers_and_warns_about_snapshots() {
    let output = leakless()
        .arg("check")
        .arg("--spec")
        .arg(examples().join("leakless.toml"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains(
            "clicks by (listing_id = listing_id): prior_listing_clicks, listing_clicks_24h, clicked"
        ),
        "{stdout}"
    );
    assert!(
        text(&output.stderr).contains("warning: source `listings` is a snapshot"),
        "{}",
        text(&output.stderr)
    );
    // A declared column the file lacks: exit 2, naming file, column and source.
    let dir = tempfile::tempdir().unwrap();
    let clicks = dir.path().join("clicks.csv");
    std::fs::write(&clicks, "listing_id,ts\n1,2026-10-01T00:00:00Z\n").unwrap();
    let output = leakless()
        .arg("check")
        .arg("--spec")
        .arg(examples().join("leakless.toml"))
        .arg("--source")
        .arg(format!("clicks={}", clicks.display()))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "`{}` has no column `user_id`, declared in source `clicks`",
            clicks.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_spec_mistake_exits_2_with_its_place_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.toml");
    let text_of_spec = std::fs::read_to_string(examples().join("leakless.toml"))
        .unwrap()
        .replace(
            "op = \"count\"\nwindow = \"24h\"",
            "op = \"cnt\"\nwindow = \"24h\"",
        );
    std::fs::write(&spec, text_of_spec).unwrap();
    let out = dir.path().join("dataset");
    let output = leakless()
        .arg("build")
        .arg("--spec")
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:51:6: features.listing_clicks_24h: unknown op `cnt` (ops: count,",
            spec.display()
        )),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn explain_prints_every_definition_and_the_hash() {
    let output = leakless()
        .arg("explain")
        .arg("--spec")
        .arg(examples().join("leakless.toml"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let explained: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let columns = explained["columns"].as_array().unwrap();
    assert_eq!(columns.len(), 10);
    assert_eq!(columns[8]["name"], "listing_clicks_24h");
    assert_eq!(
        columns[8]["definition"],
        "number of events of `clicks` with the same `listing_id` and t - 1d <= `click_ts` < t"
    );
    assert_eq!(explained["feature_set_hash"].as_str().unwrap().len(), 64);
}

#[test]
fn the_rich_example_builds() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dataset");
    let output = leakless()
        .arg("build")
        .arg("--spec")
        .arg(examples().join("../rich/leakless.toml"))
        .arg("--out")
        .arg(&out)
        .arg("--json")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["rows_read"]["views"], 10);
    assert_eq!(summary["rows_written"], 10);
}

/// `--incremental` after a file lands: `--dry-run` says what it would do
/// and changes nothing; the build does it and equals a full build.
#[test]
fn an_incremental_build_after_a_new_file_equals_a_full_build() {
    let dir = tempfile::tempdir().unwrap();
    let impressions = dir.path().join("impressions");
    std::fs::create_dir(&impressions).unwrap();
    let all = std::fs::read_to_string(examples().join("impressions.csv")).unwrap();
    let (header, rows) = all.split_once('\n').unwrap();
    let (early, late): (Vec<&str>, Vec<&str>) = rows
        .lines()
        .partition(|r| !r.contains("2026-10-03") && !r.contains("2026-10-04"));
    std::fs::write(
        impressions.join("a.csv"),
        format!("{header}\n{}\n", early.join("\n")),
    )
    .unwrap();
    let out = dir.path().join("dataset");
    let first = build(&impressions, &out, &["--incremental", "--quiet"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(text(&first.stderr).contains("a full build (there is no dataset yet)"));

    std::fs::write(
        impressions.join("b.csv"),
        format!("{header}\n{}\n", late.join("\n")),
    )
    .unwrap();
    let manifest = std::fs::read(out.join("_manifest.json")).unwrap();
    let dry = build(
        &impressions,
        &out,
        &["--incremental", "--dry-run", "--quiet"],
    );
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    let said = text(&dry.stderr);
    assert!(
        said.contains("b.csv (new)") && said.contains("dt=2026-10-03: a new partition"),
        "{said}"
    );
    let unchanged = std::fs::read(out.join("_manifest.json")).unwrap() == manifest;
    assert!(unchanged, "the dry run changed the dataset");

    let incremental = build(&impressions, &out, &["--incremental", "--quiet", "--json"]);
    assert!(
        incremental.status.success(),
        "{}",
        text(&incremental.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&incremental.stdout).unwrap();
    let recomputed = summary["increment"]["recompute"].as_object().unwrap().len();
    assert!(recomputed >= 2, "{summary}");
    let full = dir.path().join("full");
    assert!(build(&impressions, &full, &["--quiet"]).status.success());
    let same = parquet_files(&out) == parquet_files(&full);
    assert!(same, "the incremental build differs from the full build");

    let usage = build(&impressions, &out, &["--dry-run"]);
    assert_eq!(usage.status.code(), Some(2), "{}", text(&usage.stderr));
}
