//! Moving tapped bytes out of the program: the buffer, the consumer thread
//! and the exit/exec/fork hand-offs.
//!
//! Hooks only ever `push` into the ring (lock-free, never blocks). A
//! consumer thread, started at the first tapped write rather than in the
//! constructor (so a program that forks to daemonise or calls
//! `unshare(CLONE_NEWUSER)` first is not disturbed), drains the ring to the
//! target in large writes. It sleeps on a futex: a writer pays for a wake
//! system call only when the consumer is idle, or when it is lingering to
//! batch and the backlog passes a high-water mark.

mod asks;
pub mod spool;
pub mod target;

use crate::config;
use crate::ring::Ring;
use crate::sys;
use crate::tap::SOURCES;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

// Consumer sleep states (the futex word).
const AWAKE: u32 = 0;
const IDLE: u32 = 1;
const LINGER: u32 = 2;

// Consumer thread lifecycle.
const T_NONE: u32 = 0;
const T_RUNNING: u32 = 1;
const T_QUIESCE: u32 = 2;
/// Being created; `quiesce` waits until it is running (or failed).
const T_STARTING: u32 = 3;

/// Backlog at which a lingering consumer is woken early.
const HIGH_WATER: u64 = 256 << 10;

/// The backlog past which the consumer does not linger: `HIGH_WATER`, or a
/// quarter of a smaller ring (a 64 KiB ring never holds 256 KiB).
pub(crate) fn high_water() -> u64 {
    HIGH_WATER.min(ring().capacity() as u64 / 4).max(4096)
}

/// Whether writers wait for room in a full ring.
pub(crate) fn writers_wait() -> bool {
    WAITERS.load(Relaxed) > 0
}

struct RingCell(UnsafeCell<Ring>);
// SAFETY: the Ring is Sync; the cell is replaced only in the fork child
// handler, when the child has a single thread.
unsafe impl Sync for RingCell {}

static RING: RingCell = RingCell(UnsafeCell::new(
    // A zero-capacity ring is never pushed to: `init` replaces it before
    // the library turns active.
    Ring::none(),
));

static STATE: AtomicU32 = AtomicU32::new(AWAKE);
static THREAD: AtomicU32 = AtomicU32::new(T_NONE);
// SAFETY: pthread_t is an integer or a pointer; all-zero is a valid placeholder.
static mut THREAD_ID: libc::pthread_t = unsafe { core::mem::zeroed() };
/// Bumped (and futex-woken) by the consumer after each drain.
static PROGRESS: AtomicU32 = AtomicU32::new(0);
/// When the consumer last freed space (µs, monotonic).
static LAST_PROGRESS: AtomicU64 = AtomicU64::new(0);
/// Smoothed time between frees while a backlog was waiting (µs).
static GAP_US: AtomicU64 = AtomicU64::new(10_000);
/// Whether data was still waiting at the last free.
static BACKLOG: AtomicBool = AtomicBool::new(false);
/// Longest gap between frees while data waited (µs), for LLT_DEBUG_MODE.
static MAX_GAP_US: AtomicU64 = AtomicU64::new(0);

/// How long without progress makes a full buffer count as stalled: eight
/// times the usual gap between frees under load, between 50 and 100 ms. A
/// sink that is merely busy or descheduled on a crowded machine keeps the
/// writers waiting (nothing lost); a stopped one is noticed within a few
/// of its usual gaps, so the program is barely held up.
fn stall_us() -> u64 {
    (GAP_US.load(Relaxed) * 8).clamp(50_000, 100_000)
}
/// Writers waiting for room (so progress wakes them only when needed).
static WAITERS: AtomicU32 = AtomicU32::new(0);

/// The consumer freed space: record it and wake writers waiting for room.
pub(crate) fn note_progress() {
    let now = sys::now_us();
    let last = LAST_PROGRESS.swap(now, Relaxed);
    if BACKLOG.load(Relaxed) {
        let gap = now.saturating_sub(last).min(100_000);
        MAX_GAP_US.fetch_max(gap, Relaxed);
        let avg = GAP_US.load(Relaxed);
        GAP_US.store((avg * 7 + gap) / 8, Relaxed);
    }
    BACKLOG.store(ring().used() > 0, Relaxed);
    PROGRESS.fetch_add(1, Release);
    if WAITERS.load(SeqCst) > 0 {
        sys::futex_wake(&PROGRESS);
    }
}
/// Set while a drain is in progress; whoever holds it owns the connection.
static DRAINING: AtomicBool = AtomicBool::new(false);
/// Exit or exec under way: no lingering, fast reconnect attempts.
static URGENT: AtomicBool = AtomicBool::new(false);
/// The final drain has run; later taps are sent on the spot.
static LATE: AtomicBool = AtomicBool::new(false);
/// The pid this state belongs to (a vfork child shares our memory).
static OWNER_PID: AtomicI32 = AtomicI32::new(0);
/// The pid writes are stamped with when it is not this process's own:
/// `logtap-run`'s relay writes on behalf of its child (0: our own).
static WRITER_PID: AtomicI32 = AtomicI32::new(0);

/// Stamps what is pushed from now on with `pid` (`logtap-run`'s relay: the
/// program whose output it relays) instead of this process's pid.
pub fn set_writer_pid(pid: i32) {
    WRITER_PID.store(pid, Relaxed);
}

pub fn ring() -> &'static Ring {
    // SAFETY: see RingCell.
    unsafe { &*RING.0.get() }
}

/// Whether the ring is shared with the sink: a `socket:` target in the
/// logtap format (a sink reads the memfd; logserver readers and files
/// cannot use it).
fn wants_shared_ring() -> bool {
    let c = config::get();
    // (Nothing to tap: nothing to keep, and no file in the spool.)
    c.target_kind == config::TargetKind::Socket
        && c.format == config::Format::Logtap
        && anything_tapped()
}

/// Fresh zeroed memory for a ring's layout of `size` bytes: when `shared`
/// (and the kernel allows it), a file in the spool (`spool`) or else a
/// sealed memfd, mapped shared; else a private anonymous mapping. Returns
/// the address and the file's fd (-1: none); `spool::spooled()` says
/// which file it is.
fn new_memory(size: usize, shared: bool) -> Option<(*mut u8, i32)> {
    spool::forget();
    if shared {
        use logtap_wire::ring as lay;
        // Allocated at once: the control block and source table, and the
        // first records (`Ring::set_spooled`).
        let data = lay::data_offset(SOURCES);
        let first = (size - data).min(crate::ring::BACK_STEP as usize);
        let spooled = spool::create(size, [(0, lay::intents_offset(SOURCES)), (data, first)]);
        if spooled >= 0 {
            match map_shared(spooled, size) {
                Some(p) if spool::usable(p) => return Some((p, spooled)),
                Some(p) => {
                    crate::debug(&[
                        b"no MADV_POPULATE_WRITE (Linux 5.14): the ring is a memfd, lost if the process is killed while no sink holds it",
                    ]);
                    // SAFETY: the mapping just made, used by nothing.
                    unsafe { libc::munmap(p as *mut libc::c_void, size) };
                    spool::discard(spooled);
                }
                None => spool::discard(spooled),
            }
        }
        let fd = sys::sealed_memfd(c"logtap-ring", size);
        if fd >= 0 {
            if let Some(p) = map_shared(fd, size) {
                return Some((p, fd));
            }
            sys::close(fd);
        }
        let mut e = [0u8; 20];
        crate::debug(&[
            b"no shared ring (memfd or its mapping refused, errno ",
            sys::fmt_u64(sys::errno() as u64, &mut e),
            b"): a private buffer, lost if the process is killed",
        ]);
    }
    // SAFETY: a fresh private anonymous mapping; MAP_NORESERVE as above.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some((p as *mut u8, -1))
}

