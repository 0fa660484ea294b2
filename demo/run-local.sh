#!/usr/bin/env bash
# `make demo` without containers: the legacy app under liblogtap, the sink
# beside it, the app's lines as JSON on this terminal, then a clean stop.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
so=$root/target/release/liblogtap.so
sink=$root/target/release/logtap-sink
[ -x "$sink" ] && [ -f "$so" ] || { echo "build first: cargo build --release" >&2; exit 1; }

work=$(mktemp -d /tmp/logtap-demo.XXXXXX)
trap 'kill $sink_pid 2>/dev/null || true; rm -rf "$work"' EXIT
cc -O2 -D_FORTIFY_SOURCE=2 -o "$work/legacy-app" "$root/demo/app/legacy-app.c"

echo "== sink: logtap-sink --socket $work/sink.sock (JSON lines below)"
POD_NAME=legacy-demo POD_NAMESPACE=local "$sink" --socket "$work/sink.sock" &
sink_pid=$!
for _ in $(seq 50); do [ -S "$work/sink.sock" ] && break; sleep 0.05; done

echo "== app: unmodified, under LD_PRELOAD=liblogtap.so; its own stdout/stderr are hidden"
echo "   (LLT_SUPPRESS_STDOUT=true) and its log file is not written (LLT_SUPPRESS_TAP_FILE=true)"
LD_PRELOAD=$so \
LLT_TAP_INTO=3 \
LLT_TAP_FILE=$work/app.log \
LLT_SUPPRESS_STDOUT=true \
LLT_SUPPRESS_TAP_FILE=true \
LLT_TARGET=socket:$work/sink.sock \
LLT_PLATFORM=legacy-app \
APP_LOG=$work/app.log APP_LINES=${APP_LINES:-10} APP_PAUSE_MS=${APP_PAUSE_MS:-200} \
  "$work/legacy-app"

sleep 0.3
kill -TERM $sink_pid
wait $sink_pid || true
echo "== app log file on disk: $(wc -c < "$work/app.log" 2>/dev/null || echo 0) bytes (suppressed: everything went to the sink)"
