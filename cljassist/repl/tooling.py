"""A session of our own on the user's nREPL, for the engine's context queries and checks.

We never evaluate in the user's session: its dynamic vars (`*ns*`, `*1`, `*e`, `*print-length*`)
are theirs. Each REPL-side part of the engine clones its own session and loads its helper code into
it. A session does not survive a reconnect (the server may have restarted), so the session is
cloned, and the helper loaded, again whenever the client's connection generation moved on.
"""

from __future__ import annotations

import threading
from typing import Callable

from cljassist.budgets import TOOLING_SETUP
from cljassist.errors import ReplTimeout, ReplUnavailable
from cljassist.repl.client import NreplClient


class ToolingSession:
    """``install(session)`` loads the helper into a fresh session; it raises to refuse the session."""

    def __init__(self, client: NreplClient, install: Callable[[str], None]):
        self.client = client
        self._install = install
        self._session: str | None = None
        self._generation: int | None = None
        self._lock = threading.RLock()

    def get(self) -> str:
        """The session for the current connection, cloned and set up when there is none yet."""
        with self._lock:
            if self._session is None or self._generation != self.client.connection_generation:
                self._session = None
                session = self.client.clone(timeout=TOOLING_SETUP.seconds)
                generation = self.client.connection_generation
                self._install(session)
                self._session, self._generation = session, generation
            return self._session

    def reinstall(self) -> None:
        """Load the helper again into the current session (something removed it)."""
        with self._lock:
            if self._session is not None:
                self._install(self._session)

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
        if session is not None:
            try:
                self.client.close_session(session, timeout=timeout_s)
            except (ReplUnavailable, ReplTimeout):
                pass
