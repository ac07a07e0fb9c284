"""`cljassist proxy`: an nREPL server in front of the user's, answering cljassist/complete itself.

Driven against the real Debian nREPL (with our Python client, raw sockets and nREPL's own Clojure
client), a scripted stand-in upstream for byte-exactness and upstream failures, npm's nbb (a
non-JVM nREPL), and once end to end with the real model; the `.nrepl-port` handling through the
real `cljassist proxy` command."""

from __future__ import annotations

import argparse
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import edn_format
import pytest

from cljassist.config import Settings
from cljassist.engine import Engine
from cljassist.errors import Cancelled, InputError, ReplUnavailable
from cljassist.frontends.proxy import (
    ACCEPTED_OP,
    COMPLETE_OP,
    RETAINED_OP,
    WARM_OP,
    NreplProxy,
    claim_port_file,
    follow_upstream,
    open_proxy_engine,
    probe_upstream,
)
from cljassist.frontends.service import CompletionService
from cljassist.repl.bencode import MessageStream, encode
from cljassist.repl.client import NreplClient
from cljassist.repl.discovery import PORT_FILE
from cljassist.repl.local_server import base_classpath
from tests.emacs_live import assert_kept_as_emacs_reported, needs_emacs, run_live_emacs_test
from tests.fakes import ScriptedModel, generate_until_released
from tests.waiting import wait_until

LOCAL = "127.0.0.1"
WAIT = 60.0  # generous: only to avoid hangs on a loaded 2-core machine, never a timing assertion
ROOT = Path(__file__).resolve().parents[1]
DEMO_CORE = ROOT / "fixtures" / "demo" / "src" / "demo" / "core.clj"
integration = pytest.mark.integration


# ---------------------------------------------------------------------------- helpers

class GatedModel(ScriptedModel):
    """A scripted model that holds generation until `release` is set, watching the cancel flag, so
    a test can keep a completion pending for as long as it needs."""

    def __init__(self, outputs):
        super().__init__(outputs)
        self.started = threading.Event()
        self.release = threading.Event()
        self.saw_cancel = threading.Event()

    def generate_candidates(self, prompt, n, max_tokens, stop, deadline_s=None, cancelled=None, skip=0):
        self.started.set()
        try:
            generate_until_released(self.release, cancelled)
        except Cancelled:
            self.saw_cancel.set()
            raise
        return super().generate_candidates(prompt, n, max_tokens, stop, deadline_s, cancelled, skip)


@contextmanager
def running_proxy(upstream, model=None, settings=Settings(candidates=2)):
    """A proxy to `upstream` whose completions come from `model` (no REPL); no model = no engine."""
    service = CompletionService(Engine(model, settings)) if model is not None else None
    proxy = NreplProxy(upstream, service).start()
    try:
        yield proxy
    finally:
        proxy.stop()
        if service is not None:
            service.close()


class RawClient:
    """A bare socket speaking bencode, for what NreplClient hides: raw bytes, disconnects, EOF."""

    def __init__(self, port: int):
        self.sock = socket.create_connection((LOCAL, port), timeout=WAIT)
        self.stream = MessageStream()
        self.inbox: list[dict] = []

    def send(self, message: dict) -> None:
        self.sock.sendall(encode(message))

    def replies(self, request_id: str) -> list[dict]:
        """Every reply to `request_id`, up to and including the one with status done."""
        replies = []
        while True:
            for i, message in enumerate(self.inbox):
                if message.get("id") == request_id:
                    del self.inbox[i]
                    replies.append(message)
                    if "done" in message.get("status", ()):
                        return replies
                    break
            else:
                data = self.sock.recv(1 << 16)
                assert data, f"connection closed before {request_id} was done; got {replies}"
                self.inbox.extend(self.stream.feed(data))

    def at_eof(self) -> bool:
        """True once the proxy has closed the connection (whatever else arrives first is kept)."""
        while True:
            data = self.sock.recv(1 << 16)
            if not data:
                return True
            self.inbox.extend(self.stream.feed(data))

    def close(self) -> None:
        self.sock.close()


