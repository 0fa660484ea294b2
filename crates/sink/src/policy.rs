//! Admission and fairness: which local users may use the sink, and how
//! much of it one user may hold.
//!
//! The socket is reachable by whoever its file mode lets in. Within that,
//! the kernel's `SO_PEERCRED` record (uid and gid at `connect`, which the
//! peer cannot forge) decides:
//!
//! - `--allow-uid` / `--allow-gid`: when either list is given, only a peer
//!   whose uid or (primary) gid is listed is served; others are closed at
//!   once, counted, and reported (the first refusal of each uid at once,
//!   then a summary at most every [`REPORT_EVERY`] and at exit);
//! - per uid, at most `--max-connections-per-uid` connections (default:
//!   7/8 of `--max-connections`) and `--max-buffered-per-uid` bytes of
//!   unfinished frames and partial lines (default: 3/4 of
//!   `--max-buffered`), so no single user can take the whole sink: the
//!   rest stays for the others. A connection over its uid's share waits
//!   (see below) until its uid holds fewer.
//! - at `--max-connections`, a new connection is still admitted when its
//!   uid holds fewer connections than the uid holding the most: one of the
//!   latter's connections (the longest silent, one without an unfinished
//!   frame first) is closed to make room, its queued bytes read and
//!   delivered first, so several uids together cannot keep another out
//!   either; a connection of the uid holding the most waits;
//! - a connection that must wait is accepted (so it does not hold up the
//!   listen backlog for others behind it) but not read: what its sender
//!   wrote stays in its socket, and the sender's own flow control holds
//!   the rest, until there is room. Only a bounded number wait so; past
//!   that, one is refused, its queued bytes read and delivered, and its
//!   sender's next write fails, so it keeps the rest and reconnects;
//! - a connection that holds an unfinished frame and sends nothing for
//!   `--idle-timeout` is closed (liblogtap resends an interrupted frame
//!   whole on its next connection, so a legitimate writer loses nothing);
//! - when a budget is exceeded, the connection holding the most is evicted,
//!   not whichever happened to grow last.
//!
//! The server asks; this module keeps the counts.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::peercred::PeerCred;

/// How often refusals are summarised on stderr at most.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);
/// Default idle timeout for a connection holding an unfinished frame.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The admission settings.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Empty (with `allow_gids` empty): everyone the socket mode lets in.
    pub allow_uids: Vec<u32>,
    pub allow_gids: Vec<u32>,
    pub max_connections_per_uid: usize,
    pub max_buffered_per_uid: usize,
    /// Zero: no timeout.
    pub idle_timeout: Duration,
}

impl Limits {
    /// Defaults derived from the global limits.
    pub fn defaults(max_connections: usize, max_buffered: usize) -> Limits {
        Limits {
            allow_uids: Vec::new(),
            allow_gids: Vec::new(),
            max_connections_per_uid: (max_connections - max_connections / 8).max(1),
            max_buffered_per_uid: (max_buffered - max_buffered / 4).max(1),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Neither the uid nor the gid is on an allow-list.
    NotAllowed,
    /// The uid already holds `--max-connections-per-uid` connections.
    TooMany,
    /// `--max-connections` are open and this uid already holds the most
    /// (nobody holding more could make room for it).
    Full,
}

impl Refusal {
    /// Why a connection waits for room.
    pub fn wait_text(self) -> &'static str {
        match self {
            Refusal::NotAllowed => self.text(),
            Refusal::TooMany => "over --max-connections-per-uid",
            Refusal::Full => "at --max-connections, and its uid holds the most connections",
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Refusal::NotAllowed => "not allowed (--allow-uid/--allow-gid)",
            Refusal::TooMany => "over --max-connections-per-uid, and too many wait already",
            Refusal::Full => {
                "at --max-connections, its uid holds the most connections, and too many wait already"
            }
        }
    }
}

/// What to do with a new (or waiting) connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Serve it.
    Admit,
    /// Close a connection of this uid (the uid holding the most), then
    /// serve it.
    MakeRoom(u32),
    /// It must wait for room, for this reason.
    Wait(Refusal),
    /// Not allowed at all.
    Refuse,
}

