"""The file watcher, `cljassist watch DIR [--dry-run]`: fill `<CURSOR>` markers in saved files.

When a `.clj`/`.cljc`/`.cljs` file under DIR is saved holding `<CURSOR>`, the marker is replaced by
the best suggestion that passed its checks, and a one-line comment goes on the next line with the
alternatives and what each passed:

    (map <CURSOR> top)     becomes     (map key top)
                                       ;; cljassist: 1) chosen [balanced reads compiles] 2) first [balanced reads]

Checks in brackets: `name` passed, `!name` failed, `?name` not checked on purpose (why, after the
brackets: `?compiles (macro my.app/with-db)`, checking it would have run that macro), a check that
did not run is left out.

Three pieces, so the core is testable without watchdog's timing:

* `MarkerFiller.process(path) -> Outcome`: read, complete, check, write. Several markers in one
  file are filled one at a time, top to bottom; the engine sees the earlier ones filled and the
  later ones removed. A marker with no passing suggestion stays (the next save tries it again) and
  the reason goes to stderr; when none was filled the file is not touched at all.
* `write_if_unchanged` (in cljassist.fileio): the atomic write that never loses an edit.
* `Watcher(root, filler, debounce_s)`: watchdog's thread only records which paths changed; one
  worker thread (the engine is not thread-safe) handles a path once it has been quiet for
  `debounce_s`, so a burst of saves, or an editor's rename dance, is one fill.

It never loses an edit: the file is written through a temporary file in the same directory that
replaces it atomically, only when its bytes are still those the suggestion was made from. Its own
writes are recognised by their hash and not filled again (once: saving that content again, say to
retry a marker that stayed, is a new save). Only saves count: a file that already holds a marker
when the watcher starts is filled on its next save.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, TextIO

from cljassist.budgets import WATCH_DEBOUNCE, WATCH_SHOWN, WORKER_STOP
from cljassist.errors import Cancelled, CljassistError, InputError
from cljassist.fileio import (
    MAX_SOURCE_BYTES, TEMP_SUFFIX, NotSource, WriteResult, read_source_bytes, resolved_outside, source_text,
    write_if_unchanged,
)
from cljassist.rank import normalize
from cljassist.types import CURSOR_MARKER, CompletionRequest, ReplStatus, Suggestion

SOURCE_SUFFIXES = (".clj", ".cljc", ".cljs")
MAX_FILE_BYTES = MAX_SOURCE_BYTES
IGNORED_DIR_NAMES = frozenset({"target", "node_modules"})  # build output; hidden dirs are ignored too
DEFAULT_DEBOUNCE_S = WATCH_DEBOUNCE.seconds
COMMENT_PREFIX = ";; cljassist:"
MAX_SHOWN_CHARS = WATCH_SHOWN.value

# ------------------------------------------------------------------------------------------------
# Which paths are watched


def is_editor_temp_name(name: str) -> bool:
    """Backup, lock, swap and probe files editors write next to the real one (vim's `4913` probe,
    `file~`, emacs' `.#file` and `#file#`, `.file.swp`, atomic-save `.file.tmp`)."""
    return (name.startswith(".") or name.endswith("~") or name == "4913"
            or (name.startswith("#") and name.endswith("#"))
            or name.endswith((".swp", ".swo", ".swx", ".tmp", TEMP_SUFFIX)))


def is_watched_source(path: Path, root: Path) -> bool:
    """A Clojure source under `root`, outside hidden and build directories, not an editor's temp file."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return False
    if not parts or not path.name.endswith(SOURCE_SUFFIXES) or is_editor_temp_name(path.name):
        return False
    return not any(d.startswith(".") or d in IGNORED_DIR_NAMES for d in parts[:-1])


# ------------------------------------------------------------------------------------------------
# Filling markers


class Status(str, Enum):
    FILLED = "filled"  # written (some markers may have stayed; see `fills`)
    DRY_RUN = "dry-run"  # printed, not written
    NOT_FILLED = "not-filled"  # no marker got a passing suggestion: file untouched
    NO_MARKER = "no-marker"
    CHANGED = "changed"  # changed while completing: not written, the next save tries again
    SKIPPED = "skipped"  # huge, binary, not UTF-8, not a regular file, a link leaving the watched directory
    MISSING = "missing"  # gone before it could be read
    OWN_WRITE = "own-write"  # the content we wrote ourselves
    CANCELLED = "cancelled"  # the watcher is stopping


@dataclass(frozen=True)
class Fill:
    """One marker: what went in (None: the marker stays), the alternatives, and why not, if not."""

    line: int  # 1-based line of the marker in the file as read
    text: str | None
    alternatives: tuple[Suggestion, ...] = ()
    checks: dict = field(default_factory=dict)
    comment: str = ""
    reason: str | None = None


@dataclass(frozen=True)
class Outcome:
    path: str
    status: Status
    message: str = ""
    fills: tuple[Fill, ...] = ()


def checks_label(checks: dict) -> str:
    """`[balanced reads !compiles]`: passed, failed (!), not checked on purpose (?, the reason
    after the brackets: `[balanced reads ?compiles] (macro my.app/m)`); a check that did not run is
    left out."""
    shown = [name if ok is True else f"!{name}" if ok is False else f"?{name}"
             for name, ok in checks.items() if ok is not None]
    why = [ok.removeprefix("not checked ") for ok in checks.values() if isinstance(ok, str)]
    return "[" + " ".join(shown) + "]" + "".join(f" {w}" for w in why)


def _one_line(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    flat = normalize(text)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def comment_line(chosen: Suggestion, alternatives: tuple[Suggestion, ...]) -> str:
    """The comment left after a filled marker; always one line."""
    parts = [f"{COMMENT_PREFIX} 1) chosen {chosen.score:.2f} {checks_label(chosen.checks)}"]
    for number, alt in enumerate(alternatives, 2):
        value = f" => {_one_line(alt.value, 30)}" if alt.value is not None else ""
        parts.append(f"{number}) {_one_line(alt.text)} {alt.score:.2f} {checks_label(alt.checks)}{value}")
    if not alternatives:
        parts.append("(no alternatives)")
    return " ".join(parts)


def _choose(suggestions: list[Suggestion]) -> tuple[Suggestion | None, tuple[Suggestion, ...]]:
    """The first passing suggestion (the engine ranks them) and the others. One holding the marker
    itself is never used: it would be filled again on every save."""
    usable = [s for s in suggestions if s.text.strip() and CURSOR_MARKER not in s.text]
    chosen = next((s for s in usable if s.passed), None)
    return chosen, tuple(s for s in usable if s is not chosen)


def _why_not(result) -> str:
    repl = "" if result.repl is ReplStatus.USED else f"; REPL {result.repl_label}"
    return f"{result.nothing_offered}{repl})"


def _indent_at(text: str, offset: int) -> str:
    line_start = text.rfind("\n", 0, offset) + 1
    line = text[line_start:offset]
    return line[: len(line) - len(line.lstrip(" \t"))]


def _insert_comments(text: str, comments: list[tuple[int, str]]) -> str:
    """Each comment on the line after the one where its fill ends, in marker order."""
    for end, comment in reversed(comments):  # bottom up keeps the earlier offsets valid
        newline = text.find("\n", end)
        if newline < 0:
            text = f"{text}\n{comment}"
            continue
        eol = "\r\n" if newline > 0 and text[newline - 1] == "\r" else "\n"
        text = f"{text[:newline + 1]}{comment}{eol}{text[newline + 1:]}"
    return text


def _file_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class MarkerFiller:
    """Fills the markers of one file per `process` call; call it from one thread only (the engine
    is not thread-safe). Results and fills go to `out`, reasons for doing nothing to `err`."""

    def __init__(self, engine, dry_run: bool = False, out: TextIO | None = None, err: TextIO | None = None,
                 root: Path | None = None):
        self.engine = engine
        self.dry_run = dry_run
        self.out = out
        self.err = err
        self.root = root
        self._own_writes: dict[str, str] = {}  # path -> hash of the content we wrote last
        self._skip_reported: dict[str, tuple] = {}  # path -> (reason, version) already said

    # -- output --

    def _display(self, path: str) -> str:
        if self.root is not None:
            with contextlib.suppress(ValueError):
                return str(Path(path).relative_to(self.root))
        return path

    def _say(self, message: str, to_err: bool = False) -> None:
        stream = (self.err or sys.stderr) if to_err else (self.out or sys.stdout)
        print(f"cljassist: {message}", file=stream, flush=True)

    # -- the work --

    def process(self, path: str | Path, cancelled: Callable[[], bool] | None = None) -> Outcome:
        """Read `path`, fill its markers, write it back if it is unchanged meanwhile."""
        path = os.path.abspath(path)
        read = self._read(path)
        if isinstance(read, Outcome):
            return read
        data, text = read
        if CURSOR_MARKER not in text:
            return Outcome(path, Status.NO_MARKER)
        try:
            fills, new_text = self._fill(path, text, cancelled)
        except Cancelled:
            return Outcome(path, Status.CANCELLED, "stopped before the completion finished")
        for fill in fills:
            if fill.text is None:
                self._say(f"{self._display(path)}:{fill.line}: marker kept: {fill.reason}", to_err=True)
        if new_text is None:
            return Outcome(path, Status.NOT_FILLED, "; ".join(f.reason or "" for f in fills), tuple(fills))
        if self.dry_run:
            for fill in fills:
                if fill.text is not None:
                    self._say(f"{self._display(path)}:{fill.line}: {_one_line(fill.text, 200)}  {fill.comment.strip()}")
            return Outcome(path, Status.DRY_RUN, fills=tuple(fills))
        return self._write(path, data, new_text, fills)

    def _read(self, path: str) -> tuple[bytes, str] | Outcome:
        outside = self._outside_root(path)
        if outside:
            return self._skip(path, outside, ())
        try:
            data = read_source_bytes(path)
        except FileNotFoundError:
            return Outcome(path, Status.MISSING, "deleted before it could be read")
        except NotSource as exc:
            if not exc.regular:
                return Outcome(path, Status.SKIPPED, exc.reason)
            return self._skip(path, exc.reason, exc.version)
        except OSError as exc:
            return self._skip(path, f"cannot read ({exc.strerror})", (exc.errno,))
        digest = _file_hash(data)
        if self._own_writes.get(path) == digest:
            # Our own write's events: consumed once, so that saving it again unchanged retries.
            del self._own_writes[path]
            return Outcome(path, Status.OWN_WRITE)
        self._own_writes.pop(path, None)
        try:
            text = source_text(data, path)
        except NotSource as exc:
            return self._skip(path, exc.reason, (digest,))
        self._skip_reported.pop(path, None)
        return data, text

    def _outside_root(self, path: str) -> str | None:
        """Why `path` must not be read or written: it resolves (through a symlink) outside the watched
        directory, whose files only are ours to fill. None when it stays inside (or no root was given)."""
        target = resolved_outside(path, self.root) if self.root is not None else None
        return f"leads to {target}, outside {self.root}: not followed" if target else None

    def _skip(self, path: str, reason: str, version: tuple) -> Outcome:
        """Say why once per version of the file, not on every event."""
        if self._skip_reported.get(path) != (reason, version):
            self._skip_reported[path] = (reason, version)
            self._say(f"{self._display(path)}: skipped: {reason}", to_err=True)
        return Outcome(path, Status.SKIPPED, reason)

    def _fill(self, path: str, text: str, cancelled) -> tuple[list[Fill], str | None]:
        """Fill each marker top to bottom. The engine sees the ones above filled (or removed, if they
        stay) and the ones below removed. (fills, new text or None when nothing was filled)."""
        segments = text.split(CURSOR_MARKER)
        marker_offsets = [m.start() for m in re.finditer(re.escape(CURSOR_MARKER), text)]
        output = view = segments[0]
        fills: list[Fill] = []
        comments: list[tuple[int, str]] = []
        for index, segment in enumerate(segments[1:], start=1):
            line = text.count("\n", 0, marker_offsets[index - 1]) + 1
            request = CompletionRequest(view, "".join(segments[index:]), path)
            try:
                result = self.engine.complete(request, cancelled=cancelled)
            except Cancelled:
                raise
            except CljassistError as exc:
                chosen, alternatives, reason = None, (), f"completion failed: {exc}"
            else:
                chosen, alternatives = _choose(result.suggestions)
                reason = None if chosen else _why_not(result)
            if chosen is None:
                fills.append(Fill(line, None, alternatives, reason=reason))
                output += CURSOR_MARKER
            else:
                comment = _indent_at(output, len(output)) + comment_line(chosen, alternatives)
                output += chosen.text
                view += chosen.text
                comments.append((len(output), comment))
                fills.append(Fill(line, chosen.text, alternatives, dict(chosen.checks), comment))
            output += segment
            view += segment
        if not comments:
            return fills, None
        return fills, _insert_comments(output, comments)

    def _write(self, path: str, data: bytes, new_text: str, fills: list[Fill]) -> Outcome:
        outside = self._outside_root(path)  # again: the link may have been re-pointed while completing
        if outside:
            self._say(f"{self._display(path)}: {outside}; file untouched", to_err=True)
            return Outcome(path, Status.SKIPPED, outside, tuple(fills))
        content = new_text.encode("utf-8")
        self._own_writes[path] = _file_hash(content)  # before the rename: its events must find it
        try:
            written = write_if_unchanged(Path(path), data, content, warn=lambda m: self._say(m, to_err=True),
                                         within=self.root)
        except OSError as exc:
            self._own_writes.pop(path, None)
            message = f"cannot write ({exc.strerror or exc}); file untouched"
            self._say(f"{self._display(path)}: {message}", to_err=True)
            return Outcome(path, Status.NOT_FILLED, message, tuple(fills))
        if written is WriteResult.OUTSIDE:
            self._own_writes.pop(path, None)
            message = f"re-pointed outside {self.root} while completing; file untouched"
            self._say(f"{self._display(path)}: {message}", to_err=True)
            return Outcome(path, Status.SKIPPED, message, tuple(fills))
        if written is WriteResult.CHANGED:
            self._own_writes.pop(path, None)
            message = "changed while completing; not written, the next save tries again"
            self._say(f"{self._display(path)}: {message}", to_err=True)
            return Outcome(path, Status.CHANGED, message, tuple(fills))
        for fill in fills:
            if fill.text is not None:
                self._say(f"filled {self._display(path)}:{fill.line}: {_one_line(fill.text, 200)}")
        return Outcome(path, Status.FILLED, fills=tuple(fills))


# ------------------------------------------------------------------------------------------------
# Watching


class Debouncer:
    """Paths waiting until they have been quiet for `quiet_s` (not thread-safe: the caller locks)."""

    def __init__(self, quiet_s: float, clock: Callable[[], float] = time.monotonic):
        self.quiet_s = quiet_s
        self.clock = clock
        self._last_touch: dict[str, float] = {}

    def touch(self, path: str) -> None:
        self._last_touch.pop(path, None)  # re-insert: the dict stays ordered by last touch
        self._last_touch[path] = self.clock()

    def pop_due(self) -> list[str]:
        now = self.clock()
        due = [p for p, t in self._last_touch.items() if now - t >= self.quiet_s]
        for p in due:
            del self._last_touch[p]
        return due

    def next_due_in(self) -> float | None:
        """Seconds until the next path is due; None when none waits."""
        if not self._last_touch:
            return None
        return max(0.0, min(self._last_touch.values()) + self.quiet_s - self.clock())

    def __len__(self) -> int:
        return len(self._last_touch)


def _event_types():
    from watchdog.events import FileClosedEvent, FileCreatedEvent, FileModifiedEvent, FileMovedEvent

    # Not opened/closed-without-writing: our own reads would wake us up forever.
    return [FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileClosedEvent]


class Watcher:
    """Wires watchdog's events to one worker thread that runs `filler.process` per quiet path."""

    def __init__(self, root: Path, filler: MarkerFiller, debounce_s: float = DEFAULT_DEBOUNCE_S,
                 err: TextIO | None = None):
        self.root = Path(os.path.abspath(root))
        self.filler = filler
        self.err = err
        self._outcomes: deque[Outcome] = deque(maxlen=10_000)  # the latest, for tests and callers
        self._debouncer = Debouncer(debounce_s)
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._busy = False
        self._last_activity = time.monotonic()
        self._observer = None
        self._worker: threading.Thread | None = None

    def start(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:  # watchdog's thread: record, never work
                if event.is_directory or event.event_type not in ("created", "modified", "moved", "closed"):
                    return
                # A save by rename arrives as a move onto the path (dest); a move away is harmless.
                for raw in (event.src_path, getattr(event, "dest_path", "")):
                    if raw and is_watched_source(Path(os.fsdecode(raw)), watcher.root):
                        watcher.notify(os.fsdecode(raw))

        self._worker = threading.Thread(target=self._run, name="cljassist-watch", daemon=True)
        self._worker.start()
        observer = Observer()
        observer.schedule(Handler(), str(self.root), recursive=True, event_filter=_event_types())
        observer.start()
        self._observer = observer

    def notify(self, path: str) -> None:
        """A watched file changed (or may have): handle it once it has been quiet."""
        with self._changed:
            self._debouncer.touch(path)
            self._last_activity = time.monotonic()
            self._changed.notify_all()

    def stop(self, timeout: float = WORKER_STOP.seconds) -> None:
        """Stop watching; a completion under way is cancelled, nothing half-written is left."""
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
        if self._worker is not None:
            self._worker.join(timeout)

    def wait_idle(self, quiet_s: float, timeout: float) -> bool:
        """Wait until nothing is pending or running and nothing happened for `quiet_s`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                now = time.monotonic()
                quiet_for = now - self._last_activity
                if not self._busy and not len(self._debouncer) and quiet_for >= quiet_s:
                    return True
                if now >= deadline:
                    return False
                self._changed.wait(min(deadline - now, max(0.01, quiet_s - quiet_for)))

    def _run(self) -> None:
        while not self._stopping.is_set():
            with self._changed:
                due = self._debouncer.pop_due()
                if not due:
                    self._changed.wait(self._debouncer.next_due_in())
                    continue
                self._busy = True
            try:
                for path in due:
                    if self._stopping.is_set():
                        break
                    self._handle(path)
            finally:
                with self._changed:
                    self._busy = False
                    self._last_activity = time.monotonic()
                    self._changed.notify_all()

    def _handle(self, path: str) -> None:
        try:
            outcome = self.filler.process(path, cancelled=self._stopping.is_set)
        except Exception as exc:  # one file's trouble never stops the watcher
            print(f"cljassist: {path}: internal error: {type(exc).__name__}: {exc}", file=self.err or sys.stderr,
                  flush=True)
            return
        with self._changed:
            self._outcomes.append(outcome)

    def outcomes(self) -> list[Outcome]:
        """What the latest `process` calls did, oldest first (a copy: safe from any thread)."""
        with self._changed:
            return list(self._outcomes)


# ------------------------------------------------------------------------------------------------
# The command


def watch_root(dir_arg: str) -> Path:
    root = Path(dir_arg).expanduser()
    if not root.exists():
        raise InputError(f"{dir_arg}: no such directory")
    if not root.is_dir():
        raise InputError(f"{dir_arg}: not a directory")
    return root.resolve()


def main_watch(args) -> int:
    from cljassist.frontends.bootstrap import open_frontend, settings_from_args

    root = watch_root(args.dir)
    settings = settings_from_args(args, root)
    with open_frontend(settings, near=root, no_repl=bool(getattr(args, "no_repl", False)),
                       explicit=getattr(args, "nrepl", None) is not None) as front:
        watcher = Watcher(root, MarkerFiller(front.engine, dry_run=bool(args.dry_run), root=root))
        with front.stop_signals() as stop:
            watcher.start()
            try:
                mode = "; dry run, nothing is written" if args.dry_run else ""
                print(f"cljassist: watching {root} for {CURSOR_MARKER} in {', '.join(SOURCE_SUFFIXES)} files "
                      f"(REPL {front.repl_label}{mode}); Ctrl-C stops", flush=True)
                front.wait(stop)
            finally:
                watcher.stop()
    print("cljassist: stopped watching", file=sys.stderr, flush=True)
    return 0
