//! Delta Lake output (`--format delta`, the `delta` feature): every build
//! one version, each version the same rows and bytes as a Parquet build
//! of the inputs of its time, older versions readable, a build killed
//! before its commit invisible and cleaned up by the next.
#![cfg(feature = "delta")]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;

fn leakless() -> Command {
    Command::cargo_bin("leakless").unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Generated inputs: impressions split into one file per day (and the
/// clicks and listings whole).
struct Inputs {
    dir: PathBuf,
    header: String,
    days: BTreeMap<String, Vec<String>>,
}

impl Inputs {
    fn generate(root: &Path) -> Inputs {
        let data = root.join("generated");
        let generated = leakless()
            .args([
                "generate",
                "--impressions",
                "6000",
                "--days",
                "6",
                "--seed",
                "7",
            ])
            .arg("--out")
            .arg(&data)
            .output()
            .unwrap();
        assert!(generated.status.success(), "{}", text(&generated.stderr));
        let all = std::fs::read_to_string(data.join("impressions.csv")).unwrap();
        let (header, rows) = all.split_once('\n').unwrap();
        let mut days: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for row in rows.lines() {
            let day = row.rsplit(',').next().unwrap()[..10].to_owned();
            days.entry(day).or_default().push(row.to_owned());
        }
        assert_eq!(days.len(), 6, "{:?}", days.keys());
        let dir = root.join("impressions");
        std::fs::create_dir(&dir).unwrap();
        Inputs {
            dir,
            header: header.to_owned(),
            days,
        }
    }

    fn day(&self, i: usize) -> (&String, &Vec<String>) {
        self.days.iter().nth(i).unwrap()
    }

    fn write(&self, name: &str, rows: &[String]) {
        let body = format!("{}\n{}\n", self.header, rows.join("\n"));
        std::fs::write(self.dir.join(name), body).unwrap();
    }

    fn add_day(&self, i: usize) {
        let (day, rows) = self.day(i);
        self.write(&format!("{day}.csv"), rows);
    }

    /// A late file `name` of `rows` rows of day `i` again, their ids
    /// prefixed with `prefix` (new impressions at the same times).
    fn add_late(&self, name: &str, i: usize, rows: usize, prefix: u64) {
        let late: Vec<String> = (self.day(i).1.iter().take(rows))
            .map(|r| {
                let (id, rest) = r.split_once(',').unwrap();
                format!("{prefix}{id},{rest}")
            })
            .collect();
        self.write(name, &late);
    }

    fn build(&self, out: &Path, extra: &[&str]) -> Command {
        let data = self.dir.parent().unwrap().join("generated");
        let mut command = leakless();
        command
            .arg("build")
            .arg("--impressions")
            .arg(&self.dir)
            .arg("--clicks")
            .arg(data.join("clicks.csv"))
            .arg("--listings")
            .arg(data.join("listings.csv"))
            .arg("--out")
            .arg(out)
            .args(["--quiet", "--partitions", "2"])
            .args(extra);
        command
    }
}

/// A dataset's data files by name without the run tag a Delta table's
/// files carry (`part-00000-RUN.parquet` as `part-00000.parquet`).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    leakless::write::data_files(dir)
        .unwrap()
        .into_iter()
        .map(|path| {
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            (untagged(&name), std::fs::read(&path).unwrap())
        })
        .collect()
}

fn untagged(name: &str) -> String {
    match name.rsplit_once("part-") {
        Some((folder, file)) => {
            let number = &file[..5];
            format!("{folder}part-{number}.parquet")
        }
        None => name.to_owned(),
    }
}

/// Every Parquet file under `dir` (all versions' files), relative.
fn every_file(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut folders = vec![dir.to_owned()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

fn latest_version(table: &Path) -> u64 {
    leakless::write::delta::latest_commit(table)
        .unwrap()
        .unwrap()
        .0
}

/// Path and inode of each current file of the table.
fn inodes(table: &Path) -> BTreeMap<String, u64> {
    leakless::write::data_files(table)
        .unwrap()
        .into_iter()
        .map(|p| {
            let inode = std::fs::metadata(&p).unwrap().ino();
            (p.strip_prefix(table).unwrap().display().to_string(), inode)
        })
        .collect()
}

#[test]
fn every_build_is_one_delta_version_equal_to_a_parquet_build() {
    let root = tempfile::tempdir().unwrap();
    let inputs = Inputs::generate(root.path());
    let table = root.path().join("table");
    let mut parquet = Vec::new();
    let full = |version: usize| {
        let out = root.path().join(format!("parquet-{version}"));
        let built = inputs.build(&out, &[]).output().unwrap();
        assert!(built.status.success(), "{}", text(&built.stderr));
        out
    };
    let delta = |extra: &[&str]| {
        let mut args = vec!["--format", "delta", "--json"];
        args.extend_from_slice(extra);
        let built = inputs.build(&table, &args).output().unwrap();
        assert!(built.status.success(), "{}", text(&built.stderr));
        serde_json::from_slice::<serde_json::Value>(&built.stdout).unwrap()
    };

    // Version 0: three days, a full build.
    for i in 0..3 {
        inputs.add_day(i);
    }
    let summary = delta(&["--incremental"]);
    assert_eq!(summary["delta_version"], 0, "{summary}");
    parquet.push(full(0));
    assert_eq!(files(&table), files(&parquet[0]));
    let (version, info) = leakless::write::delta::latest_commit(&table)
        .unwrap()
        .unwrap();
    assert_eq!(version, 0);
    assert_eq!(
        info["leakless"]["feature_set_hash"], summary["feature_set_hash"],
        "{info}"
    );
    assert_eq!(info["leakless"]["rows_written"], summary["rows_written"]);

    // Version 1: two days appended; the first day is not touched.
    let first_day = inputs.day(0).0.clone();
    let before = inodes(&table);
    inputs.add_day(3);
    inputs.add_day(4);
    let summary = delta(&["--incremental"]);
    assert_eq!(summary["delta_version"], 1, "{summary}");
    assert!(summary["increment"]["full"].is_null(), "{summary}");
    parquet.push(full(1));
    assert_eq!(files(&table), files(&parquet[1]));
    let after = inodes(&table);
    let kept: Vec<&String> = (before.iter())
        .filter(|(path, inode)| after.get(*path) == Some(inode))
        .map(|(path, _)| path)
        .collect();
    assert!(
        kept.iter().any(|p| p.contains(&first_day)),
        "the first day's files were rewritten: {before:?} {after:?}"
    );

    // A late file of the second day and the sixth day land; a build
    // killed before its commit: still version 1, its files left in the
    // table's folders and invisible.
    let day = inputs.day(1).0.clone();
    inputs.add_late("late.csv", 1, 40, 9_000_000);
    inputs.add_day(5);
    let killed = inputs
        .build(&table, &["--format", "delta", "--incremental"])
        .env("LEAKLESS_CRASH_AT", "before-delta-commit")
        .output()
        .unwrap();
    assert_eq!(killed.status.code(), None, "{}", text(&killed.stderr));
    assert_eq!(latest_version(&table), 1);
    assert_eq!(files(&table), files(&parquet[1]));
    let listed: Vec<String> = leakless::write::data_files(&table)
        .unwrap()
        .iter()
        .map(|p| p.strip_prefix(&table).unwrap().display().to_string())
        .collect();
    let orphans: Vec<String> = (every_file(&table).into_iter())
        .filter(|f| !listed.contains(f))
        .collect();
    assert!(
        orphans.iter().any(|f| f.contains(&day[..])),
        "the killed build moved no file in: {orphans:?}"
    );

    // The next build removes them and commits version 2, which replaces
    // the late file's day only (the clicks are the same, so no other
    // day's rows change; the sixth day is all held back).
    let before = inodes(&table);
    let summary = delta(&["--incremental"]);
    assert_eq!(summary["delta_version"], 2, "{summary}");
    assert!(summary["stale_removed"].as_u64().unwrap() >= 1, "{summary}");
    parquet.push(full(2));
    assert_eq!(files(&table), files(&parquet[2]));
    let left: Vec<String> = (every_file(&table).into_iter())
        .filter(|f| orphans.contains(f))
        .collect();
    assert!(
        left.is_empty(),
        "a dead run's files are still there: {left:?}"
    );
    let after = inodes(&table);
    for (path, inode) in &after {
        let same = before.get(path) == Some(inode);
        assert_eq!(
            same,
            !path.contains(&day[..]),
            "{path}: only the late file's day is written again"
        );
    }

    // A build killed just after its commit: version 3 is whole; the next
    // build (nothing changed: version 4) removes the dead run's staging
    // but none of the files its version holds.
    inputs.add_late("late-2.csv", 2, 30, 8_000_000);
    let killed = inputs
        .build(&table, &["--format", "delta", "--incremental"])
        .env("LEAKLESS_CRASH_AT", "after-delta-commit")
        .output()
        .unwrap();
    assert_eq!(killed.status.code(), None, "{}", text(&killed.stderr));
    assert_eq!(latest_version(&table), 3);
    parquet.push(full(3));
    assert_eq!(files(&table), files(&parquet[3]));
    let summary = delta(&["--incremental"]);
    assert_eq!(summary["delta_version"], 4, "{summary}");
    assert!(summary["stale_removed"].as_u64().unwrap() >= 1, "{summary}");
    assert_eq!(files(&table), files(&parquet[3]));
    parquet.push(parquet[3].clone());
    let after = inodes(&table);

    // Version 5: a full build (--overwrite) replaces every file.
    let summary = delta(&["--overwrite"]);
    assert_eq!(summary["delta_version"], 5, "{summary}");
    assert_eq!(files(&table), files(&parquet[3]));
    let rewritten = inodes(&table);
    assert!(rewritten.keys().all(|p| !after.contains_key(p)));
    parquet.push(parquet[3].clone());

    // Without --overwrite or --incremental, a table is not replaced; a
    // Parquet build does not write into a table.
    let refused = inputs
        .build(&table, &["--format", "delta"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("--overwrite"));
    let refused = inputs.build(&table, &["--overwrite"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("is a leakless Delta Lake table, not a Parquet dataset")
            && text(&refused.stderr).contains("--format delta"),
        "{}",
        text(&refused.stderr)
    );
    let refused = inputs
        .build(&parquet[0], &["--format", "delta", "--overwrite"])
        .output()
        .unwrap();
    assert!(
        text(&refused.stderr).contains("is a leakless Parquet dataset, not a Delta Lake table")
            && text(&refused.stderr).contains("--format parquet"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(latest_version(&table), 5);

    // `leakless report` reads the latest version as it reads the Parquet
    // dataset of the same inputs.
    let report = |dataset: &Path| {
        let html = root.path().join("report.html");
        let output = leakless()
            .arg("report")
            .arg(dataset)
            .arg("--html")
            .arg(&html)
            .arg("--json")
            .output()
            .unwrap();
        assert!(output.status.code() != Some(2), "{}", text(&output.stderr));
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        (
            report["partitions"].clone(),
            report["drift"]["columns"].clone(),
        )
    };
    assert_eq!(report(&table), report(&parquet[3]));

    read_back_every_version(&table, &parquet);
}

/// The marketplace example's spec with its inputs' absolute paths.
fn marketplace_spec() -> String {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/marketplace");
    let mut spec = std::fs::read_to_string(examples.join("leakless.toml")).unwrap();
    for name in ["impressions.csv", "clicks.csv", "listings.csv"] {
        spec = spec.replace(&format!("{name:?}"), &format!("{:?}", examples.join(name)));
    }
    spec
}

/// A Python with the `deltalake` package, Polars, pyarrow, and DuckDB
/// with its Delta reader (the extension from PyPI: DuckDB cannot download
/// it here).
fn delta_python() -> PathBuf {
    common::venv_python(
        "delta-venv",
        "import deltalake, polars, pyarrow, duckdb, duckdb_extension_delta",
        &[
            "deltalake>=1.1",
            "polars>=1.0",
            "pyarrow>=14",
            "duckdb==1.5.5",
            "duckdb-extension-delta==1.5.5",
            "duckdb-extensions",
        ],
    )
}

/// Each version `N` of the table, read by the `deltalake` Python package,
/// by Polars (`pl.read_delta(..., version=N)`) and by DuckDB
/// (`delta_scan(..., version => N)`), holds the rows of the Parquet build
/// `parquet[N]`, read by pyarrow.
fn read_back_every_version(table: &Path, parquet: &[PathBuf]) {
    let python = delta_python();
    let script = r#"
import sys, json
import deltalake, polars as pl, pyarrow.dataset as ds
import duckdb, duckdb_extensions
duckdb_extensions.import_extension("delta")
con = duckdb.connect()
con.sql("LOAD delta")

table, parquet = sys.argv[1], sys.argv[2:]
dt = deltalake.DeltaTable(table)
history = dt.history()
assert len(history) == len(parquet), (len(history), len(parquet))
latest = history[0]
assert latest["leakless"]["rows_written"] > 0, latest

def rows(frame):
    frame = frame.drop([c for c in ("dt", "hour") if c in frame.columns])
    # DuckDB names UTC `Etc/UTC`: the same instants.
    frame = frame.with_columns(pl.col(pl.Datetime).dt.convert_time_zone("UTC"))
    return frame.sort(frame.columns)

for version, path in enumerate(parquet):
    expected = rows(pl.from_arrow(ds.dataset(path, format="parquet", partitioning="hive").to_table()))
    by_polars = rows(pl.read_delta(table, version=version))
    by_delta = rows(pl.from_arrow(deltalake.DeltaTable(table, version=version).to_pyarrow_table()))
    assert by_polars.equals(expected), f"version {version}: polars differs"
    assert by_delta.equals(expected), f"version {version}: deltalake differs"
    by_duckdb = rows(con.sql(f"SELECT * FROM delta_scan('{table}', version => {version})").pl())
    assert by_duckdb.equals(expected), f"version {version}: duckdb differs: {by_duckdb.schema} {expected.schema}"
    assert pl.read_delta(table, version=version)["dt"].dtype == pl.Date
print(json.dumps({"versions": len(parquet)}))
"#;
    let output = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(table)
        .args(parquet)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "reading the versions back failed: {}",
        text(&output.stderr)
    );
}

/// The spec's `[output] format = "delta"` with hour partitions, then a full
/// build of another spec (one feature fewer): the commit replaces the
/// table's schema, and both versions read back with their own columns.
#[test]
fn a_new_spec_replaces_the_schema_and_old_versions_keep_theirs() {
    let root = tempfile::tempdir().unwrap();
    let spec = marketplace_spec();
    let hourly = format!("{spec}\n[output]\npartition = \"hour\"\nformat = \"delta\"\n");
    let (start, _) = hourly.split_once("[features.listing_clicks_24h]").unwrap();
    let (_, rest) = hourly.split_once("[labels.clicked]").unwrap();
    let fewer = format!("{start}[labels.clicked]{rest}");
    let table = root.path().join("table");
    let mut parquet = Vec::new();
    for (i, spec_text) in [hourly, fewer].iter().enumerate() {
        let path = root.path().join(format!("spec-{i}.toml"));
        std::fs::write(&path, spec_text).unwrap();
        let built = leakless()
            .args(["build", "--quiet", "--overwrite", "--spec"])
            .arg(&path)
            .arg("--out")
            .arg(&table)
            .output()
            .unwrap();
        assert!(built.status.success(), "{}", text(&built.stderr));
        assert_eq!(latest_version(&table), i as u64);
        let out = root.path().join(format!("parquet-{i}"));
        let built = leakless()
            .args(["build", "--quiet", "--format", "parquet", "--spec"])
            .arg(&path)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(built.status.success(), "{}", text(&built.stderr));
        assert_eq!(files(&table), files(&out));
        assert!(files(&out).keys().all(|f| f.contains("/hour=")));
        parquet.push(out);
    }
    read_back_every_version(&table, &parquet);
    let python = delta_python();
    let columns = Command::new(python)
        .arg("-c")
        .arg("import sys, polars as pl; print([ (v, 'listing_clicks_24h' in pl.read_delta(sys.argv[1], version=v).columns, pl.read_delta(sys.argv[1], version=v)['hour'].dtype == pl.Int32) for v in (0, 1)])")
        .arg(&table)
        .output()
        .unwrap();
    assert_eq!(
        text(&columns.stdout).trim(),
        "[(0, True, True), (1, False, True)]",
        "{}",
        text(&columns.stderr)
    );
}

/// A build refused for its table's schema (an output column named like a
/// partition column) moves nothing into the table; the next build of a
/// good spec creates it.
#[test]
fn a_build_refused_for_its_schema_leaves_nothing_behind() {
    let root = tempfile::tempdir().unwrap();
    let spec = marketplace_spec();
    let clash = spec.replace("[features.price]", "[features.dt]");
    let table = root.path().join("table");
    let build = |text: &str| {
        let path = root.path().join("spec.toml");
        std::fs::write(&path, text).unwrap();
        leakless()
            .args(["build", "--quiet", "--format", "delta", "--spec"])
            .arg(&path)
            .arg("--out")
            .arg(&table)
            .output()
            .unwrap()
    };
    let refused = build(&clash);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("has a column `dt`"),
        "{}",
        text(&refused.stderr)
    );
    assert!(
        !table.exists() || every_file(&table).is_empty(),
        "{:?}",
        every_file(&table)
    );
    let built = build(&spec);
    assert!(built.status.success(), "{}", text(&built.stderr));
    assert_eq!(latest_version(&table), 0);
}
