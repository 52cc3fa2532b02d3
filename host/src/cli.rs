//! The command line, with the spellings DESIGN §6 fixes.

use crate::catalog::Catalog;
use crate::journal::{query, Journal};
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

#[derive(Args)]
struct Common {
    /// Policy file [default: /etc/doctor/policy.toml, or the XDG config dir]
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Journal file [default: the policy's, else /var/lib/doctor/journal.db or the XDG state dir]
    #[arg(long)]
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
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
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
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// The scheduled entry point: only due plugins; fixes where `fix = "auto"`.
    Run {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
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
    /// Read the journal: recent runs and open findings.
    Journal {
        #[command(flatten)]
        common: Common,
        /// Include resolved findings.
        #[arg(long)]
        all: bool,
        /// How many runs to list.
        #[arg(long, default_value = "20")]
        runs: u32,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
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
            eprintln!("doctor: {e:#}");
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
        Command::Check { common, plugins, format } => run(common, plugins, Mode::Check, format),
        Command::Fix { common, plugins, dry_run, format } => run(common, plugins, Mode::Fix { dry_run }, format),
        Command::Run { common, format } => run(common, Vec::new(), Mode::Scheduled, format),
        Command::Plugins { command: PluginsCommand::List { policy, format } } => plugins_list(policy, format),
        Command::Policy { command: PolicyCommand::Validate { policy } } => validate(policy),
        Command::Journal { common, all, runs, format } => journal(common, all, runs, format),
    }
}

fn run(common: Common, plugins: Vec<String>, mode: Mode, format: Format) -> anyhow::Result<i32> {
    let opts = RunOptions {
        policy: common.policy.unwrap_or_else(crate::paths::default_policy),
        journal: common.journal,
        plugins,
        mode,
    };
    match pipeline::execute(&opts) {
        Ok(report) => {
            match format {
                Format::Json => println!("{}", report.to_json()),
                Format::Human => print!("{}", report.to_human()),
            }
            Ok(report.exit_code)
        }
        Err(fatal) => {
            eprintln!("doctor: {fatal}");
            Ok(EXIT_UNKNOWN)
        }
    }
}

fn plugins_list(policy: Option<PathBuf>, format: Format) -> anyhow::Result<i32> {
    let dirs = match policy {
        Some(p) => Policy::load(&p)?.doctor.plugin_dirs,
        None => Vec::new(),
    };
    let (catalog, warnings) = Catalog::discover(&dirs);
    for w in warnings {
        eprintln!("doctor: {w}");
    }
    let runtime = crate::runtime::Runtime::new(None)?;
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
        Format::Json => println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "plugins": rows }))?),
        Format::Human => {
            for r in &rows {
                println!("{:<24} {:<10} {}", r["name"].as_str().unwrap_or(""), r["version"].as_str().unwrap_or("?"), r["summary"].as_str().unwrap_or(""));
                if let Some(e) = r["error"].as_str() {
                    println!("    error: {e}");
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
            println!("{}: ok ({summary})", path.display());
            Ok(EXIT_OK)
        }
        Err(e) => {
            eprintln!("doctor: {e}");
            Ok(EXIT_UNKNOWN)
        }
    }
}

fn journal(common: Common, all: bool, runs: u32, format: Format) -> anyhow::Result<i32> {
    let path = match common.journal {
        Some(j) => j,
        None => {
            let policy = Policy::load(&common.policy.unwrap_or_else(crate::paths::default_policy))?;
            pipeline::journal_path(&policy, None)
        }
    };
    if !path.exists() {
        anyhow::bail!("journal {} does not exist (no run has written it yet)", path.display());
    }
    let journal = Journal::open(&path)?;
    let run_rows = query::runs(journal.connection(), runs)?;
    let finding_rows = query::findings(journal.connection(), all)?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "runs": run_rows, "findings": finding_rows }))?),
        Format::Human => {
            println!("runs ({}):", journal.path().display());
            for r in &run_rows {
                println!("  #{:<5} {:<8} {:<12} exit {}", r.id, r.mode, r.status, r.exit_code.map(|c| c.to_string()).unwrap_or("-".into()));
            }
            println!("findings:");
            for f in &finding_rows {
                println!("  {:<8} {:<11} {} {}: {}", f.severity.to_uppercase(), f.status, f.plugin, f.key, f.message);
            }
        }
    }
    Ok(EXIT_OK)
}
