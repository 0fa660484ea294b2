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
//! - the path is walked one component at a time (`walk`), each directory
//!   opened `O_PATH|O_NOFOLLOW` relative to the one before and checked on
//!   its fd (for the library's own files), or checked with `lstat` of its
//!   resolved path text, holding no fd (inside the program's calls: tap-file
//!   checks, see `Via`); a symlink on the way must be root's or the euid's, and its
//!   text is walked under the same rules (so a root-owned link into another
//!   user's directory is refused where that directory is reached); the
//!   last component is opened relative to the verified directory, so
//!   nothing can be swapped between the check and the open;
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
    sys::fstat_raw(fd).map(|st| Meta::from(&st))
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
    /// Refused for what the path is (a symlink, a FIFO, a foreign or
    /// multiply-linked file, an untrusted directory on the way) or for a
    /// permission the process lacks (a plain user's `/run/liblogtap.log`, a
    /// read-only file system): neither passes by itself. Not a failure
    /// that may pass: a directory not made yet (`ENOENT`), a full disk,
    /// the fd limit.
    pub fn lasting(&self) -> bool {
        matches!(
            self.errno,
            0 | libc::ELOOP | libc::ENXIO | libc::EACCES | libc::EPERM | libc::EROFS
        )
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

/// How many symbolic links one walk follows before it gives up (the
/// kernel's own limit is 40).
const MAX_HOPS: u32 = 40;
/// Longest name of one path component.
const NAME_MAX: usize = 255;

/// How a walk holds on to the directory it has reached.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Via {
    /// An `O_PATH` fd per directory, each opened relative to the one
    /// before: what is checked is what is used. For the library's own
    /// files (`open_append`), opened on the consumer thread.
    Fds,
    /// The path text of the directory reached (its components verified one
    /// by one with `fstatat`, never a symlink among them): no fd at all.
    /// For the checks made inside the program's own calls (classifying a
    /// tap file in an open hook), where even a momentary fd would take the
    /// program's lowest free number: a `dup2` racing onto it would fail
    /// with `EBUSY`, a program that just closed fd N would not get N from
    /// its next open, and at its fd limit the walk itself would fail.
    /// Only root, the euid (and the trusted groups) can change a directory
    /// the walk accepted, so re-resolving the text for each step cannot be
    /// raced by anyone else either.
    Names,
}

/// The end of a walk: a verified directory and the last component's name
/// in it, NUL-terminated.
pub struct Walked<'b> {
    /// `Via::Fds`: the directory's `O_PATH` fd, owned by the walk; -1 for
    /// `Via::Names`.
    pub dirfd: i32,
    /// `Via::Names`: the directory's text is `buf[..dir_len]` ("" for "/").
    buf: &'b mut [u8; PATH_MAX],
    dir_len: usize,
    name: [u8; NAME_MAX + 1],
    len: usize,
    /// The directory is one others can write but sticky: the last
    /// component needs its own owner check.
    pub shared_sticky: bool,
    /// Where the refusal of the last component points in the original path.
    at: usize,
}

impl Walked<'_> {
    /// The last component, NUL-terminated.
    pub fn name(&self) -> &[u8] {
        &self.name[..self.len + 1]
    }

    /// `lstat` of the entry `name` (NUL-terminated, one component) of the
    /// verified directory.
    pub fn stat_entry(&mut self, name: &[u8]) -> Result<Meta, i32> {
        if self.dirfd >= 0 {
            return stat_at(self.dirfd, name);
        }
        let n = self.dir_len;
        if n + 1 + name.len() > PATH_MAX {
            return Err(libc::ENAMETOOLONG);
        }
        self.buf[n] = b'/';
        self.buf[n + 1..n + 1 + name.len()].copy_from_slice(name);
        stat_path(&self.buf[..n + 1 + name.len()], false)
    }

    /// `lstat` of the last component.
    pub fn stat_last(&mut self) -> Result<Meta, i32> {
        let name = self.name;
        self.stat_entry(&name[..self.len + 1])
    }

    /// The verified directory itself.
    pub fn stat_dir(&mut self) -> Option<Meta> {
        if self.dirfd >= 0 {
            return stat_fd(self.dirfd);
        }
        if self.dir_len == 0 {
            return stat_path(b"/\0", false).ok();
        }
        self.buf[self.dir_len] = 0;
        stat_path(&self.buf[..self.dir_len + 1], false).ok()
    }
}

