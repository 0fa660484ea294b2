//! The outputs against real parts: rsyslog from Debian as the syslog
//! daemon (its own output file is the oracle), the file tree under a 5 MB
//! burst, the memory ring under concurrent writers, and a syslog daemon
//! that is down while the other outputs keep everything.
//!
//! rsyslog (`/usr/sbin/rsyslogd`, Debian package `rsyslog`; `.ci/run`
//! installs it) is started by the test in the foreground with its own
//! configuration, work directory, Unix socket and TCP port. Without it the
//! tests that need it fail when `CI` is set and are skipped otherwise.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{temp_dir, Sink, BIN};
use logtap_wire::{encode, Level};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

/// Tests that push bursts as fast as the machine goes, and tests that
/// need an output to keep up in a small buffer, run one at a time: on a
/// 2-core machine a burst beside a paced test starves the latter's reader.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// True when rsyslogd is there; panics in CI when it is not.
fn have_rsyslog() -> bool {
    if Path::new(RSYSLOGD).exists() {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !ci,
        "{RSYSLOGD} is missing: CI must install the rsyslog package (.ci/run does)"
    );
    eprintln!("skipped: {RSYSLOGD} is missing (apt-get install rsyslog)");
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An rsyslogd in the foreground, writing what it receives to `out` as
/// `input|severity|app-name|procid|msgid|msg` lines.
struct Rsyslog {
    child: Child,
    out: PathBuf,
}

impl Rsyslog {
    fn start(dir: &Path, unix: &Path, port: u16) -> Rsyslog {
        let work = dir.join("rsyslog-work");
        std::fs::create_dir_all(&work).unwrap();
        let out = dir.join("rsyslog.out");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{work}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{unix}" RateLimit.Interval="0" CreatePath="on")
module(load="imtcp")
input(type="imtcp" port="{port}" address="127.0.0.1")
template(name="oracle" type="string" string="%inputname%|%syslogseverity%|%app-name%|%procid%|%msgid%|%msg%\n")
action(type="omfile" file="{out}" template="oracle")
"#,
                work = work.display(),
                unix = unix.display(),
                out = out.display(),
            ),
        )
        .unwrap();
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslog.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rsyslogd");
        let r = Rsyslog { child, out };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let tcp_up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            if tcp_up && unix.exists() {
                break;
            }
            assert!(Instant::now() < deadline, "rsyslogd did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until `pred` holds for the output lines.
    fn wait(&self, what: &str, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let l = self.lines();
            if pred(&l) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "rsyslog: timed out waiting for {what}; have {} lines, last {:?}",
                l.len(),
                l.last()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ChromeOS's scrubbing, written out independently of the sink's code.
fn scrubbed(s: &[u8]) -> String {
    let mut out = String::new();
    for c in String::from_utf8_lossy(s).chars() {
        let u = c as u32;
        if u < 0x20
            || (0x7f..=0x9f).contains(&u)
            || (0xfdd0..=0xfdef).contains(&u)
            || u & 0xfffe == 0xfffe
        {
            out.push_str(&format!("#{u:03o}"));
        } else {
            out.push(c);
        }
    }
    out
}

fn send_all(socket: &Path, frames: &[Vec<u8>]) {
    let mut s = UnixStream::connect(socket).unwrap();
    for f in frames {
        s.write_all(f).unwrap();
    }
}

/// Awkward texts, each made unique by its index.
fn text(i: usize) -> Vec<u8> {
    let mut t = format!("line {i:05} ").into_bytes();
    match i % 7 {
        0 => t.extend_from_slice(b"tab\there bell\x07 esc\x1b[31m"),
        1 => t.extend_from_slice("héllo € 日本 \u{FFFE} \u{FDD0} \u{85}".as_bytes()),
        2 => t.extend_from_slice(b"bad utf8 \xff\xfe\xc3("),
        3 => t.extend_from_slice(b"cr\r del\x7f # hash"),
        4 => t.extend_from_slice(&b"x".repeat(3000)),
        _ => t.extend_from_slice(b"plain"),
    }
    t
}

fn level_of(i: usize) -> Level {
    [
        Level::Info,
        Level::Error,
        Level::Warn,
        Level::Fatal,
        Level::Debug,
        Level::Trace,
        Level::Info,
    ][i % 7]
}

fn severity(l: Level) -> u8 {
    match l {
        Level::Fatal => 2,
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        _ => 7,
    }
}

fn rsyslog_oracle(format: &str) {
    if !have_rsyslog() {
        return;
    }
    let dir = temp_dir(&format!("rsyslog{format}"));
    let logsock = dir.join("log.sock");
    let port = free_port();
    let rs = Rsyslog::start(&dir, &logsock, port);
    let socket = dir.join("sink.sock");
    let sink = Sink::start(
        &socket,
        &[
            "--output",
            &format!("WARN:syslog:unix:{}", logsock.display()),
            "--output",
            &format!("syslog:tcp:127.0.0.1:{port}"),
            "--output",
            "json",
            "--level-prefix",
        ]
        .into_iter()
        .chain(if format == "auto" {
            vec![]
        } else {
            vec!["--syslog-format", format]
        })
        .collect::<Vec<_>>(),
        &[],
    );
    const N: usize = 700;
    let mut frames = Vec::new();
    let mut expected = Vec::new(); // (level, source, text)
    for i in 0..N {
        let (source, lvl): (&[u8], Level) = if i % 2 == 0 {
            (b"stdout", level_of(i))
        } else {
            (b"var/log/app.log", level_of(i))
        };
        let mut t = text(i);
        let mut lvl = lvl;
        if i % 50 == 0 {
            // journald's prefix: the line becomes an error, without it.
            let mut p = b"<3>".to_vec();
            p.extend_from_slice(&t);
            frames.push(encode(
                Level::Info,
                b"my-app",
                source,
                &[&p[..], b"\n"].concat(),
            ));
            lvl = Level::Error;
        } else {
            frames.push(encode(lvl, b"my-app", source, &[&t[..], b"\n"].concat()));
        }
        t.shrink_to_fit();
        expected.push((lvl, source.to_vec(), t));
    }
    send_all(&socket, &frames);
    sink.wait_json(N, Duration::from_secs(30));
    let pid = std::process::id().to_string();
    let want_unix: Vec<_> = expected
        .iter()
        .filter(|(l, _, _)| *l <= Level::Warn)
        .collect();
    let lines = rs.wait("every line", |l| {
        l.iter().filter(|x| x.starts_with("imtcp|")).count() >= N
            && l.iter().filter(|x| x.starts_with("imuxsock|")).count() >= want_unix.len()
    });
    for (input, want) in [
        ("imtcp", expected.iter().collect::<Vec<_>>()),
        ("imuxsock", want_unix.clone()),
    ] {
        let mut got: Vec<&String> = lines
            .iter()
            .filter(|x| x.starts_with(&format!("{input}|")))
            .collect();
        if input == "imtcp" {
            // rsyslog's imtcp may itself reorder under load (the bytes on
            // the connection are in order): compare by line number there.
            let key = |x: &String| -> usize {
                let at = x.find("|line ").or_else(|| x.find("| line ")).unwrap_or(0);
                let t = x[at..].trim_start_matches(['|', ' ']);
                t.get(5..10)
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(usize::MAX)
            };
            got.sort_by_key(|x| key(x));
        }
        assert_eq!(got.len(), want.len(), "{input}: every line once");
        for (g, (lvl, source, t)) in got.iter().zip(&want) {
            let f: Vec<&str> = g.splitn(6, '|').collect();
            assert_eq!(f[1], severity(*lvl).to_string(), "{input} severity: {g}");
            assert_eq!(f[2], "my-app", "{input} app-name: {g}");
            assert_eq!(f[3], pid, "{input} procid: {g}");
            // auto: 5424 over TCP, the C library's 3164 on the Unix socket.
            let rfc5424 = format == "5424" || (format == "auto" && input == "imtcp");
            if rfc5424 {
                let src = String::from_utf8_lossy(source);
                assert_eq!(f[4], src, "{input} msgid: {g}");
            }
            // rsyslog keeps the space after a 3164 TAG's colon in %msg%.
            let msg = f[5].strip_prefix(' ').filter(|_| !rfc5424).unwrap_or(f[5]);
            assert_eq!(msg, scrubbed(t), "{input} message (in order, scrubbed)");
        }
    }
    let stopped = sink.stop();
    assert!(stopped.status.success(), "{:?}", stopped.err);
    assert_eq!(stopped.out.len(), N, "json output keeps every line");
}

#[test]
fn rsyslog_receives_every_line_once_in_order() {
    // Defaults: RFC 5424 over TCP, RFC 3164 on the Unix socket.
    rsyslog_oracle("auto");
}

#[test]
fn rsyslog_receives_every_line_once_in_order_rfc3164() {
    rsyslog_oracle("3164");
}

/// The numbers of `line NNNNNNN` lines in a text file of the file output.
fn numbers(path: &Path) -> Vec<u64> {
    let f = std::fs::File::open(path).unwrap();
    BufReader::new(f)
        .lines()
        .map(|l| {
            let l = l.unwrap();
            let i = l.find("line ").expect("numbered line") + 5;
            l[i..i + 8].trim().parse().unwrap()
        })
        .collect()
}

#[test]
fn file_output_rotates_under_a_5mb_burst() {
    let _serial = heavy();
    let dir = temp_dir("files");
    let logs = dir.join("logs");
    let socket = dir.join("s.sock");
    let sink = Sink::start(
        &socket,
        &[
            "--output",
            &format!("file:{}", logs.display()),
            "--output",
            "json",
            "--max-file-size",
            "256K",
            "--max-files",
            "3",
            // The default --output-buffer takes the whole burst (see
            // a_5mb_burst_fits_the_default_output_buffer).
        ],
        &[],
    );
    const N: u64 = 50_000; // 100-byte lines: 5 MB
    let mut data = Vec::with_capacity(N as usize * 100);
    let mut frames = Vec::new();
    for i in 0..N {
        let line = format!("line {i:>8} {}\n", "z".repeat(85));
        assert_eq!(line.len(), 100);
        data.extend_from_slice(line.as_bytes());
        if data.len() >= 60_000 {
            frames.push(encode(Level::Info, b"app", b"var/log/app.log", &data));
            data.clear();
        }
    }
    frames.push(encode(Level::Info, b"app", b"var/log/app.log", &data));
    // Two writers: a burst as fast as the socket takes it.
    let socket2 = socket.clone();
    let half = frames.len() / 2;
    let (a, b) = frames.split_at(half);
    send_all(&socket2, a);
    send_all(&socket2, b);
    sink.wait_json(N as usize, Duration::from_secs(60));
    let stopped = sink.stop();
    assert!(stopped.status.success(), "{:?}", stopped.err);
    assert_eq!(stopped.out.len(), N as usize);

    let base = logs.join("app/var/log/app.log");
    let max = 256 * 1024;
    let mut kept = Vec::new();
    for n in (1..=3).rev() {
        let p = PathBuf::from(format!("{}.{n}", base.display()));
        let size = std::fs::metadata(&p).unwrap().len();
        assert!(size <= max, "{} is {size} bytes", p.display());
        // Full: one more line (a text line here is 128 bytes) would not fit.
        assert!(size + 128 > max, "{} is only {size} bytes", p.display());
        kept.extend(numbers(&p));
    }
    assert!(std::fs::metadata(&base).unwrap().len() <= max);
    kept.extend(numbers(&base));
    assert!(
        !Path::new(&format!("{}.4", base.display())).exists(),
        "--max-files 3 keeps three rotated files"
    );
    let entries = std::fs::read_dir(base.parent().unwrap()).unwrap().count();
    assert_eq!(entries, 4, "the file and three rotated ones");
    // The kept files hold the newest lines, in order, none missing.
    let first = N - kept.len() as u64;
    assert_eq!(kept, (first..N).collect::<Vec<_>>());
}

/// Runs `logtap-sink read` and collects its lines.
fn reader(
    query: &Path,
    follow: bool,
) -> (Child, Arc<Mutex<Vec<String>>>, std::thread::JoinHandle<()>) {
    let mut cmd = Command::new(BIN);
    cmd.arg("read").arg(query);
    if follow {
        cmd.arg("--follow");
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l2 = Arc::clone(&lines);
    let t = std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            l2.lock().unwrap().push(l);
        }
    });
    (child, lines, t)
}

#[test]
fn ring_with_concurrent_writers_read_and_follow() {
    let dir = temp_dir("ring");
    let socket = dir.join("s.sock");
    let query = dir.join("q.sock");
    let sink = Sink::start(
        &socket,
        &[
            "--ring-lines",
            "1000",
            "--query-socket",
            query.to_str().unwrap(),
        ],
        &[],
    );
    // Dump of an empty ring: nothing, exit 0.
    let out = Command::new(BIN).arg("read").arg(&query).output().unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let (mut follower, followed, ft) = reader(&query, true);
    std::thread::sleep(Duration::from_millis(300));
    const WRITERS: usize = 4;
    const PER: usize = 2000;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&socket).unwrap();
                for chunk in 0..PER / 100 {
                    let mut data = Vec::new();
                    for i in chunk * 100..(chunk + 1) * 100 {
                        data.extend_from_slice(format!("w{w} n{i}\n").as_bytes());
                    }
                    s.write_all(&encode(
                        Level::Info,
                        b"app",
                        format!("src{w}").as_bytes(),
                        &data,
                    ))
                    .unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    // The default json output on stdout has them all too.
    let all = sink.wait_json(WRITERS * PER, Duration::from_secs(30));
    assert_eq!(all.len(), WRITERS * PER);
    let deadline = Instant::now() + Duration::from_secs(30);
    while followed.lock().unwrap().len() < WRITERS * PER {
        assert!(
            Instant::now() < deadline,
            "follower has {}",
            followed.lock().unwrap().len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let followed: Vec<serde_json::Value> = followed
        .lock()
        .unwrap()
        .iter()
        .map(|l| common::parse(l))
        .collect();
    let msg = |v: &serde_json::Value| v["message"].as_str().unwrap().to_owned();
    // Every record once, each writer's in order.
    for w in 0..WRITERS {
        let mine: Vec<String> = followed
            .iter()
            .filter(|v| v["source"] == format!("src{w}"))
            .map(msg)
            .collect();
        let want: Vec<String> = (0..PER).map(|i| format!("w{w} n{i}")).collect();
        assert_eq!(mine, want, "writer {w}");
    }
    // A dump: the newest 1000, in the ring's order (the follower's order).
    let out = Command::new(BIN).arg("read").arg(&query).output().unwrap();
    assert!(out.status.success());
    let dumped: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| msg(&common::parse(l)))
        .collect();
    let tail: Vec<String> = followed[followed.len() - 1000..].iter().map(msg).collect();
    assert_eq!(dumped, tail);
    // Dump-then-follow gets the dump first, then new records.
    let (mut both, both_lines, bt) = reader(&query, true);
    std::thread::sleep(Duration::from_millis(300));
    send_all(
        &socket,
        &[encode(Level::Warn, b"app", b"late", b"after the dump\n")],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while both_lines.lock().unwrap().len() < 1001 {
        assert!(
            Instant::now() < deadline,
            "dump+follow has {}",
            both_lines.lock().unwrap().len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let got: Vec<String> = both_lines
        .lock()
        .unwrap()
        .iter()
        .map(|l| msg(&common::parse(l)))
        .collect();
    assert_eq!(&got[..1000], &tail[..]);
    assert_eq!(got[1000], "after the dump");
    let stopped = sink.stop();
    assert!(stopped.status.success(), "{:?}", stopped.err);
    // The sink's exit ends the followers.
    for (c, t) in [(&mut follower, ft), (&mut both, bt)] {
        assert!(common::wait_timeout(c, Duration::from_secs(10)).is_some());
        t.join().unwrap();
    }
    assert!(!query.exists(), "query socket removed at exit");
}

#[test]
fn a_dead_syslog_server_holds_back_nothing() {
    let _serial = heavy();
    if !have_rsyslog() {
        return;
    }
    let dir = temp_dir("deadsyslog");
    let logs = dir.join("logs");
    let socket = dir.join("s.sock");
    let port = free_port();
    let sink = Sink::start(
        &socket,
        &[
            "--output",
            "json",
            "--output",
            &format!("file:{}", logs.display()),
            "--output",
            &format!("syslog:tcp:127.0.0.1:{port}"),
            "--output-buffer",
            "1M",
            "--max-file-size",
            "64M",
        ],
        &[],
    );
    // Nobody listens on the port: the syslog output is down. Its 1M queue
    // holds about 8,000 of the 20,000 100-byte lines (it must drop); the
    // JSON output, read by this test, gets the same 1M of slack, so a
    // test reader slowed by a loaded machine does not make it drop.
    const N: usize = 20_000;
    let mut frames = Vec::new();
    for chunk in 0..N / 500 {
        let mut data = Vec::new();
        for i in chunk * 500..(chunk + 1) * 500 {
            data.extend_from_slice(format!("early {i} {:>90}\n", "x").as_bytes());
        }
        frames.push(encode(Level::Info, b"app", b"stdout", &data));
    }
    let t0 = Instant::now();
    // Paced (about 25,000 lines/s): the JSON output, read by this test,
    // must keep up within its queue; the loop waits for no output.
    let mut s = UnixStream::connect(&socket).unwrap();
    for f in &frames {
        s.write_all(f).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(s);
    sink.wait_json(N, Duration::from_secs(30));
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "json output held back"
    );
    sink.wait_err("output syslog:tcp", 1, Duration::from_secs(10));
    sink.wait_err("dropping records", 1, Duration::from_secs(10));
    let file = logs.join("app/stdout");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&file).map_or(0, |s| s.lines().count()) < N {
        assert!(
            Instant::now() < deadline,
            "file output incomplete: {} lines; stderr {:?}",
            std::fs::read_to_string(&file).map_or(0, |s| s.lines().count()),
            sink.err.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The daemon comes up: what fitted in the buffer is delivered, then a
    // record saying what was dropped, then new lines.
    let rs = Rsyslog::start(&dir, &dir.join("log.sock"), port);
    std::thread::sleep(Duration::from_millis(1500));
    send_all(
        &socket,
        &[encode(Level::Info, b"app", b"stdout", b"late line\n")],
    );
    let lines = rs.wait("the late line", |l| {
        l.iter().any(|x| x.ends_with("|late line"))
    });
    let msgs: Vec<&str> = lines
        .iter()
        .map(|l| l.splitn(6, '|').nth(5).unwrap())
        .collect();
    let notice = msgs
        .iter()
        .position(|m| m.starts_with("logtap-sink: dropped records="))
        .expect("a record saying what was dropped");
    let early: Vec<usize> = msgs[..notice]
        .iter()
        .map(|m| {
            let n = m.strip_prefix("early ").unwrap().split(' ').next();
            n.unwrap().parse().unwrap()
        })
        .collect();
    assert!(!early.is_empty());
    assert_eq!(
        early,
        (0..early.len()).collect::<Vec<_>>(),
        "buffered lines first, in order"
    );
    let dropped: usize = msgs[notice]
        .split("records=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        early.len() + dropped,
        N,
        "delivered + reported dropped = sent"
    );
    assert_eq!(msgs.last(), Some(&"late line"));
    sink.wait_json(N + 1, Duration::from_secs(10));
    sink.wait_err("delivering again", 1, Duration::from_secs(10));
    let stopped = sink.stop();
    assert!(stopped.status.success());
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().lines().count(),
        N + 1
    );
    assert!(stopped.out.len() == N + 1, "json output keeps everything");
}

#[test]
fn bad_specs_are_refused_with_one_line() {
    for (args, needle) in [
        (vec!["--output", "syslog:tcp:nohost"], "syslog:tcp:nohost"),
        (vec!["--output", "LOUD:json"], "LOUD:json"),
        (vec!["--output", "file:"], "file:"),
        (vec!["--filter", "ERROR"], "ERROR"),
        (vec!["--syslog-facility", "nope"], "--syslog-facility"),
        (vec!["--syslog-format", "9999"], "--syslog-format"),
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
    }
    // A directory that cannot be created: exit 1 naming the output.
    let out = Command::new(BIN)
        .args([
            "--socket",
            "/tmp/never-bound.sock",
            "--output",
            "file:/proc/nope",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("file:/proc/nope"), "{err}");
}

/// liblogtap.so as `make test` builds it (the workspace's release build).
fn liblogtap() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/liblogtap.so");
    if p.exists() {
        return Some(p);
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !ci,
        "{} missing: `make test` builds the workspace first",
        p.display()
    );
    eprintln!(
        "skipped: {} missing (cargo build --release --workspace)",
        p.display()
    );
    None
}

/// The command of the README, with a real program under the real library:
/// `--output file:DIR --output WARN:syslog:unix:SOCK`; every line lands in
/// the file tree, the stderr lines (ERROR) also in rsyslog.
#[test]
fn a_program_under_liblogtap_lands_in_files_and_syslog() {
    let Some(so) = liblogtap() else { return };
    if !have_rsyslog() {
        return;
    }
    let dir = temp_dir("e2e");
    let logsock = dir.join("dev-log");
    let rs = Rsyslog::start(&dir, &logsock, free_port());
    let logs = dir.join("var-log-logtap");
    let socket = dir.join("sink.sock");
    let sink = Sink::start(
        &socket,
        &[
            "--output",
            &format!("file:{}", logs.display()),
            "--output",
            &format!("WARN:syslog:unix:{}", logsock.display()),
        ],
        &[],
    );
    const N: usize = 300;
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "i=1; while [ $i -le {N} ]; do echo \"out $i\"; echo \"err $i: bell\x07\" >&2; i=$((i+1)); done"
        ))
        .env("LD_PRELOAD", &so)
        .env("LLT_TAP_INTO", "3")
        .env("LLT_TARGET", format!("socket:{}", socket.display()))
        .env("LLT_PLATFORM", "legacy-app")
        .output()
        .unwrap();
    assert!(out.status.success());
    let want_out: String = (1..=N).map(|i| format!("out {i}\n")).collect();
    let want_err: String = (1..=N).map(|i| format!("err {i}: bell\x07\n")).collect();
    // The program's own output is untouched.
    assert_eq!(String::from_utf8_lossy(&out.stdout), want_out);
    assert_eq!(String::from_utf8_lossy(&out.stderr), want_err);
    let lines = rs.wait("the stderr lines", |l| l.len() >= N);
    let stopped = sink.stop();
    assert!(stopped.status.success(), "{:?}", stopped.err);
    // Files: `<time> legacy-app.<source> <line>`, every line, in order.
    for (source, want) in [("stdout", &want_out), ("stderr", &want_err)] {
        let text = std::fs::read_to_string(logs.join("legacy-app").join(source)).unwrap();
        let got: String = text
            .lines()
            .map(|l| {
                let rest = l.split_once(' ').unwrap().1;
                let msg = rest.strip_prefix(&format!("legacy-app.{source} ")).unwrap();
                format!("{}\n", msg.replace("#007", "\x07"))
            })
            .collect();
        assert_eq!(&got, want, "file {source}");
    }
    // Syslog: only the stderr lines (ERROR), severity err, scrubbed.
    assert_eq!(lines.len(), N, "{:?}", lines.last());
    for (i, l) in lines.iter().enumerate() {
        let f: Vec<&str> = l.splitn(6, '|').collect();
        assert_eq!(&f[..3], ["imuxsock", "3", "legacy-app"], "{l}");
        assert_eq!(f[5].trim_start(), format!("err {}: bell#007", i + 1));
    }
}

/// `--filter` and an output's level, on the inline stdout output and on a
/// threaded one (a file tree) at once.
#[test]
fn filters_and_levels() {
    let dir = temp_dir("filters");
    let socket = dir.join("s.sock");
    let logs = dir.join("logs");
    let sink = Sink::start(
        &socket,
        &[
            "--filter",
            "ERROR:var/log/*",
            "--filter",
            "FATAL:noisy-*",
            "--output",
            "WARN:json",
            "--output",
            &format!("file:{}", logs.display()),
        ],
        &[],
    );
    send_all(
        &socket,
        &[
            encode(Level::Info, b"app", b"var/log/app.log", b"filtered out\n"),
            encode(Level::Error, b"app", b"var/log/app.log", b"file error\n"),
            encode(Level::Info, b"app", b"stdout", b"info\n"),
            encode(Level::Warn, b"app", b"stderr", b"warn\n"),
            encode(Level::Error, b"noisy-batch", b"stdout", b"noisy error\n"),
            encode(Level::Fatal, b"noisy-batch", b"stdout", b"noisy fatal\n"),
        ],
    );
    let objs = sink.wait_json(3, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let stopped = sink.stop();
    assert!(stopped.status.success());
    let msgs: Vec<String> = stopped
        .out
        .iter()
        .map(|l| common::parse(l)["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(msgs, ["file error", "warn", "noisy fatal"], "{objs:?}");
    let file = |p: &str| {
        std::fs::read_to_string(logs.join(p))
            .unwrap_or_default()
            .lines()
            .map(|l| l.splitn(3, ' ').nth(2).unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(file("app/var/log/app.log"), ["file error"]);
    assert_eq!(file("app/stdout"), ["info"]);
    assert_eq!(file("app/stderr"), ["warn"]);
    assert_eq!(file("noisy-batch/stdout"), ["noisy fatal"]);
}

/// Parses `records=N` out of a drop report.
fn records_in(s: &str) -> Option<u64> {
    s.split("records=").nth(1)?.split(' ').next()?.parse().ok()
}

/// A syslog reader that keeps making progress, but slower than the input
/// (about 1,000 messages/s), sets the pace of nothing: the JSON output gets
/// every line at full speed (files: JSON's reader here is this test, slower
/// than the sink), the slow output drops the excess, and what it
/// delivered plus what it reported lost is exactly what was sent.
#[test]
fn a_slow_output_that_keeps_up_partly_holds_back_nothing() {
    let _serial = heavy();
    use std::os::unix::net::UnixDatagram;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = temp_dir("slowout");
    let socket = dir.join("s.sock");
    let logsock = dir.join("slow.sock");
    let logs = dir.join("logs");
    let rx = UnixDatagram::bind(&logsock).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let slow = Arc::new(AtomicBool::new(true));
    let slow2 = Arc::clone(&slow);
    let reader = std::thread::spawn(move || {
        let (mut lines, mut reported, mut n) = (0u64, 0u64, 0u64);
        let mut buf = vec![0u8; 65536];
        while let Ok(len) = rx.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..len]);
            if m.contains("slowline ") {
                lines += 1;
            } else if m.contains("logtap-sink: dropped records=") {
                reported += records_in(&m).unwrap();
            }
            n += 1;
            if n % 10 == 0 && slow2.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        (lines, reported)
    });
    let sink = Sink::start(
        &socket,
        &[
            "--output",
            &format!("file:{}", logs.display()),
            "--output",
            &format!("syslog:unix:{}", logsock.display()),
            "--max-file-size",
            "64M",
        ],
        &[],
    );
    const N: usize = 150_000;
    let mut frames = Vec::new();
    for chunk in 0..N / 500 {
        let mut data = Vec::new();
        for i in chunk * 500..(chunk + 1) * 500 {
            data.extend_from_slice(format!("slowline {i} {}\n", "y".repeat(90)).as_bytes());
        }
        frames.push(encode(Level::Info, b"app", b"stdout", &data));
    }
    let t0 = Instant::now();
    send_all(&socket, &frames);
    // At the slow output's pace the sink would take over 30 s to read
    // this; the queues (16 MiB) hold about 100,000 of these records.
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "reading held back by the slow output: {took:?}"
    );
    sink.wait_err("dropping records", 1, Duration::from_secs(5));
    slow.store(false, Ordering::Relaxed);
    let stopped = sink.stop();
    assert!(stopped.status.success(), "{:?}", stopped.err);
    let (lines, reported) = reader.join().unwrap();
    let at_stop = |out: &str| -> u64 {
        stopped
            .err
            .iter()
            .filter(|l| l.contains(&format!("output {out}: sink stopping; records=")))
            .filter_map(|l| records_in(l))
            .sum()
    };
    let slow_out = format!("syslog:unix:{}", logsock.display());
    assert!(lines < N as u64, "the slow output dropped some ({lines})");
    assert_eq!(
        lines + reported + at_stop(&slow_out),
        N as u64,
        "syslog: delivered {lines} + reported {reported} + at stop = sent"
    );
    // The file output: every line, or counted where it is missing.
    let content = std::fs::read_to_string(logs.join("app/stdout")).unwrap();
    let flines = content.lines().filter(|l| l.contains("slowline ")).count() as u64;
    // The sink's own records go to its own platform and source.
    let notices = std::fs::read_to_string(logs.join("logtap-sink/logtap")).unwrap_or_default();
    let freported: u64 = notices
        .lines()
        .filter(|l| l.contains("logtap-sink: dropped records="))
        .filter_map(records_in)
        .sum();
    let file_out = format!("file:{}", logs.display());
    assert_eq!(
        flines + freported + at_stop(&file_out),
        N as u64,
        "file: delivered {flines} + reported {freported} + at stop = sent"
    );
}

/// Stopping with a syslog daemon that is down and many batches queued
/// takes no reconnect interval per batch: the rest is counted at once and
/// reported in one line.
#[test]
fn stopping_with_a_dead_syslog_server_is_quick_and_counts_everything() {
    let dir = temp_dir("deadstop");
    let socket = dir.join("s.sock");
    let port = free_port();
    let out = format!("syslog:tcp:127.0.0.1:{port}");
    let sink = Sink::start(&socket, &["--output", &out], &[]);
    const N: usize = 50_000;
    let mut s = UnixStream::connect(&socket).unwrap();
    for chunk in 0..N / 500 {
        let mut data = Vec::new();
        for i in chunk * 500..(chunk + 1) * 500 {
            data.extend_from_slice(format!("queued {i}\n").as_bytes());
        }
        // Paced so that each frame becomes a batch of its own.
        s.write_all(&encode(Level::Info, b"app", b"stdout", &data))
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(s);
    sink.wait_err("Connection refused", 1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let stopped = sink.stop();
    let took = t0.elapsed();
    assert!(stopped.status.success(), "{:?}", stopped.err);
    assert!(
        took < Duration::from_secs(4),
        "stopping took {took:?} (a reconnect interval per batch?)"
    );
    let reports: Vec<&String> = stopped
        .err
        .iter()
        .filter(|l| l.contains("sink stopping; records="))
        .collect();
    assert_eq!(reports.len(), 1, "one final report: {:?}", stopped.err);
    assert_eq!(records_in(reports[0]), Some(N as u64), "{:?}", stopped.err);
}

/// A symlink planted as a directory under DIR is not followed out of DIR:
/// the record is refused (counted and reported), nothing lands outside.
#[test]
fn file_output_follows_no_symlinked_directory_out_of_dir() {
    let dir = temp_dir("symdir");
    let logs = dir.join("logs");
    let victim = dir.join("victim");
    std::fs::create_dir_all(logs.join("app")).unwrap();
    std::fs::create_dir_all(&victim).unwrap();
    std::os::unix::fs::symlink(&victim, logs.join("app/evil")).unwrap();
    let socket = dir.join("s.sock");
    let sink = Sink::start(
        &socket,
        &["--output", &format!("file:{}", logs.display())],
        &[],
    );
    send_all(
        &socket,
        &[
            encode(Level::Info, b"app", b"evil/planted", b"planted line\n"),
            encode(Level::Info, b"app", b"fine", b"fine line\n"),
        ],
    );
    let fine = logs.join("app/fine");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&fine).is_ok_and(|s| s.contains("fine line")) {
        assert!(Instant::now() < deadline, "the fine line never arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopped = sink.stop();
    assert!(
        !victim.join("planted").exists(),
        "a record was written through a symlinked directory"
    );
    assert!(
        stopped.err.iter().any(|l| l.contains("evil")),
        "the refusal is reported: {:?}",
        stopped.err
    );
}

/// A tmpfs of `size` mounted on `at` for the test (root only), unmounted
/// when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        // SAFETY: geteuid(2) takes no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                !ci,
                "CI runs the tests as root: a real full disk needs a mount"
            );
            eprintln!("skipped: mounting a small tmpfs (a real full disk) needs root");
            return None;
        }
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(!ci, "mount -t tmpfs on {} failed", at.display());
            eprintln!("skipped: cannot mount a tmpfs here (a container without CAP_SYS_ADMIN?)");
            return None;
        }
        Some(Tmpfs(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Sum of `records=` and `bytes=` over the sink's drop records in `text`.
fn drop_counts(text: &str) -> (u64, u64) {
    let mut r = (0, 0);
    for l in text
        .lines()
        .filter(|l| l.contains("logtap-sink: dropped records="))
    {
        r.0 += records_in(l).unwrap();
        r.1 += l
            .split("bytes=")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap();
    }
    r
}

/// A real full disk (a 1 MiB tmpfs, nearly filled): the file output never
/// leaves half a line in a file (a write that got only part of its buffer
/// out is cut back to the last whole line), and once there is room again
/// its drop record counts exactly the lines that are missing, records and
/// bytes.
#[test]
fn a_full_disk_leaves_whole_lines_and_exact_drop_counts() {
    let _serial = heavy();
    let dir = temp_dir("fulldisk");
    let Some(_mnt) = Tmpfs::mount(&dir.join("mnt"), "1m") else {
        return;
    };
    let logs = dir.join("mnt/logs");
    let filler = dir.join("mnt/filler");
    std::fs::write(&filler, vec![0u8; 800 * 1024]).unwrap();
    let socket = dir.join("s.sock");
    let sink = Sink::start(
        &socket,
        &[
            "--output",
            &format!("file:{}", logs.display()),
            "--output",
            "json",
            "--max-file-size",
            "64M",
        ],
        &[],
    );
    let line = |i: u64| format!("line {i:>8} {}\n", "f".repeat(85));
    let frames = |from: u64, to: u64| -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut data = Vec::new();
        for i in from..to {
            data.extend_from_slice(line(i).as_bytes());
            if data.len() >= 30_000 || i + 1 == to {
                out.push(encode(Level::Info, b"app", b"stdout", &data));
                data.clear();
            }
        }
        out
    };
    // About 1 MB of text lines for about 200 KiB of room.
    const N1: u64 = 7_000;
    send_all(&socket, &frames(0, N1));
    sink.wait_json(N1 as usize, Duration::from_secs(30));
    sink.wait_err("No space left on device", 1, Duration::from_secs(10));
    // Let the output write out what it holds (and fail) before the room.
    std::thread::sleep(Duration::from_millis(500));
    std::fs::remove_file(&filler).unwrap();
    const N2: u64 = 500;
    send_all(&socket, &frames(N1, N1 + N2));
    sink.wait_json((N1 + N2) as usize, Duration::from_secs(30));
    let stopped = sink.stop();
    assert!(stopped.status.success(), "{:?}", stopped.err);
    let at_stop: u64 = stopped
        .err
        .iter()
        .filter(|l| l.contains("sink stopping; records="))
        .filter_map(|l| records_in(l))
        .sum();
    assert_eq!(at_stop, 0, "nothing left undelivered: {:?}", stopped.err);

    let content = std::fs::read(logs.join("app/stdout")).unwrap();
    assert_eq!(
        content.last(),
        Some(&b'\n'),
        "the file ends with a whole line"
    );
    let mut got = Vec::new();
    for l in String::from_utf8(content).unwrap().lines() {
        // `<timestamp> app.stdout line NNNNNNNN fff…`, whole.
        let (_, rest) = l.split_once(" app.stdout ").expect("a whole text line");
        let i: u64 = rest[5..13].trim().parse().expect("a whole line");
        assert_eq!(format!("{rest}\n"), line(i), "a whole line");
        got.push(i);
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order, once each");
    assert!(got.contains(&(N1 + N2 - 1)), "the disk had room again");
    let missing = N1 + N2 - got.len() as u64;
    assert!(missing > 0, "the disk was full");
    let notices = std::fs::read_to_string(logs.join("logtap-sink/logtap")).unwrap();
    assert_eq!(
        drop_counts(&notices),
        (missing, missing * 99),
        "the drop records count exactly the missing lines ({missing}) and their bytes"
    );
}

/// A syslog daemon that stops reading (rsyslogd stopped with SIGSTOP: its
/// Unix socket's queue fills) makes a send fail in the middle of a line
/// that goes out as three datagrams; when the daemon reads again, the
/// line's remaining pieces are sent, not the whole line again: every
/// piece arrives exactly once, in order.
#[test]
fn a_long_line_cut_by_a_failed_send_is_not_sent_twice_in_part() {
    if !have_rsyslog() {
        return;
    }
    let dir = temp_dir("resume");
    let logsock = dir.join("log.sock");
    let rs = Rsyslog::start(&dir, &logsock, free_port());
    let socket = dir.join("s.sock");
    let sink = Sink::start(
        &socket,
        &[
            "--output",
            &format!("syslog:unix:{}", logsock.display()),
            "--output",
            "json",
        ],
        &[],
    );
    let pid = rs.child.id() as i32;
    // SAFETY: kill(2) on the rsyslogd this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    // 20 lines of 3 pieces each (7 KiB, 7 KiB, the rest): the socket
    // queue (net.unix.max_dgram_qlen, 10 by default) fills part way
    // through the fourth line.
    const N: usize = 20;
    let lines: Vec<String> = (0..N)
        .map(|i| {
            (0..3000)
                .map(|k| format!("{i:02}{k:04}x"))
                .collect::<String>()
                .chars()
                .take(18_000)
                .collect()
        })
        .collect();
    let frames: Vec<Vec<u8>> = lines
        .iter()
        .map(|l| encode(Level::Info, b"app", b"stdout", format!("{l}\n").as_bytes()))
        .collect();
    send_all(&socket, &frames);
    sink.wait_json(N, Duration::from_secs(10));
    sink.wait_err("retrying", 1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(2500));
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let got = rs.wait("every piece", |l| {
        l.iter()
            .filter_map(|x| x.splitn(6, '|').nth(5))
            .map(|m| m.trim_start().len())
            .sum::<usize>()
            >= N * 18_000
            && l.last()
                .is_some_and(|x| x.ends_with(&lines[N - 1][18_000 - 20..]))
    });
    let msgs: Vec<&str> = got
        .iter()
        .map(|x| x.splitn(6, '|').nth(5).unwrap().trim_start())
        .collect();
    assert_eq!(msgs.len(), 3 * N, "three pieces per line, each once");
    assert_eq!(msgs.concat(), lines.concat(), "every piece once, in order");
    let stopped = sink.stop();
    assert!(stopped.status.success(), "{:?}", stopped.err);
}

/// `--level-prefix` reads only a line's start: a long line cut into
/// `--max-line` pieces whose later piece happens to start with `<3>`
/// keeps that text, and that piece's level is not changed.
#[test]
fn the_level_prefix_is_read_only_at_a_line_start() {
    let dir = temp_dir("prefixcont");
    let logs = dir.join("logs");
    let socket = dir.join("s.sock");
    let sink = Sink::start(
        &socket,
        &[
            "--level-prefix",
            "--max-line",
            "8",
            "--output",
            "json",
            "--output",
            &format!("file:{}", logs.display()),
        ],
        &[],
    );
    send_all(
        &socket,
        &[
            encode(Level::Info, b"app", b"stdout", b"<4>abcde<3>fghij\n"),
            encode(Level::Info, b"app", b"stdout", b"01234567<2>pi"),
            encode(Level::Info, b"app", b"stdout", b"ece\n<7>dbg\n"),
        ],
    );
    let v = sink.wait_json(5, Duration::from_secs(10));
    let got: Vec<(String, String)> = v
        .iter()
        .map(|o| {
            (
                o["level"].as_str().unwrap().to_owned(),
                o["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("WARN", "abcde"),
        ("INFO", "<3>fghij"),
        ("INFO", "01234567"),
        ("INFO", "<2>piece"),
        ("DEBUG", "dbg"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want);
    let stopped = sink.stop();
    assert!(stopped.status.success());
    let file = std::fs::read_to_string(logs.join("app/stdout")).unwrap();
    assert!(file.contains(" app.stdout <3>fghij\n"), "{file}");
    assert!(file.contains(" app.stdout <2>piece\n"), "{file}");
}

/// The log files a process has open under `dir`, by name.
fn open_files_under(pid: i32, dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.starts_with(dir) && t.is_file())
        .map(|t| t.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// With more sources than files it keeps open (64), the file output
/// closes the least recently used file, not all of them: after 65
/// sources, 64 files are open, and the one closed is the source written
/// longest ago.
#[test]
fn crossing_64_open_files_closes_the_least_recently_used() {
    let dir = temp_dir("lru");
    let logs = dir.join("logs");
    let socket = dir.join("s.sock");
    let sink = Sink::start(
        &socket,
        &[
            "--output",
            &format!("file:{}", logs.display()),
            "--output",
            "json",
        ],
        &[],
    );
    let pid = sink.pid();
    let mut s = sink.connect();
    let mut sent = 0;
    let mut write = |names: &mut dyn Iterator<Item = usize>| {
        for i in names {
            let src = format!("s{i:02}");
            s.write_all(&encode(Level::Info, b"app", src.as_bytes(), b"x\n"))
                .unwrap();
            sent += 1;
        }
        sink.wait_json(sent, Duration::from_secs(10));
    };
    // s00…s63, then s00 again (s01 is now the least recently used), s64.
    write(&mut (0..64));
    write(&mut std::iter::once(0));
    write(&mut std::iter::once(64));
    let deadline = Instant::now() + Duration::from_secs(10);
    let want: Vec<String> = (0..65)
        .filter(|&i| i != 1)
        .map(|i| format!("s{i:02}"))
        .collect();
    loop {
        let open = open_files_under(pid, &logs);
        if open == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "open files: {} {:?}",
            open.len(),
            open
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(s);
    let stopped = sink.stop();
    assert!(stopped.status.success());
    for i in 0..65 {
        let n = if i == 0 { 2 } else { 1 };
        let f = std::fs::read_to_string(logs.join(format!("app/s{i:02}"))).unwrap();
        assert_eq!(f.lines().count(), n, "s{i:02}");
    }
}

/// Source names that look like rotated files, and names longer than
/// `NAME_MAX`: a source `app.1` beside `app` (which rotates into its own
/// `app.1`) keeps its own file, and a 600-byte name is written (cut into
/// directories) rather than refused. Each file holds its own lines only.
#[test]
fn source_names_never_collide_with_rotation_or_exceed_name_max() {
    let dir = temp_dir("names");
    let logs = dir.join("logs");
    let socket = dir.join("s.sock");
    let sink = Sink::start(
        &socket,
        &[
            "--output",
            &format!("file:{}", logs.display()),
            "--output",
            "json",
            "--max-file-size",
            "2K",
            "--max-files",
            "3",
        ],
        &[],
    );
    let long = "n".repeat(600);
    let sources = ["app", "app.1", "app.2", long.as_str()];
    let mut frames = Vec::new();
    for i in 0..200 {
        for s in sources {
            let line = format!("{s:.8} {i:04}\n");
            frames.push(encode(Level::Info, b"p", s.as_bytes(), line.as_bytes()));
        }
    }
    send_all(&socket, &frames);
    sink.wait_json(800, Duration::from_secs(10));
    let stopped = sink.stop();
    assert!(stopped.status.success());
    assert!(
        !stopped.err.iter().any(|l| l.contains("output file:")),
        "no file output errors: {:?}",
        stopped.err
    );
    let tree = logs.join("p");
    // Each source's files (live and rotated) hold only its own lines, the
    // newest ones in order.
    let long_path: PathBuf = {
        let mut p = tree.clone();
        // The last 200 bytes are the file; before them, directories of
        // 199 bytes and a `%`.
        p.push(format!("{}%", "n".repeat(199)));
        p.push(format!("{}%", "n".repeat(199)));
        p.push("nn%");
        p.push("n".repeat(200));
        p
    };
    for (s, base) in [
        ("app", tree.join("app")),
        ("app.1", tree.join("app%2E1")),
        ("app.2", tree.join("app%2E2")),
        (long.as_str(), long_path),
    ] {
        let mut lines = Vec::new();
        for n in (1..=3).rev() {
            let p = PathBuf::from(format!("{}.{n}", base.display()));
            lines.extend(
                std::fs::read_to_string(&p)
                    .unwrap()
                    .lines()
                    .map(str::to_owned),
            );
        }
        lines.extend(
            std::fs::read_to_string(&base)
                .unwrap_or_else(|e| panic!("{}: {e}", base.display()))
                .lines()
                .map(str::to_owned),
        );
        let nums: Vec<u32> = lines
            .iter()
            .map(|l| {
                let (prefix, msg) = l.rsplit_once(' ').unwrap();
                assert!(prefix.ends_with(&format!(" {s:.8}")), "{s}: {l}");
                msg.parse().unwrap()
            })
            .collect();
        let first = 200 - nums.len() as u32;
        assert_eq!(nums, (first..200).collect::<Vec<_>>(), "{s}");
    }
}

/// The default per-output queue takes a 5 MB burst whole: a healthy file
/// output behind it loses nothing (short lines, where per-record overhead
/// weighs most, and 100-byte lines), and the sink's peak memory stays
/// within its bound.
#[test]
fn a_5mb_burst_fits_the_default_output_buffer() {
    let _serial = heavy();
    for len in [20usize, 100] {
        let dir = temp_dir(&format!("burst{len}"));
        let logs = dir.join("logs");
        let socket = dir.join("s.sock");
        let sink = Sink::start(
            &socket,
            &[
                "--output",
                &format!("file:{}", logs.display()),
                "--output",
                "ring",
                "--query-socket",
                dir.join("q.sock").to_str().unwrap(),
                "--max-file-size",
                "64M",
            ],
            &[],
        );
        let n = 5_000_000 / len;
        let mut frames = Vec::new();
        let mut data = Vec::new();
        for i in 0..n {
            let l = format!("{i:>9} {}\n", "b".repeat(len - 11));
            data.extend_from_slice(l.as_bytes());
            if data.len() >= 60_000 || i + 1 == n {
                frames.push(encode(Level::Info, b"app", b"stdout", &data));
                data.clear();
            }
        }
        let t0 = Instant::now();
        send_all(&socket, &frames);
        let file = logs.join("app/stdout");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::fs::metadata(&file).map_or(0, |m| m.len()) < (n * (len + 33)) as u64 {
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let hwm = sink.vm_hwm_kib();
        let stopped = sink.stop();
        assert!(stopped.status.success(), "{:?}", stopped.err);
        assert!(
            !stopped.err.iter().any(|l| l.contains("dropping")),
            "{len}-byte lines: {:?}",
            stopped.err
        );
        let got = std::fs::read_to_string(&file).unwrap().lines().count();
        assert_eq!(got, n, "{len}-byte lines: every line of the burst");
        eprintln!(
            "{len}-byte lines: {n} lines in {:?}, sink VmHWM {hwm} KiB",
            t0.elapsed()
        );
        assert!(hwm < 96 * 1024, "peak memory {hwm} KiB");
    }
}

/// A disk that stays full while lines keep coming: stderr says what was
/// lost when the drop record reached the file, once, with the amount the
/// record says (not once per failed buffer write with an ever growing
/// total, which re-said the loss of every drop record that was itself lost
/// and flooded the journal of a host whose disk is full).
#[test]
fn a_disk_that_stays_full_is_reported_on_stderr_once_and_exactly() {
    let _serial = heavy();
    let dir = temp_dir("fullstderr");
    let Some(_mnt) = Tmpfs::mount(&dir.join("mnt"), "1m") else {
        return;
    };
    let logs = dir.join("mnt/logs");
    let filler = dir.join("mnt/filler");
    std::fs::write(&filler, vec![0u8; 1000 * 1024]).unwrap();
    let socket = dir.join("s.sock");
    let sink = Sink::start(
        &socket,
        &[
            "--output",
            &format!("file:{}", logs.display()),
            "--output",
            "json",
        ],
        &[],
    );
    let line = |i: u64| format!("line {i:>8} {}\n", "f".repeat(85));
    let mut s = UnixStream::connect(&socket).unwrap();
    // Two seconds of small frames while the disk is full: the output
    // writes out (and fails) many times.
    let mut i = 0;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let mut data = Vec::new();
        for _ in 0..20 {
            data.extend_from_slice(line(i).as_bytes());
            i += 1;
        }
        s.write_all(&encode(Level::Info, b"app", b"stdout", &data))
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let n1 = i;
    sink.wait_json(n1 as usize, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    std::fs::remove_file(&filler).unwrap();
    let mut data = Vec::new();
    for _ in 0..100 {
        data.extend_from_slice(line(i).as_bytes());
        i += 1;
    }
    s.write_all(&encode(Level::Info, b"app", b"stdout", &data))
        .unwrap();
    drop(s);
    sink.wait_json(i as usize, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let stopped = sink.stop();
    assert!(stopped.status.success(), "{:?}", stopped.err);

    let content = std::fs::read_to_string(logs.join("app/stdout")).unwrap_or_default();
    let missing = i - content.lines().count() as u64;
    assert!(missing > 0, "the disk was full");
    let notices = std::fs::read_to_string(logs.join("logtap-sink/logtap")).unwrap();
    assert_eq!(
        drop_counts(&notices),
        (missing, missing * 99),
        "the drop records count exactly the missing lines"
    );
    let said: Vec<&String> = stopped
        .err
        .iter()
        .filter(|l| l.contains("logtap-sink: dropped records="))
        .collect();
    let said_text: String = said.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(
        drop_counts(&said_text),
        (missing, missing * 99),
        "stderr says exactly what is missing, each loss once: {} lines, first {:?}",
        said.len(),
        said.first()
    );
    assert!(
        stopped.err.len() < 10,
        "a few lines on stderr, not one per failed write: {}",
        stopped.err.len()
    );
}

/// `--max-files` out of range is refused at start with one line: a huge
/// value (2^64-1) was taken, and the file output then spun through that
/// many renames at its first rotation, so that the sink did not even stop
/// on SIGTERM.
#[test]
fn a_huge_max_files_is_refused() {
    let dir = temp_dir("maxfiles");
    for n in ["18446744073709551615", "1001", "lots"] {
        let mut child = Command::new(BIN)
            .arg("--socket")
            .arg(dir.join("s.sock"))
            .arg("--output")
            .arg(format!("file:{}", dir.join("logs").display()))
            .args(["--max-files", n])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = common::wait_timeout(&mut child, Duration::from_secs(5));
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("--max-files {n} was accepted");
        }
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(status.unwrap().code(), Some(2), "{n}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("--max-files"), "{err}");
    }
}

/// Records refused one by one, interleaved with good ones (a source `a/b`
/// beside a source `a`, which a client chooses), cannot flood stderr: the
/// error and the drop reports are said at most every 10 s, the drop
/// reports adding up to exactly what was refused. Each refused record
/// still has its drop record in the output. It was two stderr lines per
/// refused record.
#[test]
fn records_refused_one_by_one_do_not_flood_stderr() {
    let dir = temp_dir("conflict");
    let logs = dir.join("logs");
    let socket = dir.join("s.sock");
    let sink = Sink::start(
        &socket,
        &[
            "--output",
            &format!("file:{}", logs.display()),
            "--output",
            "json",
        ],
        &[],
    );
    const N: usize = 500;
    let mut s = UnixStream::connect(&socket).unwrap();
    s.write_all(&encode(Level::Info, b"app", b"a", b"first\n"))
        .unwrap();
    for i in 0..N {
        let bad = format!("conflict {i:04}\n");
        s.write_all(&encode(Level::Info, b"app", b"a/b", bad.as_bytes()))
            .unwrap();
        let good = format!("fine {i:04}\n");
        s.write_all(&encode(Level::Info, b"app", b"ok", good.as_bytes()))
            .unwrap();
        if i % 10 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    drop(s);
    sink.wait_json(2 * N + 1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let stopped = sink.stop();
    assert!(stopped.status.success(), "{:?}", stopped.err);
    let good = std::fs::read_to_string(logs.join("app/ok")).unwrap();
    assert_eq!(good.lines().count(), N, "every good line is in its file");
    let notices = std::fs::read_to_string(logs.join("logtap-sink/logtap")).unwrap();
    assert_eq!(drop_counts(&notices), (N as u64, (N * 13) as u64));
    let said: String = stopped
        .err
        .iter()
        .filter(|l| l.contains("logtap-sink: dropped records="))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        drop_counts(&said),
        (N as u64, (N * 13) as u64),
        "stderr adds up to what was refused: {:?}",
        stopped.err
    );
    assert!(
        stopped.err.len() <= 6,
        "a few lines, not two per refused record: {} lines, {:?}",
        stopped.err.len(),
        &stopped.err[..stopped.err.len().min(6)]
    );
}
