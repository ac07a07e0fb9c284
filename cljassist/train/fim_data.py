"""FIM training examples from the corpus, in exactly the prompt format the engine uses.

Every prompt is built by `cljassist.prompt.assemble_prompt`, the engine's own prompt assembly, from
the same inputs the engine gives it (the gap, the file the request names, the cursor's namespace and
top-level form, whether a REPL is attached, the default settings' limits), with a `FimFormat` of
`prompts/fim.toml` (our own family, `cljassist_smollm2` by default, in its PSM and SPM tables) -- so
a training prompt is laid out as the prompt the trained model is served: context block, budget
cuts and file label alike.

Spans (the "middle" the model must write) are chosen per file, deterministically from the seed:

* ``psm`` / ``spm``: syntax-aware spans from the reader's parse tree: whole forms at any depth,
  form bodies / argument runs (a collection's children from the i-th to the last), and binding or
  clause pairs; rendered in prefix-suffix-middle or suffix-prefix-middle order;
* ``symbol``: the tail of a symbol or keyword, the prefix ending inside it (``(str/jo|in``);
* ``char``: random character spans;
* ``l2r``: plain left-to-right file chunks (no FIM tokens, as the engine prompts a model without
  FIM), continuing the prefix up to a line end.

For every kind but ``symbol`` (whose lengths are bounded by the symbols) a length bucket is drawn
uniformly first (`LENGTH_BUCKETS`, characters), then a span in it, so lengths are spread evenly.
Each FIM middle is followed by the family's end-of-middle token (``tokens.eot``); an ``l2r``
chunk that reaches the end of its file is followed by ``tokens.eof``.

Context: with probability ``context_share`` an example gets the lines the live REPL context stage
(`cljassist.context`) would give at that cursor, computed like the engine does (from prefix +
suffix, the middle left out, with `cljassist.context.ContextQuery` for the names the code around
the cursor uses) but resolved against the defn/defmacro/def/defprotocol names, arglists and docstrings
read from the same package's sources instead of a running REPL -- plus clojure.core's vars, read
from the corpus' clojure package, among the matches of a bare prefix being typed, as the REPL's
ns-map has them (`offline_facts`). Lines are rendered by `cljassist.context.render_context_lines`,
the live provider's renderer, with the `[context]` settings of completion.toml. Train examples see
only the package's train files; valid ones the whole package.

Held-out validation is by whole file: a hash of ``package/path`` (independent of the seed) puts
about ``valid_share`` of the files into ``valid.jsonl``. Packages listed as ``bench`` or
``reserved`` in the corpus split are refused before any source is read.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import hashlib
import json
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Sequence

from cljassist.budgets import REPL_MATCHES, REPL_PUBLICS
from cljassist.clojure_text.analysis import Analysis
from cljassist.clojure_text.cursor import CursorContext, analyze_cursor
from cljassist.clojure_text.forms import meta_doc, meta_entry, meta_private, pr_form, string_value, unmeta
from cljassist.clojure_text.reader import Node, file_namespace, namespace_of_form, parse
from cljassist.clojure_text.requires import ns_requires
from cljassist.context import (
    ContextFacts,
    ContextQuery,
    ContextSettings,
    DefinitionSite,
    VarInfo,
    load_context_settings,
    render_context_lines,
)
from cljassist.corpus import ReservedPackage, Split
from cljassist.crossfile import Definition, DefinitionFinder, project_of
from cljassist.model.fim import FimFormat, load_fim_table
from cljassist.config import Settings
from cljassist.prompt import Prompt, PromptInput, PromptLimits, PromptTemplates, assemble_prompt, load_templates

__all__ = [
    "LENGTH_BUCKETS",
    "DEFAULT_MIX",
    "DEFAULT_FAMILY",
    "KINDS",
    "make_examples",
    "main_data",
    "add_data_arguments",
    "is_valid_file",
    "bucket_label",
    "chars_estimate",
    "gguf_token_counter",
    "index_package",
    "context_lines_for",
    "offline_facts",
    "ExampleSettings",
    "gap_prompt",
]

# [lo, hi) characters. The engine generates at most max_new_tokens (64) tokens, ~200 characters;
# the last bucket reaches a bit past that, as the benchmark's longest bodies do.
LENGTH_BUCKETS: tuple[tuple[int, int], ...] = ((1, 4), (4, 12), (12, 32), (32, 80), (80, 160), (160, 320))
KINDS = ("psm", "spm", "symbol", "char", "l2r")
# Mostly syntax-aware (psm + spm + symbol = 70 %), some random character spans, some plain text.
DEFAULT_MIX: dict[str, float] = {"psm": 0.25, "spm": 0.20, "symbol": 0.25, "char": 0.15, "l2r": 0.15}
# symbol and char spans are rendered suffix-first this often (the engine prompts PSM)
SPM_SHARE = 1 / 3
# symbol tails come from the buckets up to this many characters (names are short)
SYMBOL_MAX_TAIL = 31
DEFAULT_FAMILY = "cljassist_smollm2"
# File label as the engine writes it: relative path (benchmark cases, relative requests), file name
# (editors send absolute paths, the engine keeps the name), or none.
LABEL_MIX = (("path", 0.6), ("name", 0.3), ("none", 0.1))
CHARS_PER_EXAMPLE = 400  # one example per this many source characters (per pass)
MAX_LINE_CHARS = 2000  # files with longer lines are generated / minified: skipped


def chars_estimate(text: str) -> int:
    """A cheap token estimate: one token per 3 characters (rounded up)."""
    return -(-len(text) // 3)


def gguf_token_counter(gguf_path: str | Path) -> Callable[[str], int]:
    """Exact token counts with a GGUF's tokenizer (llama.cpp, vocabulary only), special-token texts
    parsed as the engine does (`LocalModel.count_tokens`)."""
    import llama_cpp  # heavy import: only for the real run

    llm = llama_cpp.Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)

    def count(text: str) -> int:
        return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    return count


def bucket_label(n: int) -> str:
    for lo, hi in LENGTH_BUCKETS:
        if lo <= n < hi:
            return f"{lo}-{hi - 1}"
    return f"{LENGTH_BUCKETS[-1][1]}+" if n >= LENGTH_BUCKETS[-1][1] else "0"


def _file_hash(package: str, path: str) -> float:
    digest = hashlib.sha256(f"{package}/{path}".encode("utf-8")).hexdigest()
    return int(digest[:12], 16) / float(16**12)


def is_valid_file(package: str, path: str, valid_share: float) -> bool:
    """Whether a corpus file is held out for validation (a hash of package/path, not the seed)."""
    return _file_hash(package, path) < valid_share


# ----------------------------------------------------------------------------------------------
# What the package's sources define: the stand-in for what a running REPL knows


@dataclass
class NsIndex:
    name: str
    vars: dict[str, VarInfo] = field(default_factory=dict)  # simple name -> info (private ones too)
    private: set[str] = field(default_factory=set)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> namespace
    refers: dict[str, str] = field(default_factory=dict)  # simple name -> qualified (not clojure.core)
    refer_all: list[str] = field(default_factory=list)  # namespaces referred with :refer :all / :use

    def publics(self) -> list[VarInfo]:
        return [self.vars[k] for k in sorted(self.vars) if k not in self.private]


PackageIndex = dict[str, NsIndex]
CORE_NS = "clojure.core"
CORE_PACKAGE = "libclojure-java"  # the corpus package whose sources define clojure.core

_DEF_HEADS = frozenset(["defn", "defn-", "defmacro", "def", "defonce", "defmulti", "definline", "defprotocol",
                        "s/defn", "schema.core/defn", "s/def", "defschema", "s/defschema"])
_WS_RUN = re.compile(r"\s+")


def _meta_arglists(node: Node, text: str) -> str:
    """``:arglists '([x] [x y])`` in the name's metadata, printed as the REPL prints it."""
    value = meta_entry(node, text, ":arglists")
    if value is None:
        return ""
    if value.kind == "quote" and value.children:
        value = value.children[0]
    return _clean(pr_form(value, text), 240) if value.kind == "list" else ""


def _clean(s: str, limit: int) -> str:
    s = _WS_RUN.sub(" ", s).strip()
    return s[:limit]


def _arglists(children: Sequence[Node], text: str) -> str:
    """``([x] [x y])`` from a defn's arities (children after name / docstring / attr-map)."""
    vectors: list[str] = []
    for c in children:
        c = unmeta(c)
        if c.kind == "vector":
            vectors.append(pr_form(c, text))
            break
        if c.kind == "list" and c.children and unmeta(c.children[0]).kind == "vector":
            vectors.append(pr_form(c.children[0], text))
    if not vectors:
        return ""
    return _clean("(" + " ".join(vectors) + ")", 240)