def merged(replies: list[dict]) -> dict:
    out: dict = {}
    for reply in replies:
        for key, value in reply.items():
            if key == "status":
                out.setdefault("status", set()).update(value)
            elif key in ("out", "err"):
                out[key] = out.get(key, "") + value
            else:
                out[key] = value
    return out


class FakeUpstream:
    """A stand-in nREPL server: records the raw bytes it receives and answers each frame with the
    bytes `respond(frame)` returns (None: no answer). `drop()` cuts every connection, `stop()` also
    stops listening."""

    def __init__(self, respond):
        from cljassist.repl.bencode import MessageStream

        self._frame_stream = MessageStream
        self.respond = respond
        self.listener = socket.create_server((LOCAL, 0))
        self.port = self.listener.getsockname()[1]
        self.received: list[bytes] = []
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> tuple[str, int]:
        return (LOCAL, self.port)

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        stream = self._frame_stream()
        try:
            while data := conn.recv(1 << 16):
                for frame in stream.feed_frames(data):
                    self.received.append(frame)
                    answer = self.respond(frame)
                    if answer:
                        conn.sendall(answer)
        except OSError:
            pass

    def drop(self):
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def stop(self):
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        except OSError:
            pass
        self.listener.close()
        self.drop()


# ---------------------------------------------------------------------------- Debian nREPL: pass-through

@pytest.fixture
def proxy(nrepl_server):
    with running_proxy((nrepl_server.host, nrepl_server.port), ScriptedModel(["inc x", "dec x"])) as p:
        yield p


@pytest.fixture
def client(proxy):
    c = NreplClient.connect(LOCAL, proxy.port, timeout=WAIT)
    yield c
    c.close()


@integration
def test_eval_value_out_err_and_ns_come_through(client):
    result = client.eval('(do (print "to out") (.print *err* "to err") (+ 40 2))', timeout=WAIT)
    assert (result.values, result.out, result.err, result.ns) == (["42"], "to out", "to err", "user")
    session = client.clone(timeout=WAIT)
    assert client.eval("(ns proxy.test-ns)", session=session, timeout=WAIT).ns == "proxy.test-ns"
    failed = client.eval("(/ 1 0)", session=session, timeout=WAIT)
    assert "eval-error" in failed.status and "ArithmeticException" in (failed.ex or "")


@integration
def test_sessions_clone_and_close_through_the_proxy(client):
    session = client.clone(timeout=WAIT)
    client.eval("(def proxied-value 7)", session=session, timeout=WAIT)
    assert client.eval("proxied-value", session=session, timeout=WAIT).values == ["7"]
    assert session in merged(client.request("ls-sessions", timeout=WAIT))["sessions"]
    client.close_session(session, timeout=WAIT)
    assert session not in merged(client.request("ls-sessions", timeout=WAIT))["sessions"]


@integration
def test_interrupting_a_long_eval_through_the_proxy(client):
    session = client.clone(timeout=WAIT)
    long_eval = client.send("eval", code="(Thread/sleep 600000)", session=session)
    # The eval may not have started when the first interrupt arrives ("session-idle"): try again.
    wait_until(lambda: "session-idle" not in client.interrupt(session, long_eval.id, timeout=WAIT),
               "the eval to start, so that an interrupt finds it", interval=0.05)
    assert "interrupted" in merged(long_eval.result(WAIT))["status"]
    assert client.eval("(+ 1 2)", session=session, timeout=WAIT).values == ["3"]  # the session lives on


@integration
def test_non_ascii_round_trips_through_the_real_nrepl(client):
    text = "héllo ✓ 日本語 🙂"
    result = client.eval(f'(do (print "{text}") (str "{text}" (count "{text}")))', timeout=WAIT)
    assert result.out == text
    assert result.values == [f'"{text}{len(text.encode("utf-16-le")) // 2}"']  # Java counts UTF-16 units


@integration
def test_describe_adds_cljassist_complete_to_the_upstream_ops(client, nrepl_client):
    direct, proxied = nrepl_client.describe(timeout=WAIT), client.describe(timeout=WAIT)
    assert set(proxied["ops"]) == set(direct["ops"]) | {COMPLETE_OP, ACCEPTED_OP, RETAINED_OP, WARM_OP}
    entry = proxied["ops"][COMPLETE_OP]
    assert "cljassist" in entry["doc"] and "requires" in entry and "code" in entry["optional"]
    assert proxied["versions"] == direct["versions"]


