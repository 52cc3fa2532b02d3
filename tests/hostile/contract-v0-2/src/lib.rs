//! A plugin built against `doctor:plugin@0.2.0` as released, with raw
//! wit-bindgen: it lists processes and reads a file, then reports what it got.
wit_bindgen::generate!({ path: "../../../wit/0.2.0", world: "plugin" });

use doctor::plugin::types::{Action, ConfigKey, Finding, PlannedAction, Severity};
use doctor::plugin::{files, processes};

struct Old;

impl Guest for Old {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "contract-v0-2".into(),
            version: "0.1.0".into(),
            summary: "Built against doctor:plugin@0.2.0".into(),
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
                    "0.2.0 CONTRACT SAW {count} PROCESSES AND READ {:?}",
                    text.trim()
                ),
                evidence: vec![],
                // A container stop as 0.2.0 spells it (a bare id): the host
                // plans it with the engine's default grace.
                actions: vec![PlannedAction {
                    action: Action::ContainerStop("web".into()),
                    description: "stop container web".into(),
                    needs_previous: false,
                }],
            }],
        })
    }
}

export!(Old);
