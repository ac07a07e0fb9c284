"""Reading source files and writing files atomically.

Every file cljassist writes that someone else may read at any moment (port files, checksums,
manifests, built models, the user's own source) is written next to its target under a temporary
name and then renamed over it, so a reader sees the old content or the new, never half.

* `read_source_file`: a Clojure source (or a config) as text, with the reason in an InputError when
  it cannot be: only a regular file is read, at most SOURCE_FILE's bytes, UTF-8 without NUL bytes.
  `read_source_bytes` and `source_text` are its two halves, for the watcher, which looks between them.
* `write_temp_beside`: the one primitive: content in a fresh temporary file in the target's
  directory (permissions and owner as asked, fsynced). The writers below build on it.
* `write_atomic`: replace (or, `exclusive`, create only if absent) a file with new content.
* `replacing`: for content produced by someone else (a library writing to a path): a temporary
  path that replaces the target when the block succeeds and is removed when it fails.
* `write_if_unchanged`: compare-and-swap for a file the user edits: replace it only if it still
  holds the bytes we read, and swap an edit that lands in between back in (see its docstring).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import stat
import sys
from enum import Enum
from pathlib import Path
from typing import Callable, Iterator

from cljassist.budgets import SOURCE_FILE
from cljassist.errors import InputError

__all__ = ["TEMP_SUFFIX", "MAX_SOURCE_BYTES", "NotSource", "read_source_bytes", "source_text", "read_source_file", "write_temp_beside", "write_atomic", "replacing",
           "WriteResult", "write_if_unchanged", "resolved_outside"]

MAX_SOURCE_BYTES = SOURCE_FILE.value
# Temporary files are hidden and end like this, so watchers (ours included) and editors skip them.
TEMP_SUFFIX = ".cljassist-tmp"


class NotSource(InputError):
    """A file that is not read as source text; `reason` says why, without the path."""

    def __init__(self, path, reason: str, version: tuple = ()) -> None:
        super().__init__(f"{path}: {reason}")
        self.reason = reason
        self.version = version  # what identifies this state of the file (to say the reason once per state)
        self.regular = True  # False: a directory, FIFO, socket or device


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "is a directory, not a Clojure file"
    if stat.S_ISFIFO(mode):
        return "is a FIFO, not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a regular file"
    return "not a regular file"


def read_source_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a regular file of at most SOURCE_FILE's size. Opened without blocking (a FIFO
    would wait for a writer forever) and checked on the open file, so what is read is what was
    checked; read bounded, so a file growing meanwhile is still refused. NotSource says why not;
    FileNotFoundError and other OSErrors pass through."""
    limit = SOURCE_FILE.shown()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            refused = NotSource(path, _kind(info.st_mode))
            refused.regular = False
            raise refused
        if info.st_size > MAX_SOURCE_BYTES:
            raise NotSource(path, f"larger than {limit} ({info.st_size} bytes)", (info.st_size, info.st_mtime_ns))
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_SOURCE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_SOURCE_BYTES:
        raise NotSource(path, f"larger than {limit}", (len(data), info.st_mtime_ns))
    return data


