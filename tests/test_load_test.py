"""scripts/load_test.py: its pure helpers, its clients against an in-process daemon over fake
engines (including daemons that misbehave, so the checks are seen to fail), and one real run: the
script starts `cljassist serve` with the default model and no REPL, 3 clients for 4 seconds."""

from __future__ import annotations

import importlib.util
import itertools
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cljassist.types import CompletionResult, Suggestion
from cljassist.errors import Cancelled
from cljassist.frontends.daemon import Daemon
from cljassist.frontends.service import CompletionService
from tests.fakes import FakeEngine, ScriptedModel

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "load_test.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("cljassist_load_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


lt = _load_script()


# ------------------------------------------------------------------------------- pure helpers

def test_percentile_interpolates_between_closest_ranks():
    values = list(range(1, 101))  # 1..100
    assert lt.percentile(values, 50) == pytest.approx(50.5)
    assert lt.percentile(values, 95) == pytest.approx(95.05)
    assert lt.percentile(values, 0) == 1 and lt.percentile(values, 100) == 100
    assert lt.percentile([7.0], 95) == 7.0
    assert lt.percentile([3, 1, 2], 50) == 2  # unsorted input
    assert lt.percentile([], 50) is None


def test_parse_proc_status_reads_the_kilobyte_and_count_fields():
    text = ("Name:\tpython3\nState:\tS (sleeping)\nVmHWM:\t  301234 kB\nVmRSS:\t  280000 kB\n"
            "Threads:\t7\nSigQ:\t0/63448\nCpus_allowed_list:\t0-1\n")
    fields = lt.parse_proc_status(text)
    assert fields["VmRSS"] == 280000 and fields["VmHWM"] == 301234 and fields["Threads"] == 7
    assert "Name" not in fields and "SigQ" not in fields and "State" not in fields


def test_read_proc_snapshot_of_this_process():
    snapshot = lt.read_proc_snapshot(__import__("os").getpid())
    assert 0 < snapshot.rss_mib <= snapshot.peak_rss_mib
    assert snapshot.threads >= 1 and snapshot.open_fds >= 3


def test_pick_cursor_lands_on_a_non_blank_line_between_indentation_and_end():
    text = "(ns a)\n\n  (defn f [x]\n    (inc x))\n"
    lines = text.split("\n")
    rng = random.Random(3)
    for _ in range(200):
        line, column = lt.pick_cursor(text, rng)
        body = lines[line - 1]
        assert body.strip()
        assert len(body) - len(body.lstrip()) + 1 <= column <= len(body) + 1


def test_project_sources_strip_the_cursor_marker_and_skip_hidden_and_big_files(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.clj").write_text("(ns a)\n(inc <CURSOR>1)\n")
    (tmp_path / "src" / "b.cljc").write_text("(ns b)\n")
    (tmp_path / "src" / "notes.txt").write_text("not clojure")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "c.clj").write_text("(ns c)\n")
    (tmp_path / "big.clj").write_text(";" * (lt.MAX_SOURCE_BYTES + 1))
    sources = lt.project_sources(tmp_path)
    assert sources == {"src/a.clj": "(ns a)\n(inc 1)\n", "src/b.cljc": "(ns b)\n"}
    assert lt.namespace_of(sources["src/a.clj"]) == "a" and lt.namespace_of("(+ 1 2)") is None


def test_with_buffers_each_client_types_in_one_file_and_the_clients_share_them():
    files = ["a.clj", "b.clj", "c.clj", "d.clj", "e.clj"]
    assert lt.client_files(files, 6, 0) == files  # by default every client in every file
    by_client = [lt.client_files(files, i, 4) for i in range(16)]
    assert all(len(chosen) == 1 for chosen in by_client)
    assert [chosen[0] for chosen in by_client[:5]] == ["a.clj", "b.clj", "c.clj", "d.clj", "a.clj"]
    assert {chosen[0] for chosen in by_client} == {"a.clj", "b.clj", "c.clj", "d.clj"}  # 16 clients, 4 buffers
    options = lt.build_parser().parse_args(["--buffers", "4"])
    assert options.buffers == 4 and options.clients == 16 and options.seconds == 60
    assert not options.shared_buffers  # by default each client has a buffer of its own
    assert lt.build_parser().parse_args(["--buffers", "4", "--shared-buffers"]).shared_buffers


def test_shared_buffers_name_the_file_and_own_buffers_the_client():
    assert lt.buffer_name(3, "src/a.clj", shared=False) == "load-client-3"
    assert lt.buffer_name(3, "src/a.clj", shared=True) == lt.buffer_name(7, "src/a.clj", shared=True)
    assert lt.buffer_name(3, "src/a.clj", shared=True) != lt.buffer_name(3, "src/b.clj", shared=True)


