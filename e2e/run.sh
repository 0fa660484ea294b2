#!/usr/bin/env bash
# `make e2e`: logtap in real containers, built locally (no registry here).
#
#   setup      podman, runc, catatonit, debootstrap, docker.io, podman-compose,
#              kubernetes-validate, Docker Compose v2 (e2e/setup-podman.sh)
#   bases      Debian 12 and 11 base images from debootstrap, cached (e2e/bases.sh)
#   release    `make release`: dist/liblogtap.so (GLIBC_2.17), dist/musl/liblogtap.so,
#              dist/logtap-sink, and the same for arm64 in dist/aarch64/
#   images     demo app (Debian 12 and 11), sink and injector images (demo/images/);
#              the arm64 sink image
#   validate   kubernetes-validate deployment.yaml; docker compose config; the volume
#              layout, mounts and hardening of both; the volumes hide nothing of the app
#   symbols    objdump -T: no symbol version above GLIBC_2.17 (x86_64 and arm64);
#              every dist/ file of the right architecture and linkage (e2e/check-arch.sh)
#   oldglibc   the release .so loads and taps in a Debian 11 (glibc 2.31) rootfs (chroot)
#   musl       the musl .so taps printf, write, exit flush and a log file of a musl-gcc program
#   arm64      the arm64 builds under qemu-user: an arm64 C program preloaded with
#              dist/aarch64/liblogtap.so, tapped to the arm64 sink (e2e/arm64.sh)
#   compose    docker-compose.yaml with podman-compose (Debian 12 app)
#   compose11  the same with the Debian 11 app image and LLT_SUPPRESS_TAP_FILE=true
#   kube       deployment.yaml with `podman kube play` (rewritten only where podman 4.3
#              cannot do what Kubernetes does: e2e/kube-podman.py)
#   dockerd    a private Docker engine (Debian's docker.io; e2e/dockerd.sh), fresh:
#              no images, no volumes; stopped at the end
#   dimages    the bases moved over (podman save | docker load), the demo images
#              built with `docker build`
#   docker     the README's plain `docker run` recipe exactly as written (Debian 12
#              app), on fresh named volumes that the engine creates root-owned;
#              an app run as a uid neither root nor 65532; the sink's hardening
#   docker11   the same recipe with the Debian 11 app image
#   dspool     the README's spool recipe: the sink stopped, the app killed, the
#              sink started again; its lines hold the app's stdout exactly once
#   dcompose   docker-compose.yaml with Docker Compose v2 (`docker compose up`)
#
# For compose/kube/docker the sink's JSON must hold exactly the app's stdout,
# stderr and log-file lines, and the injected app's own stdout, stderr, exit
# code and log file must equal those of an uninjected run of the same image
# (the log file is empty instead when LLT_SUPPRESS_TAP_FILE=true); the running
# sink's hardening is checked in /proc, the app's mounts are read-only.
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
#    pod restartPolicy applied to init containers, emptyDir owned by the first
#    container to mount it (see e2e/kube-podman.py); the pause image needs catatonit.
#  - the sink reports "pid": null: the app is in another pid namespace, so
#    SO_PEERCRED has no pid to give (also in Kubernetes, unless
#    shareProcessNamespace is set).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/e2e/lib.sh"
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
  podman build -q -f demo/images/goapp.Containerfile \
    --build-arg APP_BASE=localhost/logtap-bookworm --build-arg BUILD_BASE=localhost/logtap-bookworm-build \
    -t localhost/logtap-demo-goapp:latest demo
  podman build -q -f demo/images/sink.Containerfile --build-arg PREP_BASE=localhost/logtap-bookworm \
    -t localhost/logtap-sink:latest dist
  podman build -q -f demo/images/inject.Containerfile --build-arg INJECT_BASE=localhost/logtap-bookworm \
    --build-arg PREP_BASE=localhost/logtap-bookworm -t localhost/logtap-inject:latest dist
  # arm64: the sink image built on this x86_64 machine without emulation
  # (only the PREP_BASE stage runs; given by image id, podman takes the local
  # x86_64 image instead of looking for an arm64 one); image and binary are arm64
  local prep; prep=$(podman image inspect localhost/logtap-bookworm --format '{{.Id}}')
  podman build -q --platform linux/arm64 --build-arg ARCH_DIR=aarch64 \
    --build-arg PREP_BASE="$prep" \
    -f demo/images/sink.Containerfile -t localhost/logtap-sink:arm64 dist
  [ "$(podman image inspect localhost/logtap-sink:arm64 --format '{{.Os}}/{{.Architecture}}')" = linux/arm64 ] \
    || die "localhost/logtap-sink:arm64 is not linux/arm64"
  podman rm -f logtap-e2e-arm64 >/dev/null 2>&1 || true
  podman create --name logtap-e2e-arm64 localhost/logtap-sink:arm64 >/dev/null
  podman cp logtap-e2e-arm64:/usr/local/bin/logtap-sink "$E2E_WORK/sink-arm64"
  podman rm logtap-e2e-arm64 >/dev/null
  readelf -h "$E2E_WORK/sink-arm64" | grep -q 'Machine:.*AArch64' || die "the arm64 image's sink is not arm64"
  echo "images: localhost/logtap-sink:arm64 is linux/arm64 with the arm64 sink (built without emulation)"
  podman image prune -f >/dev/null
}

