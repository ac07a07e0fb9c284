"""Live REPL context stage: what the running program knows about the code around the cursor.

What it gathers, for the cursor's namespace (most relevant first, as the prompt stage expects):

1. the vars matching the symbol being typed (``str/jo`` -> ``clojure.string/join``) with arglists and
   the first sentence of their docstrings;
2. the vars the enclosing top-level form refers to (locals and special forms skipped), closest to
   the cursor first, then the ``alias/x`` vars used in the forms nearby;
3. the public names of the aliased namespaces the code near the cursor uses;
4. the namespace's aliases and (non-``clojure.core``) refers.

How:

* Everything runs on a tooling session of our own, cloned once per connection (again after
  ``connection_generation`` changes), never on the user's session. Into it we load a small read-only
  helper namespace (`HELPER_NS`), so that each gather is ONE eval of a short call whose arguments
  are string / number literals only: names are validated by strict regexes *and* passed as string
  literals that the helper turns into symbols with `symbol` (never `read-string`), and the session
  runs with ``*read-eval*`` false. Nothing the user typed is ever spliced in as code.
* Caching: the Python side keeps, per namespace, the namespace's fingerprint (a cheap hash over
  ``ns-map`` / ``ns-aliases`` identities and the interned vars' metadata identities), its aliases and
  refers, per-(namespace, symbol) var info keyed by the var's metadata identity, per-prefix matches
  and the publics of aliased namespaces keyed by those namespaces' fingerprints. Each gather sends
  what it already knows; the helper recomputes the (microsecond-cheap) fingerprints and resolutions
  and sends back only what changed, so on a warm cache the reply is a few dozen bytes. A namespace
  changed by an eval / load-file is therefore seen on the next gather without any hook;
  `ReplContextProvider.invalidate` exists for front-ends that want to drop the cache anyway.
* A namespace that is not loaded (``find-ns`` is nil) yields no context and ``ns_loaded=False``; it
  is never loaded silently -- `ReplContextProvider.ensure_loaded` does that when a caller asks.

How lines are written, and the limits on how many, are data: the ``[context]`` section of
``prompts/completion.toml``.
"""

from __future__ import annotations

import re
import threading
import time
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import edn_format

from cljassist.budgets import (
    CONTEXT_CACHE_ENTRIES, NREPL_LOAD_TIMEOUT, REPL_MATCHES, REPL_PUBLICS, REPL_TIMEOUT, TimeBudget,
)
from cljassist.clojure_text.analysis import Analysis
from cljassist.clojure_text.cursor import CursorContext
from cljassist.clojure_text.forms import clj_string, clj_strings
from cljassist.clojure_text.references import QUALIFIER, SYMBOL, References, qualified, references
from cljassist.errors import ReplTimeout, ReplUnavailable
from cljassist.model.fim import prompts_dir
from cljassist.repl.client import NreplClient
from cljassist.repl.health import ReplHealth
from cljassist.repl.tooling import ToolingSession

__all__ = ["LiveContext", "ReplContextProvider", "ContextSettings", "load_context_settings", "HELPER_NS",
           "ContextQuery", "ContextFacts", "render_context_lines", "DefinitionSite", "typed_vars", "typed_names"]

# Namespace names we are willing to send; anything else is not a namespace.
_NS_NAME = re.compile(r"^[A-Za-z_*+!?<>=.\-][\w*+!?<>=.\-']*$")
HELPER_NS = "cljassist.context.v1"

# The helper namespace loaded into our tooling session. Read-only: it looks namespaces up with
# find-ns and reads ns-map / ns-aliases / var metadata (and looks a var's :file up as a classpath
# resource, never reading or loading it); it never requires or evaluates anything. Var info travels
# packed as "qualified\tmeta-id\targlists\tdoc\tmacro\tfile\tline\turl" strings: the EDN reader
# on our side lexes one long string far faster than the same data as nested collections.
# The helper namespace's source: read-only queries, loaded once into our tooling session.
_HELPER_SOURCE = (Path(__file__).resolve().parent / "resources" / "context_v1.clj").read_text(encoding="utf-8")

