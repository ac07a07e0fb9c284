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
echo "cljassist installed: $(command -v cljassist)"
