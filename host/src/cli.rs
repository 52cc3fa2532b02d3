//! The command line, with the spellings DESIGN §6 fixes.

/// `print!` that never panics: when stdout is closed (`doctor journal | head -1`)
/// doctor ends quietly with 141, as a process killed by SIGPIPE would. The
/// output is written only after a run is journaled, so nothing is lost.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        if write!(stdout, $($arg)*).and_then(|()| stdout.flush()).is_err() {
            std::process::exit(141);
        }
    }};
}

macro_rules! outln {
    () => { out!("\n") };
    ($($arg:tt)*) => {{ out!($($arg)*); out!("\n"); }};
}

/// `eprintln!` that never panics on a closed stderr.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}


use crate::catalog::Catalog;
use crate::journal::{query, Journal, JournalLock};
use anyhow::Context as _;
use crate::pipeline::{self, Mode, RunOptions};
use crate::policy::Policy;
use crate::report::{EXIT_OK, EXIT_UNKNOWN};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "doctor", version, about = "Finds and safely fixes drift on Linux hosts, with sandboxed WebAssembly plugins")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Human,
    Json,
}

/// Formats of a run's report.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum RunFormat {
    Human,
    Json,
    /// node_exporter textfile collector (use with --output).
    Prometheus,
    /// One Nagios/Icinga status line with perfdata.
    Nagios,
}

#[derive(Args)]
struct Output {
    #[arg(long, value_enum, default_value = "human")]
    format: RunFormat,
    /// Write the report to FILE atomically instead of stdout.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Args)]
struct Common {
    /// Policy file [default: /etc/doctor/policy.toml, or the XDG config dir]
    #[arg(long, global = true)]
    policy: Option<PathBuf>,
    /// Journal file [default: the policy's, else /var/lib/doctor/journal.db or the XDG state dir]
    #[arg(long, global = true)]
    journal: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the checks; change nothing.
    Check {
        #[command(flatten)]
        common: Common,
        /// Only these plugins (repeatable).
        #[arg(long = "plugin")]
        plugins: Vec<String>,
        /// Also store every host call of each plugin's check in DIR
        /// (one PLUGIN.json each), for `doctor plugins replay`.
        #[arg(long, value_name = "DIR")]
        record: Option<PathBuf>,
        #[command(flatten)]
        output: Output,
    },
    /// Run the checks and apply their fixes, then re-check.
    Fix {
        #[command(flatten)]
        common: Common,
        #[arg(long = "plugin")]
        plugins: Vec<String>,
        /// Print the exact plan and touch nothing.
        #[arg(long)]
        dry_run: bool,
        /// Fix findings even where the flap breaker has suspended auto-fix.
        #[arg(long)]
        override_flap_breaker: bool,
        #[command(flatten)]
        output: Output,
    },
    /// The scheduled entry point: only due plugins; fixes where `fix = "auto"`.
    Run {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        output: Output,
    },
    /// Run the schedule in the foreground (for hosts without systemd).
    Daemon {
        #[command(flatten)]
        common: Common,
    },
    /// Plugins known to this doctor.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Read and maintain the journal (default: recent runs and open findings).
    Journal {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        command: Option<JournalCommand>,
        #[command(flatten)]
        filter: JournalFilter,
        #[arg(long, value_enum, default_value = "human", global = true)]
        format: Format,
    },
    /// systemd units for the scheduled run.
    Systemd {
        #[command(subcommand)]
        command: SystemdCommand,
    },
}

#[derive(Args)]
struct JournalFilter {
    /// Only runs and findings seen within this long (e.g. 1h, 7d).
    #[arg(long)]
    since: Option<String>,
    #[arg(long)]
    plugin: Option<String>,
    #[arg(long, value_parser = ["info", "warning", "critical"])]
    severity: Option<String>,
    /// Findings with this status (default: the open ones, new and persisting).
    #[arg(long, value_parser = ["new", "persisting", "resolved"])]
    status: Option<String>,
    /// How many runs to list.
    #[arg(long, default_value = "20")]
    runs: u32,
}

#[derive(Subcommand)]
enum JournalCommand {
    /// Everything one run recorded: plugins, findings, actions.
    Show { run: i64 },
    /// Delete runs older than a duration, and findings resolved before it.
    Prune {
        #[arg(long, value_name = "DURATION")]
        older_than: String,
    },
    /// Close the flap breaker of one finding (its earlier fixes stop counting).
    ResetFlap { plugin: String, key: String },
}

#[derive(Subcommand)]
enum SystemdCommand {
    /// Print doctor.service and doctor.timer for this policy.
    Print {
        #[command(flatten)]
        common: Common,
        /// Also write node_exporter's textfile here on every run.
        #[arg(long, value_name = "FILE")]
        prometheus: Option<PathBuf>,
    },
    /// Write doctor.service and doctor.timer into DIR, then say how to enable them.
    Install {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_name = "FILE")]
        prometheus: Option<PathBuf>,
        #[arg(long, default_value = "/etc/systemd/system")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    List {
        /// Also list the plugin directories of this policy.
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// What a plugin file is and asks for: WIT package, sha256 (to pin),
    /// size, config keys, and each capability next to the policy's grant.
    Inspect {
        /// The plugin's .wasm component, or the name of a built-in plugin.
        plugin: PathBuf,
        /// Show the grants of this policy next to what the plugin requests.
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Write a new plugin project that builds as it is, with a test and a
    /// policy snippet granting exactly what it requests.
    New {
        /// The plugin's name (lowercase, digits, hyphens): describe()'s name and the .wasm file stem.
        name: String,
        #[arg(long, value_enum, default_value = "rust")]
        lang: crate::scaffold::Lang,
        /// Where to write it [default: ./NAME]; must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The doctor-sdk crate to depend on (Rust) [default: this doctor's source tree, when present].
        #[arg(long, value_name = "PATH")]
        sdk: Option<PathBuf>,
    },
    /// Run a plugin against a recording made by `doctor check --record DIR`:
    /// same clock, same answers, no host access; print its report.
    Replay {
        /// The plugin's .wasm component, or the name of a built-in plugin.
        plugin: PathBuf,
        /// The directory `check --record` wrote.
        dir: PathBuf,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Parse and check a policy, including each plugin's config keys.
    Validate {
        #[arg(long)]
        policy: Option<PathBuf>,
    },
}

pub fn main() -> i32 {
    init_logging();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_UNKNOWN } else { EXIT_OK };
        }
    };
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            errln!("doctor: {e:#}");
            EXIT_UNKNOWN
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DOCTOR_LOG").unwrap_or_else(|_| "warn".into());
    let color = std::env::var_os("NO_COLOR").is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(color).with_writer(std::io::stderr).try_init();
}