/// Unknown credentials are counted under this key.
const UNKNOWN: u32 = u32::MAX;

#[derive(Default)]
struct Use {
    conns: usize,
    held: usize,
}

/// Admission state: the limits and what each uid holds now.
pub struct Policy {
    limits: Limits,
    by_uid: HashMap<u32, Use>,
    /// Refusals per (uid, reason) since the last summary, and in total.
    recent: HashMap<(u32, Refusal), u64>,
    total_refused: u64,
    /// First refusal of a uid reported already.
    told: HashMap<u32, ()>,
    /// Connections closed by the policy (evicted over a budget, idle
    /// mid-frame) per (uid, reason) since the last summary; a uid's first
    /// of each reason is reported on its own.
    closed_recent: HashMap<(u32, &'static str), u64>,
    closed_told: HashMap<(u32, &'static str), ()>,
    /// Bytes a sender had written that were never read (connections not
    /// allowed, or a drain cut short), per (uid, reason) since the last
    /// summary, and in total.
    lost_recent: HashMap<(u32, &'static str), u64>,
    lost_total: u64,
    /// Connections made to wait for room, per uid since the last summary;
    /// a uid's first is reported on its own.
    waited_recent: HashMap<u32, u64>,
    waited_told: HashMap<u32, ()>,
    last_report: Instant,
}

fn uid_key(c: &PeerCred) -> u32 {
    c.uid.unwrap_or(UNKNOWN)
}

impl Policy {
    pub fn new(limits: Limits) -> Policy {
        Policy {
            limits,
            by_uid: HashMap::new(),
            recent: HashMap::new(),
            total_refused: 0,
            told: HashMap::new(),
            closed_recent: HashMap::new(),
            closed_told: HashMap::new(),
            lost_recent: HashMap::new(),
            lost_total: 0,
            waited_recent: HashMap::new(),
            waited_told: HashMap::new(),
            last_report: Instant::now(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn allowed(&self, c: &PeerCred) -> bool {
        let l = &self.limits;
        if l.allow_uids.is_empty() && l.allow_gids.is_empty() {
            return true;
        }
        c.uid.is_some_and(|u| l.allow_uids.contains(&u))
            || c.gid.is_some_and(|g| l.allow_gids.contains(&g))
    }

    /// What to do with a connection from `c`, `full` when
    /// `--max-connections` are open. Counts nothing: see
    /// [`Policy::admitted`] and [`Policy::refused`].
    pub fn decide(&self, c: &PeerCred, full: bool) -> Decision {
        if !self.allowed(c) {
            return Decision::Refuse;
        }
        let mine = self.by_uid.get(&uid_key(c)).map_or(0, |u| u.conns);
        if mine >= self.limits.max_connections_per_uid {
            return Decision::Wait(Refusal::TooMany);
        }
        if !full {
            return Decision::Admit;
        }
        // At the limit: the uid holding the most makes room for a uid
        // holding at least two fewer (after admission), so every uid gets
        // a share, whether one uid or several hold the rest.
        match self.by_uid.iter().max_by_key(|(_, u)| u.conns) {
            Some((uid, u)) if u.conns > mine + 1 => Decision::MakeRoom(*uid),
            _ => Decision::Wait(Refusal::Full),
        }
    }

    /// A connection from `c` is served from now on, until
    /// [`Policy::closed`].
    pub fn admitted(&mut self, c: &PeerCred) {
        self.by_uid.entry(uid_key(c)).or_default().conns += 1;
    }

    /// A connection from `c` was refused for `why` (counted and summarised).
    pub fn refused(&mut self, c: &PeerCred, why: Refusal) {
        self.total_refused += 1;
        *self.recent.entry((uid_key(c), why)).or_default() += 1;
    }

    /// `bytes` written by `c` were never read (`why`: a short phrase). True
    /// for the uid's first such loss for that reason (the caller reports it
    /// in full; later ones are summarised).
    pub fn lost(&mut self, c: &PeerCred, bytes: u64, why: &'static str) -> bool {
        self.lost_total += bytes;
        let k = (uid_key(c), why);
        let first = !self.lost_recent.contains_key(&k) && !self.closed_told.contains_key(&k);
        *self.lost_recent.entry(k).or_default() += bytes;
        if first {
            self.closed_told.insert(k, ());
        }
        first
    }

    /// A connection of `c` waits for room. True for the uid's first (the
    /// caller reports it in full; later ones are summarised).
    pub fn note_waiting(&mut self, c: &PeerCred) -> bool {
        *self.waited_recent.entry(uid_key(c)).or_default() += 1;
        self.waited_told.insert(uid_key(c), ()).is_none()
    }

    /// Bytes never read since start.
    pub fn lost_total(&self) -> u64 {
        self.lost_total
    }

    /// Decides on a new connection without waiting: admitted (counted until
    /// [`Policy::closed`]) or refused (counted).
    #[cfg(test)]
    pub fn admit(&mut self, c: &PeerCred) -> Result<(), Refusal> {
        let why = if !self.allowed(c) {
            Refusal::NotAllowed
        } else if self.by_uid.get(&uid_key(c)).map_or(0, |u| u.conns)
            >= self.limits.max_connections_per_uid
        {
            Refusal::TooMany
        } else {
            self.by_uid.entry(uid_key(c)).or_default().conns += 1;
            return Ok(());
        };
        self.total_refused += 1;
        *self.recent.entry((uid_key(c), why)).or_default() += 1;
        Err(why)
    }

    /// At `--max-connections`, a connection from `c` arrived: the uid whose
    /// connection must make room for it (the uid holding the most, when
    /// it holds at least two more than `c`'s uid would after admission),
    /// or Err when `c`'s uid holds the most itself (counted as refused).
    /// So every uid gets a share: nobody can keep the others out by
    /// holding every connection, with one uid or several.
    #[cfg(test)]
    pub fn make_room_for(&mut self, c: &PeerCred) -> Result<u32, Refusal> {
        if !self.allowed(c) {
            return self.admit(c).map(|()| UNKNOWN);
        }
        let mine = self.by_uid.get(&uid_key(c)).map_or(0, |u| u.conns);
        let top = self
            .by_uid
            .iter()
            .max_by_key(|(_, u)| u.conns)
            .map(|(k, u)| (*k, u.conns));
        match top {
            Some((uid, n)) if n > mine + 1 => Ok(uid),
            _ => {
                self.total_refused += 1;
                *self.recent.entry((uid_key(c), Refusal::Full)).or_default() += 1;
                Err(Refusal::Full)
            }
        }
    }

    /// How many uids hold connections now.
    pub fn uids(&self) -> usize {
        self.by_uid.len()
    }

    /// The uid `c` is counted under.
    pub fn uid_of(c: &PeerCred) -> u32 {
        uid_key(c)
    }

    /// Whether `c` is of the uid `uid` (as [`Decision::MakeRoom`] names it).
    pub fn is_uid(c: &PeerCred, uid: u32) -> bool {
        uid_key(c) == uid
    }

    /// A message for the first refusal of this uid, if not said yet.
    pub fn first_refusal_message(&mut self, c: &PeerCred, why: Refusal) -> Option<String> {
        if self.told.insert(uid_key(c), ()).is_some() {
            return None;
        }
        Some(format!(
            "connection from pid {} uid {} gid {} refused: {} (further refusals are summarised)",
            opt(c.pid),
            opt(c.uid),
            opt(c.gid),
            why.text()
        ))
    }

    /// A summary of the refusals since the last one, when there were some
    /// and `REPORT_EVERY` has passed (or `now_anyway`).
    pub fn summary(&mut self, now_anyway: bool) -> Option<String> {
        if self.recent.is_empty()
            && self.closed_recent.is_empty()
            && self.lost_recent.is_empty()
            && self.waited_recent.is_empty()
            || !(now_anyway || self.last_report.elapsed() >= REPORT_EVERY)
        {
            return None;
        }
        let mut closed: Vec<_> = self.closed_recent.drain().collect();
        closed.sort_unstable();
        let mut s = String::new();
        for ((uid, why), count) in closed {
            let _ = write!(
                s,
                "{}{count} connections of uid {} closed ({why})",
                if s.is_empty() { "" } else { "; " },
                show_uid(uid)
            );
        }
        let mut waited: Vec<_> = self.waited_recent.drain().collect();
        waited.sort_unstable();
        for (uid, count) in waited {
            let _ = write!(
                s,
                "{}{count} connections of uid {} made to wait for room",
                if s.is_empty() { "" } else { "; " },
                show_uid(uid)
            );
        }
        let mut lost: Vec<_> = self.lost_recent.drain().collect();
        lost.sort_unstable();
        for ((uid, why), bytes) in lost {
            let _ = write!(
                s,
                "{}{bytes} bytes sent by uid {} never read ({why}); {} in all",
                if s.is_empty() { "" } else { "; " },
                show_uid(uid),
                self.lost_total
            );
        }
        if self.recent.is_empty() {
            self.last_report = Instant::now();
            return Some(s);
        }
        if !s.is_empty() {
            s.push_str("; ");
        }
        let n: u64 = self.recent.values().sum();
        let mut items: Vec<_> = self.recent.drain().collect();
        items.sort_unstable_by_key(|((uid, _), _)| *uid);
        let _ = write!(s, "{n} connections refused since the last report (");
        for (i, ((uid, why), count)) in items.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            let _ = write!(s, "uid {}: {count} {}", show_uid(*uid), why.text());
        }
        let _ = write!(s, "); {} in all", self.total_refused);
        self.last_report = Instant::now();
        Some(s)
    }

    /// The policy closed a connection of this peer for `why` (a short
    /// phrase). True when this is the uid's first for that reason: the
    /// caller then reports it in full; later ones are summarised.
    pub fn note_closed(&mut self, c: &PeerCred, why: &'static str) -> bool {
        let k = (uid_key(c), why);
        *self.closed_recent.entry(k).or_default() += 1;
        self.closed_told.insert(k, ()).is_none()
    }

    /// Connections refused since start.
    pub fn total_refused(&self) -> u64 {
        self.total_refused
    }

    /// An admitted connection ended, holding `held` bytes.
    pub fn closed(&mut self, c: &PeerCred, held: usize) {
        let k = uid_key(c);
        if let Some(u) = self.by_uid.get_mut(&k) {
            u.conns = u.conns.saturating_sub(1);
            u.held = u.held.saturating_sub(held);
            if u.conns == 0 {
                self.by_uid.remove(&k);
            }
        }
    }

    /// A connection's buffers went from `old` to `new` bytes.
    pub fn held_changed(&mut self, c: &PeerCred, old: usize, new: usize) {
        if let Some(u) = self.by_uid.get_mut(&uid_key(c)) {
            u.held = u.held.saturating_sub(old) + new;
        }
    }

    /// Whether this peer's uid holds more than `--max-buffered-per-uid`.
    pub fn over_budget(&self, c: &PeerCred) -> bool {
        self.by_uid
            .get(&uid_key(c))
            .is_some_and(|u| u.held > self.limits.max_buffered_per_uid)
    }

    /// Whether `a` and `b` are the same uid (for picking whom to evict).
    pub fn same_uid(a: &PeerCred, b: &PeerCred) -> bool {
        uid_key(a) == uid_key(b)
    }

    /// Whether a connection that last sent data at `last` and holds an
    /// unfinished frame has been idle too long at `now`.
    pub fn idle_too_long(&self, last: Instant, now: Instant) -> bool {
        !self.limits.idle_timeout.is_zero() && now.duration_since(last) >= self.limits.idle_timeout
    }

    /// How often to look for idle connections and summarise refusals.
    pub fn sweep_every(&self) -> Option<Duration> {
        let t = self.limits.idle_timeout;
        Some(if t.is_zero() {
            Duration::from_secs(1)
        } else {
            (t / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
        })
    }
}

fn show_uid(uid: u32) -> String {
    if uid == UNKNOWN {
        "?".to_string()
    } else {
        uid.to_string()
    }
}

fn opt(v: Option<u32>) -> String {
    v.map_or_else(|| "?".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(uid: u32, gid: u32) -> PeerCred {
        PeerCred {
            pid: Some(1),
            uid: Some(uid),
            gid: Some(gid),
        }
    }

    #[test]
    fn allow_lists() {
        let mut l = Limits::defaults(8, 1 << 20);
        l.allow_uids = vec![0];
        l.allow_gids = vec![100];
        let mut p = Policy::new(l);
        assert!(p.admit(&cred(0, 0)).is_ok());
        assert!(p.admit(&cred(5, 100)).is_ok());
        assert_eq!(p.admit(&cred(5, 5)), Err(Refusal::NotAllowed));
        assert_eq!(p.admit(&PeerCred::default()), Err(Refusal::NotAllowed));
        assert_eq!(p.total_refused(), 2);
        let s = p.summary(true).unwrap();
        assert!(s.starts_with("2 connections refused"), "{s}");
        assert!(p.summary(true).is_none());
    }

    #[test]
    fn per_uid_limits() {
        let mut l = Limits::defaults(4, 1000);
        assert_eq!(
            (l.max_connections_per_uid, l.max_buffered_per_uid),
            (4, 750)
        );
        l.max_connections_per_uid = 2;
        l.max_buffered_per_uid = 500;
        let mut p = Policy::new(l);
        let a = cred(7, 7);
        assert!(p.admit(&a).is_ok());
        assert!(p.admit(&a).is_ok());
        assert_eq!(p.admit(&a), Err(Refusal::TooMany));
        assert!(p.admit(&cred(8, 8)).is_ok(), "another uid is not affected");
        p.held_changed(&a, 0, 400);
        assert!(!p.over_budget(&a));
        p.held_changed(&a, 0, 200);
        assert!(p.over_budget(&a));
        p.closed(&a, 200);
        assert!(!p.over_budget(&a));
        assert!(p.admit(&a).is_ok(), "a closed connection frees its slot");
        assert!(p.note_closed(&a, "idle"));
        assert!(!p.note_closed(&a, "idle"));
        let s = p.summary(true).unwrap();
        assert!(
            s.starts_with("2 connections of uid 7 closed (idle); 1 connections refused"),
            "{s}"
        );
        assert!(p.first_refusal_message(&a, Refusal::TooMany).is_some());
        // At the global limit the uid holding the most makes room.
        assert_eq!(p.uids(), 2);
        assert_eq!(p.make_room_for(&cred(9, 9)), Ok(7));
        assert_eq!(p.make_room_for(&a), Err(Refusal::Full));
        assert!(p.first_refusal_message(&a, Refusal::TooMany).is_none());
    }

    #[test]
    fn decisions_count_nothing_until_told() {
        let mut l = Limits::defaults(4, 1000);
        l.allow_gids = vec![7, 8];
        l.max_connections_per_uid = 3;
        let mut p = Policy::new(l);
        let (a, b) = (cred(7, 7), cred(8, 8));
        assert_eq!(p.decide(&cred(9, 9), false), Decision::Refuse);
        assert_eq!(p.decide(&a, false), Decision::Admit);
        for _ in 0..3 {
            p.admitted(&a);
        }
        assert_eq!(p.decide(&a, false), Decision::Wait(Refusal::TooMany));
        p.admitted(&b);
        // Full: a holds 3, b 1: b's next makes room, a's would wait anyway.
        assert_eq!(p.decide(&b, true), Decision::MakeRoom(7));
        p.closed(&a, 0);
        p.admitted(&b);
        // a 2, b 2: nobody holds two more than the other.
        assert_eq!(p.decide(&b, true), Decision::Wait(Refusal::Full));
        assert_eq!(p.decide(&a, true), Decision::Wait(Refusal::Full));
        assert_eq!(p.total_refused(), 0, "deciding counts nothing");
        p.refused(&a, Refusal::Full);
        assert!(p.lost(&a, 10, "test"));
        assert!(!p.lost(&a, 5, "test"));
        assert_eq!(p.lost_total(), 15);
        let s = p.summary(true).unwrap();
        assert!(
            s.contains("15 bytes sent by uid 7 never read (test)"),
            "{s}"
        );
        assert!(s.contains("1 connections refused"), "{s}");
    }
}