def source_text(data: bytes, path: str | os.PathLike[str]) -> str:
    """`data` as text: UTF-8 without NUL bytes (a NUL is never in source, always in binary files).
    NotSource says why not."""
    if b"\0" in data:
        raise NotSource(path, "binary (holds NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotSource(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_source_file(path: str | os.PathLike[str]) -> str:
    """A source file (Clojure, or a config) as text: a regular file, bounded, UTF-8, no NUL bytes;
    an InputError with the reason otherwise."""
    try:
        return source_text(read_source_bytes(path), path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except NotADirectoryError:
        raise InputError(f"{path}: no such file (a parent is not a directory)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None


def resolved_outside(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> str | None:
    """Where `path` really leads (symlinks resolved) when that is outside `root`; None when inside."""
    target = os.path.realpath(path)
    resolved_root = os.path.realpath(root)
    return None if os.path.commonpath([resolved_root, target]) == resolved_root else target


def _temp_name(target: str) -> str:
    return os.path.join(os.path.dirname(target),
                        f".{os.path.basename(target)}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def write_temp_beside(target: str | os.PathLike[str], content: bytes, mode: int | None = None,
                      owner: tuple[int, int] | None = None) -> str:
    """A new temporary file in `target`'s directory holding `content`, fsynced; its path.
    `mode`: its permissions from creation on, whatever the umask (default: what the umask gives a
    new file). `owner` (uid, gid): given to it where allowed."""
    target = os.fspath(target)
    while True:
        tmp = _temp_name(target)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else 0o600)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            if owner is not None and owner != (os.geteuid(), os.getegid()):
                with contextlib.suppress(OSError):
                    os.fchown(f.fileno(), *owner)
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def write_atomic(path: str | os.PathLike[str], content: str | bytes, mode: int | None = None,
                 exclusive: bool = False) -> bool:
    """Write `content` (text as UTF-8) to `path` atomically. `mode`: its permissions from the
    start (say 0o600 for a secret). `exclusive`: only if `path` does not exist yet (False when it
    does, and nothing is written). True when written."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    tmp = write_temp_beside(path, data, mode)
    try:
        if not exclusive:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # atomic create-if-absent, with the content already in place
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside `path` (not created yet) for the block to write; it replaces `path`
    when the block ends without an exception, and is removed otherwise."""
    tmp = Path(_temp_name(os.fspath(path)))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# ------------------------------------------------------------------------------------------------
# Compare-and-swap for a file the user edits


class WriteResult(Enum):
    WRITTEN = "written"
    CHANGED = "changed"  # the file no longer held the bytes we read: nothing written
    OUTSIDE = "outside"  # the path resolves outside the directory it must stay in: nothing written


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_exchange_unsupported = False  # set once the filesystem or platform refused RENAME_EXCHANGE


def _renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2  # Linux, glibc >= 2.28
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _renameat2() if sys.platform.startswith("linux") else None


def _exchange(a: str, b: str) -> bool:
    """Swap the files named `a` and `b` atomically. False when the platform or filesystem cannot;
    OSError (ENOENT when one is gone) otherwise."""
    global _exchange_unsupported
    if _RENAMEAT2 is None or _exchange_unsupported:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM):
        _exchange_unsupported = True
        return False
    raise OSError(code, os.strerror(code), b)


def _holds(path: str, expected: bytes) -> bool:
    """Whether `path` holds exactly `expected` (reads one byte more than that, at most)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(expected) + 1) == expected
    except OSError:
        return False


def _fsync_dir(directory: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_if_unchanged(path: Path, expected: bytes, content: bytes, warn: Callable[[str], None] = lambda m: None,
                       within: Path | None = None) -> WriteResult:
    """Replace `path`'s bytes `expected` by `content`, atomically, or write nothing.

    The new content goes to a temporary file in the same directory (the file's permissions and,
    where allowed, owner; fsynced). Then, as late as possible, the file is read again and must still
    hold `expected`; then the temporary file takes its place. On Linux the two are *swapped*
    (renameat2 RENAME_EXCHANGE), so the file that was displaced can be checked afterwards: if an
    editor slipped a save in between the check and the swap (in place or by rename), it is swapped
    back and nothing of it is lost. Elsewhere `os.replace` is used after the check.

    What remains: with the swap, an editor that opened the file before the swap and writes into it
    afterwards without truncating, or that read our new content during the microseconds before a
    swap-back; with `os.replace`, a save landing between the final read and the rename
    (microseconds). A swap-back that finds something unexpected keeps that file under the temporary
    name and says so (`warn`), rather than delete anything. Hard links to the file are not kept
    (it is a new inode); a symlink is followed and its target written, but only where it stays
    inside `within` (when given): one leading out of it writes nothing (OUTSIDE).
    """
    if within is not None and resolved_outside(path, within) is not None:
        return WriteResult.OUTSIDE
    target = os.path.realpath(path)
    try:
        original = os.stat(target)
    except FileNotFoundError:
        return WriteResult.CHANGED
    tmp = write_temp_beside(target, content, stat.S_IMODE(original.st_mode), (original.st_uid, original.st_gid))
    keep_tmp = False
    try:
        # ---- the critical section: nothing slow between the final check and the swap/rename ----
        if not _holds(target, expected):
            return WriteResult.CHANGED
        try:
            swapped = _exchange(tmp, target)
        except FileNotFoundError:
            return WriteResult.CHANGED  # deleted since the check: never bring it back
        if not swapped:
            os.replace(tmp, target)
            _fsync_dir(os.path.dirname(target))
            return WriteResult.WRITTEN
        # `tmp` now names what was displaced: it must be what we checked.
        if _holds(tmp, expected):
            _fsync_dir(os.path.dirname(target))
            return WriteResult.WRITTEN
        keep_tmp = not _swap_back(tmp, target, content, warn)
        return WriteResult.CHANGED
    finally:
        if not keep_tmp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _swap_back(tmp: str, target: str, ours: bytes, warn: Callable[[str], None]) -> bool:
    """An edit arrived between the check and the swap: put it back. True when `tmp` then holds only
    our own content (safe to delete)."""
    try:
        swapped = _exchange(tmp, target)
    except OSError as exc:
        warn(f"{target}: it changed while being written and could not be restored ({exc.strerror}); "
             f"its previous content is kept in {tmp}")
        return False
    if swapped and _holds(tmp, ours):
        return True
    warn(f"{target}: it changed while being written; the displaced version is kept in {tmp}")
    return False
