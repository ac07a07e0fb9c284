"""What an editor reports back about a suggestion, answered the same way by the daemon (`accepted`,
`retained`) and the nREPL proxy (`cljassist/accepted`, `cljassist/retained`):

* accepted: the fields describe the text after the accept (as a completion request's do); with
  "sid" the accept is recorded ("kind" whole | word | line, "chars" taken; cljassist/stats/tracker.py),
  and with prefetch on the next suggestions are computed ahead (cljassist/prefetch.py);
* retained: "sid" and "chars", how many characters of one accept were still in the buffer 30 s later.

Each returns the reply's body, or raises InputError (an unknown or expired sid among them) with
nothing recorded and nothing prefetched.
"""

from __future__ import annotations

from typing import Any, Callable

from cljassist.errors import InputError
from cljassist.frontends.protocol import int_field, request_from_fields, text_field
from cljassist.prefetch import likely_next_requests
from cljassist.stats.tracker import SuggestionTracker
from cljassist.types import CompletionRequest

__all__ = ["answer_accepted", "answer_retained"]


def answer_accepted(message: dict[str, Any], service, suggestions: SuggestionTracker,
                    buffer_of: Callable[[CompletionRequest, str], str] | None = None) -> dict[str, Any]:
    """`{"prefetching": n}`, with `"recorded"` when the message names a sid. `buffer_of(request,
    buffer)`: the buffer id the answerer gives a request (the proxy's are per session); default
    the request's own."""
    request, buffer, n = request_from_fields(message)
    sid = text_field(message, "sid")
    recorded = None
    if sid is not None:
        chars = int_field(message, "chars", 0) if message.get("chars") is not None else None
        recorded = suggestions.accepted(sid, text_field(message, "kind"), chars)
    tickets = []
    if service.engine.settings.prefetch:
        buffer = buffer_of(request, buffer) if buffer_of is not None else buffer
        tickets = service.prefetch(likely_next_requests(request), buffer=buffer, n=n)
    body: dict[str, Any] = {"prefetching": len(tickets)}
    if recorded is not None:
        body["recorded"] = recorded
    return body


def answer_retained(message: dict[str, Any], suggestions: SuggestionTracker) -> dict[str, Any]:
    """`{"recorded": bool}`: False when statistics are off."""
    sid = text_field(message, "sid")
    if sid is None:
        raise InputError("'retained' needs 'sid', the suggestion's sid from its 'complete' reply")
    if message.get("chars") is None:
        raise InputError("'retained' needs 'chars': how many accepted characters are still in the buffer")
    return {"recorded": suggestions.retained(sid, int_field(message, "chars", 0))}
