"""How likely a suggestion is exactly right: the model's raw confidence mapped through a table
fitted on our bench (`scripts/calibrate.py`), kept per named model in resources/models.toml.

The raw confidence (geometric-mean token probability) orders one model's candidates well but says
little about how often they are right: SmolLM2's 0.9 is right far less often than the 1.5B's 0.9,
and a candidate that compiled in the REPL is right more often than one nobody checked. So the table
is fitted per model and per verification level ("repl": compiled in a REPL; "plain": structure
checks only), as a monotone step function of the raw confidence: a higher raw confidence never
gets a lower score. Without a table (a GGUF path, a completion server) the score is the raw
confidence, and says so.

Fitting: the raw confidences are put in fixed bins; empty bins are skipped; the share of exact
matches per bin is made monotone by pooling adjacent violators (isotonic regression), pulled
towards the overall share by a few pseudo-cases (so five right answers in a row do not become
"always right"), and pooled again. Same data, same table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

# The verification levels a table is fitted for, by what the top suggestion's checks say.
RESOLVED = "resolved"  # the symbol being typed, completed to a name the REPL knows (cljassist/verify/resolves.py)
REPL_CHECKED = "repl"  # it compiled in the REPL
PLAIN = "plain"  # structure checks only (no REPL, or the REPL could not check it)
LEVELS = (PLAIN, REPL_CHECKED, RESOLVED)
# A level without a table of its own reads the next one down: a check more can only make that
# estimate cautious, not reckless.
LEVEL_BELOW = {RESOLVED: REPL_CHECKED, REPL_CHECKED: PLAIN}

BIN_WIDTH = 0.05  # raw confidence bins; a table has at most 1 / BIN_WIDTH steps
PSEUDO_CASES = 2.0  # weight of the overall share of exact matches in each step's estimate
SCORE_DIGITS = 3  # a calibrated score; the raw confidence keeps RAW_DIGITS
RAW_DIGITS = 4

Step = tuple[float, float]  # (lowest raw confidence of the step, probability exactly right)


def raw_confidence(logprob: float, n_tokens: int) -> float:
    """The model's confidence in a generation: its geometric-mean token probability."""
    return math.exp(logprob / max(1, n_tokens))


def level_of(checks: Mapping[str, bool | None]) -> str:
    if checks.get("resolves") is True:
        return RESOLVED
    return REPL_CHECKED if checks.get("compiles") is True else PLAIN


@dataclass(frozen=True)
class Calibration:
    """Per verification level, the steps of a monotone map from raw confidence to the probability
    of an exact match; `min_score` is the threshold the fitting script chose, `rule` says how."""

    tables: Mapping[str, tuple[Step, ...]]
    min_score: float
    rule: str = ""

    def score(self, confidence: float, checks: Mapping[str, bool | None]) -> float:
        """The calibrated score of a suggestion with these checks."""
        return self.score_at(confidence, level_of(checks))

    def score_at(self, confidence: float, level: str) -> float:
        """The calibrated score at a verification level; a level with no table of its own (say, no
        REPL run was fitted) reads the level below it (LEVEL_BELOW)."""
        steps: Sequence[Step] = ()
        while not steps and level:
            steps = self.tables.get(level, ())
            level = LEVEL_BELOW.get(level, "")
        return step_value(steps, confidence) if steps else round(confidence, RAW_DIGITS)


def step_value(steps: Sequence[Step], x: float) -> float:
    """The probability of the last step starting at or below x (the first step below its start)."""
    value = steps[0][1]
    for start, p in steps:
        if x < start:
            break
        value = p
    return value


# ----------------------------------------------------------------------------------- fitting

