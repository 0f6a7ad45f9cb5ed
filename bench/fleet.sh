#!/usr/bin/env bash
# 10,000 simulated nodes on real reverse tunnels to one proxy: memory per
# idle tunnel, `warden ls` with RBAC filtering, time to reach a random node.
# Needs oathtool. FLEET=N to change the size.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p warden -p warden-bench --bins
W=$PWD/target/release/warden
T=$(mktemp -d /tmp/warden-fleet.XXXX)
export WARDEN_HOME=$T/home
N=${FLEET:-10000}
$W start --roles auth,proxy --data-dir "$T/data" --listen-addr 127.0.0.1:0 --auth-addr 127.0.0.1:0 >"$T/start.log" 2>"$T/start.err" &
WPID=$!
trap 'kill $WPID 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "CA pin" "$T/start.log" && break; sleep 0.1; done
PROXY=$(awk '/proxy:/ {print $2}' "$T/start.log")
PIN=$(awk '/CA pin:/ {print $3}' "$T/start.log")
SECRET=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP
# A user who may reach only env=prod nodes, so listing filters by RBAC.
cat >"$T/roles.yaml" <<YAML
kind: role
version: v1
metadata:
  name: prod
spec:
  allow:
    logins: [root]
    node_labels:
      env: prod
YAML
$W admin --data-dir "$T/data" roles apply -f "$T/roles.yaml" >/dev/null
TOKEN=$($W admin --data-dir "$T/data" users add bench --roles prod --logins root | awk '/warden signup/ {print $3}')
echo "bench password 123" | $W signup "$TOKEN" --proxy "$PROXY" --ca-pin "$PIN" --password-stdin \
  --totp-secret $SECRET --otp "$(oathtool --totp -b $SECRET)" >/dev/null 2>&1
echo "bench password 123" | $W login --proxy "$PROXY" --user bench --password-stdin \
  --otp "$(oathtool --totp -b -N 'now + 30 seconds' $SECRET)" >/dev/null
K=$(ls -d "$WARDEN_HOME"/keys/*)
./target/release/fleet "$T/data" "$PROXY" "$WPID" "$N" "$K/bench" "$K/bench-cert.pub" >"$T/fleet.out" 2>&1 &
FPID=$!
# Wait for the fleet to be up, then time `warden ls` while it is.
for _ in $(seq 3000); do
  grep -q "joined and tunnelled" "$T/fleet.out" 2>/dev/null && break
  sleep 0.2
done
times=()
for _ in 1 2 3 4 5; do
  s=$(date +%s%N); count=$($W ls --format json | grep -c '"kind": "node"'); e=$(date +%s%N)
  times+=($(( (e - s) / 1000000 )))
done
median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 3p)
echo "fleet.warden_ls_ms $median (lists $count of $N nodes: RBAC keeps env=prod)"
# The fleet binary prints its connect figures, then holds; stop it.
for _ in $(seq 600); do grep -q connect_random "$T/fleet.out" 2>/dev/null && break; sleep 0.5; done
cat "$T/fleet.out"
kill $FPID 2>/dev/null || true
