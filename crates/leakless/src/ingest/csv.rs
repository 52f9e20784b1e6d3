//! CSV -> typed batches, with exact line numbers for every bad value.
//!
//! A small RFC 4180 splitter (comma separator, `"` quotes with `""` escapes,
//! `\n` or `\r\n` line ends) feeds values straight into typed Arrow builders:
//! integers and timestamps are parsed from bytes without an intermediate
//! string column. Line numbers are physical lines of the file (the header is
//! line 1; a quoted value spanning lines counts each of them). Blank lines are
//! skipped. An empty unquoted value is null.

use std::borrow::Cow;
use std::io::Read;

use datafusion::arrow::record_batch::RecordBatch;

use super::columns::{ColumnBuilder, Value};
use super::{ColumnSpec, FileReader};
use crate::error::{BadRow, Error, Location, Result};
use crate::spec::ColumnType;
use crate::time::parse_timestamp_micros;

const CHUNK: usize = 8 << 20;

/// One field of a record, as a byte range of the buffer.
#[derive(Debug, Clone, Copy)]
struct FieldRef {
    start: usize,
    end: usize,
    quoted: bool,
    /// Holds `""` escapes to undo.
    escaped: bool,
}

#[derive(Debug, PartialEq)]
enum Split {
    /// A record ends `end` bytes in, spanning `newlines` line ends.
    Record { end: usize, newlines: u64 },
    /// The buffer ends inside the record.
    NeedMore,
    /// The record is malformed; it ends `end` bytes in.
    Malformed {
        reason: &'static str,
        end: usize,
        newlines: u64,
    },
}

/// Splits the record at the start of `buf` into `fields`.
fn split_record(buf: &[u8], delimiter: u8, at_eof: bool, fields: &mut Vec<FieldRef>) -> Split {
    fields.clear();
    let n = buf.len();
    let mut i = 0;
    let mut newlines = 0;
    loop {
        if i < n && buf[i] == b'"' {
            let mut j = i + 1;
            let mut escaped = false;
            let close = loop {
                match memchr::memchr(b'"', &buf[j..]) {
                    None if at_eof => {
                        return Split::Malformed {
                            reason: "unterminated quoted value",
                            end: n,
                            newlines: newlines + count_newlines(&buf[i..]),
                        };
                    }
                    None => return Split::NeedMore,
                    Some(k) => {
                        let q = j + k;
                        if q + 1 == n && !at_eof {
                            return Split::NeedMore;
                        }
                        if q + 1 < n && buf[q + 1] == b'"' {
                            escaped = true;
                            j = q + 2;
                            continue;
                        }
                        break q;
                    }
                }
            };
            newlines += count_newlines(&buf[i + 1..close]);
            fields.push(FieldRef {
                start: i + 1,
                end: close,
                quoted: true,
                escaped,
            });
            i = close + 1;
            match buf.get(i) {
                None => return Split::Record { end: n, newlines },
                Some(&d) if d == delimiter => i += 1,
                Some(b'\n') => {
                    return Split::Record {
                        end: i + 1,
                        newlines: newlines + 1,
                    };
                }
                Some(b'\r') if buf.get(i + 1) == Some(&b'\n') => {
                    return Split::Record {
                        end: i + 2,
                        newlines: newlines + 1,
                    };
                }
                Some(b'\r') if i + 1 == n && !at_eof => return Split::NeedMore,
                Some(_) => {
                    return match memchr::memchr(b'\n', &buf[i..]) {
                        Some(k) => Split::Malformed {
                            reason: "characters after a closing quote",
                            end: i + k + 1,
                            newlines: newlines + 1,
                        },
                        None if at_eof => Split::Malformed {
                            reason: "characters after a closing quote",
                            end: n,
                            newlines,
                        },
                        None => Split::NeedMore,
                    };
                }
            }
        } else {
            match memchr::memchr2(delimiter, b'\n', &buf[i..]) {
                None if at_eof => {
                    let end = if n > i && buf[n - 1] == b'\r' {
                        n - 1
                    } else {
                        n
                    };
                    fields.push(unquoted(i, end));
                    return Split::Record { end: n, newlines };
                }
                None => return Split::NeedMore,
                Some(k) => {
                    let e = i + k;
                    if buf[e] == delimiter {
                        fields.push(unquoted(i, e));
                        i = e + 1;
                    } else {
                        let end = if e > i && buf[e - 1] == b'\r' {
                            e - 1
                        } else {
                            e
                        };
                        fields.push(unquoted(i, end));
                        return Split::Record {
                            end: e + 1,
                            newlines: newlines + 1,
                        };
                    }
                }
            }
        }
    }
}

