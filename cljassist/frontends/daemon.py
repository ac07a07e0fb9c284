"""The daemon (`cljassist serve`): one process holds the model and the REPL connection and answers
completion requests from editors, the nREPL middleware and scripts.

Why it looks like this:

* Listens on 127.0.0.1 only, and every request must carry the random token written to
  `.cljassist-port` (next to `.nrepl-port`, owner-only from creation): other users on the machine
  cannot ask for completions, and a web page cannot either (it cannot read the file).
* One message per line, JSON or EDN (`protocol.decode_line`); each reply comes in its request's
  format and echoes its "id". Requests on one connection are answered as they finish, possibly out
  of order: a slow completion never holds back a ping.
* All completions go through one `CompletionService` (the model is not re-entrant); a newer request
  for the same buffer cancels the older one, which still gets a reply saying so. A client that
  disconnects has its pending requests cancelled (end of input counts: keep the connection open
  until the replies arrive, e.g. `nc -q 5`, not `nc -N`).
* A line that is not JSON or EDN, longer than MAX_LINE_BYTES, nested too deep or not valid
  Unicode gets an error reply and the connection goes on (whatever goes wrong on one line is that
  line's reply, never the end of the reader); a wrong or missing token gets an error reply and the
  connection is closed. EDN, whose parser is slow on deep or dense text, is read only from a line
  that holds the token: a client without it cannot spend the daemon's time.
* Each connection has a reader thread and a writer thread; replies are queued to the writer, so the
  engine's thread never blocks on a client that stopped reading. What a client may cost is bounded
  (budgets.py): MAX_CONNECTIONS at once (one more is told so and closed), IDLE_TIMEOUT_S of silence
  while no reply is awaited, MAX_QUEUED_BYTES of unread replies (past it the client is dropped, and
  the daemon logs it on stderr).

Ops: each is declared once, next to its handler, with `@op(...)` (the table `OPS`, which the
`describe` op returns): what it needs, what it may take and what it answers.

What was kept: every suggestion of a `complete` reply carries a "sid"; `accepted` and `retained`
name it, and the daemon records shown, accepted and retained suggestions on this machine
(cljassist/stats: tracker.py says what counts as shown, store.py where and how it is written, by a
thread of its own so that no reply waits for the disk). `--no-stats` or `:stats false`: sids are
still given and checked, nothing is recorded.
"""

from __future__ import annotations

import hmac
import os
import queue
import secrets
import socket
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from cljassist.budgets import (
    DAEMON_CONNECTIONS, DAEMON_IDLE, DAEMON_LINE, DAEMON_PROBE_TIMEOUT, DAEMON_QUEUED, THREAD_JOIN,
)
from cljassist.errors import Cancelled, CljassistError, InputError
from cljassist.fileio import write_atomic
from cljassist.frontends.feedback import answer_accepted, answer_retained
from cljassist.frontends.protocol import (
    decode_line, encode_line, nrepl_safe, request_from_fields, result_reply, warm_reply,
)
from cljassist.frontends.service import warm_result
from cljassist.stats.store import ACCEPT_KINDS
from cljassist.stats.tracker import SuggestionTracker, open_tracker

__all__ = ["PORT_FILE_NAME", "MAX_LINE_BYTES", "Daemon", "DaemonAlreadyRunning", "PortFile", "read_port_file",
           "refuse_if_served", "main_serve"]

PORT_FILE_NAME = ".cljassist-port"
MAX_LINE_BYTES = DAEMON_LINE.value
MAX_CONNECTIONS = DAEMON_CONNECTIONS.value
MAX_QUEUED_BYTES = DAEMON_QUEUED.value
IDLE_TIMEOUT_S = DAEMON_IDLE.seconds
LOOPBACK_HOST = "127.0.0.1"  # the port file names no host: clients always connect here
PROBE_TIMEOUT_S = DAEMON_PROBE_TIMEOUT.seconds


class DaemonAlreadyRunning(CljassistError):
    """A live daemon already owns the directory's .cljassist-port."""


