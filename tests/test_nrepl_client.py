"""NreplClient: unit tests against a small in-process fake server (wire-level and
drop/reconnect semantics), then integration tests against the real Debian nREPL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cljassist.errors import ReplTimeout, ReplUnavailable
from cljassist.repl.bencode import MessageStream, encode
from cljassist.repl.client import EvalResult, NreplClient
from cljassist.repl.local_server import base_classpath, start_local_nrepl
from tests.fixtures_repl import DEMO_SRC, TEST_JVM_OPTS, nrepl_missing_reason
from tests.waiting import wait_until

# Generous: tests must not flake on a loaded 2-core CI machine.
WAIT = 30.0


class FakeNrepl:
    """Just enough nREPL to exercise the client: ``clone``; ``eval`` echoes the
    code as its value unless the code is ``"hang"`` (never answered) or
    ``"defer"`` (answered, in reverse order, when an ``eval`` of ``"flush"`` arrives).
    Replies are written one byte-split chunk at a time to exercise framing."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.received: list[dict] = []
        self.deferred: list[dict] = []
        self.sessions = 0
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if self.closed:
                    conn.close()
                    return
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        stream = MessageStream()
        try:
            while data := conn.recv(4096):
                for msg in stream.feed(data):
                    self.received.append(msg)
                    for reply in self._handle(msg):
                        wire = encode(reply)
                        half = len(wire) // 2
                        with self.lock:
                            conn.sendall(wire[:half])
                            conn.sendall(wire[half:])
        except OSError:
            pass

    def _handle(self, msg: dict) -> list[dict]:
        mid = msg["id"]
        if msg["op"] == "clone":
            self.sessions += 1
            return [{"id": mid, "new-session": f"s{self.sessions}", "status": ["done"]}]
        code = msg.get("code")
        if code == "hang":
            return []
        if code == "defer":
            self.deferred.append({"id": mid, "value": mid, "status": ["done"]})
            return []
        if code == "flush":
            replies, self.deferred = self.deferred[::-1], []
            return replies + [{"id": mid, "status": ["done"]}]
        return [
            {"id": mid, "out": "o"},
            {"id": "not-a-request", "value": "stray"},
            {"id": mid, "value": code, "ns": "user", "session": msg.get("session", "")},
            {"id": mid, "status": ["done"]},
        ]

    def drop(self) -> None:
        """Close every accepted connection, as a server restart would."""
        with self.lock:
            conns, self.conns = self.conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        with self.lock:
            self.closed = True
        self.listener.close()
        self.drop()


@pytest.fixture
def fake():
    server = FakeNrepl()
    yield server
    server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- unit: fake server ----------------------------------------------------


def test_fake_eval_and_wire_format(fake):
    with NreplClient.connect("127.0.0.1", fake.port) as client:
        result = client.eval("(+ 1 2)", ns="user", file="a.clj", line=3, column=5, timeout=WAIT)
    assert isinstance(result, EvalResult)
    assert result.values == ["(+ 1 2)"] and result.out == "o" and result.status == {"done"}
    assert result.ok and result.ns == "user"
    sent = fake.received[0]
    assert sent == {"op": "eval", "id": result.id, "code": "(+ 1 2)", "ns": "user",
                    "file": "a.clj", "line": 3, "column": 5}


def test_fake_field_names_use_dashes_and_skip_none(fake):
    with NreplClient.connect("127.0.0.1", fake.port) as client:
        client.request("eval", timeout=WAIT, code="x", interrupt_id="7", session=None)
    assert fake.received[0] == {"op": "eval", "id": fake.received[0]["id"],
                                "code": "x", "interrupt-id": "7"}


def test_fake_replies_routed_by_id_out_of_order(fake):
    with NreplClient.connect("127.0.0.1", fake.port) as client:
        pending = [client.send("eval", code="defer") for _ in range(5)]
        client.request("eval", timeout=WAIT, code="flush")
        for p in pending:
            assert p.result(WAIT) == [{"id": p.id, "value": p.id, "status": ["done"]}]


def test_fake_timeout_names_op_and_duration(fake):
    with NreplClient.connect("127.0.0.1", fake.port) as client:
        with pytest.raises(ReplTimeout, match=r"eval .*0\.2s"):
            client.eval("hang", timeout=0.2)
        # The connection is still usable after a timeout.
        assert client.eval("ok", timeout=WAIT).values == ["ok"]


