#!/usr/bin/env bash
# Installs Debian's chromium for the console's browser test, once, and prints its path as the last line of
# stdout. CHROMIUM_BIN, when set to an executable, short-circuits everything; a chromium already on PATH is used
# as it is. The browser is never downloaded by a tool of its own (no internet here but Debian's packages).
set -euo pipefail

log() { printf 'chromium.sh: %s\n' "$*" >&2; }

if [[ -n "${CHROMIUM_BIN:-}" ]]; then
	if [[ -x "${CHROMIUM_BIN}" ]]; then
		printf '%s\n' "${CHROMIUM_BIN}"
		exit 0
	fi
	log "CHROMIUM_BIN=${CHROMIUM_BIN} is not an executable file"
	exit 1
fi
for name in chromium chromium-browser; do
	if bin="$(command -v "${name}")"; then
		printf '%s\n' "${bin}"
		exit 0
	fi
done
sudo=""
if [[ "$(id -u)" != 0 ]]; then
	sudo="sudo"
fi
log "installing Debian's chromium (apt-get, once)"
${sudo} apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive ${sudo} apt-get install -y -qq --no-install-recommends chromium >&2
command -v chromium