# ------------------------------------------------------------------------------- the port file

@dataclass(frozen=True)
class PortFile:
    port: int
    token: str
    pid: int

    def edn(self) -> str:
        # The token is hex, so no escaping is needed.
        return f'{{:port {self.port} :token "{self.token}" :pid {self.pid}}}\n'


def read_port_file(path: Path) -> PortFile | None:
    """The port file's content, or None when it is absent or unreadable (then it is stale)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    try:
        import edn_format

        data = edn_format.loads(text)
        fields = {(k.name if isinstance(k, edn_format.Keyword) else k): v for k, v in data.items()}
        port, token, pid = fields["port"], fields["token"], fields.get("pid", 0)
    except Exception:  # edn_format raises several types; anything unreadable is stale
        return None
    if not isinstance(port, int) or not isinstance(token, str) or not isinstance(pid, int):
        return None
    return PortFile(port, token, pid)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _answers_ping(port: int, token: str) -> bool:
    """True when a cljassist daemon holding `token` answers on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT_S) as sock:
            sock.sendall(encode_line({"op": "ping", "id": "probe", "token": token}, "json"))
            reply = sock.makefile("rb").readline(64 * 1024)
        message, _ = decode_line(reply)
    except (OSError, CljassistError, UnicodeDecodeError):
        return False
    return message.get("pong") is True


def _is_live(info: PortFile) -> bool:
    return _pid_alive(info.pid) and _answers_ping(info.port, info.token)


def refuse_if_served(directory: Path) -> None:
    """DaemonAlreadyRunning when a live daemon owns `directory`/.cljassist-port."""
    existing = read_port_file(Path(directory) / PORT_FILE_NAME)
    if existing is not None and _is_live(existing):
        raise DaemonAlreadyRunning(
            f"a cljassist daemon (pid {existing.pid}) already serves {directory} on "
            f"127.0.0.1:{existing.port}; stop it first, or run serve in another directory")


# ------------------------------------------------------------------------------- connections

_CLOSE = object()  # queued after the last reply of a connection that must end
_RECV_BYTES = 1 << 16


def _log(message: str) -> None:
    print(f"cljassist serve: {message}", file=sys.stderr, flush=True)