impl Drop for Walked<'_> {
    fn drop(&mut self) {
        if self.dirfd >= 0 {
            sys::close(self.dirfd);
        }
    }
}

fn open_path(dirfd: i32, name: &[u8]) -> Result<i32, i32> {
    // SAFETY: NUL-terminated name; a raw open returning an fd we own.
    let fd = unsafe {
        sys::openat(
            dirfd,
            name.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        Err(sys::errno())
    } else {
        Ok(fd as i32)
    }
}

pub fn stat_at(dirfd: i32, name: &[u8]) -> Result<Meta, i32> {
    // SAFETY: NUL-terminated name; st is a properly sized out-parameter.
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        if libc::syscall(
            libc::SYS_newfstatat,
            dirfd,
            name.as_ptr(),
            &mut st as *mut libc::stat,
            libc::AT_SYMLINK_NOFOLLOW,
        ) == 0
        {
            Ok(Meta::from(&st))
        } else {
            Err(sys::errno())
        }
    }
}

/// The root directory, checked: with `Via::Fds` opened `O_PATH` (the fd is
/// returned), with `Via::Names` looked at by name (-1).
fn open_root(via: Via) -> Result<(i32, bool), Refusal> {
    if via == Via::Names {
        return match stat_path(b"/\0", false) {
            Ok(m) => check_dir(&m)
                .map(|s| (-1, s))
                .map_err(|w| Refusal::new(w, 1)),
            Err(e) => Err(Refusal {
                why: b"cannot stat",
                at: 1,
                errno: e,
            }),
        };
    }
    let fd = open_path(libc::AT_FDCWD, b"/\0").map_err(|e| Refusal {
        why: b"cannot open",
        at: 1,
        errno: e,
    })?;
    match stat_fd(fd)
        .ok_or(&b"cannot stat"[..])
        .and_then(|m| check_dir(&m))
    {
        Ok(s) => Ok((fd, s)),
        Err(w) => {
            sys::close(fd);
            Err(Refusal::new(w, 1))
        }
    }
}

