//! The sink's side of the shared ring (`logtap_wire::ring`): the greeting,
//! receiving the program's memfd with `SCM_RIGHTS`, following the ring
//! positions of its version-2 frames, serving its read requests (the
//! records read from the ring instead of the socket while it runs), and,
//! when the connection ends with the ring still this connection's,
//! reading what the program wrote but never sent.
//!
//! Everything in the memfd is a claim of a process that may be hostile and
//! may change it at any moment. The sink never maps it: it reads the
//! control block and the records with `pread` into its own memory, so
//! nothing the program does can fault the sink or change bytes while they
//! are being parsed; every size and position is checked against the ring's
//! capacity, the span being read and the head read once at the start;
//! every walk advances by at least 8 bytes and ends at the head, so it is
//! bounded by the capacity.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use logtap_wire::ring::{
    self as lr, decode_header, RingPosition, Slot, CAP_AT, CONTROL_SIZE, DATA_OFFSET_AT, HEAD_AT,
    LAYOUT_VERSION, MAGIC, MAGIC_AT, OWNER_AT, REQUIRED_SEALS, SLOTS_AT, SLOT_DROP_BYTES_AT,
    SLOT_DROP_WRITES_AT, SLOT_LEVEL_AT, SLOT_NAME_AT, SLOT_NAME_LEN_AT, SLOT_NAME_MAX,
    SLOT_READY_AT, SLOT_SIZE, STATE_ABANDONED, STATE_AT, TAIL_AT, VERSION_AT,
};
use logtap_wire::{
    DropNotice, EntryHeader, Frame, Level, Write, WriteOrigin, ENTRY_HEADER, SELF_SOURCE,
    VERSION_READ, VERSION_RING,
};
use rustix::io::Errno;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};

use crate::output::{Emit, Origin};
use crate::stream::{FrameStream, Router};

/// The largest ring accepted: liblogtap's largest `LLT_BUFFER_SIZE` (1 GiB).
pub const MAX_CAP: u64 = 1 << 30;
/// The smallest ring accepted (one page).
pub const MIN_CAP: u64 = 4096;
/// The most source slots accepted: a record names its slot in 8 bits.
pub const MAX_SLOTS: u32 = 256;
/// The most intent slots accepted.
pub const MAX_INTENTS: u32 = 1024;
/// File descriptors taken from one read at most; the kernel closes any
/// more sent with the same message (`MSG_CTRUNC`).
const FDS_PER_READ: usize = 4;
/// How much of a ring a recovery reads at once: its memory is this, or
/// the largest record found, whichever is more (at most the capacity).
const CHUNK: usize = 1 << 20;
/// How long a connection's ring is kept, waiting for its live program to
/// die or to take the ring to another connection, before the sink gives
/// it back to the program.
pub const OWNER_WAIT: Duration = Duration::from_secs(5);

/// Fresh connection tokens: a counter from a random start, multiplied by an
/// odd constant (a bijection of `u64`, so no token repeats within 2^64
/// connections), never 0.
pub struct Tokens {
    start: u64,
    n: u64,
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens::new()
    }
}

impl Tokens {
    pub fn new() -> Tokens {
        use std::hash::{BuildHasher, Hasher};
        // std's hasher keys come from the system's random source.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(u64::from(std::process::id()));
        Tokens {
            start: h.finish(),
            n: 0,
        }
    }

    pub fn fresh(&mut self) -> u64 {
        loop {
            self.n = self.n.wrapping_add(1);
            let t = self
                .start
                .wrapping_add(self.n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            if t != 0 {
                return t;
            }
        }
    }
}

/// One read of a connection: like `read`, but file descriptors sent with
/// the bytes (`SCM_RIGHTS`) are received (close-on-exec) into `fds`
/// instead of being discarded by the kernel. Returns the bytes read and
/// whether the kernel had to drop descriptors that did not fit.
pub fn recv(sock: impl AsFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<(usize, bool)> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_READ))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [io::IoSliceMut::new(buf)];
    let r = rustix::net::recvmsg(
        sock,
        &mut iov,
        &mut control,
        RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
    )?;
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(it) = m {
            fds.extend(it);
        }
    }
    Ok((r.bytes, r.flags.contains(ReturnFlags::CTRUNC)))
}

/// A memfd (or a spooled ring file) that passed the checks, with the
/// geometry it claimed then.
pub struct Ring {
    fd: OwnedFd,
    cap: u64,
    slots: u32,
    intents: u32,
    data_offset: u64,
    /// A memfd carrying [`REQUIRED_SEALS`]; `false` for a file that
    /// cannot be sealed (a ring in the spool, `logtap_wire::ring::SPOOL_SUFFIX`),
    /// whose size its program may still change under the reads.
    sealed: bool,
}

/// `TMPFS_MAGIC` and `RAMFS_MAGIC` (`linux/magic.h`): the memory file
/// systems an unsealed ring is accepted from.
const MEMORY_FS: [i64; 2] = [0x0102_1994, 0x8584_58f6];

