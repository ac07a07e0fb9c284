"""The completion engine: one request through the whole pipeline, top to bottom.

    request -> prefilter (type-through, recent results) -> text analysis
            -> live REPL context (gathered while the model reads the prompt's stable start)
            -> other files' definitions (for a model with a repository layout)
            -> prompt -> model candidates (+ names steered in) -> verification -> ranking -> suggestions

Every front-end (CLI, benchmark, nREPL bridge, terminal prompt, file watcher) calls
`Engine.complete` and nothing below it. `Engine.warm` runs the same stages up to the prompt and has
the model evaluate it and keep it, so that the first suggestion in a buffer opened is fast.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any, Callable, Mapping

from cljassist.budgets import CROSSFILE_TIME, TimeBudget
from cljassist.cache import RecentResults, TypeThroughCache
from cljassist.candidates import make_stop_rule
from cljassist.clojure_text.analysis import Analysis, analyze
from cljassist.clojure_text.cursor import CursorContext
from cljassist.config import Settings
from cljassist.crossfile import Definition, DefinitionFinder, Project, project_of
from cljassist.errors import Cancelled, ReplNotAnswering, ReplTimeout, ReplUnavailable
from cljassist.prompt import PromptInput, PromptLimits, assemble_prompt
from cljassist.rank import confidence, rank, withhold_below
from cljassist.steer import known_names, steered_generations
from cljassist.types import (
    CUT_VERIFICATION, Candidate, CompletionModel, CompletionRequest, CompletionResult, ContextProvider, Prompt,
    ReplStatus, WarmResult,
)
from cljassist.verify import NOT_CHECKED_IN_TIME, repl_checks, structural_check
from cljassist.verify.resolves import resolves_check

if TYPE_CHECKING:
    from cljassist.context import LiveContext
    from cljassist.verify.repl_compile import ReplVerifier

class Engine:
    def __init__(
        self,
        model: CompletionModel,
        settings: Settings = Settings(),
        repl: ContextProvider | None = None,
        verifier: "ReplVerifier | None" = None,
    ):
        self.model = model
        self.settings = settings
        self.repl = repl
        self.verifier = verifier
        self.calibration = calibration = model.calibration  # None: scores are the raw confidence
        if settings.min_score is not None:
            self.min_score = settings.min_score
        else:
            self.min_score = calibration.min_score if calibration is not None else 0.0
        self.type_through = TypeThroughCache()
        self.recent = RecentResults()
        self._cache_lock = threading.Lock()
        self._cache_stamp: object = None  # the REPL connection the cached answers were checked on
        # the context lines last shown per (file, namespace): kept while they still cover what a new
        # gather finds, so the prompt (and the model's cache of it) stays the same while typing
        self._shown_context: dict[tuple[str | None, str | None], tuple[str, ...]] = {}
        # likewise the other files' definitions last shown per (file, namespace): the prompt starts
        # with them, so the early prompt is built with them before the REPL answers
        self._shown_definitions: dict[tuple[str | None, str | None], tuple[Definition, ...]] = {}
        self._definitions = DefinitionFinder()
        self._gatherer: ThreadPoolExecutor | None = None
        self._finder: ThreadPoolExecutor | None = None

    def complete(
        self,
        request: CompletionRequest,
        n: int | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> CompletionResult:
        """``n``: suggestions wanted (default: the settings').  ``cancelled`` is polled between
        stages and inside generation; when it turns true, :class:`Cancelled` is raised."""
        started = time.perf_counter()
        n = self.settings.candidates if n is None else max(1, int(n))

        # 0. Prefilter: a suggestion being typed through, or the same place answered lately (with
        #    fewer suggestions asked for: its candidates are kept and only the rest are made).
        cached = self.cached(request, n)
        if cached is not None:
            return cached

        result = self._run_pipeline(request, n, cancelled, started, self._asked_fewer(request, n))
        stamp = self._repl_stamp()
        # an answer the REPL could not check is not kept: once it is back, the checks must run
        if self.settings.cache and stamp is not None and result.repl not in (ReplStatus.FAILED, ReplStatus.SKIPPED):
            with self._cache_lock:
                if stamp != self._cache_stamp:
                    self._clear_cached()
                    self._cache_stamp = stamp
                self.type_through.remember(request, result)
                self.recent.put(request, n, result)
        return result

    def cached(self, request: CompletionRequest, n: int | None = None) -> CompletionResult | None:
        """The answer from the prefilter caches alone, or None. Safe to call from any thread while
        the engine runs another request (the service answers type-through without queueing)."""
        if not self.settings.cache:
            return None
        started = time.perf_counter()
        n = self.settings.candidates if n is None else max(1, int(n))
        stamp = self._repl_stamp()
        with self._cache_lock:
            if stamp is None or stamp != self._cache_stamp:
                # the REPL went away or came back: what it checked may no longer hold, and a user
                # whose REPL is down must hear so from a fresh answer, not a remembered one
                self._clear_cached()
                return None
            hit = self.type_through.lookup(request) or self.recent.get(request, n)
        if hit is None:
            return None
        ms = (time.perf_counter() - started) * 1000
        return dataclasses.replace(hit, ms=ms, timings={"cache": round(ms, 2)})

    def _asked_fewer(self, request: CompletionRequest, n: int) -> list[Candidate]:
        """Copies of the candidates of the answer given lately for this place when fewer suggestions
        were asked for (one as you type, then more on request); none without one."""
        if not self.settings.cache or n <= 1:
            return []
        stamp = self._repl_stamp()
        with self._cache_lock:
            if stamp is None or stamp != self._cache_stamp:
                return []
            earlier = self.recent.fewer(request, n)
        if earlier is None:
            return []
        return [dataclasses.replace(c, checks=dict(c.checks), notes=list(c.notes)) for c in earlier[1].candidates]

    def clear_caches(self) -> None:
        """Forget cached results and shown context (e.g. after the REPL state changed a lot)."""
        with self._cache_lock:
            self._clear_cached()
        self._shown_context.clear()
        self._shown_definitions.clear()

    def _clear_cached(self) -> None:
        self.type_through.clear()
        self.recent.clear()

    def _repl_stamp(self) -> object:
        """Which REPL connection answers are checked on now: "off" without a REPL, else the
        provider's connection stamp (None while its connection is down)."""
        if self.repl is None:
            return "off"
        return self.repl.connection_stamp

    def warm(self, request: CompletionRequest, cancelled: Callable[[], bool] | None = None) -> WarmResult:
        """Evaluate the prompt a completion at ``request`` would read (the same stages build it:
        the REPL context and other files' definitions shown are remembered as for a completion) and
        have the model keep it evaluated, without generating; ``cancelled`` as for :meth:`complete`."""
        if not self.settings.reuse_prompt:
            return WarmResult(0, "prompt reuse is off (:reuse-prompt false)")
        timings: dict[str, float] = {}
        staged = self._prompt_stages(request, cancelled, timings, _Lap(timings, cancelled))
        self.model.generate_candidates(staged.prompt, n=0, max_tokens=self.settings.max_new_tokens,
                                       stop=make_stop_rule(staged.analysis.gap), cancelled=cancelled)
        stats = self.model.last_stats
        if "prompt_tokens" not in stats:
            return WarmResult(0, f"the model {self.model.name} keeps no evaluated prompt")
        warmed = staged.preloaded + stats["prompt_tokens"] - stats.get("reused_tokens", 0)
        return WarmResult(warmed, None if warmed else "its prompt is evaluated already")

    def _run_pipeline(
        self, request: CompletionRequest, n: int, cancelled: Callable[[], bool] | None, started: float,
        kept: list[Candidate] = (),
    ) -> CompletionResult:
        """``kept``: candidates made for this place by an earlier request for fewer suggestions: its
        branches are not generated again, nor its names steered in, nor its checks run again."""
        timings: dict[str, float] = {}
        lap = _Lap(timings, cancelled)
        staged = self._prompt_stages(request, cancelled, timings, lap)
        analysis, prompt, live, repl_budget = staged.analysis, staged.prompt, staged.live, staged.repl_budget
        repl_state, repl_error, model_ms = staged.repl_state, staged.repl_error, staged.model_ms

        # 4. Model candidates, each ended by the stop rule as soon as its forms are complete. The
        #    deadline counts from the end of the prompt's evaluation, as the model counts it.
        deadline = self.settings.deadline_ms / 1000 if self.settings.deadline_ms else None
        generating = time.perf_counter()
        generations = self.model.generate_candidates(
            prompt,
            n=n,
            max_tokens=self.settings.max_new_tokens,
            stop=make_stop_rule(analysis.gap),
            deadline_s=deadline,
            cancelled=cancelled,
            skip=sum(c.generated for c in kept),
        )
        lap("model")
        timings["model"] = round(timings["model"] + model_ms, 2)
        _model_stages(timings, self.model.last_stats, model_ms)
        deadline_at = None
        if deadline is not None:
            deadline_at = generating + self.model.last_stats.get("prompt_ms", 0.0) / 1000 + deadline

        # 4b. Steering: where a symbol is being typed, the names that complete it (locals, the
        #     file's, the REPL's) scored by the model join its candidates (kept ones were steered);
        #     past the deadline only the likeliest name is scored.
        known = known_names(analysis, live) if self.settings.steer else None
        if known is not None and not kept:
            left_s = None if deadline_at is None else max(0.0, deadline_at - time.perf_counter())
            generations = generations + steered_generations(self.model, prompt, known, cancelled, left_s)
            lap("steer")

        # 5. Verification: structure, then (with a REPL) read, compile and opt-in eval, the likeliest
        #    first (past the deadline, once one passed, the rest are not checked), then whether the
        #    typed symbol resolves (after the REPL's checks, which it would otherwise skip).
        done = [c for c in kept if c.cut != CUT_VERIFICATION]
        fresh = [c for c in kept if c.cut == CUT_VERIFICATION] + [structural_check(g, analysis) for g in generations]
        for c in fresh:
            if c.cut == CUT_VERIFICATION:  # a kept one its request had no time to check: checked now
                c.cut = None
                c.notes = [note for note in c.notes if note != NOT_CHECKED_IN_TIME]
        if self.verifier is not None and self.settings.verify and repl_state is not ReplStatus.SKIPPED:
            checking = time.perf_counter()
            try:
                past_deadline = None if deadline_at is None else (lambda: time.perf_counter() >= deadline_at)
                repl_checks(sorted(fresh, key=confidence, reverse=True), self.verifier, analysis, repl_budget,
                            past_deadline)
            except (ReplUnavailable, ReplTimeout) as exc:
                # the structural verdicts stand; REPL checks stay None; the first trouble is the news
                if repl_error is None:
                    repl_state = ReplStatus.SKIPPED if isinstance(exc, ReplNotAnswering) else ReplStatus.FAILED
                    repl_error = _waited(exc, repl_budget)
            finally:
                timings["repl_checks"] = round((time.perf_counter() - checking) * 1000, 2)
        if known is not None:
            resolves_check(fresh, known)
        candidates = done + fresh
        lap("verify")

        # 6. Ranking (of the candidates checked: one the deadline left unchecked is not offered),
        #    then the score threshold.
        ranked = rank([c for c in candidates if c.cut != CUT_VERIFICATION], show_failing=self.settings.show_failing,
                      calibration=self.calibration)
        suggestions, held_back = withhold_below(ranked, self.min_score, limit=n)
        lap("rank")
        return CompletionResult(
            suggestions=suggestions,
            ms=(time.perf_counter() - started) * 1000,
            timings=timings,
            namespace=analysis.cursor.namespace,
            repl=repl_state,
            withheld=len(candidates) - len(suggestions),
            below_min_score=len(held_back),
            held_back=held_back,
            calibrated=self.calibration is not None,
            candidates=candidates,
            repl_error=repl_error,
        )

    def _prompt_stages(self, request: CompletionRequest, cancelled: Callable[[], bool] | None,
                       timings: dict[str, float], lap: "_Lap") -> "_Staged":
        """The stages up to the prompt, as :meth:`complete` and :meth:`warm` both run them."""
        # 1. Text analysis, once for every stage: namespace, the symbol being typed, locals, the
        #    reader state at the gap (references and file defs are read when first asked for).
        analysis = analyze(request.prefix, request.suffix, request.namespace)
        cursor = analysis.cursor
        lap("analysis")

        # 2. Live REPL context (optional: completion works without a REPL), asked for in the
        #    background while the model evaluates the part of the prompt that does not depend on it.
        #    The context and the checks share one REPL budget, however many candidates there are.
        repl_budget = TimeBudget(self.settings.repl_timeout_ms / 1000)
        pending = self._start_gather(analysis, repl_budget)
        project = project_of(request.file, cursor.namespace) if self._repo_layout else None
        shown_key = (request.file, cursor.namespace)
        prompt_input = PromptInput(
            request.prefix,
            request.suffix,
            file=request.file,
            namespace=cursor.namespace,
            form_start=cursor.top_level[0] if cursor.top_level else None,
            repl_attached=self.repl is not None,
            project=project.name if project is not None else None,
            project_file=project.current if project is not None else "",
        )
        limits = PromptLimits.of(self.settings)
        model_ms = 0.0
        preloaded = 0
        if not self.settings.reuse_prompt:
            self.model.forget()  # the naive baseline: every prompt evaluated from its first token
        elif pending is not None:
            skeleton = assemble_prompt(prompt_input, self.model.fim, self.model.count_tokens, limits,
                                       definitions=self._shown_definitions.get(shown_key, ()))
            t0 = time.perf_counter()
            try:
                preloaded = self.model.preload(skeleton.stable, cancelled)
            finally:
                model_ms += (time.perf_counter() - t0) * 1000
                lap.skip()
        live, repl_state, repl_error, gather_ms = self._finish_gather(pending, cursor, request.file, repl_budget)
        lap("context")
        if gather_ms is not None:
            timings["context_gather"] = round(gather_ms, 2)
        definitions: tuple[Definition, ...] = ()
        if project is not None:
            definitions = self._find_definitions(project, analysis, live)
            if self.settings.reuse_prompt:
                definitions = self._steady_definitions(shown_key, definitions)
            lap("definitions")

        # 3. Prompt within the token budget.
        prompt = assemble_prompt(prompt_input, self.model.fim, self.model.count_tokens, limits,
                                 context_lines=live.lines if live else (), definitions=definitions)
        lap("prompt")
        return _Staged(analysis, prompt, live, repl_budget, repl_state, repl_error, model_ms, preloaded)

    def _start_gather(self, analysis: Analysis, budget: TimeBudget) -> "Future | None":
        if self.repl is None:
            return None
        if self._gatherer is None:
            self._gatherer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cljassist-context")
        repl = self.repl
        typed = analysis.cursor.symbol_prefix if self.settings.context_matches is not False else ""

        def gather() -> tuple["LiveContext", float]:
            t0 = time.perf_counter()
            live = repl.gather(analysis.namespace, typed, analysis=analysis, budget=budget)
            return live, (time.perf_counter() - t0) * 1000

        return self._gatherer.submit(gather)

    def _finish_gather(
        self, pending: "Future | None", cursor: CursorContext, file: str | None, budget: TimeBudget
    ) -> tuple["LiveContext | None", ReplStatus, str | None, float | None]:
        """(context, REPL status, why the REPL failed or is left out, milliseconds the gather took)."""
        if pending is None:
            return None, ReplStatus.OFF, None, None
        try:
            live, gather_ms = pending.result()
        except ReplNotAnswering as exc:
            return None, ReplStatus.SKIPPED, str(exc), None
        except (ReplUnavailable, ReplTimeout) as exc:
            return None, ReplStatus.FAILED, _waited(exc, budget), None
        if self.settings.reuse_prompt:
            live = self._steady_context(live, file)
        return live, ReplStatus.USED if live.ns_loaded else ReplStatus.NS_NOT_LOADED, None, gather_ms

    def _steady_context(self, live: "LiveContext", file: str | None) -> "LiveContext":
        """The lines shown last time for this file and namespace, while they cover the new ones."""
        key = (file, live.namespace)
        shown = self._shown_context.get(key)
        if shown is not None and set(live.lines) <= set(shown):
            return dataclasses.replace(live, lines=shown)
        self._shown_context[key] = tuple(live.lines)
        return live

    @property
    def _repo_layout(self) -> bool:
        return self.settings.repo_prompt and self.model.fim.repo is not None

    def _find_definitions(self, project: Project, analysis: Analysis, live: "LiveContext | None") -> tuple[Definition, ...]:
        """Other files' definitions of what the code at the cursor uses: where the REPL says they are
        when it has the namespace loaded, else on disk; none when that takes longer than its budget
        (the lookup goes on, and what it read is cached for the next request)."""
        finder = self._definitions
        if live is not None and live.ns_loaded:
            sites, namespace = live.sites, analysis.namespace

            def find() -> tuple[Definition, ...]:
                return finder.at_sites(sites, project, namespace)
        else:
            def find() -> tuple[Definition, ...]:
                return finder.on_disk(analysis, project)
        if self._finder is None:
            self._finder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cljassist-definitions")
        try:
            return self._finder.submit(find).result(timeout=CROSSFILE_TIME.seconds)
        except FutureTimeout:
            return ()

    def _steady_definitions(self, key: tuple[str | None, str | None],
                            found: tuple[Definition, ...]) -> tuple[Definition, ...]:
        """The definitions shown last time for this file and namespace, while they cover the new ones."""
        shown = self._shown_definitions.get(key)
        if shown is not None and {(d.path, d.line) for d in found} <= {(d.path, d.line) for d in shown}:
            return shown
        self._shown_definitions[key] = found
        return found

    def close(self) -> None:
        for pool in (self._gatherer, self._finder):
            if pool is not None:
                pool.shutdown(wait=True)
        self._gatherer = self._finder = None


def _model_stages(timings: dict[str, float], stats: Mapping[str, Any], preload_ms: float) -> None:
    """Where the model stage's time went, from what the model measured (a model that measures
    nothing, a server, adds nothing): ``prompt_eval`` evaluating the prompt (its start read ahead
    while the REPL answered included), ``generate`` the branches, and of that ``draft`` guessing tokens
    ahead (speculative decoding)."""
    if "prompt_ms" in stats:
        timings["prompt_eval"] = round(stats["prompt_ms"] + preload_ms, 2)
    if "gen_ms" in stats:
        timings["generate"] = round(stats["gen_ms"], 2)
    speculation = stats.get("speculation")
    if isinstance(speculation, Mapping) and "propose_ms" in speculation:
        timings["draft"] = round(speculation["propose_ms"], 2)


@dataclasses.dataclass(frozen=True)
class _Staged:
    """What the stages up to the prompt give the rest of the pipeline."""

    analysis: Analysis
    prompt: Prompt
    live: "LiveContext | None"
    repl_budget: TimeBudget
    repl_state: ReplStatus
    repl_error: str | None
    model_ms: float  # the model's time reading the prompt's start ahead, while the REPL answered
    preloaded: int  # the prompt tokens it evaluated then


def _waited(exc: Exception, budget: TimeBudget) -> str:
    """The REPL error as the result says it, with what the request waited on the REPL in all."""
    if isinstance(exc, ReplNotAnswering) or not budget.spent:
        return str(exc)
    return f"{exc} ({budget.spent:.1f}s waited on the REPL in this request, of {budget.total:g}s)"


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

    def skip(self) -> None:
        """Leave the time since the last lap out of every stage (the caller accounts for it)."""
        self.last = time.perf_counter()
