//! `leakless report`: one self-contained HTML page about a dataset (inline
//! CSS and SVG; no script, no network), and the drift it computes.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::drift::{self, Drift, Rows, Values};
use super::profile::DatasetProfile;
use crate::error::{Error, Result};

/// What a report found, for `--json` and the page.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dataset: String,
    pub feature_set_hash: String,
    pub rows_written: u64,
    pub held_back: u64,
    pub partitions: usize,
    pub drift: Drift,
    /// Columns with any drift flag.
    pub flagged: Vec<String>,
    /// Checks of the build that failed (published with
    /// `--publish-on-failed-checks`).
    pub failed_checks: usize,
}

/// Reads the local dataset `dataset` (its manifest, profile and rows) and,
/// when given, `baseline`'s rows; the report and its HTML page.
pub fn build(dataset: &Path, baseline: Option<&Path>) -> Result<(Report, String)> {
    let meta = crate::write::delta::meta_dir(dataset)?;
    let manifest = read_json(&meta.join(crate::write::manifest::FILE_NAME))?;
    let profile = DatasetProfile::read(dataset)?;
    let rows = Rows::read(dataset)?;
    // The spine time moves from partition to partition by construction.
    let time = manifest["spec"]["spine"]["time"].as_str().unwrap_or("");
    let compared: Vec<String> = (rows.columns.iter())
        .filter(|c| *c != time)
        .cloned()
        .collect();
    let drift = match baseline {
        Some(base) => {
            let base_rows = Rows::read(base)?;
            let columns: Vec<String> = (compared.iter())
                .filter(|c| base_rows.columns.contains(c))
                .cloned()
                .collect();
            Drift {
                reference: format!("the baseline `{}`", base.display()),
                current: format!("`{}`", dataset.display()),
                columns: drift::compare(&columns, &|c| base_rows.values(c, |_| true), &|c| {
                    rows.values(c, |_| true)
                }),
                not_in_reference: (compared.iter())
                    .filter(|c| !columns.contains(c))
                    .cloned()
                    .collect(),
            }
        }
        None => {
            // The latest partition with rows against every one before it.
            // Every partition read has rows (its files are its rows).
            let latest = rows.partitions.len().checked_sub(1);
            let name = |i: usize| rows.partitions[i].0.clone();
            Drift {
                reference: match latest {
                    Some(l) if l > 0 => format!("the partitions before {}", name(l)),
                    _ => "nothing (one partition)".to_owned(),
                },
                current: latest.map_or("nothing".to_owned(), name),
                columns: match latest {
                    Some(l) if l > 0 => {
                        drift::compare(&compared, &|c| rows.values(c, |i| i < l), &|c| {
                            rows.values(c, |i| i == l)
                        })
                    }
                    _ => Vec::new(),
                },
                not_in_reference: Vec::new(),
            }
        }
    };
    let report = Report {
        dataset: dataset.display().to_string(),
        feature_set_hash: profile.feature_set_hash.clone(),
        rows_written: manifest["rows_written"].as_u64().unwrap_or(0),
        held_back: profile.held_back(),
        partitions: profile.partitions.len(),
        flagged: (drift.columns.iter())
            .filter(|c| !c.flags.is_empty())
            .map(|c| c.column.clone())
            .collect(),
        failed_checks: (manifest["checks"].as_array())
            .map_or(0, |c| c.iter().filter(|c| c["passed"] == false).count()),
        drift,
    };
    let html = page(&report, &manifest, &profile, &rows);
    Ok((report, html))
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Invalid(format!("reading {}: {e}", path.display())))
}

