//! Opening the library's own files without crossing privileges.
//!
//! A program under the library may run as root while the paths it is
//! configured with lie in directories other users can write (`/tmp`, a log
//! directory owned by an application user, a shared volume). Every file the
//! library opens or creates for itself goes through here:
//!
//! - the directories on the way are *trusted*: owned by root or the
//!   process's euid, and not writable by anyone else unless sticky (as
//!   sshd's StrictModes, plus the sticky exception: inside a sticky
//!   directory others can write, the next entry must itself be owned by
//!   root or the euid, so nobody else can have put it there);
//! - the last component is opened with `O_NOFOLLOW` (a symlink planted
//!   there is refused, not followed) and `O_NONBLOCK` (a FIFO planted there
//!   cannot make the open, or a write, wait);
//! - the result must be a regular file owned by root or the euid, with a
//!   single link (a hard link to somebody else's file has two);
//! - a file the library creates gets `LLT_TARGET_MODE` (default 0600).
//!
//! Nothing here allocates or takes a lock: paths are copied into stack
//! buffers, and only raw system calls are made (see `sys`).

use crate::config::PATH_MAX;
use crate::sys;

/// What `fstatat` says about a path or fd, as far as trust is concerned.
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
}

impl Meta {
    fn from(st: &libc::stat) -> Meta {
        // nlink_t is u64 on x86_64 and u32 on aarch64.
        #[allow(clippy::unnecessary_cast)]
        let nlink = st.st_nlink as u64;
        Meta {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            nlink,
        }
    }
    fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    pub fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }
    pub fn is_reg(&self) -> bool {
        self.kind() == libc::S_IFREG
    }
    pub fn is_link(&self) -> bool {
        self.kind() == libc::S_IFLNK
    }
    fn sticky(&self) -> bool {
        self.mode & libc::S_ISVTX != 0
    }
    /// Owned by root or by the process's effective uid.
    pub fn owner_trusted(&self) -> bool {
        self.uid == 0 || self.uid == euid()
    }
    /// Writable by someone other than its owner, root and the process's
    /// group (world-writable, or group-writable for a group other than
    /// root's and the process's effective group).
    fn shared_writable(&self) -> bool {
        self.mode & 0o002 != 0 || (self.mode & 0o020 != 0 && self.gid != 0 && self.gid != egid())
    }
}

pub fn euid() -> u32 {
    // SAFETY: no arguments; cannot fail.
    unsafe { libc::syscall(libc::SYS_geteuid) as u32 }
}

fn egid() -> u32 {
    // SAFETY: no arguments; cannot fail.
    unsafe { libc::syscall(libc::SYS_getegid) as u32 }
}

/// `fstatat` of a NUL-terminated path; `follow` false is `lstat`.
pub fn stat_path(path: &[u8], follow: bool) -> Result<Meta, i32> {
    debug_assert!(path.last() == Some(&0));
    let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    // SAFETY: path is NUL-terminated; st is a properly sized out-parameter.
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        if libc::syscall(
            libc::SYS_newfstatat,
            libc::AT_FDCWD,
            path.as_ptr(),
            &mut st as *mut libc::stat,
            flags,
        ) == 0
        {
            Ok(Meta::from(&st))
        } else {
            Err(sys::errno())
        }
    }
}

pub fn stat_fd(fd: i32) -> Option<Meta> {
    // SAFETY: st is a properly sized out-parameter.
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        if libc::syscall(libc::SYS_fstat, fd, &mut st as *mut libc::stat) == 0 {
            Some(Meta::from(&st))
        } else {
            None
        }
    }
}

/// Why a path was refused: a reason, and how many bytes of the path name
/// the component at fault (the whole path for the file itself).
#[derive(Clone, Copy, Debug)]
pub struct Refusal {
    pub why: &'static [u8],
    pub at: usize,
    /// The system call's error, when it was one (0 otherwise).
    pub errno: i32,
}

impl Refusal {
    fn new(why: &'static [u8], at: usize) -> Refusal {
        Refusal { why, at, errno: 0 }
    }
    /// Reports the refusal once per `flag` in debug mode:
    /// `<what> <path-part>: <why>`.
    pub fn report(&self, what: &[u8], path: &[u8]) {
        let mut n = [0u8; 20];
        let errno: &[u8] = if self.errno != 0 {
            sys::fmt_u64(self.errno as u64, &mut n)
        } else {
            b"-"
        };
        let mut line = crate::config::FixedStr::<512>::new();
        line.push(what);
        line.push(b" ");
        line.push(&path[..self.at.min(path.len()).min(400)]);
        line.push(b": ");
        line.push(self.why);
        crate::debug(&[line.bytes(), b" (errno ", errno, b")"]);
    }
}

