//! Syslog sockets: a Unix datagram socket (`/dev/log`), UDP, or TCP with
//! RFC 6587 octet counting (`LEN SP MSG`).
//!
//! Blocking sockets with time-outs, on the output's own thread: a daemon
//! that is down or stops reading makes this output wait and retry (its
//! queue fills, then it drops and counts), never the event loop or the
//! other outputs. A lost connection is reopened at the next record, at
//! most once a second. On TCP, messages are collected into writes of up
//! to 64 KiB. A daemon that takes no data for 2 s keeps its connection and
//! the unsent bytes (the output is "down" and retries); a write that fails
//! closes the connection and counts the messages of that write as lost (a
//! daemon may still have received some of them, and an octet count cut by
//! a closed connection is discarded by the daemon, never spliced into
//! another message).

use std::io::{self, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use super::{Dest, Failure};
use crate::encode::syslog::Syslog;
use crate::encode::Record;
use crate::outputs::{Lost, Transport};

/// Connect and send time-out.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Least time between two connection attempts.
const RECONNECT: Duration = Duration::from_secs(1);
/// TCP: bytes collected before a write.
const TCP_BATCH: usize = 64 * 1024;

enum Conn {
    Unix(UnixDatagram),
    Udp(UdpSocket),
    Tcp(TcpStream),
}

pub struct SyslogDest {
    transport: Transport,
    enc: Syslog,
    conn: Option<Conn>,
    last_try: Option<Instant>,
    scratch: Vec<u8>,
    msg: Vec<u8>,
    /// TCP: framed messages not yet written, and their records.
    pending: Vec<u8>,
    held: Lost,
    lost: Lost,
    /// Datagrams: the record whose pieces were being sent when a send
    /// failed (its address and length, which stay fixed while the runner
    /// retries it) and how many pieces went out. The retry sends only the
    /// rest, so a long line is never delivered twice in part.
    resume: Option<((usize, usize), usize)>,
}

fn resolve(hp: &str) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = hp.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(ErrorKind::NotFound, "no address"));
    }
    Ok(addrs)
}

impl SyslogDest {
    pub fn new(transport: Transport, enc: Syslog) -> SyslogDest {
        SyslogDest {
            transport,
            enc,
            conn: None,
            last_try: None,
            scratch: Vec::new(),
            msg: Vec::new(),
            pending: Vec::new(),
            held: Lost::default(),
            lost: Lost::default(),
            resume: None,
        }
    }

    fn name(&self) -> String {
        match &self.transport {
            Transport::Unix(p) => p.display().to_string(),
            Transport::Udp(hp) => format!("udp {hp}"),
            Transport::Tcp(hp) => format!("tcp {hp}"),
        }
    }

    fn connect(&mut self) -> io::Result<Conn> {
        Ok(match &self.transport {
            Transport::Unix(path) => {
                let s = UnixDatagram::unbound()?;
                s.connect(path)?;
                s.set_write_timeout(Some(TIMEOUT))?;
                Conn::Unix(s)
            }
            Transport::Udp(hp) => {
                let mut last = None;
                for a in resolve(hp)? {
                    let bind: SocketAddr = if a.is_ipv4() {
                        ([0, 0, 0, 0], 0).into()
                    } else {
                        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                    };
                    match UdpSocket::bind(bind).and_then(|s| s.connect(a).map(|()| s)) {
                        Ok(s) => {
                            s.set_write_timeout(Some(TIMEOUT))?;
                            return Ok(Conn::Udp(s));
                        }
                        Err(e) => last = Some(e),
                    }
                }
                return Err(last.unwrap_or_else(|| ErrorKind::NotFound.into()));
            }
            Transport::Tcp(hp) => {
                let mut last = None;
                for a in resolve(hp)? {
                    match TcpStream::connect_timeout(&a, TIMEOUT) {
                        Ok(s) => {
                            s.set_write_timeout(Some(TIMEOUT))?;
                            let _ = s.set_nodelay(true);
                            return Ok(Conn::Tcp(s));
                        }
                        Err(e) => last = Some(e),
                    }
                }
                return Err(last.unwrap_or_else(|| ErrorKind::NotFound.into()));
            }
        })
    }

