//! Median wall time of `listeners()`: `cargo bench --bench sockets`.
//! Iterations: `SOCKETS_BENCH_ITERS` (default 20). The cost grows with the
//! number of processes (every `/proc/PID/fd` is read), so the process count
//! is printed alongside; spawn a few thousand `sleep` children to stress it.

use std::time::{Duration, Instant};

use doctor::facts::sockets::listeners;

fn main() {
    let iterations: usize = std::env::var("SOCKETS_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .max(1);
    let processes = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
                })
                .count()
        })
        .unwrap_or(0);

    let mut found = 0;
    let mut times: Vec<Duration> = (0..iterations)
        .map(|_| {
            let started = Instant::now();
            found = listeners().expect("listeners()").len();
            started.elapsed()
        })
        .collect();
    times.sort_unstable();

    println!(
        "listeners(): {processes} processes, {found} listeners, {iterations} iterations: \
         median {:.2?}, min {:.2?}, max {:.2?}",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
    );
}