class _Connection:
    """One client: a reader thread splitting what it sends into lines, a writer thread sending
    queued replies. Each is bounded: a line by MAX_LINE_BYTES, the replies waiting for a client that
    does not read by MAX_QUEUED_BYTES (past it the client is dropped), silence by IDLE_TIMEOUT_S."""

    def __init__(self, daemon: "Daemon", sock: socket.socket, peer: str) -> None:
        self.daemon = daemon
        self.sock = sock
        self.peer = peer
        self.outbox: queue.Queue = queue.Queue()
        self.queued_bytes = 0  # encoded replies in the outbox
        self.pending: set = set()  # Tickets not answered yet
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.reader = threading.Thread(target=self._read_loop, name=f"cljassist-conn-{peer}", daemon=True)
        self.writer = threading.Thread(target=self._write_loop, name=f"cljassist-send-{peer}", daemon=True)

    def start(self) -> None:
        # Both directions: a client silent this long is idle, one not reading this long is stuck.
        self.sock.settimeout(IDLE_TIMEOUT_S)
        self.writer.start()
        self.reader.start()

    # -- reading -------------------------------------------------------------

    def _lines(self) -> Iterator[tuple[bytes | None, str]]:
        """(line, "") for each line the client sends, or (None, the format to answer in) for one
        longer than MAX_LINE_BYTES, which is skipped without being held; until the client closes or
        goes idle, or the connection closes."""
        buffer = bytearray()
        searched = 0  # the buffer before this holds no newline
        overlong = ""  # inside a line already too long, its reply's format: its bytes are dropped as they come
        while not self.closed.is_set():
            try:
                chunk = self.sock.recv(_RECV_BYTES)
            except TimeoutError:
                with self.lock:
                    waiting = bool(self.pending)
                if waiting:
                    continue  # waiting for a reply is not idle
                _log(f"{self.peer}: idle for {IDLE_TIMEOUT_S:g} s, disconnected")
                return
            if not chunk:
                return
            buffer += chunk
            while True:
                end = buffer.find(b"\n", searched)
                if end < 0:
                    searched = len(buffer)
                    if len(buffer) > MAX_LINE_BYTES:
                        overlong = overlong or _guess_format(bytes(buffer[:64]))
                        del buffer[:]
                        searched = 0
                    break
                line = bytes(buffer[:end + 1])
                del buffer[:end + 1]
                searched = 0
                if overlong or len(line) > MAX_LINE_BYTES:
                    yield None, overlong or _guess_format(line)
                    overlong = ""
                else:
                    yield line, ""

    def _read_loop(self) -> None:
        try:
            for line, overlong_format in self._lines():
                if line is None:
                    self.send({"error": f"message longer than {MAX_LINE_BYTES} bytes, ignored"}, overlong_format)
                    continue
                if not line.strip():
                    continue
                if not self._answer(line):
                    self.outbox.put(_CLOSE)
                    break
        except (OSError, ValueError):  # reset by the peer, or closed under us by stop()
            pass
        finally:
            self._cancel_pending("the client disconnected")
            if not self.closed.is_set():
                self.outbox.put(_CLOSE)

    def _answer(self, line: bytes) -> bool:
        """handle_line, except that whatever goes wrong on one line is that line's error reply, never
        the end of the reader."""
        try:
            return self.daemon.handle_line(self, line)
        except Exception as exc:  # a bug, not the client's fault: it gets one line, our stderr the trace
            traceback.print_exception(exc, file=sys.stderr)
            self.send({"error": f"internal error: {type(exc).__name__}: {exc}"}, _guess_format(line))
            return True

    # -- writing -------------------------------------------------------------

    def send(self, message: dict[str, Any], fmt: str) -> None:
        """Queue a reply (never blocks: the engine's thread calls this). A client whose unread
        replies pass MAX_QUEUED_BYTES is dropped."""
        data = _encoded(message, fmt)
        with self.lock:
            if self.closed.is_set():
                return
            self.queued_bytes += len(data)
            over = self.queued_bytes > MAX_QUEUED_BYTES
        if over:
            _log(f"{self.peer}: dropped: more than {MAX_QUEUED_BYTES} bytes of replies unread")
            self.close()
            return
        self.outbox.put(data)

    def _write_loop(self) -> None:
        try:
            while True:
                data = self.outbox.get()
                if data is _CLOSE:
                    break
                try:
                    self.sock.sendall(data)
                except TimeoutError:
                    _log(f"{self.peer}: not reading for {IDLE_TIMEOUT_S:g} s, disconnected")
                    break
                with self.lock:
                    self.queued_bytes -= len(data)
        except OSError:
            pass
        finally:
            self.close()

    # -- tickets and closing ---------------------------------------------------

    def track(self, ticket) -> None:
        with self.lock:
            self.pending.add(ticket)
        if self.closed.is_set():  # the client left while we submitted
            ticket.cancel("the client disconnected")

    def untrack(self, ticket) -> None:
        with self.lock:
            self.pending.discard(ticket)

    def _cancel_pending(self, reason: str) -> None:
        with self.lock:
            pending = list(self.pending)
        for ticket in pending:
            ticket.cancel(reason)

    def close(self) -> None:
        with self.lock:  # the reader, the writer and stop() may all get here
            if self.closed.is_set():
                return
            self.closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.outbox.put(_CLOSE)
        self._cancel_pending("the client disconnected")
        self.daemon._forget(self)


def _encoded(message: dict[str, Any], fmt: str) -> bytes:
    try:
        return encode_line(message, fmt)
    except Exception as exc:  # a value the format cannot hold: still answer
        return encode_line({"id": _echoable_id(message.get("id")), "error": f"reply not encodable: {exc}"}, "json")


