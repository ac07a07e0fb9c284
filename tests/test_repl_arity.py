"""The arity check: which calls a candidate answers for (pure), and the REPL's verdict on them
against the called vars' :arglists (real Debian nREPL), through the engine too."""

from __future__ import annotations

import pytest

from cljassist.clojure_text.analysis import defn_params
from cljassist.config import Settings
from cljassist.engine import Engine
from cljassist.types import CHECK_NAMES, CompletionRequest
from cljassist.verify.arity import JudgedCall, calls_edn
from cljassist.verify.repl_compile import ReplVerifier, choose_target, load_rules
from tests.fakes import ScriptedModel

NS = "(ns verify.arity (:require [clojure.string :as str]))\n"
WAIT = 30.0


# ------------------------------------------------------------------------------------------------
# pure: which calls are judged


def calls(prefix: str, suggestion: str, suffix: str) -> tuple[JudgedCall, ...]:
    return choose_target(NS + prefix, suggestion, suffix).calls


def test_calls_inside_the_candidate_are_judged_whole():
    assert calls("", "(inc 1) #(dec % 2)", "") == (JudgedCall(1, 1, True), JudgedCall(1, 10, True))
    assert calls("(defn f [x]\n  ", "(+ x\n     (inc x))", ")") == (JudgedCall(1, 1, True), JudgedCall(2, 6, True))


def test_the_call_the_suffix_closes_is_judged_for_too_many_only():
    assert calls("(str/join ", '", " xs', ")") == (JudgedCall(1, 1, False),)
    assert calls("(str/jo", "in", ' ", " xs)') == (JudgedCall(1, 1, False),)  # the candidate writes its head
    assert calls("(inc x", " 1)", "") == (JudgedCall(1, 1, True),)  # the candidate closes it


def test_a_call_the_candidate_writes_one_argument_of_is_not_judged():
    assert calls("(defn f [m]\n  (reduce ", "(fn [a x] (+ a x))", "\n    0 m))") == (
        JudgedCall(1, 1, True), JudgedCall(1, 11, True))  # the fn and the +, never the reduce
    assert calls("(foo [a ", "b]", ")") == ()


def test_quoted_open_and_metadata_calls():
    assert calls("", "'(inc 1 2)", "") == ()
    assert calls("(inc ", "1 2", "") == ()  # left open: the rest of the call is unknown
    assert calls("", "^:m (inc 1)", "") == (JudgedCall(1, 1, True),)  # read at its `^`
    assert calls("", "(str \"λ𝄞\" (inc 1))", "") == (JudgedCall(1, 1, True), JudgedCall(1, 12, True))  # UTF-16 columns
    assert calls("", "(+ 1\r\n  (inc 1))", "") == (JudgedCall(1, 1, True), JudgedCall(2, 3, True))
    assert calls_edn([JudgedCall(1, 1, True), JudgedCall(2, 6, False)]) == "{[1 1] true [2 6] false}"


def test_the_files_own_parameters_of_a_defn():
    text = ('(ns a)\n(defn f [a b] a)\n(defn- ^:private g "doc" {:x 1}\n  ([a] a)\n  (^long [a b] b))\n'
            "(def h 1)\n(defn k [a])\n(defn k [a b])\n")
    assert defn_params(text, "f") == ("[a b]",) and defn_params(text, "g") == ("[a]", "[a b]")
    assert defn_params(text, "h") is None and defn_params(text, "k") is None and defn_params(text, "zz") is None
    t = choose_target(NS + "(defn f [x y] x)\n\n(defn g [a] ", "(f a a)", ")")
    assert t.file_params == (("f", "[x y]"),)


def test_arity_is_a_check_name():
    assert CHECK_NAMES.index("compiles") < CHECK_NAMES.index("arity") < CHECK_NAMES.index("evaluated")


# ------------------------------------------------------------------------------------------------
# against the REPL

USER_VARS = (
    "(defn two [a b] [a b])"
    " (defn multi ([a] a) ([a b c] c))"
    " (defn destructured [{:keys [a]} & {:keys [b]}] [a b])"
    " (defn documented-narrower {:arglists '([x])} [x & more] x)"
    " (defmacro one-arg-macro [& body] `(do ~@body))"
    " (def ^:dynamic ^{:arglists '([x])} *hook* (fn [x] x))"
)


@pytest.fixture
def verifier(nrepl_client):
    r = nrepl_client.eval(NS + USER_VARS, timeout=WAIT)
    assert r.ok, r.err
    return ReplVerifier(nrepl_client, timeout_s=5.0)


def judge(verifier, prefix: str, suggestion: str, suffix: str = ""):
    v = verifier.verify(NS + prefix, suggestion, suffix)
    assert v.reads is True and v.compiles is True, v.error
    return v


