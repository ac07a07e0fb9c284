"""A REPL fault costs a request at most its REPL budget, and the engine follows the REPL it found.

The unit tests drive `TimeBudget` and `ReplHealth` with scripted clocks and probes. The fault
injections run a dedicated real nREPL each (the shared fixture's must never be frozen or stopped):
a JVM stopped with SIGSTOP (and always continued again), and a REPL restarted on another port. The
model is a scripted fake: these tests are about the REPL side. The bounds on how long a frozen
REPL is waited for are far above what a working engine takes, and far below what it took before
(30 s and more): they check that the budget holds, not how fast anything is."""

from __future__ import annotations

import io
import os
import re
import signal
import threading
import time

import pytest

from cljassist.budgets import REPL_TIMEOUT, TimeBudget
from cljassist.config import Settings
from cljassist.errors import ReplNotAnswering, ReplTimeout, ReplUnavailable
from cljassist.frontends.bootstrap import open_frontend
from cljassist.frontends.common import open_engine
from cljassist.frontends.daemon import Daemon
from cljassist.frontends.terminal import Printer, connect_or_start_nrepl
from cljassist.repl.client import NreplClient
from cljassist.repl.discovery import PORT_FILE, port_file_locator
from cljassist.repl.health import ReplHealth
from cljassist.repl.local_server import start_local_nrepl
from cljassist.types import CompletionRequest, ReplStatus
from cljassist.verify import repl_compile
from tests.fakes import ScriptedModel
from tests.fixtures_repl import TEST_JVM_OPTS, nrepl_missing_reason
from tests.test_daemon import LineClient
from tests.waiting import wait_until

CODE = "(ns faults.core (:require [clojure.string :as str]))\n\n(defn shout [s]\n  "
SUFFIX = ")\n"
CANDIDATES = ["(str/upper-case s)", "(str/lower-case s)", "(str/trim s)"]
WAIT = 60.0  # only there so that a broken engine fails the test instead of hanging it
SLACK = 3.0  # seconds over the budget a loaded 2-core machine may add; 30 s is what this guards against
NOT_ANSWERING = re.compile(r"^REPL not answering since \d\d:\d\d:\d\d; retrying in the background$")


def request(i: int) -> CompletionRequest:
    """A different place each time: the recent-results cache must not answer for the REPL."""
    return CompletionRequest(CODE + f";; edit {i}\n  ", SUFFIX)


def require_nrepl() -> None:
    reason = nrepl_missing_reason()
    if reason:
        pytest.skip(f"real nREPL unavailable: {reason}")


def start_nrepl_in(directory):
    """A dedicated nREPL in `directory`, once its .nrepl-port names it (nREPL writes the file
    just after it says it started)."""
    server = start_local_nrepl(directory, timeout=120, jvm_opts=TEST_JVM_OPTS)
    wait_until(lambda: port_file_locator(directory)() == (server.host, server.port), f"{server} to write its port file")
    return server


# ------------------------------------------------------------------------------------------------
# the budget and the health record


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_budget_gives_each_call_what_is_left_and_nothing_once_ended():
    clock = Clock()
    budget = TimeBudget(2.0, clock=clock)
    started = budget.now()
    clock.now += 0.5
    assert budget.charge_since(started) == 0.5
    assert budget.left() == 1.5
    budget.at_least(10.0)  # setting a session up may take longer than a request
    assert budget.left() == 9.5
    budget.end("the REPL did not answer")
    assert budget.left() == 0.0 and budget.ended == "the REPL did not answer"
    budget.end("a later reason")
    assert budget.ended == "the REPL did not answer"  # the first trouble is the news


def test_a_budget_only_counts_what_was_waited():
    clock = Clock()
    budget = TimeBudget(2.0, clock=clock)
    clock.now += 30.0  # the model generating between the context and the checks
    started = budget.now()
    clock.now += 0.25
    budget.charge_since(started)
    assert budget.left() == 1.75 and budget.spent == 0.25


def test_health_marks_the_repl_and_a_background_probe_clears_it():
    answers = threading.Event()
    probed = []

    def probe(timeout: float) -> None:
        probed.append(timeout)
        if not answers.is_set():
            raise ReplTimeout("no reply")

    health = ReplHealth(probe, interval_s=0.05)
    try:
        assert health.answering and health.reason is None
        health.check()
        health.mark_not_answering()
        assert not health.answering and NOT_ANSWERING.match(health.reason), health.reason
        with pytest.raises(ReplNotAnswering, match="REPL not answering since"):
            health.check()
        wait_until(lambda: len(probed) >= 2, "a second probe")  # retried while the REPL stays silent
        assert not health.answering and all(t == 0.05 for t in probed)
        answers.set()
        wait_until(lambda: health.answering, "the probe to clear the mark")
        health.check()
    finally:
        health.close()


