//! `host`: clock, hostname, logging, per-plugin key/value state. Always granted.

use super::{CapabilityContext, LogLine, MAX_LOG_LINES, MAX_LOG_LINE_BYTES};
use crate::runtime::bindings::doctor::plugin::host::{Host, LogLevel, User};
use crate::runtime::bindings::doctor::plugin::types;
use crate::text::truncate;

impl types::Host for CapabilityContext {}

/// Clock, name and users are recorded (and replayed); log lines and the
/// key/value state stay local to the call, replayed from the recorded
/// starting state.
impl Host for CapabilityContext {
    fn now_unix_ms(&mut self) -> wasmtime::Result<u64> {
        self.answer("host.now-unix-ms", (), |_| crate::clock::now_unix_ms())
    }

    fn hostname(&mut self) -> wasmtime::Result<String> {
        self.answer("host.hostname", (), |_| {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
    }

    fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        self.plugin_log(level, message);
        Ok(())
    }

    fn kv_get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.kv.lock().ok().and_then(|kv| kv.get(&key).cloned()))
    }

    fn kv_set(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        self.kv_set_bounded(key, value);
        Ok(())
    }

    fn kv_delete(&mut self, key: String) -> wasmtime::Result<()> {
        if key.starts_with(RESERVED_PREFIX) {
            return Ok(());
        }
        if let Ok(mut kv) = self.kv.lock() {
            kv.remove(&key);
        }
        Ok(())
    }

    fn lookup_user(&mut self, name: String) -> wasmtime::Result<Option<User>> {
        self.answer("host.lookup-user", (&name,), |_| lookup_user(name.clone()))
    }
}

impl CapabilityContext {
    /// Into the plugin's journal log and the host's log, at the level the
    /// plugin chose, under the `plugin` target with the plugin's name as a
    /// field; emitted inside the span of the plugin's turn
    /// (`logging::plugin_span`), which `DOCTOR_LOG='plugin[{plugin=NAME}]=debug'`
    /// selects.
    fn plugin_log(&mut self, level: LogLevel, message: String) {
        if self.logs.len() >= MAX_LOG_LINES {
            return;
        }
        let message = truncate(&message, MAX_LOG_LINE_BYTES);
        let plugin = self.plugin.as_str();
        let level = match level {
            LogLevel::Debug => {
                tracing::debug!(target: "plugin", plugin, "{message}");
                "debug"
            }
            LogLevel::Info => {
                tracing::info!(target: "plugin", plugin, "{message}");
                "info"
            }
            LogLevel::Warn => {
                tracing::warn!(target: "plugin", plugin, "{message}");
                "warn"
            }
            LogLevel::Error => {
                tracing::error!(target: "plugin", plugin, "{message}");
                "error"
            }
        };
        self.logs.push(LogLine { level, message });
    }

    /// Bounded by the policy's kv_max_* keys; a refused write is logged
    /// (the WIT call has no result to carry it).
    fn kv_set_bounded(&mut self, key: String, value: String) {
        let refusal = {
            let Ok(mut kv) = self.kv.lock() else { return };
            let limits = &self.facts.policy.doctor;
            if key.len() as u64 > limits.kv_max_key_bytes {
                Some(format!(
                    "key is {} bytes, more than kv_max_key_bytes {}",
                    key.len(),
                    limits.kv_max_key_bytes
                ))
            } else if value.len() as u64 > limits.kv_max_value_bytes {
                Some(format!(
                    "value is {} bytes, more than kv_max_value_bytes {}",
                    value.len(),
                    limits.kv_max_value_bytes
                ))
            } else if key.starts_with(RESERVED_PREFIX) {
                Some(format!(
                    "keys starting with {RESERVED_PREFIX:?} are the host's"
                ))
            } else if plugin_keys(&kv) as u64 >= u64::from(limits.kv_max_keys)
                && !kv.contains_key(&key)
            {
                Some(format!(
                    "the plugin already has kv_max_keys {} keys",
                    limits.kv_max_keys
                ))
            } else {
                kv.insert(key.clone(), value);
                None
            }
        };
        if let Some(why) = refusal {
            self.plugin_log(
                LogLevel::Warn,
                format!("kv-set {:?} refused: {why}", truncate(&key, 64)),
            );
        }
    }
}

/// Keys the host sets for the length of a call (e.g. `doctor:own-pids`);
/// a plugin can read them, never write them, and they do not count
/// against its `kv_max_keys`.
const RESERVED_PREFIX: &str = "doctor:";

fn plugin_keys(kv: &std::collections::BTreeMap<String, String>) -> usize {
    kv.keys()
        .filter(|k| !k.starts_with(RESERVED_PREFIX))
        .count()
}

fn lookup_user(name: String) -> Option<User> {
    let user = nix::unistd::User::from_name(&name).ok()??;
    let cname = std::ffi::CString::new(name.clone()).ok()?;
    let groups = nix::unistd::getgrouplist(&cname, user.gid)
        .map(|gs| gs.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default();
    Some(User {
        name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use crate::capabilities::{test_context, MAX_LOG_LINES};
    use crate::policy::Grants;
    use crate::runtime::bindings::doctor::plugin::host::{Host, LogLevel};

    #[test]
    fn the_hosts_keys_cannot_be_written_and_logs_are_capped() {
        let mut ctx = test_context(Grants::default());
        ctx.kv_set("doctor:own-pids".into(), "[]".into()).unwrap();
        assert_eq!(
            ctx.kv_get("doctor:own-pids".into()).unwrap(),
            None,
            "a reserved key is not the plugin's to set"
        );
        ctx.kv_set("seen".into(), "1".into()).unwrap();
        assert_eq!(ctx.kv_get("seen".into()).unwrap().as_deref(), Some("1"));
        for i in 0..MAX_LOG_LINES + 50 {
            ctx.log(LogLevel::Info, format!("line {i}")).unwrap();
        }
        assert_eq!(ctx.logs.len(), MAX_LOG_LINES);
        assert!(
            ctx.logs
                .iter()
                .any(|l| l.message.contains("doctor:own-pids") && l.message.contains("refused")),
            "the refusal was logged"
        );
    }
}