def _def_infos(node: Node, text: str, ns: str) -> list[tuple[str, VarInfo, bool]]:
    """(simple name, info, private) for what one top-level form defines."""
    out = _def_infos_raw(node, text, ns)
    if out:  # an explicit :arglists in the name's metadata is what the REPL shows
        node = unmeta(node)
        name_node = node.children[1]
        arglists = _meta_arglists(name_node, text)
        macro_meta = meta_entry(name_node, text, ":macro")
        macro = macro_meta is not None and text[macro_meta.start:macro_meta.end] == "true"
        if arglists or macro:
            name, info, private = out[0]
            out[0] = (name, VarInfo(info.qualified, 0, arglists or info.arglists, info.doc, info.macro or macro), private)
    return out


def _def_infos_raw(node: Node, text: str, ns: str) -> list[tuple[str, VarInfo, bool]]:
    node = unmeta(node)
    if node.kind != "list" or len(node.children) < 2 or node.children[0].kind != "symbol":
        return []
    head = text[node.children[0].start:node.children[0].end]
    if head not in _DEF_HEADS and head.rpartition("/")[2] not in ("defn", "defn-", "defmacro", "def"):
        return []
    head = head.rpartition("/")[2] if head not in _DEF_HEADS else head
    name_node = node.children[1]
    private = head == "defn-" or meta_private(name_node, text)
    doc_in_meta = meta_doc(name_node, text)
    name_node = unmeta(name_node)
    if name_node.kind != "symbol":
        return []
    name = text[name_node.start:name_node.end]
    if "/" in name:
        return []
    rest = list(node.children[2:])
    doc = doc_in_meta
    if rest and rest[0].kind == "string":
        doc = string_value(rest[0], text)
        rest = rest[1:]
    if head == "defprotocol":
        out = [(name, VarInfo(f"{ns}/{name}", 0, "", _clean(doc, 300)), private)]
        for sig in rest:
            sig = unmeta(sig)
            if sig.kind != "list" or not sig.children or sig.children[0].kind != "symbol":
                continue
            mname = text[sig.children[0].start:sig.children[0].end]
            vecs = [pr_form(c, text) for c in sig.children[1:] if unmeta(c).kind == "vector"]
            mdoc = next((string_value(c, text) for c in sig.children[1:] if c.kind == "string"), "")
            arg = _clean("(" + " ".join(vecs) + ")", 240) if vecs else ""
            out.append((mname, VarInfo(f"{ns}/{mname}", 0, arg, _clean(mdoc, 300)), False))
        return out
    if head in ("def", "defonce", "s/def", "defschema", "s/defschema"):
        arglists = ""
        if len(rest) == 1:
            value = unmeta(rest[0])
            if value.kind == "list" and value.children and text[value.children[0].start:value.children[0].end] in ("fn", "fn*"):
                arglists = _arglists(value.children[1:], text)
        elif len(rest) > 1 and not doc:
            return [(name, VarInfo(f"{ns}/{name}", 0, "", ""), private)]
        return [(name, VarInfo(f"{ns}/{name}", 0, arglists, _clean(doc, 300)), private)]
    if head == "defmulti":
        return [(name, VarInfo(f"{ns}/{name}", 0, "", _clean(doc, 300)), private)]
    if rest and rest[0].kind == "map":
        rest = rest[1:]  # attr-map
    if head in ("s/defn", "schema.core/defn") and len(rest) >= 2 and text[rest[0].start:rest[0].end] == ":-":
        rest = rest[2:]
    return [(name, VarInfo(f"{ns}/{name}", 0, _arglists(rest, text), _clean(doc, 300), head == "defmacro"), private)]


