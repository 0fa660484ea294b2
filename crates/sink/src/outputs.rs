//! Outputs: the `--output SPEC` parser, levels, `--filter`s,
//! `--level-prefix`, and the fan-out of records to independent outputs.
//!
//! With one output writing to stdout (`json` or `text`, the default), the
//! records are formatted inline by the event loop, as they always were: a
//! slow stdout reader slows the sink down and liblogtap's flow control
//! takes over. Any other set of outputs runs each output on a thread of
//! its own behind a bounded queue (`--output-buffer` bytes): the event loop
//! copies records into a batch and shares each full batch with every
//! queue. The loop never waits for an output: a full queue drops the
//! batch for that output only and counts what it would have taken; the
//! output later writes a record saying how much was lost, at the place of
//! the gap, and the sink says so on stderr. Bursts are absorbed by the
//! queue (`--output-buffer`); an output slower than the input for longer
//! than its queue lasts loses the excess, whether it is slow, stuck or
//! gone, and never sets the pace of the connections or of the other
//! outputs. Memory is bounded by the number of outputs
//! times `--output-buffer`.
//!
//! Why threads and not the `mio` loop: destinations block in different
//! ways (a file on a full or slow disk, a syslog daemon that stops
//! reading, DNS and TCP connects, a Unix datagram socket whose queue is
//! full), and regular files cannot be made non-blocking at all. A thread
//! per output with blocking I/O plus time-outs keeps each destination
//! simple and can never stall the loop that reads the connections; the
//! handful of outputs a sink has makes the thread count irrelevant.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use globset::{Glob, GlobMatcher};
use logtap_wire::{DropNotice, Level};

use crate::dest::{self, Dest, Failure};
use crate::encode::syslog::SyslogFormat;
use crate::encode::{Format, LineEncoder, Record};
use crate::output::{Clock, Emit, Origin, Output};
use crate::warn;

/// Level number meaning "everything", unknown levels included.
pub const ALL: u32 = Level::All as u32;

/// Where a syslog destination sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Unix datagram socket (`/dev/log`).
    Unix(PathBuf),
    /// `HOST:PORT`, one message per datagram.
    Udp(String),
    /// `HOST:PORT`, RFC 6587 octet counting.
    Tcp(String),
}

/// What an output is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// stdout, JSON or text.
    Stdout(Format),
    /// `DIR/<platform>/<source>`, rotated.
    Files(PathBuf),
    Syslog(Transport),
    /// The memory ring with its query socket.
    Ring,
}

/// One `--output SPEC`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Records at this level or more severe (smaller number) are taken.
    pub level: u32,
    pub kind: Kind,
    /// The spec as given, for messages.
    pub text: String,
}

/// Checks `HOST:PORT` (`[v6]:PORT` allowed).
fn host_port(s: &str) -> Result<String, String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(s.to_owned()),
        _ => Err(format!("{port:?} is not a port number")),
    }
}

