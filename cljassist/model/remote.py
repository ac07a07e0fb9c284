"""The remote engine: candidates from a completion server over HTTP instead of the in-process model.

``RemoteModel`` offers what the engine uses of :class:`cljassist.model.llama.LocalModel` (``name``,
``fim``, ``last_stats``, ``count_tokens``, ``generate_candidates``, ``close``), so a laptop can send
its completions to a bigger model on another machine (or a GPU box) and keep the REPL-aware
pipeline (context, stop rule, checks, ranking) local.

Two APIs, chosen by the URL's path:

``http://HOST:PORT/infill``
    llama.cpp's ``llama-server`` fill-in-the-middle endpoint.  The server wraps the parts in its
    model's own FIM tokens, so we send the parts, not a rendered prompt: ``input_prefix`` = all the
    model reads before the gap (file header, REPL context block, the code before the cursor: the
    prompt's ``before``), ``input_suffix`` = the code after it.
``http://HOST:PORT/v1/completions`` (also ``http://HOST:PORT`` and ``http://HOST:PORT/v1``)
    Any OpenAI-compatible completions endpoint (llama.cpp, llama-cpp-python, vLLM, Ollama...).  It
    takes one prompt text, so the FIM template is ours to apply, and only the server's model knows
    which one fits: name a family of prompts/fim.toml in the URL's fragment,
    ``http://HOST:PORT/v1/completions#fim=qwen25_coder`` (default: ``left_to_right``, a plain
    continuation of the prefix).  ``#model=NAME`` sets the request's ``model`` field for servers
    that host several.  ``#logprobs=0`` stops asking for token log-probabilities (they rank the
    candidates; llama-server and vLLM give them cheaply, llama-cpp-python's server computes them in
    Python: 16 tokens took 5 s instead of 0.7-1.8 s on a busy 2-core box).  Options combine: ``#fim=qwen25_coder&model=qwen&logprobs=0``.

Decoding mirrors the local model: the first candidate is greedy (temperature 0, no repeat
penalty); more candidates come from further requests sampled at a low temperature with fixed seeds
(so the same request gives the same candidates), deduplicated.  Replies are streamed
(``"stream": true``; a server that answers in one piece is read that way too) and the engine's
stop rule is applied the way the local model applies it while generating: called on the growing
text, one character at a time; the candidate ends where it first fires, and we hang up on the
server then, which stops its generation (a completion usually ends long before max_tokens: with
llama-cpp-python here, 0.1-0.2 s instead of 1.7 s for a 64-token request).

Only the standard library talks HTTP: one kept-alive ``http.client`` connection (re-opened when the
server dropped it), a watchdog thread that enforces the time limit on the whole exchange and aborts
it as soon as the request is cancelled.  Failures are :class:`BackendError`\\ s with one-line
messages.  :class:`FallbackModel` completes with the local model when the server fails.
"""

from __future__ import annotations

import http.client
import json
import math
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from cljassist.errors import Cancelled, CljassistError, InputError
from cljassist.model.fim import LEFT_TO_RIGHT, FimFormat, load_fim_table
from cljassist.types import CompletionModel, Generation, Prompt, as_prompt, generation_counts

INFILL = "infill"
COMPLETIONS = "completions"

# Estimated bytes per token for count_tokens (see RemoteModel.count_tokens).
_BYTES_PER_TOKEN = 3
# Extra candidates are sampled at this temperature, request i with seed _SEED_BASE + i.
_SAMPLE_TEMPERATURE = 0.6
_SEED_BASE = 1
# How often the watchdog looks at the cancel flag and the clock during an HTTP exchange.
_WATCH_INTERVAL_S = 0.02
# Longest server message quoted in an error.
_MESSAGE_CHARS = 300

# The prompt format the engine sees for /infill: FIM-capable (so the prompt stage keeps and budgets
# the suffix) with empty markers, because the server adds its model's real FIM tokens itself.
INFILL_FORMAT = FimFormat(
    family="llama_server_infill",
    template="{fim_prefix}{prefix}{fim_suffix}{suffix}{fim_middle}",
    tokens={"fim_prefix": "", "fim_suffix": "", "fim_middle": ""},
    stop=(),
    is_fim=True,
    order="PSM",
    description="llama.cpp /infill: the server applies its model's FIM template to the parts we send",
)


class BackendError(CljassistError):
    """The completion server could not be reached, did not answer in time, or answered an error."""


