"""HTTP to the completion server: one kept-alive connection, JSON requests, streamed or whole replies,
and a watchdog that enforces the time limit on the whole exchange and aborts it on cancellation.
Failures are :class:`BackendError`\\ s with one-line messages."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from typing import Any, Callable

from cljassist.budgets import REMOTE_WATCH_INTERVAL, SERVER_MESSAGE
from cljassist.errors import Cancelled, CljassistError
from cljassist.model.remote.url import BackendUrl

# How often the watchdog looks at the cancel flag and the clock during an HTTP exchange.
_WATCH_INTERVAL_S = REMOTE_WATCH_INTERVAL.seconds
# Longest server message quoted in an error.
_MESSAGE_CHARS = SERVER_MESSAGE.value


class BackendError(CljassistError):
    """The completion server could not be reached, did not answer in time, or answered an error."""


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


class TimedOut(Exception):
    """The exchange ran past its limit (turned into a BackendError or a deadline by the caller)."""


class HttpClient:
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

        Raises BackendError, Cancelled or TimedOut.
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
                                raise TimedOut() from None
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
                snippet = one_line(data.decode("utf-8", errors="replace"))[:80]
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
        return f"{where}: {one_line(detail)}"

    def _decode(self, status: int, data: bytes) -> Any:
        where = f"the completion server at {self.target.display}"
        if status >= 400:
            raise BackendError(f"{where} answered HTTP {status}: {server_message(data) or 'no message'}")
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            snippet = one_line(data.decode("utf-8", errors="replace"))[:80] or "an empty body"
            raise BackendError(f"{where} sent a reply that is not JSON: {snippet!r}") from None


def _is_dropped_connection(exc: BaseException) -> bool:
    return isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                            ConnectionAbortedError, http.client.BadStatusLine))


def one_line(text: str) -> str:
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
    line = one_line(str(message if message is not None else text))
    return line if len(line) <= _MESSAGE_CHARS else line[: _MESSAGE_CHARS - 3] + "..."
