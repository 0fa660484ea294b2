//! Harness for the capture suite: builds test programs, runs them with and
//! without liblogtap, decodes the target and compares it with what the
//! program really wrote.
//!
//! The oracle (see `Scenario::check`):
//! 1. reference run without the library: real stdout, stderr, log file;
//! 2. tapped run (no suppression): the target, per source, must equal the
//!    bytes the program really wrote in that same run, and those must equal
//!    the reference (the library does not change what the program writes);
//! 3. suppressed run: the original destinations get nothing and the target,
//!    per source, equals the reference run.

#![allow(dead_code)]

pub mod kids;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

pub const TIMEOUT: Duration = Duration::from_secs(60);

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The library under test: target/release/liblogtap.so, or the build
/// `LOGTAP_TEST_LIB` names (to see a test fail against an older build).
pub fn so_path() -> PathBuf {
    if let Some(p) = std::env::var_os("LOGTAP_TEST_LIB") {
        return PathBuf::from(p);
    }
    let p = manifest_dir().join("target/release/liblogtap.so");
    if !p.exists() {
        panic!(
            "{} not found: run `cargo build --release` first (make test does)",
            p.display()
        );
    }
    p
}

pub fn programs_dir() -> PathBuf {
    let d = manifest_dir().join("target/test-programs");
    std::fs::create_dir_all(&d).expect("create target/test-programs");
    d
}

fn sources_dir() -> PathBuf {
    manifest_dir().join("tests/programs")
}

