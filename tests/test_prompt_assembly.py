"""One prompt assembly: the engine and the training data builder lay out the same gap identically.

The engine's side runs the real pipeline with a REPL stand-in that answers from the package's
sources, the way the training data does; the model is the real SmolLM2 (its tokenizer counts the
budget and gives the token ids), speaking our FIM family, and records the prompt it is given.
"""

from __future__ import annotations

import pytest

from cljassist.config import Settings
from cljassist.context import LiveContext
from cljassist.engine import Engine
from cljassist.model.fim import load_fim_table
from cljassist.train import fim_data
from cljassist.types import CompletionRequest, Prompt, as_prompt

UTIL = """(ns tp.util)

(defn sum-of
  "Adds the numbers up. Then more words."
  [xs]
  (reduce + xs))

(defn sum-sq [xs] (sum-of (map * xs xs)))

(defn- secret [] 1)
"""

# A file longer than the prompt's budget, the gap in its last-but-one form: the prefix is cut, and
# the context block goes right before the form at the cursor, not at the top.
CORE = (
    "(ns tp.core\n  (:require [tp.util :as u :refer [sum-sq]]))\n\n"
    + "".join(f'(defn f{i}\n  "Returns x plus {i}."\n  [x]\n  (+ x {i}))\n\n' for i in range(120))
    + '(defn mean\n  "The mean of xs."\n  [xs]\n  (let [n (count xs)]\n    (/ (u/sum-of xs) n)))\n\n'
    + "(defn after [] (f1 (sum-sq [1 2])))\n"
)
GAP_START = CORE.index("(u/sum-of") + len("(u/s")
GAP_END = GAP_START + len("um-of")
FILE = "tp/core.clj"


class PromptCatcher:
    """A :class:`cljassist.types.CompletionModel` with the real model's tokenizer and our FIM
    family that generates nothing: it keeps the prompt it is given."""

    name = "prompt-catcher"
    calibration = None

    def __init__(self, real, family: str):
        self.real = real
        self.fim = load_fim_table()[family]
        self.last_stats: dict = {}
        self.prompts: list[Prompt] = []

    def count_tokens(self, text: str) -> int:
        return self.real.count_tokens(text)

    def generate_candidates(self, prompt, n, max_tokens, stop, deadline_s=None, cancelled=None, skip=0):
        self.prompts.append(as_prompt(prompt))
        return []

    def score_continuations(self, prompt, texts, most, ends=None, cancelled=None, deadline_s=None):
        return [None] * len(texts)

    def preload(self, text, cancelled=None) -> int:
        return 0

    def forget(self) -> None:
        pass

    def close(self) -> None:
        pass


class PackageRepl:
    """A REPL that loaded `pkg`: context as the training data computes it for the same cursor."""

    connection_stamp = "package"

    def __init__(self, pkg):
        self.pkg = pkg

    def gather(self, namespace, symbol_prefix="", analysis=None, budget=None):
        lines = fim_data.context_lines_for(analysis.text, analysis.cursor, self.pkg)
        return LiveContext(namespace, True, tuple(lines), 0.0)


@pytest.mark.parametrize("order,with_repl", [("psm", True), ("spm", True), ("psm", False)])
def test_engine_and_training_data_build_the_same_prompt(default_model, order, with_repl):
    family = fim_data.DEFAULT_FAMILY + ("_spm" if order == "spm" else "")
    pkg = fim_data.index_package([UTIL, CORE])

    model = PromptCatcher(default_model, family)
    engine = Engine(model, Settings(candidates=1), repl=PackageRepl(pkg) if with_repl else None)
    try:
        engine.complete(CompletionRequest(CORE[:GAP_START], CORE[GAP_END:], file=FILE))
    finally:
        engine.close()
    [served] = model.prompts

    settings = fim_data.ExampleSettings.create(count_tokens=default_model.count_tokens)
    trained = fim_data.gap_prompt(fim_data._FileSpans(CORE), GAP_START, GAP_END, order, FILE, pkg, settings,
                                  with_context=with_repl)

    assert trained is not None
    assert trained.text == served.text
    assert default_model.tokenize(trained.text, special=True, add_bos=True) == \
           default_model.tokenize(served.text, special=True, add_bos=True)
    assert trained.tokens == served.tokens <= 768
    # what makes the layouts differ if the two sides decide differently
    assert served.prefix != CORE[:GAP_START]  # the prefix was cut to the budget
    assert ";; tp/core.clj\n" in served.text
    if with_repl:
        assert served.context_lines and "tp.util/sum-of ([xs]) - Adds the numbers up." in served.context_lines
        block = "".join(f";;   {line}\n" for line in served.context_lines)
        assert block + "(defn mean\n" in served.text  # right before the form at the cursor
    else:
        assert not served.context_lines and "running program" not in served.text
