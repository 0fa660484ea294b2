//! The spool, from the sink's side: ring files in `<socket>.spool` whose
//! programs are gone (nobody holds their `flock`) are delivered from their
//! tail to their head, byte for byte, once, and removed; live ones (locked)
//! are left alone; hostile files are never followed, read past their
//! layout, or removed unless the rules say so. The rings are written with
//! `ring_writer` (the layout of `logtap_wire::ring`) into files under
//! `/dev/shm`, which is tmpfs, as liblogtap's spool requires.

mod common;
mod ring_writer;

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::{message_bytes, parse, Sink};
use logtap_wire::ring::{self as lr, RingPosition};
use logtap_wire::{encode_with_origin, Level, WriteOrigin};
use ring_writer::{Client, RingWriter};

const SECS: Duration = Duration::from_secs(30);
/// A scan comes every 2 s: anything the sink is to find while it runs is
/// found within this.
const SCAN: Duration = Duration::from_secs(6);
const MAKER_PID: u32 = 31337;
const WRITER_PID: u32 = 4242;

/// A fresh directory on tmpfs, removed when dropped.
struct ShmDir(PathBuf);

impl ShmDir {
    fn new(tag: &str) -> ShmDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = PathBuf::from(format!(
            "/dev/shm/logtap-spool-test-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create a directory in /dev/shm");
        ShmDir(d)
    }

    fn socket(&self) -> PathBuf {
        self.0.join("sink.sock")
    }

    /// The spool of `socket()`, created by the test (as a sink that ran
    /// before would have).
    fn spool(&self) -> PathBuf {
        let sp = PathBuf::from(format!("{}.spool", self.socket().display()));
        if !sp.exists() {
            std::fs::create_dir(&sp).unwrap();
            std::fs::set_permissions(&sp, std::fs::Permissions::from_mode(0o1733)).unwrap();
        }
        sp
    }
}

impl Drop for ShmDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn origin(i: u64) -> WriteOrigin {
    WriteOrigin {
        time_ns: 1_795_268_855_000_000_000 + i * 1_000_000,
        pid: WRITER_PID,
    }
}

fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// What a dead program left in its ring, as the sink must deliver it.
struct Want {
    /// Per source, the lines (without their newline) after the tail.
    lines: HashMap<String, Vec<Vec<u8>>>,
    /// Data bytes and writes of the records after the tail.
    bytes: u64,
    writes: u64,
}

/// Writes a program's ring into `path`: records before the tail (sent,
/// never to be delivered again), then records after it on three sources
/// (one not UTF-8, a reservation never committed, the last stdout write
/// without its newline), a write in flight in an intent slot, and drop
/// counters.
fn spooled_program(path: &Path) -> (RingWriter, Want) {
    let mut ring = RingWriter::in_file(path, 64 * 1024, 4);
    ring.set_slot(0, Level::Info, b"stdout");
    ring.set_slot(1, Level::Warn, b"/var/log/app.log");
    ring.set_slot(2, Level::Error, b"stderr");
    ring.set_maker(MAKER_PID, b"spooled-app");
    let mut t = 0;
    for i in 0..50 {
        ring.push(
            0,
            origin(t),
            format!("sent before the tail {i}\n").as_bytes(),
        );
        t += 1;
    }
    ring.set_tail(ring.head);
    let mut want = Want {
        lines: HashMap::new(),
        bytes: 0,
        writes: 0,
    };
    let mut stream: HashMap<&str, Vec<u8>> = HashMap::new();
    let mut put = |ring: &mut RingWriter, src: u8, name: &'static str, data: &[u8], t: u64| {
        ring.push(src, origin(t), data);
        want.bytes += data.len() as u64;
        want.writes += 1;
        stream.entry(name).or_default().extend_from_slice(data);
    };
    for i in 0..300 {
        put(
            &mut ring,
            0,
            "stdout",
            format!("unsent {i:05} of stdout\n").as_bytes(),
            t,
        );
        if i % 40 == 0 {
            put(
                &mut ring,
                1,
                "var/log/app.log",
                format!("log line {i}\n").as_bytes(),
                t,
            );
        }
        if i % 70 == 0 {
            put(
                &mut ring,
                2,
                "stderr",
                b"not utf-8: \xff\xfe and a \x1b escape\n",
                t,
            );
        }
        if i == 150 {
            ring.reserve(2, 100);
        }
        t += 1;
    }
    put(
        &mut ring,
        0,
        "stdout",
        b"a last line without its newline",
        t,
    );
    t += 1;
    ring.set_intent(
        0,
        lr::INTENT_IN_FLIGHT,
        origin(t),
        2,
        17,
        0,
        b"in flight at the end\n",
    );
    stream
        .entry("stderr")
        .or_default()
        .extend_from_slice(b"in flight at the end"[..17].as_ref());
    ring.set_drops(2, 100, 3);
    for (name, bytes) in stream {
        let mut lines: Vec<Vec<u8>> = bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
        if lines.last().is_some_and(Vec::is_empty) {
            lines.pop();
        }
        want.lines.insert(name.to_string(), lines);
    }
    (ring, want)
}

