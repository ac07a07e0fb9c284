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


def normalize(text: str) -> str:
    return " ".join(text.split())


def confidence(candidate: Candidate) -> float:
    return math.exp(candidate.logprob / max(1, candidate.n_tokens))


def rank(candidates: list[Candidate], limit: int | None = None) -> list[Suggestion]:
    best: dict[str, Candidate] = {}
    for c in candidates:
        if not c.offerable:
            continue
        key = normalize(c.text)
        if key not in best or confidence(c) > confidence(best[key]):
            best[key] = c
    passed = lambda c: sum(1 for v in c.checks.values() if v is True)  # noqa: E731
    ordered = sorted(best.values(), key=lambda c: (passed(c), confidence(c)), reverse=True)
    return [Suggestion(c.text, round(confidence(c), 4), dict(c.checks), tuple(c.notes)) for c in ordered[:limit]]