def index_package(sources: Iterable[str], places: Iterable[tuple[str, Path]] | None = None) -> PackageIndex:
    """What the package's namespaces define and require, read from their sources. ``places``, one
    per source: its classpath-relative path and its file on disk, which each var then names as a
    running program does (:file, :line and the resource), so the definitions a repository layout
    shows are found where the engine finds them (`DefinitionFinder.at_sites`)."""
    index: PackageIndex = {}
    located = iter(places) if places is not None else None
    for text in sources:
        place = next(located) if located is not None else None
        try:
            nodes = parse(text)
        except Exception:
            continue
        ns_name: str | None = None
        idx: NsIndex | None = None
        for node in nodes:
            name = namespace_of_form(unmeta(node), text)
            if name is not None and ns_name is None:
                ns_name = name
                idx = index.setdefault(name, NsIndex(name))
                if text[unmeta(node).children[0].start:unmeta(node).children[0].end] in ("ns", "clojure.core/ns"):
                    requires = ns_requires(unmeta(node), text)
                    idx.aliases.update(requires.aliases)
                    idx.refers.update(requires.refers)
                    idx.refer_all.extend(requires.refer_all)
                continue
            if idx is None:
                continue
            for simple, info, private in _def_infos(node, text, idx.name):
                if place is not None:
                    info = dataclasses.replace(info, file=place[0], line=text.count("\n", 0, node.start) + 1,
                                               url=place[1].resolve().as_uri())
                idx.vars[simple] = info  # the last definition wins, as when the file is loaded
                if private:
                    idx.private.add(simple)
                else:
                    idx.private.discard(simple)
    # :refer :all / :use of a namespace of this package: its publics are referred
    for idx in index.values():
        for lib in idx.refer_all:
            target = index.get(lib)
            if target is not None:
                for v in target.publics():
                    idx.refers.setdefault(v.name, v.qualified)
    return index


# ----------------------------------------------------------------------------------------------
# The context lines the engine would show at a cursor, with the package standing in for the REPL


def _lookup(pkg: PackageIndex, qualified: str) -> VarInfo | None:
    ns, _, name = qualified.partition("/")
    target = pkg.get(ns)
    return target.vars.get(name) if target is not None else None


def _resolve(pkg: PackageIndex, here: NsIndex, sym: str) -> VarInfo | None:
    if "/" in sym[1:]:
        q, _, name = sym.partition("/")
        target_name = here.aliases.get(q, q)
        target = pkg.get(target_name)
        if target is None or (name in target.private and target is not here):
            return None
        return target.vars.get(name)
    if sym in here.vars:
        return here.vars[sym]
    if sym in here.refers:
        return _lookup(pkg, here.refers[sym])
    return None


# What context_v1.clj's `matches`, `refers` and `publics` return at most, in the REPL's order.
REPL_MAX_MATCHES = REPL_MATCHES.value
REPL_MAX_REFERS = 64
REPL_MAX_PUBLICS = REPL_PUBLICS.value


