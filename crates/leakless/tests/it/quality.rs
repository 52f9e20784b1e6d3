//! Data quality: quarantine of Parquet rows and the reconciliation of an
//! indexed source, counted by hand.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::UInt64Type;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use leakless::ingest::{BadRowPolicy, RowUses};

use crate::common::{dataset_bytes, runtime};

const T0: i64 = 1_790_000_000_000_000; // 2026-09-21T14:13:20Z

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// Events as (k, amount, kind, ts); `None` for a null.
type Event = (Option<i64>, Option<f64>, Option<&'static str>, Option<i64>);

fn write_events(path: &Path, events: &[Event]) {
    let ts: TimestampMicrosecondArray = events.iter().map(|e| e.3).collect();
    write_parquet(
        path,
        vec![
            (
                "k",
                Arc::new(events.iter().map(|e| e.0).collect::<Int64Array>()),
            ),
            (
                "amount",
                Arc::new(events.iter().map(|e| e.1).collect::<Float64Array>()),
            ),
            (
                "kind",
                Arc::new(events.iter().map(|e| e.2).collect::<StringArray>()),
            ),
            ("ts", Arc::new(ts.with_timezone("UTC"))),
        ],
    );
}

const SPEC: &str = r#"
version = 1
watermark = "2026-10-01T00:00:00Z"

[sources.sp]
path = "spine.csv"
time = "ts"
columns = { id = "int64", k = "int64", ts = "timestamp" }

[sources.ev]
path = "ev.parquet"
time = "ts"
columns = { k = "int64", amount = "float64", kind = "string", ts = "timestamp" }

[spine]
source = "sp"
columns = ["id", "k"]

[features.a_count]
source = "ev"
key = "k"
op = "count"
window = "lifetime"
where = "kind = 'a'"

[features.b_sum]
source = "ev"
key = "k"
op = "sum"
column = "amount"
window = "lifetime"
where = "kind = 'b'"
"#;

/// The spine source's `max_bad_rows` in the spec decides the gate when
/// no flag overrides it.
#[test]
fn a_sources_max_bad_rows_in_the_spec_is_its_gate() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("spine.csv"),
        "id,k,ts\n1,1,2026-09-22T00:00:00Z\nx,2,2026-09-22T00:00:00Z\n3,,2026-09-22T00:00:00Z\n4,1,2026-09-23T00:00:00Z\n",
    )
    .unwrap();
    write_events(
        &dir.path().join("ev.parquet"),
        &[(Some(1), Some(1.0), Some("a"), Some(T0))],
    );
    let run = |max: &str| {
        let spec = SPEC.replace(
            "[sources.sp]\n",
            &format!("[sources.sp]\nmax_bad_rows = {max}\n"),
        );
        std::fs::write(dir.path().join("spec.toml"), spec).unwrap();
        let build =
            leakless::Build::from_spec_file(dir.path().join("spec.toml"), dir.path().join("out"))?
                .with_bad_rows(BadRowPolicy::Quarantine)
                .with_overwrite(true);
        runtime().block_on(build.execute())
    };
    // 1 bad row of 4: a quarter.
    let summary = run("0.25").unwrap();
    assert_eq!(summary.reconciliation["sp"].quarantined, 1);
    let err = run("0.2").unwrap_err();
    assert!(matches!(err, leakless::Error::Quality(_)), "{err}");
    assert!(err.to_string().contains("above max_bad_rows 0.2"), "{err}");
    let err = run("2").unwrap_err();
    assert!(
        err.to_string().contains("max_bad_rows 2 is not a fraction"),
        "{err}"
    );
}

fn build(dir: &Path, out: &str, policy: BadRowPolicy) -> leakless::Result<leakless::BuildSummary> {
    let build = leakless::Build::from_spec_file(dir.join("spec.toml"), dir.join(out))?
        .with_bad_rows(policy)
        .with_max_bad_rows(Some(0.5))
        .with_target_partitions(2);
    runtime().block_on(build.execute())
}

