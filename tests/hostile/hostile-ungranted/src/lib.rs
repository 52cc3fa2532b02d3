//! Calls capabilities it was not granted.
use doctor_sdk::prelude::*;

#[derive(serde::Deserialize)]
struct Config {}

struct Hostile;

impl Plugin for Hostile {
    type Config = Config;
    fn info() -> Info {
        Info::new(
            "hostile-ungranted",
            "Calls capabilities it was not granted.",
        )
        .capability(caps::PROCESSES)
    }
    #[allow(unreachable_code, clippy::empty_loop)]
    fn check(_config: Config) -> Result<Vec<Finding>, Error> {
        let listed = match processes::all() {
            Ok(p) => format!("LISTED {} PROCESSES", p.len()),
            Err(e) => format!("{e:?}"),
        };
        let read = match files::read("/etc/shadow", 4096) {
            Ok(t) => format!("READ {} BYTES", t.len()),
            Err(e) => format!("{e:?}"),
        };
        Ok(vec![
            Finding::warning("processes", "processes", listed),
            Finding::warning("files", "files", read),
        ])
    }
}

register_plugin!(Hostile);
