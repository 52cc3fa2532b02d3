//! Record and replay. `doctor check --record DIR` keeps every host call a
//! plugin made (question and answer, clock included) in `DIR/PLUGIN.json`;
//! `doctor plugins replay PLUGIN.wasm DIR` runs the plugin again against
//! those answers alone — no host is read — and reports what it finds. A
//! plugin author attaches the directory to a bug report; the maintainer
//! replays it and sees the same report.

use crate::capabilities::{CapabilityContext, EffectiveGrants, RecordedCall, RunFacts, Tape};
use crate::journal::{FindingStatus, Observed};
use crate::plan::ActionResult;
use crate::policy::Policy;
use crate::report::{PluginSummary, RunReport};
use crate::runtime::Limits;
use crate::worker::Sandbox;
use anyhow::Context as _;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What one plugin's check saw, as stored on disk.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Recording {
    /// The format of this file; bumped when it changes incompatibly.
    pub format: u32,
    pub plugin: String,
    pub version: String,
    pub sha256: String,
    /// The plugin's config as the host passed it (JSON text).
    pub config: String,
    /// The plugin's key/value state when the check began.
    pub state: BTreeMap<String, String>,
    pub calls: Vec<RecordedCall>,
    /// The plugin asked more than a recording keeps (`MAX_RECORDED_BYTES`):
    /// the calls after that are missing, and a replay stops where they begin.
    #[serde(default)]
    pub truncated: bool,
}

const FORMAT: u32 = 1;

impl Recording {
    pub fn new(
        plugin: &str,
        version: &str,
        sha256: &str,
        config: &str,
        state: BTreeMap<String, String>,
    ) -> Self {
        Recording {
            format: FORMAT,
            plugin: plugin.to_string(),
            version: version.to_string(),
            sha256: sha256.to_string(),
            config: config.to_string(),
            state,
            calls: Vec::new(),
            truncated: false,
        }
    }

    /// Write `DIR/PLUGIN.json` (through a temporary file, so a reader never
    /// sees half of one). Doctor usually runs as root and a recording holds
    /// what plugins saw: DIR must be doctor's own (created 0700 when
    /// missing), and the files are created 0600, never through a symlink.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        private_dir(dir)?;
        let path = dir.join(format!("{}.json", self.plugin));
        let tmp = dir.join(format!(".{}.json.{}.tmp", self.plugin, std::process::id()));
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            file.write_all(&serde_json::to_vec_pretty(self)?)
                .with_context(|| format!("writing {}", tmp.display()))?;
        }
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    pub fn load(dir: &Path, plugin: &str) -> anyhow::Result<Recording> {
        // The name comes from the plugin's describe(): never a path.
        crate::scaffold::check_name(plugin)?;
        let path = dir.join(format!("{plugin}.json"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("no recording of plugin {plugin} at {}", path.display()))?;
        let recording: Recording = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a doctor recording", path.display()))?;
        if recording.format != FORMAT {
            anyhow::bail!(
                "{} has recording format {}, this doctor reads {FORMAT}",
                path.display(),
                recording.format
            );
        }
        Ok(recording)
    }
}

/// A directory only doctor's user (or root) can write: created 0700 when
/// missing; refused when it is a symlink, someone else's, or writable by
/// group or others (another user could plant links or read what was recorded).
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    crate::safe_fs::own_directory(dir, crate::safe_fs::Writers::OWNER_ONLY)
        .map_err(|why| anyhow::anyhow!("{why}; record into a directory of doctor's own"))
}

/// A `.wasm` file, or the name of a built-in plugin.
pub(crate) fn plugin_bytes(wasm: &Path) -> anyhow::Result<Vec<u8>> {
    if !wasm.exists() {
        let name = wasm.to_string_lossy();
        let (catalog, _) = crate::catalog::Catalog::discover(&[]);
        if let Some(entry) = catalog.get(&name) {
            return Ok(entry.bytes()?.into_owned());
        }
    }
    std::fs::read(wasm).with_context(|| {
        format!(
            "reading {} (neither a file nor a built-in plugin)",
            wasm.display()
        )
    })
}

/// Run the plugin in `wasm` (a file, or a built-in's name) against its recording in `dir`: same clock,
/// same answers, no host access. A call the recording does not hold ends
/// the plugin's run with an error naming the call.
pub fn replay(wasm: &Path, dir: &Path) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let bytes = plugin_bytes(wasm)?;
    // No cache: a replay reads and writes nothing but its report.
    let runtime = Sandbox::new(None)?;
    let loaded = runtime
        .load(&wasm.display().to_string(), bytes.into())
        .map_err(|e| anyhow::anyhow!("{}: {e}", wasm.display()))?;
    let policy = Arc::new(Policy::parse(Path::new("(replay)"), "")?);
    let facts = RunFacts::new(policy.clone());
    let limits = Limits {
        memory_bytes: policy.doctor.plugin_memory,
        timeout: policy.doctor.plugin_timeout,
    };
    let describe_caps = CapabilityContext::new(
        "(replay)",
        EffectiveGrants::none("(replay)"),
        facts.clone(),
        Default::default(),
    );
    let info = runtime
        .describe(&loaded, describe_caps, limits)
        .map_err(|e| anyhow::anyhow!("{}: {e}", wasm.display()))?;
    let recording = Recording::load(dir, &info.name)?;
    if recording.sha256 != loaded.sha256 {
        tracing::warn!(
            "replaying {} (sha256 {}) against a recording of sha256 {}",
            info.name,
            loaded.sha256,
            recording.sha256
        );
    }

    let mut caps = CapabilityContext::new(
        &info.name,
        EffectiveGrants::none(&info.name),
        facts,
        Arc::new(Mutex::new(recording.state)),
    );
    caps.tape = Tape::replay(recording.calls);
    let (result, _) = crate::logging::plugin_span(&info.name)
        .in_scope(|| crate::findings::check(&runtime, &loaded, caps, &recording.config, limits));

    let mut summary = PluginSummary::new(&info.name, 0);
    summary.loaded(&info.version, &loaded.sha256, loaded.cache().as_str());
    let mut report = RunReport::new(0, "replay", Vec::new());
    let observed = match result {
        Ok(findings) => findings
            .into_iter()
            .map(|finding| Observed {
                actions: finding.actions.iter().map(ActionResult::planned).collect(),
                finding,
                status: FindingStatus::New,
            })
            .collect(),
        Err(failure) => {
            summary.fail(failure.to_string(), started.elapsed());
            Vec::new()
        }
    };
    report.add(summary, observed);
    report.finish(started.elapsed().as_millis() as u64);
    Ok(report)
}