fn line_count(w: &Want) -> usize {
    w.lines.values().map(Vec::len).sum::<usize>() + 1
}

/// The sink's lines are exactly what the program left after its tail, with
/// the drop notice, and say who wrote them.
fn check_delivered(out: &[String], want: &Want) {
    let lines: Vec<serde_json::Value> = out.iter().map(|l| parse(l)).collect();
    let mut got: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for v in lines.iter().filter(|v| v.get("dropped_bytes").is_none()) {
        got.entry(v["source"].as_str().unwrap().to_string())
            .or_default()
            .push(message_bytes(v));
        assert_eq!(v["platform"], "spooled-app", "{v}");
        assert_eq!(v["uid"], uid(), "{v}");
        assert_eq!(v["pid"], WRITER_PID, "{v}");
        assert!(v.get("peer_pid").is_none(), "{v}");
    }
    assert_eq!(got, want.lines);
    let drops: Vec<_> = lines
        .iter()
        .filter(|v| v.get("dropped_bytes").is_some())
        .collect();
    assert_eq!(drops.len(), 1, "one drop notice: {drops:?}");
    assert_eq!(drops[0]["dropped_bytes"], 100);
    assert_eq!(drops[0]["dropped_writes"], 3);
    assert_eq!(drops[0]["dropped_source"], "stderr");
    assert_eq!(drops[0]["pid"], MAKER_PID);
    assert_eq!(lines.len(), line_count(want));
}

/// The one stderr line of a spooled ring's recovery.
fn check_said(err: &[String], name: &str, want: &Want) {
    let said: Vec<_> = err.iter().filter(|l| l.contains("spooled ring")).collect();
    assert_eq!(said.len(), 1, "{err:?}");
    let head = format!(
        "spooled ring \"{name}\" of pid {MAKER_PID} uid {}, whose program is gone: recovered {} bytes in {} writes",
        uid(),
        want.bytes,
        want.writes
    );
    assert!(said[0].contains(&head), "{said:?} lacks {head}");
    for part in [
        "17 bytes in 1 writes in flight",
        "1 writes that never returned skipped",
        "1 drop notices",
    ] {
        assert!(said[0].contains(part), "{said:?} lacks {part}");
    }
}

