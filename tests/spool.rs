//! End to end: the spool. A program whose socket lies on tmpfs keeps its
//! ring in `<socket>.spool/`, so a SIGKILL while no sink holds the ring
//! (the sink restarting, or not started yet) loses nothing: the next sink
//! finds the ring and delivers it. The reference is the program's own
//! stdout file, as in `death.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::kids::{check_killed, json_lines, kill, Kid, SinkProc};

/// The tests here start and stop sinks on shared spools: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The spool as a sink makes it (the library never does): mode 01733.
fn make_spool(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o1733)).unwrap();
}

/// A fresh directory on tmpfs (`/dev/shm`) with the spool of its socket
/// `s` made, removed when the test passes.
struct ShmDir(PathBuf);

impl ShmDir {
    fn new(name: &str) -> ShmDir {
        let base = Path::new("/dev/shm");
        // SAFETY: a NUL-terminated path and a properly sized out-parameter.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statfs(c"/dev/shm".as_ptr(), &mut st) }, 0);
        assert_eq!(
            st.f_type as i64, 0x0102_1994,
            "/dev/shm is not tmpfs here: the spool tests need a memory filesystem"
        );
        let p = base.join(format!("logtap-spool-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        let d = ShmDir(p);
        make_spool(&d.spool());
        d
    }

    fn spool(&self) -> PathBuf {
        self.0.join("s.spool")
    }

    /// The rings left in the spool.
    fn rings(&self) -> Vec<String> {
        std::fs::read_dir(self.spool())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for ShmDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn stress() -> PathBuf {
    common::kids::stress("spool")
}

/// The stress program tapped to the socket `s` in `dir`, its stdout the
/// file `out` there.
fn tapped(dir: &ShmDir, out: &Path) -> Command {
    tapped_prog(dir, out, &stress())
}

/// SIGTERM, wait: the sink's stdout lines of `pid`'s stdout, and its
/// stderr.
fn stop(sink: SinkProc, pid: u32) -> (Vec<u8>, String) {
    kill(sink.child.id(), libc::SIGTERM);
    let (st, out, err) = sink.finish();
    assert!(st.success(), "sink exited with {st:?}: {err}");
    let mut got = Vec::new();
    for o in json_lines(&out)
        .iter()
        .filter(|o| o["source"] == "stdout" && o["pid"] == pid)
    {
        got.extend_from_slice(o["message"].as_str().unwrap().as_bytes());
        got.push(b'\n');
    }
    (got, err)
}

/// Starts a sink on `dir`'s socket and waits until it has taken every
/// ring from the spool; the running sink.
fn sink_takes_the_spool(dir: &ShmDir) -> SinkProc {
    let sink = SinkProc::start(&dir.0.join("s"));
    until("the sink to take the rings from the spool", || {
        dir.rings().is_empty()
    });
    sink
}

/// Waits until `cond` holds (at most 10 s).
fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the program wrote at least `n` bytes to `out`.
fn wrote(out: &Path, n: u64) {
    until("the program's first lines", || {
        std::fs::metadata(out).map(|m| m.len()).unwrap_or(0) >= n
    });
}

#[test]
fn sigkill_before_any_sink_started_is_delivered_when_one_starts() {
    let _one = serial();
    let dir = ShmDir::new("nosink");
    let out = dir.0.join("out");
    let mut p = Kid::spawn(tapped(&dir, &out).args(["lines", "1000000", "300"]));
    wrote(&out, 20_000);
    kill(p.id(), libc::SIGKILL);
    p.wait().unwrap();
    assert_eq!(
        dir.rings().iter().filter(|n| n.ends_with(".ring")).count(),
        1,
        "the killed program's ring is in the spool: {:?}",
        dir.rings()
    );
    let sink = sink_takes_the_spool(&dir);
    let (got, err) = stop(sink, p.id());
    let file = std::fs::read(&out).unwrap();
    check_killed(
        &file,
        &got,
        &format!("no sink when killed (sink said: {err})"),
    );
    assert!(
        err.contains("spool"),
        "the sink says it recovered a spooled ring: {err}"
    );
}

#[test]
fn sigkill_while_the_sink_restarts_loses_nothing() {
    let _one = serial();
    for round in 0..3 {
        let dir = ShmDir::new(&format!("restart{round}"));
        let sock = dir.0.join("s");
        let out = dir.0.join("out");
        let first = SinkProc::start(&sock);
        let mut p = Kid::spawn(tapped(&dir, &out).args(["lines", "1000000", "100"]));
        wrote(&out, 10_000);
        std::thread::sleep(Duration::from_millis(common::kids::jitter(200)));
        let (before, err1) = stop(first, p.id());
        // The program goes on writing with no sink, then is killed.
        let at_stop = std::fs::metadata(&out).unwrap().len();
        wrote(&out, at_stop + 5_000 + common::kids::jitter(20_000));
        kill(p.id(), libc::SIGKILL);
        p.wait().unwrap();
        let second = sink_takes_the_spool(&dir);
        let (after, err2) = stop(second, p.id());
        let mut got = before;
        got.extend_from_slice(&after);
        let file = std::fs::read(&out).unwrap();
        assert!(
            (file.len() as u64) > at_stop,
            "round {round}: nothing written while no sink ran"
        );
        check_killed(
            &file,
            &got,
            &format!(
                "round {round}: killed between two sinks (first said: {err1}; second said: {err2})"
            ),
        );
    }
}

#[test]
fn a_ring_left_at_exit_with_no_sink_is_delivered_later_and_a_delivered_one_is_removed() {
    let _one = serial();
    let dir = ShmDir::new("exit");
    let out = dir.0.join("out");
    // No sink: the program exits with its lines undelivered.
    let mut p = Kid::spawn(tapped(&dir, &out).args(["lines", "3000"]));
    assert!(p.wait().unwrap().success());
    assert_eq!(dir.rings().len(), 1, "its ring stays in the spool");
    let sink = sink_takes_the_spool(&dir);
    // With the sink running, a program that exits normally removes its
    // own ring: nothing is left for anyone to find.
    let out2 = dir.0.join("out2");
    let mut q = Kid::spawn(tapped(&dir, &out2).args(["lines", "3000"]));
    assert!(q.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        dir.rings().is_empty(),
        "a delivered ring is left in the spool: {:?}",
        dir.rings()
    );
    let sink_pid = sink.child.id();
    let (got, err) = stop(sink, p.id());
    let file = std::fs::read(&out).unwrap();
    common::assert_bytes(
        &format!("left at exit (sink {sink_pid} said: {err})"),
        &got,
        &file,
    );
}

/// A spool on a full filesystem: the program is never harmed (no SIGBUS
/// from a page tmpfs cannot give), and what did not fit is reported as
/// dropped, byte for byte. Needs root to mount a small tmpfs.
#[test]
fn a_full_spool_filesystem_never_harms_the_program() {
    let _one = serial();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a small tmpfs needs root");
        return;
    }
    let dir = ShmDir::new("full");
    let small = dir.0.join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=600k", "tmpfs"])
        .arg(&small)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(small.clone());
    let sock = small.join("s");
    make_spool(&small.join("s.spool"));
    let sink = SinkProc::start(&sock);
    let out = dir.0.join("out");
    let mut c = Command::new(stress());
    c.env("LD_PRELOAD", common::so_path())
        .env("LLT_TARGET", format!("socket:{}", sock.display()))
        .env_remove("LLT_FORMAT")
        .env("LLT_TAP_INTO", "1")
        .env("LLT_EXIT_TIMEOUT_MS", "5000")
        .env("LLT_DEBUG_MODE", "1")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(dir.0.join("err")).unwrap())
        .args(["lines", "100000"]);
    let mut p = Kid::spawn(&mut c);
    let st = p.wait().unwrap();
    assert!(st.success(), "the program died: {st:?}");
    let said = std::fs::read_to_string(dir.0.join("err")).unwrap();
    assert!(
        said.contains("spool's filesystem is full"),
        "the ring was spooled and ran out of room: {said}"
    );
    std::thread::sleep(Duration::from_millis(500));
    kill(sink.child.id(), libc::SIGTERM);
    let (_, sout, err) = sink.finish();
    let objs = json_lines(&sout);
    let mut got = 0u64;
    let mut dropped = 0u64;
    for o in &objs {
        if o["source"] == "stdout" && o["pid"] == p.id() {
            got += o["message"].as_str().unwrap().len() as u64 + 1;
        } else if o["source"] == "logtap" {
            let m = o["message"].as_str().unwrap();
            let n = logtap_wire::DropNotice::parse(m.as_bytes())
                .unwrap_or_else(|| panic!("not a drop notice: {m}"));
            dropped += n.bytes;
        }
    }
    let file = std::fs::read(&out).unwrap();
    assert_eq!(
        got + dropped,
        file.len() as u64,
        "bytes delivered + reported dropped = bytes written (sink said: {err})"
    );
}

/// `prog args…` under the library, tapping its stdout to `dir`'s socket,
/// its stdout the file `out`.
fn tapped_prog(dir: &ShmDir, out: &Path, prog: &Path) -> Command {
    let mut c = Command::new(prog);
    c.env("LD_PRELOAD", common::so_path())
        .env(
            "LLT_TARGET",
            format!("socket:{}", dir.0.join("s").display()),
        )
        .env_remove("LLT_FORMAT")
        .env("LLT_TAP_INTO", "1")
        .stdout(std::fs::File::create(out).unwrap());
    c
}

/// The sink's stdout messages of `pid`, joined with nothing between them:
/// a line cut in two by a sink that stopped mid-line comes out as two
/// messages, so lines are compared as one stream of bytes.
fn messages(out: &[u8], pid: u32) -> Vec<u8> {
    let mut got = Vec::new();
    for o in json_lines(out)
        .iter()
        .filter(|o| o["source"] == "stdout" && o["pid"] == pid)
    {
        got.extend_from_slice(o["message"].as_str().unwrap().as_bytes());
    }
    got
}

/// A record larger than a frame goes to the sink in pieces. A sink that
/// stops after some of them, then the program killed with no sink: the
/// next sink delivers the rest of that record from the spool, not the
/// whole record again.
#[test]
fn a_write_sent_in_pieces_to_a_sink_that_stops_is_not_delivered_twice() {
    let _one = serial();
    let Some(py) = common::python3() else {
        return;
    };
    let dir = ShmDir::new("pieces");
    let sock = dir.0.join("s");
    let out = dir.0.join("out");
    let go = dir.0.join("go");
    let first = SinkProc::start(&sock);
    let script = "import os, sys, time\n\
        os.write(1, b'hello\\n')\n\
        while not os.path.exists(sys.argv[1]): time.sleep(0.02)\n\
        os.write(1, b''.join(b'line %07d ' % i + b'x' * 988 + b'\\n' for i in range(30000)))\n\
        time.sleep(1000)\n";
    let mut p = Kid::spawn(
        tapped_prog(&dir, &out, &py)
            .env("LLT_BUFFER_SIZE", "64M")
            .args(["-c", script])
            .arg(&go),
    );
    wrote(&out, 6);
    std::thread::sleep(Duration::from_millis(300));
    // The sink stops reading while the 30 MB write goes out.
    kill(first.child.id(), libc::SIGSTOP);
    std::fs::write(&go, b"").unwrap();
    wrote(&out, 30_000_000);
    std::thread::sleep(Duration::from_millis(500));
    kill(first.child.id(), libc::SIGTERM);
    kill(first.child.id(), libc::SIGCONT);
    let (st, out1, err1) = first.finish();
    assert!(st.success());
    kill(p.id(), libc::SIGKILL);
    p.wait().unwrap();
    let second = sink_takes_the_spool(&dir);
    kill(second.child.id(), libc::SIGTERM);
    let (_, out2, err2) = second.finish();
    let mut got = messages(&out1, p.id());
    got.extend_from_slice(&messages(&out2, p.id()));
    let want: Vec<u8> = std::fs::read(&out)
        .unwrap()
        .into_iter()
        .filter(|&b| b != b'\n')
        .collect();
    assert!(
        got.len() == want.len() && got == want,
        "the two sinks together hold {} bytes of the program's {} (first said: {err1}; second said: {err2})",
        got.len(),
        want.len()
    );
}

/// An exec that fails leaves the program with its ring still in the
/// spool: killed later with no sink, it loses nothing. An exec that
/// succeeds leaves nothing in the spool.
#[test]
fn a_failed_exec_keeps_the_ring_in_the_spool_and_a_successful_one_leaves_nothing() {
    let _one = serial();
    let Some(py) = common::python3() else {
        return;
    };
    let dir = ShmDir::new("exec");
    let sock = dir.0.join("s");
    let out = dir.0.join("out");
    let first = SinkProc::start(&sock);
    let script = "import os, sys, time\n\
        print('before the exec', flush=True)\n\
        time.sleep(0.5)\n\
        try: os.execv('/nonexistent/program', ['x'])\n\
        except OSError: pass\n\
        while not os.path.exists(sys.argv[1]): time.sleep(0.02)\n\
        print('after the failed exec', flush=True)\n\
        time.sleep(1000)\n";
    let go = dir.0.join("go");
    let mut p = Kid::spawn(tapped_prog(&dir, &out, &py).args(["-c", script]).arg(&go));
    wrote(&out, 16);
    std::thread::sleep(Duration::from_millis(1000));
    let (before, err1) = stop(first, p.id());
    std::fs::write(&go, b"").unwrap();
    wrote(&out, 38);
    std::thread::sleep(Duration::from_millis(100));
    kill(p.id(), libc::SIGKILL);
    p.wait().unwrap();
    let second = sink_takes_the_spool(&dir);
    let (after, err2) = stop(second, p.id());
    let mut got = before;
    got.extend_from_slice(&after);
    let file = std::fs::read(&out).unwrap();
    common::assert_bytes(
        &format!("a failed exec (first sink said: {err1}; second: {err2})"),
        &got,
        &file,
    );

    // Successful execs, into a tapped program and into an untapped one
    // (no LD_PRELOAD left), with a sink: nothing stays in the spool.
    let sink = SinkProc::start(&sock);
    for untapped in [false, true] {
        let env = if untapped { "{}" } else { "os.environ" };
        let script = format!(
            "import os\nprint('exec next', flush=True)\nos.execve('/bin/sleep', ['sleep', '0.3'], {env})\n"
        );
        let out = dir.0.join(format!("out-{untapped}"));
        let mut q = Kid::spawn(tapped_prog(&dir, &out, &py).args(["-c", &script]));
        assert!(q.wait().unwrap().success());
    }
    until("no ring left in the spool after the execs", || {
        dir.rings().is_empty()
    });
    kill(sink.child.id(), libc::SIGTERM);
    let _ = sink.finish();
}

/// A spool the sink made (mode 01733, not readable by others) takes the
/// rings of programs of any uid; `--allow-uid` holds for spooled rings as
/// for connections.
#[test]
fn a_program_of_another_uid_spools_and_allow_uid_holds_for_the_spool() {
    use std::os::unix::process::CommandExt;
    let _one = serial();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: running a program as another uid needs root");
        return;
    }
    for allowed in [true, false] {
        let dir = ShmDir::new(&format!("uid-{allowed}"));
        // The test's files must be reachable by uid 2000.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let out = dir.0.join("out");
        let mut p = Kid::spawn(
            tapped(&dir, &out)
                .uid(2000)
                .gid(2000)
                .args(["lines", "1000000", "300"]),
        );
        wrote(&out, 20_000);
        kill(p.id(), libc::SIGKILL);
        p.wait().unwrap();
        assert_eq!(
            dir.rings().iter().filter(|n| n.ends_with(".ring")).count(),
            1,
            "uid 2000's ring is in the sink's spool: {:?}",
            dir.rings()
        );
        let prefix: &[&str] = &[];
        let sink = if allowed {
            SinkProc::start(&dir.0.join("s"))
        } else {
            SinkProc::start_with_args(prefix, &dir.0.join("s"), &["--allow-uid", "0"])
        };
        until("the sink to take the ring from the spool", || {
            dir.rings().is_empty()
        });
        let (got, err) = stop(sink, p.id());
        let file = std::fs::read(&out).unwrap();
        if allowed {
            check_killed(&file, &got, &format!("uid 2000 (sink said: {err})"));
        } else {
            assert!(got.is_empty(), "a refused uid's ring was delivered");
            assert!(
                err.contains("not allowed"),
                "the sink says it refused the ring: {err}"
            );
        }
    }
}

/// Eight threads writing flat out on a shared 2-core machine, SIGKILLed
/// at a random moment with no sink, then a sink: a writer preempted
/// between reserving its space and stamping it used to end the sink's
/// reading of the ring there, silently losing what the other threads
/// wrote after it. Every line of the file must be delivered exactly once
/// (per thread, in order), plus at most the one write each thread had in
/// flight.
#[test]
fn threads_killed_at_a_random_moment_with_no_sink_lose_nothing() {
    let _one = serial();
    for round in 0..8 {
        let dir = ShmDir::new(&format!("threads{round}"));
        let out = dir.0.join("out");
        let mut p = Kid::spawn(tapped(&dir, &out).args(["threads-write", "8", "200000"]));
        wrote(&out, 1000);
        std::thread::sleep(Duration::from_millis(common::kids::jitter(80)));
        kill(p.id(), libc::SIGKILL);
        p.wait().unwrap();
        let sink = sink_takes_the_spool(&dir);
        let (got, err) = stop(sink, p.id());
        let file = std::fs::read(&out).unwrap();
        // Per thread (the tag before the space), in order.
        let per = |b: &[u8]| {
            let mut m: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = Default::default();
            for l in b.split_inclusive(|&c| c == b'\n') {
                let tag = l.split(|&c| c == b' ').next().unwrap().to_vec();
                m.entry(tag).or_default().extend_from_slice(l);
            }
            m
        };
        let (f, g) = (per(&file), per(&got));
        for (tag, fb) in &f {
            let gb = g.get(tag).cloned().unwrap_or_default();
            check_killed(
                fb,
                &gb,
                &format!(
                    "round {round}, thread {} (sink said: {err})",
                    String::from_utf8_lossy(tag)
                ),
            );
        }
        assert!(
            !err.contains("stopped early"),
            "round {round}: the sink stopped reading the ring: {err}"
        );
    }
}

/// The sink reads the ring itself: it delivers what a read request names,
/// writes how far it got into the ring, and answers; the program frees
/// that space only when it reads the answer. A program stopped (SIGSTOP)
/// in a burst cannot read the answers to the requests the sink serves
/// meanwhile; killed then, its ring still holds those records, and the
/// scan that reads it must start where the sink got to, not at the tail.
#[test]
fn a_program_killed_before_reading_the_sinks_answers_gets_nothing_twice() {
    let _one = serial();
    for round in 0..3 {
        let dir = ShmDir::new(&format!("answers{round}"));
        let out = dir.0.join("out");
        let sink = SinkProc::start(&dir.0.join("s"));
        let mut p = Kid::spawn(tapped(&dir, &out).args(["lines", "100000000"]));
        wrote(&out, 100_000 + common::kids::jitter(3_000_000));
        // Requests queue up while the sink is stopped (for less time than
        // the program takes to fill its 8 MiB ring, so nothing is dropped),
        // then the program stops and the sink serves them: their answers
        // wait unread in the stopped program's socket.
        kill(sink.child.id(), libc::SIGSTOP);
        std::thread::sleep(Duration::from_millis(30));
        kill(p.id(), libc::SIGSTOP);
        kill(sink.child.id(), libc::SIGCONT);
        std::thread::sleep(Duration::from_millis(300));
        kill(p.id(), libc::SIGKILL);
        p.wait().unwrap();
        until("the sink to take the ring from the spool", || {
            dir.rings().is_empty()
        });
        let (got, err) = stop(sink, p.id());
        let file = std::fs::read(&out).unwrap();
        check_killed(
            &file,
            &got,
            &format!("round {round}: stopped, then killed (sink said: {err})"),
        );
    }
}
