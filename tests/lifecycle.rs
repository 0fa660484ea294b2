//! Regression tests for what real programs do around the library's back:
//! vfork children (Python's subprocess), daemon(3), exits with the target
//! away, writes larger than the buffer, drops at the very start or end of
//! a process, and fd numbers under a low RLIMIT_NOFILE.
//!
//! Programs: tests/programs/c/lifecycle.c (built with the suite's flags),
//! Python, coreutils `echo`. Targets: a frame file decoded by the shared
//! codec, or a Unix socket read by a receiver in this file.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn lifecycle() -> PathBuf {
    c_program("lifecycle", CVariant::Plain)
}

fn os_args(prog: &Path, args: &[&str]) -> Vec<std::ffi::OsString> {
    let mut v = vec![prog.as_os_str().to_os_string()];
    v.extend(args.iter().map(os));
    v
}

fn tapped_run(dir: &Path, argv: &[std::ffi::OsString], extra: &[(&str, &str)]) -> Run {
    let mut lib = Lib::tap_all();
    lib.extra = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let r = run_program(dir, argv, &[], Some(&lib), "tapped run");
    assert_eq!(
        r.out.code(),
        0,
        "{}\nstderr: {}",
        r.repro(),
        String::from_utf8_lossy(&r.out.stderr)
    );
    r
}

fn source<'a>(t: &'a BTreeMap<String, Vec<u8>>, s: &str) -> &'a [u8] {
    t.get(s).map(|v| &v[..]).unwrap_or(b"")
}

// ------------------------------------------------------------------ vfork

/// A vfork child runs on its parent's memory: its dup2 and close must not
/// rewrite the parent's idea of which fd is stdout, stderr or the log.
#[test]
fn vfork_child_dup2_and_close_leave_the_parent_tapped() {
    let t = TestDir::new("vfork");
    for mode in ["keep", "closeall"] {
        let dir = t.sub(mode);
        let r = tapped_run(&dir, &os_args(&lifecycle(), &["vfork", mode]), &[]);
        let got = r.target();
        assert_bytes(
            &format!("{mode}: stdout"),
            source(&got, "stdout"),
            b"out before\nout after\n",
        );
        assert_bytes(
            &format!("{mode}: stderr"),
            source(&got, "stderr"),
            b"err before\nerr after\n",
        );
        assert_bytes(
            &format!("{mode}: log file"),
            source(&got, &r.file_source()),
            b"log before\nlog after\n",
        );
    }
}

/// The parent's other threads keep writing while one thread vforks again
/// and again: their output is tapped whole and in order, and so is the
/// vforking thread's own.
#[test]
fn vfork_in_one_thread_leaves_the_others_alone() {
    let t = TestDir::new("vforkthr");
    let dir = t.sub("run");
    let r = tapped_run(
        &dir,
        &os_args(&lifecycle(), &["vfork-threads", "20000"]),
        &[],
    );
    let got = r.target();
    let out = source(&got, "stdout");
    // Across threads the order of simultaneous writes is not defined.
    assert_eq!(
        sorted_lines(out),
        sorted_lines(&r.out.stdout),
        "stdout lines"
    );
    let mut next = std::collections::HashMap::new();
    for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let s = String::from_utf8_lossy(line);
        let (tag, n) = s.split_once(' ').unwrap();
        let want = next.entry(tag.to_string()).or_insert(0u64);
        assert_eq!(n.parse::<u64>().unwrap(), *want, "{tag}: out of order");
        *want += 1;
    }
    assert_eq!(next.get("t"), Some(&20000));
    assert_eq!(next.get("m"), Some(&50));
}

