//! Delivery to the target: a file, a persistent socket for logtap-sink, or
//! Pantavisor's pv-ctrl-log (one message per connection).
//!
//! Everything here runs with the drain lock held (`super::try_lock_drain`),
//! normally on the consumer thread, so the connection state needs no other
//! synchronisation. Frames are planned straight over the ring's records and
//! sent with one `writev`/`sendmsg` per batch, without copying the data.
//!
//! A frame is never cut: when a send is partial, the next attempt resumes
//! inside the same frame, built from the same records; when the connection
//! is lost mid-frame, that frame is sent again whole on the next
//! connection (the sink discards the unfinished copy). Records are released
//! only once every frame that carries them has gone out. With a sink that
//! reads the ring itself (`asks`), small read requests replace the frames,
//! and records are released when the sink answers.

use super::asks::{Asks, Heard};
use super::{restore_drops, ring, take_drops, try_lock_drain, unlock_drain, urgent};
use crate::config::{self, Format, TargetKind};
use crate::ring::Record;
use crate::safe_open;
use crate::sys::{self, Ident};
use crate::tap::sources::{self, Original};
use crate::tap::{NOTICE, SOURCES};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering::*};
use logtap_wire as wire;
use logtap_wire::ring as lay;

pub enum Outcome {
    /// Nothing left to send.
    Empty,
    /// The target would block on this fd.
    Blocked(i32),
    /// No target now; try again in this many milliseconds.
    Down(u64),
    /// Someone else is draining, or a writer is still filling the next record.
    Busy,
    /// Everything committed was asked for: the sink's answers (it reads
    /// the ring itself) come on this fd.
    Awaiting(i32),
}

/// The fd the library owns now (-1: none). Hooks consult it so the program
/// can neither close it nor have it replaced under us.
static OUR_FD: AtomicI32 = AtomicI32::new(-1);
/// A socket whose connect failed, kept for the next attempt (-1: none).
/// An AF_UNIX stream socket stays unconnected after a failed connect
/// (ENOENT, ECONNREFUSED, EAGAIN…) and can connect again, so retries while
/// the target is away create nothing; in the program's table that also
/// means no raise of the soft fd limit to place a new one (`fds`). Never
/// valid at the same time as OUR_FD.
static SPARE: AtomicI32 = AtomicI32::new(-1);
/// Set while the drainer is inside a system call on OUR_FD.
static IN_USE: AtomicBool = AtomicBool::new(false);

const IOV_N: usize = 512;
const FR_N: usize = 128;
const BATCH_MAX: usize = 1 << 20;
const PREFIX_MAX: usize = config::PATH_MAX + 80;

struct Conn {
    ident: Option<Ident>,
    ever: bool,
    next_attempt: u64,
    /// Bytes of the record at the ring's tail already delivered.
    skip: usize,
    /// Bytes of the first planned frame already sent.
    pf_sent: usize,
    /// Data length of that frame (0: no frame in flight).
    pf_data: usize,
    /// And its end (position, skip) as first planned: its re-planning
    /// keeps it, so its version-2 trailer stays byte-identical even when
    /// padding has appeared after it since.
    pf_end: (u64, usize),
    reported: bool,
    /// Whether the current connection has delivered anything.
    delivered: bool,
    /// A reservation the consumer found pending at the tail, and since when.
    stuck_pos: u64,
    stuck_since: u64,
    stuck_checks: u32,
    /// The shared ring on this connection: whether the sink's hello is
    /// still looked for, was seen, or will not come (see `ring_link`).
    greet: u8,
    /// The connection's token from the sink's hello (0: none).
    token: u64,
    /// The attach frame being sent (`attach_len` 0: none yet).
    attach: [u8; ATTACH_MAX],
    attach_len: usize,
    attach_sent: usize,
    /// The attach went out: every frame from here on is version 2.
    v2: bool,
    /// The sink's hello said it reads rings itself.
    reads: bool,
    /// Read requests, once the sink reads the ring itself.
    asks: Asks,
    /// When the last one was prepared (ms).
    asked_at: u64,
}

/// How long the consumer waits for the hello on a new connection.
const HELLO_WAIT_MS: i32 = 10;
/// Not looking for a hello (no shared ring, or not a new sink).
const G_NONE: u8 = 0;
const G_LOOKING: u8 = 1;
const G_FOUND: u8 = 2;
/// Header, prefix (`level`, platform, `logtap`) and position.
const ATTACH_MAX: usize = 8 + 2 + wire::MAX_PLATFORM + 1 + 7 + lay::POSITION_LEN;

/// Set while the ring is attached to the live connection (the attach
/// frame went out whole): the sink holds it.
static ATTACHED: AtomicBool = AtomicBool::new(false);
/// Everything before this position is with the sink of the live
/// connection: asked for in a read request sent whole (0: none). The
/// sink reads it even if the program dies, so exit and fork need not wait
/// for its answer.
static HANDED: AtomicU64 = AtomicU64::new(0);
/// The ring's memfd in the consumer's private fd table (-1: none there).
static PRIVATE_RING_FD: AtomicI32 = AtomicI32::new(-1);

static mut CONN: Conn = Conn::new(false);

/// One frame prefix (`level\0platform\0source\0`) per source, built the
/// first time a source is sent (file sources appear while the program
/// runs). Touched only with the drain lock held; a slot is written once.
struct Prefixes {
    buf: [[u8; PREFIX_MAX]; SOURCES],
    len: [usize; SOURCES],
}
static mut PREFIX: Prefixes = Prefixes {
    buf: [[0; PREFIX_MAX]; SOURCES],
    len: [0; SOURCES],
};

/// # Safety
/// Constructor only.
pub unsafe fn init() {
    // Built on first use (see `prefix`): nothing to do before the
    // configuration is read, kept for the constructor's order.
}

/// The `source` field for a tap source.
pub fn source_name(src: u8) -> &'static [u8] {
    sources::name(src)
}

fn prefix(src: u8) -> &'static [u8] {
    let i = src as usize;
    // SAFETY: only reached with the drain lock held (or in the
    // single-threaded fork child), so one thread at a time builds a slot;
    // a built slot is never written again, so the slices handed out stay
    // valid. Each access goes through a raw pointer to its own slot.
    unsafe {
        let len = core::ptr::addr_of_mut!(PREFIX.len[i]);
        let buf = core::ptr::addr_of_mut!(PREFIX.buf[i]);
        if *len == 0 {
            *len = wire::write_prefix(
                &mut *buf,
                sources::level(src),
                config::get().platform.bytes(),
                sources::name(src),
            )
            .unwrap_or(0);
        }
        &(&*buf)[..*len]
    }
}

impl Conn {
    /// No connection; `ever` says whether one ever succeeded.
    const fn new(ever: bool) -> Conn {
        Conn {
            ident: None,
            ever,
            next_attempt: 0,
            skip: 0,
            pf_sent: 0,
            pf_data: 0,
            pf_end: (0, 0),
            reported: false,
            delivered: false,
            stuck_pos: u64::MAX,
            stuck_since: 0,
            stuck_checks: 0,
            greet: G_NONE,
            token: 0,
            attach: [0; ATTACH_MAX],
            attach_len: 0,
            attach_sent: 0,
            v2: false,
            reads: false,
            asks: Asks::new(),
            asked_at: 0,
        }
    }
}

fn conn() -> &'static mut Conn {
    // SAFETY: only reached with the drain lock held (or in the
    // single-threaded fork child), so there is one user at a time.
    unsafe { &mut *core::ptr::addr_of_mut!(CONN) }
}

