//! glibc stdio output: `fwrite`, `fputs`, `puts`, `putc` & co., each
//! `_unlocked` twin, `__overflow` (where the inlined `putc_unlocked` macro
//! lands when a buffer fills), and every call that flushes (`fflush`,
//! `fseek`…). The printf family, wide output and diagnostics are in the C
//! shim and end in `stdio::llt_stdio_write`.
//!
//! Invariants: untapped streams go straight to the real call; tapped ones
//! run the real `_unlocked` call under the stream's own recursive lock (as
//! the locked call would) with the accounting of `crate::stdio` around it.
//! Return values and errno are the real call's, or with suppression those
//! of a successful call.

use crate::real;
use crate::stdio::{account, flush_all, flush_one, source_of, suppressed};
use crate::tap::{self, NONE};
use libc::{c_char, c_int, c_long, c_void, off_t, size_t, FILE};

extern "C" {
    static mut stdout: *mut FILE;
}

unsafe fn out_stdout() -> *mut FILE {
    *core::ptr::addr_of!(stdout)
}

/// The shared shape of an output call on a possibly tapped stream.
#[inline(always)]
unsafe fn output<R>(
    f: *mut FILE,
    new: [&[u8]; 2],
    lock: bool,
    real_locked: impl FnOnce() -> R,
    real_unlocked: impl FnOnce() -> R,
    accepted: impl FnOnce(&R) -> usize,
) -> R {
    if source_of(f) == NONE {
        return real_locked();
    }
    let src = tap::active_source(crate::stdio::fileno_of(f));
    if src == NONE {
        return real_locked();
    }
    if tap::suppressed(src) {
        return suppressed(f, src, new, lock, false, real_unlocked, accepted);
    }
    account(f, src, new, lock, false, real_unlocked, accepted)
}

/// A call that flushes the stream's pending output first. We flush it
/// (through the accounting) before the real call; when that flush fails,
/// the call fails as glibc's would (`failed`), without going on.
#[inline(always)]
unsafe fn flushing<R>(f: *mut FILE, failed: Option<R>, real_call: impl FnOnce() -> R) -> R {
    if source_of(f) == NONE {
        return real_call();
    }
    let src = tap::active_source(crate::stdio::fileno_of(f));
    if src == NONE {
        return real_call();
    }
    crate::stdio::flockfile(f);
    let r = match (flush_one(f, src), failed) {
        (libc::EOF, Some(fail)) => fail,
        _ => real_call(),
    };
    crate::stdio::funlockfile(f);
    r
}

unsafe fn bytes<'a>(p: *const c_void, n: usize) -> &'a [u8] {
    if p.is_null() || n == 0 {
        &[]
    } else {
        core::slice::from_raw_parts(p as *const u8, n)
    }
}

unsafe fn cstr<'a>(s: *const c_char) -> &'a [u8] {
    if s.is_null() {
        &[]
    } else {
        core::ffi::CStr::from_ptr(s).to_bytes()
    }
}

unsafe fn do_fwrite(p: *const c_void, size: size_t, n: size_t, f: *mut FILE, lock: bool) -> size_t {
    let Some(total) = size.checked_mul(n) else {
        return if lock {
            real::fwrite(p, size, n, f)
        } else {
            real::fwrite_unlocked(p, size, n, f)
        };
    };
    output(
        f,
        [bytes(p, total), &[]],
        lock,
        || {
            if lock {
                real::fwrite(p, size, n, f)
            } else {
                real::fwrite_unlocked(p, size, n, f)
            }
        },
        || real::fwrite_unlocked(p, size, n, f),
        |&r| r * size,
    )
}

/// # Safety
/// Same contract as libc `fwrite`.
#[no_mangle]
pub unsafe extern "C" fn fwrite(p: *const c_void, size: size_t, n: size_t, f: *mut FILE) -> size_t {
    do_fwrite(p, size, n, f, true)
}

/// # Safety
/// Same contract as libc `fwrite_unlocked`.
#[no_mangle]
pub unsafe extern "C" fn fwrite_unlocked(
    p: *const c_void,
    size: size_t,
    n: size_t,
    f: *mut FILE,
) -> size_t {
    do_fwrite(p, size, n, f, false)
}

unsafe fn do_fputs(s: *const c_char, f: *mut FILE, lock: bool) -> c_int {
    let b = cstr(s);
    output(
        f,
        [b, &[]],
        lock,
        || {
            if lock {
                real::fputs(s, f)
            } else {
                real::fputs_unlocked(s, f)
            }
        },
        || real::fputs_unlocked(s, f),
        |&r| if r >= 0 { b.len() } else { 0 },
    )
}

