#!/usr/bin/env bash
# arm64.sh: the arm64 release builds (dist/aarch64/, `make release`) under
# qemu-user, on an x86_64 machine (`make test-arm64`; also the e2e step
# `arm64`). Installs qemu-user, Debian's arm64 cross compiler and arm64
# glibc with apt if missing.
#
# An arm64 C program built with aarch64-linux-gnu-gcc and Debian's hardening
# flags (dpkg-buildflags for arm64, hardening=+all) writes with printf, puts,
# fwrite, write(2), stderr and a log file (fopen/fprintf/fclose), and leaves
# 200 lines in stdout's buffer for the flush at exit. It runs with
# `qemu-aarch64 -E LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib -E LD_PRELOAD=dist/aarch64/liblogtap.so`
# (-E: the variable is the guest's; qemu itself is x86_64):
#   raw-*     LLT_FORMAT=raw to a file, one stream at a time: the file must
#             equal, byte for byte, the stream the program wrote
#   socket    all three to the arm64 sink (dist/aarch64/logtap-sink, also
#             under qemu) on a Unix socket: its JSON must hold exactly the
#             program's stdout, stderr and log-file lines
#   read      all three as frames to a file, decoded by the arm64 sink's
#             --read: the same lines (and the same as the x86_64 sink's
#             decoding of the same file)
# Each time the program's own stdout, stderr, log file and exit code must
# equal those of a run without the library. Then the unit tests of the
# library, the wire codec and the sink are built for arm64 (Debian's cross
# gcc as linker) and run under qemu (the ring under threads, the raw
# system-call fallbacks, frame parsing).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
log() { echo "arm64: $*" >&2; }
. "$root/e2e/lib.sh"
apt_need qemu-aarch64:qemu-user aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu dpkg-buildflags:dpkg-dev
SYSROOT=/usr/aarch64-linux-gnu
if [ ! -e $SYSROOT/lib/ld-linux-aarch64.so.1 ] || [ ! -e $SYSROOT/include/stdio.h ]; then
  log "apt-get install libc6-arm64-cross libc6-dev-arm64-cross"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libc6-arm64-cross libc6-dev-arm64-cross >/dev/null
fi

so=$root/dist/aarch64/liblogtap.so sink=$root/dist/aarch64/logtap-sink
[ -f "$so" ] && [ -x "$sink" ] || { echo "arm64: no $so or $sink (make release)" >&2; exit 1; }
w=$(mktemp -d /tmp/logtap-arm64.XXXXXX)
# Not `qemu-aarch64 -L SYSROOT`: -L makes qemu prefix every absolute path
# the guest opens with the sysroot whenever it exists there, "/" included,
# so the library's component-by-component open (safe_open) would walk the
# sysroot instead of the real tree. The arm64 loader is linked at its
# standard path instead, and the libraries found through LD_LIBRARY_PATH.
if [ ! -e /lib/ld-linux-aarch64.so.1 ]; then
  log "ln -s $SYSROOT/lib/ld-linux-aarch64.so.1 /lib/ld-linux-aarch64.so.1"
  ln -s $SYSROOT/lib/ld-linux-aarch64.so.1 /lib/ld-linux-aarch64.so.1
fi
Q=(qemu-aarch64 -E LD_LIBRARY_PATH=$SYSROOT/lib)
fails=0 sink_pid=
trap '[ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null; log "work files kept in $w"' EXIT
ok() { echo "arm64: ok: $*"; }
bad() { echo "arm64: FAILED: $*" >&2; fails=$((fails + 1)); }

cat >"$w/t.c" <<'C'
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc < 2) return 2;
    printf("printf %d on %s\n", 1, "arm64");
    puts("puts line");
    fwrite("fwrite line\n", 1, 12, stdout);
    fflush(stdout);
    if (write(1, "write line\n", 11) != 11) return 1;
    fprintf(stderr, "stderr fprintf %d\n", 2);
    if (write(2, "stderr write\n", 13) != 13) return 1;
    for (int i = 0; i < 3; i++) {
        FILE *f = fopen(argv[1], "a");
        if (!f) { perror(argv[1]); return 1; }
        fprintf(f, "[info] file line %d\n", i);
        fclose(f);
    }
    for (int i = 0; i < 200; i++)
        printf("bulk %03d %s\n", i, "left in stdout's buffer until exit");
    printf("flushed at exit\n");
    return 0;
}
C
export DEB_HOST_ARCH=arm64 DEB_BUILD_MAINT_OPTIONS=hardening=+all
cflags=$(dpkg-buildflags --get CFLAGS) cppflags=$(dpkg-buildflags --get CPPFLAGS) ldflags=$(dpkg-buildflags --get LDFLAGS)
unset DEB_HOST_ARCH DEB_BUILD_MAINT_OPTIONS
# shellcheck disable=SC2086
aarch64-linux-gnu-gcc $cppflags $cflags $ldflags -o "$w/t" "$w/t.c" || { echo "arm64: cross compile failed" >&2; exit 1; }
echo "arm64: built $(file -b "$w/t" | cut -d, -f1-2) with: $cppflags $cflags $ldflags"
readelf -h "$so" | grep -q 'Machine:.*AArch64' || { echo "arm64: $so is not arm64" >&2; exit 1; }

