"""Ranking stage: merge duplicates, withhold failures, order by checks passed then model confidence."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cljassist.verify import Candidate


@dataclass(frozen=True)
class Suggestion:
    text: str
    score: float  # geometric-mean token probability in (0, 1]
    checks: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    error: str | None = None  # set only on a failing suggestion shown because the user asked
    value: str | None = None  # printed value when evaluation was opted in


def normalize(text: str) -> str:
    return " ".join(text.split())


def confidence(candidate: Candidate) -> float:
    return math.exp(candidate.logprob / max(1, candidate.n_tokens))


def passed_count(candidate: Candidate) -> int:
    return sum(1 for v in candidate.checks.values() if v is True)


def rank(candidates: list[Candidate], limit: int | None = None, show_failing: bool = False) -> list[Suggestion]:
    """Passing candidates first (more checks passed, then confidence); failing ones only on request,
    after all passing ones, never one that cannot be made balanced."""
    best: dict[str, Candidate] = {}
    for c in candidates:
        if not c.text or c.checks.get("balanced") is not True:
            continue
        if not c.passed_all and not show_failing:
            continue
        key = normalize(c.text)
        if key not in best or confidence(c) > confidence(best[key]):
            best[key] = c
    ordered = sorted(best.values(), key=lambda c: (c.passed_all, passed_count(c), confidence(c)), reverse=True)
    return [
        Suggestion(c.text, round(confidence(c), 4), dict(c.checks), tuple(c.notes),
                   None if c.passed_all else c.error, c.value)
        for c in ordered[:limit]
    ]
