//! Writes one generated table as CSV or Parquet, row by row, into a
//! temporary file renamed into place when complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ingest::utc_micros;
use crate::time::{MICROS_PER_DAY, MICROS_PER_SECOND, civil_from_days};

const BATCH_ROWS: usize = 65_536;

/// The file format `leakless generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Csv,
    Parquet,
}

impl OutputFormat {
    fn extension(self) -> &'static str {
        match self {
            OutputFormat::Csv => "csv",
            OutputFormat::Parquet => "parquet",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum ColumnKind {
    Int,
    Str,
    Float,
    /// Whole seconds, written `YYYY-MM-DD HH:MM:SS` (UTC) in CSV.
    Timestamp,
}

/// One value of a row.
#[derive(Debug, Clone, Copy)]
pub enum Cell<'a> {
    Int(i64),
    Str(&'a str),
    Float(f64),
    Timestamp(i64),
    Null,
}

enum Builder {
    Int(Int64Builder),
    Str(StringBuilder),
    Float(Float64Builder),
    Timestamp(TimestampMicrosecondBuilder),
}

enum Target {
    Csv {
        out: BufWriter<File>,
        line: String,
        /// The last day formatted, and its `YYYY-MM-DD `.
        day: Option<(i64, String)>,
    },
    Parquet {
        writer: ArrowWriter<File>,
        schema: SchemaRef,
        builders: Vec<Builder>,
        rows: usize,
    },
}

pub struct TableSink {
    tmp: PathBuf,
    path: PathBuf,
    target: Target,
}

impl TableSink {
    pub fn create(
        dir: &Path,
        name: &str,
        format: OutputFormat,
        columns: &[(&str, ColumnKind)],
    ) -> Result<Self> {
        let path = dir.join(format!("{name}.{}", format.extension()));
        let tmp = dir.join(format!(".{name}.{}.tmp", format.extension()));
        let file = File::create(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
        let target = match format {
            OutputFormat::Csv => {
                let mut out = BufWriter::with_capacity(1 << 20, file);
                let header: Vec<&str> = columns.iter().map(|c| c.0).collect();
                writeln!(out, "{}", header.join(",")).map_err(|e| Error::io("writing", &tmp, e))?;
                Target::Csv {
                    out,
                    line: String::new(),
                    day: None,
                }
            }
            OutputFormat::Parquet => {
                let schema = Arc::new(Schema::new(
                    columns
                        .iter()
                        .map(|(name, kind)| {
                            let data_type = match kind {
                                ColumnKind::Int => DataType::Int64,
                                ColumnKind::Str => DataType::Utf8,
                                ColumnKind::Float => DataType::Float64,
                                ColumnKind::Timestamp => utc_micros(),
                            };
                            Field::new(*name, data_type, true)
                        })
                        .collect::<Vec<_>>(),
                ));
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(
                        ZstdLevel::try_new(1).expect("a valid level"),
                    ))
                    .build();
                let writer =
                    ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|source| {
                        Error::Parquet {
                            path: tmp.clone(),
                            source,
                        }
                    })?;
                let builders = columns.iter().map(|(_, kind)| new_builder(*kind)).collect();
                Target::Parquet {
                    writer,
                    schema,
                    builders,
                    rows: 0,
                }
            }
        };
        Ok(TableSink { tmp, path, target })
    }

    pub fn write(&mut self, row: &[Cell<'_>]) -> Result<()> {
        match &mut self.target {
            Target::Csv { out, line, day } => {
                line.clear();
                for (i, cell) in row.iter().enumerate() {
                    if i > 0 {
                        line.push(',');
                    }
                    format_cell(line, day, *cell);
                }
                line.push('\n');
                out.write_all(line.as_bytes())
                    .map_err(|e| Error::io("writing", &self.tmp, e))
            }
            Target::Parquet {
                writer,
                schema,
                builders,
                rows,
            } => {
                for (builder, cell) in builders.iter_mut().zip(row) {
                    append(builder, *cell);
                }
                *rows += 1;
                if *rows == BATCH_ROWS {
                    *rows = 0;
                    flush(writer, schema, builders, &self.tmp)?;
                }
                Ok(())
            }
        }
    }

    /// Finishes the file and moves it into place.
    pub fn finish(self) -> Result<PathBuf> {
        match self.target {
            Target::Csv { mut out, .. } => {
                out.flush()
                    .map_err(|e| Error::io("writing", &self.tmp, e))?;
            }
            Target::Parquet {
                mut writer,
                schema,
                mut builders,
                rows,
            } => {
                if rows > 0 {
                    flush(&mut writer, &schema, &mut builders, &self.tmp)?;
                }
                writer.close().map_err(|source| Error::Parquet {
                    path: self.tmp.clone(),
                    source,
                })?;
            }
        }
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io("renaming", &self.tmp, e))?;
        Ok(self.path)
    }
}

fn new_builder(kind: ColumnKind) -> Builder {
    match kind {
        ColumnKind::Int => Builder::Int(Int64Builder::with_capacity(BATCH_ROWS)),
        ColumnKind::Str => Builder::Str(StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 8)),
        ColumnKind::Float => Builder::Float(Float64Builder::with_capacity(BATCH_ROWS)),
        ColumnKind::Timestamp => Builder::Timestamp(
            TimestampMicrosecondBuilder::with_capacity(BATCH_ROWS).with_timezone("UTC"),
        ),
    }
}

