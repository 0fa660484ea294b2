//! Destinations: where encoded records go. Each runs on its output's own
//! thread (see `crate::outputs`), so it may block; it never sees records
//! that its level or the filters exclude.

pub mod files;
pub mod ring;
pub mod stdout;
pub mod syslog;

use std::io;

use crate::encode::Record;
use crate::outputs::Lost;

/// Why a record was not written.
#[derive(Debug)]
pub enum Failure {
    /// This record is lost (counted); the next one may succeed. The text,
    /// if any, is said once on stderr.
    Drop(Option<String>),
    /// The destination is unreachable (server down, socket missing): the
    /// same record is tried again later.
    Down(String),
}

pub trait Dest: Send {
    /// Writes (or buffers) one record. `w` is what the record counts for
    /// when it is lost after being accepted: one record and its bytes, or
    /// for the sink's own drop notice, the loss it reports (if the notice
    /// is lost, what it reported is lost again).
    fn write(&mut self, r: &Record<'_>, w: Lost) -> Result<(), Failure>;
    /// Writes out what is buffered; called when the output's queue is
    /// empty and at the end.
    fn flush(&mut self) -> io::Result<()>;
    /// Records that were accepted by [`Dest::write`] but lost later (a
    /// buffered write that failed).
    fn take_lost(&mut self) -> Lost {
        Lost::default()
    }
    /// The sink is stopping and [`Dest::flush`] failed: what is still
    /// buffered will never be written.
    fn abandon(&mut self) -> Lost {
        Lost::default()
    }
}
