//! logtap-sink: command line and wiring. The command line is parsed with
//! clap (derive); every flag falls back to its `SINK_*` environment
//! variable, then to its default.

#![deny(unsafe_code)]

use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use logtap_sink::dest::ring;
use logtap_sink::encode::syslog::{parse_facility, SyslogFormat};
use logtap_sink::output::{env_fields, Format, Output};
use logtap_sink::outputs::{Fanout, Filter, Kind, Settings, Spec};
use logtap_sink::policy::Limits;
use logtap_sink::server::{self, Config};
use logtap_sink::warn;

/// Longest `--max-line` accepted.
const MAX_MAX_LINE: usize = 64 * 1024 * 1024;

fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.strip_prefix("0o").unwrap_or(s);
    u32::from_str_radix(t, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| "wants an octal file mode such as 0666".into())
}

/// A byte count with an optional `K`, `M` or `G` suffix (KiB, MiB, GiB).
fn parse_size(s: &str) -> Option<usize> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1024),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1024 * 1024),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (s, 1),
    };
    num.parse::<usize>().ok()?.checked_mul(mult)
}

fn size_at_least(
    min: usize,
    max: usize,
    what: &'static str,
) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |s| match parse_size(s) {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(what.into()),
    }
}

fn parse_format(s: &str) -> Result<Format, String> {
    Format::parse(s).ok_or_else(|| "wants json or text".into())
}

/// Most rotated files a file output keeps per source: rotation renames
/// each of `.1`…`.N` in turn, so a huge N (say 2^64-1) kept the output in
/// a loop of renames at its first rotation, and the sink could not stop.
const MAX_FILES: usize = 1000;

fn max_files(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n <= MAX_FILES => Ok(n),
        _ => Err(format!("wants a number of files from 0 to {MAX_FILES}")),
    }
}

fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("wants a positive number".into()),
    }
}

/// `1000,1001`: numeric ids (names would need NSS, which a static sink in
/// a `scratch` image does not have).
fn parse_ids(s: &str) -> Result<Ids, String> {
    s.split(',')
        .map(|p| p.trim().parse::<u32>().ok().filter(|&id| id != u32::MAX))
        .collect::<Option<Vec<_>>>()
        .filter(|v| !v.is_empty())
        .map(Ids)
        .ok_or_else(|| "wants numeric ids separated by commas".into())
}

/// A comma-separated id list given as one value (a newtype, so that clap
/// does not take the `Vec` for a repeated flag).
#[derive(Clone, Debug)]
struct Ids(Vec<u32>);

fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && (0.0..=86_400.0).contains(f))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| "wants seconds (fractions allowed, 0: never)".into())
}

fn parse_syslog_format(s: &str) -> Result<SyslogFormat, String> {
    SyslogFormat::parse(s).ok_or_else(|| "wants 5424 or 3164".into())
}

fn parse_facility_arg(s: &str) -> Result<u8, String> {
    parse_facility(s).ok_or_else(|| {
        "wants a facility name (user, daemon, local0 … local7, …) or a number 0-23".into()
    })
}

/// Receives logserver_msg frames (from liblogtap or Pantavisor-style
/// clients) on a Unix socket and writes one record per log line to its
/// outputs: JSON lines on stdout by default, text, rotated files, syslog,
/// a memory ring.
#[derive(Parser, Debug)]
#[command(
    name = "logtap-sink",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "\
SPEC = [LEVEL:]KIND[:ARGS]; LEVEL is FATAL ERROR WARN INFO DEBUG TRACE ALL or
0-6 (logserver numbering, 0 most severe); the output takes records at that
level or more severe. KIND: json, text (stdout), file:DIR, syslog (=
syslog:unix:/dev/log), syslog:unix:PATH, syslog:udp:HOST:PORT,
syslog:tcp:HOST:PORT, ring. Example:
  logtap-sink --socket /run/logtap/sink.sock --output file:/var/log/logtap \\
              --output WARN:syslog:unix:/dev/log

