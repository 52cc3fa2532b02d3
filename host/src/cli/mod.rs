//! The command line: parsing (the model is `args.rs`) and dispatch to the
//! commands, with the spellings the operator guide documents ("Commands").

mod args;

use crate::catalog::Catalog;
use crate::journal::{query, Journal, JournalLock};
use crate::pipeline::{self, Mode, RunOptions};
use crate::policy::Policy;
use crate::report::{journal_views, EXIT_OK, EXIT_UNKNOWN};
use anyhow::Context as _;
use args::{
    Cli, ColorWhen, Command, Format, Global, JournalCommand, JournalFilter, Output, PluginsCommand,
    PolicyCommand, RunFormat, SystemdCommand,
};
use clap::{CommandFactory, Parser};
use std::path::PathBuf;

pub fn main() -> i32 {
    // Workers are reaped by pid; a SIGCHLD ignored by whoever started
    // doctor would make the kernel reap them first, and their pids free.
    // SAFETY: resetting one signal's disposition to its default.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    match std::env::args_os()
        .nth(1)
        .as_deref()
        .and_then(|a| a.to_str())
    {
        Some(crate::worker::child::WORKER_ARG) => return crate::worker::child::main(),
        Some(crate::worker::forkserver::FORK_SERVER_ARG) => {
            return crate::worker::forkserver::main()
        }
        _ => {}
    }
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
                nagios_unknown(&format!(
                    "usage: {}",
                    first.strip_prefix("error: ").unwrap_or(first)
                ));
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
    args.iter().any(|a| a == "--format=nagios")
        || args
            .windows(2)
            .any(|w| w[0] == "--format" && w[1] == "nagios")
}

fn nagios_unknown(why: &str) {
    outln!(
        "DOCTOR UNKNOWN - {}",
        why.lines().next().unwrap_or_default()
    );
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
        Command::Check {
            plugins,
            record,
            output,
        } => run(&global, plugins, Mode::Check, false, record, output),
        Command::Fix {
            plugins,
            dry_run,
            override_flap_breaker,
            output,
        } => run(
            &global,
            plugins,
            Mode::Fix { dry_run },
            override_flap_breaker,
            None,
            output,
        ),
        Command::Run { output } => run(&global, Vec::new(), Mode::Scheduled, false, None, output),
        Command::Daemon => crate::daemon::run(policy_path(&global), global.journal),
        Command::Plugins {
            command: PluginsCommand::List,
        } => plugins_list(global.policy, global.format.simple("plugins list")?),
        Command::Plugins {
            command: PluginsCommand::Inspect { plugin },
        } => {
            let format = global.format.simple("plugins inspect")?;
            plugins_inspect(&plugin, global.policy.as_deref(), format)
        }
        Command::Plugins {
            command: PluginsCommand::Replay { plugin, dir },
        } => plugins_replay(&plugin, &dir, global.format.simple("plugins replay")?),
        Command::Plugins {
            command:
                PluginsCommand::New {
                    name,
                    lang,
                    dir,
                    sdk,
                },
        } => plugins_new(&name, lang, dir, sdk),
        Command::Policy {
            command: PolicyCommand::Validate,
        } => validate(global.policy),
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
    global
        .policy
        .clone()
        .unwrap_or_else(crate::paths::default_policy)
}

fn run(
    global: &Global,
    plugins: Vec<String>,
    mode: Mode,
    override_flap_breaker: bool,
    record: Option<PathBuf>,
    output: Output,
) -> anyhow::Result<i32> {
    let opts = RunOptions {
        policy: policy_path(global),
        journal: global.journal.clone(),
        plugins,
        mode,
        override_flap_breaker,
        record,
    };
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
        RunFormat::Human
            if mode == Mode::Scheduled
                && output.output.is_none()
                && crate::logging::stdout_is_journal() =>
        {
            return Ok(report.exit_code)
        }
        RunFormat::Human if output.output.is_some() => report.to_human(false),
        RunFormat::Human => crate::report::for_stdout(&report.to_human(true)),
        RunFormat::Prometheus => report.to_prometheus(crate::clock::now_unix_ms()),
        RunFormat::Nagios => report.to_nagios() + "\n",
    };
    match &output.output {
        Some(path) => crate::report::write_atomically(path, &text)
            .with_context(|| format!("writing {}", path.display()))?,
        None => out!("{text}"),
    }
    Ok(report.exit_code)
}

fn plugins_inspect(
    plugin: &std::path::Path,
    policy: Option<&std::path::Path>,
    format: Format,
) -> anyhow::Result<i32> {
    let inspection = crate::inspect::inspect(plugin, policy)?;
    match format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&inspection)?),
        Format::Human => out!("{}", inspection.to_human()),
    }
    Ok(EXIT_OK)
}