#[test]
fn parquet_bad_rows_are_set_aside_and_every_event_is_accounted_for() {
    let hour = 3_600_000_000;
    let good: Vec<Event> = vec![
        (Some(1), Some(1.0), Some("a"), Some(T0)), // indexed (a_count)
        (Some(1), Some(2.5), Some("b"), Some(T0 + hour)), // indexed (b_sum)
        (None, Some(4.0), Some("a"), Some(T0)),    // a `where` passes, no key
        (Some(2), Some(1.0), Some("b"), Some(T0)), // indexed
        (Some(2), Some(1.0), Some("c"), Some(T0)), // no `where` passes
        (Some(2), Some(1.0), None, Some(T0)),      // a null kind: no `where` passes
    ];
    let bad: Vec<(usize, Event, &str, &str)> = vec![
        // (position in the file, event, column, reason)
        (
            1,
            (Some(1), Some(1.0), Some("a"), None),
            "ts",
            "missing value",
        ),
        (
            3,
            (Some(1), Some(f64::NAN), Some("b"), Some(T0)),
            "amount",
            "not a finite float64",
        ),
        (
            4,
            (Some(1), Some(1.0), Some("a"), Some(-3_000_000_000_000_000)),
            "ts",
            "a time outside",
        ),
        // Two faults: set aside once, for its first bad column.
        (
            7,
            (Some(1), Some(f64::INFINITY), Some("a"), None),
            "amount",
            "not a finite float64",
        ),
    ];
    let mut all = good.clone();
    for (at, event, _, _) in &bad {
        all.insert(*at, *event);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("spec.toml"), SPEC).unwrap();
    std::fs::write(
        dir.path().join("spine.csv"),
        "id,k,ts\n1,1,2026-09-22T00:00:00Z\n2,2,2026-09-22T00:00:00Z\n3,,2026-09-22T00:00:00Z\n",
    )
    .unwrap();

    write_events(&dir.path().join("ev.parquet"), &good);
    let clean = build(dir.path(), "clean", BadRowPolicy::Fail).unwrap();
    write_events(&dir.path().join("ev.parquet"), &all);
    let err = build(dir.path(), "strict", BadRowPolicy::Fail).unwrap_err();
    assert!(
        err.to_string()
            .contains("row 4, column `amount`: not a finite float64"),
        "{err}"
    );
    let summary = build(dir.path(), "messy", BadRowPolicy::Quarantine).unwrap();

    assert_eq!(
        dataset_bytes(&dir.path().join("messy")),
        dataset_bytes(&dir.path().join("clean"))
    );
    let rows = summary.reconciliation["ev"];
    assert_eq!((rows.read, rows.quarantined), (10, 4));
    assert_eq!(
        rows.indexed,
        Some(RowUses {
            indexed: 3,
            no_key_or_time: 1,
            filtered_by_where: 2,
        })
    );
    assert_eq!(clean.reconciliation["ev"].indexed, rows.indexed);
    assert_eq!(rows.spine, None);
    let spine = summary.reconciliation["sp"];
    assert_eq!((spine.read, spine.quarantined, spine.indexed), (3, 0, None));
    assert_eq!(spine.spine.unwrap().written, 3);

    // The quarantine file: each bad row with its Parquet row (1-based),
    // column, reason and the row as read.
    let path = dir.path().join("messy/_quarantine/ev.parquet");
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    let batch = datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(batch.num_rows(), bad.len());
    let column = |name: &str| batch.column_by_name(name).unwrap().clone();
    let (rows_col, lines) = (column("row"), column("line"));
    let (columns, reasons, raw) = (column("column"), column("reason"), column("raw"));
    for (i, (at, _, name, reason)) in bad.iter().enumerate() {
        assert_eq!(
            rows_col.as_primitive::<UInt64Type>().value(i),
            *at as u64 + 1
        );
        assert!(lines.is_null(i));
        assert_eq!(columns.as_string::<i32>().value(i), *name);
        assert!(
            reasons.as_string::<i32>().value(i).starts_with(reason),
            "{i}"
        );
        assert!(
            raw.as_string::<i32>().value(i).starts_with("k=1, amount="),
            "{i}"
        );
    }
    assert!(raw.as_string::<i32>().value(0).ends_with("ts=null"));
}

/// A column's values in row order, as f64 (numbers, times in µs, bools as
/// 0/1) or text; `None` for a null.
enum Values {
    Numbers(Vec<Option<f64>>, Vec<Option<i64>>),
    Texts(Vec<Option<String>>),
}

