"""`cljassist bench --typing`: the replay logic with a fake engine, the CLI wiring with a scripted
model, and one run on the real default model (no REPL, one short form, no pauses)."""

from __future__ import annotations

import json
import random

import pytest

from cljassist.bench.typing import (
    KeyRecord, candidate_forms, choose_forms, format_typing_table, keystroke_units, plan_form,
    plan_typing, replay, run_typing, summarize_path, suggestion_matches,
)
from cljassist.cli import EXIT_ERROR, main
from cljassist.clojure_text.closers import auto_paired_closers
from cljassist.clojure_text.reader import scan
from cljassist.config import Settings
from cljassist.types import CompletionRequest, CompletionResult, Suggestion, WarmResult
from tests.fakes import ScriptedModel

FILE = "(ns t.core)\n\n(a [b] \"c\")\n\n(def x 1)\n\n(defn g\n  [y]\n  (inc y))\n"


class FakeEngine:
    """Answers each request with `answer(request)` -> (text or None, source); records the requests."""

    def __init__(self, answer=lambda request: ("x", "model"), settings=None, clock=None, cost_ms=0.0):
        self.answer = answer
        self.settings = settings
        self.requests = []
        self.clock = clock
        self.cost_ms = cost_ms

    def complete(self, request):
        self.requests.append(request)
        if self.clock is not None:
            self.clock.now += self.cost_ms / 1000
        text, source = self.answer(request)
        timings = {"cache": 0.1} if source != "model" else {"context": 1.0, "model": 10.0, "verify": 2.0}
        return CompletionResult([Suggestion(text, 0.5)] if text is not None else [], 1.0, timings, source=source)

    def warm(self, request, cancelled=None):
        return WarmResult(0, "a fake engine has no model")


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def form_plan(text: str, form: str):
    start = text.index(form)
    return plan_form("t.clj", text, start, start + len(form), random.Random(0), 120.0)


# --- keystrokes and the auto-pairing buffer ---------------------------------------------------


def test_newline_with_its_indentation_is_one_keystroke():
    assert keystroke_units("(f\n  [a]\n\n x)") == ["(", "f", "\n  ", "[", "a", "]", "\n", "\n ", "x", ")"]
    assert keystroke_units("a\r\n  b") == ["a", "\r\n  ", "b"]


def test_suffix_at_each_keystroke_is_the_auto_paired_closers_then_the_rest_of_the_file():
    plan = form_plan(FILE, '(a [b] "c")')
    rest = FILE[FILE.index('(a [b] "c")') + len('(a [b] "c")'):]
    before = FILE[:FILE.index('(a [b]')]
    typed = [k.typed for k in plan.keystrokes]
    assert typed == list('(a [b] "c")')
    expected_closers = [")", ")", ")", "])", "])", ")", ")", '")', '")', ")", ""]
    requests = [plan.request(k) for k in plan.keystrokes]
    assert [r.suffix for r in requests] == [c + rest for c in expected_closers]
    assert [r.prefix for r in requests] == [before + '(a [b] "c")'[:i + 1] for i in range(11)]
    assert all(r.file == "t.clj" for r in requests)
    # Typing a closer moves over the auto-inserted one: once typed, the buffer is the file again.
    assert requests[-1].prefix + requests[-1].suffix == FILE


@pytest.mark.parametrize("typed,closers", [
    ("(f #(g", "))"),
    ("(f #{1", "})"),
    ('(re-find #"a(', '")'),
    ("(str \\(", ")"),  # a character literal opens nothing
    ("(str \\", ")"),  # right after the backslash: nothing new paired
    ('(f "a\\"', '")'),  # an escaped quote keeps the string open
    ("(f ; (note", "\n)"),  # in a comment the closers sit on the next line
])
def test_paired_closers_follow_the_reader(typed, closers):
    assert auto_paired_closers(scan(typed)) == closers


