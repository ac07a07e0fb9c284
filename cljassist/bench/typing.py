"""`cljassist bench --typing FILE...`: a latency benchmark that replays typing through the engine.

What is replayed
  For each FILE, ``--forms K`` top-level forms (default 3) are chosen: the ns/in-ns form is skipped,
  forms longer than ``--max-form-chars`` (default 400) are left out unless nothing else is left (then
  the shortest are used), and K are picked evenly spaced through the rest, each at a seeded
  position inside its stretch (``--seed``). Each chosen form is replayed on its own: the buffer is
  the file with that form's text removed and the cursor where the form was, and the form is typed
  again from its first character.

  The editor is a paredit/auto-pairing one, as Clojure programmers use: typing ``(`` ``[`` ``{`` or
  ``"`` also puts its closer after the cursor, and typing a closer that is already next only moves
  over it. So the buffer is always the typed text + the closers of what the typed text left open +
  the rest of the file. Those closers are ``clojure_text.closers.auto_paired_closers`` of the reader's
  ``scan`` (the terminal prompt's suffix too), computed incrementally per keystroke: the closing quote
  of an open string or regex first, then the closers of the open forms, innermost first; inside a
  line comment they sit on the next line (paredit moves them there); right after a lone backslash
  (a character literal) nothing new is paired.

  A keystroke is one character, except that a newline together with the indentation after it is
  one keystroke (the editor indents by itself).

Per keystroke
  A request ``CompletionRequest(prefix, suffix, file)`` is made for the buffer *after* the
  keystroke and ``engine.complete`` is called; the replay is sequential: each keystroke waits for
  its answer (no cancellation of superseded requests is measured here). Recorded: the wall-clock
  ms around ``complete`` (keystroke to final verified suggestion), ``result.timings`` (context,
  model, verify...; a cache hit has only "cache"), ``result.source`` ("model", "type-through",
  "recent"; an engine without caches always says "model"), whether a suggestion was offered, and
  whether the top suggestion *matched*: it is non-empty and the text typed next starts with it,
  character for character (indentation included; a cheap usefulness signal).

Pauses
  After each keystroke the replay sleeps a seeded typing interval minus the time the request took
  (never negative): ``--pause-ms`` (default 120) times 1 after an ordinary key, 2 after a space and 3
  after a newline, times a uniform jitter in [0.5, 1.5]. The intervals are drawn once, so both paths
  see the same ones. ``--no-pause`` skips sleeping.

Cold and warm
  "cold" keystrokes are the first one after the engine was built (also reported as "first
  suggestion after start"; the model's load time is reported apart) and the first keystroke of
  each replayed form (a new place in the file, nothing cached for it). All others are "warm".
  The first keystroke in each file is also reported on its own: "first suggestion in a cold file".
  With a warmer (`file_warmer`: an editor sends `warm` on visiting a file, and the engine then
  evaluates that file's prompt ahead), every other file (the 2nd, 4th, ...) is warmed before its
  first keystroke, outside the measured time, and its first keystroke is "first suggestion in a
  warmed file" instead.

Two paths, one run
  "ours": an Engine with the given settings (caches and prompt reuse on). "naive": an Engine with
  ``cache=False, reuse_prompt=False, prefetch=False`` (a new prompt each time, no result cache) on
  the same model object and the same REPL provider/verifier, run after ours on the same keystrokes.
  To keep the run short the naive path replays only every K-th keystroke of each form
  (``--naive-every K``, default 4; keystroke 0 of each form is always among them, so it has cold
  keystrokes too) and sleeps the sum of the K intervals it stands for. The REPL provider's own
  per-namespace context cache (which predates these settings) is shared by both paths.

Numbers
  Percentiles are nearest-rank (``bench.metrics.percentile``). "ran the model" is the keystroke
  time over the keystrokes that ran the pipeline (source "model"), all of them and the warm ones.
  Stage percentiles are over those keystrokes too, a stage a keystroke did not run counting 0:
  context (waiting for the REPL's context), prompt_eval (the model reading the prompt, its start
  read while the REPL answered included), generate (the branches), draft (of generate, guessing
  tokens ahead: speculative decoding), model (all the model did), steer, verify and repl_checks
  (of verify, the REPL's checks); and the share of them where the deadline cut a candidate's
  generation, or left one unchecked. Speedup = naive / ours
  for the warm p50 and p95 (ours over all its warm keystrokes; the JSON also has the ratio over
  only the keystrokes both paths replayed). ``--json OUT.json`` writes the summaries, the chosen
  forms and every keystroke's record. Ghost text shows one suggestion: ``-n`` is the as-you-type
  default (1) and ``--max-new-tokens`` 24 here unless given.

Files of the bench packages
  ``--typing-bench-files K`` replays K files of the `bench` packages of shared/corpus/split.toml
  (never a reserved one), picked by ``bench_package_files``: each package's library sources (as
  the public benchmark reads them: `corpus.library_sources`), the files with a form to type,
  taken one package after the other, each package's files in a seeded order (``--seed``).
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from cljassist.bench.metrics import percentile
from cljassist.clojure_text.closers import auto_paired_closers
from cljassist.clojure_text.reader import ScanState, namespace_of_form, parse, scan
from cljassist.types import CUT_GENERATION, CUT_VERIFICATION, CompletionRequest
from cljassist.errors import CljassistError, InputError

DEFAULT_FORMS = 3
DEFAULT_PAUSE_MS = 120.0
DEFAULT_NAIVE_EVERY = 4
DEFAULT_MAX_FORM_CHARS = 400
TYPING_MAX_NEW_TOKENS = 24
# the engine's timings (CompletionResult.timings) reported per stage; see "Numbers" above
STAGES = ("context", "prompt_eval", "generate", "draft", "model", "steer", "verify", "repl_checks")
CACHE_SOURCES = ("type-through", "recent")


class CompletingEngine(Protocol):
    def complete(self, request: CompletionRequest): ...


# ---------------------------------------------------------------------------------------------
# The plan: which forms, which keystrokes, what the buffer looks like after each


@dataclass(frozen=True)
class Keystroke:
    index: int  # within its form
    typed: str  # one character, or a newline with the indentation after it
    end: int  # characters of the form typed once this keystroke is done
    closers: str  # what the auto-pairing editor has after the cursor before the rest of the file
    pause_ms: float  # the typist's interval after this keystroke


@dataclass(frozen=True)
class FormPlan:
    file: str
    start: int  # character offsets of the form in the file
    end: int
    text: str  # the whole file
    keystrokes: tuple[Keystroke, ...]

    @property
    def form_text(self) -> str:
        return self.text[self.start:self.end]

    @property
    def line(self) -> int:
        return self.text.count("\n", 0, self.start) + 1

    def request(self, key: Keystroke) -> CompletionRequest:
        return CompletionRequest(self.text[:self.start] + self.form_text[:key.end],
                                 key.closers + self.text[self.end:], self.file)

    def opened(self) -> CompletionRequest:
        """The buffer before the form's first keystroke: the file without the form, the cursor where it was."""
        return CompletionRequest(self.text[:self.start], self.text[self.end:], self.file)

    def upcoming(self, key: Keystroke) -> str:
        """What the user types after this keystroke (the rest of the form)."""
        return self.form_text[key.end:]


