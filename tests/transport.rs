//! Delivery tests (issue 3): real programs under the library, writing to a
//! socket served by a receiver in this test that decodes frames with the
//! shared codec, and to files decoded by an independent decoder.
//!
//! Each stress line is "<tag> <seq>\n"; the checks are that every line
//! arrived exactly once and, per writer, in order.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::kids::{json_lines, Kid, SinkProc};

fn so() -> PathBuf {
    common::so_path()
}

fn stress() -> PathBuf {
    common::kids::stress("transport")
}

fn tmpdir(name: &str) -> PathBuf {
    common::kids::tmpdir("tr", name)
}

/// Frames received, per peer pid and source, in arrival order.
#[derive(Default)]
struct Store {
    /// (peer pid, connection number in accept order, source): a process
    /// that reconnects sends its later bytes on a later connection, whose
    /// reader thread may store them before the earlier one's last bytes.
    data: BTreeMap<(i32, usize, String), Vec<u8>>,
    frames: usize,
    connections: usize,
    errors: Vec<String>,
}

struct Receiver {
    path: PathBuf,
    paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    abrupt: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn peer_pid(s: &UnixStream) -> i32 {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: valid out-parameters for SO_PEERCRED.
    unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        );
    }
    cred.pid
}

impl Receiver {
    fn start(path: &Path, store: Arc<Mutex<Store>>) -> Receiver {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let paused = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let abrupt = Arc::new(AtomicBool::new(false));
        let (p2, s2, a2, st2) = (paused.clone(), stop.clone(), abrupt.clone(), store.clone());
        let acceptor = std::thread::spawn(move || {
            let mut conns = Vec::new();
            let mut accepted = 0usize;
            // On stop, connections already in the backlog are still taken
            // (they may carry data), as logtap-sink does.
            loop {
                let stopping = s2.load(Ordering::SeqCst);
                match listener.accept() {
                    Ok((sock, _)) => {
                        let (p3, s3, a3, st3) = (p2.clone(), s2.clone(), a2.clone(), st2.clone());
                        accepted += 1;
                        let n = accepted;
                        conns.push(std::thread::spawn(move || serve(sock, n, p3, s3, a3, st3)));
                    }
                    Err(_) if stopping => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            drop(listener);
            for c in conns {
                c.join().unwrap();
            }
        });
        Receiver {
            path: path.to_path_buf(),
            paused,
            stop,
            abrupt,
            threads: vec![acceptor],
        }
    }

    /// Stops reading now (the kernel buffers fill up) and resumes after `d`.
    fn pause_for(&self, d: Duration) -> std::thread::JoinHandle<()> {
        self.paused.store(true, Ordering::SeqCst);
        let paused = self.paused.clone();
        std::thread::spawn(move || {
            std::thread::sleep(d);
            paused.store(false, Ordering::SeqCst);
        })
    }

    /// Stops like logtap-sink on SIGTERM: refuse new data, read what is
    /// queued, close. With `abrupt`, like SIGKILL: drop everything.
    fn stop(mut self, abrupt: bool) {
        self.abrupt.store(abrupt, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(
    mut sock: UnixStream,
    conn: usize,
    paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    abrupt: Arc<AtomicBool>,
    store: Arc<Mutex<Store>>,
) {
    let pid = peer_pid(&sock);
    store.lock().unwrap().connections += 1;
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut dec = logtap_wire::Decoder::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut draining = false;
    loop {
        if stop.load(Ordering::SeqCst) && !draining {
            if abrupt.load(Ordering::SeqCst) {
                return;
            }
            // New sends now fail with EPIPE; what is queued can still be read.
            let _ = sock.shutdown(std::net::Shutdown::Read);
            sock.set_nonblocking(true).unwrap();
            draining = true;
        }
        if paused.load(Ordering::SeqCst) && !draining {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let mut st = store.lock().unwrap();
                let st = &mut *st;
                let r = dec.feed(&buf[..n], |f| {
                    st.frames += 1;
                    let src = String::from_utf8_lossy(f.source).into_owned();
                    let d = st.data.entry((pid, conn, src)).or_default();
                    for w in f.writes() {
                        d.extend_from_slice(w.data);
                    }
                });
                if let Err(e) = r {
                    st.errors.push(format!("pid {pid}: {e}"));
                    return;
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if draining {
                    break;
                }
            }
            Err(_) => break,
        }
    }
}

/// Reads a child's pipe to the end on a thread of its own.
fn drain<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        v
    })
}

fn run(cmd: &mut Command, timeout: Duration) -> std::process::Output {
    let mut child = Kid::spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()));
    let to = drain(child.stdout.take().unwrap());
    let te = drain(child.stderr.take().unwrap());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > timeout {
            child.kill_group();
            panic!("program hung for more than {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    std::process::Output {
        status,
        stdout: to.join().unwrap(),
        stderr: te.join().unwrap(),
    }
}

fn tapped(target: &str) -> Command {
    let mut c = Command::new(stress());
    c.env("LD_PRELOAD", so())
        .env("LLT_TAP_INTO", "3")
        .env("LLT_TARGET", target)
        .env_remove("LLT_SUPPRESS_STDOUT");
    c
}

/// Checks "<tag> <seq>" lines: each tag's sequence is 0..n, in order, once.
fn check_lines(data: &[u8], expect: &HashMap<String, u64>) {
    let mut next: HashMap<String, u64> = HashMap::new();
    for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = std::str::from_utf8(line).unwrap();
        let (tag, seq) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let seq: u64 = seq.parse().unwrap_or_else(|_| panic!("bad line {line:?}"));
        let n = next.entry(tag.to_string()).or_insert(0);
        assert_eq!(
            seq, *n,
            "tag {tag}: expected seq {} got {seq} (lost, duplicated or reordered)",
            *n
        );
        *n += 1;
    }
    for (tag, n) in expect {
        assert_eq!(
            next.get(tag).copied().unwrap_or(0),
            *n,
            "tag {tag}: wrong number of lines"
        );
    }
}

