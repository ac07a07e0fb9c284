"""The reader's view of a completion gap: what the stop rule and the candidate shaping need to
know about the text on both sides of the cursor, computed once per request."""

from __future__ import annotations

from dataclasses import dataclass

from .reader import ScanState, scan

__all__ = ["GapContext", "ends_token", "TOKEN_ENDS", "OPENER_CHARS", "MIN_SUFFIX_ECHO"]

TOKEN_ENDS = "()[]{}\",;`"
OPENER_CHARS = "([{"
# Shortest suffix repetition worth cutting: shorter ones collide with legitimate text (`x`, `)`).
MIN_SUFFIX_ECHO = 3


@dataclass(frozen=True)
class GapContext:
    """What the stop rules need to know about the gap, computed once per request."""

    prefix_state: ScanState  # reader state at the end of the prefix
    suffix_first_line: str  # next non-blank line of the suffix, stripped ('' if none)
    starts_after_space: bool  # prefix ends in whitespace or an opener: no leading space wanted
    symbol_tail_only: bool = False  # cursor inside a symbol with code after it on the line

    @classmethod
    def of(cls, prefix: str, suffix: str) -> "GapContext":
        rest_of_line, _, _ = suffix.partition("\n")
        first_line = rest_of_line.strip() or next((l.strip() for l in suffix.splitlines() if l.strip()), "")
        state = scan(prefix)
        return cls(
            prefix_state=state,
            suffix_first_line=first_line,
            starts_after_space=(not prefix) or prefix[-1].isspace() or prefix[-1] in OPENER_CHARS,
            symbol_tail_only=(
                state.mode == "code" and bool(prefix) and not ends_token(prefix[-1]) and bool(rest_of_line.strip())
            ),
        )

    @property
    def base_depth(self) -> int:
        return len(self.prefix_state.stack)


def ends_token(ch: str) -> bool:
    """Characters that end a symbol or keyword token."""
    return ch.isspace() or ch in TOKEN_ENDS