fn ne_u64(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn ne_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Fills `buf` from `fd` at `offset`; a short file is an error.
fn pread_exact(fd: &OwnedFd, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::pread(fd, &mut buf[done..], offset + done as u64) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl Ring {
    /// Accepts `fd` only as a ring of this layout whose size is exactly
    /// what its control block says, in a sealed memfd or in a file that
    /// cannot be sealed (a spooled ring) on a memory file system; says why
    /// not.
    ///
    /// An unsealed file may shrink under the reads: every read is a
    /// `pread` whose short count ends the reading as an error. It must be
    /// on tmpfs (or ramfs), where a read never waits: a file of a FUSE or
    /// network file system handed over by a hostile program could block
    /// the sink's one thread. A memfd that allows sealing but carries too
    /// few seals is refused as before (its program chose not to seal it).
    pub fn check(fd: OwnedFd) -> Result<Ring, String> {
        let st = rustix::fs::fstat(&fd).map_err(|e| format!("fstat: {e}"))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err("not a regular file".into());
        }
        let sealed = match rustix::fs::fcntl_get_seals(&fd) {
            Ok(s) if s.bits() & REQUIRED_SEALS == REQUIRED_SEALS => true,
            // What F_GET_SEALS says of a tmpfs file, which cannot be sealed.
            Ok(s) if s.bits() == lr::F_SEAL_SEAL => false,
            Ok(s) => {
                return Err(format!(
                    "seals {:#x} lack F_SEAL_SEAL|F_SEAL_SHRINK",
                    s.bits()
                ))
            }
            // Not a file of tmpfs: refused just below.
            Err(Errno::INVAL) => false,
            Err(e) => return Err(format!("F_GET_SEALS: {e}")),
        };
        if !sealed {
            let fs = rustix::fs::fstatfs(&fd).map_err(|e| format!("fstatfs: {e}"))?;
            #[allow(clippy::unnecessary_cast)] // its width differs between targets
            let kind = fs.f_type as i64;
            if !MEMORY_FS.contains(&kind) {
                return Err(format!(
                    "neither a sealed memfd nor a file of a memory file system (file system type {kind:#x})"
                ));
            }
        }
        let mut c = [0u8; 64];
        pread_exact(&fd, &mut c, 0).map_err(|e| format!("control block: {e}"))?;
        if ne_u64(&c, MAGIC_AT) != MAGIC {
            return Err("bad magic".into());
        }
        let version = ne_u32(&c, VERSION_AT);
        if version != LAYOUT_VERSION {
            return Err(format!(
                "layout version {version}, this sink reads {LAYOUT_VERSION}"
            ));
        }
        let slots = ne_u32(&c, SLOTS_AT);
        if slots == 0 || slots > MAX_SLOTS {
            return Err(format!("{slots} source slots (1..={MAX_SLOTS})"));
        }
        let cap = ne_u64(&c, CAP_AT);
        if !cap.is_power_of_two() || !(MIN_CAP..=MAX_CAP).contains(&cap) {
            return Err(format!(
                "capacity {cap} is not a power of two in {MIN_CAP}..={MAX_CAP}"
            ));
        }
        let intents = ne_u32(&c, lr::INTENTS_AT);
        if intents > MAX_INTENTS {
            return Err(format!("{intents} intent slots (0..={MAX_INTENTS})"));
        }
        let data_offset = ne_u64(&c, DATA_OFFSET_AT);
        if data_offset != lr::data_offset_for(slots as usize, intents as usize) as u64 {
            return Err(format!(
                "data offset {data_offset} is not the one of {slots} source slots and {intents} intent slots"
            ));
        }
        let size = st.st_size as u64;
        if size != data_offset + cap {
            return Err(format!(
                "file size {size} is not data offset {data_offset} + capacity {cap}"
            ));
        }
        Ok(Ring {
            fd,
            cap,
            slots,
            intents,
            data_offset,
            sealed,
        })
    }

    /// A sealed memfd (else a file that cannot be sealed: a spooled ring).
    pub fn sealed(&self) -> bool {
        self.sealed
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Every position before it was sent (a claim).
    pub fn tail(&self) -> io::Result<u64> {
        self.read_u64(TAIL_AT)
    }

    /// Data bytes of the record at the tail already sent
    /// (`TAIL_SKIP_AT`; 0 in rings of libraries that do not keep it).
    pub fn tail_skip(&self) -> io::Result<u64> {
        self.read_u64(lr::TAIL_SKIP_AT)
    }

    /// The state word ([`STATE_ABANDONED`], `STATE_DELIVERED`, ...).
    pub fn state(&self) -> io::Result<u32> {
        self.read_u32(STATE_AT)
    }

    /// The pid its maker claims (`PID_AT`), as it saw itself; `None` when 0
    /// or unreadable.
    pub fn claimed_pid(&self) -> Option<u32> {
        self.read_u32(lr::PID_AT).ok().filter(|&p| p != 0)
    }

    /// The platform its maker stored (`PLATFORM_AT`), at most
    /// `PLATFORM_MAX` bytes; empty when unreadable.
    pub fn platform(&self) -> Vec<u8> {
        let Ok(len) = self.read_u32(lr::PLATFORM_LEN_AT) else {
            return Vec::new();
        };
        let mut b = vec![0u8; (len as usize).min(lr::PLATFORM_MAX)];
        match pread_exact(&self.fd, &mut b, lr::PLATFORM_AT as u64) {
            Ok(()) => b,
            Err(_) => Vec::new(),
        }
    }

    /// Marks the ring read to its end (`STATE_DELIVERED`), so that a sink
    /// that finds it in the spool later removes it without delivering it
    /// again. Through the program's own open file description (the
    /// descriptor it sent, or the file opened read-write); a failure is
    /// ignored (the file is removed next anyway when it can be).
    pub fn mark_delivered(&self) {
        let _ = rustix::io::pwrite(
            &self.fd,
            &lr::STATE_DELIVERED.to_ne_bytes(),
            STATE_AT as u64,
        );
    }

    /// Notes that every record before `pos` was delivered (`READ_AT`);
    /// a failure is ignored (a later reader then repeats those records).
    fn set_read_at(&self, pos: u64) {
        let _ = rustix::io::pwrite(&self.fd, &pos.to_ne_bytes(), lr::READ_AT as u64);
    }

    /// Where reading from `p` really starts, given the ring's `head`: at
    /// the tail when it lies between (the program frees and zeroes padding
    /// at its tail once the frame before it is sent, so the last position
    /// received can point at zeroed memory the tail has passed; every
    /// position before the tail was sent or was padding), and at
    /// `READ_AT` when a sink that read the ring itself got further (its
    /// program may not have heard the answer that frees that space). Both
    /// are claims, ignored outside `p..=head`.
    fn start(&self, p: RingPosition, head: u64) -> RingPosition {
        let mut s = p;
        for c in [self.read_u64(TAIL_AT), self.read_at()]
            .into_iter()
            .flatten()
        {
            if c > s.pos && c <= head {
                s = RingPosition { pos: c, skip: 0 };
            }
        }
        s
    }

    /// Where a sink that read the ring itself got to (`READ_AT`, a claim).
    pub fn read_at(&self) -> io::Result<u64> {
        self.read_u64(lr::READ_AT)
    }

    fn read_u64(&self, at: usize) -> io::Result<u64> {
        let mut b = [0u8; 8];
        pread_exact(&self.fd, &mut b, at as u64)?;
        Ok(u64::from_ne_bytes(b))
    }

    fn read_u32(&self, at: usize) -> io::Result<u32> {
        let mut b = [0u8; 4];
        pread_exact(&self.fd, &mut b, at as u64)?;
        Ok(u32::from_ne_bytes(b))
    }

    pub fn head(&self) -> io::Result<u64> {
        self.read_u64(HEAD_AT)
    }

    pub fn owner(&self) -> io::Result<u64> {
        self.read_u64(OWNER_AT)
    }

    pub fn abandoned(&self) -> bool {
        self.read_u32(STATE_AT).ok() == Some(STATE_ABANDONED)
    }

    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// `p` is a place a frame may end at: record-aligned, at or before the
    /// head. (It may lie more than a capacity behind the head: frames
    /// queued in the socket while the sink is paused were sent, and their
    /// space reused; once the connection ended, and every queued frame was
    /// read, the span left is within a capacity, checked by the recovery.)
    fn check_position(&self, p: RingPosition) -> Result<(), String> {
        if p.pos % 8 != 0 {
            return Err(format!("position {} is not 8-aligned", p.pos));
        }
        if p.skip > u64::from(u32::MAX) {
            return Err(format!("position skips {} bytes of a record", p.skip));
        }
        let head = self.head().map_err(|e| format!("reading the head: {e}"))?;
        if p.pos > head {
            return Err(format!("position {} beyond the ring's head {head}", p.pos));
        }
        Ok(())
    }

    /// Slot `i` of the source table, or why it cannot be used.
    fn slot(&self, i: u32) -> Result<SourceSlot, String> {
        if i >= self.slots {
            return Err(format!("source slot {i} beyond the table's {}", self.slots));
        }
        let base = (CONTROL_SIZE + i as usize * SLOT_SIZE) as u64;
        let mut h = [0u8; SLOT_NAME_AT];
        pread_exact(&self.fd, &mut h, base).map_err(|e| format!("source slot {i}: {e}"))?;
        if ne_u32(&h, SLOT_READY_AT) != 1 {
            return Err(format!("source slot {i} is not ready"));
        }
        let len = ne_u32(&h, SLOT_NAME_LEN_AT) as usize;
        if len > SLOT_NAME_MAX {
            return Err(format!("source slot {i} claims a {len}-byte name"));
        }
        let mut name = vec![0u8; len];
        pread_exact(&self.fd, &mut name, base + SLOT_NAME_AT as u64)
            .map_err(|e| format!("source slot {i}: {e}"))?;
        if name.contains(&0) {
            return Err(format!("source slot {i}'s name holds a NUL"));
        }
        if name.first() == Some(&b'/') {
            name.remove(0);
        }
        Ok(SourceSlot {
            level: ne_u32(&h, SLOT_LEVEL_AT),
            name,
            drop_bytes: ne_u64(&h, SLOT_DROP_BYTES_AT),
            drop_writes: ne_u64(&h, SLOT_DROP_WRITES_AT),
        })
    }
}

/// A write the program had started or was committing when it died, as
/// its intent slot says (see `logtap_wire::ring`).
struct Intent {
    committing: bool,
    /// Committing: the position of its record.
    pos: u64,
    /// Committing: whether that record was delivered (received, or read
    /// by the walk).
    delivered: bool,
    src: u8,
    origin: WriteOrigin,
    data: Vec<u8>,
}

impl Ring {
    /// The intent slots that hold a write (in flight or committing), every
    /// field checked; slots that make no sense are skipped and counted.
    fn intents(&self) -> (Vec<Intent>, u64) {
        let mut v = Vec::new();
        let mut bad = 0;
        let base = lr::intents_offset(self.slots as usize) as u64;
        for i in 0..u64::from(self.intents) {
            let at = base + i * lr::INTENT_SIZE as u64;
            let mut h = [0u8; lr::INTENT_DATA_AT];
            if pread_exact(&self.fd, &mut h, at).is_err() {
                bad += 1;
                continue;
            }
            let committing = match ne_u32(&h, lr::INTENT_STATE_AT) {
                lr::INTENT_IDLE => continue,
                lr::INTENT_IN_FLIGHT => false,
                lr::INTENT_COMMITTING => true,
                _ => {
                    bad += 1;
                    continue;
                }
            };
            let len = ne_u64(&h, lr::INTENT_LEN_AT);
            let src = ne_u32(&h, lr::INTENT_SRC_AT);
            if len == 0 || len > lr::INTENT_DATA_MAX as u64 || src >= self.slots {
                bad += 1;
                continue;
            }
            let mut data = vec![0u8; len as usize];
            if pread_exact(&self.fd, &mut data, at + lr::INTENT_DATA_AT as u64).is_err() {
                bad += 1;
                continue;
            }
            v.push(Intent {
                committing,
                pos: ne_u64(&h, lr::INTENT_POS_AT),
                delivered: false,
                src: src as u8,
                origin: WriteOrigin {
                    time_ns: ne_u64(&h, lr::INTENT_TIME_AT),
                    pid: ne_u32(&h, lr::INTENT_PID_AT),
                },
                data,
            });
        }
        (v, bad)
    }
}

struct SourceSlot {
    level: u32,
    /// As in a frame's source field (leading `/` cut).
    name: Vec<u8>,
    drop_bytes: u64,
    drop_writes: u64,
}

/// Whether a frame is an attach frame: version 2, liblogtap's own source,
/// no entries.
pub fn is_attach(f: &Frame<'_>) -> bool {
    f.version == VERSION_RING && f.source == SELF_SOURCE.as_bytes() && f.data.is_empty()
}

/// A connection's relation to its program's ring.
#[derive(Default)]
enum State {
    /// No memfd received yet.
    #[default]
    Idle,
    /// A memfd that passed the checks arrived; its attach frame is
    /// being read.
    Offered(Ring),
    /// Attached: frames received up to `pos`.
    Attached {
        ring: Ring,
        pos: RingPosition,
        platform: Vec<u8>,
    },
    /// Nothing to recover on this connection (its descriptor, if any, is
    /// closed).
    Off,
}

/// What a connection knows of its program's ring.
pub struct Link {
    /// The token sent in this connection's hello.
    pub token: u64,
    state: State,
    extra_fds_said: bool,
    /// Lines to print (the server rate-limits them).
    pub notes: Vec<String>,
    /// Messages for the program (`lr::SinkMsg`), in order.
    pub replies: Vec<[u8; lr::SINK_MSG_LEN]>,
    /// Why the connection must end: a read request the sink cannot
    /// serve (the program would wait for its answer for ever).
    pub broken: Option<String>,
    /// Positions of read requests not served yet, oldest first (each asks
    /// for everything before it; served by [`Link::serve`]).
    asked: std::collections::VecDeque<u64>,
}

/// Read requests a connection may have waiting: liblogtap keeps at most
/// 16 unanswered.
const ASKED_MAX: usize = 64;

/// A ring whose connection ended, with where its frames stopped.
pub struct Ended {
    pub ring: Ring,
    pub pos: RingPosition,
    pub platform: Vec<u8>,
    pub token: u64,
}

impl Link {
    pub fn new(token: u64) -> Link {
        Link {
            token,
            state: State::Idle,
            extra_fds_said: false,
            notes: Vec::new(),
            replies: Vec::new(),
            broken: None,
            asked: std::collections::VecDeque::new(),
        }
    }

    fn off(&mut self, note: Option<String>) {
        self.state = State::Off;
        self.notes.extend(note);
    }

    /// Takes the descriptors one read brought: the first memfd of the
    /// connection is checked and kept, everything else closed.
    pub fn on_fds(&mut self, fds: Vec<OwnedFd>, truncated: bool) {
        if truncated && fds.is_empty() && matches!(self.state, State::Idle) {
            // Nothing arrived though something was sent: the kernel could
            // not install it (the sink at its open-file limit).
            return self.off(Some(
                "a descriptor it sent could not be received (MSG_CTRUNC; is the sink at its open-file limit?): nothing can be recovered from this connection"
                    .into(),
            ));
        }
        let mut extra = usize::from(truncated);
        for fd in fds {
            if matches!(self.state, State::Idle) {
                match Ring::check(fd) {
                    Ok(r) => self.state = State::Offered(r),
                    Err(e) => self.off(Some(format!(
                        "sent a descriptor that is not a usable ring ({e}): closed; its frames are still delivered, nothing can be recovered from it"
                    ))),
                }
            } else {
                extra += 1;
                drop(fd);
            }
        }
        if extra > 0 && !self.extra_fds_said {
            self.extra_fds_said = true;
            self.notes.push(
                "sent more file descriptors than its one ring: closed (further ones closed silently)"
                    .into(),
            );
        }
    }

    /// Follows one decoded frame; reads the records a read request names
    /// (the ring's own bytes, through `scratch`) into `to`.
    pub fn on_frame(&mut self, f: &Frame<'_>) {
        if f.version == VERSION_READ && !self.attached() {
            self.broken = Some("sent a read request, but the sink does not hold its ring".into());
            return;
        }
        if f.version == VERSION_RING && !self.asked.is_empty() {
            // Requests are served after the read that brought them: a
            // frame after one would be delivered before the records it
            // follows (liblogtap never sends one).
            self.broken = Some("sent a version-2 frame after a read request".into());
            return;
        }
        match std::mem::take(&mut self.state) {
            State::Idle if is_attach(f) => self.off(Some(
                "attach frame without a memfd: nothing can be recovered from this connection"
                    .into(),
            )),
            State::Offered(ring) if is_attach(f) => {
                let p = f.position.unwrap_or_default();
                if let Err(e) = ring.check_position(p) {
                    return self.off(Some(format!("attach frame: {e}; ring closed")));
                }
                match ring.owner() {
                    Ok(o) if o == self.token => {}
                    Ok(_) => {
                        return self.off(Some(
                            "attach frame: the ring's owner word is not this connection's token; ring closed"
                                .into(),
                        ))
                    }
                    Err(e) => return self.off(Some(format!("attach frame: {e}; ring closed"))),
                }
                self.state = State::Attached {
                    ring,
                    pos: p,
                    platform: f.platform.to_vec(),
                };
                // The program may now ask for its records to be read
                // from the ring instead of sending them.
                self.replies.push(lr::SinkMsg::Reading.to_bytes());
            }
            State::Attached {
                ring,
                pos,
                mut platform,
            } if f.version == VERSION_READ => {
                let p = f.position.unwrap_or_default();
                let last = self.asked.back().copied().unwrap_or(pos.pos);
                let bad = if p.skip != 0 {
                    Some(format!("position {} skips into a record", p.pos))
                } else if p.pos < last {
                    Some(format!("ring position went back from {last} to {}", p.pos))
                } else if self.asked.len() >= ASKED_MAX {
                    Some(format!("more than {ASKED_MAX} requests waiting"))
                } else {
                    ring.check_position(p).err()
                };
                if let Some(e) = bad {
                    // The ring stays: what the program wrote is still
                    // read at the end of the connection.
                    self.broken = Some(format!("read request: {e}"));
                } else {
                    self.asked.push_back(p.pos);
                    if platform != f.platform {
                        platform.clear();
                        platform.extend_from_slice(f.platform);
                    }
                }
                self.state = State::Attached {
                    ring,
                    pos,
                    platform,
                };
            }
            State::Attached { .. } if is_attach(f) => self.off(Some(
                "a second attach frame: ring closed, nothing will be recovered from it".into(),
            )),
            State::Attached {
                ring,
                pos,
                mut platform,
            } => {
                let Some(p) = f.position.filter(|_| f.version == VERSION_RING) else {
                    return self.off(Some(format!(
                        "version-{} frame after its ring was attached: ring closed, nothing will be recovered from it",
                        f.version
                    )));
                };
                if (p.pos, p.skip) < (pos.pos, pos.skip) {
                    return self.off(Some(format!(
                        "ring position went back from {} to {}: ring closed",
                        pos.pos, p.pos
                    )));
                }
                if let Err(e) = ring.check_position(p) {
                    return self.off(Some(format!("{e}: ring closed")));
                }
                if platform != f.platform {
                    platform.clear();
                    platform.extend_from_slice(f.platform);
                }
                self.state = State::Attached {
                    ring,
                    pos: p,
                    platform,
                };
            }
            other => self.state = other,
        }
    }

    /// After a read: a memfd whose attach frame neither came in this read
    /// nor is still arriving came without one.
    pub fn after_read(&mut self, mid_frame: bool) {
        if matches!(self.state, State::Offered(_)) && !mid_frame {
            self.off(Some("sent a memfd without an attach frame: closed".into()));
        }
    }

    pub fn attached(&self) -> bool {
        matches!(self.state, State::Attached { .. })
    }

    /// Whether read requests wait to be served.
    pub fn asked(&self) -> bool {
        !self.asked.is_empty()
    }

    /// Serves the waiting read requests: routes the records from where the
    /// connection's frames and requests got to up to the last request's
    /// position into `to`, reading at most about `budget` bytes of the
    /// ring (the rest on a later turn), then writes how far it got into
    /// the ring's `READ_AT` (for a later reader: the program frees that
    /// space only when the answer arrives) and answers every request
    /// served. Returns whether requests still wait, and the bytes read.
    pub fn serve<E: Emit>(
        &mut self,
        to: &mut Router<'_, E>,
        scratch: &mut Vec<u8>,
        budget: u64,
    ) -> (bool, u64) {
        let Some(&target) = self.asked.back() else {
            return (false, 0);
        };
        let State::Attached {
            ring,
            pos,
            platform,
        } = &mut self.state
        else {
            self.asked.clear();
            return (false, 0);
        };
        let was = pos.pos;
        let res = (|| -> Result<RingPosition, String> {
            let head = ring.head().map_err(|e| format!("reading the head: {e}"))?;
            if target > head {
                return Err(format!("position {target} beyond the ring's head {head}"));
            }
            if ring.state().ok() == Some(lr::STATE_DELIVERED) {
                // The spool's scan read this ring to its head already (its
                // program is gone, and the scan came first).
                return Ok(RingPosition {
                    pos: target,
                    skip: 0,
                });
            }
            let from = ring.start(*pos, head);
            if from.pos >= target {
                // Another connection's requests read it already (the
                // program reconnected before it heard their answers).
                return Ok(RingPosition {
                    pos: target,
                    skip: 0,
                });
            }
            if target - from.pos > ring.cap {
                return Err(format!(
                    "{} bytes asked for, more than the ring's capacity {}",
                    target - from.pos,
                    ring.cap
                ));
            }
            let mut r = Recovery::default();
            let got = walk(
                ring,
                from,
                (target, budget),
                platform,
                to,
                scratch,
                &mut r,
                &mut [],
            )?;
            ring.set_read_at(got.pos);
            Ok(got)
        })();
        match res {
            Ok(got) => {
                *pos = got;
                while self.asked.front().is_some_and(|&p| p <= got.pos) {
                    let p = self.asked.pop_front().expect("front");
                    self.replies.push(lr::SinkMsg::Read(p).to_bytes());
                }
                (!self.asked.is_empty(), got.pos.saturating_sub(was))
            }
            Err(e) => {
                // The ring stays attached at the last position served: what
                // the program wrote is read at the end of the connection.
                self.broken = Some(format!("read request: {e}"));
                self.asked.clear();
                (false, 0)
            }
        }
    }

    /// The connection ended: its ring and where its frames stopped, if it
    /// was attached.
    pub fn end(&mut self) -> Option<Ended> {
        match std::mem::replace(&mut self.state, State::Off) {
            State::Attached {
                ring,
                pos,
                platform,
            } => Some(Ended {
                ring,
                pos,
                platform,
                token: self.token,
            }),
            _ => None,
        }
    }
}

/// Whether the program of an ended connection is gone.
pub enum Life {
    /// Dead (or its pid never existed in this namespace).
    Dead,
    /// Alive; the pidfd polls readable when it dies (`None`: no pidfd,
    /// ask again later).
    Alive(Option<OwnedFd>),
}

/// Looks at process `pid` (as `SO_PEERCRED` gave it).
pub fn life(pid: u32) -> Life {
    let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return Life::Dead;
    };
    match rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => {
            if exited(&fd) {
                Life::Dead
            } else {
                Life::Alive(Some(fd))
            }
        }
        Err(Errno::SRCH) => Life::Dead,
        // No pidfds (old kernel, seccomp): ask kill(pid, 0).
        Err(_) => match rustix::process::test_kill_process(p) {
            Err(Errno::SRCH) => Life::Dead,
            _ => Life::Alive(None),
        },
    }
}

