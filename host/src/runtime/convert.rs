//! `describe()` and error values of the WIT contract into the host's terms,
//! with bounds on what a plugin may return.

use super::{ConfigKey, PluginInfo};
use crate::runtime::bindings::doctor::plugin::types as wit;
use crate::text::truncate;

const MAX_KEY: usize = 256;
const MAX_TEXT: usize = 4096;
const MAX_DESCRIBE_ENTRIES: usize = 256;

/// A `describe()` answer, bounded (again, when it crossed from a worker).
pub fn bound_info(info: PluginInfo) -> PluginInfo {
    PluginInfo {
        name: truncate(&info.name, MAX_KEY),
        version: truncate(&info.version, MAX_KEY),
        summary: truncate(&info.summary, MAX_TEXT),
        capabilities: info
            .capabilities
            .into_iter()
            .take(MAX_DESCRIBE_ENTRIES)
            .map(|c| truncate(&c, MAX_KEY))
            .collect(),
        config: info
            .config
            .into_iter()
            .take(MAX_DESCRIBE_ENTRIES)
            .map(|k| ConfigKey {
                name: truncate(&k.name, MAX_KEY),
                default: truncate(&k.default, MAX_TEXT),
                description: truncate(&k.description, MAX_TEXT),
            })
            .collect(),
    }
}

pub fn plugin_info(info: wit::PluginInfo) -> PluginInfo {
    bound_info(PluginInfo {
        name: info.name,
        version: info.version,
        summary: info.summary,
        capabilities: info.capabilities,
        config: info
            .config
            .into_iter()
            .take(MAX_DESCRIBE_ENTRIES)
            .map(|k| ConfigKey {
                name: k.name,
                default: k.default,
                description: k.description,
            })
            .collect(),
    })
}

pub fn error_text(e: &wit::Error) -> String {
    match e {
        wit::Error::Denied(m) => format!("denied: {m}"),
        wit::Error::NotFound(m) => format!("not found: {m}"),
        wit::Error::Invalid(m) => format!("invalid: {m}"),
        wit::Error::Io(m) => format!("io: {m}"),
        wit::Error::Limit(m) => format!("limit: {m}"),
    }
}
