#!/usr/bin/env bash
# `make e2e`: logtap in real containers, built locally (no registry here).
#
#   setup      podman, runc, debootstrap, podman-compose, kubernetes-validate (e2e/setup-podman.sh)
#   bases      Debian 12 and 11 base images from debootstrap, cached (e2e/bases.sh)
#   release    `make release`: dist/liblogtap.so (GLIBC_2.17), dist/musl/liblogtap.so, dist/logtap-sink
#   images     demo app (Debian 12 and 11), sink and injector images (demo/images/)
#   validate   kubernetes-validate deployment.yaml; the shared volume hides nothing of the app
#   symbols    objdump -T: no symbol version above GLIBC_2.17
#   oldglibc   the release .so loads and taps in a Debian 11 (glibc 2.31) rootfs (chroot)
#   musl       the musl .so taps printf, write, exit flush and a log file of a musl-gcc program
#   compose    docker-compose.yaml with podman-compose (Debian 12 app)
#   compose11  the same with the Debian 11 app image and LLT_SUPPRESS_TAP_FILE=true
#   kube       deployment.yaml with `podman kube play` (rewritten only where podman 4.3
#              cannot do what Kubernetes does: e2e/kube-podman.py)
#
# For compose/kube the sink's JSON must hold exactly the app's stdout, stderr
# and log-file lines, and the injected app's own stdout, stderr, exit code
# and log file must equal those of an uninjected run of the same image (the
# log file is empty instead when LLT_SUPPRESS_TAP_FILE=true).
#
# Needs root. E2E_ONLY=musl,kube runs a subset (prerequisites are run as
# needed: setup, and release/images when a test uses them). Each step has a
# timeout; containers and pods are removed on exit, also on failure.
# Podman quirks met (podman 4.3.1, Debian 12):
#  - crun fails on this machine's cgroups and the default ulimits are not
#    permitted: containers.conf selects runc and default_ulimits = [].
#  - podman-compose creates dependants with --requires, so `podman start` of
#    the app starts the finished `inject` again: it runs more than once
#    (harmless: it installs by rename). Conditions are honoured with
#    `podman wait`.
#  - kube play: no native sidecars, namespace/nodeName downward API refused,
#    pod restartPolicy applied to init containers (see e2e/kube-podman.py).
#  - the sink reports "pid": null: the app is in another pid namespace, so
#    SO_PEERCRED has no pid to give (also in Kubernetes, unless
#    shareProcessNamespace is set).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export LOGTAP_ROOTFS_DIR=${LOGTAP_ROOTFS_DIR:-/var/cache/logtap-e2e/rootfs}
export E2E_WORK=${E2E_WORK:-}
APP_LINES=12
APP_PAUSE_MS=100
PROJ=logtap-e2e
POD=legacy-app-pod-0

log() { echo "e2e: $*" >&2; }
die() { echo "FAIL: $*" >&2; exit 1; }

# ---------------------------------------------------------------- steps
step_setup() { bash e2e/setup-podman.sh; }
step_bases() { bash e2e/bases.sh bookworm bullseye; }
step_release() { make --no-print-directory release; }

step_images() {
  set -e
  podman build -q -f demo/images/app.Containerfile \
    --build-arg APP_BASE=localhost/logtap-bookworm --build-arg BUILD_BASE=localhost/logtap-bookworm-build \
    -t localhost/logtap-demo-app:latest demo
  podman build -q -f demo/images/app.Containerfile \
    --build-arg APP_BASE=localhost/logtap-bullseye --build-arg BUILD_BASE=localhost/logtap-bullseye-build \
    -t localhost/logtap-demo-app:bullseye demo
  podman build -q -f demo/images/sink.Containerfile -t localhost/logtap-sink:latest dist
  podman build -q -f demo/images/inject.Containerfile \
    --build-arg INJECT_BASE=localhost/logtap-bookworm -t localhost/logtap-inject:latest dist
  podman image prune -f >/dev/null
}

