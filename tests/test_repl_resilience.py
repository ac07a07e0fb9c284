"""The REPL never suffers, and a REPL in trouble never stops completion (real Debian nREPL).

The model is a scripted fake here: these tests are about the REPL side of the engine."""

import pytest

from cljassist.config import Settings
from cljassist.context import ReplContextProvider
from cljassist.engine import Engine
from cljassist.repl.client import NreplClient
from cljassist.repl.local_server import start_local_nrepl
from cljassist.types import CompletionRequest, ReplStatus
from cljassist.verify.repl_compile import ReplVerifier
from tests.fakes import ScriptedModel
from tests.fixtures_repl import TEST_JVM_OPTS
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

CODE = "(ns resilience.core (:require [clojure.string :as str]))\n\n(defn shout [s]\n  "
SUFFIX = ")\n"


def engine_for(client: NreplClient) -> Engine:
    model = ScriptedModel(["(str/upper-case s)", "(str/no-such-fn s)"])
    return Engine(model, Settings(candidates=2), ReplContextProvider(client, timeout_s=5), ReplVerifier(client, timeout_s=5))


def test_completion_survives_a_repl_restart(tmp_path):
    first = start_local_nrepl(tmp_path, timeout=120, jvm_opts=TEST_JVM_OPTS)
    second = None
    try:
        client = NreplClient.connect(first.host, first.port)
        client.eval(CODE + "s)", timeout=60)
        engine = engine_for(client)
        request = CompletionRequest(CODE, SUFFIX)

        before = engine.complete(request)
        assert before.repl == "used"
        assert [s.text for s in before.suggestions] == ["(str/upper-case s)"]  # the unresolvable one is withheld
        assert before.suggestions[0].checks["compiles"] is True

        first.process.kill()
        first.process.wait(30)
        # the client's reader sees the dead server's end of the socket a moment after the kill
        wait_until(lambda: not client.connected, "the client to see the server gone")
        during = engine.complete(request)
        assert during.repl is ReplStatus.FAILED and "127.0.0.1" in during.repl_error
        assert during.repl_label == f"failed: {during.repl_error}"
        assert during.suggestions and all(s.checks["compiles"] is None for s in during.suggestions)

        second = start_local_nrepl(tmp_path, timeout=120, port=first.port, jvm_opts=TEST_JVM_OPTS)
        client.eval(CODE + "s)", timeout=60)  # the user reloads their namespace
        after = engine.complete(request)
        assert after.repl == "used" and after.suggestions[0].checks["compiles"] is True
        client.close()
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_completes_while_the_users_eval_runs_and_leaves_their_session_alone(nrepl_server, nrepl_client):
    nrepl_client.eval(CODE + "s)", timeout=60)
    user_session = nrepl_client.clone()
    nrepl_client.eval("(in-ns 'user) (def marker 41)", session=user_session, timeout=10)
    busy = nrepl_client.send("eval", code="(do (Thread/sleep 4000) (inc marker))", session=user_session)

    result = engine_for(nrepl_client).complete(CompletionRequest(CODE, SUFFIX))
    assert result.repl == "used" and result.suggestions[0].checks["compiles"] is True
    assert not busy.done  # we did not wait for, or queue behind, the user's evaluation

    replies = busy.result(30)
    assert [r["value"] for r in replies if "value" in r] == ["42"]
    ns_after = nrepl_client.eval("(str *ns*)", session=user_session, timeout=10).values
    assert ns_after == ['"user"']


def test_bench_comparison_measures_context_and_verification(nrepl_server, nrepl_client):
    from cljassist.bench.run import format_comparison, run_comparison

    nrepl_client.eval(CODE + "s)", timeout=60)
    # The model is surest of a call that does not compile; verification must withhold it.
    model = ScriptedModel([("(str/no-such-fn s)", -0.1), ("(str/upper-case s)", -0.5)])
    verifier = ReplVerifier(nrepl_client, timeout_s=5)
    settings = Settings(candidates=2)
    with_context = Engine(model, settings, ReplContextProvider(nrepl_client, timeout_s=5), verifier)
    without_context = Engine(model, settings, None, verifier)
    cases = [{"id": "r1", "category": "call", "prefix": CODE, "suffix": SUFFIX, "middle": "(str/upper-case s)",
              "xref": True}]
    comparison, verified = run_comparison(with_context, without_context, cases)
    assert [r.id for r in verified] == ["r1"] and verified[0].em
    overall = comparison["overall"]
    assert overall["precision_without_verification"] == 0.0 and overall["compiles_without_verification"] == 0.0
    assert overall["precision_with_verification"] == 1.0 and overall["compiles_with_verification"] == 1.0
    assert overall["EM_with_context"] == 1.0 and overall["EM_without_context"] == 1.0
    assert comparison["xref"]["n"] == 1 and "call" in comparison["by_category"]
    assert "prec +verify" in format_comparison(comparison)
    # the model saw the REPL's context only in the with-context run
    assert "the running program knows" not in model.prompts[0]
    assert "the running program knows" in model.prompts[1]


def test_text_cut_before_its_ns_form_is_verified_in_the_given_namespace(nrepl_server, nrepl_client):
    nrepl_client.eval(CODE + "s)", timeout=60)
    body_only = "(defn shout [s]\n  "  # as a benchmark case cut after the ns form
    engine = engine_for(nrepl_client)
    unknown = engine.complete(CompletionRequest(body_only, SUFFIX))
    assert all(s.checks["compiles"] is None for s in unknown.suggestions)  # not judged, so not withheld
    assert len(unknown.suggestions) == 2
    known = engine.complete(CompletionRequest(body_only, SUFFIX, namespace="resilience.core"))
    assert [s.text for s in known.suggestions] == ["(str/upper-case s)"]
    assert known.suggestions[0].checks["compiles"] is True and known.repl == "used"