/// Walks the absolute `path` (not NUL-terminated) one component at a time
/// from `/`, without ever letting the kernel follow a symlink: each
/// directory is checked (`check_dir`) as it is reached, with `Via::Fds` on
/// an fd opened `O_PATH|O_NOFOLLOW` relative to the one before (so what is
/// checked is what is used, and nothing can be swapped in between), with
/// `Via::Names` by `lstat` of its path text (see `Via`). A symlink on the
/// way must be owned by root or the euid (a link of another user's would
/// let that user choose where the path leads), and its text is walked under
/// the same rules, so every directory the link passes through is checked
/// too. With `follow_last`, a symlink as the last component is followed the
/// same way. Returns the verified directory holding the last component.
///
/// No allocation: `buf` (the caller's stack) holds the rest of the path at
/// its end, a link's text is read into the free space before it, and with
/// `Via::Names` the directory's text grows from its start (each step writes
/// `dir/name` over the part of the path already consumed).
pub fn walk<'b>(
    path: &[u8],
    follow_last: bool,
    via: Via,
    buf: &'b mut [u8; PATH_MAX],
) -> Result<Walked<'b>, Refusal> {
    if path.first() != Some(&b'/') || path.len() >= PATH_MAX {
        return Err(Refusal::new(b"not an absolute path", path.len()));
    }
    let end = PATH_MAX;
    let mut pos = end - path.len();
    buf[pos..].copy_from_slice(path);
    // The unconsumed part of the original path is buf[end - orig..]:
    // refusals point into the original path through it.
    let mut orig = path.len();
    let (mut dirfd, mut shared_sticky) = open_root(via)?;
    // Via::Names: the directory reached is buf[..dir_len].
    let mut dir_len = 0;
    let mut hops = 0;
    let mut name = [0u8; NAME_MAX + 1];
    macro_rules! fail {
        ($r:expr) => {{
            if dirfd >= 0 {
                sys::close(dirfd);
            }
            return Err($r);
        }};
    }
    macro_rules! done {
        ($len:expr, $at:expr) => {{
            return Ok(Walked {
                dirfd,
                buf,
                dir_len,
                name,
                len: $len,
                shared_sticky,
                at: $at,
            });
        }};
    }
    loop {
        while pos < end && buf[pos] == b'/' {
            pos += 1;
        }
        if pos == end {
            fail!(Refusal::new(b"names a directory, not a file", path.len()));
        }
        let start = pos;
        let comp_end = buf[pos..end]
            .iter()
            .position(|&c| c == b'/')
            .map_or(end, |p| pos + p);
        if end - pos <= orig {
            orig = end - comp_end;
        }
        let at = path.len() - orig;
        let len = comp_end - pos;
        if len > NAME_MAX {
            fail!(Refusal {
                why: b"name too long",
                at,
                errno: libc::ENAMETOOLONG
            });
        }
        name[..len].copy_from_slice(&buf[pos..comp_end]);
        name[len] = 0;
        let n = &name[..len + 1];
        // (A trailing slash makes the component a directory, not the last.)
        let last = comp_end == end;
        pos = comp_end;
        if &name[..len] == b"." {
            continue;
        }
        // The component: with Fds held open from here on (what is checked
        // is this fd); with Names, `dir/name` is written over the consumed
        // part of the path (the component itself is in `name`) and looked
        // at with lstat.
        let looked = match via {
            Via::Fds => open_path(dirfd, n).and_then(|fd| match stat_fd(fd) {
                Some(m) => Ok((fd, m)),
                None => {
                    sys::close(fd);
                    Err(libc::EIO)
                }
            }),
            Via::Names => {
                if dir_len + 2 > start {
                    fail!(Refusal {
                        why: b"name too long",
                        at,
                        errno: libc::ENAMETOOLONG
                    });
                }
                buf[dir_len] = b'/';
                buf[dir_len + 1..dir_len + 1 + len].copy_from_slice(&name[..len]);
                buf[dir_len + 1 + len] = 0;
                stat_path(&buf[..dir_len + len + 2], false).map(|m| (-1, m))
            }
        };
        let (fd, m) = match looked {
            Ok(v) => v,
            // A missing last component is for the caller (O_CREAT).
            Err(libc::ENOENT) if last => done!(len, at),
            Err(e) => fail!(Refusal {
                why: if via == Via::Fds {
                    b"cannot open"
                } else {
                    b"cannot stat"
                },
                at,
                errno: e
            }),
        };
        let close_fd = || {
            if fd >= 0 {
                sys::close(fd);
            }
        };
        if shared_sticky && !m.owner_trusted() {
            // In a sticky directory others can write, only the entry's
            // owner can have made it: that must be root or us.
            close_fd();
            fail!(Refusal::new(
                b"owned by another user inside a directory others can write",
                at
            ));
        }
        if m.is_link() && (follow_last || !last) {
            if !m.owner_trusted() {
                close_fd();
                fail!(Refusal::new(
                    b"a symlink owned by another user (neither root nor the program's); not followed",
                    at
                ));
            }
            hops += 1;
            // The link text goes into the free space before the rest (with
            // Names, after `dir/name`, through which it is read), then moves
            // right in front of the rest with a '/' between.
            let from = if via == Via::Fds {
                0
            } else {
                dir_len + len + 2
            };
            let room = pos.saturating_sub(1).saturating_sub(from);
            let p = buf.as_mut_ptr();
            // SAFETY: with Fds, readlinkat of an O_PATH fd to a link with
            // an empty name reads that link; with Names, the link's
            // NUL-terminated path is buf[..from]. The text goes to
            // buf[from..from + room], inside the buffer and apart from the
            // path read.
            let r = unsafe {
                if via == Via::Fds {
                    libc::syscall(libc::SYS_readlinkat, fd, c"".as_ptr(), p.add(from), room)
                } else {
                    libc::syscall(
                        libc::SYS_readlinkat,
                        libc::AT_FDCWD,
                        p as *const u8,
                        p.add(from),
                        room,
                    )
                }
            };
            let e = sys::errno();
            close_fd();
            if hops > MAX_HOPS {
                fail!(Refusal {
                    why: b"too many symlinks",
                    at,
                    errno: libc::ELOOP
                });
            }
            if r <= 0 || r as usize >= room {
                fail!(Refusal {
                    why: b"cannot read the symlink (or its target is too long)",
                    at,
                    errno: if r < 0 { e } else { libc::ENAMETOOLONG }
                });
            }
            let r = r as usize;
            buf[pos - 1] = b'/';
            buf.copy_within(from..from + r, pos - 1 - r);
            pos = pos - 1 - r;
            if last {
                // Nothing followed the link: drop the '/' just added so the
                // link's own last component stays the last one.
                buf.copy_within(pos..end - 1, pos + 1);
                pos += 1;
            }
            if buf[pos] == b'/' {
                if dirfd >= 0 {
                    sys::close(dirfd);
                }
                dir_len = 0;
                (dirfd, shared_sticky) = match open_root(via) {
                    Ok(v) => v,
                    Err(r) => return Err(Refusal { at, ..r }),
                };
            }
            continue;
        }
        if last {
            close_fd();
            done!(len, at);
        }
        match via {
            Via::Fds => {
                sys::close(dirfd);
                dirfd = fd;
            }
            Via::Names if &name[..len] == b".." => {
                dir_len = buf[..dir_len].iter().rposition(|&c| c == b'/').unwrap_or(0);
            }
            Via::Names => dir_len += 1 + len,
        }
        match check_dir(&m) {
            Ok(s) => shared_sticky = s,
            Err(w) => fail!(Refusal::new(w, at)),
        }
    }
}