# ---------------------------------------------------------------------------------------------- URL


@dataclass(frozen=True)
class BackendUrl:
    """A parsed ``--backend`` URL."""

    api: str  # INFILL | COMPLETIONS
    https: bool
    host: str
    port: int
    path: str  # request path, query included
    display: str  # the URL without its fragment, for messages and stats
    fim_family: str | None = None  # completions API only
    model: str | None = None  # the request's "model" field (completions API only)
    logprobs: bool = True  # ask for token log-probabilities (completions API only)


def parse_backend_url(url: str) -> BackendUrl:
    """Read a backend URL (see the module docstring); :class:`InputError` when it cannot be used."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"backend URL {url!r} is not an http:// or https:// URL with a host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InputError(f"backend URL {url!r} has an invalid port") from None
    path = parts.path.rstrip("/")
    if path.endswith("/infill"):
        api = INFILL
    elif path.endswith("/completions"):
        api = COMPLETIONS
    elif path in ("", "/v1") or path.endswith("/v1"):
        api, path = COMPLETIONS, path + ("/completions" if path.endswith("/v1") else "/v1/completions")
    else:
        raise InputError(
            f"backend URL {url!r}: the path must end in /infill (llama.cpp server) or /v1/completions "
            "(OpenAI-compatible)"
        )
    options = _fragment_options(url, parts.fragment)
    fim_family = options.pop("fim", None)
    model = options.pop("model", None)
    logprobs = options.pop("logprobs", "1")
    if options:
        raise InputError(f"backend URL {url!r}: unknown option(s) {', '.join(sorted(options))} "
                         "(known: fim, model, logprobs)")
    if logprobs.lower() not in _BOOLEANS:
        raise InputError(f"backend URL {url!r}: logprobs={logprobs!r} is not one of {', '.join(_BOOLEANS)}")
    if api == INFILL and (fim_family or model or "logprobs" in parts.fragment):
        raise InputError(f"backend URL {url!r}: #fim=, #model= and #logprobs= apply to /v1/completions only "
                         "(/infill uses the server model's own FIM template)")
    request_path = path + (f"?{parts.query}" if parts.query else "")
    display = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
    return BackendUrl(api, parts.scheme == "https", parts.hostname, port, request_path, display, fim_family, model,
                      _BOOLEANS[logprobs.lower()])


_BOOLEANS = {"1": True, "true": True, "on": True, "yes": True, "0": False, "false": False, "off": False, "no": False}


def _fragment_options(url: str, fragment: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for key, values in urllib.parse.parse_qs(fragment, keep_blank_values=True).items():
        if len(values) != 1 or not values[0]:
            raise InputError(f"backend URL {url!r}: option {key!r} needs exactly one value, as in #{key}=VALUE")
        options[key] = values[0]
    return options


# --------------------------------------------------------------------------------------------- HTTP


class _Watchdog:
    """During one HTTP exchange: shuts the socket down when the time limit passes or the request is
    cancelled, which wakes the blocked read at once (a socket timeout alone bounds each read, not
    the whole exchange, and knows nothing of cancellation)."""

    def __init__(self, conn: http.client.HTTPConnection, limit_s: float, cancelled: Callable[[], bool] | None):
        self.conn = conn
        self.end = time.monotonic() + limit_s
        self.cancelled_fn = cancelled
        self.cancelled = False
        self.expired = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cljassist-backend-watchdog", daemon=True)

    def __enter__(self) -> "_Watchdog":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(_WATCH_INTERVAL_S):
            if not (self.cancelled or self.expired):
                if self.cancelled_fn is not None and self.cancelled_fn():
                    self.cancelled = True
                elif time.monotonic() >= self.end:
                    self.expired = True
                else:
                    continue
            sock = self.conn.sock
            if sock is None:  # still connecting (bounded by the socket timeout): shut it once it exists
                continue
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return


class _TimedOut(Exception):
    """The exchange ran past its limit (turned into a BackendError or a deadline by the caller).
    ``partial``: what had been streamed by then (the reply and its cutter), when known."""

    partial: "tuple[_Reply, _Cutter] | None" = None


class _HttpClient:
    """POSTs JSON to one server over a kept-alive connection."""

    def __init__(self, target: BackendUrl):
        self.target = target
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def exchange(self, body: dict[str, Any], limit_s: float, cancelled: Callable[[], bool] | None,
                 on_event: Callable[[Any], bool]) -> Any:
        """POST ``body``.  A JSON reply comes back decoded.  An event stream (``text/event-stream``,
        asked for with ``"stream": true``) is fed to ``on_event`` one decoded event at a time and
        None comes back; when ``on_event`` returns true the rest is not wanted: the connection is
        dropped, which is how a client tells llama.cpp-style servers to stop generating.

        Raises BackendError, Cancelled or _TimedOut.
        """
        payload = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        with self._lock:
            for attempt in (1, 2):
                reused = self._conn is not None
                conn = self._connection(limit_s)
                try:
                    with _Watchdog(conn, limit_s, cancelled) as watch:
                        try:
                            conn.request("POST", self.target.path, payload, headers)
                            response = conn.getresponse()
                            streaming = response.status < 400 and \
                                (response.getheader("Content-Type") or "").startswith("text/event-stream")
                            if streaming:
                                if self._read_events(response, on_event):
                                    self.close_connection()  # stopped early: hang up
                                    return None
                                data = b""
                            else:
                                data = response.read()
                            if watch.cancelled or watch.expired:  # the shut-down socket read as an early end
                                raise TimeoutError()
                        except (OSError, http.client.HTTPException) as exc:
                            self.close_connection()
                            if watch.cancelled:
                                raise Cancelled("cancelled while waiting for the completion server") from None
                            if watch.expired or isinstance(exc, TimeoutError):
                                raise _TimedOut() from None
                            if reused and attempt == 1 and _is_dropped_connection(exc):
                                continue  # the server closed the idle kept-alive connection: reconnect once
                            raise BackendError(self._unreachable(exc)) from None
                except BaseException:
                    self.close_connection()
                    raise
                if response.will_close:
                    self.close_connection()
                return None if streaming else self._decode(response.status, data)
        raise AssertionError("unreachable")

    def _read_events(self, response: http.client.HTTPResponse, on_event: Callable[[Any], bool]) -> bool:
        """Feed the server-sent events' data to ``on_event``; True when it asked to stop early."""
        where = f"the completion server at {self.target.display}"
        for raw in iter(response.readline, b""):
            line = raw.strip()
            if line.startswith(b"error:"):  # llama.cpp reports a failure inside the stream this way
                raise BackendError(f"{where} reported an error: {server_message(line[6:]) or 'no message'}")
            if not line.startswith(b"data:"):
                continue  # blank separators, comments (": ping"), event names
            data = line[5:].strip()
            if data == b"[DONE]":
                continue  # read on to the end of the body, so that the connection can be reused
            try:
                event = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                snippet = _one_line(data.decode("utf-8", errors="replace"))[:80]
                raise BackendError(f"{where} sent an event that is not JSON: {snippet!r}") from None
            if isinstance(event, dict) and "error" in event:
                raise BackendError(f"{where} reported an error: {server_message(data) or 'no message'}")
            if on_event(event):
                return True
        return False

    def _connection(self, limit_s: float) -> http.client.HTTPConnection:
        # The socket timeout only backs up the watchdog (connect, and a stuck read if it failed).
        timeout = limit_s + 1.0
        if self._conn is None:
            cls = http.client.HTTPSConnection if self.target.https else http.client.HTTPConnection
            self._conn = cls(self.target.host, self.target.port, timeout=timeout)
        else:
            self._conn.timeout = timeout
            if self._conn.sock is not None:
                self._conn.sock.settimeout(timeout)
        return self._conn

    def close_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None

    def _unreachable(self, exc: BaseException) -> str:
        where = f"cannot reach the completion server at {self.target.display}"
        if isinstance(exc, ConnectionRefusedError):
            return f"{where}: connection refused"
        if isinstance(exc, socket.gaierror):
            return f"{where}: unknown host {self.target.host!r}"
        if isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
            return f"the completion server at {self.target.display} closed the connection before answering"
        detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return f"{where}: {_one_line(detail)}"

    def _decode(self, status: int, data: bytes) -> Any:
        where = f"the completion server at {self.target.display}"
        if status >= 400:
            raise BackendError(f"{where} answered HTTP {status}: {server_message(data) or 'no message'}")
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            snippet = _one_line(data.decode("utf-8", errors="replace"))[:80] or "an empty body"
            raise BackendError(f"{where} sent a reply that is not JSON: {snippet!r}") from None


