//! A bounded multi-producer, single-consumer byte ring for tapped data.
//!
//! Writers (any thread, a signal handler, a vfork child) reserve space with
//! one compare-and-swap, copy, and publish the record by storing its header
//! with Release. No lock and no allocation, so a signal handler that
//! interrupts a writer on the same thread simply reserves the next record.
//! When the ring is full the reservation fails at once: the caller decides
//! between dropping (counted) and writing to the original destination.
//!
//! The memory is laid out as `logtap_wire::ring` defines it, once for the
//! library and the sink: a control block (magic, layout, sizes, state,
//! owner token, and the ring's head and tail, which this struct points
//! at), a source table (one slot per source: its level, its name, its
//! unreported drop counters), then the records. With a `socket:` target in
//! the logtap format that memory is a sealed memfd the sink also maps (see
//! `transport`), so what a write returned for survives the process.
//!
//! Records are 8-byte aligned: an 8-byte header word (`len | src << 32 |
//! flags`, the flags of `logtap_wire::ring`), the write's origin as a
//! 16-byte entry header of the wire's version 1 (`logtap_wire::EntryHeader`:
//! wall-clock time, the writer's pid, the length), then the data. The entry
//! header and the data lie together exactly as a version-1 frame carries
//! them, so a whole record goes onto the wire as one piece of memory, and a
//! reader of the ring alone (the sink, after the program died) finds each
//! record's time and pid next to its bytes. A pad record has the 8-byte
//! header only. A record never wraps; a pad record fills the end of the
//! ring instead. The consumer zeroes what it consumed before handing the
//! space back, so a header slot reads 0 until its writer commits.
//!
//! A ring in the spool (`transport::spool`) is a file on tmpfs, whose
//! pages a full filesystem cannot allocate on first touch (the kernel
//! answers with SIGBUS). Its pages are allocated before the ring first
//! touches them: the records ahead of the head here (`frontier`), the
//! intent slots as threads claim them (`back_intent`); the control block
//! and source table when the file is made.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};
use logtap_wire::ring as lay;
use logtap_wire::{EntryHeader, Level, WriteOrigin, ENTRY_HEADER};

const COMMIT: u64 = lay::REC_COMMIT;
const PAD: u64 = lay::REC_PAD;
/// Reserved by a writer, not yet committed (see `Ring::reserve`).
const RESERVED: u64 = lay::REC_RESERVED;
const HDR: usize = lay::REC_HEADER;
/// The entry header (origin and length) between a record's header and data.
const META: usize = ENTRY_HEADER;

/// The control block of a ring that has none yet (the placeholder before
/// the constructor maps the real one): its head and tail read 0.
#[repr(C, align(64))]
struct NoControl([AtomicU64; lay::TAIL_AT / 8 + 8]);
static NO_CONTROL: NoControl = NoControl([const { AtomicU64::new(0) }; lay::TAIL_AT / 8 + 8]);

pub struct Ring {
    /// Start of the whole layout: control block, source table, records.
    ctl: *mut u8,
    /// The records (`ctl + data_offset`).
    base: *mut u8,
    cap: usize,
    /// Slots in the source table.
    slots: usize,
    /// Record offsets below this are allocated (`u64::MAX`: all, as in
    /// any ring that is not spooled). Offsets at or past it were never
    /// touched, and nothing touches them before it passes them.
    frontier: AtomicU64,
    /// Intent slots `0..n` are allocated.
    intents_backed: AtomicU32,
    /// `LLT_DEBUG_MODE` was told that an allocation failed.
    starved_said: AtomicBool,
    /// No allocation is tried before this (ms, monotonic).
    retry_at: AtomicU64,
}

/// Records of a spooled ring are allocated this much at a time (the
/// first step when the file is made).
pub const BACK_STEP: u64 = 64 << 10;

// SAFETY: all shared state is reached through atomics; record bytes are
// written only by the thread that reserved them and read by the consumer
// only after the Release/Acquire handshake on the header.
unsafe impl Sync for Ring {}
unsafe impl Send for Ring {}

/// Space reserved by a writer; `data` has room for the reserved length.
pub struct Reservation {
    /// The record's position (the header word's).
    pub pos: u64,
    end: u64,
    /// The header stamped at reservation time.
    stamp: u64,
    pub data: *mut u8,
}

/// A committed record as the consumer sees it.
#[derive(Clone, Copy, Debug)]
pub struct Record {
    pub pos: u64,
    pub src: u8,
    /// The record's entry header, immediately followed by its data:
    /// `ENTRY_HEADER + len` bytes as a version-1 frame carries them.
    pub entry: *const u8,
    pub data: *const u8,
    pub len: usize,
    /// Position of the next record.
    pub next: u64,
}

#[inline]
fn round8(n: usize) -> usize {
    lay::round8(n)
}

