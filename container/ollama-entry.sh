# Entry point of the `ollama` container (run by /bin/sh -c; POSIX sh, no curl:
# the ollama image ships neither curl nor wget, so the ollama CLI itself is the
# HTTP client). RunTask overrides set OLLAMA_ECS_MODEL, OLLAMA_ECS_SOURCE and
# OLLAMA_CONTEXT_LENGTH; the task definition sets OLLAMA_KEEP_ALIVE=-1 so the
# loaded model stays in memory until the task stops.
set -eu
: "${OLLAMA_ECS_MODEL:?OLLAMA_ECS_MODEL must be set by the RunTask override}"
: "${OLLAMA_ECS_SOURCE:?OLLAMA_ECS_SOURCE must be set by the RunTask override}"
SOURCE_DIR="${OLLAMA_ECS_SOURCE_DIR:-/models-source}"

ollama serve &
server=$!
# ECS stops a task with SIGTERM: pass it on so ollama exits cleanly.
trap 'kill -TERM "$server" 2>/dev/null' TERM INT

# fail stops the server before exiting, so nothing outlives the failure and the exit status is ours.
fail() {
	echo "$*" >&2
	kill -TERM "$server" 2>/dev/null || true
	wait "$server" 2>/dev/null || true
	exit 1
}

tries=0
until ollama list >/dev/null 2>&1; do
	kill -0 "$server" 2>/dev/null || fail "ollama serve exited before answering"
	tries=$((tries + 1))
	[ "$tries" -le 600 ] || fail "ollama serve did not answer within 120s"
	# The server answers within a second: poll every 0.2 s (the image's coreutils sleep takes fractions).
	sleep 0.2
done

case "$OLLAMA_ECS_SOURCE" in
s3://*)
	# The fetch init container copied the object here before this container started.
	gguf="$SOURCE_DIR/model.gguf"
	[ -s "$gguf" ] || fail "missing $gguf (fetch container did not copy $OLLAMA_ECS_SOURCE)"
	printf 'FROM %s\n' "$gguf" >"$SOURCE_DIR/Modelfile"
	ollama create "$OLLAMA_ECS_MODEL" -f "$SOURCE_DIR/Modelfile" || fail "ollama create $OLLAMA_ECS_MODEL failed"
	;;
ollama://*)
	name="${OLLAMA_ECS_SOURCE#ollama://}"
	# Already present (baked into a model image, or in the EC2 host cache
	# from an earlier task): start without touching the registry.
	if ! ollama show "$name" >/dev/null 2>&1; then
		insecure=""
		case "$name" in
		# Only a registry on the machine itself (the local stack's) is spoken to over plain HTTP.
		127.0.0.1:* | localhost:*) insecure="--insecure" ;;
		esac
		ollama pull $insecure "$name" || fail "ollama pull $name failed"
	fi
	if [ "$name" != "$OLLAMA_ECS_MODEL" ]; then
		ollama cp "$name" "$OLLAMA_ECS_MODEL" || fail "ollama cp $name $OLLAMA_ECS_MODEL failed"
	fi
	;;
*)
	fail "unsupported OLLAMA_ECS_SOURCE $OLLAMA_ECS_SOURCE (want ollama://name or s3://bucket/key)"
	;;
esac

# An empty prompt only loads the model; a negative keep-alive pins it. An
# embedding model cannot generate (and `ollama run` refuses it an empty
# prompt): it is loaded by embedding a word.
prompt=""
if ollama show "$OLLAMA_ECS_MODEL" 2>/dev/null | grep -Eq '^[[:space:]]+embedding[[:space:]]*$'; then
	prompt="load"
fi
ollama run --keepalive=-1s "$OLLAMA_ECS_MODEL" "$prompt" </dev/null >/dev/null || fail "loading $OLLAMA_ECS_MODEL failed"
echo "model $OLLAMA_ECS_MODEL loaded"

# A trapped signal interrupts `wait` (status > 128): wait again so the
# container exits with the server's own status.
status=0
wait "$server" || status=$?
if [ "$status" -gt 128 ]; then
	status=0
	wait "$server" || status=$?
fi
exit "$status"