fn dispatch(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Check { common, plugins, record, output } => run(common, plugins, Mode::Check, false, record, output),
        Command::Fix { common, plugins, dry_run, override_flap_breaker, output } => {
            run(common, plugins, Mode::Fix { dry_run }, override_flap_breaker, None, output)
        }
        Command::Run { common, output } => run(common, Vec::new(), Mode::Scheduled, false, None, output),
        Command::Daemon { common } => crate::daemon::run(policy_path(&common), common.journal),
        Command::Plugins { command: PluginsCommand::List { policy, format } } => plugins_list(policy, format),
        Command::Plugins { command: PluginsCommand::Inspect { plugin, policy, format } } => plugins_inspect(&plugin, policy.as_deref(), format),
        Command::Plugins { command: PluginsCommand::Replay { plugin, dir, format } } => plugins_replay(&plugin, &dir, format),
        Command::Plugins { command: PluginsCommand::New { name, lang, dir, sdk } } => plugins_new(&name, lang, dir, sdk),
        Command::Policy { command: PolicyCommand::Validate { policy } } => validate(policy),
        Command::Journal { common, command, filter, format } => journal(common, command, filter, format),
        Command::Systemd { command } => systemd(command),
    }
}

fn policy_path(common: &Common) -> PathBuf {
    common.policy.clone().unwrap_or_else(crate::paths::default_policy)
}

fn run(common: Common, plugins: Vec<String>, mode: Mode, override_flap_breaker: bool, record: Option<PathBuf>, output: Output) -> anyhow::Result<i32> {
    let opts = RunOptions { policy: policy_path(&common), journal: common.journal, plugins, mode, override_flap_breaker, record };
    let report = match pipeline::execute(&opts) {
        Ok(report) => report,
        Err(fatal) => {
            errln!("doctor: {fatal}");
            if output.format == RunFormat::Nagios {
                outln!("DOCTOR UNKNOWN - {}", fatal.to_string().lines().next().unwrap_or_default());
            }
            return Ok(EXIT_UNKNOWN);
        }
    };
    let text = match output.format {
        RunFormat::Json => report.to_json() + "\n",
        RunFormat::Human => report.to_human(),
        RunFormat::Prometheus => report.to_prometheus(crate::clock::now_unix_ms()),
        RunFormat::Nagios => report.to_nagios() + "\n",
    };
    match &output.output {
        Some(path) => crate::report::write_atomically(path, &text).with_context(|| format!("writing {}", path.display()))?,
        None => out!("{text}"),
    }
    Ok(report.exit_code)
}

fn plugins_inspect(plugin: &std::path::Path, policy: Option<&std::path::Path>, format: Format) -> anyhow::Result<i32> {
    let inspection = crate::inspect::inspect(plugin, policy)?;
    match format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&inspection)?),
        Format::Human => out!("{}", inspection.to_human()),
    }
    Ok(EXIT_OK)
}

