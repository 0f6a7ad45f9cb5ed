#!/usr/bin/env bash
# Runs Warden's benchmarks; each reports a ratio against a baseline measured
# in the same run. Needs ssh-keygen (Debian: openssh-client).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p warden-bench --bins
for b in ca_sign store_put audit_log; do
  ./target/release/$b
done
