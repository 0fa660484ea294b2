//! logtap-run: one entrypoint that taps any program.
//!
//! `logtap-run [--] PROGRAM [ARGS...]`, configured by the same `LLT_*`
//! variables as liblogtap:
//! - a program the dynamic loader runs (an ELF with `PT_INTERP`, or a
//!   script whose interpreter is one) is exec'd with `LD_PRELOAD` naming
//!   the library beside this binary: nothing of logtap-run remains, it is
//!   exactly as with `LD_PRELOAD` by hand;
//! - any other program (static Go, busybox-static, set-ID programs) runs
//!   as a child with its stdout/stderr on pipes, which `relay` copies to
//!   logtap-run's own stdout/stderr and to the target through the
//!   library's own transport.
//!
//! The library's configuration, buffer, transport and source table are
//! not copied: this crate compiles the library's own source files (every
//! module except the hooks and the C shim, which must never be linked into
//! a binary: a `write` defined here would interpose logtap-run's own
//! calls). docs/DESIGN.md says why this is not a separate crate.

#[path = "../../../src"]
#[allow(dead_code, clippy::all)]
mod lib_src {
    pub mod config;
    pub mod fds;
    pub mod guarded;
    pub mod real;
    pub mod ring;
    pub mod safe_open;
    pub mod stdio;
    pub mod sys;
    pub mod tap;
    pub mod transport;
}
// The library's modules refer to each other as `crate::config` etc.
use lib_src::*;

mod elf;
mod relay;

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

/// A diagnostic line when `LLT_DEBUG_MODE` is on (the library's
/// `crate::debug`, which its modules call).
pub fn debug(parts: &[&[u8]]) {
    if !config::get().debug {
        return;
    }
    sys::say_as(b"logtap-run", parts);
}

fn say(msg: &str) {
    sys::say(&[b"logtap-run: ", msg.as_bytes()]);
}

const USAGE: &str = "usage: logtap-run [--] PROGRAM [ARGS...]

Runs PROGRAM with its stdout, stderr (LLT_TAP_INTO) and log files
(LLT_TAP_FILE) tapped. A dynamically linked PROGRAM gets liblogtap.so
preloaded (logtap-run leaves no process behind); a static one runs as a
child whose stdout and stderr are relayed (its log files cannot be
tapped). Exits with PROGRAM's exit code, or 128 + the signal that
killed it.

Settings (environment):";

fn usage() -> ! {
    println!("{USAGE}");
    for s in config::SETTINGS {
        let default = if s.default.is_empty() {
            String::new()
        } else {
            format!(" (default {})", String::from_utf8_lossy(s.default))
        };
        println!(
            "  {}{default}\n      {}",
            String::from_utf8_lossy(s.name()),
            s.doc
        );
    }
    exit(0)
}

/// PROGRAM as `execvp` would find it.
fn find(program: &OsStr) -> Option<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
        })
}

/// The library to preload: `LLT_LIBRARY`, else the one beside this binary
/// built for the program's C library.
fn library(musl: bool) -> PathBuf {
    let c = config::get();
    if !c.library.is_empty() {
        return PathBuf::from(OsStr::from_bytes(c.library.bytes()));
    }
    let dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    if musl {
        dir.join("musl/liblogtap.so")
    } else {
        dir.join("liblogtap.so")
    }
}

/// `LD_PRELOAD` with `lib` first, keeping what the user had.
fn preload_value(lib: &Path, old: Option<OsString>) -> OsString {
    let mut v = lib.as_os_str().to_owned();
    if let Some(old) = old.filter(|o| !o.is_empty()) {
        let already = old
            .as_bytes()
            .split(|&c| c == b':' || c == b' ')
            .any(|e| e == lib.as_os_str().as_bytes());
        if already {
            return old;
        }
        v.push(":");
        v.push(old);
    }
    v
}

fn exec_failed(program: &OsStr, e: std::io::Error) -> ! {
    say(&format!("cannot run {}: {e}", program.to_string_lossy()));
    exit(if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}

fn main() {
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match args.first().map(|a| a.as_bytes()) {
        None => {
            say("no program given (usage: logtap-run [--] PROGRAM [ARGS...]; --help lists the settings)");
            exit(2);
        }
        Some(b"-h" | b"--help") => {
            // SAFETY: single-threaded; nothing reads the configuration yet.
            unsafe { config::load_quiet() };
            usage()
        }
        Some(b"--version") => {
            println!("logtap-run {}", env!("CARGO_PKG_VERSION"));
            exit(0)
        }
        Some(b"--") => {
            args.remove(0);
        }
        Some(a) if a.starts_with(b"-") => {
            say(&format!(
                "unknown option {} (usage: logtap-run [--] PROGRAM [ARGS...])",
                String::from_utf8_lossy(a)
            ));
            exit(2);
        }
        Some(_) => {}
    }
    if args.is_empty() {
        say("no program given after --");
        exit(2);
    }
    let program = args.remove(0);
    let Some(path) = find(&program) else {
        exit_failed_not_found(&program)
    };

    // Decide first, reading the settings quietly: a program that gets the
    // library reports a bad setting itself (once, not twice).
    // SAFETY: single-threaded; nothing reads the configuration yet.
    unsafe { config::load_quiet() };
    let kind = elf::kind(&path);
    if let Ok(elf::Kind::Dynamic { musl }) = kind {
        let lib = library(musl);
        if lib.is_file() {
            let value = preload_value(&lib, std::env::var_os("LD_PRELOAD"));
            let e = Command::new(&path)
                .arg0(&program)
                .args(&args)
                .env("LD_PRELOAD", value)
                .exec();
            exec_failed(&program, e);
        }
        say(&format!(
            "no library at {} (LLT_LIBRARY); relaying {}'s stdout and stderr instead",
            lib.display(),
            program.to_string_lossy()
        ));
    }
    if let Err(why) = &kind {
        debug(&[b"relaying: ", why.as_bytes()]);
    }
    // SAFETY: still single-threaded; this time bad settings are reported.
    unsafe { config::load() };
    let c = config::get();
    if !c.tap_files.is_empty() {
        say(&format!(
            "{} is relayed, not preloaded: its log files (LLT_TAP_FILE) cannot be tapped, only stdout and stderr",
            program.to_string_lossy()
        ));
    }
    let code = relay::run(&path, &program, &args);
    exit(code)
}

fn exit_failed_not_found(program: &OsStr) -> ! {
    exec_failed(
        program,
        std::io::Error::new(std::io::ErrorKind::NotFound, "not found in PATH"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_keeps_the_users_libraries() {
        let lib = Path::new("/opt/logtap/liblogtap.so");
        assert_eq!(
            preload_value(lib, None),
            OsString::from("/opt/logtap/liblogtap.so")
        );
        assert_eq!(
            preload_value(lib, Some("/usr/lib/libjemalloc.so.2".into())),
            OsString::from("/opt/logtap/liblogtap.so:/usr/lib/libjemalloc.so.2")
        );
        assert_eq!(
            preload_value(lib, Some("/x.so /opt/logtap/liblogtap.so".into())),
            OsString::from("/x.so /opt/logtap/liblogtap.so")
        );
    }
}
