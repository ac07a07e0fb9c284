"""A reader-level Clojure scanner and parser (no evaluation), in pure Python.

Two layers:

* `scan()` tracks only what an editor needs on every keystroke: the stack of open delimiters,
  whether the text ends inside a string / regex / comment / char literal, and how many closers
  matched nothing. It is resumable: ``scan(b, scan(a)) == scan(a + b)``.
* `parse()` builds a tree of `Node`s (one per form) following the rules of Clojure's
  `LispReader`: strings, chars (``\\)``, ``\\;``, ``\\newline``, ``\\u03BB``...), comments (``;``
  and ``#!``), regexes, ``#_`` discards (stacked ones too), metadata (``^`` and ``#^``), reader
  conditionals, tagged literals, ``##Inf``, quote / syntax-quote / unquote / deref / var,
  ``#(...)``, ``#{...}``, ``#:ns{...}`` / ``#::{...}`` and keywords.

Everything is driven by a handful of compiled regular expressions whose repetitions are all
possessive (Python 3.11), so lexing is linear in the length of the text; the Python-level loop
runs once per lexeme (``parse``) or once per delimiter (``scan``).

Node kinds
----------
Collections (``children`` are the element forms, discards and comments left out):
    ``list`` ``(...)``, ``vector`` ``[...]``, ``map`` ``{...}``, ``set`` ``#{...}``,
    ``fn`` ``#(...)``, ``reader-cond`` ``#?(...)``, ``reader-cond-splicing`` ``#?@(...)``,
    ``namespaced-map`` ``#:ns{...}`` / ``#::{...}`` / ``#::alias{...}`` (children are the map's
    elements; the namespace part is ``text[node.start:...]`` up to the ``{``).
Leaves (no children):
    ``symbol`` (also ``nil``/``true``/``false`` and ``%``-args), ``keyword``, ``number``,
    ``string``, ``char``, ``regex``, ``symbolic`` (``##Inf``), ``comment`` (only with
    ``include_trivia``), ``invalid`` (a lone ``#``, ``#<...``, ``#!`` is a comment).
Prefix forms (``children`` hold the forms they apply to):
    ``quote`` ``'x``, ``syntax-quote`` `` `x ``, ``unquote`` ``~x``, ``unquote-splicing``
    ``~@x``, ``deref`` ``@x``, ``var`` ``#'x`` -> (x,);
    ``meta`` ``^m x`` / ``#^m x`` -> (m, x);
    ``tagged`` ``#tag x`` -> (symbol tag, x) (the tag symbol node excludes the ``#``);
    ``eval`` ``#=x`` -> (x,) (a read error when ``*read-eval*`` is false, see `syntax_errors`);
    ``discard`` ``#_x`` -> (x,) (only with ``include_trivia``).
A prefix form whose target is missing (file ends, or a closer follows) has ``closed=False``
and fewer children.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "Node",
    "ScanState",
    "parse",
    "top_level_forms",
    "scan",
    "imbalance",
    "is_balanced",
    "file_namespace",
    "syntax_errors",
    "node_text",
    "is_whitespace",
    "COLLECTION_KINDS",
    "PREFIX_KINDS",
]

# ----------------------------------------------------------------------------------------------
# Character classes (Java's Character.isWhitespace plus the comma; Clojure's macro characters)

_WS_CHARS = " \t\n\x0b\f\r\x1c\x1d\x1e\x1f,\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2008\u2009\u200a\u2028\u2029\u205f\u3000"
_WS = "[" + re.escape(_WS_CHARS) + "]"
_WS_SET = frozenset(_WS_CHARS)
# Terminating macro characters end a token; '#', "'" and '%' are macros that do not.
_TERM_CHARS = '";@^`~()[]{}\\'
_TOK = "[^" + re.escape(_WS_CHARS + _TERM_CHARS) + "]"  # a char that continues a token
_NUM = "[^" + re.escape(_WS_CHARS + _TERM_CHARS + "#'%") + "]"  # a char that continues a number


def is_whitespace(ch: str) -> bool:
    """Clojure's notion of whitespace (Java's Character.isWhitespace, plus ',')."""
    return ch in _WS_SET


_STR_BODY = r'(?:[^"\\]++|\\[\s\S])*+'
_TOK_START = "[^#'+\\-\\d" + re.escape(_WS_CHARS + _TERM_CHARS) + "]"  # a token, not a number
_LINE_REST = r"[^\n\r]*+"

# ----------------------------------------------------------------------------------------------
# scan(): one regex match per delimiter; everything between delimiters is skipped inside the
# regex engine. Each "boring" lexeme is required to be complete (not touching the end of the
# text), so that whatever is pending at the end is matched by the tail alternatives instead.

_SCAN_RE = re.compile(
    rf"""
    (?:
        {_WS}++
      | "{_STR_BODY}"
      | \#"{_STR_BODY}"
      | ;{_LINE_REST}(?!\Z)
      | \#!{_LINE_REST}(?!\Z)
      | \\[\s\S]{_TOK}*+(?!\Z)
      | [+-]?\d{_NUM}*+(?!\Z)
      | [^\#'{re.escape(_WS_CHARS + _TERM_CHARS)}]{_TOK}*+(?!\Z)
      | \#[_'^=]
      | \#\?@?
      | \#(?![({{"!_'^=?]){_TOK}*+(?!\Z)
      | [`~@^']
    )*+
    (?:
        ([(\[{{]|\#[({{])
      | ([)\]}}])
      | (?:
            (?P<string>"{_STR_BODY}\\?)
          | (?P<regex>\#"{_STR_BODY}\\?)
          | (?P<comment>;{_LINE_REST}|\#!{_LINE_REST})
          | (?P<char>\\)
          | (?P<sign>[+-])
          | (?P<dispatch>\#)
          | (?P<number>[+-]?\d{_NUM}*+)
          | (?P<token>{_TOK}++|\\[\s\S]{_TOK}*+)
        )?\Z
    )
    """,
    re.VERBOSE,
)

_CLOSES = {")": ("(", "#("), "]": ("[",), "}": ("{", "#{")}


@dataclass
class ScanState:
    """Where a scan stands; scanning text A and then B from A's state equals scanning A + B.

    ``stack``: open delimiters, innermost last, as (opener, offset of its first char). Openers
    are ``(``, ``[``, ``{``, ``#(`` and ``#{``; a reader conditional ``#?(`` / ``#?@(`` pushes
    ``(`` (at the offset of its paren) and a namespaced map ``#:ns{`` pushes ``{``.
    ``mode``: ``'code'``, ``'string'``, ``'regex'``, ``'comment'`` (a ``;`` or ``#!`` comment
    that runs to the end of the text) or ``'char'`` (the text ends right after a backslash).
    ``pending``: in ``'code'`` mode, a lexeme cut off by the end of the text that can still grow
    (a token, ``#``, a sign); in the other modes the opening characters. It is what lets the
    next chunk be scanned exactly as if it had followed without a break. Opaque to callers.
    ``unmatched_closers``: closers that matched nothing open or the wrong opener (they are
    skipped; the stack is left as it was).
    ``offset``: the number of characters scanned so far.
    """

    stack: list[tuple[str, int]] = field(default_factory=list)
    mode: str = "code"
    unmatched_closers: int = 0
    offset: int = 0
    pending: str = ""

    def copy(self) -> "ScanState":
        return ScanState(list(self.stack), self.mode, self.unmatched_closers, self.offset, self.pending)

    @property
    def depth(self) -> int:
        return len(self.stack)

    @property
    def in_string(self) -> bool:
        return self.mode in ("string", "regex")


def scan(text: str, state: ScanState | None = None) -> ScanState:
    """Scan `text` (continuing from `state`, which is copied and never mutated)."""
    if state is None:
        stack: list[tuple[str, int]] = []
        unmatched = 0
        base = 0
        prefix = ""
    else:
        stack = list(state.stack)
        unmatched = state.unmatched_closers
        prefix = state.pending
        base = state.offset - len(prefix)
    src = prefix + text if prefix else text
    closes = _CLOSES
    mode = "code"
    pending = ""
    for m in _SCAN_RE.finditer(src):
        i = m.lastindex
        if i == 1:
            stack.append((m[1], base + m.start(1)))
            continue
        if i == 2:
            if stack and stack[-1][0] in closes[m[2]]:
                stack.pop()
            else:
                unmatched += 1
            continue
        kind = m.lastgroup
        if kind is not None:
            tail = m.group(kind)
            if kind == "string":
                mode, pending = "string", ('"\\' if _ends_in_escape(tail) else '"')
            elif kind == "regex":
                mode, pending = "regex", ('#"\\' if _ends_in_escape(tail) else '#"')
            elif kind == "comment":
                mode, pending = "comment", ";"
            elif kind == "char":
                mode, pending = "char", "\\"
            elif kind == "sign":
                pending = tail
            elif kind == "number":
                pending = "0"
            elif kind == "token":
                pending = "a"
            else:  # dispatch
                pending = "#"
        break
    return ScanState(stack, mode, unmatched, base + len(src), pending)


def _ends_in_escape(s: str) -> bool:
    n = 0
    i = len(s) - 1
    while i >= 0 and s[i] == "\\":
        n += 1
        i -= 1
    return n % 2 == 1


def imbalance(text: str) -> int:
    """Unmatched closers + unclosed openers + 1 if the text ends inside a string/regex/char."""
    st = scan(text)
    return st.unmatched_closers + len(st.stack) + (1 if st.mode in ("string", "regex", "char") else 0)


def is_balanced(text: str) -> bool:
    return imbalance(text) == 0


# ----------------------------------------------------------------------------------------------
# parse(): one regex match per lexeme, then an iterative (no recursion) tree builder.

# Each match is optional whitespace followed by exactly one lexeme; group numbers are the
# _L_* constants below (no nested capturing groups).
_LEX_RE = re.compile(
    rf"""
    {_WS}*+
    (?:
      ({_TOK_START}{_TOK}*+)
    | ([(\[{{]|\#[({{])
    | ([)\]}}])
    | ([+-]?\d{_NUM}*+)
    | ("{_STR_BODY}(?:"|\\?))
    | (~@|[`~@^']|\#[_'^=])
    | (;{_LINE_REST}|\#!{_LINE_REST})
    | (\\[\s\S]{_TOK}*+|\\)
    | (\#"{_STR_BODY}(?:"|\\?))
    | (\#\?@?{_WS}*+\(?)
    | (\#::?{_TOK}*+{_WS}*+\{{)
    | (\#\#{_TOK}*+)
    | (\#{_TOK}*+)
    | ([+-]{_TOK}*+)
    )
    """,
    re.VERBOSE,
)
(_L_TOKEN, _L_OPEN, _L_CLOSE, _L_NUMBER, _L_STRING, _L_PREFIX, _L_COMMENT, _L_CHAR, _L_REGEX, _L_RCOND,
 _L_NSMAP, _L_SYMBOLIC, _L_TAG, _L_SIGNTOKEN) = range(1, 15)

COLLECTION_KINDS = frozenset(
    ["list", "vector", "map", "set", "fn", "reader-cond", "reader-cond-splicing", "namespaced-map"]
)
PREFIX_KINDS = frozenset(
    ["quote", "syntax-quote", "unquote", "unquote-splicing", "deref", "var", "meta", "tagged", "eval", "discard"]
)
_PREFIX_KIND = {
    "'": "quote",
    "`": "syntax-quote",
    "~": "unquote",
    "~@": "unquote-splicing",
    "@": "deref",
    "#'": "var",
    "^": "meta",
    "#^": "meta",
    "#_": "discard",
    "#=": "eval",
}
_OPEN_KIND = {"(": "list", "[": "vector", "{": "map", "#(": "fn", "#{": "set"}
_CLOSER_OF = {"list": ")", "vector": "]", "map": "}", "fn": ")", "set": "}", "reader-cond": ")",
              "reader-cond-splicing": ")", "namespaced-map": "}"}


@dataclass(frozen=True)
class Node:
    """One form. ``start``/``end`` are character offsets (end exclusive); ``start`` includes any
    prefix (the ``'`` of ``'x``, the ``#`` of ``#{}``, the ``^`` of metadata)."""

    kind: str
    start: int
    end: int
    children: tuple["Node", ...] = ()
    closed: bool = True

    def text(self, source: str) -> str:
        return source[self.start:self.end]


def node_text(node: Node, source: str) -> str:
    return source[node.start:node.end]


_new_object = object.__new__


def _mk(kind: str, start: int, end: int, children: tuple = (), closed: bool = True) -> Node:
    """Node(...) without the frozen-dataclass __init__ overhead (same resulting object)."""
    n = _new_object(Node)
    d = n.__dict__
    d["kind"] = kind
    d["start"] = start
    d["end"] = end
    d["children"] = children
    d["closed"] = closed
    return n


class _Frame:
    __slots__ = ("kind", "start", "children", "need", "closer", "inner_start")

    def __init__(self, kind: str, start: int, need: int, closer: str | None, inner_start: int = 0):
        self.kind = kind
        self.start = start
        self.children: list[Node] = []
        self.need = need  # prefix frames: forms still wanted; collection frames: -1
        self.closer = closer
        self.inner_start = inner_start


class _Stop(Exception):
    pass


def _parse(
    text: str,
    include_trivia: bool,
    errors: list[tuple[int, str]] | None,
    stop=None,
) -> list[Node]:
    """The parser. `stop(node)` is called on each finished top-level node; when it returns true,
    parsing ends there (the nodes so far are returned)."""
    root = _Frame("root", 0, -1, None)
    frames: list[_Frame] = [root]
    err = errors.append if errors is not None else None
    fn_depth = 0
    mk = _mk

    def emit(node: Node) -> None:
        # Deliver a finished form to the innermost open frame, completing prefix frames.
        while True:
            top = frames[-1]
            if top.need < 0:  # collection or root
                if node.kind == "discard" or node.kind == "comment":
                    if include_trivia:
                        top.children.append(node)
                else:
                    top.children.append(node)
                if stop is not None and top is root and stop(node):
                    raise _Stop
                return
            if node.kind == "discard" or node.kind == "comment":
                return  # `' #_a b` quotes b; trivia inside a prefix chain is dropped
            top.children.append(node)
            top.need -= 1
            if top.need > 0:
                return
            frames.pop()
            node = mk(top.kind, top.start, node.end, tuple(top.children), True)

    def abandon_prefixes(at: int) -> None:
        # Prefix frames left without a target (a closer follows, or the file ends).
        while frames[-1].need >= 0:
            top = frames.pop()
            if err:
                err((top.start, f"{top.kind} with no form after it"))
            end = top.children[-1].end if top.children else top.inner_start
            emit(mk(top.kind, top.start, end, tuple(top.children), False))

    top = root  # frames[-1], kept in sync where it matters for the fast paths
    try:
        for m in _LEX_RE.finditer(text):
            g = m.lastindex
            s, e = m.span(g)
            top = frames[-1]
            if g == _L_TOKEN or g == _L_NUMBER or g == _L_SIGNTOKEN:
                node = mk("number" if g == _L_NUMBER else ("keyword" if text[s] == ":" else "symbol"), s, e)
                if top.need < 0 and (stop is None or top is not root):
                    top.children.append(node)
                else:
                    emit(node)
            elif g == _L_OPEN:
                k = _OPEN_KIND[m[g]]
                if k == "fn":
                    if fn_depth and err:
                        err((s, "nested #()s are not allowed"))
                    fn_depth += 1
                frames.append(_Frame(k, s, -1, _CLOSER_OF[k]))
            elif g == _L_CLOSE:
                ch = text[s]
                # the innermost collection frame below any pending prefixes
                i = len(frames) - 1
                while frames[i].need >= 0:
                    i -= 1
                target = frames[i]
                if target.closer == ch:
                    if i != len(frames) - 1:
                        abandon_prefixes(s)
                    frames.pop()
                    if target.kind == "fn":
                        fn_depth -= 1
                    node = mk(target.kind, target.start, e, tuple(target.children), True)
                    top = frames[-1]
                    if top.need < 0 and (stop is None or top is not root):
                        top.children.append(node)
                    else:
                        emit(node)
                elif err:
                    err((s, f"unmatched delimiter: {ch}"))
            elif g == _L_STRING or g == _L_REGEX:
                kind, body = ("string", s + 1) if g == _L_STRING else ("regex", s + 2)  # after `"` / `#"`
                closed = e > body and text[e - 1] == '"' and not _ends_in_escape(text[body:e - 1])
                if not closed and err:
                    err((s, f"EOF while reading {kind}"))
                emit(mk(kind, s, e, (), closed))
            elif g == _L_PREFIX:
                pk = _PREFIX_KIND[m[g]]
                if pk == "eval" and err:
                    err((s, "#= (read-eval) is not allowed"))
                frames.append(_Frame(pk, s, 2 if pk == "meta" else 1, None, e))
            elif g == _L_COMMENT:
                if include_trivia:
                    emit(mk("comment", s, e))
            elif g == _L_CHAR:
                if e - s == 1:
                    if err:
                        err((s, "EOF while reading character"))
                    emit(mk("char", s, e, (), False))
                else:
                    if err and not _valid_char(text[s + 1:e]):
                        err((s, f"unsupported character: {text[s:e]}"))
                    emit(mk("char", s, e))
            elif g == _L_RCOND:
                if text[e - 1] != "(":
                    if err:
                        err((s, "read-cond body must be a list"))
                    emit(mk("invalid", s, e, (), False))
                    continue
                k = "reader-cond-splicing" if text[s + 2] == "@" else "reader-cond"
                frames.append(_Frame(k, s, -1, ")"))
            elif g == _L_NSMAP:
                frames.append(_Frame("namespaced-map", s, -1, "}"))
            elif g == _L_SYMBOLIC:
                emit(mk("symbolic", s, e))
            else:  # tag: '#' followed by a token, or a lone '#'
                if e - s == 1 or text[s + 1] == "<":
                    if err:
                        err((s, "unreadable form" if e - s > 1 else "lone #"))
                    emit(mk("invalid", s, e, (), False))
                elif text[s + 1] == ":":
                    if err:
                        err((s, "namespaced map must specify a map"))
                    emit(mk("invalid", s, e, (), False))
                else:
                    fr = _Frame("tagged", s, 1, None, e)
                    fr.children.append(mk("symbol", s + 1, e))
                    frames.append(fr)
        n = len(text)
        while len(frames) > 1:
            top = frames[-1]
            if top.need >= 0:
                abandon_prefixes(n)
                continue
            frames.pop()
            if err:
                err((top.start, f"EOF while reading {top.kind}"))
            emit(mk(top.kind, top.start, n, tuple(top.children), False))
    except _Stop:
        pass
    return root.children


def parse(text: str, include_trivia: bool = False) -> list[Node]:
    """The top-level forms of `text`. Never raises: unmatched closers are skipped (see
    `scan`/`syntax_errors`), unclosed forms end at ``len(text)`` with ``closed=False``.
    With ``include_trivia``, ``discard`` and ``comment`` nodes are kept in the top-level list and
    in collections' children (never inside prefix forms)."""
    return _parse(text, include_trivia, None)


def syntax_errors(text: str) -> list[tuple[int, str]]:
    """Problems that would make Clojure's reader (with ``*read-eval*`` false) reject `text`:
    unbalanced or mismatched delimiters, unterminated strings/regexes/chars, a prefix with no
    form after it, invalid chars/strings escapes/tokens/numbers, odd map literals, ``#=``,
    record literals, nested ``#()``, ``#?@`` at the top level. Not checked: regex syntax,
    duplicate keys in map/set literals. Offsets are char offsets."""
    errors: list[tuple[int, str]] = []
    nodes = _parse(text, False, errors)
    stack: list[Node] = list(nodes)
    for node in nodes:
        if node.kind == "reader-cond-splicing":
            errors.append((node.start, "reader conditional splicing not allowed at the top level"))
    while stack:
        node = stack.pop()
        k = node.kind
        if node.children:
            stack.extend(node.children)
        if k == "symbol" or k == "keyword":
            tok = text[node.start:node.end]
            if tok not in ("nil", "true", "false") and not _valid_symbol(tok):
                errors.append((node.start, f"invalid token: {tok}"))
        elif k == "number":
            if not _valid_number(text[node.start:node.end]):
                errors.append((node.start, f"invalid number: {text[node.start:node.end]}"))
        elif k == "string" and node.closed:
            bad = _bad_string_escape(text[node.start + 1:node.end - 1])
            if bad:
                errors.append((node.start, bad))
        elif (k == "map" or k == "namespaced-map") and len(node.children) % 2:
            errors.append((node.start, "map literal must contain an even number of forms"))
        elif (k == "reader-cond" or k == "reader-cond-splicing") and len(node.children) % 2:
            errors.append((node.start, "read-cond requires an even number of forms"))
        elif k == "tagged" and node.children:
            tag = text[node.children[0].start:node.children[0].end]
            if "." in tag and "/" not in tag:
                errors.append((node.start, f"record literal needs *read-eval*: #{tag}"))
            elif not _valid_symbol(tag) or tag.startswith(":"):
                errors.append((node.start, f"reader tag must be a symbol: {tag}"))
    errors.sort()
    return errors


# --- token validity, after clojure.lang.LispReader (1.11) ---------------------------------------

_SYMBOL_RE = re.compile(r"[:]?([^0-9/].*/)?(/|[^0-9/][^/]*)", re.DOTALL)
_INT_RE = re.compile(r"([-+]?)(?:(0)|([1-9][0-9]*)|0[xX]([0-9A-Fa-f]+)|0([0-7]+)|([1-9][0-9]?)[rR]([0-9A-Za-z]+)|0[0-9]+)(N)?")
_RATIO_RE = re.compile(r"([-+]?[0-9]+)/([0-9]+)")
_FLOAT_RE = re.compile(r"([-+]?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?)(M)?")
_CHAR_NAMES = frozenset(["newline", "space", "tab", "backspace", "formfeed", "return"])
_HEX = frozenset("0123456789abcdefABCDEF")


def _valid_symbol(tok: str) -> bool:
    m = _SYMBOL_RE.fullmatch(tok)
    if not m:
        return False
    ns, name = m.group(1), m.group(2)
    if (ns is not None and ns.endswith(":/")) or name.endswith(":") or tok.find("::", 1) != -1:
        return False
    return True


def _valid_number(tok: str) -> bool:
    m = _INT_RE.fullmatch(tok)
    if m:
        return not (m.group(2) is None and m.group(3) is None and m.group(4) is None
                    and m.group(5) is None and m.group(7) is None)  # 0[0-9]+ is invalid
    return bool(_RATIO_RE.fullmatch(tok) or _FLOAT_RE.fullmatch(tok))


def _valid_char(tok: str) -> bool:
    if len(tok) == 1 or tok in _CHAR_NAMES:
        return True
    if tok[0] == "u" and len(tok) == 5 and all(c in _HEX for c in tok[1:]):
        return not (0xD800 <= int(tok[1:], 16) <= 0xDFFF)
    if tok[0] == "o" and 2 <= len(tok) <= 4 and all(c in "01234567" for c in tok[1:]):
        return int(tok[1:], 8) <= 0o377
    return False


def _bad_string_escape(body: str) -> str | None:
    i = body.find("\\")
    n = len(body)
    while i != -1:
        c = body[i + 1] if i + 1 < n else ""
        if c in 'trn\\"bf':
            i = body.find("\\", i + 2)
            continue
        if c == "u":
            digits = body[i + 2:i + 6]
            if len(digits) != 4 or not all(d in _HEX for d in digits):
                return "invalid unicode escape in string"
            i = body.find("\\", i + 6)
            continue
        if c.isdigit() and c in "01234567":
            j = i + 1
            while j < n and j < i + 4 and body[j] in "01234567":
                j += 1
            if j < n and j < i + 4 and body[j].isdigit():
                return "invalid digit in octal escape"
            if int(body[i + 1:j], 8) > 0o377:
                return "octal escape sequence must be in range [0, 377]"
            i = body.find("\\", j)
            continue
        return f"unsupported escape character: \\{c}"
    return None


# ----------------------------------------------------------------------------------------------


def top_level_forms(text: str) -> list[tuple[int, int]]:
    """(start, end) of each top-level form (discards and comments excluded)."""
    return [(n.start, n.end) for n in _parse(text, False, None)]


_NS_HEADS = frozenset(["ns", "clojure.core/ns", "in-ns", "clojure.core/in-ns"])


def unmeta(node: Node) -> Node:
    """The form under any metadata: ``^:private ^String foo`` -> ``foo``."""
    while node.kind == "meta" and len(node.children) == 2:
        node = node.children[1]
    return node


def namespace_of_form(node: Node, text: str) -> str | None:
    """The namespace named by an ``(ns ...)`` or ``(in-ns 'x)`` form, else None."""
    if node.kind != "list" or len(node.children) < 2 or node.children[0].kind != "symbol":
        return None
    head = text[node.children[0].start:node.children[0].end]
    if head not in _NS_HEADS:
        return None
    target = unmeta(node.children[1])
    if head.endswith("in-ns"):
        if target.kind == "quote" and target.children:
            target = unmeta(target.children[0])
        else:
            return None
    if target.kind == "symbol":
        return text[target.start:target.end]
    return None


def file_namespace(text: str) -> str | None:
    """The namespace from the first ``(ns ...)`` / ``(in-ns 'x)`` form of `text`, if any."""
    found: list[str] = []

    def stop(node: Node) -> bool:
        name = namespace_of_form(node, text)
        if name is not None:
            found.append(name)
            return True
        return False

    _parse(text, False, None, stop)
    return found[0] if found else None
