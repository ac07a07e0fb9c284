"""The live REPL context stage against the real Debian nREPL (fixtures in tests/fixtures_repl.py)."""

from __future__ import annotations

import dataclasses

import edn_format
import pytest

from cljassist.budgets import REPL_MATCHES
from cljassist.clojure_text.cursor import analyze_cursor
from cljassist.clojure_text.analysis import Analysis, analyze
from cljassist.clojure_text.forms import clj_string
from cljassist.context import HELPER_NS, ReplContextProvider, load_context_settings
from cljassist.model.fim import load_fim_table
from cljassist.prompt import build_prompt, load_templates

pytestmark = pytest.mark.integration

WAIT = 60.0  # generous: the CI machine has 2 loaded cores


class RecordingClient:
    """Wraps the real client and records every request the provider makes through it."""

    def __init__(self, client):
        self._client = client
        self.calls: list[tuple[str, str | None, str]] = []  # (op, session, code)

    def __getattr__(self, name):
        return getattr(self._client, name)

    @property
    def connection_generation(self):
        return self._client.connection_generation

    def eval(self, code, session=None, **kw):
        self.calls.append(("eval", session, code))
        return self._client.eval(code, session=session, **kw)

    def clone(self, session=None, **kw):
        new = self._client.clone(session, **kw)
        self.calls.append(("clone", session, new))
        return new

    def evals(self) -> list[tuple[str, str | None, str]]:
        return [c for c in self.calls if c[0] == "eval"]


def define(client, code: str) -> None:
    """Evaluate `code` as the user would, on a session of the user's."""
    session = client.clone()
    result = client.eval(code, session=session, timeout=WAIT)
    assert result.ok, result.err
    client.close_session(session)


def at_marker(text: str):
    offset = text.index("|")
    text = text[:offset] + text[offset + 1:]
    return text, analyze_cursor(text, offset)


def analysis_at_marker(marked: str):
    offset = marked.index("|")
    return analyze(marked[:offset], marked[offset + 1:])


def gather(provider, marked: str):
    analysis = analysis_at_marker(marked)
    return provider.gather(analysis.namespace, analysis.cursor.symbol_prefix, analysis=analysis)


TODO_NS = """(ns {ns}
  (:require [clojure.string :as str]
            [demo.core :as core :refer [slugify]]))
"""

TODO_CODE = """(defn summary
  "The three most used tags, as slugs."
  [posts]
  (let [counts (core/tag-counts posts)
        top (take 3 (sort-by val > counts))]
    (str/join ", " (map slugify (keys top|)))))
"""


@pytest.fixture
def provider(nrepl_client):
    nrepl_client.eval("(require 'demo.core)", timeout=WAIT)
    return ReplContextProvider(RecordingClient(nrepl_client), timeout_s=WAIT)


def test_aliases_and_refers_appear(nrepl_client, provider):
    ns = "ctx-test.aliases"
    define(nrepl_client, TODO_NS.format(ns=ns))
    live = gather(provider, TODO_NS.format(ns=ns) + "\n(defn f [x]\n  (inc x|))\n")
    assert live.ns_loaded and live.namespace == ns
    assert "aliases: core = demo.core, str = clojure.string" in live.lines
    assert "referred: demo.core/slugify" in live.lines
    assert live.lines.index("aliases: core = demo.core, str = clojure.string") < live.lines.index("referred: demo.core/slugify")


def test_typing_an_alias_prefix_puts_its_matches_first(nrepl_client, provider):
    ns = "ctx-test.typing"
    define(nrepl_client, TODO_NS.format(ns=ns))
    live = gather(provider, TODO_NS.format(ns=ns) + "\n(defn f [xs]\n  (str/jo| \", \" xs))\n")
    assert live.lines[0].startswith("clojure.string/join ([coll] [separator coll]) - Returns a string of all elements")
    # a bare prefix: the namespace's own and referred vars first
    live = gather(provider, TODO_NS.format(ns=ns) + "\n(defn f [xs]\n  (slu| xs))\n")
    assert live.lines[0] == "demo.core/slugify ([title]) - Lower-case words joined by dashes."


def test_the_names_completing_the_typed_symbol_come_as_data(nrepl_client, provider):
    ns = "ctx-test.names"
    define(nrepl_client, TODO_NS.format(ns=ns))
    live = gather(provider, TODO_NS.format(ns=ns) + "\n(defn f [xs]\n  (str/jo| \", \" xs))\n")
    assert live.names == ("str/join",) and live.all_names  # clojure.string has one var starting with jo
    live = gather(provider, TODO_NS.format(ns=ns) + "\n(defn f [xs]\n  (slu| xs))\n")
    assert live.names[0] == "slugify" and live.all_names
    # clojure.core's own: shortest first, all of them (fewer than the REPL may send)
    live = gather(provider, TODO_NS.format(ns=ns) + "\n(defn f [xs]\n  (re| xs))\n")
    assert 40 < len(live.names) < REPL_MATCHES.value and live.all_names
    assert live.names[:2] == ("ref", "rem") and "reduce" in live.names and "reduce-kv" in live.names
    # the context block still shows only the first few, described
    assert sum(line.startswith("clojure.core/re") for line in live.lines) == load_context_settings().max_matches


