#!/usr/bin/env bash
# Check the extension's JavaScript against VS Code's published API types (@types/vscode for the
# oldest VS Code it declares, package.json's engines.vscode) with TypeScript's checker, as the
# JSDoc types allow. Needs npm's registry (the tools go to a temporary directory); the tests
# (node --test) need nothing of this.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
engine="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["engines"]["vscode"].lstrip("^~>="))' "$here/package.json")"
tools="$(mktemp -d)"
trap 'rm -rf "$tools"' EXIT
(cd "$tools" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund \
   typescript@5.6 "@types/vscode@$engine" @types/node@20)
"$tools/node_modules/.bin/tsc" --noEmit --allowJs --checkJs --strict --target es2022 --module commonjs \
  --moduleResolution node --typeRoots "$tools/node_modules/@types" --types node,vscode "$here"/src/*.js
echo "typecheck: src/*.js agree with @types/vscode@$engine"
