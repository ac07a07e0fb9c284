"""A session of our own on the user's nREPL, for the engine's context queries and checks.

We never evaluate in the user's session: its dynamic vars (`*ns*`, `*1`, `*e`, `*print-length*`)
are theirs. Each REPL-side part of the engine clones its own session and loads its helper code into
it. A session does not survive a reconnect (the server may have restarted), so the session is
cloned, and the helper loaded, again whenever the client's connection generation moved on.

Every call is made within a request's `TimeBudget`: it waits what is left of it, less a part kept
for an interrupt. A call that times out is interrupted; a REPL that answers the interrupt is alive
(the call was slow), one that does not is marked as not answering (`repl.health`) and left out of
later requests until a probe answers. Either way the request makes no more REPL calls: they would
only wait behind the first. Setting a session up (once per connection) may take
`budgets.TOOLING_SETUP`; a session whose interrupted call may still hold it is replaced by a fresh
one at the next request, never within the request that timed out.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from cljassist.budgets import REPL_INTERRUPT_WAIT, TOOLING_SETUP, TimeBudget
from cljassist.errors import ReplTimeout, ReplUnavailable
from cljassist.repl.client import EvalResult, NreplClient, PendingRequest
from cljassist.repl.health import ReplHealth

_RESOURCES = Path(__file__).resolve().parents[1] / "resources"


def helper_source(resource: str) -> str:
    """The Clojure helper in ``cljassist/resources/<resource>`` as one line, so nREPL reports no
    misleading positions and each install sends less. Joining lines would let a `;` comment swallow
    the rest, so helper files hold none."""
    return " ".join((_RESOURCES / resource).read_text(encoding="utf-8").split())


class ToolingSession:
    """``install(session, budget)`` loads the helper into a fresh session; it raises to refuse it."""

    def __init__(self, client: NreplClient, install: Callable[[str, TimeBudget], None], health: ReplHealth):
        self.client = client
        self.health = health
        self._install = install
        self._session: str | None = None
        self._generation: int | None = None
        self._interrupt: PendingRequest | None = None  # sent after a call timed out, not yet settled
        self._lock = threading.RLock()

    def get(self, budget: TimeBudget) -> str:
        """The session for the current connection, cloned and set up when there is none yet."""
        with self._lock:
            self._settle_interrupt()
            if self._session is None or self._generation != self.client.connection_generation:
                self._session = None
                budget.at_least(TOOLING_SETUP.seconds)
                session = self._clone(budget)
                generation = self.client.connection_generation
                self._install(session, budget)
                self._session, self._generation = session, generation
            return self._session

    def eval(self, code: str, budget: TimeBudget, ns: str | None = None, session: str | None = None) -> EvalResult:
        """`code` evaluated on our session (or `session`, while setting it up) within what is left
        of `budget`. Raises ReplNotAnswering while the REPL is marked, ReplTimeout when the budget
        is spent or the call timed out, ReplUnavailable when the connection is gone."""
        self.health.check()
        _require_time(budget)
        with self._lock:
            session = session or self.get(budget)
            left = _require_time(budget)
            interrupt_wait = min(REPL_INTERRUPT_WAIT.seconds, left / 2)
            wait = left - interrupt_wait
            started = budget.now()
            try:
                return self.client.eval(code, session=session, ns=ns, timeout=wait)
            except ReplTimeout:
                reason = self._interrupt_after_timeout(session, wait, interrupt_wait)
                budget.end(reason)
                raise ReplTimeout(reason) from None
            finally:
                budget.charge_since(started)

    def reinstall(self, budget: TimeBudget) -> None:
        """Load the helper again into the current session (something removed it)."""
        with self._lock:
            if self._session is not None:
                self._install(self._session, budget)

    def is_current(self) -> bool:
        """Whether the session was made on the connection the client has now."""
        return self._session is not None and self._generation == self.client.connection_generation

    def drop(self) -> str | None:
        """Forget the session (the next `get` clones a new one); returns the one forgotten."""
        with self._lock:
            session, self._session = self._session, None
            return session

    def close(self, timeout_s: float) -> None:
        """Close the session on the server, if it still has it; REPL trouble here is not an error."""
        session = self.drop()
        if session is not None and self.health.answering:
            try:
                self.client.close_session(session, timeout=timeout_s)
            except (ReplUnavailable, ReplTimeout):
                pass

    # -- after a timeout -------------------------------------------------------------------------

    def _clone(self, budget: TimeBudget) -> str:
        wait = _require_time(budget)
        started = budget.now()
        try:
            return self.client.clone(timeout=wait)
        except ReplTimeout:
            self.health.mark_not_answering()
            reason = f"nREPL clone on {self.client.endpoint} got no reply within {wait:.1f}s"
            budget.end(reason)
            raise ReplTimeout(reason) from None
        finally:
            budget.charge_since(started)

    def _interrupt_after_timeout(self, session: str, waited: float, interrupt_wait: float) -> str:
        """Interrupt our call that timed out; mark the REPL when it does not answer. Returns what
        happened, as the result says it."""
        said = f"nREPL eval on {self.client.endpoint} got no reply within {waited:.1f}s"
        try:
            pending = self.client.send("interrupt", session=session)
        except ReplUnavailable as exc:
            return f"{said}; {exc}"
        self._interrupt = pending
        try:
            pending.result(interrupt_wait)
        except ReplTimeout:
            self.health.mark_not_answering()
            return f"{said}, nor to its interrupt within {interrupt_wait:.1f}s: left out until it answers again"
        except ReplUnavailable as exc:
            return f"{said}; {exc}"
        return f"{said}; interrupted"

    def _settle_interrupt(self) -> None:
        """A session whose interrupted call may still run in it is left behind for a fresh one."""
        pending, self._interrupt = self._interrupt, None
        if pending is None or self._session is None:
            return
        try:
            stopped = pending.done and "error" not in _statuses(pending.result(0))
        except (ReplTimeout, ReplUnavailable):
            stopped = False
        if not stopped:
            session, self._session = self._session, None
            try:
                self.client.send("close", session=session)  # not waited for: it answers when it can
            except ReplUnavailable:
                pass


def _require_time(budget: TimeBudget) -> float:
    left = budget.left()
    if left <= 0:
        raise ReplTimeout(budget.ended or f"the request's {budget.total:g}s of REPL time are spent")
    return left


def _statuses(replies: list[dict]) -> set[str]:
    return {s for reply in replies for s in reply.get("status", ())}
