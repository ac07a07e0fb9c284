"""Reading values off parsed forms, and writing Python strings as Clojure literals.

The parse tree of `cljassist.clojure_text.reader` keeps offsets, not values: these helpers turn a
node back into what the Clojure reader would make of it (a string's value, a form as `pr-str`
prints it, a def'd name's metadata), and a Python string into the literal that reads back as it.
"""

from __future__ import annotations

import re
from typing import Iterable

from .reader import Node, unmeta

__all__ = [
    "unmeta", "list_head", "is_quote", "string_value", "pr_form", "meta_private", "meta_entry", "meta_doc",
    "clj_string", "clj_strings",
]

_WS_RUN = re.compile(r"\s+")
_ESCAPED = re.compile(r"\\(.)")
_UNESCAPE = {"n": "\n", "t": "\t"}


def list_head(node: Node, text: str) -> str | None:
    """The symbol a list starts with, ``clojure.core/`` dropped; None for anything else."""
    if node.kind == "list" and node.children and node.children[0].kind == "symbol":
        head = text[node.children[0].start:node.children[0].end]
        return head[len("clojure.core/"):] if head.startswith("clojure.core/") else head
    return None


def is_quote(node: Node, text: str) -> bool:
    """`'x`, `` `x `` or `(quote x)`: what it holds is data, not code."""
    return node.kind in ("quote", "syntax-quote") or list_head(node, text) == "quote"


def string_value(node: Node, text: str) -> str:
    """The value of a string literal node (``\\n`` and ``\\t`` unescaped, other escapes kept as the
    character they escape)."""
    raw = text[node.start + 1:node.end - 1] if node.end - node.start >= 2 else ""
    return _ESCAPED.sub(lambda m: _UNESCAPE.get(m.group(1), m.group(1)), raw)


def pr_form(node: Node, text: str) -> str:
    """A form as Clojure's `pr-str` prints it back (read, *print-meta* false): single spaces,
    metadata and type hints dropped, map entries separated by commas."""
    k = node.kind
    if k == "meta" and node.children:
        return pr_form(node.children[-1], text)
    if k in ("vector", "list", "set", "map") and node.closed:
        opener, closer = {"vector": ("[", "]"), "list": ("(", ")"), "set": ("#{", "}"), "map": ("{", "}")}[k]
        parts = [pr_form(c, text) for c in node.children]
        if k == "map":
            parts = [" ".join(parts[i:i + 2]) for i in range(0, len(parts), 2)]
            return opener + ", ".join(parts) + closer
        return opener + " ".join(parts) + closer
    if k == "quote" and node.children:
        return "(quote " + pr_form(node.children[0], text) + ")"
    return _WS_RUN.sub(" ", text[node.start:node.end])


def meta_private(node: Node, text: str) -> bool:
    """Whether a def'd name carries ``^:private`` (or a metadata map mentioning it)."""
    while node.kind == "meta" and len(node.children) == 2:
        if ":private" in text[node.children[0].start:node.children[0].end]:
            return True
        node = node.children[1]
    return False


def meta_entry(node: Node, text: str, key: str) -> Node | None:
    """The value of `key` in a ``^{...}`` metadata map on a def'd name."""
    while node.kind == "meta" and len(node.children) == 2:
        m = node.children[0]
        if m.kind == "map":
            kids = m.children
            for i in range(0, len(kids) - 1, 2):
                if text[kids[i].start:kids[i].end] == key:
                    return kids[i + 1]
        node = node.children[1]
    return None


def meta_doc(node: Node, text: str) -> str:
    """The ``:doc`` string in a def'd name's metadata map ('' when none)."""
    value = meta_entry(node, text, ":doc")
    return string_value(value, text) if value is not None and value.kind == "string" else ""


def clj_string(s: str) -> str:
    """A Clojure (and EDN) string literal whose value is exactly `s` (never code).

    Inside a Clojure string only ``\\`` and ``"`` need escaping; newlines and any other character
    stand as themselves. A lone surrogate cannot travel as UTF-8, so it is written as Clojure's
    ``\\uXXXX`` escape, which rebuilds the same char."""
    out = s.replace("\\", "\\\\").replace('"', '\\"')
    if any("\ud800" <= ch <= "\udfff" for ch in out):
        out = "".join(f"\\u{ord(ch):04X}" if "\ud800" <= ch <= "\udfff" else ch for ch in out)
    return f'"{out}"'


def clj_strings(items: Iterable[str], opener: str = "[") -> str:
    """A vector (``[``) or set (``#{``) literal of string literals."""
    closer = "]" if opener == "[" else "}"
    return opener + " ".join(clj_string(x) for x in items) + closer
