"""scripts/compare_models.py (several models, one run, same cases) and scripts/checkpoint_em.py
(validation EM per training checkpoint).

The comparison is checked against `cljassist bench`'s own `run_bench` on the same model: with
scripted models (exact numbers), and with the real default GGUF loaded twice under two labels.
checkpoint_em runs on a tiny fake training run: two checkpoints holding small adapters written
here (numpy only, no torch needed), merged by the real exporter into the real base GGUF.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from cljassist.bench.run import WARM_UP_REQUEST, evenly_spaced, load_cases, run_bench
from cljassist.config import Settings
from cljassist.engine import Engine
from cljassist.errors import InputError
from tests.fakes import ScriptedModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import checkpoint_em  # noqa: E402
import compare_models  # noqa: E402

PUBLIC_BENCH = ROOT / "fixtures" / "bench" / "public.jsonl"
METRIC_KEYS = ("n", "offered", "EM", "precision", "ES", "balanced")  # everything but latency

CASES = [
    {"id": "c1", "prefix": "(defn twice [xs]\n  (map ", "suffix": " xs))\n", "middle": "inc",
     "category": "arg", "file": "a/core.clj", "ns": "a.core"},
    {"id": "c2", "prefix": "(defn total [xs]\n  (reduce ", "suffix": " 0 xs))\n", "middle": "+",
     "category": "arg", "file": "a/core.clj", "ns": "a.core"},
    {"id": "c3", "prefix": "(defn f [x]\n  (str/jo", "suffix": " \",\" x))\n", "middle": "in",
     "category": "symbol", "file": "a/core.clj", "ns": "a.core"},
]
SCRIPTS = {"good.gguf": ["inc"], "bad.gguf": ["+"]}


def needs_llama():
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install llama-cpp-python)")


def _without_latency(summary: dict) -> dict:
    return {k: summary[k] for k in METRIC_KEYS}


# ------------------------------------------------------------------ compare_models, scripted


@pytest.fixture
def scripted_specs(tmp_path):
    specs = []
    for label, name in (("good", "good.gguf"), ("bad", "bad.gguf")):
        path = tmp_path / name
        path.write_bytes(f"not really a model: {name}".encode())
        specs.append(compare_models.ModelSpec(label, path))
    return specs


def _scripted_loader(path: Path, settings: Settings):
    return ScriptedModel(SCRIPTS[path.name])


def test_scripted_comparison_equals_run_bench(scripted_specs):
    settings = Settings(candidates=1, max_new_tokens=16)
    runs = [compare_models.run_model(s, CASES, settings, load=_scripted_loader) for s in scripted_specs]
    report = compare_models.build_report(runs, Path("cases.jsonl"), CASES, settings, "off", None)

    for spec, run in zip(scripted_specs, runs):
        expected = run_bench(Engine(ScriptedModel(SCRIPTS[spec.path.name]), settings), CASES, False, "x")
        assert _without_latency(run.report["overall"]) == _without_latency(expected["overall"])
        assert {c: _without_latency(s) for c, s in run.report["by_category"].items()} == \
               {c: _without_latency(s) for c, s in expected["by_category"].items()}
        assert [r["suggestion"] for r in run.report["results"]] == [r["suggestion"] for r in expected["results"]]
    good, bad = runs
    assert good.report["overall"]["EM"] == 0.3333  # "inc" fills c1 only
    assert bad.report["overall"]["EM"] == 0.3333   # "+" fills c2 only
    assert good.report["by_category"]["arg"]["EM"] == bad.report["by_category"]["arg"]["EM"] == 0.5

    comparison = report["comparison"]
    assert comparison["baseline"] == "good"
    assert list(comparison["overall"]) == ["good", "bad"]
    assert list(comparison["by_category"]) == ["symbol", "arg"]  # bench's category order
    assert comparison["overall"]["good"]["EM_delta_points"] == 0.0
    assert comparison["overall"]["good"]["p50_ratio"] == 1.0
    for row in comparison["overall"].values():
        assert set(compare_models.OVERALL_KEYS) <= set(row)
    assert comparison["overall"]["bad"]["p50_ratio"] == pytest.approx(
        bad.report["overall"]["p50_ms"] / good.report["overall"]["p50_ms"], rel=1e-2)
    assert comparison["default_bar"]["models"]["bad"]["meets"] is False
    model = report["models"][0]
    assert model["label"] == "good" and len(model["sha256"]) == 64 and model["fim_family"] == "left_to_right"
    assert model["report"]["results"][0]["id"] == "c1"

    text, markdown = compare_models.format_text(report), compare_models.format_markdown(report)
    for out in (text, markdown):
        assert "EM delta vs good (points)" in out and "p50 ratio vs first" in out
        assert model["sha256"][:12] in out
    assert "| symbol | bad |" in markdown


def test_delta_points_against_the_first_model(scripted_specs, tmp_path):
    cases = [dict(CASES[0], id=f"c{i}") for i in range(4)]  # "inc" fills all four
    settings = Settings(candidates=1, max_new_tokens=16)
    runs = [compare_models.run_model(s, cases, settings, load=_scripted_loader) for s in reversed(scripted_specs)]
    comparison = compare_models.compare(runs)
    assert comparison["baseline"] == "bad"
    assert comparison["overall"]["good"]["EM_delta_points"] == 100.0
    assert comparison["by_category"]["arg"]["good"]["EM_delta_points"] == 100.0


def test_bad_model_specs(tmp_path):
    with pytest.raises(InputError, match="LABEL=PATH"):
        compare_models.parse_model_spec("just-a-path.gguf")
    with pytest.raises(InputError, match="no such file"):
        compare_models.parse_model_spec(f"x={tmp_path / 'missing.gguf'}")
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x")
    rc = compare_models.main([str(PUBLIC_BENCH), "--model", f"a={model}", "--model", f"a={model}", "--no-repl"])
    assert rc == 2


# ------------------------------------------------------------------ compare_models, real model


def test_real_model_twice_equals_run_bench(default_model_file, tmp_path):
    """The default GGUF under two labels: same numbers for both, and the same as run_bench.
    (Short cases: a public bench case takes ~20 s on this busy 2-core box.)"""
    needs_llama()
    cases_file, out_json, out_md = tmp_path / "cases.jsonl", tmp_path / "cmp.json", tmp_path / "cmp.md"
    cases_file.write_text("".join(json.dumps(c) + "\n" for c in CASES + [dict(CASES[0], id="c4")]))
    rc = compare_models.main([str(cases_file), "--model", f"a={default_model_file}",
                              "--model", f"b={default_model_file}", "--sample", "3", "--no-repl", "-n", "1",
                              "--max-new-tokens", "8", "--threads", "2",
                              "--json", str(out_json), "--markdown", str(out_md)])
    assert rc == 0
    report = json.loads(out_json.read_text())
    from cljassist.train.export import sha256_file

    assert report["cases"] == 3 and report["repl"].startswith("off")
    assert [m["label"] for m in report["models"]] == ["a", "b"]
    for m in report["models"]:
        assert m["sha256"] == sha256_file(default_model_file)
        assert m["fim_family"] == "left_to_right"  # the base has no FIM tokens
        assert m["report"]["cases"] == 3
    a, b = (m["report"] for m in report["models"])
    assert [r["suggestion"] for r in a["results"]] == [r["suggestion"] for r in b["results"]]
    assert _without_latency(a["overall"]) == _without_latency(b["overall"])
    assert report["comparison"]["overall"]["b"]["EM_delta_points"] == 0.0
    assert "## Per category" in out_md.read_text()

    # the same model through `cljassist bench`'s run_bench (fresh load, same settings, same warm-up)
    cases = evenly_spaced(load_cases(cases_file), 3)
    assert [c["id"] for c in cases] == ["c1", "c2", "c3"]
    settings = Settings(candidates=1, max_new_tokens=8, threads=2)
    model = compare_models.load_local_model(default_model_file, settings)
    try:
        Engine(model, settings).complete(WARM_UP_REQUEST, n=1)
        expected = run_bench(Engine(model, settings), cases, False, str(default_model_file))
    finally:
        model.close()
    assert [r["suggestion"] for r in a["results"]] == [r["suggestion"] for r in expected["results"]]
    assert _without_latency(a["overall"]) == _without_latency(expected["overall"])
    assert {c: _without_latency(s) for c, s in a["by_category"].items()} == \
           {c: _without_latency(s) for c, s in expected["by_category"].items()}


# ------------------------------------------------------------------ checkpoint_em


SOURCE = """(ns demo.util
  (:require [clojure.string :as str]))

