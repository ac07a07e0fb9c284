"""A small nREPL client: one TCP connection, many requests in flight.

Why it looks like this:

* Completion latency matters, so requests are pipelined on one connection and a
  single reader thread routes each reply to its request by ``id``; any thread
  may call :meth:`NreplClient.send` (sends are serialised by a lock).
* Replies are small and interactive, so Nagle and delayed ACKs are turned off
  (``TCP_NODELAY``, and ``TCP_QUICKACK`` after connect and after every
  ``recv`` because Linux clears it again).
* The user's REPL is restarted often.  When the connection drops, every
  in-flight request fails at once with :class:`ReplUnavailable` (rather than
  waiting out its timeout) and the next request reconnects: to the same
  host:port, or, for a client given ``locate`` (the REPL was found through its
  ``.nrepl-port``), to wherever ``locate`` says the REPL is now, since a
  restarted REPL often listens on another port.  Sessions do not survive that:
  :attr:`connection_generation` goes up, sessions this client cloned are
  forgotten, and using one of them raises :class:`ReplUnavailable` telling the
  caller to clone again.

Field names passed as keyword arguments use ``_`` where nREPL uses ``-``
(``interrupt_id=`` is sent as ``interrupt-id``); ``None`` values are left out.
"""

from __future__ import annotations

import itertools
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from cljassist.budgets import NREPL_CONNECT_TIMEOUT, NREPL_LOAD_TIMEOUT, NREPL_REQUEST_TIMEOUT, THREAD_JOIN
from cljassist.errors import ReplTimeout, ReplUnavailable
from cljassist.repl.bencode import BencodeError, MessageStream, encode

__all__ = ["NreplClient", "PendingRequest", "EvalResult"]

_RECV_SIZE = 1 << 16


def _quickack(sock: socket.socket) -> None:
    if hasattr(socket, "TCP_QUICKACK"):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except OSError:
            pass


class PendingRequest:
    """One request on the wire; collects its replies until one says ``done``."""

    def __init__(self, id: str, op: str, generation: int) -> None:
        self.id = id
        self.op = op
        self.generation = generation  # connection_generation it was sent on
        self._replies: list[dict] = []
        self._done = threading.Event()
        self._error: str | None = None  # set when the connection died under it

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def replies_so_far(self, start: int = 0) -> list[dict]:
        """The replies received so far from index ``start`` on (out/err stream before ``done``)."""
        return self._replies[start:]  # the reader thread only appends, so a slice is consistent

    def _add(self, reply: dict) -> None:
        self._replies.append(reply)
        if "done" in reply.get("status", ()):
            self._done.set()

    def _fail(self, message: str) -> None:
        if not self._done.is_set():
            self._error = message
            self._done.set()

    def result(self, timeout: float | None = None) -> list[dict]:
        """All replies, once one has status ``done``.

        Raises ReplTimeout if that takes longer than ``timeout`` seconds, and
        ReplUnavailable if the connection went away first.
        """
        if not self._done.wait(timeout):
            raise ReplTimeout(f"nREPL {self.op} got no reply within {timeout:g}s")
        if self._error is not None:
            raise ReplUnavailable(self._error)
        return list(self._replies)


@dataclass
class EvalResult:
    """The replies to an ``eval``/``load-file`` folded into one record."""

    id: str
    values: list[str] = field(default_factory=list)
    out: str = ""
    err: str = ""
    ex: str | None = None  # exception class, e.g. "class java.lang.ArithmeticException"
    root_ex: str | None = None
    ns: str | None = None  # the namespace after evaluation
    status: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return self.ex is None and not ({"eval-error", "error", "interrupted"} & self.status)

    @classmethod
    def from_replies(cls, id: str, replies: list[dict]) -> EvalResult:
        r = cls(id=id)
        out, err = [], []
        for reply in replies:
            if "value" in reply:
                r.values.append(reply["value"])
            if "out" in reply:
                out.append(reply["out"])
            if "err" in reply:
                err.append(reply["err"])
            r.ex = reply.get("ex", r.ex)
            r.root_ex = reply.get("root-ex", r.root_ex)
            r.ns = reply.get("ns", r.ns)
            r.status.update(reply.get("status", ()))
        r.out, r.err = "".join(out), "".join(err)
        return r


