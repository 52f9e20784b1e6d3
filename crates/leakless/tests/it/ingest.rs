//! Reading inputs: bad rows, missing columns, Parquet and folder inputs.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float32Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampNanosecondArray, TimestampSecondArray,
};
use datafusion::parquet::arrow::ArrowWriter;
use leakless::Error;
use leakless::error::Location;

use crate::common::{Inputs, read_rows, run_spec_in, runtime};

const IMPRESSIONS: &str = "
    impression_id,user_id,listing_id,impression_ts
    1,10,1,2026-10-01T12:00:00Z
    2,20,2,2026-10-01T18:00:00-04:00
";
const CLICKS: &str = "
    listing_id,click_ts,user_id
    1,2026-10-01T11:00:00Z,10
    2,2026-10-02T00:00:00Z,
    1,2026-10-04T00:00:00Z,
";
const LISTINGS: &str = "
    listing_id,category,price,created_ts
    1,shoes,10.5,2026-09-30T00:00:00Z
    2,hats,3,2026-09-29T00:00:00Z
";

/// Runs a build on the given impressions and returns its bad-row error as
/// (file name, location, column, value, reason).
fn bad_impressions(
    impressions: &str,
) -> (String, Location, Option<String>, Option<String>, String) {
    let inputs = Inputs::new(impressions, CLICKS, LISTINGS);
    match inputs.run(None, 2) {
        Err(Error::BadRow(row)) => {
            assert!(!inputs.out().exists(), "a failed build leaves no dataset");
            let file = row.path.file_name().unwrap().to_string_lossy().into_owned();
            (file, row.location, row.column, row.value, row.reason)
        }
        other => panic!("expected a bad row, got {other:?}"),
    }
}

fn some(s: &str) -> Option<String> {
    Some(s.to_owned())
}

#[test]
fn a_row_with_too_many_fields_names_its_line() {
    let (file, location, column, value, reason) = bad_impressions(
        "
        impression_id,user_id,listing_id,impression_ts
        1,10,1,2026-10-01T12:00:00Z
        2,20,2,2026-10-01T12:00:00Z,extra
        ",
    );
    assert_eq!(file, "impressions.csv");
    assert_eq!(location, Location::Line(3));
    assert_eq!(column, None);
    assert_eq!(value, some("2,20,2,2026-10-01T12:00:00Z,extra"));
    assert_eq!(reason, "expected 4 fields, found 5");
}

#[test]
fn a_bad_integer_names_line_column_and_value() {
    let (_, location, column, value, reason) = bad_impressions(
        "
        impression_id,user_id,listing_id,impression_ts
        1,10,1,2026-10-01T12:00:00Z
        \"2\",\"multi
        line\",2,2026-10-01T12:00:00Z
        3,3.5,1,2026-10-01T12:00:00Z
        ",
    );
    // The quoted value spanning two lines is read first and fails first.
    assert_eq!(location, Location::Line(3));
    assert_eq!(column, some("user_id"));
    assert_eq!(value, some("multi\nline"));
    assert_eq!(reason, "not a valid int64");
}

#[test]
fn line_numbers_count_lines_inside_quoted_values() {
    let (_, location, column, value, _) = bad_impressions(
        "
        impression_id,user_id,listing_id,impression_ts
        1,\"1
        0\",1,2026-10-01T12:00:00Z
        3,3.5,1,2026-10-01T12:00:00Z
        ",
    );
    // "1\n0" is not an int either; fix the first so the second is reached.
    assert_eq!(
        (location, column, value),
        (Location::Line(2), some("user_id"), some("1\n0"))
    );
    let (_, location, column, value, _) = bad_impressions(
        "
        impression_id,user_id,listing_id,impression_ts,note
        1,10,1,2026-10-01T12:00:00Z,\"a
        b\"
        3,3.5,1,2026-10-01T12:00:00Z,
        ",
    );
    assert_eq!(
        (location, column, value),
        (Location::Line(4), some("user_id"), some("3.5"))
    );
}

#[test]
fn a_bad_timestamp_names_its_value() {
    let (_, location, column, value, reason) = bad_impressions(
        "
        impression_id,user_id,listing_id,impression_ts
        1,10,1,2026-10-01T25:00:00Z
        ",
    );
    assert_eq!(location, Location::Line(2));
    assert_eq!(column, some("impression_ts"));
    assert_eq!(value, some("2026-10-01T25:00:00Z"));
    assert!(reason.starts_with("not a valid timestamp"), "{reason}");
}

