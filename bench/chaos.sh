#!/usr/bin/env bash
# The scale-out cluster under faults, on loopback: a 3-member etcd,
# PostgreSQL (audit log), an S3-compatible server (recordings), 2 auth
# servers, 2 proxies and 2 nodes behind NAT. CLIENTS users each run short
# sessions in a loop (retrying a failed one every 0.5 s) while the script
# kills auth 2 (-9), stops an etcd follower, then the etcd leader, then
# kills proxy B (-9). Afterwards: the audit chain verifies, every
# acknowledged session has its recording and its audit events, every
# client's failures were retried to success (the longest wait is reported),
# and every node is reachable again.
# Needs: postgresql, etcd-server, oathtool, python3 with moto[server]
# (`.ci/run` installs them). Run as root. CLIENTS=20 DURATION=100 to change.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p warden
W=$PWD/target/release/warden
T=$(mktemp -d /tmp/warden-chaos.XXXX)
chmod 755 "$T"
CLIENTS=${CLIENTS:-20}
DURATION=${DURATION:-100}
source bench/stores.sh
RECORDINGS="s3://recordings/chaos?endpoint=http://127.0.0.1:$S3_PORT"
STORES=(--backend "$BACKEND" --audit-log "$AUDIT" --recordings "$RECORDINGS")

# Auth 1 with proxy A; auth 2; proxy B preferring auth 2.
$W start --roles auth,proxy --data-dir "$T/a1" --listen-addr 127.0.0.1:0 --auth-addr 127.0.0.1:0 \
  "${STORES[@]}" >"$T/a1.log" 2>"$T/a1.err" &
PIDS+=($!)
wait_for "$T/a1.log" "CA pin"
A1=$(awk '/auth:/ {print $2}' "$T/a1.log")
PA=$(awk '/proxy:/ {print $2}' "$T/a1.log")
PIN=$(awk '/CA pin:/ {print $3}' "$T/a1.log")
ADMIN=($W admin --data-dir "$T/a1")
$W start --roles auth --data-dir "$T/a2" --auth-addr 127.0.0.1:0 --kek-file "$T/a1/kek" \
  "${STORES[@]}" >"$T/a2.log" 2>"$T/a2.err" &
