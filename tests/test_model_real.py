"""The real default model (SmolLM2-135M GGUF) through LocalModel."""

from __future__ import annotations

import pytest

from cljassist.model.llama import LocalModel, log_softmax, utf8_complete_len
from cljassist.types import Generation

pytestmark = pytest.mark.integration

PREFIX = "(ns demo.core)\n\n(defn square\n  \"Returns x times x.\"\n  [x]\n  "
SUFFIX = ")\n"


def never(_text: str) -> int | None:
    return None


def test_pure_helpers():
    import numpy as np

    lp = log_softmax(np.array([1000.0, 1000.0, -1000.0]))
    assert np.allclose(np.exp(lp).sum(), 1.0)
    assert lp[0] == pytest.approx(np.log(0.5))
    s = "aλ€😀".encode()
    for cut in range(len(s) + 1):
        k = utf8_complete_len(s[:cut])
        s[:k].decode("utf-8")  # never ends inside a character
        assert cut - k < 4


def test_loads_default(default_model: LocalModel):
    m = default_model
    assert m.fim.family == "left_to_right"
    assert not m.fim.is_fim
    assert m.n_ctx == 2048
    assert m.name
    ids = m.tokenize("(defn f [x] x)")
    assert m.detokenize(ids) == "(defn f [x] x)"
    assert m.count_tokens("(defn f [x] x)") == len(ids)
    # special-token texts parse to one id when special=True
    assert len(m.tokenize("<|endoftext|>", special=True)) == 1
    assert len(m.tokenize("<|endoftext|>", special=False)) > 1


def test_candidates(default_model: LocalModel):
    prompt = default_model.fim.render(PREFIX, SUFFIX)
    gens = default_model.generate_candidates(prompt, n=3, max_tokens=12, stop=never)
    assert len(gens) == 3
    assert all(isinstance(g, Generation) for g in gens)
    for g in gens:
        assert g.n_tokens == len(g.token_ids) >= 1
        assert g.logprob <= 0.0
        assert g.finish in ("stop", "eos", "length", "deadline")
        assert g.ms >= 0.0
    # distinct first tokens: each branch starts with a different token
    assert len({g.token_ids[0] for g in gens}) == 3
    assert default_model.detokenize(list(gens[0].token_ids)) == gens[0].text
    st = default_model.last_stats
    assert st["prompt_tokens"] == default_model.count_tokens(prompt)
    assert st["prompt_ms"] >= 0 and st["gen_ms"] >= 0
    assert st["truncated_tokens"] == 0


def test_first_token_order(default_model: LocalModel):
    prompt = default_model.fim.render(PREFIX, SUFFIX)
    gens = default_model.generate_candidates(prompt, n=3, max_tokens=1, stop=never)
    assert [g.n_tokens for g in gens] == [1, 1, 1]
    assert all(g.finish == "length" for g in gens)
    lps = [g.logprob for g in gens]
    assert lps == sorted(lps, reverse=True)
    assert len(set(g.text for g in gens)) == 3


def test_deterministic(default_model: LocalModel):
    prompt = default_model.fim.render(PREFIX, SUFFIX)
    a = default_model.generate_candidates(prompt, n=3, max_tokens=10, stop=never)
    # something else in between, so the cache state differs
    default_model.generate_candidates("(println \"hello\")\n", n=2, max_tokens=5, stop=never)
    b = default_model.generate_candidates(prompt, n=3, max_tokens=10, stop=never)
    assert [(g.text, g.n_tokens, g.finish) for g in a] == [(g.text, g.n_tokens, g.finish) for g in b]
    for x, y in zip(a, b):
        assert x.logprob == pytest.approx(y.logprob, abs=1e-3)


def test_stop_callback_cuts(default_model: LocalModel):
    prompt = default_model.fim.render(PREFIX, SUFFIX)
    seen: list[str] = []

    def stop(text: str) -> int | None:
        seen.append(text)
        return 2 if len(text) >= 4 else None

    gens = default_model.generate_candidates(prompt, n=2, max_tokens=30, stop=stop)
    assert seen, "stop callback never called"
    for g in gens:
        if g.finish == "stop":
            assert len(g.text) == 2
    assert any(g.finish == "stop" for g in gens)
    # the callback sees growing text of one candidate at a time
    assert all(len(s) >= 1 for s in seen)


def test_stop_on_newline_keeps_text_before(default_model: LocalModel):
    prompt = default_model.fim.render(PREFIX, SUFFIX)

    def first_line(text: str) -> int | None:
        i = text.find("\n")
        return i if i >= 0 else None

    for g in default_model.generate_candidates(prompt, n=3, max_tokens=40, stop=first_line):
        assert "\n" not in g.text
        assert g.finish in ("stop", "eos", "length")


