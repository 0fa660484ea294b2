//! One byte stream of frames (a connection, or a frame file): the frame
//! decoder, the line buffers, and the routing of frames to the output.

use logtap_wire::{
    parse_header, Decoder, DropNotice, Frame, FrameError, Write, HEADER_LEN, SELF_SOURCE,
};

use crate::encode::Record;
use crate::lines::{Line, LineBuffers};
use crate::output::{Clock, Emit, Origin};

/// A malformed frame, and where it started in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamError {
    pub error: FrameError,
    /// Byte offset of the start of the bad frame.
    pub offset: u64,
}

/// Decoding state of one stream.
pub struct FrameStream {
    decoder: Decoder,
    lines: LineBuffers,
    /// Frames decoded so far.
    frames: u64,
    bounds: Boundaries,
    failed: Option<StreamError>,
    /// Formats the write times of version-1 frames.
    clock: Clock,
}

impl FrameStream {
    pub fn new(max_line: usize) -> FrameStream {
        FrameStream {
            decoder: Decoder::new(),
            lines: LineBuffers::new(max_line),
            frames: 0,
            bounds: Boundaries::default(),
            failed: None,
            clock: Clock::new(),
        }
    }

    /// Decodes `data` and emits every line it completes. After an error
    /// the stream accepts no more data (further calls return the same
    /// error), but [`FrameStream::finish`] still emits pending lines.
    pub fn feed<E: Emit>(
        &mut self,
        data: &[u8],
        origin: &Origin,
        out: &mut E,
    ) -> Result<(), StreamError> {
        self.feed_observed(data, origin, out, |_| ())
    }

    /// [`FrameStream::feed`], showing each decoded frame to `observe`
    /// before its writes are routed (a connection that shared its ring
    /// follows the frames' ring positions and read requests this way).
    pub fn feed_observed<E: Emit>(
        &mut self,
        data: &[u8],
        origin: &Origin,
        out: &mut E,
        mut observe: impl FnMut(&Frame<'_>),
    ) -> Result<(), StreamError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let lines = &mut self.lines;
        let frames = &mut self.frames;
        let clock = &mut self.clock;
        let res = self.decoder.feed(data, |f| {
            *frames += 1;
            observe(&f);
            route(f, origin, lines, clock, out);
        });
        // Follow frame boundaries up to the frame being decoded (the bad
        // one, after an error), for offsets in messages.
        self.bounds.advance(data, self.frames);
        // Between frames, give back the memory of the last split frame so
        // idle connections hold nothing.
        if res.is_ok() && !self.decoder.is_mid_frame() && self.decoder.memory() > 0 {
            self.decoder = Decoder::new();
        }
        res.map_err(|error| {
            let e = StreamError {
                error,
                offset: self.bounds.start,
            };
            self.failed = Some(e.clone());
            e
        })
    }

    /// The stream's line buffers, for writes read from somewhere other
    /// than a frame (a record recovered from a shared ring).
    pub fn router<'a, E: Emit>(&'a mut self, origin: &'a Origin, out: &'a mut E) -> Router<'a, E> {
        Router {
            lines: &mut self.lines,
            clock: &mut self.clock,
            origin,
            out,
        }
    }

    /// Ends the stream: emits the partial line of each source and returns
    /// how many bytes of an unfinished frame were discarded (0 if none).
    pub fn finish<E: Emit>(&mut self, origin: &Origin, out: &mut E) -> usize {
        let clock = &mut self.clock;
        self.lines.flush(&mut |l| emit_line(origin, &l, clock, out));
        let pending = if self.decoder.is_mid_frame() && self.failed.is_none() {
            self.decoder.pending()
        } else {
            0
        };
        self.decoder = Decoder::new();
        pending
    }

    /// Emits pending partial lines marked `partial` and frees their
    /// buffers (see [`LineBuffers::shed`]).
    pub fn shed_lines<E: Emit>(&mut self, origin: &Origin, out: &mut E) {
        let clock = &mut self.clock;
        self.lines.shed(&mut |l| emit_line(origin, &l, clock, out));
    }

    /// Bytes of an unfinished frame held.
    pub fn frame_pending(&self) -> usize {
        if self.decoder.is_mid_frame() {
            self.decoder.pending()
        } else {
            0
        }
    }

    /// Offset of the frame being received (or of the next one).
    pub fn frame_offset(&self) -> u64 {
        self.bounds.start
    }

    /// Heap bytes held by this stream.
    pub fn memory(&self) -> usize {
        self.decoder.memory() + self.lines.memory()
    }
}

