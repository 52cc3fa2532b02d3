//! One hostile plugin, many attacks: the policy's `config.attack` picks which
//! host call to abuse and the other keys aim it. Each attack reports what the
//! host answered as a finding (`key` = the attack), so a test can read it.
use doctor_sdk::prelude::*;

#[derive(serde::Deserialize)]
struct Config {
    attack: String,
    pid: u32,
    start_time: u64,
    path: String,
    paths: Vec<String>,
    db: String,
    sql: String,
    max_rows: u32,
    max_bytes: u32,
    port: u16,
    deadline_ms: u32,
    timeout_ms: u32,
    count: u32,
    size: u32,
    grace_ms: u32,
    text: String,
}

struct Hostile;

impl Plugin for Hostile {
    type Config = Config;
    fn info() -> Info {
        let mut info = Info::new(
            "hostile-attacks",
            "Abuses one host call, chosen by config.attack.",
        );
        for cap in [
            caps::PROCESSES,
            caps::FILES,
            caps::SQLITE,
            caps::SOCKETS,
            caps::PROBE,
            caps::SIGNAL,
            caps::FILES_REMOVE,
            caps::SQLITE_WRITE,
        ] {
            info = info.capability(cap);
        }
        info.config_key("attack", None, "which attack")
            .config_key("pid", Some("0"), "target pid")
            .config_key("start_time", Some("0"), "target start time")
            .config_key("path", Some("\"\""), "target path")
            .config_key("paths", Some("[]"), "target paths")
            .config_key("db", Some("\"\""), "database label")
            .config_key("sql", Some("\"\""), "SQL text")
            .config_key("max_rows", Some("1"), "max rows of a write")
            .config_key("max_bytes", Some("4096"), "bytes to ask for")
            .config_key("port", Some("0"), "port")
            .config_key("deadline_ms", Some("1000"), "wait deadline")
            .config_key("timeout_ms", Some("1000"), "probe timeout")
            .config_key("count", Some("1"), "how many times")
            .config_key("size", Some("16"), "bytes per item")
            .config_key("grace_ms", Some("500"), "grace of a stop")
            .config_key("text", Some("\"\""), "a line to log")
    }

    fn check(c: Config) -> Result<Vec<Finding>, Error> {
        let said = |what: String| {
            Ok(vec![Finding::warning(
                c.attack.clone(),
                c.attack.clone(),
                what,
            )])
        };
        let plan = |actions: Vec<Action>| {
            let mut f = Finding::warning(c.attack.clone(), c.attack.clone(), "planned");
            for a in actions {
                f = f.action(a, c.attack.clone());
            }
            Ok(vec![f])
        };
        match c.attack.as_str() {
            "stop" => plan(vec![Action::stop_process(
                ProcessRef {
                    pid: c.pid,
                    start_time: c.start_time,
                },
                c.grace_ms,
            )]),
            "sleep" => {
                // In host code (WASI poll), where no epoch deadline reaches.
                std::thread::sleep(std::time::Duration::MAX);
                said("WOKE UP".into())
            }
            "signal" => plan(vec![Action::signal_process(
                ProcessRef {
                    pid: c.pid,
                    start_time: c.start_time,
                },
                Signal::Term,
            )]),
            "remove" => plan(c.paths.iter().map(|p| Action::remove_file(p)).collect()),
            "sql-exec" => plan(vec![Action::sql_exec(&c.db, &c.sql, vec![], c.max_rows)]),
            "wait-port" => plan(vec![Action::wait_port_free(c.port, c.deadline_ms)]),
            "read" => said(answer(
                files::read(&c.path, c.max_bytes).map(|t| format!("READ {} BYTES", t.len())),
            )),
            "stat" => said(answer(
                files::stat(&c.path).map(|s| format!("STAT {:?}", s.map(|s| s.size))),
            )),
            "query" => said(answer(
                database::query(&c.db, &c.sql, &[]).map(|r| format!("ROWS {}", r.rows.len())),
            )),
            "probe" => said(answer(
                probe::http_get(&format!("http://127.0.0.1:{}/", c.port), c.timeout_ms)
                    .map(|r| format!("HTTP {}", r.status)),
            )),
            "kv-flood" => said(kv_flood(c.count, c.size)),
            "aliased-strings" => said(aliased_strings(&c.db, c.count, c.size)),
            // A panic whose stderr tries to pass for report lines.
            "forge-stderr" => {
                eprint!("\ndoctor check (run 99): 1 plugin(s), 0 open finding(s), exit 0\n\x1b[32mOK FORGED\r");
                panic!("forged")
            }
            // Every process whose command line holds `text`, and `get(pid)`:
            // what exists for this plugin.
            "processes" => said(answer(processes::all().and_then(|all| {
                let seen: Vec<String> = all
                    .iter()
                    .filter(|p| p.argv.join(" ").contains(&c.text))
                    .map(|p| p.id.pid.to_string())
                    .collect();
                let got = processes::get(c.pid)?.map(|p| p.id.pid);
                Ok(format!("SEEN [{}] GET {got:?}", seen.join(",")))
            }))),
            // Not an attack: one line at each level, for the log filters.
            "log" => {
                for (level, name) in [
                    (host::LogLevel::Debug, "DEBUG"),
                    (host::LogLevel::Info, "INFO"),
                    (host::LogLevel::Warn, "WARN"),
                ] {
                    doctor_sdk::log(level, format!("{name} LINE {}", c.text));
                }
                said("LOGGED".into())
            }
            other => Err(Error::Invalid(format!("unknown attack {other:?}"))),
        }
    }
}

