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

need_apt=()
command -v musl-gcc >/dev/null || need_apt+=(musl-tools)
command -v objdump >/dev/null || need_apt+=(binutils)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
# pip into the python3 on PATH; on a Debian python3 (PEP 668) pip comes from
# apt and needs --break-system-packages
pip_install() {
  local extra=()
  if ! "$PY" -m pip --version >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null
  fi
  if "$PY" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
    extra+=(--break-system-packages)
  fi
  "$PY" -m pip install -q --root-user-action=ignore "${extra[@]}" "$@"
}
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
