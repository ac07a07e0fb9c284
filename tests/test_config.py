import pytest

from cljassist.config import Settings, load_settings, parse_config_text
from cljassist.errors import InputError


def test_project_config_wins_over_home(tmp_path):
    project, home = tmp_path / "proj", tmp_path / "home"
    (project / "src" / "app").mkdir(parents=True)
    home.mkdir()
    (project / "deps.edn").write_text("{}")
    (project / ".cljassist.edn").write_text('{:model "m.gguf" :candidates 5}')
    (home / ".cljassist.edn").write_text("{:candidates 2}")
    s = load_settings(project / "src" / "app" / "core.clj", home=home)
    assert s.candidates == 5 and s.model == str(project / "m.gguf")
    assert load_settings(tmp_path / "elsewhere.clj", home=home).candidates == 2
    assert load_settings(tmp_path / "x.clj", home=tmp_path / "nohome") == Settings()


@pytest.mark.parametrize("text,message", [
    ("{:model", "not valid EDN"),
    ("[1 2]", "expected a map"),
    ("{:colour 1}", "unknown key"),
    ('{:candidates "3"}', "must be a int"),
    ("{:candidates 0}", "at least 1"),
])
def test_bad_config_gives_clear_errors(text, message):
    with pytest.raises(InputError, match=message):
        parse_config_text(text)


def test_cli_flags_override_config():
    assert Settings(candidates=5).with_overrides(candidates=None, model="x").candidates == 5


def test_eval_and_verification_options():
    values = parse_config_text("{:eval :safe :show-failing true :verify false}")
    assert values == {"eval_mode": "safe", "show_failing": True, "verify": False}
    with pytest.raises(InputError, match=":eval must be one of"):
        parse_config_text('{:eval "everything"}')
    with pytest.raises(InputError, match="must be a bool"):
        parse_config_text("{:verify 1}")
