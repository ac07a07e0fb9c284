"""Each use has a default model of its own: one-shot (`complete`, `watch`, `bench CASES`) and
as-you-type (`serve`, `proxy`, `repl`, `bench --typing`), with the settings that go with it, kept as
data in models.toml; the config and the flags still win over both."""

from __future__ import annotations

import pytest

import cljassist.model.registry as registry
from cljassist.cli import build_parser, main
from cljassist.config import KEYSTROKE_DEFAULTS, Settings, load_settings
from cljassist.errors import ModelNotFound
from cljassist.frontends import common
from cljassist.frontends.bootstrap import settings_from_args
from cljassist.model.catalog import default_text
from cljassist.model.registry import AS_YOU_TYPE, ONE_SHOT, USES, parse_registry


def _entry(name: str, **extra) -> dict:
    return {"name": name, "description": "d", "license": "MIT", "fim_family": "left_to_right",
            "package": f"cljassist-no-such-{name}", **extra}


def _split_table() -> dict:
    return {"model": [
        _entry("careful", default=[ONE_SHOT]),
        _entry("quick", default=[AS_YOU_TYPE], default_settings={AS_YOU_TYPE: {"candidates": 2}}),
        _entry("other"),
    ]}


@pytest.fixture
def split_registry(monkeypatch, tmp_path):
    models = parse_registry(_split_table())
    monkeypatch.setattr(registry, "load_registry", lambda path=None: models)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no .cljassist.edn of whoever runs the tests
    return models


def test_the_shipped_registry_has_one_default_for_each_use():
    assert {use: registry.default_model(use).name for use in USES} == {ONE_SHOT: "smollm2-135m",
                                                                      AS_YOU_TYPE: "smollm2-135m"}
    assert registry.default_model().name == registry.default_model(ONE_SHOT).name
    with pytest.raises(ValueError, match="unknown use"):
        registry.default_model("sometimes")


def test_default_true_means_every_use_and_uses_are_checked():
    table = {"model": [_entry("all", default=True)]}
    assert parse_registry(table)["all"].default == USES
    with pytest.raises(registry.RegistryError, match="unknown uses typing"):
        parse_registry({"model": [_entry("all", default=["one-shot", "typing"])]})
    with pytest.raises(registry.RegistryError, match="must be a list of uses"):
        parse_registry({"model": [_entry("all", default="one-shot")]})


def test_each_use_needs_exactly_one_default():
    table = _split_table()
    table["model"][2]["default"] = [AS_YOU_TYPE]
    with pytest.raises(registry.RegistryError, match="exactly one model must be the default for as-you-type"):
        parse_registry(table)
    table["model"][2]["default"] = [ONE_SHOT]
    with pytest.raises(registry.RegistryError, match="default for one-shot, found"):
        parse_registry(table)


def test_default_settings_only_for_a_use_the_model_is_default_for():
    table = _split_table()
    table["model"][0]["default_settings"] = {AS_YOU_TYPE: {"candidates": 2}}
    with pytest.raises(registry.RegistryError, match="as-you-type, which this model is not the default for"):
        parse_registry(table)


def test_each_use_loads_its_own_default_with_its_settings(split_registry, tmp_path):
    assert load_settings(tmp_path, use=ONE_SHOT) == Settings(model="careful")
    assert load_settings(tmp_path, use=AS_YOU_TYPE) == Settings(model="quick", candidates=2)
    assert load_settings(tmp_path).model is None  # no use: the model is left to the loader


def test_unknown_default_settings_are_a_registry_error(monkeypatch, tmp_path):
    table = _split_table()
    table["model"][1]["default_settings"] = {AS_YOU_TYPE: {"candidatez": 1}}
    models = parse_registry(table)
    monkeypatch.setattr(registry, "load_registry", lambda path=None: models)
    with pytest.raises(registry.RegistryError, match="unknown settings candidatez"):
        load_settings(tmp_path, home=tmp_path, use=AS_YOU_TYPE)


def test_the_config_and_the_flags_win_over_the_defaults(split_registry, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / ".cljassist.edn").write_text("{:candidates 4}")
    assert load_settings(project, use=AS_YOU_TYPE).model == "quick"
    assert load_settings(project, use=AS_YOU_TYPE).candidates == 4  # the config's, not the default's 2
    (project / ".cljassist.edn").write_text('{:model "other"}')
    chosen = load_settings(project, use=AS_YOU_TYPE)
    assert (chosen.model, chosen.candidates) == ("other", Settings().candidates)  # its settings stay with it

    args = build_parser().parse_args(["serve", "--model", "other"])
    flagged = settings_from_args(args, tmp_path, keystrokes=True)
    # not quick's 2: as you type, the as-you-type default
    assert (flagged.model, flagged.candidates) == ("other", KEYSTROKE_DEFAULTS["candidates"])


def test_front_ends_pick_the_default_of_their_use(split_registry, tmp_path):
    one_shot = settings_from_args(build_parser().parse_args(["complete", "x.clj"]), tmp_path)
    typing = settings_from_args(build_parser().parse_args(["serve"]), tmp_path, keystrokes=True)
    assert (one_shot.model, one_shot.candidates) == ("careful", Settings().candidates)
    assert (typing.model, typing.candidates) == ("quick", 2)


@pytest.mark.parametrize("argv, expected", [
    (["complete", "{file}", "--no-repl"], "careful"),
    (["bench", "{cases}", "--no-repl"], "careful"),
    (["bench", "--typing", "{file}", "--no-repl"], "quick"),
])
def test_commands_load_the_default_of_their_use(split_registry, tmp_path, monkeypatch, capsys, argv, expected):
    loaded = []

    def refuse_to_load(settings):
        loaded.append(settings.model)
        raise ModelNotFound(f"test: would load {settings.model}")

    monkeypatch.setattr(common, "load_model", refuse_to_load)
    source = tmp_path / "a.clj"
    source.write_text("(ns a)\n\n(defn f [x]\n  (inc <CURSOR>x))\n")
    cases = tmp_path / "cases.jsonl"
    cases.write_text('{"id": "1", "prefix": "(ns a)\\n(inc ", "suffix": ")\\n", "middle": "1", "category": "arg"}\n')
    monkeypatch.chdir(tmp_path)
    assert main([a.format(file=source, cases=cases) for a in argv]) == 2
    assert loaded == [expected]
    assert f"would load {expected}" in capsys.readouterr().err


def test_the_listing_says_which_default_each_model_is(split_registry):
    assert default_text(split_registry["careful"]) == "one-shot"
    assert default_text(split_registry["quick"]) == "as-you-type (candidates 2)"
    assert default_text(split_registry["other"]) == "-"


def test_a_chosen_default_still_resolves_to_its_file_by_name(split_registry):
    with pytest.raises(ModelNotFound, match="pip install cljassist-no-such-quick"):
        common.load_model(Settings(model="quick"))
