//! `LLT_TAP_FILE` as a list of paths and patterns, matched at open time.
//!
//! The value is a `:`-separated list (as `PATH`). An entry without pattern
//! characters (`*`, `?`, `[`) is an exact path, matched by identity (device
//! and inode, so relative paths, symlinks and hard links keep working, as
//! they always did); the others are patterns over the absolute path the
//! program opened:
//!
//! - `*` any run of bytes within one path component, `?` one byte,
//!   `[abc]`, `[a-z]`, `[!a]` / `[^a]` one byte of (or not of) a set; a `[`
//!   without its `]` is an ordinary byte, `[[]` matches a `[`;
//! - a component that is exactly `**` matches any number of components,
//!   none included (`/srv/**/*.log` matches `/srv/a.log` and `/srv/x/y/a.log`).
//!
//! Everything here is pure and allocation-free: the list is parsed once, in
//! the constructor, into fixed storage, and the hook side only reads it.
//! Both matchers run in time linear in pattern × name without recursion
//! (one backtrack point per level, as `**` and `*` only ever need the
//! latest one).
//!
//! The cost a hook pays for an open that matches nothing: a look at the
//! last component of the name it opened against each pattern's last
//! component ([`PatternList::may_match_name`]); only a name that passes is
//! made absolute (a `getcwd` for relative names) and matched whole.

/// Entries kept from `LLT_TAP_FILE`; more are reported and ignored.
pub const MAX_ENTRIES: usize = 32;
/// Bytes of all entries together, each made absolute.
pub const STORE: usize = 16 << 10;
/// Longest path handled (as the kernel's PATH_MAX).
pub const PATH_MAX: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A path without pattern characters: matched by identity.
    Exact,
    /// A pattern over the absolute name the program opened.
    Pattern,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    start: u16,
    len: u16,
    /// Where the last component begins (after the last `/`).
    last: u16,
    /// Literal bytes the last component starts and ends with (before its
    /// first and after its last pattern character): the quick rejection.
    head: u16,
    tail: u16,
    kind: Kind,
}

const ANY: u16 = 256;

#[derive(Clone, Copy, Debug)]
struct Quick {
    entry: u8,
    first: u16,
    last: u16,
    min_len: u16,
}

/// Why a list was not taken whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// More than [`MAX_ENTRIES`] entries; the first ones were kept.
    TooMany,
    /// The entries made absolute exceed [`STORE`] bytes, or one exceeds
    /// [`PATH_MAX`]; the ones that fit were kept.
    TooLong,
    /// A relative entry and no current directory to make it absolute.
    NoCwd,
}

impl ParseError {
    pub fn describe(self) -> &'static [u8] {
        match self {
            ParseError::TooMany => b"more than 32 entries; the first 32 are used",
            ParseError::TooLong => {
                b"longer than 16 KiB (or an entry over 4096 bytes); the entries that fit are used"
            }
            ParseError::NoCwd => b"a relative entry and no current directory; it is ignored",
        }
    }
}

/// The parsed list, in static storage (const-constructible).
pub struct PatternList {
    buf: [u8; STORE],
    used: usize,
    entries: [Entry; MAX_ENTRIES],
    n: usize,
    /// Some pattern ends in `**`: every name may match.
    any_name: bool,
    patterns: usize,
    /// Per pattern, in order: the entry index and the bytes its last
    /// component must start and end with (256: any), packed apart from the
    /// entries so the quick test reads one small array.
    quick: [Quick; MAX_ENTRIES],
}

impl Default for PatternList {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether `s` holds a pattern character.
pub fn has_pattern(s: &[u8]) -> bool {
    s.iter().any(|&c| c == b'*' || c == b'?' || c == b'[')
}

impl PatternList {
    pub const fn new() -> PatternList {
        PatternList {
            buf: [0; STORE],
            used: 0,
            entries: [Entry {
                start: 0,
                len: 0,
                last: 0,
                head: 0,
                tail: 0,
                kind: Kind::Exact,
            }; MAX_ENTRIES],
            n: 0,
            any_name: false,
            patterns: 0,
            quick: [Quick {
                entry: 0,
                first: ANY,
                last: ANY,
                min_len: 0,
            }; MAX_ENTRIES],
        }
    }

