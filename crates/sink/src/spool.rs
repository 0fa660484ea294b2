//! The spool: rings of programs that died while no sink held them.
//!
//! When the socket's directory is on a memory file system, liblogtap keeps
//! its ring in a file `<socket>.spool/<pid>-<ns>.ring` instead of a memfd
//! (`logtap_wire::ring::SPOOL_SUFFIX`), locked (`flock`, `LOCK_EX`) for the
//! life of its process, and still hands it to the sink over its
//! connection. A ring file nobody holds a lock on belongs to a process that
//! is gone: the sink reads it from its tail to its head as it reads the
//! ring of an ended connection, marks it `STATE_DELIVERED` and removes it.
//!
//! Every file in the directory may be hostile (anyone may create one): it
//! is examined with `fstatat` (no symlink followed) before it is opened,
//! opened with `O_NOFOLLOW|O_NONBLOCK` only when it is a regular file with
//! one link, read as the ring checks of [`Ring::check`] allow, and removed
//! only under a name the rules below recognise and only when that name
//! still names the file that was examined (device and inode).
//!
//! A ring the sink holds through a live connection is skipped by its lock
//! alone: the descriptor the sink received shares its program's open file
//! description, which holds the lock.

use std::collections::HashSet;
use std::ffi::{CStr, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use logtap_wire::ring::{
    RingPosition, SPOOL_EXEC_SUFFIX, SPOOL_MODE, SPOOL_RING_SUFFIX, SPOOL_SUFFIX, STATE_DELIVERED,
};
use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::shared_ring::{Ended, Ring};
use crate::warn;

/// How often the spool is listed.
pub const SCAN_EVERY: Duration = Duration::from_secs(2);
/// Rings recovered per scan at most, so that a spool full of rings never
/// keeps the sink from its connections for long; the rest come next time.
pub const RINGS_PER_SCAN: usize = 64;
/// A file being made (its name starts with a dot) that nobody locks and
/// that is older than this was left by a program that died making it.
const HALF_MADE_AGE: Duration = Duration::from_secs(60);
/// Names remembered so that a complaint about one is said once.
const SAID_MAX: usize = 4096;

/// The spool directory, held open.
pub struct Spool {
    dir: OwnedFd,
    /// As named by `--socket` (for messages).
    path: PathBuf,
    /// As the kernel names it (`/proc/self/fd`), to recognise a ring's
    /// name as one of this directory.
    real: PathBuf,
    /// Names already complained about (once each while they exist).
    said: HashSet<Vec<u8>>,
    /// Rings delivered that could be neither marked nor removed (device,
    /// inode): never delivered again while they stay.
    stuck: HashSet<(u64, u64)>,
}

impl Spool {
    /// Whether a ring's group is its program's: not in a set-group-ID
    /// spool, where every ring takes the spool's group.
    pub fn groups_are_programs(&self) -> bool {
        rustix::fs::fstat(&self.dir).is_ok_and(|st| st.st_mode & S_ISGID == 0)
    }
}

/// The set-group-ID bit of a mode.
const S_ISGID: u32 = 0o2000;

/// A spooled ring whose program is gone, locked by the sink, ready to be
/// recovered.
pub struct Found {
    /// Its name in the spool.
    pub name: Vec<u8>,
    /// The ring, from its tail (platform from its control block, token 0).
    pub ended: Ended,
    /// The file's owner: the program's uid (the kernel's word, like
    /// `SO_PEERCRED`).
    pub uid: u32,
    /// The file's group (the spool's, when it is set-group-ID).
    pub gid: u32,
    /// The pid its maker claims.
    pub pid: Option<u32>,
    dev: u64,
    ino: u64,
}

/// `name` quoted and escaped for a message (names are anyone's bytes).
pub fn shown(name: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(name))
}

fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

fn kind(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        _ => "not a regular file",
    }
}

/// The spool directory of the socket at `socket`.
pub fn spool_path(socket: &Path) -> PathBuf {
    let mut s: OsString = socket.as_os_str().to_owned();
    s.push(SPOOL_SUFFIX);
    PathBuf::from(s)
}