/// Whether `tool` is found on PATH.
pub fn have(tool: &str) -> bool {
    which(tool).is_some()
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Prints the skip notice and returns true when `tool` is missing.
pub fn skip_without(tool: &str) -> bool {
    if have(tool) {
        false
    } else {
        eprintln!("skipped: {tool} not installed");
        true
    }
}

// ---------------------------------------------------------------- building

static BUILD_LOCK: Mutex<()> = Mutex::new(());

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The binary exists and is newer than its source.
fn up_to_date(out: &Path, src: &Path) -> bool {
    match (mtime(out), mtime(src)) {
        (Some(o), Some(s)) => s <= o,
        _ => false,
    }
}

/// Runs a compiler command writing `out` (via a temporary name, renamed
/// into place so a concurrent reader never sees half a file).
fn compile(what: &str, mut cmd: Command, tmp: &Path, out: &Path) {
    let res = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run compiler for {what}: {e}"));
    if !res.status.success() {
        panic!(
            "building {what} failed ({}):\n{}{}",
            res.status,
            String::from_utf8_lossy(&res.stdout),
            String::from_utf8_lossy(&res.stderr)
        );
    }
    std::fs::rename(tmp, out).unwrap_or_else(|e| panic!("rename {}: {e}", tmp.display()));
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CVariant {
    /// `gcc -O2 -D_FORTIFY_SOURCE=2 -Wall`
    Plain,
    /// The same plus `-D_FILE_OFFSET_BITS=64` (open64, fopen64… imports).
    Lfs64,
}

pub const C_VARIANTS: [CVariant; 2] = [CVariant::Plain, CVariant::Lfs64];

/// Builds `tests/programs/c/<name>.c` (if stale) and returns the binary.
pub fn c_program(name: &str, v: CVariant) -> PathBuf {
    let src = sources_dir().join(format!("c/{name}.c"));
    let out = programs_dir().join(match v {
        CVariant::Plain => name.to_string(),
        CVariant::Lfs64 => format!("{name}-lfs64"),
    });
    let _g = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if up_to_date(&out, &src) {
        return out;
    }
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let mut cmd = Command::new("gcc");
    cmd.args(["-O2", "-D_FORTIFY_SOURCE=2", "-Wall", "-pthread"]);
    if v == CVariant::Lfs64 {
        cmd.arg("-D_FILE_OFFSET_BITS=64");
    }
    cmd.arg("-o").arg(&tmp).arg(&src);
    compile(&format!("{name} ({v:?})"), cmd, &tmp, &out);
    out
}

/// Builds `tests/programs/cpp/<name>.cpp`; None (after printing the skip
/// notice) when g++ is missing.
pub fn cpp_program(name: &str) -> Option<PathBuf> {
    if skip_without("g++") {
        return None;
    }
    let src = sources_dir().join(format!("cpp/{name}.cpp"));
    let out = programs_dir().join(format!("{name}-cpp"));
    let _g = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if up_to_date(&out, &src) {
        return Some(out);
    }
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let mut cmd = Command::new("g++");
    cmd.args(["-O2", "-D_FORTIFY_SOURCE=2", "-Wall"])
        .arg("-o")
        .arg(&tmp)
        .arg(&src);
    compile(&format!("{name}.cpp"), cmd, &tmp, &out);
    Some(out)
}

/// Compiles `tests/programs/java/<Class>.java` into target/test-programs/java
/// and returns the argv prefix to run it; None when java/javac is missing.
pub fn java_program(class: &str) -> Option<Vec<OsString>> {
    if skip_without("javac") || skip_without("java") {
        return None;
    }
    let src = sources_dir().join(format!("java/{class}.java"));
    let dir = programs_dir().join("java");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("{class}.class"));
    let _g = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !up_to_date(&out, &src) {
        let res = Command::new("javac")
            .arg("-d")
            .arg(&dir)
            .arg(&src)
            .output()
            .expect("run javac");
        assert!(
            res.status.success(),
            "javac failed: {}",
            String::from_utf8_lossy(&res.stderr)
        );
    }
    Some(vec![
        "java".into(),
        // Fewer JVM threads and a faster start; output is unaffected.
        "-Xshare:auto".into(),
        "-XX:TieredStopAtLevel=1".into(),
        "-XX:+UseSerialGC".into(),
        "-cp".into(),
        dir.into_os_string(),
        class.into(),
    ])
}

/// The real python3 executable (not a pyenv shim script, which would add
/// processes of its own under the library); None when absent.
pub fn python3() -> Option<PathBuf> {
    static PY: OnceLock<Option<PathBuf>> = OnceLock::new();
    let p = PY.get_or_init(|| {
        which("python3")?;
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let s = String::from_utf8(out.stdout).ok()?;
        let p = PathBuf::from(s.trim());
        p.is_file().then_some(p)
    });
    if p.is_none() {
        eprintln!("skipped: python3 not installed");
    }
    p.clone()
}

pub fn script(rel: &str) -> PathBuf {
    sources_dir().join(rel)
}

// ---------------------------------------------------------------- temp dirs

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique directory under the system temp dir, removed on drop.
/// A new empty directory `logtap-test-PID-N-NAME` under the temp dir,
/// left in place (see [`TestDir`] for one removed when a test passes).
pub fn fresh_dir(name: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("logtap-test-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).expect("create test dir");
    path
}

pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        TestDir {
            path: fresh_dir(name),
        }
    }
    /// A fresh subdirectory (one per run of a program).
    pub fn sub(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create run dir");
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        // Keep the evidence of a failing test.
        if std::thread::panicking() {
            eprintln!("(kept {} for inspection)", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

// ---------------------------------------------------------------- running

pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    /// Exit code, or 128+signal.
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| 128 + self.status.signal().unwrap_or(0))
    }
}

/// Runs `cmd` (stdin from /dev/null, stdout and stderr to pipes) and kills
/// it and fails the test if it has not finished after `timeout`.
pub fn run_timeout(cmd: Command, timeout: Duration, what: &str) -> Output {
    run_timeout_opts(cmd, timeout, what, false)
}

/// `run_timeout`; with `stdout_after_exit` nothing reads the stdout pipe
/// before the program has exited (it fills up at 64 KiB).
pub fn run_timeout_opts(
    mut cmd: Command,
    timeout: Duration,
    what: &str,
    stdout_after_exit: bool,
) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: spawn {cmd:?}: {e}"));
    let (tx, rx) = mpsc::channel();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if stdout_after_exit {
            let _ = go_rx.recv();
        }
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        let _ = tx.send((1, v));
    });
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        let _ = tx2.send((2, v));
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(s) => break s,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what}: HANG: {cmd:?} did not finish within {timeout:?}; killed");
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    };
    drop(go_tx);
    let (mut stdout, mut stderr) = (None, None);
    for _ in 0..2 {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(5));
        match rx.recv_timeout(left) {
            Ok((1, v)) => stdout = Some(v),
            Ok((_, v)) => stderr = Some(v),
            Err(_) => panic!(
                "{what}: {cmd:?} exited ({status}) but a descendant keeps its stdout/stderr open"
            ),
        }
    }
    Output {
        status,
        stdout: stdout.unwrap(),
        stderr: stderr.unwrap(),
    }
}