    /// Parses `value` (`:`-separated), making relative entries absolute
    /// against `cwd` (None: unknown) and normalising each (`//`, `.`,
    /// `..`). Empty entries are skipped. On error the list holds the
    /// entries that fit.
    pub fn parse(&mut self, value: &[u8], cwd: Option<&[u8]>) -> Result<(), ParseError> {
        *self = PatternList::new();
        let mut err = Ok(());
        for raw in value.split(|&c| c == b':') {
            if raw.is_empty() {
                continue;
            }
            if self.n == MAX_ENTRIES {
                err = err.and(Err(ParseError::TooMany));
                break;
            }
            let mut tmp = [0u8; PATH_MAX];
            let len = if raw[0] == b'/' {
                normalize(b"/", raw, &mut tmp)
            } else {
                match cwd {
                    Some(c) => normalize(c, raw, &mut tmp),
                    None => {
                        err = err.and(Err(ParseError::NoCwd));
                        continue;
                    }
                }
            };
            let Some(len) = len else {
                err = err.and(Err(ParseError::TooLong));
                continue;
            };
            // Each entry is stored NUL-terminated (for system calls).
            if self.used + len + 1 > STORE {
                err = err.and(Err(ParseError::TooLong));
                continue;
            }
            let p = &tmp[..len];
            let last = p.iter().rposition(|&c| c == b'/').map_or(0, |i| i + 1);
            let kind = if has_pattern(p) {
                Kind::Pattern
            } else {
                Kind::Exact
            };
            if kind == Kind::Pattern {
                self.patterns += 1;
                if &p[last..] == b"**" {
                    self.any_name = true;
                }
            }
            self.buf[self.used..self.used + len].copy_from_slice(p);
            self.buf[self.used + len] = 0;
            let lastc = &p[last..];
            let meta = |c: &u8| matches!(c, b'*' | b'?' | b'[');
            let head = lastc.iter().position(meta).unwrap_or(lastc.len());
            // (A `]` may close a set: the literal end stops there too.)
            let tail = lastc
                .iter()
                .rev()
                .position(|c| meta(c) || *c == b']')
                .unwrap_or(lastc.len());
            self.entries[self.n] = Entry {
                start: self.used as u16,
                len: len as u16,
                last: last as u16,
                head: head as u16,
                tail: tail as u16,
                kind,
            };
            if kind == Kind::Pattern {
                self.quick[self.patterns - 1] = Quick {
                    entry: self.n as u8,
                    first: if head > 0 { u16::from(lastc[0]) } else { ANY },
                    last: if tail > 0 {
                        u16::from(lastc[lastc.len() - 1])
                    } else {
                        ANY
                    },
                    min_len: head.max(tail) as u16,
                };
            }
            self.used += len + 1;
            self.n += 1;
        }
        err
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Whether the list holds at least one exact path.
    pub fn has_exact(&self) -> bool {
        self.patterns < self.n
    }

    /// Whether the list holds at least one pattern.
    pub fn has_patterns(&self) -> bool {
        self.patterns > 0
    }

    /// Entry `i`: its bytes (absolute, normalised) and kind.
    pub fn entry(&self, i: usize) -> (&[u8], Kind) {
        let e = &self.entries[i];
        (
            &self.buf[e.start as usize..e.start as usize + e.len as usize],
            e.kind,
        )
    }

    /// The exact entries (matched by identity), each with its NUL.
    pub fn exact_c(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.n).filter_map(|i| {
            let e = &self.entries[i];
            let s = e.start as usize;
            (e.kind == Kind::Exact).then(|| &self.buf[s..s + e.len as usize + 1])
        })
    }

