//! At scale: single writes of 10 MB and 100 MB (many times the buffer) and
//! 300 tapped processes alive at once, through the real logtap-sink and a
//! `file:` target, compared byte for byte with what the programs wrote.
//!
//! Programs: tests/programs/c/scale.c (built with the suite's hardening
//! flags) and Python's `sys.stdout.buffer.write`. Each program's stdout is
//! a regular file, so what it wrote is on disk to compare with. Each line
//! of the big writes is numbered and differs from every other, so a piece
//! delivered twice, out of place or cut shows.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MB10: usize = 10_000_000;
const MB100: usize = 100_000_000;
/// The smallest `LLT_BUFFER_SIZE` (src/config.rs clamps to 64K..1G): a
/// 100 MB write is then 1,500 times the buffer.
const SMALLEST_BUFFER: &str = "64K";
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// The tests of this file one at a time: each keeps both cores busy (100 MB
/// through the sink, 300 processes starting), and a sink starved of the
/// CPU for 100 ms by another of them counts as stalled, so the library
/// drops, as designed, what a test of a healthy sink must not see.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn scale() -> PathBuf {
    c_program("scale", CVariant::Plain)
}

fn sink_bin() -> PathBuf {
    let p = manifest_dir().join("target/release/logtap-sink");
    assert!(
        p.exists(),
        "{} missing: run `cargo build --release --workspace` first (make test does)",
        p.display()
    );
    p
}

/// Line `i` of `scale big` (and of the Python writer): 100 bytes.
fn big_line(i: usize, out: &mut Vec<u8>) {
    let start = out.len();
    write!(out, "{i:09} ").unwrap();
    let k0 = out.len() - start;
    for k in k0..99 {
        out.push(b'a' + ((i + k) % 26) as u8);
    }
    out.push(b'\n');
}

/// The N bytes `scale big N` writes.
fn big_bytes(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n + 100);
    let mut i = 0;
    while v.len() < n {
        big_line(i, &mut v);
        i += 1;
    }
    v.truncate(n);
    v
}

/// The same bytes, written by Python in one `sys.stdout.buffer.write`.
const PY_BIG: &str = r#"
import sys
n = int(sys.argv[1])
letters = b"abcdefghijklmnopqrstuvwxyz" * 5
def line(i):
    r = (i + 10) % 26
    return b"%09d " % i + letters[r:r + 89] + b"\n"
