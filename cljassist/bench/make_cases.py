"""`cljassist bench make`: fill-in-the-middle benchmark cases from any Clojure source tree.

Every `.clj`/`.cljc`/`.cljs` file under a source root is parsed with
`cljassist.clojure_text.reader`, and gaps of six categories are picked from it (see
`shared/bench/FORMAT.md`):

- `symbol`: the tail of a symbol the user is typing (`(str/jo` + `in`);
- `name`:   the name after `def`/`defn`/`defmacro`/... or a `let`-style binding name;
- `arg`:    one argument form of an ordinary call (never its head);
- `call`:   one whole one-line call form `(f ...)` in argument or body position;
- `clause`: two sibling forms on one line: a `cond`/`case`/`condp` clause, a binding pair,
            a map entry;
- `body`:   the last body form(s) of a `defn`/`fn`/`defmacro`/`defmethod` arity (may span lines).

The prefix and suffix are cut at top-level form boundaries so that each holds at most
`max_context_chars` characters; so whenever the source file reads as balanced Clojure,
`prefix + middle + suffix` does too. Gaps whose enclosing top-level form does not fit in that
budget are not used. Every case is checked in code: `prefix + middle + suffix` is exactly the
original text slice, and the middle is balanced (a symbol tail, or whole forms).

`xref` is true when the middle uses a name that is defined (by `def`, `defn`, `defmacro`,
`defmulti`, `defprotocol`, ... ) in another file of the same tree and not in this file; aliases
(`alias/name`), full namespace names, `:refer`-ed names, `:refer :all`/`:use`, and other files of
the same namespace are resolved roughly.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from cljassist.clojure_text import reader
from cljassist.clojure_text.reader import unmeta
from cljassist.errors import InputError

CATEGORIES = ("symbol", "name", "arg", "call", "clause", "body")
SOURCE_SUFFIXES = (".clj", ".cljc", ".cljs")

MAX_SYMBOL_MIDDLE = 40
MAX_ARG_CHARS = 80
MAX_CALL_CHARS = 100
MIN_CALL_CHARS = 6
MAX_CLAUSE_CHARS = 120
MAX_BODY_CHARS = 400
MIN_BODY_CHARS = 6

# Kinds a reader may report for things that are not forms of the surrounding code.
_NON_FORM_KINDS = frozenset({"comment", "discard", "whitespace", "newline", "ignore"})
_QUOTE_KINDS = frozenset({"quote"})

_DEF_SKIP = frozenset({"defmethod", "default", "defaults", "deftest", "deftest-"})
_FN_HEADS = frozenset({"defn", "defn-", "defmacro", "fn", "fn*", "defmethod"})
_BINDING_HEADS = frozenset({
    "let", "let*", "loop", "loop*", "when-let", "if-let", "when-some", "if-some", "binding",
    "with-open", "with-redefs", "with-local-vars", "doseq", "for", "dotimes", "when-first",
    "with-bindings",
})
_SEQ_BINDING_HEADS = frozenset({"doseq", "for"})  # their binding vectors may hold `:let [...]`
# Heads whose list is not an ordinary call (for `arg` gaps).
_NOT_CALL_HEADS = frozenset({
    "ns", "in-ns", "comment", "quote", "fn", "fn*", "letfn", "cond", "condp", "case", "cond->",
    "cond->>", "try", "catch", "finally", "import", "require", "use", "refer", "declare",
    "defmethod", "extend-protocol", "extend-type", "reify", "proxy", "deftype", "defrecord",
    "defprotocol", "definterface", "gen-class", "set!", "var",
}) | _BINDING_HEADS
# Heads whose child lists `(name [params] body...)` are method signatures or implementations.
_METHOD_HOLDERS = frozenset({
    "defprotocol", "definterface", "deftype", "defrecord", "reify", "extend-protocol",
    "extend-type", "proxy", "specify", "specify!", "extend",
})
_SIGNATURE_HOLDERS = frozenset({"defprotocol", "definterface"})  # bodiless signatures
# Heads whose list is not used as a `call` gap (declarations and top-level plumbing).
_NOT_A_CALL_GAP = frozenset({
    "import", "require", "use", "refer", "refer-clojure", "declare", "extend-protocol",
    "extend-type", "gen-class", "comment", "ns", "in-ns", "set!",
})
# Heads whose list is never used as a `call` gap, nor searched inside.
_SKIP_FORM_HEADS = frozenset({"ns", "in-ns", "comment"})


# --------------------------------------------------------------------------- reader access


def _forms(node) -> list:
    """The child forms of a node, without comments/discards a reader may report."""
    return [c for c in node.children if c.kind not in _NON_FORM_KINDS]


def _all_closed(node) -> bool:
    return node.closed and all(_all_closed(c) for c in node.children)


# --------------------------------------------------------------------------- data


@dataclass
class _File:
    path: Path
    relative: str
    text: str
    nodes: list
    ns: str | None  # as file_namespace reports it
    index_ns: str | None  # ns or in-ns, for resolving names across files
    balanced: bool
    defined: set[str] = field(default_factory=set)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> namespace
    referred: dict[str, str] = field(default_factory=dict)  # name -> namespace
    refer_all: set[str] = field(default_factory=set)  # namespaces referred wholesale


@dataclass
class _Gap:
    file: _File
    category: str
    start: int
    end: int
    n_forms: int  # forms the middle must parse into (0 for a symbol tail)
    symbols: tuple[str, ...]  # symbols the middle uses (the whole symbol for `symbol` gaps)
    xref: bool = False


# --------------------------------------------------------------------------- file index


def _sym(text: str, node) -> str | None:
    node = unmeta(node)
    if node.kind != "symbol":
        return None
    return text[node.start:node.end]


def _head(text: str, node) -> str | None:
    forms = _forms(node)
    if node.kind != "list" or not forms:
        return None
    return _sym(text, forms[0])


def _is_def_head(head: str | None) -> bool:
    if not head:
        return False
    base = head.rsplit("/", 1)[-1]
    return base.startswith("def") and base not in _DEF_SKIP


def _collect_defs(text: str, node, out: set[str], depth: int = 0) -> None:
    """Names a top-level form defines (looking through reader conditionals, `do`, `when`...)."""
    if depth > 6:
        return
    if node.kind in ("reader-cond", "reader-cond-splicing"):
        for c in _forms(node):
            _collect_defs(text, c, out, depth + 1)
        return
    if node.kind != "list":
        return
    forms = _forms(node)
    head = _head(text, node)
    if head is None:
        return
    base = head.rsplit("/", 1)[-1]
    if base == "declare":
        for c in forms[1:]:
            name = _sym(text, c)
            if name:
                out.add(name)
        return
    if _is_def_head(head) and len(forms) >= 2:
        name = _sym(text, forms[1])
        if name:
            out.add(name)
            if base in ("defrecord", "deftype"):
                out.update({f"->{name}", f"map->{name}", name})
        if base == "defprotocol":
            for c in forms[2:]:
                if c.kind == "list" and _forms(c):
                    method = _sym(text, _forms(c)[0])
                    if method:
                        out.add(method)
        return
    if base in ("do", "when", "when-not", "if", "let", "binding", "compile-if", "when-available"):
        for c in forms[1:]:
            _collect_defs(text, c, out, depth + 1)


def _ns_name_from_in_ns(text: str, node) -> str | None:
    if _head(text, node) != "in-ns":
        return None
    forms = _forms(node)
    if len(forms) < 2:
        return None
    target = forms[1]
    if target.kind == "quote" and _forms(target):
        return _sym(text, _forms(target)[0])
    return None


def _libspecs(text: str, node, prefix: str, f: _File, use_all: bool) -> None:
    """Record aliases and referred names from one libspec (or prefix list)."""
    node = unmeta(node)
    if node.kind in ("quote",) and _forms(node):
        _libspecs(text, _forms(node)[0], prefix, f, use_all)
        return
    if node.kind in ("reader-cond", "reader-cond-splicing"):
        for c in _forms(node):
            if c.kind != "keyword":
                _libspecs(text, c, prefix, f, use_all)
        return
    if node.kind == "symbol":
        name = prefix + text[node.start:node.end]
        if use_all:
            f.refer_all.add(name)
        return
    if node.kind not in ("vector", "list"):
        return
    forms = _forms(node)
    if not forms:
        return
    first = _sym(text, forms[0])
    if first is None:
        return
    rest = forms[1:]
    if node.kind == "list" or (rest and rest[0].kind in ("vector", "symbol") and not _has_keyword(text, rest)):
        # prefix list: (clojure [string :as str] set)
        for c in rest:
            _libspecs(text, c, prefix + first + ".", f, use_all)
        return
    ns = prefix + first
    i = 0
    referred_all = use_all
    while i < len(rest):
        opt = rest[i]
        key = text[opt.start:opt.end] if opt.kind == "keyword" else None
        val = rest[i + 1] if i + 1 < len(rest) else None
        if key in (":as", ":as-alias") and val is not None:
            alias = _sym(text, val)
            if alias:
                f.aliases[alias] = ns
        elif key == ":refer" and val is not None:
            if val.kind == "keyword" and text[val.start:val.end] == ":all":
                referred_all = True
            elif val.kind in ("vector", "list"):
                for c in _forms(val):
                    name = _sym(text, c)
                    if name:
                        f.referred[name] = ns
        elif key == ":only" and val is not None and val.kind in ("vector", "list"):
            referred_all = False
            for c in _forms(val):
                name = _sym(text, c)
                if name:
                    f.referred[name] = ns
        elif key == ":rename" and val is not None and val.kind == "map":
            pairs = _forms(val)
            for a, b in zip(pairs[0::2], pairs[1::2]):
                new = _sym(text, b)
                if new:
                    f.referred[new] = ns
        i += 2 if key else 1
    if referred_all:
        f.refer_all.add(ns)


def _has_keyword(text: str, nodes) -> bool:
    return any(n.kind == "keyword" for n in nodes)


def _collect_requires(text: str, node, f: _File) -> None:
    """From an `ns` form's reference clauses or a top-level `(require ...)`/`(use ...)`."""
    if node.kind in ("reader-cond", "reader-cond-splicing"):
        for c in _forms(node):
            _collect_requires(text, c, f)
        return
    if node.kind != "list":
        return
    forms = _forms(node)
    if not forms:
        return
    head = text[forms[0].start:forms[0].end]
    if head == "ns":
        for c in forms[2:]:
            _collect_requires(text, c, f)
        return
    kind = head.lstrip(":")
    if kind in ("require", "require-macros"):
        for c in forms[1:]:
            _libspecs(text, c, "", f, use_all=False)
    elif kind in ("use", "use-macros"):
        for c in forms[1:]:
            _libspecs(text, c, "", f, use_all=True)


