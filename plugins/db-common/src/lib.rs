//! Parts shared by the two database plugins (`sqlite-chunk-reset` and
//! `job-health`): quoting configured identifiers, checking configured
//! columns against the real table, deciding whether a row's owner is still
//! alive (owner formats and timestamps come from the SDK, so every plugin
//! reads them alike), judging a claimed row's times and heartbeat
//! ([`Clock`], [`Heartbeat`], [`RowName`]), compare-and-swap writes merged
//! into set-based ones per dead owner ([`merge`], [`Orphans`]), and diagnosing
//! whether the service's user could write a SQLite database at all. Every
//! statement is rendered by the table's [`Dialect`] (SQLite or PostgreSQL),
//! carried in a [`Db`].

use doctor_sdk::files::FileStat;
pub use doctor_sdk::owner::{parse_owner, OwnerFormat};
use doctor_sdk::prelude::*;
use doctor_sdk::processes::Process;
use doctor_sdk::scope::{command_line, ProcessTable};
pub use doctor_sdk::time::{human_ms, read_time, Stamp, TimeUnit};
use regex_lite::Regex;
use serde::{Deserialize, Deserializer};

mod cas;
mod claims;
mod dialect;
mod identity;
mod lookups;
mod owners;
mod prepare;
mod set;
mod times;
pub use cas::{merge, Merged, Update, MAX_BATCHES, MAX_STATEMENT};
pub use claims::{distinct, may_stop, Clock, Heartbeat, RowName};
pub use dialect::{Column, Db, Dialect, Now};
pub use identity::{
    find_by_name, name_only, name_pattern, probe_expression, row_liveness, row_owner,
    sql_expression, NameFinder, RowIdentity,
};
pub use lookups::{Lookups, MAX_LOOKUPS};
pub use owners::{
    ids_shown, one_row, Orphan, Orphans, RowEvidence, RowWrite, OWNER_FINDINGS, SHOWN_IDS,
};
pub use prepare::{Beat, Identity, IdentityConfig, OnHost};
pub use set::{check_set_columns, parse_sets, Placeholders, SetValue};
pub use times::{claim_time, read_at, time_finding, TimeTrouble};

/// A configured table or column name, quoted as an SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An optional column for a SELECT list: quoted, or NULL when the table has none.
pub fn ident_or_null(column: Option<&str>) -> String {
    column.map(ident).unwrap_or_else(|| "NULL".into())
}

/// The configured columns among `(config key, column)`, in order: an
/// optional one that is absent or "" is left out.
pub fn configured<'a>(columns: &[(&'a str, Option<&'a str>)]) -> Vec<(&'a str, &'a str)> {
    columns
        .iter()
        .filter_map(|(key, column)| Some((*key, (*column)?)))
        .collect()
}

pub fn text(v: &SqlValue) -> Option<String> {
    match v {
        SqlValue::Text(t) => Some(t.clone()),
        SqlValue::Integer(i) => Some(i.to_string()),
        SqlValue::Real(f) => Some(f.to_string()),
        SqlValue::Null | SqlValue::Blob(_) => None,
    }
}

pub fn integer(v: &SqlValue) -> Option<i64> {
    match v {
        SqlValue::Integer(i) => Some(*i),
        SqlValue::Real(f) => Some(*f as i64),
        SqlValue::Text(t) => t.trim().parse().ok(),
        _ => None,
    }
}

/// `text` cut to at most `max` bytes at a character boundary, "…" marking the cut.
pub fn text_cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A value as an operator reads it in a message.
pub fn shown(v: &SqlValue) -> String {
    match v {
        SqlValue::Null => "NULL".into(),
        SqlValue::Blob(b) => format!("<{} bytes>", b.len()),
        other => text(other).unwrap_or_default(),
    }
}

/// How the worker column names a worker.
#[derive(Deserialize, Clone, Copy, PartialEq, Debug, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerKind {
    /// An owner in `owner_format`: a pid (or `pid:start-time`), `host:pid`, `pid@host`, ...
    #[default]
    Pid,
    /// A worker name, found only by the policy's `name_pattern` inside its scope.
    Name,
}

pub enum Liveness {
    /// The very worker: these processes.
    Alive(Vec<Process>),
    /// Certainly not running; the reason, for the message.
    Dead(String),
    /// Owned by a process on another host: its pids mean nothing here, only
    /// a heartbeat can tell.
    Remote(String),
    /// Cannot tell (no worker recorded, or a value that names nothing we can check).
    Unknown(String),
}