def _offline_matches(pkg: PackageIndex, here: NsIndex, core: NsIndex | None, bare: str) -> tuple[VarInfo, ...]:
    """The vars of the namespace's ns-map whose names start with `bare`, as the REPL orders them:
    the namespace's own, then referred ones, then clojure.core's; shorter names first."""
    mapped = dict(here.vars)
    for simple, q in here.refers.items():
        info = _lookup(pkg, q)
        if info is not None:
            mapped.setdefault(simple, info)
    if core is not None and core is not here:
        for simple in core.vars:
            if simple not in core.private and simple.startswith(bare):
                mapped.setdefault(simple, core.vars[simple])
    rank = {here.name: 0, CORE_NS: 2}
    typed = [v for k, v in mapped.items() if k.startswith(bare)]
    typed.sort(key=lambda v: (rank.get(v.namespace, 1), len(v.name), v.name))
    return tuple(typed[:REPL_MAX_MATCHES])


def offline_facts(query: ContextQuery, pkg: PackageIndex, here: NsIndex, core: NsIndex | None = None) -> ContextFacts:
    """What a REPL that loaded the package's namespaces (`pkg`) would answer to `query` in `here`."""
    qualifiers: dict[str, str] = {}
    for q in query.qualifiers:
        target = here.aliases.get(q, q if q in pkg else None)
        if target is not None:
            qualifiers[q] = target
    publics = {t: tuple(pkg[t].publics()[:REPL_MAX_PUBLICS]) for t in qualifiers.values() if t in pkg}
    refers = sorted(f"{simple}\t{q}" for simple, q in here.refers.items())[:REPL_MAX_REFERS]
    return ContextFacts(
        query=query,
        matches=_offline_matches(pkg, here, core, query.bare) if query.bare else (),
        form_vars=tuple(_resolve(pkg, here, sym) for sym in query.refs.form),
        nearby_vars=tuple(_resolve(pkg, here, sym) for sym in query.refs.nearby),
        qualifiers=qualifiers,
        publics=publics,
        aliases=dict(here.aliases),
        refers=tuple(r.partition("\t")[2] for r in refers),
    )


def context_lines_for(text: str, cursor: CursorContext, pkg: PackageIndex,
                      settings: ContextSettings | None = None, core: NsIndex | None = None) -> list[str]:
    return offline_context(text, cursor, pkg, settings, core)[0]


def offline_context(text: str, cursor: CursorContext, pkg: PackageIndex, settings: ContextSettings | None = None,
                    core: NsIndex | None = None) -> tuple[list[str], tuple[DefinitionSite, ...]]:
    """The context lines at `cursor` in `text` (prefix + suffix), most relevant first, as
    `ReplContextProvider.gather` renders them, with `pkg` standing in for the running program.
    `core`: clojure.core's vars (read from the corpus' Clojure sources), which every namespace
    refers: the REPL offers them among the matches of a bare prefix (after the namespace's own and
    referred vars); everything else comes from `pkg`, the package's own namespaces.
    A namespace the package does not define gives no lines (the engine's "not loaded").
    Also the sites of the vars the code around the cursor uses, closest reference first, as
    `ReplContextProvider.gather` gives them (`LiveContext.sites`; only vars indexed with places)."""
    settings = settings or load_context_settings()
    here = pkg.get(cursor.namespace or "")
    if here is None:
        return [], ()
    query = ContextQuery.at(cursor.symbol_prefix, Analysis.around(text, cursor), settings)
    facts = offline_facts(query, pkg, here, core)
    sites = (v.site for v in facts.form_vars + facts.nearby_vars if v is not None)
    return render_context_lines(facts, settings), tuple(s for s in sites if s is not None)


# ----------------------------------------------------------------------------------------------
# Spans


@dataclass(frozen=True)
class _Span:
    start: int
    end: int


def _walk_nodes(nodes: Sequence[Node]) -> Iterable[Node]:
    stack = list(reversed(nodes))
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.children))


_COLLECTIONS = frozenset(["list", "vector", "map", "set", "fn", "reader-cond", "reader-cond-splicing", "namespaced-map"])


