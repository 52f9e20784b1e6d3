//! CSV -> typed batches, with exact line numbers for every bad value.
//!
//! A small RFC 4180 splitter (comma separator, `"` quotes with `""` escapes,
//! `\n` or `\r\n` line ends) feeds values straight into typed Arrow builders:
//! integers and timestamps are parsed from bytes without an intermediate
//! string column. Line numbers are physical lines of the file (the header is
//! line 1; a quoted value spanning lines counts each of them). Blank lines are
//! skipped. An empty unquoted value is null.
//!
//! Runs of plain records (most of a log) take a faster road, [`fast`]: split
//! with vector compares and parsed a column at a time, with this parse's own
//! value rules; the first record that is not plain comes back here.

use std::borrow::Cow;
use std::io::Read;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use datafusion::arrow::record_batch::RecordBatch;

use super::columns::{ColumnBuilder, Value};
use super::{ColumnSpec, Compression, FileReader};
use crate::error::{BadRow, Error, Location, Result};
use crate::spec::ColumnType;
use crate::time::parse_timestamp_micros;

mod fast;

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
    /// The record is malformed; it ends `end` bytes in. The fault is on
    /// the record's line plus `at_newline` (an unterminated quoted value:
    /// the line where it began).
    Malformed {
        reason: &'static str,
        end: usize,
        newlines: u64,
        at_newline: u64,
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
                            reason: "unterminated quoted value (it begins on this line)",
                            end: n,
                            newlines: newlines + count_newlines(&buf[i..]),
                            at_newline: newlines,
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
                            at_newline: newlines,
                        },
                        None if at_eof => Split::Malformed {
                            reason: "characters after a closing quote",
                            end: n,
                            newlines,
                            at_newline: newlines,
                        },
                        None => Split::NeedMore,
                    };
                }
            }
        } else {
            match find_end(&buf[i..], delimiter) {
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

/// The position of the first `delimiter` or line end in `bytes`. Fields
/// are mostly short (ids, times): eight bytes at a time in a word find the
/// end sooner than a call to a vectorised search, which takes over for
/// long fields.
fn find_end(bytes: &[u8], delimiter: u8) -> Option<usize> {
    const SHORT: usize = 32;
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // The high bit of each zero byte of `v`, and maybe of bytes after the
    // first zero one (a borrow), never before it: the lowest bit is exact.
    let zeros = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let (delimiters, newlines) = (ONES * u64::from(delimiter), ONES * u64::from(b'\n'));
    let mut at = 0;
    while at + 8 <= bytes.len().min(SHORT) {
        let word = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
        let found = zeros(word ^ delimiters) | zeros(word ^ newlines);
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    if at < SHORT || bytes.len() <= SHORT {
        return bytes[at..]
            .iter()
            .position(|&b| b == delimiter || b == b'\n')
            .map(|k| at + k);
    }
    memchr::memchr2(delimiter, b'\n', &bytes[at..]).map(|k| at + k)
}

fn unquoted(start: usize, end: usize) -> FieldRef {
    FieldRef {
        start,
        end,
        quoted: false,
        escaped: false,
    }
}

/// A blank line: one empty unquoted field. Skipped, not a row.
fn is_blank(fields: &[FieldRef]) -> bool {
    fields.len() == 1 && fields[0].start == fields[0].end && !fields[0].quoted
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
    if is_null(spec, &bytes, quoted, null_values)? {
        return Ok(Value::Null);
    }
    match spec.ty {
        ColumnType::String => match bytes {
            Cow::Borrowed(b) => std::str::from_utf8(b)
                .map(|s| Value::Str(Cow::Borrowed(s)))
                .map_err(|_| NOT_UTF8),
            Cow::Owned(b) => String::from_utf8(b)
                .map(|s| Value::Str(Cow::Owned(s)))
                .map_err(|_| NOT_UTF8),
        },
        ty => parse_word(ty, &bytes).map(|word| Value::of_word(ty.value_type(), word)),
    }
}

const NOT_UTF8: &str = "not valid UTF-8";

/// Whether a value is null, or why it cannot be: the null values are null
/// unless quoted, and an empty unquoted value is never a value of a
/// required column.
#[inline]
fn is_null(
    spec: &ColumnSpec,
    bytes: &[u8],
    quoted: bool,
    null_values: &[String],
) -> Result<bool, &'static str> {
    let null = !quoted && null_values.iter().any(|n| n.as_bytes() == bytes);
    if null || (!quoted && bytes.is_empty() && !spec.nullable) {
        return match spec.nullable {
            true => Ok(true),
            false => Err("missing value"),
        };
    }
    Ok(false)
}

/// A value of a column of type `ty` other than string, not null, as the
/// word its builder holds ([`Value::of_word`]): an integer, µs, a float's
/// bits, a bool as 0 or 1.
#[inline]
fn parse_word(ty: ColumnType, bytes: &[u8]) -> Result<i64, &'static str> {
    let in_range = |t: i64| match crate::time::in_range(t) {
        true => Ok(t),
        false => Err(crate::time::OUT_OF_RANGE),
    };
    let epoch = |scale: i64| {
        parse_i64(bytes)
            .ok_or("not a valid integer epoch")?
            .checked_mul(scale)
            .map_or(Err(crate::time::OUT_OF_RANGE), in_range)
    };
    match ty {
        ColumnType::Int64 => parse_i64(bytes).ok_or("not a valid int64"),
        ColumnType::Float64 => {
            let x = std::str::from_utf8(bytes)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .ok_or("not a valid float64")?;
            if x.is_finite() {
                Ok(x.to_bits() as i64)
            } else {
                Err("not a finite float64")
            }
        }
        ColumnType::Bool => match bytes {
            b"1" => Ok(1),
            b"0" => Ok(0),
            b if b.eq_ignore_ascii_case(b"true") => Ok(1),
            b if b.eq_ignore_ascii_case(b"false") => Ok(0),
            _ => Err("not a valid bool (true, false, 1 or 0)"),
        },
        ColumnType::Timestamp => parse_timestamp_micros(bytes)
            .ok_or("not a valid timestamp (expected RFC 3339, e.g. 2026-10-01T12:00:00Z)")
            .and_then(in_range),
        ColumnType::TimestampS => epoch(1_000_000),
        ColumnType::TimestampMs => epoch(1_000),
        ColumnType::TimestampUs => epoch(1),
        ColumnType::String => Err("a string, not a word"),
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
    // Up to 18 digits cannot overflow: eight at a time, in one word each
    // (a chain of one multiply per digit was most of a CSV read's parse).
    if digits.len() <= 18 {
        let mut chunks = digits.chunks_exact(8);
        let mut acc: u64 = 0;
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
            acc = acc * 100_000_000 + u64::from(eight_digits(word)?);
        }
        for &b in chunks.remainder() {
            if !b.is_ascii_digit() {
                return None;
            }
            acc = acc * 10 + u64::from(b - b'0');
        }
        let acc = acc as i64;
        return Some(if negative { -acc } else { acc });
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

/// The value of eight ASCII digits read as a little-endian word (the first
/// digit in the lowest byte), `None` when any byte is not a digit.
fn eight_digits(word: u64) -> Option<u32> {
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    // Each byte 0x30..=0x39: its high nibble is 3, and adding 6 keeps it 3.
    if word & HIGH != ZEROS || word.wrapping_add(0x0606_0606_0606_0606) & HIGH != ZEROS {
        return None;
    }
    let v = word - ZEROS;
    // Pairs of digits, then fours, then the eight.
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    const MASK: u64 = 0x0000_00FF_0000_00FF;
    const MUL1: u64 = 100 + (1_000_000 << 32);
    const MUL2: u64 = 1 + (10_000 << 32);
    let v = (v & MASK)
        .wrapping_mul(MUL1)
        .wrapping_add(((v >> 16) & MASK).wrapping_mul(MUL2))
        >> 32;
    Some(v as u32)
}

fn shorten(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.into_owned(),
    }
}

/// A record longer than this is refused rather than held in memory: in
/// practice it is an unterminated quote swallowing the rest of the file.
const MAX_RECORD: usize = 256 << 20;

/// A CSV file's bytes, decompressed as its extension says.
enum Stream {
    Plain(std::fs::File),
    Gzip(Box<flate2::read::MultiGzDecoder<std::io::BufReader<std::fs::File>>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, std::io::BufReader<std::fs::File>>>),
}

impl Stream {
    fn open(file: &super::InputFile) -> Result<Stream> {
        let raw =
            std::fs::File::open(&file.path).map_err(|e| Error::io("reading", &file.name, e))?;
        Ok(match file.compression {
            Compression::None => Stream::Plain(raw),
            Compression::Gzip => Stream::Gzip(Box::new(flate2::read::MultiGzDecoder::new(
                std::io::BufReader::new(raw),
            ))),
            Compression::Zstd => Stream::Zstd(Box::new(
                zstd::stream::read::Decoder::new(raw)
                    .map_err(|e| Error::io("decompressing", &file.name, e))?,
            )),
        })
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(f) => f.read(buf),
            Stream::Gzip(d) => d.read(buf),
            Stream::Zstd(d) => d.read(buf),
        }
    }
}

/// The buffered byte source of one file.
struct Input {
    file: Stream,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
    /// Bytes a read asks for at least: the file's size for a small plain
    /// file (thousands of small parts are common), else [`CHUNK`].
    chunk: usize,
    /// Reads so far (for the test of linear time).
    fills: u32,
}

impl Input {
    fn open(file: &super::InputFile, capacity: usize) -> Result<Input> {
        let chunk = match file.compression {
            Compression::None => (file.bytes as usize + 1).clamp(1 << 16, CHUNK),
            _ => CHUNK,
        };
        Ok(Input::new(Stream::open(file)?, chunk, capacity))
    }

    fn new(file: Stream, chunk: usize, capacity: usize) -> Input {
        Input {
            file,
            buf: Vec::with_capacity(capacity.min(2 * chunk)),
            pos: 0,
            eof: false,
            chunk,
            fills: 0,
        }
    }

    /// Drops consumed bytes and reads another chunk; `false` at end of file.
    /// It reads at least as much again as it holds, so that a record spanning
    /// many fills is rescanned a bounded number of times in all: linear time
    /// even for an unterminated quote, which fails at [`MAX_RECORD`] bytes
    /// naming `line`, the line where the record began.
    fn fill(&mut self, reader: &FileReader<'_>, line: u64) -> Result<bool> {
        if self.eof {
            return Ok(false);
        }
        self.buf.drain(..self.pos);
        self.pos = 0;
        let old = self.buf.len();
        if old >= MAX_RECORD {
            return Err(Error::BadRow(Box::new(BadRow {
                path: reader.file.name.clone(),
                location: Location::Line(line),
                column: None,
                value: Some(shorten(&self.buf[..old.min(400)])),
                reason: format!(
                    "a record longer than {} MiB (an unterminated quoted value?)",
                    MAX_RECORD >> 20
                ),
                raw: None,
            })));
        }
        self.fills += 1;
        self.buf.resize(old + self.chunk.max(old), 0);
        let mut filled = old;
        while filled < self.buf.len() {
            let n = self
                .file
                .read(&mut self.buf[filled..])
                .map_err(|e| Error::io("reading", &reader.file.name, e))?;
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
                    self.fill(reader, 1)?;
                }
                done => return Ok(Some(done)),
            }
        }
    }
}