/// Text for HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn num(x: f64) -> String {
    if x == x.trunc() && x.abs() < 1e15 {
        format!("{x:.0}")
    } else if x.abs() >= 1000.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.4}")
    }
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}\
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}\
th{background:#f4f4f4}td.l,th.l{text-align:left}.flag{color:#b00;font-weight:bold}.ok{color:#070}\
.features{display:flex;flex-wrap:wrap;gap:12px}.feature{border:1px solid #ddd;padding:8px;width:250px}\
pre{background:#f8f8f8;padding:8px;overflow:auto;max-height:400px;font-size:12px}\
svg text{font:11px system-ui,sans-serif;fill:#444}";

/// Vertical bars (with labels under every few) in an SVG.
fn bars(
    id: &str,
    labels: &[String],
    values: &[f64],
    color: &str,
    width: f64,
    height: f64,
) -> String {
    let max = values.iter().copied().fold(0.0, f64::max).max(1e-12);
    let n = values.len().max(1) as f64;
    let w = (width - 40.0) / n;
    let mut svg = format!(
        "<svg id=\"{id}\" width=\"{width}\" height=\"{}\" viewBox=\"0 0 {width} {}\">",
        height + 20.0,
        height + 20.0
    );
    let _ = write!(svg, "<text x=\"0\" y=\"10\">{}</text>", esc(&num(max)));
    for (i, v) in values.iter().enumerate() {
        let h = (v / max * (height - 14.0)).max(if *v > 0.0 { 1.0 } else { 0.0 });
        let x = 40.0 + i as f64 * w;
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{color}\"><title>{}: {}</title></rect>",
            height - h,
            (w - 1.0).max(1.0),
            esc(&labels[i]),
            esc(&num(*v))
        );
    }
    let step = (labels.len() / 6).max(1);
    for (i, label) in labels.iter().enumerate().step_by(step) {
        let x = 40.0 + i as f64 * w;
        let _ = write!(
            svg,
            "<text x=\"{x:.1}\" y=\"{}\">{}</text>",
            height + 14.0,
            esc(label)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A histogram of `values` in 20 equal bins between their extremes.
fn histogram(id: &str, values: &Values) -> String {
    if !values.numbers.is_empty() {
        let (lo, hi) = values
            .numbers
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let bins = 20;
        let mut counts = vec![0.0; bins];
        for &v in &values.numbers {
            let k = match hi > lo {
                true => (((v - lo) / (hi - lo)) * bins as f64) as usize,
                false => 0,
            };
            counts[k.min(bins - 1)] += 1.0;
        }
        let labels: Vec<String> = (0..bins)
            .map(|k| num(lo + (hi - lo) * k as f64 / bins as f64))
            .collect();
        return bars(id, &labels, &counts, "#4a7ebb", 240.0, 90.0);
    }
    let mut counts: std::collections::BTreeMap<&str, u64> = Default::default();
    for t in &values.texts {
        *counts.entry(t).or_default() += 1;
    }
    let mut top: Vec<(&str, u64)> = counts.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    top.truncate(8);
    let labels: Vec<String> = top.iter().map(|(t, _)| t.to_string()).collect();
    let counts: Vec<f64> = top.iter().map(|(_, n)| *n as f64).collect();
    bars(id, &labels, &counts, "#6a9f4a", 240.0, 90.0)
}

fn page(
    report: &Report,
    manifest: &serde_json::Value,
    profile: &DatasetProfile,
    rows: &Rows,
) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>leakless report: {}</title><style>{STYLE}</style></head><body>",
        esc(&report.dataset)
    );
    let _ = write!(
        h,
        "<h1>leakless report: <code>{}</code></h1><p>Feature-set hash <code id=\"hash\">{}</code>, leakless {}.</p>",
        esc(&report.dataset),
        esc(&report.feature_set_hash),
        esc(manifest["version"].as_str().unwrap_or("?"))
    );
    // Summary.
    let quarantined: u64 = (manifest["reconciliation"].as_object()).map_or(0, |r| {
        r.values()
            .map(|s| s["quarantined"].as_u64().unwrap_or(0))
            .sum()
    });
    let _ = write!(
        h,
        "<table id=\"summary\"><tr><th class=\"l\">rows written</th><td id=\"rows-written\">{}</td></tr>\
         <tr><th class=\"l\">held back (immature)</th><td id=\"held-back\">{}</td></tr>\
         <tr><th class=\"l\">quarantined</th><td id=\"quarantined\">{quarantined}</td></tr>\
         <tr><th class=\"l\">partitions</th><td id=\"partitions\">{}</td></tr>\
         <tr><th class=\"l\">failed checks</th><td id=\"failed-checks\" class=\"{}\">{}</td></tr>\
         <tr><th class=\"l\">columns flagged for drift</th><td id=\"flagged\" class=\"{}\">{}</td></tr></table>",
        report.rows_written,
        report.held_back,
        report.partitions,
        if report.failed_checks > 0 {
            "flag"
        } else {
            "ok"
        },
        report.failed_checks,
        if report.flagged.is_empty() {
            "ok"
        } else {
            "flag"
        },
        report.flagged.len()
    );
    // Per day.
    let labels: Vec<String> = profile
        .partitions
        .iter()
        .map(|p| p.partition.clone())
        .collect();
    let written: Vec<f64> = profile.partitions.iter().map(|p| p.rows as f64).collect();
    let held: Vec<f64> = profile
        .partitions
        .iter()
        .map(|p| p.held_back as f64)
        .collect();
    h.push_str("<h2>Rows per partition</h2>");
    h.push_str(&bars(
        "rows-per-partition",
        &labels,
        &written,
        "#4a7ebb",
        1000.0,
        160.0,
    ));
    if held.iter().any(|&v| v > 0.0) {
        h.push_str("<h3>Held back per partition</h3>");
        h.push_str(&bars(
            "held-back-per-partition",
            &labels,
            &held,
            "#c98a2a",
            1000.0,
            80.0,
        ));
    }
    let label_names: Vec<String> = (profile.partitions.iter())
        .flat_map(|p| p.labels.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for label in &label_names {
        let rates: Vec<f64> = (profile.partitions.iter())
            .map(|p| p.labels.get(label).map_or(0.0, |l| l.rate))
            .collect();
        let _ = write!(h, "<h3>Label rate: {}</h3>", esc(label));
        h.push_str(&bars(
            &format!("label-rate-{}", esc(label)),
            &labels,
            &rates,
            "#8a4abb",
            1000.0,
            100.0,
        ));
    }
    h.push_str("<table id=\"per-partition\"><tr><th class=\"l\">partition</th><th>rows</th><th>held back</th>");
    for label in &label_names {
        let _ = write!(h, "<th>{} rate</th>", esc(label));
    }
    h.push_str("</tr>");
    for p in &profile.partitions {
        let _ = write!(
            h,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td>",
            esc(&p.partition),
            p.rows,
            p.held_back
        );
        for label in &label_names {
            let rate = p
                .labels
                .get(label)
                .map_or(String::new(), |l| format!("{:.4}", l.rate));
            let _ = write!(h, "<td>{rate}</td>");
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    // Reconciliation and quarantine.
    h.push_str("<h2>Where every input row went</h2><table id=\"reconciliation\"><tr><th class=\"l\">source</th><th>read</th><th>quarantined</th><th class=\"l\">as spine</th><th class=\"l\">as indexed</th></tr>");
    if let Some(all) = manifest["reconciliation"].as_object() {
        for (source, r) in all {
            let spine = match r.get("spine") {
                Some(s) => format!(
                    "{} by where, {} held back, {} written",
                    s["filtered_by_where"], s["held_back_immature"], s["written"]
                ),
                None => String::new(),
            };
            let indexed = match r.get("indexed") {
                Some(s) => format!(
                    "{} indexed, {} without key or time, {} by where",
                    s["indexed"], s["no_key_or_time"], s["filtered_by_where"]
                ),
                None => String::new(),
            };
            let _ = write!(
                h,
                "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
                esc(source),
                r["read"],
                r["quarantined"],
                esc(&spine),
                esc(&indexed)
            );
        }
    }
    h.push_str("</table>");
    // Checks.
    if let Some(checks) = manifest["checks"].as_array() {
        let failed: Vec<&serde_json::Value> =
            checks.iter().filter(|c| c["passed"] == false).collect();
        let _ = write!(
            h,
            "<h2>Checks</h2><p>{} of {} passed.</p>",
            checks.len() - failed.len(),
            checks.len()
        );
        if !failed.is_empty() {
            h.push_str("<table id=\"failed-checks-table\"><tr><th class=\"l\">check</th><th class=\"l\">partition</th><th>value</th></tr>");
            for c in failed {
                let _ = write!(
                    h,
                    "<tr class=\"flag\"><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td></tr>",
                    esc(c["check"].as_str().unwrap_or("")),
                    esc(c["partition"].as_str().unwrap_or("")),
                    c["value"]
                );
            }
            h.push_str("</table>");
        }
    }
    // Drift.
    let _ = write!(
        h,
        "<h2>Drift</h2><p>{} against {}. PSI over the non-null values (deciles of the reference, or its 10 most frequent strings and the rest); flags: drift (PSI &ge; {}), watch (&ge; {}), nulls (null rate moved &ge; {}), mean (moved more than {} reference standard deviations).</p>",
        esc(&report.drift.current),
        esc(&report.drift.reference),
        drift::PSI_DRIFT,
        drift::PSI_WATCH,
        drift::NULL_RATE_CHANGE,
        drift::MEAN_CHANGE
    );
    h.push_str("<table id=\"drift\"><tr><th class=\"l\">column</th><th>PSI</th><th>null rate</th><th>mean</th><th class=\"l\">flags</th></tr>");
    for c in &report.drift.columns {
        let mean = c.mean.map_or(String::new(), |(a, b)| {
            format!("{} &rarr; {}", num(a), num(b))
        });
        let _ = write!(
            h,
            "<tr data-column=\"{}\"><td class=\"l\">{}</td><td>{}</td><td>{:.4} &rarr; {:.4}</td><td>{mean}</td><td class=\"l flag\">{}</td></tr>",
            esc(&c.column),
            esc(&c.column),
            c.psi.map_or(String::new(), |p| format!("{p:.4}")),
            c.null_rate.0,
            c.null_rate.1,
            c.flags.join(", ")
        );
    }
    h.push_str("</table>");
    if !report.drift.not_in_reference.is_empty() {
        let names: Vec<String> = (report.drift.not_in_reference.iter())
            .map(|c| format!("<code>{}</code>", esc(c)))
            .collect();
        let _ = write!(
            h,
            "<p id=\"not-compared\">Not compared, not in {}: {}.</p>",
            esc(&report.drift.reference),
            names.join(", ")
        );
    }
    // Features.
    h.push_str("<h2>Columns</h2><div class=\"features\">");
    for (i, column) in rows.columns.iter().enumerate() {
        let values = rows.values(column, |_| true);
        let _ = write!(
            h,
            "<div class=\"feature\" id=\"column-{i}\"><b>{}</b><br>null rate {:.4}<br>",
            esc(column),
            values.null_rate()
        );
        h.push_str(&histogram(&format!("histogram-{i}"), &values));
        h.push_str("</div>");
    }
    h.push_str("</div>");
    // Spec and inputs.
    h.push_str("<h2>Inputs</h2><table id=\"inputs\"><tr><th class=\"l\">source</th><th class=\"l\">file</th><th>rows</th><th class=\"l\">SHA-256</th></tr>");
    if let Some(inputs) = manifest["inputs"].as_object() {
        for (source, files) in inputs {
            for f in files.as_array().into_iter().flatten() {
                let _ = write!(
                    h,
                    "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td class=\"l\"><code>{}</code></td></tr>",
                    esc(source),
                    esc(f["path"].as_str().unwrap_or("")),
                    f["rows"],
                    esc(f["sha256"].as_str().unwrap_or(""))
                );
            }
        }
    }
    h.push_str("</table>");
    let spec = serde_json::to_string_pretty(&manifest["spec"]).unwrap_or_default();
    let _ = writeln!(
        h,
        "<h2>Spec</h2><pre id=\"spec\">{}</pre></body></html>",
        esc(&spec)
    );
    h
}
