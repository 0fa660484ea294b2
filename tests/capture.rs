//! Integration suite: real programs run under liblogtap.so; what reaches
//! the target must be exactly what the program wrote, per source.
//!
//! Run with `make test` (builds the release library first). The programs
//! live in tests/programs and are built into target/test-programs.

mod common;

use common::*;
use std::ffi::OsString;
use std::path::Path;

// ------------------------------------------------------------ C stdio

/// One `#[test]` running the full oracle on a C program mode, for both
/// compile variants (plain and `-D_FILE_OFFSET_BITS=64`).
macro_rules! c_oracle {
    ($(#[$m:meta])* $name:ident, $prog:literal, $mode:literal) => {
        $(#[$m])*
        #[test]
        fn $name() {
            check_variants(stringify!($name), $prog, &[$mode]);
        }
    };
}

c_oracle!(
    c_printf_formats_positional_and_puts_rewrites,
    "stdio",
    "printf"
);
c_oracle!(c_fprintf_stdout_and_stderr, "stdio", "fprintf");
c_oracle!(c_vprintf_vfprintf_through_wrappers, "stdio", "vprintf");
c_oracle!(c_dprintf_vdprintf_on_fds_1_and_2, "stdio", "dprintf");
c_oracle!(c_puts_fputs_constant_and_dynamic, "stdio", "puts");
c_oracle!(c_fwrite_items_larger_than_one_byte, "stdio", "fwrite");
c_oracle!(c_fputc_putc_putchar, "stdio", "putc");
c_oracle!(
    c_unlocked_functions_and_inlined_putc_unlocked_over_10k,
    "stdio",
    "unlocked"
);
c_oracle!(c_putw_binary_words, "stdio", "putw");
c_oracle!(c_wide_wprintf_fputws_fputwc_utf8, "stdio", "wide");
c_oracle!(c_perror, "stdio", "perror");
c_oracle!(c_warn_warnx, "stdio", "warn");
c_oracle!(c_error_and_error_at_line_with_exit_status, "stdio", "error");
c_oracle!(c_psignal, "stdio", "psignal");
c_oracle!(c_unflushed_stdio_at_exit, "stdio", "exit_unflushed");
c_oracle!(
    c_unflushed_stdio_at_return_from_main,
    "stdio",
    "return_unflushed"
);
c_oracle!(c_underscore_exit_discards_stdio_buffers, "stdio", "_exit");
c_oracle!(c_big_1mb_fwrite_stdout_stderr_log, "stdio", "big");
c_oracle!(c_line_buffered_stdout_mixed_with_write, "stdio", "linebuf");
c_oracle!(
    c_fully_buffered_tiny_setvbuf_buffers,
    "stdio",
    "fullbuf_small"
);
c_oracle!(
    c_tiny_setvbuf_buffer_direct_write_chunks,
    "stdio",
    "tiny_buffer_chunks"
);
c_oracle!(c_unbuffered_stdout, "stdio", "unbuffered");
c_oracle!(c_own_1mb_setvbuf_buffer, "stdio", "bigbuf");
c_oracle!(
    c_mix_printf_and_write_without_fflush,
    "stdio",
    "mix_noflush"
);
c_oracle!(c_mix_printf_and_write_with_fflush, "stdio", "mix_flush");

fn expect_exit(mode: &str, code: i32) {
    each_variant(|v| {
        let o = Scenario::c(mode, "stdio", v, &[mode]).check();
        assert_eq!(
            o.reference.out.code(),
            code,
            "{mode}: the program itself must exit with {code}"
        );
    });
}

#[test]
fn c_err_exits_with_same_status_and_flushes_stdout() {
    expect_exit("err", 4);
}

#[test]
fn c_errx_exits_with_same_status() {
    expect_exit("errx", 5);
}

// ------------------------------------------------------------ tap file

c_oracle!(tapfile_open, "tapfile", "open");
c_oracle!(
    tapfile_open_without_mode_fortified,
    "tapfile",
    "open_nomode"
);
c_oracle!(tapfile_open64_and_fopen64, "tapfile", "open64");
c_oracle!(tapfile_openat_with_dirfd_and_at_fdcwd, "tapfile", "openat");
c_oracle!(tapfile_creat, "tapfile", "creat");
c_oracle!(tapfile_fopen_w_a_aplus_with_stdio, "tapfile", "fopen");
c_oracle!(tapfile_freopen_stdout_onto_log, "tapfile", "freopen");
c_oracle!(tapfile_fdopen, "tapfile", "fdopen");
c_oracle!(
    tapfile_relative_paths_after_chdir,
    "tapfile",
    "chdir_relative"
);
c_oracle!(tapfile_symlink_to_log, "tapfile", "symlink");
c_oracle!(tapfile_dup_dup2_dup3_fcntl_dupfd_copies, "tapfile", "dups");
c_oracle!(
    tapfile_several_fds_and_streams_at_once,
    "tapfile",
    "several"
);
c_oracle!(
    tapfile_reopen_per_line_1000_times,
    "tapfile",
    "reopen_per_line"
);
c_oracle!(
    tapfile_nginx_dup2_log_onto_stderr,
    "tapfile",
    "nginx_stderr"
);
c_oracle!(tapfile_writev_pwrite_pwritev, "tapfile", "writev_pwrite");

fn rotated_log(dir: &Path) -> Vec<u8> {
    let mut v = std::fs::read(dir.join("app.log.1")).unwrap_or_default();
    v.extend(std::fs::read(dir.join("app.log")).unwrap_or_default());
    v
}

#[test]
fn tapfile_rename_and_reopen_rotation_keeps_all_lines_in_order() {
    each_variant(|v| {
        Scenario::c("rotation", "tapfile", v, &["rotate"])
            .log_reader(rotated_log)
            .check();
    });
}

#[test]
fn tapfile_relative_llt_tap_file_resolved_at_start() {
    each_variant(|v| {
        Scenario::c("relative LLT_TAP_FILE", "tapfile", v, &["open"])
            .lib_env("LLT_TAP_FILE", "app.log")
            .check();
    });
}

/// fd reuse: the unrelated file's data (lines with PRIVATE) must never
/// reach the target, whichever way the log fd was closed.
fn fd_reuse(mode: &str) {
    each_variant(|v| {
        let o = Scenario::c(&format!("fd reuse after {mode}"), "tapfile", v, &[mode]).check();
        for run in [Some(&o.tapped), o.suppressed.as_ref()]
            .into_iter()
            .flatten()
        {
            let raw = run.target_raw();
            assert!(
                !raw.windows(7).any(|w| w == b"PRIVATE"),
                "{mode} ({v:?}): data written to an unrelated file on a reused fd reached the target\n    repro: {}",
                run.repro()
            );
        }
        let private = std::fs::read(o.suppressed.as_ref().unwrap().dir.join("private.txt"))
            .unwrap_or_default();
        assert!(
            !private.is_empty() || mode == "reuse_dup_copy",
            "{mode} ({v:?}): the unrelated file must get its data even with suppression on"
        );
    });
}

#[test]
fn fd_reuse_after_close() {
    fd_reuse("reuse_close");
}
#[test]
fn fd_reuse_after_fclose() {
    fd_reuse("reuse_fclose");
}
#[test]
fn fd_reuse_after_close_range() {
    fd_reuse("reuse_close_range");
}
#[test]
fn fd_reuse_after_dup2_over_the_log_fd() {
    fd_reuse("reuse_dup2_over");
}
#[test]
fn fd_reuse_after_closefrom() {
    fd_reuse("reuse_closefrom");
}
#[test]
fn fd_reuse_after_raw_close_syscall() {
    fd_reuse("reuse_raw_syscall");
}
#[test]
fn fd_reuse_of_a_closed_dup_by_a_pipe() {
    fd_reuse("reuse_dup_copy");
}

// ------------------------------------------------------------ C++

fn cpp(mode: &str) {
    let Some(p) = cpp_program("streams") else {
        return;
    };
    Scenario::new(
        &format!("c++ streams {mode}"),
        vec![p.into_os_string(), mode.into()],
    )
    .check();
}

#[test]
fn cpp_cout_with_endl() {
    cpp("endl");
}
#[test]
fn cpp_cout_without_endl_flushed_at_exit() {
    cpp("noendl");
}
#[test]
fn cpp_cerr_clog_and_cout() {
    cpp("cerr");
}
#[test]
fn cpp_sync_with_stdio_false() {
    cpp("nosync");
}
#[test]
fn cpp_ofstream_to_tap_file() {
    cpp("ofstream");
}

// ------------------------------------------------------------ other runtimes

#[test]
fn python_print_stdout_stderr_and_logging_filehandler() {
    let Some(py) = python3() else { return };
    Scenario::new(
        "python capture.py",
        vec![
            py.into_os_string(),
            script("py/capture.py").into_os_string(),
        ],
    )
    .check();
}

fn bash(mode: &str) {
    Scenario::new(
        &format!("bash capture.sh {mode}"),
        vec![
            "/bin/bash".into(),
            script("sh/capture.sh").into_os_string(),
            mode.into(),
        ],
    )
    .check();
}

#[test]
fn bash_builtins_echo_printf_redirections_and_exec_fd() {
    bash("builtins");
}
#[test]
fn bash_running_coreutils() {
    bash("coreutils");
}
#[test]
fn bash_builtins_and_coreutils_interleaved() {
    bash("all");
}

fn argv(a: &[&str]) -> Vec<OsString> {
    a.iter().map(OsString::from).collect()
}

#[test]
fn coreutils_echo() {
    Scenario::new(
        "/bin/echo",
        argv(&["/bin/echo", "hello", "from", "coreutils", "\u{e9}"]),
    )
    .check();
}
#[test]
fn coreutils_cat_file() {
    let src = script("c/stdio.c");
    Scenario::new(
        "cat",
        vec![
            "cat".into(),
            src.clone().into_os_string(),
            src.into_os_string(),
        ],
    )
    .check();
}
#[test]
fn coreutils_printf() {
    Scenario::new(
        "printf",
        argv(&[
            "/usr/bin/printf",
            "%s=%d %x\\n",
            "a",
            "1",
            "255",
            "b",
            "2",
            "16",
        ]),
    )
    .check();
}
#[test]
fn coreutils_seq_20000() {
    Scenario::new("seq", argv(&["seq", "1", "20000"])).check();
}

#[test]
fn perl_print_stderr_and_log_file() {
    if skip_without("perl") {
        return;
    }
    Scenario::new(
        "perl",
        vec!["perl".into(), script("pl/capture.pl").into_os_string()],
    )
    .check();
}

#[test]
fn java_system_out_err_and_filewriter() {
    let Some(a) = java_program("Hello") else {
        return;
    };
    Scenario::new("java Hello", a).check();
}

// ------------------------------------------------------------ passthrough

#[test]
fn passthrough_output_to_closed_stdout_fails_the_same_way() {
    each_variant(|v| {
        let o = Scenario::c("closed stdout", "passthrough", v, &["closed_stdout"]).check();
        let rep = String::from_utf8_lossy(&o.reference.out.stderr).into_owned();
        assert!(
            rep.contains("write(1) after close=-1 errno=9 (EBADF)"),
            "{rep}"
        );
    });
}

#[test]
fn passthrough_return_values_and_errno_unchanged() {
    each_variant(|v| {
        let o = Scenario::c("return values", "passthrough", v, &["retvals"]).check();
        // Sanity: the report is there and says what libc says.
        let rep = String::from_utf8_lossy(&o.reference.out.stderr).into_owned();
        assert!(
            rep.contains("write(42) closed fd=-1 errno=9 (EBADF)"),
            "{rep}"
        );
        assert!(
            rep.contains("errno after printf=0 errno=33 (EDOM)"),
            "{rep}"
        );
    });
}

/// `open` returns the lowest free fd; the library's own connection must
/// never take that number from the program, not even for a moment. The
/// window is short, so the program runs many times.
#[test]
fn passthrough_open_returns_lowest_free_fd_while_library_connects() {
    let t = TestDir::new("fdnum");
    let prog = vec![
        c_program("tapfile", CVariant::Plain).into_os_string(),
        "fdnum".into(),
    ];
    let reference = run_program(&t.sub("ref"), &prog, &[], None, "fdnum reference");
    assert!(
        reference
            .out
            .stdout
            .starts_with(b"log fd=3, later opens on another number: 0 "),
        "fdnum reference: {:?}",
        String::from_utf8_lossy(&reference.out.stdout)
    );
    let mut bad = Vec::new();
    let runs = 20;
    for i in 0..runs {
        let r = run_program(&t.sub("run"), &prog, &[], Some(&Lib::tap_all()), "fdnum");
        if r.out.stdout != reference.out.stdout || r.out.code() != 0 {
            bad.push(format!(
                "run {i}: \"{}\"",
                String::from_utf8_lossy(&r.out.stdout).trim()
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {runs} runs saw a different fd number from open() than without the library (\"{}\"): {}\n    repro: {}",
        bad.len(),
        String::from_utf8_lossy(&reference.out.stdout).trim(),
        bad.join(", "),
        "for i in $(seq 20); do LOGFILE=$PWD/app.log LOGDIR=$PWD LD_PRELOAD=.../liblogtap.so LLT_TAP_INTO=3 LLT_TAP_FILE=$PWD/app.log LLT_TARGET=file:$PWD/t.bin target/test-programs/tapfile fdnum; done | sort | uniq -c"
    );
}

fn fifo_pattern(n: usize) -> Vec<u8> {
    (0..n)
        .map(|k| {
            if k % 100 == 99 {
                b'\n'
            } else {
                b'a' + (k % 26) as u8
            }
        })
        .collect()
}

#[test]
fn passthrough_partial_write_to_full_nonblocking_fifo() {
    let t = TestDir::new("fifo");
    let prog = vec![
        c_program("passthrough", CVariant::Plain).into_os_string(),
        "nonblock_fifo".into(),
    ];
    let reference = run_program(&t.sub("ref"), &prog, &[], None, "fifo reference");
    let tapped = run_program(
        &t.sub("tap"),
        &prog,
        &[],
        Some(&Lib::tap_all()),
        "fifo tapped",
    );
    assert_bytes("fifo: program's report (accepted bytes, partial writes, last errno) with vs without library", &tapped.out.stdout, &reference.out.stdout);
    let rep = String::from_utf8_lossy(&reference.out.stdout).into_owned();
    assert!(
        rep.contains("errno=EAGAIN") && !rep.contains("partial_writes=0"),
        "fifo did not produce a partial write then EAGAIN: {rep}"
    );
    let accepted: usize = rep
        .split("accepted=")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .expect("accepted=N");
    let mut map = tapped.target();
    let got = map.remove(&tapped.file_source()).unwrap_or_default();
    if let Some(d) = diff(&got, &fifo_pattern(accepted)) {
        panic!("fifo: target must hold exactly the {accepted} bytes the kernel accepted: {d}\n    repro: {}", tapped.repro());
    }
}

/// Tapped stdout is a non-blocking pipe that nobody reads until the program
/// has exited: write returns short, then -1 EAGAIN, as without the library,
/// and the target holds exactly the bytes the pipe accepted.
#[test]
fn passthrough_partial_write_to_full_nonblocking_stdout_pipe() {
    let t = TestDir::new("nbstdout");
    let prog = vec![
        c_program("passthrough", CVariant::Plain).into_os_string(),
        "nonblock_stdout_child".into(),
    ];
    let run =
        |sub: &str, lib: Option<&Lib>| run_program_opts(&t.sub(sub), &prog, &[], lib, sub, true);
    let reference = run("ref", None);
    let rep = String::from_utf8_lossy(&reference.out.stderr).into_owned();
    assert!(
        rep.contains("errno=EAGAIN") && !rep.contains("partial_writes=0"),
        "the pipe did not produce a partial write then EAGAIN: {rep}"
    );
    let accepted: usize = rep
        .split("accepted=")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .expect("accepted=N");
    assert_bytes(
        "non-blocking stdout: bytes in the pipe without library",
        &reference.out.stdout,
        &fifo_pattern(accepted),
    );
    let tapped = run("tap", Some(&Lib::tap_all()));
    assert_bytes(
        &format!(
            "non-blocking stdout: program's report (accepted bytes, partial writes, last errno) with vs without library\n    repro: {}",
            tapped.repro()
        ),
        &tapped.out.stderr,
        &reference.out.stderr,
    );
    assert_bytes(
        "non-blocking stdout: bytes in the pipe with library",
        &tapped.out.stdout,
        &reference.out.stdout,
    );
    let got = tapped.target().remove("stdout").unwrap_or_default();
    if let Some(d) = diff(&got, &tapped.out.stdout) {
        panic!(
            "non-blocking stdout: target must hold exactly the {accepted} bytes the pipe accepted: {d}\n    repro: {} (stdout: a pipe read only after exit)",
            tapped.repro()
        );
    }
}

#[test]
fn passthrough_isatty_on_a_terminal() {
    if skip_without("script") {
        return;
    }
    let t = TestDir::new("tty");
    let prog = c_program("passthrough", CVariant::Plain);
    let target = t.path.join("target.bin");
    let inner = format!(
        "env LD_PRELOAD={} LLT_TAP_INTO=3 LLT_TARGET=file:{} {} isatty",
        so_path().display(),
        target.display(),
        prog.display()
    );
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &inner, "/dev/null"]);
    let out = run_timeout(cmd, TIMEOUT, "script isatty");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !text.contains("isatty(1)=") {
        eprintln!("skipped: script could not provide a terminal here: {text:?}");
        return;
    }
    assert!(
        text.contains("isatty(1)=1"),
        "isatty(1) must stay 1 on a terminal under the library; program said {text:?}"
    );
    let map = decode_target(&target);
    let tapped = map.get("stdout").cloned().unwrap_or_default();
    assert!(
        tapped.windows(11).any(|w| w == b"isatty(1)=1"),
        "terminal stdout must be tapped; target stdout: {:?}",
        String::from_utf8_lossy(&tapped)
    );
}

// ------------------------------------------------------------ configuration

fn stdio_run(t: &TestDir, sub: &str, mode: &str, lib: Option<&Lib>) -> Run {
    let prog = vec![
        c_program("stdio", CVariant::Plain).into_os_string(),
        mode.into(),
    ];
    run_program(
        &t.sub(sub),
        &prog,
        &[],
        lib,
        &format!("stdio {mode} ({sub})"),
    )
}

/// With `LLT_TAP_INTO=tap_into`, the target holds `source` and nothing else.
fn taps_only(tap_into: &str, source: &str) {
    let t = TestDir::new(&format!("tap{tap_into}"));
    let r = stdio_run(
        &t,
        "run",
        "fprintf",
        Some(&Lib {
            tap_into: tap_into.into(),
            tap_file: false,
            ..Lib::tap_all()
        }),
    );
    let mut map = r.target();
    let want = if source == "stdout" {
        &r.out.stdout
    } else {
        &r.out.stderr
    };
    assert_bytes(
        &format!("LLT_TAP_INTO={tap_into}: target {source}"),
        &map.remove(source).unwrap_or_default(),
        want,
    );
    assert!(
        map.is_empty(),
        "LLT_TAP_INTO={tap_into} must tap only {source}; also got sources {:?}\n    repro: {}",
        map.keys().collect::<Vec<_>>(),
        r.repro()
    );
}

#[test]
fn config_tap_into_1_taps_only_stdout() {
    taps_only("1", "stdout");
}

#[test]
fn config_tap_into_2_taps_only_stderr() {
    taps_only("2", "stderr");
}

#[test]
fn config_tap_into_0_taps_nothing() {
    let t = TestDir::new("tap0");
    let reference = stdio_run(&t, "ref", "fprintf", None);
    let r = stdio_run(
        &t,
        "run",
        "fprintf",
        Some(&Lib {
            tap_into: "0".into(),
            tap_file: false,
            ..Lib::tap_all()
        }),
    );
    assert_bytes(
        "LLT_TAP_INTO=0: real stdout",
        &r.out.stdout,
        &reference.out.stdout,
    );
    assert_bytes(
        "LLT_TAP_INTO=0: real stderr",
        &r.out.stderr,
        &reference.out.stderr,
    );
    assert!(
        r.target_raw().is_empty(),
        "LLT_TAP_INTO=0 must leave the target empty or absent; got {} bytes\n    repro: {}",
        r.target_raw().len(),
        r.repro()
    );
}

/// A bad value: exactly one stderr line naming variable and value; the
/// program's own output is unchanged.
fn bad_value(var: &str, value: &str, more: impl FnOnce(&Run)) {
    let t = TestDir::new("badvalue");
    let reference = stdio_run(&t, "ref", "stdout_only", None);
    let lib = Lib {
        extra: vec![(var.into(), value.into())],
        ..Lib::tap_all()
    };
    let r = stdio_run(&t, "run", "stdout_only", Some(&lib));
    assert_eq!(r.out.code(), 0, "{var}={value}: program must still run");
    assert_bytes(
        &format!("{var}={value}: real stdout"),
        &r.out.stdout,
        &reference.out.stdout,
    );
    let err = String::from_utf8_lossy(&r.out.stderr).into_owned();
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].contains(var) && lines[0].contains(value) && err.ends_with('\n'),
        "{var}={value}: expected exactly one stderr line naming the variable and the value, got {err:?}\n    repro: {}",
        r.repro()
    );
    more(&r);
}

#[test]
fn config_bad_tap_into_value_reported_once() {
    bad_value("LLT_TAP_INTO", "banana", |_| {});
}

#[test]
fn config_bad_suppress_value_reported_once_and_not_suppressing() {
    bad_value("LLT_SUPPRESS_STDOUT", "maybe", |r| {
        let map = r.target();
        let got = map.get("stdout").map_or(&[][..], |v| v);
        assert_bytes(
            "LLT_SUPPRESS_STDOUT=maybe: target stdout (default: tapped, not suppressed)",
            got,
            &r.out.stdout,
        );
    });
}

fn python_env(env: &[(&str, &str)], lib: Option<Lib>) -> Option<String> {
    let py = python3()?;
    let t = TestDir::new("pyenv");
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let prog = vec![py.into_os_string(), script("py/env.py").into_os_string()];
    let r = run_program(&t.sub("run"), &prog, &env, lib.as_ref(), "python env.py");
    Some(String::from_utf8_lossy(&r.out.stdout).trim().to_string())
}

#[test]
fn config_pythonunbuffered_set_only_when_unset() {
    let Some(plain) = python_env(&[], None) else {
        return;
    };
    assert_eq!(plain, "PYTHONUNBUFFERED=None", "without the library");
    assert_eq!(
        python_env(&[], Some(Lib::tap_all())).unwrap(),
        "PYTHONUNBUFFERED=1",
        "library sets it when unset"
    );
    assert_eq!(
        python_env(&[("PYTHONUNBUFFERED", "0")], Some(Lib::tap_all())).unwrap(),
        "PYTHONUNBUFFERED=0",
        "library must not overwrite the user's value"
    );
    assert_eq!(
        python_env(
            &[],
            Some(Lib {
                extra: vec![("LLT_PYTHONUNBUFFERED".into(), "false".into())],
                ..Lib::tap_all()
            })
        )
        .unwrap(),
        "PYTHONUNBUFFERED=None",
        "LLT_PYTHONUNBUFFERED=false must leave it unset"
    );
}

#[test]
fn config_raw_format_single_source_is_exact_bytes() {
    let t = TestDir::new("raw1");
    let lib = Lib {
        format: "raw",
        tap_into: "1".into(),
        tap_file: false,
        ..Lib::tap_all()
    };
    let r = stdio_run(&t, "run", "mix_noflush", Some(&lib));
    assert_bytes(
        &format!("raw target vs real stdout\n    repro: {}", r.repro()),
        &r.target_raw(),
        &r.out.stdout,
    );
    let s = stdio_run(
        &t,
        "sup",
        "mix_noflush",
        Some(&Lib {
            suppress_std: true,
            ..lib
        }),
    );
    let reference = stdio_run(&t, "ref", "mix_noflush", None);
    assert!(
        s.out.stdout.is_empty(),
        "raw + suppression: real stdout must be empty"
    );
    assert_bytes(
        "raw + suppression: target vs reference stdout",
        &s.target_raw(),
        &reference.out.stdout,
    );
}

#[test]
fn config_raw_format_all_sources_mixed() {
    let t = TestDir::new("raw3");
    let prog = vec![
        c_program("tapfile", CVariant::Plain).into_os_string(),
        "nginx_stderr".into(),
    ];
    let r = run_program(
        &t.sub("run"),
        &prog,
        &[],
        Some(&Lib {
            format: "raw",
            ..Lib::tap_all()
        }),
        "raw all",
    );
    let mut all = r.out.stdout.clone();
    all.extend(&r.out.stderr);
    all.extend(r.log());
    if let Some(d) = line_diff(&r.target_raw(), &all) {
        panic!(
            "raw target must hold the lines of stdout, stderr and the log: {d}\n    repro: {}",
            r.repro()
        );
    }
}

// ------------------------------------------------------------ robustness

#[test]
fn robust_forked_children_print_and_exit() {
    each_variant(|v| {
        Scenario::c("fork children", "robust", v, &["fork_children"])
            .unordered()
            .check();
    });
}

#[test]
fn robust_fork_exec_posix_spawn_vfork_system() {
    each_variant(|v| {
        Scenario::c("fork+exec", "robust", v, &["fork_exec"])
            .unordered()
            .check();
    });
}

/// The parent's output written before it forks and execs a child must be
/// in the target before the child's (the real order on the shared pipe).
#[test]
fn order_parent_output_before_exec_child_output() {
    Scenario::c(
        "order across fork+exec",
        "robust",
        CVariant::Plain,
        &["order_exec"],
    )
    .check();
}

#[test]
fn robust_8_threads_printing() {
    let o = Scenario::c("8 threads", "robust", CVariant::Plain, &["threads"])
        .nondeterministic()
        .unordered()
        .check();
    // printf holds the stream lock while the library accounts, so the
    // target's stdout order must be the real order.
    let tapped = o.tapped.target().remove("stdout").unwrap_or_default();
    if let Some(d) = diff(&tapped, &o.tapped.out.stdout) {
        panic!(
            "8 threads: target stdout order differs from the real stdout: {d}\n    repro: {}",
            o.tapped.repro()
        );
    }
    assert_eq!(
        o.reference
            .out
            .stdout
            .iter()
            .filter(|&&c| c == b'\n')
            .count(),
        8 * 5000 + 1
    );
}

#[test]
fn robust_sigalrm_handler_writing_during_printf_and_write() {
    let s = Scenario::c(
        "SIGALRM every 50us",
        "robust",
        CVariant::Plain,
        &["sigalrm"],
    )
    .nondeterministic();
    let o = s.check();
    let want_lines = 100_000;
    assert_eq!(
        o.reference
            .out
            .stdout
            .iter()
            .filter(|&&c| c == b'\n')
            .count(),
        want_lines
    );
    let sup = o.suppressed.as_ref().unwrap();
    let mut map = sup.target();
    let out = map.remove("stdout").unwrap_or_default();
    // stdout does not depend on the signals: under suppression the target
    // must be the reference's bytes, cut at the same 4 KiB flushes.
    if let Some(d) = diff(&out, &o.reference.out.stdout) {
        panic!(
            "SIGALRM, suppressed: target stdout vs reference: {d}\n    repro: {}",
            sup.repro()
        );
    }
    let err = map.remove("stderr").unwrap_or_default();
    assert!(
        err.split_inclusive(|&c| c == b'\n').all(|l| l == b"tick\n"),
        "SIGALRM, suppressed: target stderr must be whole tick lines"
    );
    assert!(
        map.is_empty(),
        "SIGALRM, suppressed: unexpected sources {:?}",
        map.keys().collect::<Vec<_>>()
    );
}