fn unquoted(start: usize, end: usize) -> FieldRef {
    FieldRef {
        start,
        end,
        quoted: false,
        escaped: false,
    }
}

fn count_newlines(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

fn field_bytes<'a>(buf: &'a [u8], f: &FieldRef) -> Cow<'a, [u8]> {
    let raw = &buf[f.start..f.end];
    if f.escaped {
        let mut out = Vec::with_capacity(raw.len());
        let mut k = 0;
        while k < raw.len() {
            out.push(raw[k]);
            k += if raw[k] == b'"' { 2 } else { 1 };
        }
        Cow::Owned(out)
    } else {
        Cow::Borrowed(raw)
    }
}

/// Why a value cannot be read as its column's type.
fn parse_value<'a>(
    spec: &ColumnSpec,
    bytes: Cow<'a, [u8]>,
    quoted: bool,
    null_values: &[String],
) -> Result<Value<'a>, &'static str> {
    // The null values are null; an empty unquoted value is never a value of
    // a required column.
    let null = !quoted && null_values.iter().any(|n| n.as_bytes() == &*bytes);
    if null || (!quoted && bytes.is_empty() && !spec.nullable) {
        return if spec.nullable {
            Ok(Value::Null)
        } else {
            Err("missing value")
        };
    }
    let epoch = |scale: i64| {
        parse_i64(&bytes)
            .ok_or("not a valid integer epoch")?
            .checked_mul(scale)
            .map(Value::Ts)
            .ok_or("an epoch that overflows 64-bit microseconds")
    };
    match spec.ty {
        ColumnType::Int64 => parse_i64(&bytes).map(Value::Int).ok_or("not a valid int64"),
        ColumnType::Float64 => {
            let x = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .ok_or("not a valid float64")?;
            if x.is_finite() {
                Ok(Value::Float(x))
            } else {
                Err("not a finite float64")
            }
        }
        ColumnType::Bool => match &*bytes {
            b"1" => Ok(Value::Bool(true)),
            b"0" => Ok(Value::Bool(false)),
            b if b.eq_ignore_ascii_case(b"true") => Ok(Value::Bool(true)),
            b if b.eq_ignore_ascii_case(b"false") => Ok(Value::Bool(false)),
            _ => Err("not a valid bool (true, false, 1 or 0)"),
        },
        ColumnType::Timestamp => parse_timestamp_micros(&bytes)
            .map(Value::Ts)
            .ok_or("not a valid timestamp (expected RFC 3339, e.g. 2026-10-01T12:00:00Z)"),
        ColumnType::TimestampS => epoch(1_000_000),
        ColumnType::TimestampMs => epoch(1_000),
        ColumnType::TimestampUs => epoch(1),
        ColumnType::String => match bytes {
            Cow::Borrowed(b) => std::str::from_utf8(b)
                .map(|s| Value::Str(Cow::Borrowed(s)))
                .map_err(|_| "not valid UTF-8"),
            Cow::Owned(b) => String::from_utf8(b)
                .map(|s| Value::Str(Cow::Owned(s)))
                .map_err(|_| "not valid UTF-8"),
        },
    }
}

/// Parses an optionally signed decimal integer, rejecting overflow.
pub(crate) fn parse_i64(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s.split_first()? {
        (b'-', rest) => (true, rest),
        (b'+', rest) => (false, rest),
        _ => (false, s),
    };
    if digits.is_empty() {
        return None;
    }
    let mut acc: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        let d = i64::from(b - b'0');
        acc = acc.checked_mul(10)?;
        acc = if negative {
            acc.checked_sub(d)?
        } else {
            acc.checked_add(d)?
        };
    }
    Some(acc)
}

fn shorten(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.into_owned(),
    }
}

