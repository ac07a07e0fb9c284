"""What surrounds a cursor in Clojure text: enclosing forms, the symbol being typed, locals.

All of it is read off the reader-level parse tree of `cljassist.clojure_text.reader`; nothing
is evaluated. The text after the cursor may be unbalanced (the usual state while typing): the
parse is left to right, so everything before the cursor is understood the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from .reader import PREFIX_KINDS, Node, _parse, file_namespace, namespace_of_form, scan, unmeta

__all__ = ["EnclosingForm", "CursorContext", "analyze_cursor", "names_bound_by", "LET_LIKE", "FN_LIKE"]


@dataclass(frozen=True)
class EnclosingForm:
    """An open collection around the cursor.

    ``opener`` is one of ``(`` ``[`` ``{`` ``#(`` ``#{`` ``#?(`` ``#?@(`` ``#:{`` (a namespaced
    map, whatever its namespace part). ``head`` is the symbol a list / ``#(`` starts with, when
    it starts with one that the cursor is not inside of (``(fo|`` has no head yet)."""

    start: int
    opener: str
    head: str | None


@dataclass(frozen=True)
class CursorContext:
    offset: int
    namespace: str | None  # from the file's first (ns ...) / (in-ns 'x) form
    symbol_prefix: str  # the part of the symbol/keyword being typed before the cursor ('' if none)
    symbol_start: int  # where that symbol/keyword starts (== offset if none)
    enclosing: tuple[EnclosingForm, ...]  # innermost first
    top_level: tuple[int, int] | None  # span of the top-level form holding the cursor
    locals: tuple[str, ...]  # names bound at the cursor, innermost first, no duplicates
    in_string: bool  # inside a string or regex literal
    in_comment: bool  # inside a ; or #! comment


LET_LIKE = frozenset(
    ["let", "let*", "loop", "loop*", "binding", "when-let", "if-let", "when-some", "if-some", "when-first",
     "with-open", "dotimes", "with-local-vars", "go-loop", "with-redefs"]
)
FOR_LIKE = frozenset(["for", "doseq"])
FN_LIKE = frozenset(["fn", "fn*", "bound-fn", "bound-fn*"])
DEFN_LIKE = frozenset(["defn", "defn-", "defmacro"])
METHOD_HOSTS = frozenset(["reify", "deftype", "defrecord", "extend-type", "extend-protocol", "proxy", "specify", "specify!"])

_OPENERS = {"list": "(", "vector": "[", "map": "{", "set": "#{", "fn": "#(", "reader-cond": "#?(",
            "reader-cond-splicing": "#?@(", "namespaced-map": "#:{"}
_TOKEN_KINDS = frozenset(["symbol", "keyword", "number", "symbolic", "char", "invalid"])


def _holds(node: Node, offset: int) -> bool:
    """Whether the cursor at `offset` is inside `node` (a token counts at its end: it can grow)."""
    if node.start < offset < node.end:
        return True
    if offset == node.end and node.start < offset:
        if not node.closed or node.kind in _TOKEN_KINDS:
            return True
        # `'sym|`, `@at|`: a prefix form holds the cursor when its last part does
        return node.kind in PREFIX_KINDS and bool(node.children) and _holds(node.children[-1], offset)
    return False


def _inner_start(node: Node, text: str) -> int:
    """Offset just after a collection's opening delimiter."""
    k = node.kind
    if k in ("list", "vector", "map"):
        return node.start + 1
    if k in ("set", "fn"):
        return node.start + 2
    delim = "(" if k.startswith("reader-cond") else "{"
    i = text.find(delim, node.start)
    return node.end if i < 0 else i + 1


def _locate(children: tuple[Node, ...], offset: int | None) -> tuple[int, bool]:
    """(index of the child holding the cursor, True) or (number of children before it, False).
    No offset stands for a place after every child, where whatever the form binds is in scope."""
    if offset is None:
        return len(children) + 1, False
    n = 0
    for i, c in enumerate(children):
        if _holds(c, offset):
            return i, True
        if c.end <= offset:
            n = i + 1
        else:
            break
    return n, False


def _sym(node: Node, text: str) -> str | None:
    return text[node.start:node.end] if node.kind == "symbol" else None


def _name_part(tok: str) -> str:
    if tok.startswith(":"):
        tok = tok.lstrip(":")
    i = tok.find("/")
    return tok[i + 1:] if i > 0 else tok


def _bindings(pattern: Node, text: str, out: list[str]) -> None:
    """Names bound by a destructuring pattern, left to right."""
    pattern = unmeta(pattern)
    k = pattern.kind
    if k == "symbol":
        name = text[pattern.start:pattern.end]
        if name not in ("&", "_") and "/" not in name and name not in ("nil", "true", "false"):
            out.append(name)
    elif k == "vector":
        kids = pattern.children
        i = 0
        while i < len(kids):
            c = kids[i]
            if c.kind == "keyword" and text[c.start:c.end] == ":as" and i + 1 < len(kids):
                _bindings(kids[i + 1], text, out)
                i += 2
                continue
            _bindings(c, text, out)
            i += 1
    elif k == "map" or k == "namespaced-map":
        kids = pattern.children
        for i in range(0, len(kids) - 1, 2):
            key, val = unmeta(kids[i]), kids[i + 1]
            ktext = text[key.start:key.end]
            if key.kind == "keyword":
                base = _name_part(ktext)
                if base in ("keys", "strs", "syms") and val.kind == "vector":
                    for item in val.children:
                        item = unmeta(item)
                        if item.kind in ("symbol", "keyword"):
                            name = _name_part(text[item.start:item.end])
                            if name and name != "_":
                                out.append(name)
                    continue
                if ktext == ":as":
                    _bindings(val, text, out)
                    continue
                if ktext == ":or":
                    continue
            _bindings(key, text, out)


def _pairs_before(vec: Node, j: int, text: str, out: list[str]) -> None:
    """let-style binding vector: patterns whose init lies wholly before child position `j`."""
    kids = vec.children
    for p in range(0, len(kids), 2):
        if p + 1 < j:
            _bindings(kids[p], text, out)


def _let_scope(form: Node, k: int, inside: bool, offset: int, text: str) -> list[str]:
    kids = form.children
    out: list[str] = []
    if len(kids) < 2 or kids[1].kind != "vector":
        return out
    if k == 1 and inside:
        j, _ = _locate(kids[1].children, offset)
        _pairs_before(kids[1], j, text, out)
    elif k >= 2:
        _pairs_before(kids[1], len(kids[1].children) + 1, text, out)
    return out


def _for_scope(form: Node, k: int, inside: bool, offset: int, text: str) -> list[str]:
    kids = form.children
    out: list[str] = []
    if len(kids) < 2 or kids[1].kind != "vector":
        return out
    vec = kids[1].children
    if k == 1 and inside:
        j, j_inside = _locate(vec, offset)
    elif k >= 2:
        j, j_inside = len(vec) + 1, False
    else:
        return out
    i = 0
    while i < len(vec):
        c = vec[i]
        ctext = text[c.start:c.end]
        if c.kind == "keyword" and ctext in (":let", ":when", ":while"):
            if ctext == ":let" and i + 1 < len(vec) and vec[i + 1].kind == "vector":
                if j > i + 1:
                    _pairs_before(vec[i + 1], len(vec[i + 1].children) + 1, text, out)
                elif j == i + 1 and j_inside:
                    jj, _ = _locate(vec[i + 1].children, offset)
                    _pairs_before(vec[i + 1], jj, text, out)
            i += 2
            continue
        if j > i + 1:
            _bindings(c, text, out)
        i += 2
    return out


def _fn_tail_scope(kids: tuple[Node, ...], first: int, offset: int | None, text: str) -> list[str]:
    """Locals from an fn tail ``[params] body`` or ``([params] body)+`` starting at kids[first]
    (with no offset: the params of every arity)."""
    out: list[str] = []
    k, inside = _locate(kids, offset)
    i = first
    while i < len(kids) and unmeta(kids[i]).kind not in ("vector", "list"):
        i += 1  # docstring, attr-map
    if i >= len(kids):
        return out
    params = unmeta(kids[i])
    if params.kind == "vector":
        if k > i:
            _bindings(params, text, out)
        return out
    if offset is None:
        for arity in kids[i:]:
            if arity.kind == "list" and arity.children and unmeta(arity.children[0]).kind == "vector":
                _bindings(arity.children[0], text, out)
        return out
    # multi-arity: the arity holding the cursor
    if k >= i and inside and kids[k].kind == "list":
        arity = kids[k].children
        if arity and unmeta(arity[0]).kind == "vector":
            ak, _ = _locate(arity, offset)
            if ak >= 1:
                _bindings(arity[0], text, out)
    return out


def _scope(form: Node, offset: int | None, text: str, parent_head: str | None) -> list[str]:
    """Names `form` (a list holding the cursor) binds at the cursor, in binding order; with no
    offset, every name it binds for some part of itself."""
    kids = form.children
    if not kids:
        return []
    k, inside = _locate(kids, offset)
    head = _sym(kids[0], text)
    if head is not None and "/" in head:
        ns, _, name = head.rpartition("/")
        if ns in ("clojure.core", "cljs.core", "core", "async", "a", "clojure.core.async"):
            head = name
    if k == 0:
        return []
    if head in LET_LIKE:
        return _let_scope(form, k, inside, offset, text)
    if head in FOR_LIKE:
        return _for_scope(form, k, inside, offset, text)
    if head in FN_LIKE:
        out: list[str] = []
        first = 1
        if len(kids) > 1 and unmeta(kids[1]).kind == "symbol":
            if k > 1:
                _bindings(kids[1], text, out)
            first = 2
        return out + _fn_tail_scope(kids, first, offset, text)
    if head in DEFN_LIKE:
        return _fn_tail_scope(kids, 2, offset, text) if k >= 2 else []
    if head == "defmethod":
        if k < 3:
            return []
        out = []
        first = 3
        if len(kids) > 3 and kids[3].kind == "symbol":
            if k > 3:
                _bindings(kids[3], text, out)
            first = 4
        return out + _fn_tail_scope(kids, first, offset, text)
    if head == "letfn":
        if len(kids) < 2 or kids[1].kind != "vector":
            return []
        names: list[str] = []
        for spec in kids[1].children:
            if spec.kind == "list" and spec.children and spec.children[0].kind == "symbol":
                _bindings(spec.children[0], text, names)
        if k == 1 and inside:
            j, j_inside = _locate(kids[1].children, offset)
            spec = kids[1].children[j] if j_inside else None
            if spec is not None and spec.kind == "list" and len(spec.children) > 1:
                return names + _fn_tail_scope(spec.children, 1, offset, text)
            return names
        if offset is None:
            for spec in kids[1].children:
                if spec.kind == "list" and len(spec.children) > 1:
                    names += _fn_tail_scope(spec.children, 1, None, text)
        return names if k >= 2 else []
    if head == "catch":
        out = []
        if k >= 3 and len(kids) > 2:
            _bindings(kids[2], text, out)
        return out
    if head == "as->":
        out = []
        if k >= 3 and len(kids) > 2:
            _bindings(kids[2], text, out)
        return out
    if head in METHOD_HOSTS:
        out = []
        if head in ("deftype", "defrecord") and k >= 3 and len(kids) > 2 and kids[2].kind == "vector":
            _bindings(kids[2], text, out)
        if offset is None:  # the methods' params (at a cursor, the method holding it binds them)
            for method in kids[1:]:
                if method.kind == "list" and method.children and method.children[0].kind == "symbol":
                    out += _fn_tail_scope(method.children, 1, None, text)
        return out
    if parent_head in METHOD_HOSTS and head is not None and k >= 1:
        return _fn_tail_scope(kids, 1, offset, text)
    return []


def names_bound_by(form: Node, text: str) -> list[str]:
    """Every name the list `form` binds for some part of itself (let pairs, every arity's params,
    method params...), in binding order: the same rules as the locals at a cursor, for a reader
    of a whole form who must not take those names for references."""
    return _scope(form, None, text, None) if form.kind == "list" else []


def analyze_cursor(text: str, offset: int) -> CursorContext:
    offset = max(0, min(offset, len(text)))
    state = scan(text[:offset])
    in_string = state.mode in ("string", "regex")
    in_comment = state.mode == "comment"

    # Parse up to the end of the top-level form holding the cursor (or the first one after it).
    namespace: list[str] = []

    def stop(node: Node) -> bool:
        if not namespace:
            name = namespace_of_form(node, text)
            if name is not None:
                namespace.append(name)
        return node.end > offset or (node.end == offset and _holds(node, offset))

    nodes = _parse(text, False, None, stop)
    ns = namespace[0] if namespace else file_namespace(text)

    # the path of nodes holding the cursor, outermost first
    path: list[Node] = []
    top_level = None
    level: tuple[Node, ...] = tuple(nodes)
    while True:
        found = None
        lo, hi = 0, len(level)
        # children are sorted and disjoint: binary search for the first that ends at/after offset
        while lo < hi:
            mid = (lo + hi) // 2
            if level[mid].end < offset:
                lo = mid + 1
            else:
                hi = mid
        for cand in level[lo:lo + 2]:
            if _holds(cand, offset):
                found = cand
                break
        if found is None:
            break
        if not path:
            top_level = (found.start, found.end)
        path.append(found)
        level = found.children

    symbol_prefix, symbol_start = "", offset
    if path and not in_string and not in_comment:
        leaf = path[-1]
        if leaf.kind in ("symbol", "keyword"):
            symbol_prefix, symbol_start = text[leaf.start:offset], leaf.start

    enclosing: list[EnclosingForm] = []
    scopes: list[list[str]] = []
    parent_head: str | None = None
    for node in path:
        head = None
        if node.kind in _OPENERS:
            if offset < _inner_start(node, text):
                continue
            if node.kind in ("list", "fn") and node.children and node.children[0].kind == "symbol":
                h = node.children[0]
                if not _holds(h, offset):
                    head = text[h.start:h.end]
            enclosing.append(EnclosingForm(node.start, _OPENERS[node.kind], head))
            if node.kind == "list":
                scopes.append(_scope(node, offset, text, parent_head))
        parent_head = head if node.kind in _OPENERS else parent_head
    seen: set[str] = set()
    local_names: list[str] = []
    for scope in reversed(scopes):
        for name in reversed(scope):
            if name not in seen:
                seen.add(name)
                local_names.append(name)

    return CursorContext(
        offset=offset,
        namespace=ns,
        symbol_prefix=symbol_prefix,
        symbol_start=symbol_start,
        enclosing=tuple(reversed(enclosing)),
        top_level=top_level,
        locals=tuple(local_names),
        in_string=in_string,
        in_comment=in_comment,
    )
