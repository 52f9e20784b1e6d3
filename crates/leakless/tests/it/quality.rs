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
