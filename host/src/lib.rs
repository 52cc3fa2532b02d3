//! `doctor`: sandboxed WebAssembly checks that find and safely fix drift on
//! Linux hosts. Data flows one way: policy → plugins → findings → plan →
//! actions → journal → report.

// First, so its stdout macros (`out!`, `outln!`, `errln!`) reach every module.
#[macro_use]
pub mod report;
pub mod actions;
pub mod capabilities;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod daemon;
pub mod demo;
pub mod facts;
pub mod findings;
pub mod inspect;
pub mod journal;
#[cfg(test)]
mod layers;
pub mod logging;
pub mod manpage;
pub mod paths;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod recording;
pub mod runtime;
pub mod safe_fs;
pub mod scaffold;
pub mod systemd;
pub mod text;
pub mod worker;