def _load_file(path: Path, relative: str) -> _File | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    nodes = list(reader.parse(text))
    ns = reader.file_namespace(text)
    index_ns = ns
    if index_ns is None:
        for n in nodes:
            index_ns = _ns_name_from_in_ns(text, n)
            if index_ns:
                break
    f = _File(path, relative, text, nodes, ns, index_ns, bool(reader.is_balanced(text)))
    for n in nodes:
        _collect_defs(text, n, f.defined)
        _collect_requires(text, n, f)
    return f


class _Tree:
    def __init__(self, files: list[_File]):
        self.files = files
        self.ns_defs: dict[str, list[_File]] = {}
        for f in files:
            if f.index_ns:
                self.ns_defs.setdefault(f.index_ns, []).append(f)

    def _defined_elsewhere(self, ns: str, name: str, here: _File) -> bool:
        return any(other is not here and name in other.defined for other in self.ns_defs.get(ns, ()))

    def is_xref(self, f: _File, symbol: str) -> bool:
        if "/" in symbol and symbol != "/" and not symbol.startswith("/"):
            qual, name = symbol.split("/", 1)
            if not name:
                return False
            ns = f.aliases.get(qual, qual)
            if ns == f.index_ns and name in f.defined:
                return False
            return self._defined_elsewhere(ns, name, f)
        name = symbol
        if name in f.defined:
            return False
        ns = f.referred.get(name)
        if ns is not None and self._defined_elsewhere(ns, name, f):
            return True
        if f.index_ns and self._defined_elsewhere(f.index_ns, name, f):
            return True
        return any(self._defined_elsewhere(used, name, f) for used in f.refer_all)


