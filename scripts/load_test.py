"""Load test of the daemon (`cljassist serve`): N concurrent clients for a bounded time, checking
that every request is answered, superseded requests come back cancelled, the daemon stays
responsive (pings) and its memory stays flat.

    python3 scripts/load_test.py [--clients 16] [--seconds 60] [--dir DIR] [--buffers B] [--shared-buffers]
                                 [--no-repl | --local-nrepl | --nrepl HOST:PORT]
                                 [--model GGUF] [-n 1] [--max-new-tokens 16] [--json OUT.json]

What it does:

* Starts a real daemon as a subprocess (`python3 -m cljassist serve --no-inject`) in a temporary
  copy of fixtures/demo (or in --dir), with small generation settings, waits for its
  `.cljassist-port` and reads the port and token from it. Without a REPL by default; `--local-nrepl`
  first starts `python3 -m cljassist nrepl DIR` (Debian jars) and requires the project's
  namespaces in it, `--nrepl HOST:PORT` uses a running one.
* Warm-up: one completion answered in every file the clients will type in (at most KV_STATES of
  them, the evaluated prompts the daemon keeps), so the daemon's kept prompts are in the "before"
  figures; then its RSS, thread count and open files are read from /proc as the "before" figures.
* N client threads, loopback only, each with its own connection, each bounded by --seconds and
  --max-requests. A loop picks a file of the project and a cursor (seeded, different per client)
  and sends a `complete`. With --buffers B, client i types in one file only, the (i mod B)-th.
  Each client has a buffer name of its own (N buffers queueing for one model) unless
  --shared-buffers is given: then a request's buffer is its file, so N clients over B files are B
  buffers, as several editors or tools on one open file, and by the daemon's rule a newer request
  for a buffer cancels an older one, another client's included. One loop in four (seeded) sends a
  second `complete` for the same buffer in the same write, so the first must come back cancelled
  (superseded); then a `ping`, to see the daemon answer while it is busy. It waits for every reply
  (a missing one after --reply-timeout is an error), then sleeps a think time of 50-200 ms.
* RSS is sampled every 0.5 s while the clients run; "flat" is judged on the second half of that
  series (mid-run to the last sample), after the kept prompts and allocator pools have settled.
* After the clients are done and a short settle: RSS, threads and open files again ("after"), and
  VmHWM (peak). Then SIGTERM; the daemon must exit and remove its port file (killed on timeout).

Latency is reported twice: send -> answer over the requests answered with suggestions (or none),
and send -> any reply over every complete request, cancellations included; a cancellation comes
back fast, so only the first is the time a user waits for a suggestion.

Errors are: any error reply other than a superseded request's cancellation (with
--shared-buffers, a request superseded by another client's newer one for its buffer is counted
apart, with its send -> cancellation latency, and is no error), a missing reply, a
reply for an unknown id or of an unknown shape, a closed connection, a traceback in the daemon's
output, a daemon that dies or does not stop cleanly. The exit status is 1 when there was any error
or a superseded request was not cancelled, 2 when the daemon could not be started, else 0.
A superseded request answered from the engine's cache (reply "source" type-through or recent) is
counted apart and does not fail the run: the idle worker can finish such an answer (well under a
millisecond) before the daemon reads the newer request, and then there is nothing left to cancel.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cljassist.budgets import KV_STATES  # noqa: E402
from cljassist.frontends.daemon import PORT_FILE_NAME, PortFile, read_port_file  # noqa: E402
from cljassist.frontends.protocol import decode_line, encode_line  # noqa: E402
from cljassist.types import CURSOR_MARKER  # noqa: E402

DEMO_DIR = ROOT / "fixtures" / "demo"
SOURCE_SUFFIXES = (".clj", ".cljc", ".cljs")
MAX_SOURCE_BYTES = 256 * 1024  # a load test wants typical buffers, not generated giants
MAX_SOURCE_FILES = 200
LOOPBACK = "127.0.0.1"
CACHE_SOURCES = ("type-through", "recent")  # a reply's "source" when the engine answered from a cache
RSS_GROWTH_WARN_MIB = 32.0  # llama.cpp buffers and Python's allocator settle within a few MiB

EXIT_OK, EXIT_FAILED, EXIT_SETUP = 0, 1, 2


# ------------------------------------------------------------------------------- pure helpers

def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's
    default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def parse_proc_status(text: str) -> dict[str, int]:
    """The integer fields of /proc/PID/status ("VmRSS:  1234 kB" -> {"VmRSS": 1234}, in kB as the
    kernel writes them; "Threads: 7" -> {"Threads": 7}); other fields are left out."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if sep and parts and parts[0].isdigit() and (len(parts) == 1 or parts[1:] == ["kB"]):
            fields[key.strip()] = int(parts[0])
    return fields


@dataclass(frozen=True)
class ProcSnapshot:
    """What /proc says about the daemon at one moment (memory in MiB)."""

    rss_mib: float
    peak_rss_mib: float  # VmHWM: the highest RSS since the process started
    threads: int
    open_fds: int


def read_proc_snapshot(pid: int) -> ProcSnapshot:
    fields = parse_proc_status(Path(f"/proc/{pid}/status").read_text())
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return ProcSnapshot(rss_mib=fields["VmRSS"] / 1024, peak_rss_mib=fields["VmHWM"] / 1024,
                        threads=fields.get("Threads", 0), open_fds=fds)


