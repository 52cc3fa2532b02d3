//! Test a plugin without the host. In a native `cargo test` the imports
//! answer from [`Facts`] the test supplies — processes, files, query rows,
//! listeners, containers, or a whole `doctor check --record` recording —
//! and [`run`] returns what `check` reported, the lines it logged and the
//! state it left:
//!
//! ```ignore
//! use doctor_sdk::testing::Facts;
//!
//! #[test]
//! fn a_stale_pid_file_is_reported() {
//!     let out = Facts::new()
//!         .file("/run/app.pid", "999999\n")
//!         .processes(vec![])
//!         .run::<MyPlugin>(r#"{ "pid_file": "/run/app.pid" }"#);
//!     assert_eq!(out.keys(), ["stale-pid-file"]);
//! }
//! ```
//!
//! The test's file system is the files it supplied (others are not found);
//! any other call the facts do not answer panics, naming the call and how to
//! supply it. `deny(capability)` makes that capability's calls `denied`.

use crate::bindings::doctor::plugin::types as wit;
use crate::files::{FileKind, FileStat};
use crate::host::{LogLevel, User};
use crate::processes::Process;
use crate::sqlite::Rows;
use crate::{Error, Plugin, SqlValue};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

type Handler = Box<dyn FnMut(&Value) -> Option<Value>>;

/// What the host would answer, supplied by a test.
#[derive(Default)]
pub struct Facts {
    handlers: Vec<(String, Handler)>,
    recorded: Vec<(String, Value, Value, bool)>,
    denied: BTreeSet<String>,
    /// Labels declared PostgreSQL (see [`Facts::postgres`]).
    postgres: BTreeSet<String>,
    kv: BTreeMap<String, String>,
    logs: Vec<(LogLevel, String)>,
}

/// What one `check` produced.
#[derive(Debug)]
pub struct Outcome {
    pub result: Result<Vec<wit::Finding>, Error>,
    pub logs: Vec<(LogLevel, String)>,
    pub kv: BTreeMap<String, String>,
}

impl Outcome {
    /// The findings; panics with the plugin's error if `check` failed.
    pub fn findings(&self) -> &[wit::Finding] {
        match &self.result {
            Ok(findings) => findings,
            Err(e) => panic!("check returned an error: {}", crate::error_text(e)),
        }
    }

    pub fn keys(&self) -> Vec<&str> {
        self.findings().iter().map(|f| f.key.as_str()).collect()
    }

    pub fn finding(&self, key: &str) -> Option<&wit::Finding> {
        self.findings().iter().find(|f| f.key == key)
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Facts>> = const { RefCell::new(None) };
}

/// What a plugin asked of the process table ([`Facts::processes_asked`]).
pub type AskedProcesses = std::rc::Rc<RefCell<Vec<String>>>;

impl Facts {
    pub fn new() -> Facts {
        Facts::default()
            .now(1_700_000_000_000)
            .hostname("test-host")
    }

    /// Answer `call` (e.g. `"processes.all"`) with `handler(args)`; `None`
    /// passes the call to the next handler.
    pub fn on<R: Serialize>(
        mut self,
        call: &str,
        mut handler: impl FnMut(&Value) -> Option<R> + 'static,
    ) -> Facts {
        let boxed: Handler = Box::new(move |args| {
            handler(args).map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
        });
        self.handlers.push((call.replace('_', "-"), boxed));
        self
    }

    /// Every call a `doctor check --record` recording holds (the
    /// `PLUGIN.json` text), answered as `doctor plugins replay` would.
    pub fn recording(mut self, json_text: &str) -> Facts {
        let doc: Value = serde_json::from_str(json_text).expect("a doctor recording (PLUGIN.json)");
        for call in doc["calls"].as_array().cloned().unwrap_or_default() {
            let name = call["call"].as_str().unwrap_or_default().to_string();
            self.recorded
                .push((name, call["args"].clone(), call["answer"].clone(), false));
        }
        if let Some(state) = doc["state"].as_object() {
            for (k, v) in state {
                self.kv
                    .insert(k.clone(), v.as_str().unwrap_or_default().to_string());
            }
        }
        self
    }