/// The whole of `fd` (`size` bytes: a sealed memfd, or a spooled file
/// whose pages are allocated before use) mapped shared; MAP_NORESERVE so
/// that only pages actually used cost memory.
fn map_shared(fd: i32, size: usize) -> Option<*mut u8> {
    // SAFETY: a new shared mapping of a whole file of ours.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_NORESERVE,
            fd,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p as *mut u8)
}

/// Fills the source-table slot of `src` (level and name) before any
/// record of it can be pushed: the standard streams and the notices when
/// the ring is made, a log file's source when it is registered. No
/// allocation, no lock.
pub fn announce_source(src: u8) {
    ring().set_source(
        src,
        crate::tap::sources::level(src),
        crate::tap::sources::full_name(src),
    );
}

/// A new ring's own facts: who made it, and whether its pages must be
/// allocated before use (a spooled file).
fn made_ring() {
    if spool::spooled() {
        ring().set_spooled(crate::ring::BACK_STEP as usize);
    }
    ring().set_maker(sys::getpid() as u32, config::get().platform.bytes());
}

/// Nothing in the ring is left for anyone to deliver: every record sent,
/// no drop unreported, no write in an intent slot.
fn nothing_left() -> bool {
    use logtap_wire::ring as lay;
    let r = ring();
    r.used() == 0
        && !drops_pending()
        && (0..r.intents_backed()).all(|i| {
            r.intent(i).is_none_or(|s| {
                intent_word(s, lay::INTENT_STATE_AT).load(Acquire) == lay::INTENT_IDLE
            })
        })
}

/// What did not leave stays in the spool for the next sink (the ring is
/// still there, so something is left in it): said with `LLT_DEBUG_MODE`.
fn kept_in_spool() -> bool {
    if !spool::spooled() {
        return false;
    }
    let mut n = [0u8; 20];
    crate::debug(&[
        b"the target did not take everything: ",
        sys::fmt_u64(ring().used(), &mut n),
        b" bytes kept in the spool for the next sink",
    ]);
    true
}

fn map_ring(cap: usize) -> bool {
    let size = Ring::layout_size(cap, SOURCES);
    let Some((p, fd)) = new_memory(size, wants_shared_ring()) else {
        return false;
    };
    // SAFETY: fresh zeroed page-aligned memory of the layout's size;
    // constructor only, before anything refers to the ring.
    unsafe { *RING.0.get() = Ring::format(p, cap, SOURCES) };
    if fd >= 0 {
        crate::fds::adopt_ring_fd(fd);
    }
    made_ring();
    SHARED.store(fd >= 0, Relaxed);
    for src in [crate::tap::STDOUT, crate::tap::STDERR, crate::tap::NOTICE] {
        announce_source(src);
    }
    for src in crate::tap::sources::tapped() {
        announce_source(src);
    }
    true
}

/// # Safety
/// Constructor only.
pub unsafe fn init() -> bool {
    OWNER_PID.store(sys::getpid(), Relaxed);
    if !map_ring(config::get().buffer_size) {
        return false;
    }
    if anything_tapped() {
        prewarm_thread_stack();
    }
    true
}

/// The process is leaving its image (exit, exec): the ring is the sink's
/// to read from the last position it received (see `logtap_wire::ring`),
/// and nothing more is sent on the connection it is attached to. Returns
/// whether a sink holds the ring (attached to a live connection): then
/// what the flush could not deliver is the sink's, not spilled.
pub fn abandon() -> bool {
    if OWNER_PID.load(Relaxed) != sys::getpid() {
        return false;
    }
    free_stale_intents();
    ring().set_state(logtap_wire::ring::STATE_ABANDONED);
    ring().owner() != 0
}

/// After `abandon`, the process image goes: a spooled ring with nothing
/// left in it leaves the spool; before an exec, by taking a name the next
/// image removes (`spool::before_exec`), so that a failed exec can take
/// it back.
pub fn leaving(exec: bool) {
    if OWNER_PID.load(Relaxed) != sys::getpid() || !spool::spooled() || !nothing_left() {
        return;
    }
    if exec {
        spool::before_exec(crate::fds::ring_fd());
    } else {
        spool::remove(crate::fds::ring_fd());
    }
}

/// `exec` failed: the process goes on with its ring.
pub fn resume() {
    if OWNER_PID.load(Relaxed) == sys::getpid() {
        ring().set_state(logtap_wire::ring::STATE_LIVE);
        spool::after_failed_exec(crate::fds::ring_fd());
    }
}

/// Stack size of the consumer thread (and of the constructor's warm-up).
const THREAD_STACK: usize = 256 << 10;

/// Starts `entry` on a new thread with THREAD_STACK bytes of stack and
/// every signal blocked; returns pthread_create's result and the thread.
///
/// # Safety
/// `entry` must be safe to run on its own thread.
unsafe fn spawn_blocked(
    entry: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void,
) -> (libc::c_int, libc::pthread_t) {
    let mut attr: libc::pthread_attr_t = core::mem::zeroed();
    libc::pthread_attr_init(&mut attr);
    libc::pthread_attr_setstacksize(&mut attr, THREAD_STACK);
    let mut all: libc::sigset_t = core::mem::zeroed();
    let mut old: libc::sigset_t = core::mem::zeroed();
    libc::sigfillset(&mut all);
    // The real function, not the library's own hook of it (which would
    // take this for the program blocking the fault signals, and disarm
    // the guarded copy: `crate::guarded`).
    crate::real::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    let mut tid: libc::pthread_t = core::mem::zeroed();
    let rc = libc::pthread_create(&mut tid, &attr, entry, core::ptr::null_mut());
    crate::real::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
    libc::pthread_attr_destroy(&mut attr);
    (rc, tid)
}

/// Creates and joins one thread with the consumer's stack size, so that
/// glibc keeps its stack, with its thread-local storage and DTV, in its
/// stack cache. The consumer starts at the first tapped write, which can
/// run in a signal handler that interrupted `malloc`; a `pthread_create`
/// that finds a cached stack of the right size reuses that DTV and calls
/// no allocator at all (a fresh one `calloc`s the DTV, which corrupted the
/// heap of a single-threaded program interrupted in `malloc`). Costs one
/// thread creation, about 0.1 ms, in the constructor of a process that
/// taps something; the process is single-threaded again afterwards (its
/// `unshare(CLONE_NEWUSER)` still works). musl allocates nothing there.
#[cfg(target_env = "gnu")]
fn prewarm_thread_stack() {
    extern "C" fn nothing(_: *mut libc::c_void) -> *mut libc::c_void {
        core::ptr::null_mut()
    }
    // SAFETY: the thread runs with every signal blocked and returns at once.
    unsafe {
        let (rc, tid) = spawn_blocked(nothing);
        if rc == 0 {
            libc::pthread_join(tid, core::ptr::null_mut());
            // The joined thread can linger in the kernel's thread group for
            // a moment after join returns: wait until it is gone, so that a
            // program's first call (a new user namespace) sees one thread.
            for _ in 0..10_000 {
                if sys::threads() == Some(1) {
                    break;
                }
                libc::sched_yield();
            }
        }
    }
}

