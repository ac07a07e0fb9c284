"""Warming a buffer: the engine evaluates the prompt of a completion there ahead of the first
keystroke (Engine.warm), the service runs it only when nothing else waits and never ahead of a
completion, the daemon's `warm` op and the proxy's cljassist/warm and load-file ask for it."""

from __future__ import annotations

import json
import threading
import time

import pytest

from cljassist.config import Settings
from cljassist.engine import Engine
from cljassist.errors import Cancelled
from cljassist.frontends.daemon import Daemon
from cljassist.frontends.service import CompletionService, warm_result
from cljassist.types import CompletionRequest, CompletionResult, WarmResult
from tests.fakes import FakeEngine, RecordingModel, generate_until_released
from tests.test_daemon import LineClient
from tests.waiting import wait_until

WAIT = 60.0  # only there so that a broken service fails a test instead of hanging it


class GatedEngine(FakeEngine):
    """Completions and warms that run until `release` is set, polling their cancel flag as the real
    engine does; `calls` says what ran, in order, and how each ended."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[tuple[str, str, str]] = []  # (kind, prefix, "done" | "stopped")
        self._running = threading.Semaphore(0)

    def _gate(self, kind: str, request: CompletionRequest, cancelled) -> None:
        self._running.release()
        try:
            generate_until_released(self.release, cancelled)
        except Cancelled:
            self.calls.append((kind, request.prefix, "stopped"))
            raise
        self.calls.append((kind, request.prefix, "done"))

    def started(self) -> None:
        """Wait until one more call has started."""
        assert self._running.acquire(timeout=WAIT)

    def complete(self, request, n=None, cancelled=None):
        self._gate("complete", request, cancelled)
        return CompletionResult([], 1.0)

    def warm(self, request, cancelled=None):
        self._gate("warm", request, cancelled)
        return WarmResult(len(request.prefix))


@pytest.fixture
def gated():
    engine = GatedEngine()
    service = CompletionService(engine)
    yield engine, service
    engine.release.set()
    service.close()


def _request(prefix: str, file: str) -> CompletionRequest:
    return CompletionRequest(prefix, "", file)


# ------------------------------------------------------------------ the service's order


def test_a_warm_runs_only_after_waiting_requests_and_prefetches(gated):
    engine, service = gated
    busy = service.submit(_request("(busy", "x.clj"))
    engine.started()
    warm = service.warm(_request("(w", "w.clj"))
    (prefetch,) = service.prefetch([_request("(p", "p.clj")], buffer="p.clj")
    request = service.submit(_request("(c", "c.clj"))
    engine.release.set()
    busy.result(WAIT), request.result(WAIT), prefetch.result(WAIT)
    assert warm.future.result(WAIT) == WarmResult(2)
    assert [(kind, prefix) for kind, prefix, _ in engine.calls] == [
        ("complete", "(busy"), ("complete", "(c"), ("complete", "(p"), ("warm", "(w")]


def test_a_request_for_another_buffer_stops_a_running_warm_which_runs_again_after_it(gated):
    engine, service = gated
    warm = service.warm(_request("(w", "w.clj"))
    engine.started()
    request = service.submit(_request("(c", "c.clj"))
    engine.started()  # the request: it did not wait for the warm to end
    assert engine.calls == [("warm", "(w", "stopped")]
    engine.release.set()
    request.result(WAIT)
    assert warm_result(_done(warm)) == WarmResult(2)
    assert engine.calls == [("warm", "(w", "stopped"), ("complete", "(c", "done"), ("warm", "(w", "done")]


def test_a_request_for_the_warms_own_buffer_drops_it_running_or_waiting(gated):
    engine, service = gated
    running = service.warm(_request("(w", "w.clj"))
    engine.started()
    service.submit(_request("(w1", "w.clj"))
    engine.started()
    assert warm_result(_done(running)) == WarmResult(0, "a request for w.clj came first")
    waiting = service.warm(_request("(v", "v.clj"))
    service.submit(_request("(v1", "v.clj"))
    assert warm_result(_done(waiting)) == WarmResult(0, "a request for v.clj came first")
    engine.release.set()
    wait_until(lambda: len(engine.calls) == 3, "the warm and both requests to end")
    assert [(kind, prefix) for kind, prefix, _ in engine.calls] == [
        ("warm", "(w"), ("complete", "(w1"), ("complete", "(v1")]


def test_a_warm_for_a_buffer_whose_request_is_on_its_way_is_dropped_at_once(gated):
    engine, service = gated
    service.submit(_request("(c", "c.clj"))
    engine.started()
    skipped = warm_result(service.warm(_request("(c", "c.clj")))
    assert skipped == WarmResult(0, "a request for c.clj is on its way")


def test_a_newer_warm_replaces_a_waiting_one_and_warms_can_be_cancelled_or_closed(gated):
    engine, service = gated
    service.submit(_request("(busy", "x.clj"))
    engine.started()
    older = service.warm(_request("(a", "a.clj"))
    newer = service.warm(_request("(ab", "a.clj"))
    assert warm_result(_done(older)) == WarmResult(0, "superseded by a newer warm of a.clj")
    newer.cancel("the editor closed the buffer")
    assert warm_result(_done(newer)) == WarmResult(0, "the editor closed the buffer")
    left = service.warm(_request("(b", "b.clj"))
    service.close(timeout=0.1)
    assert warm_result(_done(left)).skipped == "the completion service is shutting down"


def test_a_warm_that_made_way_and_waits_again_is_answered_when_dropped(gated):
    engine, service = gated
    warm = service.warm(_request("(w", "w.clj"))
    engine.started()
    service.submit(_request("(c", "c.clj"))
    engine.started()
    service.submit(_request("(w2", "w.clj"))  # the warm, queued again meanwhile, is for this buffer
    assert warm_result(_done(warm)) == WarmResult(0, "a request for w.clj came first")


def _done(ticket):
    wait_until(ticket.future.done, "the ticket to be done")  # whatever the outcome
    return ticket


# ------------------------------------------------------------------ the real engine and SmolLM2

ALPHA = "(ns demo.alpha)\n\n" + "".join(f"(defn alpha-{i} [x] (+ x {i}))\n" for i in range(20)) + "\n(defn total [xs]\n  "
BETA = "(ns demo.beta)\n\n" + "".join(f"(def beta-{i} \"{i * 7}\")\n" for i in range(25)) + "\n(defn shout [s]\n  "


@pytest.fixture
def smollm2_daemon(tmp_path, default_model):
    """A daemon over the real engine and SmolLM2 (no REPL, nothing cached), the model's evaluated
    prompts dropped before."""
    default_model.forget()
    service = CompletionService(Engine(default_model, Settings(candidates=1, max_new_tokens=8, cache=False)))
    daemon = Daemon(service, tmp_path).start()
    client = LineClient(daemon.port)
    yield daemon, client
    client.close()
    daemon.stop()
    service.close()


def _ask(daemon, client, op: str, id: str, text: str, file: str) -> dict:
    client.send_json({"op": op, "token": daemon.token, "id": id, "file": file, "prefix": text, "suffix": ""})
    reply = client.read()
    assert reply["id"] == id and "error" not in reply, reply
    return reply


@pytest.mark.integration
def test_a_warmed_buffers_first_completion_reuses_its_prompt_after_another_buffers(smollm2_daemon, default_model):
    daemon, client = smollm2_daemon
    warmed = _ask(daemon, client, "warm", "w", ALPHA, "/src/demo/alpha.clj")
    assert warmed["warmed"] > 0 and "skipped" not in warmed
    _ask(daemon, client, "complete", "b", BETA, "/src/demo/beta.clj")  # another buffer in between
    _ask(daemon, client, "complete", "a", ALPHA, "/src/demo/alpha.clj")
    stats = default_model.last_stats
    # the whole prompt was the warm's: only its last token is evaluated again, for its logits
    assert stats["reused_from"].startswith("kept ") and stats["reused_tokens"] == stats["prompt_tokens"] - 1
    assert warmed["warmed"] == stats["prompt_tokens"]
    # a second warm of the same place finds nothing to do
    again = _ask(daemon, client, "warm", "w2", ALPHA, "/src/demo/alpha.clj")
    assert again == {"id": "w2", "warmed": 0, "skipped": "its prompt is evaluated already"}


@pytest.mark.integration
def test_a_complete_sent_behind_a_warm_is_answered_first(smollm2_daemon, default_model):
    daemon, client = smollm2_daemon
    # both in one write: the warm is queued first, the completion for another buffer overtakes it
    # (the warm makes way within a prompt chunk and runs again after it)
    client.send_raw(b"".join(
        (json.dumps({"op": op, "token": daemon.token, "id": id, "file": file, "prefix": text,
                                    "suffix": ""}) + "\n").encode()
        for op, id, text, file in (("warm", "w", ALPHA, "/src/demo/alpha.clj"),
                                   ("complete", "c", BETA, "/src/demo/beta.clj"))))
    first, second = client.read(), client.read()
    assert first["id"] == "c" and "suggestions" in first
    assert second["id"] == "w" and second["warmed"] > 0


def test_the_warm_op_is_described_and_a_bad_request_is_a_one_line_error(tmp_path):
    service = CompletionService(GatedEngine())
    with Daemon(service, tmp_path) as daemon:
        client = LineClient(daemon.port)
        client.send_json({"op": "describe", "token": daemon.token, "id": 1})
        assert "warmed" in client.read()["ops"]["warm"]["returns"]
        client.send_json({"op": "warm", "token": daemon.token, "id": 2, "file": "a.clj"})
        reply = client.read()
        assert reply["id"] == 2 and "needs 'code'" in reply["error"]
        client.close()
    service.close()


# ------------------------------------------------------------------ the proxy, over the real nREPL


class WarmWatchedModel(RecordingModel):
    """The real model, with an event set when a prompt was evaluated for a warm (n=0)."""

    def __init__(self, model) -> None:
        super().__init__(model)
        self.warmed = threading.Event()

    def generate_candidates(self, prompt, n, max_tokens, stop, deadline_s=None, cancelled=None, skip=0):
        out = super().generate_candidates(prompt, n, max_tokens, stop, deadline_s=deadline_s, cancelled=cancelled,
                                          skip=skip)
        if n == 0:
            self.warmed.set()
        return out


@pytest.mark.integration
def test_a_file_loaded_through_the_proxy_is_warmed_and_its_completion_reuses_the_prompt(
        nrepl_server, default_model, tmp_path):
    from cljassist.frontends.proxy import COMPLETE_OP, WARM_OP, NreplProxy
    from cljassist.repl.client import NreplClient

    default_model.forget()
    model = WarmWatchedModel(default_model)
    service = CompletionService(Engine(model, Settings(candidates=1, max_new_tokens=8, cache=False)))
    loaded_text = "(ns warm.loaded)\n\n" + "".join(f"(defn f{i} [x] (* x {i}))\n" for i in range(20)) + "(f3 1)"
    source = tmp_path / "loaded.clj"
    source.write_text(loaded_text)
    try:
        with NreplProxy((nrepl_server.host, nrepl_server.port), service) as proxy, \
                NreplClient.connect("127.0.0.1", proxy.port, timeout=WAIT) as client:
            loaded = client.load_file(loaded_text, file_path=str(source), file_name="loaded.clj", timeout=WAIT)
            assert loaded.ok and loaded.values[-1] == "3"  # the load itself went upstream unchanged
            assert model.warmed.wait(WAIT), "the load-file did not warm its file"
            assert model.prompts[-1].endswith("(f3 1)")
            # a completion at the end of the file as loaded finds its prompt evaluated
            replies = client.request(COMPLETE_OP, timeout=WAIT, prefix=loaded_text, suffix="",
                                     file=str(source))
            assert any("suggestions" in r for r in replies), replies
            stats = default_model.last_stats
            assert stats["reused_tokens"] == stats["prompt_tokens"] - 1
            # cljassist/warm is answered by the proxy too
            model.warmed.clear()
            replies = client.request(WARM_OP, timeout=WAIT, prefix=BETA, suffix="", file=str(tmp_path / "beta.clj"))
            answer = {k: v for r in replies for k, v in r.items()}
            assert answer["warmed"] > 0 and "done" in answer["status"] and model.warmed.is_set()
            # a load-file of code from the classpath (a relative path) warms nothing
            model.warmed.clear()
            assert client.load_file("(+ 2 3)", file_path="demo/x.clj", file_name="x.clj", timeout=WAIT).ok
            time.sleep(0.5)
            assert not model.warmed.is_set()
    finally:
        service.close()