/// Set while the consumer thread runs with an fd table of its own.
static PRIVATE: AtomicBool = AtomicBool::new(false);
/// Set once the running consumer has decided to share the program's fd
/// table (unshare refused or `LLT_PRIVATE_FDS=false`).
static SHARED: AtomicBool = AtomicBool::new(false);

/// Whether a program thread may use the connection itself: only with no
/// consumer at all, or one that shares the program's fd table. A consumer
/// that is still starting may be about to leave the table, taking any
/// connection opened meanwhile out of reach.
fn inline_allowed() -> bool {
    !super::consumer_running() || SHARED.load(SeqCst)
}
/// What the last attempt to reach the target found: not tried yet, up, or
/// away (no socket, refused, no permission, a failed send, a full disk).
static LINK: AtomicU8 = AtomicU8::new(LINK_UNKNOWN);
const LINK_UNKNOWN: u8 = 0;
const LINK_UP: u8 = 1;
const LINK_AWAY: u8 = 2;
/// Failed attempts so far (a flush stops waiting once one more fails).
static FAILURES: AtomicU32 = AtomicU32::new(0);
/// Asked by a flush: make the next attempt now, not at the retry time.
static ATTEMPT_NOW: AtomicBool = AtomicBool::new(false);

fn set_up() {
    LINK.store(LINK_UP, Relaxed);
}

fn set_away() {
    LINK.store(LINK_AWAY, Relaxed);
    FAILURES.fetch_add(1, SeqCst);
}

/// Whether sending must be left to the consumer thread.
pub fn private_fds() -> bool {
    !inline_allowed()
}

pub fn is_up() -> bool {
    LINK.load(Relaxed) == LINK_UP
}

/// The last attempt failed: nobody should wait for this target.
pub fn away() -> bool {
    LINK.load(Relaxed) == LINK_AWAY
}

pub fn failures() -> u32 {
    FAILURES.load(SeqCst)
}

/// The next drain tries the target at once, even before its retry time.
pub fn attempt_now() {
    ATTEMPT_NOW.store(true, SeqCst);
}

/// Called first thing on the consumer thread: give it a private fd table,
/// so the library's sockets and files never take, hold or collide with a
/// number of the program's (a program's `close(0); open(…)` still gets 0),
/// cannot be closed or `dup2`ed over by it, and never leak into its exec'd
/// children. The copies of the program's fds that unsharing makes are
/// closed at once. Where `unshare` is forbidden (Docker's default seccomp
/// profile), the library's fds live in the program's table instead, at
/// high numbers, guarded by the `close`/`dup2`/`close_range` hooks.
pub fn enter_private_fd_table() {
    if !config::get().private_fds {
        SHARED.store(true, SeqCst);
        return;
    }
    // A connection opened in the program's table before this thread ran
    // (no consumer then) is closed there first, under the drain lock so
    // no program thread is sending on it; its unfinished frame, if any, is
    // sent again whole on our own connection.
    while !try_lock_drain() {
        // SAFETY: sched_yield has no preconditions.
        unsafe { libc::sched_yield() };
    }
    unlink_ring();
    for old in [OUR_FD.swap(-1, SeqCst), SPARE.swap(-1, SeqCst)] {
        if old >= 0 {
            sys::close(old);
        }
    }
    // The consumer is about to have a table of its own, unless the
    // constructor's probe found `unshare` refused: then the reserved slots
    // stay (dropped here, they would be gone when the unshare below fails,
    // and a program at its fd limit could take their numbers).
    if !crate::fds::reserving() {
        crate::fds::drop_reserve();
    }
    let c = conn();
    c.ident = None;
    c.pf_sent = 0;
    c.pf_data = 0;
    // SAFETY: plain system calls on this thread's own fd table.
    let ring_fd = crate::fds::ring_fd();
    let private = unsafe {
        libc::syscall(libc::SYS_unshare, libc::CLONE_FILES) == 0 && {
            // With LLT_DEBUG_MODE the copy of fd 2 stays, so that this
            // thread's messages are seen (it then holds stderr open). The
            // copy of the ring's memfd stays: it is handed to the sink on
            // each connection.
            let debug_fd = if config::get().debug { 2 } else { -1 };
            let mut keep = [debug_fd, ring_fd];
            keep.sort_unstable();
            let mut lo = 0u32;
            for k in keep.into_iter().filter(|&k| k >= 0) {
                let k = k as u32;
                if k > lo {
                    close_span(lo, k - 1);
                }
                lo = k + 1;
            }
            close_span(lo, u32::MAX);
            true
        }
    };
    PRIVATE_RING_FD.store(if private { ring_fd } else { -1 }, SeqCst);
    if private {
        PRIVATE.store(true, SeqCst);
    } else {
        crate::debug(&[
            b"unshare(CLONE_FILES) refused; the library's fds share the program's table",
        ]);
        SHARED.store(true, SeqCst);
    }
    unlock_drain();
}

/// Closes the fds `lo..=hi` of this thread's table.
fn close_span(lo: u32, hi: u32) {
    // SAFETY: closing numbers of this thread's own (private) table.
    if unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0) } != 0 {
        for fd in lo..hi.min(4095).saturating_add(1) {
            sys::close(fd as i32);
        }
    }
}

/// The connection is about to be closed on purpose while the process
/// lives: the sink must not read the ring for it (a later connection
/// sends what it holds). With the drain lock held.
fn unlink_ring() {
    let c = conn();
    ring().disown(c.token);
    // Requests the sink may have served without its answer reaching us: it
    // writes where it delivered to into the ring before answering, so
    // that space is not sent again on the next connection.
    let done = ring().read_by_sink();
    if c.asks.outstanding().contains(&done) {
        ring().release_to(done, 0);
        c.skip = 0;
        super::note_progress();
    }
    c.asks.reset();
    HANDED.store(0, SeqCst);
    ATTACHED.store(false, SeqCst);
    c.token = 0;
    c.greet = G_NONE;
    c.reads = false;
    c.v2 = false;
    c.attach_len = 0;
    c.attach_sent = 0;
}

/// Whether the sink holds the ring: attached to the live connection.
pub fn attached() -> bool {
    ATTACHED.load(SeqCst)
}

/// The consumer is exiting; its table (and our connection) goes with it.
pub fn leave_private_fd_table() {
    SHARED.store(false, SeqCst);
    PRIVATE_RING_FD.store(-1, SeqCst);
    if PRIVATE.swap(false, SeqCst) {
        unlink_ring();
        for fd in [OUR_FD.swap(-1, SeqCst), SPARE.swap(-1, SeqCst)] {
            if fd >= 0 {
                sys::close(fd);
            }
        }
        let c = conn();
        c.ident = None;
        c.pf_sent = 0;
        c.pf_data = 0;
    }
}

/// The library's fd in the program's table, or -1 (none, or private table).
pub fn our_fd() -> i32 {
    if PRIVATE.load(SeqCst) {
        -1
    } else {
        match OUR_FD.load(SeqCst) {
            -1 => SPARE.load(SeqCst),
            fd => fd,
        }
    }
}

/// Whether `fd`, in the program's fd table, is the library's own.
pub fn owns(fd: i32) -> bool {
    fd >= 0 && !PRIVATE.load(SeqCst) && (OUR_FD.load(SeqCst) == fd || SPARE.load(SeqCst) == fd)
}

/// The program is about to reuse our fd's number (`dup2` onto it): move
/// our connection elsewhere first, waiting out a system call in flight.
pub fn evacuate(fd: i32) {
    if !owns(fd) {
        return;
    }
    // An unconnected spare is simply forgotten: the program's dup2 closes
    // it, and the next attempt makes another.
    if SPARE.compare_exchange(fd, -1, SeqCst, Relaxed).is_ok() {
        return;
    }
    OUR_FD.store(crate::fds::copy_away(fd), SeqCst);
    while IN_USE.load(SeqCst) {
        // SAFETY: sched_yield has no preconditions.
        unsafe { libc::sched_yield() };
    }
    // When moving failed the connection is simply forgotten; the program's
    // dup2 closes it and the drainer reconnects.
}