impl Ring {
    /// The placeholder before the constructor maps a ring: capacity 0,
    /// never pushed to (`max_record` is 0), head and tail 0.
    pub const fn none() -> Ring {
        Ring {
            ctl: &NO_CONTROL as *const NoControl as *mut u8,
            base: core::ptr::null_mut(),
            cap: 0,
            slots: 0,
            frontier: AtomicU64::new(u64::MAX),
            intents_backed: AtomicU32::new(lay::INTENT_SLOTS as u32),
            starved_said: AtomicBool::new(false),
            retry_at: AtomicU64::new(0),
        }
    }

    /// Bytes the layout of a ring of `cap` bytes with `slots` sources
    /// takes: control block, source table, records.
    pub fn layout_size(cap: usize, slots: usize) -> usize {
        lay::data_offset(slots) + cap
    }

    /// An empty ring laid out over `mem`: writes its control block.
    ///
    /// # Safety
    /// `mem` must be `layout_size(cap, slots)` writable zeroed bytes,
    /// page-aligned, `cap` a power of two, and outlive the ring; `slots`
    /// at most 256.
    pub unsafe fn format(mem: *mut u8, cap: usize, slots: usize) -> Ring {
        let off = lay::data_offset(slots);
        let w = |at: usize, v: u64| (mem.add(at) as *mut u64).write(v);
        w(lay::MAGIC_AT, lay::MAGIC);
        (mem.add(lay::VERSION_AT) as *mut u32).write(lay::LAYOUT_VERSION);
        (mem.add(lay::SLOTS_AT) as *mut u32).write(slots as u32);
        (mem.add(lay::INTENTS_AT) as *mut u32).write(lay::INTENT_SLOTS as u32);
        w(lay::DATA_OFFSET_AT, off as u64);
        w(lay::CAP_AT, cap as u64);
        (mem.add(lay::STATE_AT) as *mut u32).write(lay::STATE_LIVE);
        w(lay::OWNER_AT, 0);
        w(lay::HEAD_AT, 0);
        w(lay::TAIL_AT, 0);
        Ring::attach(mem, cap, slots)
    }

    /// The ring whose layout (written by `format`) lies at `mem`.
    ///
    /// # Safety
    /// As for `format`, with the control block already written.
    pub unsafe fn attach(mem: *mut u8, cap: usize, slots: usize) -> Ring {
        Ring {
            ctl: mem,
            base: mem.add(lay::data_offset(slots)),
            cap,
            slots,
            frontier: AtomicU64::new(u64::MAX),
            intents_backed: AtomicU32::new(lay::INTENT_SLOTS as u32),
            starved_said: AtomicBool::new(false),
            retry_at: AtomicU64::new(0),
        }
    }

    /// The memory is a spooled file whose control block and source table
    /// are allocated, and its first `records` record bytes (a multiple of
    /// `BACK_STEP`): the rest is allocated before first use.
    pub fn set_spooled(&self, records: usize) {
        self.intents_backed.store(0, SeqCst);
        let f = records as u64;
        self.frontier
            .store(if f >= self.cap as u64 { u64::MAX } else { f }, SeqCst);
    }

    /// Allocates the spooled file's bytes `off..off+len` of the layout,
    /// through the mapping (`MADV_POPULATE_WRITE` fails where a touch
    /// would fault, and needs no fd: one the program replaced could only
    /// mislead the free-space check); false when it cannot, or when the
    /// filesystem would be left with less than an eighth of its size free.
    /// After a failure, no new attempt for 100 ms: a full spool costs a
    /// write one load, not two system calls.
    fn allocate(&self, off: usize, len: usize) -> bool {
        let now = crate::sys::now_ms();
        if now < self.retry_at.load(Relaxed) {
            return false;
        }
        let _e = crate::sys::ErrnoGuard::new();
        // The layout's regions are 4 KiB-aligned; on a kernel with larger
        // pages (arm64 16 or 64 KiB) the range is widened to whole pages,
        // which only allocates some of this ring's own bytes early.
        // SAFETY: getauxval has no preconditions.
        let page = (unsafe { libc::getauxval(libc::AT_PAGESZ) } as usize).max(4096);
        let start = off / page * page;
        let end = (off + len)
            .div_ceil(page)
            .saturating_mul(page)
            .min(self.mapping().1);
        let spool = crate::transport::spool::room_for(crate::fds::ring_fd(), len)
            // SAFETY: `start..end` lies inside this ring's shared mapping
            // (whose size is a multiple of the page: mmap rounds it), and
            // is page-aligned.
            && unsafe {
                libc::madvise(
                    self.ctl.add(start) as *mut libc::c_void,
                    end - start,
                    crate::transport::spool::MADV_POPULATE_WRITE,
                ) == 0
            };
        if !spool {
            self.retry_at.store(now + 100, Relaxed);
        }
        spool
    }

    /// Makes record offsets up to `end` allocated (in steps, to the
    /// capacity at most); false when they cannot be.
    #[cold]
    fn back_records(&self, end: u64) -> bool {
        let cap = self.cap as u64;
        let target = if end >= cap {
            cap
        } else {
            end.div_ceil(BACK_STEP).saturating_mul(BACK_STEP).min(cap)
        };
        let from = self.frontier.load(Acquire);
        if from >= target {
            return true;
        }
        let data = lay::data_offset(self.slots);
        if !self.allocate(data + from as usize, (target - from) as usize) {
            if !self.starved_said.swap(true, Relaxed) {
                let mut a = [0u8; 20];
                crate::debug(&[
                    b"the spool's filesystem is full (or nearly): the ring keeps to the ",
                    crate::sys::fmt_u64(from, &mut a),
                    b" bytes of records it has until there is room",
                ]);
            }
            return false;
        }
        self.frontier
            .fetch_max(if target == cap { u64::MAX } else { target }, AcqRel);
        true
    }