def test_vars_of_the_enclosing_form_with_doc_and_arglists(nrepl_client, provider):
    ns = "ctx-test.form"
    define(nrepl_client, TODO_NS.format(ns=ns) + TODO_CODE.replace("|", ""))
    live = gather(provider, TODO_NS.format(ns=ns) + "\n" + TODO_CODE)
    lines = live.lines
    tag_counts = "demo.core/tag-counts ([posts]) - How often each tag occurs across posts."
    slug = "demo.core/slugify ([title]) - Lower-case words joined by dashes."
    join = next(l for l in lines if l.startswith("clojure.string/join ([coll] [separator coll])"))
    assert tag_counts in lines and slug in lines
    # closest to the cursor first; all before the aliases line
    aliases = next(i for i, l in enumerate(lines) if l.startswith("aliases: "))
    assert lines.index(slug) < lines.index(join) < lines.index(tag_counts) < aliases
    text = "\n".join(lines)
    # locals, clojure.core and the name being defined are not looked up as vars
    for absent in ("counts", "posts ", "clojure.core/", "/summary", "/top"):
        assert absent not in text.replace("tag-counts", "").replace("[posts]", "")
    # the aliased namespaces in use offer more names
    assert any(l.startswith("str/ (clojure.string): ") and " split " in l and "join" not in l.split(": ", 1)[1].split()
               for l in lines)


PKG_UTIL = """(ns {ns}.util)
(defn sum-of
  "Adds the numbers up. Then more words."
  [xs]
  (reduce + xs))
(defn sum-sq [xs] (sum-of (map * xs xs)))
(defn- secret [] 1)
(defmacro with-sum "Runs body." [& body] `(do ~@body))
"""
PKG_CORE = """(ns {ns}.core
  (:require [{ns}.util :as u :refer [sum-sq]]))
(defn helper [a] a)
(defn mean
  [xs]
  (/ (u/sum-of xs) (helper (sum-sq xs))))
"""


@pytest.mark.parametrize("marked", [
    "(defn mean\n  [xs]\n  (/ (u/su|m-of xs) (helper (sum-sq xs))))",  # a qualified symbol being typed
    "(defn g [xs] (sum| xs))",  # a bare one: the namespace's vars and refers
    "(defn mean\n  [xs]\n  (/ (u/sum-of xs) (helper (sum-sq |xs))))",  # the vars the form uses
])
def test_training_data_renders_what_the_live_provider_renders(nrepl_client, provider, marked):
    """The training data's context (the package's sources standing in for the REPL) is the live one."""
    from cljassist.train.fim_data import context_lines_for, index_package

    ns = "ctx-test.pkg"
    util, core = PKG_UTIL.format(ns=ns), PKG_CORE.format(ns=ns)
    define(nrepl_client, f"(load-string {clj_string(util)})")
    define(nrepl_client, f"(load-string {clj_string(core)})")
    text, cursor = at_marker(core + marked + "\n")
    live = provider.gather(cursor.namespace, cursor.symbol_prefix, analysis=Analysis.around(text, cursor))
    assert live.ns_loaded and len(live.lines) >= 3
    assert list(live.lines) == context_lines_for(text, cursor, index_package([util, core]))


def test_second_gather_is_a_cache_hit_with_one_small_eval(nrepl_client, provider):
    ns = "ctx-test.cache"
    define(nrepl_client, TODO_NS.format(ns=ns) + TODO_CODE.replace("|", ""))
    client = provider.client
    first = gather(provider, TODO_NS.format(ns=ns) + "\n" + TODO_CODE)
    assert not first.cache_hit and first.evals == 2  # load the helper, then the one query
    before = len(client.evals())
    second = gather(provider, TODO_NS.format(ns=ns) + "\n" + TODO_CODE)
    assert second.cache_hit and second.lines == first.lines
    new = client.evals()[before:]
    assert len(new) == 1 and second.evals == 1
    # the check sends what we know and nothing comes back but fingerprints
    reply = client._client.eval(new[0][2], session=provider.session, timeout=WAIT)
    data = edn_format.loads(reply.values[-1])
    assert {k.name for k in data.keys()} == {"fp", "quals", "fps"}


