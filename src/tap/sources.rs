//! The sources: what each tapped stream is called, at which level it is
//! sent, whether it is suppressed, and where its original bytes go.
//!
//! One table, which every layer iterates instead of naming streams: the
//! fd table (`tap`) maps fds to source ids, the stdio layer and the write
//! hooks ask [`suppressed`], the transport builds one frame prefix per
//! source ([`name`], [`level`]), counts drops per source and reports them
//! for [`tapped`] ones, and the exit spill sends undelivered bytes of
//! suppressed sources to [`original`].
//!
//! Ids: [`STDOUT`], [`STDERR`], [`NOTICE`] (the library's own notices),
//! then one per tapped log file from [`FIRST_FILE`]. The exact paths of
//! `LLT_TAP_FILE` get theirs in the constructor, in list order; a file
//! matched by a pattern gets one the first time a file of that name is
//! opened, named by the absolute path the program opened it under. The
//! name is the source for good: a file renamed by rotation keeps the
//! source of the fd it was opened on, and the file re-created under the
//! name is the same source again.
//!
//! Bound: [`MAX_FILES`] file sources per process (a slot is never reused,
//! so a record still in the buffer always keeps its name). A file matched
//! after that is not tapped: it is written as without the library (so
//! nothing is lost, even with suppression), and `LLT_DEBUG_MODE` says so
//! once.
//!
//! Hook-side invariants: registering a file source takes no lock and
//! allocates nothing (a slot is claimed with one atomic add, its name
//! written, then published with a release store); lookups are loads. Two
//! threads registering the same new name at once may get two ids with the
//! same name, which the sink cannot tell apart (same source field) and
//! which keep each write's order.

use crate::config;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering::*};
use logtap_wire::Level;

pub const NONE: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
/// The library's own notices (drops); never in the fd table.
pub const NOTICE: u8 = 3;
pub const FIRST_FILE: u8 = 4;
/// Distinct log files one process taps at most.
pub const MAX_FILES: usize = 64;
pub const SOURCES: usize = FIRST_FILE as usize + MAX_FILES;

const FREE: u8 = 0;
const READY: u8 = 2;

struct FileSlot {
    state: AtomicU8,
    len: UnsafeCell<usize>,
    /// The absolute path, NUL-terminated.
    name: UnsafeCell<[u8; config::PATH_MAX]>,
    /// The file last matched under this name (device, inode; 0/0 none),
    /// where the exit spill may write.
    dev: AtomicU64,
    ino: AtomicU64,
}

struct Slots([FileSlot; MAX_FILES]);
// SAFETY: a slot's name and length are written once, by the thread that
// claimed it, before `state` is set to READY with Release; readers look at
// them only after seeing READY with Acquire.
unsafe impl Sync for Slots {}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: FileSlot = FileSlot {
    state: AtomicU8::new(FREE),
    len: UnsafeCell::new(0),
    name: UnsafeCell::new([0; config::PATH_MAX]),
    dev: AtomicU64::new(0),
    ino: AtomicU64::new(0),
};
static FILES: Slots = Slots([EMPTY; MAX_FILES]);
/// Slots claimed so far (may run past MAX_FILES: claims there fail).
static CLAIMED: AtomicUsize = AtomicUsize::new(0);
/// The table was full once (reported once per process).
static FULL_SAID: AtomicBool = AtomicBool::new(false);

static SUPPRESS_STD: AtomicBool = AtomicBool::new(false);
static SUPPRESS_FILES: AtomicBool = AtomicBool::new(false);

/// Sets up the table from the configuration: suppression, and one file
/// source per exact path of `LLT_TAP_FILE` (ids `FIRST_FILE`… in order).
///
/// # Safety
/// Constructor only: no other thread may be using this module.
pub unsafe fn init() {
    let c = config::get();
    SUPPRESS_STD.store(c.suppress_std, Relaxed);
    SUPPRESS_FILES.store(c.suppress_file, Relaxed);
    for p in c.tap_files.exact() {
        register(p);
    }
}

/// The id of the exact `LLT_TAP_FILE` entry `n` (0-based among exact ones).
pub fn exact_source(n: usize) -> u8 {
    FIRST_FILE + n as u8
}

fn slot(src: u8) -> Option<&'static FileSlot> {
    let i = src.checked_sub(FIRST_FILE)? as usize;
    let s = FILES.0.get(i)?;
    (s.state.load(Acquire) == READY).then_some(s)
}

