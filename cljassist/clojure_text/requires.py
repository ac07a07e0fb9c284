"""What a namespace's ``ns`` form requires: its aliases, the names it refers, the namespaces it refers
whole (read, never evaluated)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from .reader import Node, _parse, namespace_of_form, unmeta

__all__ = ["NsRequires", "ns_requires", "file_requires"]


@dataclass
class NsRequires:
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> namespace
    refers: dict[str, str] = field(default_factory=dict)  # simple name -> qualified (not clojure.core)
    refer_all: list[str] = field(default_factory=list)  # namespaces referred with :refer :all / :use


def file_requires(text: str) -> tuple[str | None, NsRequires]:
    """The namespace the first ``ns`` form of `text` declares and what it requires; the text is
    read only up to that form."""
    found: list[Node] = []

    def stop(node: Node) -> bool:
        if namespace_of_form(unmeta(node), text) is not None:
            found.append(unmeta(node))
            return True
        return False

    _parse(text, False, None, stop)
    if not found:
        return None, NsRequires()
    node = found[0]
    requires = NsRequires()
    if text[node.children[0].start:node.children[0].end] in ("ns", "clojure.core/ns"):
        requires = ns_requires(node, text)
    return namespace_of_form(node, text), requires


def ns_requires(node: Node, text: str) -> NsRequires:
    """The :require / :use / :require-macros clauses of the ``(ns ...)`` form `node`."""
    found = NsRequires()
    clauses: list[Node] = []
    for c in node.children[2:]:
        c = unmeta(c)
        if c.kind in ("reader-cond", "reader-cond-splicing"):
            for o in c.children[1::2]:
                clauses.extend(o.children if o.kind in ("vector", "list") and o.children and o.children[0].kind == "list" else [o])
        else:
            clauses.append(c)
    for clause in clauses:
        if clause.kind != "list" or not clause.children or clause.children[0].kind != "keyword":
            continue
        kw = text[clause.children[0].start:clause.children[0].end]
        if kw not in (":require", ":use", ":require-macros"):
            continue
        for spec in clause.children[1:]:
            if spec.kind == "keyword":
                continue
            for lib, opts in _libspecs(spec, text):
                if kw == ":use" and not opts:
                    found.refer_all.append(lib)
                i = 0
                while i < len(opts) - 1:
                    key = text[opts[i].start:opts[i].end]
                    val = unmeta(opts[i + 1])
                    if key in (":as", ":as-alias") and val.kind == "symbol":
                        found.aliases[text[val.start:val.end]] = lib
                    elif key in (":refer", ":only"):
                        if val.kind in ("vector", "list"):
                            for s in val.children:
                                if s.kind == "symbol" and lib not in ("clojure.core", "cljs.core"):
                                    found.refers[text[s.start:s.end]] = f"{lib}/{text[s.start:s.end]}"
                        elif text[val.start:val.end] == ":all":
                            found.refer_all.append(lib)
                    i += 2
    return found


def _libspecs(node: Node, text: str, prefix: str = "") -> Iterable[tuple[str, list[Node]]]:
    """(namespace, options) for each libspec of a :require / :use clause element."""
    node = unmeta(node)
    if node.kind == "symbol":
        yield (prefix + "." if prefix else "") + text[node.start:node.end], []
    elif node.kind == "vector" and node.children and node.children[0].kind == "symbol":
        lib = text[node.children[0].start:node.children[0].end]
        opts = list(node.children[1:])
        if opts and all(o.kind in ("symbol", "vector") for o in opts) and not any(o.kind == "keyword" for o in opts):
            for o in opts:  # [prefix lib1 [lib2 :as x]]
                yield from _libspecs(o, text, lib)
        else:
            yield (prefix + "." if prefix else "") + lib, opts
    elif node.kind == "list" and node.children and node.children[0].kind == "symbol":
        lib = text[node.children[0].start:node.children[0].end]
        for o in node.children[1:]:
            yield from _libspecs(o, text, lib)
    elif node.kind in ("reader-cond", "reader-cond-splicing"):
        for o in node.children[1::2]:
            if node.kind == "reader-cond-splicing" and o.kind in ("vector", "list"):
                for c in o.children:
                    yield from _libspecs(c, text, prefix)
            else:
                yield from _libspecs(o, text, prefix)