/// True when no frame or read request is half sent (so "tail reached
/// head" means delivered).
pub fn idle() -> bool {
    !try_lock_drain() || {
        let r = conn().pf_sent == 0 && !conn().asks.sending();
        unlock_drain();
        r
    }
}

pub fn after_fork_child() {
    // With a private table the consumer's fds did not come along (the
    // child copies the fork-calling thread's table, the program's).
    let fd = OUR_FD.swap(-1, SeqCst);
    let private = PRIVATE.swap(false, SeqCst);
    if fd >= 0 && !private {
        crate::fds::release(fd);
    }
    // A spare in the program's table came along and stays usable; one in
    // the consumer's table did not.
    if private {
        SPARE.store(-1, SeqCst);
    }
    PRIVATE.store(false, SeqCst);
    PRIVATE_RING_FD.store(-1, SeqCst);
    ATTACHED.store(false, SeqCst);
    SHARED.store(false, SeqCst);
    LINK.store(LINK_UNKNOWN, Relaxed);
    ATTEMPT_NOW.store(false, SeqCst);
    IN_USE.store(false, SeqCst);
    HANDED.store(0, SeqCst);
    let c = conn();
    *c = Conn::new(c.ever);
}

/// Whether everything before `goal` is with the target: sent, or asked
/// for from a sink that reads the ring itself.
pub fn handed(goal: u64) -> bool {
    ring().tail() >= goal || HANDED.load(SeqCst) >= goal
}

/// Bytes in the ring the target does not have yet (neither sent nor
/// asked for).
pub fn unhanded() -> u64 {
    let r = ring();
    r.head().saturating_sub(r.tail().max(HANDED.load(Relaxed)))
}

fn report(what: &[u8], path: &[u8]) {
    let c = conn();
    if !c.reported {
        c.reported = true;
        crate::debug(&[what, b" ", path]);
    }
}

fn retry_ms() -> u64 {
    let c = config::get();
    if urgent() {
        20
    } else if conn().ever {
        c.reconnect_ms
    } else {
        c.first_connect_ms
    }
}

/// An fd of ours in the table the drainer uses: in the program's, it goes
/// where the program cannot get it (`fds`).
fn adopt(fd: i32) -> i32 {
    if PRIVATE.load(SeqCst) {
        fd
    } else {
        crate::fds::place(fd)
    }
}

/// Creates an fd with `make`; in the program's table, a reserved number is
/// given up if the program has used all the others.
fn new_fd(make: impl Fn() -> i32) -> Result<i32, i32> {
    if PRIVATE.load(SeqCst) {
        let fd = make();
        return if fd < 0 { Err(sys::errno()) } else { Ok(fd) };
    }
    crate::fds::create(make)
}

/// Closes an fd of ours; in the program's table its number stays reserved.
fn release(fd: i32) {
    if PRIVATE.load(SeqCst) {
        sys::close(fd);
    } else {
        crate::fds::release(fd);
    }
}

/// Opens the file or connects the socket. Returns the fd.
fn connect_new(kind: TargetKind) -> Result<i32, i32> {
    let c = config::get();
    let path = c.target_path.c_bytes();
    // SAFETY: raw system calls on our own buffers.
    unsafe {
        if kind == TargetKind::File {
            // Never through a symlink, never blocking on a FIFO, only into
            // a regular file of ours (or root's) in trusted directories. The
            // open goes through `new_fd` so that it is placed where the
            // program cannot get its number (and retried on EMFILE).
            let refusal = core::cell::Cell::new(None);
            let opened = new_fd(|| match safe_open::open_append(path, c.target_mode) {
                Ok(fd) => fd,
                Err(r) => {
                    refusal.set(Some(r));
                    sys::set_errno(if r.errno != 0 { r.errno } else { libc::EPERM });
                    -1
                }
            });
            return match opened {
                Ok(fd) => {
                    REFUSED.store(false, Relaxed);
                    Ok(fd)
                }
                Err(e) => {
                    // Refused for what it is (a symlink, a FIFO, a file of
                    // another user…) or for lack of permission: exit does
                    // not wait for it, and suppressed standard streams go
                    // to their original destination (`super::write_through`).
                    // A failure that may pass (a directory not made yet, a
                    // full disk, the fd limit) is merely away: its bytes
                    // are held for it.
                    REFUSED.store(refusal.get().is_some_and(|r| r.lasting()), Relaxed);
                    if let Some(r) = refusal.get() {
                        if !conn().reported {
                            r.report(b"file target refused:", c.target_path.bytes());
                        }
                    }
                    Err(e)
                }
            };
        }
        let fd = match SPARE.swap(-1, SeqCst) {
            fd if fd >= 0 => fd,
            _ => {
                let fd = new_fd(|| {
                    libc::syscall(
                        libc::SYS_socket,
                        libc::AF_UNIX,
                        libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        0,
                    ) as i32
                })?;
                let sndbuf: libc::c_int = if kind == TargetKind::Socket {
                    1 << 20
                } else {
                    512 << 10
                };
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUF,
                    &sndbuf as *const libc::c_int as *const libc::c_void,
                    4,
                );
                fd
            }
        };
        let mut addr: libc::sockaddr_un = core::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let p = c.target_path.bytes();
        for (d, s) in addr.sun_path.iter_mut().zip(p) {
            *d = *s as libc::c_char;
        }
        let rc = libc::syscall(
            libc::SYS_connect,
            fd,
            &addr as *const libc::sockaddr_un,
            core::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        );
        if rc < 0 {
            let e = sys::errno();
            // No listener (or a full backlog): away, not refused, even if
            // a listener of the wrong uid was there before.
            REFUSED.store(false, Relaxed);
            // Still unconnected: kept for the next attempt (see SPARE).
            if SPARE.compare_exchange(-1, fd, SeqCst, Relaxed).is_err() {
                release(fd);
            }
            return Err(e);
        }
        if let Err(uid) = listener_allowed(fd) {
            release(fd);
            REFUSED.store(true, Relaxed);
            if !conn().reported {
                let mut n = [0u8; 20];
                crate::debug(&[
                    b"listener at ",
                    c.target_path.bytes(),
                    b" runs as uid ",
                    uid.map_or(&b"?"[..], |u| sys::fmt_u64(u64::from(u), &mut n)),
                    b", not in LLT_TARGET_UID; treated as absent",
                ]);
            }
            return Err(libc::ECONNREFUSED);
        }
        REFUSED.store(false, Relaxed);
        Ok(adopt(fd))
    }
}

/// Set while the target is refused for what it is (an unsafe file, a
/// listener of the wrong uid) rather than merely absent: exit does not wait
/// for it.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// Whether the last attempt found a target the library refuses to use.
pub fn refused() -> bool {
    REFUSED.load(Relaxed)
}

/// With `LLT_TARGET_UID`: Ok when the listener's uid (`SO_PEERCRED` on the
/// connected socket: the credentials it had when it called `listen`) is
/// listed; Err with the uid (None: unknown) otherwise.
fn listener_allowed(fd: i32) -> Result<(), Option<u32>> {
    let Some(list) = config::get().target_uids else {
        return Ok(());
    };
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = core::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred is a writable ucred and len its exact size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_getsockopt,
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred,
            &mut len as *mut libc::socklen_t,
        )
    };
    if rc != 0 || len as usize != core::mem::size_of::<libc::ucred>() {
        return Err(None);
    }
    if list.contains(cred.uid) {
        Ok(())
    } else {
        Err(Some(cred.uid))
    }
}

