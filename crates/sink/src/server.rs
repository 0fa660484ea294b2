//! The listening socket and the single-threaded event loop: accepting
//! connections, reading and decoding them, and shutting down on a signal.

use std::collections::VecDeque;
use std::fmt;
use std::fs;
use std::io::{self, ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdListener, UnixStream as StdStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::output::{Clock, Emit, Format, Origin};
use crate::peercred::{peer_cred, PeerCred};
use crate::policy::{Decision, Limits, Policy, Refusal};
use crate::shared_ring::{self, Ended, Life, Link, Recovery, Tokens};
use crate::spool::{self, Spool};
use crate::stream::FrameStream;
use crate::warn;

/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/logtap/sink.sock";
/// Default socket file mode: the sink's user and group may connect, other
/// users may not (see docs/sink.md for containers, where the app runs as
/// another uid: a shared group, or `--mode 0666` with `--allow-uid`).
pub const DEFAULT_MODE: u32 = 0o660;
/// Default longest line emitted as one object.
pub const DEFAULT_MAX_LINE: usize = 256 * 1024;
/// Default limit of open connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default budget for bytes buffered across all connections (unfinished
/// frames and partial lines).
pub const DEFAULT_MAX_BUFFERED: usize = 64 * 1024 * 1024;
/// Size of the one read buffer shared by all connections.
pub const READ_BUFFER: usize = 256 * 1024;

/// Reads per connection per turn of the loop, so one busy writer cannot
/// starve the others.
const READS_PER_TURN: usize = 16;
/// How long formatted lines may wait in the output buffers while the sink
/// is busy without blocking.
const BUSY_FLUSH: Duration = Duration::from_millis(50);
/// Bytes of rings one connection's read requests may have read per turn
/// (as much as its reads bring of frames, at most): a request may name a
/// whole ring (up to 1 GiB), and the other connections must get their
/// turn; what is left is read on the next.
const SERVE_PER_TURN: u64 = (READS_PER_TURN * READ_BUFFER) as u64;
/// Reads per connection when draining at shutdown (64 MiB at most), so a
/// writer that never pauses cannot keep the sink from stopping.
const READS_AT_SHUTDOWN: usize = 256;
/// Connections accepted per turn of the loop at most.
const ACCEPTS_PER_TURN: usize = 256;
/// Connections accepted but left unread until there is room, at most.
const WAITING_MAX: usize = 64;
/// Reads (of [`READ_BUFFER`]) of what a closing connection's sender had
/// already written, at most: after `shutdown(SHUT_RD)` nothing more can
/// arrive, so what is queued is bounded by the sender's socket buffer
/// (`wmem_max`, 208 KiB by default) and this bound is only reached by a
/// sender allowed a larger one.
const DRAIN_READS: usize = 64;
/// Reads per turn of the loop spent draining connections refused while too
/// many wait, so refusing a flood cannot keep the sink from the others.
const DRAIN_READS_PER_TURN: usize = 64;

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const FIRST_CONN: usize = 2;
/// Tokens of the pidfds of programs whose ring waits for their death.
const FIRST_PENDING: usize = usize::MAX / 2;
/// How often rings waiting for their program are looked at again (owner
/// word, state, and the pid when no pidfd watches it).
const PENDING_CHECK: Duration = Duration::from_millis(100);
/// How soon the spool is looked at after a connection whose ring is in
/// it ended (its program's descriptors close as it dies, the socket and
/// the ring not at the same instant).
const SPOOL_SOON: Duration = Duration::from_millis(50);
/// Complaints about rings printed per [`COMPLAINT_WINDOW`] at most; the
/// rest are counted and summarised.
const COMPLAINTS_PER_WINDOW: u32 = 20;
const COMPLAINT_WINDOW: Duration = Duration::from_secs(10);

/// Everything the server needs to know.
#[derive(Clone, Debug)]
pub struct Config {
    pub socket: PathBuf,
    /// The spool directory (`None`: no spool).
    pub spool: Option<PathBuf>,
    pub mode: u32,
    pub format: Format,
    pub max_line: usize,
    pub max_connections: usize,
    /// Budget for buffered bytes across all connections.
    pub max_buffered: usize,
    /// Who may connect, and how much one uid may hold.
    pub limits: Limits,
}

/// A peer pid for messages: the number, or `?` when unknown.
struct Pid(Option<u32>);

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, "{p}"),
            None => f.write_str("?"),
        }
    }
}

struct Conn {
    stream: UnixStream,
    pid: Option<u32>,
    /// `SO_PEERCRED` at accept: who connected.
    cred: PeerCred,
    /// When data last arrived (for the idle timeout).
    last_data: Instant,
    frames: FrameStream,
    /// Heap bytes this connection's buffers held at last count.
    held: usize,
    /// In the ready list.
    queued: bool,
    /// The program's shared ring, if it sent one.
    link: Link,
}

/// A ring whose connection ended while its program still lives: kept,
/// with the connection's partial lines, until the program dies (the ring
/// is then read), takes the ring to another connection or the deadline
/// passes (the ring is left to the program).
struct Pending {
    ended: Ended,
    frames: FrameStream,
    cred: PeerCred,
    pidfd: Option<std::os::fd::OwnedFd>,
    deadline: Instant,
    /// The pid is not visible here: read the ring at the deadline unless
    /// the program took it back (the sink closed the connection itself).
    recover_at_deadline: bool,
}

