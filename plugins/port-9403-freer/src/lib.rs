//! The incident: a deploy fails with "address already in use" because the
//! previous instance (a stray uvicorn, an old container) still listens on the
//! service port. For each watched port this plugin finds its listeners, maps
//! each to the processes holding it and to their container (by cgroup, or a
//! running container publishing the port), and decides from the policy
//! whether the owner is the expected one. An unexpected owner is stopped (a
//! process with TERM, grace, KILL; a container through the engine), then the
//! port is verified free within a deadline. An expected owner that fails its
//! health probe is stale: reported, and stopped only when `stale_if_unhealthy`
//! says so. An expected, healthy owner is never touched.

use doctor_sdk::ports::{
    holder_evidence, owners_table, probe_health, tcp_listeners, EngineView, Expect, ExpectedOwner,
    Health, Holder, PortHolders,
};
use doctor_sdk::prelude::*;
use doctor_sdk::process::ProcessTable;
use serde::Deserialize;

doctor_sdk::config! {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        /// watched ports: a number (nothing expected: any listener is in the way) or { port, expect = { command = REGEX, uid = N, container = GLOB, image = GLOB, compose = GLOB on PROJECT/SERVICE }, health = "http://127.0.0.1:PORT/path" | "tcp://127.0.0.1:PORT", stale_if_unhealthy, grace_ms, deadline_ms, health_timeout_ms }
        ports: Vec<PortSpec> = "[9403]",
        /// time between TERM and KILL when stopping an owner process
        grace_ms: u32 = "5000",
        /// how long the port may take to become free after the owner was stopped
        deadline_ms: u32 = "15000",
        /// timeout of one health probe
        health_timeout_ms: u32 = "2000",
        /// stop an expected owner whose health probe fails (otherwise it is only reported)
        stale_if_unhealthy: bool = "false",
    }
}

/// A watched port: a bare number (nothing expected: any listener is in the way) or a table overriding the plugin's settings.
#[derive(Deserialize)]
#[serde(untagged)]
enum PortSpec {
    Bare(u16),
    Full(Watch),
}

#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
struct Watch {
    port: u16,
    expect: Option<Expect>,
    /// `http://127.0.0.1:PORT/path` or `tcp://127.0.0.1:PORT` (see `probe_health`).
    health: Option<String>,
    stale_if_unhealthy: Option<bool>,
    grace_ms: Option<u32>,
    deadline_ms: Option<u32>,
    health_timeout_ms: Option<u32>,
}

struct PortFreer;

impl Plugin for PortFreer {
    type Config = Config;

    fn info() -> Info {
        Info::new("port-9403-freer", "Frees watched ports held by an unexpected or stale owner (process or container), then verifies the port can be bound")
            .capabilities(&[caps::SOCKETS, caps::PROCESSES, caps::PROBE, caps::CONTAINERS, caps::SIGNAL, caps::CONTAINERS_WRITE])
            .config::<Config>()
    }

    fn check(config: Config) -> Result<Vec<Finding>, Error> {
        let watches: Vec<Watch> = config
            .ports
            .iter()
            .map(|s| match s {
                PortSpec::Bare(port) => Watch {
                    port: *port,
                    ..Watch::default()
                },
                PortSpec::Full(w) => w.clone(),
            })
            .collect();
        let owner_of = |w: &Watch| {
            ExpectedOwner::new(w.expect.as_ref())
                .map_err(|e| Error::Invalid(format!("port {}: expect.command: {e}", w.port)))
        };
        let owners: Vec<ExpectedOwner> = watches.iter().map(owner_of).collect::<Result<_, _>>()?;
        let ports: Vec<u16> = watches.iter().map(|w| w.port).collect();
        let listeners = tcp_listeners(&ports)?;
        if listeners.is_empty() {
            return Ok(Vec::new());
        }
        let table = owners_table(&listeners)?;
        let mut engine = EngineView::default();
        let mut findings = Vec::new();
        for (w, owner) in watches.iter().zip(&owners) {
            if let Some(holders) = PortHolders::read(w.port, &listeners, owner, &table, &mut engine)
            {
                let port = Port {
                    w,
                    subject: Subject::new("port", w.port),
                    grace_ms: w.grace_ms.unwrap_or(config.grace_ms),
                    deadline_ms: w.deadline_ms.unwrap_or(config.deadline_ms),
                    health_timeout_ms: w.health_timeout_ms.unwrap_or(config.health_timeout_ms),
                    stale_if_unhealthy: w.stale_if_unhealthy.unwrap_or(config.stale_if_unhealthy),
                    table: &table,
                };
                findings.extend(port.check(&holders, owner));
            }
        }
        Ok(findings)
    }
}

