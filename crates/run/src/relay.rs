//! The pipe relay, for programs `LD_PRELOAD` cannot reach.
//!
//! The program runs as our child with each tapped standard stream on a
//! pipe. One thread (this one) polls the pipes and a signalfd:
//! - bytes read go to our own stdout/stderr (the program's original
//!   destination) and, as records of the library's buffer, to the target:
//!   `transport::push_or_drop` (not suppressed) or `transport::push_prefix`
//!   (suppressed: what the buffer does not take is written to the original
//!   destination). These are the calls the library's write hooks make, so
//!   bounded buffering, exact drop notices, never waiting for a target
//!   that stalled, and the exit spill are the library's;
//! - a record ends at the last newline of what has arrived, so a line cut
//!   across reads is one record; a partial line is held at most
//!   `PARTIAL_MS` (a prompt), and a line longer than `LINE_MAX` is cut;
//! - TERM INT HUP QUIT USR1 USR2 WINCH are forwarded to the program;
//!   SIGCHLD reaps every child (as PID 1, orphans re-parented to us too);
//! - when the program has exited and its pipes are drained (EOF, or quiet
//!   for `QUIET_MS` while a descendant still holds them, at most
//!   `DRAIN_MAX_MS`), the buffer is delivered (bounded by
//!   `LLT_EXIT_TIMEOUT_MS`) and we exit with the program's code, or 128 +
//!   the signal that killed it.

use crate::{config, fds, sys, tap, transport};
use std::ffi::{OsStr, OsString};
use std::os::fd::IntoRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Bytes read from a pipe at a time.
const READ: usize = 64 << 10;
/// A partial line waits this long for its end before it is sent as is.
const PARTIAL_MS: u64 = 100;
/// A line longer than this is sent in pieces.
const LINE_MAX: usize = 64 << 10;
/// After the program exited, pipes a descendant still holds are read
/// until quiet this long…
const QUIET_MS: u64 = 200;
/// …or at most this long.
const DRAIN_MAX_MS: u64 = 2000;

/// Adds the signals forwarded to the program to `set`: every asynchronous
/// one, as tini does (what a container manager or a user may send, such as
/// SIGTERM, SIGPWR or a real-time STOPSIGNAL). Not: the synchronous ones
/// (a fault of our own), SIGKILL and SIGSTOP (they cannot be caught), the
/// terminal's job-control stops, SIGPIPE (ours, from an output that lost
/// its reader) and SIGCHLD (ours, handled apart).
fn add_forwarded(set: &mut libc::sigset_t) {
    const NOT: [libc::c_int; 12] = [
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGTRAP,
        libc::SIGSYS,
        libc::SIGABRT,
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGPIPE,
    ];
    let rt = libc::SIGRTMIN()..=libc::SIGRTMAX();
    for s in (1..32)
        .filter(|s| !NOT.contains(s) && *s != libc::SIGCHLD)
        .chain(rt)
    {
        // SAFETY: plain sigset manipulation; libc refuses the numbers it
        // reserves for itself.
        unsafe { libc::sigaddset(set, s) };
    }
}

struct Stream {
    /// The pipe's read end; -1 once at EOF.
    fd: i32,
    src: u8,
    /// Our own fd the program's bytes go to without the library.
    out: i32,
    /// The end of what arrived that is not yet a whole line.
    pending: Vec<u8>,
    /// When `pending` got its first byte.
    since: u64,
    /// `out` failed for good: the stream is closed after this read.
    broken: bool,
}

/// Writes all of `data` to `fd`, waiting while a non-blocking fd is
/// full. False when the destination failed for good (its reader closed
/// it: EPIPE), which the caller passes on to the program.
fn write_all(fd: i32, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        let n = sys::write(fd, data);
        if n > 0 {
            data = &data[n as usize..];
            continue;
        }
        match sys::errno() {
            libc::EINTR => {}
            libc::EAGAIN => {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, 100) };
            }
            _ => return false,
        }
    }
    true
}

