//! logtap-sink: command line and wiring.

#![deny(unsafe_code)]

use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use std::time::Duration;

use logtap_sink::output::{Format, Output};
use logtap_sink::policy::Limits;
use logtap_sink::server::{self, Config};
use logtap_sink::warn;

const HELP: &str = "\
logtap-sink: receives logserver_msg frames (from liblogtap or Pantavisor-style
clients) on a Unix socket and prints one JSON object per log line on stdout.

Usage: logtap-sink [OPTIONS]
       logtap-sink --read FILE [OPTIONS]

Options (each falls back to the environment variable shown, then the default):
  --socket PATH          socket to create            SINK_SOCKET_PATH  /run/logtap/sink.sock
  --mode OCTAL           socket file mode            SINK_SOCKET_MODE  0660
                         (owner and group; an app running as another uid needs
                         the socket's group, or 0666 with --allow-uid)
  --format json|text     output format               SINK_FORMAT       json
  --max-line BYTES       longest line in one object  SINK_MAX_LINE     262144
  --max-connections N    connections served at once  SINK_MAX_CONNECTIONS 1024
  --max-buffered BYTES   budget for unfinished frames and partial lines over
                         all connections             SINK_MAX_BUFFERED 64M
  --allow-uid UID[,UID]  serve only these uids (or --allow-gid's gids)
                                                     SINK_ALLOW_UID    (anyone)
  --allow-gid GID[,GID]  serve only peers with this primary gid
                                                     SINK_ALLOW_GID    (anyone)
  --max-connections-per-uid N
                         connections one uid may hold
                                                     SINK_MAX_CONNECTIONS_PER_UID  7/8 of --max-connections
  --max-buffered-per-uid BYTES
                         buffered bytes one uid may hold
                                                     SINK_MAX_BUFFERED_PER_UID     3/4 of --max-buffered
  --idle-timeout SECS    close a connection that holds an unfinished frame and
                         sends nothing this long (0: never)
                                                     SINK_IDLE_TIMEOUT 30
  --read FILE            decode a frame file (- for stdin) instead of listening,
                         then exit (non-zero on a malformed or truncated frame)
  -h, --help             this text
  -V, --version          version

Refused connections are counted and summarised on stderr (every 10 s at most
and at exit). When a buffer budget is exceeded, the connection holding the
most unfinished frames is closed.

JSON objects carry timestamp, level, platform, source, pid, uid, message, and
pod_name, namespace, node_name when POD_NAME, POD_NAMESPACE, NODE_NAME are set.
SIGTERM/SIGINT: stop accepting, drain connections, flush partial lines, remove
the socket, exit 0. See docs/sink.md.
";

enum Mode {
    Serve(Config),
    Read(PathBuf, Config),
    Exit(u8),
}

fn usage(msg: &str) -> Mode {
    warn!("{msg} (try --help)");
    Mode::Exit(2)
}

fn parse_mode(s: &str) -> Option<u32> {
    let s = s.strip_prefix("0o").unwrap_or(s);
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o7777)
}

fn parse_size(s: &str) -> Option<usize> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1024),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    num.parse::<usize>().ok()?.checked_mul(mult)
}

/// `1000,1001`: numeric ids (names would need NSS, which a static sink in
/// a `scratch` image does not have).
fn parse_ids(s: &str) -> Option<Vec<u32>> {
    s.split(',')
        .map(|p| p.trim().parse::<u32>().ok().filter(|&id| id != u32::MAX))
        .collect::<Option<Vec<_>>>()
        .filter(|v| !v.is_empty())
}

fn parse_seconds(s: &str) -> Option<Duration> {
    let f: f64 = s.parse().ok()?;
    (f.is_finite() && (0.0..=86_400.0).contains(&f)).then(|| Duration::from_secs_f64(f))
}

/// Longest `--max-line` accepted.
const MAX_MAX_LINE: usize = 64 * 1024 * 1024;

