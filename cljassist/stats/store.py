"""The statistics file: one JSON object a line, appended, on this machine only.

    $XDG_STATE_HOME/cljassist/stats.jsonl   (default ~/.local/state/cljassist/stats.jsonl)

Why append-only JSON lines and not sqlite3:

* lines are written by one `write` while holding an exclusive `flock` on `stats.jsonl.lock`, so
  two daemons (two projects) append to the same file without mixing their lines, and a crash loses
  at most the lines being written;
* a damaged line costs that line only: the reader skips it with one warning and keeps every line
  it can read, where a damaged sqlite file is unreadable as a whole;
* the size is bounded simply: past half of STATS_FILE the file is renamed to `stats.jsonl.1`
  (replacing the older generation), so the two never hold more than STATS_FILE;
* `cljassist stats` reads a few MiB at most, which JSON parses in well under a second.

The directory is created owner-only (0700) and the file is owner-only (0600) whatever the umask.
Events (every line has "event", "sid" and "time", seconds since the epoch):

    {"event": "shown", "sid", "time", "model", "chars": length of the suggestion, "rank": its place
     in the reply (1: the ghost text), "offered": suggestions in that reply}
    {"event": "accepted", "sid", "time", "kind": "whole" | "word" | "line", "chars": characters taken}
    {"event": "retained", "sid", "time", "chars": of those, still in the buffer 30 s later}

`StatsWriter` appends from a thread of its own, so whoever records (the daemon answering an
editor) never waits for the disk.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cljassist.budgets import STATS_FILE, STATS_QUEUE, THREAD_JOIN

__all__ = ["STATS_FILE_NAME", "EVENT_FIELDS", "ACCEPT_KINDS", "stats_path", "generations", "append_events",
           "read_events", "StatsRead", "StatsWriter"]

STATS_FILE_NAME = "stats.jsonl"
ACCEPT_KINDS = ("whole", "word", "line")
_NUMBER = (int, float)
# Each event's fields and their types; a line lacking one, or holding another type, is damaged.
EVENT_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "shown": {"sid": (str,), "time": _NUMBER, "model": (str,), "chars": (int,), "rank": (int,), "offered": (int,)},
    "accepted": {"sid": (str,), "time": _NUMBER, "kind": (str,), "chars": (int,)},
    "retained": {"sid": (str,), "time": _NUMBER, "chars": (int,)},
}
# Times are seconds since the epoch and counts are characters: anything beyond this (the year 2242)
# is damage, and would not make a date.
_LARGEST_NUMBER = 2 ** 33
_DIRECTORY_MODE = 0o700
_FILE_MODE = 0o600


def stats_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the statistics are kept: under $XDG_STATE_HOME when it is an absolute path (the XDG
    base directory rule: a relative one is ignored), else ~/.local/state."""
    environ = os.environ if environ is None else environ
    state = environ.get("XDG_STATE_HOME", "")
    base = Path(state) if state and os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "cljassist" / STATS_FILE_NAME


def generations(path: Path) -> list[Path]:
    """The rotated-out file, then the current one: oldest lines first."""
    return [path.with_name(path.name + ".1"), path]


def _private_directory(directory: Path) -> None:
    """`directory`, created if need be, owner-only; OSError when another user owns it (someone else's
    directory in a shared $XDG_STATE_HOME must not receive our lines, nor be chmod-ed)."""
    directory.mkdir(mode=_DIRECTORY_MODE, parents=True, exist_ok=True)
    info = directory.stat()
    if info.st_uid != os.geteuid():
        raise OSError(f"{directory} belongs to another user (uid {info.st_uid})")
    if info.st_mode & 0o777 != _DIRECTORY_MODE:
        os.chmod(directory, _DIRECTORY_MODE)


