//! The `logserver_msg` wire format, defined once for liblogtap (the writer)
//! and logtap-sink (the reader).
//!
//! A frame is two native-endian `i32`s, `version` and `len` (the exact byte
//! count of what follows), then `level\0platform\0source\0data` with no
//! trailing NUL. Version 0 is the layout Pantavisor's logserver parses;
//! `level` is ASCII decimal. Version 1 ([`VERSION_ORIGIN`]) is logtap's
//! extension: the same frame whose data is a run of entries, each a
//! 16-byte [entry header](EntryHeader) (the write's wall-clock time and the
//! writer's pid) and the bytes of that write. `docs/wire.md` states both in
//! full.
//!
//! The encoding half never allocates: the preload library calls it from
//! code that must not touch the allocator. The decoding half treats its
//! input as hostile: it never trusts `len` for an allocation before the
//! bytes have arrived.

#![forbid(unsafe_code)]

use std::fmt;

pub mod ring;
pub use ring::RingPosition;

/// Pantavisor's `logserver_msg`: the only version a plain logserver reader
/// accepts.
pub const VERSION: i32 = 0;
/// logtap's extension of version 0: every write in the data carries its
/// origin (an [`EntryHeader`] before its bytes). Only logtap-sink reads it.
pub const VERSION_ORIGIN: i32 = 1;
/// Version 1 on a connection whose sender shared its ring (see [`ring`]):
/// the data is a run of entries followed by a [`RingPosition`], where the
/// bytes after this frame start in that ring. Sent only to a sink that
/// greeted the connection with [`ring::SINK_HELLO`].
pub const VERSION_RING: i32 = 2;
/// A read request on a connection whose ring the sink reads itself (it
/// said so with [`ring::SinkMsg::Reading`]): the body is a version-2 body
/// with no entries, and its [`RingPosition`] says the sink may read the
/// ring's records up to there. The bytes stay in the ring; the sink
/// answers with [`ring::SinkMsg::Read`] once it has delivered them, and
/// only then does the program free that space.
pub const VERSION_READ: i32 = 3;
/// `version` + `len`.
pub const HEADER_LEN: usize = 8;
/// Size of an [`EntryHeader`] on the wire (and in liblogtap's buffer).
pub const ENTRY_HEADER: usize = 16;
/// The most data bytes liblogtap puts in one frame.
pub const MAX_DATA: usize = 64 * 1024;
/// The largest `len` a reader accepts: Pantavisor's own read buffer.
pub const MAX_LEN: usize = 256 * 1024;
/// Longest platform name Pantavisor keeps.
pub const MAX_PLATFORM: usize = 63;
/// Source name of the frames liblogtap itself emits (drop notices).
pub const SELF_SOURCE: &str = "logtap";

/// Pantavisor's log levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Fatal = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
    All = 6,
}

impl Level {
    pub fn from_number(n: u32) -> Option<Level> {
        Some(match n {
            0 => Level::Fatal,
            1 => Level::Error,
            2 => Level::Warn,
            3 => Level::Info,
            4 => Level::Debug,
            5 => Level::Trace,
            6 => Level::All,
            _ => return None,
        })
    }

    /// Accepts a number (`3`) or a name in any case (`info`, `WARNING`).
    pub fn parse(s: &[u8]) -> Option<Level> {
        if !s.is_empty() && s.iter().all(u8::is_ascii_digit) && s.len() <= 2 {
            let n = s.iter().fold(0u32, |a, d| a * 10 + u32::from(d - b'0'));
            return Level::from_number(n);
        }
        let mut up = [0u8; 8];
        if s.len() > up.len() {
            return None;
        }
        for (u, c) in up.iter_mut().zip(s) {
            *u = c.to_ascii_uppercase();
        }
        Some(match &up[..s.len()] {
            b"FATAL" | b"CRIT" | b"CRITICAL" => Level::Fatal,
            b"ERROR" | b"ERR" => Level::Error,
            b"WARN" | b"WARNING" => Level::Warn,
            b"INFO" => Level::Info,
            b"DEBUG" => Level::Debug,
            b"TRACE" => Level::Trace,
            b"ALL" => Level::All,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Fatal => "FATAL",
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
            Level::All => "ALL",
        }
    }

    /// The ASCII digit that goes on the wire.
    pub fn digit(self) -> u8 {
        b'0' + self as u8
    }
}

/// The 8-byte version-0 header for a frame whose body (prefix + data) is
/// `body_len`.
pub fn header(body_len: usize) -> [u8; HEADER_LEN] {
    header_version(VERSION, body_len)
}

/// The 8-byte header of a frame of `version`.
pub fn header_version(version: i32, body_len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&version.to_ne_bytes());
    h[4..].copy_from_slice(&(body_len as i32).to_ne_bytes());
    h
}

