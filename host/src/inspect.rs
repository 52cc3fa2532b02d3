//! `doctor plugins inspect PLUGIN.wasm`: what a plugin file is (the WIT
//! package it was built against, its sha256 ready to pin, its size) and
//! what it asks for, next to what a policy grants it.

use crate::capabilities::{EffectiveGrants, RunFacts, KNOWN_CAPABILITIES};
use crate::policy::Policy;
use crate::runtime::{ConfigKey, Limits};
use crate::worker::Sandbox;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, serde::Serialize)]
pub struct Inspection {
    pub file: String,
    pub size: u64,
    pub sha256: String,
    /// The WIT packages the component imports, e.g. `doctor:plugin@0.1.0`.
    pub wit: Vec<String>,
    pub name: String,
    pub version: String,
    pub summary: String,
    pub config: Vec<ConfigKey>,
    /// One row per capability the plugin requests or the policy grants.
    pub capabilities: Vec<CapabilityRow>,
    /// The policy the grants were read from, if one was given.
    pub policy: Option<String>,
    /// How the worker that ran its `describe()` was confined.
    pub worker: String,
}

#[derive(Debug, serde::Serialize)]
pub struct CapabilityRow {
    pub capability: String,
    pub requested: bool,
    /// `granted`, `not granted`, `granted but unused`; `-` without a policy.
    pub grant: String,
}

pub fn inspect(wasm: &Path, policy_file: Option<&Path>) -> anyhow::Result<Inspection> {
    let bytes = crate::recording::plugin_bytes(wasm)?;
    let size = bytes.len() as u64;
    let policy = match policy_file {
        Some(p) => Arc::new(Policy::load(p)?),
        None => Arc::new(Policy::parse(Path::new("(none)"), "")?),
    };
    let cache = policy_file.map(|_| crate::pipeline::cache_dir(&policy, Path::new("")));
    let runtime = Sandbox::new(cache)?;
    let loaded = runtime
        .load(&wasm.display().to_string(), bytes.into())
        .map_err(|e| anyhow::anyhow!("{}: {e}", wasm.display()))?;
    let facts = RunFacts::new(policy.clone());
    let limits = Limits {
        memory_bytes: policy.doctor.plugin_memory,
        timeout: policy.doctor.plugin_timeout,
    };
    let caps = crate::capabilities::CapabilityContext::new(
        "(inspect)",
        EffectiveGrants::none("(inspect)"),
        facts,
        Default::default(),
    );
    let info = runtime
        .describe(&loaded, caps, limits)
        .map_err(|e| anyhow::anyhow!("{}: {e}", wasm.display()))?;
    let wit = runtime
        .imported_packages(&loaded, limits)
        .map_err(|e| anyhow::anyhow!("{}: {e}", wasm.display()))?;
    let grants = policy_file.map(|_| {
        policy
            .plugins
            .get(&info.name)
            .map(|p| p.grants.clone())
            .unwrap_or_default()
    });
    let capabilities = KNOWN_CAPABILITIES
        .iter()
        .filter_map(|cap| {
            let requested = info.capabilities.iter().any(|c| c == cap);
            let granted = grants.as_ref().map(|g| g.grants(cap));
            let grant = match (requested, granted) {
                (_, None) => "-",
                (true, Some(true)) => "granted",
                (true, Some(false)) => "not granted",
                (false, Some(true)) => "granted but unused",
                (false, Some(false)) => return None,
            };
            (requested || granted == Some(true)).then(|| CapabilityRow {
                capability: cap.to_string(),
                requested,
                grant: grant.to_string(),
            })
        })
        .collect();
    Ok(Inspection {
        file: wasm.display().to_string(),
        size,
        sha256: loaded.sha256.clone(),
        wit,
        name: info.name,
        version: info.version,
        summary: info.summary,
        config: info.config,
        capabilities,
        policy: policy_file.map(|p| p.display().to_string()),
        worker: loaded.confinement().unwrap_or_default().to_string(),
    })
}

impl Inspection {
    pub fn to_human(&self) -> String {
        let mut out = format!(
            "{} {} — {}\nfile     {} ({} bytes)\nsha256   {}   (pin it: sha256 = \"{}\")\nwit      {}\nworker   {}\n",
            self.name,
            self.version,
            self.summary,
            self.file,
            self.size,
            self.sha256,
            self.sha256,
            self.wit.join(", "),
            self.worker
        );
        out.push_str(&format!(
            "capabilities{}\n",
            self.policy
                .as_ref()
                .map(|p| format!(" (grants from {p})"))
                .unwrap_or_default()
        ));
        for row in &self.capabilities {
            let asked = if row.requested { "requested" } else { "" };
            out.push_str(&format!(
                "  {:<18} {:<10} {}\n",
                row.capability, asked, row.grant
            ));
        }
        out.push_str("config\n");
        for key in &self.config {
            let default = if key.default.is_empty() {
                "required".to_string()
            } else {
                format!("default {}", key.default)
            };
            out.push_str(&format!(
                "  {:<22} {:<24} {}\n",
                key.name, default, key.description
            ));
        }
        out
    }
}
