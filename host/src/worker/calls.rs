//! Every import of the current contract, listed once. From the list come
//! both sides of a host call that crosses the socket: the worker's
//! [`Forwarder`], which sends the call's name and arguments to the parent
//! and waits for the answer, and the parent's [`CapabilityContext::serve`],
//! which decodes them and asks the capabilities — the same functions, grant
//! checks, bounds and recording as an in-process call.

use super::wire::{self, FromWorker, ToWorker, MAX_TO_WORKER};
use crate::capabilities::CapabilityContext;
use crate::runtime::bindings::current::doctor::plugin as now;
use crate::runtime::{PluginHost, PluginState};
use now::containers::Container;
use now::database::DbKind;
use now::files::FileStat;
use now::host::{LogLevel, User};
use now::probe::HttpResponse;
use now::processes::{Process, ProcessFilter};
use now::sockets::Listener;
use now::sqlite::{DbFile, Rows};
use now::types::{Error, SqlValue};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use wasmtime::component::Linker;

/// The worker's host: every import goes to the parent over the socket.
pub struct Forwarder {
    socket: Arc<UnixStream>,
}

impl Forwarder {
    pub fn new(socket: Arc<UnixStream>) -> Self {
        Forwarder { socket }
    }

    fn forward<A: serde::Serialize, R: serde::de::DeserializeOwned>(
        &mut self,
        call: &str,
        args: A,
    ) -> wasmtime::Result<R> {
        let args = wire::encode(&args).map_err(wasmtime::Error::msg)?;
        let host = FromWorker::Host {
            call: call.to_string(),
            args,
        };
        wire::send(&*self.socket, &host).map_err(lost_parent)?;
        match wire::recv(&*self.socket, MAX_TO_WORKER).map_err(lost_parent)? {
            ToWorker::Answer(Ok(value)) => wire::decode(&value).map_err(wasmtime::Error::msg),
            ToWorker::Answer(Err(why)) => Err(wasmtime::Error::msg(why)),
            ToWorker::Call { .. } => Err(wasmtime::Error::msg(
                "the parent sent a call while a host call was waiting",
            )),
        }
    }
}

fn lost_parent(e: std::io::Error) -> wasmtime::Error {
    wasmtime::Error::msg(format!("the connection to doctor is lost: {e}"))
}

impl now::types::Host for Forwarder {}

impl PluginHost for Forwarder {
    fn link(linker: &mut Linker<PluginState<Self>>) -> wasmtime::Result<()> {
        crate::capabilities::all_contracts(linker)
    }

    /// The parent bounds the host calls' waits; the worker's own deadline
    /// is its store's.
    fn set_deadline(&mut self, _: std::time::Instant) {}
}

macro_rules! contract_calls {
    ($(
        $iface:ident {
            $( $method:ident ( $( $arg:ident : $ty:ty ),* ) -> $ret:ty = $name:literal; )*
        }
    )*) => {
        $(
            impl now::$iface::Host for Forwarder {
                $(
                    fn $method(&mut self, $( $arg: $ty ),*) -> wasmtime::Result<$ret> {
                        self.forward($name, ($( $arg, )*))
                    }
                )*
            }
        )*

        impl CapabilityContext {
            /// Answer a host call a worker forwarded: `args` are the
            /// postcard of its arguments, the answer the postcard of its
            /// value; an error ends the plugin's call (as a trap would
            /// in-process), and so does a call this contract has not.
            pub fn serve(&mut self, call: &str, args: &[u8]) -> Result<Vec<u8>, String> {
                match call {
                    $($(
                        $name => {
                            let ($( $arg, )*): ($( $ty, )*) = wire::decode(args)
                                .map_err(|e| format!("the arguments of {call}: {e}"))?;
                            let answer: $ret = now::$iface::Host::$method(self, $( $arg ),*)
                                .map_err(|e| format!("{e:#}"))?;
                            wire::encode(&answer).map_err(|e| e.to_string())
                        }
                    )*)*
                    other => Err(format!("the plugin's worker asked for {other:?}, which is not a host call")),
                }
            }
        }
    };
}

contract_calls! {
    host {
        now_unix_ms() -> u64 = "host.now-unix-ms";
        hostname() -> String = "host.hostname";
        log(level: LogLevel, message: String) -> () = "host.log";
        kv_get(key: String) -> Option<String> = "host.kv-get";
        kv_set(key: String, value: String) -> () = "host.kv-set";
        kv_delete(key: String) -> () = "host.kv-delete";
        lookup_user(name: String) -> Option<User> = "host.lookup-user";
    }
    processes {
        all() -> Result<Vec<Process>, Error> = "processes.all";
        get(pid: u32) -> Result<Option<Process>, Error> = "processes.get";
        query(filter: ProcessFilter) -> Result<Vec<Process>, Error> = "processes.query";
    }
    files {
        stat(path: String) -> Result<Option<FileStat>, Error> = "files.stat";
        read(path: String, max_bytes: u32) -> Result<String, Error> = "files.read";
    }
    sqlite {
        query(db: String, sql: String, params: Vec<SqlValue>) -> Result<Rows, Error> = "sqlite.query";
        file_info(db: String) -> Result<DbFile, Error> = "sqlite.file-info";
        location(db: String) -> Result<String, Error> = "sqlite.location";
    }
    database {
        kind(db: String) -> Result<DbKind, Error> = "database.kind";
        query(db: String, sql: String, params: Vec<SqlValue>) -> Result<Rows, Error> = "database.query";
    }
    sockets {
        listeners() -> Result<Vec<Listener>, Error> = "sockets.listeners";
    }
    probe {
        tcp_connect(host: String, port: u16, timeout_ms: u32) -> Result<bool, Error> = "probe.tcp-connect";
        http_get(url: String, timeout_ms: u32) -> Result<HttpResponse, Error> = "probe.http-get";
    }
    containers {
        all(include_stopped: bool) -> Result<Vec<Container>, Error> = "containers.all";
        inspect(id: String) -> Result<String, Error> = "containers.inspect";
        path_exists(id: String, path: String) -> Result<bool, Error> = "containers.path-exists";
    }
}
