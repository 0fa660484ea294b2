//! The one owner of the library's own fds in the program's fd table: where
//! they are placed, which numbers are ours, and getting out of the way.
//!
//! Three kinds of fd may live there: the target connection when the
//! consumer shares the program's table (`LLT_PRIVATE_FDS=false`, or
//! `unshare` forbidden by a seccomp profile), stdio's `/dev/null` for
//! suppressed streams, and the memfd holding the shared ring (`socket:`
//! target in the logtap format), kept for the life of the process so it
//! can be handed to the sink on every new connection. The memfd stays in
//! the program's table in both modes (a consumer with a private table
//! keeps its own copy at the same number, and a consumer started again
//! after `unshare(CLONE_NEWUSER)` copies it from the program's table).
//! None of them may take a number the program could get:
//!
//! - When the soft `RLIMIT_NOFILE` is below the hard one (and small enough
//!   that a table reaching past it stays cheap), our fds sit at or above the
//!   soft limit, where the program can never allocate (its `open` fails
//!   with EMFILE first; its `dup2` onto such a number fails with EBADF).
//!   Placing them there means raising the soft limit for the duration of
//!   one `fcntl`/`dup3` and putting it back.
//! - Otherwise (`ulimit -n N` in bash sets both limits; Docker's default is
//!   1048576 for both) every allowed number is one the program could get:
//!   ours take the highest ones below min(soft limit, 1024), so a program
//!   gets them only after all the others (README, Limits).
//!
//! A program that opens fds until EMFILE must not leave the library
//! without one. Above the soft limit, creating ours with the limit raised
//! always finds a number. Below it, in shared mode, a slot is reserved in
//! the constructor (a `/dev/null` placeholder at the chosen number), given
//! up for the connection at the last moment, and taken back when the
//! connection closes; a file target keeps two (its safe open holds two fds
//! at once), and a slot given up is filled again after the open (`refill`),
//! so a reopen, or a fork child's open, finds them too.
//!
//! Invariants: raw system calls only; nothing here allocates or locks.

use crate::sys;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::*};
use libc::c_int;

/// How many numbers, from the preferred one on, we try.
const SPREAD: c_int = 8;
/// Above this soft limit, a table reaching past it costs too much memory
/// (8 bytes per number and process): use the top of the first 1024.
const ABOVE_MAX: u64 = 4096;

/// The preferred number (-1: not set up; placement then falls back to
/// leaving the fd where the kernel put it).
static PREFERRED: AtomicI32 = AtomicI32::new(-1);
/// Whether PREFERRED is at or above the soft limit (search upwards, with
/// the limit raised) or below it (search downwards).
static ABOVE: AtomicBool = AtomicBool::new(false);
/// The soft limit seen at start (restored after each raise).
static SOFT: AtomicU64 = AtomicU64::new(0);
/// The reserved placeholder in shared mode, or -1.
static RESERVED: AtomicI32 = AtomicI32::new(-1);
/// A second placeholder, kept only for a file target: its safe open walks
/// the path holding a directory fd and the next one at once, so it needs
/// two numbers when the program has used every other one.
static RESERVED2: AtomicI32 = AtomicI32::new(-1);
/// Slots are kept (shared mode, below the soft limit), and how many: the
/// second only for a file target. A slot given up by `create`, or taken by
/// the program's `dup2` onto its number, is filled again (`refill`), so a
/// target reopened later (after a failure, in a fork child) still finds
/// the numbers it needs.
static KEEP: AtomicBool = AtomicBool::new(false);
static KEEP2: AtomicBool = AtomicBool::new(false);

fn limits() -> Option<(u64, u64)> {
    let mut r = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit64 on ourselves, reading into a valid struct.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0,
            libc::RLIMIT_NOFILE,
            core::ptr::null::<libc::rlimit64>(),
            &mut r as *mut libc::rlimit64,
        )
    };
    (rc == 0).then_some((r.rlim_cur, r.rlim_max))
}

fn set_soft(soft: u64, hard: u64) -> bool {
    let r = libc::rlimit64 {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: prlimit64 on ourselves with a valid struct.
    unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0,
            libc::RLIMIT_NOFILE,
            &r as *const libc::rlimit64,
            core::ptr::null_mut::<libc::rlimit64>(),
        ) == 0
    }
}

