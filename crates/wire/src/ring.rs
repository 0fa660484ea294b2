//! The shared ring: liblogtap's buffer as the sink sees it.
//!
//! liblogtap keeps its buffer in a sealed `memfd`. A logtap-sink that
//! reads shared rings greets every connection with a [`Hello`]: four
//! bytes ([`SINK_HELLO`]) and a token naming the connection. On such a
//! connection the library stores the token in the ring's control block
//! ([`OWNER_AT`]) and hands the memfd over with `SCM_RIGHTS` in an attach
//! frame (a [`VERSION_RING`](crate::VERSION_RING) frame with no entries,
//! source [`SELF_SOURCE`](crate::SELF_SOURCE)). From then on every frame on
//! that connection is version 2 and ends with a [`RingPosition`]: where in
//! the ring the bytes after that frame start.
//!
//! When the connection ends while the owner token is still this
//! connection's (the library clears it before closing a connection on
//! purpose, and a newer connection replaces it), and the process is gone
//! or has marked the ring [`STATE_ABANDONED`] (it exec'd or is exiting),
//! the sink reads the records from the last position it received (or the
//! tail, when padding freed after that position moved it further) up to
//! the ring's head: what the program wrote but never sent. Nothing is read
//! twice, and nothing a write returned for is lost, even on SIGKILL.
//!
//! This module defines the memory layout once, for the writer (the
//! library's `src/ring.rs`) and the reader (the sink's recovery). It holds
//! numbers and pure functions only; the reader must treat every value it
//! loads from the mapping as a claim of a possibly hostile process.
//!
//! Layout of the memfd, all integers native-endian:
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | [`CONTROL_SIZE`] | control block (below) |
//! | [`CONTROL_SIZE`] | `slots * SLOT_SIZE` | source table |
//! | [`intents_offset`] | `intents * INTENT_SIZE` | intent table (below) |
//! | `data_offset` | `cap` | records |
//!
//! The intent table closes the one gap the records leave: a write copies
//! its bytes into the ring after its system call returns, and SIGKILL
//! takes effect as that call returns, so the kernel would have the write
//! and the ring not. A thread that writes owns one intent slot; before
//! the real call it copies the write's bytes there and marks the slot
//! [`INTENT_IN_FLIGHT`]; after the call it reserves the record, marks the
//! slot [`INTENT_COMMITTING`] with the count the call returned and the
//! record's position, commits the record, and marks the slot
//! [`INTENT_IDLE`]. A reader of a dead program's ring delivers an
//! in-flight slot's bytes (the call had started: the kernel may have
//! them), and a committing slot's first `len` bytes only when the record
//! at its position was neither received nor found committed.
//!
//! The memfd's size is exactly `data_offset + cap`, and it carries at least
//! the seals [`REQUIRED_SEALS`] (so it can never shrink under a reader).
//! A ring in the spool ([`SPOOL_SUFFIX`]) is a regular file of the same
//! size and layout that cannot be sealed: a reader must expect its reads
//! to come up short.

/// `control[MAGIC_AT..+8]`.
pub const MAGIC: u64 = u64::from_ne_bytes(*b"LLTRING\0");
/// The layout this module describes.
pub const LAYOUT_VERSION: u32 = 1;
/// What a logtap-sink that reads shared rings sends first on every
/// connection: the three letters and the [`LAYOUT_VERSION`] it reads.
pub const SINK_HELLO: [u8; 4] = [b'L', b'T', b'R', LAYOUT_VERSION as u8];
/// [`SINK_HELLO`] and the connection's token (native-endian `u64`, never
/// 0).
pub const HELLO_LEN: usize = 12;

/// The sink's greeting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub token: u64,
}

impl Hello {
    pub fn to_bytes(self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[..4].copy_from_slice(&SINK_HELLO);
        b[4..].copy_from_slice(&self.token.to_ne_bytes());
        b
    }

    /// `None` unless `b` is a greeting of this layout version with a
    /// token other than 0.
    pub fn parse(b: &[u8; HELLO_LEN]) -> Option<Hello> {
        if b[..4] != SINK_HELLO {
            return None;
        }
        let token = u64::from_ne_bytes(b[4..].try_into().expect("8 bytes"));
        (token != 0).then_some(Hello { token })
    }
}