Refused connections are counted and summarised on stderr (every 10 s at most
and at exit). When a buffer budget is exceeded, the connection holding the
most unfinished frames is closed.

JSON objects carry timestamp, level, platform, source, pid, uid, message, and
pod_name, namespace, node_name when POD_NAME, POD_NAMESPACE, NODE_NAME are set.
SIGTERM/SIGINT: stop accepting, drain connections, flush partial lines and
outputs, remove the socket, exit 0. See docs/sink.md."
)]
struct Cli {
    /// Socket to create
    #[arg(long, value_name = "PATH", env = "SINK_SOCKET_PATH", default_value = server::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Socket file mode [default: 0660, owner and group; an app running as
    /// another uid needs the socket's group, or 0666 with --allow-uid]
    #[arg(long, value_name = "OCTAL", env = "SINK_SOCKET_MODE", value_parser = parse_mode)]
    mode: Option<u32>,
    /// Serve only peers with these uids (or --allow-gid's gids) [default: anyone]
    #[arg(long, value_name = "UID[,UID]", env = "SINK_ALLOW_UID", value_parser = parse_ids)]
    allow_uid: Option<Ids>,
    /// Serve only peers with this primary gid [default: anyone]
    #[arg(long, value_name = "GID[,GID]", env = "SINK_ALLOW_GID", value_parser = parse_ids)]
    allow_gid: Option<Ids>,
    /// Connections one uid may hold [default: 7/8 of --max-connections]
    #[arg(long, value_name = "N", env = "SINK_MAX_CONNECTIONS_PER_UID", value_parser = positive)]
    max_connections_per_uid: Option<usize>,
    /// Buffered bytes one uid may hold [default: 3/4 of --max-buffered]
    #[arg(long, value_name = "BYTES", env = "SINK_MAX_BUFFERED_PER_UID",
          value_parser = size_at_least(256 * 1024, usize::MAX, "wants a byte count of at least 256K"))]
    max_buffered_per_uid: Option<usize>,
    /// Close a connection that holds an unfinished frame and sends nothing
    /// this long, in seconds (0: never) [default: 30]
    #[arg(long, value_name = "SECS", env = "SINK_IDLE_TIMEOUT", value_parser = parse_seconds)]
    idle_timeout: Option<Duration>,
    /// Format of the stdout output when no --output is given
    #[arg(long, value_name = "json|text", env = "SINK_FORMAT", value_parser = parse_format)]
    format: Option<Format>,
    /// Longest line in one record (1 byte to 64M)
    #[arg(long, value_name = "BYTES", env = "SINK_MAX_LINE",
          value_parser = size_at_least(1, MAX_MAX_LINE, "wants a byte count from 1 to 64M"))]
    max_line: Option<usize>,
    /// Connections served at once
    #[arg(long, value_name = "N", env = "SINK_MAX_CONNECTIONS", value_parser = positive)]
    max_connections: Option<usize>,
    /// Budget for unfinished frames and partial lines over all connections
    #[arg(long, value_name = "BYTES", env = "SINK_MAX_BUFFERED",
          value_parser = size_at_least(1024 * 1024, usize::MAX, "wants a byte count of at least 1M"))]
    max_buffered: Option<usize>,
    /// Where programs keep their buffer as a file, so that one killed
    /// while no sink held it is delivered by the next (a directory on
    /// tmpfs; liblogtap's LLT_SPOOL); off: none [default: the socket's
    /// path plus .spool]
    #[arg(long, value_name = "DIR|off", env = "SINK_SPOOL")]
    spool: Option<PathBuf>,
    /// Decode a frame file (- for stdin) to stdout instead of listening, then exit
    #[arg(long, value_name = "FILE")]
    read: Option<PathBuf>,

    /// An output, repeatable (default: json). Environment: SINK_OUTPUTS,
    /// space-separated
    #[arg(long = "output", value_name = "SPEC")]
    outputs: Vec<String>,
    /// LEVEL:MATCH, repeatable: records whose source or platform matches the
    /// glob MATCH are kept only at LEVEL or more severe (first match decides).
    /// Environment: SINK_FILTERS, space-separated
    #[arg(long = "filter", value_name = "LEVEL:MATCH")]
    filters: Vec<String>,
    /// A line starting with <0>..<7> (sd-daemon.h) takes that syslog severity
    /// as its level and loses the prefix
    #[arg(long, env = "SINK_LEVEL_PREFIX")]
    level_prefix: bool,
    /// file outputs: rotate before a file would grow past this size
    #[arg(long, value_name = "SIZE", env = "SINK_MAX_FILE_SIZE", default_value = "1M",
          value_parser = size_at_least(1, usize::MAX, "wants a size such as 1M"))]
    max_file_size: usize,
    /// file outputs: rotated files kept (<source>.1 newest … <source>.N)
    #[arg(long, value_name = "N", env = "SINK_MAX_FILES", default_value = "10",
          value_parser = max_files)]
    max_files: usize,
    /// file outputs: line format
    #[arg(long, value_name = "text|json", env = "SINK_FILE_FORMAT", default_value = "text",
          value_parser = parse_format)]
    file_format: Format,
    /// syslog outputs: RFC 5424 or RFC 3164 (default: 3164 as the C library
    /// writes it on Unix sockets such as /dev/log, 5424 on UDP and TCP)
    #[arg(long, value_name = "5424|3164", env = "SINK_SYSLOG_FORMAT",
          value_parser = parse_syslog_format)]
    syslog_format: Option<SyslogFormat>,
    /// syslog outputs: facility name or number
    #[arg(long, value_name = "NAME", env = "SINK_SYSLOG_FACILITY", default_value = "user",
          value_parser = parse_facility_arg)]
    syslog_facility: u8,
    /// Keep the last N records in memory (adds a ring output)
    #[arg(long, value_name = "N", env = "SINK_RING_LINES", value_parser = positive)]
    ring_lines: Option<usize>,
    /// ring: at most this many bytes of JSON lines
    #[arg(long, value_name = "BYTES", env = "SINK_RING_SIZE", default_value = "16M",
          value_parser = size_at_least(1024, usize::MAX, "wants a size of at least 1K"))]
    ring_size: usize,
    /// ring: socket serving it to `logtap-sink read`
    #[arg(long, value_name = "PATH", env = "SINK_QUERY_SOCKET")]
    query_socket: Option<PathBuf>,
    /// Bytes each output may hold while it is slow or down before it drops
    #[arg(long, value_name = "BYTES", env = "SINK_OUTPUT_BUFFER", default_value = "16M",
          value_parser = size_at_least(64 * 1024, usize::MAX, "wants a size of at least 64K"))]
    output_buffer: usize,

    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print the records a sink's ring holds (JSON lines), from its query socket
    Read {
        /// The query socket (--query-socket of the sink)
        path: PathBuf,
        /// Then keep printing new records
        #[arg(short, long)]
        follow: bool,
        /// Only new records, no dump
        #[arg(long, conflicts_with = "follow")]
        new: bool,
    },
}