#[test]
fn a_null_key_is_an_error() {
    let (_, location, column, value, reason) = bad_impressions(
        "
        impression_id,user_id,listing_id,impression_ts
        1,10,,2026-10-01T12:00:00Z
        ",
    );
    assert_eq!(
        (location, column, value),
        (Location::Line(2), some("listing_id"), some(""))
    );
    assert_eq!(reason, "missing value");
}

#[test]
fn a_bad_price_is_an_error() {
    let inputs = Inputs::new(
        IMPRESSIONS,
        CLICKS,
        "
        listing_id,category,price,created_ts
        1,shoes,NaN,2026-09-30T00:00:00Z
        ",
    );
    let Err(Error::BadRow(row)) = inputs.run(None, 1) else {
        panic!("expected a bad row")
    };
    assert_eq!(
        row.to_string(),
        format!(
            "`{}` line 2, column `price`: not a finite float64: \"NaN\"",
            inputs.path("listings.csv").display()
        )
    );
}

#[test]
fn a_missing_column_names_file_and_column() {
    let inputs = Inputs::new(
        IMPRESSIONS,
        "listing_id,ts\n1,2026-10-01T00:00:00Z\n",
        LISTINGS,
    );
    match inputs.run(None, 1) {
        Err(Error::MissingColumn {
            path,
            column,
            found,
            ..
        }) => {
            assert_eq!(path, inputs.path("clicks.csv"));
            assert_eq!(column, "click_ts");
            assert_eq!(found, "listing_id, ts");
        }
        other => panic!("expected a missing column, got {other:?}"),
    }
}

#[test]
fn a_duplicate_listing_is_an_error() {
    let inputs = Inputs::new(
        IMPRESSIONS,
        CLICKS,
        "
        listing_id,category,price,created_ts
        1,shoes,10.5,2026-09-30T00:00:00Z
        1,shoes,11.5,2026-09-30T00:00:00Z
        ",
    );
    assert!(matches!(
        inputs.run(None, 1),
        Err(Error::DuplicateKey { ref key, versioned: false, .. }) if key == "listing_id=1"
    ));
}

#[test]
fn no_clicks_and_no_watermark_is_an_error() {
    let inputs = Inputs::new(IMPRESSIONS, "listing_id,click_ts\n", LISTINGS);
    assert!(matches!(
        inputs.run(None, 2),
        Err(Error::NoWatermark { .. })
    ));
    let summary = inputs.run(Some("2026-10-03T00:00:00Z"), 2).unwrap();
    assert_eq!(summary.rows_written, 2);
}

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[test]
fn parquet_inputs_of_other_types_and_units_give_the_same_rows_as_csv() {
    let inputs = Inputs::new(IMPRESSIONS, CLICKS, LISTINGS);
    inputs.run(None, 2).unwrap();
    let from_csv = read_rows(&inputs.out());

    let dir = inputs.path("parquet");
    std::fs::create_dir_all(dir.join("impressions/region=eu")).unwrap();
    std::fs::create_dir_all(dir.join("impressions/region=us")).unwrap();
    // 2026-10-01T12:00:00Z and 2026-10-01T22:00:00Z in nanoseconds, labelled
    // with a zone: the instant is what counts.
    let ns = |s: i64| s * 1_000_000_000;
    write_parquet(
        &dir.join("impressions/region=eu/part-0.parquet"),
        vec![
            (
                "listing_id",
                Arc::new(Int32Array::from(vec![1])) as ArrayRef,
            ),
            ("impression_id", Arc::new(Int64Array::from(vec![1]))),
            ("user_id", Arc::new(Int64Array::from(vec![10]))),
            (
                "impression_ts",
                Arc::new(
                    TimestampNanosecondArray::from(vec![ns(1_790_856_000)])
                        .with_timezone("Europe/Paris"),
                ),
            ),
        ],
    );
    write_parquet(
        &dir.join("impressions/region=us/part-0.parquet"),
        vec![
            (
                "impression_id",
                Arc::new(Int64Array::from(vec![2])) as ArrayRef,
            ),
            ("user_id", Arc::new(Int64Array::from(vec![20]))),
            ("listing_id", Arc::new(Int64Array::from(vec![2]))),
            (
                "impression_ts",
                Arc::new(TimestampNanosecondArray::from(vec![ns(1_790_892_000)])),
            ),
        ],
    );
    write_parquet(
        &dir.join("clicks.parquet"),
        vec![
            (
                "listing_id",
                Arc::new(Int64Array::from(vec![1, 2, 1])) as ArrayRef,
            ),
            (
                "click_ts",
                Arc::new(TimestampSecondArray::from(vec![
                    1_790_852_400,
                    1_790_899_200,
                    1_791_072_000,
                ])),
            ),
        ],
    );
    write_parquet(
        &dir.join("listings.parquet"),
        vec![
            (
                "listing_id",
                Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
            ),
            (
                "category",
                Arc::new(StringArray::from(vec!["shoes", "hats"])),
            ),
            ("price", Arc::new(Float32Array::from(vec![10.5, 3.0]))),
            (
                "created_ts",
                Arc::new(TimestampSecondArray::from(vec![
                    1_790_726_400,
                    1_790_640_000,
                ])),
            ),
        ],
    );
    let out = inputs.path("from-parquet");
    let build = leakless::Build::new(
        dir.join("impressions"),
        dir.join("clicks.parquet"),
        dir.join("listings.parquet"),
        &out,
    );
    let summary = runtime().block_on(build.execute()).unwrap();
    assert_eq!(summary.rows_read.values().sum::<u64>(), 7);
    assert_eq!(read_rows(&out), from_csv);
}

