//! The shared ring, seen from a sink: a test peer that greets each
//! connection as a new logtap-sink does (the hello), receives the memfd
//! with SCM_RIGHTS, decodes the frames and, once the program is gone,
//! reads what the ring still holds from the last position it received.
//! A peer that never greets stands for an older sink.
//!
//! What is compared is always the program's own output file: the bytes
//! the kernel took.

use logtap_wire::ring as lay;
use logtap_wire::{self as wire, RingPosition};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::kids::{check_killed, jitter, kill, Kid};

fn so() -> PathBuf {
    common::so_path()
}

fn stress() -> PathBuf {
    common::kids::stress("ring")
}

fn tmpdir(name: &str) -> PathBuf {
    common::kids::tmpdir("ring", name)
}

/// One connection as the peer saw it.
struct Conn {
    pid: i32,
    token: u64,
    bytes: Vec<u8>,
    /// fds received with SCM_RIGHTS, and the byte range of the recvmsg
    /// that brought them.
    fds: Vec<(std::ops::Range<usize>, OwnedFd)>,
}

struct Peer {
    path: std::path::PathBuf,
    conns: Arc<Mutex<Vec<Conn>>>,
    open: Arc<AtomicUsize>,
    paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Connections from this test process itself (see `wait_closed`).
    markers: Arc<AtomicUsize>,
}

fn peer_pid(s: &UnixStream) -> i32 {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: valid out-parameters for SO_PEERCRED.
    unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        );
    }
    cred.pid
}

/// One recvmsg: bytes and any fds passed with them.
fn recv_with_fds(s: &UnixStream, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut ctl = [0u64; 32];
    // SAFETY: msghdr over our buffers; fds are taken from the control
    // messages the kernel filled in.
    unsafe {
        let mut m: libc::msghdr = std::mem::zeroed();
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        m.msg_control = ctl.as_mut_ptr() as *mut libc::c_void;
        m.msg_controllen = std::mem::size_of_val(&ctl) as _;
        let n = libc::recvmsg(s.as_raw_fd(), &mut m, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut fds = vec![];
        let mut cm = libc::CMSG_FIRSTHDR(&m);
        while !cm.is_null() {
            if (*cm).cmsg_level == libc::SOL_SOCKET && (*cm).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*cm).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                let p = libc::CMSG_DATA(cm) as *const i32;
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(p.add(i).read_unaligned()));
                }
            }
            cm = libc::CMSG_NXTHDR(&m, cm);
        }
        Ok((n as usize, fds))
    }
}

