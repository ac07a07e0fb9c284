"""One Clojure analysis per request: what every stage reads about the text around the cursor comes
from the same `Analysis`, computed once."""

import edn_format
import pytest

from cljassist.clojure_text import analysis as analysis_module
from cljassist.clojure_text.analysis import analyze, file_defs
from cljassist.clojure_text.cursor import names_bound_by
from cljassist.clojure_text.forms import clj_string, clj_strings, string_value
from cljassist.clojure_text.reader import parse, syntax_errors
from cljassist.config import Settings
from cljassist.context import LiveContext
from cljassist.engine import Engine
from cljassist.types import CompletionRequest
from cljassist.verify.repl_compile import ReplVerdict, choose_target
from tests.fakes import ScriptedModel

PREFIX = (
    "(ns demo.core (:require [clojure.string :as str]))\n\n"
    "(defn helper [s] (str/trim s))\n\n"
    "(defn f [{:keys [a b] :as opts} & more]\n"
    "  (let [[x y] more\n"
    "        total (+ a b)]\n"
    "    (for [item more :let [z (inc item)]]\n"
    "      "
)
SUFFIX = "(str/join \",\" [x y z]))))\n\n(defn g [] (helper \"s\"))\n"


def test_locals_are_read_once_and_are_what_verification_binds():
    a = analyze(PREFIX, SUFFIX)
    assert set(a.locals) == {"a", "b", "opts", "more", "x", "y", "total", "item", "z"}
    target = choose_target(PREFIX, "(str z total)", SUFFIX, analysis=a)
    assert target.locals == a.locals
    # a fresh analysis of the same gap gives the same verification target
    assert choose_target(PREFIX, "(str z total)", SUFFIX) == target


def test_references_leave_out_the_locals_the_analysis_found():
    a = analyze(PREFIX, SUFFIX)
    refs = a.references(2000, 64, 16)
    assert "str/join" in refs.form and "inc" in refs.form
    assert not set(refs.form) & set(a.locals)
    assert a.references(2000, 64, 16) is refs  # read once, then kept


def test_names_bound_by_a_whole_form_cover_the_locals_at_any_cursor_inside_it():
    a = analyze(PREFIX, SUFFIX)
    top = [n for n in parse(a.text) if n.start == a.cursor.top_level[0]][0]
    bound = set(names_bound_by(top, a.text))
    for node in top.children[3:]:
        for inner in [node, *node.children]:
            bound |= set(names_bound_by(inner, a.text)) if inner.kind == "list" else set()
    assert set(a.locals) <= bound | {"z"}  # `:let` in a `for` binds inside the for's own vector
    assert set(names_bound_by(parse("(letfn [(h [p] p)] (h 1))")[0], "(letfn [(h [p] p)] (h 1))")) == {"h", "p"}
    src = "(reify P (m [this q] q))"
    assert names_bound_by(parse(src)[0], src) == ["this", "q"]


def test_namespace_override_and_file_defs():
    a = analyze("(defn f [x] ", ")", namespace="given.ns")
    assert a.namespace == "given.ns" and a.cursor.namespace == "given.ns"
    assert analyze(PREFIX, SUFFIX).namespace == "demo.core"
    assert analyze(PREFIX, SUFFIX).file_defs == ("helper", "f", "g") == file_defs(PREFIX, SUFFIX)


@pytest.mark.parametrize("s", ["plain", 'a"b', "back\\slash", "\\\"", 'x") (System/exit 1) ("', "new\nline",
                               "tab\there", "ünï λ", "ends in \\"])
def test_clj_string_round_trips_through_a_reader(s):
    literal = clj_string(s)
    assert edn_format.loads(literal) == s
    nodes = parse(literal)
    assert len(nodes) == 1 and nodes[0].kind == "string" and nodes[0].closed
    assert not syntax_errors(literal)
    if "\t" not in s:  # a raw tab reads as itself; string_value only maps the escape `\t`
        assert string_value(nodes[0], literal) == s
    assert edn_format.loads(clj_strings([s, s])) == (s, s) or list(edn_format.loads(clj_strings([s, s]))) == [s, s]


def test_clj_string_writes_a_lone_surrogate_as_an_escape():
    assert clj_string("\ud800") == '"\\uD800"'


class _CountingRepl:
    """A context provider that records the analysis it was handed."""

    connection_stamp = "test"

    def __init__(self):
        self.analyses = []

    def gather(self, namespace, symbol_prefix="", analysis=None, budget=None):
        self.analyses.append(analysis)
        return LiveContext(namespace, True, (), 1.0)


class _RecordingVerifier:
    def __init__(self):
        self.analyses = []

    def verify(self, prefix, suggestion, suffix, namespace=None, analysis=None, budget=None):
        self.analyses.append(analysis)
        return ReplVerdict(True, True, None, None, None, 1.0)


def test_the_engine_analyzes_once_and_hands_the_same_analysis_to_context_and_verification(monkeypatch):
    calls = []
    real = analysis_module.analyze_cursor

    def counting(text, offset):
        calls.append(offset)
        return real(text, offset)

    monkeypatch.setattr(analysis_module, "analyze_cursor", counting)
    repl, verifier = _CountingRepl(), _RecordingVerifier()
    engine = Engine(ScriptedModel(["(inc x)", "(dec x)"]), Settings(candidates=2, cache=False), repl=repl,
                    verifier=verifier)
    try:
        result = engine.complete(CompletionRequest("(ns a.b)\n(defn f [x]\n  ", ")"))
    finally:
        engine.close()
    assert [s.text for s in result.suggestions] == ["(inc x)", "(dec x)"]
    assert len(calls) == 1
    assert len(repl.analyses) == 1 and len(verifier.analyses) == 2
    assert all(a is repl.analyses[0] for a in verifier.analyses)
    assert repl.analyses[0].locals == ("x",)
