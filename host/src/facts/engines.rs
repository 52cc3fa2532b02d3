//! Every container engine the policy names (Docker, root Podman, a user's
//! rootless Podman), each by its socket, and which of them holds a
//! container. Container ids are random 256-bit values, unique across
//! engines, so an id is routed to the engine that knows it; a name may be
//! taken in two engines, so it can be qualified as `ENGINE/NAME`.

use super::containers::{ContainerEngine, ContainerSummary, EngineError};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub struct Engines {
    named: Vec<(String, Arc<ContainerEngine>)>,
    /// Which engine listed an id or name, or answered for it, in this run.
    holder: Mutex<HashMap<String, usize>>,
}

/// A container of one engine, as a list shows it.
pub struct Listed {
    pub engine: String,
    pub summary: ContainerSummary,
}

impl Engines {
    pub fn new<'a>(sections: impl IntoIterator<Item = (&'a str, &'a Path, Duration)>) -> Engines {
        Engines {
            named: sections
                .into_iter()
                .map(|(name, socket, timeout)| {
                    (
                        name.to_string(),
                        Arc::new(ContainerEngine::new(socket, timeout)),
                    )
                })
                .collect(),
            holder: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.named.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.named.iter().map(|(n, _)| n.as_str())
    }

    /// The containers of every engine `allowed` lets through, names taken
    /// in two engines qualified by their engine (`docker/web`). One engine
    /// that cannot answer is the error, naming it: a partial list would
    /// read as "those containers are gone". Each listed id and name is
    /// remembered as its engine's, for `route`.
    pub fn list(
        &self,
        include_stopped: bool,
        allowed: impl Fn(&str) -> bool,
    ) -> Result<Vec<Listed>, EngineError> {
        let mut all = Vec::new();
        let mut held = Vec::new();
        for (i, (name, engine)) in self.named.iter().enumerate() {
            if !allowed(name) {
                continue;
            }
            let list = engine
                .list(include_stopped)
                .map_err(|e| self.named_error(name, e))?;
            held.extend(list.iter().map(|_| i));
            all.extend(list.into_iter().map(|summary| Listed {
                engine: name.clone(),
                summary,
            }));
        }
        qualify_shared_names(&mut all);
        for (c, i) in all.iter().zip(held) {
            let names = c.summary.names.iter().filter(|n| !n.contains('/'));
            for key in std::iter::once(&c.summary.id).chain(names) {
                self.remember(key, i);
            }
        }
        Ok(all)
    }

    /// The engine to ask about `id` for a plugin's read: the one whose list
    /// or answer named `id` earlier in this run (`Engines` lives for one
    /// run's check; the re-check after a fix has its own), without asking
    /// any engine again; else as `locate`. Container ids are unique across
    /// engines and never move; a name is routed as this run's list showed
    /// it (unqualified only where one engine had it).
    pub fn route<'a>(
        &self,
        id: &'a str,
        allowed: impl Fn(&str) -> bool,
    ) -> Result<(&str, &ContainerEngine, &'a str), EngineError> {
        if !id.contains('/') {
            if let Some(i) = self.holder(id).filter(|i| allowed(&self.named[*i].0)) {
                let (name, engine) = &self.named[i];
                return Ok((name, engine, id));
            }
        }
        self.locate(id, allowed)
    }

    /// The engine holding `id` (a full or short id, a name, or
    /// `ENGINE/NAME`) among the allowed ones, and the id to ask it with.
    /// Where one engine is allowed there is nothing to find out and no
    /// engine is asked: the caller's own request answers "no such
    /// container" there. Else each allowed engine is asked in turn (the one
    /// that answered before first) until one knows `id`.
    pub fn locate<'a>(
        &self,
        id: &'a str,
        allowed: impl Fn(&str) -> bool,
    ) -> Result<(&str, &ContainerEngine, &'a str), EngineError> {
        if let Some((engine, rest)) = id.split_once('/') {
            let found = self.named.iter().find(|(n, _)| n == engine);
            return match found {
                Some((name, e)) if allowed(name) => Ok((name, e, rest)),
                Some(_) => Err(EngineError::NotFound(format!(
                    "container {id}: engine {engine:?} is not granted to this plugin"
                ))),
                None => Err(EngineError::NotFound(format!(
                    "container {id}: no engine {engine:?} in the policy"
                ))),
            };
        }
        let mut candidates = (0..self.named.len()).filter(|i| allowed(&self.named[*i].0));
        if let (Some(only), None) = (candidates.next(), candidates.next()) {
            let (name, engine) = &self.named[only];
            return Ok((name, engine, id));
        }
        let known = self.holder(id);
        let order = known
            .into_iter()
            .chain(0..self.named.len())
            .filter(|i| allowed(&self.named[*i].0));
        let mut failure = None;
        for i in order {
            let (name, engine) = &self.named[i];
            match engine.inspect(id) {
                Ok(_) => {
                    self.remember(id, i);
                    return Ok((name, engine, id));
                }
                Err(EngineError::NotFound(_)) => {}
                Err(e) => failure = failure.or(Some(self.named_error(name, e))),
            }
        }
        Err(failure.unwrap_or_else(|| EngineError::NotFound(format!("no such container: {id}"))))
    }

    fn holder(&self, id: &str) -> Option<usize> {
        self.holder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .copied()
    }

    fn remember(&self, id: &str, engine: usize) {
        self.holder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_string(), engine);
    }

    /// With one engine its errors read as before; with several they say which.
    pub fn named_error(&self, name: &str, e: EngineError) -> EngineError {
        if self.named.len() == 1 {
            return e;
        }
        e.in_engine(name)
    }
}

