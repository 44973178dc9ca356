#!/usr/bin/env bash
# Builds the real Ollama server for local mode, once, into
# ollama/v<version>/ollama in the user's cache folder (scripts/cachedir.sh), and prints its path
# as the last line of stdout.
#
# Why build from source: local mode runs real `ollama serve` processes, and the
# only way to get Ollama on these machines is the Go module proxy. The module
# zip lacks llama.cpp's vendored headers, so this script supplies them: Debian's
# nlohmann-json3-dev and libstb-dev, plus a stub miniaudio.h (miniaudio is used
# only to decode audio input, which local mode never sends).
#
# Idempotent: a cached binary is reused (a second run takes ~0 s). The build
# writes to a temporary folder and renames into place, so an interrupted build
# never leaves a broken binary behind. OLLAMA_BIN, when set to an executable,
# short-circuits everything.
#
# OLLAMA_CPU_FLAGS (for example "-mavx2 -mfma -mf16c") builds a second binary with those C flags, into
# ollama/v<version>-<hash of the flags>/. `go install` compiles ggml's CPU code without any -m flag, so the default
# build has no AVX and its CPU speed is far below the official release's, which loads a CPU variant per machine;
# the speed calibration (make bench-speed) uses the AVX2 build to stand for it.
set -euo pipefail

readonly OLLAMA_VERSION="${OLLAMA_VERSION:-0.17.4}"
readonly MODULE="github.com/ollama/ollama"

log() { printf 'ollama.sh: %s\n' "$*" >&2; }

if [[ -n "${OLLAMA_BIN:-}" ]]; then
	if [[ -x "${OLLAMA_BIN}" ]]; then
		printf '%s\n' "${OLLAMA_BIN}"
		exit 0
	fi
	log "OLLAMA_BIN=${OLLAMA_BIN} is not an executable file"
	exit 1
fi

# shellcheck source=cachedir.sh
source "$(dirname "${BASH_SOURCE[0]}")/cachedir.sh"
cache_dir="$(ollama_ecs_cache_dir)/ollama"
out_dir="${cache_dir}/v${OLLAMA_VERSION}"
if [[ -n "${OLLAMA_CPU_FLAGS:-}" ]]; then
	out_dir="${out_dir}-$(printf '%s' "${OLLAMA_CPU_FLAGS}" | sha256sum | cut -c1-12)"
fi
bin="${out_dir}/ollama"

if [[ -x "${bin}" ]]; then
	printf '%s\n' "${bin}"
	exit 0
fi

