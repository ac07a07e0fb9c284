# Shared fixtures live in their own modules, one per real component they start.
pytest_plugins = ["tests.fixtures_repl", "tests.fixtures_model"]

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _statistics_outside_the_home(tmp_path_factory):
    """A `cljassist serve` a test starts records statistics by default: into a directory of the
    test session's, never into the user's own ~/.local/state."""
    previous = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state"))
    yield
    if previous is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = previous
