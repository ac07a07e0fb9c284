"""The daemon (`cljassist serve`): its port file, token, wire protocol, cancellation and shutdown.

Most tests drive an in-process Daemon over a fake engine; the last one runs `cljassist serve` for
real (the bundled model, no REPL) and stops it with SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import edn_format
import pytest

from cljassist.config import Settings
from cljassist.engine import Engine
from cljassist.types import CompletionResult, Suggestion
from cljassist.errors import Cancelled
from cljassist.frontends import daemon as daemon_module
from cljassist.frontends.daemon import PORT_FILE_NAME, Daemon, DaemonAlreadyRunning, PortFile, read_port_file
from cljassist.frontends.protocol import decode_line
from cljassist.frontends.service import CompletionService
from tests.fakes import FakeEngine, ScriptedModel, generate_until_released
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
WAIT = 30.0  # generous: only there so a broken daemon fails the test instead of hanging it


class LineClient:
    """A raw client of the daemon's line protocol."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.stream = self.sock.makefile("rb")

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_json(self, message: dict) -> None:
        self.send_raw(json.dumps(message).encode() + b"\n")

    def ask(self, message: dict) -> dict:
        """Send one request and read the next reply."""
        self.send_json(message)
        return self.read()

    def read(self) -> dict:
        line = self.stream.readline()
        assert line, "the daemon closed the connection"
        return decode_line(line)[0]

    def read_raw(self) -> bytes:
        return self.stream.readline()

    def at_eof(self) -> bool:
        return self.stream.readline() == b""

    def close(self) -> None:
        self.stream.close()
        self.sock.close()