    /// The exact entries (matched by identity).
    pub fn exact(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.n).filter_map(|i| match self.entry(i) {
            (p, Kind::Exact) => Some(p),
            _ => None,
        })
    }

    /// The cheap first test of an open: can a file whose last path
    /// component is `name` match any pattern? False rules a match out;
    /// true means the whole absolute name must be matched.
    #[inline]
    pub fn may_match_name(&self, name: &[u8]) -> bool {
        if self.patterns == 0 {
            return false;
        }
        if self.any_name {
            return true;
        }
        let (Some(&n0), Some(&nl)) = (name.first(), name.last()) else {
            // (No file is opened under an empty last component; let the
            // full match decide.)
            return true;
        };
        for q in &self.quick[..self.patterns] {
            // One byte at each end rules out most names (`*.log` against
            // `x.dat`) before anything else is looked at.
            if (q.last != ANY && q.last != u16::from(nl))
                || (q.first != ANY && q.first != u16::from(n0))
                || name.len() < q.min_len as usize
            {
                continue;
            }
            let e = &self.entries[q.entry as usize];
            let s = e.start as usize;
            let last = &self.buf[s + e.last as usize..s + e.len as usize];
            // Most names fail on the literal start or end (`*.log`,
            // `postgresql-*`) after a few byte comparisons.
            let (h, t) = (e.head as usize, e.tail as usize);
            if name.len() < h.max(t)
                || !same_bytes(&name[name.len() - t..], &last[last.len() - t..])
                || !same_bytes(&name[..h], &last[..h])
            {
                continue;
            }
            if match_component(last, name) {
                return true;
            }
        }
        false
    }

    /// The first pattern matching the absolute, normalised `path`.
    pub fn match_path(&self, path: &[u8]) -> Option<usize> {
        (0..self.n).find(|&i| match self.entry(i) {
            (p, Kind::Pattern) => match_path(p, path),
            _ => false,
        })
    }
}

/// Byte equality of two short slices of the same length, inline: a call
/// to `memcmp` per pattern would cost more than the comparison itself.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// The last component of `path` (what follows the last `/`).
pub fn last_component(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&c| c == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// Writes `rel` resolved against the absolute directory `base` into `out`
/// (an absolute `rel` ignores `base`), lexically: empty and `.` components
/// are dropped, `..` removes the previous one (never above `/`). Returns
/// the length, or None when it does not fit. The result starts with `/`
/// and has no trailing `/` (except `/` itself).
pub fn normalize(base: &[u8], rel: &[u8], out: &mut [u8]) -> Option<usize> {
    if out.is_empty() {
        return None;
    }
    out[0] = b'/';
    let mut n = 1;
    let parts: [&[u8]; 2] = if rel.first() == Some(&b'/') {
        [b"", rel]
    } else {
        [base, rel]
    };
    for part in parts {
        for comp in part.split(|&c| c == b'/') {
            match comp {
                b"" | b"." => {}
                b".." => {
                    // Back to the `/` before the last component.
                    if n > 1 {
                        let cut = out[..n].iter().rposition(|&c| c == b'/').unwrap_or(0);
                        n = cut.max(1);
                    }
                }
                c => {
                    let need = if n > 1 { 1 } else { 0 } + c.len();
                    if n + need > out.len() {
                        return None;
                    }
                    if n > 1 {
                        out[n] = b'/';
                        n += 1;
                    }
                    out[n..n + c.len()].copy_from_slice(c);
                    n += c.len();
                }
            }
        }
    }
    Some(n)
}

/// Whether the absolute, normalised `path` matches `pat` (also absolute
/// and normalised), component by component; `**` spans any number.
pub fn match_path(pat: &[u8], path: &[u8]) -> bool {
    let mut pc = Components::new(pat);
    let mut nc = Components::new(path);
    // The latest `**`: where the pattern resumes after it, and where the
    // name resumes when the next attempt gives `**` one more component.
    let mut star: Option<(Components, Components)> = None;
    loop {
        let (p_save, n_save) = (pc, nc);
        match (pc.next(), nc.next()) {
            (Some(b"**"), _) => {
                // Try zero components first; remember to give it more.
                star = Some((pc, n_save));
                nc = n_save;
                continue;
            }
            (Some(p), Some(n)) if match_component(p, n) => continue,
            (None, None) => return true,
            _ => {}
        }
        let _ = p_save;
        // Mismatch: let the latest `**` take one more component.
        match star {
            Some((p_after, mut n_from)) => {
                if n_from.next().is_none() {
                    return false;
                }
                star = Some((p_after, n_from));
                pc = p_after;
                nc = n_from;
            }
            None => return false,
        }
    }
}

/// Iterator over the components of a path (empty ones skipped).
#[derive(Clone, Copy)]
struct Components<'a> {
    rest: &'a [u8],
}

