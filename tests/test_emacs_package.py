"""The Emacs package byte-compiles without warnings and passes its ERT tests (editors/emacs/check.sh)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "editors" / "emacs" / "check.sh"


@pytest.mark.skipif(shutil.which("emacs") is None, reason="emacs is not on PATH (apt-get install emacs-nox)")
def test_emacs_package_compiles_and_passes_ert():
    result = subprocess.run(
        ["bash", str(CHECK)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{CHECK.relative_to(ROOT)} failed:\n{output[-6000:]}"
    assert "0 unexpected" in output
