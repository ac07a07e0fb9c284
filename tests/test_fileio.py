"""cljassist.fileio: atomic writes leave the old content or the new, with the permissions asked for."""

from __future__ import annotations

import os
import stat

import pytest

from cljassist.errors import InputError
from cljassist.fileio import TEMP_SUFFIX, read_source_file, replacing, write_atomic


def test_write_atomic_replaces_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "port"
    path.write_text("old")
    assert write_atomic(path, "new") is True
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["port"]


def test_write_atomic_private_mode_whatever_the_umask(tmp_path):
    previous = os.umask(0)
    try:
        write_atomic(tmp_path / "secret", "token", mode=0o600)
        write_atomic(tmp_path / "plain", b"bytes")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o666  # what the umask gives a new file


def test_write_atomic_exclusive_never_overwrites(tmp_path):
    path = tmp_path / "claim"
    assert write_atomic(path, "first", exclusive=True) is True
    assert write_atomic(path, "second", exclusive=True) is False
    assert path.read_text() == "first" and os.listdir(tmp_path) == ["claim"]


def test_replacing_replaces_on_success_and_cleans_up_on_failure(tmp_path):
    out = tmp_path / "model.gguf"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with replacing(out) as tmp:
            assert tmp.name.startswith(".model.gguf.") and tmp.name.endswith(TEMP_SUFFIX) and not tmp.exists()
            tmp.write_bytes(b"half")
            raise RuntimeError("the build failed")
    assert out.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.gguf"]
    with replacing(out) as tmp:
        tmp.write_bytes(b"new")
    assert out.read_bytes() == b"new" and os.listdir(tmp_path) == ["model.gguf"]


def test_read_source_file_says_why_it_cannot(tmp_path):
    (tmp_path / "bad.clj").write_bytes(b"\xff(ns x)")
    with pytest.raises(InputError, match="no such file"):
        read_source_file(tmp_path / "nope.clj")
    with pytest.raises(InputError, match="not UTF-8"):
        read_source_file(tmp_path / "bad.clj")
    with pytest.raises(InputError, match="is a directory"):
        read_source_file(tmp_path)
