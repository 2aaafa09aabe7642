#!/usr/bin/env bash
# Starts a throwaway Redis and PostgreSQL on free loopback ports for the test suite.
# Also a 3-master Redis Cluster (Debian's redis-server with --cluster-enabled, joined by
# redis-cli --cluster create).
# Source it: it exports CAREBROKER_TEST_REDIS_URL, CAREBROKER_TEST_REDIS_CLUSTER_URLS (comma-separated
# seeds), CAREBROKER_TEST_POSTGRES_URL and defines
# stop_test_services. Everything lives in one temporary folder, removed on stop.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# A cluster node also listens on its port + 10000 (the cluster bus), so both must be free and the
# port at most 55535.
free_cluster_port() {
  python3 - <<'PY'
import random, socket
while True:
    port = random.randint(20000, 55535)
    try:
        for p in (port, port + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", p)); s.close()
    except OSError:
        continue
    print(port)
    break
PY
}
# Waits up to 20 s for a command to succeed, else says what did not come up and fails.
wait_for() {
  local what=$1; shift
  for _ in $(seq 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "test services: $what did not come up (logs in $services_dir)" >&2
  return 1
}

services_dir=$(mktemp -d /tmp/carebroker-services.XXXXXX)
chmod 755 "$services_dir"

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$services_dir/redis.pid" --logfile "$services_dir/redis.log" --dir "$services_dir" >/dev/null
export CAREBROKER_TEST_REDIS_URL="redis://127.0.0.1:$redis_port/"

cluster_ports=()
for node in 1 2 3; do
  port=$(free_cluster_port)
  mkdir -p "$services_dir/cluster-$node"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --cluster-enabled yes --cluster-config-file "$services_dir/cluster-$node/nodes.conf" --cluster-node-timeout 2000 \
    --pidfile "$services_dir/cluster-$node/redis.pid" --logfile "$services_dir/cluster-$node/redis.log" \
    --dir "$services_dir/cluster-$node" >/dev/null
  cluster_ports+=("$port")
done
for port in "${cluster_ports[@]}"; do
  wait_for "Redis Cluster node on port $port" redis-cli -p "$port" ping
done
redis-cli --cluster create "${cluster_ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >"$services_dir/cluster-create.log" 2>&1
cluster_ok() { redis-cli -p "${cluster_ports[0]}" cluster info | grep -q 'cluster_state:ok'; }
wait_for "the Redis Cluster (cluster_state:ok)" cluster_ok
CAREBROKER_TEST_REDIS_CLUSTER_URLS=$(printf 'redis://127.0.0.1:%s/,' "${cluster_ports[@]}")
export CAREBROKER_TEST_REDIS_CLUSTER_URLS="${CAREBROKER_TEST_REDIS_CLUSTER_URLS%,}"

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
  for pidfile in "$services_dir"/redis.pid "$services_dir"/cluster-*/redis.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  rm -rf "$services_dir"
}