def test_the_warm_up_covers_every_file_the_clients_type_in_up_to_the_kept_prompts():
    files = ["a.clj", "b.clj", "c.clj", "d.clj", "e.clj"]
    assert lt.files_to_warm(files, 16, 4) == ["a.clj", "b.clj", "c.clj", "d.clj"]
    assert lt.files_to_warm(files, 2, 4) == ["a.clj", "b.clj"]  # two clients type in two files
    assert lt.files_to_warm(files, 3, 0) == files  # every client in every file
    many = [f"f{i:03}.clj" for i in range(lt.KV_STATES.value + 5)]
    assert lt.files_to_warm(many, 1, 0) == many[:lt.KV_STATES.value]  # the daemon keeps no more


def test_more_buffers_than_files_is_a_setup_error(tmp_path):
    options = lt.build_parser().parse_args(["--buffers", "3"])  # the demo project has two files
    with pytest.raises(lt.SetupFailed, match="--buffers 3: .* has only 2 Clojure file"):
        lt.run_load(options, tmp_path)


def test_think_range_parses_low_high():
    assert lt._think_range("50-200") == (50.0, 200.0)
    assert lt._think_range("10") == (10.0, 10.0)
    with pytest.raises(Exception):
        lt._think_range("200-50")


def test_judge_fails_on_errors_uncancelled_superseded_or_nothing_answered():
    def report(**fields):
        base = dict(clients=1, seconds_asked=1, seconds_ran=1, model="m", repl="off", candidates=1,
                    max_new_tokens=16, seed=1, files=1, answered_with_suggestions=3, superseded_sent=2,
                    superseded_cancelled=2)
        r = lt.Report(**{**base, **fields})
        r.every_superseded_cancelled = r.superseded_cancelled == r.superseded_sent
        lt.judge(r)
        return r

    assert report().ok
    assert not report(error_count=1).ok
    bad = report(superseded_cancelled=1, superseded_answered=1)
    assert not bad.ok and "1 of 2 superseded" in bad.failures[0]
    assert not report(answered_with_suggestions=0).ok
    assert "FAILED" in lt.format_report(bad) and "OK" in lt.format_report(report())


def test_rss_figures_and_leak_warnings():
    before = lt.ProcSnapshot(rss_mib=270.04, peak_rss_mib=271.0, threads=4, open_fds=6)
    after = lt.ProcSnapshot(rss_mib=272.0, peak_rss_mib=272.5, threads=4, open_fds=6)
    rss = lt.rss_figures(before, after, [271.0, 273.0, 272.1])
    assert rss["before"] == 270.0 and rss["after"] == 272.0
    assert rss["peak"] == 273.0  # a sample above the lazily updated VmHWM wins
    assert (rss["under_load_first"], rss["under_load_last"], rss["under_load_min"]) == (271.0, 272.1, 271.0)
    assert rss["mid_run"] == 273.0 and rss["second_half_growth"] == pytest.approx(-0.9)
    assert lt.rss_figures(before, after, [271.0])["second_half_growth"] is None  # one sample: no halves
    report = lt.Report(clients=1, seconds_asked=1, seconds_ran=1, model=None, repl=None, candidates=1,
                       max_new_tokens=16, seed=1, files=1, rss_mib=rss, threads={"before": 4, "after": 4},
                       open_fds={"before": 6, "after": 6})
    assert lt.leak_warnings(report) == []
    # The kept prompts make before -> after grow by design; the second half of the run is the leak signal.
    report.rss_mib = {**rss, "after": 400.0}
    assert lt.leak_warnings(report) == []
    report.threads, report.rss_mib = {"before": 4, "after": 20}, {**rss, "second_half_growth": 40.0}
    assert lt.leak_warnings(report) == ["threads 4 before the clients, 20 after",
                                        "RSS grew by 40.0 MiB over the second half of the run"]
    report.rss_mib = {**lt.rss_figures(before, after, []), "after": 400.0}  # no samples: before -> after
    assert lt.leak_warnings(report)[1] == "RSS grew by 130.0 MiB"


def _client(shared: bool):
    options = lt.build_parser().parse_args(["--shared-buffers"] if shared else [])
    return lt.LoadClient(0, 1, "token", {"a.clj": "(ns a)\n"}, options, time.monotonic(), lt.ErrorLog())


SUPERSEDED = {"error": "superseded by a newer request for load-file:a.clj", "cancelled": True}


