"""One request's reading of the Clojure text around its cursor, done once and shared.

`analyze` reads the cursor (namespace, symbol being typed, enclosing forms, locals) up front, and
the gap (reader state at the cursor, the suffix's next line) when the stop rule first asks: every
request needs both, and they cost what one parse and one scan up to the cursor cost. What only some stages need is read when first asked
for and then kept: the symbols the code refers to (the REPL context, only with a REPL) and the
names the file defines (REPL verification, only with a REPL and candidates to check).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import cached_property

from .cursor import CursorContext, analyze_cursor
from .gap import GapContext
from .reader import _parse, unmeta
from .references import References, references

__all__ = ["Analysis", "analyze", "file_defs", "defn_params"]

_DEF_NAME = re.compile(
    r"^\((?:clojure\.core/)?(?P<head>def(?:n-?|macro|once|multi)?)[ \t\r\n,]+(?:\^[^\s(\[{]+[ \t\r\n,]+)*"
    r"(?P<name>[^\s()\[\]{}\"';@^`~\\,#][^\s()\[\]{}\"';@^`~\\,]*)",
    re.M,
)


def file_defs(*parts: str) -> tuple[str, ...]:
    """Names defined by forms at the start of a line in `parts` (simple names, first-seen order):
    a helper written above the cursor but not evaluated yet is the file's, not an unknown name."""
    names = dict.fromkeys(m.group("name") for part in parts for m in _DEF_NAME.finditer(part))
    return tuple(n for n in names if "/" not in n)


def defn_params(text: str, name: str) -> tuple[str, ...] | None:
    """The parameter vectors, as written, of the one ``(defn name ...)`` at the start of a line of
    `text`, one per arity; None when `text` defines `name` otherwise, more than once, or not."""
    starts = [(m.start(), m.group("head")) for m in _DEF_NAME.finditer(text) if m.group("name") == name]
    if len(starts) != 1 or starts[0][1] not in ("defn", "defn-"):
        return None
    source = text[starts[0][0]:]
    forms = _parse(source, False, None, lambda node: True)
    if not forms or forms[0].kind != "list" or not forms[0].closed:
        return None
    rest = [unmeta(c) for c in forms[0].children[2:]]
    while rest and rest[0].kind in ("string", "map"):  # docstring, attribute map
        rest.pop(0)
    if rest and rest[0].kind == "vector":
        vectors = [rest[0]]
    else:
        arities = [c for c in rest if c.kind == "list"]
        vectors = [unmeta(a.children[0]) for a in arities if a.children]
        if not arities or len(vectors) != len(arities) or any(v.kind != "vector" for v in vectors):
            return None
    return tuple(source[v.start:v.end] for v in vectors)


@dataclass(frozen=True, eq=False)
class Analysis:
    """The text around one cursor, as every stage of a request reads it."""

    prefix: str
    suffix: str
    text: str  # prefix + suffix
    cursor: CursorContext  # its namespace is the request's where the request names one
    _references: dict = field(default_factory=dict, repr=False)

    @classmethod
    def around(cls, text: str, cursor: CursorContext) -> "Analysis":
        """The analysis of `text` at a cursor already read (``analyze_cursor(text, offset)``)."""
        return cls(text[:cursor.offset], text[cursor.offset:], text, cursor)

    @cached_property
    def gap(self) -> GapContext:
        return GapContext.of(self.prefix, self.suffix)

    @property
    def namespace(self) -> str | None:
        return self.cursor.namespace

    @property
    def locals(self) -> tuple[str, ...]:
        return self.cursor.locals

    @cached_property
    def file_defs(self) -> tuple[str, ...]:
        return file_defs(self.prefix, self.suffix)

    def references(self, nearby_chars: int, max_form: int, max_nearby: int) -> References:
        """The symbols the code around the cursor refers to (see `references.references`)."""
        key = (nearby_chars, max_form, max_nearby)
        if key not in self._references:
            self._references[key] = references(self.text, self.cursor, nearby_chars, max_form, max_nearby)
        return self._references[key]


def analyze(prefix: str, suffix: str, namespace: str | None = None) -> Analysis:
    """Read the text around the cursor between `prefix` and `suffix`. `namespace` stands for the
    file's when the caller knows better (a text cut after its ns form)."""
    text = prefix + suffix
    cursor = analyze_cursor(text, len(prefix))
    if namespace and namespace != cursor.namespace:
        cursor = replace(cursor, namespace=namespace)
    return Analysis(prefix, suffix, text, cursor)
