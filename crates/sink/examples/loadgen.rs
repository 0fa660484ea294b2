//! Load generator for logtap-sink: sends numbered lines, framed as liblogtap
//! does (many lines per frame, up to 64 KiB of data), over one or more
//! persistent connections, and reports lines per second.
//!
//! ```text
//! cargo run --release -p logtap-sink --example loadgen -- SOCKET [LINES] [LINE_BYTES] [CONNECTIONS] [LINES_PER_FRAME]
//! cargo run --release -p logtap-sink --example loadgen -- --file OUT [LINES] [LINE_BYTES]
//! ```
//! Defaults: 5,000,000 lines of 100 bytes (newline included), 1 connection,
//! as many lines per frame as fit in 64 KiB (LINES_PER_FRAME=1 is the
//! worst case: a frame per line).
//! With `--file`, the frames are written to OUT for `logtap-sink --read`.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use logtap_wire::{encode, Level, MAX_DATA};

/// One block of frames carrying `lines` lines of `size` bytes each.
fn block(lines: usize, size: usize, per_frame: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut data = Vec::with_capacity(MAX_DATA);
    for i in 0..lines {
        if data.len() + size > MAX_DATA || (i > 0 && i % per_frame == 0) {
            out.extend(encode(Level::Info, b"bench", b"stdout", &data));
            data.clear();
        }
        let start = data.len();
        let _ = write!(data, "line {i:>10} ");
        while data.len() - start < size.saturating_sub(1) {
            data.push(b'a' + ((data.len() - start) % 26) as u8);
        }
        data.push(b'\n');
    }
    if !data.is_empty() {
        out.extend(encode(Level::Info, b"bench", b"stdout", &data));
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `--file OUT` takes the place of SOCKET; the numbers follow either.
    let file = (args.first().map(String::as_str) == Some("--file"))
        .then(|| args.get(1).cloned())
        .flatten();
    let rest = if file.is_some() {
        &args[1..]
    } else {
        &args[..]
    };
    let num = |i: usize, d: usize| rest.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let lines: usize = num(1, 5_000_000);
    let size: usize = num(2, 100).max(16);
    let conns: usize = num(3, 1).max(1);
    let per_frame: usize = num(4, usize::MAX).max(1);
    const PER_BLOCK: usize = 40_000;
    let blk = block(PER_BLOCK, size, per_frame);
    let blocks = lines.div_ceil(PER_BLOCK);

    if let Some(path) = file {
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(&path).expect("create output file"));
        for _ in 0..blocks {
            f.write_all(&blk).expect("write");
        }
        f.flush().expect("flush");
        eprintln!(
            "wrote {} lines in {} bytes to {path}",
            blocks * PER_BLOCK,
            blocks * blk.len()
        );
        return;
    }
    let socket = rest
        .first()
        .cloned()
        .unwrap_or_else(|| "/run/logtap/sink.sock".into());
    let start = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let socket = socket.clone();
            let blk = blk.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&socket).expect("connect to the sink");
                for _ in 0..blocks.div_ceil(conns) {
                    s.write_all(&blk).expect("send");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("sender thread");
    }
    let secs = start.elapsed().as_secs_f64();
    let sent = blocks.div_ceil(conns) * conns * PER_BLOCK;
    println!(
        "sent {sent} lines of {size} bytes over {conns} connection(s) in {secs:.3} s: {:.0} lines/s, {:.1} MB/s",
        sent as f64 / secs,
        (sent * size) as f64 / secs / 1e6
    );
}