@integration
def test_completions_and_lookup_pass_through(client):
    candidates = {c["candidate"] for c in client.completions("map", ns="clojure.core", timeout=WAIT)}
    assert {"map", "mapv", "mapcat"} <= candidates
    assert "[f coll]" in client.lookup("map", ns="user", timeout=WAIT)["arglists-str"]


@integration
def test_ciders_complete_op_gets_the_upstreams_own_unknown_op_reply(client, nrepl_client):
    # CIDER's `complete` (with a `context` holding __prefix__) is cider-nrepl's, not plain nREPL's:
    # the proxy must not answer it; the upstream's reply comes back unchanged.
    fields = dict(prefix="ma", ns="user", context="(__prefix__ [1 2])")
    direct = nrepl_client.request("complete", timeout=WAIT, **fields)
    proxied = client.request("complete", timeout=WAIT, **fields)
    assert len(proxied) == len(direct) == 1
    drop_ids = lambda r: {k: v for k, v in r.items() if k not in ("id", "session")}  # noqa: E731
    assert drop_ids(proxied[0]) == drop_ids(direct[0])
    assert {"unknown-op", "done", "error"} <= set(proxied[0]["status"])


# ---------------------------------------------------------------------------- cljassist/complete

@pytest.mark.parametrize("fields", [
    {"prefix": "(defn f [x] (", "suffix": "))"},
    {"code": "(ns demo.x)\n(defn f [x] ())\n", "line": 2, "column": 14, "file": "/tmp/demo/x.clj"},
    {"code": "(defn f [x] (<CURSOR>))"},
    {"context": "(defn f [x] (__prefix__))", "prefix": "in", "ns": "user"},  # CIDER's shape
], ids=["prefix-suffix", "line-column", "marker", "cider-context"])
@integration
def test_cljassist_complete_answers_locally(client, fields):
    replies = client.request(COMPLETE_OP, timeout=WAIT, **fields)
    assert [r["status"] for r in replies if "status" in r] == [["done"]] and "status" not in replies[0]
    reply = replies[0]
    texts = [s["text"] for s in reply["suggestions"]]
    assert texts and all("inc x".startswith(t) or "dec x".startswith(t) for t in texts)  # cut by the stop rule
    assert reply["suggestions"][0]["checks"]["balanced"] == "true"  # bencode-safe check values
    assert reply["repl"] == "off" and isinstance(reply["withheld"], int)


@integration
def test_cider_context_shape_reaches_the_model_as_prefix_and_suffix(nrepl_server):
    model = ScriptedModel(["c x"])
    with running_proxy((nrepl_server.host, nrepl_server.port), model) as proxy, \
            NreplClient.connect(LOCAL, proxy.port, timeout=WAIT) as client:
        reply = merged(client.request(COMPLETE_OP, timeout=WAIT, context="(defn f [x] (__prefix__ x))",
                                      prefix="in", ns="user"))
    assert [s["text"] for s in reply["suggestions"]] == ["c"]  # " x" is already in the suffix
    assert "(defn f [x] (in" in model.prompts[0] and "__prefix__" not in model.prompts[0]


@integration
def test_bad_complete_requests_get_an_err_with_done_and_error(client):
    replies = client.request(COMPLETE_OP, timeout=WAIT, line=3)
    assert len(replies) == 1 and replies[0]["status"] == ["done", "error"]
    assert "needs 'code'" in replies[0]["err"]
    replies = client.request(COMPLETE_OP, timeout=WAIT, code="(inc <CURSOR>)", n=99)
    assert replies[0]["status"] == ["done", "error"] and "'n' must be an integer" in replies[0]["err"]


@integration
def test_without_an_engine_complete_is_an_err_and_the_rest_still_works(nrepl_server):
    with running_proxy((nrepl_server.host, nrepl_server.port), model=None) as proxy, \
            NreplClient.connect(LOCAL, proxy.port, timeout=WAIT) as client:
        replies = client.request(COMPLETE_OP, timeout=WAIT, prefix="(inc ", suffix=")")
        assert replies[0]["status"] == ["done", "error"] and "no completion engine" in replies[0]["err"]
        assert client.eval("(+ 1 2)", timeout=WAIT).values == ["3"]