/// True once the process of `pidfd` has exited.
pub fn exited(pidfd: &OwnedFd) -> bool {
    let mut p = [rustix::event::PollFd::new(
        pidfd,
        rustix::event::PollFlags::IN,
    )];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut p, Some(&zero)), Ok(n) if n > 0)
}

/// Process `pid` still exists (for rings watched without a pidfd).
pub fn still_there(pid: u32) -> bool {
    let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    !matches!(rustix::process::test_kill_process(p), Err(Errno::SRCH))
}

/// What a recovery found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Data bytes delivered.
    pub bytes: u64,
    /// Writes (records) delivered.
    pub writes: u64,
    /// Reservations skipped (writes that never returned).
    pub reserved: u64,
    /// Drop notices delivered from the source table.
    pub notices: u64,
    /// Why the walk stopped before the head, if it did.
    pub stopped: Option<String>,
    /// Bytes from the last position to the head.
    pub span: u64,
    /// Writes the program had in flight (or was committing) when it died,
    /// delivered from its intent slots.
    pub in_flight: u64,
    /// Their bytes.
    pub in_flight_bytes: u64,
    /// Intent slots that made no sense (skipped).
    pub bad_intents: u64,
    /// Bytes of space reserved by writers that never stamped it (skipped
    /// up to the next header).
    pub unstamped: u64,
}

