//! Fuzzing: arbitrary bytes and mutations of valid inputs (flipped bytes,
//! cut lines, stray quotes, huge fields, invalid UTF-8, odd timestamps) fed
//! to the CSV reader, the Parquet reader and the spec parser. Each input
//! must be read, or refused with its place; none may panic or hang. A CSV
//! input must also read the same with and without the reader's fast path
//! (runs of plain records parsed a column at a time).
//!
//! The tests run a few thousand cases; `bench/fuzz.sh` runs a million
//! through the hidden `leakless fuzz` command (feature `fuzz`, release
//! build) and reports the count, the rate and any crash, with the seed that
//! reproduces it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Location};
use crate::ingest::testing::source;
use crate::ingest::{BadRowPolicy, Compression, Format, InputFile, Layout, Source};
use crate::synth::rng::Rng;

/// The file every CSV case starts from: quotes, escapes, a blank line,
/// nulls, CRLF, offsets and fractions.
const CSV: &str = "id,name,score,ts,ok\n\
    1,a,1.5,2026-10-01T00:00:00Z,true\n\
    2,\"b,\"\"q\"\"\nc\",-3,2026-10-01 12:00:00.123+02:00,0\r\n\
    \n\
    3,,7,1900-01-01T00:00:00Z,\n\
    4,\"\",1e3,2200-12-31T23:59:59.999999999Z,FALSE\n";
const COLUMNS: &str =
    r#"{ id = "int64", name = "string", score = "float64", ts = "timestamp", ok = "bool" }"#;

/// Text that is often almost right.
const ODD: &[&str] = &[
    "\"",
    "\"\"",
    ",",
    "\r",
    "\n",
    "0000-00-00T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "2026-02-30T00:00:00Z",
    "2026-10-01T24:00:00Z",
    "2026-10-01T00:00:00+99:99",
    "2026-10-01T00:00:00.1234567891Z",
    "1899-12-31T23:59:59Z",
    "-9223372036854775808",
    "99999999999999999999",
    "NaN",
    "inf",
    "1e309",
    "\u{feff}",
    "[features.x]",
    "window = \"-5h\"",
    "op = \"sum\"",
    "key = [",
    "]]",
    "= =",
];

/// `base` with one to four random mutations, or (one case in ten) random
/// bytes.
fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    if rng.below(10) == 0 {
        let n = rng.below(300) as usize;
        return (0..n).map(|_| rng.below(256) as u8).collect();
    }
    let mut b = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(b.len() as u64 + 1) as usize;
        match rng.below(9) {
            0 if at < b.len() => b[at] ^= 1 << rng.below(8),
            1 if at < b.len() => b[at] = rng.below(256) as u8,
            2 => b.truncate(at),
            3 => {
                let end = (at + rng.below(40) as usize).min(b.len());
                b.drain(at..end);
            }
            4 => b.insert(at, b'"'),
            5 => {
                let huge = vec![b'x'; rng.below(300_000) as usize];
                b.splice(at..at, huge);
            }
            6 => {
                b.splice(at..at, [0xff, 0xfe, 0xc3]);
            }
            7 => {
                let odd = ODD[rng.below(ODD.len() as u64) as usize].as_bytes();
                b.splice(at..at, odd.iter().copied());
            }
            _ => {
                let end = (at + rng.below(80) as usize).min(b.len());
                let copy = b[at..end].to_vec();
                b.splice(at..at, copy);
            }
        }
    }
    b
}

/// One target: what a case is fed to, and whether its outcome is allowed.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    Csv,
    Parquet,
    Spec,
}

/// What every case reuses: a folder, the layout of the CSV case's
/// columns, and a valid Parquet file of its rows.
struct Fixture {
    dir: ScratchDir,
    layout: Layout,
    parquet: Vec<u8>,
}

/// Runs case `seed` of `target`; `Err` describes a wrong outcome (a
/// refusal without a place).
fn case(target: Target, seed: u64, fixture: &Fixture) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    match target {
        Target::Csv => {
            let bytes = mutate(&mut rng, CSV.as_bytes());
            read_file(fixture, "f.csv", Format::Csv, &bytes)
        }
        Target::Parquet => {
            let bytes = mutate(&mut rng, &fixture.parquet);
            read_file(fixture, "f.parquet", Format::Parquet, &bytes)
        }
        Target::Spec => {
            let base = include_str!("../../../examples/rich/leakless.toml");
            let bytes = mutate(&mut rng, base.as_bytes());
            let text = String::from_utf8_lossy(&bytes);
            let lines = text.lines().count() + 1;
            match crate::spec::parse_spec(&text, Path::new("spec.toml"), &[], None) {
                Ok(_) => Ok(()),
                Err(errors) if errors.errors.is_empty() => Err("refused without a reason".into()),
                Err(errors) => match errors.errors.iter().find(|e| {
                    e.message.is_empty()
                        || e.line.is_some_and(|(l, c)| l == 0 || c == 0 || l > lines)
                }) {
                    Some(e) => Err(format!("a refusal without its place: {e:?}")),
                    None => Ok(()),
                },
            }
        }
    }
}

