//! A program that dies of a signal left at its default action (SIGTERM as
//! `docker stop` sends it, a crash, SIGPIPE) still has every tapped byte
//! delivered, to every kind of target, and dies exactly as it would
//! without the library: same signal, same wait status (core flag
//! included), and the same answers from `sigaction`, `signal` and friends.
//!
//! Real programs: a C program built as the distribution builds
//! (tests/programs/c/fatal.c), coreutils `yes | head -2` under bash,
//! Python; the real logtap-sink for `socket:` targets, a receiver reading
//! as Pantavisor's server does for `pantavisor:` ones. The oracle is the
//! file the program's own stdout was: every byte the kernel took there is
//! at the target, exactly once and in order.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::net::UnixListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::kids::{json_lines, SinkProc};
use common::{c_program, so_path, CVariant, TestDir};

fn fatal() -> PathBuf {
    c_program("fatal", CVariant::Plain)
}

fn collect<R: Read + Send + 'static>(mut r: R) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// A real logtap-sink; what it printed for source `stdout`, as bytes.
struct Sink(SinkProc);

impl Sink {
    fn start(sock: &Path) -> Sink {
        Sink(SinkProc::start(sock))
    }

    /// Stops the sink (SIGTERM: it drains first) and returns the lines of
    /// each source, each with its newline.
    fn stop(self) -> BTreeMap<String, Vec<u8>> {
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: kill on the pid of a process this test started.
        assert_eq!(
            unsafe { libc::kill(self.0.child.id() as i32, libc::SIGTERM) },
            0
        );
        let (status, out, err) = self.0.finish();
        assert!(status.success(), "sink exited with {status}: {err}");
        let mut got: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for v in json_lines(&out) {
            let d = got
                .entry(v["source"].as_str().unwrap().to_string())
                .or_default();
            d.extend_from_slice(v["message"].as_str().unwrap().as_bytes());
            d.push(b'\n');
        }
        got
    }
}

/// Pantavisor's pv-ctrl-log as it reads: one version-0 message per
/// connection, read until EOF.
struct Pantavisor {
    done: Arc<AtomicBool>,
    thread: JoinHandle<BTreeMap<String, Vec<u8>>>,
}

impl Pantavisor {
    fn start(path: &Path) -> Pantavisor {
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let thread = std::thread::spawn(move || {
            let mut got: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            loop {
                let mut s = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(_) if d.load(Ordering::SeqCst) => return got,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                };
                s.set_nonblocking(false).unwrap();
                let mut all = Vec::new();
                s.read_to_end(&mut all).unwrap();
                assert!(all.len() >= 8, "message of {} bytes", all.len());
                let version = i32::from_ne_bytes(all[..4].try_into().unwrap());
                let len = i32::from_ne_bytes(all[4..8].try_into().unwrap());
                assert_eq!(version, 0);
                assert_eq!(len as usize, all.len() - 8);
                let mut parts = all[8..].splitn(4, |&b| b == 0);
                let (_level, _platform, source, data) = (
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                );
                got.entry(String::from_utf8_lossy(source).into_owned())
                    .or_default()
                    .extend_from_slice(data);
            }
        });
        Pantavisor { done, thread }
    }

    fn stop(self) -> BTreeMap<String, Vec<u8>> {
        std::thread::sleep(Duration::from_millis(100));
        self.done.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    File,
    Socket,
    Pantavisor,
}

const KINDS: [Kind; 3] = [Kind::File, Kind::Socket, Kind::Pantavisor];

/// A target of one kind in `dir`, running; `received` stops it and
/// returns what it got per source.
enum Target {
    File(PathBuf),
    Socket(PathBuf, Sink),
    Pantavisor(PathBuf, Pantavisor),
}

impl Target {
    fn start(kind: Kind, dir: &Path) -> Target {
        match kind {
            Kind::File => Target::File(dir.join("target.bin")),
            Kind::Socket => {
                let p = dir.join("sink.sock");
                let s = Sink::start(&p);
                Target::Socket(p, s)
            }
            Kind::Pantavisor => {
                let p = dir.join("pv-ctrl-log");
                let s = Pantavisor::start(&p);
                Target::Pantavisor(p, s)
            }
        }
    }