/// Size of the control block at the start of the memfd.
pub const CONTROL_SIZE: usize = 4096;
/// `u64`: [`MAGIC`].
pub const MAGIC_AT: usize = 0;
/// `u32`: [`LAYOUT_VERSION`].
pub const VERSION_AT: usize = 8;
/// `u32`: number of source slots in the table.
pub const SLOTS_AT: usize = 12;
/// `u64`: offset of the record area (page-aligned).
pub const DATA_OFFSET_AT: usize = 16;
/// `u64`: size of the record area, a power of two.
pub const CAP_AT: usize = 24;
/// `u32` (atomic): [`STATE_LIVE`] or [`STATE_ABANDONED`] (or
/// [`STATE_DELIVERED`], written by a sink into a spooled ring).
pub const STATE_AT: usize = 32;
/// `u64` (atomic): the token of the connection the ring is attached to,
/// 0 when none (see the module's text).
pub const OWNER_AT: usize = 40;
/// `u32`: number of intent slots (after the source table).
pub const INTENTS_AT: usize = 48;
/// `u64` (atomic): next free record position (monotonic; reduce modulo
/// `cap`). Written by the program's writers.
pub const HEAD_AT: usize = 64;
/// `u64` (atomic): every position before it has been sent and freed.
/// Written by the program's sender. On its own cache line, apart from the
/// head.
pub const TAIL_AT: usize = 128;
/// `u64` (atomic): how many data bytes of the record at the tail have been
/// sent (a record larger than a frame goes in pieces), so that a sink
/// reading a spooled ring from its tail does not deliver them again.
/// Written by the program's sender: set to 0 before the tail moves to
/// another record, to the new count after (a process killed in between
/// makes a sink repeat those bytes, never skip unsent ones).
pub const TAIL_SKIP_AT: usize = 136;

/// `u64`: where a sink that reads the ring itself (see [`SinkMsg`]) has
/// delivered every record before (a record boundary), written by that
/// sink with `pwrite` after each read request it served and before its
/// answer. A sink reading a spooled ring of a dead program starts here
/// when it lies between the tail and the head: the program may have died
/// before it freed what the sink had already delivered. 0 in rings no
/// sink read itself.
pub const READ_AT: usize = 192;

/// `u32`: the pid of the process that made the ring, as it sees itself
/// (a claim; for the sink's messages about a spooled ring).
pub const PID_AT: usize = 52;
/// `u32`: bytes of [`PLATFORM_AT`] (at most [`PLATFORM_MAX`]).
pub const PLATFORM_LEN_AT: usize = 256;
/// The frames' platform field (`LLT_PLATFORM`), for a sink that finds the
/// ring in the spool with no connection to tell it.
pub const PLATFORM_AT: usize = 260;
/// The longest platform the control block holds.
pub const PLATFORM_MAX: usize = 64;

/// The program uses the ring and may still send what is in it.
pub const STATE_LIVE: u32 = 0;
/// The program will send nothing more from this ring (it has exec'd or
/// is exiting): whatever the sink has not received is the sink's to read.
pub const STATE_ABANDONED: u32 = 1;
/// Written by a sink into a spooled ring it has read to the end: nothing
/// in it is to be delivered again (the file is removed next; the mark
/// covers a sink that could not remove it).
pub const STATE_DELIVERED: u32 = 2;

/// The spool: where a program puts its ring when the spool directory
/// exists on tmpfs, so the ring outlives a process that no sink holds
/// (SIGKILLed while the sink is restarting or not yet started). By default
/// it is the directory named like the socket plus this suffix
/// (`/run/logtap/logtap.sock` → `/run/logtap/logtap.sock.spool`), made by
/// the sink, mode `01733`; the library never makes it. A ring in it is a regular file named `<pid>-<ns>.ring`
/// ([`SPOOL_RING_SUFFIX`]), mode 0640, created under a name starting with
/// a dot and renamed once its maker holds an `flock` (`LOCK_EX`) on it
/// (the control block is written next, under that lock). While any open file description of it holds that
/// lock (its program, or a sink it was handed to), it is live; a ring
/// nobody locks belongs to a process that is gone, and a sink reads it
/// from its tail to its head, marks it [`STATE_DELIVERED`] and removes it.
pub const SPOOL_SUFFIX: &str = ".spool";
/// The name ending of a spooled ring.
pub const SPOOL_RING_SUFFIX: &str = ".ring";
/// `<pid>.exec`: a spooled ring with nothing left in it, renamed so while
/// its process execs (renamed back if the exec fails). The next image of
/// that pid removes it; a sink removes one nobody locks without reading
/// it.
pub const SPOOL_EXEC_SUFFIX: &str = ".exec";
/// Mode of the spool directory: anyone may create a ring, nobody may list
/// the directory or remove another's file (sticky).
pub const SPOOL_MODE: u32 = 0o1733;

