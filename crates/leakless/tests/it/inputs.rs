//! Honest input discovery and the edges of files: compressed inputs,
//! unknown files, symlinks, empty files, BOM and CRLF, implausible times,
//! unterminated quotes, a clock-skewed label source.

use std::io::Write;
use std::path::Path;

use leakless::Error;
use leakless::error::Location;

use crate::common::{Inputs, read_rows, runtime, unindent};

const IMPRESSIONS: &str = "
    impression_id,user_id,listing_id,impression_ts
    1,10,1,2026-10-01T12:00:00Z
    2,20,2,2026-10-01T18:00:00Z
    3,30,1,2026-10-02T09:00:00Z
";
const CLICKS: &str = "
    listing_id,click_ts
    1,2026-10-01T11:00:00Z
    2,2026-10-01T19:00:00Z
    1,2026-10-02T10:00:00Z
    1,2026-10-03T00:00:00Z
";
const LISTINGS: &str = "
    listing_id,category,price,created_ts
    1,shoes,10.5,2026-09-30T00:00:00Z
    2,hats,3,2026-09-29T00:00:00Z
";

/// A build of the three tables with clicks read from `clicks` instead.
/// `result` is the refusal of an input reached twice: at `path`, after
/// `first` (`None`: a loop).
fn assert_input_twice(
    result: leakless::Result<()>,
    path: std::path::PathBuf,
    first: Option<std::path::PathBuf>,
) {
    match result {
        Err(Error::InputTwice {
            path: found,
            first: found_first,
        }) => {
            assert_eq!(found, path);
            assert_eq!(found_first, first);
        }
        other => panic!("expected {} reached twice, got {other:?}", path.display()),
    }
}

fn build_with_clicks(inputs: &Inputs, clicks: &Path, ignore: &[&str]) -> leakless::Result<()> {
    let ignore: Vec<String> = ignore.iter().map(|s| s.to_string()).collect();
    let build = leakless::Build::new(
        inputs.path("impressions.csv"),
        clicks,
        inputs.path("listings.csv"),
        inputs.out(),
    )
    .with_overwrite(true)
    .with_ignore(&ignore);
    runtime().block_on(build.execute()).map(|_| ())
}

/// The clicks table split in two files of the same rows: the header and
/// the first two rows, and the header and the rest.
fn clicks_halves() -> (String, String) {
    let text = unindent(CLICKS);
    let lines: Vec<&str> = text.lines().collect();
    (
        format!("{}\n{}\n{}\n", lines[0], lines[1], lines[2]),
        format!("{}\n{}\n{}\n", lines[0], lines[3], lines[4]),
    )
}

/// The clicks' files as the last build's manifest lists them.
fn clicks_listed(inputs: &Inputs) -> Vec<serde_json::Value> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(inputs.out().join("_manifest.json")).unwrap())
            .unwrap();
    manifest["inputs"]["clicks"].as_array().unwrap().clone()
}

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn gzip_and_zstd_csv_files_read_like_plain_ones() {
    let inputs = Inputs::new(IMPRESSIONS, CLICKS, LISTINGS);
    build_with_clicks(&inputs, &inputs.path("clicks.csv"), &[]).unwrap();
    let expected = read_rows(&inputs.out());
    let (first, second) = clicks_halves();
    let folder = inputs.path("clicks");
    std::fs::create_dir(&folder).unwrap();
    // Two gzip members in one file, as `cat a.gz b.gz` makes.
    let mut members = gzip(&first[..20]);
    members.extend(gzip(&first[20..]));
    std::fs::write(folder.join("a.CSV.GZ"), members).unwrap();
    std::fs::write(
        folder.join("b.csv.zst"),
        zstd::encode_all(second.as_bytes(), 3).unwrap(),
    )
    .unwrap();
    build_with_clicks(&inputs, &folder, &[]).unwrap();
    assert_eq!(read_rows(&inputs.out()), expected);
    let files = clicks_listed(&inputs);
    assert_eq!(files[0]["compression"], "gzip");
    assert_eq!(files[1]["compression"], "zstd");
    assert_eq!(files[1]["rows"], 2);
    // A truncated compressed file is an error naming it, not fewer rows.
    let zst = std::fs::read(folder.join("b.csv.zst")).unwrap();
    std::fs::write(folder.join("b.csv.zst"), &zst[..zst.len() - 6]).unwrap();
    let err = build_with_clicks(&inputs, &folder, &[]).unwrap_err();
    assert!(err.to_string().contains("b.csv.zst"), "{err}");
}

