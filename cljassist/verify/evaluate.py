"""Opt-in evaluation of a compiled candidate (``eval_mode = "safe"``).

Evaluating code the model wrote runs it, so it is off unless the user asks. With ``"safe"``, the
REPL-side evaluator (resources/safe_eval.clj, installed in our tooling session beside the check)
decides on the form as read (``*read-eval*`` false), before anything runs, and evaluates it only
when every sub-form, metadata included, is a literal, a local bound inside the form under a name
that shadows nothing special (no special form, class, macro or interop name), or a call of a var
on the allowlist (``[eval]`` in prompts/verify.toml; its macros are expanded, one step at a time,
and the expansion is judged the same way). Besides ``quote``, only ``if``, ``do``, ``let*`` and
``fn*`` are allowed: ``try``/``catch``, ``new``, ``.``, ``set!``, ``var``, ``monitor-*``, loops and
any interop spelling never are. The check runs the same decision, so a refused form costs no
second call.

The value is computed and printed (``*print-length*``/``*print-level*`` bounds, cut to
``max_value_chars``) on a thread of its own that is stopped (``Thread.stop``) when
`safe_eval_limit` passes; no refused construct can catch that, so the JVM is idle again at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from cljassist.budgets import SAFE_EVAL_TIME
from cljassist.clojure_text.forms import clj_strings
from cljassist.repl.tooling import helper_source

__all__ = ["EVAL_MODES", "check_eval_mode", "Evaluation", "evaluate", "limit_ms", "safe_eval_helper",
           "safe_eval_limit"]

EVAL_MODES = ("off", "safe")

# The evaluator's constructor (Clojure, one `fn` form); see the resource.
_SAFE_EVAL_FN = helper_source("safe_eval.clj")


def check_eval_mode(mode: str) -> str:
    if mode not in EVAL_MODES:
        raise ValueError(f"eval_mode must be 'off' or 'safe', not {mode!r}")
    return mode


def safe_eval_limit(left_s: float) -> float:
    """Seconds a value may compute when the request has `left_s` of REPL time: the budget, but at
    most a third of that, so the answer that says it was stopped arrives before we stop waiting
    (the wait keeps part of what is left for an interrupt)."""
    return min(SAFE_EVAL_TIME.seconds, left_s / 3)


def limit_ms(limit_s: float) -> str:
    """The limit as the REPL-side evaluator takes it: whole milliseconds, at least 1 (0 would be
    no limit to Thread.join)."""
    return str(max(1, round(limit_s * 1000)))


def safe_eval_helper(allowlist: Iterable[str], print_length: int, print_level: int, max_value_chars: int) -> str:
    """The Clojure expression that builds the REPL-side evaluator: a map of ``:refusal`` (why a form
    may not be evaluated, or nil) and ``:run`` (decide, then evaluate under a limit in ms)."""
    args = " ".join([clj_strings(sorted(allowlist), "#{"), str(print_length), str(print_level),
                     str(max_value_chars)])
    return f"({_SAFE_EVAL_FN} {args})"


@dataclass(frozen=True)
class Evaluation:
    evaluated: bool | None  # None: not attempted
    error: str | None = None
    value: str | None = None
    skipped: str | None = None  # why it was not attempted


def evaluate(checked: dict, run_eval: Callable[[], dict | None]) -> Evaluation:
    """The eval step after a check that compiled: `checked` is the check's answer (it says why the
    form may not be evaluated, if so), `run_eval` sends the eval call and returns its answer, or
    None when it did not finish in time. The eval call decides again, on what it evaluates."""
    if checked.get("unsafe"):
        return Evaluation(None, skipped=f"not evaluated: {checked['unsafe']}")
    answer = run_eval()
    if answer is None:
        return Evaluation(False, "timed out")
    return Evaluation(answer.get("evaluated"), answer.get("error"), answer.get("value"), answer.get("skipped"))
