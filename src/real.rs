//! The real libc functions behind each hook, found with
//! `dlsym(RTLD_NEXT, …)`.
//!
//! All are resolved in the constructor, before any thread of the program
//! can be inside a hook, so the hot path is one relaxed load. A hook that
//! runs earlier (another preloaded library's constructor) resolves lazily;
//! the fd-level calls fall back to the raw system call when no libc symbol
//! can be found, so they work even before the loader is done with us.

use core::sync::atomic::{AtomicPtr, Ordering};
use libc::{c_char, c_int, c_long, c_void, iovec, off_t, size_t, ssize_t, FILE};

fn resolve(name: &'static [u8]) -> *mut c_void {
    // SAFETY: name is NUL-terminated; RTLD_NEXT finds the definition after ours.
    unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr() as *const c_char) }
}

/// Used by the C shims, which share this table's resolution policy.
///
/// # Safety
/// `name` is a NUL-terminated string.
pub unsafe extern "C" fn llt_resolve(name: *const c_char) -> *mut c_void {
    libc::dlsym(libc::RTLD_NEXT, name)
}

macro_rules! reals {
    ($( $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty, $fallback:expr; )*) => {
        #[allow(non_upper_case_globals)]
        mod ptrs {
            use super::*;
            $( pub static $name: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut()); )*
        }

        /// Resolves every real function now, outside any hook.
        pub fn resolve_all() {
            $( ptrs::$name.store(resolve(concat!(stringify!($name), "\0").as_bytes()), Ordering::Relaxed); )*
        }

        $(
            /// Calls the real libc function.
            ///
            /// # Safety
            /// Same contract as the libc function of this name.
            #[inline]
            #[allow(clippy::missing_safety_doc, clippy::unused_unit, unused_variables, non_snake_case)]
            pub unsafe fn $name($($arg: $ty),*) -> $ret {
                let mut p = ptrs::$name.load(Ordering::Relaxed);
                if p.is_null() {
                    p = resolve(concat!(stringify!($name), "\0").as_bytes());
                    ptrs::$name.store(p, Ordering::Relaxed);
                }
                if p.is_null() {
                    return $fallback;
                }
                let f: unsafe extern "C" fn($($ty),*) -> $ret = core::mem::transmute(p);
                f($($arg),*)
            }

        )*
    };
}

// Fallbacks written with the system calls both x86_64 and aarch64 have:
// aarch64 has no dup2, creat or fork system calls (only dup3, openat, clone).

/// `dup2` from `dup3`, which refuses equal fds where `dup2` checks `a` and
/// returns it.
unsafe fn dup2_raw(a: c_int, b: c_int) -> c_int {
    if a == b {
        if libc::syscall(libc::SYS_fcntl, a, libc::F_GETFD) < 0 {
            return -1;
        }
        return b;
    }
    libc::syscall(libc::SYS_dup3, a, b, 0) as c_int
}

/// `creat` is `open(path, O_CREAT | O_WRONLY | O_TRUNC, mode)`.
unsafe fn creat_raw(p: *const c_char, m: libc::mode_t) -> c_int {
    let fl = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC;
    libc::syscall(libc::SYS_openat, libc::AT_FDCWD, p, fl, m) as c_int
}

/// `fork` is `clone(SIGCHLD)` with no stack, tids or tls (the argument
/// order, which differs between the architectures, does not matter then).
unsafe fn fork_raw() -> libc::pid_t {
    libc::syscall(
        libc::SYS_clone,
        libc::SIGCHLD as c_long,
        0usize,
        0usize,
        0usize,
        0usize,
    ) as libc::pid_t
}

/// `SIG_ERR` with `ENOSYS`: a `signal`-style function that could not be found.
fn sig_err() -> libc::sighandler_t {
    crate::sys::set_errno(libc::ENOSYS);
    libc::SIG_ERR
}

fn enosys<T: From<i8>>() -> T {
    crate::sys::set_errno(libc::ENOSYS);
    T::from(-1)
}

