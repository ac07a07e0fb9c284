"""Small fakes for unit tests of the stages above and below the model. The end-to-end tests use
the real GGUF model and the real nREPL instead."""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

from cljassist.config import Settings
from cljassist.errors import Cancelled
from cljassist.model.fim import load_fim_table
from cljassist.types import CompletionModel, CompletionRequest, CompletionResult, Generation, Prompt, WarmResult, as_prompt
from tests.waiting import wait_until


class ScriptedModel:
    """Plays back fixed texts as candidates, feeding them to the stop rule one character at a time
    the way the real model feeds it one token at a time. A :class:`cljassist.types.CompletionModel`."""

    name = "scripted"
    calibration = None

    def __init__(self, outputs: list, family: str = "left_to_right", scores: dict[str, float] | None = None):
        """`outputs`: texts, or (text, mean token log-prob) pairs to fix the model's confidence.
        `scores`: the mean token log-prob `score_continuations` gives a text (others: not scored)."""
        self.outputs = outputs
        self.scores = scores or {}
        self.scored: list[list[str]] = []  # the texts of every score_continuations call
        self.scoring_deadlines: list[float | None] = []  # and its deadline_s
        self.fim = load_fim_table()[family]
        self.prompts: list[str] = []
        self.last_stats: dict[str, Any] = {}

    def count_tokens(self, text: str) -> int:
        return len(text) // 3 + 1

    def generate_candidates(self, prompt: Prompt | str, n: int, max_tokens: int, stop: Callable[[str], int | None],
                            deadline_s: float | None = None,
                            cancelled: Callable[[], bool] | None = None, skip: int = 0) -> list[Generation]:
        self.prompts.append(as_prompt(prompt).text)
        generations = []
        for output in self.outputs[skip:n]:
            raw, mean_logprob = output if isinstance(output, tuple) else (output, -0.3)
            text, finish = raw, "eos"
            for end in range(1, len(raw) + 1):
                keep = stop(raw[:end])
                if keep is not None:
                    text, finish = raw[:keep], "stop"
                    break
            n_tokens = max(1, len(text) // 3)
            generations.append(Generation(text=text, logprob=mean_logprob * n_tokens, n_tokens=n_tokens,
                                          finish=finish, ms=1.0))
        return generations

    def score_continuations(self, prompt: Prompt | str, texts: Sequence[str], most: int,
                            ends: Callable[[str], bool] | None = None,
                            cancelled: Callable[[], bool] | None = None,
                            deadline_s: float | None = None) -> list[Generation | None]:
        self.scored.append(list(texts))
        self.scoring_deadlines.append(deadline_s)
        ranked = sorted((t for t in texts if t in self.scores), key=lambda t: -self.scores[t])[:most]
        return [Generation(text=t, logprob=self.scores[t] * 2, n_tokens=2, finish="steered", ms=1.0)
                if t in ranked else None for t in texts]

    def preload(self, text: str, cancelled: Callable[[], bool] | None = None) -> int:
        return 0

    def forget(self) -> None:
        pass

    def close(self) -> None:
        pass


class RecordingModel:
    """A real model that keeps the text of every prompt it is given, so that a test can assert on what
    the model read, not only on what it wrote. A :class:`cljassist.types.CompletionModel`: the rest
    is the wrapped model's."""

    def __init__(self, model: CompletionModel):
        self.model = model
        self.name = model.name
        self.fim = model.fim
        self.calibration = model.calibration
        self.prompts: list[str] = []

    @property
    def last_stats(self) -> dict[str, Any]:
        return self.model.last_stats

    def count_tokens(self, text: str) -> int:
        return self.model.count_tokens(text)

    def generate_candidates(self, prompt: Prompt | str, n: int, max_tokens: int, stop: Callable[[str], int | None],
                            deadline_s: float | None = None,
                            cancelled: Callable[[], bool] | None = None, skip: int = 0) -> list[Generation]:
        self.prompts.append(as_prompt(prompt).text)
        return self.model.generate_candidates(prompt, n, max_tokens, stop, deadline_s=deadline_s, cancelled=cancelled,
                                              skip=skip)

    def score_continuations(self, prompt: Prompt | str, texts: Sequence[str], most: int,
                            ends: Callable[[str], bool] | None = None,
                            cancelled: Callable[[], bool] | None = None,
                            deadline_s: float | None = None) -> list[Generation | None]:
        return self.model.score_continuations(prompt, texts, most, ends, cancelled, deadline_s)

    def preload(self, text: str, cancelled: Callable[[], bool] | None = None) -> int:
        return self.model.preload(text, cancelled)

    def forget(self) -> None:
        self.model.forget()

    def close(self) -> None:
        pass  # the wrapped model is shared (loaded once per test session)


class FakeEngine:
    """What front-ends use of the engine (a :class:`cljassist.types.CompletionEngine`) for tests
    whose subclass answers ``complete`` from a script: no REPL, default settings, nothing cached."""

    model: CompletionModel = ScriptedModel([])
    settings = Settings()
    repl = None

    def complete(self, request: CompletionRequest, n: int | None = None,
                 cancelled: Callable[[], bool] | None = None) -> CompletionResult:
        raise NotImplementedError

    def cached(self, request: CompletionRequest, n: int | None = None) -> CompletionResult | None:
        return None

    def warm(self, request: CompletionRequest, cancelled: Callable[[], bool] | None = None) -> WarmResult:
        return WarmResult(0, "a fake engine has no model to warm")


def generate_until_released(release: threading.Event, cancelled: Callable[[], bool] | None) -> None:
    """Stand in for a long generation: return once the test sets `release`, raise Cancelled as soon as
    `cancelled()` says so (the real model polls it between tokens)."""

    def released_or_cancelled() -> str | None:
        if release.is_set():
            return "released"
        return "cancelled" if cancelled is not None and cancelled() else None

    if wait_until(released_or_cancelled, "the test to release the engine", interval=0.01) == "cancelled":
        raise Cancelled("cancelled during generation")
