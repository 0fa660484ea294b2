//! The memory ring (LinuxKit memlogd's model): the last `--ring-lines`
//! records (and at most `--ring-size` bytes of them), as JSON lines,
//! served on a query socket.
//!
//! Protocol of the query socket (`SOCK_STREAM`): the client sends one
//! byte: 0 = dump the ring and close, 1 = follow (new records only),
//! 2 = dump, then follow. The sink answers with JSON lines.
//! `logtap-sink read PATH` is the client.
//!
//! Each client has a thread of its own: the dump is a snapshot taken under
//! the ring's lock, and a follower is registered under the same lock, so a
//! dump-then-follow reader gets every record once, in order. A follower
//! that reads slower than records arrive has a bounded queue (1 MiB); what
//! does not fit is dropped and the reader gets a record saying how many
//! lines it missed. A reader that goes away is forgotten.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::{Dest, Failure};
use crate::encode::{LineEncoder, Record};
use crate::outputs::Lost;

/// Bytes a follower's queue holds before lines are dropped for it.
const FOLLOWER_QUEUE: usize = 1024 * 1024;
/// Readers served at once.
const MAX_CLIENTS: usize = 64;

/// Query bytes.
pub const DUMP: u8 = 0;
pub const FOLLOW: u8 = 1;
pub const DUMP_AND_FOLLOW: u8 = 2;

struct FollowerState {
    lines: VecDeque<Arc<[u8]>>,
    bytes: usize,
    missed: u64,
    gone: bool,
}

struct Follower {
    st: Mutex<FollowerState>,
    cv: Condvar,
}

impl Follower {
    fn lock(&self) -> MutexGuard<'_, FollowerState> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct RingState {
    lines: VecDeque<Arc<[u8]>>,
    bytes: usize,
    followers: Vec<Arc<Follower>>,
    clients: usize,
}

struct Shared {
    st: Mutex<RingState>,
    max_lines: usize,
    max_bytes: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, RingState> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Ring {
    shared: Arc<Shared>,
    enc: LineEncoder,
    buf: Vec<u8>,
}

/// Binds the query socket like the main one: a live socket is refused, a
/// stale one replaced, anything else left alone.
fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    }
    match fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    ErrorKind::AddrInUse,
                    format!("{} is served by another running sink", path.display()),
                ))
            }
            Err(_) => fs::remove_file(path)?,
        },
        Ok(_) => {
            return Err(io::Error::new(
                ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(_) => {}
    }
    UnixListener::bind(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {}: {e}", path.display())))
}

impl Ring {
    /// Binds the query socket and starts serving it; returns the ring and
    /// a function that removes the socket file.
    pub fn start(
        query: &Path,
        max_lines: usize,
        max_bytes: usize,
        enc: LineEncoder,
    ) -> io::Result<(Ring, Box<dyn FnOnce() + Send>)> {
        let listener = bind(query)?;
        let shared = Arc::new(Shared {
            st: Mutex::new(RingState {
                lines: VecDeque::new(),
                bytes: 0,
                followers: Vec::new(),
                clients: 0,
            }),
            max_lines: max_lines.max(1),
            max_bytes: max_bytes.max(1),
        });
        let s2 = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("ring query".into())
            .spawn(move || accept_loop(&listener, &s2))?;
        let path: PathBuf = query.to_path_buf();
        let remove = Box::new(move || {
            let _ = fs::remove_file(&path);
        });
        Ok((
            Ring {
                shared,
                enc,
                buf: Vec::new(),
            },
            remove,
        ))
    }
}

impl Dest for Ring {
    fn write(&mut self, r: &Record<'_>, _: Lost) -> Result<(), Failure> {
        self.buf.clear();
        self.enc.encode(&mut self.buf, r);
        let line: Arc<[u8]> = Arc::from(&self.buf[..]);
        let mut st = self.shared.lock();
        st.bytes += line.len();
        st.lines.push_back(Arc::clone(&line));
        while st.lines.len() > self.shared.max_lines
            || (st.bytes > self.shared.max_bytes && st.lines.len() > 1)
        {
            if let Some(old) = st.lines.pop_front() {
                st.bytes -= old.len();
            }
        }
        st.followers.retain(|f| {
            let mut fs = f.lock();
            if fs.gone {
                return false;
            }
            if fs.bytes + line.len() > FOLLOWER_QUEUE && !fs.lines.is_empty() {
                fs.missed += 1;
            } else {
                fs.bytes += line.len();
                fs.lines.push_back(Arc::clone(&line));
                drop(fs);
                f.cv.notify_one();
            }
            true
        });
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn accept_loop(listener: &UnixListener, shared: &Arc<Shared>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                {
                    let mut st = shared.lock();
                    if st.clients >= MAX_CLIENTS {
                        continue;
                    }
                    st.clients += 1;
                }
                let s2 = Arc::clone(shared);
                let spawned = std::thread::Builder::new()
                    .name("ring reader".into())
                    .spawn(move || {
                        let _ = serve(stream, &s2);
                        s2.lock().clients -= 1;
                    });
                if spawned.is_err() {
                    shared.lock().clients -= 1;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn serve(mut stream: UnixStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut q = [0u8; 1];
    stream.read_exact(&mut q)?;
    let (dump, follow) = match q[0] {
        DUMP => (true, false),
        FOLLOW => (false, true),
        DUMP_AND_FOLLOW => (true, true),
        _ => return Ok(()),
    };
    let follower = Arc::new(Follower {
        st: Mutex::new(FollowerState {
            lines: VecDeque::new(),
            bytes: 0,
            missed: 0,
            gone: false,
        }),
        cv: Condvar::new(),
    });
    let snapshot: Vec<Arc<[u8]>> = {
        let mut st = shared.lock();
        if follow {
            st.followers.push(Arc::clone(&follower));
        }
        if dump {
            st.lines.iter().cloned().collect()
        } else {
            Vec::new()
        }
    };
    let res = (|| {
        let mut out = io::BufWriter::with_capacity(64 * 1024, &stream);
        for l in &snapshot {
            out.write_all(l)?;
        }
        out.flush()?;
        drop(snapshot);
        if !follow {
            return Ok(());
        }
        loop {
            let (lines, missed) = {
                let mut fs = follower.lock();
                while fs.lines.is_empty() && fs.missed == 0 {
                    fs = follower.cv.wait(fs).unwrap_or_else(|p| p.into_inner());
                }
                fs.bytes = 0;
                (
                    std::mem::take(&mut fs.lines),
                    std::mem::take(&mut fs.missed),
                )
            };
            for l in &lines {
                out.write_all(l)?;
            }
            if missed > 0 {
                writeln!(
                    out,
                    "{{\"level\":\"WARN\",\"platform\":\"logtap-sink\",\"source\":\"logtap\",\"message\":\"logtap-sink: this reader missed {missed} lines (reading too slowly)\",\"dropped_lines\":{missed}}}"
                )?;
            }
            out.flush()?;
        }
    })();
    follower.lock().gone = true;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    res
}

/// `logtap-sink read`: asks `path` for a dump (and with `follow`, new
/// records after it) and copies the answer to `out`.
pub fn read(path: &Path, query: u8, out: &mut dyn Write) -> io::Result<()> {
    let mut s = UnixStream::connect(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    s.write_all(&[query])?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) => return out.flush(),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
}
