//! Tests that run the `logtap-sink` binary against well-behaved and hostile
//! clients.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{message_bytes, parse, temp_dir, wait_timeout, Sink, BIN};
use logtap_wire::{encode, encode_with_origin, header, header_version, Level, WriteOrigin};

const SECS: Duration = Duration::from_secs(30);

/// A tiny deterministic PRNG (xorshift) for cut points and garbage.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Frames carrying `data`, cut at pseudo-random points (so lines are split
/// across frames, and frames carry many lines).
fn frames_for(data: &[u8], source: &[u8], rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = (1 + rng.below(3000)).min(rest.len());
        out.push(encode(Level::Info, b"app", source, &rest[..n]));
        rest = &rest[n..];
    }
    out
}

/// Sends `bytes` on a new connection and returns it (still open).
fn send(sink: &Sink, bytes: &[u8]) -> UnixStream {
    let mut s = sink.connect();
    s.write_all(bytes).unwrap();
    s
}

/// True when the sink closes `s` (we read EOF) within the timeout.
fn closed_by_sink(s: &mut UnixStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = [0u8; 16];
    // The sink's hello (12 bytes, and its 16-byte word that it reads
    // rings) comes first.
    let mut got = 0;
    loop {
        // ECONNRESET when the sink closed with our bytes still unread.
        match s.read(&mut b) {
            Ok(0) => return true,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(n) => {
                got += n;
                if got > logtap_wire::ring::HELLO_LEN + logtap_wire::ring::SINK_MSG_LEN {
                    return false;
                }
            }
        }
    }
}

fn raw_header(version: i32, len: i32) -> Vec<u8> {
    let mut h = version.to_ne_bytes().to_vec();
    h.extend_from_slice(&len.to_ne_bytes());
    h
}