# --------------------------------------------------------------------------- gap finding


def _symbols_in(text: str, node, out: list[str], skip: set[int]) -> None:
    if node.kind == "symbol":
        if node.start not in skip:
            out.append(text[node.start:node.end])
        return
    if node.kind in ("quote", "tagged"):
        return
    for c in node.children:
        _symbols_in(text, c, out, skip)


def _one_line(text: str, start: int, end: int) -> bool:
    return "\n" not in text[start:end]


class _Finder:
    def __init__(self, f: _File, rng: random.Random):
        self.f = f
        self.text = f.text
        self.rng = rng
        self.gaps: list[_Gap] = []
        self.gap_nodes: list[list | None] = []  # the forms of each gap, for its symbols
        self.def_positions: set[int] = set()  # starts of symbols in definition position
        self.method_lists: set[int] = set()  # starts of method implementation lists

    def add(self, category: str, start: int, end: int, nodes: list, n_forms: int) -> None:
        self.gaps.append(_Gap(self.f, category, start, end, n_forms, ()))
        self.gap_nodes.append(nodes)

    def run(self) -> list[_Gap]:
        for n in self.f.nodes:
            if n.kind in _NON_FORM_KINDS or n.kind in ("tagged",):
                continue
            if _head(self.text, n) in _SKIP_FORM_HEADS:
                continue
            if not _all_closed(n):
                continue
            self.visit(n, None, -1, quoted=False)
        # the symbols each middle uses; names it defines (def names, bindings, params) don't count
        for gap, nodes in zip(self.gaps, self.gap_nodes):
            if nodes is None:
                continue
            syms: list[str] = []
            for n in nodes:
                _symbols_in(self.text, n, syms, self.def_positions)
            gap.symbols = tuple(syms)
        return self.gaps

    # -- traversal
    def visit(self, node, parent, index: int, quoted: bool) -> None:
        text = self.text
        kind = node.kind
        if kind in _NON_FORM_KINDS:
            return
        if kind in _QUOTE_KINDS:
            quoted = True
        if kind == "tagged":
            return  # `#inst "..."`, `#uuid ...`: data literals
        if kind == "symbol":
            if not quoted and node.start not in self.def_positions:
                self.symbol_gap(node)
            return
        forms = _forms(node)
        child_quoted = quoted
        if kind == "list" and not quoted:
            head = _head(text, node)
            if head in _SKIP_FORM_HEADS:
                return
            base = head.rsplit("/", 1)[-1] if head else None
            if node.start in self.method_lists:
                self.method_gaps(forms)
            else:
                self.list_gaps(node, forms, head, parent, index)
            if base in _SIGNATURE_HOLDERS:
                child_quoted = True  # protocol/interface signatures are declarations, not code
            elif base in _METHOD_HOLDERS or (_is_def_head(head) and base not in _FN_HEADS and base != "def"):
                for c in forms[2:]:
                    cf = _forms(c)
                    if c.kind == "list" and len(cf) >= 2 and cf[0].kind == "symbol" and unmeta(cf[1]).kind == "vector":
                        self.method_lists.add(c.start)
        elif kind in ("map", "namespaced-map") and not quoted:
            self.pair_gaps(forms, 0)
        for i, c in enumerate(forms):
            self.visit(c, node, i, child_quoted)

    def method_gaps(self, forms) -> None:
        """`(method [this x] body...)` inside reify/deftype/extend-protocol and def-like macros."""
        self.def_positions.add(forms[0].start)
        self.fn_gaps([forms[0], forms[0]] + forms[1:], "method")

    # -- symbol
    def symbol_gap(self, node) -> None:
        s = self.text[node.start:node.end]
        if len(s) < 4 or not re.fullmatch(r"[^\s()\[\]{}\"';@^`~\\,]+", s):
            return
        if s.startswith(("%", "&")) or s in ("true", "false", "nil"):
            return
        cut = self.rng.randint(2, len(s) - 2)
        if len(s) - cut > MAX_SYMBOL_MIDDLE:
            cut = len(s) - MAX_SYMBOL_MIDDLE
        self.gaps.append(_Gap(self.f, "symbol", node.start + cut, node.end, 0, (s,)))
        self.gap_nodes.append(None)

    # -- lists: name, body, clause, binding, arg, call
    def list_gaps(self, node, forms, head, parent, index) -> None:
        text = self.text
        base = head.rsplit("/", 1)[-1] if head else None
        # call: a one-line call form in argument/body position
        if (
            (head is not None and head.rsplit("/", 1)[-1] not in _NOT_A_CALL_GAP)
            or (forms and forms[0].kind == "keyword")
        ) and parent is not None and not _is_def_head(head) and node.kind == "list":
            in_call_position = parent.kind in ("vector", "map", "set") or (
                parent.kind in ("list", "fn", "reader-cond") and index >= 1
            )
            if parent.kind == "reader-cond":
                in_call_position = True
            length = node.end - node.start
            if in_call_position and MIN_CALL_CHARS <= length <= MAX_CALL_CHARS and _one_line(text, node.start, node.end):
                self.add("call", node.start, node.end, [node], 1)
        if base is None:
            # `(:k m)` is a call too
            if forms and forms[0].kind == "keyword":
                self.arg_gaps(forms)
            return
        if _is_def_head(head) and len(forms) >= 2:
            name_node = unmeta(forms[1])
            if name_node.kind == "symbol":
                self.def_positions.add(name_node.start)
                if name_node.end - name_node.start >= 2:
                    self.add("name", name_node.start, name_node.end, [name_node], 1)
        if base in _FN_HEADS:
            self.fn_gaps(forms, base)
        if base in _BINDING_HEADS and len(forms) >= 2 and forms[1].kind == "vector":
            self.binding_gaps(forms[1], base in _SEQ_BINDING_HEADS)
        if base == "letfn" and len(forms) >= 2 and forms[1].kind == "vector":
            for spec in _forms(forms[1]):
                if spec.kind == "list":
                    sf = _forms(spec)
                    if sf:
                        self.def_positions.add(unmeta(sf[0]).start)
                    self.fn_gaps([spec] + sf, "letfn-spec")
        if base in ("cond",):
            self.pair_gaps(forms[1:], 0)
        elif base in ("cond->", "cond->>", "case"):
            self.pair_gaps(forms[2:], 0, drop_odd_tail=(base == "case"))
        elif base == "condp":
            if not any(c.kind == "keyword" and text[c.start:c.end] == ":>>" for c in forms):
                self.pair_gaps(forms[3:], 0, drop_odd_tail=True)
        if base not in _NOT_CALL_HEADS and not _is_def_head(head):
            self.arg_gaps(forms)

    def arg_gaps(self, forms) -> None:
        text = self.text
        for c in forms[1:]:
            length = c.end - c.start
            if length < 1 or length > MAX_ARG_CHARS or not _one_line(text, c.start, c.end):
                continue
            if c.kind in ("string",) and length > 40:
                continue
            self.add("arg", c.start, c.end, [c], 1)

    def pair_gaps(self, forms, offset: int, drop_odd_tail: bool = False) -> None:
        items = forms[offset:]
        if len(items) % 2 and not drop_odd_tail:
            return
        for a, b in zip(items[0::2], items[1::2]):
            length = b.end - a.start
            if length < 5 or length > MAX_CLAUSE_CHARS or not _one_line(self.text, a.start, b.end):
                continue
            if any(x.kind == "string" and x.end - x.start > 30 for x in (a, b)):
                continue  # doc strings and messages are not guessable
            self.add("clause", a.start, b.end, [a, b], 2)

    def binding_gaps(self, vec, seq_bindings: bool) -> None:
        text = self.text
        items = _forms(vec)
        self.pair_gaps(items, 0)
        for i in range(0, len(items) - 1, 2):
            target, value = items[i], items[i + 1]
            key = text[target.start:target.end] if target.kind == "keyword" else None
            if seq_bindings and key == ":let" and value.kind == "vector":
                self.binding_gaps(value, False)
                continue
            if key is not None:
                continue
            self._mark_binding_names(target)
            t = unmeta(target)
            if t.kind == "symbol":
                name = text[t.start:t.end]
                if len(name) >= 2 and name != "_" and not name.startswith("&"):
                    self.add("name", t.start, t.end, [t], 1)

    def _mark_binding_names(self, node) -> None:
        """Symbols in a binding (or parameter) form are definitions, not `symbol` gaps."""
        node = unmeta(node)
        if node.kind == "symbol":
            self.def_positions.add(node.start)
            return
        if node.kind == "vector":
            for c in _forms(node):
                self._mark_binding_names(c)
        elif node.kind == "map":
            items = _forms(node)
            for k, v in zip(items[0::2], items[1::2]):
                key = self.text[k.start:k.end] if k.kind == "keyword" else None
                if key in (":keys", ":syms", ":strs") and v.kind == "vector":
                    for c in _forms(v):
                        self._mark_binding_names(c)
                elif key in (":as",):
                    self._mark_binding_names(v)
                elif k.kind in ("vector", "map", "symbol", "meta"):
                    self._mark_binding_names(k)

    def fn_gaps(self, forms, base: str) -> None:
        i = 1
        if base in ("defn", "defn-", "defmacro", "method"):
            i = 2
            while i < len(forms) and forms[i].kind in ("string", "map"):
                i += 1
        elif base == "defmethod":
            i = 3
            if i < len(forms) and unmeta(forms[i]).kind == "symbol":
                self.def_positions.add(unmeta(forms[i]).start)
                i += 1
        elif base in ("fn", "fn*"):
            if i < len(forms) and unmeta(forms[i]).kind == "symbol":
                self.def_positions.add(unmeta(forms[i]).start)
                i += 1
        if i >= len(forms):
            return
        arities = []
        first = unmeta(forms[i])
        if first.kind == "vector":
            arities.append((first, forms[i + 1:]))
        else:
            for c in forms[i:]:
                if c.kind == "list":
                    cf = _forms(c)
                    if cf and unmeta(cf[0]).kind == "vector":
                        arities.append((unmeta(cf[0]), cf[1:]))
        for params, body in arities:
            self._mark_binding_names(params)
            if len(body) > 1 and body[0].kind == "map":
                body = body[1:]  # {:pre ... :post ...}
            if not body:
                continue
            # the longest run of last body forms that fits
            for k in range(len(body)):
                start, end = body[k].start, body[-1].end
                if end - start <= MAX_BODY_CHARS:
                    if end - start >= MIN_BODY_CHARS:
                        self.add("body", start, end, body[k:], len(body) - k)
                    break


