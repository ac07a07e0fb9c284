"""Steering: the names that complete the symbol being typed become candidates scored by the model,
and a candidate naming nothing known is withheld where every name is known (the resolves check).
Unit tests with a scripted model and a scripted REPL; the scoring and the whole path with the real
SmolLM2 and the real nREPL."""

from __future__ import annotations

import dataclasses

import pytest

from cljassist.clojure_text.analysis import analyze
from cljassist.clojure_text.gap import ends_token
from cljassist.config import Settings
from cljassist.context import LiveContext, ReplContextProvider
from cljassist.engine import Engine
from cljassist.steer import KnownNames, completed_symbol, known_names
from cljassist.types import CompletionRequest
from tests.fakes import ScriptedModel
from tests.fixtures_model import never_stop, rendered_prompt

CODE = "(ns demo.steer)\n\n(defn route-table [routes]\n  (map (fn [route-map] (ro"


class ScriptedRepl:
    """A context provider answering every gather with the same names for the typed symbol."""

    endpoint = "scripted"
    connection_stamp = "scripted"

    def __init__(self, names: tuple[str, ...], all_names: bool, ns_loaded: bool = True):
        self.names, self.all_names, self.ns_loaded = names, all_names, ns_loaded

    def gather(self, namespace, symbol_prefix="", analysis=None, budget=None):
        return LiveContext(namespace, self.ns_loaded, (), 1.0, names=self.names, all_names=self.all_names)


def _complete(model, repl=None, settings=Settings(candidates=3), prefix=CODE, suffix=")))\n"):
    engine = Engine(model, settings, repl=repl)
    try:
        return engine.complete(CompletionRequest(prefix, suffix, "demo/steer.clj"))
    finally:
        engine.close()


# ------------------------------------------------------------------ the names


def test_without_a_repl_the_names_are_the_locals_the_files_and_the_special_forms():
    analysis = analyze(CODE, ")))\n\n(defn rows [])\n(defn recount [])\n")
    known = known_names(analysis, None)
    assert known.prefix == "ro" and not known.complete
    assert known.names == ("route-map", "routes", "route-table", "rows")
    assert known.resolves("routes") is None  # without the REPL's names nothing is judged
    assert known_names(analyze("(defn f [] (re", ")"), None).names == ("recur", "reify*")  # special forms last
    assert known_names(analyze("(defn f [] (:ke", ")"), None) is None  # a keyword is no symbol
    assert known_names(analyze("(defn f [] (", ")"), None) is None


def test_the_repls_names_come_after_the_locals_and_judge_where_they_are_all_of_them():
    analysis = analyze(CODE, ")))")
    live = LiveContext("demo.steer", True, (), 1.0, names=("route-table", "rot"), all_names=True)
    known = known_names(analysis, live)
    assert known.names == ("route-map", "routes", "route-table", "rot") and known.complete
    assert known.resolves("route-table") is True
    assert known.resolves("rooster") is False
    assert known.resolves("Root") is None and known.resolves("ro.ot") is None  # a class, interop
    # fewer than all, or a namespace not loaded: nothing is judged unknown
    partial = known_names(analysis, dataclasses.replace(live, all_names=False))
    assert partial.resolves("rooster") is None and partial.resolves("route-table") is None
    assert known_names(analysis, dataclasses.replace(live, ns_loaded=False)).names == ("route-map", "routes",
                                                                                       "route-table")


@pytest.mark.parametrize("code", [
    "(ns a)\n(defn ro",  # a name being defined
    "(ns a)\n(let [ro",  # a name being bound
    "(ns a)\n(case x ro",  # a constant
    "(ns a)\n(f '(ro",  # quoted data
])
def test_a_symbol_that_is_not_looked_up_isnever_stop_judged(code):
    live = LiveContext("a", True, (), 1.0, names=("rot",), all_names=True)
    known = known_names(analyze(code, ")"), live)
    assert not known.complete and known.resolves("rooster") is None


def test_the_completed_symbol_ends_where_the_text_ends_a_symbol():
    assert completed_symbol("ro", "utes)") == "routes"
    assert completed_symbol("str/jo", "in \", \" xs") == "str/join"
    assert completed_symbol("ro", ")") == "ro"


# ------------------------------------------------------------------ the engine


def test_a_scored_name_is_offered_beside_the_models_candidates():
    model = ScriptedModel([("ot)", -1.5)], scores={"ute-map": -0.2, "utes": -0.9})
    result = _complete(model)
    assert model.scored == [["ute-map", "utes", "ute-table"]]
    assert [s.text for s in result.suggestions] == ["ute-map", "utes", "ot"]
    steered = [c for c in result.candidates if c.finish == "steered"]
    assert [c.text for c in steered] == ["ute-map", "utes"]
    assert "steer" in result.timings
    # no REPL: nothing is judged
    assert [s.checks["resolves"] for s in result.suggestions] == [None, None, None]


def test_a_name_both_generated_and_scored_is_one_suggestion_with_the_better_score():
    model = ScriptedModel([("utes", -2.0)], scores={"utes": -0.5})
    result = _complete(model)
    assert [s.text for s in result.suggestions] == ["utes"]
    assert result.suggestions[0].score == pytest.approx(2.718281828 ** -0.5, abs=1e-3)