def test_fake_drop_fails_in_flight_then_reconnects(fake):
    client = NreplClient.connect("127.0.0.1", fake.port)
    session = client.clone()
    assert client.sessions == {session} and client.connection_generation == 1
    hanging = [client.send("eval", code="hang") for _ in range(3)]
    fake.drop()
    for p in hanging:
        # Fails because the connection died, long before the timeout would expire.
        with pytest.raises(ReplUnavailable, match=f"127.0.0.1:{fake.port}"):
            p.result(timeout=WAIT)
    # The next request reconnects transparently; sessions from before are gone.
    assert client.eval("again", timeout=WAIT).values == ["again"]
    assert client.connection_generation == 2
    assert client.sessions == frozenset()
    with pytest.raises(ReplUnavailable, match="clone a new one"):
        client.eval("x", session=session, timeout=WAIT)
    new_session = client.clone()
    assert client.eval("y", session=new_session, timeout=WAIT).values == ["y"]
    client.close()


def test_fake_server_gone_then_back(fake):
    client = NreplClient.connect("127.0.0.1", fake.port)
    fake.close()
    with pytest.raises(ReplUnavailable, match=f"127.0.0.1:{fake.port}"):
        client.eval("x", timeout=WAIT)
    with pytest.raises(ReplUnavailable, match=f"127.0.0.1:{fake.port}"):
        client.eval("x", timeout=WAIT)
    client.close()


def test_closed_client_raises(fake):
    client = NreplClient.connect("127.0.0.1", fake.port)
    pending = client.send("eval", code="hang")
    client.close()
    with pytest.raises(ReplUnavailable):
        pending.result(WAIT)
    with pytest.raises(ReplUnavailable, match="closed"):
        client.eval("x")


def test_refused_port_raises_unavailable():
    port = free_port()
    with pytest.raises(ReplUnavailable, match=f"127.0.0.1:{port}") as info:
        NreplClient.connect("127.0.0.1", port, timeout=5)
    assert "\n" not in str(info.value)


def test_socket_options(fake):
    with NreplClient.connect("127.0.0.1", fake.port) as client:
        sock = client._conn.sock
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_missing_java_or_jars_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ReplUnavailable, match="apt-get install clojure libnrepl-clojure"):
        base_classpath(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ReplUnavailable, match="java not found.*clojure libnrepl-clojure"):
        start_local_nrepl(tmp_path)


# -- integration: the real nREPL -----------------------------------------

integration = pytest.mark.integration


@integration
def test_eval_values_ns_and_positions(nrepl_client):
    c = nrepl_client
    assert c.eval("(+ 1 2) (inc 41)", timeout=WAIT).values == ["3", "42"]
    c.eval("(ns cljassist.test.target)", timeout=WAIT)
    r = c.eval("(str *ns*)", ns="cljassist.test.target", timeout=WAIT)
    assert r.values == ['"cljassist.test.target"'] and r.ns == "cljassist.test.target"

    r = c.eval("\n\n(/ 1 0)", file="src/demo/core.clj", line=10, column=3, timeout=WAIT)
    assert r.ex == "class java.lang.ArithmeticException" and "eval-error" in r.status
    assert not r.ok
    assert ":12)" in r.err and "Divide by zero" in r.err  # line 10 + 2 newlines

    c.eval("(defn located-fn [] 1)", ns="user", file="src/demo/core.clj", line=20, column=3,
           timeout=WAIT)
    r = c.eval("((juxt :file :line :column) (meta #'user/located-fn))", timeout=WAIT)
    assert r.values == ['["src/demo/core.clj" 20 3]']


@integration
def test_concurrent_requests_one_connection(nrepl_client):
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            pending = [(i, nrepl_client.send("eval", code=f"(* {t} 1000 {i})")) for i in range(25)]
            for i, p in pending:
                values = [r["value"] for r in p.result(WAIT) if "value" in r]
                assert values == [str(t * 1000 * i)], (t, i, values)
        except BaseException as e:  # surfaced in the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[0]


@integration
def test_describe(nrepl_client):
    info = nrepl_client.describe()
    assert {"eval", "clone", "interrupt", "load-file", "completions", "lookup"} <= set(info["ops"])
    assert info["versions"]["nrepl"]["major"] == 1