/// Files at least this large are parsed in blocks on several threads.
const PARALLEL_BYTES: u64 = 64 << 20;
/// The size of one block of a parallel parse.
const BLOCK: usize = 8 << 20;

/// Reads one CSV file; returns its row count unless `emit` stopped it.
///
/// A large file is cut into blocks after a line end and the blocks are
/// parsed on several threads, each from the line number the line ends
/// before it give. A cut is a record boundary unless it falls inside a
/// quoted value; then the block before it ends inside a record (which its
/// parse sees), and the rest of the file is read sequentially from the
/// start of that record. Either way the rows, their order, and the first bad
/// value and its line are those of a sequential read.
///
/// Returns the row count, and the file's SHA-256 when the read computed it
/// (a read in blocks hashes each block as it cuts it, so that the file is
/// not read a second time to hash it).
pub(super) fn read(
    reader: &FileReader<'_>,
    emit: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<(Option<u64>, Option<String>)> {
    read_with(reader, blocks_for(reader.file), true, emit)
}

/// Every batch of a read of the file as text, or the error, with the fast
/// path of runs (`fast.rs`) or record by record only: the fuzzer checks
/// that the two agree.
#[cfg(any(test, feature = "fuzz"))]
pub(super) fn read_as_text(reader: &FileReader<'_>, fast: bool) -> String {
    let mut text = String::new();
    let read = read_with(reader, blocks_for(reader.file), fast, &mut |batch| {
        text.push_str(&format!("{batch:?}\n"));
        true
    });
    let bad = reader.bad.lock().unwrap_or_else(|e| e.into_inner());
    match read {
        Ok((rows, _)) => format!("{rows:?} rows, set aside {bad:?}\n{text}"),
        Err(e) => format!("error: {e}, set aside {bad:?}\n{text}"),
    }
}

/// How [`read`] reads `file`: in blocks when it is large, not compressed,
/// and there are several cores.
pub(super) fn blocks_for(file: &super::InputFile) -> Option<Blocks> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plain = file.compression == Compression::None;
    (plain && threads > 1 && file.bytes >= PARALLEL_BYTES).then_some(Blocks {
        threads,
        bytes: BLOCK,
    })
}

