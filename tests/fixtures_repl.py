"""Fixtures that start the real Debian nREPL.

``nrepl_server`` is one JVM for the whole test session (it takes several seconds
to start) over a temporary project, with ``fixtures/demo/src`` also on its
classpath; ``nrepl_client`` is a fresh connection per test.  Tests are skipped
only when java or the Debian jars are absent, with the reason saying what to install.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cljassist.errors import ReplUnavailable
from cljassist.repl.client import NreplClient
from cljassist.repl.local_server import (
    APT_HINT,
    DEFAULT_JVM_OPTS,
    base_classpath,
    start_local_nrepl,
)

# Small heaps, 2-core CI: the serial collector starts fastest.
TEST_JVM_OPTS = (*DEFAULT_JVM_OPTS, "-XX:+UseSerialGC")
# The demo project's namespaces (demo.core, ...) are loadable from the shared server.
DEMO_SRC = Path(__file__).resolve().parents[1] / "fixtures" / "demo" / "src"


def nrepl_missing_reason() -> str | None:
    """Why the real nREPL cannot run here, or None if it can."""
    if shutil.which("java") is None:
        return f"java not found; {APT_HINT}"
    try:
        base_classpath()
    except ReplUnavailable as e:
        return str(e)
    return None


@pytest.fixture(scope="session")
def nrepl_server(tmp_path_factory):
    reason = nrepl_missing_reason()
    if reason:
        pytest.skip(f"real nREPL unavailable: {reason}")
    project = tmp_path_factory.mktemp("nrepl-project")
    (project / "src").mkdir()
    extra = [str(DEMO_SRC)] if DEMO_SRC.is_dir() else []
    server = start_local_nrepl(project, extra, timeout=120, jvm_opts=TEST_JVM_OPTS)
    yield server
    server.stop()


@pytest.fixture
def nrepl_client(nrepl_server):
    client = NreplClient.connect(nrepl_server.host, nrepl_server.port)
    yield client
    client.close()
