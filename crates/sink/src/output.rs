//! Formatting of lines as JSON objects or terminal text, timestamps, and the
//! buffered writer to stdout.
//!
//! JSON escaping is lossless: valid UTF-8 passes through except `"`, `\`,
//! the control characters below 0x20 (`\n`, `\r`, `\t`, `\b`, `\f` or
//! `\u00XX`) and DEL (`\u007f`). A value that is not valid UTF-8 is written
//! with each invalid sequence replaced by U+FFFD (as
//! `String::from_utf8_lossy` does); for `message` the exact bytes are then
//! also given, base64-encoded, in `message_base64`.

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use logtap_wire::{DropNotice, Level};

use crate::lines::Line;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (the default).
    Json,
    /// `<RFC3339> <platform>.<source> <message>`, like LinuxKit's logwrite.
    Text,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "json" => Some(Format::Json),
            "text" => Some(Format::Text),
            _ => None,
        }
    }
}

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

/// What each ASCII byte becomes inside a JSON string: 0 = itself,
/// b'u' = `\u00XX`, anything else = backslash + that byte.
static JSON_ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x7f] = b'u';
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[0x08] = b'b';
    t[0x0c] = b'f';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";
const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// Escapes valid UTF-8 `s` into a JSON string body.
fn escape_json_valid(out: &mut Vec<u8>, s: &[u8]) {
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let e = JSON_ESCAPE[b as usize];
        if e == 0 {
            continue;
        }
        out.extend_from_slice(&s[start..i]);
        if e == b'u' {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', e]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
}

/// Writes `s` as a quoted JSON string; returns false when `s` was not valid
/// UTF-8 (and invalid sequences were replaced by U+FFFD).
pub fn write_json_string(out: &mut Vec<u8>, s: &[u8]) -> bool {
    out.push(b'"');
    let ok = if std::str::from_utf8(s).is_ok() {
        escape_json_valid(out, s);
        true
    } else {
        write_runs(out, s, escape_json_valid);
        false
    };
    out.push(b'"');
    ok
}

/// Standard base64 with padding.
pub fn write_base64(out: &mut Vec<u8>, s: &[u8]) {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut chunks = s.chunks_exact(3);
    for c in &mut chunks {
        let n = (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]);
        out.extend_from_slice(&[
            B64[(n >> 18) as usize & 63],
            B64[(n >> 12) as usize & 63],
            B64[(n >> 6) as usize & 63],
            B64[n as usize & 63],
        ]);
    }
    match *chunks.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.extend_from_slice(&[
                B64[(n >> 18) as usize & 63],
                B64[(n >> 12) as usize & 63],
                b'=',
                b'=',
            ]);
        }
        [a, b] => {
            let n = (u32::from(a) << 16) | (u32::from(b) << 8);
            out.extend_from_slice(&[
                B64[(n >> 18) as usize & 63],
                B64[(n >> 12) as usize & 63],
                B64[(n >> 6) as usize & 63],
                b'=',
            ]);
        }
        _ => {}
    }
}

/// Writes `s` for a terminal: invalid UTF-8 becomes U+FFFD, control
/// characters other than tab (and DEL) become `\xNN`.
pub fn write_text(out: &mut Vec<u8>, s: &[u8]) {
    fn valid(out: &mut Vec<u8>, s: &[u8]) {
        let mut start = 0;
        for (i, &b) in s.iter().enumerate() {
            if (b < 0x20 && b != b'\t') || b == 0x7f {
                out.extend_from_slice(&s[start..i]);
                out.extend_from_slice(&[
                    b'\\',
                    b'x',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 15) as usize],
                ]);
                start = i + 1;
            }
        }
        out.extend_from_slice(&s[start..]);
    }
    write_runs(out, s, valid);
}

/// Applies `valid` to each valid UTF-8 run and writes U+FFFD for each
/// invalid sequence.
fn write_runs(out: &mut Vec<u8>, s: &[u8], valid: fn(&mut Vec<u8>, &[u8])) {
    let mut rest = s;
    loop {
        match std::str::from_utf8(rest) {
            Ok(_) => {
                valid(out, rest);
                return;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                valid(out, good);
                out.extend_from_slice(REPLACEMENT);
                match e.error_len() {
                    Some(n) => rest = &bad[n..],
                    None => return,
                }
            }
        }
    }
}

