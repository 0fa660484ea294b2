//! The spool: the shared ring as a file that outlives its process.
//!
//! A memfd lives as long as something holds it. While logtap-sink holds
//! the program's ring, SIGKILL loses nothing; while no sink does (it is
//! restarting, or not yet started), the memfd dies with the process. So
//! when the spool directory (`LLT_SPOOL`, by default next to the socket:
//! `<socket>.spool`, see `logtap_wire::ring::SPOOL_SUFFIX`) exists and is
//! on tmpfs, the ring is a file there instead: the same layout and size,
//! mapped the same way, handed to the sink the same way. The process
//! holds an `flock` on it for its life; a sink that finds a ring nobody
//! locks reads it and removes it. At exit with nothing left to deliver,
//! the process removes it itself.
//!
//! The library never makes the directory: a spool-reading logtap-sink (or
//! the administrator, or a Kubernetes `emptyDir`) does. So a sink that
//! cannot read spooled rings (an older one) is never handed one, and the
//! library never fills a filesystem nobody chose for it.
//!
//! Only tmpfs: a file on disk would have every ring page written back to
//! the disk, the very I/O suppression saves.
//!
//! A page of a file on a full tmpfs cannot be allocated when first
//! touched, and the kernel answers the touch with SIGBUS. The ring
//! therefore never touches a page of a spooled file it has not allocated
//! first: the control block, source table and first records when the file
//! is made (`fallocate` on the new fd), each intent slot when a thread
//! claims it and the records ahead of the head as it advances
//! (`MADV_POPULATE_WRITE` on the mapping, which fails with an error where
//! a touch would fault, and needs no fd that the program could have
//! replaced: `crate::ring::Ring`). A failed allocation is a full ring for
//! that write, never a fault. Kernels without `MADV_POPULATE_WRITE`
//! (before 5.14) keep the memfd. Growth also stops while the filesystem
//! has less than an eighth of its size free, so that the spool never
//! takes the last room of a filesystem it shares (`/run`).
//!
//! Invariants: raw system calls only (the exported `open`, `close` and
//! friends are the library's own hooks); no allocation; the name statics
//! are written in the constructor or a fork child (one thread) and read at
//! exit or exec.

use crate::config;
use crate::sys;
use core::sync::atomic::{AtomicI32, AtomicU64, Ordering::*};
use logtap_wire::ring as lay;

/// The name of this process's spooled ring is `<PID>-<STAMP>.ring`
/// (PID 0: the ring is not spooled).
static PID: AtomicI32 = AtomicI32::new(0);
static STAMP: AtomicU64 = AtomicU64::new(0);

const TMPFS_MAGIC: i64 = 0x0102_1994;
/// `MADV_POPULATE_WRITE` (Linux 5.14).
pub const MADV_POPULATE_WRITE: i32 = 23;

/// The spool directory and a NUL, in `buf`: `LLT_SPOOL`, else
/// `<socket>.spool`; `None` for targets other than a socket, or with
/// `LLT_SPOOL=off` (a socket path is at most 107 bytes:
/// `config::apply_target`; `LLT_SPOOL` at most 127).
fn dir_path(buf: &mut [u8; config::SPOOL_MAX + 8]) -> Option<&[u8]> {
    let c = config::get();
    if c.target_kind != config::TargetKind::Socket || c.spool_off {
        return None;
    }
    let (p, s) = if c.spool.is_empty() {
        (c.target_path.bytes(), lay::SPOOL_SUFFIX.as_bytes())
    } else {
        (c.spool.bytes(), &b""[..])
    };
    if p.len() + s.len() + 1 > buf.len() {
        return None;
    }
    buf[..p.len()].copy_from_slice(p);
    buf[p.len()..p.len() + s.len()].copy_from_slice(s);
    buf[p.len() + s.len()] = 0;
    Some(&buf[..p.len() + s.len() + 1])
}

/// A name in the spool and its NUL, built in a fixed buffer.
struct Name {
    buf: [u8; 64],
    len: usize,
}

impl Name {
    fn new() -> Name {
        Name {
            buf: [0; 64],
            len: 0,
        }
    }

    fn put(&mut self, b: &[u8]) -> &mut Name {
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
        self
    }