run() { # DIR [VAR=VALUE...]: the program, with the library unless DIR is base
  local d=$1; shift
  mkdir -p "$d"
  rm -f "$w/t.log"
  if [ "$(basename "$d")" = base ]; then
    env "$@" "${Q[@]}" "$w/t" "$w/t.log" >"$d/stdout" 2>"$d/stderr"
  else
    env "$@" "${Q[@]}" -E LD_PRELOAD="$so" "$w/t" "$w/t.log" >"$d/stdout" 2>"$d/stderr"
  fi
  echo $? >"$d/rc"
  cp "$w/t.log" "$d/file" 2>/dev/null || : >"$d/file"
}
same_own() { # DIR: the program's own output as without the library
  local d=$1 b=$w/base f
  for f in rc stdout stderr file; do
    cmp -s "$b/$f" "$d/$f" || { bad "$(basename "$d"): the program's $f changed: $(diff "$b/$f" "$d/$f" | head -3)"; return; }
  done
}

run "$w/base"
[ "$(cat "$w/base/rc")" = 0 ] && [ -s "$w/base/stdout" ] && [ -s "$w/base/stderr" ] && [ -s "$w/base/file" ] \
  || { echo "arm64: the program does not run under qemu: $(head -3 "$w/base/stderr")" >&2; exit 1; }
echo "arm64: program without the library: $(wc -c <"$w/base/stdout") bytes stdout, $(wc -c <"$w/base/stderr") stderr, $(wc -c <"$w/base/file") log file"

# one stream at a time, raw: byte for byte
for c in "stdout 1" "stderr 2" "file 0"; do
  set -- $c
  d=$w/raw-$1
  extra=(); [ "$1" = file ] && extra=(LLT_TAP_FILE="$w/t.log")
  rm -f "$d.target"
  run "$d" LLT_TAP_INTO=$2 "${extra[@]}" LLT_FORMAT=raw LLT_TARGET=file:"$d.target"
  same_own "$d"
  if cmp -s "$w/base/$1" "$d.target"; then ok "raw $1: $(wc -c <"$d.target") bytes tapped, identical"
  else bad "raw $1: tapped bytes differ: $(cmp "$w/base/$1" "$d.target" 2>&1 | head -1)"; fi
done

# all three to the arm64 sink on a socket
"${Q[@]}" "$sink" --socket "$w/s.sock" --mode 0600 >"$w/sink.json" 2>"$w/sink.err" &
sink_pid=$!
for _ in $(seq 100); do [ -S "$w/s.sock" ] && break; sleep 0.1; done
[ -S "$w/s.sock" ] || { echo "arm64: the arm64 sink did not start: $(cat "$w/sink.err")" >&2; exit 1; }
run "$w/socket" LLT_TAP_INTO=3 LLT_TAP_FILE="$w/t.log" LLT_TARGET=socket:"$w/s.sock" LLT_PLATFORM=arm64-test
same_own "$w/socket"
for _ in $(seq 100); do grep -q '"message":"flushed at exit"' "$w/sink.json" && break; sleep 0.1; done
kill -TERM "$sink_pid"; wait "$sink_pid"; rc=$?; sink_pid=
[ $rc = 0 ] && ok "arm64 sink stopped by SIGTERM, exit 0" || bad "arm64 sink exit status $rc: $(head -3 "$w/sink.err")"
if python3 "$root/e2e/check_sink.py" "$w/sink.json" "$w/base" --platform arm64-test --file-source "${w#/}/t.log"; then
  ok "socket: the arm64 sink got exactly the program's stdout, stderr and log-file lines"
else bad "socket: the arm64 sink's JSON differs"; fi

# frames to a file, decoded by the arm64 sink's --read
rm -f "$w/frames.bin"
run "$w/read" LLT_TAP_INTO=3 LLT_TAP_FILE="$w/t.log" LLT_TARGET=file:"$w/frames.bin" LLT_PLATFORM=arm64-test
same_own "$w/read"
if "${Q[@]}" "$sink" --read "$w/frames.bin" >"$w/read.json" 2>"$w/read.err" \
   && python3 "$root/e2e/check_sink.py" "$w/read.json" "$w/base" --platform arm64-test --file-source "${w#/}/t.log"; then
  ok "read: the arm64 sink decoded $(wc -c <"$w/frames.bin") bytes of frames into exactly the program's lines"
else bad "read: arm64 sink --read: $(head -3 "$w/read.err")"; fi
x86=$root/dist/logtap-sink
if [ -x "$x86" ]; then
  "$x86" --read "$w/frames.bin" >"$w/read-x86.json" 2>/dev/null
  if cmp -s <(python3 -c 'import json,sys; [print(json.dumps({k: v for k, v in json.loads(l).items() if k != "timestamp"})) for l in open(sys.argv[1])]' "$w/read.json") \
            <(python3 -c 'import json,sys; [print(json.dumps({k: v for k, v in json.loads(l).items() if k != "timestamp"})) for l in open(sys.argv[1])]' "$w/read-x86.json"); then
    ok "read: the x86_64 sink decodes the arm64 frames identically (timestamps aside)"
  else bad "read: the x86_64 and arm64 sinks decode the frames differently"; fi
fi

# the unit tests, built for arm64 and run under qemu
if CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
   CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
   CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $SYSROOT" \
   cargo test -q --release --manifest-path "$root/Cargo.toml" --target aarch64-unknown-linux-gnu \
     --target-dir "$root/target/arm64-test" --lib -p logtap -p logtap-wire -p logtap-sink >"$w/unit.log" 2>&1; then
  ok "unit tests on arm64 (qemu): $(grep -o 'test result: ok. [0-9]* passed' "$w/unit.log" | awk '{s += $4} END {print s}') passed"
else bad "unit tests on arm64: $(grep -E 'FAILED|panicked|error' "$w/unit.log" | head -5)"; fi

if [ $fails = 0 ]; then echo "arm64: all checks passed"; rm -rf "$w"; trap - EXIT; exit 0; fi
echo "arm64: $fails check(s) failed" >&2
exit 1