step_validate() {
  set -e
  kubernetes-validate --strict -k 1.29 deployment.yaml
  kubernetes-validate --strict deployment.yaml
  # the shared volume is mounted only at /opt/logtap, which the app image does not have
  python3 - deployment.yaml <<'PY'
import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
spec = d["spec"]["template"]["spec"]
for c in spec.get("initContainers", []) + spec["containers"]:
    for m in c.get("volumeMounts", []):
        assert m["mountPath"] == "/opt/logtap", f"{c['name']} mounts {m['mountPath']}"
sidecars = [c["name"] for c in spec["initContainers"] if c.get("restartPolicy") == "Always"]
assert sidecars == ["logtap-sink"], sidecars
print("validate: volume only at /opt/logtap; logtap-sink is a native sidecar")
PY
  podman run --rm localhost/logtap-demo-app:latest sh -c 'test ! -e /opt/logtap' \
    || die "the app image has /opt/logtap: the volume would hide it"
  podman-compose -f docker-compose.yaml config >/dev/null
  echo "validate: docker-compose.yaml parses (podman-compose config)"
}

step_symbols() { bash e2e/check-glibc.sh dist/liblogtap.so 2.17; }

# run CMD... in the Debian 11 rootfs under the release library; the target
# (raw format: the tapped bytes only) must equal what the program wrote
# (EXPECT-lines compares lines regardless of order, for cases where only the
# order within each process is promised; sh-children is compared exactly:
# pending data is handed off before fork, so children cannot overtake)
oldglibc_case() { # NAME TAP_INTO TAPFILE EXPECT(stdout|stderr|file)[-lines] CMD...
  local name=$1 into=$2 tapfile=$3 expect=$4; shift 4
  local R=$LOGTAP_ROOTFS_DIR/bullseye d=/tmp/logtap-e2e
  rm -f "$R$d/out.$name" "$R$d/t.log"
  chroot "$R" env -i PATH=/usr/bin:/bin LD_PRELOAD=$d/liblogtap.so LLT_TAP_INTO="$into" \
    ${tapfile:+LLT_TAP_FILE=$tapfile} LLT_FORMAT=raw LLT_TARGET=file:$d/out.$name "$@" \
    >"$R$d/stdout.$name" 2>"$R$d/stderr.$name" || die "$name: exit status $?"
  if grep -q 'ld.so' "$R$d/stderr.$name"; then die "$name: loader: $(cat "$R$d/stderr.$name")"; fi
  local want=$R$d/stdout.$name lines=
  case $expect in *-lines) lines=1; expect=${expect%-lines};; esac
  [ "$expect" = stderr ] && want=$R$d/stderr.$name
  [ "$expect" = file ] && want=$R$tapfile
  [ -s "$want" ] || die "$name: the program wrote nothing to its $expect"
  if [ -n "$lines" ]; then
    cmp -s <(sort "$want") <(sort "$R$d/out.$name") || die "$name: tapped lines differ from the program's $expect:
$(diff <(sort "$want") <(sort "$R$d/out.$name") | head)"
    echo "oldglibc: $name: $(wc -l <"$want") lines of $expect (several processes) all tapped"
    return 0
  fi
  cmp -s "$want" "$R$d/out.$name" || die "$name: tapped bytes differ from the program's $expect:
$(diff <(cat -A "$want") <(cat -A "$R$d/out.$name" 2>/dev/null) | head)"
  echo "oldglibc: $name: $(wc -c <"$want") bytes of $expect tapped exactly"
}