    /// Calls of this capability (`"files"`, `"processes"`, …) answer `denied`.
    pub fn deny(mut self, capability: &str) -> Facts {
        self.denied.insert(capability.to_string());
        self
    }

    pub fn now(self, unix_ms: u64) -> Facts {
        self.on("host.now_unix_ms", move |_| Some(unix_ms))
    }

    pub fn hostname(self, name: &str) -> Facts {
        let name = name.to_string();
        self.on("host.hostname", move |_| Some(name.clone()))
    }

    pub fn user(self, user: User) -> Facts {
        self.on("host.lookup_user", move |args| {
            (args[0] == user.name.as_str()).then(|| Some(user.clone()))
        })
    }

    pub fn kv(mut self, key: &str, value: &str) -> Facts {
        self.kv.insert(key.to_string(), value.to_string());
        self
    }

    /// The whole process table (answers `processes.all`, `processes.get` and
    /// `processes.query` alike).
    pub fn processes(self, table: Vec<Process>) -> Facts {
        let (by_pid, queried) = (table.clone(), table.clone());
        self.on("processes.all", move |_| {
            Some(Ok::<_, Error>(table.clone()))
        })
        .on("processes.get", move |args| {
            let pid = args[0].as_u64()?;
            Some(Ok::<_, Error>(
                by_pid.iter().find(|p| u64::from(p.id.pid) == pid).cloned(),
            ))
        })
        .on("processes.query", move |args| {
            let filter: crate::processes::ProcessFilter =
                serde_json::from_value(args[0].clone()).ok()?;
            Some(query_processes(&queried, &filter))
        })
    }

    /// As [`Facts::processes`], but refusing the whole table (a test fails
    /// if the plugin reads it) and keeping in `asked` what the plugin asked
    /// instead, in order: `get PID` and `query PATTERN`.
    pub fn processes_asked(self, table: Vec<Process>, asked: &AskedProcesses) -> Facts {
        let (gets, queries) = (asked.clone(), asked.clone());
        self.processes(table)
            .on("processes.all", |_| -> Option<()> {
                panic!("the plugin read the whole process table")
            })
            .on("processes.get", move |args| {
                gets.borrow_mut().push(format!("get {}", args[0]));
                None::<()>
            })
            .on("processes.query", move |args| {
                let pattern = args[0]["pattern"].as_str().unwrap_or_default();
                queries.borrow_mut().push(format!("query {pattern}"));
                None::<()>
            })
    }

    /// A regular file with this content (answers `files.read` and `files.stat`).
    pub fn file(self, path: &str, content: &str) -> Facts {
        let (read_path, stat_path, text) =
            (path.to_string(), path.to_string(), content.to_string());
        let size = text.len() as u64;
        self.on("files.read", move |args| {
            (args[0] == read_path.as_str()).then(|| {
                let max = args[1].as_u64().unwrap_or(0);
                if size > max {
                    Err(Error::Limit(format!(
                        "{read_path} is larger than {max} bytes"
                    )))
                } else {
                    Ok(text.clone())
                }
            })
        })
        .on("files.stat", move |args| {
            (args[0] == stat_path.as_str()).then_some(Ok::<_, Error>(Some(FileStat {
                kind: FileKind::File,
                size,
                uid: 0,
                gid: 0,
                mode: 0o644,
                modified_unix_ms: 0,
            })))
        })
    }