/// The connection broke (or the file failed). One that had delivered
/// data (a sink that restarted) is not "away" yet: the next drain, a
/// flush's included, reconnects at once, and only a failure of that
/// attempt counts. One that broke before delivering anything counts as a
/// failure now, so a target that takes connections but no data (a full
/// disk) cannot keep a flush reconnecting until its timeout.
fn disconnect(reset_frame: bool) {
    unlink_ring();
    let c = conn();
    if core::mem::take(&mut c.delivered) {
        LINK.store(LINK_UNKNOWN, Relaxed);
        attempt_now();
    } else {
        set_away();
    }
    let fd = OUR_FD.swap(-1, SeqCst);
    if fd >= 0 {
        release(fd);
    }
    c.ident = None;
    c.next_attempt = sys::now_ms() + retry_ms();
    if reset_frame {
        c.pf_sent = 0;
        c.pf_data = 0;
    }
}

/// Makes sure a persistent target is open. Err carries the wait.
fn ensure_connected(kind: TargetKind) -> Result<i32, u64> {
    let fd = OUR_FD.load(SeqCst);
    let c = conn();
    if fd >= 0 {
        // Someone may have closed our fd behind our back with a raw system
        // call and reused the number: never write into their file.
        if sys::fstat(fd).is_some_and(|id| Some(id) == c.ident) {
            return Ok(fd);
        }
        OUR_FD.store(-1, SeqCst);
        c.ident = None;
        c.pf_sent = 0;
        c.pf_data = 0;
    }
    // The connection is gone (closed or moved away by the program, or
    // never made): the sink must not read the ring for it.
    unlink_ring();
    let now = sys::now_ms();
    if now < c.next_attempt && !ATTEMPT_NOW.swap(false, SeqCst) {
        return Err(c.next_attempt - now);
    }
    ATTEMPT_NOW.store(false, SeqCst);
    let path = config::get().target_path.bytes();
    match connect_new(kind) {
        Ok(fd) => {
            c.ident = sys::fstat(fd);
            c.delivered = false;
            // A new connection starts on a frame boundary.
            if kind == TargetKind::Socket {
                c.pf_sent = 0;
                c.pf_data = 0;
            }
            c.greet = if kind == TargetKind::Socket
                && config::get().format == Format::Logtap
                && ring_fd_here() >= 0
            {
                G_LOOKING
            } else {
                G_NONE
            };
            OUR_FD.store(fd, SeqCst);
            set_up();
            c.ever = true;
            if c.reported {
                crate::debug(&[b"target is back: ", path]);
            }
            c.reported = false;
            Ok(fd)
        }
        Err(_) => {
            set_away();
            report(b"target unavailable, buffering:", path);
            c.next_attempt = now + retry_ms();
            Err(retry_ms())
        }
    }
}

/// The ring's memfd in the table the drainer uses (-1: none).
fn ring_fd_here() -> i32 {
    if PRIVATE.load(SeqCst) {
        PRIVATE_RING_FD.load(SeqCst)
    } else {
        crate::fds::ring_fd()
    }
}

/// The shared ring's hand-over on a socket connection in the logtap
/// format. A logtap-sink that reads rings greets every connection with a
/// `wire::ring::Hello`; an older sink (or liblogtap's C readers) sends
/// nothing. Until the hello is seen, frames go out as version 1; once it
/// is, and no frame is half sent, the connection's token goes into the
/// ring's owner word and an attach frame carries the memfd (SCM_RIGHTS, on
/// its first byte) and the position where the next byte sent starts. From
/// then on every frame is version 2. Returns an outcome when the drain
/// must stop here (the attach is not out yet).
fn ring_link(fd: i32, inline: bool) -> Option<Outcome> {
    let c = conn();
    if c.greet == G_LOOKING && !c.delivered && !inline {
        // A connection that has carried nothing yet: the sink greets as
        // soon as it accepts, so a moment's wait (on the consumer thread
        // only, never a program thread) lets the ring be attached before
        // the first frame, and an older sink costs this once per
        // connection.
        sys::poll_one(fd, libc::POLLIN, HELLO_WAIT_MS);
    }
    if c.greet == G_LOOKING {
        let mut buf = [0u8; lay::HELLO_LEN];
        let n = sys::recv(fd, &mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT);
        if n > 0 {
            let n = n as usize;
            let k = n.min(lay::SINK_HELLO.len());
            if buf[..k] != lay::SINK_HELLO[..k] {
                // Something else: not a sink that reads rings.
                c.greet = G_NONE;
                crate::debug(&[b"the target sent something other than a hello: no shared ring"]);
            } else if n == lay::HELLO_LEN {
                match lay::Hello::parse(&buf) {
                    Some(h) => {
                        // Consumed now that it is whole (it was only peeked).
                        sys::recv(fd, &mut buf, libc::MSG_DONTWAIT);
                        c.token = h.token;
                        c.greet = G_FOUND;
                        // A sink that reads rings itself says so in the same
                        // write: then it is worth a moment's wait for its
                        // `Reading` after the attach.
                        let mut m = [0u8; lay::SINK_MSG_LEN];
                        let k = sys::recv(fd, &mut m, libc::MSG_PEEK | libc::MSG_DONTWAIT);
                        if k == m.len() as isize
                            && lay::SinkMsg::parse(&m) == Some(lay::SinkMsg::Reads)
                        {
                            sys::recv(fd, &mut m, libc::MSG_DONTWAIT);
                            c.reads = true;
                        }
                    }
                    None => c.greet = G_NONE,
                }
            }
        } else if n == 0 || (sys::errno() != libc::EAGAIN && sys::errno() != libc::EINTR) {
            // The sink closed its side, or the socket failed: the next
            // send finds out.
            c.greet = G_NONE;
            crate::debug(&[b"no hello (the connection ended or failed): no shared ring"]);
        }
    }
    if c.greet != G_FOUND || c.v2 || c.pf_sent > 0 {
        return None;
    }
    let rfd = ring_fd_here();
    if !crate::fds::is_ring_fd(rfd) {
        crate::debug(&[b"the shared ring's memfd is gone (a raw close_range?): not attached"]);
        // The memfd was closed behind the library's back (a raw
        // close_range): the sink is served as an older one would be.
        // Never hand over whatever fd took the number.
        c.greet = G_NONE;
        return None;
    }
    if c.attach_len == 0 {
        // The owner word first: once the sink has the memfd, a death of
        // this process at any moment leaves it the ring to read.
        ring().set_owner(c.token);
        let pos = lay::RingPosition {
            pos: ring().tail(),
            skip: c.skip as u64,
        };
        let mut p = [0u8; ATTACH_MAX];
        let n = wire::write_prefix(
            &mut p,
            wire::Level::Info,
            config::get().platform.bytes(),
            wire::SELF_SOURCE.as_bytes(),
        )
        .unwrap_or(0);
        let body = n + lay::POSITION_LEN;
        c.attach[..8].copy_from_slice(&wire::header_version(wire::VERSION_RING, body));
        c.attach[8..8 + n].copy_from_slice(&p[..n]);
        c.attach[8 + n..8 + body].copy_from_slice(&pos.to_bytes());
        c.attach_len = 8 + body;
        c.attach_sent = 0;
    }
    while c.attach_sent < c.attach_len {
        let rest = &c.attach[c.attach_sent..c.attach_len];
        let with_fd = c.attach_sent == 0;
        match send_attach(fd, rest, if with_fd { rfd } else { -1 }) {
            Ok(n) => {
                c.attach_sent += n;
                c.delivered |= n > 0;
            }
            Err(e) if e == libc::EINTR => {}
            Err(e) if e == libc::EAGAIN || e == libc::EWOULDBLOCK => {
                return Some(Outcome::Blocked(fd))
            }
            Err(_) => {
                report(
                    b"lost the target, buffering:",
                    config::get().target_path.bytes(),
                );
                disconnect(true);
                return Some(Outcome::Down(retry_ms()));
            }
        }
    }
    c.v2 = true;
    ATTACHED.store(true, SeqCst);
    crate::debug(&[b"the sink holds the buffer (shared ring attached)"]);
    if !inline && c.reads {
        // A sink that reads rings itself says so as soon as it has taken
        // this one: a moment's wait for that word (on the consumer thread
        // only, and only for a sink that said it would) saves sending the
        // bytes queued meanwhile.
        sys::poll_one(fd, libc::POLLIN, HELLO_WAIT_MS);
    }
    None
}

