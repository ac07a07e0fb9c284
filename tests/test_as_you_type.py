"""As you type: one candidate first, more on request at the same place (what was made and checked is
kept, only the rest is made), generation ended by the stop rule, and a deadline that returns what is
checked so far, never nothing because a later candidate or check ran late."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cljassist.candidates import make_stop_rule
from cljassist.clojure_text.analysis import analyze
from cljassist.config import KEYSTROKE_DEFAULTS, Settings
from cljassist.context import ReplContextProvider
from cljassist.engine import Engine
from cljassist.frontends.protocol import result_reply
from cljassist.types import CUT_VERIFICATION, CompletionRequest
from cljassist.verify import NOT_CHECKED_IN_TIME
from cljassist.verify.repl_compile import ReplVerdict, ReplVerifier
from tests.fakes import RecordingModel, ScriptedModel
from tests.fixtures_model import never_stop, rendered_prompt

DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "demo"
REQUEST = CompletionRequest("(defn f [x]\n  ", ")\n")
# most likely first: (inc x), then (dec x), then (abs x)
OUTPUTS = [("(inc x)", -0.1), ("(dec x)", -0.5), ("(abs x)", -0.9)]
CHECK_TAKES_S = 0.02  # longer than the 1 ms deadline below: past the first check the deadline has passed


class SkipNotingModel(ScriptedModel):
    """The scripted model, noting how many leading candidates each call was asked to leave out."""

    def __init__(self, outputs):
        super().__init__(outputs)
        self.skips: list[int] = []

    def generate_candidates(self, prompt, n, max_tokens, stop, deadline_s=None, cancelled=None, skip=0):
        self.skips.append(skip)
        return super().generate_candidates(prompt, n, max_tokens, stop, deadline_s, cancelled, skip)


class SlowVerifier:
    """The REPL checks' stand-in: each check takes ``seconds``; the texts in ``failing`` do not compile."""

    def __init__(self, seconds: float = 0.0, failing: tuple[str, ...] = ()):
        self.seconds = seconds
        self.failing = failing
        self.checked: list[str] = []

    def verify(self, prefix, suggestion, suffix, namespace=None, analysis=None, budget=None) -> ReplVerdict:
        self.checked.append(suggestion)
        time.sleep(self.seconds)
        ok = suggestion not in self.failing
        return ReplVerdict(reads=True, compiles=ok, evaluated=None, error=None if ok else "does not compile",
                           value=None, ms=self.seconds * 1000)


def _engine(model, verifier, **settings) -> Engine:
    return Engine(model, Settings(steer=False, **settings), verifier=verifier)


def test_past_the_deadline_what_passed_is_the_answer_and_the_rest_is_cut():
    verifier = SlowVerifier(CHECK_TAKES_S)
    result = _engine(ScriptedModel(OUTPUTS), verifier, candidates=3, deadline_ms=1).complete(REQUEST)
    assert [s.text for s in result.suggestions] == ["(inc x)"]
    assert verifier.checked == ["(inc x)"]  # the likeliest is checked first; no check starts after it
    assert result.cut_by_deadline == {CUT_VERIFICATION: 2}
    assert result_reply(result)["cut_by_deadline"] == {"verification": 2}
    cut = [c for c in result.candidates if c.cut == CUT_VERIFICATION]
    assert sorted(c.text for c in cut) == ["(abs x)", "(dec x)"]
    assert all(c.checks["compiles"] is None and NOT_CHECKED_IN_TIME in c.notes for c in cut)
    assert result.withheld == 2


def test_a_late_check_never_empties_the_answer():
    verifier = SlowVerifier(CHECK_TAKES_S, failing=("(inc x)",))
    result = _engine(ScriptedModel(OUTPUTS), verifier, candidates=3, deadline_ms=1).complete(REQUEST)
    # the first failed: past the deadline the next is still checked, as nothing passed yet
    assert verifier.checked == ["(inc x)", "(dec x)"]
    assert [s.text for s in result.suggestions] == ["(dec x)"]
    assert result.cut_by_deadline == {CUT_VERIFICATION: 1}


