"""A GGUF published as chunk distributions, assembled once into the model cache and verified.

PyPI limits a file's size, so a larger model is published as N distributions that each hold one
slice. The slices are found through `importlib.metadata` (never imported: they are data, and some
carry import-time code of another application), streamed in order into a temporary file beside
the target while every slice and the whole are hashed, and renamed into place only when all the
checksums pinned in the registry match. So the loader never sees a half-written or unverified file.

A verified file is recorded beside it (`<file>.json`: size, mtime, inode, sha256). Later starts
trust a file whose size, mtime and inode still match that record, because hashing a gigabyte on
every start would cost seconds; a file that changed since is hashed again, and rebuilt when it no
longer matches.

Every failure is one line naming the package to reinstall.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import importlib.metadata as md
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

from cljassist.errors import ModelLoadError, ModelNotFound
from cljassist.fileio import replacing, write_atomic
from cljassist.model.model_cache import default_cache_dir, locked, sha256_file
from cljassist.model.registry import ChunkedGguf, NamedModel, Part
from cljassist.progress import Progress

_READ_SIZE = 4 << 20  # large reads keep the copy disk-bound; small enough to redraw the bar often
_MIB = 1 << 20


@dataclass(frozen=True)
class InstalledPart:
    """What is installed for one part: the distribution's version (None: not installed) and the
    part's file (None: the distribution lacks it)."""

    version: str | None
    path: Path | None


PartLocator = Callable[[Part], InstalledPart]


def installed_part(part: Part) -> InstalledPart:
    """Find `part` through importlib.metadata, without importing its distribution."""
    try:
        dist = md.distribution(part.package)
    except md.PackageNotFoundError:
        return InstalledPart(None, None)
    for f in dist.files or ():
        if f.as_posix() == part.file:
            path = Path(str(dist.locate_file(f)))
            return InstalledPart(dist.version, path if path.is_file() else None)
    return InstalledPart(dist.version, None)


class CacheState(enum.Enum):
    VERIFIED = "assembled, verified"
    ABSENT = "not assembled yet"
    DAMAGED = "damaged (rebuilt on next use)"


def cached_path(source: ChunkedGguf, cache_dir: Path | None = None) -> Path:
    return (cache_dir if cache_dir is not None else default_cache_dir()) / source.file


