"""The local model cache: files built once from installed parts ($XDG_CACHE_HOME/cljassist/models),
each next to a `.sha256` with its checksum, built under a lock so two processes build once."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/cljassist/models`` (default ``~/.cache/cljassist/models``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "cljassist" / "models"


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def recorded_sha(sum_path: Path) -> str | None:
    try:
        return sum_path.read_text(encoding="utf-8").split()[0].lower()
    except (OSError, IndexError):
        return None


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive advisory lock (two processes on first use build once); no-op without fcntl."""
    try:
        import fcntl  # noqa: PLC0415
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