/// What a logtap-sink sends the program after its [`Hello`]: messages of
/// [`SINK_MSG_LEN`] bytes, the three letters `LTK`, the kind, four zero
/// bytes and a native-endian `u64`. A library that never reads them (an
/// older one) leaves them in its receive queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkMsg {
    /// Sent with the [`Hello`], in the same write: this sink reads a ring
    /// itself once it has taken one (so the library may wait a moment for
    /// [`SinkMsg::Reading`] after its attach frame; a sink that does not
    /// send this never says `Reading`).
    Reads,
    /// The sink took the ring of the connection's attach frame and reads
    /// it itself: the library may send [`crate::VERSION_READ`] requests
    /// instead of the bytes from now on (version-2 frames stay valid).
    Reading,
    /// The sink delivered every record before this position (the one of
    /// the read request it answers); the program may free that space.
    Read(u64),
}

/// Size of a [`SinkMsg`].
pub const SINK_MSG_LEN: usize = 16;
const SINK_MSG_TAG: [u8; 3] = *b"LTK";

impl SinkMsg {
    pub fn to_bytes(self) -> [u8; SINK_MSG_LEN] {
        let (kind, value) = match self {
            SinkMsg::Reading => (1u8, 0u64),
            SinkMsg::Reads => (3, 0),
            SinkMsg::Read(p) => (2, p),
        };
        let mut b = [0u8; SINK_MSG_LEN];
        b[..3].copy_from_slice(&SINK_MSG_TAG);
        b[3] = kind;
        b[8..].copy_from_slice(&value.to_ne_bytes());
        b
    }

    /// `None` for anything but a message of a known kind.
    pub fn parse(b: &[u8; SINK_MSG_LEN]) -> Option<SinkMsg> {
        if b[..3] != SINK_MSG_TAG || b[4..8] != [0; 4] {
            return None;
        }
        let value = u64::from_ne_bytes(b[8..].try_into().expect("8 bytes"));
        match b[3] {
            1 if value == 0 => Some(SinkMsg::Reading),
            3 if value == 0 => Some(SinkMsg::Reads),
            2 => Some(SinkMsg::Read(value)),
            _ => None,
        }
    }
}

/// Size of one source slot.
pub const SLOT_SIZE: usize = 4096 + 64;
/// The longest source name a slot holds.
pub const SLOT_NAME_MAX: usize = SLOT_SIZE - SLOT_NAME_AT;
/// `u32` (atomic) in a slot: 1 once the slot's other fields are written
/// (stored last, with Release), 0 while empty.
pub const SLOT_READY_AT: usize = 0;
/// `u32`: the source's level ([`crate::Level`] number).
pub const SLOT_LEVEL_AT: usize = 4;
/// `u32`: bytes of the name.
pub const SLOT_NAME_LEN_AT: usize = 8;
/// `u64` (atomic): bytes dropped for this source and not yet reported in
/// a drop notice.
pub const SLOT_DROP_BYTES_AT: usize = 16;
/// `u64` (atomic): writes dropped and not yet reported.
pub const SLOT_DROP_WRITES_AT: usize = 24;
/// The name (as in a frame's `source` field, before its leading `/` is cut).
pub const SLOT_NAME_AT: usize = 64;

