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
//! `getcwd` (relative names) and the full match; a match costs an `fstat`,
//! a `stat` and the privilege walk below. Exact entries cost an `fstat`
//! of the fd and a `stat` per entry, as before.
//!
//! Privileges (both kinds): a symlink on the way is followed only when
//! root or the program's own user made it, and no match is made through a
//! directory other users can write (unless sticky, and then only for a
//! file of root's or the program's), so a user who can write a log
//! directory cannot have another user's writes tapped (see `allowed`).
//!
//! Rotation racing the open: when the name no longer leads to the fd's
//! file by the time it is checked (renamed or re-created just after the
//! program opened it), the match still holds if the file moved within the
//! same trusted directory (`renamed_in_place`), so its lines are neither
//! lost to the target nor, suppressed, written to the renamed file.
//!
//! Hook-side invariants: no allocation, no locks; errno is saved by the
//! caller. An open that passes the quick test uses two PATH_MAX buffers of
//! stack (the name, and the directory it is relative to), plus the walk's
//! one and, in the rename race only, one more; others none.

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
    // The race of `renamed_in_place`: the program opened an exact entry's
    // very name, which no longer leads to the file.
    if let Some((dirfd, p)) = name {
        let last = patterns::last_component(p);
        for (k, path) in list.exact_c().enumerate() {
            let path = &path[..path.len() - 1];
            if last.is_empty() || patterns::last_component(path) != last {
                continue;
            }
            let mut abs = [0u8; PATH_MAX];
            if absolute(dirfd, p, &mut abs).is_some_and(|n| &abs[..n] == path)
                && renamed_in_place(fd, path, id)
            {
                let s = sources::exact_source(k);
                sources::note_file(s, id.dev, id.ino);
                return s;
            }
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
    if !pattern_allowed(cabs, &id) && !renamed_in_place(fd, abs, &id) {
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

/// Whether a pattern match may be tapped: the name the program opened
/// (`cpath`, with its NUL) still leads to the fd's file under the rules of
/// `safe_open::resolve` (see `allowed`).
fn pattern_allowed(cpath: &[u8], id: &Ident) -> bool {
    allowed(cpath, id)
}

/// The name the program opened no longer leads to its file, because the
/// file was renamed (or the name re-created) between the program's open and
/// this check: a log rotated by rename while the program opens it, which a
/// program that reopens its log per line (redis) meets often. Its lines
/// must still be tapped, and, suppressed, must not reach the renamed file.
///
/// Allowed when the directory the name lies in passes the walk (every
/// directory on the way trusted) and is not writable by others at all
/// (sticky or not: there, only root or the program can have made or
/// renamed its entries), and the fd's file is still an entry of that same
/// directory under its new name (the kernel's name of the fd). The file
/// was then opened in a trusted directory and moved only within it.
fn renamed_in_place(fd: c_int, abs: &[u8], id: &Ident) -> bool {
    // By name (no fd: this runs inside the program's open).
    let mut buf = [0u8; PATH_MAX];
    let Ok(mut w) = safe_open::walk(abs, false, safe_open::Via::Names, &mut buf) else {
        return false;
    };
    if w.shared_sticky {
        return false;
    }
    let mut now = [0u8; PATH_MAX + 1];
    let Some(n) = fd_name(fd, &mut now[..PATH_MAX]) else {
        return false;
    };
    let base_len = patterns::last_component(&now[..n]).len();
    if base_len == 0 || base_len > 255 {
        return false;
    }
    // The entry under its new name, looked up in the verified directory
    // (through the walk's checked path, not the kernel's name of the fd):
    // this file, a regular one.
    let mut cbase = [0u8; 256];
    cbase[..base_len].copy_from_slice(&now[n - base_len..n]);
    let entry = w.stat_entry(&cbase[..base_len + 1]);
    if !entry.is_ok_and(|m| m.is_reg() && m.dev == id.dev && m.ino == id.ino) {
        return false;
    }
    // And the kernel's directory of the fd is that same directory (a
    // different directory with an entry of the same name and a hard link
    // to this file is not a rename in place).
    now[n - base_len] = 0;
    let (Some(here), Ok(there)) = (
        w.stat_dir(),
        safe_open::stat_path(&now[..n - base_len + 1], true),
    ) else {
        return false;
    };
    here.dev == there.dev && here.ino == there.ino
}

/// Whether the open file `id` is the file the exact entry `cpath` (with
/// its NUL) names, under the same rules.
fn is_exact_file(cpath: &[u8], id: &Ident) -> bool {
    allowed(cpath, id)
}

/// Whether `cpath` (absolute, with its NUL) leads to the open file `id`
/// without crossing privileges (`safe_open::resolve`): walked one
/// component at a time, a symlink on the way (the last one included) is
/// followed only when root or the program's own user made it, and every
/// directory reached, also through a link, must be one other users cannot
/// write (unless sticky, and then the entry must be root's or the
/// program's, and the file have one link), as sshd's StrictModes refuses
/// such paths. A refused match gets a debug-mode message.
fn allowed(cpath: &[u8], id: &Ident) -> bool {
    let path = &cpath[..cpath.len() - 1];
    // Cheap pre-check (most opens are not this file): the walk is made
    // only for a file the name plainly leads to.
    if !sys::stat(cpath).is_some_and(|t| t.same_file(id)) {
        return false;
    }
    // By name: a walk holding fds would put them in the program's table,
    // at its lowest free numbers, in the middle of its open (`Via`).
    match safe_open::resolve(path, safe_open::Via::Names) {
        Ok(m) => m.dev == id.dev && m.ino == id.ino,
        Err(r) => {
            refuse(r.why, &path[..r.at.min(path.len())]);
            false
        }
    }
}
