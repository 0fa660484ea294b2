//! Process lifecycle: data buffered by the library must leave before the
//! process image does (`_exit`, `exec*`), and a consumer thread must not be
//! in the way of `unshare(CLONE_NEWUSER)`. Normal `exit` is handled by the
//! library's destructor (lib.rs); `fork` by `pthread_atfork` handlers
//! (pending data is handed off before, the child gets its own state after),
//! plus `_Fork` and `posix_spawn`, which skip those handlers; `daemon`,
//! whose fork, `_exit` and `dup2` happen inside libc.
//!
//! Invariants: the real call always runs with the caller's arguments and
//! its errno; the waits here are bounded by `LLT_EXIT_TIMEOUT_MS`.

use crate::{config, real, tap, transport};
use libc::{c_char, c_int};

/// `exec`: the process image goes, the process (and its pid) may stay
/// (or, for `daemon`, its child goes on); else the process ends.
fn deliver_before_leaving(exec: bool) {
    // A vfork child leaves the parent's buffer to the parent.
    if tap::is_active() && transport::anything_tapped() && !crate::sys::in_vfork_child() {
        transport::flush(config::get().exit_timeout_ms);
        // What did not leave is the sink's to read from the shared ring
        // once the connection ends (it closes at exec: close-on-exec).
        transport::abandon();
        transport::leaving(exec);
    }
}

/// `exec` returned: it failed, and the process goes on with its ring.
fn exec_failed(r: c_int) -> c_int {
    if !crate::sys::in_vfork_child() {
        let _e = crate::sys::ErrnoGuard::new();
        transport::resume();
    }
    r
}

/// Delivers what is buffered, then ends the process through `real`; should
/// that ever return, through the system call.
unsafe fn leave(real: impl FnOnce(), status: c_int) -> ! {
    deliver_before_leaving(false);
    real();
    libc::syscall(libc::SYS_exit_group, status);
    // SAFETY: exit_group does not return.
    core::hint::unreachable_unchecked()
}

/// # Safety
/// Same contract as libc `_exit`.
#[no_mangle]
pub unsafe extern "C" fn _exit(status: c_int) -> ! {
    leave(|| real::_exit(status), status)
}

/// # Safety
/// Same contract as libc `_Exit`.
#[no_mangle]
pub unsafe extern "C" fn _Exit(status: c_int) -> ! {
    leave(|| real::_Exit(status), status)
}

/// The buffer goes out before the process dies: the last lines before an
/// `abort` (or a failed `assert`) are the ones worth having.
///
/// # Safety
/// Same contract as libc `abort`.
#[no_mangle]
pub unsafe extern "C" fn abort() -> ! {
    leave(|| real::abort(), 134)
}

/// `quick_exit` ends in glibc's internal `_exit`, which is not hooked.
///
/// # Safety
/// Same contract as libc `quick_exit`.
#[no_mangle]
pub unsafe extern "C" fn quick_exit(status: c_int) -> ! {
    leave(|| real::quick_exit(status), status)
}

/// # Safety
/// Same contract as libc `execve`.
#[no_mangle]
pub unsafe extern "C" fn execve(
    p: *const c_char,
    a: *const *const c_char,
    e: *const *const c_char,
) -> c_int {
    deliver_before_leaving(true);
    exec_failed(real::execve(p, a, e))
}

/// # Safety
/// Same contract as libc `execv`.
#[no_mangle]
pub unsafe extern "C" fn execv(p: *const c_char, a: *const *const c_char) -> c_int {
    deliver_before_leaving(true);
    exec_failed(real::execv(p, a))
}

/// # Safety
/// Same contract as libc `execvp`.
#[no_mangle]
pub unsafe extern "C" fn execvp(p: *const c_char, a: *const *const c_char) -> c_int {
    deliver_before_leaving(true);
    exec_failed(real::execvp(p, a))
}

/// # Safety
/// Same contract as libc `execvpe`.
#[no_mangle]
pub unsafe extern "C" fn execvpe(
    p: *const c_char,
    a: *const *const c_char,
    e: *const *const c_char,
) -> c_int {
    deliver_before_leaving(true);
    exec_failed(real::execvpe(p, a, e))
}

/// # Safety
/// Same contract as libc `fexecve`.
#[no_mangle]
pub unsafe extern "C" fn fexecve(
    fd: c_int,
    a: *const *const c_char,
    e: *const *const c_char,
) -> c_int {
    deliver_before_leaving(true);
    exec_failed(real::fexecve(fd, a, e))
}