/// # Safety
/// Same contract as libc `fputs`.
#[no_mangle]
pub unsafe extern "C" fn fputs(s: *const c_char, f: *mut FILE) -> c_int {
    do_fputs(s, f, true)
}

/// # Safety
/// Same contract as libc `fputs_unlocked`.
#[no_mangle]
pub unsafe extern "C" fn fputs_unlocked(s: *const c_char, f: *mut FILE) -> c_int {
    do_fputs(s, f, false)
}

/// # Safety
/// Same contract as libc `puts`.
#[no_mangle]
pub unsafe extern "C" fn puts(s: *const c_char) -> c_int {
    let f = out_stdout();
    let b = cstr(s);
    output(
        f,
        [b, b"\n"],
        true,
        || real::puts(s),
        || real::puts(s),
        |&r| if r >= 0 { b.len() + 1 } else { 0 },
    )
}

unsafe fn do_putc(
    c: c_int,
    f: *mut FILE,
    lock: bool,
    locked: unsafe fn(c_int, *mut FILE) -> c_int,
) -> c_int {
    let ch = [c as u8];
    output(
        f,
        [&ch, &[]],
        lock,
        || locked(c, f),
        || real::putc_unlocked(c, f),
        |&r| usize::from(r != libc::EOF),
    )
}

/// # Safety
/// Same contract as libc `fputc`.
#[no_mangle]
pub unsafe extern "C" fn fputc(c: c_int, f: *mut FILE) -> c_int {
    do_putc(c, f, true, real::fputc)
}

/// # Safety
/// Same contract as libc `putc`.
#[no_mangle]
pub unsafe extern "C" fn putc(c: c_int, f: *mut FILE) -> c_int {
    do_putc(c, f, true, real::putc)
}

/// The old name of `putc`, still exported by glibc.
///
/// # Safety
/// Same contract as libc `putc`.
#[no_mangle]
pub unsafe extern "C" fn _IO_putc(c: c_int, f: *mut FILE) -> c_int {
    do_putc(c, f, true, real::_IO_putc)
}

/// # Safety
/// Same contract as libc `fputc_unlocked`.
#[no_mangle]
pub unsafe extern "C" fn fputc_unlocked(c: c_int, f: *mut FILE) -> c_int {
    do_putc(c, f, false, real::fputc_unlocked)
}

/// # Safety
/// Same contract as libc `putc_unlocked`.
#[no_mangle]
pub unsafe extern "C" fn putc_unlocked(c: c_int, f: *mut FILE) -> c_int {
    do_putc(c, f, false, real::putc_unlocked)
}

/// # Safety
/// Same contract as libc `putchar`.
#[no_mangle]
pub unsafe extern "C" fn putchar(c: c_int) -> c_int {
    do_putc(c, out_stdout(), true, real::putc)
}

/// # Safety
/// Same contract as libc `putchar_unlocked`.
#[no_mangle]
pub unsafe extern "C" fn putchar_unlocked(c: c_int) -> c_int {
    do_putc(c, out_stdout(), false, real::putc_unlocked)
}

/// # Safety
/// Same contract as libc `putw`.
#[no_mangle]
pub unsafe extern "C" fn putw(w: c_int, f: *mut FILE) -> c_int {
    let b = w.to_ne_bytes();
    output(
        f,
        [&b, &[]],
        true,
        || real::putw(w, f),
        || real::putw(w, f),
        |&r| if r == 0 { b.len() } else { 0 },
    )
}

/// Called by the inlined `putc_unlocked` family when the buffer is full
/// (or line/un-buffered): the bytes the macros stored become visible here.
///
/// # Safety
/// Same contract as glibc's `__overflow`.
#[no_mangle]
pub unsafe extern "C" fn __overflow(f: *mut FILE, c: c_int) -> c_int {
    if source_of(f) == NONE {
        return real::__overflow(f, c);
    }
    let src = tap::active_source(crate::stdio::fileno_of(f));
    if src == NONE {
        return real::__overflow(f, c);
    }
    let ch = [c as u8];
    let new: [&[u8]; 2] = if c == libc::EOF {
        [&[], &[]]
    } else {
        [&ch, &[]]
    };
    if tap::suppressed(src) {
        let ok = |&r: &c_int| usize::from(c != libc::EOF && r != libc::EOF);
        return suppressed(f, src, new, false, true, || real::__overflow(f, c), ok);
    }
    account(
        f,
        src,
        new,
        false,
        true,
        || real::__overflow(f, c),
        |&r| usize::from(c != libc::EOF && r != libc::EOF),
    )
}

