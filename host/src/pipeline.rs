//! One run, start to end: policy → plugins → findings → plan → actions →
//! journal → report. Everything that can make the run impossible (policy,
//! plugin selection, config keys, the journal lock) is settled before the
//! journal is written; after that, a plugin's failure is only a result.

use crate::actions::ActionContext;
use crate::capabilities::{CapabilityContext, EffectiveGrants, RunFacts, KNOWN_CAPABILITIES};
use crate::catalog::{Catalog, Entry};
use crate::clock::now_unix_ms;
use crate::journal::{Journal, JournalError, JournalLock, PluginRecord};
use crate::plan::apply::{self, Budget};
use crate::plan::gate::FixGate;
use crate::plan::ActionResult;
use crate::findings::Finding;
use crate::policy::{FixMode, Policy, PolicyError, PluginPolicy};
use crate::report::{PluginSummary, RunReport};
use crate::capabilities::PluginRuntime;
use crate::runtime::{Limits, LoadedComponent, PluginFailure, PluginInfo};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Check,
    Fix { dry_run: bool },
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

/// A plugin chosen for this run, loaded and described.
struct Prepared {
    entry: Entry,
    policy: PluginPolicy,
    loaded: Result<(LoadedComponent, PluginInfo), PluginFailure>,
    config_json: String,
    apply_fixes: bool,
    /// `fix --dry-run`: evaluate grants and guards for the plan.
    preview: bool,
}

pub fn journal_path(policy: &Policy, cli: Option<&PathBuf>) -> PathBuf {
    cli.cloned().or_else(|| policy.doctor.journal.clone()).unwrap_or_else(crate::paths::default_journal)
}

/// `cache_dir` from the policy, else `/var/cache/doctor` (root) or the XDG
/// cache dir. The journal argument is kept for callers that print both.
pub fn cache_dir(policy: &Policy, _journal: &std::path::Path) -> PathBuf {
    policy.doctor.cache_dir.clone().unwrap_or_else(crate::paths::default_cache)
}

pub fn execute(opts: &RunOptions) -> Result<RunReport, Fatal> {
    let policy = Arc::new(Policy::load(&opts.policy)?);
    execute_policy(policy, opts)
}

