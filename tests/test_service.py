"""CompletionService: one worker owns the engine; a newer request for a buffer cancels the older."""

from __future__ import annotations

import threading

import pytest

from cljassist.errors import Cancelled, InputError
from cljassist.frontends.service import CompletionService
from cljassist.types import CompletionRequest, CompletionResult, Suggestion
from tests.fakes import FakeEngine, generate_until_released
from tests.waiting import wait_until


class GatedEngine(FakeEngine):
    """Completes when released; polls the cancel flag meanwhile, like the real model does."""

    def __init__(self):
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls: list[tuple[CompletionRequest, int | None]] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def complete(self, request, n=None, cancelled=None):
        with self._lock:
            self.calls.append((request, n))
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self.started.set()
            generate_until_released(self.release, cancelled)
            if request.prefix == "boom":
                raise InputError("bad request")
            return CompletionResult([Suggestion(request.prefix + "!", 0.5, {"balanced": True})], 1.0)
        finally:
            with self._lock:
                self.active -= 1


@pytest.fixture
def engine_and_service():
    engine = GatedEngine()
    service = CompletionService(engine)
    yield engine, service
    engine.release.set()
    service.close()


def test_result_comes_back_with_n(engine_and_service):
    engine, service = engine_and_service
    engine.release.set()
    ticket = service.submit(CompletionRequest("(inc", ")"), buffer="a", n=2)
    result = ticket.result(timeout=10)
    assert result.suggestions[0].text == "(inc!"
    assert engine.calls[0][1] == 2


def test_newer_request_cancels_the_running_one_for_the_same_buffer(engine_and_service):
    engine, service = engine_and_service
    first = service.submit(CompletionRequest("(a", ""), buffer="core.clj")
    assert engine.started.wait(10)
    second = service.submit(CompletionRequest("(ab", ""), buffer="core.clj")
    with pytest.raises(Cancelled):
        first.result(timeout=10)
    engine.release.set()
    assert second.result(timeout=10).suggestions[0].text == "(ab!"


def test_newer_request_cancels_a_waiting_one_without_running_it(engine_and_service):
    engine, service = engine_and_service
    blocker = service.submit(CompletionRequest("(x", ""), buffer="other.clj")
    assert engine.started.wait(10)
    waiting = service.submit(CompletionRequest("(a", ""), buffer="core.clj")
    newer = service.submit(CompletionRequest("(ab", ""), buffer="core.clj")
    with pytest.raises(Cancelled, match="superseded"):
        waiting.result(timeout=10)
    engine.release.set()
    assert blocker.result(timeout=10).suggestions
    assert newer.result(timeout=10).suggestions
    assert [r.prefix for r, _ in engine.calls] == ["(x", "(ab"]  # the superseded one never ran


def test_other_buffers_are_not_cancelled_and_the_engine_runs_one_at_a_time(engine_and_service):
    engine, service = engine_and_service
    tickets = [service.submit(CompletionRequest(f"({i}", ""), buffer=f"file{i}.clj") for i in range(4)]
    engine.release.set()
    assert [t.result(timeout=10).suggestions[0].text for t in tickets] == [f"({i}!" for i in range(4)]
    assert engine.max_active == 1


def test_errors_reach_the_caller_and_the_worker_lives_on(engine_and_service):
    engine, service = engine_and_service
    engine.release.set()
    with pytest.raises(InputError):
        service.submit(CompletionRequest("boom", "")).result(timeout=10)
    assert service.submit(CompletionRequest("(ok", "")).result(timeout=10).suggestions


def test_explicit_cancel_and_close(engine_and_service):
    engine, service = engine_and_service
    running = service.submit(CompletionRequest("(a", ""), buffer="a")
    assert engine.started.wait(10)
    running.cancel("client went away")
    with pytest.raises(Cancelled, match="cancelled"):
        running.result(timeout=10)
    pending = service.submit(CompletionRequest("(b", ""), buffer="b")
    service.close(timeout=10)
    with pytest.raises(Cancelled):
        pending.result(timeout=10)
    with pytest.raises(Cancelled):
        service.submit(CompletionRequest("(c", ""))


def test_engine_stops_inside_generation_when_cancelled():
    """The real engine path: the flag reaches the model (ScriptedModel ignores it, so use the stage
    boundary: a flag already set stops the engine after its first stage)."""
    from cljassist.config import Settings
    from cljassist.engine import Engine
    from tests.fakes import ScriptedModel

    model = ScriptedModel(["(inc 1)"])
    engine = Engine(model, Settings(candidates=1))
    with pytest.raises(Cancelled, match="after analysis"):
        engine.complete(CompletionRequest("(", ""), cancelled=lambda: True)
    assert model.prompts == []
    assert engine.complete(CompletionRequest("(", ""), n=1).suggestions