# --------------------------------------------------------------------------- cases


def _source_files(src_dir: Path) -> list[Path]:
    return sorted(
        p for p in src_dir.rglob("*") if p.is_file() and p.suffix in SOURCE_SUFFIXES
    )


def _package_short(package: str) -> str:
    short = package
    if short.startswith("lib") and short.endswith("-clojure"):
        short = short[3:-len("-clojure")]
    elif short.endswith("-clojure"):
        short = short[: -len("-clojure")]
    short = re.sub(r"[^A-Za-z0-9_.-]+", "-", short).strip("-")
    return short or "src"


def _context_bounds(f: _File, start: int, end: int, max_chars: int) -> tuple[int, int] | None:
    """Prefix start and suffix end at top-level boundaries, each side within `max_chars`."""
    lo = start - max_chars
    starts = [0] + [n.start for n in f.nodes]
    pre = min((b for b in starts if lo <= b <= start), default=None)
    hi = end + max_chars
    ends = [len(f.text)] + [n.end for n in f.nodes]
    post = max((b for b in ends if end <= b <= hi), default=None)
    if pre is None or post is None:
        return None
    return pre, post


def _check_middle(gap: _Gap, middle: str) -> bool:
    if not middle.strip():
        return False
    if gap.category == "symbol":
        return re.fullmatch(r"[^\s()\[\]{}\"';@^`~\\,]+", middle) is not None
    if not reader.is_balanced(middle):
        return False
    parsed = [n for n in reader.parse(middle) if n.kind not in _NON_FORM_KINDS]
    return len(parsed) == gap.n_forms and all(_all_closed(n) for n in parsed)


