"""The nREPL bridge: the Clojure middleware (cljassist/resources/nrepl_middleware.clj) put into a real
Debian nREPL 1.0 with add-middleware, talking to an in-process daemon.

The server here is our own (module-scoped), not the shared `nrepl_server`: injecting changes its
middleware stack, which other tests must not see. Most tests use a fake engine that records what
it was asked and can be held on a gate (to have a completion pending); the last test runs the real
model with the REPL's checks, end to end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import edn_format
import pytest

from cljassist.config import Settings
from cljassist.types import CompletionResult, Suggestion, WarmResult
from cljassist.frontends.bridge import COMPLETE_OP, MIDDLEWARE_VAR, export_middleware, inject_middleware
from cljassist.frontends.daemon import Daemon
from cljassist.frontends.service import CompletionService
from cljassist.repl.bencode import encode
from cljassist.repl.client import NreplClient
from cljassist.repl.local_server import base_classpath, start_local_nrepl
from tests.fakes import FakeEngine, generate_until_released
from tests.emacs_live import assert_kept_as_emacs_reported, needs_emacs, run_live_emacs_test
from tests.fixtures_repl import DEMO_SRC, TEST_JVM_OPTS, nrepl_missing_reason
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
WAIT = 60.0  # generous: only there so a broken bridge fails a test instead of hanging it
SLOW = ";; SLOW"  # a request whose text holds this waits on the engine's gate


class RecordingEngine(FakeEngine):
    """Answers every request with one suggestion naming `label`; records the requests; holds
    requests marked SLOW until `gate` opens (polling the cancel flag like the real engine)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.requests = []
        self.warms = []  # the requests of the warms asked for
        self.warmed = threading.Event()
        self.gate = threading.Event()
        self.started = threading.Event()
        self.model = type("FakeModel", (), {"name": f"fake-{label}"})()

    def complete(self, request, n=None, cancelled=None):
        self.requests.append(request)
        if SLOW in request.prefix + request.suffix:
            self.started.set()
            generate_until_released(self.gate, cancelled)
        suggestion = Suggestion(text=f"({self.label} x)", score=0.75,
                                checks={"balanced": True, "reads": True, "compiles": None})
        return CompletionResult([suggestion], ms=2.5, namespace=request.namespace, repl="off")

    def warm(self, request, cancelled=None):
        self.warms.append(request)
        self.warmed.set()
        return WarmResult(len(request.prefix))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    reason = nrepl_missing_reason()
    if reason:
        pytest.skip(f"real nREPL unavailable: {reason}")
    project = tmp_path_factory.mktemp("bridge-project")
    (project / "src").mkdir()
    return project


@pytest.fixture(scope="module")
def server(project):
    server = start_local_nrepl(project, [str(DEMO_SRC)], timeout=120, jvm_opts=TEST_JVM_OPTS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def engine() -> RecordingEngine:
    return RecordingEngine("main")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, engine):
    home = tmp_path_factory.mktemp("daemon-home")  # not the REPL's directory: discovery is tested apart
    service = CompletionService(engine)
    daemon = Daemon(service, home).start()
    yield daemon
    engine.gate.set()
    daemon.stop()
    service.close()


@pytest.fixture(scope="module")
def injection(server, daemon):
    """(ops before injecting, status line of the injection)."""
    with NreplClient.connect(server.host, server.port) as client:
        before = set(client.describe()["ops"])
        status = inject_middleware(client, "127.0.0.1", daemon.port, daemon.token)
    return before, status


@pytest.fixture
def client(server, daemon, injection, engine):
    """A fresh connection to the injected server, the middleware pointed at `daemon`."""
    client = NreplClient.connect(server.host, server.port)
    configure(client, daemon)
    engine.gate.clear()
    engine.started.clear()
    engine.requests.clear()
    yield client
    engine.gate.set()  # never leave the shared engine stuck
    client.close()


def configure(client: NreplClient, daemon: Daemon | None) -> None:
    address = "nil" if daemon is None else f'{{:host "127.0.0.1" :port {daemon.port} :token "{daemon.token}"}}'
    assert client.eval(f"(cljassist.nrepl.middleware/configure! {address})").ok


def complete(client: NreplClient, **fields) -> list[dict]:
    return client.request(COMPLETE_OP, timeout=WAIT, **fields)


def merged(replies: list[dict]) -> dict:
    out: dict = {}
    for reply in replies:
        out.update(reply)
    out["status"] = sorted({s for r in replies for s in r.get("status", ())})
    return out