def pick_cursor(text: str, rng: random.Random) -> tuple[int, int]:
    """A 1-based (line, column) on a non-blank line, anywhere from its indentation to its end: the
    places a user types at."""
    lines = text.split("\n")
    candidates = [i for i, line in enumerate(lines) if line.strip()] or [0]
    index = rng.choice(candidates)
    line = lines[index]
    indent = len(line) - len(line.lstrip())
    return index + 1, rng.randint(indent + 1, len(line) + 1)


def client_files(files: list[str], index: int, buffers: int) -> list[str]:
    """The files client ``index`` types in: all of them, or with ``buffers`` B the (index mod B)-th alone."""
    return [files[index % buffers]] if buffers else list(files)


def files_to_warm(files: list[str], clients: int, buffers: int) -> list[str]:
    """The files the clients will type in, in order, at most KV_STATES of them: the daemon keeps no
    more evaluated prompts than that, so warming more would only replace the first ones."""
    typed = {path for index in range(clients) for path in client_files(files, index, buffers)}
    return [path for path in files if path in typed][:KV_STATES.value]


def buffer_name(index: int, path: str, shared: bool) -> str:
    """The buffer a client's request is for: the file itself when clients share buffers (what an
    editor sends), else one of the client's own."""
    return f"load-file:{path}" if shared else f"load-client-{index}"


def namespace_of(text: str) -> str | None:
    match = re.search(r"^\(ns\s+([^\s()\[\]{}]+)", text, re.MULTILINE)
    return match.group(1) if match else None


def project_sources(directory: Path) -> dict[str, str]:
    """Relative path -> text (without <CURSOR> markers) of the project's Clojure files, skipping
    hidden and build directories and oversized files."""
    sources: dict[str, str] = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if any(part.startswith(".") or part in ("target", "node_modules") for part in rel.parts[:-1]):
            continue
        if path.suffix not in SOURCE_SUFFIXES or not path.is_file() or path.stat().st_size > MAX_SOURCE_BYTES:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if text.strip():
            sources[str(rel)] = text.replace(CURSOR_MARKER, "")
        if len(sources) >= MAX_SOURCE_FILES:
            break
    return sources


# ------------------------------------------------------------------------------- tallies

@dataclass
class ErrorLog:
    """Errors by kind: how many, and the first few messages of each kind."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, kind: str, message: str) -> None:
        with self.lock:
            self.counts[kind] += 1
            shown = self.examples.setdefault(kind, [])
            if len(shown) < 3:
                shown.append(message[:300])

    def total(self) -> int:
        return sum(self.counts.values())

    def as_json(self) -> dict[str, dict[str, Any]]:
        return {kind: {"count": count, "first": self.examples.get(kind, [])}
                for kind, count in sorted(self.counts.items())}


@dataclass
class ClientTally:
    """One client's counts; merged at the end (each thread writes only its own)."""

    sent: int = 0  # complete requests, superseded ones included
    with_suggestions: int = 0
    empty: int = 0
    superseded_sent: int = 0
    superseded_cancelled: int = 0
    superseded_answered: int = 0  # came back with the pipeline's result: the cancellation did not happen
    superseded_from_cache: int = 0  # came back with a cached result (see CACHE_SOURCES)
    pings: int = 0
    loops: int = 0
    latency_ms: list[float] = field(default_factory=list)  # answered requests, send -> reply
    engine_ms: list[float] = field(default_factory=list)  # the daemon's own "ms" of those replies
    cancel_ms: list[float] = field(default_factory=list)  # superseded requests, send -> cancelled reply
    superseded_by_other: int = 0  # shared buffers: cancelled by another client's newer request
    by_other_ms: list[float] = field(default_factory=list)  # those, send -> cancelled reply
    reply_ms: list[float] = field(default_factory=list)  # every complete request, send -> its reply
    ping_ms: list[float] = field(default_factory=list)
    sources: Counter = field(default_factory=Counter)  # answered requests by the reply's "source"


# ------------------------------------------------------------------------------- one client

@dataclass
class Pending:
    kind: str  # "complete" | "superseded" | "ping"
    sent_at: float