def test_multiline_form_buffers():
    plan = form_plan(FILE, "(defn g\n  [y]\n  (inc y))")
    newline_key = next(k for k in plan.keystrokes if k.typed == "\n  ")
    request = plan.request(newline_key)
    assert request.prefix.endswith("(defn g\n  ") and request.suffix == ")\n"
    assert plan.upcoming(newline_key) == "[y]\n  (inc y))"
    assert len(plan.keystrokes) == len("(defn g") + 1 + len("[y]") + 1 + len("(inc y))")


# --- form selection -----------------------------------------------------------------------------


def test_the_ns_form_is_never_typed():
    spans = candidate_forms(FILE)
    assert [FILE[s:e] for s, e in spans] == ['(a [b] "c")', "(def x 1)", "(defn g\n  [y]\n  (inc y))"]


def test_forms_are_evenly_spaced_seeded_and_in_file_order():
    spans = [(i * 10, i * 10 + 5) for i in range(30)]
    chosen = choose_forms(spans, 3, random.Random(7))
    assert chosen == sorted(chosen) and len(chosen) == 3
    assert [s[0] // 100 for s in chosen] == [0, 1, 2]  # one from each third
    assert chosen == choose_forms(spans, 3, random.Random(7))
    assert choose_forms(spans[:2], 3, random.Random(0)) == spans[:2]


def test_long_forms_only_when_nothing_shorter_is_left():
    spans = [(0, 1000), (1000, 1010), (1010, 2000)]
    assert choose_forms(spans, 1, random.Random(0), max_chars=400) == [(1000, 1010)]
    assert choose_forms(spans, 2, random.Random(0), max_chars=400) == [(1000, 1010), (1010, 2000)]


def test_plan_covers_each_file_and_rejects_a_file_with_only_an_ns_form():
    plans = plan_typing([("a.clj", FILE), ("b.clj", "(ns b)\n(def z 2)\n")], forms_per_file=2, seed=1)
    assert [p.file for p in plans] == ["a.clj", "a.clj", "b.clj"]
    assert plans[-1].form_text == "(def z 2)"
    with pytest.raises(Exception, match="no top-level form"):
        plan_typing([("c.clj", "(ns c)\n")])


def test_pauses_are_seeded_and_longer_after_spaces_and_newlines():
    a = plan_typing([("a.clj", FILE)], 3, seed=3, pause_ms=100.0)
    b = plan_typing([("a.clj", FILE)], 3, seed=3, pause_ms=100.0)
    assert [k.pause_ms for p in a for k in p.keystrokes] == [k.pause_ms for p in b for k in p.keystrokes]
    for key in (k for p in a for k in p.keystrokes):
        factor = 3 if key.typed.startswith("\n") else 2 if key.typed == " " else 1
        assert 50 * factor <= key.pause_ms <= 150 * factor


# --- replay -------------------------------------------------------------------------------------


def test_cold_is_the_first_keystroke_and_the_first_of_each_form():
    plans = plan_typing([("a.clj", FILE)], 3, seed=0)
    run = replay(FakeEngine(), plans, pause=False)
    cold = [(r.form, r.key) for r in run.records if r.cold]
    assert cold == [(0, 0), (1, 0), (2, 0)]
    assert len(run.records) == sum(len(p.keystrokes) for p in plans)


def test_naive_every_k_replays_each_forms_first_keystroke_and_every_kth():
    plans = plan_typing([("a.clj", FILE)], 3, seed=0)
    engine = FakeEngine()
    run = replay(engine, plans, every=4, pause=False)
    assert [(r.form, r.key) for r in run.records] == [
        (f, k.index) for f, p in enumerate(plans) for k in p.keystrokes if k.index % 4 == 0]
    assert [r.cold for r in run.records if r.key == 0] == [True] * 3
    assert len(engine.requests) == len(run.records)


def test_pause_is_the_typing_interval_minus_the_request_time():
    plans = plan_typing([("a.clj", "(ns a)\n(f x)\n")], 1, pause_ms=120.0)
    keys = plans[0].keystrokes
    clock, slept = FakeClock(), []
    replay(FakeEngine(clock=clock, cost_ms=50.0), plans, pause=True, sleep=slept.append, clock=clock)
    assert slept == pytest.approx([max(0.0, k.pause_ms - 50.0) / 1000 for k in keys])
    slept.clear()
    replay(FakeEngine(clock=clock, cost_ms=50.0), plans, every=2, sleep=slept.append, clock=clock)
    # the naive path waits out the intervals of the keystrokes it skipped too
    assert slept[0] == pytest.approx((keys[0].pause_ms - 50.0) / 1000)
    assert slept[1] == pytest.approx((keys[1].pause_ms + keys[2].pause_ms - 50.0) / 1000)
    slept.clear()
    replay(FakeEngine(clock=clock, cost_ms=50.0), plans, pause=False, sleep=slept.append, clock=clock)
    assert slept == []


def test_sources_matches_and_failures_are_recorded():
    plans = plan_typing([("a.clj", "(ns a)\n(inc 1)\n")], 1)

    def answer(request):
        typed = request.prefix.split("\n")[-1]
        if typed == "(i":
            return "nc 1", "model"  # matches what is typed next
        if typed == "(in":
            return "c 1", "type-through"
        if typed == "(inc":
            return " 2", "recent"  # offered, but not what is typed
        return None, "model"

    records = replay(FakeEngine(answer), plans, pause=False).records
    by_typed = {r.key: r for r in records}
    assert (by_typed[1].matched, by_typed[2].matched, by_typed[3].matched) == (True, True, False)
    assert by_typed[2].source == "type-through" and by_typed[2].timings == {"cache": 0.1}
    assert [r.offered for r in records] == [False, True, True, True, False, False, False]
    assert not suggestion_matches("", "abc") and not suggestion_matches("x", "")


def test_a_failing_keystroke_is_recorded_and_the_replay_goes_on():
    from cljassist.errors import ReplTimeout

    class Failing(FakeEngine):
        def complete(self, request):
            if len(self.requests) == 1:
                self.requests.append(request)
                raise ReplTimeout("llama said no")
            return super().complete(request)

    records = replay(Failing(), plan_typing([("a.clj", "(ns a)\n(f x)\n")], 1), pause=False).records
    assert len(records) == 5 and records[1].error == "llama said no" and not records[1].offered
    assert summarize_path(records)["errors"] == 1


# --- summaries ----------------------------------------------------------------------------------


def record(ms, cold=False, source="model", offered=True, matched=False, timings=None):
    return KeyRecord("a.clj", 0, 0, "x", cold, ms, timings or ({"context": ms / 10, "model": ms / 2, "verify": 1.0}
                                                               if source == "model" else {"cache": 0.1}),
                     source, offered, matched, "s" if offered else None)


def test_summary_nearest_rank_percentiles_and_shares():
    records = [record(1000.0, cold=True)] + [record(float(ms)) for ms in range(10, 110, 10)] + \
              [record(2.0, source="type-through", matched=True), record(3.0, source="recent", offered=False)]
    s = summarize_path(records)
    assert s["keystrokes"] == 13 and s["first_suggestion_ms"] == 1000.0
    assert s["cold"] == {"n": 1, "p50_ms": 1000.0, "p95_ms": 1000.0}
    # warm: 2, 3, 10..100 (12 values): nearest-rank p50 is the 6th, p95 the 12th
    assert s["warm"] == {"n": 12, "p50_ms": 40.0, "p95_ms": 100.0}
    assert s["stages"]["model"]["n"] == 11 and s["stages"]["model"]["p50_ms"] == 30.0  # over pipeline runs only
    assert s["type_through"] == {"n": 1, "p50_ms": 2.0, "p95_ms": 2.0}
    assert s["cache_share"] == {"type-through": round(1 / 13, 3), "recent": round(1 / 13, 3)}
    assert s["offered_share"] == round(12 / 13, 3) and s["matched_share"] == round(1 / 13, 3)


def test_empty_summary_has_no_numbers_rather_than_failing():
    s = summarize_path([])
    assert s["keystrokes"] == 0 and s["warm"]["p50_ms"] is None and s["offered_share"] is None


def test_run_typing_builds_ours_then_naive_on_the_same_model_and_repl():
    built = []

    def factory(model, settings, provider, verifier):
        engine = FakeEngine(settings=settings)
        built.append((model, settings, provider, verifier, engine))
        return engine

    model, provider, verifier = ScriptedModel([]), object(), object()
    settings = Settings(candidates=1, max_new_tokens=24)
    plans = plan_typing([("a.clj", FILE)], 2)
    run = run_typing(model, settings, plans, provider, verifier, naive_every=3, pause=False, engine_factory=factory)
    (m1, ours, p1, v1, _), (m2, naive, p2, v2, naive_engine) = built
    assert m1 is m2 is model and p1 is p2 is provider and v1 is v2 is verifier
    assert (ours.cache, ours.reuse_prompt) == (True, True)
    assert (naive.cache, naive.reuse_prompt, naive.prefetch) == (False, False, False)
    assert naive.candidates == 1 and naive.max_new_tokens == 24
    report = run.report()
    assert report["paths"]["ours"]["keystrokes"] == sum(len(p.keystrokes) for p in plans)
    assert report["paths"]["naive"]["keystrokes"] == len(naive_engine.requests) == \
        sum(1 for p in plans for k in p.keystrokes if k.index % 3 == 0)
    assert set(report["speedup"]) == {"warm_p50", "warm_p95"}
    assert report["percentiles"] == "nearest-rank" and len(report["records"]["naive"]) == len(naive_engine.requests)
    table = format_typing_table(report)
    assert "warm p50 / p95 ms" in table and "naive (every 3)" in table and "speedup naive/ours" in table


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_typing_with_a_scripted_model(tmp_path, capsys, monkeypatch):
    from cljassist.frontends import common

    source = tmp_path / "t.clj"
    source.write_text(FILE)
    out = tmp_path / "typing.json"
    monkeypatch.setattr(common, "load_model", lambda settings: ScriptedModel(["1)"]))
    code = main(["bench", "--typing", str(source), "--no-repl", "--no-pause", "--forms", "2", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(out.read_text())
    assert set(report["paths"]) == {"ours", "naive"} and report["repl"] == "off (--no-repl)"
    assert report["options"]["candidates"] == 1 and report["options"]["max_new_tokens"] == 24
    assert len(report["forms"]) == 2 and report["paths"]["ours"]["keystrokes"] > 0
    assert "keystrokes replayed" in printed and "speedup naive/ours" in printed


def test_cli_typing_keeps_explicit_n_and_max_new_tokens(tmp_path, capsys, monkeypatch):
    from cljassist.frontends import common

    source = tmp_path / "t.clj"
    source.write_text("(ns t)\n(f x)\n")
    out = tmp_path / "typing.json"
    monkeypatch.setattr(common, "load_model", lambda settings: ScriptedModel(["x"]))
    assert main(["bench", "--typing", str(source), "--no-repl", "--no-pause", "-n", "2", "--max-new-tokens", "9",
                 "--json", str(out)]) == 0
    options = json.loads(out.read_text())["options"]
    assert (options["candidates"], options["max_new_tokens"]) == (2, 9)


@pytest.mark.parametrize("argv,message", [
    (["bench", "--no-repl"], "bench needs CASES.jsonl"),
    (["bench", "cases.jsonl", "--typing", "a.clj"], "not both"),
    (["bench", "--typing", "cases.jsonl", "--no-repl"], "Clojure source files"),
    (["bench", "--typing", "a.clj", "--compare", "--no-repl"], "--compare is for CASES.jsonl"),
])
def test_cli_typing_argument_errors(capsys, argv, message):
    assert main(argv) == EXIT_ERROR
    assert message in capsys.readouterr().err


# --- the real default model ---------------------------------------------------------------------


def test_typing_replay_on_the_real_model(default_model, tmp_path):
    source = tmp_path / "tiny.clj"
    source.write_text("(ns tiny)\n\n(def xs [1 2])\n")
    plans = plan_typing([(str(source), source.read_text())], forms_per_file=1)
    assert plans[0].form_text == "(def xs [1 2])"
    settings = Settings(candidates=1, max_new_tokens=16)
    report = run_typing(default_model, settings, plans, naive_every=4, pause=False).report()
    ours, naive = report["paths"]["ours"], report["paths"]["naive"]
    assert ours["keystrokes"] == 14 and naive["keystrokes"] == 4  # keys 0, 4, 8, 12
    for path in (ours, naive):
        assert path["first_suggestion_ms"] > 0 and path["errors"] == 0
        assert path["cold"]["n"] == 1 and path["warm"]["p50_ms"] is not None and path["warm"]["p95_ms"] is not None
        assert 0.0 <= path["offered_share"] <= 1.0 and 0.0 <= path["matched_share"] <= 1.0
    assert naive["stages"]["model"]["p50_ms"] > 0  # the naive path always runs the model
    assert report["speedup"]["warm_p50"] > 0 and report["speedup"]["warm_p95"] > 0
    assert all(r["source"] in ("model", "type-through", "recent") for r in report["records"]["ours"])
    assert "speedup naive/ours" in format_typing_table(dict(report, model_load_ms=None))


# --- files of the bench packages, warmed and cold files, the stages ------------------------------


def _package_cache(tmp_path, packages: dict[str, dict[str, str]]):
    cache = tmp_path / "cache"
    for package, files in packages.items():
        for relative, text in files.items():
            path = cache / package / "src" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        (cache / package / ".complete").write_text("")
    return cache


def test_bench_package_files_are_typeable_library_files_of_the_bench_packages_taken_in_turn(tmp_path):
    from cljassist.bench.typing import bench_package_files
    from cljassist.corpus import Split

    split = Split(train=("libtrain-clojure",), bench=("liba-clojure", "libb-clojure"),
                  reserved=("libsecret-clojure",))
    cache = _package_cache(tmp_path, {
        "liba-clojure": {"a/one.clj": FILE, "a/two.clj": FILE, "a/only_ns.clj": "(ns a.only-ns)\n",
                         "project.clj": "(defproject a \"1\")\n", "_loose/usr/share/a/x.clj": FILE},
        "libb-clojure": {"b/one.cljc": FILE, "b/table.clj": "(ns b.table)\n(def table [" + "1 " * 300 + "])\n"},
        "libtrain-clojure": {"t/one.clj": FILE},
    })
    picked = bench_package_files(10, seed=0, split=split, cache_dir=cache)
    names = [p.relative_to(cache).as_posix() for p in picked]
    # never a build file, a loose copy, a file with nothing to type (or only a data table longer
    # than a typed form), or another split's package
    assert sorted(names) == ["liba-clojure/src/a/one.clj", "liba-clojure/src/a/two.clj",
                             "libb-clojure/src/b/one.cljc"]
    assert names[1] == "libb-clojure/src/b/one.cljc"  # the packages take turns
    first_two = bench_package_files(2, seed=0, split=split, cache_dir=cache)
    assert first_two == picked[:2] and bench_package_files(2, seed=0, split=split, cache_dir=cache) == first_two
    firsts = {bench_package_files(1, seed=seed, split=split, cache_dir=cache)[0].name for seed in range(8)}
    assert firsts == {"one.clj", "two.clj"}  # the seed orders each package's files


def test_every_other_file_is_warmed_before_its_first_keystroke_and_reported_apart():
    files = [(f"{name}.clj", "(ns t)\n(f x)\n") for name in "abcd"]
    plans = plan_typing(files, 1)
    warmed = []
    run = replay(FakeEngine(), plans, pause=False, warm=warmed.append)
    assert [r.file for r in warmed] == ["b.clj", "d.clj"]
    assert warmed[0] == CompletionRequest("(ns t)\n", "\n", "b.clj")  # the buffer as opened, before typing
    firsts = [(r.file, r.warmed) for r in run.records if r.file_first]
    assert firsts == [("a.clj", False), ("b.clj", True), ("c.clj", False), ("d.clj", True)]
    summary = summarize_path(run.records)
    assert summary["first_in_cold_file"]["n"] == 2 and summary["first_in_warmed_file"]["n"] == 2
    cold_only = summarize_path(replay(FakeEngine(), plans, pause=False).records)
    assert cold_only["first_in_cold_file"]["n"] == 4 and cold_only["first_in_warmed_file"]["p50_ms"] is None


def test_the_keystrokes_that_ran_the_model_and_each_stage_are_summarized():
    stages = {"context": 1.0, "prompt_eval": 20.0, "generate": 30.0, "draft": 5.0, "model": 52.0, "verify": 9.0,
              "repl_checks": 8.0}
    records = [record(100.0, cold=True, timings=stages), record(60.0, timings=stages),
               record(2.0, source="type-through")]
    s = summarize_path(records)
    assert s["ran_model"] == {"n": 2, "p50_ms": 60.0, "p95_ms": 100.0}
    assert s["ran_model_warm"] == {"n": 1, "p50_ms": 60.0, "p95_ms": 60.0}
    assert s["stages"]["prompt_eval"]["p50_ms"] == 20.0 and s["stages"]["draft"]["p95_ms"] == 5.0
    assert s["stages"]["steer"] == {"n": 2, "p50_ms": 0.0, "p95_ms": 0.0}  # a stage not run counts 0
    records[1].cut = {"verification": 2}
    assert summarize_path(records)["deadline_cut_share"] == {"generation": 0.0, "verification": 0.5}
    report = {"model": "m", "repl": "off", "model_load_ms": 1.0, "options": {"naive_every": 4},
              "forms": [{"file": "a.clj", "keystrokes": 3}], "paths": {"ours": s}}
    table = format_typing_table(report)
    for row in ("ran the model p50 / p95 ms", "prompt eval p50 / p95 ms", "of it draft", "of it REPL checks",
                "first in a cold file", "first in a warmed file", "deadline cut: generation / checks"):
        assert row in table


def test_cli_typing_over_files_of_the_bench_packages(tmp_path, capsys, monkeypatch):
    from cljassist.bench import typing as typing_module
    from cljassist.frontends import common

    source = tmp_path / "lib" / "t.clj"
    source.parent.mkdir()
    source.write_text(FILE)
    asked = []

    def files(count, seed, forms, max_form_chars):
        asked.append((count, seed, forms, max_form_chars))
        return [source]

    monkeypatch.setattr(typing_module, "bench_package_files", files)
    monkeypatch.setattr(common, "load_model", lambda settings: ScriptedModel(["1)"]))
    out = tmp_path / "typing.json"
    code = main(["bench", "--typing-bench-files", "3", "--seed", "5", "--no-repl", "--no-pause", "--forms", "1",
                 "--json", str(out)])
    assert code == 0, capsys.readouterr()
    assert asked == [(3, 5, 1, 400)]
    report = json.loads(out.read_text())
    assert report["options"]["bench_files"] == 3 and report["forms"][0]["file"] == str(source)
    assert main(["bench", "--typing-bench-files", "0", "--no-repl"]) == EXIT_ERROR
    assert "--typing-bench-files must be at least 1" in capsys.readouterr().err


def test_what_the_deadline_cut_is_recorded_per_keystroke():
    from cljassist.types import CUT_VERIFICATION, Candidate

    class CuttingEngine(FakeEngine):
        def complete(self, request):
            result = super().complete(request)
            result.candidates = [Candidate("x", -0.1, 1, "stop"), Candidate("y", -0.5, 1, "stop", cut=CUT_VERIFICATION)]
            return result

    records = replay(CuttingEngine(), plan_typing([("a.clj", "(ns a)\n(f x)\n")], 1), pause=False).records
    assert records and all(r.cut == {"verification": 1} for r in records)
    assert summarize_path(records)["deadline_cut_share"]["verification"] == 1.0
