//! Timestamps on the wire: JS `Date.toISOString()` form out
//! (`2024-05-01T12:00:00.123Z`), ISO strings or epoch seconds in.
//!
//! A few lines of civil-calendar arithmetic (Howard Hinnant's
//! days-from-civil algorithms) replace a date crate: the agent binary is
//! statically linked and only needs UTC conversion.

use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What JS decodes for "time unknown": FileInfo dates must never be null.
pub const EPOCH_ISO: &str = "1970-01-01T00:00:00.000Z";

const MS_PER_DAY: i64 = 86_400_000;

/// A point in time as seconds and nanoseconds since the Unix epoch;
/// `nanos` is always in `0..1_000_000_000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Timestamp {
    /// Normalizes a (secs, nsec) pair as `stat` reports it.
    pub fn from_parts(secs: i64, nsec: i64) -> Self {
        let secs = secs.saturating_add(nsec.div_euclid(1_000_000_000));
        let nanos = nsec.rem_euclid(1_000_000_000) as u32;
        Self { secs, nanos }
    }

    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self::from_parts(
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                i64::from(d.subsec_nanos()),
            ),
            Err(before) => {
                let d = before.duration();
                // A file system can report any i64 seconds; never overflow.
                let secs = i64::try_from(d.as_secs()).map_or(i64::MIN, |s| -s);
                Self::from_parts(secs, -i64::from(d.subsec_nanos()))
            }
        }
    }

    pub fn to_system_time(self) -> Option<SystemTime> {
        let nanos = Duration::from_nanos(u64::from(self.nanos));
        if self.secs >= 0 {
            UNIX_EPOCH.checked_add(Duration::from_secs(self.secs as u64) + nanos)
        } else {
            UNIX_EPOCH
                .checked_sub(Duration::from_secs(self.secs.unsigned_abs()))?
                .checked_add(nanos)
        }
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`, truncated to milliseconds like JS.
    pub fn to_iso(self) -> String {
        let millis = i128::from(self.secs) * 1000 + i128::from(self.nanos / 1_000_000);
        // Beyond ±i64 milliseconds no file system stores times; clamp.
        let millis = i64::try_from(millis).unwrap_or(if millis < 0 { i64::MIN } else { i64::MAX });
        let days = millis.div_euclid(MS_PER_DAY);
        let ms_of_day = millis.rem_euclid(MS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        let (h, rest) = (ms_of_day / 3_600_000, ms_of_day % 3_600_000);
        let (min, rest) = (rest / 60_000, rest % 60_000);
        let (s, ms) = (rest / 1000, rest % 1000);
        format!(
            "{}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{ms:03}Z",
            format_year(y)
        )
    }
}

/// ISO form of an optional time (the epoch when the OS cannot say).
pub fn iso_or_epoch(t: Option<SystemTime>) -> String {
    t.map(|t| Timestamp::from_system_time(t).to_iso())
        .unwrap_or_else(|| EPOCH_ISO.to_string())
}

/// JS writes years outside 0..=9999 as a signed six-digit number.
fn format_year(y: i64) -> String {
    if (0..=9999).contains(&y) {
        format!("{y:04}")
    } else if y < 0 {
        format!("-{:06}", y.unsigned_abs())
    } else {
        format!("+{y:06}")
    }
}

/// A time param: an ISO-8601 string (what JS sends), or epoch seconds as a
/// number or numeric string (what PY callers pass). `None` if unreadable.
pub fn parse_time_value(v: &Value) -> Option<Timestamp> {
    match v {
        Value::Number(n) => from_epoch_seconds(n.as_f64()?),
        Value::String(s) => {
            let s = s.trim();
            parse_iso(s).or_else(|| from_epoch_seconds(s.parse::<f64>().ok()?))
        }
        _ => None,
    }
}

fn from_epoch_seconds(f: f64) -> Option<Timestamp> {
    // ±1e15 s is far beyond any file time and keeps the casts exact enough.
    if !f.is_finite() || f.abs() > 1e15 {
        return None;
    }
    let secs = f.floor();
    let nanos = ((f - secs) * 1e9).round().min(999_999_999.0) as i64;
    Some(Timestamp::from_parts(secs as i64, nanos))
}

/// Parses `YYYY-MM-DD[(T| )HH:MM[:SS[.fff…]]][Z|±HH[:]MM]`. A time without
/// a zone is taken as UTC (the sandbox's zone).
pub fn parse_iso(s: &str) -> Option<Timestamp> {
    let mut c = Cursor {
        s: s.as_bytes(),
        pos: 0,
    };
    let year = c.digits(4)?;
    c.expect(b'-')?;
    let month = c.digits(2)?;
    c.expect(b'-')?;
    let day = c.digits(2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let mut secs_of_day = 0i64;
    let mut nanos = 0i64;
    let mut offset_secs = 0i64;
    if c.eat(b'T') || c.eat(b't') || c.eat(b' ') {
        let h = c.digits(2)?;
        c.expect(b':')?;
        let m = c.digits(2)?;
        let mut sec = 0;
        if c.eat(b':') {
            sec = c.digits(2)?;
            if c.eat(b'.') || c.eat(b',') {
                nanos = c.fraction_nanos()?;
            }
        }
        if h > 23 || m > 59 || sec > 59 {
            return None;
        }
        secs_of_day = h * 3600 + m * 60 + sec;
        offset_secs = c.zone()?;
    }
    if !c.done() {
        return None;
    }
    let days = days_from_civil(year, month as u32, day as u32);
    let secs = days * 86_400 + secs_of_day - offset_secs;
    Some(Timestamp::from_parts(secs, nanos))
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        self.eat(b).then_some(())
    }

    fn done(&self) -> bool {
        self.pos == self.s.len()
    }

    /// Exactly `n` ASCII digits.
    fn digits(&mut self, n: usize) -> Option<i64> {
        let bytes = self.s.get(self.pos..self.pos + n)?;
        if !bytes.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.pos += n;
        Some(
            bytes
                .iter()
                .fold(0, |acc, b| acc * 10 + i64::from(b - b'0')),
        )
    }

    /// One or more digits after the decimal point, as nanoseconds
    /// (digits past the ninth are ignored).
    fn fraction_nanos(&mut self) -> Option<i64> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits = &self.s[start..self.pos];
        if digits.is_empty() {
            return None;
        }
        let mut nanos = 0i64;
        for i in 0..9 {
            let d = digits.get(i).map_or(0, |b| i64::from(b - b'0'));
            nanos = nanos * 10 + d;
        }
        Some(nanos)
    }

    /// `Z`, `±HH:MM`, `±HHMM`, `±HH`, or nothing (UTC), as seconds east.
    fn zone(&mut self) -> Option<i64> {
        if self.eat(b'Z') || self.eat(b'z') || self.done() {
            return Some(0);
        }
        let sign = if self.eat(b'+') {
            1
        } else if self.eat(b'-') {
            -1
        } else {
            return None;
        };
        let h = self.digits(2)?;
        let m = if self.done() {
            0
        } else {
            self.eat(b':');
            self.digits(2)?
        };
        (h <= 23 && m <= 59).then_some(sign * (h * 3600 + m * 60))
    }
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

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian (year, month, day) of a day since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(secs: i64, nanos: u32) -> Timestamp {
        Timestamp { secs, nanos }
    }

    #[test]
    fn formats_like_js_to_iso_string() {
        assert_eq!(ts(0, 0).to_iso(), EPOCH_ISO);
        assert_eq!(
            ts(1_700_000_000, 123_456_789).to_iso(),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(ts(951_782_400, 0).to_iso(), "2000-02-29T00:00:00.000Z");
        assert_eq!(ts(-1, 500_000_000).to_iso(), "1969-12-31T23:59:59.500Z");
        assert_eq!(
            ts(253_402_300_800, 0).to_iso(),
            "+010000-01-01T00:00:00.000Z"
        );
        assert_eq!(iso_or_epoch(None), EPOCH_ISO);
    }

    #[test]
    fn civil_round_trips() {
        for days in [-800_000, -1, 0, 1, 59, 10_957, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn parses_iso_variants() {
        assert_eq!(
            parse_iso("2023-11-14T22:13:20.123Z"),
            Some(ts(1_700_000_000, 123_000_000))
        );
        assert_eq!(
            parse_iso("2023-11-14T22:13:20Z"),
            Some(ts(1_700_000_000, 0))
        );
        assert_eq!(
            parse_iso("2023-11-14 23:13:20.5+01:00"),
            Some(ts(1_700_000_000, 500_000_000))
        );
        assert_eq!(parse_iso("2023-11-14T22:13"), Some(ts(1_699_999_980, 0)));
        assert_eq!(parse_iso("1970-01-02"), Some(ts(86_400, 0)));
        assert_eq!(parse_iso("2023-02-29T00:00:00Z"), None);
        assert_eq!(parse_iso("2023-11-14T25:00:00Z"), None);
        assert_eq!(parse_iso("yesterday"), None);
        assert_eq!(parse_iso("2023-11-14T22:13:20Zjunk"), None);
    }

    #[test]
    fn parses_numbers_as_epoch_seconds() {
        assert_eq!(parse_time_value(&json!(1.5)), Some(ts(1, 500_000_000)));
        assert_eq!(parse_time_value(&json!(-1.25)), Some(ts(-2, 750_000_000)));
        assert_eq!(parse_time_value(&json!("42")), Some(ts(42, 0)));
        assert_eq!(parse_time_value(&json!(true)), None);
        let t = ts(-2, 750_000_000).to_system_time().expect("representable");
        assert_eq!(Timestamp::from_system_time(t), ts(-2, 750_000_000));
    }
}
