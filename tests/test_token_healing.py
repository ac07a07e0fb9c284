"""Token healing: the boundary rule, the vocabulary index, and the local model's healed prompts and
constrained first tokens on the real tokenizers (SmolLM2; Qwen2.5-Coder when it is installed)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cljassist.model.healing import VocabularyIndex, start_kept, tokens_to_back_off
from cljassist.prompt import PromptInput, assemble_prompt
from cljassist.types import Prompt
from tests.fixtures_model import never_stop, rendered_prompt

# ------------------------------------------------------------------ the rule, on a made-up vocabulary

VOCAB = [b"", b" ", b" (", b"(", b"range", b"i", b"jo", b"join", b"/", b"/join", b"))))", b"\n", b"\n  ", b"j"]


def test_the_last_token_goes_when_a_longer_token_starts_with_it():
    index = VocabularyIndex(VOCAB)
    assert tokens_to_back_off([b"i", b" "], index.can_grow) == 1  # " " grows into " ("
    assert tokens_to_back_off([b"/", b"jo"], index.can_grow) == 2  # "/jo" grows into "/join"
    assert tokens_to_back_off([b"x", b"jo"], index.can_grow) == 1  # "xjo" into nothing, "jo" into "join"
    assert tokens_to_back_off([b"x", b"\n"], index.can_grow) == 1


def test_a_token_nothing_longer_starts_with_is_a_clean_boundary():
    index = VocabularyIndex(VOCAB)
    assert tokens_to_back_off([b" xs", b"))))"], index.can_grow) == 0
    assert tokens_to_back_off([b"range"], index.can_grow) == 0
    assert tokens_to_back_off([], index.can_grow) == 0


def test_a_control_token_isnever_stop_backed_off_nor_crossed():
    index = VocabularyIndex(VOCAB)
    assert tokens_to_back_off([b"", b" "], index.can_grow) == 1
    assert tokens_to_back_off([b"/", b""], index.can_grow) == 0


def test_at_most_two_tokens_go():
    grows_always = lambda text: True  # noqa: E731
    assert tokens_to_back_off([b"a", b"b", b"c"], grows_always) == 2
    assert tokens_to_back_off([b"a", b"b", b"c"], grows_always, most=1) == 1


def test_real_codes_own_split_of_a_backed_off_run_stays():
    # "\n  " then code: "\n " + " (" -- the first token stays in the prompt, the last space goes
    assert start_kept(b"\n  ", [b"\n ", b" (", b"range"]) == 2
    assert start_kept(b"\n  ", [b"\n", b" ", b" ("]) == 2
    assert start_kept(b" ", [b" ("]) == 0  # the space joins the paren: all of it goes
    assert start_kept(b"jo", [b"jo", b"("]) == 0  # a token ending with it is no split inside it
    assert start_kept(b"ab", [b"x", b"b("]) == 0  # a tokenization that is not of the text keeps nothing


def test_allowed_tokens_reproduce_the_start_or_all_of_the_remaining_text():
    index = VocabularyIndex(VOCAB, excluded=[11])
    texts = lambda ids: sorted(VOCAB[i] for i in ids)  # noqa: E731
    assert texts(index.allowed(b" ")) == [b" ", b" ("]
    assert texts(index.allowed(b"jo")) == [b"j", b"jo", b"join"]
    assert texts(index.allowed(b"/jo")) == [b"/", b"/join"]
    assert texts(index.allowed(b"\n  ")) == [b"\n  "]  # "\n" (id 11) is excluded
    assert index.can_grow(b"jo") and not index.can_grow(b"join") and not index.can_grow(b"))))")


def test_bytes_at_the_top_of_the_range_are_bounded_right():
    index = VocabularyIndex([b"a\xff", b"a\xff\x01", b"b", b"\xff\xff", b"\xff\xff\xfe"])
    assert sorted(index.allowed(b"a\xff").tolist()) == [0, 1]
    assert sorted(index.allowed(b"\xff\xff").tolist()) == [3, 4]
    assert index.can_grow(b"\xff\xff")


# ------------------------------------------------------------------ on the real tokenizer (SmolLM2)




@pytest.mark.integration
@pytest.mark.parametrize(("before", "healed"), [
    ("(defn indices [xs]\n  (for [i ", " "),  # the space that real code joins to the next word
    ("(defn f [s]\n  (str/jo", "jo"),  # inside a symbol: the rest of the word is one token with it
    # real code: "\n      " + " (", so only the last space goes
    ("  (->> (slurp f)\n       str/split-lines\n       ", " "),
    ("(let [a 1]\n  ", " "),
    ("(defn f [x]\n  (inc x))\n\n", "\n"),
])
def test_smollm2_backs_off_what_may_merge_with_the_next_text(default_model, before, healed):
    prompt = default_model.heal(rendered_prompt(default_model, before))
    assert prompt.healed == healed
    assert prompt.before + healed == before and prompt.prefix + healed == before
    assert prompt.text == default_model.fim.render(prompt.before, prompt.suffix)


@pytest.mark.integration
@pytest.mark.parametrize("before", ["(map inc xs))))", "true"])
def test_smollm2_leaves_a_prompt_that_ends_on_a_clean_boundary(default_model, before):
    """Their last tokens ("))))", "true") start no longer token of SmolLM2's vocabulary."""
    prompt = rendered_prompt(default_model, before)
    assert default_model.heal(prompt) == dataclasses.replace(prompt, healed="")


