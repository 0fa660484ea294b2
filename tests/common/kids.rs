//! What the suites that start and kill programs share: the built binaries,
//! the stress program, a fresh directory per test, and [`Kid`], a started
//! program that a failing test kills with its process group instead of
//! leaving it running.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::manifest_dir;

/// A release binary of the workspace (`logtap-sink`, `liblogtap.so`).
pub fn built(name: &str) -> PathBuf {
    let p = manifest_dir().join("target/release").join(name);
    assert!(
        p.exists(),
        "{} missing: run `cargo build --release --workspace` first (make test does)",
        p.display()
    );
    p
}

/// `tests/programs/stress.c`, built once per test binary under its own
/// name (`stress-NAME`), so a suite never runs a binary another suite is
/// rebuilding.
pub fn stress(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let out = manifest_dir().join(format!("target/test-programs/stress-{name}"));
    let src = manifest_dir().join("tests/programs/stress.c");
    // A failed build panics holding the lock: later callers build again
    // and report gcc's error themselves, not a poisoned lock.
    let mut done = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if done.iter().any(|n| n == name) {
        return out;
    }
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let newer = |a: &Path, b: &Path| {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        matches!((m(a), m(b)), (Some(x), Some(y)) if x >= y)
    };
    if !newer(&out, &src) {
        // Built aside, then renamed: nobody ever runs half a binary.
        let tmp = out.with_extension(format!("tmp{}", std::process::id()));
        let st = Command::new("gcc")
            .args(["-O2", "-D_FORTIFY_SOURCE=2", "-Wall", "-pthread", "-o"])
            .arg(&tmp)
            .arg(&src)
            .status()
            .expect("gcc");
        assert!(st.success(), "building stress.c failed");
        std::fs::rename(&tmp, &out).unwrap();
    }
    done.push(name.to_string());
    out
}

/// A new empty directory for one test of `suite`, kept afterwards (the
/// test removes it when it passes).
pub fn tmpdir(suite: &str, name: &str) -> PathBuf {
    super::fresh_dir(&format!("{suite}-{name}"))
}

/// As [`tmpdir`], on tmpfs (`/dev/shm`): a socket there makes the library
/// keep its ring in the spool (`<socket>.spool`) instead of a memfd.
pub fn shm_tmpdir(suite: &str, name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = Path::new("/dev/shm").join(format!(
        "logtap-test-{}-{n}-{suite}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("create a test dir in /dev/shm");
    p
}

/// The rings left in the spool of the socket `sock`.
pub fn spooled(sock: &Path) -> Vec<String> {
    let mut spool = sock.as_os_str().to_owned();
    spool.push(".spool");
    std::fs::read_dir(spool)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn kill(pid: u32, sig: i32) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, sig) };
}

/// A cheap varying number below `n` (no RNG crate needed for a delay).
pub fn jitter(n: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    (t / 1000) % n
}

/// A started program in its own process group, killed with its group when
/// dropped unreaped: a failed assertion or a panic must not leave hundreds
/// of programs spinning after the test.
pub struct Kid(pub Child);

impl Kid {
    pub fn spawn(c: &mut Command) -> Kid {
        use std::os::unix::process::CommandExt;
        Kid(c.process_group(0).spawn().unwrap())
    }
}

impl Kid {
    /// SIGKILL to the program and everything in its process group (a
    /// shell's children included).
    pub fn kill_group(&self) {
        // SAFETY: signalling the process group of our own child.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
    }
}

impl std::ops::Deref for Kid {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Kid {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        // Only while unreaped: the group's id is then surely this one's.
        if matches!(self.0.try_wait(), Ok(None)) {
            // SAFETY: signalling the process group of our own child.
            unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }
}

/// A running logtap-sink (perhaps under a wrapper such as `unshare`), its
/// stdout and stderr collected on threads of their own; killed with its
/// process group if a test fails before stopping it.
pub struct SinkProc {
    pub child: Kid,
    out: JoinHandle<Vec<u8>>,
    err: JoinHandle<Vec<u8>>,
}

fn collect<R: Read + Send + 'static>(mut r: R) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

impl SinkProc {
    /// `logtap-sink --socket sock`, once it accepts connections.
    pub fn start(sock: &Path) -> SinkProc {
        SinkProc::start_with(&[], sock)
    }

