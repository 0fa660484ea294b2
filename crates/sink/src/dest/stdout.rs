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
    fn write(&mut self, r: &Record<'_>, w: Lost) -> Result<(), Failure> {
        if self.broken {
            return Err(Failure::Drop(None));
        }
        self.enc.encode(&mut self.buf, r);
        self.held.add(w);
        if self.buf.len() >= FLUSH_AT {
            if let Err(e) = self.flush() {
                // flush() counted this record with the others it held;
                // the runner counts it once more for the Drop below.
                self.lost.records = self.lost.records.saturating_sub(w.records);
                self.lost.bytes = self.lost.bytes.saturating_sub(w.bytes);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::Format;
    use crate::output::{Clock, Origin};

    /// A failing flush inside write() counts each record once: the
    /// record of that write is the runner's, the rest are take_lost()'s.
    #[test]
    fn a_failed_flush_counts_each_record_once() {
        let full = File::options().write(true).open("/dev/full").unwrap();
        let mut d = Stdout::new(LineEncoder::new(Format::Text, &[]), full);
        let origin = Origin::peer(
            Clock::new().format(1_795_268_855, 97_063),
            Some(42),
            Some(0),
        );
        let text = vec![b'x'; 100_000];
        let r = Record {
            origin: &origin,
            level: 6,
            platform: b"app",
            source: b"stdout",
            text: &text,
            partial: false,
            cont: false,
            dropped: None,
        };
        let mut runner = 0u64;
        let mut n = 0u64;
        loop {
            n += 1;
            if d.write(
                &r,
                Lost {
                    records: 1,
                    bytes: text.len() as u64,
                },
            )
            .is_err()
            {
                runner += 1;
                break;
            }
        }
        assert!(n > 1);
        assert_eq!(runner + d.take_lost().records, n);
    }
}
