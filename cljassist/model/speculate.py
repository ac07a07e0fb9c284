"""Speculative decoding's proposers: cheap guesses of the tokens that come next, which the model
then checks in one pass (cljassist/model/llama.py keeps a guess only where it is the token greedy
decoding picks there, so the output stays the model's own).

Two sources of guesses: prompt lookup (code repeats itself: where the last few tokens occurred
before, in the prompt or the text generated so far, what followed them then is guessed to follow
now) and a small draft model of the same tokenizer decoding greedily. Prompt lookup costs nothing,
so it is asked first, for a match of the longest n-gram only (a pass costs nearly as much per token
as one token alone here, and a shorter match guesses wrong too often to pay), and the draft model
where it has none.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import numpy as np

from cljassist.budgets import LOOKUP_NGRAM, SPECULATED_TOKENS


class Proposer(Protocol):
    """Guesses of the tokens after ``history`` (the prompt's tokens and the candidate's so far)."""

    def propose(self, history: Sequence[int], most: int, cancelled: Callable[[], bool] | None = None) -> list[int]:
        """At most ``most`` tokens guessed to follow ``history``; [] when there is no guess.
        ``cancelled``: the request's flag, polled by work that may take long (a draft model
        evaluating the prompt); once true, :class:`cljassist.errors.Cancelled` is raised."""
        ...


class PromptLookup:
    """The tokens that followed the latest earlier occurrence of ``history``'s last n tokens, the
    longest n (from ``longest`` down to ``shortest``) that occurred before."""

    def __init__(self, longest: int = LOOKUP_NGRAM.value, shortest: int = LOOKUP_NGRAM.value) -> None:
        self.longest, self.shortest = longest, shortest

    def propose(self, history: Sequence[int], most: int, cancelled: Callable[[], bool] | None = None) -> list[int]:
        if most <= 0:
            return []
        seq = np.asarray(history, dtype=np.int64)
        for n in range(min(self.longest, len(seq) - 1), self.shortest - 1, -1):
            tail = seq[len(seq) - n:]
            # every start of an earlier n-gram (the tail itself left out)
            windows = np.lib.stride_tricks.sliding_window_view(seq[:-1], n)
            starts = np.flatnonzero((windows == tail).all(axis=1))
            if starts.size:
                after = int(starts[-1]) + n
                return [int(t) for t in seq[after: after + most]]
        return []


class GreedyGuesser(Protocol):
    def guess_after(self, history: Sequence[int], most: int,
                    cancelled: Callable[[], bool] | None = None) -> list[int]: ...


class DraftModel:
    """A small model's greedy continuation (``guess_after``, which keeps its own evaluated context
    in step with the history between calls)."""

    def __init__(self, model: GreedyGuesser) -> None:
        self.model = model

    def propose(self, history: Sequence[int], most: int, cancelled: Callable[[], bool] | None = None) -> list[int]:
        return self.model.guess_after(history, most, cancelled)


class Speculation:
    """Prompt lookup where it has a match, else the draft model (when there is one); at most
    ``per_pass`` tokens a pass."""

    def __init__(self, draft: Proposer | None = None, per_pass: int = SPECULATED_TOKENS.value) -> None:
        self.lookup = PromptLookup()
        self.draft = draft
        self.per_pass = per_pass

    def propose(self, history: Sequence[int], most: int, cancelled: Callable[[], bool] | None = None) -> list[int]:
        most = min(most, self.per_pass)
        guessed = self.lookup.propose(history, most)
        if not guessed and self.draft is not None:
            guessed = self.draft.propose(history, most, cancelled)
        return guessed


__all__ = ["DraftModel", "PromptLookup", "Proposer", "Speculation"]
