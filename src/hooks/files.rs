//! Following fds: opens classify, dups copy, closes clear (see `tap`), and
//! the library's own target fd is kept out of the program's way.
//!
//! Invariants: errno and return values are the real call's; the library's
//! work after a successful call saves and restores errno. `close` of the
//! library's fd reports EBADF as if it were not open (the program never
//! opened it); `dup2`/`dup3` onto it first move the library's connection.

use crate::real;
use crate::stdio::{self, fileno_of};
use crate::sys::{self, ErrnoGuard};
use crate::tap::{self, NONE};
use libc::{c_char, c_int, c_uint, mode_t, FILE};

/// Called by the C open/openat shims after a successful open, with the
/// name the fd was opened under (relative to `dirfd`).
///
/// # Safety
/// `path` is null or the NUL-terminated name given to that open.
pub unsafe extern "C" fn llt_opened(fd: c_int, flags: c_int, dirfd: c_int, path: *const c_char) {
    let acc = flags & libc::O_ACCMODE;
    let writable = acc == libc::O_WRONLY || acc == libc::O_RDWR;
    // SAFETY: as this function's contract.
    unsafe { tap::opened_at(fd, writable, dirfd, path) };
}

/// Called by the C fcntl shim for F_DUPFD*.
pub extern "C" fn llt_duplicated(oldfd: c_int, newfd: c_int) {
    tap::duplicated(oldfd, newfd);
}

/// # Safety
/// Same contract as libc `close`.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    // (A vfork child closes its own copy, which is harmless.)
    if crate::fds::owns(fd) && !sys::in_vfork_child() {
        sys::set_errno(libc::EBADF);
        return -1;
    }
    crate::transport::before_std_fd_goes(fd);
    tap::closed(fd);
    real::close(fd)
}

/// # Safety
/// Same contract as libc `close_range`.
#[no_mangle]
pub unsafe extern "C" fn close_range(lo: c_uint, hi: c_uint, flags: c_int) -> c_int {
    // Marking close-on-exec closes nothing now, and ours already has it.
    if flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 {
        tap::closed_range(lo, hi);
    }
    let mut r = 0;
    for (a, b) in split_around_ours(lo, hi) {
        r = real::close_range(a, b, flags);
        if r != 0 {
            break;
        }
    }
    r
}

/// # Safety
/// Same contract as libc `closefrom`.
#[no_mangle]
pub unsafe extern "C" fn closefrom(lo: c_int) {
    let lo = lo.max(0) as c_uint;
    tap::closed_range(lo, c_uint::MAX);
    for (a, b) in split_around_ours(lo, c_uint::MAX) {
        if b == c_uint::MAX {
            real::closefrom(a as c_int);
        } else {
            real::close_range(a, b, 0);
        }
    }
}

/// [lo, hi] minus the library's fds, as at most six ranges.
fn split_around_ours(lo: c_uint, hi: c_uint) -> impl Iterator<Item = (c_uint, c_uint)> {
    let mut ours = crate::fds::ours().map(|fd| {
        if fd >= 0 && (lo..=hi).contains(&(fd as c_uint)) {
            Some(fd as c_uint)
        } else {
            None
        }
    });
    ours.sort_unstable();
    let mut out = [None; 6];
    let mut start = Some(lo);
    let mut n = 0;
    for o in ours.into_iter().flatten() {
        if let Some(s) = start {
            if o > s {
                out[n] = Some((s, o - 1));
                n += 1;
            }
        }
        start = o.checked_add(1).filter(|&s| s <= hi);
    }
    if let Some(s) = start {
        out[n] = Some((s, hi));
    }
    out.into_iter().flatten()
}

/// The program is about to `dup2` onto `fd`: move the library's own fd
/// there out of the way. A vfork child replaces only its own copy.
fn evacuate(fd: c_int) {
    if sys::in_vfork_child() {
        return;
    }
    let _e = ErrnoGuard::new();
    crate::fds::evacuate(fd);
}

/// # Safety
/// Same contract as libc `dup`.
#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    let r = real::dup(fd);
    if r >= 0 {
        tap::duplicated(fd, r);
    }
    r
}

/// # Safety
/// Same contract as libc `dup2`.
#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    evacuate(new);
    if old != new {
        crate::transport::before_std_fd_goes(new);
    }
    let r = real::dup2(old, new);
    if r >= 0 {
        tap::duplicated(old, new);
    }
    r
}

/// # Safety
/// Same contract as libc `dup3`.
#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    evacuate(new);
    if old != new {
        crate::transport::before_std_fd_goes(new);
    }
    let r = real::dup3(old, new, flags);
    if r >= 0 {
        tap::duplicated(old, new);
    }
    r
}

/// # Safety
/// Same contract as libc `creat`.
#[no_mangle]
pub unsafe extern "C" fn creat(path: *const c_char, mode: mode_t) -> c_int {
    let r = real::creat(path, mode);
    tap::opened_at(r, true, libc::AT_FDCWD, path);
    r
}

