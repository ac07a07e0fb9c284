"""The declared interfaces hold: every model and context provider, real or fake, implements its
protocol with the same parameters, and the shared types stay free of heavy imports."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from cljassist.context import ReplContextProvider
from cljassist.engine import Engine
from cljassist.model.llama import LocalModel
from cljassist.model.remote import FallbackModel, RemoteModel
from cljassist.types import (
    CompletionEngine,
    CompletionModel,
    CompletionResult,
    ContextProvider,
    ReplStatus,
    Suggestion,
    checks_passed,
    judged,
    suggestion_dict,
)
from tests.fakes import FakeEngine, RecordingModel, ScriptedModel
from tests.test_keystroke_speed import _FakeRepl, _PreloadingModel
from tests.test_proxy import GatedModel

MODEL_CLASSES = [LocalModel, RemoteModel, FallbackModel, ScriptedModel, RecordingModel, _PreloadingModel, GatedModel]


def _protocol_methods(protocol) -> list[str]:
    return [name for name, value in vars(protocol).items()
            if callable(value) and not name.startswith("_")]


def _parameters(function) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("cls", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_every_model_class_has_the_protocols_methods_and_parameters(cls):
    methods = _protocol_methods(CompletionModel)
    assert {"generate_candidates", "count_tokens", "preload", "forget", "close"} <= set(methods)
    for name in methods:
        implementation = getattr(cls, name, None)
        assert implementation is not None, f"{cls.__name__} lacks {name}"
        assert [p[0] for p in _parameters(implementation)] == [p[0] for p in _parameters(getattr(CompletionModel, name))], \
            f"{cls.__name__}.{name} has other parameters than CompletionModel.{name}"
        assert _parameters(implementation) == _parameters(getattr(CompletionModel, name)), \
            f"{cls.__name__}.{name}: kinds or defaults differ from CompletionModel.{name}"


def test_model_instances_satisfy_the_protocol():
    remote = RemoteModel("http://127.0.0.1:9/infill")  # nothing listens: building it needs no server
    models = [ScriptedModel(["x"]), remote, FallbackModel(remote, lambda: ScriptedModel(["x"])),
              _PreloadingModel(["x"], _FakeRepl([])), GatedModel(["x"]), RecordingModel(ScriptedModel(["x"]))]
    for model in models:
        assert isinstance(model, CompletionModel), type(model).__name__


def test_the_local_model_satisfies_the_protocol(default_model):
    assert isinstance(default_model, CompletionModel)


def test_context_providers_satisfy_their_protocol():
    assert _parameters(ReplContextProvider.gather) == _parameters(ContextProvider.gather)
    assert isinstance(ReplContextProvider.connection_stamp, property)
    assert _parameters(_FakeRepl.gather) == _parameters(ContextProvider.gather)
    assert isinstance(_FakeRepl([]), ContextProvider)


def test_the_engine_and_its_fakes_satisfy_the_front_ends_protocol():
    for name in _protocol_methods(CompletionEngine):
        assert _parameters(getattr(Engine, name)) == _parameters(getattr(CompletionEngine, name)), name
        assert _parameters(getattr(FakeEngine, name)) == _parameters(getattr(CompletionEngine, name)), name
    engine = Engine(ScriptedModel(["x"]))
    assert isinstance(engine, CompletionEngine) and isinstance(FakeEngine(), CompletionEngine)
    engine.close()


def test_the_shared_types_import_nothing_heavy():
    code = ("import sys, cljassist.types; heavy = [m for m in ('numpy', 'llama_cpp', 'cljassist.engine') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_repl_status_renders_as_the_front_ends_always_showed_it():
    assert CompletionResult([], 1.0).repl_label == "off"
    assert CompletionResult([], 1.0, repl=ReplStatus.NS_NOT_LOADED).repl_label == "ns-not-loaded"
    failed = CompletionResult([], 1.0, repl=ReplStatus.FAILED, repl_error="connection refused")
    assert failed.repl_label == "failed: connection refused"
    assert CompletionResult([], 1.0, repl="used").repl is ReplStatus.USED


def test_one_definition_of_passed():
    assert checks_passed({"balanced": True, "reads": True, "compiles": None})
    assert not checks_passed({"balanced": True, "compiles": False})
    assert not checks_passed({"balanced": None})  # not known to be balanced: not passed
    assert Suggestion("x", 0.5, {"balanced": True, "evaluated": True}).passed
    # not checked on purpose (compiling would have run the user's macro): neither passed nor failed
    assert checks_passed({"balanced": True, "compiles": "not checked (macro my.app/m)"})
    assert [judged(v) for v in (True, False, None, "not checked (macro my.app/m)")] == [True, False, None, None]


def test_complete_prints_a_check_not_run_on_purpose_with_its_reason():
    from cljassist.cli import suggestion_lines

    s = Suggestion("(with-db x)", 0.5, {"balanced": True, "reads": True, "compiles": "not checked (macro my.app/with-db)"})
    assert suggestion_lines(1, s) == ["1. [0.50 balanced,reads] (with-db x)",
                                      "     ?? compiles: not checked (macro my.app/with-db)"]


def test_suggestion_dict_rounds_only_when_asked():
    s = Suggestion("(inc x)", 0.71234, {"balanced": True}, value="2")
    assert suggestion_dict(s) == {"text": "(inc x)", "score": 0.71234, "checks": {"balanced": True}, "value": "2"}
    assert suggestion_dict(s, score_digits=3)["score"] == 0.712