/// Where and when one write happened: what a version-1 entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOrigin {
    /// Wall-clock time of the write, nanoseconds since the Unix epoch
    /// (the writer's wall clock; liblogtap reads `CLOCK_REALTIME` when
    /// the write returns).
    pub time_ns: u64,
    /// The writer's pid as the writer sees it (`getpid()` in its own pid
    /// namespace).
    pub pid: u32,
}

/// The 16 bytes before each write's data in a version-1 frame, all
/// native-endian: `time_ns` (u64), `pid` (u32), `len` (u32, the data bytes
/// that follow). liblogtap keeps the same 16 bytes before each record in its
/// buffer, so a record goes onto the wire as it lies there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryHeader {
    pub origin: WriteOrigin,
    pub len: u32,
}

impl EntryHeader {
    pub fn to_bytes(self) -> [u8; ENTRY_HEADER] {
        let mut b = [0u8; ENTRY_HEADER];
        b[..8].copy_from_slice(&self.origin.time_ns.to_ne_bytes());
        b[8..12].copy_from_slice(&self.origin.pid.to_ne_bytes());
        b[12..].copy_from_slice(&self.len.to_ne_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; ENTRY_HEADER]) -> EntryHeader {
        let u32_at = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        EntryHeader {
            origin: WriteOrigin {
                time_ns: u64::from_ne_bytes(b[..8].try_into().expect("8 bytes")),
                pid: u32_at(8),
            },
            len: u32_at(12),
        }
    }
}

/// Writes `level\0platform\0source\0` into `out` and returns its length, or
/// `None` when `out` is too small. The platform is cut at
/// [`MAX_PLATFORM`] bytes and a leading `/` of the source is dropped, as
/// Pantavisor expects.
pub fn write_prefix(out: &mut [u8], level: Level, platform: &[u8], source: &[u8]) -> Option<usize> {
    let platform = &platform[..platform.len().min(MAX_PLATFORM)];
    let source = source.strip_prefix(b"/").unwrap_or(source);
    let need = 2 + platform.len() + 1 + source.len() + 1;
    if out.len() < need {
        return None;
    }
    out[0] = level.digit();
    out[1] = 0;
    let mut at = 2;
    out[at..at + platform.len()].copy_from_slice(platform);
    at += platform.len();
    out[at] = 0;
    at += 1;
    out[at..at + source.len()].copy_from_slice(source);
    at += source.len();
    out[at] = 0;
    Some(at + 1)
}

/// Encodes a whole version-0 frame into a new vector (for tests and tools,
/// not the hooks).
pub fn encode(level: Level, platform: &[u8], source: &[u8], data: &[u8]) -> Vec<u8> {
    let mut prefix = vec![0u8; 4 + platform.len() + source.len()];
    let n = write_prefix(&mut prefix, level, platform, source).expect("sized above");
    let mut out = Vec::with_capacity(HEADER_LEN + n + data.len());
    out.extend_from_slice(&header(n + data.len()));
    out.extend_from_slice(&prefix[..n]);
    out.extend_from_slice(data);
    out
}

/// Encodes a whole version-1 frame, one entry per write (for tests and
/// tools, not the hooks).
pub fn encode_with_origin(
    level: Level,
    platform: &[u8],
    source: &[u8],
    writes: &[(WriteOrigin, &[u8])],
) -> Vec<u8> {
    let mut prefix = vec![0u8; 4 + platform.len() + source.len()];
    let n = write_prefix(&mut prefix, level, platform, source).expect("sized above");
    let data: usize = writes.iter().map(|(_, d)| ENTRY_HEADER + d.len()).sum();
    let mut out = Vec::with_capacity(HEADER_LEN + n + data);
    out.extend_from_slice(&header_version(VERSION_ORIGIN, n + data));
    out.extend_from_slice(&prefix[..n]);
    for (origin, d) in writes {
        let e = EntryHeader {
            origin: *origin,
            len: d.len() as u32,
        };
        out.extend_from_slice(&e.to_bytes());
        out.extend_from_slice(d);
    }
    out
}