    fn num(&mut self, n: u64) -> &mut Name {
        let mut a = [0u8; 20];
        let digits = sys::fmt_u64(n, &mut a);
        let mut d = [0u8; 20];
        d[..digits.len()].copy_from_slice(digits);
        self.put(&d[..digits.len()])
    }

    /// The name with its NUL.
    fn c(&mut self) -> &[u8] {
        self.buf[self.len] = 0;
        &self.buf[..self.len + 1]
    }
}

/// `<pid>-<stamp>.ring`, with a leading dot while it is being made.
fn ring_name(pid: i32, stamp: u64, making: bool) -> Name {
    let mut n = Name::new();
    if making {
        n.put(b".");
    }
    n.num(pid as u64)
        .put(b"-")
        .num(stamp)
        .put(lay::SPOOL_RING_SUFFIX.as_bytes());
    n
}

/// `<pid>.exec`: the name of a ring with nothing left in it while its
/// process execs (`before_exec`).
fn exec_name(pid: i32) -> Name {
    let mut n = Name::new();
    n.num(pid as u64).put(lay::SPOOL_EXEC_SUFFIX.as_bytes());
    n
}

fn ok(r: libc::c_long) -> bool {
    r >= 0
}

/// Whether `name` (NUL-terminated) in the directory `dfd` still names the
/// file `fd` holds (not a symbolic link, not another file put there).
fn names(dfd: i32, name: &[u8], fd: i32) -> bool {
    // SAFETY: a NUL-terminated name relative to the directory fd; the stat
    // buffer is properly sized.
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        libc::syscall(
            libc::SYS_newfstatat,
            dfd,
            name.as_ptr(),
            &mut st as *mut libc::stat,
            libc::AT_SYMLINK_NOFOLLOW,
        ) == 0
            && sys::fstat(fd).is_some_and(|id| id.same_file(&sys::Ident::from_stat(&st)))
    }
}

/// The spool directory, opened `O_PATH` (search permission is all that
/// the calls relative to it need; a spool made by the sink, mode 01733,
/// cannot be read by others). -1 when there is none.
fn open_dir(path: &[u8]) -> i32 {
    // SAFETY: `path` is NUL-terminated.
    unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        ) as i32
    }
}

/// Allocates `len` bytes of the file `fd` at `off`; the errno when it
/// cannot (a full filesystem).
fn fallocate(fd: i32, off: usize, len: usize) -> Result<(), i32> {
    if len == 0 {
        return Ok(());
    }
    loop {
        // SAFETY: fallocate on a file of ours, inside its size.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fallocate,
                fd,
                0,
                off as libc::off_t,
                len as libc::off_t,
            )
        };
        if r == 0 {
            return Ok(());
        }
        if sys::errno() != libc::EINTR {
            return Err(sys::errno());
        }
    }
}

/// Whether the filesystem of `fd` keeps more than an eighth of its size
/// free after `more` bytes are taken from it.
pub fn room_for(fd: i32, more: usize) -> bool {
    // SAFETY: statfs is a properly sized out-parameter.
    let mut fs: libc::statfs = unsafe { core::mem::zeroed() };
    // SAFETY: as above. A wrong fd (the program's, after a race with its
    // dup2) only gives wrong figures, never harm.
    if unsafe { libc::syscall(libc::SYS_fstatfs, fd, &mut fs as *mut libc::statfs) } != 0 {
        return false;
    }
    let bsize = fs.f_bsize as u64;
    let free = (fs.f_bavail as u64).saturating_mul(bsize);
    let size = (fs.f_blocks as u64).saturating_mul(bsize);
    free.saturating_sub(more as u64) > size / 8
}