#[cfg(not(target_env = "gnu"))]
fn prewarm_thread_stack() {}

/// Appends one write's bytes as one record, all or nothing. Returns false
/// (nothing stored) when the buffer cannot take them; the caller then
/// writes to the original destination instead (suppression). Writes of any
/// size go through `push_or_drop` or `push_prefix`, which cut them.
pub fn push(src: u8, parts: &[&[u8]]) -> bool {
    if let [one] = parts {
        return push_one(src, one);
    }
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len == 0 {
        return true;
    }
    let Some(r) = reserve(src, len) else {
        return false;
    };
    // SAFETY: the reservation holds `len` bytes for us alone.
    unsafe { copy_parts(parts, 0, r.data, len) };
    commit(r, len);
    true
}

/// `push` of one slice: the path of every tapped `write`.
#[inline]
pub fn push_one(src: u8, data: &[u8]) -> bool {
    if data.is_empty() {
        return true;
    }
    let Some(r) = reserve(src, data.len()) else {
        return false;
    };
    // SAFETY: the reservation holds `data.len()` bytes for us alone.
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), r.data, data.len()) };
    commit(r, data.len());
    true
}

/// The largest piece a big write is cut into. Pieces well below half the
/// ring let the consumer send one while the writer copies the next, and
/// make a write of any size fit, under the same flow control as a burst.
fn chunk_max() -> usize {
    (ring().capacity() / 4).clamp(64, 1 << 20)
}

/// Copies `len` bytes of `parts`, starting `from` bytes in, to `dst`.
///
/// # Safety
/// `dst` must have room for `len` bytes, and `parts` hold `from + len`.
unsafe fn copy_parts(parts: &[&[u8]], mut from: usize, mut dst: *mut u8, mut len: usize) {
    for p in parts {
        if len == 0 {
            break;
        }
        if from >= p.len() {
            from -= p.len();
            continue;
        }
        let n = (p.len() - from).min(len);
        core::ptr::copy_nonoverlapping(p.as_ptr().add(from), dst, n);
        dst = dst.add(n);
        len -= n;
        from = 0;
    }
}

/// Suppression while the target is refused: true when the
/// caller's suppressed write must go straight to its original destination
/// (as the exit spill would send it, but now), after the held bytes of
/// suppressed streams were given back there first, in order. Holding them
/// instead would show a program's output only at exit, or never when it
/// closes fds 1 and 2 first (`ls`, `cat`: close_stdout). False while the
/// target is up or not tried yet, or while the consumer holds the buffer
/// (the write is then buffered as usual, keeping the order).
pub fn write_through(src: u8) -> bool {
    // Only for a target refused for what it is (an unsafe file, a listener
    // of the wrong uid): it will not become acceptable, so holding bytes
    // back would only delay them to exit. A target merely away (a sink not
    // started yet, restarting) gets the bytes when it is back, as always.
    // Only the standard streams: a tap file's held bytes are appended at
    // its end, where the program's own next write (at its own offset)
    // could overwrite them, so they wait for exit as before.
    if !(src == crate::tap::STDOUT || src == crate::tap::STDERR)
        || !target::refused()
        || !crate::tap::suppressed(src)
        || OWNER_PID.load(Relaxed) != sys::getpid()
    {
        return false;
    }
    if ring().used() == 0 {
        return true;
    }
    if !try_lock_drain() {
        return false;
    }
    // The link changes only under the drain lock: a target that came back
    // meanwhile keeps its bytes (a half-sent frame must not be dropped).
    // Held bytes of a suppressed tap file wait for exit (see
    // `holds_suppressed_file_bytes`): then so does this write, behind them.
    if !target::refused() || target::holds_suppressed_file_bytes() {
        unlock_drain();
        return false;
    }
    let _e = sys::ErrnoGuard::new();
    target::spill_locked();
    unlock_drain();
    true
}

/// Before fd 1 or 2 is closed or replaced: when it carries a suppressed
/// stream and the target is not up, what the buffer holds goes to the
/// target now or, failing that, back to the original destination while it
/// is still open (the exit spill would find it gone).
pub fn before_std_fd_goes(fd: i32) {
    let src = crate::tap::source(fd);
    if !(fd == 1 || fd == 2)
        || src == crate::tap::NONE
        || !crate::tap::suppressed(src)
        || target::is_up()
        || !tap_started()
        || ring().used() == 0
        || OWNER_PID.load(Relaxed) != sys::getpid()
        || sys::in_vfork_child()
    {
        return;
    }
    let _e = sys::ErrnoGuard::new();
    if !flush(config::get().exit_timeout_ms) {
        target::spill_undelivered();
    }
}

/// Stores as much of one suppressed write as the buffer takes, in order:
/// all of it, nothing, or (a big write whose target stalled mid-way) a
/// prefix; the caller writes the rest to the original destination.
/// Returns the bytes stored. A big write is cut into pieces unless the
/// target is known to be away: its pieces could not leave, and would reach
/// the original destination (at exit) after the rest of the write. A
/// target not tried yet (the first write of a process) is not away: the
/// pieces wait for it as a burst does, bounded by the stall period.
pub fn push_prefix(src: u8, parts: &[&[u8]]) -> usize {
    if write_through(src) {
        return 0;
    }
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > chunk_max() {
        if target::away() {
            return 0;
        }
        push_pieces(src, parts, len)
    } else if push(src, parts) {
        len
    } else {
        0
    }
}

/// Stores a big write as consecutive records of at most `chunk_max`
/// bytes, each waiting for room as a burst does. Returns how many bytes
/// (a prefix) were stored; less than `len` only when the target is away
/// or stalled.
///
/// Other threads' records can land between two pieces, so a piece ends
/// after the last newline inside it when there is one: others' lines then
/// fall only between whole lines of this write. (A single line longer
/// than a piece can still be split by another thread's record.)
#[cold]
fn push_pieces(src: u8, parts: &[&[u8]], len: usize) -> usize {
    let piece = chunk_max();
    let mut done = 0;
    while done < len {
        let mut n = (len - done).min(piece);
        if done + n < len {
            if let Some(nl) = last_newline(parts, done, n) {
                n = nl + 1;
            }
        }
        let Some(r) = reserve(src, n) else {
            break;
        };
        // SAFETY: the reservation holds `n` bytes; parts hold `len`.
        unsafe { copy_parts(parts, done, r.data, n) };
        commit(r, n);
        done += n;
    }
    done
}

/// The offset, within the `len` bytes of `parts` starting `from` bytes
/// in, of the last newline there.
fn last_newline(parts: &[&[u8]], from: usize, len: usize) -> Option<usize> {
    let mut found = None;
    let mut at = 0; // offset of `p` in the whole write
    for p in parts {
        let (start, end) = (from.max(at), (from + len).min(at + p.len()));
        if start < end {
            if let Some(i) = p[start - at..end - at].iter().rposition(|&b| b == b'\n') {
                found = Some(start + i - from);
            }
        }
        at += p.len();
        if at >= from + len {
            break;
        }
    }
    found
}

/// Reserves room for up to `max` bytes whose exact count is known only
/// after a call (see `stdio`); publish with `commit`.
#[inline]
pub fn reserve(src: u8, max: usize) -> Option<crate::ring::Reservation> {
    match ring().reserve(src, max) {
        Some(res) => Some(res),
        None => reserve_when_full(src, max),
    }
}

