//! `LLT_TAP_FILE` as a list of patterns (issue 10): log files opened every
//! way a server opens them, each its own source; rotation by rename; the
//! bound on file sources. The target (a file) is decoded per source and
//! compared with what the same program wrote without the library.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

fn src(p: &Path) -> String {
    p.to_string_lossy().trim_start_matches('/').to_string()
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_default()
}

fn lib(pattern: &str, suppress: bool, extra: &[(&str, &str)]) -> Lib {
    let mut l = Lib {
        tap_into: "0".into(),
        tap_file: false,
        format: "logserver",
        suppress_std: false,
        suppress_file: suppress,
        extra: vec![("LLT_TAP_FILE".into(), pattern.into())],
    };
    for (k, v) in extra {
        l.extra.push((k.to_string(), v.to_string()));
    }
    l
}

/// The files of `ways` a pattern `<dir>/logs/**/*.log` taps, each with the
/// files on disk that hold its bytes (rotated pieces oldest first).
const TAPPED: &[(&str, &[&str])] = &[
    ("logs/one.log", &["logs/one.log"]),
    ("logs/two.log", &["logs/two.log"]),
    ("logs/a/b/deep.log", &["logs/a/b/deep.log"]),
    (
        "logs/app-2026-11-30_061500.log",
        &["logs/app-2026-11-30_061500.log"],
    ),
    ("logs/link.log", &["other/target.txt"]),
    ("logs/rot.log", &["logs/rot.log.1", "logs/rot.log"]),
];
const UNTAPPED: &[&str] = &["logs/data.bin", "other/x.log"];

fn ways(suppress: bool, list: impl Fn(&Path) -> String) {
    let t = TestDir::new(if suppress { "ways-sup" } else { "ways" });
    let argv: Vec<OsString> = vec![
        c_program("tapfiles", CVariant::Plain).into_os_string(),
        "ways".into(),
    ];
    let reference = run_program(&t.sub("ref"), &argv, &[], None, "tapfiles ways (reference)");
    assert_eq!(reference.out.code(), 0, "the program itself failed");
    let dir = t.sub("tap");
    let l = lib(&list(&dir), suppress, &[]);
    let run = run_program(&dir, &argv, &[], Some(&l), "tapfiles ways");
    assert_eq!(
        run.out.code(),
        0,
        "{}",
        String::from_utf8_lossy(&run.out.stderr)
    );
    let mut target: BTreeMap<String, Vec<u8>> = run.target();
    for (name, pieces) in TAPPED {
        let want: Vec<u8> = pieces
            .iter()
            .flat_map(|p| read(&reference.dir.join(p)))
            .collect();
        assert!(!want.is_empty(), "{name}: the program wrote it");
        let got = target.remove(&src(&dir.join(name))).unwrap_or_default();
        assert_bytes(&format!("target source {name}"), &got, &want);
        for p in pieces.iter() {
            let disk = read(&dir.join(p));
            if suppress {
                assert_bytes(&format!("suppressed: {p} on disk"), &disk, b"");
            } else {
                assert_bytes(
                    &format!("{p} on disk"),
                    &disk,
                    &read(&reference.dir.join(p)),
                );
            }
        }
    }
    for p in UNTAPPED {
        assert_bytes(
            &format!("untapped {p} on disk"),
            &read(&dir.join(p)),
            &read(&reference.dir.join(p)),
        );
    }
    assert!(
        target.is_empty(),
        "unexpected sources in the target: {:?}",
        target.keys().collect::<Vec<_>>()
    );
}

#[test]
fn every_way_of_opening_under_one_recursive_pattern() {
    ways(false, |d| format!("{}/logs/**/*.log", d.display()));
}

#[test]
fn every_way_of_opening_suppressed() {
    ways(true, |d| format!("{}/logs/**/*.log", d.display()));
}

/// Several entries, exact and patterns, relative ones made absolute at
/// start: the same sources as one recursive pattern.
#[test]
fn a_list_of_exact_paths_and_patterns() {
    ways(false, |d| {
        format!(
            "{d}/logs/one.log::logs/t?o.log:{d}/logs/*/*/*.log:{d}/logs/app-*.log:{d}/logs/[lr]*.log:/nonexistent/x.log",
            d = d.display()
        )
    });
}