#[test]
fn a_source_of_thousands_of_small_files_reads_like_one_file() {
    // Hourly logs from many producers: 3,000 clicks, one per file, read a
    // few files at a time, build what the one file builds, every file read
    // and counted. (That reads keep file order, the tie order, is the spec
    // oracle's `first_and_last_break_time_ties_by_input_order_across_files`.)
    let mut clicks = String::from("listing_id,click_ts\n");
    let rows: Vec<String> = (0..3000)
        .map(|i| {
            let (hour, second) = (i % 48, (i * 7) % 3600);
            let (day, hour) = (1 + hour / 24, hour % 24);
            format!(
                "{},2026-10-{day:02}T{hour:02}:{:02}:{:02}Z",
                1 + i % 2,
                second / 60,
                second % 60
            )
        })
        .collect();
    for row in &rows {
        clicks.push_str(row);
        clicks.push('\n');
    }
    let inputs = Inputs::new(IMPRESSIONS, "listing_id,click_ts", LISTINGS);
    std::fs::write(inputs.path("all_clicks.csv"), &clicks).unwrap();
    build_with_clicks(&inputs, &inputs.path("all_clicks.csv"), &[]).unwrap();
    let expected = read_rows(&inputs.out());
    let folder = inputs.path("clicks");
    std::fs::create_dir(&folder).unwrap();
    for (i, row) in rows.iter().enumerate() {
        std::fs::write(
            folder.join(format!("part-{i:05}.csv")),
            format!("listing_id,click_ts\n{row}\n"),
        )
        .unwrap();
    }
    build_with_clicks(&inputs, &folder, &[]).unwrap();
    assert_eq!(read_rows(&inputs.out()), expected);
    let files = clicks_listed(&inputs);
    assert_eq!(files.len(), 3000);
    assert!(files.iter().all(|f| f["rows"] == 1));
}

#[test]
fn a_file_of_unknown_type_in_a_folder_is_an_error_unless_ignored() {
    let inputs = Inputs::new(IMPRESSIONS, CLICKS, LISTINGS);
    let folder = inputs.path("clicks");
    std::fs::create_dir_all(folder.join("dt=2026-10-01")).unwrap();
    std::fs::copy(
        inputs.path("clicks.csv"),
        folder.join("dt=2026-10-01/a.csv"),
    )
    .unwrap();
    // Spark's and Hadoop's markers are skipped by name.
    std::fs::write(folder.join("_SUCCESS"), "").unwrap();
    std::fs::write(folder.join("dt=2026-10-01/.a.csv.crc"), "x").unwrap();
    build_with_clicks(&inputs, &folder, &[]).unwrap();
    let notes = folder.join("dt=2026-10-01/notes.json");
    std::fs::write(&notes, "{}").unwrap();
    match build_with_clicks(&inputs, &folder, &[]) {
        Err(Error::UnknownFormat { path }) => assert_eq!(path, notes),
        other => panic!("expected an unknown file, got {other:?}"),
    }
    build_with_clicks(&inputs, &folder, &["*.json"]).unwrap();
    build_with_clicks(&inputs, &folder, &["dt=*/notes.json"]).unwrap();
    // A pattern with `/` is matched from the folder, not by name.
    assert!(build_with_clicks(&inputs, &folder, &["x/notes.json"]).is_err());
}