#[cold]
fn reserve_when_full(src: u8, max: usize) -> Option<crate::ring::Reservation> {
    let r = ring();
    // (A spooled ring on a full filesystem may hold less than its size.)
    if max > r.max_record() || !r.could_hold(max) {
        return None;
    }
    // Full. While the target is taking data, wait for room, as a write to
    // a pipe with a slow reader would: the program is slowed to the pace
    // of the pipeline instead of losing lines. Once nothing has moved for
    // `stall_us` (a paused, stopped or vanished target), nobody waits.
    loop {
        // (A vfork child may wait too: the parent's consumer drains the ring.)
        if THREAD.load(Relaxed) != T_RUNNING || target::away() {
            return None;
        }
        let last = LAST_PROGRESS.load(Relaxed);
        if sys::now_us().saturating_sub(last) > stall_us() {
            return None;
        }
        let _e = sys::ErrnoGuard::new();
        WAITERS.fetch_add(1, SeqCst);
        let seen = PROGRESS.load(Acquire);
        wake_consumer();
        sys::futex_wait(&PROGRESS, seen, 5);
        WAITERS.fetch_sub(1, SeqCst);
        if let Some(res) = r.reserve(src, max) {
            return Some(res);
        }
    }
}

/// Where and when a write happens now: the wall clock and this process's
/// pid as it sees itself (cached: `init`, and `after_fork_child` in a new
/// child). The clock is `CLOCK_REALTIME` (`sys::realtime_ns`; about 32 ns
/// on the project's machine when quiet, 90 ns loaded), read only for the
/// format whose frames carry it. The coarse clock (8 ns, 25 ns loaded) was
/// used before: it is the time of the last kernel tick, and on a loaded
/// virtual machine it was seen 23 ms behind the write, outside the 20 ms a
/// line's time must keep. docs/DESIGN.md ("Origin").
#[inline]
pub fn origin_now() -> logtap_wire::WriteOrigin {
    logtap_wire::WriteOrigin {
        // Only version-1 frames carry the time (`LLT_FORMAT=logtap`): the
        // other formats, Pantavisor's among them, skip the read.
        time_ns: if config::get().format == config::Format::Logtap {
            sys::realtime_ns()
        } else {
            0
        },
        pid: match WRITER_PID.load(Relaxed) {
            0 => OWNER_PID.load(Relaxed) as u32,
            p => p as u32,
        },
    }
}

/// Publishes the first `len` bytes of a reservation written at `origin`.
#[inline]
fn commit_at(r: crate::ring::Reservation, len: usize, origin: logtap_wire::WriteOrigin) {
    let used = ring().commit(r, len, origin);
    if len > 0 {
        published(used);
    }
}

/// Publishes the first `len` bytes of a reservation, stamped with the
/// time of this call (the write has just reached, or is about to reach,
/// its fd) and the writer's pid.
#[inline]
pub fn commit(r: crate::ring::Reservation, len: usize) {
    let used = ring().commit(r, len, origin_now());
    if len > 0 {
        published(used);
    }
}

/// Counts bytes lost to the target (reported in a drop notice), and makes
/// sure a consumer exists to report them: a drop can be the first thing a
/// process taps, or the last.
pub(crate) fn count_drop(src: u8, bytes: u64, writes: u64) {
    ring().add_drops(src, bytes, writes);
    let _e = sys::ErrnoGuard::new();
    if THREAD.load(Relaxed) == T_NONE && OWNER_PID.load(Relaxed) == sys::getpid() {
        start_thread();
    }
    wake_consumer();
}

/// Whether a drop is counted but not yet reported.
fn drops_pending() -> bool {
    ring().drops_pending()
}

#[inline]
fn published(used: u64) {
    // A vfork child shares our memory but not our threads: a thread it
    // started would die with it while looking alive to the parent.
    if THREAD.load(Relaxed) == T_NONE && OWNER_PID.load(Relaxed) == sys::getpid() {
        start_thread();
    }
    let st = STATE.load(SeqCst);
    if (st == IDLE || (st == LINGER && used >= high_water() && target::unhanded() >= high_water()))
        && STATE.swap(AWAKE, SeqCst) != AWAKE
    {
        // The only system call of an ordinary push: keep errno intact.
        let _e = sys::ErrnoGuard::new();
        sys::futex_wake(&STATE);
    }
    if LATE.load(Relaxed) && OWNER_PID.load(Relaxed) == sys::getpid() {
        let _e = sys::ErrnoGuard::new();
        if target::private_fds() {
            wake_consumer();
        } else {
            target::drain(true);
        }
    }
}

/// Pushes, or counts what was lost: a big write may be stored in part
/// (its first pieces) when the target goes away mid-write; the drop
/// notice then names exactly the bytes that were not.
/// Everything a push can do besides copying (waking the consumer, starting
/// it, waiting for room) keeps errno as it was, so hooks need no guard.
pub fn push_or_drop(src: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > chunk_max() {
        let stored = push_pieces(src, parts, len);
        if stored < len {
            count_drop(src, (len - stored) as u64, 1);
        }
    } else if !push(src, parts) {
        count_drop(src, len as u64, 1);
    }
}

/// Takes the drop counts of `src` (consumer side).
pub(crate) fn take_drops(src: usize) -> (u64, u64) {
    ring().take_drops(src as u8)
}

pub(crate) fn restore_drops(src: usize, bytes: u64, writes: u64) {
    ring().add_drops(src as u8, bytes, writes);
}

/// Whether a consumer thread exists (started, perhaps not yet running).
pub(crate) fn consumer_running() -> bool {
    THREAD.load(Acquire) != T_NONE
}

/// After the library's final flush at exit.
pub fn late() -> bool {
    LATE.load(Relaxed)
}

pub(crate) fn urgent() -> bool {
    URGENT.load(Relaxed)
}

fn start_thread() {
    if THREAD
        .compare_exchange(T_NONE, T_STARTING, AcqRel, Relaxed)
        .is_err()
    {
        return;
    }
    let _e = sys::ErrnoGuard::new();
    // SAFETY: all signals are blocked in the new thread, so the program's
    // handlers only ever run on the program's own threads.
    unsafe {
        let (rc, tid) = spawn_blocked(consumer_main);
        if rc == 0 {
            THREAD_ID = tid;
            // A new consumer gets a stall period to connect and free room
            // before writers stop waiting for it.
            LAST_PROGRESS.store(sys::now_us(), Relaxed);
            THREAD.store(T_RUNNING, Release);
            crate::debug(&[b"consumer thread started"]);
        } else {
            THREAD.store(T_NONE, Release);
        }
    }
}