/// Runs `f` with the soft limit raised past our numbers when they lie
/// above it. The window is one system call long; a program thread that
/// runs out of fds exactly then gets a number above its limit instead of
/// EMFILE, and one calling getrlimit then sees the raised value. Needed
/// only when an fd of ours is created or moved: a connection lost or
/// refused, not a retry while the target is away (the socket of a failed
/// attempt is kept).
fn with_room<T>(f: impl FnOnce() -> T) -> T {
    if !ABOVE.load(Relaxed) {
        return f();
    }
    let Some((soft, hard)) = limits() else {
        return f();
    };
    let want = (PREFERRED.load(Relaxed) + SPREAD) as u64;
    let ours = want.min(hard);
    let raised = soft < want && set_soft(ours, hard);
    let r = f();
    // Put the old value back only if the limit is still the one we set: a
    // program thread that changed it meanwhile keeps its own.
    if raised && limits() == Some((ours, hard)) {
        set_soft(soft, hard);
    }
    r
}

/// Chooses where the library's fds go. Constructor only (one thread, so
/// growing the fd table is immediate); `shared` reserves the slot.
pub fn init(shared: bool, file_target: bool) {
    let Some((soft, hard)) = limits() else {
        return;
    };
    SOFT.store(soft, Relaxed);
    if soft < hard && soft + SPREAD as u64 <= hard && soft <= ABOVE_MAX {
        PREFERRED.store(soft as c_int, Relaxed);
        ABOVE.store(true, Relaxed);
    } else {
        let top = soft.min(1024) as c_int - 1;
        if top < 3 + SPREAD {
            return;
        }
        PREFERRED.store(top, Relaxed);
    }
    // Placing it grows the table now, while that is immediate.
    let Some(placed) = placeholder() else {
        return;
    };
    // Above the limit nothing needs reserving (see `create`).
    if shared && !ABOVE.load(Relaxed) {
        RESERVED.store(placed, SeqCst);
        KEEP.store(true, Relaxed);
        KEEP2.store(file_target, Relaxed);
        refill();
    } else {
        sys::close(placed);
    }
}

/// A `/dev/null` fd placed at one of our numbers, or None.
fn placeholder() -> Option<c_int> {
    // SAFETY: raw open of a constant path.
    let fd = unsafe {
        sys::openat(
            libc::AT_FDCWD,
            c"/dev/null".as_ptr() as *const u8,
            libc::O_RDONLY | libc::O_CLOEXEC,
            0,
        )
    } as c_int;
    if fd < 0 {
        return None;
    }
    let moved = place(fd);
    if moved == fd && !placed(fd) {
        // No number of ours was free: not a placeholder.
        sys::close(fd);
        return None;
    }
    Some(moved)
}

/// Whether `fd` is at one of the numbers we place our fds on.
fn placed(fd: c_int) -> bool {
    let pref = PREFERRED.load(Relaxed);
    pref >= 0
        && if ABOVE.load(Relaxed) {
            fd >= pref && fd < pref + SPREAD
        } else {
            fd <= pref && fd > pref - SPREAD
        }
}

/// Moves `fd` (one of ours, close-on-exec) to a number the program cannot
/// get, or the highest it can; closes the old number. Returns the new fd
/// (the same one when no such number is free).
pub fn place(fd: c_int) -> c_int {
    if fd < 0 || placed(fd) {
        return fd;
    }
    let n = copy_away(fd);
    if n < 0 {
        return fd;
    }
    sys::close(fd);
    n
}

/// A close-on-exec copy of `fd` at one of our numbers, or -1. The caller
/// closes (or lets the program replace) the old number.
pub fn copy_away(fd: c_int) -> c_int {
    let pref = PREFERRED.load(Relaxed);
    if pref < 0 {
        // Not set up: anywhere but the lowest numbers.
        let n = sys::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
        return if n >= 0 { n as c_int } else { -1 };
    }
    let above = ABOVE.load(Relaxed);
    with_room(|| {
        for i in 0..SPREAD {
            let want = if above { pref + i } else { pref - i };
            // F_DUPFD gives the lowest free number >= want: exactly `want`
            // when it is free; below the top, a higher free one is fine too.
            let n = sys::fcntl(fd, libc::F_DUPFD_CLOEXEC, libc::c_long::from(want));
            if n >= 0 {
                return n as c_int;
            }
        }
        -1
    })
}

