#!/usr/bin/env bash
# Logins/s and new sessions/s through the proxies: one auth server on the
# embedded SQLite (with its proxy) against two auth servers on a 3-member
# etcd with the audit log on PostgreSQL and recordings on S3 (auth 1 with
# proxy A, auth 2, proxy B preferring auth 2), on the same machine in the
# same run. Each setup has one node behind NAT tunnelled to its proxies.
# - logins/s: USERS users (password + TOTP) log in at once, CONCURRENCY at
#   a time, half through each proxy; the rate is USERS / wall time;
# - sessions/s: CONCURRENCY clients run `warden ssh root@node -- true` in
#   a loop for DURATION seconds, half through each proxy.
# The load generators are warden's own CLI processes on the same 2 cores,
# so the absolute figures are capped by the clients; the ratio is the point.
# Needs: postgresql, etcd-server, oathtool, python3 with moto[server].
# Run as root. USERS=60 CONCURRENCY=8 DURATION=30 to change.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p warden
W=$PWD/target/release/warden
T=$(mktemp -d /tmp/warden-scale.XXXX)
chmod 755 "$T"
USERS=${USERS:-60}
CONCURRENCY=${CONCURRENCY:-8}
DURATION=${DURATION:-30}
SECRET=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP
source bench/stores.sh
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Every client here is 127.0.0.1: lift the per-source login rate limit
# (a protection against guessing, not a capacity limit) for the run.
lift_rate_limit() {
  "${ADMIN[@]}" get cluster_config | sed -E 's/login_rate_per_minute: [0-9]+/login_rate_per_minute: 100000/' >"$T/cc.yaml"
  "${ADMIN[@]}" create -f "$T/cc.yaml" >/dev/null
}

# Users u1..uUSERS signed up (TOTP enrolled) in setup $1 through proxies
# $2 (odd users) and $3 (even users); the admin is ${ADMIN[@]}.
add_users() {
  local tag=$1 pa=$2 pb=$3
  for u in $(seq "$USERS"); do
    local p=$pa
    [ $((u % 2)) -eq 0 ] && p=$pb
    token=$("${ADMIN[@]}" users add "u$u" --roles access --logins root | awk '/warden signup/ {print $3}')
    echo "bench password 123" | WARDEN_HOME=$T/$tag-h$u $W signup "$token" --proxy "$p" --ca-pin "$PIN" \
      --password-stdin --totp-secret $SECRET --otp "$(oathtool --totp -b $SECRET)" >/dev/null 2>&1
  done
}

# Prints logins/s for every user logging in once (next TOTP step: the
# signup used this one), CONCURRENCY at a time; failures are left out of
# the rate and listed at the end.
logins_per_s() {
  local tag=$1 pa=$2 pb=$3 otp s e
  otp=$(oathtool --totp -b -N 'now + 30 seconds' $SECRET)
  : >"$T/$tag-logins"
  s=$(now_ms)
  for u in $(seq "$USERS"); do
    local p=$pa
    [ $((u % 2)) -eq 0 ] && p=$pb
    (echo "bench password 123" | WARDEN_HOME=$T/$tag-h$u $W login --proxy "$p" --user "u$u" \
      --password-stdin --otp "$otp" >/dev/null 2>>"$T/$tag-login.err" && echo ok >>"$T/$tag-logins") &
    [ $((u % CONCURRENCY)) -eq 0 ] && wait
  done
  wait
  e=$(now_ms)
  awk -v ms=$((e - s)) 'END {printf "%.1f\n", NR * 1000 / ms}' "$T/$tag-logins"
}