    /// Answers to queries of database `db`: `answer(sql, params)`.
    pub fn query(
        self,
        db: &str,
        answer: impl FnMut(&str, &[SqlValue]) -> Result<Rows, Error> + 'static,
    ) -> Facts {
        // The same answers through `sqlite.query` and `database.query`.
        let answer = std::rc::Rc::new(std::cell::RefCell::new(answer));
        let mut facts = self;
        for call in ["sqlite.query", "database.query"] {
            let (db, answer) = (db.to_string(), answer.clone());
            facts = facts.on(call, move |args| {
                if args[0] != db.as_str() {
                    return None;
                }
                let params: Vec<SqlValue> =
                    serde_json::from_value(args[2].clone()).unwrap_or_default();
                Some((answer.borrow_mut())(
                    args[1].as_str().unwrap_or_default(),
                    &params,
                ))
            });
        }
        let db = db.to_string();
        facts.on("database.kind", move |args| {
            (args[0] == db.as_str()).then_some(Ok::<_, Error>(crate::database::DbKind::Sqlite))
        })
    }

    /// Declare database `db` PostgreSQL: `database.kind` answers Postgres
    /// (whatever order `query` came in), and `sqlite.*` calls on it are
    /// `invalid`, as the host answers them. Its queries still come from
    /// [`Facts::query`], so a test sees the SQL of the PostgreSQL dialect.
    pub fn postgres(mut self, db: &str) -> Facts {
        self.postgres.insert(db.to_string());
        self
    }

    pub fn listeners(self, listeners: Vec<crate::sockets::Listener>) -> Facts {
        self.on("sockets.listeners", move |_| {
            Some(Ok::<_, Error>(listeners.clone()))
        })
    }

    pub fn containers(self, containers: Vec<crate::containers::Container>) -> Facts {
        self.on("containers.all", move |_| {
            Some(Ok::<_, Error>(containers.clone()))
        })
    }

    /// Run `P::check` with `config_json` against these facts.
    pub fn run<P: Plugin>(self, config_json: &str) -> Outcome {
        CURRENT.with(|c| *c.borrow_mut() = Some(self));
        let result = crate::__check::<P>(config_json).map(|report| report.findings);
        let facts = CURRENT.with(|c| c.borrow_mut().take()).unwrap_or_default();
        Outcome {
            result,
            logs: facts.logs,
            kv: facts.kv,
        }
    }

