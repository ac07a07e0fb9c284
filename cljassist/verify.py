"""Verification stage: every candidate's checks, recorded by name in `checks`.

1. structure: the balance invariant (candidates.shape_candidate);
2. in the REPL (when one is connected): reads safely, compiles in the cursor's namespace with the
   cursor's locals bound, and, only when the user opted in, evaluates (repl_verify.ReplVerifier).
A check that did not run is recorded as None; a candidate with a failed check is withheld unless
the user asked to see failures with their errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cljassist.candidates import GapContext, Shaped, shape_candidate
from cljassist.types import Candidate, Generation

if TYPE_CHECKING:
    from cljassist.clojure_text.cursor import CursorContext
    from cljassist.repl_verify import ReplVerdict, ReplVerifier

def structural_check(generation: Generation, prefix: str, suffix: str, gap: GapContext) -> Candidate:
    shaped: Shaped = shape_candidate(generation.text, prefix, suffix, gap)
    candidate = Candidate(shaped.text, generation.logprob, generation.n_tokens, generation.finish)
    candidate.checks["balanced"] = shaped.balanced
    candidate.notes.extend(shaped.notes)
    if not shaped.balanced:
        candidate.error = "cannot be made balanced"
    return candidate


def repl_checks(candidates: list[Candidate], verifier: "ReplVerifier", prefix: str, suffix: str,
                cursor: "CursorContext") -> None:
    """Run the REPL checks on each structurally sound candidate; identical texts are checked once.
    `cursor` is the engine's analysis of the gap (its namespace may come from the request)."""
    verdicts: dict[str, "ReplVerdict"] = {}
    for c in candidates:
        if not c.passed_all:
            continue
        if c.text not in verdicts:
            verdicts[c.text] = verifier.verify(prefix, c.text, suffix, cursor.namespace, cursor)
        verdict = verdicts[c.text]
        c.checks["reads"], c.checks["compiles"], c.checks["evaluated"] = verdict.reads, verdict.compiles, verdict.evaluated
        c.error = c.error or verdict.error
        c.value = verdict.value