/// `make` creates an fd of ours (a socket, a file); when the program has
/// used every number it fails with EMFILE, and the reserved placeholder is
/// given up so that it can succeed. The result is placed.
pub fn create(make: impl Fn() -> c_int) -> Result<c_int, c_int> {
    let mut fd = make();
    if fd < 0 && sys::errno() == libc::EMFILE {
        if ABOVE.load(Relaxed) {
            // Our numbers are above the program's limit: with it raised,
            // the kernel finds one.
            fd = with_room(&make);
        } else {
            let r = RESERVED.swap(-1, SeqCst);
            let r2 = RESERVED2.swap(-1, SeqCst);
            if r >= 0 || r2 >= 0 {
                for x in [r, r2].into_iter().filter(|&x| x >= 0) {
                    sys::close(x);
                }
                fd = make();
            }
        }
    }
    if fd < 0 {
        let e = sys::errno();
        refill();
        return Err(e);
    }
    let fd = place(fd);
    // The numbers the slots gave up are free again (a file target's walk
    // used two, the file keeps one): keep them ours for the next time.
    refill();
    Ok(fd)
}

/// Fills the empty reserved slots, when slots are kept: from a placeholder
/// still held (a copy at one of our numbers: no number of the program's
/// is touched even for a moment), else with a new one.
fn refill() {
    if !KEEP.load(Relaxed) {
        return;
    }
    for (slot, other, keep) in [
        (&RESERVED, &RESERVED2, true),
        (&RESERVED2, &RESERVED, KEEP2.load(Relaxed)),
    ] {
        if !keep || slot.load(SeqCst) >= 0 {
            continue;
        }
        let held = other.load(SeqCst);
        let fd = if held >= 0 {
            match copy_away(held) {
                n if n >= 0 => Some(n),
                _ => None,
            }
        } else {
            placeholder()
        };
        if let Some(fd) = fd {
            if slot.compare_exchange(-1, fd, SeqCst, Relaxed).is_err() {
                sys::close(fd);
            }
        }
    }
}

/// Our fd `fd` is no longer needed: it becomes the reserved placeholder
/// when there is none (so the number stays ours), else it is closed.
pub fn release(fd: c_int) {
    if fd < 0 {
        return;
    }
    if placed(fd) && !ABOVE.load(Relaxed) && KEEP.load(Relaxed) {
        for (slot, keep) in [(&RESERVED, true), (&RESERVED2, KEEP2.load(Relaxed))] {
            if keep && slot.compare_exchange(-1, fd, SeqCst, Relaxed).is_ok() {
                return;
            }
        }
    }
    sys::close(fd);
    refill();
}

/// Whether reserved slots are kept: the constructor found that the
/// consumer will share the program's table (`LLT_PRIVATE_FDS=false`, or
/// `unshare` refused by a seccomp filter).
pub fn reserving() -> bool {
    KEEP.load(Relaxed)
}

/// The placeholder is not needed (the consumer has a private fd table).
pub fn drop_reserve() {
    KEEP.store(false, Relaxed);
    for slot in [&RESERVED, &RESERVED2] {
        let r = slot.swap(-1, SeqCst);
        if r >= 0 {
            sys::close(r);
        }
    }
}

/// The memfd of the shared ring, or -1 (none: a private ring).
static RING_FD: AtomicI32 = AtomicI32::new(-1);

/// The memfd's identity (device, inode): a raw `close_range` system
/// call, which no hook sees, can close it and let the program reuse the
/// number; only an fd that is still the memfd is ever handed to the sink.
static RING_DEV: AtomicU64 = AtomicU64::new(0);
static RING_INO: AtomicU64 = AtomicU64::new(0);