# ------------------------------------------------------------------------------ prefetch

def test_prefetch_runs_only_when_no_request_waits(engine_and_service):
    engine, service = engine_and_service
    busy = service.submit(CompletionRequest("(a", ")"), buffer="other")
    assert engine.started.wait(5)
    ahead = service.prefetch([CompletionRequest("(b\n  ", ")")], buffer="b")
    waiting = service.submit(CompletionRequest("(c", ")"), buffer="c")
    engine.release.set()
    busy.result(10), waiting.result(10), ahead[0].result(10)
    assert [r.prefix for r, _ in engine.calls] == ["(a", "(c", "(b\n  "]  # the prefetch came last


def test_a_request_drops_its_own_prefetch_keeps_the_one_ahead_and_cancels_stale_ones(engine_and_service):
    engine, service = engine_and_service
    blocker = service.submit(CompletionRequest("(z", ")"), buffer="z")
    assert engine.started.wait(5)
    same, ahead = service.prefetch([CompletionRequest("(f x)", ""), CompletionRequest("(f x)\n", "")], buffer="a")
    (stale,) = service.prefetch([CompletionRequest("(g", "")], buffer="a")
    mine = service.submit(CompletionRequest("(f x)", ""), buffer="a")
    assert same.cancelled and stale.cancelled and not ahead.cancelled
    engine.release.set()
    blocker.result(10), mine.result(10), ahead.result(10)
    assert [r.prefix for r, _ in engine.calls] == ["(z", "(f x)", "(f x)\n"]


def test_a_running_prefetch_yields_to_the_user_and_is_queued_again_when_still_ahead(engine_and_service):
    engine, service = engine_and_service
    (ahead,) = service.prefetch([CompletionRequest("(f x)\n", "")], buffer="a")
    assert engine.started.wait(5)  # the prefetch is running
    mine = service.submit(CompletionRequest("(f x)", ""), buffer="a")
    with pytest.raises(Cancelled):
        ahead.result(10)
    engine.release.set()
    mine.result(10)
    wait_until(lambda: len(engine.calls) >= 3, "the prefetch to run again")
    assert [r.prefix for r, _ in engine.calls] == ["(f x)\n", "(f x)", "(f x)\n"]


def test_likely_next_requests_after_an_accept_include_the_next_line_indented():
    from cljassist.prefetch import likely_next_requests

    after = CompletionRequest("(defn f [x]\n  (inc x)", ")\n", "a.clj")
    following = likely_next_requests(after)
    assert following[0] == after
    assert following[1].prefix == "(defn f [x]\n  (inc x)\n  " and following[1].suffix == ")\n"
    # in the middle of a line's code, Enter is not the likely next key
    assert likely_next_requests(CompletionRequest("(f x", " y)", "a.clj")) == [CompletionRequest("(f x", " y)", "a.clj")]


def test_a_cached_answer_does_not_wait_behind_a_running_request():
    from cljassist.config import Settings
    from cljassist.engine import Engine
    from tests.fakes import ScriptedModel

    engine = Engine(ScriptedModel(["(inc x)"]), Settings(candidates=1))
    engine.complete(CompletionRequest("(defn f [x] ", ")", "a.clj"))  # now cached: "(inc x)"
    gate = threading.Event()
    slow = engine.complete

    def gated_complete(request, n=None, cancelled=None):
        if request.file == "b.clj":
            assert gate.wait(10)
        return slow(request, n, cancelled)

    engine.complete = gated_complete
    service = CompletionService(engine)
    try:
        busy = service.submit(CompletionRequest("(other ", ")", "b.clj"))
        typed = service.submit(CompletionRequest("(defn f [x] (in", "))", "a.clj"))
        result = typed.result(timeout=5)  # answered while b.clj's request still holds the worker
        assert result.source == "type-through" and result.suggestions[0].text == "c x"
        assert not busy.future.done()
    finally:
        gate.set()
        service.close()


def test_a_request_cancelled_while_waiting_is_forgotten(engine_and_service):
    engine, service = engine_and_service
    busy = service.submit(CompletionRequest("(a", ")"), buffer="a")
    assert engine.started.wait(5)
    waiting = service.submit(CompletionRequest("(b " + "x" * 1000, ")"), buffer="b")
    waiting.cancel("the client disconnected")
    engine.release.set()
    busy.result(10)
    wait_until(lambda: not service._latest and service._running is None, "the service to be idle")
    assert service._latest == {} and service._running is None  # nothing of it kept
