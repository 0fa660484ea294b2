//! glibc: watching each tapped `FILE`'s buffer around the real call.
//!
//! glibc's stdio reaches the kernel through its internal `__write`, which no
//! preloaded symbol can replace. What *is* visible is the `FILE` itself:
//! `_IO_write_base.._IO_write_ptr` is the output a stream has buffered and
//! not yet written (public, stable ABI in `<bits/types/struct_FILE.h>`).
//! Around every public stdio entry point on a tapped stream, under the
//! stream's lock, we compare the pending bytes before and after the real
//! call: the stream is a queue, so
//!
//! ```text
//!   pending_before ++ accepted_new_data == written_to_fd ++ pending_after
//! ```
//!
//! and `written_to_fd` is what gets tapped, exactly when the real stream
//! wrote it (so the order relative to plain `write` calls is the fd's).
//! Pending bytes are copied aside only when the call can flush, which the
//! stream's mode and free space tell in advance; otherwise nothing is
//! copied and nothing tapped.
//!
//! With suppression the real call still runs, so the stream buffers and
//! flushes exactly as it would, but with its fd pointed at `/dev/null` for
//! the duration of the call: the same accounting then taps what the flush
//! wrote, and the original destination gets nothing. The bytes go straight
//! into a reservation in the library's buffer. If the original fd could not
//! be written (closed, read-only), or the library's buffer is full, the
//! real call runs unchanged on the real fd: the program sees its real
//! errors, and nothing is lost.

use super::{flockfile, ftrylockfile, funlockfile};
use crate::tap::{self, NONE};
use crate::{real, sys, transport};
use core::sync::atomic::{AtomicI32, AtomicPtr, Ordering::*};
use libc::{c_int, FILE};

const IO_UNBUFFERED: c_int = 0x0002;
const IO_LINE_BUF: c_int = 0x0200;
const IO_CURRENTLY_PUTTING: c_int = 0x0800;

/// The prefix of glibc's `struct _IO_FILE` that we read. Offsets are
/// checked against the real header at build time (src/shim/glibc.c).
#[repr(C)]
pub struct GFile {
    flags: c_int,
    read_ptr: *mut u8,
    read_end: *mut u8,
    read_base: *mut u8,
    write_base: *mut u8,
    write_ptr: *mut u8,
    write_end: *mut u8,
    buf_base: *mut u8,
    buf_end: *mut u8,
    save_base: *mut u8,
    backup_base: *mut u8,
    save_end: *mut u8,
    markers: *mut u8,
    chain: *mut GFile,
    fileno: c_int,
    flags2: c_int,
    old_offset: i64,
    cur_column: u16,
    vtable_offset: i8,
    shortbuf: [u8; 1],
    lock: *mut u8,
    offset: i64,
    codecvt: *mut u8,
    wide_data: *mut u8,
    freeres_list: *mut u8,
    freeres_buf: *mut u8,
    pad5: usize,
    mode: c_int,
}

#[inline]
fn g(f: *mut FILE) -> *mut GFile {
    f as *mut GFile
}

/// The fd of a stream.
///
/// # Safety
/// `f` is a live FILE.
#[inline]
pub unsafe fn fileno_of(f: *mut FILE) -> c_int {
    let null = DEVNULL.load(Relaxed);
    let fileno = core::ptr::addr_of!((*g(f)).fileno);
    let mut fd = fileno.read_volatile();
    // Seen pointed at /dev/null: the real fd is in the swap table, or, if
    // the swap just ended, back in the FILE.
    let mut tries = 0;
    while fd >= 0 && fd == null && tries < 200 {
        if let Some(real) = swapped_fd(f) {
            return real;
        }
        // The swapping thread is between restoring the fd and freeing its
        // slot: let it finish. (Bounded: a FILE opened by the program on
        // our number would otherwise never change.)
        // SAFETY: sched_yield has no preconditions.
        unsafe { libc::sched_yield() };
        tries += 1;
        fd = fileno.read_volatile();
    }
    fd
}

