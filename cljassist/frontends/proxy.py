"""`cljassist proxy`: an nREPL server of our own, in front of the user's real one.

Editors connect to the proxy (it writes `.nrepl-port` with its own port), and it:

* forwards every message to the upstream server and every reply back, byte for byte: a frame is
  cut out of the stream by the bencode scanner and passed on unchanged, so non-ASCII text, bytes
  that are not UTF-8 and empty values arrive exactly as sent. Frames are decoded only to look at
  them (op, id, status);
* answers `cljassist/complete` itself from the completion service (fields as in
  `protocol.request_from_fields`), asynchronously: the connection keeps flowing (evals, interrupts)
  while a completion runs. The reply is the suggestions map, then `{"status": ["done"]}`; a failure
  is `{"err": ..., "status": ["done", "error"]}`. `interrupt` with the `interrupt-id` of a pending
  completion cancels it;
* answers `cljassist/accepted` and `cljassist/retained` itself, as the daemon answers `accepted`
  and `retained` (frontends/feedback.py): each suggestion of a `cljassist/complete` reply carries
  a "sid" that they name, and what was kept is recorded on this machine unless `--no-stats`;
* answers `cljassist/warm` itself, as the daemon answers `warm` (the prompt of a completion there
  evaluated in idle time and kept), and warms a file loaded with `load-file` (which goes upstream
  unchanged): a cursor at its end, where new code is most often written;
* adds its ops to the `ops` of the upstream's `describe` replies.

Per client connection there is one upstream connection and two threads, one per direction.
Replies to a client come from two sources (upstream and completions), so writes to a socket take
that socket's lock. Completion replies are written from a short-lived thread of their own, so a
client that stops reading can never stall the engine's worker.

The engine's REPL context and checks run JVM Clojure code. An upstream that is not JVM Clojure (npm's
nbb: a SCI ClojureScript nREPL on Node, whose `describe` reports `nbb-nrepl` and `node` versions
instead of `clojure` and `java`) is detected once at start, and the engine is then built without
REPL context or verifier; completions still come, unverified by the REPL.

When the upstream goes away, every request it still owed the client gets an `err` reply, and the
client's connection is closed; the proxy keeps accepting, and a new connection that cannot reach
the upstream gets an `err` reply to its first request and is closed.

Without `--upstream` the upstream is the REPL the nearest `.nrepl-port` names. A REPL restarted
there on another port writes its new port over ours: the proxy takes it as its upstream (for new
connections and for the engine's REPL context and checks) and writes its own port back.
`--upstream HOST:PORT` names the upstream for good.
"""

from __future__ import annotations

import itertools
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import fastbencode

from cljassist.budgets import NREPL_CONNECT_TIMEOUT, PROXY_FOLLOW_POLL, PROXY_REFUSE_WAIT, THREAD_JOIN
from cljassist.errors import Cancelled, CljassistError, InputError, ReplTimeout, ReplUnavailable
from cljassist.fileio import write_atomic
from cljassist.frontends.common import ReplRuntime, runtime_from_versions
from cljassist.frontends.complete_op import COMPLETE_OP, op_descriptor
from cljassist.frontends.feedback import answer_accepted, answer_retained
from cljassist.frontends.protocol import nrepl_safe, request_from_fields, result_reply, warm_reply
from cljassist.frontends.service import warm_result
from cljassist.types import CompletionRequest
from cljassist.stats.tracker import SuggestionTracker, open_tracker
from cljassist.repl.bencode import BencodeError, MessageStream, decode, encode
from cljassist.repl.discovery import PORT_FILE, find_port_file, parse_endpoint

__all__ = ["COMPLETE_OP", "ACCEPTED_OP", "RETAINED_OP", "WARM_OP", "OP_DESCRIPTOR", "PROXY_OPS", "NreplProxy", "UpstreamInfo", "UpstreamPlan", "ProxyEngine",
           "PortFileClaim", "probe_upstream", "plan_for_upstream", "open_proxy_engine", "claim_port_file",
           "follow_upstream", "main_proxy"]

OP_DESCRIPTOR: dict[str, Any] = op_descriptor(
    "Completions at a cursor from cljassist's local model, checked in this REPL where it can "
    "(answered by the cljassist proxy). Give `code` with `line` and `column` (or a <CURSOR> "
    "marker), or `prefix` and `suffix`, or CIDER's `context` with __prefix__ and `prefix`. "
    "Replies with the suggestions, then done; errors come as err with status error.")