impl Stream {
    /// Bytes the program wrote; `tapping` is false during `LLT_PASSIV_ON_START`.
    fn data(&mut self, d: &[u8], tapping: bool) {
        if !tapping {
            self.send_pending();
            if !write_all(self.out, d) {
                self.out_gone();
            }
            return;
        }
        if !tap::suppressed(self.src) && !write_all(self.out, d) {
            self.broken = true;
        }
        if self.pending.is_empty() {
            self.since = sys::now_ms();
        }
        self.pending.extend_from_slice(d);
        // Up to the last newline; a line of LINE_MAX with none is cut.
        let whole = self
            .pending
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let cut = if whole > 0 {
            whole
        } else if self.pending.len() >= LINE_MAX {
            self.pending.len()
        } else {
            0
        };
        if cut > 0 {
            self.emit(cut);
        }
        if self.broken {
            self.out_gone();
        }
    }

    /// Our own stdout/stderr lost its reader (`logtap-run prog | head -1`):
    /// the program must see that too, as it would writing there itself, so
    /// its pipe's reading end is closed (what was read still reaches the
    /// target); its next write gets SIGPIPE or EPIPE.
    fn out_gone(&mut self) {
        self.close();
    }

    /// Sends the first `n` pending bytes as one record.
    fn emit(&mut self, n: usize) {
        let chunk = &self.pending[..n];
        if tap::suppressed(self.src) {
            let stored = transport::push_prefix(self.src, &[chunk]);
            if !write_all(self.out, &chunk[stored..]) {
                self.broken = true;
            }
        } else {
            transport::push_or_drop(self.src, &[chunk]);
        }
        self.pending.drain(..n);
        self.since = sys::now_ms();
    }

    fn send_pending(&mut self) {
        if !self.pending.is_empty() {
            self.emit(self.pending.len());
        }
    }

    fn close(&mut self) {
        self.send_pending();
        if self.fd >= 0 {
            sys::close(self.fd);
            self.fd = -1;
        }
    }
}

fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

