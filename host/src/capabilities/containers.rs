//! `containers`: list, inspect and "does this path exist in the container",
//! through the engine socket the policy names. Grant: `containers`.

use super::CapabilityContext;
use crate::facts::containers::EngineError;
use crate::runtime::bindings::doctor::plugin::containers::{self, Container};
use crate::runtime::bindings::doctor::plugin::types::Error;

impl CapabilityContext {
    fn containers_all(&mut self, include_stopped: bool) -> Result<Vec<Container>, Error> {
        self.grants.containers()?;
        let engines = self.facts.engines();
        if engines.is_empty() {
            return Err(no_engine());
        }
        let list = engines
            .list(include_stopped, |e| self.grants.engine(e))
            .map_err(engine_error)?;
        Ok(list
            .into_iter()
            .map(|c| Container {
                id: c.summary.id,
                names: c.summary.names,
                image: c.summary.image,
                state: c.summary.state,
                status: c.summary.status,
            })
            .collect())
    }

    fn containers_inspect(&mut self, id: String) -> Result<String, Error> {
        self.grants.containers()?;
        let (name, engine, id) = self.engine_of(&id)?;
        engine
            .inspect(id)
            .map_err(|e| engine_error(self.facts.engines().named_error(name, e)))
    }

    fn containers_path_exists(&mut self, id: String, path: String) -> Result<bool, Error> {
        self.grants.containers()?;
        let (name, engine, id) = self.engine_of(&id)?;
        engine
            .path_exists(id, &path)
            .map_err(|e| engine_error(self.facts.engines().named_error(name, e)))
    }

    /// The granted engine holding container `id` (or `ENGINE/NAME`): the
    /// one this run's list or an earlier answer named, without asking again.
    fn engine_of<'a>(
        &self,
        id: &'a str,
    ) -> Result<(&str, &crate::facts::containers::ContainerEngine, &'a str), Error> {
        let engines = self.facts.engines();
        if engines.is_empty() {
            return Err(no_engine());
        }
        engines
            .route(id, |e| self.grants.engine(e))
            .map_err(engine_error)
    }
}

/// Each answer recorded, or replayed from a recording.
impl containers::Host for CapabilityContext {
    fn all(&mut self, include_stopped: bool) -> wasmtime::Result<Result<Vec<Container>, Error>> {
        self.answer("containers.all", (include_stopped,), |s| {
            s.containers_all(include_stopped)
        })
    }

    fn inspect(&mut self, id: String) -> wasmtime::Result<Result<String, Error>> {
        self.answer("containers.inspect", (&id,), |s| {
            s.containers_inspect(id.clone())
        })
    }

    fn path_exists(&mut self, id: String, path: String) -> wasmtime::Result<Result<bool, Error>> {
        self.answer("containers.path-exists", (&id, &path), |s| {
            s.containers_path_exists(id.clone(), path.clone())
        })
    }
}

fn no_engine() -> Error {
    Error::NotFound(
        "no container engine is configured in the policy ([container_engine] or [container_engines.NAME])".into(),
    )
}

pub(crate) fn engine_error(e: EngineError) -> Error {
    let text = e.to_string();
    match e {
        EngineError::NotFound(_) => Error::NotFound(text),
        EngineError::Invalid(_) => Error::Invalid(text),
        EngineError::Timeout(_) => Error::Limit(text),
        EngineError::Unreachable { .. } | EngineError::Api { .. } => Error::Io(text),
    }
}

#[cfg(test)]
mod tests {
    use crate::capabilities::{denial, test_context};
    use crate::policy::Grants;
    use crate::runtime::bindings::doctor::plugin::containers::Host;
    use crate::runtime::bindings::doctor::plugin::types::Error;

    /// With a real engine: tests/container_caps.rs and tests/engine_podman.rs.
    #[test]
    fn denied_without_the_grant_and_an_error_without_an_engine() {
        let why = denial(test_context(Grants::default()).all(false));
        assert!(why.contains("containers"), "names the grant: {why}");
        let answer = test_context(Grants {
            containers: true,
            ..Default::default()
        })
        .all(false)
        .unwrap();
        assert!(
            matches!(
                answer,
                Err(Error::Io(_)) | Err(Error::NotFound(_)) | Err(Error::Invalid(_))
            ),
            "{answer:?}"
        );
    }
}
