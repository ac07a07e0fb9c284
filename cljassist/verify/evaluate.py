"""Opt-in evaluation of a compiled candidate (``eval_mode = "safe"``).

Evaluating code the model wrote runs it, so it is off unless the user asks. With ``"safe"``, a
form that compiled and that the REPL-side check found to use nothing but allowlisted pure vars
(``[eval]`` in prompts/verify.toml; no locals, no special forms beyond if/let/do/quote/fn) is
evaluated in a second call with ``*print-length*``/``*print-level*`` bounds, and its printed value
comes back (cut to ``max_value_chars``). Anything else is reported as not evaluated, with why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["EVAL_MODES", "check_eval_mode", "Evaluation", "evaluate"]

EVAL_MODES = ("off", "safe")


def check_eval_mode(mode: str) -> str:
    if mode not in EVAL_MODES:
        raise ValueError(f"eval_mode must be 'off' or 'safe', not {mode!r}")
    return mode


@dataclass(frozen=True)
class Evaluation:
    evaluated: bool | None  # None: not attempted
    error: str | None = None
    value: str | None = None
    skipped: str | None = None  # why it was not attempted


def evaluate(checked: dict, run_eval: Callable[[], dict | None]) -> Evaluation:
    """The eval step after a check that compiled: `checked` is the check's answer (it says whether
    the form is safe to run), `run_eval` sends the eval call and returns its answer, or None when
    it did not finish in time."""
    if checked.get("unsafe"):
        return Evaluation(None, skipped=f"not evaluated: {checked['unsafe']}")
    answer = run_eval()
    if answer is None:
        return Evaluation(False, "timed out")
    return Evaluation(answer.get("evaluated"), answer.get("error"), answer.get("value"))
