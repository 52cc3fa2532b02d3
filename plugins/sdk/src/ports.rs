//! Who holds a listening port, and whether that is who should. A plugin
//! that frees a port needs the same steps every time: map each listener to
//! its processes (by pid *and* start time) and, where one is, to its
//! container — by the owner's cgroup, which names the container id, or by a
//! running container that publishes the port (docker-proxy, rootlessport) —
//! then compare each holder with the expected owner, probe its health, and
//! stop holders children first.

use crate::containers::Container;
use crate::inspect::{container_id_in_cgroup, published_ports, short_id};
use crate::process::{command_line, one_line, ProcessTable};
use crate::processes::Process;
use crate::sockets::{Listener, Protocol};
use crate::{containers, glob_match, host, probe, sockets, Action, Error, Finding};
use regex_lite::Regex;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// Who holds (part of) a port.
#[derive(Clone, Debug)]
pub enum Holder {
    Process(Process),
    Container {
        id: String,
        name: String,
        image: String,
        /// `project/service` from the labels Compose writes.
        compose: Option<String>,
        via: String,
        pids: Vec<u32>,
    },
    /// A socket whose holder we cannot see (another user's process without root).
    Hidden {
        address: String,
        uid: u32,
    },
}

impl Holder {
    /// The holder as a message names it.
    pub fn describe(&self) -> String {
        match self {
            Holder::Process(p) => format!(
                "pid {} (uid {}: {})",
                p.id.pid,
                p.uid,
                one_line(&command_line(p), 160)
            ),
            Holder::Container {
                name,
                image,
                compose,
                id,
                via,
                ..
            } => format!(
                "container {name} ({image}, id {}{}) found by {via}",
                short_id(id),
                compose
                    .as_ref()
                    .map(|c| format!(", Compose {c}"))
                    .unwrap_or_default()
            ),
            Holder::Hidden { address, uid } => {
                format!("a socket on {address} owned by uid {uid} whose process is not visible")
            }
        }
    }

    /// Several holders as a message names them: `pid 42 (…); container web (…)`.
    pub fn describe_all(holders: &[Holder]) -> String {
        holders
            .iter()
            .map(Holder::describe)
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn is_container(&self) -> bool {
        matches!(self, Holder::Container { .. })
    }
}

/// The TCP listeners on any of `ports`: what keeps a port from being bound.
pub fn tcp_listeners(ports: &[u16]) -> Result<Vec<Listener>, Error> {
    Ok(sockets::listeners()?
        .into_iter()
        .filter(|l| l.protocol == Protocol::Tcp && ports.contains(&l.port))
        .collect())
}

/// The processes that judging and freeing `listeners`' ports look at: their
/// owners and the owners' parent chains (the expectation, the evidence's
/// parent, the stop order), asked for by pid instead of the whole table. The
/// `processes` grant is required as when the whole table was read, whether
/// or not an owner can be seen.
pub fn owners_table(listeners: &[Listener]) -> Result<ProcessTable, Error> {
    ProcessTable::require_grant()?;
    ProcessTable::around(
        listeners
            .iter()
            .flat_map(|l| l.owners.iter().map(|o| o.pid)),
    )
}

/// One port's holders, judged against its expected owner.
pub struct PortHolders {
    pub port: u16,
    /// Its listeners' addresses as a message lists them: `127.0.0.1:9403, [::1]:9403`.
    pub addresses: String,
    /// Holders that are the expected owner.
    pub expected: Vec<Holder>,
    /// Holders that are not: in the way.
    pub unexpected: Vec<Holder>,
    /// Sockets whose process cannot be seen and that the expectation cannot
    /// judge: neither left alone as expected nor stopped.
    pub hidden: Vec<Holder>,
}

impl PortHolders {
    /// The holders of `port` among `listeners` (see [`holders`]), judged by
    /// `owner`; None when nothing listens on it.
    pub fn read(
        port: u16,
        listeners: &[Listener],
        owner: &ExpectedOwner,
        table: &ProcessTable,
        engine: &mut EngineView,
    ) -> Option<PortHolders> {
        let here: Vec<&Listener> = listeners.iter().filter(|l| l.port == port).collect();
        if here.is_empty() {
            return None;
        }
        let addresses = here
            .iter()
            .map(|l| display_address(&l.address, port))
            .collect::<Vec<_>>()
            .join(", ");
        let (expected, unexpected): (Vec<Holder>, Vec<Holder>) =
            holders(port, &here, table, engine)
                .into_iter()
                .partition(|h| owner.matches(h, table));
        let (hidden, unexpected) = unexpected
            .into_iter()
            .partition(|h| matches!(h, Holder::Hidden { .. }));
        Some(PortHolders {
            port,
            addresses,
            expected,
            unexpected,
            hidden,
        })
    }

