//! A test-only writer of liblogtap's shared ring, built from
//! `logtap_wire::ring` alone (no mapping: every store is a `pwrite`), and
//! a client that speaks the version-2 protocol to a sink: reads its hello,
//! attaches a ring with `SCM_RIGHTS`, sends frames with positions.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use logtap_wire::ring::{self as lr, RingPosition};
use logtap_wire::{encode_ring, EntryHeader, Level, WriteOrigin, ENTRY_HEADER, SELF_SOURCE};
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

pub struct RingWriter {
    pub fd: OwnedFd,
    pub cap: u64,
    pub slots: u32,
    pub data_offset: u64,
    /// Next free position (what the writers would store in the head).
    pub head: u64,
}

fn pwrite_all(fd: &OwnedFd, mut b: &[u8], mut at: u64) {
    while !b.is_empty() {
        let n = rustix::io::pwrite(fd, b, at).expect("pwrite ring");
        b = &b[n..];
        at += n as u64;
    }
}

impl RingWriter {
    /// A sealed memfd ring of `cap` bytes with `slots` source slots.
    pub fn new(cap: u64, slots: u32) -> RingWriter {
        let w = RingWriter::unsealed(cap, slots);
        rustix::fs::fcntl_add_seals(&w.fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .expect("seal");
        w
    }

    /// The same without seals.
    pub fn unsealed(cap: u64, slots: u32) -> RingWriter {
        let fd = rustix::fs::memfd_create(
            "logtap-test-ring",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .expect("memfd_create");
        RingWriter::laid_out(fd, cap, slots)
    }

    /// A ring in a file at `path` (in a spool), made as liblogtap makes
    /// one: mode 0600 under a name starting with a dot, sized, given its
    /// control block and locked (`flock`, as its live program holds it)
    /// there, then renamed to `path`. Dropping the writer (closing its
    /// only descriptor) releases the lock, as the program's death does.
    pub fn in_file(path: &Path, cap: u64, slots: u32) -> RingWriter {
        use std::os::unix::fs::OpenOptionsExt;
        let name = path.file_name().expect("a file name").to_string_lossy();
        let dot = path.with_file_name(format!(".{name}.new"));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&dot)
            .expect("create the ring file");
        let w = RingWriter::laid_out(OwnedFd::from(f), cap, slots);
        w.lock();
        std::fs::rename(&dot, path).expect("rename the ring file");
        w
    }

    /// Sizes `fd` for a ring and writes its control block.
    fn laid_out(fd: OwnedFd, cap: u64, slots: u32) -> RingWriter {
        let data_offset = lr::data_offset(slots as usize) as u64;
        rustix::fs::ftruncate(&fd, data_offset + cap).expect("ftruncate");
        let w = RingWriter {
            fd,
            cap,
            slots,
            data_offset,
            head: 0,
        };
        w.put_u64(lr::MAGIC_AT, lr::MAGIC);
        w.put_u32(lr::VERSION_AT, lr::LAYOUT_VERSION);
        w.put_u32(lr::SLOTS_AT, slots);
        w.put_u32(lr::INTENTS_AT, lr::INTENT_SLOTS as u32);
        w.put_u64(lr::DATA_OFFSET_AT, data_offset);
        w.put_u64(lr::CAP_AT, cap);
        w
    }

    pub fn put_u64(&self, at: usize, v: u64) {
        pwrite_all(&self.fd, &v.to_ne_bytes(), at as u64);
    }

    pub fn put_u32(&self, at: usize, v: u32) {
        pwrite_all(&self.fd, &v.to_ne_bytes(), at as u64);
    }

    /// Stores `v` as the header word of the record at ring position `pos`.
    pub fn put_word(&self, pos: u64, v: u64) {
        pwrite_all(
            &self.fd,
            &v.to_ne_bytes(),
            self.data_offset + pos % self.cap,
        );
    }

    pub fn set_slot(&self, i: u32, level: Level, name: &[u8]) {
        let base = lr::CONTROL_SIZE + i as usize * lr::SLOT_SIZE;
        self.put_u32(base + lr::SLOT_LEVEL_AT, level as u32);
        self.put_u32(base + lr::SLOT_NAME_LEN_AT, name.len() as u32);
        pwrite_all(&self.fd, name, (base + lr::SLOT_NAME_AT) as u64);
        self.put_u32(base + lr::SLOT_READY_AT, 1);
    }

    pub fn set_drops(&self, i: u32, bytes: u64, writes: u64) {
        let base = lr::CONTROL_SIZE + i as usize * lr::SLOT_SIZE;
        self.put_u64(base + lr::SLOT_DROP_BYTES_AT, bytes);
        self.put_u64(base + lr::SLOT_DROP_WRITES_AT, writes);
    }

    pub fn set_owner(&self, token: u64) {
        self.put_u64(lr::OWNER_AT, token);
    }

    pub fn abandon(&self) {
        self.put_u32(lr::STATE_AT, lr::STATE_ABANDONED);
    }

    /// Takes the ring's lock as its live program holds it.
    pub fn lock(&self) {
        rustix::fs::flock(&self.fd, rustix::fs::FlockOperation::LockExclusive).expect("flock");
    }

    /// Stores the tail: every position before it was sent.
    pub fn set_tail(&self, tail: u64) {
        self.put_u64(lr::TAIL_AT, tail);
    }

    /// Stores its maker's pid and platform in the control block.
    pub fn set_maker(&self, pid: u32, platform: &[u8]) {
        self.put_u32(lr::PID_AT, pid);
        self.put_u32(lr::PLATFORM_LEN_AT, platform.len() as u32);
        pwrite_all(&self.fd, platform, lr::PLATFORM_AT as u64);
    }

    pub fn set_state(&self, state: u32) {
        self.put_u32(lr::STATE_AT, state);
    }

    pub fn store_head(&self) {
        self.put_u64(lr::HEAD_AT, self.head);
    }

    /// Makes room for a record of `size` bytes that never wraps: pads to
    /// the end of the ring when it would.
    fn room(&mut self, size: u64) {
        let off = self.head % self.cap;
        if off + size > self.cap {
            let pad = self.cap - off;
            self.put_word(self.head, lr::pad_header(pad));
            self.head += pad;
        }
    }

    /// Commits one write; returns the record's position.
    pub fn push(&mut self, src: u8, origin: WriteOrigin, data: &[u8]) -> u64 {
        let size = lr::record_size(data.len()) as u64;
        self.room(size);
        let at = self.head;
        let mut rec = vec![0u8; size as usize];
        rec[..8].copy_from_slice(&lr::record_header(src, data.len() as u32).to_ne_bytes());
        let eh = EntryHeader {
            origin,
            len: data.len() as u32,
        };
        rec[8..8 + ENTRY_HEADER].copy_from_slice(&eh.to_bytes());
        rec[8 + ENTRY_HEADER..8 + ENTRY_HEADER + data.len()].copy_from_slice(data);
        pwrite_all(&self.fd, &rec, self.data_offset + at % self.cap);
        self.head += size;
        self.store_head();
        at
    }

    /// Fills intent slot `i`: `state`, the write's origin, source, length,
    /// record position and bytes (the length field is `len`, whatever
    /// `data` holds).
    #[allow(clippy::too_many_arguments)]
    pub fn set_intent(
        &self,
        i: usize,
        state: u32,
        origin: WriteOrigin,
        src: u32,
        len: u64,
        pos: u64,
        data: &[u8],
    ) {
        let at = lr::intents_offset(self.slots as usize) + i * lr::INTENT_SIZE;
        self.put_u64(at + lr::INTENT_TIME_AT, origin.time_ns);
        self.put_u32(at + lr::INTENT_PID_AT, origin.pid);
        self.put_u32(at + lr::INTENT_SRC_AT, src);
        self.put_u64(at + lr::INTENT_LEN_AT, len);
        self.put_u64(at + lr::INTENT_POS_AT, pos);
        pwrite_all(&self.fd, data, (at + lr::INTENT_DATA_AT) as u64);
        self.put_u32(at + lr::INTENT_STATE_AT, state);
    }

    /// A reservation of up to `max` bytes that is never committed.
    pub fn reserve(&mut self, src: u8, max: u32) -> u64 {
        let size = lr::record_size(max as usize) as u64;
        self.room(size);
        let at = self.head;
        self.put_word(at, lr::reserved_header(src, max));
        self.head += size;
        self.store_head();
        at
    }

    /// Space taken whose header word was never stamped (zeroed).
    pub fn unstamped(&mut self, len: usize) -> u64 {
        let size = lr::record_size(len) as u64;
        self.room(size);
        let at = self.head;
        pwrite_all(
            &self.fd,
            &vec![0u8; size as usize],
            self.data_offset + at % self.cap,
        );
        self.head += size;
        self.store_head();
        at
    }
}

/// A version-2 client of the sink.
pub struct Client {
    pub sock: UnixStream,
    pub token: u64,
}

impl Client {
    /// Connects and reads the sink's hello.
    pub fn connect(socket: &Path) -> Client {
        let mut sock = UnixStream::connect(socket).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut b = [0u8; lr::HELLO_LEN];
        sock.read_exact(&mut b).expect("the sink's hello");
        let token = lr::Hello::parse(&b).expect("a valid hello").token;
        let mut m = [0u8; lr::SINK_MSG_LEN];
        sock.read_exact(&mut m)
            .expect("the sink's word that it reads rings");
        assert_eq!(lr::SinkMsg::parse(&m), Some(lr::SinkMsg::Reads));
        Client { sock, token }
    }

    /// Sends `bytes` with the descriptors `fds` attached.
    pub fn send_with_fds(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
        let mut space =
            vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len().max(1)))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
        let n = rustix::net::sendmsg(
            &self.sock,
            &[std::io::IoSlice::new(bytes)],
            &mut control,
            SendFlags::empty(),
        )
        .expect("sendmsg");
        assert_eq!(n, bytes.len());
    }

    /// Stores this connection's token in the ring and attaches it.
    pub fn attach(&self, ring: &RingWriter, platform: &[u8], at: RingPosition) {
        ring.set_owner(self.token);
        let f = encode_ring(Level::Info, platform, SELF_SOURCE.as_bytes(), &[], at);
        self.send_with_fds(&f, &[ring.fd.as_fd()]);
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).expect("send");
    }

    /// A version-2 frame of `writes` ending at `at`.
    pub fn frame(&mut self, source: &[u8], writes: &[(WriteOrigin, &[u8])], at: RingPosition) {
        let f = encode_ring(Level::Info, b"app", source, writes, at);
        self.send(&f);
    }
}
