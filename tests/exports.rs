//! liblogtap.so exports exactly the functions it intercepts (the version
//! script), nothing of Rust's runtime and no helper of its own.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn listed(map: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("src").join(map)).unwrap();
    let mut out = BTreeSet::new();
    let mut in_global = false;
    for line in text.lines() {
        let line = line.split("/*").next().unwrap().trim();
        if line.starts_with("global:") {
            in_global = true;
            continue;
        }
        if line.starts_with("local:") {
            break;
        }
        if in_global {
            out.extend(
                line.split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            );
        }
    }
    out
}

#[test]
fn exports_are_exactly_the_hooks() {
    let so = root().join("target/release/liblogtap.so");
    assert!(
        so.exists(),
        "{} missing: run `cargo build --release` first",
        so.display()
    );
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&so)
        .output()
        .expect("nm (binutils)");
    assert!(out.status.success());
    let exported: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .map(|s| s.split('@').next().unwrap().to_string())
        .collect();
    let want = listed("logtap.map");
    assert!(
        want.len() > 100,
        "the version script lists {} symbols",
        want.len()
    );
    let extra: Vec<_> = exported.difference(&want).collect();
    let missing: Vec<_> = want.difference(&exported).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "exported but not hooks: {extra:?}; hooks not exported: {missing:?}"
    );
}
