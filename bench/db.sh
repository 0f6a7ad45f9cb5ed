#!/usr/bin/env bash
# Database access against PostgreSQL directly, in the same run:
# `pgbench -S` (select-only) straight to the server over TLS, and through
# Warden (`warden proxy db` -> proxy -> tunnel -> database service, every
# statement audited). Prints transactions/s of each and their ratio, and
# the latency per transaction (p50/p99, from pgbench's per-transaction log).
# Needs: postgresql (server and pgbench), oathtool. SECS=10 CLIENTS=4 to
# change.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-10}
CLIENTS=${CLIENTS:-4}
cargo build --release -q -p warden
W=$PWD/target/release/warden
T=$(mktemp -d /tmp/warden-dbbench.XXXX)
chmod 755 "$T"
PIDS=
trap 'kill $PIDS 2>/dev/null || true' EXIT
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --clear-groups -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The cluster, and the database's server certificate from its database CA.
$W start --data-dir "$T/data" --listen-addr 127.0.0.1:0 --auth-addr 127.0.0.1:0 \
  --node-listen-addr 127.0.0.1:0 >"$T/cluster.log" 2>"$T/cluster.err" &
CLUSTER=$!
PIDS="$PIDS $!"
for _ in $(seq 100); do grep -q "serving SSH" "$T/cluster.log" && break; sleep 0.1; done
PROXY=$(awk '/proxy:/ {print $2}' "$T/cluster.log")
PIN=$(awk '/CA pin:/ {print $3}' "$T/cluster.log")
$W admin --data-dir "$T/data" db cert --host 127.0.0.1 --out-dir "$T/pg/certs" >/dev/null

# PostgreSQL: certificate authentication for all but its superuser.
mkdir -p "$T/pg/sock"
printf 'local all all trust\nhostssl all warden 127.0.0.1/32 trust\nhostssl all all 127.0.0.1/32 cert\n' >"$T/pg/pg_hba.conf"
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$T/pg"
as_pg "$PGBIN/initdb" -D "$T/pg/data" -U warden --auth=trust --no-sync >/dev/null
PG=$(free_port)
as_pg "$PGBIN/postgres" -D "$T/pg/data" -p "$PG" -k "$T/pg/sock" -c listen_addresses=127.0.0.1 \
  -c ssl=on -c ssl_cert_file="$T/pg/certs/server.crt" -c ssl_key_file="$T/pg/certs/server.key" \
  -c ssl_ca_file="$T/pg/certs/ca.crt" -c hba_file="$T/pg/pg_hba.conf" -c max_connections=100 \
  >/dev/null 2>"$T/pg.log" &
PIDS="$PIDS $!"
for _ in $(seq 100); do "$PGBIN/pg_isready" -q -h "$T/pg/sock" -p "$PG" && break; sleep 0.1; done
psql -q -h "$T/pg/sock" -p "$PG" -U warden -d postgres -c 'CREATE ROLE reader LOGIN' -c 'CREATE DATABASE app'
"$PGBIN/pgbench" -q -i -s 1 -h "$T/pg/sock" -p "$PG" -U warden app >/dev/null 2>&1
psql -q -h "$T/pg/sock" -p "$PG" -U warden -d app -c 'GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader'

# A database service for it, and a user whose role reaches it.
TOKEN=$($W admin --data-dir "$T/data" tokens add --type node --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
$W start --roles db --proxy "$PROXY" --ca-pin "$PIN" --token "$TOKEN" --name db-agent \
  --data-dir "$T/agent" --db "pg1=postgres://127.0.0.1:$PG?label.env=bench" >"$T/agent.log" 2>&1 &
AGENT=$!
PIDS="$PIDS $!"
cat >"$T/role.yaml" <<EOF
kind: role
version: v1
metadata:
  name: bench-db
spec:
  allow:
    db_labels: {env: bench}
    db_users: [reader]
    db_names: [app]
EOF
$W admin --data-dir "$T/data" roles apply -f "$T/role.yaml" >/dev/null
SECRET=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP
token=$($W admin --data-dir "$T/data" users add bench --roles bench-db | awk '/warden signup/ {print $3}')
export WARDEN_HOME=$T/home
echo "bench password 123" | $W signup "$token" --proxy "$PROXY" --ca-pin "$PIN" --password-stdin \
  --totp-secret $SECRET --otp "$(oathtool --totp -b $SECRET)" >/dev/null
echo "bench password 123" | $W login --proxy "$PROXY" --user bench --password-stdin \
  --otp "$(oathtool --totp -b -N 'now + 30 seconds' $SECRET)" >/dev/null
for _ in $(seq 100); do $W db ls | grep -q pg1 && break; sleep 0.2; done
LOCAL=$(free_port)
$W proxy db pg1 --port "$LOCAL" >"$T/tunnel.log" 2>&1 &
TUNNEL=$!
PIDS="$PIDS $!"
sleep 0.5

# CPU seconds (user + system) a process has used.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }

# pgbench -S for SECS seconds: transactions/s, then p50/p99 latency (ms)
# from the per-transaction log (third column: microseconds).
run() {
  local tag=$1 conninfo=$2
  mkdir -p "$T/$tag"
  (cd "$T/$tag" && "$PGBIN/pgbench" -n -S -c "$CLIENTS" -j 2 -T "$SECS" -l "$conninfo" >out 2>&1)
  local tps
  tps=$(awk '/^tps = / {print $3}' "$T/$tag/out" | tail -1)
  cat "$T/$tag"/pgbench_log.* | awk '{print $3}' | sort -n |
    awk -v tps="$tps" -v tag="$tag" '{a[NR]=$1} END {printf "%-8s %9.0f tps  p50 %.3f ms  p99 %.3f ms\n", tag, tps, a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000}'
}
echo "== pgbench -S, $CLIENTS clients, ${SECS}s each"
run direct "host=127.0.0.1 port=$PG user=warden dbname=app sslmode=require" | tee "$T/direct.txt"
c0=$(cpu $CLUSTER) a0=$(cpu $AGENT) t0=$(cpu $TUNNEL)
run warden "host=127.0.0.1 port=$LOCAL user=reader dbname=app sslmode=disable" | tee "$T/warden.txt"
n=$(cat "$T/warden"/pgbench_log.* | wc -l)
awk -v n="$n" -v c="$(cpu $CLUSTER)" -v c0="$c0" -v a="$(cpu $AGENT)" -v a0="$a0" -v t="$(cpu $TUNNEL)" -v t0="$t0" \
  'BEGIN {printf "CPU per transaction: proxy+auth %.0f us, database service %.0f us, local tunnel %.0f us\n", (c-c0)*1e6/n, (a-a0)*1e6/n, (t-t0)*1e6/n}'

d=$(awk '{print $2}' "$T/direct.txt")
w=$(awk '{print $2}' "$T/warden.txt")
awk -v d="$d" -v w="$w" 'BEGIN {printf "ratio through Warden/direct: %.2fx\n", w / d}'
