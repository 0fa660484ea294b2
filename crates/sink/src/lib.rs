//! logtap-sink: receives `logserver_msg` frames on a Unix socket and prints
//! one JSON object (or text line) per log line.
//!
//! The modules are public so that tests and property tests can reach the
//! pure parts ([`lines`], [`output`], [`stream`]) directly.

#![deny(unsafe_code)]

pub mod dest;
pub mod encode;
pub mod lines;
pub mod output;
pub mod outputs;
mod peercred;
pub mod policy;
pub mod server;
pub mod shared_ring;
pub mod spool;
pub mod stream;
pub mod strict_json;

pub use peercred::{peer_cred, peer_pid, PeerCred};

use std::io::Write;

/// Writes one line to stderr, ignoring failure (the sink must not panic
/// because stderr went away).
pub fn warn(args: std::fmt::Arguments<'_>) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "logtap-sink: {args}");
}

/// `warn!("...", args)`: one `logtap-sink: ...` line on stderr.
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::warn(format_args!($($t)*)) };
}
