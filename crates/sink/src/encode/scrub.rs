//! Scrubbing of untrusted text for text and syslog output (the rule
//! ChromeOS applies before its logs reach syslog): each invalid UTF-8
//! sequence becomes U+FFFD; control characters (below U+0020 and
//! U+007F–U+009F, tab and newline included) and Unicode non-characters
//! (U+FDD0–U+FDEF and U+xFFFE/U+xFFFF of every plane) become `#` followed
//! by their code point in octal, at least three digits (BEL → `#007`,
//! U+FFFE → `#177776`). Everything else is kept. The result is valid UTF-8
//! with no control characters, so a terminal, a file reader or a syslog
//! daemon shows it as is.

use super::write_runs;

fn needs_escape(c: char) -> bool {
    let u = c as u32;
    u < 0x20 || (0x7f..=0x9f).contains(&u) || (0xfdd0..=0xfdef).contains(&u) || u & 0xfffe == 0xfffe
}

/// `s` is valid UTF-8 (a run from `write_runs`).
fn valid(out: &mut Vec<u8>, s: &[u8]) {
    let mut start = 0;
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b < 0x80 {
            // ASCII, the common case: only C0 controls and DEL change.
            if b < 0x20 || b == 0x7f {
                out.extend_from_slice(&s[start..i]);
                octal(out, u32::from(b));
                start = i + 1;
            }
            i += 1;
            continue;
        }
        let len = match b {
            0xf0.. => 4,
            0xe0.. => 3,
            _ => 2,
        };
        let end = (i + len).min(s.len());
        let c = std::str::from_utf8(&s[i..end])
            .ok()
            .and_then(|t| t.chars().next());
        if let Some(c) = c.filter(|&c| needs_escape(c)) {
            out.extend_from_slice(&s[start..i]);
            octal(out, c as u32);
            start = end;
        }
        i = end;
    }
    out.extend_from_slice(&s[start..]);
}

/// `#` and the octal digits of `u`, at least three.
fn octal(out: &mut Vec<u8>, u: u32) {
    let mut digits = [0u8; 11];
    let mut n = u;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n & 7) as u8;
        n >>= 3;
        if n == 0 && digits.len() - i >= 3 {
            break;
        }
    }
    out.push(b'#');
    out.extend_from_slice(&digits[i..]);
}

/// Appends `s` scrubbed.
pub fn scrub(out: &mut Vec<u8>, s: &[u8]) {
    write_runs(out, s, valid);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sc(s: &[u8]) -> String {
        let mut v = Vec::new();
        scrub(&mut v, s);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn rules() {
        assert_eq!(sc(b"plain text"), "plain text");
        assert_eq!(sc(b"a\x07b"), "a#007b");
        assert_eq!(sc(b"tab\there\nnl\r"), "tab#011here#012nl#015");
        assert_eq!(sc(b"\x1b[31mred\x7f"), "#033[31mred#177");
        assert_eq!(sc("\u{85}x".as_bytes()), "#205x");
        assert_eq!(sc("\u{FFFE}".as_bytes()), "#177776");
        assert_eq!(sc("\u{FDD0}".as_bytes()), "#176720");
        assert_eq!(sc("\u{10FFFF}".as_bytes()), "#4177777");
        assert_eq!(sc("\u{1FFFE}".as_bytes()), "#377776");
        assert_eq!(sc(b"bad\xff\xfeend"), "bad\u{FFFD}\u{FFFD}end");
        assert_eq!(sc("héllo € 日本 #".as_bytes()), "héllo € 日本 #");
        assert_eq!(sc(b"\x00"), "#000");
    }
}
