//! End to end: a logtap-sink that reads the program's ring itself. Once
//! the ring is attached, the library sends small read requests instead of
//! the bytes; the sink reads the records from the ring, delivers them and
//! answers, and only then does the program free that space. The reference
//! is what the program wrote to its own stdout file.

use std::path::Path;
use std::process::{Command, Stdio};

mod common;

use common::kids::{json_lines, kill, SinkProc};

/// The library tapping stdout to the socket `sock`, with no spool.
fn tapped_env(sock: &Path) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), common::so_path().display().to_string()),
        ("LLT_TARGET".into(), format!("socket:{}", sock.display())),
        ("LLT_FORMAT".into(), "logtap".into()),
        ("LLT_TAP_INTO".into(), "1".into()),
        ("LLT_SPOOL".into(), "off".into()),
    ]
}

/// The sink's lines of the (one) program's stdout, each with its newline.
fn delivered(out: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    for o in json_lines(out).iter().filter(|o| o["source"] == "stdout") {
        got.extend_from_slice(o["message"].as_str().unwrap().as_bytes());
        got.push(b'\n');
    }
    got
}

/// Writes `n` lines of 100 bytes to its stdout, one `write` each.
const PROGRAM: &str = r#"
import os, sys
line = b"x" * 90
for i in range(int(sys.argv[1])):
    os.write(1, b"%08d %s\n" % (i, line))
"#;

/// Runs the program under the library and `strace`, which counts what its
/// threads (the library's sender among them) sent with `sendmsg`: the
/// bytes of that count.
fn run_python(dir: &Path, sock: &Path, out: &Path, lines: u32) -> u64 {
    let py = common::python3().expect("python3");
    let trace = dir.join("trace");
    let mut c = Command::new("strace");
    c.args([
        "-f",
        "-qq",
        "--seccomp-bpf",
        "-e",
        "trace=sendmsg",
        "-e",
        "signal=none",
        "-o",
    ])
    .arg(&trace)
    .arg(py)
    .args(["-c", PROGRAM, &lines.to_string()])
    .envs(tapped_env(sock))
    .stdin(Stdio::null())
    .stdout(std::fs::File::create(out).unwrap());
    let o = c.output().unwrap();
    assert!(o.status.success(), "strace python failed: {o:?}");
    let t = std::fs::read_to_string(&trace).unwrap();
    let mut sent = 0u64;
    for l in t.lines() {
        if l.contains("sendmsg") {
            if let Some(n) = l.rsplit("= ").next().and_then(|n| n.parse::<u64>().ok()) {
                sent += n;
            }
        }
    }
    sent
}

/// The tapped bytes cross no socket: the program sends a few small read
/// requests (and its attach frame), where frames would carry every byte. The sink still delivers every line
/// exactly once and in order.
#[test]
fn a_burst_is_read_from_the_ring_and_written_by_the_program_only_once() {
    if common::python3().is_none() {
        return;
    }
    let dir = common::kids::tmpdir("direct", "once");
    let sock = dir.join("s");
    let out = dir.join("out");
    let sink = SinkProc::start_with_args(&[], &sock, &["--spool", "off"]);
    let sent = run_python(&dir, &sock, &out, 50_000);
    kill(sink.child.id(), libc::SIGTERM);
    let (st, sout, err) = sink.finish();
    assert!(st.success(), "sink: {err}");
    let file = std::fs::read(&out).unwrap();
    assert_eq!(file.len(), 50_000 * 100);
    let got = delivered(&sout);
    assert!(
        got == file,
        "the sink has {} bytes, the program wrote {} (sink said: {err})",
        got.len(),
        file.len()
    );
    let written = file.len() as u64;
    assert!(
        sent > 0 && sent < written / 20,
        "the program sent {sent} bytes on its socket for {written} bytes of stdout: the tapped bytes went through the socket"
    );
}

/// The same program with a receiver that never says it reads the ring (a
/// sink of an older version, or another reader of the format): the bytes
/// go in frames, byte for byte as before. The count of the test above
/// sees them: its check can fail.
#[test]
fn a_receiver_that_does_not_read_the_ring_gets_the_bytes_in_frames() {
    if common::python3().is_none() {
        return;
    }
    let dir = common::kids::tmpdir("direct", "frames");
    let sock = dir.join("s");
    let out = dir.join("out");
    // logtap-sink's own decoder of a frame file, fed by a plain reader of
    // the socket that never greets.
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut s, &mut all).unwrap();
        all
    });
    let sent = run_python(&dir, &sock, &out, 20_000);
    let frames = reader.join().unwrap();
    let file = std::fs::read(&out).unwrap();
    let written = file.len() as u64;
    assert!(
        sent > written,
        "frames carry the bytes: {sent} bytes sent for {written}"
    );
    let frame_file = dir.join("frames");
    std::fs::write(&frame_file, &frames).unwrap();
    let o = Command::new(common::kids::built("logtap-sink"))
        .arg("--read")
        .arg(&frame_file)
        .output()
        .unwrap();
    assert!(o.status.success());
    let mut got = Vec::new();
    for v in json_lines(&o.stdout)
        .iter()
        .filter(|v| v["source"] == "stdout")
    {
        got.extend_from_slice(v["message"].as_str().unwrap().as_bytes());
        got.push(b'\n');
    }
    assert!(got == file, "frames carry every byte once");
}

