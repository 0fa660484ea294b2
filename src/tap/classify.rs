//! Which log file source a freshly opened (or first seen) fd is, if any.
//!
//! Two kinds of `LLT_TAP_FILE` entries (see `patterns`):
//! - exact paths, matched by identity: the fd's device and inode against
//!   the file the path names now (so relative paths, `openat`, symlinks,
//!   hard links and files re-created by rotation all match, as they always
//!   did); each is its own source, named by the configured path;
//! - patterns, matched against the name the program opened the file
//!   under, made absolute (against the current directory or the `openat`
//!   directory fd) and normalised; each distinct name is its own source.
//!
//! Cost, paid at open time only (never on a write): for an open whose
//! last component no pattern's last component accepts, one short byte
//! comparison per pattern and no system call; a name that passes costs a
//! `getcwd` (relative names) and the full match; a match costs the
//! privilege checks below and an `fstat`. Exact entries cost an `fstat`
//! of the fd and a `stat` per entry, as before.
//!
//! Privileges (both kinds): a symlink is followed only when root or the
//! program's own user made it, and no match is made in a directory other
//! users can write (unless sticky, and then only for a file of root's or
//! the program's), so a user who can write a log directory cannot have
//! another user's writes tapped (see `is_exact_file` and `pattern_allowed`).
//!
//! Hook-side invariants: no allocation, no locks; errno is saved by the
//! caller. An open that passes the quick test uses two PATH_MAX buffers of
//! stack (the name, and the directory it is relative to); others none.

use super::patterns::{self, PATH_MAX};
use super::sources::{self, NONE};
use crate::config;
use crate::safe_open;
use crate::sys::{self, Ident};
use core::sync::atomic::{AtomicBool, Ordering::*};
use libc::c_int;

/// A refused match was reported (once per process, in debug mode).
static REFUSAL_SAID: AtomicBool = AtomicBool::new(false);

fn refuse(why: &[u8], at: &[u8]) {
    if !REFUSAL_SAID.swap(true, Relaxed) {
        crate::debug(&[b"log file not tapped: ", at, b": ", why]);
    }
}

/// The file source of `fd`, or NONE. `name`: what it was opened under,
/// relative to the directory fd (None: not known, as for an inherited fd
/// or `fdopen`; the kernel's name of the fd is used). `id`: the fd's
/// identity, if the caller already has it.
pub fn file_source(fd: c_int, name: Option<(c_int, &[u8])>, id: Option<&Ident>) -> u8 {
    let c = config::get();
    let list = &c.tap_files;
    if list.is_empty() {
        return NONE;
    }
    if list.has_patterns() {
        let s = pattern_source(fd, name);
        if s != NONE {
            return s;
        }
    }
    let mut exact = list.exact_c().enumerate().peekable();
    if exact.peek().is_none() {
        return NONE;
    }
    let own;
    let id = match id {
        Some(i) => i,
        None => match sys::fstat(fd) {
            Some(i) => {
                own = i;
                &own
            }
            None => return NONE,
        },
    };
    for (k, path) in exact {
        if is_exact_file(path, id) {
            let s = sources::exact_source(k);
            sources::note_file(s, id.dev, id.ino);
            return s;
        }
    }
    NONE
}

fn pattern_source(fd: c_int, name: Option<(c_int, &[u8])>) -> u8 {
    let list = &config::get().tap_files;
    // The quick test comes before anything else, even before the name
    // buffer is cleared: it is all that most opens pay.
    if let Some((_, p)) = name {
        if p.is_empty() || !list.may_match_name(patterns::last_component(p)) {
            return NONE;
        }
    }
    // One byte more than a name: its NUL, for the system calls below.
    let mut abs = [0u8; PATH_MAX + 1];
    let len = match name {
        Some((dirfd, p)) => match absolute(dirfd, p, &mut abs[..PATH_MAX]) {
            Some(n) => n,
            None => return NONE,
        },
        None => match fd_name(fd, &mut abs[..PATH_MAX]) {
            Some(n) if list.may_match_name(patterns::last_component(&abs[..n])) => n,
            _ => return NONE,
        },
    };
    abs[len] = 0;
    let cabs = &abs[..len + 1];
    let abs = &abs[..len];
    if list.match_path(abs).is_none() {
        return NONE;
    }
    let Some(id) = sys::fstat(fd) else {
        return NONE;
    };
    if !pattern_allowed(cabs, &id) {
        return NONE;
    }
    match sources::file_source(abs) {
        Some(s) => {
            sources::note_file(s, id.dev, id.ino);
            s
        }
        None => NONE,
    }
}

