//! Security regressions: no privilege crossing through the library's files
//! and sockets, and a sink other local users cannot starve or forge.
//!
//! Each test runs a root program under the library against an unprivileged
//! user the test creates with `useradd` (and removes with `userdel`), who
//! acts through `setpriv --reuid`: planting symlinks, files and FIFOs,
//! squatting the socket path, holding connections to the sink. They need
//! root and say so (and skip) when not run as root; CI runs as root, and
//! with `CI=true` not being root is a failure, not a skip.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    // .ci/run runs as root: there a skip would hide the whole suite.
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: the security tests must run as root; CI=true makes this a failure");
    }
    eprintln!(
        "skipped {test}: the security tests must run as root (they create a user with useradd)"
    );
    false
}

/// useradd/userdel take the passwd lock; one at a time.
static USERS: Mutex<()> = Mutex::new(());
static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Runs `f` until it succeeds, at most 50 times 100 ms apart (useradd and
/// userdel fail while another process holds the passwd lock).
fn retried(f: impl Fn() -> std::process::ExitStatus) -> std::process::ExitStatus {
    let mut st = f();
    for _ in 0..50 {
        if st.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        st = f();
    }
    st
}

/// An unprivileged user, removed on drop.
struct User {
    name: String,
    uid: u32,
    gid: u32,
}

impl User {
    fn new() -> User {
        let _g = USERS.lock().unwrap_or_else(|e| e.into_inner());
        let name = format!(
            "lltsec{}x{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        // The mutex orders this process's calls; other processes (another
        // checkout's tests) may hold the passwd lock: retried.
        let st = retried(|| {
            Command::new("useradd")
                .args(["--system", "--no-create-home", "--user-group", "--shell"])
                .arg("/usr/sbin/nologin")
                .arg(&name)
                .status()
                .expect("run useradd")
        });
        assert!(st.success(), "useradd {name} failed: {st}");
        let id = |flag: &str| -> u32 {
            let o = Command::new("id").arg(flag).arg(&name).output().unwrap();
            String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        assert_ne!(uid, 0);
        User { name, uid, gid }
    }

    /// `argv` run as this user (no supplementary groups).
    fn cmd(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg("--")
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        c
    }

    fn run(&self, argv: &[&str]) {
        let o = self.cmd(argv).output().expect("setpriv");
        assert!(
            o.status.success(),
            "as {}: {argv:?} failed: {}",
            self.name,
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _g = USERS.lock().unwrap_or_else(|e| e.into_inner());
        // Retried: a userdel that lost the passwd lock to another process
        // left the user behind.
        let st = retried(|| {
            Command::new("userdel")
                .arg(&self.name)
                .status()
                .expect("run userdel")
        });
        if !st.success() {
            eprintln!("userdel {} failed: {st}", self.name);
        }
    }
}

/// A scratch directory with the given mode (`0o1777`: like /tmp), removed
/// on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str, mode: u32) -> Dir {
        let p = std::env::temp_dir().join(format!(
            "logtap-sec-{}-{}-{tag}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        Dir(p)
    }
    fn join(&self, s: &str) -> PathBuf {
        self.0.join(s)
    }
    fn s(&self, s: &str) -> String {
        self.join(s).to_string_lossy().into_owned()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            eprintln!("(kept {})", self.0.display());
        }
    }
}

/// A root-only secret: a 0600 file in a 0700 root directory.
fn secret(d: &Dir, name: &str) -> PathBuf {
    let sd = d.join(&format!("{name}.d"));
    std::fs::create_dir(&sd).unwrap();
    std::fs::set_permissions(&sd, std::fs::Permissions::from_mode(0o700)).unwrap();
    let p = sd.join(name);
    std::fs::write(&p, b"TOP SECRET\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Runs `sh -c script` as root under the library with `env`; returns the
/// output and how long it took.
fn run_lib(script: &str, env: &[(&str, &str)]) -> (Output, Duration) {
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg(script)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LD_PRELOAD", so_path())
        .env("LLT_TAP_INTO", "3");
    for (k, v) in env {
        c.env(k, v);
    }
    let t = Instant::now();
    let o = run_timeout(c, Duration::from_secs(30), script);
    (o, t.elapsed())
}

/// A tapped program whose target is refused exits without waiting for it
/// (the exit timeout is 1000 ms by default; the old code hung that long on
/// a FIFO).
const QUICK: Duration = Duration::from_millis(700);

#[test]
fn file_target_symlink_is_not_followed() {
    if !root_or_skip("file_target_symlink_is_not_followed") {
        return;
    }
    let u = User::new();
    let d = Dir::new("symlink", 0o1777);
    let key = secret(&d, "secret.key");
    let target = d.s("liblogtap.log");
    u.run(&["ln", "-s", key.to_str().unwrap(), &target]);
    let (o, took) = run_lib(
        "echo db_password=hunter2; echo oops >&2",
        &[("LLT_TARGET", &format!("file:{target}"))],
    );
    assert_eq!(o.stdout, b"db_password=hunter2\n");
    assert_eq!(
        std::fs::read(&key).unwrap(),
        b"TOP SECRET\n",
        "the symlink was followed"
    );
    assert!(std::fs::symlink_metadata(&target)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(took < QUICK, "exit waited {took:?} for a refused target");
}

#[test]
fn file_target_precreated_by_other_user_is_refused() {
    if !root_or_skip("file_target_precreated_by_other_user_is_refused") {
        return;
    }
    let u = User::new();
    let d = Dir::new("precreated", 0o1777);
    let target = d.s("liblogtap.log");
    u.run(&["sh", "-c", &format!("umask 0; : > {target}")]);
    let (o, took) = run_lib(
        "echo db_password=hunter2 >&2",
        &[
            ("LLT_TARGET", &format!("file:{target}")),
            ("LLT_DEBUG_MODE", "1"),
            ("LLT_PRIVATE_FDS", "false"),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("db_password=hunter2"));
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"",
        "wrote into the other user's file"
    );
    assert!(
        err.contains("owned by another user"),
        "no debug message naming the refusal: {err}"
    );
    assert!(took < QUICK, "exit waited {took:?} for a refused target");
}

#[test]
fn file_target_hard_link_is_refused() {
    if !root_or_skip("file_target_hard_link_is_refused") {
        return;
    }
    let d = Dir::new("hardlink", 0o1777);
    let key = secret(&d, "secret.key");
    let target = d.s("liblogtap.log");
    // (protected_hardlinks stops other users from making this link; root
    // makes it here to check the library's own link-count rule.)
    std::fs::hard_link(&key, &target).unwrap();
    let (_, took) = run_lib("echo hello", &[("LLT_TARGET", &format!("file:{target}"))]);
    assert_eq!(std::fs::read(&key).unwrap(), b"TOP SECRET\n");
    assert!(took < QUICK);
}

#[test]
fn file_target_fifo_does_not_hang() {
    if !root_or_skip("file_target_fifo_does_not_hang") {
        return;
    }
    let u = User::new();
    let d = Dir::new("fifo", 0o1777);
    let target = d.s("liblogtap.log");
    u.run(&["mkfifo", "-m", "0666", &target]);
    // No reader: an open for writing would block for ever.
    let (o, took) = run_lib(
        "echo one; echo two",
        &[("LLT_TARGET", &format!("file:{target}"))],
    );
    assert_eq!(o.stdout, b"one\ntwo\n");
    assert!(took < QUICK, "a FIFO target made the program wait {took:?}");
    // A reader waiting on it gets nothing either.
    let mut reader = u
        .cmd(&["timeout", "10", "cat", &target])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (_, took) = run_lib(
        "echo db_password=hunter2",
        &[("LLT_TARGET", &format!("file:{target}"))],
    );
    assert!(
        took < QUICK,
        "a FIFO target with a reader made the program wait {took:?}"
    );
    // The library may refuse the FIFO before opening it: the reader gets
    // its end of file from an open and close of ours (killing `timeout`
    // would leave `cat` waiting).
    {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&target);
    }
    let _ = reader.kill();
    let mut got = Vec::new();
    reader.stdout.take().unwrap().read_to_end(&mut got).unwrap();
    let _ = reader.wait();
    assert!(
        !String::from_utf8_lossy(&got).contains("hunter2"),
        "the FIFO's reader received the output"
    );
}

#[test]
fn file_target_created_private() {
    if !root_or_skip("file_target_created_private") {
        return;
    }
    let u = User::new();
    let d = Dir::new("mode", 0o755);
    let target = d.s("liblogtap.log");
    let (_, _) = run_lib(
        "echo db_password=hunter2",
        &[("LLT_TARGET", &format!("file:{target}"))],
    );
    let md = std::fs::metadata(&target).unwrap();
    assert_eq!(
        md.mode() & 0o777,
        0o600,
        "target created with {:o}",
        md.mode() & 0o777
    );
    let got = decode_target(Path::new(&target));
    assert_eq!(
        got.get("stdout").map(Vec::as_slice),
        Some(&b"db_password=hunter2\n"[..])
    );
    // The other user cannot read it.
    let o = u.cmd(&["cat", &target]).output().unwrap();
    assert!(
        !o.status.success() && o.stdout.is_empty(),
        "another user read the target"
    );
    // LLT_TARGET_MODE chooses another mode for a new file.
    let target2 = d.s("shared.log");
    run_lib(
        "echo x",
        &[
            ("LLT_TARGET", &format!("file:{target2}")),
            ("LLT_TARGET_MODE", "0640"),
        ],
    );
    assert_eq!(std::fs::metadata(&target2).unwrap().mode() & 0o777, 0o640);
    // A bad value names itself and keeps 0600.
    let target3 = d.s("bad.log");
    let (o, _) = run_lib(
        "echo x",
        &[
            ("LLT_TARGET", &format!("file:{target3}")),
            ("LLT_TARGET_MODE", "rw-r--r--"),
        ],
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid LLT_TARGET_MODE=rw-r--r--"));
    assert_eq!(std::fs::metadata(&target3).unwrap().mode() & 0o777, 0o600);
}

#[test]
fn file_target_under_other_users_directory_is_refused() {
    if !root_or_skip("file_target_under_other_users_directory_is_refused") {
        return;
    }
    let u = User::new();
    let d = Dir::new("dirs", 0o1777);
    // A directory of root's holding a file of root's…
    let rootdir = d.join("rootdir");
    std::fs::create_dir(&rootdir).unwrap();
    std::fs::set_permissions(&rootdir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let victim = rootdir.join("liblogtap.log");
    std::fs::write(&victim, b"root's file\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    // …reached through a symlink the other user planted in the sticky dir.
    u.run(&["ln", "-s", rootdir.to_str().unwrap(), &d.s("logs")]);
    run_lib(
        "echo hello",
        &[("LLT_TARGET", &format!("file:{}", d.s("logs/liblogtap.log")))],
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"root's file\n");
    // A directory owned by the other user.
    let theirs = d.join("theirs");
    u.run(&["mkdir", "-m", "0755", theirs.to_str().unwrap()]);
    let (_, took) = run_lib(
        "echo hello",
        &[(
            "LLT_TARGET",
            &format!("file:{}/liblogtap.log", theirs.display()),
        )],
    );
    assert!(!theirs.join("liblogtap.log").exists());
    assert!(took < QUICK);
    // A world-writable directory without the sticky bit.
    let open = Dir::new("open", 0o777);
    run_lib(
        "echo hello",
        &[("LLT_TARGET", &format!("file:{}", open.s("t.log")))],
    );
    assert!(!open.join("t.log").exists());
}

#[test]
fn default_target_is_not_world_writable() {
    if !root_or_skip("default_target_is_not_world_writable") {
        return;
    }
    // Nothing tapped: only the start-up line says which target was chosen.
    let (o, _) = run_lib("true", &[("LLT_TAP_INTO", "0"), ("LLT_DEBUG_MODE", "1")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("active, target /run/liblogtap.log"), "{err}");
    let u = User::new();
    let o = u
        .cmd(&[
            "env",
            "XDG_RUNTIME_DIR=/run/user/4242",
            "LLT_DEBUG_MODE=1",
            "true",
        ])
        .env("LD_PRELOAD", so_path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("active, target /run/user/4242/liblogtap.log"),
        "{err}"
    );
}

/// Runs `script` as root, tapping `tap_file` with suppression, to a target
/// file in a root directory; returns the tap file's source data.
fn tapped_file_data(tap_file: &str, script: &str, debug_err: &mut String) -> Vec<u8> {
    let td = Dir::new("target", 0o700);
    let target = td.s("target.bin");
    let (o, _) = run_lib(
        script,
        &[
            ("LLT_TAP_INTO", "0"),
            ("LLT_TAP_FILE", tap_file),
            ("LLT_SUPPRESS_TAP_FILE", "true"),
            ("LLT_TARGET", &format!("file:{target}")),
            ("LLT_DEBUG_MODE", "1"),
        ],
    );
    *debug_err = String::from_utf8_lossy(&o.stderr).into_owned();
    let src = tap_file.trim_start_matches('/');
    decode_target(Path::new(&target))
        .remove(src)
        .unwrap_or_default()
}

#[test]
fn tap_file_symlink_of_other_user_is_not_followed() {
    if !root_or_skip("tap_file_symlink_of_other_user_is_not_followed") {
        return;
    }
    let u = User::new();
    let d = Dir::new("tapfile", 0o755);
    let key = secret(&d, "secret.key");
    // The log directory belongs to the application's user, who points
    // app.log at root's key.
    let logdir = d.join("log");
    std::fs::create_dir(&logdir).unwrap();
    std::os::unix::fs::chown(&logdir, Some(u.uid), Some(u.gid)).unwrap();
    let app_log = logdir.join("app.log");
    u.run(&["ln", "-s", key.to_str().unwrap(), app_log.to_str().unwrap()]);
    let mut err = String::new();
    let got = tapped_file_data(
        app_log.to_str().unwrap(),
        &format!("echo NEWKEY >> {}", key.display()),
        &mut err,
    );
    assert!(
        got.is_empty(),
        "root's write to the key was tapped: {got:?}"
    );
    assert_eq!(
        std::fs::read(&key).unwrap(),
        b"TOP SECRET\nNEWKEY\n",
        "root's write to the key was suppressed"
    );
    // The same symlink made by root in root's directory is followed.
    let rootlog = d.join("rootlog");
    std::fs::create_dir(&rootlog).unwrap();
    let real = rootlog.join("real.log");
    std::fs::write(&real, b"").unwrap();
    std::os::unix::fs::symlink(&real, rootlog.join("app.log")).unwrap();
    let got = tapped_file_data(
        rootlog.join("app.log").to_str().unwrap(),
        &format!("echo line >> {}", real.display()),
        &mut err,
    );
    assert_eq!(got, b"line\n", "a trusted symlink is not followed: {err}");
    assert_eq!(std::fs::read(&real).unwrap(), b"", "not suppressed");
}

#[test]
fn tap_file_in_shared_directory_is_refused() {
    if !root_or_skip("tap_file_in_shared_directory_is_refused") {
        return;
    }
    let u = User::new();
    // A directory others can write, not sticky: refused, with a message.
    let open = Dir::new("shared", 0o777);
    let log = open.s("app.log");
    let mut err = String::new();
    let got = tapped_file_data(&log, &format!("echo line >> {log}"), &mut err);
    assert!(got.is_empty(), "tapped in a directory anyone can write");
    assert_eq!(std::fs::read(&log).unwrap(), b"line\n");
    assert!(err.contains("writable by other users"), "no message: {err}");
    // Sticky: root's own file is tapped, another user's is not.
    let sticky = Dir::new("sticky", 0o1777);
    let mine = sticky.s("mine.log");
    let got = tapped_file_data(&mine, &format!("echo line >> {mine}"), &mut err);
    assert_eq!(got, b"line\n", "{err}");
    let theirs = sticky.s("theirs.log");
    u.run(&["sh", "-c", &format!("umask 0; : > {theirs}")]);
    let got = tapped_file_data(&theirs, &format!("echo line >> {theirs}"), &mut err);
    assert!(
        got.is_empty(),
        "another user's file in a sticky directory was tapped"
    );
    assert_eq!(std::fs::read(&theirs).unwrap(), b"line\n");
}

/// A Unix-socket listener run by `u` at `path` that counts the bytes it
/// receives; prints READY, then the count when stdin closes.
fn squatter(u: &User, path: &str) -> Child {
    let script = r#"
import socket, sys, select, os
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o666); s.listen(64)
print("READY", flush=True)
n = 0; conns = []
while True:
    r, _, _ = select.select([s, sys.stdin] + conns, [], [])
    if sys.stdin in r:
        break
    for c in r:
        if c is s:
            conns.append(s.accept()[0])
        elif c is not sys.stdin:
            d = c.recv(65536)
            if not d:
                conns.remove(c)
            n += len(d)
print(n, flush=True)
"#;
    let mut c = u
        .cmd(&["python3", "-c", script, path])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "READY");
    c
}

fn squatter_bytes(mut c: Child) -> usize {
    drop(c.stdin.take());
    let mut s = String::new();
    c.stdout.take().unwrap().read_to_string(&mut s).unwrap();
    let _ = c.wait();
    s.trim().parse().unwrap()
}

#[test]
fn squatting_listener_refused_by_target_uid() {
    if !root_or_skip("squatting_listener_refused_by_target_uid") || skip_without("python3") {
        return;
    }
    let u = User::new();
    let d = Dir::new("squat", 0o1777);
    let sock = d.s("sink.sock");
    let sq = squatter(&u, &sock);
    let (o, took) = run_lib(
        "i=0; while [ $i -lt 2000 ]; do echo db_password=hunter2 $i; i=$((i+1)); done",
        &[
            ("LLT_TARGET", &format!("socket:{sock}")),
            ("LLT_TARGET_UID", "0"),
        ],
    );
    assert_eq!(o.stdout.iter().filter(|&&b| b == b'\n').count(), 2000);
    let got = squatter_bytes(sq);
    assert_eq!(got, 0, "the squatting listener received {got} bytes");
    assert!(
        took < Duration::from_secs(3),
        "a refused listener slowed the program: {took:?}"
    );

    // The check is what stops it: the listed uid is served.
    std::fs::remove_file(&sock).unwrap();
    let sq = squatter(&u, &sock);
    run_lib(
        "echo hello",
        &[
            ("LLT_TARGET", &format!("socket:{sock}")),
            ("LLT_TARGET_UID", &format!("0,{}", u.uid)),
        ],
    );
    assert!(squatter_bytes(sq) > 0, "an allowed listener got nothing");

    // A malformed list refuses every listener (fails closed).
    std::fs::remove_file(&sock).unwrap();
    let sq = squatter(&u, &sock);
    let (o, _) = run_lib(
        "echo hello",
        &[
            ("LLT_TARGET", &format!("socket:{sock}")),
            ("LLT_TARGET_UID", "root"),
        ],
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid LLT_TARGET_UID=root"));
    assert_eq!(squatter_bytes(sq), 0);
}

// ---------------------------------------------------------------------
// The sink against another local user.

fn sink_bin() -> PathBuf {
    let p = manifest_dir().join("target/release/logtap-sink");
    assert!(
        p.exists(),
        "{} missing: run `cargo build --release --workspace` first (make test does)",
        p.display()
    );
    p
}

struct Sink {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Drop for Sink {
    /// A failing test must not leave its sink running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Sink {
    fn start(d: &Dir, sock: &str, args: &[&str]) -> Sink {
        let out = d.join("sink.out");
        let err = d.join("sink.err");
        let child = Command::new(sink_bin())
            .arg("--socket")
            .arg(sock)
            .args(args)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !Path::new(sock).exists() {
            assert!(t.elapsed() < Duration::from_secs(10), "sink did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        Sink { child, out, err }
    }

    fn lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.ends_with('}'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
            .collect()
    }

    fn stop(mut self) -> (Vec<serde_json::Value>, String) {
        // SAFETY: signalling our own child, not yet waited for.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let st = self.child.wait().unwrap();
        assert!(st.success(), "sink exited with {st}");
        (
            self.lines(),
            std::fs::read_to_string(&self.err).unwrap_or_default(),
        )
    }
}

/// Another user's attack on the sink: `idle` connections that send
/// nothing, and `parked` ones that each send most of a 64 KiB frame and
/// stop. Prints READY with how many connected, then holds them until stdin
/// closes.
fn hog(u: &User, sock: &str, idle: usize, parked: usize) -> Child {
    let script = r#"
import socket, struct, sys, time
path, idle, parked = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
body = b"6\0hog\0stdout\0" + b"x" * 65000
frame = struct.pack("=ii", 0, len(body)) + body
held = []
ok = 0
for i in range(parked + idle):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(path)
        if i < parked:
            s.sendall(frame[:-100])
        ok += 1
    except OSError:
        pass
    held.append(s)
print("READY", ok, flush=True)
sys.stdin.read()
"#;
    let mut c = u
        .cmd(&[
            "python3",
            "-c",
            script,
            sock,
            &idle.to_string(),
            &parked.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("READY"), "hog: {line}");
    eprintln!("hog connected: {line}");
    c
}

/// A root writer under the library: `n` numbered lines on stdout.
fn root_writer(sock: &str, n: usize) -> Output {
    let (o, _) = run_lib(
        &format!("seq 1 {n}"),
        &[
            ("LLT_TAP_INTO", "1"),
            ("LLT_TARGET", &format!("socket:{sock}")),
            ("LLT_TARGET_UID", "0"),
            ("LLT_EXIT_TIMEOUT_MS", "20000"),
        ],
    );
    o
}

fn wait_for_lines(s: &Sink, source_pid_uid0: usize, timeout: Duration) -> usize {
    let t = Instant::now();
    loop {
        let n = s
            .lines()
            .iter()
            .filter(|v| v["source"] == "stdout" && v["uid"] == 0 && v["platform"] != "hog")
            .count();
        if n >= source_pid_uid0 || t.elapsed() > timeout {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sink_serves_root_while_another_user_hogs_it() {
    if !root_or_skip("sink_serves_root_while_another_user_hogs_it") || skip_without("python3") {
        return;
    }
    let u = User::new();
    let d = Dir::new("hog", 0o755);
    let sock = d.s("sink.sock");
    // Open to everyone (as a container recipe might be), with the per-uid
    // limits at their defaults and a short idle timeout.
    let sink = Sink::start(&d, &sock, &["--mode", "0666", "--idle-timeout", "2"]);
    // 1000 parked frames (about 64 MiB, more than this uid may hold) and
    // 1000 idle connections (more than --max-connections).
    let h = hog(&u, &sock, 1000, 1000);
    let n = 20_000;
    let o = root_writer(&sock, n);
    assert_eq!(o.code(), 0);
    let got = wait_for_lines(&sink, n, Duration::from_secs(30));
    drop(h);
    let (lines, err) = sink.stop();
    eprintln!("sink said:\n{err}");
    assert_eq!(
        got, n,
        "root's lines delivered: {got} of {n}; sink said:\n{err}"
    );
    let mut nums: Vec<u64> = lines
        .iter()
        .filter(|v| v["source"] == "stdout" && v["uid"] == 0)
        .map(|v| v["message"].as_str().unwrap().parse().unwrap())
        .collect();
    nums.sort_unstable();
    assert_eq!(nums, (1..=n as u64).collect::<Vec<_>>());
    assert!(
        err.contains("refused") || err.contains("limit"),
        "the sink did not report the refused connections:\n{err}"
    );
}

#[test]
fn sink_allow_lists_refuse_and_count() {
    if !root_or_skip("sink_allow_lists_refuse_and_count") || skip_without("python3") {
        return;
    }
    let u = User::new();
    let d = Dir::new("allow", 0o755);
    let sock = d.s("sink.sock");
    let sink = Sink::start(&d, &sock, &["--mode", "0666", "--allow-uid", "0"]);
    let h = hog(&u, &sock, 50, 0);
    let o = root_writer(&sock, 100);
    assert_eq!(o.code(), 0);
    assert_eq!(wait_for_lines(&sink, 100, Duration::from_secs(20)), 100);
    drop(h);
    let (lines, err) = sink.stop();
    assert!(
        lines.iter().all(|v| v["uid"] == 0),
        "a line from a refused uid"
    );
    assert!(
        err.contains(&format!("uid {}", u.uid)) && err.contains("not allowed"),
        "refusal not reported:\n{err}"
    );
    assert!(
        err.contains("50 connections refused"),
        "refused connections not counted:\n{err}"
    );
}

#[test]
fn sink_default_socket_mode_keeps_other_users_out() {
    if !root_or_skip("sink_default_socket_mode_keeps_other_users_out") || skip_without("python3") {
        return;
    }
    let u = User::new();
    let d = Dir::new("mode", 0o755);
    let sock = d.s("sink.sock");
    let sink = Sink::start(&d, &sock, &[]);
    let mode = std::fs::metadata(&sock).unwrap().mode() & 0o777;
    assert_eq!(
        mode & 0o007,
        0,
        "default socket mode {mode:o} lets every user in"
    );
    let o = u
        .cmd(&[
            "python3",
            "-c",
            "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])",
            &sock,
        ])
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "another user connected to the default socket"
    );
    let _ = sink.stop();
}

/// Another user holds every connection (`--max-connections 2`, its share
/// all of them): a root writer still gets in (new connections were left in
/// the listen backlog while one uid held them all, and the root writer got
/// nothing), and the displaced connection's unfinished frame, which the
/// sink discards, is reported (it was dropped silently).
#[test]
fn sink_reports_a_frame_cut_off_by_making_room() {
    if !root_or_skip("sink_reports_a_frame_cut_off_by_making_room") || skip_without("python3") {
        return;
    }
    let u = User::new();
    let d = Dir::new("cutoff", 0o755);
    let sock = d.s("sink.sock");
    let sink = Sink::start(
        &d,
        &sock,
        &[
            "--mode",
            "0666",
            "--max-connections",
            "2",
            "--max-connections-per-uid",
            "2",
        ],
    );
    // Both connections hold an unfinished frame: the one displaced does.
    let h = hog(&u, &sock, 0, 2);
    let o = root_writer(&sock, 10);
    assert_eq!(o.code(), 0);
    assert_eq!(wait_for_lines(&sink, 10, Duration::from_secs(20)), 10);
    // Before the hog goes (its other connection then ends mid-frame too,
    // and that is reported as such already).
    std::thread::sleep(Duration::from_millis(300));
    let err_now = std::fs::read_to_string(&sink.err).unwrap_or_default();
    drop(h);
    let _ = sink.stop();
    assert!(
        err_now
            .lines()
            .any(|l| l.contains("made room") && l.contains("unfinished frame")),
        "the discarded rest of the displaced connection's frame was not reported:\n{err_now}"
    );
}

/// The sink run under strace: signals go to the sink (strace's child),
/// whose exit status strace then exits with.
struct Traced(Child);

impl Traced {
    fn sink_pid(&self) -> Option<i32> {
        let pid = self.0.id();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
    fn stop(&mut self) -> std::process::ExitStatus {
        if let Some(p) = self.sink_pid() {
            // SAFETY: signalling the sink this test started (strace's child).
            unsafe { libc::kill(p, libc::SIGTERM) };
        }
        self.0.wait().unwrap()
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            if let Some(p) = self.sink_pid() {
                // SAFETY: as in stop.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The socket must never be reachable with a wider mode than asked, not
/// even for the moment between bind(2) and chmod(2): under umask 0 a
/// freshly bound socket is 0777, and a connection made then stays open
/// after the chmod. strace holds the sink for 1.5 s right
/// after listen returns while another user tries to connect to every socket
/// it can see in the directory.
#[test]
fn sink_socket_is_never_wider_than_its_mode() {
    if !root_or_skip("sink_socket_is_never_wider_than_its_mode")
        || skip_without("python3")
        || skip_without("strace")
    {
        return;
    }
    let u = User::new();
    let d = Dir::new("bindmode", 0o755);
    let sock = d.s("sink.sock");
    let err = d.join("sink.err");
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg("umask 000; exec strace -f -qq -o /dev/null -e trace=listen -e inject=listen:delay_exit=1500000 \"$@\"")
        .arg("sh")
        .arg(sink_bin())
        .args(["--socket", &sock, "--mode", "0600"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut traced = Traced(child);
    let probe = r#"
import os, socket, stat, sys, time
top, end = sys.argv[1], time.time() + float(sys.argv[2])
seen = set()
while time.time() < end:
    for dirpath, dirs, files in os.walk(top):
        for f in files:
            p = os.path.join(dirpath, f)
            try:
                if not stat.S_ISSOCK(os.lstat(p).st_mode):
                    continue
            except OSError:
                continue
            seen.add(p)
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(p)
                print("CONNECTED", p, oct(os.lstat(p).st_mode), flush=True)
                sys.exit(0)
            except OSError:
                pass
            finally:
                s.close()
print("SEEN", sorted(seen), flush=True)
"#;
    let o = u
        .cmd(&["python3", "-c", probe, &d.0.to_string_lossy(), "4"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    // The sink itself must have come up with the asked mode.
    let mode = std::fs::symlink_metadata(&sock)
        .map(|m| m.mode() & 0o7777)
        .unwrap_or_else(|e| {
            panic!(
                "no socket at {sock} ({e}); sink said:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            )
        });
    let st = traced.stop();
    assert!(
        !said.contains("CONNECTED"),
        "another user connected while the socket was being set up: {said}"
    );
    assert!(
        said.contains(&sock),
        "the probe never saw the socket: {said}"
    );
    assert_eq!(mode, 0o600);
    assert!(st.success(), "sink under strace exited with {st}");
}

/// Checks with Python's json module, made strict: NaN/Infinity rejected,
/// numbers that overflow to infinity rejected, lone surrogates rejected.
const STRICT_CHECK: &str = r#"
import json, math, sys
def bad_constant(c): raise ValueError("non-finite constant " + c)
def walk(v):
    if isinstance(v, str):
        v.encode("utf-8")  # raises on a lone surrogate
    elif isinstance(v, float):
        if not math.isfinite(v): raise ValueError("non-finite number")
    elif isinstance(v, list):
        for x in v: walk(x)
    elif isinstance(v, dict):
        for k, x in v.items(): walk(k); walk(x)
n = 0
for line in open(sys.argv[1], encoding="utf-8", errors="strict"):
    walk(json.loads(line, parse_constant=bad_constant))
    n += 1
print(n)
"#;

#[test]
fn invalid_data_frame_yields_strict_json() {
    if skip_without("python3") {
        return;
    }
    let d = Dir::new("strict", 0o755);
    let sock = d.s("sink.sock");
    let sink = Sink::start(&d, &sock, &[]);
    let hostile = "{\"k\":\"\\ud800\",\"n\":1e400}";
    let fine = "{\"ok\":\"\\ud83d\\ude00\",\"n\":1.5,\"big\":-1e308}";
    let nan = "{\"n\":NaN}";
    let data = format!("{hostile}\n{fine}\n{nan}\n");
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let mut frame = Vec::new();
    let body = [&b"6\0app\0stdout\0"[..], data.as_bytes()].concat();
    frame.extend_from_slice(&0i32.to_ne_bytes());
    frame.extend_from_slice(&(body.len() as i32).to_ne_bytes());
    frame.extend_from_slice(&body);
    s.write_all(&frame).unwrap();
    drop(s);
    let t = Instant::now();
    while sink.lines().len() < 3 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (lines, err) = sink.stop();
    let o = Command::new("python3")
        .arg("-c")
        .arg(STRICT_CHECK)
        .arg(d.join("sink.out"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "sink output is not strict JSON: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        std::fs::read_to_string(d.join("sink.out")).unwrap()
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "3", "{err}");
    // The hostile object loses `data`, never its text.
    assert_eq!(lines[0]["message"], hostile);
    assert!(lines[0].get("data").is_none());
    // A valid one keeps it, as values.
    assert_eq!(lines[1]["data"]["ok"], "\u{1F600}");
    assert_eq!(lines[1]["data"]["n"], 1.5);
    assert!(lines[2].get("data").is_none());
    // The connecting uid is a field of every line, from SO_PEERCRED.
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    assert!(lines.iter().all(|v| v["uid"] == me));
}

#[test]
fn file_target_through_root_symlink_into_user_directory_is_refused() {
    if !root_or_skip("file_target_through_root_symlink_into_user_directory_is_refused") {
        return;
    }
    let u = User::new();
    let tmp = Dir::new("tmp", 0o1777);
    let d = Dir::new("root", 0o755);
    let key = secret(&d, "secret.key");
    let private = key.parent().unwrap();
    // The user's directory in /tmp holds a link to root's private directory…
    let ud = tmp.s("u");
    u.run(&["mkdir", &ud]);
    let sub = format!("{ud}/sub");
    u.run(&["ln", "-s", private.to_str().unwrap(), &sub]);
    // …and root links its log directory to the user's link.
    let logs = d.join("logs");
    std::os::unix::fs::symlink(&sub, &logs).unwrap();
    let target = format!("{}/x.log", logs.display());
    let (o, took) = run_lib(
        "echo hi",
        &[
            ("LLT_TARGET", &format!("file:{target}")),
            ("LLT_DEBUG_MODE", "1"),
        ],
    );
    assert_eq!(o.stdout, b"hi\n");
    assert!(
        !private.join("x.log").exists(),
        "the user chose where root's output went"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("owned by another user"), "no message: {err}");
    assert!(took < QUICK, "exit waited {took:?} for a refused target");
    // Root's own link to root's own directory is still followed.
    let real = d.join("real");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink("real", d.join("logs2")).unwrap();
    let (o, _) = run_lib(
        "echo hi",
        &[("LLT_TARGET", &format!("file:{}/logs2/y.log", d.0.display()))],
    );
    assert_eq!(o.stdout, b"hi\n");
    assert!(
        !decode_target(&real.join("y.log")).is_empty(),
        "a trusted relative symlink was not followed"
    );
}

#[test]
fn tap_file_root_symlink_into_user_directory_is_not_followed() {
    if !root_or_skip("tap_file_root_symlink_into_user_directory_is_not_followed") {
        return;
    }
    let u = User::new();
    let tmp = Dir::new("tmp", 0o1777);
    let d = Dir::new("root", 0o755);
    let key = secret(&d, "secret.key");
    let u2 = tmp.s("u2");
    u.run(&["mkdir", &u2]);
    // Root's app.log links to a file in the user's directory, which the
    // user makes a link to root's key.
    u.run(&["ln", "-s", key.to_str().unwrap(), &format!("{u2}/app.log")]);
    let rt2 = d.join("rt2");
    std::fs::create_dir(&rt2).unwrap();
    let app_log = rt2.join("app.log");
    std::os::unix::fs::symlink(format!("{u2}/app.log"), &app_log).unwrap();
    let mut err = String::new();
    let got = tapped_file_data(
        app_log.to_str().unwrap(),
        &format!("echo NEWKEY >> {}", key.display()),
        &mut err,
    );
    assert!(
        got.is_empty(),
        "root's write to the key was tapped: {got:?}"
    );
    assert_eq!(
        std::fs::read(&key).unwrap(),
        b"TOP SECRET\nNEWKEY\n",
        "root's write to the key was suppressed"
    );
    assert!(err.contains("owned by another user"), "no message: {err}");
}

#[test]
fn tap_file_hard_link_in_sticky_directory_is_refused() {
    if !root_or_skip("tap_file_hard_link_in_sticky_directory_is_refused") {
        return;
    }
    let d = Dir::new("root", 0o755);
    let key = secret(&d, "secret.key");
    let x = Dir::new("sticky", 0o1777);
    let app_log = x.join("app.log");
    // (protected_hardlinks stops other users from making this link; root
    // makes it here as the stand-in attacker.)
    std::fs::hard_link(&key, &app_log).unwrap();
    let mut err = String::new();
    let got = tapped_file_data(
        app_log.to_str().unwrap(),
        &format!("echo NEWKEY >> {}", key.display()),
        &mut err,
    );
    assert!(
        got.is_empty(),
        "root's write to the key was tapped: {got:?}"
    );
    assert_eq!(std::fs::read(&key).unwrap(), b"TOP SECRET\nNEWKEY\n");
    assert!(err.contains("more than one link"), "no message: {err}");
}

#[test]
fn sink_serves_root_while_two_users_hold_every_connection() {
    if !root_or_skip("sink_serves_root_while_two_users_hold_every_connection")
        || skip_without("python3")
    {
        return;
    }
    let a = User::new();
    let b = User::new();
    let d = Dir::new("hog2", 0o755);
    let sock = d.s("sink.sock");
    let sink = Sink::start(&d, &sock, &["--mode", "0666", "--max-connections", "256"]);
    // A takes its whole per-uid share (7/8), B the rest and more, filling
    // the listen backlog behind them.
    let ha = hog(&a, &sock, 224, 0);
    let hb = hog(&b, &sock, 32 + 200, 0);
    let n = 20_000;
    let o = root_writer(&sock, n);
    assert_eq!(o.code(), 0);
    let got = wait_for_lines(&sink, n, Duration::from_secs(20));
    drop(ha);
    drop(hb);
    let (_, err) = sink.stop();
    assert_eq!(
        got, n,
        "root's lines delivered while the two users held on: {got} of {n}; sink said:\n{err}"
    );
    assert!(
        err.contains("to admit a uid holding fewer"),
        "no report of the connection closed to make room:\n{err}"
    );
}

/// The library, copied where a created user can load it.
fn user_readable_lib(d: &Dir) -> String {
    let p = d.join("liblogtap.so");
    std::fs::copy(so_path(), &p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn suppressed_output_with_refused_target_is_written_through() {
    if !root_or_skip("suppressed_output_with_refused_target_is_written_through")
        || skip_without("python3")
    {
        return;
    }
    let u = User::new();
    let d = Dir::new("through", 0o755);
    let lib = user_readable_lib(&d);
    // The default target of a user without XDG_RUNTIME_DIR is refused
    // (/run is root's); ls closes fds 1 and 2 before the exit spill.
    let o = u
        .cmd(&["ls", "-d", "/", "/nonexist"])
        .env("LD_PRELOAD", &lib)
        .env("LLT_TAP_INTO", "3")
        .env("LLT_SUPPRESS_STDOUT", "true")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "/\n");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("/nonexist"),
        "stderr lost: {:?}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A program printing a flushed line every 300 ms: its lines show as it
    // goes, not at exit.
    let mut c = u
        .cmd(&[
            "python3",
            "-c",
            "import time\nfor i in range(6):\n    print(i, flush=True)\n    time.sleep(0.3)\n",
        ])
        .env("LD_PRELOAD", &lib)
        .env("LLT_TAP_INTO", "3")
        .env("LLT_SUPPRESS_STDOUT", "true")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = BufReader::new(c.stdout.take().unwrap());
    let mut seen = Vec::new();
    let t = Instant::now();
    let mut line = String::new();
    while r.read_line(&mut line).unwrap() > 0 {
        seen.push((line.trim().to_string(), t.elapsed()));
        line.clear();
    }
    let end = t.elapsed();
    c.wait().unwrap();
    let lines: Vec<&str> = seen.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(lines, ["0", "1", "2", "3", "4", "5"]);
    // Line 2 was printed about 1 s before the exit.
    let at = seen[2].1;
    assert!(
        end.saturating_sub(at) > Duration::from_millis(500),
        "line 2 shown at {at:?}, the program ended at {end:?}: held until exit"
    );
}

/// A user's client for the sink: holds `hold` connections; on "go" (the
/// sink stopped) sends 100 frames on its first connection (`displaced N`)
/// and opens one more connection that sends 100 (`waited N`); on
/// "release" closes all its connections but the first two.
const HOLDER: &str = r#"
import socket, struct, sys
path, hold = sys.argv[1], int(sys.argv[2])
def frame(text):
    body = b"6\0victim\0stdout\0" + text
    return struct.pack("=ii", 0, len(body)) + body
conns = []
for i in range(hold):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    conns.append(s)
print("READY", flush=True)
sys.stdin.readline()
for i in range(100):
    conns[0].sendall(frame(b"displaced %d\n" % i))
late = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
late.connect(path)
for i in range(100):
    late.sendall(frame(b"waited %d\n" % i))
print("SENT", flush=True)
sys.stdin.readline()
for s in conns[2:]:
    s.close()
print("RELEASED", flush=True)
sys.stdin.read()
"#;

/// At `--max-connections`, a connection that must wait (its uid holds the
/// most) and a connection closed to make room for a uid holding fewer both
/// had frames queued that the sink had not read yet: every one of them is
/// delivered. (The sink used to accept the first only to close it, and to
/// close the second unread: 200 lines vanished, and the sender, whose
/// writes had all succeeded, counted them as delivered.)
#[test]
fn sink_connections_refused_or_displaced_at_the_limit_lose_nothing() {
    if !root_or_skip("sink_connections_refused_or_displaced_at_the_limit_lose_nothing")
        || skip_without("python3")
    {
        return;
    }
    let a = User::new();
    let d = Dir::new("full", 0o755);
    let sock = d.s("sink.sock");
    let sink = Sink::start(&d, &sock, &["--mode", "0666", "--max-connections", "8"]);
    // Root holds 2, the user 6: the sink is full, the user holds the most.
    let root: Vec<_> = (0..2)
        .map(|_| std::os::unix::net::UnixStream::connect(&sock).unwrap())
        .collect();
    let mut h = a
        .cmd(&["python3", "-c", HOLDER, &sock, "6"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut hin = h.stdin.take().unwrap();
    let mut hout = BufReader::new(h.stdout.take().unwrap());
    let mut line = String::new();
    hout.read_line(&mut line).unwrap();
    assert_eq!(line, "READY\n");
    std::thread::sleep(Duration::from_millis(500));
    // With the sink stopped, the user's frames queue unread, its new
    // connection and then root's third wait in the backlog.
    let pid = sink.child.id() as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    hin.write_all(b"go\n").unwrap();
    line.clear();
    hout.read_line(&mut line).unwrap();
    assert_eq!(line, "SENT\n");
    let root3 = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    std::thread::sleep(Duration::from_millis(500));
    // The user lets go of most of its connections: room for the waiting one.
    hin.write_all(b"release\n").unwrap();
    line.clear();
    hout.read_line(&mut line).unwrap();
    assert_eq!(line, "RELEASED\n");
    let count = |s: &Sink, what: &str| {
        s.lines()
            .iter()
            .filter(|v| {
                v["platform"] == "victim"
                    && v["message"].as_str().is_some_and(|m| m.starts_with(what))
            })
            .count()
    };
    let t = Instant::now();
    while (count(&sink, "displaced") < 100 || count(&sink, "waited") < 100)
        && t.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(hin);
    let _ = h.wait();
    drop(root);
    drop(root3);
    let (lines, err) = sink.stop();
    let got = |what: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|v| v["platform"] == "victim" && v["uid"] == a.uid)
            .filter_map(|v| v["message"].as_str())
            .filter(|m| m.starts_with(what))
            .map(str::to_string)
            .collect()
    };
    let want = |what: &str| -> Vec<String> { (0..100).map(|i| format!("{what} {i}")).collect() };
    assert_eq!(
        got("displaced"),
        want("displaced"),
        "the connection closed to make room lost what it had sent; sink said:\n{err}"
    );
    assert_eq!(
        got("waited"),
        want("waited"),
        "the connection that had to wait lost what it had sent; sink said:\n{err}"
    );
    assert!(
        err.contains("to admit a uid holding fewer") && err.contains("waits for room"),
        "the sink did not report the displacement and the wait:\n{err}"
    );
}

// ---------------------------------------------------------------------
// Suppression's write-through: only for a target refused for what it is.

/// A file target whose directory does not exist yet is away, not refused:
/// suppressed output is held for it (none reaches the original stdout),
/// and once the directory appears every line arrives, in order. (Any
/// failed open used to count as a refusal: the first lines went straight
/// to stdout and never reached the target.)
#[test]
fn suppressed_output_is_held_for_a_file_target_that_is_merely_away() {
    let d = Dir::new("away", 0o755);
    let target = d.join("later").join("target.bin");
    let flag = d.s("go");
    let script = format!(
        "echo 1; echo 2; echo 3; while [ ! -e {flag} ]; do sleep 0.05; done; echo 4; echo 5; echo 6"
    );
    let later = d.join("later");
    let go = d.join("go");
    let maker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        std::fs::create_dir(&later).unwrap();
        std::fs::set_permissions(&later, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(go, b"").unwrap();
    });
    let (o, _) = run_lib(
        &script,
        &[
            ("LLT_TAP_INTO", "1"),
            ("LLT_SUPPRESS_STDOUT", "true"),
            ("LLT_TARGET", &format!("file:{}", target.display())),
        ],
    );
    maker.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "",
        "suppressed output leaked to stdout while the target was away"
    );
    assert_eq!(
        decode_target(&target).get("stdout").map(|v| &v[..]),
        Some(&b"1\n2\n3\n4\n5\n6\n"[..])
    );
}

/// With the target refused and both stdout and a log file suppressed, a
/// write to stdout goes through to the original stdout at once, but the
/// log file's held bytes are not written back into the log while the
/// program runs (its own offset could overwrite them there); at exit they
/// are, and nothing is lost.
#[test]
fn write_through_leaves_a_tap_files_held_bytes_for_exit() {
    if skip_without("python3") {
        return;
    }
    let d = Dir::new("through-file", 0o755);
    let log = d.s("app.log");
    // A refused target: a symlink at its path.
    let target = d.s("target.bin");
    std::os::unix::fs::symlink(d.join("elsewhere"), &target).unwrap();
    let script = format!(
        "python3 -c 'import os,sys\nf=open(\"{log}\",\"w\")\nf.write(\"L1\\n\"); f.flush()\nprint(\"out\", flush=True)\nsys.stderr.write(\"size %d\\n\" % os.stat(\"{log}\").st_size)\n'"
    );
    let (o, _) = run_lib(
        &script,
        &[
            ("LLT_TAP_INTO", "1"),
            ("LLT_TAP_FILE", &log),
            ("LLT_SUPPRESS_STDOUT", "true"),
            ("LLT_SUPPRESS_TAP_FILE", "true"),
            ("LLT_TARGET", &format!("file:{target}")),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "size 0\n",
        "the log's held bytes were written back while the program ran"
    );
    assert_eq!(std::fs::read(&log).unwrap(), b"L1\n", "lost at exit");
}

/// A listener of the wrong uid makes suppressed stdout go to the original
/// stdout (a line buffered while the listener was being tried goes there
/// with the next write); once it is gone and the real sink listens there, the
/// library tries again and the next lines reach the sink, not stdout.
/// (Written through, nothing was buffered, so the target was never tried
/// again: every later line went to stdout.)
#[test]
fn a_refused_listener_replaced_by_the_sink_gets_the_later_lines() {
    if !root_or_skip("a_refused_listener_replaced_by_the_sink_gets_the_later_lines")
        || skip_without("python3")
    {
        return;
    }
    let u = User::new();
    let d = Dir::new("replaced", 0o1777);
    let sock = d.s("sink.sock");
    let flag = d.s("go");
    let sq = squatter(&u, &sock);
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg(format!(
            "echo 1; sleep 0.5; echo 2; while [ ! -e {flag} ]; do sleep 0.05; done; echo 3; sleep 0.5; echo 4"
        ))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LD_PRELOAD", so_path())
        .env("LLT_TAP_INTO", "1")
        .env("LLT_SUPPRESS_STDOUT", "true")
        .env("LLT_TARGET", format!("socket:{sock}"))
        .env("LLT_TARGET_UID", "0")
        .env("LLT_TARGET_1STCONNECT", "0.2")
        .env("LLT_TARGET_RECONNECT", "0.2")
        .env("LLT_EXIT_TIMEOUT_MS", "5000")
        .stdout(Stdio::piped());
    let mut prog = c.spawn().unwrap();
    let mut out = BufReader::new(prog.stdout.take().unwrap());
    let mut line = String::new();
    for want in ["1\n", "2\n"] {
        line.clear();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, want, "refused listener: not written through");
    }
    squatter_bytes(sq);
    std::fs::remove_file(&sock).unwrap();
    let sink = Sink::start(&d, &sock, &[]);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&flag, b"").unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(prog.wait().unwrap().success());
    let (lines, err) = sink.stop();
    assert_eq!(rest, "", "lines written to stdout with the sink back");
    let got: Vec<_> = lines
        .iter()
        .filter(|v| v["source"] == "stdout")
        .filter_map(|v| v["message"].as_str())
        .collect();
    assert_eq!(got, ["3", "4"], "sink said:\n{err}");
}