# ------------------------------------------------------------------------------- injection

def test_inject_adds_the_op_and_describe_documents_it(injection, client):
    before, status = injection
    assert COMPLETE_OP not in before and "add-middleware" in before
    assert status.startswith("middleware ") and "added with add-middleware" in status
    ops = merged(client.request("describe", **{"verbose?": 1}))["ops"]
    doc = ops[COMPLETE_OP]["doc"]
    assert "cljassist" in doc and "done" in doc
    assert {"file", "line", "column", "code", "prefix", "suffix", "n"} <= set(ops[COMPLETE_OP]["optional"])
    assert "suggestions" in ops[COMPLETE_OP]["returns"]


def test_injecting_again_only_reloads_and_reconfigures(client, daemon):
    status = inject_middleware(client, "127.0.0.1", daemon.port, daemon.token)
    assert "already present" in status
    stack = merged(client.request("ls-middleware"))["middleware"]
    assert stack.count(f"#'{MIDDLEWARE_VAR}") == 1
    # load-file recorded the namespace as loaded: a require does not look for it on the classpath
    assert client.eval("(require 'cljassist.nrepl.middleware)").ok
    assert merged(complete(client, prefix="(f ", suffix=")"))["status"] == ["done"]


def test_a_server_without_the_dynamic_loader_gets_a_pointer_to_the_docs():
    class NoLoader:
        def describe(self, timeout=None):
            return {"ops": {"eval": {}, "describe": {}}, "versions": {"nrepl": {"version-string": "1.6.0"}}}

    status = inject_middleware(NoLoader(), "127.0.0.1", 1, "t")
    assert "no dynamic middleware loader" in status and "docs/nrepl-middleware.md" in status
    assert not status.startswith("middleware ")


# ------------------------------------------------------------------------------- request shapes

def test_complete_with_code_line_and_column(client, engine):
    code = "(ns demo.x)\n(defn f [x]\n  (inc x))\n"
    reply = merged(complete(client, code=code, line=3, column=4, file="/nowhere/demo/x.clj"))
    assert reply["status"] == ["done"] and "err" not in reply
    sid = reply["suggestions"][0].pop("sid")  # the daemon's id of the suggestion, for accepted/retained
    assert isinstance(sid, str) and sid
    assert reply["suggestions"] == [{"text": "(main x)", "score": "0.750",
                                     "checks": {"balanced": "true", "reads": "true", "compiles": "unknown"}}]
    assert reply["ms"] == "2.500" and reply["withheld"] == 0
    request = engine.requests[-1]
    assert request.prefix == "(ns demo.x)\n(defn f [x]\n  (" and request.suffix == "inc x))\n"
    assert request.file == "/nowhere/demo/x.clj"


def test_complete_with_prefix_suffix_ns_and_n(client, engine):
    reply = merged(complete(client, prefix="(map ", suffix=" xs)", ns="demo.core", n=1))
    assert reply["status"] == ["done"] and reply["namespace"] == "demo.core"
    request = engine.requests[-1]
    assert (request.prefix, request.suffix, request.namespace) == ("(map ", " xs)", "demo.core")


def test_complete_with_ciders_context_shape(client, engine):
    reply = merged(complete(client, prefix="str/jo", context="(defn f [xs]\n  (__prefix__ \",\" xs))",
                            ns="demo.core"))
    assert reply["status"] == ["done"] and reply["suggestions"]
    request = engine.requests[-1]
    assert request.prefix == "(defn f [xs]\n  (str/jo" and request.suffix == " \",\" xs))"
    # CIDER sends ":same" when the form did not change: the session's last context is used.
    session = client.clone()
    complete(client, prefix="str/jo", context="(g __prefix__)", session=session)
    complete(client, prefix="str/spl", context=":same", session=session)
    assert engine.requests[-1].prefix == "(g str/spl" and engine.requests[-1].suffix == ")"


def test_complete_with_only_file_line_and_column_reads_the_saved_file(client, engine, tmp_path):
    source = tmp_path / "saved.clj"
    source.write_text("(ns saved)\n(defn g [y] )\n")
    reply = merged(complete(client, file=str(source), line=2, column=13))
    assert reply["status"] == ["done"]
    assert engine.requests[-1].prefix == "(ns saved)\n(defn g [y] " and engine.requests[-1].suffix == ")\n"


