//! fd-level output: `write`, `writev`, `pwrite*`, `send*`.
//!
//! Invariants: no lock, no allocation, async-signal-safe, errno preserved.
//! Only the bytes the real call accepted are tapped; with suppression the
//! real call is skipped and the full count returned, unless the library's
//! buffer is full, in which case the real call runs (nothing is lost).

use crate::sys::ErrnoGuard;
use crate::tap::{self, NONE};
use crate::{real, transport};
use libc::{c_int, c_void, iovec, msghdr, off_t, size_t, ssize_t};

/// Taps `n` bytes of `iov` (the first `n` the real call wrote).
unsafe fn tap_iov(src: u8, iov: *const iovec, cnt: c_int, n: usize) {
    let _e = ErrnoGuard::new();
    let mut parts: [&[u8]; 16] = [&[]; 16];
    let mut left = n;
    let mut i = 0usize;
    let cnt = cnt.max(0) as usize;
    while left > 0 && i < cnt {
        let mut k = 0;
        while k < parts.len() && left > 0 && i < cnt {
            let v = &*iov.add(i);
            let take = v.iov_len.min(left);
            parts[k] = core::slice::from_raw_parts(v.iov_base as *const u8, take);
            left -= take;
            k += 1;
            i += 1;
        }
        transport::push_or_drop(src, &parts[..k]);
    }
}

unsafe fn iov_total(iov: *const iovec, cnt: c_int) -> Option<usize> {
    let mut t = 0usize;
    for i in 0..cnt.max(0) as usize {
        t = t.checked_add((*iov.add(i)).iov_len)?;
    }
    Some(t)
}

/// Suppressed iovec output: all into the buffer, or nothing.
unsafe fn suppress_iov(src: u8, iov: *const iovec, cnt: c_int) -> Option<ssize_t> {
    let total = iov_total(iov, cnt)?;
    if cnt <= 0 || cnt > 16 || total > isize::MAX as usize {
        return None;
    }
    let _e = ErrnoGuard::new();
    let mut parts: [&[u8]; 16] = [&[]; 16];
    for (i, p) in parts.iter_mut().enumerate().take(cnt as usize) {
        let v = &*iov.add(i);
        *p = core::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len);
    }
    transport::push(src, &parts[..cnt as usize]).then_some(total as ssize_t)
}

#[inline(always)]
unsafe fn simple(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    real: impl FnOnce() -> ssize_t,
) -> ssize_t {
    if tap::source(fd) == NONE {
        return real();
    }
    simple_tapped(fd, buf, n, real)
}

#[cold]
unsafe fn simple_tapped(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    real: impl FnOnce() -> ssize_t,
) -> ssize_t {
    let src = tap::active_source(fd);
    if src == NONE || n == 0 || buf.is_null() {
        return real();
    }
    if tap::suppressed(src) && n <= isize::MAX as usize {
        let e = ErrnoGuard::new();
        if transport::push(src, &[core::slice::from_raw_parts(buf as *const u8, n)]) {
            return n as ssize_t;
        }
        drop(e);
        // The buffer is full: the original destination takes it instead.
        return real();
    }
    let r = real();
    if r > 0 {
        // No errno guard: pushing keeps errno (see transport::push_or_drop).
        transport::push_or_drop(
            src,
            &[core::slice::from_raw_parts(buf as *const u8, r as usize)],
        );
    }
    r
}

#[inline(always)]
unsafe fn vectored(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    real: impl FnOnce() -> ssize_t,
) -> ssize_t {
    if tap::source(fd) == NONE {
        return real();
    }
    vectored_tapped(fd, iov, cnt, real)
}

#[cold]
unsafe fn vectored_tapped(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    real: impl FnOnce() -> ssize_t,
) -> ssize_t {
    let src = tap::active_source(fd);
    if src == NONE || iov.is_null() {
        return real();
    }
    if tap::suppressed(src) {
        // Buffer full (or too many pieces): the original destination takes it.
        return suppress_iov(src, iov, cnt).unwrap_or_else(real);
    }
    let r = real();
    if r > 0 {
        tap_iov(src, iov, cnt, r as usize);
    }
    r
}

/// # Safety
/// Same contract as libc `write`.
#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    simple(fd, buf, n, || real::write(fd, buf, n))
}

/// # Safety
/// Same contract as libc `writev`.
#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    vectored(fd, iov, cnt, || real::writev(fd, iov, cnt))
}

/// # Safety
/// Same contract as libc `pwrite`.
#[no_mangle]
pub unsafe extern "C" fn pwrite(fd: c_int, buf: *const c_void, n: size_t, off: off_t) -> ssize_t {
    simple(fd, buf, n, || real::pwrite(fd, buf, n, off))
}

/// # Safety
/// Same contract as libc `pwrite64`.
#[no_mangle]
pub unsafe extern "C" fn pwrite64(fd: c_int, buf: *const c_void, n: size_t, off: off_t) -> ssize_t {
    simple(fd, buf, n, || real::pwrite64(fd, buf, n, off))
}

/// # Safety
/// Same contract as libc `pwritev`.
#[no_mangle]
pub unsafe extern "C" fn pwritev(fd: c_int, iov: *const iovec, cnt: c_int, off: off_t) -> ssize_t {
    vectored(fd, iov, cnt, || real::pwritev(fd, iov, cnt, off))
}

/// # Safety
/// Same contract as libc `pwritev64`.
#[no_mangle]
pub unsafe extern "C" fn pwritev64(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    off: off_t,
) -> ssize_t {
    vectored(fd, iov, cnt, || real::pwritev64(fd, iov, cnt, off))
}

/// # Safety
/// Same contract as libc `pwritev2`.
#[no_mangle]
pub unsafe extern "C" fn pwritev2(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    off: off_t,
    fl: c_int,
) -> ssize_t {
    vectored(fd, iov, cnt, || real::pwritev2(fd, iov, cnt, off, fl))
}

/// # Safety
/// Same contract as libc `pwritev64v2`.
#[no_mangle]
pub unsafe extern "C" fn pwritev64v2(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    off: off_t,
    fl: c_int,
) -> ssize_t {
    vectored(fd, iov, cnt, || real::pwritev64v2(fd, iov, cnt, off, fl))
}

/// stdout can be a socket (journald's stream, some runtimes).
///
/// # Safety
/// Same contract as libc `send`.
#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, n: size_t, fl: c_int) -> ssize_t {
    simple(fd, buf, n, || real::send(fd, buf, n, fl))
}

/// # Safety
/// Same contract as libc `sendto`.
#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    fl: c_int,
    addr: *const libc::sockaddr,
    alen: libc::socklen_t,
) -> ssize_t {
    simple(fd, buf, n, || real::sendto(fd, buf, n, fl, addr, alen))
}

/// # Safety
/// Same contract as libc `sendmsg`.
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, m: *const msghdr, fl: c_int) -> ssize_t {
    if tap::source(fd) == NONE || m.is_null() {
        return real::sendmsg(fd, m, fl);
    }
    vectored_tapped(fd, (*m).msg_iov, (*m).msg_iovlen as c_int, || {
        real::sendmsg(fd, m, fl)
    })
}

/// For the C shims (dprintf): is this fd tapped?
pub extern "C" fn llt_fd_tapped(fd: c_int) -> c_int {
    c_int::from(tap::source(fd) != NONE)
}