class LoadClient(threading.Thread):
    """One editor: its own connection, and its own buffer unless the clients share them; loops
    until the deadline or its request cap."""

    def __init__(self, index: int, port: int, token: str, sources: dict[str, str], options: argparse.Namespace,
                 deadline: float, errors: ErrorLog) -> None:
        super().__init__(name=f"load-client-{index}", daemon=True)
        self.index = index
        self.port = port
        self.token = token
        self.sources = sources
        self.files = client_files(sorted(sources), index, options.buffers)
        self.options = options
        self.deadline = deadline
        self.errors = errors
        self.rng = random.Random(options.seed * 1_000_003 + index)  # seeded, different per client
        self.shared_buffers = options.shared_buffers
        self.tally = ClientTally()
        self.sock: socket.socket | None = None
        self.stream = None
        self.seq = 0

    # -- connection ------------------------------------------------------------

    def _connect(self) -> None:
        self.sock = socket.create_connection((LOOPBACK, self.port), timeout=self.options.reply_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stream = self.sock.makefile("rb")

    def _disconnect(self) -> None:
        for closable in (self.stream, self.sock):
            try:
                if closable is not None:
                    closable.close()
            except OSError:
                pass
        self.sock, self.stream = None, None

    def _next_id(self) -> str:
        self.seq += 1
        return f"c{self.index}-{self.seq}"

    # -- the loop --------------------------------------------------------------

    def run(self) -> None:
        try:
            self._connect()
            while time.monotonic() < self.deadline and self.tally.sent < self.options.max_requests:
                self._one_loop()
                self.tally.loops += 1
                if self.sock is None:  # the connection broke; the errors are recorded
                    self._connect()
                think_ms = self.rng.uniform(self.options.think_ms[0], self.options.think_ms[1])
                time.sleep(think_ms / 1000)
        except OSError as exc:
            self.errors.add("connection failed", f"client {self.index}: {type(exc).__name__}: {exc}")
        finally:
            self._disconnect()

    def _complete_message(self, path: str) -> tuple[str, dict[str, Any]]:
        text = self.sources[path]
        line, column = pick_cursor(text, self.rng)
        request_id = self._next_id()
        return request_id, {"op": "complete", "token": self.token, "id": request_id, "code": text,
                            "line": line, "column": column, "file": path,
                            "buffer": buffer_name(self.index, path, self.shared_buffers)}

    def _one_loop(self) -> None:
        path = self.rng.choice(self.files)
        supersede = self.rng.random() < self.options.supersede_rate
        pending: dict[str, Pending] = {}
        payload = b""
        if supersede:
            old_id, old = self._complete_message(path)
            payload += encode_line(old, "json")
            pending[old_id] = Pending("superseded", 0.0)
            self.tally.superseded_sent += 1
        new_id, new = self._complete_message(path)
        payload += encode_line(new, "json")
        pending[new_id] = Pending("complete", 0.0)
        # One write for both: the daemon reads the newer request right after the older one, so
        # the older is still waiting or running when it is superseded.
        sent_at = time.perf_counter()
        for item in pending.values():
            item.sent_at = sent_at
        ping_id = self._next_id()
        assert self.sock is not None
        try:
            self.sock.sendall(payload)
            self.tally.sent += len(pending)
            ping_sent = time.perf_counter()
            self.sock.sendall(encode_line({"op": "ping", "token": self.token, "id": ping_id}, "json"))
            pending[ping_id] = Pending("ping", ping_sent)
            self.tally.pings += 1
        except OSError as exc:
            self._fail_all(pending, "send failed", f"{type(exc).__name__}: {exc}")
            return
        self._collect(pending)

    def _collect(self, pending: dict[str, Pending]) -> None:
        """Read replies until every pending id is answered; a silence of --reply-timeout fails the
        rest (and the connection is replaced, since its reader is then in an unknown state)."""
        assert self.sock is not None and self.stream is not None
        limit = time.monotonic() + self.options.reply_timeout
        while pending:
            remaining = limit - time.monotonic()
            if remaining <= 0:
                self._fail_all(pending, "timeout", f"no reply within {self.options.reply_timeout:g} s")
                return
            self.sock.settimeout(remaining)
            try:
                line = self.stream.readline()
            except (TimeoutError, socket.timeout):
                self._fail_all(pending, "timeout", f"no reply within {self.options.reply_timeout:g} s")
                return
            except OSError as exc:
                self._fail_all(pending, "connection lost", f"{type(exc).__name__}: {exc}")
                return
            received = time.perf_counter()
            if not line:
                self._fail_all(pending, "connection closed by the daemon", "end of stream with replies pending")
                return
            try:
                reply, fmt = decode_line(line)
            except Exception as exc:  # any unreadable reply is a protocol problem
                self.errors.add("protocol: unreadable reply", f"{exc}: {line[:200]!r}")
                continue
            reply_id = reply.get("id")
            if fmt != "json":
                self.errors.add("protocol: reply not in the request's format", repr(reply)[:300])
            if reply_id not in pending:
                self.errors.add("protocol: reply for an unknown or answered id", repr(reply)[:300])
                continue
            self._record(pending.pop(reply_id), reply, received)

    def _record(self, item: Pending, reply: dict[str, Any], received: float) -> None:
        elapsed = (received - item.sent_at) * 1000
        tally = self.tally
        if item.kind == "ping":
            if reply.get("pong") is True:
                tally.ping_ms.append(elapsed)
            else:
                self.errors.add("ping not answered with pong", repr(reply)[:300])
            return
        if "error" in reply:
            cancelled = reply.get("cancelled") is True
            superseded = cancelled and "superseded" in str(reply["error"])
            if item.kind == "superseded" and superseded:
                tally.superseded_cancelled += 1
                tally.cancel_ms.append(elapsed)
                tally.reply_ms.append(elapsed)
            elif superseded and self.shared_buffers:
                # Another client's newer request for the same buffer: the daemon's rule, not a fault.
                tally.superseded_by_other += 1
                tally.by_other_ms.append(elapsed)
                tally.reply_ms.append(elapsed)
            elif cancelled:
                self.errors.add(f"{item.kind} request cancelled unexpectedly", str(reply["error"]))
            else:
                self.errors.add("error reply", str(reply["error"]))
            return
        suggestions = reply.get("suggestions")
        if not isinstance(suggestions, list) or not all(isinstance(s, dict) and isinstance(s.get("text"), str)
                                                        for s in suggestions):
            self.errors.add("protocol: reply without a suggestions list", repr(reply)[:300])
            return
        source = str(reply.get("source", "model"))
        tally.reply_ms.append(elapsed)
        if item.kind == "superseded":
            # A cache answer takes well under a millisecond: the engine's worker, when idle, can finish
            # it before the daemon has read the newer request from the same write. That is not a
            # cancellation failure (nothing was left to cancel); a pipeline answer is.
            if source in CACHE_SOURCES:
                tally.superseded_from_cache += 1
            else:
                tally.superseded_answered += 1
            return
        tally.sources[source] += 1
        if suggestions:
            tally.with_suggestions += 1
        else:
            tally.empty += 1
        tally.latency_ms.append(elapsed)
        if isinstance(reply.get("ms"), (int, float)):
            tally.engine_ms.append(float(reply["ms"]))

    def _fail_all(self, pending: dict[str, Pending], kind: str, message: str) -> None:
        for request_id, item in pending.items():
            self.errors.add(kind, f"client {self.index}, {item.kind} {request_id}: {message}")
        pending.clear()
        self._disconnect()


# ------------------------------------------------------------------------------- processes

class SetupFailed(Exception):
    """The daemon (or the nREPL) could not be started: nothing was measured."""


def _child_env() -> dict[str, str]:
    # The daemon runs this checkout's code, whatever is installed.
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start_local_nrepl(directory: Path, log: Path, timeout: float) -> tuple[subprocess.Popen, str]:
    """`python3 -m cljassist nrepl DIR` in the background; (process, "host:port") once .nrepl-port
    is written."""
    port_file = directory / ".nrepl-port"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "cljassist", "nrepl", str(directory)], cwd=directory,
                                   stdout=out, stderr=subprocess.STDOUT, env=_child_env())
    limit = time.monotonic() + timeout
    while time.monotonic() < limit:
        if process.poll() is not None:
            raise SetupFailed(f"cljassist nrepl exited with {process.returncode}:\n{_tail(log)}")
        text = port_file.read_text().strip() if port_file.exists() else ""
        if text.isdigit():
            return process, f"{LOOPBACK}:{text}"
        time.sleep(0.2)
    stop_process(process, 10)
    raise SetupFailed(f"cljassist nrepl wrote no .nrepl-port within {timeout:g} s:\n{_tail(log)}")