/// Reads `bytes` as file `name` of a source of the CSV case's columns.
fn read_file(fixture: &Fixture, name: &str, format: Format, bytes: &[u8]) -> Result<(), String> {
    let path = fixture.dir.0.join(name);
    std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
    let file = InputFile {
        path: path.clone(),
        name: path.clone(),
        format,
        compression: Compression::None,
        bytes: bytes.len() as u64,
    };
    let source = Source::new(fixture.layout.clone(), vec![file], BadRowPolicy::Fail);
    if format == Format::Csv {
        // Runs of plain records parsed a column at a time read as the
        // record-by-record parse reads them.
        for policy in [BadRowPolicy::Fail, BadRowPolicy::Quarantine] {
            let [fast, slow] = source.csv_both_ways(0, 3, policy);
            if fast != slow {
                return Err(format!(
                    "the fast path read\n{fast}\nrecord by record\n{slow}"
                ));
            }
        }
    }
    let lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    match source.read_file(0, 3, &mut |_| true) {
        Ok(()) => Ok(()),
        Err(Error::BadRow(row)) => match row.location {
            Location::Line(n) if n == 0 || n > lines => Err(format!("line {n} of {lines}")),
            Location::Row(0) => Err("row 0".into()),
            _ if row.path != path => Err(format!("names {}", row.path.display())),
            _ => Ok(()),
        },
        Err(
            Error::MissingColumn { path: p, .. }
            | Error::AmbiguousColumn { path: p, .. }
            | Error::UnreadableFile { path: p, .. }
            | Error::ColumnType { path: p, .. },
        ) if p == path => Ok(()),
        Err(Error::Parquet { path: p, .. }) if p == path => Ok(()),
        Err(e) => Err(format!("refused without its place: {e}")),
    }
}

/// The fixture, with a valid Parquet file of the CSV case's rows in row
/// groups of one row.
fn fixture() -> Fixture {
    let dir = ScratchDir::new();
    let csv = dir.0.join("base.csv");
    std::fs::write(&csv, CSV).unwrap();
    let (layout, file) = source(&csv, Format::Csv, COLUMNS);
    let source = Source::new(layout.clone(), vec![file], BadRowPolicy::Fail);
    let mut batches = Vec::new();
    source
        .read_file(0, 2, &mut |b| {
            batches.push(b);
            true
        })
        .unwrap();
    let mut out = Vec::new();
    let props = datafusion::parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(1))
        .build();
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(
        &mut out,
        layout.schema.clone(),
        Some(props),
    )
    .unwrap();
    for b in &batches {
        writer.write(b).unwrap();
    }
    writer.close().unwrap();
    Fixture {
        dir,
        layout,
        parquet: out,
    }
}

/// A folder of its own under the system's temporary folder, removed on
/// drop.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("leakless-fuzz-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a run of cases found.
#[derive(Debug, Default)]
pub struct Report {
    pub cases: u64,
    /// Seeds whose case panicked, or was refused without its place.
    pub failures: Vec<(u64, String)>,
    pub slowest: Duration,
    pub seconds: f64,
}

/// Runs `cases` cases of `target` from seed `first`.
pub fn run(target: Target, first: u64, cases: u64) -> Report {
    let fixture = fixture();
    let started = Instant::now();
    let mut report = Report::default();
    for seed in first..first + cases {
        let at = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| case(target, seed, &fixture)));
        report.slowest = report.slowest.max(at.elapsed());
        report.cases += 1;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(wrong)) => report.failures.push((seed, wrong)),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                report.failures.push((seed, format!("panic: {message}")));
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(target: Target, cases: u64) {
        let report = run(target, 0, cases);
        assert!(
            report.failures.is_empty(),
            "{target:?}: {} of {} cases failed, first: {:?}",
            report.failures.len(),
            report.cases,
            report.failures.first()
        );
    }

    #[test]
    fn csv_inputs_are_read_or_refused_with_their_line() {
        check(Target::Csv, 1500);
    }

    #[test]
    fn parquet_inputs_are_read_or_refused_with_their_file() {
        check(Target::Parquet, 1500);
    }

    #[test]
    fn spec_texts_are_parsed_or_refused_with_their_place() {
        check(Target::Spec, 1500);
    }
}
