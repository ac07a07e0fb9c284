"""Evaluated prompts kept aside per buffer (cljassist/model/kv_states.py), and the draft model's life
with its target: the rules on plain token lists, then the real SmolLM2."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from cljassist.budgets import KV_RESTORE_GAIN
from cljassist.model.kv_states import KvState, KvStates, common_prefix, continues
from tests.fixtures_model import never_stop

# ------------------------------------------------------------------ the rules (no model)


def _state(number: int, tokens: list[int], nbytes: int = 100) -> KvState:
    return KvState(number, np.asarray(tokens, dtype=np.int32), (ctypes.c_uint8 * nbytes)())


def test_common_prefix_counts_shared_leading_tokens_up_to_a_limit():
    assert common_prefix([1, 2, 3, 4], [1, 2, 9, 4]) == 2
    assert common_prefix([1, 2, 3], [1, 2, 3, 4]) == 3
    assert common_prefix([1, 2, 3], [1, 2, 3, 4], most=2) == 2
    assert common_prefix([], [1]) == 0 and common_prefix([5], [6]) == 0


def test_typing_continues_a_prompt_and_another_file_does_not():
    header, before, after = list(range(100, 120)), list(range(200, 260)), list(range(300, 340))
    typed = header + before + after
    # a character typed at the cursor: the middle changes, start and end stay
    assert continues(typed, header + before + [7, 8] + after)
    # the cursor moved back a little: still that buffer
    assert continues(typed, header + before[:-5] + after)
    # another file shares the header only
    assert not continues(typed, header + list(range(400, 500)))
    # a prompt's own start (a preload) goes on from it
    assert continues(typed, header + before[:30])


def test_the_kept_state_sharing_the_longest_prefix_is_found():
    kept = KvStates(most=4, most_bytes=10_000)
    a, b = _state(1, [1, 2, 3, 4, 5, 6]), _state(2, [1, 2, 9, 9, 9, 9])
    kept.keep(a)
    kept.keep(b)
    assert kept.best([1, 2, 3, 4, 7]) == (a, 4)
    assert kept.best([1, 2, 9, 9]) == (b, 4)
    assert kept.best([1, 2, 3, 4, 5, 6], most=5) == (a, 5)
    assert kept.best([8, 8]) == (None, 0)


def test_the_least_recently_used_state_is_evicted_at_the_count_bound():
    kept = KvStates(most=2, most_bytes=10_000)
    a, b, c = (_state(i, [i] * 10) for i in (1, 2, 3))
    kept.keep(a)
    kept.keep(b)
    kept.used(a)  # a is now more recent than b
    kept.keep(c)
    assert list(kept) == [a, c] and kept.evicted == 1


def test_the_byte_bound_holds_and_a_state_too_large_alone_is_not_kept():
    kept = KvStates(most=10, most_bytes=300)  # two states of 140 bytes (100 of KV, 40 of tokens)
    for i in range(1, 6):
        kept.keep(_state(i, [i] * 10, nbytes=100))
        assert kept.nbytes <= 300
    assert len(kept) == 2 and kept.evicted == 3
    assert not kept.fits(301)
    kept.keep(_state(9, [9] * 10, nbytes=290))
    assert 9 not in [s.number for s in kept]


def test_a_newer_prompt_of_the_same_buffer_replaces_the_kept_one():
    kept = KvStates(most=4, most_bytes=10_000)
    header = list(range(100, 120))
    older = _state(1, header + list(range(200, 260)))
    other = _state(2, list(range(500, 580)))
    kept.keep(older)
    kept.keep(other)
    newer = _state(3, header + list(range(200, 262)))
    kept.keep(newer)
    assert list(kept) == [other, newer]


# ------------------------------------------------------------------ the real SmolLM2

ALPHA = ("(ns demo.alpha)\n\n" + "".join(f"(defn alpha-{i} [x] (+ x {i}))\n" for i in range(20))
         + "(defn total [xs]\n  (reduce ")
BETA = ("(ns demo.beta\n  (:require [clojure.string :as str]))\n\n"
        + "".join(f"(def beta-{i} \"{i * 7}\")\n" for i in range(25)) + "(defn shout [s]\n  (str/")
GAMMA = "(ns demo.gamma)\n\n" + "".join(f"(def gamma-{i} {{:id {i} :tag :g{i}}})\n" for i in range(20)) + "(map :id "


@pytest.fixture
def fresh_model(default_model):
    """A SmolLM2 of its own (a kept state of another test must not be found), closed afterwards."""
    from cljassist.model.llama import LocalModel

    models = []

    def load(**kwargs):
        model = LocalModel(default_model.path, n_ctx=1024, n_threads=1, **kwargs)
        models.append(model)
        return model

    yield load
    for model in models:
        model.close()


def _ids(gens):
    return [g.token_ids for g in gens]


@pytest.mark.integration
def test_going_back_to_a_buffer_restores_its_evaluated_prompt_and_answers_as_cold(fresh_model):
    model = fresh_model()
    cold_alpha = model.generate_candidates(ALPHA, 3, 12, never_stop)
    alpha_tokens = model.last_stats["prompt_tokens"]
    assert model.last_stats["reused_tokens"] == 0
    model.generate_candidates(BETA, 3, 12, never_stop)
    beta = dict(model.last_stats)
    assert beta["reused_tokens"] < KV_RESTORE_GAIN.value and beta["kept_prompts"] == 1  # alpha, kept aside
    again = model.generate_candidates(ALPHA, 3, 12, never_stop)
    stats = model.last_stats
    # every token but the last (evaluated for its logits, as on any repeat) came from alpha's kept state
    assert stats["reused_tokens"] == alpha_tokens - 1
    assert stats["reused_from"].startswith("kept ")
    assert _ids(again) == _ids(cold_alpha)
    # and beta, kept aside meanwhile, comes back the same way
    model.generate_candidates(BETA, 1, 4, never_stop)
    assert model.last_stats["reused_tokens"] == beta["prompt_tokens"] - 1


@pytest.mark.integration
def test_clients_taking_turns_over_four_buffers_evaluate_each_prompt_once(fresh_model):
    model = fresh_model()
    buffers = [ALPHA, BETA, GAMMA, ";; delta\n" + GAMMA.replace("gamma", "delta")]
    for prompt in buffers:
        model.generate_candidates(prompt, 1, 2, never_stop)
    for _ in range(2):
        for prompt in buffers:
            model.generate_candidates(prompt, 1, 2, never_stop)
            stats = model.last_stats
            assert stats["reused_tokens"] == stats["prompt_tokens"] - 1, stats
            assert stats["kept_prompts"] == 3  # the other buffers'; this one is the evaluated context


@pytest.mark.integration
def test_typing_in_one_buffer_keeps_no_copies_of_it(fresh_model):
    model = fresh_model()
    for typed in ("", "+", "+ ", "+ 0"):
        model.generate_candidates(ALPHA + typed, 1, 4, never_stop)
        assert model.last_stats["reused_from"] in ("", "context")
    assert model.last_stats["kept_prompts"] == 0


@pytest.mark.integration
def test_the_least_recently_used_prompt_is_given_up_at_the_bound(fresh_model):
    model = fresh_model(kept_prompts=2)
    for prompt in (ALPHA, BETA, GAMMA, ";; delta\n" + ALPHA[::-1]):
        model.generate_candidates(prompt, 1, 2, never_stop)
    assert model.last_stats["kept_prompts"] == 2  # beta and gamma; alpha was evicted
    model.generate_candidates(BETA, 1, 2, never_stop)
    assert model.last_stats["reused_from"].startswith("kept ")
    model.generate_candidates(ALPHA, 1, 2, never_stop)
    assert model.last_stats["reused_tokens"] < KV_RESTORE_GAIN.value  # evaluated cold again


@pytest.mark.integration
def test_the_memory_of_kept_prompts_stays_within_its_bound(fresh_model):
    probe = fresh_model()
    probe.generate_candidates(ALPHA, 1, 2, never_stop)
    probe.generate_candidates(BETA, 1, 2, never_stop)
    one = probe._kept.nbytes  # alpha's state, as kept
    bound = int(one * 2.5)
    model = fresh_model(kept_bytes=bound)
    prompts = [ALPHA, BETA, GAMMA] + [f";; file {i}\n" + GAMMA.replace("gamma", f"g{i}") for i in range(4)]
    for prompt in prompts:
        model.generate_candidates(prompt, 1, 2, never_stop)
        assert model._kept.nbytes <= bound
    assert model.last_stats["kept_prompts"] >= 1 and model._kept.evicted >= 3


@pytest.mark.integration
def test_forget_drops_the_kept_prompts_too(fresh_model):
    model = fresh_model()
    model.generate_candidates(ALPHA, 1, 2, never_stop)
    model.generate_candidates(BETA, 1, 2, never_stop)
    model.forget()
    model.generate_candidates(ALPHA, 1, 2, never_stop)
    assert model.last_stats["reused_tokens"] == 0 and model.last_stats["kept_prompts"] == 0


@pytest.mark.integration
def test_a_preloaded_start_is_kept_for_its_buffer_across_a_switch(fresh_model):
    model = fresh_model()
    assert model.preload(ALPHA) > 0
    model.generate_candidates(BETA, 1, 2, never_stop)
    model.generate_candidates(ALPHA, 1, 2, never_stop)
    stats = model.last_stats
    assert stats["reused_from"].startswith("kept ") and stats["reused_tokens"] >= stats["prompt_tokens"] - 2


# ------------------------------------------------------------------ the draft model's life


@pytest.mark.integration
def test_the_draft_model_is_preloaded_warmed_forgotten_and_closed_with_its_target(fresh_model):
    draft = fresh_model(token_healing=False)
    target = fresh_model(speculate=True, draft=draft)
    evaluated = target.preload(ALPHA)
    assert evaluated > 0 and draft._llm.n_tokens == evaluated  # the same tokens, in the draft too
    target.generate_candidates(BETA, 0, 8, never_stop)  # the prompt only (a warm)
    assert draft._llm.n_tokens == target._llm.n_tokens == target.last_stats["prompt_tokens"]
    target.forget()
    assert draft._llm.n_tokens == 0
    target.close()
    assert draft._llm is None and target._llm is None


@pytest.mark.integration
def test_the_draft_models_evaluation_is_cancelled_with_the_request(fresh_model):
    from cljassist.errors import Cancelled

    draft = fresh_model(token_healing=False)
    target = fresh_model(speculate=True, draft=draft)
    # no three tokens repeat at the end of this prompt, so prompt lookup has no guess and the draft
    # is asked, and evaluates the whole prompt, in chunks
    prompt = ";; " + " ".join(f"(def v{i} {i * 37 % 101})" for i in range(60)) + "\n(defn pick [m k]\n  (get m"
    plain = target.generate_candidates(prompt, 1, 6, never_stop)
    assert target.last_stats["speculation"]["proposed"] > 0 and draft._llm.n_tokens > 0
    target.forget()
    with pytest.raises(Cancelled):
        # true once the draft has evaluated its first chunk of the prompt
        target.generate_candidates(prompt, 1, 6, never_stop, cancelled=lambda: draft._llm.n_tokens > 0)
    assert 0 < draft._llm.n_tokens < target.last_stats["prompt_tokens"]
    again = target.generate_candidates(prompt, 1, 6, never_stop)
    assert _ids(again) == _ids(plain)
