//! Writes one generated table as CSV or Parquet, row by row, into a
//! temporary file renamed into place when complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ingest::arrow_type;
use crate::ingest::columns::{ColumnBuilder, Value};
use crate::spec::ValueType;
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

enum Target {
    Csv {
        out: BufWriter<File>,
        line: String,
        /// The last day formatted, and its `YYYY-MM-DD `.
        day: Option<(i64, String)>,
    },
    Parquet {
        writer: Box<ArrowWriter<File>>,
        schema: SchemaRef,
        builders: Vec<ColumnBuilder>,
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
        columns: &[(String, ValueType)],
    ) -> Result<Self> {
        let path = dir.join(format!("{name}.{}", format.extension()));
        let tmp = dir.join(format!(".{name}.{}.tmp", format.extension()));
        let file = File::create(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
        let target = match format {
            OutputFormat::Csv => {
                let mut out = BufWriter::with_capacity(1 << 20, file);
                let header: Vec<&str> = columns.iter().map(|c| c.0.as_str()).collect();
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
                        .map(|(name, ty)| Field::new(name, arrow_type(*ty), true))
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
                let builders = columns
                    .iter()
                    .map(|(_, ty)| ColumnBuilder::new(*ty, BATCH_ROWS))
                    .collect();
                Target::Parquet {
                    writer: Box::new(writer),
                    schema,
                    builders,
                    rows: 0,
                }
            }
        };
        Ok(TableSink { tmp, path, target })
    }

    pub fn write(&mut self, row: &[Value<'_>]) -> Result<()> {
        match &mut self.target {
            Target::Csv { out, line, day } => {
                line.clear();
                for (i, cell) in row.iter().enumerate() {
                    if i > 0 {
                        line.push(',');
                    }
                    format_cell(line, day, cell);
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
                for (builder, value) in builders.iter_mut().zip(row) {
                    builder.push(value);
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

fn flush(
    writer: &mut ArrowWriter<File>,
    schema: &SchemaRef,
    builders: &mut [ColumnBuilder],
    path: &Path,
) -> Result<()> {
    let columns: Vec<ArrayRef> = builders.iter_mut().map(ColumnBuilder::finish).collect();
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(DataFusionError::from)?;
    writer.write(&batch).map_err(|source| Error::Parquet {
        path: path.to_owned(),
        source,
    })
}

fn format_cell(line: &mut String, day_cache: &mut Option<(i64, String)>, value: &Value<'_>) {
    use std::fmt::Write as _;
    match value {
        Value::Int(x) => {
            let _ = write!(line, "{x}");
        }
        Value::Float(x) => {
            let _ = write!(line, "{x}");
        }
        Value::Bool(x) => {
            let _ = write!(line, "{x}");
        }
        Value::Str(s) if s.contains([',', '"', '\n', '\r']) => {
            line.push('"');
            line.push_str(&s.replace('"', "\"\""));
            line.push('"');
        }
        Value::Str(s) => line.push_str(s),
        Value::Ts(micros) => {
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
        Value::Null => {}
    }
}