fn parse_args() -> Mode {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut socket = env("SINK_SOCKET_PATH");
    let mut mode = env("SINK_SOCKET_MODE");
    let mut format = env("SINK_FORMAT");
    let mut max_line = env("SINK_MAX_LINE");
    let mut max_conns = env("SINK_MAX_CONNECTIONS");
    let mut max_buffered = env("SINK_MAX_BUFFERED");
    let mut allow_uid = env("SINK_ALLOW_UID");
    let mut allow_gid = env("SINK_ALLOW_GID");
    let mut max_conns_uid = env("SINK_MAX_CONNECTIONS_PER_UID");
    let mut max_buffered_uid = env("SINK_MAX_BUFFERED_PER_UID");
    let mut idle_timeout = env("SINK_IDLE_TIMEOUT");
    let mut read = None;

    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let Some(arg) = arg.to_str().map(str::to_owned) else {
            return usage("arguments must be UTF-8");
        };
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let slot = match flag.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                return Mode::Exit(0);
            }
            "-V" | "--version" => {
                println!("logtap-sink {}", env!("CARGO_PKG_VERSION"));
                return Mode::Exit(0);
            }
            "--socket" => &mut socket,
            "--mode" => &mut mode,
            "--format" => &mut format,
            "--max-line" => &mut max_line,
            "--max-connections" => &mut max_conns,
            "--max-buffered" => &mut max_buffered,
            "--allow-uid" => &mut allow_uid,
            "--allow-gid" => &mut allow_gid,
            "--max-connections-per-uid" => &mut max_conns_uid,
            "--max-buffered-per-uid" => &mut max_buffered_uid,
            "--idle-timeout" => &mut idle_timeout,
            "--read" => &mut read,
            _ => return usage(&format!("unknown argument {arg:?}")),
        };
        let value = match inline {
            Some(v) => v,
            None => match args.next().and_then(|v| v.into_string().ok()) {
                Some(v) => v,
                None => return usage(&format!("{flag} needs a value")),
            },
        };
        *slot = Some(value);
    }

    let mode = match mode.as_deref().map(parse_mode) {
        None => server::DEFAULT_MODE,
        Some(Some(m)) => m,
        Some(None) => return usage("--mode wants an octal file mode such as 0666"),
    };
    let format = match format.as_deref().map(Format::parse) {
        None => Format::Json,
        Some(Some(f)) => f,
        Some(None) => return usage("--format wants json or text"),
    };
    let max_line = match max_line.as_deref().map(parse_size) {
        None => server::DEFAULT_MAX_LINE,
        Some(Some(n)) if (1..=MAX_MAX_LINE).contains(&n) => n,
        Some(_) => return usage("--max-line wants a byte count from 1 to 64M"),
    };
    let max_connections = match max_conns.as_deref().map(str::parse::<usize>) {
        None => server::DEFAULT_MAX_CONNECTIONS,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => return usage("--max-connections wants a positive number"),
    };
    let max_buffered = match max_buffered.as_deref().map(parse_size) {
        None => server::DEFAULT_MAX_BUFFERED,
        Some(Some(n)) if n >= 1024 * 1024 => n,
        Some(_) => return usage("--max-buffered wants a byte count of at least 1M"),
    };
    let mut limits = Limits::defaults(max_connections, max_buffered);
    match allow_uid.as_deref().map(parse_ids) {
        None => {}
        Some(Some(v)) => limits.allow_uids = v,
        Some(None) => return usage("--allow-uid wants numeric uids separated by commas"),
    }
    match allow_gid.as_deref().map(parse_ids) {
        None => {}
        Some(Some(v)) => limits.allow_gids = v,
        Some(None) => return usage("--allow-gid wants numeric gids separated by commas"),
    }
    match max_conns_uid.as_deref().map(str::parse::<usize>) {
        None => {}
        Some(Ok(n)) if n >= 1 => limits.max_connections_per_uid = n,
        Some(_) => return usage("--max-connections-per-uid wants a positive number"),
    }
    match max_buffered_uid.as_deref().map(parse_size) {
        None => {}
        Some(Some(n)) if n >= 256 * 1024 => limits.max_buffered_per_uid = n,
        Some(_) => return usage("--max-buffered-per-uid wants a byte count of at least 256K"),
    }
    match idle_timeout.as_deref().map(parse_seconds) {
        None => {}
        Some(Some(d)) => limits.idle_timeout = d,
        Some(None) => return usage("--idle-timeout wants seconds (fractions allowed, 0: never)"),
    }
    let cfg = Config {
        socket: PathBuf::from(socket.unwrap_or_else(|| server::DEFAULT_SOCKET.to_owned())),
        mode,
        format,
        max_line,
        max_connections,
        max_buffered,
        limits,
    };
    match read {
        Some(file) => Mode::Read(PathBuf::from(file), cfg),
        None => Mode::Serve(cfg),
    }
}

fn main() -> ExitCode {
    let mode = parse_args();
    if let Mode::Exit(code) = mode {
        return ExitCode::from(code);
    }
    // Our own handle on fd 1 (a dup), written in large blocks, bypassing
    // std's line-buffered stdout.
    let stdout = match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => File::from(fd),
        Err(e) => {
            warn!("stdout: {e}");
            return ExitCode::from(1);
        }
    };
    let fields = Output::<File>::env_fields();
    let extra: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let code = match mode {
        Mode::Serve(cfg) => server::serve(&cfg, Output::new(cfg.format, &extra, stdout)),
        Mode::Read(file, cfg) => {
            server::read_file(&file, cfg.max_line, Output::new(cfg.format, &extra, stdout))
        }
        Mode::Exit(code) => i32::from(code),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
