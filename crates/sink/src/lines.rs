//! Reassembly of frame data into lines, per (platform, source) of one
//! connection.
//!
//! Frames carry arbitrary slices of a program's output: a line may be cut
//! across frames, and one frame may carry many lines. [`LineBuffers`] keeps
//! the unfinished tail of each source and hands every complete line to a
//! callback exactly once, without its `\n` (all other bytes, `\r`
//! included, are kept exactly).
//!
//! Bounds: a line longer than `max_line` bytes is emitted in pieces of
//! `max_line` bytes marked `partial` (the last piece is not marked), so a
//! buffer never holds more than `max_line` bytes; at most [`MAX_SOURCES`]
//! sources are tracked per connection (a new one beyond that first flushes
//! and forgets an old one). Nothing is ever dropped.

use logtap_wire::WriteOrigin;
use memchr::memchr;

/// Sources tracked at once per connection. liblogtap uses four (stdout,
/// stderr, one log file, its own notices).
pub const MAX_SOURCES: usize = 16;

/// Buffers larger than this are shrunk back once they are nearly empty, so
/// a connection that once saw a long line does not keep its memory (an
/// empty buffer is freed altogether).
const SHRINK_ABOVE: usize = 64 * 1024;
const SHRINK_TO: usize = 4 * 1024;

/// One line (or piece of a long line) ready for output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line<'a> {
    /// Numeric level of the frame that started the line.
    pub level: u32,
    /// Time and pid of the write that started the line, when the frame
    /// said (version 1).
    pub origin: Option<WriteOrigin>,
    pub platform: &'a [u8],
    pub source: &'a [u8],
    /// The line's bytes, without the terminating `\n`.
    pub text: &'a [u8],
    /// True when this is a `max_line`-sized piece of a longer line and more
    /// of the same line follows.
    pub partial: bool,
    /// True when this piece continues a line whose start was emitted
    /// before (as a `partial` piece): only a line's start is a line start
    /// for `--level-prefix`.
    pub cont: bool,
}

struct SourceBuf {
    platform: Vec<u8>,
    source: Vec<u8>,
    /// Level of the frame that contributed the first pending byte.
    level: u32,
    /// Origin of the write that contributed the first pending byte.
    origin: Option<WriteOrigin>,
    pending: Vec<u8>,
    /// The next piece continues a line whose start was emitted.
    cont: bool,
}

/// Per-source line buffers of one connection.
pub struct LineBuffers {
    max_line: usize,
    sources: Vec<SourceBuf>,
}

impl LineBuffers {
    /// `max_line` is clamped to at least 1.
    pub fn new(max_line: usize) -> LineBuffers {
        LineBuffers {
            max_line: max_line.max(1),
            sources: Vec::new(),
        }
    }