def test_a_refused_probe_waits_its_interval_and_a_closed_health_stops_probing():
    probed = []

    def probe(timeout: float) -> None:
        probed.append(time.monotonic())
        raise ReplUnavailable("connection refused")

    health = ReplHealth(probe, interval_s=0.2)
    health.mark_not_answering()
    wait_until(lambda: len(probed) >= 2, "a second probe")
    health.close()
    count = len(probed)
    assert probed[1] - probed[0] >= 0.2 * 0.9  # not a busy loop on a refused port
    time.sleep(0.3)
    assert len(probed) == count and not health.answering
    health.mark_not_answering()  # closed: no new prober
    time.sleep(0.3)
    assert len(probed) == count


def test_port_file_locator_reads_the_file_afresh(tmp_path):
    locate = port_file_locator(tmp_path)
    assert locate() is None
    (tmp_path / PORT_FILE).write_text("40001")
    assert locate() == ("127.0.0.1", 40001)
    (tmp_path / PORT_FILE).write_text("40002\n")
    assert locate() == ("127.0.0.1", 40002)
    (tmp_path / PORT_FILE).write_text("garbage")
    assert locate() is None  # the caller keeps the last place it knew


# ------------------------------------------------------------------------------------------------
# fault injection: a frozen JVM


@pytest.mark.integration
@pytest.mark.security
def test_a_frozen_repl_costs_one_budget_then_is_skipped_until_it_answers_again(tmp_path):
    require_nrepl()
    server = start_nrepl_in(tmp_path)
    settings = Settings(candidates=len(CANDIDATES))
    budget = settings.repl_timeout_ms / 1000
    assert settings.repl_timeout_ms == REPL_TIMEOUT.value
    try:
        with open_frontend(settings, near=tmp_path, model=ScriptedModel(CANDIDATES), service=True) as front:
            front.provider.client.eval(CODE + "s)", timeout=WAIT)  # the user loads their namespace

            def complete(i: int):
                return front.service.submit(request(i)).result(WAIT)

            warm = complete(0)
            assert warm.repl is ReplStatus.USED, warm.repl_label
            assert [s.checks["compiles"] for s in warm.suggestions] == [True] * len(CANDIDATES)

            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                first = complete(1)
                waited = time.monotonic() - started
                # one budget for the context and all three candidates' checks, not one per call
                assert waited < budget + SLACK, f"the frozen REPL held the request {waited:.1f}s"
                assert first.repl is ReplStatus.FAILED, first.repl_label
                said = re.search(r"\((\d+\.\d)s waited on the REPL in this request, of (\d+)s\)", first.repl_error)
                assert said, first.repl_error
                assert float(said.group(1)) <= waited + 0.2 and int(said.group(2)) == budget  # what really happened
                assert "no reply within" in first.repl_error and "left out until it answers again" in first.repl_error
                assert first.suggestions and all(s.checks["compiles"] is None for s in first.suggestions)
                # what was checked before the freeze is not served as checked while the REPL is silent
                assert front.engine.cached(request(0)) is None

                for i in (2, 3):
                    started = time.monotonic()
                    later = complete(i)
                    assert time.monotonic() - started < budget  # skipped at once, not waited for
                    assert later.repl is ReplStatus.SKIPPED, later.repl_label
                    assert NOT_ANSWERING.match(later.repl_error), later.repl_error
                    assert later.repl_label == f"skipped: {later.repl_error}"
                    assert later.suggestions and all(s.checks["compiles"] is None for s in later.suggestions)
                assert front.provider.health.probes >= 1  # the background tried meanwhile
            finally:
                os.kill(server.process.pid, signal.SIGCONT)

            # the probe in flight is answered once the JVM runs again; a later request uses the REPL
            back = wait_until(lambda: (r := complete(4)).repl is ReplStatus.USED and r, "the REPL to be used again")
            assert [s.checks["compiles"] for s in back.suggestions] == [True] * len(CANDIDATES)
    finally:
        os.kill(server.process.pid, signal.SIGCONT)  # never leave a stopped JVM behind
        server.stop()


