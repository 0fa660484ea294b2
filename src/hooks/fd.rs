//! fd-level output: `write`, `writev`, `pwrite*`, `send*`.
//!
//! Invariants: no lock, no allocation, async-signal-safe, errno preserved.
//! The caller's memory (buffer, iovec array, message header) is read
//! before the real call only with the guarded copy while it is armed
//! (`crate::guarded`), so a bad pointer gets the kernel's answer; after a
//! call that succeeded, the kernel has read it already. Disarmed, a
//! suppressed write and `sendmsg`'s header are read plainly, as before.
//! Only the bytes the real call accepted are tapped; with suppression the
//! real call is skipped and the full count returned, unless the library's
//! buffer is full, in which case the real call runs (nothing is lost).

use crate::sys::{self, ErrnoGuard};
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

/// Whether the iovec array and every piece it names can be read (see
/// `crate::guarded::readable`; true when that cannot be checked). At most
/// 16 pieces are looked at: `suppress_iov` takes no more.
unsafe fn iov_readable(iov: *const iovec, cnt: c_int) -> bool {
    if !(1..=16).contains(&cnt) {
        return true;
    }
    let n = cnt as usize;
    if !crate::guarded::readable(iov as *const u8, n * core::mem::size_of::<iovec>()) {
        return false;
    }
    (0..n).all(|i| {
        let v = &*iov.add(i);
        crate::guarded::readable(v.iov_base as *const u8, v.iov_len)
    })
}

/// Suppressed iovec output: into the buffer; what it cannot take (all of
/// it, or the end of a write larger than it when the target went away
/// mid-way) goes to the original destination through `real`, called with
/// the remaining iovecs. None: the caller runs the real call untouched.
unsafe fn suppress_iov(
    src: u8,
    iov: *const iovec,
    cnt: c_int,
    real: impl FnOnce(*const iovec, c_int, usize) -> ssize_t,
) -> Option<ssize_t> {
    let total = iov_total(iov, cnt)?;
    if cnt <= 0 || cnt > 16 || total > isize::MAX as usize {
        return None;
    }
    let e = ErrnoGuard::new();
    let mut parts: [&[u8]; 16] = [&[]; 16];
    for (i, p) in parts.iter_mut().enumerate().take(cnt as usize) {
        let v = &*iov.add(i);
        *p = core::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len);
    }
    let stored = transport::push_prefix(src, &parts[..cnt as usize]);
    if stored == total {
        return Some(total as ssize_t);
    }
    if stored == 0 {
        return None;
    }
    // The rest of the iovecs, after the first `stored` bytes.
    let mut rest = [iovec {
        iov_base: core::ptr::null_mut(),
        iov_len: 0,
    }; 16];
    let (mut k, mut skip) = (0usize, stored);
    for p in &parts[..cnt as usize] {
        if skip >= p.len() {
            skip -= p.len();
            continue;
        }
        rest[k] = iovec {
            iov_base: p.as_ptr().add(skip) as *mut c_void,
            iov_len: p.len() - skip,
        };
        skip = 0;
        k += 1;
    }
    let saved = sys::errno();
    drop(e);
    let r = real(rest.as_ptr(), k as c_int, stored);
    Some(finish_partial(stored, r, saved))
}

/// The result of a write whose first `stored` bytes went to the buffer and
/// whose rest went to the original destination with result `r`.
fn finish_partial(stored: usize, r: ssize_t, errno: c_int) -> ssize_t {
    if r < 0 {
        // Report the bytes taken, as a short write; errno stays the
        // caller's since the call succeeded.
        sys::set_errno(errno);
        stored as ssize_t
    } else {
        stored as ssize_t + r
    }
}

/// `real(buf, n, skipped)` writes `n` bytes from `buf`; `skipped` bytes of
/// the caller's buffer came before (for `pwrite`'s offset).
#[inline(always)]
unsafe fn simple(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    real: impl FnOnce(*const c_void, size_t, usize) -> ssize_t,
) -> ssize_t {
    if tap::source(fd) == NONE {
        return real(buf, n, 0);
    }
    simple_tapped(fd, buf, n, real)
}

