# Entry point of the non-essential `fetch` init container (aws-cli image, run
# by /bin/sh -c). It copies an uploaded GGUF to the volume shared with the
# `ollama` container, which starts only after this exits 0. For an ollama://
# source there is nothing to fetch, so it exits 0 at once.
set -eu
SOURCE_DIR="${OLLAMA_ECS_SOURCE_DIR:-/models-source}"
case "${OLLAMA_ECS_SOURCE:-}" in
s3://*) ;;
*) exit 0 ;;
esac
exec aws s3 cp --only-show-errors "$OLLAMA_ECS_SOURCE" "$SOURCE_DIR/model.gguf"