/// One `sendmsg` of `bytes`, carrying `pass` (when not -1) by SCM_RIGHTS.
fn send_attach(fd: i32, bytes: &[u8], pass: i32) -> Result<usize, i32> {
    IN_USE.store(true, SeqCst);
    let r = if OUR_FD.load(SeqCst) != fd {
        Err(libc::EAGAIN)
    } else {
        // SAFETY: the msghdr refers to `bytes` and to a control buffer
        // sized and aligned for one fd (CMSG_SPACE(4) <= 24 bytes).
        unsafe {
            let mut iov = libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            };
            let mut ctl = [0u64; 4];
            let mut m: libc::msghdr = core::mem::zeroed();
            m.msg_iov = &mut iov;
            m.msg_iovlen = 1;
            if pass >= 0 {
                m.msg_control = ctl.as_mut_ptr() as *mut libc::c_void;
                m.msg_controllen = libc::CMSG_SPACE(4) as _;
                let cm = libc::CMSG_FIRSTHDR(&m);
                (*cm).cmsg_level = libc::SOL_SOCKET;
                (*cm).cmsg_type = libc::SCM_RIGHTS;
                (*cm).cmsg_len = libc::CMSG_LEN(4) as _;
                (libc::CMSG_DATA(cm) as *mut i32).write_unaligned(pass);
            }
            let n = sys::sendmsg(fd, &m, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT);
            if n < 0 {
                Err(sys::errno())
            } else {
                Ok(n as usize)
            }
        }
    };
    IN_USE.store(false, SeqCst);
    r
}

#[derive(Clone, Copy)]
struct FrameInfo {
    data_len: usize,
    src: u8,
    /// Position after the frame's last byte: record position and offset.
    end_pos: u64,
    end_skip: usize,
    iov_start: usize,
}

struct Batch {
    iov: [libc::iovec; IOV_N],
    niov: usize,
    hdr: [[u8; 8]; FR_N],
    frames: [FrameInfo; FR_N],
    nframes: usize,
    /// Entry headers of pieces of records (version 1): a frame holds at
    /// most two, its first and its last entry.
    ents: [[u8; wire::ENTRY_HEADER]; 2 * FR_N],
    nent: usize,
    /// Version 2: each frame ends with its position.
    v2: bool,
    pos: [[u8; lay::POSITION_LEN]; FR_N],
}

impl Batch {
    fn new() -> Batch {
        Batch {
            iov: [libc::iovec {
                iov_base: core::ptr::null_mut(),
                iov_len: 0,
            }; IOV_N],
            niov: 0,
            hdr: [[0; 8]; FR_N],
            frames: [FrameInfo {
                data_len: 0,
                src: 0,
                end_pos: 0,
                end_skip: 0,
                iov_start: 0,
            }; FR_N],
            nframes: 0,
            ents: [[0; wire::ENTRY_HEADER]; 2 * FR_N],
            nent: 0,
            v2: false,
            pos: [[0; lay::POSITION_LEN]; FR_N],
        }
    }

    fn clear(&mut self) {
        self.niov = 0;
        self.nframes = 0;
        self.nent = 0;
        self.v2 = false;
    }

    fn add_iov(&mut self, p: *const u8, len: usize) {
        self.iov[self.niov] = libc::iovec {
            iov_base: p as *mut libc::c_void,
            iov_len: len,
        };
        self.niov += 1;
    }

    fn wire_len(&self, i: usize, framed: bool) -> usize {
        let f = &self.frames[i];
        let trailer = if self.v2 { lay::POSITION_LEN } else { 0 };
        f.data_len + trailer + if framed { 8 + prefix(f.src).len() } else { 0 }
    }
}

/// What goes on the wire for the planned records.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Enc {
    /// The tapped bytes only (`LLT_FORMAT=raw`).
    Raw,
    /// `logserver_msg` version 0: header, prefix, the bytes.
    V0,
    /// Version 1: header, prefix, then each write as its entry header and
    /// its bytes (the record as it lies in the ring).
    V1,
    /// Version 2 (a connection the ring is attached to): version 1, then
    /// where in the ring the bytes after the frame start.
    V2,
}

impl Enc {
    fn of(format: Format) -> Enc {
        match format {
            Format::Raw => Enc::Raw,
            Format::Logserver => Enc::V0,
            Format::Logtap => Enc::V1,
        }
    }

    /// The encoding on this connection: version 2 once the ring is
    /// attached to it.
    fn on_conn(self) -> Enc {
        if self == Enc::V1 && conn().v2 {
            Enc::V2
        } else {
            self
        }
    }

    fn framed(self) -> bool {
        self != Enc::Raw
    }
}