#[cold]
unsafe fn simple_tapped(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    real: impl FnOnce(*const c_void, size_t, usize) -> ssize_t,
) -> ssize_t {
    let src = tap::active_source(fd);
    if src == NONE || n == 0 || buf.is_null() {
        return real(buf, n, 0);
    }
    // A fatal signal during the call waits until its bytes are stored.
    let _t = transport::Tapping::enter();
    // Suppressed bytes never meet the kernel: a bad pointer is checked
    // here (`crate::guarded`), and a write that has one is not suppressed
    // (the real call gives the program the kernel's answer).
    if tap::suppressed(src)
        && n <= isize::MAX as usize
        && crate::guarded::readable(buf as *const u8, n)
    {
        let e = ErrnoGuard::new();
        let stored =
            transport::push_prefix(src, &[core::slice::from_raw_parts(buf as *const u8, n)]);
        if stored == n {
            return n as ssize_t;
        }
        drop(e);
        let saved = sys::errno();
        // The buffer is full: the original destination takes the rest.
        let r = real(
            (buf as *const u8).add(stored) as *const c_void,
            n - stored,
            stored,
        );
        return if stored == 0 {
            r
        } else {
            finish_partial(stored, r, saved)
        };
    }
    // The bytes go to the shared ring's intent slot first: a SIGKILL that
    // ends the call leaves them where the sink finds them (transport). The
    // kernel has not checked `buf` yet: the copy is a guarded one.
    let f = transport::intent_begin(&_t, src, &[(buf as *const u8, n)], n);
    let r = real(buf, n, 0);
    if f.active() {
        f.finish(src, r);
        return r;
    }
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
    real: impl FnOnce(*const iovec, c_int, usize) -> ssize_t,
) -> ssize_t {
    if tap::source(fd) == NONE {
        return real(iov, cnt, 0);
    }
    vectored_tapped(fd, iov, cnt, real)
}

#[cold]
unsafe fn vectored_tapped(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    real: impl FnOnce(*const iovec, c_int, usize) -> ssize_t,
) -> ssize_t {
    let src = tap::active_source(fd);
    if src == NONE || iov.is_null() {
        return real(iov, cnt, 0);
    }
    let _t = transport::Tapping::enter();
    // Suppressed bytes never meet the kernel: a write with a bad pointer
    // is not suppressed but tapped as the kernel takes it, below, so the
    // program gets the kernel's answer (`crate::guarded`).
    if tap::suppressed(src) && iov_readable(iov, cnt) {
        // Buffer full (or too many pieces): the original destination takes it.
        let mut real = Some(real);
        return match suppress_iov(src, iov, cnt, |v, c, d| (real.take().unwrap())(v, c, d)) {
            Some(r) => r,
            None => (real.take().unwrap())(iov, cnt, 0),
        };
    }
    let f = intent_iov(&_t, src, iov, cnt);
    let r = real(iov, cnt, 0);
    if f.active() {
        f.finish(src, r);
        return r;
    }
    if r > 0 {
        tap_iov(src, iov, cnt, r as usize);
    }
    r
}

/// `transport::intent_begin` for an iovec write of up to 16 pieces. The
/// array itself is read with the guarded copy too: the kernel has not
/// checked it yet.
unsafe fn intent_iov(
    t: &transport::Tapping,
    src: u8,
    iov: *const iovec,
    cnt: c_int,
) -> transport::InFlight {
    const MAX: usize = 16;
    if !(1..=MAX as c_int).contains(&cnt) || !transport::intents_possible() {
        return transport::InFlight::none();
    }
    let k = cnt as usize;
    let mut v = core::mem::MaybeUninit::<[iovec; MAX]>::uninit();
    if !crate::guarded::copy(
        v.as_mut_ptr() as *mut u8,
        iov as *const u8,
        k * core::mem::size_of::<iovec>(),
    ) {
        return transport::InFlight::none();
    }
    // SAFETY: the first `k` entries were just copied in.
    let v = core::slice::from_raw_parts(v.as_ptr() as *const iovec, k);
    let mut parts: [transport::Part; MAX] = [(core::ptr::null(), 0); MAX];
    let mut len = 0usize;
    for (p, e) in parts.iter_mut().zip(v) {
        // A piece too big for a slot makes the whole write too big (and
        // the sum cannot overflow).
        let l = e.iov_len.min(1 << 20);
        *p = (e.iov_base as *const u8, l);
        len += l;
    }
    transport::intent_begin(t, src, &parts[..k], len)
}

