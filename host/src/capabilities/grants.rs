//! Effective grants: what a plugin requested in `describe()` intersected with
//! what the policy grants it. Every check returns a [`Denied`] that names the
//! missing grant, so an operator can read it and decide.

use super::scope::ScopeMatcher;
use crate::facts::processes::ProcessInfo;
use crate::policy::{Grants, ProcessScope, SignalGrant};
use std::collections::BTreeSet;
/// A capability call refused by the grants; the text names the grant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// Every capability name a plugin may request.
pub const KNOWN_CAPABILITIES: &[&str] = &[
    "processes",
    "files",
    "sqlite",
    "sockets",
    "probe",
    "containers",
    "signal",
    "files_remove",
    "sqlite_write",
    "containers_write",
    "commands",
];

#[derive(Debug, Clone)]
pub struct EffectiveGrants {
    plugin: String,
    requested: BTreeSet<String>,
    granted: Grants,
}

impl EffectiveGrants {
    pub fn new(plugin: &str, requested: &[String], granted: &Grants) -> Self {
        EffectiveGrants {
            plugin: plugin.to_string(),
            requested: requested.iter().cloned().collect(),
            granted: granted.clone(),
        }
    }

    /// No grants at all: what a plugin gets before its policy is known.
    pub fn none(plugin: &str) -> Self {
        Self::new(plugin, &[], &Grants::default())
    }

    fn requested(&self, capability: &str) -> Result<(), Denied> {
        if self.requested.contains(capability) {
            Ok(())
        } else {
            Err(Denied(format!(
                "plugin {} did not request capability `{capability}` in describe()",
                self.plugin
            )))
        }
    }

    fn denied(&self, grant: &str, what: &str) -> Denied {
        Denied(format!(
            "policy does not grant plugin {} `grants.{grant}` {what}",
            self.plugin
        ))
    }

    /// The processes the plugin may see: the scope of `grants.processes`.
    pub fn processes(&self) -> Result<ScopeMatcher, Denied> {
        self.requested("processes")?;
        self.flag(self.granted.processes.granted(), "processes")?;
        ScopeMatcher::compile(&self.granted.processes)
            .map_err(|e| self.denied("processes", &format!("({e})")))
    }

    /// Which socket owners the plugin may see: those inside a scoped
    /// `grants.processes`; any owner otherwise (a pid says nothing more).
    pub fn socket_owners(&self) -> Result<ScopeMatcher, Denied> {
        ScopeMatcher::compile(&self.granted.processes)
            .map_err(|e| self.denied("processes", &format!("({e})")))
    }

    pub fn sockets(&self) -> Result<(), Denied> {
        self.requested("sockets")?;
        self.flag(self.granted.sockets, "sockets")
    }

    pub fn containers(&self) -> Result<(), Denied> {
        self.requested("containers")?;
        self.flag(self.granted.containers, "containers")
    }

    /// May the plugin read and act on engine `name`'s containers?
    /// (`grants.engines`; none listed: every engine of the policy.)
    pub fn engine(&self, name: &str) -> bool {
        self.granted.engines.is_empty() || self.granted.engines.iter().any(|e| e == name)
    }

    fn flag(&self, granted: bool, grant: &str) -> Result<(), Denied> {
        if granted {
            Ok(())
        } else {
            Err(self.denied(grant, "(set it to true)"))
        }
    }

    /// Reading `path`: it must be absolute, free of `..`, and match a
    /// `grants.files` pattern. The caller then resolves it with no symlinks
    /// (`safe_fs`), so the path matched is the path touched.
    pub fn file(&self, path: &str) -> Result<(), Denied> {
        self.requested("files")?;
        self.path_in(path, &self.granted.files, "files")
    }

    pub fn file_remove(&self, path: &str) -> Result<(), Denied> {
        self.requested("files_remove")?;
        self.path_in(path, &self.granted.files_remove, "files_remove")
    }

    fn path_in(&self, path: &str, patterns: &[String], grant: &str) -> Result<(), Denied> {
        if !crate::safe_fs::is_normal(path) {
            return Err(Denied(format!(
                "path {path:?} must be absolute and normal: no `..`, `.`, `//` or trailing `/`"
            )));
        }
        if !matches_any(path, patterns) {
            return Err(self.denied(grant, &format!("for {path:?}")));
        }
        Ok(())
    }

    pub fn sqlite(&self, label: &str) -> Result<(), Denied> {
        self.requested("sqlite")?;
        self.label_in(label, &self.granted.sqlite, "sqlite")
    }

    pub fn sqlite_write(&self, label: &str) -> Result<(), Denied> {
        self.requested("sqlite_write")?;
        self.label_in(label, &self.granted.sqlite_write, "sqlite_write")
    }

    pub fn command(&self, name: &str) -> Result<(), Denied> {
        self.requested("commands")?;
        self.label_in(name, &self.granted.commands, "commands")
    }

    fn label_in(&self, label: &str, granted: &[String], grant: &str) -> Result<(), Denied> {
        if granted.iter().any(|g| g == label) {
            Ok(())
        } else {
            Err(self.denied(grant, &format!("for {label:?}")))
        }
    }

    /// Probing `host:port`: it must be listed in `grants.probe` (port may be `*`).
    pub fn probe(&self, host: &str, port: u16) -> Result<(), Denied> {
        self.requested("probe")?;
        let allowed = self.granted.probe.iter().any(|g| match g.rsplit_once(':') {
            Some((h, p)) => {
                h.trim_matches(|c| c == '[' || c == ']') == host
                    && (p == "*" || p == port.to_string())
            }
            None => false,
        });
        if allowed {
            Ok(())
        } else {
            Err(self.denied("probe", &format!("for {host}:{port}")))
        }
    }

