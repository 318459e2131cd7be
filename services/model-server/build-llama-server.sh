#!/bin/sh
# Build llama.cpp's llama-server, the one CPU engine of the project (make install, the tests,
# the model-server image), and put it at DEST.
#
#   services/model-server/build-llama-server.sh DEST        e.g. .venv/bin/llama-server
#
# Sources: llama.cpp as vendored in the llama-cpp-python sdist on PyPI (both MIT), fetched by pip
# from the registry and checked against the sha256 below; nothing else is downloaded (the web
# UI's prebuilt assets are off). Only the llama-server target is compiled (5-10 min on 2 cores),
# for a portable x86-64/arm64 baseline (GGML_NATIVE=OFF: a binary tuned to the build machine
# dies of SIGILL on a VM that advertises AMX or AVX-512 without enabling it).
#
# The binary is cached under $SCAF_CACHE_DIR (default ~/.cache/scaffolding-nats), keyed by the
# sources' hash and the build flags, so a second install, or a fresh clone, never compiles
# again. `make clean-cache` removes it.
set -eu

DEST=${1:?usage: build-llama-server.sh DEST}
LLAMA_CPP_PYTHON=0.3.36
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
CMAKE_FLAGS="-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF \
 -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
 -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
 ${LLAMA_EXTRA_CMAKE_ARGS:-}"
JOBS=${LLAMA_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}
PIP=${PIP:-python3 -m pip}

CACHE=${SCAF_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/scaffolding-nats}
KEY=$(printf '%s %s %s' "$SDIST_SHA256" "$CMAKE_FLAGS" "$(uname -m)" | sha256sum | cut -c1-16)
CACHED="$CACHE/llama-server-$KEY/llama-server"

if [ ! -x "$CACHED" ]; then
    if ! command -v cmake >/dev/null 2>&1; then
        echo "llama-server: no cmake on PATH; installing PyPI's (the Makefile puts the venv first on PATH)" >&2
        $PIP install --quiet "cmake>=3.18" >&2
    fi
    command -v c++ >/dev/null 2>&1 || { echo "llama-server: a C++ compiler (c++) is needed to build it" >&2; exit 1; }
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/scaf-llama-build.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
    echo "llama-server: fetching llama.cpp's sources (llama-cpp-python $LLAMA_CPP_PYTHON sdist) ..." >&2
    $PIP download --quiet --no-deps --no-binary llama-cpp-python --dest "$WORK" \
        "llama-cpp-python==$LLAMA_CPP_PYTHON" >&2
    SDIST="$WORK/llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz"
    echo "$SDIST_SHA256  $SDIST" | sha256sum -c --quiet - >&2
    tar -xzf "$SDIST" -C "$WORK" "llama_cpp_python-$LLAMA_CPP_PYTHON/vendor/llama.cpp"
    SRC="$WORK/llama_cpp_python-$LLAMA_CPP_PYTHON/vendor/llama.cpp"
    echo "llama-server: compiling with $JOBS jobs (5-10 minutes on 2 cores, once) ..." >&2
    # shellcheck disable=SC2086  # CMAKE_FLAGS is a list of flags
    cmake -S "$SRC" -B "$WORK/build" $CMAKE_FLAGS >"$WORK/configure.log" 2>&1 \
        || { tail -40 "$WORK/configure.log" >&2; exit 1; }
    cmake --build "$WORK/build" --target llama-server -j "$JOBS" >"$WORK/build.log" 2>&1 \
        || { tail -60 "$WORK/build.log" >&2; exit 1; }
    mkdir -p "$(dirname "$CACHED")"
    cp "$WORK/build/bin/llama-server" "$CACHED.tmp"
    strip "$CACHED.tmp" 2>/dev/null || true
    mv "$CACHED.tmp" "$CACHED"  # atomic: a build cut short never leaves a half binary behind
fi

mkdir -p "$(dirname "$DEST")"
cp "$CACHED" "$DEST.tmp" && mv "$DEST.tmp" "$DEST"
"$DEST" --version >/dev/null 2>&1 || { echo "llama-server at $DEST does not run" >&2; exit 1; }
echo "llama-server: $DEST" >&2
