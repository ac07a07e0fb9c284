import json

import pytest

from cljassist.bench.metrics import CaseResult, edit_similarity, exact_match, levenshtein, percentile, summarize
from cljassist.bench.run import format_table, load_cases, run_bench
from cljassist.config import Settings
from cljassist.engine import Engine
from cljassist.errors import InputError
from tests.fakes import ScriptedModel


def test_exact_match_collapses_whitespace_runs():
    assert exact_match("(inc   x)\n", "(inc x)")
    assert not exact_match(None, "x")
    assert not exact_match("(inc y)", "(inc x)")


def test_edit_similarity():
    assert levenshtein("kitten", "sitting") == 3
    assert edit_similarity("abc", "abc") == 1.0
    assert edit_similarity(None, "abc") == 0.0
    assert edit_similarity("abd", "abc") == pytest.approx(2 / 3)


def test_percentile_nearest_rank():
    assert percentile([5, 1, 3, 2, 4], 50) == 3
    assert percentile(list(range(1, 101)), 95) == 95
    assert percentile([], 50) is None


def test_summary_shares():
    mk = lambda i, offered, em: CaseResult(str(i), "arg", offered, "x" if offered else None, em,  # noqa: E731
                                           1.0 if em else 0.0, True if offered else None, None, 10.0 * i, 5.0 * i)
    s = summarize([mk(1, True, True), mk(2, True, False), mk(3, False, False), mk(4, True, True)], repl=False)
    assert s["offered"] == 0.75 and s["EM"] == 0.5 and s["precision"] == pytest.approx(0.6667, abs=1e-3)
    assert s["compiles"] is None and s["model_share"] == 0.5


def test_load_cases_reports_the_bad_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"id": "a", "prefix": "", "suffix": "", "middle": "x", "category": "arg"}) + "\n{oops\n")
    with pytest.raises(InputError, match="line 2"):
        load_cases(path)
    path.write_text(json.dumps({"id": "a", "prefix": "", "suffix": ""}) + "\n")
    with pytest.raises(InputError, match="middle"):
        load_cases(path)


def test_run_bench_report_has_format_keys():
    cases = [
        {"id": "c1", "prefix": "(defn f [x]\n  (inc ", "suffix": "))\n", "middle": "x", "category": "arg"},
        {"id": "c2", "prefix": "(str/jo", "suffix": " \", \" xs)", "middle": "in", "category": "symbol"},
    ]
    engine = Engine(ScriptedModel(["x))"]), Settings(candidates=1))
    report = run_bench(engine, cases, repl_used=False, model_name="scripted")
    assert set(report) >= {"cases", "model", "repl", "overall", "by_category", "results"}
    assert report["overall"]["n"] == 2 and report["overall"]["EM"] == 0.5
    assert list(report["by_category"]) == ["symbol", "arg"]
    assert report["results"][0]["em"] is True
    assert "overall" in format_table(report)


def test_evenly_spaced_sample_spreads_over_the_file():
    from cljassist.bench.run import evenly_spaced

    cases = [{"id": str(i)} for i in range(10)]
    assert [c["id"] for c in evenly_spaced(cases, 3)] == ["0", "3", "6"]
    assert evenly_spaced(cases, 20) == cases


def test_starts_with_reference_needs_the_whole_reference_up_to_a_token_end():
    from cljassist.bench.metrics import starts_with_reference

    assert starts_with_reference("(inc x)", "(inc x)")
    assert starts_with_reference("(inc x))\n  (dec y)", "(inc x)")
    assert starts_with_reference("count xs)", "count")
    assert not starts_with_reference("counter xs", "count")  # a word further: accept-word takes "counter"
    assert not starts_with_reference("(inc", "(inc x)")
    assert not starts_with_reference(None, "x") and not starts_with_reference("x", "")
