from hypothesis import given, settings, strategies as st

from cljassist.candidates import make_stop_rule
from cljassist.clojure_text.gap import GapContext
from cljassist.clojure_text.reader import imbalance
from cljassist.config import Settings
from cljassist.engine import Engine
from cljassist.types import CompletionRequest
from cljassist.verify.structure import shape_candidate
from tests.fakes import ScriptedModel


def run_stop(prefix, suffix, raw):
    stop = make_stop_rule(GapContext.of(prefix, suffix))
    for end in range(1, len(raw) + 1):
        keep = stop(raw[:end])
        if keep is not None:
            return raw[:keep]
    return raw


def suggest(prefix, suffix, raw):
    gap = GapContext.of(prefix, suffix)
    return shape_candidate(run_stop(prefix, suffix, raw), prefix, suffix, gap)


def test_stops_before_closing_what_the_suffix_closes():
    assert run_stop("(defn f [x]\n  (inc ", ")\n", "x))\n(defn g") == "x"


def test_stops_at_line_end_once_forms_are_complete():
    assert run_stop("(let [a 1]\n  ", "\n  a)", "(println a)\n  (foo)") == "(println a)"


def test_keeps_going_across_lines_inside_an_open_form():
    out = run_stop("(defn f [x]\n  ", ")", "(let [y (inc x)]\n    (* y y)))")
    assert out == "(let [y (inc x)]\n    (* y y))"


def test_symbol_tail_then_suffix_echo_is_removed():
    s = suggest("(str/jo", " \", \" xs)", "in \", \" xs)")
    assert s.text == "in" and s.balanced


def test_paren_inside_string_and_char_literal_does_not_stop():
    assert run_stop("(foo ", ")", "\")\" \\) bar)") == "\")\" \\) bar"


def test_cut_short_candidate_is_cut_back_to_complete_forms():
    s = suggest("(defn f [x]\n  ", ")", "(inc x) (let [y (foo")
    assert s.text == "(inc x)" and s.balanced


def test_gap_inside_string_ends_where_the_string_would_close():
    assert run_stop('(println "hello ', '")', 'world")') == "world"


def test_unbalanceable_candidate_is_not_offered():
    s = suggest("(a ", ")", "(b [c")  # nothing complete to keep
    assert not s.balanced and s.text == ""


def test_mismatched_closer_stops():
    assert run_stop("(a ", ")", "b]") == "b"


# --- the invariant, through the whole engine ------------------------------------------------

clojure_chars = st.sampled_from(list("()[]{}\"\\;#^'`~@ \nabx1:/.-") + ["#_", "#(", "#{", "\\)", "\\\"", "#\"", "#?("])
snippets = st.lists(clojure_chars, max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(prefix=snippets, suffix=snippets, raws=st.lists(snippets, min_size=1, max_size=3))
def test_offered_suggestions_never_make_the_file_less_balanced(prefix, suffix, raws):
    engine = Engine(ScriptedModel(raws), Settings(candidates=3))
    result = engine.complete(CompletionRequest(prefix, suffix))
    baseline = imbalance(prefix + suffix)
    for s in result.suggestions:
        assert s.text.strip()
        assert imbalance(prefix + s.text + suffix) <= baseline
        assert s.checks["balanced"] is True


def test_duplicates_are_merged_and_best_ranked_first():
    engine = Engine(ScriptedModel(["(inc x)", "(inc  x)", "(dec x) ;; long"]), Settings(candidates=3))
    result = engine.complete(CompletionRequest("(defn f [x]\n  ", ")"))
    texts = [s.text for s in result.suggestions]
    assert len([t for t in texts if " ".join(t.split()) == "(inc x)"]) == 1
    assert result.suggestions[0].score >= result.suggestions[-1].score


def test_symbol_under_the_cursor_ends_at_the_symbol_when_code_follows_on_the_line():
    assert run_stop("(wh", " (assoc :handler this))", "ilst (assoc :handler this))") == "ilst"
    assert run_stop("(let [x (str/jo", " xs)]", "in \", \" xs)") == "in"


def test_symbol_at_line_end_may_grow_into_a_form():
    assert run_stop("(defn f [x]\n  (wh", "\n", "en x\n    (inc x)))") == "en x"


class FailingCompileVerifier:
    """Fake REPL checks: everything reads; a text containing 'bad' does not compile."""

    def verify(self, prefix, suggestion, suffix, namespace=None, analysis=None, budget=None):
        from cljassist.verify.repl_compile import ReplVerdict

        ok = "bad" not in suggestion
        return ReplVerdict(True, ok, None, None if ok else "Unable to resolve symbol: bad", None, 1.0)


def test_failed_compile_is_withheld_unless_asked_and_then_ranked_last_with_its_error():
    outputs = [("(bad x)", -0.01), ("(inc x)", -0.9)]  # the model prefers the failing one
    request = CompletionRequest("(defn f [x]\n  ", ")")
    hidden = Engine(ScriptedModel(outputs), Settings(candidates=2), verifier=FailingCompileVerifier()).complete(request)
    assert [s.text for s in hidden.suggestions] == ["(inc x)"] and hidden.withheld == 1
    shown = Engine(ScriptedModel(outputs), Settings(candidates=2, show_failing=True),
                   verifier=FailingCompileVerifier()).complete(request)
    assert [s.text for s in shown.suggestions] == ["(inc x)", "(bad x)"]
    assert shown.suggestions[0].error is None and shown.suggestions[1].error == "Unable to resolve symbol: bad"
    assert shown.suggestions[0].checks["compiles"] is True and shown.suggestions[1].checks["compiles"] is False