class _Connection:
    """One socket plus the reader thread that routes its replies."""

    def __init__(self, sock: socket.socket, generation: int, endpoint: str) -> None:
        self.sock = sock
        self.endpoint = endpoint
        self.generation = generation
        self.pending: dict[str, PendingRequest] = {}
        self.lock = threading.Lock()  # guards pending and alive
        self.send_lock = threading.Lock()
        self.alive = True
        self.reader = threading.Thread(
            target=self._read_loop, name=f"nrepl-reader-{generation}", daemon=True
        )
        self.reader.start()

    def _read_loop(self) -> None:
        stream = MessageStream()
        reason = "the server closed the connection"
        try:
            while True:
                data = self.sock.recv(_RECV_SIZE)
                if not data:
                    break
                _quickack(self.sock)
                for reply in stream.feed(data):
                    self._route(reply)
        except BencodeError as e:
            reason = f"garbled reply ({e})"
        except OSError as e:
            reason = e.strerror or str(e)
        self.shutdown(reason)

    def _route(self, reply: dict) -> None:
        with self.lock:
            pending = self.pending.get(reply.get("id"))
            if pending is not None and "done" in reply.get("status", ()):
                del self.pending[pending.id]
        if pending is not None:  # replies for forgotten/unknown ids are dropped
            pending._add(reply)

    def shutdown(self, reason: str) -> None:
        """Close the socket and fail every in-flight request right away."""
        with self.lock:
            if not self.alive:
                return
            self.alive = False
            pending, self.pending = list(self.pending.values()), {}
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        message = f"nREPL connection to {self.endpoint} lost: {reason}"
        for p in pending:
            p._fail(message)

    def send(self, pending: PendingRequest, payload: bytes) -> bool:
        """False if the connection was already dead (nothing sent); OSError if the write failed."""
        with self.lock:
            if not self.alive:
                return False
            self.pending[pending.id] = pending
        try:
            with self.send_lock:
                self.sock.sendall(payload)
        except OSError:
            with self.lock:
                self.pending.pop(pending.id, None)
            raise
        return True

    def forget(self, id: str) -> None:
        with self.lock:
            self.pending.pop(id, None)