/// Checks every directory from `/` down to the one holding the last
/// component of the absolute `path` (not NUL-terminated). Symlinks among the
/// directories are followed (`/var/run` → `/run`), but each is reached only
/// through trusted directories and must itself be trusted where others can
/// write. Ok(true) when the last directory is one others can write but
/// sticky: the last component then needs its own owner check.
pub fn trusted_dirs(path: &[u8]) -> Result<bool, Refusal> {
    if path.first() != Some(&b'/') || path.len() >= PATH_MAX {
        return Err(Refusal::new(b"not an absolute path", path.len()));
    }
    let mut buf = [0u8; PATH_MAX];
    // The root directory itself.
    buf[0] = b'/';
    buf[1] = 0;
    let root = stat_path(&buf[..2], true).map_err(|e| Refusal {
        why: b"cannot stat",
        at: 1,
        errno: e,
    })?;
    let mut shared_sticky = check_dir(&root).map_err(|w| Refusal::new(w, 1))?;
    let last = path.iter().rposition(|&c| c == b'/').unwrap_or(0);
    let mut i = 1;
    while i < last {
        // The next component ends at the next '/' (or at `last`).
        let end = path[i..last]
            .iter()
            .position(|&c| c == b'/')
            .map_or(last, |p| i + p);
        if end > i {
            buf[..end].copy_from_slice(&path[..end]);
            buf[end] = 0;
            let name = &buf[..end + 1];
            if shared_sticky {
                // In a sticky directory others can write, only the entry's
                // owner can have made it: that must be root or us.
                let l = stat_path(name, false).map_err(|e| Refusal {
                    why: b"cannot stat",
                    at: end,
                    errno: e,
                })?;
                if !l.owner_trusted() {
                    return Err(Refusal::new(
                        b"owned by another user inside a directory others can write",
                        end,
                    ));
                }
            }
            let m = stat_path(name, true).map_err(|e| Refusal {
                why: b"cannot stat",
                at: end,
                errno: e,
            })?;
            shared_sticky = check_dir(&m).map_err(|w| Refusal::new(w, end))?;
        }
        i = end + 1;
    }
    Ok(shared_sticky)
}

/// A directory on the way. Ok(true) when others may write it but it is
/// sticky (entries then need their own owner check).
fn check_dir(m: &Meta) -> Result<bool, &'static [u8]> {
    if !m.is_dir() {
        return Err(b"not a directory");
    }
    if !m.owner_trusted() {
        return Err(b"directory owned by another user (neither root nor the program's)");
    }
    if m.shared_writable() {
        if m.sticky() {
            return Ok(true);
        }
        return Err(b"directory writable by other users and not sticky");
    }
    Ok(false)
}

/// Whether `m`, an open file, may receive the library's data: a regular
/// file, owned by root or the euid, with one link.
pub fn check_file(m: &Meta) -> Result<(), &'static [u8]> {
    if !m.is_reg() {
        return Err(b"not a regular file");
    }
    if !m.owner_trusted() {
        return Err(b"owned by another user (neither root nor the program's)");
    }
    if m.nlink != 1 {
        return Err(b"has more than one link (a hard link to another file?)");
    }
    Ok(())
}

/// Opens the file target `path` (NUL-terminated, absolute) for appending,
/// creating it with `mode` (minus the umask) when missing, under the rules
/// of this module. Returns the fd (close-on-exec) or why it was refused.
pub fn open_append(path: &[u8], mode: u32) -> Result<i32, Refusal> {
    let name = &path[..path.len() - 1];
    trusted_dirs(name)?;
    // SAFETY: NUL-terminated path; a raw open returning an fd we own.
    let fd = unsafe {
        sys::openat(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_WRONLY
                | libc::O_APPEND
                | libc::O_CREAT
                | libc::O_NOFOLLOW
                | libc::O_NONBLOCK
                | libc::O_CLOEXEC,
            mode as i32,
        )
    };
    if fd < 0 {
        let e = sys::errno();
        let why: &'static [u8] = match e {
            libc::ELOOP => b"is a symbolic link; not followed",
            libc::ENXIO => b"is a FIFO or socket; not opened",
            _ => b"cannot open",
        };
        return Err(Refusal {
            why,
            at: name.len(),
            errno: e,
        });
    }
    let fd = fd as i32;
    match stat_fd(fd).ok_or(&b"cannot stat"[..]).and_then(|m| {
        check_file(&m)?;
        Ok(m)
    }) {
        Ok(_) => Ok(fd),
        Err(why) => {
            sys::close(fd);
            Err(Refusal::new(why, name.len()))
        }
    }
}

/// Opens `path` (NUL-terminated) for appending only if it is, right now,
/// the regular file `dev`/`ino`: the file the program itself opened. Used
/// to give suppressed tap-file data back at exit. Never creates, never
/// blocks.
pub fn open_same_file(path: &[u8], dev: u64, ino: u64) -> Option<i32> {
    // SAFETY: NUL-terminated path; a raw open returning an fd we own.
    let fd = unsafe {
        sys::openat(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_WRONLY | libc::O_APPEND | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY,
            0,
        )
    };
    if fd < 0 {
        return None;
    }
    let fd = fd as i32;
    match stat_fd(fd) {
        Some(m) if m.is_reg() && m.dev == dev && m.ino == ino => Some(fd),
        _ => {
            sys::close(fd);
            None
        }
    }
}

/// Opens `/dev/null` with `flags`, insisting it is the null device
/// (character device 1:3), not something put in its place.
pub fn open_devnull(flags: i32) -> i32 {
    // SAFETY: constant NUL-terminated path.
    let fd = unsafe {
        sys::openat(
            libc::AT_FDCWD,
            c"/dev/null".as_ptr() as *const u8,
            flags | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
            0,
        )
    } as i32;
    if fd < 0 {
        return -1;
    }
    match sys::fstat(fd) {
        Some(id) if id.is_chr() && id.rdev == libc::makedev(1, 3) => fd,
        _ => {
            sys::close(fd);
            -1
        }
    }
}
