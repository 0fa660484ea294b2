//! The shared ring, from the sink's side: a client builds a ring exactly
//! as `logtap_wire::ring` defines it, attaches it, sends some version-2
//! frames, writes more records that it never sends, and dies (SIGKILL) or
//! abandons the ring. The sink must deliver every write exactly once, in
//! order; hostile rings must be reported in one line and change nothing
//! else.
//!
//! The dying clients are this test binary run again (`ring_child`), so
//! that the peer the sink sees really dies.

mod common;
mod ring_writer;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{message_bytes, parse, temp_dir, wait_timeout, Sink};
use logtap_wire::ring::RingPosition;
use logtap_wire::{encode_ring, encode_with_origin, Level, WriteOrigin};
use ring_writer::{Client, RingWriter};

const SECS: Duration = Duration::from_secs(30);

fn origin(i: u64) -> WriteOrigin {
    WriteOrigin {
        time_ns: 1_795_268_855_000_000_000 + i * 1_000_000,
        pid: 4242,
    }
}

/// What the program in `program()` wrote, source by source, line by line.
fn expected() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for i in 0..SENT {
        v.push(("stdout".into(), format!("line {i:05} of stdout")));
    }
    v.push(("stdout".into(), "joined-across-frame-and-ring".into()));
    for i in 0..UNSENT {
        v.push(("stdout".into(), format!("unsent {i:05} of stdout")));
        if i % 50 == 0 {
            v.push(("var/log/app.log".into(), format!("log line {i}")));
        }
    }
    v
}

const SENT: usize = 1200;
const UNSENT: usize = 600;

/// The program: a 64 KiB ring whose head wraps; `SENT` lines sent in
/// version-2 frames, a line whose first half is sent and whose rest is
/// only in the ring, then `UNSENT` lines (and some log-file lines, a
/// reservation never committed, and drop counters) only in the ring.
/// `between` runs after attaching, before anything else.
fn program(socket: &Path, between: impl FnOnce()) -> (Client, RingWriter) {
    let mut c = Client::connect(socket);
    let mut ring = RingWriter::new(64 * 1024, 4);
    ring.set_slot(0, Level::Info, b"stdout");
    ring.set_slot(1, Level::Warn, b"/var/log/app.log");
    ring.set_slot(2, Level::Error, b"stderr");
    c.attach(&ring, b"app", RingPosition::default());
    between();
    let mut t = 0;
    let mut batch: Vec<(WriteOrigin, Vec<u8>)> = Vec::new();
    // The frames go out in one write at the end (many small sends would
    // fill a stopped sink's socket buffer by their overhead alone).
    let mut wire = Vec::new();
    for i in 0..SENT {
        let data = format!("line {i:05} of stdout\n").into_bytes();
        ring.push(0, origin(t), &data);
        batch.push((origin(t), data));
        t += 1;
        if batch.len() == 10 || i + 1 == SENT {
            let w: Vec<(WriteOrigin, &[u8])> = batch.iter().map(|(o, d)| (*o, &d[..])).collect();
            wire.extend(encode_ring(
                Level::Info,
                b"app",
                b"stdout",
                &w,
                RingPosition {
                    pos: ring.head,
                    skip: 0,
                },
            ));
            batch.clear();
        }
    }
    // A line cut between the last frame and the ring.
    let data = b"joined-across-frame-and-ring\n";
    let at = ring.push(0, origin(t), data);
    wire.extend(encode_ring(
        Level::Info,
        b"app",
        b"stdout",
        &[(origin(t), &data[..7])],
        RingPosition { pos: at, skip: 7 },
    ));
    c.send(&wire);
    t += 1;
    for i in 0..UNSENT {
        ring.push(
            0,
            origin(t),
            format!("unsent {i:05} of stdout\n").as_bytes(),
        );
        if i % 50 == 0 {
            ring.push(1, origin(t), format!("log line {i}\n").as_bytes());
        }
        if i == 300 {
            // A write that never returned: skipped by its size.
            ring.reserve(2, 100);
        }
        t += 1;
    }
    ring.set_drops(2, 100, 3);
    (c, ring)
}

