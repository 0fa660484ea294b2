//! The syslog encoder: RFC 5424 (default) or RFC 3164 messages, without
//! transport framing (the destination adds RFC 6587 octet counting on
//! TCP; a datagram carries one message).
//!
//! Fields (RFC 5424):
//!
//! | field | value |
//! | --- | --- |
//! | PRI | facility × 8 + severity (FATAL→crit 2, ERROR→err 3, WARN→warning 4, INFO→info 6, DEBUG/TRACE/ALL/other→debug 7) |
//! | TIMESTAMP | the time the line was written (from liblogtap's version-1 frames; for version 0, when the sink received it), UTC, microseconds |
//! | HOSTNAME | the sink's host name (kernel), at most 255 characters |
//! | APP-NAME | the platform, at most 48 characters |
//! | PROCID | the writer's pid as it sees itself (version 1; else the peer pid), `-` when unknown |
//! | MSGID | the source, at most 32 characters (its last 32, where a path's file name is) |
//! | STRUCTURED-DATA | `-` |
//! | MSG | the line, scrubbed, no BOM |
//!
//! Header fields allow printable ASCII without space only: any other byte
//! becomes `_`; an empty field is `-`. RFC 3164: `<PRI>Mmm dd hh:mm:ss
//! HOSTNAME TAG[PID]: MSG`, TAG the platform cut at 32 characters (3164
//! has no field for the source), the time in UTC; on a Unix socket without
//! HOSTNAME, as the C library's `syslog()` writes to `/dev/log`.
//!
//! A line longer than [`MAX_TEXT`] bytes (after scrubbing) is sent as
//! several messages, cut at character boundaries, so every message stays
//! within the 8 KiB that syslog daemons accept by default.

use super::scrub::scrub;
use super::Record;

/// RFC 5424 or RFC 3164.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyslogFormat {
    Rfc5424,
    Rfc3164,
}

impl SyslogFormat {
    pub fn parse(s: &str) -> Option<SyslogFormat> {
        match s {
            "5424" | "rfc5424" => Some(SyslogFormat::Rfc5424),
            "3164" | "rfc3164" | "bsd" => Some(SyslogFormat::Rfc3164),
            _ => None,
        }
    }
}