/// Compares bytes, reporting lengths and the first difference, not the data.
#[track_caller]
fn same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        let ctx = |v: &[u8]| {
            String::from_utf8_lossy(&v[at.saturating_sub(20)..(at + 20).min(v.len())]).into_owned()
        };
        panic!(
            "{what}: got {} bytes, want {}; first difference at {at}: got {:?} want {:?}",
            got.len(),
            want.len(),
            ctx(got),
            ctx(want)
        );
    }
}

fn all_source(store: &Store, source: &str) -> Vec<u8> {
    let mut v = Vec::new();
    for ((_, _, s), d) in &store.data {
        if s == source {
            v.extend_from_slice(d);
        }
    }
    v
}

/// A receiver on a new socket in `dir`: (LLT_TARGET value, store, receiver).
fn receiver_in(dir: &Path) -> (String, Arc<Mutex<Store>>, Receiver) {
    let (path, target) = sock_env(dir);
    let store = Arc::new(Mutex::new(Store::default()));
    let rx = Receiver::start(&path, store.clone());
    (target, store, rx)
}

fn sock_env(dir: &Path) -> (PathBuf, String) {
    let p = dir.join("s.sock");
    let t = format!("socket:{}", p.display());
    (p, t)
}

#[test]
fn threads_write_every_line_once_in_order() {
    let dir = tmpdir("thw");
    let (target, store, rx) = receiver_in(&dir);
    let out = run(
        tapped(&target).args(["threads-write", "8", "20000"]),
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    rx.stop(false);
    let st = store.lock().unwrap();
    assert!(st.errors.is_empty(), "{:?}", st.errors);
    let expect = (0..8).map(|t| (format!("t{t}"), 20000)).collect();
    check_lines(&all_source(&st, "stdout"), &expect);
    check_lines(&out.stdout, &expect);
}

#[test]
fn threads_printf_every_line_once_in_order() {
    let dir = tmpdir("thp");
    let (target, store, rx) = receiver_in(&dir);
    let out = run(
        tapped(&target).args(["threads-printf", "4", "20000"]),
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    rx.stop(false);
    let st = store.lock().unwrap();
    let expect = (0..4).map(|t| (format!("p{t}"), 20000)).collect();
    check_lines(&all_source(&st, "stdout"), &expect);
    same_bytes(
        &all_source(&st, "stdout"),
        &out.stdout,
        "target vs the program's stdout",
    );
}

#[test]
fn forked_children_are_attributed_and_complete() {
    let dir = tmpdir("fork");
    let (target, store, rx) = receiver_in(&dir);
    let out = run(
        tapped(&target).args(["fork", "50", "1000"]),
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    rx.stop(false);
    let st = store.lock().unwrap();
    let expect = (0..50).map(|c| (format!("c{c}"), 1000)).collect();
    check_lines(&all_source(&st, "stdout"), &expect);
    // Each child's lines come from its own pid.
    let mut tags_per_pid: HashMap<i32, std::collections::HashSet<String>> = HashMap::new();
    for ((pid, _, src), d) in &st.data {
        if src != "stdout" {
            continue;
        }
        for l in d.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let tag = std::str::from_utf8(l)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_string();
            tags_per_pid.entry(*pid).or_default().insert(tag);
        }
    }
    assert_eq!(tags_per_pid.len(), 50, "expected 50 writing pids");
    assert!(
        tags_per_pid.values().all(|t| t.len() == 1),
        "a pid carried another child's lines"
    );
}

#[test]
fn fork_while_threads_write() {
    let dir = tmpdir("forkth");
    let (target, store, rx) = receiver_in(&dir);
    let out = run(
        tapped(&target).args(["fork-threads", "4", "20000", "20"]),
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    rx.stop(false);
    let st = store.lock().unwrap();
    let mut expect: HashMap<String, u64> = (0..4).map(|t| (format!("t{t}"), 20000)).collect();
    expect.extend((0..20).map(|c| (format!("f{c}"), 100)));
    check_lines(&all_source(&st, "stdout"), &expect);
}

#[test]
fn signal_handler_writes_do_not_deadlock_or_lose() {
    let dir = tmpdir("sig");
    let (target, store, rx) = receiver_in(&dir);
    let out = run(
        tapped(&target).args(["sigalrm", "200000"]),
        Duration::from_secs(120),
    );
    assert!(out.status.success());
    rx.stop(false);
    let st = store.lock().unwrap();
    let expect = [("w".to_string(), 200000)].into_iter().collect();
    check_lines(&all_source(&st, "stdout"), &expect);
    let err = all_source(&st, "stderr");
    same_bytes(&err, &out.stderr, "target vs the program's stderr");
    let sigs = err
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"sig "))
        .count();
    assert!(sigs > 0, "the handler never ran");
}

#[test]
fn sink_paused_then_resumed_gets_everything() {
    let dir = tmpdir("pause");
    let (target, store, rx) = receiver_in(&dir);
    let resume = rx.pause_for(Duration::from_millis(1500));
    // The program is done long before the sink resumes: its exit waits
    // (bounded by LLT_EXIT_TIMEOUT_MS) for the sink to take the rest.
    let out = run(
        tapped(&target)
            .env("LLT_EXIT_TIMEOUT_MS", "5000")
            .args(["lines", "100000"]),
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    resume.join().unwrap();
    rx.stop(false);
    let st = store.lock().unwrap();
    check_lines(
        &all_source(&st, "stdout"),
        &[("l".to_string(), 100000)].into_iter().collect(),
    );
}

#[test]
fn sink_started_late_gets_everything() {
    let dir = tmpdir("late");
    let (path, target) = sock_env(&dir);
    let store = Arc::new(Mutex::new(Store::default()));
    let (p2, s2) = (path.clone(), store.clone());
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        Receiver::start(&p2, s2)
    });
    let out = run(
        tapped(&target)
            .env("LLT_EXIT_TIMEOUT_MS", "5000")
            .args(["lines", "20000", "50"]),
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    let rx = starter.join().unwrap();
    rx.stop(false);
    let st = store.lock().unwrap();
    check_lines(
        &all_source(&st, "stdout"),
        &[("l".to_string(), 20000)].into_iter().collect(),
    );
}

#[test]
fn sink_restarted_mid_stream_loses_nothing() {
    let dir = tmpdir("restart");
    let (path, target) = sock_env(&dir);
    let store = Arc::new(Mutex::new(Store::default()));
    let rx = Receiver::start(&path, store.clone());
    let (p2, s2) = (path.clone(), store.clone());
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        rx.stop(false);
        std::thread::sleep(Duration::from_millis(300));
        Receiver::start(&p2, s2)
    });
    let out = run(
        tapped(&target)
            .env("LLT_EXIT_TIMEOUT_MS", "5000")
            .env("LLT_TARGET_RECONNECT", "0.1")
            .args(["lines", "50000", "20"]),
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    let rx = restarter.join().unwrap();
    rx.stop(false);
    let st = store.lock().unwrap();
    assert!(st.connections >= 2, "the program never reconnected");
    check_lines(
        &all_source(&st, "stdout"),
        &[("l".to_string(), 50000)].into_iter().collect(),
    );
}