/// Python >= 3.10 starts children with vfork: after a subprocess.run with
/// captured output (and the default close_fds=True) the parent's stdout,
/// stderr and log file must still be tapped.
#[test]
fn python_subprocess_run_keeps_the_parent_tapped() {
    let Some(py) = python3() else { return };
    let t = TestDir::new("pysub");
    let code = r#"
import os, subprocess, sys
log = open(os.environ["LOGFILE"], "a", buffering=1)
def say(tag):
    sys.stdout.write("out " + tag + "\n"); sys.stdout.flush()
    sys.stderr.write("err " + tag + "\n"); sys.stderr.flush()
    log.write("log " + tag + "\n")
say("0")
subprocess.run(["true"], capture_output=True)
say("1")
subprocess.run(["true"], capture_output=True, close_fds=False)
say("2")
r = subprocess.run(["echo", "child"], stdout=subprocess.PIPE, close_fds=True)
assert r.stdout == b"child\n"
say("3")
log.close()
"#;
    let dir = t.sub("run");
    let argv = vec![py.into_os_string(), os("-c"), os(code)];
    let r = tapped_run(&dir, &argv, &[]);
    let got = r.target();
    let want = |p: &str| {
        (0..4)
            .map(|i| format!("{p} {i}\n"))
            .collect::<String>()
            .into_bytes()
    };
    assert_bytes("stdout", source(&got, "stdout"), &want("out"));
    assert_bytes("stderr", source(&got, "stderr"), &want("err"));
    assert_bytes("log file", source(&got, &r.file_source()), &want("log"));
}

// ------------------------------------------------------------------ daemon

/// glibc's daemon(3) forks, ends the parent with its internal `_exit` and
/// points fds 0-2 at /dev/null with its internal `dup2`. The line printed
/// before it must arrive; the daemon's writes to /dev/null must not.
#[test]
fn daemon_delivers_what_came_before_and_does_not_tap_dev_null() {
    let t = TestDir::new("daemon");
    for (mode, out, err) in [
        ("close", &b"starting\n"[..], &b""[..]),
        ("noclose", b"starting\ndaemon out\n", b"daemon err\n"),
    ] {
        let dir = t.sub(mode);
        let r = tapped_run(&dir, &os_args(&lifecycle(), &["daemon", mode]), &[]);
        // The daemon outlives the program's parent: wait for its end.
        let start = Instant::now();
        while !dir.join("done").exists() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(dir.join("done").exists(), "{mode}: the daemon never ran");
        let want_len = out.len() + err.len();
        let mut got = r.target();
        while start.elapsed() < Duration::from_secs(10)
            && source(&got, "stdout").len() + source(&got, "stderr").len() < want_len
        {
            std::thread::sleep(Duration::from_millis(20));
            got = r.target();
        }
        // Anything wrongly tapped from /dev/null would come right after.
        std::thread::sleep(Duration::from_millis(200));
        let got = r.target();
        assert_bytes(&format!("{mode}: stdout"), source(&got, "stdout"), out);
        assert_bytes(&format!("{mode}: stderr"), source(&got, "stderr"), err);

        // The same to a socket, where the connection is made after the
        // first write: the parent must not leave before its line is sent.
        let dir = t.sub(&format!("{mode}-socket"));
        let sock = dir.join("s.sock");
        for _ in 0..5 {
            let _ = std::fs::remove_file(&sock);
            let _ = std::fs::remove_file(dir.join("done"));
            let rx = Receiver::start(&sock, Duration::ZERO);
            socket_run(&dir, &sock, &["daemon", mode], &[]);
            let start = Instant::now();
            while !dir.join("done").exists() && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(100));
            let got = rx.finish();
            assert_bytes(
                &format!("{mode}, socket: stdout"),
                source(&got, "stdout"),
                out,
            );
            assert_bytes(
                &format!("{mode}, socket: stderr"),
                source(&got, "stderr"),
                err,
            );
        }
    }
}

/// system(3) starts its shell with libc's internal posix_spawn: what the
/// parent wrote first must reach the target first.
#[test]
fn system_child_does_not_overtake_the_parent() {
    let t = TestDir::new("system");
    let dir = t.sub("run");
    let r = tapped_run(&dir, &os_args(&lifecycle(), &["system"]), &[]);
    let want: String = (0..5).map(|i| format!("parent {i}\nchild {i}\n")).collect();
    assert_bytes("stdout", source(&r.target(), "stdout"), want.as_bytes());
}

// ------------------------------------------------------------------ exits

/// Runs `cmd`, returning (wall, user+system CPU, status, stderr) of that
/// process alone.
fn timed(mut cmd: Command) -> (Duration, Duration, i32, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child with valid out-parameters.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4");
    let wall = start.elapsed();
    std::mem::forget(child);
    let out = reader.join().unwrap();
    assert_eq!(out, b"hi\n", "echo's own output");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let err = err_reader.join().unwrap();
    (wall, tv(ru.ru_utime) + tv(ru.ru_stime), status, err)
}

