"""REPL verification of a completion candidate: does it read and compile, and do its calls
pass as many arguments as the functions take (`verify.arity`), in the user's live REPL (and,
opt-in, evaluate: `verify.evaluate`)?  Each step lands in the candidate's ``checks``
(reads/compiles/arity/evaluated).

How one verification goes:

1. In Python, the text after insertion (prefix + suggestion + suffix) is parsed around the
   insertion and the form to check is chosen: the smallest form enclosing the whole suggestion,
   widened where a part cannot stand alone (a binding vector, an fn arity, a method, a ``case``
   or threading-macro step, anything under a quote, ``#(...)`` or a reader conditional, a form
   holding ``recur``); a bare symbol is checked in its enclosing list.  When no one form holds
   the suggestion, the top-level forms it touches are checked.  Locals come from
   the request's `Analysis` of the insertion point.
2. One nREPL ``eval`` in a tooling session of our own (cloned once, cloned again after a
   reconnect) sends a short call with the chosen text as a *string literal*.  The helper it
   calls is compiled once per session and kept in that session's own thread binding of
   ``*command-line-args*`` (no var, no namespace, invisible to other sessions); resending the
   whole helper each time cost ~50 ms of compiling.  In the JVM it: reads every form with ``*read-eval*`` false, no data readers and no default
   data reader fn (``#=`` and unknown tags are read errors; ``#inst``/``#uuid`` stay), with
   ``:read-cond :allow``; refuses forms with a list head from ``refused_heads``
   (prompts/verify.toml) at any depth; snapshots every namespace's mappings and aliases, the
   namespace set and the root, meta and ``:dynamic`` flag of the cursor namespace's vars and of
   the vars the form names; expands ``(fn* [locals...] FORM)`` itself, one macroexpand-1 step at
   a time over every sub-form the compiler would analyze (locals shadow macros, quotes are data,
   the metadata of collections and fns is code), running only the macros and ``:inline`` fns of
   ``trusted_macro_namespaces`` (any other stops the check: compiles "not checked (macro
   NAME)") and refusing a refused head met at any step; compiles the expanded form, which holds
   no macro, with ``*ns*`` bound to the cursor namespace -- creating the fn object compiles the
   body and never runs it; puts back whatever the snapshot finds changed (the check then fails);
   after a form compiled, walks the expanded form and counts the arguments of the calls
   `verify.arity` chose against each called var's ``:arglists`` and the function's own
   arities (``arity``: False with "wrong number of args (3) passed to clojure.core/inc (takes
   1)" where both say the count is wrong; a doubt is a note, never a failure); answers an EDN map.
3. ``eval_mode="safe"`` (`verify.evaluate`): when the form compiled and is made of nothing but
   literals, locals it binds itself and calls of allowlisted pure vars (metadata included; no
   try, new, interop, set!, var), a second eval evaluates it on a thread that is stopped at the
   time limit and returns the printed value.

Every eval is made within a `TimeBudget`: the request's REPL time, shared with the context and
the other candidates (`check`), or `timeout_s` of its own (`verify`). Past it our session is
interrupted and the step is reported as not finished (compiles None, "verification timed out";
evaluated False, "timed out"), and the request makes no more REPL calls (`repl.tooling`).
The value of a safe eval is computed on a thread the REPL stops itself sooner, at
`evaluate.safe_eval_limit` of what the request has left (evaluated False, "timed out").
`verify` never raises for REPL trouble: an unreachable REPL gives a verdict of Nones with the
reason in ``error`` and the REPL's error in ``repl_failure``, so a caller stops asking.
"""

from __future__ import annotations

import threading
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import edn_format

from cljassist.budgets import REPL_TIMEOUT, TimeBudget
from cljassist.clojure_text.analysis import Analysis, analyze, defn_params
from cljassist.clojure_text.cursor import DEFN_LIKE, FN_LIKE, FOR_LIKE, LET_LIKE, METHOD_HOSTS
from cljassist.clojure_text.forms import clj_string, clj_strings, is_quote, list_head
from cljassist.clojure_text.reader import Node, _parse
from cljassist.errors import ReplTimeout, ReplUnavailable
from cljassist.model.fim import prompts_dir
from cljassist.repl.client import NreplClient
from cljassist.repl.health import ReplHealth
from cljassist.repl.tooling import ToolingSession, helper_source
from cljassist.types import CheckVerdict
from cljassist.verify.arity import JudgedCall, calls_edn, judged_calls
from cljassist.verify.evaluate import check_eval_mode, evaluate, limit_ms, safe_eval_helper, safe_eval_limit

