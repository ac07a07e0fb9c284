"""The symbols the code around a cursor refers to (read, never evaluated).

Locals (bound at the cursor, or anywhere in a form read around it), special forms, interop and
the symbol being typed are not references: what is left is what a REPL can tell the model about.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .cursor import CursorContext, names_bound_by
from .reader import Node, parse

__all__ = ["References", "references", "SYMBOL", "QUALIFIER", "SPECIAL_FORMS", "qualified"]

# A Clojure symbol as we accept it: optional `ns/` part, then a name; no delimiters, quotes,
# backslashes, whitespace, `;`, `@`, `^`, `~` or backticks anywhere.
_SYM_START = r"(?:[^\W\d]|[*+!\-_?<>=$&.|])"
_SYM_REST = r"[\w*+!\-_?<>=$&%.|'#]*"
SYMBOL = re.compile(rf"^(?:{_SYM_START}{_SYM_REST}/)?(?:/|{_SYM_START}{_SYM_REST})$")
QUALIFIER = re.compile(rf"^{_SYM_START}{_SYM_REST}$")

SPECIAL_FORMS = frozenset(
    ["def", "if", "do", "let*", "quote", "var", "fn*", "loop*", "recur", "throw", "try", "catch", "finally",
     "monitor-enter", "monitor-exit", "new", "set!", ".", "letfn*", "case*", "import*", "deftype*", "reify*", "&",
     "nil", "true", "false"]
)


@dataclass(frozen=True)
class References:
    """Symbols near the cursor, each once, closest first."""

    form: list[str] = field(default_factory=list)  # in the enclosing top-level form
    nearby: list[str] = field(default_factory=list)  # qualified ones in the forms around it


def references(text: str, cursor: CursorContext, nearby_chars: int, max_form: int, max_nearby: int) -> References:
    """The symbols the code around the cursor refers to, closest first: those in the enclosing
    top-level form, and the qualified ones in the forms around it."""
    offset = cursor.offset
    reach = nearby_chars
    top = cursor.top_level
    if top is not None:
        # an unclosed form (the usual state while typing) runs to the end of the text: end it
        # where the next form starting at column 0 begins
        j = text.find("\n(", offset, top[1])
        if j >= 0:
            top = (top[0], j)
    lo, hi = _window(text, offset, top, reach)
    source = text[lo:hi]
    nodes = parse(source)
    locals_: set[str] = set(cursor.locals)
    found: list[tuple[str, int]] = []
    for node in nodes:
        _walk(node, source, lo, found, locals_)
    best: dict[str, int] = {}
    in_form: dict[str, bool] = {}
    for sym, pos in found:
        if pos == cursor.symbol_start and cursor.symbol_prefix:
            continue  # the symbol being typed: partial
        if sym in locals_ or sym in SPECIAL_FORMS or sym.startswith("%") or not SYMBOL.match(sym):
            continue
        if sym.endswith(".") or (sym.startswith(".") and sym != ".."):
            continue  # interop
        distance = abs(pos - offset)
        inside = top is not None and top[0] <= pos < top[1]
        if sym not in best or distance < best[sym]:
            best[sym] = distance
        in_form[sym] = in_form.get(sym, False) or inside
    ordered = sorted(best, key=lambda s: best[s])
    form = [s for s in ordered if in_form[s]][:max_form]
    nearby = [s for s in ordered if not in_form[s] and qualified(s)][:max_nearby]
    return References(form, nearby)


def _window(text: str, offset: int, top: tuple[int, int] | None, reach: int) -> tuple[int, int]:
    """A span around the cursor that starts and ends at top-level form boundaries where it can."""
    if top is not None and top[0] >= offset - reach:
        j = text.find("\n(", max(0, offset - reach), top[0])
        lo = j + 1 if j >= 0 else top[0]
    else:
        lo = max(0, offset - reach)
        if lo > 0:
            j = text.find("\n(" if top is None else "\n", lo, offset)
            lo = j + 1 if j >= 0 else offset
    end = min(len(text), offset + reach)
    if top is not None and top[1] <= end:
        j = text.rfind("\n(", top[1], end)
        hi = j if j >= 0 and end < len(text) else (end if end == len(text) else top[1])
    else:
        j = text.rfind("\n", offset, end)
        hi = end if end == len(text) else (j if j >= 0 else end)
    return lo, max(lo, hi)


def _walk(node: Node, src: str, base: int, out: list[tuple[str, int]], locals_: set[str]) -> None:
    kind = node.kind
    if kind == "symbol":
        out.append((src[node.start:node.end], base + node.start))
        return
    if kind in ("quote", "string", "regex", "comment", "keyword", "number", "char"):
        return
    kids = node.children
    if kind in ("meta", "tagged") and len(kids) == 2:
        kids = kids[1:]  # the metadata / tag is not a reference
    if kind == "list" and kids and kids[0].kind == "symbol":
        head = src[kids[0].start:kids[0].end]
        if head.startswith(("clojure.core/", "cljs.core/")):
            head = head.partition("/")[2]
        # bound anywhere in the form: a conservative over-approximation of what is local here
        locals_.update(names_bound_by(node, src))
        if head.startswith("def") and len(kids) > 1:
            # the name being defined is not a reference
            for i, c in enumerate(kids):
                if i != 1:
                    _walk(c, src, base, out, locals_)
            return
    for c in kids:
        _walk(c, src, base, out, locals_)


def qualified(sym: str) -> bool:
    return "/" in sym[1:] and sym != "/"
