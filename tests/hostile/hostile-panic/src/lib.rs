//! Panics.
use doctor_sdk::prelude::*;

#[derive(serde::Deserialize)]
struct Config {}

struct Hostile;

impl Plugin for Hostile {
    type Config = Config;
    fn info() -> Info {
        Info::new("hostile-panic", "Panics.")
    }
    #[allow(unreachable_code, clippy::empty_loop)]
    fn check(_config: Config) -> Result<Vec<Finding>, Error> {
        let table: Vec<u32> = Vec::new();
        let first = table.first().copied();
        panic!("hostile plugin panics on purpose (first = {first:?})")
    }
}

register_plugin!(Hostile);
