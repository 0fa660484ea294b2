//! Encoders: how one record becomes bytes. Apart from destinations
//! (`crate::dest`), so that a new format or a new place to write is one new
//! file each.
//!
//! An encoder appends one complete unit per record to a buffer: a JSON
//! object or a text line ending in `\n`, or one syslog message without
//! transport framing (the syslog destination frames it for its socket).

pub mod json;
pub mod scrub;
pub mod syslog;
pub mod text;

use logtap_wire::DropNotice;

use crate::lines::Line;
use crate::output::Origin;

/// One record as every encoder sees it.
#[derive(Clone, Debug)]
pub struct Record<'a> {
    pub origin: &'a Origin,
    /// logserver level number (0 FATAL … 6 ALL; other numbers are kept).
    pub level: u32,
    pub platform: &'a [u8],
    pub source: &'a [u8],
    /// The line without its `\n` (for a drop notice: its text).
    pub text: &'a [u8],
    /// A `--max-line` piece of a longer line; more follows.
    pub partial: bool,
    /// Continues a line whose start was an earlier (`partial`) record.
    pub cont: bool,
    /// Set for liblogtap's (or the sink's own) report of dropped data.
    pub dropped: Option<DropNotice<'a>>,
}

impl<'a> Record<'a> {
    /// A line from the line buffers.
    pub fn line(origin: &'a Origin, l: &Line<'a>) -> Record<'a> {
        Record {
            origin,
            level: l.level,
            platform: l.platform,
            source: l.source,
            text: l.text,
            partial: l.partial,
            cont: l.cont,
            dropped: None,
        }
    }
}

/// Output format of a destination that writes lines (stdout, files).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (the default).
    Json,
    /// `<RFC3339> <platform>.<source> <message>`, like LinuxKit's logwrite,
    /// scrubbed.
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

/// A line encoder: JSON or text.
#[derive(Clone, Debug)]
pub enum LineEncoder {
    Json(json::Json),
    Text,
}

impl LineEncoder {
    /// `extra` are (field, value) pairs appended to every JSON object.
    pub fn new(format: Format, extra: &[(&str, &str)]) -> LineEncoder {
        match format {
            Format::Json => LineEncoder::Json(json::Json::new(extra)),
            Format::Text => LineEncoder::Text,
        }
    }

    /// Appends `r` as one line ending in `\n`.
    pub fn encode(&self, out: &mut Vec<u8>, r: &Record<'_>) {
        match self {
            LineEncoder::Json(j) => j.encode(out, r),
            LineEncoder::Text => text::encode(out, r),
        }
    }
}

const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// Applies `valid` to each valid UTF-8 run of `s` and writes U+FFFD for
/// each invalid sequence (one per maximal invalid subsequence, as
/// `String::from_utf8_lossy` does).
pub(crate) fn write_runs(out: &mut Vec<u8>, s: &[u8], valid: fn(&mut Vec<u8>, &[u8])) {
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
