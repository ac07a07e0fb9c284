"""What was kept: sids in the daemon's replies, `accepted` and `retained`, the statistics file and
`cljassist stats`.

The protocol tests drive an in-process daemon over the scripted model (the fields, not the model,
are the point); the last tests run `cljassist serve` for real with SmolLM2, with statistics on and
off, and read the file back with `cljassist stats`."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cljassist.cli import build_parser, main as cli_main
from cljassist.config import Settings, parse_config_text
from cljassist.engine import Engine
from cljassist.errors import InputError
from cljassist.frontends.daemon import PORT_FILE_NAME, Daemon, read_port_file
from cljassist.frontends.proxy import NreplProxy
from cljassist.frontends.service import CompletionService
from cljassist.repl.bencode import encode
from cljassist.stats import report
from cljassist.stats.store import StatsWriter, append_events, generations, read_events, stats_path
from cljassist.stats.tracker import SuggestionTracker, UnknownSid, open_tracker
from tests.fakes import ScriptedModel
from tests.test_daemon import LineClient
from tests.test_proxy import FakeUpstream, RawClient, merged

ROOT = Path(__file__).resolve().parents[1]
WAIT = 30.0


@pytest.fixture
def stats_file(tmp_path, monkeypatch):
    """The statistics file as `stats_path` finds it, in a fresh state directory."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return stats_path()


@pytest.fixture
def recording(tmp_path, stats_file):
    """A daemon over the scripted model (suggestions "(inc x)" then "x") recording into `stats_file`;
    `finish()` stops it and waits for the file to be written."""
    service = CompletionService(Engine(ScriptedModel(["(inc x)", "x"]), Settings(candidates=2)))
    writer = StatsWriter(stats_file)
    daemon = Daemon(service, tmp_path, suggestions=SuggestionTracker("scripted", writer.put)).start()

    def finish() -> list[dict]:
        daemon.stop()
        writer.close()
        return read_events(stats_file).events

    daemon.finish = finish
    yield daemon
    daemon.stop()
    writer.close()
    service.close()


@pytest.fixture
def not_recording(tmp_path, stats_file):
    service = CompletionService(Engine(ScriptedModel(["(inc x)", "x"]), Settings(candidates=2)))
    daemon = Daemon(service, tmp_path).start()
    yield daemon
    daemon.stop()
    service.close()


def ask(client: LineClient, daemon: Daemon, id, op: str, **fields) -> dict:
    client.send_json({"op": op, "token": daemon.token, "id": id, **fields})
    reply = client.read()
    assert reply["id"] == id, reply
    return reply


def complete(client, daemon, id=1, **fields) -> list[dict]:
    return ask(client, daemon, id, "complete", prefix="(defn f [x] ", suffix=")", **fields)["suggestions"]


AFTER = {"prefix": "(defn f [x] (inc x)", "suffix": ")"}  # the accepted op's text after the accept


# ------------------------------------------------------------------------------- the protocol

def test_every_suggestion_carries_a_sid_unique_across_replies(recording):
    client = LineClient(recording.port)
    first = complete(client, recording, 1)
    second = complete(client, recording, 2, buffer="other")
    sids = [s["sid"] for s in first + second]
    assert [s["text"] for s in first] == ["(inc x)", "x"]
    assert len(set(sids)) == 4 and all(isinstance(sid, str) and 0 < len(sid) <= 24 for sid in sids)
    client.close()


def test_accept_then_retained_is_recorded_as_shown_accepted_and_kept(recording):
    client = LineClient(recording.port)
    suggestions = complete(client, recording)
    sid = suggestions[0]["sid"]
    accepted = ask(client, recording, 2, "accepted", sid=sid, kind="whole", chars=7, **AFTER)
    assert accepted == {"id": 2, "prefetching": 0, "recorded": True}
    assert ask(client, recording, 3, "retained", sid=sid, chars=5) == {"id": 3, "recorded": True}
    client.close()
    events = recording.finish()
    assert [(e["event"], e["sid"]) for e in events] == [("shown", sid), ("accepted", sid), ("retained", sid)]
    shown, took, kept = events
    assert shown["model"] == "scripted" and shown["chars"] == 7 and shown["rank"] == 1 and shown["offered"] == 2
    assert took["kind"] == "whole" and took["chars"] == 7 and kept["chars"] == 5
    # only the first suggestion of the reply (the ghost text) counts as shown
    assert suggestions[1]["sid"] not in {e["sid"] for e in events}


