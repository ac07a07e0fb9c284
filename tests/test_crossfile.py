"""Other files' definitions in the prompt's repository layout (cljassist/crossfile.py, prompt.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from cljassist.clojure_text.analysis import analyze
from cljassist.clojure_text.reader import is_balanced
from cljassist.config import Settings
from cljassist.context import DefinitionSite, ReplContextProvider
from cljassist.crossfile import Definition, DefinitionFinder, cut_definition, definition_at_line, project_of
from cljassist.engine import Engine
from cljassist.model.fim import load_fim_table
from cljassist.prompt import PromptInput, assemble_prompt
from cljassist.types import CompletionRequest
from tests.fakes import ScriptedModel
from tests.fixtures_repl import DEMO_SRC, nrepl_client, nrepl_server  # noqa: F401

QWEN = load_fim_table()["qwen25_coder"]


def chars(text: str) -> int:
    return len(text) // 3 + 1


UTIL = """(ns app.util
  (:require [clojure.string :as str]))

(defn parse-row
  "Splits a CSV line into trimmed cells."
  [line]
  (mapv str/trim (str/split line #",")))

(defmacro with-rows
  "Binds rows."
  [[sym source] & body]
  `(let [~sym (map parse-row ~source)]
     ~@body))

(def default-sep ",")

(defprotocol Sink
  "Where rows go."
  (put! [sink row]))
"""

CORE = """(ns app.core
  (:require [app.util :as u :refer [with-rows]]))

(defn load-rows [text]
  (->> (clojure.string/split-lines text)
       (map u/parse-row)
       (with-rows """

PARSE_ROW = UTIL[UTIL.index("(defn parse-row"):UTIL.index("\n\n(defmacro")]
WITH_ROWS = UTIL[UTIL.index("(defmacro"):UTIL.index("\n\n(def default")]


@pytest.fixture
def project(tmp_path):
    (tmp_path / "deps.edn").write_text("{:paths [\"src\"]}\n")
    (tmp_path / "src" / "app").mkdir(parents=True)
    (tmp_path / "src" / "app" / "util.clj").write_text(UTIL)
    (tmp_path / "src" / "app" / "core.clj").write_text(CORE)
    return tmp_path


# ------------------------------------------------------------------ the layout, as fim.toml says


def test_qwen_repo_layout_is_the_technical_reports():
    preamble = QWEN.repo_preamble("xp", [("src/a.clj", "(defn f [x])"), ("src/b.clj", "(def y 1)")], "src/c.clj")
    assert QWEN.render("(f ", ")", preamble) == (
        "<|repo_name|>xp\n<|file_sep|>src/a.clj\n(defn f [x])\n<|file_sep|>src/b.clj\n(def y 1)\n"
        "<|file_sep|>src/c.clj\n<|fim_prefix|>(f <|fim_suffix|>)<|fim_middle|>")


def test_families_without_a_repo_layout_render_the_template_alone():
    table = load_fim_table()
    for family in ("starcoder", "left_to_right", "cljassist_smollm2"):
        assert table[family].repo is None
        assert table[family].repo_preamble("xp", [("a.clj", "x")], "b.clj") == ""


# ------------------------------------------------------------------ reading definitions


def test_the_form_starting_at_a_line_is_found_with_our_reader():
    for name, line in (("parse-row", 4), ("with-rows", 9), ("default-sep", 15), ("Sink", 17)):
        start, end = definition_at_line(UTIL, line)
        assert UTIL[start:end].split()[1] == name
        assert is_balanced(UTIL[start:end])
    assert definition_at_line(UTIL, 5) is None  # inside a form: no form starts there


def test_a_long_definition_is_cut_to_its_start_and_closed():
    body = "\n".join(f"    (step-{i} x)" for i in range(30))
    form = f'(defn long-one\n  "Does thirty steps."\n  [x]\n  (do\n{body}))'
    cut = cut_definition(form, max_lines=6)
    assert cut.startswith('(defn long-one\n  "Does thirty steps."\n  [x]\n  (do\n    (step-0 x)\n    (step-1 x)')
    assert cut.endswith(" ...))") and is_balanced(cut)
    assert cut_definition(PARSE_ROW, max_lines=6) == PARSE_ROW  # short ones whole


# ------------------------------------------------------------------ on disk


def test_the_project_is_named_after_its_root_and_files_relative_to_it(project):
    p = project_of(str(project / "src" / "app" / "core.clj"), "app.core")
    assert (p.name, p.root, p.current) == (project.name, project.resolve(), "src/app/core.clj")
    assert project.resolve() / "src" in p.source_dirs
    bench = project_of("bidi/vhosts.clj", "bidi.vhosts")
    assert (bench.name, bench.root, bench.current) == ("bidi", None, "bidi/vhosts.clj")
    assert project_of(None, None).name == "project"


def test_without_a_project_marker_the_source_dir_is_the_path_minus_the_namespace(tmp_path):
    (tmp_path / "lib" / "my_app").mkdir(parents=True)
    file = tmp_path / "lib" / "my_app" / "core.clj"
    file.write_text("(ns my-app.core)\n")
    p = project_of(str(file), "my-app.core")
    if p.root != (tmp_path / "lib").resolve():
        pytest.skip("a project marker above the temporary directory")
    assert p.source_dirs == ((tmp_path / "lib").resolve(),) and p.current == "my_app/core.clj"


def test_aliased_and_referred_names_are_found_in_their_namespaces_files(project):
    p = project_of(str(project / "src" / "app" / "core.clj"), "app.core")
    found = DefinitionFinder().on_disk(analyze(CORE, ""), p)
    # closest reference first: with-rows is being written, u/parse-row is the line above
    assert [(d.qualified, d.path, d.line) for d in found] == [
        ("app.util/with-rows", "src/app/util.clj", 9), ("app.util/parse-row", "src/app/util.clj", 4)]
    assert found[1].text == PARSE_ROW and found[0].text == WITH_ROWS


def test_a_changed_file_is_read_again(project):
    p = project_of(str(project / "src" / "app" / "core.clj"), "app.core")
    finder = DefinitionFinder()
    assert finder.on_disk(analyze(CORE, ""), p)[1].text == PARSE_ROW
    util = project / "src" / "app" / "util.clj"
    util.write_text(UTIL.replace("trimmed cells", "cells"))
    later = time.time() + 5
    os.utime(util, (later, later))
    assert "Splits a CSV line into cells." in finder.on_disk(analyze(CORE, ""), p)[1].text


# ------------------------------------------------------------------ the prompt


def _gap(**kw) -> PromptInput:
    return PromptInput(CORE, "))\n", file="/p/src/app/core.clj", namespace="app.core", **kw)


DEFS = (Definition("app.util/with-rows", "src/app/util.clj", 9, WITH_ROWS),
        Definition("app.util/parse-row", "src/app/util.clj", 4, PARSE_ROW),
        Definition("app.io/sink", "src/app/io.clj", 3, "(def sink nil)"))


def test_the_preamble_groups_definitions_by_file_in_file_order_and_names_this_file():
    prompt = assemble_prompt(_gap(project="xp", project_file="src/app/core.clj"), QWEN, chars, definitions=DEFS)
    assert prompt.preamble == ("<|repo_name|>xp\n<|file_sep|>src/app/io.clj\n(def sink nil)\n"
                               f"<|file_sep|>src/app/util.clj\n{PARSE_ROW}\n\n{WITH_ROWS}\n"
                               "<|file_sep|>src/app/core.clj\n")
    assert prompt.text == QWEN.render(prompt.before, prompt.suffix, prompt.preamble)
    assert prompt.text.startswith(prompt.preamble + "<|fim_prefix|>(ns app.core")
    assert ";; core.clj" not in prompt.text  # the layout names the file instead of a comment
    assert prompt.stable.startswith(prompt.preamble)


def test_the_most_relevant_definitions_that_fit_their_budget_are_kept():
    # a 90-token prompt leaves the definitions a third: room for the short two, not the macro
    prompt = assemble_prompt(_gap(project="xp", project_file="src/app/core.clj"), QWEN, chars,
                             definitions=DEFS, limits=_limits(90))
    assert "(def sink nil)" in prompt.preamble and PARSE_ROW not in prompt.preamble
    assert WITH_ROWS not in prompt.preamble
    big = assemble_prompt(_gap(project="xp", project_file="src/app/core.clj"), QWEN, chars,
                          definitions=DEFS, limits=_limits(768))
    assert all(d.text in big.preamble for d in DEFS)
    # the code gets what the definitions leave
    assert len(prompt.prefix) < len(CORE) and big.tokens <= 768 and prompt.tokens <= 90 + 3


def _limits(n: int):
    from cljassist.prompt import PromptLimits

    return PromptLimits(max_prompt_tokens=n)


def test_without_a_project_or_a_layout_the_prompt_is_as_before():
    plain = assemble_prompt(_gap(), QWEN, chars, definitions=DEFS)
    assert plain.preamble == "" and plain.text.startswith("<|fim_prefix|>;; core.clj\n(ns app.core")
    smol = load_fim_table()["left_to_right"]
    prompt = assemble_prompt(_gap(project="xp", project_file="src/app/core.clj"), smol, chars, definitions=DEFS)
    assert prompt.preamble == "" and prompt.text.startswith(";; core.clj\n")


# ------------------------------------------------------------------ the engine


def _complete(engine: Engine, file: Path, text: str) -> str:
    engine.complete(CompletionRequest(text, "))\n", str(file)))
    return engine.model.prompts[-1]


def test_the_engine_shows_definitions_from_disk_and_keeps_them_while_typing(project):
    model = ScriptedModel(["x"], family="qwen25_coder")
    engine = Engine(model, Settings(cache=False))
    file = project / "src" / "app" / "core.clj"
    first = _complete(engine, file, CORE)
    assert first.startswith(f"<|repo_name|>{project.name}\n<|file_sep|>src/app/util.clj\n{PARSE_ROW}\n\n{WITH_ROWS}\n"
                            "<|file_sep|>src/app/core.clj\n<|fim_prefix|>")
    # typing on in the same form: the names it now uses are covered, the preamble stays
    later = _complete(engine, file, CORE.replace("(with-rows ", "(with-rows [r"))
    assert later.split("<|fim_prefix|>")[0] == first.split("<|fim_prefix|>")[0]
    off = Engine(ScriptedModel(["x"], family="qwen25_coder"), Settings(cache=False, repo_prompt=False))
    assert _complete(off, file, CORE).startswith("<|fim_prefix|>;; core.clj\n")


def test_repo_prompt_is_a_setting_and_a_flag():
    from cljassist.cli import build_parser
    from cljassist.config import parse_config_text

    assert Settings().repo_prompt is True
    assert parse_config_text("{:repo-prompt false}") == {"repo_prompt": False}
    args = build_parser().parse_args(["complete", "--no-repo-prompt", "x.clj"])
    assert args.repo_prompt is False


# ------------------------------------------------------------------ with a real REPL


TODO = """(ns crossfile-test.todo
  (:require [clojure.string :as str]
            [demo.core :as core :refer [slugify]]))

(defn summary [posts]
  (let [counts (core/tag-counts posts)]
    (str/join ", " (map slugify (keys counts)))))
"""


@pytest.mark.integration
def test_the_repl_locates_the_aliased_namespaces_definitions(nrepl_client):
    nrepl_client.eval("(require 'demo.core)", timeout=60)
    session = nrepl_client.clone()
    assert nrepl_client.eval(TODO, session=session, timeout=60).ok
    provider = ReplContextProvider(nrepl_client, timeout_s=60)
    try:
        offset = TODO.index("(keys counts)")
        analysis = analyze(TODO[:offset], TODO[offset:])
        live = provider.gather(analysis.namespace, "", analysis=analysis)
    finally:
        provider.close()
    sites = {s.qualified: s for s in live.sites}
    assert {"demo.core/tag-counts", "demo.core/slugify"} <= set(sites)
    assert "clojure.string/join" not in sites or sites["clojure.string/join"].url.startswith("jar:")
    tag_counts = sites["demo.core/tag-counts"]
    assert (tag_counts.file, tag_counts.line) == ("demo/core.clj", 13)
    assert tag_counts.url.startswith("file:")
    assert Path(urlparse(tag_counts.url).path) == (DEMO_SRC / "demo" / "core.clj").resolve()

    project = project_of("crossfile_test/todo.clj", analysis.namespace)
    found = DefinitionFinder().at_sites(live.sites, project, analysis.namespace)
    prompt = assemble_prompt(PromptInput(TODO[:offset], TODO[offset:], file="crossfile_test/todo.clj",
                                         namespace=analysis.namespace, project=project.name,
                                         project_file=project.current), QWEN, chars, definitions=found)
    demo = (DEMO_SRC / "demo" / "core.clj").read_text()
    tag_counts_form = demo[demo.index("(defn tag-counts"):demo.index("\n\n(defn shared-tags")]
    assert f"<|file_sep|>demo/core.clj\n" in prompt.preamble and tag_counts_form in prompt.preamble
    assert "(defn slugify" in prompt.preamble
    assert prompt.preamble.endswith("<|file_sep|>crossfile_test/todo.clj\n")


def test_jar_resources_and_the_cursors_own_namespace_are_not_the_projects_other_files(tmp_path):
    util = tmp_path / "util.clj"
    util.write_text(UTIL)
    sites = [DefinitionSite("clojure.string/join", "clojure/string.clj", 180,
                            "jar:file:/usr/share/java/clojure.jar!/clojure/string.clj"),
             DefinitionSite("app.core/own", str(util), 4, util.as_uri()),
             DefinitionSite("app.util/parse-row", str(util), 4, util.as_uri())]
    found = DefinitionFinder().at_sites(sites, project_of("app/core.clj", "app.core"), "app.core")
    assert [(d.qualified, d.path, d.text) for d in found] == [("app.util/parse-row", "util.clj", PARSE_ROW)]


def test_with_a_project_root_only_files_under_it_count(project, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("a-library") / "lib.clj"
    elsewhere.write_text(UTIL)
    util = project / "src" / "app" / "util.clj"
    sites = [DefinitionSite("lib.core/parse-row", "lib.clj", 4, elsewhere.as_uri()),
             DefinitionSite("app.util/parse-row", "app/util.clj", 4, util.as_uri())]
    p = project_of(str(project / "src" / "app" / "core.clj"), "app.core")
    found = DefinitionFinder().at_sites(sites, p, "app.core")
    assert [(d.qualified, d.path) for d in found] == [("app.util/parse-row", "src/app/util.clj")]


# ------------------------------------------------------------------ token healing still applies


@pytest.mark.integration
def test_qwen_heals_a_repo_level_prompt():
    from tests.fixtures_model import qwen_model_file

    path = qwen_model_file()
    if path is None:
        pytest.skip("Qwen2.5-Coder-0.5B is not assembled in the model cache")
    from cljassist.model.llama import LocalModel

    model = LocalModel(path, n_ctx=1024)
    try:
        gap = PromptInput("(ns app.core)\n\n(defn indices [xs]\n  (for [i ", "]\n    i))\n", file="src/app/core.clj",
                          namespace="app.core", form_start=15, project="xp", project_file="src/app/core.clj")
        prompt = assemble_prompt(gap, model.fim, model.count_tokens, definitions=DEFS)
        assert prompt.preamble.startswith("<|repo_name|>xp\n") and PARSE_ROW in prompt.preamble
        healed = model.heal(prompt)
        assert healed.healed == " "
        assert healed.text == prompt.text.replace("(for [i <|fim_suffix|>", "(for [i<|fim_suffix|>")
        assert healed.text.startswith(prompt.preamble)
    finally:
        model.close()
