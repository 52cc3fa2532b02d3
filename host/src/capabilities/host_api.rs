//! `host`: clock, hostname, logging, per-plugin key/value state. Always granted.

use super::{truncate, CapabilityContext, LogLine, MAX_LOG_LINES, MAX_LOG_LINE_BYTES};
use crate::runtime::bindings::doctor::plugin::host::{Host, LogLevel, User};
use crate::runtime::bindings::doctor::plugin::types;

impl types::Host for CapabilityContext {}

impl Host for CapabilityContext {
    fn now_unix_ms(&mut self) -> u64 {
        crate::clock::now_unix_ms()
    }

    fn hostname(&mut self) -> String {
        nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
    }

    fn log(&mut self, level: LogLevel, message: String) {
        if self.logs.len() >= MAX_LOG_LINES {
            return;
        }
        let message = truncate(&message, MAX_LOG_LINE_BYTES);
        let level = match level {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        };
        tracing::info!(plugin = %self.plugin, level, "{message}");
        self.logs.push(LogLine { level, message });
    }

    fn kv_get(&mut self, key: String) -> Option<String> {
        self.kv.lock().ok()?.get(&key).cloned()
    }

    /// Bounded by the policy's kv_max_* keys; a refused write is logged
    /// (the WIT call has no result to carry it).
    fn kv_set(&mut self, key: String, value: String) {
        let refusal = {
            let Ok(mut kv) = self.kv.lock() else { return };
            let limits = &self.facts.policy.doctor;
            if key.len() as u64 > limits.kv_max_key_bytes {
                Some(format!("key is {} bytes, more than kv_max_key_bytes {}", key.len(), limits.kv_max_key_bytes))
            } else if value.len() as u64 > limits.kv_max_value_bytes {
                Some(format!("value is {} bytes, more than kv_max_value_bytes {}", value.len(), limits.kv_max_value_bytes))
            } else if kv.len() as u64 >= u64::from(limits.kv_max_keys) && !kv.contains_key(&key) {
                Some(format!("the plugin already has kv_max_keys {} keys", limits.kv_max_keys))
            } else {
                kv.insert(key.clone(), value);
                None
            }
        };
        if let Some(why) = refusal {
            self.log(LogLevel::Warn, format!("kv-set {:?} refused: {why}", truncate(&key, 64)));
        }
    }

    fn kv_delete(&mut self, key: String) {
        if let Ok(mut kv) = self.kv.lock() {
            kv.remove(&key);
        }
    }

    fn lookup_user(&mut self, name: String) -> Option<User> {
        let user = nix::unistd::User::from_name(&name).ok()??;
        let cname = std::ffi::CString::new(name.clone()).ok()?;
        let groups = nix::unistd::getgrouplist(&cname, user.gid)
            .map(|gs| gs.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default();
        Some(User { name, uid: user.uid.as_raw(), gid: user.gid.as_raw(), groups })
    }
}