@pytest.mark.integration
def test_too_many_args_to_a_user_var_and_to_a_core_fn_are_wrong(verifier):
    v = judge(verifier, "(defn f [x] ", "(two x x x)", ")")
    assert (v.arity, v.error) == (False, "wrong number of args (3) passed to verify.arity/two (takes 2)")
    v = judge(verifier, "(defn f [m] ", "(get m)", ")")
    assert (v.arity, v.error) == (False, "wrong number of args (1) passed to clojure.core/get (takes 2 or 3)")
    # an inlined core fn is refused by the compiler already; the error says why in the same words
    v = verifier.verify(NS + "(defn f [x] ", "(inc x 1)", ")")
    assert (v.compiles, v.arity, v.error) == (False, False, "wrong number of args (2) passed to clojure.core/inc (takes 1)")
    v = judge(verifier, "", "(str/upper-case)")
    assert v.arity is False and v.error == "wrong number of args (0) passed to clojure.string/upper-case (takes 1)"
    v = judge(verifier, "", "(map #(str/upper-case % 2) [1])")
    assert v.arity is False and "clojure.string/upper-case" in v.error


@pytest.mark.integration
def test_right_counts_variadic_and_multi_arity_pass(verifier):
    for text in ["(two 1 2)", "(str 1 2 3 4 5)", "(assoc {} :a 1 :b 2)", "(multi 1)", "(multi 1 2 3)",
                 "(update {} :a (fnil + 0) 1 2 3 4)", "(+)", "(destructured {:a 1} :b 2)"]:
        v = judge(verifier, "", text)
        assert (v.arity, v.error) == (True, None), text
    v = judge(verifier, "", "(multi 1 2)")
    assert v.arity is False and v.error.endswith("verify.arity/multi (takes 1 or 3)")
    v = judge(verifier, "", "(destructured)")
    assert v.arity is False and v.error.endswith("verify.arity/destructured (takes 1 or more)")
    v = judge(verifier, "", "(assoc {} :a)")
    assert v.arity is False and v.error.endswith("clojure.core/assoc (takes 3 or more)")


@pytest.mark.integration
def test_calls_are_found_where_the_jvm_reader_places_them(verifier):
    for text in ["(two 1\r\n  #?(:clj (two 1 2 3)))", '(two "λ𝄞" (two 1 2 3))', "(two 1\n\t(two 1 2 3))",
                 "(two 1 ^:m (two 1 2 3))"]:
        v = judge(verifier, "", text)
        assert v.arity is False and v.error.startswith("wrong number of args (3)"), text


@pytest.mark.integration
def test_macro_calls_are_not_judged_but_what_they_expand_to_is(verifier, nrepl_client):
    for text in ["(when true 1 2 3)", "(-> 1 (inc))", "(->> [1] (map inc))",
                 "(cond-> {} true (assoc :a 1))", "(doto (java.util.ArrayList.) (.add 1))"]:
        v = judge(verifier, "", text)
        assert (v.arity, v.error) == (True, None), text
    # a user's macro is never run by the check; where its namespace is trusted, it is expanded too
    v = verifier.verify(NS, "(one-arg-macro 1 2 3)", "")
    assert (v.compiles, v.arity) == ("not checked (macro verify.arity/one-arg-macro)", None)
    trusted = ReplVerifier(nrepl_client, timeout_s=5.0, rules=load_rules().trusting("verify.arity"))
    v = judge(trusted, "", "(one-arg-macro 1 2 3)")
    assert (v.arity, v.error) == (True, None)
    v = judge(verifier, "(defn f [m] (-> m ", "(assoc :a)", "))")  # threaded: (assoc m :a)
    assert v.arity is False and "clojure.core/assoc" in v.error


@pytest.mark.integration
def test_locals_shadowing_a_var_are_not_judged(verifier):
    assert judge(verifier, "(defn f [two] ", "(two 1 2 3)", ")").arity is True
    for text in ["(let [inc +] (inc 1 2))", "(let [two +] (two 1 2 3))", "(fn [two] (two 1 2 3))", "(letfn [(two [& xs] xs)] (two 1 2 3))",
                 "(for [inc [+]] (inc 1 2))", "(let [{:keys [inc]} {:inc +}] (inc 1 2))",
                 "(try 1 (catch Exception inc (inc 1 2)))"]:
        v = judge(verifier, "", text)
        assert (v.arity, v.error) == (True, None), text
    v = judge(verifier, "", "(let [x 1] (two x 2 3))")  # a let is no shadow of names it does not bind
    assert v.arity is False