#[test]
fn a_null_in_a_parquet_key_names_the_row() {
    let inputs = Inputs::new(IMPRESSIONS, CLICKS, LISTINGS);
    let clicks = inputs.path("clicks.parquet");
    write_parquet(
        &clicks,
        vec![
            (
                "listing_id",
                Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
            ),
            (
                "click_ts",
                Arc::new(TimestampSecondArray::from(vec![
                    1_790_852_400,
                    1_790_899_200,
                ])),
            ),
        ],
    );
    let build = leakless::Build::new(
        inputs.path("impressions.csv"),
        &clicks,
        inputs.path("listings.csv"),
        inputs.out(),
    );
    let result = runtime().block_on(build.execute());
    let Err(Error::BadRow(row)) = result else {
        panic!("expected a bad row, got {result:?}")
    };
    assert_eq!(
        (row.location.clone(), row.column.as_deref()),
        (Location::Row(2), Some("listing_id"))
    );
}

#[test]
fn a_file_that_is_not_parquet_is_named() {
    let inputs = Inputs::new(IMPRESSIONS, CLICKS, LISTINGS);
    let fake = inputs.path("clicks.parquet");
    std::fs::write(&fake, "listing_id,click_ts\n").unwrap();
    let build = leakless::Build::new(
        inputs.path("impressions.csv"),
        &fake,
        inputs.path("listings.csv"),
        inputs.out(),
    );
    let result = runtime().block_on(build.execute());
    let Err(Error::UnreadableFile { path, .. }) = result else {
        panic!("expected an unreadable file, got {result:?}")
    };
    assert_eq!(path, fake);
    assert!(!inputs.out().exists());
}

/// The first Parquet file of a dataset written with `partition = "none"`,
/// as text rows.
fn dataset_rows(out: &Path) -> Vec<String> {
    let file = std::fs::File::open(out.join("part-00000.parquet")).unwrap();
    let reader =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn spec_sources_read_tabs_null_markers_bools_epochs_and_parquet_without_columns() {
    let dir = tempfile::tempdir().unwrap();
    // A TSV spine with "NA" as null, a bool and an epoch in seconds; events
    // as epochs in milliseconds; a Parquet dimension whose columns come from
    // the file.
    std::fs::write(
        dir.path().join("views.tsv.csv"),
        "id\tk\tflag\tts\n1\t7\ttrue\t1790000000\n2\tNA\t0\t1790000060\n3\t8\tNA\t1790000120\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("events.csv"),
        "k,at\n7,1789999999000\n7,1790000000000\n8,1790000119999\n",
    )
    .unwrap();
    write_parquet(
        &dir.path().join("dim.parquet"),
        vec![
            ("k", Arc::new(Int32Array::from(vec![7, 8])) as ArrayRef),
            (
                "name",
                Arc::new(StringArray::from(vec!["seven", "eight"])) as ArrayRef,
            ),
        ],
    );
    std::fs::write(
        dir.path().join("spec.toml"),
        r#"
version = 1
[sources.views]
path = "views.tsv.csv"
time = "ts"
delimiter = "	"
null_values = ["NA"]
columns = { id = "int64", k = "int64", flag = "bool", ts = "timestamp_s" }
[sources.events]
path = "events.csv"
time = "at"
columns = { k = "int64", at = "timestamp_ms" }
[sources.dim]
path = "dim.parquet"
key = "k"
[spine]
source = "views"
columns = ["id", "k", "flag"]
[features.name]
source = "dim"
op = "lookup"
column = "name"
[features.events_before]
source = "events"
key = "k"
op = "count"
window = "lifetime"
[output]
partition = "none"
"#,
    )
    .unwrap();
    let out = dir.path().join("dataset");
    let build = leakless::Build::from_spec_file(dir.path().join("spec.toml"), &out).unwrap();
    let summary = runtime().block_on(build.execute()).unwrap();
    assert_eq!(summary.rows_written, 3);
    assert_eq!(
        dataset_rows(&out),
        [
            "+----+---+-------+----------------------+-------+---------------+",
            "| id | k | flag  | ts                   | name  | events_before |",
            "+----+---+-------+----------------------+-------+---------------+",
            "| 1  | 7 | true  | 2026-09-21T14:13:20Z | seven | 1             |",
            "| 2  |   | false | 2026-09-21T14:14:20Z |       | 0             |",
            "| 3  | 8 |       | 2026-09-21T14:15:20Z | eight | 1             |",
            "+----+---+-------+----------------------+-------+---------------+",
        ]
    );
}

#[test]
fn check_warns_about_settings_that_have_no_effect() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(
        &dir.path().join("dim.parquet"),
        vec![("k", Arc::new(Int64Array::from(vec![1])) as ArrayRef)],
    );
    std::fs::write(
        dir.path().join("spine.csv"),
        "k,ts\n1,2026-10-01T00:00:00Z\n",
    )
    .unwrap();
    let text = r#"
version = 1
[sources.spine]
path = "spine.csv"
time = "ts"
columns = { k = "int64", ts = "timestamp" }
[sources.dim]
path = "dim.parquet"
key = "k"
delay = "1h"
delimiter = ";"
[spine]
source = "spine"
columns = ["k"]
[labels.l]
source = "spine"
key = "k"
op = "count"
window = "1h"
"#;
    let path = dir.path().join("spec.toml");
    std::fs::write(&path, text).unwrap();
    let spec = leakless::spec::load(&path, &[]).unwrap();
    let report = leakless::check::check(&spec).unwrap();
    assert_eq!(
        report.warnings,
        [
            "source `dim` has a `delay` but no valid_from: a snapshot has no time for the delay to shift",
            "source `dim` sets `delimiter` or `null_values`, but its files are Parquet: they have no effect",
        ]
    );
}

