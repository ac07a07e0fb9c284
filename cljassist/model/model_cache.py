"""The local model cache: files built once from installed parts ($XDG_CACHE_HOME/cljassist/models),
each next to a `.sha256` with its checksum, built under a lock so two processes build once."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from pathlib import Path
from typing import Callable

from cljassist.fileio import write_atomic


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


def built_once(out: Path, build: Callable[[Path], None], announce: str) -> Path:
    """``out``, built by ``build(out)`` unless it is there and matches the checksum recorded beside
    it (``<out>.sha256``, re-hashed at every use, so a damaged file is rebuilt); ``announce`` is
    printed on stderr before a build. Under the cache's lock: two processes build once."""
    from cljassist.fileio import write_atomic  # noqa: PLC0415 - fileio imports nothing of the model layer

    out.parent.mkdir(parents=True, exist_ok=True)
    sum_path = out.with_name(out.name + ".sha256")
    with locked(out.parent / ".build.lock"):
        if out.is_file() and recorded_sha(sum_path) == sha256_file(out):
            return out
        print(f"cljassist: {announce} (once; cached in {out.parent})", file=sys.stderr)
        build(out)
        write_atomic(sum_path, f"{sha256_file(out)}  {out.name}\n")
    return out
