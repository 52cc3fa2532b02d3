//! Loading the chosen plugins side by side (pin checked before anything
//! compiles), their `describe()`, and each one's config as JSON with the
//! defaults it declares filled in.

use super::{Fatal, Mode};
use crate::capabilities::{CapabilityContext, EffectiveGrants, RunFacts, KNOWN_CAPABILITIES};
use crate::catalog::Entry;
use crate::policy::{FixMode, PluginPolicy, Policy};
use crate::runtime::{Limits, PluginFailure, PluginInfo};
use crate::worker::{LoadedPlugin, Sandbox};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A plugin chosen for this run, loaded and described.
pub(super) struct Prepared {
    pub entry: Entry,
    pub policy: PluginPolicy,
    pub loaded: Result<(LoadedPlugin, PluginInfo), PluginFailure>,
    pub config_json: String,
    pub apply_fixes: bool,
    /// `fix --dry-run`: evaluate grants and guards for the plan.
    pub preview: bool,
}

/// Load, describe, and check each plugin's config against what it declares.
/// Plugins load side by side: compiling is the slow part, and N plugins
/// that loop in `describe()` then cost one deadline, not N.
pub(super) fn prepare(
    runtime: &Sandbox,
    policy: &Arc<Policy>,
    chosen: Vec<(Entry, PluginPolicy)>,
    mode: Mode,
) -> Result<Vec<Prepared>, Fatal> {
    let limits = limits(policy);
    let facts = RunFacts::new(policy.clone());
    let loaded: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = chosen
            .iter()
            .map(|(entry, plugin_policy)| {
                scope.spawn(|| load(runtime, entry, plugin_policy, policy, &facts, limits))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(Fatal::Usage("a plugin loader thread panicked".into())))
            })
            .collect()
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
        out.push(Prepared {
            entry,
            policy: plugin_policy,
            loaded,
            config_json,
            apply_fixes,
            preview,
        });
    }
    Ok(out)
}

pub(super) fn limits(policy: &Policy) -> Limits {
    Limits {
        memory_bytes: policy.doctor.plugin_memory,
        timeout: policy.doctor.plugin_timeout,
    }
}

fn load(
    runtime: &Sandbox,
    entry: &Entry,
    plugin_policy: &PluginPolicy,
    policy: &Policy,
    facts: &Arc<RunFacts>,
    limits: Limits,
) -> Result<Result<(LoadedPlugin, PluginInfo), PluginFailure>, Fatal> {
    let bytes = match entry.bytes() {
        Ok(b) => b,
        Err(e) => {
            return Ok(Err(PluginFailure::Load(format!(
                "{}: {e}",
                entry.source.describe()
            ))))
        }
    };
    // The pin is checked on the bytes, before anything compiles them.
    let sha256 = entry.sha256(&bytes);
    if let Some(pin) = &plugin_policy.sha256 {
        if !pin.eq_ignore_ascii_case(&sha256) {
            return Err(policy
                .error_at_plugin(
                    &entry.name,
                    "sha256",
                    format!(
                        "{} has sha256 {sha256}, the policy pins {pin}",
                        entry.source.describe()
                    ),
                )
                .into());
        }
    }
    let loaded = match load_code(runtime, entry, bytes, sha256) {
        Ok(l) => l,
        Err(e) => return Ok(Err(e)),
    };
    let caps = context(
        &entry.name,
        EffectiveGrants::none(&entry.name),
        facts.clone(),
        Default::default(),
    );
    // Loading stays outside the plugin's span: wasmtime's debug lines about
    // the code it maps are not the plugin's.
    let info = match crate::logging::plugin_span(&entry.name)
        .in_scope(|| runtime.describe(&loaded, caps, limits))
    {
        Ok(info) => info,
        Err(e) => return Ok(Err(e)),
    };
    if info.name != entry.name {
        return Ok(Err(PluginFailure::InvalidOutput(format!(
            "describe() says its name is {:?}, not {:?}",
            info.name, entry.name
        ))));
    }
    if let Some(unknown) = info
        .capabilities
        .iter()
        .find(|c| !KNOWN_CAPABILITIES.contains(&c.as_str()))
    {
        return Ok(Err(PluginFailure::InvalidOutput(format!(
            "describe() requests unknown capability {unknown:?}"
        ))));
    }
    Ok(Ok((loaded, info)))
}

/// The plugin's `config` table as JSON, defaults filled in from `describe()`;
/// unknown and missing required keys are policy errors.
fn config_json(
    policy: &Policy,
    name: &str,
    plugin: &PluginPolicy,
    info: &PluginInfo,
) -> Result<String, Fatal> {
    let table = &plugin.config_table();
    let declared: Vec<&str> = info.config.iter().map(|k| k.name.as_str()).collect();
    for key in table.keys() {
        if !declared.contains(&key.as_str()) {
            return Err(policy
                .error_at_plugin(
                    name,
                    &format!("config.{key}"),
                    format!(
                        "unknown config key (plugin {name} declares: {})",
                        declared.join(", ")
                    ),
                )
                .into());
        }
    }
    let mut json = serde_json::to_value(table).map_err(|e| Fatal::Internal(e.into()))?;
    let object = json
        .as_object_mut()
        .ok_or_else(|| Fatal::Usage("config must be a table".into()))?;
    for key in &info.config {
        if object.contains_key(&key.name) {
            continue;
        }
        if key.default.is_empty() {
            return Err(policy
                .error_at_plugin(
                    name,
                    "config",
                    format!("missing required key `{}`: {}", key.name, key.description),
                )
                .into());
        }
        let value = serde_json::from_str(&key.default)
            .unwrap_or(serde_json::Value::String(key.default.clone()));
        object.insert(key.name.clone(), value);
    }
    Ok(json.to_string())
}

/// `kv` is the plugin's state, shared by its check and its re-check.
pub(super) fn context(
    plugin: &str,
    grants: EffectiveGrants,
    facts: Arc<RunFacts>,
    kv: Arc<Mutex<BTreeMap<String, String>>>,
) -> CapabilityContext {
    CapabilityContext::new(plugin, grants, facts, kv)
}

/// A catalog entry's code for its workers: a built-in's precompiled into
/// doctor, anything else compiled (or found in the cache).
fn load_code(
    runtime: &Sandbox,
    entry: &Entry,
    bytes: std::borrow::Cow<'static, [u8]>,
    sha256: String,
) -> Result<LoadedPlugin, PluginFailure> {
    if entry.is_precompiled() {
        Ok(runtime.load_precompiled(&entry.name, bytes, sha256))
    } else {
        runtime.load_hashed(&entry.name, bytes, sha256)
    }
}

/// `describe()` of one catalog entry, with no grants and default limits.
pub fn describe_entry(runtime: &Sandbox, entry: &Entry) -> Result<PluginInfo, PluginFailure> {
    let bytes = entry
        .bytes()
        .map_err(|e| PluginFailure::Load(e.to_string()))?;
    let sha256 = entry.sha256(&bytes);
    let loaded = load_code(runtime, entry, bytes, sha256)?;
    let policy = Arc::new(
        Policy::parse(std::path::Path::new("(none)"), "")
            .map_err(|e| PluginFailure::Load(e.to_string()))?,
    );
    let caps = context(
        &entry.name,
        EffectiveGrants::none(&entry.name),
        RunFacts::new(policy.clone()),
        Default::default(),
    );
    crate::logging::plugin_span(&entry.name)
        .in_scope(|| runtime.describe(&loaded, caps, limits(&policy)))
}