impl Spec {
    /// `[LEVEL:]KIND[:ARGS]`; LEVEL a logserver level name or number 0–6.
    pub fn parse(s: &str) -> Result<Spec, String> {
        let bad = |why: String| Err(format!("--output {s:?}: {why}"));
        let (level, rest) = match s.split_once(':') {
            Some((l, rest)) if Level::parse(l.as_bytes()).is_some() => {
                (Level::parse(l.as_bytes()).map_or(ALL, |l| l as u32), rest)
            }
            _ => (ALL, s),
        };
        let (kind, args) = match rest.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (rest, None),
        };
        let kind = match (kind, args) {
            ("json", None) => Kind::Stdout(Format::Json),
            ("text", None) => Kind::Stdout(Format::Text),
            ("ring", None) => Kind::Ring,
            ("file", Some(dir)) if !dir.is_empty() => Kind::Files(PathBuf::from(dir)),
            ("file", _) => return bad("file wants a directory: file:DIR".into()),
            ("syslog", None) => Kind::Syslog(Transport::Unix(PathBuf::from("/dev/log"))),
            ("syslog", Some(a)) => match a.split_once(':') {
                Some(("unix", p)) if !p.is_empty() => Kind::Syslog(Transport::Unix(p.into())),
                Some(("udp", hp)) => match host_port(hp) {
                    Ok(hp) => Kind::Syslog(Transport::Udp(hp)),
                    Err(e) => return bad(e),
                },
                Some(("tcp", hp)) => match host_port(hp) {
                    Ok(hp) => Kind::Syslog(Transport::Tcp(hp)),
                    Err(e) => return bad(e),
                },
                _ => return bad("syslog wants unix:PATH, udp:HOST:PORT or tcp:HOST:PORT".into()),
            },
            ("json" | "text" | "ring", Some(_)) => return bad(format!("{kind} takes no argument")),
            _ => {
                return bad(format!(
                    "unknown output {kind:?} (json, text, file:DIR, syslog:unix:PATH, \
                     syslog:udp:HOST:PORT, syslog:tcp:HOST:PORT, ring; a LEVEL: prefix \
                     is FATAL ERROR WARN INFO DEBUG TRACE ALL or 0-6)"
                ))
            }
        };
        Ok(Spec {
            level,
            kind,
            text: s.to_owned(),
        })
    }
}

/// `--filter LEVEL:MATCH`: records whose source or platform matches the
/// glob MATCH are kept only at LEVEL or more severe. The first matching
/// filter decides.
#[derive(Clone, Debug)]
pub struct Filter {
    pub level: u32,
    matcher: GlobMatcher,
}

impl Filter {
    pub fn parse(s: &str) -> Result<Filter, String> {
        let (l, m) = s
            .split_once(':')
            .ok_or_else(|| format!("--filter {s:?}: wants LEVEL:MATCH"))?;
        let level = Level::parse(l.as_bytes())
            .ok_or_else(|| format!("--filter {s:?}: {l:?} is not a level (FATAL ERROR WARN INFO DEBUG TRACE ALL or 0-6)"))?;
        if m.is_empty() {
            return Err(format!("--filter {s:?}: empty MATCH"));
        }
        let matcher = Glob::new(m)
            .map_err(|e| format!("--filter {s:?}: {e}"))?
            .compile_matcher();
        Ok(Filter {
            level: level as u32,
            matcher,
        })
    }

    fn matches(&self, name: &[u8]) -> bool {
        match std::str::from_utf8(name) {
            Ok(s) => self.matcher.is_match(s),
            Err(_) => self.matcher.is_match(&*String::from_utf8_lossy(name)),
        }
    }
}

/// True when a record at `level` passes an output or filter at `limit`.
pub fn passes(level: u32, limit: u32) -> bool {
    limit >= ALL || level <= limit
}

/// journald's convention (sd-daemon.h): a line starting with `<0>`…`<7>`
/// has that syslog severity. Returns the logserver level and the rest.
pub fn level_prefix(text: &[u8]) -> Option<(u32, &[u8])> {
    match text {
        [b'<', d @ b'0'..=b'7', b'>', rest @ ..] => {
            let level = match d - b'0' {
                0..=2 => Level::Fatal,
                3 => Level::Error,
                4 => Level::Warn,
                5 | 6 => Level::Info,
                _ => Level::Debug,
            };
            Some((level as u32, rest))
        }
        _ => None,
    }
}