fn column_values(batches: &[RecordBatch], name: &str) -> Values {
    use datafusion::arrow::datatypes::{
        DataType, Float64Type, Int8Type, Int64Type, TimestampMicrosecondType,
    };
    let columns: Vec<&ArrayRef> = batches
        .iter()
        .map(|b| b.column_by_name(name).unwrap())
        .collect();
    let data_type = columns[0].data_type().clone();
    if data_type == DataType::Utf8 {
        return Values::Texts(
            (columns.iter())
                .flat_map(|c| {
                    c.as_string::<i32>()
                        .iter()
                        .map(|v| v.map(str::to_owned))
                        .collect::<Vec<_>>()
                })
                .collect(),
        );
    }
    let mut ints: Vec<Option<i64>> = Vec::new();
    let mut floats: Vec<Option<f64>> = Vec::new();
    for c in columns {
        match &data_type {
            DataType::Int8 => ints.extend(
                c.as_primitive::<Int8Type>()
                    .iter()
                    .map(|v| v.map(i64::from)),
            ),
            DataType::Int64 => ints.extend(c.as_primitive::<Int64Type>().iter()),
            DataType::Timestamp(..) => {
                ints.extend(c.as_primitive::<TimestampMicrosecondType>().iter())
            }
            DataType::Float64 => floats.extend(c.as_primitive::<Float64Type>().iter()),
            DataType::Boolean => floats.extend(
                c.as_boolean()
                    .iter()
                    .map(|v| v.map(|b| f64::from(u8::from(b)))),
            ),
            other => panic!("unexpected {other}"),
        }
    }
    if floats.is_empty() {
        floats = ints.iter().map(|v| v.map(|v| v as f64)).collect();
    }
    Values::Numbers(floats, ints)
}

