//! Real servers from the distribution's packages, their log files tapped
//! through `LLT_TAP_FILE` patterns into the real `logtap-sink` (issue 10).
//!
//! Each test runs the server under the library, makes it log, rotates its
//! files the way it is rotated in production, stops it, and compares what
//! the sink printed for each file (source) with what the server left on
//! disk, all rotated pieces in order, per process. With
//! `LLT_SUPPRESS_TAP_FILE` the files must stay empty and the sink must
//! still hold every line the server logged.
//!
//! The servers are installed by `.ci/run` (nginx-light, postgresql,
//! redis-server). A test that cannot find its server says so and passes
//! on a developer machine, but fails when `CI=true`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// ------------------------------------------------------------ harness

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn built(rel: &str) -> PathBuf {
    let p = root().join(rel);
    assert!(
        p.exists(),
        "{} missing: run `cargo build --release --workspace` first (make test does)",
        p.display()
    );
    p
}

/// The server's binary, or None (with a notice) when it is not installed;
/// under CI a missing server is a failure.
fn need(what: &str, candidates: &[&str]) -> Option<PathBuf> {
    for c in candidates {
        let p = Path::new(c);
        if p.is_absolute() {
            if p.is_file() {
                return Some(p.to_path_buf());
            }
            continue;
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        if let Some(p) = std::env::split_paths(&path)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .map(|d| d.join(c))
            .find(|p| p.is_file())
        {
            return Some(p);
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is not installed (.ci/run installs it); CI=true makes this a failure");
    }
    eprintln!("skipped: {what} not installed (.ci/run installs it)");
    None
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory (canonical path: the library names sources by the
/// absolute path the program opened, made from its resolved cwd).
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = std::env::temp_dir().canonicalize().unwrap();
        let p = tmp.join(format!("logtap-srv-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("(kept {} for inspection)", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Waits for `child` to exit, killing it (and failing) after `timeout`.
fn wait_exit(child: &mut Child, what: &str, timeout: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {timeout:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until no process delivering to `sock` is left: a server's
/// helpers (PostgreSQL's logger, reparented when the postmaster is gone)
/// may outlive the process the test started, and their last lines must
/// reach the sink before it is stopped. Processes are found by the
/// `LLT_TARGET` in their environment.
fn wait_tapped_gone(sock: &Path) {
    let needle = format!("LLT_TARGET=socket:{}\0", sock.display()).into_bytes();
    wait_for(
        "the server's processes to exit",
        Duration::from_secs(30),
        || {
            std::fs::read_dir("/proc").unwrap().all(|e| {
                let p = e.unwrap().path();
                match std::fs::read(p.join("environ")) {
                    Ok(env) => !env.windows(needle.len()).any(|w| w == needle.as_slice()),
                    Err(_) => true,
                }
            })
        },
    );
}

fn drain<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// The real logtap-sink on a socket every user may connect to (servers
/// drop privileges in their workers).
struct Sink {
    child: Child,
    out: std::thread::JoinHandle<Vec<u8>>,
    err: std::thread::JoinHandle<Vec<u8>>,
}

/// One line the sink printed.
#[derive(Debug)]
struct SinkLine {
    source: String,
    pid: i64,
    message: String,
}

impl Sink {
    fn start(sock: &Path) -> Sink {
        let mut child = Command::new(built("target/release/logtap-sink"))
            .arg("--socket")
            .arg(sock)
            .args(["--mode", "0666"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = drain(child.stdout.take().unwrap());
        let err = drain(child.stderr.take().unwrap());
        wait_for("the sink's socket", Duration::from_secs(10), || {
            sock.exists()
        });
        Sink { child, out, err }
    }

    /// SIGTERM (the sink finishes every connection's lines), then the lines.
    fn stop(mut self) -> (Vec<SinkLine>, String) {
        signal(self.child.id(), libc::SIGTERM);
        let st = wait_exit(&mut self.child, "logtap-sink", Duration::from_secs(20));
        assert!(st.success(), "sink exited with {st:?}");
        let out = self.out.join().unwrap();
        let err = String::from_utf8_lossy(&self.err.join().unwrap()).into_owned();
        let lines = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let o: serde_json::Value = serde_json::from_slice(l)
                    .unwrap_or_else(|e| panic!("sink printed invalid JSON ({e})"));
                SinkLine {
                    source: o["source"].as_str().unwrap_or_default().to_string(),
                    pid: o["pid"].as_i64().unwrap_or(-1),
                    message: o["message"].as_str().unwrap_or_default().to_string(),
                }
            })
            .collect();
        (lines, err)
    }
}

/// The source name of a file: its absolute path without the leading `/`.
fn source_of(p: &Path) -> String {
    p.to_string_lossy().trim_start_matches('/').to_string()
}

/// Sink lines grouped by source, then by pid, in arrival order.
type BySource = BTreeMap<String, BTreeMap<i64, Vec<String>>>;

fn by_source(lines: &[SinkLine]) -> BySource {
    let mut m = BySource::new();
    for l in lines {
        m.entry(l.source.clone())
            .or_default()
            .entry(l.pid)
            .or_default()
            .push(l.message.clone());
    }
    m
}

/// Lines of files read in the given order (rotated pieces oldest first).
fn disk_lines(files: &[PathBuf]) -> Vec<String> {
    let mut v = Vec::new();
    for f in files {
        let b = std::fs::read(f).unwrap_or_default();
        assert!(
            b.is_empty() || b.ends_with(b"\n"),
            "{} ends inside a line",
            f.display()
        );
        v.extend(
            String::from_utf8_lossy(&b)
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>(),
        );
    }
    v
}

/// Groups lines by the pid `pid_of` reads from each (the server writes it
/// into every line), keeping their order.
fn by_pid(lines: &[String], pid_of: impl Fn(&str) -> Option<i64>) -> BTreeMap<i64, Vec<String>> {
    let mut m: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for l in lines {
        let pid = pid_of(l).unwrap_or_else(|| panic!("no pid in log line {l:?}"));
        m.entry(pid).or_default().push(l.clone());
    }
    m
}

/// The sink's lines of `source`, per process, must be exactly the disk's.
fn same_per_process(what: &str, sink: &BySource, source: &str, disk: &BTreeMap<i64, Vec<String>>) {
    let empty = BTreeMap::new();
    let got = sink.get(source).unwrap_or(&empty);
    let pids = |m: &BTreeMap<i64, Vec<String>>| m.keys().copied().collect::<Vec<_>>();
    assert_eq!(
        pids(got),
        pids(disk),
        "{what}: processes in the sink's `{source}` vs on disk"
    );
    for (pid, want) in disk {
        same_lines(&format!("{what}: pid {pid}, `{source}`"), &got[pid], want);
    }
}

/// Equal line sequences, or a failure showing the first difference.
fn same_lines(what: &str, got: &[String], want: &[String]) {
    if got != want {
        let first = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: sink has {} lines, disk {}; first difference at line {first}:\n  sink: {:?}\n  disk: {:?}",
            got.len(),
            want.len(),
            got.get(first),
            want.get(first)
        );
    }
}

/// Asserts that every source in the sink is one of `expected` (nothing
/// else was tapped, and the library reported no drops).
fn only_sources(what: &str, sink: &BySource, expected: &[String]) {
    for s in sink.keys() {
        assert!(
            expected.contains(s),
            "{what}: unexpected source `{s}` in the sink ({:?})",
            sink[s].values().flatten().take(3).collect::<Vec<_>>()
        );
    }
}

/// The library's environment for a server.
fn lib_env(cmd: &mut Command, tap_file: &str, sock: &Path, suppress: bool) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("LLT_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("LD_PRELOAD", built("target/release/liblogtap.so"))
        .env("LLT_TAP_FILE", tap_file)
        .env("LLT_TARGET", format!("socket:{}", sock.display()))
        .env(
            "LLT_SUPPRESS_TAP_FILE",
            if suppress { "true" } else { "false" },
        );
}

fn http_get(port: u16, path: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let head = String::from_utf8_lossy(&resp[..resp.len().min(20)]).into_owned();
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad HTTP response {head:?}"))
}

// ------------------------------------------------------------ nginx

/// nginx: a master and two workers writing `access.log` and `error.log`,
/// both tapped through one pattern; mid-traffic both are renamed (the
/// workers keep writing into the renamed files) and `USR1` makes every
/// process reopen them.
fn nginx(suppress: bool) {
    let Some(nginx) = need("nginx", &["nginx"]) else {
        return;
    };
    let d = Dir::new(if suppress { "nginx-sup" } else { "nginx" });
    let dir = &d.0;
    for sub in ["logs", "www", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("www/index.html"), "hello\n").unwrap();
    let port = free_port();
    let conf = format!(
        "daemon off;\n\
         master_process on;\n\
         worker_processes 2;\n\
         user nobody nogroup;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/logs/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n\
           log_format t '$pid $request_uri $status';\n\
           access_log {d}/logs/access.log t;\n\
           client_body_temp_path {d}/tmp/body;\n\
           proxy_temp_path {d}/tmp/proxy;\n\
           server {{ listen 127.0.0.1:{port} reuseport; root {d}/www; location / {{ }} }}\n\
         }}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let sock = dir.join("sink.sock");
    let sink = Sink::start(&sock);

    let mut cmd = Command::new(&nginx);
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("logs/error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    lib_env(
        &mut cmd,
        &format!("{}/logs/*.log", dir.display()),
        &sock,
        suppress,
    );
    let mut master = cmd.spawn().unwrap();
    wait_for("nginx to listen", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    // (That probe connection logs nothing: no request was sent.)

    let total = 300;
    let mut expected_access = Vec::new();
    for i in 0..total {
        if i == total / 3 {
            // logrotate without copytruncate: rename, keep writing, USR1.
            std::fs::rename(dir.join("logs/access.log"), dir.join("logs/access.log.1")).unwrap();
            std::fs::rename(dir.join("logs/error.log"), dir.join("logs/error.log.1")).unwrap();
        }
        if i == total / 3 + 30 {
            signal(master.id(), libc::SIGUSR1);
        }
        let (path, status) = if i % 7 == 3 {
            (format!("/missing-{i}"), 404)
        } else {
            (format!("/index.html?req={i}"), 200)
        };
        assert_eq!(http_get(port, &path), status, "GET {path}");
        expected_access.push((path, status));
    }
    // Every process has reopened before the end (workers answer USR1 at
    // their next event; the requests above give them one each).
    signal(master.id(), libc::SIGQUIT);
    let st = wait_exit(&mut master, "nginx", Duration::from_secs(30));
    assert!(st.success(), "nginx exited with {st:?}");
    wait_tapped_gone(&sock);
    let (lines, err) = sink.stop();
    let sink = by_source(&lines);

    let access_src = source_of(&dir.join("logs/access.log"));
    let error_src = source_of(&dir.join("logs/error.log"));
    only_sources("nginx", &sink, &[access_src.clone(), error_src.clone()]);
    let access_pid = |l: &str| l.split(' ').next()?.parse().ok();
    // "2026/11/30 06:40:01 [notice] 1234#1234: ..."
    let error_pid = |l: &str| l.split("] ").nth(1)?.split('#').next()?.parse().ok();

    let pieces = |name: &str| {
        vec![
            dir.join(format!("logs/{name}.1")),
            dir.join(format!("logs/{name}")),
        ]
    };
    if suppress {
        for f in pieces("access.log").iter().chain(&pieces("error.log")) {
            assert_eq!(
                std::fs::metadata(f).map(|m| m.len()).unwrap_or(0),
                0,
                "suppressed: {} must stay empty",
                f.display()
            );
        }
    } else {
        let access = by_pid(&disk_lines(&pieces("access.log")), access_pid);
        let error = by_pid(&disk_lines(&pieces("error.log")), error_pid);
        same_per_process("nginx access.log", &sink, &access_src, &access);
        same_per_process("nginx error.log", &sink, &error_src, &error);
        assert!(
            std::fs::metadata(dir.join("logs/access.log.1"))
                .unwrap()
                .len()
                > 0
                && std::fs::metadata(dir.join("logs/access.log"))
                    .unwrap()
                    .len()
                    > 0,
            "both access.log pieces must hold lines (the rotation happened mid-traffic)"
        );
    }
    // Whatever the disk holds, the sink holds every request once, each
    // worker's in the order the client sent them.
    let access = &sink[&access_src];
    let mut seen = Vec::new();
    for (pid, ls) in access {
        let mut last = None;
        for l in ls {
            let mut f = l.split(' ');
            assert_eq!(f.next().and_then(|p| p.parse().ok()), Some(*pid), "{l}");
            let path = f.next().unwrap().to_string();
            let status: u16 = f.next().unwrap().parse().unwrap();
            let i = expected_access
                .iter()
                .position(|(p, _)| *p == path)
                .unwrap_or_else(|| panic!("unexpected access line {l:?}"));
            assert_eq!(expected_access[i].1, status, "{l}");
            assert!(
                last < Some(i),
                "pid {pid}: access lines out of order at {l:?}"
            );
            last = Some(i);
            seen.push(i);
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        (0..total).collect::<Vec<_>>(),
        "every request logged exactly once"
    );
    assert!(
        access.len() >= 2,
        "requests must have been served by both workers (pids {:?})",
        access.keys().collect::<Vec<_>>()
    );
    let errors = sink[&error_src].values().flatten().collect::<Vec<_>>();
    let misses = errors.iter().filter(|l| l.contains("/missing-")).count();
    assert_eq!(
        misses,
        expected_access.iter().filter(|(_, s)| *s == 404).count(),
        "404s in error.log"
    );
    assert!(
        errors.iter().any(|l| l.contains("reopening logs")),
        "the USR1 reopen is logged: {err}"
    );
}

#[test]
fn nginx_master_and_workers_access_and_error_logs_with_rotation() {
    nginx(false);
}

#[test]
fn nginx_suppressed_logs_reach_only_the_sink() {
    nginx(true);
}

// ------------------------------------------------------------ PostgreSQL

/// Runs a command as `uid`/`gid` (postgres refuses to run as root).
fn as_user(cmd: &mut Command, uid: u32, gid: u32, home: &Path) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.uid(uid).gid(gid);
    }
    cmd.env("HOME", home);
}

fn user_ids(name: &str) -> Option<(u32, u32)> {
    let out = Command::new("id").args(["-u", name]).output().ok()?;
    let gout = Command::new("id").args(["-g", name]).output().ok()?;
    if !out.status.success() || !gout.status.success() {
        return None;
    }
    let p = |v: &[u8]| String::from_utf8_lossy(v).trim().parse().ok();
    Some((p(&out.stdout)?, p(&gout.stdout)?))
}

fn chown_r(p: &Path, uid: u32, gid: u32) {
    let st = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

/// PostgreSQL 15 with `logging_collector=on`: its logger process writes
/// `log/postgresql-%Y-%m-%d_%H%M%S.log`, a new name at start and at each
/// rotation; every dated file must be its own source, tapped from its
/// first byte.
fn postgres(suppress: bool) {
    // Debian 12 ships 15; take it, else the newest installed.
    let mut found: Vec<String> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| {
                let p = e.ok()?.path().join("bin/postgres");
                p.is_file().then(|| p.to_string_lossy().into_owned())
            })
            .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|p| (!p.contains("/15/"), std::cmp::Reverse(p.clone())));
    let cands: Vec<&str> = found.iter().map(String::as_str).collect();
    let Some(bin) = need("PostgreSQL (postgresql package)", &cands) else {
        return;
    };
    let bindir = bin.parent().unwrap().to_path_buf();
    let Some(psql) = need("psql", &["psql"]) else {
        return;
    };
    // Run as root (CI), the server runs as the package's `postgres` user;
    // run as anyone else, as that user.
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = if unsafe { libc::geteuid() } == 0 {
        user_ids("postgres")
            .or_else(|| user_ids("nobody"))
            .expect("a postgres or nobody user")
    } else {
        unsafe { (libc::geteuid(), libc::getegid()) }
    };
    let d = Dir::new(if suppress { "pg-sup" } else { "pg" });
    let home = d.0.join("pg");
    let data = home.join("data");
    std::fs::create_dir_all(&home).unwrap();
    chown_r(&home, uid, gid);

    let mut init = Command::new(bindir.join("initdb"));
    init.arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    as_user(&mut init, uid, gid, &home);
    let out = init.output().unwrap();
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let sock = d.0.join("sink.sock");
    let sink = Sink::start(&sock);
    let port = free_port();
    let mut cmd = Command::new(&bin);
    cmd.arg("-D")
        .arg(&data)
        .args([
            "-c",
            "logging_collector=on",
            "-c",
            "log_directory=log",
            "-c",
            "listen_addresses=",
            "-c",
            "log_statement=all",
            "-c",
            "log_connections=on",
            "-c",
            "log_disconnections=on",
        ])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", home.display()))
        .arg("-c")
        .arg(format!("port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    as_user(&mut cmd, uid, gid, &home);
    lib_env(
        &mut cmd,
        &format!("{}/log/*.log", data.display()),
        &sock,
        suppress,
    );
    let mut pm = cmd.spawn().unwrap();
    let sockfile = home.join(format!(".s.PGSQL.{port}"));
    wait_for(
        "postgres to accept connections",
        Duration::from_secs(30),
        || sockfile.exists(),
    );
    let sql = |q: &str| {
        let mut c = Command::new(&psql);
        c.arg("-h")
            .arg(&home)
            .arg("-p")
            .arg(port.to_string())
            .args(["-U", "postgres", "-d", "postgres", "-X", "-q", "-c", q]);
        as_user(&mut c, uid, gid, &home);
        let o = c.output().unwrap();
        assert!(
            o.status.success(),
            "psql {q}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let mut markers = Vec::new();
    for round in 0..3 {
        if round > 0 {
            // Names carry seconds: a rotation within the same second would
            // append to the same file.
            std::thread::sleep(Duration::from_millis(1100));
            sql("SELECT pg_rotate_logfile()");
        }
        for i in 0..20 {
            let m = format!("marker-{round}-{i}");
            sql(&format!("SELECT '{m}'"));
            markers.push(m);
        }
    }
    signal(pm.id(), libc::SIGINT);
    let st = wait_exit(&mut pm, "postgres", Duration::from_secs(60));
    assert!(st.success(), "postgres exited with {st:?}");
    wait_tapped_gone(&sock);
    let (lines, _) = sink.stop();
    let sink = by_source(&lines);

    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "three dated log files expected (start and two rotations): {files:?}"
    );
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("postgresql-") && name.ends_with(".log"),
            "postgres's default dated name: {name}"
        );
    }
    let sources: Vec<String> = files.iter().map(|f| source_of(f)).collect();
    only_sources("postgres", &sink, &sources);
    // Everything is written by the logger process: one pid per file.
    let mut all = Vec::new();
    for (f, src) in files.iter().zip(&sources) {
        let got: Vec<String> = sink
            .get(src)
            .map(|m| {
                assert_eq!(
                    m.len(),
                    1,
                    "one writer (the logger) for {src}: {:?}",
                    m.keys()
                );
                m.values().next().unwrap().clone()
            })
            .unwrap_or_default();
        if suppress {
            assert_eq!(
                std::fs::metadata(f).unwrap().len(),
                0,
                "suppressed: {} must stay empty",
                f.display()
            );
        } else {
            let disk = disk_lines(std::slice::from_ref(f));
            assert!(!disk.is_empty(), "{} is empty", f.display());
            same_lines(&format!("postgres {src}: sink vs disk"), &got, &disk);
        }
        all.extend(got);
    }
    // The statements, each once and in order, across the dated files.
    let logged: Vec<&String> = all
        .iter()
        .filter(|l| l.contains("statement: SELECT 'marker-"))
        .collect();
    assert_eq!(logged.len(), markers.len(), "every statement logged once");
    for (l, m) in logged.iter().zip(&markers) {
        assert!(
            l.contains(&format!("'{m}'")),
            "out of order: {l} (expected {m})"
        );
    }
}

#[test]
fn postgres_logging_collector_dated_files_each_a_source() {
    postgres(false);
}

#[test]
fn postgres_suppressed_dated_files_stay_empty() {
    postgres(true);
}

// ------------------------------------------------------------ redis

/// redis-server with `logfile`: it opens the file, writes one line and
/// closes it again for every message, so each line goes through the open
/// path; mid-traffic the file is renamed and redis simply creates it anew.
fn redis(suppress: bool) {
    let Some(bin) = need("redis-server", &["redis-server"]) else {
        return;
    };
    let d = Dir::new(if suppress { "redis-sup" } else { "redis" });
    let dir = &d.0;
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let sock = dir.join("sink.sock");
    let sink = Sink::start(&sock);
    let port = free_port();
    let log = dir.join("logs/redis.log");
    let mut cmd = Command::new(&bin);
    cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--daemonize", "no", "--loglevel", "verbose"])
        .arg("--port")
        .arg(port.to_string())
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    lib_env(
        &mut cmd,
        &format!("{}/logs/*.log", dir.display()),
        &sock,
        suppress,
    );
    let mut server = cmd.spawn().unwrap();
    wait_for("redis to listen", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let conns = 60;
    for i in 0..conns {
        if i == conns / 2 {
            std::fs::rename(&log, dir.join("logs/redis.log.1")).unwrap();
        }
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"PING\r\n").unwrap();
        let mut b = [0u8; 7];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"+PONG\r\n");
    }
    signal(server.id(), libc::SIGTERM);
    let st = wait_exit(&mut server, "redis-server", Duration::from_secs(30));
    assert!(st.success(), "redis exited with {st:?}");
    wait_tapped_gone(&sock);
    let (lines, _) = sink.stop();
    let sink = by_source(&lines);
    let src = source_of(&log);
    only_sources("redis", &sink, std::slice::from_ref(&src));
    // "12345:M 30 Nov 2026 06:40:01.123 * Ready to accept connections"
    let pid_of = |l: &str| l.split(':').next()?.parse().ok();
    let pieces = [dir.join("logs/redis.log.1"), log.clone()];
    if suppress {
        for f in &pieces {
            assert_eq!(
                std::fs::metadata(f).map(|m| m.len()).unwrap_or(0),
                0,
                "suppressed: {} must stay empty",
                f.display()
            );
        }
    } else {
        let disk = by_pid(&disk_lines(&pieces), pid_of);
        same_per_process("redis", &sink, &src, &disk);
    }
    let got: Vec<&String> = sink[&src].values().flatten().collect();
    let accepted = got
        .iter()
        .filter(|l| l.contains("Accepted 127.0.0.1"))
        .count();
    // The readiness probe above is a connection too.
    assert!(
        accepted >= conns,
        "{accepted} connections logged, {conns} made"
    );
    assert!(
        got.iter().any(|l| l.contains("ready to exit")),
        "shutdown logged"
    );
}

#[test]
fn redis_logfile_reopened_per_line_with_rename() {
    redis(false);
}

#[test]
fn redis_suppressed_logfile_stays_empty() {
    redis(true);
}

// ------------------------------------------------------------ Python

const ROTATING: &str = r#"
import logging, logging.handlers, os, sys
d = sys.argv[1]
h = logging.handlers.RotatingFileHandler(os.path.join(d, "app.log"), maxBytes=4000, backupCount=100)
h.setFormatter(logging.Formatter("%(process)d %(message)s"))
log = logging.getLogger("app")
log.addHandler(h)
log.setLevel(logging.INFO)
for i in range(1500):
    log.info("line %05d of the rotating handler %s", i, "x" * (i % 40))
"#;

/// Python's `RotatingFileHandler` renames `app.log` to `app.log.1` (and
/// shifts the older ones) many times; the fd written before each rename
/// keeps the source `app.log`, and the reopened file is the same source.
fn python_rotating(suppress: bool) {
    let Some(py) = need("python3", &["python3"]) else {
        return;
    };
    // The interpreter itself, not a wrapper script (pyenv's shims are
    // bash scripts that would run under the library too).
    let exe = Command::new(&py)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap();
    let py = PathBuf::from(String::from_utf8_lossy(&exe.stdout).trim());
    let d = Dir::new(if suppress { "py-sup" } else { "py" });
    let dir = &d.0;
    let sock = dir.join("sink.sock");
    let sink = Sink::start(&sock);
    let mut cmd = Command::new(&py);
    cmd.arg("-c").arg(ROTATING).arg(dir);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    lib_env(
        &mut cmd,
        &format!("{}/*.log", dir.display()),
        &sock,
        suppress,
    );
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_tapped_gone(&sock);
    let (lines, _) = sink.stop();
    let sink = by_source(&lines);
    let src = source_of(&dir.join("app.log"));
    only_sources("python", &sink, std::slice::from_ref(&src));
    let mut pieces: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let n = p.file_name()?.to_string_lossy().into_owned();
            if n == "app.log" {
                Some((0, p))
            } else {
                Some((n.strip_prefix("app.log.")?.parse().ok()?, p))
            }
        })
        .collect();
    // Oldest first: app.log.N … app.log.1, app.log.
    pieces.sort_by_key(|p| std::cmp::Reverse(p.0));
    let files: Vec<PathBuf> = pieces.into_iter().map(|p| p.1).collect();
    let got: Vec<String> = sink
        .get(&src)
        .map(|m| m.values().flatten().cloned().collect())
        .unwrap_or_default();
    if suppress {
        for f in &files {
            assert_eq!(
                std::fs::metadata(f).unwrap().len(),
                0,
                "suppressed: {} must stay empty",
                f.display()
            );
        }
    } else {
        assert!(files.len() >= 5, "several rotations expected: {files:?}");
        let disk = disk_lines(&files);
        same_lines("python: sink's app.log vs all rotated pieces", &got, &disk);
    }
    assert_eq!(got.len(), 1500, "every line once");
    for (i, l) in got.iter().enumerate() {
        assert!(l.contains(&format!("line {i:05} ")), "order: {l} at {i}");
    }
}

#[test]
fn python_rotating_file_handler_rotating_many_times() {
    python_rotating(false);
}

#[test]
fn python_rotating_file_handler_suppressed() {
    python_rotating(true);
}
