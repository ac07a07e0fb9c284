"""Honest confidence: fitting the score table, choosing the threshold, ranking and withholding by
score, the setting, the registry data, the bench keys the fit reads, and the fitting script."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
import tomllib
from pathlib import Path

import pytest

from cljassist.bench.run import run_case
from cljassist.calibration import (
    PLAIN, REPL_CHECKED, Calibration, CurvePoint, TopSuggestion, choose_threshold, fit_calibration, fit_steps,
    step_value, sweep,
)
from cljassist.cli import main
from cljassist.config import Settings, parse_config_text
from cljassist.engine import Engine
from cljassist.errors import InputError
from cljassist.frontends.protocol import result_reply
from cljassist.model.registry import REGISTRY_FILE, RegistryError, load_registry, parse_registry
from cljassist.rank import rank, withhold_below
from cljassist.types import Candidate, CompletionRequest
from tests.fakes import ScriptedModel

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("calibrate", ROOT / "scripts" / "calibrate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def noisy_points(seed: int, n: int = 300) -> list[tuple[float, bool]]:
    rng = random.Random(seed)
    points = []
    for _ in range(n):
        x = rng.random()
        points.append((x, rng.random() < x * x))  # right more often the more confident
    return points


# ----------------------------------------------------------------------------------- fitting

def test_the_fitted_table_is_monotone_within_0_1_and_the_same_for_the_same_data():
    points = noisy_points(1)
    steps = fit_steps(points)
    assert steps == fit_steps(list(points))  # deterministic
    assert len(steps) >= 3
    starts, probabilities = [s for s, _ in steps], [p for _, p in steps]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert probabilities == sorted(probabilities)
    assert 0 < probabilities[0] and probabilities[-1] < 1  # pulled off "never" and "always"
    assert probabilities[-1] > probabilities[0] + 0.3  # the signal is there


def test_violators_are_pooled_and_empty_bins_skipped():
    # right at low confidence, wrong at high: no monotone table can rise, so it is one step
    points = [(0.12, True)] * 4 + [(0.91, False)] * 4
    assert len(fit_steps(points)) == 1
    # two clusters far apart (the bins between empty): two steps, starting at the clusters' bins
    points = [(0.12, False)] * 6 + [(0.91, True)] * 6
    steps = fit_steps(points)
    assert [s for s, _ in steps] == [0.1, 0.9]
    assert steps[0][1] < 0.5 < steps[1][1]
    assert fit_steps([]) == ()


def test_step_value_reads_the_last_step_at_or_below():
    steps = ((0.2, 0.1), (0.5, 0.4), (0.8, 0.7))
    assert [step_value(steps, x) for x in (0.0, 0.2, 0.49, 0.5, 0.99, 1.0)] == [0.1, 0.1, 0.1, 0.4, 0.7, 0.7]


def test_the_repl_table_is_used_for_compiled_suggestions_and_plain_otherwise():
    calibration = Calibration({PLAIN: ((0.0, 0.1), (0.5, 0.3)), REPL_CHECKED: ((0.0, 0.2), (0.5, 0.6))}, 0.3)
    assert calibration.score(0.7, {"balanced": True, "compiles": True}) == 0.6
    assert calibration.score(0.7, {"balanced": True, "compiles": None}) == 0.3
    plain_only = Calibration({PLAIN: ((0.0, 0.1), (0.5, 0.3))}, 0.3)
    assert plain_only.score(0.7, {"compiles": True}) == 0.3  # no REPL table: the plain one


# -------------------------------------------------------------------------------- threshold

def test_sweep_counts_offered_precision_and_em_over_all_cases():
    scores = [(0.9, True), (0.9, False), (0.5, True), (0.2, False), (None, False)]
    curve = sweep(scores)
    assert [p.threshold for p in curve] == [0.0, 0.2, 0.5, 0.9]
    assert curve[0] == CurvePoint(0.0, 0.8, 0.5, 0.4)
    assert curve[2] == CurvePoint(0.5, 0.6, 2 / 3, 0.4)
    assert curve[3] == CurvePoint(0.9, 0.4, 0.5, 0.2)


def test_the_threshold_is_the_lowest_reaching_the_target_while_enough_is_offered():
    curve = [CurvePoint(0.0, 1.0, 0.2, 0.2), CurvePoint(0.3, 0.5, 0.5, 0.25), CurvePoint(0.6, 0.3, 0.7, 0.21),
             CurvePoint(0.9, 0.05, 1.0, 0.05)]
    assert choose_threshold(curve, 0.5, 0.1) == 0.3
    assert choose_threshold(curve, 0.65, 0.1) == 0.6
    # 100 % precision only below the offered floor: the most precise above it
    assert choose_threshold(curve, 0.9, 0.1) == 0.6
    assert choose_threshold(curve, 0.5, 1.5) == 0.0  # nothing keeps enough offered: show everything


def test_fit_calibration_chooses_a_threshold_that_raises_precision():
    cases = [TopSuggestion(x, PLAIN, ok) for x, ok in noisy_points(2)] + [TopSuggestion(None, PLAIN, False)] * 10
    calibration = fit_calibration(cases, 0.5, 0.1)
    assert calibration.min_score > 0 and "50%" in calibration.rule
    curve = {p.threshold: p for p in sweep([(calibration.score(c.confidence, {}) if c.confidence is not None
                                              else None, c.right) for c in cases])}
    assert curve[calibration.min_score].precision >= 0.5 > curve[0.0].precision
    assert curve[calibration.min_score].offered >= 0.1


# --------------------------------------------------------------------------------- ranking

def candidate(text: str, mean_logprob: float, **checks) -> Candidate:
    return Candidate(text, mean_logprob * 2, 2, "eos", {"balanced": True, **checks})


def test_ranking_scores_by_the_table_and_keeps_the_raw_confidence():
    calibration = Calibration({PLAIN: ((0.0, 0.05), (0.7, 0.4))}, 0.3)
    ranked = rank([candidate("a", -0.1), candidate("b", -1.0)], calibration=calibration)
    assert [(s.text, s.score) for s in ranked] == [("a", 0.4), ("b", 0.05)]
    assert ranked[0].confidence == pytest.approx(0.9048, abs=1e-4)
    assert [s.score for s in rank([candidate("a", -0.1)])] == [ranked[0].confidence]  # no table: raw


def test_a_candidate_not_compiled_on_purpose_is_offered_below_the_compiled_ones():
    not_checked = candidate("(m x)", -0.1, reads=True, compiles="not checked (macro my.app/m)")
    ranked = rank([not_checked, candidate("(f x)", -0.5, reads=True, compiles=True),
                   candidate("(g x)", -0.01, reads=True, compiles=False)])
    assert [s.text for s in ranked] == ["(f x)", "(m x)"]  # the failing one withheld
    assert ranked[1].checks["compiles"] == "not checked (macro my.app/m)" and ranked[1].error is None


def test_withholding_keeps_the_order_and_the_limit_counts_offered_only():
    calibration = Calibration({PLAIN: ((0.0, 0.05), (0.5, 0.2), (0.7, 0.4))}, 0.3)
    ranked = rank([candidate("a", -0.1), candidate("b", -0.6), candidate("c", -0.2), candidate("d", -2.0)],
                  calibration=calibration)
    offered, held = withhold_below(ranked, 0.3, limit=1)
    assert [s.text for s in offered] == ["a"] and [s.text for s in held] == ["b", "d"]
    offered, held = withhold_below(ranked, 0.0)
    assert [s.text for s in offered] == ["a", "c", "b", "d"] and held == []


class CalibratedScriptedModel(ScriptedModel):
    calibration = Calibration({PLAIN: ((0.0, 0.1), (0.72, 0.6))}, 0.5)


def test_the_engine_holds_back_by_the_models_threshold_and_min_score_overrides_it():
    model = CalibratedScriptedModel([("(inc x)", -0.1), ("(dec x)", -1.0)])
    request = CompletionRequest("(defn f [x]\n  ", ")\n")
    held = Engine(model, Settings(candidates=2, cache=False)).complete(request)
    assert [(s.text, s.score) for s in held.suggestions] == [("(inc x)", 0.6)]
    assert held.below_min_score == 1 and held.withheld == 1 and held.calibrated
    assert [s.text for s in held.held_back] == ["(dec x)"]
    reply = result_reply(held)
    assert reply["below_min_score"] == 1 and reply["calibrated"] is True
    assert reply["suggestions"][0]["score"] == 0.6 and 0.9 < reply["suggestions"][0]["confidence"] < 0.91

    everything = Engine(model, Settings(candidates=2, cache=False, min_score=0.0)).complete(request)
    assert [s.text for s in everything.suggestions] == ["(inc x)", "(dec x)"] and everything.below_min_score == 0
    stricter = Engine(model, Settings(candidates=2, cache=False, min_score=0.7)).complete(request)
    assert stricter.suggestions == [] and stricter.below_min_score == 2
    assert stricter.nothing_offered.startswith("no suggestion to offer (2 withheld, 2 of them scoring below")


def test_a_model_without_a_table_scores_raw_and_holds_nothing_back():
    result = Engine(ScriptedModel([("(inc x)", -3.0)]), Settings(candidates=1)).complete(
        CompletionRequest("(defn f [x]\n  ", ")\n"))
    assert not result.calibrated and result.below_min_score == 0
    assert result.suggestions[0].score == result.suggestions[0].confidence == pytest.approx(0.0498, abs=1e-4)


# --------------------------------------------------------------------------------- settings

def test_min_score_from_the_config_file_is_a_number_from_0_to_1():
    assert parse_config_text("{:min-score 0.25}") == {"min_score": 0.25}
    assert parse_config_text("{:min-score 1}") == {"min_score": 1.0}
    with pytest.raises(InputError, match=":min-score must be between 0 and 1, got 1.5"):
        parse_config_text("{:min-score 1.5}")
    with pytest.raises(InputError, match=":min-score must be a float"):
        parse_config_text('{:min-score "high"}')


def test_min_score_flag_is_range_checked(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["complete", "x.clj", "--min-score", "-0.1"])
    assert exit_info.value.code == 2
    assert "--min-score must be between 0 and 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["complete", "x.clj", "--min-score", "lots"])
    assert "not a number: 'lots'" in capsys.readouterr().err


# --------------------------------------------------------------------------------- registry

MODEL = """
[[model]]
name = "m"
description = "d"
license = "l"
fim_family = "left_to_right"
default = true
package = "p"
"""


def test_the_registry_reads_a_calibration_and_refuses_a_falling_table():
    table = ('\n[model.calibration]\ndate = "2026-12-06"\ncommand = "c"\nsource = "s"\ncases = "k"\nrule = "r"\n'
             'min_score = 0.3\nplain = [[0.0, 0.1], [0.5, 0.3]]\n')
    model = parse_registry(tomllib.loads(MODEL + table))["m"]
    assert model.calibration == Calibration({PLAIN: ((0.0, 0.1), (0.5, 0.3))}, 0.3, "r")
    assert model.calibration_record.command == "c"
    assert parse_registry(tomllib.loads(MODEL))["m"].calibration is None
    with pytest.raises(RegistryError, match="rising in both"):
        parse_registry(tomllib.loads(MODEL + table.replace("[0.5, 0.3]", "[0.5, 0.05]")))
    with pytest.raises(RegistryError, match="needs min_score"):
        parse_registry(tomllib.loads(MODEL + table.replace("min_score = 0.3\n", "")))


# ------------------------------------------------------------------------ bench and script

def test_the_bench_records_the_first_ranked_suggestion_even_when_held_back():
    model = CalibratedScriptedModel([("(dec x)", -1.0)])
    engine = Engine(model, Settings(candidates=1, cache=False))
    case = {"id": "c1", "category": "call", "prefix": "(defn f [x]\n  ", "suffix": ")\n", "middle": "(dec x)"}
    row = run_case(engine, case).to_json()
    assert row["offered"] is False and row["em"] is False  # held back: not offered
    assert row["top"] == "(dec x)" and row["top_em"] is True and row["below_min_score"] is True
    assert row["score"] == 0.1 and 0.36 < row["confidence"] < 0.37
    assert row["checks"]["balanced"] is True and row["n_tokens"] == 2 and row["margin"] is None


def bench_json(path: Path, points: list[tuple[float, bool]], repl: bool = False) -> Path:
    results = [{"id": str(i), "confidence": x, "top_em": ok, "checks": {"balanced": True, "compiles": repl or None},
                "margin": None, "n_tokens": 3} for i, (x, ok) in enumerate(points)]
    results.append({"id": "none", "confidence": None, "top_em": False, "checks": None, "margin": None,
                    "n_tokens": None})
    path.write_text(json.dumps({"model": "m", "repl": repl, "results": results}))
    return path


def test_the_script_writes_a_calibration_that_the_registry_reads_back(tmp_path):
    script = _script()
    registry = tmp_path / "models.toml"
    registry.write_text(REGISTRY_FILE.read_text(encoding="utf-8"))
    name = next(iter(load_registry()))
    runs = [script.read_run(str(bench_json(tmp_path / "a.json", noisy_points(3))) + "=no-repl"),
            script.read_run(str(bench_json(tmp_path / "b.json", noisy_points(4), repl=True)))]
    assert [r.label for r in runs] == ["no-repl", "b"]
    calibration = fit_calibration([c for r in runs for c in r.cases], 0.5, 0.1)
    assert set(calibration.tables) == {PLAIN, REPL_CHECKED}
    script.write_calibration(name, calibration, "python3 scripts/calibrate.py a.json", "x.png", "a.json: 301",
                             registry=registry)
    script.write_calibration(name, calibration, "again", "x.png", "a.json: 301", registry=registry)  # replaces
    text = registry.read_text()
    original = REGISTRY_FILE.read_text(encoding="utf-8")
    had_one = load_registry()[name].calibration is not None  # replaced, not added
    marker = "\n[model.calibration]\n"
    assert text.count(marker) == original.count(marker) + (0 if had_one else 1) and 'command = "again"' in text
    reread = parse_registry(tomllib.loads(text))
    assert reread[name].calibration == calibration
    others = {k: v for k, v in reread.items() if k != name}
    assert others == {k: v for k, v in load_registry().items() if k != name}  # the rest untouched


def test_the_script_prints_the_sweep_and_draws_the_curve(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    script = _script()
    png = tmp_path / "curve.png"
    code = script.main([str(bench_json(tmp_path / "a.json", noisy_points(5))), "--png", str(png)])
    out = capsys.readouterr().out
    assert code == 0 and png.stat().st_size > 0
    assert "threshold  offered  precision" in out and "<- chosen" in out and "held out (5-fold)" in out


def test_the_script_refuses_results_of_an_older_bench(tmp_path, capsys):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"results": [{"id": "1", "em": True}]}))
    assert _script().main([str(old)]) == 2
    assert "carry no 'confidence'" in capsys.readouterr().err
    assert _script().main([str(old), "--write"]) == 2
    assert "--write needs --model" in capsys.readouterr().err


# ------------------------------------------------------------------- the real default model

@pytest.mark.integration
def test_smollm2_suggestions_are_withheld_below_min_score_and_admitted_at_0(default_model, monkeypatch, tmp_path,
                                                                             capsys):
    # every raw confidence scores 0.2: the model's default threshold 0.5 holds all of them back
    monkeypatch.setattr(default_model, "calibration", Calibration({PLAIN: ((0.0, 0.2),)}, 0.5, "test"))
    request = CompletionRequest("(defn add-one [x]\n  (+ x ", "))\n")
    settings = Settings(candidates=2, max_new_tokens=16, cache=False)
    held = Engine(default_model, settings).complete(request)
    assert held.suggestions == [] and held.below_min_score >= 1 and held.calibrated
    assert all(s.score == 0.2 and 0 < s.confidence <= 1 for s in held.held_back)

    admitted = Engine(default_model, Settings(candidates=2, max_new_tokens=16, cache=False, min_score=0.2)).complete(
        request)
    assert [s.text for s in admitted.suggestions] == [s.text for s in held.held_back]
    assert admitted.below_min_score == 0

    # the command line: --min-score 0 shows them, with score and raw confidence
    monkeypatch.setattr("cljassist.frontends.common.load_model", lambda settings: default_model)
    monkeypatch.setattr(default_model, "close", lambda: None)
    source = tmp_path / "a.clj"
    source.write_text("(defn add-one [x]\n  (+ x <CURSOR>))\n")
    assert main(["complete", str(source), "--json", "--no-repl", "--max-new-tokens", "16", "--min-score", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["calibrated"] is True and out["below_min_score"] == 0 and out["suggestions"]
    assert all(s["score"] == 0.2 and 0 < s["confidence"] <= 1 for s in out["suggestions"])
    assert main(["complete", str(source), "--no-repl", "--max-new-tokens", "16"]) == 0
    assert "of them scoring below min-score" in capsys.readouterr().out


def test_a_symbol_the_repl_resolves_has_its_own_level_and_a_missing_level_reads_the_one_below():
    from cljassist.calibration import PLAIN, REPL_CHECKED, RESOLVED, Calibration, level_of

    assert level_of({"compiles": True, "resolves": True}) == RESOLVED
    assert level_of({"compiles": True}) == REPL_CHECKED and level_of({"balanced": True}) == PLAIN
    only_plain = Calibration({PLAIN: ((0.0, 0.1), (0.5, 0.3))}, 0.2)
    assert only_plain.score(0.6, {"compiles": True, "resolves": True}) == 0.3
    with_repl = Calibration({PLAIN: ((0.0, 0.1),), REPL_CHECKED: ((0.0, 0.2), (0.4, 0.5))}, 0.2)
    assert with_repl.score(0.45, {"compiles": True, "resolves": True}) == 0.5
    resolved = Calibration({PLAIN: ((0.0, 0.1),), REPL_CHECKED: ((0.0, 0.2),), RESOLVED: ((0.0, 0.7),)}, 0.2)
    assert resolved.score(0.3, {"compiles": True, "resolves": True}) == 0.7
    assert resolved.score(0.3, {"compiles": True}) == 0.2


def test_the_script_reads_a_run_saved_by_the_evidence_script(tmp_path):
    script = _script()
    bench = json.loads(bench_json(tmp_path / "a.json", noisy_points(3)).read_text())
    saved = tmp_path / "m@no-repl.json"
    saved.write_text(json.dumps({"model": "m", "variant": "no-repl", "report": bench}))
    assert len(script.read_run(str(saved)).cases) == len(bench["results"])