/// `echo hi` with the target away in every way the issue lists: no
/// socket, a stale socket (ECONNREFUSED), no permission (EACCES), a full
/// disk. The exit must neither wait (LLT_EXIT_TIMEOUT_MS is 5 s here) nor
/// spin.
#[test]
fn exit_does_not_wait_or_spin_for_an_absent_target() {
    let t = TestDir::new("away");
    let Some(echo) = which("echo") else { return };
    let stale = t.path.join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let closed_dir = t.path.join("closed");
    std::fs::create_dir(&closed_dir).unwrap();
    let guarded = closed_dir.join("s.sock");
    let _live = UnixListener::bind(&guarded).unwrap();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    use std::os::unix::fs::PermissionsExt;
    if root {
        // Root passes permission checks: run as nobody, blocked by the dir.
        std::fs::set_permissions(&closed_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    } else {
        std::fs::set_permissions(&guarded, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    // The library where any user can load it (the checkout may not be).
    let so = t.path.join("liblogtap.so");
    std::fs::copy(so_path(), &so).unwrap();
    let cases = [
        (
            "no socket",
            format!("socket:{}", t.path.join("none.sock").display()),
        ),
        ("stale socket", format!("socket:{}", stale.display())),
        ("EACCES", format!("socket:{}", guarded.display())),
        ("full disk", "file:/dev/full".to_string()),
    ];
    for (what, target) in cases {
        let mut cmd = Command::new(&echo);
        cmd.arg("hi")
            .env_clear()
            .env("LD_PRELOAD", &so)
            .env("LLT_TAP_INTO", "3")
            .env("LLT_TARGET", &target)
            .env("LLT_DEBUG_MODE", "true")
            .env("LLT_EXIT_TIMEOUT_MS", "5000");
        if what == "EACCES" && root {
            cmd.uid(65534).gid(65534);
        }
        let (wall, cpu, status, err) = timed(cmd);
        eprintln!("{what}: wall {wall:?}, cpu {cpu:?}");
        assert_eq!(status, 0, "{what}: echo failed");
        // The library was loaded (and tapped the line).
        assert!(
            err.contains("active, target") && err.contains("consumer thread started"),
            "{what}: the library's messages:\n{err}"
        );
        assert!(
            wall < Duration::from_millis(500),
            "{what}: echo took {wall:?} (waited for a target that is away)"
        );
        assert!(
            cpu < Duration::from_millis(150),
            "{what}: echo used {cpu:?} of CPU (busy-waiting)"
        );
    }
}

// ------------------------------------------------------------ big writes

/// A Unix socket server that reads (after `delay`) everything every
/// connection sends, until the peer closes.
struct Receiver {
    conns: Arc<Mutex<Vec<std::thread::JoinHandle<Vec<u8>>>>>,
    stop: Arc<AtomicBool>,
    acceptor: std::thread::JoinHandle<()>,
}

impl Receiver {
    fn start(path: &Path, delay: Duration) -> Receiver {
        let l = UnixListener::bind(path).unwrap();
        l.set_nonblocking(true).unwrap();
        let conns = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c2, s2) = (conns.clone(), stop.clone());
        let begin = Instant::now();
        let acceptor = std::thread::spawn(move || loop {
            match l.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    c2.lock().unwrap().push(std::thread::spawn(move || {
                        std::thread::sleep(delay.saturating_sub(begin.elapsed()));
                        let mut v = Vec::new();
                        let _ = s.read_to_end(&mut v);
                        v
                    }));
                }
                Err(_) if s2.load(Ordering::SeqCst) => return,
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        });
        Receiver {
            conns,
            stop,
            acceptor,
        }
    }

    /// Everything received, per source (after the programs have exited).
    fn finish(self) -> BTreeMap<String, Vec<u8>> {
        self.stop.store(true, Ordering::SeqCst);
        self.acceptor.join().unwrap();
        let mut map: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for c in self.conns.lock().unwrap().drain(..) {
            let bytes = c.join().unwrap();
            let mut dec = logtap_wire::Decoder::new();
            dec.feed(&bytes, |f| {
                let d = map
                    .entry(String::from_utf8_lossy(f.source).into_owned())
                    .or_default();
                for w in f.writes() {
                    d.extend_from_slice(w.data);
                }
            })
            .expect("valid frames");
        }
        map
    }
}

fn socket_run(dir: &Path, sock: &Path, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(lifecycle());
    cmd.args(args)
        .env_clear()
        .env("LD_PRELOAD", so_path())
        .env("LLT_TAP_INTO", "3")
        .env("LLT_TARGET", format!("socket:{}", sock.display()))
        .current_dir(dir);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = run_timeout(cmd, TIMEOUT, "lifecycle");
    assert_eq!(
        out.code(),
        0,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Drop notices received, summed: (bytes, writes).
fn notices(got: &BTreeMap<String, Vec<u8>>) -> (u64, u64) {
    let mut total = (0, 0);
    for line in source(got, logtap_wire::SELF_SOURCE).split_inclusive(|&b| b == b'\n') {
        let n = logtap_wire::DropNotice::parse(line)
            .unwrap_or_else(|| panic!("bad notice {:?}", String::from_utf8_lossy(line)));
        assert_eq!(n.source, b"stdout");
        total.0 += n.bytes;
        total.1 += n.writes;
    }
    total
}

/// One write of half the 8 MiB buffer or more (and of more than twice
/// it), the process's first and last, reaches a healthy sink byte for byte.
#[test]
fn single_writes_larger_than_the_buffer_arrive_whole() {
    let t = TestDir::new("big");
    for n in [4_194_300usize, 20_000_000] {
        let dir = t.sub(&n.to_string());
        let sock = dir.join("s.sock");
        let rx = Receiver::start(&sock, Duration::ZERO);
        let out = socket_run(&dir, &sock, &["big", &n.to_string()], &[]);
        let got = rx.finish();
        assert_eq!(out.stdout.len(), n, "the program's own output");
        assert_eq!(notices(&got), (0, 0), "{n}: nothing may be dropped");
        if source(&got, "stdout") != &out.stdout[..] {
            panic!(
                "{n}: the sink got {} bytes of the {n}-byte write",
                source(&got, "stdout").len()
            );
        }
    }
}

/// With suppression, a big write is never lost or doubled: what the sink
/// did not take is in the original output, in order.
#[test]
fn suppressed_single_writes_larger_than_the_buffer_lose_nothing() {
    let t = TestDir::new("bigsup");
    let n = 20_000_000usize;
    let dir = t.sub("run");
    let sock = dir.join("s.sock");
    let rx = Receiver::start(&sock, Duration::ZERO);
    let out = socket_run(
        &dir,
        &sock,
        &["big", &n.to_string()],
        &[("LLT_SUPPRESS_STDOUT", "true")],
    );
    let got = rx.finish();
    let sent = source(&got, "stdout");
    assert_eq!(sent.len() + out.stdout.len(), n, "target + original output");
    // The sink is healthy: the write goes there (it is the process's
    // first, made before the first connection, which is no reason to
    // give it to the original output).
    assert!(
        sent.len() >= 1 << 20,
        "a healthy sink got {} bytes, the original output {}",
        sent.len(),
        out.stdout.len()
    );
    let want = {
        // The same pattern as lifecycle.c's `big`.
        (0..n)
            .map(|i| b'!' + ((i * 7 + i / 4093) % 90) as u8)
            .collect::<Vec<u8>>()
    };
    assert!(
        want.starts_with(sent),
        "the target got the start of the write"
    );
    assert!(
        want.ends_with(&out.stdout),
        "the original output got the rest of the write"
    );
}

/// A write that cannot be delivered in full (the sink stops reading, the
/// buffer is 64 KiB) is the process's first and last: the sink still
/// gets what was stored, and a notice naming exactly the rest.
#[test]
fn a_drop_in_the_first_and_last_write_is_reported_exactly() {
    let t = TestDir::new("droplast");
    let n = 8_000_000usize;
    let dir = t.sub("run");
    let sock = dir.join("s.sock");
    let rx = Receiver::start(&sock, Duration::from_millis(1500));
    let out = socket_run(
        &dir,
        &sock,
        &["big", &n.to_string()],
        &[("LLT_BUFFER_SIZE", "64K"), ("LLT_EXIT_TIMEOUT_MS", "8000")],
    );
    let got = rx.finish();
    assert_eq!(out.stdout.len(), n);
    let data = source(&got, "stdout");
    let (bytes, writes) = notices(&got);
    eprintln!("delivered {} bytes, reported {bytes} dropped", data.len());
    assert!(
        writes >= 1 && bytes > 0,
        "a stopped sink and a 64 KiB buffer must drop part of 8 MB, and say so"
    );
    assert_eq!(data.len() as u64 + bytes, n as u64, "delivered + dropped");
    assert!(
        out.stdout.starts_with(data),
        "what was delivered is the start of the write"
    );
}

// ------------------------------------------------------------- fd numbers

/// Runs `lifecycle ARGS` under `bash -c 'ulimit …; exec …'`, with the
/// library (fds in the program's table: `LLT_PRIVATE_FDS=false`, or
/// unshare forbidden as by Docker's seccomp profile) or without.
fn limited(dir: &Path, ulimit: &str, how: Option<&str>, args: &str) -> Run {
    limited_env(dir, ulimit, how, args, &[])
}

/// `limited`, with more `LLT_*` settings.
fn limited_env(
    dir: &Path,
    ulimit: &str,
    how: Option<&str>,
    args: &str,
    extra: &[(&str, &str)],
) -> Run {
    let prog = lifecycle();
    let noshare = if how == Some("seccomp") {
        "noshare \"$0\" "
    } else {
        ""
    };
    let script = format!("ulimit {ulimit} && exec \"$0\" {noshare}{args}");
    let argv = vec![os("bash"), os("-c"), os(script), prog.into_os_string()];
    let r = match how {
        None => run_program(dir, &argv, &[], None, "untapped"),
        Some(h) => {
            let mut lib = Lib::tap_all();
            if h == "env" {
                lib.extra = vec![("LLT_PRIVATE_FDS".into(), "false".into())];
            }
            lib.extra
                .extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            run_program(dir, &argv, &[], Some(&lib), "tapped")
        }
    };
    assert_eq!(
        r.out.code(),
        0,
        "{}: {}",
        r.repro(),
        String::from_utf8_lossy(&r.out.stderr)
    );
    r
}

/// With the library's fds in the program's table and a low fd limit, the
/// program's first open() gets the number it gets without the library,
/// and a program that uses every fd still has its output delivered.
#[test]
fn fallback_fd_mode_leaves_the_programs_numbers_alone() {
    if skip_without("bash") {
        return;
    }
    let t = TestDir::new("fdlimit");
    let plain = limited(&t.sub("plain"), "-n 512", None, "firstfd");
    assert_eq!(plain.out.stdout, b"first line\n3\n");
    for how in ["env", "seccomp"] {
        for ulimit in ["-n 512", "-Sn 512"] {
            let r = limited(&t.sub(&format!("{how}1")), ulimit, Some(how), "firstfd");
            assert_bytes(
                &format!("{how}, ulimit {ulimit}: first open()"),
                &r.out.stdout,
                &plain.out.stdout,
            );
            assert_bytes(
                &format!("{how}, ulimit {ulimit}: target"),
                source(&r.target(), "stdout"),
                &plain.out.stdout,
            );
        }
        // Every fd used: the output still arrives, and the exit is quick.
        for ulimit in ["-n 16", "-Sn 16"] {
            let bare = limited(&t.sub(&format!("{how}b")), ulimit, None, "fill");
            let start = Instant::now();
            let r = limited(&t.sub(&format!("{how}f")), ulimit, Some(how), "fill");
            let took = start.elapsed();
            eprintln!(
                "{how}, ulimit {ulimit}: without the library {:?}, with it {:?} ({took:?})",
                String::from_utf8_lossy(&bare.out.stdout),
                String::from_utf8_lossy(&r.out.stdout)
            );
            assert_bytes(
                &format!("{how}, ulimit {ulimit}: target"),
                source(&r.target(), "stdout"),
                &r.out.stdout,
            );
            let count = |o: &[u8]| -> u32 {
                let s = String::from_utf8_lossy(o);
                s.lines()
                    .nth(1)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            let (without, with) = (count(&bare.out.stdout), count(&r.out.stdout));
            if ulimit.starts_with("-Sn") {
                // Below the hard limit our fd sits above the soft one.
                assert_eq!(with, without, "{how}: fds the program got");
            } else {
                // soft == hard: one number is ours, two with a file
                // target as here (README, Limits).
                assert!(with + 2 >= without, "{how}: {with} fds vs {without}");
            }
            assert!(took < Duration::from_secs(2), "{how}: took {took:?}");
        }
    }
}

/// A program at its fd limit closes one fd and opens its log file, which
/// gets that number: the log is tapped (exact entry and pattern), in every
/// fd mode. The check of the tap file runs inside the program's open and
/// holds no fd (it used to open each directory `O_PATH` in the program's
/// table: at the limit that failed and the log was not tapped; below it
/// the directory fds took the program's lowest free numbers for a moment).
#[test]
fn a_log_file_opened_at_the_fd_limit_is_tapped() {
    if skip_without("bash") {
        return;
    }
    let t = TestDir::new("filllog");
    for how in ["private", "env", "seccomp"] {
        for pattern in [false, true] {
            let dir = t.sub(&format!("{how}{pattern}"));
            let pat = format!("{}/*.log", dir.display());
            let extra: &[(&str, &str)] = if pattern {
                &[("LLT_TAP_FILE", &pat)]
            } else {
                &[]
            };
            let r = limited_env(&dir, "-n 16", Some(how), "filllog", extra);
            assert_eq!(r.out.stdout, b"start\ndone\n", "{how}");
            let log = r.log();
            assert_eq!(log.split(|&c| c == b'\n').count(), 4, "{how}: {log:?}");
            assert_bytes(
                &format!("{how}, pattern {pattern}: the log file's bytes in the target"),
                source(&r.target(), &r.file_source()),
                &log,
            );
        }
    }
}

/// A program at its fd limit with a file target, the library's fds in its
/// table: a fork child opens the target again and its line arrives. (The
/// second reserved number a file target's open needs was given up by the
/// parent's first open and never reserved again, so the child's open
/// failed.)
#[test]
fn a_fork_child_at_the_fd_limit_reopens_the_file_target() {
    if skip_without("bash") {
        return;
    }
    let t = TestDir::new("fillfork");
    for how in ["env", "seccomp"] {
        let r = limited(&t.sub(how), "-n 16", Some(how), "fillfork");
        let want = b"parent before the fork\nchild line\nparent after the child\n";
        assert_eq!(r.out.stdout, want);
        let got = r.target();
        assert_eq!(
            sorted_lines(source(&got, "stdout")),
            sorted_lines(want),
            "{how}: the target has {:?}; {}",
            String::from_utf8_lossy(source(&got, "stdout")),
            r.repro()
        );
    }
}

// ------------------------------------------------- issue-17 review cases

/// A SIGCHLD handler runs in the vfork parent as the system call returns
/// there: its writes are the parent's and are tapped, and an `_exit` in
/// it still delivers what came before.
#[test]
fn a_signal_handler_in_the_vfork_parent_is_the_parent() {
    let t = TestDir::new("vforksig");
    let dir = t.sub("chld");
    let r = tapped_run(
        &dir,
        &os_args(&lifecycle(), &["vfork-sigchld", "2000"]),
        &[],
    );
    let got = r.target();
    let lines = |b: &[u8]| b.split(|&c| c == b'\n').filter(|l| !l.is_empty()).count();
    eprintln!(
        "handler lines: program {}, target {}",
        lines(&r.out.stdout),
        lines(source(&got, "stdout"))
    );
    assert_bytes("stdout", source(&got, "stdout"), &r.out.stdout);
    for i in 0..5 {
        let dir = t.sub(&format!("exit{i}"));
        let r = tapped_run(&dir, &os_args(&lifecycle(), &["vfork-sigexit"]), &[]);
        assert!(r.out.stdout.ends_with(b"handler-exit\n"));
        assert_bytes(
            &format!("run {i}: stdout"),
            source(&r.target(), "stdout"),
            &r.out.stdout,
        );
    }
}

/// The sink is stopped and started again while the program runs; the
/// program then writes and exits at once. The exit's flush finds the old
/// connection broken and reconnects to the new sink before giving up.
#[test]
fn exit_after_a_sink_restart_reconnects() {
    let t = TestDir::new("restart");
    for i in 0..3 {
        let dir = t.sub(&format!("run{i}"));
        let sock = dir.join("s.sock");
        let go = dir.join("go");
        let first = UnixListener::bind(&sock).unwrap();
        let mut cmd = Command::new(lifecycle());
        cmd.arg("restart")
            .arg(&go)
            .env_clear()
            .env("LD_PRELOAD", so_path())
            .env("LLT_TAP_INTO", "3")
            .env("LLT_TARGET", format!("socket:{}", sock.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().unwrap();
        // The first sink takes "first", then goes away with its socket.
        first.set_nonblocking(true).unwrap();
        let start = Instant::now();
        let mut conn = loop {
            match first.accept() {
                Ok((c, _)) => break c,
                Err(_) if start.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(e) => panic!("no connection: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut got = Vec::new();
        let mut data = Vec::new();
        while !data.ends_with(b"first\n") {
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).expect("the first line");
            assert!(n > 0, "connection closed before the first line");
            got.extend_from_slice(&buf[..n]);
            data.clear();
            let mut dec = logtap_wire::Decoder::new();
            let _ = dec.feed(&got, |f| {
                for w in f.writes() {
                    data.extend_from_slice(w.data);
                }
            });
        }
        drop(conn);
        drop(first);
        std::fs::remove_file(&sock).unwrap();
        let rx = Receiver::start(&sock, Duration::ZERO);
        std::fs::write(&go, b"").unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = rx.finish();
        let want: String = (0..10).map(|i| format!("after {i}\n")).collect();
        assert_bytes(
            &format!("run {i}: the new sink"),
            source(&got, "stdout"),
            want.as_bytes(),
        );
    }
}

/// Another thread writes lines while one write of 20 MB of lines is cut
/// into pieces: its lines land between whole lines of the big write, so
/// every line the target holds is one the program wrote.
#[test]
fn big_write_pieces_end_on_line_boundaries() {
    let t = TestDir::new("bigmt");
    let dir = t.sub("run");
    let r = tapped_run(&dir, &os_args(&lifecycle(), &["bigmt", "20000000"]), &[]);
    let got = r.target();
    let out = source(&got, "stdout");
    let a_line = [b'a'; 99];
    let (mut a, mut b) = (0, 0);
    for line in out.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
        if line == b"B-line" {
            b += 1;
        } else if line == a_line {
            a += 1;
        } else {
            panic!(
                "a corrupted line at the target ({} bytes): {:?}…",
                line.len(),
                String::from_utf8_lossy(&line[..line.len().min(120)])
            );
        }
    }
    eprintln!("{a} lines of the big write, {b} of the other thread");
    assert_eq!(a, 200_000);
    // The original output may be a pipe, where the big write is not
    // atomic either: count the other thread's lines there as strings.
    let orig_b = r.out.stdout.windows(7).filter(|w| w == b"B-line\n").count();
    assert_eq!(b, orig_b, "the other thread's lines");
}

/// With the library's fds in the program's table above a low soft fd
/// limit and the target absent (retried every 10 ms), the soft limit a
/// program thread reads stays its own: the library's socket is made (and
/// placed, with the limit raised for one call) once, not on every retry.
#[test]
fn retries_leave_the_fd_limit_alone() {
    if skip_without("bash") {
        return;
    }
    let t = TestDir::new("rlimit");
    let dir = t.sub("run");
    let prog = lifecycle();
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg("ulimit -Sn 64 && exec \"$0\" rlimit 600")
        .arg(&prog)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LD_PRELOAD", so_path())
        .env("LLT_TAP_INTO", "3")
        .env("LLT_PRIVATE_FDS", "false")
        .env("LLT_TARGET_1STCONNECT", "0.01")
        .env("LLT_TARGET_RECONNECT", "0.01")
        .env("LLT_EXIT_TIMEOUT_MS", "100")
        .env(
            "LLT_TARGET",
            format!("socket:{}", dir.join("none.sock").display()),
        )
        .current_dir(&dir);
    let out = run_timeout(cmd, TIMEOUT, "lifecycle rlimit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.code(), 0, "stderr: {err}");
    let n: u64 = err
        .lines()
        .find_map(|l| l.strip_prefix("other soft limit "))
        .unwrap_or_else(|| panic!("no count in {err}"))
        .parse()
        .unwrap();
    eprintln!("getrlimit saw another soft limit {n} times");
    // The first attempt, before the watcher starts, placed the socket;
    // about 60 more attempts follow while it watches.
    assert_eq!(n, 0, "getrlimit saw a raised soft limit {n} times");
}