/// What deciding an owner's liveness needs.
pub struct OwnerCheck<'a> {
    pub kind: WorkerKind,
    pub format: &'a OwnerFormat,
    pub table: &'a ProcessTable,
    /// A live worker's command line must match (a pid reused by anything else is dead).
    pub worker_match: Option<&'a Regex>,
    /// This host's name, to tell local owners from remote ones.
    pub hostname: &'a str,
    /// With `worker_kind = "name"`: how a name is found (pattern and scope).
    pub names: Option<&'a NameFinder<'a>>,
}

/// Whom a row's worker value names, decided before any process is looked
/// at: [`liveness`] then checks it against the process table. A plugin
/// resolves every row's owner first and asks the host for the processes
/// those owners name only ([`Lookups`]), not for the whole table.
pub enum Owner {
    /// A pid on this host, with its start time when the row recorded one.
    Pid { pid: u32, start_time: Option<u64> },
    /// A worker name on this host, found (or not) by the declared `name_pattern`.
    Name(String),
    /// Told without looking at a process: another host's owner, or nothing to check.
    Told(Liveness),
}

/// Whom the worker recorded in `value` names (see [`Owner`]).
pub fn value_owner(value: &SqlValue, chk: &OwnerCheck) -> Owner {
    let Some(raw) = text(value)
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
    else {
        return Owner::Told(Liveness::Unknown("no worker recorded".into()));
    };
    match chk.kind {
        WorkerKind::Pid => pid_owner(&raw, chk),
        WorkerKind::Name => name_owner(raw, chk),
    }
}

/// Is the worker recorded in `value` alive? `claimed_ms`, the time the row
/// was claimed (its start-time column) when readable, must not be before
/// the process started: a process younger than its claim has a reused pid.
pub fn liveness(value: &SqlValue, chk: &OwnerCheck, claimed_ms: Option<i64>) -> Liveness {
    judge_owner(value_owner(value, chk), chk, claimed_ms)
}

/// Is `owner` alive, by the processes of `chk.table`?
pub fn judge_owner(owner: Owner, chk: &OwnerCheck, claimed_ms: Option<i64>) -> Liveness {
    match owner {
        Owner::Pid { pid, start_time } => pid_alive(pid, start_time, chk, claimed_ms),
        // A name the worker's command line may never show (a library derives
        // it at start-up) proves nothing by its absence; only a declared way
        // of finding it does.
        Owner::Name(raw) => match chk.names {
            Some(finder) => find_by_name(&raw, finder, chk),
            None => Liveness::Unknown(format!(
                "worker {raw:?} is a name, and no name_pattern says how to find its process"
            )),
        },
        Owner::Told(liveness) => liveness,
    }
}

/// Slack between a row's claim time and its process's start. A process's
/// start is computed in today's clock, a claim was written in the clock of
/// its day: a clock stepped forward since would make a live claimant look
/// younger than its claim, and that verdict resets a live worker's row. So
/// the slack is wide; a pid reused within it is only caught once it dies.
const CLAIM_SLACK_MS: i64 = 5 * 60 * 1000;

fn pid_owner(raw: &str, chk: &OwnerCheck) -> Owner {
    let owner = match parse_owner(raw, chk.format) {
        Ok(o) => o,
        Err(why) => return Owner::Told(Liveness::Unknown(why)),
    };
    if !owner.is_local(chk.hostname) {
        return Owner::Told(Liveness::Remote(owner.host.unwrap_or_default()));
    }
    Owner::Pid {
        pid: owner.pid,
        start_time: owner.start_time,
    }
}

/// A local pid (with its start time when the row recorded one): alive only
/// when it is the same process, a worker, and not younger than the claim.
fn pid_alive(
    pid: u32,
    start_time: Option<u64>,
    chk: &OwnerCheck,
    claimed_ms: Option<i64>,
) -> Liveness {
    if chk.table.is_doctors(pid) {
        // The doctor runs inside this owner (its ancestor): alive, and never a leftover to stop.
        return Liveness::Alive(Vec::new());
    }
    let Some(p) = chk.table.live().find(|p| p.id.pid == pid) else {
        return Liveness::Dead(format!("pid {pid} is not running"));
    };
    if let Some(start) = start_time {
        if p.id.start_time != start {
            return Liveness::Dead(format!(
                "pid {pid} now belongs to another process ({}, started at tick {} not {start})",
                command_line(p),
                p.id.start_time
            ));
        }
    }
    if !chk
        .worker_match
        .is_none_or(|r| r.is_match(&command_line(p)))
    {
        return Liveness::Dead(format!(
            "pid {pid} is now `{}`, not a worker (the pid was reused)",
            command_line(p)
        ));
    }
    if let Some(claimed) = claimed_ms {
        if p.started_unix_ms as i64 > claimed + CLAIM_SLACK_MS {
            return Liveness::Dead(format!(
                "pid {pid} (`{}`) started after the row was claimed, so it is not the process that claimed it (the pid was reused)",
                command_line(p)
            ));
        }
    }
    Liveness::Alive(vec![p.clone()])
}

