#!/usr/bin/env bash
# Builds the Debian package with cargo-deb (cargo install cargo-deb):
#   bash packaging/build-deb.sh          # release build -> target/debian/warden_*.deb
#   bash packaging/build-deb.sh dev      # reuse the debug build (CI's install test)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-release}
case $profile in
  release) cargo build --release -p warden; bin=target/release/warden ;;
  dev) cargo build -p warden; bin=target/debug/warden ;;
  *) echo "usage: $0 [release|dev]" >&2; exit 2 ;;
esac
out=packaging/out
rm -rf "$out" && mkdir -p "$out/man" "$out/completions"
"$bin" man --out-dir "$out/man"
"$bin" completion bash > "$out/completions/warden.bash"
"$bin" completion zsh > "$out/completions/_warden"
"$bin" completion fish > "$out/completions/warden.fish"
if [ "$profile" = dev ]; then
  cargo deb -p warden --no-build --profile dev --no-strip
else
  cargo deb -p warden --no-build
fi