    /// Makes intent slot `i` allocated (with every slot before it);
    /// false when it cannot be.
    pub fn back_intent(&self, i: usize) -> bool {
        let have = self.intents_backed.load(Acquire) as usize;
        if i < have {
            return true;
        }
        let at = lay::intents_offset(self.slots);
        if !self.allocate(
            at + have * lay::INTENT_SIZE,
            (i + 1 - have) * lay::INTENT_SIZE,
        ) {
            return false;
        }
        self.intents_backed.fetch_max(i as u32 + 1, AcqRel);
        true
    }

    /// Intent slots `0..n` may be read (allocated).
    pub fn intents_backed(&self) -> usize {
        self.intents_backed.load(Acquire) as usize
    }

    /// Whether a record of `max` bytes can be placed at all once the
    /// consumer has freed space: not when a spooled ring could allocate
    /// less than it needs.
    pub fn could_hold(&self, max: usize) -> bool {
        let need = (HDR + META + round8(max) + HDR) as u64;
        let limit = self.frontier.load(Relaxed);
        limit == u64::MAX || need <= limit || self.back_records(need)
    }

    /// Records who made the ring, for a sink that finds it in the spool
    /// with no connection to say so: the pid and the frames' platform.
    pub fn set_maker(&self, pid: u32, platform: &[u8]) {
        if self.cap == 0 {
            return;
        }
        let n = platform.len().min(lay::PLATFORM_MAX);
        // SAFETY: fields of the control block, written before the ring is
        // handed to anyone (constructor, fork child).
        unsafe {
            (self.ctl.add(lay::PID_AT) as *mut u32).write_volatile(pid);
            core::ptr::copy_nonoverlapping(platform.as_ptr(), self.ctl.add(lay::PLATFORM_AT), n);
            (self.ctl.add(lay::PLATFORM_LEN_AT) as *mut u32).write_volatile(n as u32);
        }
    }

    /// The whole layout's start and size (for `munmap`/`mremap`).
    pub fn mapping(&self) -> (*mut u8, usize) {
        (self.ctl, lay::data_offset(self.slots) + self.cap)
    }

    #[inline]
    fn ctl64(&self, at: usize) -> &AtomicU64 {
        // SAFETY: `at` is one of the layout's 8-aligned control words,
        // inside the control block (or the placeholder's).
        unsafe { &*(self.ctl.add(at) as *const AtomicU64) }
    }

    #[inline]
    fn head_w(&self) -> &AtomicU64 {
        self.ctl64(lay::HEAD_AT)
    }

    #[inline]
    fn tail_w(&self) -> &AtomicU64 {
        self.ctl64(lay::TAIL_AT)
    }

    fn state_w(&self) -> Option<&AtomicU32> {
        // SAFETY: the state word of a mapped control block.
        (self.cap > 0).then(|| unsafe { &*(self.ctl.add(lay::STATE_AT) as *const AtomicU32) })
    }

    /// `STATE_LIVE` or `STATE_ABANDONED` (see `logtap_wire::ring`).
    pub fn set_state(&self, st: u32) {
        if let Some(w) = self.state_w() {
            w.store(st, SeqCst);
        }
    }

    pub fn state(&self) -> u32 {
        self.state_w().map_or(lay::STATE_LIVE, |w| w.load(SeqCst))
    }

    /// The connection the sink may read this ring for (0: none).
    pub fn set_owner(&self, token: u64) {
        if self.cap > 0 {
            self.ctl64(lay::OWNER_AT).store(token, Release);
        }
    }

    pub fn owner(&self) -> u64 {
        if self.cap > 0 {
            self.ctl64(lay::OWNER_AT).load(Acquire)
        } else {
            0
        }
    }

    /// Where a sink that reads this ring itself last said it delivered
    /// every record before (`logtap_wire::ring::READ_AT`; 0: none). Written
    /// by the sink: a claim, used only when it equals a position this
    /// process asked it to read up to.
    pub fn read_by_sink(&self) -> u64 {
        if self.cap > 0 {
            self.ctl64(lay::READ_AT).load(Acquire)
        } else {
            0
        }
    }

    /// Clears the owner word if it still names `token`.
    pub fn disown(&self, token: u64) {
        if self.cap > 0 && token != 0 {
            let _ = self
                .ctl64(lay::OWNER_AT)
                .compare_exchange(token, 0, AcqRel, Relaxed);
        }
    }

    fn slot(&self, src: u8) -> Option<*mut u8> {
        let i = src as usize;
        // SAFETY: slot `i` lies inside the source table.
        (i < self.slots).then(|| unsafe { self.ctl.add(lay::CONTROL_SIZE + i * lay::SLOT_SIZE) })
    }