impl Spool {
    /// Opens the spool directory `path`, creating it (mode `SPOOL_MODE`,
    /// whatever the umask) when missing; an existing one keeps its mode.
    /// `None`, said in one line, when it cannot be had.
    pub fn open(path: &Path) -> Option<Spool> {
        let path = path.to_path_buf();
        let shown_path = path.display();
        let created = match rustix::fs::mkdir(&path, Mode::from_raw_mode(SPOOL_MODE)) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => {
                warn!(
                    "cannot create the spool directory {shown_path}: {e}; running without a spool (the rings of programs that die while no sink holds them are not recovered)"
                );
                return None;
            }
        };
        let dir = match rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(d) => d,
            Err(e) => {
                let why = if e == Errno::NOTDIR || e == Errno::LOOP {
                    "not a directory".to_string()
                } else {
                    e.to_string()
                };
                warn!(
                    "spool directory {shown_path}: {why}; running without a spool (the rings of programs that die while no sink holds them are not recovered)"
                );
                return None;
            }
        };
        if created {
            // mkdir's mode passed through the umask: set it exactly.
            if let Err(e) = rustix::fs::fchmod(&dir, Mode::from_raw_mode(SPOOL_MODE)) {
                warn!("spool directory {shown_path}: cannot set its mode to {SPOOL_MODE:o}: {e}");
            }
        }
        let real = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd()))
            .unwrap_or_else(|_| path.clone());
        Some(Spool {
            dir,
            path,
            real,
            said: HashSet::new(),
            stuck: HashSet::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a complaint about `name` is to be said: once, until the
    /// name goes away.
    fn first_time(&mut self, name: &[u8]) -> bool {
        self.said.len() < SAID_MAX && self.said.insert(name.to_vec())
    }

    /// Lists the spool: removes what is finished or left half made, and
    /// returns (locked by the sink) up to `max` rings whose programs are
    /// gone, to be recovered and then given to [`Spool::done`]; `true`
    /// when more may be waiting.
    pub fn scan(&mut self, max: usize) -> (Vec<Found>, bool) {
        let mut found = Vec::new();
        let mut dir = match rustix::fs::Dir::read_from(&self.dir) {
            Ok(d) => d,
            Err(e) => {
                if self.first_time(b"") {
                    warn!("cannot list the spool {}: {e}", self.path.display());
                }
                return (found, false);
            }
        };
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut inodes: HashSet<(u64, u64)> = HashSet::new();
        let mut complete = true;
        for ent in dir.by_ref() {
            let Ok(ent) = ent else {
                complete = false;
                break;
            };
            let name = ent.file_name();
            let bytes = name.to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            if bytes.starts_with(b".") {
                self.half_made(name);
                continue;
            }
            if bytes.ends_with(SPOOL_EXEC_SUFFIX.as_bytes()) {
                self.exec_left(name);
                continue;
            }
            if !bytes.ends_with(SPOOL_RING_SUFFIX.as_bytes()) {
                continue;
            }
            if found.len() >= max {
                return (found, true);
            }
            seen.insert(bytes.to_vec());
            if let Some(f) = self.look(name, &mut inodes) {
                found.push(f);
            }
        }
        if complete {
            self.said.retain(|n| seen.contains(n));
            self.stuck.retain(|i| inodes.contains(i));
        }
        (found, false)
    }

    /// A ring its process renamed `<pid>.exec`, with nothing left in it,
    /// while it exec'd: removed silently once nobody locks it (the exec
    /// succeeded, or the process died), never read.
    fn exec_left(&mut self, name: &CStr) {
        let Ok(pre) = rustix::fs::statat(&self.dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
            return;
        };
        if file_type(&pre) != FileType::RegularFile || pre.st_nlink != 1 {
            return;
        }
        let Ok(fd) = self.open_ring(name) else {
            return;
        };
        if same_file(&fd, &pre)
            && rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_ok()
        {
            let _ = self.unlink(name, pre.st_dev, pre.st_ino);
        }
    }

    /// A file being made: removed silently once nobody locks it and it is
    /// older than [`HALF_MADE_AGE`] (its maker died making it).
    fn half_made(&mut self, name: &CStr) {
        let Ok(pre) = rustix::fs::statat(&self.dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
            return;
        };
        if file_type(&pre) != FileType::RegularFile || pre.st_nlink != 1 {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        // Young ones are never opened: a maker may be about to lock it.
        #[allow(clippy::unnecessary_cast)] // its width differs between targets
        let mtime = pre.st_mtime as i64;
        if now.saturating_sub(mtime) < HALF_MADE_AGE.as_secs() as i64 {
            return;
        }
        let Ok(fd) = self.open_ring(name) else {
            return;
        };
        if !same_file(&fd, &pre) {
            return;
        }
        if rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_ok() {
            let _ = self.unlink(name, pre.st_dev, pre.st_ino);
        }
    }

    /// Opens a ring read-write (to mark it delivered), or read-only when
    /// only its group's read bit lets the sink in (a ring is mode 0640:
    /// the sink then removes it without marking it).
    fn open_ring(&self, name: &CStr) -> rustix::io::Result<OwnedFd> {
        let flags = OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        match rustix::fs::openat(&self.dir, name, OFlags::RDWR | flags, Mode::empty()) {
            Err(Errno::ACCESS) => {
                rustix::fs::openat(&self.dir, name, OFlags::RDONLY | flags, Mode::empty())
            }
            r => r,
        }
    }

    /// Removes `name` if it still names the file `dev`/`ino`.
    fn unlink(&self, name: &CStr, dev: u64, ino: u64) -> rustix::io::Result<()> {
        let st = rustix::fs::statat(&self.dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        if st.st_dev != dev || st.st_ino != ino {
            return Err(Errno::STALE);
        }
        rustix::fs::unlinkat(&self.dir, name, AtFlags::empty())
    }

    /// One `*.ring` name: a ring to recover, or `None` (live, finished,
    /// refused, or not a file the sink touches).
    fn look(&mut self, name: &CStr, inodes: &mut HashSet<(u64, u64)>) -> Option<Found> {
        let bytes = name.to_bytes();
        let pre = match rustix::fs::statat(&self.dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return None,
            Err(e) => {
                if self.first_time(bytes) {
                    warn!("spooled ring {}: {e}; skipped", shown(bytes));
                }
                return None;
            }
        };
        let t = file_type(&pre);
        if t != FileType::RegularFile {
            if self.first_time(bytes) {
                warn!(
                    "spool {}: {} is {}, not a ring: skipped (never read or removed)",
                    self.path.display(),
                    shown(bytes),
                    kind(t)
                );
            }
            return None;
        }
        if pre.st_nlink != 1 {
            let links = pre.st_nlink;
            if self.first_time(bytes) {
                warn!(
                    "spool {}: {} has {links} links, a ring has one: skipped (never read or removed)",
                    self.path.display(),
                    shown(bytes)
                );
            }
            return None;
        }
        inodes.insert((pre.st_dev, pre.st_ino));
        let fd = match self.open_ring(name) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return None,
            Err(e) if e == Errno::ACCESS || e == Errno::PERM => {
                let uid = pre.st_uid;
                if self.first_time(bytes) {
                    warn!(
                        "spooled ring {} of uid {uid}: cannot open it ({e}): the sink must run as root, as the program's user or in the ring's group to read it; skipped",
                        shown(bytes)
                    );
                }
                return None;
            }
            Err(e) => {
                if self.first_time(bytes) {
                    warn!(
                        "spooled ring {}: cannot open it ({e}); skipped",
                        shown(bytes)
                    );
                }
                return None;
            }
        };
        // The name may have been replaced since the look above.
        if !same_file(&fd, &pre) {
            return None;
        }
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            // Its program (or a sink it handed the ring to) holds it.
            Err(Errno::WOULDBLOCK) => return None,
            Err(e) => {
                if self.first_time(bytes) {
                    warn!("spooled ring {}: flock: {e}; skipped", shown(bytes));
                }
                return None;
            }
        }
        // Locked by the sink: whoever made it is gone.
        let (dev, ino, uid) = (pre.st_dev, pre.st_ino, pre.st_uid);
        if self.stuck.contains(&(dev, ino)) {
            return None;
        }
        let mut state = [0u8; 4];
        if rustix::io::pread(&fd, &mut state, logtap_wire::ring::STATE_AT as u64) == Ok(4)
            && u32::from_ne_bytes(state) == STATE_DELIVERED
        {
            // Read to its end by a sink that could not remove it.
            let _ = self.unlink(name, dev, ino);
            return None;
        }
        // Its maker renames it into place holding the lock and writes the
        // control block next: one killed in between leaves an empty file
        // or one without a magic. Nothing was written to it: removed
        // silently.
        let mut magic = [0u8; 8];
        match rustix::io::pread(&fd, &mut magic, logtap_wire::ring::MAGIC_AT as u64) {
            Ok(0) => {
                let _ = self.unlink(name, dev, ino);
                return None;
            }
            Ok(8) if magic == [0; 8] => {
                let _ = self.unlink(name, dev, ino);
                return None;
            }
            _ => {}
        }
        let held = fd.try_clone().ok()?;
        let ring = match Ring::check(held) {
            Ok(r) => r,
            Err(why) => {
                let removed = match self.unlink(name, dev, ino) {
                    Ok(()) => "removed".to_string(),
                    Err(e) => format!("cannot remove it: {e}"),
                };
                warn!(
                    "spooled ring {} of uid {uid}, whose program is gone: not a usable ring ({why}); {removed}",
                    shown(bytes)
                );
                return None;
            }
        };
        let tail = ring.tail().unwrap_or(0);
        // What of the record at the tail went out already (a record sent
        // in pieces): not delivered again. A count that makes no sense
        // ends the walk there, as any other bad claim.
        let mut skip = ring.tail_skip().unwrap_or(0);
        let mut tail = tail;
        // A sink that read the ring itself delivered everything before
        // `READ_AT`; the program may have died before the answer let it
        // free that space. (A claim like the tail: one outside the span is
        // ignored, and one that is no record boundary ends the walk.)
        if let (Ok(read), Ok(head)) = (ring.read_at(), ring.head()) {
            if read > tail && read <= head {
                (tail, skip) = (read, 0);
            }
        }
        let pid = ring.claimed_pid();
        let platform = ring.platform();
        Some(Found {
            name: bytes.to_vec(),
            ended: Ended {
                ring,
                pos: RingPosition { pos: tail, skip },
                platform,
                token: 0,
            },
            uid,
            gid: pre.st_gid,
            pid,
            dev,
            ino,
        })
    }

    /// After a found ring was recovered: marks it delivered and removes it.
    pub fn done(&mut self, f: &Found) {
        f.ended.ring.mark_delivered();
        let marked = matches!(f.ended.ring.state(), Ok(STATE_DELIVERED));
        let Ok(name) = std::ffi::CString::new(f.name.clone()) else {
            return;
        };
        if self.unlink(&name, f.dev, f.ino).is_err() && !marked {
            // Neither removed nor marked: never delivered again while it
            // stays (the next scans skip it).
            if self.stuck.len() < SAID_MAX {
                self.stuck.insert((f.dev, f.ino));
            }
        }
    }

    /// Whether `ring` is a file of this spool (its name there, as
    /// `/proc/self/fd` tells it, still names that file): the scan reads it
    /// once nobody locks it.
    pub fn holds(&self, ring: &Ring) -> bool {
        if ring.sealed() {
            return false;
        }
        let Ok(st) = rustix::fs::fstat(ring.fd()) else {
            return false;
        };
        let Ok(link) = std::fs::read_link(format!("/proc/self/fd/{}", ring.fd().as_raw_fd()))
        else {
            return false;
        };
        let (Some(parent), Some(name)) = (link.parent(), link.file_name()) else {
            return false;
        };
        if parent != self.real || !is_ring_name(name) {
            return false;
        }
        rustix::fs::statat(&self.dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|now| now.st_dev == st.st_dev && now.st_ino == st.st_ino)
    }
}

/// A name of a ring in the spool: `*.ring`, or `*.exec` (a ring renamed
/// while its process exec'd), not starting with a dot.
fn is_ring_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    !b.starts_with(b".")
        && (b.ends_with(SPOOL_RING_SUFFIX.as_bytes()) || b.ends_with(SPOOL_EXEC_SUFFIX.as_bytes()))
}

/// `fd` is the file `pre` described, still a regular file with one link.
fn same_file(fd: &impl AsFd, pre: &Stat) -> bool {
    match rustix::fs::fstat(fd) {
        Ok(st) => {
            st.st_dev == pre.st_dev
                && st.st_ino == pre.st_ino
                && file_type(&st) == FileType::RegularFile
                && st.st_nlink == 1
        }
        Err(_) => false,
    }
}
