"""Structural verification: a suggestion must keep the file balanced.

prefix + suggestion + suffix may never be less balanced than prefix + suffix (measured by
`imbalance`). The model's raw text is trimmed, freed of a tail the suffix already has, cut back to
its last complete form if generation ended mid-form, and marked unbalanced if it still cannot keep
the invariant.
"""

from __future__ import annotations

from dataclasses import dataclass

from cljassist.clojure_text.gap import MIN_SUFFIX_ECHO, GapContext
from cljassist.clojure_text.reader import imbalance, scan

__all__ = ["Shaped", "shape_candidate"]


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
