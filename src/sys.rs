//! The library's own I/O, done with raw system calls.
//!
//! Why not `libc::write` and friends: this shared object exports `write`,
//! `close`, `open`… itself, so a call to them from inside the library would
//! land in our own hooks. Everything the library does for itself goes
//! through `syscall(2)` here, and every hook saves and restores `errno`
//! around its own work so the program never sees a changed value.

use libc::{c_int, c_long, c_void};

pub fn errno() -> c_int {
    // SAFETY: __errno_location always returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() }
}

pub fn set_errno(e: c_int) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = e }
}

/// Restores the thread's `errno` when dropped.
pub struct ErrnoGuard(c_int);

impl ErrnoGuard {
    pub fn new() -> ErrnoGuard {
        ErrnoGuard(errno())
    }
}

impl Default for ErrnoGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ErrnoGuard {
    fn drop(&mut self) {
        set_errno(self.0)
    }
}

#[inline]
fn ret(r: c_long) -> isize {
    r as isize
}

pub fn write(fd: c_int, buf: &[u8]) -> isize {
    // SAFETY: buf is a valid slice for its length.
    ret(unsafe { libc::syscall(libc::SYS_write, fd, buf.as_ptr(), buf.len()) })
}

/// # Safety
/// `iov` must point to `n` valid iovecs.
pub unsafe fn writev(fd: c_int, iov: *const libc::iovec, n: usize) -> isize {
    ret(libc::syscall(libc::SYS_writev, fd, iov, n))
}

/// # Safety
/// `msg` must be a valid msghdr.
pub unsafe fn sendmsg(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> isize {
    ret(libc::syscall(libc::SYS_sendmsg, fd, msg, flags))
}

pub fn close(fd: c_int) -> isize {
    // SAFETY: closing a number is memory-safe.
    ret(unsafe { libc::syscall(libc::SYS_close, fd) })
}

pub fn fcntl(fd: c_int, cmd: c_int, arg: c_long) -> isize {
    // SAFETY: only used with integer-argument commands.
    ret(unsafe { libc::syscall(libc::SYS_fcntl, fd, cmd, arg) })
}

/// # Safety
/// `path` must be NUL-terminated.
pub unsafe fn openat(dirfd: c_int, path: *const u8, flags: c_int, mode: c_int) -> isize {
    ret(libc::syscall(libc::SYS_openat, dirfd, path, flags, mode))
}

/// Device and inode: what identifies an open file.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Ident {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub rdev: u64,
}

impl Ident {
    pub fn from_stat(st: &libc::stat) -> Ident {
        Ident {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            rdev: st.st_rdev,
        }
    }
    pub fn same_file(&self, o: &Ident) -> bool {
        self.dev == o.dev && self.ino == o.ino
    }
    pub fn is_chr(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFCHR
    }
}

/// The raw `fstat` system call (the exported one could be hooked).
pub fn fstat_raw(fd: c_int) -> Option<libc::stat> {
    // SAFETY: st is a properly sized out-parameter.
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        (libc::syscall(libc::SYS_fstat, fd, &mut st as *mut libc::stat) == 0).then_some(st)
    }
}

pub fn fstat(fd: c_int) -> Option<Ident> {
    fstat_raw(fd).map(|st| Ident::from_stat(&st))
}

/// `stat` of a NUL-terminated path, following symlinks.
pub fn stat(path: &[u8]) -> Option<Ident> {
    debug_assert!(path.last() == Some(&0));
    // SAFETY: path is NUL-terminated; st is a properly sized out-parameter.
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        if libc::syscall(
            libc::SYS_newfstatat,
            libc::AT_FDCWD,
            path.as_ptr(),
            &mut st as *mut libc::stat,
            0,
        ) == 0
        {
            Some(Ident::from_stat(&st))
        } else {
            None
        }
    }
}

/// How many threads the process has (from the link count of
/// /proc/self/task: two plus one per thread), if procfs says.
pub fn threads() -> Option<u64> {
    // SAFETY: constant NUL-terminated path; st is a valid out-parameter.
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        if libc::syscall(
            libc::SYS_newfstatat,
            libc::AT_FDCWD,
            c"/proc/self/task".as_ptr(),
            &mut st as *mut libc::stat,
            0,
        ) == 0
            && st.st_nlink > 2
        {
            Some(st.st_nlink as u64 - 2)
        } else {
            None
        }
    }
}

/// Whether a write to `fd` could succeed: open, and not read-only.
pub fn writable(fd: c_int) -> bool {
    let fl = fcntl(fd, libc::F_GETFL, 0);
    fl >= 0 && (fl as c_int) & libc::O_ACCMODE != libc::O_RDONLY
}

#[cfg(not(test))]
extern "C" {
    fn llt_in_vfork_child() -> c_int;
}

/// Whether this code runs in a vfork child, on its parent's memory (see
/// the `vfork` hook in src/shim/common.c). Such a child must leave the
/// library's state alone: every hook then just makes the real call.
#[inline]
pub fn in_vfork_child() -> bool {
    #[cfg(not(test))]
    // SAFETY: reads a thread-local int.
    return unsafe { llt_in_vfork_child() } != 0;
    #[cfg(test)]
    false
}

pub fn getpid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_getpid) as i32 }
}