    fn setting(&self) -> String {
        match self {
            Target::File(p) => format!("file:{}", p.display()),
            Target::Socket(p, _) => format!("socket:{}", p.display()),
            Target::Pantavisor(p, _) => format!("pantavisor:{}", p.display()),
        }
    }

    fn received(self) -> BTreeMap<String, Vec<u8>> {
        match self {
            Target::File(p) => common::decode_target(&p),
            Target::Socket(_, s) => s.stop(),
            Target::Pantavisor(_, s) => s.stop(),
        }
    }
}

/// `cmd` with stdout to `dir/stdout` (the oracle), and, with `target`,
/// the library tapping stdout to it.
fn command(argv: &[&str], dir: &Path, target: Option<&str>) -> Command {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(File::create(dir.join("stdout")).unwrap())
        .stderr(Stdio::piped());
    if let Some(t) = target {
        cmd.env("LD_PRELOAD", so_path())
            .env("LLT_TAP_INTO", "1")
            .env("LLT_TARGET", t);
    }
    // Core dumps on (up to the hard limit), so the core flag of the wait
    // status is compared too; `core` files land in the run's directory.
    // SIGINT and SIGQUIT at their default, as from a terminal: a test run
    // started in the background of a shell without job control inherits
    // them ignored, and the library rightly leaves ignored signals alone.
    // SAFETY: only setrlimit and sigaction (async-signal-safe) between
    // fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut l: libc::rlimit = std::mem::zeroed();
            if libc::getrlimit(libc::RLIMIT_CORE, &mut l) == 0 {
                l.rlim_cur = l.rlim_max;
                libc::setrlimit(libc::RLIMIT_CORE, &l);
            }
            let dfl: libc::sigaction = std::mem::zeroed();
            for sig in [libc::SIGINT, libc::SIGQUIT] {
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
            Ok(())
        });
    }
    cmd
}

/// Waits for `child` (at most a minute); its status and stderr.
fn finish(mut child: Child, what: &str) -> (ExitStatus, String) {
    let err = collect(child.stderr.take().unwrap());
    let deadline = Instant::now() + common::TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what}: HANG");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    (
        status,
        String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
    )
}

/// Runs `argv` in a fresh directory under `dir`, without the library or
/// with it tapping stdout to a target of `kind`; returns the wait status,
/// what the program's stdout got, and what the target got for `stdout`.
/// `kill` sends that signal after that many ms.
fn run(
    dir: &TestDir,
    name: &str,
    argv: &[&str],
    kind: Option<Kind>,
    kill: Option<(i32, u64)>,
) -> (ExitStatus, Vec<u8>, Vec<u8>) {
    run_env(dir, name, argv, kind, kill, &[])
}

/// `run` with more environment variables.
fn run_env(
    dir: &TestDir,
    name: &str,
    argv: &[&str],
    kind: Option<Kind>,
    kill: Option<(i32, u64)>,
    env: &[(&str, &str)],
) -> (ExitStatus, Vec<u8>, Vec<u8>) {
    let d = dir.sub(name);
    let target = kind.map(|k| Target::start(k, &d));
    let child = command(argv, &d, target.as_ref().map(Target::setting).as_deref())
        .envs(env.iter().copied())
        .spawn()
        .unwrap();
    if let Some((sig, ms)) = kill {
        std::thread::sleep(Duration::from_millis(ms));
        // SAFETY: kill on the pid of a process this test started.
        unsafe { libc::kill(child.id() as i32, sig) };
    }
    let (status, err) = finish(child, name);
    let stdout = std::fs::read(d.join("stdout")).unwrap();
    let mut got = target.map(Target::received).unwrap_or_default();
    let notices = String::from_utf8_lossy(&got.remove("logtap").unwrap_or_default()).into_owned();
    DROPPED.with(|d| d.set(dropped_bytes(&notices)));
    let got = got.remove("stdout").unwrap_or_default();
    assert!(
        !err.contains("logtap"),
        "{name}: the library printed: {err}"
    );
    (status, stdout, got)
}

/// The lines, each cut before " of pid " (the writer's pid differs
/// between runs).
fn without_pids(b: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(b)
        .lines()
        .map(|l| l.split(" of pid ").next().unwrap().to_string())
        .collect()
}

