"""Token healing: the model never reads a prompt that ends in the middle of a token.

BPE vocabularies of the GPT-2 family (Qwen2.5-Coder's, SmolLM2's) join a space to the word after
it (`` (``, `` xs``) and keep the indentation of a line minus its last space as a token of its own.
So code that goes on after ``(for [i `` is tokenized ``i``, `` (``, ``range``, never ``i``, `` ``,
``(range``; and after ``str/split-lines\\n       `` the real file continues ``\\n      ``, `` (``,
``map``. A prompt cut at the cursor ends with a token (`` `` or ``\\n       ``) that the model has
rarely seen followed by anything, and it answers as if the space, or the paren the user has not
typed yet, were not wanted: ``range (count xs)`` for ``(range (count xs))``. Inside a symbol
(``str/jo``) the prompt ends with a piece of a word (``jo``) where the model knows the whole word
(``join``) as one token.

The fix: back off the end of everything the model reads before the gap to a token boundary that
does not cut a token, and let the generation reproduce the backed-off text first, through any
tokens that match it (one token that covers it and goes on, such as `` (``, is the point).

Which tokens to back off, from the tokenizer's own facts: the last token is backed off when its
text is the start of a longer token of the vocabulary, because then what the user types next may
merge with it (`` `` into `` (``, ``jo`` into ``join``, ``\\n`` into ``\\n  ``); the last two are backed
off when their text together is such a start (``/`` and ``jo`` of ``/join``, where a vocabulary
has it). Two at most: a longer back-off makes the first generated tokens re-type what the user
typed, at the cost of a token each, for merges no vocabulary here makes. A last token that no
longer token starts with (``))]``, ``(defn``, a closing ``"`` in most vocabularies) is a clean
boundary and stays. Of a whitespace run that goes, the start that real code keeps as tokens of
its own stays (:func:`start_kept`): only the last space is backed off. Not of a piece of a symbol:
that goes on with more of the symbol, not with the code the probe stands for.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Callable, Iterable, Sequence

import numpy as np

# how many of the prompt's last tokens may be backed off (see the module docstring)
MOST_TOKENS_BACKED_OFF = 2
# what code most often goes on with, in Clojure: the probe for how real code splits a backed-off text
NEXT_CODE = "("


def tokens_to_back_off(last_pieces: Sequence[bytes], can_grow: Callable[[bytes], bool],
                       most: int = MOST_TOKENS_BACKED_OFF) -> int:
    """How many of the last tokens (their texts, in order, ``last_pieces``) to back off: the most,
    up to ``most``, whose joint text ``can_grow`` into a longer token; 0 when none does. A token
    without text (a control token) is a boundary nothing merges across."""
    for k in range(min(most, len(last_pieces)), 0, -1):
        tail = last_pieces[len(last_pieces) - k:]
        if all(tail) and can_grow(b"".join(tail)):
            return k
    return 0


def start_kept(backed_off: bytes, pieces_going_on: Sequence[bytes]) -> int:
    """How many bytes at the start of ``backed_off`` real code keeps as tokens of their own:
    ``pieces_going_on`` is the tokenization of the backed-off text followed by code
    (:data:`NEXT_CODE`), and its leading tokens that end before the backed-off text does are
    where real code splits it too. A whitespace run is the case: at the end of a prompt
    ``\n  `` is one token, but code goes on ``\n `` + `` (``; backing off only the last space
    lets the generation start the way real code does (the constraint holding it to ``\n  ``
    let the model pick the lone ``  `` token, after which it wrote a third space)."""
    kept = 0
    for piece in pieces_going_on:
        if kept + len(piece) >= len(backed_off) or not backed_off.startswith(piece, kept):
            break
        kept += len(piece)
    return kept


class VocabularyIndex:
    """A vocabulary's token texts (bytes) sorted, to find by bisection the tokens that start with a
    text, and the ones that a text starts with."""

    def __init__(self, pieces: Sequence[bytes], excluded: Iterable[int] = ()):
        """``pieces[i]``: the text of token i; ``excluded`` ids (end-of-generation, control) and
        tokens without text are never offered."""
        skip = set(excluded)
        entries = sorted((piece, i) for i, piece in enumerate(pieces) if piece and i not in skip)
        self._sorted = [piece for piece, _ in entries]
        self._ids = np.fromiter((i for _, i in entries), dtype=np.int64, count=len(entries))
        self._exact: dict[bytes, list[int]] = {}
        for piece, i in entries:
            self._exact.setdefault(piece, []).append(i)

    def _starting_with(self, text: bytes) -> tuple[int, int]:
        """The range of sorted positions whose text starts with ``text``."""
        lo = bisect_left(self._sorted, text)
        stripped = text.rstrip(b"\xff")
        if not stripped:
            return lo, len(self._sorted)
        # the texts that start with `text` sort below `text` with its last byte short of 0xff raised
        return lo, bisect_left(self._sorted, stripped[:-1] + bytes([stripped[-1] + 1]), lo)

    def can_grow(self, text: bytes) -> bool:
        """Whether some token is longer than ``text`` and starts with it."""
        lo, hi = self._starting_with(text)
        return hi - lo > len(self._exact.get(text, ()))

    def allowed(self, remaining: bytes) -> np.ndarray:
        """The ids that may come next while ``remaining`` is still to be reproduced: a token whose
        text is a start of ``remaining`` (more tokens follow), or one that starts with all of it
        (it covers the rest and goes on)."""
        lo, hi = self._starting_with(remaining)
        covering = self._ids[lo:hi]
        partial = [i for end in range(1, len(remaining)) for i in self._exact.get(remaining[:end], ())]
        if not partial:
            return covering
        return np.concatenate([np.asarray(partial, dtype=np.int64), covering])


__all__ = ["tokens_to_back_off", "start_kept", "VocabularyIndex", "MOST_TOKENS_BACKED_OFF", "NEXT_CODE"]