def _usable(gap: _Gap, max_context_chars: int) -> bool:
    return (
        _context_bounds(gap.file, gap.start, gap.end, max_context_chars) is not None
        and _check_middle(gap, gap.file.text[gap.start:gap.end])
    )


def _materialize(gap: _Gap, package: str, max_context_chars: int) -> dict | None:
    f = gap.file
    text = f.text
    bounds = _context_bounds(f, gap.start, gap.end, max_context_chars)
    if bounds is None:
        return None
    pre, post = bounds
    prefix, middle, suffix = text[pre:gap.start], text[gap.start:gap.end], text[gap.end:post]
    # invariants: the case is exactly a slice of the original text, and its middle is balanced
    if prefix + middle + suffix != text[pre:post]:
        raise AssertionError(f"{f.relative}: reconstruction mismatch at {gap.start}")
    if not _check_middle(gap, middle):
        return None
    if f.balanced and not reader.is_balanced(prefix + middle + suffix):
        return None
    return {
        "id": "",
        "prefix": prefix,
        "suffix": suffix,
        "middle": middle,
        "category": gap.category,
        "file": f.relative,
        "ns": f.ns,
        "package": package,
        "xref": gap.xref,
    }


def _stable_rng(seed: int, *parts: str) -> random.Random:
    return random.Random(f"{seed}|" + "|".join(parts))


