//! The file tree: `DIR/<platform>/<source>`, one line per record, rotated
//! by size.
//!
//! Names (an injective mapping: two different (platform, source) pairs
//! never get the same file, and no live file has a rotated file's name):
//! the platform is one directory; each `/`-separated part of the source is
//! a directory, the last one the file. Each part is escaped on its own:
//! `%`, `/`, control bytes and DEL become `%XX`; an empty part becomes `%`;
//! `.` and `..` become `%2E` and `%2E%2E`; a part ending in `.` followed by
//! digits (`app.1`) gets that dot as `%2E` (`app%2E1`), so the only names
//! ending in `.<digits>` are rotated files. A part longer than
//! [`NAME_LIMIT`] bytes once escaped is cut into directories of at most
//! that many bytes, each but the last ending in a bare `%` (which escaping
//! never produces), so no name exceeds `NAME_MAX` even with a rotation
//! suffix. Nothing can name a path outside DIR. Every component is created
//! and opened relative to the directory fd of the one before, starting
//! from DIR's fd (`mkdirat`, `openat` with `O_NOFOLLOW`, and `O_DIRECTORY`
//! for directories), so a symlink planted anywhere under DIR, as a
//! directory or as the log file, is refused rather than followed out of
//! DIR; rotation renames relative to the file's directory fd. Files get
//! mode 0640, directories 0750. The one conflict a mapping cannot remove
//! is structural: a source `a` (a file) beside a source `a/b` (which needs
//! `a` to be a directory); the later one's records are refused, counted
//! and reported.
//!
//! Rotation (LinuxKit logwrite's scheme): before a line would take a file
//! past `max_size` bytes, the file becomes `<name>.1`, `<name>.1` becomes
//! `<name>.2`, …, and `<name>.<max_files>` is deleted. A file is therefore
//! never larger than `max_size`, except one holding a single line longer
//! than that. Sizes count from the file's length when it is opened, so a
//! restarted sink goes on where the last one stopped.
//!
//! Buffering and errors: each open file has its own buffer with the end of
//! every record in it (not a `BufWriter`, which hides how much of a failed
//! write reached the file). When a write fails part way (a full disk), the
//! file is cut back to the end of the last whole record it received
//! (`ftruncate`), so it never holds half a line, and exactly the records
//! that did not reach it are counted as lost. At most [`MAX_OPEN`] files
//! are open; the least recently used one is written out and closed to
//! make room.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags, CWD};

use super::{Dest, Failure};
use crate::encode::{LineEncoder, Record};
use crate::outputs::Lost;

/// Files kept open at once; the least recently used is closed beyond.
const MAX_OPEN: usize = 64;

/// Longest name the tree creates (before a rotation suffix `.N`): well
/// under Linux's `NAME_MAX` (255) with room for `.<max_files>`.
pub const NAME_LIMIT: usize = 200;

/// Least time between two errors said on stderr.
const QUIET: Duration = Duration::from_secs(10);

/// A file's buffer is written out when it would grow past this.
const BUF_CAP: usize = 64 * 1024;

struct Open {
    path: PathBuf,
    /// The file's directory, for rotation's renames.
    parent: OwnedFd,
    /// The file's name in `parent`.
    name: OsString,
    file: File,
    /// The file's size, buffered bytes included.
    size: u64,
    /// Lines not yet written.
    buf: Vec<u8>,
    /// End of each record in `buf`, and what it counts for when lost.
    ends: Vec<(usize, Lost)>,
    /// Last use, for closing the least recently used file.
    used: u64,
}

pub struct Files {
    dir: PathBuf,
    /// DIR itself: every path is walked from here.
    dir_fd: OwnedFd,
    enc: LineEncoder,
    max_size: u64,
    max_files: usize,
    /// By `platform NUL source` (neither holds a NUL).
    open: HashMap<Vec<u8>, Open>,
    /// The key of the record being written (reused: no allocation per
    /// record).
    key: Vec<u8>,
    clock: u64,
    line: Vec<u8>,
    lost: Lost,
    /// When an error was last said on stderr: at most one every
    /// [`QUIET`], so that records refused one by one (a source `a/b`
    /// beside a source `a`, interleaved with good ones) cannot flood it.
    said_at: Option<Instant>,
}

