//! Rows set aside under `--bad-rows quarantine`.
//!
//! Whichever process reads a file writes that file's bad rows, once it has
//! read the file to the end, into the build's quarantine folder as a
//! [`Part`] under a name fixed by the source and the file's position
//! (written under a hidden name, then renamed): a task run twice writes the
//! same bytes. The build then merges each source's parts, in file order,
//! into `_quarantine/<source>.parquet` of the dataset ([`write_parquet`]),
//! and counts them ([`Summary`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};

use crate::error::{BadRow, Error, Location, Result};

/// The dataset's folder of bad rows, one Parquet file per source.
pub const FOLDER: &str = "_quarantine";

/// Examples of bad rows kept per source in a [`Summary`].
pub const EXAMPLES: usize = 5;

/// One bad row, as the quarantine file holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRowRecord {
    /// The file as the user named it (path or URL).
    pub file: String,
    /// Its 1-based line in a CSV file (the header is line 1).
    pub line: Option<u64>,
    /// Its 1-based row in a Parquet file.
    pub row: Option<u64>,
    pub column: Option<String>,
    pub value: Option<String>,
    pub reason: String,
    pub raw: Option<String>,
}

impl From<&BadRow> for BadRowRecord {
    fn from(row: &BadRow) -> Self {
        let (line, parquet_row) = match row.location {
            Location::Line(n) => (Some(n), None),
            Location::Row(n) => (None, Some(n)),
        };
        BadRowRecord {
            file: row.path.display().to_string(),
            line,
            row: parquet_row,
            column: row.column.clone(),
            value: row.value.clone(),
            reason: row.reason.clone(),
            raw: row.raw.clone(),
        }
    }
}

impl std::fmt::Display for BadRowRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let location = match (self.line, self.row) {
            (Some(line), _) => Some(Location::Line(line)),
            (None, Some(row)) => Some(Location::Row(row)),
            (None, None) => None,
        };
        crate::error::describe_bad_row(
            f,
            &self.file,
            location.as_ref(),
            self.column.as_deref(),
            &self.reason,
            self.value.as_deref(),
        )
    }
}

/// The bad rows of one file of one source, in line (or row) order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub source: String,
    /// The file's position among the source's files.
    pub file: usize,
    pub rows: Vec<BadRowRecord>,
}

impl Part {
    fn name(source: &str, file: usize) -> String {
        format!("bad-{source}-{file:06}.json")
    }

    /// Writes it into `dir` under its fixed name (a hidden name first).
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        let path = dir.join(Part::name(&self.source, self.file));
        let bytes = serde_json::to_vec(self)
            .map_err(|e| Error::Invalid(format!("encoding {}: {e}", path.display())))?;
        crate::write::write_whole(&path, &bytes)
    }

    /// Every part in `dir` (none when it does not exist), by source then
    /// file.
    pub fn read_all(dir: &Path) -> Result<Vec<Part>> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("reading", dir, e)),
        };
        let mut parts = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| Error::io("reading", dir, e))?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if !(name.starts_with("bad-") && name.ends_with(".json")) {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
            let part: Part = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Invalid(format!("reading {}: {e}", path.display())))?;
            parts.push(part);
        }
        parts.sort_by(|a, b| (&a.source, a.file).cmp(&(&b.source, b.file)));
        Ok(parts)
    }
}

/// What quarantine set aside of one source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub rows: u64,
    /// Bad rows per reason.
    pub reasons: BTreeMap<String, u64>,
    /// The first bad rows, in file and line order.
    pub examples: Vec<BadRowRecord>,
}

impl Summary {
    pub fn of(rows: &[BadRowRecord]) -> Self {
        let mut reasons = BTreeMap::new();
        for row in rows {
            *reasons.entry(row.reason.clone()).or_insert(0) += 1;
        }
        Summary {
            rows: rows.len() as u64,
            reasons,
            examples: rows.iter().take(EXAMPLES).cloned().collect(),
        }
    }
}

/// The quarantine file's columns.
pub fn schema() -> Arc<Schema> {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("file", false),
        Field::new("line", DataType::UInt64, true),
        Field::new("row", DataType::UInt64, true),
        text("column", true),
        text("value", true),
        text("reason", false),
        text("raw", true),
    ]))
}

/// Writes `rows` to the Parquet file `path` (a hidden name first).
pub fn write_parquet(path: &Path, rows: &[BadRowRecord]) -> Result<()> {
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::basic::{Compression, ZstdLevel};
    use datafusion::parquet::file::properties::WriterProperties;

    let texts = |f: &dyn Fn(&BadRowRecord) -> Option<&str>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let numbers = |f: &dyn Fn(&BadRowRecord) -> Option<u64>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<UInt64Array>())
    };
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            texts(&|r| Some(&r.file)),
            numbers(&|r| r.line),
            numbers(&|r| r.row),
            texts(&|r| r.column.as_deref()),
            texts(&|r| r.value.as_deref()),
            texts(&|r| Some(&r.reason)),
            texts(&|r| r.raw.as_deref()),
        ],
    )
    .map_err(datafusion::error::DataFusionError::from)?;
    let parquet = |source| Error::Parquet {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("creating", parent, e))?;
    }
    let hidden = crate::write::partial_path(path);
    let file = std::fs::File::create(&hidden).map_err(|e| Error::io("creating", &hidden, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(crate::write::ZSTD_LEVEL).map_err(parquet)?,
        ))
        .build();
    let mut writer = ArrowWriter::try_new(file, schema(), Some(props)).map_err(parquet)?;
    writer.write(&batch).map_err(parquet)?;
    writer.close().map_err(parquet)?;
    std::fs::rename(&hidden, path).map_err(|e| Error::io("renaming", &hidden, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(file: &str, line: u64, reason: &str) -> BadRowRecord {
        BadRowRecord {
            file: file.into(),
            line: Some(line),
            row: None,
            column: Some("price".into()),
            value: Some("abc".into()),
            reason: reason.into(),
            raw: Some("1,abc".into()),
        }
    }

    #[test]
    fn parts_come_back_by_source_then_file() {
        let dir = tempfile::tempdir().unwrap();
        for (source, file) in [("b", 0), ("a", 2), ("a", 0)] {
            Part {
                source: source.into(),
                file,
                rows: vec![record("f.csv", 3, "not a valid int64")],
            }
            .write(dir.path())
            .unwrap();
        }
        let parts = Part::read_all(dir.path()).unwrap();
        let order: Vec<(&str, usize)> = parts.iter().map(|p| (p.source.as_str(), p.file)).collect();
        assert_eq!(order, [("a", 0), ("a", 2), ("b", 0)]);
        assert!(Part::read_all(&dir.path().join("none")).unwrap().is_empty());
    }

    #[test]
    fn a_summary_counts_reasons_and_keeps_the_first_examples() {
        let rows: Vec<BadRowRecord> = (1..=8)
            .map(|line| record("f.csv", line, if line % 3 == 0 { "x" } else { "y" }))
            .collect();
        let summary = Summary::of(&rows);
        assert_eq!(summary.rows, 8);
        assert_eq!(
            summary.reasons,
            BTreeMap::from([("x".into(), 2), ("y".into(), 6)])
        );
        assert_eq!(summary.examples, rows[..EXAMPLES]);
    }
}