/// Facility names of RFC 5424 (and the usual Linux names), by number.
const FACILITIES: &[&str] = &[
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

/// A facility name (`user`, `daemon`, `local0`…) or number 0–23.
pub fn parse_facility(s: &str) -> Option<u8> {
    if let Ok(n) = s.parse::<u8>() {
        return (n < 24).then_some(n);
    }
    let s = s.to_ascii_lowercase();
    FACILITIES.iter().position(|f| *f == s).map(|n| n as u8)
}

/// Syslog severity of a logserver level.
pub fn severity(level: u32) -> u8 {
    match level {
        0 => 2,
        1 => 3,
        2 => 4,
        3 => 6,
        _ => 7,
    }
}

/// Scrubbed text bytes per message.
pub const MAX_TEXT: usize = 7 * 1024;

/// Encodes records as syslog messages.
#[derive(Clone, Debug)]
pub struct Syslog {
    pub format: SyslogFormat,
    pub facility: u8,
    hostname: Vec<u8>,
    /// RFC 3164 on a local socket: no HOSTNAME, as the C library's
    /// `syslog()` sends to `/dev/log` (the daemon adds its own).
    local: bool,
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Appends `s` as a header field: printable ASCII except space, others
/// `_`; at most `max` bytes (the last `max` when `keep_end`); `-` if empty.
fn field(out: &mut Vec<u8>, s: &[u8], max: usize, keep_end: bool) {
    let s = if s.len() > max {
        if keep_end {
            &s[s.len() - max..]
        } else {
            &s[..max]
        }
    } else {
        s
    };
    if s.is_empty() {
        out.push(b'-');
        return;
    }
    out.extend(
        s.iter()
            .map(|&b| if (33..=126).contains(&b) { b } else { b'_' }),
    );
}

impl Syslog {
    pub fn new(format: SyslogFormat, facility: u8) -> Syslog {
        let host = std::fs::read("/proc/sys/kernel/hostname").unwrap_or_default();
        let host = host.trim_ascii();
        let mut hostname = Vec::new();
        field(&mut hostname, host, 255, false);
        Syslog {
            format,
            facility,
            hostname,
            local: false,
        }
    }

    /// For a local (Unix) socket: RFC 3164 messages leave out HOSTNAME.
    pub fn local(mut self) -> Syslog {
        self.local = true;
        self
    }

    fn header(&self, out: &mut Vec<u8>, r: &Record<'_>) {
        let pri = u32::from(self.facility) * 8 + u32::from(severity(r.level));
        out.push(b'<');
        out.extend_from_slice(itoa::Buffer::new().format(pri).as_bytes());
        out.push(b'>');
        let ts = r.origin.ts.as_bytes();
        match self.format {
            SyslogFormat::Rfc5424 => {
                out.extend_from_slice(b"1 ");
                out.extend_from_slice(ts);
                out.push(b' ');
                out.extend_from_slice(&self.hostname);
                out.push(b' ');
                field(out, r.platform, 48, false);
                out.push(b' ');
                match r.origin.pid {
                    Some(p) => out.extend_from_slice(itoa::Buffer::new().format(p).as_bytes()),
                    None => out.push(b'-'),
                }
                out.push(b' ');
                field(out, r.source, 32, true);
                out.extend_from_slice(b" - ");
            }
            SyslogFormat::Rfc3164 => {
                // ts is `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
                let month = usize::from(ts[5] - b'0') * 10 + usize::from(ts[6] - b'0');
                out.extend_from_slice(MONTHS[month.clamp(1, 12) - 1]);
                out.push(b' ');
                out.push(if ts[8] == b'0' { b' ' } else { ts[8] });
                out.push(ts[9]);
                out.push(b' ');
                out.extend_from_slice(&ts[11..19]);
                out.push(b' ');
                if !self.local {
                    out.extend_from_slice(&self.hostname);
                    out.push(b' ');
                }
                let tag: &[u8] = if r.platform.is_empty() {
                    b"logtap"
                } else {
                    r.platform
                };
                out.extend(tag.iter().take(32).map(|&b| {
                    if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                        b
                    } else {
                        b'_'
                    }
                }));
                if let Some(p) = r.origin.pid {
                    out.push(b'[');
                    out.extend_from_slice(itoa::Buffer::new().format(p).as_bytes());
                    out.push(b']');
                }
                out.extend_from_slice(b": ");
            }
        }
    }

    /// Calls `emit` with each message for `r` (one, or several for a line
    /// longer than [`MAX_TEXT`]); `scratch` and `msg` are reused buffers.
    pub fn encode(
        &self,
        r: &Record<'_>,
        scratch: &mut Vec<u8>,
        msg: &mut Vec<u8>,
        emit: &mut dyn FnMut(&[u8]),
    ) {
        scratch.clear();
        scrub(scratch, r.text);
        let mut rest = &scratch[..];
        loop {
            let mut cut = rest.len().min(MAX_TEXT);
            // Scrubbed text is valid UTF-8: step back to a char boundary.
            while cut < rest.len() && (rest[cut] & 0xc0) == 0x80 {
                cut -= 1;
            }
            msg.clear();
            self.header(msg, r);
            msg.extend_from_slice(&rest[..cut]);
            emit(msg);
            rest = &rest[cut..];
            if rest.is_empty() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{Clock, Origin};

    fn one(s: &Syslog, level: u32, platform: &[u8], source: &[u8], text: &[u8]) -> Vec<Vec<u8>> {
        let origin = Origin::peer(
            Clock::new().format(1_795_268_855, 97_063),
            Some(42),
            Some(0),
        );
        let r = Record {
            origin: &origin,
            level,
            platform,
            source,
            text,
            partial: false,
            cont: false,
            dropped: None,
        };
        let mut v = Vec::new();
        s.encode(&r, &mut Vec::new(), &mut Vec::new(), &mut |m| {
            v.push(m.to_vec())
        });
        v
    }

    #[test]
    fn rfc5424() {
        let mut s = Syslog::new(SyslogFormat::Rfc5424, 1);
        s.hostname = b"host".to_vec();
        let m = one(
            &s,
            1,
            b"my app",
            b"var/log/a-very-long-directory/app.log",
            b"x\ty",
        );
        assert_eq!(
            String::from_utf8(m[0].clone()).unwrap(),
            "<11>1 2026-11-21T13:47:35.097063Z host my_app 42 og/a-very-long-directory/app.log - x#011y"
        );
        let m = one(&s, 9, b"", b"", b"");
        assert!(m[0].starts_with(b"<15>1 2026-11-21T13:47:35.097063Z host - 42 - - "));
    }

    #[test]
    fn rfc3164_and_long_lines() {
        let mut s = Syslog::new(SyslogFormat::Rfc3164, 16);
        s.hostname = b"host".to_vec();
        let m = one(&s, 0, b"app", b"stdout", b"boom");
        assert_eq!(
            String::from_utf8(m[0].clone()).unwrap(),
            "<130>Nov 21 13:47:35 host app[42]: boom"
        );
        let long = "é".repeat(MAX_TEXT);
        let m = one(&s, 3, b"app", b"stdout", long.as_bytes());
        assert_eq!(m.len(), 2);
        let joined: Vec<u8> = m
            .iter()
            .flat_map(|x| x[x.windows(3).position(|w| w == b"]: ").unwrap() + 3..].to_vec())
            .collect();
        assert_eq!(joined, long.as_bytes());
        assert!(m.iter().all(|x| x.len() <= 8192));
    }

    #[test]
    fn facilities() {
        assert_eq!(parse_facility("user"), Some(1));
        assert_eq!(parse_facility("LOCAL7"), Some(23));
        assert_eq!(parse_facility("3"), Some(3));
        assert_eq!(parse_facility("24"), None);
        assert_eq!(parse_facility("nope"), None);
    }
}