    fn slot64(&self, src: u8, at: usize) -> Option<&AtomicU64> {
        // SAFETY: an 8-aligned word inside the slot.
        self.slot(src)
            .map(|s| unsafe { &*(s.add(at) as *const AtomicU64) })
    }

    /// Fills the slot of `src` (level, name) and marks it ready, the ready
    /// flag last. No allocation, no lock: callable from a hook. A name
    /// longer than a slot holds is cut.
    pub fn set_source(&self, src: u8, level: Level, name: &[u8]) {
        let Some(s) = self.slot(src) else {
            return;
        };
        let n = name.len().min(lay::SLOT_NAME_MAX);
        // SAFETY: the slot's fields, inside the table; a slot is written
        // by the one thread that registers its source, before any record
        // of it exists, and read by the sink only after the ready flag.
        unsafe {
            (s.add(lay::SLOT_LEVEL_AT) as *mut u32).write_volatile(level as u32);
            (s.add(lay::SLOT_NAME_LEN_AT) as *mut u32).write_volatile(n as u32);
            core::ptr::copy_nonoverlapping(name.as_ptr(), s.add(lay::SLOT_NAME_AT), n);
            (*(s.add(lay::SLOT_READY_AT) as *const AtomicU32)).store(1, Release);
        }
    }

    /// Copies the source table of `other` (a fork child's new ring takes
    /// its parent's sources; the drop counters start at 0).
    pub fn copy_sources(&self, other: &Ring) {
        for src in 0..self.slots.min(other.slots) {
            let (Some(from), Some(to)) = (other.slot(src as u8), self.slot(src as u8)) else {
                continue;
            };
            // SAFETY: two slots of two distinct mappings.
            unsafe {
                if (*(from.add(lay::SLOT_READY_AT) as *const AtomicU32)).load(Acquire) == 0 {
                    continue;
                }
                let n = (from.add(lay::SLOT_NAME_LEN_AT) as *const u32).read() as usize;
                let n = n.min(lay::SLOT_NAME_MAX);
                core::ptr::copy_nonoverlapping(
                    from.add(lay::SLOT_LEVEL_AT),
                    to.add(lay::SLOT_LEVEL_AT),
                    8,
                );
                core::ptr::copy_nonoverlapping(
                    from.add(lay::SLOT_NAME_AT),
                    to.add(lay::SLOT_NAME_AT),
                    n,
                );
                (*(to.add(lay::SLOT_READY_AT) as *const AtomicU32)).store(1, Release);
            }
        }
    }

    /// Intent slot `i` (see `logtap_wire::ring`), or `None` beyond the
    /// table (or in the placeholder ring).
    pub fn intent(&self, i: usize) -> Option<*mut u8> {
        // SAFETY: slot `i` lies inside the intent table.
        (self.cap > 0 && i < lay::INTENT_SLOTS).then(|| unsafe {
            self.ctl
                .add(lay::intents_offset(self.slots) + i * lay::INTENT_SIZE)
        })
    }

    /// Counts bytes and writes of `src` lost to the target.
    pub fn add_drops(&self, src: u8, bytes: u64, writes: u64) {
        if let (Some(b), Some(w)) = (
            self.slot64(src, lay::SLOT_DROP_BYTES_AT),
            self.slot64(src, lay::SLOT_DROP_WRITES_AT),
        ) {
            b.fetch_add(bytes, Relaxed);
            // Release: a reader that sees the writes sees their bytes.
            w.fetch_add(writes, Release);
        }
    }

    /// Takes the unreported drops of `src`: (bytes, writes).
    pub fn take_drops(&self, src: u8) -> (u64, u64) {
        match (
            self.slot64(src, lay::SLOT_DROP_BYTES_AT),
            self.slot64(src, lay::SLOT_DROP_WRITES_AT),
        ) {
            (Some(b), Some(w)) if w.load(Acquire) != 0 => (b.swap(0, Relaxed), w.swap(0, AcqRel)),
            _ => (0, 0),
        }
    }

    /// Whether any source has unreported drops.
    pub fn drops_pending(&self) -> bool {
        (0..self.slots).any(|s| {
            self.slot64(s as u8, lay::SLOT_DROP_WRITES_AT)
                .is_some_and(|w| w.load(Relaxed) != 0)
        })
    }