/// Past the bound on file sources a file is not tapped: its bytes stay on
/// disk even with suppression, and debug mode says so.
#[test]
fn more_files_than_the_table_holds_are_written_as_without_the_library() {
    let t = TestDir::new("bound");
    let argv: Vec<OsString> = vec![
        c_program("tapfiles", CVariant::Plain).into_os_string(),
        "bound".into(),
    ];
    let dir = t.sub("tap");
    let l = lib(
        &format!("{}/logs/*.log", dir.display()),
        true,
        &[("LLT_DEBUG_MODE", "true")],
    );
    let run = run_program(&dir, &argv, &[], Some(&l), "tapfiles bound");
    assert_eq!(run.out.code(), 0);
    let target = run.target();
    let (mut tapped, mut untapped) = (0, 0);
    for i in 0..70 {
        let p = dir.join(format!("logs/f{i:02}.log"));
        let line = format!("file {i:02}\n");
        match target.get(&src(&p)) {
            Some(got) => {
                assert_bytes(&format!("f{i:02}"), got, line.as_bytes());
                assert_bytes(&format!("suppressed f{i:02} on disk"), &read(&p), b"");
                tapped += 1;
            }
            None => {
                assert_bytes(
                    &format!("untapped f{i:02} on disk"),
                    &read(&p),
                    line.as_bytes(),
                );
                untapped += 1;
            }
        }
    }
    assert_eq!(
        (tapped, untapped),
        (64, 6),
        "64 file sources, the rest untapped"
    );
    assert_eq!(target.len(), 64, "{:?}", target.keys().collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&run.out.stderr);
    assert_eq!(
        err.matches("more than 64 log files tapped").count(),
        1,
        "one debug line: {err}"
    );
}

/// A log file the program inherits as its stdout (Tomcat's `catalina.out`,
/// opened by `catalina.sh`): classified at start by the kernel's name of
/// fd 1, so the pattern taps it although the program never opens it.
#[test]
fn an_inherited_stdout_into_a_matching_file() {
    let t = TestDir::new("inherited");
    let dir = t.sub("run");
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let out = dir.join("logs/catalina.out");
    let target = dir.join("target.bin");
    let mut cmd = std::process::Command::new("/bin/sh");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("LLT_") {
            cmd.env_remove(&k);
        }
    }
    let st = cmd
        .args(["-c", "echo started; echo 'a second line'"])
        .env("LD_PRELOAD", so_path())
        .env("LLT_TAP_FILE", format!("{}/logs/catalina.*", dir.display()))
        .env("LLT_TARGET", format!("file:{}", target.display()))
        .env("LLT_SUPPRESS_TAP_FILE", "true")
        .stdout(std::fs::File::create(&out).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    let got = decode_target(&target);
    assert_bytes(
        "target source catalina.out",
        got.get(&src(&out)).map(Vec::as_slice).unwrap_or_default(),
        b"started\na second line\n",
    );
    assert_bytes("suppressed catalina.out on disk", &read(&out), b"");
    assert_eq!(got.len(), 1, "{:?}", got.keys().collect::<Vec<_>>());
}

/// Rotation racing the open (redis reopens its log for every line while
/// logrotate renames it): the name the program opened may no longer lead
/// to its file when the library classifies the fd. Every line still
/// reaches the target, once and in order, and under suppression no byte
/// reaches either file.
fn rename_race(suppress: bool, exact: bool) {
    let t = TestDir::new(match (suppress, exact) {
        (false, _) => "race",
        (true, false) => "race-sup",
        (true, true) => "race-exact",
    });
    let argv: Vec<OsString> = vec![
        c_program("tapfiles", CVariant::Plain).into_os_string(),
        "race".into(),
    ];
    let dir = t.sub("tap");
    let list = if exact { "app.log" } else { "*.log" };
    let l = lib(&format!("{}/logs/{list}", dir.display()), suppress, &[]);
    let run = run_program(&dir, &argv, &[], Some(&l), "tapfiles race");
    assert_eq!(run.out.code(), 0);
    let want: String = (0..20000).map(|i| format!("line {i:05}\n")).collect();
    let mut target = run.target();
    let got = target
        .remove(&src(&dir.join("logs/app.log")))
        .unwrap_or_default();
    assert_bytes("every line, once, in order", &got, want.as_bytes());
    assert!(target.is_empty(), "{:?}", target.keys().collect::<Vec<_>>());
    if suppress {
        for p in ["logs/app.log", "logs/app.log.1"] {
            assert_bytes(
                &format!("suppressed: {p} on disk"),
                &read(&dir.join(p)),
                b"",
            );
        }
    }
}

#[test]
fn rotation_racing_the_open_loses_nothing() {
    rename_race(false, false);
}

#[test]
fn rotation_racing_the_open_suppressed_leaks_nothing() {
    rename_race(true, false);
}

/// The same race with the file named as an exact `LLT_TAP_FILE` entry
/// (the window is narrower there: no name to make absolute and match).
#[test]
fn rotation_racing_the_open_of_an_exact_entry_suppressed() {
    rename_race(true, true);
}