/// `p` (relative to `dirfd`) made absolute and normalised into `out`.
fn absolute(dirfd: c_int, p: &[u8], out: &mut [u8]) -> Option<usize> {
    if p.first() == Some(&b'/') {
        return patterns::normalize(b"/", p, out);
    }
    let mut base = [0u8; PATH_MAX];
    let n = if dirfd == libc::AT_FDCWD {
        // SAFETY: a valid buffer of its length; getcwd does not allocate
        // when given one.
        let r = unsafe { libc::getcwd(base.as_mut_ptr() as *mut libc::c_char, base.len()) };
        if r.is_null() {
            return None;
        }
        base.iter().position(|&c| c == 0)?
    } else {
        fd_name(dirfd, &mut base)?
    };
    if base.first() != Some(&b'/') {
        // "(unreachable)/…": a directory outside our root.
        return None;
    }
    patterns::normalize(&base[..n], p, out)
}

/// The kernel's name of an open fd (`/proc/self/fd/N`), absolute.
fn fd_name(fd: c_int, out: &mut [u8]) -> Option<usize> {
    let mut link = [0u8; 32];
    let mut d = [0u8; 20];
    let digits = sys::fmt_u64(fd as u64, &mut d);
    let pre = b"/proc/self/fd/";
    link[..pre.len()].copy_from_slice(pre);
    link[pre.len()..pre.len() + digits.len()].copy_from_slice(digits);
    // SAFETY: NUL-terminated link name (the rest of `link` is zero) and a
    // valid output buffer; readlink is not hooked and does not allocate.
    let n = unsafe {
        libc::readlink(
            link.as_ptr() as *const libc::c_char,
            out.as_mut_ptr() as *mut libc::c_char,
            out.len(),
        )
    };
    if n <= 0 || n as usize >= out.len() || out[0] != b'/' {
        return None;
    }
    let n = n as usize;
    // A file already unlinked: the kernel appends " (deleted)".
    if out[..n].ends_with(b" (deleted)") {
        return None;
    }
    Some(n)
}

/// Whether a pattern match on `abs` may be tapped (see the module
/// comment): the name itself, if a symlink, was made by root or the
/// program's user, and no directory on the way lets other users plant it.
/// `cpath`: the name with its NUL.
fn pattern_allowed(cpath: &[u8], id: &Ident) -> bool {
    let abs = &cpath[..cpath.len() - 1];
    let Ok(l) = safe_open::stat_path(cpath, false) else {
        return false;
    };
    if l.is_link() && !l.owner_trusted() {
        refuse(
            b"a symlink owned by another user (neither root nor the program's); not followed",
            abs,
        );
        return false;
    }
    // The name must still lead to the file the fd is (it may have been
    // replaced since the open). Ownership is judged on the name itself,
    // as for exact entries.
    if !matches!(safe_open::stat_path(cpath, true), Ok(t) if t.dev == id.dev && t.ino == id.ino) {
        return false;
    }
    let owner_trusted = l.owner_trusted();
    match safe_open::trusted_dirs(abs) {
        Ok(shared_sticky) => {
            if shared_sticky && !owner_trusted {
                refuse(
                    b"owned by another user inside a directory others can write",
                    abs,
                );
                return false;
            }
            true
        }
        Err(r) => {
            refuse(r.why, &abs[..r.at.min(abs.len())]);
            false
        }
    }
}

/// Whether the open file `id` is the file the exact entry `cpath` (with
/// its NUL) names, with the same privilege rules as pattern matches.
fn is_exact_file(cpath: &[u8], id: &Ident) -> bool {
    let path = &cpath[..cpath.len() - 1];
    let Ok(l) = safe_open::stat_path(cpath, false) else {
        return false;
    };
    let (dev, ino, owner_trusted) = if l.is_link() {
        if !l.owner_trusted() {
            // Cheap pre-check: say so only if the link leads to this file.
            if sys::stat(cpath).is_some_and(|t| t.same_file(id)) {
                refuse(
                    b"a symlink owned by another user (neither root nor the program's); not followed",
                    path,
                );
            }
            return false;
        }
        match safe_open::stat_path(cpath, true) {
            Ok(t) => (t.dev, t.ino, l.owner_trusted()),
            Err(_) => return false,
        }
    } else {
        (l.dev, l.ino, l.owner_trusted())
    };
    if id.dev != dev || id.ino != ino {
        return false;
    }
    match safe_open::trusted_dirs(path) {
        Ok(shared_sticky) => {
            if shared_sticky && !owner_trusted {
                refuse(
                    b"owned by another user inside a directory others can write",
                    path,
                );
                return false;
            }
        }
        Err(r) => {
            refuse(r.why, &path[..r.at.min(path.len())]);
            return false;
        }
    }
    true
}