class _FileSpans:
    """Candidate spans of one file, bucketed by length."""

    def __init__(self, text: str):
        self.text = text
        nodes = parse(text)
        forms: list[list[_Span]] = [[] for _ in LENGTH_BUCKETS]
        symbols: list[Node] = []
        seen: set[tuple[int, int]] = set()

        def add(a: int, b: int) -> None:
            if (a, b) in seen or b <= a:
                return
            k = _bucket_of(b - a)
            if k is not None and text[a:b].strip():
                seen.add((a, b))
                forms[k].append(_Span(a, b))

        for node in _walk_nodes(nodes):
            if not node.closed:
                continue
            if node.kind in ("symbol", "keyword") and node.end - node.start >= 2:
                symbols.append(node)
            add(node.start, node.end)  # a whole form, at any depth
            kids = node.children
            if node.kind in _COLLECTIONS and len(kids) >= 2:
                for i in range(1, len(kids)):  # a body / the arguments from the i-th on
                    add(kids[i].start, kids[-1].end)
                for i in range(0, len(kids) - 1, 2):  # a binding / clause / map entry pair
                    add(kids[i].start, kids[i + 1].end)
        self.forms = forms
        self.symbols = symbols
        # for analysing cursors in a window of the text (see `analysis_view`)
        self.tops = [n.start for n in nodes]
        self.ns_end = next((n.end for n in nodes if namespace_of_form(unmeta(n), text) is not None), None)

    def analysis_view(self, gap_text: str, offset: int, reach: int) -> tuple[str, int]:
        """(text, offset) that `analyze_cursor` + `context_lines_for` read exactly as they read
        (gap_text, offset) -- the namespace form, then the top-level forms from well before the
        cursor's reach on -- so big files cost as much as small ones. `gap_text` must equal the
        file's text before `offset` (it is prefix + suffix)."""
        if self.ns_end is None:
            return gap_text, offset
        i = bisect.bisect_right(self.tops, offset - reach - 2) - 1
        if i < 0 or self.tops[i] <= self.ns_end:
            return gap_text, offset
        lo = self.tops[i]
        head = gap_text[: self.ns_end] + "\n"
        return head + gap_text[lo:], offset - lo + len(head)

    def form_span(self, rng: random.Random) -> _Span | None:
        buckets = [k for k, b in enumerate(self.forms) if b]
        if not buckets:
            return None
        k = rng.randrange(len(LENGTH_BUCKETS))
        if not self.forms[k]:
            k = rng.choice(buckets)
        return rng.choice(self.forms[k])

    def symbol_span(self, rng: random.Random) -> _Span | None:
        """A tail of a symbol / keyword: the prefix ends inside it."""
        if not self.symbols:
            return None
        longest = max(n.end - n.start for n in self.symbols) - 1
        buckets = [k for k, (lo, hi) in enumerate(LENGTH_BUCKETS) if lo <= longest and hi <= SYMBOL_MAX_TAIL + 1]
        lo, hi = LENGTH_BUCKETS[rng.choice(buckets)]
        fitting = [n for n in self.symbols if n.end - n.start - 1 >= lo]
        node = rng.choice(fitting)
        tail = rng.randint(lo, min(hi - 1, node.end - node.start - 1, SYMBOL_MAX_TAIL))
        return _Span(node.end - tail, node.end)

    def char_span(self, rng: random.Random) -> _Span | None:
        n = len(self.text)
        for _ in range(8):
            lo, hi = LENGTH_BUCKETS[rng.randrange(len(LENGTH_BUCKETS))]
            if lo >= n:
                continue
            length = rng.randint(lo, min(hi - 1, n - 1))
            start = rng.randint(0, n - length)
            if self.text[start:start + length].strip():
                return _Span(start, start + length)
        return None

    def l2r_span(self, rng: random.Random) -> _Span | None:
        """A chunk starting at a line start and ending at a line end (or the file's end)."""
        text = self.text
        starts = [0] + [m.end() for m in re.finditer("\n", text) if m.end() < len(text)]
        for _ in range(8):
            start = rng.choice(starts)
            lo, hi = LENGTH_BUCKETS[rng.randrange(len(LENGTH_BUCKETS))]
            want = rng.randint(lo, hi - 1)
            end = text.find("\n", min(len(text), start + want) - 1)
            end = len(text) if end < 0 else end + 1
            if end - start > 0 and text[start:end].strip():
                return _Span(start, end)
        return None


def _bucket_of(n: int) -> int | None:
    for k, (lo, hi) in enumerate(LENGTH_BUCKETS):
        if lo <= n < hi:
            return k
    return None


# ----------------------------------------------------------------------------------------------
# Examples


@dataclass(frozen=True)
class _Formats:
    psm: FimFormat
    spm: FimFormat
    l2r: FimFormat
    end: str  # end-of-middle token text
    eof: str  # end-of-file token text (l2r chunks reaching the end)


def _formats(family: str, table: dict[str, FimFormat] | None = None) -> _Formats:
    table = table or load_fim_table()
    psm = table[family]
    spm = table.get(family + "_spm", psm)
    if not psm.is_fim or psm.order != "PSM" or spm.order not in ("SPM", "PSM"):
        raise ValueError(f"FIM family {family!r} must be a PSM FIM format (with an optional {family}_spm)")
    end = psm.tokens.get("eot") or (psm.stop[0] if psm.stop else "")
    if not end:
        raise ValueError(f"FIM family {family!r} has no end-of-middle token (tokens.eot)")
    return _Formats(psm, spm, table["left_to_right"], end, psm.tokens.get("eof", end))


def _choose(rng: random.Random, weighted: Sequence[tuple[str, float]]) -> str:
    total = sum(w for _, w in weighted)
    x = rng.random() * total
    for name, w in weighted:
        x -= w
        if x < 0:
            return name
    return weighted[-1][0]


@dataclass
class ExampleSettings:
    formats: _Formats
    count_tokens: Callable[[str], int]
    templates: PromptTemplates
    context: ContextSettings
    mix: tuple[tuple[str, float], ...]
    context_share: float
    limits: PromptLimits
    core: NsIndex | None = None
    # reads other files' definitions for a family with a repository layout, as the engine's does
    definitions: DefinitionFinder = field(default_factory=DefinitionFinder)

    @classmethod
    def create(cls, *, count_tokens: Callable[[str], int] | None = None, family: str = DEFAULT_FAMILY,
               fim_table: dict[str, FimFormat] | None = None, mix: dict[str, float] | None = None,
               context_share: float = 0.8, max_prompt_tokens: int | None = None) -> "ExampleSettings":
        mix = dict(mix or DEFAULT_MIX)
        unknown = set(mix) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown example kinds: {sorted(unknown)}")
        return cls(
            formats=_formats(family, fim_table),
            count_tokens=count_tokens or chars_estimate,
            templates=load_templates(),
            context=load_context_settings(),
            mix=tuple((k, float(mix[k])) for k in KINDS if mix.get(k, 0) > 0),
            context_share=context_share,
            # the limits of an engine with default settings, the one the trained model is served by
            limits=PromptLimits.of(Settings(max_prompt_tokens=max_prompt_tokens)),
        )