__all__ = ["ReplVerdict", "ReplVerifier", "VerifyRules", "load_rules", "choose_target", "Target"]


@dataclass(frozen=True)
class ReplVerdict:
    reads: bool | None  # None = not attempted
    compiles: CheckVerdict  # a str: deliberately not compiled, "not checked (macro my.app/m)"
    evaluated: bool | None  # only with eval opted in
    error: str | None  # one line: why it failed
    value: str | None  # printed value (truncated) when evaluated
    ms: float
    skipped: str | None = None  # one line: why a step was not attempted (not a failure)
    arity: bool | None = None  # the calls the candidate answers for take that many arguments (verify.arity)
    notes: tuple[str, ...] = ()  # what was seen but not judged (a call whose arity is uncertain)
    # the REPL trouble that stopped the check (not answering, the budget spent, the connection
    # gone): the request's other candidates would only meet it too
    repl_failure: ReplTimeout | ReplUnavailable | None = None

    def record(self, checks: dict) -> None:
        """Write reads/compiles/arity/evaluated into a Candidate's ``checks`` (None = did not run)."""
        checks["reads"] = self.reads
        checks["compiles"] = self.compiles
        checks["arity"] = self.arity
        checks["evaluated"] = self.evaluated


# ------------------------------------------------------------------------------------------------
# Rules (data in prompts/verify.toml)


@dataclass(frozen=True)
class VerifyRules:
    refused_heads: frozenset[str]
    toplevel_compiled: frozenset[str]
    trusted_macro_namespaces: frozenset[str]  # whose macros and :inline fns the check may run
    expansion_allowed: frozenset[str]  # refused heads the trusted macros may write in expansions
    allowlist: frozenset[str]  # qualified var names, "clojure.core/inc"
    print_length: int
    print_level: int
    max_value_chars: int

    def trusting(self, *namespaces: str) -> VerifyRules:
        """These rules with the macros of `namespaces` trusted too: expanded by the check, run."""
        return replace(self, trusted_macro_namespaces=self.trusted_macro_namespaces | frozenset(namespaces))


@lru_cache(maxsize=4)
def load_rules(path: Path | None = None) -> VerifyRules:
    data = tomllib.loads((path or prompts_dir() / "verify.toml").read_text(encoding="utf-8"))
    ev = data.get("eval", {})
    allow = frozenset(
        f"{ns}/{name}" for ns, names in ev.items() if isinstance(names, list) for name in names
    )
    return VerifyRules(
        refused_heads=frozenset(data["refused_heads"]),
        toplevel_compiled=frozenset(data.get("toplevel_compiled", ())),
        trusted_macro_namespaces=frozenset(data["trusted_macro_namespaces"]),
        expansion_allowed=frozenset(data.get("expansion_allowed", ())),
        allowlist=allow,
        print_length=int(ev.get("print_length", 20)),
        print_level=int(ev.get("print_level", 5)),
        max_value_chars=int(ev.get("max_value_chars", 200)),
    )


# ------------------------------------------------------------------------------------------------
# Choosing what to check (pure Python, no REPL)

_LEAF_KINDS = frozenset(["symbol", "keyword", "number", "string", "char", "regex", "symbolic", "invalid"])
_DATA_COLLS = frozenset(["vector", "map", "set", "namespaced-map"])
# list heads whose vector/map children are binding patterns, not data
_BINDING_HEADS = (
    LET_LIKE | FOR_LIKE | FN_LIKE | DEFN_LIKE | METHOD_HOSTS
    | frozenset(["letfn", "defmethod", "catch", "as->", "defprotocol", "definterface", "case", "condp",
                 "ns", "if-let", "when-let", "loop*", "let*", "letfn*", "fn*"])
)
# list heads whose list children are not calls on their own
_REWRITING_HEADS = METHOD_HOSTS | frozenset(
    ["->", "->>", "some->", "some->>", "cond->", "cond->>", "as->", "..", "doto", "case", "condp",
     "defprotocol", "definterface", "extend", "letfn", "proxy-super"]
)
_RECUR_TARGETS = FN_LIKE | DEFN_LIKE | frozenset(["loop", "loop*", "defmethod"])
_TOP_WRAPPERS = frozenset(["comment", "do"])

