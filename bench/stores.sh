# The scale-out stores on loopback, for bench/chaos.sh and
# bench/scale_out.sh (sourced, not run; needs T set): PostgreSQL with an
# `audit` database ($AUDIT, $PG_BIN, $PG_PORT), a 3-member etcd ($BACKEND,
# etcd_start I, etcd_leader, ${EPID[I]}) and an S3-compatible server with
# a `recordings` bucket ($S3_PORT). Everything started is killed on exit.
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1; }

# PostgreSQL, as the postgres user (it refuses root).
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort | tail -1)
PG_PORT=$(port)
mkdir -p "$T/pg"
chown postgres "$T/pg"
setpriv --reuid=postgres --regid=postgres --clear-groups -- "$PG_BIN/initdb" -D "$T/pg/data" -U warden --auth=trust >/dev/null
setpriv --reuid=postgres --regid=postgres --clear-groups -- "$PG_BIN/postgres" -D "$T/pg/data" -p "$PG_PORT" -k "$T/pg" \
  -c listen_addresses=127.0.0.1 -c max_connections=300 >"$T/pg.log" 2>&1 &
PIDS+=($!)
until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; do sleep 0.1; done
"$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U warden -d postgres -c 'CREATE DATABASE audit'
AUDIT="postgres://warden@127.0.0.1:$PG_PORT/audit"

# etcd: 3 members.
declare -a EC EP EPID
for i in 0 1 2; do EC[$i]=$(port); EP[$i]=$(port); done
CLUSTER="m0=http://127.0.0.1:${EP[0]},m1=http://127.0.0.1:${EP[1]},m2=http://127.0.0.1:${EP[2]}"
etcd_start() {
  etcd --name "m$1" --data-dir "$T/etcd$1" --listen-client-urls "http://127.0.0.1:${EC[$1]}" \
    --advertise-client-urls "http://127.0.0.1:${EC[$1]}" --listen-peer-urls "http://127.0.0.1:${EP[$1]}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${EP[$1]}" --initial-cluster "$CLUSTER" \
    --initial-cluster-state new >"$T/etcd$1.log" 2>&1 &
  EPID[$1]=$!
  PIDS+=($!)
}
for i in 0 1 2; do etcd_start $i; done
BACKEND="etcd://127.0.0.1:${EC[0]},127.0.0.1:${EC[1]},127.0.0.1:${EC[2]}"
# The index of etcd's leader, from its JSON gateway.
etcd_leader() {
  python3 - "${EC[@]}" <<'PY'
import json, sys, urllib.request
for i, port in enumerate(sys.argv[1:]):
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v3/maintenance/status", data=b"{}", method="POST")
        d = json.load(urllib.request.urlopen(req, timeout=2))
    except Exception:
        continue
    if d.get("leader") == d.get("header", {}).get("member_id"):
        print(i)
        break
PY
}
until [ -n "$(etcd_leader)" ]; do sleep 0.2; done

# S3 (moto) and its bucket.
S3_PORT=$(port)
python3 -m moto.server -H 127.0.0.1 -p "$S3_PORT" >"$T/s3.log" 2>&1 &
PIDS+=($!)
export AWS_ACCESS_KEY_ID=chaos AWS_SECRET_ACCESS_KEY=chaos
python3 - "$S3_PORT" <<'PY'
import sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/recordings"
for _ in range(300):
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="PUT"), timeout=2)
        break
    except Exception:
        time.sleep(0.1)
PY
