"""Per-keystroke speed: the prefilter caches, a prompt whose start stays put while typing, the REPL
context gathered while the model reads that start, and the real model reusing its evaluated prompt."""

from __future__ import annotations

import threading
import time

import pytest

from cljassist.cache import RecentResults, TypeThroughCache
from cljassist.config import Settings
from cljassist.context import LiveContext
from cljassist.engine import Engine
from cljassist.model.fim import load_fim_table
from cljassist.prompt import build_prompt
from cljassist.types import CompletionRequest, CompletionResult, Suggestion
from tests.fakes import ScriptedModel


def count(text: str) -> int:
    return len(text) // 3 + 1


def _result(*texts: str) -> CompletionResult:
    return CompletionResult(suggestions=[Suggestion(t, 0.5, {"balanced": True}) for t in texts], ms=100.0)


# ------------------------------------------------------------------------------ type-through

def test_type_through_returns_the_rest_of_each_suggestion_still_on_the_way():
    cache = TypeThroughCache()
    cache.remember(CompletionRequest("(defn f [x] (st", ")", "a.clj"), _result("r/join x)", "ring x)"))
    hit = cache.lookup(CompletionRequest("(defn f [x] (str/j", ")", "a.clj"))
    assert hit is not None and hit.source == "type-through"
    assert [s.text for s in hit.suggestions] == ["oin x)"]  # "ring x)" no longer fits what was typed
    assert hit.suggestions[0].checks == {"balanced": True}  # same document, same verdicts


def test_type_through_follows_an_auto_pairing_editor():
    cache = TypeThroughCache()
    cache.remember(CompletionRequest("(let [a 1] ", ")\n", "a.clj"), _result("(inc a)"))
    # typing "(" inserts ")" after the cursor: the suffix grows, the document is still on the way
    hit = cache.lookup(CompletionRequest("(let [a 1] (", "))\n", "a.clj"))
    assert hit is not None and [s.text for s in hit.suggestions] == ["inc a"]
    # typing over the auto-inserted ")" moves past it
    hit = cache.lookup(CompletionRequest("(let [a 1] (inc a)", ")\n", "a.clj"))
    assert hit is None  # nothing left to suggest: the model runs again


def test_type_through_misses_on_a_different_character_another_file_or_a_changed_suffix():
    cache = TypeThroughCache()
    cache.remember(CompletionRequest("(ma", ")", "a.clj"), _result("p inc xs"))
    assert cache.lookup(CompletionRequest("(mx", ")", "a.clj")) is None
    assert cache.lookup(CompletionRequest("(map", ")", "b.clj")) is None
    assert cache.lookup(CompletionRequest("(map", ") (other)", "a.clj")) is None
    assert cache.lookup(CompletionRequest("(m", ")", "a.clj")) is None  # backspace is not type-through
    assert [s.text for s in cache.lookup(CompletionRequest("(map", ")", "a.clj")).suggestions] == [" inc xs"]


def test_recent_results_hit_on_the_same_text_around_the_cursor_and_expire():
    recent = RecentResults(capacity=2, ttl_s=60)
    request = CompletionRequest("(ns a)\n(inc ", ")", "a.clj")
    recent.put(request, 1, _result("x"))
    assert recent.get(CompletionRequest("(ns a)\n(inc ", ")", "a.clj"), 1).source == "recent"
    assert recent.get(request, 3) is None  # another suggestion count
    assert recent.get(CompletionRequest("(ns a)\n(inc ", ") ", "a.clj"), 1) is None
    recent.put(CompletionRequest("b", "", "a.clj"), 1, _result("y"))
    recent.put(CompletionRequest("c", "", "a.clj"), 1, _result("z"))
    assert recent.get(request, 1) is None  # evicted: least recently used
    expired = RecentResults(ttl_s=0.0)
    expired.put(request, 1, _result("x"))
    time.sleep(0.01)
    assert expired.get(request, 1) is None


# ------------------------------------------------------------------------------ the engine's prefilter

