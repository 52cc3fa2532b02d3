//! Timestamps as tables store them (heartbeats, update times, start times),
//! read the same way by every plugin. Declared in the policy (`time_unit`),
//! or detected per value, and always stated: a finding says how a time was
//! read. A value that cannot be read is an error the plugin reports, never a
//! silent "no heartbeat".
//!
//! | `time_unit` | reads                                                        |
//! |-------------|--------------------------------------------------------------|
//! | `auto`      | detects each value: numbers (INTEGER, REAL or numeric TEXT) by magnitude — julian day (1e6..1e7), epoch seconds (1e8..1e11), milliseconds (1e11..1e14), microseconds (1e14..1e17), nanoseconds (1e17..1e20) — and ISO-8601 text |
//! | `s`         | epoch seconds: INTEGER, REAL or numeric TEXT                  |
//! | `ms`        | epoch milliseconds: INTEGER, REAL or numeric TEXT             |
//! | `us`        | epoch microseconds (Python's `time.time_ns() // 1000`, PostgreSQL-style exports) |
//! | `ns`        | epoch nanoseconds (Python's `time.time_ns()`, Go's `UnixNano`) |
//! | `iso8601`   | `2026-11-30 05:00:00`, `2026-11-30T05:00:00.5Z`, `...+02:00`; no zone means UTC (SQLite's `datetime('now')`, and PostgreSQL's `timestamp without time zone`, which queue libraries write in UTC) |
//! | `julian`    | SQLite `julianday('now')`                                     |

use crate::SqlValue;

/// How a table stores its times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Auto,
    Seconds,
    Millis,
    Micros,
    Nanos,
    Iso8601,
    Julian,
}

impl TimeUnit {
    pub fn parse(text: &str) -> Result<TimeUnit, String> {
        Ok(match text.trim() {
            "" | "auto" => TimeUnit::Auto,
            "s" | "seconds" | "epoch-s" => TimeUnit::Seconds,
            "ms" | "millis" | "epoch-ms" => TimeUnit::Millis,
            "us" | "micros" | "epoch-us" => TimeUnit::Micros,
            "ns" | "nanos" | "epoch-ns" => TimeUnit::Nanos,
            "iso8601" | "iso-8601" | "text" => TimeUnit::Iso8601,
            "julian" | "julianday" | "julian-day" => TimeUnit::Julian,
            other => {
                return Err(format!(
                    "time_unit {other:?}: use auto, s, ms, us, ns, iso8601 or julian"
                ))
            }
        })
    }
}

/// A time read from a row, and how it was read (for the finding).
#[derive(Debug, Clone, PartialEq)]
pub struct Stamp {
    pub unix_ms: i64,
    /// The unit it was read in (never `Auto`): a write of "now" uses the same.
    pub unit: TimeUnit,
    /// False for ISO-8601 text without a zone: read as UTC, but it may have
    /// been written in local time, so it is no proof of an order of events.
    pub zoned: bool,
    /// e.g. "epoch seconds (INTEGER, detected)", "ISO-8601 without zone, read as UTC (TEXT)".
    pub read_as: String,
}

/// The Unix epoch as a julian day.
const JULIAN_EPOCH: f64 = 2_440_587.5;
/// 0001-01-01T00:00:00Z in unix ms.
const FIRST_MS: i64 = -62_135_596_800_000;

