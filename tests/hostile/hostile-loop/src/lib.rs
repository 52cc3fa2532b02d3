//! Loops forever: must end at the deadline.
use doctor_sdk::prelude::*;

#[derive(serde::Deserialize)]
struct Config {}

struct Hostile;

impl Plugin for Hostile {
    type Config = Config;
    fn info() -> Info {
        Info::new("hostile-loop", "Loops forever: must end at the deadline.")
    }
    #[allow(unreachable_code, clippy::empty_loop)]
    fn check(_config: Config) -> Result<Vec<Finding>, Error> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

register_plugin!(Hostile);