/// The program writes paced lines while `killer` takes the sink away: it
/// must exit normally (no SIGPIPE) with all of its own output.
fn survives_sink_going_away<T>(target: &str, killer: std::thread::JoinHandle<T>) {
    let out = run(
        tapped(target)
            .env("LLT_EXIT_TIMEOUT_MS", "200")
            .args(["lines", "20000", "30"]),
        Duration::from_secs(60),
    );
    killer.join().unwrap();
    assert!(
        out.status.success(),
        "program did not exit normally: {:?}",
        out.status
    );
    check_lines(
        &out.stdout,
        &[("l".to_string(), 20000)].into_iter().collect(),
    );
}

#[test]
fn sink_killed_program_exits_normally() {
    let dir = tmpdir("kill");
    let (target, _store, rx) = receiver_in(&dir);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        rx.stop(true);
    });
    survives_sink_going_away(&target, killer);
}

#[test]
fn no_sink_with_suppression_keeps_program_output_complete() {
    let dir = tmpdir("nosink");
    let (_path, target) = sock_env(&dir);
    let out = run(
        tapped(&target)
            .env("LLT_SUPPRESS_STDOUT", "true")
            .env("LLT_EXIT_TIMEOUT_MS", "100")
            .args(["lines", "100000"]),
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    check_lines(
        &out.stdout,
        &[("l".to_string(), 100000)].into_iter().collect(),
    );
}

#[test]
fn idle_line_reaches_live_sink_within_100ms() {
    let dir = tmpdir("idle");
    let (target, store, rx) = receiver_in(&dir);
    let mut child = tapped(&target)
        .arg("idle")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut seen = None;
    while start.elapsed() < Duration::from_millis(1500) {
        if !all_source(&store.lock().unwrap(), "stdout").is_empty() {
            seen = Some(start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.wait().unwrap();
    rx.stop(false);
    let seen = seen.expect("the line never arrived while the program was idle");
    // Measured from spawn, so this includes process start-up.
    assert!(seen < Duration::from_millis(400), "line took {seen:?}");
}

#[test]
fn exit_paths_flush_everything() {
    for mode in ["return", "exit", "_exit"] {
        let dir = tmpdir("exit");
        let (path, target) = sock_env(&dir);
        let store = Arc::new(Mutex::new(Store::default()));
        let rx = Receiver::start(&path, store.clone());
        let out = run(
            tapped(&target).args(["exit-mode", mode, "30000"]),
            Duration::from_secs(30),
        );
        assert!(out.status.success());
        rx.stop(false);
        let st = store.lock().unwrap();
        check_lines(
            &all_source(&st, "stdout"),
            &[("x".to_string(), 30000)].into_iter().collect(),
        );
    }
}

/// Decodes a frame file from the byte layout in docs/wire.md, without the
/// shared codec: i32 version, i32 len, level\0platform\0source\0data; in
/// version 1 the data is entries (u64 time_ns, u32 pid, u32 len, bytes).
/// Returns the frames (version, level, platform, source, data) and every
/// entry's (time_ns, pid).
#[allow(clippy::type_complexity)]
fn independent_decode_any(
    bytes: &[u8],
) -> (Vec<(i32, String, String, String, Vec<u8>)>, Vec<(u64, u32)>) {
    let mut out = Vec::new();
    let mut origins = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        assert!(bytes.len() - i >= 8, "truncated header at {i}");
        let version = i32::from_ne_bytes(bytes[i..i + 4].try_into().unwrap());
        let len = i32::from_ne_bytes(bytes[i + 4..i + 8].try_into().unwrap());
        assert!(version == 0 || version == 1, "version {version}");
        assert!(len >= 0);
        let body = &bytes[i + 8..i + 8 + len as usize];
        let mut parts = body.splitn(4, |&b| b == 0);
        let level = String::from_utf8(parts.next().unwrap().to_vec()).unwrap();
        let platform = String::from_utf8(parts.next().unwrap().to_vec()).unwrap();
        let source = String::from_utf8(parts.next().unwrap().to_vec()).unwrap();
        let raw = parts.next().expect("three separators");
        assert!(raw.len() <= 64 * 1024, "frame data over 64 KiB");
        let data = if version == 1 {
            let mut d = Vec::new();
            let mut e = raw;
            while !e.is_empty() {
                assert!(e.len() >= 16, "entry header cut");
                let t = u64::from_ne_bytes(e[..8].try_into().unwrap());
                let pid = u32::from_ne_bytes(e[8..12].try_into().unwrap());
                let n = u32::from_ne_bytes(e[12..16].try_into().unwrap()) as usize;
                assert!(e.len() >= 16 + n, "entry longer than its frame");
                d.extend_from_slice(&e[16..16 + n]);
                origins.push((t, pid));
                e = &e[16 + n..];
            }
            d
        } else {
            raw.to_vec()
        };
        out.push((version, level, platform, source, data));
        i += 8 + len as usize;
    }
    (out, origins)
}

/// Frames of either version, each with the bytes it carries.
fn independent_decode(bytes: &[u8]) -> Vec<(String, String, String, Vec<u8>)> {
    let (frames, _) = independent_decode_any(bytes);
    frames
        .into_iter()
        .map(|(_, l, p, s, d)| (l, p, s, d))
        .collect()
}

/// Version 0 only (what Pantavisor's server accepts).
fn independent_decode_v0(bytes: &[u8]) -> Vec<(String, String, String, Vec<u8>)> {
    let (frames, _) = independent_decode_any(bytes);
    frames
        .into_iter()
        .map(|(version, l, p, s, d)| {
            assert_eq!(version, 0, "a version-0 reader got version {version}");
            (l, p, s, d)
        })
        .collect()
}

#[test]
fn frame_file_decodes_independently() {
    // Unset LLT_FORMAT: version 1, each write with its time and pid;
    // logserver: exactly version 0.
    for format in [None, Some("logserver")] {
        let dir = tmpdir("ff");
        let target = dir.join("frames.bin");
        let log = dir.join("app.log");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("echo $$ > \"$PIDFILE\"; echo out; echo err >&2; head -c 200000 /dev/zero | tr '\\0' 'z'; echo; echo filed >> \"$LOG\"")
            .env("LOG", &log)
            .env("LD_PRELOAD", so())
            .env("LLT_TAP_INTO", "3")
            .env("LLT_TAP_FILE", &log)
            .env("LLT_PLATFORM", "demo-app")
            .env("LLT_TARGET", format!("file:{}", target.display()));
        if let Some(f) = format {
            cmd.env("LLT_FORMAT", f);
        }
        // The shell's pid, into a file that is not tapped.
        let pidfile = dir.join("pid");
        cmd.env("PIDFILE", &pidfile);
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let out = run(&mut cmd, Duration::from_secs(30));
        let after = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        assert!(out.status.success());
        let (frames, origins) = independent_decode_any(&std::fs::read(&target).unwrap());
        let want_version = if format.is_some() { 0 } else { 1 };
        let mut per: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (version, level, platform, source, data) in &frames {
            assert_eq!(*version, want_version, "LLT_FORMAT={format:?}");
            assert_eq!(platform, "demo-app");
            let want = match source.as_str() {
                "stdout" => "3",
                "stderr" => "1",
                _ => "3",
            };
            assert_eq!(level, want, "level of {source}");
            per.entry(source.clone())
                .or_default()
                .extend_from_slice(data);
        }
        same_bytes(&per["stdout"], &out.stdout, "stdout");
        same_bytes(&per["stderr"], &out.stderr, "stderr");
        let file_src = log.to_str().unwrap().trim_start_matches('/').to_string();
        same_bytes(&per[&file_src], &std::fs::read(&log).unwrap(), "tap file");
        if want_version == 1 {
            // echo, the shell's builtin, writes from the shell itself;
            // head and tr are its children, each with its own pid.
            let shell: u32 = std::fs::read_to_string(&pidfile)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert!(origins.iter().any(|&(_, p)| p == shell), "{origins:?}");
            assert!(origins.iter().any(|&(_, p)| p != shell), "{origins:?}");
            // The wall clock, read as each write returns: inside the run.
            for &(t, _) in &origins {
                assert!(
                    t >= before && t <= after,
                    "write time {t} outside the run [{before}, {after}]"
                );
            }
        } else {
            assert!(origins.is_empty());
        }
    }
}

/// One message per connection, read until EOF, as Pantavisor's server does.
#[test]
fn pantavisor_one_message_per_connection() {
    let dir = tmpdir("pv");
    let path = dir.join("pv-ctrl-log");
    let listener = UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let server = std::thread::spawn(move || {
        let mut got: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut messages = 0;
        loop {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    let mut all = Vec::new();
                    s.read_to_end(&mut all).unwrap();
                    let frames = independent_decode_v0(&all);
                    assert_eq!(frames.len(), 1, "more than one message on a connection");
                    messages += 1;
                    let (_, _, src, data) = &frames[0];
                    got.entry(src.clone()).or_default().extend_from_slice(data);
                }
                Err(_) if d2.load(Ordering::SeqCst) => return (got, messages),
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    let out = run(
        Command::new(stress())
            .args(["lines", "5000"])
            .env("LD_PRELOAD", so())
            .env("LLT_TAP_INTO", "1")
            .env("LLT_TARGET", format!("pantavisor:{}", path.display())),
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(100));
    done.store(true, Ordering::SeqCst);
    let (got, messages) = server.join().unwrap();
    same_bytes(&got["stdout"], &out.stdout, "stdout via pantavisor");
    // Unbatched would be one connection per line; batched is about ten on
    // an idle machine. The bound leaves room for a heavily loaded one.
    assert!(
        messages <= 1000,
        "{messages} messages for 5000 lines: writes are not batched"
    );
}

// ---------------------------------------------------------------------
// The same promises with the real logtap-sink in the loop.

/// A real logtap-sink. It is connectable before the test goes on: a sink
/// stopped between bind() and listen() (the SIGSTOP test, under load)
/// would refuse the library's connect, which then counts the target as
/// away and does not wait for it at exit.
struct Sink(SinkProc);

impl Sink {
    fn start(sock: &Path) -> Sink {
        Sink(SinkProc::start(sock))
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.child.id() as i32, sig) };
    }

    /// `sig`, wait, and return (stdout JSON objects, stderr text).
    fn stop(self, sig: i32) -> (Vec<serde_json::Value>, String) {
        self.signal(sig);
        let (st, out, err) = self.0.finish();
        if sig == libc::SIGTERM {
            assert!(st.success(), "sink exited with {st:?}");
        }
        (json_lines(&out), err)
    }
}

/// The sink's messages of one source, rebuilt as newline-terminated lines.
fn sink_lines(objs: &[serde_json::Value], source: &str) -> Vec<u8> {
    let mut v = Vec::new();
    for o in objs.iter().filter(|o| o["source"] == source) {
        v.extend_from_slice(o["message"].as_str().unwrap().as_bytes());
        v.push(b'\n');
    }
    v
}

#[test]
fn real_sink_stopped_with_sigstop_gets_everything() {
    let dir = tmpdir("rs-stop");
    let (path, target) = sock_env(&dir);
    let sink = Sink::start(&path);
    sink.signal(libc::SIGSTOP);
    let pid = sink.0.child.id() as i32;
    let cont = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGCONT) };
    });
    let out = run(
        tapped(&target)
            .env("LLT_EXIT_TIMEOUT_MS", "10000")
            .args(["lines", "100000"]),
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    cont.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (objs, err) = sink.stop(libc::SIGTERM);
    // A sink that reads shared rings says when it looked at one after its
    // program ended; an empty recovery is no complaint.
    let complaints: Vec<&str> = err
        .lines()
        .filter(|l| !l.contains("recovered 0 bytes in 0 writes"))
        .collect();
    assert!(complaints.is_empty(), "sink complained: {err}");
    check_lines(
        &sink_lines(&objs, "stdout"),
        &[("l".to_string(), 100000)].into_iter().collect(),
    );
    assert!(objs
        .iter()
        .all(|o| o["platform"].is_string() && o["level"] == "INFO"));
}