fn append(builder: &mut Builder, cell: Cell<'_>) {
    match (builder, cell) {
        (Builder::Int(b), Cell::Int(x)) => b.append_value(x),
        (Builder::Str(b), Cell::Str(x)) => b.append_value(x),
        (Builder::Float(b), Cell::Float(x)) => b.append_value(x),
        (Builder::Timestamp(b), Cell::Timestamp(x)) => b.append_value(x),
        (Builder::Int(b), _) => b.append_null(),
        (Builder::Str(b), _) => b.append_null(),
        (Builder::Float(b), _) => b.append_null(),
        (Builder::Timestamp(b), _) => b.append_null(),
    }
}

fn flush(
    writer: &mut ArrowWriter<File>,
    schema: &SchemaRef,
    builders: &mut [Builder],
    path: &Path,
) -> Result<()> {
    let columns: Vec<ArrayRef> = builders
        .iter_mut()
        .map(|b| -> ArrayRef {
            match b {
                Builder::Int(b) => Arc::new(b.finish()),
                Builder::Str(b) => Arc::new(b.finish()),
                Builder::Float(b) => Arc::new(b.finish()),
                Builder::Timestamp(b) => Arc::new(b.finish()),
            }
        })
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(DataFusionError::from)?;
    writer.write(&batch).map_err(|source| Error::Parquet {
        path: path.to_owned(),
        source,
    })
}

fn format_cell(line: &mut String, day_cache: &mut Option<(i64, String)>, cell: Cell<'_>) {
    use std::fmt::Write as _;
    match cell {
        Cell::Int(x) => {
            let _ = write!(line, "{x}");
        }
        Cell::Float(x) => {
            let _ = write!(line, "{x}");
        }
        Cell::Str(s) if s.contains([',', '"', '\n', '\r']) => {
            line.push('"');
            line.push_str(&s.replace('"', "\"\""));
            line.push('"');
        }
        Cell::Str(s) => line.push_str(s),
        Cell::Timestamp(micros) => {
            let day = micros.div_euclid(MICROS_PER_DAY);
            if day_cache.as_ref().is_none_or(|(d, _)| *d != day) {
                let (y, m, d) = civil_from_days(day);
                *day_cache = Some((day, format!("{y:04}-{m:02}-{d:02} ")));
            }
            let prefix = &day_cache.as_ref().expect("just set").1;
            line.push_str(prefix);
            let secs = micros.rem_euclid(MICROS_PER_DAY) / MICROS_PER_SECOND;
            let _ = write!(
                line,
                "{:02}:{:02}:{:02}",
                secs / 3600,
                secs / 60 % 60,
                secs % 60
            );
        }
        Cell::Null => {}
    }
}
