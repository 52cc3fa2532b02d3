//! The incident: a deploy fails with "address already in use" because the
//! previous instance (a stray uvicorn, an old container) still listens on the
//! service port.
//!
//! For each watched port this plugin finds the listening sockets, maps each
//! to the processes holding it and, where one is, to its container (by the
//! owner's cgroup, which names the container id, or by a running container
//! that publishes the port), and decides from the policy whether the owner is
//! the expected one. An unexpected owner is stopped (a process with TERM,
//! grace, KILL; a container through the engine) and the port is then verified
//! free within a deadline. An expected owner that fails its health probe is
//! stale: reported, and stopped only when `stale_if_unhealthy` says so. An
//! expected, healthy owner is never touched.

use std::collections::{BTreeMap, HashMap};

use doctor_sdk::containers::Container;
use doctor_sdk::prelude::*;
use doctor_sdk::processes::Process;
use doctor_sdk::sockets::{Listener, Protocol};
use regex_lite::Regex;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    ports: Vec<PortSpec>,
    grace_ms: u32,
    deadline_ms: u32,
    health_timeout_ms: u32,
    stale_if_unhealthy: bool,
}

/// A watched port: a bare number (nothing is expected there: any listener is
/// in the way) or a table.
#[derive(Deserialize)]
#[serde(untagged)]
enum PortSpec {
    Bare(u16),
    Full(Watch),
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Watch {
    port: u16,
    #[serde(default)]
    expect: Option<Expect>,
    /// `http://127.0.0.1:PORT/path` (healthy: status below 400) or
    /// `tcp://127.0.0.1:PORT` (healthy: accepts a connection).
    #[serde(default)]
    health: Option<String>,
    #[serde(default)]
    stale_if_unhealthy: Option<bool>,
    #[serde(default)]
    grace_ms: Option<u32>,
    #[serde(default)]
    deadline_ms: Option<u32>,
    #[serde(default)]
    health_timeout_ms: Option<u32>,
}

/// Who may hold the port. Every given field must match.
#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// Regular expression searched in the owner's command line (argv joined by spaces).
    command: Option<String>,
    uid: Option<u32>,
    /// Glob (`*`, `?`) on the container's name; the owner must be in a container.
    container: Option<String>,
    /// Glob on the container's image; the owner must be in a container.
    image: Option<String>,
}

impl Watch {
    fn from_spec(spec: PortSpec) -> Watch {
        match spec {
            PortSpec::Full(w) => w,
            PortSpec::Bare(port) => Watch {
                port,
                expect: None,
                health: None,
                stale_if_unhealthy: None,
                grace_ms: None,
                deadline_ms: None,
                health_timeout_ms: None,
            },
        }
    }
}

struct PortFreer;

impl Plugin for PortFreer {
    type Config = Config;

    fn info() -> Info {
        Info::new(
            "port-9403-freer",
            "Frees watched ports held by an unexpected or stale owner (process or container), then verifies the port can be bound",
        )
        .capability(caps::SOCKETS)
        .capability(caps::PROCESSES)
        .capability(caps::PROBE)
        .capability(caps::CONTAINERS)
        .capability(caps::SIGNAL)
        .capability(caps::CONTAINERS_WRITE)
        .config_key(
            "ports",
            Some("[9403]"),
            "watched ports: a number (nothing expected: any listener is in the way) or { port, expect = { command = REGEX, uid = N, container = GLOB, image = GLOB }, health = \"http://127.0.0.1:PORT/path\" | \"tcp://127.0.0.1:PORT\", stale_if_unhealthy, grace_ms, deadline_ms, health_timeout_ms }",
        )
        .config_key("grace_ms", Some("5000"), "time between TERM and KILL when stopping an owner process")
        .config_key("deadline_ms", Some("15000"), "how long the port may take to become free after the owner was stopped")
        .config_key("health_timeout_ms", Some("2000"), "timeout of one health probe")
        .config_key(
            "stale_if_unhealthy",
            Some("false"),
            "stop an expected owner whose health probe fails (otherwise it is only reported)",
        )
    }

