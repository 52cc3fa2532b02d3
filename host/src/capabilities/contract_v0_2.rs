//! `doctor:plugin@0.2.0`: thin shims onto the current host functions. The
//! grant checks, bounds and recording all happen there; here values only
//! change package.

use super::CapabilityContext;
use crate::runtime::bindings::convert;
use crate::runtime::bindings::current::doctor::plugin as now;
use crate::runtime::bindings::v0_2::doctor::plugin as old;

type Answer<T> = wasmtime::Result<T>;

impl old::types::Host for CapabilityContext {}

impl old::host::Host for CapabilityContext {
    fn now_unix_ms(&mut self) -> Answer<u64> {
        now::host::Host::now_unix_ms(self)
    }
    fn hostname(&mut self) -> Answer<String> {
        now::host::Host::hostname(self)
    }
    fn log(&mut self, level: old::host::LogLevel, message: String) -> Answer<()> {
        now::host::Host::log(self, convert(level)?, message)
    }
    fn kv_get(&mut self, key: String) -> Answer<Option<String>> {
        now::host::Host::kv_get(self, key)
    }
    fn kv_set(&mut self, key: String, value: String) -> Answer<()> {
        now::host::Host::kv_set(self, key, value)
    }
    fn kv_delete(&mut self, key: String) -> Answer<()> {
        now::host::Host::kv_delete(self, key)
    }
    fn lookup_user(&mut self, name: String) -> Answer<Option<old::host::User>> {
        convert(now::host::Host::lookup_user(self, name)?)
    }
}

impl old::processes::Host for CapabilityContext {
    fn all(&mut self) -> Answer<Result<Vec<old::processes::Process>, old::types::Error>> {
        convert(now::processes::Host::all(self)?)
    }
    fn get(
        &mut self,
        pid: u32,
    ) -> Answer<Result<Option<old::processes::Process>, old::types::Error>> {
        convert(now::processes::Host::get(self, pid)?)
    }
}

impl old::files::Host for CapabilityContext {
    fn stat(
        &mut self,
        path: String,
    ) -> Answer<Result<Option<old::files::FileStat>, old::types::Error>> {
        convert(now::files::Host::stat(self, path)?)
    }
    fn read(&mut self, path: String, max_bytes: u32) -> Answer<Result<String, old::types::Error>> {
        convert(now::files::Host::read(self, path, max_bytes)?)
    }
}

impl old::sqlite::Host for CapabilityContext {
    fn query(
        &mut self,
        db: String,
        sql: String,
        params: Vec<old::types::SqlValue>,
    ) -> Answer<Result<old::sqlite::Rows, old::types::Error>> {
        convert(now::sqlite::Host::query(self, db, sql, convert(params)?)?)
    }
    fn file_info(&mut self, db: String) -> Answer<Result<old::sqlite::DbFile, old::types::Error>> {
        convert(now::sqlite::Host::file_info(self, db)?)
    }
    fn location(&mut self, db: String) -> Answer<Result<String, old::types::Error>> {
        convert(now::sqlite::Host::location(self, db)?)
    }
}

impl old::sockets::Host for CapabilityContext {
    fn listeners(&mut self) -> Answer<Result<Vec<old::sockets::Listener>, old::types::Error>> {
        convert(now::sockets::Host::listeners(self)?)
    }
}

impl old::probe::Host for CapabilityContext {
    fn tcp_connect(
        &mut self,
        host: String,
        port: u16,
        timeout_ms: u32,
    ) -> Answer<Result<bool, old::types::Error>> {
        convert(now::probe::Host::tcp_connect(self, host, port, timeout_ms)?)
    }
    fn http_get(
        &mut self,
        url: String,
        timeout_ms: u32,
    ) -> Answer<Result<old::probe::HttpResponse, old::types::Error>> {
        convert(now::probe::Host::http_get(self, url, timeout_ms)?)
    }
}

impl old::containers::Host for CapabilityContext {
    fn all(
        &mut self,
        include_stopped: bool,
    ) -> Answer<Result<Vec<old::containers::Container>, old::types::Error>> {
        convert(now::containers::Host::all(self, include_stopped)?)
    }
    fn inspect(&mut self, id: String) -> Answer<Result<String, old::types::Error>> {
        convert(now::containers::Host::inspect(self, id)?)
    }
    fn path_exists(&mut self, id: String, path: String) -> Answer<Result<bool, old::types::Error>> {
        convert(now::containers::Host::path_exists(self, id, path)?)
    }
}
