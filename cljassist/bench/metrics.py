"""Benchmark metrics exactly as shared/bench/FORMAT.md defines them."""

from __future__ import annotations

from dataclasses import dataclass, field


def collapse_whitespace(text: str) -> str:
    return " ".join(text.split())


def exact_match(suggestion: str | None, middle: str) -> bool:
    return suggestion is not None and collapse_whitespace(suggestion) == collapse_whitespace(middle)


def starts_with_reference(suggestion: str | None, middle: str) -> bool:
    """The reference is all at the start of the suggestion (whitespace collapsed), ending where a
    token ends: an editor's accept-word or accept-line could take exactly it, though the whole
    suggestion is more than it."""
    if suggestion is None:
        return False
    shown, wanted = collapse_whitespace(suggestion), collapse_whitespace(middle)
    if not wanted or not shown.startswith(wanted):
        return False
    rest = shown[len(wanted):]
    return not rest or not (_in_token(wanted[-1]) and _in_token(rest[0]))


def _in_token(ch: str) -> bool:
    return ch.isalnum() or ch in "*+!-_'?<>=/.:#$%&|"


def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def edit_similarity(suggestion: str | None, middle: str) -> float:
    """1 - normalized Levenshtein distance; 0 when nothing was offered."""
    if suggestion is None:
        return 0.0
    longest = max(len(suggestion), len(middle))
    return 1.0 if longest == 0 else 1.0 - levenshtein(suggestion, middle) / longest


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


@dataclass
class CaseResult:
    id: str
    category: str
    offered: bool
    suggestion: str | None
    em: bool
    es: float
    balanced: bool | None  # None: not offered, or the reference itself is not balanced
    compiles: bool | None
    ms: float
    model_ms: float
    top: "RankedTop | None" = None  # the top-ranked suggestion, offered or held back for its score

    def to_json(self) -> dict:
        out = {"id": self.id, "category": self.category, "offered": self.offered, "suggestion": self.suggestion,
               "em": self.em, "es": round(self.es, 4), "balanced": self.balanced, "compiles": self.compiles,
               "ms": round(self.ms, 1), "model_ms": round(self.model_ms, 1)}
        return out | (self.top.to_json() if self.top else RankedTop.absent())


@dataclass(frozen=True)
class RankedTop:
    """What scripts/calibrate.py fits on: the suggestion ranked first whatever the score threshold,
    whether it is exactly right, its scores and checks, and cheap features besides."""

    text: str
    em: bool
    score: float
    confidence: float
    checks: dict = field(default_factory=dict)
    n_tokens: int | None = None
    margin: float | None = None  # its raw confidence minus the runner-up's (None: no runner-up)
    below_min_score: bool = False  # held back by the score threshold (so not offered)

    def to_json(self) -> dict:
        return {"top": self.text, "top_em": self.em, "score": self.score, "confidence": self.confidence,
                "checks": dict(self.checks), "n_tokens": self.n_tokens,
                "margin": None if self.margin is None else round(self.margin, 4),
                "below_min_score": self.below_min_score}

    @staticmethod
    def absent() -> dict:
        """The same keys for a case where nothing passed the checks."""
        return {"top": None, "top_em": False, "score": None, "confidence": None, "checks": None, "n_tokens": None,
                "margin": None, "below_min_score": False}


def summarize(results: list[CaseResult], repl: bool) -> dict:
    n = len(results)
    offered = [r for r in results if r.offered]
    judged_balance = [r for r in offered if r.balanced is not None]
    judged_compile = [r for r in offered if r.compiles is not None]
    total_ms = sum(r.ms for r in results)

    def share(part: int, whole: int) -> float | None:
        return round(part / whole, 4) if whole else None

    return {
        "n": n,
        "offered": share(len(offered), n),
        "EM": share(sum(r.em for r in results), n),
        "precision": share(sum(r.em for r in offered), len(offered)),
        "ES": round(sum(r.es for r in results) / n, 4) if n else None,
        "balanced": share(sum(bool(r.balanced) for r in judged_balance), len(judged_balance)),
        "compiles": share(sum(bool(r.compiles) for r in judged_compile), len(judged_compile)) if repl else None,
        "p50_ms": _round(percentile([r.ms for r in results], 50)),
        "p95_ms": _round(percentile([r.ms for r in results], 95)),
        "model_share": round(sum(r.model_ms for r in results) / total_ms, 4) if total_ms else None,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