#[test]
fn ignore_applies_to_the_files_columns_are_inferred_from() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dim")).unwrap();
    write_parquet(
        &dir.path().join("dim/a.parquet"),
        vec![("k", Arc::new(Int64Array::from(vec![1])) as ArrayRef)],
    );
    std::fs::write(dir.path().join("dim/notes.json"), "{}").unwrap();
    std::fs::write(
        dir.path().join("spine.csv"),
        "k,ts\n1,2026-10-01T00:00:00Z\n",
    )
    .unwrap();
    let text = r#"
version = 1
[sources.spine]
path = "spine.csv"
time = "ts"
columns = { k = "int64", ts = "timestamp" }
[sources.dim]
path = "dim"
key = "k"
[spine]
source = "spine"
columns = ["k"]
[labels.l]
source = "spine"
key = "k"
op = "count"
window = "1h"
"#;
    let path = dir.path().join("spec.toml");
    std::fs::write(&path, text).unwrap();
    let err = leakless::spec::load(&path, &[]).unwrap_err();
    assert!(err.to_string().contains("notes.json"), "{err}");
    let spec = leakless::spec::load_ignoring(&path, &[], &["*.json".to_owned()]).unwrap();
    leakless::check::check(&spec).unwrap();
}

#[test]
fn a_duplicate_version_of_a_string_key_names_the_string() {
    // String keys are indexed by shared ids; the message must still show
    // the user's value, not an id.
    let dir = tempfile::tempdir().unwrap();
    let requests = "id,user,ts\n1,bob,2026-09-21T14:13:20Z\n";
    let segments = "user,segment,valid_from\n\
         alice,a,2026-09-01T00:00:00Z\n\
         bob,b,2026-09-01T00:00:00Z\n\
         bob,c,2026-09-01T00:00:00Z\n";
    let spec = r#"
version = 1
[sources.requests]
path = "requests.csv"
time = "ts"
columns = { id = "int64", user = "string", ts = "timestamp" }
[sources.segments]
path = "segments.csv"
key = "user"
valid_from = "valid_from"
columns = { user = "string", segment = "string", valid_from = "timestamp" }
[spine]
source = "requests"
columns = ["id", "user"]
[features.segment]
source = "segments"
op = "lookup"
column = "segment"
"#;
    let files = [("requests.csv", requests), ("segments.csv", segments)];
    match run_spec_in(dir.path(), &files, spec) {
        Err(Error::DuplicateKey { key, versioned, .. }) => {
            assert_eq!(key, "user=bob with valid_from 2026-09-01T00:00:00.000000Z");
            assert!(versioned);
        }
        other => panic!("expected a duplicate version, got {other:?}"),
    }
}
