#!/usr/bin/env bash
# Installs what `make release` needs, only what is missing (idempotent):
#   - apt: musl-tools (musl-gcc, for the musl test program), binutils (objdump)
#   - pip: ziglang (zig, the C toolchain/linker cargo-zigbuild drives; it
#     carries glibc stubs for old versions, hence GLIBC_2.17)
#   - cargo install cargo-zigbuild --locked
#   - rustup target add x86_64-unknown-linux-musl
# Needs root for apt (CI runs as root). Safe to run repeatedly.
set -euo pipefail

log() { echo "toolchain: $*" >&2; }

. "$(dirname "$0")/lib.sh"
apt_need musl-gcc:musl-tools objdump:binutils
if ! "$PY" -c 'import ziglang' 2>/dev/null; then
  log "pip install ziglang"
  pip_install ziglang
fi

if ! cargo install --list | grep -q '^cargo-zigbuild '; then
  log "cargo install cargo-zigbuild --locked"
  cargo install -q cargo-zigbuild --locked
fi

if ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
  log "rustup target add x86_64-unknown-linux-musl"
  rustup target add x86_64-unknown-linux-musl
fi
log "ok (zig $("$PY" -m ziglang version), $(cargo-zigbuild --version 2>/dev/null | head -1))"
