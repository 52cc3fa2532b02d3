//! Who owns a row: the value a worker or coordinator writes into a table to
//! say "mine". Shared by the database plugins so every plugin reads owners
//! the same way.
//!
//! | `owner_format` | example value        | means                                   |
//! |----------------|----------------------|-----------------------------------------|
//! | `auto`         | any of the below     | the first form that fits                |
//! | `pid`          | `4242`, `4242:98765` | a local pid, optionally `:start-time`   |
//! | `host:pid`     | `node-a:4242`        | pid 4242 on host node-a                 |
//! | `pid@host`     | `4242@node-a`        | pid 4242 on host node-a                 |
//! | a regex        | `^w-(?P<host>[^-]+)-(?P<pid>\d+)$` | named groups `pid` (required), `host`, `start` |
//!
//! The start time is clock ticks after boot (field 22 of /proc/PID/stat).
//! In `auto`, `A:B` with both parts digits is `pid:start-time`; otherwise it
//! is `host:pid`. An owner without a host is on this host.

use regex_lite::Regex;

/// How a table writes its owners (config key `owner_format`).
#[derive(Debug, Clone)]
pub enum OwnerFormat {
    Auto,
    Pid,
    HostPid,
    PidAtHost,
    Pattern(Regex),
}

impl OwnerFormat {
    /// `auto`, `pid`, `host:pid`, `pid@host`, or a regex with a named `pid` group.
    pub fn parse(text: &str) -> Result<OwnerFormat, String> {
        Ok(match text.trim() {
            "" | "auto" => OwnerFormat::Auto,
            "pid" => OwnerFormat::Pid,
            "host:pid" => OwnerFormat::HostPid,
            "pid@host" => OwnerFormat::PidAtHost,
            pattern => {
                let re = Regex::new(pattern)
                    .map_err(|e| format!("owner_format: bad pattern {pattern:?}: {e}"))?;
                if !re.capture_names().any(|n| n == Some("pid")) {
                    return Err(format!(
                        "owner_format {pattern:?}: not auto, pid, host:pid or pid@host, and as a regex it has no named group `pid` (write (?P<pid>\\d+))"
                    ));
                }
                OwnerFormat::Pattern(re)
            }
        })
    }
}

/// An owner read from a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// None: this host.
    pub host: Option<String>,
    pub pid: u32,
    pub start_time: Option<u64>,
}

impl Owner {
    /// Is the owner on this host (`local` is `host::hostname()`)?
    pub fn is_local(&self, local: &str) -> bool {
        self.host.as_deref().is_none_or(|h| same_host(h, local))
    }
}

/// Host names compare case-insensitively, and a short name equals its FQDN
/// (`node-a` is `node-a.example.net`); `localhost` is always this host.
pub fn same_host(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim().to_ascii_lowercase(), b.trim().to_ascii_lowercase());
    if a == b || a == "localhost" || a == "127.0.0.1" {
        return true;
    }
    let short = |s: &str| s.split('.').next().unwrap_or("").to_string();
    (!a.contains('.') || !b.contains('.')) && short(&a) == short(&b)
}

/// Read one owner value; the error says what was expected.
pub fn parse_owner(value: &str, format: &OwnerFormat) -> Result<Owner, String> {
    let v = value.trim();
    match format {
        OwnerFormat::Auto => parse_auto(v),
        OwnerFormat::Pid => {
            pid_and_start(v).ok_or_else(|| format!("{v:?} is not a pid or pid:start-time"))
        }
        OwnerFormat::HostPid => {
            let (host, pid) = v
                .rsplit_once(':')
                .ok_or_else(|| format!("{v:?} is not host:pid"))?;
            with_host(host, pid).ok_or_else(|| format!("{v:?} is not host:pid"))
        }
        OwnerFormat::PidAtHost => {
            let (pid, host) = v
                .split_once('@')
                .ok_or_else(|| format!("{v:?} is not pid@host"))?;
            with_host(host, pid).ok_or_else(|| format!("{v:?} is not pid@host"))
        }
        OwnerFormat::Pattern(re) => {
            let caps = re
                .captures(v)
                .ok_or_else(|| format!("{v:?} does not match owner_format /{}/", re.as_str()))?;
            let pid = caps
                .name("pid")
                .and_then(|m| parse_pid(m.as_str()))
                .ok_or_else(|| format!("{v:?}: group `pid` is not a pid"))?;
            let host = caps
                .name("host")
                .map(|m| m.as_str().to_string())
                .filter(|h| !h.is_empty());
            let start_time = match caps.name("start") {
                Some(m) => Some(
                    m.as_str()
                        .parse()
                        .map_err(|_| format!("{v:?}: group `start` is not a number"))?,
                ),
                None => None,
            };
            Ok(Owner {
                host,
                pid,
                start_time,
            })
        }
    }
}