def test_where_every_name_is_known_one_that_is_not_is_withheld():
    repl = ScriptedRepl(("route-table",), all_names=True)
    model = ScriptedModel([("oster)", -0.1)], scores={"ute-table": -1.0})
    result = _complete(model, repl)
    assert [s.text for s in result.suggestions] == ["ute-table"] and result.withheld == 1
    withheld = next(c for c in result.candidates if c.text == "oster")
    assert withheld.checks["resolves"] is False and withheld.error == "rooster does not resolve here"
    shown = _complete(model, repl, Settings(candidates=3, show_failing=True))
    assert [s.text for s in shown.suggestions] == ["ute-table", "oster"]
    # the REPL sent only some of the names: the same candidate is offered, first
    partial = _complete(model, ScriptedRepl(("route-table",), all_names=False))
    assert [s.text for s in partial.suggestions] == ["oster", "ute-table"]


def test_steering_off_scores_nothing_and_judges_nothing():
    model = ScriptedModel([("oster)", -0.1)], scores={"ute-table": -1.0})
    result = _complete(model, ScriptedRepl(("route-table",), all_names=True), Settings(candidates=3, steer=False))
    assert model.scored == [] and [s.text for s in result.suggestions] == ["oster"]
    assert "resolves" not in result.suggestions[0].checks and "steer" not in result.timings


def test_no_symbol_being_typed_no_steering():
    model = ScriptedModel([("(inc x)", -0.3)], scores={"x": -0.1})
    result = _complete(model, prefix="(defn f [x]\n  ", suffix=")\n")
    assert model.scored == [] and "resolves" not in result.suggestions[0].checks


# ------------------------------------------------------------------ the real model




@pytest.mark.integration
@pytest.mark.parametrize(("before", "healed"), [
    ("(defn f [s]\n  (str/jo", "jo"),  # healed: the piece of a symbol is re-typed
    ("(defn indices [xs]\n  (for [i ", " "),  # healed: the space goes with the next word
    ("(defn f [xs]\n  (map inc xs))))", ""),  # a clean boundary: nothing to heal
])
def test_a_texts_score_is_what_greedy_generation_gives_the_same_tokens(default_model, before, healed):
    prompt = rendered_prompt(default_model, before)
    assert default_model.heal(prompt).healed == healed
    generated = default_model.generate_candidates(prompt, n=3, max_tokens=5, stop=never_stop)
    assert len(generated) == 3
    scored = default_model.score_continuations(prompt, [g.text for g in generated], most=3)
    for g, s in zip(generated, scored):
        assert s is not None and s.token_ids == g.token_ids and s.finish == "steered"
        assert s.n_tokens == g.n_tokens
        assert s.logprob == pytest.approx(g.logprob, abs=1e-6)


@pytest.mark.integration
def test_the_symbols_ending_counts_as_one_more_token_and_only_the_best_are_scored(default_model):
    prompt = rendered_prompt(default_model, "(defn f [xs]\n  (wh")
    plain, ended, unlikely = default_model.score_continuations(prompt, ["en", "en", "zzqx"], most=3)
    [ended_only] = [s for s in default_model.score_continuations(prompt, ["en"], most=1, ends=ends_token)]
    assert ended_only.n_tokens == plain.n_tokens + 1 and ended_only.logprob < plain.logprob
    assert unlikely.logprob < plain.logprob
    pruned = default_model.score_continuations(prompt, ["zzqx", "en", "ile"], most=2)
    assert pruned[0] is None and pruned[1] is not None and pruned[2] is not None


@pytest.mark.integration
def test_the_repl_steers_smollm2_to_a_var_of_the_namespace(default_model, nrepl_client):
    ns = "steer-test.orders"
    code = f"(ns {ns})\n\n(defn normalize-order-quantities [orders]\n  (map #(update % :qty int) orders))\n"
    session = nrepl_client.clone()
    assert nrepl_client.eval(code, session=session, timeout=30).ok
    nrepl_client.close_session(session)
    # the var is known to the REPL alone: the text around the cursor does not define it
    prefix = f"(ns {ns})\n\n(defn totals [orders]\n  (reduce + (map :qty (norm"
    request = CompletionRequest(prefix, " orders))))\n", "steer_test/orders.clj")
    repl = ReplContextProvider(nrepl_client, timeout_s=30)
    settings = Settings(candidates=1, verify=False)  # the model's own best guess against the REPL's names
    alone = Engine(default_model, dataclasses.replace(settings, steer=False), repl=repl)
    steered = Engine(default_model, settings, repl=repl)
    try:
        without = alone.complete(request)
        result = steered.complete(request)
    finally:
        alone.close()
        steered.close()
    assert [c.text for c in without.candidates] != ["alize-order-quantities"]
    assert [s.text for s in result.suggestions] == ["alize-order-quantities"]
    assert result.suggestions[0].checks["resolves"] is True
    # every var the REPL has for "norm" is known, so the name the model made up alone is withheld
    [own] = [c for c in result.candidates if c.finish != "steered"]
    assert own.text == without.candidates[0].text and own.checks["resolves"] is False