step_oldglibc() {
  set -e
  local R=$LOGTAP_ROOTFS_DIR/bullseye d=/tmp/logtap-e2e
  [ -x "$R/usr/bin/gcc" ] || die "no Debian 11 rootfs at $R (run e2e/bases.sh bullseye)"
  local v; v=$(chroot "$R" ldd --version | head -1)
  echo "oldglibc: rootfs $R: $v"
  case $v in *2.31*) ;; *) die "expected glibc 2.31 in the bullseye rootfs";; esac
  mkdir -p "$R$d"; cp dist/liblogtap.so "$R$d/liblogtap.so"
  cat >"$R$d/t.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(void) {
    printf("printf %d\n", 1);
    puts("puts line");
    fwrite("fwrite line\n", 1, 12, stdout);
    fflush(stdout);
    if (write(1, "write line\n", 11) != 11) return 1;
    for (int i = 0; i < 3; i++) {
        FILE *f = fopen("/tmp/logtap-e2e/t.log", "a");
        fprintf(f, "[info] file line %d\n", i);
        fclose(f);
    }
    printf("flushed at exit\n");
    return 0;
}
C
  chroot "$R" gcc -O2 -D_FORTIFY_SOURCE=2 -o $d/t $d/t.c
  set +e
  ( set -e
    oldglibc_case echo 1 "" stdout /bin/echo hello from Debian 11
    oldglibc_case sh 1 "" stdout /bin/sh -c 'echo from sh; printf "%s\n" a b'
    oldglibc_case sh-stderr 2 "" stderr /bin/sh -c 'echo to stderr >&2; echo more >&2'
    oldglibc_case sh-children 3 "" stdout /bin/sh -c 'echo from sh; ls -d /etc /usr; cat /etc/debian_version; date -u +%Y >/dev/null'
    oldglibc_case c-stdout 1 "" stdout $d/t
    oldglibc_case c-file 0 $d/t.log file $d/t
  )
}

step_musl() {
  local w=$E2E_WORK/musl so=$root/dist/musl/liblogtap.so fails=0
  mkdir -p "$w"
  [ -f "$so" ] || die "no $so"
  cat >"$w/t.c" <<'C'
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    printf("printf line %d\n", 1);
    fflush(stdout);
    write(1, "write line\n", 11);
    FILE *f = fopen(argv[1], "a");
    fprintf(f, "file line\n");
    fclose(f);
    printf("printf flushed at exit\n");
    return 0;
}
C
  musl-gcc -O2 -o "$w/t" "$w/t.c" || die "musl-gcc failed"
  readelf -l "$w/t" | grep -q ld-musl || die "$w/t is not a musl program"
  rm -f "$w/out" "$w/t.log" "$w/out.f"
  env LD_PRELOAD="$so" LLT_TAP_INTO=1 LLT_FORMAT=raw LLT_TARGET="file:$w/out" "$w/t" "$w/t.log" >"$w/stdout" 2>"$w/stderr"
  local rc=$?
  check() { if eval "$2"; then echo "musl: ok: $1"; else echo "musl: FAILED: $1" >&2; fails=$((fails + 1)); fi; }
  check "program exits 0 under the library (rc=$rc)" '[ $rc = 0 ]'
  check "loader accepted the library (stderr: $(head -c 300 "$w/stderr"))" '! grep -qi "error\|not found\|relocat" "$w/stderr"'
  check "program output unchanged" '[ "$(cat "$w/stdout")" = "$(printf "printf line 1\nwrite line\nprintf flushed at exit")" ]'
  check "target written (library active)" '[ -e "$w/out" ]'
  check "printf tapped" 'grep -qx "printf line 1" "$w/out" 2>/dev/null'
  check "write tapped" 'grep -qx "write line" "$w/out" 2>/dev/null'
  check "stdio flush at exit tapped" 'grep -qx "printf flushed at exit" "$w/out" 2>/dev/null'
  check "tapped bytes == stdout bytes, same order" 'cmp -s "$w/stdout" "$w/out"'
  env LD_PRELOAD="$so" LLT_TAP_INTO=0 LLT_TAP_FILE="$w/t.log" LLT_FORMAT=raw LLT_TARGET="file:$w/out.f" "$w/t" "$w/t.log" >/dev/null 2>&1
  check "log file (fopen/fprintf) tapped" 'cmp -s <(printf "file line\n") "$w/out.f"'
  [ $fails = 0 ] || die "musl: $fails check(s) failed (dist/musl/liblogtap.so)"
}

# the app image run without logtap: the reference for "behaviour unchanged"
baseline() { # IMAGE DIR
  local name=logtap-e2e-baseline
  mkdir -p "$2"
  podman rm -f $name >/dev/null 2>&1 || true
  podman run --name $name -e APP_LINES=$APP_LINES -e APP_PAUSE_MS=$APP_PAUSE_MS "$1" >"$2/stdout" 2>"$2/stderr"
  echo $? >"$2/rc"
  podman cp $name:/var/log/legacy/app.log "$2/file"
  podman rm $name >/dev/null
}

