//! Facts about the host, read-only, independent of plugins and grants.

pub mod containers;
pub mod engines;
pub mod postgres;
pub mod probe;
pub mod processes;
pub mod sockets;
pub mod sqlite;