# Our session prints plainly whatever the user's settings; then the helper is loaded.
_INSTALL = (
    "(do (try (set! *print-length* nil) (catch Throwable _)) (try (set! *print-level* nil) (catch Throwable _))"
    " (try (set! *print-meta* false) (catch Throwable _)) (try (set! *print-namespace-maps* false) (catch Throwable _))"
    " (clojure.core/load-string {src}) (try (set! *read-eval* false) (catch Throwable _))"
    f" (clojure.core/str (clojure.core/ns-name (clojure.core/find-ns '{HELPER_NS}))))"
)


# ----------------------------------------------------------------------------------------------
# Settings (prompts/completion.toml [context])


@dataclass(frozen=True)
class ContextSettings:
    var: str = "{name} {arglists}{doc}"
    doc: str = " - {doc}"
    aliases: str = "aliases: {items}"
    alias_item: str = "{alias} = {namespace}"
    refers: str = "referred: {items}"
    publics: str = "{alias}/ ({namespace}): {names}"
    doc_chars: int = 90
    arglists_chars: int = 80
    max_matches: int = 6
    max_form_vars: int = 12
    max_nearby_vars: int = 6
    max_public_names: int = 40
    max_form_symbols: int = 64
    max_nearby_symbols: int = 16
    nearby_chars: int = 2000
    skip_namespaces: tuple[str, ...] = ("clojure.core",)


@lru_cache(maxsize=4)
def load_context_settings(path: Path | None = None) -> ContextSettings:
    """The [context] keys of completion.toml; missing keys keep their defaults."""

    file = path or prompts_dir() / "completion.toml"
    try:
        section = tomllib.loads(file.read_text(encoding="utf-8")).get("context", {})
    except (OSError, tomllib.TOMLDecodeError):
        section = {}
    known = ContextSettings.__dataclass_fields__
    values: dict[str, Any] = {}
    for key, value in section.items():
        if key in known:
            values[key] = tuple(value) if key == "skip_namespaces" else value
    return ContextSettings(**values)


# ----------------------------------------------------------------------------------------------
# Results and caches


@dataclass(frozen=True)
class LiveContext:
    namespace: str | None
    ns_loaded: bool
    lines: tuple[str, ...]  # most relevant first; the prompt stage decides how many fit
    ms: float
    cache_hit: bool = False  # the REPL confirmed everything we held; nothing new was fetched
    evals: int = 0  # eval round-trips this gather made (1 when warm; more after a (re)connect)
    # where the vars the code around the cursor uses were defined, closest reference first
    sites: tuple[DefinitionSite, ...] = ()
    # The vars that complete the symbol being typed, written as the user would go on typing them
    # (`na…`, `q/na…`), the namespace's own first (at most budgets.REPL_MATCHES); `all_names`: the
    # REPL sent every var the namespace resolves for that prefix, so a name not among them is none.
    names: tuple[str, ...] = ()
    all_names: bool = False


@dataclass(frozen=True)
class DefinitionSite:
    """Where the running program says a var the code refers to was defined (its :file / :line)."""

    qualified: str  # namespace/name
    file: str  # the :file metadata: classpath-relative when loaded by require, else as loaded
    line: int  # 1-based line of the defining form
    url: str  # the resource the file resolves to ("file:/...", "jar:file:...!/..."), or ""


@dataclass(frozen=True)
class VarInfo:
    qualified: str
    meta_id: int
    arglists: str
    doc: str
    macro: bool = False
    # where it was defined: the :file and :line metadata and the resource that file resolves to
    file: str = ""
    line: int = 0
    url: str = ""

    @classmethod
    def unpack(cls, packed: str) -> "VarInfo":
        parts = packed.split("\t")
        parts += [""] * (8 - len(parts))
        meta_id, line = (int(p) if p.lstrip("-").isdigit() else 0 for p in (parts[1], parts[6]))
        return cls(parts[0], meta_id, parts[2], parts[3], parts[4] == "m", parts[5], line, parts[7])

    @property
    def site(self) -> DefinitionSite | None:
        """Where the var was defined, when the program says (a var of the REPL, not one read)."""
        return DefinitionSite(self.qualified, self.file, self.line, self.url) if self.url and self.line else None

    @property
    def namespace(self) -> str:
        return self.qualified.partition("/")[0]

    @property
    def name(self) -> str:
        return self.qualified.partition("/")[2]


