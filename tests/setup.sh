#!/usr/bin/env bash
# What `make test` needs beyond a Rust toolchain, installed with apt when it
# is missing and this is root on a Debian-like machine (as on CI); otherwise
# the missing pieces are named and the tests that need them skip (or, with
# CI=true, fail).
set -uo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "$2" ]; }
have gcc /usr/bin/gcc || need+=(gcc)
have g++ /usr/bin/g++ || need+=(g++)
have make /usr/bin/make || need+=(make)
have perl /usr/bin/perl || need+=(perl)
have python3 /usr/bin/python3 || need+=(python3)
# tests/security.rs creates a user and runs as it
have useradd /usr/sbin/useradd || need+=(passwd)
have setpriv /usr/bin/setpriv || need+=(util-linux)
# tests/security.rs holds the sink in listen(2) to look at its socket
have strace /usr/bin/strace || need+=(strace)
# crates/sink/tests/outputs.rs: a real rsyslogd is the syslog oracle
have rsyslogd /usr/sbin/rsyslogd || need+=(rsyslog)
# tests/servers.rs: real servers whose log files are tapped
have nginx /usr/sbin/nginx || need+=(nginx-light)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
have redis-server /usr/bin/redis-server || need+=(redis-server)
# tests/run.rs: static programs for logtap-run's relay (a CGO_ENABLED=0 Go
# program, busybox-static) and a PID namespace (unshare)
have go /usr/bin/go || need+=(golang-go)
busybox_static() {
  # static: no PT_INTERP, so no loader path among its strings' first lines
  [ -x /bin/busybox ] && ! head -c 4096 /bin/busybox | grep -qa 'ld-linux\|ld-musl'
}
busybox_static || need+=(busybox-static)
have unshare /usr/bin/unshare || need+=(util-linux)
# tests/run.rs: a musl program gets musl/liblogtap.so
have musl-gcc /usr/bin/musl-gcc || need+=(musl-tools)

[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "test setup: apt-get install ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${need[@]}" >/dev/null ||
    { echo "test setup: apt-get install ${need[*]} failed" >&2; exit 1; }
else
  echo "test setup: missing ${need[*]} (not root or no apt-get): the tests that need them are skipped" >&2
fi
