//! Compiles the C shim (variadic hooks) and limits the exported symbols of
//! liblogtap.so to the hooks, with a linker version script.

fn main() {
    for f in [
        "src/shim/common.c",
        "src/shim/glibc.c",
        "src/shim/shim.h",
        "src/logtap.map",
        "src/logtap-musl.map",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    // glibc needs the stdio, printf and diagnostics hooks (its stdio is
    // invisible otherwise); musl's stdio is seen through FILE->write.
    let glibc = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default() == "gnu";
    let mut cc = cc::Build::new();
    cc.file("src/shim/common.c");
    if glibc {
        cc.file("src/shim/glibc.c");
    }
    cc.flag("-fno-builtin")
        .flag("-fvisibility=hidden")
        .flag("-U_FORTIFY_SOURCE")
        .flag("-fPIC")
        .warnings(true)
        // Nothing in Rust refers to the hooks, so keep every object.
        .link_lib_modifier("+whole-archive")
        .compile("logtap_shim");
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let map = if glibc {
        "logtap.map"
    } else {
        "logtap-musl.map"
    };
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={dir}/src/{map}");
}
