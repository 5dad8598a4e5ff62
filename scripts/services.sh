#!/usr/bin/env bash
# Starts the real servers some tests need, on loopback and ports of their own, and
# exports where they are: SWITCHYARD_TEST_REDIS_URL and SWITCHYARD_TEST_POSTGRES_URL.
# Source it (`. scripts/services.sh`); `stop_test_services` stops them again.
# Installs redis-server and postgresql with apt if they are missing.

TEST_REDIS_PORT=${TEST_REDIS_PORT:-16379}
TEST_PG_PORT=${TEST_PG_PORT:-15432}
TEST_PG_DIR=${TEST_PG_DIR:-/tmp/switchyard-test-pg}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  echo "${dir:-/usr/lib/postgresql/15/bin}"
}

service_packages=()
command -v redis-server >/dev/null || service_packages+=(redis-server)
[ -x "$(pg_bin)/initdb" ] || service_packages+=(postgresql)
if [ ${#service_packages[@]} -gt 0 ]; then
  echo "==> installing ${service_packages[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${service_packages[@]}"
fi

echo "==> Redis on 127.0.0.1:$TEST_REDIS_PORT"
if ! redis-cli -p "$TEST_REDIS_PORT" ping >/dev/null 2>&1; then
  redis-server --port "$TEST_REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile "/tmp/switchyard-test-redis.pid" --logfile "/tmp/switchyard-test-redis.log"
  for _ in $(seq 50); do redis-cli -p "$TEST_REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
redis-cli -p "$TEST_REDIS_PORT" ping >/dev/null

echo "==> PostgreSQL on 127.0.0.1:$TEST_PG_PORT"
# PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if ! as_pg "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$TEST_PG_PORT"; then
  if [ ! -f "$TEST_PG_DIR/PG_VERSION" ]; then
    as_root mkdir -p "$TEST_PG_DIR"
    [ "$(id -u)" -eq 0 ] && chown postgres "$TEST_PG_DIR"
    as_pg "$(pg_bin)/initdb" -D "$TEST_PG_DIR" -A trust -U postgres >/dev/null
  fi
  as_pg "$(pg_bin)/pg_ctl" -D "$TEST_PG_DIR" -l "$TEST_PG_DIR/log" -w -s \
    -o "-p $TEST_PG_PORT -k $TEST_PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start
fi
as_pg "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$TEST_PG_PORT"

export SWITCHYARD_TEST_REDIS_URL="redis://127.0.0.1:$TEST_REDIS_PORT/"
export SWITCHYARD_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$TEST_PG_PORT/postgres"
# For tests that run (and stop) a PostgreSQL server of their own.
SWITCHYARD_TEST_PG_BIN="$(pg_bin)"
export SWITCHYARD_TEST_PG_BIN

stop_test_services() {
  redis-cli -p "$TEST_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  as_pg "$(pg_bin)/pg_ctl" -D "$TEST_PG_DIR" -s -m fast stop >/dev/null 2>&1 || true
}