impl Peer {
    /// Listens at `path`; greets each connection when `greet` (a new sink).
    fn start(path: &Path, greet: bool) -> Peer {
        let l = UnixListener::bind(path).unwrap();
        l.set_nonblocking(true).unwrap();
        let p = Peer {
            path: path.to_path_buf(),
            conns: Arc::default(),
            open: Arc::default(),
            paused: Arc::default(),
            stop: Arc::default(),
            markers: Arc::default(),
        };
        let (conns, open, paused, stop, markers) = (
            p.conns.clone(),
            p.open.clone(),
            p.paused.clone(),
            p.stop.clone(),
            p.markers.clone(),
        );
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let Ok((mut s, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                };
                if peer_pid(&s) == std::process::id() as i32 {
                    // `wait_closed`'s marker: everything queued before it
                    // has been accepted (and counted in `open`).
                    markers.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                n += 1;
                let token = 0x5eed_0000 + n;
                s.set_nonblocking(false).unwrap();
                if greet {
                    let _ = s.write_all(&lay::Hello { token }.to_bytes());
                }
                let (conns, open, paused) = (conns.clone(), open.clone(), paused.clone());
                open.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let pid = peer_pid(&s);
                    let mut c = Conn {
                        pid,
                        token: if greet { token } else { 0 },
                        bytes: vec![],
                        fds: vec![],
                    };
                    let mut buf = vec![0u8; 1 << 16];
                    loop {
                        while paused.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        match recv_with_fds(&s, &mut buf) {
                            Ok((0, _)) | Err(_) => break,
                            Ok((k, fds)) => {
                                let at = c.bytes.len();
                                for fd in fds {
                                    c.fds.push((at..at + k, fd));
                                }
                                c.bytes.extend_from_slice(&buf[..k]);
                            }
                        }
                    }
                    conns.lock().unwrap().push(c);
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        p
    }

    /// Waits until every connection made so far has been accepted and has
    /// ended. A connection of an exited program can still wait in the
    /// listen queue: a marker connection from this process, accepted after
    /// everything queued before it, says when the queue is drained.
    fn wait_closed(&self, at_least: usize, timeout: Duration) {
        let t = Instant::now();
        let seen = self.markers.load(Ordering::SeqCst);
        let _marker = UnixStream::connect(&self.path).unwrap();
        while self.markers.load(Ordering::SeqCst) == seen && t.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(2));
        }
        while (self.open.load(Ordering::SeqCst) > 0 || self.conns.lock().unwrap().len() < at_least)
            && t.elapsed() < timeout
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            self.open.load(Ordering::SeqCst),
            0,
            "connections still open"
        );
    }

    fn take(&self) -> Vec<Conn> {
        self.stop.store(true, Ordering::SeqCst);
        std::mem::take(&mut *self.conns.lock().unwrap())
    }
}

/// One decoded frame.
struct Got {
    version: i32,
    source: String,
    writes: Vec<(u32, Vec<u8>)>,
    position: Option<RingPosition>,
    /// Offset of the frame's first byte in the connection.
    at: usize,
}

fn frames(bytes: &[u8]) -> Vec<Got> {
    let mut out = vec![];
    let mut at = 0;
    while at < bytes.len() {
        let h: [u8; wire::HEADER_LEN] = bytes[at..at + 8].try_into().unwrap();
        let (version, len) = wire::parse_header_version(&h).expect("a valid header");
        if at + 8 + len > bytes.len() {
            // Cut by the program's death: the sink discards it.
            break;
        }
        let f = wire::parse_body_version(version, &bytes[at + 8..at + 8 + len]).expect("body");
        out.push(Got {
            version,
            source: String::from_utf8_lossy(f.source).into_owned(),
            writes: f
                .writes()
                .map(|w| (w.origin.map_or(0, |o| o.pid), w.data.to_vec()))
                .collect(),
            position: f.position,
            at,
        });
        at += 8 + len;
    }
    out
}

/// The ring as a sink reads it after the program is gone: every record
/// from `from` (or the tail, past it only by freed padding) to the head.
/// Returns (source name, pid, bytes) per record, and the control block.
struct RingView {
    state: u32,
    owner: u64,
    size: u64,
    data_offset: u64,
    cap: u64,
    records: Vec<(String, u32, Vec<u8>)>,
}

