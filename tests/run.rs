//! logtap-run with real programs: a Go program built with CGO_ENABLED=0 by
//! Debian's golang-go and busybox-static (both statically linked: the
//! pipe relay), a dynamic program (exec with LD_PRELOAD), and logtap-run
//! as PID 1 of a new PID namespace.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn run_bin() -> PathBuf {
    let p = manifest_dir().join("target/release/logtap-run");
    assert!(
        p.exists(),
        "{} not found: run `cargo build --release --workspace` first (make test does)",
        p.display()
    );
    p
}

/// Whether `p` is a 64-bit little-endian ELF without a `PT_INTERP`
/// program header (the kernel runs it without a loader).
fn is_static(p: &Path) -> bool {
    let b = std::fs::read(p).unwrap_or_default();
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[32..40].try_into().unwrap()) as usize;
    let (size, n) = (u16_at(54), u16_at(56));
    (0..n).all(|i| {
        let at = phoff + i * size;
        b.get(at..at + 4) != Some(&3u32.to_le_bytes()[..])
    })
}

/// The Go test program, built once with CGO_ENABLED=0.
fn go_program() -> Option<PathBuf> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if skip_without("go") {
                return None;
            }
            let out = programs_dir().join("tapgo");
            let work = manifest_dir().join("target/go");
            let st = Command::new("go")
                .args(["build", "-o"])
                .arg(&out)
                .arg(manifest_dir().join("tests/programs/go/tapgo.go"))
                .env("CGO_ENABLED", "0")
                .env("GOCACHE", work.join("cache"))
                .env("GOPATH", work.join("path"))
                .env("GO111MODULE", "off")
                .status()
                .expect("run go build");
            assert!(
                st.success(),
                "go build of tests/programs/go/tapgo.go failed"
            );
            assert!(
                is_static(&out),
                "CGO_ENABLED=0 go build made a dynamic program"
            );
            Some(out)
        })
        .clone()
}

fn busybox() -> Option<PathBuf> {
    let p = which("busybox")?;
    if is_static(&p) {
        Some(p)
    } else {
        eprintln!("skipped: {} is not busybox-static", p.display());
        None
    }
}

/// logtap-run with a clean environment tapping stdout and stderr into a
/// file target `target`.
fn run_cmd(target: &Path) -> Command {
    let mut c = Command::new(run_bin());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("LLT_") || k == "LD_PRELOAD" {
            c.env_remove(k);
        }
    }
    c.env("LLT_TAP_INTO", "3")
        .env("LLT_TARGET", format!("file:{}", target.display()));
    c
}

/// The target's frames, (source, data) each, in order: the data is what
/// the frame carries of the program's bytes (version 1's entry headers
/// left out).
fn records(path: &Path) -> Vec<(String, Vec<u8>)> {
    frames(path).into_iter().map(|(s, d, _)| (s, d)).collect()
}

/// As `records`, with each frame's whole data length (headers included).
fn frames(path: &Path) -> Vec<(String, Vec<u8>, usize)> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let mut v = Vec::new();
    logtap_wire::Decoder::new()
        .feed(&bytes, |f| {
            v.push((
                String::from_utf8_lossy(f.source).into_owned(),
                f.writes().flat_map(|w| w.data.iter().copied()).collect(),
                f.data.len(),
            ))
        })
        .expect("valid target");
    v
}

fn direct(argv: &[&std::ffi::OsStr]) -> Output {
    let mut c = Command::new(argv[0]);
    c.args(&argv[1..]);
    run_timeout(c, TIMEOUT, "direct run")
}

#[test]
fn static_go_bytes_and_exit_code_kept() {
    let Some(go) = go_program() else { return };
    let d = TestDir::new("run-go");
    let t = d.path.join("target.log");
    let want = direct(&[
        go.as_os_str(),
        "lines".as_ref(),
        "3000".as_ref(),
        "7".as_ref(),
    ]);
    assert_eq!(want.code(), 7);
    let mut c = run_cmd(&t);
    c.arg(&go).args(["lines", "3000", "7"]);
    let got = run_timeout(c, TIMEOUT, "logtap-run go lines");
    assert_eq!(got.code(), 7, "exit code kept");
    assert_bytes("stdout through logtap-run", &got.stdout, &want.stdout);
    assert_bytes("stderr through logtap-run", &got.stderr, &want.stderr);
    let target = decode_target(&t);
    assert_bytes("target stdout", &target["stdout"], &want.stdout);
    assert_bytes("target stderr", &target["stderr"], &want.stderr);
    // Frames end at a line's end, or are full: the transport fills a
    // frame with consecutive records of one source up to 64 KiB, and the
    // relay's records end at newlines. (A piece of a line is sent alone
    // only when the rest is 100 ms late, which a busy machine can cause
    // once here; a_line_cut_across_reads_is_one_record checks that case.)
    // (A full frame's data is within an entry header of the maximum.)
    let cut: Vec<usize> = frames(&t)
        .iter()
        .filter(|(_, d, n)| !d.ends_with(b"\n") && *n + 64 < logtap_wire::MAX_DATA)
        .map(|(_, d, _)| d.len())
        .collect();
    assert!(cut.len() <= 1, "frames cut inside a line, of sizes {cut:?}");
}