@dataclass
class _NsInfo:
    fp: int
    aliases: dict[str, str]
    refers: list[tuple[str, str]]  # (name, qualified)


_UNRESOLVED = VarInfo("", -1, "", "")
_MAX_CACHED = CONTEXT_CACHE_ENTRIES.value


# ----------------------------------------------------------------------------------------------


class ReplContextProvider:
    """`health`: whether the REPL answers, shared with the verifier on the same client (a new one
    when not given)."""

    def __init__(self, client: NreplClient, timeout_s: float = REPL_TIMEOUT.seconds, health: ReplHealth | None = None):
        self.client = client
        self.timeout_s = timeout_s
        self.health = health if health is not None else ReplHealth.probing(client)
        self._tooling = ToolingSession(client, self._setup_session, self.health)
        self._lock = threading.RLock()
        self._ns: dict[str, _NsInfo] = {}
        self._vars: dict[tuple[str, str], VarInfo] = {}
        self._matches: dict[tuple[str, str], tuple[int, list[VarInfo]]] = {}
        self._publics: dict[str, tuple[int, list[VarInfo]]] = {}
        self._evals = 0

    @property
    def connection_stamp(self) -> int | None:
        """None while the connection is down or the REPL is not answering, else the client's
        connection generation: answers checked on one connection may not hold on the next (the REPL
        may have restarted)."""
        return self.client.connection_generation if self.client.connected and self.health.answering else None

    @property
    def endpoint(self) -> str:
        return self.client.endpoint

    # -- session ---------------------------------------------------------------------------------

    @property
    def session(self) -> str:
        """Our tooling session; cloned (and the helper loaded) again after a reconnect."""
        with self._lock:
            return self._tooling.get(TimeBudget(self.timeout_s))

    def _setup_session(self, session: str, budget: TimeBudget) -> None:
        self._clear()  # what was cached came from the previous connection's server
        self._install(session, budget)

    def _install(self, session: str, budget: TimeBudget) -> None:
        code = _INSTALL.format(src=clj_string(_HELPER_SOURCE))
        result = self._eval(code, budget, session)
        if not result.ok or result.values[-1:] != [clj_string(HELPER_NS)]:
            raise ReplUnavailable(f"could not load the context helper: {_first_line(result.err) or result.ex}")

    def close(self) -> None:
        """Close our tooling session (the provider clones a new one if used again) and stop probing."""
        with self._lock:
            self._tooling.close(self.timeout_s)
        self.health.close()

    def _eval(self, code: str, budget: TimeBudget, session: str | None = None):
        self._evals += 1
        return self._tooling.eval(code, budget, session=session)

    # -- cache -----------------------------------------------------------------------------------

    def invalidate(self, namespace: str | None = None) -> None:
        """Forget what is cached about `namespace` (everything when None); for front-ends that know
        a namespace changed (eval, load-file, save). Not needed for correctness: every gather checks."""
        with self._lock:
            if namespace is None:
                self._clear()
                return
            self._ns.pop(namespace, None)
            self._publics.pop(namespace, None)
            for cache in (self._vars, self._matches):
                for key in [k for k in cache if k[0] == namespace]:
                    del cache[key]

    def _clear(self) -> None:
        self._ns.clear()
        self._vars.clear()
        self._matches.clear()
        self._publics.clear()

    # -- gather ----------------------------------------------------------------------------------

    def gather(self, namespace: str | None, symbol_prefix: str = "", analysis: Analysis | None = None,
               budget: TimeBudget | None = None) -> LiveContext:
        """Context for a cursor in `namespace`. With the request's `analysis` of the text around
        the cursor, the vars the code around the cursor uses are included too. `budget`: the
        request's REPL time (its own `timeout_s` when not given).

        Raises only ReplUnavailable / ReplTimeout on REPL trouble (ReplNotAnswering, at once,
        while the REPL is marked as not answering)."""
        started = time.perf_counter()
        if namespace is None or not _NS_NAME.match(namespace):
            return LiveContext(namespace, False, (), _ms(started))
        self.health.check()
        budget = budget if budget is not None else TimeBudget(self.timeout_s)
        settings = load_context_settings()
        query = ContextQuery.at(symbol_prefix, analysis, settings)

        with self._lock:
            evals_before = self._evals
            try:
                reply = self._query(namespace, settings, query, budget)
                if reply is None:
                    self.invalidate(namespace)
                    return LiveContext(namespace, False, (), _ms(started), evals=self._evals - evals_before)
                fetched = self._absorb(namespace, reply, query.bare, query.symbols)
                facts = self._facts(namespace, reply, query)
                lines = render_context_lines(facts, settings)
                names, all_names = typed_names(facts)
            except (ReplUnavailable, ReplTimeout):
                raise
            except Exception as exc:  # a garbled or unexpected reply: report it as REPL trouble
                self.invalidate(namespace)
                raise ReplUnavailable(f"context query in {namespace} failed: {type(exc).__name__}: {exc}") from None
            sites = (v.site for v in facts.form_vars + facts.nearby_vars if v is not None)
            return LiveContext(namespace, True, tuple(lines), _ms(started), cache_hit=not fetched,
                               evals=self._evals - evals_before, sites=tuple(s for s in sites if s is not None),
                               names=names, all_names=all_names)

    def _query(self, namespace: str, settings: ContextSettings, query: "ContextQuery", budget: TimeBudget):
        for attempt in range(2):
            try:
                self._tooling.get(budget)  # first: a new session clears the caches the call is built from
                result = self._eval(self._request(namespace, settings, query.bare, query.qualifiers, query.symbols),
                                    budget)
            except ReplUnavailable:
                # the connection dropped and came back under us (a restarted REPL): our session is
                # gone with it; clone a new one and ask again, once
                if attempt or self._tooling.is_current():
                    raise
                continue
            if not result.ok and HELPER_NS in (result.err or "") and not attempt:
                # the helper namespace went away (remove-ns?): load it again, once
                self._tooling.reinstall(budget)
                continue
            if not result.ok or not result.values:
                raise ReplUnavailable(f"context query in {namespace} failed: {_first_line(result.err) or result.ex}")
            return edn_format.loads(result.values[-1])
        raise ReplUnavailable(f"context query in {namespace} failed twice")

    def _request(self, namespace: str, settings: ContextSettings, bare: str | None, quals: list[str], syms: list[str]) -> str:
        """The one call we send: only string and number literals, names validated before."""
        ns_info = self._ns.get(namespace)
        known: dict[str, int] = {}
        if ns_info is not None:
            known[namespace] = ns_info.fp
            for q in quals:
                target = ns_info.aliases.get(q, q)
                if target in self._publics:
                    known[target] = self._publics[target][0]
        prefix_fp = self._matches[(namespace, bare)][0] if bare and (namespace, bare) in self._matches else None
        ids = [self._vars[(namespace, s)].meta_id if (namespace, s) in self._vars else 0 for s in syms]
        return "({}/gather {} {} {} {} {} {} {} {} [{} {} {}])".format(
            HELPER_NS,
            clj_string(namespace),
            "{" + " ".join(f"{clj_string(k)} {int(v)}" for k, v in known.items()) + "}",
            clj_string(bare) if bare else "nil",
            "nil" if prefix_fp is None else str(int(prefix_fp)),
            clj_strings(quals),
            clj_strings(syms),
            "[" + " ".join(str(int(i)) for i in ids) + "]",
            clj_strings(n for n in settings.skip_namespaces if _NS_NAME.match(n)),
            int(REPL_MATCHES.value), int(settings.max_matches), int(REPL_PUBLICS.value),
        )

    def _absorb(self, namespace: str, reply, bare: str | None, syms: list[str]) -> bool:
        """Store what the reply brought; whether it brought anything."""
        fetched = False
        fp = int(reply[_K_FP])
        ns_data = reply.get(_K_NS)
        if ns_data is not None:
            fetched = True
            aliases = {str(k): str(v) for k, v in (ns_data.get(_K_ALIASES) or {}).items()}
            refers = [tuple(r.split("\t", 1)) for r in ns_data.get(_K_REFERS) or () if "\t" in r]
            self._ns[namespace] = _NsInfo(fp, aliases, refers)
        elif namespace in self._ns:
            self._ns[namespace].fp = fp
        publics = reply.get(_K_PUBLICS) or {}
        fps = reply.get(_K_FPS) or {}
        if publics:
            fetched = True
            if len(self._publics) > 256:
                self._publics.clear()
            for target, packed in publics.items():
                self._publics[str(target)] = (int(fps.get(target, 0)), [VarInfo.unpack(p) for p in packed])
        matches = reply.get(_K_MATCHES)
        if bare and matches is not None:
            fetched = True
            if len(self._matches) > _MAX_CACHED:
                self._matches.clear()
            self._matches[(namespace, bare)] = (fp, [VarInfo.unpack(p) for p in matches])
        var_updates = reply.get(_K_VARS) or ()
        if var_updates:
            fetched = True
            if len(self._vars) + len(var_updates) > _MAX_CACHED:
                self._vars.clear()
            for packed in var_updates:
                index, _, rest = packed.partition("\t")
                sym = syms[int(index)]
                self._vars[(namespace, sym)] = VarInfo.unpack(rest) if rest else _UNRESOLVED
        return fetched

    # -- rendering -------------------------------------------------------------------------------

    def _facts(self, namespace: str, reply, query: "ContextQuery") -> "ContextFacts":
        """What the REPL (this reply and the caches it kept valid) knows about the query's names."""
        quals = {str(k): str(v) for k, v in (reply.get(_K_QUALS) or {}).items()}
        matched = self._matches.get((namespace, query.bare)) if query.bare else None
        ns_info = self._ns.get(namespace)
        return ContextFacts(
            query=query,
            matches=tuple(matched[1]) if matched else (),
            form_vars=tuple(self._vars.get((namespace, sym)) for sym in query.refs.form),
            nearby_vars=tuple(self._vars.get((namespace, sym)) for sym in query.refs.nearby),
            qualifiers=quals,
            publics={target: tuple(self._publics[target][1]) for target in quals.values() if target in self._publics},
            aliases=dict(ns_info.aliases) if ns_info is not None else {},
            refers=tuple(q for _, q in ns_info.refers) if ns_info is not None else (),
        )

    # -- explicit loading ------------------------------------------------------------------------

    def ensure_loaded(self, namespace: str, ns_form: str | None = None) -> bool:
        """Explicit, opt-in: `require` a namespace so its context becomes available; if that fails
        and the caller passes the file's own `ns` form, evaluate just that form (its requires and
        aliases), as editors do for a buffer that does not load yet. Never called by `gather`."""
        if not _NS_NAME.match(namespace):
            return False
        # the user's files load as they would in their REPL (our session reads with *read-eval* off)
        code = f"(try (binding [*read-eval* true] (require (symbol {clj_string(namespace)}))) true (catch Throwable _ false))"
        if ns_form is not None:
            code = (f"(or {code} (try (binding [*ns* *ns* *read-eval* true] (load-string {clj_string(ns_form)}))"
                    f" (some? (find-ns (symbol {clj_string(namespace)}))) (catch Throwable _ false)))")
        try:
            with self._lock:
                result = self._eval(code, TimeBudget(max(self.timeout_s, NREPL_LOAD_TIMEOUT.seconds)))
        except (ReplTimeout, ReplUnavailable):
            return False
        self.invalidate(namespace)
        return result.values[-1:] == ["true"]