@dataclass(frozen=True)
class Target:
    """What to send: the text of the form(s) to read and compile, and how."""

    text: str
    top_level: bool  # forms stand at the top level (def-like heads are unwrapped, not refused)
    namespace: str
    locals: tuple[str, ...]  # bound as fn params around the form
    extras: tuple[str, ...]  # bound too, but only where the namespace does not resolve them
    skip_compile: str | None = None  # why the form is not compiled (reads still checked)
    calls: tuple[JudgedCall, ...] = ()  # the calls whose arity the candidate answers for (verify.arity)
    # the file's own parameter vectors of the extras it defines with defn: the REPL's may be older
    file_params: tuple[tuple[str, str], ...] = ()


def _has_recur(node: Node, text: str) -> bool:
    """A `recur` whose target lies outside `node`."""
    stack = [node]
    while stack:
        n = stack.pop()
        if n.kind == "symbol" and text[n.start:n.end] == "recur":
            return True
        if n is not node and (n.kind == "fn" or list_head(n, text) in _RECUR_TARGETS):
            continue
        stack.extend(n.children)
    return False


def _path(nodes: list[Node], start: int, end: int) -> list[Node]:
    """Nodes enclosing [start, end), outermost first (a leaf counts when it holds the span)."""
    path: list[Node] = []
    level = nodes
    while True:
        found = None
        for c in level:
            if c.start <= start and end <= c.end and not (start == end and start in (c.start, c.end)):
                found = c
                break
            if c.start > end:
                break
        if found is None:
            return path
        path.append(found)
        level = list(found.children)


def _choose_index(path: list[Node], text: str) -> tuple[int, str | None]:
    """Index in `path` of the form to compile, and a reason not to compile it (or None)."""
    heads = [list_head(n, text) for n in path]
    if any(h in ("ns", "in-ns") for h in heads):
        return 0, "not compiled: inside an (ns ...) form"
    i = len(path) - 1
    # whatever sits under these cannot be checked apart from them: take the outermost
    for j, n in enumerate(path):
        if is_quote(n, text) or n.kind == "fn":
            i = min(i, j)
            break
    for j in range(len(path) - 1, -1, -1):
        if path[j].kind in ("reader-cond", "reader-cond-splicing"):
            i = min(i, j if path[j].kind == "reader-cond" or j == 0 else j - 1)
    changed = True
    while changed and i > 0:
        changed = False
        node, parent = path[i], path[i - 1]
        ph = heads[i - 1]
        if node.kind in _LEAF_KINDS or node.kind in ("meta", "tagged", "deref", "var", "unquote", "unquote-splicing"):
            climb = True  # a symbol (maybe a macro or special form name) is checked in its form
        elif node.kind in _DATA_COLLS:
            climb = parent.kind in _DATA_COLLS or ph in _BINDING_HEADS
        elif node.kind == "list":
            first = node.children[0] if node.children else None
            climb = (
                (first is not None and first.kind == "vector")  # an arity: ([x] ...)
                or heads[i] in ("catch", "finally")
                or ph in _REWRITING_HEADS
                or (parent.kind == "vector" and i >= 2 and heads[i - 2] == "letfn")
            )
        else:
            climb = False
        if not climb and _needs_recur_target(node, heads[i], text):
            climb = True
        if climb:
            i -= 1
            changed = True
    return i, None


def _needs_recur_target(node: Node, head: str | None, text: str) -> bool:
    return node.kind != "fn" and head not in _RECUR_TARGETS and _has_recur(node, text)


UNKNOWN_NAMESPACE = "not compiled: the cursor's namespace is unknown (no ns form before it)"