#[test]
fn a_line_cut_across_reads_is_one_record() {
    let Some(go) = go_program() else { return };
    let d = TestDir::new("run-split");
    let t = d.path.join("target.log");
    let mut c = run_cmd(&t);
    c.arg(&go).arg("split");
    let got = run_timeout(c, TIMEOUT, "logtap-run go split");
    assert_eq!(got.code(), 0);
    assert_eq!(got.stdout, b"first half, second half\n");
    let recs = records(&t);
    assert_eq!(
        recs,
        vec![("stdout".to_string(), b"first half, second half\n".to_vec())]
    );
}

#[test]
fn sigterm_reaches_the_go_handler() {
    let Some(go) = go_program() else { return };
    let d = TestDir::new("run-term");
    let t = d.path.join("target.log");
    let mut c = run_cmd(&t);
    c.arg(&go)
        .arg("term")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let st = child.wait().unwrap();
    assert_eq!(rest, "handler got terminated\n");
    assert_eq!(
        st.code(),
        Some(42),
        "the program's exit code after its handler"
    );
    assert_eq!(
        decode_target(&t)["stdout"],
        b"ready\nhandler got terminated\n"
    );
}

#[test]
fn no_sink_at_all_keeps_output_and_speed() {
    let Some(go) = go_program() else { return };
    let d = TestDir::new("run-nosink");
    let sock = d.path.join("absent.sock");
    let t0 = Instant::now();
    let want = direct(&[go.as_os_str(), "flood".as_ref(), "64".as_ref()]);
    let direct_time = t0.elapsed();
    let mut c = run_cmd(&d.path.join("unused"));
    c.env("LLT_TARGET", format!("socket:{}", sock.display()))
        .arg(&go)
        .args(["flood", "64"]);
    let t0 = Instant::now();
    let got = run_timeout(c, TIMEOUT, "logtap-run go flood without sink");
    let relay_time = t0.elapsed();
    eprintln!("64 MiB: direct {direct_time:?}, through logtap-run with no sink {relay_time:?}");
    assert_eq!(got.code(), 0);
    assert_eq!(got.stdout.len(), 64 << 20);
    assert!(
        got.stdout == want.stdout,
        "stdout differs from the direct run"
    );
    // Generous: the relay copies every byte once more, and the machine is shared.
    assert!(
        relay_time < direct_time * 6 + Duration::from_secs(3),
        "no sink slowed the program down: {relay_time:?} vs {direct_time:?}"
    );
}

#[test]
fn suppression_keeps_output_off_stdout_and_loses_nothing() {
    let Some(go) = go_program() else { return };
    let d = TestDir::new("run-suppress");
    let want = direct(&[
        go.as_os_str(),
        "lines".as_ref(),
        "500".as_ref(),
        "0".as_ref(),
    ]);
    // A target taking data: everything goes there only.
    let t = d.path.join("target.log");
    let mut c = run_cmd(&t);
    c.env("LLT_SUPPRESS_STDOUT", "true")
        .arg(&go)
        .args(["lines", "500", "0"]);
    let got = run_timeout(c, TIMEOUT, "logtap-run suppressed");
    assert_eq!(got.code(), 0);
    assert_bytes("suppressed stdout", &got.stdout, b"");
    assert_bytes("suppressed stderr", &got.stderr, b"");
    let target = decode_target(&t);
    assert_bytes("target stdout", &target["stdout"], &want.stdout);
    assert_bytes("target stderr", &target["stderr"], &want.stderr);
    // No target: what it did not take goes to the original output.
    let mut c = run_cmd(&t);
    c.env("LLT_SUPPRESS_STDOUT", "true")
        .env(
            "LLT_TARGET",
            format!("socket:{}", d.path.join("none.sock").display()),
        )
        .arg(&go)
        .args(["lines", "500", "0"]);
    let got = run_timeout(c, TIMEOUT, "logtap-run suppressed, no target");
    assert_bytes("stdout without target", &got.stdout, &want.stdout);
    assert_bytes("stderr without target", &got.stderr, &want.stderr);
}

