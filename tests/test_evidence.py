"""scripts/evidence.py: saved runs are kept and skipped on resume, the tables come from the saved
per-case results, the default-model choice follows its rule, and README's default-models section
is what `evidence.py decide` prints from the inputs it names. One quick end-to-end run with SmolLM2."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path

import pytest

from cljassist.model.registry import AS_YOU_TYPE, ONE_SHOT, default_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import evidence  # noqa: E402

README = ROOT / "README.md"


def _case(i: int, category: str, xref: bool = False) -> dict:
    return {"id": f"c{i}", "prefix": "(ns a.b)\n(inc ", "suffix": ")\n", "middle": "1", "category": category,
            "ns": "a.b", "xref": xref}


CASES = [_case(1, "symbol", xref=True), _case(2, "symbol"), _case(3, "call", xref=True), _case(4, "call")]


@pytest.fixture
def cases_file(tmp_path) -> Path:
    path = tmp_path / "cases.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in CASES))
    return path


def _result(case: dict, em: bool, offered: bool = True, ms: float = 100.0, compiles=None) -> dict:
    return {"id": case["id"], "category": case["category"], "offered": offered,
            "suggestion": ("1" if em else "2") if offered else None, "em": em, "es": 1.0 if em else 0.0,
            "balanced": True if offered else None, "compiles": compiles, "ms": ms, "model_ms": ms / 2}


def _saved_run(selection, model: str, variant: str, ems: list[bool], ms: float = 100.0, repl: bool = False,
               report_model: str | None = None) -> dict:
    """A run as `evidence.py run` saves it, its bench report made by the bench's own make_report."""
    from cljassist.bench.metrics import CaseResult
    from cljassist.bench.run import make_report

    results = [CaseResult(**_result(c, em, ms=ms * (i + 1), compiles=True if repl else None))
               for i, (c, em) in enumerate(zip(CASES, ems))]
    return {"model": model, "variant": variant, "flags": [], "repl": repl, "command": ["cljassist", "bench"],
            "cases_file": selection.cases_file, "cases": len(selection.ids), "limit": None, "sample": None,
            "fingerprint": selection.fingerprint, "xref_ids": list(selection.xref_ids), "threads": 1,
            "wall_s": 1.0, "loadavg": [0.5, 0.7], "finished": "2026-12-07 10:00:00",
            "report": make_report(results, repl, report_model or model)}


def _save(out: Path, run: dict) -> None:
    path = evidence.run_path(out, run["model"], run["variant"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run))


# ------------------------------------------------------------------ saved runs and resuming


def test_the_selection_records_ids_xref_and_namespaces(cases_file):
    selection = evidence.selection_of(cases_file, None, 2)
    assert selection.ids == ("c1", "c3")  # evenly spaced, as the bench picks them
    assert selection.xref_ids == ("c1", "c3") and selection.namespaces == ("a.b",)
    assert selection.fingerprint != evidence.selection_of(cases_file, None, None).fingerprint


def test_resume_skips_saved_runs_and_refuses_other_cases(cases_file, tmp_path):
    selection = evidence.selection_of(cases_file, None, None)
    out = tmp_path / "out"
    _save(out, _saved_run(selection, "m1", "no-repl", [True] * 4))
    variants = [v for v in evidence.VARIANTS if v.name in ("no-repl", "repl")]
    todo = evidence.pending(["m1", "m2"], variants, evidence.load_runs(out), selection)
    assert [(m, v.name) for m, v in todo] == [("m1", "repl"), ("m2", "no-repl"), ("m2", "repl")]

    other = evidence.selection_of(cases_file, 2, None)
    with pytest.raises(evidence.InputError, match="ran other cases"):
        evidence.pending(["m1"], variants, evidence.load_runs(out), other)