/// Read `value` as a time. The error text says what the value was and why it
/// is not a time; it goes into a "heartbeat unreadable" finding.
pub fn read_time(value: &SqlValue, unit: TimeUnit) -> Result<Stamp, String> {
    let (number, sql_type) = match value {
        SqlValue::Null => return Err("NULL".into()),
        SqlValue::Blob(b) => return Err(format!("a BLOB of {} bytes", b.len())),
        SqlValue::Integer(i) => (Some(*i as f64), "INTEGER"),
        SqlValue::Real(f) => (Some(*f), "REAL"),
        SqlValue::Text(t) => (
            t.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
            "TEXT",
        ),
    };
    let detected = if unit == TimeUnit::Auto {
        ", detected"
    } else {
        ""
    };
    let stamp = |unix_ms: f64, unit: TimeUnit, what: &str| Stamp {
        unix_ms: unix_ms as i64,
        unit,
        zoned: true,
        read_as: format!("{what} ({sql_type}{detected})"),
    };
    if let Some(n) = number {
        let unit = match unit {
            TimeUnit::Auto => by_magnitude(n).ok_or_else(|| {
                format!(
                    "{} {n} is no time doctor can detect (declare time_unit)",
                    sql_type
                )
            })?,
            TimeUnit::Iso8601 => {
                return Err(format!(
                    "{sql_type} {n} is a number, not ISO-8601 text (time_unit = \"iso8601\")"
                ))
            }
            declared => declared,
        };
        let read = match unit {
            TimeUnit::Seconds => stamp(n * 1000.0, unit, "epoch seconds"),
            TimeUnit::Millis => stamp(n, unit, "epoch milliseconds"),
            TimeUnit::Micros => stamp(n / 1000.0, unit, "epoch microseconds"),
            TimeUnit::Nanos => stamp(n / 1_000_000.0, unit, "epoch nanoseconds"),
            _ => stamp(
                (n - JULIAN_EPOCH) * 86_400_000.0,
                TimeUnit::Julian,
                "SQLite julian day",
            ),
        };
        // A number that reads as before the year 1 is no time: its age would
        // overflow, and a verdict must not rest on it. (One far in the future
        // is a time; the future check says the unit looks wrong.)
        if read.unix_ms < FIRST_MS {
            return Err(format!(
                "{sql_type} {n} read as {} is before the year 1",
                read.read_as
            ));
        }
        return Ok(read);
    }
    let SqlValue::Text(text) = value else {
        unreachable!("numbers were handled above")
    };
    if !matches!(unit, TimeUnit::Auto | TimeUnit::Iso8601) {
        return Err(format!(
            "text {:?} is not a number (time_unit is {unit:?})",
            shorten(text)
        ));
    }
    let (ms, zoned) = parse_iso8601(text.trim())
        .ok_or_else(|| format!("text {:?} is neither a number nor ISO-8601", shorten(text)))?;
    let stamp = stamp(
        ms as f64,
        TimeUnit::Iso8601,
        if zoned {
            "ISO-8601 with zone"
        } else {
            "ISO-8601 without zone, read as UTC"
        },
    );
    Ok(Stamp { zoned, ..stamp })
}

/// "Now" in the unit a column already uses: a value for `?`, or (ISO-8601)
/// None, meaning the SQL `strftime('%Y-%m-%d %H:%M:%S', 'now')`.
pub fn now_value(unit: TimeUnit, now_ms: i64) -> Option<SqlValue> {
    match unit {
        TimeUnit::Millis => Some(SqlValue::Integer(now_ms)),
        TimeUnit::Micros => Some(SqlValue::Integer(now_ms.saturating_mul(1000))),
        TimeUnit::Nanos => Some(SqlValue::Integer(now_ms.saturating_mul(1_000_000))),
        TimeUnit::Julian => Some(SqlValue::Real(JULIAN_EPOCH + now_ms as f64 / 86_400_000.0)),
        TimeUnit::Iso8601 => None,
        TimeUnit::Auto | TimeUnit::Seconds => Some(SqlValue::Integer(now_ms / 1000)),
    }
}

/// A time that lies ahead of this host's clock by more than `skew_ms` was
/// not written by a clock like ours: most often a unit the policy got wrong
/// (nanoseconds read as milliseconds lie centuries ahead). The text says by
/// how much, for a finding; None when the time is plausible.
pub fn future_by(stamp: &Stamp, now_ms: i64, skew_ms: i64) -> Option<String> {
    let ahead = stamp.unix_ms.saturating_sub(now_ms);
    (ahead > skew_ms).then(|| {
        format!(
            "{} ahead of this host's clock (allowance {})",
            human_ms(ahead),
            human_ms(skew_ms)
        )
    })
}

fn by_magnitude(n: f64) -> Option<TimeUnit> {
    let a = n.abs();
    if (1e6..1e7).contains(&a) {
        Some(TimeUnit::Julian)
    } else if (1e8..1e11).contains(&a) {
        Some(TimeUnit::Seconds)
    } else if (1e11..1e14).contains(&a) {
        Some(TimeUnit::Millis)
    } else if (1e14..1e17).contains(&a) {
        Some(TimeUnit::Micros)
    } else if (1e17..1e20).contains(&a) {
        Some(TimeUnit::Nanos)
    } else {
        None
    }
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= 40 {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(40).collect::<String>())
    }
}

