"""Evaluating the user's code on nREPL: a session of its own, output streamed as it arrives, interrupts.

`Evaluator` evaluates on a session of its own (cloned; never the engine's tooling sessions).
Output, errors and values are handed to callbacks as the replies stream in; Ctrl-C (or `interrupt()`
from another thread) sends nREPL `interrupt` for that session. A lost connection is re-established
on the next input with a fresh session. The terminal prompt (`cljassist repl`) evaluates with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from cljassist.budgets import REPL_SESSION_CLOSE, REPL_SESSION_OP, TERMINAL_INTERRUPT_GRACE
from cljassist.errors import ReplTimeout, ReplUnavailable

__all__ = ["DEFAULT_NAMESPACE", "EvalOutcome", "Evaluator"]

DEFAULT_NAMESPACE = "user"  # where a freshly cloned nREPL session starts


_INTERRUPT_RETRY_S = 0.05  # between interrupts of an eval that has not started yet


@dataclass
class EvalOutcome:
    """One evaluation, folded: values in order, the namespace after it, the exception class (or
    other failure) if any, whether it was interrupted, and notices for the user."""

    values: list[str] = field(default_factory=list)
    ns: str | None = None
    error: str | None = None
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


class Evaluator:
    """Evaluates on its own nREPL session; see the module docstring."""

    def __init__(self, client, session: str | None = None,
                 interrupt_grace_s: float = TERMINAL_INTERRUPT_GRACE.seconds) -> None:
        self.client = client
        self.session = session if session is not None else client.clone()
        self.ns = DEFAULT_NAMESPACE
        self.interrupt_grace_s = interrupt_grace_s  # how long an interrupted eval may take to stop
        self._running = None  # the PendingRequest of the eval in progress
        self._interrupted_at: float | None = None

    def eval(self, code: str, on_out: Callable[[str], None] | None = None,
             on_err: Callable[[str], None] | None = None, on_value: Callable[[str], None] | None = None,
             on_interrupt: Callable[[], None] | None = None, poll_s: float = 0.05) -> EvalOutcome:
        """Evaluate `code` (any number of forms) and wait for it, however long it runs; Ctrl-C in
        this thread interrupts it (`on_interrupt` is told first). Raises ReplUnavailable when the
        REPL cannot be reached."""
        outcome = EvalOutcome(ns=self.ns)
        note = self.ensure_session()
        if note:
            outcome.ns = self.ns
            outcome.notes.append(note)
        pending = self.client.send("eval", code=code, session=self.session)
        self._interrupted_at = None
        self._running = pending
        stream = _ReplyStream(pending, outcome, on_out, on_err, on_value)
        try:
            while True:
                try:
                    finished = _wait_done(pending, poll_s)
                except KeyboardInterrupt:
                    if self._interrupted_at is not None:  # a second Ctrl-C: stop waiting
                        outcome.interrupted = True
                        outcome.error = "stopped waiting; the evaluation may still be running in the REPL"
                        break
                    if on_interrupt is not None:
                        on_interrupt()
                    self.interrupt()
                    continue
                finally:
                    stream.drain()
                if finished:
                    break
                if (self._interrupted_at is not None
                        and time.monotonic() - self._interrupted_at > self.interrupt_grace_s):
                    outcome.interrupted = True
                    outcome.error = (f"the evaluation did not stop within {self.interrupt_grace_s:g}s "
                                     "of the interrupt; it may still be running in the REPL")
                    break
        finally:
            self._running = None
        if outcome.ns:
            self.ns = outcome.ns
        return outcome

    def interrupt(self) -> bool:
        """Ask the REPL to interrupt the eval in progress (safe from any thread). False when
        nothing is running or the request could not be sent."""
        pending = self._running
        if pending is None or pending.done:
            return False
        self._interrupted_at = time.monotonic()
        # An eval sent a moment ago may not have started in the REPL yet (a busy machine): nREPL then
        # answers that the session is idle and forgets the interrupt, so it is asked again until the
        # eval is running or done, for as long as an interrupted eval is given to stop.
        while True:
            try:
                status = self.client.interrupt(self.session, interrupt_id=pending.id, timeout=REPL_SESSION_OP.seconds)
            except (ReplUnavailable, ReplTimeout):
                return False
            not_started = bool(status & {"session-idle", "interrupt-id-mismatch"})
            if not not_started or pending.done or time.monotonic() - self._interrupted_at > self.interrupt_grace_s:
                return True
            time.sleep(_INTERRUPT_RETRY_S)

    def close(self) -> None:
        try:
            self.client.close_session(self.session, timeout=REPL_SESSION_CLOSE.seconds)
        except (ReplUnavailable, ReplTimeout):
            pass

    def ensure_session(self) -> str | None:
        """After a lost connection the old session is gone with it: clone a fresh one (this is also
        what reconnects). Returns a notice for the user when it did, since the old session's
        bindings and current namespace are gone; ReplUnavailable while the REPL is unreachable."""
        if self.client.connected and self.session in self.client.sessions:
            return None
        self.session = self.client.clone(timeout=REPL_SESSION_OP.seconds)
        self.ns = DEFAULT_NAMESPACE
        return (f"reconnected to nREPL at {self.client.endpoint}: a new session, in {DEFAULT_NAMESPACE} "
                "(the old session's bindings are gone)")


def _wait_done(pending, timeout: float) -> bool:
    """True once the request is done; False after `timeout`. ReplUnavailable if the connection died."""
    try:
        pending.result(timeout)
    except ReplTimeout:
        return False
    return True


class _ReplyStream:
    """Hands each new reply of a running eval to the callbacks, in arrival order."""

    def __init__(self, pending, outcome: EvalOutcome, on_out, on_err, on_value) -> None:
        self.pending = pending
        self.outcome = outcome
        self.on_out, self.on_err, self.on_value = on_out, on_err, on_value
        self.seen = 0

    def drain(self) -> None:
        for reply in self.pending.replies_so_far(self.seen):
            self._handle(reply)
            self.seen += 1

    def _handle(self, reply: dict) -> None:
        outcome = self.outcome
        if "out" in reply and self.on_out:
            self.on_out(reply["out"])
        if "err" in reply and self.on_err:
            self.on_err(reply["err"])
        if "value" in reply:
            outcome.values.append(reply["value"])
            if self.on_value:
                self.on_value(reply["value"])
        if reply.get("ns"):
            outcome.ns = reply["ns"]
        if reply.get("ex"):
            outcome.error = reply["ex"].removeprefix("class ")
        status = set(reply.get("status", ()))
        if "interrupted" in status:
            outcome.interrupted = True
        if "namespace-not-found" in status:
            outcome.error = f"namespace {outcome.ns} not found"
        elif "error" in status and not outcome.error:
            outcome.error = f"nREPL error: {', '.join(sorted(status - {'done', 'error'})) or 'unknown'}"