    fn check(config: Config) -> Result<Vec<Finding>, Error> {
        let watches: Vec<Watch> = config.ports.iter().map(|s| Watch::from_spec(clone_spec(s))).collect();
        let mut patterns = HashMap::new();
        for w in &watches {
            if let Some(Expect { command: Some(p), .. }) = &w.expect {
                let re = Regex::new(p).map_err(|e| Error::Invalid(format!("port {}: expect.command: {e}", w.port)))?;
                patterns.insert(w.port, re);
            }
        }
        let listeners = sockets::listeners()?;
        let watched: Vec<&Listener> = listeners
            .iter()
            .filter(|l| l.protocol == Protocol::Tcp && watches.iter().any(|w| w.port == l.port))
            .collect();
        if watched.is_empty() {
            return Ok(Vec::new());
        }
        let table = processes::all()?;
        let by_pid: HashMap<u32, &Process> = table.iter().map(|p| (p.id.pid, p)).collect();
        let mut engine = EngineView::default();
        let mut findings = Vec::new();
        for w in &watches {
            let here: Vec<&Listener> = watched.iter().copied().filter(|l| l.port == w.port).collect();
            if here.is_empty() {
                continue;
            }
            let ctx = PortCtx { watch: w, config: &config, pattern: patterns.get(&w.port), by_pid: &by_pid };
            findings.extend(check_port(&ctx, &here, &mut engine));
        }
        Ok(findings)
    }
}

fn clone_spec(s: &PortSpec) -> PortSpec {
    match s {
        PortSpec::Bare(p) => PortSpec::Bare(*p),
        PortSpec::Full(w) => PortSpec::Full(w.clone()),
    }
}

struct PortCtx<'a> {
    watch: &'a Watch,
    config: &'a Config,
    pattern: Option<&'a Regex>,
    by_pid: &'a HashMap<u32, &'a Process>,
}

impl PortCtx<'_> {
    fn grace(&self) -> u32 {
        self.watch.grace_ms.unwrap_or(self.config.grace_ms)
    }
    fn deadline(&self) -> u32 {
        self.watch.deadline_ms.unwrap_or(self.config.deadline_ms)
    }
    fn stale_if_unhealthy(&self) -> bool {
        self.watch.stale_if_unhealthy.unwrap_or(self.config.stale_if_unhealthy)
    }
    fn health_timeout(&self) -> u32 {
        self.watch.health_timeout_ms.unwrap_or(self.config.health_timeout_ms)
    }
}

/// Who holds (part of) the port.
#[derive(Clone)]
enum Holder {
    Process(Process),
    Container { id: String, name: String, image: String, via: String, pids: Vec<u32> },
    /// A socket whose holder we cannot see (another user's process without root).
    Hidden { address: String, uid: u32 },
}

impl Holder {
    fn describe(&self) -> String {
        match self {
            Holder::Process(p) => format!("pid {} (uid {}: {})", p.id.pid, p.uid, one_line(&command_line(p), 160)),
            Holder::Container { name, image, id, via, .. } => {
                format!("container {name} ({image}, id {}) found by {via}", short(id))
            }
            Holder::Hidden { address, uid } => format!("a socket on {address} owned by uid {uid} whose process is not visible"),
        }
    }
}

fn command_line(p: &Process) -> String {
    if p.argv.is_empty() {
        format!("[{}]", p.name)
    } else {
        p.argv.join(" ")
    }
}

