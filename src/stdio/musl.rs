//! musl: wrapping each stream's `write` function pointer.
//!
//! musl's stdio ends every write (printf, puts, putc, fflush, the flush at
//! exit) in `f->write(f, buf, len)`, which writes the pending bytes
//! `f->wbase..f->wpos` followed by `buf`. The wrapper calls the original
//! and taps exactly those bytes when it succeeded; with suppression it
//! takes them without writing, and empties the buffer as the original would.
//! musl does not validate the pointer, and the struct below mirrors
//! `src/internal/stdio_impl.h`, stable since musl 1.1.
//!
//! Invariants: the wrapper runs under the stream lock taken by musl's
//! caller; errno and return values are the original's.

use crate::tap::{self, NONE};
use crate::{sys, transport};
use core::sync::atomic::{AtomicPtr, Ordering::*};
use libc::{c_int, FILE};

type WriteFn = unsafe extern "C" fn(*mut FILE, *const u8, usize) -> usize;

const F_ERR: u32 = 32;

#[repr(C)]
struct MFile {
    flags: u32,
    rpos: *mut u8,
    rend: *mut u8,
    close: *mut u8,
    wend: *mut u8,
    wpos: *mut u8,
    mustbezero_1: *mut u8,
    wbase: *mut u8,
    read: *mut u8,
    write: Option<WriteFn>,
    seek: *mut u8,
    buf: *mut u8,
    buf_size: usize,
    prev: *mut u8,
    next: *mut u8,
    fd: c_int,
}

extern "C" {
    static stdout: *mut FILE;
    static stderr: *mut FILE;
}

/// The originals: stdout's own (`__stdout_write`, which replaces itself
/// with `__stdio_write` on first use) and the one of every other stream.
static ORIG_STDOUT: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static ORIG_FILE: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());

fn m(f: *mut FILE) -> *mut MFile {
    f as *mut MFile
}

/// The fd of a stream.
///
/// # Safety
/// `f` is a live FILE.
pub unsafe fn fileno_of(f: *mut FILE) -> c_int {
    (*m(f)).fd
}

/// # Safety
/// `f` is null or a live FILE.
pub unsafe fn source_of(f: *mut FILE) -> u8 {
    if f.is_null() || crate::sys::in_vfork_child() {
        NONE
    } else {
        tap::source((*m(f)).fd)
    }
}

/// Wraps the standard streams. Constructor only.
pub fn init() {
    // SAFETY: stdout and stderr are musl's static FILEs.
    unsafe {
        after_open(stdout);
        after_open(stderr);
    }
}

/// Wraps a stream's write function (all streams with an fd; the wrapper
/// checks the fd table on every call, so later dups and closes count).
///
/// # Safety
/// `f` is null or a live FILE whose lock the caller may or may not hold.
pub unsafe fn after_open(f: *mut FILE) {
    if f.is_null() {
        return;
    }
    let p = m(f);
    let Some(cur) = (*p).write else { return };
    let cur_ptr = cur as *mut u8;
    if cur_ptr == wrap_stdout as *mut u8 || cur_ptr == wrap_file as *mut u8 {
        return;
    }
    if f == stdout {
        ORIG_STDOUT.store(cur_ptr, Relaxed);
        (*p).write = Some(wrap_stdout);
        return;
    }
    // Only wrap streams that use the ordinary file write (fopen, fdopen,
    // stderr); memory streams and cookies have their own and no fd.
    match ORIG_FILE.compare_exchange(core::ptr::null_mut(), cur_ptr, Relaxed, Relaxed) {
        Ok(_) => {}
        Err(known) if known == cur_ptr => {}
        Err(_) => return,
    }
    (*p).write = Some(wrap_file);
}

unsafe extern "C" fn wrap_stdout(f: *mut FILE, buf: *const u8, len: usize) -> usize {
    tee(f, buf, len, &ORIG_STDOUT, wrap_stdout)
}

unsafe extern "C" fn wrap_file(f: *mut FILE, buf: *const u8, len: usize) -> usize {
    tee(f, buf, len, &ORIG_FILE, wrap_file)
}

