# Sourced by the install scripts: the cache folder that package local/cachedir names, outside any checkout, so a
# fresh clone on the same machine (CI's) reuses the slow builds: $OLLAMA_ECS_CACHE, else ollama-ecs under
# $XDG_CACHE_HOME or ~/.cache.
ollama_ecs_cache_dir() {
	if [[ -n "${OLLAMA_ECS_CACHE:-}" ]]; then
		realpath -m "${OLLAMA_ECS_CACHE}"
	else
		printf '%s\n' "${XDG_CACHE_HOME:-${HOME}/.cache}/ollama-ecs"
	fi
}