#[test]
fn hostile_connections_beside_a_good_writer() {
    let dir = temp_dir("hostile");
    let socket = dir.join("run/sink.sock");
    let sink = Sink::start(&socket, &[], &[]);
    let me = std::process::id();

    // 300 idle connections, held open throughout.
    let idle: Vec<UnixStream> = (0..300).map(|_| sink.connect()).collect();

    // The good writer: numbered lines on two sources, one persistent
    // connection, frames cut anywhere.
    const N: usize = 20_000;
    let good = std::thread::spawn({
        let socket = socket.clone();
        move || {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let out: String = (0..N).map(|i| format!("good stdout line {i}\n")).collect();
            let err: String = (0..N / 4)
                .map(|i| format!("good stderr line {i}\n"))
                .collect();
            let a = frames_for(out.as_bytes(), b"stdout", &mut rng);
            let b = frames_for(err.as_bytes(), b"stderr", &mut rng);
            let mut s = UnixStream::connect(&socket).unwrap();
            let (mut ia, mut ib) = (0, 0);
            while ia < a.len() || ib < b.len() {
                // Several frames per write, sometimes one at a time.
                let mut batch = Vec::new();
                for _ in 0..(1 + rng.below(8)) {
                    if ib < b.len() && (ia >= a.len() || rng.below(5) == 0) {
                        batch.extend_from_slice(&b[ib]);
                        ib += 1;
                    } else if ia < a.len() {
                        batch.extend_from_slice(&a[ia]);
                        ia += 1;
                    }
                }
                s.write_all(&batch).unwrap();
                if rng.below(50) == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    });

    // Hostile connections, each expected to be reported and closed.
    let mut rng = Rng(42);
    let mut random: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
    random[0] = 0x5a; // a non-zero version, whatever the bytes
    let mut missing_sep = header(5).to_vec();
    missing_sep.extend_from_slice(b"3\0a\0b");
    let mut bad_level = header(10).to_vec();
    bad_level.extend_from_slice(b"x\0app\0o\0hi");
    // Version 1 whose data ends inside an entry header.
    let mut cut_entry = header_version(1, 11).to_vec();
    cut_entry.extend_from_slice(b"3\0a\0b\0hello");
    let mut after_good = encode(Level::Info, b"app", b"mixed", b"good before bad\n");
    let bad_offset = after_good.len();
    after_good.extend_from_slice(&raw_header(7, 3));
    // A version-3 read request on a connection that never attached a
    // ring: the sink cannot serve it, and its sender would wait for ever.
    let mut read_request = header_version(3, 13 + 16).to_vec();
    read_request.extend_from_slice(b"6\0app\0logtap\0");
    read_request.extend_from_slice(&[0u8; 16]);
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", random),
        ("wrong version", raw_header(4, 10)),
        ("read request without a ring", read_request),
        ("version 1 with a cut entry", cut_entry),
        ("negative length", raw_header(0, -1)),
        ("1 GiB length", raw_header(0, 1 << 30)),
        ("missing separators", missing_sep),
        ("non-numeric level", bad_level),
        ("bad frame after a good one", after_good),
    ];
    let mut bad_conns: Vec<(&str, UnixStream)> = hostile
        .iter()
        .map(|(what, b)| (*what, send(&sink, b)))
        .collect();

    // Truncated header, then close.
    drop(send(&sink, &[0, 0, 0, 0, 9]));
    // A frame whose header promises 200 KiB of which only a little comes:
    // a slow connection, held open.
    let mut slow = send(&sink, &header(200 * 1024));
    slow.write_all(b"3\0app\0slow\0only a little").unwrap();

    // A valid frame dribbled one byte at a time.
    let dribble = std::thread::spawn({
        let socket = socket.clone();
        move || {
            let mut s = UnixStream::connect(&socket).unwrap();
            for b in encode(Level::Warn, b"app", b"dribble", b"dribbled line\n") {
                s.write_all(&[b]).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });

    for (what, s) in &mut bad_conns {
        assert!(
            closed_by_sink(s),
            "sink did not close the {what} connection"
        );
    }
    good.join().unwrap();
    dribble.join().unwrap();

    let expected = N + N / 4 + 2; // + dribbled + "good before bad"
    sink.wait_json(expected, SECS);
    sink.wait_err("closed mid-frame", 1, SECS);
    let hwm = sink.vm_hwm_kib();
    eprintln!("sink peak memory (VmHWM) with 300 idle and hostile connections: {hwm} KiB");
    // Stop with the idle and slow connections still open.
    let stopped = sink.stop();
    drop(idle);
    drop(slow);

    assert!(
        stopped.status.success(),
        "exit status {:?}, stderr {:?}",
        stopped.status,
        stopped.err
    );
    assert!(!socket.exists(), "socket file left behind");
    assert!(hwm < 64 * 1024, "peak memory {hwm} KiB");

    let lines: Vec<_> = stopped.out.iter().map(|l| parse(l)).collect();
    assert!(lines.len() >= expected);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for v in &lines {
        assert_eq!(v["platform"], "app");
        assert_eq!(v["pid"], me);
        *seen
            .entry(format!(
                "{}|{}",
                v["source"].as_str().unwrap(),
                v["message"].as_str().unwrap()
            ))
            .or_default() += 1;
    }
    for i in 0..N {
        assert_eq!(
            seen.get(&format!("stdout|good stdout line {i}")),
            Some(&1),
            "stdout line {i}"
        );
    }
    for i in 0..N / 4 {
        assert_eq!(
            seen.get(&format!("stderr|good stderr line {i}")),
            Some(&1),
            "stderr line {i}"
        );
    }
    assert_eq!(seen.get("dribble|dribbled line"), Some(&1));
    assert_eq!(seen.get("mixed|good before bad"), Some(&1));
    // The slow connection's partial frame is never emitted.
    assert!(!seen.keys().any(|k| k.starts_with("slow|")));
    let dribbled = lines.iter().find(|v| v["source"] == "dribble").unwrap();
    assert_eq!(dribbled["level"], "WARN");

    // One stderr line per bad connection, each naming the pid.
    let closing: Vec<_> = stopped
        .err
        .iter()
        .filter(|l| l.ends_with("; closing"))
        .collect();
    assert_eq!(closing.len(), hostile.len(), "stderr: {:?}", stopped.err);
    for l in &closing {
        assert!(
            l.starts_with(&format!("logtap-sink: connection from pid {me}: ")),
            "{l}"
        );
    }
    for needle in [
        "unsupported version",
        "not a run of whole entries",
        "length -1 outside",
        "length 1073741824 outside",
        "NUL separators",
        "level is not",
        "sent a read request, but the sink does not hold its ring",
    ] {
        assert!(
            closing.iter().any(|l| l.contains(needle)),
            "no stderr line with {needle:?}: {closing:?}"
        );
    }
    let after_good_line =
        format!("connection from pid {me}: unsupported version 7 (0 logserver_msg, 1 logtap's with origin, 2 with ring position, 3 read request) (frame at byte {bad_offset})");
    assert!(
        closing.iter().any(|l| l.contains(&after_good_line)),
        "{closing:?}"
    );
    assert!(stopped.err.iter().any(|l| l
        == &format!("logtap-sink: connection from pid {me} closed mid-frame (5 bytes of an unfinished frame discarded)")));
    // The slow connection was still open at shutdown.
    assert!(
        stopped.err.iter().any(|l| l.contains("sink stopping")),
        "{:?}",
        stopped.err
    );
    assert!(!stopped.err.iter().any(|l| l.contains("panicked")));
}

#[test]
fn pantavisor_style_one_frame_per_connection() {
    let dir = temp_dir("pv");
    let socket = dir.join("pv.sock");
    let sink = Sink::start(&socket, &[], &[]);
    const THREADS: usize = 4;
    const EACH: usize = 150;
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let mut s = UnixStream::connect(&socket).unwrap();
                    // Odd ones carry no trailing newline: the line ends with
                    // the connection.
                    let data = if i % 2 == 0 {
                        format!("pv {t} {i}\n")
                    } else {
                        format!("pv {t} {i}")
                    };
                    s.write_all(&encode(
                        Level::Error,
                        b"pvr-sdk",
                        b"/var/log/messages",
                        data.as_bytes(),
                    ))
                    .unwrap();
                    s.shutdown(std::net::Shutdown::Write).unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    sink.wait_json(THREADS * EACH, SECS);
    let stopped = sink.stop();
    assert!(stopped.status.success());
    let mut seen = HashMap::new();
    for v in stopped.out.iter().map(|l| parse(l)) {
        assert_eq!(v["level"], "ERROR");
        assert_eq!(v["platform"], "pvr-sdk");
        assert_eq!(v["source"], "var/log/messages");
        *seen
            .entry(v["message"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), THREADS * EACH);
    assert!(seen.values().all(|&n| n == 1));
    assert!(stopped.err.is_empty(), "{:?}", stopped.err);
}

#[test]
fn awkward_content_is_valid_json_and_nothing_is_lost() {
    let dir = temp_dir("content");
    let socket = dir.join("c.sock");
    let sink = Sink::start(
        &socket,
        &[],
        &[
            ("POD_NAME", "web-1"),
            ("POD_NAMESPACE", "prod"),
            ("NODE_NAME", "n\"1"),
        ],
    );
    let long: Vec<u8> = (0..200_000).map(|i| b'a' + (i % 26) as u8).collect();
    let mut s = sink.connect();
    let mut w = |src: &[u8], data: &[u8]| {
        s.write_all(&encode(Level::Info, b"app", src, data))
            .unwrap()
    };
    w(b"bin", b"bad \xff\xfe utf8 \xe2\x82\n");
    w(b"ansi", b"\x1b[31mred\x1b[0m\ttab\r\n");
    let mut big = long.clone();
    big.push(b'\n');
    w(b"long", &big);
    w(b"three", b"one ");
    w(b"three", b"two ");
    w(b"three", b"three\n");
    w(b"json", b"  {\"user\":\"ann\",\"n\":[1,2]}\n");
    w(
        b"logtap",
        b"logtap: dropped bytes=1234 writes=5 source=var/log/app.log\n",
    );
    w(b"tail", b"no newline at the end");
    drop(s);
    let lines = sink.wait_json(7, SECS);
    let stopped = sink.stop();
    assert!(stopped.status.success());
    assert_eq!(stopped.out.len(), 7, "{:?}", stopped.out);
    let by: HashMap<String, serde_json::Value> = lines
        .into_iter()
        .map(|v| (v["source"].as_str().unwrap().to_owned(), v))
        .collect();

    let bin = &by["bin"];
    assert_eq!(message_bytes(bin), b"bad \xff\xfe utf8 \xe2\x82");
    assert_eq!(bin["message"], "bad \u{FFFD}\u{FFFD} utf8 \u{FFFD}");
    let ansi = &by["ansi"];
    assert_eq!(ansi["message"], "\x1b[31mred\x1b[0m\ttab\r");
    assert!(ansi.get("message_base64").is_none());
    assert_eq!(message_bytes(&by["long"]), long);
    assert!(by["long"].get("partial").is_none());
    assert_eq!(by["three"]["message"], "one two three");
    assert_eq!(
        by["json"]["data"],
        serde_json::json!({"user": "ann", "n": [1, 2]})
    );
    let drop_notice = &by["logtap"];
    assert_eq!(drop_notice["level"], "INFO"); // the frame's level, as sent
    assert_eq!(drop_notice["dropped_bytes"], 1234);
    assert_eq!(drop_notice["dropped_writes"], 5);
    assert_eq!(drop_notice["dropped_source"], "var/log/app.log");
    assert_eq!(
        drop_notice["message"],
        "logtap: dropped bytes=1234 writes=5 source=var/log/app.log"
    );
    assert_eq!(by["tail"]["message"], "no newline at the end");
    for v in by.values() {
        assert_eq!(v["pod_name"], "web-1");
        assert_eq!(v["namespace"], "prod");
        assert_eq!(v["node_name"], "n\"1");
        let ts = v["timestamp"].as_str().unwrap();
        assert_eq!(ts.len(), 27, "{ts}");
        assert!(
            ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.',
            "{ts}"
        );
    }
    // Field order as documented.
    let first = stopped
        .out
        .iter()
        .find(|l| l.contains("\"source\":\"bin\""))
        .unwrap();
    let order: Vec<usize> = [
        "\"timestamp\"",
        "\"level\"",
        "\"platform\"",
        "\"source\"",
        "\"pid\"",
        "\"message\"",
        "\"message_base64\"",
        "\"pod_name\"",
        "\"namespace\"",
        "\"node_name\"",
    ]
    .iter()
    .map(|k| first.find(k).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{first}");
}

#[test]
fn long_lines_are_split_at_max_line() {
    let dir = temp_dir("maxline");
    let socket = dir.join("m.sock");
    let sink = Sink::start(&socket, &["--max-line", "1000"], &[]);
    let line: Vec<u8> = (0..2500).map(|i| b'0' + (i % 10) as u8).collect();
    let mut s = sink.connect();
    for chunk in line.chunks(700) {
        s.write_all(&encode(Level::Info, b"app", b"o", chunk))
            .unwrap();
    }
    s.write_all(&encode(Level::Info, b"app", b"o", b"\n"))
        .unwrap();
    drop(s);
    let lines = sink.wait_json(3, SECS);
    let stopped = sink.stop();
    assert!(stopped.status.success());
    let got: Vec<(usize, bool)> = lines
        .iter()
        .map(|v| {
            (
                message_bytes(v).len(),
                v.get("partial").is_some_and(|p| p == true),
            )
        })
        .collect();
    assert_eq!(got, vec![(1000, true), (1000, true), (500, false)]);
    let joined: Vec<u8> = lines.iter().flat_map(message_bytes).collect();
    assert_eq!(joined, line);
}

#[test]
fn sigint_flushes_partial_lines_of_open_connections() {
    let dir = temp_dir("sigint");
    let socket = dir.join("i.sock");
    let sink = Sink::start(&socket, &[], &[]);
    let mut s = sink.connect();
    s.write_all(&encode(
        Level::Info,
        b"app",
        b"o",
        b"complete\nstill open, no newline",
    ))
    .unwrap();
    // A second connection whose bytes are queued when the signal arrives.
    let mut t = sink.connect();
    sink.wait_json(1, SECS);
    t.write_all(&encode(Level::Info, b"app", b"q", b"queued\n"))
        .unwrap();
    let stopped = sink.stop_with(libc::SIGINT);
    assert!(stopped.status.success(), "{:?}", stopped.err);
    let msgs: Vec<String> = stopped
        .out
        .iter()
        .map(|l| parse(l)["message"].as_str().unwrap().to_owned())
        .collect();
    assert!(msgs.contains(&"complete".to_owned()));
    assert!(msgs.contains(&"still open, no newline".to_owned()));
    assert!(msgs.contains(&"queued".to_owned()));
    assert!(!socket.exists());
    drop(s);
    drop(t);
}

#[test]
fn refuses_a_live_socket_and_replaces_a_stale_one() {
    let dir = temp_dir("stale");
    let socket = dir.join("s.sock");
    // A stale socket file: bound, then its listener gone.
    drop(UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let sink = Sink::start(&socket, &["--mode", "0660"], &[]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o7777,
        0o660
    );

    let second = Command::new(BIN)
        .arg("--socket")
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = second.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err,
        format!(
            "logtap-sink: {} is served by another running sink\n",
            socket.display()
        )
    );

    // The first sink still serves.
    send(&sink, &encode(Level::Info, b"a", b"b", b"still here\n"));
    let lines = sink.wait_json(1, SECS);
    assert_eq!(lines[0]["message"], "still here");
    let stopped = sink.stop();
    assert!(stopped.status.success());

    // A regular file in the way is not replaced.
    std::fs::write(&socket, b"not a socket").unwrap();
    let third = Command::new(BIN)
        .arg("--socket")
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(third.code(), Some(1));
    assert_eq!(std::fs::read(&socket).unwrap(), b"not a socket");
}

#[test]
fn default_mode_is_owner_and_group() {
    let dir = temp_dir("mode");
    let socket = dir.join("new/dir/m.sock");
    let sink = Sink::start(&socket, &[], &[]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o660
    );
    assert_eq!(
        std::fs::metadata(dir.join("new/dir"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    assert!(sink.stop().status.success());
}

#[test]
fn more_connections_than_the_limit_wait_their_turn() {
    let dir = temp_dir("limit");
    let socket = dir.join("l.sock");
    let sink = Sink::start(&socket, &["--max-connections", "2"], &[]);
    // wait_ready's probe connection may still be counted; let it close.
    std::thread::sleep(Duration::from_millis(100));
    let a = send(&sink, &encode(Level::Info, b"p", b"s", b"a\n"));
    let b = send(&sink, &encode(Level::Info, b"p", b"s", b"b\n"));
    sink.wait_json(2, SECS);
    // The third waits in the backlog until one of the first two closes.
    let c = send(&sink, &encode(Level::Info, b"p", b"s", b"c\n"));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(sink.out.lock().unwrap().len(), 2);
    drop(a);
    let lines = sink.wait_json(3, SECS);
    assert_eq!(lines[2]["message"], "c");
    drop((b, c));
    let stopped = sink.stop();
    assert!(stopped.status.success());
    assert!(
        stopped.err.iter().any(|l| l.contains("--max-connections")),
        "{:?}",
        stopped.err
    );
}

/// Version 0 and version 1 frames on one connection: a version-1 line's
/// `timestamp` and `pid` are its write's, a version-0 line's the read's and
/// the connection's; `peer_pid` is the connection's for both. A line that
/// runs across writes keeps the origin of the write that began it.
#[test]
fn version_1_lines_keep_their_write_time_and_pid() {
    let dir = temp_dir("origin");
    let socket = dir.join("o.sock");
    let sink = Sink::start(&socket, &[], &[]);
    // 2001-09-09T01:46:40.123456Z, and a second later.
    let a = WriteOrigin {
        time_ns: 1_000_000_000_123_456_789,
        pid: 1,
    };
    let b = WriteOrigin {
        time_ns: 1_000_000_001_000_000_000,
        pid: 77,
    };
    let mut bytes = encode_with_origin(
        Level::Info,
        b"app",
        b"stdout",
        &[(a, b"first\nsec"), (b, b"ond\n")],
    );
    bytes.extend(encode(Level::Info, b"app", b"stdout", b"plain\n"));
    bytes.extend(encode_with_origin(
        Level::Warn,
        b"app",
        b"stdout",
        &[(b, b"third\n")],
    ));
    let me = std::process::id();
    let conn = send(&sink, &bytes);
    let deadline = std::time::Instant::now() + SECS;
    while sink.out.lock().unwrap().len() < 4 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(conn);
    let stopped = sink.stop();
    assert!(stopped.status.success());
    let objs: Vec<serde_json::Value> = stopped.out.iter().map(|l| parse(l)).collect();
    let got: Vec<(String, String, serde_json::Value, serde_json::Value)> = objs
        .iter()
        .map(|o| {
            (
                o["message"].as_str().unwrap().to_owned(),
                o["timestamp"].as_str().unwrap().to_owned(),
                o["pid"].clone(),
                o["peer_pid"].clone(),
            )
        })
        .collect();
    assert_eq!(got[0].0, "first");
    assert_eq!(got[0].1, "2001-09-09T01:46:40.123456Z");
    assert_eq!(got[0].2, 1);
    assert_eq!(got[1].0, "second");
    assert_eq!(
        got[1].1, "2001-09-09T01:46:40.123456Z",
        "the write that began it"
    );
    assert_eq!(got[1].2, 1);
    assert_eq!(got[2].0, "plain");
    assert!(
        got[2].1.starts_with("20") && !got[2].1.starts_with("2001"),
        "{:?}",
        got[2]
    );
    assert_eq!(got[2].2, me, "version 0: the connection's pid");
    assert_eq!(got[3].0, "third");
    assert_eq!(got[3].1, "2001-09-09T01:46:41.000000Z");
    assert_eq!(got[3].2, 77);
    for g in &got {
        assert_eq!(g.3, me, "peer_pid is the connection's");
    }
}

#[test]
fn text_format() {
    let dir = temp_dir("text");
    let socket = dir.join("t.sock");
    let sink = Sink::start(&socket, &["--format", "text"], &[]);
    send(
        &sink,
        &encode(
            Level::Info,
            b"app",
            b"stdout",
            b"hello\tworld \x1b[1mbold\xff\n",
        ),
    );
    let deadline = std::time::Instant::now() + SECS;
    while sink.out.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let stopped = sink.stop();
    assert!(stopped.status.success());
    let line = &stopped.out[0];
    let (ts, rest) = line.split_once(' ').unwrap();
    assert_eq!(ts.len(), 27);
    // Scrubbed as ChromeOS does: control characters become `#` + octal.
    assert_eq!(rest, "app.stdout hello#011world #033[1mbold\u{FFFD}");
}

#[test]
fn read_frame_file() {
    let dir = temp_dir("read");
    let file = dir.join("frames.bin");
    let mut data = Vec::new();
    data.extend(encode(Level::Info, b"app", b"stdout", b"first\nsec"));
    data.extend(encode(Level::Debug, b"app", b"stdout", b"ond\n"));
    data.extend(encode(
        Level::Warn,
        b"app",
        b"logtap",
        b"logtap: dropped bytes=10 writes=1 source=stdout\n",
    ));
    data.extend(encode(Level::Info, b"app", b"stderr", b"unterminated"));
    std::fs::write(&file, &data).unwrap();
    let out = Command::new(BIN).arg("--read").arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<_> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(parse)
        .collect();
    let msgs: Vec<&str> = lines
        .iter()
        .map(|v| v["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        msgs,
        [
            "first",
            "second",
            "logtap: dropped bytes=10 writes=1 source=stdout",
            "unterminated"
        ]
    );
    assert_eq!(lines[0]["pid"], serde_json::Value::Null);
    assert_eq!(lines[1]["level"], "INFO"); // level of the frame that started the line
    assert_eq!(lines[2]["dropped_bytes"], 10);

    // From stdin, followed by a malformed frame: the good part comes out,
    // then a one-line error naming the offset.
    let good_len = data.len();
    data.extend(raw_header(0, -7));
    let mut child = Command::new(BIN)
        .args(["--read", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 4);
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!("logtap-sink: -: byte offset {good_len}: length -7 outside 0..=262144\n")
    );

    // Truncated in the middle of a frame.
    let cut = dir.join("cut.bin");
    let mut t = encode(Level::Info, b"app", b"o", b"whole\n");
    let whole = t.len();
    t.extend_from_slice(&encode(Level::Info, b"app", b"o", b"half\n")[..10]);
    std::fs::write(&cut, &t).unwrap();
    let out = Command::new(BIN).arg("--read").arg(&cut).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!(
            "byte offset {whole}: file ends inside a frame (10 bytes discarded)"
        )),
        "{err}"
    );
}

/// liblogtap's version-0 frames (`LLT_FORMAT=logserver`) put the drop
/// notices of several sources, pushed one after the other, in one frame's
/// data: each is its own notice.
#[test]
fn drop_notices_sharing_a_version_0_frame_stay_apart() {
    let dir = temp_dir("notices");
    let file = dir.join("frames.bin");
    let mut data = encode(
        Level::Warn,
        b"app",
        b"logtap",
        b"logtap: dropped bytes=10 writes=1 source=stdout\nlogtap: dropped bytes=20 writes=2 source=stderr\n",
    );
    data.extend(encode(Level::Info, b"app", b"stdout", b"after\n"));
    std::fs::write(&file, &data).unwrap();
    let out = Command::new(BIN).arg("--read").arg(&file).output().unwrap();
    assert!(out.status.success());
    let lines: Vec<_> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(parse)
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["dropped_bytes"], 10);
    assert_eq!(lines[0]["dropped_source"], "stdout");
    assert_eq!(lines[1]["dropped_bytes"], 20);
    assert_eq!(lines[1]["dropped_writes"], 2);
    assert_eq!(lines[1]["dropped_source"], "stderr");
    assert_eq!(
        lines[1]["message"],
        "logtap: dropped bytes=20 writes=2 source=stderr"
    );
    assert_eq!(lines[2]["message"], "after");
}

#[test]
fn closed_stdout_ends_the_sink_cleanly() {
    let dir = temp_dir("epipe");
    let socket = dir.join("e.sock");
    let mut child = Command::new(BIN)
        .arg("--socket")
        .arg(&socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone
    let deadline = std::time::Instant::now() + SECS;
    let mut s = loop {
        if let Ok(s) = UnixStream::connect(&socket) {
            break s;
        }
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    };
    let frame = encode(
        Level::Info,
        b"app",
        b"o",
        &b"x"
            .repeat(1000)
            .into_iter()
            .chain(*b"\n")
            .collect::<Vec<_>>(),
    );
    // Write until the sink stops reading (it exits).
    for _ in 0..10_000 {
        if s.write_all(&frame).is_err() {
            break;
        }
    }
    let status = wait_timeout(&mut child, SECS).expect("sink did not exit");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{status:?} {err}");
    assert!(err.is_empty(), "{err}");
    assert!(!socket.exists());
}

#[test]
fn usage_errors() {
    let out = Command::new(BIN)
        .arg("--format")
        .arg("xml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--socket",
        "SINK_SOCKET_PATH",
        "--mode",
        "--format",
        "--max-line",
        "--max-connections",
        "--read",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn memory_budget_sheds_lines_and_refuses_hoarded_frames() {
    let dir = temp_dir("budget");
    let socket = dir.join("b.sock");
    let sink = Sink::start(&socket, &["--max-buffered", "1M"], &[]);

    // Partial lines beyond the budget are emitted early (marked partial),
    // never lost.
    let chunk: Vec<u8> = (0..200_000).map(|i| b'a' + (i % 26) as u8).collect();
    let mut writers: Vec<UnixStream> = Vec::new();
    for i in 0..10 {
        let src = format!("lines{i}");
        writers.push(send(
            &sink,
            &encode(Level::Info, b"app", src.as_bytes(), &chunk),
        ));
    }
    std::thread::sleep(Duration::from_millis(200));
    for (i, w) in writers.iter_mut().enumerate() {
        w.write_all(&encode(
            Level::Info,
            b"app",
            format!("lines{i}").as_bytes(),
            b"END\n",
        ))
        .unwrap();
    }

    // Connections hoarding unfinished frames beyond the budget are closed.
    let mut hoarders = Vec::new();
    for _ in 0..20 {
        let mut s = sink.connect();
        let mut f = header(250 * 1024).to_vec();
        f.extend_from_slice(b"3\0app\0hoard\0");
        f.extend_from_slice(&[b'x'; 100 * 1024]);
        let _ = s.write_all(&f);
        hoarders.push(s);
    }
    sink.wait_err("over --max-buffered", 1, SECS);
    // A good writer still gets through.
    send(
        &sink,
        &encode(Level::Info, b"app", b"good", b"still served\n"),
    );
    let deadline = std::time::Instant::now() + SECS;
    while !sink
        .out
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("still served"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "good line never arrived"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let hwm = sink.vm_hwm_kib();
    drop(writers);
    let stopped = sink.stop();
    drop(hoarders);
    assert!(stopped.status.success());
    assert!(hwm < 32 * 1024, "peak memory {hwm} KiB");

    let mut per_source: HashMap<String, Vec<u8>> = HashMap::new();
    for v in stopped.out.iter().map(|l| parse(l)) {
        let src = v["source"].as_str().unwrap().to_owned();
        assert_ne!(src, "hoard", "an unfinished frame was emitted");
        let e = per_source.entry(src).or_default();
        e.extend(message_bytes(&v));
        if v.get("partial").is_none() {
            e.push(b'\n');
        }
    }
    let mut want = chunk.clone();
    want.extend_from_slice(b"END\n");
    for i in 0..10 {
        assert_eq!(per_source[&format!("lines{i}")], want, "source lines{i}");
    }
    assert!(
        stopped.out.iter().any(|l| l.contains("\"partial\":true")),
        "no line was shed"
    );
    assert!(stopped.err.iter().all(|l| !l.contains("panicked")));
}