/// A run with an already loaded policy (the daemon keeps the last valid one).
pub fn execute_policy(policy: Arc<Policy>, opts: &RunOptions) -> Result<RunReport, Fatal> {
    let started = Instant::now();
    if let Some(dir) = &opts.record {
        crate::recording::private_dir(dir).map_err(|e| Fatal::Usage(format!("--record {}: {e:#}", dir.display())))?;
    }
    let started_ms = now_unix_ms();
    let journal_file = journal_path(&policy, opts.journal.as_ref());
    let (catalog, warnings) = Catalog::discover(&policy.doctor.plugin_dirs);
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let selected = select(&policy, &catalog, &opts.plugins)?;
    let due = due_plugins(&journal_file, selected, opts.mode, started_ms)?;
    // A timer tick with nothing due is most ticks: it needs no wasmtime
    // engine (about half its cost), only the journal's open findings.
    if opts.mode == Mode::Scheduled && due.is_empty() {
        return not_due_report(&journal_file, started.elapsed());
    }
    let runtime = PluginRuntime::new(Some(cache_dir(&policy, &journal_file)))?;
    let prepared = prepare(&runtime, &policy, due, opts.mode)?;
    if opts.mode == Mode::Scheduled && prepared.is_empty() {
        return not_due_report(&journal_file, started.elapsed());
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
    let run_id = journal.begin_run(opts.mode.name(), &policy.file, started_ms)?;
    // Two journals on one host must not fix at the same time.
    let _fix_lock = if fixes { Some(crate::journal::FixLock::acquire(&fix_lock_path(&policy), policy.doctor.lock_wait)?) } else { None };
    let intents = if fixes { Some(crate::journal::IntentLog::open(&journal_file, run_id)?) } else { None };
    let gate = FixGate {
        // Look back far enough for both the flap window and the rate limit.
        history: journal.fix_history(started_ms.saturating_sub(policy.doctor.flap_window.max(policy.doctor.fix_min_interval).as_millis() as u64))?,
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
        let open = crate::journal::query::findings(journal.connection(), &Default::default()).map_err(anyhow::Error::from)?;
        report.add_remembered(open.into_iter().filter(|f| !ran.contains(&f.plugin.as_str())).collect());
    }
    report.finish(started.elapsed().as_millis() as u64);
    journal.finish_run(run_id, report.exit_code, now_unix_ms())?;
    if !fixes {
        journal.commit_batch()?;
    }
    Ok(report)
}

pub fn fix_lock_path(policy: &Policy) -> PathBuf {
    policy.doctor.fix_lock.clone().unwrap_or_else(crate::paths::default_fix_lock)
}

/// Plugins named in the policy (or the subset on the command line), each
/// known to the catalog; otherwise a policy or usage error.
fn select(policy: &Policy, catalog: &Catalog, only: &[String]) -> Result<Vec<(Entry, PluginPolicy)>, Fatal> {
    for name in policy.plugins.keys() {
        if catalog.get(name).is_none() {
            return Err(policy
                .error_at_key(
                    &format!("plugins.{name}"),
                    format!("no plugin named {name:?} (known: {})", catalog.names().join(", ")),
                )
                .into());
        }
    }
    for name in only {
        if !policy.plugins.contains_key(name) {
            return Err(Fatal::Usage(format!("--plugin {name}: the policy {} does not configure it", policy.file.display())));
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
fn not_due_report(journal_file: &std::path::Path, elapsed: std::time::Duration) -> Result<RunReport, Fatal> {
    let mut report = RunReport::new(0, Mode::Scheduled.name(), Vec::new());
    if journal_file.exists() {
        let journal = Journal::open_read_only(journal_file)?;
        let open = crate::journal::query::findings(journal.connection(), &Default::default()).map_err(anyhow::Error::from)?;
        report.add_remembered(open);
    }
    report.finish(elapsed.as_millis() as u64);
    Ok(report)
}

/// In scheduled mode, only plugins whose `every` has passed since they last
/// ran (read from the journal without taking its lock).
fn due_plugins(
    journal_file: &std::path::Path,
    selected: Vec<(Entry, PluginPolicy)>,
    mode: Mode,
    now_ms: u64,
) -> Result<Vec<(Entry, PluginPolicy)>, Fatal> {
    if mode != Mode::Scheduled {
        return Ok(selected);
    }
    let last = crate::journal::last_runs(journal_file)?;
    Ok(selected
        .into_iter()
        .filter(|(e, p)| last.get(&e.name).is_none_or(|t| now_ms.saturating_sub(*t) >= p.every.as_millis() as u64))
        .collect())
}

/// Load, describe, and check each plugin's config against what it declares.
/// Plugins load side by side: compiling is the slow part, and N plugins
/// that loop in `describe()` then cost one deadline, not N.
fn prepare(runtime: &PluginRuntime, policy: &Arc<Policy>, chosen: Vec<(Entry, PluginPolicy)>, mode: Mode) -> Result<Vec<Prepared>, Fatal> {
    let limits = limits(policy);
    let facts = RunFacts::new(policy.clone());
    let loaded: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = chosen
            .iter()
            .map(|(entry, plugin_policy)| scope.spawn(|| load(runtime, entry, plugin_policy, policy, &facts, limits)))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or_else(|_| Err(Fatal::Usage("a plugin loader thread panicked".into())))).collect()
    });
    let mut out = Vec::new();
    for ((entry, plugin_policy), loaded) in chosen.into_iter().zip(loaded) {
        let loaded = loaded?;
        let config_json = match &loaded {
            Ok((_, info)) => config_json(policy, &entry.name, &plugin_policy, info)?,
            Err(_) => "{}".into(),
        };
        let apply_fixes = match mode {
            Mode::Check | Mode::Fix { dry_run: true } => false,
            Mode::Fix { dry_run: false } => true,
            Mode::Scheduled => plugin_policy.fix == FixMode::Auto,
        };
        let preview = mode == Mode::Fix { dry_run: true };
        out.push(Prepared { entry, policy: plugin_policy, loaded, config_json, apply_fixes, preview });
    }
    Ok(out)
}

fn limits(policy: &Policy) -> Limits {
    Limits { memory_bytes: policy.doctor.plugin_memory, timeout: policy.doctor.plugin_timeout }
}

fn load(
    runtime: &PluginRuntime,
    entry: &Entry,
    plugin_policy: &PluginPolicy,
    policy: &Policy,
    facts: &Arc<RunFacts>,
    limits: Limits,
) -> Result<Result<(LoadedComponent, PluginInfo), PluginFailure>, Fatal> {
    let bytes = match entry.bytes() {
        Ok(b) => b,
        Err(e) => return Ok(Err(PluginFailure::Load(format!("{}: {e}", entry.source.describe())))),
    };
    // The pin is checked on the bytes, before anything compiles them.
    let sha256 = crate::runtime::sha256_hex(&bytes);
    if let Some(pin) = &plugin_policy.sha256 {
        if !pin.eq_ignore_ascii_case(&sha256) {
            return Err(policy
                .error_at_plugin(&entry.name, "sha256", format!("{} has sha256 {sha256}, the policy pins {pin}", entry.source.describe()))
                .into());
        }
    }
    let loaded = match runtime.load_hashed(&bytes, sha256) {
        Ok(l) => l,
        Err(e) => return Ok(Err(e)),
    };
    let caps = context(&entry.name, EffectiveGrants::none(&entry.name), facts.clone(), Default::default());
    let info = match runtime.describe(&loaded, caps, limits) {
        Ok(info) => info,
        Err(e) => return Ok(Err(e)),
    };
    if info.name != entry.name {
        return Ok(Err(PluginFailure::InvalidOutput(format!("describe() says its name is {:?}, not {:?}", info.name, entry.name))));
    }
    if let Some(unknown) = info.capabilities.iter().find(|c| !KNOWN_CAPABILITIES.contains(&c.as_str())) {
        return Ok(Err(PluginFailure::InvalidOutput(format!("describe() requests unknown capability {unknown:?}"))));
    }
    Ok(Ok((loaded, info)))
}

/// The plugin's `config` table as JSON, defaults filled in from `describe()`;
/// unknown and missing required keys are policy errors.
fn config_json(policy: &Policy, name: &str, plugin: &PluginPolicy, info: &PluginInfo) -> Result<String, Fatal> {
    let table = &plugin.config_table();
    let declared: Vec<&str> = info.config.iter().map(|k| k.name.as_str()).collect();
    for key in table.keys() {
        if !declared.contains(&key.as_str()) {
            return Err(policy
                .error_at_plugin(name, &format!("config.{key}"), format!("unknown config key (plugin {name} declares: {})", declared.join(", ")))
                .into());
        }
    }
    let mut json = serde_json::to_value(table).map_err(|e| Fatal::Internal(e.into()))?;
    let object = json.as_object_mut().ok_or_else(|| Fatal::Usage("config must be a table".into()))?;
    for key in &info.config {
        if object.contains_key(&key.name) {
            continue;
        }
        if key.default.is_empty() {
            return Err(policy
                .error_at_plugin(name, "config", format!("missing required key `{}`: {}", key.name, key.description))
                .into());
        }
        let value = serde_json::from_str(&key.default).unwrap_or(serde_json::Value::String(key.default.clone()));
        object.insert(key.name.clone(), value);
    }
    Ok(json.to_string())
}

/// `kv` is the plugin's state, shared by its check and its re-check.
fn context(plugin: &str, grants: EffectiveGrants, facts: Arc<RunFacts>, kv: Arc<Mutex<BTreeMap<String, String>>>) -> CapabilityContext {
    CapabilityContext::new(plugin, grants, facts, kv)
}

/// What one plugin's thread sends back to be journalled.
struct PluginOutcome {
    summary: PluginSummary,
    findings: Vec<Finding>,
    actions: Vec<Vec<ActionResult>>,
    recheck: Option<Vec<Finding>>,
    state: Option<BTreeMap<String, String>>,
    log: String,
}

/// What every plugin thread of a run shares.
struct Shared<'a> {
    /// Present when this run may fix.
    intents: Option<&'a crate::journal::IntentLog>,
    runtime: &'a PluginRuntime,
    policy: &'a Arc<Policy>,
    facts: &'a Arc<RunFacts>,
    budget: &'a Budget,
    protected: &'a [u32],
    protected_files: &'a [PathBuf],
    gate: &'a FixGate,
    record: Option<&'a std::path::Path>,
}

