"""When the model stops generating a candidate: as soon as its forms are complete relative to
the suffix, that is when
  - it would close a delimiter opened in the prefix (the suffix already closes it), or
  - it reaches a line end with every form it opened closed, or
  - it starts repeating the suffix's next line.
What comes out is then shaped and checked by the verification stage (`cljassist.verify.structure`).
"""

from __future__ import annotations

from typing import Callable

from cljassist.clojure_text.gap import MIN_SUFFIX_ECHO, GapContext, ends_token
from cljassist.clojure_text.reader import scan

CLOSERS = ")]}"


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
            if gap.symbol_tail_only and in_code and ends_token(ch):
                return i  # finishing the symbol under the cursor: the rest of the line is already there
            if not ch.isspace():
                content = True
            echo = _suffix_echo_start(text[: i + 1], gap.suffix_first_line)
            if echo is not None:
                return echo
        seen.update(text=text, state=state, content=content)
        return None

    return stop


def _suffix_echo_start(text: str, suffix_line: str) -> int | None:
    """Where `text` starts repeating the suffix's next line in full, if it does."""
    if len(suffix_line) < MIN_SUFFIX_ECHO or not text.endswith(suffix_line):
        return None
    return len(text) - len(suffix_line)