ACCEPTED_OP = "cljassist/accepted"
RETAINED_OP = "cljassist/retained"
WARM_OP = "cljassist/warm"
_SID = {"sid": "The suggestion's sid, from its cljassist/complete reply."}
# The ops the proxy answers itself, as its describe replies add them to the upstream's.
PROXY_OPS: dict[str, dict[str, Any]] = {
    COMPLETE_OP: OP_DESCRIPTOR,
    ACCEPTED_OP: {
        "doc": "The user accepted a suggestion (answered by the cljassist proxy): recorded for `cljassist "
               "stats` when sid is given, and with :prefetch on the next suggestions are computed ahead. "
               "The text fields describe the buffer after the accept, as cljassist/complete's do.",
        "requires": {},
        "optional": {**_SID, "kind": "whole (the default), word or line.",
                     "chars": "Characters this accept took (needed for a word or a line)."},
        "returns": {"prefetching": "How many requests are computed ahead.",
                    "recorded": "With sid: whether statistics are on."}},
    RETAINED_OP: {
        "doc": "30 s after an accept: how many of the characters it took are still in the buffer "
               "(answered by the cljassist proxy, for `cljassist stats`).",
        "requires": {**_SID, "chars": "Accepted characters still in the buffer."},
        "optional": {},
        "returns": {"recorded": "Whether statistics are on."}},
    WARM_OP: {
        "doc": "Evaluate the prompt of a completion at this place in idle time and keep it, so that the first "
               "suggestion in the buffer is fast (answered by the cljassist proxy; fields as cljassist/complete's). "
               "A completion never waits for it.",
        "requires": {},
        "optional": {},
        "returns": {"warmed": "Prompt tokens evaluated now (0 with skipped: why)."}},
}
_PROXY_OPS_RAW = {name.encode(): fastbencode.bdecode(encode(descriptor)) for name, descriptor in PROXY_OPS.items()}

_RECV_SIZE = 1 << 16
_CONNECT_TIMEOUT_S = NREPL_CONNECT_TIMEOUT.seconds
# A client of a proxy whose upstream is down gets this long to send its first request.
_REFUSE_WAIT_S = PROXY_REFUSE_WAIT.seconds


def _log(message: str) -> None:
    print(f"cljassist proxy: {message}", file=sys.stderr, flush=True)


def _peek(frame: bytes) -> dict | None:
    """The frame decoded (text lossy where not UTF-8: only for looking), or None if it is not a map."""
    try:
        message = decode(frame)
    except (BencodeError, ValueError):
        return None
    return message if isinstance(message, dict) else None


def _statuses(message: dict) -> list:
    status = message.get("status")
    return status if isinstance(status, list) else []


def _with_proxy_ops(frame: bytes, message: dict) -> bytes:
    """A describe reply with the proxy's own ops (PROXY_OPS) added to its ops, everything else byte-exact."""
    try:
        raw = fastbencode.bdecode(frame)
        raw[b"ops"].update(_PROXY_OPS_RAW)
        return fastbencode.bencode(raw)
    except (ValueError, KeyError, TypeError, AttributeError):  # keys out of order (see bencode.py): re-encode the text
        message["ops"].update(PROXY_OPS)
        return encode(message)


def _reply(request_id: Any, session: Any, **fields: Any) -> dict:
    reply = {"id": request_id, "session": session, **fields}
    return {k: v for k, v in reply.items() if v is not None}


def _error_reply(request_id: Any, session: Any, text: str) -> dict:
    return _reply(request_id, session, err=text, status=["done", "error"])


def _shutdown(sock: socket.socket | None) -> None:
    """Wake every thread blocked on the socket; the thread that reads it closes it."""
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass



def _pump(sock: socket.socket, on_frame: Callable[[bytes], None], closed: str, garbled: str) -> str:
    """Hand each bencode message read from ``sock`` to ``on_frame`` until the stream ends; returns
    why it ended (``closed``, ``garbled`` formatted with the decoding error, or the socket error)."""
    stream = MessageStream()
    try:
        while True:
            data = sock.recv(_RECV_SIZE)
            if not data:
                return closed
            for frame in stream.feed_frames(data):
                on_frame(frame)
    except BencodeError as exc:
        return garbled.format(exc)
    except OSError as exc:
        return _reason(exc)

