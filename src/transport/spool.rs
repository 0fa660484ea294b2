//! The spool: the shared ring as a file that outlives its process.
//!
//! A memfd lives as long as something holds it. While logtap-sink holds
//! the program's ring, SIGKILL loses nothing; while no sink does (it is
//! restarting, or not yet started), the memfd dies with the process. So
//! when the spool directory (`LLT_SPOOL`, by default next to the socket:
//! `<socket>.spool`, see `logtap_wire::ring::SPOOL_SUFFIX`) is on a memory
//! filesystem, the ring is a file there instead: the same layout and size,
//! mapped the same way, handed to the sink the same way. The process
//! holds an `flock` on it for its life; a sink that finds a ring nobody
//! locks reads it and removes it. At exit or exec with nothing left to
//! deliver, the process removes it itself.
//!
//! Only memory filesystems: a file on disk would have every ring page
//! written back to the disk, the very I/O suppression saves.
//!
//! A page of a file on a full tmpfs cannot be allocated when first
//! touched, and the kernel answers the touch with SIGBUS. The ring
//! therefore never touches a page of a spooled file it has not allocated
//! first (`fallocate`): the control block and source table when the file
//! is made, each intent slot when a thread claims it, the records ahead of
//! the head as it advances (`crate::ring::Ring::back`). A failed
//! allocation is a full ring for that write (counted as dropped), never a
//! fault.
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
const RAMFS_MAGIC: i64 = 0x8584_58f6;

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

/// `.<pid>-<stamp>.ring` and a NUL into `buf`; returns the length with
/// the NUL. The name without the dot starts at 1.
fn file_name(buf: &mut [u8; 64], pid: i32, stamp: u64) -> usize {
    let mut n = 0;
    let mut put = |b: &[u8]| {
        buf[n..n + b.len()].copy_from_slice(b);
        n += b.len();
    };
    let (mut a, mut b) = ([0u8; 20], [0u8; 20]);
    put(b".");
    put(sys::fmt_u64(pid as u64, &mut a));
    put(b"-");
    put(sys::fmt_u64(stamp, &mut b));
    put(lay::SPOOL_RING_SUFFIX.as_bytes());
    put(b"\0");
    n
}

fn raw(r: libc::c_long) -> bool {
    r >= 0
}

/// Opens the spool directory, making it (mode `SPOOL_MODE`) if it is
/// missing and the socket's directory exists. -1: none.
fn open_dir(path: &[u8]) -> i32 {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: `path` is NUL-terminated.
    let open = || unsafe { libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), flags) };
    let fd = open();
    if fd >= 0 || sys::errno() != libc::ENOENT {
        return fd as i32;
    }
    // SAFETY: as above; the mode is narrowed by the umask, then set
    // exactly with fchmod on the directory this call made.
    unsafe {
        if libc::syscall(libc::SYS_mkdirat, libc::AT_FDCWD, path.as_ptr(), 0o700) == 0 {
            let fd = open();
            if fd >= 0 {
                libc::syscall(libc::SYS_fchmod, fd, lay::SPOOL_MODE);
            }
            return fd as i32;
        }
    }
    if sys::errno() == libc::EEXIST {
        return open() as i32;
    }
    -1
}