data = b"".join(line(i) for i in range((n + 99) // 100))[:n]
w = sys.stdout.buffer.write(data)
sys.stdout.buffer.flush()
sys.stderr.write("write returned %d\n" % w)
"#;

// ------------------------------------------------------------------ sink

/// A real logtap-sink, its JSON lines in a file.
struct Sink {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Drop for Sink {
    /// A failing test must not leave its sink running (or stopped).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Sink {
    fn start(dir: &Path, tag: &str, sock: &Path) -> Sink {
        let out = dir.join(format!("sink-{tag}.jsonl"));
        let err = dir.join(format!("sink-{tag}.err"));
        let child = Command::new(sink_bin())
            .arg("--socket")
            .arg(sock)
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .expect("start logtap-sink");
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(sock).is_err() {
            assert!(Instant::now() < deadline, "logtap-sink did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        Sink { child, out, err }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGTERM: the sink drains its connections and exits 0.
    fn stop(mut self) -> Delivered {
        // SAFETY: signalling our own child, not yet waited for.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(120);
        let st = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < deadline, "logtap-sink did not stop");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(
            st.success(),
            "logtap-sink exited with {st}: {}",
            std::fs::read_to_string(&self.err).unwrap_or_default()
        );
        Delivered::read(&self.out)
    }

    /// The sink was killed: what it printed before.
    fn killed(mut self) -> Delivered {
        let st = self.child.wait().unwrap();
        assert_eq!(st.signal(), Some(libc::SIGKILL), "the sink was killed");
        Delivered::read(&self.out)
    }
}

/// What a sink printed, per (source, pid): the bytes of the lines
/// (`message` plus the `\n` the sink took off, none after a `partial`
/// piece), and the drop notices.
#[derive(Default)]
struct Delivered {
    bytes: BTreeMap<(String, u64), Vec<u8>>,
    /// (source the bytes were written to, bytes, writes), one per notice.
    notices: Vec<(String, u64, u64)>,
    records: usize,
}

impl Delivered {
    fn read(path: &Path) -> Delivered {
        let mut d = Delivered::default();
        let f = BufReader::with_capacity(1 << 20, File::open(path).unwrap());
        for line in f.lines() {
            let line = line.unwrap();
            let o: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("the sink printed bad JSON {line:?}: {e}"));
            d.records += 1;
            let source = o["source"].as_str().unwrap().to_string();
            if source == logtap_wire::SELF_SOURCE {
                d.notices.push((
                    o["dropped_source"].as_str().unwrap_or("?").to_string(),
                    o["dropped_bytes"].as_u64().unwrap_or(0),
                    o["dropped_writes"].as_u64().unwrap_or(0),
                ));
                continue;
            }
            assert!(
                o.get("message_base64").is_none(),
                "the programs write ASCII only: {line}"
            );
            let pid = o["pid"].as_u64().unwrap_or(0);
            let v = d.bytes.entry((source, pid)).or_default();
            v.extend_from_slice(o["message"].as_str().unwrap().as_bytes());
            if o.get("partial") != Some(&serde_json::Value::Bool(true)) {
                v.push(b'\n');
            }
        }
        d
    }

    /// Everything of `source`, whatever the pid (one writer).
    fn source(&self, source: &str) -> Vec<u8> {
        let mut v = Vec::new();
        let mut pids = 0;
        for ((s, _), b) in &self.bytes {
            if s == source {
                v.extend_from_slice(b);
                pids += 1;
            }
        }
        assert!(pids <= 1, "{source} came from {pids} pids");
        v
    }

    fn dropped(&self, source: &str) -> u64 {
        self.notices
            .iter()
            .filter(|n| n.0 == source)
            .map(|n| n.1)
            .sum()
    }
}

// ------------------------------------------------------------------ runs

struct Ran {
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs `argv` in `dir` with stdout on the file `dir/stdout` (a regular
/// file: the program's own record of what it wrote) and `env` (the
/// library's settings among them); fails on a hang or a non-zero exit.
fn run(dir: &Path, argv: &[OsString], env: &[(String, String)]) -> Ran {
    let stdout = dir.join("stdout");
    let stderr = dir.join("stderr");
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LC_ALL", "C.UTF-8")
        .env("LOGFILE", dir.join("app.log"))
        .stdin(Stdio::null())
        .stdout(File::create(&stdout).unwrap())
        .stderr(File::create(&stderr).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
    let deadline = Instant::now() + RUN_TIMEOUT;
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("HANG: {argv:?} did not finish within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let err = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(st.success(), "{argv:?} ended with {st}; stderr: {err}");
    Ran {
        stdout: std::fs::read(&stdout).unwrap(),
        stderr: err,
    }
}

fn lib_env(target: String, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v = vec![
        (
            "LD_PRELOAD".to_string(),
            so_path().to_string_lossy().into_owned(),
        ),
        ("LLT_TAP_INTO".to_string(), "1".to_string()),
        ("LLT_TARGET".to_string(), target),
        ("LLT_PLATFORM".to_string(), "scale".to_string()),
        ("LLT_EXIT_TIMEOUT_MS".to_string(), "60000".to_string()),
    ];
    v.extend(extra.iter().map(|(k, x)| (k.to_string(), x.to_string())));
    v
}

fn kv(k: &str, v: impl ToString) -> (String, String) {
    (k.to_string(), v.to_string())
}

fn big_argv(kind: &str, n: usize) -> Vec<OsString> {
    match kind {
        "c" => vec![scale().into_os_string(), os("big"), os(n.to_string())],
        _ => {
            let py = python3().expect("python3");
            vec![py.into_os_string(), os("-c"), os(PY_BIG), os(n.to_string())]
        }
    }
}

/// The first difference between `got` and `want`, as line numbers.
#[track_caller]
fn same(what: &str, got: &[u8], want: &[u8]) {
    if got != want {
        let first = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        let ctx = |v: &[u8]| {
            let lo = first.saturating_sub(40).min(v.len());
            String::from_utf8_lossy(&v[lo..(first + 60).min(v.len())]).into_owned()
        };
        panic!(
            "{what}: got {} bytes, want {}; first difference at byte {first} (line {}):\n  got  …{:?}\n  want …{:?}",
            got.len(),
            want.len(),
            first / 100,
            ctx(got),
            ctx(want)
        );
    }
}

/// One big write through the real sink: what the sink printed and the
/// program's own stdout.
fn big_via_sink(dir: &Path, kind: &str, n: usize, extra: &[(&str, &str)]) -> (Delivered, Ran) {
    let sock = dir.join("s.sock");
    let sink = Sink::start(dir, "0", &sock);
    let ran = run(
        dir,
        &big_argv(kind, n),
        &lib_env(format!("socket:{}", sock.display()), extra),
    );
    (sink.stop(), ran)
}

/// One big write to a `file:` target: the decoded target per source and
/// the program's own stdout.
fn big_via_file(
    dir: &Path,
    kind: &str,
    n: usize,
    extra: &[(&str, &str)],
) -> (BTreeMap<String, Vec<u8>>, Ran) {
    let target = dir.join("target.bin");
    let ran = run(
        dir,
        &big_argv(kind, n),
        &lib_env(format!("file:{}", target.display()), extra),
    );
    (decode_target(&target), ran)
}

/// Every case of one writer: 10 MB and 100 MB (C) or 10 MB (Python), the
/// default buffer and the smallest, to the sink and to a file, tapped and
/// suppressed. Each must hold exactly the program's bytes, no drop (a
/// drop the notices account for exactly, as under heavy load, is tried
/// again, up to 3 runs in all).
fn big_cases(kind: &str, sizes: &[usize]) {
    let _one = one_at_a_time();
    let t = TestDir::new(&format!("big-{kind}"));
    let mut fails = Vec::new();
    for &n in sizes {
        let want = big_bytes(n);
        for buf in [None, Some(SMALLEST_BUFFER)] {
            for suppress in [false, true] {
                let mut extra = Vec::new();
                if let Some(b) = buf {
                    extra.push(("LLT_BUFFER_SIZE", b));
                }
                if suppress {
                    extra.push(("LLT_SUPPRESS_STDOUT", "true"));
                }
                let label = format!(
                    "{kind} {n} bytes, buffer {}, {}",
                    buf.unwrap_or("default"),
                    if suppress { "suppressed" } else { "tapped" }
                );
                // The program's own stdout: everything, or nothing when
                // suppressed.
                let own = if suppress { &[][..] } else { &want[..] };
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let mut attempt = 1;
                    let (got, ran, took) = loop {
                        let dir = t.sub("sink");
                        let t0 = Instant::now();
                        let (got, ran) = big_via_sink(&dir, kind, n, &extra);
                        let stalled = !got.notices.is_empty() || ran.stdout.len() != own.len();
                        if !stalled || attempt == 3 {
                            break (got, ran, t0.elapsed());
                        }
                        // A healthy sink kept off the CPU for the stall
                        // threshold (50-100 ms; seen at a load average of
                        // 48 on 2 cores) counts as stalled: the library
                        // drops and says exactly what, or, suppressed,
                        // gives the rest to the original output. Check
                        // that nothing is lost, then try again (twice at
                        // most: a sink that is healthy must get it whole).
                        let sent = got.source("stdout");
                        if suppress {
                            let mut all = sent.clone();
                            all.extend_from_slice(&ran.stdout);
                            if let Some(d) = line_diff(&all, &want) {
                                panic!("{label}: target + original output vs the write: {d}");
                            }
                        } else {
                            same(&format!("{label}: own stdout"), &ran.stdout, own);
                            delivered_or_reported(
                                &label,
                                &sent,
                                got.dropped("stdout"),
                                &want,
                                0,
                                0,
                            );
                        }
                        eprintln!(
                            "{label}: the sink counted as stalled ({} bytes delivered, {:?} \
                             reported dropped{}): again",
                            sent.len(),
                            got.notices,
                            if suppress {
                                format!(", {} bytes to the original output", ran.stdout.len())
                            } else {
                                String::new()
                            }
                        );
                        attempt += 1;
                    };
                    same(
                        &format!("{label}: the program's own stdout"),
                        &ran.stdout,
                        own,
                    );
                    assert!(
                        got.notices.is_empty(),
                        "{label}: the sink was told of drops: {:?}",
                        got.notices
                    );
                    same(&format!("{label}: sink"), &got.source("stdout"), &want);
                    eprintln!(
                        "{label}: sink got it whole in {took:?}, attempt {attempt} ({})",
                        ran.stderr.trim()
                    );
                    let dir = t.sub("file");
                    let (got, ran) = big_via_file(&dir, kind, n, &extra);
                    same(
                        &format!("{label}: the program's own stdout (file target)"),
                        &ran.stdout,
                        own,
                    );
                    let notices = got.get(logtap_wire::SELF_SOURCE);
                    assert!(
                        notices.is_none(),
                        "{label}: file target holds drop notices: {notices:?}"
                    );
                    same(
                        &format!("{label}: file target"),
                        got.get("stdout").map(|v| &v[..]).unwrap_or(b""),
                        &want,
                    );
                    let _ = std::fs::remove_dir_all(&dir);
                }));
                if let Err(e) = r {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    fails.push(format!("[{label}] {msg}"));
                }
            }
        }
    }
    assert!(
        fails.is_empty(),
        "{} case(s) failed:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

/// One write(2) of 10 MB and one of 100 MB by a C program, with the
/// default 8 MiB buffer and the smallest (64 KiB: the 100 MB write is
/// 1,500 buffers), to logtap-sink and to a `file:` target, tapped and
/// suppressed: the target holds exactly the program's bytes, no drop.
#[test]
fn c_single_writes_of_10_and_100_mb_arrive_whole() {
    big_cases("c", &[MB10, MB100]);
}

/// Python's `sys.stdout.buffer.write` of 10 MB (one write(2) call).
#[test]
fn python_single_write_of_10_mb_arrives_whole() {
    if python3().is_none() {
        return;
    }
    big_cases("py", &[MB10]);
}

// ------------------------------------------------------------ sink stopped

/// Checks what arrived of a big write against the write, exactly: the
/// delivered bytes are pieces of the write, each once, in order; what is
/// missing is exactly what the notices say was dropped. Pieces end after a
/// newline, except where a sink died holding the start of a line: at most
/// `max_cut` delivered lines may then be the end of a line, placed by the
/// whole line after them. Up to `unreported` missing bytes may be missing
/// from the notices (what a killed sink held). Returns the bytes delivered
/// and the bytes missing without a notice.
fn delivered_or_reported(
    what: &str,
    got: &[u8],
    dropped: u64,
    want: &[u8],
    max_cut: usize,
    unreported: u64,
) -> (usize, u64) {
    let number = |l: &[u8]| -> Option<usize> {
        let n = std::str::from_utf8(l.get(..9)?).ok()?.parse().ok()?;
        (l.get(9) == Some(&b' ')).then_some(n)
    };
    let lines: Vec<&[u8]> = got.split_inclusive(|&b| b == b'\n').collect();
    let mut pos = 0; // where in `want` the next delivered byte may come from
    let mut cut = 0;
    for (k, &line) in lines.iter().enumerate() {
        // A whole line's number says where it belongs in the write; the
        // end of a line, by the whole line that follows it.
        let at = match number(line) {
            Some(n) if line.len() == 100 || k + 1 == lines.len() => n * 100,
            _ => {
                cut += 1;
                let next = lines.get(k + 1).and_then(|l| number(l));
                let Some(n) = next else {
                    panic!(
                        "{what}: delivered line {k} is not a line of the write: {:?}",
                        String::from_utf8_lossy(line)
                    )
                };
                (n * 100).saturating_sub(line.len())
            }
        };
        assert!(
            at >= pos,
            "{what}: bytes {at}.. of the write delivered twice or out of order (line {k}: {:?})",
            String::from_utf8_lossy(line)
        );
        assert!(
            want.get(at..at + line.len()) == Some(line),
            "{what}: delivered line {k} altered or misplaced: {:?}",
            String::from_utf8_lossy(line)
        );
        pos = at + line.len();
    }
    assert!(
        cut <= max_cut,
        "{what}: {cut} delivered lines are cut (at most {max_cut} expected)"
    );
    let missing = (want.len() - got.len()) as u64;
    assert!(
        dropped <= missing && missing - dropped <= unreported,
        "{what}: {} of {} bytes delivered, {missing} missing, but the notices say {dropped} dropped{}",
        got.len(),
        want.len(),
        if unreported > 0 {
            format!(" (at most {unreported} may go unreported)")
        } else {
            String::new()
        }
    );
    (got.len(), missing - dropped)
}

/// The sink is SIGSTOPped for 1 s in the middle of a 100 MB write (the
/// program's own helper thread stops it once the write has begun), then
/// resumed: the sink gets the whole write, or whole lines of it in order
/// and a notice naming exactly the bytes that are missing.
#[test]
fn big_write_with_the_sink_stopped_then_resumed_is_whole_or_reported() {
    let _one = one_at_a_time();
    let t = TestDir::new("bigstop");
    let want = big_bytes(MB100);
    for buf in ["8M", SMALLEST_BUFFER] {
        let dir = t.sub(buf);
        let sock = dir.join("s.sock");
        let sink = Sink::start(&dir, "0", &sock);
        let ran = run(
            &dir,
            &big_argv("c", MB100),
            &[
                lib_env(
                    format!("socket:{}", sock.display()),
                    &[("LLT_BUFFER_SIZE", buf)],
                ),
                vec![kv("SCALE_STOP_PID", sink.pid()), kv("SCALE_STOP_MS", 1000)],
            ]
            .concat(),
        );
        let got = sink.stop();
        same("the program's own stdout", &ran.stdout, &want);
        assert!(
            ran.stderr.contains("stopped_during_write=1"),
            "buffer {buf}: the sink was not stopped during the write ({}); the test proves nothing",
            ran.stderr.trim()
        );
        let x = got.dropped("stdout");
        let (d, _) = delivered_or_reported(
            &format!("buffer {buf}"),
            &got.source("stdout"),
            x,
            &want,
            0,
            0,
        );
        eprintln!(
            "buffer {buf}: delivered {d} bytes, reported {x} dropped, {} notices",
            got.notices.len()
        );
    }
}

/// What a SIGKILLed sink can take with it unreported: what it had read
/// but not yet printed (its output queue, `--output-buffer`, 16 MiB by
/// default) and what sat in its socket (the kernel's buffer, well under
/// 1 MiB). README "Limits" says so.
const KILLED_SINK_HOLDS: u64 = (16 << 20) + (1 << 20);

/// The sink is SIGSTOPped in the middle of a 100 MB write and then
/// SIGKILLed; a new sink takes its socket, and the program writes one more
/// line after the big write: across both sinks, every delivered line
/// appears once and in order, and the notices name what is missing, except
/// at most what the killed sink held.
#[test]
fn big_write_with_the_sink_stopped_then_killed_is_whole_or_reported() {
    sink_killed_mid_write(KILLED_SINK_HOLDS);
}

/// The same, exactly: nothing may go missing unreported, not even what the
/// killed sink had read. Fails today (2 of 3 runs: about 2 MB the first
/// sink had read in the 10 ms before it was stopped, never printed); for a
/// sink that gives back ring space only once it has written the bytes out.
#[test]
#[ignore = "a SIGKILLed sink loses what it had read but not printed, unreported (README Limits)"]
fn big_write_with_the_sink_stopped_then_killed_loses_nothing_unreported() {
    sink_killed_mid_write(0);
}

fn sink_killed_mid_write(unreported: u64) {
    let _one = one_at_a_time();
    let t = TestDir::new("bigkill");
    // The big write, then the next numbered line in a write of its own.
    let want = big_bytes(MB100 + 100);
    for buf in ["8M", SMALLEST_BUFFER] {
        let dir = t.sub(buf);
        let sock = dir.join("s.sock");
        let go = dir.join("go");
        let first = Sink::start(&dir, "0", &sock);
        let env = [
            lib_env(
                format!("socket:{}", sock.display()),
                &[("LLT_BUFFER_SIZE", buf)],
            ),
            vec![
                kv("SCALE_STOP_PID", first.pid()),
                kv("SCALE_STOP_MS", 1000),
                kv("SCALE_STOP_KILL", 1),
                kv("SCALE_WAIT_FILE", go.display()),
            ],
        ]
        .concat();
        let argv = big_argv("c", MB100);
        let dir2 = dir.clone();
        let prog = std::thread::spawn(move || run(&dir2, &argv, &env));
        // The program kills the first sink; a second one takes the socket,
        // then the program writes its last line.
        let before = first.killed();
        let _ = std::fs::remove_file(&sock);
        let second = Sink::start(&dir, "1", &sock);
        File::create(&go).unwrap();
        let ran = prog.join().unwrap();
        let after = second.stop();
        same("the program's own stdout", &ran.stdout, &want);
        assert!(
            ran.stderr.contains("stopped_during_write=1"),
            "buffer {buf}: the sink was not stopped during the write ({})",
            ran.stderr.trim()
        );
        let mut got = before.source("stdout");
        got.extend_from_slice(&after.source("stdout"));
        let dropped = before.dropped("stdout") + after.dropped("stdout");
        // The second sink may start with the end of a line whose start
        // the first one held when it died.
        let (d, lost) = delivered_or_reported(
            &format!("buffer {buf}"),
            &got,
            dropped,
            &want,
            1,
            unreported,
        );
        eprintln!(
            "buffer {buf}: first sink printed {} bytes, second {}; {d} delivered, {dropped} \
             reported dropped, {lost} missing unreported",
            before.source("stdout").len(),
            after.source("stdout").len()
        );
    }
}

// ------------------------------------------------------------- 300 at once

/// One sample of a process's memory and fds.
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    rss_kb: u64,
    hwm_kb: u64,
    shmem_kb: u64,
    fds: usize,
}

fn usage(pid: i32) -> Option<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some(Usage {
        rss_kb: kb("VmRSS:"),
        hwm_kb: kb("VmHWM:"),
        shmem_kb: kb("RssShmem:"),
        fds,
    })
}

/// Checks one source of the fleet: every process's lines, each once, in
/// its order, with its pid as the sink's `pid`; and the same lines as the
/// program's own file.
fn check_fleet_source(what: &str, got: &Delivered, source: &str, own: &[u8], n: usize, lines: u64) {
    let mut pids = 0;
    let mut total = 0u64;
    for ((s, pid), bytes) in &got.bytes {
        if s != source {
            continue;
        }
        pids += 1;
        let mut next = 0u64;
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let text = String::from_utf8_lossy(line);
            let f: Vec<&str> = text.split(' ').collect();
            assert!(
                f.len() >= 6 && f[0] == "pid" && f[2] == "seq",
                "{what}: not a line of the program: {text:?}"
            );
            assert_eq!(
                f[1].parse::<u64>().ok(),
                Some(*pid),
                "{what}: line of pid {} delivered as pid {pid}: {text:?}",
                f[1]
            );
            let seq: u64 = f[3].parse().unwrap();
            assert_eq!(
                seq, next,
                "{what}: pid {pid}: line {seq} where line {next} was due (lost, doubled or reordered)"
            );
            next += 1;
            total += 1;
        }
        assert_eq!(next, lines, "{what}: pid {pid}: {next} of {lines} lines");
    }
    assert_eq!(pids, n, "{what}: lines from {pids} processes, want {n}");
    assert_eq!(total, n as u64 * lines);
    // The program's own file holds the same lines (interleaved otherwise).
    let mut all: Vec<u8> = Vec::new();
    for ((s, _), b) in &got.bytes {
        if s == source {
            all.extend_from_slice(b);
        }
    }
    if let Some(d) = line_diff(&all, own) {
        panic!("{what}: the sink vs the program's own output: {d}");
    }
}

/// 300 processes, each tapped (stdout and a log file they all append to)
/// to one logtap-sink with its default limits, all alive at once: every
/// line of every process arrives once and in that process's order, and the
/// sink's memory and fds stay bounded while they run (reported).
#[test]
fn three_hundred_processes_tapped_at_once() {
    const N: usize = 300;
    const LINES: u64 = 200;
    let _one = one_at_a_time();
    let t = TestDir::new("fleet");
    let dir = t.sub("run");
    let sock = dir.join("s.sock");
    let log = dir.join("app.log");
    let sink = Sink::start(&dir, "0", &sock);
    let sink_pid = sink.pid();
    let idle = usage(sink_pid).expect("sink status");

    let stdout = dir.join("stdout");
    let stderr = dir.join("stderr");
    let mut cmd = Command::new(scale());
    cmd.args(["fleet", &N.to_string(), &LINES.to_string()])
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LOGFILE", &log)
        .stdin(Stdio::piped())
        .stdout(File::create(&stdout).unwrap())
        .stderr(File::create(&stderr).unwrap());
    for (k, v) in lib_env(
        format!("socket:{}", sock.display()),
        &[("LLT_TAP_FILE", &log.to_string_lossy())],
    ) {
        cmd.env(k, v);
    }
    // Sample the sink's memory and fds while the processes run.
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let sampler = std::thread::spawn(move || {
        let mut peak = Usage::default();
        while !stop2.load(Ordering::SeqCst) {
            if let Some(u) = usage(sink_pid) {
                peak.rss_kb = peak.rss_kb.max(u.rss_kb);
                peak.hwm_kb = peak.hwm_kb.max(u.hwm_kb);
                peak.shmem_kb = peak.shmem_kb.max(u.shmem_kb);
                peak.fds = peak.fds.max(u.fds);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    });
    let t0 = Instant::now();
    let mut child = cmd.spawn().expect("spawn scale fleet");
    // Wait until every child has written everything (they stay alive).
    let deadline = t0 + RUN_TIMEOUT;
    let mut all_written = false;
    while Instant::now() < deadline {
        let e = std::fs::read_to_string(&stderr).unwrap_or_default();
        if e.contains("all written") {
            all_written = true;
            break;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("scale fleet ended early ({st}): {e}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if !all_written {
        let _ = child.kill();
        panic!("HANG: the {N} children did not all write within {RUN_TIMEOUT:?}");
    }
    let written = t0.elapsed();
    // All 300 alive, their lines written: give the sink a moment to take
    // what is buffered, and sample it with every connection open.
    let settle = Instant::now();
    let mut alive = usage(sink_pid).unwrap();
    while settle.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(200));
        let u = usage(sink_pid).unwrap();
        let done = u.fds == alive.fds && u.rss_kb == alive.rss_kb;
        alive = u;
        if done {
            break;
        }
    }
    drop(child.stdin.take()); // let them exit
    let deadline = Instant::now() + RUN_TIMEOUT;
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "HANG: scale fleet did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    let ran_for = t0.elapsed();
    stop.store(true, Ordering::SeqCst);
    let peak = sampler.join().unwrap();
    let err = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(st.success(), "scale fleet ended with {st}: {err}");
    let got = sink.stop();
    eprintln!(
        "{N} processes: all written after {written:?}, all exited after {ran_for:?}; sink idle: \
         VmRSS {} KiB, {} fds; with all {N} alive: VmRSS {} KiB (shared {} KiB), {} fds; \
         peak while running: VmRSS {} KiB, VmHWM {} KiB, RssShmem {} KiB, {} fds; {} records",
        idle.rss_kb,
        idle.fds,
        alive.rss_kb,
        alive.shmem_kb,
        alive.fds,
        peak.rss_kb,
        peak.hwm_kb,
        peak.shmem_kb,
        peak.fds,
        got.records
    );
    assert!(got.notices.is_empty(), "drops reported: {:?}", got.notices);
    let own_out = std::fs::read(&stdout).unwrap();
    let own_log = std::fs::read(&log).unwrap();
    check_fleet_source("stdout", &got, "stdout", &own_out, N, LINES);
    let log_source = log.to_string_lossy().trim_start_matches('/').to_string();
    check_fleet_source("log file", &got, &log_source, &own_log, N, LINES);
    // Bounded: at most a few fds per process (a connection, a shared
    // buffer) and far less memory than the processes' buffers together
    // (300 x 8 MiB).
    assert!(
        peak.fds <= 3 * N + 64,
        "the sink held {} fds for {N} processes",
        peak.fds
    );
    assert!(
        peak.hwm_kb <= 256 * 1024,
        "the sink's memory peaked at {} KiB for {N} processes",
        peak.hwm_kb
    );
}
