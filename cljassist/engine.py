"""The completion engine: one request through the whole pipeline, top to bottom.

    request -> text analysis -> live REPL context -> prompt -> model candidates
            -> verification -> ranking -> suggestions

Every front-end (CLI, benchmark, and later the nREPL bridge, terminal prompt and file watcher)
calls `Engine.complete` and nothing below it.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from cljassist.candidates import GapContext, make_stop_rule
from cljassist.clojure_text.cursor import CursorContext, analyze_cursor
from cljassist.config import Settings
from cljassist.context import LiveContext, ReplContextProvider
from cljassist.errors import Cancelled, InputError, ReplTimeout, ReplUnavailable
from cljassist.model.llama import LocalModel
from cljassist.prompt import build_prompt, load_templates
from cljassist.rank import Suggestion, rank
from cljassist.verify import Candidate, repl_checks, structural_check

if TYPE_CHECKING:
    from cljassist.repl_verify import ReplVerifier

CURSOR_MARKER = "<CURSOR>"


@dataclass(frozen=True)
class CompletionRequest:
    prefix: str
    suffix: str
    file: str | None = None  # shown to the model and used for discovery; not read by the engine
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


@dataclass
class CompletionResult:
    suggestions: list[Suggestion]
    ms: float
    timings: dict[str, float] = field(default_factory=dict)  # per stage, milliseconds
    namespace: str | None = None
    repl: str = "off"  # "off" | "used" | "ns-not-loaded" | "failed: <reason>"
    withheld: int = 0  # candidates produced but not offered
    candidates: list[Candidate] = field(default_factory=list)  # every candidate with its checks


class Engine:
    def __init__(
        self,
        model: LocalModel,
        settings: Settings = Settings(),
        repl: ReplContextProvider | None = None,
        verifier: "ReplVerifier | None" = None,
    ):
        self.model = model
        self.settings = settings
        self.repl = repl
        self.verifier = verifier

    def complete(
        self,
        request: CompletionRequest,
        n: int | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> CompletionResult:
        """``n``: suggestions wanted (default: the settings').  ``cancelled`` is polled between
        stages and inside generation; when it turns true, :class:`Cancelled` is raised."""
        started = time.perf_counter()
        timings: dict[str, float] = {}
        lap = _Lap(timings, cancelled)
        n = self.settings.candidates if n is None else max(1, int(n))

        # 1. Text analysis: namespace, the symbol being typed, the reader state at the gap.
        cursor = analyze_cursor(request.prefix + request.suffix, len(request.prefix))
        if request.namespace and request.namespace != cursor.namespace:
            cursor = dataclasses.replace(cursor, namespace=request.namespace)
        gap = GapContext.of(request.prefix, request.suffix)
        lap("analysis")

        # 2. Live REPL context (optional: completion works without a REPL).
        live, repl_state = self._live_context(cursor, request.prefix + request.suffix)
        lap("context")

        # 3. Prompt within the token budget.
        prompt = build_prompt(
            request.prefix,
            request.suffix,
            self.model.fim,
            self.model.count_tokens,
            context_lines=live.lines if live else (),
            namespace=cursor.namespace,
            file_label=_file_label(request.file),
            max_prompt_tokens=min(load_templates().budget.max_prompt_tokens, self.settings.n_ctx - self.settings.max_new_tokens),
        )
        lap("prompt")

        # 4. Model candidates, each ended by the stop rule as soon as its forms are complete.
        deadline = self.settings.deadline_ms / 1000 if self.settings.deadline_ms else None
        generations = self.model.generate_candidates(
            prompt.text,
            n=n,
            max_tokens=self.settings.max_new_tokens,
            stop=make_stop_rule(gap),
            deadline_s=deadline,
            cancelled=cancelled,
        )
        lap("model")

        # 5. Verification: structure, then (with a REPL) read, compile and opt-in eval.
        candidates = [structural_check(g, request.prefix, request.suffix, gap) for g in generations]
        if self.verifier is not None and self.settings.verify:
            try:
                repl_checks(candidates, self.verifier, request.prefix, request.suffix, cursor)
            except (ReplUnavailable, ReplTimeout) as exc:
                repl_state = f"failed: {exc}"  # the structural verdicts stand; REPL checks stay None
        lap("verify")

        # 6. Ranking.
        suggestions = rank(candidates, limit=n, show_failing=self.settings.show_failing)
        lap("rank")
        return CompletionResult(
            suggestions=suggestions,
            ms=(time.perf_counter() - started) * 1000,
            timings=timings,
            namespace=cursor.namespace,
            repl=repl_state,
            withheld=len(candidates) - len(suggestions),
            candidates=candidates,
        )

    def _live_context(self, cursor: CursorContext, text: str) -> tuple[LiveContext | None, str]:
        if self.repl is None:
            return None, "off"
        try:
            live = self.repl.gather(cursor.namespace, cursor.symbol_prefix, cursor=cursor, text=text)
        except (ReplUnavailable, ReplTimeout) as exc:
            return None, f"failed: {exc}"
        return live, "used" if live.ns_loaded else "ns-not-loaded"


def _file_label(file: str | None) -> str | None:
    """Relative paths (benchmark cases) as given; absolute ones by name, to keep the prompt short."""
    if not file:
        return None
    return Path(file).name if Path(file).is_absolute() else file


class _Lap:
    """Records the milliseconds since the previous lap under a stage name; a stage boundary is
    also where a cancelled request stops."""

    def __init__(self, timings: dict[str, float], cancelled: Callable[[], bool] | None = None):
        self.timings = timings
        self.cancelled = cancelled
        self.last = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = round((now - self.last) * 1000, 2)
        self.last = now
        if self.cancelled is not None and self.cancelled():
            raise Cancelled(f"cancelled after {stage}")