/// The file `path` (absolute, not NUL-terminated) leads to under the rules
/// of `walk`, symlinks followed: its metadata, for matching a file the
/// program opened. In a sticky directory others can write, the file must
/// be owned by root or the euid and have one link (a hard link there could
/// be another user's way to another file).
pub fn resolve(path: &[u8], via: Via) -> Result<Meta, Refusal> {
    let mut buf = [0u8; PATH_MAX];
    let mut w = walk(path, true, via, &mut buf)?;
    let m = w.stat_last().map_err(|e| Refusal {
        why: b"cannot stat",
        at: w.at,
        errno: e,
    })?;
    if w.shared_sticky {
        if !m.owner_trusted() {
            return Err(Refusal::new(
                b"owned by another user inside a directory others can write",
                w.at,
            ));
        }
        if m.nlink != 1 {
            return Err(Refusal::new(
                b"has more than one link inside a directory others can write (a hard link to another file?)",
                w.at,
            ));
        }
    }
    Ok(m)
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
    let mut buf = [0u8; PATH_MAX];
    let w = walk(name, false, Via::Fds, &mut buf)?;
    // SAFETY: NUL-terminated name, relative to the verified directory; a
    // raw open returning an fd we own.
    let fd = unsafe {
        sys::openat(
            w.dirfd,
            w.name().as_ptr(),
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