unsafe fn tee(
    f: *mut FILE,
    buf: *const u8,
    len: usize,
    orig: &AtomicPtr<u8>,
    me: WriteFn,
) -> usize {
    let p = &mut *m(f);
    let o = orig.load(Relaxed);
    if o.is_null() {
        return 0;
    }
    let real: WriteFn = core::mem::transmute(o);
    // A fatal signal during the call waits until its bytes are stored.
    let _t = crate::transport::Tapping::enter();
    let src = tap::active_source(p.fd);
    if src == NONE {
        return call(p, f, buf, len, real, orig, me);
    }
    let pend: &[u8] = if p.wbase.is_null() || p.wpos <= p.wbase {
        &[]
    } else {
        core::slice::from_raw_parts(p.wbase, p.wpos.offset_from(p.wbase) as usize)
    };
    let new: &[u8] = if buf.is_null() || len == 0 {
        &[]
    } else {
        core::slice::from_raw_parts(buf, len)
    };
    // Suppressed bytes never meet the kernel: a call with a bad pointer is
    // not suppressed but tapped as the kernel takes it, below, so the
    // program gets the kernel's answer (`crate::guarded`).
    if tap::suppressed(src) && crate::guarded::readable(new.as_ptr(), new.len()) {
        let e = sys::ErrnoGuard::new();
        if !transport::write_through(src) && transport::push(src, &[pend, new]) {
            // What a successful write leaves behind.
            p.wend = p.buf.add(p.buf_size);
            p.wpos = p.buf;
            p.wbase = p.buf;
            return len;
        }
        drop(e);
        // The buffer is full: the original destination takes it instead.
        return call(p, f, buf, len, real, orig, me);
    }
    let err_before = p.flags & F_ERR;
    // The bytes go to the shared ring's intent slot first: a SIGKILL that
    // ends the call leaves them where the sink finds them (transport).
    let fl = transport::intent_begin(
        &_t,
        src,
        &[(pend.as_ptr(), pend.len()), (new.as_ptr(), new.len())],
        pend.len() + new.len(),
    );
    let r = call(p, f, buf, len, real, orig, me);
    if fl.active() {
        let ok = r == len && (p.flags & F_ERR) == err_before;
        let _e = sys::ErrnoGuard::new();
        fl.finish(
            src,
            if ok {
                (pend.len() + new.len()) as isize
            } else {
                0
            },
        );
        return r;
    }
    if r == len && (p.flags & F_ERR) == err_before {
        // The pending bytes are still in the buffer: the write does not
        // overwrite them, it only resets the pointers.
        let _e = sys::ErrnoGuard::new();
        transport::push_or_drop(src, &[pend, new]);
    }
    r
}

/// Calls the original and puts the wrapper back if the original replaced
/// itself (musl's `__stdout_write` does, on its first call).
unsafe fn call(
    p: &mut MFile,
    f: *mut FILE,
    buf: *const u8,
    len: usize,
    real: WriteFn,
    orig: &AtomicPtr<u8>,
    me: WriteFn,
) -> usize {
    let r = real(f, buf, len);
    if let Some(now) = p.write {
        if now as *mut u8 != me as *mut u8 {
            orig.store(now as *mut u8, Relaxed);
            p.write = Some(me);
        }
    }
    r
}

/// musl needs no /dev/null (suppression happens inside the wrapper).
pub fn devnull_fd() -> c_int {
    -1
}

pub fn owns(_fd: c_int) -> bool {
    false
}

pub fn evacuate(_fd: c_int) {}

pub fn after_fork_child() {}

/// Flushes every stream through the wrappers (before musl's own exit
/// flush, which would run after our destructor).
pub fn flush_all(_at_exit: bool) -> bool {
    // SAFETY: fflush(NULL) is always valid.
    unsafe { crate::real::fflush(core::ptr::null_mut()) == 0 }
}

/// # Safety
/// `f` is a live FILE.
pub unsafe fn flush_one(f: *mut FILE, _src: u8) -> c_int {
    crate::real::fflush_unlocked(f)
}

/// For the shim table: musl's stdio needs no C hooks, but the table is shared.
///
/// # Safety
/// `f` is null or a live FILE.
pub unsafe extern "C" fn llt_stream_source(f: *mut FILE) -> c_int {
    c_int::from(source_of(f))
}

/// # Safety
/// Never called on musl.
pub unsafe extern "C" fn llt_stream_wide(_f: *mut FILE) -> c_int {
    0
}

/// # Safety
/// `f` is a live FILE, `data` valid for `len` bytes.
pub unsafe extern "C" fn llt_stdio_write(
    f: *mut FILE,
    data: *const u8,
    len: usize,
    _unlocked: c_int,
) -> usize {
    crate::real::fwrite(data as *const libc::c_void, 1, len, f)
}