(defn shout [s]
  (str/upper-case s))

(defn add [a b]
  (+ a b))
"""


def _fake_data(tmp_path: Path) -> tuple[Path, Path]:
    """A corpus with one file and a data dir whose valid.jsonl cuts two gaps (and one l2r chunk) from it."""
    corpus, data = tmp_path / "corpus", tmp_path / "data"
    (corpus / "files" / "libdemo-clojure" / "demo").mkdir(parents=True)
    (corpus / "files" / "libdemo-clojure" / "demo" / "util.clj").write_text(SOURCE)
    data.mkdir()
    rows = []
    for kind, middle in (("symbol", "case"), ("psm", "(+ a b)"), ("l2r", "(defn add [a b]\n")):
        start = SOURCE.index("upper-case") + len("upper-") if kind == "symbol" else SOURCE.index(middle)
        rows.append({"prompt": "(rendered prompt)", "completion": middle + "<|im_end|>", "kind": kind,
                     "order": "psm", "package": "libdemo-clojure", "path": "demo/util.clj",
                     "start": start, "end": start + len(middle)})
    (data / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "stats.json").write_text(json.dumps({"end_of_middle": "<|im_end|>"}))
    return data, corpus


def test_valid_items_are_rebuilt_from_the_corpus(tmp_path):
    data, corpus = _fake_data(tmp_path)
    items = checkpoint_em.valid_items(data, corpus)
    assert [i["category"] for i in items] == ["symbol", "psm"]  # the l2r chunk is not a gap
    symbol = items[0]
    assert symbol["prefix"].endswith("(str/upper-") and symbol["middle"] == "case"
    assert symbol["suffix"].startswith(" s))")
    assert all(i["prefix"] + i["middle"] + i["suffix"] == SOURCE for i in items)

    (corpus / "files" / "libdemo-clojure" / "demo" / "util.clj").write_text(SOURCE.replace("shout", "yell"))  # offsets move
    with pytest.raises(InputError, match="not the corpus the data was made from"):
        checkpoint_em.valid_items(data, corpus)


def test_checkpoint_selection(tmp_path):
    steps = [(s, tmp_path / f"step-{s:06d}") for s in (25, 50, 75, 100, 125)]
    assert checkpoint_em.select_checkpoints(steps, 1) == steps
    assert [s for s, _ in checkpoint_em.select_checkpoints(steps, 2)] == [50, 100, 125]
    assert [s for s, _ in checkpoint_em.select_checkpoints(steps, 5)] == [125]
    assert [s for s, _ in checkpoint_em.select_checkpoints(steps, 9)] == [125]


def _write_checkpoint(run_dir: Path, step: int, base: Path, scale: float) -> None:
    """A LoRA adapter on two q/v projections of layer 0 (shapes of SmolLM2-135M), as fit writes it."""
    from cljassist.train.export import sha256_file

    d = run_dir / "checkpoints" / f"step-{step:06d}"
    d.mkdir(parents=True)
    rng = np.random.default_rng(step)
    rank, shapes = 4, {"self_attn.q_proj": (576, 576), "self_attn.v_proj": (192, 576)}
    arrays = {}
    for name, (rows, cols) in shapes.items():
        arrays[f"model.layers.0.{name}.lora_A"] = (rng.standard_normal((rank, cols)) * 0.01).astype(np.float16)
        arrays[f"model.layers.0.{name}.lora_B"] = (rng.standard_normal((rows, rank)) * scale).astype(np.float16)
    np.savez(d / "adapter.npz", **arrays)
    meta = {"format": 1, "base_gguf_sha256": sha256_file(base), "base_file_name": base.name, "rank": rank,
            "alpha": 8.0, "targets": ["q_proj", "v_proj"], "fim_family": "cljassist_smollm2", "step": step,
            "tokens_seen": step * 1000}
    (d / "adapter.json").write_text(json.dumps(meta))
    (d / "state.json").write_text(json.dumps({"step": step}))


def test_checkpoint_em_on_a_tiny_run(default_model_file, tmp_path, capsys):
    needs_llama()
    pytest.importorskip("gguf")
    run_dir = tmp_path / "run"
    _write_checkpoint(run_dir, 1, default_model_file, 0.0)
    _write_checkpoint(run_dir, 2, default_model_file, 0.01)
    (run_dir / "checkpoints" / "step-000003.tmp").mkdir()  # a checkpoint being written: never read
    data, corpus = _fake_data(tmp_path)
    out = tmp_path / "em.jsonl"
    argv = [str(run_dir), "--valid", str(data), "--corpus", str(corpus), "--sample", "2",
            "--max-new-tokens", "8", "--threads", "2", "--out", str(out)]

    assert checkpoint_em.main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert r["n"] == 2 and 0.0 <= r["em"] <= 1.0 and 0.0 <= r["es"] <= 1.0 and r["ms_p50"] > 0
    assert rows[0]["fim_family"] == "left_to_right" and "left to right" in rows[0]["model"]
    assert rows[0]["checkpoint"] is None
    assert [r["fim_family"] for r in rows[1:]] == ["cljassist_smollm2"] * 2
    assert rows[2]["tokens_seen"] == 2000 and rows[2]["checkpoint"].endswith("step-000002")
    assert rows[1]["gguf_sha256"] != rows[2]["gguf_sha256"]  # each checkpoint's own merged GGUF

    # resumable: a second run measures nothing new; other items are refused, not mixed in
    assert checkpoint_em.main(argv) == 0
    assert len(out.read_text().splitlines()) == 3
    assert "already in" in capsys.readouterr().err
    other = [str(run_dir), "--valid", str(data), "--corpus", str(corpus), "--sample", "1", "--out", str(out)]
    assert checkpoint_em.main(other) == 2
    assert "other items or settings" in capsys.readouterr().err


# ------------------------------------------------------------------ the training-curve plot


def test_plot_adds_the_checkpoint_em_panel(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.image

    import plot_training_curve

    run = tmp_path / "run"
    run.mkdir()
    (run / "steps.jsonl").write_text("".join(json.dumps({"step": s, "loss": 4.0 - s / 10, "tokens_seen": s * 100}) + "\n"
                                             for s in range(1, 11)))
    (run / "curve.jsonl").write_text(json.dumps({"step": 10, "valid_loss": 3.0, "valid_token_acc": 0.5}) + "\n")
    assert plot_training_curve.main([str(run), str(tmp_path / "two.png")]) == 0
    (run / "checkpoint_em.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
        {"step": 0, "em": 0.05, "es": 0.2, "n": 2, "ms_p50": 10.0},
        {"step": 5, "em": 0.5, "es": 0.6, "n": 2, "ms_p50": 10.0},
        {"step": 10, "em": 0.5, "es": 0.7, "n": 2, "ms_p50": 10.0})))
    assert plot_training_curve.main([str(run), str(tmp_path / "three.png")]) == 0
    two, three = (matplotlib.image.imread(tmp_path / name) for name in ("two.png", "three.png"))
    assert three.shape[1] > two.shape[1] * 1.3  # a third panel, same height
    assert three.shape[0] == two.shape[0]