/// Intent slots liblogtap lays out: one per writing thread, the first 64
/// threads (later ones go without, as a private ring does).
pub const INTENT_SLOTS: usize = 64;
/// Size of one intent slot: the 8 KiB writes of `yes`, perl and coreutils
/// fit, and so does a default stdio buffer (4 KiB) with the call's own
/// bytes after it. Only a slot in use has its pages in memory.
pub const INTENT_SIZE: usize = 16384;
/// `u32` (atomic) in an intent slot: [`INTENT_IDLE`], [`INTENT_IN_FLIGHT`]
/// or [`INTENT_COMMITTING`], stored last with Release.
pub const INTENT_STATE_AT: usize = 0;
/// `u32` (atomic): the owning thread's id (0: free). The program's own
/// bookkeeping; a reader ignores it.
pub const INTENT_OWNER_AT: usize = 4;
/// `u64`: the write's wall-clock time (ns), as its record carries it.
pub const INTENT_TIME_AT: usize = 8;
/// `u32`: the writer's pid, as its record carries it.
pub const INTENT_PID_AT: usize = 16;
/// `u32`: the write's source slot.
pub const INTENT_SRC_AT: usize = 20;
/// `u64`: in flight, the bytes handed to the call; committing, the bytes
/// it returned for (at most the former).
pub const INTENT_LEN_AT: usize = 24;
/// `u64`: committing: the position of the write's record.
pub const INTENT_POS_AT: usize = 32;
/// The write's bytes.
pub const INTENT_DATA_AT: usize = 64;
/// The largest write an intent slot holds; larger ones go without.
pub const INTENT_DATA_MAX: usize = INTENT_SIZE - INTENT_DATA_AT;
/// No write in progress (or one fully in the records).
pub const INTENT_IDLE: u32 = 0;
/// A write's system call has started or is running: its bytes are in the
/// slot, perhaps already in the kernel, not in the records.
pub const INTENT_IN_FLIGHT: u32 = 1;
/// The call returned `len` bytes; its record at `pos` is being committed.
pub const INTENT_COMMITTING: u32 = 2;

/// Seals the memfd must carry before a sink maps it: it can neither shrink
/// (a mapping over a truncated file faults) nor have its seals removed.
pub const REQUIRED_SEALS: u32 = F_SEAL_SEAL | F_SEAL_SHRINK;
/// `F_SEAL_SEAL` (Linux `fcntl.h`).
pub const F_SEAL_SEAL: u32 = 0x0001;
/// `F_SEAL_SHRINK`.
pub const F_SEAL_SHRINK: u32 = 0x0002;
/// `F_SEAL_GROW`.
pub const F_SEAL_GROW: u32 = 0x0004;

/// Each record starts with an 8-byte header word: `len` in bits 0–31,
/// the source slot in bits 32–39, and these flags.
pub const REC_COMMIT: u64 = 1 << 63;
/// With [`REC_COMMIT`]: padding of `len` bytes after the header word.
pub const REC_PAD: u64 = 1 << 62;
/// Reserved by a writer that has not finished: `len` is the most it may
/// hold, and the record's size is known, but not its bytes.
pub const REC_RESERVED: u64 = 1 << 61;
/// Size of a record's header word.
pub const REC_HEADER: usize = 8;

/// What one header word says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Zero: nothing stamped here yet (or freed).
    Empty,
    /// Padding: the next record starts `size` bytes further.
    Pad { size: u64 },
    /// A write not yet committed: skip `size` bytes.
    Reserved { size: u64 },
    /// A committed write of `len` bytes from source `src`; it is followed
    /// by its 16-byte entry header (origin) and its data, `size` in all
    /// with the header word.
    Record { src: u8, len: u32, size: u64 },
    /// Flags that no writer produces.
    Invalid,
}

/// Decodes a record header word.
pub fn decode_header(h: u64) -> Slot {
    let len = (h & 0xffff_ffff) as u32;
    let src = ((h >> 32) & 0xff) as u8;
    let flags = h & (REC_COMMIT | REC_PAD | REC_RESERVED);
    let rec = record_size(len as usize) as u64;
    match flags {
        0 if h == 0 => Slot::Empty,
        f if f == REC_COMMIT | REC_PAD => Slot::Pad {
            size: (REC_HEADER + round8(len as usize)) as u64,
        },
        REC_COMMIT => Slot::Record {
            src,
            len,
            size: rec,
        },
        REC_RESERVED => Slot::Reserved { size: rec },
        _ => Slot::Invalid,
    }
}