#[test]
fn a_symlink_loop_or_a_folder_reached_twice_is_an_error() {
    let inputs = Inputs::new(IMPRESSIONS, CLICKS, LISTINGS);
    let folder = inputs.path("clicks");
    std::fs::create_dir_all(folder.join("a")).unwrap();
    std::fs::copy(inputs.path("clicks.csv"), folder.join("a/x.csv")).unwrap();
    std::os::unix::fs::symlink("..", folder.join("a/up")).unwrap();
    assert_input_twice(
        build_with_clicks(&inputs, &folder, &[]),
        folder.join("a/up"),
        None,
    );
    std::fs::remove_file(folder.join("a/up")).unwrap();
    std::os::unix::fs::symlink("a", folder.join("b")).unwrap();
    assert_input_twice(
        build_with_clicks(&inputs, &folder, &[]),
        folder.join("b"),
        Some(folder.join("a")),
    );
    // A symlink to a file elsewhere is read once, like a file.
    std::fs::remove_file(folder.join("b")).unwrap();
    std::fs::rename(folder.join("a/x.csv"), inputs.path("x.csv")).unwrap();
    std::os::unix::fs::symlink(inputs.path("x.csv"), folder.join("a/x.csv")).unwrap();
    build_with_clicks(&inputs, &folder, &[]).unwrap();
}

#[test]
fn a_glob_skips_loops_below_its_root_but_refuses_a_file_matched_twice() {
    let inputs = Inputs::new(IMPRESSIONS, CLICKS, LISTINGS);
    let folder = inputs.path("clicks");
    std::fs::create_dir_all(folder.join("2026-10-01")).unwrap();
    std::fs::copy(inputs.path("clicks.csv"), folder.join("2026-10-01/x.csv")).unwrap();
    std::os::unix::fs::symlink("..", folder.join("2026-10-01/up")).unwrap();
    let glob = folder.join("*/x.csv");
    build_with_clicks(&inputs, &glob, &[]).unwrap();
    std::os::unix::fs::symlink("2026-10-01", folder.join("latest")).unwrap();
    assert_input_twice(
        build_with_clicks(&inputs, &glob, &[]),
        folder.join("latest/x.csv"),
        Some(folder.join("2026-10-01/x.csv")),
    );
}

#[test]
fn empty_header_only_bom_and_crlf_files() {
    let inputs = Inputs::new(IMPRESSIONS, CLICKS, LISTINGS);
    build_with_clicks(&inputs, &inputs.path("clicks.csv"), &[]).unwrap();
    let expected = read_rows(&inputs.out());
    let (first, second) = clicks_halves();
    let folder = inputs.path("clicks");
    std::fs::create_dir(&folder).unwrap();
    // A BOM and CRLF line ends (and a last line without one), a BOM before
    // a quoted header (as spreadsheets write them), then a file with only
    // a header: the same rows.
    let crlf = format!("\u{feff}{}", first.replace('\n', "\r\n"));
    std::fs::write(folder.join("a.csv"), crlf.trim_end()).unwrap();
    let (header, rows) = second.split_once('\n').unwrap();
    let quoted: Vec<String> = header.split(',').map(|n| format!("\"{n}\"")).collect();
    let quoted = format!("\u{feff}{}\n{rows}", quoted.join(","));
    std::fs::write(folder.join("b.csv"), quoted).unwrap();
    std::fs::write(folder.join("c.csv"), "listing_id,click_ts\r\n").unwrap();
    build_with_clicks(&inputs, &folder, &[]).unwrap();
    assert_eq!(read_rows(&inputs.out()), expected);
    // An empty file has no header: an error naming it.
    std::fs::write(folder.join("d.csv"), "").unwrap();
    match build_with_clicks(&inputs, &folder, &[]) {
        Err(Error::MissingColumn { path, column, .. }) => {
            assert_eq!(path, folder.join("d.csv"));
            assert_eq!(column, "listing_id");
        }
        other => panic!("expected a missing header, got {other:?}"),
    }
}