/// Environment variables removed from every run, so the caller's own
/// settings cannot leak into a test.
fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k_s = k.to_string_lossy();
        if k_s.starts_with("LLT_")
            || k_s == "LD_PRELOAD"
            || k_s == "PYTHONUNBUFFERED"
            || k_s.starts_with("LC_")
        {
            cmd.env_remove(&k);
        }
    }
    cmd.env("LC_ALL", "C.UTF-8");
}

/// How the library is configured for one run.
#[derive(Clone, Debug)]
pub struct Lib {
    pub tap_into: String,
    pub tap_file: bool,
    pub format: &'static str,
    pub suppress_std: bool,
    pub suppress_file: bool,
    pub extra: Vec<(String, String)>,
}

impl Lib {
    pub fn tap_all() -> Lib {
        Lib {
            tap_into: "3".into(),
            tap_file: true,
            format: "logserver",
            suppress_std: false,
            suppress_file: false,
            extra: Vec::new(),
        }
    }
    pub fn suppressed() -> Lib {
        Lib {
            suppress_std: true,
            suppress_file: true,
            ..Lib::tap_all()
        }
    }
}

/// One run of a program in `dir`: `LOGFILE=<dir>/app.log`, `LOGDIR=<dir>`,
/// cwd `dir`. With `lib`, liblogtap is preloaded and targets `<dir>/target.bin`.
pub struct Run {
    pub dir: PathBuf,
    pub out: Output,
    /// The env assignments that configured the library (for repro lines).
    pub lib_env: Vec<(String, String)>,
    pub argv: Vec<OsString>,
}

impl Run {
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("app.log")
    }
    pub fn target_path(&self) -> PathBuf {
        self.dir.join("target.bin")
    }
    /// The source name the library uses for the tap file.
    pub fn file_source(&self) -> String {
        let p = self.log_path();
        p.to_string_lossy().trim_start_matches('/').to_string()
    }
    pub fn log(&self) -> Vec<u8> {
        std::fs::read(self.log_path()).unwrap_or_default()
    }
    pub fn target(&self) -> BTreeMap<String, Vec<u8>> {
        decode_target(&self.target_path())
    }
    pub fn target_raw(&self) -> Vec<u8> {
        std::fs::read(self.target_path()).unwrap_or_default()
    }
    /// A shell line reproducing this run.
    pub fn repro(&self) -> String {
        let mut s = format!("cd {} && env", self.dir.display());
        s.push_str(&format!(
            " LOGFILE={}/app.log LOGDIR={}",
            self.dir.display(),
            self.dir.display()
        ));
        for (k, v) in &self.lib_env {
            s.push_str(&format!(" {k}={v}"));
        }
        for a in &self.argv {
            s.push_str(&format!(" {}", a.to_string_lossy()));
        }
        s
    }
}

pub fn run_program(
    dir: &Path,
    argv: &[OsString],
    env: &[(String, String)],
    lib: Option<&Lib>,
    what: &str,
) -> Run {
    run_program_opts(dir, argv, env, lib, what, false)
}