def test_run_refuses_a_used_directory_without_resume(cases_file, tmp_path, capsys):
    selection = evidence.selection_of(cases_file, None, None)
    out = tmp_path / "out"
    _save(out, _saved_run(selection, "smollm2-135m", "no-repl", [True] * 4))
    code = evidence.main(["run", str(cases_file), "--out", str(out), "--models", "smollm2-135m",
                          "--variants", "no-repl"])
    assert code == 2 and f"go on with --resume {out}" in capsys.readouterr().err
    # resumed with nothing left to run, it only writes the report
    assert evidence.main(["run", str(cases_file), "--resume", str(out), "--models", "smollm2-135m",
                          "--variants", "no-repl"]) == 0
    assert "0 runs to do, 1 saved" in capsys.readouterr().err
    assert json.loads((out / "evidence.json").read_text())["runs"][0]["model"] == "smollm2-135m"


def test_the_peer_is_not_run_for_models_without_fim_tokens(cases_file):
    selection = evidence.selection_of(cases_file, None, None)
    peer = next(v for v in evidence.VARIANTS if v.name == "peer")
    assert peer.not_applicable("smollm2-135m") == "smollm2-135m has no FIM tokens (left_to_right)"
    assert peer.not_applicable("qwen2.5-coder-0.5b") is None
    todo = evidence.pending(["smollm2-135m", "qwen2.5-coder-0.5b"], [peer], [], selection)
    assert [(m, v.name) for m, v in todo] == [("qwen2.5-coder-0.5b", "peer")]


def test_a_failed_run_does_not_stop_the_others(cases_file, tmp_path, monkeypatch, capsys):
    selection = evidence.selection_of(cases_file, None, None)
    ran = []

    def run_one(cases, out, model, variant, selection_, threads, nrepl):
        ran.append(model)
        if model == "qwen2.5-coder-0.5b":
            raise evidence.CljassistError("qwen2.5-coder-0.5b@no-repl: cljassist bench exited with 2")
        _save(out, _saved_run(selection, model, variant.name, [True] * 4))

    monkeypatch.setattr(evidence, "run_one", run_one)
    code = evidence.main(["run", str(cases_file), "--out", str(tmp_path), "--models",
                          "qwen2.5-coder-0.5b,smollm2-135m", "--variants", "no-repl"])
    assert code == 1 and ran == ["qwen2.5-coder-0.5b", "smollm2-135m"]
    assert "failed, not saved (rerun with --resume" in capsys.readouterr().err
    assert [r["model"] for r in evidence.load_runs(tmp_path)] == ["smollm2-135m"]


def test_a_broken_saved_run_is_a_one_line_error(tmp_path):
    path = evidence.run_path(tmp_path, "m", "repl")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(evidence.InputError, match="not a saved run"):
        evidence.load_runs(tmp_path)


def test_variants_whose_flags_the_bench_does_not_take_are_skipped(monkeypatch):
    monkeypatch.setattr(evidence, "VARIANTS", evidence.VARIANTS + (
        evidence.Variant("future", ("--no-such-bench-flag",), False, "not there yet"),))
    usable, notes = evidence.choose_variants("no-repl,future")
    assert [v.name for v in usable] == ["no-repl"]
    assert notes == ["variant future skipped: this checkout's `cljassist bench` does not take --no-such-bench-flag"]
    with pytest.raises(evidence.InputError, match="unknown variants nope"):
        evidence.choose_variants("nope")


def test_the_bench_command_of_a_variant(cases_file, tmp_path):
    selection = evidence.selection_of(cases_file, 3, 2)
    repl = next(v for v in evidence.VARIANTS if v.name == "repl")
    command = evidence.bench_command(cases_file, "m", repl, selection, 1, "127.0.0.1:7", tmp_path / "o.json")
    assert command[1:4] == ["-m", "cljassist", "bench"]
    text = " ".join(command)
    assert "--model m --threads 1" in text and "--limit 3 --sample 2 --nrepl 127.0.0.1:7" in text
    plain = next(v for v in evidence.VARIANTS if v.name == "no-repl")
    assert "--no-repl" in evidence.bench_command(cases_file, "m", plain, selection, 1, None, tmp_path / "o.json")


# ------------------------------------------------------------------ tables