/// Streams whose fd is pointed at /dev/null for a suppressed call, and
/// their real fd: other threads asking for the fd (`fileno`, our own
/// checks) get the real one, and a fork child puts it back.
const SWAPS: usize = 64;
static SWAP_FILE: [AtomicPtr<FILE>; SWAPS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; SWAPS];
static SWAP_FD: [AtomicI32; SWAPS] = [const { AtomicI32::new(-1) }; SWAPS];

fn swapped_fd(f: *mut FILE) -> Option<c_int> {
    (0..SWAPS)
        .find(|&i| SWAP_FILE[i].load(Acquire) == f)
        .map(|i| SWAP_FD[i].load(Acquire))
}

fn swap_slot(f: *mut FILE, fd: c_int) -> Option<usize> {
    let i = (0..SWAPS).find(|&i| {
        SWAP_FILE[i]
            .compare_exchange(core::ptr::null_mut(), f, AcqRel, Relaxed)
            .is_ok()
    })?;
    // Readers look here only after seeing the FILE's fd changed, which the
    // caller does after this store.
    SWAP_FD[i].store(fd, Release);
    Some(i)
}

/// In a fork child: a stream another thread had pointed at /dev/null gets
/// its real fd back (that thread does not exist here to do it).
pub fn after_fork_child() {
    for i in 0..SWAPS {
        let f = SWAP_FILE[i].swap(core::ptr::null_mut(), Relaxed);
        if !f.is_null() {
            // SAFETY: the stream was live when its swap began, and the
            // thread that swapped it cannot have closed it in this child.
            unsafe { (*g(f)).fileno = SWAP_FD[i].load(Relaxed) };
        }
    }
}

/// Nothing to install on glibc: the stdio hooks see every stream.
///
/// # Safety
/// `f` is null or a live FILE.
pub unsafe fn after_open(_f: *mut FILE) {}

/// Opens /dev/null for suppressed streams. Constructor only.
pub fn init() {
    let c = crate::config::get();
    if c.suppress_std || c.suppress_file {
        // Only the real null device: suppressed bytes must not land in a
        // file put in its place.
        let fd = crate::safe_open::open_devnull(libc::O_WRONLY);
        if fd >= 0 {
            DEVNULL.store(crate::fds::place(fd as c_int), Relaxed);
        }
    }
}

/// The tap source of a stream's fd (NONE for untapped and fd-less streams).
///
/// # Safety
/// `f` is null or a live FILE.
#[inline]
pub unsafe fn source_of(f: *mut FILE) -> u8 {
    if f.is_null() || sys::in_vfork_child() {
        return NONE;
    }
    tap::source(fileno_of(f))
}

unsafe fn pending(f: *mut FILE) -> &'static [u8] {
    let p = &*g(f);
    if p.flags & IO_CURRENTLY_PUTTING == 0 || p.write_base.is_null() || p.write_ptr <= p.write_base
    {
        return &[];
    }
    core::slice::from_raw_parts(p.write_base, p.write_ptr.offset_from(p.write_base) as usize)
}

/// Whether a call that adds `new` bytes might write to the fd.
unsafe fn may_write(f: *mut FILE, new: &[&[u8]; 2]) -> bool {
    let p = &*g(f);
    if p.flags & IO_CURRENTLY_PUTTING == 0 || p.write_base.is_null() || p.flags & IO_UNBUFFERED != 0
    {
        return true;
    }
    let room = p.buf_end as usize - p.write_ptr as usize;
    if new[0].len() + new[1].len() >= room {
        return true;
    }
    p.flags & IO_LINE_BUF != 0 && new.iter().any(|s| s.contains(&b'\n'))
}

/// Bytes a call wrote to the fd, given the pending bytes before it and how
/// many of `new` it accepted: the stream is a queue, so
/// `before + accepted == written + pending_after`.
unsafe fn flushed(f: *mut FILE, before: usize, new: &[&[u8]; 2], accepted: usize) -> usize {
    let accepted = accepted.min(new[0].len() + new[1].len());
    (before + accepted).saturating_sub(pending(f).len())
}

/// The first `n` bytes of `new`.
fn head<'a>(new: &[&'a [u8]; 2], n: usize) -> [&'a [u8]; 2] {
    let a = n.min(new[0].len());
    let b = (n - a).min(new[1].len());
    [&new[0][..a], &new[1][..b]]
}