/// Plans frames over the committed records from the tail.
///
/// A frame's `data_len` counts what follows its prefix (with version 1,
/// entry headers included) and never passes `MAX_DATA`. The first frame,
/// when part of it was already sent, is planned again exactly as before:
/// the records are unchanged and its length (`pf_data`) is the limit, so
/// every cut falls at the same byte.
fn plan(b: &mut Batch, enc: Enc) {
    let r = ring();
    let c = conn();
    let mut pos = r.tail();
    let mut skip = c.skip;
    let mut total = 0usize;
    let mut open = false;
    let v1 = enc == Enc::V1 || enc == Enc::V2;
    let ent = if v1 { wire::ENTRY_HEADER } else { 0 };
    // A version-2 frame keeps one iovec for its position.
    let tr = usize::from(enc == Enc::V2);
    b.v2 = enc == Enc::V2;
    // The hello was seen but a frame is half sent: plan that frame alone,
    // so the send can end on its boundary and the attach follow (a sink
    // that keeps the socket full would otherwise never see one).
    let only_first = c.greet == G_FOUND && !c.v2 && c.pf_sent > 0;
    'records: while let Some(rec) = r.peek(pos) {
        let Record {
            src,
            entry,
            data,
            len,
            next,
            ..
        } = rec;
        let mut off = skip.min(len);
        while off < len {
            let limit = if b.nframes == 1 && c.pf_data > 0 {
                c.pf_data
            } else {
                wire::MAX_DATA
            };
            let cur = b.nframes.wrapping_sub(1);
            if !open || b.frames[cur].src != src || b.frames[cur].data_len >= limit {
                if b.nframes == FR_N
                    || b.niov + 3 + 2 * tr > IOV_N
                    || total >= BATCH_MAX
                    || (only_first && b.nframes == 1)
                {
                    break 'records;
                }
                if tr == 1 && open_frames(b) {
                    close_frame(b);
                }
                let i = b.nframes;
                b.frames[i] = FrameInfo {
                    data_len: 0,
                    src,
                    end_pos: rec.pos,
                    end_skip: off,
                    iov_start: b.niov,
                };
                b.nframes += 1;
                open = true;
                if enc.framed() {
                    let hp = b.hdr[i].as_ptr();
                    b.add_iov(hp, 8);
                    let p = prefix(src);
                    b.add_iov(p.as_ptr(), p.len());
                }
            }
            let cur = b.nframes - 1;
            let limit = if cur == 0 && c.pf_data > 0 {
                c.pf_data
            } else {
                wire::MAX_DATA
            };
            let room = limit - b.frames[cur].data_len;
            // Room for an entry header and at least one byte.
            let take = if room > ent {
                (len - off).min(room - ent)
            } else {
                0
            };
            if take == 0 {
                // The in-flight frame is complete; the next byte starts a new one.
                open = false;
                continue;
            }
            if v1 && off == 0 && take == len {
                // A whole record: its entry header and data, as they lie
                // in the ring.
                if b.niov + tr >= IOV_N {
                    break 'records;
                }
                b.add_iov(entry, ent + len);
            } else {
                // A piece (or no entries at all): with version 1, an entry
                // header of its own says the piece's length.
                if b.niov + 2 + tr > IOV_N || b.nent == b.ents.len() {
                    break 'records;
                }
                if v1 {
                    // SAFETY: a committed record's entry header.
                    let h: &[u8; wire::ENTRY_HEADER] = unsafe { &*(entry as *const _) };
                    let origin = wire::EntryHeader::from_bytes(h).origin;
                    b.ents[b.nent] = wire::EntryHeader {
                        origin,
                        len: take as u32,
                    }
                    .to_bytes();
                    let ep = b.ents[b.nent].as_ptr();
                    b.nent += 1;
                    b.add_iov(ep, ent);
                }
                // SAFETY: off + take <= len, inside the committed record.
                b.add_iov(unsafe { data.add(off) }, take);
            }
            b.frames[cur].data_len += ent + take;
            off += take;
            total += ent + take;
            let (ep, es) = if off == len {
                // Version 2: past the padding that follows, so that the
                // position the sink holds is never padding the consumer
                // frees (and zeroes) without another frame.
                (if tr == 1 { r.past_pads(next) } else { next }, 0)
            } else {
                (rec.pos, off)
            };
            b.frames[cur].end_pos = ep;
            b.frames[cur].end_skip = es;
        }
        pos = next;
        skip = 0;
    }
    if tr == 1 && open_frames(b) {
        close_frame(b);
    }
    if tr == 1 && c.pf_data > 0 && b.nframes > 0 {
        (b.frames[0].end_pos, b.frames[0].end_skip) = c.pf_end;
    }
    if enc.framed() {
        let (version, trailer) = match enc {
            Enc::V2 => (wire::VERSION_RING, lay::POSITION_LEN),
            Enc::V1 => (wire::VERSION_ORIGIN, 0),
            _ => (wire::VERSION, 0),
        };
        for i in 0..b.nframes {
            let f = b.frames[i];
            b.hdr[i] = wire::header_version(version, prefix(f.src).len() + f.data_len + trailer);
            // The frame's end: where the sink resumes reading the ring.
            b.pos[i] = lay::RingPosition {
                pos: f.end_pos,
                skip: f.end_skip as u64,
            }
            .to_bytes();
        }
    }
}

/// Version 2: whether the last planned frame still lacks its position.
fn open_frames(b: &Batch) -> bool {
    b.nframes > 0 && b.niov > b.frames[b.nframes - 1].iov_start && {
        let last = b.iov[b.niov - 1].iov_base as *const u8;
        last != b.pos[b.nframes - 1].as_ptr()
    }
}

/// Version 2: appends the last frame's position (filled in at the end of
/// `plan`, once the frame's end is known).
fn close_frame(b: &mut Batch) {
    let p = b.pos[b.nframes - 1].as_ptr();
    b.add_iov(p, lay::POSITION_LEN);
}

/// Drops the first `n` bytes from the iovec list starting at `from`.
fn skip_iov(iov: &mut [libc::iovec], mut n: usize) -> usize {
    let mut i = 0;
    while i < iov.len() && n >= iov[i].iov_len {
        n -= iov[i].iov_len;
        i += 1;
    }
    if i < iov.len() && n > 0 {
        // SAFETY: n < iov_len, so the new base stays inside the same buffer.
        iov[i].iov_base = unsafe { (iov[i].iov_base as *mut u8).add(n) } as *mut libc::c_void;
        iov[i].iov_len -= n;
    }
    i
}

/// Accounts for `n` more bytes sent of the planned batch; frees what is done.
fn account(b: &Batch, n: usize, framed: bool) {
    let c = conn();
    c.delivered |= n > 0;
    let done = c.pf_sent + n;
    let mut acc = 0;
    let mut completed = 0;
    while completed < b.nframes && acc + b.wire_len(completed, framed) <= done {
        acc += b.wire_len(completed, framed);
        completed += 1;
    }
    if completed > 0 {
        let last = b.frames[completed - 1];
        c.skip = last.end_skip;
        ring().release_to(last.end_pos, last.end_skip);
        super::note_progress();
    }
    c.pf_sent = done - acc;
    c.pf_data = if c.pf_sent > 0 {
        let f = b.frames[completed];
        c.pf_end = (f.end_pos, f.end_skip);
        f.data_len
    } else {
        0
    };
}

fn emit_drop_notices() {
    for src in sources::tapped() {
        let (bytes, writes) = take_drops(src as usize);
        if writes == 0 {
            continue;
        }
        let mut buf = [0u8; 256 + config::PATH_MAX];
        let notice = wire::DropNotice {
            bytes,
            writes,
            source: source_name(src),
        };
        let n = notice.write(&mut buf).unwrap_or(0);
        if ring()
            .push(NOTICE, &[&buf[..n]], n, super::origin_now())
            .is_none()
        {
            restore_drops(src as usize, bytes, writes);
        } else {
            crate::debug(&[b"buffer full, dropped data: ", &buf[..n.saturating_sub(1)]]);
        }
    }
}

/// How long a reservation may stay pending at the tail before it is
/// abandoned. Writers fill a reservation in nanoseconds; one pending for
/// this long belongs to a writer that will not come back (a signal handler
/// that `longjmp`ed out of a push), and would otherwise stall the ring.
const ABANDON_MS: u64 = 2000;
/// And seen pending this many times (about 20 ms apart) while running.
const ABANDON_CHECKS: u32 = 100;

/// Abandons the reservation pending at the tail once it is old enough; its
/// size is reported as dropped.
fn give_up_abandoned() {
    let r = ring();
    let c = conn();
    let pos = r.tail();
    let now = sys::now_ms();
    if c.stuck_pos != pos {
        c.stuck_pos = pos;
        c.stuck_since = now;
        c.stuck_checks = 0;
        return;
    }
    // Both clock time and checks made while running: the clock alone
    // also runs while the whole process is stopped (SIGSTOP, a frozen
    // cgroup), when the writer is merely paused mid-copy.
    c.stuck_checks = c.stuck_checks.saturating_add(1);
    if now.saturating_sub(c.stuck_since) < ABANDON_MS || c.stuck_checks < ABANDON_CHECKS {
        return;
    }
    if let Some((src, len)) = r.abandon(pos) {
        super::count_drop(src, len as u64, 1);
        crate::debug(&[
            b"gave up a write whose writer never finished it (a longjmp out of a signal handler?)",
        ]);
    }
}

