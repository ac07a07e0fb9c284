"""What an auto-pairing editor holds after the cursor: the closers of everything the text before it
left open. The terminal prompt sends them as a request's suffix (a terminal does not pair
delimiters), and the typing benchmark rebuilds an auto-pairing editor's buffer with them."""

from __future__ import annotations

from cljassist.clojure_text.reader import ScanState, scan

__all__ = ["auto_paired_closers", "implied_closers"]

_CLOSER_OF = {"(": ")", "[": "]", "{": "}"}


def auto_paired_closers(state: ScanState) -> str:
    """The closers after the cursor, given the scan of the text before it: the quote of an open
    string or regex, then the closers of the open forms, innermost first. Inside a line comment they
    sit on the next line (paredit keeps them out of the comment)."""
    head = '"' if state.in_string else ("\n" if state.mode == "comment" else "")
    # openers are "(", "[", "{", "#(", "#{" (reader conditionals and namespaced maps push "(" / "{")
    return head + "".join(_CLOSER_OF[opener[-1]] for opener, _ in reversed(state.stack))


def implied_closers(text: str) -> str | None:
    """`auto_paired_closers` at the end of `text`; None right after a lone backslash (a character
    literal is being typed: nothing sensible follows yet)."""
    state = scan(text)
    if state.mode == "char":
        return None
    return auto_paired_closers(state)
