"""open_engine: what it opens it closes, and nothing the caller handed in."""

from __future__ import annotations

from cljassist.config import Settings
from cljassist.frontends.common import open_engine
from tests.fakes import ScriptedModel


class ClosableModel(ScriptedModel):
    closed = False

    def close(self):
        self.closed = True


def test_a_model_handed_in_stays_open_after_close():
    model = ClosableModel(["(inc x)"])
    opened = open_engine(Settings(), no_repl=True, model=model)
    assert opened.provider is None and opened.repl_label.startswith("off")
    opened.close()
    assert not model.closed


def test_a_model_it_loaded_is_closed(monkeypatch):
    model = ClosableModel(["(inc x)"])
    monkeypatch.setattr("cljassist.frontends.common.load_model", lambda settings: model)
    opened = open_engine(Settings(), no_repl=True)
    opened.close()
    assert model.closed