def test_bad_fields_answer_err_with_done_and_error(client):
    reply = merged(complete(client, line=1))
    assert reply["status"] == ["done", "error"] and "needs 'code'" in reply["err"]
    reply = merged(complete(client, code="(a)", line=9, column=1))
    assert reply["status"] == ["done", "error"] and reply["err"]


def test_complete_at_for_editor_snippets(client, engine, tmp_path):
    source = tmp_path / "snippet.clj"
    source.write_text("(ns snippet)\n(defn h [z] )\n")
    result = client.eval(f'(cljassist.nrepl.middleware/complete-at {{:file "{source}" :line 2 :column 13}})',
                         timeout=WAIT)
    assert result.ok, result.err
    suggestions = edn_format.loads(result.values[-1])
    kw = edn_format.Keyword
    assert [s[kw("text")] for s in suggestions] == ["(main x)"]
    assert suggestions[0][kw("checks")][kw("balanced")] is True and suggestions[0][kw("checks")][kw("compiles")] is None
    zero_based = client.eval(
        f'(cljassist.nrepl.middleware/complete-at {{:file "{source}" :line 1 :column 12 :base 0}})', timeout=WAIT)
    assert zero_based.ok and engine.requests[-1].prefix == "(ns snippet)\n(defn h [z] "
    missing = client.eval('(cljassist.nrepl.middleware/complete-at {:file "/no/such.clj" :line 1 :column 1})')
    assert not missing.ok and "cannot read" in missing.err


# ------------------------------------------------------------------------------- the other ops

ACCEPTED_OP, WARM_OP, RETAINED_OP = "cljassist/accepted", "cljassist/warm", "cljassist/retained"


def test_describe_lists_the_ops_an_editor_reports_to(client):
    ops = merged(client.request("describe", **{"verbose?": 1}))["ops"]
    assert {"sid", "kind", "chars"} <= set(ops[ACCEPTED_OP]["optional"])
    assert "prefetching" in ops[ACCEPTED_OP]["returns"]
    assert "warmed" in ops[WARM_OP]["returns"]
    assert set(ops[RETAINED_OP]["requires"]) == {"sid", "chars"}


def test_accepted_and_retained_are_forwarded_and_the_daemon_prefetches(client, engine, monkeypatch):
    monkeypatch.setattr(engine, "settings", Settings(prefetch=True), raising=False)
    code = "(ns demo.x)\n(defn f [x]\n  (inc x))\n"
    sid = merged(complete(client, code=code, line=3, column=3, buffer="acc"))["suggestions"][0]["sid"]
    engine.requests.clear()
    accepted = merged(client.request(ACCEPTED_OP, timeout=WAIT, code=code, line=3, column=11, buffer="acc",
                                     sid=sid, kind="word", chars=2))
    assert accepted["status"] == ["done"] and "err" not in accepted, accepted.get("err")
    assert accepted["prefetching"] >= 1 and accepted["recorded"] == "false"  # the test daemon records nothing
    wait_until(lambda: engine.requests, "the daemon to compute ahead")
    assert engine.requests[0].prefix == "(ns demo.x)\n(defn f [x]\n  (inc x))"
    retained = merged(client.request(RETAINED_OP, timeout=WAIT, sid=sid, chars=2))
    assert retained["status"] == ["done"] and retained["recorded"] == "false", retained.get("err")
    too_many = merged(client.request(RETAINED_OP, timeout=WAIT, sid=sid, chars=1))
    assert too_many["status"] == ["done", "error"] and "more than" in too_many["err"]


def test_warm_reaches_the_daemons_op(client, engine):
    engine.warms.clear()
    warm = merged(client.request(WARM_OP, timeout=WAIT, code="(ns demo.x)\n(inc ", line=2, column=6, buffer="w"))
    assert warm["status"] == ["done"] and "err" not in warm, warm.get("err")
    assert "warmed" in warm
    (request,) = engine.warms
    assert (request.prefix, request.suffix) == ("(ns demo.x)\n(inc ", "")


def test_a_file_loaded_is_warmed_and_the_load_goes_on_unchanged(client, engine, tmp_path):
    engine.warms.clear()
    engine.warmed.clear()
    source = tmp_path / "warmed.clj"
    text = "(ns bridge.warmed)\n\n(defn twice [x] (* 2 x))\n(twice 21)"
    loaded = client.load_file(text, file_path=str(source), file_name="warmed.clj", timeout=WAIT)
    assert loaded.ok and loaded.values[-1] == "42"
    assert engine.warmed.wait(WAIT), "the load-file sent no warm"
    (request,) = engine.warms
    assert (request.file, request.prefix, request.suffix) == (str(source), text, "")
    # code loaded from the classpath (a relative path) is no buffer: nothing is warmed
    engine.warmed.clear()
    assert client.load_file("(+ 1 2)", file_path="bridge/x.clj", file_name="x.clj", timeout=WAIT).ok
    assert not engine.warmed.wait(1.0) and len(engine.warms) == 1