# Headers that llama.cpp expects under its (missing) vendor folder.
need_pkgs=()
[[ -f /usr/include/nlohmann/json.hpp ]] || need_pkgs+=(nlohmann-json3-dev)
[[ -f /usr/include/stb/stb_image.h ]] || need_pkgs+=(libstb-dev)
if ((${#need_pkgs[@]} > 0)); then
	if ! command -v apt-get >/dev/null 2>&1; then
		log "missing headers (${need_pkgs[*]}) and no apt-get to install them"
		exit 1
	fi
	sudo_cmd=()
	if [[ "$(id -u)" != 0 ]]; then
		sudo_cmd=(sudo)
	fi
	log "installing ${need_pkgs[*]}"
	"${sudo_cmd[@]}" apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need_pkgs[@]}" >&2
fi
for tool in go cc c++; do
	if ! command -v "${tool}" >/dev/null 2>&1; then
		log "missing ${tool}: a CGO build needs Go and a C/C++ compiler"
		exit 1
	fi
done

# Stub for miniaudio: mtmd-helper.cpp decodes audio input with it. Local mode
# never sends audio, so every call reports failure and audio input is refused.
# It lives at a path that does not depend on the checkout: the -I flag is part
# of the Go build cache key, so a fresh clone elsewhere (as CI uses) reuses the
# compiled llama.cpp instead of spending minutes rebuilding it.
stub_dir="${OLLAMA_STUB_DIR:-$(ollama_ecs_cache_dir)/ollama-stub/include}"
stub="${stub_dir}/miniaudio/miniaudio.h"
mkdir -p "${stub_dir}/miniaudio"
stub_tmp="$(mktemp "${stub}.XXXXXX")"
cat >"${stub_tmp}" <<'EOF'
/* Stub of miniaudio for building Ollama without audio input support. */
#ifndef OLLAMA_ECS_MINIAUDIO_STUB_H
#define OLLAMA_ECS_MINIAUDIO_STUB_H
#include <stddef.h>
#include <stdint.h>
typedef int ma_result;
typedef uint32_t ma_uint32;
typedef uint64_t ma_uint64;
typedef enum { ma_format_unknown = 0, ma_format_f32 = 5 } ma_format;
typedef enum { ma_encoding_format_unknown = 0, ma_encoding_format_wav } ma_encoding_format;
#define MA_SUCCESS 0
#define MA_NOT_IMPLEMENTED (-29)
typedef struct { ma_format format; ma_uint32 channels; ma_uint32 sampleRate; } ma_decoder_config;
typedef struct { int unused; } ma_decoder;
typedef struct { int unused; } ma_encoder_config;
typedef struct { int unused; } ma_encoder;
static inline ma_decoder_config ma_decoder_config_init(ma_format f, ma_uint32 c, ma_uint32 r) {
	ma_decoder_config cfg; cfg.format = f; cfg.channels = c; cfg.sampleRate = r; return cfg;
}
static inline ma_result ma_decoder_init_memory(const void *d, size_t n, const ma_decoder_config *c, ma_decoder *dec) {
	(void)d; (void)n; (void)c; (void)dec; return MA_NOT_IMPLEMENTED;
}
static inline ma_result ma_decoder_get_length_in_pcm_frames(ma_decoder *dec, ma_uint64 *n) {
	(void)dec; if (n) *n = 0; return MA_NOT_IMPLEMENTED;
}
static inline ma_result ma_decoder_read_pcm_frames(ma_decoder *dec, void *out, ma_uint64 n, ma_uint64 *read) {
	(void)dec; (void)out; (void)n; if (read) *read = 0; return MA_NOT_IMPLEMENTED;
}
static inline ma_result ma_decoder_uninit(ma_decoder *dec) { (void)dec; return MA_SUCCESS; }
#endif
EOF
mv -f "${stub_tmp}" "${stub}"

mkdir -p "${out_dir}"
work="$(mktemp -d "${cache_dir}/build.XXXXXX")"
trap 'rm -rf "${work}"' EXIT

log "building ${MODULE}@v${OLLAMA_VERSION} (CGO, takes several minutes on a cold cache)"
start=${SECONDS}
# `go install pkg@version` builds with Ollama's own go.mod (no interference
# from this repository's module) into a private GOBIN.
(
	cd "${work}"
	export GOBIN="${work}/bin"
	export CGO_ENABLED=1
	export GOFLAGS="${GOFLAGS:+${GOFLAGS} }-buildvcs=false"
	export CGO_CPPFLAGS="${CGO_CPPFLAGS:+${CGO_CPPFLAGS} }-I${stub_dir}"
	if [[ -n "${OLLAMA_CPU_FLAGS:-}" ]]; then
		export CGO_CFLAGS="${CGO_CFLAGS:--O2 -g} ${OLLAMA_CPU_FLAGS}"
		export CGO_CXXFLAGS="${CGO_CXXFLAGS:--O2 -g} ${OLLAMA_CPU_FLAGS}"
	fi
	go install -trimpath \
		-ldflags "-X ${MODULE}/version.Version=${OLLAMA_VERSION}" \
		"${MODULE}@v${OLLAMA_VERSION}"
) >&2
# Same filesystem as the target, so the final mv is an atomic rename.
if ! "${work}/bin/ollama" --help >/dev/null; then
	log "built binary does not run"
	exit 1
fi
mv -f "${work}/bin/ollama" "${bin}"
log "built in $((SECONDS - start)) s"
printf '%s\n' "${bin}"