/// A source path where nothing is, is no input files for that source,
/// named (as on object storage), not a failed read.
#[test]
fn a_path_where_nothing_is_has_no_input_files() {
    let inputs = Inputs::new(IMPRESSIONS, CLICKS, LISTINGS);
    let nowhere = inputs.path("nope.csv");
    match build_with_clicks(&inputs, &nowhere, &[]) {
        Err(Error::NoInputFiles { source_name, path }) => {
            assert_eq!((source_name.as_str(), path), ("clicks", nowhere));
        }
        other => panic!("expected no input files, got {other:?}"),
    }
}

/// A declared column twice in a header is refused, naming the file, the
/// column and where it is: reading either one could be the wrong one. A
/// name repeated that the spec does not read is left alone.
#[test]
fn a_declared_column_twice_in_a_header_is_refused() {
    let text = unindent(CLICKS);
    let (header, rows) = text.split_once('\n').unwrap();
    let inputs = Inputs::new(IMPRESSIONS, CLICKS, LISTINGS);
    let twice = inputs.path("twice.csv");
    let doubled: String = rows.lines().map(|l| format!("{l},{l}\n")).collect();
    std::fs::write(&twice, format!("{header},{header}\n{doubled}")).unwrap();
    match build_with_clicks(&inputs, &twice, &[]) {
        Err(Error::AmbiguousColumn {
            path,
            column,
            times,
            positions,
            ..
        }) => {
            assert_eq!(path, twice);
            assert_eq!(column, "listing_id");
            assert_eq!(times, 2);
            assert_eq!(positions, "1, 3");
        }
        other => panic!("expected an ambiguous column, got {other:?}"),
    }
    assert!(!inputs.out().exists(), "nothing published");
    // An undeclared name twice: read as before.
    build_with_clicks(&inputs, &inputs.path("clicks.csv"), &[]).unwrap();
    let expected = read_rows(&inputs.out());
    let extra = inputs.path("extra.csv");
    let padded: String = rows.lines().map(|l| format!("{l},1,2\n")).collect();
    std::fs::write(&extra, format!("{header},note,note\n{padded}")).unwrap();
    build_with_clicks(&inputs, &extra, &[]).unwrap();
    assert_eq!(read_rows(&inputs.out()), expected);
}

/// The bad row of a build whose clicks are `clicks`: (line, value, reason).
fn bad_click(clicks: &str) -> (Location, Option<String>, String) {
    let inputs = Inputs::new(IMPRESSIONS, clicks, LISTINGS);
    match build_with_clicks(&inputs, &inputs.path("clicks.csv"), &[]) {
        Err(Error::BadRow(row)) => (row.location, row.value, row.reason),
        other => panic!("expected a bad row, got {other:?}"),
    }
}

#[test]
fn times_outside_1900_to_2200_are_bad_values_in_csv() {
    for (time, ok) in [
        ("1900-01-01T00:00:00Z", true),
        ("2200-12-31T23:59:59Z", true),
        ("1899-12-31T23:59:59Z", false),
        ("2201-01-01T00:00:00Z", false),
        ("9999-12-31T00:00:00Z", false),
        ("2201-01-01T01:00:00+02:00", true),
    ] {
        let clicks = format!("listing_id,click_ts\n1,2026-10-01T11:00:00Z\n1,{time}\n");
        let inputs = Inputs::new(IMPRESSIONS, &clicks, LISTINGS);
        let result = runtime().block_on(
            leakless::Build::new(
                inputs.path("impressions.csv"),
                inputs.path("clicks.csv"),
                inputs.path("listings.csv"),
                inputs.out(),
            )
            .with_watermark(Some(0))
            .execute(),
        );
        match result {
            Ok(_) => assert!(ok, "{time} was read"),
            Err(Error::BadRow(row)) => {
                assert!(!ok, "{time}: {row:?}");
                assert_eq!(row.location, Location::Line(3));
                assert_eq!(row.value.as_deref(), Some(time));
                assert_eq!(row.reason, leakless::time::OUT_OF_RANGE);
            }
            Err(e) => panic!("{time}: {e}"),
        }
    }
}