fn read_ring(fd: &OwnedFd, from: RingPosition) -> RingView {
    let f = std::fs::File::from(fd.try_clone().unwrap());
    let size = f.metadata().unwrap().len();
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
    assert!(
        link.to_string_lossy().starts_with("/memfd:logtap-ring"),
        "the fd passed is {link:?}"
    );
    let mut mem = vec![0u8; size as usize];
    f.read_exact_at(&mut mem, 0).unwrap();
    let u64_at = |at: usize| u64::from_ne_bytes(mem[at..at + 8].try_into().unwrap());
    let u32_at = |at: usize| u32::from_ne_bytes(mem[at..at + 4].try_into().unwrap());
    assert_eq!(u64_at(lay::MAGIC_AT), lay::MAGIC);
    assert_eq!(u32_at(lay::VERSION_AT), lay::LAYOUT_VERSION);
    let slots = u32_at(lay::SLOTS_AT) as usize;
    let off = u64_at(lay::DATA_OFFSET_AT);
    let cap = u64_at(lay::CAP_AT);
    let (head, tail) = (u64_at(lay::HEAD_AT), u64_at(lay::TAIL_AT));
    let name = |src: u8| -> String {
        let s = lay::CONTROL_SIZE + src as usize * lay::SLOT_SIZE;
        assert!((src as usize) < slots);
        assert_eq!(u32_at(s + lay::SLOT_READY_AT), 1, "slot {src} not ready");
        let n = u32_at(s + lay::SLOT_NAME_LEN_AT) as usize;
        String::from_utf8_lossy(&mem[s + lay::SLOT_NAME_AT..s + lay::SLOT_NAME_AT + n]).into_owned()
    };
    let (mut pos, mut skip) = if tail > from.pos {
        (tail, 0)
    } else {
        (from.pos, from.skip as usize)
    };
    let mut records = vec![];
    let mut walked = std::collections::HashSet::new();
    while pos < head {
        let at = (off + pos % cap) as usize;
        match lay::decode_header(u64_at(at)) {
            lay::Slot::Record { src, len, size } => {
                walked.insert(pos);
                let e = at + lay::REC_HEADER;
                let h = wire::EntryHeader::from_bytes(
                    mem[e..e + wire::ENTRY_HEADER].try_into().unwrap(),
                );
                let d = &mem[e + wire::ENTRY_HEADER..e + wire::ENTRY_HEADER + len as usize];
                records.push((name(src), h.origin.pid, d[skip..].to_vec()));
                skip = 0;
                pos += size;
            }
            lay::Slot::Pad { size } | lay::Slot::Reserved { size } => pos += size,
            // A writer killed between claiming its space (the head moved)
            // and stamping its header: nothing after it can be sized.
            lay::Slot::Empty => break,
            other => panic!("unexpected {other:?} at {pos} (head {head}, tail {tail})"),
        }
    }
    // Then the writes the intent slots hold (the layout's rules, read
    // independently of the sink): one in flight, and one being committed
    // whose record was neither sent (before `from`) nor walked.
    let intents = u32_at(lay::INTENTS_AT) as usize;
    let mut late = vec![];
    for i in 0..intents {
        let at = lay::intents_offset(slots) + i * lay::INTENT_SIZE;
        let state = u32_at(at + lay::INTENT_STATE_AT);
        let len = u64_at(at + lay::INTENT_LEN_AT) as usize;
        let rec = u64_at(at + lay::INTENT_POS_AT);
        let take = match state {
            lay::INTENT_IN_FLIGHT => true,
            lay::INTENT_COMMITTING => rec >= from.pos && !walked.contains(&rec),
            _ => false,
        };
        if take {
            assert!(
                len > 0 && len <= lay::INTENT_DATA_MAX,
                "intent slot {i}: length {len}"
            );
            let d = at + lay::INTENT_DATA_AT;
            late.push((
                u64_at(at + lay::INTENT_TIME_AT),
                name(u32_at(at + lay::INTENT_SRC_AT) as u8),
                u32_at(at + lay::INTENT_PID_AT),
                mem[d..d + len].to_vec(),
            ));
        }
    }
    late.sort_by_key(|l| l.0);
    records.extend(late.into_iter().map(|(_, n, p, d)| (n, p, d)));
    RingView {
        state: u32_at(lay::STATE_AT),
        owner: u64_at(lay::OWNER_AT),
        size,
        data_offset: off,
        cap,
        records,
    }
}

fn seals(fd: &OwnedFd) -> u32 {
    // SAFETY: F_GET_SEALS on an fd we own.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) as u32 }
}

/// What one connection delivered of `source`: the frames' writes, then
/// (when it carried the ring) what the ring held after its last position.
/// Checks the protocol on the way: version-1 frames until the attach, the
/// attach (version 2, source `logtap`, no entries, the memfd on its first
/// byte), version 2 after it.
struct Delivered {
    frames: Vec<u8>,
    ring: Vec<u8>,
    attached: bool,
    view: Option<RingView>,
}