@pytest.mark.integration
def test_a_finished_text_a_healed_prompt_and_healing_off_are_read_as_given(default_model):
    text = "(for [i "
    assert default_model.heal(Prompt.of_text(text)).text == text
    healed = default_model.heal(rendered_prompt(default_model, text))
    assert default_model.heal(healed) is healed  # never twice
    default_model.token_healing = False
    try:
        assert default_model.heal(rendered_prompt(default_model, text)).healed == ""
        default_model.generate_candidates(rendered_prompt(default_model, text), n=1, max_tokens=2, stop=never_stop)
        assert "healed" not in default_model.last_stats
    finally:
        default_model.token_healing = True


def _real_code_path_is_allowed(model, healed: str, continuation: str) -> None:
    """The tokens of ``healed + continuation`` as the tokenizer cuts real code, up to the one that
    covers the end of ``healed``, are each allowed at their step of the constraint."""
    done = b""
    target = healed.encode()
    for token in model.tokenize(healed + continuation):
        assert token in set(model._vocabulary.allowed(target[len(done):]).tolist()), model.detokenize([token])
        done += model._piece(token)
        if len(done) >= len(target):
            return
    raise AssertionError("the tokens never covered the backed-off text")


@pytest.mark.integration
def test_after_for_i_the_paren_is_a_first_token_the_model_may_take(default_model):
    """After `(for [i ` the prompt ends at `i`, and real code's ` (` + `range` is a path the first
    tokens may take: the constraint lets through a token that covers the space and goes on."""
    m = default_model
    assert m.heal(rendered_prompt(m, "  (for [i ")).healed == " "
    paren, rng = m.tokenize(" (range")[:2]
    assert m.detokenize([paren]) == " (" and m.detokenize([rng]) == "range"
    allowed = set(m._vocabulary.allowed(b" ").tolist())
    assert paren in allowed and m.tokenize(" ")[0] in allowed
    assert rng not in allowed and m.tokenize("(")[0] not in allowed  # the space comes first
    _real_code_path_is_allowed(m, " ", "(range (count xs))]")
    _real_code_path_is_allowed(m, "\n       ", "(map parse-row)")
    _real_code_path_is_allowed(m, "jo", "in \", \" xs)")


@pytest.mark.integration
@pytest.mark.parametrize("before", [
    "(defn indices [xs]\n  (for [i ",
    "(ns demo (:require [clojure.string :as str]))\n\n(defn f [s]\n  (str/jo",
    "(defn f [x]\n  (let [y (inc x)]\n    ",
])
def test_every_candidate_begins_with_the_backed_off_text(default_model, before):
    m = default_model
    healed = m.heal(rendered_prompt(m, before)).healed
    assert healed
    gens = m.generate_candidates(rendered_prompt(m, before), n=3, max_tokens=6, stop=never_stop)
    assert m.last_stats["healed"] == healed
    assert len(gens) == 3 and len({g.token_ids[0] for g in gens}) == 3
    for g in gens:
        generated = m.detokenize(list(g.token_ids))
        assert generated.startswith(healed) and generated == healed + g.text  # taken off the start
        retyped = sum(1 for i in range(1, len(g.token_ids) + 1)
                      if len(m.detokenize(list(g.token_ids[:i])).encode()) <= len(healed.encode()))
        assert g.n_tokens == len(g.token_ids) - retyped
        assert g.n_tokens == 6 or g.finish == "eos"
        assert g.logprob <= 0.0