step_validate() {
  set -e
  kubernetes-validate --strict -k 1.29 deployment.yaml
  kubernetes-validate --strict deployment.yaml
  # the volume layout: the library only at /opt/logtap (written by the
  # injector alone, read-only in the app, absent from the sink), the socket
  # only at /run/logtap (read-only in the app); no service-account token
  python3 - deployment.yaml <<'PY'
import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
spec = d["spec"]["template"]["spec"]
assert spec.get("automountServiceAccountToken") is False, "automountServiceAccountToken must be false"
want = {  # container -> {volume: (mountPath, readOnly)}
    "logtap-inject": {"logtap": ("/opt/logtap", False)},
    "logtap-sink": {"logtap-socket": ("/run/logtap", False), "logtap-spool": ("/run/logtap-spool", False)},
    "app": {"logtap": ("/opt/logtap", True), "logtap-socket": ("/run/logtap", True),
            "logtap-spool": ("/run/logtap-spool", False)},
    "go-app": {"logtap": ("/opt/logtap", True), "logtap-socket": ("/run/logtap", True),
               "logtap-spool": ("/run/logtap-spool", False)},
}
vols = {v["name"]: v for v in spec["volumes"]}
assert vols["logtap-spool"]["emptyDir"].get("medium") == "Memory", "the spool must be in memory (tmpfs)"
for c in spec.get("initContainers", []) + spec["containers"]:
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    if c["name"] in ("app", "go-app"):
        assert env.get("LLT_SPOOL") == "/run/logtap-spool", c["name"]
    if c["name"] == "logtap-sink":
        assert c["args"][-2:] == ["--spool", "/run/logtap-spool"], c["args"]
for c in spec.get("initContainers", []) + spec["containers"]:
    got = {m["name"]: (m["mountPath"], bool(m.get("readOnly"))) for m in c.get("volumeMounts", [])}
    assert got == want[c["name"]], f"{c['name']} mounts {got}, want {want[c['name']]}"
    sc = c.get("securityContext", {})
    assert sc.get("allowPrivilegeEscalation") is False and sc.get("capabilities", {}).get("drop") == ["ALL"], c["name"]
    assert c["name"] == "app" or sc.get("readOnlyRootFilesystem") is True, c["name"]
assert spec["securityContext"]["runAsNonRoot"] is True
sidecars = [c["name"] for c in spec["initContainers"] if c.get("restartPolicy") == "Always"]
assert sidecars == ["logtap-sink"], sidecars
go = [c for c in spec["containers"] if c["name"] == "go-app"][0]
assert go["command"] == ["/opt/logtap/logtap-run", "/usr/local/bin/go-app"], go["command"]
print("validate: deployment.yaml: library volume only in inject (rw) and app (ro), socket volume only in sink (rw) "
      "and app (ro), the spool in memory and shared by sink and apps; no service-account token; logtap-sink is a native sidecar")
PY
  local p
  for p in /opt/logtap /run/logtap; do
    podman run --rm localhost/logtap-demo-app:latest sh -c "test ! -e $p" \
      || die "the app image has $p: the volume would hide it"
  done
  echo "validate: the app image has neither /opt/logtap nor /run/logtap (the volumes hide nothing)"
  podman-compose -f docker-compose.yaml config >/dev/null
  echo "validate: docker-compose.yaml parses (podman-compose config)"
  # Docker Compose v2's own loader checks the file against the Compose
  # specification's schema (unknown keys, types) and resolves it
  docker compose -f docker-compose.yaml config -q
  docker compose -f docker-compose.yaml config --format json | python3 -c '
import json, sys
c = json.load(sys.stdin)
s = c["services"]
mounts = {n: {v["target"]: (v["source"], bool(v.get("read_only"))) for v in s[n]["volumes"]} for n in s}
assert mounts == {
    "inject": {"/opt/logtap": ("logtap", False)},
    "sink": {"/run/logtap": ("logtap-socket", False)},
    "app": {"/opt/logtap": ("logtap", True), "/run/logtap": ("logtap-socket", True)},
    "go-app": {"/opt/logtap": ("logtap", True), "/run/logtap": ("logtap-socket", True)},
}, mounts
assert s["go-app"]["command"] == ["/opt/logtap/logtap-run", "/usr/local/bin/go-app"], s["go-app"]["command"]
for n in ("inject", "sink"):
    assert s[n].get("read_only") is True and s[n].get("cap_drop") == ["ALL"], n
    assert "no-new-privileges:true" in s[n].get("security_opt", []), n
print("validate: docker-compose.yaml valid for Docker Compose", sys.argv[1], "(docker compose config); "
      "volumes and the hardening of inject and sink as intended")' "$(docker compose version --short)"
}

