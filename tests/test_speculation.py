"""Speculative decoding: guessed tokens checked several to a pass give greedy decoding's output."""

from __future__ import annotations

import dataclasses

import pytest

from cljassist.model.speculate import PromptLookup, Speculation
from cljassist.types import Prompt
from tests.fixtures_model import never_stop, rendered_prompt

# ------------------------------------------------------------------ the n-gram proposer


def test_lookup_copies_what_followed_the_latest_earlier_occurrence_of_the_last_tokens():
    lookup = PromptLookup(longest=3, shortest=2)
    #            0  1  2  3  4  5  6  7  8  9
    history = [1, 2, 3, 4, 9, 2, 3, 5, 6, 2, 3]
    # the last two tokens (2 3) occurred at 1 and 5: the latest, at 5, was followed by 5 6 2 3
    assert lookup.propose(history, 2) == [5, 6]
    assert lookup.propose(history, 10) == [5, 6, 2, 3]


def test_lookup_prefers_the_longest_match():
    lookup = PromptLookup(longest=3, shortest=2)
    history = [7, 2, 3, 4, 0, 2, 3, 8, 7, 2, 3]
    # (2 3) last occurred at 5 (followed by 8), but (7 2 3) only at 0 (followed by 4)
    assert lookup.propose(history, 1) == [4]


def test_lookup_guesses_nothing_without_a_match_or_room():
    lookup = PromptLookup(longest=3, shortest=2)
    assert lookup.propose([1, 2, 3, 4], 5) == []
    assert lookup.propose([2, 3, 2, 3], 0) == []
    assert lookup.propose([5], 3) == []
    assert lookup.propose([], 3) == []


def test_speculation_asks_the_draft_only_where_lookup_has_no_match():
    asked = []

    class Draft:
        def propose(self, history, most, cancelled=None):
            asked.append(list(history))
            return [42] * most

    spec = Speculation(Draft(), per_pass=3)
    # (1 2 3), the longest n-gram looked up, occurred before: lookup guesses, at most per_pass tokens
    assert spec.propose([1, 2, 3, 9, 8, 7, 6, 1, 2, 3], 8) == [9, 8, 7]
    assert asked == []
    # only (2 3) occurred before, shorter than lookup matches: the draft guesses
    assert spec.propose([2, 3, 9, 1, 2, 3], 8) == [42, 42, 42]
    assert asked == [[2, 3, 9, 1, 2, 3]]
    # without a draft, no guess
    assert Speculation(None, per_pass=3).propose([2, 3, 9, 1, 2, 3], 8) == []


# ------------------------------------------------------------------ on real models

# code that repeats itself: the map literal is written again
REPEATING = """(def palette
  {:red [255 0 0] :green [0 255 0] :blue [0 0 255] :white [255 255 255] :black [0 0 0]})

(defn describe [color]
  (case color
    :red "red"
    :green "green"
    :blue "blue"))

(def palette-copy
  {:red [255 0 0] :green [0 255 0] :bl"""


def _prompt(model, before: str, healing: bool) -> Prompt:
    """A prompt as the prompt stage builds it; without healing it is read as given."""
    prompt = rendered_prompt(model, before)
    return prompt if healing else dataclasses.replace(prompt, healed="")



def _at_second_line(text: str) -> int | None:
    """Stops at the second newline: inside a run of accepted guesses, as a form's end would."""
    first = text.find("\n")
    second = text.find("\n", first + 1) if first >= 0 else -1
    return second if second >= 0 else None


def _same_candidates(plain, speculated) -> None:
    assert [c.token_ids for c in speculated] == [c.token_ids for c in plain]
    assert [(c.text, c.finish, c.n_tokens) for c in speculated] == [(c.text, c.finish, c.n_tokens) for c in plain]
    # the logprobs of tokens decided in a pass of several are that pass's: close, not equal
    for s, p in zip(speculated, plain):
        assert s.logprob == pytest.approx(p.logprob, abs=0.05 * max(1, len(p.token_ids)))