/// Everything about outputs that the command line sets.
#[derive(Clone, Debug)]
pub struct Settings {
    pub specs: Vec<Spec>,
    pub filters: Vec<Filter>,
    pub level_prefix: bool,
    pub max_file_size: u64,
    pub max_files: usize,
    pub file_format: Format,
    /// `None`: RFC 3164 on Unix sockets, RFC 5424 on UDP and TCP.
    pub syslog_format: Option<SyslogFormat>,
    pub syslog_facility: u8,
    pub ring_lines: usize,
    pub ring_size: usize,
    pub query_socket: PathBuf,
    /// Bytes one output's queue may hold.
    pub output_buffer: usize,
    /// `pod_name` and co. for JSON.
    pub extra: Vec<(&'static str, String)>,
}

/// A record copied into a batch: 28 bytes beside its text. Origins (one
/// per read, shared by its lines), names (shared by consecutive records
/// of a source) and drop notices (rare) are kept once in side tables, so
/// that a queue's budget is spent on text: measured, a burst of 20-byte
/// lines costs 47 bytes a record in a queue (it cost 160 with every field
/// in each record and the vectors' doubling slack).
#[derive(Clone, Copy)]
struct Rec {
    origin: u32,
    names: u32,
    level: u32,
    text: (u32, u32),
    /// `partial` (bit 0) and `cont` (bit 1).
    flags: u8,
    /// Index into `drops`, or `NONE`.
    dropped: u32,
}

const NONE: u32 = u32::MAX;

/// Records shared by all outputs' queues.
#[derive(Default)]
pub struct Batch {
    data: Vec<u8>,
    recs: Vec<Rec>,
    origins: Vec<Origin>,
    /// (platform, source) offsets in `data`.
    names: Vec<((u32, u32), (u32, u32))>,
    /// (bytes, writes, source) of a drop notice.
    drops: Vec<(u64, u64, (u32, u32))>,
}

impl Batch {
    /// A batch with room for a full one, so that filling it does not
    /// reallocate and copy.
    fn new() -> Batch {
        Batch {
            data: Vec::with_capacity(BATCH_BYTES + BATCH_BYTES / 4),
            recs: Vec::with_capacity(BATCH_RECORDS),
            ..Batch::default()
        }
    }

    fn put(&mut self, s: &[u8]) -> (u32, u32) {
        let a = self.data.len();
        self.data.extend_from_slice(s);
        (a as u32, self.data.len() as u32)
    }

    fn bytes(&self, (a, b): (u32, u32)) -> &[u8] {
        &self.data[a as usize..b as usize]
    }

    fn push(&mut self, r: &Record<'_>) {
        if self.origins.last() != Some(r.origin) {
            self.origins.push(*r.origin);
        }
        let same = self
            .names
            .last()
            .is_some_and(|&(p, s)| self.bytes(p) == r.platform && self.bytes(s) == r.source);
        if !same {
            let p = self.put(r.platform);
            let s = self.put(r.source);
            self.names.push((p, s));
        }
        let text = self.put(r.text);
        let dropped = match &r.dropped {
            Some(n) => {
                let src = self.put(n.source);
                self.drops.push((n.bytes, n.writes, src));
                (self.drops.len() - 1) as u32
            }
            None => NONE,
        };
        self.recs.push(Rec {
            origin: (self.origins.len() - 1) as u32,
            names: (self.names.len() - 1) as u32,
            level: r.level,
            text,
            flags: u8::from(r.partial) | (u8::from(r.cont) << 1),
            dropped,
        });
    }

    fn get(&self, i: usize) -> (Record<'_>, usize) {
        let r = &self.recs[i];
        let (p, s) = self.names[r.names as usize];
        let text = self.bytes(r.text);
        (
            Record {
                origin: &self.origins[r.origin as usize],
                level: r.level,
                platform: self.bytes(p),
                source: self.bytes(s),
                text,
                partial: r.flags & 1 != 0,
                cont: r.flags & 2 != 0,
                dropped: (r.dropped != NONE).then(|| {
                    let (bytes, writes, src) = self.drops[r.dropped as usize];
                    DropNotice {
                        bytes,
                        writes,
                        source: self.bytes(src),
                    }
                }),
            },
            text.len(),
        )
    }

