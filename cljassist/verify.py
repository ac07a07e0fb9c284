"""Verification stage: every candidate's checks, recorded by name in `checks`.

Issue 2 ships the structural check (the balance invariant). The REPL checks (read, compile,
opt-in eval) are separate steps with the same shape; a check that did not run is recorded as None.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cljassist.candidates import GapContext, Shaped, shape_candidate
from cljassist.model.llama import Generation

CHECK_NAMES = ("balanced", "reads", "compiles", "evaluated")


@dataclass
class Candidate:
    text: str
    logprob: float
    n_tokens: int
    finish: str
    checks: dict[str, bool | None] = field(default_factory=lambda: dict.fromkeys(CHECK_NAMES))
    notes: list[str] = field(default_factory=list)

    @property
    def offerable(self) -> bool:
        """Withheld if any check that ran failed."""
        return bool(self.text) and not any(v is False for v in self.checks.values())


def structural_check(generation: Generation, prefix: str, suffix: str, gap: GapContext) -> Candidate:
    shaped: Shaped = shape_candidate(generation.text, prefix, suffix, gap)
    candidate = Candidate(shaped.text, generation.logprob, generation.n_tokens, generation.finish)
    candidate.checks["balanced"] = shaped.balanced
    candidate.notes.extend(shaped.notes)
    return candidate
