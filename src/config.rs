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
    /// Mode of a file target the library creates (`LLT_TARGET_MODE`).
    pub target_mode: u32,
    /// `LLT_TARGET_UID`: the uids a socket listener may have; `None` when
    /// not set (any listener).
    pub target_uids: Option<UidList>,
}

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
    const fn defaults() -> Config {
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
            first_connect_ms: 1000,
            reconnect_ms: 1000,
            debug: false,
            buffer_size: 8 << 20,
            flush_ms: 20,
            exit_timeout_ms: 1000,
            platform: FixedStr::new(),
            level_stdout: Level::Info,
            level_stderr: Level::Error,
            level_file: Level::Info,
            python_unbuffered: true,
            private_fds: true,
            target_mode: 0o600,
            target_uids: None,
        }
    }
}

struct Shared(UnsafeCell<Config>);
// SAFETY: written only by `load` in the constructor, before any hook reads
// it (the ACTIVE flag is published with Release after the write).
unsafe impl Sync for Shared {}

static CONFIG: Shared = Shared(UnsafeCell::new(Config::defaults()));

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

fn invalid(name: &[u8], value: &[u8], expect: &[u8]) {
    sys::say(&[
        b"logtap: invalid ",
        &name[..name.len() - 1],
        b"=",
        value,
        b" (",
        expect,
        b"); using the default",
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

fn get_bool(name: &[u8], default: bool) -> bool {
    match env(name) {
        None => default,
        Some(v) => parse_bool(v).unwrap_or_else(|| {
            invalid(name, v, b"expected true/false/1/0/yes/no");
            default
        }),
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

fn get_num(name: &[u8], default: u64, parse: fn(&[u8]) -> Option<u64>, expect: &[u8]) -> u64 {
    match env(name) {
        None => default,
        Some(v) => parse(v).unwrap_or_else(|| {
            invalid(name, v, expect);
            default
        }),
    }
}

fn get_level(name: &[u8], default: Level) -> Level {
    match env(name) {
        None => default,
        Some(v) => Level::parse(v).unwrap_or_else(|| {
            invalid(
                name,
                v,
                b"expected 0-6 or FATAL/ERROR/WARN/INFO/DEBUG/TRACE/ALL",
            );
            default
        }),
    }
}

/// Reads every `LLT_*` variable. Called once, from the constructor.
///
/// # Safety
/// No other thread may be reading the configuration.
pub unsafe fn load() {
    let c = &mut *CONFIG.0.get();
    *c = Config::defaults();

    match env(b"LLT_TAP_INTO\0") {
        None => {}
        Some(v) => match parse_u64(v) {
            Some(n @ 0..=3) => {
                c.tap_stdout = n & 1 != 0;
                c.tap_stderr = n & 2 != 0;
            }
            _ => invalid(
                b"LLT_TAP_INTO\0",
                v,
                b"expected 0 none, 1 stdout, 2 stderr, 3 both",
            ),
        },
    }

    set_default_target(&mut c.target_path);
    if let Some(v) = env(b"LLT_TARGET\0") {
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
            }
            _ => invalid(
                b"LLT_TARGET\0",
                v,
                b"expected file:/abs/path, socket:/abs/path or pantavisor[:/abs/path]; sockets at most 107 bytes",
            ),
        }
    }

    // Unset: version 1 (write time and pid) where logtap-sink reads the
    // frames, version 0 where Pantavisor's server does.
    c.format = if c.target_kind == TargetKind::Pantavisor {
        Format::Logserver
    } else {
        Format::Logtap
    };
    if let Some(v) = env(b"LLT_FORMAT\0") {
        match v {
            b"logserver" => c.format = Format::Logserver,
            b"logtap" => c.format = Format::Logtap,
            b"raw" => c.format = Format::Raw,
            _ => invalid(b"LLT_FORMAT\0", v, b"expected logtap, logserver or raw"),
        }
    }
    if c.target_kind == TargetKind::Pantavisor && c.format != Format::Logserver {
        // Pantavisor's server accepts version 0 only, framed.
        sys::say(&[
            b"logtap: LLT_FORMAT=",
            if c.format == Format::Raw {
                b"raw"
            } else {
                b"logtap"
            },
            b" does not apply to a pantavisor target; using logserver",
        ]);
        c.format = Format::Logserver;
    }

    if let Some(v) = env(b"LLT_TAP_FILE\0") {
        // Relative entries are made absolute against the current directory
        // now, so a later `chdir` of the program does not change them.
        let mut cwd = [0u8; PATH_MAX];
        let cwd = if libc::getcwd(cwd.as_mut_ptr() as *mut libc::c_char, cwd.len()).is_null() {
            None
        } else {
            let n = cwd.iter().position(|&c| c == 0).unwrap_or(0);
            Some(&cwd[..n])
        };
        if let Err(e) = c.tap_files.parse(v, cwd) {
            sys::say(&[
                b"logtap: invalid LLT_TAP_FILE=",
                v,
                b" (",
                e.describe(),
                b")",
            ]);
        }
    }

    c.suppress_std = get_bool(b"LLT_SUPPRESS_STDOUT\0", false);
    c.suppress_file = get_bool(b"LLT_SUPPRESS_TAP_FILE\0", false);
    c.debug = get_bool(b"LLT_DEBUG_MODE\0", false);
    c.python_unbuffered = get_bool(b"LLT_PYTHONUNBUFFERED\0", true);
    c.private_fds = get_bool(b"LLT_PRIVATE_FDS\0", true);
    c.passive_ms = get_num(
        b"LLT_PASSIV_ON_START\0",
        0,
        parse_u64,
        b"expected milliseconds",
    );
    c.first_connect_ms = get_num(
        b"LLT_TARGET_1STCONNECT\0",
        1000,
        parse_seconds_ms,
        b"expected seconds",
    );
    c.reconnect_ms = get_num(
        b"LLT_TARGET_RECONNECT\0",
        1000,
        parse_seconds_ms,
        b"expected seconds",
    );
    c.flush_ms = get_num(
        b"LLT_FLUSH_MS\0",
        20,
        parse_u64,
        b"expected milliseconds, 1-100",
    )
    .clamp(1, 100);
    c.exit_timeout_ms = get_num(
        b"LLT_EXIT_TIMEOUT_MS\0",
        1000,
        parse_u64,
        b"expected milliseconds",
    );
    let size = get_num(
        b"LLT_BUFFER_SIZE\0",
        8 << 20,
        |v| parse_size(v).map(|n| n as u64),
        b"expected bytes with optional K/M/G suffix, 64K-1G",
    );
    c.buffer_size = (size as usize).clamp(64 << 10, 1 << 30).next_power_of_two();
    if let Some(v) = env(b"LLT_TARGET_MODE\0") {
        match parse_octal(v) {
            Some(m) if m <= 0o777 => c.target_mode = m,
            _ => invalid(
                b"LLT_TARGET_MODE\0",
                v,
                b"expected an octal file mode from 0 to 0777 such as 0640",
            ),
        }
    }
    if let Some(v) = env(b"LLT_TARGET_UID\0") {
        match UidList::parse(v) {
            Some(l) => c.target_uids = Some(l),
            None => {
                // A security setting fails closed: a typo must not let any
                // listener in.
                sys::say(&[
                    b"logtap: invalid LLT_TARGET_UID=",
                    v,
                    b" (expected UID[,UID...], at most 16 decimal uids); no listener is accepted",
                ]);
                c.target_uids = Some(UidList {
                    uids: [0; MAX_TARGET_UIDS],
                    n: 0,
                });
            }
        }
    }
    c.level_stdout = get_level(b"LLT_LEVEL_STDOUT\0", Level::Info);
    c.level_stderr = get_level(b"LLT_LEVEL_STDERR\0", Level::Error);
    c.level_file = get_level(b"LLT_LEVEL_FILE\0", Level::Info);

    // Platform: explicit, then the container's hostname (Docker sets it to
    // the container id, Kubernetes to the pod name), then the kernel's.
    let platform = env(b"LLT_PLATFORM\0")
        .filter(|v| !v.is_empty())
        .or_else(|| env(b"HOSTNAME\0").filter(|v| !v.is_empty()));
    match platform {
        Some(p) => {
            c.platform.set(&p[..p.len().min(63)]);
        }
        None => {
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
}