def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


class _Connection:
    """One client, its upstream connection, and the completions it is waiting for."""

    def __init__(self, proxy: "NreplProxy", client: socket.socket, number: int) -> None:
        self.proxy = proxy
        self.client = client
        self.number = number
        self.upstream: socket.socket | None = None
        self._client_write = threading.Lock()
        self._upstream_write = threading.Lock()
        self._state = threading.Lock()  # guards the three below
        self._owed: dict[Any, Any] = {}  # request id -> session, forwarded and not yet done
        self._tickets: dict[Any, Any] = {}  # request id -> Ticket, completions not yet answered
        self._closing = False
        self.threads: list[threading.Thread] = []

    # -- life cycle ------------------------------------------------------

    def serve(self) -> None:
        """Runs on the client-reader thread: connect upstream, then pump client -> upstream."""
        try:
            upstream = socket.create_connection(self.proxy.upstream, self.proxy.connect_timeout)
        except OSError as exc:
            self._refuse(_reason(exc))
            return
        upstream.settimeout(None)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.upstream = upstream
        reader = threading.Thread(target=self._pump_upstream, daemon=True,
                                  name=f"cljassist-proxy-{self.number}-upstream")
        self.threads.append(reader)
        reader.start()
        self._pump_client()

    def close(self, reason: str) -> None:
        """Stop the connection: its pending completions are cancelled, both sockets are shut down."""
        with self._state:
            if self._closing:
                return
            self._closing = True
            tickets = list(self._tickets.values())
            self._tickets.clear()
        for ticket in tickets:
            ticket.cancel(f"the client connection closed ({reason})")
        _shutdown(self.client)
        _shutdown(self.upstream)

    # -- client -> upstream ----------------------------------------------

    def _pump_client(self) -> None:
        reason = "the client disconnected"
        try:
            reason = _pump(self.client, self._from_client, closed=reason,
                           garbled="the client sent garbled bencode ({})")
            if reason.startswith("the client sent garbled"):
                _log(f"connection {self.number}: {reason}; closing it")
        finally:
            self.close(reason)
            with self._client_write:
                self.client.close()

    def _from_client(self, frame: bytes) -> None:
        message = _peek(frame)
        if message is not None:
            op = message.get("op")
            if op == COMPLETE_OP:
                self._complete(message)
                return
            if op in (ACCEPTED_OP, RETAINED_OP):
                self._feedback(op, message)
                return
            if op == WARM_OP:
                self._warm(message)
                return
            if op == "load-file":
                self._warm_loaded_file(message)
            if op == "interrupt" and self._interrupt_completion(message):
                return
            if message.get("id") is not None:
                with self._state:
                    self._owed[message["id"]] = message.get("session")
        try:
            with self._upstream_write:
                self.upstream.sendall(frame)
        except OSError as exc:
            self._upstream_lost(_reason(exc))

    # -- upstream -> client ----------------------------------------------

    def _pump_upstream(self) -> None:
        reason = "it closed the connection"
        try:
            reason = _pump(self.upstream, self._from_upstream, closed=reason, garbled="it sent garbled bencode ({})")
        finally:
            self._upstream_lost(reason)
            with self._upstream_write:
                self.upstream.close()

    def _from_upstream(self, frame: bytes) -> None:
        message = _peek(frame)
        if message is not None:
            if isinstance(message.get("ops"), dict):
                frame = _with_proxy_ops(frame, message)
            if "done" in _statuses(message):
                with self._state:
                    self._owed.pop(message.get("id"), None)
        self._send_client(frame)

    def _upstream_lost(self, reason: str) -> None:
        """Tell the client which of its requests will never be answered, then close the connection."""
        with self._state:
            if self._closing:
                return  # we closed it ourselves (client gone, proxy stopping)
            owed, self._owed = self._owed, {}
        endpoint = self.proxy.upstream_label
        _log(f"the upstream nREPL at {endpoint} went away ({reason}); closing client connection {self.number}")
        text = (f"cljassist proxy: the upstream nREPL at {endpoint} went away ({reason}); "
                "this connection is closed, reconnect once it is back\n")
        self._send_client(b"".join(encode(_error_reply(i, s, text)) for i, s in owed.items()))
        self.close(f"upstream gone: {reason}")

    def _refuse(self, reason: str) -> None:
        """The upstream is unreachable: answer the client's first request(s) with an err, then close."""
        endpoint = self.proxy.upstream_label
        _log(f"cannot reach the upstream nREPL at {endpoint} ({reason}); refusing client connection {self.number}")
        text = (f"cljassist proxy: cannot reach the upstream nREPL at {endpoint} ({reason}); "
                "start it, or restart the proxy with the right --upstream\n")
        stream = MessageStream()
        try:
            self.client.settimeout(_REFUSE_WAIT_S)
            frames: list[bytes] = []
            while not frames:
                data = self.client.recv(_RECV_SIZE)
                if not data:
                    break
                frames = stream.feed_frames(data)
            replies = [_error_reply(m.get("id"), m.get("session"), text) for m in map(_peek, frames) if m]
            self._send_client(b"".join(map(encode, replies)))
        except (OSError, BencodeError):
            pass
        finally:
            self.close(f"upstream unreachable: {reason}")
            with self._client_write:
                self.client.close()

    def _send_client(self, payload: bytes | dict) -> bool:
        """Write to the client under its lock; False when the client is gone (nothing else to do)."""
        data = encode(payload) if isinstance(payload, dict) else payload
        if not data:
            return True
        try:
            with self._client_write:
                self.client.sendall(data)
        except OSError:
            return False
        return True

    # -- cljassist/complete ----------------------------------------------

    def _service_for(self, op: str, message: dict):
        """The completion service that answers ``op``; None (the client told so) without one."""
        service = self.proxy.service
        if service is None:
            self._send_client(_error_reply(message.get("id"), message.get("session"), "cljassist proxy: no "
                                           f"completion engine is loaded, so {op} is not available"))
        return service

    def _request_of(self, message: dict):
        """(request, buffer as this connection names it, n) from a message's fields; None (the
        client told why) where they are wrong."""
        try:
            request, buffer, n = request_from_fields(message)
        except CljassistError as exc:
            self._send_client(_error_reply(message.get("id"), message.get("session"), f"cljassist: {exc}"))
            return None
        return request, self._session_buffer(message, request, buffer), n

    def _complete(self, message: dict) -> None:
        request_id, session = message.get("id"), message.get("session")
        service = self._service_for(COMPLETE_OP, message)
        fields = self._request_of(message) if service is not None else None
        if fields is None:
            return
        request, buffer, n = fields
        try:
            ticket = service.submit(request, buffer, n)
        except Cancelled as exc:
            self._send_client(_error_reply(request_id, session, f"cljassist: {exc}"))
            return
        key = request_id if request_id is not None else object()
        with self._state:
            closing = self._closing
            if not closing:
                self._tickets[key] = ticket
        if closing:
            ticket.cancel("the client connection closed")
            return
        ticket.future.add_done_callback(lambda _f: self._completion_finished(key, request_id, session, ticket))

    def _session_buffer(self, message: dict, request, buffer: str) -> str:
        """Without a "buffer" field, a buffer is one file as one session sees it."""
        if message.get("buffer"):
            return buffer
        return f"{message.get('session') or f'connection-{self.number}'}:{request.file or 'default'}"

    def _feedback(self, op: str, message: dict) -> None:
        """cljassist/accepted and cljassist/retained: one reply, ending with done."""
        request_id, session = message.get("id"), message.get("session")
        service = self._service_for(op, message)
        if service is None:
            return
        try:
            if op == ACCEPTED_OP:
                body = answer_accepted(message, service, self.proxy.suggestions,
                                       lambda request, buffer: self._session_buffer(message, request, buffer))
            else:
                body = answer_retained(message, self.proxy.suggestions)
        except CljassistError as exc:
            self._send_client(_error_reply(request_id, session, f"cljassist: {exc}"))
            return
        self._send_client(_reply(request_id, session, **nrepl_safe(body), status=["done"]))

    def _warm(self, message: dict) -> None:
        """cljassist/warm: one reply when the warm is done or dropped, ending with done."""
        request_id, session = message.get("id"), message.get("session")
        service = self._service_for(WARM_OP, message)
        fields = self._request_of(message) if service is not None else None
        if fields is None:
            return
        request, buffer, _ = fields
        ticket = service.warm(request, buffer)

        def answer(_future) -> None:
            try:
                reply = _reply(request_id, session, **warm_reply(warm_result(ticket)), status=["done"])
            except Exception as exc:  # a bug: the client still gets its done, the details go to the log
                _log(f"warm failed:\n{traceback.format_exc()}")
                reply = _error_reply(request_id, session, f"cljassist: internal error: {type(exc).__name__}: {exc}")
            # from a thread of its own: the engine's worker may be the one finishing the ticket
            threading.Thread(target=self._send_client, args=(reply,), daemon=True,
                             name=f"cljassist-proxy-{self.number}-warm").start()

        ticket.future.add_done_callback(answer)

    def _warm_loaded_file(self, message: dict) -> None:
        """A load-file passing through: warm its file (its whole text before the cursor), quietly."""
        service, text, path = self.proxy.service, message.get("file"), message.get("file-path")
        if service is None or not isinstance(text, str) or not isinstance(path, str) or not Path(path).is_absolute():
            return  # code loaded from the classpath or a scratch text: not a buffer the user types in
        request = CompletionRequest(text, "", path)
        service.warm(request, self._session_buffer(message, request, path))

    def _completion_finished(self, key: Any, request_id: Any, session: Any, ticket) -> None:
        """Runs on whichever thread finished the ticket; the reply is written from a thread of its own."""
        with self._state:
            self._tickets.pop(key, None)
            if self._closing:
                return  # nobody to tell
        threading.Thread(target=self._send_completion, args=(request_id, session, ticket), daemon=True,
                         name=f"cljassist-proxy-{self.number}-reply").start()

    def _send_completion(self, request_id: Any, session: Any, ticket) -> None:
        try:
            result = ticket.result(0)
        except Cancelled as exc:  # the ticket's reason says why (the engine only says where it stopped)
            replies = [_error_reply(request_id, session, f"cljassist: cancelled: {ticket.reason or exc}")]
        except CljassistError as exc:
            replies = [_error_reply(request_id, session, f"cljassist: {exc}")]
        except Exception as exc:  # a bug: the client still gets its done, the details go to the log
            _log(f"completion failed:\n{traceback.format_exc()}")
            replies = [_error_reply(request_id, session, f"cljassist: internal error: {type(exc).__name__}: {exc}")]
        else:
            reply = self.proxy.suggestions.with_sids(result_reply(result))
            replies = [_reply(request_id, session, **nrepl_safe(reply)),
                       _reply(request_id, session, status=["done"])]
        self._send_client(b"".join(map(encode, replies)))

    def _interrupt_completion(self, message: dict) -> bool:
        """An interrupt aimed at one of our completions: cancel it and answer here. False otherwise."""
        target = message.get("interrupt-id")
        with self._state:
            ticket = self._tickets.get(target) if target is not None else None
        if ticket is None:
            return False
        ticket.cancel("interrupted")
        self._send_client(_reply(message.get("id"), message.get("session"), status=["done"]))
        return True


