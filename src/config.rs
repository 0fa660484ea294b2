//! `LLT_*` settings, read once in the constructor.
//!
//! Names and meanings are liblogtap's, so existing deployments keep
//! working; defaults that were defects there are fixed (see README). A bad
//! value is reported in one line on stderr naming the variable and value,
//! and the default is used. Nothing here allocates: values live in fixed
//! buffers inside one static written before the library turns itself on.

use crate::sys;
use crate::tap::patterns::PatternList;
use core::cell::UnsafeCell;
use logtap_wire::Level;

pub const PATH_MAX: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TargetKind {
    File,
    Socket,
    Pantavisor,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    /// `logserver_msg` version 0, exactly what Pantavisor's server reads.
    Logserver,
    /// Version 1, logtap's extension: each write carries its time and pid
    /// (logtap-sink only). The default for `socket:` and `file:` targets.
    Logtap,
    /// The tapped bytes only (liblogtap's format).
    Raw,
}

/// A NUL-terminated byte string in a fixed buffer.
pub struct FixedStr<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Default for FixedStr<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FixedStr<N> {
    pub const fn new() -> Self {
        FixedStr {
            buf: [0; N],
            len: 0,
        }
    }
    pub fn set(&mut self, s: &[u8]) -> bool {
        if s.len() >= N {
            return false;
        }
        self.buf[..s.len()].copy_from_slice(s);
        self.buf[s.len()] = 0;
        self.len = s.len();
        true
    }
    pub fn push(&mut self, s: &[u8]) -> bool {
        if self.len + s.len() >= N {
            return false;
        }
        self.buf[self.len..self.len + s.len()].copy_from_slice(s);
        self.len += s.len();
        self.buf[self.len] = 0;
        true
    }
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    /// With the terminating NUL.
    pub fn c_bytes(&self) -> &[u8] {
        &self.buf[..self.len + 1]
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

pub struct Config {
    pub tap_stdout: bool,
    pub tap_stderr: bool,
    pub target_kind: TargetKind,
    pub target_path: FixedStr<PATH_MAX>,
    pub format: Format,
    /// `LLT_TAP_FILE`: exact paths and patterns (see `tap::patterns`).
    pub tap_files: PatternList,
    pub suppress_std: bool,
    pub suppress_file: bool,
    pub passive_ms: u64,
    pub first_connect_ms: u64,
    pub reconnect_ms: u64,
    pub debug: bool,
    pub buffer_size: usize,
    pub flush_ms: u64,
    pub exit_timeout_ms: u64,
    pub platform: FixedStr<64>,
    pub level_stdout: Level,
    pub level_stderr: Level,
    pub level_file: Level,
    pub python_unbuffered: bool,
    pub private_fds: bool,
    /// `LLT_FATAL_SIGNALS`: deliver what is buffered before the program
    /// dies of a signal whose action is the default (`hooks::signals`).
    pub fatal_signals: bool,
    /// Mode of a file target the library creates (`LLT_TARGET_MODE`).
    pub target_mode: u32,
    /// `LLT_TARGET_UID`: the uids a socket listener may have; `None` when
    /// not set (any listener).
    pub target_uids: Option<UidList>,
    /// `LLT_LIBRARY` (logtap-run only): the library to preload.
    pub library: FixedStr<PATH_MAX>,
    /// `LLT_SPOOL`: the spool directory (empty: `<socket>.spool`).
    pub spool: FixedStr<SPOOL_MAX>,
    /// `LLT_SPOOL=off`: the shared ring is always a memfd.
    pub spool_off: bool,
}

/// The longest `LLT_SPOOL` (with room for a ring's name after it).
pub const SPOOL_MAX: usize = 128;

/// Up to [`MAX_TARGET_UIDS`] uids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UidList {
    uids: [u32; MAX_TARGET_UIDS],
    n: usize,
}

pub const MAX_TARGET_UIDS: usize = 16;

impl UidList {
    pub fn contains(&self, uid: u32) -> bool {
        self.uids[..self.n].contains(&uid)
    }
    /// `UID[,UID…]`, decimal; None when malformed, empty or too long.
    pub fn parse(v: &[u8]) -> Option<UidList> {
        let mut l = UidList {
            uids: [0; MAX_TARGET_UIDS],
            n: 0,
        };
        for part in v.split(|&c| c == b',') {
            let part = part.trim_ascii();
            let uid = parse_u64(part).filter(|&u| u < u64::from(u32::MAX))?;
            if l.n == MAX_TARGET_UIDS {
                return None;
            }
            l.uids[l.n] = uid as u32;
            l.n += 1;
        }
        Some(l)
    }
}

impl Config {
    /// Neutral values for the static; the defaults are the `default` texts
    /// of [`SETTINGS`], applied by `load` through each setting's parser.
    const fn empty() -> Config {
        Config {
            tap_stdout: false,
            tap_stderr: false,
            target_kind: TargetKind::File,
            target_path: FixedStr::new(),
            format: Format::Logserver,
            tap_files: PatternList::new(),
            suppress_std: false,
            suppress_file: false,
            passive_ms: 0,
            first_connect_ms: 0,
            reconnect_ms: 0,
            debug: false,
            buffer_size: 0,
            flush_ms: 0,
            exit_timeout_ms: 0,
            platform: FixedStr::new(),
            level_stdout: Level::Info,
            level_stderr: Level::Error,
            level_file: Level::Info,
            python_unbuffered: false,
            private_fds: false,
            fatal_signals: false,
            target_mode: 0,
            target_uids: None,
            library: FixedStr::new(),
            spool: FixedStr::new(),
            spool_off: false,
        }
    }
}

struct Shared(UnsafeCell<Config>);
// SAFETY: written only by `load` in the constructor, before any hook reads
// it (the ACTIVE flag is published with Release after the write).
unsafe impl Sync for Shared {}

static CONFIG: Shared = Shared(UnsafeCell::new(Config::empty()));

pub fn get() -> &'static Config {
    // SAFETY: see `Shared`; after the constructor the value is read-only.
    unsafe { &*CONFIG.0.get() }
}