def _find_gaps(src_dir: Path, seed: int, max_context_chars: int) -> list[_Gap]:
    """Every usable gap in the tree, deduplicated, in file order."""
    files = []
    for p in _source_files(src_dir):
        f = _load_file(p, p.relative_to(src_dir).as_posix())
        if f is not None:
            files.append(f)
    tree = _Tree(files)
    gaps: list[_Gap] = []
    seen: set[tuple] = set()
    for f in files:
        rng = _stable_rng(seed, f.relative, "find")
        for g in _Finder(f, rng).run():
            key = (g.category, g.start, g.end)
            if key in seen or not _usable(g, max_context_chars):
                continue
            seen.add(key)
            g.xref = any(tree.is_xref(f, s) for s in g.symbols)
            gaps.append(g)
        seen.clear()
    return gaps


def assign_ids(cases: list[dict]) -> list[dict]:
    """Set `id` to `<pkg-short>-<category>-<n>` (n counted per package and category, in order)."""
    counters: dict[tuple[str, str], int] = {}
    for case in cases:
        key = (case["package"], case["category"])
        counters[key] = counters.get(key, 0) + 1
        case["id"] = f"{_package_short(case['package'])}-{case['category']}-{counters[key]:04d}"
    return cases


def _pick_per_file(gaps: list[_Gap], per_file_limit: int | None, seed: int) -> list[_Gap]:
    by_file_cat: dict[tuple[str, str], list[_Gap]] = {}
    for g in gaps:
        by_file_cat.setdefault((g.file.relative, g.category), []).append(g)
    picked: list[_Gap] = []
    for rel, cat in sorted(by_file_cat, key=lambda k: (k[0], _category_rank(k[1]))):
        group = list(by_file_cat[(rel, cat)])
        _stable_rng(seed, rel, cat, "pick").shuffle(group)
        picked.extend(group if per_file_limit is None else group[:per_file_limit])
    return picked


