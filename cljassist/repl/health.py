"""Whether the user's REPL answers our tooling, remembered between requests.

A REPL that let one of our calls time out and then did not answer its interrupt either (a JVM
stopped with SIGSTOP, a machine swapping, a debugger holding every thread) is marked as not
answering. Requests then leave it out at once, saying since when, instead of each waiting out its
budget again. A probe (`describe`, the cheapest op every nREPL has) is sent in the background at
most every `budgets.REPL_PROBE_INTERVAL`; the first answer marks the REPL as answering again.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from cljassist.budgets import REPL_PROBE_INTERVAL
from cljassist.errors import ReplNotAnswering, ReplTimeout, ReplUnavailable

__all__ = ["ReplHealth"]


class ReplHealth:
    """`probe(timeout)` returns once the REPL answered a tiny request, raises ReplTimeout or
    ReplUnavailable otherwise. Shared by everything that uses one REPL connection."""

    def __init__(self, probe: Callable[[float], object], interval_s: float = REPL_PROBE_INTERVAL.seconds):
        self._probe = probe
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._since: float | None = None  # wall-clock time the REPL was marked, None while it answers
        self._prober: threading.Thread | None = None
        self._closed = threading.Event()
        self.probes = 0  # probes sent since the REPL was last marked (what the background did)

    @classmethod
    def probing(cls, client) -> "ReplHealth":
        """The health of the REPL behind `client` (a NreplClient), probed with its `describe`."""
        return cls(lambda timeout: client.describe(timeout=timeout))

    @property
    def answering(self) -> bool:
        return self._since is None

    @property
    def reason(self) -> str | None:
        """Why the REPL is left out now, as results show it; None while it answers."""
        since = self._since
        if since is None:
            return None
        return f"REPL not answering since {time.strftime('%H:%M:%S', time.localtime(since))}; retrying in the background"

    def check(self) -> None:
        """Raise ReplNotAnswering while the REPL is marked."""
        reason = self.reason
        if reason is not None:
            raise ReplNotAnswering(reason)

    def mark_not_answering(self) -> None:
        """The REPL did not answer: leave it out until a probe answers (probed in the background)."""
        with self._lock:
            if self._closed.is_set():
                return
            if self._since is None:
                self._since = time.time()
                self.probes = 0
            if self._prober is None:  # the prober clears it, under the lock, as it ends
                self._prober = threading.Thread(target=self._probe_until_answered, name="cljassist-repl-probe",
                                                daemon=True)
                self._prober.start()

    def close(self) -> None:
        """Stop probing (the connection is being closed)."""
        self._closed.set()
        prober = self._prober
        if prober is not None and prober is not threading.current_thread():
            prober.join(self.interval_s + 1)

    def _probe_until_answered(self) -> None:
        while not self._closed.is_set():
            started = time.monotonic()
            self.probes += 1
            try:
                self._probe(self.interval_s)
            except (ReplTimeout, ReplUnavailable):
                # a refused connection fails at once: wait out the interval before the next try
                self._closed.wait(max(0.0, self.interval_s - (time.monotonic() - started)))
                continue
            with self._lock:
                self._since, self._prober = None, None
            return
