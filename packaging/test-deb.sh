#!/usr/bin/env bash
# Builds the package from the debug build, installs it, checks what it put
# where, runs the installed binary, and removes the package again.
set -euo pipefail
cd "$(dirname "$0")/.."
# Pinned: newer releases may refuse the dev profile used here to skip a release build.
[ "$(cargo deb --version 2>/dev/null)" = "cargo-deb 3.8.0" ] || cargo install cargo-deb --locked --version 3.8.0
bash packaging/build-deb.sh dev
deb=$(ls -t target/debian/warden_*.deb)
deb=${deb%%$'\n'*}
[ "$(dpkg-deb --field "$deb" Package)" = warden ]
dpkg -i "$deb"
trap 'dpkg --purge warden >/dev/null' EXIT
for f in /usr/bin/warden /lib/systemd/system/warden.service /lib/systemd/system/warden-node.service \
         /etc/warden/warden.yaml /etc/warden/node.yaml /usr/share/bash-completion/completions/warden; do
  [ -e "$f" ] || { echo "package lacks $f" >&2; exit 1; }
done
ls /usr/share/man/man1/warden-start.1* >/dev/null
/usr/bin/warden --version
# The shipped settings are valid for the shipped binary.
# (grep without -q: an early exit would kill the writer with SIGPIPE.)
/usr/bin/warden start --config /etc/warden/warden.yaml --print-config | grep '^listen-addr: 0.0.0.0:3080$' >/dev/null
/usr/bin/warden start --config /etc/warden/node.yaml --print-config | grep '^token-file: /etc/warden/node.token$' >/dev/null
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify /lib/systemd/system/warden.service /lib/systemd/system/warden-node.service
fi
echo "package ok: $deb"
