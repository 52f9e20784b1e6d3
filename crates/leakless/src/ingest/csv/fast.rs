//! The CSV reader's fast path: a run of plain records parsed a column at
//! a time.
//!
//! A run is the records at the start of a buffer that need none of the
//! record-by-record parse's care: no `"` anywhere, each ending in a line
//! end, each exactly the header's width, none a blank line. Their field
//! ends are found 64 bytes at a time with vector compares (a bit per byte
//! for the delimiter and the line end), then each wanted column is parsed
//! down the run with the same `is_null` and `parse_word` (or UTF-8 check)
//! as the record-by-record parse's `parse_value`. The run stops before the
//! first record that is not plain or holds a value that does not parse;
//! that record goes through the record-by-record parse (`Records::parse`),
//! which reports it, sets it aside or reads it (a quoted value), so rows,
//! values, errors and line numbers are that parse's by construction. Each
//! record of a run is one line.

use super::{eight_digits, is_null, parse_word};
use crate::ingest::ColumnSpec;
use crate::ingest::columns::ColumnBuilder;
use crate::spec::ColumnType;

/// Records a run holds at most: its values stay in the cache between the
/// parse and the builders.
pub(super) const RUN: usize = 4096;

/// Field ends a run holds at most (a file of a thousand columns takes
/// runs of a thousand records).
pub(super) const RUN_FIELDS: usize = 1 << 20;

/// Field ends and parsed values of a run, kept for the next runs of the
/// same buffer for their capacity.
#[derive(Default)]
pub(super) struct Scratch<'a> {
    /// The start of each record, then the end of the last.
    starts: Vec<u32>,
    /// The end of each field of each record, `width` a record (a last
    /// field's `\r` before the line end left out).
    ends: Vec<u32>,
    /// Each wanted column's values.
    columns: Vec<Column<'a>>,
}

/// One wanted column's values in a run: words (`parse_word`) or texts.
#[derive(Default)]
struct Column<'a> {
    words: Vec<i64>,
    texts: Vec<&'a str>,
    /// Each value's validity, once a null was seen (`nulls`).
    valid: Vec<bool>,
    nulls: bool,
}

impl<'a> Column<'a> {
    fn clear(&mut self) {
        self.words.clear();
        self.texts.clear();
        self.valid.clear();
        self.nulls = false;
    }

    /// Records whether the value of record `record` is null.
    fn null(&mut self, record: usize, null: bool) {
        if null && !self.nulls {
            self.nulls = true;
            self.valid.resize(record, true);
        }
        if self.nulls {
            self.valid.push(!null);
        }
    }
}

/// Parses the run at the start of `buf` (at most `max` records) into
/// `builders`; returns its records and bytes (none: the first record is
/// not plain, or a value of it does not parse).
#[allow(clippy::too_many_arguments)]
pub(super) fn run<'a>(
    buf: &'a [u8],
    delimiter: u8,
    width: usize,
    wanted: &[(usize, &ColumnSpec)],
    null_values: &[String],
    builders: &mut [ColumnBuilder],
    max: usize,
    scratch: &mut Scratch<'a>,
) -> (usize, usize) {
    let Scratch {
        starts,
        ends,
        columns,
    } = scratch;
    let mut records = split(buf, delimiter, width, max, starts, ends);
    columns.resize_with(wanted.len(), Column::default);
    for (&(field, spec), column) in wanted.iter().zip(columns.iter_mut()) {
        column.clear();
        let span = |record: usize| {
            let start = match field {
                0 => starts[record],
                _ => ends[record * width + field - 1] + 1,
            };
            start as usize..ends[record * width + field] as usize
        };
        // A value that does not parse cuts the run before its record (the
        // record-by-record parse reads it); the columns before this one
        // parsed past it and are cut when committed.
        for record in 0..records {
            let span = span(record);
            let bytes = &buf[span.clone()];
            let Ok(null) = is_null(spec, bytes, false, null_values) else {
                records = record;
                break;
            };
            column.null(record, null);
            let parsed = match (spec.ty, null) {
                (ColumnType::String, true) => {
                    column.texts.push("");
                    true
                }
                (ColumnType::String, false) => std::str::from_utf8(bytes)
                    .map(|text| column.texts.push(text))
                    .is_ok(),
                (_, true) => {
                    column.words.push(0);
                    true
                }
                (ColumnType::Int64, false) => int_in(buf, span.start, span.end)
                    .or_else(|| parse_word(ColumnType::Int64, bytes).ok())
                    .map(|word| column.words.push(word))
                    .is_some(),
                (ty, false) => parse_word(ty, bytes)
                    .map(|word| column.words.push(word))
                    .is_ok(),
            };
            if !parsed {
                records = record;
                break;
            }
        }
    }
    if records == 0 {
        return (0, 0);
    }
    for ((builder, column), &(_, spec)) in builders.iter_mut().zip(columns.iter()).zip(wanted) {
        let nulls = column.nulls.then(|| &column.valid[..records]);
        match spec.ty {
            ColumnType::String => builder.extend_texts(&column.texts[..records], nulls),
            _ => builder.extend_words(&column.words[..records], nulls),
        }
    }
    // Where the record after the last kept starts.
    (records, starts[records] as usize)
}

