"""open_engine and open_frontend: what they open they close, and nothing the caller handed in."""

from __future__ import annotations

import os
import signal

import pytest

from cljassist.config import Settings
from cljassist.engine import CompletionRequest
from cljassist.errors import Cancelled
from cljassist.frontends.bootstrap import FrontEnd, open_frontend
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


def test_open_frontend_closes_the_service_then_what_it_opened(monkeypatch):
    model = ClosableModel(["(inc x)"])
    monkeypatch.setattr("cljassist.frontends.common.load_model", lambda settings: model)
    with open_frontend(Settings(), no_repl=True, service=True, repl_label="off (told)") as front:
        assert front.service is not None and front.engine.model is model and front.repl_label == "off (told)"
        service = front.service
    assert model.closed
    with pytest.raises(Cancelled):
        service.submit(CompletionRequest("(inc ", ")"))


def test_open_frontend_closes_on_an_exception_and_leaves_a_handed_in_model_open():
    model = ClosableModel(["(inc x)"])
    with pytest.raises(RuntimeError):
        with open_frontend(Settings(), no_repl=True, model=model) as front:
            assert front.service is None
            raise RuntimeError("the front-end failed")
    assert not model.closed


def test_stop_signals_set_the_event_and_restore_the_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with FrontEnd.stop_signals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
    assert signal.getsignal(signal.SIGTERM) is before