/// What to do with the ring of a connection that ended.
enum Verdict {
    /// Not the sink's: the program took it elsewhere, or may still send it.
    Leave,
    /// Read it now.
    Recover(&'static str),
    /// Ask again when the program dies or the deadline passes.
    Wait(Option<std::os::fd::OwnedFd>, bool),
}

/// Rate limit for lines about what peers sent (rings, descriptors).
struct Complaints {
    window: Instant,
    said: u32,
    held_back: u64,
}

impl Complaints {
    fn say(&mut self, cred: &PeerCred, note: &str) {
        let now = Instant::now();
        if now.duration_since(self.window) >= COMPLAINT_WINDOW {
            if self.held_back > 0 {
                warn!(
                    "{} more lines about shared rings were not printed in the last {:?}",
                    self.held_back, COMPLAINT_WINDOW
                );
            }
            self.window = now;
            self.said = 0;
            self.held_back = 0;
        }
        if self.said < COMPLAINTS_PER_WINDOW {
            self.said += 1;
            warn!(
                "connection from pid {} uid {}: {note}",
                Pid(cred.pid),
                Pid(cred.uid)
            );
        } else {
            self.held_back += 1;
        }
    }
}

enum Served {
    /// Read budget used up; more may be waiting.
    More,
    /// Nothing more to read until the next event.
    Drained,
    /// The connection is finished (EOF, error or bad frame).
    Closed(Why),
    /// Writing stdout failed.
    OutputFailed,
    /// Buffers over a budget: evict the largest holder (of this
    /// connection's uid when `true`, of all otherwise).
    OverBudget(bool),
}

enum Why {
    Eof,
    BadFrame,
    ReadError,
    OverBudget,
    Idle,
    /// Closed to make room at `--max-connections` for a uid holding fewer.
    Displaced,
}

impl Why {
    /// Closed by the policy while its sender may still be writing: what the
    /// sender had written is read and delivered before the close.
    fn drains(&self) -> bool {
        matches!(self, Why::OverBudget | Why::Idle | Why::Displaced)
    }
}

/// An accepted connection that waits for room, unread: its sender's
/// writes stay in its socket, then its flow control holds the rest.
struct Waiting {
    stream: UnixStream,
    cred: PeerCred,
}

/// Reads what the sender of `stream` had written, after shutting down
/// reading so that nothing more can arrive (its next write fails with
/// EPIPE: liblogtap keeps that data and resends an interrupted frame whole
/// on its next connection), and decodes it into `frames`. Returns the
/// reads made and the bytes left unread (a bad frame, or `max_reads`
/// reached).
#[allow(clippy::too_many_arguments)]
fn drain_queued<E: Emit>(
    stream: &UnixStream,
    frames: &mut FrameStream,
    mut link: Option<&mut Link>,
    (buf, scratch): (&mut [u8], &mut Vec<u8>),
    origin: &Origin,
    out: &mut E,
    max_reads: usize,
) -> (usize, u64) {
    let _ = stream.shutdown(std::net::Shutdown::Read);
    let mut reads = 0;
    let mut fds = Vec::new();
    while reads < max_reads && !out.failed() {
        match read_conn(stream, buf, link.as_deref_mut(), &mut fds) {
            Ok(0) => break,
            Ok(n) => {
                reads += 1;
                let res = feed_conn(frames, link.as_deref_mut(), &buf[..n], origin, out);
                if let Some(l) = link.as_deref_mut() {
                    // Answers still count: the program frees what the
                    // sink read before it goes.
                    l.serve(&mut frames.router(origin, out), scratch, u64::MAX);
                    let _ = answer(stream, l);
                }
                if res.is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    (reads, queued(stream))
}

/// One read of a connection: with `recvmsg` taking descriptors to `link`
/// when the connection was greeted, a plain read otherwise.
fn read_conn(
    stream: &UnixStream,
    buf: &mut [u8],
    link: Option<&mut Link>,
    fds: &mut Vec<std::os::fd::OwnedFd>,
) -> io::Result<usize> {
    let Some(link) = link else {
        let mut s = stream;
        return s.read(buf);
    };
    let (n, truncated) = shared_ring::recv(stream, buf, fds)?;
    if !fds.is_empty() || truncated {
        link.on_fds(std::mem::take(fds), truncated);
    }
    Ok(n)
}

/// Decodes what a connection sent, following its ring positions and
/// taking its read requests (served by `Link::serve`).
fn feed_conn<E: Emit>(
    frames: &mut FrameStream,
    link: Option<&mut Link>,
    data: &[u8],
    origin: &Origin,
    out: &mut E,
) -> Result<(), crate::stream::StreamError> {
    let Some(link) = link else {
        return frames.feed(data, origin, out);
    };
    let res = frames.feed_observed(data, origin, out, |f| link.on_frame(f));
    link.after_read(frames.frame_pending() > 0);
    res
}

/// Serves a connection's waiting read requests within what is `left` of
/// the turn's budget (a request may name up to a whole ring, and the other
/// connections must get their turn) and answers them. `Some` when the
/// service must end here: the connection broke, the output failed, or
/// requests remain for the next turn.
fn serve_requests<E: Emit>(
    conn: &mut Conn,
    origin: &Origin,
    out: &mut E,
    ring_buf: &mut Vec<u8>,
    left: &mut u64,
) -> Option<Served> {
    let (more, read) = conn
        .link
        .serve(&mut conn.frames.router(origin, out), ring_buf, *left);
    *left = left.saturating_sub(read);
    if answer(&conn.stream, &mut conn.link).is_err() {
        conn.link.broken = Some("does not read the sink's answers to its read requests".into());
    }
    if let Some(why) = conn.link.broken.take() {
        warn!("connection from pid {}: {why}; closing", Pid(conn.pid));
        return Some(Served::Closed(Why::BadFrame));
    }
    if out.failed() {
        return Some(Served::OutputFailed);
    }
    more.then_some(Served::More)
}

/// Sends the program the link's messages (see `logtap_wire::ring::SinkMsg`).
/// Err: its socket is full, so it does not read them; a program already
/// gone is no error.
fn answer(stream: &UnixStream, link: &mut Link) -> Result<(), ()> {
    use rustix::net::SendFlags;
    let mut res = Ok(());
    for r in link.replies.drain(..) {
        match rustix::net::send(stream, &r, SendFlags::NOSIGNAL | SendFlags::DONTWAIT) {
            Ok(n) if n == r.len() => {}
            Err(rustix::io::Errno::PIPE | rustix::io::Errno::CONNRESET) => break,
            _ => {
                res = Err(());
                break;
            }
        }
    }
    link.replies.clear();
    res
}

/// Bytes waiting unread in a connection's socket.
fn queued(stream: &UnixStream) -> u64 {
    rustix::io::ioctl_fionread(stream).unwrap_or(0)
}

/// The socket as bound, to remove it at exit only if it is still ours.
struct Bound {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Bound {
    fn remove(&self) {
        if let Ok(md) = fs::symlink_metadata(&self.path) {
            if md.dev() == self.dev && md.ino() == self.ino {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// Creates the socket: its directory if missing, replacing a stale socket
/// file, refusing one that a live sink serves.
fn bind(cfg: &Config) -> Result<(StdListener, Bound), String> {
    let path = &cfg.socket;
    let shown = path.display();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
    }
    match fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => match StdStream::connect(path) {
            Ok(_) => return Err(format!("{shown} is served by another running sink")),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                fs::remove_file(path)
                    .map_err(|e| format!("cannot remove stale socket {shown}: {e}"))?;
            }
            Err(e) => {
                return Err(format!(
                    "{shown} exists and cannot be probed ({e}); not replacing it"
                ))
            }
        },
        Ok(_) => {
            return Err(format!(
                "{shown} exists and is not a socket; not replacing it"
            ))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{shown}: {e}")),
    }
    let listener = bind_private(path, cfg.mode)?;
    let md = fs::symlink_metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("{shown}: {e}"))?;
    Ok((
        listener,
        Bound {
            path: path.clone(),
            dev: md.dev(),
            ino: md.ino(),
        },
    ))
}

/// Longest path a `sockaddr_un` holds (its `sun_path` less the NUL).
const SUN_PATH_MAX: usize = 107;

/// Binds and listens with the socket already at `mode` when it appears at
/// `path`. Binding at `path` and then chmod-ing it would leave the socket
/// listening for a moment with the umask's mode (0777 under umask 0), and
/// a connection made then stays. The umask cannot be narrowed around bind
/// instead: it is process-wide and the outputs' threads are running. So
/// the socket is bound inside a fresh 0700 directory next to `path`, given
/// its mode there, and hard-linked into place (link(2), unlike rename,
/// never replaces what another sink put at `path` meanwhile).
fn bind_private(path: &Path, mode: u32) -> Result<StdListener, String> {
    let shown = path.display();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if path.as_os_str().len() > SUN_PATH_MAX {
        return Err(format!(
            "cannot bind {shown}: longer than the {SUN_PATH_MAX} bytes a Unix socket address holds"
        ));
    }
    let tmp = (0u32..100)
        .find_map(|n| {
            let tmp = dir.join(format!(".logtap-sink.{}.{n}", std::process::id()));
            match fs::DirBuilder::new().mode(0o700).create(&tmp) {
                Ok(()) => Some(Ok(tmp)),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => None,
                Err(e) => Some(Err(e)),
            }
        })
        .unwrap_or_else(|| Err(io::Error::from(ErrorKind::AlreadyExists)))
        .map_err(|e| {
            format!(
                "cannot create a private directory in {}: {e}",
                dir.display()
            )
        })?;
    let result = (|| {
        // Exactly 0700 whatever the umask: the owner must be able to bind
        // inside it, nobody else may reach it.
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700))?;
        let inner = tmp.join("s");
        // A long directory name could push the inner path past sun_path;
        // the directory's fd under /proc names it in a few bytes.
        let held;
        let at = if inner.as_os_str().len() <= SUN_PATH_MAX {
            inner.clone()
        } else {
            held = fs::File::open(&tmp)?;
            PathBuf::from(format!("/proc/self/fd/{}/s", held.as_raw_fd()))
        };
        let listener = StdListener::bind(&at)?;
        fs::set_permissions(&inner, fs::Permissions::from_mode(mode))?;
        fs::hard_link(&inner, path)?;
        Ok(listener)
    })();
    let _ = fs::remove_file(tmp.join("s"));
    let _ = fs::remove_dir(&tmp);
    result.map_err(|e: io::Error| {
        if e.kind() == ErrorKind::AlreadyExists {
            format!("{shown} appeared while the sink was binding; not replacing it")
        } else {
            format!("cannot bind {shown} with mode {mode:o}: {e}")
        }
    })
}

/// Raises the soft limit of open files to the hard one: each connection
/// that shares its ring holds its memfd besides its socket (docs/sink.md
/// counts them), and the common soft limit of 1024 would cap the sink at
/// about 500 such programs.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let l = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (l.current, l.maximum) {
        if cur < max {
            if let Err(e) = setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(max),
                    maximum: Some(max),
                },
            ) {
                warn!("cannot raise the open-file limit from {cur} to {max}: {e}");
            }
        }
    }
}