def test_word_accepts_add_up_and_a_whole_accept_takes_what_is_left(recording):
    client = LineClient(recording.port)
    sid = complete(client, recording)[0]["sid"]
    assert ask(client, recording, 2, "accepted", sid=sid, kind="word", chars=4, **AFTER)["recorded"] is True
    assert ask(client, recording, 3, "accepted", sid=sid, **AFTER)["recorded"] is True  # whole: the other 3
    error = ask(client, recording, 4, "accepted", sid=sid, kind="word", chars=1, **AFTER)["error"]
    assert "more than the 0 characters" in error
    client.close()
    events = recording.finish()
    assert [(e["event"], e.get("kind"), e["chars"]) for e in events] == [
        ("shown", None, 7), ("accepted", "word", 4), ("accepted", "whole", 3)]
    [record] = report.shown_suggestions(events)
    assert record.accepted == 7 and record.whole


def test_accepting_an_offered_suggestion_records_it_as_shown(recording):
    client = LineClient(recording.port)
    first, second = complete(client, recording)
    ask(client, recording, 2, "accepted", sid=second["sid"], kind="line", chars=1, **AFTER)
    client.close()
    events = recording.finish()
    shown = [e for e in events if e["event"] == "shown"]
    assert [(e["sid"], e["rank"]) for e in shown] == [(first["sid"], 1), (second["sid"], 2)]


def test_accepted_without_a_sid_is_answered_as_before(recording):
    client = LineClient(recording.port)
    complete(client, recording)
    assert ask(client, recording, 2, "accepted", **AFTER) == {"id": 2, "prefetching": 0}
    client.close()
    assert [e["event"] for e in recording.finish()] == ["shown"]


def test_edn_and_nrepl_safe_clients_get_sids_too(recording):
    client = LineClient(recording.port)
    reply = ask(client, recording, 1, "complete", prefix="(defn f [x] ", suffix=")", **{"nrepl-safe": True})
    sid = reply["suggestions"][0]["sid"]
    client.send_raw(('{:op "retained" :token "%s" :id 2 :sid "%s" :chars 1}\n' % (recording.token, sid)).encode())
    assert "was not accepted" in client.read()["error"]
    client.send_raw(('{:op "accepted" :token "%s" :id 3 :sid "%s" :kind "word" :chars 3 :prefix "(inc" '
                     ':suffix "" :nrepl-safe "true"}\n' % (recording.token, sid)).encode())
    assert client.read() == {"id": 3, "prefetching": 0, "recorded": "true"}
    client.close()


def test_with_statistics_off_sids_are_given_and_checked_and_nothing_is_written(not_recording, stats_file):
    client = LineClient(not_recording.port)
    sid = complete(client, not_recording)[0]["sid"]
    assert ask(client, not_recording, 2, "accepted", sid=sid, **AFTER)["recorded"] is False
    assert ask(client, not_recording, 3, "retained", sid=sid, chars=7) == {"id": 3, "recorded": False}
    assert "unknown sid" in ask(client, not_recording, 4, "retained", sid="nope", chars=1)["error"]
    client.close()
    not_recording.stop()
    assert not stats_file.parent.exists()


def test_describe_declares_retained_and_the_new_accepted_fields(recording):
    client = LineClient(recording.port)
    ops = ask(client, recording, 1, "describe")["ops"]
    assert '"sid"' in ops["retained"]["requires"] and '"chars"' in ops["retained"]["requires"]
    assert '"sid"' in ops["accepted"]["optional"] and "whole | word | line" in ops["accepted"]["optional"]
    assert '"sid"' in ops["complete"]["returns"]
    client.close()