def keystroke_units(form: str) -> list[str]:
    """The form as keystrokes: characters, except a newline plus the spaces/tabs after it is one."""
    units: list[str] = []
    i = 0
    while i < len(form):
        if form[i] == "\n" or form.startswith("\r\n", i):
            j = i + (2 if form[i] == "\r" else 1)
            while j < len(form) and form[j] in " \t":
                j += 1
            units.append(form[i:j])
            i = j
        else:
            units.append(form[i])
            i += 1
    return units


def pause_after(typed: str, rng: random.Random, mean_ms: float) -> float:
    """A typist's interval after `typed`: longer after a space (a word ends) and a newline."""
    factor = 3.0 if typed.startswith(("\n", "\r")) else 2.0 if typed in (" ", "\t") else 1.0
    return mean_ms * factor * rng.uniform(0.5, 1.5)


def plan_form(file: str, text: str, start: int, end: int, rng: random.Random, pause_ms: float) -> FormPlan:
    keys: list[Keystroke] = []
    state = ScanState()  # a top-level form starts at depth 0 in code mode
    typed_chars = 0
    for index, unit in enumerate(keystroke_units(text[start:end])):
        state = scan(unit, state)
        typed_chars += len(unit)
        keys.append(Keystroke(index, unit, typed_chars, auto_paired_closers(state),
                              pause_after(unit, rng, pause_ms)))
    return FormPlan(file, start, end, text, tuple(keys))


