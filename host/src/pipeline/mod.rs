//! One run, start to end: policy → plugins → findings → plan → actions →
//! journal → report. Everything that can make the run impossible (policy,
//! plugin selection, config keys, the journal lock) is settled before the
//! journal is written; after that, a plugin's failure is only a result.
//! `prepare.rs` loads and describes the chosen plugins and builds their
//! config; `plugin_run.rs` is one plugin's check, fix and re-check;
//! `validate.rs` is `policy validate`.

mod plugin_run;
mod prepare;
mod validate;

pub use plugin_run::OWN_PIDS_KEY;
pub use prepare::describe_entry;
pub use validate::{host_wide_scopes, validate};

use crate::capabilities::RunFacts;
use crate::catalog::{Catalog, Entry};
use crate::clock::now_unix_ms;
use crate::journal::{Journal, JournalError, JournalLock, PluginRecord};
use crate::plan::apply::Budget;
use crate::plan::gate::FixGate;
use crate::policy::{PluginPolicy, Policy, PolicyError};
use crate::report::RunReport;
use crate::worker::Sandbox;
use plugin_run::{run_plugin, PluginOutcome, Shared};
use prepare::prepare;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Check,
    Fix {
        dry_run: bool,
    },
    /// The timer's entry point: due plugins only, fixes where `fix = "auto"`.
    Scheduled,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Check => "check",
            Mode::Fix { dry_run: false } => "fix",
            Mode::Fix { dry_run: true } => "dry-run",
            Mode::Scheduled => "run",
        }
    }
}

pub struct RunOptions {
    pub policy: PathBuf,
    pub journal: Option<PathBuf>,
    pub plugins: Vec<String>,
    pub mode: Mode,
    /// Apply fixes even where the flap breaker is open (`doctor fix` only).
    pub override_flap_breaker: bool,
    /// `doctor check --record DIR`: keep every host call of each plugin's check.
    pub record: Option<PathBuf>,
}

