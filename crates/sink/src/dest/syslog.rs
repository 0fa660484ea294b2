//! Syslog sockets: a Unix datagram socket (`/dev/log`), UDP, or TCP with
//! RFC 6587 octet counting (`LEN SP MSG`).
//!
//! Blocking sockets with time-outs, on the output's own thread: a daemon
//! that is down or stops reading makes this output wait and retry (its
//! queue fills, then it drops and counts), never the event loop or the
//! other outputs. A lost connection is reopened at the next record, at
//! most once a second. On TCP, messages are collected into writes of up
//! to 64 KiB; if a write fails, the messages of that write are counted as
//! lost (a daemon may still have received some of them, and an octet count
//! cut by a closed connection is discarded by the daemon, never spliced
//! into another message).

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

    fn write_pending(&mut self) -> io::Result<()> {
        let Some(Conn::Tcp(s)) = &mut self.conn else {
            return Ok(());
        };
        if self.pending.is_empty() {
            return Ok(());
        }
        let r = s.write_all(&self.pending);
        self.pending.clear();
        let held = std::mem::take(&mut self.held);
        if let Err(e) = r {
            self.lost.records += held.records;
            self.lost.bytes += held.bytes;
            self.conn = None;
            return Err(io::Error::new(e.kind(), format!("{}: {e}", self.name())));
        }
        Ok(())
    }
}

impl Dest for SyslogDest {
    fn write(&mut self, r: &Record<'_>) -> Result<(), Failure> {
        self.ensure()?;
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut msg = std::mem::take(&mut self.msg);
        let mut result = Ok(());
        match &self.conn {
            Some(Conn::Tcp(_)) => {
                let pending = &mut self.pending;
                self.enc.encode(r, &mut scratch, &mut msg, &mut |m| {
                    pending.extend_from_slice(itoa::Buffer::new().format(m.len()).as_bytes());
                    pending.push(b' ');
                    pending.extend_from_slice(m);
                });
                self.held.records += 1;
                self.held.bytes += r.text.len() as u64;
                if self.pending.len() >= TCP_BATCH {
                    // On failure the records of that write (this one
                    // included) are counted in `lost`; the next record
                    // reconnects.
                    if let Err(e) = self.write_pending() {
                        crate::warn!("output syslog: {e}");
                    }
                }
            }
            Some(conn) => {
                let mut err = None;
                self.enc.encode(r, &mut scratch, &mut msg, &mut |m| {
                    if err.is_some() {
                        return;
                    }
                    let res = match conn {
                        Conn::Unix(s) => s.send(m),
                        Conn::Udp(s) => s.send(m),
                        Conn::Tcp(_) => Ok(m.len()),
                    };
                    if let Err(e) = res {
                        err = Some(e);
                    }
                });
                if let Some(e) = err {
                    result = match e.raw_os_error() {
                        Some(libc::EMSGSIZE) => Err(Failure::Drop(Some(format!(
                            "{}: message too long for the socket",
                            self.name()
                        )))),
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
        self.write_pending()
    }

    fn take_lost(&mut self) -> Lost {
        std::mem::take(&mut self.lost)
    }
}
