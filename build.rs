//! Compiles the C shim (variadic hooks) and limits the exported symbols of
//! liblogtap.so to the hooks, with a linker version script.

fn main() {
    println!("cargo:rerun-if-changed=src/shim/glibc.c");
    println!("cargo:rerun-if-changed=src/logtap.map");
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if env == "gnu" {
        cc::Build::new()
            .file("src/shim/glibc.c")
            .flag("-fno-builtin")
            .flag("-fvisibility=hidden")
            .flag("-U_FORTIFY_SOURCE")
            .flag("-fPIC")
            .warnings(true)
            .compile("logtap_shim");
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={dir}/src/logtap.map");
}
