#!/usr/bin/env bash
# Recording overhead: a session streaming output at full speed from the node
# (stock ssh, same client), with session recording on (the default) and off
# (`record_session: off` on the only role), in the same run. Zeros compress
# to almost nothing; random bytes are the worst case for the encoder.
# Needs: openssh-client, openssh-server, oathtool. Run as root.
source "$(dirname "$0")/common.sh"
NODE=$(sed -nE 's/.* serving SSH on ([0-9.:]+)\.$/\1/p' "$T/start.log")
NODE_SSH=(ssh "${COMMON[@]}" -o UserKnownHostsFile="$K/known_hosts" -o StrictHostKeyChecking=yes -p "${NODE##*:}" root@127.0.0.1)
head -c 67108864 /dev/urandom >"$T/random.bin"
"${NODE_SSH[@]}" true

run() { # label, mode
  local z r
  z=$(for _ in $(seq "$GIB_RUNS"); do ms "${NODE_SSH[@]}" 'head -c 1073741824 /dev/zero'; done | median)
  r=$(for _ in $(seq "$GIB_RUNS"); do ms "${NODE_SSH[@]}" "cat $T/random.bin"; done | median)
  echo "$1 $z $r"
}
on=$(run on)
$W admin --data-dir "$T/data" roles get access > "$T/access.yaml"
python3 - "$T/access.yaml" <<'PY'
import sys
p = sys.argv[1]; s = open(p).read()
s = s.replace("  options:\n", "  options:\n    record_session: 'off'\n", 1)
open(p, "w").write(s)
PY
$W admin --data-dir "$T/data" roles apply -f "$T/access.yaml" >/dev/null
off=$(run off)
read -r _ zon ron <<<"$on"
read -r _ zoff roff <<<"$off"
awk -v a="$zon" -v b="$zoff" -v c="$ron" -v d="$roff" 'BEGIN {
  printf "zeros_1GiB.recorded_MiBps %.0f\nzeros_1GiB.unrecorded_MiBps %.0f\nzeros_1GiB.ratio %.2f x (recorded/unrecorded throughput)\n", 1024000/a, 1024000/b, b/a
  printf "random_64MiB.recorded_MiBps %.0f\nrandom_64MiB.unrecorded_MiBps %.0f\nrandom_64MiB.ratio %.2f x (recorded/unrecorded throughput)\n", 64000/c, 64000/d, d/c }'
du -sh "$T/data/node/recordings" "$T/data/recordings" 2>/dev/null || true