/// Follows frame boundaries through the stream by their headers alone.
#[derive(Default)]
struct Boundaries {
    header: [u8; HEADER_LEN],
    fill: usize,
    /// Body bytes still to come of the current frame.
    left: usize,
    /// Index of the current frame.
    index: u64,
    /// Offset where the current frame starts.
    start: u64,
    /// Offset of the next byte.
    pos: u64,
}

impl Boundaries {
    /// Advances over `input`, but not into the frame numbered `last + 1`
    /// or past a header that does not parse.
    fn advance(&mut self, mut input: &[u8], last: u64) {
        while !input.is_empty() {
            if self.fill < HEADER_LEN {
                if self.fill == 0 && self.pos != self.start {
                    if self.index + 1 > last {
                        return;
                    }
                    self.index += 1;
                    self.start = self.pos;
                }
                let take = (HEADER_LEN - self.fill).min(input.len());
                self.header[self.fill..self.fill + take].copy_from_slice(&input[..take]);
                self.fill += take;
                self.pos += take as u64;
                input = &input[take..];
                if self.fill == HEADER_LEN {
                    match parse_header(&self.header) {
                        Ok(len) => self.left = len,
                        Err(_) => return,
                    }
                    if self.left == 0 {
                        self.fill = 0;
                    }
                }
            } else {
                let take = self.left.min(input.len());
                self.left -= take;
                self.pos += take as u64;
                input = &input[take..];
                if self.left == 0 {
                    self.fill = 0;
                }
            }
        }
    }
}

/// Where writes read from the ring go: a stream's line buffers, exactly as
/// if a frame had carried them.
pub struct Router<'a, E> {
    lines: &'a mut LineBuffers,
    clock: &'a mut Clock,
    origin: &'a Origin,
    out: &'a mut E,
}

impl<E: Emit> Router<'_, E> {
    /// Routes one write as if a frame of `level`, `platform` and `source`
    /// had carried it: it joins the partial line of its source.
    pub fn push(&mut self, level: u32, platform: &[u8], source: &[u8], w: Write<'_>) {
        route_write(
            level,
            platform,
            source,
            w,
            self.origin,
            self.lines,
            self.clock,
            self.out,
        );
    }
}

/// Emits a line with the origin of the write that began it.
fn emit_line<E: Emit>(origin: &Origin, l: &Line<'_>, clock: &mut Clock, out: &mut E) {
    out.record(&Record::line(&origin.of_write(l.origin, clock), l));
}

/// Sends each write of a frame to the line buffers, or a drop notice
/// straight to the output.
fn route<E: Emit>(
    f: Frame<'_>,
    origin: &Origin,
    lines: &mut LineBuffers,
    clock: &mut Clock,
    out: &mut E,
) {
    for w in f.writes() {
        route_write(f.level, f.platform, f.source, w, origin, lines, clock, out);
    }
}

#[allow(clippy::too_many_arguments)]
fn route_write<E: Emit>(
    level: u32,
    platform: &[u8],
    source: &[u8],
    w: Write<'_>,
    origin: &Origin,
    lines: &mut LineBuffers,
    clock: &mut Clock,
    out: &mut E,
) {
    if source != SELF_SOURCE.as_bytes() {
        lines.push(level, platform, source, w.origin, w.data, &mut |l| {
            emit_line(origin, &l, clock, out)
        });
        return;
    }
    // liblogtap's own lines, one notice each: version 0 carries the
    // notices of several sources in one frame's data, so each line is
    // read on its own (else the first would swallow the rest).
    for seg in w.data.split_inclusive(|&b| b == b'\n') {
        if let Some(n) = DropNotice::parse(seg) {
            out.record(&Record {
                origin: &origin.of_write(w.origin, clock),
                level,
                platform,
                source,
                text: seg.strip_suffix(b"\n").unwrap_or(seg),
                partial: false,
                cont: false,
                dropped: Some(n),
            });
            continue;
        }
        lines.push(level, platform, source, w.origin, seg, &mut |l| {
            emit_line(origin, &l, clock, out)
        });
    }
}