@integration
def test_evals_flow_while_a_completion_is_pending(nrepl_server):
    model = GatedModel(["inc x"])
    with running_proxy((nrepl_server.host, nrepl_server.port), model) as proxy, \
            NreplClient.connect(LOCAL, proxy.port, timeout=WAIT) as client:
        pending = client.send(COMPLETE_OP, prefix="(defn f [x] (", suffix="))")
        assert model.started.wait(WAIT)
        for i in range(3):  # answered while the completion still holds the engine
            assert client.eval(f"(* {i} 10)", timeout=WAIT).values == [str(i * 10)]
        assert not pending.done
        model.release.set()
        reply = merged(pending.result(WAIT))
    assert reply["status"] == {"done"} and reply["suggestions"][0]["text"] == "inc x"


@integration
def test_interrupt_cancels_a_pending_completion(nrepl_server):
    model = GatedModel(["inc x"])
    with running_proxy((nrepl_server.host, nrepl_server.port), model) as proxy, \
            NreplClient.connect(LOCAL, proxy.port, timeout=WAIT) as client:
        pending = client.send(COMPLETE_OP, prefix="(inc ", suffix=")")
        assert model.started.wait(WAIT)
        assert client.interrupt("any-session", pending.id, timeout=WAIT) == {"done"}
        reply = merged(pending.result(WAIT))
    assert model.saw_cancel.is_set()
    assert reply["status"] == {"done", "error"} and "interrupted" in reply["err"]


@integration
def test_a_newer_request_for_the_same_buffer_supersedes_the_older(nrepl_server):
    model = GatedModel(["inc x"])
    with running_proxy((nrepl_server.host, nrepl_server.port), model) as proxy, \
            NreplClient.connect(LOCAL, proxy.port, timeout=WAIT) as client:
        older = client.send(COMPLETE_OP, prefix="(inc ", suffix=")", file="a.clj", session="s1")
        assert model.started.wait(WAIT)
        other_session = client.send(COMPLETE_OP, prefix="(inc ", suffix=")", file="a.clj", session="s2")
        newer = client.send(COMPLETE_OP, prefix="(inc ", suffix=")", file="a.clj", session="s1")
        assert "superseded" in merged(older.result(WAIT))["err"]
        model.release.set()
        assert merged(newer.result(WAIT))["status"] == {"done"}
        assert merged(other_session.result(WAIT))["status"] == {"done"}  # another session's buffer


@integration
def test_a_client_disconnecting_mid_completion_cancels_it_and_nothing_breaks(nrepl_server):
    model = GatedModel(["inc x"])
    with running_proxy((nrepl_server.host, nrepl_server.port), model) as proxy:
        raw = RawClient(proxy.port)
        raw.send({"op": COMPLETE_OP, "id": "c1", "prefix": "(inc ", "suffix": ")"})
        raw.send({"op": "eval", "id": "e1", "code": "(Thread/sleep 200)"})  # also owed by upstream
        assert model.started.wait(WAIT)
        raw.close()
        assert model.saw_cancel.wait(WAIT), "the pending completion was not cancelled"
        wait_until(lambda: proxy.connection_count == 0, "the proxy to drop the connection")
        model.release.set()
        with NreplClient.connect(LOCAL, proxy.port, timeout=WAIT) as client:  # still serving
            assert client.eval("(+ 1 2)", timeout=WAIT).values == ["3"]
            reply = merged(client.request(COMPLETE_OP, timeout=WAIT, prefix="(inc ", suffix=")"))
            assert reply["suggestions"][0]["text"] == "inc x"


# ---------------------------------------------------------------------------- bytes and failures

def bstr(data: bytes) -> bytes:
    return str(len(data)).encode() + b":" + data