/// True when `s` is, after leading whitespace, a JSON object (checked
/// cheaply first: the first non-space byte must be `{`).
pub fn json_object(s: &[u8]) -> Option<&[u8]> {
    let start = s
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))?;
    if s[start] != b'{' {
        return None;
    }
    let end = s
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))?
        + 1;
    let t = &s[start..end];
    if t.last() != Some(&b'}') {
        return None;
    }
    if nesting(t) > MAX_DATA_DEPTH {
        return None;
    }
    let text = std::str::from_utf8(t).ok()?;
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    Some(t)
}

/// Deepest nesting of `data` objects kept: consumers (serde_json's default
/// is 128 levels) must be able to parse the line it ends up in.
pub const MAX_DATA_DEPTH: usize = 64;

/// Deepest bracket nesting in `s` (JSON text), outside strings.
fn nesting(s: &[u8]) -> usize {
    let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for &b in s {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Where a line came from, besides the frame itself.
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    pub ts: Timestamp,
    /// Peer pid (`SO_PEERCRED`), `None` for `--read` or when unknown.
    pub pid: Option<u32>,
    /// Peer uid (`SO_PEERCRED`, which the peer cannot forge), `None` for
    /// `--read` or when unknown.
    pub uid: Option<u32>,
}

/// Formats lines into a buffer and writes it to `W` in large writes.
pub struct Output<W: Write> {
    format: Format,
    buf: Vec<u8>,
    /// `,"pod_name":…` etc., pre-escaped.
    suffix: Vec<u8>,
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
        let mut suffix = Vec::new();
        for (k, v) in extra {
            suffix.push(b',');
            write_json_string(&mut suffix, k.as_bytes());
            suffix.push(b':');
            write_json_string(&mut suffix, v.as_bytes());
        }
        Output {
            format,
            buf: Vec::with_capacity(OUTPUT_BUFFER + 64 * 1024),
            suffix,
            w,
            flush_at: OUTPUT_BUFFER,
            error: None,
        }
    }

    /// The extra fields from `POD_NAME`, `POD_NAMESPACE`, `NODE_NAME`.
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

    fn head(&mut self, o: &Origin, level: &str, platform: &[u8], source: &[u8]) {
        let b = &mut self.buf;
        b.extend_from_slice(b"{\"timestamp\":\"");
        b.extend_from_slice(o.ts.as_bytes());
        b.extend_from_slice(b"\",\"level\":\"");
        b.extend_from_slice(level.as_bytes());
        b.extend_from_slice(b"\",\"platform\":");
        write_json_string(b, platform);
        b.extend_from_slice(b",\"source\":");
        write_json_string(b, source);
        b.extend_from_slice(b",\"pid\":");
        match o.pid {
            Some(p) => b.extend_from_slice(itoa::Buffer::new().format(p).as_bytes()),
            None => b.extend_from_slice(b"null"),
        }
        b.extend_from_slice(b",\"uid\":");
        match o.uid {
            Some(u) => b.extend_from_slice(itoa::Buffer::new().format(u).as_bytes()),
            None => b.extend_from_slice(b"null"),
        }
        b.extend_from_slice(b",\"message\":");
    }

    fn text_head(&mut self, o: &Origin, platform: &[u8], source: &[u8]) {
        self.buf.extend_from_slice(o.ts.as_bytes());
        self.buf.push(b' ');
        write_text(&mut self.buf, platform);
        self.buf.push(b'.');
        write_text(&mut self.buf, source);
        self.buf.push(b' ');
    }

    fn message(&mut self, text: &[u8]) {
        if !write_json_string(&mut self.buf, text) {
            self.buf.extend_from_slice(b",\"message_base64\":\"");
            write_base64(&mut self.buf, text);
            self.buf.push(b'"');
        }
    }

    fn tail(&mut self) {
        self.buf.extend_from_slice(&self.suffix);
        self.buf.extend_from_slice(b"}\n");
        self.maybe_flush();
    }

    /// Emits one line.
    pub fn line(&mut self, o: &Origin, line: &Line<'_>) {
        let level = level_name(line.level);
        match self.format {
            Format::Json => {
                self.head(o, level, line.platform, line.source);
                self.message(line.text);
                if line.partial {
                    self.buf.extend_from_slice(b",\"partial\":true");
                } else if let Some(obj) = json_object(line.text) {
                    crate::strict_json::write_data(&mut self.buf, obj);
                }
                self.tail();
            }
            Format::Text => {
                self.text_head(o, line.platform, line.source);
                write_text(&mut self.buf, line.text);
                self.buf.push(b'\n');
                self.maybe_flush();
            }
        }
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
        let text = data.strip_suffix(b"\n").unwrap_or(data);
        match self.format {
            Format::Json => {
                self.head(o, level_name(level), platform, source);
                self.message(text);
                self.buf.extend_from_slice(b",\"dropped_bytes\":");
                self.buf
                    .extend_from_slice(itoa::Buffer::new().format(n.bytes).as_bytes());
                self.buf.extend_from_slice(b",\"dropped_writes\":");
                self.buf
                    .extend_from_slice(itoa::Buffer::new().format(n.writes).as_bytes());
                self.buf.extend_from_slice(b",\"dropped_source\":");
                write_json_string(&mut self.buf, n.source);
                self.tail();
            }
            Format::Text => {
                self.text_head(o, platform, source);
                write_text(&mut self.buf, text);
                self.buf.push(b'\n');
                self.maybe_flush();
            }
        }
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

/// Level name, `UNKNOWN` for numbers outside 0..=6.
pub fn level_name(n: u32) -> &'static str {
    Level::from_number(n).map_or("UNKNOWN", Level::name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn js(s: &[u8]) -> (String, bool) {
        let mut v = Vec::new();
        let ok = write_json_string(&mut v, s);
        (String::from_utf8(v).unwrap(), ok)
    }

    #[test]
    fn escapes() {
        assert_eq!(
            js(b"a\"b\\c\n\t\r\x08\x0c\x1b[31m\x7f\x01"),
            (r#""a\"b\\c\n\t\r\b\f\u001b[31m\u007f\u0001""#.into(), true)
        );
        assert_eq!(js("héllo €".as_bytes()), ("\"héllo €\"".into(), true));
        assert_eq!(
            js(b"a\xffb\xe2\x82"),
            ("\"a\u{FFFD}b\u{FFFD}\"".into(), false)
        );
    }

    #[test]
    fn base64() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
        ] {
            let mut v = Vec::new();
            write_base64(&mut v, i.as_bytes());
            assert_eq!(v, o.as_bytes());
        }
    }

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

    #[test]
    fn text_escapes() {
        let mut v = Vec::new();
        write_text(&mut v, b"a\tb\x1b[0m\xff\r");
        assert_eq!(String::from_utf8(v).unwrap(), "a\tb\\x1b[0m\u{FFFD}\\x0d");
    }

    #[test]
    fn json_objects() {
        assert_eq!(json_object(b" {\"a\": 1} \r"), Some(&b"{\"a\": 1}"[..]));
        assert_eq!(json_object(b"{\"a\": 1"), None);
        assert_eq!(json_object(b"[1]"), None);
        assert_eq!(json_object(b"{} {}"), None);
        assert_eq!(json_object(b"{\"a\":\"\x01\"}"), None);
        // Deep nesting stays in `message` only, so the line stays parseable.
        let mut deep = b"{\"a\":".to_vec();
        deep.extend(std::iter::repeat(b'[').take(200_000));
        deep.extend(std::iter::repeat(b']').take(200_000));
        deep.push(b'}');
        assert!(json_object(&deep).is_none());
        let ok = format!("{{\"a\":{}1{}}}", "[".repeat(60), "]".repeat(60));
        assert!(json_object(ok.as_bytes()).is_some());
        assert!(json_object(br#"{"a":"[[[[\"{{{"}"#).is_some());
    }
}
