//! The command line's model: every command, option and format `doctor`
//! accepts, as clap reads them (also the source of `--help`, the man page
//! and the completions).

use clap::{Args, Parser, Subcommand, ValueEnum};
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
    pub(super) global: Global,
    #[command(subcommand)]
    pub(super) command: Command,
}

/// Options every command takes, before or after its name.
#[derive(Args)]
pub(super) struct Global {
    /// Policy file [default: /etc/doctor/policy.toml as root, else the XDG config dir's doctor/policy.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub(super) policy: Option<PathBuf>,
    /// Journal file [default: the policy's, else /var/lib/doctor/journal.db as root or the XDG state dir's]
    #[arg(long, global = true, value_name = "FILE")]
    pub(super) journal: Option<PathBuf>,
    /// Output format; prometheus and nagios are for check, fix and run
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub(super) format: RunFormat,
    /// Log verbosity on stderr or journald [default: $DOCTOR_LOG, else warn; info under systemd]
    #[arg(long, global = true, value_name = "LEVEL", value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub(super) log_level: Option<String>,
    /// Colour in the human report: auto (a terminal, and NO_COLOR unset), always or never
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        value_name = "WHEN"
    )]
    pub(super) color: ColorWhen,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(super) enum ColorWhen {
    Auto,
    Always,
    Never,
}

/// The formats of everything but a run's report.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Human,
    Json,
}

/// Formats of a run's report.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub(super) enum RunFormat {
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
    pub(super) fn simple(self, command: &str) -> anyhow::Result<Format> {
        match self {
            RunFormat::Human => Ok(Format::Human),
            RunFormat::Json => Ok(Format::Json),
            other => anyhow::bail!(
                "--format {}: only check, fix and run print it, not {command}",
                format!("{other:?}").to_lowercase()
            ),
        }
    }
}

#[derive(Args)]
pub(super) struct Output {
    /// Write the report to FILE atomically instead of stdout
    #[arg(long, value_name = "FILE")]
    pub(super) output: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(super) enum Command {
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
pub(super) struct JournalFilter {
    /// Only runs and findings seen within this long (e.g. 1h, 7d)
    #[arg(long, value_name = "DURATION")]
    pub(super) since: Option<String>,
    /// Only findings of this plugin
    #[arg(long, value_name = "NAME")]
    pub(super) plugin: Option<String>,
    /// Only findings of this severity
    #[arg(long, value_parser = ["info", "warning", "critical"])]
    pub(super) severity: Option<String>,
    /// Findings with this status (default: the open ones, new and persisting)
    #[arg(long, value_parser = ["new", "persisting", "resolved"])]
    pub(super) status: Option<String>,
    /// How many runs to list
    #[arg(long, default_value = "20", value_name = "N")]
    pub(super) runs: u32,
}

#[derive(Subcommand)]
pub(super) enum JournalCommand {
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
    /// Close an interrupted intent that may have taken effect (checked by
    /// hand): it is no longer reported
    ClearIntent {
        /// The intent's number, as its finding (`doctor:interrupted:N`) shows it
        intent: i64,
    },
}

#[derive(Subcommand)]
pub(super) enum SystemdCommand {
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
pub(super) enum PluginsCommand {
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
pub(super) enum PolicyCommand {
    /// Parse and check a policy, including each plugin's config keys
    Validate,
}