/// Encodes a whole version-2 frame: entries as in version 1, then
/// `position` (for tests and tools, not the hooks).
pub fn encode_ring(
    level: Level,
    platform: &[u8],
    source: &[u8],
    writes: &[(WriteOrigin, &[u8])],
    position: RingPosition,
) -> Vec<u8> {
    let mut out = encode_with_origin(level, platform, source, writes);
    out[..4].copy_from_slice(&VERSION_RING.to_ne_bytes());
    let len = i32::from_ne_bytes(out[4..8].try_into().expect("4 bytes")) as usize;
    out[4..8].copy_from_slice(&((len + ring::POSITION_LEN) as i32).to_ne_bytes());
    out.extend_from_slice(&position.to_bytes());
    out
}

/// One decoded frame, borrowing from the decoder's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// [`VERSION`] or [`VERSION_ORIGIN`].
    pub version: i32,
    /// The numeric level as sent (not limited to known [`Level`]s).
    pub level: u32,
    pub platform: &'a [u8],
    pub source: &'a [u8],
    /// Everything after the source's NUL: the bytes written (version 0),
    /// or entries (versions 1 and 2; read them with [`Frame::writes`]).
    pub data: &'a [u8],
    /// Version 2: where the sender's ring continues after this frame.
    pub position: Option<RingPosition>,
}

impl<'a> Frame<'a> {
    pub fn level_name(&self) -> &'static str {
        Level::from_number(self.level).map_or("UNKNOWN", Level::name)
    }

    /// The writes the frame carries, in order: one without origin for
    /// version 0, one per entry for version 1 (already checked by the
    /// decoder to tile the data exactly).
    pub fn writes(&self) -> Writes<'a> {
        Writes {
            rest: self.data,
            entries: self.version != VERSION,
        }
    }
}

/// One write's bytes and, from a version-1 frame, its origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Write<'a> {
    pub origin: Option<WriteOrigin>,
    pub data: &'a [u8],
}

/// Iterator over a frame's writes (see [`Frame::writes`]).
pub struct Writes<'a> {
    rest: &'a [u8],
    entries: bool,
}

impl<'a> Iterator for Writes<'a> {
    type Item = Write<'a>;

    fn next(&mut self) -> Option<Write<'a>> {
        if !self.entries {
            if self.rest.is_empty() {
                return None;
            }
            let data = std::mem::take(&mut self.rest);
            return Some(Write { origin: None, data });
        }
        let (e, data, rest) = split_entry(self.rest)?;
        self.rest = rest;
        Some(Write {
            origin: Some(e.origin),
            data,
        })
    }
}

/// The first entry of `s`: its header, its data and what follows; `None`
/// when `s` is empty or does not start with a whole entry.
fn split_entry(s: &[u8]) -> Option<(EntryHeader, &[u8], &[u8])> {
    let h: &[u8; ENTRY_HEADER] = s.get(..ENTRY_HEADER)?.try_into().ok()?;
    let e = EntryHeader::from_bytes(h);
    let end = ENTRY_HEADER.checked_add(e.len as usize)?;
    let data = s.get(ENTRY_HEADER..end)?;
    Some((e, data, &s[end..]))
}