_K_FP, _K_NS, _K_ALIASES, _K_REFERS, _K_PUBLICS, _K_FPS, _K_MATCHES, _K_VARS, _K_QUALS = (
    edn_format.Keyword(k) for k in ("fp", "ns", "aliases", "refers", "publics", "fps", "matches", "vars", "quals")
)


# ----------------------------------------------------------------------------------------------
# What a gather asks, what the program answers, and the lines rendered from the answer. Pure: the
# live provider answers from the REPL, the training data (cljassist.train.fim_data) from the
# package's sources, and both render with `render_context_lines`, so the model is trained on the
# lines it is shown.


@dataclass(frozen=True)
class ContextQuery:
    """The names a gather asks the running program about, from the code around the cursor."""

    qualifier: str | None  # `q` of a qualified symbol being typed (`q/na`)
    name_prefix: str  # `na` of it
    bare: str | None  # a bare symbol prefix being typed, worth matching
    refs: References  # the symbols the code around the cursor uses

    @classmethod
    def at(cls, symbol_prefix: str, analysis: Analysis | None, settings: ContextSettings) -> "ContextQuery":
        """The query for `symbol_prefix` being typed at the cursor `analysis` reads; without an
        analysis only the typed symbol is asked about."""
        refs = References()
        if analysis is not None:
            try:
                refs = analysis.references(*_reference_limits(settings))
            except Exception:  # unreadable text: carry on with the namespace-level context
                refs = References()
        qualifier, name_prefix, bare = split_typed_symbol(symbol_prefix)
        return cls(qualifier, name_prefix, bare, refs)

    @property
    def qualifiers(self) -> list[str]:
        """The qualifiers (aliases or namespace names) whose public vars are wanted."""
        used = [s.partition("/")[0] for s in self.refs.form + self.refs.nearby if qualified(s)]
        return unique(([self.qualifier] if self.qualifier else []) + used)

    @property
    def symbols(self) -> list[str]:
        """The symbols to resolve, each once, closest first."""
        return unique(self.refs.form + self.refs.nearby)


