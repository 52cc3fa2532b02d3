//! What the database benchmarks share: running the real binary against a
//! policy (its exit code checked) and timing a closure.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `doctor MODE --policy POLICY`, which must exit `expect`.
pub fn run_doctor(doctor: &str, policy: &Path, mode: &str, expect: i32) {
    let out = Command::new(doctor)
        .args([mode, "--policy"])
        .arg(policy)
        .args(["--format", "json"])
        .env("DOCTOR_LOG", "error")
        .stderr(Stdio::inherit())
        .output()
        .expect("run doctor");
    let code = out.status.code().unwrap_or(-1);
    assert_eq!(
        code,
        expect,
        "doctor {mode} exited {code}: {}",
        String::from_utf8_lossy(&out.stdout)
            .chars()
            .take(2000)
            .collect::<String>()
    );
}

pub fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}