/// Runs the sink until SIGTERM/SIGINT or until stdout goes away; returns
/// the process exit code.
pub fn serve<E: Emit>(cfg: &Config, out: E) -> i32 {
    raise_fd_limit();
    // Signals first, so that a signal arriving right after the socket
    // appears is not lost.
    let signals = match Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot install signal handlers: {e}");
            return 1;
        }
    };
    let (listener, bound) = match bind(cfg) {
        Ok(b) => b,
        Err(msg) => {
            warn!("{msg}");
            return 1;
        }
    };
    // After binding (a second sink on the same socket stops above, before
    // touching the spool), before serving.
    let spool = cfg.spool.as_deref().and_then(Spool::open);
    let poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            warn!("cannot create poll: {e}");
            bound.remove();
            return 1;
        }
    };
    let mut server = Server {
        listener: Some(UnixListener::from_std(listener)),
        signals,
        conns: Vec::new(),
        free: Vec::new(),
        live: 0,
        ready: Vec::new(),
        backlogged: false,
        buf: vec![0; READ_BUFFER],
        clock: Clock::new(),
        out,
        max_line: cfg.max_line,
        max_connections: cfg.max_connections.max(1),
        held: 0,
        max_buffered: cfg.max_buffered,
        policy: Policy::new(cfg.limits.clone()),
        waiting: VecDeque::new(),
        making_room: false,
        drain_left: DRAIN_READS_PER_TURN,
        next_sweep: Instant::now(),
        tokens: Tokens::new(),
        pending: Vec::new(),
        next_pending_check: Instant::now(),
        scratch: Vec::new(),
        ring_buf: Vec::new(),
        complaints: Complaints {
            window: Instant::now(),
            said: 0,
            held_back: 0,
        },
        poll,
        spool,
        next_spool_scan: Instant::now(),
    };
    // Rings of programs that died while no sink ran, before the first
    // connection is served.
    let code = if server.scan_spool() {
        server.run()
    } else {
        server.output_error()
    };
    bound.remove();
    code
}

struct Server<E: Emit> {
    poll: Poll,
    listener: Option<UnixListener>,
    signals: Signals,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    live: usize,
    /// Connections with data possibly still unread.
    ready: Vec<usize>,
    /// Connections may be waiting in the listen backlog (limit reached or
    /// accept failed): retry accepting.
    backlogged: bool,
    buf: Vec<u8>,
    clock: Clock,
    out: E,
    max_line: usize,
    max_connections: usize,
    /// Heap bytes held by all connections' buffers.
    held: usize,
    max_buffered: usize,
    policy: Policy,
    /// Accepted connections waiting, unread, for room (oldest first).
    waiting: VecDeque<Waiting>,
    /// A connection is being closed to make room for a new one: the room
    /// is not given to a waiting one.
    making_room: bool,
    /// Reads left this turn for draining refused connections.
    drain_left: usize,
    /// Next look for connections idle in the middle of a frame.
    next_sweep: Instant,
    /// Tokens for the hello of each connection.
    tokens: Tokens,
    /// Rings waiting for their program's death (a slab: token
    /// `FIRST_PENDING + index`).
    pending: Vec<Option<Pending>>,
    /// When to look at them next (sooner when a pidfd fires).
    next_pending_check: Instant,
    /// The one buffer a ring is read into (emptied after each recovery).
    scratch: Vec<u8>,
    /// Where read requests' records are read to (kept: at most a
    /// recovery's chunk, 1 MiB).
    ring_buf: Vec<u8>,
    complaints: Complaints,
    /// The spool directory, when it could be had.
    spool: Option<Spool>,
    /// When to list it next.
    next_spool_scan: Instant,
}