def _record_path(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def _identity(st: os.stat_result) -> dict[str, int]:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _recorded_unchanged(out: Path, source: ChunkedGguf) -> bool:
    try:
        record = json.loads(_record_path(out).read_text(encoding="utf-8"))
        st = out.stat()
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("sha256") == source.sha256 and \
        all(record.get(k) == v for k, v in _identity(st).items())


def _record(out: Path, source: ChunkedGguf) -> None:
    write_atomic(_record_path(out), json.dumps({"sha256": source.sha256, **_identity(out.stat())}, indent=1) + "\n")


def _verify_cached(out: Path, source: ChunkedGguf, note: Callable[[str], None]) -> CacheState:
    """The cached file's state; a file changed since its record is hashed again (and re-recorded)."""
    if not out.is_file():
        return CacheState.ABSENT
    if _recorded_unchanged(out, source):
        return CacheState.VERIFIED
    if out.stat().st_size != source.size:
        return CacheState.DAMAGED
    note(f"checking {out.name} (changed since it was last verified)")
    if sha256_file(out) != source.sha256:
        return CacheState.DAMAGED
    _record(out, source)
    return CacheState.VERIFIED


def cache_state(model: NamedModel, cache_dir: Path | None = None) -> CacheState:
    """Whether `model`'s assembled file is there and verified (hashing it only if it changed)."""
    source = _chunked(model)
    out = cached_path(source, cache_dir)
    if not out.parent.is_dir():  # a listing creates nothing: no cache yet means not assembled yet
        return CacheState.ABSENT
    try:
        with locked(out.parent / ".build.lock"):
            return _verify_cached(out, source, lambda _msg: None)
    except OSError as exc:
        raise ModelLoadError(f"{model.name}: cannot check {out}: {exc.strerror or exc}") from None


def missing_part(model: NamedModel, locate: PartLocator = installed_part) -> str | None:
    """The one-line reason the first part that is not installed as pinned, or None when all are."""
    source = _chunked(model)
    for i, part in enumerate(source.parts, 1):
        problem = _part_problem(model.name, i, len(source.parts), part, locate(part))
        if problem:
            return problem
    return None


def _part_problem(name: str, index: int, count: int, part: Part, found: InstalledPart) -> str | None:
    which = f"{name}: part {index} of {count}"
    if found.version is None:
        return f"{which} is missing: pip install {part.requirement}"
    if found.version != part.version:
        return f"{which} is {part.package} {found.version}, not {part.version}: pip install {part.requirement}"
    if found.path is None:
        return f"{which} has no {part.file}: pip install --force-reinstall {part.requirement}"
    return None


def ensure_assembled(model: NamedModel, cache_dir: Path | None = None, locate: PartLocator = installed_part,
                     stream: TextIO | None = None) -> Path:
    """The verified assembled file of `model`, assembling it first when it is absent or damaged.

    Raises ModelNotFound (a part not installed as pinned) or ModelLoadError (a part whose bytes do
    not match, or the file cannot be written), each with one line naming what to reinstall.
    """
    source = _chunked(model)
    stream = stream if stream is not None else sys.stderr
    out = cached_path(source, cache_dir)

    def note(msg: str) -> None:
        print(f"cljassist: {model.name}: {msg}", file=stream, flush=True)

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with locked(out.parent / ".build.lock"):  # two processes starting together assemble once
            state = _verify_cached(out, source, note)
            if state is CacheState.VERIFIED:
                return out
            if state is CacheState.DAMAGED:
                note(f"{out} does not match its checksum; assembling it again")
                for stale in (out, _record_path(out)):
                    with contextlib.suppress(FileNotFoundError):
                        stale.unlink()
            files = []
            for i, part in enumerate(source.parts, 1):
                found = locate(part)
                problem = _part_problem(model.name, i, len(source.parts), part, found)
                if problem:
                    raise ModelNotFound(problem)
                files.append(found.path)
            note(f"assembling {source.size / 1e6:.0f} MB from {len(files)} installed packages into {out} (once)")
            _write_verified(model, source, files, out, Progress(-(-source.size // _MIB), unit="MiB", stream=stream))
            _record(out, source)
    except OSError as exc:  # a full disk, a cache directory we may not write, a part we may not read
        raise ModelLoadError(f"{model.name}: cannot assemble it into {out.parent}: {exc.strerror or exc}") from None
    return out


def _write_verified(model: NamedModel, source: ChunkedGguf, files: list[Path], out: Path, progress: Progress) -> None:
    """Stream `files` into a temporary file beside `out`; it replaces `out` only if every checksum matches."""
    whole = hashlib.sha256()
    written = 0
    try:
        with replacing(out) as tmp, open(tmp, "wb") as dst:
            for i, (part, path) in enumerate(zip(source.parts, files), 1):
                one = hashlib.sha256()
                with open(path, "rb") as src:
                    for block in iter(lambda: src.read(_READ_SIZE), b""):
                        one.update(block)
                        whole.update(block)
                        dst.write(block)
                        written += len(block)
                        if progress.tty:  # without a terminal the one note line said it all
                            progress.update(model.name, done=written // _MIB)
                if one.hexdigest() != part.sha256:
                    raise ModelLoadError(f"{model.name}: part {i} of {len(files)} ({path}) does not match its "
                                         f"checksum: pip install --force-reinstall {part.requirement}")
            if progress.tty:
                progress.update(model.name, done=progress.total)
            if whole.hexdigest() != source.sha256:  # only when the registry's part checksums disagree with it
                raise ModelLoadError(f"{model.name}: the assembled file's sha256 is {whole.hexdigest()}, "
                                     f"not the pinned {source.sha256}")
            dst.flush()
            os.fsync(dst.fileno())
    finally:
        progress.close()


def _chunked(model: NamedModel) -> ChunkedGguf:
    if not isinstance(model.source, ChunkedGguf):
        raise TypeError(f"{model.name} is not a chunked model")
    return model.source


__all__ = ["InstalledPart", "PartLocator", "installed_part", "CacheState", "cached_path", "cache_state",
           "missing_part", "ensure_assembled"]