def test_with_shared_buffers_a_request_cancelled_by_another_client_is_counted_apart():
    client = _client(shared=True)
    client._record(lt.Pending("complete", 0.0), {"id": "c0-1", **SUPERSEDED}, 0.25)
    client._record(lt.Pending("superseded", 0.0), {"id": "c0-2", **SUPERSEDED}, 0.01)
    client._record(lt.Pending("complete", 0.0), {"id": "c0-3", "suggestions": [{"text": "x"}], "ms": 90}, 2.0)
    tally = client.tally
    assert client.errors.total() == 0
    assert tally.superseded_by_other == 1 and tally.by_other_ms == [pytest.approx(250.0)]
    assert tally.superseded_cancelled == 1 and tally.cancel_ms == [pytest.approx(10.0)]  # the same-write pair
    assert tally.latency_ms == [pytest.approx(2000.0)]  # answered only
    assert sorted(tally.reply_ms) == [pytest.approx(10.0), pytest.approx(250.0), pytest.approx(2000.0)]


def test_with_own_buffers_a_cancelled_request_is_an_error():
    client = _client(shared=False)
    client._record(lt.Pending("complete", 0.0), {"id": "c0-1", **SUPERSEDED}, 0.25)
    assert client.tally.superseded_by_other == 0 and client.tally.reply_ms == []
    assert client.errors.counts == {"complete request cancelled unexpectedly": 1}
    shared = _client(shared=True)  # shared or not, a cancellation for another reason is an error
    shared._record(lt.Pending("complete", 0.0), {"id": "c0-1", "error": "client gone", "cancelled": True}, 0.1)
    assert shared.errors.counts == {"complete request cancelled unexpectedly": 1}


def test_the_summary_labels_answers_apart_from_all_replies_and_cancellations_by_others():
    tallies = [lt.ClientTally(sent=4, with_suggestions=1, superseded_sent=1, superseded_cancelled=1,
                              superseded_by_other=2, latency_ms=[2500.0], cancel_ms=[5.0], by_other_ms=[30.0, 40.0],
                              reply_ms=[2500.0, 5.0, 30.0, 40.0])]
    report = lt.Report(clients=4, seconds_asked=60, seconds_ran=60, model="m", repl="off", candidates=1,
                       max_new_tokens=16, seed=1, files=4, buffers=4, shared_buffers=True)
    lt.merge_tallies(report, tallies, 2.0)
    lt.judge(report)
    assert report.ok, report.failures  # cancellations by another client are no error
    assert report.superseded_by_other == 2 and report.by_other_ms["n"] == 2
    assert report.latency_ms["n"] == 1 and report.reply_ms["n"] == 4
    assert report.replies_per_s == 2.0 and report.answered_per_s == 0.5
    text = lt.format_report(report)
    assert "a buffer per file (its clients share it)" in text
    assert "  answered      p50 2500 ms  p95 2500 ms  max 2500 ms  (n=1)  send -> answer" in text
    assert "  all replies   p50 35 ms" in text and "(n=4)  send -> any reply, fast cancellations included" in text
    assert "  by another    2 cancelled by another client's newer request" in text
    own = lt.Report(clients=4, seconds_asked=60, seconds_ran=60, model="m", repl="off", candidates=1,
                    max_new_tokens=16, seed=1, files=4, buffers=4)
    assert "a buffer per client" in lt.format_report(own) and "by another" not in lt.format_report(own)


# ------------------------------------------------------------------------------- clients, in process

class SlowEngine(FakeEngine):
    """Answers after `delay_s`, polling the cancel flag like the real engine; or raises `error`."""

    def __init__(self, delay_s: float = 0.05, error: Exception | None = None, source: str = "model") -> None:
        self.delay_s = delay_s
        self.error = error
        self.source = source
        self.model = ScriptedModel([])

    def complete(self, request, n=None, cancelled=None):
        end = time.monotonic() + self.delay_s
        while time.monotonic() < end:
            if cancelled is not None and cancelled():
                raise Cancelled("cancelled in the fake engine")
            time.sleep(0.005)
        if self.error is not None:
            raise self.error
        return CompletionResult([Suggestion("(inc x)", 0.9, {"balanced": True})], ms=self.delay_s * 1000,
                                source=self.source)


class NeverSupersedingService(CompletionService):
    """A broken service: every request gets a buffer of its own, so nothing is ever superseded."""

    _serial = itertools.count()

    def submit(self, request, buffer=None, n=None):
        return super().submit(request, buffer=f"{buffer}-{next(self._serial)}", n=n)


