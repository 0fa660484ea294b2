//! The record's origin (timestamp, peer), the clock, and the inline
//! buffered writer to stdout used when stdout is the only output. The
//! encoders live in `crate::encode`, the other destinations in
//! `crate::dest`.

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use logtap_wire::{DropNotice, Level, WriteOrigin};

use crate::encode::{LineEncoder, Record};
use crate::lines::Line;

pub use crate::encode::json::{json_object, write_base64, write_json_string, MAX_DATA_DEPTH};
pub use crate::encode::text::write_text;
pub use crate::encode::Format;

/// `2026-11-21T13:47:35.097063Z`
pub const TIMESTAMP_LEN: usize = 27;

/// A formatted RFC 3339 UTC timestamp with microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp(pub [u8; TIMESTAMP_LEN]);

impl Timestamp {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Formats timestamps, caching the date and time of the current second.
pub struct Clock {
    secs: u64,
    stamp: [u8; TIMESTAMP_LEN],
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

impl Clock {
    pub fn new() -> Clock {
        let mut c = Clock {
            secs: u64::MAX,
            stamp: [0; TIMESTAMP_LEN],
        };
        c.format(0, 0);
        c
    }

    /// The current time.
    pub fn now(&mut self) -> Timestamp {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.format(d.as_secs(), d.subsec_micros())
    }

    /// The timestamp for `secs` since the epoch plus `micros`.
    pub fn format(&mut self, secs: u64, micros: u32) -> Timestamp {
        if secs != self.secs {
            self.secs = secs;
            let days = (secs / 86_400) as i64;
            let sod = secs % 86_400;
            let (y, m, d) = civil_from_days(days);
            let mut w = &mut self.stamp[..];
            // Writing into a fixed array cannot fail for years 0..=9999; a
            // later year is clamped (it would need a clock 8000 years off).
            let _ = write!(
                w,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
                y.clamp(0, 9999),
                m,
                d,
                sod / 3600,
                sod / 60 % 60,
                sod % 60
            );
            w = &mut self.stamp[26..];
            w[0] = b'Z';
        }
        let mut micros = micros.min(999_999);
        for i in (20..26).rev() {
            self.stamp[i] = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        Timestamp(self.stamp)
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Where and when a record came from, besides the frame itself.
///
/// The server makes one per read (the receive time and the peer's
/// credentials); for a write whose frame carries its origin (version 1),
/// `ts` and `pid` become the write's own (see [`Origin::of_write`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// When the bytes were written (version 1), else when they were read.
    pub ts: Timestamp,
    /// The writer's pid as it sees itself (version 1), else the peer pid;
    /// `None` when neither is known.
    pub pid: Option<u32>,
    /// Peer pid (`SO_PEERCRED`): `None` for `--read`, or when the peer is
    /// in a pid namespace the sink cannot see into.
    pub peer_pid: Option<u32>,
    /// Peer uid (`SO_PEERCRED`, which the peer cannot forge), `None` for
    /// `--read` or when unknown.
    pub uid: Option<u32>,
}

impl Origin {
    /// A read's origin: the time now, the peer's credentials.
    pub fn peer(ts: Timestamp, pid: Option<u32>, uid: Option<u32>) -> Origin {
        Origin {
            ts,
            pid,
            peer_pid: pid,
            uid,
        }
    }

    /// This origin for a write that said when and by whom it was made.
    pub fn of_write(&self, w: Option<WriteOrigin>, clock: &mut Clock) -> Origin {
        match w {
            None => *self,
            Some(w) => Origin {
                ts: clock.format(
                    w.time_ns / 1_000_000_000,
                    ((w.time_ns % 1_000_000_000) / 1000) as u32,
                ),
                pid: Some(w.pid),
                ..*self
            },
        }
    }
}

/// Where records go: implemented by the inline stdout writer and by the
/// fan-out to several outputs.
pub trait Emit {
    /// Takes one record.
    fn record(&mut self, r: &Record<'_>);
    /// True once writing failed in a way that must stop the sink (the
    /// inline stdout writer only; outputs of a fan-out drop and count).
    fn failed(&self) -> bool {
        false
    }
    /// Writes out what is buffered (called before the event loop waits,
    /// and at the end). An error stops the sink.
    fn flush(&mut self) -> io::Result<()>;
}

impl<E: Emit + ?Sized> Emit for &mut E {
    fn record(&mut self, r: &Record<'_>) {
        (**self).record(r);
    }
    fn failed(&self) -> bool {
        (**self).failed()
    }
    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }
}

/// Formats lines into a buffer and writes it to `W` in large writes.
pub struct Output<W: Write> {
    encoder: LineEncoder,
    buf: Vec<u8>,
    w: W,
    flush_at: usize,
    error: Option<io::Error>,
}

/// Capacity of the output buffer; it is written out when this full.
pub const OUTPUT_BUFFER: usize = 1024 * 1024;

impl<W: Write> Output<W> {
    /// `extra` are (field, value) pairs appended to every JSON object
    /// (`pod_name`, `namespace`, `node_name`).
    pub fn new(format: Format, extra: &[(&str, &str)], w: W) -> Output<W> {
        Output {
            encoder: LineEncoder::new(format, extra),
            buf: Vec::with_capacity(OUTPUT_BUFFER + 64 * 1024),
            w,
            flush_at: OUTPUT_BUFFER,
            error: None,
        }
    }

    /// The extra fields from `POD_NAME`, `POD_NAMESPACE`, `NODE_NAME`.
    pub fn env_fields() -> Vec<(&'static str, String)> {
        env_fields()
    }

    /// Emits one line.
    pub fn line(&mut self, o: &Origin, line: &Line<'_>) {
        self.record(&Record::line(o, line));
    }

    /// Emits liblogtap's notice that it dropped data.
    pub fn drop_notice(
        &mut self,
        o: &Origin,
        level: u32,
        platform: &[u8],
        source: &[u8],
        data: &[u8],
        n: &DropNotice<'_>,
    ) {
        self.record(&Record {
            origin: o,
            level,
            platform,
            source,
            text: data.strip_suffix(b"\n").unwrap_or(data),
            partial: false,
            cont: false,
            dropped: Some(n.clone()),
        });
    }

    fn maybe_flush(&mut self) {
        if self.buf.len() >= self.flush_at && self.error.is_none() {
            if let Err(e) = self.flush() {
                self.error = Some(e);
            }
        }
    }

    /// Writes out everything buffered.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if !self.buf.is_empty() {
            let r = self.w.write_all(&self.buf);
            self.buf.clear();
            r?;
        }
        self.w.flush()
    }

