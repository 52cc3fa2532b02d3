//! The command line: argument parsing and dispatch to the commands, with
//! the spellings the operator guide documents ("Commands").

use crate::catalog::Catalog;
use crate::journal::{query, Journal, JournalLock};
use anyhow::Context as _;
use crate::pipeline::{self, Mode, RunOptions};
use crate::policy::Policy;
use crate::report::{journal_views, EXIT_OK, EXIT_UNKNOWN};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// `doctor --version`: what an operator needs in a bug report.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit: ",
    env!("DOCTOR_GIT_COMMIT"),
    "\nwasmtime: ",
    env!("DOCTOR_WASMTIME_VERSION"),
    "\nplugin WIT: ",
    env!("DOCTOR_WIT_PACKAGES"),
);

#[derive(Parser)]
#[command(
    name = "doctor",
    version,
    long_version = LONG_VERSION,
    about = "Finds and safely fixes drift on Linux hosts, with sandboxed WebAssembly plugins",
    disable_help_subcommand = true
)]
pub(crate) struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes, before or after its name.
#[derive(Args)]
struct Global {
    /// Policy file [default: /etc/doctor/policy.toml as root, else the XDG config dir's doctor/policy.toml]
    #[arg(long, global = true, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Journal file [default: the policy's, else /var/lib/doctor/journal.db as root or the XDG state dir's]
    #[arg(long, global = true, value_name = "FILE")]
    journal: Option<PathBuf>,
    /// Output format; prometheus and nagios are for check, fix and run
    #[arg(long, global = true, value_enum, default_value = "human")]
    format: RunFormat,
    /// Log verbosity on stderr or journald [default: $DOCTOR_LOG, else warn; info under systemd]
    #[arg(long, global = true, value_name = "LEVEL", value_parser = ["error", "warn", "info", "debug", "trace"])]
    log_level: Option<String>,
    /// Colour in the human report: auto (a terminal, and NO_COLOR unset), always or never
    #[arg(long, global = true, value_enum, default_value = "auto", value_name = "WHEN")]
    color: ColorWhen,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum ColorWhen {
    Auto,
    Always,
    Never,
}

/// The formats of everything but a run's report.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Human,
    Json,
}

/// Formats of a run's report.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum RunFormat {
    /// Text for people
    Human,
    /// One JSON document on stdout
    Json,
    /// node_exporter textfile collector (use with --output)
    Prometheus,
    /// One Nagios/Icinga status line with perfdata
    Nagios,
}

impl RunFormat {
    /// Commands other than check, fix and run print human text or JSON.
    fn simple(self, command: &str) -> anyhow::Result<Format> {
        match self {
            RunFormat::Human => Ok(Format::Human),
            RunFormat::Json => Ok(Format::Json),
            other => anyhow::bail!("--format {}: only check, fix and run print it, not {command}", format!("{other:?}").to_lowercase()),
        }
    }
}

#[derive(Args)]
struct Output {
    /// Write the report to FILE atomically instead of stdout
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the checks; change nothing
    Check {
        /// Only this plugin (repeatable)
        #[arg(long = "plugin", value_name = "NAME")]
        plugins: Vec<String>,
        /// Also store every host call of each plugin's check in DIR (one PLUGIN.json each), for `doctor plugins replay`
        #[arg(long, value_name = "DIR")]
        record: Option<PathBuf>,
        #[command(flatten)]
        output: Output,
    },
    /// Run the checks and apply their fixes, then re-check
    Fix {
        /// Only this plugin (repeatable)
        #[arg(long = "plugin", value_name = "NAME")]
        plugins: Vec<String>,
        /// Print the plan, with what the guards and grants would refuse, and touch nothing
        #[arg(long)]
        dry_run: bool,
        /// Fix findings even where the flap breaker has suspended auto-fix
        #[arg(long)]
        override_flap_breaker: bool,
        #[command(flatten)]
        output: Output,
    },
    /// The scheduled entry point: only due plugins; fixes where `fix = "auto"`
    Run {
        #[command(flatten)]
        output: Output,
    },
    /// Run the schedule in the foreground (for hosts without systemd)
    Daemon,
    /// Plugins known to this doctor
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Policy tools
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Read and maintain the journal (default: recent runs and open findings)
    Journal {
        #[command(subcommand)]
        command: Option<JournalCommand>,
        #[command(flatten)]
        filter: JournalFilter,
    },
    /// systemd units for the scheduled run
    Systemd {
        #[command(subcommand)]
        command: SystemdCommand,
    },
    /// The incidents doctor exists for, built in a private temp dir: check, plan, fix, re-check, journal
    Demo {
        /// Keep the temp dir (policy, journal, databases) to explore; its processes are stopped all the same
        #[arg(long)]
        keep: bool,
    },
    /// The demo's stale listener (started by `doctor demo`)
    #[command(hide = true)]
    DemoListen {
        /// The loopback port to hold
        port: u16,
    },
    /// Print a shell completion script on stdout
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout
    Manpage,
}