def test_prefix_reuse(default_model: LocalModel):
    base = PREFIX * 4
    default_model.generate_candidates(base + "(+ 1 2)", n=1, max_tokens=2, stop=never)
    first = dict(default_model.last_stats)
    default_model.generate_candidates(base + "(* 3 4)", n=1, max_tokens=2, stop=never)
    second = dict(default_model.last_stats)
    assert second["reused_tokens"] > 0
    assert second["reused_tokens"] >= default_model.count_tokens(base) - 2
    assert second["reused_tokens"] < second["prompt_tokens"]
    # Same prompt again: everything but the last token is reused.
    default_model.generate_candidates(base + "(* 3 4)", n=1, max_tokens=2, stop=never)
    third = default_model.last_stats
    assert third["reused_tokens"] == third["prompt_tokens"] - 1
    assert first["prompt_tokens"] > 0


def test_reuse_matches_cold_eval(default_model: LocalModel):
    base = PREFIX * 3
    default_model.generate_candidates(base + "(inc 1)", n=2, max_tokens=6, stop=never)
    warm = default_model.generate_candidates(base + "(dec 2) ", n=3, max_tokens=8, stop=never)
    assert default_model.last_stats["reused_tokens"] > 0
    default_model._rewind(0)  # drop the whole cache
    cold = default_model.generate_candidates(base + "(dec 2) ", n=3, max_tokens=8, stop=never)
    assert default_model.last_stats["reused_tokens"] == 0
    assert [g.text for g in warm] == [g.text for g in cold]
    for w, c in zip(warm, cold):
        assert w.logprob == pytest.approx(c.logprob, abs=1e-2)


def test_non_ascii_prompt(default_model: LocalModel):
    prefix = ';; Grüße, λ-Kalkül — 日本語 😀\n(def greeting "héllo wörld ✓")\n(defn λ→ [x] '
    gens = default_model.generate_candidates(prefix, n=3, max_tokens=16, stop=never)
    assert len(gens) == 3
    for g in gens:
        assert isinstance(g.text, str)
        g.text.encode("utf-8")  # valid text, no lone surrogates
    ids = default_model.tokenize(prefix)
    assert default_model.detokenize(ids) == prefix


def test_truncation(default_model: LocalModel):
    small = LocalModel(default_model.path, n_ctx=256)
    try:
        long_prompt = "(def x 1)\n" * 100  # ~600 tokens > n_ctx 256
        gens = small.generate_candidates(long_prompt, n=1, max_tokens=8, stop=never)
        st = small.last_stats
        assert st["truncated_tokens"] > 0
        assert st["prompt_tokens"] == small.n_ctx - 8
        assert "truncation" in st
        assert len(gens) == 1
    finally:
        small.close()


def test_deadline(default_model: LocalModel):
    prompt = default_model.fim.render(PREFIX, SUFFIX)
    gens = default_model.generate_candidates(prompt, n=3, max_tokens=200, stop=never, deadline_s=0.0)
    assert 1 <= len(gens) <= 3
    assert gens[0].finish == "deadline"
    assert gens[0].n_tokens == 1


def test_cancel_stops_prompt_evaluation_and_generation_and_leaves_the_cache_usable(default_model: LocalModel):
    from cljassist.errors import Cancelled

    long_prompt = ";; " + " ".join(f"(def v{i} {i})" for i in range(120)) + "\n" + PREFIX
    expected = default_model.generate_candidates(long_prompt, n=2, max_tokens=8, stop=never)
    # move the cache away: another prompt, and the long one no longer kept aside either
    default_model.generate_candidates("(println 1)", n=1, max_tokens=1, stop=never)
    default_model.forget()

    polls = []
    with pytest.raises(Cancelled, match="prompt"):  # stops after two chunks of the prompt
        default_model.generate_candidates(long_prompt, n=2, max_tokens=8, stop=never,
                                          cancelled=lambda: polls.append(1) or len(polls) > 2)
    assert len(polls) == 3

    gens = default_model.generate_candidates(long_prompt, n=2, max_tokens=8, stop=never, cancelled=lambda: False)
    assert [g.text for g in gens] == [g.text for g in expected]  # the half-evaluated prompt did no harm

    generating = {"on": False}
    with pytest.raises(Cancelled, match="generation"):
        default_model.generate_candidates(
            long_prompt, n=2, max_tokens=8,
            stop=lambda text: generating.update(on=True),  # returns None: the candidate goes on
            cancelled=lambda: generating["on"])
