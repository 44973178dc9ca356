#!/usr/bin/env bash
# Builds one Lambda function the way it is deployed: scripts/build-lambda.sh FN OUT [GOOS GOARCH]
# (default linux/arm64 for provided.al2023 on Graviton). The Makefile's `lambdas` and the size and cold-start
# benchmarks both use it, so what is measured is what is deployed.
#
# Inlining stays on: the functions read Lambda's credentials from the environment rather than linking the SDK's
# whole default chain (deployment.LambdaAWSConfig), which keeps each binary under 10 MB (BENCHMARKS.md).
set -euo pipefail
fn="$1" out="$2" goos="${3:-linux}" goarch="${4:-arm64}"
cd "$(dirname "$0")/.."
GOOS="$goos" GOARCH="$goarch" CGO_ENABLED=0 go build -tags lambda.norpc -trimpath -ldflags='-s -w' \
	-o "$out" "./functions/$fn"
