"""The Emacs package against a real nREPL server: editors/emacs/test/cljassist-live-test.el run in
emacs-nox, its CIDER calls sent over a real connection (test/nrepl-live.el), and what the answerer's
statistics recorded checked against what the package did. Shared by the tests of the two answerers
of the package's ops, the nREPL middleware (with the daemon) and the proxy."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

EMACS_DIR = Path(__file__).resolve().parents[1] / "editors" / "emacs"

needs_emacs = pytest.mark.skipif(shutil.which("emacs") is None,
                                 reason="emacs is not on PATH (apt-get install emacs-nox)")


def run_live_emacs_test(host: str, port: int) -> str:
    """Run the live ERT test against the nREPL server at host:port; its output. Fails the calling
    test unless the ERT test ran (not skipped) and passed."""
    run = subprocess.run(
        ["emacs", "--batch", "-Q", "-L", str(EMACS_DIR / "test"), "-L", str(EMACS_DIR), "-l", "ert",
         "-l", "cljassist-live-test", "-f", "ert-run-tests-batch-and-exit"],
        env={**os.environ, "CLJASSIST_TEST_NREPL": f"{host}:{port}"},
        capture_output=True, text=True, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 0 and "1 results as expected" in output and "skipped" not in output, output[-6000:]
    return output


def assert_kept_as_emacs_reported(events: list[dict]) -> None:
    """The statistics events of one live run: the suggestion shown as you type, the first of the
    reply to M-n's request for more (the first of every reply counts as shown), the accepts of the
    one shown first (its first character perhaps typed through instead), and one retained report
    of all that was accepted."""
    shown = [e for e in events if e["event"] == "shown"]
    assert len(shown) == 2, events
    sid = shown[0]["sid"]
    accepted = [e for e in events if e["event"] == "accepted"]
    retained = [e for e in events if e["event"] == "retained"]
    assert accepted and {e["sid"] for e in accepted} == {sid}, events
    assert {e["kind"] for e in accepted} <= {"word", "whole"}
    typed = shown[0]["chars"] - sum(e["chars"] for e in accepted)
    assert typed in (0, 1), events
    assert [(e["sid"], e["chars"]) for e in retained] == [(sid, sum(e["chars"] for e in accepted))], events
