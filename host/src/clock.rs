//! Wall-clock time in unix milliseconds.
//!
//! Test-only override: `DOCTOR_TEST_CLOCK_SKEW` (a duration such as "2h")
//! moves this clock forward, so tests can let an `every` or a flap window
//! pass without sleeping. Production runs do not set it and read the real
//! clock.

use std::sync::OnceLock;

pub const SKEW_VAR: &str = "DOCTOR_TEST_CLOCK_SKEW";

pub fn now_unix_ms() -> u64 {
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    real + skew_ms()
}

/// A unix-ms time as UTC text to the second (`2026-11-30T08:24:00Z`), as
/// the journal's readers and the lock's holder show it.
pub fn rfc3339_seconds(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms),
    )
    .to_string()
}

fn skew_ms() -> u64 {
    static SKEW: OnceLock<u64> = OnceLock::new();
    *SKEW.get_or_init(|| {
        std::env::var(SKEW_VAR)
            .ok()
            .and_then(|v| humantime::parse_duration(&v).ok())
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    })
}