fn plugins_new(name: &str, lang: crate::scaffold::Lang, dir: Option<PathBuf>, sdk: Option<PathBuf>) -> anyhow::Result<i32> {
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    let sdk = match sdk {
        Some(path) => crate::scaffold::SdkSource::Path(std::path::absolute(path)?),
        None => crate::scaffold::SdkSource::detect(),
    };
    let written = crate::scaffold::create(name, lang, &dir, &sdk)?;
    for file in written {
        outln!("wrote {}", dir.join(file).display());
    }
    if let crate::scaffold::SdkSource::Unknown = sdk {
        errln!("doctor: note: no doctor source tree here; set the doctor-sdk dependency in Cargo.toml (or pass --sdk PATH)");
    }
    Ok(EXIT_OK)
}

fn plugins_replay(plugin: &std::path::Path, dir: &std::path::Path, format: Format) -> anyhow::Result<i32> {
    let report = crate::recording::replay(plugin, dir)?;
    match format {
        Format::Json => outln!("{}", report.to_json()),
        Format::Human => out!("{}", report.to_human()),
    }
    Ok(report.exit_code)
}

fn plugins_list(policy: Option<PathBuf>, format: Format) -> anyhow::Result<i32> {
    let (dirs, cache) = match policy {
        Some(p) => {
            let policy = Policy::load(&p)?;
            let cache = pipeline::cache_dir(&policy, std::path::Path::new(""));
            (policy.doctor.plugin_dirs, cache)
        }
        None => (Vec::new(), crate::paths::default_cache()),
    };
    let (catalog, warnings) = Catalog::discover(&dirs);
    for w in warnings {
        errln!("doctor: {w}");
    }
    let runtime = crate::runtime::Runtime::new(Some(cache))?;
    let mut rows = Vec::new();
    for entry in &catalog.entries {
        let info = pipeline::describe_entry(&runtime, entry);
        rows.push(serde_json::json!({
            "name": entry.name,
            "source": entry.source.describe(),
            "version": info.as_ref().map(|i| i.version.clone()).ok(),
            "summary": info.as_ref().map(|i| i.summary.clone()).ok(),
            "capabilities": info.as_ref().map(|i| i.capabilities.clone()).ok(),
            "config": info.as_ref().map(|i| i.config.clone()).ok(),
            "error": info.as_ref().err().map(|e| e.to_string()),
        }));
    }
    match format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&serde_json::json!({ "plugins": rows }))?),
        Format::Human => {
            for r in &rows {
                outln!("{:<24} {:<10} {}", r["name"].as_str().unwrap_or(""), r["version"].as_str().unwrap_or("?"), r["summary"].as_str().unwrap_or(""));
                if let Some(e) = r["error"].as_str() {
                    outln!("    error: {e}");
                }
            }
        }
    }
    Ok(EXIT_OK)
}

fn validate(policy: Option<PathBuf>) -> anyhow::Result<i32> {
    let path = policy.unwrap_or_else(crate::paths::default_policy);
    match pipeline::validate(&path) {
        Ok(summary) => {
            outln!("{}: ok ({summary})", path.display());
            Ok(EXIT_OK)
        }
        Err(e) => {
            errln!("doctor: {e}");
            Ok(EXIT_UNKNOWN)
        }
    }
}

fn journal(common: Common, command: Option<JournalCommand>, filter: JournalFilter, format: Format) -> anyhow::Result<i32> {
    let path = match &common.journal {
        Some(j) => j.clone(),
        None => pipeline::journal_path(&Policy::load(&policy_path(&common))?, None),
    };
    if !path.exists() {
        anyhow::bail!("journal {} does not exist (no run has written it yet)", path.display());
    }
    let wait = std::time::Duration::from_secs(30);
    match command {
        None => journal_list(&Journal::open_read_only(&path)?, &filter, format),
        Some(JournalCommand::Show { run }) => {
            let journal = Journal::open_read_only(&path)?;
            let Some(detail) = query::show_run(journal.connection(), run)? else {
                anyhow::bail!("journal {} has no run {run}", path.display());
            };
            print_show(&detail, format)?;
            Ok(EXIT_OK)
        }
        Some(JournalCommand::Prune { older_than }) => {
            let age = crate::policy::parse_duration(&older_than).map_err(|e| anyhow::anyhow!("--older-than: {e}"))?;
            let _lock = JournalLock::acquire(&path, wait)?;
            let mut journal = Journal::open(&path)?;
            let before = crate::clock::now_unix_ms().saturating_sub(age.as_millis() as u64);
            let (runs, findings) = journal.prune(before)?;
            outln!("pruned {runs} run(s) and {findings} resolved finding(s) older than {older_than}");
            Ok(EXIT_OK)
        }
        Some(JournalCommand::ResetFlap { plugin, key }) => {
            let _lock = JournalLock::acquire(&path, wait)?;
            let journal = Journal::open(&path)?;
            if !journal.reset_flap(&plugin, &key, crate::clock::now_unix_ms())? {
                anyhow::bail!("the journal has no finding {plugin} {key}");
            }
            outln!("flap breaker of {plugin} {key} reset: earlier fixes no longer count");
            Ok(EXIT_OK)
        }
    }
}

