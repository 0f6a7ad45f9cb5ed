#!/usr/bin/env bash
# CA keys in an HSM against the software store, in the same run, on a
# fresh SoftHSM2 token:
# - certificates signed per second by each store, Ed25519 and ECDSA P-256
#   keys in the token (N OpenSSH user certificates, one thread:
#   crates/warden-ca/examples/sign_rate.rs);
# - login latency (password + TOTP, certificates issued) of LOGINS users
#   against an all-in-one cluster with software CA keys and one with its
#   CA keys in the token: the median, each login timed alone.
# Needs: softhsm2, oathtool. N=5000 LOGINS=15 to change.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-5000}
LOGINS=${LOGINS:-15}
cargo build --release -q -p warden
cargo build --release -q -p warden-ca --example sign_rate
W=$PWD/target/release/warden
T=$(mktemp -d /tmp/warden-hsm.XXXX)
PIDS=
trap 'kill $PIDS 2>/dev/null || true' EXIT
mkdir -p "$T/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$T/tokens" >"$T/softhsm2.conf"
export SOFTHSM2_CONF=$T/softhsm2.conf
softhsm2-util --init-token --free --label warden --pin 2468 --so-pin 000000 >/dev/null
echo 2468 >"$T/pin"
chmod 600 "$T/pin"
MODULE=/usr/lib/softhsm/libsofthsm2.so

echo "== certificates signed per second (one thread)"
WARDEN_HSM_MODULE=$MODULE WARDEN_HSM_TOKEN=warden WARDEN_HSM_PIN=2468 \
  target/release/examples/sign_rate "$N"

SECRET=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# Median login time (ms) against a cluster started with the extra args.
login_ms() {
  local tag=$1; shift
  $W start --data-dir "$T/$tag" --listen-addr 127.0.0.1:0 --auth-addr 127.0.0.1:0 \
    --node-listen-addr 127.0.0.1:0 "$@" >"$T/$tag.log" 2>"$T/$tag.err" &
  local pid=$!
  PIDS="$PIDS $pid"
  for _ in $(seq 100); do grep -q "serving SSH" "$T/$tag.log" && break; sleep 0.1; done
  local proxy pin token
  proxy=$(awk '/proxy:/ {print $2}' "$T/$tag.log")
  pin=$(awk '/CA pin:/ {print $3}' "$T/$tag.log")
  for u in $(seq "$LOGINS"); do
    token=$($W admin --data-dir "$T/$tag" users add "u$u" --roles access --logins root | awk '/warden signup/ {print $3}')
    echo "bench password 123" | WARDEN_HOME=$T/$tag-h$u $W signup "$token" --proxy "$proxy" --ca-pin "$pin" \
      --password-stdin --totp-secret $SECRET --otp "$(oathtool --totp -b $SECRET)" >/dev/null 2>&1
  done
  local otp s e
  otp=$(oathtool --totp -b -N 'now + 30 seconds' $SECRET)
  for u in $(seq "$LOGINS"); do
    s=$(date +%s%N)
    echo "bench password 123" | WARDEN_HOME=$T/$tag-h$u $W login --proxy "$proxy" --user "u$u" \
      --password-stdin --otp "$otp" >/dev/null
    e=$(date +%s%N)
    echo $(((e - s) / 1000000))
  done | median
  kill $pid
}

echo "== login latency, median of $LOGINS (ms)"
soft=$(login_ms software)
hsm=$(login_ms hsm --hsm-module $MODULE --hsm-token warden --hsm-pin-file "$T/pin")
ec=$(login_ms hsm-ec --hsm-module $MODULE --hsm-token warden --hsm-pin-file "$T/pin" --hsm-key-type ecdsa-p256)
echo "software:          $soft ms"
echo "pkcs11 ed25519:    $hsm ms"
echo "pkcs11 ecdsa-p256: $ec ms"
awk -v s="$soft" -v h="$hsm" 'BEGIN {printf "ratio pkcs11 ed25519/software: %.2fx\n", h / s}'
awk -v s="$soft" -v h="$ec" 'BEGIN {printf "ratio pkcs11 ecdsa-p256/software: %.2fx\n", h / s}'