/// Pending data up to this size is copied aside on the stack; larger
/// buffers (a program's own big `setvbuf`) are flushed first instead.
const SCRATCH: usize = 4096;

pub struct Lock(*mut FILE);
impl Lock {
    unsafe fn new(f: *mut FILE, take: bool) -> Lock {
        if take {
            flockfile(f);
            Lock(f)
        } else {
            Lock(core::ptr::null_mut())
        }
    }
}
impl Drop for Lock {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: we locked it in `new`.
            unsafe { funlockfile(self.0) }
        }
    }
}

/// Runs `op` (the real stdio call, unlocked variant) on tapped stream `f`
/// and taps exactly the bytes it wrote to the fd. `new` is the data the
/// call adds; `accepted` says how many of those bytes it took; `flush` is
/// true for calls that always flush (fflush, fclose, fseek…).
///
/// # Safety
/// `f` is a live FILE; `new` is what the real call will be given.
pub unsafe fn account<R>(
    f: *mut FILE,
    src: u8,
    new: [&[u8]; 2],
    lock: bool,
    flush: bool,
    op: impl FnOnce() -> R,
    accepted: impl FnOnce(&R) -> usize,
) -> R {
    // Dropped last, after the stream's lock: a fatal signal during the
    // call waits until what it wrote is stored (transport::Tapping).
    let _t = transport::Tapping::enter();
    let _l = Lock::new(f, lock);
    // Not zeroed: only the bytes copied in are ever read.
    let mut scratch = core::mem::MaybeUninit::<[u8; SCRATCH]>::uninit();
    let mut saved: &[u8] = &[];
    let writes = flush || may_write(f, &new);
    if writes {
        let pend = pending(f);
        if pend.len() <= SCRATCH {
            let dst = scratch.as_mut_ptr() as *mut u8;
            core::ptr::copy_nonoverlapping(pend.as_ptr(), dst, pend.len());
            saved = core::slice::from_raw_parts(dst, pend.len());
        } else {
            // Flush the big buffer first: its bytes stay in place after
            // the write, so they can be tapped from there.
            let (ptr, len) = (pend.as_ptr(), pend.len());
            let fl = transport::intent_begin(&_t, src, &[(ptr, len)], len);
            real::fflush_unlocked(f);
            let left = pending(f).len();
            let e = sys::ErrnoGuard::new();
            if fl.active() {
                fl.finish(src, (len - left.min(len)) as isize);
            } else {
                transport::push_or_drop(
                    src,
                    &[core::slice::from_raw_parts(ptr, len - left.min(len))],
                );
            }
            drop(e);
        }
    }
    let before = if saved.is_empty() {
        pending(f).len()
    } else {
        saved.len()
    };
    // What the call may write is the head of saved ++ new when the pending
    // bytes were saved (or there were none): those go to the shared ring's
    // intent slot first, so a SIGKILL that ends the call leaves them where
    // the sink finds them (transport).
    let fl = if writes && before == saved.len() {
        let len = saved.len() + new[0].len() + new[1].len();
        transport::intent_begin(
            &_t,
            src,
            &[
                (saved.as_ptr(), saved.len()),
                (new[0].as_ptr(), new[0].len()),
                (new[1].as_ptr(), new[1].len()),
            ],
            len,
        )
    } else {
        transport::InFlight::none()
    };
    let r = op();
    let e = sys::ErrnoGuard::new();
    let written = flushed(f, before, &new, accepted(&r));
    if fl.active() {
        let len = saved.len() + new[0].len() + new[1].len();
        fl.finish(src, written.min(len) as isize);
        drop(e);
        if !flush && transport::late() {
            let _e = sys::ErrnoGuard::new();
            flush_one(f, src);
        }
        return r;
    }
    if written > 0 {
        // The written bytes are the head of saved ++ new.
        let from_saved = written.min(saved.len());
        // Bytes that were pending but not saved (a flush we did not
        // foresee) are gone from memory; skip them rather than guess.
        let rest = (written - from_saved).saturating_sub(before - saved.len());
        let [a, b] = head(&new, rest);
        transport::push_or_drop(src, &[&saved[..from_saved], a, b]);
    }
    drop(e);
    if !flush && transport::late() {
        // After our final flush (a library's destructor printing): glibc's
        // own last flush is invisible to us, so leave nothing buffered.
        let _e = sys::ErrnoGuard::new();
        flush_one(f, src);
    }
    r
}