extern "C" fn consumer_main(_: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: prctl with a NUL-terminated name only renames this thread.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"logtap".as_ptr()) };
    target::enter_private_fd_table();
    let flush_ms = config::get().flush_ms;
    loop {
        if THREAD.load(Acquire) == T_QUIESCE {
            target::leave_private_fd_table();
            return core::ptr::null_mut();
        }
        let out = target::drain(false);
        PROGRESS.fetch_add(1, Release);
        sys::futex_wake(&PROGRESS);
        if THREAD.load(Acquire) == T_QUIESCE {
            target::leave_private_fd_table();
            return core::ptr::null_mut();
        }
        match out {
            target::Outcome::Empty => {
                STATE.store(IDLE, SeqCst);
                if ring().head() == ring().tail() && THREAD.load(Acquire) != T_QUIESCE {
                    sys::futex_wait(&STATE, IDLE, 10_000);
                }
                STATE.store(AWAKE, SeqCst);
                // Linger a little so a burst leaves in few large writes.
                if !urgent() {
                    linger(flush_ms);
                }
            }
            target::Outcome::Blocked(fd) => {
                sys::poll_one(fd, libc::POLLOUT, 100);
            }
            // Sleep until the next attempt is due, exit or not: a flush
            // that wants an attempt now wakes us (and asks for it).
            target::Outcome::Down(wait_ms) => rest(wait_ms.min(1000)),
            // A writer is mid-copy (or another drain runs): batch up meanwhile.
            target::Outcome::Busy => linger(flush_ms),
            // The sink reads what was asked for: wait for its answer,
            // which frees room (a flush in progress asks for more sooner).
            target::Outcome::Awaiting(fd) => {
                // Writers cannot wake a poll: what they commit meanwhile is
                // asked for at the answer or after this long (a linger's).
                let ms = if urgent() {
                    2
                } else {
                    flush_ms.clamp(1, 100) as i32
                };
                sys::poll_one(fd, libc::POLLIN, ms);
            }
        }
    }
}

fn linger(ms: u64) {
    STATE.store(LINGER, SeqCst);
    // What was asked of a sink that reads the ring itself is in hand: only
    // the rest counts as backlog.
    if target::unhanded() < high_water()
        && !writers_wait()
        && !urgent()
        && THREAD.load(Acquire) != T_QUIESCE
    {
        sys::futex_wait(&STATE, LINGER, ms);
    }
    STATE.store(AWAKE, SeqCst);
}

/// Sleeps until woken or `ms` passed, whatever the urgency.
fn rest(ms: u64) {
    STATE.store(LINGER, SeqCst);
    if THREAD.load(Acquire) != T_QUIESCE {
        sys::futex_wait(&STATE, LINGER, ms);
    }
    STATE.store(AWAKE, SeqCst);
}

fn wake_consumer() {
    if STATE.swap(AWAKE, SeqCst) != AWAKE {
        sys::futex_wake(&STATE);
    }
}

/// Delivers everything pushed so far (and the notice of anything dropped),
/// waiting at most `timeout_ms` for a target that is taking data. A target
/// known to be away is not waited for: one more attempt is made at once,
/// and when that fails too the flush gives up. Used at exit, `_exit`,
/// exec and `daemon`. Returns true when all arrived.
pub fn flush(timeout_ms: u64) -> bool {
    flush_with(timeout_ms, None)
}

/// How a flush on the way to a fatal signal's default action differs from
/// exit's: the code the signal interrupted never resumes, so it may have
/// left a reservation of its own half filled at the ring's tail, and the
/// handler may run on a small alternate signal stack.
#[derive(Clone, Copy)]
struct Dying {
    /// This thread may drain itself (a consumer-less process): only with
    /// stack room for a drain.
    inline_ok: bool,
    /// The interrupted thread is the program's only one, so a reservation
    /// stuck at the tail can only be its own.
    alone: bool,
}

/// How long a reservation may stay pending at the tail during a fatal
/// signal's flush before it is given up (its writer may be the very code
/// the signal interrupted). Another thread fills one in nanoseconds unless
/// it is descheduled; a thread descheduled longer than this and finishing
/// its copy after the tail moved on writes into space already reused, in
/// a process about to die.
const DYING_STUCK_MS: u64 = 100;

fn flush_with(timeout_ms: u64, dying: Option<Dying>) -> bool {
    if OWNER_PID.load(Relaxed) != sys::getpid() {
        // A vfork child: the memory and the consumer are the parent's.
        return false;
    }
    let _e = sys::ErrnoGuard::new();
    let goal = ring().head();
    let deadline = sys::now_ms() + timeout_ms;
    let failures = target::failures();
    URGENT.store(true, Relaxed);
    target::attempt_now();
    wake_consumer();
    let (mut stuck_at, mut stuck_since) = (u64::MAX, 0);
    let done = loop {
        if target::handed(goal) && !drops_pending() && target::idle() {
            break true;
        }
        if let Some(d) = dying {
            let (r, tail) = (ring(), ring().tail());
            if tail < r.head() && r.peek(tail).is_none() {
                // A reservation pending at the tail (the consumer releases
                // pads first, so the tail is its position).
                let now = sys::now_ms();
                if stuck_at != tail {
                    (stuck_at, stuck_since) = (tail, now);
                }
                let wait = if d.alone { 2 } else { DYING_STUCK_MS };
                if now.saturating_sub(stuck_since) >= wait {
                    if let Some((src, len)) = r.abandon(tail) {
                        r.add_drops(src, len as u64, 1);
                    }
                    wake_consumer();
                }
            }
        }
        // An attempt made during this flush failed: the target is away
        // (no socket, refused, no permission, disk full). Waiting would
        // only delay the program.
        if target::failures() != failures {
            break false;
        }
        let now = sys::now_ms();
        // A target refused for what it is (an unsafe file, a listener of
        // the wrong uid) will not become acceptable in time: do not wait.
        if now >= deadline || target::refused() {
            break false;
        }
        // A consumer (running or being created) does the sending; without
        // one, this thread sends itself.
        if THREAD.load(Acquire) != T_NONE {
            let seen = PROGRESS.load(Acquire);
            wake_consumer();
            sys::futex_wait(&PROGRESS, seen, (deadline - now).min(20));
        } else if dying.is_some_and(|d| !d.inline_ok) {
            // Nobody else sends, and this stack is too small to.
            break false;
        } else {
            match target::drain(true) {
                target::Outcome::Empty => {}
                target::Outcome::Busy => sys::sleep_ms(1),
                // Down counted a failure (seen above); Blocked: a paused
                // target, worth the bounded wait.
                _ => sys::sleep_ms((deadline - now).min(10)),
            }
        }
    };
    URGENT.store(false, Relaxed);
    done
}

/// Before a child process starts: send what is pending now, without
/// waiting for a slow or absent target, so the child's output cannot
/// overtake what the parent wrote before it (`echo a; cmd` in a shell).
pub fn hand_off_before_child() {
    if !tap_started() || ring().used() == 0 || OWNER_PID.load(Relaxed) != sys::getpid() {
        return;
    }
    let _e = sys::ErrnoGuard::new();
    // Promptly: a sink that reads the ring is asked at once, not at the
    // end of a linger. (Left set when an exit or exec flush on another
    // thread had set it.)
    let was = URGENT.swap(true, Relaxed);
    hand_off();
    if !was {
        URGENT.store(false, Relaxed);
    }
}