class NreplProxy:
    """The proxy server: `start()`, then clients connect to `port`; `stop()` closes everything.

    `service` answers `cljassist/complete` (a CompletionService); None makes that op an error.
    `suggestions` gives the sids and records what was kept; by default it records nothing."""

    def __init__(self, upstream: tuple[str, int], service, host: str = "127.0.0.1", port: int = 0,
                 connect_timeout: float = _CONNECT_TIMEOUT_S, suggestions: SuggestionTracker | None = None) -> None:
        self.upstream = upstream
        self.service = service
        if suggestions is None:
            suggestions = SuggestionTracker(service.engine.model.name if service is not None else "-", None)
        self.suggestions = suggestions
        self.host = host
        self.connect_timeout = connect_timeout
        self._requested_port = port
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._connections: set[_Connection] = set()
        self._lock = threading.Lock()
        self._stopping = False
        self._numbers = itertools.count(1)

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("the proxy is not started")
        return self._listener.getsockname()[1]

    @property
    def upstream_label(self) -> str:
        return f"{self.upstream[0]}:{self.upstream[1]}"

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self._connections)

    def start(self) -> "NreplProxy":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self._requested_port))
            listener.listen(32)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True, name="cljassist-proxy-accept")
        self._acceptor.start()
        return self

    def stop(self, timeout: float = THREAD_JOIN.seconds) -> None:
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            connections = list(self._connections)
        if self._listener is not None:
            _shutdown(self._listener)  # wakes accept() on Linux
            self._listener.close()
        if self._acceptor is not None:
            self._acceptor.join(timeout)
        for connection in connections:
            connection.close("the proxy is stopping")
        for connection in connections:
            for thread in connection.threads:
                thread.join(timeout)

    def __enter__(self) -> "NreplProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _address = self._listener.accept()
            except OSError:
                if self._stopping:
                    return
                time.sleep(0.05)  # e.g. ECONNABORTED or out of file descriptors: retry, without spinning
                continue
            client.settimeout(None)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = _Connection(self, client, next(self._numbers))
            with self._lock:
                if self._stopping:
                    client.close()
                    return
                self._connections.add(connection)
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True,
                                      name=f"cljassist-proxy-{connection.number}-client")
            connection.threads.append(thread)
            thread.start()

    def _serve(self, connection: _Connection) -> None:
        try:
            connection.serve()
        finally:
            with self._lock:
                self._connections.discard(connection)