fn plugins_new(
    name: &str,
    lang: crate::scaffold::Lang,
    dir: Option<PathBuf>,
    sdk: Option<PathBuf>,
) -> anyhow::Result<i32> {
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

fn plugins_replay(
    plugin: &std::path::Path,
    dir: &std::path::Path,
    format: Format,
) -> anyhow::Result<i32> {
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
    let runtime = crate::worker::Sandbox::new(Some(cache))?;
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
        Format::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "plugins": rows }))?
        ),
        Format::Human => {
            for r in &rows {
                outln!(
                    "{:<24} {:<10} {}",
                    r["name"].as_str().unwrap_or(""),
                    r["version"].as_str().unwrap_or("?"),
                    r["summary"].as_str().unwrap_or("")
                );
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

fn journal(
    global: &Global,
    command: Option<JournalCommand>,
    filter: JournalFilter,
    format: Format,
) -> anyhow::Result<i32> {
    let path = match &global.journal {
        Some(j) => j.clone(),
        None => pipeline::journal_path(&Policy::load(&policy_path(global))?, None),
    };
    if !path.exists() {
        anyhow::bail!(
            "journal {} does not exist (no run has written it yet)",
            path.display()
        );
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
            let age = crate::policy::parse_duration(&older_than)
                .map_err(|e| anyhow::anyhow!("--older-than: {e}"))?;
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
                Format::Json => outln!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "reset_flap": { "plugin": plugin, "key": key } })
                    )?
                ),
                Format::Human => {
                    outln!("flap breaker of {plugin} {key} reset: earlier fixes no longer count")
                }
            }
            Ok(EXIT_OK)
        }
        Some(JournalCommand::ClearIntent { intent }) => {
            let _lock = JournalLock::acquire(&path, wait)?;
            let journal = Journal::open(&path)?;
            let now = crate::clock::now_unix_ms();
            if !crate::journal::intents::clear(journal.connection(), intent, now)? {
                anyhow::bail!("intent {intent} is not an open interrupted intent of this journal");
            }
            match format {
                Format::Json => outln!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "cleared_intent": intent }))?
                ),
                Format::Human => outln!("intent {intent} cleared: it is no longer reported"),
            }
            Ok(EXIT_OK)
        }
    }
}

fn journal_list(journal: &Journal, filter: &JournalFilter, format: Format) -> anyhow::Result<i32> {
    let since_ms = match &filter.since {
        Some(s) => {
            let age =
                crate::policy::parse_duration(s).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
            Some(crate::clock::now_unix_ms().saturating_sub(age.as_millis() as u64))
        }
        None => None,
    };
    let wanted = query::Filter {
        since_ms,
        plugin: filter.plugin.clone(),
        severity: filter.severity.clone(),
        status: filter.status.clone(),
    };
    let run_rows = query::runs(journal.connection(), filter.runs, since_ms)?;
    let finding_rows = query::findings(journal.connection(), &wanted)?;
    match format {
        Format::Json => outln!("{}", journal_views::journal_json(&run_rows, &finding_rows)?),
        Format::Human => out!(
            "{}",
            journal_views::journal_human(journal.path(), &run_rows, &finding_rows)
        ),
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
        SystemdCommand::Install {
            prometheus,
            user,
            dir,
        } => (prometheus, user, Some(install_dir(user, dir)?)),
    };
    let prometheus = prometheus.map(std::path::absolute).transpose()?;
    let policy_file = std::path::absolute(policy_path(global))?;
    let policy = Policy::load(&policy_file)?;
    let journal = std::path::absolute(pipeline::journal_path(&policy, global.journal.as_ref()))?;
    let cache = std::path::absolute(pipeline::cache_dir(&policy, &journal))?;
    let binary = std::env::current_exe().context("locating the doctor binary")?;
    let paths = crate::systemd::Paths {
        binary: &binary,
        journal: &journal,
        cache: &cache,
        prometheus: prometheus.as_deref(),
    };
    let units = crate::systemd::units(&policy, &paths, user);
    match dir {
        None => {
            outln!("# {}\n{}", crate::systemd::SERVICE_NAME, units.service);
            outln!("# {}\n{}", crate::systemd::TIMER_NAME, units.timer);
        }
        Some(dir) => {
            let written = crate::systemd::install(&dir, &units)
                .with_context(|| format!("writing the units into {}", dir.display()))?;
            for path in written {
                outln!("wrote {}", path.display());
            }
            let systemctl = if user {
                "systemctl --user"
            } else {
                "systemctl"
            };
            outln!(
                "now: {systemctl} daemon-reload && {systemctl} enable --now {}",
                crate::systemd::TIMER_NAME
            );
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
        return crate::paths::user_unit_dir().context(
            "no home directory to find the XDG config dir in (set XDG_CONFIG_HOME or HOME)",
        );
    }
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "installing system units into /etc/systemd/system needs root; run it as root, or `doctor systemd install --user` for units of your own systemd manager (in {})",
            crate::paths::user_unit_dir().map(|d| d.display().to_string()).unwrap_or_else(|| "$XDG_CONFIG_HOME/systemd/user".into())
        );
    }
    Ok(PathBuf::from("/etc/systemd/system"))
}
