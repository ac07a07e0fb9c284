#!/usr/bin/env bash
# Installs npm's nbb (a ClojureScript nREPL server on Node, built on SCI) into
# ~/.cache/cljassist/nbb, so the proxy's tests can run against a non-JVM nREPL.
# Idempotent: an existing install of the pinned version is reused. Prints the path of the nbb
# executable on stdout (everything else goes to stderr), e.g.
#     NBB="$(scripts/install_nbb.sh)" && "$NBB" nrepl-server :port 1667
# Needs node and npm (Debian: apt-get install nodejs npm). NBB_VERSION overrides the pinned version.
set -euo pipefail

NBB_VERSION="${NBB_VERSION:-1.6.214}"
PREFIX="${CLJASSIST_NBB_PREFIX:-$HOME/.cache/cljassist/nbb}"
BIN="$PREFIX/node_modules/.bin/nbb"
PACKAGE_JSON="$PREFIX/node_modules/nbb/package.json"

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "install_nbb.sh: $tool not found; install it first (Debian: apt-get install nodejs npm)" >&2
    exit 1
  fi
done

installed_version() {
  [ -f "$PACKAGE_JSON" ] && node -e 'process.stdout.write(require(process.argv[1]).version)' "$PACKAGE_JSON" 2>/dev/null
}

if [ -x "$BIN" ] && [ "$(installed_version || true)" = "$NBB_VERSION" ]; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$PREFIX"
echo "installing nbb@$NBB_VERSION into $PREFIX" >&2
# --no-save: no package.json/lock churn in the cache dir; npm's own chatter goes to stderr.
npm install --prefix "$PREFIX" --no-save --no-audit --no-fund --loglevel=error "nbb@$NBB_VERSION" >&2

if [ ! -x "$BIN" ]; then
  echo "install_nbb.sh: npm finished but $BIN is missing" >&2
  exit 1
fi
echo "$BIN"