# ------------------------------------------------------------------------ engine for the upstream

UpstreamInfo = ReplRuntime  # what the upstream runs on


def probe_upstream(upstream: tuple[str, int], timeout: float = _CONNECT_TIMEOUT_S) -> UpstreamInfo:
    """Ask the upstream's describe what it runs on; ReplUnavailable when it does not answer."""
    from cljassist.repl.client import NreplClient

    endpoint = f"{upstream[0]}:{upstream[1]}"
    client = NreplClient.connect(*upstream, timeout=timeout)
    try:
        versions = client.describe(timeout=timeout).get("versions")
    except ReplTimeout:
        raise ReplUnavailable(f"the upstream nREPL at {endpoint} did not answer describe within {timeout:g}s") from None
    finally:
        client.close()
    return runtime_from_versions(versions)


@dataclass
class UpstreamPlan:
    """How the engine of a proxy to an upstream uses that upstream's REPL."""

    settings: Any  # config.Settings, with the upstream as its nREPL
    upstream: UpstreamInfo
    notice: str | None  # one line for the user when the REPL cannot help the engine

    @property
    def no_repl(self) -> bool:
        return not self.upstream.jvm

    @property
    def repl_label(self) -> str | None:
        return None if self.upstream.jvm else f"off (the upstream is not JVM Clojure: {self.upstream.runtime})"