impl<E: Emit> Server<E> {
    fn run(&mut self) -> i32 {
        let registry = self.poll.registry();
        let registered = match self.listener.as_mut() {
            Some(l) => registry.register(l, LISTENER, Interest::READABLE),
            None => Ok(()),
        }
        .and_then(|()| registry.register(&mut self.signals, SIGNALS, Interest::READABLE));
        if let Err(e) = registered {
            warn!("cannot register with poll: {e}");
            return 1;
        }
        let mut events = Events::with_capacity(1024);
        let mut batch = Vec::new();
        let mut flushed = Instant::now();
        loop {
            let timeout = if !self.ready.is_empty() {
                // Busy (a connection with more to read, or a read request
                // served a slice per turn): what was formatted still goes
                // out every so often, not only when the buffer fills.
                if flushed.elapsed() >= BUSY_FLUSH {
                    flushed = Instant::now();
                    if let Err(e) = self.out.flush() {
                        return self.output_failed(&e);
                    }
                }
                Some(Duration::ZERO)
            } else {
                // About to block: whatever was formatted goes out now.
                flushed = Instant::now();
                if let Err(e) = self.out.flush() {
                    return self.output_failed(&e);
                }
                let backlog = self.backlogged.then_some(Duration::from_millis(100));
                let sweep = self.policy.sweep_every();
                let rings = self
                    .pending
                    .iter()
                    .any(Option::is_some)
                    .then_some(PENDING_CHECK);
                let spooled = self.spool.as_ref().map(|_| {
                    self.next_spool_scan
                        .saturating_duration_since(Instant::now())
                });
                [backlog, sweep, rings, spooled].into_iter().flatten().min()
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                warn!("poll: {e}");
                return 1;
            }
            let mut stop = false;
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    SIGNALS => stop |= self.signals.pending().next().is_some(),
                    Token(t) if t >= FIRST_PENDING => self.next_pending_check = Instant::now(),
                    Token(t) => {
                        if let Some(c) = self.conns.get_mut(t - FIRST_CONN).and_then(Option::as_mut)
                        {
                            if !c.queued {
                                c.queued = true;
                                self.ready.push(t - FIRST_CONN);
                            }
                        }
                    }
                }
            }
            if stop {
                return self.shutdown();
            }
            self.drain_left = DRAIN_READS_PER_TURN;
            if self.backlogged {
                self.accept();
            }
            self.sweep_idle();
            if Instant::now() >= self.next_pending_check {
                self.next_pending_check = Instant::now() + PENDING_CHECK;
                self.check_pending(false);
            }
            if self.spool.is_some() && Instant::now() >= self.next_spool_scan && !self.scan_spool()
            {
                return self.output_error();
            }
            std::mem::swap(&mut batch, &mut self.ready);
            for i in batch.drain(..) {
                if let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) {
                    c.queued = false;
                }
                match self.service(i, READS_PER_TURN, SERVE_PER_TURN) {
                    Served::More => {
                        if let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) {
                            c.queued = true;
                            self.ready.push(i);
                        }
                    }
                    Served::Drained => {}
                    Served::Closed(why) => self.close(i, &why, false),
                    Served::OutputFailed => return self.output_error(),
                    Served::OverBudget(per_uid) => {
                        self.evict(i, per_uid);
                        // Still open: more may be waiting.
                        if let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) {
                            if !c.queued {
                                c.queued = true;
                                self.ready.push(i);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Closes connections holding an unfinished frame that sent nothing
    /// for `--idle-timeout`, and reports refusals now and then.
    fn sweep_idle(&mut self) {
        let now = Instant::now();
        if now < self.next_sweep {
            return;
        }
        let Some(every) = self.policy.sweep_every() else {
            return;
        };
        self.next_sweep = now + every;
        if let Some(msg) = self.policy.summary(false) {
            warn!("{msg}");
        }
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_ref() else {
                continue;
            };
            let pending = c.frames.frame_pending();
            if pending > 0 && self.policy.idle_too_long(c.last_data, now) {
                let cred = c.cred;
                if !self
                    .policy
                    .note_closed(&cred, "idle mid-frame, --idle-timeout")
                {
                    self.close(i, &Why::Idle, false);
                    continue;
                }
                let Some(c) = self.conns[i].as_ref() else {
                    continue;
                };
                warn!(
                    "connection from pid {} uid {}: {pending} bytes of an unfinished frame and nothing sent for {:?} (--idle-timeout); closing (further such closings of this uid are summarised)",
                    Pid(c.pid),
                    Pid(c.cred.uid),
                    self.policy.limits().idle_timeout
                );
                self.close(i, &Why::Idle, false);
            }
        }
    }

    /// Over a budget (all connections', or the uid of connection `i`):
    /// evicts the connections holding the most in unfinished frames, largest
    /// first, until back under it.
    fn evict(&mut self, i: usize, per_uid: bool) {
        let Some(cred) = self.conns.get(i).and_then(Option::as_ref).map(|c| c.cred) else {
            return;
        };
        loop {
            let over = if per_uid {
                self.policy.over_budget(&cred)
            } else {
                self.held > self.max_buffered
            };
            if !over {
                return;
            }
            let victim = self
                .conns
                .iter()
                .enumerate()
                .filter_map(|(j, c)| c.as_ref().map(|c| (j, c)))
                .filter(|(_, c)| {
                    c.frames.frame_pending() > 0 && (!per_uid || Policy::same_uid(&c.cred, &cred))
                })
                .max_by_key(|(_, c)| c.held)
                .map(|(j, _)| j);
            let Some(v) = victim else {
                return;
            };
            if let Some(c) = self.conns[v].as_ref() {
                let budget = if per_uid {
                    "--max-buffered-per-uid"
                } else {
                    "--max-buffered"
                };
                let cred = c.cred;
                let first = self.policy.note_closed(
                    &cred,
                    if per_uid {
                        "largest holder over --max-buffered-per-uid"
                    } else {
                        "largest holder over --max-buffered"
                    },
                );
                let Some(c) = self.conns[v].as_ref().filter(|_| first) else {
                    self.close(v, &Why::OverBudget, false);
                    continue;
                };
                warn!(
                    "connection from pid {} uid {}: sink buffers over {budget}; this connection holds the most ({} bytes); \
                     {} bytes of an unfinished frame discarded; closing",
                    Pid(c.pid),
                    Pid(c.cred.uid),
                    c.held,
                    c.frames.frame_pending()
                );
                warn!("(further such closings of this uid are summarised)");
            }
            self.close(v, &Why::OverBudget, false);
        }
    }

    /// Closes the connection of `uid` that makes room at the least cost:
    /// one without an unfinished frame if it has any, the longest silent.
    fn displace(&mut self, uid: u32) {
        let victim = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(j, c)| c.as_ref().map(|c| (j, c)))
            .filter(|(_, c)| Policy::is_uid(&c.cred, uid))
            .min_by_key(|(_, c)| (c.frames.frame_pending() > 0, c.last_data))
            .map(|(j, c)| (j, c.cred, c.pid));
        let Some((v, cred, pid)) = victim else {
            return;
        };
        if self.policy.note_closed(
            &cred,
            "made room at --max-connections for a uid holding fewer",
        ) {
            warn!(
                "{} connections open (--max-connections); closing the longest silent connection (pid {}) of uid {}, which holds the most, to admit a uid holding fewer; what it had sent is read and delivered first (further such closings of this uid are summarised)",
                self.live,
                Pid(pid),
                Pid(cred.uid)
            );
        }
        // The room is for the new connection: close() must not give it to
        // a waiting one, nor accept more.
        self.making_room = true;
        self.close(v, &Why::Displaced, false);
        self.making_room = false;
    }

    /// Serves a newly accepted connection: admitted, made room for, made to
    /// wait, or refused.
    fn arrived(&mut self, stream: UnixStream) {
        let cred = peer_cred(&stream);
        let full = self.live >= self.max_connections;
        match self.policy.decide(&cred, full) {
            Decision::Admit => self.register(stream, cred),
            Decision::MakeRoom(top) => {
                self.displace(top);
                if self.live < self.max_connections {
                    self.register(stream, cred);
                } else {
                    self.wait(stream, cred, Refusal::Full);
                }
            }
            Decision::Wait(why) => self.wait(stream, cred, why),
            Decision::Refuse => {
                self.policy.refused(&cred, Refusal::NotAllowed);
                if let Some(msg) = self
                    .policy
                    .first_refusal_message(&cred, Refusal::NotAllowed)
                {
                    warn!("{msg}");
                }
                // Not served: what it had sent is dropped, and counted.
                let unread = queued(&stream);
                if unread > 0 && self.policy.lost(&cred, unread, "connection not allowed") {
                    warn!(
                        "connection from pid {} uid {} not allowed: {unread} bytes it had sent dropped (further such losses of this uid are summarised)",
                        Pid(cred.pid),
                        Pid(cred.uid)
                    );
                }
            }
        }
    }