def _is_dropped_connection(exc: BaseException) -> bool:
    return isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                            ConnectionAbortedError, http.client.BadStatusLine))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def server_message(data: bytes) -> str:
    """The error message in an error reply: llama.cpp's {"error": {"message"}}, FastAPI's
    {"detail"}, a bare {"message"}/{"error": "..."}, else the body text; one line, shortened."""
    text = data.decode("utf-8", errors="replace")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        obj = None
    message: Any = None
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict):
            message = err.get("message")
        elif isinstance(err, str):
            message = err
        if message is None:
            detail = obj.get("detail")
            if isinstance(detail, list):  # FastAPI validation errors
                message = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
            elif detail is not None:
                message = detail
        if message is None:
            message = obj.get("message")
    line = _one_line(str(message if message is not None else text))
    return line if len(line) <= _MESSAGE_CHARS else line[: _MESSAGE_CHARS - 3] + "..."


# ------------------------------------------------------------------------------------------- replies


@dataclass
class _Part:
    """A whole reply, or one event of a streamed one."""

    text: str
    finish: str | None  # 'eos' | 'length' on the part that ends the completion, else None
    token_texts: list[str] | None = None
    token_logprobs: list[float] | None = None
    n_tokens: int | None = None
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Reply:
    """One completion as the server sent it, put together from its parts."""

    text: str = ""
    finish: str | None = None
    pieces: list[str] = field(default_factory=list)  # each part's text: one token each when streamed
    token_texts: list[str] = field(default_factory=list)  # tokens the server gave log-probs for
    token_logprobs: list[float] = field(default_factory=list)
    n_tokens: int | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def add(self, part: _Part) -> None:
        self.text += part.text
        if part.text:
            self.pieces.append(part.text)
        if part.token_texts is not None and part.token_logprobs is not None:
            self.token_texts.extend(part.token_texts)
            self.token_logprobs.extend(part.token_logprobs)
        if part.finish is not None:
            self.finish = part.finish
        if part.n_tokens is not None:
            self.n_tokens = part.n_tokens
        for key, value in part.stats.items():
            self.stats.setdefault(key, value)


