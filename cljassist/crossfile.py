"""Other files' definitions: the top-level forms, elsewhere in the project, of the vars the code at
the cursor refers to, for a prompt in a repository layout (`FimFormat.repo_preamble`).

Where a definition is found:

* With a REPL, the context gather brings each referenced var's :file and :line and the resource
  that file resolves to (`DefinitionSite`). A ``file:`` resource is read here and the top-level form
  starting at that line is cut out with our own reader. A ``jar:`` resource is a library, not the
  project, and is left out; so is the cursor's own namespace (its code is in the prompt already).
* Without one (or for a namespace the REPL has not loaded), on disk: an absolute request file gives
  the project (the nearest directory with a project marker, `config.find_project_root`) and its
  source directory (the file's path minus its namespace's segments). The names the code uses as
  ``alias/x``, or refers from another namespace, are looked for in that namespace's file
  (``a.b-c`` -> ``a/b_c.clj``/``.cljc``/``.cljs``) under the source directories.

Sources are read and indexed once per (path, modification time). The finder gives definitions
closest reference first (what the prompt keeps when they do not all fit); the prompt lays them out
by file, then position (`in_file_order`), so the same set always reads the same and the model's
cached evaluation of the preamble stays valid while the user types inside one form.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence
from urllib.parse import unquote, urlparse

from cljassist.budgets import DEFINITION_LINES
from cljassist.clojure_text.closers import implied_closers
from cljassist.clojure_text.reader import Node, parse, unmeta
from cljassist.clojure_text.analysis import Analysis
from cljassist.clojure_text.references import qualified
from cljassist.clojure_text.requires import file_requires
from cljassist.config import find_project_root
from cljassist.context import ContextQuery, DefinitionSite, load_context_settings

__all__ = ["Definition", "Project", "DefinitionFinder", "project_of", "definition_at_line", "cut_definition",
           "in_file_order", "unique_definitions", "SOURCE_SUFFIXES", "SOURCE_DIRS"]

SOURCE_SUFFIXES = (".clj", ".cljc", ".cljs")
# Under a project root, where namespaces usually live (Leiningen, tools.deps, Maven layouts).
SOURCE_DIRS = ("src", "src/main/clojure", "src/clj", "src/cljc", "src/cljs", "test", "dev")
# Project-name fallback when nothing names the project.
UNNAMED_PROJECT = "project"


@dataclass(frozen=True)
class Definition:
    """One definition as the prompt shows it."""

    qualified: str  # the var it defines
    path: str  # its file as the prompt names it (relative to the project root where under it)
    line: int  # 1-based line of the form in that file
    text: str  # the form, cut to DEFINITION_LINES lines


@dataclass(frozen=True)
class Project:
    """The project a request's file belongs to, as far as the path tells."""

    name: str
    root: Path | None  # None: a relative request path (benchmark cases) or no file
    current: str  # the request's file as the prompt names it
    source_dirs: tuple[Path, ...] = ()  # where its namespaces' files are looked for on disk

    def holds(self, path: Path) -> bool:
        """Whether `path` is one of the project's files: under its root; any file when the root is
        not known (a relative request path: the classpath's source directories are all there is)."""
        return self.root is None or path.resolve().is_relative_to(self.root)

    def shown_path(self, path: Path | None, file_meta: str) -> str:
        """A definition's file as the prompt names it: relative to the project root where under it;
        else the classpath-relative :file; else the file's name."""
        if path is not None and self.root is not None:
            try:
                return path.resolve().relative_to(self.root).as_posix()
            except ValueError:
                pass
        if file_meta and not os.path.isabs(file_meta):
            return file_meta
        return path.name if path is not None else PurePosixPath(file_meta).name


def project_of(file: str | None, namespace: str | None) -> Project:
    """The project of the request's `file` in `namespace`. A relative path is named as given and
    the project after its first segment (benchmark cases: ``bidi/vhosts.clj`` -> ``bidi``)."""
    if not file:
        return Project(UNNAMED_PROJECT, None, "")
    path = Path(file)
    if not path.is_absolute():
        parts = PurePosixPath(file).parts
        return Project(parts[0] if len(parts) > 1 else UNNAMED_PROJECT, None, file)
    path = path.resolve()
    own_dir = _source_dir(path, namespace)
    root = find_project_root(path.parent) or own_dir
    if root is None:
        return Project(path.parent.name or UNNAMED_PROJECT, None, path.name)
    name = (root.parent if root.name in SOURCE_DIRS else root).name or UNNAMED_PROJECT
    dirs = [own_dir] if own_dir is not None else []
    dirs += [root / d for d in SOURCE_DIRS if (root / d).is_dir()]
    project = Project(name, root, "", tuple(dict.fromkeys(dirs)))
    return Project(project.name, root, project.shown_path(path, file), project.source_dirs)


def _source_dir(path: Path, namespace: str | None) -> Path | None:
    """The directory `path` sits under as the file of `namespace` (``src`` for src/a/b.clj of a.b)."""
    if not namespace:
        return None
    segments = namespace.replace("-", "_").split(".")
    parents = path.with_suffix("").parts
    if len(parents) <= len(segments) or list(parents[-len(segments):]) != segments:
        return None
    return Path(*parents[: -len(segments)])


# ----------------------------------------------------------------------------------------------
# Reading definitions out of a source text


def definition_at_line(text: str, line: int, nodes: Sequence[Node] | None = None) -> tuple[int, int] | None:
    """(start, end) of the top-level form of `text` that starts on 1-based `line`."""
    for node in nodes if nodes is not None else parse(text):
        start_line = text.count("\n", 0, node.start) + 1
        if start_line == line:
            return node.start, node.end
        if start_line > line:
            return None
    return None