def test_engine_answers_typed_through_and_repeated_requests_without_the_model():
    model = ScriptedModel(["(inc x)"])
    engine = Engine(model, Settings(candidates=1))
    first = engine.complete(CompletionRequest("(defn f [x] ", ")", "a.clj"))
    assert first.source == "model" and first.suggestions[0].text == "(inc x)"
    typed = engine.complete(CompletionRequest("(defn f [x] (in", "))", "a.clj"))
    assert typed.source == "type-through" and typed.suggestions[0].text == "c x"
    assert typed.timings == {"cache": typed.timings["cache"]}
    again = engine.complete(CompletionRequest("(defn f [x] ", ")", "a.clj"))
    assert again.source == "recent" and again.suggestions[0].text == "(inc x)"
    assert len(model.prompts) == 1


def test_engine_without_cache_asks_the_model_every_time():
    model = ScriptedModel(["(inc x)"])
    engine = Engine(model, Settings(candidates=1, cache=False))
    for prefix in ("(defn f [x] ", "(defn f [x] (in", "(defn f [x] "):
        assert engine.complete(CompletionRequest(prefix, ")", "a.clj")).source == "model"
    assert len(model.prompts) == 3


# ------------------------------------------------------------------------------ a stable prompt

def test_prefix_cut_stays_put_while_lines_are_typed_at_the_end():
    fim = load_fim_table()["left_to_right"]
    body = "".join(f"(def a{i} {i})\n" for i in range(400))
    starts = set()
    for extra in range(32):  # 32 more lines typed at the end
        prefix = body + "".join(f"(def b{j} {j})\n" for j in range(extra)) + "(inc "
        p = build_prompt(prefix, "", fim, count, max_prompt_tokens=600)
        assert p.tokens <= 600
        starts.add(p.prefix.split("\n", 1)[0])
        # the cut falls on a line whose number is a multiple of the step (16)
        assert prefix[: len(prefix) - len(p.prefix)].count("\n") % 16 == 0
    assert len(starts) <= 3  # the cut moved at most twice (line by line it would have moved 32 times)


def test_context_block_sits_before_the_form_at_the_cursor_and_the_stable_start_excludes_it():
    fim = load_fim_table()["left_to_right"]
    prefix = "(ns a.b)\n\n(defn g [] 1)\n\n(defn f [x]\n  (str/jo"
    form_start = prefix.index("(defn f")
    args = dict(namespace="a.b", file_label="a/b.clj", form_start=form_start, reserve_context_tokens=256)
    p = build_prompt(prefix, ")", fim, count, context_lines=["clojure.string/join [coll] [sep coll]"], **args)
    assert p.text.index("(defn g") < p.text.index(";; In namespace a.b") < p.text.index("(defn f [x]")
    assert p.text.startswith(p.stable) and ";; In namespace" not in p.stable and "(defn g [] 1)" in p.stable
    assert p.before == p.text  # a left-to-right prompt is all "before the gap"
    other = build_prompt(prefix, ")", fim, count, context_lines=["clojure.string/join-lines [xs]"], **args)
    assert other.stable == p.stable  # another context, the same start to evaluate ahead of time


class _FakeRepl:
    """A context provider whose gather can be held back, to see what runs meanwhile."""

    def __init__(self, lines):
        self.lines = lines
        self.release = threading.Event()
        self.gathers = 0
        self.client = None  # set to follow a fake client's connection
        self.endpoint = "fake"

    @property
    def connection_stamp(self):
        if self.client is None:
            return "fake"
        return self.client.connection_generation if self.client.connected else None

    def gather(self, namespace, symbol_prefix="", analysis=None, budget=None):
        self.gathers += 1
        self.symbol_prefix = symbol_prefix
        assert self.release.wait(10)
        return LiveContext(namespace, True, tuple(self.lines), 1.0)


class _PreloadingModel(ScriptedModel):
    def __init__(self, outputs, repl: _FakeRepl):
        super().__init__(outputs)
        self.repl = repl
        self.preloaded: list[str] = []
        self.forgotten = 0

    def preload(self, text, cancelled=None):
        self.preloaded.append(text)
        self.repl.release.set()  # the REPL answers only once the model has been given its text
        return 1

    def forget(self):
        self.forgotten += 1