/// Sends what the ring holds. `inline` is true when called from a program
/// thread (exit, exec, after the final flush) rather than the consumer.
pub fn drain(inline: bool) -> Outcome {
    // With a private fd table only the consumer thread can reach the target.
    if inline && !inline_allowed() {
        return Outcome::Busy;
    }
    if !try_lock_drain() {
        return Outcome::Busy;
    }
    let _e = sys::ErrnoGuard::new();
    let out = drain_locked(inline);
    unlock_drain();
    out
}

fn drain_locked(inline: bool) -> Outcome {
    let cfg = config::get();
    let enc = Enc::of(cfg.format);
    let framed = enc.framed();
    emit_drop_notices();
    let mut b = Batch::new();
    loop {
        let r = ring();
        if conn().skip == 0 {
            r.release_pads();
        }
        if r.peek(r.tail()).is_none() {
            return if r.head() == r.tail() {
                // A refused target is tried again at its retry time even
                // with nothing to send: while it is refused, suppressed
                // standard streams are written straight through
                // (`super::write_through`), so nothing would be buffered
                // to make the attempt, and a target that became acceptable
                // (the real sink where a squatter was, a file fixed) would
                // never be used again.
                if refused() && cfg.target_kind != TargetKind::Pantavisor {
                    if let Err(wait) = ensure_connected(cfg.target_kind) {
                        return Outcome::Down(wait);
                    }
                }
                Outcome::Empty
            } else {
                give_up_abandoned();
                Outcome::Busy
            };
        }
        if cfg.target_kind == TargetKind::Pantavisor {
            match send_pantavisor(&mut b) {
                Ok(()) => continue,
                Err(out) => return out,
            }
        }
        let fd = match ensure_connected(cfg.target_kind) {
            Ok(fd) => fd,
            Err(wait) => return Outcome::Down(wait),
        };
        if conn().greet != G_NONE {
            if let Some(out) = ring_link(fd, inline) {
                return out;
            }
        }
        if conn().v2 && r.state() == lay::STATE_ABANDONED {
            // The process is leaving (exec, exit): the sink holding the
            // ring reads the rest at end of connection; nothing more is
            // sent, so nothing can arrive twice.
            return Outcome::Down(1000);
        }
        if conn().v2 {
            if let Err(out) = hear_sink(fd) {
                return out;
            }
            if conn().asks.reading && conn().pf_sent == 0 {
                return ask(fd);
            }
        }
        b.clear();
        let enc = enc.on_conn();
        plan(&mut b, enc);
        if b.nframes == 0 {
            return Outcome::Busy;
        }
        let first = skip_iov(&mut b.iov[..b.niov], conn().pf_sent);
        let res = send_iov(fd, &b.iov[first..b.niov], cfg.target_kind);
        match res {
            Ok(n) => {
                account(&b, n, framed);
                if conn().pf_sent > 0 {
                    return Outcome::Blocked(fd);
                }
            }
            Err(e) if e == libc::EAGAIN || e == libc::EWOULDBLOCK => return Outcome::Blocked(fd),
            Err(e) if e == libc::EINTR => {}
            Err(e) => {
                let path = cfg.target_path.bytes();
                if e == libc::ENOSPC || e == libc::EDQUOT {
                    report(b"target file is full, buffering:", path);
                } else {
                    report(b"lost the target, buffering:", path);
                }
                // A file already holds the bytes of a half-written frame;
                // a new socket connection must start on a frame boundary.
                disconnect(cfg.target_kind != TargetKind::File);
                return Outcome::Down(retry_ms());
            }
        }
        if b.nframes < FR_N && b.niov < IOV_N - 5 {
            // The plan took everything that was committed.
            emit_drop_notices();
        }
    }
}

/// Reads the sink's messages (its answers to read requests, its word
/// that it reads the ring itself) without waiting. Err: the connection
/// ended or failed.
fn hear_sink(fd: i32) -> Result<(), Outcome> {
    let c = conn();
    loop {
        IN_USE.store(true, SeqCst);
        let (n, e) = if OUR_FD.load(SeqCst) == fd {
            (
                sys::recv(fd, c.asks.rx_room(), libc::MSG_DONTWAIT),
                sys::errno(),
            )
        } else {
            // Moved by a `dup2` hook meanwhile: the next drain reads it.
            (-1, libc::EAGAIN)
        };
        IN_USE.store(false, SeqCst);
        if n == 0 || (n < 0 && e != libc::EAGAIN && e != libc::EWOULDBLOCK && e != libc::EINTR) {
            return Err(lost_target());
        }
        if n < 0 {
            return if e == libc::EINTR { continue } else { Ok(()) };
        }
        match c.asks.received(n as usize, c.v2) {
            Heard::Nothing => {}
            Heard::Reading => crate::debug(&[b"the sink reads the buffer itself (read requests)"]),
            Heard::Answered(p) => {
                ring().release_to(p, 0);
                c.skip = 0;
                super::note_progress();
            }
            Heard::OutOfTurn => crate::debug(&[b"the sink sent a message out of turn: ignored"]),
        }
    }
}

fn lost_target() -> Outcome {
    report(
        b"lost the target, buffering:",
        config::get().target_path.bytes(),
    );
    disconnect(true);
    Outcome::Down(retry_ms())
}

/// With a sink that reads the ring itself: asks it to read everything
/// committed (one small frame per request, at most `ASKED_MAX` waiting
/// for their answers) instead of sending the bytes.
fn ask(fd: i32) -> Outcome {
    let c = conn();
    let r = ring();
    loop {
        while c.asks.sending() {
            match send_attach(fd, c.asks.unsent(), -1) {
                Ok(n) => {
                    c.delivered |= n > 0;
                    if c.asks.sent(n) {
                        HANDED.store(c.asks.last().unwrap_or(0), SeqCst);
                    }
                }
                Err(e) if e == libc::EINTR => {}
                Err(e) if e == libc::EAGAIN || e == libc::EWOULDBLOCK => {
                    return Outcome::Blocked(fd)
                }
                Err(_) => {
                    // Answers that came before the end still count.
                    let _ = hear_sink(fd);
                    return if OUR_FD.load(SeqCst) == fd {
                        lost_target()
                    } else {
                        Outcome::Down(retry_ms())
                    };
                }
            }
        }
        if c.asks.full() {
            return Outcome::Awaiting(fd);
        }
        // Positions asked for are record boundaries past any padding, so
        // the next request starts where the last one ended.
        let from = c.asks.last().unwrap_or_else(|| r.tail());
        let mut end = from;
        // A request covers at most a quarter of the ring (or
        // `high_water`, if more): the sink answers a request once it has
        // read, delivered and written all of it, and writers waiting for
        // room take a long silence for a stalled sink (a request for a
        // full 8 MiB ring kept them waiting 80 ms and more, and they
        // dropped); a smaller bound meant more round trips, each a wait
        // for writers of a full ring. `ASKED_MAX` of them cover the ring, so a
        // sink that stops serves all of it before it goes.
        let most = super::high_water().max(r.capacity() as u64 / 4);
        while end - from < most {
            let Some(rec) = r.peek(end) else { break };
            end = r.past_pads(rec.next);
        }
        // Batched as frames are: a request per linger, unless the backlog
        // is large or someone waits (exit, a fork). Each costs the sink a
        // read and an answer, so one per few lines would cost more than
        // the bytes.
        let now = sys::now_ms();
        let due = urgent()
            || super::writers_wait()
            || end - from >= super::high_water()
            || now.saturating_sub(c.asked_at) >= config::get().flush_ms;
        if end == from || !due {
            return if c.asks.last().is_some() {
                Outcome::Awaiting(fd)
            } else {
                Outcome::Busy
            };
        }
        c.asked_at = now;
        c.asks.prepare(end, config::get().platform.bytes());
    }
}

