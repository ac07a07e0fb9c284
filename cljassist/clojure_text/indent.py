"""How far a new line is indented at a point in Clojure text (the common editor conventions)."""

from __future__ import annotations

from cljassist.clojure_text.reader import scan


def continuation_indent(text_before_cursor: str) -> str:
    """Spaces for a new line at the end of `text_before_cursor`: two past an open paren (body
    indentation), one past an open bracket or brace (element alignment), none inside a string."""
    state = scan(text_before_cursor)
    if not state.stack or state.mode in ("string", "regex"):
        return ""
    opener, offset = state.stack[-1]
    column = offset - (text_before_cursor.rfind("\n", 0, offset) + 1)
    return " " * (column + len(opener) + (1 if opener.endswith("(") else 0))