wait_sink_done() { # CONTAINER: the app's last line reached the sink
  for _ in $(seq 100); do
    podman logs "$1" 2>/dev/null | grep -q '"message":"legacy-app done"' && return 0
    sleep 0.2
  done
  return 1
}

# the injected app's own output equals the uninjected run
compare_own() { # APPCONTAINER BASEDIR OWNDIR SUPPRESSED
  local c=$1 b=$2 o=$3
  mkdir -p "$o"
  podman logs "$c" >"$o/stdout" 2>"$o/stderr"
  podman inspect "$c" --format '{{.State.ExitCode}}' >"$o/rc"
  podman cp "$c:/var/log/legacy/app.log" "$o/file"
  cmp -s "$b/rc" "$o/rc" || die "exit code $(cat "$o/rc") != uninjected $(cat "$b/rc")"
  cmp -s "$b/stdout" "$o/stdout" || die "the app's stdout changed: $(diff "$b/stdout" "$o/stdout" | head)"
  cmp -s "$b/stderr" "$o/stderr" || die "the app's stderr changed: $(diff "$b/stderr" "$o/stderr" | head)"
  if [ "$4" = true ]; then
    [ -f "$o/file" ] && [ ! -s "$o/file" ] || die "suppressed: the app's log file should exist and be empty, has $(wc -c <"$o/file") bytes"
    echo "own: exit $(cat "$o/rc"), stdout and stderr as uninjected; log file empty (suppressed; uninjected: $(wc -l <"$b/file") lines)"
  else
    cmp -s "$b/file" "$o/file" || die "the app's log file changed: $(diff "$b/file" "$o/file" | head)"
    echo "own: exit $(cat "$o/rc"), stdout, stderr and log file ($(wc -l <"$o/file") lines) as uninjected"
  fi
}

compose_down() {
  podman-compose -p $PROJ down -v >/dev/null 2>&1 || true
  podman volume rm -f ${PROJ}_logtap >/dev/null 2>&1 || true
}