step_symbols() {
  set -e
  bash e2e/check-glibc.sh dist/liblogtap.so 2.17
  bash e2e/check-glibc.sh dist/aarch64/liblogtap.so 2.17
  bash e2e/check-arch.sh dist
}
step_arm64() { bash e2e/arm64.sh; }

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
  local v; v=$(chroot "$R" ldd --version | sed -n 1p)   # (head would SIGPIPE ldd)
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
baseline() { # ENGINE IMAGE DIR LOGFILE [RUN-OPTION...]
  local e=$1 img=$2 d=$3 logf=$4 name=logtap-e2e-baseline; shift 4
  mkdir -p "$d"
  $e rm -f $name >/dev/null 2>&1 || true
  $e run --name $name "$@" "$img" >"$d/stdout" 2>"$d/stderr"
  echo $? >"$d/rc"
  $e cp "$name:$logf" "$d/file"
  $e rm $name >/dev/null
}

wait_sink_done() { # ENGINE CONTAINER [PLATFORM [LAST]]: the app's last line reached the sink
  local pat="\"message\":\"${4:-legacy-app done}\""
  [ -n "${3:-}" ] && pat="\"platform\":\"$3\".*$pat"
  for _ in $(seq 100); do
    $1 logs "$2" 2>/dev/null | grep -q "$pat" && return 0
    sleep 0.2
  done
  return 1
}

# the injected app's own output (in OWNDIR: stdout, stderr, rc, file)
# equals the uninjected run's
compare_own() { # BASEDIR OWNDIR SUPPRESSED
  local b=$1 o=$2
  cmp -s "$b/rc" "$o/rc" || die "exit code $(cat "$o/rc") != uninjected $(cat "$b/rc")"
  cmp -s "$b/stdout" "$o/stdout" || die "the app's stdout changed: $(diff "$b/stdout" "$o/stdout" | head)"
  cmp -s "$b/stderr" "$o/stderr" || die "the app's stderr changed: $(diff "$b/stderr" "$o/stderr" | head)"
  if [ "$3" = true ]; then
    [ -f "$o/file" ] && [ ! -s "$o/file" ] || die "suppressed: the app's log file should exist and be empty, has $(wc -c <"$o/file") bytes"
    echo "own: exit $(cat "$o/rc"), stdout and stderr as uninjected; log file empty (suppressed; uninjected: $(wc -l <"$b/file") lines)"
  else
    cmp -s "$b/file" "$o/file" || die "the app's log file changed: $(diff "$b/file" "$o/file" | head)"
    echo "own: exit $(cat "$o/rc"), stdout, stderr and log file ($(wc -l <"$o/file") lines) as uninjected"
  fi
}

collect_own() { # ENGINE CONTAINER OWNDIR LOGFILE: the app container's output, exit code, log file
  mkdir -p "$3"
  $1 logs "$2" >"$3/stdout" 2>"$3/stderr"
  $1 inspect "$2" --format '{{.State.ExitCode}}' >"$3/rc"
  $1 cp "$2:$4" "$3/file"
}

# issue: the sink parses untrusted input, so it must not be able to touch
# the library the app loads, nor gain anything: checked on the running
# process itself (/proc), whatever the engine reports
check_sink_hardened() { # ENGINE CONTAINER
  local pid st mi
  pid=$($1 inspect -f '{{.State.Pid}}' "$2")
  [ "${pid:-0}" -gt 0 ] || die "$2 is not running"
  st=/proc/$pid/status mi=/proc/$pid/mountinfo
  grep -Eq '^Uid:\s+65532\s' "$st" || die "sink uid: $(grep ^Uid "$st")"
  grep -Eq '^CapEff:\s+0+$' "$st" || die "sink has capabilities: $(grep ^CapEff "$st")"
  grep -Eq '^CapBnd:\s+0+$' "$st" || die "sink can regain capabilities: $(grep ^CapBnd "$st")"
  grep -Eq '^NoNewPrivs:\s+1$' "$st" || die "sink without no_new_privs"
  awk '$5 == "/" { print $6 }' "$mi" | grep -q '^ro' || die "sink's root file system is writable"
  awk '$5 == "/run/logtap" { print $6 }' "$mi" | grep -q '^rw' || die "no writable /run/logtap in the sink"
  if awk '{ print $5 }' "$mi" | grep -q '^/opt/logtap'; then die "the sink mounts the library's volume"; fi
  local w; w=$(awk '$5 != "/" && $6 ~ /^rw/ && $5 !~ /^\/(proc|sys|dev)(\/|$)/ { print $5 }' "$mi" | sort | tr '\n' ' ')
  echo "hardening: sink $2: uid 65532, no capabilities (effective and bounding), no_new_privs, read-only root; writable mounts besides /proc, /sys, /dev: $w; no /opt/logtap"
}

check_app_mounts() { # ENGINE CONTAINER: both volumes read-only in the app
  $1 inspect "$2" --format '{{json .Mounts}}' | python3 -c '
import json, sys
m = {x["Destination"]: x for x in json.load(sys.stdin)}
for d in ("/opt/logtap", "/run/logtap"):
    assert d in m, f"app: {d} not mounted"
    assert not m[d]["RW"], f"app: {d} is writable"
print("mounts: the app has /opt/logtap and /run/logtap read-only")'
}

