//! stdout as one output among others: a closed or failing stdout stops
//! this output only (its records are counted as dropped).

use std::fs::File;
use std::io::{self, ErrorKind, Write};

use super::{Dest, Failure};
use crate::encode::{LineEncoder, Record};
use crate::outputs::Lost;

pub struct Stdout {
    enc: LineEncoder,
    out: File,
    buf: Vec<u8>,
    /// Records in `buf`.
    held: Lost,
    lost: Lost,
    broken: bool,
}

const FLUSH_AT: usize = 1024 * 1024;

impl Stdout {
    pub fn new(enc: LineEncoder, out: File) -> Stdout {
        Stdout {
            enc,
            out,
            buf: Vec::with_capacity(FLUSH_AT + 64 * 1024),
            held: Lost::default(),
            lost: Lost::default(),
            broken: false,
        }
    }
}

impl Dest for Stdout {
    fn write(&mut self, r: &Record<'_>) -> Result<(), Failure> {
        if self.broken {
            return Err(Failure::Drop(None));
        }
        self.enc.encode(&mut self.buf, r);
        self.held.records += 1;
        self.held.bytes += r.text.len() as u64;
        if self.buf.len() >= FLUSH_AT {
            if let Err(e) = self.flush() {
                return Err(Failure::Drop(Some(format!("stdout: {e}"))));
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let r = self.out.write_all(&self.buf);
        self.buf.clear();
        let held = std::mem::take(&mut self.held);
        if let Err(e) = r {
            self.lost.records += held.records;
            self.lost.bytes += held.bytes;
            if !self.broken {
                self.broken = true;
                if e.kind() == ErrorKind::BrokenPipe {
                    return Err(io::Error::new(
                        e.kind(),
                        "stdout was closed; this output stops",
                    ));
                }
                return Err(io::Error::new(
                    e.kind(),
                    format!("stdout: {e}; this output stops"),
                ));
            }
        }
        Ok(())
    }

    fn take_lost(&mut self) -> Lost {
        std::mem::take(&mut self.lost)
    }
}