/// `YYYY-MM-DD[( |T)HH:MM[:SS[.frac]]][Z|±HH[:MM]]` → (unix ms, had a zone).
pub fn parse_iso8601(text: &str) -> Option<(i64, bool)> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let s = text.get(from..from + len)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
    {
        return None;
    }
    let mut ms = days_from_civil(year, month, day) * 86_400_000;
    let mut i = 10;
    if i == b.len() {
        return Some((ms, false));
    }
    if !matches!(b[i], b'T' | b't' | b' ') {
        return None;
    }
    let (hour, minute) = (num(i + 1, 2)?, num(i + 4, 2)?);
    if b.get(i + 3) != Some(&b':') || hour > 23 || minute > 59 {
        return None;
    }
    ms += (hour * 3600 + minute * 60) * 1000;
    i += 6;
    if b.get(i) == Some(&b':') {
        let second = num(i + 1, 2)?;
        if second > 60 {
            return None;
        }
        ms += second * 1000;
        i += 3;
        if b.get(i) == Some(&b'.') {
            let digits: String = text[i + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if digits.is_empty() {
                return None;
            }
            let frac: f64 = format!("0.{digits}").parse().ok()?;
            ms += (frac * 1000.0) as i64;
            i += 1 + digits.len();
        }
    }
    let zone = &text[i..];
    match zone {
        "" => Some((ms, false)),
        "Z" | "z" => Some((ms, true)),
        _ => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
            if !digits.bytes().all(|c| c.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) {
                return None;
            }
            let hours: i64 = digits[..2].parse().ok()?;
            let minutes: i64 = if digits.len() == 4 {
                digits[2..].parse().ok()?
            } else {
                0
            };
            Some((ms - sign * (hours * 60 + minutes) * 60_000, true))
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, as SQLite's `datetime('now')` writes it.
pub fn iso8601_utc(unix_ms: i64) -> String {
    let (days, ms) = (
        unix_ms.div_euclid(86_400_000),
        unix_ms.rem_euclid(86_400_000),
    );
    let (y, m, d) = civil_from_days(days);
    let s = ms / 1000;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Hinnant).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + (m <= 2) as i64, m, d)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A duration as an operator reads it: `42.0s`, `3m5s`, `2h10m`, `1d3h`.
pub fn human_ms(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.abs();
    let s = ms / 1000;
    let text = if s >= 86_400 {
        format!("{}d{}h", s / 86_400, s % 86_400 / 3600)
    } else if s >= 3600 {
        format!("{}h{}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{}.{:01}s", s, (ms % 1000) / 100)
    };
    format!("{sign}{text}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_number_before_the_year_one_is_no_time() {
        let far = read_time(
            &SqlValue::Integer(-9_000_000_000_000_000_000),
            TimeUnit::Millis,
        )
        .expect_err("not a time");
        assert!(far.contains("before the year 1"), "{far}");
        assert!(read_time(&SqlValue::Real(-1e300), TimeUnit::Seconds).is_err());
        assert!(
            read_time(&SqlValue::Integer(0), TimeUnit::Seconds).is_ok(),
            "the epoch itself is a time"
        );
    }

    use super::*;

    // 2026-11-30T05:00:00Z
    const T: i64 = 1_796_014_800_000;

    fn auto(v: SqlValue) -> Result<Stamp, String> {
        read_time(&v, TimeUnit::Auto)
    }

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(parse_iso8601("2026-11-30T05:00:00Z"), Some((T, true)));
        assert_eq!(iso8601_utc(T + 999), "2026-11-30 05:00:00");
        assert_eq!(iso8601_utc(0), "1970-01-01 00:00:00");
        assert_eq!(iso8601_utc(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn every_stored_form_is_detected() {
        let cases = [
            (
                SqlValue::Integer(T / 1000),
                "epoch seconds (INTEGER, detected)",
            ),
            (
                SqlValue::Real(T as f64 / 1000.0),
                "epoch seconds (REAL, detected)",
            ),
            (
                SqlValue::Text((T / 1000).to_string()),
                "epoch seconds (TEXT, detected)",
            ),
            (
                SqlValue::Integer(T),
                "epoch milliseconds (INTEGER, detected)",
            ),
            (
                SqlValue::Text(T.to_string()),
                "epoch milliseconds (TEXT, detected)",
            ),
            (
                SqlValue::Integer(T * 1000 + 7),
                "epoch microseconds (INTEGER, detected)",
            ),
            (
                SqlValue::Integer(T * 1_000_000 + 123_456),
                "epoch nanoseconds (INTEGER, detected)",
            ),
            (
                SqlValue::Text((T * 1_000_000).to_string()),
                "epoch nanoseconds (TEXT, detected)",
            ),
            (
                SqlValue::Text("2026-11-30 05:00:00".into()),
                "ISO-8601 without zone, read as UTC (TEXT, detected)",
            ),
            (
                SqlValue::Text("2026-11-30T07:00:00+02:00".into()),
                "ISO-8601 with zone (TEXT, detected)",
            ),
            (
                SqlValue::Text("2026-11-30T00:00:00-0500".into()),
                "ISO-8601 with zone (TEXT, detected)",
            ),
            (
                SqlValue::Real(JULIAN_EPOCH + T as f64 / 86_400_000.0),
                "SQLite julian day (REAL, detected)",
            ),
        ];
        for (value, read_as) in cases {
            let stamp = auto(value.clone()).unwrap_or_else(|e| panic!("{value:?}: {e}"));
            assert!(
                (stamp.unix_ms - T).abs() < 1000,
                "{value:?} read as {}",
                stamp.unix_ms
            );
            assert_eq!(stamp.read_as, read_as);
        }
    }

    #[test]
    fn fractions_of_seconds() {
        assert_eq!(
            parse_iso8601("2026-11-30T05:00:00.250Z"),
            Some((T + 250, true))
        );
    }

    /// The texts the host gives for PostgreSQL's timestamptz, timestamp and date.
    #[test]
    fn postgres_times_are_read_to_the_millisecond() {
        let read = |t: &str| auto(SqlValue::Text(t.into())).unwrap();
        let zoned = read("2026-11-30T05:00:00.123456+00:00");
        assert_eq!((zoned.unix_ms, zoned.zoned), (T + 123, true));
        assert_eq!(zoned.read_as, "ISO-8601 with zone (TEXT, detected)");
        let naive = read("2026-11-30T05:00:00.999999");
        assert_eq!((naive.unix_ms, naive.zoned), (T + 999, false));
        assert_eq!(read("2026-11-30").unix_ms, T - 5 * 3_600_000);
    }

    #[test]
    fn null_and_garbage_are_errors_that_say_what_they_saw() {
        assert_eq!(auto(SqlValue::Null), Err("NULL".into()));
        assert!(auto(SqlValue::Text("yesterday".into()))
            .unwrap_err()
            .contains("\"yesterday\""));
        assert!(auto(SqlValue::Integer(0)).is_err());
        assert!(auto(SqlValue::Text("2026-13-01".into())).is_err());
        assert!(auto(SqlValue::Blob(vec![1, 2])).is_err());
        assert!(read_time(&SqlValue::Text("2026-11-30".into()), TimeUnit::Seconds).is_err());
        assert!(read_time(&SqlValue::Integer(5), TimeUnit::Iso8601).is_err());
    }

    #[test]
    fn a_declared_unit_is_obeyed() {
        assert_eq!(
            read_time(&SqlValue::Integer(5), TimeUnit::Seconds)
                .unwrap()
                .unix_ms,
            5000
        );
        assert_eq!(
            read_time(&SqlValue::Text("5".into()), TimeUnit::Millis)
                .unwrap()
                .read_as,
            "epoch milliseconds (TEXT)"
        );
        assert_eq!(
            read_time(&SqlValue::Integer(T * 1000), TimeUnit::Micros)
                .unwrap()
                .unix_ms,
            T
        );
        assert_eq!(
            read_time(&SqlValue::Integer(T * 1_000_000), TimeUnit::Nanos)
                .unwrap()
                .unix_ms,
            T
        );
    }

    #[test]
    fn a_wrong_unit_lies_in_the_future_and_says_so() {
        // Nanoseconds declared as milliseconds: far ahead of any clock.
        let wrong = read_time(&SqlValue::Integer(T * 1_000_000), TimeUnit::Millis).unwrap();
        assert!(future_by(&wrong, T, 120_000)
            .unwrap()
            .contains("ahead of this host's clock"));
        let right = read_time(&SqlValue::Integer(T + 60_000), TimeUnit::Millis).unwrap();
        assert_eq!(future_by(&right, T, 120_000), None, "within the allowance");
    }

    #[test]
    fn now_is_written_in_the_unit_read() {
        assert!(
            matches!(now_value(TimeUnit::Nanos, T), Some(SqlValue::Integer(v)) if v == T * 1_000_000)
        );
        assert!(
            matches!(now_value(TimeUnit::Micros, T), Some(SqlValue::Integer(v)) if v == T * 1000)
        );
    }
}