/// Places the ring's memfd where the program cannot get it and keeps it.
pub fn adopt_ring_fd(fd: c_int) -> c_int {
    let fd = place(fd);
    if let Some(id) = sys::fstat(fd) {
        RING_DEV.store(id.dev, SeqCst);
        RING_INO.store(id.ino, SeqCst);
    }
    RING_FD.store(fd, SeqCst);
    fd
}

/// Whether `fd` (in whichever table the caller uses) is the ring's memfd.
pub fn is_ring_fd(fd: c_int) -> bool {
    fd >= 0
        && sys::fstat(fd)
            .is_some_and(|id| id.dev == RING_DEV.load(SeqCst) && id.ino == RING_INO.load(SeqCst))
}

/// The ring's memfd (-1: none).
pub fn ring_fd() -> c_int {
    RING_FD.load(SeqCst)
}

/// Forgets the ring's memfd (closing it): a fork child whose new ring is
/// private memory.
pub fn drop_ring_fd() {
    let fd = RING_FD.swap(-1, SeqCst);
    if is_ring_fd(fd) {
        sys::close(fd);
    }
}

/// A fork child's new memfd: it takes the inherited memfd's number when
/// that is still the memfd (so nothing about the number changes), else
/// it is placed like a new fd of ours.
pub fn replace_ring_fd(new: c_int) {
    let old = RING_FD.load(SeqCst);
    // SAFETY: dup3 onto a number that is verified to be our own memfd.
    if is_ring_fd(old) && unsafe { libc::syscall(libc::SYS_dup3, new, old, libc::O_CLOEXEC) } >= 0 {
        sys::close(new);
        if let Some(id) = sys::fstat(old) {
            RING_DEV.store(id.dev, SeqCst);
            RING_INO.store(id.ino, SeqCst);
        }
    } else {
        adopt_ring_fd(new);
    }
}

/// Whether `fd`, in the program's table, is one of the library's.
#[inline]
pub fn owns(fd: c_int) -> bool {
    fd >= 0
        && (RING_FD.load(SeqCst) == fd
            || crate::transport::target::owns(fd)
            || crate::stdio::owns(fd)
            || RESERVED.load(SeqCst) == fd
            || RESERVED2.load(SeqCst) == fd)
}

/// Every fd of ours in the program's table (-1 for none).
pub fn ours() -> [c_int; 5] {
    [
        RING_FD.load(SeqCst),
        crate::transport::target::our_fd(),
        crate::stdio::devnull_fd(),
        RESERVED.load(SeqCst),
        RESERVED2.load(SeqCst),
    ]
}

/// The program is about to `dup2` onto `fd`: move what of ours is there.
/// A placeholder is simply forgotten (the program's call replaces it).
pub fn evacuate(fd: c_int) {
    if !owns(fd) {
        return;
    }
    // At or above the soft limit the program's dup2 fails (EBADF) and
    // leaves ours in place.
    if ABOVE.load(Relaxed) && limits().is_some_and(|(soft, _)| fd as u64 >= soft) {
        return;
    }
    crate::transport::target::evacuate(fd);
    crate::stdio::evacuate(fd);
    if RING_FD.load(SeqCst) == fd {
        // A copy elsewhere; the program's dup2 replaces the old number. A
        // consumer with a private table keeps its own copy at the old
        // number, which the program's call does not reach; when moving
        // fails the sink simply gets no ring on later connections.
        RING_FD.store(copy_away(fd), SeqCst);
    }
    let _ = RESERVED.compare_exchange(fd, -1, SeqCst, Relaxed);
    let _ = RESERVED2.compare_exchange(fd, -1, SeqCst, Relaxed);
}

/// Whether the consumer thread will be able to leave the program's fd
/// table: `unshare(CLONE_FILES)` of a single-threaded process whose table
/// nobody else shares (after exec, nobody does) changes nothing, so trying
/// it in the constructor is a free probe of a seccomp filter.
/// Only tried when the process has a single thread: with more (another
/// preloaded library's constructor may start one) it would split the
/// table; then the answer is "perhaps" (true).
pub fn private_table_possible() -> bool {
    if sys::threads() != Some(1) {
        return true;
    }
    // SAFETY: see above; constructor only, one thread.
    unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_FILES) == 0 }
}