fn hand_off() {
    if target::private_fds() {
        // Only the consumer can reach the connection: ask it, and wait
        // while the target is taking data, at most 100 ms. A target that
        // takes nothing for a stall period is not waited for.
        let start = sys::now_us();
        let progress_at_start = LAST_PROGRESS.load(Relaxed);
        if BACKLOG.load(Relaxed) && start.saturating_sub(progress_at_start) > stall_us() {
            // Already known to be stalled: do not make every fork wait.
            return;
        }
        let goal = ring().head();
        wake_consumer();
        while !target::handed(goal) && !target::away() {
            let waited = sys::now_us().saturating_sub(start);
            let moved = LAST_PROGRESS.load(Relaxed) != progress_at_start;
            if waited > 100_000 || (waited > stall_us() && !moved) {
                break;
            }
            let seen = PROGRESS.load(Acquire);
            wake_consumer();
            sys::futex_wait(&PROGRESS, seen, 1);
        }
        return;
    }
    // A drain in progress on the consumer thread is a send of its own;
    // give it a moment, then try once ourselves.
    for _ in 0..2000 {
        match target::drain(true) {
            target::Outcome::Busy if !target::handed(ring().head()) => {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
            _ => return,
        }
    }
}

fn tap_started() -> bool {
    crate::tap::is_active() && anything_tapped()
}

/// The final hand-off at normal exit: flush, give undelivered data of
/// suppressed streams back to their original destination, then send any
/// later tap immediately.
pub fn at_exit() {
    let c = config::get();
    if c.debug {
        let (mut a, mut b) = ([0u8; 20], [0u8; 20]);
        crate::debug(&[
            b"exit: longest wait of a backlog for the target ",
            sys::fmt_u64(MAX_GAP_US.load(Relaxed) / 1000, &mut a),
            b" ms, stall threshold ",
            sys::fmt_u64(stall_us() / 1000, &mut b),
            b" ms",
        ]);
    }
    let delivered = flush(c.exit_timeout_ms);
    // The sink that holds the ring reads what did not leave (and what is
    // written after this, which is no longer sent): no spill then. Nor
    // when the ring stays in the spool: the next sink reads it there.
    let held = abandon() && target::attached();
    leaving(false);
    if !delivered && !held && !kept_in_spool() {
        target::spill_undelivered();
    }
    LATE.store(true, Relaxed);
}

/// The hand-off before the process dies of a fatal signal whose action
/// is the default (`hooks::signals`), from the signal handler: exit's flush
/// and spill, with what a handler must add. Everything it does is a system
/// call, an atomic or a bounded wait: the interrupted code may hold
/// anything. A drain lock it holds is never waited for; a reservation it
/// left pending at the tail is given up (and counted as dropped) instead
/// of stalling the flush until its deadline. `inline_ok` is false on a
/// small alternate signal stack, where no drain or spill (several KiB of
/// stack each) is run on this thread.
pub fn at_fatal_signal(inline_ok: bool) {
    if OWNER_PID.load(Relaxed) != sys::getpid()
        || sys::in_vfork_child()
        || (ring().used() == 0 && !drops_pending())
        || drain_held_here()
    {
        return;
    }
    let alone = sys::threads() == Some(1 + u64::from(THREAD.load(Acquire) == T_RUNNING));
    let dying = Dying { inline_ok, alone };
    if !flush_with(config::get().exit_timeout_ms, Some(dying)) && inline_ok && !kept_in_spool() {
        target::spill_undelivered();
    }
    // The process dies next: a spooled ring with nothing left leaves the
    // spool; otherwise it stays for the sink.
    leaving(false);
}

/// Stops the consumer thread and waits until it is gone (for
/// `unshare(CLONE_NEWUSER)`, which refuses a multi-threaded caller).
pub fn quiesce() {
    // A thread being created becomes running (or fails) in microseconds.
    while THREAD.load(Acquire) == T_STARTING {
        // SAFETY: sched_yield has no preconditions.
        unsafe { libc::sched_yield() };
    }
    if THREAD
        .compare_exchange(T_RUNNING, T_QUIESCE, AcqRel, Relaxed)
        .is_err()
    {
        return;
    }
    wake_consumer();
    // SAFETY: THREAD_ID is the joinable thread started by start_thread.
    unsafe { libc::pthread_join(THREAD_ID, core::ptr::null_mut()) };
    THREAD.store(T_NONE, Release);
}

/// In the child after fork: a fresh buffer and connection of its own. The
/// parent's buffered bytes stay the parent's to deliver, and the child
/// never writes into the parent's ring: a shared ring's mapping came along
/// (it is the parent's memfd), so a new one (a memfd again when the parent
/// had one) takes its place at the same address, with the same source
/// table, and its memfd takes the inherited one's number. When no memory
/// can be had at all, the child writes untapped.
pub fn after_fork_child() {
    let cap = config::get().buffer_size;
    let old = ring();
    let (old_base, old_size) = old.mapping();
    let old_fd = crate::fds::ring_fd();
    let mut ok = false;
    if let Some((p, fd)) = new_memory(Ring::layout_size(cap, SOURCES), old_fd >= 0) {
        // SAFETY: single-threaded child. The new memory is fresh and zeroed
        // of the layout's size; it is filled, then moved over the old
        // mapping's address (mremap replaces what was there), so the ring
        // keeps its address and nothing ever points at the parent's memory
        // again. On failure the new memory is unmapped and the old mapping
        // left alone.
        unsafe {
            let fresh = Ring::format(p, cap, SOURCES);
            fresh.copy_sources(old);
            let at = if old_base.is_null() || old_size != fresh.mapping().1 {
                if !old_base.is_null() {
                    libc::munmap(old_base as *mut libc::c_void, old_size);
                }
                p as *mut libc::c_void
            } else {
                libc::mremap(
                    p as *mut libc::c_void,
                    old_size,
                    old_size,
                    libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                    old_base as *mut libc::c_void,
                )
            };
            if at == libc::MAP_FAILED {
                libc::munmap(p as *mut libc::c_void, old_size);
                if fd >= 0 {
                    spool::discard(fd);
                }
            } else {
                *RING.0.get() = Ring::attach(at as *mut u8, cap, SOURCES);
                ok = true;
                if fd >= 0 {
                    // At the inherited number when possible: the fd's
                    // protection (the hooks) carries over unchanged.
                    crate::fds::replace_ring_fd(fd);
                } else {
                    // A private ring: the parent's memfd is of no use here.
                    crate::fds::drop_ring_fd();
                }
            }
        }
    }
    if !ok {
        // The inherited mapping is the parent's memory: never write there.
        crate::fds::drop_ring_fd();
        crate::tap::deactivate();
        // SAFETY: single-threaded child; the placeholder ring takes no
        // record.
        unsafe {
            if !old_base.is_null() {
                libc::munmap(old_base as *mut libc::c_void, old_size);
            }
            *RING.0.get() = Ring::none();
        }
    }
    if ok {
        made_ring();
    }
    // The only thread of the child starts with no intent slot: the table
    // is fresh (and may lie at another address).
    SHARED.store(ok && crate::fds::ring_fd() >= 0, Relaxed);
    INTENT.with(|c| c.set(core::ptr::null_mut()));
    THREAD.store(T_NONE, Relaxed);
    STATE.store(AWAKE, Relaxed);
    DRAINING.store(false, Relaxed);
    DRAIN_OWNER.store(0, Relaxed);
    URGENT.store(false, Relaxed);
    LATE.store(false, Relaxed);
    OWNER_PID.store(sys::getpid(), Relaxed);
    LAST_PROGRESS.store(sys::now_us(), Relaxed);
    BACKLOG.store(false, Relaxed);
    WAITERS.store(0, Relaxed);
    GAP_US.store(10_000, Relaxed);
    target::after_fork_child();
}

/// Which thread holds the drain lock (`pthread_self`, 0: none known): a
/// fatal signal's flush must not wait for a lock that the very code it
/// interrupted holds (see `at_fatal_signal`).
static DRAIN_OWNER: AtomicUsize = AtomicUsize::new(0);

fn this_thread() -> usize {
    // SAFETY: pthread_self has no preconditions (one read of the thread
    // pointer; async-signal-safe in practice, and not hooked).
    unsafe { libc::pthread_self() as usize }
}

pub(crate) fn try_lock_drain() -> bool {
    let ok = DRAINING
        .compare_exchange(false, true, Acquire, Relaxed)
        .is_ok();
    if ok {
        DRAIN_OWNER.store(this_thread(), Relaxed);
    }
    ok
}

pub(crate) fn unlock_drain() {
    DRAIN_OWNER.store(0, Relaxed);
    DRAINING.store(false, Release);
}

/// Whether the drain lock is held by the calling thread (by the code a
/// signal handler interrupted).
fn drain_held_here() -> bool {
    DRAINING.load(Acquire) && DRAIN_OWNER.load(Relaxed) == this_thread()
}

/// Whether any tapping can happen at all (skips the thread otherwise).
pub fn anything_tapped() -> bool {
    let c = config::get();
    c.tap_stdout || c.tap_stderr || !c.tap_files.is_empty()
}

// ---------------------------------------------------------------- a fatal
// signal during a tapped write
//
// A signal is delivered as the system call it interrupted returns: a
// program killed while it writes flat out is usually inside `write`, so
// the handler would run after the kernel took the bytes and before the
// hook stored them, and that write would never reach the target (measured:
// `seq` lost its last write in 5 of 10 SIGTERMs). While a hook is between
// the real call and the buffer, an asynchronous fatal signal is therefore
// only noted (`defer_fatal`, from the handler); the hook finishes storing
// what the call wrote, then the process dies of that signal
// (`Tapping::drop`). The handler runs without `SA_RESTART`, so a write
// blocked on a full pipe returns (EINTR or a short count) instead of
// waiting on: the program never sees that result, it dies first.

// Per thread: tapped calls in progress (low 16 bits) and a fatal signal
// noted meanwhile (above).
std::thread_local! {
    static TAPPING: core::cell::Cell<u32> = const { core::cell::Cell::new(0) };
}

/// What ends the process for a noted signal (`hooks::signals`), set once
/// in the constructor; none in `logtap-run`, which installs no handler.
static DIE: AtomicUsize = AtomicUsize::new(0);

/// # Safety
/// `die` must end the process with signal `sig` (it may deliver first).
pub unsafe fn set_fatal_action(die: unsafe fn(i32)) {
    DIE.store(die as usize, Release);
}

/// Held by a hook from before its real call until what it wrote is
/// stored. One thread-local access on each tapped call.
pub struct Tapping(*const core::cell::Cell<u32>);

impl Tapping {
    #[inline]
    pub fn enter() -> Tapping {
        TAPPING.with(|c| {
            c.set(c.get() + 1);
            Tapping(c as *const _)
        })
    }

    /// Whether this is the thread's only tapped call in progress (not a
    /// signal handler's write inside another one).
    #[inline]
    fn outermost(&self) -> bool {
        // SAFETY: as in `drop`.
        unsafe { &*self.0 }.get() & 0xffff == 1
    }
}

// ---------------------------------------------------------------- the
// write SIGKILL ends
//
// A write is stored after its system call returns, and SIGKILL takes
// effect as that call returns: the kernel has the write, the ring never
// gets it, and nothing can defer SIGKILL. With a shared ring each writing
// thread therefore owns an intent slot in the memfd (`logtap_wire::ring`):
// the write's bytes go there before the call (IN_FLIGHT), and the record's
// position once the call returned (COMMITTING), so a sink recovering a
// dead program's ring delivers that one write too. Only the outermost
// tapped call of a thread uses the slot: a signal handler's write inside
// it goes the old way (its record is stored after its call, lost only if
// SIGKILL ends exactly that nested call). Private rings die with the
// process: they skip all of this on one load of `SHARED`.

/// The ring is a memfd the sink holds.
static SHARED: AtomicBool = AtomicBool::new(false);

/// `INTENT` of a thread that found no free slot: it goes without.
const NO_INTENT: *mut u8 = core::ptr::dangling_mut::<u8>();

std::thread_local! {
    /// This thread's intent slot (null: not claimed yet). Const-initialised,
    /// no destructor: a slot whose thread is gone is taken over by another
    /// thread (`claim_intent`).
    static INTENT: core::cell::Cell<*mut u8> = const { core::cell::Cell::new(core::ptr::null_mut()) };
}

/// At exit or exec, before the ring is the sink's: the slots of threads
/// that are gone while their slot says in flight are freed. Such a thread
/// was cancelled inside its write (`pthread_cancel`), which glibc acts on
/// only while the call has transferred nothing, so the sink must not
/// deliver it. A live thread's write in flight stays the sink's to deliver
/// (the process ends under it, and the kernel may have it), and so does a
/// write a thread left by a handler's `siglongjmp` (whose call may have
/// completed before the handler ran: the sink errs on delivering).
fn free_stale_intents() {
    use logtap_wire::ring as lay;
    // (Never in a vfork child: `abandon` returns first, its pid is not
    // the owner's.)
    if !SHARED.load(Relaxed) {
        return;
    }
    let _e = sys::ErrnoGuard::new();
    let pid = sys::getpid();
    let r = ring();
    // Only allocated slots: a claim allocates its slot first.
    for i in 0..r.intents_backed() {
        let Some(s) = r.intent(i) else {
            return;
        };
        let state = intent_word(s, lay::INTENT_STATE_AT);
        let owner_word = intent_word(s, lay::INTENT_OWNER_AT);
        let owner = owner_word.load(Acquire);
        if owner == 0 || state.load(Acquire) != lay::INTENT_IN_FLIGHT {
            continue;
        }
        // SAFETY: signal 0 only asks whether the thread exists.
        let gone = unsafe { libc::syscall(libc::SYS_tgkill, pid, owner as i32, 0) } == -1
            && sys::errno() == libc::ESRCH;
        // Taken from the dead owner first, so that a live thread that
        // claimed the slot meanwhile (`claim_intent`) keeps its write.
        if gone
            && owner_word
                .compare_exchange(owner, 0, AcqRel, Relaxed)
                .is_ok()
        {
            state.store(lay::INTENT_IDLE, Release);
        }
    }
}

#[inline]
fn intent_word(slot: *mut u8, at: usize) -> &'static AtomicU32 {
    // SAFETY: a 4-aligned word of an intent slot of the mapped ring, which
    // stays mapped at this address while the process uses it.
    unsafe { &*(slot.add(at) as *const AtomicU32) }
}

