"""Ranking stage: merge duplicates, withhold failures, order by checks passed then model confidence."""

from __future__ import annotations

import math

from cljassist.types import Candidate, Suggestion


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