    /// Starts serving `stream`.
    fn register(&mut self, mut stream: UnixStream, cred: PeerCred) {
        let pid = cred.pid;
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut stream, Token(i + FIRST_CONN), Interest::READABLE)
        {
            warn!(
                "connection from pid {}: cannot register with poll: {e}; closing",
                Pid(pid)
            );
            self.free.push(i);
            let mut frames = FrameStream::new(self.max_line);
            self.close_unserved(&stream, &mut frames, &cred, usize::MAX, "cannot register");
            return;
        }
        self.policy.admitted(&cred);
        // The greeting first, before anything is read: it tells liblogtap
        // this sink takes its ring, and names the connection. A fresh
        // socket's buffer always has room for 12 bytes; if not, or if the
        // peer is gone, the connection simply goes on without a ring.
        let token = self.tokens.fresh();
        // The hello and, in the same write, word that this sink reads rings
        // itself (a library that knows it waits a moment for `Reading`
        // after its attach; an older one reads only the hello).
        let mut hello = [0u8; logtap_wire::ring::HELLO_LEN + logtap_wire::ring::SINK_MSG_LEN];
        hello[..logtap_wire::ring::HELLO_LEN]
            .copy_from_slice(&logtap_wire::ring::Hello { token }.to_bytes());
        hello[logtap_wire::ring::HELLO_LEN..]
            .copy_from_slice(&logtap_wire::ring::SinkMsg::Reads.to_bytes());
        let _ = std::io::Write::write(&mut &stream, &hello);
        self.conns[i] = Some(Conn {
            stream,
            pid,
            cred,
            last_data: Instant::now(),
            frames: FrameStream::new(self.max_line),
            held: 0,
            queued: false,
            link: Link::new(token),
        });
        self.live += 1;
    }

    /// `stream` must wait for room (`why`): kept accepted and unread. When
    /// too many wait, the uid with the most waiting gives up its oldest,
    /// or, when that is this uid, this one is refused; a refused one has
    /// what it had sent read and delivered.
    fn wait(&mut self, stream: UnixStream, cred: PeerCred, why: Refusal) {
        if self.waiting.len() >= WAITING_MAX {
            let count = |uid: u32, w: &VecDeque<Waiting>| {
                w.iter().filter(|x| Policy::is_uid(&x.cred, uid)).count()
            };
            let mine = self
                .waiting
                .iter()
                .filter(|x| Policy::same_uid(&x.cred, &cred))
                .count();
            let top = self
                .waiting
                .iter()
                .map(|x| (x.cred, count(Policy::uid_of(&x.cred), &self.waiting)))
                .max_by_key(|(_, n)| *n);
            match top {
                Some((top, n)) if n > mine + 1 => {
                    let k = self
                        .waiting
                        .iter()
                        .position(|x| Policy::same_uid(&x.cred, &top))
                        .unwrap_or(0);
                    if let Some(old) = self.waiting.remove(k) {
                        self.refuse_waiting(old.stream, old.cred, why);
                    }
                }
                _ => {
                    self.refuse_waiting(stream, cred, why);
                    return;
                }
            }
        }
        if self.policy.note_waiting(&cred) {
            warn!(
                "connection from pid {} uid {} waits for room ({}): accepted, not read until a connection closes; what it sends stays in its socket (further waits of this uid are summarised)",
                Pid(cred.pid),
                Pid(cred.uid),
                why.wait_text()
            );
        }
        self.waiting.push_back(Waiting { stream, cred });
    }

    /// Refuses a connection that could not wait: counted, and what it had
    /// sent is read and delivered (its sender keeps the rest).
    fn refuse_waiting(&mut self, stream: UnixStream, cred: PeerCred, why: Refusal) {
        self.policy.refused(&cred, why);
        if let Some(msg) = self.policy.first_refusal_message(&cred, why) {
            warn!("{msg}; what it had sent is read and delivered");
        }
        let mut frames = FrameStream::new(self.max_line);
        // Read in full (what is queued is bounded by the sender's socket
        // buffer); the budget only stops further accepts this turn.
        let reads = self.close_unserved(&stream, &mut frames, &cred, DRAIN_READS, "refused");
        self.drain_left = self.drain_left.saturating_sub(reads);
    }

    /// Closes a connection that was never served: what its sender had
    /// written is read (at most `max_reads` reads) and delivered; what
    /// stays unread is counted as lost. Returns the reads made.
    fn close_unserved(
        &mut self,
        stream: &UnixStream,
        frames: &mut FrameStream,
        cred: &PeerCred,
        max_reads: usize,
        why: &'static str,
    ) -> usize {
        let origin = Origin::peer(self.clock.now(), cred.pid, cred.uid);
        let (reads, unread) = drain_queued(
            stream,
            frames,
            None,
            (&mut self.buf, &mut self.ring_buf),
            &origin,
            &mut self.out,
            max_reads.min(DRAIN_READS),
        );
        frames.finish(&origin, &mut self.out);
        self.report_lost(cred, unread, why);
        reads
    }

    fn report_lost(&mut self, cred: &PeerCred, unread: u64, why: &'static str) {
        if unread > 0 && self.policy.lost(cred, unread, why) {
            warn!(
                "connection from pid {} uid {} closed ({why}) with {unread} bytes it had sent still unread: dropped (further such losses of this uid are summarised)",
                Pid(cred.pid),
                Pid(cred.uid)
            );
        }
    }

    /// Serves waiting connections while there is room, oldest first (one
    /// whose uid is still at its share keeps waiting).
    fn unwait(&mut self) {
        let mut k = 0;
        while k < self.waiting.len() && self.live < self.max_connections {
            if self.policy.decide(&self.waiting[k].cred, false) == Decision::Admit {
                if let Some(w) = self.waiting.remove(k) {
                    self.register(w.stream, w.cred);
                }
            } else {
                k += 1;
            }
        }
    }

    fn accept(&mut self) {
        if self.listener.is_none() {
            return;
        }
        // Those waiting came first.
        self.unwait();
        // Bounded per call, so a peer connecting (and being refused) in a
        // tight loop cannot keep the sink from serving the others.
        for _ in 0..ACCEPTS_PER_TURN {
            // Accepted even when one uid holds every connection (its share
            // can be all of them: `--max-connections` under 8, or
            // `--max-connections-per-uid` set that high): left in the
            // backlog, a connection of another uid would wait until one of
            // those closed, which an idle one never does. Accepted, it
            // makes room or waits (`arrived`).
            if self.drain_left == 0 {
                // Refusals read enough this turn: the rest next turn.
                self.backlogged = true;
                return;
            }
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => self.arrived(stream),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.backlogged = false;
                    return;
                }
                Err(e)
                    if e.kind() == ErrorKind::Interrupted
                        || e.kind() == ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    // EMFILE and the like: retry later, when a connection
                    // closes or after a short wait.
                    if !self.backlogged {
                        warn!("accept: {e}; retrying");
                    }
                    self.backlogged = true;
                    return;
                }
            }
        }
        // More may be waiting: come back after serving the ready ones.
        self.backlogged = true;
    }

    /// Reads and decodes up to `reads` buffers from connection `i`.
    fn service(&mut self, i: usize, reads: usize, serve_budget: u64) -> Served {
        let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return Served::Drained;
        };
        let mut fds = Vec::new();
        let mut serve_left = serve_budget;
        if conn.link.asked() {
            // Requests left from the last turn first, before anything
            // read after them.
            let origin = Origin::peer(self.clock.now(), conn.pid, conn.cred.uid);
            let served = serve_requests(
                conn,
                &origin,
                &mut self.out,
                &mut self.ring_buf,
                &mut serve_left,
            );
            if let Some(s) = served {
                return s;
            }
        }
        for _ in 0..reads {
            let got = read_conn(&conn.stream, &mut self.buf, Some(&mut conn.link), &mut fds);
            for note in conn.link.notes.drain(..) {
                self.complaints.say(&conn.cred, &note);
            }
            match got {
                Ok(0) => return Served::Closed(Why::Eof),
                Ok(n) => {
                    conn.last_data = Instant::now();
                    let origin = Origin::peer(self.clock.now(), conn.pid, conn.cred.uid);
                    let res = feed_conn(
                        &mut conn.frames,
                        Some(&mut conn.link),
                        &self.buf[..n],
                        &origin,
                        &mut self.out,
                    );
                    for note in conn.link.notes.drain(..) {
                        self.complaints.say(&conn.cred, &note);
                    }
                    // The read requests this read brought, within the
                    // turn's budget.
                    let served = serve_requests(
                        conn,
                        &origin,
                        &mut self.out,
                        &mut self.ring_buf,
                        &mut serve_left,
                    );
                    if let Some(s) = served {
                        return s;
                    }
                    if let Err(e) = res {
                        warn!(
                            "connection from pid {}: {} (frame at byte {}); closing",
                            Pid(conn.pid),
                            e.error,
                            e.offset
                        );
                        return Served::Closed(Why::BadFrame);
                    }
                    // Memory budgets (all connections', and this uid's):
                    // shed partial lines (nothing is lost), then have the
                    // largest holder of unfinished frames evicted.
                    let now = conn.frames.memory();
                    self.policy.held_changed(&conn.cred, conn.held, now);
                    self.held = self.held.saturating_sub(conn.held) + now;
                    conn.held = now;
                    let over_uid = self.policy.over_budget(&conn.cred);
                    if self.held > self.max_buffered || over_uid {
                        conn.frames.shed_lines(&origin, &mut self.out);
                        let now = conn.frames.memory();
                        self.policy.held_changed(&conn.cred, conn.held, now);
                        self.held = self.held.saturating_sub(conn.held) + now;
                        conn.held = now;
                        if self.held > self.max_buffered {
                            return Served::OverBudget(false);
                        }
                        if self.policy.over_budget(&conn.cred) {
                            return Served::OverBudget(true);
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Served::Drained,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() != ErrorKind::ConnectionReset {
                        warn!(
                            "connection from pid {}: read failed: {e}; closing",
                            Pid(conn.pid)
                        );
                    }
                    return Served::Closed(Why::ReadError);
                }
            }
        }
        Served::More
    }

    /// Ends connection `i`: emits its partial lines, reports an unfinished
    /// frame, frees its slot.
    fn close(&mut self, i: usize, why: &Why, stopping: bool) {
        let Some(mut conn) = self.conns.get_mut(i).and_then(Option::take) else {
            return;
        };
        self.live -= 1;
        self.free.push(i);
        self.held = self.held.saturating_sub(conn.held);
        self.policy.closed(&conn.cred, conn.held);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let origin = Origin::peer(self.clock.now(), conn.pid, conn.cred.uid);
        if why.drains() {
            // Its sender may have written more since the last read (made
            // room for, or evicted, it was not told to stop): read that and
            // deliver it before closing, instead of discarding it unseen.
            let (_, unread) = drain_queued(
                &conn.stream,
                &mut conn.frames,
                Some(&mut conn.link),
                (&mut self.buf, &mut self.ring_buf),
                &origin,
                &mut self.out,
                DRAIN_READS,
            );
            let what = match why {
                Why::Idle => "idle mid-frame",
                Why::Displaced => "made room for a uid holding fewer",
                _ => "over a buffer budget",
            };
            self.report_lost(&conn.cred, unread, what);
        }
        for note in conn.link.notes.drain(..) {
            self.complaints.say(&conn.cred, &note);
        }
        // Requests still waiting (served a slice per turn) are served and
        // answered now: the program counts them as the sink's.
        if conn.link.asked() {
            let origin = Origin::peer(self.clock.now(), conn.pid, conn.cred.uid);
            conn.link.serve(
                &mut conn.frames.router(&origin, &mut self.out),
                &mut self.ring_buf,
                u64::MAX,
            );
            let _ = answer(&conn.stream, &mut conn.link);
        }
        // A ring still this connection's: read now what the program wrote
        // and never sent, or wait for the program's end.
        let mut recovered = false;
        let ended = conn.link.end();
        // A ring in this sink's spool is the scan's: its lock says exactly
        // when its program is gone (no pid to look at, no deadline, and
        // never a ring taken from a program that is only exec'ing). The
        // sink lets go of it, which leaves the program's lock alone, and
        // looks at the spool again shortly.
        let ended = match ended {
            Some(e) if self.spool.as_ref().is_some_and(|sp| sp.holds(&e.ring)) => {
                drop(e);
                self.next_spool_scan = self.next_spool_scan.min(Instant::now() + SPOOL_SOON);
                None
            }
            e => e,
        };
        if let Some(ended) = ended {
            match self.verdict(&ended, &conn.cred, why, stopping) {
                Verdict::Leave => {}
                Verdict::Recover(reason) => {
                    self.recover(&ended, &mut conn.frames, &conn.cred, reason);
                    recovered = true;
                }
                Verdict::Wait(pidfd, recover_at_deadline) => {
                    self.wait_for_owner(Pending {
                        ended,
                        frames: conn.frames,
                        cred: conn.cred,
                        pidfd,
                        deadline: Instant::now() + shared_ring::OWNER_WAIT,
                        recover_at_deadline,
                    });
                    if !stopping && !self.making_room {
                        self.unwait();
                        if self.backlogged {
                            self.accept();
                        }
                    }
                    return;
                }
            }
        }
        let mut discarded = conn.frames.finish(&origin, &mut self.out);
        if recovered {
            // The unfinished frame's bytes lie in the ring after the last
            // position received: they were just read from there.
            discarded = 0;
        }
        if discarded > 0 && matches!(why, Why::Displaced) {
            // Idle and over-budget closings name their unfinished frame
            // when they close; a displaced connection's sender may have
            // been in the middle of one too (liblogtap, told by EPIPE,
            // sends a frame cut short again whole).
            warn!(
                "connection from pid {} uid {} closed (made room for a uid holding fewer) in the middle of a frame: {discarded} bytes of an unfinished frame discarded",
                Pid(conn.pid),
                Pid(conn.cred.uid)
            );
        }
        if discarded > 0 && !matches!(why, Why::BadFrame) && !why.drains() {
            if stopping {
                warn!(
                    "connection from pid {}: sink stopping ({discarded} bytes of an unfinished frame discarded)",
                    Pid(conn.pid)
                );
            } else {
                warn!(
                    "connection from pid {} closed mid-frame ({discarded} bytes of an unfinished frame discarded)",
                    Pid(conn.pid)
                );
            }
        }
        drop(conn);
        if !stopping && !self.making_room {
            self.unwait();
            if self.backlogged {
                self.accept();
            }
        }
    }

    /// Whether the ring of a connection that ended is the sink's to read.
    fn verdict(&self, e: &Ended, cred: &PeerCred, why: &Why, stopping: bool) -> Verdict {
        // The library clears the owner word before closing a connection on
        // purpose, and a newer connection of the program replaces it.
        if e.ring.owner().ok() != Some(e.token) {
            return Verdict::Leave;
        }
        // A spooled ring is not lost when the sink stops: the next sink
        // finds it in the spool, once nobody holds it. Left, it cannot be
        // taken from a program that is only exec'ing (an exec that fails
        // goes on with its ring).
        if stopping && !e.ring.sealed() {
            return Verdict::Leave;
        }
        if e.ring.abandoned() {
            return Verdict::Recover("it marked its ring abandoned");
        }
        match cred.pid {
            // Not visible in this pid namespace: nothing tells whether the
            // program lives. It closed the connection (or died): read the
            // ring. The sink closed it: the program may reconnect and take
            // the ring back; wait for that, then read it.
            None if stopping => Verdict::Leave,
            None if why.drains() => Verdict::Wait(None, true),
            None => Verdict::Recover("its pid is not visible here"),
            Some(pid) => match shared_ring::life(pid) {
                Life::Dead => Verdict::Recover("it exited"),
                // Stopping: a live program sends its ring to the next sink.
                Life::Alive(_) if stopping => Verdict::Leave,
                Life::Alive(fd) => Verdict::Wait(fd, false),
            },
        }
    }

    /// Reads a ring into the connection's stream (its partial lines join
    /// the ring's first bytes) and says so in one line. A ring in the
    /// spool is then marked delivered and removed.
    fn recover(&mut self, e: &Ended, frames: &mut FrameStream, cred: &PeerCred, reason: &str) {
        let origin = Origin::peer(self.clock.now(), cred.pid, cred.uid);
        let r = shared_ring::recover(e, frames, &origin, &mut self.out, &mut self.scratch);
        // The copy is held only during a recovery.
        self.scratch = Vec::new();
        // A spooled ring of another spool (this one's are left to the
        // scan): marked, so that a sink scanning that spool removes it
        // unread.
        if !e.ring.sealed() {
            e.ring.mark_delivered();
        }
        if let Some(what) = recovery_text(&r, "the last frame") {
            warn!(
                "connection from pid {} uid {} ended and {reason}: {what}",
                Pid(cred.pid),
                Pid(cred.uid),
            );
        }
    }

    /// Lists the spool and recovers the rings of programs that are gone
    /// (at most [`spool::RINGS_PER_SCAN`]; the next scan comes soon when
    /// more wait). `false` when writing the output failed.
    fn scan_spool(&mut self) -> bool {
        let Some(sp) = self.spool.as_mut() else {
            return true;
        };
        let (found, more) = sp.scan(spool::RINGS_PER_SCAN);
        self.next_spool_scan = Instant::now()
            + if more {
                PENDING_CHECK
            } else {
                spool::SCAN_EVERY
            };
        for f in found {
            // --allow-uid/--allow-gid hold for a ring left in the spool as
            // for a connection: the file's owner stands for the peer's uid,
            // and its group for the peer's gid, except in a set-group-ID
            // spool, where every ring has the spool's group (then only
            // --allow-uid can admit a spooled ring).
            let gid = self
                .spool
                .as_ref()
                .is_some_and(Spool::groups_are_programs)
                .then_some(f.gid);
            let cred = PeerCred {
                pid: None,
                uid: Some(f.uid),
                gid,
            };
            if !self.policy.allowed(&cred) {
                if let Some(sp) = self.spool.as_mut() {
                    sp.done(&f);
                }
                warn!(
                    "spooled ring {} of uid {} gid {}: not allowed (--allow-uid, --allow-gid); removed unread",
                    spool::shown(&f.name),
                    f.uid,
                    f.gid
                );
                continue;
            }
            // No connection: the records carry their own time and pid; the
            // uid is the file's owner; no peer pid.
            let origin = Origin {
                ts: self.clock.now(),
                pid: f.pid,
                peer_pid: None,
                uid: Some(f.uid),
            };
            let mut frames = FrameStream::new(self.max_line);
            let r = shared_ring::recover(
                &f.ended,
                &mut frames,
                &origin,
                &mut self.out,
                &mut self.scratch,
            );
            frames.finish(&origin, &mut self.out);
            self.scratch = Vec::new();
            if let Some(sp) = self.spool.as_mut() {
                sp.done(&f);
            }
            if let Some(what) = recovery_text(&r, "its tail") {
                warn!(
                    "spooled ring {} of pid {} uid {}, whose program is gone: {what}",
                    spool::shown(&f.name),
                    Pid(f.pid),
                    f.uid
                );
            }
            if self.out.failed() {
                return false;
            }
        }
        true
    }

    /// Keeps a ring until its program dies, takes it elsewhere or the
    /// deadline passes. The oldest waiting ring is given up when as many
    /// wait as connections may be open.
    fn wait_for_owner(&mut self, mut p: Pending) {
        let waiting = self.pending.iter().filter(|x| x.is_some()).count();
        if waiting >= self.max_connections {
            if let Some(oldest) = (0..self.pending.len())
                .filter(|&j| self.pending[j].is_some())
                .min_by_key(|&j| self.pending[j].as_ref().map(|x| x.deadline))
            {
                self.complaints.say(
                    &p.cred,
                    "too many rings wait for their programs to end: the oldest is left to its program",
                );
                self.conclude(oldest, false);
            }
        }
        let j = match self.pending.iter().position(Option::is_none) {
            Some(j) => j,
            None => {
                self.pending.push(None);
                self.pending.len() - 1
            }
        };
        if let Some(fd) = &p.pidfd {
            use std::os::fd::AsRawFd;
            let raw = fd.as_raw_fd();
            if self
                .poll
                .registry()
                .register(
                    &mut mio::unix::SourceFd(&raw),
                    Token(FIRST_PENDING + j),
                    Interest::READABLE,
                )
                .is_err()
            {
                // Watched by the periodic check instead.
                p.pidfd = None;
            }
        }
        self.pending[j] = Some(p);
    }

    /// Looks at the rings waiting for their programs: read the ring of a
    /// program that is gone or abandoned it, leave the ring to a program
    /// that took it to another connection or outlived the deadline. At
    /// `stopping`, every one is decided now.
    fn check_pending(&mut self, stopping: bool) {
        let now = Instant::now();
        for j in 0..self.pending.len() {
            let Some(p) = self.pending[j].as_ref() else {
                continue;
            };
            let gone = match &p.pidfd {
                Some(fd) => shared_ring::exited(fd),
                None => p.cred.pid.is_some_and(|pid| !shared_ring::still_there(pid)),
            };
            let owned = p.ended.ring.owner().ok() == Some(p.ended.token);
            let decide =
                !owned || gone || p.ended.ring.abandoned() || now >= p.deadline || stopping;
            if decide {
                self.conclude(j, gone);
            }
        }
        while matches!(self.pending.last(), Some(None)) {
            self.pending.pop();
        }
    }

    /// Ends the wait of ring `j`: read it if it is still the connection's
    /// and its program is `gone` (or abandoned it, or is not visible and
    /// its deadline passed), else leave it to the program.
    fn conclude(&mut self, j: usize, gone: bool) {
        let Some(mut p) = self.pending.get_mut(j).and_then(Option::take) else {
            return;
        };
        if let Some(fd) = &p.pidfd {
            use std::os::fd::AsRawFd;
            let raw = fd.as_raw_fd();
            let _ = self
                .poll
                .registry()
                .deregister(&mut mio::unix::SourceFd(&raw));
        }
        let owned = p.ended.ring.owner().ok() == Some(p.ended.token);
        let reason = if !owned {
            None
        } else if p.ended.ring.abandoned() {
            Some("it marked its ring abandoned")
        } else if gone {
            Some("it exited")
        } else if p.recover_at_deadline && Instant::now() >= p.deadline {
            Some("its pid is not visible here and it did not take its ring back")
        } else {
            None
        };
        let origin = Origin::peer(self.clock.now(), p.cred.pid, p.cred.uid);
        if let Some(reason) = reason {
            self.recover(&p.ended, &mut p.frames, &p.cred, reason);
            p.frames.finish(&origin, &mut self.out);
        } else {
            let discarded = p.frames.finish(&origin, &mut self.out);
            if discarded > 0 {
                warn!(
                    "connection from pid {} closed mid-frame ({discarded} bytes of an unfinished frame discarded; its program keeps them in its ring)",
                    Pid(p.cred.pid)
                );
            }
        }
    }

    /// Stops accepting, reads what is queued on every connection, flushes
    /// partial lines, and returns the exit code.
    fn shutdown(&mut self) -> i32 {
        // Clients that connected just before the signal may already have
        // sent data: take them from the listen backlog too.
        self.accept();
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        // Those waiting for room: what they had sent is read and delivered.
        while let Some(w) = self.waiting.pop_front() {
            let mut frames = FrameStream::new(self.max_line);
            self.close_unserved(
                &w.stream,
                &mut frames,
                &w.cred,
                DRAIN_READS,
                "sink stopping",
            );
            if self.out.failed() {
                return self.output_error();
            }
        }
        // Rings waiting for their program: read those whose program is
        // gone now; the others stay the program's.
        self.check_pending(true);
        // Refuse further data first: a client's next send then fails
        // (EPIPE) and it keeps those bytes for its next sink, instead of
        // their vanishing with this process. What is queued stays readable.
        for c in self.conns.iter().flatten() {
            let _ = c.stream.shutdown(std::net::Shutdown::Read);
        }
        for i in 0..self.conns.len() {
            if self.conns[i].is_none() {
                continue;
            }
            // Stopping: every request read is served whole (its program
            // counts it as the sink's and may exit without waiting).
            let why = match self.service(i, READS_AT_SHUTDOWN, u64::MAX) {
                Served::OutputFailed => return self.output_error(),
                Served::Closed(why) => why,
                Served::OverBudget(per_uid) => {
                    self.evict(i, per_uid);
                    Why::Eof
                }
                Served::More | Served::Drained => Why::Eof,
            };
            self.close(i, &why, true);
            if self.out.failed() {
                return self.output_error();
            }
        }
        if let Some(msg) = self.policy.summary(true) {
            warn!("{msg}");
        }
        match self.out.flush() {
            Ok(()) => 0,
            Err(e) => self.output_failed(&e),
        }
    }

    fn output_error(&mut self) -> i32 {
        match self.out.flush() {
            Ok(()) => 0,
            Err(e) => self.output_failed(&e),
        }
    }

    /// A closed stdout ends the sink quietly with 0; other errors are
    /// reported.
    fn output_failed(&self, e: &io::Error) -> i32 {
        if e.kind() == ErrorKind::BrokenPipe {
            0
        } else {
            warn!("writing output: {e}");
            1
        }
    }
}