/// # Safety
/// Same contract as libc `write`.
#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    simple(fd, buf, n, |b, n, _| real::write(fd, b, n))
}

/// # Safety
/// Same contract as libc `writev`.
#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    vectored(fd, iov, cnt, |v, c, _| real::writev(fd, v, c))
}

/// # Safety
/// Same contract as libc `pwrite`.
#[no_mangle]
pub unsafe extern "C" fn pwrite(fd: c_int, buf: *const c_void, n: size_t, off: off_t) -> ssize_t {
    simple(fd, buf, n, |b, n, d| {
        real::pwrite(fd, b, n, off + d as off_t)
    })
}

/// # Safety
/// Same contract as libc `pwrite64`.
#[no_mangle]
pub unsafe extern "C" fn pwrite64(fd: c_int, buf: *const c_void, n: size_t, off: off_t) -> ssize_t {
    simple(fd, buf, n, |b, n, d| {
        real::pwrite64(fd, b, n, off + d as off_t)
    })
}

/// # Safety
/// Same contract as libc `pwritev`.
#[no_mangle]
pub unsafe extern "C" fn pwritev(fd: c_int, iov: *const iovec, cnt: c_int, off: off_t) -> ssize_t {
    vectored(fd, iov, cnt, |v, c, d| {
        real::pwritev(fd, v, c, off + d as off_t)
    })
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
    vectored(fd, iov, cnt, |v, c, d| {
        real::pwritev64(fd, v, c, off + d as off_t)
    })
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
    vectored(fd, iov, cnt, |v, c, d| {
        real::pwritev2(fd, v, c, off + d as off_t, fl)
    })
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
    vectored(fd, iov, cnt, |v, c, d| {
        real::pwritev64v2(fd, v, c, off + d as off_t, fl)
    })
}

/// stdout can be a socket (journald's stream, some runtimes).
///
/// # Safety
/// Same contract as libc `send`.
#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, n: size_t, fl: c_int) -> ssize_t {
    simple(fd, buf, n, |b, n, _| real::send(fd, b, n, fl))
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
    simple(fd, buf, n, |b, n, _| real::sendto(fd, b, n, fl, addr, alen))
}

/// # Safety
/// Same contract as libc `sendmsg`.
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, m: *const msghdr, fl: c_int) -> ssize_t {
    if tap::source(fd) == NONE || m.is_null() {
        return real::sendmsg(fd, m, fl);
    }
    // The header is read before the kernel has checked it: with the
    // guarded copy when armed (a bad one goes to the real call, which
    // says EFAULT), as a plain read otherwise (`crate::guarded`).
    let mut h = core::mem::MaybeUninit::<msghdr>::uninit();
    if crate::guarded::usable() {
        if !crate::guarded::copy(
            h.as_mut_ptr() as *mut u8,
            m as *const u8,
            core::mem::size_of::<msghdr>(),
        ) {
            return real::sendmsg(fd, m, fl);
        }
    } else {
        h.write(*m);
    }
    // SAFETY: filled just above.
    let h = h.assume_init();
    vectored_tapped(fd, h.msg_iov, h.msg_iovlen as c_int, |v, c, _| {
        if core::ptr::eq(v, h.msg_iov) {
            return real::sendmsg(fd, m, fl);
        }
        // The rest of a partly buffered message: same header, fewer bytes.
        let mut rest = h;
        rest.msg_iov = v as *mut iovec;
        rest.msg_iovlen = c as _;
        real::sendmsg(fd, &rest, fl)
    })
}

/// For the C shims (dprintf): is this fd tapped?
pub extern "C" fn llt_fd_tapped(fd: c_int) -> c_int {
    c_int::from(tap::source(fd) != NONE)
}
