#!/usr/bin/env bash
# Element Web: the release's static files in $ELEMENT_DIR; nginx serves them at /element/ with
# the workspace's config.json (rendered by startup.sh). Image only (no download here).
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
dir="${ELEMENT_DIR:-/opt/element-web}"
[ -f "$dir/version" ] && [ "$(cat "$dir/version")" = "$ELEMENT_VERSION" ] && { log "element $ELEMENT_VERSION already in $dir"; exit 0; }
tmp=$(mktemp -d)
curl -fsSL "https://github.com/element-hq/element-web/releases/download/v$ELEMENT_VERSION/element-v$ELEMENT_VERSION.tar.gz" -o "$tmp/element.tar.gz"
rm -rf "$dir" && mkdir -p "$dir"
tar -xzf "$tmp/element.tar.gz" -C "$dir" --strip-components=1
rm -rf "$tmp" "$dir/config.json"
log "element: $(cat "$dir/version") in $dir"