def test_without_a_deadline_every_candidate_is_checked():
    verifier = SlowVerifier(CHECK_TAKES_S)
    result = _engine(ScriptedModel(OUTPUTS), verifier, candidates=3, deadline_ms=None).complete(REQUEST)
    assert sorted(verifier.checked) == ["(abs x)", "(dec x)", "(inc x)"]
    assert len(result.suggestions) == 3 and result.cut_by_deadline == {}
    assert result_reply(result)["cut_by_deadline"] == {}


def test_more_on_request_keeps_what_was_made_and_checked_and_makes_only_the_rest():
    model, verifier = SkipNotingModel(OUTPUTS), SlowVerifier()
    engine = _engine(model, verifier, candidates=1, deadline_ms=None)
    first = engine.complete(REQUEST)
    assert [s.text for s in first.suggestions] == ["(inc x)"] and verifier.checked == ["(inc x)"]
    more = engine.complete(REQUEST, n=3)
    assert model.skips == [0, 1]  # the second call made only the two not made yet
    assert verifier.checked == ["(inc x)", "(dec x)", "(abs x)"]  # (inc x) was not checked again
    assert [s.text for s in more.suggestions] == ["(inc x)", "(dec x)", "(abs x)"]
    assert more.source == "model"
    # asked again for as many: the recent answer, with nothing made or checked
    assert engine.complete(REQUEST, n=3).source == "recent" and model.skips == [0, 1]


def test_more_on_request_checks_what_the_deadline_left_unchecked():
    model, verifier = SkipNotingModel(OUTPUTS), SlowVerifier(CHECK_TAKES_S)
    engine = _engine(model, verifier, candidates=2, deadline_ms=1)
    first = engine.complete(REQUEST)
    assert [s.text for s in first.suggestions] == ["(inc x)"] and first.cut_by_deadline == {CUT_VERIFICATION: 1}
    more = engine.complete(REQUEST, n=3)
    assert model.skips == [0, 2]
    # the one left unchecked is checked now (the likelier of the two), and makes the answer longer
    assert verifier.checked == ["(inc x)", "(dec x)"]
    assert [s.text for s in more.suggestions] == ["(inc x)", "(dec x)"]
    assert more.cut_by_deadline == {CUT_VERIFICATION: 1}  # (abs x): past the deadline again


def test_as_you_type_one_candidate_is_made_unless_asked():
    assert KEYSTROKE_DEFAULTS["candidates"] == 1
    model = SkipNotingModel(OUTPUTS)
    engine = Engine(model, Settings(steer=False, **KEYSTROKE_DEFAULTS))
    result = engine.complete(REQUEST)
    assert [c.text for c in result.candidates] == ["(inc x)"]


def test_steering_is_given_what_is_left_of_the_deadline():
    request = CompletionRequest("(defn f [counter]\n  (cou", ")\n")
    model = ScriptedModel([("nter", -0.2)], scores={"nter": -0.1})
    Engine(model, Settings(candidates=1, deadline_ms=5000)).complete(request)
    [left] = model.scoring_deadlines
    assert 0 < left <= 5.0
    model = ScriptedModel([("nter", -0.2)], scores={"nter": -0.1})
    Engine(model, Settings(candidates=1, deadline_ms=None)).complete(request)
    assert model.scoring_deadlines == [None]


# ------------------------------------------------------------------------------ the real model


def test_past_the_deadline_only_the_likeliest_text_is_scored(default_model):
    prompt = rendered_prompt(default_model, "(defn f [xs]\n  (wh")
    every = default_model.score_continuations(prompt, ["en", "ile", "en-let"], most=3)
    assert all(s is not None for s in every)
    late = default_model.score_continuations(prompt, ["en", "ile", "en-let"], most=3, deadline_s=0.0)
    [(i, scored)] = [(i, s) for i, s in enumerate(late) if s is not None]
    assert scored.token_ids == every[i].token_ids and scored.logprob == pytest.approx(every[i].logprob)