def _category_rank(cat: str) -> int:
    return CATEGORIES.index(cat) if cat in CATEGORIES else len(CATEGORIES)


def _cases(gaps: list[_Gap], package: str, max_context_chars: int) -> list[dict]:
    cases = []
    for g in gaps:
        case = _materialize(g, package, max_context_chars)
        if case is not None:
            cases.append(case)
    return assign_ids(cases)


def _check_src_dir(src_dir: Path) -> None:
    if not src_dir.is_dir():
        raise InputError(f"bench make: source directory not found: {src_dir}")
    if not _source_files(src_dir):
        raise InputError(f"bench make: no .clj/.cljc/.cljs files under {src_dir}")


def make_cases(
    src_dir: Path,
    package: str | None = None,
    per_file_limit: int | None = None,
    seed: int = 0,
    max_context_chars: int = 4000,
) -> list[dict]:
    """Benchmark cases from every Clojure file under `src_dir`.

    `per_file_limit` caps the cases of each category taken from one file (None: every usable
    gap). `package` defaults to the directory's name. The result is deterministic for a given
    tree and seed; cases are ordered by file, then category, then the seeded pick order.
    """
    src_dir = Path(src_dir)
    _check_src_dir(src_dir)
    package = package or src_dir.resolve().name
    gaps = _pick_per_file(_find_gaps(src_dir, seed, max_context_chars), per_file_limit, seed)
    return _cases(gaps, package, max_context_chars)


