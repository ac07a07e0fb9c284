"""Candidate shaping: when to stop generating, and how to turn raw model text into a suggestion.

A suggestion must keep the file balanced: prefix + suggestion + suffix may never be less balanced
than prefix + suffix (measured by `imbalance`). Generation stops as soon as the candidate's forms
are complete relative to the suffix:
  - it would close a delimiter opened in the prefix (the suffix already closes it), or
  - it reaches a line end with every form it opened closed, or
  - it starts repeating the suffix's next line.
Whatever comes out is then trimmed, cut back to its last complete form if it was cut short, and
dropped if it still cannot be made balanced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from cljassist.clojure_text.reader import ScanState, imbalance, scan

CLOSERS = ")]}"
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
                state.mode == "code" and bool(prefix) and not _ends_token(prefix[-1]) and bool(rest_of_line.strip())
            ),
        )

    @property
    def base_depth(self) -> int:
        return len(self.prefix_state.stack)


def make_stop_rule(gap: GapContext) -> Callable[[str], int | None]:
    """A stop callback for the model: given the text so far, the length to keep, or None to go on.

    It scans incrementally, remembering the reader state of what it has already seen.
    """
    seen = {"text": "", "state": gap.prefix_state, "content": False}

    def stop(text: str) -> int | None:
        if not text.startswith(seen["text"]):  # a different branch: rescan from the gap
            seen.update(text="", state=gap.prefix_state, content=False)
        state, content = seen["state"], seen["content"]
        for i in range(len(seen["text"]), len(text)):
            ch = text[i]
            before = state
            state = scan(ch, before)
            if before.mode != "code" and before.mode == gap.prefix_state.mode and state.mode == "code":
                return i  # the gap was inside a string/comment and this char ends it: the suffix has it
            in_code = before.mode == "code"
            if in_code and ch in CLOSERS and (
                len(state.stack) < gap.base_depth or state.unmatched_closers > before.unmatched_closers
            ):
                return i  # closes something the suffix closes: the candidate ends before it
            if ch == "\n" and state.mode == "code" and len(state.stack) == gap.base_depth and content:
                return i  # a complete line of complete forms
            if gap.symbol_tail_only and in_code and _ends_token(ch):
                return i  # finishing the symbol under the cursor: the rest of the line is already there
            if not ch.isspace():
                content = True
            echo = _suffix_echo_start(text[: i + 1], gap.suffix_first_line)
            if echo is not None:
                return echo
        seen.update(text=text, state=state, content=content)
        return None

    return stop


def _ends_token(ch: str) -> bool:
    """Characters that end a symbol or keyword token."""
    return ch.isspace() or ch in TOKEN_ENDS


def _suffix_echo_start(text: str, suffix_line: str) -> int | None:
    """Where `text` starts repeating the suffix's next line in full, if it does."""
    if len(suffix_line) < MIN_SUFFIX_ECHO or not text.endswith(suffix_line):
        return None
    return len(text) - len(suffix_line)


@dataclass(frozen=True)
class Shaped:
    text: str
    balanced: bool  # prefix + text + suffix is no less balanced than prefix + suffix
    notes: tuple[str, ...] = ()


def shape_candidate(raw: str, prefix: str, suffix: str, gap: GapContext) -> Shaped:
    """Trim, drop the suffix echo, cut back to complete forms, and check the balance invariant."""
    notes: list[str] = []
    text = _remove_suffix_overlap(raw, suffix, gap)
    if text != raw:
        notes.append("removed text repeating the suffix")
    text = text.rstrip()
    if gap.starts_after_space:
        text = text.lstrip()
    complete = _cut_to_complete_forms(text, gap)
    if complete != text:
        notes.append("cut to complete forms")
    text = complete
    if not text.strip():
        return Shaped("", False, tuple(notes + ["empty"]))
    ok = imbalance(prefix + text + suffix) <= imbalance(prefix + suffix)
    return Shaped(text, ok, tuple(notes))


def _remove_suffix_overlap(text: str, suffix: str, gap: GapContext) -> str:
    """Drop a tail of `text` that the suffix already starts with (ignoring leading whitespace).

    Only tails of at least MIN_SUFFIX_ECHO non-blank characters count, or a tail that is the whole
    remainder of the suffix, and only where what stays is complete forms: `(inc x)` before a
    suffix `)` keeps its own paren.
    """
    head = suffix.lstrip()
    if not head or not text:
        return text
    for start in range(len(text)):
        tail = text[start:].strip()
        if not tail:
            break
        if head.startswith(tail) and (len(tail) >= MIN_SUFFIX_ECHO or tail == head.strip()):
            kept = scan(text[:start], gap.prefix_state)
            if kept.mode == "code" and len(kept.stack) == gap.base_depth:
                return text[:start]
    return text


def _cut_to_complete_forms(text: str, gap: GapContext) -> str:
    """If the text leaves a form of its own open (generation ran out), keep its complete part."""
    state = scan(text, gap.prefix_state)
    if state.mode == "code" and len(state.stack) <= gap.base_depth:
        return text
    last_complete = 0
    state = gap.prefix_state
    for i, ch in enumerate(text):
        state = scan(ch, state)
        if state.mode == "code" and len(state.stack) == gap.base_depth and not ch.isspace():
            last_complete = i + 1
    return text[:last_complete].rstrip()