/// Suppressed stream: runs `op` (the real `_unlocked` call) with the
/// stream's fd pointed at /dev/null and taps what it wrote (see the module
/// documentation).
///
/// # Safety
/// `f` is a live FILE.
pub unsafe fn suppressed<R>(
    f: *mut FILE,
    src: u8,
    new: [&[u8]; 2],
    lock: bool,
    flush: bool,
    op: impl FnOnce() -> R,
    accepted: impl FnOnce(&R) -> usize,
) -> R {
    // The call's bytes would go to /dev/null, which never reads them: a
    // bad pointer is checked here (`crate::guarded`), and a call that has
    // one is not suppressed but tapped as the kernel takes it, so the
    // program gets the kernel's answer.
    if !new
        .iter()
        .all(|p| crate::guarded::readable(p.as_ptr(), p.len()))
    {
        return account(f, src, new, lock, flush, op, accepted);
    }
    // Dropped last, after the stream's lock: a fatal signal during the
    // call waits until what it wrote is stored (transport::Tapping).
    let _t = transport::Tapping::enter();
    let _l = Lock::new(f, lock);
    if !flush && !may_write(f, &new) {
        // The call only fills the stream's buffer.
        return op();
    }
    let p = g(f);
    let null = DEVNULL.load(Relaxed);
    // Already pointed at /dev/null: a signal handler writing to the stream
    // in the middle of our own call. Tap its flush without swapping again.
    let nested = null >= 0 && (*p).fileno == null;
    let fd = fileno_of(f);
    if null < 0 || !sys::writable(fd) {
        return op();
    }
    if (*p).buf_base.is_null() {
        // Let glibc size and mode the buffer from the real fd (a terminal
        // is line-buffered), as the real call would, before it sees ours.
        _IO_doallocbuf(f);
    }
    let pend = pending(f);
    let max = pend.len() + new[0].len() + new[1].len();
    let e = sys::ErrnoGuard::new();
    if transport::write_through(src) {
        drop(e);
        return op();
    }
    let Some(res) = transport::reserve(src, max) else {
        drop(e);
        return op();
    };
    drop(e);
    let slot = if nested { None } else { swap_slot(f, fd) };
    if !nested && slot.is_none() {
        // Too many streams in a suppressed flush at once: this one goes
        // to its real destination.
        transport::commit(res, 0);
        return op();
    }
    core::ptr::copy_nonoverlapping(pend.as_ptr(), res.data, pend.len());
    let before = pend.len();
    // The table entry is complete before anyone can see the changed fd.
    core::sync::atomic::fence(SeqCst);
    core::ptr::addr_of_mut!((*p).fileno).write_volatile(null);
    let r = op();
    if let Some(i) = slot {
        core::ptr::addr_of_mut!((*p).fileno).write_volatile(fd);
        SWAP_FILE[i].store(core::ptr::null_mut(), Release);
    }
    let e = sys::ErrnoGuard::new();
    let written = flushed(f, before, &new, accepted(&r)).min(max);
    let mut at = before;
    for part in head(&new, written.saturating_sub(before)) {
        core::ptr::copy_nonoverlapping(part.as_ptr(), res.data.add(at), part.len());
        at += part.len();
    }
    transport::commit(res, written);
    drop(e);
    if !flush && transport::late() {
        // After our final flush (a library's destructor printing): glibc's
        // own last flush is invisible to us, so leave nothing buffered.
        let _e = sys::ErrnoGuard::new();
        flush_one(f, src);
    }
    r
}

