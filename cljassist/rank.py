"""Ranking stage: merge duplicates, withhold failures, order by checks passed then model confidence,
score each suggestion (calibrated where the model has a table) and hold back those scoring below
the threshold."""

from __future__ import annotations

from cljassist.calibration import RAW_DIGITS, Calibration, raw_confidence
from cljassist.types import Candidate, Suggestion


def normalize(text: str) -> str:
    return " ".join(text.split())


def confidence(candidate: Candidate) -> float:
    return raw_confidence(candidate.logprob, candidate.n_tokens)


def score(candidate: Candidate, calibration: Calibration | None) -> float:
    """How likely the candidate is exactly right by the model's table; its raw confidence without one."""
    if calibration is None:
        return round(confidence(candidate), RAW_DIGITS)
    return calibration.score(confidence(candidate), candidate.checks)


def passed_count(candidate: Candidate) -> int:
    return sum(1 for v in candidate.checks.values() if v is True)


def rank(candidates: list[Candidate], limit: int | None = None, show_failing: bool = False,
         calibration: Calibration | None = None) -> list[Suggestion]:
    """Passing candidates first (more checks passed, then confidence); failing ones only on request,
    after all passing ones, never one that cannot be made balanced. Each suggestion's score is
    calibrated by `calibration`, or its raw confidence without one."""
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
    suggestions = []
    for c in ordered[:limit]:
        suggestions.append(Suggestion(c.text, score(c, calibration), dict(c.checks), tuple(c.notes),
                                      None if c.passed_all else c.error, c.value, round(confidence(c), RAW_DIGITS)))
    return suggestions


def withhold_below(ranked: list[Suggestion], min_score: float,
                   limit: int | None = None) -> tuple[list[Suggestion], list[Suggestion]]:
    """(offered: the first `limit` scoring at least `min_score`, held back: those scoring below it),
    each in ranking order."""
    offered = [s for s in ranked if s.score >= min_score]
    return offered[:limit], [s for s in ranked if s.score < min_score]