    /// Signalling a process: its command line must match a `grants.signal`
    /// pattern and, if uids are listed, its owner must be one of them.
    pub fn signal(&self, process: &ProcessInfo) -> Result<(), Denied> {
        self.requested("signal")?;
        let Some(grant) = &self.granted.signal else {
            return Err(self.denied("signal", "(no processes may be signalled)"));
        };
        let command = process.command_line();
        let matched = grant.patterns.iter().any(|p| {
            regex::Regex::new(p)
                .map(|r| r.is_match(&command))
                .unwrap_or(false)
        });
        if !matched {
            return Err(self.denied(
                "signal",
                &format!(
                    "for pid {} ({command}): no pattern in `match` matches",
                    process.id.pid
                ),
            ));
        }
        if !grant.uids.is_empty() && !grant.uids.contains(&process.uid) {
            return Err(self.denied(
                "signal",
                &format!(
                    "for pid {} owned by uid {}: not in `uids`",
                    process.id.pid, process.uid
                ),
            ));
        }
        let (scope, key) = self.signal_scope(grant)?;
        if !scope.contains(process, crate::facts::processes::get) {
            return Err(self.denied(
                key,
                &format!(
                    "for pid {} ({command}): outside the scope {}",
                    process.id.pid,
                    scope.shown()
                ),
            ));
        }
        Ok(())
    }

    /// `grants.signal.scope`, else the scope of `grants.processes`: a plugin
    /// with a scoped process grant never has a process signalled that does
    /// not exist for it. With neither scoped, the grant reaches the whole
    /// host (`policy validate` warns).
    fn signal_scope(&self, grant: &SignalGrant) -> Result<(ScopeMatcher, &'static str), Denied> {
        let (scope, key) = match &grant.scope {
            ProcessScope::None => (&self.granted.processes, "processes"),
            own => (own, "signal"),
        };
        let matcher =
            ScopeMatcher::compile(scope).map_err(|e| self.denied(key, &format!("({e})")))?;
        Ok((matcher, key))
    }

    /// Starting, stopping or restarting a container by one of its names.
    pub fn container_write(&self, names: &[String]) -> Result<(), Denied> {
        self.requested("containers_write")?;
        // A `compose:` pattern matches only Compose identities and any other
        // pattern only names, so `*/api` is every engine's `api`, never
        // every Compose project's `api` service.
        let compose = |t: &str| t.starts_with("compose:");
        let granted = self.granted.containers_write.iter().any(|p| {
            names.iter().any(|n| {
                let n = n.trim_start_matches('/');
                compose(p) == compose(n) && matches_any(n, std::slice::from_ref(p))
            })
        });
        if granted {
            Ok(())
        } else {
            Err(self.denied(
                "containers_write",
                &format!("for container {}", names.join(", ")),
            ))
        }
    }
}

fn matches_any(text: &str, patterns: &[String]) -> bool {
    // `*` matches neither `/` nor a leading `.`: a grant never reaches
    // hidden files (or `.`) by accident.
    let options = glob::MatchOptions {
        require_literal_separator: true,
        require_literal_leading_dot: true,
        ..Default::default()
    };
    patterns.iter().any(|p| {
        glob::Pattern::new(p)
            .map(|g| g.matches_with(text, options))
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(files: &[&str]) -> EffectiveGrants {
        let g = Grants {
            files: files.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        EffectiveGrants::new("p", &["files".to_string()], &g)
    }

    #[test]
    fn files_outside_the_pattern_are_denied_with_the_grant_named() {
        let g = grants(&["/run/*.pid"]);
        let err = g.file("/etc/shadow").unwrap_err();
        assert!(err.0.contains("grants.files"), "{err}");
        assert!(g.file("/run/../etc/shadow").is_err());
        assert!(g.file("run/x.pid").is_err());
        assert!(
            g.file("/run/sub/x.pid").is_err(),
            "a * does not cross directories"
        );
        let g = grants(&["/srv/*/x.lock"]);
        assert!(g.file("/srv/app/x.lock").is_ok());
        for escape in ["/srv/./x.lock", "/srv//x.lock", "/srv/.hidden/x.lock"] {
            assert!(g.file(escape).is_err(), "{escape} escapes one level");
        }
    }

    #[test]
    fn unrequested_capability_is_denied_even_when_granted() {
        let g = Grants {
            processes: ProcessScope::Host,
            ..Default::default()
        };
        let e = EffectiveGrants::new("p", &[], &g);
        assert!(e.processes().unwrap_err().0.contains("did not request"));
        let e = EffectiveGrants::new("p", &["processes".into()], &Grants::default());
        assert!(e.processes().unwrap_err().0.contains("grants.processes"));
    }

    #[test]
    fn probe_grants_match_host_and_port() {
        let g = Grants {
            probe: vec!["127.0.0.1:8080".into(), "[::1]:*".into()],
            ..Default::default()
        };
        let e = EffectiveGrants::new("p", &["probe".into()], &g);
        assert!(e.probe("127.0.0.1", 8080).is_ok());
        assert!(e.probe("127.0.0.1", 8081).is_err());
        assert!(e.probe("::1", 1).is_ok());
    }
}