/// Default query socket of the ring.
const DEFAULT_QUERY_SOCKET: &str = "/run/logtap/query.sock";
/// Default ring length (memlogd's).
const DEFAULT_RING_LINES: usize = 5000;

fn usage(msg: &str) -> ExitCode {
    warn!("{msg} (try --help)");
    ExitCode::from(2)
}

fn env_list(name: &str) -> Vec<String> {
    std::env::var(name)
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn main() -> ExitCode {
    // Empty SINK_* variables count as unset, as they always did.
    for (k, v) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("SINK_")) && v.is_empty() {
            std::env::remove_var(&k);
        }
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line, as every other message of the sink.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            return usage(first.strip_prefix("error: ").unwrap_or(first));
        }
    };

    if let Some(Cmd::Read { path, follow, new }) = &cli.command {
        let q = match (follow, new) {
            (_, true) => ring::FOLLOW,
            (true, _) => ring::DUMP_AND_FOLLOW,
            _ => ring::DUMP,
        };
        let mut out = std::io::stdout().lock();
        return match ring::read(path, q, &mut out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                warn!("read {e}");
                ExitCode::from(1)
            }
        };
    }

    let format = cli.format.unwrap_or(Format::Json);
    let mut spec_texts = cli.outputs.clone();
    if spec_texts.is_empty() {
        spec_texts = env_list("SINK_OUTPUTS");
    }
    let mut specs = Vec::new();
    for t in &spec_texts {
        match Spec::parse(t) {
            Ok(s) => specs.push(s),
            Err(e) => return usage(&e),
        }
    }
    let wants_ring = cli.ring_lines.is_some() || cli.query_socket.is_some();
    if specs.is_empty() || (wants_ring && specs.iter().all(|s| s.kind == Kind::Ring)) {
        specs.insert(
            0,
            Spec::parse(match format {
                Format::Json => "json",
                Format::Text => "text",
            })
            .expect("built-in spec"),
        );
    }
    if wants_ring && !specs.iter().any(|s| s.kind == Kind::Ring) {
        specs.push(Spec::parse("ring").expect("built-in spec"));
    }
    let mut filter_texts = cli.filters.clone();
    if filter_texts.is_empty() {
        filter_texts = env_list("SINK_FILTERS");
    }
    let mut filters = Vec::new();
    for t in &filter_texts {
        match Filter::parse(t) {
            Ok(f) => filters.push(f),
            Err(e) => return usage(&e),
        }
    }

    let max_connections = cli
        .max_connections
        .unwrap_or(server::DEFAULT_MAX_CONNECTIONS);
    let max_buffered = cli.max_buffered.unwrap_or(server::DEFAULT_MAX_BUFFERED);
    let mut limits = Limits::defaults(max_connections, max_buffered);
    if let Some(Ids(v)) = &cli.allow_uid {
        limits.allow_uids = v.clone();
    }
    if let Some(Ids(v)) = &cli.allow_gid {
        limits.allow_gids = v.clone();
    }
    if let Some(n) = cli.max_connections_per_uid {
        limits.max_connections_per_uid = n;
    }
    if let Some(n) = cli.max_buffered_per_uid {
        limits.max_buffered_per_uid = n;
    }
    if let Some(d) = cli.idle_timeout {
        limits.idle_timeout = d;
    }
    let spool = match &cli.spool {
        Some(p) if p.as_os_str() == "off" => None,
        Some(p) => Some(p.clone()),
        None => Some(logtap_sink::spool::spool_path(&cli.socket)),
    };
    let cfg = Config {
        socket: cli.socket.clone(),
        spool,
        mode: cli.mode.unwrap_or(server::DEFAULT_MODE),
        format,
        max_line: cli.max_line.unwrap_or(server::DEFAULT_MAX_LINE),
        max_connections,
        max_buffered,
        limits,
    };
    // Our own handle on fd 1 (a dup), written in large blocks, bypassing
    // std's line-buffered stdout.
    let stdout = match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => File::from(fd),
        Err(e) => {
            warn!("stdout: {e}");
            return ExitCode::from(1);
        }
    };
    let fields = env_fields();
    if let Some(file) = &cli.read {
        let extra: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let code = server::read_file(file, cfg.max_line, Output::new(format, &extra, stdout));
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let settings = Settings {
        specs,
        filters,
        level_prefix: cli.level_prefix,
        max_file_size: cli.max_file_size as u64,
        max_files: cli.max_files,
        file_format: cli.file_format,
        syslog_format: cli.syslog_format,
        syslog_facility: cli.syslog_facility,
        ring_lines: cli.ring_lines.unwrap_or(DEFAULT_RING_LINES),
        ring_size: cli.ring_size,
        query_socket: cli
            .query_socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_QUERY_SOCKET)),
        output_buffer: cli.output_buffer,
        extra: fields,
    };
    let mut fanout = match Fanout::start(&settings, stdout) {
        Ok(f) => f,
        Err(e) => {
            warn!("{e}");
            return ExitCode::from(1);
        }
    };
    let code = server::serve(&cfg, &mut fanout);
    fanout.finish();
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
