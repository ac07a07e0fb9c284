"""The whole path for real: Debian nREPL + the bundled GGUF model, through the CLI and the engine."""

import json
import shutil
from pathlib import Path

import pytest

from cljassist.cli import main
from cljassist.clojure_text.reader import imbalance
from cljassist.config import Settings
from cljassist.context import ReplContextProvider
from cljassist.engine import Engine
from cljassist.types import CompletionRequest
from tests.fakes import RecordingModel

pytestmark = pytest.mark.integration
DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "demo"


def use_session_model(monkeypatch, model) -> None:
    """The command uses the session's model (loaded once) and leaves it open for the next test."""
    monkeypatch.setattr("cljassist.frontends.common.load_model", lambda settings: model)
    monkeypatch.setattr(model, "close", lambda: None)


def test_cli_completes_with_json_and_the_repl(nrepl_server, default_model, tmp_path, capsys, monkeypatch):
    source = tmp_path / "todo.clj"
    shutil.copy(DEMO / "src" / "demo" / "todo.clj", source)
    model = RecordingModel(default_model)
    monkeypatch.setattr("cljassist.frontends.common.load_model", lambda settings: model)  # load once per session
    code = main(["complete", str(source), "--json", "--load-ns", "--nrepl", f"{nrepl_server.host}:{nrepl_server.port}"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(out) >= {"suggestions", "ms", "timings"}
    assert out["repl"] == "used" and out["namespace"] == "demo.todo"
    # the model read the live namespace: its aliases, and core/tag-counts used by the form at the cursor
    assert len(model.prompts) == 1
    assert ";; In namespace demo.todo, the running program knows:" in model.prompts[0]
    assert "demo.core/tag-counts" in model.prompts[0]
    text = source.read_text()
    prefix, suffix = text.split("<CURSOR>")
    assert out["suggestions"], f"nothing suggested; timings {out['timings']}"
    for s in out["suggestions"]:
        assert set(s) == {"text", "score", "confidence", "checks"} and 0 < s["score"] <= 1 and 0 < s["confidence"] <= 1
        assert imbalance(prefix + s["text"] + suffix) <= imbalance(prefix + suffix)
        # checked in the REPL, and only what compiles is offered (no --show-failing)
        assert s["checks"]["balanced"] is True and s["checks"]["reads"] is True and s["checks"]["compiles"] is True


def test_engine_uses_live_namespace_context(nrepl_server, nrepl_client, default_model):
    nrepl_client.eval("(require 'demo.core)", timeout=60)
    text = (DEMO / "src" / "demo" / "core.clj").read_text()
    offset = text.index("(str/join") + len("(str/jo")
    model = RecordingModel(default_model)
    engine = Engine(model, Settings(candidates=3), ReplContextProvider(nrepl_client))
    result = engine.complete(CompletionRequest.at_offset(text, offset, "demo/core.clj"))
    assert result.namespace == "demo.core" and result.repl == "used"
    assert result.timings["context"] > 0 and result.timings["model"] > 0
    # the prompt carries the live namespace's context, right before the form at the cursor: the var
    # matching the symbol being typed (str/jo...) comes from the running REPL, not from the file
    (prompt,) = model.prompts
    header = ";; In namespace demo.core, the running program knows:"
    assert header in prompt
    block = prompt[prompt.index(header):]
    assert ";;   clojure.string/join " in block
    assert block.index("clojure.string/join") < block.index("(str/jo")
    assert result.suggestions, f"nothing suggested; candidates {result.candidates}"
    assert all(imbalance(text[:offset] + s.text + text[offset:]) <= imbalance(text) for s in result.suggestions)


def test_engine_without_repl_still_completes(default_model):
    model = RecordingModel(default_model)
    engine = Engine(model, Settings(candidates=2, max_new_tokens=24))
    request = CompletionRequest("(defn add-one [x]\n  (+ x ", "))\n")
    result = engine.complete(request)
    assert result.repl == "off" and result.source == "model"
    (prompt,) = model.prompts
    assert "(+ x " in prompt and "the running program knows" not in prompt
    assert 1 <= len(result.suggestions) <= 2, f"nothing suggested; candidates {result.candidates}"
    for s in result.suggestions:
        assert s.text.strip()
        assert s.checks["balanced"] is True and s.checks["compiles"] is None  # no REPL: not judged
        assert imbalance(request.prefix + s.text + request.suffix) <= imbalance(request.prefix + request.suffix)


def test_bench_command_runs_public_cases(default_model, tmp_path, capsys, monkeypatch):
    use_session_model(monkeypatch, default_model)
    out_json = tmp_path / "r.json"
    cases = Path(__file__).resolve().parents[1] / "fixtures" / "bench" / "public.jsonl"
    code = main(["bench", str(cases), "--limit", "6", "--no-repl", "--json", str(out_json), "--max-new-tokens", "24"])
    assert code == 0
    report = json.loads(out_json.read_text())
    assert report["cases"] == 6 and report["repl"] is False and report["overall"]["compiles"] is None
    assert "overall" in capsys.readouterr().out


def test_bench_command_with_repl_loads_case_namespaces(nrepl_server, default_model, tmp_path, capsys, monkeypatch):
    use_session_model(monkeypatch, default_model)
    case = {"id": "demo-1", "category": "symbol", "ns": "demo.core", "file": "demo/core.clj", "package": "demo",
            "xref": False, "prefix": "(ns demo.core (:require [clojure.string :as str]))\n(defn f [xs] (str/jo",
            "suffix": "in \",\" xs))\n", "middle": "in"}
    cases = tmp_path / "cases.jsonl"
    cases.write_text(json.dumps(case) + "\n")
    out_json = tmp_path / "r.json"
    code = main(["bench", str(cases), "--nrepl", f"{nrepl_server.host}:{nrepl_server.port}", "--json", str(out_json),
                 "--max-new-tokens", "16"])
    assert code == 0
    assert "loaded 1 of 1 case namespaces" in capsys.readouterr().err
    assert json.loads(out_json.read_text())["repl"] is True


def test_stale_port_file_warns_and_completes_without_repl(default_model, tmp_path, capsys, monkeypatch):
    use_session_model(monkeypatch, default_model)
    (tmp_path / ".nrepl-port").write_text("1")  # nothing listens on port 1
    source = tmp_path / "a.clj"
    source.write_text("(ns a)\n(defn inc2 [x] (+ x <CURSOR>))\n")
    code = main(["complete", str(source), "--json", "--max-new-tokens", "16"])
    captured = capsys.readouterr()
    assert code == 0
    assert "warning" in captured.err and "completing without the REPL" in captured.err
    assert json.loads(captured.out)["repl"].startswith("off (unreachable")


def test_load_ns_evaluates_the_ns_form_of_a_file_that_cannot_load_yet(nrepl_server, default_model, tmp_path, capsys,
                                                                      monkeypatch):
    use_session_model(monkeypatch, default_model)
    source = tmp_path / "pending.clj"
    source.write_text("(ns e2e.pending\n  (:require [clojure.string :as str]))\n\n(defn f [xs]\n  (str/jo<CURSOR> xs))\n")
    endpoint = f"{nrepl_server.host}:{nrepl_server.port}"
    main(["complete", str(source), "--json", "--nrepl", endpoint, "--max-new-tokens", "8"])
    assert json.loads(capsys.readouterr().out)["repl"] == "ns-not-loaded"  # never loaded silently
    main(["complete", str(source), "--json", "--nrepl", endpoint, "--max-new-tokens", "8", "--load-ns"])
    assert json.loads(capsys.readouterr().out)["repl"] == "used"