/// The default file target for root, and for other users without
/// `XDG_RUNTIME_DIR`: a directory only root can write (never a
/// world-writable one such as `/tmp`, where anyone could plant a symlink, a
/// FIFO or a file of their own under the name).
pub const DEFAULT_TARGET: &[u8] = b"/run/liblogtap.log";
/// Appended to `$XDG_RUNTIME_DIR` (a directory only the user can write) for
/// users other than root.
pub const DEFAULT_TARGET_NAME: &[u8] = b"/liblogtap.log";
pub const DEFAULT_PV_SOCKET: &[u8] = b"/pantavisor/pv-ctrl-log";

fn env(name: &[u8]) -> Option<&'static [u8]> {
    debug_assert!(name.last() == Some(&0));
    // SAFETY: name is NUL-terminated; the environment outlives the constructor's reads.
    unsafe {
        let p = libc::getenv(name.as_ptr() as *const libc::c_char);
        if p.is_null() {
            None
        } else {
            Some(core::ffi::CStr::from_ptr(p).to_bytes())
        }
    }
}

fn invalid(name: &[u8], value: &[u8], e: &Invalid) {
    let sep: &[u8] = if e.instead.is_empty() { b"" } else { b"; " };
    sys::say(&[
        b"logtap: invalid ",
        &name[..name.len() - 1],
        b"=",
        value,
        b" (",
        e.expect,
        b")",
        sep,
        e.instead,
    ]);
}

fn parse_bool(v: &[u8]) -> Option<bool> {
    let mut low = [0u8; 5];
    if v.len() > low.len() {
        return None;
    }
    for (l, c) in low.iter_mut().zip(v) {
        *l = c.to_ascii_lowercase();
    }
    match &low[..v.len()] {
        b"true" | b"1" | b"yes" | b"on" => Some(true),
        b"false" | b"0" | b"no" | b"off" => Some(false),
        _ => None,
    }
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |a, d| a * 10 + u64::from(d - b'0')))
}

/// Seconds, possibly fractional (`0.5`), as milliseconds.
fn parse_seconds_ms(v: &[u8]) -> Option<u64> {
    let (int, frac) = match v.iter().position(|&c| c == b'.') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &b""[..]),
    };
    let whole = if int.is_empty() { 0 } else { parse_u64(int)? };
    let mut ms = 0u64;
    let mut scale = 100;
    for &d in frac.iter().take(3) {
        if !d.is_ascii_digit() {
            return None;
        }
        ms += u64::from(d - b'0') * scale;
        scale /= 10;
    }
    if int.is_empty() && frac.is_empty() || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    whole.checked_mul(1000)?.checked_add(ms)
}

