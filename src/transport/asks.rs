//! Read requests: a sink that reads the shared ring itself.
//!
//! A logtap-sink that took the ring of a connection's attach frame says so
//! with `SinkMsg::Reading`. From then on the bytes need not cross the
//! socket: the consumer sends a small version-3 frame ("read up to
//! here"), the sink reads those records straight from the ring, delivers
//! them, and answers `SinkMsg::Read` with the same position; only then is
//! that space freed. The program's side of a line is then one copy, into
//! the ring.
//!
//! This module is the bookkeeping of one connection's requests, free of
//! system calls so it can be tested alone: the request being sent, the
//! positions asked for and not answered yet (oldest first; answers come in
//! order), and a sink message partly received. Used with the drain lock
//! held, like the rest of the connection state.

use logtap_wire as wire;
use logtap_wire::ring::{self as lay, SinkMsg};

/// Requests sent and not answered at most. Each asks for everything
/// committed after the previous one, so a few are enough to keep a sink
/// busy; the bound keeps a paused sink's socket from filling with them.
pub const ASKED_MAX: usize = 16;
/// Header, prefix (`level`, platform, `logtap`) and position.
const REQ_MAX: usize = 8 + 2 + wire::MAX_PLATFORM + 1 + 7 + lay::POSITION_LEN;

pub struct Asks {
    /// The sink said it reads the ring itself.
    pub reading: bool,
    asked: [u64; ASKED_MAX],
    n: usize,
    req: [u8; REQ_MAX],
    req_len: usize,
    req_sent: usize,
    req_pos: u64,
    rx: [u8; lay::SINK_MSG_LEN],
    rx_len: usize,
}

/// What a message from the sink meant.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    /// Nothing complete yet.
    Nothing,
    /// The sink reads the ring itself from now on.
    Reading,
    /// Everything before this position was delivered: free it.
    Answered(u64),
    /// A message this connection did not expect (ignored).
    OutOfTurn,
}

impl Asks {
    pub const fn new() -> Asks {
        Asks {
            reading: false,
            asked: [0; ASKED_MAX],
            n: 0,
            req: [0; REQ_MAX],
            req_len: 0,
            req_sent: 0,
            req_pos: 0,
            rx: [0; lay::SINK_MSG_LEN],
            rx_len: 0,
        }
    }

    /// A new connection (or none): nothing asked, nothing heard.
    pub fn reset(&mut self) {
        *self = Asks::new();
    }

    /// The last position asked for in a request sent whole.
    pub fn last(&self) -> Option<u64> {
        self.n.checked_sub(1).map(|i| self.asked[i])
    }

    /// The positions asked for and not answered, oldest first.
    pub fn outstanding(&self) -> &[u64] {
        &self.asked[..self.n]
    }

    pub fn full(&self) -> bool {
        self.n == ASKED_MAX
    }

    /// A request is being sent (not whole yet).
    pub fn sending(&self) -> bool {
        self.req_sent < self.req_len
    }

    /// Builds the request for everything before `end`.
    pub fn prepare(&mut self, end: u64, platform: &[u8]) {
        let mut p = [0u8; REQ_MAX];
        let n = wire::write_prefix(
            &mut p,
            wire::Level::Info,
            platform,
            wire::SELF_SOURCE.as_bytes(),
        )
        .unwrap_or(0);
        let body = n + lay::POSITION_LEN;
        let pos = lay::RingPosition { pos: end, skip: 0 };
        self.req[..8].copy_from_slice(&wire::header_version(wire::VERSION_READ, body));
        self.req[8..8 + n].copy_from_slice(&p[..n]);
        self.req[8 + n..8 + body].copy_from_slice(&pos.to_bytes());
        self.req_len = 8 + body;
        self.req_sent = 0;
        self.req_pos = end;
    }

    /// What is left to send of the request.
    pub fn unsent(&self) -> &[u8] {
        &self.req[self.req_sent..self.req_len]
    }

    /// `n` more bytes of the request went out; true once it is whole.
    pub fn sent(&mut self, n: usize) -> bool {
        self.req_sent = (self.req_sent + n).min(self.req_len);
        if self.req_len == 0 || self.req_sent < self.req_len {
            return false;
        }
        debug_assert!(self.n < ASKED_MAX);
        self.asked[self.n] = self.req_pos;
        self.n += 1;
        self.req_len = 0;
        self.req_sent = 0;
        true
    }

