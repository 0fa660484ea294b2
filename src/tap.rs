//! The decision: which file descriptors are tapped, and as which source.
//!
//! A table maps each fd number to the source it is tapped as (see
//! `sources`: stdout, stderr, one per log file), or nothing. Streams are
//! identified by the open file, not the number: `dup`/`dup2`/`fcntl(F_DUPFD)`
//! copy the entry (so bash's `>&2` and nginx's `dup2(log, 2)` keep their
//! meaning), every successful open for writing is classified (`classify`:
//! `LLT_TAP_FILE` paths by device and inode, patterns by the name it was
//! opened under; `/dev/stdout` and the like by identity), and every close
//! clears the entry (so a reused number never inherits a tap). A file
//! renamed by rotation keeps the entry of the fd it was opened on, so its
//! writes stay under the source of the name it had.
//!
//! Reads of the table are single relaxed loads, safe from any context.
//! Matching happens at open time only: a write costs one lookup.
//!
//! A vfork child shares this table with its parent but has an fd table of
//! its own: in one, nothing here changes and nothing is tapped (see
//! `sys::in_vfork_child`).

pub mod classify;
pub mod patterns;
pub mod sources;

pub use sources::{NONE, NOTICE, SOURCES, STDERR, STDOUT};

use crate::config;
use crate::sys::{self, Ident};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::*};

/// fds at or above this are never tapped as a log file (README, Limits).
pub const TABLE_SIZE: usize = 1 << 16;

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU8 = AtomicU8::new(NONE);
static TABLE: [AtomicU8; TABLE_SIZE] = [ZERO; TABLE_SIZE];

static ACTIVE: AtomicBool = AtomicBool::new(false);
static PASSIVE_UNTIL: AtomicU64 = AtomicU64::new(0);

struct Idents {
    stdout: Option<Ident>,
    stderr: Option<Ident>,
}
static mut IDENTS: Idents = Idents {
    stdout: None,
    stderr: None,
};

/// The source fd `fd` is tapped as, or NONE. The hot-path check.
#[inline(always)]
pub fn source(fd: libc::c_int) -> u8 {
    match TABLE.get(fd as u32 as usize) {
        Some(e) => e.load(Relaxed),
        None => NONE,
    }
}

/// Like `source`, but honours the start-up passive window. Called only
/// once `source` said yes, so the clock is read only for tapped writes.
#[inline]
pub fn active_source(fd: libc::c_int) -> u8 {
    let s = source(fd);
    if s == NONE || sys::in_vfork_child() {
        return NONE;
    }
    let until = PASSIVE_UNTIL.load(Relaxed);
    if until != 0 {
        if sys::now_ms() < until {
            return NONE;
        }
        PASSIVE_UNTIL.store(0, Relaxed);
    }
    s
}

#[inline]
pub fn suppressed(src: u8) -> bool {
    sources::suppressed(src)
}

pub fn is_active() -> bool {
    ACTIVE.load(Acquire)
}

/// Nothing is tapped from now on (a fork child that could get no buffer
/// of its own writes as without the library).
pub fn deactivate() {
    ACTIVE.store(false, Release);
}

/// fds whose entry the library has set (a bit each). fds above 2 that a
/// process inherited (`exec 3>&1` in a parent shell) are classified when
/// they are first duplicated.
static KNOWN: [AtomicU64; TABLE_SIZE / 64] = [const { AtomicU64::new(0) }; TABLE_SIZE / 64];

fn set(fd: libc::c_int, src: u8) {
    if let Some(e) = TABLE.get(fd as u32 as usize) {
        e.store(src, Relaxed);
        KNOWN[fd as usize / 64].fetch_or(1 << (fd % 64), Relaxed);
    }
}

fn known(fd: libc::c_int) -> bool {
    KNOWN
        .get(fd as u32 as usize / 64)
        .is_none_or(|w| w.load(Relaxed) & (1 << (fd % 64)) != 0)
}

/// Names of the variables through which the first tapped process tells
/// its descendants which files are the container's stdout and stderr.
const OUT_VAR: &core::ffi::CStr = c"LLT_STDOUT_IDENT";
const ERR_VAR: &core::ffi::CStr = c"LLT_STDERR_IDENT";

/// Sets up the table for fds 0-2 as they are at start.
///
/// "stdout" means the file the first process under the library had as
/// fd 1 (the container's stdout pipe), not whatever a process has as fd 1:
/// in `producer | consumer`, the producer's fd 1 is an internal pipe and
/// is not tapped. The first process exports the identities; descendants
/// compare their own fds with them.
///
/// # Safety
/// Constructor only: no other thread may be using this module.
pub unsafe fn init() {
    let c = config::get();
    let idents = &mut *core::ptr::addr_of_mut!(IDENTS);
    idents.stdout = if c.tap_stdout {
        inherited_or_own(OUT_VAR, 1)
    } else {
        None
    };
    idents.stderr = if c.tap_stderr {
        inherited_or_own(ERR_VAR, 2)
    } else {
        None
    };
    sources::init();
    for fd in 0..3 {
        let id = sys::fstat(fd);
        let file = match id {
            Some(id) => classify::file_source(fd, None, Some(&id)),
            None => NONE,
        };
        let src = match id {
            _ if file != NONE => file,
            // fds 1 and 2 keep their role when both are the same file (2>&1).
            Some(id) if fd == 1 && idents.stdout.is_some_and(|s| s.same_file(&id)) => STDOUT,
            Some(id) if fd == 2 && idents.stderr.is_some_and(|s| s.same_file(&id)) => STDERR,
            Some(id) if fd != 0 && idents.stdout.is_some_and(|s| s.same_file(&id)) => STDOUT,
            Some(id) if fd != 0 && idents.stderr.is_some_and(|s| s.same_file(&id)) => STDERR,
            _ => NONE,
        };
        set(fd, src);
    }
    if c.passive_ms > 0 {
        PASSIVE_UNTIL.store(sys::now_ms() + c.passive_ms, Relaxed);
    }
    ACTIVE.store(true, Release);
}

