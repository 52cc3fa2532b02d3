//! `containers`: list, inspect and "does this path exist in the container",
//! through the engine socket the policy names. Grant: `containers`.

use super::CapabilityContext;
use crate::facts::containers::EngineError;
use crate::runtime::bindings::doctor::plugin::containers::{self, Container};
use crate::runtime::bindings::doctor::plugin::types::Error;

impl CapabilityContext {
    fn containers_all(&mut self, include_stopped: bool) -> Result<Vec<Container>, Error> {
        self.grants.containers()?;
        let engine = self.facts.engine().ok_or_else(no_engine)?;
        let list = engine.list(include_stopped).map_err(engine_error)?;
        Ok(list
            .into_iter()
            .map(|c| Container {
                id: c.id,
                names: c.names,
                image: c.image,
                state: c.state,
                status: c.status,
            })
            .collect())
    }

    fn containers_inspect(&mut self, id: String) -> Result<String, Error> {
        self.grants.containers()?;
        let engine = self.facts.engine().ok_or_else(no_engine)?;
        engine.inspect(&id).map_err(engine_error)
    }

    fn containers_path_exists(&mut self, id: String, path: String) -> Result<bool, Error> {
        self.grants.containers()?;
        let engine = self.facts.engine().ok_or_else(no_engine)?;
        engine.path_exists(&id, &path).map_err(engine_error)
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
    Error::NotFound("no [container_engine] socket is configured in the policy".into())
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
