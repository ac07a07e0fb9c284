#!/usr/bin/env bash
# Byte-compile cljassist.el (any warning fails) and run its ERT tests, in batch,
# against test/cider-stub.el instead of CIDER.  Works from any directory.
# The sources are copied to a temporary directory so no .elc is left behind.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
EMACS="${EMACS:-emacs}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/test"
cp "$here/cljassist.el" "$work/"
cp "$here/test/cider-stub.el" "$here/test/cljassist-test.el" "$work/test/"

echo "== byte-compile cljassist.el ($("$EMACS" --version | head -n 1))"
"$EMACS" --batch -Q -L "$work/test" -L "$work" -l cider-stub \
  --eval '(setq byte-compile-error-on-warn t)' \
  -f batch-byte-compile "$work/cljassist.el"
test -f "$work/cljassist.elc"

echo "== ERT tests (compiled package)"
"$EMACS" --batch -Q -L "$work/test" -L "$work" -l ert -l cider-stub \
  --eval '(setq load-prefer-newer t)' \
  -l cljassist -l cljassist-test \
  --eval '(cl-assert (string-suffix-p ".elc" (symbol-file (quote cljassist-complete))))' \
  -f ert-run-tests-batch-and-exit
