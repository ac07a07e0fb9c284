"""The data that flows through the pipeline, and the interfaces its stages declare.

    CompletionRequest -> Prompt -> CompletionModel -> Generation -> Candidate -> Suggestion
                                                                             -> CompletionResult

Only the standard library is imported here (and the package's errors), so that front-ends, tests
and tools can name these types without loading numpy or llama.cpp.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from cljassist.errors import InputError

if TYPE_CHECKING:
    from cljassist.budgets import TimeBudget
    from cljassist.calibration import Calibration
    from cljassist.clojure_text.analysis import Analysis
    from cljassist.config import Settings
    from cljassist.context import LiveContext
    from cljassist.model.fim import FimFormat

CURSOR_MARKER = "<CURSOR>"


@dataclass(frozen=True)
class CompletionRequest:
    prefix: str
    suffix: str
    # shown to the model and used for discovery; an absolute path also locates the project whose
    # other files' definitions the prompt may carry (cljassist/crossfile.py)
    file: str | None = None
    namespace: str | None = None  # when the text was cut before its ns form (benchmark cases)

    @classmethod
    def at_offset(cls, text: str, offset: int, file: str | None = None) -> "CompletionRequest":
        if not 0 <= offset <= len(text):
            raise InputError(f"cursor offset {offset} is outside the text (0..{len(text)})")
        return cls(text[:offset], text[offset:], file)

    @classmethod
    def at_line_column(cls, text: str, line: int, column: int, file: str | None = None) -> "CompletionRequest":
        """1-based line and column; column counts characters, and may be one past the line's end."""
        lines = text.split("\n")
        if not 1 <= line <= len(lines):
            raise InputError(f"cursor out of range: line {line} (the file has {len(lines)} lines)")
        if not 1 <= column <= len(lines[line - 1]) + 1:
            raise InputError(f"cursor out of range: column {column} (line {line} has {len(lines[line - 1])} characters)")
        offset = sum(len(l) + 1 for l in lines[: line - 1]) + column - 1
        return cls.at_offset(text, offset, file)

    @classmethod
    def at_marker(cls, text: str, file: str | None = None) -> "CompletionRequest":
        count = text.count(CURSOR_MARKER)
        if count != 1:
            what = "no" if count == 0 else f"{count}"
            raise InputError(f"expected exactly one {CURSOR_MARKER} marker, found {what}; or pass --line and --column")
        offset = text.index(CURSOR_MARKER)
        return cls(text[:offset], text[offset + len(CURSOR_MARKER):], file)


@dataclass(frozen=True)
class Prompt:
    """The model's input, and its parts for servers that take the prefix and suffix apart."""

    text: str
    prefix: str  # the part of the request's prefix the model sees
    suffix: str  # the part of the suffix the model sees ('' for left-to-right models)
    context_lines: tuple[str, ...]
    tokens: int
    header: str = ""  # file header + context block (the context block alone when it sits before the form)
    before: str = ""  # everything the model reads before the gap, in order (what a server's /infill takes as prefix)
    stable: str = ""  # the start of `text` that does not depend on the REPL context
    # the repository layout's text before the FIM template (project, other files' definitions, this
    # file's path; FimFormat.repo_preamble): `text` is `fim.render(before, suffix, preamble)`
    preamble: str = ""
    # Token healing (cljassist/model/healing.py): the text backed off the end of `before` (and of
    # `text`), which every candidate's generation reproduces first and which is then taken off its
    # start. None: not decided yet (the local model decides, as it owns the tokenizer); "": nothing.
    healed: str | None = None

    @classmethod
    def of_text(cls, text: str) -> "Prompt":
        """A prompt given as finished text (tools and tests that call a model directly): all of it
        is read before the gap, there is no suffix, and it is read as given (no token healing)."""
        return cls(text=text, prefix=text, suffix="", context_lines=(), tokens=0, before=text, healed="")