#[test]
fn real_sink_restarted_with_sigterm_loses_nothing() {
    let dir = tmpdir("rs-restart");
    let (path, target) = sock_env(&dir);
    let first = Sink::start(&path);
    let p2 = path.clone();
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        let a = first.stop(libc::SIGTERM);
        std::thread::sleep(Duration::from_millis(200));
        (a, Sink::start(&p2))
    });
    let out = run(
        tapped(&target)
            .env("LLT_EXIT_TIMEOUT_MS", "10000")
            .env("LLT_TARGET_RECONNECT", "0.1")
            .args(["lines", "40000", "25"]),
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    let ((mut objs, _), second) = restarter.join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (more, _) = second.stop(libc::SIGTERM);
    assert!(!more.is_empty(), "nothing reached the restarted sink");
    objs.extend(more);
    check_lines(
        &sink_lines(&objs, "stdout"),
        &[("l".to_string(), 40000)].into_iter().collect(),
    );
}

#[test]
fn real_sink_killed_program_exits_normally() {
    let dir = tmpdir("rs-kill");
    let (path, target) = sock_env(&dir);
    let sink = Sink::start(&path);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        sink.stop(libc::SIGKILL)
    });
    survives_sink_going_away(&target, killer);
}

#[test]
fn real_sink_attributes_forked_children_by_pid() {
    let dir = tmpdir("rs-fork");
    let (path, target) = sock_env(&dir);
    let sink = Sink::start(&path);
    let out = run(
        tapped(&target).args(["fork", "10", "200"]),
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(200));
    let (objs, _) = sink.stop(libc::SIGTERM);
    check_lines(
        &sink_lines(&objs, "stdout"),
        &(0..10).map(|c| (format!("c{c}"), 200)).collect(),
    );
    let mut pid_of_tag: HashMap<String, std::collections::HashSet<i64>> = HashMap::new();
    for o in objs.iter().filter(|o| o["source"] == "stdout") {
        let tag = o["message"]
            .as_str()
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string();
        pid_of_tag
            .entry(tag)
            .or_default()
            .insert(o["pid"].as_i64().unwrap());
    }
    let pids: std::collections::HashSet<i64> = pid_of_tag.values().flatten().copied().collect();
    assert_eq!(pids.len(), 10, "each child should have its own pid");
    assert!(
        pid_of_tag.values().all(|p| p.len() == 1),
        "a child's lines carried two pids"
    );
}