@pytest.fixture(scope="module")
def speculating_smollm2(default_model):
    from cljassist.model.llama import LocalModel

    model = LocalModel(default_model.path, n_ctx=2048, speculate=True)
    yield model
    model.close()


@pytest.mark.integration
@pytest.mark.parametrize("healing", [True, False])
@pytest.mark.parametrize("stop", [never_stop, _at_second_line])
def test_prompt_lookup_gives_greedy_decodings_candidates(default_model, speculating_smollm2, healing, stop):
    plain = default_model.generate_candidates(_prompt(default_model, REPEATING, healing), 3, 48, stop)
    assert "speculation" not in default_model.last_stats  # plain greedy decoding is the default
    model = speculating_smollm2
    speculated = model.generate_candidates(_prompt(model, REPEATING, healing), 3, 48, stop)
    stats = model.last_stats["speculation"]
    assert len(plain) == 3
    _same_candidates(plain, speculated)
    assert (model.last_stats.get("healed") is not None) == healing
    assert stats["accepted"] > 0 and stats["proposed"] >= stats["accepted"]
    # a step for every token after the first, and one more for a candidate that ended on a stop token
    assert stats["tokens"] == sum(len(c.token_ids) - 1 + (c.finish == "eos") for c in plain)


@pytest.mark.integration
def test_the_engine_says_where_the_models_time_went(default_model, speculating_smollm2):
    from cljassist.config import Settings
    from cljassist.engine import Engine
    from cljassist.types import CompletionRequest

    request = CompletionRequest(REPEATING, "")
    plain = Engine(default_model, Settings(candidates=1, steer=False, max_new_tokens=16)).complete(request)
    assert {"prompt_eval", "generate"} <= set(plain.timings) and "draft" not in plain.timings
    speculated = Engine(speculating_smollm2, Settings(candidates=1, steer=False, max_new_tokens=16)).complete(request)
    timings = speculated.timings
    assert {"prompt_eval", "generate", "draft"} <= set(timings)
    assert timings["draft"] > 0  # the guessing was timed (it is part of generating)


@pytest.fixture(scope="module")
def qwen_pair():
    """The Qwen2.5-Coder-0.5B twice: plain, and speculating with itself as the draft (the same
    tokenizer; a draft that always guesses right shows the verification keeps what it should)."""
    from tests.fixtures_model import qwen_model_file

    path = qwen_model_file()
    if path is None:
        pytest.skip("Qwen2.5-Coder-0.5B is not assembled in the model cache")
    from cljassist.model.llama import LocalModel

    plain = LocalModel(path, n_ctx=1024)
    draft = LocalModel(path, n_ctx=1024, token_healing=False)
    target = LocalModel(path, n_ctx=1024, speculate=True, draft=draft)
    yield plain, target
    for model in (plain, target, draft):
        model.close()


DRAFTED = """(ns geometry.shapes)

(defn area
  "The area of a shape given as a map with :kind."
  [{:keys [kind] :as shape}]
  (case kind
    :circle (* Math/PI (:r shape) (:r shape))
    :rect """


@pytest.mark.integration
@pytest.mark.parametrize("healing", [True, False])
def test_a_draft_model_gives_greedy_decodings_candidates(qwen_pair, healing):
    plain, target = qwen_pair
    expected = plain.generate_candidates(_prompt(plain, DRAFTED, healing), 3, 32, never_stop)
    got = target.generate_candidates(_prompt(target, DRAFTED, healing), 3, 32, never_stop)
    _same_candidates(expected, got)
    stats = target.last_stats["speculation"]
    # most tokens were guessed right (a draft that is the model itself guesses every one, but a
    # guess past a near-tie is evaluated again, and lookup's guesses come first)
    assert stats["accepted"] > stats["tokens"] / 2


@pytest.mark.integration
def test_a_draft_of_another_tokenizer_is_refused(default_model, qwen_pair):
    from cljassist.errors import ModelLoadError
    from cljassist.model.llama import LocalModel

    with pytest.raises(ModelLoadError, match="another tokenizer"):
        LocalModel(default_model.path, n_ctx=256, speculate=True, draft=qwen_pair[0])