fn name_owner(raw: String, chk: &OwnerCheck) -> Owner {
    // A name that reads as another host's owner (`node-b:4242`) is not
    // searched here: not finding it locally says nothing about it.
    if let Ok(owner) = parse_owner(&raw, &OwnerFormat::Auto) {
        if !owner.is_local(chk.hostname) {
            return Owner::Told(Liveness::Remote(owner.host.unwrap_or_default()));
        }
    }
    Owner::Name(raw)
}

/// Which time column could not be read, for the finding's key and text.
#[derive(Clone, Copy)]
pub enum TimeColumn {
    Heartbeat,
    Updated,
    Claimed,
}

/// A heartbeat (or update time) that cannot be read: its own finding, never
/// silence. `key` is the row's key prefix (`chunk:chunks:7`).
pub fn unreadable_time_finding(
    key: &str,
    subject: &str,
    which: TimeColumn,
    column: &str,
    value: &SqlValue,
    why: &str,
    consequence: &str,
) -> Finding {
    let (slug, what) = match which {
        TimeColumn::Heartbeat => ("heartbeat", "heartbeat"),
        TimeColumn::Updated => ("updated", "update time"),
        TimeColumn::Claimed => ("claimed", "claim time"),
    };
    Finding::warning(
        format!("{key}:{slug}-unreadable"),
        subject,
        format!("{what} unreadable: column {column} holds {why}; {consequence}"),
    )
    .evidence("column", column)
    .evidence("value", shown(value))
    .evidence("why", why)
}

/// Parse the policy's `owner_format` and `time_unit` (config errors name the key).
pub fn owner_format(text: &str) -> Result<OwnerFormat, Error> {
    OwnerFormat::parse(text).map_err(|e| Error::Invalid(format!("config: {e}")))
}

pub fn time_unit(text: &str) -> Result<TimeUnit, Error> {
    TimeUnit::parse(text).map_err(|e| Error::Invalid(format!("config: {e}")))
}

pub fn regex(key: &str, pattern: Option<&str>) -> Result<Option<Regex>, Error> {
    pattern
        .filter(|p| !p.is_empty())
        .map(|p| {
            Regex::new(p)
                .map_err(|e| Error::Invalid(format!("config: {key} = {p:?} is not a regex: {e}")))
        })
        .transpose()
}

/// Why the service's user could not write the database, with the exact fix.
pub struct WriteProblem {
    pub what: &'static str,
    pub path: String,
    pub owner: u32,
    pub group: u32,
    pub mode: u32,
    pub fix: String,
}

/// A SQLite label only (a PostgreSQL label has no file: the host says
/// `invalid`). The database file must exist (else an error naming its path). Then: can
/// `user` write the file, and the directory (write + search), which SQLite
/// needs for its rollback journal or WAL files? Never changes anything.
pub fn write_problems(db: &str, user_name: Option<&str>) -> Result<Vec<WriteProblem>, Error> {
    let info = sqlite::file_info(db)?;
    let path = sqlite::location(db)?;
    let Some(file) = info.file else {
        return Err(Error::NotFound(format!(
            "database {db:?}: the file {path} does not exist"
        )));
    };
    let Some(user_name) = user_name.filter(|u| !u.is_empty()) else {
        return Ok(Vec::new());
    };
    let Some(user) = host::lookup_user(user_name) else {
        return Err(Error::Invalid(format!(
            "config: service_user = {user_name:?}: no such user on this host"
        )));
    };
    let dir_path = match path.rsplit_once('/') {
        Some(("", _)) => "/".to_string(),
        Some((dir, _)) => dir.to_string(),
        None => ".".to_string(),
    };
    let mut problems = Vec::new();
    if !can(&file, &user, 0o2) {
        problems.push(problem("file", &path, &file, &user, "w"));
    }
    if let Some(dir) = info.directory {
        if !can(&dir, &user, 0o3) {
            problems.push(problem("directory", &dir_path, &dir, &user, "wx"));
        }
    }
    Ok(problems)
}

