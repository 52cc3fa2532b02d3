//! The socket between doctor and a worker: length-prefixed frames of
//! postcard. Each side bounds what it reads: the parent never takes a frame
//! longer than [`MAX_FROM_WORKER`], whatever the worker says.

use crate::runtime::{PluginFailure, PluginInfo, PluginReport};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::time::Duration;

/// The largest frame the parent reads from a worker: a report may hold
/// 4 MiB of text (`findings::from_plugin`), and 1 MiB more covers its
/// structure; host-call arguments are smaller still. A worker checks its
/// own report against this first, so only a lying worker meets the bound.
/// postcard checks every length against the bytes left, but a value
/// decodes to more memory than its bytes (a `null` is 1 byte, 32 decoded):
/// at most ~35 × this, for the moment it takes to refuse it.
pub const MAX_FROM_WORKER: usize = 5 << 20;
/// The largest frame a worker reads from its parent: what a host call may
/// answer (a query result is bounded by `doctor.sql_result_max`).
pub const MAX_TO_WORKER: usize = 256 << 20;

/// The first frame, sent with the compiled code's descriptor when the
/// code comes [`Code::Descriptor`].
#[derive(Debug, Serialize, Deserialize)]
pub struct Start {
    /// Where the worker takes the plugin's compiled code from.
    pub code: Code,
    /// doctor's pid: the worker's parent, whose death ends the worker.
    pub parent: u32,
    /// The user and group the worker runs as, when doctor is root.
    pub run_as: Option<(u32, u32)>,
    /// `RLIMIT_DATA` of the worker, in bytes.
    pub data_limit: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Code {
    /// Sealed code in the descriptor that comes with the frame.
    Descriptor,
    /// The named built-in's code, precompiled into doctor (which the worker
    /// is too).
    Precompiled(String),
}

/// What the worker answers to [`Start`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Started {
    Ready {
        /// The contract packages the component imports.
        imported: Vec<String>,
        /// How the worker is confined, for `doctor version` and the tests.
        confinement: String,
    },
    Failed(PluginFailure),
    /// The code's seal is broken (a damaged cache entry): compile anew.
    Corrupt,
    /// The precompiled code does not load here (this CPU lacks a feature
    /// it was compiled for): compile the plugin as any other.
    Incompatible(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// Make one plugin call in a fresh store.
    Call {
        op: Op,
        memory_bytes: u64,
        timeout: Duration,
    },
    /// The answer to the worker's last host call: the postcard of its
    /// value, or why the plugin's call must end (a replay miss, say).
    Answer(Result<Vec<u8>, String>),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Op {
    Describe,
    Check { config_json: String },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    /// A host call of the plugin, its arguments in postcard.
    Host { call: String, args: Vec<u8> },
    /// The call's outcome.
    Done(Result<Output, PluginFailure>),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Output {
    Info(PluginInfo),
    /// `check`'s report (an error value the plugin returned is a
    /// [`PluginFailure::Returned`]).
    Report(PluginReport),
}

pub fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(io::Error::other)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub fn send<T: Serialize>(to: impl Write, value: &T) -> io::Result<()> {
    send_frame(to, &encode(value)?)
}

/// A frame whose body is already encoded.
pub fn send_frame(mut to: impl Write, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::other(format!("a frame of {} bytes", body.len())))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(body);
    to.write_all(&frame)
}

/// One frame of at most `max` bytes; a longer one is an error before any
/// of it is read.
pub fn recv<T: DeserializeOwned>(mut from: impl Read, max: usize) -> io::Result<T> {
    let mut len = [0u8; 4];
    from.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes, more than the {max} allowed"),
        ));
    }
    let mut body = vec![0u8; len];
    from.read_exact(&mut body)?;
    decode(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_and_an_oversized_one_is_refused_unread() {
        let mut buf = Vec::new();
        send(
            &mut buf,
            &Op::Check {
                config_json: "{}".into(),
            },
        )
        .unwrap();
        let back: Op = recv(&buf[..], 64).unwrap();
        assert!(matches!(back, Op::Check { config_json } if config_json == "{}"));
        let mut lying = (u32::MAX).to_le_bytes().to_vec();
        lying.extend_from_slice(b"short");
        let refused = recv::<Op>(&lying[..], MAX_FROM_WORKER).unwrap_err();
        assert!(refused.to_string().contains("more than"), "{refused}");
    }

    #[test]
    fn a_lying_list_length_fails_without_allocating_it() {
        // A count of 2^32 strings followed by nothing: postcard checks the
        // bytes left, so this is an error, not a 100 GiB reservation.
        let mut body = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
        body.push(0);
        assert!(decode::<Vec<String>>(&body).is_err());
    }
}
