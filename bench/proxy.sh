#!/usr/bin/env bash
# Through-the-proxy benchmarks: `warden ssh node true` and 1 GiB through
# `cat`, to a node with no listening port (proxy + reverse tunnel), against
# stock `ssh -J` through Debian's sshd as jump host to Debian's sshd.
# Needs: openssh-client, openssh-server (sshd), oathtool. Run as root.
source "$(dirname "$0")/common.sh"
NT=$($W admin --data-dir "$T/data" tokens add --type node --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
$W start --roles node --proxy "$PROXY" --token "$NT" --ca-pin "$PIN" --name natnode --data-dir "$T/node" >"$T/node.log" 2>&1 &
EXTRA_PIDS=$!
NODE_SSH=($W ssh root@natnode --)
# The baseline: stock ssh -J through sshd as jump host to sshd.
SSHD_SSH=(ssh "${COMMON[@]}" "${SSHD_OPTS[@]}"
  -o "ProxyCommand=ssh ${COMMON[*]} ${SSHD_OPTS[*]} -p $SSHD_PORT -W %h:%p root@127.0.0.1"
  -p "$SSHD_PORT" root@127.0.0.1)
for _ in $(seq 50); do "${NODE_SSH[@]}" true 2>/dev/null && break; sleep 0.2; done
"${NODE_SSH[@]}" true


lat_node=$(for _ in $(seq "$RUNS"); do ms "${NODE_SSH[@]}" true; done | median)
lat_sshd=$(for _ in $(seq "$RUNS"); do ms "${SSHD_SSH[@]}" true; done | median)
echo "proxy_ssh_true.warden_ms $lat_node"
echo "proxy_ssh_true.openssh_jump_ms $lat_sshd"
awk -v a="$lat_node" -v b="$lat_sshd" 'BEGIN {printf "proxy_ssh_true.ratio %.2f x (warden/openssh)\n", a/b}'

up() { head -c 1073741824 /dev/zero | "$@" 'cat > /dev/null'; }
down() { "$@" 'head -c 1073741824 /dev/zero' >/dev/null; }
for dir in up down; do
  n=$(for _ in $(seq "$GIB_RUNS"); do ms $dir "${NODE_SSH[@]}"; done | median)
  s=$(for _ in $(seq "$GIB_RUNS"); do ms $dir "${SSHD_SSH[@]}"; done | median)
  awk -v n="$n" -v s="$s" -v d="$dir" 'BEGIN {
    printf "proxy_gib_%s.warden_MiBps %.0f\nproxy_gib_%s.openssh_jump_MiBps %.0f\nproxy_gib_%s.ratio %.2f x (warden/openssh throughput)\n",
      d, 1024000/n, d, 1024000/s, d, s/n }'
done