def append_events(path: Path, events: list[dict[str, Any]], cap: int = STATS_FILE.value) -> None:
    """Append `events`, one line each, in one write, holding the lock file; first rotate the file
    when the lines would take it past half of `cap`. OSError when the file cannot be written."""
    # ensure_ascii: a model name or sid that is not valid Unicode still makes a valid line
    data = "".join(json.dumps(event, separators=(",", ":")) + "\n" for event in events).encode("ascii")
    _private_directory(path.parent)
    # The lock is a file of its own, never rotated: whoever holds it may rename the data file.
    lock = _open_private(path.with_name(path.name + ".lock"))
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fd = _open_private(path)
        try:
            size = os.fstat(fd).st_size
            if size and size + len(data) > cap // 2:
                os.replace(path, generations(path)[0])
                os.close(fd)
                fd = _open_private(path)
                size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # a line cut short by a crash stays one damaged line, not two
            _write_all(fd, data)
        finally:
            os.close(fd)
    finally:
        os.close(lock)  # releases the lock


def _open_private(path: Path) -> int:
    """`path` opened for appending, created owner-only; a symlink there is refused (ELOOP)."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, _FILE_MODE)
    try:
        if os.fstat(fd).st_mode & 0o777 != _FILE_MODE:
            os.fchmod(fd, _FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _event_or_none(line: bytes) -> dict[str, Any] | None:
    """The event a line holds, or None when the line is damaged."""
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(event, dict):
        return None
    fields = EVENT_FIELDS.get(event.get("event")) if isinstance(event.get("event"), str) else None
    if fields is None:
        return None
    for name, types in fields.items():
        value = event.get(name)
        if not isinstance(value, types) or isinstance(value, bool):
            return None
        if isinstance(value, (int, float)) and not 0 <= value <= _LARGEST_NUMBER:  # NaN fails this too
            return None
    if event["event"] == "accepted" and event["kind"] not in ACCEPT_KINDS:
        return None
    return event


@dataclass
class StatsRead:
    events: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # one line per damaged or unreadable file


def read_events(path: Path) -> StatsRead:
    """Every readable event of both generations, oldest first. A damaged line is skipped and each
    file with any gets one warning line; no line that can be read is lost."""
    read = StatsRead()
    for generation in generations(path):
        try:
            data = generation.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as exc:
            read.warnings.append(f"warning: {generation}: not readable ({exc.strerror}), skipped")
            continue
        damaged: list[int] = []
        for number, line in enumerate(data.split(b"\n"), 1):
            if not line.strip():
                continue
            event = _event_or_none(line)
            if event is None:
                damaged.append(number)
            else:
                read.events.append(event)
        if damaged:
            lines = "line" if len(damaged) == 1 else "lines"
            read.warnings.append(f"warning: {generation}: {len(damaged)} damaged {lines} skipped "
                                 f"(first: line {damaged[0]}); the other lines are counted")
    return read


_CLOSE = object()


class StatsWriter:
    """Appends events to `path` from a thread of its own. `put` never blocks: past STATS_QUEUE
    waiting events (a disk that stopped answering) new ones are dropped. A failing disk is
    reported once on stderr, never raised to the caller."""

    def __init__(self, path: Path, cap: int = STATS_FILE.value, max_waiting: int = STATS_QUEUE.value) -> None:
        self.path = path
        self.cap = cap
        self.dropped = 0
        self.failures = 0
        self._queue: queue.Queue = queue.Queue(maxsize=max_waiting)
        self._warned: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="cljassist-stats", daemon=True)
        self._thread.start()

    def put(self, event: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            self._warn_once("full", f"{STATS_QUEUE.value} lines wait for the disk; newer ones are dropped")

    def close(self) -> None:
        """Write what is waiting, then stop (bounded by THREAD_JOIN)."""
        try:
            self._queue.put(_CLOSE, timeout=THREAD_JOIN.seconds)
        except queue.Full:
            pass
        self._thread.join(THREAD_JOIN.seconds)

    def __enter__(self) -> "StatsWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        closing = False
        while not closing:
            batch = [self._queue.get()]
            while True:  # everything already waiting goes in one write
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            closing = any(item is _CLOSE for item in batch)
            events = [item for item in batch if item is not _CLOSE]
            if not events:
                continue
            try:
                append_events(self.path, events, self.cap)
            except OSError as exc:
                self.failures += len(events)
                self._warn_once("write", f"cannot write {self.path} ({exc}); statistics are not recorded")

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            print(f"cljassist: statistics: {message}", file=sys.stderr, flush=True)