#[derive(Args)]
struct JournalFilter {
    /// Only runs and findings seen within this long (e.g. 1h, 7d)
    #[arg(long, value_name = "DURATION")]
    since: Option<String>,
    /// Only findings of this plugin
    #[arg(long, value_name = "NAME")]
    plugin: Option<String>,
    /// Only findings of this severity
    #[arg(long, value_parser = ["info", "warning", "critical"])]
    severity: Option<String>,
    /// Findings with this status (default: the open ones, new and persisting)
    #[arg(long, value_parser = ["new", "persisting", "resolved"])]
    status: Option<String>,
    /// How many runs to list
    #[arg(long, default_value = "20", value_name = "N")]
    runs: u32,
}

#[derive(Subcommand)]
enum JournalCommand {
    /// Everything one run recorded: plugins, findings, actions
    Show {
        /// The run's number, as `doctor journal` lists it
        run: i64,
    },
    /// Delete runs older than a duration, and findings resolved before it
    Prune {
        /// Age beyond which runs are deleted (e.g. 30d)
        #[arg(long, value_name = "DURATION")]
        older_than: String,
    },
    /// Close the flap breaker of one finding (its earlier fixes stop counting)
    ResetFlap {
        /// The plugin that reported the finding
        plugin: String,
        /// The finding's key, as the report shows it
        key: String,
    },
}

