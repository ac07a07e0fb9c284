"""The package's shape: no import cycles, and facts kept in one place stay in one place."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from cljassist.clojure_text.reader import parse
from cljassist.frontends.complete_op import COMPLETE_OP, DESCRIPTOR_RESOURCE, op_fields

ROOT = Path(__file__).resolve().parents[1]


def _import_graph_script():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_package_has_no_import_cycles():
    import_graph = _import_graph_script()
    edges = import_graph.graph(ROOT)
    assert "cljassist.frontends.bootstrap" in edges  # the graph covers the package
    assert import_graph.cycles(edges) == []


def test_the_cycle_check_finds_a_cycle():
    import_graph = _import_graph_script()
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_graph.cycles(edges) == [["a", "b", "c"]]


def test_nothing_imports_the_command_line_module():
    import_graph = _import_graph_script()
    importers = {name for name, targets in import_graph.graph(ROOT).items() if "cljassist.cli" in targets}
    assert importers <= {"cljassist.__main__"}


def _middleware_descriptor() -> dict:
    edn_format = pytest.importorskip("edn_format")
    source = (ROOT / "cljassist" / "resources" / "nrepl_middleware.clj").read_text(encoding="utf-8")
    form = next(n for n in parse(source) if n.kind == "list" and n.children
                and n.children[0].text(source) == "set-descriptor!")
    descriptor = edn_format.loads(form.children[-1].text(source))
    handles = descriptor[edn_format.Keyword("handles")]
    return {key.name if isinstance(key, edn_format.Keyword) else key: value
            for key, value in handles[COMPLETE_OP].items()}


def test_the_middleware_describes_the_op_with_the_shared_fields():
    described = _middleware_descriptor()
    fields = op_fields()
    assert {key: dict(described[key]) for key in fields} == fields


def test_the_op_name_comes_from_the_shared_descriptor():
    from cljassist.frontends import bridge, proxy

    assert json.loads(DESCRIPTOR_RESOURCE.read_text(encoding="utf-8"))["op"] == COMPLETE_OP
    assert bridge.COMPLETE_OP == proxy.COMPLETE_OP == COMPLETE_OP
    assert {key: proxy.OP_DESCRIPTOR[key] for key in op_fields()} == op_fields()
