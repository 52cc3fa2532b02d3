//! `doctor manpage`: one roff page from the same clap model as `--help`
//! and the completions. clap_mangen renders the top (name, synopsis, global
//! options, the list of commands); every command, nested ones included,
//! then gets its own subsection with its synopsis and options; EXIT STATUS
//! and FILES are written here because clap knows nothing of them.

use roff::{bold, italic, roman, Roff};

pub fn render(cmd: clap::Command) -> anyhow::Result<String> {
    let man = clap_mangen::Man::new(cmd.clone())
        .date("")
        .source(format!("doctor {}", env!("CARGO_PKG_VERSION")))
        .manual("doctor manual");
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        command(&mut roff, "doctor", sub);
    }
    exit_status(&mut roff);
    files(&mut roff);
    environment(&mut roff);
    man.render_version_section(&mut page)?;
    let mut text = String::from_utf8(page)?;
    // The version section closes the page; our sections go before it.
    let cut = text.rfind(".SH VERSION").unwrap_or(text.len());
    text.insert_str(cut, &roff.to_roff());
    Ok(text)
}

/// A subsection per command: `doctor journal prune`, its synopsis, options.
fn command(roff: &mut Roff, parent: &str, cmd: &clap::Command) {
    let name = format!("{parent} {}", cmd.get_name());
    roff.control("SS", [name.as_str()]);
    let mut synopsis = vec![bold(name.clone())];
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        let usage = usage(arg);
        synopsis.push(roman(" "));
        synopsis.push(roman(if arg.is_required_set() {
            usage
        } else {
            format!("[{usage}]")
        }));
    }
    if cmd.has_subcommands() {
        synopsis.push(roman(" "));
        synopsis.push(italic("COMMAND"));
    }
    roff.text(synopsis);
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        roff.control("PP", []);
        roff.text([roman(about.to_string())]);
    }
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        roff.control("TP", []);
        roff.text([bold(usage(arg))]);
        let mut help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_string())
            .collect();
        if !values.is_empty() && arg.get_action().takes_values() {
            help.push_str(&format!(" [possible values: {}]", values.join(", ")));
        }
        if let Some(default) = arg.get_default_values().first() {
            help.push_str(&format!(" [default: {}]", default.to_string_lossy()));
        }
        roff.text([roman(help)]);
    }
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        command(roff, &name, sub);
    }
}

/// `--older-than DURATION`, `PLUGIN`, `--dry-run`.
fn usage(arg: &clap::Arg) -> String {
    let value = arg
        .get_value_names()
        .and_then(|v| v.first())
        .map(|v| v.to_string())
        .unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
    match arg.get_long() {
        Some(long) if arg.get_action().takes_values() => format!("--{long} {value}"),
        Some(long) => format!("--{long}"),
        None => value,
    }
}

fn exit_status(roff: &mut Roff) {
    roff.control("SH", ["EXIT STATUS"]);
    roff.text([roman("As Nagios and Icinga read it:")]);
    for (code, meaning) in [
        ("0", "nothing above info."),
        ("1", "a warning."),
        ("2", "something critical, or a fix that failed, was refused or did not hold."),
        ("3", "unknown: a plugin could not run (and nothing is critical), or the doctor could not do its job (bad policy, unusable journal, usage error)."),
        ("141", "stdout was closed before the report was written (as if killed by SIGPIPE); the run is journaled."),
    ] {
        roff.control("TP", []);
        roff.text([bold(code)]);
        roff.text([roman(meaning)]);
    }
}

fn files(roff: &mut Roff) {
    roff.control("SH", ["FILES"]);
    for (path, meaning) in [
        ("/etc/doctor/policy.toml", "The policy (root). Others: $XDG_CONFIG_HOME/doctor/policy.toml."),
        ("/var/lib/doctor/journal.db", "The journal, SQLite in WAL mode, unless the policy names one (root). Others: $XDG_STATE_HOME/doctor/journal.db."),
        ("/var/cache/doctor", "Compiled plugins (root). Others: $XDG_CACHE_HOME/doctor."),
        ("/run/doctor/fix.lock", "The host-wide lock every fixing doctor takes (root). Others: $XDG_RUNTIME_DIR/doctor/fix.lock."),
        ("/etc/doctor/plugins", "A plugin directory, when the policy lists it in plugin_dirs."),
        ("/etc/systemd/system/doctor.service, doctor.timer", "The units `doctor systemd install` writes; with --user, $XDG_CONFIG_HOME/systemd/user."),
    ] {
        roff.control("TP", []);
        roff.text([italic(path)]);
        roff.text([roman(meaning)]);
    }
}

fn environment(roff: &mut Roff) {
    roff.control("SH", ["ENVIRONMENT"]);
    for (name, meaning) in [
        (
            "DOCTOR_LOG",
            "Log filter (tracing's EnvFilter syntax) when --log-level is not given.",
        ),
        ("NO_COLOR", "When set, --color auto prints no colour."),
        (
            "JOURNAL_STREAM",
            "Set by systemd; when it names stderr, logs go to journald with priorities.",
        ),
    ] {
        roff.control("TP", []);
        roff.text([bold(name)]);
        roff.text([roman(meaning)]);
    }
}