/// Bytes with an optional K/M/G suffix.
fn parse_size(v: &[u8]) -> Option<usize> {
    let (num, mul) = match v.last().map(|c| c.to_ascii_uppercase()) {
        Some(b'K') => (&v[..v.len() - 1], 1u64 << 10),
        Some(b'M') => (&v[..v.len() - 1], 1 << 20),
        Some(b'G') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    parse_u64(num)?.checked_mul(mul).map(|n| n as usize)
}

/// Why a value was refused: what was expected, and what happens instead
/// (empty: nothing to add).
pub struct Invalid {
    pub expect: &'static [u8],
    pub instead: &'static [u8],
}

const fn expected(expect: &'static [u8]) -> Invalid {
    Invalid {
        expect,
        instead: b"using the default",
    }
}

type Apply = fn(&mut Config, &[u8]) -> Result<(), Invalid>;

/// One `LLT_*` setting, defined here only: the library's constructor and
/// `logtap-run` read it through [`load`], and `logtap-run --help` prints
/// the table.
pub struct Setting {
    /// The variable's name, NUL-terminated.
    pub name: &'static [u8],
    /// The value used when the variable is not set, given to the same
    /// parser; empty when the default is computed (the doc line says how).
    pub default: &'static [u8],
    /// One line: what the setting means.
    pub doc: &'static str,
    apply: Apply,
}

impl Setting {
    /// The name without its NUL.
    pub fn name(&self) -> &'static [u8] {
        &self.name[..self.name.len() - 1]
    }
}

const fn setting(
    name: &'static [u8],
    default: &'static [u8],
    doc: &'static str,
    apply: Apply,
) -> Setting {
    Setting {
        name,
        default,
        doc,
        apply,
    }
}

fn bool_into(v: &[u8], dst: &mut bool) -> Result<(), Invalid> {
    *dst = parse_bool(v).ok_or(expected(b"expected true/false/1/0/yes/no"))?;
    Ok(())
}

fn level_into(v: &[u8], dst: &mut Level) -> Result<(), Invalid> {
    *dst = Level::parse(v).ok_or(expected(
        b"expected 0-6 or FATAL/ERROR/WARN/INFO/DEBUG/TRACE/ALL",
    ))?;
    Ok(())
}

fn ms_into(v: &[u8], dst: &mut u64) -> Result<(), Invalid> {
    *dst = parse_u64(v).ok_or(expected(b"expected milliseconds"))?;
    Ok(())
}

fn seconds_into(v: &[u8], dst: &mut u64) -> Result<(), Invalid> {
    *dst = parse_seconds_ms(v).ok_or(expected(b"expected seconds"))?;
    Ok(())
}

fn apply_tap_into(c: &mut Config, v: &[u8]) -> Result<(), Invalid> {
    match parse_u64(v) {
        Some(n @ 0..=3) => {
            c.tap_stdout = n & 1 != 0;
            c.tap_stderr = n & 2 != 0;
            Ok(())
        }
        _ => Err(expected(b"expected 0 none, 1 stdout, 2 stderr, 3 both")),
    }
}

fn apply_target(c: &mut Config, v: &[u8]) -> Result<(), Invalid> {
    let parsed = if let Some(p) = v.strip_prefix(b"file:") {
        Some((TargetKind::File, p))
    } else if let Some(p) = v.strip_prefix(b"socket:") {
        Some((TargetKind::Socket, p))
    } else if let Some(p) = v.strip_prefix(b"pantavisor:") {
        Some((TargetKind::Pantavisor, p))
    } else if v == b"pantavisor" {
        Some((TargetKind::Pantavisor, DEFAULT_PV_SOCKET))
    } else {
        None
    };
    let max_path = if matches!(parsed, Some((TargetKind::File, _))) {
        PATH_MAX - 1
    } else {
        107
    };
    match parsed {
        Some((kind, p)) if p.first() == Some(&b'/') && p.len() <= max_path => {
            c.target_kind = kind;
            c.target_path.set(p);
            Ok(())
        }
        _ => Err(expected(
            b"expected file:/abs/path, socket:/abs/path or pantavisor[:/abs/path]; sockets at most 107 bytes",
        )),
    }
}

fn parse_format(v: &[u8]) -> Option<Format> {
    match v {
        b"logtap" => Some(Format::Logtap),
        b"logserver" => Some(Format::Logserver),
        b"raw" => Some(Format::Raw),
        _ => None,
    }
}

fn apply_format(c: &mut Config, v: &[u8]) -> Result<(), Invalid> {
    c.format = parse_format(v).ok_or(expected(b"expected logtap, logserver or raw"))?;
    Ok(())
}