fn journal_list(journal: &Journal, filter: &JournalFilter, format: Format) -> anyhow::Result<i32> {
    let since_ms = match &filter.since {
        Some(s) => {
            let age = crate::policy::parse_duration(s).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
            Some(crate::clock::now_unix_ms().saturating_sub(age.as_millis() as u64))
        }
        None => None,
    };
    let wanted = query::Filter { since_ms, plugin: filter.plugin.clone(), severity: filter.severity.clone(), status: filter.status.clone() };
    let run_rows = query::runs(journal.connection(), filter.runs, since_ms)?;
    let finding_rows = query::findings(journal.connection(), &wanted)?;
    match format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&serde_json::json!({ "runs": run_rows, "findings": finding_rows }))?),
        Format::Human => {
            outln!("runs ({}):", journal.path().display());
            for r in &run_rows {
                let code = r.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into());
                outln!("  #{:<5} {} {:<8} {:<12} exit {code}", r.id, when(r.started_at), r.mode, r.status);
            }
            outln!("findings:");
            for f in &finding_rows {
                outln!("  {:<8} {:<11} {} {}: {}", f.severity.to_uppercase(), f.status, f.plugin, f.key, f.message);
            }
        }
    }
    Ok(EXIT_OK)
}

fn print_show(detail: &query::RunDetail, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        outln!("{}", serde_json::to_string_pretty(detail)?);
        return Ok(());
    }
    let r = &detail.run;
    outln!("run #{} {} {} {} exit {}", r.id, when(r.started_at), r.mode, r.status, r.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()));
    for p in &detail.plugins {
        let error = p["error"].as_str().map(|e| format!(" — {e}")).unwrap_or_default();
        outln!("  plugin {} {} {} ms{error}", p["plugin"].as_str().unwrap_or(""), p["outcome"].as_str().unwrap_or(""), p["duration_ms"]);
    }
    for o in &detail.observations {
        outln!(
            "  {:<8} {:<10} {} {}: {}",
            o["severity"].as_str().unwrap_or("").to_uppercase(),
            o["status"].as_str().unwrap_or(""),
            o["plugin"].as_str().unwrap_or(""),
            o["key"].as_str().unwrap_or(""),
            o["message"].as_str().unwrap_or("")
        );
        for a in detail.actions.iter().filter(|a| a["plugin"] == o["plugin"] && a["finding_key"] == o["key"]) {
            outln!("      {} {}: {} {}", a["kind"].as_str().unwrap_or(""), a["outcome"].as_str().unwrap_or(""), a["description"].as_str().unwrap_or(""), a["detail"].as_str().unwrap_or(""));
        }
    }
    Ok(())
}

/// Journal times (unix ms) as UTC text.
fn when(unix_ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

fn systemd(command: SystemdCommand) -> anyhow::Result<i32> {
    let (common, prometheus, dir) = match command {
        SystemdCommand::Print { common, prometheus } => (common, prometheus, None),
        SystemdCommand::Install { common, prometheus, dir } => (common, prometheus, Some(dir)),
    };
    let prometheus = prometheus.map(std::path::absolute).transpose()?;
    let policy_file = std::path::absolute(policy_path(&common))?;
    let policy = Policy::load(&policy_file)?;
    let journal = std::path::absolute(pipeline::journal_path(&policy, common.journal.as_ref()))?;
    let cache = std::path::absolute(pipeline::cache_dir(&policy, &journal))?;
    let binary = std::env::current_exe().context("locating the doctor binary")?;
    let paths = crate::systemd::Paths { binary: &binary, journal: &journal, cache: &cache, prometheus: prometheus.as_deref() };
    let units = crate::systemd::units(&policy, &paths);
    match dir {
        None => {
            outln!("# {}\n{}", crate::systemd::SERVICE_NAME, units.service);
            outln!("# {}\n{}", crate::systemd::TIMER_NAME, units.timer);
        }
        Some(dir) => {
            for path in crate::systemd::install(&dir, &units)? {
                outln!("wrote {}", path.display());
            }
            outln!("now: systemctl daemon-reload && systemctl enable --now {}", crate::systemd::TIMER_NAME);
        }
    }
    Ok(EXIT_OK)
}
