"""A small progress bar on stderr, for the few long steps a user waits on (building the training
corpus, assembling a model): redrawn in place on a terminal, plain lines when stderr is a file
or a pipe, so logs stay readable."""

from __future__ import annotations

import sys
from typing import TextIO


class Progress:
    """A small progress bar on stderr: redrawn in place on a TTY, one line per step otherwise."""

    def __init__(self, total: int, unit: str = "packages", stream: TextIO | None = None,
                 width: int = 30, tty: bool | None = None):
        self.total, self.unit, self.width = total, unit, width
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.done = 0
        self._last_len = 0

    def update(self, label: str, done: int | None = None, note: str = "") -> None:
        self.done = self.done + 1 if done is None else done
        if self.tty:
            filled = int(self.width * self.done / self.total) if self.total else self.width
            line = f"[{'#' * filled}{' ' * (self.width - filled)}] {self.done}/{self.total} {self.unit}  {label}"
            pad = max(0, self._last_len - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._last_len = len(line)
        else:
            self.stream.write(f"{self.done}/{self.total} {self.unit}  {label}{'  ' + note if note else ''}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._last_len:
            self.stream.write("\n")
            self.stream.flush()
