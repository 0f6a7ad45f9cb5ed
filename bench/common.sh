# Shared by bench/node.sh and bench/proxy.sh (sourced, not run): builds
# release binaries, starts an all-in-one cluster, signs up and logs in the
# user `bench` (login root), and starts Debian's sshd trusting the same user
# CA. Sets W, T, K, PROXY, PIN, WPID, SSHD_PORT, COMMON (ssh options with
# the bench user's certificate) and SSHD_SSH; `median` and `ms` time runs.
# Add pids to EXTRA_PIDS to have them stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 65536 2>/dev/null || true
cargo build --release -q -p warden -p warden-bench --bins
W=$PWD/target/release/warden
T=$(mktemp -d /tmp/warden-bench.XXXX)
export WARDEN_HOME=$T/home
RUNS=${RUNS:-20}
GIB_RUNS=${GIB_RUNS:-3}

$W start --data-dir "$T/data" --listen-addr 127.0.0.1:0 --auth-addr 127.0.0.1:0 \
  --node-listen-addr 127.0.0.1:0 >"$T/start.log" 2>"$T/start.err" &
WPID=$!
SSHD_PID=
EXTRA_PIDS=
cleanup() { kill $WPID $EXTRA_PIDS 2>/dev/null || true; [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 100); do grep -q "serving SSH" "$T/start.log" && break; sleep 0.1; done
PROXY=$(awk '/proxy:/ {print $2}' "$T/start.log")
PIN=$(awk '/CA pin:/ {print $3}' "$T/start.log")
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
SSHD_OPTS=(-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o LogLevel=ERROR)
SSHD_SSH=(ssh "${COMMON[@]}" "${SSHD_OPTS[@]}" -p "$SSHD_PORT" root@127.0.0.1)

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