fn class_shift(stat: &FileStat, user: &host::User) -> u32 {
    if stat.uid == user.uid {
        6
    } else if stat.gid == user.gid || user.groups.contains(&stat.gid) {
        3
    } else {
        0
    }
}

fn can(stat: &FileStat, user: &host::User, need: u32) -> bool {
    user.uid == 0 || (stat.mode >> class_shift(stat, user)) & need == need
}

fn problem(
    what: &'static str,
    path: &str,
    stat: &FileStat,
    user: &host::User,
    bits: &str,
) -> WriteProblem {
    let quoted = shell_quote(path);
    let fix = match class_shift(stat, user) {
        6 => format!("chmod u+{bits} {quoted}"),
        3 => format!("chmod g+{bits} {quoted}"),
        _ => {
            let owner_bits = if what == "file" { 0o200 } else { 0o300 };
            if stat.mode & owner_bits == owner_bits {
                format!("chown {} {quoted}", user.name)
            } else {
                format!("chown {} {quoted} && chmod u+{bits} {quoted}", user.name)
            }
        }
    };
    WriteProblem {
        what,
        path: path.to_string(),
        owner: stat.uid,
        group: stat.gid,
        mode: stat.mode,
        fix,
    }
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// One critical finding for the unwritable database, if any problem was found.
pub fn unwritable_finding(db: &str, user: &str, problems: &[WriteProblem]) -> Option<Finding> {
    if problems.is_empty() {
        return None;
    }
    let parts: Vec<String> = problems
        .iter()
        .map(|p| {
            format!(
                "its {} {} (owner uid {}, group gid {}, mode {:04o})",
                p.what, p.path, p.owner, p.group, p.mode
            )
        })
        .collect();
    let fixes: Vec<&str> = problems.iter().map(|p| p.fix.as_str()).collect();
    let mut finding = Finding::critical(
        format!("db:{db}:unwritable"),
        format!("database {db}"),
        format!(
            "user {user} cannot write {}; SQLite needs write access to both the file and the directory that holds it (for its journal). Fix: {}",
            parts.join(" and "),
            fixes.join("; ")
        ),
    )
    .evidence("service_user", user)
    .evidence("fix", fixes.join("; "));
    for p in problems {
        finding = finding
            .evidence(&format!("{}_path", p.what), &p.path)
            .evidence(
                &format!("{}_owner", p.what),
                format!("uid {} gid {}", p.owner, p.group),
            )
            .evidence(&format!("{}_mode", p.what), format!("{:04o}", p.mode));
    }
    Some(finding)
}

/// A duration from the policy: a number of seconds, or text like "90s", "10m", "2h", "1d", "500ms".
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad duration {text:?}"))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1000.0,
        "ms" => 1.0,
        "m" | "min" | "mins" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        other => {
            return Err(format!(
                "bad duration unit {other:?} in {text:?} (use ms, s, m, h, d)"
            ))
        }
    };
    bounded_ms(n * scale, text)
}

/// Longer than any timeout means: 100 years, in ms. A policy number past
/// it (or below zero) is an error, never a wrapped cast that makes every
/// heartbeat stale.
const MAX_DURATION_MS: f64 = 3_155_760_000_000.0;

fn bounded_ms(ms: f64, text: &str) -> Result<u64, String> {
    if !(0.0..=MAX_DURATION_MS).contains(&ms) {
        return Err(format!("duration {text} is out of range (0 to 100 years)"));
    }
    Ok(ms as u64)
}

/// A number of seconds from the policy, in ms.
fn seconds_ms(n: &serde_json::Number) -> Result<u64, String> {
    bounded_ms(n.as_f64().unwrap_or(f64::NAN) * 1000.0, &n.to_string())
}

/// serde: a duration as seconds (number) or text, into milliseconds.
pub fn duration_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => seconds_ms(&n).map_err(serde::de::Error::custom),
        serde_json::Value::String(s) => parse_duration_ms(&s).map_err(serde::de::Error::custom),
        other => Err(serde::de::Error::custom(format!(
            "expected a duration, got {other}"
        ))),
    }
}