/// A new spooled ring file of `size` bytes, locked, with the bytes of
/// each of `backed` (offset, length) allocated; -1 when there is no spool
/// (not a socket target, no directory, not a memory filesystem) or any
/// step fails (no room for even that). The fd is close-on-exec; the
/// caller places it (`fds::adopt_ring_fd`).
pub fn create(size: usize, backed: [(usize, usize); 2]) -> i32 {
    let _e = sys::ErrnoGuard::new();
    PID.store(0, Relaxed);
    let mut dbuf = [0u8; config::SPOOL_MAX + 8];
    let Some(dir) = dir_path(&mut dbuf) else {
        return -1;
    };
    let dfd = open_dir(dir);
    if dfd < 0 {
        return -1;
    }
    // SAFETY: statfs is a properly sized out-parameter.
    let mut fs: libc::statfs = unsafe { core::mem::zeroed() };
    // SAFETY: as above, on the directory just opened.
    let memory = unsafe { libc::syscall(libc::SYS_fstatfs, dfd, &mut fs as *mut libc::statfs) }
        == 0
        && matches!(fs.f_type as i64, TMPFS_MAGIC | RAMFS_MAGIC);
    if !memory {
        sys::close(dfd);
        crate::debug(&[
            b"spool ",
            &dir[..dir.len() - 1],
            b" is not on a memory filesystem (tmpfs): the ring is a memfd, lost if the process is killed while no sink holds it",
        ]);
        return -1;
    }
    let pid = sys::getpid();
    let stamp = sys::realtime_ns();
    let mut nbuf = [0u8; 64];
    let n = file_name(&mut nbuf, pid, stamp);
    let tmp = &nbuf[..n];
    let fin = &nbuf[1..n];
    // SAFETY: NUL-terminated names relative to the directory fd; every
    // other call acts on the new file's fd.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat,
            dfd,
            tmp.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            // Group-readable: a sink of another uid that shares the
            // group (a pod's fsGroup, which a setgid spool passes on)
            // can read a dead program's ring.
            0o640,
        )
    } as i32;
    let made = fd >= 0
        // SAFETY: see above.
        && unsafe {
            raw(libc::syscall(libc::SYS_flock, fd, libc::LOCK_EX | libc::LOCK_NB))
                && raw(libc::syscall(libc::SYS_ftruncate, fd, size as libc::off_t))
                && backed.iter().all(|&(off, len)| allocate(fd, off, len))
                && (raw(libc::syscall(
                    libc::SYS_renameat2,
                    dfd,
                    tmp.as_ptr(),
                    dfd,
                    fin.as_ptr(),
                    libc::RENAME_NOREPLACE,
                )) || (sys::errno() == libc::EINVAL
                    && raw(libc::syscall(libc::SYS_renameat, dfd, tmp.as_ptr(), dfd, fin.as_ptr()))))
        };
    if !made {
        let mut e = [0u8; 20];
        crate::debug(&[
            b"no ring in the spool ",
            &dir[..dir.len() - 1],
            b" (errno ",
            sys::fmt_u64(sys::errno() as u64, &mut e),
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

/// The ring about to be made is not (yet) spooled: a fork child's new
/// ring must never be taken for its parent's file.
pub fn forget() {
    PID.store(0, Relaxed);
}

/// Whether the ring is a spooled file.
pub fn spooled() -> bool {
    PID.load(Relaxed) != 0
}

/// Removes this process's spooled ring from the spool (nothing is left in
/// it to deliver): only if the name still names the file `ring_fd` holds.
/// The mapping and the fd stay; the ring just no longer outlives the
/// process.
pub fn remove(ring_fd: i32) {
    let pid = PID.swap(0, Relaxed);
    if pid == 0 || ring_fd < 0 {
        return;
    }
    let _e = sys::ErrnoGuard::new();
    let mut dbuf = [0u8; config::SPOOL_MAX + 8];
    let Some(dir) = dir_path(&mut dbuf) else {
        return;
    };
    let mut nbuf = [0u8; 64];
    let n = file_name(&mut nbuf, pid, STAMP.load(Relaxed));
    let name = &nbuf[1..n];
    // SAFETY: NUL-terminated paths; the stat buffer is properly sized.
    unsafe {
        let dfd = libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            dir.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        ) as i32;
        if dfd < 0 {
            return;
        }
        let mut st: libc::stat = core::mem::zeroed();
        let ours = libc::syscall(
            libc::SYS_newfstatat,
            dfd,
            name.as_ptr(),
            &mut st as *mut libc::stat,
            libc::AT_SYMLINK_NOFOLLOW,
        ) == 0
            && sys::fstat(ring_fd).is_some_and(|id| id.same_file(&sys::Ident::from_stat(&st)));
        if ours {
            libc::syscall(libc::SYS_unlinkat, dfd, name.as_ptr(), 0);
        }
        sys::close(dfd);
    }
}

/// Allocates `len` bytes of the spooled file `fd` at `off`; false when
/// the filesystem has no room (or the call fails).
pub fn allocate(fd: i32, off: usize, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    let _e = sys::ErrnoGuard::new();
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
            return true;
        }
        if sys::errno() != libc::EINTR {
            return false;
        }
    }
}

/// Gives up a ring file that could not be used (its mapping failed): out
/// of the spool, closed.
pub fn discard(fd: i32) {
    remove(fd);
    sys::close(fd);
}