unsafe fn do_fflush(f: *mut FILE, lock: bool) -> c_int {
    if f.is_null() {
        let ours_ok = flush_all(false);
        let e = crate::sys::errno();
        let r = if lock {
            real::fflush(f)
        } else {
            real::fflush_unlocked(f)
        };
        if !ours_ok {
            // One of the tapped streams failed to flush: so does fflush(NULL).
            crate::sys::set_errno(e);
            return libc::EOF;
        }
        return r;
    }
    if source_of(f) == NONE {
        return if lock {
            real::fflush(f)
        } else {
            real::fflush_unlocked(f)
        };
    }
    let src = tap::active_source(crate::stdio::fileno_of(f));
    if src == NONE {
        return if lock {
            real::fflush(f)
        } else {
            real::fflush_unlocked(f)
        };
    }
    if lock {
        crate::stdio::flockfile(f);
    }
    let r = flush_one(f, src);
    if lock {
        crate::stdio::funlockfile(f);
    }
    r
}

/// # Safety
/// Same contract as libc `fflush`.
#[no_mangle]
pub unsafe extern "C" fn fflush(f: *mut FILE) -> c_int {
    do_fflush(f, true)
}

/// # Safety
/// Same contract as libc `fflush_unlocked`.
#[no_mangle]
pub unsafe extern "C" fn fflush_unlocked(f: *mut FILE) -> c_int {
    do_fflush(f, false)
}

/// # Safety
/// Same contract as libc `fseek`.
#[no_mangle]
pub unsafe extern "C" fn fseek(f: *mut FILE, o: c_long, w: c_int) -> c_int {
    flushing(f, Some(-1), || real::fseek(f, o, w))
}

/// # Safety
/// Same contract as libc `fseeko`.
#[no_mangle]
pub unsafe extern "C" fn fseeko(f: *mut FILE, o: off_t, w: c_int) -> c_int {
    flushing(f, Some(-1), || real::fseeko(f, o, w))
}

/// # Safety
/// Same contract as libc `fseeko64`.
#[no_mangle]
pub unsafe extern "C" fn fseeko64(f: *mut FILE, o: off_t, w: c_int) -> c_int {
    flushing(f, Some(-1), || real::fseeko64(f, o, w))
}

/// # Safety
/// Same contract as libc `fsetpos`.
#[no_mangle]
pub unsafe extern "C" fn fsetpos(f: *mut FILE, p: *const libc::fpos_t) -> c_int {
    flushing(f, Some(-1), || real::fsetpos(f, p))
}

/// # Safety
/// Same contract as libc `fsetpos64`.
#[no_mangle]
pub unsafe extern "C" fn fsetpos64(f: *mut FILE, p: *const libc::fpos_t) -> c_int {
    flushing(f, Some(-1), || real::fsetpos64(f, p))
}

/// # Safety
/// Same contract as libc `rewind`.
#[no_mangle]
pub unsafe extern "C" fn rewind(f: *mut FILE) {
    // glibc's rewind reports nothing and goes on.
    flushing(f, None, || real::rewind(f))
}

/// # Safety
/// Same contract as libc `setvbuf`.
#[no_mangle]
pub unsafe extern "C" fn setvbuf(f: *mut FILE, b: *mut c_char, m: c_int, s: size_t) -> c_int {
    flushing(f, Some(libc::EOF), || real::setvbuf(f, b, m, s))
}

/// While a suppressed call has the stream's fd pointed at /dev/null, other
/// threads must still see the real fd (`isatty(fileno(stdout))`).
///
/// # Safety
/// Same contract as libc `fileno`.
#[no_mangle]
pub unsafe extern "C" fn fileno(f: *mut FILE) -> c_int {
    if f.is_null() {
        return real::fileno(f);
    }
    let fd = crate::stdio::fileno_of(f);
    if fd < 0 {
        return real::fileno(f);
    }
    fd
}

/// # Safety
/// Same contract as libc `fileno_unlocked`.
#[no_mangle]
pub unsafe extern "C" fn fileno_unlocked(f: *mut FILE) -> c_int {
    fileno(f)
}
