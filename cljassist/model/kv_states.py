"""Evaluated prompts kept aside, so that going back to a buffer does not evaluate its prompt again.

llama.cpp holds one evaluated context at a time. The local model (cljassist/model/llama.py) keeps
the prompts it evaluated before as copies of their KV cache (llama.cpp's per-sequence state), here,
bounded in number and bytes, the least recently used given up first.

Which kept prompt a new prompt starts from is decided on tokens alone, as llama-server picks a slot
for a request: the one that shares the longest token prefix with it. So no buffer id travels
through the pipeline: a buffer's prompt is that buffer's, whoever asks for it (two editors, many
clients of a daemon, a `warm` op ahead of the first keystroke).

Two prompts are taken to be one buffer's (:func:`continues`) when most of them is the same at the
start and at the end: typing changes the middle of a fill-in-the-middle prompt (the code before
the cursor grows, the code after it stays), another file changes nearly all of it. A prompt that
goes on from the evaluated one replaces it without a copy; one that does not sends the evaluated one
here first. A kept prompt that a newer one of the same buffer goes on from is dropped.

Copies, not llama.cpp sequences side by side in one cache: a pass attends over every cell in use
in the cache, so with four buffers' prompts in it each generated token would attend over all four,
while a copy costs only when the buffer changes. Measured here (SmolLM2 Q8_0, a 700-token prompt, 16 MB of KV cache):
llama_state_seq_get_data 14-17 ms, llama_state_seq_set_data 3 ms; llama-cpp-python's
save_state/load_state (the whole context, logits included) 30-100 ms and 31-460 ms; evaluating
that prompt 3 s.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from cljassist.budgets import KV_STATES, KV_STATES_MEMORY, SAME_BUFFER_SHARE


def common_prefix(a: Sequence[int], b: Sequence[int], most: int | None = None) -> int:
    """How many tokens ``a`` and ``b`` share from their start (at most ``most``)."""
    limit = min(len(a), len(b)) if most is None else max(0, min(len(a), len(b), most))
    if limit == 0:
        return 0
    x = np.asarray(a[:limit])
    y = np.asarray(b[:limit], dtype=x.dtype)
    differ = np.flatnonzero(x != y)
    return int(differ[0]) if differ.size else limit


def continues(old: Sequence[int], new: Sequence[int]) -> bool:
    """Whether the prompt ``new`` is ``old``'s buffer edited rather than another text: the tokens they
    share at the start, and after that at the end, make at least SAME_BUFFER_SHARE of the shorter."""
    shorter = min(len(old), len(new))
    if shorter == 0:
        return True
    start = common_prefix(old, new)
    end = common_prefix(np.asarray(old[start:])[::-1], np.asarray(new[start:])[::-1])
    return start + end >= SAME_BUFFER_SHARE.value * shorter


@dataclass(eq=False)
class KvState:
    """One evaluated prompt kept aside: its tokens, the KV cache after them (llama.cpp's state of
    one sequence), and the next-token logits after them where they were kept."""

    number: int  # which one, for reports ("kept 3")
    tokens: np.ndarray
    data: Any  # a ctypes byte array as llama_state_seq_get_data wrote it
    logits: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return len(self.data) + self.tokens.nbytes + (self.logits.nbytes if self.logits is not None else 0)


class KvStates:
    """Kept evaluated prompts, at most ``most`` of them and ``most_bytes`` in all, the least
    recently used given up first."""

    def __init__(self, most: int = KV_STATES.value, most_bytes: int = KV_STATES_MEMORY.value) -> None:
        self.most = max(0, int(most))
        self.most_bytes = max(0, int(most_bytes))
        self._kept: OrderedDict[int, KvState] = OrderedDict()  # least recently used first
        self.evicted = 0  # given up for the bounds, over this store's life

    def __len__(self) -> int:
        return len(self._kept)

    def __iter__(self) -> Iterator[KvState]:
        return iter(list(self._kept.values()))

    @property
    def nbytes(self) -> int:
        return sum(state.nbytes for state in self._kept.values())

    def fits(self, nbytes: int) -> bool:
        """Whether a state of ``nbytes`` could be kept at all (alone, within the bounds)."""
        return self.most > 0 and nbytes <= self.most_bytes

    def best(self, ids: Sequence[int], most: int | None = None) -> tuple[KvState | None, int]:
        """The kept state sharing the longest token prefix with ``ids`` (counted up to ``most``),
        and that length; (None, 0) when none shares a token."""
        found, shared = None, 0
        for state in reversed(self._kept.values()):  # on a tie, the most recent
            n = common_prefix(state.tokens, ids, most)
            if n > shared:
                found, shared = state, n
        return found, shared

    def keep(self, state: KvState) -> None:
        """Keep ``state`` as the most recent: the kept states of its buffer (which it goes on from)
        are dropped, then the least recently used ones while the bounds are passed."""
        for old in list(self._kept.values()):
            if continues(old.tokens, state.tokens):
                del self._kept[old.number]
        if not self.fits(state.nbytes):
            return
        self._kept[state.number] = state
        total = self.nbytes
        while len(self._kept) > self.most or total > self.most_bytes:
            _, oldest = self._kept.popitem(last=False)
            total -= oldest.nbytes
            self.evicted += 1

    def used(self, state: KvState) -> None:
        """``state`` was just used again: it is the most recent."""
        if state.number in self._kept:
            self._kept.move_to_end(state.number)

    def drop(self, state: KvState) -> None:
        self._kept.pop(state.number, None)

    def clear(self) -> None:
        self._kept.clear()


__all__ = ["KvState", "KvStates", "common_prefix", "continues"]