/// A command line on one line, at most `max` characters, for messages
/// (the evidence keeps it whole).
fn one_line(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max).collect::<String>())
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn check_port(ctx: &PortCtx, listeners: &[&Listener], engine: &mut EngineView) -> Vec<Finding> {
    let port = ctx.watch.port;
    let addresses: Vec<String> = listeners.iter().map(|l| display_address(&l.address, port)).collect();
    let holders = holders(ctx, listeners, engine);
    let (expected, unexpected): (Vec<Holder>, Vec<Holder>) = holders.into_iter().partition(|h| is_expected(ctx, h));
    let (hidden, unexpected): (Vec<Holder>, Vec<Holder>) =
        unexpected.into_iter().partition(|h| matches!(h, Holder::Hidden { .. }));

    let mut findings = Vec::new();
    if !unexpected.is_empty() {
        let all_containers = unexpected.iter().all(|h| matches!(h, Holder::Container { .. }));
        let key = if all_containers { "unexpected-container" } else { "unexpected-owner" };
        let who: Vec<String> = unexpected.iter().map(Holder::describe).collect();
        let message = format!(
            "port {port} ({}) is held by {}; {}",
            addresses.join(", "),
            who.join("; "),
            expectation_text(ctx.watch)
        );
        let finding = Finding::critical(format!("port:{port}:{key}"), format!("port {port}"), message)
            .evidence("port", port)
            .evidence("addresses", addresses.join(", "))
            .evidence("expected", expectation_text(ctx.watch));
        let finding = holder_evidence(ctx, finding, &unexpected);
        // The port cannot become free while an expected owner keeps it.
        findings.push(stop_plan(ctx, finding, &unexpected, expected.is_empty() && hidden.is_empty()));
    }
    if !hidden.is_empty() {
        let who: Vec<String> = hidden.iter().map(Holder::describe).collect();
        findings.push(
            Finding::warning(
                format!("port:{port}:unknown-owner"),
                format!("port {port}"),
                format!(
                    "port {port} is held by {}; the doctor cannot tell whether it is expected (run it as root to see every process)",
                    who.join("; ")
                ),
            )
            .evidence("port", port),
        );
    }
    if !expected.is_empty() && unexpected.is_empty() {
        if let Some(finding) = health_finding(ctx, &expected, &addresses, hidden.is_empty()) {
            findings.push(finding);
        }
    }
    findings
}

/// One finding for an expected owner that fails its health probe.
fn health_finding(ctx: &PortCtx, expected: &[Holder], addresses: &[String], port_can_free: bool) -> Option<Finding> {
    let port = ctx.watch.port;
    let url = ctx.watch.health.as_ref()?;
    let verdict = probe_health(url, ctx.health_timeout());
    let who: Vec<String> = expected.iter().map(Holder::describe).collect();
    match verdict {
        Health::Healthy => None,
        Health::Unknown(why) => Some(
            Finding::warning(
                format!("port:{port}:health-unknown"),
                format!("port {port}"),
                format!("port {port} is held by the expected owner ({}), but its health could not be probed: {why}; it is left alone", who.join("; ")),
            )
            .evidence("health", url)
            .evidence("error", why),
        ),
        Health::Unhealthy(why) => {
            let base = |severity: Severity, message: String| {
                Finding::new(format!("port:{port}:stale-owner"), severity, format!("port {port}"), message)
                    .evidence("port", port)
                    .evidence("addresses", addresses.join(", "))
                    .evidence("health", url)
                    .evidence("health_result", &why)
            };
            if ctx.stale_if_unhealthy() {
                let finding = base(
                    Severity::Critical,
                    format!(
                        "port {port} is held by the expected owner ({}), but it fails its health probe ({why}); it is stale and will be stopped",
                        who.join("; ")
                    ),
                );
                let finding = holder_evidence(ctx, finding, expected);
                Some(stop_plan(ctx, finding, expected, port_can_free))
            } else {
                let finding = base(
                    Severity::Warning,
                    format!(
                        "port {port} is held by the expected owner ({}), but it fails its health probe ({why}); left alone because stale_if_unhealthy is false",
                        who.join("; ")
                    ),
                );
                Some(holder_evidence(ctx, finding, expected))
            }
        }
    }
}

enum Health {
    Healthy,
    Unhealthy(String),
    /// The probe itself could not be made (denied, invalid): never a reason to act.
    Unknown(String),
}

