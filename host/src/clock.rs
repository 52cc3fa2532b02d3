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