/// `run_program`; `stdout_after_exit` as in `run_timeout_opts`.
pub fn run_program_opts(
    dir: &Path,
    argv: &[OsString],
    env: &[(String, String)],
    lib: Option<&Lib>,
    what: &str,
    stdout_after_exit: bool,
) -> Run {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).current_dir(dir);
    clean_env(&mut cmd);
    cmd.env("LOGFILE", dir.join("app.log")).env("LOGDIR", dir);
    let mut lib_env = Vec::new();
    if let Some(l) = lib {
        lib_env.push((
            "LD_PRELOAD".to_string(),
            so_path().to_string_lossy().into_owned(),
        ));
        lib_env.push(("LLT_TAP_INTO".to_string(), l.tap_into.clone()));
        if l.tap_file {
            lib_env.push((
                "LLT_TAP_FILE".to_string(),
                dir.join("app.log").to_string_lossy().into_owned(),
            ));
        }
        lib_env.push((
            "LLT_TARGET".to_string(),
            format!("file:{}", dir.join("target.bin").display()),
        ));
        lib_env.push(("LLT_FORMAT".to_string(), l.format.to_string()));
        if l.suppress_std {
            lib_env.push(("LLT_SUPPRESS_STDOUT".to_string(), "true".to_string()));
        }
        if l.suppress_file {
            lib_env.push(("LLT_SUPPRESS_TAP_FILE".to_string(), "true".to_string()));
        }
        lib_env.extend(l.extra.iter().cloned());
    }
    for (k, v) in env.iter().chain(lib_env.iter()) {
        cmd.env(k, v);
    }
    let out = run_timeout_opts(cmd, TIMEOUT, what, stdout_after_exit);
    Run {
        dir: dir.to_path_buf(),
        out,
        lib_env,
        argv: argv.to_vec(),
    }
}

// ---------------------------------------------------------------- decoding

/// Reads a logserver-format target: data concatenated per source. Fails
/// the test on a malformed or truncated frame or one carrying more than
/// 64 KiB of data. A missing target file is an empty map.
pub fn decode_target(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(_) => return BTreeMap::new(),
    };
    let mut map: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut dec = logtap_wire::Decoder::new();
    let mut bad: Option<String> = None;
    let mut frames = 0usize;
    dec.feed(&bytes, |f| {
        frames += 1;
        if f.data.len() > logtap_wire::MAX_DATA && bad.is_none() {
            bad = Some(format!(
                "frame {frames} carries {} data bytes (> 64 KiB)",
                f.data.len()
            ));
        }
        if logtap_wire::Level::from_number(f.level).is_none() && bad.is_none() {
            bad = Some(format!("frame {frames} has unknown level {}", f.level));
        }
        if f.platform.is_empty() && bad.is_none() {
            bad = Some(format!("frame {frames} has an empty platform"));
        }
        let d = map
            .entry(String::from_utf8_lossy(f.source).into_owned())
            .or_default();
        for w in f.writes() {
            d.extend_from_slice(w.data);
        }
    })
    .unwrap_or_else(|e| {
        panic!(
            "target {} is not a valid logserver stream after {frames} frames: {e}",
            path.display()
        )
    });
    assert!(
        !dec.is_mid_frame() && dec.pending() == 0,
        "target {} ends inside a frame ({} bytes of an unfinished frame)",
        path.display(),
        dec.pending()
    );
    if let Some(b) = bad {
        panic!("target {}: {b}", path.display());
    }
    map
}

// ---------------------------------------------------------------- comparing

