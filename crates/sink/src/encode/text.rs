//! The text line encoder, for people at a terminal and for files:
//! `<RFC3339> <platform>.<source> <message>` in LinuxKit logwrite's style.

use super::json::HEX;
use super::{write_runs, Record};

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

/// Appends one text line and its `\n`.
pub fn encode(out: &mut Vec<u8>, r: &Record<'_>) {
    out.extend_from_slice(r.origin.ts.as_bytes());
    out.push(b' ');
    write_text(out, r.platform);
    out.push(b'.');
    write_text(out, r.source);
    out.push(b' ');
    write_text(out, r.text);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_escapes() {
        let mut v = Vec::new();
        write_text(&mut v, b"a\tb\x1b[0m\xff\r");
        assert_eq!(String::from_utf8(v).unwrap(), "a\tb\\x1b[0m\u{FFFD}\\x0d");
    }
}
