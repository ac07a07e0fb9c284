from __future__ import annotations

import pytest

from cljassist.errors import InputError
from cljassist.repl.discovery import find_port_file, parse_endpoint, resolve_endpoint


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "proj"
    (root / "src" / "my" / "app").mkdir(parents=True)
    source = root / "src" / "my" / "app" / "core.clj"
    source.write_text("(ns my.app.core)\n")
    return root, source


def test_find_port_file_from_file_and_directory(project):
    root, source = project
    (root / ".nrepl-port").write_text("7888")
    assert find_port_file(source) == root / ".nrepl-port"
    assert find_port_file(source.parent) == root / ".nrepl-port"
    assert find_port_file(root) == root / ".nrepl-port"


def test_find_port_file_nearest_wins(project):
    root, source = project
    (root / ".nrepl-port").write_text("7888")
    (root / "src" / ".nrepl-port").write_text("9999")
    assert find_port_file(source) == root / "src" / ".nrepl-port"


def test_find_port_file_none(project):
    root, source = project
    found = find_port_file(source)
    # Nothing inside the project; a stray file above the temp dir is not ours to judge.
    assert found is None or root not in found.parents


def test_find_port_file_ignores_directory_named_like_it(project):
    root, source = project
    (root / "src" / ".nrepl-port").mkdir()
    (root / ".nrepl-port").write_text("7888")
    assert find_port_file(source) == root / ".nrepl-port"


def test_find_port_file_for_not_yet_saved_file(project):
    root, _ = project
    (root / ".nrepl-port").write_text("7888")
    assert find_port_file(root / "src" / "new_file.clj") == root / ".nrepl-port"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("7888", ("127.0.0.1", 7888)),
        ("7888\n", ("127.0.0.1", 7888)),
        ("localhost:7888", ("localhost", 7888)),
        ("10.0.0.5:1", ("10.0.0.5", 1)),
        ("[::1]:65535", ("::1", 65535)),
        ("nrepl://localhost:38595", ("localhost", 38595)),
    ],
)
def test_parse_endpoint(text, expected):
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize(
    "text", ["", "abc", "host:", ":7888", "host:port", "0", "65536", "-1", "a:b:1", "[::1]7888"]
)
def test_parse_endpoint_rejects(text):
    with pytest.raises(ValueError, match="invalid nREPL endpoint"):
        parse_endpoint(text)


def test_resolve_explicit_wins(project):
    root, source = project
    (root / ".nrepl-port").write_text("7888")
    assert resolve_endpoint("example:1234", source) == ("example", 1234)


def test_resolve_from_port_file(project):
    root, source = project
    (root / ".nrepl-port").write_text("40123")
    assert resolve_endpoint(None, source) == ("127.0.0.1", 40123)


def test_resolve_nothing(tmp_path):
    assert resolve_endpoint(None, None) is None
    isolated = tmp_path / "x.clj"
    if find_port_file(isolated) is None:  # no stray .nrepl-port above the tmp dir
        assert resolve_endpoint(None, isolated) is None


def test_resolve_bad_values_name_their_source(project):
    root, source = project
    with pytest.raises(InputError, match="invalid nREPL endpoint 'nope'"):
        resolve_endpoint("nope", source)
    (root / ".nrepl-port").write_text("garbage")
    with pytest.raises(InputError, match=r"\.nrepl-port"):
        resolve_endpoint(None, source)