#[test]
fn busybox_static_bytes_and_exit_codes() {
    let Some(bb) = busybox() else { return };
    let d = TestDir::new("run-busybox");
    let t = d.path.join("target.log");
    let script = "i=0; while [ $i -lt 2000 ]; do echo \"line $i\"; echo \"e $i\" >&2; i=$((i+1)); done; exit 9";
    let want = direct(&[
        bb.as_os_str(),
        "sh".as_ref(),
        "-c".as_ref(),
        script.as_ref(),
    ]);
    let mut c = run_cmd(&t);
    c.arg(&bb).args(["sh", "-c", script]);
    let got = run_timeout(c, TIMEOUT, "logtap-run busybox sh");
    assert_eq!(got.code(), 9);
    assert_bytes("stdout", &got.stdout, &want.stdout);
    assert_bytes("stderr", &got.stderr, &want.stderr);
    let target = decode_target(&t);
    assert_bytes("target stdout", &target["stdout"], &want.stdout);
    assert_bytes("target stderr", &target["stderr"], &want.stderr);

    // Killed by a signal: 128 + the signal, as a shell reports it.
    let mut c = run_cmd(&t);
    c.arg(&bb).args(["sh", "-c", "echo bye; kill -KILL $$"]);
    let got = run_timeout(c, TIMEOUT, "logtap-run busybox killed");
    assert_eq!(got.code(), 128 + libc::SIGKILL);
    assert_eq!(got.stdout, b"bye\n");
}

/// The relayed lines carry the program's pid (as `$$` shows it), not
/// logtap-run's: the relay writes them on the program's behalf.
#[test]
fn relayed_lines_carry_the_programs_pid() {
    let Some(bb) = busybox() else { return };
    let d = TestDir::new("run-pid");
    let t = d.path.join("target.log");
    let mut c = run_cmd(&t);
    c.arg(&bb)
        .args(["sh", "-c", "echo \"pid $$\"; echo \"also $$\" >&2"]);
    let got = run_timeout(c, TIMEOUT, "logtap-run busybox pid");
    assert_eq!(got.code(), 0);
    let shown: u32 = String::from_utf8_lossy(&got.stdout)
        .trim()
        .strip_prefix("pid ")
        .and_then(|p| p.parse().ok())
        .expect("pid N");
    let bytes = std::fs::read(&t).unwrap();
    let mut pids = Vec::new();
    logtap_wire::Decoder::new()
        .feed(&bytes, |f| {
            for w in f.writes() {
                pids.push(w.origin.map(|o| o.pid));
            }
        })
        .expect("valid target");
    assert!(!pids.is_empty(), "frames reached the target");
    assert!(
        pids.iter().all(|p| *p == Some(shown)),
        "every write stamped with the program's pid {shown}: {pids:?}"
    );
}

#[test]
fn dynamic_program_is_execed_with_the_library_and_its_log_file_tapped() {
    let d = TestDir::new("run-dynamic");
    let t = d.path.join("target.log");
    let log = d.path.join("app.log");
    let mut c = run_cmd(&t);
    c.env("LLT_TAP_FILE", &log)
        .env("LD_PRELOAD", "")
        .env("LOG", &log)
        .args(["sh", "-c", "echo \"pid $$\"; echo 'into the log' >> \"$LOG\"; echo \"preload $LD_PRELOAD\"; exit 5"]);
    let child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    let stdout = String::from_utf8(out.stdout).unwrap();
    // No process of logtap-run's own: the shell has its pid.
    let so = manifest_dir().join("target/release/liblogtap.so");
    assert_eq!(
        stdout,
        format!("pid {pid}\npreload {}\n", so.display()),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&log).unwrap(), b"into the log\n");
    let target = decode_target(&t);
    let src = log.to_string_lossy().trim_start_matches('/').to_string();
    assert_eq!(target[&src], b"into the log\n");
    assert_eq!(target["stdout"], stdout.as_bytes());

    // The user's own LD_PRELOAD is kept, after the library.
    let mut c = run_cmd(&t);
    c.env("LD_PRELOAD", "libm.so.6")
        .args(["sh", "-c", "echo \"$LD_PRELOAD\""]);
    let got = run_timeout(c, TIMEOUT, "logtap-run with LD_PRELOAD");
    assert_eq!(
        String::from_utf8(got.stdout).unwrap(),
        format!("{}:libm.so.6\n", so.display())
    );
}

