"""Waiting in tests for something another thread or process does: poll a condition until it holds.

The timeout is only there so that a broken component fails its test instead of hanging the suite
on a loaded 2-core machine; no test asserts on how long the wait took."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")

WAIT_S = 60.0


def wait_until(condition: Callable[[], T], what: str, timeout: float = WAIT_S, interval: float = 0.02) -> T:
    """Call `condition` every `interval` seconds until it returns a true value, and return that value.
    After `timeout` seconds raise AssertionError naming `what` was awaited and for how long."""
    start = time.monotonic()
    while True:
        value = condition()
        if value:
            return value
        elapsed = time.monotonic() - start
        if elapsed >= timeout:
            raise AssertionError(f"timed out after {elapsed:.1f} s waiting for {what}")
        time.sleep(interval)
