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
    display_address, free_port_plan, holder_evidence, holders, probe_health, EngineView, Expect,
    Health, Holder,
};
use doctor_sdk::prelude::*;
use doctor_sdk::process::ProcessTable;
use doctor_sdk::sockets::{Listener, Protocol};
use regex_lite::Regex;
use serde::Deserialize;

doctor_sdk::config! {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        /// watched ports: a number (nothing expected: any listener is in the way) or { port, expect = { command = REGEX, uid = N, container = GLOB, image = GLOB }, health = "http://127.0.0.1:PORT/path" | "tcp://127.0.0.1:PORT", stale_if_unhealthy, grace_ms, deadline_ms, health_timeout_ms }
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
        let command_of = |w: &Watch| {
            w.expect
                .as_ref()
                .and_then(|e| e.command.as_deref())
                .map(Regex::new)
                .transpose()
                .map_err(|e| Error::Invalid(format!("port {}: expect.command: {e}", w.port)))
        };
        let commands: Vec<Option<Regex>> =
            watches.iter().map(command_of).collect::<Result<_, _>>()?;
        let listeners = sockets::listeners()?;
        let watched: Vec<&Listener> = listeners
            .iter()
            .filter(|l| l.protocol == Protocol::Tcp && watches.iter().any(|w| w.port == l.port))
            .collect();
        if watched.is_empty() {
            return Ok(Vec::new());
        }
        let table = ProcessTable::new(processes::all()?);
        let (mut engine, mut findings) = (EngineView::default(), Vec::new());
        for (w, command) in watches.iter().zip(&commands) {
            let here: Vec<&Listener> = watched
                .iter()
                .copied()
                .filter(|l| l.port == w.port)
                .collect();
            if !here.is_empty() {
                let port = Port {
                    w,
                    config: &config,
                    command: command.as_ref(),
                    table: &table,
                };
                findings.extend(port.check(&here, &mut engine));
            }
        }
        Ok(findings)
    }
}

/// One watched port, its settings (its own, else the plugin's) and the facts to judge its holders by.
struct Port<'a> {
    w: &'a Watch,
    config: &'a Config,
    command: Option<&'a Regex>,
    table: &'a ProcessTable,
}

impl Port<'_> {
    fn check(&self, listeners: &[&Listener], engine: &mut EngineView) -> Vec<Finding> {
        let port = self.w.port;
        let addresses = listeners
            .iter()
            .map(|l| display_address(&l.address, port))
            .collect::<Vec<_>>()
            .join(", ");
        let expected_text = Expect::describe(self.w.expect.as_ref());
        let is_expected = |h: &Holder| {
            self.w
                .expect
                .as_ref()
                .is_some_and(|e| e.matches(h, self.command, self.table))
        };
        let (expected, unexpected): (Vec<Holder>, Vec<Holder>) =
            holders(port, listeners, self.table, engine)
                .into_iter()
                .partition(is_expected);
        let (hidden, unexpected): (Vec<Holder>, Vec<Holder>) = unexpected
            .into_iter()
            .partition(|h| matches!(h, Holder::Hidden { .. }));
        let who = |holders: &[Holder]| {
            holders
                .iter()
                .map(Holder::describe)
                .collect::<Vec<_>>()
                .join("; ")
        };
        let mut findings = Vec::new();
        if !unexpected.is_empty() {
            let key = if unexpected
                .iter()
                .all(|h| matches!(h, Holder::Container { .. }))
            {
                "unexpected-container"
            } else {
                "unexpected-owner"
            };
            let f = Finding::critical(
                format!("port:{port}:{key}"),
                format!("port {port}"),
                format!(
                    "port {port} ({addresses}) is held by {}; {expected_text}",
                    who(&unexpected)
                ),
            );
            let f = holder_evidence(
                f.evidence("port", port)
                    .evidence("addresses", &addresses)
                    .evidence("expected", &expected_text),
                &unexpected,
                self.table,
            );
            // The port cannot become free while an expected owner keeps it.
            findings.push(self.free(f, &unexpected, expected.is_empty() && hidden.is_empty()));
        }
        if !hidden.is_empty() {
            let message = format!("port {port} is held by {}; the doctor cannot tell whether it is expected (run it as root to see every process)", who(&hidden));
            findings.push(
                Finding::warning(
                    format!("port:{port}:unknown-owner"),
                    format!("port {port}"),
                    message,
                )
                .evidence("port", port),
            );
        }
        let Some(url) = self
            .w
            .health
            .as_ref()
            .filter(|_| !expected.is_empty() && unexpected.is_empty())
        else {
            return findings;
        };
        // An expected owner that fails its health probe is stale.
        let timeout = self
            .w
            .health_timeout_ms
            .unwrap_or(self.config.health_timeout_ms);
        let (owner, stale) = (
            who(&expected),
            self.w
                .stale_if_unhealthy
                .unwrap_or(self.config.stale_if_unhealthy),
        );
        match probe_health(url, timeout) {
            Health::Healthy => {}
            Health::Unknown(why) => {
                let message = format!("port {port} is held by the expected owner ({owner}), but its health could not be probed: {why}; it is left alone");
                findings.push(
                    Finding::warning(
                        format!("port:{port}:health-unknown"),
                        format!("port {port}"),
                        message,
                    )
                    .evidence("health", url)
                    .evidence("error", why),
                );
            }
            Health::Unhealthy(why) => {
                let (severity, then) = if stale {
                    (Severity::Critical, "it is stale and will be stopped")
                } else {
                    (
                        Severity::Warning,
                        "left alone because stale_if_unhealthy is false",
                    )
                };
                let message = format!("port {port} is held by the expected owner ({owner}), but it fails its health probe ({why}); {then}");
                let f = Finding::new(
                    format!("port:{port}:stale-owner"),
                    severity,
                    format!("port {port}"),
                    message,
                )
                .evidence("port", port)
                .evidence("addresses", &addresses);
                let f = holder_evidence(
                    f.evidence("health", url).evidence("health_result", &why),
                    &expected,
                    self.table,
                );
                findings.push(if stale {
                    self.free(f, &expected, hidden.is_empty())
                } else {
                    f
                });
            }
        }
        findings
    }

    /// Stop the holders, then (when nothing else keeps the port) wait until it is free.
    fn free(&self, f: Finding, holders: &[Holder], then_wait: bool) -> Finding {
        let (grace, deadline) = (
            self.w.grace_ms.unwrap_or(self.config.grace_ms),
            self.w.deadline_ms.unwrap_or(self.config.deadline_ms),
        );
        free_port_plan(
            f,
            holders,
            self.table,
            self.w.port,
            grace,
            then_wait.then_some(deadline),
        )
    }
}

register_plugin!(PortFreer);