compose_case() { # APPIMAGE SUPPRESS
  set -e
  local w=$E2E_WORK/compose-$2-${1##*:}
  baseline "$1" "$w/base"
  compose_down
  LOGTAP_APP_IMAGE=$1 LLT_SUPPRESS_TAP_FILE=$2 APP_LINES=$APP_LINES APP_PAUSE_MS=$APP_PAUSE_MS \
    podman-compose -p $PROJ up -d >"$w/up.log" 2>&1 || { cat "$w/up.log"; die "podman-compose up"; }
  podman wait ${PROJ}_app_1 >/dev/null
  wait_sink_done ${PROJ}_sink_1 || die "the sink never got the app's last line"
  podman stop -t 10 ${PROJ}_sink_1 >/dev/null    # SIGTERM: the sink drains and exits 0
  [ "$(podman inspect ${PROJ}_sink_1 --format '{{.State.ExitCode}}')" = 0 ] || die "sink exit code not 0"
  podman logs ${PROJ}_sink_1 >"$w/sink.json" 2>"$w/sink.err"
  echo "compose: sink printed $(wc -l <"$w/sink.json") lines, e.g.:"; sed -n 2p "$w/sink.json"
  python3 e2e/check_sink.py "$w/sink.json" "$w/base" --platform legacy-app
  compare_own ${PROJ}_app_1 "$w/base" "$w/own" "$2"
  compose_down
}
step_compose() { compose_case localhost/logtap-demo-app:latest false; }
step_compose11() { compose_case localhost/logtap-demo-app:bullseye true; }

kube_down() {
  if [ -f "$E2E_WORK/kube.yaml" ]; then podman kube down "$E2E_WORK/kube.yaml" >/dev/null 2>&1 || true; fi
  podman pod rm -f $POD >/dev/null 2>&1 || true
}

step_kube() {
  set -e
  local w=$E2E_WORK/kube
  mkdir -p "$w"
  baseline localhost/logtap-demo-app:latest "$w/base"
  # deployment.yaml's app is a long-running service; the test gives it a finite run
  python3 e2e/kube-podman.py deployment.yaml "$E2E_WORK/kube.yaml" "$(cat /proc/sys/kernel/hostname)" \
    app:APP_LINES=$APP_LINES app:APP_PAUSE_MS=$APP_PAUSE_MS
  kube_down
  podman kube play "$E2E_WORK/kube.yaml" >"$w/play.log" 2>&1 || { cat "$w/play.log"; die "podman kube play"; }
  podman wait $POD-app >/dev/null
  [ "$(podman inspect $POD-logtap-inject --format '{{.State.ExitCode}}')" = 0 ] || die "injector failed"
  wait_sink_done $POD-logtap-sink || die "the sink never got the app's last line"
  podman stop -t 10 $POD-logtap-sink >/dev/null
  [ "$(podman inspect $POD-logtap-sink --format '{{.State.ExitCode}}')" = 0 ] || die "sink exit code not 0"
  podman logs $POD-logtap-sink >"$w/sink.json" 2>"$w/sink.err"
  echo "kube: sink printed $(wc -l <"$w/sink.json") lines, e.g.:"; sed -n 2p "$w/sink.json"
  python3 e2e/check_sink.py "$w/sink.json" "$w/base" --platform legacy-app --pod-name $POD
  compare_own $POD-app "$w/base" "$w/own" true
  kube_down
}

# ---------------------------------------------------------------- driver
if [ "${1:-}" = --step ]; then "step_$2"; exit $?; fi

[ "$(id -u)" = 0 ] || { echo "e2e: needs root (podman, chroot, apt)" >&2; exit 1; }
E2E_WORK=$(mktemp -d /tmp/logtap-e2e.XXXXXX); export E2E_WORK
cleanup() { compose_down; kube_down; podman rm -f logtap-e2e-baseline >/dev/null 2>&1; true; }
trap 'cleanup; log "work files kept in $E2E_WORK"' EXIT
trap 'exit 130' INT TERM

passed=0 failed=0 results=() broken=""
run_step() { # NAME TIMEOUT [PREREQ...]
  local name=$1 secs=$2 t0=$SECONDS p; shift 2
  for p in "$@"; do
    case " $broken " in *" $p "*)
      results+=("FAIL $name (not run: $p failed)"); failed=$((failed + 1)); broken+=" $name"; return;;
    esac
  done
  log "== $name (timeout ${secs}s)"
  timeout -k 15 "$secs" bash "$0" --step "$name" 2>&1 | sed -u "s/^/  [$name] /"
  local rc=${PIPESTATUS[0]}
  [ $rc = 124 ] && echo "  [$name] timed out after ${secs}s"
  if [ $rc = 0 ]; then results+=("ok   $name ($((SECONDS - t0))s)"); passed=$((passed + 1))
  else results+=("FAIL $name (rc=$rc, $((SECONDS - t0))s)"); failed=$((failed + 1)); broken+=" $name"; fi
}

only=",${E2E_ONLY:-setup,bases,release,images,validate,symbols,oldglibc,musl,compose,compose11,kube},"
want() { case $only in *",$1,"*) return 0;; esac; return 1; }
# prerequisites of a selected test are selected too
want compose || want compose11 || want kube || want validate && only+="bases,release,images,"
want oldglibc && only+="bases,release,"
want musl || want symbols && only+="release,"
only+="setup,"

want setup     && run_step setup 900
want bases     && run_step bases 1200 setup
want release   && run_step release 1500 setup
want images    && run_step images 600 bases release
want validate  && run_step validate 180 images
want symbols   && run_step symbols 60 release
want oldglibc  && run_step oldglibc 300 bases release
want musl      && run_step musl 120 release
want compose   && run_step compose 300 images
want compose11 && run_step compose11 300 images
want kube      && run_step kube 300 images

echo
printf '  %s\n' "${results[@]}"
echo "e2e: $passed passed, $failed failed"
[ $failed = 0 ]
