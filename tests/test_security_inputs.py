"""Hostile input: every bad input ends as one line and exit code 2 (or, in the daemon, an error reply
or a clean close), never a traceback or a hang; the daemon bounds what a client may cost; the watcher
stays inside DIR. Fuzzing (hypothesis) of the daemon's line decoding and of the config parser."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cljassist.cli import EXIT_ERROR, main
from cljassist.config import Settings, parse_config_text
from cljassist.engine import Engine
from cljassist.errors import InputError
from cljassist.fileio import WriteResult, write_if_unchanged
from cljassist.frontends import daemon as daemon_module
from cljassist.frontends.daemon import Daemon
from cljassist.frontends.protocol import decode_line, encode_line
from cljassist.frontends.service import CompletionService
from cljassist.frontends.watch import MarkerFiller, Status
from cljassist.types import CompletionResult, Suggestion
from tests.fakes import ScriptedModel
from tests.test_daemon import LineClient
from tests.waiting import wait_until

pytestmark = pytest.mark.security

ROOT = Path(__file__).resolve().parents[1]
WAIT = 30.0  # only so that a hang fails the test instead of holding the suite; nothing asserts on time
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])
SOURCE = "(ns a)\n(inc <CURSOR>)\n"


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err.strip()


def run_process(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`cljassist ARGV` in a fresh process; a hang fails the test (TimeoutExpired) and is killed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cljassist", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=WAIT)


def assert_one_line_error(code: int, err: str, *expected: str) -> None:
    assert code == EXIT_ERROR, err
    assert err.startswith("cljassist") and "\n" not in err and "Traceback" not in err, err
    for part in expected:
        assert part in err, err


# ------------------------------------------------------------------------------------------------
# the config file and the flags


def test_a_config_with_a_non_utf8_byte_is_a_one_line_error(capsys, tmp_path):
    (tmp_path / ".cljassist.edn").write_bytes(b"{:candidates 2 \xff}")
    (tmp_path / "a.clj").write_text(SOURCE)
    code, err = run(capsys, "complete", str(tmp_path / "a.clj"), "--no-repl")
    assert_one_line_error(code, err, ".cljassist.edn: not UTF-8 text")


@pytest.mark.parametrize("setting,shown", [
    (":max-new-tokens -5", ":max-new-tokens must be at least 1"),
    (":n-ctx 0", ":n-ctx must be at least"),
    (":deadline-ms -1", ":deadline-ms must be at least 0"),
    (":max-prompt-tokens 0", ":max-prompt-tokens must be at least"),
    (":candidates 1000", ":candidates must be at least 1 and at most 10, got 1000"),
    (":threads 0", ":threads must be at least 1"),
    (":threads 100000", ":threads must be at least 1 and at most"),
    (":repl-timeout-ms 0", ":repl-timeout-ms must be at least 1"),
    (":backend-timeout-ms 99999999", ":backend-timeout-ms must be at least 1 and at most 600000"),
    (":n-ctx 10000000", ":n-ctx must be at least 65 and at most 32768"),
    (":min-score 2", ":min-score must be between 0 and 1"),
])
def test_config_numbers_are_range_checked(capsys, tmp_path, setting, shown):
    (tmp_path / ".cljassist.edn").write_text("{" + setting + "}")
    (tmp_path / "a.clj").write_text(SOURCE)
    # --model names a missing file: a range that is not checked would end there, not in a model load
    code, err = run(capsys, "complete", str(tmp_path / "a.clj"), "--no-repl", "--model", str(tmp_path / "no.gguf"))
    assert_one_line_error(code, err, str(tmp_path / ".cljassist.edn"), shown)


@pytest.mark.parametrize("flags,shown", [
    (["-n", "0"], "-n/--candidates must be at least 1 and at most 10, got 0"),
    (["-n", "-3"], "-n/--candidates must be at least 1 and at most 10, got -3"),
    (["-n", "1000"], "-n/--candidates must be at least 1 and at most 10, got 1000"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    (["--max-new-tokens", "100000"], "--max-new-tokens must be at least 1 and at most 512"),
    (["--threads", "-1"], "--threads must be at least 1"),
    (["--deadline-ms", "-1"], "--deadline-ms must be at least 0"),
    (["--max-prompt-tokens", "3"], "--max-prompt-tokens must be at least 64"),
    (["--backend-timeout-ms", "0"], "--backend-timeout-ms must be at least 1"),
])
def test_flag_numbers_are_range_checked_from_the_same_table(capsys, tmp_path, flags, shown):
    (tmp_path / "a.clj").write_text(SOURCE)
    code, err = run(capsys, "complete", str(tmp_path / "a.clj"), "--no-repl", "--model", str(tmp_path / "no.gguf"),
                    *flags)
    assert_one_line_error(code, err, shown)


def test_a_window_too_small_for_the_suggestion_is_refused(capsys, tmp_path):
    (tmp_path / ".cljassist.edn").write_text("{:n-ctx 400}")
    (tmp_path / "a.clj").write_text(SOURCE)
    code, err = run(capsys, "complete", str(tmp_path / "a.clj"), "--no-repl", "--model", str(tmp_path / "no.gguf"),
                    "--max-new-tokens", "380")
    assert_one_line_error(code, err, "n-ctx 400", "max-new-tokens 380")


def test_a_config_model_path_says_it_came_from_the_config(capsys, tmp_path):
    config = tmp_path / ".cljassist.edn"
    config.write_text('{:model "/nonexistent/m.gguf"}')
    (tmp_path / "a.clj").write_text(SOURCE)
    code, err = run(capsys, "complete", str(tmp_path / "a.clj"), "--no-repl")
    assert_one_line_error(code, err, "/nonexistent/m.gguf", f"(from :model in {config})")
    assert "--model" not in err
    code, err = run(capsys, "complete", str(tmp_path / "a.clj"), "--no-repl", "--model", "/elsewhere/m.gguf")
    assert_one_line_error(code, err, "/elsewhere/m.gguf (from --model)")


def test_a_config_key_with_a_line_break_stays_one_line():
    with pytest.raises(InputError) as error:
        parse_config_text('{"a\nb" 1}')
    assert "\n" not in str(error.value) and "unknown key 'a\\nb'" in str(error.value)


# ------------------------------------------------------------------------------------------------
# the file `complete` reads


def test_complete_on_a_fifo_says_so_instead_of_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "pipe.clj"
    os.mkfifo(fifo)
    done = run_process("complete", str(fifo), "--no-repl", "--line", "1", "--column", "1")
    assert_one_line_error(done.returncode, done.stderr.strip(), "pipe.clj: is a FIFO, not a regular file")


def test_complete_on_dev_zero_is_refused_before_reading(tmp_path):
    done = run_process("complete", "/dev/zero", "--no-repl", "--line", "1", "--column", "1")
    assert_one_line_error(done.returncode, done.stderr.strip(), "/dev/zero: is a device, not a regular file")


def test_complete_refuses_a_file_of_nul_bytes(capsys, tmp_path):
    path = tmp_path / "zeros.clj"
    path.write_bytes(b"\0" * 100)
    code, err = run(capsys, "complete", str(path), "--no-repl", "--line", "1", "--column", "5")
    assert_one_line_error(code, err, "zeros.clj: binary (holds NUL bytes)")


def test_complete_refuses_a_file_over_the_shared_size_cap(capsys, tmp_path):
    path = tmp_path / "huge.clj"
    path.write_text("(ns a)\n" + ";" * (1024 * 1024) + "\n(inc <CURSOR>)\n")
    code, err = run(capsys, "complete", str(path), "--no-repl")
    assert_one_line_error(code, err, "huge.clj: larger than 1 MiB")


def test_complete_on_a_directory_says_so(capsys, tmp_path):
    code, err = run(capsys, "complete", str(tmp_path), "--no-repl", "--line", "1", "--column", "1")
    assert_one_line_error(code, err, "is a directory")


# ------------------------------------------------------------------------------------------------
# the watcher stays inside DIR


class AnsweringEngine:
    def __init__(self, before=None):
        self.before = before
        self.calls = 0

    def complete(self, request, n=None, cancelled=None):
        self.calls += 1
        if self.before is not None:
            self.before()
        return CompletionResult([Suggestion("1", 0.9, {"balanced": True, "reads": True, "compiles": True})], ms=1.0)


def watched(tmp_path):
    root, outside = tmp_path / "project", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    precious = outside / "precious.clj"
    precious.write_text(SOURCE)
    return root, precious


def test_the_watcher_does_not_follow_a_link_out_of_dir(tmp_path):
    root, precious = watched(tmp_path)
    (root / "link.clj").symlink_to(precious)
    err = io.StringIO()
    engine = AnsweringEngine()
    outcome = MarkerFiller(engine, out=io.StringIO(), err=err, root=root).process(root / "link.clj")
    assert outcome.status is Status.SKIPPED and "outside" in outcome.message
    assert precious.read_text() == SOURCE and engine.calls == 0
    assert "link.clj: skipped: leads to" in err.getvalue() and "not followed" in err.getvalue()


def test_the_watcher_does_not_write_through_a_link_re_pointed_out_of_dir_while_completing(tmp_path):
    root, precious = watched(tmp_path)
    inside = root / "inside.clj"
    inside.write_text(SOURCE)
    link = root / "link.clj"
    link.symlink_to(inside)

    def repoint():
        link.unlink()
        link.symlink_to(precious)

    outcome = MarkerFiller(AnsweringEngine(before=repoint), out=io.StringIO(), err=io.StringIO(), root=root).process(link)
    assert outcome.status is Status.SKIPPED
    assert precious.read_text() == SOURCE and inside.read_text() == SOURCE


def test_a_link_inside_dir_is_still_filled(tmp_path):
    root, _ = watched(tmp_path)
    real = root / "real.clj"
    real.write_text(SOURCE)
    (root / "link.clj").symlink_to(real)
    outcome = MarkerFiller(AnsweringEngine(), out=io.StringIO(), err=io.StringIO(), root=root).process(root / "link.clj")
    assert outcome.status is Status.FILLED and "(inc 1)" in real.read_text()


def test_write_if_unchanged_within_refuses_a_target_outside(tmp_path):
    root, precious = watched(tmp_path)
    (root / "link.clj").symlink_to(precious)
    result = write_if_unchanged(root / "link.clj", SOURCE.encode(), b"pwned", within=root)
    assert result is WriteResult.OUTSIDE and precious.read_text() == SOURCE


# ------------------------------------------------------------------------------------------------
# the daemon


@pytest.fixture
def served(tmp_path):
    service = CompletionService(Engine(ScriptedModel(["(inc x)", "x"]), Settings(candidates=2)))
    daemon = Daemon(service, tmp_path).start()
    yield daemon
    daemon.stop()
    service.close()


def ping(daemon: Daemon, id=1) -> dict:
    return {"op": "ping", "id": id, "token": daemon.token}


def test_a_lone_surrogate_in_code_is_a_bad_request_not_an_internal_error(served):
    client = LineClient(served.port)
    raw = b'{"op": "complete", "id": 7, "token": "%s", "code": "(inc \\ud800<CURSOR>)"}\n' % served.token.encode()
    client.send_raw(raw)
    reply = client.read()
    assert reply["id"] == 7 and "'code' is not valid Unicode text" in reply["error"]
    assert "internal error" not in reply["error"]
    assert client.ask(ping(served, 8))["pong"] is True


def test_a_lone_surrogate_in_the_id_is_echoed_escaped(served):
    client = LineClient(served.port)
    client.send_raw(b'{"op": "ping", "id": "\\udc80", "token": "%s"}\n' % served.token.encode())
    assert client.read()["pong"] is True


@pytest.mark.parametrize("nested", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
                                    b"(" * 100_000 + b")" * 100_000])
def test_a_line_nested_100000_deep_gets_an_error_and_the_connection_lives(served, nested):
    client = LineClient(served.port)
    client.send_raw(nested + b"\n")
    assert "malformed message" in client.read()["error"]
    assert client.ask(ping(served))["pong"] is True
    reader_threads = [t for t in threading.enumerate() if t.name.startswith("cljassist-conn-")]
    assert reader_threads and all(t.is_alive() for t in reader_threads)


@pytest.mark.parametrize("opening,closing", [(b"[", b"]"), (b"(", b")"), (b"{:a ", b"}")])
def test_deep_edn_with_the_token_is_an_error_too(served, opening, closing):
    client = LineClient(served.port)
    client.send_raw(b'{:op "ping" :token "%s" :id ' % served.token.encode() + opening * 50_000 + b"1" + closing * 50_000
                + b"}\n")
    assert client.read()["error"] in ("malformed message: nested too deeply", "'id' must be a string, a number or null")
    assert client.ask(ping(served))["pong"] is True


def test_a_structured_id_is_refused_not_echoed(served):
    client = LineClient(served.port)
    reply = client.ask({"op": "ping", "id": [[["deep"]]], "token": served.token})
    assert reply == {"id": None, "error": "'id' must be a string, a number or null"}


def test_connections_past_the_cap_are_told_and_closed(served, monkeypatch):
    monkeypatch.setattr(daemon_module, "MAX_CONNECTIONS", 3)
    clients = [LineClient(served.port) for _ in range(3)]
    for client in clients:
        assert client.ask(ping(served))["pong"] is True
    extra = LineClient(served.port)
    assert "too many connections" in extra.read()["error"] and extra.at_eof()
    clients.pop().close()
    wait_until(lambda: served.connection_count < 3, "the daemon to forget the closed connection")
    assert LineClient(served.port).ask(ping(served))["pong"] is True


def test_an_idle_connection_is_closed_and_logged(served, monkeypatch, capfd):
    monkeypatch.setattr(daemon_module, "IDLE_TIMEOUT_S", 0.3)
    client = LineClient(served.port)
    assert client.ask(ping(served))["pong"] is True
    assert client.at_eof()  # the daemon closed it: nothing sent for IDLE_TIMEOUT_S
    assert "idle for 0.3 s, disconnected" in capfd.readouterr().err


def test_a_client_waiting_for_its_reply_is_not_idle(tmp_path, monkeypatch):
    monkeypatch.setattr(daemon_module, "IDLE_TIMEOUT_S", 0.2)
    release = threading.Event()

    class SlowEngine(Engine):
        def complete(self, request, n=None, cancelled=None):
            release.wait(WAIT)
            return super().complete(request, n, cancelled)

    service = CompletionService(SlowEngine(ScriptedModel(["(inc x)"]), Settings(candidates=1)))
    with Daemon(service, tmp_path) as daemon:
        client = LineClient(daemon.port)
        client.send_json({"op": "complete", "id": 1, "token": daemon.token, "prefix": "(f ", "suffix": ")"})
        time.sleep(0.6)  # three idle timeouts pass while the reply is awaited
        release.set()
        assert client.read()["suggestions"]
    service.close()


def test_a_client_that_never_reads_is_dropped_at_the_queue_bound(served, monkeypatch, capfd):
    monkeypatch.setattr(daemon_module, "MAX_QUEUED_BYTES", 1024 * 1024)
    client = LineClient(served.port)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    big_id = "x" * (1024 * 1024)
    line = json.dumps(ping(served, big_id)).encode() + b"\n"
    sent = 0
    try:
        for _ in range(64):  # 64 MiB of replies asked for; the kernel's buffers hold a few
            client.send_raw(line)
            sent += 1
    except OSError:
        pass  # the daemon dropped us mid-way: what the test wants
    wait_until(lambda: served.connection_count == 0, "the daemon to drop the connection")
    assert "dropped: more than 1048576 bytes of replies unread" in capfd.readouterr().err
    received = 0
    try:
        while chunk := client.sock.recv(1 << 20):
            received += len(chunk)
    except OSError:
        pass
    assert received < sent * len(line)


# ------------------------------------------------------------------------------------------------
# fuzzing


class RecordingConnection:
    """What Daemon.handle_line sends, each reply checked to encode as one well-formed line."""

    def __init__(self) -> None:
        self.replies: list[dict] = []

    def send(self, message: dict, fmt: str) -> None:
        line = daemon_module._encoded(message, fmt)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        self.replies.append(decode_line(line)[0])

    def track(self, ticket) -> None:
        ticket.cancel("fuzzing")

    def untrack(self, ticket) -> None:
        pass


class FuzzedDaemon(Daemon):
    """handle_line without a socket: the token is known, nothing listens."""

    def __init__(self, service) -> None:
        super().__init__(service, Path("/nonexistent"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)
FIELDS = ["op", "id", "token", "code", "line", "column", "prefix", "suffix", "context", "file", "ns", "n", "buffer",
          "nrepl-safe"]
requests = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8)


@pytest.fixture(scope="module")
def fuzzed():
    service = CompletionService(Engine(ScriptedModel(["(inc x)"]), Settings(candidates=1)))
    yield FuzzedDaemon(service)
    service.close()


def _one_line_answer(daemon: FuzzedDaemon, line: bytes) -> None:
    conn = RecordingConnection()
    keep = daemon.handle_line(conn, line)
    assert isinstance(keep, bool)
    if not keep:
        assert len(conn.replies) == 1 and "token" in conn.replies[0]["error"]


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_any_bytes_get_an_error_reply_or_a_close(fuzzed, data):
    _one_line_answer(fuzzed, data + b"\n")
    try:
        decode_line(data)
    except InputError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(requests, st.booleans(), st.booleans())
def test_fuzz_any_json_request_gets_a_well_formed_reply(fuzzed, message, with_token, escaped):
    if with_token:
        message = {**message, "token": fuzzed.token}
    line = json.dumps(message, ensure_ascii=escaped).encode("utf-8", "surrogatepass") + b"\n"
    _one_line_answer(fuzzed, line)


@FUZZ
@given(requests)
def test_fuzz_any_edn_request_gets_a_well_formed_reply(fuzzed, message):
    message = {**message, "token": fuzzed.token}
    try:
        line = encode_line(message, "edn")
    except Exception:  # a value EDN cannot write (NaN, say): not a message a client could send
        return
    _one_line_answer(fuzzed, line)


edn_atoms = st.sampled_from(["1", "-5", "0", "1.5", "nil", "true", "false", '"s"', ":k", "sym", "#{}", "[]", "()",
                             "{}", "1e400", "99999999999999999999999", "\\a", "#inst \"2020\"", "#_", "##NaN", "'",
                             "#", "{", "}", "[", "\"", ";", "\n", "\xff", "\x00"])
edn_keys = st.sampled_from([":" + k for k in ("candidates", "max-new-tokens", "n-ctx", "max-prompt-tokens",
                                              "threads", "deadline-ms", "min-score", "model", "eval", "verify",
                                              "repl-timeout-ms", "backend-timeout-ms", "colour")] + ['"model"', "1"])
edn_ish = st.lists(st.one_of(edn_keys, edn_atoms), max_size=12).map(lambda parts: "{" + " ".join(parts) + "}")


@FUZZ
@given(st.one_of(edn_ish, st.text(max_size=200)))
def test_fuzz_the_config_parser_gives_settings_or_one_line_input_error(text):
    try:
        values = parse_config_text(text)
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    Settings(**values)


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_a_config_file_of_any_bytes_gives_settings_or_one_line_input_error(tmp_path, data):
    from cljassist.config import load_settings

    (tmp_path / ".cljassist.edn").write_bytes(data)
    try:
        load_settings(tmp_path / "x.clj", home=tmp_path / "nohome")
    except InputError as exc:
        assert "\n" not in str(exc)