@dataclass
class Generation:
    """One completion candidate as the model produced it."""

    text: str
    logprob: float  # sum of the chosen tokens' log-probabilities (natural log, <= 0)
    # tokens generated (the one that triggered a text stop included); with token healing, the ones
    # that only re-type the backed-off text are left out (their log-probabilities are in logprob)
    n_tokens: int
    finish: str  # 'stop' | 'eos' | 'length' | 'deadline'
    ms: float  # wall time of this branch (the shared prompt evaluation not included)
    token_ids: tuple[int, ...] = ()  # the generated ids (a stop token never included; the backed-off text's included)


# The checks every candidate records (None: did not run); where a symbol is being typed, also
# "resolves" (cljassist/verify/resolves.py).
CHECK_NAMES = ("balanced", "reads", "compiles", "arity", "evaluated")

# One check's verdict: True passed, False failed, None did not run, and a str where the check was
# deliberately not run and says why ("not checked (macro my.app/with-db)": compiling would have run
# the user's macro). Only True counts as passed and only False as failed.
CheckVerdict = bool | str | None


def judged(verdict: CheckVerdict) -> bool | None:
    """The verdict as passed (True) or failed (False); None where the check did not judge."""
    return verdict if isinstance(verdict, bool) else None


def checks_passed(checks: Mapping[str, CheckVerdict]) -> bool:
    """The one definition of "passed": balanced, and no check that ran has failed (a check that
    did not run, None, or was not checked on purpose, a str, counts neither way)."""
    return checks.get("balanced") is True and not any(v is False for v in checks.values())


# What the deadline cut of a candidate (Candidate.cut): its generation (the text is what came before the
# deadline, cut back to complete forms, and is checked as any other) or its verification (its REPL checks
# were never started: it is not offered, and a later request for the same place checks it).
CUT_GENERATION = "generation"
CUT_VERIFICATION = "verification"


@dataclass
class Candidate:
    """A generation shaped to the gap, with its checks recorded by name (None: did not run)."""

    text: str
    logprob: float
    n_tokens: int
    finish: str
    checks: dict[str, CheckVerdict] = field(default_factory=lambda: dict.fromkeys(CHECK_NAMES))
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # why a check failed, one line
    value: str | None = None  # printed value, when evaluated
    cut: str | None = None  # CUT_GENERATION or CUT_VERIFICATION where the deadline cut it

    @property
    def generated(self) -> bool:
        """A branch of the model's generation (not a name steering scored in)."""
        return self.finish != "steered"

    @property
    def passed_all(self) -> bool:
        return bool(self.text) and checks_passed(self.checks)


@dataclass(frozen=True)
class Suggestion:
    text: str
    # How likely it is exactly right, from the model's calibration table (cljassist/calibration.py);
    # the raw confidence where the model has none. In [0, 1].
    score: float
    checks: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    error: str | None = None  # set only on a failing suggestion shown because the user asked
    value: str | None = None  # printed value when evaluation was opted in
    confidence: float | None = None  # the model's raw confidence: geometric-mean token probability

    @property
    def passed(self) -> bool:
        return checks_passed(self.checks)


def suggestion_dict(s: Suggestion, score_digits: int | None = None) -> dict[str, Any]:
    """A suggestion as a JSON-ready map: text, score, checks, then the raw confidence, value and
    error when set. ``score_digits``: round the score (a reply to an editor shows 3 digits); None
    keeps the ranking's own precision (the CLI's JSON, read by scripts comparing runs)."""
    out: dict[str, Any] = {"text": s.text, "score": s.score if score_digits is None else round(s.score, score_digits),
                           "checks": dict(s.checks)}
    if s.confidence is not None:
        out["confidence"] = s.confidence if score_digits is None else round(s.confidence, score_digits)
    if s.value is not None:
        out["value"] = s.value
    if s.error:
        out["error"] = s.error
    return out