pub fn opt_duration_ms<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) if s.is_empty() => Ok(None),
        serde_json::Value::Number(n) => seconds_ms(&n).map(Some).map_err(serde::de::Error::custom),
        serde_json::Value::String(s) => parse_duration_ms(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
        other => Err(serde::de::Error::custom(format!(
            "expected a duration, got {other}"
        ))),
    }
}

/// Said in place of a write while the service's user cannot write the database.
pub const WITHHELD: &str =
    "withheld until the database is writable by the service user (see the unwritable finding)";

/// How many rows the table holds in each status: what a state or summary finding reports.
pub struct StatusCounts {
    /// By status, in the status column's order.
    pub by_status: Vec<(String, i64)>,
    pub total: i64,
}

impl StatusCounts {
    pub fn read(db: &Db, status_column: &str) -> Result<StatusCounts, Error> {
        let by_status = db.count_by(status_column)?;
        Ok(StatusCounts {
            total: by_status.iter().map(|(_, n)| n).sum(),
            by_status,
        })
    }

    /// Rows in `status`.
    pub fn of(&self, status: &str) -> i64 {
        self.by_status
            .iter()
            .filter(|(s, _)| s == status)
            .map(|(_, n)| *n)
            .sum()
    }

    /// One evidence entry per status: `status pending` = 3.
    pub fn evidence(&self, mut f: Finding) -> Finding {
        for (status, n) in &self.by_status {
            f = f.evidence(&format!("status {status}"), n);
        }
        f
    }
}