/// A ring smaller than the 256 KiB a request waits for in a burst (64 KiB)
/// with the longest linger (100 ms): requests go out as writers wait for
/// room, not once per linger, so a burst is delivered whole and quickly.
#[test]
fn a_small_ring_with_a_long_linger_still_delivers_a_burst_whole() {
    let dir = common::kids::tmpdir("direct", "small");
    let sock = dir.join("s");
    let out = dir.join("out");
    let sink = SinkProc::start_with_args(&[], &sock, &["--spool", "off"]);
    let t = std::time::Instant::now();
    let st = Command::new(common::kids::stress("direct"))
        .args(["lines", "200000"])
        .envs(tapped_env(&sock))
        .env("LLT_BUFFER_SIZE", "64K")
        .env("LLT_FLUSH_MS", "100")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .status()
        .unwrap();
    let took = t.elapsed();
    assert!(st.success());
    kill(sink.child.id(), libc::SIGTERM);
    let (st, sout, err) = sink.finish();
    assert!(st.success(), "sink: {err}");
    let file = std::fs::read(&out).unwrap();
    let got = delivered(&sout);
    assert!(
        !String::from_utf8_lossy(&sout).contains("dropped"),
        "drop notices: the writers gave up waiting for room"
    );
    assert!(
        got == file,
        "the sink has {} bytes, the program wrote {}",
        got.len(),
        file.len()
    );
    assert!(
        took < std::time::Duration::from_secs(10),
        "200,000 lines through a 64 KiB ring took {took:?}"
    );
}

/// The library closes its connection on purpose (here before
/// `unshare(CLONE_NEWUSER)`) while the sink, stopped, has not served the
/// requests it sent: the sink serves them at the end of that connection,
/// and the next connection asks for the same records again. The sink reads
/// from where any sink got to in that ring (`READ_AT`), so each line comes
/// once.
#[test]
fn requests_served_after_the_program_reconnected_are_not_read_twice() {
    let dir = common::kids::tmpdir("direct", "reconnect");
    let sock = dir.join("s");
    let out = dir.join("out");
    let sink = SinkProc::start_with_args(&[], &sock, &["--spool", "off"]);
    let prog = common::c_program("reconnect", common::CVariant::Plain);
    let mut p = Command::new(prog)
        .args(["400", "300", "1500"])
        .envs(tapped_env(&sock))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    // Stopped before the first lines, resumed after the unshare and
    // before the last lines.
    std::thread::sleep(std::time::Duration::from_millis(250));
    kill(sink.child.id(), libc::SIGSTOP);
    std::thread::sleep(std::time::Duration::from_millis(1000));
    kill(sink.child.id(), libc::SIGCONT);
    assert!(p.wait().unwrap().success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    kill(sink.child.id(), libc::SIGTERM);
    let (st, sout, err) = sink.finish();
    assert!(st.success(), "sink: {err}");
    let file = std::fs::read(&out).unwrap();
    assert_eq!(file.len(), 13 + 110 * 9);
    let got = delivered(&sout);
    assert!(
        got == file,
        "the sink has {} bytes, the program wrote {} (sink said: {err})",
        got.len(),
        file.len()
    );
}

/// A sink stopped (SIGTERM) while a live program's requests wait in its
/// socket serves them all before it goes: the program counts what it asked
/// for as the sink's, and exits later without waiting for answers. Here
/// the sink is paused while the program asks for 30 MB of a 64 MiB ring,
/// then stopped; the program exits with no sink.
#[test]
fn a_stopping_sink_serves_every_request_it_was_handed() {
    let Some(py) = common::python3() else {
        return;
    };
    let dir = common::kids::tmpdir("direct", "stopping");
    let sock = dir.join("s");
    let out = dir.join("out");
    let sink = SinkProc::start_with_args(&[], &sock, &["--spool", "off"]);
    let mut p = Command::new(py)
        .args([
            "-c",
            "import os, time\n\
             line = b'y' * 99 + b'\\n'\n\
             os.write(1, line); time.sleep(0.5)\n\
             for i in range(30000):\n    os.write(1, line * 10)\n\
             time.sleep(3)\n",
        ])
        .envs(tapped_env(&sock))
        .env("LLT_BUFFER_SIZE", "64M")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    kill(sink.child.id(), libc::SIGSTOP);
    std::thread::sleep(std::time::Duration::from_millis(2000));
    kill(sink.child.id(), libc::SIGCONT);
    kill(sink.child.id(), libc::SIGTERM);
    let (st, sout, err) = sink.finish();
    assert!(st.success(), "sink: {err}");
    assert!(p.wait().unwrap().success());
    let file = std::fs::read(&out).unwrap();
    assert_eq!(file.len(), 300_001 * 100, "the program's own file");
    let got = delivered(&sout);
    assert!(
        got == file,
        "the stopping sink delivered {} of the {} bytes the program had asked it to read (it said: {err})",
        got.len(),
        file.len()
    );
}