class ReplStatus(enum.StrEnum):
    """How the REPL took part in one completion. The values are what front-ends print."""

    OFF = "off"  # no REPL configured
    USED = "used"  # context gathered (and checks run, when verification is on)
    NS_NOT_LOADED = "ns-not-loaded"  # the REPL answered, but the cursor's namespace is not loaded in it
    FAILED = "failed"  # the REPL did not answer; the reason is CompletionResult.repl_error
    # left out: it stopped answering earlier and has not answered a probe since (repl_error says since when)
    SKIPPED = "skipped"


@dataclass
class CompletionResult:
    suggestions: list[Suggestion]
    ms: float
    timings: dict[str, float] = field(default_factory=dict)  # per stage, milliseconds
    namespace: str | None = None
    repl: ReplStatus = ReplStatus.OFF
    withheld: int = 0  # candidates produced but not offered (failed a check, or scored below min_score)
    below_min_score: int = 0  # of those, the ones that passed their checks but scored below min_score
    held_back: list[Suggestion] = field(default_factory=list)  # those, best first
    calibrated: bool = False  # scores are calibrated for the model (else they are its raw confidence)
    candidates: list[Candidate] = field(default_factory=list)  # every candidate with its checks
    # Where the suggestions came from: "model" (the pipeline ran), "type-through" (the user typed the
    # start of the previous suggestion), "recent" (the same text around the cursor was answered lately).
    source: str = "model"
    repl_error: str | None = None  # why the REPL failed or was left out, when repl is FAILED or SKIPPED

    def __post_init__(self) -> None:
        self.repl = ReplStatus(self.repl)

    @property
    def cut_by_deadline(self) -> dict[str, int]:
        """How many candidates the deadline cut, by what it cut (CUT_GENERATION, CUT_VERIFICATION);
        empty when it cut none."""
        counts: dict[str, int] = {}
        for c in self.candidates:
            if c.cut is not None:
                counts[c.cut] = counts.get(c.cut, 0) + 1
        return counts

    @property
    def nothing_offered(self) -> str:
        """Why there is no suggestion, as front-ends print it: "no suggestion passed the checks
        (3 withheld" or "no suggestion to offer (3 withheld, 2 of them scoring below min-score"; the
        caller adds what it knows and the closing paren."""
        if not self.below_min_score:
            return f"no suggestion passed the checks ({self.withheld} withheld"
        return f"no suggestion to offer ({self.withheld} withheld, {self.below_min_score} of them scoring below min-score"

    @property
    def repl_label(self) -> str:
        """The REPL status as every front-end shows it: "off", "used", "ns-not-loaded",
        "failed: <reason>" or "skipped: <reason>"."""
        if self.repl in (ReplStatus.FAILED, ReplStatus.SKIPPED):
            return f"{self.repl.value}: {self.repl_error}"
        return self.repl.value


