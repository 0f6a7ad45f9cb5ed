#!/usr/bin/env bash
# The control plane, each against a baseline in the same run:
# - lock push: from `warden admin lock` to the end of a live session it
#   covers (p50, p99 over RUNS), against opening a session (`ssh true`);
#   nodes hear of locks by a long poll answered from auth's watch stream;
# - role push: from taking away the role that allowed a live session to
#   its end (p50, p99), against the same baseline; nodes follow users and
#   roles the same way and re-decide live sessions on every change;
# - pooled API connections: calls on a kept-alive connection against a new
#   connection (and TLS handshake) per call.
# Needs: openssh-client, openssh-server (sshd), oathtool. Run as root.
source "$(dirname "$0")/common.sh"
NODE=$(sed -nE 's/.* serving SSH on ([0-9.:]+)\.$/\1/p' "$T/start.log")
NODE_PORT=${NODE##*:}
NODE_SSH=(ssh "${COMMON[@]}" -o UserKnownHostsFile="$K/known_hosts" -o StrictHostKeyChecking=yes -p "$NODE_PORT" root@127.0.0.1)
"${NODE_SSH[@]}" true
A=(admin --data-dir "$T/data")

# Times, RUNS times, from running CUT to the end of a live session it
# should end; UNDO (given the output of CUT) restores access afterwards.
# Milliseconds, one per line, in $T/$1.
time_to_end() {
  local file=$T/$1 cut=$2 undo=$3
  : >"$file"
  for _ in $(seq "$RUNS"); do
    local out=$T/live.out
    : >"$out"
    "${NODE_SSH[@]}" 'echo started; sleep 60' >"$out" 2>/dev/null &
    local live=$!
    for _ in $(seq 200); do grep -q started "$out" && break; sleep 0.01; done
    local s e said
    s=$(date +%s%N)
    said=$($cut)
    wait $live || true
    e=$(date +%s%N)
    echo $(( (e - s) / 1000000 )) >>"$file"
    $undo "$said"
    for _ in $(seq 100); do "${NODE_SSH[@]}" true 2>/dev/null && break; sleep 0.05; done
  done
}
lock() { $W "${A[@]}" lock --user bench --reason bench; }
unlock() { $W "${A[@]}" locks rm "$(sed -nE 's/.*lock id ([^ .]+)\..*/\1/p' <<<"$1")" >/dev/null; }
drop_role() { $W "${A[@]}" users update bench --roles auditor; }
give_role() { $W "${A[@]}" users update bench --roles access >/dev/null; }
time_to_end lock_ms lock unlock
time_to_end role_ms drop_role give_role
pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int((NR-1)*p/100)+1; print a[i]}'; }
p50=$(pct 50 <"$T/lock_ms")
p99=$(pct 99 <"$T/lock_ms")
open=$(for _ in $(seq "$RUNS"); do ms "${NODE_SSH[@]}" true; done | median)
echo "lock_to_session_end.p50_ms $p50"
echo "lock_to_session_end.p99_ms $p99"
echo "ssh_true.node_ms $open"
awk -v a="$p99" -v b="$open" 'BEGIN {printf "lock_to_session_end.ratio %.2f x (p99 lock-to-end / ssh true)\n", a/b}'
rp50=$(pct 50 <"$T/role_ms")
rp99=$(pct 99 <"$T/role_ms")
echo "role_removal_to_session_end.p50_ms $rp50"
echo "role_removal_to_session_end.p99_ms $rp99"
awk -v a="$rp99" -v b="$open" 'BEGIN {printf "role_removal_to_session_end.ratio %.2f x (p99 removal-to-end / ssh true)\n", a/b}'

# Pooled API connections: whoami through the proxy, reused client vs a new
# one (and a TLS handshake) per call.
./target/release/api_calls "$WARDEN_HOME" "${API_CALLS:-500}"
