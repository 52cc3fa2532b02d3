//! The doctor plugin SDK.
//!
//! A plugin implements [`Plugin`] and calls [`register_plugin!`]. It reads
//! facts through the modules re-exported here ([`processes`], [`files`],
//! [`sqlite`], [`sockets`], [`probe`], [`containers`], [`host`]), each gated
//! by a grant in the operator's policy, and proposes [`Action`]s that the host
//! carries out in `doctor fix`. `wit-bindgen` stays inside this crate.
//!
//! ```ignore
//! use doctor_sdk::prelude::*;
//!
//! doctor_sdk::config! {
//!     #[derive(serde::Deserialize)]
//!     struct Config {
//!         /// command-line pattern of a stray
//!         pattern: String,
//!     }
//! }
//!
//! struct Strays;
//! impl Plugin for Strays {
//!     type Config = Config;
//!     fn info() -> Info {
//!         Info::new("strays", "report strays")
//!             .capability(caps::PROCESSES)
//!             .config::<Config>()
//!     }
//!     fn check(config: Config) -> Result<Vec<Finding>, Error> { Ok(vec![]) }
//! }
//! register_plugin!(Strays);
//! ```

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "doctor_sdk::bindings",
        // Recordings (`doctor check --record`) replay into native tests.
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

pub mod config;
mod finding;
mod imports;
pub mod inspect;
pub mod owner;
pub mod ports;
pub mod process;
pub mod respawn;
pub mod scope;
pub mod testing;
pub mod time;

pub use imports::{containers, database, files, host, probe, processes, sockets, sqlite};

/// This SDK's version.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The WIT contract this SDK speaks (`wit/` in this crate).
pub const WIT_PACKAGE: &str = "doctor:plugin@0.3.0";
pub use bindings::doctor::plugin::types::{
    Action, ContainerStop, Error, Evidence, ProcessRef, Severity, Signal, SignalProcess, SqlExec,
    SqlValue, StopProcess, WaitPortFree,
};
pub use finding::{Finding, Info, Subject};
pub use regex_lite;
pub use serde;
pub use serde_json;

/// Capability names, as spelled under `grants` in the policy.
pub mod caps {
    pub const PROCESSES: &str = "processes";
    pub const FILES: &str = "files";
    pub const SQLITE: &str = "sqlite";
    pub const SOCKETS: &str = "sockets";
    pub const PROBE: &str = "probe";
    pub const CONTAINERS: &str = "containers";
    pub const SIGNAL: &str = "signal";
    pub const FILES_REMOVE: &str = "files_remove";
    pub const SQLITE_WRITE: &str = "sqlite_write";
    pub const CONTAINERS_WRITE: &str = "containers_write";
    pub const COMMANDS: &str = "commands";
}

/// What a plugin author writes.
pub trait Plugin {
    /// The plugin's `config` table from the policy. Missing keys take the
    /// serde defaults; unknown keys are rejected by the host before `check`.
    type Config: serde::de::DeserializeOwned;

    fn info() -> Info;
    fn check(config: Self::Config) -> Result<Vec<Finding>, Error>;
}

/// `denied: …`, `not found: …`: an error as an operator reads it in a
/// finding or log (wit-bindgen's own `Display` prints the Rust form).
pub fn error_text(e: &Error) -> String {
    match e {
        Error::Denied(m) => format!("denied: {m}"),
        Error::NotFound(m) => format!("not found: {m}"),
        Error::Invalid(m) => format!("invalid: {m}"),
        Error::Io(m) => format!("i/o: {m}"),
        Error::Limit(m) => format!("limit: {m}"),
    }
}

/// Shell-style match of `*` (any run of characters) and `?` (one character),
/// for container names and image references. Linear in practice: a `*`
/// remembers one backtrack point instead of recursing.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Does any of `patterns` match `text` (see [`glob_match`])? A policy's
/// list of globs names what any one of them names; an empty list, nothing.
pub fn glob_match_any(patterns: &[String], text: &str) -> bool {
    patterns.iter().any(|p| glob_match(p, text))
}

/// Log a line into the journal and the host's log.
pub fn log(level: host::LogLevel, message: impl AsRef<str>) {
    host::log(level, message.as_ref());
}

pub mod prelude {
    pub use crate::config::DeclaredConfig;
    pub use crate::{
        caps, containers, database, files, host, probe, processes, register_plugin, sockets,
        sqlite, Action, Error, Finding, Info, Plugin, ProcessRef, Severity, Signal, SqlValue,
        Subject,
    };
}

/// `describe()`: the plugin's info, its version defaulting to the plugin
/// crate's own `CARGO_PKG_VERSION` (passed in by [`register_plugin!`]).
#[doc(hidden)]
pub fn __describe<P: Plugin>(crate_version: &str) -> bindings::doctor::plugin::types::PluginInfo {
    P::info().with_default_version(crate_version).into_wit()
}

#[doc(hidden)]
pub fn __check<P: Plugin>(
    config_json: &str,
) -> Result<bindings::doctor::plugin::types::Report, Error> {
    let config: P::Config =
        serde_json::from_str(config_json).map_err(|e| Error::Invalid(format!("config: {e}")))?;
    let findings = P::check(config)?;
    Ok(bindings::doctor::plugin::types::Report {
        findings: findings.into_iter().map(Finding::into_wit).collect(),
    })
}

/// Export a [`Plugin`] as the component's `describe` and `check`.
#[macro_export]
macro_rules! register_plugin {
    ($plugin:ty) => {
        struct __DoctorPluginExport;
        impl $crate::bindings::Guest for __DoctorPluginExport {
            fn describe() -> $crate::bindings::doctor::plugin::types::PluginInfo {
                $crate::__describe::<$plugin>(env!("CARGO_PKG_VERSION"))
            }
            fn check(
                config: ::std::string::String,
            ) -> ::std::result::Result<
                $crate::bindings::doctor::plugin::types::Report,
                $crate::Error,
            > {
                $crate::__check::<$plugin>(&config)
            }
        }
        $crate::bindings::__export_plugin!(__DoctorPluginExport with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    use super::{glob_match, glob_match_any};

    #[test]
    fn globs_match_whole_names() {
        assert!(glob_match("web-*", "web-1"));
        assert!(glob_match("*busybox*", "localhost/busybox:latest"));
        assert!(glob_match("w?b", "web"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("web-*", "db"));
        assert!(!glob_match("web", "web-1"));
        assert!(!glob_match("a*b*c", "abca-b"));
        let list = ["db-*".to_string(), "web-?".to_string()];
        assert!(glob_match_any(&list, "web-1") && !glob_match_any(&list, "cache"));
        assert!(!glob_match_any(&[], "web-1"));
    }

    #[test]
    fn many_stars_do_not_backtrack_exponentially() {
        let text = "a".repeat(64);
        assert!(!glob_match(&format!("{}b", "*a".repeat(30)), &text));
    }
}