reals! {
    write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t, libc::syscall(libc::SYS_write, fd, buf, n) as ssize_t;
    writev(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t, libc::syscall(libc::SYS_writev, fd, iov, n) as ssize_t;
    pwrite(fd: c_int, buf: *const c_void, n: size_t, off: off_t) -> ssize_t, libc::syscall(libc::SYS_pwrite64, fd, buf, n, off) as ssize_t;
    pwrite64(fd: c_int, buf: *const c_void, n: size_t, off: off_t) -> ssize_t, libc::syscall(libc::SYS_pwrite64, fd, buf, n, off) as ssize_t;
    pwritev(fd: c_int, iov: *const iovec, n: c_int, off: off_t) -> ssize_t, enosys();
    pwritev64(fd: c_int, iov: *const iovec, n: c_int, off: off_t) -> ssize_t, enosys();
    pwritev2(fd: c_int, iov: *const iovec, n: c_int, off: off_t, fl: c_int) -> ssize_t, enosys();
    pwritev64v2(fd: c_int, iov: *const iovec, n: c_int, off: off_t, fl: c_int) -> ssize_t, enosys();
    send(fd: c_int, buf: *const c_void, n: size_t, fl: c_int) -> ssize_t, libc::syscall(libc::SYS_sendto, fd, buf, n, fl, 0usize, 0usize) as ssize_t;
    sendto(fd: c_int, buf: *const c_void, n: size_t, fl: c_int, a: *const libc::sockaddr, al: libc::socklen_t) -> ssize_t, libc::syscall(libc::SYS_sendto, fd, buf, n, fl, a, al) as ssize_t;
    sendmsg(fd: c_int, m: *const libc::msghdr, fl: c_int) -> ssize_t, libc::syscall(libc::SYS_sendmsg, fd, m, fl) as ssize_t;
    close(fd: c_int) -> c_int, libc::syscall(libc::SYS_close, fd) as c_int;
    close_range(lo: libc::c_uint, hi: libc::c_uint, fl: c_int) -> c_int, libc::syscall(libc::SYS_close_range, lo, hi, fl) as c_int;
    closefrom(lo: c_int) -> (), { libc::syscall(libc::SYS_close_range, lo, u32::MAX, 0); };
    dup(fd: c_int) -> c_int, libc::syscall(libc::SYS_dup, fd) as c_int;
    dup2(a: c_int, b: c_int) -> c_int, dup2_raw(a, b);
    dup3(a: c_int, b: c_int, fl: c_int) -> c_int, libc::syscall(libc::SYS_dup3, a, b, fl) as c_int;
    creat(p: *const c_char, m: libc::mode_t) -> c_int, creat_raw(p, m);
    creat64(p: *const c_char, m: libc::mode_t) -> c_int, creat_raw(p, m);
    fopen(p: *const c_char, m: *const c_char) -> *mut FILE, core::ptr::null_mut();
    fopen64(p: *const c_char, m: *const c_char) -> *mut FILE, core::ptr::null_mut();
    freopen(p: *const c_char, m: *const c_char, f: *mut FILE) -> *mut FILE, core::ptr::null_mut();
    freopen64(p: *const c_char, m: *const c_char, f: *mut FILE) -> *mut FILE, core::ptr::null_mut();
    fdopen(fd: c_int, m: *const c_char) -> *mut FILE, core::ptr::null_mut();
    fclose(f: *mut FILE) -> c_int, enosys();
    fcloseall() -> c_int, enosys();
    fflush(f: *mut FILE) -> c_int, enosys();
    fflush_unlocked(f: *mut FILE) -> c_int, enosys();
    fwrite(p: *const c_void, s: size_t, n: size_t, f: *mut FILE) -> size_t, 0;
    fwrite_unlocked(p: *const c_void, s: size_t, n: size_t, f: *mut FILE) -> size_t, 0;
    fputs(s: *const c_char, f: *mut FILE) -> c_int, enosys();
    fputs_unlocked(s: *const c_char, f: *mut FILE) -> c_int, enosys();
    puts(s: *const c_char) -> c_int, enosys();
    fputc(c: c_int, f: *mut FILE) -> c_int, enosys();
    fputc_unlocked(c: c_int, f: *mut FILE) -> c_int, enosys();
    putc(c: c_int, f: *mut FILE) -> c_int, enosys();
    _IO_putc(c: c_int, f: *mut FILE) -> c_int, enosys();
    putc_unlocked(c: c_int, f: *mut FILE) -> c_int, enosys();
    putchar(c: c_int) -> c_int, enosys();
    putchar_unlocked(c: c_int) -> c_int, enosys();
    putw(w: c_int, f: *mut FILE) -> c_int, enosys();
    __overflow(f: *mut FILE, c: c_int) -> c_int, enosys();
    fseek(f: *mut FILE, o: c_long, w: c_int) -> c_int, enosys();
    fseeko(f: *mut FILE, o: off_t, w: c_int) -> c_int, enosys();
    fseeko64(f: *mut FILE, o: off_t, w: c_int) -> c_int, enosys();
    fsetpos(f: *mut FILE, p: *const libc::fpos_t) -> c_int, enosys();
    fsetpos64(f: *mut FILE, p: *const libc::fpos_t) -> c_int, enosys();
    rewind(f: *mut FILE) -> (), {};
    fileno(f: *mut FILE) -> c_int, enosys();
    setvbuf(f: *mut FILE, b: *mut c_char, m: c_int, s: size_t) -> c_int, enosys();
    _Fork() -> libc::pid_t, fork_raw();
    abort() -> (), {};
    quick_exit(s: c_int) -> (), { libc::syscall(libc::SYS_exit_group, s); };
    _exit(s: c_int) -> (), { libc::syscall(libc::SYS_exit_group, s); };
    _Exit(s: c_int) -> (), { libc::syscall(libc::SYS_exit_group, s); };
    execve(p: *const c_char, a: *const *const c_char, e: *const *const c_char) -> c_int, libc::syscall(libc::SYS_execve, p, a, e) as c_int;
    execv(p: *const c_char, a: *const *const c_char) -> c_int, enosys();
    execvp(p: *const c_char, a: *const *const c_char) -> c_int, enosys();
    execvpe(p: *const c_char, a: *const *const c_char, e: *const *const c_char) -> c_int, enosys();
    fexecve(fd: c_int, a: *const *const c_char, e: *const *const c_char) -> c_int, enosys();
    posix_spawn(pid: *mut libc::pid_t, p: *const c_char, fa: *const libc::posix_spawn_file_actions_t, at: *const libc::posix_spawnattr_t, a: *const *mut c_char, e: *const *mut c_char) -> c_int, libc::ENOSYS;
    posix_spawnp(pid: *mut libc::pid_t, p: *const c_char, fa: *const libc::posix_spawn_file_actions_t, at: *const libc::posix_spawnattr_t, a: *const *mut c_char, e: *const *mut c_char) -> c_int, libc::ENOSYS;
    unshare(fl: c_int) -> c_int, libc::syscall(libc::SYS_unshare, fl) as c_int;
    daemon(nochdir: c_int, noclose: c_int) -> c_int, enosys();
    system(cmd: *const c_char) -> c_int, enosys();
    popen(cmd: *const c_char, mode: *const c_char) -> *mut FILE, { crate::sys::set_errno(libc::ENOSYS); core::ptr::null_mut() };
    login_tty(fd: c_int) -> c_int, enosys();
    forkpty(m: *mut c_int, name: *mut c_char, t: *const libc::termios, w: *const libc::winsize) -> libc::pid_t, enosys();
    sigaction(s: c_int, a: *const libc::sigaction, o: *mut libc::sigaction) -> c_int, enosys();
    signal(s: c_int, h: libc::sighandler_t) -> libc::sighandler_t, sig_err();
    bsd_signal(s: c_int, h: libc::sighandler_t) -> libc::sighandler_t, sig_err();
    ssignal(s: c_int, h: libc::sighandler_t) -> libc::sighandler_t, sig_err();
    sysv_signal(s: c_int, h: libc::sighandler_t) -> libc::sighandler_t, sig_err();
    __sysv_signal(s: c_int, h: libc::sighandler_t) -> libc::sighandler_t, sig_err();
    sigset(s: c_int, h: libc::sighandler_t) -> libc::sighandler_t, sig_err();
    sigignore(s: c_int) -> c_int, enosys();
    siginterrupt(s: c_int, f: c_int) -> c_int, enosys();
    sigprocmask(h: c_int, s: *const libc::sigset_t, o: *mut libc::sigset_t) -> c_int, libc::syscall(libc::SYS_rt_sigprocmask, h, s, o, 8usize) as c_int;
    pthread_sigmask(h: c_int, s: *const libc::sigset_t, o: *mut libc::sigset_t) -> c_int, if libc::syscall(libc::SYS_rt_sigprocmask, h, s, o, 8usize) < 0 { crate::sys::errno() } else { 0 };
    sighold(s: c_int) -> c_int, enosys();
    sigblock(m: c_int) -> c_int, enosys();
    sigsetmask(m: c_int) -> c_int, enosys();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno() -> c_int {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    #[test]
    fn raw_fallbacks_behave_like_libc() {
        let path = std::env::temp_dir().join(format!("logtap-real-{}", std::process::id()));
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: plain system calls on fds and a path this test owns.
        unsafe {
            let fd = creat_raw(c.as_ptr(), 0o600);
            assert!(fd >= 0, "creat: errno {}", errno());
            assert_eq!(libc::write(fd, b"abc".as_ptr().cast(), 3), 3);
            libc::close(fd);
            // creat truncates an existing file and opens it write-only
            let fd = creat_raw(c.as_ptr(), 0o600);
            assert!(fd >= 0);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
            assert_eq!(
                libc::fcntl(fd, libc::F_GETFL) & libc::O_ACCMODE,
                libc::O_WRONLY
            );
            // dup2 onto itself: the fd, if open; EBADF if not
            assert_eq!(dup2_raw(fd, fd), fd);
            assert_eq!(dup2_raw(900, 900), -1);
            assert_eq!(errno(), libc::EBADF);
            // dup2 onto another number: a copy without close-on-exec
            assert_eq!(dup2_raw(fd, 901), 901);
            assert_eq!(libc::fcntl(901, libc::F_GETFD) & libc::FD_CLOEXEC, 0);
            libc::close(901);
            libc::close(fd);
            std::fs::remove_file(&path).unwrap();
            // fork: the child's exit status reaches the parent
            let pid = fork_raw();
            if pid == 0 {
                libc::syscall(libc::SYS_exit_group, 7);
            }
            assert!(pid > 0, "clone: errno {}", errno());
            let mut st = 0;
            assert_eq!(libc::waitpid(pid, &mut st, 0), pid);
            assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 7);
        }
    }
}
