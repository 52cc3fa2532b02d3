//! Returns more findings than a plugin may.
use doctor_sdk::prelude::*;

#[derive(serde::Deserialize)]
struct Config {}

struct Hostile;

impl Plugin for Hostile {
    type Config = Config;
    fn info() -> Info {
        Info::new("hostile-huge", "Returns more findings than a plugin may.")
    }
    #[allow(unreachable_code, clippy::empty_loop)]
    fn check(_config: Config) -> Result<Vec<Finding>, Error> {
        Ok((0..5000)
            .map(|i| Finding::info(format!("k{i}"), "x", "y".repeat(64)))
            .collect())
    }
}

register_plugin!(Hostile);