fn apply_tap_file(c: &mut Config, v: &[u8]) -> Result<(), Invalid> {
    // Relative entries are made absolute against the current directory
    // now, so a later `chdir` of the program does not change them.
    let mut cwd = [0u8; PATH_MAX];
    // SAFETY: the buffer is PATH_MAX writable bytes.
    let got = unsafe { libc::getcwd(cwd.as_mut_ptr() as *mut libc::c_char, cwd.len()) };
    let cwd = if got.is_null() {
        None
    } else {
        let n = cwd.iter().position(|&c| c == 0).unwrap_or(0);
        Some(&cwd[..n])
    };
    c.tap_files.parse(v, cwd).map_err(|e| Invalid {
        expect: e.describe(),
        instead: b"",
    })
}

fn apply_flush(c: &mut Config, v: &[u8]) -> Result<(), Invalid> {
    let ms = parse_u64(v).ok_or(expected(b"expected milliseconds, 1-100"))?;
    c.flush_ms = ms.clamp(1, 100);
    Ok(())
}

fn apply_buffer(c: &mut Config, v: &[u8]) -> Result<(), Invalid> {
    let size = parse_size(v).ok_or(expected(
        b"expected bytes with optional K/M/G suffix, 64K-1G",
    ))?;
    c.buffer_size = size.clamp(64 << 10, 1 << 30).next_power_of_two();
    Ok(())
}

fn apply_mode(c: &mut Config, v: &[u8]) -> Result<(), Invalid> {
    match parse_octal(v) {
        Some(m) if m <= 0o777 => {
            c.target_mode = m;
            Ok(())
        }
        _ => Err(expected(
            b"expected an octal file mode from 0 to 0777 such as 0640",
        )),
    }
}

fn apply_uids(c: &mut Config, v: &[u8]) -> Result<(), Invalid> {
    match UidList::parse(v) {
        Some(l) => {
            c.target_uids = Some(l);
            Ok(())
        }
        None => {
            // A security setting fails closed: a typo must not let any
            // listener in.
            c.target_uids = Some(UidList {
                uids: [0; MAX_TARGET_UIDS],
                n: 0,
            });
            Err(Invalid {
                expect: b"expected UID[,UID...], at most 16 decimal uids",
                instead: b"no listener is accepted",
            })
        }
    }
}

fn apply_platform(c: &mut Config, v: &[u8]) -> Result<(), Invalid> {
    if !v.is_empty() {
        c.platform.set(&v[..v.len().min(63)]);
    }
    Ok(())
}

fn apply_spool(c: &mut Config, v: &[u8]) -> Result<(), Invalid> {
    c.spool_off = v == b"off";
    if c.spool_off || v.is_empty() {
        c.spool.set(b"");
        return Ok(());
    }
    if v.first() != Some(&b'/') || v.len() >= SPOOL_MAX || !c.spool.set(v) {
        c.spool.set(b"");
        return Err(expected(
            b"expected off or an absolute directory path of at most 127 bytes",
        ));
    }
    Ok(())
}

fn apply_library(c: &mut Config, v: &[u8]) -> Result<(), Invalid> {
    if v.first() != Some(&b'/') || !c.library.set(v) {
        return Err(expected(b"expected an absolute path"));
    }
    Ok(())
}