fn probe_health(url: &str, timeout_ms: u32) -> Health {
    if let Some(rest) = url.strip_prefix("tcp://") {
        let Some((host, port)) = rest.trim_end_matches('/').rsplit_once(':') else {
            return Health::Unknown(format!("{url}: expected tcp://HOST:PORT"));
        };
        let Ok(port) = port.parse::<u16>() else {
            return Health::Unknown(format!("{url}: bad port"));
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        return match probe::tcp_connect(host, port, timeout_ms) {
            Ok(true) => Health::Healthy,
            Ok(false) => Health::Unhealthy(format!("{url} does not accept connections within {timeout_ms} ms")),
            Err(Error::Io(e)) => Health::Unhealthy(format!("{url}: {e}")),
            Err(e) => Health::Unknown(doctor_sdk::error_text(&e)),
        };
    }
    match probe::http_get(url, timeout_ms) {
        Ok(r) if r.status < 400 => Health::Healthy,
        Ok(r) => Health::Unhealthy(format!("GET {url} answered HTTP {}", r.status)),
        Err(Error::Io(e)) | Err(Error::Limit(e)) => Health::Unhealthy(format!("GET {url} failed: {e}")),
        Err(e) => Health::Unknown(doctor_sdk::error_text(&e)),
    }
}

fn holder_evidence(ctx: &PortCtx, mut finding: Finding, holders: &[Holder]) -> Finding {
    for h in holders {
        match h {
            Holder::Process(p) => {
                finding = finding.evidence(&format!("pid {}", p.id.pid), command_line(p)).evidence(&format!("pid {} uid", p.id.pid), p.uid);
                if let Some(parent) = ctx.by_pid.get(&p.ppid) {
                    finding = finding.evidence(&format!("pid {} parent", p.id.pid), format!("pid {}: {}", parent.id.pid, command_line(parent)));
                }
            }
            Holder::Container { id, name, image, via, pids } => {
                let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
                finding = finding
                    .evidence(&format!("container {name}"), format!("{image} (id {id})"))
                    .evidence(&format!("container {name} found by"), via)
                    .evidence(&format!("container {name} pids"), pids.join(", "));
            }
            Holder::Hidden { .. } => {}
        }
    }
    finding
}

/// Stop every holder (containers through the engine, processes children
/// first), then — when nothing else keeps the port — wait for it to be free.
fn stop_plan(ctx: &PortCtx, mut finding: Finding, holders: &[Holder], then_wait: bool) -> Finding {
    let port = ctx.watch.port;
    let grace = ctx.grace();
    for h in ordered(ctx, holders) {
        finding = match h {
            Holder::Process(p) => finding.action(
                Action::stop_process(p.id, grace),
                format!("stop pid {} (`{}`) holding port {port}: TERM, {grace} ms grace, KILL", p.id.pid, one_line(&command_line(p), 200)),
            ),
            Holder::Container { id, name, .. } => finding.action(
                Action::ContainerStop(id.clone()),
                format!("stop container {name} holding port {port} through the engine"),
            ),
            Holder::Hidden { .. } => finding,
        };
    }
    if then_wait {
        let deadline = ctx.deadline();
        finding = finding.then(
            Action::wait_port_free(port, deadline),
            format!("wait up to {deadline} ms for port {port} to be free, then bind it to prove it"),
        );
    }
    finding
}

/// Containers first, then processes with descendants before their ancestors:
/// a stopped parent may take its children with it, and a stop that finds its
/// target already gone counts as not done for the actions that follow.
fn ordered<'a>(ctx: &PortCtx, holders: &'a [Holder]) -> Vec<&'a Holder> {
    let pids: Vec<u32> = holders
        .iter()
        .filter_map(|h| if let Holder::Process(p) = h { Some(p.id.pid) } else { None })
        .collect();
    let depth = |pid: u32| -> usize {
        // How many other holders are ancestors of this one.
        let mut n = 0;
        let mut current = pid;
        for _ in 0..64 {
            let Some(p) = ctx.by_pid.get(&current) else { break };
            if p.ppid <= 1 {
                break;
            }
            if pids.contains(&p.ppid) {
                n += 1;
            }
            current = p.ppid;
        }
        n
    };
    let mut out: Vec<&Holder> = holders.iter().filter(|h| matches!(h, Holder::Container { .. })).collect();
    let mut procs: Vec<&Holder> = holders.iter().filter(|h| matches!(h, Holder::Process(_))).collect();
    procs.sort_by_key(|h| match h {
        Holder::Process(p) => (std::cmp::Reverse(depth(p.id.pid)), p.id.pid),
        _ => (std::cmp::Reverse(0), 0),
    });
    out.extend(procs);
    out
}