/// The buffered byte source of one file.
struct Input {
    file: std::fs::File,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl Input {
    /// Drops consumed bytes and reads another chunk; `false` at end of file.
    fn fill(&mut self, reader: &FileReader<'_>) -> Result<bool> {
        if self.eof {
            return Ok(false);
        }
        self.buf.drain(..self.pos);
        self.pos = 0;
        let old = self.buf.len();
        self.buf.resize(old + CHUNK, 0);
        let mut filled = old;
        while filled < self.buf.len() {
            let n = self
                .file
                .read(&mut self.buf[filled..])
                .map_err(|e| Error::io("reading", &reader.file.path, e))?;
            if n == 0 {
                self.eof = true;
                break;
            }
            filled += n;
        }
        self.buf.truncate(filled);
        Ok(true)
    }

    /// The next record's fields, or `None` at end of input.
    fn next_record(
        &mut self,
        reader: &FileReader<'_>,
        fields: &mut Vec<FieldRef>,
    ) -> Result<Option<Split>> {
        loop {
            if self.pos == self.buf.len() && self.eof {
                return Ok(None);
            }
            match split_record(
                &self.buf[self.pos..],
                reader.layout.csv.delimiter,
                self.eof,
                fields,
            ) {
                Split::NeedMore => {
                    self.fill(reader)?;
                }
                done => return Ok(Some(done)),
            }
        }
    }
}

/// Reads one CSV file; returns its row count unless `emit` stopped it.
pub(super) fn read(
    reader: &FileReader<'_>,
    emit: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<Option<u64>> {
    let path = &reader.file.path;
    let file = std::fs::File::open(path).map_err(|e| Error::io("reading", path, e))?;
    let mut input = Input {
        file,
        buf: Vec::with_capacity(2 * CHUNK),
        pos: 0,
        eof: false,
    };
    let mut fields = Vec::new();

    let header = read_header(reader, &mut input, &mut fields)?;
    let wanted = reader.locate_columns(&header)?;

    let mut line: u64 = 2;
    let mut rows: u64 = 0;
    let mut builders: Vec<ColumnBuilder> = wanted
        .iter()
        .map(|(_, spec)| ColumnBuilder::new(spec.ty.value_type(), reader.batch_rows))
        .collect();
    let mut pending = 0usize;
    let bad_row = |line: u64, column: Option<&str>, value: &[u8], reason: String| BadRow {
        path: path.clone(),
        location: Location::Line(line),
        column: column.map(str::to_owned),
        value: Some(shorten(value)),
        reason,
    };

    while let Some(split) = input.next_record(reader, &mut fields)? {
        let buf = &input.buf[input.pos..];
        let (end, newlines) = match split {
            Split::Record { end, newlines } => (end, newlines),
            Split::Malformed {
                reason,
                end,
                newlines,
            } => {
                reader.policy.route(bad_row(
                    line,
                    None,
                    trim_line(&buf[..end]),
                    reason.to_owned(),
                ))?;
                input.pos += end;
                line += newlines;
                continue;
            }
            Split::NeedMore => unreachable!("next_record never returns NeedMore"),
        };
        let blank = fields.len() == 1 && fields[0].start == fields[0].end && !fields[0].quoted;
        if !blank {
            match decode_row(
                buf,
                &fields,
                &wanted,
                header.len(),
                &reader.layout.csv.null_values,
            ) {
                Ok(values) => {
                    for (builder, value) in builders.iter_mut().zip(&values) {
                        builder.push(value);
                    }
                    pending += 1;
                    rows += 1;
                }
                Err(RowFault::FieldCount(found)) => reader.policy.route(bad_row(
                    line,
                    None,
                    trim_line(&buf[..end]),
                    format!("expected {} fields, found {found}", header.len()),
                ))?,
                Err(RowFault::Value {
                    column,
                    field,
                    reason,
                }) => {
                    let f = &fields[field];
                    reader.policy.route(bad_row(
                        line,
                        Some(&wanted[column].1.name),
                        &field_bytes(buf, f),
                        reason.to_owned(),
                    ))?
                }
            }
        }
        input.pos += end;
        line += newlines;
        if pending == reader.batch_rows {
            pending = 0;
            if !emit(finish(reader, &mut builders)?) {
                return Ok(None);
            }
        }
    }
    if pending > 0 && !emit(finish(reader, &mut builders)?) {
        return Ok(None);
    }
    Ok(Some(rows))
}

/// The column names of the header line, consumed from `input`.
fn read_header(
    reader: &FileReader<'_>,
    input: &mut Input,
    fields: &mut Vec<FieldRef>,
) -> Result<Vec<String>> {
    let path = &reader.file.path;
    let header: Vec<String> = match input.next_record(reader, fields)? {
        Some(Split::Record { end, .. }) => {
            let names = fields
                .iter()
                .map(|f| {
                    String::from_utf8_lossy(&field_bytes(&input.buf[input.pos..], f)).into_owned()
                })
                .map(|name| name.trim_start_matches('\u{feff}').to_owned())
                .collect();
            input.pos += end;
            names
        }
        Some(Split::Malformed { reason, .. }) => {
            return Err(Error::BadRow(Box::new(BadRow {
                path: path.clone(),
                location: Location::Line(1),
                column: None,
                value: None,
                reason: format!("header: {reason}"),
            })));
        }
        _ => {
            let first = reader
                .layout
                .columns
                .first()
                .map_or("", |c| c.name.as_str());
            return Err(reader.missing_column(first, &[]));
        }
    };
    Ok(header)
}

/// The column names of a CSV file's header.
pub(super) fn header(reader: &FileReader<'_>) -> Result<Vec<String>> {
    let path = &reader.file.path;
    let file = std::fs::File::open(path).map_err(|e| Error::io("reading", path, e))?;
    let mut input = Input {
        file,
        buf: Vec::with_capacity(1 << 16),
        pos: 0,
        eof: false,
    };
    read_header(reader, &mut input, &mut Vec::new())
}

enum RowFault {
    FieldCount(usize),
    Value {
        /// Position in `wanted`.
        column: usize,
        field: usize,
        reason: &'static str,
    },
}

fn decode_row<'a>(
    buf: &'a [u8],
    fields: &[FieldRef],
    wanted: &[(usize, &ColumnSpec)],
    width: usize,
    null_values: &[String],
) -> Result<Vec<Value<'a>>, RowFault> {
    if fields.len() != width {
        return Err(RowFault::FieldCount(fields.len()));
    }
    wanted
        .iter()
        .enumerate()
        .map(|(column, (i, spec))| {
            let f = &fields[*i];
            parse_value(spec, field_bytes(buf, f), f.quoted, null_values).map_err(|reason| {
                RowFault::Value {
                    column,
                    field: *i,
                    reason,
                }
            })
        })
        .collect()
}