/// `buf[start..end]` as an unsigned integer of 1 to 16 digits, read in one
/// or two words from the bytes that end there, the bytes before `start`
/// counted as `0`s (no branch per digit: the marketplace's ids are 5 to 12
/// digits); `None` for anything else (a sign, a non-digit, a value near
/// the buffer's start), which `parse_i64` then reads.
fn int_in(buf: &[u8], start: usize, end: usize) -> Option<i64> {
    let len = end.checked_sub(start)?;
    if !(1..=16).contains(&len) || end < 16 {
        return None;
    }
    // The `n` (1 to 8) digits that end at `to`.
    let digits = |to: usize, n: usize| {
        let raw = u64::from_le_bytes(buf[to - 8..to].try_into().ok()?);
        let kept = u64::MAX << (8 * (8 - n));
        eight_digits(raw & kept | 0x3030_3030_3030_3030 & !kept)
    };
    Some(match len {
        ..=8 => i64::from(digits(end, len)?),
        _ => i64::from(digits(end - 8, len - 8)?) * 100_000_000 + i64::from(digits(end, 8)?),
    })
}

/// Finds the plain records at the start of `buf`, at most `max`: each
/// one's start in `starts` (then the start after the last) and its `width`
/// field ends in `ends`. Returns their number.
fn split(
    buf: &[u8],
    delimiter: u8,
    width: usize,
    max: usize,
    starts: &mut Vec<u32>,
    ends: &mut Vec<u32>,
) -> usize {
    starts.clear();
    ends.clear();
    // Positions are u32: a run never looks further.
    let buf = &buf[..buf.len().min(u32::MAX as usize - 64)];
    let (mut records, mut done) = (0, 0);
    let (mut fields, mut field_start) = (0, 0);
    let mut base = 0;
    while base < buf.len() && records < max {
        let chunk = &buf[base..buf.len().min(base + 64)];
        let Masks {
            delimiters,
            newlines,
            quotes,
        } = masks(chunk, delimiter);
        // Bits below the first quote only: the record holding it is not
        // plain.
        let below_quote = match quotes {
            0 => u64::MAX,
            q => (1u64 << q.trailing_zeros()) - 1,
        };
        let mut bits = (delimiters | newlines) & below_quote;
        while bits != 0 {
            let at = bits.trailing_zeros();
            bits &= bits - 1;
            let p = base + at as usize;
            fields += 1;
            if (newlines >> at) & 1 == 0 {
                if fields == width {
                    // Too many fields.
                    return truncate(records, done, width, starts, ends);
                }
                ends.push(p as u32);
                field_start = p + 1;
                continue;
            }
            let end = match p > field_start && buf[p - 1] == b'\r' {
                true => p - 1,
                false => p,
            };
            // A blank line (`\r` before its line end or not): skipped by
            // the record-by-record parse, never a row.
            if fields != width || (width == 1 && end == field_start) {
                return truncate(records, done, width, starts, ends);
            }
            ends.push(end as u32);
            starts.push(done as u32);
            records += 1;
            done = p + 1;
            (fields, field_start) = (0, done);
            if records == max {
                return truncate(records, done, width, starts, ends);
            }
        }
        if quotes != 0 {
            break;
        }
        base += 64;
    }
    truncate(records, done, width, starts, ends)
}

/// Keeps the first `records` records' starts and ends (those of a record
/// cut short are dropped), then the start after the last.
fn truncate(
    records: usize,
    done: usize,
    width: usize,
    starts: &mut Vec<u32>,
    ends: &mut Vec<u32>,
) -> usize {
    ends.truncate(records * width);
    starts.truncate(records);
    starts.push(done as u32);
    records
}

/// A bit per byte of a chunk of up to 64 bytes (bit `i` for byte `i`).
#[derive(Debug, PartialEq)]
struct Masks {
    delimiters: u64,
    newlines: u64,
    quotes: u64,
}

/// [`Masks`] of `chunk`, with SSE2 (part of every x86-64 processor).
#[cfg(target_arch = "x86_64")]
fn masks(chunk: &[u8], delimiter: u8) -> Masks {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    if chunk.len() < 64 {
        return masks_bytewise(chunk, delimiter);
    }
    let mut out = Masks {
        delimiters: 0,
        newlines: 0,
        quotes: 0,
    };
    // SAFETY: SSE2 is in every x86-64 processor; each load reads 16 bytes
    // within `chunk`, which holds 64.
    unsafe {
        let (d, n, q) = (
            _mm_set1_epi8(delimiter as i8),
            _mm_set1_epi8(b'\n' as i8),
            _mm_set1_epi8(b'"' as i8),
        );
        for i in 0..4 {
            let v = _mm_loadu_si128(chunk.as_ptr().add(16 * i).cast());
            let bits = |needle| u64::from(_mm_movemask_epi8(_mm_cmpeq_epi8(v, needle)) as u16);
            out.delimiters |= bits(d) << (16 * i);
            out.newlines |= bits(n) << (16 * i);
            out.quotes |= bits(q) << (16 * i);
        }
    }
    out
}