/// The calling thread's id (`gettid(2)`, which older glibc and musl lack).
pub fn gettid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Whether thread `tid` is alive in this process (`tgkill` with signal 0
/// checks without sending anything). A fork child's threads are only the
/// forking one, so a lock held by another thread of the parent shows as
/// dead there.
pub fn thread_alive(tid: i32) -> bool {
    let _e = ErrnoGuard::new();
    // SAFETY: signal 0 only checks that the thread exists.
    unsafe { libc::syscall(libc::SYS_tgkill, getpid(), tid, 0) == 0 || errno() != libc::ESRCH }
}

/// Nanoseconds since the Unix epoch on the wall clock. Read from the vDSO
/// (no system call) when the clock source allows, as TSC and kvm-clock
/// do; otherwise glibc makes the system call, and if that fails (a
/// seccomp filter) `errno` is put back and the coarse clock answers.
#[inline]
pub fn realtime_ns() -> u64 {
    let saved = errno();
    // SAFETY: ts is a valid out-parameter; clock_gettime is not hooked.
    unsafe {
        let mut ts: libc::timespec = core::mem::zeroed();
        if libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) != 0 {
            set_errno(saved);
            libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts);
        }
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
}

/// Microseconds on the monotonic clock.
pub fn now_us() -> u64 {
    // SAFETY: ts is a valid out-parameter; clock_gettime is not hooked.
    unsafe {
        let mut ts: libc::timespec = core::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
    }
}

/// Milliseconds on the monotonic clock.
pub fn now_ms() -> u64 {
    now_us() / 1000
}

/// Waits while `*word == expected`, at most `timeout_ms`.
pub fn futex_wait(word: &core::sync::atomic::AtomicU32, expected: u32, timeout_ms: u64) {
    let ts = timespec_ms(timeout_ms);
    // SAFETY: word is a live aligned u32; ts outlives the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            &ts as *const libc::timespec,
        );
    }
}

pub fn futex_wake(word: &core::sync::atomic::AtomicU32) {
    // SAFETY: word is a live aligned u32.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}

fn timespec_ms(ms: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ms / 1000) as _,
        tv_nsec: ((ms % 1000) * 1_000_000) as _,
    }
}

pub fn sleep_ms(ms: u64) {
    let ts = timespec_ms(ms);
    // SAFETY: ts is valid; nanosleep is not hooked.
    unsafe {
        libc::syscall(
            libc::SYS_nanosleep,
            &ts as *const libc::timespec,
            core::ptr::null_mut::<c_void>(),
        );
    }
}

/// One line on stderr, straight to fd 2 so it is never tapped.
/// `say` with `who[pid]: ` in front (at most five parts after it): the
/// debug line of the library and of `logtap-run`.
pub fn say_as(who: &[u8], parts: &[&[u8]]) {
    let mut pid = [0u8; 20];
    let pid = fmt_u64(getpid() as u64, &mut pid);
    let mut all: [&[u8]; 9] = [who, b"[", pid, b"]: ", &[], &[], &[], &[], &[]];
    let n = parts.len().min(5);
    all[4..4 + n].copy_from_slice(&parts[..n]);
    say(&all[..4 + n]);
}

pub fn say(parts: &[&[u8]]) {
    let mut buf = [0u8; 1024];
    let mut at = 0;
    for p in parts {
        let n = p.len().min(buf.len() - 1 - at);
        buf[at..at + n].copy_from_slice(&p[..n]);
        at += n;
    }
    buf[at] = b'\n';
    let _guard = ErrnoGuard::new();
    write(2, &buf[..at + 1]);
}

/// Formats `n` in decimal into `buf`, returning the digits.
pub fn fmt_u64(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// A memfd of exactly `size` bytes, close-on-exec, sealed so that it can
/// neither shrink nor grow and its seals cannot change (a process that
/// maps it can rely on every page staying there); -1 when the kernel
/// refuses (no memfd, or no sealing).
pub fn sealed_memfd(name: &core::ffi::CStr, size: usize) -> c_int {
    // SAFETY: memfd_create with a NUL-terminated name; the other calls act
    // on the new fd only.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_memfd_create,
            name.as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        ) as c_int;
        if fd < 0 {
            return -1;
        }
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        if libc::syscall(libc::SYS_ftruncate, fd, size as libc::off_t) != 0
            || fcntl(fd, libc::F_ADD_SEALS, c_long::from(seals)) < 0
        {
            close(fd);
            return -1;
        }
        fd
    }
}

/// Waits up to `ms` for `events` on `fd` (one `poll`; its result is not
/// needed: the caller tries the fd again either way).
pub fn poll_one(fd: c_int, events: libc::c_short, ms: c_int) {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd; poll is not hooked.
    unsafe { libc::poll(&mut p, 1, ms) };
}

/// `recv` as a raw system call (`recvfrom` with no address).
pub fn recv(fd: c_int, buf: &mut [u8], flags: c_int) -> isize {
    // SAFETY: `buf` is writable for its length; no address is asked for.
    ret(unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd,
            buf.as_mut_ptr(),
            buf.len(),
            flags,
            core::ptr::null_mut::<libc::sockaddr>(),
            core::ptr::null_mut::<libc::socklen_t>(),
        )
    })
}

/// Copies `len` bytes at `src` in this process to `dst` through the kernel
/// (`process_vm_readv` on itself), which checks `src` as a system call
/// does: false when it cannot be read (or the call is refused). For rare
/// paths only: it costs about 1.5 µs.
///
/// # Safety
/// `dst..dst+len` is writable memory of the caller; `src` may be any
/// address.
pub unsafe fn read_self(dst: *mut u8, src: *const u8, len: usize) -> bool {
    let _e = ErrnoGuard::new();
    let local = libc::iovec {
        iov_base: dst as *mut libc::c_void,
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: src as *mut libc::c_void,
        iov_len: len,
    };
    libc::syscall(
        libc::SYS_process_vm_readv,
        getpid(),
        &local as *const libc::iovec,
        1usize,
        &remote as *const libc::iovec,
        1usize,
        0usize,
    ) == len as libc::c_long
}