/// Nearest-rank quantiles over the sample the profile defines: every
/// `s`-th non-null value, `s` the smallest power of two that leaves fewer
/// than `2 * SAMPLE` of them.
fn sampled_quantiles(values: &[f64]) -> Vec<f64> {
    use leakless::quality::profile::{QUANTILES, SAMPLE};
    let mut stride = 1;
    while values.len().div_ceil(stride) >= 2 * SAMPLE {
        stride *= 2;
    }
    let mut sample: Vec<f64> = values.iter().copied().step_by(stride).collect();
    sample.sort_by(f64::total_cmp);
    QUANTILES
        .iter()
        .map(|&p| sample[(p as usize * sample.len()).div_ceil(100).max(1) - 1])
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn the_profile_matches_a_brute_force_computation() {
    use leakless::quality::profile::{DatasetProfile, QUANTILES};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut params = leakless::synth::Params::new(60_000);
    params.format = leakless::synth::OutputFormat::Csv;
    params.days = 3;
    leakless::synth::generate(&params, &data).unwrap();
    let out = dir.path().join("dataset");
    let build = crate::common::generated_build(&data, &out).with_target_partitions(2);
    let summary = runtime().block_on(build.execute()).unwrap();
    let profile = DatasetProfile::read(&out).unwrap();

    // Held back per day, from the impressions and the watermark.
    let watermark =
        leakless::time::parse_timestamp_micros(summary.watermarks["clicked"].as_bytes()).unwrap();
    let mut held_back: std::collections::BTreeMap<String, u64> = Default::default();
    let impressions = std::fs::read_to_string(data.join("impressions.csv")).unwrap();
    for line in impressions.lines().skip(1) {
        let t = leakless::time::parse_timestamp_micros(line.rsplit(',').next().unwrap().as_bytes())
            .unwrap();
        if t + 86_400_000_000 > watermark {
            let day = leakless::time::format_rfc3339(t)[..10].to_owned();
            *held_back.entry(format!("dt={day}")).or_default() += 1;
        }
    }
    assert!(!held_back.is_empty());

    let folders: Vec<String> = profile
        .partitions
        .iter()
        .map(|p| p.partition.clone())
        .collect();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_manifest.json")).unwrap()).unwrap();
    let written = manifest["partitions"].as_array().unwrap().iter();
    let mut expected_folders: Vec<String> = written
        .map(|p| p["partition"].as_str().unwrap().to_owned())
        .chain(held_back.keys().cloned())
        .collect();
    expected_folders.sort();
    expected_folders.dedup();
    assert_eq!(folders, expected_folders);
    let mut strided = false;
    for partition in &profile.partitions {
        assert_eq!(
            partition.held_back,
            held_back.get(&partition.partition).copied().unwrap_or(0),
            "{}",
            partition.partition
        );
        if partition.rows == 0 {
            continue;
        }
        let files = leakless::write::data_files(&out.join(&partition.partition)).unwrap();
        let batches: Vec<RecordBatch> = files
            .iter()
            .flat_map(|f| {
                ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(f).unwrap())
                    .unwrap()
                    .build()
                    .unwrap()
                    .map(Result::unwrap)
            })
            .collect();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(partition.rows, rows as u64);
        let context = &partition.partition;
        for column in &partition.columns {
            let name = &column.name;
            match column_values(&batches, name) {
                Values::Numbers(floats, ints) => {
                    let values: Vec<f64> = floats.iter().flatten().copied().collect();
                    assert_eq!(
                        column.nulls,
                        (rows - values.len()) as u64,
                        "{context} {name}"
                    );
                    if values.is_empty() {
                        assert!(column.mean.is_none());
                        continue;
                    }
                    let n = values.len() as f64;
                    let mean = values.iter().sum::<f64>() / n;
                    let std =
                        (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt();
                    assert!(
                        close(column.mean.unwrap(), mean),
                        "{context} {name} mean {column:?} {mean}"
                    );
                    assert!(
                        close(column.std.unwrap(), std),
                        "{context} {name} std {column:?} {std}"
                    );
                    let ints: Vec<i64> = ints.iter().flatten().copied().collect();
                    let (min, max) = match ints.is_empty() {
                        false => (
                            *ints.iter().min().unwrap() as f64,
                            *ints.iter().max().unwrap() as f64,
                        ),
                        true => values
                            .iter()
                            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                                (a.min(v), b.max(v))
                            }),
                    };
                    if let Some(min_value) = column.min.as_ref().and_then(|v| v.as_f64()) {
                        assert_eq!(
                            (min_value, column.max.as_ref().unwrap().as_f64().unwrap()),
                            (min, max),
                            "{context} {name}"
                        );
                    } else {
                        // A time: RFC 3339.
                        let text = |v: f64| leakless::time::format_rfc3339(v as i64);
                        assert_eq!(column.min.as_ref().unwrap().as_str().unwrap(), text(min));
                        assert_eq!(column.max.as_ref().unwrap().as_str().unwrap(), text(max));
                    }
                    let quantiles = column.quantiles.as_ref().unwrap();
                    let expected = sampled_quantiles(&values);
                    for (p, want) in QUANTILES.iter().zip(expected) {
                        assert_eq!(quantiles[&format!("p{p}")], want, "{context} {name} p{p}");
                    }
                    strided |= values.len() >= 2 * leakless::quality::profile::SAMPLE;
                    let mut distinct: Vec<u64> = values
                        .iter()
                        .map(|v| if *v == 0.0 { 0 } else { v.to_bits() })
                        .collect();
                    distinct.sort_unstable();
                    distinct.dedup();
                    let exact = distinct.len() as f64;
                    assert!(
                        (column.distinct as f64 - exact).abs() <= 0.05 * exact + 1.0,
                        "{context} {name} distinct {} vs {exact}",
                        column.distinct
                    );
                }
                Values::Texts(texts) => {
                    let values: Vec<&String> = texts.iter().flatten().collect();
                    assert_eq!(
                        column.nulls,
                        (rows - values.len()) as u64,
                        "{context} {name}"
                    );
                    let mut counts: std::collections::BTreeMap<&str, u64> = Default::default();
                    for v in &values {
                        *counts.entry(v.as_str()).or_default() += 1;
                    }
                    let exact = counts.len() as f64;
                    assert!(
                        (column.distinct as f64 - exact).abs() <= 0.05 * exact + 1.0,
                        "{context} {name}"
                    );
                    let top = column.top.as_ref().unwrap();
                    let bound =
                        values.len() as u64 / (leakless::quality::profile::COUNTERS as u64 + 1);
                    for (value, count) in top {
                        let truth = counts[value.as_str()];
                        assert!(
                            *count <= truth && truth - count <= bound,
                            "{context} {name} {value}"
                        );
                    }
                    if counts.len() <= leakless::quality::profile::COUNTERS {
                        let mut want: Vec<(&str, u64)> = counts.into_iter().collect();
                        want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
                        want.truncate(leakless::quality::profile::TOP);
                        let got: Vec<(&str, u64)> =
                            top.iter().map(|(v, n)| (v.as_str(), *n)).collect();
                        assert_eq!(got, want, "{context} {name}");
                    }
                }
            }
        }
        let clicked = column_values(&batches, "clicked");
        let Values::Numbers(values, _) = clicked else {
            panic!()
        };
        let positive = values.iter().flatten().filter(|v| **v != 0.0).count() as u64;
        assert_eq!(partition.labels["clicked"].positive, positive, "{context}");
    }
    assert!(strided, "no partition took the sampled path");
    let held: u64 = profile.partitions.iter().map(|p| p.held_back).sum();
    assert_eq!(held, summary.immature_held_back);
}