# Prints sessions/s: CONCURRENCY clients in a loop for DURATION seconds.
sessions_per_s() {
  local tag=$1 end=$(($(date +%s) + DURATION))
  : >"$T/$tag-sessions"
  for c in $(seq "$CONCURRENCY"); do
    (
      while [ "$(date +%s)" -lt "$end" ]; do
        if WARDEN_HOME=$T/$tag-h$c $W ssh root@n1 -- true >/dev/null 2>>"$T/$tag-ssh.err"; then
          echo ok >>"$T/$tag-sessions"
        fi
      done
    ) &
  done
  wait
  awk -v d="$DURATION" 'END {printf "%.1f\n", NR / d}' "$T/$tag-sessions"
}

tok() { "${ADMIN[@]}" tokens add --type "$1" --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'; }
node_up() {
  $W start --roles node --proxy "$1" --ca-pin "$PIN" --token "$(tok node)" --name n1 \
    --data-dir "$T/$2-n1" >"$T/$2-n1.log" 2>"$T/$2-n1.err" &
  PIDS+=($!)
  wait_for "$T/$2-n1.log" "no listening port"
  until WARDEN_HOME=$T/$2-h1 $W ssh root@n1 -- true >/dev/null 2>&1; do sleep 0.5; done
}

# Setup 1: one auth server on SQLite, with its proxy.
$W start --roles auth,proxy --data-dir "$T/s1" --listen-addr 127.0.0.1:0 --auth-addr 127.0.0.1:0 \
  >"$T/s1.log" 2>"$T/s1.err" &
PIDS+=($!)
wait_for "$T/s1.log" "CA pin"
P1=$(awk '/proxy:/ {print $2}' "$T/s1.log")
PIN=$(awk '/CA pin:/ {print $3}' "$T/s1.log")
ADMIN=($W admin --data-dir "$T/s1")
lift_rate_limit
add_users one "$P1" "$P1"
login_one=$(logins_per_s one "$P1" "$P1")
node_up "$P1" one
sessions_one=$(sessions_per_s one)
for p in "${PIDS[@]:${#PIDS[@]}-2}"; do kill "$p" 2>/dev/null || true; done

# Setup 2: two auth servers on etcd + PostgreSQL + S3, two proxies.
STORES=(--backend "$BACKEND" --audit-log "$AUDIT" --recordings "s3://recordings/scale?endpoint=http://127.0.0.1:$S3_PORT")
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
PIDS+=($!)
wait_for "$T/a2.log" "auth:"
A2=$(awk '/auth:/ {print $2}' "$T/a2.log")
$W start --roles proxy --data-dir "$T/pb" --listen-addr 127.0.0.1:0 --auth-server "$A2,$A1" \
  --proxy "$PA" --ca-pin "$PIN" --token "$(tok proxy)" >"$T/pb.log" 2>"$T/pb.err" &
PIDS+=($!)
wait_for "$T/pb.log" "serving on"
PB=$(sed -nE 's/.* serving on ([0-9.:]+)\.$/\1/p' "$T/pb.log")
lift_rate_limit
add_users two "$PA" "$PB"
login_two=$(logins_per_s two "$PA" "$PB")
node_up "$PA" two
sessions_two=$(sessions_per_s two)

echo "logins_per_s.one_auth_sqlite $login_one"
echo "logins_per_s.two_auth_etcd_postgres $login_two"
awk -v a="$login_two" -v b="$login_one" 'BEGIN {printf "logins_per_s.ratio %.2f x (two auth on etcd+PostgreSQL / one on SQLite)\n", a/b}'
echo "sessions_per_s.one_auth_sqlite $sessions_one"
echo "sessions_per_s.two_auth_etcd_postgres $sessions_two"
awk -v a="$sessions_two" -v b="$sessions_one" 'BEGIN {printf "sessions_per_s.ratio %.2f x (two auth on etcd+PostgreSQL / one on SQLite)\n", a/b}'
for f in "$T"/*-login.err "$T"/*-ssh.err; do
  n=$(grep -c '^error' "$f" || true)
  [ "$n" -gt 0 ] && echo "$n failed in $f, e.g.: $(grep '^error' "$f" | sort | uniq -c | sort -rn | head -2)"
done
echo "logs in $T"
