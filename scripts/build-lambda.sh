#!/usr/bin/env bash
# Builds one Lambda function the way it is deployed: scripts/build-lambda.sh FN OUT [GOOS GOARCH]
# (default linux/arm64 for provided.al2023 on Graviton). The Makefile's `lambdas` and the size and cold-start
# benchmarks both use it, so what is measured is what is deployed.
#
# Inlining is off (-l): every function links all the SDK clients functions/steps uses, and without inlining each
# binary stays under 10 MB; these handlers wait on I/O, and cold start measured the same either way (BENCHMARKS.md).
set -euo pipefail
fn="$1" out="$2" goos="${3:-linux}" goarch="${4:-arm64}"
cd "$(dirname "$0")/.."
GOOS="$goos" GOARCH="$goarch" CGO_ENABLED=0 go build -tags lambda.norpc -trimpath -ldflags='-s -w' -gcflags=all=-l \
	-o "$out" "./functions/$fn"
