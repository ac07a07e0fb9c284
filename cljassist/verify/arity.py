"""Which calls a candidate's arity check judges (pure Python; the REPL side judges them).

After a candidate compiled, the REPL-side check (resources/repl_verify_check.clj) counts the
arguments of calls to known functions against the var's ``:arglists``. This module decides which
calls of the compiled text are the candidate's to answer for, and names them by the line and
column the Clojure reader gives the list (``:line``/``:column`` metadata, relative to the
compiled text), so the two sides agree without sending offsets the JVM cannot see.

Which calls are judged, and how:

- The text judged is the one that is compiled: prefix + candidate + suffix, so a call the
  candidate only partly writes is counted with the arguments the prefix and the suffix give it:
  ``(str/join `` + ``", " xs`` + ``)`` is ``(str/join ", " xs)``, two arguments.
- A call is judged only when the candidate changes its head or its number of arguments: the call
  lies within the candidate, or the candidate writes its head, one of its parens, or more than one
  argument. A call the candidate only writes inside one argument of (the user's own enclosing
  call) keeps its count, and the user's own code is not the candidate's to answer for.
- Too many arguments is judged for every such call: typing more cannot take arguments back.
  Too few only when the candidate writes the call's closing paren: a call the suffix closes may be
  one the user is writing line by line (``(reduce`` on one line, the ``fn`` on the next, the
  init and the collection after), and a candidate that ends at a line end is then a right first
  step, not a wrong call.
- A call the text leaves open, or under a quote or syntax quote, is not judged.

The REPL side judges on the forms after macroexpansion (a threading step's call is judged with
the argument the macro threads in; a macro call is no call, its expansion is walked; a name the
form or the cursor binds as a local is no call to the var), and only where two sources agree
that the count is wrong: the var's ``:arglists`` (documentation that can be written by hand: a
doc-style parameter ending in ``?`` counts as optional, one ending in ``*`` or ``+`` makes them
unreadable) and the function object's own arities (one ``invoke`` method per fixed arity, a
``RestFn``'s required arity). Where they disagree, the var is dynamic, or it is defined in the
file being edited (the REPL may hold an older definition), the call is not judged and a note
says why; the check passes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from cljassist.clojure_text.forms import is_quote
from cljassist.clojure_text.reader import Node

__all__ = ["JudgedCall", "judged_calls", "calls_edn"]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # the JVM's line reader counts each as one line


@dataclass(frozen=True)
class JudgedCall:
    line: int  # 1-based, in the compiled text
    column: int  # 1-based, in UTF-16 units as the JVM counts them: where the list's reader starts
    whole: bool  # the candidate closes the call: too few arguments is judged too


def judged_calls(forms: Iterable[Node], text: str, origin: int, span: tuple[int, int]) -> tuple[JudgedCall, ...]:
    """The calls in `forms` (nodes of `text`) that the candidate at `span` answers for, placed
    relative to `origin`, where the compiled text starts."""
    start, end = span
    found: list[JudgedCall] = []

    def visit(node: Node, read_at: int) -> None:
        if is_quote(node, text):
            return
        if node.kind in ("list", "fn") and node.closed and node.children and node.start < end and start < node.end:
            args = node.children[1:]
            if not any(a.start <= start and end <= a.end for a in args):
                # `#(f ...)` is read as the list after the `#`; metadata moves a list's position
                # to its `^`
                at = read_at + 1 if node.kind == "fn" else read_at
                line, column = _line_column(text, origin, at)
                found.append(JudgedCall(line, column, start < node.end <= end))
        last = node.children[-1] if node.children else None
        for child in node.children:
            visit(child, read_at if node.kind == "meta" and child is last else child.start)

    for form in forms:
        visit(form, form.start)
    return tuple(found)


def calls_edn(calls: Iterable[JudgedCall]) -> str:
    """The calls as the EDN map the REPL side reads: {[line column] whole?}."""
    return "{" + " ".join(f"[{c.line} {c.column}] {'true' if c.whole else 'false'}" for c in calls) + "}"


def _line_column(text: str, origin: int, offset: int) -> tuple[int, int]:
    lines = _LINE_BREAK.split(text[origin:offset])
    return len(lines), len(lines[-1].encode("utf-16-le")) // 2 + 1
