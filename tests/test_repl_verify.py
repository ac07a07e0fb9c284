"""ReplVerifier against the real Debian nREPL (reads / compiles / opt-in eval), plus the pure
choice of the form to check."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from cljassist.clojure_text.forms import clj_string
from cljassist.verify.repl_compile import ReplVerdict, ReplVerifier, choose_target, load_rules

NS = "(ns verify.sample (:require [clojure.string :as str]))\n"
WAIT = 30.0
_ids = itertools.count()


def _setup(client, ns: str = "verify.sample") -> None:
    r = client.eval(
        f"(ns {ns} (:require [clojure.string :as str]))"
        " (defmacro sneaky [] (intern *ns* (symbol (str \"oops\" (System/nanoTime))) 1) nil)"
        " (defmacro slow [] (Thread/sleep 10000) nil)",
        timeout=WAIT,
    )
    assert r.ok, r.err


@pytest.fixture
def verifier(nrepl_client):
    _setup(nrepl_client)
    return ReplVerifier(nrepl_client, timeout_s=5.0)


@pytest.fixture
def eval_verifier(nrepl_client):
    _setup(nrepl_client)
    return ReplVerifier(nrepl_client, timeout_s=2.0, eval_mode="safe")


# ------------------------------------------------------------------------------------------------
# pure: no REPL


def test_clj_string_escapes_backslashes_quotes_and_keeps_unicode():
    assert clj_string('a"b\\c') == '"a\\"b\\\\c"'
    assert clj_string("λ\n") == '"λ\n"'
    assert clj_string("\ud800") == '"\\uD800"'


def test_rules_load_from_toml():
    rules = load_rules()
    assert {"def", "defn", "ns", "require", "intern", "set!", "eval"} <= rules.refused_heads
    assert "clojure.core/inc" in rules.allowlist and "clojure.string/upper-case" in rules.allowlist
    assert "clojure.core/println" not in rules.allowlist


@pytest.mark.parametrize(
    "prefix, suggestion, suffix, text, top",
    [
        ("(str/upper-ca", 'se "x")', "", '(str/upper-case "x")', True),  # a symbol tail: its list
        ("(defn f [x y] ", "(+ x y)", ")", "(+ x y)", False),
        ("(let [a 1] ", "a", ")", "(let [a 1] a)", True),  # a bare symbol is checked in its form
        ("(let [a (inc ", "1)", "] a)", "(inc 1)", False),
        ("(fn [", "x] x)", "", "(fn [x] x)", True),  # a binding vector: its fn
        ("'(a b ", "c)", "", "'(a b c)", True),  # under a quote: the quote
        ("(map #(+ % ", "1) xs)", "", "(map #(+ % 1) xs)", True),
        ("(f (-> s (.substring ", "1)))", "", "(f (-> s (.substring 1)))", True),
        ("(loop [i 0] (if (< i 3) ", "(recur (inc i))", " i))", "(loop [i 0] (if (< i 3) (recur (inc i)) i))", True),
        ("", "(inc 1) (dec 2)", "", "(inc 1) (dec 2)", True),  # several forms: each of them
        ("(comment ", "(inc 1)", ")", "(inc 1)", True),
    ],
)
def test_choose_target(prefix, suggestion, suffix, text, top):
    t = choose_target(prefix, suggestion, suffix)
    assert (t.text, t.top_level) == (text, top)


def test_choose_target_locals_namespace_and_ns_form():
    t = choose_target(NS + "(defn f [x y] ", "(f x y)", ")")
    assert t.namespace == "verify.sample" and set(t.locals) == {"x", "y"} and "f" in t.extras
    t = choose_target("(ns a.b (:require [clojure.string :as ", "str]))", "")
    assert t.skip_compile and "ns" in t.skip_compile
    assert choose_target("(foo) ; hi", " there", "") is None


# ------------------------------------------------------------------------------------------------
# reads


@pytest.mark.integration
def test_reads_plain_and_inst(verifier):
    v = verifier.verify(NS, "(inc 1)", "")
    assert (v.reads, v.compiles, v.evaluated, v.error) == (True, True, None, None)
    assert isinstance(v, ReplVerdict) and v.ms > 0
    v = verifier.verify(NS, '#inst "2020-01-01"', "")
    assert v.reads is True and v.compiles is True


@pytest.mark.integration
def test_read_eval_is_rejected_never_evaluated(verifier, nrepl_client):
    v = verifier.verify(NS, "#=(clojure.core/intern 'user 'pwned 1)", "")
    assert v.reads is False and v.compiles is None
    assert "EvalReader" in v.error
    assert nrepl_client.eval("(resolve 'user/pwned)", timeout=WAIT).values == ["nil"]


@pytest.mark.integration
def test_unknown_tag_is_rejected(verifier):
    v = verifier.verify(NS, "#foo/bar (clojure.core/intern 'user 'pwned2 1)", "")
    assert v.reads is False and "No reader function for tag foo/bar" in v.error


@pytest.mark.integration
def test_text_travels_as_a_string_literal(verifier):
    v = verifier.verify(NS, '(str "é\\"\\\\ \\u03bb" \\a)', "")
    assert (v.reads, v.compiles) == (True, True), v.error
    v = verifier.verify(NS, '(str "a") (str "b\\")', "")  # the candidate's text cannot escape its string
    assert v.reads is False


# ------------------------------------------------------------------------------------------------
# compiles


@pytest.mark.integration
def test_compiles_with_locals_from_the_enclosing_defn(verifier):
    v = verifier.verify(NS + "(defn f [x y] ", "(+ x y)", ")")
    assert (v.reads, v.compiles, v.error) == (True, True, None)
    v = verifier.verify(NS + "(defn f [{:keys [a]} & more] (let [[b c] more] ", "(str a b c)", "))")
    assert v.compiles is True, v.error


@pytest.mark.integration
def test_symbol_tail_is_checked_in_its_completed_form(verifier):
    assert verifier.verify(NS + "(str/upper-ca", 'se "x")', "").compiles is True
    v = verifier.verify(NS + "(str/upper-ca", 'sse "x")', "")
    assert v.compiles is False and "upper-casse" in v.error


@pytest.mark.integration
def test_unresolved_symbol(verifier):
    v = verifier.verify(NS + "(defn f [x y] (+ x ", "zz)", ")")
    assert v.compiles is False and "Unable to resolve symbol: zz" in v.error


@pytest.mark.integration
@pytest.mark.parametrize("form, message", [("(let [a] a)", "let"), ("(if)", "Too few arguments to if")])
def test_wrong_special_form_shape(verifier, form, message):
    v = verifier.verify(NS, form, "")
    assert v.reads is True and v.compiles is False and message in v.error
    assert "\n" not in v.error


@pytest.mark.integration
def test_missing_class(verifier):
    v = verifier.verify(NS, "(java.util.NoSuchThing.)", "")
    assert v.compiles is False and "java.util.NoSuchThing" in v.error


@pytest.mark.integration
def test_refused_heads_inside_a_body(verifier, nrepl_client):
    v = verifier.verify(NS + "(defn g [x] ", "(def leaked x)", ")")
    assert (v.compiles, v.error) == (False, "refused: def")
    v = verifier.verify(NS + "(defn g [x] ", "(when x (clojure.core/intern *ns* 'leaked2 1))", ")")
    assert (v.compiles, v.error) == (False, "refused: clojure.core/intern")
    assert nrepl_client.eval("[(resolve 'verify.sample/leaked) (resolve 'verify.sample/leaked2)]",
                             timeout=WAIT).values == ["[nil nil]"]


@pytest.mark.integration
def test_top_level_definitions_are_compiled_without_defining(verifier, nrepl_client):
    v = verifier.verify(NS, "(defn brand-new [a] (inc a))", "")
    assert v.compiles is True, v.error
    v = verifier.verify(NS, "(def brand-new-2 (inc 1))", "")
    assert v.compiles is True, v.error
    v = verifier.verify(NS, "(defn brand-new-3 [a] (inc zz))", "")
    assert v.compiles is False and "zz" in v.error
    v = verifier.verify(NS + "(defn rec [n] (if (pos? n) ", "(rec (dec n))", " 0))")
    assert v.compiles is True, v.error  # its own name, not yet in the REPL
    assert nrepl_client.eval("(mapv #(resolve (symbol \"verify.sample\" %)) [\"brand-new\" \"brand-new-2\" \"rec\"])",
                             timeout=WAIT).values == ["[nil nil nil]"]


@pytest.mark.integration
def test_sneaky_macro_changing_mappings_is_detected(nrepl_client):
    ns = f"verify.sneaky{next(_ids)}{time.time_ns()}"
    _setup(nrepl_client, ns)
    interns = f"(count (ns-interns '{ns}))"
    count = nrepl_client.eval(interns, timeout=WAIT).values
    v = ReplVerifier(nrepl_client, timeout_s=5.0).verify(f"(ns {ns})\n", "(sneaky)", "")
    assert (v.reads, v.compiles, v.error) == (True, f"not checked (macro {ns}/sneaky)", None)  # never run
    assert nrepl_client.eval(interns, timeout=WAIT).values == count
    v = ReplVerifier(nrepl_client, timeout_s=5.0, rules=load_rules().trusting(ns)).verify(f"(ns {ns})\n", "(sneaky)", "")
    assert (v.reads, v.compiles) == (True, False)
    assert v.error.startswith(f"changed the REPL's namespaces (undone): mapping {ns}/oops")
    assert nrepl_client.eval(interns, timeout=WAIT).values == count  # the var it interned is gone again


@pytest.mark.integration
def test_namespace_not_loaded(verifier):
    v = verifier.verify("(ns verify.not-loaded-anywhere)\n", "(inc 1)", "")
    assert v.reads is True and v.compiles is None
    assert "not loaded" in v.skipped


@pytest.mark.integration
def test_users_session_untouched_and_not_blocking(verifier, nrepl_client):
    user = nrepl_client.clone()
    assert nrepl_client.eval("(in-ns 'verify.sample)", session=user, timeout=WAIT).ok
    assert nrepl_client.eval("42", session=user, timeout=WAIT).values == ["42"]
    sleeping = nrepl_client.send("eval", code="(do (Thread/sleep 3000) :slept)", session=user)
    started = time.perf_counter()
    v = verifier.verify(NS + "(defn f [x y] ", "(+ x y)", ")")
    assert v.compiles is True and time.perf_counter() - started < 2.5
    assert verifier.session != user
    replies = sleeping.result(WAIT)
    assert any(r.get("value") == ":slept" for r in replies)
    r = nrepl_client.eval("[*2 (str *ns*)]", session=user, timeout=WAIT)
    assert r.values == ['[42 "verify.sample"]']


@pytest.mark.integration
def test_timeout_interrupts_our_session_which_stays_usable(nrepl_client):
    _setup(nrepl_client)
    verifier = ReplVerifier(nrepl_client, timeout_s=1.0, rules=load_rules().trusting("verify.sample"))
    verifier.verify(NS, "(inc 1)", "")  # helper installed: the timeout below is the candidate's
    v = verifier.verify(NS, "(slow)", "")
    assert v.compiles is None and "timed out" in v.error
    v = verifier.verify(NS, "(inc 1)", "")
    assert v.compiles is True, v.error


@pytest.mark.integration
def test_reclones_after_reconnect(verifier):
    assert verifier.verify(NS, "(inc 1)", "").compiles is True
    first = verifier.session
    verifier._tooling._generation = -1  # as after a reconnect
    assert verifier.verify(NS, "(inc 2)", "").compiles is True
    assert verifier.session != first


# ------------------------------------------------------------------------------------------------
# eval (opt-in)


@pytest.mark.integration
def test_eval_safe_value(eval_verifier):
    v = eval_verifier.verify(NS, '(str/upper-case "ab")', "")
    assert (v.compiles, v.evaluated, v.value, v.error) == (True, True, '"AB"', None)
    v = eval_verifier.verify(NS, "(map inc (range))", "")
    assert v.evaluated is True and v.value.endswith("...)") and len(v.value) <= 210


@pytest.mark.integration
def test_eval_not_on_allowlist_or_with_locals(eval_verifier, nrepl_client):
    v = eval_verifier.verify(NS, "(println 1)", "")
    assert v.compiles is True and v.evaluated is None and "println" in v.skipped
    v = eval_verifier.verify(NS + "(defn f [x] ", "(inc x)", ")")
    assert v.evaluated is None and "local x" in v.skipped
    v = ReplVerifier(nrepl_client).verify(NS, "(inc 1)", "")
    assert v.evaluated is None and v.value is None  # eval is opt-in


@pytest.mark.integration
def test_eval_infinite_is_interrupted(eval_verifier):
    v = eval_verifier.verify(NS, "(count (range))", "")
    assert (v.compiles, v.evaluated, v.error) == (True, False, "timed out")
    v = eval_verifier.verify(NS, "(+ 1 2)", "")
    assert (v.evaluated, v.value) == (True, "3")


@pytest.mark.integration
def test_record_into_candidate_checks(verifier):
    from cljassist.types import CHECK_NAMES, Candidate

    c = Candidate("zz)", 0.0, 1, "stop")
    verifier.verify(NS + "(+ 1 ", "zz)", "").record(c.checks)
    assert set(c.checks) == set(CHECK_NAMES) and c.checks["compiles"] is False and not c.passed_all


@pytest.mark.integration
def test_latency(verifier):
    verifier.verify(NS, "(inc 1)", "")
    times = []
    for i in range(30):
        v = verifier.verify(NS + "(defn f [x y] ", f"(+ x y {i})", ")")
        assert v.compiles is True
        times.append(v.ms)
    times.sort()
    print(f"\nverify p50={times[15]:.1f}ms p95={times[28]:.1f}ms")
    assert times[15] < 500


@pytest.mark.integration
def test_many_locals_and_file_defs_not_yet_in_the_repl(verifier):
    names = [f"v{i}" for i in range(30)]
    helpers = "".join(f"(defn helper-{i} [x] x)\n" for i in range(40))
    prefix = NS + helpers + f"(defn big [{' '.join(names)}] "
    v = verifier.verify(prefix, f"(helper-3 (+ {' '.join(names)}))", ")")
    assert v.compiles is True, v.error  # helpers defined above, not evaluated: not "unresolved"
    v = verifier.verify(prefix, "(helper-99 v1)", ")")
    assert v.compiles is False and "helper-99" in v.error
