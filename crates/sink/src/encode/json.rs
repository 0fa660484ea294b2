//! The JSON line encoder: one object per record, lossless.
//!
//! Escaping: valid UTF-8 passes through except `"`, `\`, the control
//! characters below 0x20 (`\n`, `\r`, `\t`, `\b`, `\f` or `\u00XX`) and DEL
//! (`\u007f`). A value that is not valid UTF-8 is written with each invalid
//! sequence replaced by U+FFFD (as `String::from_utf8_lossy` does); for
//! `message` the exact bytes are then also given, base64-encoded, in
//! `message_base64`.

use super::{write_runs, Record};
use crate::output::level_name;

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

pub(crate) const HEX: &[u8; 16] = b"0123456789abcdef";

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

/// The JSON encoder, with the extra fields appended to every object.
#[derive(Clone, Debug, Default)]
pub struct Json {
    /// `,"pod_name":…` etc., pre-escaped.
    suffix: Vec<u8>,
}

impl Json {
    /// `extra` are (field, value) pairs appended to every object
    /// (`pod_name`, `namespace`, `node_name`).
    pub fn new(extra: &[(&str, &str)]) -> Json {
        let mut suffix = Vec::new();
        for (k, v) in extra {
            suffix.push(b',');
            write_json_string(&mut suffix, k.as_bytes());
            suffix.push(b':');
            write_json_string(&mut suffix, v.as_bytes());
        }
        Json { suffix }
    }

    /// Appends one object and its `\n`.
    pub fn encode(&self, b: &mut Vec<u8>, r: &Record<'_>) {
        b.extend_from_slice(b"{\"timestamp\":\"");
        b.extend_from_slice(r.origin.ts.as_bytes());
        b.extend_from_slice(b"\",\"level\":\"");
        b.extend_from_slice(level_name(r.level).as_bytes());
        b.extend_from_slice(b"\",\"platform\":");
        write_json_string(b, r.platform);
        b.extend_from_slice(b",\"source\":");
        write_json_string(b, r.source);
        b.extend_from_slice(b",\"pid\":");
        match r.origin.pid {
            Some(p) => b.extend_from_slice(itoa::Buffer::new().format(p).as_bytes()),
            None => b.extend_from_slice(b"null"),
        }
        if let Some(p) = r.origin.peer_pid {
            // The connection's pid (SO_PEERCRED): the same process, as the
            // sink's pid namespace numbers it.
            b.extend_from_slice(b",\"peer_pid\":");
            b.extend_from_slice(itoa::Buffer::new().format(p).as_bytes());
        }
        b.extend_from_slice(b",\"uid\":");
        match r.origin.uid {
            Some(u) => b.extend_from_slice(itoa::Buffer::new().format(u).as_bytes()),
            None => b.extend_from_slice(b"null"),
        }
        b.extend_from_slice(b",\"message\":");
        if !write_json_string(b, r.text) {
            b.extend_from_slice(b",\"message_base64\":\"");
            write_base64(b, r.text);
            b.push(b'"');
        }
        if let Some(n) = &r.dropped {
            b.extend_from_slice(b",\"dropped_bytes\":");
            b.extend_from_slice(itoa::Buffer::new().format(n.bytes).as_bytes());
            b.extend_from_slice(b",\"dropped_writes\":");
            b.extend_from_slice(itoa::Buffer::new().format(n.writes).as_bytes());
            b.extend_from_slice(b",\"dropped_source\":");
            write_json_string(b, n.source);
        } else if r.partial {
            b.extend_from_slice(b",\"partial\":true");
        } else if let Some(obj) = json_object(r.text) {
            // Re-serialised, so every line is strict JSON whatever arrived
            // (no lone surrogates, no non-finite numbers).
            crate::strict_json::write_data(b, obj);
        }
        b.extend_from_slice(&self.suffix);
        b.extend_from_slice(b"}\n");
    }
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
    fn json_objects() {
        assert_eq!(json_object(b" {\"a\": 1} \r"), Some(&b"{\"a\": 1}"[..]));
        assert_eq!(json_object(b"{\"a\": 1"), None);
        assert_eq!(json_object(b"[1]"), None);
        assert_eq!(json_object(b"{} {}"), None);
        assert_eq!(json_object(b"{\"a\":\"\x01\"}"), None);
        // Deep nesting stays in `message` only, so the line stays parseable.
        let mut deep = b"{\"a\":".to_vec();
        deep.extend(std::iter::repeat_n(b'[', 200_000));
        deep.extend(std::iter::repeat_n(b']', 200_000));
        deep.push(b'}');
        assert!(json_object(&deep).is_none());
        let ok = format!("{{\"a\":{}1{}}}", "[".repeat(60), "]".repeat(60));
        assert!(json_object(ok.as_bytes()).is_some());
        assert!(json_object(br#"{"a":"[[[[\"{{{"}"#).is_some());
    }
}
