"""The engine's prefilter stage: answers that need no model call.

* Type-through: the user typed the first characters of a suggestion on screen. The document the
  suggestion would make is unchanged, so its rest is the answer, and the checks it passed still
  hold. The comparison is on whole documents, so an auto-pairing editor's inserted closers (the
  suffix grows by a `)`) and typing over a closer (the suffix loses it) are type-through as well.
* Recent results: an LRU of finished results keyed by the text around the cursor (backspace, undo,
  and a prefetched next suggestion land here). Entries expire: the REPL's state moves on.

Both are per file; a request that matches neither goes down the whole pipeline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from cljassist.budgets import CACHE_KEY_PREFIX, CACHE_KEY_SUFFIX, RECENT_RESULTS, RECENT_RESULTS_TTL
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cljassist.types import CompletionRequest, CompletionResult

# How much text around the cursor keys a recent result: enough to tell places apart, short enough
# that hashing it costs nothing next to a model call.
KEY_PREFIX_CHARS = CACHE_KEY_PREFIX.value
KEY_SUFFIX_CHARS = CACHE_KEY_SUFFIX.value


@dataclass
class _Anchor:
    prefix: str
    suffix: str
    result: "CompletionResult"


class TypeThroughCache:
    """The last model-made result per file, and the documents its suggestions would make."""

    def __init__(self, max_files: int = 16) -> None:
        self._anchors: OrderedDict[str | None, _Anchor] = OrderedDict()
        self.max_files = max_files

    def remember(self, request: "CompletionRequest", result: "CompletionResult") -> None:
        self._anchors[request.file] = _Anchor(request.prefix, request.suffix, result)
        self._anchors.move_to_end(request.file)
        while len(self._anchors) > self.max_files:
            self._anchors.popitem(last=False)

    def lookup(self, request: "CompletionRequest") -> "CompletionResult | None":
        """The rest of the remembered suggestions, when ``request`` is the remembered one plus the
        start of a suggestion typed; None otherwise."""
        anchor = self._anchors.get(request.file)
        if anchor is None or len(request.prefix) <= len(anchor.prefix):
            return None
        if not request.prefix.startswith(anchor.prefix):
            return None
        rests = []
        for suggestion in anchor.result.suggestions:
            rest = _rest_after_typing(anchor, suggestion.text, request)
            if rest:
                rests.append(dataclasses.replace(suggestion, text=rest))
        if not rests:
            return None
        return dataclasses.replace(anchor.result, suggestions=rests, source="type-through", candidates=[])

    def clear(self) -> None:
        self._anchors.clear()


def _rest_after_typing(anchor: _Anchor, text: str, request: "CompletionRequest") -> str | None:
    """What is left of suggestion ``text`` once ``request``'s prefix has been typed, or None when
    the request's document is not on the way to the suggestion's."""
    typed = request.prefix[len(anchor.prefix):]
    # The suggestion's document is anchor.prefix + text + anchor.suffix; the request must be a cut of
    # it: its prefix a start (checked piecewise, no copies of big files) and its suffix an end.
    if not text.startswith(typed[: len(text)]) or len(typed) >= len(text) + len(anchor.suffix):
        return None
    if len(typed) <= len(text):
        after_typed = text[len(typed):]  # the rest of the suggestion, then anchor.suffix
        document_rest_len = len(after_typed) + len(anchor.suffix)
        if len(request.suffix) >= document_rest_len:
            return None
        rest_len = document_rest_len - len(request.suffix)
        if not _ends_with(after_typed, anchor.suffix, request.suffix):
            return None
        return after_typed[:rest_len] if rest_len <= len(after_typed) else None
    return None  # typed past the suggestion's end


def _ends_with(head: str, tail: str, end: str) -> bool:
    """Whether ``head + tail`` ends with ``end``, without building ``head + tail``."""
    if len(end) <= len(tail):
        return tail.endswith(end)
    return tail == end[len(end) - len(tail):] and head.endswith(end[: len(end) - len(tail)])


class RecentResults:
    """An LRU of results keyed by file, suggestion count and the text around the cursor."""

    def __init__(self, capacity: int = RECENT_RESULTS.value, ttl_s: float = RECENT_RESULTS_TTL.seconds) -> None:
        self._entries: OrderedDict[tuple, tuple[float, "CompletionResult"]] = OrderedDict()
        self.capacity = capacity
        self.ttl_s = ttl_s

    @staticmethod
    def key(request: "CompletionRequest", n: int) -> tuple:
        around = hashlib.blake2b(digest_size=16)
        around.update(request.prefix[-KEY_PREFIX_CHARS:].encode("utf-8", "surrogatepass"))
        around.update(b"\x00")
        around.update(request.suffix[:KEY_SUFFIX_CHARS].encode("utf-8", "surrogatepass"))
        return (request.file, request.namespace, n, len(request.prefix), around.digest())

    def get(self, request: "CompletionRequest", n: int) -> "CompletionResult | None":
        found = self._fresh(self.key(request, n))
        return None if found is None else dataclasses.replace(found, source="recent")

    def fewer(self, request: "CompletionRequest", n: int) -> "tuple[int, CompletionResult] | None":
        """The result answered lately for this place with the most suggestions fewer than ``n`` asked
        for, and how many were asked: a request for more starts from its candidates. None if none."""
        for asked in range(n - 1, 0, -1):
            found = self._fresh(self.key(request, asked))
            if found is not None:
                return asked, found
        return None

    def _fresh(self, key: tuple) -> "CompletionResult | None":
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, result = entry
        if time.monotonic() - stored_at > self.ttl_s:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return result

    def put(self, request: "CompletionRequest", n: int, result: "CompletionResult") -> None:
        key = self.key(request, n)
        self._entries[key] = (time.monotonic(), result)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
