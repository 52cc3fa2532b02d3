//! Loops in `describe()`: loading many of these must cost one deadline, not one each.
use doctor_sdk::prelude::*;

#[derive(serde::Deserialize)]
struct Config {}

struct Hostile;

impl Plugin for Hostile {
    type Config = Config;
    #[allow(unreachable_code, clippy::empty_loop)]
    fn info() -> Info {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
    fn check(_config: Config) -> Result<Vec<Finding>, Error> {
        Ok(vec![])
    }
}

register_plugin!(Hostile);