def cut_definition(form: str, max_lines: int = DEFINITION_LINES.value) -> str:
    """`form` as the prompt shows it: whole when short, else its first lines (signature, docstring,
    the start of the body) with `...` and the closers of what they left open."""
    lines = form.splitlines()
    if len(lines) <= max_lines:
        return form
    kept = "\n".join(lines[:max_lines]).rstrip()
    closers = implied_closers(kept + " ")
    return kept + " ..." + (closers or "")


def _defined_name(node: Node, text: str) -> str | None:
    """The simple name a top-level ``(def... name ...)`` form defines, else None."""
    node = unmeta(node)
    if node.kind != "list" or len(node.children) < 2 or node.children[0].kind != "symbol":
        return None
    head = text[node.children[0].start:node.children[0].end].rpartition("/")[2]
    if not head.startswith("def") or head == "default":
        return None
    name = unmeta(node.children[1])
    if name.kind != "symbol":
        return None
    simple = text[name.start:name.end]
    return None if "/" in simple else simple


@dataclass(frozen=True)
class _Source:
    mtime_ns: int
    text: str
    nodes: tuple[Node, ...]
    defined: dict[str, tuple[int, int]]  # simple name -> (start, end) of its first definition


# ----------------------------------------------------------------------------------------------


class DefinitionFinder:
    """Finds definitions, keeping each source file's reading while its modification time holds."""

    def __init__(self, max_files: int = 256):
        self._sources: dict[Path, _Source] = {}
        self._lock = threading.Lock()
        self._max_files = max_files

    def at_sites(self, sites: Iterable[DefinitionSite], project: Project, namespace: str | None) -> tuple[Definition, ...]:
        """The definitions at the REPL's `sites` that are in other files of the project: ``file:``
        resources the project holds, not the cursor's `namespace`, not the request's own file."""
        found: list[Definition] = []
        for site in sites:
            if site.qualified.partition("/")[0] == namespace:
                continue
            path = _file_of(site.url)
            if path is None or site.line <= 0 or not project.holds(path):
                continue
            source = self._read(path)
            if source is None:
                continue
            span = definition_at_line(source.text, site.line, source.nodes)
            if span is None:
                continue
            shown = project.shown_path(path, site.file)
            if shown == project.current:
                continue
            found.append(Definition(site.qualified, shown, site.line, cut_definition(source.text[span[0]:span[1]])))
        return unique_definitions(found)

    def on_disk(self, analysis: Analysis, project: Project) -> tuple[Definition, ...]:
        """The definitions of what the code around the cursor refers to (the references the REPL
        context asks about) through the file's ns form (aliases and refers), found in those
        namespaces' files under the project's source directories."""
        if not project.source_dirs:
            return ()
        refs = ContextQuery.at("", analysis, load_context_settings()).refs
        namespace, requires = file_requires(analysis.text)
        found: list[Definition] = []
        for sym in dict.fromkeys(refs.form + refs.nearby):
            if qualified(sym):
                qualifier, _, name = sym.partition("/")
                target = requires.aliases.get(qualifier, qualifier)
            elif sym in requires.refers:
                target, _, name = requires.refers[sym].partition("/")
            else:
                continue
            if target == namespace:
                continue
            located = self._find_in_namespace(target, name, project)
            if located is not None:
                path, source, (start, end) = located
                line = source.text.count("\n", 0, start) + 1
                found.append(Definition(f"{target}/{name}", project.shown_path(path, ""), line,
                                        cut_definition(source.text[start:end])))
        return unique_definitions(found)

    def _find_in_namespace(self, namespace: str, name: str, project: Project):
        relative = namespace.replace("-", "_").replace(".", "/")
        for directory in project.source_dirs:
            for suffix in SOURCE_SUFFIXES:
                path = directory / (relative + suffix)
                source = self._read(path)
                if source is not None and name in source.defined:
                    return path, source, source.defined[name]
        return None

    def _read(self, path: Path) -> _Source | None:
        try:
            mtime_ns = path.stat().st_mtime_ns
        except OSError:
            return None
        with self._lock:
            cached = self._sources.get(path)
        if cached is not None and cached.mtime_ns == mtime_ns:
            return cached
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
            nodes = tuple(parse(text))
        except (OSError, RecursionError):
            return None
        defined: dict[str, tuple[int, int]] = {}
        for node in nodes:
            name = _defined_name(node, text)
            if name is not None:
                defined.setdefault(name, (node.start, node.end))
        source = _Source(mtime_ns, text, nodes, defined)
        with self._lock:
            if len(self._sources) >= self._max_files:
                self._sources.clear()
            self._sources[path] = source
        return source


def unique_definitions(definitions: Iterable[Definition]) -> tuple[Definition, ...]:
    """Each definition once (two names a form defines are one form), in the order given."""
    seen: dict[tuple[str, int], Definition] = {}
    for d in definitions:
        seen.setdefault((d.path, d.line), d)
    return tuple(seen.values())


def in_file_order(definitions: Iterable[Definition]) -> tuple[Definition, ...]:
    """By file, then position in it: the same set of definitions always reads the same."""
    return tuple(sorted(definitions, key=lambda d: (d.path, d.line)))


def _file_of(url: str) -> Path | None:
    """The local file a ``file:`` resource URL names; None for any other (a jar's entry)."""
    if not url.startswith("file:"):
        return None
    parsed = urlparse(url)
    return Path(unquote(parsed.path)) if parsed.path else None