class NreplClient:
    """Client for one nREPL server (see the module docstring for the design)."""

    def __init__(self, host: str, port: int, timeout: float = NREPL_CONNECT_TIMEOUT.seconds,
                 locate: Callable[[], tuple[str, int] | None] | None = None) -> None:
        """Prefer :meth:`connect`, which also opens the connection. `locate`: where the REPL is
        now, asked before every reconnect (None from it: where it was)."""
        self.host = host
        self.port = port
        self.connect_timeout = timeout
        self.locate = locate  # public: a front-end that learns where the REPL went can point it there
        self.connection_generation = 0  # bumped on every (re)connect
        self._conn: _Connection | None = None
        self._conn_lock = threading.Lock()
        self._closed = False
        self._ids = itertools.count(1)
        self._sessions: set[str] = set()  # cloned on the current connection
        self._stale_sessions: set[str] = set()  # cloned on an earlier one

    @classmethod
    def connect(cls, host: str, port: int, timeout: float = NREPL_CONNECT_TIMEOUT.seconds,
                locate: Callable[[], tuple[str, int] | None] | None = None) -> NreplClient:
        client = cls(host, port, timeout, locate)
        client._connection()
        return client

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and conn.alive

    @property
    def sessions(self) -> frozenset[str]:
        """Sessions cloned by this client on the current connection."""
        return frozenset(self._sessions)

    # -- connection management -------------------------------------------

    def _connection(self) -> _Connection:
        """The live connection, reconnecting first if the last one dropped."""
        with self._conn_lock:
            if self._closed:
                raise ReplUnavailable(f"nREPL client for {self.endpoint} is closed")
            conn = self._conn
            if conn is not None and conn.alive:
                return conn
            if conn is not None and self.locate is not None:
                self.host, self.port = self.locate() or (self.host, self.port)
            try:
                sock = socket.create_connection((self.host, self.port), self.connect_timeout)
            except OSError as e:
                reason = e.strerror or str(e) or type(e).__name__
                raise ReplUnavailable(f"cannot reach nREPL at {self.endpoint}: {reason}") from None
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _quickack(sock)
            self.connection_generation += 1
            if conn is not None:  # a reconnect: the server's sessions are gone
                self._stale_sessions |= self._sessions
                self._sessions = set()
            self._conn = _Connection(sock, self.connection_generation, self.endpoint)
            return self._conn

    def close(self) -> None:
        """Close the connection; later requests raise ReplUnavailable."""
        with self._conn_lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.shutdown("client closed")
            if conn.reader is not threading.current_thread():
                conn.reader.join(timeout=THREAD_JOIN.seconds)

    def __enter__(self) -> NreplClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ----------------------------------------------------------

    def send(self, op: str, **fields: Any) -> PendingRequest:
        """Send a request without waiting; ``.result(timeout)`` collects the replies."""
        msg_id = str(next(self._ids))
        message = {"op": op, "id": msg_id}
        for key, value in fields.items():
            if value is not None:
                message[key.replace("_", "-")] = value
        payload = encode(message)
        for _attempt in range(2):  # a second try only if the first found a dead connection
            conn = self._connection()
            session = fields.get("session")
            if session is not None and session in self._stale_sessions:
                raise ReplUnavailable(
                    f"nREPL session {session} was lost when the connection to "
                    f"{self.endpoint} was re-established; clone a new one"
                )
            pending = PendingRequest(msg_id, op, conn.generation)
            try:
                if conn.send(pending, payload):
                    return pending
            except OSError as e:
                reason = e.strerror or str(e)
                conn.shutdown(reason)
                raise ReplUnavailable(f"nREPL connection to {self.endpoint} lost: {reason}") from None
        raise ReplUnavailable(f"nREPL connection to {self.endpoint} keeps dropping")

    def request(self, op: str, timeout: float = NREPL_REQUEST_TIMEOUT.seconds, **fields: Any) -> list[dict]:
        """Send and wait for all replies (until status ``done``)."""
        return self._wait(self.send(op, **fields), timeout)

    # -- sessions ----------------------------------------------------------

    def clone(self, session: str | None = None, timeout: float = NREPL_REQUEST_TIMEOUT.seconds) -> str:
        """A new session (a copy of ``session``'s bindings, if given)."""
        replies = self.request("clone", timeout=timeout, session=session)
        new = _merge(replies).get("new-session")
        if not new:
            raise ReplUnavailable(f"nREPL at {self.endpoint} did not clone a session: {replies}")
        self._sessions.add(new)
        return new

    def close_session(self, session: str, timeout: float = NREPL_REQUEST_TIMEOUT.seconds) -> None:
        self._sessions.discard(session)
        if session in self._stale_sessions:  # already gone with the old server
            self._stale_sessions.discard(session)
            return
        self.request("close", timeout=timeout, session=session)

    # -- ops ---------------------------------------------------------------

    def eval(
        self,
        code: str,
        session: str | None = None,
        ns: str | None = None,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        timeout: float = NREPL_REQUEST_TIMEOUT.seconds,
    ) -> EvalResult:
        """Evaluate ``code``; ``line``/``column`` make reported positions match the source."""
        pending = self.send(
            "eval", code=code, session=session, ns=ns, file=file, line=line, column=column
        )
        return EvalResult.from_replies(pending.id, self._wait(pending, timeout))

    def load_file(
        self,
        content: str,
        file_path: str | None = None,
        file_name: str | None = None,
        session: str | None = None,
        timeout: float = NREPL_LOAD_TIMEOUT.seconds,
    ) -> EvalResult:
        pending = self.send(
            "load-file", file=content, file_path=file_path, file_name=file_name, session=session
        )
        return EvalResult.from_replies(pending.id, self._wait(pending, timeout))

    def describe(self, timeout: float = NREPL_REQUEST_TIMEOUT.seconds) -> dict:
        """The server's ops, versions and aux info (merged from all replies)."""
        return _merge(self.request("describe", timeout=timeout))

    def completions(
        self, prefix: str, ns: str | None = None, session: str | None = None, timeout: float = NREPL_REQUEST_TIMEOUT.seconds
    ) -> list[dict]:
        """Candidates as dicts with ``candidate``, ``type`` and sometimes ``ns``."""
        replies = self.request("completions", timeout=timeout, prefix=prefix, ns=ns, session=session)
        return list(_merge(replies).get("completions") or [])

    def lookup(
        self, sym: str, ns: str | None = None, session: str | None = None, timeout: float = NREPL_REQUEST_TIMEOUT.seconds
    ) -> dict:
        """The ``info`` map for ``sym``; empty when it does not resolve.

        nREPL 1.0 sends an unknown symbol's empty info as an empty *list*,
        so anything that is not a dict is normalised to ``{}``.
        """
        replies = self.request("lookup", timeout=timeout, sym=sym, ns=ns, session=session)
        info = _merge(replies).get("info")
        return info if isinstance(info, dict) else {}

    def interrupt(
        self, session: str, interrupt_id: str | None = None, timeout: float = NREPL_REQUEST_TIMEOUT.seconds
    ) -> set[str]:
        """Interrupt the eval running in ``session``; returns the reply status
        (e.g. ``{"done"}``, ``{"done", "session-idle"}``)."""
        replies = self.request("interrupt", timeout=timeout, session=session, interrupt_id=interrupt_id)
        return set(_merge(replies).get("status", ()))

    def _wait(self, pending: PendingRequest, timeout: float) -> list[dict]:
        try:
            return pending.result(timeout)
        except ReplTimeout:
            conn = self._conn
            if conn is not None:
                conn.forget(pending.id)
            raise ReplTimeout(
                f"nREPL {pending.op} on {self.endpoint} got no reply within {timeout:g}s"
            ) from None


def _merge(replies: list[dict]) -> dict:
    """Fold replies into one dict: later keys win, ``status`` is the union."""
    merged: dict = {}
    status: set[str] = set()
    for reply in replies:
        merged.update(reply)
        status.update(reply.get("status", ()))
    merged["status"] = sorted(status)
    return merged