/// A new spooled ring file of `size` bytes, locked, with the bytes of
/// each of `backed` (offset, length) allocated; -1 when there is no spool
/// (not a socket target, `LLT_SPOOL=off`, no directory, not tmpfs, an old
/// kernel) or any step fails (no room for even that). The fd is
/// close-on-exec; the caller places it (`fds::adopt_ring_fd`) and checks
/// that its mapping can be allocated (`usable`).
pub fn create(size: usize, backed: [(usize, usize); 2]) -> i32 {
    let _e = sys::ErrnoGuard::new();
    PID.store(0, Relaxed);
    let mut dbuf = [0u8; config::SPOOL_MAX + 8];
    let Some(dir) = dir_path(&mut dbuf) else {
        return -1;
    };
    let shown = &dir[..dir.len() - 1];
    let dfd = open_dir(dir);
    if dfd < 0 {
        let mut e = [0u8; 20];
        crate::debug(&[
            b"no spool ",
            shown,
            b" (errno ",
            sys::fmt_u64(sys::errno() as u64, &mut e),
            b"): the ring is a memfd, lost if the process is killed while no sink holds it",
        ]);
        return -1;
    }
    let pid = sys::getpid();
    remove_exec_left(dfd, pid);
    // SAFETY: statfs is a properly sized out-parameter.
    let mut fs: libc::statfs = unsafe { core::mem::zeroed() };
    // SAFETY: as above, on the directory just opened.
    let tmpfs = unsafe { libc::syscall(libc::SYS_fstatfs, dfd, &mut fs as *mut libc::statfs) } == 0
        && fs.f_type as i64 == TMPFS_MAGIC;
    let need: usize = backed.iter().map(|b| b.1).sum();
    if !tmpfs || !room_for(dfd, need) {
        sys::close(dfd);
        crate::debug(&[
            b"spool ",
            shown,
            if tmpfs {
                b" has less than an eighth of its size free"
            } else {
                b" is not on tmpfs"
            },
            b": the ring is a memfd, lost if the process is killed while no sink holds it",
        ]);
        return -1;
    }
    let stamp = sys::realtime_ns();
    let mut making = ring_name(pid, stamp, true);
    let mut done = ring_name(pid, stamp, false);
    let (tmp, fin) = (making.c(), done.c());
    // SAFETY: NUL-terminated names relative to the directory fd; every
    // other call acts on the new file's fd.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat,
            dfd,
            tmp.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            // Group-readable: a sink of another uid that shares the
            // group (a pod's fsGroup, which a set-group-ID spool passes
            // on) can read a dead program's ring.
            0o640,
        )
    } as i32;
    let mut err = sys::errno();
    let made = fd >= 0
        // SAFETY: see above.
        && unsafe {
            ok(libc::syscall(libc::SYS_flock, fd, libc::LOCK_EX | libc::LOCK_NB))
                && ok(libc::syscall(libc::SYS_ftruncate, fd, size as libc::off_t))
        }
        && backed
            .iter()
            .all(|&(off, len)| fallocate(fd, off, len).map_err(|e| err = e).is_ok())
        // SAFETY: see above.
        && unsafe {
            ok(libc::syscall(
                libc::SYS_renameat2,
                dfd,
                tmp.as_ptr(),
                dfd,
                fin.as_ptr(),
                libc::RENAME_NOREPLACE,
            ))
        };
    if !made {
        if err == 0 {
            err = sys::errno();
        }
        let mut e = [0u8; 20];
        crate::debug(&[
            b"no ring in the spool ",
            shown,
            b" (errno ",
            sys::fmt_u64(err as u64, &mut e),
            b"): the ring is a memfd, lost if the process is killed while no sink holds it",
        ]);
        if fd >= 0 {
            // SAFETY: removes the name this call created (still the
            // temporary one: the rename is the last step).
            unsafe { libc::syscall(libc::SYS_unlinkat, dfd, tmp.as_ptr(), 0) };
            sys::close(fd);
        }
        sys::close(dfd);
        return -1;
    }
    sys::close(dfd);
    PID.store(pid, Relaxed);
    STAMP.store(stamp, Relaxed);
    fd
}

/// The ring of this pid's previous image, which exec'd with nothing left
/// in it (`before_exec`): removed, unless somebody locks it (a process of
/// another pid namespace with the same pid, in the middle of its own
/// exec, which may fail and take it back).
fn remove_exec_left(dfd: i32, pid: i32) {
    let mut name = exec_name(pid);
    let name = name.c();
    // SAFETY: a NUL-terminated name relative to the directory fd; the
    // other calls act on the fd opened here and the stat buffers.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_openat,
            dfd,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
        ) as i32;
        if fd < 0 {
            return;
        }
        if names(dfd, name, fd)
            && ok(libc::syscall(
                libc::SYS_flock,
                fd,
                libc::LOCK_EX | libc::LOCK_NB,
            ))
        {
            libc::syscall(libc::SYS_unlinkat, dfd, name.as_ptr(), 0);
        }
        sys::close(fd);
    }
}

