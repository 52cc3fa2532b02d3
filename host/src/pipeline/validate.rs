//! `policy validate`: everything a run would settle before touching the
//! journal (the policy, its plugins, their config keys), each plugin's own
//! read-only check of its config, and warnings about legal but risky
//! policies (host-wide scopes, requested but ungranted capabilities).

use super::prepare::{context, limits, prepare, Prepared};
use super::{cache_dir, select, Fatal, Mode};
use crate::capabilities::{EffectiveGrants, RunFacts};
use crate::catalog::Catalog;
use crate::policy::{Policy, ProcessScope};
use crate::runtime::PluginFailure;
use crate::worker::Sandbox;
use std::path::Path;
use std::sync::Arc;

/// Everything `check` would settle before touching the journal: the policy,
/// the plugins it names, their describe() and config keys.
pub fn validate(path: &std::path::Path) -> Result<String, Fatal> {
    let policy = Arc::new(Policy::load(path)?);
    let (catalog, _) = Catalog::discover(&policy.doctor.plugin_dirs);
    let selected = select(&policy, &catalog, &[])?;
    // The same compiled cache as every run: a second validate (and every
    // daemon reload) does not recompile.
    let runtime = Sandbox::new(Some(cache_dir(&policy, Path::new(""))))?;
    let prepared = prepare(&runtime, &policy, selected, Mode::Check)?;
    if let Some(p) = prepared.iter().find(|p| p.loaded.is_err()) {
        let why = p
            .loaded
            .as_ref()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        return Err(policy
            .error_at_key(
                &format!("plugins.{}", p.entry.name),
                format!("plugin {why}"),
            )
            .into());
    }
    let config_warnings = check_configs_through_plugins(&runtime, &policy, &prepared)?;
    let mut warnings = host_wide_scopes(&policy);
    warnings.extend(host_wide_grants(&policy));
    warnings.extend(config_warnings);
    warnings.extend(ungranted_requests(&policy, &prepared));
    warnings.extend(postgres_roles(&policy));
    warnings.extend(unwatched_engines(&policy, Path::new("/run")));
    for warning in warnings {
        let _ = std::io::Write::write_fmt(
            &mut std::io::stderr().lock(),
            format_args!("doctor: warning: {warning}\n"),
        );
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
fn check_configs_through_plugins(
    runtime: &Sandbox,
    policy: &Arc<Policy>,
    prepared: &[Prepared],
) -> Result<Vec<String>, Fatal> {
    let mut warnings = Vec::new();
    let facts = RunFacts::new(policy.clone());
    for p in prepared {
        let Ok((loaded, info)) = &p.loaded else {
            continue;
        };
        let _span = crate::logging::plugin_span(&p.entry.name).entered();
        let grants = EffectiveGrants::new(&p.entry.name, &info.capabilities, &p.policy.grants);
        let caps = context(&p.entry.name, grants, facts.clone(), Default::default());
        let (result, _) =
            crate::findings::check(runtime, loaded, caps, &p.config_json, limits(policy));
        match result {
            Err(PluginFailure::Returned(text)) => {
                if let Some(why) = text.strip_prefix("invalid: config: ") {
                    return Err(config_error(policy, &p.entry.name, why).into());
                }
            }
            Ok(findings) => {
                for f in findings.iter().filter(|f| f.key.starts_with("config:")) {
                    // Placed at the key the plugin names (evidence `config_key`), else at its config.
                    let key = f
                        .evidence
                        .iter()
                        .find(|(k, _)| k == "config_key")
                        .map(|(_, v)| format!("config.{v}"));
                    let key = key.unwrap_or_else(|| "config".into());
                    let at = policy.error_at_plugin(&p.entry.name, &key, String::new());
                    warnings.push(format!(
                        "{}:{}: plugins.{}.{key}: {}",
                        at.file, at.line, p.entry.name, f.message
                    ));
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
    let quoted = why
        .split('`')
        .nth(1)
        .or_else(|| why.split('"').nth(1))
        .filter(|v| !v.is_empty());
    if let Some(value) = quoted {
        let hit = policy
            .source
            .lines()
            .enumerate()
            .skip(error.line.saturating_sub(1))
            .find(|(_, l)| {
                l.split_once('=')
                    .is_some_and(|(_, v)| v.contains(&format!("\"{value}\"")) || v.trim() == value)
            });
        if let Some((i, line)) = hit {
            let key = line
                .split_once('=')
                .map(|(k, _)| k.trim())
                .unwrap_or_default();
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
        let missing: Vec<&str> = info
            .capabilities
            .iter()
            .map(String::as_str)
            .filter(|c| !p.policy.grants.grants(c))
            .collect();
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
        collect_host_scopes(
            &toml::Value::Table(table),
            &format!("plugins.{name}.config"),
            &mut out,
        );
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

/// Every `grants.processes = true` (or `"host"`): the plugin sees every
/// process of the host with its command line, and command lines carry
/// secrets; and every signal grant that thereby reaches the whole host.
/// Each PostgreSQL database a plugin is granted: connect as doctor will,
/// and say what is missing or too much — plain text to a remote server,
/// a superuser, BYPASSRLS or owning role, a table the role cannot read or
/// (with `sqlite_write`) update. A database that cannot be reached now is a
/// warning too: it may be up by the time the timer runs.
fn postgres_roles(policy: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    for (label, db) in &policy.databases {
        let Some(target) = db.postgres() else {
            continue;
        };
        let key = format!("databases.{label}.url");
        let e = policy.error_at_key(&key, String::new());
        let at = format!("{}:{}: {key}", e.file, e.line);
        if target.is_remote() && target.tls == crate::policy::TlsMode::Disable {
            out.push(format!(
                "{at}: sslmode=disable to a remote server: the password and the rows cross the network in plain text"
            ));
        }
        let tables = granted_tables(policy, label);
        if tables.is_empty() {
            continue;
        }
        let deadline = std::time::Instant::now() + target.connect_timeout;
        let session = match crate::facts::postgres::connect(target, deadline) {
            Ok(session) => session,
            Err(e) => {
                out.push(format!("{at}: {e}"));
                continue;
            }
        };
        match session.role_warnings(&tables, deadline + target.connect_timeout) {
            Ok(warnings) => out.extend(warnings.into_iter().map(|w| format!("{at}: {w}"))),
            Err(e) => out.push(format!("{at}: checking the role: {e}")),
        }
    }
    out
}

/// Engine sockets on this host that no engine section names, when a plugin
/// watches containers: that engine's containers would go unwatched (root
/// Podman beside a user's rootless Podman was incident 003).
fn unwatched_engines(policy: &Policy, run: &Path) -> Vec<String> {
    if !policy.plugins.values().any(|p| p.grants.containers) {
        return Vec::new();
    }
    let named: Vec<std::path::PathBuf> = policy
        .container_engines
        .values()
        .map(|e| std::fs::canonicalize(&e.socket).unwrap_or_else(|_| e.socket.clone()))
        .collect();
    crate::facts::engines::discover(run)
        .into_iter()
        .filter(|s| !named.contains(s))
        .map(|s| {
            format!(
                "{}: an engine's socket no [container_engines.NAME] names: its containers are not watched (add one with socket = {:?})",
                policy.file.display(),
                s.display().to_string()
            )
        })
        .collect()
}

/// The tables plugins name for `label` (`config.db` = label, `config.table`),
/// and whether one of them may write there.
fn granted_tables(policy: &Policy, label: &str) -> Vec<(String, bool)> {
    let mut tables: Vec<(String, bool)> = Vec::new();
    for plugin in policy.plugins.values() {
        if !plugin.grants.sqlite.iter().any(|l| l == label) {
            continue;
        }
        let Some(config) = plugin.config.as_ref().map(|c| c.get_ref()) else {
            continue;
        };
        if config.get("db").and_then(|v| v.as_str()) != Some(label) {
            continue;
        }
        if let Some(table) = config.get("table").and_then(|v| v.as_str()) {
            let write = plugin.grants.sqlite_write.iter().any(|l| l == label);
            match tables.iter_mut().find(|(t, _)| t == table) {
                Some(seen) => seen.1 |= write,
                None => tables.push((table.to_string(), write)),
            }
        }
    }
    tables
}

pub fn host_wide_grants(policy: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    for (name, plugin) in &policy.plugins {
        let grants = &plugin.grants;
        if grants.processes == ProcessScope::Host {
            let key = format!("plugins.{name}.grants.processes");
            let e = policy.error_at_key(&key, String::new());
            out.push(format!(
                "{}:{}: {key} = true: the plugin sees every process of this host and its command line (which may carry secrets); grant a scope instead: {{ user, unit, cgroup, under }}",
                e.file, e.line
            ));
        }
        let signal_host_wide = grants.signal.as_ref().is_some_and(|s| {
            s.scope == ProcessScope::Host
                || (s.scope == ProcessScope::None
                    && !matches!(grants.processes, ProcessScope::Within(_)))
        });
        if signal_host_wide {
            let key = format!("plugins.{name}.grants.signal");
            let e = policy.error_at_key(&key, String::new());
            out.push(format!(
                "{}:{}: {key}: its patterns reach matching processes anywhere on this host, including another deployment's; give it a scope (grants.signal.scope, or a scoped grants.processes)",
                e.file, e.line
            ));
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::unwatched_engines;
    use crate::policy::Policy;
    use std::os::unix::net::UnixListener;

    #[test]
    fn an_engine_socket_no_section_names_is_a_warning_when_containers_are_watched() {
        let run = tempfile::tempdir().unwrap();
        for dir in ["podman", "user/1000/podman"] {
            std::fs::create_dir_all(run.path().join(dir)).unwrap();
        }
        let root = run.path().join("podman/podman.sock");
        let rootless = run.path().join("user/1000/podman/podman.sock");
        let _bound = [&root, &rootless].map(|s| UnixListener::bind(s).unwrap());
        let policy = |grant: &str| {
            Policy::parse(
                std::path::Path::new("policy.toml"),
                &format!(
                    "[container_engines.root]\nsocket = {:?}\n\n[plugins.container-caps-checker]\n{grant}\n",
                    root.display().to_string()
                ),
            )
            .unwrap()
        };
        let warnings = unwatched_engines(&policy("grants.containers = true"), run.path());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("user/1000/podman/podman.sock"),
            "{warnings:?}"
        );
        assert!(
            unwatched_engines(&policy(""), run.path()).is_empty(),
            "no plugin watches containers: nothing to say"
        );
    }
}
