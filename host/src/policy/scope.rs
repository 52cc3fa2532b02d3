//! The scope a grant carries (`grants.processes`, `grants.signal.scope`):
//! the same `{ user, unit, cgroup, under }` table the plugin configs use, or
//! the whole host. The host enforces it: a process outside a plugin's scope
//! does not exist for that plugin (the policy reference, "Grants").

use serde::{Deserialize, Deserializer};

/// Which processes a grant reaches.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum ProcessScope {
    /// Not granted at all.
    #[default]
    None,
    /// `true` or `"host"`: every process of the host (validate warns).
    Host,
    /// Every given field must hold.
    Within(Within),
}

/// A scope table: each field that is given must hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Within {
    /// The owner: a user name or a uid.
    pub user: Option<UserRef>,
    /// A systemd unit (`trader-a.service`): one component of the cgroup path.
    pub unit: Option<String>,
    /// A cgroup path (`*`, `?` allowed): the process's cgroup is it or below it.
    pub cgroup: Option<String>,
    /// A regular expression searched in an ancestor's command line.
    pub under: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum UserRef {
    Uid(u32),
    Name(String),
}

impl ProcessScope {
    pub fn granted(&self) -> bool {
        *self != ProcessScope::None
    }

    /// What the policy text should say about it: a problem, or None.
    pub fn problem(&self) -> Option<String> {
        let ProcessScope::Within(w) = self else {
            return None;
        };
        if w.user.is_none() && w.unit.is_none() && w.cgroup.is_none() && w.under.is_none() {
            return Some("an empty scope table names no processes: give user, unit, cgroup or under, or write \"host\"".into());
        }
        if let Some(under) = &w.under {
            if let Err(e) = regex::Regex::new(under) {
                return Some(format!("under: bad pattern {under:?}: {e}"));
            }
        }
        if let Some(cgroup) = &w.cgroup {
            if let Err(e) = glob::Pattern::new(cgroup) {
                return Some(format!("cgroup: bad pattern {cgroup:?}: {e}"));
            }
        }
        None
    }
}

impl<'de> Deserialize<'de> for ProcessScope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ProcessScope, D::Error> {
        use serde::de::Error as _;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Flag(bool),
            Word(String),
            Table(Within),
        }
        match Written::deserialize(d)? {
            Written::Flag(true) => Ok(ProcessScope::Host),
            Written::Flag(false) => Ok(ProcessScope::None),
            Written::Word(w) if w == "host" => Ok(ProcessScope::Host),
            Written::Word(w) => Err(D::Error::custom(format!(
                "{w:?} is not a scope: write true or \"host\" (the whole host), or a table {{ user, unit, cgroup, under }}"
            ))),
            Written::Table(t) => Ok(ProcessScope::Within(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        s: ProcessScope,
    }

    fn parse(text: &str) -> Result<ProcessScope, String> {
        toml::from_str::<T>(text)
            .map(|t| t.s)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn true_and_host_are_the_whole_host_and_a_table_is_a_scope() {
        assert_eq!(parse("s = true").unwrap(), ProcessScope::Host);
        assert_eq!(parse("s = \"host\"").unwrap(), ProcessScope::Host);
        assert_eq!(parse("s = false").unwrap(), ProcessScope::None);
        assert_eq!(
            parse("s = { user = 1001, under = \"run\\\\.sh\" }").unwrap(),
            ProcessScope::Within(Within {
                user: Some(UserRef::Uid(1001)),
                under: Some("run\\.sh".into()),
                ..Default::default()
            })
        );
        assert!(parse("s = \"everywhere\"").is_err());
        assert!(parse("s = { usr = 1 }").is_err());
    }

    #[test]
    fn an_empty_table_or_a_bad_pattern_is_a_problem() {
        assert!(parse("s = {}").unwrap().problem().is_some());
        let bad = parse("s = { under = \"(\" }").unwrap().problem().unwrap();
        assert!(bad.starts_with("under: bad pattern"), "{bad}");
        assert!(parse("s = { unit = \"a.service\" }")
            .unwrap()
            .problem()
            .is_none());
    }
}