def choose_target(prefix: str, suggestion: str, suffix: str, namespace: str | None = None,
                  analysis: Analysis | None = None) -> Target | None:
    """The form(s) to read and compile for `suggestion` inserted between prefix and suffix;
    None when the suggestion adds no form (whitespace, a comment). `namespace` overrides the one
    the prefix declares (a caller that cut the ns form off the text knows it). `analysis` is the
    request's reading of prefix + suffix at the insertion point, when the caller already has it."""
    text = prefix + suggestion + suffix
    ins_start, ins_end = len(prefix), len(prefix) + len(suggestion)
    analysis = analysis or analyze(prefix, suffix)
    cursor = analysis.cursor
    namespace = namespace or cursor.namespace
    # Without a namespace, names cannot be resolved: read the text, but do not judge compilation.
    unknown = None if namespace else UNKNOWN_NAMESPACE
    namespace = namespace or "user"
    if cursor.top_level:
        base = cursor.top_level[0]
    else:  # between top-level forms: the parse can start at the insertion (not in a comment)
        base = 0 if cursor.in_comment or cursor.in_string else ins_start

    def stop(node: Node) -> bool:  # offsets relative to `base`
        return node.end >= ins_end - base

    nodes = _parse(text[base:], False, None, stop) if base else _parse(text, False, None, stop)
    if base:
        nodes = [_shift(n, base) for n in nodes]
    path = _path(nodes, ins_start, ins_end)
    extras = set(analysis.file_defs)
    if not path:
        touched = [n for n in nodes if n.end > ins_start and n.start < ins_end]
        if not touched:
            return None
        form = text[touched[0].start:touched[-1].end]
        return _with_calls(Target(form, True, namespace, (), tuple(sorted(x for x in extras if x in form)), unknown),
                           judged_calls(touched, text, touched[0].start, (ins_start, ins_end)), analysis)
    i, skip = _choose_index(path, text)
    chosen = path[i]
    heads = [list_head(n, text) for n in path[:i]]
    top = all(h in _TOP_WRAPPERS for h in heads)
    for n, h in zip(path[:i], heads):
        if h in DEFN_LIKE or h in ("def", "defonce", "defmulti"):
            if len(n.children) > 1 and n.children[1].kind == "symbol":
                extras.add(text[n.children[1].start:n.children[1].end])
        if h == "defmacro":
            extras.update(("&form", "&env"))
    locals_ = tuple(x for x in cursor.locals if x)
    form = text[chosen.start:chosen.end]
    target = Target(form, top, namespace, locals_, tuple(sorted(x for x in extras - set(locals_) if x in form)),
                    unknown or skip)
    return _with_calls(target, judged_calls([chosen], text, chosen.start, (ins_start, ins_end)), analysis)


def _with_calls(target: Target, calls: tuple[JudgedCall, ...], analysis: Analysis) -> Target:
    """The target with the calls to judge and, when there are some, the file's own parameters of
    the names it defines (a call to one is judged only where the REPL's definition is the file's)."""
    if not calls:
        return target
    params = ((name, defn_params(analysis.text, name)) for name in target.extras)
    return replace(target, calls=calls, file_params=tuple((n, " ".join(p)) for n, p in params if p))


def _shift(node: Node, by: int) -> Node:
    return Node(node.kind, node.start + by, node.end + by, tuple(_shift(c, by) for c in node.children), node.closed)


# ------------------------------------------------------------------------------------------------
# The Clojure side. One expression, applied to literal arguments; evaluated in clojure.core so
# every name below resolves whatever the user did to their `user` namespace. It defines nothing.

# The check function (Clojure, one `fn` form), compiled once per tooling session; see the resource.
_CHECK_FN = helper_source("repl_verify_check.clj")

# The helper is compiled once per tooling session and kept in *our session's* thread binding of
# *command-line-args* (set! on a binding, which nREPL keeps per session): no var, no namespace
# and no other session sees it, and each verification sends only a short call.
_EVAL_NS = "clojure.core"  # our code's names resolve there whatever the user did to `user`
_HELPER_KEY = ":cljassist.repl-verify/check-v2"
_MISSING = "cljassist.repl-verify/missing"