/// Every `LLT_*` setting, in the order they are read.
pub static SETTINGS: &[Setting] = &[
    setting(b"LLT_TAP_INTO\0", b"0", "streams tapped: 0 none, 1 stdout, 2 stderr, 3 both", apply_tap_into),
    setting(b"LLT_TARGET\0", b"", "file:/path, socket:/path or pantavisor[:/path]; default file:/run/liblogtap.log ($XDG_RUNTIME_DIR/liblogtap.log for non-root)", apply_target),
    setting(b"LLT_FORMAT\0", b"", "logtap (version-1 frames: each write's time and pid; default for file: and socket:), logserver (version 0; always for pantavisor) or raw (the bytes as written)", apply_format),
    setting(b"LLT_TAP_FILE\0", b"", "log files to tap: comma-separated paths and patterns (* ? [..] **)", apply_tap_file),
    setting(b"LLT_SUPPRESS_STDOUT\0", b"false", "tapped stdout/stderr go only to the target (to the original output when the target does not take them)", |c, v| bool_into(v, &mut c.suppress_std)),
    setting(b"LLT_SUPPRESS_TAP_FILE\0", b"false", "tapped log files are not written (their bytes go only to the target)", |c, v| bool_into(v, &mut c.suppress_file)),
    setting(b"LLT_DEBUG_MODE\0", b"false", "the library's own diagnostics on stderr", |c, v| bool_into(v, &mut c.debug)),
    setting(b"LLT_PYTHONUNBUFFERED\0", b"true", "set PYTHONUNBUFFERED=1 for tapped programs", |c, v| bool_into(v, &mut c.python_unbuffered)),
    setting(b"LLT_PRIVATE_FDS\0", b"true", "the sender thread keeps its fds in a private fd table", |c, v| bool_into(v, &mut c.private_fds)),
    setting(b"LLT_FATAL_SIGNALS\0", b"true", "deliver what is buffered before the program dies of a signal left at its default action (SIGTERM, SIGSEGV, SIGPIPE...)", |c, v| bool_into(v, &mut c.fatal_signals)),
    setting(b"LLT_PASSIV_ON_START\0", b"0", "milliseconds after start during which nothing is tapped", |c, v| ms_into(v, &mut c.passive_ms)),
    setting(b"LLT_TARGET_1STCONNECT\0", b"1", "seconds to wait for the first connection", |c, v| seconds_into(v, &mut c.first_connect_ms)),
    setting(b"LLT_TARGET_RECONNECT\0", b"1", "seconds between reconnection attempts", |c, v| seconds_into(v, &mut c.reconnect_ms)),
    setting(b"LLT_FLUSH_MS\0", b"20", "milliseconds the sender waits to batch writes, 1-100", apply_flush),
    setting(b"LLT_EXIT_TIMEOUT_MS\0", b"1000", "milliseconds at exit to deliver what is buffered", |c, v| ms_into(v, &mut c.exit_timeout_ms)),
    setting(b"LLT_BUFFER_SIZE\0", b"8M", "buffer size, bytes with K/M/G suffix, 64K-1G", apply_buffer),
    setting(b"LLT_TARGET_MODE\0", b"0600", "octal mode of a file target the library creates", apply_mode),
    setting(b"LLT_TARGET_UID\0", b"", "uids a socket listener may run as (UID[,UID...]); default any", apply_uids),
    setting(b"LLT_LEVEL_STDOUT\0", b"INFO", "level of stdout records (0-6 or FATAL..ALL)", |c, v| level_into(v, &mut c.level_stdout)),
    setting(b"LLT_LEVEL_STDERR\0", b"ERROR", "level of stderr records", |c, v| level_into(v, &mut c.level_stderr)),
    setting(b"LLT_LEVEL_FILE\0", b"INFO", "level of log file records", |c, v| level_into(v, &mut c.level_file)),
    setting(b"LLT_SPOOL\0", b"", "socket: targets: the directory on tmpfs where the buffer outlives a process no sink holds (killed while the sink restarts or before it starts); default the socket's path plus .spool; off: never", apply_spool),
    setting(b"LLT_PLATFORM\0", b"", "the frames' platform field; default $HOSTNAME, else the kernel's host name", apply_platform),
    setting(b"LLT_LIBRARY\0", b"", "logtap-run: the library to preload; default liblogtap.so (musl/liblogtap.so for musl programs) beside logtap-run", apply_library),
];

/// Reads every `LLT_*` variable. Called once, from the constructor (and
/// by `logtap-run`). Allocates nothing.
///
/// # Safety
/// No other thread may be reading the configuration.
pub unsafe fn load() {
    load_with(true)
}

/// `load` without reporting bad values (`logtap-run` reads the settings
/// before it knows whether the library will read, and report, them).
///
/// # Safety
/// As for `load`.
pub unsafe fn load_quiet() {
    load_with(false)
}