/// The bytes of the ring read so far: positions `start..start+len`.
struct Window<'b> {
    buf: &'b mut Vec<u8>,
    start: u64,
    len: usize,
}

impl Window<'_> {
    /// Ring bytes `pos..pos+n`, read (with more after them, up to the end
    /// of the ring's memory or the head) unless already held. The caller
    /// has checked that they lie before the head and do not wrap.
    fn get(&mut self, ring: &Ring, pos: u64, n: usize, head: u64) -> io::Result<&[u8]> {
        if pos < self.start || pos + n as u64 > self.start + self.len as u64 {
            let off = pos % ring.cap;
            let more = (CHUNK as u64).min(ring.cap - off).min(head - pos) as usize;
            let want = n.max(more);
            if self.buf.len() < want {
                self.buf.resize(want, 0);
            }
            self.len = 0;
            pread_exact(&ring.fd, &mut self.buf[..want], ring.data_offset + off)?;
            self.start = pos;
            self.len = want;
        }
        let at = (pos - self.start) as usize;
        Ok(&self.buf[at..at + n])
    }
}

/// Reads the records of `e.ring` from `e.pos` to its head into `frames`, as
/// if frames had carried them, then its unreported drop counters as drop
/// notices. `scratch` is the one buffer the copy goes to.
pub fn recover<E: Emit>(
    e: &Ended,
    frames: &mut FrameStream,
    origin: &Origin,
    out: &mut E,
    scratch: &mut Vec<u8>,
) -> Recovery {
    let mut r = Recovery::default();
    let (mut intents, bad) = e.ring.intents();
    r.bad_intents = bad;
    let head = e.ring.head();
    let from = match head {
        Ok(h) => e.ring.start(e.pos, h),
        Err(_) => e.pos,
    };
    for i in intents.iter_mut().filter(|i| i.committing) {
        // Before where the reading starts: its record was sent or read
        // (the program sends and asks for committed records only).
        i.delivered = i.pos < from.pos;
    }
    let mut to = frames.router(origin, out);
    r.stopped = match head {
        Err(err) => Some(format!("reading the head: {err}")),
        Ok(head) if head < from.pos || head - from.pos > e.ring.cap => Some(format!(
            "head {head} is not within a capacity ({}) after the last position received ({})",
            e.ring.cap, from.pos
        )),
        Ok(head) => {
            r.span = head - from.pos;
            walk(
                &e.ring,
                from,
                (head, u64::MAX),
                &e.platform,
                &mut to,
                scratch,
                &mut r,
                &mut intents,
            )
            .err()
        }
    };
    in_flight(e, &mut to, &mut r, &mut intents);
    notices(e, &mut to, &mut r);
    r
}