def test_tables_come_from_the_saved_reports(cases_file, tmp_path):
    selection = evidence.selection_of(cases_file, None, None)
    out = tmp_path / "out"
    _save(out, _saved_run(selection, "m1", "no-repl", [True, False, False, False]))
    _save(out, _saved_run(selection, "m1", "repl", [True, True, True, False], repl=True))
    merged = evidence.merged_evidence(evidence.load_runs(out))
    assert [r["variant"] for r in merged["runs"]] == ["no-repl", "repl"]  # the table's order, not the files'
    text = evidence.evidence_markdown(merged)

    overall = text.split("## Overall")[1]
    assert "| m1 | no-repl | 4 | 100.0 % | 25.0 % | 25.0 % | 0.25 | 100.0 % | - | 200 ms | 400 ms |" in overall
    assert "| m1 | repl | 4 | 100.0 % | 75.0 % | 75.0 % | 0.75 | 100.0 % | 100.0 % |" in overall
    per_category = text.split("## Per category")[1]
    assert "| category | model | n | EM no-repl | EM repl | precision no-repl | precision repl |" in per_category
    assert "| symbol | m1 | 2 | 50.0 % | 100.0 % | 50.0 % | 100.0 % |" in per_category
    assert "| call | m1 | 2 | 0.0 % | 50.0 % | 0.0 % | 50.0 % |" in per_category
    xref = text.split("(xref)")[1]
    assert "| m1 | no-repl | 2 | 50.0 % | 50.0 % | 2 | 0.0 % | 0.0 % |" in xref  # c1 (xref) right, c2 (not) wrong
    assert "| m1 | repl | 2 | 100.0 % | 100.0 % | 2 | 50.0 % | 50.0 % |" in xref


def test_runs_on_different_cases_do_not_merge(cases_file):
    a = _saved_run(evidence.selection_of(cases_file, None, None), "m1", "no-repl", [True] * 4)
    b = _saved_run(evidence.selection_of(cases_file, 2, None), "m2", "no-repl", [True] * 4)
    with pytest.raises(evidence.InputError, match="different cases"):
        evidence.merged_evidence([a, b])