def require_namespaces(endpoint: str, sources: dict[str, str]) -> list[str]:
    """Require the project's namespaces in the nREPL (so the daemon has context and compile checks);
    the ones that load."""
    from cljassist.repl.client import NreplClient
    from cljassist.repl.discovery import parse_endpoint

    host, port = parse_endpoint(endpoint)
    client = NreplClient.connect(host, port, timeout=30)
    loaded = []
    try:
        for ns in sorted({ns for ns in map(namespace_of, sources.values()) if ns}):
            if client.eval(f"(require '{ns})", timeout=120).ok:
                loaded.append(ns)
    finally:
        client.close()
    return loaded


def start_daemon(directory: Path, options: argparse.Namespace, repl_args: list[str], log: Path
                 ) -> tuple[subprocess.Popen, PortFile]:
    command = [sys.executable, "-m", "cljassist", "serve", "--no-inject", *repl_args,
               "-n", str(options.candidates), "--max-new-tokens", str(options.max_new_tokens)]
    if options.model:
        command += ["--model", str(options.model)]
    if options.threads:
        command += ["--threads", str(options.threads)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=directory, stdout=out, stderr=subprocess.STDOUT, env=_child_env())
    limit = time.monotonic() + options.startup_timeout
    while time.monotonic() < limit:
        if process.poll() is not None:
            raise SetupFailed(f"cljassist serve exited with {process.returncode}:\n{_tail(log)}")
        info = read_port_file(directory / PORT_FILE_NAME)
        if info is not None and info.pid == process.pid:
            return process, info
        time.sleep(0.1)
    stop_process(process, 10)
    raise SetupFailed(f"cljassist serve wrote no {PORT_FILE_NAME} within {options.startup_timeout:g} s:\n"
                      f"{_tail(log)}")


def stop_process(process: subprocess.Popen, timeout: float) -> tuple[float, bool]:
    """SIGTERM, then SIGKILL after `timeout`; (seconds it took, whether it had to be killed)."""
    started = time.monotonic()
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
        return time.monotonic() - started, False
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return time.monotonic() - started, True


def warm_up(port: int, token: str, path: str, text: str, timeout: float) -> dict[str, Any]:
    """One completion in ``path`` answered on a connection of its own (closed afterwards, so the
    "before" figures hold no client); the reply."""
    line, column = pick_cursor(text, random.Random(0))
    message = {"op": "complete", "token": token, "id": "warm-up", "code": text, "line": line, "column": column,
               "file": path, "buffer": f"load-warm-up:{path}"}
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(encode_line(message, "json"))
        with sock.makefile("rb") as stream:
            line_bytes = stream.readline()
    if not line_bytes:
        raise SetupFailed("the daemon closed the warm-up connection without a reply")
    reply, _ = decode_line(line_bytes)
    if "error" in reply or not isinstance(reply.get("suggestions"), list):
        raise SetupFailed(f"the warm-up request failed: {reply}")
    return reply