/// Takes a free intent slot for this thread, or one whose owner thread is
/// gone; returns it and whether to remember the answer.
#[cold]
fn claim_intent() -> (*mut u8, bool) {
    if OWNER_PID.load(Relaxed) != sys::getpid() {
        // A vfork child: its thread id is not the parent thread's, whose
        // thread-local it shares. Go without, and do not remember.
        return (core::ptr::null_mut(), false);
    }
    let _e = sys::ErrnoGuard::new();
    let pid = sys::getpid();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
    let r = ring();
    for pass in 0..2 {
        for i in 0..logtap_wire::ring::INTENT_SLOTS {
            let Some(s) = r.intent(i) else {
                return (NO_INTENT, true);
            };
            // A spooled ring's slot is allocated before it is first read.
            // When it cannot be (its filesystem short of room), this write
            // goes without, and a later one asks again.
            if !r.back_intent(i) {
                return (core::ptr::null_mut(), false);
            }
            let owner = intent_word(s, logtap_wire::ring::INTENT_OWNER_AT);
            let cur = owner.load(Relaxed);
            let free = cur == 0
                || (pass == 1
                    // SAFETY: signal 0 only checks that the thread exists.
                    && unsafe { libc::syscall(libc::SYS_tgkill, pid, cur as i32, 0) } == -1
                    && sys::errno() == libc::ESRCH);
            if free && owner.compare_exchange(cur, tid, AcqRel, Relaxed).is_ok() {
                intent_word(s, logtap_wire::ring::INTENT_STATE_AT)
                    .store(logtap_wire::ring::INTENT_IDLE, Release);
                return (s, true);
            }
        }
    }
    (NO_INTENT, true)
}

