"""Measure the two REPL stages: live context (`ReplContextProvider.gather`) and verification
(`ReplVerifier.verify`: read + compile of one candidate).

    python scripts/measure_repl_latency.py [--n 200] [--show]

Starts the local Debian nREPL for fixtures/demo, requires demo.core (explicitly), then times:

* warm: N gathers at cursors spread over fixtures/demo/src/demo/core.clj (session, helper and
  caches in place: one small eval per gather);
* cold cache: the same cursors after `invalidate()` each time (the session and helper stay, the
  namespace data, var info and publics are fetched again);
* cold start: a new provider each time (clone a session + load the helper + fetch everything).

Each gather includes reading the references around the cursor; `analyze` (stage 1, done by the
engine before this stage) is not included. Verification is timed warm (after the first check in
its session, which installs the checker) over realistic candidates, passing and failing, at a gap
in a function body of core.clj.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cljassist.clojure_text.analysis import Analysis, analyze  # noqa: E402
from cljassist.context import ReplContextProvider  # noqa: E402
from cljassist.repl.client import NreplClient  # noqa: E402
from cljassist.repl.local_server import start_local_nrepl  # noqa: E402
from cljassist.verify.repl_compile import ReplVerifier  # noqa: E402

# Candidates for the body of demo.core/tag-counts: some compile, some do not.
VERIFY_GAP = "(frequencies (mapcat :tags posts))"
VERIFY_CANDIDATES = [
    "(frequencies (mapcat :tags posts))",
    "(count posts)",
    "(str/join \", \" (map :title posts))",
    "(set/union (set (mapcat :tags posts)))",
    "(reduce (fn [m p] (merge-with + m (frequencies (:tags p)))) {} posts)",
    "(no-such-fn posts)",
    "(let [tags] tags)",
    "(java.util.NoSuchThing. posts)",
]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def report(label: str, values: list[float]) -> None:
    print(f"{label:<12} n={len(values):<4} p50={percentile(values, 50):6.2f} ms  p95={percentile(values, 95):6.2f} ms"
          f"  max={max(values):6.2f} ms  mean={statistics.fmean(values):6.2f} ms")


def cursors(text: str, count: int) -> list[int]:
    """Offsets spread over the file: after the ns form, at ends of symbols and inside forms."""
    start = text.index("(defn")
    spots = [i for i in range(start, len(text)) if text[i] in " )\n" and text[i - 1] not in " \n("]
    step = max(1, len(spots) // count)
    return spots[::step][:count]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="warm gathers (default 200)")
    parser.add_argument("--cold", type=int, default=20, help="cold-cache and cold-start gathers (default 20)")
    parser.add_argument("--show", action="store_true", help="print the context lines at a few cursors")
    args = parser.parse_args()

    source = ROOT / "fixtures" / "demo" / "src" / "demo" / "core.clj"
    text = source.read_text(encoding="utf-8")
    offsets = cursors(text, 40)
    # the engine analyses the cursor before this stage; do it once per cursor, outside the timing
    analyses = [analyze(text[:off], text[off:]) for off in offsets]

    started = time.perf_counter()
    server = start_local_nrepl(ROOT / "fixtures" / "demo", timeout=180)
    print(f"nREPL on {server.endpoint} started in {time.perf_counter() - started:.1f}s")
    try:
        client = NreplClient.connect(server.host, server.port)
        provider = ReplContextProvider(client, timeout_s=5.0)
        if not provider.ensure_loaded("demo.core"):
            print("could not require demo.core", file=sys.stderr)
            return 1

        def gather(p: ReplContextProvider, i: int):
            a = analyses[i % len(analyses)]
            # as in a request, the gather reads the references: a copy that has not read them yet
            fresh = Analysis.around(a.text, a.cursor)
            return p.gather(fresh.namespace, fresh.cursor.symbol_prefix, analysis=fresh)

        # cold start: a fresh provider (new session, helper loaded, nothing cached)
        cold_start = []
        for i in range(args.cold):
            p = ReplContextProvider(client, timeout_s=5.0)
            t = time.perf_counter()
            gather(p, i)
            cold_start.append((time.perf_counter() - t) * 1000)
            p.close()

        # warm-up: one pass over all cursors, then the JIT has seen the helper
        for i in range(len(analyses) * 2):
            gather(provider, i)

        warm, hits, evals = [], 0, 0
        for i in range(args.n):
            live = gather(provider, i)
            warm.append(live.ms)
            hits += live.cache_hit
            evals += live.evals

        cold_cache = []
        for i in range(args.cold):
            provider.invalidate()
            t = time.perf_counter()
            gather(provider, i)
            cold_cache.append((time.perf_counter() - t) * 1000)

        verifier = ReplVerifier(client, timeout_s=5.0)
        gap_at = text.index(VERIFY_GAP)
        prefix, suffix = text[:gap_at], text[gap_at + len(VERIFY_GAP):]
        t = time.perf_counter()
        verifier.verify(prefix, VERIFY_CANDIDATES[0], suffix)
        verify_first = (time.perf_counter() - t) * 1000
        for candidate in VERIFY_CANDIDATES:  # warm-up
            verifier.verify(prefix, candidate, suffix)
        verify_warm, compiled = [], 0
        for i in range(args.n):
            t = time.perf_counter()
            verdict = verifier.verify(prefix, VERIFY_CANDIDATES[i % len(VERIFY_CANDIDATES)], suffix)
            verify_warm.append((time.perf_counter() - t) * 1000)
            compiled += bool(verdict.compiles)

        # one round-trip of the smallest eval, for scale
        rtt = []
        for _ in range(50):
            t = time.perf_counter()
            client.eval("nil", session=provider.session)
            rtt.append((time.perf_counter() - t) * 1000)

        print(f"cursors: {len(analyses)} in {source.relative_to(ROOT)}")
        report("warm", warm)
        print(f"{'':<12} cache hits {hits}/{args.n}, evals per gather {evals / args.n:.2f}")
        report("cold cache", cold_cache)
        report("cold start", cold_start)
        report("verify", verify_warm)
        print(f"{'':<12} {compiled}/{args.n} compiled; first check in a new session {verify_first:.1f} ms")
        report("eval nil", rtt)
        if args.show:
            for i in (0, len(analyses) // 3, 2 * len(analyses) // 3):
                c = analyses[i].cursor
                live = gather(provider, i)
                line_no = text.count("\n", 0, c.offset) + 1
                print(f"\n-- line {line_no}, typing {c.symbol_prefix!r}:")
                for line in live.lines:
                    print("   ", line)
        client.close()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