@pytest.mark.integration
def test_a_call_the_suffix_completes_is_judged_on_the_whole_call(verifier):
    v = judge(verifier, "(defn f [xs] (str/join ", '", " xs', "))")
    assert (v.arity, v.error) == (True, None)
    v = judge(verifier, "(defn f [xs] (str/jo", "in", ' ", " xs))')
    assert (v.arity, v.error) == (True, None)
    v = judge(verifier, "(defn f [xs] (str/join ", '", " xs xs', "))")
    assert v.arity is False and v.error == "wrong number of args (3) passed to clojure.string/join (takes 1 or 2)"
    v = judge(verifier, "(defn f [m] (assoc m ", ":a 1", "))")
    assert v.arity is True
    # too few where the suffix closes the call: the next line may bring the rest
    v = judge(verifier, "(defn f [xs]\n  (reduce\n    ", "(fn [acc x] (+ acc x))", "))")
    assert v.arity is True
    v = judge(verifier, "(defn f [xs] (reduce ", "+", "))")
    assert (v.arity, v.error) == (True, None)
    # the user's own call around the candidate is not the candidate's to answer for
    v = judge(verifier, "(defn f [x] (inc x ", "(dec x)", "))")
    assert (v.arity, v.error) == (True, None)


@pytest.mark.integration
def test_uncertain_arities_are_notes_not_failures(verifier):
    v = judge(verifier, "", "(documented-narrower 1 2)")  # :arglists say 1, the fn takes 1 or more
    assert v.arity is True and v.error is None and any("disagree" in n for n in v.notes)
    v = judge(verifier, "", "(*hook* 1 2)")
    assert v.arity is True and any("dynamic" in n for n in v.notes)
    # defined in the file being edited with other parameters: the REPL holds an older definition
    v = judge(verifier, "(defn two [a b c] [a b c])\n\n", "(two 1 2 3)")
    assert v.arity is True and any("not the REPL's" in n for n in v.notes)
    v = judge(verifier, "(defn two [a b c] [a b c])\n\n(defn two [a b] [a b])\n\n", "(two 1 2 3)")
    assert v.arity is True and any("not the REPL's" in n for n in v.notes)  # which one counts is unknown
    assert judge(verifier, "", "'(inc 1 2)").arity is True


@pytest.mark.integration
def test_a_var_the_file_defines_as_the_repl_has_it_is_judged(verifier):
    v = judge(verifier, "(defn two [a b] [a b])\n\n", "(two 1 2 3)")
    assert v.arity is False and v.error.endswith("verify.arity/two (takes 2)")
    v = judge(verifier, "(defn f [x] ", "(multi x x)", ")\n\n(defn- multi \"doc\"\n  ([a] a)\n  ([a b c] c))\n")
    assert v.arity is False and v.error.endswith("verify.arity/multi (takes 1 or 3)")


@pytest.mark.integration
def test_not_compiled_means_not_judged(verifier):
    v = verifier.verify(NS, "(str zz 1)", "")
    assert v.compiles is False and v.arity is None and "zz" in v.error
    v = verifier.verify("(ns verify.not-loaded-for-arity)\n", "(inc 1 2)", "")
    assert v.compiles is None and v.arity is None


@pytest.mark.integration
def test_a_wrong_call_is_not_evaluated(nrepl_client):
    verifier = ReplVerifier(nrepl_client, timeout_s=2.0, eval_mode="safe")
    v = verifier.verify(NS, '(str/upper-case "a" "b")', "")
    assert (v.compiles, v.arity, v.evaluated) == (True, False, None)
    v = verifier.verify(NS, '(str/upper-case "a")', "")
    assert (v.arity, v.evaluated, v.value) == (True, True, '"A"')


@pytest.mark.integration
def test_wrong_arity_is_withheld_by_the_engine_and_shown_only_on_request(verifier, nrepl_client):
    outputs = [("(get x)", -0.01), ("(get x :a)", -0.9)]  # the model prefers the wrong one
    request = CompletionRequest(NS + "(defn f [x]\n  ", ")")
    hidden = Engine(ScriptedModel(outputs), Settings(candidates=2), verifier=verifier).complete(request)
    assert [s.text for s in hidden.suggestions] == ["(get x :a)"] and hidden.withheld == 1
    assert hidden.suggestions[0].checks == {"balanced": True, "reads": True, "compiles": True, "arity": True,
                                            "evaluated": None}
    shown = Engine(ScriptedModel(outputs), Settings(candidates=2, show_failing=True),
                   verifier=ReplVerifier(nrepl_client, timeout_s=5.0)).complete(request)
    assert [s.text for s in shown.suggestions] == ["(get x :a)", "(get x)"]
    assert shown.suggestions[1].checks["arity"] is False and shown.suggestions[1].checks["compiles"] is True
    assert shown.suggestions[1].error == "wrong number of args (1) passed to clojure.core/get (takes 2 or 3)"