// ---------------------------------------------------------------------
// The library's own fd, and what happens when the buffer overflows.

#[test]
fn own_fd_survives_close_loops_close_range_and_dup2() {
    // Private fd table (default), and the fallback for where unshare is
    // forbidden: the library's fd in the program's table, guarded by hooks.
    for private in ["true", "false"] {
        let dir = tmpdir("fdchaos");
        let (path, target) = sock_env(&dir);
        let store = Arc::new(Mutex::new(Store::default()));
        let rx = Receiver::start(&path, store.clone());
        let private_file = dir.join("private.txt");
        let out = run(
            tapped(&target)
                .env("LLT_PRIVATE_FDS", private)
                .arg("fdchaos")
                .arg("20000")
                .arg(&private_file),
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "{:?}", out.status);
        rx.stop(false);
        // liblogtap-c wrote tapped output into the program's private file.
        same_bytes(
            &std::fs::read(&private_file).unwrap(),
            b"private\n",
            "the program's private file",
        );
        let st = store.lock().unwrap();
        check_lines(
            &all_source(&st, "stdout"),
            &[("l".to_string(), 20000)].into_iter().collect(),
        );
    }
}

#[test]
fn own_fd_does_not_leak_into_exec_children() {
    for private in ["true", "false"] {
        let dir = tmpdir("leak");
        let (path, target) = sock_env(&dir);
        let store = Arc::new(Mutex::new(Store::default()));
        let rx = Receiver::start(&path, store.clone());
        // The shell writes first (so its connection exists), then a child
        // lists the fds it inherited.
        let out = run(
            Command::new("sh")
                .arg("-c")
                .arg("echo first; sleep 0.3; exec ls -l /proc/self/fd/")
                .env("LD_PRELOAD", so())
                .env("LLT_PRIVATE_FDS", private)
                .env("LLT_TAP_INTO", "3")
                .env("LLT_TARGET", &target),
            Duration::from_secs(30),
        );
        assert!(out.status.success());
        rx.stop(false);
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            !listing.contains("socket:"),
            "a socket leaked into the exec'd child:\n{listing}"
        );
        let st = store.lock().unwrap();
        assert!(all_source(&st, "stdout").starts_with(b"first\n"));
    }
}

