//! Helpers for tests that run the `logtap-sink` binary.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_logtap-sink");

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "logtap-sink-test-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

type Lines = Arc<Mutex<Vec<String>>>;

fn collect(r: impl Read + Send + 'static, into: Lines) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::with_capacity(1 << 20, r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let s = String::from_utf8(buf.clone()).expect("sink output must be UTF-8");
                    into.lock()
                        .unwrap()
                        .push(s.trim_end_matches('\n').to_owned());
                }
            }
        }
    })
}

/// A running sink with its stdout and stderr collected line by line.
pub struct Sink {
    pub child: Child,
    pub socket: PathBuf,
    pub out: Lines,
    pub err: Lines,
    readers: Vec<JoinHandle<()>>,
}

pub struct Stopped {
    pub status: ExitStatus,
    pub out: Vec<String>,
    pub err: Vec<String>,
}

impl Sink {
    pub fn start(socket: &Path, args: &[&str], env: &[(&str, &str)]) -> Sink {
        let mut cmd = Command::new(BIN);
        cmd.arg("--socket").arg(socket).args(args);
        for k in [
            "POD_NAME",
            "POD_NAMESPACE",
            "NODE_NAME",
            "SINK_SOCKET_PATH",
            "SINK_FORMAT",
            "SINK_MAX_LINE",
        ] {
            cmd.env_remove(k);
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn logtap-sink");
        let out = Lines::default();
        let err = Lines::default();
        let readers = vec![
            collect(child.stdout.take().expect("stdout"), out.clone()),
            collect(child.stderr.take().expect("stderr"), err.clone()),
        ];
        let sink = Sink {
            child,
            socket: socket.to_owned(),
            out,
            err,
            readers,
        };
        sink.wait_ready();
        sink
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "sink did not start listening on {}: {:?}",
            self.socket.display(),
            self.err.lock().unwrap()
        );
    }

    pub fn connect(&self) -> UnixStream {
        UnixStream::connect(&self.socket).expect("connect to sink")
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits until stdout has at least `n` lines; returns them parsed.
    pub fn wait_json(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let have = self.out.lock().unwrap().len();
            if have >= n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} lines, have {have}; stderr: {:?}",
                self.err.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self.out.lock().unwrap().iter().map(|l| parse(l)).collect()
    }

    /// Waits until stderr has a line containing `needle` (`count` of them).
    pub fn wait_err(&self, needle: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let have = self
                .err
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(needle))
                .count();
            if have >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {count} stderr lines with {needle:?}: {:?}",
                self.err.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub fn vm_hwm_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status")
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with the pid of our own child process; no memory
        // is involved.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Sends `sig` and waits (at most 20 s) for the sink to exit.
    pub fn stop_with(mut self, sig: i32) -> Stopped {
        self.signal(sig);
        let status = wait_timeout(&mut self.child, Duration::from_secs(20))
            .expect("sink did not exit after signal");
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        let out = std::mem::take(&mut *self.out.lock().unwrap());
        let err = std::mem::take(&mut *self.err.lock().unwrap());
        Stopped { status, out, err }
    }

    pub fn stop(self) -> Stopped {
        self.stop_with(libc::SIGTERM)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn parse(line: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("output line is not JSON ({e}): {line:?}"));
    assert!(v.is_object(), "not an object: {line}");
    v
}

/// The exact bytes of a message: `message_base64` when present.
pub fn message_bytes(v: &serde_json::Value) -> Vec<u8> {
    match v.get("message_base64").and_then(|b| b.as_str()) {
        Some(b) => base64_decode(b),
        None => v["message"]
            .as_str()
            .expect("message string")
            .as_bytes()
            .to_vec(),
    }
}

/// Standard base64 decoding, written independently of the sink's encoder.
pub fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 char {c}"),
        }
    };
    let bytes = s.as_bytes();
    assert_eq!(bytes.len() % 4, 0, "base64 length");
    let mut out = Vec::new();
    for q in bytes.chunks(4) {
        let pad = q.iter().filter(|&&c| c == b'=').count();
        let n = q
            .iter()
            .take(4 - pad)
            .enumerate()
            .fold(0u32, |a, (i, &c)| a | (val(c) << (18 - 6 * i)));
        out.push((n >> 16) as u8);
        if pad < 2 {
            out.push((n >> 8) as u8);
        }
        if pad < 1 {
            out.push(n as u8);
        }
    }
    out
}