def _finish_of(reason: Any) -> str:
    """The server's end reason as a Generation.finish: only a token limit is 'length'; EOS and our
    FIM stop texts are what the local model calls 'eos'."""
    return "length" if reason in ("length", "limit") else "eos"


def _unexpected(where: str, what: str, obj: Any) -> BackendError:
    return BackendError(f"the completion server at {where} sent an unexpected reply ({what}): "
                        f"{_one_line(json.dumps(obj))[:120]}")


def _parse_completions(obj: Any, where: str, event: bool) -> _Part:
    """An OpenAI-style completion, or one chunk of a streamed one (where a usage-only chunk has no
    choices)."""
    if not isinstance(obj, dict):
        raise _unexpected(where, "not an object", obj)
    choices = obj.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    if choice is None or not isinstance(choice.get("text"), str):
        if not event or choices:
            raise _unexpected(where, "no choices[0].text", obj)
        choice = {"text": ""}
    texts, logprobs = _completion_logprobs(choice.get("logprobs"))
    usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
    stats: dict[str, Any] = {}
    if isinstance(usage.get("prompt_tokens"), int):
        stats["prompt_tokens"] = usage["prompt_tokens"]
    timings = obj.get("timings") if isinstance(obj.get("timings"), dict) else {}
    if isinstance(timings.get("cache_n"), int):
        stats["reused_tokens"] = timings["cache_n"]
    n_tokens = usage.get("completion_tokens") if isinstance(usage.get("completion_tokens"), int) else None
    reason = choice.get("finish_reason")
    finish = _finish_of(reason) if reason is not None or not event else None
    return _Part(choice["text"], finish, texts, logprobs, n_tokens, stats)


def _completion_logprobs(lp: Any) -> tuple[list[str] | None, list[float] | None]:
    """Token texts and log-probs: OpenAI's legacy {"tokens", "token_logprobs"} (llama-cpp-python)
    or the {"content": [{"token", "logprob"}]} shape (llama.cpp)."""
    if not isinstance(lp, dict):
        return None, None
    if isinstance(lp.get("tokens"), list) and isinstance(lp.get("token_logprobs"), list):
        return _pairs(zip(lp["tokens"], lp["token_logprobs"]))
    if isinstance(lp.get("content"), list):
        return _pairs((d.get("token"), d.get("logprob")) for d in lp["content"] if isinstance(d, dict))
    return None, None