def test_engine_evaluates_the_stable_start_while_the_repl_gathers_context():
    repl = _FakeRepl(["aliases: str = clojure.string"])
    model = _PreloadingModel(["x"], repl)
    engine = Engine(model, Settings(candidates=1), repl=repl)
    result = engine.complete(CompletionRequest("(ns a.b)\n(def z 1)\n(defn f [x]\n  (st", ")", "a.clj"))
    assert result.repl == "used" and model.preloaded
    assert model.prompts[0].startswith(model.preloaded[0])
    assert ";;   aliases: str = clojure.string" in model.prompts[0]
    assert "context_gather" in result.timings and "model" in result.timings
    engine.close()


def test_engine_keeps_the_shown_context_while_it_covers_the_new_one():
    repl = _FakeRepl(["a/x [y]", "a/xy [y]"])
    repl.release.set()
    model = ScriptedModel(["1"])
    engine = Engine(model, Settings(candidates=1, cache=False), repl=repl)
    engine.complete(CompletionRequest("(ns a.b)\n(a/x", ")", "a.clj"))
    repl.lines = ["a/xy [y]"]  # narrower matches after one more character
    engine.complete(CompletionRequest("(ns a.b)\n(a/xy", ")", "a.clj"))
    assert "a/x [y]" in model.prompts[1]  # the block did not change: the model's cache stays valid
    repl.lines = ["a/other [z]"]
    engine.complete(CompletionRequest("(ns a.b)\n(a/o", ")", "a.clj"))
    assert "a/other [z]" in model.prompts[2] and "a/xy [y]" not in model.prompts[2]
    engine.close()


def test_naive_path_forgets_the_evaluated_prompt_every_time():
    repl = _FakeRepl([])
    repl.release.set()
    model = _PreloadingModel(["1"], repl)
    engine = Engine(model, Settings(candidates=1, cache=False, reuse_prompt=False), repl=repl)
    engine.complete(CompletionRequest("(ns a.b)\n(inc ", ")", "a.clj"))
    engine.complete(CompletionRequest("(ns a.b)\n(inc 1", ")", "a.clj"))
    assert model.forgotten == 2 and model.preloaded == []
    engine.close()


# ------------------------------------------------------------------------------ the real model

def test_real_model_reuses_the_evaluated_prompt_on_the_next_keystroke(default_model):
    # no result caches: the next keystroke reaches the model even where type-through would answer it
    engine = Engine(default_model, Settings(candidates=1, max_new_tokens=8, cache=False))
    text = "(ns demo.typing)\n\n" + "".join(f"(defn f{i} [x] (* x {i}))\n\n" for i in range(12))
    first = engine.complete(CompletionRequest(text + "(defn g [x]\n  (ma", ")", "demo/typing.clj"))
    assert first.source == "model"
    second = engine.complete(CompletionRequest(text + "(defn g [x]\n  (map", ")", "demo/typing.clj"))
    assert second.source == "model"
    stats = default_model.last_stats
    assert stats["reused_tokens"] >= stats["prompt_tokens"] - 4
    # and with the prompt forgotten, everything is evaluated again
    naive = Engine(default_model, Settings(candidates=1, max_new_tokens=8, cache=False, reuse_prompt=False))
    naive.complete(CompletionRequest(text + "(defn g [x]\n  (map", ")", "demo/typing.clj"))
    assert default_model.last_stats["reused_tokens"] == 0


def test_real_model_preload_then_generate_matches_a_cold_generation(default_model):
    prompt = ";; demo/core.clj\n(ns demo.core)\n\n(defn add [a b]\n  (+ a"
    stop = lambda text: None  # noqa: E731 - run to the token limit
    default_model.forget()
    cold = default_model.generate_candidates(prompt, n=1, max_tokens=6, stop=stop)[0].text
    default_model.forget()
    assert default_model.preload(prompt[:30]) > 0
    warm = default_model.generate_candidates(prompt, n=1, max_tokens=6, stop=stop)
    assert default_model.last_stats["reused_tokens"] > 0
    assert warm[0].text == cold


