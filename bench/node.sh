#!/usr/bin/env bash
# Node benchmarks against Debian's sshd on the same machine, same client
# (stock ssh), same user CA: `ssh true` latency, 1 GiB through `cat` both
# ways, and the node's resident memory per idle session.
# Needs: openssh-client, openssh-server (sshd), oathtool. Run as root.
source "$(dirname "$0")/common.sh"
SESSIONS=${SESSIONS:-"1 100 1000"}
NODE=$(sed -nE 's/.* serving SSH on ([0-9.:]+)\.$/\1/p' "$T/start.log")
NODE_PORT=${NODE##*:}
NODE_SSH=(ssh "${COMMON[@]}" -o UserKnownHostsFile="$K/known_hosts" -o StrictHostKeyChecking=yes -p "$NODE_PORT" root@127.0.0.1)
"${NODE_SSH[@]}" true
"${SSHD_SSH[@]}" true


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