#[derive(Subcommand)]
enum SystemdCommand {
    /// Print doctor.service and doctor.timer for this policy
    Print {
        /// Also write node_exporter's textfile here on every run
        #[arg(long, value_name = "FILE")]
        prometheus: Option<PathBuf>,
        /// Units for the calling user's systemd manager (`systemctl --user`)
        #[arg(long)]
        user: bool,
    },
    /// Write doctor.service and doctor.timer, then say how to enable them
    Install {
        /// Also write node_exporter's textfile here on every run
        #[arg(long, value_name = "FILE")]
        prometheus: Option<PathBuf>,
        /// Units for the calling user's systemd manager, in the XDG config dir's systemd/user
        #[arg(long)]
        user: bool,
        /// Write the units here [default: /etc/systemd/system, or with --user the XDG config dir's systemd/user]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// The built-in plugins and those in the policy's plugin directories
    List,
    /// What a plugin file is and asks for: WIT package, sha256 (to pin), size, config keys, and each capability next to the policy's grant
    Inspect {
        /// The plugin's .wasm component, or the name of a built-in plugin
        plugin: PathBuf,
    },
    /// Write a new plugin project that builds as it is, with a test and a policy snippet granting exactly what it requests
    New {
        /// The plugin's name (lowercase, digits, hyphens): describe()'s name and the .wasm file stem
        name: String,
        /// The language of the project
        #[arg(long, value_enum, default_value = "rust")]
        lang: crate::scaffold::Lang,
        /// Where to write it [default: ./NAME]; must not exist or be empty
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The doctor-sdk crate to depend on (Rust) [default: this doctor's source tree, when present]
        #[arg(long, value_name = "PATH")]
        sdk: Option<PathBuf>,
    },
    /// Run a plugin against a recording made by `doctor check --record DIR`: same clock, same answers, no host access
    Replay {
        /// The plugin's .wasm component, or the name of a built-in plugin
        plugin: PathBuf,
        /// The directory `check --record` wrote
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Parse and check a policy, including each plugin's config keys
    Validate,
}

pub fn main() -> i32 {
    let nagios = wants_nagios(std::env::args_os());
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            if !e.use_stderr() {
                return EXIT_OK;
            }
            if nagios {
                let text = e.render().to_string();
                let first = text.lines().next().unwrap_or_default();
                nagios_unknown(&format!("usage: {}", first.strip_prefix("error: ").unwrap_or(first)));
            }
            return EXIT_UNKNOWN;
        }
    };
    crate::logging::init(cli.global.log_level.as_deref());
    set_color(cli.global.color);
    let nagios = cli.global.format == RunFormat::Nagios;
    match dispatch(cli.global, cli.command) {
        Ok(code) => code,
        Err(e) => {
            errln!("doctor: {e:#}");
            if nagios {
                nagios_unknown(&e.to_string());
            }
            EXIT_UNKNOWN
        }
    }
}

/// Nagios reads the first line of stdout; a usage error must still give it one.
fn wants_nagios(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    let args: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    args.iter().any(|a| a == "--format=nagios") || args.windows(2).any(|w| w[0] == "--format" && w[1] == "nagios")
}

fn nagios_unknown(why: &str) {
    outln!("DOCTOR UNKNOWN - {}", why.lines().next().unwrap_or_default());
}

/// `--color` and NO_COLOR, settled once for every later write.
fn set_color(when: ColorWhen) {
    let choice = match when {
        ColorWhen::Always => anstream::ColorChoice::Always,
        ColorWhen::Never => anstream::ColorChoice::Never,
        ColorWhen::Auto => anstream::ColorChoice::Auto,
    };
    choice.write_global();
}

fn dispatch(global: Global, command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Check { plugins, record, output } => run(&global, plugins, Mode::Check, false, record, output),
        Command::Fix { plugins, dry_run, override_flap_breaker, output } => {
            run(&global, plugins, Mode::Fix { dry_run }, override_flap_breaker, None, output)
        }
        Command::Run { output } => run(&global, Vec::new(), Mode::Scheduled, false, None, output),
        Command::Daemon => crate::daemon::run(policy_path(&global), global.journal),
        Command::Plugins { command: PluginsCommand::List } => plugins_list(global.policy, global.format.simple("plugins list")?),
        Command::Plugins { command: PluginsCommand::Inspect { plugin } } => {
            let format = global.format.simple("plugins inspect")?;
            plugins_inspect(&plugin, global.policy.as_deref(), format)
        }
        Command::Plugins { command: PluginsCommand::Replay { plugin, dir } } => plugins_replay(&plugin, &dir, global.format.simple("plugins replay")?),
        Command::Plugins { command: PluginsCommand::New { name, lang, dir, sdk } } => plugins_new(&name, lang, dir, sdk),
        Command::Policy { command: PolicyCommand::Validate } => validate(global.policy),
        Command::Journal { command, filter } => {
            let format = global.format.simple("journal")?;
            journal(&global, command, filter, format)
        }
        Command::Systemd { command } => systemd(&global, command),
        Command::Demo { keep } => crate::demo::run(keep),
        Command::DemoListen { port } => crate::demo::listen(port),
        Command::Completions { shell } => {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "doctor", &mut text);
            out!("{}", String::from_utf8_lossy(&text));
            Ok(EXIT_OK)
        }
        Command::Manpage => {
            out!("{}", crate::manpage::render(Cli::command())?);
            Ok(EXIT_OK)
        }
    }
}

/// The command model, for the man page and tests.
pub fn command() -> clap::Command {
    Cli::command()
}

fn policy_path(global: &Global) -> PathBuf {
    global.policy.clone().unwrap_or_else(crate::paths::default_policy)
}

