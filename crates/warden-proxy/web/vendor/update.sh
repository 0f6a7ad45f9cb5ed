#!/bin/sh
# Re-fetches the vendored browser libraries at their pinned versions from
# the npm registry and checks each package against the checksum recorded
# here, so the committed files can be rebuilt and compared byte for byte.
# Needs npm; `cargo build` never runs this.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fetch() { # package version sha256 files...
  pkg=$1 ver=$2 sum=$3
  shift 3
  (cd "$tmp" && npm pack --silent "$pkg@$ver" >/dev/null)
  tgz="$tmp/$(echo "$pkg" | sed 's/^@//; s#/#-#')-$ver.tgz"
  echo "$sum  $tgz" | sha256sum -c - >/dev/null
  dir="$tmp/$(basename "$tgz" .tgz)"
  mkdir -p "$dir" && tar xzf "$tgz" -C "$dir"
  for f in "$@"; do cp "$dir/package/${f%%:*}" "${f#*:}"; done
}
fetch @xterm/xterm 6.0.0 908e66e04af6c8dc6b00dd3b54de088e2e81e5ed866284fd6c2fb3c2d1c7a3f6 \
  lib/xterm.js:xterm.js css/xterm.css:xterm.css LICENSE:LICENSE.xterm
fetch @xterm/addon-fit 0.11.0 26003b4517a132b64e4ff228fd88a5fda3fff5e606c76093f6dcff772e9ecec0 \
  lib/addon-fit.js:addon-fit.js LICENSE:LICENSE.addon-fit
echo "vendored: @xterm/xterm 6.0.0, @xterm/addon-fit 0.11.0"
