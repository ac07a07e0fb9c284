"""One engine, many callers: a single worker thread owns the model (llama.cpp is not re-entrant),
requests wait in order, and a newer request for the same buffer cancels the older one, whether it
is still waiting or already running (the engine polls the cancel flag inside generation).

Prefetches (`prefetch`, after the user accepted a suggestion) wait in a second queue that the worker
serves only when no request waits; any request for the buffer cancels its prefetches. Their
results are not sent anywhere: they land in the engine's recent-results cache, where the editor's
next request finds them.

Warms (`warm`, a buffer opened: the engine evaluates its prompt and the model keeps it) wait in a
third queue, served only when neither requests nor prefetches wait, so a warm never holds back a
completion: a request for any buffer stops a running warm within one prompt chunk (what it evaluated
stays kept, cljassist/model/kv_states.py), and the warm is queued again, or dropped where the
request is for its own buffer (the request evaluates that prompt itself). A warm for a buffer that
a request is already on its way for is dropped at once. A dropped warm's ticket answers
WarmResult(0, skipped=why) (`warm_result`)."""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field

from cljassist.budgets import WORKER_STOP
from cljassist.types import CompletionEngine, CompletionRequest, CompletionResult, WarmResult
from cljassist.errors import Cancelled


@dataclass(eq=False)
class Ticket:
    """A submitted request. `future` ends with a CompletionResult or an exception (Cancelled when
    superseded or cancelled)."""

    request: CompletionRequest
    buffer: str
    n: int | None
    future: Future = field(default_factory=Future)
    _cancel: threading.Event = field(default_factory=threading.Event)

    reason: str = ""
    prefetch: bool = False
    warm: bool = False
    # a running warm asked to make way for a request (it is queued again, not cancelled)
    _yield: threading.Event = field(default_factory=threading.Event)

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop this request: at once when still waiting, within one prompt chunk or token when running."""
        if not self._cancel.is_set():
            self.reason = reason
            self._cancel.set()
        self.future.cancel()  # only takes while waiting; a running one sees the flag

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _stopping(self) -> bool:
        """What the engine polls: cancelled, or (a warm) asked to make way."""
        return self._cancel.is_set() or self._yield.is_set()

    def result(self, timeout: float | None = None) -> CompletionResult:
        """The result; raises Cancelled (with the reason) when cancelled, TimeoutError on timeout."""
        try:
            return self.future.result(timeout)
        except CancelledError:
            raise Cancelled(self.reason or "cancelled") from None


class CompletionService:
    def __init__(self, engine: CompletionEngine) -> None:
        self.engine = engine
        self._lock = threading.Condition()
        self._waiting: deque[Ticket] = deque()
        self._prefetching: deque[Ticket] = deque()
        self._warming: deque[Ticket] = deque()
        self._latest: dict[str, Ticket] = {}
        self._closed = False
        self._running: Ticket | None = None
        self._worker = threading.Thread(target=self._run, name="cljassist-engine", daemon=True)
        self._worker.start()

    def submit(self, request: CompletionRequest, buffer: str | None = None, n: int | None = None) -> Ticket:
        buffer = buffer or request.file or "default"
        ticket = Ticket(request, buffer, n)
        # A cached answer (type-through, recent) needs no model: it is given at once, on the caller's
        # thread, instead of waiting behind other buffers' requests; an older one is still cancelled.
        hit = self.engine.cached(request, n)
        if hit is not None:
            with self._lock:
                older = self._latest.pop(buffer, None)
            if older is not None:
                older.cancel(f"superseded by a newer request for {buffer}")
            ticket.future.set_running_or_notify_cancel()
            ticket.future.set_result(hit)
            return ticket
        with self._lock:
            if self._closed:
                raise Cancelled("the completion service is shutting down")
            older = self._latest.get(buffer)
            self._latest[buffer] = ticket
            self._waiting.append(ticket)
            # Prefetches of this buffer: the user comes first. One for this very request is dropped
            # (this request computes it); one still ahead of the user (e.g. the line after) keeps
            # waiting, or is queued again if it was running; the others are stale.
            stale: list[Ticket] = []
            for waiting in [t for t in self._prefetching if t.buffer == buffer]:
                if not _ahead_of(waiting.request, request):
                    self._prefetching.remove(waiting)
                    stale.append(waiting)
            running = self._running
            if running is not None and running.prefetch and running.buffer == buffer:
                stale.append(running)
                if _ahead_of(running.request, request):
                    self._prefetching.appendleft(Ticket(running.request, buffer, running.n, prefetch=True))
            # Warms: this buffer's are done by this request; another buffer's running one makes way.
            warms = [t for t in self._warming if t.buffer == buffer]
            for waiting in warms:
                self._warming.remove(waiting)
            if running is not None and running.warm:
                if running.buffer == buffer:
                    stale.append(running)
                else:
                    running._yield.set()
            self._lock.notify()
        if older is not None:
            older.cancel(f"superseded by a newer request for {buffer}")
        for dropped in stale:
            dropped.cancel(f"a request for {buffer} came first")
        for dropped in warms:
            _drop(dropped, f"a request for {buffer} came first")
        return ticket

    def prefetch(self, requests, buffer: str, n: int | None = None) -> list[Ticket]:
        """Compute these requests' suggestions when the engine is idle, for the recent-results cache."""
        tickets = [Ticket(request, buffer, n, prefetch=True) for request in requests]
        with self._lock:
            if self._closed:
                return []
            self._prefetching.extend(tickets)
            self._lock.notify()
        return tickets

    def warm(self, request: CompletionRequest, buffer: str | None = None) -> Ticket:
        """Have the engine evaluate this buffer's prompt when it is idle (see the module's doc); the
        ticket's result is a WarmResult (`warm_result`)."""
        buffer = buffer or request.file or "default"
        ticket = Ticket(request, buffer, None, warm=True)
        with self._lock:
            if self._closed:
                reason = "the completion service is shutting down"
            elif buffer in self._latest:
                reason = f"a request for {buffer} is on its way"
            else:
                reason = ""
                older = [t for t in self._warming if t.buffer == buffer]
                for t in older:
                    self._warming.remove(t)
                self._warming.append(ticket)
                self._lock.notify()
        if reason:
            _drop(ticket, reason)
            return ticket
        for t in older:
            _drop(t, f"superseded by a newer warm of {buffer}")
        return ticket

    def close(self, timeout: float = WORKER_STOP.seconds) -> None:
        with self._lock:
            self._closed = True
            waiting = list(self._waiting) + list(self._prefetching)
            warms = list(self._warming)
            self._waiting.clear()
            self._prefetching.clear()
            self._warming.clear()
            self._lock.notify()
        for ticket in waiting:
            ticket.cancel("the completion service is shutting down")
        for ticket in warms:
            _drop(ticket, "the completion service is shutting down")
        for ticket in list(self._latest.values()):
            ticket.cancel("the completion service is shutting down")
        if threading.current_thread() is not self._worker:
            self._worker.join(timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._prefetching and not self._warming and not self._closed:
                    self._lock.wait()
                if self._closed and not self._waiting:
                    return
                queue = self._waiting or self._prefetching or self._warming
                ticket = queue.popleft()
                self._running = ticket
            try:
                if ticket.cancelled:
                    _drop(ticket, ticket.reason)
                    continue  # (the finally below still forgets it)
                # a warm that made way for a request was started before: its future runs already
                if not ticket.future.running() and not ticket.future.set_running_or_notify_cancel():
                    continue
                try:
                    if ticket.warm:
                        result = self.engine.warm(ticket.request, cancelled=ticket._stopping)
                    else:
                        result = self.engine.complete(ticket.request, n=ticket.n, cancelled=ticket._cancel.is_set)
                except Cancelled as exc:
                    if ticket.warm and ticket._yield.is_set() and not ticket.cancelled and self._again(ticket):
                        continue
                    ticket.future.set_exception(Cancelled(ticket.reason or str(exc)) if ticket.warm else exc)
                except BaseException as exc:  # every failure goes to the caller, the worker lives on
                    ticket.future.set_exception(exc)
                else:
                    ticket.future.set_result(result)
            finally:
                with self._lock:
                    self._running = None
                    if self._latest.get(ticket.buffer) is ticket:
                        del self._latest[ticket.buffer]


    def _again(self, warm: Ticket) -> bool:
        """Queue a warm that made way for a request first among the warms; False once closed."""
        with self._lock:
            if self._closed:
                return False
            warm._yield.clear()
            self._warming.appendleft(warm)
            self._lock.notify()
            return True


def _drop(ticket: Ticket, reason: str) -> None:
    """End a ticket no worker runs now: cancelled, its future told so even where it was started
    before (a warm that made way and was queued again)."""
    ticket.cancel(reason)  # a ticket never started ends here
    if ticket.future.running():
        ticket.future.set_exception(Cancelled(reason))


def warm_result(ticket: Ticket) -> WarmResult:
    """A warm ticket's outcome: the engine's WarmResult, or nothing warmed with why where the warm
    was dropped or cancelled. Another failure is raised."""
    try:
        return ticket.result(0)
    except Cancelled as exc:
        return WarmResult(0, ticket.reason or str(exc))


def _ahead_of(prefetched: CompletionRequest, request: CompletionRequest) -> bool:
    """Whether a prefetched request is still a place the user may reach from ``request``: further on
    in the same text, not the same place."""
    return (prefetched.suffix == request.suffix and len(prefetched.prefix) > len(request.prefix)
            and prefetched.prefix.startswith(request.prefix))