pid_report() { # SINKJSON: what "pid" shows, per platform
  python3 - "$1" <<'PY'
import collections, json, sys
c = collections.Counter()
for l in open(sys.argv[1]):
    if l.strip():
        o = json.loads(l)
        c[(o.get("platform"), o.get("pid"))] += 1
print("pid: " + "; ".join(f"platform {p}: {'null' if k is None else k} in {v} lines" for (p, k), v in sorted(c.items(), key=str)))
PY
}

# -------------------------------------------------------------- compose
compose_names() { # ENGINE SERVICE: container name of a compose service
  if [ "$1" = podman ]; then echo "${PROJ}_$2_1"; else echo "${PROJ}-$2-1"; fi
}
compose_cmd() { if [ "$1" = podman ]; then echo podman-compose; else echo docker compose; fi; }

compose_down() { # ENGINE
  local e=${1:-podman}
  $(compose_cmd "$e") -p $PROJ down -v >/dev/null 2>&1 || true
  $e volume rm -f ${PROJ}_logtap ${PROJ}_logtap-socket >/dev/null 2>&1 || true
}

# the Go app (static, through logtap-run): the sink holds exactly its
# stdout and stderr, and its own output and exit code are as without logtap
check_goapp() { # ENGINE APPCONTAINER SINKCONTAINER SINKJSON WORKDIR [--pod-name POD]
  local e=$1 app=$2 sink=$3 json=$4 w=$5; shift 5
  python3 e2e/check_sink.py "$json" "$w/gobase" --only-platform go-app --no-file "$@"
  mkdir -p "$w/goown"
  $e logs "$app" >"$w/goown/stdout" 2>"$w/goown/stderr"
  $e inspect "$app" --format '{{.State.ExitCode}}' >"$w/goown/rc"
  cmp -s "$w/gobase/rc" "$w/goown/rc" || die "go-app exit code $(cat "$w/goown/rc") != $(cat "$w/gobase/rc") without logtap-run"
  cmp -s "$w/gobase/stdout" "$w/goown/stdout" || die "go-app's stdout changed: $(diff "$w/gobase/stdout" "$w/goown/stdout" | head)"
  cmp -s "$w/gobase/stderr" "$w/goown/stderr" || die "go-app's stderr changed: $(diff "$w/gobase/stderr" "$w/goown/stderr" | head)"
  echo "go-app: through logtap-run, exit $(cat "$w/goown/rc"), stdout and stderr as without it, all in the sink"
}

goapp_baseline() { # ENGINE DIR [RUN-OPTION...]
  local e=$1 d=$2 name=logtap-e2e-gobaseline; shift 2
  mkdir -p "$d"
  $e rm -f $name >/dev/null 2>&1 || true
  $e run --name $name "$@" localhost/logtap-demo-goapp:latest >"$d/stdout" 2>"$d/stderr"
  echo $? >"$d/rc"
  $e rm $name >/dev/null
}