/// One watched port with its settings (its own, else the plugin's) and the process table.
struct Port<'a> {
    w: &'a Watch,
    subject: Subject,
    grace_ms: u32,
    deadline_ms: u32,
    health_timeout_ms: u32,
    stale_if_unhealthy: bool,
    table: &'a ProcessTable,
}

impl Port<'_> {
    fn check(&self, holders: &PortHolders, owner: &ExpectedOwner) -> Vec<Finding> {
        let port = self.w.port;
        let addresses = &holders.addresses;
        let mut findings = Vec::new();
        if !holders.unexpected.is_empty() {
            let rule = if holders.unexpected.iter().all(Holder::is_container) {
                "unexpected-container"
            } else {
                "unexpected-owner"
            };
            let who = Holder::describe_all(&holders.unexpected);
            let expected = owner.describe();
            let message = format!("port {port} ({addresses}) is held by {who}; {expected}");
            let f = self
                .subject
                .finding(Severity::Critical, rule, message)
                .evidence("port", port)
                .evidence("addresses", addresses)
                .evidence("expected", &expected);
            let f = holder_evidence(f, &holders.unexpected, self.table);
            findings.push(self.free(f, holders, &holders.unexpected));
        }
        if !holders.hidden.is_empty() {
            let who = Holder::describe_all(&holders.hidden);
            let message = format!("port {port} is held by {who}; the doctor cannot tell whether it is expected (run it as root to see every process)");
            let f = self
                .subject
                .finding(Severity::Warning, "unknown-owner", message);
            findings.push(f.evidence("port", port));
        }
        // Only an expected owner that holds the port with nothing in the way is probed.
        let Some(url) = self
            .w
            .health
            .as_ref()
            .filter(|_| !holders.expected.is_empty() && holders.unexpected.is_empty())
        else {
            return findings;
        };
        // An expected owner that fails its health probe is stale.
        let owner = Holder::describe_all(&holders.expected);
        match probe_health(url, self.health_timeout_ms) {
            Health::Healthy => {}
            Health::Unknown(why) => {
                let message = format!("port {port} is held by the expected owner ({owner}), but its health could not be probed: {why}; it is left alone");
                let f = self
                    .subject
                    .finding(Severity::Warning, "health-unknown", message);
                findings.push(f.evidence("health", url).evidence("error", why));
            }
            Health::Unhealthy(why) => {
                let (severity, then) = if self.stale_if_unhealthy {
                    (Severity::Critical, "it is stale and will be stopped")
                } else {
                    (
                        Severity::Warning,
                        "left alone because stale_if_unhealthy is false",
                    )
                };
                let message = format!("port {port} is held by the expected owner ({owner}), but it fails its health probe ({why}); {then}");
                let f = self
                    .subject
                    .finding(severity, "stale-owner", message)
                    .evidence("port", port)
                    .evidence("addresses", addresses)
                    .evidence("health", url)
                    .evidence("health_result", &why);
                let f = holder_evidence(f, &holders.expected, self.table);
                findings.push(if self.stale_if_unhealthy {
                    self.free(f, holders, &holders.expected)
                } else {
                    f
                });
            }
        }
        findings
    }

    /// Stop `stop`, then (when that leaves nobody holding the port) wait until it is free.
    fn free(&self, f: Finding, holders: &PortHolders, stop: &[Holder]) -> Finding {
        holders.free(f, stop, self.table, self.grace_ms, self.deadline_ms)
    }
}

register_plugin!(PortFreer);