/// An optional column: absent, null or "" means "this table has none".
pub fn opt_column(c: &Option<String>) -> Option<&str> {
    c.as_deref().filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use doctor_sdk::ProcessRef;

    #[test]
    fn a_duration_below_zero_or_past_a_century_is_an_error() {
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert!(parse_duration_ms("99999999999d")
            .unwrap_err()
            .contains("out of range"));
        let negative: Result<u64, _> = duration_ms(serde_json::json!(-5));
        assert!(negative.is_err(), "{negative:?}");
        let huge: Result<Option<u64>, _> = opt_duration_ms(serde_json::json!(1e30));
        assert!(huge.is_err(), "{huge:?}");
        assert_eq!(
            opt_duration_ms(serde_json::json!(90)).ok(),
            Some(Some(90_000))
        );
    }

    fn proc(pid: u32, start: u64, argv: &str, started_ms: u64) -> Process {
        Process {
            id: ProcessRef {
                pid,
                start_time: start,
            },
            started_unix_ms: started_ms,
            ..doctor_sdk::testing::process(pid, argv)
        }
    }

    fn verdict(value: &str, claimed: Option<i64>) -> String {
        let table = ProcessTable::new(vec![
            proc(10, 500, "python3 worker.py", 1_000_000),
            proc(11, 600, "vim notes", 1_000_000),
        ])
        .with_doctors(vec![12]);
        let format = OwnerFormat::Auto;
        let re = Regex::new("worker\\.py").unwrap();
        let chk = OwnerCheck {
            kind: WorkerKind::Pid,
            format: &format,
            table: &table,
            worker_match: Some(&re),
            hostname: "node-a",
            names: None,
        };
        match liveness(&SqlValue::Text(value.into()), &chk, claimed) {
            Liveness::Alive(p) => format!("alive {}", p.len()),
            Liveness::Dead(why) => format!("dead: {why}"),
            Liveness::Remote(h) => format!("remote {h}"),
            Liveness::Unknown(why) => format!("unknown: {why}"),
        }
    }

    #[test]
    fn owners_are_judged_by_identity_and_host() {
        assert_eq!(verdict("10", None), "alive 1");
        assert_eq!(verdict("node-a:10", None), "alive 1");
        assert_eq!(verdict("10@node-a.example.net", None), "alive 1");
        assert_eq!(verdict("node-b:10", None), "remote node-b");
        assert!(verdict("10:499", None).starts_with("dead: pid 10 now belongs to another process"));
        assert!(verdict("11", None).contains("not a worker"));
        assert!(verdict("13", None).starts_with("dead: pid 13 is not running"));
        assert!(verdict("worker-7", None).starts_with("unknown:"));
        // The doctor's own ancestor runs, and is never a leftover.
        assert_eq!(verdict("12", None), "alive 0");
    }

    #[test]
    fn a_name_is_found_only_by_the_declared_pattern_inside_the_scope() {
        let table = ProcessTable::new(vec![
            proc(10, 500, "python3 worker.py --hostname w1", 1_000_000),
            proc(11, 500, "python3 worker.py", 1_000_000),
        ]);
        let bare = OwnerCheck {
            kind: WorkerKind::Name,
            format: &OwnerFormat::Auto,
            table: &table,
            worker_match: None,
            hostname: "node-a",
            names: None,
        };
        assert!(
            matches!(liveness(&SqlValue::Text("node-b:4242".into()), &bare, None), Liveness::Remote(h) if h == "node-b")
        );
        // No declared way to find it: its absence from command lines proves nothing.
        assert!(matches!(
            liveness(&SqlValue::Text("w2".into()), &bare, None),
            Liveness::Unknown(_)
        ));
        let pattern = Regex::new("--hostname (?P<name>\\S+)").unwrap();
        let scope: doctor_sdk::scope::Scope = serde_json::from_str("\"host\"").unwrap();
        let scope = scope.compile("scope").unwrap();
        let finder = NameFinder {
            pattern: &pattern,
            scope: &scope,
        };
        let chk = OwnerCheck {
            names: Some(&finder),
            ..bare
        };
        assert!(
            matches!(liveness(&SqlValue::Text("w1".into()), &chk, None), Liveness::Alive(p) if p.len() == 1)
        );
        assert!(
            matches!(
                liveness(&SqlValue::Text("w".into()), &chk, None),
                Liveness::Dead(_)
            ),
            "the capture must equal the name"
        );
        assert!(matches!(
            liveness(&SqlValue::Text("w2".into()), &chk, None),
            Liveness::Dead(_)
        ));
        let unscoped = doctor_sdk::scope::Scope::Unscoped.compile("scope").unwrap();
        let nowhere = NameFinder {
            pattern: &pattern,
            scope: &unscoped,
        };
        let chk = OwnerCheck {
            names: Some(&nowhere),
            ..bare
        };
        assert!(
            matches!(
                liveness(&SqlValue::Text("w1".into()), &chk, None),
                Liveness::Dead(_)
            ),
            "outside the scope nothing is found"
        );
    }

    #[test]
    fn a_pid_from_an_expression_is_judged_like_an_owner() {
        let table = ProcessTable::new(vec![proc(10, 500, "python3 worker.py", 1_000_000)]);
        let chk = OwnerCheck {
            kind: WorkerKind::Name,
            format: &OwnerFormat::Auto,
            table: &table,
            worker_match: None,
            hostname: "node-a",
            names: None,
        };
        let name = SqlValue::Text("celery@node-a".into());
        let judge = |pid: SqlValue, host: Option<SqlValue>, claimed| match row_liveness(
            &RowIdentity {
                worker: &name,
                pid: Some(&pid),
                host: host.as_ref(),
            },
            &chk,
            claimed,
        ) {
            Liveness::Alive(_) => "alive".to_string(),
            Liveness::Dead(w) => format!("dead: {w}"),
            Liveness::Remote(h) => format!("remote {h}"),
            Liveness::Unknown(w) => format!("unknown: {w}"),
        };
        assert_eq!(judge(SqlValue::Integer(10), None, None), "alive");
        assert_eq!(
            judge(
                SqlValue::Text("10".into()),
                Some(SqlValue::Text("node-a.example.net".into())),
                None
            ),
            "alive"
        );
        assert!(judge(SqlValue::Integer(13), None, None).starts_with("dead: pid 13 is not running"));
        assert!(judge(SqlValue::Integer(10), None, Some(100_000))
            .contains("started after the row was claimed"));
        assert_eq!(
            judge(
                SqlValue::Integer(10),
                Some(SqlValue::Text("node-b".into())),
                None
            ),
            "remote node-b"
        );
        assert!(judge(SqlValue::Null, None, None).starts_with("unknown: worker_pid_sql gives NULL"));
        assert!(judge(SqlValue::Integer(10), Some(SqlValue::Null), None)
            .starts_with("unknown: worker_host_sql gives no host"));
    }

    #[test]
    fn only_configured_columns_are_required() {
        let wanted = configured(&[
            ("id_column", Some("id")),
            ("heartbeat_column", None),
            ("worker_column", Some("w")),
        ]);
        assert_eq!(wanted, [("id_column", "id"), ("worker_column", "w")]);
    }

    #[test]
    fn a_process_younger_than_its_claim_did_not_make_it() {
        assert_eq!(verdict("10", Some(1_000_000)), "alive 1");
        assert_eq!(verdict("10", Some(900_000)), "alive 1", "within the slack");
        assert!(verdict("10", Some(600_000)).contains("started after the row was claimed"));
    }
}