/// Whether `MADV_POPULATE_WRITE` works on the new mapping at `p` (its
/// first page, allocated already): without it the ring could not grow
/// without risking a fault, so it is not spooled.
pub fn usable(p: *mut u8) -> bool {
    // SAFETY: the first page of a new shared mapping of ours; populating
    // it changes nothing.
    unsafe { libc::madvise(p as *mut libc::c_void, 4096, MADV_POPULATE_WRITE) == 0 }
}

/// The ring about to be made is not (yet) spooled: a fork child's new
/// ring must never be taken for its parent's file.
pub fn forget() {
    PID.store(0, Relaxed);
}

/// Whether the ring is a spooled file.
pub fn spooled() -> bool {
    PID.load(Relaxed) != 0
}

/// Renames this process's ring from `from` to `to` in the spool (never
/// over an existing name), or removes it (`to` None), only if `from`
/// still names the file `ring_fd` holds. Returns whether it did.
fn rename(ring_fd: i32, from: &[u8], to: Option<&[u8]>) -> bool {
    let mut dbuf = [0u8; config::SPOOL_MAX + 8];
    let Some(dir) = dir_path(&mut dbuf) else {
        return false;
    };
    let dfd = open_dir(dir);
    if dfd < 0 {
        return false;
    }
    // SAFETY: NUL-terminated names relative to the directory fd; the stat
    // buffer is properly sized.
    let done = unsafe {
        names(dfd, from, ring_fd)
            && match to {
                Some(to) => ok(libc::syscall(
                    libc::SYS_renameat2,
                    dfd,
                    from.as_ptr(),
                    dfd,
                    to.as_ptr(),
                    libc::RENAME_NOREPLACE,
                )),
                None => ok(libc::syscall(libc::SYS_unlinkat, dfd, from.as_ptr(), 0)),
            }
    };
    sys::close(dfd);
    done
}

/// Removes this process's spooled ring from the spool (nothing is left in
/// it to deliver, and the process ends): only if the name still names the
/// file `ring_fd` holds. The mapping and the fd stay.
pub fn remove(ring_fd: i32) {
    let pid = PID.swap(0, Relaxed);
    if pid == 0 || ring_fd < 0 {
        return;
    }
    let _e = sys::ErrnoGuard::new();
    rename(
        ring_fd,
        ring_name(pid, STAMP.load(Relaxed), false).c(),
        None,
    );
}

/// Before an exec, with nothing left in the ring: it takes the name
/// `<pid>.exec`, which the next image of this process removes when it
/// makes its own ring (and a sink removes once nobody locks it), so a
/// successful exec leaves nothing behind; a failed one renames it back
/// (`after_failed_exec`) and the process keeps its spooled ring. When the
/// name is taken (a process with the same pid in another pid namespace,
/// exec'ing too), the ring keeps its own name, for a sink to remove.
pub fn before_exec(ring_fd: i32) {
    let pid = PID.load(Relaxed);
    if pid == 0 || ring_fd < 0 {
        return;
    }
    let _e = sys::ErrnoGuard::new();
    let mut from = ring_name(pid, STAMP.load(Relaxed), false);
    let mut to = exec_name(pid);
    rename(ring_fd, from.c(), Some(to.c()));
}

/// The exec failed: the ring takes its name back, if `before_exec` gave it
/// the exec name.
pub fn after_failed_exec(ring_fd: i32) {
    let pid = PID.load(Relaxed);
    if pid == 0 || ring_fd < 0 {
        return;
    }
    let _e = sys::ErrnoGuard::new();
    let mut from = exec_name(pid);
    let mut to = ring_name(pid, STAMP.load(Relaxed), false);
    rename(ring_fd, from.c(), Some(to.c()));
}

/// Gives up a ring file that could not be used (its mapping failed): out
/// of the spool, closed.
pub fn discard(fd: i32) {
    remove(fd);
    sys::close(fd);
}