/// Runs `path` (named `arg0`) with `args` under the relay; returns the
/// code to exit with.
pub fn run(path: &Path, arg0: &OsStr, args: &[OsString]) -> i32 {
    let c = config::get();
    let mut tapping_any = c.tap_stdout || c.tap_stderr;
    // SAFETY: single-threaded start-up, as in the library's constructor.
    unsafe {
        if tapping_any {
            fds::init(
                !c.private_fds || !fds::private_table_possible(),
                c.target_kind == config::TargetKind::File,
            );
            if transport::init() {
                transport::target::init();
            } else {
                crate::say(
                    "could not map the tap buffer (LLT_BUFFER_SIZE); relaying without tapping",
                );
                tapping_any = false;
            }
        }
        tap::sources::init();
    }

    // Block the signals we handle before the child exists, so none is
    // lost between its start and our first poll. The child gets the mask
    // we were started with back (below; `Command` restores only SIGPIPE's
    // disposition, which Rust ignores in its own process).
    // SAFETY: plain sigset manipulation on local values.
    let (sigfd, old_mask) = unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        add_forwarded(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        (fd, old)
    };
    if sigfd < 0 {
        crate::say("signalfd failed; signals are not forwarded");
    }

    let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::inherit() };
    let mut cmd = Command::new(path);
    cmd.arg0(arg0)
        .args(args)
        .stdout(pipe(c.tap_stdout))
        .stderr(pipe(c.tap_stderr));
    // SAFETY: runs in the child between fork and exec, and only calls
    // pthread_sigmask, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, core::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(ch) => ch,
        Err(e) => crate::exec_failed(arg0, e),
    };
    let pid = child.id() as libc::pid_t;
    // Its lines carry its pid, not ours: the relay only writes them on.
    transport::set_writer_pid(pid);
    let mut streams: Vec<Stream> = Vec::new();
    if let Some(o) = child.stdout.take() {
        streams.push(Stream {
            fd: o.into_raw_fd(),
            src: tap::STDOUT,
            out: 1,
            pending: Vec::new(),
            since: 0,
            broken: false,
        });
    }
    if let Some(e) = child.stderr.take() {
        streams.push(Stream {
            fd: e.into_raw_fd(),
            src: tap::STDERR,
            out: 2,
            pending: Vec::new(),
            since: 0,
            broken: false,
        });
    }
    let start = sys::now_ms();
    let tapping = || tapping_any && sys::now_ms() >= start + c.passive_ms;
    let mut buf = vec![0u8; READ];
    let mut status: Option<i32> = None;
    let mut exited_at = 0u64;
    let mut last_data = 0u64;

    loop {
        let open = streams.iter().filter(|s| s.fd >= 0).count();
        if status.is_some() && open == 0 {
            break;
        }
        let now = sys::now_ms();
        if status.is_some()
            && (now.saturating_sub(last_data.max(exited_at)) >= QUIET_MS
                || now - exited_at >= DRAIN_MAX_MS)
        {
            break;
        }
        let mut timeout: i64 = -1;
        for s in &streams {
            if !s.pending.is_empty() {
                let due = (s.since + PARTIAL_MS).saturating_sub(now) as i64;
                timeout = if timeout < 0 { due } else { timeout.min(due) };
            }
        }
        if status.is_some() {
            timeout = if timeout < 0 {
                QUIET_MS as i64
            } else {
                timeout.min(QUIET_MS as i64)
            };
        }
        if sigfd < 0 {
            // No signalfd: the program's exit is polled for instead.
            timeout = if timeout < 0 { 100 } else { timeout.min(100) };
        }
        let mut pfds: Vec<libc::pollfd> = streams
            .iter()
            .map(|s| libc::pollfd {
                fd: s.fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        pfds.push(libc::pollfd {
            fd: sigfd,
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: pfds is a valid array of its length (negative fds are ignored).
        let r = unsafe {
            libc::poll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                timeout.clamp(-1, i32::MAX as i64) as i32,
            )
        };
        if r < 0 && sys::errno() != libc::EINTR {
            crate::say("poll failed; stopping the relay");
            break;
        }
        let now = sys::now_ms();
        for s in streams.iter_mut() {
            if !s.pending.is_empty() && now >= s.since + PARTIAL_MS {
                s.send_pending();
            }
        }
        if sigfd < 0 && status.is_none() {
            let mut st = 0;
            // SAFETY: waiting for our own child, without blocking.
            if unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) } == pid {
                status = Some(exit_code(st));
                exited_at = sys::now_ms();
            }
        }
        if r <= 0 {
            continue;
        }
        if pfds[streams.len()].revents & libc::POLLIN != 0 {
            handle_signals(sigfd, pid, &mut status);
            if status.is_some() && exited_at == 0 {
                exited_at = sys::now_ms();
            }
        }
        for (i, s) in streams.iter_mut().enumerate() {
            if s.fd < 0 || pfds[i].revents == 0 {
                continue;
            }
            // SAFETY: buf is READ writable bytes.
            let n = unsafe { libc::read(s.fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
            if n > 0 {
                last_data = sys::now_ms();
                s.data(&buf[..n as usize], tapping());
            } else if n == 0 || sys::errno() != libc::EINTR && sys::errno() != libc::EAGAIN {
                s.close();
            }
        }
    }
    for s in streams.iter_mut() {
        s.close();
    }
    if tapping_any {
        transport::at_exit();
    }
    status.unwrap_or(1)
}

/// Reads the signalfd: forwards the program's signals, reaps children.
fn handle_signals(sigfd: i32, pid: libc::pid_t, status: &mut Option<i32>) {
    loop {
        // SAFETY: signalfd_siginfo is plain data; read fills it or fails.
        let mut info: libc::signalfd_siginfo = unsafe { core::mem::zeroed() };
        let size = core::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reading one record into `info`.
        let n = unsafe { libc::read(sigfd, &mut info as *mut _ as *mut libc::c_void, size) };
        if n != size as isize {
            return;
        }
        let sig = info.ssi_signo as libc::c_int;
        if sig == libc::SIGCHLD {
            reap(pid, status);
        } else if status.is_none() && !child_got_it_too(&info, pid) {
            // SAFETY: signalling our own, not yet reaped, child.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

/// Whether the kernel sent the signal to our whole process group (a
/// terminal's ^C or ^\, hang-up or resize), which the program shares: it
/// has it already, and forwarding would deliver it twice.
fn child_got_it_too(info: &libc::signalfd_siginfo, pid: libc::pid_t) -> bool {
    // SAFETY: getpgid has no memory preconditions.
    info.ssi_code == libc::SI_KERNEL && unsafe { libc::getpgid(pid) == libc::getpgid(0) }
}

/// Reaps every child that has exited: the program (its status is kept)
/// and, as PID 1 or a subreaper, orphans.
fn reap(pid: libc::pid_t, status: &mut Option<i32>) {
    loop {
        let mut st = 0;
        // SAFETY: waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if r <= 0 {
            return;
        }
        if r == pid {
            *status = Some(exit_code(st));
        }
    }
}