@dataclass(frozen=True)
class ContextFacts:
    """The running program's answer to a :class:`ContextQuery` in the cursor's namespace."""

    query: ContextQuery
    matches: tuple[VarInfo, ...]  # the vars matching `query.bare`, in the program's order
    form_vars: tuple[VarInfo | None, ...]  # what each of `query.refs.form` resolves to (None: not known)
    nearby_vars: tuple[VarInfo | None, ...]  # likewise for `query.refs.nearby`
    qualifiers: dict[str, str]  # the query's qualifiers that name a namespace -> that namespace
    publics: dict[str, tuple[VarInfo, ...]]  # namespace -> its public vars, sorted by name
    aliases: dict[str, str]  # the cursor namespace's aliases -> namespaces
    refers: tuple[str, ...]  # the qualified vars it refers (not clojure.core's), in the program's order


def typed_vars(facts: ContextFacts) -> tuple[list[VarInfo], bool]:
    """The vars that complete the symbol being typed, most likely first, and whether they are all
    the namespace resolves for it (the REPL sent fewer than it may)."""
    query = facts.query
    if query.qualifier is not None:
        target = facts.qualifiers.get(query.qualifier)
        if target not in facts.publics:
            return [], False
        publics = facts.publics[target]
        typed = [v for v in publics if v.name.startswith(query.name_prefix)]
        typed.sort(key=lambda v: (v.name != query.name_prefix, len(v.name), v.name))
        return typed, len(publics) < REPL_PUBLICS.value
    if query.bare:
        return list(facts.matches), len(facts.matches) < REPL_MATCHES.value
    return [], False