/// Checks the sink delivered `expected()` exactly once, in order, and the
/// drop notice.
fn check_delivered(lines: &[serde_json::Value]) {
    let got: Vec<(String, String)> = lines
        .iter()
        .filter(|v| v.get("dropped_bytes").is_none())
        .map(|v| {
            (
                v["source"].as_str().unwrap().to_owned(),
                String::from_utf8(message_bytes(v)).unwrap(),
            )
        })
        .collect();
    let want = expected();
    let by_source = |v: &[(String, String)]| {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        for (s, l) in v {
            m.entry(s.clone()).or_default().push(l.clone());
        }
        m
    };
    assert_eq!(got.len(), want.len(), "line count");
    assert_eq!(by_source(&got), by_source(&want));
    let drops: Vec<_> = lines
        .iter()
        .filter(|v| v.get("dropped_bytes").is_some())
        .collect();
    assert_eq!(drops.len(), 1, "one drop notice: {drops:?}");
    assert_eq!(drops[0]["dropped_bytes"], 100);
    assert_eq!(drops[0]["dropped_writes"], 3);
    assert_eq!(drops[0]["dropped_source"], "stderr");
    // The recovered lines keep their write's level and time.
    let log = lines
        .iter()
        .find(|v| v["source"] == "var/log/app.log")
        .unwrap();
    assert_eq!(log["level"], "WARN");
    assert_eq!(log["pid"], 4242);
    assert_eq!(log["platform"], "app");
}