fn run(global: &Global, plugins: Vec<String>, mode: Mode, override_flap_breaker: bool, record: Option<PathBuf>, output: Output) -> anyhow::Result<i32> {
    let opts = RunOptions { policy: policy_path(global), journal: global.journal.clone(), plugins, mode, override_flap_breaker, record };
    let report = match pipeline::execute(&opts) {
        Ok(report) => report,
        Err(fatal) => {
            errln!("doctor: {fatal}");
            if global.format == RunFormat::Nagios {
                nagios_unknown(&fatal.to_string());
            }
            return Ok(EXIT_UNKNOWN);
        }
    };
    if mode == Mode::Scheduled {
        crate::logging::run_summary(&report);
    }
    let text = match global.format {
        RunFormat::Json => report.to_json() + "\n",
        // A scheduled run under systemd has logged its summary; the whole
        // report on stdout would repeat it in the journal every tick.
        RunFormat::Human if mode == Mode::Scheduled && output.output.is_none() && crate::logging::stdout_is_journal() => return Ok(report.exit_code),
        RunFormat::Human if output.output.is_some() => report.to_human(false),
        RunFormat::Human => crate::report::for_stdout(&report.to_human(true)),
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
        Format::Human => out!("{}", crate::report::for_stdout(&report.to_human(true))),
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
    let runtime = crate::capabilities::PluginRuntime::new(Some(cache))?;
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

fn journal(global: &Global, command: Option<JournalCommand>, filter: JournalFilter, format: Format) -> anyhow::Result<i32> {
    let path = match &global.journal {
        Some(j) => j.clone(),
        None => pipeline::journal_path(&Policy::load(&policy_path(global))?, None),
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
            match format {
                Format::Json => outln!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "pruned_runs": runs, "pruned_findings": findings, "older_than": older_than }))?
                ),
                Format::Human => outln!("pruned {runs} run(s) and {findings} resolved finding(s) older than {older_than}"),
            }
            Ok(EXIT_OK)
        }
        Some(JournalCommand::ResetFlap { plugin, key }) => {
            let _lock = JournalLock::acquire(&path, wait)?;
            let journal = Journal::open(&path)?;
            if !journal.reset_flap(&plugin, &key, crate::clock::now_unix_ms())? {
                anyhow::bail!("the journal has no finding {plugin} {key}");
            }
            match format {
                Format::Json => outln!("{}", serde_json::to_string_pretty(&serde_json::json!({ "reset_flap": { "plugin": plugin, "key": key } }))?),
                Format::Human => outln!("flap breaker of {plugin} {key} reset: earlier fixes no longer count"),
            }
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
        Format::Json => outln!("{}", journal_views::journal_json(&run_rows, &finding_rows)?),
        Format::Human => out!("{}", journal_views::journal_human(journal.path(), &run_rows, &finding_rows)),
    }
    Ok(EXIT_OK)
}

fn print_show(detail: &query::RunDetail, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => outln!("{}", journal_views::run_json(detail)?),
        Format::Human => out!("{}", journal_views::run_human(detail)),
    }
    Ok(())
}

fn systemd(global: &Global, command: SystemdCommand) -> anyhow::Result<i32> {
    let (prometheus, user, dir) = match command {
        SystemdCommand::Print { prometheus, user } => (prometheus, user, None),
        SystemdCommand::Install { prometheus, user, dir } => (prometheus, user, Some(install_dir(user, dir)?)),
    };
    let prometheus = prometheus.map(std::path::absolute).transpose()?;
    let policy_file = std::path::absolute(policy_path(global))?;
    let policy = Policy::load(&policy_file)?;
    let journal = std::path::absolute(pipeline::journal_path(&policy, global.journal.as_ref()))?;
    let cache = std::path::absolute(pipeline::cache_dir(&policy, &journal))?;
    let binary = std::env::current_exe().context("locating the doctor binary")?;
    let paths = crate::systemd::Paths { binary: &binary, journal: &journal, cache: &cache, prometheus: prometheus.as_deref() };
    let units = crate::systemd::units(&policy, &paths, user);
    match dir {
        None => {
            outln!("# {}\n{}", crate::systemd::SERVICE_NAME, units.service);
            outln!("# {}\n{}", crate::systemd::TIMER_NAME, units.timer);
        }
        Some(dir) => {
            let written = crate::systemd::install(&dir, &units).with_context(|| format!("writing the units into {}", dir.display()))?;
            for path in written {
                outln!("wrote {}", path.display());
            }
            let systemctl = if user { "systemctl --user" } else { "systemctl" };
            outln!("now: {systemctl} daemon-reload && {systemctl} enable --now {}", crate::systemd::TIMER_NAME);
        }
    }
    Ok(EXIT_OK)
}

/// Where `systemd install` writes. System units need root: say so before
/// anything is written, and offer the user's own manager instead.
fn install_dir(user: bool, dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = dir {
        return Ok(dir);
    }
    if user {
        return crate::paths::user_unit_dir().context("no home directory to find the XDG config dir in (set XDG_CONFIG_HOME or HOME)");
    }
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "installing system units into /etc/systemd/system needs root; run it as root, or `doctor systemd install --user` for units of your own systemd manager (in {})",
            crate::paths::user_unit_dir().map(|d| d.display().to_string()).unwrap_or_else(|| "$XDG_CONFIG_HOME/systemd/user".into())
        );
    }
    Ok(PathBuf::from("/etc/systemd/system"))
}