/// Delivers the writes of the intent slots whose records were not: every
/// in-flight one (its call had started: the kernel may have its bytes),
/// and every committing one whose record was neither received nor walked
/// (the program died before committing it). Oldest first.
fn in_flight<E: Emit>(e: &Ended, to: &mut Router<'_, E>, r: &mut Recovery, intents: &mut [Intent]) {
    intents.sort_by_key(|i| i.origin.time_ns);
    for i in intents.iter().filter(|i| !i.delivered) {
        let Ok(slot) = e.ring.slot(u32::from(i.src)) else {
            r.bad_intents += 1;
            continue;
        };
        r.in_flight += 1;
        r.in_flight_bytes += i.data.len() as u64;
        to.push(
            slot.level,
            &e.platform,
            &slot.name,
            Write {
                origin: Some(i.origin),
                data: &i.data,
            },
        );
    }
}

/// Routes the records of `ring` from `from` to `head` (which the caller
/// checked lies within a capacity after it) to `to`, stopping at the first
/// record boundary `limit` bytes or more after `from`. Returns where it
/// stopped.
#[allow(clippy::too_many_arguments)]
fn walk<E: Emit>(
    ring: &Ring,
    from: RingPosition,
    (head, limit): (u64, u64),
    platform: &[u8],
    to: &mut Router<'_, E>,
    scratch: &mut Vec<u8>,
    r: &mut Recovery,
    intents: &mut [Intent],
) -> Result<RingPosition, String> {
    let cap = ring.cap;
    let mut win = Window {
        buf: scratch,
        start: 0,
        len: 0,
    };
    let mut slots: Vec<Option<SourceSlot>> = Vec::new();
    slots.resize_with(ring.slots as usize, || None);
    let mut pos = from.pos;
    let mut skip = from.skip;
    while pos < head {
        if pos - from.pos >= limit {
            break;
        }
        let off = pos % cap;
        if head - pos < 8 {
            return Err(format!("head {head} cuts a record header at {pos}"));
        }
        let io = |e: io::Error| format!("reading the ring: {e}");
        let word = u64::from_ne_bytes(
            win.get(ring, pos, 8, head)
                .map_err(io)?
                .try_into()
                .expect("8 bytes"),
        );
        let fits = |size: u64| -> Result<(), String> {
            if size < 8 || size % 8 != 0 || off + size > cap || pos + size > head {
                Err(format!(
                    "record at {pos} of {size} bytes does not fit (head {head}, capacity {cap})"
                ))
            } else {
                Ok(())
            }
        };
        match decode_header(word) {
            Slot::Empty if skip == 0 => {
                // A writer killed (or stopped for good) between reserving
                // its space and stamping it: the space is as the consumer
                // freed it, zero to its end (it had copied nothing yet),
                // and the next record's header is the first word that is
                // not zero. Its write never returned (its bytes, if the
                // call was made, are in its intent slot).
                let mut end = pos + 8;
                // Within the walk's limit too: a request may name a whole
                // ring of zeros.
                while end < head && end - from.pos < limit {
                    let w = win.get(ring, end, 8, head).map_err(io)?;
                    if w != [0u8; 8] {
                        break;
                    }
                    end += 8;
                }
                r.reserved += 1;
                r.unstamped += end - pos;
                pos = end;
                continue;
            }
            Slot::Empty => {
                return Err(format!(
                    "no record header at {pos}, {} bytes before the head, where the position received skips into a record",
                    head - pos
                ))
            }
            Slot::Invalid => return Err(format!("invalid record header {word:#x} at {pos}")),
            Slot::Pad { size } | Slot::Reserved { size } => {
                fits(size)?;
                if skip != 0 {
                    return Err(format!("position {pos} skips into a record that is not one"));
                }
                // A reservation an intent slot names as its record is that
                // write, delivered from the slot after the walk: not a
                // write that never returned.
                if matches!(decode_header(word), Slot::Reserved { .. })
                    && !intents.iter().any(|i| i.committing && i.pos == pos)
                {
                    r.reserved += 1;
                }
                pos += size;
            }
            Slot::Record { src, len, size } => {
                fits(size)?;
                let i = usize::from(src);
                if i >= slots.len() {
                    return Err(format!(
                        "record at {pos} names source slot {src}, beyond the table's {}",
                        slots.len()
                    ));
                }
                if slots[i].is_none() {
                    slots[i] = Some(ring.slot(u32::from(src))?);
                }
                let slot = slots[i].as_ref().expect("read above");
                let rec = win.get(ring, pos, size as usize, head).map_err(io)?;
                let eh: &[u8; ENTRY_HEADER] = rec[8..8 + ENTRY_HEADER].try_into().expect("16");
                let eh = EntryHeader::from_bytes(eh);
                if eh.len != len {
                    return Err(format!(
                        "record at {pos}: entry length {} differs from its header's {len}",
                        eh.len
                    ));
                }
                if skip > u64::from(len) {
                    return Err(format!(
                        "position skips {skip} bytes of a {len}-byte record"
                    ));
                }
                let data = &rec[8 + ENTRY_HEADER + skip as usize..8 + ENTRY_HEADER + len as usize];
                for i in intents.iter_mut().filter(|i| i.committing && i.pos == pos) {
                    i.delivered = true;
                }
                r.bytes += data.len() as u64;
                r.writes += 1;
                to.push(
                    slot.level,
                    platform,
                    &slot.name,
                    Write {
                        origin: Some(WriteOrigin {
                            time_ns: eh.origin.time_ns,
                            pid: eh.origin.pid,
                        }),
                        data,
                    },
                );
                pos += size;
            }
        }
        skip = 0;
    }
    Ok(RingPosition { pos, skip })
}

/// The drop counters the program had not reported yet, as its own drop
/// notices would have said them.
fn notices<E: Emit>(e: &Ended, to: &mut Router<'_, E>, r: &mut Recovery) {
    let mut text = vec![0u8; SLOT_NAME_MAX + 80];
    for i in 0..e.ring.slots {
        let Ok(s) = e.ring.slot(i) else {
            continue;
        };
        if s.drop_bytes == 0 && s.drop_writes == 0 {
            continue;
        }
        let n = DropNotice {
            bytes: s.drop_bytes,
            writes: s.drop_writes,
            source: &s.name,
        };
        let Some(len) = n.write(&mut text) else {
            continue;
        };
        r.notices += 1;
        to.push(
            Level::Warn as u32,
            &e.platform,
            SELF_SOURCE.as_bytes(),
            Write {
                origin: None,
                data: &text[..len],
            },
        );
    }
}
