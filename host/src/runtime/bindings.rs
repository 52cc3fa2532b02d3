//! Host bindings generated from the WIT contracts in `wit/`: the current
//! one (re-exported at this module's root) and every earlier released one,
//! which the host keeps linking so that old plugins load.
//!
//! Every import may trap: replaying a recording ends the plugin's call when
//! it asks something the recording does not hold. The types serialise, so a
//! recording can store the answers and an old contract's values convert to
//! the current one's (the shapes are the same; only the package differs).

pub use current::*;

/// `doctor:plugin@0.3.0`: 0.2.0 plus the `database` interface,
/// `processes.query` and a grace on container stops and restarts.
pub mod current {
    wasmtime::component::bindgen!({
        path: "../wit/0.3.0",
        world: "plugin",
        imports: { default: trappable },
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

/// `doctor:plugin@0.2.0`, as released: 0.1.0 plus `sqlite.location`.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/0.2.0",
        world: "plugin",
        imports: { default: trappable },
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

/// `doctor:plugin@0.1.0`, as released.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "plugin",
        imports: { default: trappable },
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

/// Which contract a component was built against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Contract {
    V0_1,
    V0_2,
    V0_3,
}

impl Contract {
    pub const CURRENT: Contract = Contract::V0_3;
    /// Every contract this host links, oldest first.
    pub const ALL: [Contract; 3] = [Contract::V0_1, Contract::V0_2, Contract::V0_3];

    pub fn package(self) -> &'static str {
        match self {
            Contract::V0_1 => "doctor:plugin@0.1.0",
            Contract::V0_2 => "doctor:plugin@0.2.0",
            Contract::V0_3 => "doctor:plugin@0.3.0",
        }
    }

    /// The contract named by a component's imported packages; a component
    /// that imports none of ours (it uses no host call) speaks the current one.
    pub fn of(imported: &[String]) -> Option<Contract> {
        match imported.iter().find(|p| p.starts_with("doctor:plugin@")) {
            None => Some(Contract::CURRENT),
            Some(p) => Contract::ALL.into_iter().find(|c| c.package() == p),
        }
    }
}

/// The same value in another contract's types: the shapes are identical,
/// so a serde round trip converts (old plugins only; the current contract
/// needs no conversion).
pub fn convert<A: serde::Serialize, B: serde::de::DeserializeOwned>(
    value: A,
) -> wasmtime::Result<B> {
    let json = serde_json::to_value(value).map_err(wasmtime::Error::msg)?;
    serde_json::from_value(json)
        .map_err(|e| wasmtime::Error::msg(format!("converting between contract versions: {e}")))
}

/// An old contract's report in the current types. The shapes are the same
/// except the container actions, which took a bare id before 0.3.0: such a
/// stop or restart keeps the engine's default grace.
///
/// The report goes through JSON text of at most [`MAX_OLD_REPORT_JSON`]
/// bytes, so a huge report (millions of tiny evidence entries) is refused
/// before its JSON tree could cost the host many times the plugin's memory.
pub fn convert_report<A: serde::Serialize>(
    report: A,
) -> wasmtime::Result<current::doctor::plugin::types::Report> {
    let mut text = Bounded(Vec::new());
    serde_json::to_writer(&mut text, &report).map_err(|e| {
        wasmtime::Error::msg(format!(
            "the report of a plugin built against an older contract: {e}"
        ))
    })?;
    let mut json: serde_json::Value =
        serde_json::from_slice(&text.0).map_err(wasmtime::Error::msg)?;
    if let Some(findings) = json.get_mut("findings").and_then(|f| f.as_array_mut()) {
        let actions = findings
            .iter_mut()
            .filter_map(|f| f.get_mut("actions")?.as_array_mut())
            .flatten();
        for planned in actions {
            let Some(action) = planned.get_mut("action").and_then(|a| a.as_object_mut()) else {
                continue;
            };
            for case in ["ContainerStop", "ContainerRestart"] {
                if let Some(id) = action
                    .get(case)
                    .and_then(|id| id.as_str())
                    .map(String::from)
                {
                    action.insert(
                        case.into(),
                        serde_json::json!({ "id": id, "grace_ms": null }),
                    );
                }
            }
        }
    }
    serde_json::from_value(json)
        .map_err(|e| wasmtime::Error::msg(format!("converting between contract versions: {e}")))
}

/// The most JSON text an old contract's report may take on its way to the
/// current types: far above what the report's own bounds (4 MiB of text)
/// let through.
pub const MAX_OLD_REPORT_JSON: usize = 16 << 20;

/// A writer that refuses to grow past [`MAX_OLD_REPORT_JSON`].
struct Bounded(Vec<u8>);

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_OLD_REPORT_JSON {
            return Err(std::io::Error::other(format!(
                "more than {MAX_OLD_REPORT_JSON} bytes as JSON"
            )));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Contract;

    #[test]
    fn a_component_speaks_the_contract_it_imports() {
        assert_eq!(
            Contract::of(&["doctor:plugin@0.1.0".into()]),
            Some(Contract::V0_1)
        );
        assert_eq!(
            Contract::of(&["doctor:plugin@0.2.0".into()]),
            Some(Contract::V0_2)
        );
        assert_eq!(
            Contract::of(&["doctor:plugin@0.3.0".into()]),
            Some(Contract::V0_3)
        );
        assert_eq!(
            Contract::of(&[]),
            Some(Contract::CURRENT),
            "no host call: any contract's shapes fit"
        );
        assert_eq!(
            Contract::of(&["doctor:plugin@9.0.0".into()]),
            None,
            "unknown: refused, never guessed"
        );
    }

    #[test]
    fn an_old_container_stop_keeps_the_engines_default_grace() {
        use super::current::doctor::plugin::types::Action;
        use super::v0_2::doctor::plugin::types as old;
        let report = old::Report {
            findings: vec![old::Finding {
                key: "k".into(),
                severity: old::Severity::Warning,
                subject: String::new(),
                message: String::new(),
                evidence: vec![],
                actions: vec![old::PlannedAction {
                    action: old::Action::ContainerStop("web".into()),
                    description: String::new(),
                    needs_previous: false,
                }],
            }],
        };
        let now = super::convert_report(report).unwrap();
        match &now.findings[0].actions[0].action {
            Action::ContainerStop(stop) => {
                assert_eq!((stop.id.as_str(), stop.grace_ms), ("web", None))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_old_report_too_large_to_convert_is_refused() {
        use super::v0_2::doctor::plugin::types as old;
        let evidence = (0..600_000)
            .map(|i| old::Evidence {
                key: format!("k{i}"),
                value: "v".repeat(32),
            })
            .collect();
        let report = old::Report {
            findings: vec![old::Finding {
                key: "k".into(),
                severity: old::Severity::Warning,
                subject: String::new(),
                message: String::new(),
                evidence,
                actions: vec![],
            }],
        };
        let err = super::convert_report(report).expect_err("refused");
        assert!(err.to_string().contains("bytes as JSON"), "{err}");
    }
}