fn expectation_text(w: &Watch) -> String {
    let Some(e) = &w.expect else {
        return "nothing is expected on this port: it should be free".into();
    };
    let mut parts = Vec::new();
    if let Some(c) = &e.command {
        parts.push(format!("command matching /{c}/"));
    }
    if let Some(u) = e.uid {
        parts.push(format!("uid {u}"));
    }
    if let Some(c) = &e.container {
        parts.push(format!("container named {c}"));
    }
    if let Some(i) = &e.image {
        parts.push(format!("image {i}"));
    }
    if parts.is_empty() {
        "nothing is expected on this port: it should be free".into()
    } else {
        format!("the expected owner is a {}", parts.join(", "))
    }
}

fn is_expected(ctx: &PortCtx, holder: &Holder) -> bool {
    let Some(e) = &ctx.watch.expect else { return false };
    if e.command.is_none() && e.uid.is_none() && e.container.is_none() && e.image.is_none() {
        return false;
    }
    match holder {
        Holder::Hidden { uid, .. } => {
            // Only a uid-only expectation can be decided without the process.
            e.command.is_none() && e.container.is_none() && e.image.is_none() && e.uid == Some(*uid)
        }
        Holder::Process(p) => {
            if e.container.is_some() || e.image.is_some() {
                return false;
            }
            let command_ok = ctx.pattern.is_none_or(|re| re.is_match(&command_line(p)));
            let uid_ok = e.uid.is_none_or(|u| u == p.uid);
            command_ok && uid_ok
        }
        Holder::Container { name, image, pids, .. } => {
            let name_ok = e.container.as_deref().is_none_or(|g| glob(g, name));
            let image_ok = e.image.as_deref().is_none_or(|g| glob(g, image));
            // command/uid, when given, must hold for the container's processes too.
            let procs: Vec<&&Process> = pids.iter().filter_map(|pid| ctx.by_pid.get(pid)).collect();
            let command_ok = ctx.pattern.is_none_or(|re| !procs.is_empty() && procs.iter().all(|p| re.is_match(&command_line(p))));
            let uid_ok = e.uid.is_none_or(|u| !procs.is_empty() && procs.iter().all(|p| p.uid == u));
            name_ok && image_ok && command_ok && uid_ok
        }
    }
}

/// Every holder of the port's listeners: processes outside containers,
/// containers (each once), and listeners whose process we cannot see.
fn holders(ctx: &PortCtx, listeners: &[&Listener], engine: &mut EngineView) -> Vec<Holder> {
    let mut processes: BTreeMap<u32, Process> = BTreeMap::new();
    let mut containers: BTreeMap<String, Holder> = BTreeMap::new();
    let mut hidden = Vec::new();
    for l in listeners {
        let owners: Vec<&Process> = l
            .owners
            .iter()
            .filter_map(|o| ctx.by_pid.get(&o.pid).copied().filter(|p| p.id.start_time == o.start_time))
            .collect();
        if owners.is_empty() && !l.owners.is_empty() {
            // The host named its holders but the process table leaves them
            // out: the doctor's own process tree (never an instance of
            // anything), or processes that exited a moment ago.
            continue;
        }
        if owners.is_empty() {
            // A container publishing the port may explain a socket we cannot see.
            if let Some(c) = engine.publishing(ctx.watch.port) {
                add_container(&mut containers, &c, "a published port", None);
            } else {
                hidden.push(Holder::Hidden { address: display_address(&l.address, l.port), uid: l.uid });
            }
            continue;
        }
        for p in owners {
            if let Some(id) = p.cgroup.as_deref().and_then(container_id_in_cgroup) {
                let c = engine.by_id(&id).unwrap_or_else(|| Container {
                    id: id.clone(),
                    names: vec![short(&id).to_string()],
                    image: "(engine not available)".into(),
                    state: String::new(),
                    status: String::new(),
                });
                add_container(&mut containers, &c, "the owner's cgroup", Some(p.id.pid));
            } else if let Some(c) = engine.publishing(ctx.watch.port) {
                // docker-proxy, rootlessport and friends hold published ports for a container.
                add_container(&mut containers, &c, &format!("a published port (proxy pid {}: {})", p.id.pid, p.name), Some(p.id.pid));
            } else {
                processes.insert(p.id.pid, p.clone());
            }
        }
    }
    let mut out: Vec<Holder> = processes.into_values().map(Holder::Process).collect();
    out.extend(containers.into_values());
    out.extend(hidden);
    out
}