/// Runs this binary again as a client that does `program()`, says
/// `ready`, and waits to be killed. With `pause`, it says `attached`
/// first and waits for a line on stdin before sending anything.
fn spawn_child(socket: &Path, pause: bool) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "ring_child", "--nocapture", "--test-threads=1"])
        .env("LOGTAP_RING_CHILD", socket)
        .env("LOGTAP_RING_CHILD_PAUSE", if pause { "1" } else { "0" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The child's side (a no-op in a normal test run).
/// A client with a 64 KiB ring of one source (stdout) attached from its
/// start, as liblogtap's first connection does.
fn attached_stdout(socket: &Path) -> (Client, RingWriter) {
    let c = Client::connect(socket);
    let ring = RingWriter::new(64 * 1024, 2);
    ring.set_slot(0, Level::Info, b"stdout");
    c.attach(&ring, b"app", RingPosition::default());
    (c, ring)
}

#[test]
fn ring_child() {
    let Some(socket) = std::env::var_os("LOGTAP_RING_CHILD") else {
        return;
    };
    let pause = std::env::var("LOGTAP_RING_CHILD_PAUSE").as_deref() == Ok("1");
    let mut out = std::io::stdout();
    let (_c, _ring) = program(Path::new(&socket), || {
        if pause {
            writeln!(out, "@attached").unwrap();
            out.flush().unwrap();
            let mut l = String::new();
            std::io::stdin().read_line(&mut l).unwrap();
        }
    });
    writeln!(out, "@ready").unwrap();
    out.flush().unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

fn wait_for(child_out: &mut impl BufRead, word: &str) {
    let mut l = String::new();
    loop {
        l.clear();
        assert!(
            child_out.read_line(&mut l).unwrap() > 0,
            "child ended before {word}"
        );
        if l.trim().ends_with(word) {
            return;
        }
    }
}

fn kill(child: &mut std::process::Child) {
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    wait_timeout(child, SECS).expect("child reaped");
}

#[test]
fn sigkilled_program_loses_nothing() {
    let dir = temp_dir("ring-kill");
    let socket = dir.join("sink.sock");
    let sink = Sink::start(&socket, &[], &[]);
    let mut child = spawn_child(&socket, false);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_for(&mut out, "@ready");
    kill(&mut child);
    let n = expected().len() + 1;
    sink.wait_err("recovered", 1, SECS);
    sink.wait_json(n, SECS);
    let stopped = sink.stop();
    assert!(stopped.status.success());
    let lines: Vec<_> = stopped.out.iter().map(|l| parse(l)).collect();
    assert!(lines.len() >= n, "{}", lines.len());
    check_delivered(&lines);
    let rec: Vec<_> = stopped
        .err
        .iter()
        .filter(|l| l.contains("recovered"))
        .collect();
    assert_eq!(rec.len(), 1, "{:?}", stopped.err);
    assert!(rec[0].contains("it exited"), "{rec:?}");
    assert!(
        rec[0].contains("1 writes that never returned skipped"),
        "{rec:?}"
    );
}

#[test]
fn program_killed_while_the_sink_is_stopped_loses_nothing() {
    let dir = temp_dir("ring-stopped");
    let socket = dir.join("sink.sock");
    let sink = Sink::start(&socket, &[], &[]);
    let mut child = spawn_child(&socket, true);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_for(&mut out, "@attached");
    sink.signal(libc::SIGSTOP);
    writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    wait_for(&mut out, "@ready");
    kill(&mut child);
    sink.signal(libc::SIGCONT);
    let n = expected().len() + 1;
    sink.wait_err("recovered", 1, SECS);
    sink.wait_json(n, SECS);
    let stopped = sink.stop();
    let lines: Vec<_> = stopped.out.iter().map(|l| parse(l)).collect();
    check_delivered(&lines);
}

#[test]
fn abandoned_ring_is_read_with_the_program_alive() {
    let dir = temp_dir("ring-abandon");
    let socket = dir.join("sink.sock");
    let sink = Sink::start(&socket, &[], &[]);
    let (c, ring) = program(&socket, || ());
    ring.abandon();
    drop(c);
    let n = expected().len() + 1;
    sink.wait_err("recovered", 1, SECS);
    sink.wait_json(n, SECS);
    let stopped = sink.stop();
    let lines: Vec<_> = stopped.out.iter().map(|l| parse(l)).collect();
    check_delivered(&lines);
    assert!(stopped.err.iter().any(|l| l.contains("abandoned")));
    // The peer's own pid (this process) is the peer pid.
    assert_eq!(lines[0]["peer_pid"], std::process::id());
}

/// The writes a dead program had in its intent slots: one in flight
/// (delivered), one committing whose record was committed and walked (not
/// delivered twice), one committing whose record is still a reservation
/// (its first `len` bytes delivered), one committing whose record was
/// received in a frame (not delivered twice), and slots that make no sense
/// (skipped and counted, nothing else changed).
#[test]
fn intent_slots_deliver_the_write_in_flight_exactly_once() {
    use logtap_wire::ring as lr;
    let dir = temp_dir("ring-intents");
    let socket = dir.join("sink.sock");
    let sink = Sink::start(&socket, &[], &[]);
    let mut c = Client::connect(&socket);
    let mut ring = RingWriter::new(64 * 1024, 2);
    ring.set_slot(0, Level::Info, b"stdout");
    ring.set_slot(1, Level::Error, b"stderr");
    c.attach(&ring, b"app", RingPosition::default());
    let sent = ring.push(0, origin(1), b"sent\n");
    let after_sent = ring.head;
    c.frame(
        b"stdout",
        &[(origin(1), b"sent\n")],
        RingPosition {
            pos: after_sent,
            skip: 0,
        },
    );
    let walked = ring.push(0, origin(2), b"walked\n");
    let reserved = ring.reserve(1, 64);
    ring.set_intent(0, lr::INTENT_IN_FLIGHT, origin(5), 0, 10, 0, b"in flight\n");
    ring.set_intent(
        1,
        lr::INTENT_COMMITTING,
        origin(2),
        0,
        7,
        walked,
        b"walked\n",
    );
    ring.set_intent(
        2,
        lr::INTENT_COMMITTING,
        origin(3),
        1,
        11,
        reserved,
        b"committing\n and not these",
    );
    ring.set_intent(3, lr::INTENT_COMMITTING, origin(1), 0, 5, sent, b"sent\n");
    // Hostile: an unknown state, a length beyond a slot, a source beyond
    // the table, a length of 0.
    ring.set_intent(4, 7, origin(6), 0, 3, 0, b"bad");
    ring.set_intent(5, lr::INTENT_IN_FLIGHT, origin(6), 0, 1 << 40, 0, b"bad");
    ring.set_intent(6, lr::INTENT_IN_FLIGHT, origin(6), 9, 3, 0, b"bad");
    ring.set_intent(7, lr::INTENT_COMMITTING, origin(6), 0, 0, 0, b"");
    ring.abandon();
    drop(c);
    sink.wait_err("recovered", 1, SECS);
    sink.wait_json(4, SECS);
    std::thread::sleep(Duration::from_millis(300));
    let stopped = sink.stop();
    let lines: Vec<_> = stopped.out.iter().map(|l| parse(l)).collect();
    let got: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["source"].as_str().unwrap().to_string(),
                l["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("stdout", "sent"),
        ("stdout", "walked"),
        ("stderr", "committing"),
        ("stdout", "in flight"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want, "{:?}", stopped.err);
    let rec: Vec<_> = stopped
        .err
        .iter()
        .filter(|l| l.contains("recovered"))
        .collect();
    assert_eq!(rec.len(), 1, "{:?}", stopped.err);
    assert!(
        rec[0].contains(
            "21 bytes in 2 writes in flight when it died delivered from its intent slots"
        ),
        "{rec:?}"
    );
    assert!(
        rec[0].contains("4 intent slots that make no sense skipped"),
        "{rec:?}"
    );
    // The in-flight write carries its own origin, as its record would.
    assert_eq!(lines[3]["pid"], 4242, "{:?}", lines[3]);
}

#[test]
fn a_live_program_keeps_its_ring() {
    // The connection ends but the program lives and does not abandon the
    // ring: the sink leaves it to the program (which sends it again on its
    // next connection); after the program takes it to another connection
    // (owner word changed) nothing is read either.
    let dir = temp_dir("ring-live");
    let socket = dir.join("sink.sock");
    let sink = Sink::start(&socket, &[], &[]);
    let (mut c, mut ring) = attached_stdout(&socket);
    ring.push(0, origin(0), b"sent\n");
    c.frame(
        b"stdout",
        &[(origin(0), b"sent\n")],
        RingPosition {
            pos: ring.head,
            skip: 0,
        },
    );
    ring.push(0, origin(1), b"unsent, kept by the program\n");
    drop(c);
    sink.wait_json(1, SECS);
    std::thread::sleep(Duration::from_millis(300));
    // Taken to another connection: owner changes.
    let c2 = Client::connect(&socket);
    ring.set_owner(c2.token);
    std::thread::sleep(Duration::from_millis(500));
    let stopped = sink.stop();
    assert_eq!(stopped.out.len(), 1, "{:?}", stopped.out);
    assert!(
        !stopped.err.iter().any(|l| l.contains("recovered")),
        "{:?}",
        stopped.err
    );
}

fn attach_frame(at: RingPosition) -> Vec<u8> {
    logtap_wire::encode_ring(Level::Info, b"app", b"logtap", &[], at)
}

/// Sends a good version-1 line on `c` and returns the expected text.
fn good_line(c: &mut Client, tag: &str) -> String {
    let text = format!("still flowing after {tag}");
    let f = encode_with_origin(
        Level::Info,
        b"app",
        b"stdout",
        &[(origin(0), format!("{text}\n").as_bytes())],
    );
    c.send(&f);
    text
}

#[test]
fn hostile_rings_are_reported_and_change_nothing_else() {
    let dir = temp_dir("ring-hostile");
    let socket = dir.join("sink.sock");
    let sink = Sink::start(&socket, &[], &[]);
    let mut want: Vec<String> = Vec::new();
    let mut keep = Vec::new();
    let mut expect_err: Vec<&str> = Vec::new();

    // Wrong seals.
    let mut c = Client::connect(&socket);
    let r = RingWriter::unsealed(64 * 1024, 2);
    c.attach(&r, b"app", RingPosition::default());
    want.push(good_line(&mut c, "unsealed"));
    expect_err.push("lack F_SEAL_SEAL|F_SEAL_SHRINK");
    keep.push(c);

    // Wrong size: grown before sealing.
    let mut c = Client::connect(&socket);
    let r = RingWriter::unsealed(64 * 1024, 2);
    rustix::fs::ftruncate(&r.fd, r.data_offset + r.cap + 4096).unwrap();
    rustix::fs::fcntl_add_seals(
        &r.fd,
        rustix::fs::SealFlags::SHRINK | rustix::fs::SealFlags::SEAL,
    )
    .unwrap();
    c.attach(&r, b"app", RingPosition::default());
    want.push(good_line(&mut c, "wrong size"));
    expect_err.push("is not data offset");
    keep.push(c);

    // Not a memfd at all: a socket.
    let mut c = Client::connect(&socket);
    let (pr, _pw) = std::os::unix::net::UnixStream::pair().unwrap();
    c.send_with_fds(&attach_frame(RingPosition::default()), &[pr.as_fd()]);
    want.push(good_line(&mut c, "a socket"));
    expect_err.push("not a regular file");
    keep.push(c);

    // Owner token of another connection.
    let other = Client::connect(&socket);
    let mut c = Client::connect(&socket);
    let r = RingWriter::new(64 * 1024, 2);
    r.set_owner(other.token);
    c.send_with_fds(&attach_frame(RingPosition::default()), &[r.fd.as_fd()]);
    want.push(good_line(&mut c, "another's token"));
    expect_err.push("owner word is not this connection's token");
    keep.push(c);
    keep.push(other);

    // A memfd without an attach frame.
    let mut c = Client::connect(&socket);
    let r = RingWriter::new(64 * 1024, 2);
    let f = encode_with_origin(
        Level::Info,
        b"app",
        b"stdout",
        &[(origin(0), b"with a stray fd\n")],
    );
    c.send_with_fds(&f, &[r.fd.as_fd()]);
    want.push("with a stray fd".into());
    want.push(good_line(&mut c, "a stray fd"));
    expect_err.push("memfd without an attach frame");
    keep.push(c);

    // Many descriptors in one message.
    let mut c = Client::connect(&socket);
    let rings: Vec<RingWriter> = (0..10).map(|_| RingWriter::new(4096, 1)).collect();
    rings[0].set_owner(c.token);
    let fds: Vec<_> = rings.iter().map(|r| r.fd.as_fd()).collect();
    c.send_with_fds(&attach_frame(RingPosition::default()), &fds);
    // (A version-2 frame: the first ring was attached.)
    c.frame(
        b"stdout",
        &[(origin(0), b"still flowing after many fds\n")],
        RingPosition::default(),
    );
    want.push("still flowing after many fds".into());
    expect_err.push("more file descriptors than its one ring");
    keep.push(c);

    // Version-1 frame after the attach, and a position going back.
    let mut c = Client::connect(&socket);
    let r = RingWriter::new(64 * 1024, 2);
    c.attach(&r, b"app", RingPosition::default());
    want.push(good_line(&mut c, "a version-1 frame after attach"));
    expect_err.push("version-1 frame after its ring was attached");
    keep.push(c);
    let mut c = Client::connect(&socket);
    let mut r = RingWriter::new(64 * 1024, 2);
    r.set_slot(0, Level::Info, b"stdout");
    r.push(0, origin(0), b"a\n");
    r.push(0, origin(0), b"b\n");
    c.attach(&r, b"app", RingPosition { pos: 32, skip: 0 });
    c.frame(b"stdout", &[], RingPosition { pos: 0, skip: 0 });
    want.push(good_line(&mut c, "a position going back"));
    expect_err.push("ring position went back");
    keep.push(c);

    // Attach frame without a descriptor.
    let mut c = Client::connect(&socket);
    c.send(&attach_frame(RingPosition::default()));
    want.push(good_line(&mut c, "an attach without fd"));
    expect_err.push("attach frame without a memfd");
    keep.push(c);

    for e in &expect_err {
        sink.wait_err(e, 1, SECS);
    }
    let lines = sink.wait_json(want.len(), SECS);
    let mut got: Vec<String> = lines
        .iter()
        .map(|v| String::from_utf8(message_bytes(v)).unwrap())
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    // One line each.
    let err = sink.err.lock().unwrap().clone();
    for e in &expect_err {
        assert_eq!(
            err.iter().filter(|l| l.contains(e)).count(),
            1,
            "{e}: {err:?}"
        );
        let l = err.iter().find(|l| l.contains(e)).unwrap();
        assert!(
            l.contains(&format!("pid {}", std::process::id())),
            "names the peer: {l}"
        );
    }
    // None of those rings is kept but the first of the many.
    let memfds = memfds_of(sink.pid());
    assert_eq!(memfds, 1, "sink holds {memfds} memfds");
    drop(keep);
    let stopped = sink.stop();
    assert!(stopped.status.success());
}

/// Rings lying in their records, recovered after the program abandons
/// them: each walk stops with one line naming the peer; what came before
/// the lie is delivered.
#[test]
fn lying_rings_end_the_walk_with_one_line() {
    let dir = temp_dir("ring-lies");
    let socket = dir.join("sink.sock");
    let sink = Sink::start(&socket, &[], &[]);
    type Lie = fn(&mut RingWriter);
    let lies: Vec<(&str, Lie, &str)> = vec![
        (
            "head beyond a capacity",
            |r| {
                r.head += 10 * r.cap;
                r.store_head();
            },
            "is not within a capacity",
        ),
        (
            "length beyond the head",
            |r| {
                let at = r.push(0, origin(9), b"liar\n");
                r.put_word(at, logtap_wire::ring::record_header(0, 60_000));
            },
            "does not fit",
        ),
        (
            "unknown source",
            |r| {
                r.push(7, origin(9), b"liar\n");
            },
            "beyond the table",
        ),
        (
            "slot not ready",
            |r| {
                r.push(1, origin(9), b"liar\n");
            },
            "is not ready",
        ),
        (
            "bad flags",
            |r| {
                let at = r.push(0, origin(9), b"liar\n");
                r.put_word(at, logtap_wire::ring::REC_PAD | 5);
            },
            "invalid record header",
        ),
        (
            "entry length differs",
            |r| {
                let at = r.push(0, origin(9), b"liar\n");
                // The entry header's len field.
                let e = logtap_wire::EntryHeader {
                    origin: origin(9),
                    len: 4,
                };
                rustix::io::pwrite(&r.fd, &e.to_bytes(), r.data_offset + at % r.cap + 8).unwrap();
            },
            "differs from its header",
        ),
    ];
    let mut clients = Vec::new();
    for (i, (_, lie, _)) in lies.iter().enumerate() {
        let mut c = Client::connect(&socket);
        let mut r = RingWriter::new(64 * 1024, 4);
        r.set_slot(0, Level::Info, format!("lie{i}").as_bytes());
        c.attach(&r, b"app", RingPosition::default());
        let truth = format!("truth {i}\n");
        r.push(0, origin(1), truth.as_bytes());
        c.frame(
            format!("lie{i}").as_bytes(),
            &[(origin(1), truth.as_bytes())],
            RingPosition {
                pos: r.head,
                skip: 0,
            },
        );
        lie(&mut r);
        r.abandon();
        clients.push((c, r));
    }
    // End the connections (the rings stay abandoned).
    let rings: Vec<RingWriter> = clients.into_iter().map(|(_, r)| r).collect();
    for (_, _, msg) in &lies {
        sink.wait_err(msg, 1, SECS);
    }
    let lines = sink.wait_json(lies.len(), SECS);
    let mut got: Vec<String> = lines
        .iter()
        .map(|v| String::from_utf8(message_bytes(v)).unwrap())
        .collect();
    got.sort();
    let mut want: Vec<String> = (0..lies.len()).map(|i| format!("truth {i}")).collect();
    want.sort();
    assert_eq!(got, want);
    let err = sink.err.lock().unwrap().clone();
    for (what, _, msg) in &lies {
        let n = err.iter().filter(|l| l.contains(msg)).count();
        assert_eq!(n, 1, "{what}: {err:?}");
    }
    drop(rings);
    assert!(sink.stop().status.success());
}

/// A writer killed between reserving its space and stamping it leaves a
/// run of zero words: the sink skips it up to the next header, counts one
/// write that never returned, and delivers what other writers put after
/// it (with several threads on few cores a writer is preempted in that
/// window often enough to matter).
#[test]
fn space_a_killed_writer_never_stamped_is_skipped_and_what_follows_delivered() {
    let dir = temp_dir("ring-unstamped");
    let socket = dir.join("sink.sock");
    let sink = Sink::start(&socket, &[], &[]);
    let c = Client::connect(&socket);
    let mut r = RingWriter::new(64 * 1024, 4);
    r.set_slot(0, Level::Info, b"stdout");
    c.attach(&r, b"app", RingPosition::default());
    r.push(0, origin(1), b"before the hole\n");
    r.unstamped(10);
    r.unstamped(300);
    r.push(0, origin(2), b"after the hole\n");
    r.unstamped(1);
    r.push(0, origin(3), b"after the second hole\n");
    r.abandon();
    drop(c);
    let lines = sink.wait_json(3, SECS);
    let got: Vec<String> = lines
        .iter()
        .map(|v| String::from_utf8(message_bytes(v)).unwrap())
        .collect();
    assert_eq!(
        got,
        ["before the hole", "after the hole", "after the second hole"]
    );
    sink.wait_err("writes that never returned skipped", 1, SECS);
    drop(r);
    assert!(sink.stop().status.success());
}

/// A ring scribbled on while the sink reads it: whatever it finds, the
/// sink neither crashes nor hangs, reports the recovery, and serves the
/// next client.
#[test]
fn ring_changing_during_recovery() {
    let dir = temp_dir("ring-scribble");
    let socket = dir.join("sink.sock");
    let sink = Sink::start(&socket, &[], &[]);
    for round in 0..5u64 {
        let c = Client::connect(&socket);
        let mut r = RingWriter::new(1 << 20, 2);
        r.set_slot(0, Level::Info, b"stdout");
        c.attach(&r, b"app", RingPosition::default());
        for i in 0..20_000u64 {
            r.push(0, origin(i), b"0123456789abcdef\n");
        }
        r.abandon();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let scribbler = std::thread::spawn({
            let stop = stop.clone();
            let fd = r.fd.try_clone().unwrap();
            let (cap, off) = (r.cap, r.data_offset);
            move || {
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ round;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let at = (x % cap) & !7;
                    let _ = rustix::io::pwrite(&fd, &x.to_ne_bytes(), off + at);
                    // Now and then the control block too.
                    if x % 7 == 0 {
                        let _ = rustix::io::pwrite(&fd, &x.to_ne_bytes(), 64);
                    }
                }
            }
        });
        drop(c);
        sink.wait_err("recovered", round as usize + 1, SECS);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        scribbler.join().unwrap();
    }
    // Still serving.
    let mut c = Client::connect(&socket);
    let want = good_line(&mut c, "scribbling");
    let deadline = Instant::now() + SECS;
    loop {
        let out = sink.out.lock().unwrap().clone();
        if out.iter().any(|l| l.contains(&want)) {
            break;
        }
        assert!(Instant::now() < deadline, "sink stopped serving");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(sink.stop().status.success());
}

/// Memfds the process `pid` holds open.
fn memfds_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.to_string_lossy().starts_with("/memfd:"))
        .count()
}

fn fds_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn three_hundred_attached_clients_stay_within_the_fd_budget() {
    let dir = temp_dir("ring-300");
    let socket = dir.join("sink.sock");
    raise_own_fd_limit();
    let sink = Sink::start(&socket, &[], &[]);
    let base = fds_of(sink.pid());
    let mut clients = Vec::new();
    for i in 0..300u64 {
        let mut c = Client::connect(&socket);
        let mut r = RingWriter::new(64 * 1024, 2);
        r.set_slot(0, Level::Info, b"stdout");
        c.attach(&r, b"app", RingPosition::default());
        let line = format!("client {i}\n");
        r.push(0, origin(i), line.as_bytes());
        c.frame(
            b"stdout",
            &[(origin(i), line.as_bytes())],
            RingPosition {
                pos: r.head,
                skip: 0,
            },
        );
        clients.push((c, r));
    }
    sink.wait_json(300, SECS);
    let memfds = memfds_of(sink.pid());
    let fds = fds_of(sink.pid());
    eprintln!("sink with 300 attached clients: {fds} fds ({base} before), {memfds} memfds");
    assert_eq!(memfds, 300, "one memfd per attached connection");
    assert!(fds <= base + 600 + 8, "{fds} fds");
    // The library clears the owner word before closing on purpose: the
    // sink lets every ring go.
    for (_, r) in &clients {
        r.set_owner(0);
    }
    drop(clients);
    let deadline = Instant::now() + SECS;
    while memfds_of(sink.pid()) > 0 {
        assert!(
            Instant::now() < deadline,
            "memfds kept after the clients left"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped = sink.stop();
    assert!(stopped.status.success());
    assert_eq!(stopped.out.len(), 300);
}

/// This test process holds 600 descriptors besides the other tests'.
fn raise_own_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let l = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (l.current, l.maximum) {
        if cur < max {
            let _ = setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(max),
                    maximum: Some(max),
                },
            );
        }
    }
}

/// Longer than the 64 bytes left before the end of the ring.
const LATE: &[u8] = b"after the freed padding, a line too long for the ring's last 64 bytes\n";

/// liblogtap frees (and zeroes) padding at its tail after the frame before
/// it was sent: a frame planned before the padding appeared ends at the
/// padding's start, so the last position the sink received points at
/// zeroed memory while the ring's tail has moved past it. The recovery
/// must start at the tail, not stop there and lose what follows.
#[test]
fn recovery_starts_at_the_tail_when_freed_padding_follows_the_last_frame() {
    let dir = temp_dir("ring-freed-pad");
    let socket = dir.join("sink.sock");
    let sink = Sink::start(&socket, &[], &[]);
    let (mut c, mut ring) = attached_stdout(&socket);
    // One record filling the ring but its last 64 bytes, sent.
    let len = ring.cap as usize - 64 - 24;
    let mut big = vec![b'a'; len];
    big[len - 1] = b'\n';
    ring.push(0, origin(0), &big);
    let sent_to = ring.head;
    c.frame(
        b"stdout",
        &[(origin(0), &big[..])],
        RingPosition {
            pos: sent_to,
            skip: 0,
        },
    );
    // The next write does not fit before the end: padding, then the record
    // at the start of the ring; the consumer frees and zeroes the padding.
    let at = ring.push(0, origin(1), LATE);
    assert_eq!(at, ring.cap, "the record wrapped");
    ring.put_word(sent_to, 0);
    ring.put_u64(logtap_wire::ring::TAIL_AT, at);
    ring.abandon();
    drop(c);
    sink.wait_json(2, SECS);
    std::thread::sleep(Duration::from_millis(300));
    let stopped = sink.stop();
    let msgs: Vec<Vec<u8>> = stopped
        .out
        .iter()
        .map(|l| message_bytes(&parse(l)))
        .collect();
    assert_eq!(msgs.len(), 2, "{:?}", stopped.err);
    assert_eq!(msgs[0], big[..len - 1]);
    assert_eq!(msgs[1][..], LATE[..LATE.len() - 1]);
    assert!(
        !stopped.err.iter().any(|l| l.contains("stopped early")),
        "{:?}",
        stopped.err
    );
}

/// A program that exits with everything sent (the common case) leaves an
/// abandoned ring with nothing after the last frame: the sink says nothing
/// about it (a line per normal exit would be noise).
#[test]
fn an_empty_recovery_is_not_reported() {
    let dir = temp_dir("ring-empty-recovery");
    let socket = dir.join("sink.sock");
    let sink = Sink::start(&socket, &[], &[]);
    let (mut c, mut ring) = attached_stdout(&socket);
    ring.push(0, origin(0), b"everything sent\n");
    c.frame(
        b"stdout",
        &[(origin(0), b"everything sent\n")],
        RingPosition {
            pos: ring.head,
            skip: 0,
        },
    );
    ring.abandon();
    drop(c);
    sink.wait_json(1, SECS);
    std::thread::sleep(Duration::from_millis(500));
    let stopped = sink.stop();
    assert_eq!(stopped.out.len(), 1, "{:?}", stopped.out);
    assert!(
        !stopped.err.iter().any(|l| l.contains("recovered")),
        "{:?}",
        stopped.err
    );
}