/// What was wrong with a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    BadVersion(i32),
    BadLength(i32),
    MissingSeparator,
    BadLevel,
    /// A version-1 frame whose data is not a run of whole entries.
    BadEntry,
    /// A version-2 frame too short for its ring position.
    MissingPosition,
    /// A version-3 frame with entries: it carries a position only.
    ReadWithData,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadVersion(v) => {
                write!(
                    f,
                    "unsupported version {v} (0 logserver_msg, 1 logtap's with origin, 2 with ring position, 3 read request)"
                )
            }
            FrameError::BadLength(l) => write!(f, "length {l} outside 0..={MAX_LEN}"),
            FrameError::MissingSeparator => {
                write!(
                    f,
                    "body lacks the three NUL separators (level, platform, source)"
                )
            }
            FrameError::BadLevel => write!(f, "level is not an ASCII decimal number"),
            FrameError::BadEntry => write!(
                f,
                "version-1 data is not a run of whole entries (16-byte header + its length)"
            ),
            FrameError::MissingPosition => write!(
                f,
                "version-2 data is shorter than its 16-byte ring position"
            ),
            FrameError::ReadWithData => write!(
                f,
                "version-3 read request carries data besides its ring position"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

/// Checks a header and returns the body length it announces.
pub fn parse_header(h: &[u8; HEADER_LEN]) -> Result<usize, FrameError> {
    parse_header_version(h).map(|(_, len)| len)
}

/// Checks a header and returns its version and the body length it announces.
pub fn parse_header_version(h: &[u8; HEADER_LEN]) -> Result<(i32, usize), FrameError> {
    let version = i32::from_ne_bytes([h[0], h[1], h[2], h[3]]);
    let len = i32::from_ne_bytes([h[4], h[5], h[6], h[7]]);
    if !(VERSION..=VERSION_READ).contains(&version) {
        return Err(FrameError::BadVersion(version));
    }
    if len < 0 || len as usize > MAX_LEN {
        return Err(FrameError::BadLength(len));
    }
    Ok((version, len as usize))
}

/// Splits a version-0 frame body into its fields.
pub fn parse_body(body: &[u8]) -> Result<Frame<'_>, FrameError> {
    parse_body_version(VERSION, body)
}

/// Splits a frame body of `version` into its fields; a version-1 body
/// must hold whole entries only.
pub fn parse_body_version(version: i32, body: &[u8]) -> Result<Frame<'_>, FrameError> {
    let mut parts = body.splitn(4, |&b| b == 0);
    let level = parts.next().ok_or(FrameError::MissingSeparator)?;
    let platform = parts.next().ok_or(FrameError::MissingSeparator)?;
    let source = parts.next().ok_or(FrameError::MissingSeparator)?;
    // `splitn` yields a fourth part only when the third separator exists.
    let data = parts.next().ok_or(FrameError::MissingSeparator)?;
    if level.is_empty() || level.len() > 9 || !level.iter().all(u8::is_ascii_digit) {
        return Err(FrameError::BadLevel);
    }
    let level = level.iter().fold(0u32, |a, d| a * 10 + u32::from(d - b'0'));
    let mut position = None;
    let mut data = data;
    if version == VERSION_RING || version == VERSION_READ {
        let at = data
            .len()
            .checked_sub(ring::POSITION_LEN)
            .ok_or(FrameError::MissingPosition)?;
        let p: &[u8; ring::POSITION_LEN] = data[at..].try_into().expect("16 bytes");
        position = Some(RingPosition::from_bytes(p));
        data = &data[..at];
    }
    if version == VERSION_READ && !data.is_empty() {
        return Err(FrameError::ReadWithData);
    }
    if version != VERSION {
        let mut rest = data;
        while !rest.is_empty() {
            let (_, _, r) = split_entry(rest).ok_or(FrameError::BadEntry)?;
            rest = r;
        }
    }
    Ok(Frame {
        version,
        level,
        platform,
        source,
        data,
        position,
    })
}