class ReplVerifier:
    """Reads and compiles candidates in the user's REPL, in a session of our own. `health`: whether
    the REPL answers, shared with the context provider on the same client (a new one when not given)."""

    def __init__(self, client: NreplClient, timeout_s: float = REPL_TIMEOUT.seconds, eval_mode: str = "off",
                 health: ReplHealth | None = None, rules: VerifyRules | None = None):
        self.client = client
        self.timeout_s = timeout_s
        self.eval_mode = check_eval_mode(eval_mode)
        self.rules = rules or load_rules()
        self.health = health if health is not None else ReplHealth.probing(client)
        self._tooling = ToolingSession(client, self._install, self.health)
        self._lock = threading.Lock()  # one verification at a time: our session runs evals in order

    # -- session -----------------------------------------------------------------------------

    @property
    def session(self) -> str:
        """Our tooling session; cloned again after the client reconnected to a restarted server."""
        return self._tooling.get(TimeBudget(self.timeout_s))

    def _install(self, session: str, budget: TimeBudget) -> None:
        # its value is nil; a helper that did not get installed shows when a check's value is no map
        self._raw_eval(self._install_code(), budget, session)

    def _install_code(self) -> str:
        r = self.rules
        args = " ".join([
            clj_strings(sorted(r.refused_heads), "#{"), clj_strings(sorted(r.toplevel_compiled), "#{"),
            safe_eval_helper(r.allowlist, r.print_length, r.print_level, r.max_value_chars),
            clj_strings(sorted(r.trusted_macro_namespaces), "#{"), clj_strings(sorted(r.expansion_allowed), "#{"),
        ])
        return f"(do (set! *command-line-args* {{{_HELPER_KEY} ({_CHECK_FN} {args})}}) nil)"

    def _eval(self, code: str, budget: TimeBudget) -> dict:
        """Our expression's EDN map; ReplTimeout when it did not finish in time (then interrupted)."""
        for _ in range(2):
            value = self._raw_eval(code, budget)
            if isinstance(value, dict):
                return value
            self._tooling.reinstall(budget)  # the session lost its helper (it should not): install again
        raise _VerifyError("verifier helper could not be installed")

    def _raw_eval(self, code: str, budget: TimeBudget, session: str | None = None):
        result = self._tooling.eval(code, budget, ns=_EVAL_NS, session=session)
        if not result.values:
            msg = (result.err.strip().splitlines() or [result.ex or "no value"])[-1]
            raise _VerifyError(f"verifier expression failed: {msg}")
        value = edn_format.loads(result.values[-1])
        if isinstance(value, Mapping):
            return {str(getattr(k, "name", k)): v for k, v in value.items()}
        return value

    def _eval_or_none(self, code: str, budget: TimeBudget) -> dict | None:
        """The evaluation step's answer; None when it did not finish in time."""
        try:
            return self._eval(code, budget)
        except ReplTimeout:
            return None

    # -- verification --------------------------------------------------------------------------

    def verify(self, prefix: str, suggestion: str, suffix: str, namespace: str | None = None,
               analysis: Analysis | None = None, budget: TimeBudget | None = None) -> ReplVerdict:
        """The candidate's verdict within what is left of `budget`, the request's REPL time (its
        own `timeout_s` when not given). Never raises for REPL trouble (see `repl_failure`)."""
        started = time.perf_counter()
        budget = budget if budget is not None else TimeBudget(self.timeout_s)

        def verdict(reads=None, compiles=None, evaluated=None, error=None, value=None, skipped=None, arity=None,
                    notes=(), failure=None):
            return ReplVerdict(reads, compiles, evaluated, error, value, (time.perf_counter() - started) * 1000, skipped,
                               arity, tuple(notes), failure)

        if not suggestion.strip():
            return verdict(skipped="empty candidate")
        target = choose_target(prefix, suggestion, suffix, namespace, analysis)
        if target is None:
            return verdict(skipped="nothing to verify: no form in the candidate")
        want_eval = self.eval_mode == "safe"
        with self._lock:
            try:
                res = self._eval(self._call_code("check", target, want_eval), budget)
                reads, compiles, error = res.get("reads"), res.get("compiles"), res.get("error")
                if res.get("untrusted"):  # compiling would have run code we do not trust: not compiled
                    compiles = f"not checked ({res['untrusted']})"
                skipped, arity, notes = res.get("skip"), res.get("arity"), res.get("notes") or ()
                if target.skip_compile == UNKNOWN_NAMESPACE:
                    compiles, arity, error, skipped = None, None, None, UNKNOWN_NAMESPACE
                elif target.skip_compile and compiles is not False:
                    compiles, arity, skipped = None, None, target.skip_compile
                if not want_eval or compiles is not True or arity is False:
                    return verdict(reads, compiles, None, error, None, skipped, arity, notes)
                ev = evaluate(res, lambda: self._eval_or_none(
                    self._call_code("eval", target, True, safe_eval_limit(budget.left())), budget))
                return verdict(reads, compiles, ev.evaluated, ev.error, ev.value, ev.skipped, arity, notes)
            except ReplTimeout as exc:
                return verdict(error=f"verification timed out: {exc}", failure=exc)
            except ReplUnavailable as exc:
                return verdict(error=f"REPL unavailable: {exc}", failure=exc)
            except _VerifyError as exc:
                return verdict(error=str(exc))

    def _call_code(self, mode: str, t: Target, want_eval: bool, eval_limit_s: float | None = None) -> str:
        args = " ".join([
            clj_string(mode), clj_string(t.text), clj_string(t.namespace),
            clj_strings(t.locals), clj_strings(t.extras), "true" if t.top_level else "false",
            "true" if want_eval else "false", calls_edn(t.calls),
            "{" + " ".join(f"{clj_string(name)} {clj_string(params)}" for name, params in t.file_params) + "}",
            "nil" if eval_limit_s is None else limit_ms(eval_limit_s),
        ])
        return (
            f"(if-let [f (get (when (map? *command-line-args*) *command-line-args*) {_HELPER_KEY})]"
            f" (f {args}) '{_MISSING})"
        )


class _VerifyError(Exception):
    pass