A2PID=$!
PIDS+=($!)
wait_for "$T/a2.log" "auth:"
A2=$(awk '/auth:/ {print $2}' "$T/a2.log")
tok() { "${ADMIN[@]}" tokens add --type "$1" --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'; }
$W start --roles proxy --data-dir "$T/pb" --listen-addr 127.0.0.1:0 --auth-server "$A2,$A1" \
  --proxy "$PA" --ca-pin "$PIN" --token "$(tok proxy)" >"$T/pb.log" 2>"$T/pb.err" &
PBPID=$!
PIDS+=($!)
wait_for "$T/pb.log" "serving on"
PB=$(sed -nE 's/.* serving on ([0-9.:]+)\.$/\1/p' "$T/pb.log")

# Two nodes behind NAT (no port), tunnelled to both proxies.
for n in 1 2; do
  $W start --roles node --proxy "$PA" --ca-pin "$PIN" --token "$(tok node)" --name "n$n" \
    --data-dir "$T/n$n" --heartbeat-interval 2s >"$T/n$n.log" 2>"$T/n$n.err" &
  PIDS+=($!)
  wait_for "$T/n$n.log" "no listening port"
done

# Users: half log in through proxy A, half through proxy B.
SECRET=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP
for u in $(seq "$CLIENTS"); do
  p=$PA; [ $((u % 2)) -eq 0 ] && p=$PB
  token=$("${ADMIN[@]}" users add "c$u" --roles access,auditor --logins root | awk '/warden signup/ {print $3}')
  echo "chaos password 123" | WARDEN_HOME=$T/h$u $W signup "$token" --proxy "$p" --ca-pin "$PIN" \
    --password-stdin --totp-secret $SECRET --otp "$(oathtool --totp -b $SECRET)" >/dev/null 2>&1
  echo "chaos password 123" | WARDEN_HOME=$T/h$u $W login --proxy "$p" --user "c$u" --password-stdin \
    --otp "$(oathtool --totp -b -N 'now + 30 seconds' $SECRET)" >/dev/null
done
for n in 1 2; do
  until WARDEN_HOME=$T/h1 $W ssh "root@n$n" -- true >/dev/null 2>&1; do sleep 0.5; done
done

# The clients: a session, and on failure a retry every 0.5 s. Each line:
# "ok START_MS END_MS WAITED_MS" (WAITED: since its first failed attempt).
client() {
  local u=$1 end=$(( $(date +%s) + DURATION )) n=0 first_fail=0
  while [ "$(date +%s)" -lt "$end" ]; do
    local node="n$(( (n % 2) + 1 ))" s=$(date +%s%N)
    if WARDEN_HOME=$T/h$u timeout 20 $W ssh "root@$node" -- echo "c$u-$n" >/dev/null 2>>"$T/c$u.err"; then
      local e=$(date +%s%N) waited=0
      [ "$first_fail" -gt 0 ] && waited=$(( (e - first_fail) / 1000000 ))
      echo "ok $((s / 1000000)) $((e / 1000000)) $waited" >>"$T/c$u.out"
      first_fail=0
      n=$((n + 1))
    else
      [ "$first_fail" -eq 0 ] && first_fail=$s
      echo "fail $((s / 1000000))" >>"$T/c$u.out"
      sleep 0.5
    fi
  done
}
CPIDS=()
for u in $(seq "$CLIENTS"); do client "$u" & CPIDS+=($!); done

step() { echo "t+$(( $(date +%s) - T0 ))s: $*"; }
T0=$(date +%s)
sleep $((DURATION / 6))
step "kill -9 auth 2"; kill -9 $A2PID
sleep $((DURATION / 6))
F=$(( ($(etcd_leader) + 1) % 3 ))
step "stop etcd follower m$F"; kill -9 "${EPID[$F]}"
sleep $((DURATION / 8))
step "etcd m$F back"; etcd_start "$F"
sleep $((DURATION / 12))
L=$(etcd_leader)
step "stop etcd leader m$L"; kill -9 "${EPID[$L]}"
sleep $((DURATION / 8))
step "etcd m$L back"; etcd_start "$L"
sleep $((DURATION / 12))
step "kill -9 proxy B (its users' profiles know proxy A: their next sessions go there)"
B_DEATH=$(date +%s)
kill -9 $PBPID
for p in "${CPIDS[@]}"; do wait "$p" || true; done
step "clients done"

# What survived.
ok=$(cat "$T"/c*.out | grep -c '^ok' || true)
fails() { for u in $(seq "$CLIENTS"); do [ $((u % 2)) -eq "$1" ] && grep -c '^fail' "$T/c$u.out" || true; done | awk '{s+=$1} END {print s+0}'; }
echo "sessions.ok $ok"
echo "proxy_a_clients.failed_attempts $(fails 1)"
# Users of proxy B move to proxy A once it is gone (their profiles learned
# it at login): attempts before and after its death are counted apart.
B_DEATH_MS=$(( B_DEATH * 1000 ))
echo "proxy_b_clients.failed_attempts_before_it_died $(cat $(for u in $(seq "$CLIENTS"); do [ $((u % 2)) -eq 0 ] && echo "$T/c$u.out"; done) | awk -v d="$B_DEATH_MS" '$1 == "fail" && $2 < d' | wc -l)"
echo "proxy_b_clients.failed_attempts_after_it_died $(cat $(for u in $(seq "$CLIENTS"); do [ $((u % 2)) -eq 0 ] && echo "$T/c$u.out"; done) | awk -v d="$B_DEATH_MS" '$1 == "fail" && $2 >= d' | wc -l)"
for u in $(seq "$CLIENTS"); do
  [ $((u % 2)) -eq 0 ] && continue
  awk '$1 == "ok" {print $4}' "$T/c$u.out"
done | sort -n | tail -1 | sed 's/^/proxy_a_clients.longest_wait_ms /'
for u in $(seq "$CLIENTS"); do
  [ $((u % 2)) -eq 1 ] && continue
  awk '$1 == "ok" {print $4}' "$T/c$u.out"
done | sort -n | tail -1 | sed 's/^/proxy_b_clients.longest_wait_ms /'
for n in 1 2; do
  WARDEN_HOME=$T/h1 $W ssh "root@n$n" -- true && echo "node.n$n reachable through proxy A"
done
"${ADMIN[@]}" audit verify
sleep 3
recs=$(WARDEN_HOME=$T/h1 $W recordings ls --format json 2>/dev/null | grep -c '"session_id"' || true)
starts=$("$PG_BIN/psql" -At -h 127.0.0.1 -p "$PG_PORT" -U warden -d audit \
  -c "SELECT count(*) FROM warden_audit WHERE type = 'session.start'")
echo "audit.session_start_events $starts (acknowledged sessions: $ok, plus the reachability checks)"
echo "recordings.listed ${recs:-?}"
echo "logs in $T"