def _run_clients(tmp_path, service, clients=2, requests=6, rate="1.0", shared=False):
    options = lt.build_parser().parse_args(
        ["--seconds", "30", "--max-requests", str(requests), "--supersede-rate", rate, "--think-ms", "0-5",
         "--reply-timeout", "30"] + (["--shared-buffers"] if shared else []))
    sources = {"src/demo/core.clj": (ROOT / "fixtures/demo/src/demo/core.clj").read_text()}
    errors = lt.ErrorLog()
    daemon = Daemon(service, tmp_path).start()
    try:
        threads = [lt.LoadClient(i, daemon.port, daemon.token, sources, options, time.monotonic() + 30, errors)
                   for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
            assert not t.is_alive()
    finally:
        daemon.stop()
        service.close()
    report = lt.Report(clients=clients, seconds_asked=30, seconds_ran=1, model=None, repl=None, candidates=1,
                       max_new_tokens=16, seed=1, files=1, shared_buffers=shared)
    lt.merge_tallies(report, [t.tally for t in threads], 1.0)
    report.errors, report.error_count = errors.as_json(), errors.total()
    lt.judge(report)
    return report


def test_clients_count_answers_cancellations_and_pings_against_a_working_daemon(tmp_path):
    report = _run_clients(tmp_path, CompletionService(SlowEngine()))
    assert report.ok, report.failures
    assert report.requests_sent == 2 * 6  # the cap: 6 complete requests each, 3 pairs
    assert report.superseded_sent == report.superseded_cancelled == 6
    assert report.answered_with_suggestions == 6 and report.pings == 6
    assert report.latency_ms["n"] == 6 and report.ping_ms["n"] == 6


def test_clients_sharing_a_buffer_cancel_each_other_without_errors(tmp_path):
    # Two clients in one file, one buffer: each one's request cancels the other's older one.
    report = _run_clients(tmp_path, CompletionService(SlowEngine(delay_s=0.1)), rate="0", shared=True)
    assert report.ok, report.failures
    assert report.error_count == 0 and report.superseded_by_other > 0
    answered = report.answered_with_suggestions + report.answered_empty
    assert answered + report.superseded_by_other == report.requests_sent == 12
    assert report.reply_ms["n"] == 12 and report.latency_ms["n"] == answered


def test_with_shared_buffers_a_same_write_pair_still_cancels_its_first(tmp_path):
    (tmp_path / "working").mkdir()
    (tmp_path / "broken").mkdir()
    report = _run_clients(tmp_path / "working", CompletionService(SlowEngine()), rate="1.0", shared=True)
    assert report.ok, report.failures
    assert report.superseded_sent == report.superseded_cancelled == 6
    report = _run_clients(tmp_path / "broken", NeverSupersedingService(SlowEngine()), rate="1.0", shared=True)
    assert not report.ok and report.superseded_answered == 6


def test_a_superseded_request_that_is_not_cancelled_fails_the_run(tmp_path):
    report = _run_clients(tmp_path, NeverSupersedingService(SlowEngine()))
    assert not report.ok
    assert report.superseded_answered == 6 and report.superseded_cancelled == 0
    assert not report.every_superseded_cancelled


def test_a_superseded_request_answered_from_cache_is_counted_apart_and_does_not_fail(tmp_path):
    report = _run_clients(tmp_path, NeverSupersedingService(SlowEngine(delay_s=0, source="recent")))
    assert report.superseded_from_cache == 6 and report.superseded_answered == 0
    assert not report.every_superseded_cancelled  # the strict figure stays honest
    assert report.ok, report.failures
    assert report.answered_by_source == {"recent": 6}


def test_error_replies_are_counted_with_their_first_message(tmp_path):
    report = _run_clients(tmp_path, CompletionService(SlowEngine(error=RuntimeError("boom"))), rate="0")
    assert not report.ok
    assert report.errors["error reply"]["count"] == report.requests_sent == 12
    assert "boom" in report.errors["error reply"]["first"][0]


# ------------------------------------------------------------------------------- the real thing

@pytest.mark.integration
def test_load_test_script_against_a_real_daemon(tmp_path, default_model_file):
    out = tmp_path / "load.json"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--clients", "3", "--seconds", "4", "--no-repl", "--json", str(out),
         "--reply-timeout", "120"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    report = json.loads(out.read_text())
    assert report["error_count"] == 0 and report["errors"] == {}
    assert report["answered_with_suggestions"] + report["answered_empty"] > 0
    # Every superseded request came back cancelled, except one the engine answered from its cache before
    # the daemon read the newer request (nothing left to cancel; see the script's docstring).
    assert report["superseded_answered"] == 0
    assert report["superseded_cancelled"] + report["superseded_from_cache"] == report["superseded_sent"]
    assert report["pings"] > 0 and report["ping_ms"]["n"] == report["pings"]
    for key in ("before", "after", "peak"):
        assert report["rss_mib"][key] > 0
    assert report["shutdown"]["exit_code"] == 0 and report["shutdown"]["port_file_removed"]
    assert "result        OK" in completed.stdout


def test_count_tracebacks_finds_the_daemons_tracebacks(tmp_path):
    log = tmp_path / "daemon.log"
    log.write_text("cljassist serve: listening\nTraceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
                   "    boom()\nRuntimeError: boom\nTraceback (most recent call last):\n  File \"y\"\nKeyError: 1\n")
    count, first = lt.count_tracebacks(log)
    assert count == 2 and first.endswith("RuntimeError: boom")
    log.write_text("cljassist serve: stopped\n")
    assert lt.count_tracebacks(log) == (0, "")
