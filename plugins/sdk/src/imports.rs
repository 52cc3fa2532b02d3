//! The host's imports as a plugin calls them. In a component (wasm32) each
//! function is the WIT import; in a native `cargo test` it answers from the
//! facts the test supplied ([`crate::testing`]), so a plugin's `check` runs
//! as plain Rust. Plugins call `processes::all()` the same way in both.

/// One import: the WIT call in a component, the test's facts natively.
macro_rules! import {
    ($(#[$doc:meta])* $module:ident :: $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "wasm32")]
            {
                crate::bindings::doctor::plugin::$module::$name($($arg),*)
            }
            #[cfg(not(target_arch = "wasm32"))]
            {
                crate::testing::answer(concat!(stringify!($module), ".", stringify!($name)), ($(&$arg,)*))
            }
        }
    };
}

/// Clock, identity, logging and the plugin's own key/value state. Always granted.
pub mod host {
    pub use crate::bindings::doctor::plugin::host::{LogLevel, User};

    import!(host::now_unix_ms() -> u64);
    import!(host::hostname() -> String);
    import!(host::log(level: LogLevel, message: &str) -> ());
    import!(
        /// The plugin's state persists in the journal between runs.
        host::kv_get(key: &str) -> Option<String>
    );
    import!(host::kv_set(key: &str, value: &str) -> ());
    import!(host::kv_delete(key: &str) -> ());
    import!(host::lookup_user(name: &str) -> Option<User>);
}

/// The process table. Grant: `processes` (the host shows only the
/// processes inside the grant's scope).
pub mod processes {
    pub use crate::bindings::doctor::plugin::processes::{Process, ProcessFilter, Scope};
    use crate::Error;

    import!(processes::all() -> Result<Vec<Process>, Error>);
    import!(processes::get(pid: u32) -> Result<Option<Process>, Error>);
    import!(
        /// The processes whose command line matches `filter.pattern` inside
        /// `filter.scope`, chosen by the host: cheaper than `all()` on a
        /// host of many processes.
        processes::query(filter: &ProcessFilter) -> Result<Vec<Process>, Error>
    );
}

/// Files matching the granted path patterns. Grant: `files`.
pub mod files {
    pub use crate::bindings::doctor::plugin::files::{FileKind, FileStat};
    use crate::Error;

    import!(
        /// None when the path does not exist.
        files::stat(path: &str) -> Result<Option<FileStat>, Error>
    );
    import!(
        /// At most `max_bytes`; longer files are an error `limit`.
        files::read(path: &str, max_bytes: u32) -> Result<String, Error>
    );
}

/// Read-only SQL against databases named by policy labels. Grant: `sqlite`.
pub mod sqlite {
    pub use crate::bindings::doctor::plugin::sqlite::{DbFile, Rows};
    use crate::{Error, SqlValue};

    import!(sqlite::query(db: &str, sql: &str, params: &[SqlValue]) -> Result<Rows, Error>);
    import!(sqlite::file_info(db: &str) -> Result<DbFile, Error>);
    import!(sqlite::location(db: &str) -> Result<String, Error>);
}

/// Read-only SQL against a database label of any kind the host supports;
/// `kind` tells the dialect. Grant: `sqlite` (the labels it lists).
pub mod database {
    pub use crate::bindings::doctor::plugin::database::DbKind;
    pub use crate::bindings::doctor::plugin::sqlite::Rows;
    use crate::{Error, SqlValue};

    import!(database::kind(db: &str) -> Result<DbKind, Error>);
    import!(database::query(db: &str, sql: &str, params: &[SqlValue]) -> Result<Rows, Error>);
}

/// Listening sockets. Grant: `sockets`.
pub mod sockets {
    pub use crate::bindings::doctor::plugin::sockets::{Listener, Protocol};
    use crate::Error;

    import!(sockets::listeners() -> Result<Vec<Listener>, Error>);
}

/// Health probes to granted loopback endpoints. Grant: `probe`.
pub mod probe {
    pub use crate::bindings::doctor::plugin::probe::HttpResponse;
    use crate::Error;

    import!(probe::tcp_connect(host: &str, port: u16, timeout_ms: u32) -> Result<bool, Error>);
    import!(probe::http_get(url: &str, timeout_ms: u32) -> Result<HttpResponse, Error>);
}

/// The container engine's API. Grant: `containers`.
pub mod containers {
    pub use crate::bindings::doctor::plugin::containers::Container;
    use crate::Error;

    import!(containers::all(include_stopped: bool) -> Result<Vec<Container>, Error>);
    import!(
        /// The engine's inspect document, as JSON text.
        containers::inspect(id: &str) -> Result<String, Error>
    );
    import!(containers::path_exists(id: &str, path: &str) -> Result<bool, Error>);
}