def _pairs(items: Any) -> tuple[list[str] | None, list[float] | None]:
    texts: list[str] = []
    values: list[float] = []
    for text, value in items:
        if not isinstance(text, str) or not isinstance(value, (int, float)):
            return None, None
        texts.append(text)
        values.append(float(value))
    return texts, values


def _parse_infill(obj: Any, where: str, event: bool) -> _Part:
    """llama.cpp's /infill reply, or one event of a streamed one ("stop": true on the last)."""
    if not isinstance(obj, dict):
        raise _unexpected(where, "not an object", obj)
    content = obj.get("content", "" if event else None)
    if not isinstance(content, str):
        raise _unexpected(where, "no content", obj)
    probs = obj.get("completion_probabilities")
    texts, logprobs = (None, None)
    if isinstance(probs, list):
        texts, logprobs = _pairs((d.get("token"), d.get("logprob")) for d in probs if isinstance(d, dict))
    stats: dict[str, Any] = {}
    timings = obj.get("timings") if isinstance(obj.get("timings"), dict) else {}
    if isinstance(obj.get("tokens_evaluated"), int):
        stats["prompt_tokens"] = obj["tokens_evaluated"]
    cached = timings.get("cache_n", obj.get("tokens_cached"))
    if isinstance(cached, int):
        stats["reused_tokens"] = cached
    n_tokens = obj.get("tokens_predicted") if isinstance(obj.get("tokens_predicted"), int) else None
    finish = _finish_of(obj.get("stop_type")) if obj.get("stop") is True or not event else None
    return _Part(content, finish, texts, logprobs, n_tokens, stats)


class _Cutter:
    """What the local model applies while it generates, applied as the reply's text grows: the FIM
    stop texts (the local model stops on those tokens), then the engine's stop rule, called on the
    text so far one character at a time; the candidate ends where either first fires."""

    def __init__(self, stop: Callable[[str], int | None], stop_texts: Sequence[str]):
        self.stop = stop
        self.stop_texts = [t for t in stop_texts if t]
        self.text = ""
        self.keep: int | None = None  # the candidate is text[:keep] once it ended
        self.consumed = 0  # characters the model produced up to where the candidate ended
        self.finish: str | None = None

    def feed(self, piece: str) -> bool:
        """Add ``piece``; True once the candidate has ended (the rest of the reply is not needed)."""
        if self.keep is not None:
            return True
        start = len(self.text)
        self.text += piece
        hits = [i for i in (self.text.find(t) for t in self.stop_texts) if i >= 0]
        limit = min(hits) if hits else len(self.text)
        for end in range(start + 1, limit + 1):
            keep = self.stop(self.text[:end])
            if keep is not None:
                self.keep, self.consumed, self.finish = max(0, int(keep)), end, "stop"
                return True
        if hits:
            self.keep, self.consumed, self.finish = limit, limit, "eos"
            return True
        self.consumed = len(self.text)
        return False


# --------------------------------------------------------------------------------------------- model


def text_before_gap(prompt: Prompt, fim: FimFormat) -> str:
    """Everything the model reads before the gap: file header, REPL context block and code prefix.

    ``prompt.before`` when set; else recovered from the text, which is ``fim.render(before,
    suffix)``; else ``header + prefix``.
    """
    if prompt.before:
        return prompt.before
    text = prompt.text
    start, _, end = fim.render("\x00", prompt.suffix).partition("\x00")
    if text.startswith(start) and text.endswith(end) and len(text) >= len(start) + len(end):
        middle = text[len(start): len(text) - len(end)]
        if middle.endswith(prompt.prefix):
            return middle
    return prompt.header + prompt.prefix