    /// Adds one write's data (a frame's, or one entry of a version-1
    /// frame, with its `origin`) and emits every line it completes. A line
    /// keeps the level and origin of the write that began it.
    pub fn push(
        &mut self,
        level: u32,
        platform: &[u8],
        source: &[u8],
        origin: Option<WriteOrigin>,
        data: &[u8],
        emit: &mut impl FnMut(Line<'_>),
    ) {
        if data.is_empty() {
            return;
        }
        let idx = self.slot(level, platform, source, emit);
        let max = self.max_line;
        let sb = &mut self.sources[idx];
        let mut rest = data;
        let from = (level, origin);
        // Complete lines.
        while let Some(nl) = memchr(b'\n', rest) {
            let seg = &rest[..nl];
            rest = &rest[nl + 1..];
            sb.put(seg, true, max, from, emit);
        }
        // Unterminated tail: emit full pieces, keep at most `max` bytes.
        if !rest.is_empty() {
            sb.put(rest, false, max, from, emit);
        }
        if sb.pending.is_empty() {
            // Between lines a source holds no buffer.
            if sb.pending.capacity() > 0 {
                sb.pending = Vec::new();
            }
        } else if sb.pending.capacity() > SHRINK_ABOVE && sb.pending.len() <= SHRINK_TO {
            sb.pending.shrink_to(SHRINK_TO);
        }
    }

    /// Emits every pending partial line (the connection is closing) and
    /// empties the buffers.
    pub fn flush(&mut self, emit: &mut impl FnMut(Line<'_>)) {
        for sb in &mut self.sources {
            sb.flush(emit);
        }
        self.sources.clear();
    }

    /// Emits every pending partial line marked `partial` (its line goes on
    /// in later frames) and frees the buffers: the sink sheds memory this
    /// way when its buffers are over budget. Nothing is lost.
    pub fn shed(&mut self, emit: &mut impl FnMut(Line<'_>)) {
        for sb in &mut self.sources {
            if !sb.pending.is_empty() {
                emit(sb.line(&sb.pending, (sb.level, sb.origin), true));
                sb.pending = Vec::new();
                sb.cont = true;
            }
        }
        // A source in the middle of a line stays (without a buffer), so
        // that the rest of the line is known as a continuation.
        self.sources.retain(|s| s.cont);
        self.sources.shrink_to_fit();
    }

    /// Bytes of pending (unterminated) line data.
    pub fn pending(&self) -> usize {
        self.sources.iter().map(|s| s.pending.len()).sum()
    }

    /// Bytes of heap held, approximately.
    pub fn memory(&self) -> usize {
        self.sources.capacity() * std::mem::size_of::<SourceBuf>()
            + self
                .sources
                .iter()
                .map(|s| s.pending.capacity() + s.platform.capacity() + s.source.capacity())
                .sum::<usize>()
    }

    fn slot(
        &mut self,
        level: u32,
        platform: &[u8],
        source: &[u8],
        emit: &mut impl FnMut(Line<'_>),
    ) -> usize {
        if let Some(i) = self
            .sources
            .iter()
            .position(|s| s.source == source && s.platform == platform)
        {
            return i;
        }
        if self.sources.len() >= MAX_SOURCES {
            // Forget a source: one with nothing pending if there is one,
            // else the oldest, whose partial line is emitted first.
            let victim = self
                .sources
                .iter()
                .position(|s| s.pending.is_empty() && !s.cont)
                .unwrap_or(0);
            let mut old = self.sources.remove(victim);
            old.flush(emit);
        }
        self.sources.push(SourceBuf {
            platform: platform.to_vec(),
            source: source.to_vec(),
            level,
            origin: None,
            pending: Vec::new(),
            cont: false,
        });
        self.sources.len() - 1
    }
}

/// The level and origin of the write a line began with.
type From = (u32, Option<WriteOrigin>);

impl SourceBuf {
    fn line<'a>(&'a self, text: &'a [u8], (level, origin): From, partial: bool) -> Line<'a> {
        Line {
            level,
            origin,
            platform: &self.platform,
            source: &self.source,
            text,
            partial,
            cont: self.cont,
        }
    }

    /// Appends `seg` to the pending line. With `complete`, `seg` ends the
    /// line and the whole line is emitted; otherwise only pieces that exceed
    /// `max` are.
    fn put(
        &mut self,
        mut seg: &[u8],
        complete: bool,
        max: usize,
        from: From,
        emit: &mut impl FnMut(Line<'_>),
    ) {
        if self.pending.is_empty() {
            (self.level, self.origin) = from;
        }
        // Pieces of exactly `max` bytes while more than `max` remain.
        while self.pending.len() + seg.len() > max {
            let lvl = (self.level, self.origin);
            if self.pending.is_empty() {
                emit(self.line(&seg[..max], lvl, true));
                seg = &seg[max..];
            } else {
                let take = max - self.pending.len();
                self.pending.extend_from_slice(&seg[..take]);
                seg = &seg[take..];
                emit(self.line(&self.pending, lvl, true));
                self.pending.clear();
            }
            (self.level, self.origin) = from;
            self.cont = true;
        }
        if complete {
            let lvl = (self.level, self.origin);
            if self.pending.is_empty() {
                emit(self.line(seg, lvl, false));
            } else {
                self.pending.extend_from_slice(seg);
                emit(self.line(&self.pending, lvl, false));
                self.pending.clear();
            }
            self.cont = false;
        } else {
            self.pending.extend_from_slice(seg);
        }
    }

    fn flush(&mut self, emit: &mut impl FnMut(Line<'_>)) {
        if !self.pending.is_empty() {
            emit(self.line(&self.pending, (self.level, self.origin), false));
            self.pending.clear();
        }
        self.cont = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Got = Vec<(Vec<u8>, Vec<u8>, bool)>;

    fn run(max: usize, pushes: &[(&[u8], &[u8])]) -> Got {
        let mut lb = LineBuffers::new(max);
        let mut got = Vec::new();
        let mut emit = |l: Line<'_>| got.push((l.source.to_vec(), l.text.to_vec(), l.partial));
        for (src, data) in pushes {
            lb.push(3, b"p", src, None, data, &mut emit);
        }
        lb.flush(&mut emit);
        got
    }

    fn l(src: &str, text: &str, partial: bool) -> (Vec<u8>, Vec<u8>, bool) {
        (src.as_bytes().to_vec(), text.as_bytes().to_vec(), partial)
    }

    #[test]
    fn joins_across_frames_and_interleaved_sources() {
        let got = run(
            100,
            &[
                (b"out", b"hel"),
                (b"err", b"E1\nE"),
                (b"out", b"lo\nwor"),
                (b"out", b"ld\n"),
                (b"err", b"2"),
            ],
        );
        assert_eq!(
            got,
            vec![
                l("err", "E1", false),
                l("out", "hello", false),
                l("out", "world", false),
                l("err", "E2", false)
            ]
        );
    }

    #[test]
    fn keeps_empty_lines_and_carriage_returns() {
        let got = run(100, &[(b"o", b"\n\na\r\n")]);
        assert_eq!(
            got,
            vec![l("o", "", false), l("o", "", false), l("o", "a\r", false)]
        );
    }

    #[test]
    fn splits_long_lines_at_the_bound() {
        let got = run(
            4,
            &[
                (b"o", b"abcdefghij\n"),
                (b"o", b"abcd\n"),
                (b"o", b"ab"),
                (b"o", b"cde"),
                (b"o", b"fghi"),
            ],
        );
        assert_eq!(
            got,
            vec![
                l("o", "abcd", true),
                l("o", "efgh", true),
                l("o", "ij", false),
                l("o", "abcd", false),
                l("o", "abcd", true),
                l("o", "efgh", true),
                l("o", "i", false),
            ]
        );
    }

    #[test]
    fn level_is_that_of_the_frame_starting_the_line() {
        let mut lb = LineBuffers::new(100);
        let mut got = Vec::new();
        let mut emit = |l: Line<'_>| got.push((l.level, l.text.to_vec()));
        lb.push(1, b"p", b"s", None, b"ab", &mut emit);
        lb.push(3, b"p", b"s", None, b"c\nd\n", &mut emit);
        assert_eq!(got, vec![(1, b"abc".to_vec()), (3, b"d".to_vec())]);
    }

    #[test]
    fn origin_is_that_of_the_write_starting_the_line() {
        let o = |pid| {
            Some(WriteOrigin {
                time_ns: u64::from(pid) * 1000,
                pid,
            })
        };
        let mut lb = LineBuffers::new(4);
        let mut got = Vec::new();
        let mut emit = |l: Line<'_>| got.push((l.origin.map(|o| o.pid), l.text.to_vec()));
        lb.push(3, b"p", b"s", o(1), b"ab", &mut emit);
        lb.push(3, b"p", b"s", o(2), b"c\nd", &mut emit);
        lb.push(3, b"p", b"s", o(3), b"efghij\n", &mut emit);
        lb.push(3, b"p", b"s", None, b"k", &mut emit);
        lb.flush(&mut emit);
        assert_eq!(
            got,
            vec![
                (Some(1), b"abc".to_vec()),
                (Some(2), b"defg".to_vec()),
                (Some(3), b"hij".to_vec()),
                (None, b"k".to_vec()),
            ]
        );
    }

    #[test]
    fn too_many_sources_flush_rather_than_grow() {
        let mut lb = LineBuffers::new(100);
        let mut got = Vec::new();
        let mut emit = |l: Line<'_>| got.push(l.text.to_vec());
        for i in 0..(MAX_SOURCES * 3) {
            lb.push(3, b"p", format!("s{i}").as_bytes(), None, b"x", &mut emit);
        }
        assert!(lb.sources.len() <= MAX_SOURCES);
        lb.flush(&mut emit);
        assert_eq!(got.len(), MAX_SOURCES * 3);
    }

    #[test]
    fn shedding_emits_pieces_marked_partial() {
        let got = {
            let mut lb = LineBuffers::new(100);
            let mut got = Vec::new();
            let mut emit = |l: Line<'_>| got.push((l.source.to_vec(), l.text.to_vec(), l.partial));
            lb.push(3, b"p", b"o", None, b"ab", &mut emit);
            lb.shed(&mut emit);
            // Only the names of a source in mid-line stay.
            assert!(lb.memory() < 200, "{}", lb.memory());
            assert_eq!(lb.pending(), 0);
            lb.push(3, b"p", b"o", None, b"c\n", &mut emit);
            got
        };
        assert_eq!(got, vec![l("o", "ab", true), l("o", "c", false)]);
    }

    /// Only a line's start is marked as one: the pieces after a `partial`
    /// one are continuations, also after shedding, until the line ends.
    #[test]
    fn continuation_pieces_are_marked() {
        let mut lb = LineBuffers::new(4);
        let mut got = Vec::new();
        let mut emit = |l: Line<'_>| got.push((l.text.to_vec(), l.partial, l.cont));
        lb.push(3, b"p", b"o", None, b"<3>ab<4>cd\n<5>x", &mut emit);
        lb.shed(&mut emit);
        lb.push(3, b"p", b"o", None, b"<6>y\nz\n", &mut emit);
        lb.flush(&mut emit);
        let v = |t: &str, p, c| (t.as_bytes().to_vec(), p, c);
        assert_eq!(
            got,
            vec![
                v("<3>a", true, false),
                v("b<4>", true, true),
                v("cd", false, true),
                v("<5>x", true, false),
                v("<6>y", false, true),
                v("z", false, false),
            ]
        );
    }
}