def _guess_format(line: bytes) -> str:
    """The format to answer an unreadable line in: JSON if it looks like JSON, else EDN."""
    head = line.lstrip()[:2]
    return "json" if head[:1] in (b"[", b"") or head == b'{"' or head == b"{}" else "edn"


# ------------------------------------------------------------------------------- ops

@dataclass(frozen=True)
class OpDescriptor:
    """An op's contract, declared next to its handler. Every request also carries "token" and may
    carry "id" (echoed in each reply); "nrepl-safe": true asks for a bencode-safe reply."""
    name: str
    doc: str
    requires: str   # the fields it needs
    optional: str   # the fields it may take
    returns: str    # the reply's fields (an error reply is {"id", "error"[, "cancelled"]})
    handler: Callable[..., None]  # (daemon, connection, message, reply_id, fmt)

    def describe(self) -> dict[str, str]:
        return {"doc": self.doc, "requires": self.requires, "optional": self.optional, "returns": self.returns}


OPS: dict[str, OpDescriptor] = {}

COMPLETION_FIELDS = ('"file"; "code" with "line" and "column" (or a <CURSOR> marker), or "prefix" and '
                     '"suffix", or CIDER\'s "context" with __prefix__ (see protocol.request_from_fields)')


def op(name: str, *, doc: str, returns: str, requires: str = "", optional: str = ""):
    """Declare the decorated Daemon method as the handler of op `name`."""
    def register(handler: Callable[..., None]) -> Callable[..., None]:
        if name in OPS:
            raise ValueError(f"op {name!r} declared twice")
        OPS[name] = OpDescriptor(name, doc, requires, optional, returns, handler)
        return handler
    return register


# ------------------------------------------------------------------------------- the daemon

