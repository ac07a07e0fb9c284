#!/usr/bin/env bash
# Newcomer demo on the embedded defaults: a local nREPL on fixtures/demo and the bundled model.
set -euo pipefail
cd "$(dirname "$0")/.."
demo=fixtures/demo
cljassist nrepl "$demo" > /tmp/cljassist-demo-nrepl.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 120); do [ -s "$demo/.nrepl-port" ] && break; sleep 0.5; done
[ -s "$demo/.nrepl-port" ] || { echo "nREPL did not start; see /tmp/cljassist-demo-nrepl.log" >&2; exit 1; }
echo ";; nREPL on port $(cat "$demo/.nrepl-port"); completing the <CURSOR> in $demo/src/demo/todo.clj"
grep -n "<CURSOR>" "$demo/src/demo/todo.clj"
cljassist complete --load-ns "$demo/src/demo/todo.clj"