compose_case() { # ENGINE APPIMAGE SUPPRESS
  set -e
  local e=$1 w=$E2E_WORK/compose-$1-$3-${2##*:} app sink goapp
  app=$(compose_names "$e" app) sink=$(compose_names "$e" sink) goapp=$(compose_names "$e" go-app)
  baseline "$e" "$2" "$w/base" /var/log/legacy/app.log -e APP_LINES=$APP_LINES -e APP_PAUSE_MS=$APP_PAUSE_MS
  goapp_baseline "$e" "$w/gobase" -e APP_LINES=$APP_LINES -e APP_PAUSE_MS=$APP_PAUSE_MS
  compose_down "$e"
  LOGTAP_APP_IMAGE=$2 LLT_SUPPRESS_TAP_FILE=$3 APP_LINES=$APP_LINES APP_PAUSE_MS=$APP_PAUSE_MS \
    $(compose_cmd "$e") -p $PROJ up -d >"$w/up.log" 2>&1 || { cat "$w/up.log"; die "$(compose_cmd "$e") up"; }
  $e wait "$app" "$goapp" >/dev/null
  wait_sink_done "$e" "$sink" || die "the sink never got the app's last line; sink: $($e logs "$sink" 2>&1 | tail -3); app: $($e logs "$app" 2>&1 | tail -3)"
  wait_sink_done "$e" "$sink" go-app "go-app done" || die "the sink never got go-app's last line; go-app: $($e logs "$goapp" 2>&1 | tail -3)"
  check_sink_hardened "$e" "$sink"
  check_app_mounts "$e" "$app"
  $e stop -t 10 "$sink" >/dev/null    # SIGTERM: the sink drains and exits 0
  [ "$($e inspect "$sink" --format '{{.State.ExitCode}}')" = 0 ] || die "sink exit code not 0"
  $e logs "$sink" >"$w/sink.json" 2>"$w/sink.err"
  echo "compose: sink printed $(wc -l <"$w/sink.json") lines, e.g.:"; sed -n 2p "$w/sink.json"
  python3 e2e/check_sink.py "$w/sink.json" "$w/base" --only-platform legacy-app
  check_goapp "$e" "$goapp" "$sink" "$w/sink.json" "$w"
  pid_report "$w/sink.json"
  collect_own "$e" "$app" "$w/own" /var/log/legacy/app.log
  compare_own "$w/base" "$w/own" "$3"
  compose_down "$e"
}
step_compose() { compose_case podman localhost/logtap-demo-app:latest false; }
step_compose11() { compose_case podman localhost/logtap-demo-app:bullseye true; }

kube_down() {
  if [ -f "$E2E_WORK/kube.yaml" ]; then podman kube down "$E2E_WORK/kube.yaml" >/dev/null 2>&1 || true; fi
  podman pod rm -f $POD >/dev/null 2>&1 || true
}

step_kube() {
  set -e
  local w=$E2E_WORK/kube
  mkdir -p "$w"
  baseline podman localhost/logtap-demo-app:latest "$w/base" /var/log/legacy/app.log -e APP_LINES=$APP_LINES -e APP_PAUSE_MS=$APP_PAUSE_MS
  goapp_baseline podman "$w/gobase" -e APP_LINES=$APP_LINES -e APP_PAUSE_MS=$APP_PAUSE_MS
  # deployment.yaml's app is a long-running service; the test gives it a finite run
  rm -rf "$w/emptydir"
  python3 e2e/kube-podman.py deployment.yaml "$E2E_WORK/kube.yaml" "$(cat /proc/sys/kernel/hostname)" \
    emptydir="$w/emptydir" app:APP_LINES=$APP_LINES app:APP_PAUSE_MS=$APP_PAUSE_MS \
    go-app:APP_LINES=$APP_LINES go-app:APP_PAUSE_MS=$APP_PAUSE_MS
  kube_down
  podman kube play "$E2E_WORK/kube.yaml" >"$w/play.log" 2>&1 || { cat "$w/play.log"; die "podman kube play"; }
  podman wait $POD-app $POD-go-app >/dev/null
  [ "$(podman inspect $POD-logtap-inject --format '{{.State.ExitCode}}')" = 0 ] || die "injector failed"
  wait_sink_done podman $POD-logtap-sink || die "the sink never got the app's last line; sink: $(podman logs $POD-logtap-sink 2>&1 | tail -3); app: $(podman logs $POD-app 2>&1 | tail -3)"
  check_sink_hardened podman $POD-logtap-sink
  check_app_mounts podman $POD-app
  podman stop -t 10 $POD-logtap-sink >/dev/null
  [ "$(podman inspect $POD-logtap-sink --format '{{.State.ExitCode}}')" = 0 ] || die "sink exit code not 0"
  podman logs $POD-logtap-sink >"$w/sink.json" 2>"$w/sink.err"
  echo "kube: sink printed $(wc -l <"$w/sink.json") lines, e.g.:"; sed -n 2p "$w/sink.json"
  python3 e2e/check_sink.py "$w/sink.json" "$w/base" --only-platform legacy-app --pod-name $POD
  check_goapp podman $POD-go-app $POD-logtap-sink "$w/sink.json" "$w" --pod-name $POD
  pid_report "$w/sink.json"
  collect_own podman $POD-app "$w/own" /var/log/legacy/app.log
  compare_own "$w/base" "$w/own" true
  kube_down
}

# --------------------------------------------------------------- docker
docker_env() {
  [ -f "$E2E_WORK/docker.env" ] || die "no Docker engine (step dockerd)"
  DOCKER_HOST=$(sed -n 's/^DOCKER_HOST=//p' "$E2E_WORK/docker.env"); export DOCKER_HOST
}

step_dockerd() {
  set -e
  bash e2e/dockerd.sh start "$E2E_WORK/dockerd" >"$E2E_WORK/docker.env"
  docker_env
  echo "dockerd: $(docker version --format 'engine {{.Server.Version}}, client {{.Client.Version}}'), $(docker compose version)"
  [ -z "$(docker images -q)$(docker volume ls -q)" ] || die "the private engine is not empty"
}

step_dimages() {
  set -e
  docker_env
  local b t0=$SECONDS
  for b in bookworm bookworm-build bullseye bullseye-build; do
    podman save localhost/logtap-$b | docker load -q >/dev/null
  done
  echo "dimages: 4 bases loaded in $((SECONDS - t0)) s"
  docker build -q -f demo/images/inject.Containerfile --build-arg INJECT_BASE=localhost/logtap-bookworm \
    --build-arg PREP_BASE=localhost/logtap-bookworm -t logtap-inject -t localhost/logtap-inject:latest dist
  docker build -q -f demo/images/sink.Containerfile --build-arg PREP_BASE=localhost/logtap-bookworm \
    -t logtap-sink -t localhost/logtap-sink:latest dist
  docker build -q -f demo/images/app.Containerfile \
    --build-arg APP_BASE=localhost/logtap-bookworm --build-arg BUILD_BASE=localhost/logtap-bookworm-build \
    -t logtap-demo-app:bookworm -t localhost/logtap-demo-app:latest demo
  docker build -q -f demo/images/app.Containerfile \
    --build-arg APP_BASE=localhost/logtap-bullseye --build-arg BUILD_BASE=localhost/logtap-bullseye-build \
    -t logtap-demo-app:bullseye -t localhost/logtap-demo-app:bullseye demo
  # the Go app installs golang-go with apt in its build stage, and the
  # private engine has no network: built by podman, moved over
  podman build -q -f demo/images/goapp.Containerfile \
    --build-arg APP_BASE=localhost/logtap-bookworm --build-arg BUILD_BASE=localhost/logtap-bookworm-build \
    -t localhost/logtap-demo-goapp:latest demo >/dev/null
  podman save localhost/logtap-demo-goapp:latest | docker load -q >/dev/null
  docker image prune -f >/dev/null
  docker rmi localhost/logtap-bookworm-build localhost/logtap-bullseye-build >/dev/null
  echo "dimages: built with docker build in $((SECONDS - t0)) s"
}

# run SCRIPT (lines of the README) exactly as written; each docker command's
# stdout, stderr and exit status go to DIR/N.out, N.err, N.rc (N.cmd: the command)
run_recorded() { # DIR SCRIPT
  mkdir -p "$1"
  E2E_REC=$1 bash -c '
    n=0
    docker() {
      n=$((n + 1))
      printf "%s\n" "docker $*" >"$E2E_REC/$n.cmd"
      command docker "$@" >"$E2E_REC/$n.out" 2>"$E2E_REC/$n.err"
      local rc=$?
      echo $rc >"$E2E_REC/$n.rc"
      echo "\$ docker $*  # exit $rc, $(wc -l <"$E2E_REC/$n.out") lines out, $(wc -l <"$E2E_REC/$n.err") err"
      return $rc
    }
    . "$1"' _ "$2"
  local f bad=0
  for f in "$1"/*.rc; do
    [ "$(cat "$f")" = 0 ] || { echo "$(cat "${f%.rc}.cmd") failed: $(head -c 600 "${f%.rc}.err")"; bad=1; }
  done
  return $bad
}
recorded() { # DIR PATTERN: number of the recorded command matching PATTERN
  grep -l -E -- "$2" "$1"/*.cmd | head -1 | sed 's#.*/##; s#\.cmd$##'
}

docker_recipe() { # APP-TAG (bookworm|bullseye)
  set -e
  docker_env
  local w=$E2E_WORK/docker-$1 mp n
  mkdir -p "$w"
  docker tag logtap-demo-app:$1 logtap-demo-app:latest
  baseline docker logtap-demo-app "$w/base" /var/log/legacy/app.log
  # from nothing, as the bug was met: no logtap volumes yet, and a new
  # named volume in this engine is a root-owned 0755 directory
  [ -z "$(docker volume ls -q)" ] || die "volumes left: $(docker volume ls -q | tr '\n' ' ')"
  docker volume create logtap-e2e-probe >/dev/null
  mp=$(docker volume inspect -f '{{.Mountpoint}}' logtap-e2e-probe)
  [ "$(stat -c '%u:%g %a' "$mp")" = "0:0 755" ] || die "a new volume here is $(stat -c '%u:%g %a' "$mp"), not root 0755"
  docker volume rm logtap-e2e-probe >/dev/null
  echo "docker: a new named volume here is root-owned 0755: the case the images must handle"
  python3 e2e/readme_block.py README.md docker-run >"$w/run.sh"
  python3 e2e/readme_block.py README.md docker-clean >"$w/clean.sh"
  echo "docker: README recipe ($(grep -c '^docker' "$w/run.sh") commands), run as written:"
  run_recorded "$w/run" "$w/run.sh" || die "a command of the README's recipe failed"
  # the volumes took the owner and mode of the images' mount points
  for v in logtap logtap-socket; do
    mp=$(docker volume inspect -f '{{.Mountpoint}}' $v)
    [ "$(stat -c '%u:%g %a' "$mp")" = "65532:65532 755" ] || die "volume $v is $(stat -c '%u:%g %a' "$mp")"
  done
  [ "$(stat -c '%F %a %u:%g' "$mp/sink.sock")" = "socket 660 65532:65532" ] || die "sink.sock: $(stat -c '%F %a %u:%g' "$mp/sink.sock")"
  echo "docker: volumes logtap and logtap-socket are 65532:65532 0755 (from the images), sink.sock 0660 (the sink's default; the app gets the group)"
  n=$(recorded "$w/run" ' logs ')
  [ -n "$n" ] && grep -q '"platform":"legacy-app"' "$w/run/$n.out" || die "the recipe's docker logs shows no JSON line of the app"
  echo "docker: the recipe's 'docker logs logtap-sink' printed $(wc -l <"$w/run/$n.out") JSON lines"
  check_sink_hardened docker logtap-sink
  check_app_mounts docker legacy-app
  # any uid: neither root nor the images' 65532 (log file in /tmp: the demo
  # image's log directory belongs to 10001)
  local anyuid=(--user 23456:23456 --group-add 65532 -e APP_LOG=/tmp/anyuid.log -e APP_LINES=5 -e APP_PAUSE_MS=10)
  baseline docker logtap-demo-app "$w/anyuid-base" /tmp/anyuid.log "${anyuid[@]}"
  docker run --name logtap-e2e-anyuid "${anyuid[@]}" \
    -v logtap:/opt/logtap:ro -v logtap-socket:/run/logtap:ro \
    -e LD_PRELOAD=/opt/logtap/liblogtap.so -e LLT_TAP_INTO=3 -e LLT_TAP_FILE=/tmp/anyuid.log \
    -e LLT_TARGET=socket:/run/logtap/sink.sock -e LLT_PLATFORM=anyuid \
    logtap-demo-app >"$w/anyuid.out" 2>"$w/anyuid.err" || true
  # what "pid" shows when the app shares the sink's pid namespace
  docker run --rm --pid container:logtap-sink --group-add 65532 -v logtap:/opt/logtap:ro -v logtap-socket:/run/logtap:ro \
    -e LD_PRELOAD=/opt/logtap/liblogtap.so -e LLT_TAP_INTO=3 -e LLT_TARGET=socket:/run/logtap/sink.sock \
    -e LLT_PLATFORM=pidns -e APP_LINES=2 -e APP_PAUSE_MS=0 logtap-demo-app >/dev/null 2>&1 || true
  wait_sink_done docker logtap-sink legacy-app || die "the sink never got the app's last line"
  wait_sink_done docker logtap-sink pidns || die "the sink never got the pid-sharing app's last line"
  wait_sink_done docker logtap-sink anyuid || die "the sink never got the uid-23456 app's last line: $(head -3 "$w/anyuid.err")"
  docker stop -t 10 logtap-sink >/dev/null
  [ "$(docker inspect logtap-sink --format '{{.State.ExitCode}}')" = 0 ] || die "sink exit code not 0"
  docker logs logtap-sink >"$w/sink.json" 2>"$w/sink.err"
  echo "docker: sink printed $(wc -l <"$w/sink.json") lines, e.g.:"; sed -n 2p "$w/sink.json"
  python3 e2e/check_sink.py "$w/sink.json" "$w/base" --only-platform legacy-app
  pid_report "$w/sink.json"
  # the app's own output: as the recipe's `docker run` printed it
  n=$(recorded "$w/run" ' run .*logtap-demo-app')
  mkdir -p "$w/own"
  cp "$w/run/$n.out" "$w/own/stdout"; cp "$w/run/$n.err" "$w/own/stderr"; cp "$w/run/$n.rc" "$w/own/rc"
  docker cp legacy-app:/var/log/legacy/app.log "$w/own/file"
  compare_own "$w/base" "$w/own" false
  echo "anyuid: the app as uid 23456 loaded the library and connected:"
  python3 e2e/check_sink.py "$w/sink.json" "$w/anyuid-base" --only-platform anyuid --file-source tmp/anyuid.log
  collect_own docker logtap-e2e-anyuid "$w/anyuid-own" /tmp/anyuid.log
  compare_own "$w/anyuid-base" "$w/anyuid-own" false
  docker rm logtap-e2e-anyuid >/dev/null
  echo "docker: README clean-up, run as written:"
  run_recorded "$w/clean" "$w/clean.sh" || die "a command of the README's clean-up failed"
  [ -z "$(docker ps -aq)$(docker volume ls -q)" ] || die "left after the clean-up: $(docker ps -a --format '{{.Names}}') $(docker volume ls -q)"
  echo "docker: nothing left (no containers, no volumes)"
}
docker_down() {
  [ -f "$E2E_WORK/docker.env" ] || return 0
  ( docker_env
    docker rm -f legacy-app logtap-sink logtap-e2e-anyuid logtap-e2e-baseline >/dev/null 2>&1
    compose_down docker
    docker volume rm -f logtap logtap-socket >/dev/null 2>&1; umount /run/logtap-spool; rm -rf /run/logtap-spool ) 2>/dev/null || true
}
# The README's spool recipe: the sink stopped while the app writes, the app
# killed (SIGKILL, as `docker kill` sends it), the sink started again: its
# lines (both runs) hold the app's stdout exactly once, in order, plus at
# most the one write SIGKILL ended; the spool is empty afterwards.
step_dspool() {
  set -e
  docker_env
  local w=$E2E_WORK/dspool mp=/run/logtap-spool n
  mkdir -p "$w"
  docker tag logtap-demo-app:bookworm logtap-demo-app:latest
  [ -z "$(docker ps -aq)$(docker volume ls -q)" ] || die "left before: $(docker ps -a --format '{{.Names}}') $(docker volume ls -q)"
  umount "$mp" 2>/dev/null || true; rm -rf "$mp"
  docker run --rm -v logtap:/opt/logtap logtap-inject >/dev/null
  python3 e2e/readme_block.py README.md docker-spool >"$w/run.sh"
  echo "dspool: README spool recipe ($(grep -c '^docker' "$w/run.sh") docker commands), run as written:"
  run_recorded "$w/run" "$w/run.sh" || die "a command of the README's spool recipe failed"
  [ "$(stat -f -c %T "$mp")" = tmpfs ] || die "$mp is $(stat -f -c %T "$mp"), not tmpfs"
  [ "$(stat -c '%u:%g %a' "$mp")" = "65532:65532 3777" ] || die "$mp is $(stat -c '%u:%g %a' "$mp")"
  sleep 0.5
  docker stop -t 10 logtap-sink >/dev/null
  echo "dspool: sink stopped while the app writes ($(docker logs logtap-sink 2>/dev/null | grep -c legacy-app) lines so far)"
  sleep 0.8
  docker kill legacy-app >/dev/null
  docker wait legacy-app >"$w/app.rc" || true
  ls -A "$mp" >"$w/spool.before"
  echo "dspool: app killed (exit $(cat "$w/app.rc")); in the spool: $(tr '\n' ' ' <"$w/spool.before")"
  grep -q '\.ring$' "$w/spool.before" || die "the killed app left no ring in the spool"
  docker start logtap-sink >/dev/null
  for _ in $(seq 100); do
    [ -z "$(ls -A "$mp")" ] && break
    sleep 0.2
  done
  [ -z "$(ls -A "$mp")" ] || die "the restarted sink left $(ls -A "$mp") in the spool"
  docker stop -t 10 logtap-sink >/dev/null
  docker logs logtap-sink >"$w/sink.json" 2>"$w/sink.err"
  docker logs legacy-app >"$w/app.out" 2>"$w/app.err"
  grep 'spooled ring' "$w/sink.err" | sed 's/^/dspool: sink: /' || die "the restarted sink recovered no spooled ring: $(cat "$w/sink.err")"
  python3 - "$w/sink.json" "$w/app.out" <<'PY'
import json, sys
got = b""
for line in open(sys.argv[1], encoding="utf-8"):
    o = json.loads(line)
    if o.get("platform") == "legacy-app" and o.get("source") == "stdout":
        got += o["message"].encode() + b"\n"
want = open(sys.argv[2], "rb").read()
assert got.startswith(want), f"the sink's stdout lines are not the app's, exactly once:\n--- app\n{want.decode()}--- sink\n{got.decode()}"
extra = got[len(want):]
assert extra.count(b"\n") <= 1, f"the sink has more than one write the app's stdout lacks: {extra!r}"
assert b"legacy-app done" not in want, "the app finished before it was killed: nothing was tested"
lines = want.count(b"\n")
more = ", plus the write SIGKILL ended" if extra else ""
print(f"dspool: the sink has the killed app's {lines} stdout lines exactly once{more}")
PY
  docker rm legacy-app logtap-sink >/dev/null
  docker volume rm logtap logtap-socket >/dev/null
  umount "$mp" && rmdir "$mp"
  [ -z "$(docker ps -aq)$(docker volume ls -q)" ] || die "left after: $(docker ps -a --format '{{.Names}}') $(docker volume ls -q)"
  echo "dspool: nothing left (no containers, no volumes, the spool removed)"
}
step_docker() { docker_recipe bookworm; }
step_docker11() { docker_recipe bullseye; }
step_dcompose() { docker_env; compose_case docker localhost/logtap-demo-app:latest false; }

# ---------------------------------------------------------------- driver
if [ "${1:-}" = --step ]; then "step_$2"; exit $?; fi

[ "$(id -u)" = 0 ] || { echo "e2e: needs root (podman, chroot, apt)" >&2; exit 1; }
E2E_WORK=$(mktemp -d /tmp/logtap-e2e.XXXXXX); export E2E_WORK
cleanup() {
  compose_down; kube_down; podman rm -f logtap-e2e-baseline >/dev/null 2>&1
  docker_down; bash e2e/dockerd.sh stop "$E2E_WORK/dockerd"; true
}
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

only=",${E2E_ONLY:-setup,bases,release,images,validate,symbols,oldglibc,musl,arm64,compose,compose11,kube,dockerd,dimages,docker,docker11,dspool,dcompose},"
want() { case $only in *",$1,"*) return 0;; esac; return 1; }
# prerequisites of a selected test are selected too
want docker || want docker11 || want dspool || want dcompose && only+="dimages,"
want dimages && only+="dockerd,bases,release,"
want compose || want compose11 || want kube || want validate && only+="bases,release,images,"
want oldglibc && only+="bases,release,"
want musl || want symbols || want arm64 && only+="release,"
only+="setup,"

want setup     && run_step setup 900
want bases     && run_step bases 1200 setup
want release   && run_step release 1500 setup
want images    && run_step images 600 bases release
want validate  && run_step validate 180 images
want symbols   && run_step symbols 60 release
want oldglibc  && run_step oldglibc 300 bases release
want musl      && run_step musl 120 release
want arm64     && run_step arm64 600 release
want compose   && run_step compose 300 images
want compose11 && run_step compose11 300 images
want kube      && run_step kube 300 images
want dockerd   && run_step dockerd 600 setup
want dimages   && run_step dimages 600 dockerd bases release
want docker    && run_step docker 300 dimages
want docker11  && run_step docker11 300 dimages
want dspool    && run_step dspool 300 dimages
want dcompose  && run_step dcompose 300 dimages

echo
printf '  %s\n' "${results[@]}"
echo "e2e: $passed passed, $failed failed"
[ $failed = 0 ]