fn run_plugin(shared: &Shared<'_>, p: &Prepared, state: BTreeMap<String, String>) -> PluginOutcome {
    let Shared { intents, runtime, policy, facts, budget, protected, protected_files, gate, record } = *shared;
    let started = Instant::now();
    let started_ms = now_unix_ms();
    let mut summary = PluginSummary::new(&p.entry.name, started_ms);
    let (loaded, info) = match &p.loaded {
        Ok(ok) => ok,
        Err(failure) => {
            summary.fail(failure.to_string(), started.elapsed());
            return PluginOutcome { summary, findings: vec![], actions: vec![], recheck: None, state: None, log: String::new() };
        }
    };
    summary.loaded(&info.version, &loaded.sha256, loaded.cache.as_str());
    let grants = EffectiveGrants::new(&p.entry.name, &info.capabilities, &p.policy.grants);
    let kv = Arc::new(Mutex::new(with_own_pids(state, protected)));
    let mut caps = context(&p.entry.name, grants.clone(), facts.clone(), kv.clone());
    let mut recording = record.map(|_| {
        let state = kv.lock().map(|m| m.clone()).unwrap_or_default();
        crate::recording::Recording::new(&p.entry.name, &info.version, &loaded.sha256, &p.config_json, state)
    });
    if recording.is_some() {
        caps.tape = crate::capabilities::Tape::record();
    }
    let (result, mut caps) = runtime.check(loaded, caps, &p.config_json, limits(policy));
    let result = result.and_then(crate::findings::from_report);
    if let (Some(dir), Some(rec), Some(c)) = (record, recording.as_mut(), caps.as_mut()) {
        if let crate::capabilities::Tape::Record { calls, truncated, .. } = std::mem::take(&mut c.tape) {
            rec.calls = calls;
            rec.truncated = truncated;
        }
        if let Err(e) = rec.save(dir) {
            tracing::error!("recording of {} not written: {e:#}", p.entry.name);
        }
    }
    let mut log = logs_text(caps.as_ref());
    let mut findings = match result {
        Ok(findings) => findings,
        Err(failure) => {
            summary.fail(failure.to_string(), started.elapsed());
            return PluginOutcome { summary, findings: vec![], actions: vec![], recheck: None, state: None, log };
        }
    };
    gate.escalate(&p.entry.name, &mut findings);
    let action_context = || ActionContext {
        plugin: p.entry.name.clone(),
        grants: grants.clone(),
        policy: policy.clone(),
        protected_pids: protected.to_vec(),
        protected_files: protected_files.to_vec(),
        engine: facts.engine_handle(),
    };
    let (actions, recheck) = if let (true, true, Some(intent_log)) = (p.apply_fixes, findings.iter().any(|f| !f.actions.is_empty()), intents) {
        let ctx = action_context();
        let own = Budget::for_plugin(&p.entry.name, p.policy.max_actions);
        let ahead = crate::journal::intents::PluginIntents { log: intent_log, plugin: &p.entry.name };
        let actions = apply::apply(&ctx, &findings, &[&own, budget], |f| gate.may_fix(&p.entry.name, f), &ahead);
        // Re-check against a fresh view of the host, after a supervisor had
        // the moment it needs to respawn what was stopped: a respawn is
        // "persisting", never "fixed".
        if stopped_something(&actions) {
            std::thread::sleep(RESPAWN_SETTLE);
        }
        let fresh = RunFacts::new(policy.clone());
        let caps = context(&p.entry.name, grants, fresh, kv.clone());
        let (again, caps) = runtime.check(loaded, caps, &p.config_json, limits(policy));
        let again = again.and_then(crate::findings::from_report);
        log.push_str(&logs_text(caps.as_ref()));
        match again {
            Ok(f) => {
                show_state_after_fix(&mut findings, &f);
                (actions, Some(f))
            }
            Err(failure) => {
                summary.fail(format!("re-check after fix: {failure}"), started.elapsed());
                (actions, None)
            }
        }
    } else if p.preview {
        // fix --dry-run: what fix would refuse or hold back, with the reason.
        (apply::preview(&action_context(), &findings, |f| gate.may_fix(&p.entry.name, f)), None)
    } else {
        (apply::dry_run(&findings), None)
    };
    summary.duration_ms = started.elapsed().as_millis() as u64;
    let state = kv.lock().ok().map(|m| without_own_pids(m.clone()));
    PluginOutcome { summary, findings, actions, recheck, state, log }
}