@pytest.mark.integration
def test_the_stop_rule_sees_the_suggestion_only(default_model):
    m = default_model
    before = "(defn indices [xs]\n  (for [i "
    seen: list[str] = []

    def stop(text: str) -> int | None:
        seen.append(text)
        return 1 if len(text) >= 3 else None

    gens = m.generate_candidates(rendered_prompt(m, before), n=2, max_tokens=12, stop=stop)
    for g in gens:
        raw = m.detokenize(list(g.token_ids))
        assert raw.startswith(" ")
        assert any(raw == " " + s for s in seen)  # the text the rule was shown is the generation less " "
        if g.finish == "stop":
            assert len(g.text) == 1


@pytest.mark.integration
def test_healed_scores_renormalize_over_the_allowed_first_tokens(default_model):
    """The user's text is given: the allowed first tokens' probabilities sum to one at most."""
    m = default_model
    gens = m.generate_candidates(rendered_prompt(m, "(defn indices [xs]\n  (for [i "), n=40, max_tokens=1, stop=never_stop)
    assert len(gens) == min(40, len(m._vocabulary.allowed(b" ")))
    covering = [g.logprob for g in gens if len(g.token_ids) == 1]  # one token: the space and more
    assert covering == sorted(covering, reverse=True)
    assert float(np.exp([g.logprob for g in gens]).sum()) <= 1.0 + 1e-6


@pytest.mark.integration
def test_a_prompt_on_a_clean_boundary_generates_as_without_healing(default_model):
    m = default_model
    prompt = rendered_prompt(m, "(defn f [xs]\n  (map inc xs))))")
    healed = m.generate_candidates(prompt, n=2, max_tokens=5, stop=never_stop)
    m.token_healing = False
    try:
        plain = m.generate_candidates(prompt, n=2, max_tokens=5, stop=never_stop)
    finally:
        m.token_healing = True
    assert [(g.text, g.token_ids, g.n_tokens) for g in healed] == [(g.text, g.token_ids, g.n_tokens) for g in plain]


GAP = PromptInput("(ns demo.core)\n\n(defn indices [xs]\n  (for [i ", "]\n    i))\n", file="src/demo/core.clj",
                  namespace="demo.core", form_start=16, repl_attached=True)


@pytest.mark.integration
def test_the_prompt_stage_builds_prompts_the_model_heals(default_model):
    """The prompt stage's text is the model's rendering of its parts (the context block included),
    which is what lets the model re-render it backed off."""
    m = default_model
    prompt = assemble_prompt(GAP, m.fim, m.count_tokens, context_lines=("demo.core/helper ([x])",))
    healed = m.heal(prompt)
    assert healed.healed == " " and healed.text == prompt.text[:-1]  # left to right: the text ends at the gap


# ------------------------------------------------------------------ Qwen2.5-Coder's tokenizer, when installed


@pytest.fixture(scope="module")
def qwen_small():
    from tests.fixtures_model import qwen_model_file

    path = qwen_model_file()
    if path is None:
        pytest.skip("Qwen2.5-Coder-0.5B is not assembled in the model cache")
    from cljassist.model.llama import LocalModel

    model = LocalModel(path, n_ctx=512)
    yield model
    model.close()


@pytest.mark.integration
@pytest.mark.parametrize(("before", "healed", "continuation"), [
    ("(defn indices [xs]\n  (for [i ", " ", "(range (count xs))]"),
    ("  (->> (slurp f)\n       str/split-lines\n       ", " ", "(map parse-row)"),
])
def test_qwen_backs_off_the_space_it_joins_to_the_next_word(qwen_small, before, healed, continuation):
    m = qwen_small
    assert m.fim.family == "qwen25_coder"
    prompt = m.heal(rendered_prompt(m, before, suffix="\n"))
    assert prompt.healed == healed
    assert prompt.text == f"<|fim_prefix|>{before[: -len(healed)]}<|fim_suffix|>\n<|fim_middle|>"
    _real_code_path_is_allowed(m, healed, continuation)
    for g in m.generate_candidates(rendered_prompt(m, before, suffix="\n"), n=2, max_tokens=4, stop=never_stop):
        assert m.detokenize(list(g.token_ids)) == healed + g.text


@pytest.mark.integration
def test_qwen_heals_the_prompt_stages_fim_prompt(qwen_small):
    m = qwen_small
    prompt = assemble_prompt(GAP, m.fim, m.count_tokens, context_lines=("demo.core/helper ([x])",))
    healed = m.heal(prompt)
    assert healed.healed == " "
    assert healed.text == prompt.text.replace("(for [i <|fim_suffix|>", "(for [i<|fim_suffix|>")