/// Incremental decoder for a stream of frames on one connection.
///
/// Memory is bounded by what has actually arrived of one frame (at most
/// `HEADER_LEN + MAX_LEN`), whatever the peer claims.
#[derive(Default)]
pub struct Decoder {
    header: [u8; HEADER_LEN],
    header_fill: usize,
    /// Body length announced by the current header, once it is complete.
    want: Option<usize>,
    /// Version of the current header.
    version: i32,
    body: Vec<u8>,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Decodes as many frames as `input` completes, calling `on_frame` for
    /// each. After an error the decoder must not be fed again.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        mut on_frame: impl FnMut(Frame<'_>),
    ) -> Result<(), FrameError> {
        while !input.is_empty() {
            let want = match self.want {
                Some(w) => w,
                None => {
                    // Fast path: a whole frame lies in the input, decode it in place.
                    if self.header_fill == 0 && input.len() >= HEADER_LEN {
                        let h: [u8; HEADER_LEN] = input[..HEADER_LEN].try_into().expect("8 bytes");
                        let (version, len) = parse_header_version(&h)?;
                        if input.len() >= HEADER_LEN + len {
                            on_frame(parse_body_version(
                                version,
                                &input[HEADER_LEN..HEADER_LEN + len],
                            )?);
                            input = &input[HEADER_LEN + len..];
                            continue;
                        }
                    }
                    let take = (HEADER_LEN - self.header_fill).min(input.len());
                    self.header[self.header_fill..self.header_fill + take]
                        .copy_from_slice(&input[..take]);
                    self.header_fill += take;
                    input = &input[take..];
                    if self.header_fill < HEADER_LEN {
                        return Ok(());
                    }
                    let (version, len) = parse_header_version(&self.header)?;
                    self.version = version;
                    self.want = Some(len);
                    len
                }
            };
            let take = (want - self.body.len()).min(input.len());
            self.body.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.body.len() == want {
                let res = parse_body_version(self.version, &self.body).map(&mut on_frame);
                self.body.clear();
                if self.body.capacity() > 2 * MAX_DATA {
                    self.body.shrink_to(MAX_DATA);
                }
                self.want = None;
                self.header_fill = 0;
                res?;
            }
        }
        Ok(())
    }

    /// True while a frame has started but not finished.
    pub fn is_mid_frame(&self) -> bool {
        self.header_fill > 0
    }

    /// Bytes of the unfinished frame received so far.
    pub fn pending(&self) -> usize {
        self.header_fill + self.body.len()
    }

    /// Bytes held in memory by this decoder.
    pub fn memory(&self) -> usize {
        self.body.capacity()
    }
}

/// liblogtap's notice that data was dropped because its buffer was full.
///
/// Sent as an ordinary frame with source [`SELF_SOURCE`] and level WARN, so
/// that any logserver reader shows it, with data
/// `logtap: dropped bytes=N writes=M source=SRC\n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropNotice<'a> {
    pub bytes: u64,
    pub writes: u64,
    pub source: &'a [u8],
}

const DROP_PREFIX: &[u8] = b"logtap: dropped bytes=";

impl<'a> DropNotice<'a> {
    /// Writes the notice's data into `out` without allocating; returns its length.
    pub fn write(&self, out: &mut [u8]) -> Option<usize> {
        let mut w = SliceWriter { out, at: 0 };
        w.put(DROP_PREFIX)?;
        w.num(self.bytes)?;
        w.put(b" writes=")?;
        w.num(self.writes)?;
        w.put(b" source=")?;
        w.put(self.source.strip_prefix(b"/").unwrap_or(self.source))?;
        w.put(b"\n")?;
        Some(w.at)
    }

    /// Recognises a notice in a frame's data.
    pub fn parse(data: &'a [u8]) -> Option<DropNotice<'a>> {
        let rest = data.strip_prefix(DROP_PREFIX)?;
        let rest = rest.strip_suffix(b"\n").unwrap_or(rest);
        let (bytes, rest) = split_num(rest)?;
        let rest = rest.strip_prefix(b" writes=")?;
        let (writes, rest) = split_num(rest)?;
        let source = rest.strip_prefix(b" source=")?;
        if source.contains(&b'\n') {
            // One notice is one line: more lines are something else.
            return None;
        }
        Some(DropNotice {
            bytes,
            writes,
            source,
        })
    }
}

fn split_num(s: &[u8]) -> Option<(u64, &[u8])> {
    let end = s
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(s.len());
    if end == 0 || end > 20 {
        return None;
    }
    let n = std::str::from_utf8(&s[..end]).ok()?.parse().ok()?;
    Some((n, &s[end..]))
}

struct SliceWriter<'o> {
    out: &'o mut [u8],
    at: usize,
}