def test_frames_pass_through_byte_for_byte():
    # Not UTF-8, empty string, empty list, empty map, non-ASCII keys and values, and keys out of
    # bencode's order (as other servers and nREPL's signed-byte sort produce): all must arrive as sent.
    odd_request = b"d" + b"".join([
        bstr(b"op"), bstr(b"eval"), bstr(b"code"), bstr(b"\xff\xfe\x00(+ 1 2)"), bstr(b"id"), bstr(b"r1"),
        bstr(b"list"), b"le", bstr(b"map"), b"de", bstr(b"empty"), bstr(b""),
        bstr("été".encode()), bstr("日本🙂".encode())]) + b"e"
    odd_reply = b"d" + b"".join([
        bstr(b"id"), bstr(b"r1"), bstr(b"value"), bstr(b"\x80\x81\x82\x83"), bstr(b"out"), bstr(b""),
        bstr(b"nil"), b"de", bstr(b"status"), b"l" + bstr(b"done") + b"e",
        bstr("λ".encode()), bstr("λλλ".encode())]) + b"e"
    upstream = FakeUpstream(lambda frame: odd_reply if frame == odd_request else None)
    try:
        with running_proxy(upstream.endpoint) as proxy:
            sock = socket.create_connection((LOCAL, proxy.port), timeout=WAIT)
            for i in range(len(odd_request)):  # one byte at a time: framing across reads
                sock.sendall(odd_request[i:i + 1])
            sock.sendall(odd_request + odd_request)  # two frames in one write
            got = b""
            while len(got) < 3 * len(odd_reply):
                data = sock.recv(1 << 16)
                assert data, f"connection closed early after {got!r}"
                got += data
            sock.close()
    finally:
        upstream.stop()
    assert upstream.received == [odd_request] * 3
    assert got == odd_reply * 3


def hang_on_eval(frame: bytes) -> bytes | None:
    """Clone answers; eval never does (until the connection is cut)."""
    if b"5:clone" in frame:
        return encode({"id": "c", "new-session": "s-1", "status": ["done"]})
    return None


def test_upstream_going_away_fails_owed_requests_and_closes_the_connection():
    upstream = FakeUpstream(hang_on_eval)
    try:
        with running_proxy(upstream.endpoint) as proxy:
            raw = RawClient(proxy.port)
            raw.send({"op": "eval", "id": "e1", "session": "s-1", "code": "(Thread/sleep 10000)"})
            raw.send({"op": "eval", "id": "e2", "code": "(+ 1 2)"})
            wait_until(lambda: len(upstream.received) == 2, "the upstream to get both evals")
            upstream.drop()
            for request_id in ("e1", "e2"):
                reply = merged(raw.replies(request_id))
                assert reply["status"] == {"done", "error"}
                assert f"upstream nREPL at {LOCAL}:{upstream.port} went away" in reply["err"]
            assert raw.at_eof()
            assert [m for m in raw.inbox if m.get("id") in ("e1", "e2")] == []  # one err each, no more
            raw.close()
            wait_until(lambda: proxy.connection_count == 0, "the proxy to forget the connection")

            upstream.stop()  # now nothing listens there: new connections fail fast with a clear err
            again = RawClient(proxy.port)
            again.send({"op": "clone", "id": "c1"})
            reply = merged(again.replies("c1"))
            assert reply["status"] == {"done", "error"}
            assert f"cannot reach the upstream nREPL at {LOCAL}:{upstream.port}" in reply["err"]
            assert again.at_eof()
            again.close()
    finally:
        upstream.stop()


def test_a_proxy_whose_upstream_comes_back_serves_again():
    upstream = FakeUpstream(hang_on_eval)
    port = upstream.port
    upstream.stop()
    with running_proxy((LOCAL, port)) as proxy:
        with pytest.raises(ReplUnavailable), NreplClient.connect(LOCAL, proxy.port, timeout=WAIT) as client:
            client.clone(timeout=WAIT)  # the proxy answers with its err: no new session
        back = socket.create_server((LOCAL, port))  # the upstream restarts on its port
        try:
            def answer_clone():
                conn, _ = back.accept()
                stream = MessageStream()
                while not (messages := stream.feed(conn.recv(1 << 16))):
                    pass
                conn.sendall(encode({"id": messages[0]["id"], "new-session": "s-2", "status": ["done"]}))
                conn.recv(1)  # until the client goes
                conn.close()
            threading.Thread(target=answer_clone, daemon=True).start()
            with NreplClient.connect(LOCAL, proxy.port, timeout=WAIT) as client:
                assert client.clone(timeout=WAIT) == "s-2"
        finally:
            back.close()