def candidate_forms(text: str) -> list[tuple[int, int]]:
    """Top-level forms that can be replayed: all but the ns/in-ns form and empty ones."""
    return [(node.start, node.end) for node in parse(text)
            if namespace_of_form(node, text) is None and node.end > node.start]


def choose_forms(spans: list[tuple[int, int]], k: int, rng: random.Random,
                 max_chars: int | None = DEFAULT_MAX_FORM_CHARS) -> list[tuple[int, int]]:
    """k spans evenly spaced through the file, each at a seeded place in its stretch; spans longer
    than max_chars only when too few others are left (then the shortest), in file order."""
    if k <= 0 or not spans:
        return []
    short = [s for s in spans if max_chars is None or s[1] - s[0] <= max_chars]
    if len(short) < k:
        short = sorted(spans, key=lambda s: s[1] - s[0])[:k]
        short.sort()
    if len(short) <= k:
        return short
    stride = len(short) / k
    return [short[min(len(short) - 1, int(i * stride + rng.random() * stride))] for i in range(k)]


def plan_typing(files: list[tuple[str, str]], forms_per_file: int = DEFAULT_FORMS, seed: int = 0,
                pause_ms: float = DEFAULT_PAUSE_MS,
                max_form_chars: int | None = DEFAULT_MAX_FORM_CHARS) -> list[FormPlan]:
    """`files`: (file name for requests, text). The forms to replay, in file order."""
    rng = random.Random(seed)
    plans = []
    for file, text in files:
        spans = choose_forms(candidate_forms(text), forms_per_file, rng, max_form_chars)
        if not spans:
            raise InputError(f"{file}: no top-level form to type besides the ns form")
        plans.extend(plan_form(file, text, s, e, rng, pause_ms) for s, e in spans)
    return plans


# ---------------------------------------------------------------------------------------------
# Replay


@dataclass
class KeyRecord:
    file: str
    form: int  # index into the plan
    key: int  # keystroke index within the form
    typed: str
    cold: bool
    ms: float  # keystroke to final verified suggestion, wall clock around engine.complete
    timings: dict[str, float] = field(default_factory=dict)
    source: str = "model"
    offered: bool = False
    matched: bool = False
    suggestion: str | None = None
    error: str | None = None
    file_first: bool = False  # the first keystroke typed in its file
    warmed: bool = False  # its file was warmed before it (file_first only)
    cut: dict[str, int] = field(default_factory=dict)  # what the deadline cut (CompletionResult.cut_by_deadline)


def suggestion_matches(suggestion: str | None, upcoming: str) -> bool:
    return bool(suggestion) and upcoming.startswith(suggestion)


@dataclass
class Replay:
    records: list[KeyRecord]
    interrupted: bool = False


def replay(engine: CompletingEngine, plans: list[FormPlan], every: int = 1, pause: bool = True,
           sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.perf_counter,
           progress: Callable[[str], None] | None = None, label: str = "",
           warm: Callable[[CompletionRequest], object] | None = None) -> Replay:
    """Type every `every`-th keystroke of each form through `engine`, one at a time. Ctrl-C stops the
    replay and keeps what was measured. `warm`: called with the buffer as it is opened (the cursor
    where the first form is typed) before the first keystroke of every other file, the 2nd, 4th, ..."""
    every = max(1, every)
    records: list[KeyRecord] = []
    owed_pause_ms = 0.0  # the intervals of the keystrokes skipped since the last replayed one
    files: list[str] = []
    try:
        for form_no, plan in enumerate(plans):
            file_first = plan.file not in files
            warmed = False
            if file_first:
                files.append(plan.file)
                if warm is not None and len(files) % 2 == 0:
                    warm(plan.opened())
                    warmed = True
            for key in plan.keystrokes:
                owed_pause_ms += key.pause_ms
                if key.index % every:
                    continue
                record = _type_key(engine, plan, form_no, key, cold=not records or key.index == 0, clock=clock)
                record.file_first, record.warmed = file_first, warmed
                file_first = warmed = False
                records.append(record)
                if pause:
                    # owed_pause_ms includes this key's interval; the request's time counts against it.
                    sleep(max(0.0, owed_pause_ms - record.ms) / 1000)
                owed_pause_ms = 0.0
            if progress:
                done = [r for r in records if r.form == form_no]
                ms = percentile([r.ms for r in done], 50)
                progress(f"  {label}: form {form_no + 1}/{len(plans)} ({Path(plan.file).name}:{plan.line}) "
                         f"{len(done)} keystrokes, p50 {ms if ms is None else round(ms)} ms")
    except KeyboardInterrupt:
        return Replay(records, interrupted=True)
    return Replay(records)