impl SliceWriter<'_> {
    fn put(&mut self, b: &[u8]) -> Option<()> {
        let dst = self.out.get_mut(self.at..self.at + b.len())?;
        dst.copy_from_slice(b);
        self.at += b.len();
        Some(())
    }
    fn num(&mut self, mut n: u64) -> Option<()> {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.put(&tmp[i..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_two_carries_entries_and_a_position() {
        let o = WriteOrigin { time_ns: 7, pid: 9 };
        let p = RingPosition { pos: 4096, skip: 3 };
        let f = encode_ring(Level::Info, b"app", b"stdout", &[(o, b"ab\n")], p);
        let mut d = Decoder::new();
        let mut got = Vec::new();
        d.feed(&f, |fr| {
            got.push((
                fr.version,
                fr.position,
                fr.writes().map(|w| w.data.to_vec()).collect::<Vec<_>>(),
            ))
        })
        .unwrap();
        assert_eq!(got, vec![(VERSION_RING, Some(p), vec![b"ab\n".to_vec()])]);
        // An attach frame: no entries, only the position.
        let a = encode_ring(Level::Info, b"app", SELF_SOURCE.as_bytes(), &[], p);
        let mut n = 0;
        Decoder::new()
            .feed(&a, |fr| {
                assert_eq!(fr.writes().count(), 0);
                assert_eq!(fr.position, Some(p));
                n += 1;
            })
            .unwrap();
        assert_eq!(n, 1);
        // Shorter than a position: malformed.
        let mut bad = encode_with_origin(Level::Info, b"a", b"s", &[]);
        bad[..4].copy_from_slice(&VERSION_RING.to_ne_bytes());
        assert_eq!(
            Decoder::new().feed(&bad, |_| ()),
            Err(FrameError::MissingPosition)
        );
    }

    #[test]
    fn round_trip_and_split_feeding() {
        let mut stream = encode(Level::Info, b"app", b"/var/log/a.log", b"hello\nworld\n");
        stream.extend(encode(Level::Warn, b"app", b"stderr", b""));
        for chunk in [1usize, 3, 7, 8, 9, 1000] {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                d.feed(piece, |f| {
                    got.push((
                        f.level,
                        f.platform.to_vec(),
                        f.source.to_vec(),
                        f.data.to_vec(),
                    ))
                })
                .unwrap();
            }
            assert_eq!(got.len(), 2);
            assert_eq!(
                got[0],
                (
                    3,
                    b"app".to_vec(),
                    b"var/log/a.log".to_vec(),
                    b"hello\nworld\n".to_vec()
                )
            );
            assert_eq!(got[1], (2, b"app".to_vec(), b"stderr".to_vec(), Vec::new()));
            assert!(!d.is_mid_frame());
        }
    }

    #[test]
    fn rejects_hostile_headers() {
        let mut d = Decoder::new();
        let mut bad = header(10).to_vec();
        bad[..4].copy_from_slice(&4i32.to_ne_bytes());
        assert_eq!(d.feed(&bad, |_| {}), Err(FrameError::BadVersion(4)));
        // A read request carries its position and nothing else.
        let mut req = encode_ring(Level::Info, b"p", b"logtap", &[], RingPosition::default());
        req[..4].copy_from_slice(&VERSION_READ.to_ne_bytes());
        let mut got = Vec::new();
        Decoder::new()
            .feed(&req, |f| got.push((f.version, f.position, f.data.len())))
            .unwrap();
        assert_eq!(got, [(VERSION_READ, Some(RingPosition::default()), 0)]);
        let mut req = encode_ring(
            Level::Info,
            b"p",
            b"logtap",
            &[(WriteOrigin { time_ns: 1, pid: 1 }, b"x".as_slice())],
            RingPosition::default(),
        );
        req[..4].copy_from_slice(&VERSION_READ.to_ne_bytes());
        assert_eq!(
            Decoder::new().feed(&req, |_| {}),
            Err(FrameError::ReadWithData)
        );
        let mut d = Decoder::new();
        assert!(matches!(
            d.feed(&header(1 << 30), |_| {}),
            Err(FrameError::BadLength(_))
        ));
        let mut d = Decoder::new();
        let mut neg = header(0).to_vec();
        neg[4..].copy_from_slice(&(-5i32).to_ne_bytes());
        assert_eq!(d.feed(&neg, |_| {}), Err(FrameError::BadLength(-5)));
        let mut d = Decoder::new();
        let mut f = header(5).to_vec();
        f.extend_from_slice(b"3\0a\0b");
        assert_eq!(d.feed(&f, |_| {}), Err(FrameError::MissingSeparator));
        let mut d = Decoder::new();
        let mut f = header(6).to_vec();
        f.extend_from_slice(b"x\0a\0b\0");
        assert_eq!(d.feed(&f, |_| {}), Err(FrameError::BadLevel));
    }

    #[test]
    fn version_1_entries_round_trip_and_tell_from_version_0() {
        let a = WriteOrigin {
            time_ns: 1_795_268_855_097_063_123,
            pid: 7,
        };
        let b = WriteOrigin {
            time_ns: 1_795_268_855_100_000_000,
            pid: 4_000_000,
        };
        let mut stream = encode(Level::Info, b"app", b"stdout", b"plain\n");
        stream.extend(encode_with_origin(
            Level::Error,
            b"app",
            b"stderr",
            &[(a, b"one\ntw"), (b, b""), (b, b"o\n")],
        ));
        for chunk in [1usize, 5, 16, 17, 1000] {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                d.feed(piece, |f| {
                    for w in f.writes() {
                        got.push((f.version, f.source.to_vec(), w.origin, w.data.to_vec()));
                    }
                })
                .unwrap();
            }
            assert_eq!(
                got,
                vec![
                    (0, b"stdout".to_vec(), None, b"plain\n".to_vec()),
                    (1, b"stderr".to_vec(), Some(a), b"one\ntw".to_vec()),
                    (1, b"stderr".to_vec(), Some(b), Vec::new()),
                    (1, b"stderr".to_vec(), Some(b), b"o\n".to_vec()),
                ]
            );
        }
        // The header itself says which version it is.
        assert_eq!(
            parse_header_version(&header_version(VERSION_ORIGIN, 3)),
            Ok((1, 3))
        );
        assert_eq!(parse_header_version(&header(3)), Ok((0, 3)));
    }

    #[test]
    fn version_1_rejects_entries_that_do_not_tile() {
        let o = WriteOrigin { time_ns: 1, pid: 1 };
        let good = encode_with_origin(Level::Info, b"p", b"s", &[(o, b"abc")]);
        // An entry claiming more bytes than the frame holds.
        let mut long = good.clone();
        let at = HEADER_LEN + 6 + 12;
        long[at..at + 4].copy_from_slice(&100u32.to_ne_bytes());
        // A frame whose data ends inside an entry header.
        let mut cut = good[..good.len() - 3 - ENTRY_HEADER + 5].to_vec();
        let body = (cut.len() - HEADER_LEN) as i32;
        cut[4..8].copy_from_slice(&body.to_ne_bytes());
        // Huge lengths must not overflow.
        let mut huge = good.clone();
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_ne_bytes());
        for bad in [long, cut, huge] {
            let mut d = Decoder::new();
            assert_eq!(d.feed(&bad, |_| {}), Err(FrameError::BadEntry));
        }
        let mut d = Decoder::new();
        assert_eq!(d.feed(&good, |_| {}), Ok(()));
    }

    #[test]
    fn drop_notice_round_trip() {
        let n = DropNotice {
            bytes: 12345,
            writes: 7,
            source: b"/var/log/app.log",
        };
        let mut buf = [0u8; 128];
        let len = n.write(&mut buf).unwrap();
        let parsed = DropNotice::parse(&buf[..len]).unwrap();
        assert_eq!(
            parsed,
            DropNotice {
                bytes: 12345,
                writes: 7,
                source: b"var/log/app.log"
            }
        );
        assert!(DropNotice::parse(b"hello").is_none());
        // Two notices (or a notice and more) are not one notice.
        assert!(DropNotice::parse(
            b"logtap: dropped bytes=1 writes=1 source=stdout\nlogtap: dropped bytes=2 writes=1 source=stderr\n"
        )
        .is_none());
    }

    #[test]
    fn level_parsing() {
        assert_eq!(Level::parse(b"3"), Some(Level::Info));
        assert_eq!(Level::parse(b"warning"), Some(Level::Warn));
        assert_eq!(Level::parse(b"7"), None);
        assert_eq!(Level::parse(b"loud"), None);
    }
}
