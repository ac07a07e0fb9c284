"""One engine, many callers: a single worker thread owns the model (llama.cpp is not re-entrant),
requests wait in order, and a newer request for the same buffer cancels the older one, whether it
is still waiting or already running (the engine polls the cancel flag inside generation)."""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field

from cljassist.engine import CompletionRequest, CompletionResult
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

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop this request: at once when still waiting, within one prompt chunk or token when running."""
        if not self._cancel.is_set():
            self.reason = reason
            self._cancel.set()
        self.future.cancel()  # only takes while waiting; a running one sees the flag

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def result(self, timeout: float | None = None) -> CompletionResult:
        """The result; raises Cancelled (with the reason) when cancelled, TimeoutError on timeout."""
        try:
            return self.future.result(timeout)
        except CancelledError:
            raise Cancelled(self.reason or "cancelled") from None


class CompletionService:
    def __init__(self, engine) -> None:
        self.engine = engine
        self._lock = threading.Condition()
        self._waiting: deque[Ticket] = deque()
        self._latest: dict[str, Ticket] = {}
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="cljassist-engine", daemon=True)
        self._worker.start()

    def submit(self, request: CompletionRequest, buffer: str | None = None, n: int | None = None) -> Ticket:
        buffer = buffer or request.file or "default"
        ticket = Ticket(request, buffer, n)
        with self._lock:
            if self._closed:
                raise Cancelled("the completion service is shutting down")
            older = self._latest.get(buffer)
            self._latest[buffer] = ticket
            self._waiting.append(ticket)
            self._lock.notify()
        if older is not None:
            older.cancel(f"superseded by a newer request for {buffer}")
        return ticket

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._closed = True
            waiting = list(self._waiting)
            self._waiting.clear()
            self._lock.notify()
        for ticket in waiting:
            ticket.cancel("the completion service is shutting down")
        for ticket in list(self._latest.values()):
            ticket.cancel("the completion service is shutting down")
        if threading.current_thread() is not self._worker:
            self._worker.join(timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closed:
                    self._lock.wait()
                if not self._waiting:
                    return
                ticket = self._waiting.popleft()
            if ticket.cancelled or not ticket.future.set_running_or_notify_cancel():
                continue
            try:
                result = self.engine.complete(ticket.request, n=ticket.n, cancelled=ticket._cancel.is_set)
            except BaseException as exc:  # every failure goes to the caller, the worker lives on
                ticket.future.set_exception(exc)
            else:
                ticket.future.set_result(result)
            finally:
                with self._lock:
                    if self._latest.get(ticket.buffer) is ticket:
                        del self._latest[ticket.buffer]