    pub fn len(&self) -> usize {
        self.recs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    /// Gives back unused room before the batch is queued.
    fn shrink(&mut self) {
        self.data.shrink_to_fit();
        self.recs.shrink_to_fit();
        self.origins.shrink_to_fit();
        self.names.shrink_to_fit();
        self.drops.shrink_to_fit();
    }

    /// Heap bytes, for the queues' budgets.
    fn weight(&self) -> usize {
        use std::mem::size_of;
        self.data.capacity()
            + self.recs.capacity() * size_of::<Rec>()
            + self.origins.capacity() * size_of::<Origin>()
            + self.names.capacity() * size_of::<((u32, u32), (u32, u32))>()
            + self.drops.capacity() * size_of::<(u64, u64, (u32, u32))>()
    }
}

/// Records and bytes lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lost {
    pub records: u64,
    pub bytes: u64,
}

impl Lost {
    pub fn add(&mut self, o: Lost) {
        self.records += o.records;
        self.bytes += o.bytes;
    }
    pub fn any(&self) -> bool {
        self.records > 0
    }
}

struct QState {
    items: VecDeque<(Arc<Batch>, Lost)>,
    bytes: usize,
    closed: bool,
    /// Dropped since the last batch that got in; travels with the next one.
    lost: Lost,
    /// Dropping now (one stderr line per episode).
    dropping: bool,
}

/// One output's bounded queue.
struct Queue {
    name: String,
    level: u32,
    limit: usize,
    st: Mutex<QState>,
    /// Signalled on push and close, for the output.
    cv: Condvar,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QState> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `b`, or drops it (counting what this output would have
    /// taken). Never waits: one output must not set the pace of the
    /// connections or of the other outputs.
    fn push(&self, b: &Arc<Batch>) {
        let w = b.weight();
        let mut st = self.lock();
        if st.bytes + w > self.limit && !st.items.is_empty() {
            let mut lost = Lost::default();
            for i in 0..b.len() {
                let (r, n) = b.get(i);
                if passes(r.level, self.level) {
                    lost.records += 1;
                    lost.bytes += n as u64;
                }
            }
            if lost.any() {
                st.lost.add(lost);
                if !st.dropping {
                    st.dropping = true;
                    warn!(
                        "output {}: {} bytes buffered (--output-buffer), output not keeping up; dropping records",
                        self.name, st.bytes
                    );
                }
            }
            return;
        }
        let lost = std::mem::take(&mut st.lost);
        st.dropping = false;
        st.bytes += w;
        st.items.push_back((Arc::clone(b), lost));
        drop(st);
        self.cv.notify_all();
    }

    /// The next batch, waiting for one; `None` once closed and empty.
    fn pop(&self) -> Option<(Arc<Batch>, Lost)> {
        let mut st = self.lock();
        loop {
            if let Some((b, lost)) = st.items.pop_front() {
                st.bytes -= b.weight();
                return Some((b, lost));
            }
            if st.closed {
                // Drops after the last batch.
                let lost = std::mem::take(&mut st.lost);
                return lost.any().then(|| (Arc::new(Batch::default()), lost));
            }
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }

    fn closed(&self) -> bool {
        self.lock().closed
    }

    fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_all();
    }

    /// Sleeps up to `d`, or less if the queue is closed meanwhile.
    fn sleep(&self, d: Duration) {
        let st = self.lock();
        if !st.closed {
            let _ = self.cv.wait_timeout_while(st, d, |s| !s.closed);
        }
    }
}

/// Time between attempts to reach a destination that is down.
const RETRY: Duration = Duration::from_secs(1);

/// The loop of one output's thread.
fn run_output(q: &Queue, mut dest: Box<dyn Dest>) {
    let mut clock = Clock::new();
    let mut lost = Lost::default();
    let mut down = false;
    // The sink is stopping and this output is down: the rest is counted
    // as lost without further attempts (each would wait a reconnect
    // interval), and reported once below.
    let mut gave_up = false;
    let mut said = Said::default();
    while let Some((batch, before)) = q.pop() {
        lost.add(before);
        if !gave_up && down && q.closed() {
            gave_up = true;
        }
        if gave_up {
            lost.add(rest_of(&batch, 0, q.level));
            continue;
        }
        'recs: for i in 0..batch.len() {
            let (r, n) = batch.get(i);
            if !passes(r.level, q.level) {
                continue;
            }
            loop {
                // What was lost goes first, where the gap is (including
                // what a buffered write that failed just lost).
                lost.add(dest.take_lost());
                if lost.any() {
                    // What is buffered is written out first: the notice
                    // then reports all of the gap, and it is alone in the
                    // destination's buffer, so the flush after it tells
                    // whether it arrived.
                    flush_said(q, &mut *dest, down);
                    lost.add(dest.take_lost());
                    let (origin, text) = lost_notice(&mut clock, &q.name, lost);
                    let rec = Record {
                        origin: &origin,
                        level: Level::Warn as u32,
                        platform: b"logtap-sink",
                        source: b"logtap",
                        text: text.as_bytes(),
                        partial: false,
                        cont: false,
                        dropped: Some(DropNotice {
                            bytes: lost.bytes,
                            writes: lost.records,
                            source: q.name.as_bytes(),
                        }),
                    };
                    // If the notice is lost in turn, so is what it reports
                    // (the destination counts it again). Taken is not
                    // arrived for a destination that buffers: stderr says
                    // the loss once the notice is written out, so that it
                    // says each loss once, as the notices do (saying it
                    // when the notice was merely buffered said a full
                    // disk's growing total again at every failed write).
                    match dest.write(&rec, lost) {
                        Ok(()) => {
                            flush_said(q, &mut *dest, down);
                            let again = dest.take_lost();
                            if again.any() {
                                // The notice was the last thing buffered:
                                // it is in `again`, with what it reported.
                                lost = again;
                            } else {
                                said.add(q, lost);
                                lost = Lost::default();
                            }
                        }
                        Err(Failure::Drop(_)) => {}
                        Err(Failure::Down(why)) => {
                            if went_down(q, &mut down, &why) {
                                lost.add(rest_of(&batch, i, q.level));
                                gave_up = true;
                                break 'recs;
                            }
                            continue;
                        }
                    }
                }
                let w = Lost {
                    records: 1,
                    bytes: n as u64,
                };
                match dest.write(&r, w) {
                    Ok(()) => {
                        if down {
                            warn!("output {}: delivering again", q.name);
                            down = false;
                        }
                        break;
                    }
                    Err(Failure::Drop(why)) => {
                        if let Some(why) = why {
                            warn!("output {}: {why}", q.name);
                        }
                        lost.add(w);
                        break;
                    }
                    Err(Failure::Down(why)) => {
                        if went_down(q, &mut down, &why) {
                            lost.add(rest_of(&batch, i, q.level));
                            gave_up = true;
                            break 'recs;
                        }
                    }
                }
            }
        }
        lost.add(dest.take_lost());
        if q.is_empty() {
            if let Err(e) = dest.flush() {
                warn!("output {}: {e}", q.name);
            }
            lost.add(dest.take_lost());
        }
    }
    // A daemon that is slow but alive gets a few more chances.
    if gave_up || (0..3).all(|_| dest.flush().is_err()) {
        lost.add(dest.abandon());
    }
    lost.add(dest.take_lost());
    said.flush(q);
    if lost.any() {
        warn!(
            "output {}: sink stopping; records={} bytes={} not delivered",
            q.name, lost.records, lost.bytes
        );
    }
}

/// Drop records that reached the output, said on stderr: at once, unless
/// one was said less than [`QUIET`] ago; then added up and said after
/// that (or when the sink stops), so that records refused one by one
/// (each with its own drop record) cannot flood stderr.
#[derive(Default)]
struct Said {
    unsaid: Lost,
    at: Option<std::time::Instant>,
}

/// Least time between two drop reports of one output on stderr.
const QUIET: Duration = Duration::from_secs(10);

impl Said {
    fn add(&mut self, q: &Queue, l: Lost) {
        self.unsaid.add(l);
        if self.at.is_none_or(|t| t.elapsed() >= QUIET) {
            self.flush(q);
        }
    }