fn delivered(c: &Conn, source: &str) -> Delivered {
    let fs = frames(&c.bytes);
    let mut out = Delivered {
        frames: vec![],
        ring: vec![],
        attached: false,
        view: None,
    };
    let mut last = None;
    for f in &fs {
        if f.version == wire::VERSION_RING && f.source == wire::SELF_SOURCE && f.writes.is_empty() {
            assert!(!out.attached, "a second attach on one connection");
            assert_eq!(c.fds.len(), 1, "one fd per connection");
            // The kernel hands an fd over with the read that holds the
            // first byte of the send it came with (a read stops before a
            // later send carrying fds, and may start in earlier bytes).
            assert!(
                c.fds[0].0.contains(&f.at),
                "the memfd travels with the attach's first byte ({:?}, attach at {})",
                c.fds[0].0,
                f.at
            );
            out.attached = true;
            last = f.position;
            continue;
        }
        if out.attached {
            assert_eq!(
                f.version,
                wire::VERSION_RING,
                "after the attach, version 2 only"
            );
            last = f.position;
        } else {
            assert_eq!(
                f.version,
                wire::VERSION_ORIGIN,
                "before the attach, version 1"
            );
        }
        if f.source == source {
            for (_, d) in &f.writes {
                out.frames.extend_from_slice(d);
            }
        }
    }
    if out.attached {
        let fd = &c.fds[0].1;
        let v = read_ring(fd, last.unwrap());
        for (s, _, d) in &v.records {
            if s == source {
                out.ring.extend_from_slice(d);
            }
        }
        out.view = Some(v);
    } else {
        assert!(c.fds.is_empty(), "an fd without an attach");
    }
    out
}

fn tapped(sock: &Path) -> Command {
    let mut c = Command::new(stress());
    c.env("LD_PRELOAD", so())
        .env("LLT_TARGET", format!("socket:{}", sock.display()))
        .env_remove("LLT_FORMAT")
        .env("LLT_TAP_INTO", "1")
        .env("LLT_EXIT_TIMEOUT_MS", "300");
    c
}