/// How a parallel read cuts its file: `bytes` a block, `threads` blocks
/// parsed at once (and one more cut ahead).
#[derive(Debug, Clone, Copy)]
pub(super) struct Blocks {
    threads: usize,
    bytes: usize,
}

/// [`read`], sequential or in `blocks`, with runs of plain records
/// parsed a column at a time when `fast` (`fast.rs`).
fn read_with(
    reader: &FileReader<'_>,
    blocks: Option<Blocks>,
    fast: bool,
    emit: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<(Option<u64>, Option<String>)> {
    let mut input = Input::open(reader.file, 2 * CHUNK)?;
    let mut fields = Vec::new();
    let (header, first_line) = read_header(reader, &mut input, &mut fields)?;
    let records = Records {
        reader,
        wanted: reader.locate_columns(&header)?,
        width: header.len(),
        fast,
    };
    if let Some(blocks) = blocks {
        return read_blocks(&records, input, first_line, blocks, emit);
    }
    Ok((
        read_sequential(&records, &mut input, first_line, 0, emit)?,
        None,
    ))
}

/// What parsing a record needs: the columns wanted and the header's width.
struct Records<'a> {
    reader: &'a FileReader<'a>,
    wanted: Vec<(usize, &'a ColumnSpec)>,
    width: usize,
    /// Whether runs of plain records take the fast path (`fast.rs`).
    fast: bool,
}

/// After a run of the fast path stopped at its first record, records read
/// one by one before the fast path is tried again (a file of quoted values
/// is not scanned twice).
const SLOW_AFTER_MISS: usize = 16;

/// The records a run may take after one stopped early, doubling with each
/// run that goes through whole: a run splits and parses its records before
/// it meets the bad one, so in a file with a bad row every hundred the
/// work thrown away stays near that of the rows between them.
const RUN_AFTER_STOP: usize = 64;

/// Where parsing a buffer stopped.
enum Stop {
    /// Every record parsed.
    Done,
    /// The buffer ends inside a record that starts `at` bytes in, `line`.
    Inside { at: usize, line: u64 },
    /// `emit` asked to stop.
    Stopped,
}

impl Records<'_> {
    fn builders(&self) -> Vec<ColumnBuilder> {
        self.wanted
            .iter()
            .map(|(_, spec)| ColumnBuilder::new(spec.ty.value_type(), self.reader.batch_rows))
            .collect()
    }

    /// Parses every whole record of `buf` (the first at line `line`) into
    /// `builders`, emitting full batches. `rows` counts the records read.
    #[allow(clippy::too_many_arguments)]
    fn parse(
        &self,
        buf: &[u8],
        at_eof: bool,
        mut line: u64,
        builders: &mut [ColumnBuilder],
        pending: &mut usize,
        rows: &mut u64,
        emit: &mut dyn FnMut(RecordBatch) -> bool,
    ) -> Result<(Stop, usize, u64)> {
        let reader = self.reader;
        let path = &reader.file.name;
        let bad_row =
            |line: u64, column: Option<&str>, value: &[u8], raw: &[u8], reason: String| BadRow {
                path: path.clone(),
                location: Location::Line(line),
                column: column.map(str::to_owned),
                value: Some(shorten(value)),
                reason,
                raw: Some(crate::error::shorten_raw(&String::from_utf8_lossy(raw))),
            };
        let mut fields = Vec::new();
        let mut values = Vec::with_capacity(self.wanted.len());
        let mut pos = 0;
        let mut scratch = fast::Scratch::default();
        let mut slow = if self.fast { 0 } else { usize::MAX };
        let most = fast::RUN.min(fast::RUN_FIELDS / self.width.max(1)).max(1);
        let mut limit = most;
        while pos < buf.len() {
            let rest = &buf[pos..];
            if slow == 0 {
                let max = (reader.batch_rows - *pending).min(limit);
                let (n, bytes) = fast::run(
                    rest,
                    reader.layout.csv.delimiter,
                    self.width,
                    &self.wanted,
                    &reader.layout.csv.null_values,
                    builders,
                    max,
                    &mut scratch,
                );
                limit = match n == max {
                    true => (2 * limit).min(most),
                    false => RUN_AFTER_STOP.min(most),
                };
                if n > 0 {
                    pos += bytes;
                    line += n as u64;
                    *pending += n;
                    *rows += n as u64;
                    if *pending == reader.batch_rows {
                        *pending = 0;
                        if !emit(finish(reader, builders)?) {
                            return Ok((Stop::Stopped, pos, line));
                        }
                    }
                    continue;
                }
                slow = SLOW_AFTER_MISS;
            }
            // At least 1 here (without `fast`, `usize::MAX` less the records).
            slow -= 1;
            let (end, newlines) =
                match split_record(rest, reader.layout.csv.delimiter, at_eof, &mut fields) {
                    Split::Record { end, newlines } => (end, newlines),
                    Split::NeedMore => return Ok((Stop::Inside { at: pos, line }, pos, line)),
                    Split::Malformed {
                        reason,
                        end,
                        newlines,
                        at_newline,
                    } => {
                        let row = bad_row(
                            line + at_newline,
                            None,
                            trim_line(&rest[..end]),
                            trim_line(&rest[..end]),
                            reason.to_owned(),
                        );
                        // A quote no later `"` closes swallows the rest of
                        // the file: never one row set aside.
                        if reason.starts_with("unterminated") {
                            return Err(Error::BadRow(Box::new(row)));
                        }
                        reader.route(row)?;
                        pos += end;
                        line += newlines;
                        continue;
                    }
                };
            let blank = is_blank(&fields);
            if !blank {
                match decode_row(
                    rest,
                    &fields,
                    &self.wanted,
                    self.width,
                    &reader.layout.csv.null_values,
                    &mut values,
                ) {
                    Ok(()) => {
                        for (builder, value) in builders.iter_mut().zip(&values) {
                            builder.push(value);
                        }
                        *pending += 1;
                        *rows += 1;
                    }
                    Err(RowFault::FieldCount(found)) => reader.route(bad_row(
                        line,
                        None,
                        trim_line(&rest[..end]),
                        trim_line(&rest[..end]),
                        format!("expected {} fields, found {found}", self.width),
                    ))?,
                    Err(RowFault::Value {
                        column,
                        field,
                        reason,
                    }) => reader.route(bad_row(
                        line,
                        Some(&self.wanted[column].1.name),
                        &field_bytes(rest, &fields[field]),
                        trim_line(&rest[..end]),
                        reason.to_owned(),
                    ))?,
                }
            }
            pos += end;
            line += newlines;
            if *pending == reader.batch_rows {
                *pending = 0;
                if !emit(finish(reader, builders)?) {
                    return Ok((Stop::Stopped, pos, line));
                }
            }
        }
        Ok((Stop::Done, pos, line))
    }
}