class RemoteModel:
    """Candidates from a completion server (see the module docstring for the URL forms).

    ``last_stats`` after :meth:`generate_candidates`::

        backend        the server's URL
        http_ms        time of all HTTP exchanges of the call
        requests       how many were made
        prompt_tokens  the prompt's tokens as the server counted them (when it says)
        reused_tokens  prompt tokens the server had cached (when it says)
        deadline       set when the deadline cut the call short
        extra_error    set when a request for an extra candidate failed (the ones in hand are kept)
    """

    def __init__(self, url: str, timeout_ms: int = 10000, reuse_prompt: bool = True):
        self.target = parse_backend_url(url)
        self.url = self.target.display
        self.timeout_s = max(1, int(timeout_ms)) / 1000.0
        self.reuse_prompt = reuse_prompt  # the server's cache_prompt: keep the evaluated prompt
        self.name: str = f"remote {self.url}"
        self.fim: FimFormat = self._format()
        self.last_stats: dict[str, Any] = {}
        self._http = _HttpClient(self.target)
        self._send_logprobs = self.target.logprobs  # dropped for a server that refuses them

    def _format(self) -> FimFormat:
        if self.target.api == INFILL:
            return INFILL_FORMAT
        table = load_fim_table()
        family = self.target.fim_family or LEFT_TO_RIGHT
        if family not in table:
            raise InputError(f"backend URL: unknown FIM family {family!r} (prompts/fim.toml has: {', '.join(table)})")
        return table[family]

    def count_tokens(self, text: str) -> int:
        """An estimate: UTF-8 bytes / 3, rounded up.

        The prompt stage calls this many times per request to fit its budget; asking the server
        (a round trip each) would cost more than the completion.  Code tokenizes at about 3-4 bytes
        per token with the BPE vocabularies of code models, so this errs on the side of a shorter
        prompt; a server whose context is still too small answers an error that says so.
        """
        return math.ceil(len(text.encode("utf-8")) / _BYTES_PER_TOKEN)

    def generate_candidates(self, prompt: Prompt | str, n: int, max_tokens: int, stop: Callable[[str], int | None],
                            deadline_s: float | None = None,
                            cancelled: Callable[[], bool] | None = None) -> list[Generation]:
        """Up to ``n`` distinct candidates, the greedy one first.

        Each HTTP exchange is bounded by the backend timeout and by what is left of ``deadline_s``.
        A server too slow for the timeout is a :class:`BackendError`; one too slow for the deadline
        only ends the call: as with the local model, the candidate being streamed keeps its text so
        far (finish='deadline') and no further request starts (a server that had sent nothing yet
        gives no candidate).  ``cancelled`` is checked before each request and, from a watchdog
        thread, during it (so it must be thread-safe, e.g. ``threading.Event.is_set``).
        /infill is sent the prompt's parts (all before the gap, and the suffix), the
        completions API its text.
        """
        started = time.perf_counter()
        end_at = time.monotonic() + deadline_s if deadline_s is not None else None
        prompt = as_prompt(prompt)
        n, max_tokens = generation_counts(n, max_tokens)
        stats: dict[str, Any] = {"backend": self.url, "http_ms": 0.0, "requests": 0}
        self.last_stats = stats
        out: list[Generation] = []
        seen: set[str] = set()
        attempt = 0
        # the greedy request, then sampled ones: a few more than needed, as some repeat a text
        while len(out) < n and attempt < max(1, 2 * n - 1):
            if cancelled is not None and cancelled():
                raise Cancelled("cancelled before the request to the completion server")
            body = self._body(prompt, max_tokens, attempt)
            try:
                generation = self._one(body, stop, end_at, cancelled, stats)
            except BackendError as exc:
                if not out:
                    raise
                stats["extra_error"] = str(exc)
                break
            attempt += 1
            if generation is None:  # the deadline passed
                break
            if generation.text not in seen:
                seen.add(generation.text)
                out.append(generation)
        stats["http_ms"] = round(stats["http_ms"], 2)
        stats["total_ms"] = round((time.perf_counter() - started) * 1000.0, 2)
        return out

    def _one(self, body: dict[str, Any], stop: Callable[[str], int | None], end_at: float | None,
             cancelled: Callable[[], bool] | None, stats: dict[str, Any]) -> Generation | None:
        """One request and its candidate; None when the deadline ran out before or during it."""
        limit, by_deadline = self.timeout_s, False
        if end_at is not None:
            left = end_at - time.monotonic()
            if left <= 0:
                stats["deadline"] = "the deadline passed before the request"
                return None
            if left < limit:
                limit, by_deadline = left, True
        t0 = time.perf_counter()
        finish: str | None = None
        try:
            reply, cutter = self._exchange(body, stop, limit, cancelled, stats)
        except _TimedOut as exc:
            if not by_deadline:
                raise BackendError(f"the completion server at {self.url} did not answer within "
                                   f"{self.timeout_s * 1000:.0f} ms") from None
            stats["deadline"] = f"the deadline passed while waiting for the server ({limit * 1000:.0f} ms)"
            if exc.partial is None or not exc.partial[1].text:
                return None
            (reply, cutter), finish = exc.partial, "deadline"  # keep what was streamed, as the local model does
        finally:
            stats["http_ms"] += (time.perf_counter() - t0) * 1000.0
        for key, value in reply.stats.items():
            stats.setdefault(key, value)  # the first (greedy) request's prompt counts
        ended = cutter.keep is not None
        text = cutter.text[: cutter.keep] if ended else cutter.text
        n_tokens, logprob = self._tokens_used(reply, cutter.consumed, cut=ended)
        finish = cutter.finish or finish or reply.finish or "eos"
        return Generation(text=text, logprob=logprob, n_tokens=n_tokens, finish=finish,
                          ms=(time.perf_counter() - t0) * 1000.0)

    def _exchange(self, body: dict[str, Any], stop: Callable[[str], int | None], limit_s: float,
                  cancelled: Callable[[], bool] | None, stats: dict[str, Any]) -> tuple[_Reply, _Cutter]:
        """Send ``body``; the reply (streamed or whole) and where the candidate ends in it."""
        parse = _parse_infill if self.target.api == INFILL else _parse_completions
        for attempt in (1, 2):
            reply, cutter = _Reply(), _Cutter(stop, self.fim.stop)

            def on_event(event: Any) -> bool:
                part = parse(event, self.url, True)
                reply.add(part)
                # the server would go on to max_tokens: hang up once the candidate has ended
                return cutter.feed(part.text) and part.finish is None

            stats["requests"] += 1
            try:
                whole = self._http.exchange(body, limit_s, cancelled, on_event)
            except _TimedOut as exc:
                exc.partial = (reply, cutter)
                raise
            except BackendError as exc:
                # llama-cpp-python and some OpenAI-compatible servers refuse "logprobs": go on without
                if attempt == 1 and "logprobs" in body and "logprob" in str(exc).lower():
                    self._send_logprobs = False
                    body = {k: v for k, v in body.items() if k != "logprobs"}
                    continue
                raise
            if whole is not None:  # a server that does not stream answered in one piece
                reply.add(parse(whole, self.url, False))
                reply.pieces.clear()  # one piece of many tokens: no token count to take from it
                cutter.feed(reply.text)
            return reply, cutter
        raise AssertionError("unreachable")

    def _body(self, prompt: Prompt, max_tokens: int, attempt: int) -> dict[str, Any]:
        sampling: dict[str, Any] = {"temperature": 0.0} if attempt == 0 else \
            {"temperature": _SAMPLE_TEMPERATURE, "seed": _SEED_BASE + attempt}
        # no repeat penalty (llama.cpp and llama-cpp-python have one by default; the local model does
        # not); streamed, so that the request can end as soon as the stop rule ends the candidate
        common = {**sampling, "repeat_penalty": 1.0, "stream": True, "cache_prompt": self.reuse_prompt}
        if self.target.api == INFILL:
            return {"input_prefix": text_before_gap(prompt, self.fim), "input_suffix": prompt.suffix, "prompt": "",
                    "n_predict": max_tokens, "n_probs": 1, **common}
        body: dict[str, Any] = {"prompt": prompt.text, "max_tokens": max_tokens, **common}
        stops = [s for s in self.fim.stop if s]
        if stops:
            body["stop"] = stops
        if self._send_logprobs:
            body["logprobs"] = 1
        if self.target.model:
            body["model"] = self.target.model
        return body

    def _tokens_used(self, reply: _Reply, consumed: int, cut: bool) -> tuple[int, float]:
        """(tokens, summed log-prob) of the tokens that produced the first ``consumed`` characters,
        the one that holds the last of them included, as the local model counts them.  From the
        tokens the server gave log-probs for, else from the streamed pieces (one token each, log-prob
        unknown: 0.0), else the server's token count or an estimate."""
        wanted = reply.text[:consumed]
        for texts, logprobs in ((reply.token_texts, reply.token_logprobs), (reply.pieces, None)):
            if texts and "".join(texts).startswith(wanted):
                count, total, covered = 0, 0.0, 0
                for i, piece in enumerate(texts):
                    if covered >= consumed and count > 0:
                        break
                    covered += len(piece)
                    count += 1
                    total += logprobs[i] if logprobs is not None else 0.0
                return count, total
        if reply.n_tokens is not None and not cut:
            return max(1, reply.n_tokens), 0.0
        return max(1, self.count_tokens(wanted)), 0.0

    def preload(self, text: str, cancelled: Callable[[], bool] | None = None) -> int:
        """Nothing to do: the server keeps its own evaluated prompt (``cache_prompt``)."""
        return 0

    def forget(self) -> None:
        """Nothing to do: with ``reuse_prompt`` off the server is asked not to keep the prompt."""

    def close(self) -> None:
        self._http.close_connection()

    def __repr__(self) -> str:
        return f"RemoteModel({self.url!r}, fim={self.fim.family})"