fn wait_gone(p: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while p.symlink_metadata().is_ok() {
        assert!(Instant::now() < deadline, "{} still there", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_ring_left_before_the_sink_starts_is_delivered_and_removed() {
    let d = ShmDir::new("start");
    let path = d.spool().join("4242-1.ring");
    let (ring, want) = spooled_program(&path);
    drop(ring);
    let sink = Sink::start(&d.socket(), &[], &[]);
    sink.wait_err("spooled ring", 1, SECS);
    sink.wait_json(line_count(&want), SECS);
    wait_gone(&path, SECS);
    // Another scan finds nothing more.
    std::thread::sleep(Duration::from_millis(2500));
    let stopped = sink.stop();
    assert!(stopped.status.success());
    check_delivered(&stopped.out, &want);
    check_said(&stopped.err, "4242-1.ring", &want);
    assert_eq!(stopped.err.len(), 1, "{:?}", stopped.err);
}

#[test]
fn a_ring_left_while_the_sink_runs_is_delivered_within_a_scan() {
    let d = ShmDir::new("running");
    let spool = d.spool();
    let sink = Sink::start(&d.socket(), &[], &[]);
    std::thread::sleep(Duration::from_millis(300));
    let path = spool.join("4242-2.ring");
    let (ring, want) = spooled_program(&path);
    let t0 = Instant::now();
    drop(ring);
    sink.wait_err("spooled ring", 1, SCAN);
    sink.wait_json(line_count(&want), SECS);
    assert!(t0.elapsed() < SCAN, "{:?}", t0.elapsed());
    wait_gone(&path, SECS);
    let stopped = sink.stop();
    check_delivered(&stopped.out, &want);
    check_said(&stopped.err, "4242-2.ring", &want);
}

#[test]
fn a_locked_ring_is_left_alone_until_its_lock_goes() {
    let d = ShmDir::new("locked");
    let path = d.spool().join("4242-3.ring");
    // Locked by the writer, as by its live program.
    let (ring, want) = spooled_program(&path);
    let sink = Sink::start(&d.socket(), &[], &[]);
    // The scan at start and at least one more.
    std::thread::sleep(Duration::from_millis(4500));
    assert!(sink.out.lock().unwrap().is_empty());
    assert!(sink.err.lock().unwrap().is_empty());
    assert!(path.exists());
    let mut state = [0u8; 4];
    rustix::io::pread(&ring.fd, &mut state, lr::STATE_AT as u64).unwrap();
    assert_eq!(u32::from_ne_bytes(state), 0, "not marked");
    // Its program dies: the lock goes with its last descriptor.
    drop(ring);
    sink.wait_err("spooled ring", 1, SCAN);
    sink.wait_json(line_count(&want), SECS);
    wait_gone(&path, SECS);
    let stopped = sink.stop();
    check_delivered(&stopped.out, &want);
    check_said(&stopped.err, "4242-3.ring", &want);
}

/// A valid ring with one record after its tail.
fn small_ring(path: &Path, text: &[u8]) -> RingWriter {
    let mut r = RingWriter::in_file(path, 4096, 1);
    r.set_slot(0, Level::Info, b"stdout");
    r.set_maker(MAKER_PID, b"spooled-app");
    r.push(0, origin(0), text);
    r
}

fn set_mtime(p: &Path, ago: Duration) {
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.set_modified(SystemTime::now() - ago).unwrap();
}

#[test]
fn hostile_files_in_the_spool_are_never_followed_and_only_rings_are_removed() {
    let d = ShmDir::new("hostile");
    let spool = d.spool();
    // A good ring outside the spool, and a symlink to it named like a ring.
    let outside = d.0.join("outside.ring");
    drop(small_ring(&outside, b"outside: never delivered\n"));
    std::os::unix::fs::symlink(&outside, spool.join("x.ring")).unwrap();
    // A FIFO (opening it for reading would block a careless reader).
    rustix::fs::mknodat(
        rustix::fs::CWD,
        spool.join("y.ring"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o666),
        0,
    )
    .unwrap();
    // A ring of the wrong size.
    let w = small_ring(&spool.join("w.ring"), b"wrong size: never delivered\n");
    rustix::fs::ftruncate(&w.fd, w.data_offset + w.cap + 4096).unwrap();
    drop(w);
    // Garbage, and an empty file.
    let mut garbage = Vec::new();
    let mut x: u32 = 0x1234_5678;
    for _ in 0..100_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        garbage.push(x as u8);
    }
    std::fs::write(spool.join("g.ring"), &garbage).unwrap();
    // Left by makers killed after the rename, before the control block:
    // an empty file, and one sized but all zeros.
    std::fs::write(spool.join("e.ring"), b"").unwrap();
    std::fs::write(spool.join("z.ring"), vec![0u8; 8192]).unwrap();
    // A ring a sink already delivered.
    let done = small_ring(&spool.join("d.ring"), b"delivered before: never again\n");
    done.set_state(lr::STATE_DELIVERED);
    drop(done);
    // A ring with a second link elsewhere.
    let linked = d.0.join("linked");
    drop(small_ring(&linked, b"linked: never delivered\n"));
    std::fs::hard_link(&linked, spool.join("h.ring")).unwrap();
    // Not a ring by its name.
    std::fs::write(spool.join("notes.txt"), &garbage).unwrap();
    // Files being made: one left long ago, one young.
    std::fs::write(spool.join(".old.ring.new"), b"half made").unwrap();
    set_mtime(&spool.join(".old.ring.new"), Duration::from_secs(120));
    std::fs::write(spool.join(".young.ring.new"), b"half made").unwrap();

    let sink = Sink::start(&d.socket(), &[], &[]);
    // The scan at start and at least one more (complaints are said once).
    std::thread::sleep(Duration::from_millis(4500));
    // Still serving.
    let mut c = Client::connect(&d.socket());
    c.send(&encode_with_origin(
        Level::Info,
        b"app",
        b"stdout",
        &[(origin(0), b"still serving\n")],
    ));
    let lines = sink.wait_json(1, SECS);
    assert_eq!(lines[0]["message"], "still serving");
    drop(c);
    std::thread::sleep(Duration::from_millis(200));
    let stopped = sink.stop();
    assert!(stopped.status.success());
    assert_eq!(stopped.out.len(), 1, "{:?}", stopped.out);
    let about = |name: &str| -> Vec<&String> {
        stopped
            .err
            .iter()
            .filter(|l| l.contains(&format!("\"{name}\"")))
            .collect()
    };
    let one = |name: &str, needle: &str| {
        let l = about(name);
        assert_eq!(l.len(), 1, "{name}: {:?}", stopped.err);
        assert!(l[0].contains(needle), "{name}: {l:?} lacks {needle}");
    };
    one("x.ring", "a symbolic link, not a ring: skipped");
    one("y.ring", "a FIFO, not a ring: skipped");
    one("w.ring", "not a usable ring (file size");
    one("g.ring", "not a usable ring (bad magic); removed");
    one("h.ring", "has 2 links");
    for quiet in [
        "d.ring",
        "e.ring",
        "z.ring",
        "notes.txt",
        ".old.ring.new",
        ".young.ring.new",
        "outside.ring",
    ] {
        assert!(about(quiet).is_empty(), "{quiet}: {:?}", stopped.err);
    }
    assert_eq!(stopped.err.len(), 5, "{:?}", stopped.err);
    let exists = |n: &str| spool.join(n).symlink_metadata().is_ok();
    for kept in ["x.ring", "y.ring", "h.ring", "notes.txt", ".young.ring.new"] {
        assert!(exists(kept), "{kept} removed");
    }
    for removed in [
        "w.ring",
        "g.ring",
        "e.ring",
        "z.ring",
        "d.ring",
        ".old.ring.new",
    ] {
        assert!(!exists(removed), "{removed} kept");
    }
    assert!(outside.exists() && linked.exists());
    assert_eq!(std::fs::read(spool.join("notes.txt")).unwrap(), garbage);
}

#[test]
fn the_spool_directory_is_made_with_its_mode_or_left_as_it_is() {
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    // Missing: made 01733 whatever the umask.
    let d = ShmDir::new("mode");
    let sink = Sink::start(&d.socket(), &[], &[]);
    let spool = PathBuf::from(format!("{}.spool", d.socket().display()));
    assert!(spool.is_dir());
    assert_eq!(mode(&spool), 0o1733);
    let stopped = sink.stop();
    assert!(stopped.err.is_empty(), "{:?}", stopped.err);

    // Present: its mode is the operator's.
    let d = ShmDir::new("mode-kept");
    let spool = PathBuf::from(format!("{}.spool", d.socket().display()));
    std::fs::create_dir(&spool).unwrap();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o700)).unwrap();
    let sink = Sink::start(&d.socket(), &[], &[]);
    assert_eq!(mode(&spool), 0o700);
    let stopped = sink.stop();
    assert!(stopped.err.is_empty(), "{:?}", stopped.err);

    // Not a directory: one line, and the sink serves without a spool.
    let d = ShmDir::new("mode-file");
    let spool = PathBuf::from(format!("{}.spool", d.socket().display()));
    std::fs::write(&spool, b"not a directory").unwrap();
    let sink = Sink::start(&d.socket(), &[], &[]);
    let mut c = Client::connect(&d.socket());
    c.send(&encode_with_origin(
        Level::Info,
        b"app",
        b"stdout",
        &[(origin(0), b"served\n")],
    ));
    sink.wait_json(1, SECS);
    let stopped = sink.stop();
    assert_eq!(stopped.err.len(), 1, "{:?}", stopped.err);
    assert!(
        stopped.err[0].contains("not a directory; running without a spool"),
        "{:?}",
        stopped.err
    );
    assert_eq!(std::fs::read(&spool).unwrap(), b"not a directory");
}

