//! `leakless audit` on datasets built right (by leakless, by a brute-force
//! script, by the benchmark's hand-written Polars job) and wrong in one way
//! each (by the script): each diagnosed.

use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;

mod common;

fn leakless() -> Command {
    Command::cargo_bin("leakless").unwrap()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sources(data: &Path) -> Vec<String> {
    ["impressions", "clicks", "listing_prices", "listings"]
        .iter()
        .flat_map(|s| {
            [
                "--source".to_owned(),
                format!("{s}={}", data.join(format!("{s}.csv")).display()),
            ]
        })
        .collect()
}

/// `leakless audit` of `dataset` with `spec`; its JSON and exit code.
fn audit(
    dataset: &Path,
    spec: &Path,
    data: &Path,
    sources_of: &[&str],
) -> (serde_json::Value, i32, String) {
    audit_with(dataset, spec, data, sources_of, &[])
}

fn audit_with(
    dataset: &Path,
    spec: &Path,
    data: &Path,
    sources_of: &[&str],
    extra: &[&str],
) -> (serde_json::Value, i32, String) {
    let overrides: Vec<String> = sources(data)
        .chunks(2)
        .filter(|pair| {
            sources_of
                .iter()
                .any(|s| pair[1].starts_with(&format!("{s}=")))
        })
        .flatten()
        .cloned()
        .collect();
    let output = leakless()
        .arg("audit")
        .arg(dataset)
        .arg("--spec")
        .arg(spec)
        .args(&overrides)
        .args(extra)
        .arg("--json")
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    // An error (exit 2) prints no JSON.
    let json = match output.stdout.is_empty() {
        true => serde_json::Value::Null,
        false => serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}")),
    };
    (json, output.status.code().unwrap(), stderr)
}

/// The diagnosis explains nearly every mismatch (a moved time is the
/// leak's twin, not its copy: `t + 1 µs` also drops an event exactly at
/// `t - w`).
fn mostly_explained(c: &serde_json::Value) -> bool {
    let (explained, mismatching) = (
        c["explained"].as_u64().unwrap(),
        c["mismatching"].as_u64().unwrap(),
    );
    mismatching > 0 && explained * 100 >= mismatching * 95
}

fn column<'a>(audit: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    audit["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["column"] == name)
        .unwrap()
}