/// The container engines' API sockets present under `run` (`/run` on a
/// host): Docker's, root Podman's, and each user's rootless Podman and
/// Docker, in that order. `policy validate` names those no engine section
/// names: their containers would go unwatched.
pub fn discover(run: &Path) -> Vec<std::path::PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let is_socket =
        |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket());
    let mut found: Vec<_> = [run.join("docker.sock"), run.join("podman/podman.sock")]
        .into_iter()
        .filter(|p| is_socket(p))
        .collect();
    let mut users: Vec<_> = std::fs::read_dir(run.join("user"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .collect();
    users.sort();
    for user in users {
        for socket in [user.join("podman/podman.sock"), user.join("docker.sock")] {
            if is_socket(&socket) {
                found.push(socket);
            }
        }
    }
    found
}

/// A name that two engines' containers share becomes `ENGINE/NAME` in both.
fn qualify_shared_names(all: &mut [Listed]) {
    let mut engines_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in all.iter() {
        for n in &c.summary.names {
            engines_of
                .entry(n.clone())
                .or_default()
                .push(c.engine.clone());
        }
    }
    for c in all.iter_mut() {
        for n in c.summary.names.iter_mut() {
            let shared = engines_of
                .get(n.as_str())
                .is_some_and(|e| e.iter().any(|x| *x != c.engine));
            if shared {
                *n = format!("{}/{n}", c.engine);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{discover, Engines};
    use crate::facts::containers::tests::fake_engine;
    use std::os::unix::net::UnixListener;
    use std::time::Duration;

    #[test]
    fn a_container_this_run_listed_is_read_from_its_engine_without_asking_another_first() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
        let (asked_a, asked_b) = (fake_engine(&a, 100), fake_engine(&b, 100));
        let limit = Duration::from_secs(5);
        let engines = Engines::new([("a", a.as_path(), limit), ("b", b.as_path(), limit)]);
        let lines = |rx: &std::sync::mpsc::Receiver<(usize, String)>| -> Vec<String> {
            rx.try_iter().map(|(_, l)| l).collect()
        };

        // One engine allowed: nothing to find out, nothing asked.
        let (name, _, id) = engines.locate("c9", |e| e == "b").unwrap();
        assert_eq!((name, id), ("b", "c9"));
        assert!(lines(&asked_a).is_empty() && lines(&asked_b).is_empty());

        // Not listed yet, two engines allowed: asked in turn (a first).
        let (name, _, _) = engines.route("c1", |_| true).unwrap();
        assert_eq!(name, "a");
        assert_eq!(lines(&asked_a), ["GET /containers/c1/json HTTP/1.1"]);

        // Listed by b (and only b allowed then): routed to b, unasked.
        engines.list(true, |e| e == "b").unwrap();
        assert_eq!(lines(&asked_b), ["GET /containers/json?all=true HTTP/1.1"]);
        for listed in ["c1", "web"] {
            let (name, _, id) = engines.route(listed, |_| true).unwrap();
            assert_eq!((name, id), ("b", listed));
        }
        // A plugin that may not use b is not routed there.
        assert_eq!(engines.route("web", |e| e == "a").unwrap().0, "a");
        assert!(lines(&asked_a).is_empty() && lines(&asked_b).is_empty());
    }

    #[test]
    fn discovery_finds_root_and_each_users_engine_sockets_and_nothing_else() {
        let run = tempfile::tempdir().unwrap();
        let root = run.path();
        for dir in [
            "podman",
            "user/1000/podman",
            "user/1001",
            "user/nobody/podman",
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        let _sockets: Vec<UnixListener> = [
            "docker.sock",
            "podman/podman.sock",
            "user/1000/podman/podman.sock",
            "user/1001/docker.sock",
            "user/nobody/podman/podman.sock",
        ]
        .iter()
        .map(|s| UnixListener::bind(root.join(s)).unwrap())
        .collect();
        // A regular file where a socket would be is not an engine.
        std::fs::create_dir_all(root.join("user/1002/podman")).unwrap();
        std::fs::write(root.join("user/1002/podman/podman.sock"), "").unwrap();
        let found: Vec<String> = discover(root)
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(
            found,
            [
                "docker.sock",
                "podman/podman.sock",
                "user/1000/podman/podman.sock",
                "user/1001/docker.sock"
            ]
        );
    }
}
