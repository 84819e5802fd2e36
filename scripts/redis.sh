# Sourced by scripts/test: installs Debian's Redis when missing, starts a private server on
# a free loopback port for this run (stopped on exit) and exports its URL as
# PEREGRINE_TEST_REDIS, which the counter suite and the two-replica rate-limit test use.
# shellcheck shell=bash

start_test_redis() {
  local sudo="" dir port
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo="sudo"
  if ! command -v redis-server >/dev/null; then
    echo "==> installing redis (apt)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server redis-tools >/dev/null
  fi
  dir="$(mktemp -d /tmp/peregrine-redis.XXXXXX)"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/log" >/dev/null
  for _ in $(seq 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  PEREGRINE_REDIS_PORT="$port"
  PEREGRINE_REDIS_DIR="$dir"
  export PEREGRINE_TEST_REDIS="redis://127.0.0.1:$port"
  echo "==> Redis $(redis-server --version | awk '{print $3}' | cut -d= -f2) on 127.0.0.1:$port"
}

stop_test_redis() {
  redis-cli -p "$PEREGRINE_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$PEREGRINE_REDIS_DIR"
}
