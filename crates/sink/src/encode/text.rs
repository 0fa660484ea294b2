//! The text line encoder, for people at a terminal and for files:
//! `<RFC3339> <platform>.<source> <message>` in LinuxKit logwrite's style,
//! every field scrubbed (see [`super::scrub`]). The time is the record's:
//! when the line was written, where the frame says (version 1).

use super::scrub::scrub;
use super::Record;

/// Writes `s` scrubbed: invalid UTF-8 becomes U+FFFD, control characters
/// and non-characters `#` + octal.
pub fn write_text(out: &mut Vec<u8>, s: &[u8]) {
    scrub(out, s);
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
        assert_eq!(String::from_utf8(v).unwrap(), "a#011b#033[0m\u{FFFD}#015");
    }
}
