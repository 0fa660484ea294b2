//! Read requests (a sink that reads the program's ring itself) against
//! the real sink binary, with rings built by hand: what a program that
//! lies in them can and cannot make the sink do.

mod common;
mod ring_writer;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{temp_dir, Sink};
use logtap_wire::ring::{self as lr, RingPosition};
use logtap_wire::{Level, WriteOrigin};
use ring_writer::{Client, RingWriter};

fn read_request(pos: u64) -> Vec<u8> {
    let mut f = logtap_wire::encode_ring(
        Level::Info,
        b"app",
        b"logtap",
        &[],
        RingPosition { pos, skip: 0 },
    );
    f[..4].copy_from_slice(&logtap_wire::VERSION_READ.to_ne_bytes());
    f
}

fn read_msg(c: &mut Client) -> lr::SinkMsg {
    let mut b = [0u8; lr::SINK_MSG_LEN];
    c.sock.read_exact(&mut b).expect("a message from the sink");
    lr::SinkMsg::parse(&b).expect("a valid message")
}

/// One read request over a whole 1 GiB ring (here of zeros: space taken
/// but never stamped, stepped over 8 bytes at a time) is served a slice
/// per turn: a line another connection sends meanwhile is not held up
/// behind it, and the request is still answered.
#[test]
fn one_request_over_a_whole_ring_does_not_hold_up_other_connections() {
    let dir = temp_dir("req-stall");
    let sock = dir.join("s");
    let sink = Sink::start(&sock, &["--spool", "off"], &[]);
    let mut c = Client::connect(&sock);
    let cap = 1u64 << 30;
    let ring = RingWriter::new(cap, 1);
    ring.set_slot(0, Level::Info, b"stdout");
    c.attach(&ring, b"app", RingPosition::default());
    assert_eq!(read_msg(&mut c), lr::SinkMsg::Reading);
    let mut good = Client::connect(&sock);
    ring.put_u64(lr::HEAD_AT, cap);
    c.send(&read_request(cap));
    std::thread::sleep(Duration::from_millis(20));
    let sent_good = Instant::now();
    good.send(&logtap_wire::encode(
        Level::Info,
        b"app",
        b"stdout",
        b"good line\n",
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sink
        .out
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("good line"))
    {
        assert!(Instant::now() < deadline, "no good line");
        std::thread::sleep(Duration::from_millis(1));
    }
    let waited = sent_good.elapsed();
    assert_eq!(read_msg(&mut c), lr::SinkMsg::Read(cap));
    assert!(
        waited < Duration::from_millis(500),
        "a good line waited {waited:?} behind another connection's read request"
    );
}

/// Requests that no liblogtap sends end the connection with one line, and
/// the ring stays the sink's to read at its end: a position going back, one
/// past the head, one inside a record.
#[test]
fn requests_no_library_sends_end_the_connection() {
    for (what, make) in [
        ("went back", 0u8),
        ("beyond the ring's head", 1),
        ("skips into a record", 2),
    ] {
        let dir = temp_dir("req-bad");
        let sock = dir.join("s");
        let sink = Sink::start(&sock, &["--spool", "off"], &[]);
        let mut c = Client::connect(&sock);
        let mut ring = RingWriter::new(64 * 1024, 1);
        ring.set_slot(0, Level::Info, b"stdout");
        for i in 0..10 {
            ring.push(
                0,
                WriteOrigin { time_ns: 1, pid: 1 },
                format!("line {i}\n").as_bytes(),
            );
        }
        ring.store_head();
        c.attach(&ring, b"app", RingPosition::default());
        assert_eq!(read_msg(&mut c), lr::SinkMsg::Reading);
        let head = ring.head;
        c.send(&read_request(head));
        assert_eq!(read_msg(&mut c), lr::SinkMsg::Read(head));
        let bad = match make {
            0 => read_request(8),
            1 => read_request(head + 64),
            _ => {
                let mut f = read_request(head);
                let at = f.len() - 8;
                f[at..].copy_from_slice(&3u64.to_ne_bytes());
                f
            }
        };
        c.send(&bad);
        let mut b = [0u8; 1];
        assert_eq!(c.sock.read(&mut b).unwrap_or(0), 0, "{what}: closed");
        let err = sink.stop().err;
        assert!(
            err.iter()
                .any(|l| l.contains("read request:") && l.contains(what)),
            "{what}: {err:?}"
        );
        let lines = err.len();
        assert!(lines < 5, "{what}: {err:?}");
    }
}
