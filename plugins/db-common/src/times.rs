//! A row's times (heartbeat, claim or lock time, update or creation time)
//! as a judgement may use them: readable, and not in the future. A time
//! ahead of this host's clock by more than the skew allowance was not
//! written by a clock like ours — nanoseconds declared as milliseconds,
//! milliseconds as seconds — and judging by it would make a dead worker's
//! row look fresh forever. It is a finding of its own, never silence.

use crate::{shown, unreadable_time_finding, TimeColumn};
use doctor_sdk::prelude::*;
use doctor_sdk::time::{future_by, read_time, Stamp, TimeUnit};

/// Why a time cannot be used.
#[derive(Debug, Clone)]
pub enum TimeTrouble {
    /// NULL, a BLOB, text that is no time, a number of no known magnitude.
    Unreadable(String),
    /// Readable, but ahead of this host's clock: the stamp as read, and by how much.
    Future(Stamp, String),
}

/// Read a time a judgement may rely on.
pub fn read_at(
    value: &SqlValue,
    unit: TimeUnit,
    now_ms: i64,
    skew_ms: i64,
) -> Result<Stamp, TimeTrouble> {
    let stamp = read_time(value, unit).map_err(TimeTrouble::Unreadable)?;
    match future_by(&stamp, now_ms, skew_ms) {
        Some(ahead) => Err(TimeTrouble::Future(stamp, ahead)),
        None => Ok(stamp),
    }
}

/// A claim (or lock) time as proof that a pid was reused: only when it is
/// readable and its zone is certain. An unreadable one (none, or a counter
/// rather than a time) only withdraws that proof, `Ok(None)`; one in the
/// future is `Err`, for a finding (unit wrong?).
pub fn claim_time(read: &Result<Stamp, TimeTrouble>) -> Result<Option<i64>, &TimeTrouble> {
    match read {
        Ok(stamp) => Ok(stamp.zoned.then_some(stamp.unix_ms)),
        Err(TimeTrouble::Unreadable(_)) => Ok(None),
        Err(trouble) => Err(trouble),
    }
}

/// The finding for a time that cannot be used. `key` is the row's key
/// prefix (`job:7`); the finding's key ends in `<column kind>-unreadable` or
/// `<column kind>-future`.
pub fn time_finding(
    key: &str,
    subject: &str,
    which: TimeColumn,
    column: &str,
    value: &SqlValue,
    trouble: &TimeTrouble,
    consequence: &str,
) -> Finding {
    match trouble {
        TimeTrouble::Unreadable(why) => {
            unreadable_time_finding(key, subject, which, column, value, why, consequence)
        }
        TimeTrouble::Future(stamp, ahead) => {
            let slug = match which {
                TimeColumn::Heartbeat => "heartbeat",
                TimeColumn::Updated => "updated",
                TimeColumn::Claimed => "claimed",
            };
            Finding::warning(
                format!("{key}:{slug}-future"),
                subject,
                format!(
                    "timestamp in the future: unit wrong? column {column} holds {}, read as {}, which is {ahead}; declare time_unit (s, ms, us, ns, iso8601, julian) if it was guessed wrong; {consequence}",
                    shown(value),
                    stamp.read_as
                ),
            )
            .evidence("column", column)
            .evidence("value", shown(value))
            .evidence("read_as", &stamp.read_as)
            .evidence("ahead", ahead)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_time_proves_reuse_only_when_readable_zoned_and_not_ahead() {
        let now = 1_800_000_000_000;
        let read = |v: SqlValue| read_at(&v, TimeUnit::Auto, now, 120_000);
        assert_eq!(
            claim_time(&read(SqlValue::Integer(1_700_000_000))).unwrap(),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            claim_time(&read(SqlValue::Text("2026-11-30 05:00:00".into()))).unwrap(),
            None,
            "no zone: no proof"
        );
        assert_eq!(
            claim_time(&read(SqlValue::Null)).unwrap(),
            None,
            "unreadable: no proof, no finding"
        );
        assert!(matches!(
            claim_time(&read(SqlValue::Integer(1_900_000_000))),
            Err(TimeTrouble::Future(..))
        ));
    }
}