def make_balanced_cases(
    src_dir: Path,
    total: int,
    package: str | None = None,
    seed: int = 0,
    max_context_chars: int = 4000,
) -> list[dict]:
    """About `total` cases from one tree, balanced across categories and files (see
    `select_balanced`); selection happens before prefixes and suffixes are cut, so large trees
    stay cheap."""
    src_dir = Path(src_dir)
    _check_src_dir(src_dir)
    package = package or src_dir.resolve().name
    gaps = _pick_per_file(_find_gaps(src_dir, seed, max_context_chars), None, seed)
    light = [{"category": g.category, "package": package, "file": g.file.relative, "gap": g} for g in gaps]
    chosen = [item["gap"] for item in select_balanced(light, total, seed=seed)]
    return _cases(chosen, package, max_context_chars)


def interleave(groups: list[list[dict]]) -> Iterator[dict]:
    """Round-robin over several lists."""
    iters = [iter(g) for g in groups if g]
    while iters:
        alive = []
        for it in iters:
            item = next(it, None)
            if item is not None:
                yield item
                alive.append(it)
        iters = alive


def select_balanced(cases: list[dict], total: int, seed: int = 0) -> list[dict]:
    """About `total` cases, balanced across categories, then packages, then files.

    Within each category the cases are taken round-robin over packages and, inside a package,
    round-robin over files, each in a seeded order; categories take turns until `total` is
    reached or all run out. Deterministic for a given input order and seed.
    """
    by_cat: dict[str, dict[str, dict[str, list[dict]]]] = {}
    for c in cases:
        by_cat.setdefault(c["category"], {}).setdefault(c["package"], {}).setdefault(c["file"], []).append(c)
    streams = []
    cats = [c for c in CATEGORIES if c in by_cat] + sorted(c for c in by_cat if c not in CATEGORIES)
    for cat in cats:
        packages = []
        for pkg in sorted(by_cat[cat]):
            files = []
            for rel in sorted(by_cat[cat][pkg]):
                group = list(by_cat[cat][pkg][rel])
                _stable_rng(seed, pkg, rel, cat, "select").shuffle(group)
                files.append(group)
            _stable_rng(seed, pkg, cat, "files").shuffle(files)
            packages.append(list(interleave(files)))
        _stable_rng(seed, cat, "packages").shuffle(packages)
        streams.append(interleave(packages))
    out: list[dict] = []
    for case in interleave([list(_take(s, total)) for s in streams]):
        if len(out) >= total:
            break
        out.append(case)
    order = {cat: i for i, cat in enumerate(cats)}
    out.sort(key=lambda c: (order[c["category"]], c["package"], c["file"]))
    return out


def _take(it: Iterator[dict], n: int) -> Iterator[dict]:
    for i, x in enumerate(it):
        if i >= n:
            return
        yield x


def category_counts(cases: Iterable[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in cases:
        counts[c["category"]] = counts.get(c["category"], 0) + 1
    return {k: counts[k] for k in [*CATEGORIES, *sorted(set(counts) - set(CATEGORIES))] if k in counts}


def write_jsonl(cases: Iterable[dict], out_path: Path) -> None:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", encoding="utf-8", newline="\n") as fh:
        for c in cases:
            fh.write(json.dumps(c, ensure_ascii=False) + "\n")


def main_make(
    src_dir: str,
    out_path: str,
    limit: int | None = None,
    package: str | None = None,
    seed: int = 0,
) -> int:
    """`cljassist bench make SRC_DIR OUT.jsonl [--limit N] [--package P] [--seed S]`.

    Without `limit`, every usable gap becomes a case; with it, about `limit` cases balanced
    across categories and files. Prints one summary line; returns the exit status."""
    if limit is not None and limit < 1:
        raise InputError(f"bench make: --limit must be at least 1, got {limit}")
    src = Path(src_dir)
    if limit is None:
        cases = make_cases(src, package=package, seed=seed)
    else:
        cases = make_balanced_cases(src, limit, package=package, seed=seed)
    if not cases:
        raise InputError(f"bench make: no usable gaps found in the Clojure files under {src_dir}")
    try:
        write_jsonl(cases, Path(out_path))
    except OSError as exc:
        raise InputError(f"bench make: cannot write {out_path}: {exc.strerror or exc}") from exc
    counts = category_counts(cases)
    summary = " ".join(f"{k}={v}" for k, v in counts.items())
    xrefs = sum(1 for c in cases if c["xref"])
    print(f"wrote {len(cases)} cases to {out_path}: {summary} (xref={xrefs})")
    return 0