@pytest.mark.integration
@pytest.mark.security
def test_a_slow_check_spends_the_request_budget_but_a_live_repl_is_not_left_out(tmp_path, monkeypatch):
    """A candidate whose macro expansion sleeps: the call times out, the interrupt is answered (the
    JVM is alive), so the REPL is not marked and the next request uses it. (The check runs no macro
    of the user's: here the namespace's macros are trusted, so that one sleeps.)"""
    require_nrepl()
    rules = repl_compile.load_rules().trusting("faults.core")
    monkeypatch.setattr(repl_compile, "load_rules", lambda path=None: rules)
    server = start_nrepl_in(tmp_path)
    try:
        client = NreplClient.connect(server.host, server.port)
        client.eval(CODE + "s)\n(defmacro nap [] (Thread/sleep 20000) nil)", timeout=WAIT)
        settings = Settings(candidates=3, cache=False)
        opened = open_engine(settings, near=tmp_path, model=ScriptedModel(["(nap)", "(str/trim s)", "(str/trim s)"]))
        try:
            opened.engine.complete(request(0))  # our sessions set up: the budget below is the request's
            started = time.monotonic()
            slow = opened.engine.complete(request(1))
            assert time.monotonic() - started < settings.repl_timeout_ms / 1000 + SLACK
            assert slow.repl is ReplStatus.FAILED and "interrupted" in slow.repl_error, slow.repl_label
            assert opened.provider.health.answering
            opened.engine.model.outputs = ["(str/trim s)"]
            after = opened.engine.complete(request(2))
            assert after.repl is ReplStatus.USED and after.suggestions[0].checks["compiles"] is True, after.repl_label
        finally:
            opened.close()
            client.close()
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------
# fault injection: the REPL restarted on another port


@pytest.mark.integration
@pytest.mark.security
def test_serve_follows_a_repl_restarted_on_another_port_and_an_explicit_one_stays(tmp_path):
    require_nrepl()
    first = start_nrepl_in(tmp_path)
    second = None
    settings = Settings(candidates=1)
    try:
        with open_frontend(settings, near=tmp_path, model=ScriptedModel(CANDIDATES[:1]), service=True) as front, \
                Daemon(front.service, tmp_path) as daemon:
            explicit = open_engine(settings.with_overrides(nrepl=first.endpoint), near=tmp_path, explicit=True,
                                   model=ScriptedModel(CANDIDATES[:1]))
            printer_out = io.StringIO()
            terminal = connect_or_start_nrepl(settings, tmp_path, False, Printer(printer_out))
            try:
                terminal.client.eval(CODE + "s)", timeout=WAIT)  # the user loads their namespace
                line = LineClient(daemon.port)
                before = _complete_over(line, daemon, 1)
                assert before["repl"] == "used" and before["suggestions"][0]["checks"]["compiles"] is True, before
                assert explicit.engine.complete(request(1)).repl is ReplStatus.USED

                first.stop()
                second = start_nrepl_in(tmp_path)
                assert second.port != first.port

                # `repl`'s evaluation reconnects to the new port, and the user reloads there
                wait_until(lambda: _evaluates(terminal.client, CODE + "s)"), "the prompt's client to reconnect")
                assert terminal.client.endpoint == second.endpoint and terminal.from_port_file

                after = wait_until(lambda: (r := _complete_over(line, daemon, 2))["repl"] == "used" and r,
                                   "serve to use the new REPL")
                assert after["suggestions"][0]["checks"]["compiles"] is True, after
                assert front.provider.client.endpoint == second.endpoint

                # --nrepl HOST:PORT names a REPL: it is not swapped for whatever the port file says
                fixed = explicit.engine.complete(request(3))
                assert fixed.repl is ReplStatus.FAILED and first.endpoint in fixed.repl_error, fixed.repl_label
                assert explicit.provider.client.endpoint == first.endpoint
                line.close()
            finally:
                explicit.close()
                terminal.close()
    finally:
        first.stop()
        if second is not None:
            second.stop()


def _complete_over(line: LineClient, daemon: Daemon, i: int) -> dict:
    """Completion asked over one connection to the daemon, as an editor holds it."""
    req = request(i)
    reply = line.ask({"op": "complete", "token": daemon.token, "id": i, "prefix": req.prefix, "suffix": req.suffix,
                      "file": "faults.clj"})
    assert reply.get("id") == i and "error" not in reply, reply
    return reply


def _evaluates(client: NreplClient, code: str) -> bool:
    try:
        return client.eval(code, timeout=WAIT).ok
    except ReplUnavailable:
        return False