def _request_file(rng: random.Random, path: str) -> str | None:
    """The file a request names: its path relative to the project (benchmark cases, relative
    requests), an absolute one (editors; the prompt shows its name alone), or none."""
    how = _choose(rng, LABEL_MIX)
    if how == "path":
        return path
    if how == "name":
        return PurePosixPath(path).name
    return None


def gap_prompt(spans: "_FileSpans", start: int, end: int, order: str, file: str | None, pkg: PackageIndex,
               s: ExampleSettings, with_context: bool = True) -> Prompt | None:
    """The prompt the engine would build for the gap ``spans.text[start:end]`` in `order` ("psm",
    "spm" or "l2r"), in a file named `file`; with `with_context`, a REPL that loaded `pkg` is
    attached. None if nothing fits the budget."""
    text = spans.text
    prefix = text[:start]
    suffix = "" if order == "l2r" else text[end:]  # a left-to-right model never sees the suffix
    view, at = spans.analysis_view(prefix + suffix, len(prefix), s.context.nearby_chars)
    cursor = analyze_cursor(view, at)
    lines, sites = offline_context(view, cursor, pkg, s.context, s.core) if with_context else ([], ())
    fmt = {"psm": s.formats.psm, "spm": s.formats.spm, "l2r": s.formats.l2r}[order]
    # A family with a repository layout is shown the project as the engine shows it: named after the
    # request's file (`project_of`), with the other files' definitions at the sites the REPL gave.
    project = project_of(file, cursor.namespace) if fmt.repo is not None else None
    definitions: tuple[Definition, ...] = ()
    if project is not None and sites:
        definitions = s.definitions.at_sites(sites, project, cursor.namespace)
    # the view keeps the text from the cursor's top-level form on: its offsets there are the
    # prefix's, shifted by where the cursor sits in each
    form_start = cursor.top_level[0] + len(prefix) - at if cursor.top_level else None
    # An example stands for a request with a REPL attached exactly when it has context lines. A
    # REPL that answers nothing (namespace not loaded, nothing to show) still has its share set
    # aside at inference: the code is cut shorter and no block takes its place -- the layout of a
    # prompt without a REPL, with less code before the gap. That layout is taught by the examples
    # without context, with the full budget's code; the layout with a context block (which sits
    # right before the cursor's form) only by examples that have one.
    gap = PromptInput(prefix, suffix, file, cursor.namespace, form_start, repl_attached=bool(lines),
                      project=project.name if project is not None else None,
                      project_file=project.current if project is not None else "")
    return _fitting_prompt(gap, fmt, lines, s, definitions)


def _fitting_prompt(gap: PromptInput, fmt: FimFormat, lines: Sequence[str], s: ExampleSettings,
                    definitions: Sequence[Definition] = ()) -> Prompt | None:
    """`assemble_prompt` as the engine calls it; should the whole prompt still count more tokens than
    the budget (counts of parts need not add up exactly), again with a budget lowered by the excess,
    then without context. None if nothing fits."""
    budget = s.limits.budget(s.templates)
    limits, ctx = s.limits, tuple(lines)
    for _ in range(3):
        prompt = assemble_prompt(gap, fmt, s.count_tokens, limits, ctx, s.templates, definitions)
        if prompt.tokens <= budget:
            return prompt
        lowered = limits.budget(s.templates) - (prompt.tokens - budget + 8)
        if lowered < 64:  # the context alone is too large for this budget: a request without a REPL
            limits, ctx, gap = s.limits, (), dataclasses.replace(gap, repl_attached=False)
            definitions = ()  # without a REPL there are no definition sites either
        else:
            limits = dataclasses.replace(limits, max_prompt_tokens=lowered)
    return None


def _examples_for_file(rng: random.Random, text: str, package: str, path: str, pkg: PackageIndex,
                       n: int, s: ExampleSettings) -> list[dict]:
    spans = _FileSpans(text)
    out: list[dict] = []
    used: set[tuple[str, int, int]] = set()
    for _ in range(n * 2):
        if len(out) >= n:
            break
        kind = _choose(rng, s.mix)
        if kind in ("psm", "spm"):
            span = spans.form_span(rng)
            order = kind
        elif kind == "symbol":
            span = spans.symbol_span(rng)
            order = "spm" if rng.random() < SPM_SHARE else "psm"
        elif kind == "char":
            span = spans.char_span(rng)
            order = "spm" if rng.random() < SPM_SHARE else "psm"
        else:
            span = spans.l2r_span(rng)
            order = "l2r"
        if span is None or (kind, span.start, span.end) in used:
            continue
        used.add((kind, span.start, span.end))
        file = _request_file(rng, path)
        with_context = rng.random() < s.context_share
        prompt = gap_prompt(spans, span.start, span.end, order, file, pkg, s, with_context)
        if prompt is None:
            continue
        middle = text[span.start:span.end]
        if order == "l2r":
            completion = middle + (s.formats.eof if span.end == len(text) else "")
        else:
            completion = middle + s.formats.end
        out.append({
            "prompt": prompt.text,
            "completion": completion,
            "kind": kind,
            "order": order,
            "package": package,
            "path": path,
            "start": span.start,
            "end": span.end,
            "context_lines": len(prompt.context_lines),
            "prompt_tokens": prompt.tokens,
        })
    return out