fn send_iov(fd: i32, iov: &[libc::iovec], kind: TargetKind) -> Result<usize, i32> {
    IN_USE.store(true, SeqCst);
    // Re-read: a hook may have moved our fd just before IN_USE was set.
    let now_fd = OUR_FD.load(SeqCst);
    let r = if now_fd != fd {
        Err(libc::EAGAIN)
    } else if kind == TargetKind::File {
        // SAFETY: the iovecs point into the ring and our prefix/header buffers.
        let n = unsafe { sys::writev(fd, iov.as_ptr(), iov.len()) };
        if n < 0 {
            Err(sys::errno())
        } else {
            Ok(n as usize)
        }
    } else {
        // SAFETY: as above; msghdr refers to the iovec slice only.
        unsafe {
            let mut m: libc::msghdr = core::mem::zeroed();
            m.msg_iov = iov.as_ptr() as *mut libc::iovec;
            m.msg_iovlen = iov.len() as _;
            let n = sys::sendmsg(fd, &m, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT);
            if n < 0 {
                Err(sys::errno())
            } else {
                Ok(n as usize)
            }
        }
    };
    IN_USE.store(false, SeqCst);
    r
}

/// Pantavisor's server takes one message per connection and reads it
/// until EOF: each frame gets its own connection, sent whole, then closed.
fn send_pantavisor(b: &mut Batch) -> Result<(), Outcome> {
    let c = conn();
    let now = sys::now_ms();
    if now < c.next_attempt && !ATTEMPT_NOW.swap(false, SeqCst) {
        return Err(Outcome::Down(c.next_attempt - now));
    }
    b.clear();
    c.pf_sent = 0;
    c.pf_data = 0;
    // Pantavisor's server reads version 0 only, whatever LLT_FORMAT says.
    plan(b, Enc::V0);
    if b.nframes == 0 {
        return Err(Outcome::Busy);
    }
    let path = config::get().target_path.bytes();
    for i in 0..b.nframes {
        let start = b.frames[i].iov_start;
        let end = if i + 1 < b.nframes {
            b.frames[i + 1].iov_start
        } else {
            b.niov
        };
        let want = b.wire_len(i, true);
        let fd = match connect_new(TargetKind::Pantavisor) {
            Ok(fd) => fd,
            Err(_) => {
                set_away();
                report(b"pantavisor log socket unavailable, buffering:", path);
                c.next_attempt = sys::now_ms() + retry_ms();
                return Err(Outcome::Down(retry_ms()));
            }
        };
        OUR_FD.store(fd, SeqCst);
        let mut sent = 0;
        let mut tries = 0;
        let mut first = start;
        while sent < want && tries < 200 {
            // `plan` rebuilds the iovecs on every drain, so trimming the
            // sent prefix in place is fine.
            let skipped = skip_iov(&mut b.iov[first..end], 0);
            first += skipped;
            match send_iov(fd, &b.iov[first..end], TargetKind::Pantavisor) {
                Ok(0) => break,
                Ok(n) => {
                    sent += n;
                    first += skip_iov(&mut b.iov[first..end], n);
                }
                Err(e) if e == libc::EAGAIN || e == libc::EINTR => {
                    sys::poll_one(fd, libc::POLLOUT, 5);
                    tries += 1;
                }
                Err(_) => break,
            }
        }
        // SAFETY: shutdown on our own socket.
        unsafe { libc::shutdown(fd, libc::SHUT_WR) };
        OUR_FD.store(-1, SeqCst);
        release(fd);
        if sent < want {
            set_away();
            report(b"pantavisor log socket stalled, buffering:", path);
            c.next_attempt = sys::now_ms() + retry_ms();
            return Err(Outcome::Down(retry_ms()));
        }
        c.reported = false;
        c.ever = true;
        set_up();
        let f = b.frames[i];
        c.skip = f.end_skip;
        ring().release_to(f.end_pos, f.end_skip);
        super::note_progress();
    }
    Ok(())
}

/// With the drain lock held: whether the buffer holds bytes of a
/// suppressed tap file. They may only be written back at exit (appended
/// while the program runs, the program's own next write at its own offset
/// could overwrite them), so a spill while it runs must wait too.
pub fn holds_suppressed_file_bytes() -> bool {
    let r = ring();
    let mut pos = r.tail();
    while let Some(rec) = r.peek(pos) {
        if crate::tap::suppressed(rec.src)
            && matches!(sources::original(rec.src), Original::File(..))
        {
            return true;
        }
        pos = rec.next;
    }
    false
}

/// After a failed final flush: bytes of suppressed streams that never
/// reached the target go to their original destination, so suppression
/// never loses data. The rest already reached the original destination.
pub fn spill_undelivered() {
    let deadline = sys::now_ms() + 100;
    while !try_lock_drain() {
        if sys::now_ms() > deadline {
            return;
        }
        sys::sleep_ms(1);
    }
    let _e = sys::ErrnoGuard::new();
    spill_locked();
    unlock_drain();
}

/// With the drain lock held: moves every buffered record of a suppressed
/// stream to its original destination, in order, and frees the ring.
pub fn spill_locked() {
    let r = ring();
    let c = conn();
    // A frame half way out counts as undelivered: the sink discards an
    // unfinished frame when the connection closes.
    c.pf_sent = 0;
    c.pf_data = 0;
    let mut file_fd = -1;
    let mut file_src = crate::tap::NONE;
    let mut pos = r.tail();
    let mut skip = c.skip;
    let mut lost = 0usize;
    while let Some(rec) = r.peek(pos) {
        // SAFETY: a committed record's bytes.
        let data = unsafe { core::slice::from_raw_parts(rec.data, rec.len) };
        let data = &data[skip.min(data.len())..];
        if crate::tap::suppressed(rec.src) {
            let fd = match sources::original(rec.src) {
                Original::Fd(fd) => fd,
                Original::File(path, ident) => {
                    if file_src != rec.src {
                        if file_fd >= 0 {
                            sys::close(file_fd);
                        }
                        file_src = rec.src;
                        // Only into the very file the program opened and
                        // wrote under this name (never a file put at its
                        // path since, nor a new one, nor a FIFO).
                        file_fd = ident
                            .and_then(|(dev, ino)| safe_open::open_same_file(path, dev, ino))
                            .unwrap_or(-1);
                        if file_fd < 0 {
                            crate::debug(&[
                                b"exit: a tapped file is no longer the file the program wrote; its suppressed bytes are not written back: ",
                                &path[..path.len() - 1],
                            ]);
                        }
                    }
                    file_fd
                }
                Original::Nowhere => -1,
            };
            if fd >= 0 {
                write_all(fd, data);
            } else {
                lost += data.len();
            }
        } else if rec.src != NOTICE {
            lost += data.len();
            // Counted, so a target back later (a spill while the program
            // runs, see `write_through`) is told what it missed.
            r.add_drops(rec.src, data.len() as u64, 1);
        }
        pos = rec.next;
        skip = 0;
    }
    if file_fd >= 0 {
        sys::close(file_fd);
    }
    c.skip = 0;
    r.release_to(pos, 0);
    if lost > 0 {
        let mut n = [0u8; 20];
        crate::debug(&[
            b"target unreachable at exit; bytes not delivered (still in the original output): ",
            sys::fmt_u64(lost as u64, &mut n),
        ]);
    }
}

fn write_all(fd: i32, mut data: &[u8]) {
    while !data.is_empty() {
        let n = sys::write(fd, data);
        if n <= 0 {
            if n < 0 && sys::errno() == libc::EINTR {
                continue;
            }
            return;
        }
        data = &data[n as usize..];
    }
}
