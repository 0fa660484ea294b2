# Shared by the e2e scripts: install only what is missing.
# Callers define log() first.

# apt_need CMD:PACKAGE...: installs each PACKAGE whose CMD is not on PATH.
apt_need() {
  local want=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || want+=("${pair#*:}")
  done
  [ ${#want[@]} -gt 0 ] || return 0
  log "apt-get install ${want[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${want[@]}" >/dev/null
}

PY=${PYTHON:-python3}
# pip into the python3 on PATH; on a Debian python3 (PEP 668) pip comes from
# apt and needs --break-system-packages.
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