@integration
def test_completions(nrepl_client):
    names = {c["candidate"] for c in nrepl_client.completions("ma", ns="user")}
    assert {"map", "mapv", "mapcat"} <= names
    names = {c["candidate"] for c in nrepl_client.completions("clojure.string/jo", ns="user")}
    assert "clojure.string/join" in names
    assert nrepl_client.completions("zzzqqq-nothing", ns="user") == []


@integration
def test_lookup(nrepl_client):
    info = nrepl_client.lookup("map", ns="user")
    assert info["ns"] == "clojure.core" and "lazy sequence" in info["doc"]
    assert "[f coll]" in info["arglists-str"]

    nrepl_client.eval("(defn lookup-nodoc [x y] x)", ns="user", timeout=WAIT)
    info = nrepl_client.lookup("lookup-nodoc", ns="user")
    assert info["name"] == "lookup-nodoc" and info["ns"] == "user"
    assert not info.get("doc")
    # An unknown symbol: nREPL sends its empty info as an empty list.
    replies = nrepl_client.request("lookup", timeout=WAIT, sym="no-such-thing-xyz", ns="user")
    assert replies[0]["info"] in ([], {})
    assert nrepl_client.lookup("no-such-thing-xyz", ns="user") == {}


@integration
def test_non_ascii(nrepl_client):
    r = nrepl_client.eval('(str "λ→" "ü")', timeout=WAIT)
    assert r.values == ['"λ→ü"']
    r = nrepl_client.eval('(println "λ→ü 😀") (count "λ→ü")', timeout=WAIT)
    assert r.out == "λ→ü 😀\n" and r.values == ["nil", "3"]
    r = nrepl_client.eval('(def ünïcode-var "ok") ünïcode-var', ns="user", timeout=WAIT)
    assert r.values == ["#'user/ünïcode-var", '"ok"']


@integration
def test_empty_values(nrepl_client):
    r = nrepl_client.eval("'() [] {} \"\"", timeout=WAIT)
    assert r.values == ["()", "[]", "{}", '""']
    r = nrepl_client.eval('(print "")', timeout=WAIT)
    assert r.values == ["nil"] and r.out == ""


@integration
def test_load_file(nrepl_client):
    content = '(ns demo.loaded)\n(defn twice "Doubles." [x] (* 2 x))\n(twice 21)\n'
    r = nrepl_client.load_file(content, file_path="demo/loaded.clj", file_name="loaded.clj")
    assert r.ok and r.values == ["42"]
    assert nrepl_client.eval("(demo.loaded/twice 5)", timeout=WAIT).values == ["10"]
    assert nrepl_client.lookup("twice", ns="demo.loaded")["doc"] == "Doubles."

    bad = "(ns demo.broken)\n(defn g [] (inc nil))\n(g)\n"
    r = nrepl_client.load_file(bad, file_path="demo/broken.clj", file_name="broken.clj")
    assert not r.ok and "broken.clj:2" in r.err


@integration
def test_interrupt_frees_session(nrepl_client):
    session = nrepl_client.clone()
    pending = nrepl_client.send("eval", code="(Thread/sleep 60000)", session=session)

    def interrupted():  # the eval may not have started yet: then the session is still idle
        status = nrepl_client.interrupt(session, pending.id)
        return None if "session-idle" in status else status

    status = wait_until(interrupted, "the eval to start, so that an interrupt finds it", interval=0.1)
    assert "done" in status
    replies = pending.result(WAIT)
    assert "interrupted" in EvalResult.from_replies(pending.id, replies).status
    assert nrepl_client.eval("(+ 1 2)", session=session, timeout=WAIT).values == ["3"]
    nrepl_client.close_session(session)
    assert session not in nrepl_client.sessions


@integration
def test_timeout_raises_repl_timeout(nrepl_client):
    session = nrepl_client.clone()
    with pytest.raises(ReplTimeout, match=r"eval .*0\.5s"):
        nrepl_client.eval("(Thread/sleep 20000)", session=session, timeout=0.5)
    nrepl_client.interrupt(session)
    assert nrepl_client.eval("(+ 2 2)", session=session, timeout=WAIT).values == ["4"]


