//! The file tree: `DIR/<platform>/<source>`, one line per record, rotated
//! by size.
//!
//! Names: the platform is one directory (a `/` in it becomes `_`); each
//! `/`-separated part of the source is a directory, the last one the file.
//! Empty parts are skipped, and `.`, `..` and empty names become `_`, so
//! no record can name a path outside DIR. Every component is created and
//! opened relative to the directory fd of the one before, starting from
//! DIR's fd (`mkdirat`, `openat` with `O_NOFOLLOW`, and `O_DIRECTORY` for
//! directories), so a symlink planted anywhere under DIR, as a directory or
//! as the log file, is refused rather than followed out of DIR; rotation
//! renames relative to the file's directory fd. Files get mode 0640,
//! directories 0750.
//!
//! Rotation (LinuxKit logwrite's scheme): before a line would take a file
//! past `max_size` bytes, the file becomes `<name>.1`, `<name>.1` becomes
//! `<name>.2`, …, and `<name>.<max_files>` is deleted. A file is therefore
//! never larger than `max_size`, except one holding a single line longer
//! than that. Sizes count from the file's length when it is opened, so a
//! restarted sink goes on where the last one stopped.
//!
//! Errors (a full disk, a name that is a directory) lose that record only:
//! it is counted and reported, the file is closed and opened afresh for
//! the next record.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, CWD};

use super::{Dest, Failure};
use crate::encode::{LineEncoder, Record};
use crate::outputs::Lost;

/// Files kept open at once; more are closed and reopened when needed.
const MAX_OPEN: usize = 64;

struct Open {
    path: PathBuf,
    /// The file's directory, for rotation's renames.
    parent: OwnedFd,
    /// The file's name in `parent`.
    name: OsString,
    file: BufWriter<File>,
    size: u64,
    /// Records buffered since the last flush.
    held: Lost,
}

pub struct Files {
    dir: PathBuf,
    /// DIR itself: every path is walked from here.
    dir_fd: OwnedFd,
    enc: LineEncoder,
    max_size: u64,
    max_files: usize,
    open: HashMap<(Vec<u8>, Vec<u8>), Open>,
    line: Vec<u8>,
    lost: Lost,
    /// An error was reported and nothing was written since.
    failing: bool,
}

/// One path component from untrusted bytes.
fn component(out: &mut PathBuf, part: &[u8]) {
    let part: Vec<u8> = part
        .iter()
        .map(|&b| if b == b'/' { b'_' } else { b })
        .collect();
    match &part[..] {
        b"" | b"." | b".." => out.push("_"),
        p => out.push(OsStr::from_bytes(p)),
    }
}

/// `DIR/<platform>/<source parts…>`.
pub fn path_for(dir: &Path, platform: &[u8], source: &[u8]) -> PathBuf {
    let mut p = dir.to_path_buf();
    component(&mut p, platform);
    let mut any = false;
    for part in source.split(|&b| b == b'/').filter(|s| !s.is_empty()) {
        component(&mut p, part);
        any = true;
    }
    if !any {
        p.push("_");
    }
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
fn open_file(dir: &OwnedFd, rel: &Path) -> io::Result<(OwnedFd, OsString, File)> {
    let parts: Vec<&OsStr> = rel.iter().collect();
    let Some((last, dirs)) = parts.split_last() else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    let mut cur = rustix::fs::openat(dir, ".", dir_flags(), Mode::empty())?;
    for d in dirs {
        match rustix::fs::mkdirat(&cur, *d, Mode::from_raw_mode(0o750)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        cur = rustix::fs::openat(&cur, *d, dir_flags(), Mode::empty())?;
    }
    let f = open_in(&cur, last)?;
    Ok((cur, (*last).to_owned(), f))
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
            line: Vec::new(),
            lost: Lost::default(),
            failing: false,
        })
    }

    fn rotate(&self, o: &mut Open) -> io::Result<()> {
        o.file.flush()?;
        o.held = Lost::default();
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
        o.file = BufWriter::with_capacity(64 * 1024, open_in(&o.parent, &o.name)?);
        o.size = 0;
        Ok(())
    }

    fn write_line(&mut self, key: (Vec<u8>, Vec<u8>), n: u64) -> io::Result<()> {
        if !self.open.contains_key(&key) {
            if self.open.len() >= MAX_OPEN {
                let _ = self.flush();
                self.open.clear();
            }
            let path = path_for(&self.dir, &key.0, &key.1);
            let rel = path.strip_prefix(&self.dir).unwrap_or(&path);
            let (parent, name, file) = open_file(&self.dir_fd, rel)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            let size = file.metadata()?.len();
            self.open.insert(
                key.clone(),
                Open {
                    path,
                    parent,
                    name,
                    file: BufWriter::with_capacity(64 * 1024, file),
                    size,
                    held: Lost::default(),
                },
            );
        }
        let Some(mut o) = self.open.remove(&key) else {
            return Ok(());
        };
        let len = self.line.len() as u64;
        let res = (|| {
            if o.size > 0 && o.size + len > self.max_size {
                self.rotate(&mut o).map_err(|e| {
                    io::Error::new(e.kind(), format!("rotating {}: {e}", o.path.display()))
                })?;
            }
            o.file
                .write_all(&self.line)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", o.path.display())))
        })();
        match res {
            Ok(()) => {
                o.size += len;
                o.held.records += 1;
                o.held.bytes += n;
                self.open.insert(key, o);
                Ok(())
            }
            Err(e) => {
                // The file is dropped (closed); what it had buffered is
                // lost too if that last write fails.
                let held = o.held;
                if o.file.flush().is_err() {
                    self.lost.records += held.records;
                    self.lost.bytes += held.bytes;
                }
                Err(e)
            }
        }
    }
}

impl Dest for Files {
    fn write(&mut self, r: &Record<'_>) -> Result<(), Failure> {
        self.line.clear();
        self.enc.encode(&mut self.line, r);
        let key = (r.platform.to_vec(), r.source.to_vec());
        match self.write_line(key, r.text.len() as u64) {
            Ok(()) => {
                self.failing = false;
                Ok(())
            }
            Err(e) => {
                let first = !self.failing;
                self.failing = true;
                Err(Failure::Drop(first.then(|| e.to_string())))
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut first = Ok(());
        for o in self.open.values_mut() {
            let held = std::mem::take(&mut o.held);
            if let Err(e) = o.file.flush() {
                self.lost.records += held.records;
                self.lost.bytes += held.bytes;
                if first.is_ok() {
                    first = Err(io::Error::new(
                        e.kind(),
                        format!("{}: {e}", o.path.display()),
                    ));
                }
            }
        }
        if first.is_err() {
            // Start afresh: a BufWriter whose write failed keeps its data.
            self.open.clear();
        }
        first
    }

    fn take_lost(&mut self) -> Lost {
        std::mem::take(&mut self.lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_escapes_dir() {
        let d = Path::new("/logs");
        assert_eq!(
            path_for(d, b"app", b"stdout"),
            Path::new("/logs/app/stdout")
        );
        assert_eq!(
            path_for(d, b"app", b"var/log/app.log"),
            Path::new("/logs/app/var/log/app.log")
        );
        assert_eq!(
            path_for(d, b"..", b"../../etc/passwd"),
            Path::new("/logs/_/_/_/etc/passwd")
        );
        assert_eq!(
            path_for(d, b"a/b", b"//x//./y"),
            Path::new("/logs/a_b/x/_/y")
        );
        assert_eq!(path_for(d, b"", b""), Path::new("/logs/_/_"));
        assert_eq!(path_for(d, b".", b"/"), Path::new("/logs/_/_"));
    }
}