def typed_names(facts: ContextFacts) -> tuple[tuple[str, ...], bool]:
    """:func:`typed_vars` as the user goes on typing them: `name`, or `q/name` after a qualifier."""
    typed, complete = typed_vars(facts)
    query = facts.query
    lead = f"{query.qualifier}/" if query.qualifier is not None else ""
    prefix = query.name_prefix if query.qualifier is not None else query.bare or ""
    # a referred var renamed (`:rename`) is mapped under another name than its own: not offered
    names = tuple(lead + v.name for v in typed if v.name.startswith(prefix))
    complete = complete and len(names) == len(typed) <= REPL_MATCHES.value
    return names[: REPL_MATCHES.value], complete


def render_context_lines(facts: ContextFacts, settings: ContextSettings) -> list[str]:
    """The context lines, most relevant first (the order the prompt stage keeps them in)."""
    lines: list[str] = []
    shown: set[str] = set()
    skip = set(settings.skip_namespaces)

    def add_var(info: VarInfo) -> None:
        if info.qualified and info.qualified not in shown:
            shown.add(info.qualified)
            lines.append(var_line(info, settings))

    # 1. the symbol being typed
    for info in typed_vars(facts)[0][: settings.max_matches]:
        add_var(info)

    # 2. vars of the enclosing form, then qualified vars used nearby
    for resolved, limit in ((facts.form_vars, settings.max_form_vars), (facts.nearby_vars, settings.max_nearby_vars)):
        n = 0
        for info in resolved:
            if info is None or not info.qualified or info.namespace in skip or info.qualified in shown:
                continue
            add_var(info)
            n += 1
            if n >= limit:
                break

    # 3. what else the aliased namespaces in use offer
    for q, target in facts.qualifiers.items():
        if target in skip or target not in facts.publics:
            continue
        names = [v.name for v in facts.publics[target] if v.qualified not in shown][: settings.max_public_names]
        if names:
            lines.append(settings.publics.format(alias=q, namespace=target, names=" ".join(names)))

    # 4. aliases and refers
    if facts.aliases:
        items = ", ".join(settings.alias_item.format(alias=a, namespace=t) for a, t in sorted(facts.aliases.items()))
        lines.append(settings.aliases.format(items=items))
    refers = [q for q in facts.refers if q.partition("/")[0] not in skip]
    if refers:
        lines.append(settings.refers.format(items=", ".join(refers)))
    return lines


