#!/usr/bin/env bash
# Starts a throwaway Redis and PostgreSQL on free loopback ports for the test suite.
# Source it: it exports CAREBROKER_TEST_REDIS_URL, CAREBROKER_TEST_POSTGRES_URL and defines
# stop_test_services. Everything lives in one temporary folder, removed on stop.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

services_dir=$(mktemp -d /tmp/carebroker-services.XXXXXX)
chmod 755 "$services_dir"

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$services_dir/redis.pid" --logfile "$services_dir/redis.log" --dir "$services_dir" >/dev/null
export CAREBROKER_TEST_REDIS_URL="redis://127.0.0.1:$redis_port/"

pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
pg_port=$(free_port)
mkdir -p "$services_dir/pg"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres "$services_dir/pg"
  as_pg=(runuser -u postgres --)
fi
"${as_pg[@]}" "$pg_bin/initdb" -D "$services_dir/pg/data" -A trust -U carebroker --no-sync >"$services_dir/initdb.log" 2>&1
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$services_dir/pg/data" -l "$services_dir/pg/postgres.log" -w \
  -o "-p $pg_port -k $services_dir/pg -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=300" start >/dev/null
export CAREBROKER_TEST_POSTGRES_URL="postgres://carebroker@127.0.0.1:$pg_port/postgres"

stop_test_services() {
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$services_dir/pg/data" -m immediate stop >/dev/null 2>&1 || true
  [ -f "$services_dir/redis.pid" ] && kill "$(cat "$services_dir/redis.pid")" 2>/dev/null || true
  rm -rf "$services_dir"
}