class RssSampler(threading.Thread):
    """Samples the daemon's RSS while the clients run (peaks between the before/after points)."""

    def __init__(self, pid: int, every_s: float = 0.5) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.every_s = every_s
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MiB)
        self.stop = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self.stop.wait(self.every_s):
            try:
                rss = read_proc_snapshot(self.pid).rss_mib
            except (OSError, KeyError):
                return
            self.samples.append((round(time.monotonic() - started, 1), round(rss, 1)))


# ------------------------------------------------------------------------------- the run

@dataclass
class Report:
    clients: int
    seconds_asked: float
    seconds_ran: float
    model: str | None
    repl: str | None
    candidates: int
    max_new_tokens: int
    seed: int
    files: int
    buffers: int = 0  # the files the clients type in (0: every client in every file)
    shared_buffers: bool = False  # a request's buffer is its file (else each client has its own)
    warmed_files: int = 0  # files completed in before the "before" figures
    loops: int = 0
    requests_sent: int = 0
    answered_with_suggestions: int = 0
    answered_empty: int = 0
    superseded_sent: int = 0
    superseded_cancelled: int = 0
    superseded_answered: int = 0
    superseded_from_cache: int = 0
    superseded_by_other: int = 0
    every_superseded_cancelled: bool = True
    answered_by_source: dict[str, int] = field(default_factory=dict)
    pings: int = 0
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    error_count: int = 0
    latency_ms: dict[str, float | None] = field(default_factory=dict)  # answered requests, send -> answer
    reply_ms: dict[str, float | None] = field(default_factory=dict)  # every complete, send -> any reply
    engine_ms: dict[str, float | None] = field(default_factory=dict)
    cancel_ms: dict[str, float | None] = field(default_factory=dict)
    by_other_ms: dict[str, float | None] = field(default_factory=dict)
    ping_ms: dict[str, float | None] = field(default_factory=dict)
    answered_per_s: float = 0.0
    replies_per_s: float = 0.0
    rss_mib: dict[str, float | None] = field(default_factory=dict)
    threads: dict[str, int | None] = field(default_factory=dict)
    open_fds: dict[str, int | None] = field(default_factory=dict)
    rss_samples: list[tuple[float, float]] = field(default_factory=list)
    shutdown: dict[str, Any] = field(default_factory=dict)
    ok: bool = False
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def summarize(values: list[float]) -> dict[str, float | None]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 1)

    return {"n": len(values), "p50": r(percentile(values, 50)), "p95": r(percentile(values, 95)),
            "max": r(max(values) if values else None)}


def merge_tallies(report: Report, tallies: list[ClientTally], seconds_ran: float) -> None:
    def total(name: str) -> int:
        return sum(getattr(t, name) for t in tallies)

    def joined(name: str) -> list[float]:
        return [x for t in tallies for x in getattr(t, name)]

    for name in ("loops", "with_suggestions", "empty", "superseded_sent", "superseded_cancelled",
                 "superseded_answered", "superseded_from_cache", "superseded_by_other", "pings"):
        value = total(name)
        target = {"with_suggestions": "answered_with_suggestions", "empty": "answered_empty"}.get(name, name)
        setattr(report, target, value)
    report.requests_sent = total("sent")
    report.answered_by_source = dict(sum((t.sources for t in tallies), Counter()))
    report.every_superseded_cancelled = report.superseded_cancelled == report.superseded_sent
    report.latency_ms = summarize(joined("latency_ms"))
    report.reply_ms = summarize(joined("reply_ms"))
    report.engine_ms = summarize(joined("engine_ms"))
    report.cancel_ms = summarize(joined("cancel_ms"))
    report.by_other_ms = summarize(joined("by_other_ms"))
    report.ping_ms = summarize(joined("ping_ms"))
    answered = report.answered_with_suggestions + report.answered_empty
    if seconds_ran > 0:
        report.answered_per_s = round(answered / seconds_ran, 2)
        superseded_replies = (report.superseded_cancelled + report.superseded_answered + report.superseded_from_cache
                              + report.superseded_by_other)
        report.replies_per_s = round((answered + superseded_replies) / seconds_ran, 2)