def test_report_writes_json_and_markdown_and_prints_it(cases_file, tmp_path, capsys):
    selection = evidence.selection_of(cases_file, None, None)
    _save(tmp_path, _saved_run(selection, "m1", "no-repl", [True] * 4))
    assert evidence.main(["report", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert printed == (tmp_path / "evidence.md").read_text() and "## Overall" in printed
    saved = json.loads((tmp_path / "evidence.json").read_text())
    assert saved["cases"] == 4 and len(saved["runs"][0]["report"]["results"]) == 4  # per case, for calibration


# ------------------------------------------------------------------ the default choice


def _typing(model: str, warm: tuple[float, float], records: list[tuple[str, bool, float]], candidates: int = 3):
    return {"model": model, "repl": "off", "options": {"candidates": candidates},
            "paths": {"ours": {"warm": {"n": 10, "p50_ms": warm[0], "p95_ms": warm[1]}, "matched_share": 0.4,
                               "offered_share": 0.8}},
            "records": {"ours": [{"source": s, "cold": cold, "ms": ms, "error": None} for s, cold, ms in records]}}


def test_the_rule_picks_the_best_em_that_fits_else_the_fastest():
    rows = [{"model": "fast", "EM": 0.1, "p50_ms": 900, "fits": True},
            {"model": "good", "EM": 0.3, "p50_ms": 2500, "fits": True},
            {"model": "best", "EM": 0.5, "p50_ms": 8000, "fits": False}]
    assert evidence.choose(rows, evidence.ONE_SHOT_BUDGETS, "p50_ms")["model"] == "good"
    for r in rows:
        r["fits"] = False
    assert evidence.choose(rows, evidence.ONE_SHOT_BUDGETS, "p50_ms")["model"] == "fast"


def test_decision_tables_check_the_budgets_and_mark_the_choice(cases_file):
    selection = evidence.selection_of(cases_file, None, None)
    runs = [_saved_run(selection, "small", "no-repl", [True, False, False, False], ms=800, report_model="Small GGUF"),
            _saved_run(selection, "large", "no-repl", [True, True, True, False], ms=1200, report_model="Large GGUF"),
            _saved_run(selection, "large", "repl", [True] * 4, ms=1500, repl=True)]
    merged = evidence.merged_evidence(runs)
    shot = evidence.one_shot_rows(merged, ["no-repl"])
    assert [(r["model"], r["p50_ms"], r["fits"]) for r in shot] == [("small", 1600.0, True), ("large", 2400.0, True)]

    typing = [("t-small.json", _typing("Small GGUF", (120, 400), [("model", False, 100), ("model", True, 900),
                                                                  ("type-through", False, 1)])),
              ("t-large.json", _typing("Large GGUF", (350, 1900), [("model", False, 400)]))]
    rows = evidence.as_you_type_rows(merged, typing, "no-repl")
    assert [(r["model"], r["EM"], r["fits"], r["model_n"], r["model_p50_ms"]) for r in rows] == \
           [("small", 0.25, True, 1, 100), ("large", 0.75, False, 1, 400)]  # cold and cached keys left out

    text = evidence.decision_markdown(merged, typing, ["no-repl"], "python3 scripts/evidence.py decide ...")
    one_shot, as_you_type = text.split("**As you type**")
    assert "| large | no-repl | 75.0 % | 75.0 % | 2.40 s | 4.80 s | **chosen** |" in one_shot
    assert "| small | no-repl | 25.0 % | 25.0 % | 1.60 s | 3.20 s | fits |" in one_shot
    assert "budget p50 ≤ 3 s" in one_shot and "budget warm p50 ≤ 300 ms, warm p95 ≤ 800 ms" in as_you_type
    assert "| small | 3 | 25.0 % | 40.0 % | 80.0 % | 120 ms | 400 ms | 100 ms / 100 ms (1) | **chosen** |" in as_you_type
    assert "| large | 3 | 75.0 % |" in as_you_type and as_you_type.count("too slow") == 1
    assert evidence.RULE in text

    # latency from a run on a quieter machine: the large model now fits no more
    latency = evidence.merged_evidence([_saved_run(selection, "large", "no-repl", [True] * 4, ms=1700)])
    shot = evidence.one_shot_rows(merged, ["no-repl"], latency)
    assert [(r["model"], r["EM"], r["p50_ms"], r["fits"]) for r in shot] == [("small", 0.25, 1600.0, True),
                                                                          ("large", 0.75, 3400.0, False)]
    text = evidence.decision_markdown(merged, typing, ["no-repl"], "decide ...", latency)
    assert "| small | no-repl | 25.0 % | 25.0 % | 1.60 s * | 3.20 s * | **chosen** |" in text  # timed in the EM run
    assert "timed in the EM run only" in text
    assert "p50 and p95 from a separate run of 4 of those cases on a quieter machine" in text


def test_the_readme_section_is_replaced_between_its_markers():
    text = f"a\n{evidence.README_BEGIN}\nold\n{evidence.README_END}\nb\n"
    assert evidence.replace_between_markers(text, "new\n") == f"a\n{evidence.README_BEGIN}\nnew\n{evidence.README_END}\nb\n"
    with pytest.raises(evidence.InputError, match="default-models:begin"):
        evidence.replace_between_markers("no markers", "new\n")


def _section(text: str) -> str:
    match = re.search(re.escape(evidence.README_BEGIN) + r"\n(.*?)" + re.escape(evidence.README_END), text, re.S)
    assert match, "README.md has no default-models section"
    return match.group(1)


def check_default_models_section(section: str, capsys) -> bool:
    """The section is the placeholder (False), or (True) what the decide command it names prints,
    with the registry's defaults the models the tables chose."""
    if section == evidence.PLACEHOLDER + "\n":
        return False  # not measured yet, and says so in the words the script uses
    command = re.match(r"Generated by `(python3 scripts/evidence\.py decide [^`]*)`", section)
    assert command, "README.md's default-models section is neither the placeholder nor generated by evidence.py decide"
    assert evidence.main(shlex.split(command.group(1))[2:]) == 0
    assert capsys.readouterr().out == section, "README.md's default-models section differs from what " \
                                               f"`{command.group(1)} --readme README.md` writes: run it"
    for use, title in ((ONE_SHOT, "**One-shot**"), (AS_YOU_TYPE, "**As you type**")):
        table = section.split(title)[1].split("\n\n**")[0]
        chosen = [line.split("|")[1].strip() for line in table.splitlines() if "**chosen**" in line]
        assert chosen == [default_model(use).name], f"the registry's {use} default is not the model the table chose"
    return True


def test_the_readme_default_models_section_is_generated_and_agrees_with_the_registry(capsys):
    check_default_models_section(_section(README.read_text(encoding="utf-8")), capsys)


def test_decide_writes_a_section_that_the_readme_check_accepts(cases_file, tmp_path, capsys):
    selection = evidence.selection_of(cases_file, None, None)
    default = default_model(ONE_SHOT).name
    runs = [_saved_run(selection, default, "no-repl", [True, True, False, False], ms=500, report_model="Default"),
            _saved_run(selection, "slow-one", "no-repl", [True] * 4, ms=3000, report_model="Slow")]
    (tmp_path / "evidence.json").write_text(json.dumps(evidence.merged_evidence(runs)))
    (tmp_path / "typing.json").write_text(json.dumps(_typing("Default", (100, 300), [("model", False, 150)])))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{evidence.README_BEGIN}\n{evidence.PLACEHOLDER}\n{evidence.README_END}\nrest\n")
    assert evidence.main(["decide", "--evidence", str(tmp_path / "evidence.json"), "--typing",
                          str(tmp_path / "typing.json"), "--readme", str(readme)]) == 0
    printed = capsys.readouterr().out
    text = readme.read_text()
    assert text.endswith(f"{evidence.README_END}\nrest\n") and _section(text) == printed
    assert check_default_models_section(printed, capsys)
    assert "| slow-one | no-repl | 100.0 % | 100.0 % | 6.00 s | 12.00 s | too slow |" in printed


# ------------------------------------------------------------------ end to end


@pytest.mark.integration
def test_a_small_run_end_to_end_and_resumed(tmp_path, capsys, monkeypatch):
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")
    from cljassist.errors import ModelNotFound
    from cljassist.model.locate import model_path_to_load

    try:
        model_path_to_load("smollm2-135m")
    except ModelNotFound as exc:
        pytest.skip(f"SmolLM2 not installed: {exc}")
    variants = ",".join(v.name for v in evidence.VARIANTS if not v.repl and v.default
                        and evidence.known_bench_flags(v.flags))  # the peer too: SmolLM2 has no FIM tokens
    cases = ROOT / "fixtures" / "bench" / "public.jsonl"
    argv = ["run", str(cases), "--models", "smollm2-135m", "--variants", variants, "--sample", "2"]
    monkeypatch.chdir(tmp_path.parent)  # DIR given relative to here, as a user types it
    assert evidence.main(argv + ["--out", tmp_path.name]) == 0
    merged = json.loads((tmp_path / "evidence.json").read_text())
    assert [r["variant"] for r in merged["runs"]] == ["no-repl"]
    if "peer" in variants:
        assert "smollm2-135m@peer (smollm2-135m has no FIM tokens (left_to_right))" in \
               (tmp_path / "evidence.md").read_text()
    for run in merged["runs"]:
        assert run["report"]["cases"] == 2 and len(run["report"]["results"]) == 2
        assert run["report"]["repl"] is False and "--threads 1" in " ".join(run["command"])
    assert "## Overall" in capsys.readouterr().out
    saved = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*.json")}
    assert evidence.main(argv + ["--resume", str(tmp_path)]) == 0
    assert "0 runs to do" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*.json")} == saved


def test_a_model_left_out_of_among_is_shown_but_never_chosen(cases_file):
    selection = evidence.selection_of(cases_file, None, None)
    runs = [_saved_run(selection, "small", "no-repl", [True, False, False, False], ms=800),
            _saved_run(selection, "other", "no-repl", [True, True, True, False], ms=900)]
    text = evidence.decision_markdown(evidence.merged_evidence(runs), [], ["no-repl"], "decide ...",
                                      among=["small"], why_not="installed by hand")
    assert "| other | no-repl | 75.0 % | 75.0 % | 1.80 s | 3.60 s | not a default: installed by hand |" in text
    assert "| small | no-repl | 25.0 % | 25.0 % | 1.60 s | 3.20 s | **chosen** |" in text
    assert ", among `small`." in text
