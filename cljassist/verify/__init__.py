"""Verification stage: every candidate's checks, recorded by name in `checks`.

1. structure (`verify.structure`): the balance invariant;
2. in the REPL, when one is connected (`verify.repl_compile`): reads safely, compiles in the
   cursor's namespace with the cursor's locals bound, passes the arguments the called functions'
   ``:arglists`` take (`verify.arity` chooses the calls), and, only when the user opted in,
   evaluates (`verify.evaluate`);
3. where a symbol is being typed, the name a candidate completes it to resolves
   (`verify.resolves`: from the names steering knows, no REPL call, verification on or off).
A check that did not run is recorded as None, one not run on purpose as why ("not checked (macro
my.app/m)": compiling would have run that macro); a candidate with a failed check is withheld
unless the user asked to see failures with their errors.

This module is the stage's entry: `structural_check` and `repl_checks`. It imports nothing that
talks to a REPL: the REPL side is handed in, already connected, as a `ReplVerifier`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from cljassist.clojure_text.analysis import Analysis
from cljassist.types import CUT_GENERATION, CUT_VERIFICATION, Candidate, Generation
from cljassist.verify.structure import shape_candidate

if TYPE_CHECKING:
    from cljassist.budgets import TimeBudget
    from cljassist.verify.repl_compile import ReplVerdict, ReplVerifier

__all__ = ["structural_check", "repl_checks", "NOT_CHECKED_IN_TIME"]

NOT_CHECKED_IN_TIME = "not checked in the REPL: the deadline passed"


def structural_check(generation: Generation, analysis: Analysis) -> Candidate:
    """The candidate made of a generation, shaped to keep the file balanced, or marked as not."""
    shaped = shape_candidate(generation.text, analysis.prefix, analysis.suffix, analysis.gap)
    candidate = Candidate(shaped.text, generation.logprob, generation.n_tokens, generation.finish,
                          cut=CUT_GENERATION if generation.finish == "deadline" else None)
    candidate.checks["balanced"] = shaped.balanced
    candidate.notes.extend(shaped.notes)
    if not shaped.balanced:
        candidate.error = "cannot be made balanced"
    return candidate


def repl_checks(candidates: list[Candidate], verifier: "ReplVerifier", analysis: Analysis,
                budget: "TimeBudget | None" = None, past_deadline: Callable[[], bool] | None = None) -> None:
    """Run the REPL checks on each structurally sound candidate, in the order given; identical texts
    are checked once. `budget`: the request's REPL time, shared by every candidate. At the first REPL
    trouble (the REPL not answering, the budget spent, the connection gone) the candidate at hand
    records it and the REPL error is raised: the others keep their REPL checks None, unasked.
    `past_deadline`: once it says true and a candidate has passed, no further check is started: the
    rest are marked CUT_VERIFICATION (what passed is the answer; a late check never empties it)."""
    verdicts: dict[str, "ReplVerdict"] = {}
    passed = False
    for c in candidates:
        if not c.passed_all:
            continue
        if c.text not in verdicts and passed and past_deadline is not None and past_deadline():
            c.cut = CUT_VERIFICATION
            c.notes.append(NOT_CHECKED_IN_TIME)
            continue
        if c.text not in verdicts:
            verdicts[c.text] = verifier.verify(analysis.prefix, c.text, analysis.suffix, analysis=analysis,
                                               budget=budget)
        verdict = verdicts[c.text]
        verdict.record(c.checks)
        c.notes.extend(verdict.notes)
        c.error = c.error or verdict.error
        c.value = verdict.value
        passed = passed or c.passed_all
        if verdict.repl_failure is not None:
            raise verdict.repl_failure
