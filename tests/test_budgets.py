"""The table of budgets is the one place limits are declared, and README.md shows it as it is."""

import re
from pathlib import Path

import pytest

from cljassist import budgets
from cljassist.config import _EDN_KEYS, KEYSTROKE_DEFAULTS, Settings
from cljassist.prompt import load_templates

README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_section(begin: str, end: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(re.escape(begin) + r"\n(.*?)" + re.escape(end), text, re.S)
    assert match, f"README.md has no {begin} ... {end} section"
    return match.group(1)


def test_readme_configuration_table_is_the_budgets_table():
    assert _readme_section("<!-- budgets:begin -->", "<!-- budgets:end -->") == budgets.markdown(), \
        "README.md's table differs from cljassist/budgets.py: paste `python3 -m cljassist.budgets --markdown` there"


def test_markdown_flag_prints_the_table(capsys):
    assert budgets.main(["--markdown"]) == 0
    assert capsys.readouterr().out == budgets.markdown()


def test_every_config_key_is_documented_in_the_configuration_section():
    section = _readme_section("## Configuration", "## Troubleshooting")
    missing = [key for key in _EDN_KEYS if f":{key}" not in section]
    assert missing == []


def test_every_budget_has_a_unit_and_a_reason_and_names_are_unique():
    assert len(budgets.TABLE) >= 25
    assert len({b.name for b in budgets.TABLE}) == len(budgets.TABLE)
    for budget in budgets.TABLE:
        assert budget.unit and budget.reason and budget.stage, budget


def test_settings_defaults_are_the_table():
    settings = Settings()
    assert settings.candidates == budgets.CANDIDATES.value
    assert settings.max_new_tokens == budgets.NEW_TOKENS.value
    assert settings.n_ctx == budgets.CONTEXT_WINDOW.value
    assert settings.repl_timeout_ms == budgets.REPL_TIMEOUT.value
    assert settings.deadline_ms == budgets.DEADLINE.value
    assert settings.backend_timeout_ms == budgets.BACKEND_TIMEOUT.value
    assert KEYSTROKE_DEFAULTS["max_prompt_tokens"] == budgets.KEYSTROKE_PROMPT_TOKENS.value
    assert KEYSTROKE_DEFAULTS["deadline_ms"] == budgets.KEYSTROKE_DEADLINE.value


def test_prompt_budgets_come_from_the_table_only():
    budget = load_templates().budget
    assert budget.max_prompt_tokens == budgets.PROMPT_TOKENS.value
    assert budget.max_context_tokens == budgets.CONTEXT_TOKENS.value
    toml = (Path(budgets.__file__).resolve().parent.parent / "prompts" / "completion.toml").read_text(encoding="utf-8")
    assert not re.search(r"^max_(prompt|context)_tokens\s*=", toml, re.M)


def test_seconds_converts_time_units_and_refuses_sizes():
    assert budgets.REPL_TIMEOUT.seconds == 2.0
    assert budgets.RECENT_RESULTS_TTL.seconds == 120.0
    assert budgets.DEADLINE.seconds is None
    with pytest.raises(TypeError):
        budgets.SOURCE_FILE.seconds


def test_shown_values():
    assert budgets.SOURCE_FILE.shown() == "1 MiB"
    assert budgets.DAEMON_LINE.shown() == "8 MiB"
    assert budgets.DEADLINE.shown() == "none"
    assert budgets.KEYSTROKE_DEADLINE.shown() == "200 ms"