def test_namespace_changes_are_seen_on_the_next_gather(nrepl_client, provider):
    ns = "ctx-test.refresh"
    define(nrepl_client, f'(ns {ns})\n(defn helper "Old doc." [a] a)\n')
    marked = f"(ns {ns})\n\n(defn g [x]\n  (helper (fre| x)))\n"
    live = gather(provider, marked)
    assert not any("fresh-fn" in l for l in live.lines)
    assert f"{ns}/helper ([a]) - Old doc." in live.lines
    assert gather(provider, marked).cache_hit

    define(nrepl_client, f'(in-ns \'{ns})\n(defn fresh-fn "Brand new." [a b] a)\n(defn helper "New doc." [a b] a)\n')
    live = gather(provider, marked)
    assert not live.cache_hit
    assert live.lines[0] == f"{ns}/fresh-fn ([a b]) - Brand new."
    assert f"{ns}/helper ([a b]) - New doc." in live.lines and f"{ns}/helper ([a]) - Old doc." not in live.lines

    # a front-end that knows better can drop the cache; the result is the same
    provider.invalidate(ns)
    again = gather(provider, marked)
    assert not again.cache_hit and again.lines == live.lines


def test_a_namespace_not_loaded_gives_no_context_until_loaded_explicitly(nrepl_server, provider):
    ns = "ctx-test.lazy"
    source = nrepl_server.project_dir / "src" / "ctx_test" / "lazy.clj"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(f'(ns {ns})\n(defn lazy-fn "Loaded on request." [x] x)\n')
    marked = f"(ns {ns})\n(defn h [x] (lazy|))\n"
    live = gather(provider, marked)
    assert live.ns_loaded is False and live.lines == ()
    assert gather(provider, marked).ns_loaded is False  # still not loaded: gather never loads
    assert not any("require" in code for _, _, code in provider.client.evals())

    assert provider.ensure_loaded(ns) is True
    live = gather(provider, marked)
    assert live.ns_loaded and live.lines[0] == f"{ns}/lazy-fn ([x]) - Loaded on request."
    assert provider.ensure_loaded("ctx-test.no-such-file") is False


def test_the_users_session_is_never_used(nrepl_client, provider):
    user = nrepl_client.clone()
    assert nrepl_client.eval("(def user-x 41)", session=user, timeout=WAIT).ok
    assert nrepl_client.eval("(+ 1 2)", session=user, timeout=WAIT).values == ["3"]
    define(nrepl_client, TODO_NS.format(ns="ctx-test.session"))
    gather(provider, TODO_NS.format(ns="ctx-test.session") + "\n(str/jo|)\n")
    gather(provider, TODO_NS.format(ns="ctx-test.session") + "\n(str/jo|)\n")
    ours = provider.session
    assert ours != user
    sessions = {session for op, session, _ in provider.client.calls if op == "eval"}
    assert sessions == {ours}
    # the user's last value and namespace are as they left them
    assert nrepl_client.eval("*1", session=user, timeout=WAIT).values == ["3"]
    assert nrepl_client.eval("(str *ns*)", session=user, timeout=WAIT).values == ['"user"']


def test_a_new_session_is_cloned_after_a_reconnect(nrepl_client, provider):
    define(nrepl_client, TODO_NS.format(ns="ctx-test.reconnect"))
    marked = TODO_NS.format(ns="ctx-test.reconnect") + "\n(str/jo|)\n"
    first = gather(provider, marked)
    old = provider.session
    nrepl_client._conn.shutdown("test: connection dropped")
    live = gather(provider, marked)
    assert provider.session != old and live.lines == first.lines and not live.cache_hit


def test_rendered_within_the_budget_most_relevant_line_kept(nrepl_client, provider):
    define(nrepl_client, TODO_NS.format(ns="ctx-test.budget"))
    live = gather(provider, TODO_NS.format(ns="ctx-test.budget") + "\n(defn f [xs]\n  (str/jo| xs))\n")
    assert len(live.lines) >= 3
    fim = load_fim_table()["left_to_right"]

    def count(text):
        return len(text) // 3 + 1

    templates = load_templates()
    header = templates.context_header.format(namespace=live.namespace) + "\n"
    first = templates.context_line.format(text=live.lines[0]) + "\n"
    tiny = dataclasses.replace(templates, budget=dataclasses.replace(templates.budget, max_context_tokens=count(header + first)))
    p = build_prompt("(str/jo", "", fim, count, context_lines=live.lines, namespace=live.namespace, templates=tiny)
    assert p.context_lines == (live.lines[0],)
    assert ";;   clojure.string/join ([coll] [separator coll])" in p.text

    p = build_prompt("(str/jo", "", fim, count, context_lines=live.lines, namespace=live.namespace)
    assert p.context_lines == live.lines[: len(p.context_lines)] and p.context_lines
    block = p.text[: p.text.index("(str/jo")]
    assert count(block) <= templates.budget.max_context_tokens