/// Header word of a committed record.
pub fn record_header(src: u8, len: u32) -> u64 {
    u64::from(len) | (u64::from(src) << 32) | REC_COMMIT
}

/// Header word of a reservation of up to `max` bytes.
pub fn reserved_header(src: u8, max: u32) -> u64 {
    u64::from(max) | (u64::from(src) << 32) | REC_RESERVED
}

/// Header word of padding whose total size (header word included) is
/// `size`.
pub fn pad_header(size: u64) -> u64 {
    (size - REC_HEADER as u64) | REC_PAD | REC_COMMIT
}

/// Bytes a record of `len` data bytes takes in the ring: header word, entry
/// header, data, rounded up to 8.
pub fn record_size(len: usize) -> usize {
    REC_HEADER + crate::ENTRY_HEADER + round8(len)
}

/// `n` rounded up to a multiple of 8.
pub fn round8(n: usize) -> usize {
    (n + 7) & !7
}

/// Where in a ring the next unsent byte lies: the record at `pos`, of
/// which the first `skip` data bytes were already sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RingPosition {
    pub pos: u64,
    pub skip: u64,
}

/// Size of a [`RingPosition`] at the end of a version-2 frame.
pub const POSITION_LEN: usize = 16;

impl RingPosition {
    pub fn to_bytes(self) -> [u8; POSITION_LEN] {
        let mut b = [0u8; POSITION_LEN];
        b[..8].copy_from_slice(&self.pos.to_ne_bytes());
        b[8..].copy_from_slice(&self.skip.to_ne_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; POSITION_LEN]) -> RingPosition {
        RingPosition {
            pos: u64::from_ne_bytes(b[..8].try_into().expect("8 bytes")),
            skip: u64::from_ne_bytes(b[8..].try_into().expect("8 bytes")),
        }
    }
}

/// Offset of the intent table for a table of `slots` sources: the control
/// block and the source table, rounded up to a page of 4 KiB.
pub fn intents_offset(slots: usize) -> usize {
    (CONTROL_SIZE + slots * SLOT_SIZE + 4095) & !4095
}

/// Offset of the record area for `slots` sources and `intents` intent
/// slots (page-aligned, since intent slots are pages).
pub fn data_offset_for(slots: usize, intents: usize) -> usize {
    intents_offset(slots) + intents * INTENT_SIZE
}

/// Offset of the record area of liblogtap's layout: `slots` sources and
/// [`INTENT_SLOTS`] intent slots.
pub fn data_offset(slots: usize) -> usize {
    data_offset_for(slots, INTENT_SLOTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_words_round_trip() {
        assert_eq!(decode_header(0), Slot::Empty);
        assert_eq!(
            decode_header(record_header(5, 13)),
            Slot::Record {
                src: 5,
                len: 13,
                size: (8 + 16 + 16) as u64
            }
        );
        assert_eq!(
            decode_header(reserved_header(1, 100)),
            Slot::Reserved {
                size: (8 + 16 + 104) as u64
            }
        );
        assert_eq!(decode_header(pad_header(48)), Slot::Pad { size: 48 });
        assert_eq!(decode_header(REC_PAD), Slot::Invalid);
        assert_eq!(decode_header(REC_RESERVED | REC_COMMIT | 4), Slot::Invalid);
        let p = RingPosition {
            pos: 1 << 40,
            skip: 77,
        };
        assert_eq!(RingPosition::from_bytes(&p.to_bytes()), p);
        assert_eq!(data_offset(68) % 4096, 0);
        let h = Hello { token: 0xfeed };
        assert_eq!(Hello::parse(&h.to_bytes()), Some(h));
        assert_eq!(Hello::parse(&Hello { token: 0 }.to_bytes()), None);
        assert!(data_offset(68) >= CONTROL_SIZE + 68 * SLOT_SIZE);
        assert_eq!(intents_offset(68) % 4096, 0);
        assert!(intents_offset(68) >= CONTROL_SIZE + 68 * SLOT_SIZE);
        assert_eq!(
            data_offset(68),
            intents_offset(68) + INTENT_SLOTS * INTENT_SIZE
        );
        assert_eq!(data_offset_for(68, 0), intents_offset(68));
        const { assert!(INTENT_DATA_MAX >= 4096 + 1024, "a stdio flush fits") };
    }
}