/// Escapes one name part into tokens (1 byte, or `%XX`).
fn escape(part: &[u8]) -> Vec<Vec<u8>> {
    match part {
        b"" => return vec![b"%".to_vec()],
        b"." => return vec![b"%2E".to_vec()],
        b".." => return vec![b"%2E".to_vec(), b"%2E".to_vec()],
        _ => {}
    }
    // `<anything>.<digits>`: that dot is escaped.
    let digits = part.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    let dot = (digits > 0 && digits < part.len() && part[part.len() - digits - 1] == b'.')
        .then(|| part.len() - digits - 1);
    part.iter()
        .enumerate()
        .map(|(i, &b)| {
            if b == b'%' || b == b'/' || b < 0x20 || b == 0x7f || Some(i) == dot {
                format!("%{b:02X}").into_bytes()
            } else {
                vec![b]
            }
        })
        .collect()
}

/// One name part as path components: one, or several when it is longer
/// than [`NAME_LIMIT`] (directories ending in a bare `%`, then the last
/// piece, as long as it may be).
fn components(out: &mut Vec<OsString>, part: &[u8]) {
    let tokens = escape(part);
    let total: usize = tokens.iter().map(Vec::len).sum();
    if total <= NAME_LIMIT {
        out.push(OsStr::from_bytes(&tokens.concat()).to_owned());
        return;
    }
    // The last piece from the end, as long as possible (never `.`/`..`).
    let mut split = tokens.len();
    let mut len = 0;
    while split > 0 && len + tokens[split - 1].len() <= NAME_LIMIT {
        split -= 1;
        len += tokens[split].len();
    }
    let mut cur = Vec::new();
    for t in &tokens[..split] {
        if cur.len() + t.len() > NAME_LIMIT - 1 {
            cur.push(b'%');
            out.push(OsStr::from_bytes(&cur).to_owned());
            cur.clear();
        }
        cur.extend_from_slice(t);
    }
    if !cur.is_empty() {
        cur.push(b'%');
        out.push(OsStr::from_bytes(&cur).to_owned());
    }
    out.push(OsStr::from_bytes(&tokens[split..].concat()).to_owned());
}

/// The components of `<platform>/<source>` under DIR.
pub fn rel_path(platform: &[u8], source: &[u8]) -> Vec<OsString> {
    let mut out = Vec::new();
    components(&mut out, platform);
    for part in source.split(|&b| b == b'/') {
        components(&mut out, part);
    }
    out
}

/// `DIR/<platform>/<source parts…>`.
pub fn path_for(dir: &Path, platform: &[u8], source: &[u8]) -> PathBuf {
    let mut p = dir.to_path_buf();
    p.extend(rel_path(platform, source));
    p
}