@pytest.mark.security
@pytest.mark.parametrize("op, fields, expected", [
    ("accepted", {"sid": "0badc0de-1"}, "unknown sid '0badc0de-1'"),
    ("accepted", {"sid": "x" * 100_000}, "unknown sid 'xxxx"),
    ("accepted", {"sid": "ffffffff-" + "9" * 5000}, "unknown sid"),
    ("accepted", {"sid": 12}, "'sid' must be a string"),
    ("accepted", {"sid": "\ud800"}, "not valid Unicode"),
    ("accepted", {"sid": "FIRST", "kind": "all"}, "'kind' must be one of whole, word, line"),
    ("accepted", {"sid": "FIRST", "kind": "word"}, "'chars' is needed with kind 'word'"),
    ("accepted", {"sid": "FIRST", "chars": -1}, "'chars' must be an integer >= 0"),
    ("accepted", {"sid": "FIRST", "chars": True}, "'chars' must be an integer"),
    ("accepted", {"sid": "FIRST", "chars": 8}, "'chars' 8 is more than the 7 characters"),
    ("accepted", {"sid": "FIRST", "chars": 10 ** 30}, "is more than the 7 characters"),
    ("retained", {"sid": "FIRST", "chars": 1}, "was not accepted"),
    ("retained", {"chars": 1}, "'retained' needs 'sid'"),
    ("retained", {"sid": "FIRST"}, "'retained' needs 'chars'"),
    ("retained", {"sid": ["FIRST"], "chars": 1}, "'sid' must be a string"),
])
def test_bad_stats_reports_get_a_clear_error_and_the_connection_survives(recording, op, fields, expected):
    client = LineClient(recording.port)
    sid = complete(client, recording)[0]["sid"]
    fields = {k: (sid if v == "FIRST" else v) for k, v in fields.items()}
    if op == "accepted":
        fields.update(AFTER)
    client.send_json({"op": op, "token": recording.token, "id": 2, **fields})
    reply = client.read()
    assert reply["id"] == 2 and expected in reply["error"] and len(reply["error"]) < 300, reply
    assert "\n" not in reply["error"] and "internal error" not in reply["error"]
    assert ask(client, recording, 3, "ping")["pong"] is True
    client.close()
    assert [e["event"] for e in recording.finish()] == ["shown"]  # nothing of the bad report recorded


@pytest.mark.security
def test_retained_cannot_report_more_than_was_accepted(recording):
    client = LineClient(recording.port)
    sid = complete(client, recording)[0]["sid"]
    ask(client, recording, 2, "accepted", sid=sid, kind="word", chars=4, **AFTER)
    assert ask(client, recording, 3, "retained", sid=sid, chars=3)["recorded"] is True
    assert "more than the 1 accepted characters" in ask(client, recording, 4, "retained", sid=sid, chars=2)["error"]
    client.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.security
def test_a_sid_expires_after_its_ttl_unused_and_when_crowded_out():
    clock, events = Clock(), []
    tracker = SuggestionTracker("m", events.append, max_sids=3, ttl_s=300, monotonic=clock)
    [old] = tracker.offer(["(inc x)"])
    clock.now += 200
    assert tracker.accepted(old, "word", 1) is True  # a use keeps it alive
    clock.now += 250
    assert tracker.retained(old, 1) is True
    clock.now += 301
    with pytest.raises(UnknownSid, match="expired"):
        tracker.retained(old, 0)
    crowded = tracker.offer(["a", "b", "c"])[0]
    tracker.offer(["d"])
    with pytest.raises(UnknownSid, match=f"suggestion {crowded} expired"):
        tracker.accepted(crowded, None, None)
    with pytest.raises(UnknownSid, match="unknown sid"):
        SuggestionTracker("m", None).accepted(old, None, None)  # another daemon's sid
    assert [e["event"] for e in events] == ["shown", "accepted", "retained", "shown", "shown"]


# ------------------------------------------------------------------------------- through the nREPL proxy

def describe_reply(frame: bytes) -> bytes | None:
    """A stand-in upstream's describe, with one op of its own."""
    if b"8:describe" in frame:
        return encode({"id": "d", "ops": {"eval": {}}, "status": ["done"]})
    return None