def plan_for_upstream(settings, upstream: tuple[str, int]) -> UpstreamPlan:
    """With the upstream's REPL context and checks when it is JVM Clojure, without them otherwise
    (their helper code is JVM Clojure)."""
    endpoint = f"{upstream[0]}:{upstream[1]}"
    settings = settings.with_overrides(nrepl=endpoint)
    info = probe_upstream(upstream, timeout=max(_CONNECT_TIMEOUT_S, settings.repl_timeout_ms / 1000))
    notice = None if info.jvm else (f"the upstream at {endpoint} is not JVM Clojure ({info.runtime}); "
                                    "completions come without REPL context and unchecked by the REPL")
    return UpstreamPlan(settings, info, notice)


@dataclass
class ProxyEngine:
    opened: Any  # common.OpenEngine
    upstream: UpstreamInfo
    notice: str | None

    def close(self) -> None:
        self.opened.close()


def open_proxy_engine(settings, upstream: tuple[str, int], model=None) -> ProxyEngine:
    """The engine for a proxy to `upstream` as `plan_for_upstream` decides, without a service."""
    from cljassist.frontends.common import open_engine

    plan = plan_for_upstream(settings, upstream)
    opened = open_engine(plan.settings, no_repl=plan.no_repl, explicit=not plan.no_repl, model=model)
    if plan.repl_label is not None:
        opened.repl_label = plan.repl_label
    return ProxyEngine(opened, plan.upstream, plan.notice)


# ------------------------------------------------------------------------ .nrepl-port