std::thread_local! {
    /// Bytes the last `run` on this thread was told were dropped.
    static DROPPED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The sum of `dropped bytes=N` in the library's drop notices.
fn dropped_bytes(notices: &str) -> u64 {
    notices
        .split("dropped bytes=")
        .skip(1)
        .map(|r| {
            r.split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

fn lines(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

/// `same`, but for a program whose own handler ends it (`_exit`) on a
/// signal: when the signal lands while a tapped write is in its system
/// call, the handler runs as the call returns, before the library has
/// copied that write (README, Limits). With a shared ring the write was
/// in its thread's intent slot and the sink delivers it when it recovers
/// the ring, after what the handler wrote; with a private ring it is
/// lost. So the target may hold the one line just before the handler's
/// `last` words after them instead, or lack it; nothing else may differ.
#[track_caller]
fn same_but_interrupted(what: &str, got: &[u8], stdout: &[u8], last: &[u8]) {
    if got == stdout {
        return same(what, got, stdout);
    }
    let body = stdout.strip_suffix(last).unwrap_or(stdout);
    let cut = body[..body.len().saturating_sub(1)]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let mut without = body[..cut].to_vec();
    without.extend_from_slice(last);
    let mut moved = without.clone();
    moved.extend_from_slice(&body[cut..]);
    let how = if got == moved { "after" } else { "without" };
    eprintln!(
        "{what}: the target has the write before the handler's {how} the handler's: {:?}",
        String::from_utf8_lossy(&body[cut..])
    );
    same(what, got, if got == moved { &moved } else { &without });
}

/// The target holds exactly what the program's stdout got.
#[track_caller]
fn same(what: &str, got: &[u8], stdout: &[u8]) {
    assert!(lines(stdout) > 0, "{what}: the program wrote nothing");
    if let Some(d) = common::diff(got, stdout) {
        panic!("{what}: target differs from the program's stdout: {d}");
    }
}

/// A program writing a line every millisecond, killed by SIGTERM whose
/// action is the default (`docker stop`): every line its stdout file got
/// is at the target once, and it dies of SIGTERM. `redefault`: the program
/// first set a handler and then `SIG_DFL` again, so the library's handler
/// was put back by the `signal` hook.
#[test]
fn sigterm_at_its_default_delivers_every_line() {
    let dir = TestDir::new("sig-term");
    let prog = fatal();
    let prog = prog.to_str().unwrap();
    for kind in KINDS {
        for (i, mode) in ["lines", "redefault"].into_iter().enumerate() {
            // Different moments of the line-per-ms cycle.
            let ms = 150 + 37 * i as u64 + 11 * kind as u64;
            let name = format!("{kind:?}-{mode}");
            let (status, stdout, got) = run(
                &dir,
                &name,
                &[prog, mode],
                Some(kind),
                Some((libc::SIGTERM, ms)),
            );
            assert_eq!(status.signal(), Some(libc::SIGTERM), "{name}: {status}");
            same(&name, &got, &stdout);
        }
    }
}

/// A program killed while it writes flat out is usually inside its write
/// system call, and the signal is delivered as that call returns, before
/// the hook stored the bytes: the library then stores them first and dies
/// after. `write` (the fd hooks) and `seq` (glibc's stdio), to a file and
/// to logtap-sink.
#[test]
fn flat_out_writers_killed_mid_write_lose_nothing() {
    let dir = TestDir::new("sig-flood");
    let prog = fatal();
    let prog = prog.to_str().unwrap();
    let seq = common::which("seq").expect("seq (coreutils)");
    let seq = seq.to_str().unwrap();
    let runs: [(&[&str], Kind); 4] = [
        (&[prog, "flood"], Kind::File),
        (&[seq, "1000000000"], Kind::File),
        (&[prog, "flood"], Kind::Socket),
        (&[seq, "1000000000"], Kind::Socket),
    ];
    for (argv, kind) in runs {
        for i in 0..3u64 {
            let name = format!(
                "{}-{kind:?}-{i}",
                if argv[0] == prog { "flood" } else { "seq" }
            );
            let ms = if kind == Kind::File {
                40 + 23 * i
            } else {
                100 + 23 * i
            };
            // A small buffer: what is left at the signal must reach the
            // sink within the exit timeout, also on a loaded machine.
            let (status, stdout, got) = run_env(
                &dir,
                &name,
                argv,
                Some(kind),
                Some((libc::SIGTERM, ms)),
                &[("LLT_EXIT_TIMEOUT_MS", "30000")],
            );
            assert_eq!(status.signal(), Some(libc::SIGTERM), "{name}: {status}");
            let dropped = DROPPED.with(|d| d.get());
            // logtap-sink prints a last partial line as a line of its own.
            let mut want = stdout.clone();
            if kind == Kind::Socket && want.last() != Some(&b'\n') {
                want.push(b'\n');
            }
            if dropped == 0 {
                same(&name, &got, &want);
            } else {
                // The sink could not keep up with a writer this fast on a
                // loaded machine and the writer stopped waiting for it:
                // whole writes were dropped, and the sink was told exactly
                // how many bytes.
                assert_eq!(
                    got.len() as u64 + dropped,
                    want.len() as u64,
                    "{name}: {} bytes at the target and {dropped} reported dropped of {}",
                    got.len(),
                    stdout.len()
                );
            }
        }
    }
}

/// A program blocked writing to a full pipe nobody reads, killed by
/// SIGTERM: it dies at once (the write it was blocked in is not resumed),
/// and the target holds exactly what the pipe got.
#[test]
fn a_write_blocked_on_a_full_pipe_is_not_resumed() {
    let dir = TestDir::new("sig-pipe-full");
    let prog = fatal();
    let d = dir.sub("run");
    let target = d.join("target.bin");
    let mut child = command(
        &[prog.to_str().unwrap(), "flood"],
        &d,
        Some(&format!("file:{}", target.display())),
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    // SAFETY: kill on the pid of a process this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut pipe = child.stdout.take().unwrap();
    let (status, _) = finish(child, "pipe-full");
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "died {:?} after SIGTERM",
        start.elapsed()
    );
    let mut in_pipe = Vec::new();
    pipe.read_to_end(&mut in_pipe).unwrap();
    let got = common::decode_target(&target)
        .remove("stdout")
        .unwrap_or_default();
    same("pipe-full", &got, &in_pipe);
}

/// Runs `fatal MODE` with stdout a pipe nobody reads and a file target,
/// sends SIGTERM after `ms`; returns how long it took to die after it, its
/// status, what the pipe got and what the target got.
fn killed_while_stuck(
    dir: &TestDir,
    mode: &str,
    ms: u64,
) -> (Duration, ExitStatus, Vec<u8>, Vec<u8>) {
    let prog = fatal();
    let d = dir.sub(mode);
    let target = d.join("target.bin");
    let mut child = command(
        &[prog.to_str().unwrap(), mode],
        &d,
        Some(&format!("file:{}", target.display())),
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    let start = Instant::now();
    // SAFETY: kill on the pid of a process this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("{mode}: still alive 10 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let took = start.elapsed();
    let mut in_pipe = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut in_pipe)
        .unwrap();
    let got = common::decode_target(&target)
        .remove("stdout")
        .unwrap_or_default();
    (took, status, in_pipe, got)
}

/// A SIGTERM noted inside a tapped call that then never finishes still
/// ends the process promptly: stdio retrying a short write into a pipe
/// nobody reads blocks again (it used to wait for a reader forever), and a
/// program's SIGALRM handler that jumped out of a blocked write left the
/// call unfinished (SIGTERM used to be held for good).
#[test]
fn a_noted_signal_ends_a_call_that_never_finishes() {
    let dir = TestDir::new("sig-stuck");
    let (took, status, in_pipe, got) = killed_while_stuck(&dir, "bigstdio", 500);
    assert_eq!(status.signal(), Some(libc::SIGTERM), "bigstdio: {status}");
    assert!(
        took < Duration::from_secs(3),
        "bigstdio: died {took:?} after SIGTERM"
    );
    assert!(!in_pipe.is_empty(), "bigstdio: wrote nothing");
    // The call the backstop ended never stored its short write: what the
    // target holds is what the pipe got up to there.
    assert!(
        in_pipe.starts_with(&got),
        "bigstdio: the target is not a prefix of the pipe"
    );
    let (took, status, _, _) = killed_while_stuck(&dir, "jumped", 2500);
    assert_eq!(status.signal(), Some(libc::SIGTERM), "jumped: {status}");
    assert!(
        took < Duration::from_secs(3),
        "jumped: died {took:?} after SIGTERM"
    );
}

/// Crashes and `abort`: the lines written before are at the target, and
/// the wait status (signal and core flag) is the one of a run without the
/// library.
#[test]
fn crashes_deliver_the_last_lines_with_the_same_status() {
    let dir = TestDir::new("sig-crash");
    let prog = fatal();
    let prog = prog.to_str().unwrap();
    for (mode, sig) in [
        ("segv", libc::SIGSEGV),
        ("raise", libc::SIGABRT),
        ("abort", libc::SIGABRT),
        ("fpe", libc::SIGFPE),
        ("bus", libc::SIGBUS),
        ("fortify", libc::SIGABRT),
    ] {
        let argv = [prog, mode, "300", "more than four bytes"];
        let (plain, plain_out, _) = run(&dir, &format!("{mode}-plain"), &argv, None, None);
        assert_eq!(plain.signal(), Some(sig), "{mode} without the library");
        for kind in KINDS {
            if kind != Kind::File && !matches!(mode, "segv" | "raise") {
                continue;
            }
            let name = format!("{mode}-{kind:?}");
            let (status, stdout, got) = run(&dir, &name, &argv, Some(kind), None);
            assert_eq!(
                status.into_raw(),
                plain.into_raw(),
                "{name}: wait status {status} (core dumped: {}), without the library {plain} (core dumped: {})",
                status.core_dumped(),
                plain.core_dumped()
            );
            assert_eq!(
                without_pids(&stdout),
                without_pids(&plain_out),
                "{name}: the program's own output changed"
            );
            same(&name, &got, &stdout);
        }
    }
}

/// What bash reports (`$?` = 128 + N, "Segmentation fault", "Aborted")
/// is the same with the library.
#[test]
fn bash_sees_the_same_exit_status() {
    let dir = TestDir::new("sig-bash");
    let prog = fatal();
    for mode in ["segv", "raise", "fpe"] {
        let mut outs = Vec::new();
        for with in [false, true] {
            let d = dir.sub(&format!("{mode}-{with}"));
            let target = format!("file:{}", d.join("target.bin").display());
            let script = format!(
                "ulimit -c 0; {} {} {mode} 20 >out; echo \"status $?\"",
                if with {
                    format!(
                        "LD_PRELOAD={} LLT_TAP_INTO=1 LLT_TARGET={target}",
                        so_path().display()
                    )
                } else {
                    String::new()
                },
                prog.display()
            );
            let out = Command::new("bash")
                .args(["-c", &script])
                .current_dir(&d)
                .output()
                .unwrap();
            let got = common::decode_target(&d.join("target.bin"))
                .remove("stdout")
                .unwrap_or_default();
            if with {
                same(mode, &got, &std::fs::read(d.join("out")).unwrap());
            }
            // bash's message names the process: keep only its kind.
            let err = String::from_utf8_lossy(&out.stderr)
                .split_whitespace()
                .filter(|w| w.chars().all(char::is_alphabetic))
                .collect::<Vec<_>>()
                .join(" ");
            outs.push((String::from_utf8_lossy(&out.stdout).into_owned(), err));
        }
        assert_eq!(outs[0], outs[1], "{mode}: without, then with the library");
        assert!(outs[0].0.starts_with("status 1"), "{mode}: {:?}", outs[0]);
    }
}

/// `yes | head -2`: yes dies of SIGPIPE when head has gone; what its
/// writes returned for is at the target (it used to get nothing), and
/// the pipeline's statuses are unchanged.
#[test]
fn yes_into_head_delivers_what_yes_wrote() {
    if common::skip_without("yes") {
        return;
    }
    let dir = TestDir::new("sig-yes");
    for kind in [Kind::File, Kind::Socket] {
        let d = dir.sub(&format!("{kind:?}"));
        let target = Target::start(kind, &d);
        let mut outs = Vec::new();
        for with in [false, true] {
            let pre = if with {
                format!(
                    "env LD_PRELOAD={} LLT_TAP_INTO=1 LLT_TARGET={} ",
                    so_path().display(),
                    target.setting()
                )
            } else {
                String::new()
            };
            let out = Command::new("bash")
                .args([
                    "-c",
                    &format!("{pre}yes | head -2; echo \"statuses ${{PIPESTATUS[*]}}\""),
                ])
                .current_dir(&d)
                .output()
                .unwrap();
            outs.push((out.stdout, out.stderr));
        }
        assert_eq!(outs[0], outs[1], "{kind:?}: without, then with the library");
        assert_eq!(
            String::from_utf8_lossy(&outs[0].0),
            "y\ny\nstatuses 141 0\n"
        );
        let got = target.received().remove("stdout").unwrap_or_default();
        assert!(
            got.len() >= 4 && got.chunks(2).all(|c| c == b"y\n"),
            "{kind:?}: yes's tapped output at the target: {} bytes {:?}",
            got.len(),
            &got[..got.len().min(40)]
        );
    }
}

/// What `sigaction`, `signal`, `sysv_signal`, `bsd_signal`, `ssignal`,
/// `sigset`, `sigignore` and `siginterrupt` return (values, old
/// dispositions with their flags and masks, errno, invalid signals) is
/// the same with the library, though it holds a handler of its own for
/// every signal the program leaves at SIG_DFL.
#[test]
fn the_program_sees_the_dispositions_it_set() {
    let dir = TestDir::new("sig-view");
    let prog = fatal();
    let prog = prog.to_str().unwrap();
    let (plain, want, _) = run(&dir, "plain", &[prog, "view"], None, None);
    assert!(plain.success());
    assert!(lines(&want) > 500);
    let (status, out, _) = run(&dir, "with", &[prog, "view"], Some(Kind::File), None);
    assert!(status.success());
    if let Some(d) = common::line_diff(&out, &want) {
        panic!("sigaction/signal results differ: {d}");
    }
    common::assert_bytes("view", &out, &want);
    // And the library's handler is really there (a difference the program
    // can see in /proc/self/status: SigCgt lists the signals caught).
    let d = dir.sub("proc");
    let sigcgt = |target: Option<&str>| {
        let st = command(&["grep", "-E", "^SigCgt", "/proc/self/status"], &d, target)
            .status()
            .unwrap();
        assert!(st.success());
        let s = std::fs::read_to_string(d.join("stdout")).unwrap();
        u64::from_str_radix(s.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    let term = 1u64 << (libc::SIGTERM - 1);
    assert_eq!(sigcgt(None) & term, 0);
    assert_ne!(sigcgt(Some("file:/nonexistent/target")) & term, 0);
}

/// Python asks for every signal's disposition at start (its
/// `signal.getsignal` table): the same with the library. A Python
/// program killed by SIGTERM has its lines delivered.
#[test]
fn python_sees_the_same_and_delivers_on_sigterm() {
    let Some(py) = common::python3() else {
        return;
    };
    let py = py.to_str().unwrap();
    let dir = TestDir::new("sig-py");
    let table = "import signal\nfor s in sorted(signal.valid_signals()):\n    print(int(s), signal.getsignal(s))\n";
    let (_, want, _) = run(&dir, "plain", &[py, "-c", table], None, None);
    let (_, got, _) = run(&dir, "with", &[py, "-c", table], Some(Kind::File), None);
    assert!(lines(&want) > 30);
    common::assert_bytes("python's signal table", &got, &want);

    let writer = "import os, time\ni = 0\nwhile True:\n    print('python line', i, flush=True)\n    i += 1\n    time.sleep(0.001)\n";
    for kind in [Kind::File, Kind::Socket] {
        let name = format!("term-{kind:?}");
        let (status, stdout, got) = run(
            &dir,
            &name,
            &[py, "-c", writer],
            Some(kind),
            Some((libc::SIGTERM, 400)),
        );
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{name}: {status}");
        same(&name, &got, &stdout);
    }
}

/// A program with its own SIGTERM handler keeps it (the library steps
/// aside: the handler runs and exits 3), and a signal it left at the
/// default (SIGINT) still gets its lines delivered.
#[test]
fn a_program_handler_is_left_alone() {
    let dir = TestDir::new("sig-own");
    let prog = fatal();
    let prog = prog.to_str().unwrap();
    for kind in [Kind::File, Kind::Socket] {
        let name = format!("own-term-{kind:?}");
        let (status, stdout, got) = run(
            &dir,
            &name,
            &[prog, "own"],
            Some(kind),
            Some((libc::SIGTERM, 200)),
        );
        assert_eq!(status.code(), Some(3), "{name}: {status}");
        assert!(stdout.ends_with(b"caught SIGTERM\n"), "{name}");
        same_but_interrupted(&name, &got, &stdout, b"caught SIGTERM\n");
        let name = format!("own-int-{kind:?}");
        let (status, stdout, got) = run(
            &dir,
            &name,
            &[prog, "own"],
            Some(kind),
            Some((libc::SIGINT, 200)),
        );
        assert_eq!(status.signal(), Some(libc::SIGINT), "{name}: {status}");
        same(&name, &got, &stdout);
    }
}

/// Two threads dying of SIGTERM at the same moment: one flush, no
/// deadlock, every line once.
#[test]
fn two_threads_dying_at_once() {
    let dir = TestDir::new("sig-threads");
    let prog = fatal();
    let prog = prog.to_str().unwrap();
    for (i, kind) in [Kind::File, Kind::Socket, Kind::File]
        .into_iter()
        .enumerate()
    {
        let name = format!("threads-{kind:?}-{i}");
        let (status, stdout, got) = run(&dir, &name, &[prog, "threads", "2000"], Some(kind), None);
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{name}: {status}");
        assert_eq!(lines(&stdout), 4000, "{name}");
        // Two writers: each one's lines in order, both complete.
        if let Some(d) = common::line_diff(&got, &stdout) {
            panic!("{name}: {d}");
        }
    }
}

/// A vfork child (on its parent's memory) that sets SIG_DFL and dies of
/// SIGTERM goes straight to the default action without touching the
/// parent's buffer or view; the parent then dies of SIGTERM with every
/// line delivered.
#[test]
fn a_vfork_child_dies_without_touching_the_parent() {
    let dir = TestDir::new("sig-vfork");
    let prog = fatal();
    let prog = prog.to_str().unwrap();
    for kind in [Kind::File, Kind::Socket] {
        let name = format!("vfork-{kind:?}");
        let (status, stdout, got) = run(&dir, &name, &[prog, "vfork", "200"], Some(kind), None);
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{name}: {status}");
        let text = String::from_utf8_lossy(&stdout);
        assert!(text.contains("child signal 15\n"), "{name}: {text}");
        assert_eq!(lines(&stdout), 401, "{name}");
        same(&name, &got, &stdout);
    }
}

/// Suppressed stdout with the target away: the library holds the lines
/// for the target, so a SIGTERM used to lose every one of them (the
/// program's stdout stayed empty). Now they go to the original stdout
/// before the program dies, complete and in order, as exit's spill does.
#[test]
fn suppressed_lines_held_for_an_absent_target_reach_stdout() {
    let dir = TestDir::new("sig-spill");
    let prog = fatal();
    let prog = prog.to_str().unwrap();
    let d = dir.sub("run");
    let mut cmd = command(
        &[prog, "lines"],
        &d,
        Some(&format!("socket:{}", d.join("nobody.sock").display())),
    );
    cmd.env("LLT_SUPPRESS_STDOUT", "true");
    let child = cmd.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill on the pid of a process this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let (status, err) = finish(child, "spill");
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}: {err}");
    let out = std::fs::read(d.join("stdout")).unwrap();
    let numbers: Vec<usize> = without_pids(&out)
        .iter()
        .map(|l| l.strip_prefix("line ").unwrap().parse().unwrap())
        .collect();
    assert!(numbers.len() > 50, "{} lines on stdout", numbers.len());
    assert_eq!(numbers, (0..numbers.len()).collect::<Vec<_>>());
}

/// With the target away (no sink listening, a file target in a missing
/// directory) the program dies at once, of its signal.
#[test]
fn with_the_target_away_the_program_dies_at_once() {
    let dir = TestDir::new("sig-away");
    let prog = fatal();
    let prog = prog.to_str().unwrap();
    let d = dir.sub("run");
    for target in [
        format!("socket:{}", d.join("nobody.sock").display()),
        format!("file:{}", d.join("missing/target.bin").display()),
    ] {
        for (mode, sig) in [("lines", libc::SIGTERM), ("lines", libc::SIGINT)] {
            let mut child = command(&[prog, mode], &d, Some(&target)).spawn().unwrap();
            std::thread::sleep(Duration::from_millis(300));
            let start = Instant::now();
            // SAFETY: kill on the pid of a process this test started.
            unsafe { libc::kill(child.id() as i32, sig) };
            let status = child.wait().unwrap();
            let took = start.elapsed();
            assert_eq!(status.signal(), Some(sig), "{target}: {status}");
            assert!(
                took < Duration::from_millis(500),
                "{target}: died {took:?} after the signal"
            );
        }
    }
}