#[test]
fn pid_1_reaps_orphans_and_keeps_the_exit_code() {
    let Some(bb) = busybox() else { return };
    if skip_without("unshare") {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: a PID namespace needs root");
        return;
    }
    let d = TestDir::new("run-pid1");
    let t = d.path.join("target.log");
    let pidfile = d.path.join("orphan.pid");
    let bbs = bb.display();
    // The inner shell exits at once: its sleep is re-parented to PID 1,
    // logtap-run, which must reap it when it exits.
    let script = format!(
        "echo \"ppid $PPID\"; {bbs} sh -c '{bbs} sleep 0.2 & echo $! > {pf}'; {bbs} sleep 1; \
         p=$({bbs} cat {pf}); if [ -e /proc/$p ]; then echo \"orphan $p not reaped: $({bbs} cat /proc/$p/stat)\"; \
         else echo \"orphan reaped\"; fi; exit 3",
        pf = pidfile.display()
    );
    let mut c = run_cmd(&t);
    let inner = std::mem::replace(&mut c, Command::new("unshare"));
    c.args(["--pid", "--fork", "--mount-proc"])
        .arg(inner.get_program())
        .arg(&bb)
        .args(["sh", "-c", &script]);
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let got = run_timeout(c, TIMEOUT, "unshare logtap-run");
    let stdout = String::from_utf8_lossy(&got.stdout);
    assert_eq!(
        stdout,
        "ppid 1\norphan reaped\n",
        "stderr: {}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(got.code(), 3);
    assert_eq!(decode_target(&t)["stdout"], got.stdout);
}

#[test]
fn a_paused_sink_never_holds_the_program_back() {
    let Some(go) = go_program() else { return };
    let d = TestDir::new("run-paused");
    let sock = d.path.join("sink.sock");
    let mut sink = Command::new(manifest_dir().join("target/release/logtap-sink"))
        .arg("--socket")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start logtap-sink");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(sink.id() as i32, libc::SIGSTOP) };
    let want = direct(&[go.as_os_str(), "flood".as_ref(), "32".as_ref()]);
    let mut c = run_cmd(&d.path.join("unused"));
    c.env("LLT_TARGET", format!("socket:{}", sock.display()))
        .arg(&go)
        .args(["flood", "32"]);
    let t0 = Instant::now();
    let got = run_timeout(c, TIMEOUT, "logtap-run go flood, sink paused");
    let took = t0.elapsed();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(sink.id() as i32, libc::SIGCONT) };
    let _ = sink.kill();
    let _ = sink.wait();
    eprintln!("32 MiB with the sink paused: {took:?}");
    assert_eq!(got.code(), 0);
    assert!(
        got.stdout == want.stdout,
        "stdout differs from the direct run"
    );
    // The buffer fills, waits one stall period (at most 100 ms) and drops;
    // exit waits LLT_EXIT_TIMEOUT_MS (1 s) for the paused sink at most.
    assert!(
        took < Duration::from_secs(8),
        "the paused sink held the program back: {took:?}"
    );
}

#[test]
fn a_musl_program_is_given_the_musl_library() {
    if skip_without("musl-gcc") {
        return;
    }
    let d = TestDir::new("run-musl");
    let src = d.path.join("m.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\nint main(void){puts(\"musl hi\");return 4;}\n",
    )
    .unwrap();
    let prog = d.path.join("m");
    let st = Command::new("musl-gcc")
        .arg("-o")
        .arg(&prog)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    if is_static(&prog) {
        eprintln!("skipped: musl-gcc made a static program");
        return;
    }
    // target/release has no musl/liblogtap.so: logtap-run names the one it
    // looked for and relays instead, losing nothing.
    let t = d.path.join("target.log");
    let mut c = run_cmd(&t);
    c.arg(&prog);
    let got = run_timeout(c, TIMEOUT, "logtap-run musl program");
    let want_lib = manifest_dir().join("target/release/musl/liblogtap.so");
    let err = String::from_utf8_lossy(&got.stderr);
    assert!(
        err.contains(&format!("no library at {}", want_lib.display())),
        "stderr: {err}"
    );
    assert_eq!(got.code(), 4);
    assert_eq!(got.stdout, b"musl hi\n");
    assert_eq!(decode_target(&t)["stdout"], b"musl hi\n");
    // LLT_LIBRARY overrides: the preload is tried (and musl's loader,
    // given a glibc library, says so itself; the program still runs).
    let mut c = run_cmd(&t);
    c.env("LLT_LIBRARY", so_path()).arg(&prog);
    let got = run_timeout(c, TIMEOUT, "logtap-run musl program, LLT_LIBRARY");
    assert!(
        !String::from_utf8_lossy(&got.stderr).contains("no library at"),
        "LLT_LIBRARY was not used"
    );
}