/// What a recovery found, for its one line on stderr (`span_from` names
/// where its span starts); `None` when there was nothing to say (everything
/// had been sent: a normal exit).
fn recovery_text(r: &Recovery, span_from: &str) -> Option<String> {
    if r.bytes == 0
        && r.writes == 0
        && r.reserved == 0
        && r.notices == 0
        && r.in_flight == 0
        && r.bad_intents == 0
        && r.stopped.is_none()
    {
        return None;
    }
    let mut extra = String::new();
    if r.in_flight > 0 {
        extra += &format!(
            "; {} bytes in {} writes in flight when it died delivered from its intent slots",
            r.in_flight_bytes, r.in_flight
        );
    }
    if r.bad_intents > 0 {
        extra += &format!(
            "; {} intent slots that make no sense skipped",
            r.bad_intents
        );
    }
    if r.reserved > 0 {
        extra += &format!("; {} writes that never returned skipped", r.reserved);
        if r.unstamped > 0 {
            extra += &format!(
                " ({} bytes of space their writers reserved and never stamped)",
                r.unstamped
            );
        }
    }
    if r.notices > 0 {
        extra += &format!("; {} drop notices from its source table", r.notices);
    }
    if let Some(why) = &r.stopped {
        extra += &format!("; stopped early: {why}");
    }
    Some(format!(
        "recovered {} bytes in {} writes from its ring ({} bytes after {span_from}){extra}",
        r.bytes, r.writes, r.span
    ))
}

