"""Round-trip latency of one `cljassist/complete` request through the nREPL middleware (which
forwards to the daemon) and through the proxy, as an editor would see it.

    python scripts/measure_bridge_latency.py [--n 200] [--engine instant|real] [--threads 1]

Starts the local Debian nREPL for fixtures/demo and requires demo.core, then one engine behind a
CompletionService shared by a daemon (middleware injected into that nREPL) and a proxy in front
of it. Each path gets N sequential requests from our Python client at the same cursor in
fixtures/demo/src/demo/core.clj; the time is from sending the op to its `done`.

--engine instant: an engine that answers at once with a fixed suggestion, so the numbers are
                  the bridge's own cost (sockets, bencode, EDN, threads, service queue).
--engine real:    the real pipeline: default model (3 suggestions, 16 new tokens), REPL context
                  and read/compile checks. The same request each time, so the model's KV-cache
                  reuse makes this the best case for the model; it shows the whole path's cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cljassist.config import Settings  # noqa: E402
from cljassist.frontends.bridge import inject_middleware  # noqa: E402
from cljassist.frontends.common import open_engine  # noqa: E402
from cljassist.frontends.daemon import Daemon  # noqa: E402
from cljassist.frontends.proxy import NreplProxy  # noqa: E402
from cljassist.frontends.service import CompletionService  # noqa: E402
from cljassist.types import CompletionRequest, CompletionResult, Suggestion  # noqa: E402
from cljassist.repl.client import NreplClient  # noqa: E402
from cljassist.repl.local_server import start_local_nrepl  # noqa: E402

DEMO_SRC = ROOT / "fixtures" / "demo" / "src"
DEMO_FILE = DEMO_SRC / "demo" / "core.clj"


class InstantEngine:
    """Answers every request at once: what is left of the round trip is the bridge itself."""

    def complete(self, request: CompletionRequest, n=None, cancelled=None) -> CompletionResult:
        return CompletionResult([Suggestion("(inc x)", 0.9, {"balanced": True, "reads": True, "compiles": True})],
                                ms=0.0, namespace=request.namespace)


def cursor_in_demo() -> tuple[str, int, int]:
    """The demo file's text and a cursor (1-based) at the start of tag-counts' body, just before
    `(frequencies`: a gap where the default model's suggestions can pass the checks."""
    text = DEMO_FILE.read_text(encoding="utf-8")
    offset = text.index("(frequencies")
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return text, line, column


def time_requests(client: NreplClient, n: int, fields: dict) -> tuple[list[float], int]:
    times, answered = [], 0
    for _ in range(n):
        started = time.perf_counter()
        replies = client.request("cljassist/complete", timeout=120, **fields)
        times.append((time.perf_counter() - started) * 1000)
        if any("err" in r for r in replies):
            raise SystemExit(f"error reply: {[r.get('err') for r in replies if 'err' in r]}")
        answered += any(r.get("suggestions") for r in replies)
    return times, answered


def summary(name: str, times: list[float], answered: int) -> str:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return (f"{name:<11} n={len(times):<4} p50 {statistics.median(ordered):8.1f} ms  p95 {p95:8.1f} ms  "
            f"mean {statistics.fmean(ordered):8.1f} ms  max {ordered[-1]:8.1f} ms  with suggestions {answered}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--engine", choices=("instant", "real"), default="instant")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cljassist-bridge-"))
    server = start_local_nrepl(work, [str(DEMO_SRC)], timeout=120)
    opened = None
    try:
        with NreplClient.connect(server.host, server.port) as setup:
            setup.eval("(require 'demo.core)", timeout=60)
        if args.engine == "real":
            settings = Settings(nrepl=f"{server.host}:{server.port}", candidates=3, max_new_tokens=16,
                                threads=args.threads)
            opened = open_engine(settings, explicit=True)
            engine = opened.engine
        else:
            engine = InstantEngine()
        service = CompletionService(engine)
        daemon = Daemon(service, work).start()
        proxy = NreplProxy((server.host, server.port), service).start()
        text, line, column = cursor_in_demo()
        fields = {"code": text, "line": line, "column": column, "file": str(DEMO_FILE), "ns": "demo.core", "n": 3}
        with NreplClient.connect(server.host, server.port) as injector:
            print(f";; {inject_middleware(injector, '127.0.0.1', daemon.port, daemon.token)}", file=sys.stderr)
        print(f";; engine {args.engine}, cursor demo/core.clj:{line}:{column}, {args.n} sequential requests per path")
        with NreplClient.connect(server.host, server.port) as client:
            time_requests(client, 3, fields)  # warm-up: sessions, JIT, the model's KV cache
            print(summary("middleware", *time_requests(client, args.n, fields)))
        with NreplClient.connect("127.0.0.1", proxy.port) as client:
            time_requests(client, 3, fields)
            print(summary("proxy", *time_requests(client, args.n, fields)))
        proxy.stop()
        daemon.stop()
        service.close()
    finally:
        if opened is not None:
            opened.close()
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