impl<'a> Components<'a> {
    fn new(p: &'a [u8]) -> Self {
        Components { rest: p }
    }
    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let end = self
                .rest
                .iter()
                .position(|&c| c == b'/')
                .unwrap_or(self.rest.len());
            let c = &self.rest[..end];
            self.rest = &self.rest[(end + 1).min(self.rest.len())..];
            if !c.is_empty() {
                return Some(c);
            }
        }
    }
}

/// Whether one component `name` matches the component pattern `pat`
/// (`*`, `?`, `[...]`; never `/` in either).
pub fn match_component(pat: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0usize, 0usize);
    // The latest `*`: pattern index after it, name index it resumes from.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() || p < pat.len() {
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    // Consecutive stars are one.
                    while p < pat.len() && pat[p] == b'*' {
                        p += 1;
                    }
                    star = Some((p, n));
                    continue;
                }
                b'?' if n < name.len() => {
                    p += 1;
                    n += 1;
                    continue;
                }
                b'[' if n < name.len() => {
                    if let Some((hit, next)) = class(&pat[p..], name[n]) {
                        if hit {
                            p += next;
                            n += 1;
                            continue;
                        }
                    } else if name[n] == b'[' {
                        // No closing `]`: an ordinary `[`.
                        p += 1;
                        n += 1;
                        continue;
                    }
                }
                c if n < name.len() && c == name[n] && c != b'?' && c != b'[' => {
                    p += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) if sn < name.len() => {
                star = Some((sp, sn + 1));
                p = sp;
                n = sn + 1;
            }
            _ => return false,
        }
    }
    true
}

