#!/usr/bin/env bash
# check-arch.sh [DIST]: each release file is built for its architecture and
# links as it should (readelf): the libraries are shared objects needing
# their libc (glibc: libc.so.6; musl: libc.so); the sinks and logtap-run
# are static executables (no PT_INTERP, no NEEDED).
set -euo pipefail
d=${1:-dist}
fail=0
check() { # FILE MACHINE KIND NEEDED
  local f=$1 mach=$2 kind=$3 needed=$4 h
  h=$(readelf -h "$f")
  grep -q "Machine:.*$mach" <<<"$h" || { echo "check-arch: $f is not $mach: $(grep Machine <<<"$h")" >&2; fail=1; return; }
  grep -q "Type:.*$kind" <<<"$h" || { echo "check-arch: $f is not $kind" >&2; fail=1; return; }
  if [ "$needed" = static ]; then
    if readelf -l "$f" | grep -q INTERP || readelf -d "$f" | grep -q NEEDED; then
      echo "check-arch: $f is not static" >&2; fail=1; return
    fi
  else
    readelf -d "$f" | grep -q "NEEDED.*\[$needed\]" || { echo "check-arch: $f does not need $needed" >&2; fail=1; return; }
  fi
  echo "check-arch: $f: $mach, $(sed -n 's/^ *Type: *\([A-Z]*\).*/\1/p' <<<"$h"), $( [ "$needed" = static ] && echo static || echo "needs $needed")"
}
check "$d/liblogtap.so" "X86-64" DYN libc.so.6
check "$d/musl/liblogtap.so" "X86-64" DYN libc.so
check "$d/logtap-sink" "X86-64" "EXEC\|DYN" static
check "$d/logtap-run" "X86-64" "EXEC\|DYN" static
check "$d/aarch64/liblogtap.so" AArch64 DYN libc.so.6
check "$d/aarch64/musl/liblogtap.so" AArch64 DYN libc.so
check "$d/aarch64/logtap-sink" AArch64 "EXEC\|DYN" static
check "$d/aarch64/logtap-run" AArch64 "EXEC\|DYN" static
exit $fail
