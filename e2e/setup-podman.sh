#!/usr/bin/env bash
# Installs and configures what `make e2e` needs, only what is missing
# (idempotent; needs root): podman + runc + debootstrap (apt),
# podman-compose + kubernetes-validate (pip), and
# /etc/containers/containers.conf with runc and no default ulimits.
# Why runc: crun refuses the hybrid cgroup setup of our machines, and the
# default ulimits podman sets are not permitted there (shared/notes/platform.md).
set -euo pipefail
log() { echo "setup-podman: $*" >&2; }

need_apt=()
command -v podman >/dev/null || need_apt+=(podman)
command -v runc >/dev/null || need_apt+=(runc)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
command -v musl-gcc >/dev/null || need_apt+=(musl-tools)
command -v objdump >/dev/null || need_apt+=(binutils)
command -v gcc >/dev/null || need_apt+=(gcc)
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
need_pip=()
command -v podman-compose >/dev/null || need_pip+=(podman-compose)
command -v kubernetes-validate >/dev/null || need_pip+=(kubernetes-validate)
if [ ${#need_pip[@]} -gt 0 ]; then
  log "pip install ${need_pip[*]}"
  pip_install "${need_pip[@]}"
  hash -r
  # pyenv installs console scripts behind shims that need a rehash
  command -v pyenv >/dev/null && pyenv rehash || true
fi

conf=/etc/containers/containers.conf
if ! grep -qs '^runtime *= *"runc"' "$conf"; then
  log "writing $conf (runtime runc, default_ulimits = [])"
  mkdir -p /etc/containers
  [ -f "$conf" ] && cp "$conf" "$conf.logtap-bak"
  cat > "$conf" <<'CONF'
# written by logtap e2e/setup-podman.sh (see shared/notes/platform.md)
[containers]
default_ulimits = []

[engine]
runtime = "runc"
CONF
fi
log "ok ($(podman --version), $(podman-compose --version 2>/dev/null | head -1))"
