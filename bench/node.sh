#!/usr/bin/env bash
# Node benchmarks against Debian's sshd on the same machine, same client
# (stock ssh), same user CA: `ssh true` latency, 1 GiB through `cat` both
# ways, and the node's resident memory per idle session.
# Needs: openssh-client, openssh-server (sshd), oathtool. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 65536 2>/dev/null || true
cargo build --release -q -p warden -p warden-bench --bins
W=$PWD/target/release/warden
T=$(mktemp -d /tmp/warden-bench.XXXX)
export WARDEN_HOME=$T/home
RUNS=${RUNS:-20}
GIB_RUNS=${GIB_RUNS:-3}
SESSIONS=${SESSIONS:-"1 100 1000"}

$W start --data-dir "$T/data" --listen-addr 127.0.0.1:0 --auth-addr 127.0.0.1:0 \
  --node-listen-addr 127.0.0.1:0 >"$T/start.log" 2>"$T/start.err" &
WPID=$!
SSHD_PID=
cleanup() { kill $WPID 2>/dev/null || true; [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 100); do grep -q "serving SSH" "$T/start.log" && break; sleep 0.1; done
PROXY=$(awk '/proxy:/ {print $2}' "$T/start.log")
PIN=$(awk '/CA pin:/ {print $3}' "$T/start.log")
NODE=$(sed -nE 's/.* serving SSH on ([0-9.:]+)\.$/\1/p' "$T/start.log")
NODE_PORT=${NODE##*:}
SECRET=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP
TOKEN=$($W admin --data-dir "$T/data" users add bench --roles access --logins root | awk '/warden signup/ {print $3}')
echo "bench password 123" | $W signup "$TOKEN" --proxy "$PROXY" --ca-pin "$PIN" --password-stdin \
  --totp-secret $SECRET --otp "$(oathtool --totp -b $SECRET)" >/dev/null 2>&1
echo "bench password 123" | $W login --proxy "$PROXY" --user bench --password-stdin \
  --otp "$(oathtool --totp -b -N 'now + 30 seconds' $SECRET)" >/dev/null
K=$(ls -d "$WARDEN_HOME"/keys/*)

# Debian's sshd trusting the same user CA.
mkdir -p /run/sshd
$W admin --data-dir "$T/data" ca export --type user >"$T/user_ca.pub"
ssh-keygen -q -t ed25519 -N '' -f "$T/sshd_host"
SSHD_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$T/sshd_config" <<CFG
Port $SSHD_PORT
ListenAddress 127.0.0.1
HostKey $T/sshd_host
PidFile $T/sshd.pid
TrustedUserCAKeys $T/user_ca.pub
AuthorizedKeysFile none
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
LogLevel ERROR
MaxStartups 2000
CFG
/usr/sbin/sshd -f "$T/sshd_config"
for _ in $(seq 50); do [ -f "$T/sshd.pid" ] && break; sleep 0.1; done
SSHD_PID=$(cat "$T/sshd.pid")

COMMON=(-o BatchMode=yes -o CertificateFile="$K/bench-cert.pub" -i "$K/bench" -o IdentitiesOnly=yes)
NODE_SSH=(ssh "${COMMON[@]}" -o UserKnownHostsFile="$K/known_hosts" -o StrictHostKeyChecking=yes -p "$NODE_PORT" root@127.0.0.1)
SSHD_SSH=(ssh "${COMMON[@]}" -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o LogLevel=ERROR -p "$SSHD_PORT" root@127.0.0.1)
"${NODE_SSH[@]}" true
"${SSHD_SSH[@]}" true

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }

lat_node=$(for _ in $(seq "$RUNS"); do ms "${NODE_SSH[@]}" true; done | median)
lat_sshd=$(for _ in $(seq "$RUNS"); do ms "${SSHD_SSH[@]}" true; done | median)
echo "ssh_true.node_ms $lat_node"
echo "ssh_true.sshd_ms $lat_sshd"
awk -v a="$lat_node" -v b="$lat_sshd" 'BEGIN {printf "ssh_true.ratio %.2f x (node/sshd)\n", a/b}'

up() { head -c 1073741824 /dev/zero | "$@" 'cat > /dev/null'; }
down() { "$@" 'head -c 1073741824 /dev/zero' >/dev/null; }
for dir in up down; do
  n=$(for _ in $(seq "$GIB_RUNS"); do ms $dir "${NODE_SSH[@]}"; done | median)
  s=$(for _ in $(seq "$GIB_RUNS"); do ms $dir "${SSHD_SSH[@]}"; done | median)
  awk -v n="$n" -v s="$s" -v d="$dir" 'BEGIN {
    printf "gib_%s.node_MiBps %.0f\ngib_%s.sshd_MiBps %.0f\ngib_%s.ratio %.2f x (node/sshd throughput)\n",
      d, 1024000/n, d, 1024000/s, d, s/n }'
done

# Memory: the all-in-one process (auth + proxy + node) per idle session.
./target/release/idle_sessions "127.0.0.1:$NODE_PORT" root "$K/bench" "$K/bench-cert.pub" "$WPID" $SESSIONS