    /// The connection, opening it if the last attempt is long enough ago.
    fn ensure(&mut self) -> Result<(), Failure> {
        if self.conn.is_some() {
            return Ok(());
        }
        if let Some(t) = self.last_try {
            let since = t.elapsed();
            if since < RECONNECT {
                std::thread::sleep(RECONNECT - since);
            }
        }
        self.last_try = Some(Instant::now());
        match self.connect() {
            Ok(c) => {
                self.conn = Some(c);
                Ok(())
            }
            Err(e) => Err(Failure::Down(format!("{}: {e}", self.name()))),
        }
    }

    /// Writes the collected TCP messages. A daemon that takes nothing for
    /// [`TIMEOUT`] is "down" for the runner (it retries later; the
    /// connection and the unsent bytes are kept, so nothing is cut); an
    /// error closes the connection and counts the batch as lost.
    fn write_pending(&mut self) -> Result<(), Failure> {
        let Some(Conn::Tcp(s)) = &mut self.conn else {
            return Ok(());
        };
        let mut off = 0;
        let mut res = Ok(());
        while off < self.pending.len() {
            match s.write(&self.pending[off..]) {
                Ok(0) => {
                    res = Err(io::Error::from(ErrorKind::WriteZero));
                    break;
                }
                Ok(n) => off += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    self.pending.drain(..off);
                    return Err(Failure::Down(format!(
                        "{}: the daemon takes no data ({} s)",
                        self.name(),
                        TIMEOUT.as_secs()
                    )));
                }
                Err(e) => {
                    res = Err(e);
                    break;
                }
            }
        }
        self.pending.clear();
        let held = std::mem::take(&mut self.held);
        match res {
            Ok(()) => Ok(()),
            Err(e) => {
                self.lost.records += held.records;
                self.lost.bytes += held.bytes;
                self.conn = None;
                Err(Failure::Down(format!("{}: {e}", self.name())))
            }
        }
    }
}

impl Dest for SyslogDest {
    fn write(&mut self, r: &Record<'_>, w: Lost) -> Result<(), Failure> {
        self.ensure()?;
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut msg = std::mem::take(&mut self.msg);
        let mut result = Ok(());
        match &self.conn {
            Some(Conn::Tcp(_)) => {
                if self.pending.len() >= TCP_BATCH {
                    if let Err(f) = self.write_pending() {
                        self.scratch = scratch;
                        self.msg = msg;
                        return Err(f);
                    }
                }
                let pending = &mut self.pending;
                self.enc.encode(r, &mut scratch, &mut msg, &mut |m| {
                    pending.extend_from_slice(itoa::Buffer::new().format(m.len()).as_bytes());
                    pending.push(b' ');
                    pending.extend_from_slice(m);
                });
                self.held.add(w);
            }
            Some(conn) => {
                let key = (r.text.as_ptr() as usize, r.text.len());
                let skip = match self.resume.take() {
                    Some((k, sent)) if k == key => sent,
                    _ => 0,
                };
                let mut err = None;
                let mut piece = 0;
                let mut sent = skip;
                self.enc.encode(r, &mut scratch, &mut msg, &mut |m| {
                    piece += 1;
                    if err.is_some() || piece <= skip {
                        return;
                    }
                    let res = match conn {
                        Conn::Unix(s) => s.send(m),
                        Conn::Udp(s) => s.send(m),
                        Conn::Tcp(_) => Ok(m.len()),
                    };
                    match res {
                        Ok(_) => sent = piece,
                        Err(e) => err = Some(e),
                    }
                });
                if let Some(e) = err {
                    if sent > 0 {
                        self.resume = Some((key, sent));
                    }
                    result = match e.raw_os_error() {
                        Some(libc::EMSGSIZE) => {
                            self.resume = None;
                            Err(Failure::Drop(Some(format!(
                                "{}: message too long for the socket",
                                self.name()
                            ))))
                        }
                        _ => {
                            self.conn = None;
                            Err(Failure::Down(format!("{}: {e}", self.name())))
                        }
                    };
                }
            }
            None => {}
        }
        self.scratch = scratch;
        self.msg = msg;
        result
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.write_pending() {
            Ok(()) => Ok(()),
            Err(Failure::Down(w) | Failure::Drop(Some(w))) => Err(io::Error::other(w)),
            Err(Failure::Drop(None)) => Ok(()),
        }
    }

    fn take_lost(&mut self) -> Lost {
        std::mem::take(&mut self.lost)
    }

    fn abandon(&mut self) -> Lost {
        self.pending.clear();
        std::mem::take(&mut self.held)
    }
}