/// Waits until the program's output file holds `bytes`: more than the
/// socket buffers hold, so with the peer paused the rest is in the ring.
fn wait_written(out: &Path, bytes: u64) {
    let t = Instant::now();
    while std::fs::metadata(out).map_or(0, |m| m.len()) < bytes {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the program wrote under {bytes} bytes in 30 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn sigkill_mid_burst_every_line_the_kernel_has_arrives_once() {
    for round in 0..6 {
        let dir = tmpdir("kill");
        let sock = dir.join("s");
        let peer = Peer::start(&sock, true);
        let out = dir.join("out");
        let mut child = Kid::spawn(
            tapped(&sock)
                .args(["lines", "3000000"])
                .env("LLT_BUFFER_SIZE", "64M")
                .stdout(std::fs::File::create(&out).unwrap()),
        );
        // Half the rounds with the peer not reading for a while (a busy
        // sink): more of the burst is in the ring when the kill comes.
        // The kill waits until the program has written more than the
        // socket buffers hold (a few hundred KiB): a program slow to start
        // (CI under load) could otherwise be killed with everything it
        // wrote already in the socket, and the ring empty.
        if round % 2 == 1 {
            std::thread::sleep(Duration::from_millis(20));
            peer.paused.store(true, Ordering::SeqCst);
            wait_written(&out, 4 << 20);
        }
        std::thread::sleep(Duration::from_millis(30 + jitter(150)));
        kill(child.id(), libc::SIGKILL);
        child.wait().unwrap();
        peer.paused.store(false, Ordering::SeqCst);
        peer.wait_closed(1, Duration::from_secs(20));
        let conns = peer.take();
        assert_eq!(conns.len(), 1);
        let d = delivered(&conns[0], "stdout");
        assert!(d.attached, "round {round}: the ring was never attached");
        let v = d.view.as_ref().unwrap();
        assert_eq!(
            v.owner, conns[0].token,
            "the owner word names the connection"
        );
        assert_eq!(v.state, lay::STATE_LIVE, "killed, not exiting");
        let mut got = d.frames.clone();
        got.extend_from_slice(&d.ring);
        let file = std::fs::read(&out).unwrap();
        assert!(
            file.len() > 10_000,
            "round {round}: the burst had not started"
        );
        check_killed(&file, &got, &format!("round {round}"));
        eprintln!(
            "round {round}: {} bytes in frames, {} read from the ring, file {}",
            d.frames.len(),
            d.ring.len(),
            file.len()
        );
        if round % 2 == 1 {
            assert!(
                !d.ring.is_empty(),
                "round {round}: nothing was left in the ring?"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn sink_paused_then_program_killed_then_sink_resumed_gets_everything() {
    let dir = tmpdir("paused");
    let sock = dir.join("s");
    let peer = Peer::start(&sock, true);
    let out = dir.join("out");
    // More than the socket buffers hold while the sink is paused, less
    // than the ring does.
    let mut child = Kid::spawn(
        tapped(&sock)
            .args(["lines", "3000000"])
            .env("LLT_BUFFER_SIZE", "64M")
            .stdout(std::fs::File::create(&out).unwrap()),
    );
    std::thread::sleep(Duration::from_millis(20));
    peer.paused.store(true, Ordering::SeqCst);
    wait_written(&out, 4 << 20);
    std::thread::sleep(Duration::from_millis(200 + jitter(200)));
    kill(child.id(), libc::SIGKILL);
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    peer.paused.store(false, Ordering::SeqCst);
    peer.wait_closed(1, Duration::from_secs(20));
    let conns = peer.take();
    let d = delivered(&conns[0], "stdout");
    assert!(d.attached);
    let mut got = d.frames.clone();
    got.extend_from_slice(&d.ring);
    let file = std::fs::read(&out).unwrap();
    check_killed(&file, &got, "paused sink");
    assert!(
        d.ring.len() > 1000,
        "the ring held only {} bytes while the sink was paused",
        d.ring.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_memfd_is_sealed_and_exactly_the_layout() {
    let dir = tmpdir("sealed");
    let sock = dir.join("s");
    let peer = Peer::start(&sock, true);
    let st = tapped(&sock)
        .args(["lines", "1000"])
        .env("LLT_BUFFER_SIZE", "1M")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    peer.wait_closed(1, Duration::from_secs(10));
    let conns = peer.take();
    let d = delivered(&conns[0], "stdout");
    assert!(d.attached);
    let fd = &conns[0].fds[0].1;
    let s = seals(fd);
    for want in [lay::F_SEAL_SHRINK, lay::F_SEAL_GROW, lay::F_SEAL_SEAL] {
        assert!(s & want != 0, "seals {s:#x} lack {want:#x}");
    }
    let v = d.view.unwrap();
    assert_eq!(v.cap, 1 << 20);
    assert_eq!(
        v.size,
        v.data_offset + v.cap,
        "sized exactly data_offset + cap"
    );
    // SAFETY: ftruncate on the received fd; the seals must refuse it.
    let rc = unsafe { libc::ftruncate(fd.as_raw_fd(), 4096) };
    assert_ne!(rc, 0, "a sealed memfd cannot shrink");
    // The program exited normally: everything went in frames, and the
    // ring says it was left for good.
    assert_eq!(v.state, lay::STATE_ABANDONED);
    let want: Vec<u8> = (0..1000)
        .flat_map(|i| format!("l {i}\n").into_bytes())
        .collect();
    assert_eq!(d.frames, want);
    assert!(d.ring.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_older_sink_gets_version_1_frames_and_no_fd() {
    let dir = tmpdir("old");
    let sock = dir.join("s");
    let peer = Peer::start(&sock, false);
    let out = dir.join("out");
    let st = tapped(&sock)
        .args(["threads-write", "4", "20000"])
        .stdout(std::fs::File::create(&out).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    peer.wait_closed(1, Duration::from_secs(10));
    let conns = peer.take();
    let mut all = BTreeMap::new();
    for c in &conns {
        assert!(
            c.fds.is_empty(),
            "an fd was passed to a sink that did not ask"
        );
        for f in frames(&c.bytes) {
            assert_eq!(f.version, wire::VERSION_ORIGIN);
            assert_eq!(f.source, "stdout");
            for (_, d) in f.writes {
                for l in d.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    *all.entry(l.to_vec()).or_insert(0) += 1;
                }
            }
        }
    }
    let file = std::fs::read(&out).unwrap();
    let lines: Vec<&[u8]> = file
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 80_000);
    for l in lines {
        assert_eq!(all.get(l), Some(&1), "{:?}", String::from_utf8_lossy(l));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fork_children_get_rings_of_their_own() {
    let dir = tmpdir("fork");
    let sock = dir.join("s");
    let peer = Peer::start(&sock, true);
    let st = tapped(&sock)
        .args(["fork", "8", "2000"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    peer.wait_closed(9, Duration::from_secs(20));
    let conns = peer.take();
    assert!(conns.len() >= 8, "{} connections", conns.len());
    let mut inodes = std::collections::HashSet::new();
    for c in &conns {
        // Every write a connection carries is its own process's: a child
        // writing into its parent's ring would show up in the parent's
        // frames with the child's pid.
        for f in frames(&c.bytes) {
            for (pid, _) in &f.writes {
                assert_eq!(*pid as i32, c.pid, "a write of {pid} in {}'s ring", c.pid);
            }
        }
        let d = delivered(c, "stdout");
        if d.attached {
            for (_, pid, _) in &d.view.unwrap().records {
                assert_eq!(*pid as i32, c.pid);
            }
            let st = std::fs::File::from(c.fds[0].1.try_clone().unwrap())
                .metadata()
                .unwrap();
            use std::os::unix::fs::MetadataExt;
            assert!(inodes.insert(st.ino()), "two processes share one memfd");
        }
    }
    assert!(inodes.len() >= 2, "rings were attached");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn programs_that_close_or_dup2_over_every_fd_still_deliver_and_pass_only_the_memfd() {
    for private in ["true", "false"] {
        let dir = tmpdir("chaos");
        let sock = dir.join("s");
        let peer = Peer::start(&sock, true);
        let out = dir.join("out");
        let st = tapped(&sock)
            .args(["fdchaos", "4000"])
            .arg(dir.join("private"))
            .env("LLT_PRIVATE_FDS", private)
            .stdout(std::fs::File::create(&out).unwrap())
            .status()
            .unwrap();
        assert!(st.success(), "LLT_PRIVATE_FDS={private}");
        assert_eq!(std::fs::read(dir.join("private")).unwrap(), b"private\n");
        peer.wait_closed(1, Duration::from_secs(10));
        let conns = peer.take();
        let mut got = vec![];
        let mut attached = false;
        for c in &conns {
            let d = delivered(c, "stdout");
            attached |= d.attached;
            got.extend_from_slice(&d.frames);
            if let Some(v) = &d.view {
                let s = seals(&c.fds[0].1);
                assert!(s & lay::REQUIRED_SEALS == lay::REQUIRED_SEALS);
                assert!(v.size > 0);
            }
        }
        // A program this short may be done before the hello arrives: then
        // nothing needed the ring, and the frames carried everything.
        let _ = attached;
        let file = std::fs::read(&out).unwrap();
        assert!(
            got == file,
            "LLT_PRIVATE_FDS={private}: {} bytes delivered of {} on {} connections ({:?})",
            got.len(),
            file.len(),
            conns.len(),
            conns
                .iter()
                .map(|c| (c.bytes.len(), c.fds.len()))
                .collect::<Vec<_>>()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
