# Sourced by scripts/test: installs Debian's PostgreSQL when missing, starts a private
# server on a free loopback port for this run (stopped on exit) and exports its URL as
# PEREGRINE_TEST_POSTGRES, which the store suite and the two-replica e2e test use.
# shellcheck shell=bash

start_test_postgres() {
  local sudo="" bin dir port
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo="sudo"
  if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
    echo "==> installing postgresql (apt)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql postgresql-client >/dev/null
  fi
  bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
  dir="$(mktemp -d /tmp/peregrine-pg.XXXXXX)"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  # PostgreSQL refuses to run as root: as root, the cluster belongs to the postgres user
  # that Debian's package creates.
  local as=()
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres "$dir"
    as=(runuser -u postgres --)
  fi
  "${as[@]}" "$bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
  "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
  PEREGRINE_PG_STOP=("${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast stop)
  PEREGRINE_PG_DIR="$dir"
  trap stop_test_postgres EXIT
  export PEREGRINE_TEST_POSTGRES="postgres://postgres@127.0.0.1:$port/postgres"
  echo "==> PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
}

stop_test_postgres() {
  "${PEREGRINE_PG_STOP[@]}" >/dev/null 2>&1 || true
  rm -rf "$PEREGRINE_PG_DIR"
}