fn slot_name(s: &'static FileSlot) -> &'static [u8] {
    // SAFETY: READY was seen (see `Slots`); the name never changes after.
    unsafe { &(&*s.name.get())[..*s.len.get()] }
}

/// Whether `src` is a log file's source.
pub fn is_file(src: u8) -> bool {
    src >= FIRST_FILE
}

/// The id of the file source named `abs` (an absolute path), registering
/// it if new. None when the table is full.
pub fn file_source(abs: &[u8]) -> Option<u8> {
    let n = CLAIMED.load(Acquire).min(MAX_FILES);
    for (i, s) in FILES.0[..n].iter().enumerate() {
        if s.state.load(Acquire) == READY && slot_name(s) == abs {
            return Some(FIRST_FILE + i as u8);
        }
    }
    register(abs)
}

fn register(abs: &[u8]) -> Option<u8> {
    if abs.len() >= config::PATH_MAX {
        return None;
    }
    let i = CLAIMED.fetch_add(1, AcqRel);
    let Some(s) = FILES.0.get(i) else {
        if !FULL_SAID.swap(true, Relaxed) {
            crate::debug(&[
                b"more than 64 log files tapped; not tapped (written as without the library): ",
                abs,
            ]);
        }
        return None;
    };
    // SAFETY: slot i was claimed by this call alone and is not READY yet,
    // so nobody reads its name.
    unsafe {
        let name = &mut *s.name.get();
        name[..abs.len()].copy_from_slice(abs);
        name[abs.len()] = 0;
        *s.len.get() = abs.len();
    }
    s.state.store(READY, Release);
    let src = FIRST_FILE + i as u8;
    // Its slot in the ring's source table, before any record of it.
    crate::transport::announce_source(src);
    Some(src)
}

/// Records which file the program opened as `src` (for the exit spill).
pub fn note_file(src: u8, dev: u64, ino: u64) {
    if let Some(s) = slot(src) {
        s.dev.store(dev, Relaxed);
        s.ino.store(ino, Relaxed);
    }
}

/// The ids of the program's sources that may carry data: stdout, stderr
/// and every file source registered so far.
pub fn tapped() -> impl Iterator<Item = u8> {
    let n = CLAIMED.load(Acquire).min(MAX_FILES);
    [STDOUT, STDERR].into_iter().chain(
        (0..n)
            .map(|i| FIRST_FILE + i as u8)
            .filter(|&s| slot(s).is_some()),
    )
}

/// The frames' `source` field: `stdout`, `stderr`, `logtap`, or the file's
/// absolute path without its leading `/`.
pub fn name(src: u8) -> &'static [u8] {
    match src {
        STDOUT => b"stdout",
        STDERR => b"stderr",
        _ => match slot(src) {
            Some(s) => {
                let n = slot_name(s);
                n.strip_prefix(b"/").unwrap_or(n)
            }
            None => logtap_wire::SELF_SOURCE.as_bytes(),
        },
    }
}

/// The name as the ring's source table holds it: `name`, with a file's
/// leading `/` kept.
pub fn full_name(src: u8) -> &'static [u8] {
    match slot(src) {
        Some(s) if src >= FIRST_FILE => slot_name(s),
        _ => name(src),
    }
}

/// The absolute path of a file source, NUL-terminated (None otherwise).
pub fn path_c(src: u8) -> Option<&'static [u8]> {
    let s = slot(src)?;
    // SAFETY: as in `slot_name`, one byte further: the NUL.
    Some(unsafe { &(&*s.name.get())[..*s.len.get() + 1] })
}

pub fn level(src: u8) -> Level {
    let c = config::get();
    match src {
        STDOUT => c.level_stdout,
        STDERR => c.level_stderr,
        NOTICE => Level::Warn,
        _ => c.level_file,
    }
}

#[inline]
pub fn suppressed(src: u8) -> bool {
    match src {
        STDOUT | STDERR => SUPPRESS_STD.load(Relaxed),
        NONE | NOTICE => false,
        _ => SUPPRESS_FILES.load(Relaxed),
    }
}

/// Where a source's bytes go without the library.
pub enum Original {
    /// A standard fd (1 or 2).
    Fd(i32),
    /// A log file: its path (NUL-terminated) and the file last opened
    /// under it (device, inode), if known.
    File(&'static [u8], Option<(u64, u64)>),
    /// Nowhere (the library's own notices).
    Nowhere,
}

pub fn original(src: u8) -> Original {
    match src {
        STDOUT => Original::Fd(1),
        STDERR => Original::Fd(2),
        _ => match (slot(src), path_c(src)) {
            (Some(s), Some(p)) => {
                let (dev, ino) = (s.dev.load(Relaxed), s.ino.load(Relaxed));
                Original::File(p, (dev != 0 || ino != 0).then_some((dev, ino)))
            }
            _ => Original::Nowhere,
        },
    }
}