def test_skip_leaves_out_the_first_branches_and_reads_the_prompt_from_the_cache(default_model):
    prompt = rendered_prompt(default_model, "(defn add-one [x]\n  (+ x ", "))\n")
    every = default_model.generate_candidates(prompt, n=3, max_tokens=12, stop=never_stop)
    rest = default_model.generate_candidates(prompt, n=3, max_tokens=12, stop=never_stop, skip=1)
    assert len(every) == 3 and len(rest) == 2
    # the same branches: each starts from the same first token (what follows may drift a little, as
    # the prompt's last token is evaluated again, in a pass of another size)
    assert [g.token_ids[0] for g in rest] == [g.token_ids[0] for g in every[1:]]
    stats = default_model.last_stats
    assert stats["reused_tokens"] == stats["prompt_tokens"] - 1  # only the last token evaluated again


STOP_CASES = [
    # inside a call the suffix closes: ends before the paren the suffix has
    ("(defn add-one [x]\n  (+ x ", "))\n"),
    # inside a defn body with nothing after: ends at the end of a line of complete forms, or its paren
    ("(ns demo.t)\n\n(defn double [x]\n  (* 2 x))\n\n(defn triple [x]\n  ", ""),
    # at the top level between forms: one line of complete forms
    ("(ns demo.t)\n\n(defn double [x] (* 2 x))\n\n", "\n(defn triple [x] (* 3 x))\n"),
]


@pytest.mark.parametrize("prefix,suffix", STOP_CASES)
def test_the_stop_rule_ends_real_generations_at_the_first_complete_form_or_line(default_model, prefix, suffix):
    gap = analyze(prefix, suffix).gap
    generations = default_model.generate_candidates(rendered_prompt(default_model, prefix, suffix), n=3,
                                                    max_tokens=64, stop=make_stop_rule(gap))
    assert generations
    for g in generations:
        # ended by the rule (or the model's end of text), well before the token limit
        assert g.finish in ("stop", "eos"), (g.finish, g.text)
        # and at the first place the rule names: nothing kept goes past a stop point
        assert make_stop_rule(gap)(g.text) is None, g.text


class RecordingVerifier(ReplVerifier):
    """The real REPL checks, noting the texts they were asked about."""

    def __init__(self, client):
        super().__init__(client)
        self.checked: list[str] = []

    def verify(self, prefix, suggestion, suffix, *args, **kwargs):
        self.checked.append(suggestion)
        return super().verify(prefix, suggestion, suffix, *args, **kwargs)


class SkipNotingRecordingModel(RecordingModel):
    def __init__(self, model):
        super().__init__(model)
        self.skips: list[int] = []

    def generate_candidates(self, prompt, n, max_tokens, stop, deadline_s=None, cancelled=None, skip=0):
        self.skips.append(skip)
        return super().generate_candidates(prompt, n, max_tokens, stop, deadline_s, cancelled, skip)


@pytest.mark.integration
def test_more_on_request_with_the_real_model_and_repl(nrepl_client, default_model):
    nrepl_client.eval("(require 'demo.core)", timeout=60)
    text = (DEMO / "src" / "demo" / "core.clj").read_text()
    offset = text.index("(str/join") + len("(str/jo")
    request = CompletionRequest.at_offset(text, offset, "demo/core.clj")
    model, verifier = SkipNotingRecordingModel(default_model), RecordingVerifier(nrepl_client)
    engine = Engine(model, Settings(candidates=1, max_new_tokens=16, steer=False),
                    ReplContextProvider(nrepl_client), verifier)
    first = engine.complete(request)
    assert first.repl == "used" and len([c for c in first.candidates if c.generated]) == 1
    checked_first = list(verifier.checked)
    more = engine.complete(request, n=3)
    assert model.skips == [0, 1]
    # the first answer's candidate is kept as it was checked, and not checked again
    kept = first.candidates[0]
    assert any(c.text == kept.text and c.checks == kept.checks for c in more.candidates)
    new_texts = {c.text for c in more.candidates[1:]}
    assert all(t in new_texts for t in verifier.checked[len(checked_first):])
    assert len([c for c in more.candidates if c.generated]) == 3
    if first.suggestions:
        assert first.suggestions[0].text in [s.text for s in more.suggestions]
