//! A plugin built against `doctor:plugin@0.2.0` as released, with raw
//! wit-bindgen: it lists processes and reads a file (and queries a database
//! through 0.2.0's `sqlite` interface when its config names one), then
//! reports what it got.
wit_bindgen::generate!({ path: "../../../wit/0.2.0", world: "plugin" });

use doctor::plugin::types::{Action, ConfigKey, Finding, PlannedAction, Severity};
use doctor::plugin::{files, processes, sqlite};

struct Old;

impl Guest for Old {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "contract-v0-2".into(),
            version: "0.1.0".into(),
            summary: "Built against doctor:plugin@0.2.0".into(),
            capabilities: vec!["processes".into(), "files".into(), "sqlite".into()],
            config: vec![
                ConfigKey {
                    name: "path".into(),
                    default: String::new(),
                    description: "a file to read".into(),
                },
                ConfigKey {
                    name: "db".into(),
                    default: "\"\"".into(),
                    description: "a database label to query".into(),
                },
            ],
        }
    }

    fn check(config: String) -> Result<Report, Error> {
        if let Some(db) = string_of(&config, "db").filter(|d| !d.is_empty()) {
            return sqlite::query(&db, "SELECT 1", &[]).map(|rows| Report {
                findings: vec![Finding {
                    key: "queried".into(),
                    severity: Severity::Info,
                    subject: db.clone(),
                    message: format!("0.2.0 CONTRACT QUERIED {} ROWS", rows.rows.len()),
                    evidence: vec![],
                    actions: vec![],
                }],
            });
        }
        let path = string_of(&config, "path").unwrap_or_default();
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

/// The string value of `key` in the config's JSON object (no escapes).
fn string_of(config: &str, key: &str) -> Option<String> {
    let start = config.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let rest = &config[start..];
    Some(rest[..rest.find('"')?].to_string())
}

export!(Old);
