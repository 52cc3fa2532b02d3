//! `doctor:plugin@0.2.0`: thin shims onto the current host functions. The
//! grant checks, bounds and recording all happen there (or, in a worker,
//! in the parent the call is forwarded to); here values only change package.

use super::{CurrentContract, Old};
use crate::runtime::bindings::convert;
use crate::runtime::bindings::current::doctor::plugin as now;
use crate::runtime::bindings::v0_2::doctor::plugin as old;

type Answer<T> = wasmtime::Result<T>;

impl<H: CurrentContract> old::types::Host for Old<'_, H> {}

impl<H: CurrentContract> old::host::Host for Old<'_, H> {
    fn now_unix_ms(&mut self) -> Answer<u64> {
        now::host::Host::now_unix_ms(self.0)
    }
    fn hostname(&mut self) -> Answer<String> {
        now::host::Host::hostname(self.0)
    }
    fn log(&mut self, level: old::host::LogLevel, message: String) -> Answer<()> {
        now::host::Host::log(self.0, convert(level)?, message)
    }
    fn kv_get(&mut self, key: String) -> Answer<Option<String>> {
        now::host::Host::kv_get(self.0, key)
    }
    fn kv_set(&mut self, key: String, value: String) -> Answer<()> {
        now::host::Host::kv_set(self.0, key, value)
    }
    fn kv_delete(&mut self, key: String) -> Answer<()> {
        now::host::Host::kv_delete(self.0, key)
    }
    fn lookup_user(&mut self, name: String) -> Answer<Option<old::host::User>> {
        convert(now::host::Host::lookup_user(self.0, name)?)
    }
}

impl<H: CurrentContract> old::processes::Host for Old<'_, H> {
    fn all(&mut self) -> Answer<Result<Vec<old::processes::Process>, old::types::Error>> {
        convert(now::processes::Host::all(self.0)?)
    }
    fn get(
        &mut self,
        pid: u32,
    ) -> Answer<Result<Option<old::processes::Process>, old::types::Error>> {
        convert(now::processes::Host::get(self.0, pid)?)
    }
}

impl<H: CurrentContract> old::files::Host for Old<'_, H> {
    fn stat(
        &mut self,
        path: String,
    ) -> Answer<Result<Option<old::files::FileStat>, old::types::Error>> {
        convert(now::files::Host::stat(self.0, path)?)
    }
    fn read(&mut self, path: String, max_bytes: u32) -> Answer<Result<String, old::types::Error>> {
        convert(now::files::Host::read(self.0, path, max_bytes)?)
    }
}

impl<H: CurrentContract> old::sqlite::Host for Old<'_, H> {
    fn query(
        &mut self,
        db: String,
        sql: String,
        params: Vec<old::types::SqlValue>,
    ) -> Answer<Result<old::sqlite::Rows, old::types::Error>> {
        convert(now::sqlite::Host::query(self.0, db, sql, convert(params)?)?)
    }
    fn file_info(&mut self, db: String) -> Answer<Result<old::sqlite::DbFile, old::types::Error>> {
        convert(now::sqlite::Host::file_info(self.0, db)?)
    }
    fn location(&mut self, db: String) -> Answer<Result<String, old::types::Error>> {
        convert(now::sqlite::Host::location(self.0, db)?)
    }
}

impl<H: CurrentContract> old::sockets::Host for Old<'_, H> {
    fn listeners(&mut self) -> Answer<Result<Vec<old::sockets::Listener>, old::types::Error>> {
        convert(now::sockets::Host::listeners(self.0)?)
    }
}

impl<H: CurrentContract> old::probe::Host for Old<'_, H> {
    fn tcp_connect(
        &mut self,
        host: String,
        port: u16,
        timeout_ms: u32,
    ) -> Answer<Result<bool, old::types::Error>> {
        convert(now::probe::Host::tcp_connect(
            self.0, host, port, timeout_ms,
        )?)
    }
    fn http_get(
        &mut self,
        url: String,
        timeout_ms: u32,
    ) -> Answer<Result<old::probe::HttpResponse, old::types::Error>> {
        convert(now::probe::Host::http_get(self.0, url, timeout_ms)?)
    }
}

impl<H: CurrentContract> old::containers::Host for Old<'_, H> {
    fn all(
        &mut self,
        include_stopped: bool,
    ) -> Answer<Result<Vec<old::containers::Container>, old::types::Error>> {
        convert(now::containers::Host::all(self.0, include_stopped)?)
    }
    fn inspect(&mut self, id: String) -> Answer<Result<String, old::types::Error>> {
        convert(now::containers::Host::inspect(self.0, id)?)
    }
    fn path_exists(&mut self, id: String, path: String) -> Answer<Result<bool, old::types::Error>> {
        convert(now::containers::Host::path_exists(self.0, id, path)?)
    }
}