def rss_figures(before: ProcSnapshot, after: ProcSnapshot | None, sampled: list[float]) -> dict[str, float | None]:
    """before/after/peak MiB, and the samples taken under load (first, last, min, max), and the
    sample at mid-run with the growth from it to the last: flat memory shows as a second-half growth
    near zero (the first half holds what settles once: prompts kept, allocator pools). The peak is
    VmHWM, or the highest sample when that is higher: the kernel updates VmHWM lazily, so it can
    trail a sampled VmRSS by a few hundred KiB."""
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 1)

    hwm = after.peak_rss_mib if after else before.peak_rss_mib
    mid = sampled[(len(sampled) - 1) // 2] if len(sampled) >= 2 else None
    return {"before": r(before.rss_mib), "after": r(after.rss_mib) if after else None,
            "peak": r(max([hwm, *sampled])),
            "under_load_first": r(sampled[0]) if sampled else None,
            "under_load_last": r(sampled[-1]) if sampled else None,
            "under_load_min": r(min(sampled)) if sampled else None,
            "under_load_max": r(max(sampled)) if sampled else None,
            "mid_run": r(mid), "second_half_growth": r(sampled[-1] - mid) if mid is not None else None}


def count_tracebacks(log: Path) -> tuple[int, str]:
    """How many tracebacks the daemon printed, and the last lines of the first."""
    text = log.read_text(errors="replace") if log.exists() else ""
    count = text.count("Traceback (most recent call last)")
    if not count:
        return 0, ""
    first = text[text.index("Traceback (most recent call last)"):].splitlines()
    end = next((i for i, line in enumerate(first[1:], 1) if line and not line.startswith(" ")), len(first) - 1)
    return count, " | ".join(first[max(0, end - 2):end + 1])


def run_load(options: argparse.Namespace, work: Path) -> Report:
    if options.dir:
        project = Path(options.dir).absolute()
    else:
        project = work / "project"
        shutil.copytree(DEMO_DIR, project)
        for path in project.rglob("*"):  # the demo's <CURSOR> marker would not compile in a REPL
            if path.suffix in SOURCE_SUFFIXES and CURSOR_MARKER in path.read_text(encoding="utf-8"):
                path.write_text(path.read_text(encoding="utf-8").replace(CURSOR_MARKER, ""), encoding="utf-8")
    sources = project_sources(project)
    if not sources:
        raise SetupFailed(f"no Clojure files ({', '.join(SOURCE_SUFFIXES)}) under {project}")
    if len(sources) < options.buffers:
        raise SetupFailed(f"--buffers {options.buffers}: {project} has only {len(sources)} Clojure file(s); "
                          f"give a project with more (--dir)")

    nrepl_process = None
    repl_args = ["--no-repl"]
    endpoint = options.nrepl
    try:
        if options.local_nrepl:
            nrepl_process, endpoint = start_local_nrepl(project, work / "nrepl.log", options.startup_timeout)
        if endpoint:
            loaded = require_namespaces(endpoint, sources)
            print(f"nREPL {endpoint}: required {', '.join(loaded) or 'no namespaces'}", flush=True)
            repl_args = ["--nrepl", endpoint]
        return _run_against_daemon(options, work, project, sources, repl_args)
    finally:
        if nrepl_process is not None:
            stop_process(nrepl_process, 20)


def _run_against_daemon(options: argparse.Namespace, work: Path, project: Path, sources: dict[str, str],
                        repl_args: list[str]) -> Report:
    log = work / "daemon.log"
    process, info = start_daemon(project, options, repl_args, log)
    print(f"daemon pid {process.pid} on {LOOPBACK}:{info.port} in {project} (log {log})", flush=True)
    report = Report(clients=options.clients, seconds_asked=options.seconds, seconds_ran=0.0, model=None,
                    repl=None, candidates=options.candidates, max_new_tokens=options.max_new_tokens,
                    seed=options.seed, files=len(sources), buffers=options.buffers,
                    shared_buffers=options.shared_buffers)
    errors = ErrorLog()
    try:
        warmed = files_to_warm(sorted(sources), options.clients, options.buffers)
        replies = [warm_up(info.port, info.token, path, sources[path], options.reply_timeout) for path in warmed]
        report.repl = replies[-1].get("repl")
        report.warmed_files = len(warmed)
        report.model = _ping_model(info)
        time.sleep(options.settle)  # the warm-up connection's threads end
        before = read_proc_snapshot(process.pid)

        sampler = RssSampler(process.pid)
        sampler.start()
        started = time.monotonic()
        clients = [LoadClient(i, info.port, info.token, sources, options, started + options.seconds, errors)
                   for i in range(options.clients)]
        for client in clients:
            client.start()
        hard_limit = started + options.seconds + 2 * options.reply_timeout + 30
        for client in clients:
            client.join(max(0.0, hard_limit - time.monotonic()))
            if client.is_alive():
                errors.add("client did not finish", f"{client.name} still waiting at the hard limit")
        seconds_ran = time.monotonic() - started
        sampler.stop.set()
        sampler.join(5)

        time.sleep(options.settle)
        after = _snapshot_if_alive(process)
        if after is None:
            errors.add("daemon died", f"exit status {process.returncode}: {_tail(log, 5)}")
        merge_tallies(report, [c.tally for c in clients], seconds_ran)
        report.seconds_ran = round(seconds_ran, 1)
        report.rss_samples = sampler.samples
        report.rss_mib = rss_figures(before, after, [mib for _, mib in sampler.samples])
        report.threads = {"before": before.threads, "after": after.threads if after else None}
        report.open_fds = {"before": before.open_fds, "after": after.open_fds if after else None}
    finally:
        seconds, killed = stop_process(process, options.stop_timeout)
        report.shutdown = {"seconds": round(seconds, 2), "exit_code": process.returncode, "killed": killed,
                           "port_file_removed": not (project / PORT_FILE_NAME).exists()}
    if killed:
        errors.add("daemon did not stop on SIGTERM", f"killed after {options.stop_timeout:g} s")
    elif process.returncode != 0:
        errors.add("daemon exit status", f"{process.returncode} after SIGTERM: {_tail(log, 5)}")
    if not report.shutdown["port_file_removed"]:
        errors.add("port file left behind", str(project / PORT_FILE_NAME))
    tracebacks, first = count_tracebacks(log)
    if tracebacks:
        errors.add("traceback in the daemon's output", f"{tracebacks} traceback(s); first: {first}")
    report.errors = errors.as_json()
    report.error_count = errors.total()
    judge(report)
    return report


def _snapshot_if_alive(process: subprocess.Popen) -> ProcSnapshot | None:
    if process.poll() is not None:
        return None
    try:
        return read_proc_snapshot(process.pid)
    except (OSError, KeyError):  # it exited just now
        return None


def _ping_model(info: PortFile) -> str | None:
    with socket.create_connection((LOOPBACK, info.port), timeout=10) as sock:
        sock.sendall(encode_line({"op": "ping", "token": info.token, "id": "model"}, "json"))
        with sock.makefile("rb") as stream:
            reply, _ = decode_line(stream.readline())
    return reply.get("model")


def judge(report: Report) -> None:
    failures = []
    if report.error_count:
        failures.append(f"{report.error_count} error(s)")
    not_cancelled = report.superseded_sent - report.superseded_cancelled - report.superseded_from_cache
    if not_cancelled:
        failures.append(f"{not_cancelled} of {report.superseded_sent} superseded request(s) not cancelled "
                        f"({report.superseded_answered} answered by the pipeline instead, the rest unanswered)")
    answered = report.answered_with_suggestions + report.answered_empty
    if answered == 0:
        failures.append("no request was answered")
    report.failures = failures
    report.ok = not failures
    report.warnings = leak_warnings(report)


def leak_warnings(report: Report) -> list[str]:
    """What looks like a leak without being a failure by itself (the daemon may have started a
    thread or opened a file for good after the warm-up): threads or open files not back to their
    count once the clients are gone; RSS grown by more than RSS_GROWTH_WARN_MIB over the second half
    of the run (before -> after where too few samples were taken), since before -> after also holds
    the prompts the daemon keeps by design (up to KV_STATES_MEMORY) when cursors wander."""
    warnings = []
    for name, figures in (("threads", report.threads), ("open files", report.open_fds)):
        if figures.get("after") is not None and figures["after"] > figures["before"]:
            warnings.append(f"{name} {figures['before']} before the clients, {figures['after']} after")
    rss = report.rss_mib
    if rss.get("second_half_growth") is not None:
        if rss["second_half_growth"] > RSS_GROWTH_WARN_MIB:
            warnings.append(f"RSS grew by {rss['second_half_growth']:.1f} MiB over the second half of the run")
    elif rss.get("after") is not None and rss["after"] - rss["before"] > RSS_GROWTH_WARN_MIB:
        warnings.append(f"RSS grew by {rss['after'] - rss['before']:.1f} MiB")
    return warnings


# ------------------------------------------------------------------------------- output

def _ms(stats: dict[str, float | None]) -> str:
    if not stats.get("n"):
        return "none"
    return f"p50 {stats['p50']:.0f} ms  p95 {stats['p95']:.0f} ms  max {stats['max']:.0f} ms  (n={stats['n']})"


def format_report(report: Report) -> str:
    answered = report.answered_with_suggestions + report.answered_empty
    rss, threads, fds, down = report.rss_mib, report.threads, report.open_fds, report.shutdown
    delta = (f" ({rss['after'] - rss['before']:+.1f})" if rss.get("after") is not None and rss.get("before") is not None
             else "")
    lines = [
        f"cljassist daemon load test: {report.clients} clients for {report.seconds_asked:g} s "
        f"(ran {report.seconds_ran:g} s incl. draining), {report.files} files"
        + (f", typed in {report.buffers} of them" if report.buffers else "")
        + (", a buffer per file (its clients share it)" if report.shared_buffers else ", a buffer per client")
        + f", seed {report.seed}",
        f"  daemon        model {report.model}, REPL {report.repl}, -n {report.candidates}, "
        f"--max-new-tokens {report.max_new_tokens}",
        f"  requests      {report.requests_sent} complete sent in {report.loops} loops; answered {answered}: "
        f"{report.answered_with_suggestions} with suggestions, {report.answered_empty} empty; by source "
        f"{', '.join(f'{k} {v}' for k, v in sorted(report.answered_by_source.items())) or '-'}",
        f"  superseded    {report.superseded_cancelled}/{report.superseded_sent} cancelled"
        + (f", {report.superseded_answered} answered by the pipeline instead" if report.superseded_answered else "")
        + (f", {report.superseded_from_cache} answered from cache before the newer request was read"
           if report.superseded_from_cache else "")
        + f"  (every one cancelled: {'yes' if report.every_superseded_cancelled else 'NO'})",
        f"                cancelled reply {_ms(report.cancel_ms)}",
    ]
    if report.shared_buffers:
        lines += [
            f"  by another    {report.superseded_by_other} cancelled by another client's newer request for "
            f"their buffer (the daemon's rule, no error)",
            f"                cancelled reply {_ms(report.by_other_ms)}",
        ]
    lines += [
        f"  errors        {report.error_count or 'none'}",
    ]
    for kind, info in report.errors.items():
        lines.append(f"    {info['count']:>5} x {kind}: {info['first'][0] if info['first'] else ''}")
    lines += [
        f"  answered      {_ms(report.latency_ms)}  send -> answer, queueing included: the wait for a suggestion",
        f"  all replies   {_ms(report.reply_ms)}  send -> any reply, fast cancellations included",
        f"  engine        {_ms(report.engine_ms)}  the daemon's own 'ms'",
        f"  ping          {_ms(report.ping_ms)}  while busy",
        f"  throughput    {report.answered_per_s:g} answered/s ({report.replies_per_s:g} replies/s incl. cancelled)",
        f"  RSS           before {rss.get('before')} MiB (after warming {report.warmed_files} file(s)), "
        f"after {rss.get('after')} MiB{delta}, peak {rss.get('peak')} MiB (VmHWM)",
        f"                under load, sampled every 0.5 s: first {rss.get('under_load_first')}, "
        f"last {rss.get('under_load_last')}, min {rss.get('under_load_min')}, max {rss.get('under_load_max')} MiB",
        f"                flat: mid-run {rss.get('mid_run')} MiB -> last {rss.get('under_load_last')} MiB, "
        + (f"{rss['second_half_growth']:+.1f} MiB over the second half" if rss.get("second_half_growth") is not None
           else "too few samples"),
        f"  threads/fds   threads {threads.get('before')} -> {threads.get('after')}, "
        f"open fds {fds.get('before')} -> {fds.get('after')} (before/after the clients)",
        f"  shutdown      SIGTERM -> exit {down.get('exit_code')} in {down.get('seconds')} s"
        f"{', KILLED' if down.get('killed') else ''}, port file "
        f"{'removed' if down.get('port_file_removed') else 'LEFT BEHIND'}",
        f"  warnings      {'; '.join(report.warnings) or 'none'}",
        f"  result        {'OK' if report.ok else 'FAILED: ' + '; '.join(report.failures)}",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- command line

def _think_range(text: str) -> tuple[float, float]:
    low, sep, high = text.partition("-")
    values = (float(low), float(high or low))
    if values[0] < 0 or values[1] < values[0]:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH milliseconds, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--seconds", type=float, default=60, help="how long the clients start new requests (default 60)")
    p.add_argument("--max-requests", type=int, default=1000, help="complete requests per client at most (default 1000)")
    p.add_argument("--dir", help="project to serve in place (default: a temporary copy of fixtures/demo)")
    p.add_argument("--buffers", type=int, default=0, metavar="B",
                   help="the clients type in B files, client i in the (i mod B)-th (default: each in every file)")
    p.add_argument("--shared-buffers", action="store_true",
                   help="a request's buffer is its file, so clients in one file share its buffer and a newer "
                        "request cancels another client's older one (default: a buffer per client)")
    repl = p.add_mutually_exclusive_group()
    repl.add_argument("--no-repl", action="store_true", help="serve without a REPL (the default)")
    repl.add_argument("--local-nrepl", action="store_true",
                      help="start `cljassist nrepl` on the project first and serve with it")
    repl.add_argument("--nrepl", metavar="HOST:PORT", help="serve with this running nREPL")
    p.add_argument("--model", help="GGUF model (default: the daemon's default)")
    p.add_argument("-n", "--candidates", type=int, default=1, help="candidates per request (default 1)")
    p.add_argument("--max-new-tokens", type=int, default=16, help="(default 16)")
    p.add_argument("--threads", type=int, help="model CPU threads (default: the daemon's)")
    p.add_argument("--supersede-rate", type=float, default=0.25,
                   help="share of loops that send a second request right after the first (default 0.25)")
    p.add_argument("--think-ms", type=_think_range, default=(50.0, 200.0), metavar="LOW-HIGH",
                   help="pause between a client's loops (default 50-200)")
    p.add_argument("--reply-timeout", type=float, default=300,
                   help="seconds a client waits for a reply before counting it missing (default 300)")
    p.add_argument("--startup-timeout", type=float, default=300, help="seconds for the daemon to start (default 300)")
    p.add_argument("--stop-timeout", type=float, default=30, help="seconds for the daemon to exit on SIGTERM")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds to wait before the before/after /proc readings (default 2)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="OUT.json", help="also write the figures as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    if options.clients < 1 or options.seconds <= 0 or options.max_requests < 1 or options.buffers < 0:
        print("load_test: --clients, --seconds and --max-requests must be positive, --buffers not negative",
              file=sys.stderr)
        return EXIT_SETUP
    with tempfile.TemporaryDirectory(prefix="cljassist-load-") as tmp:
        work = Path(tmp)
        try:
            report = run_load(options, work)
        except (SetupFailed, OSError) as exc:
            print(f"load_test: setup failed: {exc}", file=sys.stderr)
            return EXIT_SETUP
        if report.error_count and (work / "daemon.log").exists():
            report_log_tail = _tail(work / "daemon.log", 20)
            if report_log_tail:
                print("daemon output (last lines):\n" + report_log_tail, file=sys.stderr)
    print(format_report(report), flush=True)
    if options.json:
        Path(options.json).write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    return EXIT_OK if report.ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