def wait_for_port_file(path: Path, expected: str) -> None:
    """nREPL writes .nrepl-port just after printing its port (and the file may
    briefly exist empty), so poll for the expected content for a while."""

    def content() -> str | None:
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            return None

    wait_until(lambda: content() == expected, f"{path} to hold {expected}", interval=0.05)


@integration
def test_project_source_dirs_on_classpath(nrepl_server, nrepl_client):
    source = nrepl_server.project_dir / "src" / "fixture_ns" / "hello.clj"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text('(ns fixture-ns.hello)\n(defn greet [] "hi from src")\n')
    r = nrepl_client.eval("(require 'fixture-ns.hello) (fixture-ns.hello/greet)", timeout=WAIT)
    assert r.values == ["nil", '"hi from src"'], r.err
    if DEMO_SRC.is_dir():  # the shared server also serves the demo project
        r = nrepl_client.eval("(require 'demo.core) (some? (find-ns 'demo.core))", timeout=60)
        assert r.values == ["nil", "true"], r.err


@integration
def test_start_failure_is_one_line(tmp_path):
    if nrepl_missing_reason():
        pytest.skip(f"real nREPL unavailable: {nrepl_missing_reason()}")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ReplUnavailable, match="Address already in use") as info:
            start_local_nrepl(tmp_path, timeout=120, port=port, jvm_opts=TEST_JVM_OPTS)
    assert "\n" not in str(info.value)


@integration
def test_port_file_written(nrepl_server):
    port = str(nrepl_server.port)
    wait_for_port_file(nrepl_server.port_file, port)


@integration
def test_server_restart_and_reconnect(nrepl_server, tmp_path):
    """Kill a real server mid-request; restart it on the same port; the same client
    object reconnects on its next request."""
    project = tmp_path / "restart"
    project.mkdir()
    first = start_local_nrepl(project, timeout=120, jvm_opts=TEST_JVM_OPTS)
    second = None
    try:
        client = NreplClient.connect(first.host, first.port)
        session = client.clone()
        pending = client.send("eval", code="(Thread/sleep 60000)", session=session)
        first.process.kill()  # no clean shutdown: like a crashed REPL
        first.process.wait(WAIT)
        with pytest.raises(ReplUnavailable, match=f"127.0.0.1:{first.port}"):
            pending.result(WAIT)
        with pytest.raises(ReplUnavailable, match=f"127.0.0.1:{first.port}"):
            client.eval("(+ 1 1)", timeout=WAIT)
        first.stop()
        assert not first.port_file.exists()  # stop() cleans up after a killed JVM

        second = start_local_nrepl(project, timeout=120, port=first.port, jvm_opts=TEST_JVM_OPTS)
        assert second.port == first.port
        assert client.eval("(+ 1 1)", timeout=WAIT).values == ["2"]
        assert client.connection_generation == 2 and client.sessions == frozenset()
        with pytest.raises(ReplUnavailable, match="clone a new one"):
            client.eval("1", session=session, timeout=WAIT)
        assert client.eval("(+ 1 2)", session=client.clone(), timeout=WAIT).values == ["3"]
        client.close()
        with NreplClient.connect(second.host, second.port) as fresh:
            assert fresh.eval("(str :fresh)", timeout=WAIT).values == ['":fresh"']
    finally:
        first.stop()
        if second is not None:
            second.stop()


@integration
def test_main_serve_until_ctrl_c(tmp_path):
    if nrepl_missing_reason():
        pytest.skip(f"real nREPL unavailable: {nrepl_missing_reason()}")
    root = Path(__file__).resolve().parents[1]
    code = ("import sys; from cljassist.repl.local_server import main_serve; "
            "sys.exit(main_serve(sys.argv[1]))")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], cwd=root, stdout=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": str(root)},
        start_new_session=True,  # its own process group, so cleanup can reach the JVM too
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("nREPL on 127.0.0.1:"), line
        assert f"(.nrepl-port written in {tmp_path})" in line
        port = int(line.split(":")[1].split()[0])
        wait_for_port_file(tmp_path / ".nrepl-port", str(port))
        with NreplClient.connect("127.0.0.1", port) as client:
            assert client.eval("(+ 20 22)", timeout=WAIT).values == ["42"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(WAIT) == 0
        assert not (tmp_path / ".nrepl-port").exists()
        with pytest.raises(ReplUnavailable):
            NreplClient.connect("127.0.0.1", port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # python and the JVM it started
            proc.wait()