/// The identity a parent exported in `var`, else this process's `fd`
/// (then exported for our own children).
unsafe fn inherited_or_own(var: &core::ffi::CStr, fd: libc::c_int) -> Option<Ident> {
    let p = libc::getenv(var.as_ptr());
    if !p.is_null() {
        if let Some(id) = parse_ident(core::ffi::CStr::from_ptr(p).to_bytes()) {
            return Some(id);
        }
    }
    let id = sys::fstat(fd)?;
    let mut buf = [0u8; 48];
    let mut a = [0u8; 20];
    let mut b = [0u8; 20];
    let dev = sys::fmt_u64(id.dev, &mut a);
    let ino = sys::fmt_u64(id.ino, &mut b);
    buf[..dev.len()].copy_from_slice(dev);
    buf[dev.len()] = b':';
    buf[dev.len() + 1..dev.len() + 1 + ino.len()].copy_from_slice(ino);
    libc::setenv(var.as_ptr(), buf.as_ptr() as *const libc::c_char, 0);
    Some(id)
}

fn parse_ident(v: &[u8]) -> Option<Ident> {
    let colon = v.iter().position(|&c| c == b':')?;
    let num = |s: &[u8]| -> Option<u64> {
        if s.is_empty() || s.len() > 20 || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        s.iter().try_fold(0u64, |a, d| {
            a.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
    };
    Some(Ident {
        dev: num(&v[..colon])?,
        ino: num(&v[colon + 1..])?,
        mode: 0,
        rdev: 0,
    })
}

/// Classifies a freshly opened fd whose name is not known (`fdopen` of an
/// fd made by a call we do not see). `writable` is false for read-only
/// opens, which can never carry output.
pub fn opened(fd: libc::c_int, writable: bool) {
    if fd < 0 || !is_active() || sys::in_vfork_child() {
        return;
    }
    let _e = sys::ErrnoGuard::new();
    set(fd, if writable { classify(fd, None) } else { NONE });
}

/// Classifies a freshly opened fd, opened under `path` relative to
/// `dirfd` (`AT_FDCWD` for the current directory).
///
/// # Safety
/// `path` is null or the NUL-terminated name given to the open call.
pub unsafe fn opened_at(
    fd: libc::c_int,
    writable: bool,
    dirfd: libc::c_int,
    path: *const libc::c_char,
) {
    if fd < 0 || !is_active() || sys::in_vfork_child() {
        return;
    }
    let _e = sys::ErrnoGuard::new();
    let src = if !writable {
        NONE
    } else if path.is_null() {
        classify(fd, None)
    } else {
        // SAFETY: the program passed this NUL-terminated name to the open
        // that just succeeded.
        let name = unsafe { core::ffi::CStr::from_ptr(path) }.to_bytes();
        classify(fd, Some((dirfd, name)))
    };
    set(fd, src);
}

fn classify(fd: libc::c_int, name: Option<(libc::c_int, &[u8])>) -> u8 {
    let c = config::get();
    let want_std = c.tap_stdout || c.tap_stderr;
    if c.tap_files.is_empty() && !want_std {
        return NONE;
    }
    // Only patterns, no stdio: an open whose name matches no pattern makes
    // no system call at all.
    let id = if want_std || c.tap_files.has_exact() {
        match sys::fstat(fd) {
            Some(id) => Some(id),
            None => return NONE,
        }
    } else {
        None
    };
    let file = classify::file_source(fd, name, id.as_ref());
    if file != NONE || !want_std {
        return file;
    }
    let Some(id) = id else {
        return NONE;
    };
    // Memory devices (/dev/null, /dev/zero, /dev/kmsg…) are where programs
    // throw output away; sharing stdout's device never makes them stdout.
    if id.is_chr() && libc::major(id.rdev) == 1 {
        return NONE;
    }
    // SAFETY: IDENTS is written only in the constructor.
    let idents = unsafe { &*core::ptr::addr_of!(IDENTS) };
    if idents.stdout.is_some_and(|s| s.same_file(&id)) {
        return STDOUT;
    }
    if idents.stderr.is_some_and(|s| s.same_file(&id)) {
        return STDERR;
    }
    NONE
}

/// `fd` was replaced behind our back (inside libc, as `daemon` does):
/// classify it again from what it is now.
pub fn reclassify(fd: libc::c_int) {
    if is_active() && !sys::in_vfork_child() {
        let _e = sys::ErrnoGuard::new();
        set(fd, classify(fd, None));
    }
}

/// `newfd` now refers to the same open file as `oldfd`.
#[inline]
pub fn duplicated(oldfd: libc::c_int, newfd: libc::c_int) {
    if newfd >= 0 && oldfd != newfd && !sys::in_vfork_child() {
        if oldfd > 2 && !known(oldfd) && is_active() {
            let _e = sys::ErrnoGuard::new();
            set(oldfd, classify(oldfd, None));
        }
        set(newfd, source(oldfd));
    }
}

#[inline]
pub fn closed(fd: libc::c_int) {
    if !sys::in_vfork_child() {
        set(fd, NONE);
    }
}

pub fn closed_range(lo: u32, hi: u32) {
    if sys::in_vfork_child() {
        return;
    }
    let end = (hi as usize).min(TABLE_SIZE - 1);
    for e in TABLE.iter().take(end + 1).skip(lo as usize) {
        if e.load(Relaxed) != NONE {
            e.store(NONE, Relaxed);
        }
    }
}