class Daemon:
    """Serves `service` on 127.0.0.1 and owns `directory`/.cljassist-port while running.

    In-process use (tests, latency scripts): `Daemon(service, dir).start()`, then `.port`,
    `.token`, `.stop()`; or `with Daemon(...) as d:`."""

    def __init__(self, service, directory: Path, host: str = "127.0.0.1", port: int = 0,
                 repl_label: str | None = None, model_name: str | None = None,
                 suggestions: SuggestionTracker | None = None) -> None:
        if host != LOOPBACK_HOST:
            raise InputError(f"the daemon listens on the loopback interface ({LOOPBACK_HOST}) only, not {host!r}")
        self.service = service
        self.directory = Path(directory).absolute()
        self.host = host
        self.requested_port = port
        self.token = secrets.token_hex(16)
        repl = service.engine.repl
        self.repl_label = repl_label if repl_label is not None else repl.endpoint if repl is not None else "off"
        self.model_name = model_name if model_name is not None else service.engine.model.name
        # gives the sids and records what was kept; by default it records nothing
        self.suggestions = suggestions if suggestions is not None else SuggestionTracker(self.model_name, None)
        self.port: int = 0
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._connections: set[_Connection] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    @property
    def port_file(self) -> Path:
        return self.directory / PORT_FILE_NAME

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- life cycle ----------------------------------------------------------

    def start(self) -> "Daemon":
        listener = socket.create_server((self.host, self.requested_port))
        self.port = listener.getsockname()[1]
        try:
            self._claim_port_file()
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._accept_thread = threading.Thread(target=self._accept_loop, name="cljassist-accept", daemon=True)
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, close every connection (cancelling what they wait for) and remove the
        port file if it is still ours. Safe to call twice."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.close()
        if self._accept_thread is not None:
            self._accept_thread.join(THREAD_JOIN.seconds)
        for conn in connections:
            conn.reader.join(THREAD_JOIN.seconds)
            conn.writer.join(THREAD_JOIN.seconds)
        self._release_port_file()

    def __enter__(self) -> "Daemon":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _claim_port_file(self) -> None:
        mine = PortFile(self.port, self.token, os.getpid())
        for _attempt in range(3):
            if write_atomic(self.port_file, mine.edn(), mode=0o600, exclusive=True):
                return
            refuse_if_served(self.directory)
            # Stale (a crashed daemon, or garbage): replace it, then check nobody replaced it after us.
            write_atomic(self.port_file, mine.edn(), mode=0o600)
            if read_port_file(self.port_file) == mine:
                return
        raise DaemonAlreadyRunning(f"another cljassist daemon is starting in {self.directory}")

    def _release_port_file(self) -> None:
        current = read_port_file(self.port_file)
        if current is not None and hmac.compare_digest(current.token, self.token):
            try:
                self.port_file.unlink()
            except FileNotFoundError:
                pass

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, peer = self._listener.accept()
            except OSError:
                break
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock, f"{peer[0]}:{peer[1]}")
            with self._lock:
                if self._stopping.is_set():
                    sock.close()
                    break
                full = len(self._connections) >= MAX_CONNECTIONS
                if not full:
                    self._connections.add(conn)
            if full:
                _refuse(sock, conn.peer)
                continue
            conn.start()

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self._connections)

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.discard(conn)

    # -- requests ------------------------------------------------------------

    def handle_line(self, conn: _Connection, line: bytes) -> bool:
        """Answer one line; False when the connection must be closed (a bad token)."""
        try:
            # EDN only from a line that holds the token: its parser is slow on deep or dense text,
            # and a client without the token must not get to spend the daemon's time on it.
            message, fmt = decode_line(line, allow_edn=self.token.encode() in line)
        except InputError as exc:
            conn.send({"error": f"malformed message: {exc}"}, _guess_format(line))
            return True
        reply_id = {"id": _echoable_id(message["id"])} if "id" in message else {}
        token = message.get("token")
        if not isinstance(token, str) or not hmac.compare_digest(token.encode("utf-8", "replace"), self.token.encode()):
            conn.send({**reply_id, "error": f"missing or wrong token (read it from {self.port_file})"}, fmt)
            return False
        if "id" in message and reply_id["id"] is not message["id"]:
            conn.send({**reply_id, "error": "'id' must be a string, a number or null"}, fmt)
            return True
        descriptor = OPS.get(message.get("op")) if isinstance(message.get("op"), str) else None
        if descriptor is None:
            known = ", ".join(f'"{name}"' for name in sorted(OPS))
            conn.send({**reply_id, "error": f"unknown op {message.get('op')!r}; expected one of {known}"}, fmt)
            return True
        descriptor.handler(self, conn, message, reply_id, fmt)
        return True

    @op("ping", doc="Is the daemon alive, and with which model and REPL.",
        returns='"pong": true, "model", "repl"')
    def _ping(self, conn: _Connection, message: dict, reply_id: dict, fmt: str) -> None:
        conn.send({**reply_id, "pong": True, "model": self.model_name, "repl": self.repl_label}, fmt)

    @op("describe", doc="The ops this daemon answers, each with its contract (an editor asks before "
                        "sending an op an older daemon may not know).",
        returns='"ops": {name: {"doc", "requires", "optional", "returns"}}')
    def _describe(self, conn: _Connection, message: dict, reply_id: dict, fmt: str) -> None:
        conn.send({**reply_id, "ops": {name: d.describe() for name, d in sorted(OPS.items())}}, fmt)

    @op("complete", doc="Suggestions at the cursor, best first; a newer request for the same buffer "
                        "cancels this one (its reply then says so).",
        requires=COMPLETION_FIELDS, optional='"ns", "buffer", "n", "nrepl-safe"',
        returns='"suggestions" (each with its "text", "score" (an editor may hide low ones) and "sid", which '
                '`accepted` and `retained` name), "namespace", "ms", "repl", "withheld", "below_min_score", '
                '"cut_by_deadline", "calibrated"')
    def _submit_completion(self, conn: _Connection, message: dict, reply_id: dict, fmt: str) -> None:
        safe = message.get("nrepl-safe") in (True, "true", 1)
        try:
            request, buffer, n = request_from_fields(message)
            ticket = self.service.submit(request, buffer=buffer, n=n)
        except CljassistError as exc:
            conn.send(_finish_reply(reply_id, _error_reply(exc), safe), fmt)
            return
        conn.track(ticket)

        def answer(_future) -> None:
            conn.untrack(ticket)
            conn.send(_finish_reply(reply_id, self.suggestions.with_sids(_ticket_reply(ticket)), safe), fmt)

        ticket.future.add_done_callback(answer)

    @op("warm", doc="Evaluate the prompt a `complete` with these fields would read, in idle time, and keep it "
                    "evaluated (with those of other buffers, cljassist/model/kv_states.py), so that the first "
                    "suggestion there is fast. Editors send it on visiting a buffer, the proxy and the nREPL "
                    "middleware on a load-file. Never delays a `complete`: a request for any buffer goes "
                    "first, and one for this buffer drops the warm (it evaluates the prompt itself).",
        requires=COMPLETION_FIELDS, optional='"ns", "buffer", "nrepl-safe"',
        returns='"warmed": the prompt tokens evaluated now; with "skipped": why none were')
    def _warm(self, conn: _Connection, message: dict, reply_id: dict, fmt: str) -> None:
        safe = message.get("nrepl-safe") in (True, "true", 1)
        try:
            request, buffer, _ = request_from_fields(message)
        except CljassistError as exc:
            conn.send(_finish_reply(reply_id, _error_reply(exc), safe), fmt)
            return
        # not tracked: a warm goes on when its client leaves (what it evaluates serves whoever
        # completes in that buffer next)
        ticket = self.service.warm(request, buffer=buffer)

        def answer(_future) -> None:
            try:
                body = warm_reply(warm_result(ticket))
            except Exception as exc:
                body = _error_reply(exc)
            conn.send(_finish_reply(reply_id, body, safe), fmt)

        ticket.future.add_done_callback(answer)

    @op("accepted", doc="The user accepted a suggestion; the fields describe the text after it. With "
                        "prefetch on (`:prefetch true`) the next suggestions are computed ahead "
                        "(cljassist.prefetch). With \"sid\" it is recorded for `cljassist stats`: \"kind\" "
                        "\"whole\" (the default: all of it, or all that was left), \"word\" or \"line\", "
                        "\"chars\" the characters taken by this accept (needed for a word or a line). "
                        "An unknown or expired sid, or more characters than the suggestion has left, is "
                        "an error reply (and nothing is prefetched).",
        requires=COMPLETION_FIELDS,
        optional=f'"sid", "kind" ({" | ".join(ACCEPT_KINDS)}), "chars", "ns", "buffer", "n", "nrepl-safe"',
        returns='"prefetching": how many requests are computed ahead; with "sid", "recorded": whether '
                'statistics are on')
    def _prefetch_after_accept(self, conn: _Connection, message: dict, reply_id: dict, fmt: str) -> None:
        safe = message.get("nrepl-safe") in (True, "true", 1)
        try:
            body = answer_accepted(message, self.service, self.suggestions)
        except CljassistError as exc:
            body = _error_reply(exc)
        conn.send(_finish_reply(reply_id, body, safe), fmt)

    @op("retained", doc="Sent 30 s after an `accepted` with a sid: how many of the characters that accept "
                        "took are still in the buffer, for `cljassist stats`. An unknown or expired sid, a "
                        "sid never accepted, or more characters than were accepted is an error reply.",
        requires='"sid", "chars"', optional='"nrepl-safe"',
        returns='"recorded": true (false when statistics are off)')
    def _record_retained(self, conn: _Connection, message: dict, reply_id: dict, fmt: str) -> None:
        safe = message.get("nrepl-safe") in (True, "true", 1)
        try:
            body = answer_retained(message, self.suggestions)
        except CljassistError as exc:
            body = _error_reply(exc)
        conn.send(_finish_reply(reply_id, body, safe), fmt)


