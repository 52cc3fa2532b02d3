//! Tries to read /etc/shadow through WASI.
use doctor_sdk::prelude::*;

#[derive(serde::Deserialize)]
struct Config {}

struct Hostile;

impl Plugin for Hostile {
    type Config = Config;
    fn info() -> Info {
        Info::new("hostile-shadow", "Tries to read /etc/shadow through WASI.")
    }
    #[allow(unreachable_code, clippy::empty_loop)]
    fn check(_config: Config) -> Result<Vec<Finding>, Error> {
        // WASI has no preopened directories: this must fail, even as root.
        let outcome = match std::fs::read_to_string("/etc/shadow") {
            Ok(text) => format!("READ {} BYTES", text.len()),
            Err(e) => format!("refused: {e}"),
        };
        Ok(vec![Finding::warning("shadow", "/etc/shadow", outcome)])
    }
}

register_plugin!(Hostile);