fn parse_auto(v: &str) -> Result<Owner, String> {
    if let Some(owner) = pid_and_start(v) {
        return Ok(owner);
    }
    if let Some((pid, host)) = v.split_once('@') {
        if let Some(owner) = with_host(host, pid) {
            return Ok(owner);
        }
    }
    if let Some((host, pid)) = v.rsplit_once(':') {
        if let Some(owner) = with_host(host, pid) {
            return Ok(owner);
        }
    }
    Err(format!("{v:?} is not an owner doctor can read (pid, pid:start-time, host:pid, pid@host; or set owner_format)"))
}

fn parse_pid(text: &str) -> Option<u32> {
    text.trim().parse::<u32>().ok().filter(|p| *p > 0)
}

fn pid_and_start(v: &str) -> Option<Owner> {
    match v.split_once(':') {
        None => Some(Owner {
            host: None,
            pid: parse_pid(v)?,
            start_time: None,
        }),
        Some((p, s)) => Some(Owner {
            host: None,
            pid: parse_pid(p)?,
            start_time: Some(s.trim().parse().ok()?),
        }),
    }
}

fn with_host(host: &str, pid: &str) -> Option<Owner> {
    let host = host.trim();
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return None;
    }
    Some(Owner {
        host: Some(host.to_string()),
        pid: parse_pid(pid)?,
        start_time: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto(v: &str) -> Result<Owner, String> {
        parse_owner(v, &OwnerFormat::Auto)
    }

    fn owner(host: Option<&str>, pid: u32, start: Option<u64>) -> Owner {
        Owner {
            host: host.map(str::to_string),
            pid,
            start_time: start,
        }
    }

    #[test]
    fn auto_reads_every_written_form() {
        assert_eq!(auto("4242"), Ok(owner(None, 4242, None)));
        assert_eq!(auto("4242:98765"), Ok(owner(None, 4242, Some(98765))));
        assert_eq!(auto("node-a:4242"), Ok(owner(Some("node-a"), 4242, None)));
        assert_eq!(
            auto("4242@node-a.example.net"),
            Ok(owner(Some("node-a.example.net"), 4242, None))
        );
        assert!(auto("worker-7").is_err());
        assert!(auto("0").is_err());
        assert!(auto("").is_err());
    }

    #[test]
    fn declared_formats_are_strict() {
        assert!(parse_owner("4242", &OwnerFormat::HostPid).is_err());
        assert_eq!(
            parse_owner("h:1", &OwnerFormat::HostPid),
            Ok(owner(Some("h"), 1, None))
        );
        assert_eq!(
            parse_owner("1@h", &OwnerFormat::PidAtHost),
            Ok(owner(Some("h"), 1, None))
        );
        assert!(parse_owner("h:1", &OwnerFormat::Pid).is_err());
    }

    #[test]
    fn a_pattern_needs_a_pid_group() {
        assert!(OwnerFormat::parse("^w-(\\d+)$").is_err());
        let f =
            OwnerFormat::parse("^w-(?P<host>[a-z]+)-(?P<pid>\\d+)(/(?P<start>\\d+))?$").unwrap();
        assert_eq!(
            parse_owner("w-nodea-77", &f),
            Ok(owner(Some("nodea"), 77, None))
        );
        assert_eq!(
            parse_owner("w-nodea-77/900", &f),
            Ok(owner(Some("nodea"), 77, Some(900)))
        );
        assert!(parse_owner("x", &f).is_err());
    }

    #[test]
    fn hosts_compare_loosely_but_not_wrongly() {
        assert!(same_host("Node-A", "node-a.example.net"));
        assert!(same_host("localhost", "anything"));
        assert!(!same_host("node-b", "node-a"));
        assert!(!same_host("node-a.x.net", "node-a.y.net"));
    }
}