    fn answer(&mut self, call: &str, args: &Value) -> Option<Value> {
        let capability = call.split('.').next().unwrap_or_default();
        if self.denied.contains(capability) {
            return Some(json!({ "Err": { "Denied": format!("the test denies `{capability}`") } }));
        }
        match call {
            "host.log" => {
                let level: LogLevel = serde_json::from_value(args[0].clone()).ok()?;
                self.logs
                    .push((level, args[1].as_str().unwrap_or_default().to_string()));
                return Some(Value::Null);
            }
            "host.kv-get" => return Some(json!(self.kv.get(args[0].as_str()?))),
            "host.kv-set" => {
                self.kv
                    .insert(args[0].as_str()?.to_string(), args[1].as_str()?.to_string());
                return Some(Value::Null);
            }
            "host.kv-delete" => {
                self.kv.remove(args[0].as_str()?);
                return Some(Value::Null);
            }
            _ => {}
        }
        if let Some(answer) = self.postgres_answer(call, args) {
            return Some(answer);
        }
        if let Some(found) = self
            .recorded
            .iter_mut()
            .find(|(c, a, _, used)| !used && c == call && a == args)
        {
            found.3 = true;
            return Some(found.2.clone());
        }
        let handled = self
            .handlers
            .iter_mut()
            .rev()
            .filter(|(c, _)| c == call)
            .find_map(|(_, handler)| handler(args));
        // The test's file system is the files it supplied.
        handled.or_else(|| match call {
            "files.read" => Some(json!({ "Err": { "NotFound": args[0] } })),
            "files.stat" => Some(json!({ "Ok": null })),
            _ => None,
        })
    }
}

impl Facts {
    /// What the host answers for a PostgreSQL label before any handler: its
    /// kind, and `invalid` for the SQLite-only calls.
    fn postgres_answer(&self, call: &str, args: &Value) -> Option<Value> {
        let db = args.get(0)?.as_str()?;
        if !self.postgres.contains(db) {
            return None;
        }
        match call {
            "database.kind" => Some(json!({ "Ok": "Postgres" })),
            "sqlite.query" | "sqlite.file-info" | "sqlite.location" => Some(json!({
                "Err": { "Invalid": format!("{call}: database {db:?} is PostgreSQL, not a SQLite file") }
            })),
            _ => None,
        }
    }
}

/// A live process for a test's table: `argv` split at spaces, parent 1,
/// uid 0, start time 1, no cgroup. Change what a test needs with struct
/// update syntax: `Process { ppid: 10, ..process(11, "python3 w.py") }`.
pub fn process(pid: u32, argv: &str) -> Process {
    Process {
        id: crate::ProcessRef { pid, start_time: 1 },
        ppid: 1,
        uid: 0,
        state: "S".into(),
        name: argv
            .split(' ')
            .next()
            .unwrap_or_default()
            .chars()
            .take(15)
            .collect(),
        exe: None,
        argv: argv.split(' ').map(str::to_string).collect(),
        cgroup: None,
        started_unix_ms: 0,
        kernel_thread: false,
    }
}

/// Run `f` with `facts` answering the imports: for testing a helper
/// outside a plugin's `check` (the facts are dropped afterwards).
pub fn answer_with<R>(facts: Facts, f: impl FnOnce() -> R) -> R {
    CURRENT.with(|c| *c.borrow_mut() = Some(facts));
    let result = f();
    CURRENT.with(|c| c.borrow_mut().take());
    result
}

/// The native side of every import (see `imports.rs`).
#[doc(hidden)]
pub fn answer<R: DeserializeOwned>(call: &str, args: impl Serialize) -> R {
    let call = call.replace('_', "-");
    let args = serde_json::to_value(args).unwrap_or(Value::Null);
    let answered = CURRENT.with(|c| {
        c.borrow_mut()
            .as_mut()
            .map(|facts| facts.answer(&call, &args))
    });
    let value = match answered {
        None => panic!("{call} called outside doctor_sdk::testing::Facts::run (imports only answer inside a test run)"),
        Some(None) => panic!("the test's Facts do not answer {call}({args}); supply it (Facts::processes, ::file, ::query, ::on(\"{call}\", …), or ::recording)"),
        Some(Some(value)) => value,
    };
    serde_json::from_value(value)
        .unwrap_or_else(|e| panic!("the test's answer to {call} does not fit its type: {e}"))
}

/// `processes.query` against a test's table, as the host answers it: the
/// pattern searched in the command line, the scope's uid (a user name needs
/// the host), unit, cgroup prefix and launcher (`under`) among ancestors.
fn query_processes(
    table: &[Process],
    filter: &crate::processes::ProcessFilter,
) -> Result<Vec<Process>, Error> {
    let compile = |p: &str| {
        regex_lite::Regex::new(p).map_err(|e| Error::Invalid(format!("filter: {p:?}: {e}")))
    };
    let pattern = filter.pattern.as_deref().map(compile).transpose()?;
    let scope = filter.scope.as_ref();
    let under = scope
        .and_then(|s| s.under.as_deref())
        .map(compile)
        .transpose()?;
    let uid =
        match scope.and_then(|s| s.user.as_deref()) {
            None => None,
            Some(u) => Some(u.parse::<u32>().map_err(|_| {
                Error::Invalid(format!("filter: user {u:?}: native tests take a uid"))
            })?),
        };
    let command = |p: &Process| p.argv.join(" ");
    let descends = |p: &Process, re: &regex_lite::Regex| {
        let mut ppid = p.ppid;
        for _ in 0..64 {
            let Some(parent) = table.iter().find(|q| q.id.pid == ppid) else {
                return false;
            };
            if re.is_match(&command(parent)) {
                return true;
            }
            ppid = parent.ppid;
        }
        false
    };
    Ok(table
        .iter()
        .filter(|p| pattern.as_ref().is_none_or(|re| re.is_match(&command(p))))
        .filter(|p| uid.is_none_or(|uid| p.uid == uid))
        .filter(|p| {
            let cgroup = p.cgroup.as_deref().unwrap_or_default();
            scope
                .and_then(|s| s.unit.as_deref())
                .is_none_or(|unit| cgroup.split('/').any(|part| part == unit))
                && scope
                    .and_then(|s| s.cgroup.as_deref())
                    .is_none_or(|prefix| cgroup.starts_with(prefix))
        })
        .filter(|p| under.as_ref().is_none_or(|re| descends(p, re)))
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::{answer_with, process, Facts};
    use crate::processes::{self, Process, ProcessFilter, Scope};
    use crate::{database, SqlValue};

    fn pids(found: Vec<Process>) -> Vec<u32> {
        found.iter().map(|p| p.id.pid).collect()
    }

    #[test]
    fn a_process_query_answers_natively_as_the_host_does() {
        let table = vec![
            process(10, "sh /srv/a/run.sh"),
            Process {
                ppid: 10,
                uid: 1001,
                ..process(11, "python3 worker.py")
            },
            process(20, "sh /srv/b/run.sh"),
            Process {
                ppid: 20,
                uid: 1001,
                ..process(21, "python3 worker.py")
            },
        ];
        let facts = Facts::new().processes(table);
        answer_with(facts, || {
            let workers = ProcessFilter {
                pattern: Some("worker\\.py$".into()),
                scope: None,
            };
            assert_eq!(pids(processes::query(&workers).unwrap()), [11, 21]);
            let in_a = ProcessFilter {
                scope: Some(Scope {
                    user: Some("1001".into()),
                    unit: None,
                    cgroup: None,
                    under: Some("/srv/a/".into()),
                }),
                ..workers
            };
            assert_eq!(pids(processes::query(&in_a).unwrap()), [11]);
            let bad = ProcessFilter {
                pattern: Some("(".into()),
                scope: None,
            };
            assert!(processes::query(&bad).is_err());
        });
    }

    #[test]
    fn a_database_query_is_answered_like_sqlite_and_the_kind_is_sqlite() {
        let facts = Facts::new().query("jobs", |sql, _| {
            assert_eq!(sql, "SELECT 1");
            Ok(crate::sqlite::Rows {
                columns: vec!["1".into()],
                rows: vec![vec![SqlValue::Integer(1)]],
            })
        });
        answer_with(facts, || {
            assert_eq!(database::kind("jobs").unwrap(), database::DbKind::Sqlite);
            let rows = database::query("jobs", "SELECT 1", &[]).unwrap();
            assert!(
                matches!(rows.rows[..], [ref row] if matches!(row[..], [SqlValue::Integer(1)]))
            );
        });
    }

    #[test]
    fn a_label_declared_postgres_is_postgres_and_refuses_sqlite_calls() {
        let rows = || crate::sqlite::Rows {
            columns: vec![],
            rows: vec![],
        };
        for facts in [
            Facts::new()
                .postgres("jobs")
                .query("jobs", move |_, _| Ok(rows())),
            Facts::new()
                .query("jobs", move |_, _| Ok(rows()))
                .postgres("jobs"),
        ] {
            answer_with(facts.query("other", move |_, _| Ok(rows())), || {
                assert_eq!(database::kind("jobs").unwrap(), database::DbKind::Postgres);
                assert_eq!(database::kind("other").unwrap(), database::DbKind::Sqlite);
                assert!(database::query("jobs", "SELECT 1", &[]).is_ok());
                let refused = crate::sqlite::query("jobs", "SELECT 1", &[]);
                assert!(matches!(refused, Err(crate::Error::Invalid(_))));
                assert!(matches!(
                    crate::sqlite::location("jobs"),
                    Err(crate::Error::Invalid(_))
                ));
            });
        }
    }
}