/// A reserved key of every plugin's key/value state, set by the host for the
/// length of a call and never stored: the pids of the doctor and its
/// ancestors, which the process table leaves out. With it a plugin can tell
/// "not running" from "not shown": a PID file or a table row naming the
/// Stop button that runs `doctor fix` is not stale (the WIT contract has no
/// field for it, and its process record must not lie).
pub const OWN_PIDS_KEY: &str = "doctor:own-pids";

fn with_own_pids(mut state: BTreeMap<String, String>, own: &[u32]) -> BTreeMap<String, String> {
    state.insert(OWN_PIDS_KEY.to_string(), serde_json::to_string(own).unwrap_or_else(|_| "[]".into()));
    state
}

fn without_own_pids(mut state: BTreeMap<String, String>) -> BTreeMap<String, String> {
    state.remove(OWN_PIDS_KEY);
    state
}

/// How long a re-check waits after a stop: a supervisor (a shell loop,
/// systemd's default `RestartSec=100ms`) restarts its child within it.
const RESPAWN_SETTLE: std::time::Duration = std::time::Duration::from_millis(1000);

fn stopped_something(actions: &[Vec<ActionResult>]) -> bool {
    actions.iter().flatten().any(|a| {
        a.outcome == crate::plan::ActionOutcome::Applied && matches!(a.kind, "stop-process" | "signal-process" | "container-stop")
    })
}

