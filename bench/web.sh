#!/usr/bin/env bash
# The web UI in Chromium (Debian's chromium, driven by playwright-core from
# crates/warden/tests/web): the login page loaded cold (against a static
# page of the same proxy, loaded the same way), the servers page
# reloaded when logged in, and a terminal keystroke's echo through proxy
# and node (p50/p99). The baseline, in the same run: the same keystroke
# through stock OpenSSH (`warden ssh`, through the same proxy to the same
# node), timed on a pseudo-terminal.
# Needs: chromium, nodejs/npm, openssh-client, openssh-server, oathtool.
source "$(dirname "$0")/common.sh"
KEYS=${KEYS:-200}
WEB=crates/warden/tests/web
[ -d $WEB/node_modules/playwright-core ] || (cd $WEB && npm ci --no-audit --no-fund >/dev/null)
NODE=$($W ls --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["spec"]["hostname"])')

# Baseline: stock ssh with a PTY, one key at a time, timed to its echo.
python3 - "$W" "$NODE" "$KEYS" <<'PY' >"$T/ssh_echo.json"
import json, os, pty, select, sys, time
w, node, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
pid, fd = pty.fork()
if pid == 0:
    os.execv(w, [w, "ssh", "-t", f"root@{node}"])
def read_until(pred, timeout=20):
    buf, end = b"", time.time() + timeout
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            buf += os.read(fd, 65536)
            if pred(buf):
                return buf
    raise SystemExit("no echo from the node")
os.write(fd, b"export PS1='$ '\n")
read_until(lambda b: b.endswith(b"$ "))
lat = []
for i in range(n):
    if i % 60 == 0:
        os.write(fd, b"\x15")
        time.sleep(0.05)
        select.select([fd], [], [], 0.05) and os.read(fd, 65536)
    t0 = time.perf_counter()
    os.write(fd, b"x")
    read_until(lambda b: b"x" in b)
    lat.append((time.perf_counter() - t0) * 1000)
    time.sleep(0.005)
os.write(fd, b"\x15exit\n")
lat.sort()
print(json.dumps({"p50": lat[len(lat) // 2], "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))], "n": n}))
PY

(cd $WEB && WARDEN_URL="https://$PROXY/" USER="bench:bench password 123:$SECRET" NODE="$NODE" LOGIN=root \
  RUNS="$RUNS" KEYS="$KEYS" node bench.js) >"$T/web.json"
python3 - "$T/web.json" "$T/ssh_echo.json" <<'PY'
import json, sys
web, ssh = (json.load(open(p)) for p in sys.argv[1:3])
for k in ("login_page_cold_ms", "static_page_cold_ms", "servers_page_ms", "echo_bytes_ms", "echo_shown_ms"):
    print(f"web.{k} p50 {web[k]['p50']:.1f} p99 {web[k]['p99']:.1f} (n={web[k]['n']})")
print(f"web.login_page_ratio_p50 {web['login_page_cold_ms']['p50'] / web['static_page_cold_ms']['p50']:.2f} x (the UI's login page / a static page of the proxy, cold)")
print(f"web.echo_openssh_ms p50 {ssh['p50']:.1f} p99 {ssh['p99']:.1f} (n={ssh['n']})")
for q in ("p50", "p99"):
    print(f"web.echo_ratio_{q} {web['echo_bytes_ms'][q] / ssh[q]:.2f} x (browser terminal / stock ssh, to the echoed bytes)")
PY
