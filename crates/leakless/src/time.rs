//! UTC instants as integer microseconds since the Unix epoch.
//!
//! Invariants:
//! - every instant inside leakless is an `i64` count of microseconds since
//!   1970-01-01T00:00:00Z; there is no local time zone anywhere;
//! - every duration is an exact number of microseconds (24 h is
//!   86,400,000,000 µs), never a calendar unit;
//! - parsing never panics: malformed text is `None`.

/// Microseconds in one second.
pub const MICROS_PER_SECOND: i64 = 1_000_000;
/// Microseconds in one (exact, 86,400 s) day.
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// The earliest instant an input may hold: 1900-01-01T00:00:00Z.
pub const EARLIEST: i64 = -2_208_988_800 * MICROS_PER_SECOND;
/// The first instant past the latest an input may hold: 2201-01-01T00:00:00Z.
pub const PAST_LATEST: i64 = 7_289_654_400 * MICROS_PER_SECOND;
/// Why a time outside `EARLIEST..PAST_LATEST` is a bad value.
pub const OUT_OF_RANGE: &str =
    "a time outside the years 1900 to 2200 (an epoch in the wrong unit, or a placeholder?)";

/// Whether an input's instant is plausible: in the years 1900 to 2200.
/// Milliseconds read as seconds, or a sentinel such as 9999-12-31, are not.
///
/// ```
/// use leakless::time::{in_range, parse_timestamp_micros};
/// assert!(in_range(parse_timestamp_micros(b"1900-01-01T00:00:00Z").unwrap()));
/// assert!(in_range(parse_timestamp_micros(b"2200-12-31T23:59:59.999999Z").unwrap()));
/// assert!(!in_range(parse_timestamp_micros(b"1899-12-31T23:59:59.999999Z").unwrap()));
/// assert!(!in_range(parse_timestamp_micros(b"2201-01-01T00:00:00Z").unwrap()));
/// ```
pub fn in_range(micros: i64) -> bool {
    (EARLIEST..PAST_LATEST).contains(&micros)
}

/// Parses an RFC 3339 / ISO 8601 timestamp into UTC microseconds.
///
/// Accepted: `YYYY-MM-DD` then `T`, `t` or a space, then `HH:MM:SS`, an
/// optional fraction of 1 to 9 digits, and an optional `Z`, `z`, `+HH:MM` or
/// `-HH:MM`. Without an offset the time is UTC. Digits past the microsecond
/// are dropped (the instant is floored to the microsecond).
///
/// ```
/// use leakless::time::parse_timestamp_micros;
/// assert_eq!(parse_timestamp_micros(b"1970-01-01T00:00:01Z"), Some(1_000_000));
/// assert_eq!(parse_timestamp_micros(b"1970-01-01 01:00:00+01:00"), Some(0));
/// assert_eq!(parse_timestamp_micros(b"1970-01-01 00:00:00.0000019"), Some(1));
/// assert_eq!(parse_timestamp_micros(b"1970-02-30 00:00:00"), None);
/// ```
pub fn parse_timestamp_micros(s: &[u8]) -> Option<i64> {
    parse_timestamp(s)
}

/// Midnight UTC of a date `YYYY-MM-DD` (UTC µs), `None` for anything else.
pub fn parse_date(date: &str) -> Option<i64> {
    match date.len() {
        10 => parse_timestamp(format!("{date}T00:00:00Z").as_bytes()),
        _ => None,
    }
}