@pytest.fixture
def proxied(stats_file):
    """A proxy over the scripted model recording into `stats_file`, in front of a stand-in upstream,
    and a raw bencode client of it; `finish()` stops it and reads the file back."""
    upstream = FakeUpstream(describe_reply)
    service = CompletionService(Engine(ScriptedModel(["(inc x)", "x"]), Settings(candidates=2)))
    writer = StatsWriter(stats_file)
    proxy = NreplProxy(upstream.endpoint, service, suggestions=SuggestionTracker("scripted", writer.put)).start()
    client = RawClient(proxy.port)

    def finish() -> list[dict]:
        proxy.stop()
        writer.close()
        return read_events(stats_file).events

    client.finish = finish
    yield client
    client.close()
    proxy.stop()
    writer.close()
    service.close()
    upstream.stop()


def nrepl_ask(client, id: str, op: str, **fields) -> dict:
    client.send({"op": op, "id": id, "session": "s1", **fields})
    return merged(client.replies(id))


def test_the_proxy_gives_sids_and_records_accepted_and_retained(proxied):
    reply = nrepl_ask(proxied, "c1", "cljassist/complete", prefix="(defn f [x] ", suffix=")")
    first, second = reply["suggestions"]
    assert first["sid"] != second["sid"]
    accepted = nrepl_ask(proxied, "a1", "cljassist/accepted", sid=first["sid"], kind="word", chars=4, **AFTER)
    assert accepted["recorded"] == "true" and accepted["prefetching"] == 0 and accepted["status"] == {"done"}
    retained = nrepl_ask(proxied, "r1", "cljassist/retained", sid=first["sid"], chars=4)
    assert retained["recorded"] == "true" and retained["status"] == {"done"}
    events = proxied.finish()
    assert [(e["event"], e["chars"]) for e in events] == [("shown", 7), ("accepted", 4), ("retained", 4)]


@pytest.mark.security
def test_the_proxy_answers_a_bad_report_with_an_err_and_goes_on(proxied):
    nrepl_ask(proxied, "c1", "cljassist/complete", prefix="(defn f [x] ", suffix=")")
    unknown = nrepl_ask(proxied, "r1", "cljassist/retained", sid="0badc0de-1", chars=1)
    assert "unknown sid" in unknown["err"] and set(unknown["status"]) == {"done", "error"}
    missing = nrepl_ask(proxied, "a1", "cljassist/accepted", sid="x", **AFTER)
    assert "unknown sid 'x'" in missing["err"]
    assert "needs 'code'" in nrepl_ask(proxied, "a2", "cljassist/accepted", sid="x")["err"]
    assert [e["event"] for e in proxied.finish()] == ["shown"]


def test_the_proxy_adds_its_ops_to_the_upstreams_describe(proxied):
    ops = nrepl_ask(proxied, "d", "describe")["ops"]
    assert set(ops) == {"eval", "cljassist/complete", "cljassist/accepted", "cljassist/retained",
                        "cljassist/warm"}
    assert "sid" in ops["cljassist/retained"]["requires"]


def test_no_stats_on_serve_and_proxy_and_stats_false_in_the_config_turn_recording_off(tmp_path, stats_file):
    from cljassist.frontends.bootstrap import settings_from_args

    for command in (["serve", "--no-stats"], ["proxy", "--no-stats"]):
        settings = settings_from_args(build_parser().parse_args(command), tmp_path)
        assert settings.stats is False
        with open_tracker(settings, "loaded") as tracker:
            sid = tracker.offer(["(inc x)"])[0]
            assert tracker.accepted(sid, None, None) is False and "statistics off" in tracker.status()
    (tmp_path / ".cljassist.edn").write_text("{:stats false}")
    assert settings_from_args(build_parser().parse_args(["serve"]), tmp_path).stats is False
    assert not stats_file.parent.exists()
    with open_tracker(Settings(), "loaded") as tracker:
        tracker.accepted(tracker.offer(["(inc x)"])[0], None, None)
        assert tracker.recording and str(stats_file) in tracker.status()
    assert [e["event"] for e in read_events(stats_file).events] == ["shown", "accepted"]


# ------------------------------------------------------------------------------- the file

def shown_event(sid, time, model="m", chars=10):
    return {"event": "shown", "sid": sid, "time": time, "model": model, "chars": chars, "rank": 1, "offered": 3}