/// Parses the drop notices in the frames of one run.
fn dropped(store: &Store) -> (u64, u64) {
    let notices = all_source(store, logtap_wire::SELF_SOURCE);
    let mut total = (0, 0);
    for line in notices.split_inclusive(|&b| b == b'\n') {
        let n =
            logtap_wire::DropNotice::parse(line).unwrap_or_else(|| panic!("bad notice {line:?}"));
        assert_eq!(n.source, b"stdout");
        total.0 += n.bytes;
        total.1 += n.writes;
    }
    total
}

#[test]
fn overflow_is_reported_exactly() {
    let dir = tmpdir("drop");
    let (target, store, rx) = receiver_in(&dir);
    let resume = rx.pause_for(Duration::from_millis(800));
    let out = run(
        tapped(&target)
            .env("LLT_BUFFER_SIZE", "64K")
            .env("LLT_EXIT_TIMEOUT_MS", "5000")
            .args(["lines", "600000"]),
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    resume.join().unwrap();
    rx.stop(false);
    let st = store.lock().unwrap();
    let got = all_source(&st, "stdout");
    let (bytes, writes) = dropped(&st);
    assert!(
        writes > 0,
        "a 64 KiB buffer and a paused sink should have overflowed"
    );
    // Every write is one line: delivered lines + dropped writes = all lines,
    // and the bytes add up too.
    let delivered = got.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count() as u64;
    assert_eq!(delivered + writes, 600000, "lines delivered + dropped");
    assert_eq!(
        got.len() as u64 + bytes,
        out.stdout.len() as u64,
        "bytes delivered + dropped"
    );
    // What was delivered is a subsequence of what was written, in order.
    let mut want = out.stdout.split(|&b| b == b'\n');
    for line in got.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(
            want.any(|w| w == line),
            "delivered line {:?} out of order",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn overflow_with_suppression_goes_to_the_original_output() {
    let dir = tmpdir("dropsup");
    let (target, store, rx) = receiver_in(&dir);
    let resume = rx.pause_for(Duration::from_millis(800));
    let out = run(
        tapped(&target)
            .env("LLT_BUFFER_SIZE", "64K")
            .env("LLT_SUPPRESS_STDOUT", "true")
            .env("LLT_EXIT_TIMEOUT_MS", "5000")
            .args(["lines", "600000"]),
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    resume.join().unwrap();
    rx.stop(false);
    let st = store.lock().unwrap();
    assert_eq!(dropped(&st), (0, 0), "suppression must not drop");
    let got = all_source(&st, "stdout");
    assert!(
        !got.is_empty() && !out.stdout.is_empty(),
        "expected a split between target and stdout"
    );
    // Each line is in exactly one of the two places.
    let mut all: Vec<&[u8]> = got
        .split(|&b| b == b'\n')
        .chain(out.stdout.split(|&b| b == b'\n'))
        .filter(|l| !l.is_empty())
        .collect();
    all.sort_by_key(|l| {
        std::str::from_utf8(&l[2..])
            .unwrap()
            .parse::<u64>()
            .unwrap()
    });
    assert_eq!(all.len(), 600000, "lines in target + original output");
    for (i, l) in all.iter().enumerate() {
        assert_eq!(*l, format!("l {i}").as_bytes());
    }
}

#[test]
fn passive_window_at_start_taps_nothing_then_everything() {
    let dir = tmpdir("passive");
    let target = dir.join("t.bin");
    let out = run(
        Command::new("sh")
            .arg("-c")
            .arg("echo early; sleep 0.4; echo late")
            .env("LD_PRELOAD", so())
            .env("LLT_TAP_INTO", "1")
            .env("LLT_PASSIV_ON_START", "200")
            .env("LLT_TARGET", format!("file:{}", target.display())),
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    same_bytes(&out.stdout, b"early\nlate\n", "the program's own stdout");
    let frames = independent_decode(&std::fs::read(&target).unwrap());
    let data: Vec<u8> = frames.into_iter().flat_map(|f| f.3).collect();
    same_bytes(&data, b"late\n", "tapped after the 200 ms passive window");
}

/// A flush the library does for a call (fseek, fclose…) fails the call as
/// glibc's own would: a program checking fclose() still learns of ENOSPC.
#[test]
fn failed_flushes_fail_the_call_as_without_the_library() {
    let dir = tmpdir("full");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let plain = Command::new(stress())
        .arg("fullflush")
        .stdout(full.try_clone().unwrap())
        .output()
        .unwrap();
    // (Under suppression the original destination is not written at all,
    // so its errors cannot surface: see the README's Limits.)
    let tapped = Command::new(stress())
        .arg("fullflush")
        .stdout(full.try_clone().unwrap())
        .env("LD_PRELOAD", so())
        .env("LLT_TAP_INTO", "1")
        .env(
            "LLT_TARGET",
            format!("file:{}", dir.join("t.bin").display()),
        )
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&tapped.stderr),
        String::from_utf8_lossy(&plain.stderr),
        "return values and errno with the library (suppress=false) vs without"
    );
}

/// Under suppression a flushing thread points the stream at /dev/null for
/// an instant; other threads printing meanwhile must neither leak to the
/// original stdout nor be lost.
#[test]
fn suppressed_stdio_from_many_threads_stays_suppressed_and_complete() {
    let dir = tmpdir("supthreads");
    let target = dir.join("t.bin");
    let out = run(
        tapped(&format!("file:{}", target.display()))
            .env("LLT_SUPPRESS_STDOUT", "true")
            .env("LLT_BUFFER_SIZE", "256M")
            .args(["threads-printf", "4", "50000"]),
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    same_bytes(&out.stdout, b"", "the suppressed original stdout");
    let frames = independent_decode(&std::fs::read(&target).unwrap());
    let data: Vec<u8> = frames
        .into_iter()
        .filter(|f| f.2 == "stdout")
        .flat_map(|f| f.3)
        .collect();
    check_lines(&data, &(0..4).map(|t| (format!("p{t}"), 50000)).collect());
}

/// The last lines before abort(), a failed assert() or quick_exit() are
/// delivered, and the assertion message itself is tapped; the program's
/// own stderr and exit status are unchanged.
#[test]
fn dying_programs_deliver_their_last_words() {
    for how in ["abort", "assert", "quick_exit"] {
        let dir = tmpdir("die");
        let target = dir.join("t.bin");
        let plain = Command::new(stress()).args(["die", how]).output().unwrap();
        let out = run(
            Command::new(stress())
                .args(["die", how])
                .env("LD_PRELOAD", so())
                .env("LLT_TAP_INTO", "2")
                .env("LLT_TARGET", format!("file:{}", target.display())),
            Duration::from_secs(30),
        );
        assert_eq!(out.status.code(), plain.status.code(), "{how}: exit status");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            std::os::unix::process::ExitStatusExt::signal(&plain.status),
            "{how}: terminating signal"
        );
        same_bytes(
            &out.stderr,
            &plain.stderr,
            &format!("{how}: the program's own stderr"),
        );
        let frames = independent_decode(&std::fs::read(&target).unwrap());
        let data: Vec<u8> = frames.into_iter().flat_map(|f| f.3).collect();
        same_bytes(&data, &plain.stderr, &format!("{how}: tapped stderr"));
    }
}

/// An fd a process inherited above 2 (`exec 3>&1` in a parent shell) is
/// recognised as stdout when the child duplicates it.
#[test]
fn inherited_dup_of_stdout_is_tapped_in_children() {
    let dir = tmpdir("inherit");
    let target = dir.join("t.bin");
    let out = run(
        Command::new("bash")
            .arg("-c")
            .arg("exec 3>&1; bash -c 'echo inner-builtin >&3'")
            .env("LD_PRELOAD", so())
            .env("LLT_TAP_INTO", "1")
            .env("LLT_TARGET", format!("file:{}", target.display())),
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    let frames = independent_decode(&std::fs::read(&target).unwrap());
    let data: Vec<u8> = frames.into_iter().flat_map(|f| f.3).collect();
    same_bytes(&data, &out.stdout, "tapped stdout");
    same_bytes(&out.stdout, b"inner-builtin\n", "the program's stdout");
}