/// Reads the rest of `input`, whose next record is at line `line`.
fn read_sequential(
    records: &Records<'_>,
    input: &mut Input,
    mut line: u64,
    mut rows: u64,
    emit: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<Option<u64>> {
    let reader = records.reader;
    let mut builders = records.builders();
    let mut pending = 0usize;
    loop {
        let buf = &input.buf[input.pos..];
        let (stop, consumed, next_line) = records.parse(
            buf,
            input.eof,
            line,
            &mut builders,
            &mut pending,
            &mut rows,
            emit,
        )?;
        input.pos += consumed;
        line = next_line;
        match stop {
            Stop::Stopped => return Ok(None),
            Stop::Done | Stop::Inside { .. } if !input.fill(reader, line)? => break,
            Stop::Done | Stop::Inside { .. } => {}
        }
    }
    if pending > 0 && !emit(finish(reader, &mut builders)?) {
        return Ok(None);
    }
    Ok(Some(rows))
}

/// One block of a parallel read: its batches and rows, or where it ended
/// inside a record.
struct Parsed {
    batches: Vec<RecordBatch>,
    rows: u64,
    inside: Option<(usize, u64)>,
    /// The rows it set aside (quarantine).
    bad: Vec<BadRow>,
}

/// A block being parsed: its start offset, the parse, and its bytes.
type InFlight<'scope> = (
    u64,
    std::thread::ScopedJoinHandle<'scope, Result<Parsed>>,
    Arc<Vec<u8>>,
);

/// Appends up to `n` bytes of `file` to `buf` (into its spare capacity,
/// never zeroed first); `true` when the file ended before `n` bytes.
fn read_more(file: &mut std::fs::File, buf: &mut Vec<u8>, n: usize) -> std::io::Result<bool> {
    buf.reserve(n);
    let got = file.take(n as u64).read_to_end(buf)?;
    Ok(got < n)
}

/// The parallel read of the rest of `input` (see [`read`]).
fn read_blocks(
    records: &Records<'_>,
    mut input: Input,
    first_line: u64,
    Blocks {
        threads,
        bytes: block_bytes,
    }: Blocks,
    emit: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<(Option<u64>, Option<String>)> {
    let reader = records.reader;
    let path = &reader.file.name;
    let Stream::Plain(file) = &mut input.file else {
        return Err(Error::Invalid(format!(
            "`{}` is compressed: it cannot be read in blocks",
            path.display()
        )));
    };
    // The bytes after the header, then block by block.
    let read_to =
        std::io::Seek::stream_position(file).map_err(|e| Error::io("reading", path, e))?;
    let mut offset = read_to - (input.buf.len() - input.pos) as u64;
    // Every byte hashed once, in order: the header part, then each block
    // as it is cut (on a thread of its own, off the path that hands out
    // blocks), then (after a fallback) the rest.
    let mut hasher = Sha256::new();
    hash_range(reader.file, 0, Some(offset), &mut hasher)?;
    let mut carry: Vec<u8> = input.buf.split_off(input.pos);
    let mut line = first_line;
    let mut rows = 0u64;
    let mut eof = input.eof;
    std::thread::scope(|scope| {
        // Bounded: where the parsers outrun the hashing (many cores, no SHA
        // instructions), the cutting waits for it instead of piling up
        // blocks.
        let (to_hash, blocks) = std::sync::mpsc::sync_channel::<Arc<Vec<u8>>>(threads + 1);
        let hashing = std::thread::Builder::new()
            .spawn_scoped(scope, move || {
                for block in blocks {
                    hasher.update(block.as_slice());
                }
                hasher
            })
            .map_err(|e| Error::io("starting a thread to read", path, e))?;
        let hashed = |to_hash: std::sync::mpsc::SyncSender<Arc<Vec<u8>>>| {
            drop(to_hash);
            hashing
                .join()
                .map_err(|_| Error::Invalid(format!("hashing `{}` failed", path.display())))
        };
        // Blocks being parsed, in file order: start offset, the parse and
        // the bytes.
        // One more than the threads, so that a thread that finishes finds
        // the next block cut while the oldest one's batches go out.
        let mut flight: std::collections::VecDeque<InFlight<'_>> =
            std::collections::VecDeque::new();
        // Blocks parsed and hashed, their memory reused for the next ones
        // (fresh memory for every block cost its page faults).
        let mut spare: Vec<Vec<u8>> = Vec::new();
        loop {
            while flight.len() <= threads && !(eof && carry.is_empty()) {
                // Fill the carry to a block, then cut after its last line end.
                while !eof && carry.len() < block_bytes {
                    let wanted = block_bytes - carry.len();
                    eof = read_more(file, &mut carry, wanted)
                        .map_err(|e| Error::io("reading", path, e))?;
                }
                // After the last line end within a block, else the first
                // after it (a line longer than a block), else all at the end.
                let within = carry.len().min(block_bytes);
                let cut = match memchr::memrchr(b'\n', &carry[..within]) {
                    Some(k) => k + 1,
                    None => match memchr::memchr(b'\n', &carry[within..]) {
                        Some(k) => within + k + 1,
                        None if eof => carry.len(),
                        None => {
                            eof = read_more(file, &mut carry, block_bytes)
                                .map_err(|e| Error::io("reading", path, e))?;
                            continue;
                        }
                    },
                };
                let mut rest = spare.pop().unwrap_or_default();
                rest.clear();
                rest.extend_from_slice(&carry[cut..]);
                carry.truncate(cut);
                let block = Arc::new(std::mem::replace(&mut carry, rest));
                let at_eof = eof && carry.is_empty();
                let (start, first_line) = (offset, line);
                // The hashing thread lives until `to_hash` is dropped.
                let _ = to_hash.send(block.clone());
                offset += block.len() as u64;
                line += count_newlines(&block);
                // A thread the system cannot start is an error, not a panic.
                let bytes = block.clone();
                let handle = std::thread::Builder::new()
                    .spawn_scoped(scope, move || {
                        // Its bad rows are its own until the block is taken
                        // (a block after a cut inside a quote is dropped).
                        let block_reader = FileReader {
                            bad: Mutex::new(Vec::new()),
                            ..*reader
                        };
                        let block_records = Records {
                            reader: &block_reader,
                            wanted: records.wanted.clone(),
                            width: records.width,
                            fast: records.fast,
                        };
                        let mut builders = block_records.builders();
                        let (mut pending, mut n) = (0usize, 0u64);
                        let mut batches = Vec::new();
                        let (stop, _, _) = block_records.parse(
                            &bytes,
                            at_eof,
                            first_line,
                            &mut builders,
                            &mut pending,
                            &mut n,
                            &mut |batch| {
                                batches.push(batch);
                                true
                            },
                        )?;
                        if pending > 0 {
                            batches.push(finish(reader, &mut builders)?);
                        }
                        let inside = match stop {
                            Stop::Inside { at, line } => Some((at, line)),
                            _ => None,
                        };
                        drop(block_records);
                        Ok(Parsed {
                            batches,
                            rows: n,
                            inside,
                            bad: block_reader
                                .bad
                                .into_inner()
                                .unwrap_or_else(|e| e.into_inner()),
                        })
                    })
                    .map_err(|e| Error::io("starting a thread to read", path, e))?;
                flight.push_back((start, handle, block));
            }
            let Some((start, handle, block)) = flight.pop_front() else {
                break;
            };
            let parsed = handle
                .join()
                .map_err(|_| Error::Invalid(format!("parsing `{}` failed", path.display())))??;
            // Still being hashed: dropped by the hashing thread instead. A
            // block grown past twice the size (a line longer than a block)
            // is freed, not kept for the rest of the read.
            if let Ok(block) = Arc::try_unwrap(block)
                && block.capacity() <= 2 * block_bytes
            {
                spare.push(block);
            }
            for batch in parsed.batches {
                if !emit(batch) {
                    return Ok((None, None));
                }
            }
            rows += parsed.rows;
            (reader.bad.lock().unwrap_or_else(|e| e.into_inner())).extend(parsed.bad);
            if let Some((at, inside_line)) = parsed.inside {
                // The cut fell inside a quoted value: from the record that
                // spans it, read on sequentially.
                drop(flight);
                let mut file = std::fs::File::open(&reader.file.path)
                    .map_err(|e| Error::io("reading", path, e))?;
                std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start + at as u64))
                    .map_err(|e| Error::io("reading", path, e))?;
                let mut rest = Input::new(Stream::Plain(file), CHUNK, 2 * CHUNK);
                rest.fill(reader, inside_line)?;
                let rows = read_sequential(records, &mut rest, inside_line, rows, emit)?;
                let mut hasher = hashed(to_hash)?;
                hash_range(reader.file, offset, None, &mut hasher)?;
                return Ok((rows, Some(super::hex(&hasher.finalize()))));
            }
        }
        let hasher = hashed(to_hash)?;
        Ok((Some(rows), Some(super::hex(&hasher.finalize()))))
    })
}