def test_the_file_round_trips_and_is_private_whatever_the_umask(stats_file):
    old = os.umask(0)
    try:
        events = [shown_event("a-1", 1.5), {"event": "accepted", "sid": "a-1", "time": 2.0, "kind": "word", "chars": 3},
                  {"event": "retained", "sid": "a-1", "time": 32.0, "chars": 3}]
        append_events(stats_file, events[:1])
        append_events(stats_file, events[1:])
    finally:
        os.umask(old)
    assert read_events(stats_file).events == events
    assert read_events(stats_file).warnings == []
    assert stat.S_IMODE(stats_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(stats_file.parent.stat().st_mode) == 0o700
    assert stats_file == Path(os.environ["XDG_STATE_HOME"]) / "cljassist" / "stats.jsonl"


def test_the_default_place_is_under_the_home_and_a_relative_xdg_dir_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = tmp_path / ".local" / "state" / "cljassist" / "stats.jsonl"
    assert stats_path({}) == expected
    assert stats_path({"XDG_STATE_HOME": "relative/dir"}) == expected


def test_the_file_is_rotated_and_both_generations_stay_under_the_cap(stats_file):
    cap = 2000
    written = [shown_event(f"r-{i}", float(i)) for i in range(60)]
    for event in written:
        append_events(stats_file, [event], cap=cap)
    older, current = generations(stats_file)
    assert older.exists() and older.stat().st_size + current.stat().st_size <= cap
    kept = read_events(stats_file).events
    line = len(json.dumps(written[-1], separators=(",", ":"))) + 1
    assert older.stat().st_size > cap // 2 - line  # a generation is rotated out full
    assert kept == written[-len(kept):]  # the newest, in order, none lost in between


@pytest.mark.parametrize("cap", [16 * 1024 * 1024, 3000])
def test_writers_appending_at_once_never_mix_their_lines(stats_file, cap):
    """Two daemons (here: threads, each opening the file as a daemon does) share one file."""
    failures = []

    def write(name: str) -> None:
        try:
            for i in range(150):
                append_events(stats_file, [shown_event(f"{name}-{i}", float(i)),
                                           shown_event(f"{name}-{i}b", float(i))], cap=cap)
        except Exception as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert failures == []
    read = read_events(stats_file)
    assert read.warnings == []
    if cap > 1_000_000:
        assert len(read.events) == 4 * 300
    for name in ("w0", "w1", "w2", "w3"):  # each writer's lines in its own order
        mine = [e["sid"] for e in read.events if e["sid"].startswith(name + "-")]
        assert mine == sorted(mine, key=lambda sid: (int(sid.split("-")[1].rstrip("b")), sid.endswith("b")))


@pytest.mark.security
def test_a_damaged_file_gives_one_warning_line_and_every_readable_line(stats_file):
    good = [shown_event("d-1", 1.0), {"event": "accepted", "sid": "d-1", "time": 2.0, "kind": "whole", "chars": 10}]
    append_events(stats_file, good[:1])
    with open(stats_file, "ab") as f:
        f.write(b'{"event": "shown", "sid": "d-2"}\n'  # a field missing
                b"\xff\xfe not even text\n"
                b'["a list"]\n'
                b'{"event": "accepted", "sid": "d-1", "time": 2.0, "kind": "all", "chars": 1}\n'
                b'{"event": "accepted", "sid": "d-1", "time": "2", "kind": "whole", "chars": 1}\n'
                b'{"event": "shown", "sid": "d-3", "time": NaN, "model": "m", "chars": 1, "rank": 1, "offered": 1}\n'
                b'{"event": "shown", "sid": "d-4", "time": 1e300, "model": "m", "chars": 1, "rank": 1, "offered": 1}\n'
                b'{"event": "retained", "sid": "d-1", "time": 3, "chars": -5}\n'
                + b'{"event": "retained", "sid": "d-1", "time": 3, "chars": 1' + b"0" * 5000 + b'}\n'
                + b"[" * 100_000 + b"\n"
                + b'{"event": "sho')  # cut short by a crash
    append_events(stats_file, good[1:])  # starts on a line of its own
    read = read_events(stats_file)
    assert read.events == good
    [warning] = read.warnings
    assert "11 damaged lines skipped (first: line 2)" in warning and "\n" not in warning


def test_nothing_in_the_statistics_code_can_reach_the_network():
    import ast

    network = {"socket", "ssl", "http", "urllib", "ftplib", "smtplib", "asyncio", "requests", "httpx", "xmlrpc"}
    sources = sorted((ROOT / "cljassist" / "stats").glob("*.py"))
    assert [p.name for p in sources] == ["__init__.py", "report.py", "store.py", "tracker.py"]
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not {name.split(".")[0] for name in names} & network, (source.name, names)


@pytest.mark.security
def test_a_symlink_in_place_of_the_file_is_not_followed(stats_file, tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("")
    stats_file.parent.mkdir(parents=True)
    stats_file.symlink_to(target)
    with pytest.raises(OSError):
        append_events(stats_file, [shown_event("s-1", 1.0)])
    assert target.read_text() == ""


@pytest.mark.security
@pytest.mark.skipif(os.geteuid() != 0, reason="making a directory another user's takes root")
def test_a_directory_of_another_user_is_not_written_into(stats_file):
    stats_file.parent.mkdir(parents=True)
    os.chmod(stats_file.parent, 0o777)
    os.chown(stats_file.parent, 65534, 65534)
    with pytest.raises(OSError, match="belongs to another user"):
        append_events(stats_file, [shown_event("o-1", 1.0)])
    assert list(stats_file.parent.iterdir()) == []
    assert stat.S_IMODE(stats_file.parent.stat().st_mode) == 0o777  # left as it was


def test_the_writer_never_raises_and_warns_once_when_the_disk_fails(tmp_path, capsys):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    writer = StatsWriter(blocker / "cljassist" / "stats.jsonl")
    for i in range(3):
        writer.put(shown_event(f"w-{i}", 1.0))
    writer.close()
    assert writer.failures == 3
    assert capsys.readouterr().err.count("statistics are not recorded") == 1


def test_the_writer_drops_past_its_queue_instead_of_blocking(stats_file, capsys):
    writer = StatsWriter(stats_file, max_waiting=1)
    for i in range(500):
        writer.put(shown_event(f"q-{i}", 1.0))
    writer.close()
    written = len(read_events(stats_file).events)
    assert written + writer.dropped == 500 and written >= 1
    if writer.dropped:
        assert capsys.readouterr().err.count("dropped") == 1


def test_replies_do_not_wait_for_a_disk_that_hangs(tmp_path, stats_file, monkeypatch):
    from cljassist.stats import store

    disk_free, writes_started = threading.Event(), threading.Event()
    real_append = store.append_events

    def hanging_append(path, events, cap=store.STATS_FILE.value):
        writes_started.set()
        assert disk_free.wait(WAIT)
        real_append(path, events, cap)

    monkeypatch.setattr(store, "append_events", hanging_append)
    service = CompletionService(Engine(ScriptedModel(["(inc x)", "x"]), Settings(candidates=2)))
    writer = StatsWriter(stats_file)
    try:
        with Daemon(service, tmp_path, suggestions=SuggestionTracker("scripted", writer.put)) as daemon:
            client = LineClient(daemon.port)
            sid = complete(client, daemon)[0]["sid"]
            assert writes_started.wait(WAIT)  # the writer is stuck on the first line...
            for i in range(3):  # ...and the daemon answers on
                assert ask(client, daemon, 10 + i, "accepted", sid=sid, kind="word", chars=1, **AFTER)["recorded"]
                assert complete(client, daemon, 20 + i, buffer=f"b{i}")
            client.close()
            assert not stats_file.exists()
            disk_free.set()
    finally:
        disk_free.set()
        writer.close()
        service.close()
    assert [e["event"] for e in read_events(stats_file).events] == ["shown"] + ["accepted", "shown"] * 3


def test_stats_is_a_config_setting():
    assert parse_config_text("{:stats false}") == {"stats": False}
    assert Settings().stats is True
    with pytest.raises(InputError, match=":stats must be a bool"):
        parse_config_text('{:stats "no"}')


# ------------------------------------------------------------------------------- cljassist stats

def day_at(days_ago: int, hour: int = 12) -> float:
    day = dt.date.today() - dt.timedelta(days=days_ago)
    return dt.datetime.combine(day, dt.time(hour)).timestamp()


@pytest.fixture
def two_days_two_models(stats_file):
    """Yesterday: model a, 4 shown, one taken whole (10 chars, 8 kept), one a word (4 chars, no
    report). Today: model b, 2 shown, one taken whole (6 chars, all kept)."""
    yesterday, today = day_at(1), day_at(0)
    events = [shown_event(f"y-{i}", yesterday + i, "a", 10) for i in range(4)]
    events += [{"event": "accepted", "sid": "y-0", "time": yesterday + 5, "kind": "whole", "chars": 10},
               {"event": "retained", "sid": "y-0", "time": yesterday + 35, "chars": 8},
               {"event": "accepted", "sid": "y-1", "time": yesterday + 6, "kind": "word", "chars": 4},
               {"event": "accepted", "sid": "gone-1", "time": yesterday + 7, "kind": "whole", "chars": 3}]
    events += [shown_event(f"t-{i}", today + i, "b", 6) for i in range(2)]
    events += [{"event": "accepted", "sid": "t-0", "time": today + 5, "kind": "whole", "chars": 6},
               {"event": "retained", "sid": "t-0", "time": today + 35, "chars": 6}]
    append_events(stats_file, events)
    return yesterday, today


def run_stats(capsys, *args) -> tuple[int, str, str]:
    code = cli_main(["stats", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_stats_json_counts_per_day_and_per_model(two_days_two_models, capsys):
    code, out, err = run_stats(capsys, "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    yesterday = dt.date.today() - dt.timedelta(days=1)
    by_day = {row["key"]: row for row in data["by_day"]}
    assert by_day[yesterday.isoformat()] == {
        "key": yesterday.isoformat(), "shown": 4, "accepted": 2, "whole": 1, "partial": 1, "accepted_chars": 14,
        "kept_chars": 8, "reported_chars": 10, "rate": 0.5, "kept_share": 0.8}
    by_model = {row["key"]: row for row in data["by_model"]}
    assert by_model["b"]["shown"] == 2 and by_model["b"]["rate"] == 0.5 and by_model["b"]["kept_share"] == 1.0
    assert data["total"]["shown"] == 6 and data["total"]["accepted_chars"] == 20 and data["total"]["kept_chars"] == 14


def test_stats_prints_tables_per_day_and_per_model(two_days_two_models, capsys):
    code, out, _ = run_stats(capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("What was kept: 6 suggestions shown in all that is recorded")
    today = dt.date.today().isoformat()
    [today_row] = [line for line in lines if line.startswith(today)]
    assert today_row.split() == [today, "2", "1", "50.0%", "1", "0", "6", "6", "100.0%"]
    [model_a] = [line for line in lines if line.startswith("a ")]
    assert model_a.split() == ["a", "4", "2", "50.0%", "1", "1", "14", "8", "80.0%"]
    [total] = [line for line in lines if line.startswith("total")][-1:]
    assert total.split() == ["total", "6", "3", "50.0%", "2", "1", "20", "14", "87.5%"]


def test_stats_by_model_for_the_last_day(two_days_two_models, capsys):
    code, out, _ = run_stats(capsys, "--by", "model", "--days", "1")
    assert code == 0
    assert "2 suggestions shown in the last 1 day" in out
    assert [line.split()[0] for line in out.splitlines()[2:5]] == ["model", "b", "total"]
    assert dt.date.today().isoformat() not in out  # no per-day table


def test_stats_with_nothing_recorded(stats_file, capsys):
    code, out, _ = run_stats(capsys)
    assert code == 0 and out == f"What was kept: 0 suggestions shown in all that is recorded ({stats_file})\n"


@pytest.mark.security
def test_stats_on_a_damaged_file_warns_in_one_line_and_counts_the_rest(two_days_two_models, stats_file, capsys):
    with open(stats_file, "ab") as f:
        f.write(b"\x00\x00garbage\n{}\n")
    code, out, err = run_stats(capsys, "--json")
    assert code == 0 and json.loads(out)["total"]["shown"] == 6
    assert err.count("\n") == 1 and "2 damaged lines skipped" in err


def test_stats_bad_days_is_a_one_line_error(stats_file, capsys):
    code, _, err = run_stats(capsys, "--days", "0")
    assert code == 2 and err == "cljassist: --days must be at least 1, got 0\n"


def test_stats_plot_writes_a_png(two_days_two_models, tmp_path, capsys):
    out_png = tmp_path / "kept.png"
    code, out, _ = run_stats(capsys, "--plot", str(out_png))
    assert code == 0 and f"plot written to {out_png}" in out
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out_png.stat().st_size > 5000


def test_stats_plot_without_matplotlib_is_a_one_line_error(two_days_two_models, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    code, _, err = run_stats(capsys, "--plot", str(tmp_path / "kept.png"))
    assert code == 2 and err == "cljassist: --plot needs matplotlib, which is not installed (pip install matplotlib)\n"
    assert not (tmp_path / "kept.png").exists()


def test_stats_plot_with_nothing_recorded_says_so(stats_file, tmp_path, capsys):
    code, _, err = run_stats(capsys, "--plot", str(tmp_path / "kept.png"))
    assert code == 2 and "nothing to plot" in err


# ------------------------------------------------------------------------------- cljassist serve, for real

def serve(tmp_path: Path, state: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cljassist", "serve", "--no-repl", "--model", "smollm2-135m", "--max-new-tokens", "16",
         "-n", "2", "--deadline-ms", "60000", "--min-score", "0", *flags],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "XDG_STATE_HOME": str(state)})


def accept_first_suggestion(process: subprocess.Popen, tmp_path: Path) -> tuple[list[str], dict, dict]:
    """The serve's status lines, then complete, accept the first suggestion whole and report it all
    kept; the accepted and retained replies. Stops the daemon with SIGTERM."""
    status = [process.stdout.readline() for _ in range(3)]
    assert "listening on 127.0.0.1:" in status[0], status
    info = read_port_file(tmp_path / PORT_FILE_NAME)
    client = LineClient(info.port)
    client.send_json({"op": "complete", "id": 1, "token": info.token,
                      "prefix": "(defn add-one [x]\n  (+ x ", "suffix": "))\n"})
    reply = client.read()
    assert reply["suggestions"], reply
    first = reply["suggestions"][0]
    client.send_json({"op": "accepted", "id": 2, "token": info.token, "sid": first["sid"],
                      "prefix": "(defn add-one [x]\n  (+ x " + first["text"], "suffix": "))\n"})
    accepted = client.read()
    client.send_json({"op": "retained", "id": 3, "token": info.token, "sid": first["sid"], "chars": len(first["text"])})
    retained = client.read()
    process.send_signal(signal.SIGTERM)
    assert process.wait(WAIT) == 0
    client.close()
    return status, accepted, retained


@pytest.mark.integration
def test_serve_records_what_was_kept_and_stats_reads_it(tmp_path, default_model_file):
    state = tmp_path / "state"
    process = serve(tmp_path, state)
    try:
        status, accepted, retained = accept_first_suggestion(process, tmp_path)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stats_file = state / "cljassist" / "stats.jsonl"
    assert f"statistics recorded in {stats_file}" in status[2]
    assert accepted == {"id": 2, "prefetching": 0, "recorded": True}
    assert retained == {"id": 3, "recorded": True}
    assert stat.S_IMODE(stats_file.stat().st_mode) == 0o600
    result = subprocess.run([sys.executable, "-m", "cljassist", "stats", "--json", "--by", "model"],
                            capture_output=True, text=True, timeout=WAIT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "XDG_STATE_HOME": str(state)})
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)["by_model"]
    assert row["key"] == "smollm2-135m" and row["shown"] == 1 and row["accepted"] == 1 and row["whole"] == 1
    assert row["accepted_chars"] == row["kept_chars"] > 0 and row["rate"] == 1.0


@pytest.mark.integration
def test_serve_with_no_stats_writes_nothing(tmp_path, default_model_file):
    state = tmp_path / "state"
    process = serve(tmp_path, state, "--no-stats")
    try:
        status, accepted, retained = accept_first_suggestion(process, tmp_path)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "statistics off" in status[2]
    assert accepted["recorded"] is False and retained == {"id": 3, "recorded": False}
    assert not state.exists()
