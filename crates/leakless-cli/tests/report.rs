//! `leakless report`: the HTML page rendered in headless Chromium (Debian's
//! `chromium`, which `.ci/run` installs), and drift against a baseline.

use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;

fn leakless() -> Command {
    Command::cargo_bin("leakless").unwrap()
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/marketplace")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Chromium, headless, with a fresh profile and no background traffic.
fn chromium(dir: &Path, args: &[&str]) -> std::process::Output {
    let profile = tempfile::tempdir_in(dir).unwrap();
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("chromium did not start ({e}); .ci/run installs Debian's chromium")
        });
    assert!(
        output.status.success(),
        "chromium: {}",
        text(&output.stderr)
    );
    output
}

/// Whether a PNG holds more than one colour: its pixel rows, inflated,
/// hold many distinct bytes (a blank page is one colour). Python's zlib
/// reads it.
fn png_is_not_blank(png: &Path) -> bool {
    let script = r#"
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, width, height = 8, b"", 0, 0
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        width, height = struct.unpack(">II", body[:8])
    if kind == b"IDAT":
        idat += body
    pos += 12 + n
pixels = zlib.decompress(idat)
print(width, height, len(set(pixels)), sum(1 for b in pixels if b not in (0, 255)))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(png)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let fields: Vec<u64> = text(&out.stdout)
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    let (width, height, distinct, colored) = (fields[0], fields[1], fields[2], fields[3]);
    width >= 800 && height >= 600 && distinct > 16 && colored > 10_000
}

#[test]
fn the_report_renders_in_chromium_with_its_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dataset");
    let build = leakless()
        .args(["build", "--spec"])
        .arg(examples().join("leakless.toml"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", text(&build.stderr));
    let html = dir.path().join("report.html");
    let report = leakless()
        .arg("report")
        .arg(&out)
        .arg("--html")
        .arg(&html)
        .arg("--json")
        .output()
        .unwrap();
    // The example's last day has a click rate unlike the days before:
    // flagged, exit 1.
    let summary: serde_json::Value = serde_json::from_slice(&report.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&report.stderr)));
    assert_eq!(
        report.status.code(),
        Some(if summary["flagged"].as_array().unwrap().is_empty() {
            0
        } else {
            1
        })
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("<script"));

    let url = format!("file://{}", html.display());
    let dom = text(&chromium(dir.path(), &["--dump-dom", &url]).stdout);
    assert!(dom.contains("<td id=\"rows-written\">9</td>"), "{dom}");
    assert!(dom.contains("<td id=\"held-back\">1</td>"), "{dom}");
    // One bar per partition folder: three written, one all held back.
    let rows_chart = dom.split("id=\"rows-per-partition\"").nth(1).unwrap();
    let rows_chart = &rows_chart[..rows_chart.find("</svg>").unwrap()];
    assert_eq!(rows_chart.matches("<rect").count(), 4, "{rows_chart}");
    assert!(dom.contains("id=\"label-rate-clicked\""));
    // A histogram per output column, the drift table, the inputs with
    // their hashes.
    for i in 0..9 {
        assert!(
            dom.contains(&format!("id=\"histogram-{i}\"")),
            "histogram {i}"
        );
    }
    assert!(dom.contains("<tr data-column=\"price\">"), "{dom}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_manifest.json")).unwrap()).unwrap();
    let sha = manifest["inputs"]["clicks"][0]["sha256"].as_str().unwrap();
    assert!(dom.contains(sha));
    assert!(dom.contains(manifest["feature_set_hash"].as_str().unwrap()));

    let png = dir.path().join("report.png");
    chromium(
        dir.path(),
        &[
            "--window-size=1200,1600",
            "--hide-scrollbars",
            &format!("--screenshot={}", png.display()),
            &url,
        ],
    );
    assert!(png_is_not_blank(&png), "the screenshot is blank");
}

/// Builds the generated marketplace of `data` into `out`.
fn build_generated(data: &Path, out: &Path) {
    let build = leakless()
        .arg("build")
        .arg("--impressions")
        .arg(data.join("impressions.csv"))
        .arg("--clicks")
        .arg(data.join("clicks.csv"))
        .arg("--listings")
        .arg(data.join("listings.csv"))
        .arg("--out")
        .arg(out)
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", text(&build.stderr));
}