/// A write announced in this thread's intent slot (null: none).
pub struct InFlight {
    slot: *mut u8,
    origin: logtap_wire::WriteOrigin,
}

/// Whether a tapped write can be announced in an intent slot at all (a
/// shared ring, the guarded copy usable on this thread). The static is
/// read first: a private ring pays no thread-local lookup.
#[inline]
pub fn intents_possible() -> bool {
    SHARED.load(Relaxed) && crate::guarded::usable()
}

/// A piece of a write not yet made: the caller's pointer and length, which
/// the kernel has not checked (see `crate::guarded`).
pub type Part = (*const u8, usize);

/// Before the real call of a tapped, not suppressed write of `len` bytes
/// made of `parts`: its bytes and origin into the thread's intent slot,
/// marked in flight. Nothing when the ring is private, the write does not
/// fit a slot, a tapped call of this thread is already in progress, the
/// guarded copy is not armed, or the parts cannot be read (a bad pointer:
/// the real call will say so).
#[inline]
pub fn intent_begin(t: &Tapping, src: u8, parts: &[Part], len: usize) -> InFlight {
    if !intents_possible() {
        return InFlight::none();
    }
    intent_begin_shared(t, src, parts, len).unwrap_or_else(InFlight::none)
}

/// Copies the first `len` bytes of `parts` to `dst` with the guarded copy:
/// false if a part faulted.
///
/// # Safety
/// `dst..dst+len` is writable memory of the library; the parts may point
/// anywhere.
unsafe fn copy_parts_guarded(parts: &[Part], mut dst: *mut u8, mut len: usize) -> bool {
    for &(p, l) in parts {
        if len == 0 {
            break;
        }
        let n = l.min(len);
        if n > 0 && !crate::guarded::copy(dst, p, n) {
            return false;
        }
        dst = dst.add(n);
        len -= n;
    }
    true
}

fn intent_begin_shared(t: &Tapping, src: u8, parts: &[Part], len: usize) -> Option<InFlight> {
    use logtap_wire::ring as lay;
    if len == 0 || len > lay::INTENT_DATA_MAX || len > chunk_max() || !t.outermost() {
        return None;
    }
    let slot = INTENT.with(|c| {
        let p = c.get();
        if !p.is_null() {
            return p;
        }
        let (p, keep) = claim_intent();
        if keep {
            c.set(p);
        }
        p
    });
    if slot.is_null() || slot == NO_INTENT {
        return None;
    }
    let origin = origin_now();
    // SAFETY: this thread's own slot (its owner word names this thread,
    // and only the outermost call uses it); the fields are plain memory
    // the sink reads only after this process is gone. The caller's parts
    // are read with the guarded copy (usable: checked by `intent_begin`).
    unsafe {
        (slot.add(lay::INTENT_TIME_AT) as *mut u64).write(origin.time_ns);
        (slot.add(lay::INTENT_PID_AT) as *mut u32).write(origin.pid);
        (slot.add(lay::INTENT_SRC_AT) as *mut u32).write(u32::from(src));
        (slot.add(lay::INTENT_LEN_AT) as *mut u64).write(len as u64);
        if !copy_parts_guarded(parts, slot.add(lay::INTENT_DATA_AT), len) {
            return None;
        }
    }
    intent_word(slot, lay::INTENT_STATE_AT).store(lay::INTENT_IN_FLIGHT, Release);
    Some(InFlight { slot, origin })
}

impl InFlight {
    /// No write announced.
    pub fn none() -> InFlight {
        InFlight {
            slot: core::ptr::null_mut(),
            origin: logtap_wire::WriteOrigin { time_ns: 0, pid: 0 },
        }
    }

    #[inline]
    pub fn active(&self) -> bool {
        !self.slot.is_null()
    }

    /// After the real call returned `r`: stores its first `r` bytes (taken
    /// from the slot, where they were copied) as the write's record,
    /// naming the record in the slot while it is being committed, then
    /// frees the slot. Keeps errno.
    pub fn finish(self, src: u8, r: isize) {
        use logtap_wire::ring as lay;
        let slot = self.slot;
        if r > 0 {
            let n = r as usize;
            match reserve(src, n) {
                Some(res) => {
                    // SAFETY: this thread's slot, as in `intent_begin`; the
                    // reservation holds `n` bytes, and the slot holds at
                    // least `n` (the call took at most what it was given).
                    unsafe {
                        (slot.add(lay::INTENT_LEN_AT) as *mut u64).write(n as u64);
                        (slot.add(lay::INTENT_POS_AT) as *mut u64).write(res.pos);
                        intent_word(slot, lay::INTENT_STATE_AT)
                            .store(lay::INTENT_COMMITTING, Release);
                        core::ptr::copy_nonoverlapping(slot.add(lay::INTENT_DATA_AT), res.data, n);
                    }
                    commit_at(res, n, self.origin);
                }
                None => count_drop(src, n as u64, 1),
            }
        }
        intent_word(slot, lay::INTENT_STATE_AT).store(lay::INTENT_IDLE, Release);
    }
}

impl Drop for Tapping {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: this thread's own thread-local cell, which lives as long
        // as the thread (no destructor: const-initialised, no Drop).
        let c = unsafe { &*self.0 };
        let v = c.get() - 1;
        c.set(v);
        // At the first guard to end, not the outermost: a program's handler
        // that interrupted an outer tapped call could run on (or block) for
        // any time after its own write.
        if v > 0xffff {
            c.set(v & 0xffff);
            die_of((v >> 16) as i32);
        }
    }
}

#[cold]
fn die_of(sig: i32) {
    let f = DIE.load(Acquire);
    if f != 0 {
        // SAFETY: set by `set_fatal_action` to a `unsafe fn(i32)`.
        unsafe { core::mem::transmute::<usize, unsafe fn(i32)>(f)(sig) };
    }
}

/// What the handler of an asynchronous fatal signal does about it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Defer {
    /// Noted: this thread is inside a tapped call; the process dies when
    /// the call's bytes are stored, or when the backstop the handler arms
    /// brings the signal back.
    Noted,
    /// Die now of this signal: a signal noted earlier on this thread came
    /// back (the backstop, or sent again) before the hook stored its
    /// bytes, so the hook is stuck (a write blocked on a pipe nobody
    /// reads, a stream lock another blocked thread holds) or was left
    /// (a program's handler jumped out of it).
    Now(i32),
    /// Not inside a tapped call: die now of the signal that arrived.
    No,
}

/// From the handler of an asynchronous fatal signal: whether this thread
/// is inside a tapped call, in which case the signal is noted and the
/// process dies when the call's bytes are stored.
pub fn defer_fatal(sig: i32) -> Defer {
    TAPPING.with(|c| {
        let v = c.get();
        if v > 0xffff {
            // Already noted: the first signal wins, as it would have
            // without the library.
            return Defer::Now((v >> 16) as i32);
        }
        if v & 0xffff == 0 || !(1..0xffff).contains(&sig) {
            return Defer::No;
        }
        c.set((v & 0xffff) | (sig as u32) << 16);
        Defer::Noted
    })
}