class FallbackModel:
    """The remote model, and the local one when the server fails.

    The local model is loaded on first need, not at start: a remote is chosen to spare the laptop's
    memory and start-up time, and with a healthy server the fallback is never used (the default
    SmolLM2 loads in about a second, paid once, on the first failure).  After a failure the server
    is left alone for ``retry_after_s`` so that a dead or hanging server does not add its timeout to
    every keystroke; then it is tried again.

    The prompt was built for the remote's format; when the local model's differs, it is rendered
    again from the prompt's parts (all before the gap, and the suffix if the local model does FIM).
    ``last_stats`` is the remote's, or the local's with ``backend = "local (fallback: <reason>)"``.
    """

    def __init__(self, remote: RemoteModel, local_factory: Callable[[], CompletionModel], retry_after_s: float = 20.0):
        self.remote = remote
        self.local_factory = local_factory
        self.retry_after_s = retry_after_s
        self.name: str = remote.name
        self.fim: FimFormat = remote.fim
        self.last_stats: dict[str, Any] = {}
        self._local: CompletionModel | None = None
        self._skip_until = 0.0
        self._reason = ""

    def count_tokens(self, text: str) -> int:
        return self.remote.count_tokens(text)

    def generate_candidates(self, prompt: Prompt | str, n: int, max_tokens: int, stop: Callable[[str], int | None],
                            deadline_s: float | None = None,
                            cancelled: Callable[[], bool] | None = None) -> list[Generation]:
        started = time.monotonic()
        if started >= self._skip_until:
            try:
                out = self.remote.generate_candidates(prompt, n, max_tokens, stop, deadline_s, cancelled)
                self.last_stats = self.remote.last_stats
                return out
            except BackendError as exc:  # Cancelled goes through: it is no failure of the server
                self._reason = str(exc)
                self._skip_until = time.monotonic() + self.retry_after_s
        local = self._local_model()
        if deadline_s is not None:
            deadline_s = max(0.001, deadline_s - (time.monotonic() - started))
        out = local.generate_candidates(self._local_prompt(prompt, local.fim), n, max_tokens,
                                        stop, deadline_s, cancelled)
        self.last_stats = {**local.last_stats, "backend": f"local (fallback: {self._reason})"}
        return out

    def _local_model(self) -> CompletionModel:
        if self._local is None:
            try:
                self._local = self.local_factory()
            except CljassistError as exc:
                raise BackendError(f"{self._reason}; and the local fallback model failed: {exc}") from None
        return self._local

    def _local_prompt(self, prompt: Prompt | str, local_fim: FimFormat) -> str:
        """The prompt in the local model's format; a prompt given as finished text goes as it is."""
        if isinstance(prompt, str) or local_fim == self.fim:
            return as_prompt(prompt).text
        before = text_before_gap(prompt, self.fim)
        return local_fim.render(before, prompt.suffix if local_fim.is_fim else "")

    def preload(self, text: str, cancelled: Callable[[], bool] | None = None) -> int:
        """Nothing to do: the prompt's start is rendered for the server's format, and the local
        model, when it answers, renders the prompt in its own."""
        return 0

    def forget(self) -> None:
        if self._local is not None:
            self._local.forget()

    def close(self) -> None:
        self.remote.close()
        if self._local is not None:
            self._local.close()

    def __repr__(self) -> str:
        return f"FallbackModel({self.remote!r}, local={'loaded' if self._local is not None else 'not loaded'})"


__all__ = ["RemoteModel", "FallbackModel", "BackendError", "BackendUrl", "parse_backend_url", "INFILL_FORMAT",
           "text_before_gap", "server_message"]