/// `posix_spawn` runs no `pthread_atfork` handlers; hand off pending data
/// first so the child's output cannot overtake ours.
///
/// # Safety
/// Same contract as libc `posix_spawn`.
#[no_mangle]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut libc::pid_t,
    path: *const c_char,
    fa: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    transport::hand_off_before_child();
    real::posix_spawn(pid, path, fa, attr, argv, envp)
}

/// # Safety
/// Same contract as libc `posix_spawnp`.
#[no_mangle]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut libc::pid_t,
    file: *const c_char,
    fa: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    transport::hand_off_before_child();
    real::posix_spawnp(pid, file, fa, attr, argv, envp)
}

/// # Safety
/// Same contract as libc `unshare`.
#[no_mangle]
pub unsafe extern "C" fn unshare(flags: c_int) -> c_int {
    if flags & libc::CLONE_NEWUSER != 0 && !crate::sys::in_vfork_child() {
        // The kernel refuses a new user namespace to a multi-threaded
        // process; the consumer thread restarts at the next tapped write.
        transport::quiesce();
    }
    real::unshare(flags)
}

/// `daemon(3)` forks, ends the parent with libc's internal `_exit` and
/// points fds 0-2 at /dev/null with its internal `dup2`: the hooks see
/// none of it. What the program meant: its output so far is delivered (the
/// parent leaves at once, so it is delivered first, as `_exit` would), and
/// the daemon's writes to /dev/null are not output.
///
/// # Safety
/// Same contract as libc `daemon`.
#[no_mangle]
pub unsafe extern "C" fn daemon(nochdir: c_int, noclose: c_int) -> c_int {
    if crate::sys::in_vfork_child() {
        return real::daemon(nochdir, noclose);
    }
    deliver_before_leaving(true);
    let r = real::daemon(nochdir, noclose);
    if r != 0 {
        // No fork: the process goes on with its ring.
        return exec_failed(r);
    }
    if noclose == 0 {
        // The child (a fork: it has its own state by now).
        let _e = crate::sys::ErrnoGuard::new();
        for fd in 0..3 {
            tap::reclassify(fd);
        }
    }
    r
}

/// `system` and `popen` start their child with libc's internal
/// `posix_spawn`: hand off pending data first, as for `posix_spawn`.
///
/// # Safety
/// Same contract as libc `system`.
#[no_mangle]
pub unsafe extern "C" fn system(cmd: *const c_char) -> c_int {
    transport::hand_off_before_child();
    real::system(cmd)
}

/// # Safety
/// Same contract as libc `popen`.
#[no_mangle]
pub unsafe extern "C" fn popen(cmd: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    transport::hand_off_before_child();
    real::popen(cmd, mode)
}

/// `login_tty` makes a terminal fds 0-2 with libc's internal `dup2`.
///
/// # Safety
/// Same contract as libc `login_tty`.
#[no_mangle]
pub unsafe extern "C" fn login_tty(fd: c_int) -> c_int {
    let r = real::login_tty(fd);
    if r == 0 {
        let _e = crate::sys::ErrnoGuard::new();
        tap::closed(fd);
        for fd in 0..3 {
            tap::reclassify(fd);
        }
    }
    r
}

/// `forkpty` forks and, in the child, calls libc's internal `login_tty`.
///
/// # Safety
/// Same contract as libc `forkpty`.
#[no_mangle]
pub unsafe extern "C" fn forkpty(
    master: *mut c_int,
    name: *mut c_char,
    termp: *const libc::termios,
    winp: *const libc::winsize,
) -> libc::pid_t {
    let r = real::forkpty(master, name, termp, winp);
    if r == 0 {
        let _e = crate::sys::ErrnoGuard::new();
        for fd in 0..3 {
            tap::reclassify(fd);
        }
    } else if r > 0 && !master.is_null() {
        tap::opened(*master, true);
    }
    r
}

/// `_Fork` does not run `pthread_atfork` handlers.
///
/// # Safety
/// Same contract as libc `_Fork`.
#[no_mangle]
pub unsafe extern "C" fn _Fork() -> libc::pid_t {
    let r = real::_Fork();
    if r == 0 {
        let _e = crate::sys::ErrnoGuard::new();
        crate::stdio::after_fork_child();
        transport::after_fork_child();
    }
    r
}
