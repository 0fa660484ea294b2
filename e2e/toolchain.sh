#!/usr/bin/env bash
# Installs what `make release` needs, only what is missing (idempotent):
#   - apt: musl-tools (musl-gcc, for the musl test program), binutils (objdump),
#     binutils-aarch64-linux-gnu (objcopy for the arm64 files)
#   - pip: ziglang (zig, the C toolchain/linker cargo-zigbuild drives; it
#     carries glibc stubs for old versions, hence GLIBC_2.17)
#   - cargo install cargo-zigbuild --locked
#   - rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-gnu
#     aarch64-unknown-linux-musl (the arm64 builds cross-compile: zig is the
#     linker and C compiler for every target)
# Needs root for apt (CI runs as root). Safe to run repeatedly.
set -euo pipefail

log() { echo "toolchain: $*" >&2; }

. "$(dirname "$0")/lib.sh"
apt_need musl-gcc:musl-tools objdump:binutils aarch64-linux-gnu-objcopy:binutils-aarch64-linux-gnu
if ! "$PY" -c 'import ziglang' 2>/dev/null; then
  log "pip install ziglang"
  pip_install ziglang
fi

if ! cargo install --list | grep -q '^cargo-zigbuild '; then
  log "cargo install cargo-zigbuild --locked"
  cargo install -q cargo-zigbuild --locked
fi

for t in x86_64-unknown-linux-musl aarch64-unknown-linux-gnu aarch64-unknown-linux-musl; do
  if ! rustup target list --installed | grep -qx "$t"; then
    log "rustup target add $t"
    rustup target add "$t"
  fi
done
log "ok (zig $("$PY" -m ziglang version), $(cargo-zigbuild --version 2>/dev/null | head -1))"