    /// The first write error since the last [`Output::flush`], if any.
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }

    pub fn has_pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The underlying writer (tests).
    pub fn get_ref(&self) -> &W {
        &self.w
    }
}

impl<W: Write> Emit for Output<W> {
    fn record(&mut self, r: &Record<'_>) {
        self.encoder.encode(&mut self.buf, r);
        self.maybe_flush();
    }

    fn failed(&self) -> bool {
        self.error.is_some()
    }

    fn flush(&mut self) -> io::Result<()> {
        Output::flush(self)
    }
}

/// The extra JSON fields from `POD_NAME`, `POD_NAMESPACE`, `NODE_NAME`.
pub fn env_fields() -> Vec<(&'static str, String)> {
    [
        ("pod_name", "POD_NAME"),
        ("namespace", "POD_NAMESPACE"),
        ("node_name", "NODE_NAME"),
    ]
    .into_iter()
    .filter_map(|(k, env)| {
        std::env::var(env)
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| (k, v))
    })
    .collect()
}

/// Level name, `UNKNOWN` for numbers outside 0..=6.
pub fn level_name(n: u32) -> &'static str {
    Level::from_number(n).map_or("UNKNOWN", Level::name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let mut c = Clock::new();
        assert_eq!(c.format(0, 0).as_bytes(), b"1970-01-01T00:00:00.000000Z");
        assert_eq!(
            c.format(1_795_268_855, 97_063).as_bytes(),
            b"2026-11-21T13:47:35.097063Z"
        );
        assert_eq!(
            c.format(951_782_400, 999_999).as_bytes(),
            b"2000-02-29T00:00:00.999999Z"
        );
        assert_eq!(
            c.format(951_868_799, 5).as_bytes(),
            b"2000-02-29T23:59:59.000005Z"
        );
        assert_eq!(
            c.format(4_102_444_800, 0).as_bytes(),
            b"2100-01-01T00:00:00.000000Z"
        );
    }
}