    /// `prefix… logtap-sink --socket sock`, once it accepts connections:
    /// connectable, not merely present (the file appears at bind(), a
    /// moment before listen()).
    pub fn start_with(prefix: &[&str], sock: &Path) -> SinkProc {
        SinkProc::start_with_args(prefix, sock, &[])
    }

    /// As [`SinkProc::start_with`], with more arguments after the socket.
    pub fn start_with_args(prefix: &[&str], sock: &Path, args: &[&str]) -> SinkProc {
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(built("logtap-sink"));
                c
            }
            None => Command::new(built("logtap-sink")),
        };
        let mut child = Kid::spawn(
            cmd.arg("--socket")
                .arg(sock)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let out = collect(child.stdout.take().unwrap());
        let err = collect(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(sock).is_err() {
            assert!(
                Instant::now() < deadline,
                "logtap-sink did not listen on its socket"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        SinkProc { child, out, err }
    }

    /// Waits for the sink to exit (the caller has signalled it): its exit
    /// status, its stdout, its stderr as text.
    pub fn finish(mut self) -> (ExitStatus, Vec<u8>, String) {
        let st = self.child.wait().unwrap();
        let out = self.out.join().unwrap();
        let err = String::from_utf8_lossy(&self.err.join().unwrap()).into_owned();
        (st, out, err)
    }
}

/// The sink's stdout as JSON objects, one per line (an empty line is an
/// error, as any other line that is not an object).
pub fn json_lines(out: &[u8]) -> Vec<serde_json::Value> {
    if out.is_empty() {
        return Vec::new();
    }
    out.strip_suffix(b"\n")
        .unwrap_or(out)
        .split(|&b| b == b'\n')
        .map(|l| {
            serde_json::from_slice(l).unwrap_or_else(|e| {
                panic!(
                    "sink printed invalid JSON ({e}): {:?}",
                    String::from_utf8_lossy(l)
                )
            })
        })
        .collect()
}

/// A pipe for a program's stdout that the test reads only when it chooses
/// (after the program blocked on it, or ended): (read end, write end),
/// both close-on-exec (the write end is handed over as the child's stdout).
pub fn pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: a fresh pipe; each end is owned by exactly one OwnedFd below.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: just created, owned here only.
    unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    }
}

/// Everything a pipe's read end still holds, once every write end is
/// closed.
pub fn drain(rd: std::os::fd::OwnedFd) -> Vec<u8> {
    let mut v = vec![];
    std::fs::File::from(rd).read_to_end(&mut v).unwrap();
    v
}

/// The program's own output file (what the kernel took) against what the
/// sink delivered for it, after a SIGKILL: the sink has every byte of the
/// file, exactly once and in order. The one allowed difference is the
/// write SIGKILL caught inside its system call: its bytes were in the
/// shared ring's intent slot before the call, and the kernel may have
/// taken none, part (a regular file's write stops between pages when a
/// fatal signal is pending) or all of them; the sink cannot tell and
/// delivers the whole write. So the sink may end with the rest of one
/// write the file lacks, and nothing else: no newline in it but its last
/// byte (the programs here write at most one line per call).
pub fn check_killed(file: &[u8], got: &[u8], what: &str) {
    let first_diff = file.iter().zip(got).position(|(a, b)| a != b);
    assert!(
        got.starts_with(file),
        "{what}: the file's {} bytes are not a prefix of the sink's {} (first difference at {first_diff:?}): the sink lacks or repeats bytes the kernel has",
        file.len(),
        got.len()
    );
    let extra = &got[file.len()..];
    let inner = extra.strip_suffix(b"\n").unwrap_or(extra);
    assert!(
        !inner.contains(&b'\n'),
        "{what}: the sink has {} bytes the file lacks, more than the one write in flight: {:?}",
        extra.len(),
        String::from_utf8_lossy(&extra[..extra.len().min(200)])
    );
}
