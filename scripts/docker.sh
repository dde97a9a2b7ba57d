#!/usr/bin/env bash
# A Docker engine for the container tests (tests/test_docker_*.py), from Debian's packages.
#   scripts/docker.sh start   install docker.io, debootstrap and docker-compose when missing (as
#                             root), start dockerd when no daemon answers; prints "started" if it did
#   scripts/docker.sh stop    stop the dockerd that `start` started, and nothing else
# Images are never pulled (no registry is reachable in CI): docker/build.py makes the base itself.
set -euo pipefail
PIDFILE=${VISIONLOOP_DOCKERD_PIDFILE:-/tmp/visionloop-dockerd.pid}

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "$1: run 'sudo apt-get install -y docker.io debootstrap docker-compose' and start dockerd (the container tests need them)" >&2
    exit 1
  fi
}

install() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
  [ ${#missing[@]} -eq 0 ] && return 0
  need_root "missing ${missing[*]}"
  echo "installing Debian's ${missing[*]} (once)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
}

start() {
  install
  if docker info >/dev/null 2>&1; then exit 0; fi
  need_root "no Docker daemon answers"
  nohup dockerd >/tmp/visionloop-dockerd.log 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then echo started; exit 0; fi
    sleep 0.5
  done
  echo "dockerd did not start; its log:" >&2
  tail -20 /tmp/visionloop-dockerd.log >&2
  exit 1
}

stop() {
  [ -f "$PIDFILE" ] || exit 0
  local pid; pid=$(cat "$PIDFILE")
  rm -f "$PIDFILE"
  kill "$pid" 2>/dev/null || exit 0
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
