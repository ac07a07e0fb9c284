"""Where a streamed candidate ends: the local model's stop rules, applied as the reply's text grows."""

from __future__ import annotations

from typing import Callable, Sequence

class Cutter:
    """What the local model applies while it generates, applied as the reply's text grows: the FIM
    stop texts (the local model stops on those tokens), then the engine's stop rule, called on the
    text so far one character at a time; the candidate ends where either first fires."""

    def __init__(self, stop: Callable[[str], int | None], stop_texts: Sequence[str]):
        self.stop = stop
        self.stop_texts = [t for t in stop_texts if t]
        self.text = ""
        self.keep: int | None = None  # the candidate is text[:keep] once it ended
        self.consumed = 0  # characters the model produced up to where the candidate ended
        self.finish: str | None = None

    def feed(self, piece: str) -> bool:
        """Add ``piece``; True once the candidate has ended (the rest of the reply is not needed)."""
        if self.keep is not None:
            return True
        start = len(self.text)
        self.text += piece
        hits = [i for i in (self.text.find(t) for t in self.stop_texts) if i >= 0]
        limit = min(hits) if hits else len(self.text)
        for end in range(start + 1, limit + 1):
            keep = self.stop(self.text[:end])
            if keep is not None:
                self.keep, self.consumed, self.finish = max(0, int(keep)), end, "stop"
                return True
        if hits:
            self.keep, self.consumed, self.finish = limit, limit, "eos"
            return True
        self.consumed = len(self.text)
        return False