/// # Safety
/// Same contract as libc `creat64`.
#[no_mangle]
pub unsafe extern "C" fn creat64(path: *const c_char, mode: mode_t) -> c_int {
    let r = real::creat64(path, mode);
    tap::opened_at(r, true, libc::AT_FDCWD, path);
    r
}

/// Whether an fopen mode string allows writing.
unsafe fn mode_writes(mode: *const c_char) -> bool {
    if mode.is_null() {
        return false;
    }
    let m = core::ffi::CStr::from_ptr(mode).to_bytes();
    m.first().is_some_and(|&c| c == b'w' || c == b'a') || m.contains(&b'+')
}

unsafe fn after_fopen(f: *mut FILE, path: *const c_char, mode: *const c_char) -> *mut FILE {
    if !f.is_null() {
        tap::opened_at(fileno_of(f), mode_writes(mode), libc::AT_FDCWD, path);
        stdio::after_open(f);
    }
    f
}

/// # Safety
/// Same contract as libc `fopen`.
#[no_mangle]
pub unsafe extern "C" fn fopen(path: *const c_char, mode: *const c_char) -> *mut FILE {
    after_fopen(real::fopen(path, mode), path, mode)
}

/// # Safety
/// Same contract as libc `fopen64`.
#[no_mangle]
pub unsafe extern "C" fn fopen64(path: *const c_char, mode: *const c_char) -> *mut FILE {
    after_fopen(real::fopen64(path, mode), path, mode)
}

/// # Safety
/// Same contract as libc `fdopen`.
#[no_mangle]
pub unsafe extern "C" fn fdopen(fd: c_int, mode: *const c_char) -> *mut FILE {
    let f = real::fdopen(fd, mode);
    // The fd was classified when it was opened; look again only if it was
    // made by a call we do not see (inherited, a raw system call).
    if !f.is_null() {
        if tap::source(fd) == NONE {
            tap::opened(fd, mode_writes(mode));
        }
        stdio::after_open(f);
    }
    f
}

unsafe fn do_freopen(
    path: *const c_char,
    mode: *const c_char,
    f: *mut FILE,
    real: unsafe fn(*const c_char, *const c_char, *mut FILE) -> *mut FILE,
) -> *mut FILE {
    if f.is_null() {
        return real(path, mode, f);
    }
    let old = fileno_of(f);
    let src = stdio::source_of(f);
    if src != NONE {
        stdio::flockfile(f);
        stdio::flush_one(f, src);
        stdio::funlockfile(f);
    }
    let r = real(path, mode, f);
    if !r.is_null() {
        let e = ErrnoGuard::new();
        let new = fileno_of(r);
        if path.is_null() {
            // Only the mode changed: same open file.
        } else {
            if new != old {
                tap::closed(old);
            }
            tap::opened_at(new, mode_writes(mode), libc::AT_FDCWD, path);
        }
        stdio::after_open(r);
        drop(e);
    }
    r
}

/// # Safety
/// Same contract as libc `freopen`.
#[no_mangle]
pub unsafe extern "C" fn freopen(
    path: *const c_char,
    mode: *const c_char,
    f: *mut FILE,
) -> *mut FILE {
    do_freopen(path, mode, f, real::freopen)
}

/// # Safety
/// Same contract as libc `freopen64`.
#[no_mangle]
pub unsafe extern "C" fn freopen64(
    path: *const c_char,
    mode: *const c_char,
    f: *mut FILE,
) -> *mut FILE {
    do_freopen(path, mode, f, real::freopen64)
}

/// The stream's pending bytes are flushed (and tapped) under its lock, then
/// its fd is forgotten before the real close, so a number reused by
/// another thread right after is classified afresh.
///
/// # Safety
/// Same contract as libc `fclose`.
#[no_mangle]
pub unsafe extern "C" fn fclose(f: *mut FILE) -> c_int {
    if f.is_null() {
        return real::fclose(f);
    }
    let src = stdio::source_of(f);
    if src == NONE {
        return real::fclose(f);
    }
    let fd = fileno_of(f);
    stdio::flockfile(f);
    let flushed = stdio::flush_one(f, src);
    let e = sys::errno();
    stdio::funlockfile(f);
    crate::transport::before_std_fd_goes(fd);
    tap::closed(fd);
    let r = real::fclose(f);
    if flushed == libc::EOF {
        // The data was lost in our flush: fclose reports it, as glibc's would.
        sys::set_errno(e);
        return libc::EOF;
    }
    r
}

/// # Safety
/// Same contract as libc `fcloseall`.
#[no_mangle]
pub unsafe extern "C" fn fcloseall() -> c_int {
    let ours_ok = stdio::flush_all(false);
    let e = sys::errno();
    let r = real::fcloseall();
    if !ours_ok {
        sys::set_errno(e);
        return libc::EOF;
    }
    r
}