/// Writes `data` to tapped stream `f` as `fwrite(data, 1, len, f)` would;
/// returns the bytes accepted. The C shims (printf family, wide output,
/// err/warn/perror) end here.
///
/// # Safety
/// `f` is a live FILE, `data` valid for `len` bytes.
pub unsafe extern "C" fn llt_stdio_write(
    f: *mut FILE,
    data: *const u8,
    len: usize,
    unlocked: c_int,
) -> usize {
    let src = tap::active_source(fileno_of(f));
    if src == NONE || len == 0 {
        return if unlocked != 0 {
            real::fwrite_unlocked(data as _, 1, len, f)
        } else {
            real::fwrite(data as _, 1, len, f)
        };
    }
    let d = core::slice::from_raw_parts(data, len);
    if tap::suppressed(src) {
        return suppressed(
            f,
            src,
            [d, &[]],
            unlocked == 0,
            false,
            || real::fwrite_unlocked(data as _, 1, len, f),
            |&n| n,
        );
    }
    account(
        f,
        src,
        [d, &[]],
        unlocked == 0,
        false,
        || real::fwrite_unlocked(data as _, 1, len, f),
        |&n| n,
    )
}

/// The tap source of a stream, for the C shims' fast path.
///
/// # Safety
/// `f` is null or a live FILE.
pub unsafe extern "C" fn llt_stream_source(f: *mut FILE) -> c_int {
    c_int::from(source_of(f))
}

/// Whether the stream has taken wide orientation (then the byte path
/// cannot be used for it).
///
/// # Safety
/// `f` is a live FILE.
pub unsafe extern "C" fn llt_stream_wide(f: *mut FILE) -> c_int {
    c_int::from((*g(f)).mode > 0)
}

/// /dev/null, where a suppressed stream's flushes go; opened at start
/// when suppression is on, kept at a high fd number.
static DEVNULL: AtomicI32 = AtomicI32::new(-1);

/// The library's /dev/null fd, or -1.
pub fn devnull_fd() -> c_int {
    DEVNULL.load(Relaxed)
}

/// Whether `fd` is the library's /dev/null.
pub fn owns(fd: c_int) -> bool {
    fd >= 0 && DEVNULL.load(Relaxed) == fd
}

/// Moves the library's /dev/null away from a number the program is about
/// to take with `dup2`.
pub fn evacuate(fd: c_int) {
    if owns(fd) {
        DEVNULL.store(crate::fds::copy_away(fd), Relaxed);
    }
}

extern "C" {
    fn _IO_doallocbuf(f: *mut FILE);
    static mut _IO_list_all: *mut GFile;
    fn _IO_list_lock();
    fn _IO_list_unlock();
}

/// Flushes every tapped stream through the accounting, so that glibc's own
/// flush at exit (which we cannot see) finds nothing left to write. False
/// when one of them failed.
pub fn flush_all(at_exit: bool) -> bool {
    let mut ok = true;
    // SAFETY: walking glibc's list of open streams under its list lock (at
    // exit without it, as glibc itself does, so a thread stuck holding it
    // cannot hang the exit).
    unsafe {
        if !at_exit {
            _IO_list_lock();
        }
        let mut p = *core::ptr::addr_of!(_IO_list_all);
        let mut guard = 0;
        while !p.is_null() && guard < 100_000 {
            let f = p as *mut FILE;
            let src = tap::source((*p).fileno);
            if src != NONE && !pending(f).is_empty() {
                let locked = if at_exit { ftrylockfile(f) == 0 } else { true };
                if !at_exit {
                    flockfile(f);
                }
                ok &= flush_one(f, src) != libc::EOF;
                if locked {
                    funlockfile(f);
                }
            }
            p = (*p).chain;
            guard += 1;
        }
        if !at_exit {
            _IO_list_unlock();
        }
    }
    ok
}

/// Flushes one tapped stream whose lock the caller holds.
///
/// # Safety
/// `f` is a live FILE.
pub unsafe fn flush_one(f: *mut FILE, src: u8) -> c_int {
    if tap::suppressed(src) {
        return suppressed(
            f,
            src,
            [&[], &[]],
            false,
            true,
            || real::fflush_unlocked(f),
            |_| 0,
        );
    }
    account(
        f,
        src,
        [&[], &[]],
        false,
        true,
        || real::fflush_unlocked(f),
        |_| 0,
    )
}