unsafe fn load_with(report: bool) {
    let c = &mut *CONFIG.0.get();
    *c = Config::empty();
    set_default_target(&mut c.target_path);
    for s in SETTINGS {
        if !s.default.is_empty() {
            // The defaults are checked by a unit test to parse.
            let _ = (s.apply)(c, s.default);
        }
        if let Some(v) = env(s.name) {
            match (s.apply)(c, v) {
                Err(e) if report => invalid(s.name, v, &e),
                _ => {}
            }
        }
    }
    // Unset (or invalid): version 1 (write time and pid) where logtap-sink
    // reads the frames, version 0 where Pantavisor's server does.
    if env(b"LLT_FORMAT\0").is_none_or(|v| parse_format(v).is_none()) {
        c.format = if c.target_kind == TargetKind::Pantavisor {
            Format::Logserver
        } else {
            Format::Logtap
        };
    }
    if c.target_kind == TargetKind::Pantavisor && c.format != Format::Logserver {
        // Pantavisor's server accepts version 0 only, framed.
        if report {
            sys::say(&[
                b"logtap: LLT_FORMAT=",
                if c.format == Format::Raw {
                    b"raw"
                } else {
                    b"logtap"
                },
                b" does not apply to a pantavisor target; using logserver",
            ]);
        }
        c.format = Format::Logserver;
    }

    // Platform: explicit, then the container's hostname (Docker sets it to
    // the container id, Kubernetes to the pod name), then the kernel's.
    if c.platform.is_empty() {
        if let Some(p) = env(b"HOSTNAME\0").filter(|v| !v.is_empty()) {
            c.platform.set(&p[..p.len().min(63)]);
        }
    }
    if c.platform.is_empty() {
        let mut uts: libc::utsname = core::mem::zeroed();
        if libc::uname(&mut uts) == 0 {
            let name = core::ffi::CStr::from_ptr(uts.nodename.as_ptr()).to_bytes();
            c.platform.set(&name[..name.len().min(63)]);
        }
        if c.platform.is_empty() {
            c.platform.set(b"logtap");
        }
    }
}

/// The default target: `$XDG_RUNTIME_DIR/liblogtap.log` for a user other
/// than root when that variable holds an absolute path, else
/// [`DEFAULT_TARGET`].
unsafe fn set_default_target(dst: &mut FixedStr<PATH_MAX>) {
    dst.set(DEFAULT_TARGET);
    if crate::safe_open::euid() == 0 {
        return;
    }
    if let Some(dir) = env(b"XDG_RUNTIME_DIR\0").filter(|d| d.first() == Some(&b'/')) {
        let dir = dir.strip_suffix(b"/").unwrap_or(dir);
        let mut t = FixedStr::<PATH_MAX>::new();
        if t.set(dir) && t.push(DEFAULT_TARGET_NAME) {
            dst.set(t.bytes());
        }
    }
}

fn parse_octal(v: &[u8]) -> Option<u32> {
    if v.is_empty() || v.len() > 6 || !v.iter().all(|c| (b'0'..=b'7').contains(c)) {
        return None;
    }
    Some(v.iter().fold(0u32, |a, d| a * 8 + u32::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn values() {
        assert_eq!(parse_bool(b"YES"), Some(true));
        assert_eq!(parse_bool(b"0"), Some(false));
        assert_eq!(parse_bool(b"maybe"), None);
        assert_eq!(parse_seconds_ms(b"1.5"), Some(1500));
        assert_eq!(parse_seconds_ms(b"30"), Some(30000));
        assert_eq!(parse_seconds_ms(b"x"), None);
        assert_eq!(parse_size(b"4M"), Some(4 << 20));
        assert_eq!(parse_size(b"12k"), Some(12 << 10));
        assert_eq!(parse_octal(b"0640"), Some(0o640));
        assert_eq!(parse_octal(b"600"), Some(0o600));
        assert_eq!(parse_octal(b"0x1"), None);
        assert_eq!(parse_octal(b"8"), None);
        let l = UidList::parse(b"0, 1000,65534").unwrap();
        assert!(l.contains(0) && l.contains(1000) && l.contains(65534) && !l.contains(1));
        assert!(UidList::parse(b"").is_none());
        assert!(UidList::parse(b"1000,").is_none());
        assert!(UidList::parse(b"bob").is_none());
        assert!(UidList::parse(b"4294967295").is_none());
    }

    #[test]
    fn every_default_parses_and_every_name_is_unique() {
        let mut c = Config::empty();
        for (i, s) in SETTINGS.iter().enumerate() {
            assert!(s.name.starts_with(b"LLT_") && s.name.ends_with(b"\0"));
            assert!(!s.doc.is_empty() && !s.doc.contains('\n'));
            if !s.default.is_empty() {
                assert!((s.apply)(&mut c, s.default).is_ok(), "{}", s.doc);
            }
            assert!(SETTINGS[..i].iter().all(|o| o.name != s.name));
        }
        assert_eq!(c.buffer_size, 8 << 20);
        assert_eq!((c.flush_ms, c.exit_timeout_ms), (20, 1000));
        assert_eq!((c.first_connect_ms, c.reconnect_ms), (1000, 1000));
        assert!(c.python_unbuffered && c.private_fds && c.fatal_signals && !c.debug);
        assert_eq!(c.target_mode, 0o600);
        assert_eq!(c.level_stderr, Level::Error);
    }
}