def fit_steps(points: Iterable[tuple[float, bool]], bin_width: float = BIN_WIDTH,
              pseudo_cases: float = PSEUDO_CASES) -> tuple[Step, ...]:
    """The monotone step table for (raw confidence, exactly right) points; () when there are none."""
    points = list(points)
    if not points:
        return ()
    bins: dict[int, list[int]] = {}  # bin index -> [right, total]
    n_bins = round(1 / bin_width)
    for x, right in points:
        index = min(n_bins - 1, max(0, int(x / bin_width)))
        counts = bins.setdefault(index, [0, 0])
        counts[0] += bool(right)
        counts[1] += 1
    overall = sum(c[0] for c in bins.values()) / len(points)
    # blocks: [first bin index, right, total]
    blocks = _pool([[i, float(r), float(t)] for i, (r, t) in sorted(bins.items())])
    shrunk = [[i, r + pseudo_cases * overall, t + pseudo_cases] for i, r, t in blocks]
    return tuple((round(i * bin_width, 4), round(r / t, SCORE_DIGITS)) for i, r, t in _pool(shrunk))


def _pool(blocks: list[list[float]]) -> list[list[float]]:
    """Pool adjacent violators: merge neighbours until the shares right/total never decrease."""
    out: list[list[float]] = []
    for block in blocks:
        out.append(list(block))
        while len(out) > 1 and out[-2][1] / out[-2][2] >= out[-1][1] / out[-1][2]:
            last = out.pop()
            out[-1][1] += last[1]
            out[-1][2] += last[2]
    return out


@dataclass(frozen=True)
class TopSuggestion:
    """What the bench recorded about one case's top-ranked suggestion (None: nothing was ranked)."""

    confidence: float | None
    level: str
    right: bool


def fit_calibration(cases: Sequence[TopSuggestion], target_precision: float, min_offered: float) -> Calibration:
    """Tables per level from the cases, and the threshold chosen by `choose_threshold`."""
    tables = {}
    for level in LEVELS:
        steps = fit_steps((c.confidence, c.right) for c in cases if c.confidence is not None and c.level == level)
        if steps:
            tables[level] = steps
    draft = Calibration(tables, 0.0)
    chosen = choose_threshold(sweep(scored(cases, draft)), target_precision, min_offered)
    return Calibration(tables, chosen, threshold_rule(target_precision, min_offered))


def scored(cases: Sequence[TopSuggestion], calibration: Calibration | None) -> list[tuple[float | None, bool]]:
    """(score or None when nothing was ranked, exactly right) per case."""
    return [(None if c.confidence is None else
             calibration.score_at(c.confidence, c.level) if calibration else c.confidence,
             c.right) for c in cases]


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    offered: float  # share of all cases still given a suggestion
    precision: float | None  # exact matches among those
    em: float  # exact matches among all cases


def sweep(scores: Sequence[tuple[float | None, bool]]) -> list[CurvePoint]:
    """One point per distinct score (and 0): what showing only suggestions scoring at least it gives."""
    n = len(scores)
    thresholds = sorted({0.0} | {s for s, _ in scores if s is not None})
    points = []
    for t in thresholds:
        shown = [right for s, right in scores if s is not None and s >= t]
        hits = sum(shown)
        points.append(CurvePoint(t, len(shown) / n if n else 0.0, hits / len(shown) if shown else None,
                                 hits / n if n else 0.0))
    return points


def threshold_rule(target_precision: float, min_offered: float) -> str:
    return (f"the lowest score at which at least {target_precision:.0%} of what is still shown is exactly right "
            f"on the public cases while at least {min_offered:.0%} of them still get a suggestion; where none "
            f"does, the most precise score that keeps {min_offered:.0%}")


def choose_threshold(curve: Sequence[CurvePoint], target_precision: float, min_offered: float) -> float:
    """See `threshold_rule`. 0 when no threshold keeps enough cases offered."""
    kept = [p for p in curve if p.offered >= min_offered and p.precision is not None]
    if not kept:
        return 0.0
    reaching = [p for p in kept if p.precision >= target_precision]
    if reaching:
        return min(p.threshold for p in reaching)
    best = max(p.precision for p in kept)
    return min(p.threshold for p in kept if p.precision == best)


__all__ = ["Calibration", "CurvePoint", "TopSuggestion", "LEVELS", "PLAIN", "REPL_CHECKED", "RESOLVED", "raw_confidence",
           "level_of", "step_value", "fit_steps", "fit_calibration", "scored", "sweep",
           "threshold_rule", "choose_threshold"]