fn parse_timestamp(s: &[u8]) -> Option<i64> {
    let head = s.first_chunk::<19>()?;
    // The fourteen digits of `YYYY-MM-DD HH:MM:SS` checked and read
    // together, without a branch per byte (timestamps were a tenth of the
    // CSV parse's time read digit by digit).
    const DIGITS: [usize; 14] = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
    let d = DIGITS.map(|i| head[i].wrapping_sub(b'0'));
    if d.iter().fold(0, |m, &x| m.max(x)) > 9
        || head[4] != b'-'
        || head[7] != b'-'
        || !matches!(head[10], b'T' | b't' | b' ')
        || head[13] != b':'
        || head[16] != b':'
    {
        return None;
    }
    let two = |i: usize| i64::from(d[i]) * 10 + i64::from(d[i + 1]);
    let (year, month, day) = (two(0) * 100 + two(2), two(4), two(6));
    let (hour, minute, second) = (two(8), two(10), two(12));
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut micros = 0i64;
    if let Some((&b'.', fraction)) = rest.split_first() {
        let n = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        for (i, &b) in fraction[..n.min(6)].iter().enumerate() {
            micros += i64::from(b - b'0') * 10i64.pow(5 - i as u32);
        }
        rest = &fraction[n..];
    }
    let offset_seconds = match rest {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = digits(&[*h1, *h2])?;
            let m = digits(&[*m1, *m2])?;
            if h > 23 || m > 59 {
                return None;
            }
            let o = h * 3600 + m * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_seconds;
    Some(seconds * MICROS_PER_SECOND + micros)
}

/// The UTC calendar date (`YYYY-MM-DD`) of an instant.
///
/// ```
/// use leakless::time::utc_date;
/// assert_eq!(utc_date(0), "1970-01-01");
/// assert_eq!(utc_date(-1), "1969-12-31");
/// ```
pub fn utc_date(micros: i64) -> String {
    let (y, m, d) = civil_from_days(micros.div_euclid(MICROS_PER_DAY));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Formats an instant as RFC 3339 in UTC with microseconds, e.g.
/// `2026-10-01T00:00:00.000000Z`.
pub fn format_rfc3339(micros: i64) -> String {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let in_day = micros.rem_euclid(MICROS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let secs = in_day / MICROS_PER_SECOND;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        in_day % MICROS_PER_SECOND
    )
}

fn digits(s: &[u8]) -> Option<i64> {
    s.iter().try_fold(0i64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
#[inline]
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    // Years 0 to 9999 (every year a timestamp can spell) count from a
    // non-negative era: unsigned division by constants, no floor division.
    if (-1..=9999).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d) {
        let y = (y + 400) as u64;
        let (era, yoe) = (y / 400, y % 400);
        let mp = if m > 2 { m - 3 } else { m + 9 } as u64;
        let doy = (153 * mp + 2) / 5 + d as u64 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return (era * 146_097 + doe) as i64 - 719_468 - 146_097;
    }
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Option<&str>) {
        let got = parse_timestamp_micros(text.as_bytes()).map(format_rfc3339);
        assert_eq!(got.as_deref(), expected, "parsing {text:?}");
    }

    #[test]
    fn parses_the_documented_forms() {
        check("2026-10-01T12:30:00Z", Some("2026-10-01T12:30:00.000000Z"));
        check("2026-10-01 12:30:00", Some("2026-10-01T12:30:00.000000Z"));
        check("2026-10-01t12:30:00z", Some("2026-10-01T12:30:00.000000Z"));
        check("2026-10-01T12:30:00.5", Some("2026-10-01T12:30:00.500000Z"));
        check(
            "2026-10-01T12:30:00.123456789Z",
            Some("2026-10-01T12:30:00.123456Z"),
        );
        check(
            "2026-10-01T00:30:00+01:00",
            Some("2026-09-30T23:30:00.000000Z"),
        );
        check(
            "2026-09-30T23:30:00-01:30",
            Some("2026-10-01T01:00:00.000000Z"),
        );
        check("2024-02-29 00:00:00", Some("2024-02-29T00:00:00.000000Z"));
        check(
            "1969-12-31 23:59:59.999999",
            Some("1969-12-31T23:59:59.999999Z"),
        );
    }

    #[test]
    fn rejects_what_is_not_a_timestamp() {
        for bad in [
            "",
            "2026-10-01",
            "2026-13-01 00:00:00",
            "2023-02-29 00:00:00",
            "2026-10-01 24:00:00",
            "2026-10-01 00:00:60",
            "2026-10-01 00:00:00.",
            "2026-10-01 00:00:00.1234567890",
            "2026-10-01 00:00:00+0100",
            "2026-10-01 00:00:00 UTC",
            "2026-10-01X00:00:00",
            "20x6-10-01 00:00:00",
            "1700000000",
        ] {
            check(bad, None);
        }
    }

    /// A timestamp read from its definition: fields split at the
    /// separators, each parsed as a decimal number, days counted year by
    /// year and month by month.
    fn reference_micros(s: &[u8]) -> Option<i64> {
        let text = std::str::from_utf8(s).ok()?;
        let field = |a: usize, b: usize| -> Option<i64> {
            let part = text.get(a..b)?;
            part.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| part.parse().ok())?
        };
        let (year, month, day) = (field(0, 4)?, field(5, 7)?, field(8, 10)?);
        let (hour, minute, second) = (field(11, 13)?, field(14, 16)?, field(17, 19)?);
        let separators = [(4, "-"), (7, "-"), (13, ":"), (16, ":")];
        if separators
            .iter()
            .any(|&(i, c)| text.get(i..i + 1) != Some(c))
            || !matches!(text.get(10..11), Some("T" | "t" | " "))
        {
            return None;
        }
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let month_days = |y: i64, m: i64| match m {
            2 => 28 + i64::from(leap(y)),
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        if !(1..=12).contains(&month) || !(1..=month_days(year, month)).contains(&day) {
            return None;
        }
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        let year_days = |y: i64| 365 + i64::from(leap(y));
        let mut days: i64 = match year >= 1970 {
            true => (1970..year).map(year_days).sum(),
            false => -(year..1970).map(year_days).sum::<i64>(),
        };
        days += (1..month).map(|m| month_days(year, m)).sum::<i64>() + day - 1;
        let (micros, offset) = match &text[19..] {
            "" | "Z" => (0, 0),
            ".5" => (500_000, 0),
            ".1234567" => (123_456, 0),
            "+01:30" => (0, 5400),
            _ => return None,
        };
        Some(((days * 86_400 + hour * 3600 + minute * 60 + second) - offset) * 1_000_000 + micros)
    }

    proptest::proptest! {
        /// The fourteen digits read at once: on dates of any four-digit
        /// year, fields of any two digits (most out of range), one byte
        /// replaced anywhere by a digit, a separator or a byte around the
        /// digits, and a few tails.
        #[test]
        fn timestamps_read_as_from_their_definition(
            fields in (0i64..10_000, 0i64..14, 0i64..33, 0i64..26, 0i64..62, 0i64..62),
            separator in proptest::sample::select(vec![b'T', b't', b' ']),
            replace in proptest::option::of((0usize..19, proptest::sample::select(
                b"0123456789-: Tt/;\x7f\x80\xb0".to_vec(),
            ))),
            tail in proptest::sample::select(vec!["", "Z", ".5", ".1234567", "+01:30"]),
        ) {
            let (year, month, day, hour, minute, second) = fields;
            let mut text = format!(
                "{year:04}-{month:02}-{day:02}{}{hour:02}:{minute:02}:{second:02}",
                separator as char
            )
            .into_bytes();
            if let Some((at, byte)) = replace {
                text[at] = byte;
            }
            text.extend_from_slice(tail.as_bytes());
            proptest::prop_assert_eq!(parse_timestamp_micros(&text), reference_micros(&text));
        }
    }

    #[test]
    fn civil_round_trip() {
        for days in -800_000..800_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
