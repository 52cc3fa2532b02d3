//! `doctor daemon`: the schedule of `doctor run` for hosts without systemd.
//! SIGHUP reloads the policy (keeping the old one if the new one is invalid);
//! SIGTERM and SIGINT stop it after the run in progress has been journalled.

use crate::pipeline::{self, Mode, RunOptions};
use crate::policy::Policy;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// Upper bound between two looks at the schedule.
const MAX_SLEEP: Duration = Duration::from_secs(60);
const MIN_SLEEP: Duration = Duration::from_secs(1);

pub fn run(policy_path: PathBuf, journal: Option<PathBuf>) -> anyhow::Result<i32> {
    let policy = Arc::new(load_valid(&policy_path).map_err(|e| anyhow::anyhow!("{e}"))?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(schedule(policy_path, journal, policy))
}

/// The policy, parsed and checked like `doctor policy validate`.
fn load_valid(path: &std::path::Path) -> Result<Policy, pipeline::Fatal> {
    pipeline::validate(path)?;
    Ok(Policy::load(path)?)
}

async fn schedule(
    policy_path: PathBuf,
    journal: Option<PathBuf>,
    mut policy: Arc<Policy>,
) -> anyhow::Result<i32> {
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    crate::logging::note(&format!(
        "doctor daemon started with policy {}",
        policy_path.display()
    ));
    loop {
        let run = tokio::task::spawn_blocking({
            let policy = policy.clone();
            let opts = RunOptions {
                policy: policy_path.clone(),
                journal: journal.clone(),
                plugins: Vec::new(),
                mode: Mode::Scheduled,
                override_flap_breaker: false,
                record: None,
            };
            move || pipeline::execute_policy(policy, &opts)
        });
        tokio::pin!(run);
        let mut stopping = false;
        let finished = loop {
            tokio::select! {
                done = &mut run => break done,
                _ = terminate.recv() => { stopping = true; tracing::warn!("SIGTERM: finishing the run in progress, then stopping"); }
                _ = interrupt.recv() => { stopping = true; tracing::warn!("SIGINT: finishing the run in progress, then stopping"); }
                _ = hangup.recv() => policy = reload(&policy_path, policy).await,
            }
        };
        match finished {
            Ok(Ok(report)) => crate::logging::run_summary(&report),
            Ok(Err(fatal)) => tracing::error!("scheduled run failed: {fatal}"),
            Err(e) => tracing::error!("scheduled run panicked: {e}"),
        }
        if stopping {
            return Ok(0);
        }
        tokio::select! {
            _ = tokio::time::sleep(next_wake(&policy)) => {}
            _ = terminate.recv() => return Ok(0),
            _ = interrupt.recv() => return Ok(0),
            _ = hangup.recv() => policy = reload(&policy_path, policy).await,
        }
    }
}

/// Validating runs each plugin's check, and plugin code (and the WASI and
/// engine calls it makes, which block on tokio themselves) must never run on
/// the runtime's own thread: on a blocking thread, as scheduled runs do.
async fn reload(path: &std::path::Path, current: Arc<Policy>) -> Arc<Policy> {
    let owned = path.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || load_valid(&owned)).await;
    let loaded = match loaded {
        Ok(result) => result,
        Err(e) => {
            tracing::error!(
                "SIGHUP: validating the new policy failed ({e}); keeping the previous one"
            );
            return current;
        }
    };
    match loaded {
        Ok(new) => {
            crate::logging::note(&format!("SIGHUP: policy {} reloaded", path.display()));
            Arc::new(new)
        }
        Err(e) => {
            tracing::error!("SIGHUP: the new policy is invalid, keeping the previous one: {e}");
            current
        }
    }
}

/// Sleep until the soonest plugin could be due (the run itself decides).
fn next_wake(policy: &Policy) -> Duration {
    policy
        .plugins
        .values()
        .map(|p| p.every)
        .min()
        .unwrap_or(MAX_SLEEP)
        .clamp(MIN_SLEEP, MAX_SLEEP)
}