def test_the_old_two_argument_call_still_works(nrepl_client, provider):
    define(nrepl_client, TODO_NS.format(ns="ctx-test.compat"))
    live = provider.gather("ctx-test.compat", "str/jo")
    assert live.ns_loaded and live.lines[0].startswith("clojure.string/join ")


@pytest.mark.parametrize("namespace", [
    'demo.core (System/exit 1)',
    'x") (System/exit 1) ("',
    "demo.core'(System/exit 1)",
    "#=(System/exit 1)",
])
def test_a_malicious_namespace_name_is_never_sent(provider, namespace):
    live = provider.gather(namespace, "str/jo")
    assert live.ns_loaded is False and live.lines == ()
    assert provider.client.evals() == []
    assert provider.ensure_loaded(namespace) is False


def test_malicious_symbol_text_never_reaches_eval_as_code(nrepl_client, provider):
    define(nrepl_client, TODO_NS.format(ns="ctx-test.evil"))
    marked = TODO_NS.format(ns="ctx-test.evil") + '\n(defn f [x]\n  (a\'b #=(System/exit 1) (str/jo|)))\n'
    text, cursor = at_marker(marked)
    evil = dataclasses.replace(cursor, symbol_prefix='jo")(System/exit 1)("', locals=('x") (System/exit 2) ("',))
    analysis = dataclasses.replace(analysis_at_marker(marked), cursor=evil)
    live = provider.gather(cursor.namespace, evil.symbol_prefix, analysis=analysis)
    live = provider.gather(cursor.namespace, 'str/jo"(System/exit 3)', analysis=analysis)
    assert live.ns_loaded
    queries = [code for _, _, code in provider.client.evals() if HELPER_NS + "/gather" in code]
    assert len(queries) == 2
    for code in queries:
        # the call is the helper's name followed by literals only: strings, numbers, vectors, maps
        form = edn_format.loads(code)
        assert form[0] == edn_format.Symbol(HELPER_NS + "/gather")
        strings = list(_literal_strings(form[1:]))
        assert "a'b" in strings and "System/exit" in strings  # symbols from the text, as strings
        assert not any(c in s for s in strings for c in '()"; ')
        assert "(System/exit" not in code
    # still alive
    assert nrepl_client.eval("(+ 1 1)", timeout=WAIT).values == ["2"]


def _literal_strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, (int, type(None))):
        return
    elif isinstance(value, (list, tuple, edn_format.ImmutableList)):
        for v in value:
            yield from _literal_strings(v)
    elif hasattr(value, "items"):
        for k, v in value.items():
            yield from _literal_strings(k)
            yield from _literal_strings(v)
    else:
        raise AssertionError(f"not a literal: {value!r}")


@pytest.mark.parametrize("s", ['plain', 'a"b', "back\\slash", 'x") (System/exit 1) ("', "new\nline", "\\\"", "ünï"])
def test_clojure_string_literals_round_trip(nrepl_client, s):
    assert edn_format.loads(clj_string(s)) == s
    result = nrepl_client.eval(f"(count {clj_string(s)})", timeout=WAIT)
    assert result.values == [str(len(s))]


# -- reading the code around the cursor (no REPL) ----------------------------------------------

def _refs(marked: str):
    from cljassist.context import gather_references, load_context_settings

    text, cursor = at_marker(marked)
    return gather_references(text, cursor, load_context_settings())


def test_references_skip_locals_quotes_special_forms_and_the_defined_name():
    refs = _refs(
        "(ns a.b (:require [clojure.string :as str]))\n"
        "(defn summary [posts {:keys [limit] :as opts}]\n"
        "  (let [counts (core/tag-counts posts) [x & more] (seq counts)]\n"
        "    (if (pos? limit) '(quoted sym) (str/join \", \" (map #(f2 %) (for [p posts] (g p|)))))))\n"
    )
    assert refs.form[0] == "g"  # the closest first
    assert set(refs.form) >= {"g", "f2", "str/join", "map", "for", "pos?", "core/tag-counts", "let", "defn"}
    for absent in ("posts", "limit", "opts", "counts", "x", "more", "p", "summary", "quoted", "sym", "if", "&", "%"):
        assert absent not in refs.form
    assert refs.nearby == []


def test_references_while_typing_an_unclosed_form_and_nearby_qualified_symbols():
    refs = _refs(
        "(ns a.b)\n(defn before [] (set/union #{} #{}) (helper 1))\n\n"
        "(defn typing [x]\n  (str/jo| x\n\n"
        "(defn after [] (io/file \"f\") (other 2))\n"
    )
    # the symbol being typed is not looked up as a var; the next top-level form is not "the form"
    assert "str/jo" not in refs.form and "io/file" not in refs.form and "defn" in refs.form
    assert refs.nearby == ["set/union", "io/file"] or refs.nearby == ["io/file", "set/union"]
    assert "helper" not in refs.nearby and "other" not in refs.nearby  # unqualified ones only in the form