class GatedEngine(FakeEngine):
    """An engine whose completions wait for `release` (polling the cancel flag like the real one)
    and record whether they were cancelled."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.cancelled_seen = threading.Event()
        self.model = ScriptedModel([])
        self.calls: list[str] = []

    def complete(self, request, n=None, cancelled=None):
        self.calls.append(request.prefix)
        self.started.set()
        try:
            generate_until_released(self.release, cancelled)
        except Cancelled:
            self.cancelled_seen.set()
            raise
        return CompletionResult([Suggestion(text="(inc x)", score=0.9, checks={"balanced": True, "compiles": None})],
                                ms=1.0)


@pytest.fixture
def scripted_daemon(tmp_path):
    service = CompletionService(Engine(ScriptedModel(["(inc x)", "x"]), Settings(candidates=2)))
    daemon = Daemon(service, tmp_path).start()
    yield daemon
    daemon.stop()
    service.close()


@pytest.fixture
def gated(tmp_path):
    engine = GatedEngine()
    service = CompletionService(engine)
    daemon = Daemon(service, tmp_path).start()
    yield daemon, engine
    engine.release.set()
    daemon.stop()
    service.close()


def complete_message(daemon: Daemon, id, **fields) -> dict:
    return {"op": "complete", "token": daemon.token, "id": id, "prefix": "(defn f [x] ", "suffix": ")", **fields}


# ------------------------------------------------------------------------------- port file

def test_port_file_is_owner_only_and_names_port_token_and_pid(scripted_daemon, tmp_path):
    path = tmp_path / PORT_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = edn_format.loads(path.read_text())
    assert data[edn_format.Keyword("port")] == scripted_daemon.port
    assert data[edn_format.Keyword("token")] == scripted_daemon.token
    assert data[edn_format.Keyword("pid")] == os.getpid()
    assert len(scripted_daemon.token) == 32 and int(scripted_daemon.token, 16) >= 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_port_file_is_private_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        with Daemon(CompletionService(GatedEngine()), tmp_path) as daemon:
            assert stat.S_IMODE(daemon.port_file.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_stop_removes_the_port_file_and_closes_connections(tmp_path):
    service = CompletionService(GatedEngine())
    daemon = Daemon(service, tmp_path).start()
    client = LineClient(daemon.port)
    client.send_json({"op": "ping", "id": 1, "token": daemon.token})
    assert client.read()["pong"] is True  # accepted and served, not just waiting in the backlog
    daemon.stop()
    assert not (tmp_path / PORT_FILE_NAME).exists()
    assert client.at_eof()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", daemon.port), timeout=2).close()
    service.close()


def test_stop_leaves_a_port_file_that_is_no_longer_ours(tmp_path):
    service = CompletionService(GatedEngine())
    daemon = Daemon(service, tmp_path).start()
    newer = PortFile(1234, "f" * 32, os.getpid())
    daemon.port_file.write_text(newer.edn())
    daemon.stop()
    assert read_port_file(tmp_path / PORT_FILE_NAME) == newer
    service.close()


def test_a_second_daemon_in_the_same_directory_refuses(scripted_daemon, tmp_path):
    with pytest.raises(DaemonAlreadyRunning, match="already serves"):
        Daemon(CompletionService(GatedEngine()), tmp_path).start()
    assert read_port_file(tmp_path / PORT_FILE_NAME).token == scripted_daemon.token
    client = LineClient(scripted_daemon.port)
    client.send_json({"op": "ping", "id": 1, "token": scripted_daemon.token})
    assert client.read()["pong"] is True


def test_serve_refuses_before_loading_the_model_when_the_directory_is_served(scripted_daemon, tmp_path,
                                                                             monkeypatch, capsys):
    from cljassist.cli import main

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("cljassist.frontends.common.open_engine", must_not_load)
    monkeypatch.chdir(tmp_path)
    assert main(["serve", "--no-repl"]) == 2
    assert f"already serves {tmp_path}" in capsys.readouterr().err
    assert read_port_file(tmp_path / PORT_FILE_NAME).token == scripted_daemon.token


def test_a_stale_port_file_is_replaced(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on any more
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    (tmp_path / PORT_FILE_NAME).write_text(PortFile(dead_port, "0" * 32, os.getpid()).edn())
    with Daemon(CompletionService(GatedEngine()), tmp_path) as daemon:
        assert read_port_file(tmp_path / PORT_FILE_NAME) == PortFile(daemon.port, daemon.token, os.getpid())
        assert stat.S_IMODE(daemon.port_file.stat().st_mode) == 0o600


def test_a_garbled_port_file_is_replaced(tmp_path):
    (tmp_path / PORT_FILE_NAME).write_text("{:port")
    with Daemon(CompletionService(GatedEngine()), tmp_path) as daemon:
        assert read_port_file(tmp_path / PORT_FILE_NAME).token == daemon.token


def test_listens_on_loopback_only(tmp_path):
    from cljassist.errors import InputError

    with pytest.raises(InputError, match="loopback"):
        Daemon(CompletionService(GatedEngine()), tmp_path, host="0.0.0.0")


# ------------------------------------------------------------------------------- protocol

def test_ping_names_the_model_and_repl(scripted_daemon):
    client = LineClient(scripted_daemon.port)
    client.send_json({"op": "ping", "id": "p", "token": scripted_daemon.token})
    assert client.read() == {"id": "p", "pong": True, "model": "scripted", "repl": "off"}


def test_json_request_gets_a_json_reply(scripted_daemon):
    client = LineClient(scripted_daemon.port)
    client.send_json(complete_message(scripted_daemon, 7))
    raw = client.read_raw()
    reply = json.loads(raw)
    assert reply["id"] == 7
    assert [s["text"] for s in reply["suggestions"]] == ["(inc x)", "x"]
    assert reply["suggestions"][0]["checks"]["balanced"] is True
    assert set(reply) >= {"namespace", "ms", "repl", "withheld"}


def test_edn_request_gets_an_edn_reply(scripted_daemon):
    client = LineClient(scripted_daemon.port)
    client.send_raw(('{:op "complete" :token "%s" :id 8 :code "(ns a)\\n(defn f [x] )" :line 2 :column 13 :n 1}\n'
                     % scripted_daemon.token).encode())
    raw = client.read_raw()
    assert raw.startswith(b"{:") and raw.endswith(b"\n") and raw.count(b"\n") == 1
    reply = edn_format.loads(raw.decode())
    suggestions = reply[edn_format.Keyword("suggestions")]
    assert reply[edn_format.Keyword("id")] == 8 and reply[edn_format.Keyword("namespace")] == "a"
    assert [s[edn_format.Keyword("text")] for s in suggestions] == ["(inc x)"]


def test_nrepl_safe_replies_hold_only_strings_integers_lists_and_maps(scripted_daemon):
    client = LineClient(scripted_daemon.port)
    client.send_json(complete_message(scripted_daemon, 1, **{"nrepl-safe": True}))
    reply = client.read()

    def bencodable(value) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and bencodable(v) for k, v in value.items())
        if isinstance(value, list):
            return all(bencodable(v) for v in value)
        return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))

    assert bencodable(reply)
    assert reply["suggestions"][0]["checks"]["balanced"] == "true"


def test_wrong_or_missing_token_is_refused_and_the_connection_closed(scripted_daemon):
    for token in ("0" * 32, None, 12):
        client = LineClient(scripted_daemon.port)
        message = complete_message(scripted_daemon, "t")
        message["token"] = token
        if token is None:
            del message["token"]
        client.send_json(message)
        reply = client.read()
        assert reply["id"] == "t" and "token" in reply["error"] and "suggestions" not in reply
        assert client.at_eof()


def test_malformed_lines_get_an_error_and_the_connection_survives(scripted_daemon):
    client = LineClient(scripted_daemon.port)
    client.send_raw(b"this is {not json\n")
    assert "malformed" in client.read()["error"]
    client.send_raw(b"[1, 2]\n")
    assert "malformed" in client.read()["error"]
    client.send_raw(b"\xff\xfe\n")
    assert "malformed" in client.read()["error"]
    client.send_json({"op": "complete", "id": 2, "token": scripted_daemon.token, "line": 1})
    reply = client.read()
    assert reply["id"] == 2 and "needs 'code'" in reply["error"]
    client.send_json({"op": "frobnicate", "id": 3, "token": scripted_daemon.token})
    error = client.read()["error"]
    assert "unknown op 'frobnicate'" in error and '"complete"' in error and '"describe"' in error
    client.send_json({"op": ["complete"], "id": 5, "token": scripted_daemon.token})
    assert "unknown op" in client.read()["error"]
    client.send_json({"op": "ping", "id": 4, "token": scripted_daemon.token})
    assert client.read()["pong"] is True


def test_an_overlong_line_is_refused_and_the_connection_survives(scripted_daemon, monkeypatch):
    monkeypatch.setattr(daemon_module, "MAX_LINE_BYTES", 1000)
    client = LineClient(scripted_daemon.port)
    client.send_json(complete_message(scripted_daemon, 1, prefix="x" * 300_000))
    assert "longer than 1000 bytes" in client.read()["error"]
    client.send_json({"op": "ping", "id": 2, "token": scripted_daemon.token})
    assert client.read() == {"id": 2, "pong": True, "model": "scripted", "repl": "off"}


def test_many_connections_at_once(scripted_daemon):
    clients = [LineClient(scripted_daemon.port) for _ in range(5)]
    for i, client in enumerate(clients):
        client.send_json(complete_message(scripted_daemon, i, buffer=f"buffer-{i}"))
    for i, client in enumerate(clients):
        reply = client.read()
        assert reply["id"] == i and reply["suggestions"]


# ------------------------------------------------------------------------------- cancellation and order

def test_a_ping_is_answered_while_a_completion_is_pending(gated):
    daemon, engine = gated
    client = LineClient(daemon.port)
    client.send_json(complete_message(daemon, "slow"))
    assert engine.started.wait(WAIT)
    client.send_json({"op": "ping", "id": "fast", "token": daemon.token})
    assert client.read()["id"] == "fast"  # answered out of order
    engine.release.set()
    reply = client.read()
    assert reply["id"] == "slow" and reply["suggestions"][0]["text"] == "(inc x)"


def test_a_newer_request_for_the_same_buffer_cancels_the_older(gated):
    daemon, engine = gated
    client = LineClient(daemon.port)
    client.send_json(complete_message(daemon, 1, buffer="core.clj"))
    assert engine.started.wait(WAIT)
    client.send_json(complete_message(daemon, 2, buffer="core.clj", prefix="(defn g [y] "))
    first = client.read()
    assert first["id"] == 1 and first["cancelled"] is True and "superseded" in first["error"]
    assert engine.cancelled_seen.wait(WAIT)
    engine.release.set()
    second = client.read()
    assert second["id"] == 2 and second["suggestions"]
    assert engine.calls == ["(defn f [x] ", "(defn g [y] "]


def test_a_newer_request_from_another_connection_cancels_too(gated):
    daemon, engine = gated
    first, second = LineClient(daemon.port), LineClient(daemon.port)
    first.send_json(complete_message(daemon, 1, file="/p/core.clj"))
    assert engine.started.wait(WAIT)
    second.send_json(complete_message(daemon, 2, file="/p/core.clj"))
    reply = first.read()
    assert reply["cancelled"] is True
    engine.release.set()
    assert second.read()["suggestions"]


def test_a_client_that_disconnects_has_its_pending_request_cancelled(gated):
    daemon, engine = gated
    client = LineClient(daemon.port)
    client.send_json(complete_message(daemon, 1))
    assert engine.started.wait(WAIT)
    client.close()
    assert engine.cancelled_seen.wait(WAIT)
    other = LineClient(daemon.port)
    other.send_json({"op": "ping", "id": 2, "token": daemon.token})
    assert other.read()["pong"] is True


# ------------------------------------------------------------------------------- cljassist serve, for real

@pytest.mark.integration
def test_cljassist_serve_answers_and_cleans_up_on_sigterm(tmp_path, default_model_file):
    process = subprocess.Popen(
        # a generous deadline: a busy test box must not turn the answer into an empty one; every
        # suggestion shown whatever the model's calibration says of it: this is about the plumbing
        [sys.executable, "-m", "cljassist", "serve", "--no-repl", "--max-new-tokens", "16", "-n", "2",
         "--deadline-ms", "60000", "--min-score", "0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)},
    )
    try:
        first = process.stdout.readline()
        assert "listening on 127.0.0.1:" in first, first
        assert "not injected (no REPL)" in process.stdout.readline()
        info = read_port_file(tmp_path / PORT_FILE_NAME)
        assert info is not None and info.pid == process.pid
        assert stat.S_IMODE((tmp_path / PORT_FILE_NAME).stat().st_mode) == 0o600
        client = LineClient(info.port)
        client.send_json({"op": "ping", "id": 1, "token": info.token})
        assert client.read()["model"]
        client.send_json({"op": "complete", "id": 2, "token": info.token,
                          "prefix": "(defn add-one [x]\n  (+ x ", "suffix": "))\n"})
        reply = client.read()
        assert reply["id"] == 2 and reply["repl"] == "off" and 1 <= len(reply["suggestions"]) <= 2, reply
        assert all(s["checks"]["balanced"] is True and s["text"].strip() for s in reply["suggestions"])
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0
        assert client.at_eof()
        assert not (tmp_path / PORT_FILE_NAME).exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_accepted_prefetches_the_next_line_when_prefetch_is_on(tmp_path):
    model = ScriptedModel(["(inc x)"])
    service = CompletionService(Engine(model, Settings(candidates=1, prefetch=True)))
    try:
        with Daemon(service, tmp_path) as daemon:
            client = LineClient(daemon.port)
            after = {"prefix": "(defn f [x]\n  (inc x)", "suffix": ")\n", "file": "a.clj"}
            client.send_json({"op": "accepted", "token": daemon.token, "id": 1, **after})
            assert client.read() == {"id": 1, "prefetching": 2}
            wait_until(lambda: len(model.prompts) >= 2, "both prefetches to reach the model")
            client.send_json({"op": "complete", "token": daemon.token, "id": 2, "file": "a.clj",
                              "prefix": after["prefix"] + "\n  ", "suffix": ")\n", "n": 1})
            reply = client.read()
            assert reply["source"] == "recent" and reply["suggestions"][0]["text"] == "(inc x)"
            assert len(model.prompts) == 2  # both prefetched; the request itself needed no model call
            client.close()
    finally:
        service.close()


def test_accepted_does_nothing_with_prefetch_off(scripted_daemon):
    client = LineClient(scripted_daemon.port)
    client.send_json({"op": "accepted", "token": scripted_daemon.token, "id": 1, "prefix": "(f x)", "suffix": ""})
    assert client.read() == {"id": 1, "prefetching": 0}
    client.close()


def test_describe_lists_every_declared_op_with_its_contract(scripted_daemon):
    from cljassist.frontends.daemon import OPS

    client = LineClient(scripted_daemon.port)
    client.send_json({"op": "describe", "id": 1, "token": scripted_daemon.token})
    reply = client.read()
    assert reply["id"] == 1
    assert set(reply["ops"]) == set(OPS) >= {"ping", "describe", "complete", "accepted"}
    for name, contract in reply["ops"].items():
        assert contract["doc"] and contract["returns"], name
    assert "prefix" in reply["ops"]["complete"]["requires"]