@dataclass
class PortFileClaim:
    """Our port in `path`; `release` removes it, or puts back what was there before."""

    path: Path
    port: int
    previous: str | None  # the file's content before we wrote ours, None if there was none

    def release(self) -> None:
        """Only a file that still holds our port is touched: if the upstream (or anyone) rewrote or
        removed it meanwhile, theirs is the newer truth."""
        try:
            current = self.path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        if current.strip() != str(self.port):
            return
        if self.previous is None:
            self.path.unlink(missing_ok=True)
        else:
            write_atomic(self.path, self.previous)


def claim_port_file(directory: Path, port: int) -> PortFileClaim:
    path = Path(directory) / PORT_FILE
    try:
        previous: str | None = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        previous = None
    write_atomic(path, str(port))
    return PortFileClaim(path, port, previous)


def follow_upstream(proxy: "NreplProxy", source: Path, claim: PortFileClaim) -> bool:
    """Whether `source`, the port file the upstream was found through, now names another REPL
    than the proxy's upstream (a REPL restarted there on another port): the proxy then takes it as
    its upstream and, where that file is the one it claimed, writes its own port back (the
    upstream's is restored on exit)."""
    try:
        text = source.read_text(encoding="utf-8", errors="replace")
        found = parse_endpoint(text)
    except (OSError, ValueError):
        return False
    if source == claim.path and text.strip() == str(claim.port):
        return False
    if found == proxy.upstream:
        return False
    _log(f"{source} names {found[0]}:{found[1]} now; the upstream was {proxy.upstream_label}: following it")
    proxy.upstream = found
    if source == claim.path:
        claim.previous = text
        write_atomic(claim.path, str(claim.port))
    return True


# ------------------------------------------------------------------------ command

def main_proxy(args) -> int:
    """`cljassist proxy --upstream HOST:PORT [--port P]`: serve until SIGINT/SIGTERM."""
    from cljassist.frontends.bootstrap import open_frontend, settings_from_args

    upstream, source = _upstream_of(args, Path.cwd())
    plan = plan_for_upstream(settings_from_args(args, Path.cwd(), keystrokes=True), upstream)
    with open_frontend(plan.settings, no_repl=plan.no_repl, explicit=not plan.no_repl,
                       repl_label=plan.repl_label, service=True) as front, \
            open_tracker(plan.settings, front.engine.model.name) as suggestions:
        if plan.notice:
            _log(plan.notice)
        _log(suggestions.status())
        proxy = NreplProxy(upstream, front.service, port=getattr(args, "port", 0) or 0, suggestions=suggestions)
        if source is not None and front.provider is not None:
            # the engine's REPL is the upstream: it reconnects to wherever the proxy follows it
            front.provider.client.locate = lambda: proxy.upstream
        try:
            proxy.start()
        except OSError as exc:
            raise InputError(f"cannot listen on 127.0.0.1:{args.port}: {_reason(exc)}") from None
        try:
            with front.stop_signals() as stop:
                _serve_until(stop, proxy, source, front.repl_label)
        finally:
            proxy.stop()
    return 0


def _upstream_of(args, directory: Path) -> tuple[tuple[str, int], Path | None]:
    """(the upstream, the port file it was found through: None when --upstream named it)."""
    if getattr(args, "upstream", None):
        try:
            return parse_endpoint(args.upstream), None
        except ValueError as exc:
            raise InputError(f"--upstream: {exc}") from None
    source = find_port_file(directory)
    if source is None:
        raise InputError(f"no --upstream given and no {PORT_FILE} in {directory} or above: "
                         "start your nREPL first, or pass --upstream HOST:PORT")
    try:
        return parse_endpoint(source.read_text(encoding="utf-8", errors="replace")), source
    except (OSError, ValueError) as exc:
        raise InputError(f"{source}: {exc}") from None


def _serve_until(stop: threading.Event, proxy: NreplProxy, source: Path | None, repl_label: str) -> None:
    claim = claim_port_file(Path.cwd(), proxy.port)
    try:
        if claim.previous is not None:
            _log(f"{claim.path} held {claim.previous.strip()!r}; it points to the proxy now and is "
                 "restored on exit")
        _log(f"listening on 127.0.0.1:{proxy.port} for {proxy.upstream_label} "
             f"(completion REPL: {repl_label}); wrote {claim.path}")
        while not stop.wait(PROXY_FOLLOW_POLL.seconds):
            if source is not None:
                follow_upstream(proxy, source, claim)
        _log("stopping")
    finally:
        claim.release()