#[cfg(not(target_arch = "x86_64"))]
fn masks(chunk: &[u8], delimiter: u8) -> Masks {
    masks_bytewise(chunk, delimiter)
}

/// [`Masks`] a byte at a time.
fn masks_bytewise(chunk: &[u8], delimiter: u8) -> Masks {
    let bit = |needle: u8| {
        chunk
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == needle)
            .fold(0u64, |m, (i, _)| m | 1 << i)
    };
    Masks {
        delimiters: bit(delimiter),
        newlines: bit(b'\n'),
        quotes: bit(b'"'),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The vector masks are the byte-by-byte ones, for any bytes and
        /// delimiter.
        #[test]
        fn vector_masks_are_bytewise(
            bytes in prop::collection::vec(
                prop::sample::select(vec![b'a', b',', b'\n', b'"', b';', b'\r', 0, 0x80, 0xff]),
                64),
            delimiter in prop::sample::select(vec![b',', b';', 0, b'a']),
        ) {
            prop_assert_eq!(masks(&bytes, delimiter), masks_bytewise(&bytes, delimiter));
        }
    }

    proptest! {
        /// An integer read in words is the integer read digit by digit,
        /// wherever it lies in the buffer and whatever precedes it.
        #[test]
        fn integers_in_words_read_as_digit_by_digit(
            before in prop::collection::vec(
                prop::sample::select(vec![b'0', b'7', b',', b'-', b'x', 0xff]), 0..24),
            digits in "[0-9]{0,20}",
            mixed in prop::collection::vec(
                prop::sample::select(vec![b'0', b'1', b'5', b'9', b'-', b'+', b'a', b'/', b':']), 0..20),
            only_digits in any::<bool>(),
            after in prop::collection::vec(any::<u8>(), 0..4),
        ) {
            let value = if only_digits { digits.into_bytes() } else { mixed };
            let buf: Vec<u8> = before.iter().chain(&value).chain(&after).copied().collect();
            let (start, end) = (before.len(), before.len() + value.len());
            let words = int_in(&buf, start, end);
            if let Some(n) = words {
                prop_assert_eq!(Some(n), super::super::parse_i64(&value));
            }
            // Every string of 1 to 16 digits far enough in is read in words.
            let digits = (1..=16).contains(&value.len()) && value.iter().all(u8::is_ascii_digit);
            prop_assert_eq!(words.is_some(), digits && end >= 16);
        }
    }

    /// The fields `split` finds, as text, and the bytes it took.
    fn split_text(text: &str, width: usize, max: usize) -> (Vec<Vec<String>>, usize) {
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        let records = split(text.as_bytes(), b',', width, max, &mut starts, &mut ends);
        let bytes = starts[records] as usize;
        let rows = (0..records)
            .map(|r| {
                (0..width)
                    .map(|f| {
                        let start = match f {
                            0 => starts[r],
                            _ => ends[r * width + f - 1] + 1,
                        } as usize;
                        text[start..ends[r * width + f] as usize].to_owned()
                    })
                    .collect()
            })
            .collect();
        (rows, bytes)
    }

    #[test]
    fn a_run_stops_before_the_first_record_that_is_not_plain() {
        let long = "x".repeat(70);
        let text = format!("a,{long},c\r\n1,2,3\n4,\"5\",6\n7,8,9\n");
        let (rows, bytes) = split_text(&text, 3, 10);
        assert_eq!(rows, vec![vec!["a", &long, "c"], vec!["1", "2", "3"]]);
        assert_eq!(&text[bytes..], "4,\"5\",6\n7,8,9\n");
        // Too few fields, too many, a blank line, no line end yet.
        for rest in ["1,2\n", "1,2,3,4\n", "\n", "1,2,3"] {
            let text = format!("a,b,c\n{rest}d,e,f\n");
            assert_eq!(
                split_text(&text, 3, 10),
                (vec![vec!["a".into(), "b".into(), "c".into()]], 6)
            );
        }
        assert_eq!(split_text("a,b\nc,d\n", 2, 1).1, 4);
        assert_eq!(split_text("a\n\nb\n", 1, 10).1, 2);
        // A `\r` before the line end is not part of the last field.
        assert_eq!(
            split_text("a,\r\n", 2, 10).0,
            vec![vec!["a".to_owned(), "".into()]]
        );
    }
}