/// Feeds bytes `from..to` of `file` (to its end: `None`) to
/// `hasher`.
fn hash_range(
    file: &super::InputFile,
    from: u64,
    to: Option<u64>,
    hasher: &mut Sha256,
) -> Result<()> {
    let (local, path) = (&file.path, &file.name);
    let mut file = std::fs::File::open(local).map_err(|e| Error::io("reading", path, e))?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(from))
        .map_err(|e| Error::io("reading", path, e))?;
    let mut left = to.map(|t| t.saturating_sub(from));
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let want = left.map_or(buf.len(), |l| (l as usize).min(buf.len()));
        if want == 0 {
            return Ok(());
        }
        let n = file
            .read(&mut buf[..want])
            .map_err(|e| Error::io("reading", path, e))?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
        left = left.map(|l| l - n as u64);
    }
}
/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The column names of the header, consumed from `input`, and the line the
/// data starts on (2, unless a quoted name spans lines).
fn read_header(
    reader: &FileReader<'_>,
    input: &mut Input,
    fields: &mut Vec<FieldRef>,
) -> Result<(Vec<String>, u64)> {
    let path = &reader.file.name;
    // A UTF-8 byte order mark before the header is dropped, before the
    // header is split: a quoted first name then starts with its quote.
    while input.buf.len() - input.pos < BOM.len() && input.fill(reader, 1)? {}
    if input.buf[input.pos..].starts_with(BOM) {
        input.pos += BOM.len();
    }
    let header: (Vec<String>, u64) = match input.next_record(reader, fields)? {
        Some(Split::Record { end, newlines }) => {
            let names = fields
                .iter()
                .map(|f| {
                    String::from_utf8_lossy(&field_bytes(&input.buf[input.pos..], f)).into_owned()
                })
                .collect();
            input.pos += end;
            (names, 1 + newlines.max(1))
        }
        Some(Split::Malformed {
            reason, at_newline, ..
        }) => {
            return Err(Error::BadRow(Box::new(BadRow {
                path: path.clone(),
                location: Location::Line(1 + at_newline),
                column: None,
                value: None,
                reason: format!("header: {reason}"),
                raw: None,
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

/// The line of data row `row` (from 0) of a file that reads without a bad
/// row: blank lines and lines inside quoted values are counted as the read
/// counts them.
pub(super) fn line_of_row(reader: &FileReader<'_>, row: u64) -> Result<u64> {
    let mut input = Input::open(reader.file, CHUNK)?;
    let mut fields = Vec::new();
    let (_, mut line) = read_header(reader, &mut input, &mut fields)?;
    let mut seen = 0u64;
    while let Some(split) = input.next_record(reader, &mut fields)? {
        let (end, newlines, blank) = match split {
            Split::Record { end, newlines } => (end, newlines, is_blank(&fields)),
            Split::Malformed { end, newlines, .. } => (end, newlines, false),
            Split::NeedMore => break,
        };
        if !blank {
            if seen == row {
                return Ok(line);
            }
            seen += 1;
        }
        input.pos += end;
        line += newlines;
    }
    Err(Error::Invalid(format!(
        "`{}` has no row {}",
        reader.file.name.display(),
        row + 1
    )))
}

/// The column names of a CSV file's header.
pub(super) fn header(reader: &FileReader<'_>) -> Result<Vec<String>> {
    let mut input = Input::open(reader.file, 1 << 16)?;
    read_header(reader, &mut input, &mut Vec::new()).map(|(names, _)| names)
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

/// The wanted values of one record into `values` (cleared first; reused
/// from row to row, so that a row allocates nothing).
fn decode_row<'a>(
    buf: &'a [u8],
    fields: &[FieldRef],
    wanted: &[(usize, &ColumnSpec)],
    width: usize,
    null_values: &[String],
    values: &mut Vec<Value<'a>>,
) -> Result<(), RowFault> {
    values.clear();
    if fields.len() != width {
        return Err(RowFault::FieldCount(fields.len()));
    }
    for (column, (i, spec)) in wanted.iter().enumerate() {
        let f = &fields[*i];
        let value =
            parse_value(spec, field_bytes(buf, f), f.quoted, null_values).map_err(|reason| {
                RowFault::Value {
                    column,
                    field: *i,
                    reason,
                }
            })?;
        values.push(value);
    }
    Ok(())
}

fn trim_line(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

fn finish(reader: &FileReader<'_>, builders: &mut [ColumnBuilder]) -> Result<RecordBatch> {
    let mut columns: Vec<datafusion::arrow::array::ArrayRef> =
        builders.iter_mut().map(ColumnBuilder::finish).collect();
    // A file's last batch is short, and its buffers keep the capacity of a
    // whole batch: thousands of small files would hold that much each.
    if columns
        .first()
        .is_some_and(|c| c.len() * 2 < reader.batch_rows)
    {
        for column in &mut columns {
            if let Some(array) = Arc::get_mut(column) {
                array.shrink_to_fit();
            }
        }
    }
    Ok(RecordBatch::try_new(reader.layout.schema.clone(), columns)
        .map_err(datafusion::error::DataFusionError::from)?)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ingest::testing::{push_rows, source};
    use crate::ingest::{BadRowPolicy, Format, InputFile};

    /// `bytes` as the file `e.csv` in `dir` of a source of columns `id`
    /// int64, `s` string, `ts` timestamp.
    fn file_of(dir: &std::path::Path, bytes: &[u8]) -> (crate::ingest::Layout, InputFile) {
        let path = dir.join("e.csv");
        std::fs::write(&path, bytes).unwrap();
        source(
            &path,
            Format::Csv,
            r#"{ id = "int64", s = "string", ts = "timestamp" }"#,
        )
    }

    fn reader_of<'a>(layout: &'a crate::ingest::Layout, file: &'a InputFile) -> FileReader<'a> {
        FileReader {
            file,
            layout,
            batch_rows: 3,
            policy: BadRowPolicy::Fail,
            bad: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Every batch of a read of `text` (columns `id` int64, `s` string,
    /// `ts` timestamp) as rows of text, or the error, with `blocks`.
    fn read_text(text: &str, blocks: Option<Blocks>) -> std::result::Result<Vec<String>, String> {
        read_text_with(text, blocks, BadRowPolicy::Fail).map(|(rows, _)| rows)
    }

    /// [`read_text`] under `policy`, with the rows set aside (line, column,
    /// reason, raw), in line order.
    fn read_text_with(
        text: &str,
        blocks: Option<Blocks>,
        policy: BadRowPolicy,
    ) -> std::result::Result<(Vec<String>, Vec<String>), String> {
        let dir = tempfile::tempdir().unwrap();
        let (layout, file) = file_of(dir.path(), text.as_bytes());
        let reader = FileReader {
            policy,
            ..reader_of(&layout, &file)
        };
        let mut rows = Vec::new();
        let read = read_with(&reader, blocks, true, &mut |batch| {
            push_rows(&batch, &mut rows);
            true
        });
        match read {
            Ok((n, hash)) => {
                assert_eq!(n, Some(rows.len() as u64));
                // A read in blocks hashes the whole file on the way.
                let expected = blocks.map(|_| super::super::hex(&Sha256::digest(text.as_bytes())));
                assert_eq!(hash, expected);
                let mut bad = reader.bad.into_inner().unwrap();
                bad.sort_by_key(|row| row.location.number());
                let bad = bad
                    .iter()
                    .map(|b| format!("{} {:?} {} {:?}", b.location, b.column, b.reason, b.raw))
                    .collect();
                Ok((rows, bad))
            }
            Err(e) => Err(e
                .to_string()
                .replace(&file.name.display().to_string(), "e.csv")),
        }
    }

    proptest! {
        /// Cut into blocks of any size and parsed on 2 or 3 threads, a file
        /// reads as it does sequentially: the same rows in the same order,
        /// or the same first error at the same line, and the file's SHA-256
        /// computed on the way is the whole file's. Values hold quoted
        /// line ends (so that cuts fall inside quotes), escapes, CRLF, blank
        /// lines, bad values and unterminated quotes.
        #[test]
        fn blocks_read_like_a_sequential_read(
            lines in prop::collection::vec(
                (0u8..120, 0i64..1000, prop::sample::select(vec![
                    "plain", "\"a,b\"", "\"two\nlines\"", "\"x\"\"y\"", "",
                    "\"\n\n\"",
                ])),
                0..40),
            block in 1usize..64,
            threads in 2usize..4,
            crlf in any::<bool>(),
        ) {
            let end = if crlf { "\r\n" } else { "\n" };
            let mut text = format!("id,s,ts{end}");
            for (kind, id, s) in &lines {
                match kind {
                    0..=3 => text.push_str(end),
                    4 => text.push_str(&format!("x{id},{s},2026-10-01T00:00:00Z{end}")),
                    5 => text.push_str(&format!("{id},{s},not a time{end}")),
                    6 => text.push_str(&format!("{id},{s}{end}")),
                    7 => text.push_str(&format!("{id},\"open,2026-10-01T00:00:00Z{end}")),
                    _ => text.push_str(&format!("{id},{s},2026-10-01T00:00:{:02}Z{end}", id % 60)),
                }
            }
            let sequential = read_text(&text, None);
            let blocks = read_text(&text, Some(Blocks { threads, bytes: block }));
            prop_assert_eq!(blocks, sequential);
            // Under quarantine: the same good rows and the same bad rows,
            // none from a block parsed ahead and dropped.
            let quarantine = BadRowPolicy::Quarantine;
            let sequential = read_text_with(&text, None, quarantine);
            let blocks = read_text_with(&text, Some(Blocks { threads, bytes: block }), quarantine);
            prop_assert_eq!(blocks, sequential);
        }
    }

    /// The columns of [`read_any`]'s files: `a` int64 (required), `b`
    /// string, `c` float64, `d` timestamp (required), `f` bool, `g`
    /// timestamp_ms (the header's `e` not declared).
    fn many_columns() -> Vec<ColumnSpec> {
        let column = |name: &str, ty, nullable| ColumnSpec {
            name: name.into(),
            ty,
            nullable,
        };
        vec![
            column("a", ColumnType::Int64, false),
            column("b", ColumnType::String, true),
            column("c", ColumnType::Float64, true),
            column("d", ColumnType::Timestamp, false),
            column("f", ColumnType::Bool, true),
            column("g", ColumnType::TimestampMs, true),
        ]
    }

    /// A read of `text` as a file of `columns`, in batches of
    /// `batch_rows`: each batch (nulls told from empty strings), its error
    /// if any, and the rows set aside.
    fn read_any(
        text: &[u8],
        columns: Vec<ColumnSpec>,
        csv: crate::spec::CsvOptions,
        blocks: Option<Blocks>,
        fast: bool,
        policy: BadRowPolicy,
        batch_rows: usize,
    ) -> (Vec<String>, Option<String>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let (_, file) = file_of(dir.path(), text);
        let layout = crate::ingest::Layout::from_parts("e".into(), columns, csv);
        let reader = FileReader {
            policy,
            batch_rows,
            ..reader_of(&layout, &file)
        };
        let mut rows = Vec::new();
        let read = read_with(&reader, blocks, fast, &mut |batch| {
            assert!(batch.num_rows() <= batch_rows);
            rows.push(format!("{:?}", batch.columns()));
            true
        });
        let mut bad = reader.bad.into_inner().unwrap();
        bad.sort_by_key(|row| row.location.number());
        let bad = bad
            .iter()
            .map(|b| {
                format!(
                    "{} {:?} {} {:?} {:?}",
                    b.location, b.column, b.reason, b.value, b.raw
                )
            })
            .collect();
        let path = file.name.display().to_string();
        let error = read.err().map(|e| e.to_string().replace(&path, "e.csv"));
        (rows, error, bad)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        /// Runs of plain records parsed a column at a time read as the
        /// record-by-record parse reads them: the same rows in the same
        /// batches, the same first error, the same rows set aside with their
        /// lines, sequentially and in blocks. Records mix plain values with
        /// quoted ones, nulls (empty and named), bad values in each column,
        /// too few and too many fields, blank lines, CRLF, UTF-8 and long
        /// values (a run's chunk is 64 bytes).
        #[test]
        fn fast_runs_read_as_records_one_by_one(
            records in prop::collection::vec(
                (0u8..16, prop::collection::vec(0usize..40, 7)),
                0..60),
            delimiter in prop::sample::select(vec![b',', b';', b'\t']),
            nulls in prop::sample::select(vec![vec![""], vec!["", "NULL"], vec!["NA"]]),
            crlf in any::<bool>(),
            batch_rows in 1usize..9,
            block in prop::option::of(1usize..200),
            quarantine in any::<bool>(),
        ) {
            let d = char::from(delimiter);
            let end = if crlf { "\r\n" } else { "\n" };
            // A few values a column may hold, the good one first; the
            // header ends with the string column (a `\r` before a line end
            // is no part of its last value).
            let palette: [&[&str]; 7] = [
                &["1", "-42", "9007199254740993", "", "NULL", "x1", "\"7\"", "NA"],
                &["1.5", "-0.0", "", "NULL", "1e308", "nan", "inf", "NA"],
                &["2026-10-01T00:00:00Z", "2026-10-01 12:00:00.5+02:00", "", "NULL",
                  "not a time", "2300-01-01T00:00:00Z", "NA"],
                &["whatever", "", "\"e\"", "NULL", "x,y"],
                &["true", "0", "FALSE", "", "NULL", "maybe", "NA"],
                &["1700000000000", "", "-5", "NULL", "1.5", "NA"],
                &["s", "", "NULL", "é ü", "\"q,\"\"x\"", "NA", &"long".repeat(30), "a\rb", "z\r"],
            ];
            let mut text = ["a", "c", "d", "e", "f", "g", "b"].join(&d.to_string());
            text.push_str(end);
            for (kind, picks) in &records {
                let mut fields: Vec<&str> = picks
                    .iter()
                    .zip(&palette)
                    .map(|(&p, values)| match (kind, p) {
                        // Mostly good values: runs long enough to matter.
                        (8.., _) | (_, ..30) => values[0],
                        _ => values[p % values.len()],
                    })
                    .collect();
                match kind {
                    0 => fields.clear(),
                    1 => { fields.pop(); }
                    2 => fields.push("extra"),
                    _ => {}
                }
                let line = fields.join(&d.to_string());
                text.push_str(&line.replace(',', &d.to_string()));
                text.push_str(end);
            }
            let csv = crate::spec::CsvOptions {
                delimiter,
                null_values: nulls.iter().map(|n| n.to_string()).collect(),
            };
            let policy = match quarantine {
                true => BadRowPolicy::Quarantine,
                false => BadRowPolicy::Fail,
            };
            let blocks = block.map(|bytes| Blocks { threads: 2, bytes });
            let read = |fast| {
                read_any(text.as_bytes(), many_columns(), csv.clone(), blocks, fast, policy, batch_rows)
            };
            let (slow, fast) = (read(false), read(true));
            prop_assert_eq!(fast, slow);
        }

        /// A file of one column reads alike both ways too: blank lines
        /// (with CRLF, a lone `\r`) are skipped, not empty values.
        #[test]
        fn one_column_files_read_as_records_one_by_one(
            lines in prop::collection::vec(
                prop::sample::select(vec!["1", "", "\r", "x", "NULL", "\"q\""]), 0..40),
            crlf in any::<bool>(),
            string in any::<bool>(),
            null_values in prop::sample::select(vec![vec![""], vec!["NULL"]]),
            batch_rows in 1usize..5,
        ) {
            let end = if crlf { "\r\n" } else { "\n" };
            let text = std::iter::once("a")
                .chain(lines.iter().copied())
                .map(|line| format!("{line}{end}"))
                .collect::<String>();
            let ty = if string { ColumnType::String } else { ColumnType::Int64 };
            let columns = vec![ColumnSpec { name: "a".into(), ty, nullable: true }];
            let csv = crate::spec::CsvOptions {
                delimiter: b',',
                null_values: null_values.iter().map(|n| n.to_string()).collect(),
            };
            let read = |fast| {
                read_any(text.as_bytes(), columns.clone(), csv.clone(), None, fast,
                         BadRowPolicy::Quarantine, batch_rows)
            };
            prop_assert_eq!(read(true), read(false));
        }
    }

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
    fn fields_of_every_length_split_alike() {
        // Around the length where the search for a field's end changes
        // from a plain loop to a vectorised one.
        for n in 0..70 {
            let long = "x".repeat(n);
            let text = format!("{long},{long}\n{long}\r\n{long},y");
            assert_eq!(
                split_all(&text),
                vec![vec![&*long, &*long], vec![&*long], vec![&*long, "y"]],
                "fields of {n} bytes"
            );
        }
    }

    #[test]
    fn read_more_appends_what_remains_and_says_when_the_file_ended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bytes");
        let bytes: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        std::fs::write(&path, &bytes).unwrap();
        for skip in [0usize, 1, 999, 1000] {
            for n in [1usize, 7, 1000 - skip, 1001 - skip, 4096] {
                let n = n.max(1);
                let mut file = std::fs::File::open(&path).unwrap();
                std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(skip as u64)).unwrap();
                let mut buf = b"head".to_vec();
                let ended = read_more(&mut file, &mut buf, n).unwrap();
                let got = n.min(1000 - skip);
                assert_eq!(&buf[..4], b"head");
                assert_eq!(&buf[4..], &bytes[skip..skip + got], "skip {skip}, n {n}");
                assert_eq!(ended, got < n, "skip {skip}, n {n}");
            }
        }
    }

    proptest::proptest! {
        /// The word-at-a-time search finds the first delimiter or line end
        /// a byte-by-byte one finds, among bytes around them and with the
        /// high bit set, at any length.
        #[test]
        fn field_ends_found_as_byte_by_byte(
            bytes in proptest::collection::vec(
                proptest::sample::select(b",;\n\t\x00\x01\x0b\x2b\x2d\x80\x8a\xac\xffx".to_vec()), 0..80),
            delimiter in proptest::sample::select(b",;\t".to_vec()),
            plain in 0usize..80,
        ) {
            // A run of plain bytes first, so that the ends fall anywhere.
            let mut text = vec![b'x'; plain];
            text.extend(bytes);
            proptest::prop_assert_eq!(
                find_end(&text, delimiter),
                text.iter().position(|&b| b == delimiter || b == b'\n')
            );
        }
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
    fn an_unterminated_quote_is_read_in_linear_time_and_named_where_it_begins() {
        // 40 MB after an opening quote on line 3: fills of 8, 16, 32 and
        // 64 MB (growing with what is held), not five of 8 MB each rescanning
        // the record from its start.
        let dir = tempfile::tempdir().unwrap();
        let mut text = b"id,s,ts\n1,a,2026-10-01T00:00:00Z\n2,\"".to_vec();
        text.resize(text.len() + (40 << 20), b'x');
        text.extend_from_slice(b"\n3,c,2026-10-01T00:00:00Z\n");
        let (layout, file) = file_of(dir.path(), &text);
        let reader = reader_of(&layout, &file);
        let mut input = Input::open(&file, CHUNK).unwrap();
        let mut fields = Vec::new();
        let (header, _) = read_header(&reader, &mut input, &mut fields).unwrap();
        let records = Records {
            reader: &reader,
            wanted: reader.locate_columns(&header).unwrap(),
            width: header.len(),
            fast: true,
        };
        let err = read_sequential(&records, &mut input, 2, 0, &mut |_| true).unwrap_err();
        let Error::BadRow(row) = err else {
            panic!("{err}")
        };
        assert_eq!(row.location, Location::Line(3));
        assert!(row.reason.contains("unterminated"), "{}", row.reason);
        assert!(input.fills <= 4, "{} fills", input.fills);
    }

    #[test]
    fn a_header_spanning_lines_moves_the_data_lines() {
        let err = read_text("id,s,ts,\"x\ny\"\n1,a,bad,z\n", None).unwrap_err();
        assert!(err.contains("line 3"), "{err}");
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
        assert_eq!(parse_i64(b"12345678"), Some(12_345_678));
        assert_eq!(
            parse_i64(b"-999999999999999999"),
            Some(-999_999_999_999_999_999)
        );
        assert_eq!(parse_i64(b"1234567:"), None);
        assert_eq!(parse_i64(b"123456/8"), None);
    }

    proptest::proptest! {
        /// The word-at-a-time path reads what a digit-by-digit reading
        /// does, and rejects what it rejects: any integer, and digits with
        /// one byte changed (`/` and `:` border `0` and `9`; a digit's byte
        /// plus or minus 16 or 128).
        #[test]
        fn integers_read_as_digit_by_digit(
            n in proptest::prop_oneof![
                proptest::prelude::any::<i64>(),
                -1_000_000_000_000_000_000i64..1_000_000_000_000_000_000,
                -1000i64..1000,
            ],
            sign in 0u8..3,
            zeros in 0usize..4,
            digits in "[0-9]{1,20}",
            at in proptest::prelude::any::<usize>(),
            other in proptest::sample::select(b"0123456789/:+-\x20@I\xb0\xb9".to_vec()),
        ) {
            // A run of digits with one byte replaced, anywhere.
            let mut text = digits.into_bytes();
            let at = at % text.len();
            text[at] = other;
            let digits = format!("{}{}", "0".repeat(zeros), n.unsigned_abs());
            let signed = match (n < 0, sign) {
                (true, _) => format!("-{digits}"),
                (false, 0) => digits,
                (false, 1) => format!("+{digits}"),
                (false, _) => format!("-{digits}"),
            };
            let expected = if n < 0 || sign != 2 { Some(n) } else { Some(n.wrapping_neg()) };
            proptest::prop_assert_eq!(parse_i64(signed.as_bytes()), expected);
            proptest::prop_assert_eq!(parse_i64(&text), reference_i64(&text));
        }
    }

    /// Digit by digit, as `i128`: a decimal integer in `i64`'s range.
    fn reference_i64(s: &[u8]) -> Option<i64> {
        let (negative, digits) = match s.split_first()? {
            (b'-', rest) => (true, rest),
            (b'+', rest) => (false, rest),
            _ => (false, s),
        };
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut acc: i128 = 0;
        for &b in digits {
            acc = (acc * 10 + i128::from(b - b'0')).min(1 << 70);
        }
        i64::try_from(if negative { -acc } else { acc }).ok()
    }
}