def test_real_repl_context_is_gathered_beside_the_model_and_typing_reuses_the_prompt(
        nrepl_server, nrepl_client, default_model):
    from pathlib import Path

    from cljassist.context import ReplContextProvider
    from cljassist.verify.repl_compile import ReplVerifier

    nrepl_client.eval("(require 'demo.core)", timeout=60)
    text = (Path(__file__).parent.parent / "fixtures" / "demo" / "src" / "demo" / "core.clj").read_text()
    offset = text.index("(str/join") + len("(str/j")
    provider = ReplContextProvider(nrepl_client)
    engine = Engine(default_model, Settings(candidates=1, max_new_tokens=12, cache=False), provider,
                    ReplVerifier(nrepl_client))
    first = engine.complete(CompletionRequest(text[:offset], text[offset:], "demo/core.clj"))
    assert first.repl == "used" and first.timings["context_gather"] > 0
    assert "clojure.string/join" in " ".join(engine._shown_context[("demo/core.clj", "demo.core")])
    second = engine.complete(CompletionRequest(text[:offset + 1], text[offset + 1:], "demo/core.clj"))
    assert second.repl == "used"
    stats = default_model.last_stats
    # only the end of the prompt was evaluated again: the file before the form, the context block
    # (unchanged: its lines still cover the new matches) and the form up to the cursor stayed cached
    assert stats["reused_tokens"] >= stats["prompt_tokens"] - 4
    engine.close()


def test_keystroke_defaults_fill_only_what_is_unset():
    from cljassist.config import KEYSTROKE_DEFAULTS, for_keystrokes

    filled = for_keystrokes(Settings())
    assert filled.max_prompt_tokens == KEYSTROKE_DEFAULTS["max_prompt_tokens"]
    assert filled.deadline_ms == KEYSTROKE_DEFAULTS["deadline_ms"]
    assert filled.context_matches is False
    mine = for_keystrokes(Settings(max_prompt_tokens=1000, deadline_ms=5000, context_matches=True))
    assert (mine.max_prompt_tokens, mine.deadline_ms, mine.context_matches) == (1000, 5000, True)


@pytest.mark.parametrize("context_matches, asked", [(None, "str/jo"), (True, "str/jo"), (False, "")])
def test_context_matches_setting_decides_whether_the_typed_symbol_is_looked_up(context_matches, asked):
    repl = _FakeRepl([])
    repl.release.set()
    engine = Engine(ScriptedModel(["in"]), Settings(candidates=1, context_matches=context_matches), repl=repl)
    engine.complete(CompletionRequest("(ns a.b (:require [clojure.string :as str]))\n(str/jo", ")", "a.clj"))
    assert repl.symbol_prefix == asked
    engine.close()


def test_prompt_budget_setting_bounds_the_prompt():
    model = ScriptedModel(["x"])
    long_prefix = "".join(f"(def a{i} {i})\n" for i in range(500)) + "(inc "
    Engine(model, Settings(candidates=1, max_prompt_tokens=200)).complete(CompletionRequest(long_prefix, ")"))
    assert count(model.prompts[0]) <= 200


def test_the_generation_deadline_counts_from_the_end_of_the_prompt(default_model):
    default_model.forget()
    prompt = "(ns demo.slow)\n" + "".join(f"(defn f{i} [x] (* x {i}))\n" for i in range(40)) + "(defn g [x]\n  ("
    out = default_model.generate_candidates(prompt, n=2, max_tokens=16, stop=lambda t: None, deadline_s=0.001)
    # the prompt alone takes far longer than 1 ms, and still the first branch got its first token
    assert len(out) == 1 and out[0].finish == "deadline" and out[0].n_tokens == 1


class _Client:
    def __init__(self):
        self.connection_generation = 1
        self.connected = True


def test_cached_answers_are_tied_to_the_repl_connection_they_were_checked_on():
    repl = _FakeRepl([])
    repl.release.set()
    repl.client = _Client()
    engine = Engine(ScriptedModel(["1", "2", "3"]), Settings(candidates=1), repl=repl)
    request = CompletionRequest("(ns a.b)\n(inc ", ")", "a.clj")
    assert engine.complete(request).source == "model"
    assert engine.complete(request).source == "recent"
    repl.client.connected = False  # the REPL went away: no remembered answer stands in for a fresh one
    assert engine.cached(request) is None
    repl.client.connected, repl.client.connection_generation = True, 2  # back, on a new connection
    assert engine.complete(request).source == "model"
    assert engine.complete(request).source == "recent"
    engine.close()