@runtime_checkable
class CompletionModel(Protocol):
    """What the engine needs of a model: the local GGUF model, a completion server, the fallback
    between the two, and the test fakes all implement it."""

    name: str
    fim: "FimFormat"  # the prompt format the prompt stage renders for this model
    # How its raw confidence maps to the chance of an exact match (resources/models.toml); None where
    # nothing was fitted for it (a GGUF path, a server, a fake): scores then stay raw confidence.
    calibration: "Calibration | None"
    last_stats: dict[str, Any]  # what the last generate_candidates call measured (for reports)

    def count_tokens(self, text: str) -> int: ...

    def generate_candidates(self, prompt: "Prompt | str", n: int, max_tokens: int,
                            stop: Callable[[str], int | None], deadline_s: float | None = None,
                            cancelled: Callable[[], bool] | None = None, skip: int = 0) -> list[Generation]:
        """Up to ``n`` candidates continuing ``prompt`` (a plain string is a finished prompt text:
        :meth:`Prompt.of_text`). ``stop(text)`` is called on each candidate's growing text; an int
        k ends it with ``text[:k]``. ``deadline_s`` bounds the generating time; ``cancelled`` is
        polled and, once true, the call raises :class:`cljassist.errors.Cancelled`. ``skip``: the
        first ``skip`` of the ``n`` are left out (an earlier call for the same prompt made them), so
        at most ``n - skip`` come back. ``n`` 0: none, but the prompt is evaluated and kept as for a
        generation (a model that keeps an evaluated prompt sets ``last_stats["prompt_tokens"]`` and
        ``["reused_tokens"]``), so that the request to come there is fast (:meth:`CompletionEngine.warm`)."""
        ...

    def score_continuations(self, prompt: "Prompt | str", texts: Sequence[str], most: int,
                            ends: Callable[[str], bool] | None = None,
                            cancelled: Callable[[], bool] | None = None,
                            deadline_s: float | None = None) -> "list[Generation | None]":
        """Each of ``texts`` scored as a candidate continuing ``prompt``, one answer per text in
        order: a Generation (finish "steered") whose ``logprob`` and ``n_tokens`` are what generating
        that text would give (so its confidence compares with the generated candidates'), or None
        where it is not scored. At most ``most`` texts are scored, the most probable first.
        ``ends(ch)``: the text must also end before a character ``ends`` accepts (the probability
        of that counts as one more token). ``deadline_s``: seconds after which no further text is
        scored (the most probable one always is). A model that cannot score (a server) answers all None."""
        ...

    def preload(self, text: str, cancelled: Callable[[], bool] | None = None) -> int:
        """Evaluate the start of a coming prompt ahead of time; the tokens evaluated now (0 where
        the model keeps no evaluated prompt of its own)."""
        ...

    def forget(self) -> None:
        """Drop any evaluated prompt, so that the next one is evaluated from its first token."""
        ...

    def close(self) -> None: ...


def as_prompt(prompt: "Prompt | str") -> Prompt:
    return Prompt.of_text(prompt) if isinstance(prompt, str) else prompt


def generation_counts(n: int, max_tokens: int) -> tuple[int, int]:
    """``n`` and ``max_tokens`` as every model reads them: no negative count, at least one token."""
    return max(0, int(n)), max(1, int(max_tokens))


@runtime_checkable
class ContextProvider(Protocol):
    """The live REPL side of the pipeline, as the engine uses it."""

    def gather(self, namespace: str | None, symbol_prefix: str = "",
               analysis: "Analysis | None" = None, budget: "TimeBudget | None" = None) -> "LiveContext":
        """`budget`: the request's REPL time, which the checks share; the provider's own limit when
        None. Raises ReplNotAnswering at once while the REPL is left out (it stopped answering)."""
        ...

    @property
    def connection_stamp(self) -> object:
        """Which connection answers are checked on: None while the connection is down, else a
        value that changes whenever the REPL is reconnected (its state may then differ)."""
        ...

    @property
    def endpoint(self) -> str:
        """Where the REPL is (host:port), for front-ends to show."""
        ...


@dataclass(frozen=True)
class WarmResult:
    """What warming a buffer did: the prompt tokens the model evaluated now; where none, why."""

    warmed: int
    skipped: str | None = None


@runtime_checkable
class CompletionEngine(Protocol):
    """What front-ends use of :class:`cljassist.engine.Engine` (and what their test fakes provide)."""

    model: CompletionModel
    settings: "Settings"
    repl: ContextProvider | None

    def complete(self, request: CompletionRequest, n: int | None = None,
                 cancelled: Callable[[], bool] | None = None) -> CompletionResult: ...

    def cached(self, request: CompletionRequest, n: int | None = None) -> CompletionResult | None:
        """The answer from the caches alone (type-through, recent), or None; safe from any thread."""
        ...

    def warm(self, request: CompletionRequest, cancelled: Callable[[], bool] | None = None) -> WarmResult:
        """Build the prompt a completion at ``request`` would read and have the model evaluate and
        keep it, generating nothing, so that the first suggestion there is fast."""
        ...