/// A finding without actions describes a state (a table's counts, a
/// summary), and after a fix the operator wants the state the fix left, not
/// the one it started from: take its text and evidence from the re-check.
fn show_state_after_fix(findings: &mut [Finding], recheck: &[Finding]) {
    for f in findings.iter_mut().filter(|f| f.actions.is_empty()) {
        if let Some(after) = recheck.iter().find(|r| r.key == f.key && r.actions.is_empty()) {
            f.message = after.message.clone();
            f.evidence = after.evidence.clone();
        }
    }
}

fn logs_text(caps: Option<&CapabilityContext>) -> String {
    caps.map(|c| c.logs.iter().map(|l| format!("{}: {}\n", l.level, l.message)).collect()).unwrap_or_default()
}

fn record(journal: &mut Journal, run_id: i64, o: &PluginOutcome, report: &mut RunReport) -> Result<(), Fatal> {
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

/// `describe()` of one catalog entry, with no grants and default limits.
pub fn describe_entry(runtime: &PluginRuntime, entry: &Entry) -> Result<PluginInfo, PluginFailure> {
    let bytes = entry.bytes().map_err(|e| PluginFailure::Load(e.to_string()))?;
    let loaded = runtime.load(&bytes)?;
    let policy = Arc::new(Policy::parse(std::path::Path::new("(none)"), "").map_err(|e| PluginFailure::Load(e.to_string()))?);
    let caps = context(&entry.name, EffectiveGrants::none(&entry.name), RunFacts::new(policy.clone()), Default::default());
    runtime.describe(&loaded, caps, limits(&policy))
}

/// Everything `check` would settle before touching the journal: the policy,
/// the plugins it names, their describe() and config keys.
pub fn validate(path: &std::path::Path) -> Result<String, Fatal> {
    let policy = Arc::new(Policy::load(path)?);
    let (catalog, _) = Catalog::discover(&policy.doctor.plugin_dirs);
    let selected = select(&policy, &catalog, &[])?;
    // The same compiled cache as every run: a second validate (and every
    // daemon reload) does not recompile.
    let runtime = PluginRuntime::new(Some(cache_dir(&policy, Path::new(""))))?;
    let prepared = prepare(&runtime, &policy, selected, Mode::Check)?;
    if let Some(p) = prepared.iter().find(|p| p.loaded.is_err()) {
        let why = p.loaded.as_ref().err().map(|e| e.to_string()).unwrap_or_default();
        return Err(policy.error_at_key(&format!("plugins.{}", p.entry.name), format!("plugin {why}")).into());
    }
    let config_warnings = check_configs_through_plugins(&runtime, &policy, &prepared)?;
    let mut warnings = host_wide_scopes(&policy);
    warnings.extend(config_warnings);
    warnings.extend(ungranted_requests(&policy, &prepared));
    for warning in warnings {
        let _ = std::io::Write::write_fmt(&mut std::io::stderr().lock(), format_args!("doctor: warning: {warning}\n"));
    }
    Ok(format!("{} plugin(s) configured", prepared.len()))
}

/// A plugin knows the shape of its own config (nested tables, allowed
/// values) better than its declared keys say: run its read-only `check`
/// with the policy's config and grants, and turn an `invalid: config: …`
/// answer into a policy error at `plugins.NAME.config`. A finding keyed
/// `config:…` is the plugin's remark on a legal but weak config: returned
/// as a warning. Anything else the check says is about the host, not the
/// policy, and is not validate's business.
fn check_configs_through_plugins(runtime: &PluginRuntime, policy: &Arc<Policy>, prepared: &[Prepared]) -> Result<Vec<String>, Fatal> {
    let mut warnings = Vec::new();
    let facts = RunFacts::new(policy.clone());
    for p in prepared {
        let Ok((loaded, info)) = &p.loaded else { continue };
        let grants = EffectiveGrants::new(&p.entry.name, &info.capabilities, &p.policy.grants);
        let caps = context(&p.entry.name, grants, facts.clone(), Default::default());
        let (result, _) = runtime.check(loaded, caps, &p.config_json, limits(policy));
        let result = result.and_then(crate::findings::from_report);
        match result {
            Err(PluginFailure::Returned(text)) => {
                if let Some(why) = text.strip_prefix("invalid: config: ") {
                    return Err(config_error(policy, &p.entry.name, why).into());
                }
            }
            Ok(findings) => {
                for f in findings.iter().filter(|f| f.key.starts_with("config:")) {
                    // Placed at the key the plugin names (evidence `config_key`), else at its config.
                    let key = f.evidence.iter().find(|(k, _)| k == "config_key").map(|(_, v)| format!("config.{v}"));
                    let key = key.unwrap_or_else(|| "config".into());
                    let at = policy.error_at_plugin(&p.entry.name, &key, String::new());
                    warnings.push(format!("{}:{}: plugins.{}.{key}: {}", at.file, at.line, p.entry.name, f.message));
                }
            }
            Err(_) => {}
        }
    }
    Ok(warnings)
}

/// The plugin's words about its config (serde's, usually), placed at the
/// policy line that holds the offending value when the message names one.
fn config_error(policy: &Policy, plugin: &str, why: &str) -> crate::policy::PolicyError {
    // "… at line 1 column 31" points into the JSON doctor built, not the policy.
    let why = why.split(" at line ").next().unwrap_or(why).to_string();
    let mut error = policy.error_at_plugin(plugin, "config", why.clone());
    // serde names the value as `variant` or as string "text".
    let quoted = why.split('`').nth(1).or_else(|| why.split('"').nth(1)).filter(|v| !v.is_empty());
    if let Some(value) = quoted {
        let hit = policy.source.lines().enumerate().skip(error.line.saturating_sub(1)).find(|(_, l)| {
            l.split_once('=').is_some_and(|(_, v)| v.contains(&format!("\"{value}\"")) || v.trim() == value)
        });
        if let Some((i, line)) = hit {
            let key = line.split_once('=').map(|(k, _)| k.trim()).unwrap_or_default();
            error.line = i + 1;
            error.key = format!("plugins.{plugin}.config.{key}");
        }
    }
    error
}

/// Capabilities a plugin requests in `describe()` that its policy does not
/// grant: legal (deny by default), but the calls will come back `denied`.
fn ungranted_requests(policy: &Policy, prepared: &[Prepared]) -> Vec<String> {
    let mut out = Vec::new();
    for p in prepared {
        let Ok((_, info)) = &p.loaded else { continue };
        let missing: Vec<&str> = info.capabilities.iter().map(String::as_str).filter(|c| !p.policy.grants.grants(c)).collect();
        if !missing.is_empty() {
            let e = policy.error_at_key(&format!("plugins.{}", p.entry.name), String::new());
            out.push(format!(
                "{}:{}: plugins.{}: requests {} but the policy does not grant {}; those calls will be denied",
                e.file,
                e.line,
                p.entry.name,
                missing.join(", "),
                if missing.len() == 1 { "it" } else { "them" }
            ));
        }
    }
    out
}

/// Every `scope = "host"` in a plugin's config: a command-line pattern that
/// may match any process on the host, including another deployment's. Legal
/// (the operator said so explicitly), but worth a second look.
pub fn host_wide_scopes(policy: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    for (name, plugin) in &policy.plugins {
        let table = plugin.config_table();
        collect_host_scopes(&toml::Value::Table(table), &format!("plugins.{name}.config"), &mut out);
    }
    out.into_iter()
        .map(|key| {
            // The line lookup knows dotted keys, not array indices.
            let dotted: String = key.split('[').map(|part| part.split_once(']').map_or(part, |(_, rest)| rest)).collect();
            let e = policy.error_at_key(&dotted, String::new());
            format!(
                "{}:{}: {key} = \"host\": its command-line pattern matches processes anywhere on this host, including another deployment's; name a scope (user, unit, cgroup, under) or a PID file instead",
                e.file, e.line
            )
        })
        .collect()
}

fn collect_host_scopes(value: &toml::Value, path: &str, out: &mut Vec<String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let here = format!("{path}.{k}");
                if k == "scope" && v.as_str() == Some("host") {
                    out.push(here);
                } else {
                    collect_host_scopes(v, &here, out);
                }
            }
        }
        toml::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_host_scopes(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}