    /// Where bytes from the sink go next.
    pub fn rx_room(&mut self) -> &mut [u8] {
        &mut self.rx[self.rx_len..]
    }

    /// `n` bytes arrived in `rx_room`; a whole message is acted on. The
    /// ring must be attached (`attached`) for `Reading` to count.
    pub fn received(&mut self, n: usize, attached: bool) -> Heard {
        self.rx_len += n;
        if self.rx_len < lay::SINK_MSG_LEN {
            return Heard::Nothing;
        }
        self.rx_len = 0;
        match SinkMsg::parse(&self.rx) {
            Some(SinkMsg::Reading) if attached && !self.reading => {
                self.reading = true;
                Heard::Reading
            }
            Some(SinkMsg::Read(p)) if self.n > 0 && self.asked[0] == p => {
                self.asked.copy_within(1..self.n, 0);
                self.n -= 1;
                Heard::Answered(p)
            }
            _ => Heard::OutOfTurn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hear(a: &mut Asks, m: SinkMsg, attached: bool) -> Vec<Heard> {
        let b = m.to_bytes();
        // In two pieces, as a stream may deliver them.
        let mut out = Vec::new();
        for part in [&b[..5], &b[5..]] {
            a.rx_room()[..part.len()].copy_from_slice(part);
            out.push(a.received(part.len(), attached));
        }
        out
    }

    #[test]
    fn a_request_is_a_version_3_frame_with_its_position() {
        let mut a = Asks::new();
        a.prepare(4096, b"plat");
        let req = a.unsent().to_vec();
        let (v, len) = wire::parse_header_version(req[..8].try_into().unwrap()).unwrap();
        assert_eq!((v, len), (wire::VERSION_READ, req.len() - 8));
        let f = wire::parse_body_version(v, &req[8..]).unwrap();
        assert_eq!(f.platform, b"plat");
        assert_eq!(f.source, wire::SELF_SOURCE.as_bytes());
        assert!(f.data.is_empty());
        assert_eq!(f.position, Some(lay::RingPosition { pos: 4096, skip: 0 }));
    }

    #[test]
    fn only_whole_requests_are_asked_and_answers_come_in_order() {
        let mut a = Asks::new();
        a.prepare(100, b"");
        let len = a.unsent().len();
        assert!(!a.sent(3));
        assert!(a.sending());
        assert_eq!(a.last(), None);
        assert!(a.sent(len - 3));
        assert_eq!(a.last(), Some(100));
        a.prepare(200, b"");
        assert!(a.sent(len));
        assert_eq!(a.outstanding(), &[100, 200]);
        // An answer for the newer one first is out of turn.
        assert_eq!(
            hear(&mut a, SinkMsg::Read(200), true),
            [Heard::Nothing, Heard::OutOfTurn]
        );
        assert_eq!(
            hear(&mut a, SinkMsg::Read(100), true),
            [Heard::Nothing, Heard::Answered(100)]
        );
        assert_eq!(
            hear(&mut a, SinkMsg::Read(200), true),
            [Heard::Nothing, Heard::Answered(200)]
        );
        assert_eq!(a.outstanding(), &[] as &[u64]);
        assert_eq!(
            hear(&mut a, SinkMsg::Read(300), true),
            [Heard::Nothing, Heard::OutOfTurn]
        );
    }

    #[test]
    fn reading_counts_only_once_the_ring_is_attached() {
        let mut a = Asks::new();
        assert_eq!(
            hear(&mut a, SinkMsg::Reading, false),
            [Heard::Nothing, Heard::OutOfTurn]
        );
        assert!(!a.reading);
        assert_eq!(
            hear(&mut a, SinkMsg::Reading, true),
            [Heard::Nothing, Heard::Reading]
        );
        assert!(a.reading);
    }

    #[test]
    fn at_most_asked_max_are_outstanding() {
        let mut a = Asks::new();
        for i in 0..ASKED_MAX as u64 {
            assert!(!a.full());
            a.prepare(8 * (i + 1), b"");
            let n = a.unsent().len();
            assert!(a.sent(n));
        }
        assert!(a.full());
        a.reset();
        assert!(!a.full() && !a.reading && a.last().is_none());
    }
}