/// A `[...]` set at the start of `pat`: whether `c` is in it and how many
/// pattern bytes it spans; None when there is no closing `]`.
fn class(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    debug_assert_eq!(pat[0], b'[');
    let mut i = 1;
    let negate = matches!(pat.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        let &lo = pat.get(i)?;
        if lo == b']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        // A range `a-z` (a `-` before the closing `]` is literal).
        if pat.get(i + 1) == Some(&b'-') && pat.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = pat[i + 2];
            if lo <= c && c <= hi {
                hit = true;
            }
            i += 3;
        } else {
            if lo == c {
                hit = true;
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp(p: &str, n: &str) -> bool {
        match_component(p.as_bytes(), n.as_bytes())
    }
    fn path(p: &str, n: &str) -> bool {
        match_path(p.as_bytes(), n.as_bytes())
    }
    fn norm(base: &str, rel: &str) -> String {
        let mut out = [0u8; 256];
        let n = normalize(base.as_bytes(), rel.as_bytes(), &mut out).unwrap();
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    #[test]
    fn component_literals_and_question_marks() {
        assert!(comp("access.log", "access.log"));
        assert!(!comp("access.log", "access.lo"));
        assert!(!comp("access.log", "access.logs"));
        assert!(comp("a?c", "abc"));
        assert!(!comp("a?c", "ac"));
        assert!(!comp("?", ""));
        assert!(comp("", ""));
        assert!(!comp("", "a"));
    }

    #[test]
    fn component_stars() {
        assert!(comp("*", ""));
        assert!(comp("*", "anything.at.all"));
        assert!(comp("*.log", "error.log"));
        assert!(comp("*.log", ".log"));
        assert!(!comp("*.log", "error.log.1"));
        assert!(comp("*.log*", "error.log.1"));
        assert!(comp("postgresql-*.log", "postgresql-2026-11-30_061500.log"));
        assert!(!comp(
            "postgresql-*.log",
            "postgresql-2026-11-30_061500.csv"
        ));
        assert!(comp("a*b*c", "aXXbYYc"));
        assert!(comp("a*b*c", "abc"));
        assert!(comp("a*b*c", "abcbc"));
        assert!(!comp("a*b*c", "abcb"));
        assert!(comp("a**b", "ab"));
        assert!(comp("*a", "aaaa"));
        assert!(!comp("*a", "aaab"));
        // Backtracking over many candidates stays linear enough.
        let long = "a".repeat(200);
        assert!(!comp("*a*a*a*a*a*b", &long));
    }

    #[test]
    fn component_classes() {
        assert!(comp("app.log.[0-9]", "app.log.7"));
        assert!(!comp("app.log.[0-9]", "app.log.x"));
        assert!(comp("[abc].log", "b.log"));
        assert!(!comp("[abc].log", "d.log"));
        assert!(comp("[!abc].log", "d.log"));
        assert!(comp("[^abc].log", "d.log"));
        assert!(!comp("[!abc].log", "a.log"));
        assert!(comp("[]]", "]"));
        assert!(comp("[!]]", "x"));
        assert!(!comp("[!]]", "]"));
        assert!(comp("[a-]", "-"));
        assert!(comp("[[]x", "[x"));
        // No closing bracket: an ordinary `[`.
        assert!(comp("[x", "[x"));
        assert!(!comp("[x", "x"));
        assert!(comp(
            "catalina.[0-9][0-9][0-9][0-9]-*.log",
            "catalina.2026-11-30.log"
        ));
        assert!(!comp("[0-9]", ""));
    }

    #[test]
    fn paths_stay_within_components() {
        assert!(path("/var/log/*.log", "/var/log/a.log"));
        assert!(!path("/var/log/*.log", "/var/log/x/a.log"));
        assert!(!path("/var/log/*", "/var/log"));
        assert!(path("/var/*/a.log", "/var/log/a.log"));
        assert!(!path("/var/*/a.log", "/var/a.log"));
        assert!(!path("/var/log/a?log", "/var/log/a/log"));
        assert!(path("/var/log/nginx/*.log", "/var/log/nginx/access.log"));
        assert!(!path("/var/log/nginx/*.log", "/var/log/nginx2/access.log"));
    }

    #[test]
    fn double_star_spans_any_depth() {
        assert!(path("/opt/app/logs/**/*.txt", "/opt/app/logs/a.txt"));
        assert!(path("/opt/app/logs/**/*.txt", "/opt/app/logs/x/a.txt"));
        assert!(path("/opt/app/logs/**/*.txt", "/opt/app/logs/x/y/z/a.txt"));
        assert!(!path("/opt/app/logs/**/*.txt", "/opt/app/a.txt"));
        assert!(!path("/opt/app/logs/**/*.txt", "/opt/app/logs/x/a.log"));
        assert!(path("/**/app.log", "/app.log"));
        assert!(path("/**/app.log", "/a/b/c/app.log"));
        assert!(path("/srv/**", "/srv/a/b"));
        assert!(path("/srv/**", "/srv/a"));
        assert!(path("/a/**/b/**/c.log", "/a/x/b/y/z/c.log"));
        assert!(path("/a/**/b/**/c.log", "/a/b/c.log"));
        assert!(path("/a/**/b/**/c.log", "/a/b/b/b/c.log"));
        assert!(!path("/a/**/b/**/c.log", "/a/x/y/c.log"));
        assert!(path("/a/**/**/c", "/a/c"));
        assert!(path("/a/**/x*/c", "/a/1/2/xy/c"));
        assert!(!path("/a/**/x*/c", "/a/1/2/xy/d/c/e"));
    }

    #[test]
    fn normalising_names() {
        assert_eq!(norm("/", "/var//log/./a.log"), "/var/log/a.log");
        assert_eq!(norm("/srv/app", "logs/a.log"), "/srv/app/logs/a.log");
        assert_eq!(norm("/srv/app", "./logs/../x.log"), "/srv/app/x.log");
        assert_eq!(norm("/srv/app", "../../../../x.log"), "/x.log");
        assert_eq!(norm("/", "x.log"), "/x.log");
        assert_eq!(norm("/srv/app/", "x.log/"), "/srv/app/x.log");
        assert_eq!(norm("/ignored", "/abs/x"), "/abs/x");
        assert_eq!(norm("/", ".."), "/");
        let mut small = [0u8; 8];
        assert_eq!(normalize(b"/", b"/123456789", &mut small), None);
        assert_eq!(normalize(b"/", b"/1234567", &mut small), Some(8));
    }

    #[test]
    fn lists_split_like_path() {
        let mut l = PatternList::new();
        l.parse(
            b"/var/log/nginx/*.log::rel/app.log:/opt/app/logs/**/*.txt:/etc/exact.log",
            Some(b"/home/u"),
        )
        .unwrap();
        assert_eq!(l.len(), 4);
        assert_eq!(l.entry(0), (&b"/var/log/nginx/*.log"[..], Kind::Pattern));
        assert_eq!(l.entry(1), (&b"/home/u/rel/app.log"[..], Kind::Exact));
        assert_eq!(l.entry(3), (&b"/etc/exact.log"[..], Kind::Exact));
        assert!(l.has_patterns());
        assert_eq!(l.exact().count(), 2);
        assert_eq!(l.exact_c().last(), Some(&b"/etc/exact.log\0"[..]));
        assert_eq!(l.match_path(b"/var/log/nginx/error.log"), Some(0));
        assert_eq!(l.match_path(b"/opt/app/logs/2026/11/a.txt"), Some(2));
        assert_eq!(
            l.match_path(b"/etc/exact.log"),
            None,
            "exact entries go by identity"
        );
        assert!(l.may_match_name(b"error.log"));
        assert!(l.may_match_name(b"a.txt"));
        assert!(!l.may_match_name(b"data.bin"));
        assert!(!l.may_match_name(b"exact.log.1"));
    }

    #[test]
    fn quick_rejection_agrees_with_the_full_match() {
        let pats = [
            "*.log",
            "app.log*",
            "catalina.*.log",
            "error-?.log",
            "[a-z]*",
            "a*b*c",
            "x?",
            "*",
            "?",
            "[!.]*.txt",
            "pre*[0-9]",
        ];
        let names = [
            "a.log",
            "app.log",
            "app.log.1",
            "catalina.2026-11-30.log",
            "error-1.log",
            "Error-1.log",
            "abc",
            "x",
            "",
            ".log",
            "pre7",
            "pre",
            "prex",
            "a.txt",
            ".a.txt",
        ];
        for p in pats {
            let mut l = PatternList::new();
            l.parse(format!("/d/{p}").as_bytes(), None).unwrap();
            for n in names {
                let quick = l.may_match_name(n.as_bytes());
                if n.is_empty() {
                    // Conservative: the full match decides.
                    assert!(quick, "{p} vs {n:?}");
                } else {
                    assert_eq!(quick, comp(p, n), "{p} vs {n:?}");
                }
            }
        }
    }

    #[test]
    fn a_single_path_is_exact_as_before() {
        let mut l = PatternList::new();
        l.parse(b"/var/log/app.log", None).unwrap();
        assert_eq!(l.len(), 1);
        assert!(!l.has_patterns());
        assert!(!l.may_match_name(b"app.log"));
        assert_eq!(l.exact().next(), Some(&b"/var/log/app.log"[..]));
        l.parse(b"", None).unwrap();
        assert!(l.is_empty());
    }

    #[test]
    fn trailing_double_star_lets_every_name_through_the_first_test() {
        let mut l = PatternList::new();
        l.parse(b"/srv/logs/**", None).unwrap();
        assert!(l.may_match_name(b"whatever"));
        assert_eq!(l.match_path(b"/srv/logs/a/b"), Some(0));
        assert_eq!(l.match_path(b"/srv/other/a"), None);
    }

    #[test]
    fn bad_lists_keep_what_fits() {
        let mut l = PatternList::new();
        let many: Vec<String> = (0..40).map(|i| format!("/l/{i}/*.log")).collect();
        assert_eq!(
            l.parse(many.join(":").as_bytes(), None),
            Err(ParseError::TooMany)
        );
        assert_eq!(l.len(), MAX_ENTRIES);
        assert_eq!(l.parse(b"rel.log:/abs.log", None), Err(ParseError::NoCwd));
        assert_eq!(l.len(), 1);
        let huge = format!("/{}", "x".repeat(PATH_MAX + 10));
        assert_eq!(
            l.parse(format!("{huge}:/ok/*.log").as_bytes(), None),
            Err(ParseError::TooLong)
        );
        assert_eq!(l.len(), 1);
        assert_eq!(l.entry(0).0, b"/ok/*.log");
    }

    /// Cross-check against a straightforward recursive matcher on many
    /// generated patterns and names.
    #[test]
    fn agrees_with_a_recursive_reference() {
        fn rc(p: &[u8], n: &[u8]) -> bool {
            match p.first() {
                None => n.is_empty(),
                Some(b'*') => (0..=n.len()).any(|k| rc(&p[1..], &n[k..])),
                Some(b'?') => !n.is_empty() && rc(&p[1..], &n[1..]),
                Some(&c) => n.first() == Some(&c) && rc(&p[1..], &n[1..]),
            }
        }
        fn rp(p: &[&[u8]], n: &[&[u8]]) -> bool {
            match p.first() {
                None => n.is_empty(),
                Some(&b"**") => (0..=n.len()).any(|k| rp(&p[1..], &n[k..])),
                Some(c) => !n.is_empty() && rc(c, n[0]) && rp(&p[1..], &n[1..]),
            }
        }
        // A small deterministic generator (no external crate needed here).
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % m) as usize
        };
        let alpha = [b"a" as &[u8], b"b", b"*", b"?", b"ab"];
        for _ in 0..20000 {
            let mut pat: Vec<Vec<u8>> = Vec::new();
            for _ in 0..1 + rnd(4) {
                if rnd(5) == 0 {
                    pat.push(b"**".to_vec());
                } else {
                    let mut c = Vec::new();
                    for _ in 0..rnd(4) {
                        c.extend_from_slice(alpha[rnd(5)]);
                    }
                    if c.is_empty() || c == b"**" {
                        c = b"a".to_vec();
                    }
                    pat.push(c);
                }
            }
            let mut name: Vec<Vec<u8>> = Vec::new();
            for _ in 0..1 + rnd(5) {
                let mut c = Vec::new();
                for _ in 0..1 + rnd(4) {
                    c.push(b"ab"[rnd(2)]);
                }
                name.push(c);
            }
            let pj = format!(
                "/{}",
                pat.iter()
                    .map(|c| String::from_utf8_lossy(c))
                    .collect::<Vec<_>>()
                    .join("/")
            );
            let nj = format!(
                "/{}",
                name.iter()
                    .map(|c| String::from_utf8_lossy(c))
                    .collect::<Vec<_>>()
                    .join("/")
            );
            let pr: Vec<&[u8]> = pat.iter().map(|c| c.as_slice()).collect();
            let nr: Vec<&[u8]> = name.iter().map(|c| c.as_slice()).collect();
            assert_eq!(
                match_path(pj.as_bytes(), nj.as_bytes()),
                rp(&pr, &nr),
                "pattern {pj} name {nj}"
            );
        }
    }
}