def test_probe_of_an_unreachable_upstream_is_a_one_line_error():
    upstream = FakeUpstream(hang_on_eval)
    upstream.stop()
    with pytest.raises(ReplUnavailable, match=f"cannot reach nREPL at {LOCAL}:{upstream.port}"):
        probe_upstream(upstream.endpoint, timeout=5)


# ---------------------------------------------------------------------------- nREPL's own Clojure client

@integration
def test_nrepls_own_clojure_client_evals_and_completes_through_the_proxy(proxy):
    if shutil.which("java") is None:
        pytest.skip("java not found; apt-get install default-jre-headless")
    program = f"""
    (require '[nrepl.core :as nrepl])
    (with-open [conn (nrepl/connect :host "{LOCAL}" :port {proxy.port})]
      (let [c (nrepl/client conn 60000)
            ev (nrepl/combine-responses (nrepl/message c {{:op "eval" :code "(+ 40 2)"}}))
            cp (nrepl/combine-responses
                 (nrepl/message c {{:op "cljassist/complete" :ns "user"
                                    :context "(defn f [x] (__prefix__ x))" :prefix "in"}}))
            bad (nrepl/combine-responses (nrepl/message c {{:op "cljassist/complete"}}))]
        (prn {{:value (:value ev)
              :texts (mapv #(or (get % "text") (get % :text)) (:suggestions cp))
              :status (sort (:status cp))
              :bad-status (sort (:status bad)) :bad-err (:err bad)}})))
    (shutdown-agents)  ; else the client's future threads keep the JVM up for a minute
    """
    done = subprocess.run(["java", "-cp", ":".join(base_classpath()), "clojure.main", "-e", program],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    result = edn_format.loads(done.stdout.strip().splitlines()[-1])
    get = lambda key: result[edn_format.Keyword(key)]  # noqa: E731
    assert list(get("value")) == ["42"]
    texts = list(get("texts"))
    assert texts and all("inc x".startswith(t) or "dec x".startswith(t) for t in texts)
    assert list(get("status")) == ["done"]
    assert list(get("bad-status")) == ["done", "error"] and "needs 'code'" in get("bad-err")


# ---------------------------------------------------------------------------- nbb: a non-JVM nREPL

def nbb_executable() -> str | None:
    candidates = [os.environ.get("CLJASSIST_NBB"),
                  str(Path.home() / ".cache" / "cljassist" / "nbb" / "node_modules" / ".bin" / "nbb"),
                  shutil.which("nbb")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="module")
def nbb_server(tmp_path_factory):
    if shutil.which("node") is None:
        pytest.skip("node not found: apt-get install nodejs npm, then scripts/install_nbb.sh")
    nbb = nbb_executable()
    if nbb is None:
        pytest.skip("nbb not installed: run scripts/install_nbb.sh (npm install into ~/.cache/cljassist/nbb)")
    directory = tmp_path_factory.mktemp("nbb-project")
    process = subprocess.Popen([nbb, "nrepl-server", ":port", "0"], cwd=directory, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        port, seen = None, []
        while port is None:
            line = lines.get(timeout=WAIT)  # "nREPL server started on port 45371 on host 127.0.0.1 - ..."
            seen.append(line)
            match = re.search(r"nREPL server started on port (\d+)", line)
            port = int(match.group(1)) if match else None
            assert process.poll() is None, f"nbb exited: {''.join(seen)}"
        yield (LOCAL, port)
    finally:
        process.terminate()
        process.wait(10)


@integration
def test_nbb_eval_through_the_proxy(nbb_server):
    with running_proxy(nbb_server) as proxy, NreplClient.connect(LOCAL, proxy.port, timeout=WAIT) as client:
        result = client.eval("(+ 1 2)", timeout=WAIT)
        assert result.values == ["3"] and result.ns == "user"
        assert client.eval('(do (println "héllo ✓") :ok)', timeout=WAIT).out == "héllo ✓\n"
        assert COMPLETE_OP in client.describe(timeout=WAIT)["ops"]


@integration
def test_nbb_upstream_is_detected_and_completions_come_without_the_repl(nbb_server):
    engine = open_proxy_engine(Settings(candidates=2), nbb_server, model=ScriptedModel(["inc x", "dec x"]))
    try:
        assert not engine.upstream.jvm and "node" in engine.upstream.runtime
        assert engine.opened.provider is None and "not JVM Clojure" in engine.notice
        service = CompletionService(engine.opened.engine)
        with NreplProxy(nbb_server, service) as proxy, \
                NreplClient.connect(LOCAL, proxy.port, timeout=WAIT) as client:
            reply = merged(client.request(COMPLETE_OP, timeout=WAIT, prefix="(defn f [x] (", suffix="))"))
            assert client.eval("(+ 1 2)", timeout=WAIT).values == ["3"]
        service.close()
    finally:
        engine.close()
    assert reply["status"] == {"done"} and reply["repl"] == "off"
    assert [s["text"] for s in reply["suggestions"]] == ["inc x", "dec x"]


# ---------------------------------------------------------------------------- real model, real nREPL

@integration
def test_end_to_end_real_model_and_real_nrepl_through_the_proxy(nrepl_server, default_model):
    upstream = (nrepl_server.host, nrepl_server.port)
    settings = Settings(candidates=2, max_new_tokens=16, show_failing=True)
    engine = open_proxy_engine(settings, upstream, model=default_model)
    service = CompletionService(engine.opened.engine)
    try:
        assert engine.upstream.jvm and engine.notice is None and engine.opened.provider is not None
        text = DEMO_CORE.read_text()
        line_no = next(i for i, line in enumerate(text.split("\n"), 1) if "(str/join" in line)
        column = text.split("\n")[line_no - 1].index("(str/join") + len("(str/jo") + 1
        with NreplProxy(upstream, service) as proxy, \
                NreplClient.connect(LOCAL, proxy.port, timeout=WAIT) as client:
            assert client.eval("(require 'demo.core)", timeout=WAIT).ok
            replies = client.request(COMPLETE_OP, timeout=120, code=text, line=line_no, column=column,
                                     file=str(DEMO_CORE))
    finally:
        service.close()
        engine.opened.provider.close()
        engine.opened.provider.client.close()  # the session's model stays loaded for other tests
    reply = merged(replies)
    assert reply["status"] == {"done"}, reply
    assert reply["namespace"] == "demo.core" and reply["repl"] == "used"
    assert reply["suggestions"], "the real model offered nothing"
    for s in reply["suggestions"]:
        assert s["checks"]["balanced"] == "true"
        assert s["checks"]["reads"] in ("true", "false")  # checked in the upstream REPL
        assert float(s["score"]) > 0


@needs_emacs
def test_the_emacs_package_through_the_proxy_with_the_real_model(nrepl_server, default_model):
    """Warm, complete (SmolLM2), M-n asking for more, typing through, accepting a word and the rest, and the reports, from
    Emacs through the proxy; its statistics show what Emacs said it kept."""
    from cljassist.stats.tracker import SuggestionTracker

    upstream = (nrepl_server.host, nrepl_server.port)
    settings = Settings(candidates=2, max_new_tokens=12, show_failing=True, min_score=0.0, prefetch=True)
    engine = open_proxy_engine(settings, upstream, model=default_model)
    service = CompletionService(engine.opened.engine)
    events: list[dict] = []
    try:
        with NreplProxy(upstream, service, suggestions=SuggestionTracker("smollm2", events.append)) as proxy:
            run_live_emacs_test(LOCAL, proxy.port)
    finally:
        service.close()
        engine.opened.provider.close()
        engine.opened.provider.client.close()  # the session's model stays loaded for other tests
    assert_kept_as_emacs_reported(events)


# ---------------------------------------------------------------------------- .nrepl-port

def test_port_file_is_written_and_removed(tmp_path):
    claim = claim_port_file(tmp_path, 40123)
    assert (tmp_path / ".nrepl-port").read_text() == "40123" and claim.previous is None
    claim.release()
    assert not (tmp_path / ".nrepl-port").exists()


def test_an_existing_port_file_is_restored(tmp_path):
    (tmp_path / ".nrepl-port").write_text("7888")
    claim = claim_port_file(tmp_path, 40123)
    assert (tmp_path / ".nrepl-port").read_text() == "40123" and claim.previous == "7888"
    claim.release()
    assert (tmp_path / ".nrepl-port").read_text() == "7888"


def test_a_port_file_someone_else_rewrote_is_left_alone(tmp_path):
    claim = claim_port_file(tmp_path, 40123)
    (tmp_path / ".nrepl-port").write_text("9999")  # e.g. the upstream restarted and wrote its own
    claim.release()
    assert (tmp_path / ".nrepl-port").read_text() == "9999"
    (tmp_path / ".nrepl-port").unlink()
    claim.release()  # gone meanwhile: nothing to do, no error
    assert not (tmp_path / ".nrepl-port").exists()


@integration
def test_cli_proxy_points_the_port_file_at_itself_and_restores_it_on_sigterm(nrepl_server, default_model_file,
                                                                            tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    port_file = tmp_path / ".nrepl-port"
    port_file.write_text(str(nrepl_server.port))  # the upstream's own file, as nREPL writes it
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}  # no user config
    process = subprocess.Popen(
        [sys.executable, "-m", "cljassist", "proxy", "--upstream", f"{nrepl_server.host}:{nrepl_server.port}",
         "-n", "1", "--max-new-tokens", "8"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: port_file.read_text() != str(nrepl_server.port) or process.poll() is not None,
                   "the proxy to write .nrepl-port")
        assert process.poll() is None, process.communicate()[1]
        proxy_port = int(port_file.read_text())
        with NreplClient.connect(LOCAL, proxy_port, timeout=WAIT) as client:
            assert client.eval("(+ 1 2)", timeout=WAIT).values == ["3"]
            assert COMPLETE_OP in client.describe(timeout=WAIT)["ops"]
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert port_file.read_text() == str(nrepl_server.port)
    assert f"held '{nrepl_server.port}'" in err and "restored on exit" in err


def test_every_front_end_completes_without_repl_checks_on_a_non_jvm_nrepl(nbb_server, capsys):
    """open_engine (serve, repl, watch, complete) reads describe's versions: nbb's SCI runtime
    cannot run the JVM helper code, so the REPL is left out with a warning instead of failing."""
    from cljassist.frontends.common import connect_repl

    provider, label = connect_repl(Settings(nrepl=f"{nbb_server[0]}:{nbb_server[1]}"), None, False, explicit=True)
    assert provider is None
    assert label.startswith("off (not JVM Clojure") and "node" in label
    assert "not JVM Clojure" in capsys.readouterr().err


@pytest.mark.security
def test_without_upstream_the_proxy_follows_a_repl_restarted_on_another_port(tmp_path):
    old, new = FakeUpstream(hang_on_eval), FakeUpstream(hang_on_eval)
    port_file = tmp_path / PORT_FILE
    port_file.write_text(str(old.port))
    try:
        with running_proxy(old.endpoint) as proxy:
            claim = claim_port_file(tmp_path, proxy.port)
            assert not follow_upstream(proxy, port_file, claim)  # our own port: nothing to follow
            port_file.write_text(f"{new.port}\n")  # the REPL restarted there on another port
            assert follow_upstream(proxy, port_file, claim)
            assert proxy.upstream == new.endpoint and port_file.read_text() == str(proxy.port)
            assert not follow_upstream(proxy, port_file, claim)
            raw = RawClient(proxy.port)
            raw.send({"op": "eval", "id": "e1", "code": "(+ 1 2)"})
            wait_until(lambda: any(b"(+ 1 2)" in frame for frame in new.received), "the new upstream to get the eval")
            assert not any(b"(+ 1 2)" in frame for frame in old.received)
            raw.close()
            claim.release()
            assert port_file.read_text() == f"{new.port}\n"  # on exit the file names the REPL again
    finally:
        old.stop()
        new.stop()


def test_proxy_without_upstream_or_port_file_is_a_one_line_error(tmp_path, monkeypatch):
    from cljassist.frontends.proxy import main_proxy

    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(upstream=None, port=0)
    with pytest.raises(InputError, match=r"no --upstream given and no \.nrepl-port in .*: start your nREPL first"):
        main_proxy(args)