#[test]
fn drift_against_a_baseline_flags_the_shifted_column_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let generate = leakless()
        .args([
            "generate",
            "--impressions",
            "20000",
            "--days",
            "5",
            "--format",
            "csv",
            "--out",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(generate.status.success(), "{}", text(&generate.stderr));
    build_generated(&data, &dir.path().join("base"));
    // The same logs with every price tripled.
    let listings = std::fs::read_to_string(data.join("listings.csv")).unwrap();
    let mut lines = listings.lines();
    let header = lines.next().unwrap();
    let price = header.split(',').position(|c| c == "price").unwrap();
    let mut shifted = vec![header.to_owned()];
    for line in lines {
        let mut fields: Vec<String> = line.split(',').map(str::to_owned).collect();
        if let Ok(p) = fields[price].parse::<f64>() {
            fields[price] = format!("{}", p * 3.0);
        }
        shifted.push(fields.join(","));
    }
    std::fs::write(data.join("listings.csv"), shifted.join("\n") + "\n").unwrap();
    build_generated(&data, &dir.path().join("shifted"));

    let report = leakless()
        .arg("report")
        .arg(dir.path().join("shifted"))
        .arg("--baseline")
        .arg(dir.path().join("base"))
        .arg("--html")
        .arg(dir.path().join("drift.html"))
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(report.status.code(), Some(1), "{}", text(&report.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(summary["flagged"], serde_json::json!(["price"]));
    let columns = summary["drift"]["columns"].as_array().unwrap();
    let price = columns.iter().find(|c| c["column"] == "price").unwrap();
    assert!(price["psi"].as_f64().unwrap() >= 0.25, "{price}");
    // The PSI from its definition: bins cut at the baseline's deciles.
    let values = |name: &str| {
        let rows = leakless::quality::drift::Rows::read(&dir.path().join(name)).unwrap();
        rows.values("price", |_| true).numbers
    };
    let (base, now) = (values("base"), values("shifted"));
    let mut sorted = base.clone();
    sorted.sort_by(f64::total_cmp);
    let mut cuts: Vec<f64> = (1..10)
        .map(|k| sorted[(k * sorted.len()).div_ceil(10) - 1])
        .collect();
    cuts.dedup();
    let shares = |v: &[f64]| {
        let mut counts = vec![0.0; cuts.len() + 1];
        for x in v {
            counts[cuts.iter().filter(|&&c| c < *x).count()] += 1.0;
        }
        counts
            .iter()
            .map(|c| c / v.len() as f64)
            .collect::<Vec<f64>>()
    };
    let psi: f64 = (shares(&base).iter().zip(shares(&now)))
        .map(|(e, a)| {
            let (e, a) = (e.max(1e-4), a.max(1e-4));
            (a - e) * (a / e).ln()
        })
        .sum();
    let reported = price["psi"].as_f64().unwrap();
    assert!(
        (reported - psi).abs() < 1e-9,
        "reported {reported}, by the definition {psi}"
    );
    assert!(
        price["flags"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("drift"))
    );
    for c in columns.iter().filter(|c| c["column"] != "price") {
        assert!(c["psi"].as_f64().is_none_or(|p| p < 1e-9), "{c}");
    }
    assert_eq!(summary["drift"]["not_in_reference"], serde_json::json!([]));

    // A baseline without the price (another spec): the price is named as
    // not compared, not left out without a word.
    let spec = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/marketplace/leakless.toml"),
    )
    .unwrap()
    .replace(
        "[features.price]\nsource = \"listings\"\nop = \"lookup\"\ncolumn = \"price\"\n",
        "",
    );
    assert!(!spec.contains("[features.price]"));
    let spec_path = dir.path().join("no-price.toml");
    std::fs::write(&spec_path, spec).unwrap();
    let build = leakless()
        .arg("build")
        .arg("--spec")
        .arg(&spec_path)
        .args(
            ["impressions", "clicks", "listings"]
                .map(|s| format!("--source={s}={}", data.join(format!("{s}.csv")).display())),
        )
        .arg("--out")
        .arg(dir.path().join("no-price"))
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", text(&build.stderr));
    let html = dir.path().join("no-price.html");
    let report = leakless()
        .arg("report")
        .arg(dir.path().join("shifted"))
        .arg("--baseline")
        .arg(dir.path().join("no-price"))
        .arg("--html")
        .arg(&html)
        .arg("--json")
        .output()
        .unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(
        summary["drift"]["not_in_reference"],
        serde_json::json!(["price"])
    );
    let columns = summary["drift"]["columns"].as_array().unwrap();
    assert!(columns.iter().all(|c| c["column"] != "price"));
    assert!(
        text(&report.stderr).contains("not compared, not in the baseline")
            && text(&report.stderr).contains("no-price`: price"),
        "{}",
        text(&report.stderr)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("id=\"not-compared\""), "the page names it");
}