fn add_container(map: &mut BTreeMap<String, Holder>, c: &Container, via: &str, pid: Option<u32>) {
    let entry = map.entry(c.id.clone()).or_insert_with(|| Holder::Container {
        id: c.id.clone(),
        name: c.names.first().cloned().unwrap_or_else(|| short(&c.id).to_string()),
        image: c.image.clone(),
        via: via.to_string(),
        pids: Vec::new(),
    });
    if let (Holder::Container { pids, .. }, Some(pid)) = (entry, pid) {
        if !pids.contains(&pid) {
            pids.push(pid);
        }
    }
}

/// A 64-hex-digit container id in a cgroup path: `/docker/<id>`,
/// `/system.slice/docker-<id>.scope`, `/libpod_parent/libpod-<id>`,
/// `.../libpod-<id>.scope/container`.
fn container_id_in_cgroup(cgroup: &str) -> Option<String> {
    cgroup
        .split(['/', '-', '.', ':'])
        .find(|part| part.len() == 64 && part.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
}

fn display_address(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// The container engine, asked lazily and at most once per check. Without a
/// `containers` grant or an engine, containers are still recognised by their
/// cgroup, only without names.
#[derive(Default)]
struct EngineView {
    loaded: bool,
    containers: Vec<Container>,
    /// Host port → running container publishing it.
    published: HashMap<u16, Container>,
}

impl EngineView {
    fn load(&mut self) {
        if self.loaded {
            return;
        }
        self.loaded = true;
        match containers::all(false) {
            Ok(list) => self.containers = list,
            Err(e) => {
                doctor_sdk::log(host::LogLevel::Debug, format!("containers not available: {}", doctor_sdk::error_text(&e)));
                return;
            }
        }
        for c in &self.containers {
            let Ok(text) = containers::inspect(&c.id) else { continue };
            let Ok(doc) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
            for port in published_ports(&doc) {
                self.published.entry(port).or_insert_with(|| c.clone());
            }
        }
    }

    fn by_id(&mut self, id: &str) -> Option<Container> {
        self.load();
        self.containers.iter().find(|c| c.id == id).cloned()
    }

    fn publishing(&mut self, port: u16) -> Option<Container> {
        self.load();
        self.published.get(&port).cloned()
    }
}

/// Host ports a container publishes, from NetworkSettings.Ports or HostConfig.PortBindings.
fn published_ports(doc: &serde_json::Value) -> Vec<u16> {
    let mut out = Vec::new();
    for map in [&doc["NetworkSettings"]["Ports"], &doc["HostConfig"]["PortBindings"]] {
        let Some(map) = map.as_object() else { continue };
        for (inner, bindings) in map {
            if !inner.ends_with("/tcp") && inner.contains('/') {
                continue;
            }
            for b in bindings.as_array().into_iter().flatten() {
                if let Some(port) = b["HostPort"].as_str().and_then(|p| p.parse::<u16>().ok()) {
                    if !out.contains(&port) {
                        out.push(port);
                    }
                }
            }
        }
    }
    out
}

/// `*` and `?` glob over the whole name; Docker's leading `/` is ignored.
fn glob(pattern: &str, text: &str) -> bool {
    doctor_sdk::glob_match(pattern, text.trim_start_matches('/'))
}

register_plugin!(PortFreer);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_come_out_of_cgroups() {
        let id = "a".repeat(64);
        assert_eq!(container_id_in_cgroup(&format!("/libpod_parent/libpod-{id}")), Some(id.clone()));
        assert_eq!(container_id_in_cgroup(&format!("/system.slice/docker-{id}.scope")), Some(id.clone()));
        assert_eq!(container_id_in_cgroup(&format!("/docker/{id}")), Some(id.clone()));
        assert_eq!(container_id_in_cgroup("/user.slice/user-1000.slice/session-2.scope"), None);
    }

    #[test]
    fn globs() {
        assert!(glob("web-*", "web-1"));
        assert!(glob("web-*", "/web-1"));
        assert!(!glob("web-*", "db"));
        assert!(glob("*busybox*", "localhost/busybox:latest"));
    }
}