/// Why the doctor could not do its job (exit 3).
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Journal(#[from] JournalError),
    #[error("{0}")]
    Usage(String),
    #[error("{0:#}")]
    Internal(#[from] anyhow::Error),
}

pub fn journal_path(policy: &Policy, cli: Option<&PathBuf>) -> PathBuf {
    cli.cloned()
        .or_else(|| policy.doctor.journal.clone())
        .unwrap_or_else(crate::paths::default_journal)
}

/// `cache_dir` from the policy, else `/var/cache/doctor` (root) or the XDG
/// cache dir. The journal argument is kept for callers that print both.
pub fn cache_dir(policy: &Policy, _journal: &std::path::Path) -> PathBuf {
    policy
        .doctor
        .cache_dir
        .clone()
        .unwrap_or_else(crate::paths::default_cache)
}

pub fn execute(opts: &RunOptions) -> Result<RunReport, Fatal> {
    let policy = Arc::new(Policy::load(&opts.policy)?);
    execute_policy(policy, opts)
}

/// A run with an already loaded policy (the daemon keeps the last valid one).
pub fn execute_policy(policy: Arc<Policy>, opts: &RunOptions) -> Result<RunReport, Fatal> {
    let started = Instant::now();
    if let Some(dir) = &opts.record {
        crate::recording::private_dir(dir)
            .map_err(|e| Fatal::Usage(format!("--record {}: {e:#}", dir.display())))?;
    }
    let started_ms = now_unix_ms();
    let journal_file = journal_path(&policy, opts.journal.as_ref());
    let (catalog, warnings) = Catalog::discover(&policy.doctor.plugin_dirs);
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let selected = select(&policy, &catalog, &opts.plugins)?;
    // A timer tick with nothing due is most ticks: it reads the journal
    // once (read-only: when each plugin last ran, then its open findings)
    // and touches no plugin bytes and no wasmtime engine.
    let due = if opts.mode == Mode::Scheduled {
        let tick = Journal::open_for_tick(&journal_file)?;
        let due = due_plugins(tick.as_ref(), selected, started_ms)?;
        if due.is_empty() {
            return not_due_report(tick.as_ref(), started.elapsed());
        }
        due
    } else {
        selected
    };
    let runtime = Sandbox::new(Some(cache_dir(&policy, &journal_file)))?;
    let prepared = prepare(&runtime, &policy, due, opts.mode)?;
    if opts.mode == Mode::Scheduled && prepared.is_empty() {
        let tick = Journal::open_for_tick(&journal_file)?;
        return not_due_report(tick.as_ref(), started.elapsed());
    }

    let _lock = JournalLock::acquire(&journal_file, policy.doctor.lock_wait)?;
    let mut journal = Journal::open(&journal_file)?;
    let fixes = prepared.iter().any(|p| p.apply_fixes);
    // A run that fixes journals as it goes (it must be seen if it dies);
    // one that only looks writes one transaction at its end.
    if !fixes {
        journal.begin_batch()?;
    }
    let interrupted = journal.mark_interrupted()?;
    let interrupted_actions = crate::journal::intents::recover(journal.connection(), started_ms)?;
    let open_intents = crate::journal::intents::open_intents(journal.connection(), started_ms)?;
    let run_id = journal.begin_run(opts.mode.name(), &policy.file, started_ms)?;
    // Two journals on one host must not fix at the same time.
    let _fix_lock = if fixes {
        Some(crate::journal::FixLock::acquire(
            &fix_lock_path(&policy),
            policy.doctor.lock_wait,
        )?)
    } else {
        None
    };
    let intents = if fixes {
        Some(crate::journal::IntentLog::open(&journal_file, run_id)?)
    } else {
        None
    };
    let gate = FixGate {
        // Look back far enough for both the flap window and the rate limit.
        history: journal.fix_history(
            started_ms.saturating_sub(
                policy
                    .doctor
                    .flap_window
                    .max(policy.doctor.fix_min_interval)
                    .as_millis() as u64,
            ),
        )?,
        max_fixes: policy.doctor.flap_max_fixes,
        window: policy.doctor.flap_window,
        min_interval: policy.doctor.fix_min_interval,
        now_ms: started_ms,
        override_breaker: opts.override_flap_breaker && matches!(opts.mode, Mode::Fix { .. }),
    };

    let facts = RunFacts::new(policy.clone());
    let budget = Budget::new(policy.doctor.max_actions_per_run);
    let protected = crate::facts::processes::self_and_ancestors();
    let mut protected_files = crate::journal::own_files(&journal_file);
    protected_files.push(fix_lock_path(&policy));
    let mut report = RunReport::new(run_id, opts.mode.name(), interrupted);
    report.interrupted_actions = interrupted_actions;

    let (tx, rx) = mpsc::channel::<PluginOutcome>();
    std::thread::scope(|scope| -> Result<(), Fatal> {
        for p in &prepared {
            let tx = tx.clone();
            let state = journal.load_state(&p.entry.name)?;
            let shared = Shared {
                intents: intents.as_ref(),
                runtime: &runtime,
                policy: &policy,
                facts: &facts,
                budget: &budget,
                protected: &protected,
                protected_files: &protected_files,
                gate: &gate,
                record: opts.record.as_deref(),
                open_intents: &open_intents,
            };
            scope.spawn(move || {
                let outcome = run_plugin(&shared, p, state);
                let _ = tx.send(outcome);
            });
        }
        drop(tx);
        for outcome in rx {
            record(&mut journal, run_id, &outcome, &mut report)?;
        }
        Ok(())
    })?;

    if opts.mode == Mode::Scheduled {
        // A tick reports the whole host: plugins not due this time still
        // have their open findings, and monitoring must keep seeing them.
        let ran: Vec<&str> = prepared.iter().map(|p| p.entry.name.as_str()).collect();
        let open = crate::journal::query::findings(journal.connection(), &Default::default())
            .map_err(anyhow::Error::from)?;
        report.add_remembered(
            open.into_iter()
                .filter(|f| !ran.contains(&f.plugin.as_str()))
                .collect(),
        );
    }
    report.finish(started.elapsed().as_millis() as u64);
    journal.finish_run(run_id, report.exit_code, now_unix_ms())?;
    if !fixes {
        journal.commit_batch()?;
    }
    Ok(report)
}

pub fn fix_lock_path(policy: &Policy) -> PathBuf {
    policy
        .doctor
        .fix_lock
        .clone()
        .unwrap_or_else(crate::paths::default_fix_lock)
}

/// Plugins named in the policy (or the subset on the command line), each
/// known to the catalog; otherwise a policy or usage error.
fn select(
    policy: &Policy,
    catalog: &Catalog,
    only: &[String],
) -> Result<Vec<(Entry, PluginPolicy)>, Fatal> {
    for name in policy.plugins.keys() {
        if catalog.get(name).is_none() {
            return Err(policy
                .error_at_key(
                    &format!("plugins.{name}"),
                    format!(
                        "no plugin named {name:?} (known: {})",
                        catalog.names().join(", ")
                    ),
                )
                .into());
        }
    }
    for name in only {
        if !policy.plugins.contains_key(name) {
            return Err(Fatal::Usage(format!(
                "--plugin {name}: the policy {} does not configure it",
                policy.file.display()
            )));
        }
    }
    Ok(policy
        .plugins
        .iter()
        .filter(|(name, _)| only.is_empty() || only.contains(name))
        .filter_map(|(name, p)| catalog.get(name).map(|e| (e.clone(), p.clone())))
        .collect())
}

/// A scheduled tick with nothing due records no run; its report carries the
/// open findings of earlier runs, so monitoring keeps seeing them.
fn not_due_report(
    journal: Option<&Journal>,
    elapsed: std::time::Duration,
) -> Result<RunReport, Fatal> {
    let mut report = RunReport::new(0, Mode::Scheduled.name(), Vec::new());
    if let Some(journal) = journal {
        let open = crate::journal::query::findings(journal.connection(), &Default::default())
            .map_err(anyhow::Error::from)?;
        report.add_remembered(open);
    }
    report.finish(elapsed.as_millis() as u64);
    Ok(report)
}

/// The plugins of a scheduled tick whose `every` has passed since they last
/// ran (all of them when there is no journal yet).
fn due_plugins(
    journal: Option<&Journal>,
    selected: Vec<(Entry, PluginPolicy)>,
    now_ms: u64,
) -> Result<Vec<(Entry, PluginPolicy)>, Fatal> {
    let last = match journal {
        Some(journal) => journal.last_runs(selected.iter().map(|(e, _)| e.name.as_str()))?,
        None => Default::default(),
    };
    Ok(selected
        .into_iter()
        .filter(|(e, p)| {
            last.get(&e.name)
                .is_none_or(|t| now_ms.saturating_sub(*t) >= p.every.as_millis() as u64)
        })
        .collect())
}

fn record(
    journal: &mut Journal,
    run_id: i64,
    o: &PluginOutcome,
    report: &mut RunReport,
) -> Result<(), Fatal> {
    let s = &o.summary;
    let observed = journal.record(
        run_id,
        &PluginRecord {
            plugin: &s.name,
            version: &s.version,
            sha256: &s.sha256,
            started_at_ms: s.started_at_ms,
            duration_ms: s.duration_ms,
            error: s.error.clone(),
            cache: &s.cache,
            log: o.log.clone(),
            findings: &o.findings,
            actions: &o.actions,
            recheck: o.recheck.as_deref(),
            state: o.state.as_ref(),
        },
    )?;
    report.add(o.summary.clone(), observed);
    Ok(())
}
