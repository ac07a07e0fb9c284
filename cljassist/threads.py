"""How many CPU threads the model (llama.cpp) and the trainer (torch) use unless told otherwise."""

from __future__ import annotations

import os


def default_threads() -> int:
    """One core less than the process may use (at least 1).

    The editor and the Clojure REPL run beside us, and both llama.cpp and torch spin on thread
    barriers: on a busy 2-core laptop, asking for every core made prompt evaluation 2-3x slower and
    far less steady than one thread, and a training step 20x slower.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, n - 1)
