#!/usr/bin/env bash
# dockerd.sh start DIR | stop DIR: a private Docker engine for `make e2e`.
#
# start: installs docker.io with apt if dockerd is missing, then starts
# `dockerd --iptables=false --bridge=none` with everything under DIR (data
# root, exec root, pid file, API socket DIR/docker.sock, its own containerd
# namespace), waits until it answers and prints DOCKER_HOST=unix://DIR/docker.sock.
# A private engine is fresh each time (no images, no volumes: the tests
# start from nothing), and the README's fixed names (`logtap`,
# `logtap-sink`...) never meet containers or volumes of an engine the
# machine already runs, which is left alone.
# stop: stops the dockerd started in DIR (by its pid file, nothing else),
# waits for it, unmounts what it left and removes DIR.
set -euo pipefail
log() { echo "dockerd: $*" >&2; }
cmd=$1 dir=$2
case $cmd in
start)
  . "$(dirname "$0")/lib.sh"
  apt_need dockerd:docker.io
  mkdir -p "$dir"
  ns=logtap-e2e-$(basename "$dir")
  setsid dockerd --iptables=false --ip-masq=false --bridge=none \
    --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/dockerd.pid" \
    -H "unix://$dir/docker.sock" \
    --containerd-namespace "$ns" --containerd-plugins-namespace "$ns-plugins" \
    >"$dir/dockerd.log" 2>&1 &
  echo $! >"$dir/started.pid"
  for _ in $(seq 120); do
    if DOCKER_HOST=unix://$dir/docker.sock docker version >/dev/null 2>&1; then
      log "started (pid $(cat "$dir/started.pid"), $(dockerd --version))"
      echo "DOCKER_HOST=unix://$dir/docker.sock"
      exit 0
    fi
    kill -0 "$(cat "$dir/started.pid")" 2>/dev/null || break
    sleep 0.5
  done
  log "dockerd did not start:"; tail -20 "$dir/dockerd.log" >&2
  exit 1
  ;;
stop)
  [ -f "$dir/started.pid" ] || exit 0
  pid=$(cat "$dir/started.pid")
  if kill -0 "$pid" 2>/dev/null; then
    DOCKER_HOST=unix://$dir/docker.sock timeout 60 sh -c 'ids=$(docker ps -aq); [ -z "$ids" ] || docker rm -f $ids' >/dev/null 2>&1 || true
    kill -TERM "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { log "dockerd $pid did not stop; killing it"; kill -KILL "$pid"; }
  fi
  # overlay and shm mounts left under DIR by a killed engine
  { grep -o " $dir/[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$dir"
  log "stopped"
  ;;
*) echo "usage: dockerd.sh start|stop DIR" >&2; exit 2 ;;
esac
