//! The bounds of policy numbers and the checks that say which key broke them.

use std::time::Duration;

pub const ZERO: Duration = Duration::ZERO;
pub const MS: Duration = Duration::from_millis(1);
pub const HOUR: Duration = Duration::from_secs(3600);
pub const DAY: Duration = Duration::from_secs(86_400);
/// humantime's year: 365.25 days.
pub const YEAR: Duration = Duration::from_secs(31_557_600);
pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

pub type Checked = Result<(), (String, String)>;

pub fn duration(key: &str, value: Duration, min: Duration, max: Duration) -> Checked {
    let shown = |d: Duration| humantime::format_duration(d).to_string();
    if value < min || value > max {
        return Err((
            key.to_string(),
            format!(
                "{} is out of range; allowed: {} to {}",
                shown(value),
                shown(min),
                shown(max)
            ),
        ));
    }
    Ok(())
}

pub fn size(key: &str, value: u64, min: u64, max: u64) -> Checked {
    if value < min || value > max {
        return Err((
            key.to_string(),
            format!("{value} bytes is out of range; allowed: {min} to {max} bytes"),
        ));
    }
    Ok(())
}

pub fn count(key: &str, value: u32, min: u32, max: u32) -> Checked {
    if value < min || value > max {
        return Err((
            key.to_string(),
            format!("{value} is out of range; allowed: {min} to {max}"),
        ));
    }
    Ok(())
}
