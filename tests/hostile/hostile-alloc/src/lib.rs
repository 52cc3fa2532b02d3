//! Allocates without bound: must end at the memory cap.
use doctor_sdk::prelude::*;

#[derive(serde::Deserialize)]
struct Config {}

struct Hostile;

impl Plugin for Hostile {
    type Config = Config;
    fn info() -> Info {
        Info::new(
            "hostile-alloc",
            "Allocates without bound: must end at the memory cap.",
        )
    }
    #[allow(unreachable_code, clippy::empty_loop)]
    fn check(_config: Config) -> Result<Vec<Finding>, Error> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

register_plugin!(Hostile);