def _echoable_id(value: Any) -> Any:
    """A request's "id" as its replies echo it: a string, number, boolean or null; anything else
    (a structure, perhaps deep) is not echoed."""
    return value if value is None or isinstance(value, (str, int, float)) else None


def _refuse(sock: socket.socket, peer: str) -> None:
    """Tell a client past the connection cap why, and close (a fresh socket's buffer takes the line)."""
    _log(f"{peer}: refused: {MAX_CONNECTIONS} connections already open")
    try:
        sock.settimeout(PROBE_TIMEOUT_S)
        sock.sendall(encode_line({"error": f"too many connections (at most {MAX_CONNECTIONS}); try again"}, "json"))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


def _ticket_reply(ticket) -> dict[str, Any]:
    try:
        result = ticket.result(0)
    except Cancelled as exc:
        # The ticket knows why (superseded, client gone); the engine only knows that it stopped.
        return _error_reply(Cancelled(ticket.reason or str(exc)))
    except Exception as exc:
        return _error_reply(exc)
    return result_reply(result)


def _error_reply(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, Cancelled):
        return {"error": str(exc) or "cancelled", "cancelled": True}
    if isinstance(exc, CljassistError):
        return {"error": str(exc)}
    # A bug, not a user error: the client gets one line, the daemon's terminal the traceback.
    traceback.print_exception(exc, file=sys.stderr)
    return {"error": f"internal error: {type(exc).__name__}: {exc}"}