    /// The plan that frees the port by stopping `stop` (one of the groups
    /// above; see [`free_port_plan`]). It waits for the port to be free only
    /// when `stop` is every holder: while another keeps the port, waiting
    /// could only fail.
    pub fn free(
        &self,
        f: Finding,
        stop: &[Holder],
        table: &ProcessTable,
        grace_ms: u32,
        deadline_ms: u32,
    ) -> Finding {
        let every_holder = self.expected.len() + self.unexpected.len() + self.hidden.len();
        let wait = (stop.len() == every_holder).then_some(deadline_ms);
        free_port_plan(f, stop, table, self.port, grace_ms, wait)
    }
}

/// `127.0.0.1:9403`, `[::1]:9403`.
pub fn display_address(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// Every holder of `port`'s listeners: processes outside containers,
/// containers (each once), and listeners whose process we cannot see.
pub fn holders(
    port: u16,
    listeners: &[&Listener],
    table: &ProcessTable,
    engine: &mut EngineView,
) -> Vec<Holder> {
    let mut processes: BTreeMap<u32, Process> = BTreeMap::new();
    let mut containers: BTreeMap<String, Holder> = BTreeMap::new();
    let mut hidden = Vec::new();
    for l in listeners {
        let owners: Vec<&Process> = l
            .owners
            .iter()
            .filter_map(|o| table.identified(o))
            .collect();
        if owners.is_empty() && !l.owners.is_empty() {
            // The host named its holders but the process table leaves them
            // out: the doctor's own process tree (never an instance of
            // anything), or processes that exited a moment ago.
            continue;
        }
        if owners.is_empty() {
            // A container publishing the port may explain a socket we cannot see.
            match engine.publishing(port) {
                Some(c) => add_container(&mut containers, &c, "a published port", None),
                None => hidden.push(Holder::Hidden {
                    address: display_address(&l.address, l.port),
                    uid: l.uid,
                }),
            }
            continue;
        }
        for p in owners {
            if let Some(id) = p.cgroup.as_deref().and_then(container_id_in_cgroup) {
                let c = engine.by_id(&id).unwrap_or_else(|| Container {
                    id: id.clone(),
                    names: vec![short_id(&id)],
                    image: "(engine not available)".into(),
                    state: String::new(),
                    status: String::new(),
                });
                add_container(&mut containers, &c, "the owner's cgroup", Some(p.id.pid));
            } else if let Some(c) = engine.publishing(port) {
                // docker-proxy, rootlessport and friends hold published ports for a container.
                add_container(
                    &mut containers,
                    &c,
                    &format!("a published port (proxy pid {}: {})", p.id.pid, p.name),
                    Some(p.id.pid),
                );
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
    let entry = map
        .entry(c.id.clone())
        .or_insert_with(|| Holder::Container {
            id: c.id.clone(),
            name: c.names.first().cloned().unwrap_or_else(|| short_id(&c.id)),
            image: c.image.clone(),
            // One inspect per holding container, for its Compose labels.
            compose: crate::inspect::document(&c.id)
                .and_then(Result::ok)
                .and_then(|doc| crate::inspect::compose(&doc)),
            via: via.to_string(),
            pids: Vec::new(),
        });
    if let (Holder::Container { pids, .. }, Some(pid)) = (entry, pid) {
        if !pids.contains(&pid) {
            pids.push(pid);
        }
    }
}

/// The order to stop holders in: containers first, then processes with
/// descendants before their ancestors. A stopped parent may take its
/// children with it, and a stop that finds its target already gone counts
/// as not done for the `needs-previous` actions that follow.
pub fn stop_order<'a>(holders: &'a [Holder], table: &ProcessTable) -> Vec<&'a Holder> {
    let pids: Vec<u32> = holders
        .iter()
        .filter_map(|h| {
            if let Holder::Process(p) = h {
                Some(p.id.pid)
            } else {
                None
            }
        })
        .collect();
    // How many other holders are ancestors of this one.
    let depth = |pid: u32| -> usize {
        let (mut n, mut current) = (0, pid);
        for _ in 0..64 {
            let Some(p) = table.get(current) else { break };
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
    let mut out: Vec<&Holder> = holders
        .iter()
        .filter(|h| matches!(h, Holder::Container { .. }))
        .collect();
    let mut procs: Vec<(std::cmp::Reverse<usize>, u32, &Holder)> = holders
        .iter()
        .filter_map(|h| {
            if let Holder::Process(p) = h {
                Some((std::cmp::Reverse(depth(p.id.pid)), p.id.pid, h))
            } else {
                None
            }
        })
        .collect();
    procs.sort_by_key(|(depth, pid, _)| (*depth, *pid));
    out.extend(procs.into_iter().map(|(_, _, h)| h));
    out
}

/// Evidence of who each holder is: its command line, uid and parent; a
/// container's image and id, how it was found, and its pids.
pub fn holder_evidence(mut f: Finding, holders: &[Holder], table: &ProcessTable) -> Finding {
    for h in holders {
        f = match h {
            Holder::Process(p) => {
                let f = f
                    .evidence(&format!("pid {}", p.id.pid), command_line(p))
                    .evidence(&format!("pid {} uid", p.id.pid), p.uid);
                match table.get(p.ppid) {
                    Some(parent) => f.evidence(
                        &format!("pid {} parent", p.id.pid),
                        format!("pid {}: {}", parent.id.pid, command_line(parent)),
                    ),
                    None => f,
                }
            }
            Holder::Container {
                id,
                name,
                image,
                compose,
                via,
                pids,
            } => {
                let pids = pids
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                let f = f
                    .evidence(&format!("container {name}"), format!("{image} (id {id})"))
                    .evidence(&format!("container {name} found by"), via)
                    .evidence(&format!("container {name} pids"), pids);
                match compose {
                    Some(c) => f.evidence(&format!("container {name} compose"), c),
                    None => f,
                }
            }
            Holder::Hidden { .. } => f,
        };
    }
    f
}

/// The plan that frees `port`: stop every holder in [`stop_order`]
/// (processes TERM → `grace_ms` → KILL, containers through the engine),
/// then, with `wait_ms` (when nothing else keeps the port), wait for it to
/// be free and bind it — only if every stop succeeded (`needs-previous`).
pub fn free_port_plan(
    mut f: Finding,
    holders: &[Holder],
    table: &ProcessTable,
    port: u16,
    grace_ms: u32,
    wait_ms: Option<u32>,
) -> Finding {
    for h in stop_order(holders, table) {
        f = match h {
            Holder::Process(p) => f.stop(
                p,
                grace_ms,
                format!(
                    "stop pid {} (`{}`) holding port {port}",
                    p.id.pid,
                    one_line(&command_line(p), 200)
                ),
            ),
            Holder::Container { id, name, .. } => f.action(
                Action::container_stop(id, Some(grace_ms)),
                format!("stop container {name} holding port {port} through the engine"),
            ),
            Holder::Hidden { .. } => f,
        };
    }
    match wait_ms {
        Some(deadline) => f.then(
            Action::wait_port_free(port, deadline),
            format!(
                "wait up to {deadline} ms for port {port} to be free, then bind it to prove it"
            ),
        ),
        None => f,
    }
}

/// Who may hold a port. Every given field must match; none given: nobody.
#[derive(Deserialize, Clone, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Regular expression searched in the owner's command line (argv joined by spaces).
    pub command: Option<String>,
    pub uid: Option<u32>,
    /// Glob (`*`, `?`) on the container's name; the owner must be in a container.
    pub container: Option<String>,
    /// Glob on the container's image; the owner must be in a container.
    pub image: Option<String>,
    /// Glob on the container's Compose `project/service` (from its labels,
    /// e.g. `orchestrator/api` or `orchestrator/*`); the owner must be a
    /// Compose container.
    pub compose: Option<String>,
}

impl Expect {
    fn is_empty(&self) -> bool {
        self.command.is_none()
            && self.uid.is_none()
            && self.container.is_none()
            && self.image.is_none()
            && self.compose.is_none()
    }

    /// The expectation as a message says it.
    pub fn describe(expect: Option<&Expect>) -> String {
        let Some(e) = expect.filter(|e| !e.is_empty()) else {
            return "nothing is expected on this port: it should be free".into();
        };
        let mut parts = Vec::new();
        parts.extend(
            e.command
                .as_ref()
                .map(|c| format!("command matching /{c}/")),
        );
        parts.extend(e.uid.map(|u| format!("uid {u}")));
        parts.extend(e.container.as_ref().map(|c| format!("container named {c}")));
        parts.extend(e.image.as_ref().map(|i| format!("image {i}")));
        parts.extend(e.compose.as_ref().map(|c| format!("Compose service {c}")));
        format!("the expected owner is a {}", parts.join(", "))
    }

    /// Is `holder` the expected owner? `command` is `self.command` compiled.
    pub fn matches(&self, holder: &Holder, command: Option<&Regex>, table: &ProcessTable) -> bool {
        if self.is_empty() {
            return false;
        }
        match holder {
            // Only a uid-only expectation can be decided without the process.
            Holder::Hidden { uid, .. } => {
                self.command.is_none()
                    && self.container.is_none()
                    && self.image.is_none()
                    && self.compose.is_none()
                    && self.uid == Some(*uid)
            }
            Holder::Process(p) => {
                self.container.is_none()
                    && self.image.is_none()
                    && self.compose.is_none()
                    && command.is_none_or(|re| re.is_match(&command_line(p)))
                    && self.uid.is_none_or(|u| u == p.uid)
            }
            Holder::Container {
                name,
                image,
                compose,
                pids,
                ..
            } => {
                // Docker's leading `/` in names is ignored.
                let glob = |g: &str, text: &str| glob_match(g, text.trim_start_matches('/'));
                let name_ok = self.container.as_deref().is_none_or(|g| glob(g, name));
                let image_ok = self.image.as_deref().is_none_or(|g| glob(g, image));
                let compose_ok = self
                    .compose
                    .as_deref()
                    .is_none_or(|g| compose.as_deref().is_some_and(|c| glob(g, c)));
                // command/uid, when given, must hold for the container's processes too.
                let procs: Vec<&Process> = pids.iter().filter_map(|pid| table.get(*pid)).collect();
                let command_ok = command.is_none_or(|re| {
                    !procs.is_empty() && procs.iter().all(|p| re.is_match(&command_line(p)))
                });
                let uid_ok = self
                    .uid
                    .is_none_or(|u| !procs.is_empty() && procs.iter().all(|p| p.uid == u));
                name_ok && image_ok && compose_ok && command_ok && uid_ok
            }
        }
    }
}

/// An [`Expect`] ready to judge holders: its command pattern compiled once.
pub struct ExpectedOwner {
    expect: Option<Expect>,
    command: Option<Regex>,
}

impl ExpectedOwner {
    /// None: nothing is expected, any holder is in the way. The error is
    /// the command pattern's.
    pub fn new(expect: Option<&Expect>) -> Result<ExpectedOwner, regex_lite::Error> {
        let command = expect
            .and_then(|e| e.command.as_deref())
            .map(Regex::new)
            .transpose()?;
        Ok(ExpectedOwner {
            expect: expect.cloned(),
            command,
        })
    }

    /// The expectation as a message says it (see [`Expect::describe`]).
    pub fn describe(&self) -> String {
        Expect::describe(self.expect.as_ref())
    }

    /// Is `holder` the expected owner?
    pub fn matches(&self, holder: &Holder, table: &ProcessTable) -> bool {
        self.expect
            .as_ref()
            .is_some_and(|e| e.matches(holder, self.command.as_ref(), table))
    }
}

/// What a health probe says about a port's owner.
#[derive(Debug, PartialEq)]
pub enum Health {
    Healthy,
    Unhealthy(String),
    /// The probe itself could not be made (denied, invalid): never a reason to act.
    Unknown(String),
}

/// Probe `url`: `http://127.0.0.1:PORT/path` (healthy: status below 400)
/// or `tcp://127.0.0.1:PORT` (healthy: accepts a connection).
pub fn probe_health(url: &str, timeout_ms: u32) -> Health {
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
            Ok(false) => Health::Unhealthy(format!(
                "{url} does not accept connections within {timeout_ms} ms"
            )),
            Err(Error::Io(e)) => Health::Unhealthy(format!("{url}: {e}")),
            Err(e) => Health::Unknown(crate::error_text(&e)),
        };
    }
    match probe::http_get(url, timeout_ms) {
        Ok(r) if r.status < 400 => Health::Healthy,
        Ok(r) => Health::Unhealthy(format!("GET {url} answered HTTP {}", r.status)),
        Err(Error::Io(e)) | Err(Error::Limit(e)) => {
            Health::Unhealthy(format!("GET {url} failed: {e}"))
        }
        Err(e) => Health::Unknown(crate::error_text(&e)),
    }
}

/// The container engine, asked lazily and at most once per check. Without a
/// `containers` grant or an engine, containers are still recognised by their
/// cgroup, only without names.
#[derive(Default)]
pub struct EngineView {
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
                return crate::log(
                    host::LogLevel::Debug,
                    format!("containers not available: {}", crate::error_text(&e)),
                )
            }
        }
        for c in &self.containers {
            let Some(Ok(doc)) = crate::inspect::document(&c.id) else {
                continue;
            };
            for port in published_ports(&doc) {
                self.published.entry(port).or_insert_with(|| c.clone());
            }
        }
    }

    pub fn by_id(&mut self, id: &str) -> Option<Container> {
        self.load();
        self.containers.iter().find(|c| c.id == id).cloned()
    }

    /// The running container that publishes host port `port`.
    pub fn publishing(&mut self, port: u16) -> Option<Container> {
        self.load();
        self.published.get(&port).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::process;

    fn proc(pid: u32, ppid: u32, uid: u32, argv: &str) -> Process {
        Process {
            ppid,
            uid,
            ..process(pid, argv)
        }
    }

    fn container(name: &str, image: &str, pids: Vec<u32>) -> Holder {
        Holder::Container {
            id: "c".repeat(64),
            name: name.into(),
            image: image.into(),
            compose: None,
            via: "test".into(),
            pids,
        }
    }

    #[test]
    fn a_compose_service_is_expected_by_its_project_and_service() {
        let table = ProcessTable::new(vec![]);
        let in_compose = |compose: &str| Holder::Container {
            id: "c".repeat(64),
            name: "orch-api-1".into(),
            image: "orch:2".into(),
            compose: Some(compose.into()),
            via: "test".into(),
            pids: vec![],
        };
        let expect = Expect {
            compose: Some("orchestrator/api".into()),
            ..Expect::default()
        };
        assert!(expect.matches(&in_compose("orchestrator/api"), None, &table));
        assert!(!expect.matches(&in_compose("orchestrator/worker"), None, &table));
        assert!(
            !expect.matches(&container("orch-api-1", "orch:2", vec![]), None, &table),
            "a container outside Compose is not the expected owner"
        );
        let any_service = Expect {
            compose: Some("orchestrator/*".into()),
            ..Expect::default()
        };
        assert!(any_service.matches(&in_compose("orchestrator/worker"), None, &table));
        assert_eq!(
            Expect::describe(Some(&expect)),
            "the expected owner is a Compose service orchestrator/api"
        );
        assert!(in_compose("orchestrator/api")
            .describe()
            .contains("Compose orchestrator/api"));
    }

    #[test]
    fn expectations_match_processes_containers_and_hidden_sockets() {
        let table = ProcessTable::new(vec![
            proc(10, 1, 1000, "uvicorn app"),
            proc(11, 1, 0, "nginx"),
        ]);
        let re = Regex::new("uvicorn").unwrap();
        let by_command = Expect {
            command: Some("uvicorn".into()),
            ..Expect::default()
        };
        assert!(by_command.matches(
            &Holder::Process(proc(10, 1, 1000, "uvicorn app")),
            Some(&re),
            &table
        ));
        assert!(!by_command.matches(&Holder::Process(proc(11, 1, 0, "nginx")), Some(&re), &table));
        let by_uid = Expect {
            uid: Some(1000),
            ..Expect::default()
        };
        assert!(by_uid.matches(
            &Holder::Hidden {
                address: "x".into(),
                uid: 1000
            },
            None,
            &table
        ));
        assert!(!by_command.matches(
            &Holder::Hidden {
                address: "x".into(),
                uid: 1000
            },
            Some(&re),
            &table
        ));
        let by_name = Expect {
            container: Some("web-*".into()),
            ..Expect::default()
        };
        assert!(
            by_name.matches(&container("/web-1", "busybox", vec![]), None, &table),
            "Docker's leading / is ignored"
        );
        assert!(!by_name.matches(&container("db", "busybox", vec![]), None, &table));
        assert!(
            !by_name.matches(
                &Holder::Process(proc(10, 1, 1000, "uvicorn app")),
                None,
                &table
            ),
            "a container is expected"
        );
        assert!(
            !Expect::default().matches(
                &Holder::Process(proc(10, 1, 1000, "uvicorn app")),
                None,
                &table
            ),
            "nothing expected"
        );
        assert_eq!(
            Expect::describe(None),
            "nothing is expected on this port: it should be free"
        );
        assert_eq!(
            Expect::describe(Some(&Expect {
                uid: Some(7),
                image: Some("x*".into()),
                ..Expect::default()
            })),
            "the expected owner is a uid 7, image x*"
        );
    }

    #[test]
    fn children_are_stopped_before_their_parents_and_containers_first() {
        let table = ProcessTable::new(vec![
            proc(10, 1, 0, "sh"),
            proc(20, 10, 0, "python"),
            proc(30, 20, 0, "python child"),
        ]);
        let holders = vec![
            Holder::Process(proc(10, 1, 0, "sh")),
            Holder::Process(proc(30, 20, 0, "python child")),
            container("web", "i", vec![]),
            Holder::Process(proc(20, 10, 0, "python")),
        ];
        let order: Vec<String> = stop_order(&holders, &table)
            .iter()
            .map(|h| h.describe())
            .collect();
        assert!(order[0].starts_with("container web"));
        assert!(
            order[1].starts_with("pid 30")
                && order[2].starts_with("pid 20")
                && order[3].starts_with("pid 10"),
            "{order:?}"
        );
    }

    #[test]
    fn the_plan_stops_holders_then_waits_for_the_port_only_after_every_stop() {
        let table = ProcessTable::new(vec![proc(10, 1, 0, "uvicorn")]);
        let holders = vec![
            Holder::Process(proc(10, 1, 0, "uvicorn")),
            container("web", "i", vec![10]),
        ];
        let plan = free_port_plan(
            Finding::info("k", "s", "m"),
            &holders,
            &table,
            9403,
            500,
            Some(1000),
        )
        .into_wit();
        let described: Vec<(&str, bool)> = plan
            .actions
            .iter()
            .map(|a| (a.description.as_str(), a.needs_previous))
            .collect();
        assert_eq!(
            described,
            [
                (
                    "stop container web holding port 9403 through the engine",
                    false
                ),
                (
                    "stop pid 10 (`uvicorn`) holding port 9403: TERM, 500 ms grace, KILL",
                    false
                ),
                (
                    "wait up to 1000 ms for port 9403 to be free, then bind it to prove it",
                    true
                ),
            ]
        );
        let evidence = holder_evidence(Finding::info("k", "s", "m"), &holders, &table)
            .into_wit()
            .evidence;
        let keys: Vec<&str> = evidence.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "pid 10",
                "pid 10 uid",
                "container web",
                "container web found by",
                "container web pids"
            ]
        );
    }

    fn listener(protocol: Protocol, address: &str, port: u16, owners: &[u32]) -> Listener {
        Listener {
            protocol,
            address: address.into(),
            port,
            uid: 1000,
            inode: 1,
            owners: owners
                .iter()
                .map(|&pid| crate::ProcessRef { pid, start_time: 1 })
                .collect(),
        }
    }

    #[test]
    fn a_port_s_holders_are_judged_and_its_wait_needs_every_holder_stopped() {
        use crate::testing::{answer_with, Facts};
        let table = ProcessTable::new(vec![
            proc(10, 1, 1000, "uvicorn app"),
            proc(11, 1, 0, "stray"),
        ]);
        let facts = Facts::new()
            .listeners(vec![
                listener(Protocol::Tcp, "127.0.0.1", 9403, &[10]),
                listener(Protocol::Tcp, "::1", 9403, &[11]),
                listener(Protocol::Tcp, "0.0.0.0", 9403, &[]),
                listener(Protocol::Udp, "0.0.0.0", 9403, &[11]),
                listener(Protocol::Tcp, "0.0.0.0", 80, &[11]),
            ])
            .deny("containers");
        let owner = ExpectedOwner::new(Some(&Expect {
            command: Some("^uvicorn".into()),
            ..Expect::default()
        }))
        .unwrap();
        let (listeners, holders) = answer_with(facts, || {
            let listeners = tcp_listeners(&[9403]).unwrap();
            let mut engine = EngineView::default();
            let holders = PortHolders::read(9403, &listeners, &owner, &table, &mut engine);
            (listeners, holders.unwrap())
        });
        assert_eq!(listeners.len(), 3, "TCP on the watched port only");
        assert_eq!(
            holders.addresses,
            "127.0.0.1:9403, [::1]:9403, 0.0.0.0:9403"
        );
        assert_eq!(
            Holder::describe_all(&holders.expected),
            "pid 10 (uid 1000: uvicorn app)"
        );
        assert_eq!(
            Holder::describe_all(&holders.unexpected),
            "pid 11 (uid 0: stray)"
        );
        assert_eq!(
            Holder::describe_all(&holders.hidden),
            "a socket on 0.0.0.0:9403 owned by uid 1000 whose process is not visible"
        );
        let plan = |stop: &[Holder]| {
            let f = holders.free(Finding::info("k", "s", "m"), stop, &table, 500, 1000);
            f.into_wit().actions.len()
        };
        assert_eq!(
            plan(&holders.unexpected),
            1,
            "others keep the port: no wait"
        );
        let alone = PortHolders {
            expected: Vec::new(),
            hidden: Vec::new(),
            ..holders
        };
        let f = alone.free(
            Finding::info("k", "s", "m"),
            &alone.unexpected,
            &table,
            500,
            1000,
        );
        assert_eq!(
            f.into_wit().actions.len(),
            2,
            "stop, then wait for the port"
        );
        assert!(ExpectedOwner::new(Some(&Expect {
            command: Some("(".into()),
            ..Expect::default()
        }))
        .is_err());
        assert!(!ExpectedOwner::new(None)
            .unwrap()
            .matches(&alone.unexpected[0], &table));
    }

    #[test]
    fn addresses_show_ipv6_in_brackets() {
        assert_eq!(display_address("::1", 9403), "[::1]:9403");
        assert_eq!(display_address("127.0.0.1", 9403), "127.0.0.1:9403");
    }
}