    fn flush(&mut self, q: &Queue) {
        if self.unsaid.any() {
            warn!(
                "output {}: logtap-sink: dropped records={} bytes={} output={}",
                q.name, self.unsaid.records, self.unsaid.bytes, q.name
            );
            self.unsaid = Lost::default();
            self.at = Some(std::time::Instant::now());
        }
    }
}

/// Writes out what `dest` buffers; an error is said (destinations say a
/// failure once per episode; one that is down was said already), what it
/// lost is in `dest.take_lost()`.
fn flush_said(q: &Queue, dest: &mut dyn Dest, down: bool) {
    if let Err(e) = dest.flush() {
        if down {
            return;
        }
        warn!("output {}: {e}", q.name);
    }
}

/// The destination is down: says so once, and waits before the next try.
/// True when the sink is stopping (nothing more will be tried).
fn went_down(q: &Queue, down: &mut bool, why: &str) -> bool {
    if !*down {
        warn!(
            "output {}: {why}; retrying every {} s, buffering up to --output-buffer",
            q.name,
            RETRY.as_secs()
        );
        *down = true;
    }
    if q.closed() {
        return true;
    }
    q.sleep(RETRY);
    false
}

/// What records `from..` of `b` would have given this output.
fn rest_of(b: &Batch, from: usize, level: u32) -> Lost {
    let mut lost = Lost::default();
    for j in from..b.len() {
        let (r, n) = b.get(j);
        if passes(r.level, level) {
            lost.records += 1;
            lost.bytes += n as u64;
        }
    }
    lost
}

fn lost_notice(clock: &mut Clock, name: &str, lost: Lost) -> (Origin, String) {
    (
        Origin {
            ts: clock.now(),
            pid: Some(std::process::id()),
            peer_pid: None,
            // The sink's own record: its own uid.
            uid: Some(crate::peercred::own_uid()),
        },
        format!(
            "logtap-sink: dropped records={} bytes={} output={name}",
            lost.records, lost.bytes
        ),
    )
}

/// Where the event loop's records go.
pub struct Fanout {
    level_prefix: bool,
    filters: Vec<Filter>,
    /// (platform, source) → level limit from the filters.
    filter_cache: HashMap<(Vec<u8>, Vec<u8>), u32>,
    filter_last: Option<(Vec<u8>, Vec<u8>, u32)>,
    inline: Option<(Output<File>, u32)>,
    queues: Vec<Arc<Queue>>,
    /// Least severe level any output takes.
    widest: u32,
    batch: Batch,
    threads: Vec<JoinHandle<()>>,
    cleanup: Vec<Box<dyn FnOnce() + Send>>,
}

/// A batch is handed to the outputs at this size, or when the loop waits.
const BATCH_BYTES: usize = 256 * 1024;
const BATCH_RECORDS: usize = 4096;

impl Fanout {
    /// Starts the outputs; `stdout` is the sink's own handle on fd 1. An
    /// output that cannot start (a directory that cannot be created, a
    /// query socket that cannot be bound) is an error naming it.
    pub fn start(s: &Settings, stdout: File) -> Result<Fanout, String> {
        let extra: Vec<(&str, &str)> = s.extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut f = Fanout {
            level_prefix: s.level_prefix,
            filters: s.filters.clone(),
            filter_cache: HashMap::new(),
            filter_last: None,
            inline: None,
            queues: Vec::new(),
            widest: 0,
            batch: Batch::new(),
            threads: Vec::new(),
            cleanup: Vec::new(),
        };
        if let [Spec {
            level,
            kind: Kind::Stdout(format),
            ..
        }] = s.specs.as_slice()
        {
            f.inline = Some((Output::new(*format, &extra, stdout), *level));
            return Ok(f);
        }
        let mut stdout = Some(stdout);
        for spec in &s.specs {
            let dest: Box<dyn Dest> = match &spec.kind {
                Kind::Stdout(format) => {
                    let Some(out) = stdout.take() else {
                        return Err(format!(
                            "--output {:?}: stdout is used by another output",
                            spec.text
                        ));
                    };
                    Box::new(dest::stdout::Stdout::new(
                        LineEncoder::new(*format, &extra),
                        out,
                    ))
                }
                Kind::Files(dir) => Box::new(
                    dest::files::Files::new(
                        dir,
                        LineEncoder::new(s.file_format, &extra),
                        s.max_file_size,
                        s.max_files,
                    )
                    .map_err(|e| format!("--output {:?}: {e}", spec.text))?,
                ),
                Kind::Syslog(t) => {
                    // A local socket gets what the C library's syslog()
                    // sends there (RFC 3164 without HOSTNAME), the one form
                    // every /dev/log reader parses (rsyslog, syslog-ng,
                    // journald, busybox); the network gets RFC 5424.
                    let local = matches!(t, Transport::Unix(_));
                    let format = s.syslog_format.unwrap_or(if local {
                        SyslogFormat::Rfc3164
                    } else {
                        SyslogFormat::Rfc5424
                    });
                    let enc = crate::encode::syslog::Syslog::new(format, s.syslog_facility);
                    let enc = if local { enc.local() } else { enc };
                    Box::new(dest::syslog::SyslogDest::new(t.clone(), enc))
                }
                Kind::Ring => {
                    let (ring, remove) = dest::ring::Ring::start(
                        &s.query_socket,
                        s.ring_lines,
                        s.ring_size,
                        LineEncoder::new(Format::Json, &extra),
                    )
                    .map_err(|e| format!("--output {:?}: {e}", spec.text))?;
                    f.cleanup.push(remove);
                    Box::new(ring)
                }
            };
            let q = Arc::new(Queue {
                name: spec.text.clone(),
                level: spec.level,
                limit: s.output_buffer,
                st: Mutex::new(QState {
                    items: VecDeque::new(),
                    bytes: 0,
                    closed: false,
                    lost: Lost::default(),
                    dropping: false,
                }),
                cv: Condvar::new(),
            });
            let q2 = Arc::clone(&q);
            let t = std::thread::Builder::new()
                .name(format!("output {}", spec.text))
                .spawn(move || run_output(&q2, dest))
                .map_err(|e| format!("--output {:?}: cannot start a thread: {e}", spec.text))?;
            f.widest = f.widest.max(spec.level);
            f.queues.push(q);
            f.threads.push(t);
        }
        Ok(f)
    }