/// Decodes a frame file (`-` for stdin) with the same output; returns the
/// exit code.
pub fn read_file<E: Emit>(name: &Path, max_line: usize, mut out: E) -> i32 {
    let shown = name.display();
    let mut input: Box<dyn Read> = if name.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        match fs::File::open(name) {
            Ok(f) => Box::new(f),
            Err(e) => {
                warn!("{shown}: {e}");
                return 1;
            }
        }
    };
    let mut clock = Clock::new();
    let mut frames = FrameStream::new(max_line);
    let mut buf = vec![0u8; READ_BUFFER];
    let mut code = 0;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!(
                    "{shown}: read failed at byte {}: {e}",
                    frames.frame_offset()
                );
                code = 1;
                break;
            }
        };
        let origin = Origin::peer(clock.now(), None, None);
        let res = frames.feed(&buf[..n], &origin, &mut out);
        if out.failed() {
            // stdout went away: nothing more can be shown.
            return match out.flush() {
                Err(e) if e.kind() != ErrorKind::BrokenPipe => {
                    warn!("writing output: {e}");
                    1
                }
                _ => 0,
            };
        }
        if let Err(e) = res {
            warn!("{shown}: byte offset {}: {}", e.offset, e.error);
            code = 1;
            break;
        }
    }
    let origin = Origin::peer(clock.now(), None, None);
    let discarded = frames.finish(&origin, &mut out);
    if discarded > 0 && code == 0 {
        warn!(
            "{shown}: byte offset {}: file ends inside a frame ({discarded} bytes discarded)",
            frames.frame_offset()
        );
        code = 1;
    }
    match out.flush() {
        Ok(()) => code,
        Err(e) if e.kind() == ErrorKind::BrokenPipe => code,
        Err(e) => {
            warn!("writing output: {e}");
            1
        }
    }
}