fn trim_line(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

fn finish(reader: &FileReader<'_>, builders: &mut [ColumnBuilder]) -> Result<RecordBatch> {
    let columns = builders.iter_mut().map(ColumnBuilder::finish).collect();
    Ok(RecordBatch::try_new(reader.layout.schema.clone(), columns)
        .map_err(datafusion::error::DataFusionError::from)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(text: &str) -> Vec<Vec<String>> {
        let buf = text.as_bytes();
        let mut pos = 0;
        let mut fields = Vec::new();
        let mut out = Vec::new();
        while pos < buf.len() {
            match split_record(&buf[pos..], b',', true, &mut fields) {
                Split::Record { end, .. } => {
                    out.push(
                        fields
                            .iter()
                            .map(|f| {
                                String::from_utf8(field_bytes(&buf[pos..], f).into_owned()).unwrap()
                            })
                            .collect(),
                    );
                    pos += end;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        out
    }

    #[test]
    fn splits_quotes_escapes_and_crlf() {
        assert_eq!(
            split_all("a,b\r\n\"x,1\",\"say \"\"hi\"\"\"\n,\n\"multi\nline\",z"),
            vec![
                vec!["a", "b"],
                vec!["x,1", "say \"hi\""],
                vec!["", ""],
                vec!["multi\nline", "z"],
            ]
        );
    }

    #[test]
    fn waits_for_more_input_inside_a_record() {
        let mut fields = Vec::new();
        assert_eq!(
            split_record(b"1,2", b',', false, &mut fields),
            Split::NeedMore
        );
        assert_eq!(
            split_record(b"1,\"a\nb", b',', false, &mut fields),
            Split::NeedMore
        );
        assert_eq!(
            split_record(b"1,\"a\"", b',', false, &mut fields),
            Split::NeedMore
        );
        assert_eq!(
            split_record(b"1,\"a\nb\"\n", b',', false, &mut fields),
            Split::Record {
                end: 8,
                newlines: 2
            }
        );
    }

    #[test]
    fn malformed_quotes_are_reported() {
        let mut fields = Vec::new();
        assert!(matches!(
            split_record(b"\"a\"b,1\nnext", b',', true, &mut fields),
            Split::Malformed { end: 7, .. }
        ));
        assert!(matches!(
            split_record(b"\"open", b',', true, &mut fields),
            Split::Malformed { end: 5, .. }
        ));
    }

    #[test]
    fn integers() {
        assert_eq!(parse_i64(b"42"), Some(42));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"4.0"), None);
        assert_eq!(parse_i64(b" 4"), None);
        assert_eq!(parse_i64(b"-"), None);
    }
}