#[test]
fn times_outside_1900_to_2200_are_bad_values_in_parquet() {
    use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, TimestampSecondArray};
    use std::sync::Arc;
    let inputs = Inputs::new(IMPRESSIONS, CLICKS, LISTINGS);
    let path = inputs.path("clicks.parquet");
    // Milliseconds stored as seconds: year 58,000 and more; the last one
    // overflows 64-bit microseconds.
    let times = TimestampSecondArray::from(vec![1_790_000_000, 1_790_000_000_000, i64::MAX / 10]);
    let batch = RecordBatch::try_from_iter(vec![
        (
            "listing_id",
            Arc::new(Int64Array::from(vec![1, 2, 1])) as ArrayRef,
        ),
        ("click_ts", Arc::new(times) as ArrayRef),
    ])
    .unwrap();
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    match build_with_clicks(&inputs, &path, &[]) {
        Err(Error::BadRow(row)) => {
            assert_eq!(row.location, Location::Row(2));
            assert_eq!(row.column.as_deref(), Some("click_ts"));
            assert_eq!(row.reason, leakless::time::OUT_OF_RANGE);
        }
        other => panic!("expected a bad row, got {other:?}"),
    }
}

#[test]
fn an_unterminated_quote_is_reported_where_it_begins() {
    let mut clicks = unindent(CLICKS);
    clicks.push_str("2,\"2026-10-01T19:00:00Z\n");
    for _ in 0..50 {
        clicks.push_str("1,2026-10-02T10:00:00Z\n");
    }
    let (location, _, reason) = bad_click(&clicks);
    assert_eq!(location, Location::Line(6));
    assert!(reason.contains("unterminated quoted value"), "{reason}");
    // In a later field of a record that spans lines: the field's line.
    let clicks = "listing_id,click_ts\n\"1\n\",\"2026-10-01\n";
    let (location, _, _) = bad_click(clicks);
    assert_eq!(location, Location::Line(3));
}

#[test]
fn a_label_source_far_past_the_spine_stops_an_inferred_watermark() {
    // The spine ends on 2026-10-02; one click in 2031 (clock skew).
    let mut clicks = unindent(CLICKS);
    clicks.push_str("\n2,2031-10-02T10:00:00Z\n");
    let inputs = Inputs::new(IMPRESSIONS, &clicks, LISTINGS);
    match inputs.run(None, 2) {
        Err(Error::EventAfterSpine(e)) => {
            assert_eq!(e.path, inputs.path("clicks.csv"));
            // After the header, four rows and a blank line.
            assert_eq!(e.location, Location::Line(7));
            assert_eq!(e.time, "2031-10-02T10:00:00.000000Z");
            assert_eq!(e.spine_last, "2026-10-02T09:00:00.000000Z");
            assert_eq!(e.margin, "1w");
        }
        other => panic!("expected the watermark to be refused, got {other:?}"),
    }
    assert!(!inputs.out().exists(), "nothing is published");
    // An explicit watermark, or a margin that allows it, builds.
    inputs.run(Some("2026-10-03T00:00:00Z"), 2).unwrap();
    let build = inputs
        .build()
        .with_overwrite(true)
        .with_watermark_margin(6 * 366 * leakless::time::MICROS_PER_DAY);
    runtime().block_on(build.execute()).unwrap();
    // Within the margin: the inferred watermark is used as before.
    let mut clicks = unindent(CLICKS);
    clicks.push_str("2,2026-10-09T09:00:00Z\n");
    Inputs::new(IMPRESSIONS, &clicks, LISTINGS)
        .run(None, 1)
        .unwrap();
}
