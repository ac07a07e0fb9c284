"""Suggestions by sid, while the daemon (or the nREPL proxy) runs: each suggestion of a completion
reply gets a sid, and `accepted` and `retained` name it (frontends/feedback.py).

What counts as shown: an editor shows the first suggestion of a reply as ghost text, so that one is
recorded as shown when the reply goes out; the others are only offered (an editor may list them),
and one of them is recorded as shown when it is accepted, since it was seen to be taken. A reply
the editor drops unseen (stale, or below the score it shows) still counts as shown: the daemon
cannot know. The acceptance rate is accepted / shown.

A sid is `<8 hex digits chosen at start>-<a counter>`: short, unique within the daemon's life, and
unlikely to meet another daemon's in the shared statistics file. A sid is remembered for
STATS_SID_TTL after its last use, and at most STATS_SIDS of them (oldest forgotten first); an older
one is refused as expired. Sids are given and checked with statistics off too, so an editor sees
the same protocol either way; then nothing is recorded (`recording` False).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from cljassist.budgets import STATS_SID_TTL, STATS_SIDS
from cljassist.errors import InputError
from cljassist.model.registry import named_model
from cljassist.stats.store import ACCEPT_KINDS, StatsWriter, stats_path

__all__ = ["SuggestionTracker", "UnknownSid", "open_tracker"]

_BASE = 36
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_MAX_COUNTER_DIGITS = 13  # a counter of a daemon's life fits; a longer "number" is not ours


class UnknownSid(InputError):
    """A sid this daemon never gave, or has forgotten."""


def _base36(number: int) -> str:
    text = ""
    while True:
        number, digit = divmod(number, _BASE)
        text = _DIGITS[digit] + text
        if number == 0:
            return text


@dataclass
class _Offered:
    sid: str
    chars: int  # the suggestion's length
    rank: int
    offered: int
    last_used: float  # monotonic
    shown: bool
    accepted: int = 0  # characters taken so far
    retained: int = 0  # of those, reported still there


class SuggestionTracker:
    """Gives sids and turns shown, accepted and retained into events for `record` (None: statistics
    off). Thread-safe: replies are numbered on the engine's thread, accepts arrive on connections'."""

    def __init__(self, model_name: str, record: Callable[[dict[str, Any]], None] | None,
                 max_sids: int = STATS_SIDS.value, ttl_s: float = STATS_SID_TTL.value,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 recorded_in: Path | None = None) -> None:
        self.model_name = model_name
        self.recorded_in = recorded_in  # where `record` writes, for the status line
        self._record = record
        self._max_sids = max_sids
        self._ttl_s = ttl_s
        self._clock = clock
        self._monotonic = monotonic
        self._run = secrets.token_hex(4)
        self._counter = 0
        self._offered: OrderedDict[str, _Offered] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def recording(self) -> bool:
        return self._record is not None

    def status(self) -> str:
        """The line a front-end prints at start."""
        if not self.recording:
            return "statistics off (--no-stats or :stats false): nothing recorded"
        where = f" in {self.recorded_in}" if self.recorded_in is not None else ""
        return f"statistics recorded{where}, on this machine only (`cljassist stats`; --no-stats turns them off)"

    def offer(self, texts: list[str]) -> list[str]:
        """Sids for a reply's suggestions, best first; the first is recorded as shown."""
        now = self._monotonic()
        sids = []
        with self._lock:
            for rank, text in enumerate(texts, 1):
                self._counter += 1
                entry = _Offered(f"{self._run}-{_base36(self._counter)}", len(text), rank, len(texts), now,
                                 shown=rank == 1)
                self._offered[entry.sid] = entry
                sids.append(entry.sid)
                if entry.shown:
                    self._emit_shown(entry)
            while len(self._offered) > self._max_sids:
                self._offered.popitem(last=False)
        return sids

    def with_sids(self, reply: dict[str, Any]) -> dict[str, Any]:
        """A completion reply (protocol.result_reply's map) with a "sid" in each suggestion."""
        suggestions = reply.get("suggestions")
        if suggestions:
            sids = self.offer([s["text"] for s in suggestions])
            reply["suggestions"] = [{**s, "sid": sid} for s, sid in zip(suggestions, sids)]
        return reply

    def accepted(self, sid: str, kind: str | None, chars: int | None) -> bool:
        """The user took `chars` characters of suggestion `sid` (kind "whole": all that was left
        when `chars` is None). True when recorded. InputError (UnknownSid) for a bad report."""
        kind = "whole" if kind is None else kind
        if kind not in ACCEPT_KINDS:
            raise InputError(f"'kind' must be one of {', '.join(ACCEPT_KINDS)}, got {kind!r}")
        with self._lock:
            entry = self._live(sid)
            left = entry.chars - entry.accepted
            if chars is None:
                if kind != "whole":
                    raise InputError(f"'chars' is needed with kind {kind!r}: how many characters were taken")
                chars = left
            if chars > left:
                raise InputError(f"'chars' {chars} is more than the {left} characters of suggestion {sid} "
                                 f"not yet accepted (characters, not bytes or UTF-16 units)")
            entry.accepted += chars
            if not entry.shown:
                entry.shown = True  # taken from a list: it was seen
                self._emit_shown(entry)
            self._emit({"event": "accepted", "sid": sid, "time": self._now(), "kind": kind, "chars": chars})
        return self.recording

    def retained(self, sid: str, chars: int) -> bool:
        """Of the characters one accept of `sid` took, `chars` were still in the buffer 30 s later.
        True when recorded. InputError (UnknownSid) for a bad report."""
        with self._lock:
            entry = self._live(sid)
            if entry.accepted == 0:
                raise InputError(f"suggestion {sid} was not accepted: 'retained' follows an 'accepted' for it")
            unreported = entry.accepted - entry.retained
            if chars > unreported:
                raise InputError(f"'chars' {chars} is more than the {unreported} accepted characters of "
                                 f"suggestion {sid} not yet reported as retained")
            entry.retained += chars
            self._emit({"event": "retained", "sid": sid, "time": self._now(), "chars": chars})
        return self.recording

    def _live(self, sid: str) -> _Offered:
        """The entry of `sid`, refreshed; UnknownSid when it was never given or is forgotten."""
        now = self._monotonic()
        entry = self._offered.get(sid)
        if entry is not None and now - entry.last_used > self._ttl_s:
            del self._offered[sid]
            entry = None
        if entry is None:
            raise UnknownSid(self._why_unknown(sid))
        entry.last_used = now
        self._offered.move_to_end(sid)
        return entry

    def _why_unknown(self, sid: str) -> str:
        run, _, number = sid.partition("-")
        ours = (run == self._run and 0 < len(number) <= _MAX_COUNTER_DIGITS and set(number) <= set(_DIGITS)
                and int(number, _BASE) <= self._counter)
        if ours:
            return (f"suggestion {sid} expired (a sid is kept {self._ttl_s:g} s after its last use, "
                    f"and the newest {self._max_sids} only)")
        shown = sid if len(sid) <= 40 else sid[:40] + "..."
        return f"unknown sid {shown!r}: this daemon gave no such suggestion (restarted since?)"

    def _emit_shown(self, entry: _Offered) -> None:
        self._emit({"event": "shown", "sid": entry.sid, "time": self._now(), "model": self.model_name,
                    "chars": entry.chars, "rank": entry.rank, "offered": entry.offered})

    def _emit(self, event: dict[str, Any]) -> None:
        if self._record is not None:
            self._record(event)

    def _now(self) -> float:
        return round(self._clock(), 1)


def stats_model_name(settings, loaded_name: str) -> str:
    """The model as `cljassist stats` lists it: its registry name where one was named (the name a
    user chose it by; GGUF files of one model share their metadata name), else the loaded model's."""
    if settings.backend is None and settings.model and named_model(settings.model) is not None:
        return settings.model
    return loaded_name


@contextlib.contextmanager
def open_tracker(settings, loaded_name: str) -> Iterator[SuggestionTracker]:
    """The tracker `serve` and `proxy` answer with: recording into the statistics file
    (store.stats_path) unless `settings.stats` is False; what waits for the disk is written on leaving."""
    name = stats_model_name(settings, loaded_name)
    if not settings.stats:
        yield SuggestionTracker(name, None)
        return
    with StatsWriter(stats_path()) as writer:
        yield SuggestionTracker(name, writer.put, recorded_in=writer.path)