def _finish_reply(reply_id: dict, body: dict[str, Any], safe: bool) -> dict[str, Any]:
    reply = {**reply_id, **body}
    return nrepl_safe(reply) if safe else reply


# ------------------------------------------------------------------------------- cljassist serve

def main_serve(args) -> int:
    """`cljassist serve`: serve completions for the current directory until SIGINT/SIGTERM."""
    from cljassist.frontends.bootstrap import open_frontend, settings_from_args

    directory = Path.cwd()
    refuse_if_served(directory)  # before loading the model; start() checks again, atomically
    settings = settings_from_args(args, directory, keystrokes=True)
    with open_frontend(settings, near=directory, no_repl=getattr(args, "no_repl", False),
                       explicit=getattr(args, "nrepl", None) is not None, service=True) as front, \
            open_tracker(settings, front.engine.model.name) as suggestions:
        daemon = Daemon(front.service, directory, port=getattr(args, "port", 0) or 0, repl_label=front.repl_label,
                        suggestions=suggestions)
        injected = False
        try:
            daemon.start()
            print(f"cljassist serve: listening on {daemon.address} (token in {daemon.port_file}); "
                  f"model {daemon.model_name}; REPL {front.repl_label}", flush=True)
            status, injected = _inject(front.opened, daemon, no_inject=getattr(args, "no_inject", False))
            print(f"cljassist serve: {status}", flush=True)
            print(f"cljassist serve: {suggestions.status()}", flush=True)
            front.serve_until_stopped()
        finally:
            daemon.stop()
            if injected:
                _release_middleware(front.opened, daemon)
    print("cljassist serve: stopped", flush=True)
    return 0


def _inject(opened, daemon: Daemon, no_inject: bool) -> tuple[str, bool]:
    """(status line, whether the middleware now points at this daemon)."""
    if no_inject:
        return "nREPL middleware not injected (--no-inject)", False
    if opened.provider is None:
        return "nREPL middleware not injected (no REPL)", False
    from cljassist.frontends.bridge import inject_middleware

    try:
        status = inject_middleware(opened.provider.client, "127.0.0.1", daemon.port, daemon.token)
    except CljassistError as exc:
        return f"warning: nREPL middleware not injected: {exc}", False
    return status, status.startswith("middleware ")


def _release_middleware(opened, daemon: Daemon) -> None:
    from cljassist.frontends.bridge import release_middleware

    try:
        release_middleware(opened.provider.client, daemon.token)
    except CljassistError:
        pass  # the REPL is gone or busy: nothing to clean up there