def _type_key(engine: CompletingEngine, plan: FormPlan, form_no: int, key: Keystroke, cold: bool,
              clock: Callable[[], float]) -> KeyRecord:
    request = plan.request(key)
    record = KeyRecord(plan.file, form_no, key.index, key.typed, cold, 0.0)
    started = clock()
    try:
        result = engine.complete(request)
    except CljassistError as exc:  # one failed keystroke is recorded, the replay goes on
        record.ms = (clock() - started) * 1000
        record.error = str(exc) or type(exc).__name__
        return record
    record.ms = (clock() - started) * 1000
    top = result.suggestions[0].text if result.suggestions else None
    record.timings = dict(result.timings)
    record.source = result.source
    record.cut = result.cut_by_deadline
    record.offered = top is not None
    record.suggestion = top
    record.matched = suggestion_matches(top, plan.upcoming(key))
    return record


# ---------------------------------------------------------------------------------------------
# Summaries


def _spread(values: list[float]) -> dict:
    p50, p95 = percentile(values, 50), percentile(values, 95)
    return {"n": len(values), "p50_ms": _round(p50), "p95_ms": _round(p95)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _share(count: int, total: int) -> float | None:
    return round(count / total, 3) if total else None


def summarize_path(records: list[KeyRecord]) -> dict:
    pipeline = [r for r in records if r.source == "model" and r.error is None]
    n = len(records)
    return {
        "keystrokes": n,
        "first_suggestion_ms": _round(records[0].ms) if records else None,
        "first_in_cold_file": _spread([r.ms for r in records if r.file_first and not r.warmed]),
        "first_in_warmed_file": _spread([r.ms for r in records if r.file_first and r.warmed]),
        "all": _spread([r.ms for r in records]),
        "cold": _spread([r.ms for r in records if r.cold]),
        "warm": _spread([r.ms for r in records if not r.cold]),
        "ran_model": _spread([r.ms for r in pipeline]),
        "ran_model_warm": _spread([r.ms for r in pipeline if not r.cold]),
        "stages": {stage: _spread([r.timings.get(stage, 0.0) for r in pipeline]) for stage in STAGES},
        "pipeline_keystrokes": len(pipeline),
        # of the keystrokes that ran the model, the share where the deadline cut something, by what it cut
        "deadline_cut_share": {stage: _share(sum(bool(r.cut.get(stage)) for r in pipeline), len(pipeline))
                               for stage in (CUT_GENERATION, CUT_VERIFICATION)},
        "type_through": _spread([r.ms for r in records if r.source == "type-through"]),
        "cache_share": {source: _share(sum(r.source == source for r in records), n) for source in CACHE_SOURCES},
        "offered_share": _share(sum(r.offered for r in records), n),
        "matched_share": _share(sum(r.matched for r in records), n),
        "errors": sum(r.error is not None for r in records),
    }


def _ratio(naive: float | None, ours: float | None) -> float | None:
    if naive is None or not ours:
        return None
    return round(naive / ours, 2)


def speedup(naive: dict, ours: dict) -> dict:
    return {"warm_p50": _ratio(naive["warm"]["p50_ms"], ours["warm"]["p50_ms"]),
            "warm_p95": _ratio(naive["warm"]["p95_ms"], ours["warm"]["p95_ms"])}


def same_keystrokes(ours: list[KeyRecord], naive: list[KeyRecord]) -> list[KeyRecord]:
    """Our records for exactly the keystrokes the naive path replayed."""
    replayed = {(r.form, r.key) for r in naive}
    return [r for r in ours if (r.form, r.key) in replayed]


@dataclass
class TypingRun:
    """Everything one `bench --typing` run measured; `report()` is the JSON written by --json."""

    plans: list[FormPlan]
    ours: Replay
    naive: Replay | None
    naive_every: int
    model_name: str = "?"
    repl: str = "off"
    model_load_ms: float | None = None
    options: dict = field(default_factory=dict)

    def report(self) -> dict:
        ours = summarize_path(self.ours.records)
        paths = {"ours": ours}
        result = {
            "model": self.model_name,
            "repl": self.repl,
            "model_load_ms": _round(self.model_load_ms),
            "options": dict(self.options, naive_every=self.naive_every),
            "percentiles": "nearest-rank",
            "forms": [{"file": p.file, "line": p.line, "chars": p.end - p.start, "keystrokes": len(p.keystrokes)}
                      for p in self.plans],
            "paths": paths,
            "speedup": None,
            "interrupted": self.ours.interrupted or (self.naive is not None and self.naive.interrupted),
            "records": {"ours": [asdict(r) for r in self.ours.records]},
        }
        if self.naive is not None:
            naive = summarize_path(self.naive.records)
            paths["naive"] = naive
            result["speedup"] = speedup(naive, ours)
            matched_ours = summarize_path(same_keystrokes(self.ours.records, self.naive.records))
            result["speedup_same_keystrokes"] = speedup(naive, matched_ours)
            result["records"]["naive"] = [asdict(r) for r in self.naive.records]
        return result


def file_warmer(engine) -> Callable[[CompletionRequest], object] | None:
    """How the replay warms a file before typing in it, as an editor's `warm` op does when it visits
    the file: the engine's warm (the daemon's `warm` op runs it)."""
    return engine.warm


def run_typing(model, settings, plans: list[FormPlan], provider=None, verifier=None,
               naive_every: int = DEFAULT_NAIVE_EVERY, pause: bool = True, naive: bool = True,
               progress: Callable[[str], None] | None = None, sleep: Callable[[float], None] = time.sleep,
               engine_factory=None, warmer=file_warmer) -> TypingRun:
    """Replay `plans` on our engine (settings as given), then on the naive one (every
    `naive_every`-th keystroke), sharing the model, provider and verifier. `warmer(engine)`: what
    warms a file on our engine before typing in it (None: nothing); the naive one warms nothing."""
    if engine_factory is None:
        from cljassist.engine import Engine

        engine_factory = Engine
    ours_engine = engine_factory(model, settings, provider, verifier)
    ours = replay(ours_engine, plans, 1, pause, sleep=sleep, progress=progress, label="ours",
                  warm=warmer(ours_engine))
    naive_run = None
    if naive and not ours.interrupted:
        naive_settings = settings.with_overrides(cache=False, reuse_prompt=False, prefetch=False)
        naive_engine = engine_factory(model, naive_settings, provider, verifier)
        naive_run = replay(naive_engine, plans, naive_every, pause, sleep=sleep, progress=progress, label="naive")
    return TypingRun(plans, ours, naive_run, naive_every, model_name=model.name)


# ---------------------------------------------------------------------------------------------
# Table


def _ms(value) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _pair(spread: dict) -> str:
    return f"{_ms(spread['p50_ms'])} / {_ms(spread['p95_ms'])}"


def _counted(spread: dict) -> str:
    return f"{_pair(spread)} ({spread['n']})"


TABLE_ROWS: tuple[tuple[str, Callable[[dict], str]], ...] = (
    ("keystrokes replayed", lambda s: str(s["keystrokes"])),
    ("first suggestion after start, ms", lambda s: _ms(s["first_suggestion_ms"])),
    ("first in a cold file p50 / p95 ms (files)", lambda s: _counted(s["first_in_cold_file"])),
    ("first in a warmed file p50 / p95 ms (files)", lambda s: _counted(s["first_in_warmed_file"])),
    ("cold keystrokes", lambda s: str(s["cold"]["n"])),
    ("cold p50 / p95 ms", lambda s: _pair(s["cold"])),
    ("warm keystrokes", lambda s: str(s["warm"]["n"])),
    ("warm p50 / p95 ms", lambda s: _pair(s["warm"])),
    ("pipeline runs", lambda s: str(s["pipeline_keystrokes"])),
    ("ran the model p50 / p95 ms", lambda s: _pair(s["ran_model"])),
    ("  of them warm p50 / p95 ms", lambda s: _counted(s["ran_model_warm"])),
    ("  deadline cut: generation / checks", lambda s: f"{_pct(s['deadline_cut_share'][CUT_GENERATION])} / "
                                                      f"{_pct(s['deadline_cut_share'][CUT_VERIFICATION])}"),
    ("  context p50 / p95 ms", lambda s: _pair(s["stages"]["context"])),
    ("  prompt eval p50 / p95 ms", lambda s: _pair(s["stages"]["prompt_eval"])),
    ("  generate p50 / p95 ms", lambda s: _pair(s["stages"]["generate"])),
    ("    of it draft p50 / p95 ms", lambda s: _pair(s["stages"]["draft"])),
    ("  model p50 / p95 ms", lambda s: _pair(s["stages"]["model"])),
    ("  steer p50 / p95 ms", lambda s: _pair(s["stages"]["steer"])),
    ("  verify p50 / p95 ms", lambda s: _pair(s["stages"]["verify"])),
    ("    of it REPL checks p50 / p95 ms", lambda s: _pair(s["stages"]["repl_checks"])),
    ("type-through keystrokes", lambda s: str(s["type_through"]["n"])),
    ("type-through p50 / p95 ms", lambda s: _pair(s["type_through"])),
    ("from cache: type-through", lambda s: _pct(s["cache_share"]["type-through"])),
    ("from cache: recent", lambda s: _pct(s["cache_share"]["recent"])),
    ("offered a suggestion", lambda s: _pct(s["offered_share"])),
    ("suggestion matched typed text", lambda s: _pct(s["matched_share"])),
    ("errors", lambda s: str(s["errors"])),
)


def format_typing_table(report: dict) -> str:
    names = list(report["paths"])
    header_cells = {"ours": "ours", "naive": f"naive (every {report['options']['naive_every']})"}
    rows = [("",) + tuple(header_cells.get(n, n) for n in names)]
    rows += [(label,) + tuple(cell(report["paths"][n]) for n in names) for label, cell in TABLE_ROWS]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    forms = report["forms"]
    files = len({f["file"] for f in forms})
    opts = report["options"]
    pause = "no pauses" if not opts.get("pause", True) else f"pauses ~{opts.get('pause_ms', DEFAULT_PAUSE_MS):g} ms/key"
    head = (f"typing replay: {files} file(s), {len(forms)} form(s), {sum(f['keystrokes'] for f in forms)} keystrokes; "
            f"model {report['model']} (loaded in {_ms(report['model_load_ms'])} ms); repl {report['repl']}; "
            f"n={opts.get('candidates', '?')}, max-new-tokens={opts.get('max_new_tokens', '?')}; {pause}; "
            f"percentiles nearest-rank")
    out = [head, *lines]
    if report.get("speedup"):
        sp = report["speedup"]
        out.append(f"speedup naive/ours: warm p50 {_times(sp['warm_p50'])}, warm p95 {_times(sp['warm_p95'])}")
    if report.get("interrupted"):
        out.append("(interrupted: partial results)")
    return "\n".join(out)


def _times(ratio) -> str:
    return "-" if ratio is None else f"{ratio:g}x"


# ---------------------------------------------------------------------------------------------
# Command


def bench_package_files(count: int, seed: int = 0, split=None, cache_dir: Path | None = None,
                        forms: int = 1, max_form_chars: int | None = DEFAULT_MAX_FORM_CHARS) -> list[Path]:
    """``count`` source files of the `bench` packages (split.toml), deterministically: the files
    with ``forms`` forms to type besides the ns form, each of at most ``max_form_chars`` (a file
    whose only forms are data tables of thousands of characters is not what anyone types), one
    package after the other in the split's order, each package's files in a seeded order. Fewer
    when the packages have fewer."""
    from cljassist.corpus import Split, library_sources
    from cljassist.fileio import read_source_file

    split = split or Split.load()
    streams: list[list[Path]] = []
    for package in split.bench:
        paths = [src.path for src in library_sources(package, cache_dir, split)]
        random.Random(f"{seed}|{package}").shuffle(paths)
        streams.append(paths)
    picked: list[Path] = []
    while len(picked) < count and any(streams):
        for stream in streams:
            while stream and len(picked) < count:
                path = stream.pop(0)
                try:
                    spans = candidate_forms(read_source_file(path))
                    typeable = sum(max_form_chars is None or e - s <= max_form_chars for s, e in spans) >= forms
                except CljassistError:  # too big, unreadable: not a file to type
                    typeable = False
                if typeable:
                    picked.append(path)
                    break
    return picked


def read_typing_files(names: list[str]) -> list[tuple[Path, str]]:
    from cljassist.fileio import read_source_file

    files = []
    for name in names:
        path = Path(name)
        if path.suffix in (".jsonl", ".json"):
            raise InputError(f"{path}: --typing takes Clojure source files (give a cases file without --typing)")
        files.append((path.resolve(), read_source_file(path)))
    return files


def run_typing_command(args) -> int:
    from cljassist.frontends.bootstrap import open_frontend, settings_from_args
    from cljassist.frontends.common import load_namespace

    for flag in ("limit", "sample", "compare"):
        if getattr(args, flag, None):
            raise InputError(f"--{flag} is for CASES.jsonl; it does not apply to --typing")
    if args.forms < 1 or args.naive_every < 1:
        raise InputError("--forms and --naive-every must be at least 1")
    names = list(args.typing or [])
    if args.typing_bench_files is not None:
        if args.typing_bench_files < 1:
            raise InputError("--typing-bench-files must be at least 1")
        names += [str(p) for p in bench_package_files(args.typing_bench_files, args.seed, forms=args.forms,
                                                                max_form_chars=args.max_form_chars)]
        if not names:
            raise InputError("--typing-bench-files: the bench packages have no Clojure sources here "
                             "(they are fetched with apt-get download on first use)")
    files = read_typing_files(names)
    # Ghost text shows one short suggestion: a short limit unless the flag was given (-n is the
    # as-you-type default, KEYSTROKE_CANDIDATES).
    if args.max_new_tokens is None:
        args.max_new_tokens = TYPING_MAX_NEW_TOKENS
    settings = settings_from_args(args, files[0][0], keystrokes=True)
    plans = plan_typing([(str(p), t) for p, t in files], args.forms, args.seed, args.pause_ms, args.max_form_chars)
    progress = lambda m: print(m, file=sys.stderr)  # noqa: E731
    with open_frontend(settings, near=files[0][0], no_repl=args.no_repl, explicit=args.nrepl is not None) as front:
        if front.provider is not None and args.load_ns:
            for _, text in files:
                load_namespace(front.provider, text)
        model_load_ms = front.opened.model_load_ms
        progress(f"REPL {front.repl_label}; model loaded in {model_load_ms:.0f} ms; "
                 f"{len(plans)} forms, {sum(len(p.keystrokes) for p in plans)} keystrokes")
        run = run_typing(front.engine.model, settings, plans, front.provider, front.engine.verifier,
                         naive_every=args.naive_every, pause=not args.no_pause, progress=progress)
    run.repl = front.repl_label
    run.model_load_ms = model_load_ms
    run.options = {"forms": args.forms, "seed": args.seed, "bench_files": args.typing_bench_files, "pause": not args.no_pause, "pause_ms": args.pause_ms,
                   "max_form_chars": args.max_form_chars, "candidates": settings.candidates,
                   "max_new_tokens": settings.max_new_tokens, "cache": settings.cache,
                   "reuse_prompt": settings.reuse_prompt}
    report = run.report()
    print(format_typing_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return 130 if report["interrupted"] else 0