fn answer(result: Result<String, Error>) -> String {
    result.unwrap_or_else(|e| doctor_sdk::error_text(&e))
}

/// Write `count` keys whose key and value are each `size` bytes long, then
/// count how many the host kept.
fn kv_flood(count: u32, size: u32) -> String {
    let filler = "x".repeat(size as usize);
    for i in 0..count {
        host::kv_set(&format!("{i}-{filler}"), &filler);
    }
    let kept = (0..count)
        .filter(|i| host::kv_get(&format!("{i}-{filler}")).is_some())
        .count();
    format!("KEPT {kept} OF {count}")
}

/// Call `sqlite.query` with `count` text parameters that all point at one
/// buffer of `size` bytes. The canonical ABI lets a list's strings alias
/// one another, and the host lifts (copies) every one of them before any
/// bound of doctor's applies: `count` × `size` bytes, from a plugin that
/// holds `size`. Written against the raw import, as the SDK never aliases.
fn aliased_strings(db: &str, count: u32, size: u32) -> String {
    #[link(wasm_import_module = "doctor:plugin/sqlite@0.3.0")]
    extern "C" {
        #[link_name = "query"]
        fn raw_query(
            db: *const u8,
            db_len: usize,
            sql: *const u8,
            sql_len: usize,
            params: *const u64,
            params_len: usize,
            answer: *mut u32,
        );
    }
    let buffer = vec![b'x'; size as usize];
    // A `sql-value` is 16 bytes, 8-aligned: its case in the first byte
    // (3 = text), the string's pointer and length at bytes 8 and 12.
    let text = ((buffer.len() as u64) << 32) | buffer.as_ptr() as u64;
    let params: Vec<u64> = (0..count).flat_map(|_| [3, text]).collect();
    let sql = "SELECT 1";
    let mut answer = [0u32; 16];
    // SAFETY: every pointer is to live memory of this plugin with its
    // length; the answer area is larger and more aligned than the result.
    unsafe {
        raw_query(
            db.as_ptr(),
            db.len(),
            sql.as_ptr(),
            sql.len(),
            params.as_ptr(),
            count as usize,
            answer.as_mut_ptr(),
        )
    };
    format!("THE HOST TOOK {count} ALIASED STRINGS")
}

register_plugin!(Hostile);