    /// Level limit the filters set for this record's names.
    fn filter_limit(&mut self, platform: &[u8], source: &[u8]) -> u32 {
        // Consecutive records mostly share their names: no allocation then.
        if let Some((p, s, l)) = &self.filter_last {
            if p == platform && s == source {
                return *l;
            }
        }
        let l = self.filter_lookup(platform, source);
        self.filter_last = Some((platform.to_vec(), source.to_vec(), l));
        l
    }

    fn filter_lookup(&mut self, platform: &[u8], source: &[u8]) -> u32 {
        let key = (platform.to_vec(), source.to_vec());
        if let Some(l) = self.filter_cache.get(&key) {
            return *l;
        }
        let l = self
            .filters
            .iter()
            .find(|f| f.matches(source) || f.matches(platform))
            .map_or(ALL, |f| f.level);
        if self.filter_cache.len() >= 4096 {
            self.filter_cache.clear();
        }
        self.filter_cache.insert(key, l);
        l
    }

    fn dispatch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let mut b = std::mem::replace(&mut self.batch, Batch::new());
        b.shrink();
        let b = Arc::new(b);
        for q in &self.queues {
            q.push(&b);
        }
    }

    /// Stops the outputs: hands over what is batched, lets each output
    /// write what it holds (an output that is down gives up at once and
    /// reports what it could not deliver), and waits for them.
    pub fn finish(&mut self) {
        self.dispatch();
        for q in &self.queues {
            q.close();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for c in self.cleanup.drain(..) {
            c();
        }
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Emit for Fanout {
    fn record(&mut self, r: &Record<'_>) {
        let mut r = r.clone();
        // Only a line's start may carry the prefix: a continuation piece
        // of a long line starting with `<3>` is text.
        if self.level_prefix && r.dropped.is_none() && !r.cont {
            if let Some((level, rest)) = level_prefix(r.text) {
                r.level = level;
                r.text = rest;
            }
        }
        if !self.filters.is_empty() && !passes(r.level, self.filter_limit(r.platform, r.source)) {
            return;
        }
        if let Some((out, level)) = &mut self.inline {
            if passes(r.level, *level) {
                out.record(&r);
            }
            return;
        }
        if !passes(r.level, self.widest) {
            return;
        }
        self.batch.push(&r);
        if self.batch.data.len() >= BATCH_BYTES || self.batch.len() >= BATCH_RECORDS {
            self.dispatch();
        }
    }

    fn failed(&self) -> bool {
        self.inline.as_ref().is_some_and(|(o, _)| o.failed())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inline {
            Some((o, _)) => o.flush(),
            None => {
                self.dispatch();
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let s = Spec::parse("file:/var/log/logtap").unwrap();
        assert_eq!(
            (s.level, s.kind),
            (ALL, Kind::Files("/var/log/logtap".into()))
        );
        let s = Spec::parse("WARN:syslog:unix:/dev/log").unwrap();
        assert_eq!(
            (s.level, s.kind),
            (2, Kind::Syslog(Transport::Unix("/dev/log".into())))
        );
        let s = Spec::parse("1:syslog:tcp:127.0.0.1:514").unwrap();
        assert_eq!(
            (s.level, s.kind),
            (1, Kind::Syslog(Transport::Tcp("127.0.0.1:514".into())))
        );
        let s = Spec::parse("info:syslog:udp:[::1]:514").unwrap();
        assert_eq!(
            (s.level, s.kind),
            (3, Kind::Syslog(Transport::Udp("[::1]:514".into())))
        );
        assert_eq!(
            Spec::parse("json").unwrap().kind,
            Kind::Stdout(Format::Json)
        );
        assert_eq!(Spec::parse("DEBUG:text").unwrap().level, 4);
        assert_eq!(Spec::parse("ring").unwrap().kind, Kind::Ring);
        for bad in [
            "",
            "xml",
            "file",
            "file:",
            "syslog:tcp:host",
            "syslog:tcp:host:0",
            "syslog:tcp::514",
            "syslog:sctp:h:1",
            "json:x",
            "LOUD:json",
            "7:json",
        ] {
            let e = Spec::parse(bad).unwrap_err();
            assert!(e.starts_with(&format!("--output {bad:?}")), "{e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn filters_and_prefix() {
        let f = Filter::parse("ERROR:var/log/*").unwrap();
        assert_eq!(f.level, 1);
        assert!(f.matches(b"var/log/app.log"));
        assert!(f.matches(b"var/log/x/y.log"));
        assert!(!f.matches(b"stdout"));
        assert!(Filter::parse("ERROR").is_err());
        assert!(Filter::parse("LOUD:x").is_err());
        assert!(Filter::parse("ERROR:").is_err());
        assert!(Filter::parse("ERROR:a[").is_err());
        assert_eq!(level_prefix(b"<3>boom"), Some((1, &b"boom"[..])));
        assert_eq!(level_prefix(b"<4>"), Some((2, &b""[..])));
        assert_eq!(level_prefix(b"<5>n"), Some((3, &b"n"[..])));
        assert_eq!(level_prefix(b"<7>d"), Some((4, &b"d"[..])));
        assert_eq!(level_prefix(b"<0>e"), Some((0, &b"e"[..])));
        assert_eq!(level_prefix(b"<8>x"), None);
        assert_eq!(level_prefix(b"<3x"), None);
        assert!(passes(9, ALL));
        assert!(!passes(3, 2));
        assert!(passes(2, 2));
    }
}