def _read_manifest(corpus_dir: Path, split: Split) -> list[dict]:
    manifest = json.loads((corpus_dir / "manifest.json").read_text(encoding="utf-8"))
    # `cljassist train corpus` writes "path" relative to the corpus dir ("files/<pkg>/<in jar>") and
    # "relative" inside the package; everything here works with the path inside the package.
    files = [{**f, "path": f.get("relative") or f["path"]} for f in manifest.get("files", [])]
    refused = sorted({f["package"] for f in files if f["package"] in split.bench or f["package"] in split.reserved})
    if refused:
        raise ReservedPackage(
            f"the corpus lists bench/reserved packages, which are never used for training: {', '.join(refused)}")
    for f in files:
        p = PurePosixPath(f["path"])
        if p.is_absolute() or ".." in p.parts or "/" in f["package"] or f["package"] in ("", ".", ".."):
            raise ValueError(f"bad manifest entry: {f['package']}/{f['path']}")
    return sorted(files, key=lambda f: (f["package"], f["path"]))


def _core_index(corpus_dir: Path, files: Iterable[dict]) -> NsIndex | None:
    """clojure.core's vars from the corpus' clojure sources (core.clj and the files it loads with
    (in-ns 'clojure.core)), or None when the corpus has no such package."""
    sources = []
    for f in files:
        if not f["path"].startswith("clojure/core"):
            continue
        try:
            text = (corpus_dir / "files" / CORE_PACKAGE / f["path"]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if file_namespace(text) == CORE_NS:
            sources.append(text)
    return index_package(sources).get(CORE_NS) if sources else None


def _seeded(seed: int, *parts: str) -> random.Random:
    digest = hashlib.sha256("\0".join([str(seed), *parts]).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def make_examples(
    corpus_dir: str | Path,
    out_dir: str | Path,
    seed: int = 0,
    *,
    valid_share: float = 0.03,
    count_tokens: Callable[[str], int] | None = None,
    family: str = DEFAULT_FAMILY,
    mix: dict[str, float] | None = None,
    context_share: float = 0.8,
    chars_per_example: int = CHARS_PER_EXAMPLE,
    passes: int = 1,
    max_prompt_tokens: int | None = None,
    split_path: str | Path | None = None,
    core_matches: bool = True,
    fim_table: dict[str, FimFormat] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write out_dir/train.jsonl, out_dir/valid.jsonl and out_dir/stats.json; return the stats.

    One example per `chars_per_example` source characters per pass (at least one per file and
    pass); `passes` > 1 draws more, different spans from the same files. Same arguments, same bytes.
    """
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    split = Split.load(Path(split_path) if split_path else None)
    files = _read_manifest(corpus_dir, split)  # refuses bench/reserved before reading any source
    s = ExampleSettings.create(count_tokens=count_tokens, family=family, fim_table=fim_table, mix=mix,
                               context_share=context_share, max_prompt_tokens=max_prompt_tokens)

    # which files are held out: by hash of package/path; at least one when there are two or more
    valid_keys = {(f["package"], f["path"]) for f in files if is_valid_file(f["package"], f["path"], valid_share)}
    if valid_share > 0 and not valid_keys and len(files) >= 2:
        f = min(files, key=lambda f: _file_hash(f["package"], f["path"]))
        valid_keys.add((f["package"], f["path"]))

    texts: dict[tuple[str, str], str] = {}
    by_package: dict[str, list[dict]] = {}
    for f in files:
        by_package.setdefault(f["package"], []).append(f)
    if core_matches:
        s.core = _core_index(corpus_dir, by_package.get(CORE_PACKAGE, ()))

    train: list[dict] = []
    valid: list[dict] = []
    skipped: Counter = Counter()
    n_files = {"train": 0, "valid": 0}
    done = 0
    for package in sorted(by_package):
        pkg_files = by_package[package]
        for f in pkg_files:
            try:
                texts[(package, f["path"])] = (corpus_dir / "files" / package / f["path"]).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                skipped["unreadable"] += 1
        # train examples see the package's train files only (context lines and other files'
        # definitions alike); valid ones the whole package
        read = [f["path"] for f in pkg_files if (package, f["path"]) in texts]
        trained = [path for path in read if (package, path) not in valid_keys]

        def indexed(paths: list[str]) -> PackageIndex:
            return index_package((texts[(package, path)] for path in paths),
                                 ((path, corpus_dir / "files" / package / path) for path in paths))

        all_index, train_index = indexed(read), indexed(trained)
        for f in pkg_files:
            key = (package, f["path"])
            done += 1
            text = texts.pop(key, None)
            if progress is not None:
                progress(done, len(files))
            if text is None:
                continue
            if not text.strip() or max((len(line) for line in text.splitlines()), default=0) > MAX_LINE_CHARS:
                skipped["empty-or-long-lines"] += 1
                continue
            is_valid = key in valid_keys
            n_files["valid" if is_valid else "train"] += 1
            for p in range(passes):
                rng = _seeded(seed, package, f["path"], str(p))
                n = max(1, round(len(text) / chars_per_example))
                exs = _examples_for_file(rng, text, package, f["path"], all_index if is_valid else train_index, n, s)
                (valid if is_valid else train).extend(exs)

    _seeded(seed, "shuffle").shuffle(train)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("valid", valid)):
        tmp = out_dir / f"{name}.jsonl.tmp"
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(out_dir / f"{name}.jsonl")

    stats = _stats(train, valid, s, seed, family, n_files, skipped, sorted(by_package), valid_share)
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return stats


def _stats(train, valid, s: ExampleSettings, seed, family, n_files, skipped, packages, valid_share) -> dict:
    def part(rows: list[dict]) -> dict:
        kinds = Counter(r["kind"] for r in rows)
        orders = Counter(r["order"] for r in rows)
        hist: dict[str, dict[str, int]] = {}
        for r in rows:
            h = hist.setdefault(r["kind"], {bucket_label(lo): 0 for lo, _ in LENGTH_BUCKETS})
            label = bucket_label(r["end"] - r["start"])
            h[label] = h.get(label, 0) + 1
        prompt_tokens = sum(r["prompt_tokens"] for r in rows)
        completion_tokens = sum(s.count_tokens(r["completion"]) for r in rows)
        return {
            "examples": len(rows),
            "kinds": {k: kinds.get(k, 0) for k in KINDS},
            "orders": dict(sorted(orders.items())),
            "with_context": sum(1 for r in rows if r["context_lines"]),
            "span_chars_histogram": {k: hist[k] for k in KINDS if k in hist},
            "tokens_estimate": {"prompt": prompt_tokens, "completion": completion_tokens,
                                "total": prompt_tokens + completion_tokens},
            "max_prompt_tokens": max((r["prompt_tokens"] for r in rows), default=0),
        }

    return {
        "seed": seed,
        "fim_family": family,
        "end_of_middle": s.formats.end,
        "valid_share": valid_share,
        "mix": dict(s.mix),
        "context_share": s.context_share,
        "length_buckets": [list(b) for b in LENGTH_BUCKETS],
        "packages": packages,
        "files": n_files,
        "skipped_files": dict(skipped),
        "train": part(train),
        "valid": part(valid),
    }


# ----------------------------------------------------------------------------------------------
# Command line: `cljassist train data CORPUS_DIR OUT_DIR [--seed N] [--valid-share F]`


def add_data_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("corpus_dir", help="corpus written by `cljassist train corpus` (manifest.json, files/)")
    parser.add_argument("out_dir", help="where train.jsonl, valid.jsonl and stats.json go")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--valid-share", type=float, default=0.03, help="share of files held out (default 0.03)")
    parser.add_argument("--family", default=DEFAULT_FAMILY, help=f"FIM family of prompts/fim.toml (default {DEFAULT_FAMILY})")
    parser.add_argument("--passes", type=int, default=1, help="draw this many different span sets per file")
    parser.add_argument("--chars-per-example", type=int, default=CHARS_PER_EXAMPLE)
    parser.add_argument("--tokenizer", default=None, metavar="GGUF",
                        help="count tokens with this GGUF's tokenizer (default: a chars/3 estimate)")
    return parser


def main_data(args: argparse.Namespace) -> int:
    count = gguf_token_counter(args.tokenizer) if getattr(args, "tokenizer", None) else None
    last = [-1]

    def progress(done: int, total: int) -> None:
        pct = done * 100 // max(1, total)
        if pct != last[0] and sys.stderr.isatty() or done == total:
            last[0] = pct
            bar = "#" * (pct // 4)
            print(f"\rfim data [{bar:<25}] {done}/{total} files", end="\n" if done == total else "",
                  file=sys.stderr, flush=True)

    try:
        stats = make_examples(
            args.corpus_dir, args.out_dir, seed=getattr(args, "seed", 0),
            valid_share=getattr(args, "valid_share", 0.03),
            count_tokens=count,
            family=getattr(args, "family", DEFAULT_FAMILY),
            passes=getattr(args, "passes", 1),
            chars_per_example=getattr(args, "chars_per_example", CHARS_PER_EXAMPLE),
            progress=progress,
        )
    except (ReservedPackage, ValueError, FileNotFoundError, KeyError) as e:
        print(f"cljassist train data: {e}", file=sys.stderr)
        return 2
    t, v = stats["train"], stats["valid"]
    print(f"{t['examples']} train examples from {stats['files']['train']} files, "
          f"{v['examples']} valid from {stats['files']['valid']} files; "
          f"~{t['tokens_estimate']['total']} train tokens; kinds {t['kinds']} -> {args.out_dir}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_data(add_data_arguments(argparse.ArgumentParser(prog="cljassist train data")).parse_args()))