#[test]
fn the_audit_finds_each_leak_and_passes_right_datasets() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let generate = leakless()
        .args([
            "generate",
            "--impressions",
            "3000",
            "--days",
            "4",
            "--format",
            "csv",
            "--seed",
            "3",
            "--out",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(generate.status.success(), "{}", text(&generate.stderr));
    // Clicks at exactly the time of every fifth impression, on its listing:
    // ties on the window's edge at t.
    let impressions = std::fs::read_to_string(data.join("impressions.csv")).unwrap();
    let mut clicks = std::fs::read_to_string(data.join("clicks.csv")).unwrap();
    for line in impressions.lines().skip(1).step_by(5) {
        let f: Vec<&str> = line.split(',').collect();
        clicks.push_str(&format!("{},{},{}\n", f[2], f[3], f[1]));
    }
    std::fs::write(data.join("clicks.csv"), clicks).unwrap();

    let spec = fixtures().join("audit.toml");
    let used = ["impressions", "clicks", "listing_prices"];
    let ours = dir.path().join("ours");
    let build = leakless()
        .args(["build", "--spec"])
        .arg(&spec)
        .args(
            sources(&data)
                .chunks(2)
                .filter(|p| !p[1].starts_with("listings="))
                .flatten(),
        )
        .arg("--out")
        .arg(&ours)
        .args(["--json", "--quiet"])
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", text(&build.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&build.stdout).unwrap();
    let watermark = summary["watermarks"]["clicked"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(summary["immature_held_back"].as_u64().unwrap() > 0);

    // leakless's own dataset: clean.
    let (report, code, stderr) = audit(&ours, &spec, &data, &used);
    assert_eq!(
        (code, report["clean"].as_bool()),
        (0, Some(true)),
        "{stderr}"
    );
    assert_eq!(report["sampled"], summary["rows_written"]);

    let python = common::venv_python(
        "audit-venv",
        "import polars, pyarrow",
        &["polars", "pyarrow>=14"],
    );
    let script = |mode: &str| {
        let out = dir.path().join(format!("{mode}.parquet"));
        let run = Command::new(&python)
            .arg(fixtures().join("leaky_dataset.py"))
            .arg(&data)
            .arg(&out)
            .arg(mode)
            .arg(&watermark)
            .output()
            .unwrap();
        assert!(run.status.success(), "{mode}: {}", text(&run.stderr));
        out
    };

    // The brute-force script, right: clean.
    let (report, code, stderr) = audit(&script("correct"), &spec, &data, &used);
    assert_eq!(
        (code, report["clean"].as_bool()),
        (0, Some(true)),
        "{stderr}"
    );

    // Another name for a column, mapped; a sample of the rows.
    let renamed = script("renamed");
    let (_, code, stderr) = audit(&renamed, &spec, &data, &used);
    assert_eq!(code, 2, "a missing column is a usage error: {stderr}");
    assert!(
        stderr.contains("has no column `price`") && stderr.contains("price_usd"),
        "{stderr}"
    );
    let mapped = [
        "--column",
        "price=price_usd",
        "--sample",
        "500",
        "--seed",
        "7",
    ];
    let (report, code, stderr) = audit_with(&renamed, &spec, &data, &used, &mapped);
    assert_eq!(
        (code, report["clean"].as_bool()),
        (0, Some(true)),
        "{stderr}"
    );
    assert_eq!(
        (
            report["sampled"].as_u64(),
            column(&report, "price")["theirs"].as_str()
        ),
        (Some(500), Some("price_usd"))
    );

    // `<=` at t: the 24 h count leaks the ties.
    let (report, code, stderr) = audit(&script("le"), &spec, &data, &used);
    assert_eq!(code, 1, "{stderr}");
    let count = column(&report, "listing_clicks_24h");
    assert!(count["mismatching"].as_u64().unwrap() > 0, "{stderr}");
    assert!(mostly_explained(count), "{stderr}");
    assert!(
        count["diagnosis"]
            .as_str()
            .unwrap()
            .starts_with("tie leakage"),
        "{stderr}"
    );
    assert_eq!(column(&report, "price")["mismatching"], 0);

    // A window centred on t.
    let (report, code, stderr) = audit(&script("ahead"), &spec, &data, &used);
    assert_eq!(code, 1, "{stderr}");
    let count = column(&report, "listing_clicks_24h");
    assert!(mostly_explained(count), "{stderr}");
    assert!(
        count["diagnosis"]
            .as_str()
            .unwrap()
            .contains("centred on t (events up to t + 12h)"),
        "{stderr}"
    );

    // Today's price instead of the one valid at t.
    let (report, code, stderr) = audit(&script("snapshot"), &spec, &data, &used);
    assert_eq!(code, 1, "{stderr}");
    let price = column(&report, "price");
    assert!(price["mismatching"].as_u64().unwrap() > 0, "{stderr}");
    assert!(mostly_explained(price), "{stderr}");
    assert!(
        price["diagnosis"]
            .as_str()
            .unwrap()
            .starts_with("as-of leakage"),
        "{stderr}"
    );
    assert_eq!(column(&report, "listing_clicks_24h")["mismatching"], 0);

    // Wrong, but no leak: a count of 0 everywhere (a join that missed
    // its events) and flipped labels. Past every event a 24 h window is
    // empty, which matches every 0, but that move means nothing for a
    // sliding window; nor does any move for a label, which looks after t
    // by its definition: no diagnosis.
    let (report, code, stderr) = audit(&script("zeros"), &spec, &data, &used);
    assert_eq!(code, 1, "{stderr}");
    for name in ["listing_clicks_24h", "clicked"] {
        let c = column(&report, name);
        assert!(c["mismatching"].as_u64().unwrap() > 0, "{name}: {stderr}");
        assert!(c["diagnosis"].is_null(), "{name}: {c}");
    }
    assert_eq!(column(&report, "price")["mismatching"], 0);

    // Immature rows kept and labelled 0.
    let (report, code, stderr) = audit(&script("immature"), &spec, &data, &used);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        report["immature"], summary["immature_held_back"],
        "{stderr}"
    );
    assert!(
        report["columns"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["mismatching"] == 0),
        "{stderr}"
    );

    // The benchmark's hand-written Polars job of the marketplace spec,
    // audited with --sample and a column mapped: clean.
    let polars = dir.path().join("polars");
    let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench");
    let run = Command::new(&python)
        .arg(bench.join("ref_polars.py"))
        .args(["impressions", "clicks", "listings"].map(|s| data.join(format!("{s}.csv"))))
        .arg(&polars)
        .arg(&watermark)
        .current_dir(&bench)
        .output()
        .unwrap();
    assert!(run.status.success(), "ref_polars: {}", text(&run.stderr));
    let marketplace =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/marketplace/leakless.toml");
    let (report, code, stderr) = audit(
        &polars,
        &marketplace,
        &data,
        &["impressions", "clicks", "listings"],
    );
    assert_eq!(
        (code, report["clean"].as_bool()),
        (0, Some(true)),
        "{stderr}"
    );
}