fn escape(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// A short description of how `got` differs from `want`, or None if equal.
pub fn diff(got: &[u8], want: &[u8]) -> Option<String> {
    if got == want {
        return None;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let lo = first.saturating_sub(60);
    let ctx = |v: &[u8]| escape(&v[lo.min(v.len())..(first + 80).min(v.len())]);
    let lines = |v: &[u8]| v.iter().filter(|&&c| c == b'\n').count();
    let mut s = format!(
        "got {} bytes ({} lines), want {} bytes ({} lines); first difference at byte {first}\n    got  [{lo}..]: \"{}\"\n    want [{lo}..]: \"{}\"",
        got.len(),
        lines(got),
        want.len(),
        lines(want),
        ctx(got),
        ctx(want)
    );
    if got.len() < 200 && want.len() < 200 {
        s.push_str(&format!(
            "\n    got  all: \"{}\"\n    want all: \"{}\"",
            escape(got),
            escape(want)
        ));
    }
    Some(s)
}

#[track_caller]
pub fn assert_bytes(what: &str, got: &[u8], want: &[u8]) {
    if let Some(d) = diff(got, want) {
        panic!("{what}: {d}");
    }
}

/// Sorted lines (for output whose order across processes/threads is not
/// defined), each line with its newline.
pub fn sorted_lines(b: &[u8]) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = b
        .split_inclusive(|&c| c == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    v.sort();
    v
}

/// Describes lines missing from or extra in `got` versus `want` (as multisets).
pub fn line_diff(got: &[u8], want: &[u8]) -> Option<String> {
    let mut counts: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for l in got.split_inclusive(|&c| c == b'\n') {
        *counts.entry(l.to_vec()).or_default() += 1;
    }
    for l in want.split_inclusive(|&c| c == b'\n') {
        *counts.entry(l.to_vec()).or_default() -= 1;
    }
    let extra: Vec<_> = counts.iter().filter(|(_, &c)| c > 0).collect();
    let missing: Vec<_> = counts.iter().filter(|(_, &c)| c < 0).collect();
    if extra.is_empty() && missing.is_empty() {
        return None;
    }
    let show = |v: &[(&Vec<u8>, &i64)]| {
        v.iter()
            .take(5)
            .map(|(l, c)| format!("\"{}\" x{}", escape(l), c.abs()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(format!(
        "{} distinct lines extra in target (e.g. {}), {} distinct lines missing from target (e.g. {}); got {} bytes, want {} bytes",
        extra.len(),
        show(&extra),
        missing.len(),
        show(&missing),
        got.len(),
        want.len()
    ))
}

// ---------------------------------------------------------------- oracle

pub type LogReader = fn(&Path) -> Vec<u8>;

fn read_app_log(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("app.log")).unwrap_or_default()
}

/// The three-run oracle for one program invocation.
pub struct Scenario {
    pub name: String,
    pub argv: Vec<OsString>,
    pub env: Vec<(String, String)>,
    /// Run the suppression phase too.
    pub suppress: bool,
    /// Compare lines as multisets instead of bytes (multi-process output).
    pub unordered: bool,
    /// The real output differs from run to run (threads, timers): compare
    /// the target with the same run only, not with the reference.
    pub nondeterministic: bool,
    /// What the program "wrote to the log" in a run directory (default:
    /// app.log; rotation tests concatenate the rotated files).
    pub log_reader: LogReader,
    /// Extra library settings for the tapped and suppressed runs.
    pub lib_extra: Vec<(String, String)>,
}

pub struct Outcome {
    /// Holds the run directories (removed when the outcome is dropped).
    pub dir: TestDir,
    pub reference: Run,
    pub tapped: Run,
    pub suppressed: Option<Run>,
}

impl Scenario {
    pub fn new(name: &str, argv: Vec<OsString>) -> Scenario {
        Scenario {
            name: name.to_string(),
            argv,
            env: Vec::new(),
            suppress: true,
            unordered: false,
            nondeterministic: false,
            log_reader: read_app_log,
            lib_extra: Vec::new(),
        }
    }
    pub fn c(name: &str, prog: &str, v: CVariant, args: &[&str]) -> Scenario {
        let mut argv: Vec<OsString> = vec![c_program(prog, v).into_os_string()];
        argv.extend(args.iter().map(OsString::from));
        Scenario::new(&format!("{name} [{prog} {} ({v:?})]", args.join(" ")), argv)
    }
    pub fn env(mut self, k: &str, v: &str) -> Scenario {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn no_suppress(mut self) -> Scenario {
        self.suppress = false;
        self
    }
    pub fn unordered(mut self) -> Scenario {
        self.unordered = true;
        self
    }
    pub fn nondeterministic(mut self) -> Scenario {
        self.nondeterministic = true;
        self
    }
    pub fn lib_env(mut self, k: &str, v: &str) -> Scenario {
        self.lib_extra.push((k.into(), v.into()));
        self
    }
    pub fn log_reader(mut self, r: LogReader) -> Scenario {
        self.log_reader = r;
        self
    }

    fn compare(&self, what: &str, got: &[u8], want: &[u8], run: &Run) -> Option<String> {
        let d = if self.unordered {
            line_diff(got, want)
        } else {
            diff(got, want)
        };
        d.map(|d| format!("{}: {what}: {d}\n    repro: {}", self.name, run.repro()))
    }

    /// Compares the decoded target of `run` with the expected bytes per
    /// source; returns every mismatch.
    fn check_target(
        &self,
        run: &Run,
        want_out: &[u8],
        want_err: &[u8],
        want_log: &[u8],
        phase: &str,
    ) -> Vec<String> {
        let mut errs = Vec::new();
        let mut map = run.target();
        let file_src = run.file_source();
        for (src, want) in [
            ("stdout", want_out),
            ("stderr", want_err),
            (file_src.as_str(), want_log),
        ] {
            let got = map.remove(src).unwrap_or_default();
            if let Some(e) = self.compare(
                &format!(
                    "{phase}: target source `{src}` vs {}",
                    phase_want(phase, src)
                ),
                &got,
                want,
                run,
            ) {
                errs.push(e);
            }
        }
        for (src, data) in map {
            errs.push(format!(
                "{}: {phase}: unexpected source `{src}` in target ({} bytes): \"{}\"\n    repro: {}",
                self.name,
                data.len(),
                escape(&data[..data.len().min(300)]),
                run.repro()
            ));
        }
        errs
    }

    /// Runs the oracle and panics with every mismatch found.
    pub fn check(&self) -> Outcome {
        self.try_check().unwrap_or_else(|e| panic!("{e}"))
    }

    /// `check`, returning the mismatches instead of panicking on them (a
    /// run that hangs or cannot start still panics).
    pub fn try_check(&self) -> Result<Outcome, String> {
        let safe: String = self
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(40)
            .collect();
        let t = TestDir::new(&safe);
        let reference = run_program(
            &t.sub("ref"),
            &self.argv,
            &self.env,
            None,
            &format!("{} (reference)", self.name),
        );
        let ref_log = (self.log_reader)(&reference.dir);
        // A test program that fails on its own proves nothing: the suite's
        // programs exit 0, or 3/4/5 on purpose (error(), err(), errx()).
        if ![0, 3, 4, 5].contains(&reference.out.code()) {
            panic!(
                "{}: the test program itself failed without the library ({}); stderr: \"{}\"\n    repro: {}",
                self.name,
                reference.out.status,
                escape(&reference.out.stderr[..reference.out.stderr.len().min(500)]),
                reference.repro()
            );
        }
        if reference.out.stdout.is_empty() && reference.out.stderr.is_empty() && ref_log.is_empty()
        {
            panic!(
                "{}: the test program wrote nothing without the library",
                self.name
            );
        }
        let mut errs = Vec::new();

        let tapped = run_program(
            &t.sub("tap"),
            &self.argv,
            &self.env,
            Some(&Lib {
                extra: self.lib_extra.clone(),
                ..Lib::tap_all()
            }),
            &format!("{} (tapped)", self.name),
        );
        if tapped.out.code() != reference.out.code() {
            errs.push(format!(
                "{}: exit status with library {} != without {}; stderr with library: \"{}\"\n    repro: {}",
                self.name,
                tapped.out.status,
                reference.out.status,
                escape(&tapped.out.stderr[..tapped.out.stderr.len().min(500)]),
                tapped.repro()
            ));
        }
        let tap_log = (self.log_reader)(&tapped.dir);
        if !self.nondeterministic {
            for (what, got, want) in [
                (
                    "tapped: real stdout with library vs without",
                    &tapped.out.stdout,
                    &reference.out.stdout,
                ),
                (
                    "tapped: real stderr with library vs without",
                    &tapped.out.stderr,
                    &reference.out.stderr,
                ),
                (
                    "tapped: real log file with library vs without",
                    &tap_log,
                    &ref_log,
                ),
            ] {
                if let Some(e) = self.compare(what, got, want, &tapped) {
                    errs.push(e);
                }
            }
        }
        errs.extend(self.check_target(
            &tapped,
            &tapped.out.stdout,
            &tapped.out.stderr,
            &tap_log,
            "tapped",
        ));

        let suppressed = if self.suppress {
            let s = run_program(
                &t.sub("sup"),
                &self.argv,
                &self.env,
                Some(&Lib {
                    extra: self.lib_extra.clone(),
                    ..Lib::suppressed()
                }),
                &format!("{} (suppressed)", self.name),
            );
            if s.out.code() != reference.out.code() {
                errs.push(format!(
                    "{}: exit status with suppression {} != without library {}\n    repro: {}",
                    self.name,
                    s.out.status,
                    reference.out.status,
                    s.repro()
                ));
            }
            let sup_log = (self.log_reader)(&s.dir);
            for (what, got) in [
                ("stdout", &s.out.stdout),
                ("stderr", &s.out.stderr),
                ("log file", &sup_log),
            ] {
                if !got.is_empty() {
                    errs.push(format!(
                        "{}: suppressed: real {what} must be empty, got {} bytes: \"{}\"\n    repro: {}",
                        self.name,
                        got.len(),
                        escape(&got[..got.len().min(300)]),
                        s.repro()
                    ));
                }
            }
            if !self.nondeterministic || self.unordered {
                errs.extend(self.check_target(
                    &s,
                    &reference.out.stdout,
                    &reference.out.stderr,
                    &ref_log,
                    "suppressed",
                ));
            }
            Some(s)
        } else {
            None
        };
        if !errs.is_empty() {
            return Err(format!("{} mismatch(es):\n{}", errs.len(), errs.join("\n")));
        }
        Ok(Outcome {
            dir: t,
            reference,
            tapped,
            suppressed,
        })
    }
}

fn phase_want(phase: &str, src: &str) -> String {
    let what = match src {
        "stdout" => "stdout",
        "stderr" => "stderr",
        _ => "log file",
    };
    if phase == "suppressed" {
        format!("the real {what} of the run without library")
    } else {
        format!("the real {what} of the same run")
    }
}

pub fn os(s: impl AsRef<OsStr>) -> OsString {
    s.as_ref().to_os_string()
}

/// Runs the oracle on a C program mode for both compile variants and
/// reports the mismatches of both together.
pub fn check_variants(name: &str, prog: &str, args: &[&str]) {
    let errs: Vec<String> = C_VARIANTS
        .iter()
        .filter_map(|&v| {
            Scenario::c(name, prog, v, args)
                .try_check()
                .err()
                .map(|e| format!("[{v:?} build] {e}"))
        })
        .collect();
    if !errs.is_empty() {
        panic!(
            "{} of {} compile variants failed:\n{}",
            errs.len(),
            C_VARIANTS.len(),
            errs.join("\n")
        );
    }
}

/// Runs `f` for both C compile variants. Both always run; the failures of
/// each are reported together.
pub fn each_variant(f: impl Fn(CVariant)) {
    let mut fails = Vec::new();
    for v in C_VARIANTS {
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(v))) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            fails.push(format!("[{v:?} build] {msg}"));
        }
    }
    if !fails.is_empty() {
        panic!(
            "{} of {} compile variants failed:\n{}",
            fails.len(),
            C_VARIANTS.len(),
            fails.join("\n")
        );
    }
}