fn numbered(name: &OsStr, n: usize) -> OsString {
    let mut s = name.to_owned();
    s.push(format!(".{n}"));
    s
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Opens (creating as needed) `rel` under `dir`, one component at a time,
/// never following a symlink. Returns the file's directory, its name, and
/// the file opened for appending.
fn open_file(dir: &OwnedFd, rel: &[OsString]) -> io::Result<(OwnedFd, OsString, File)> {
    let Some((last, dirs)) = rel.split_last() else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    let mut cur = rustix::fs::openat(dir, ".", dir_flags(), Mode::empty())?;
    for d in dirs {
        match rustix::fs::mkdirat(&cur, d, Mode::from_raw_mode(0o750)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        cur = rustix::fs::openat(&cur, d, dir_flags(), Mode::empty())?;
    }
    let f = open_in(&cur, last)?;
    Ok((cur, last.clone(), f))
}

fn open_in(parent: &OwnedFd, name: &OsStr) -> io::Result<File> {
    let fd = rustix::fs::openat(
        parent,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::APPEND | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o640),
    )?;
    Ok(File::from(fd))
}

impl Open {
    /// Writes the buffer out. On an error, the file is cut back to the end
    /// of the last whole record that reached it, and what did not reach it
    /// is returned with the error.
    fn flush(&mut self) -> Result<(), (io::Error, Lost)> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let before = self.size - self.buf.len() as u64;
        let mut off = 0;
        let mut err = None;
        while off < self.buf.len() {
            match self.file.write(&self.buf[off..]) {
                Ok(0) => {
                    err = Some(io::Error::from(io::ErrorKind::WriteZero));
                    break;
                }
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        let res = match err {
            None => Ok(()),
            Some(e) => {
                let whole = self.ends.partition_point(|(end, _)| *end <= off);
                let keep = if whole == 0 {
                    0
                } else {
                    self.ends[whole - 1].0
                };
                let mut lost = Lost::default();
                for (_, w) in &self.ends[whole..] {
                    lost.records += w.records;
                    lost.bytes += w.bytes;
                }
                let mut e = io::Error::new(e.kind(), format!("{}: {e}", self.path.display()));
                if off > keep {
                    // Half a line reached the file: cut it off.
                    if let Err(t) = self.file.set_len(before + keep as u64) {
                        e = io::Error::new(
                            t.kind(),
                            format!("{e}; cannot cut off the partial line: {t}"),
                        );
                    }
                }
                self.size = before + keep as u64;
                Err((e, lost))
            }
        };
        self.buf.clear();
        self.ends.clear();
        if self.buf.capacity() > BUF_CAP * 2 {
            self.buf = Vec::new();
        }
        res
    }
}

impl Files {
    /// Creates DIR if it is missing (a failure is reported at start).
    pub fn new(dir: &Path, enc: LineEncoder, max_size: u64, max_files: usize) -> io::Result<Files> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
            })?;
        let dir_fd = rustix::fs::openat(
            CWD,
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot open {}: {e}", dir.display()),
            )
        })?;
        Ok(Files {
            dir: dir.to_path_buf(),
            dir_fd,
            enc,
            max_size: max_size.max(1),
            max_files,
            open: HashMap::new(),
            key: Vec::new(),
            clock: 0,
            line: Vec::new(),
            lost: Lost::default(),
            said_at: None,
        })
    }

    /// Writes out `o`'s buffer, counting what is lost.
    fn flush_one(lost: &mut Lost, o: &mut Open) -> io::Result<()> {
        o.flush().map_err(|(e, l)| {
            lost.records += l.records;
            lost.bytes += l.bytes;
            e
        })
    }

    fn rotate(&self, o: &mut Open) -> io::Result<()> {
        let none = rustix::fs::AtFlags::empty();
        if self.max_files == 0 {
            rustix::fs::unlinkat(&o.parent, &o.name, none)?;
        } else {
            let _ = rustix::fs::unlinkat(&o.parent, numbered(&o.name, self.max_files), none);
            for n in (1..self.max_files).rev() {
                match rustix::fs::renameat(
                    &o.parent,
                    numbered(&o.name, n),
                    &o.parent,
                    numbered(&o.name, n + 1),
                ) {
                    Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            rustix::fs::renameat(&o.parent, &o.name, &o.parent, numbered(&o.name, 1))?;
        }
        o.file = open_in(&o.parent, &o.name)?;
        o.size = 0;
        Ok(())
    }

    /// The open file for `key`, opening it (and closing the least recently
    /// used one if [`MAX_OPEN`] are open).
    fn get(&mut self, key: &[u8]) -> io::Result<&mut Open> {
        self.clock += 1;
        if !self.open.contains_key(key) {
            if self.open.len() >= MAX_OPEN {
                let oldest = self
                    .open
                    .iter()
                    .min_by_key(|(_, o)| o.used)
                    .map(|(k, _)| k.clone());
                if let Some(mut o) = oldest.and_then(|k| self.open.remove(&k)) {
                    // An error here is counted; this record is not at fault.
                    let _ = Self::flush_one(&mut self.lost, &mut o);
                }
            }
            let nul = key.iter().position(|&b| b == 0).unwrap_or(key.len());
            let rel = rel_path(&key[..nul], key.get(nul + 1..).unwrap_or_default());
            let path = self.dir.join(rel.iter().collect::<PathBuf>());
            let (parent, name, file) = open_file(&self.dir_fd, &rel)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            let size = file.metadata()?.len();
            self.open.insert(
                key.to_vec(),
                Open {
                    path,
                    parent,
                    name,
                    file,
                    size,
                    buf: Vec::new(),
                    ends: Vec::new(),
                    used: 0,
                },
            );
        }
        let o = self.open.get_mut(key).ok_or(io::ErrorKind::NotFound)?;
        o.used = self.clock;
        Ok(o)
    }

    fn write_line(&mut self, key: &[u8], w: Lost) -> io::Result<()> {
        let len = self.line.len();
        let max_size = self.max_size;
        let mut lost = std::mem::take(&mut self.lost);
        let res = (|| {
            let o = self.get(key)?;
            let rotate = o.size > 0 && o.size + len as u64 > max_size;
            if rotate || (!o.buf.is_empty() && o.buf.len() + len > BUF_CAP) {
                Self::flush_one(&mut lost, o)?;
            }
            if rotate {
                // `get` again: the borrow of `o` ends above.
                let mut o = self.open.remove(key).ok_or(io::ErrorKind::NotFound)?;
                let r = self.rotate(&mut o).map_err(|e| {
                    io::Error::new(e.kind(), format!("rotating {}: {e}", o.path.display()))
                });
                if r.is_ok() {
                    self.open.insert(key.to_vec(), o);
                }
                r?;
            }
            let o = self.open.get_mut(key).ok_or(io::ErrorKind::NotFound)?;
            o.buf.extend_from_slice(&self.line);
            o.ends.push((o.buf.len(), w));
            o.size += len as u64;
            Ok(())
        })();
        self.lost.add(lost);
        res
    }
}

impl Dest for Files {
    fn write(&mut self, r: &Record<'_>, w: Lost) -> Result<(), Failure> {
        self.line.clear();
        self.enc.encode(&mut self.line, r);
        let mut key = std::mem::take(&mut self.key);
        key.clear();
        key.extend_from_slice(r.platform);
        key.push(0);
        key.extend_from_slice(r.source);
        let res = self.write_line(&key, w);
        self.key = key;
        match res {
            Ok(()) => Ok(()),
            Err(e) => {
                let say = self.say();
                Err(Failure::Drop(say.then(|| e.to_string())))
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut first = Ok(());
        for o in self.open.values_mut() {
            if let Err(e) = Self::flush_one(&mut self.lost, o) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        match first {
            // What was lost is counted either way.
            Err(e) if self.say() => Err(e),
            _ => Ok(()),
        }
    }

    fn take_lost(&mut self) -> Lost {
        std::mem::take(&mut self.lost)
    }
}

impl Files {
    /// True when an error may be said now (none said in the last
    /// [`QUIET`]).
    fn say(&mut self) -> bool {
        let now = Instant::now();
        if self.said_at.is_some_and(|t| now.duration_since(t) < QUIET) {
            return false;
        }
        self.said_at = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(platform: &[u8], source: &[u8]) -> PathBuf {
        path_for(Path::new("/logs"), platform, source)
    }

    #[test]
    fn nothing_escapes_dir() {
        assert_eq!(p(b"app", b"stdout"), Path::new("/logs/app/stdout"));
        assert_eq!(
            p(b"app", b"var/log/app.log"),
            Path::new("/logs/app/var/log/app.log")
        );
        assert_eq!(
            p(b"..", b"../../etc/passwd"),
            Path::new("/logs/%2E%2E/%2E%2E/%2E%2E/etc/passwd")
        );
        assert_eq!(
            p(b"a/b", b"//x//./y"),
            Path::new("/logs/a%2Fb/%/%/x/%/%2E/y")
        );
        assert_eq!(p(b"", b""), Path::new("/logs/%/%"));
        assert_eq!(p(b".", b"/"), Path::new("/logs/%2E/%/%"));
        assert_eq!(p(b"a", b"%\n\x7f"), Path::new("/logs/a/%25%0A%7F"));
    }

    #[test]
    fn no_live_name_is_a_rotated_name() {
        assert_eq!(p(b"app", b"app.1"), Path::new("/logs/app/app%2E1"));
        assert_eq!(p(b"app", b"x.10/y.2"), Path::new("/logs/app/x%2E10/y%2E2"));
        assert_eq!(p(b"app", b".5"), Path::new("/logs/app/%2E5"));
        // Not rotation-like: kept as they are.
        for s in ["app.log", "app.1x", "v1.2.tar", "2024", "a."] {
            assert_eq!(p(b"app", s.as_bytes()), Path::new("/logs/app").join(s));
        }
    }

    #[test]
    fn long_names_become_directories_within_name_max() {
        let long = vec![b'a'; 1000];
        let rel = rel_path(b"app", &long);
        assert!(rel.len() > 2);
        for c in &rel {
            assert!(c.len() <= NAME_LIMIT, "{}", c.len());
        }
        for c in &rel[1..rel.len() - 1] {
            assert!(c.as_bytes().ends_with(b"%"));
        }
        let joined: Vec<u8> = rel[1..]
            .iter()
            .flat_map(|c| {
                c.as_bytes()
                    .strip_suffix(b"%")
                    .unwrap_or(c.as_bytes())
                    .to_vec()
            })
            .collect();
        assert_eq!(joined, long);
        // Escapes are never cut across directories.
        let pct = vec![b'%'; 300];
        for c in &rel_path(b"app", &pct)[1..] {
            let c = c
                .as_bytes()
                .strip_suffix(b"%")
                .filter(|c| c.len() % 3 == 0)
                .unwrap_or(c.as_bytes());
            assert_eq!(c.len() % 3, 0, "{}", String::from_utf8_lossy(c));
        }
    }

    /// Distinct (platform, source) pairs give distinct paths, and no path
    /// is another's rotated name.
    #[test]
    fn the_mapping_is_injective() {
        let names: Vec<&[u8]> = vec![
            b"", b".", b"..", b"_", b"%", b"%25", b"a", b"a/", b"/a", b"a//b", b"a/b", b"a.1",
            b"a%2E1", b"a.01", b"a/.", b"a/..", b"a%2F", b"a/b.2", b"a_b", b"a\n", b"a%0A",
        ];
        let mut long = vec![b'x'; 199];
        long.push(b'%');
        let long2 = [vec![b'x'; 199], b"%25".to_vec()].concat();
        let mut all: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for pl in [&b"p"[..], b"p/q", b"p%2Fq", b""] {
            for s in &names {
                all.push((pl.to_vec(), s.to_vec()));
            }
            all.push((pl.to_vec(), long.clone()));
            all.push((pl.to_vec(), long2.clone()));
        }
        let mut seen = std::collections::HashMap::new();
        for (pl, s) in &all {
            let path = p(pl, s);
            if let Some(prev) = seen.insert(path.clone(), (pl.clone(), s.clone())) {
                panic!("{prev:?} and {:?} both map to {}", (pl, s), path.display());
            }
        }
        for path in seen.keys() {
            for n in 1..=3 {
                let rotated = PathBuf::from(format!("{}.{n}", path.display()));
                assert!(!seen.contains_key(&rotated), "{}", rotated.display());
            }
        }
    }
}
