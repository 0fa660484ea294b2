// The constructor and the C shim are not linked into unit-test binaries.
#![cfg_attr(test, allow(dead_code))]
//! liblogtap: tees what an unmodified program writes to stdout, stderr and
//! its log files to a logserver socket or a file.
//!
//! The layers, each in its own module:
//! - [`hooks`]: the intercepted libc entry points (fd writes, opens and
//!   closes, stdio, process lifecycle), plus the C shim for the variadic
//!   ones (`src/shim/glibc.c`).
//! - [`tap`]: the decision, which fd is tapped as which source, and the
//!   one table of sources every other layer iterates.
//! - [`stdio`]: how bytes written through glibc's `FILE` buffers are seen.
//! - [`ring`] and [`transport`]: the lock-free buffer, the consumer thread
//!   and delivery to the target, framed by the shared `logtap-wire` crate.
//! - [`config`]: the `LLT_*` settings.
//!
//! docs/DESIGN.md explains the architecture and its trade-offs.

pub mod config;
pub mod fds;
pub mod guarded;
#[cfg(not(test))]
pub mod hooks;
pub mod real;
pub mod ring;
pub mod safe_open;
pub mod stdio;
pub mod sys;
pub mod tap;
pub mod transport;

use core::sync::atomic::{AtomicBool, Ordering};

static STARTED: AtomicBool = AtomicBool::new(false);

/// A line on stderr when `LLT_DEBUG_MODE` is on. It is written straight to
/// fd 2, so it is never tapped or suppressed.
pub fn debug(parts: &[&[u8]]) {
    if !config::get().debug {
        return;
    }
    sys::say_as(b"logtap", parts);
}

extern "C" fn init() {
    // SAFETY: the constructor runs once, before the program's own code and
    // before any thread of ours exists.
    unsafe {
        if libc::getauxval(libc::AT_SECURE) != 0 {
            // setuid/setgid: the environment must not choose what we write where.
            return;
        }
        let _e = sys::ErrnoGuard::new();
        config::load();
        real::resolve_all();
        init_shim();
        let c = config::get();
        if transport::anything_tapped() {
            fds::init(
                !c.private_fds || !fds::private_table_possible(),
                c.target_kind == config::TargetKind::File,
            );
        }
        if !transport::init() {
            sys::say(&[b"logtap: could not map the tap buffer (LLT_BUFFER_SIZE); tapping is off"]);
            return;
        }
        transport::target::init();
        libc::pthread_atfork(Some(before_fork), None, Some(after_fork_child));
        if c.python_unbuffered
            && (c.tap_stdout || c.tap_stderr)
            && libc::getenv(c"PYTHONUNBUFFERED".as_ptr()).is_null()
        {
            libc::setenv(c"PYTHONUNBUFFERED".as_ptr(), c"1".as_ptr(), 0);
        }
        tap::init();
        stdio::init();
        init_signals();
        STARTED.store(true, Ordering::Release);
        debug(&[b"active, target ", c.target_path.bytes()]);
    }
}

/// The Rust functions the C shim calls (see `struct llt_api` there).
#[repr(C)]
struct ShimApi {
    resolve: unsafe extern "C" fn(*const libc::c_char) -> *mut libc::c_void,
    stream_source: unsafe extern "C" fn(*mut libc::FILE) -> libc::c_int,
    stream_wide: unsafe extern "C" fn(*mut libc::FILE) -> libc::c_int,
    stdio_write: unsafe extern "C" fn(*mut libc::FILE, *const u8, usize, libc::c_int) -> usize,
    opened: unsafe extern "C" fn(libc::c_int, libc::c_int, libc::c_int, *const libc::c_char),
    duplicated: extern "C" fn(libc::c_int, libc::c_int),
    fd_tapped: extern "C" fn(libc::c_int) -> libc::c_int,
}

#[cfg(not(test))]
extern "C" {
    fn llt_shim_init(api: *const ShimApi);
}

#[cfg(not(test))]
fn init_shim() {
    let api = ShimApi {
        resolve: real::llt_resolve,
        stream_source: stdio::llt_stream_source,
        stream_wide: stdio::llt_stream_wide,
        stdio_write: stdio::llt_stdio_write,
        opened: hooks::files::llt_opened,
        duplicated: hooks::files::llt_duplicated,
        fd_tapped: hooks::fd::llt_fd_tapped,
    };
    // SAFETY: the shim copies the table; called once from the constructor.
    unsafe { llt_shim_init(&api) };
}

#[cfg(test)]
fn init_shim() {}

#[cfg(not(test))]
fn init_signals() {
    // SAFETY: the constructor, after the transport is set up.
    unsafe { hooks::signals::init() };
}

#[cfg(test)]
fn init_signals() {}

extern "C" fn before_fork() {
    transport::hand_off_before_child();
}

extern "C" fn after_fork_child() {
    let _e = sys::ErrnoGuard::new();
    stdio::after_fork_child();
    transport::after_fork_child();
}

/// Runs after the program's atexit handlers and destructors (we were
/// initialised before the program, so we are finalised after it) and before
/// glibc's final stdio flush, which goes through paths we cannot see: flush
/// the tapped streams through our accounting, then deliver.
extern "C" fn fini() {
    // A vfork child that calls exit() runs this on its parent's memory.
    if !STARTED.load(Ordering::Acquire) || !transport::anything_tapped() || sys::in_vfork_child() {
        return;
    }
    let _e = sys::ErrnoGuard::new();
    stdio::flush_all(true);
    transport::at_exit();
}

#[cfg(not(test))]
#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

#[cfg(not(test))]
#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = fini;