#[test]
fn the_relayed_program_gets_an_unblocked_mask_and_forwarded_signals() {
    let Some(bb) = busybox() else { return };
    let d = TestDir::new("run-sigmask");
    let t = d.path.join("target.log");
    // logtap-run blocks the signals it forwards; the program must not
    // inherit that (a blocked SIGTERM would never reach its handler).
    let mut c = run_cmd(&t);
    c.arg(&bb)
        .args(["sh", "-c", "exec busybox grep SigBlk /proc/self/status"]);
    let got = run_timeout(c, TIMEOUT, "logtap-run busybox grep SigBlk");
    assert_eq!(got.stdout, b"SigBlk:\t0000000000000000\n");
    // A shell's TERM and USR1 traps run when logtap-run is signalled.
    let mut c = run_cmd(&t);
    c.arg(&bb)
        .args([
            "sh",
            "-c",
            "trap 'echo got USR1' USR1; trap 'echo got TERM; exit 5' TERM; echo ready; \
             while true; do busybox sleep 0.05; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "got USR1\n");
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "got TERM\n");
    assert_eq!(child.wait().unwrap().code(), Some(5));
}

/// A Go program linked dynamically (cgo, external linking) still writes
/// with raw system calls, which a preloaded library never sees: it is
/// relayed like a static one, and its output reaches the target.
#[test]
fn a_dynamically_linked_go_program_is_relayed() {
    if skip_without("go") || skip_without("gcc") {
        return;
    }
    let d = TestDir::new("run-cgo");
    let prog = d.path.join("tapgo-cgo");
    let work = manifest_dir().join("target/go");
    let st = Command::new("go")
        .args(["build", "-ldflags=-linkmode=external", "-o"])
        .arg(&prog)
        .arg(manifest_dir().join("tests/programs/go/tapgo.go"))
        .env("CGO_ENABLED", "1")
        .env("GOCACHE", work.join("cache"))
        .env("GOPATH", work.join("path"))
        .env("GO111MODULE", "off")
        .status()
        .expect("run go build");
    assert!(st.success(), "cgo go build failed");
    assert!(!is_static(&prog), "external linking made a dynamic program");
    let want = direct(&[
        prog.as_os_str(),
        "lines".as_ref(),
        "200".as_ref(),
        "3".as_ref(),
    ]);
    let t = d.path.join("target.log");
    let mut c = run_cmd(&t);
    c.arg(&prog).args(["lines", "200", "3"]);
    let got = run_timeout(c, TIMEOUT, "logtap-run cgo go");
    assert_eq!(got.code(), 3);
    assert_bytes("stdout", &got.stdout, &want.stdout);
    let target = decode_target(&t);
    assert_bytes("target stdout", &target["stdout"], &want.stdout);
    assert_bytes("target stderr", &target["stderr"], &want.stderr);
}

/// `logtap-run prog | head -1`: when logtap-run's own stdout loses its
/// reader, the program sees it as it would writing there itself (SIGPIPE
/// on its next write), instead of running on into a relay that discards.
#[test]
fn a_closed_stdout_reaches_the_program() {
    let Some(bb) = busybox() else { return };
    let d = TestDir::new("run-epipe");
    let t = d.path.join("target.log");
    let mut c = run_cmd(&t);
    c.env("LLT_TAP_INTO", "1")
        .arg(&bb)
        .arg("yes")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "y\n");
    drop(out);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("the program ran on after logtap-run's stdout closed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGPIPE),
        "as `yes | head -1`"
    );
}

/// Every asynchronous signal reaches the program, as under tini: SIGALRM
/// and a real-time signal (a STOPSIGNAL may be one) are not the seven
/// usual ones, and before they ended logtap-run and orphaned the program.
#[test]
fn other_asynchronous_signals_are_forwarded_too() {
    let Some(bb) = busybox() else { return };
    let d = TestDir::new("run-allsig");
    let t = d.path.join("target.log");
    let rt = libc::SIGRTMIN() + 3;
    let script = format!(
        "trap 'echo got ALRM' ALRM; trap 'echo got RT' {rt}; echo ready; \
         i=0; while [ $i -lt 40 ]; do i=$((i+1)); sleep 0.05; done; exit 4"
    );
    let mut c = run_cmd(&t);
    c.arg(&bb)
        .args(["sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    let pid = child.id() as libc::pid_t;
    for sig in [libc::SIGALRM, rt] {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, sig) };
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(4), "logtap-run lived on: {rest:?}");
    assert_eq!(rest, "got ALRM\ngot RT\n");
}
