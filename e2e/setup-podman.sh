#!/usr/bin/env bash
# Installs and configures what `make e2e` needs, only what is missing
# (idempotent; needs root): podman + runc + debootstrap (apt),
# podman-compose + kubernetes-validate (pip), and
# /etc/containers/containers.conf with runc and no default ulimits.
# Why runc: crun refuses the hybrid cgroup setup of our machines, and the
# default ulimits podman sets are not permitted there (shared/notes/platform.md).
set -euo pipefail
log() { echo "setup-podman: $*" >&2; }

. "$(dirname "$0")/lib.sh"
apt_need podman:podman runc:runc debootstrap:debootstrap musl-gcc:musl-tools objdump:binutils gcc:gcc
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