    pub fn base(&self) -> *mut u8 {
        self.base
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Largest data length a single record may hold.
    pub fn max_record(&self) -> usize {
        (self.cap / 2).saturating_sub(HDR + META)
    }

    #[inline]
    fn at(&self, pos: u64) -> *mut u8 {
        // SAFETY: masked into [0, cap).
        unsafe { self.base.add(pos as usize & (self.cap - 1)) }
    }

    #[inline]
    fn header(&self, pos: u64) -> &AtomicU64 {
        // SAFETY: positions are 8-aligned and inside the mapping.
        unsafe { &*(self.at(pos) as *const AtomicU64) }
    }

    /// Bytes reserved and not yet released.
    pub fn used(&self) -> u64 {
        self.head_w()
            .load(Relaxed)
            .wrapping_sub(self.tail_w().load(Relaxed))
    }

    pub fn head(&self) -> u64 {
        self.head_w().load(SeqCst)
    }

    pub fn tail(&self) -> u64 {
        self.tail_w().load(Acquire)
    }

    /// Appends one record made of `parts` (total `len` bytes) written at
    /// `origin`. Returns the bytes in use after the append, or `None` when
    /// it does not fit.
    pub fn push(&self, src: u8, parts: &[&[u8]], len: usize, origin: WriteOrigin) -> Option<u64> {
        let r = self.reserve(src, len)?;
        // SAFETY: the reservation holds `len` bytes for us alone.
        unsafe {
            let mut dst = r.data;
            for p in parts {
                core::ptr::copy_nonoverlapping(p.as_ptr(), dst, p.len());
                dst = dst.add(p.len());
            }
        }
        Some(self.commit(r, len, origin))
    }

    /// Reserves room for a record of `src` of up to `max` bytes, filled
    /// through `Reservation::data` and published by `commit`. Until then
    /// the consumer waits at this record, so hold it only across calls that
    /// cannot block.
    ///
    /// The header is stamped `RESERVED` with the size at once, so that a
    /// reservation whose writer never comes back (a signal handler that
    /// `longjmp`s out of a push) can be abandoned by the consumer instead
    /// of stalling the ring for ever.
    pub fn reserve(&self, src: u8, max: usize) -> Option<Reservation> {
        if max > self.max_record() {
            return None;
        }
        let total = (HDR + META + round8(max)) as u64;
        let cap = self.cap as u64;
        let mut h = self.head_w().load(Relaxed);
        let (start, end) = loop {
            let off = h & (cap - 1);
            let to_end = cap - off;
            let mut start = if total <= to_end { h } else { h + to_end };
            let limit = self.frontier.load(Relaxed);
            let at = start & (cap - 1);
            // Room for a pad header after the record too: the head never
            // rests on the frontier, where a pad could not be written.
            let need = at + total + HDR as u64;
            if need > limit && !self.back_records(need) {
                // A spooled ring whose filesystem has no more room: wrap
                // early, inside what is allocated (the pad from here to
                // the end of the ring is a header alone), as a smaller
                // ring would.
                if total + HDR as u64 > limit {
                    return None;
                }
                start = h + to_end;
            }
            let end = start + total;
            if end - self.tail_w().load(Acquire) > cap {
                return None;
            }
            // SeqCst: pairs with the consumer's SeqCst store of its sleep
            // state, so either it sees this head or we see it asleep.
            match self.head_w().compare_exchange_weak(h, end, SeqCst, Relaxed) {
                Ok(_) => break (start, end),
                Err(now) => h = now,
            }
        };
        let stamp = max as u64 | (u64::from(src) << 32) | RESERVED;
        self.header(start).store(stamp, Release);
        if start != h {
            self.header(h)
                .store(((start - h) as usize - HDR) as u64 | PAD | COMMIT, Release);
        }
        // SAFETY: [start, end) is reserved for us alone and inside the ring.
        let data = unsafe { self.at(start).add(HDR + META) };
        Some(Reservation {
            pos: start,
            end,
            stamp,
            data,
        })
    }

    /// Publishes the first `len` reserved bytes, written at `origin`; the
    /// unused rest becomes a pad record. Returns the bytes in use.
    pub fn commit(&self, r: Reservation, len: usize, origin: WriteOrigin) -> u64 {
        let src = (r.stamp >> 32) & 0xff;
        let used_end = r.pos + (HDR + META + round8(len)) as u64;
        let record = if len == 0 {
            // Nothing to carry: the whole reservation is padding.
            (r.end - r.pos - HDR as u64) | PAD | COMMIT
        } else {
            if used_end < r.end {
                // Stored before the record's own header, so the consumer
                // never reaches it before it is written.
                self.header(used_end)
                    .store((r.end - used_end - HDR as u64) | PAD | COMMIT, Release);
            }
            let entry = EntryHeader {
                origin,
                len: len as u32,
            }
            .to_bytes();
            // SAFETY: the reservation's META bytes after its header are ours;
            // they are published with the header's Release store below.
            unsafe {
                core::ptr::copy_nonoverlapping(entry.as_ptr(), self.at(r.pos).add(HDR), META)
            };
            len as u64 | (src << 32) | COMMIT
        };
        // A plain store: a compare-and-swap (or even a load first) on a line
        // the consumer is reading costs 20-40 ns a write. The consumer
        // abandons only a reservation pending for seconds, whose writer
        // left it for good (a longjmp out of a signal handler); a writer
        // that came back after that would publish into space already
        // reused, a case the 2 s threshold leaves to a thread stopped
        // alone mid-copy for that long.
        self.header(r.pos).store(record, Release);
        r.end - self.tail_w().load(Relaxed)
    }

    /// Gives up on the reservation at `pos`, whose writer has not committed
    /// it for a long time: it becomes padding. Returns its source and
    /// reserved size (what was lost), or `None` if it is not a pending
    /// reservation (committed meanwhile, or not stamped). Consumer only.
    pub fn abandon(&self, pos: u64) -> Option<(u8, usize)> {
        let h = self.header(pos).load(Acquire);
        if h & RESERVED == 0 || h & COMMIT != 0 || pos >= self.head_w().load(Acquire) {
            return None;
        }
        let len = (h & 0xffff_ffff) as usize;
        let pad = (META + round8(len)) as u64 | PAD | COMMIT;
        self.header(pos)
            .compare_exchange(h, pad, AcqRel, Relaxed)
            .ok()?;
        Some((((h >> 32) & 0xff) as u8, len))
    }

    /// The committed record at `pos`, skipping pad records; `None` if the
    /// record there is not committed yet or `pos` is at the head.
    pub fn peek(&self, mut pos: u64) -> Option<Record> {
        loop {
            if pos >= self.head_w().load(Acquire) {
                return None;
            }
            let h = self.header(pos).load(Acquire);
            if h & COMMIT == 0 {
                return None;
            }
            let len = (h & 0xffff_ffff) as usize;
            if h & PAD != 0 {
                pos += (HDR + round8(len)) as u64;
                continue;
            }
            let next = pos + (HDR + META + round8(len)) as u64;
            // SAFETY: the record lies inside the ring (it never wraps).
            let entry = unsafe { self.at(pos).add(HDR) as *const u8 };
            return Some(Record {
                pos,
                src: ((h >> 32) & 0xff) as u8,
                entry,
                // SAFETY: as above; the data follows the entry header.
                data: unsafe { entry.add(META) },
                len,
                next,
            });
        }
    }

    /// The first position at or after `pos` that is not a committed pad
    /// record (the head at most). Consumer only.
    pub fn past_pads(&self, mut pos: u64) -> u64 {
        while pos < self.head_w().load(Acquire) {
            let h = self.header(pos).load(Acquire);
            if h & (COMMIT | PAD) != COMMIT | PAD {
                break;
            }
            pos += (HDR + round8((h & 0xffff_ffff) as usize)) as u64;
        }
        pos
    }

    /// Frees committed pad records at the tail (a shortened or empty
    /// reservation leaves one; no frame ever covers it). Consumer only.
    pub fn release_pads(&self) {
        let mut pos = self.tail_w().load(Relaxed);
        while pos < self.head_w().load(Acquire) {
            let h = self.header(pos).load(Acquire);
            if h & (COMMIT | PAD) != COMMIT | PAD {
                break;
            }
            pos += (HDR + round8((h & 0xffff_ffff) as usize)) as u64;
        }
        self.release(pos);
    }

    /// Returns [tail, upto) to the writers. Consumer only.
    /// Frees every position before `pos`, where `skip` data bytes of the
    /// record there have been sent: both published for a sink that reads
    /// a spooled ring from its tail (`logtap_wire::ring::TAIL_SKIP_AT`).
    pub fn release_to(&self, pos: u64, skip: usize) {
        if pos > self.tail_w().load(Relaxed) {
            // Never a moved tail with the old record's count: a sink would
            // skip bytes of the new record that were not sent.
            self.ctl64(lay::TAIL_SKIP_AT).store(0, Release);
            self.release(pos);
        }
        self.ctl64(lay::TAIL_SKIP_AT).store(skip as u64, Release);
    }

    pub fn release(&self, upto: u64) {
        let tail = self.tail_w().load(Relaxed);
        if upto <= tail {
            return;
        }
        let cap = self.cap as u64;
        // Offsets past the frontier were never written (a spooled ring's
        // early wrap pads over them): not touched, so never allocated.
        let limit = self.frontier.load(Acquire).min(cap);
        let mut p = tail;
        while p < upto {
            let off = p & (cap - 1);
            let n = (upto - p).min(cap - off);
            let z = n.min(limit.saturating_sub(off));
            // SAFETY: [p, p+z) is consumed, allocated and inside the ring.
            unsafe { core::ptr::write_bytes(self.at(p), 0, z as usize) };
            p += n;
        }
        self.tail_w().store(upto, Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const O: WriteOrigin = WriteOrigin {
        time_ns: 1_795_268_855_097_063_000,
        pid: 42,
    };

    fn ring(cap: usize) -> (Vec<u64>, Ring) {
        let mut mem = vec![0u64; Ring::layout_size(cap, 8) / 8];
        // SAFETY: `mem` is zeroed, 8-aligned, the layout's size, and
        // outlives the ring (the tests' rings never need page alignment).
        let r = unsafe { Ring::format(mem.as_mut_ptr() as *mut u8, cap, 8) };
        (mem, r)
    }

    /// The layout as a reader of `logtap_wire::ring` sees it: the control
    /// words, the source table, the head and tail where the consumer's
    /// writes put them, and the records in the wire's header-word format.
    #[test]
    fn layout_is_the_wires() {
        let (m, r) = ring(256);
        let bytes = |at: usize, n: usize| -> Vec<u8> {
            // SAFETY: inside `m`, which is alive.
            unsafe { std::slice::from_raw_parts((m.as_ptr() as *const u8).add(at), n).to_vec() }
        };
        let u64_at = |at: usize| u64::from_ne_bytes(bytes(at, 8).try_into().unwrap());
        let u32_at = |at: usize| u32::from_ne_bytes(bytes(at, 4).try_into().unwrap());
        assert_eq!(u64_at(lay::MAGIC_AT), lay::MAGIC);
        assert_eq!(u32_at(lay::VERSION_AT), lay::LAYOUT_VERSION);
        assert_eq!(u32_at(lay::SLOTS_AT), 8);
        assert_eq!(u32_at(lay::INTENTS_AT), lay::INTENT_SLOTS as u32);
        let first = r.intent(0).unwrap() as usize - m.as_ptr() as usize;
        assert_eq!(first, lay::intents_offset(8));
        assert!(r.intent(lay::INTENT_SLOTS).is_none());
        let off = u64_at(lay::DATA_OFFSET_AT) as usize;
        assert_eq!(off, lay::data_offset(8));
        assert_eq!(u64_at(lay::CAP_AT), 256);
        r.set_source(1, Level::Info, b"stdout");
        r.add_drops(1, 10, 2);
        let slot = lay::CONTROL_SIZE + lay::SLOT_SIZE;
        assert_eq!(u32_at(slot + lay::SLOT_READY_AT), 1);
        assert_eq!(u32_at(slot + lay::SLOT_LEVEL_AT), Level::Info as u32);
        assert_eq!(u32_at(slot + lay::SLOT_NAME_LEN_AT), 6);
        assert_eq!(bytes(slot + lay::SLOT_NAME_AT, 6), b"stdout");
        assert_eq!(u64_at(slot + lay::SLOT_DROP_BYTES_AT), 10);
        assert_eq!(u64_at(slot + lay::SLOT_DROP_WRITES_AT), 2);
        assert!(r.drops_pending());
        assert_eq!(r.take_drops(1), (10, 2));
        assert!(!r.drops_pending());
        r.push(1, &[b"hello"], 5, O).unwrap();
        assert_eq!(u64_at(lay::HEAD_AT), lay::record_size(5) as u64);
        assert_eq!(
            lay::decode_header(u64_at(off)),
            lay::Slot::Record {
                src: 1,
                len: 5,
                size: lay::record_size(5) as u64
            }
        );
        assert_eq!(bytes(off + HDR + META, 5), b"hello");
        r.release(r.peek(0).unwrap().next);
        assert_eq!(u64_at(lay::TAIL_AT), lay::record_size(5) as u64);
        r.set_owner(7);
        r.disown(8);
        assert_eq!(u64_at(lay::OWNER_AT), 7);
        r.disown(7);
        assert_eq!(u64_at(lay::OWNER_AT), 0);
        r.set_state(lay::STATE_ABANDONED);
        assert_eq!(u32_at(lay::STATE_AT), lay::STATE_ABANDONED);
        let (_m2, child) = ring(256);
        child.copy_sources(&r);
        assert_eq!(child.take_drops(1), (0, 0));
        let (cm, _) = child.mapping();
        // SAFETY: inside the child's layout.
        let name = unsafe { std::slice::from_raw_parts(cm.add(slot + lay::SLOT_NAME_AT), 6) };
        assert_eq!(name, b"stdout");
    }

    #[test]
    fn fifo_with_wrap_and_full() {
        let (_m, r) = ring(256);
        let mut expect = std::collections::VecDeque::new();
        let mut pos = 0u64;
        for i in 0..2000u32 {
            let data = vec![(i % 251) as u8; 1 + (i as usize * 7) % 40];
            if r.push((i % 3) as u8, &[&data], data.len(), O).is_some() {
                expect.push_back(data);
            }
            if i % 3 == 0 {
                while let Some(rec) = r.peek(pos) {
                    // SAFETY: a committed record's bytes, not yet released.
                    let got = unsafe { std::slice::from_raw_parts(rec.data, rec.len) };
                    assert_eq!(got, &expect.pop_front().unwrap()[..]);
                    pos = rec.next;
                    r.release(pos);
                }
            }
        }
    }

    /// A spooled ring that cannot allocate past its first step keeps to
    /// it: records wrap early, and nothing (writer, pad, release) touches
    /// a byte past it, which is made inaccessible here so that any touch
    /// faults.
    #[test]
    fn a_spooled_ring_that_cannot_grow_never_touches_past_its_frontier() {
        let cap = 4 * BACK_STEP as usize;
        let size = Ring::layout_size(cap, 8);
        // SAFETY: a fresh anonymous mapping, zeroed and page-aligned.
        let mem = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        } as *mut u8;
        assert_ne!(mem as *mut libc::c_void, libc::MAP_FAILED);
        // SAFETY: as above.
        let r = unsafe { Ring::format(mem, cap, 8) };
        r.set_spooled(BACK_STEP as usize);
        let past = lay::data_offset(8) + BACK_STEP as usize;
        // SAFETY: the records past the first step, inside the mapping.
        assert_eq!(
            unsafe {
                libc::mprotect(
                    mem.add(past) as *mut libc::c_void,
                    size - past,
                    libc::PROT_NONE,
                )
            },
            0
        );
        // (No fd of a spooled ring here: every allocation fails.)
        assert!(!r.could_hold(BACK_STEP as usize));
        let mut expect = std::collections::VecDeque::new();
        let mut pos = 0u64;
        for i in 0..200_000u32 {
            let data = vec![(i % 251) as u8; 1 + (i as usize * 7919) % 3000];
            if r.push((i % 3) as u8, &[&data], data.len(), O).is_some() {
                expect.push_back(data);
            }
            if i % 7 == 0 {
                while let Some(rec) = r.peek(pos) {
                    // SAFETY: a committed record's bytes, not yet released.
                    let got = unsafe { std::slice::from_raw_parts(rec.data, rec.len) };
                    assert_eq!(got, &expect.pop_front().unwrap()[..]);
                    pos = rec.next;
                    r.release(pos);
                }
            }
        }
        assert!(expect.len() < 200, "the ring kept working");
        assert!(
            r.head() > 4 * cap as u64,
            "positions went round several times"
        );
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(mem as *mut libc::c_void, size) };
    }

    #[test]
    fn shorter_commit_leaves_a_pad() {
        let (_m, r) = ring(256);
        let res = r.reserve(1, 40).unwrap();
        // SAFETY: the reservation holds 40 bytes.
        unsafe { core::ptr::copy_nonoverlapping(b"abc".as_ptr(), res.data, 3) };
        r.commit(res, 3, O);
        r.push(2, &[b"next"], 4, O).unwrap();
        let a = r.peek(0).unwrap();
        assert_eq!((a.src, a.len), (1, 3));
        let b = r.peek(a.next).unwrap();
        assert_eq!((b.src, b.len), (2, 4));
        // SAFETY: a committed record of 4 bytes.
        assert_eq!(unsafe { std::slice::from_raw_parts(b.data, 4) }, b"next");
        // The entry header before the data is the wire's, with the length
        // committed (not the one reserved).
        // SAFETY: a committed record's entry header and data.
        let entry = unsafe { std::slice::from_raw_parts(a.entry, ENTRY_HEADER + 3) };
        let h = EntryHeader::from_bytes(entry[..ENTRY_HEADER].try_into().unwrap());
        assert_eq!(h, EntryHeader { origin: O, len: 3 });
        assert_eq!(&entry[ENTRY_HEADER..], b"abc");
    }

    #[test]
    fn empty_commit_is_skipped_and_released() {
        let (_m, r) = ring(256);
        let res = r.reserve(1, 24).unwrap();
        r.commit(res, 0, O);
        r.push(2, &[b"x"], 1, O).unwrap();
        let a = r.peek(0).unwrap();
        assert_eq!((a.src, a.len), (2, 1));
        r.release(a.next);
        let res = r.reserve(1, 40).unwrap();
        r.commit(res, 0, O);
        r.release_pads();
        assert_eq!(r.tail(), r.head(), "trailing pads are released");
    }

    #[test]
    fn abandoned_reservation_is_skipped() {
        let (_m, r) = ring(256);
        let stuck = r.reserve(3, 20).unwrap();
        r.push(2, &[b"after"], 5, O).unwrap();
        assert!(
            r.peek(0).is_none(),
            "the pending reservation blocks the consumer"
        );
        assert_eq!(r.abandon(0), Some((3, 20)));
        let next = r.peek(0).unwrap();
        assert_eq!((next.src, next.len), (2, 5));
        let _ = stuck; // its writer never returns
        assert_eq!(
            r.abandon(next.pos),
            None,
            "committed records are never abandoned"
        );
    }

    #[test]
    fn threads_keep_per_thread_order() {
        let (_m, r) = ring(1 << 16);
        let r = std::sync::Arc::new(r);
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut hs = vec![];
        for t in 0..4u8 {
            let r = r.clone();
            hs.push(std::thread::spawn(move || {
                let mut i = 0u32;
                while i < 20000 {
                    let b = i.to_le_bytes();
                    if r.push(t, &[&b], 4, O).is_some() {
                        i += 1;
                    }
                }
            }));
        }
        let c = {
            let (r, done) = (r.clone(), done.clone());
            std::thread::spawn(move || {
                let mut next = [0u32; 4];
                let mut pos = 0;
                loop {
                    match r.peek(pos) {
                        Some(rec) => {
                            // SAFETY: every record here is 4 bytes.
                            let v = u32::from_le_bytes(unsafe { *(rec.data as *const [u8; 4]) });
                            assert_eq!(v, next[rec.src as usize]);
                            next[rec.src as usize] += 1;
                            pos = rec.next;
                            r.release(pos);
                        }
                        None if done.load(SeqCst) && pos == r.head() => return next,
                        None => std::hint::spin_loop(),
                    }
                }
            })
        };
        for h in hs {
            h.join().unwrap();
        }
        done.store(true, SeqCst);
        assert_eq!(c.join().unwrap(), [20000; 4]);
    }
}
