//! A plugin built against `doctor:plugin@0.1.0` as released, with raw
//! wit-bindgen: it lists processes and reads a file, then reports what it got.
wit_bindgen::generate!({ path: "../../../wit/0.1.0", world: "plugin" });

use doctor::plugin::types::{ConfigKey, Finding, Severity};
use doctor::plugin::{files, processes};

struct Old;

impl Guest for Old {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "contract-v0-1".into(),
            version: "0.1.0".into(),
            summary: "Built against doctor:plugin@0.1.0".into(),
            capabilities: vec!["processes".into(), "files".into()],
            config: vec![ConfigKey {
                name: "path".into(),
                default: String::new(),
                description: "a file to read".into(),
            }],
        }
    }

    fn check(config: String) -> Result<Report, Error> {
        let path = config.split('"').nth(3).unwrap_or_default().to_string();
        let count = processes::all()?.len();
        let text = files::read(&path, 4096)?;
        Ok(Report {
            findings: vec![Finding {
                key: "seen".into(),
                severity: Severity::Warning,
                subject: path.clone(),
                message: format!(
                    "OLD CONTRACT SAW {count} PROCESSES AND READ {:?}",
                    text.trim()
                ),
                evidence: vec![],
                actions: vec![],
            }],
        })
    }
}

export!(Old);
