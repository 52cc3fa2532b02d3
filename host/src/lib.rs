//! `doctor`: sandboxed WebAssembly checks that find and safely fix drift on
//! Linux hosts. Data flows one way: policy → plugins → findings → plan →
//! actions → journal → report.

pub mod actions;
pub mod capabilities;
pub mod catalog;
#[macro_use]
pub mod cli;
pub mod clock;
pub mod daemon;
pub mod demo;
pub mod facts;
pub mod inspect;
pub mod journal;
pub mod logging;
pub mod manpage;
pub mod paths;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod recording;
pub mod report;
pub mod runtime;
pub mod safe_fs;
pub mod scaffold;
pub mod systemd;