/// A spooled ring whose connection ended is the scan's: nothing is read
/// while its program holds the lock (it may only be exec'ing), and once
/// the lock goes the scan delivers what was never sent, from the tail the
/// program's sender kept, and removes it.
#[test]
fn a_spooled_ring_whose_connection_ended_is_read_by_the_scan_once_its_lock_goes() {
    let d = ShmDir::new("conn");
    let path = d.spool().join("4242-4.ring");
    let sink = Sink::start(&d.socket(), &[], &[]);
    let mut c = Client::connect(&d.socket());
    let mut ring = RingWriter::in_file(&path, 64 * 1024, 2);
    ring.set_slot(0, Level::Info, b"stdout");
    c.attach(&ring, b"app", RingPosition::default());
    ring.push(0, origin(0), b"sent in a frame\n");
    c.frame(
        b"stdout",
        &[(origin(0), b"sent in a frame\n")],
        RingPosition {
            pos: ring.head,
            skip: 0,
        },
    );
    // Sent: the program's sender frees it.
    ring.set_tail(ring.head);
    ring.push(0, origin(1), b"only in the ring\n");
    ring.abandon();
    drop(c);
    sink.wait_json(1, SECS);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(path.exists(), "a locked ring was taken from its program");
    assert_eq!(sink.out.lock().unwrap().len(), 1, "a locked ring was read");
    drop(ring);
    sink.wait_err("spooled ring", 1, SECS);
    sink.wait_json(2, SECS);
    wait_gone(&path, SECS);
    let stopped = sink.stop();
    let msgs: Vec<String> = stopped
        .out
        .iter()
        .map(|l| parse(l)["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(msgs, ["sent in a frame", "only in the ring"]);
    let rec: Vec<_> = stopped
        .err
        .iter()
        .filter(|l| l.contains("recovered"))
        .collect();
    assert_eq!(rec.len(), 1, "{:?}", stopped.err);
    assert!(rec[0].contains("whose program is gone"), "{rec:?}");
}

/// A spooled ring whose connection ended while its program lives is left
/// to it, unmarked and in place; when the program dies later without a
/// sink holding the ring, the scan delivers what it never sent.
#[test]
fn a_spooled_ring_left_to_its_live_program_is_delivered_once_it_dies() {
    let d = ShmDir::new("left");
    let path = d.spool().join("4242-5.ring");
    let sink = Sink::start(&d.socket(), &[], &[]);
    let mut c = Client::connect(&d.socket());
    let mut ring = RingWriter::in_file(&path, 64 * 1024, 2);
    ring.set_slot(0, Level::Info, b"stdout");
    ring.set_maker(MAKER_PID, b"spooled-app");
    c.attach(&ring, b"app", RingPosition::default());
    ring.push(0, origin(0), b"sent in a frame\n");
    c.frame(
        b"stdout",
        &[(origin(0), b"sent in a frame\n")],
        RingPosition {
            pos: ring.head,
            skip: 0,
        },
    );
    // Sent: the program's sender frees it.
    ring.set_tail(ring.head);
    ring.push(0, origin(1), b"never sent\n");
    drop(c);
    // The sink waits 5 s for the program to end, then leaves the ring.
    std::thread::sleep(Duration::from_millis(7000));
    assert!(
        path.exists(),
        "{:?} {:?}",
        sink.err.lock().unwrap(),
        sink.out.lock().unwrap()
    );
    let mut state = [0u8; 4];
    rustix::io::pread(&ring.fd, &mut state, lr::STATE_AT as u64).unwrap();
    assert_eq!(u32::from_ne_bytes(state), 0, "not marked");
    assert_eq!(sink.out.lock().unwrap().len(), 1);
    drop(ring);
    sink.wait_err("spooled ring", 1, SCAN);
    sink.wait_json(2, SECS);
    wait_gone(&path, SECS);
    let stopped = sink.stop();
    let msgs: Vec<String> = stopped
        .out
        .iter()
        .map(|l| parse(l)["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(msgs, ["sent in a frame", "never sent"]);
    let said: Vec<_> = stopped
        .err
        .iter()
        .filter(|l| l.contains("spooled ring"))
        .collect();
    assert_eq!(said.len(), 1, "{:?}", stopped.err);
    assert!(
        said[0].contains("recovered 11 bytes in 1 writes"),
        "{said:?}"
    );
    let _ = std::io::stderr().flush();
}

/// More rings than one scan takes: each is delivered once, the rest by the
/// scans that follow soon after.
#[test]
fn a_full_spool_is_delivered_over_several_scans() {
    let d = ShmDir::new("many");
    let spool = d.spool();
    const N: usize = 150;
    for i in 0..N {
        drop(small_ring(
            &spool.join(format!("{i}-1.ring")),
            format!("ring {i:03}\n").as_bytes(),
        ));
    }
    let sink = Sink::start(&d.socket(), &[], &[]);
    sink.wait_err("spooled ring", N, SECS);
    sink.wait_json(N, SECS);
    std::thread::sleep(Duration::from_millis(300));
    let stopped = sink.stop();
    let mut msgs: Vec<String> = stopped
        .out
        .iter()
        .map(|l| parse(l)["message"].as_str().unwrap().to_string())
        .collect();
    msgs.sort();
    let want: Vec<String> = (0..N).map(|i| format!("ring {i:03}")).collect();
    assert_eq!(msgs, want);
    assert_eq!(stopped.err.len(), N, "{:?}", stopped.err);
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);
}

/// An unsealed ring file handed over a connection from a file system that
/// is not in memory is refused (a read there could wait: FUSE, NFS), with
/// one line; the connection's frames still arrive.
#[test]
fn an_unsealed_ring_off_a_memory_file_system_is_refused() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("logtap-spool-disk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fs = rustix::fs::statfs(&dir).unwrap();
    #[allow(clippy::unnecessary_cast)]
    let kind = fs.f_type as i64;
    if kind == 0x0102_1994 || kind == 0x8584_58f6 {
        eprintln!("skipped: {} is on a memory file system", dir.display());
        return;
    }
    let sink_dir = ShmDir::new("disk");
    let sink = Sink::start(&sink_dir.socket(), &[], &[]);
    let mut c = Client::connect(&sink_dir.socket());
    let ring = RingWriter::in_file(&dir.join("1-1.ring"), 4096, 1);
    c.attach(&ring, b"app", RingPosition::default());
    c.send(&encode_with_origin(
        Level::Info,
        b"app",
        b"stdout",
        &[(origin(0), b"still flowing\n")],
    ));
    sink.wait_json(1, SECS);
    sink.wait_err("not a usable ring", 1, SECS);
    let stopped = sink.stop();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(stopped.err.len(), 1, "{:?}", stopped.err);
    assert!(
        stopped.err[0].contains("neither a sealed memfd nor a file of a memory file system"),
        "{:?}",
        stopped.err
    );
}