# ----------------------------------------------------------------------------------------------
# Reading the code around the cursor (no evaluation)


def gather_references(text: str, cursor: CursorContext, settings: ContextSettings) -> References:
    """The symbols the code around the cursor refers to, within the [context] limits."""
    return references(text, cursor, *_reference_limits(settings))


def _reference_limits(settings: ContextSettings) -> tuple[int, int, int]:
    return settings.nearby_chars, settings.max_form_symbols, settings.max_nearby_symbols


# ----------------------------------------------------------------------------------------------
# Small helpers


def split_typed_symbol(prefix: str) -> tuple[str | None, str, str | None]:
    """(qualifier, name part, None) for `q/na`; (None, '', prefix) for a bare prefix worth matching."""
    if not prefix or prefix.startswith((":", "#", "'", "@", "^", "`", "~", "\\")):
        return None, "", None
    if "/" in prefix[1:]:
        qualifier, _, name = prefix.partition("/")
        if QUALIFIER.match(qualifier) and (name == "" or SYMBOL.match(name)):
            return qualifier, name, None
        return None, "", None
    if len(prefix) >= 2 and SYMBOL.match(prefix):
        return None, "", prefix
    return None, "", None


def unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def var_line(info: VarInfo, settings: ContextSettings) -> str:
    arglists = info.arglists
    if arglists.startswith("(quote ") and arglists.endswith(")"):
        arglists = arglists[len("(quote "):-1]
    arglists = _truncate(arglists, settings.arglists_chars)
    if info.macro:
        arglists = (arglists + " macro").strip()
    doc = _first_sentence(info.doc, settings.doc_chars)
    line = settings.var.format(name=info.qualified, arglists=arglists, doc=settings.doc.format(doc=doc) if doc else "")
    return " ".join(line.split())


def _first_sentence(doc: str, limit: int) -> str:
    doc = " ".join(doc.split())
    m = re.search(r"(?<=[.!?])\s", doc)
    if m:
        doc = doc[: m.start()]
    return _truncate(doc, limit)


def _truncate(s: str, limit: int) -> str:
    if len(s) <= limit:
        return s
    cut = s[: max(0, limit - 3)]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut + "..."


def _first_line(s: str | None) -> str:
    return (s or "").strip().splitlines()[0] if (s or "").strip() else ""


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