def test_a_load_file_goes_on_when_no_daemon_answers_the_warm(client, tmp_path):
    configure(client, None)
    loaded = client.load_file("(ns bridge.alone)\n(+ 40 2)", file_path=str(tmp_path / "alone.clj"),
                              file_name="alone.clj", timeout=WAIT)
    assert loaded.ok and loaded.values[-1] == "42"


# ------------------------------------------------------------------------------- finding the daemon

def test_no_daemon_running_says_how_to_start_one(client, tmp_path):
    configure(client, None)
    reply = merged(complete(client, prefix="(f ", suffix=")", file=str(tmp_path / "a.clj")))
    assert reply["status"] == ["done", "error"]
    assert "no cljassist daemon is running" in reply["err"] and "cljassist serve" in reply["err"]


def test_a_configured_daemon_that_is_gone_is_reported(client, daemon, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    assert client.eval(f'(cljassist.nrepl.middleware/configure! {{:host "127.0.0.1" :port {dead_port} '
                       f':token "x"}})').ok
    reply = merged(complete(client, prefix="(f ", suffix=")", file=str(tmp_path / "a.clj")))
    assert reply["status"] == ["done", "error"] and f"127.0.0.1:{dead_port}" in reply["err"]


def test_the_daemon_is_found_from_the_files_directory(client, daemon, engine):
    configure(client, None)
    nested = daemon.directory / "src" / "app" / "core.clj"
    reply = merged(complete(client, prefix="(f ", suffix=")", file=str(nested)))
    assert reply["status"] == ["done"] and reply["suggestions"][0]["text"] == "(main x)"


def test_the_daemon_is_found_from_the_repls_working_directory(client, project):
    other_engine = RecordingEngine("project")
    service = CompletionService(other_engine)
    with Daemon(service, project):
        configure(client, None)
        reply = merged(complete(client, prefix="(f ", suffix=")"))
    service.close()
    assert reply["status"] == ["done"] and reply["suggestions"][0]["text"] == "(project x)"


# ------------------------------------------------------------------------------- asynchrony

def test_the_connection_is_not_blocked_by_a_pending_completion(client, engine):
    pending = client.send(COMPLETE_OP, prefix=f"{SLOW}\n(f ", suffix=")")
    assert engine.started.wait(WAIT)
    assert client.eval("(+ 1 2)", timeout=WAIT).values == ["3"]
    assert merged(client.request("describe", timeout=WAIT))["status"] == ["done"]
    assert not pending.done
    engine.gate.set()
    reply = merged(pending.result(WAIT))
    assert reply["status"] == ["done"] and reply["suggestions"]


def test_the_handler_returns_before_the_answer_is_sent(client, engine):
    """Independent of the server's own threading (nREPL 1.0 runs each message on a future anyway):
    the middleware's handler hands the work off and returns at once."""
    setup = client.eval("""
      (def sent (promise))
      (def transport (reify nrepl.transport/Transport
                       (recv [this] nil) (recv [this timeout] nil)
                       (send [this msg] (deliver sent msg) this)))
      (def handler (cljassist.nrepl.middleware/wrap-cljassist (fn [msg] :passed-on)))""", timeout=WAIT)
    assert setup.ok, setup.err
    returned = client.eval(f'[(handler {{:op "cljassist/complete" :id "h" :transport transport '
                           f':prefix "{SLOW}\\n(f " :suffix ")"}}) (realized? sent)]', timeout=WAIT)
    assert returned.values == ["[nil false]"]
    assert engine.started.wait(WAIT)
    assert client.eval('(handler {:op "eval"})').values == [":passed-on"]
    engine.gate.set()
    answer = client.eval("(let [m (deref sent 30000 :timeout)] [(:id m) (:status m) (map :text (:suggestions m))])",
                         timeout=WAIT)
    assert answer.values == ['["h" #{:done} ("(main x)")]']


def test_a_superseded_request_ends_with_err_done_and_error(client, engine):
    first = client.send(COMPLETE_OP, prefix=f"{SLOW}\n(f ", suffix=")", buffer="same")
    assert engine.started.wait(WAIT)
    second = client.send(COMPLETE_OP, prefix="(g ", suffix=")", buffer="same")
    first_reply = merged(first.result(WAIT))
    assert first_reply["status"] == ["done", "error"] and "superseded" in first_reply["err"]
    assert first_reply["cancelled"] == "true"
    assert merged(second.result(WAIT))["status"] == ["done"]


def test_a_client_that_disconnects_mid_request_harms_nobody(server, client, engine):
    with socket.create_connection((server.host, server.port), timeout=WAIT) as raw:
        raw.sendall(encode({"op": COMPLETE_OP, "id": "gone", "prefix": f"{SLOW}\n(f ", "suffix": ")"}))
        assert engine.started.wait(WAIT)
    engine.gate.set()  # the reply now goes to a closed connection
    assert client.eval("(+ 1 2)", timeout=WAIT).values == ["3"]
    reply = merged(complete(client, prefix="(h ", suffix=")"))
    assert reply["status"] == ["done"] and reply["suggestions"]
    assert "Unhandled REPL handler exception" not in server.output_tail()


# ------------------------------------------------------------------------------- nREPL's own Clojure client

def test_nrepl_core_client_gets_suggestions_and_done(server, client, engine):
    requests = [
        {"op": COMPLETE_OP, "code": "(ns demo.y)\n(defn f [x] )", "line": 2, "column": 13},
        {"op": COMPLETE_OP, "prefix": "str/jo", "context": '(defn f [xs] (__prefix__ "," xs))', "ns": "demo.core"},
        {"op": COMPLETE_OP, "line": 1},
    ]
    messages = " ".join("{" + " ".join(f":{k} {json.dumps(v)}" for k, v in r.items()) + "}" for r in requests)
    program = (
        "(require '[nrepl.core :as nrepl])"
        f"(with-open [conn (nrepl/connect :host \"127.0.0.1\" :port {server.port})]"
        "  (let [client (nrepl/client conn 60000)]"
        f"    (doseq [m [{messages}]] (prn (vec (nrepl/message client m))))))"
        "(shutdown-agents)"  # the client's futures would keep the JVM up for a minute
    )
    out = subprocess.run(["java", *TEST_JVM_OPTS, "-cp", ":".join(base_classpath()), "clojure.main", "-e", program],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    kw = edn_format.Keyword
    replies = [edn_format.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert len(replies) == 3
    for ok in replies[:2]:
        assert "done" in ok[-1][kw("status")]
        suggestions = [r[kw("suggestions")] for r in ok if kw("suggestions") in r][0]
        assert suggestions[0][kw("text")] == "(main x)" and suggestions[0][kw("checks")][kw("balanced")] == "true"
    failed = {k: v for r in replies[2] for k, v in r.items()}
    assert set(failed[kw("status")]) == {"done", "error"} and "needs 'code'" in failed[kw("err")]
    assert engine.requests[-1].prefix == "(defn f [xs] (str/jo"


# ------------------------------------------------------------------------------- start-up configuration

def test_startup_configuration_from_the_classpath_and_nrepl_edn(tmp_path):
    """What docs/nrepl-middleware.md says for servers without the dynamic loader: the exported
    source on the classpath and `:middleware` in .nrepl.edn; the daemon found via .cljassist-port."""
    project = tmp_path / "startup"
    (project / "src").mkdir(parents=True)
    classpath_dir = tmp_path / "cljassist-mw"
    export_middleware(classpath_dir)
    (project / ".nrepl.edn").write_text("{:middleware [cljassist.nrepl.middleware/wrap-cljassist]}\n")
    server = start_local_nrepl(project, [str(classpath_dir)], timeout=120, jvm_opts=TEST_JVM_OPTS)
    engine = RecordingEngine("startup")
    service = CompletionService(engine)
    try:
        with Daemon(service, project) as daemon, NreplClient.connect(server.host, server.port) as client:
            assert COMPLETE_OP in client.describe()["ops"]
            reply = merged(complete(client, prefix="(f ", suffix=")", file=str(project / "src" / "a.clj")))
            assert reply["status"] == ["done"] and reply["suggestions"][0]["text"] == "(startup x)"
            assert "already present" in inject_middleware(client, "127.0.0.1", daemon.port, daemon.token)
    finally:
        service.close()
        server.stop()


# ------------------------------------------------------------------------------- end to end, for real

def test_end_to_end_real_model_repl_daemon_and_middleware(server, client, default_model, tmp_path):
    from cljassist.clojure_text.reader import imbalance
    from cljassist.frontends.common import open_engine

    assert client.eval("(require 'demo.core)", timeout=WAIT).ok
    # show_failing: a suggestion that fails to compile comes back with its error instead of being withheld
    settings = Settings(nrepl=f"{server.host}:{server.port}", candidates=2, max_new_tokens=16, n_ctx=2048,
                        show_failing=True)
    opened = open_engine(settings, explicit=True, model=default_model)
    service = CompletionService(opened.engine)
    source = DEMO_SRC / "demo" / "core.clj"
    text = source.read_text()
    offset = text.index("(str/join") + len("(str/jo")
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    try:
        with Daemon(service, tmp_path, repl_label=opened.repl_label) as daemon:
            assert "already present" in inject_middleware(client, "127.0.0.1", daemon.port, daemon.token)
            reply = merged(complete(client, code=text, line=line, column=column, file=str(source)))
    finally:
        service.close()
        opened.close()
    assert reply["status"] == ["done"], reply.get("err")
    assert reply["namespace"] == "demo.core" and reply["repl"] == "used"
    assert 1 <= len(reply["suggestions"]) <= 2, reply
    for s in reply["suggestions"]:
        assert set(s["checks"]) >= {"balanced", "reads", "compiles"}
        assert set(s["checks"].values()) <= {"true", "false", "unknown"}
        assert s["checks"]["balanced"] == "true" and s["checks"]["reads"] in ("true", "false")
        # judged by the REPL in demo.core (a text that does not read is not compiled)
        assert s["checks"]["compiles"] in ("true", "false") or s["checks"]["reads"] == "false"
        if "false" in s["checks"].values():
            assert s["error"]  # shown because show_failing, with the reason
        assert imbalance(text[:offset] + s["text"] + text[offset:]) <= imbalance(text)


@needs_emacs
def test_the_emacs_package_through_this_middleware_and_a_real_daemon(server, client, default_model, tmp_path):
    """Warm, complete (SmolLM2), M-n asking for more, typing through, accepting a word and the rest, and the reports, from
    Emacs through this middleware; the daemon's statistics show what Emacs said it kept."""
    from cljassist.frontends.common import open_engine
    from cljassist.stats.tracker import SuggestionTracker

    settings = Settings(nrepl=f"{server.host}:{server.port}", candidates=2, max_new_tokens=12, n_ctx=2048,
                        show_failing=True, min_score=0.0, prefetch=True)
    opened = open_engine(settings, explicit=True, model=default_model)
    service = CompletionService(opened.engine)
    events: list[dict] = []
    try:
        with Daemon(service, tmp_path, repl_label=opened.repl_label,
                    suggestions=SuggestionTracker("smollm2", events.append)) as daemon:
            assert "already present" in inject_middleware(client, "127.0.0.1", daemon.port, daemon.token)
            run_live_emacs_test(server.host, server.port)
    finally:
        service.close()
        opened.close()
    assert_kept_as_emacs_reported(events)


def test_cljassist_serve_injects_then_releases_on_sigterm(server, client, default_model_file, tmp_path):
    """The command a user runs: `cljassist serve --nrepl HOST:PORT` puts the middleware in (here it
    is there already, so it reloads and configures it), serves the op, and on SIGTERM removes its
    port file and makes the middleware forget it."""
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "cljassist", "serve", "--nrepl", f"{server.host}:{server.port}",
         "-n", "1", "--max-new-tokens", "8", "--deadline-ms", "60000", "--min-score", "0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(root), "HOME": str(tmp_path)},
    )
    try:
        listening = process.stdout.readline()
        assert "listening on 127.0.0.1:" in listening and f"REPL {server.host}:{server.port}" in listening, listening
        status = process.stdout.readline()
        assert "middleware cljassist.nrepl.middleware/wrap-cljassist already present" in status, status
        reply = merged(complete(client, prefix="(defn add-one [x]\n  (+ x ", suffix="))\n"))
        assert reply["status"] == ["done"] and len(reply["suggestions"]) == 1, reply
        assert reply["repl"] in ("used", "ns-not-loaded")  # the daemon's engine has the REPL
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0
        assert not (tmp_path / ".cljassist-port").exists()
        gone = merged(complete(client, prefix="(f ", suffix=")", file=str(tmp_path / "a.clj")))
        assert gone["status"] == ["done", "error"] and "no cljassist daemon is running" in gone["err"]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
