"""`cljassist bench CASES.jsonl`: run cases through the same engine the front-ends use.

Each case's prefix and suffix are used exactly as given. Prints a table per category and overall,
and with `--json OUT.json` writes the machine-readable result described in bench/FORMAT.md.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from cljassist.bench.metrics import CaseResult, RankedTop, edit_similarity, exact_match, summarize
from cljassist.clojure_text.reader import is_balanced
from cljassist.engine import Engine
from cljassist.rank import rank
from cljassist.types import Candidate, CompletionRequest, CompletionResult, judged
from cljassist.errors import InputError

# Asked once before the cases are timed: llama.cpp's first evaluation, and the REPL's first context
# gather and compile, pay one-off costs that would otherwise land on the first case. In `user`, the
# namespace every Clojure REPL has, so the REPL's paths run too.
WARM_UP_REQUEST = CompletionRequest("(defn add [a b]\n  (+ a ", ")\n", "user.clj", "user")

REQUIRED_FIELDS = {"id": str, "prefix": str, "suffix": str, "middle": str, "category": str}
CATEGORY_ORDER = ("symbol", "name", "arg", "call", "clause", "body")


def load_cases(path: Path, limit: int | None = None) -> list[dict]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot read cases ({exc.strerror or exc})") from None
    cases, seen = [], set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            case = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path} line {number}: not JSON ({exc.msg})") from None
        if not isinstance(case, dict):
            raise InputError(f"{path} line {number}: a case must be a JSON object")
        for name, kind in REQUIRED_FIELDS.items():
            if not isinstance(case.get(name), kind):
                raise InputError(f"{path} line {number}: field '{name}' must be a {kind.__name__}")
        if case["id"] in seen:
            raise InputError(f"{path} line {number}: duplicate id {case['id']!r}")
        seen.add(case["id"])
        cases.append(case)
        if limit is not None and len(cases) >= limit:
            break
    return cases


def evenly_spaced(cases: list[dict], n: int) -> list[dict]:
    """n cases spread evenly over the file (case files are often grouped by package)."""
    if n >= len(cases):
        return cases
    return [cases[i * len(cases) // n] for i in range(n)]


def run_case(engine: Engine, case: dict) -> CaseResult:
    return _complete_case(engine, case)[0]


def _complete_case(engine: Engine, case: dict) -> tuple[CaseResult, CompletionResult]:
    request = CompletionRequest(case["prefix"], case["suffix"], case.get("file"), case.get("ns"))
    started = time.perf_counter()
    result = engine.complete(request)
    ms = (time.perf_counter() - started) * 1000
    top = result.suggestions[0] if result.suggestions else None
    scored = _score(case, top.text if top else None, top.checks if top else None, ms, result.timings)
    return dataclasses.replace(scored, top=ranked_top(engine, result, case["middle"])), result


def ranked_top(engine: Engine, result: CompletionResult, middle: str) -> RankedTop | None:
    """The case's first-ranked suggestion before the score threshold, for fitting the calibration."""
    ranked = rank(result.candidates, show_failing=engine.settings.show_failing, calibration=engine.calibration)
    if not ranked:
        return None
    top = ranked[0]
    n_tokens = next((c.n_tokens for c in result.candidates if c.text == top.text), None)
    margin = top.confidence - ranked[1].confidence if len(ranked) > 1 else None
    return RankedTop(top.text, exact_match(top.text, middle), top.score, top.confidence, dict(top.checks),
                     n_tokens, margin, top.score < engine.min_score)


def _score(case: dict, text: str | None, checks: dict | None, ms: float, timings: dict) -> CaseResult:
    reference_balanced = is_balanced(case["prefix"] + case["middle"] + case["suffix"])
    balanced = is_balanced(case["prefix"] + text + case["suffix"]) if (text is not None and reference_balanced) else None
    return CaseResult(
        id=case["id"], category=case["category"], offered=text is not None, suggestion=text,
        em=exact_match(text, case["middle"]), es=edit_similarity(text, case["middle"]),
        balanced=balanced, compiles=judged((checks or {}).get("compiles")), ms=ms, model_ms=timings.get("model", 0.0),
    )


def _unverified_top(result: CompletionResult) -> Candidate | None:
    """What ranking would have offered without the REPL checks (structure only)."""
    plain = [dataclasses.replace(c, checks={"balanced": c.checks["balanced"]}) for c in result.candidates]
    ranked = rank(plain, limit=1)
    if not ranked:
        return None
    return next(c for c in result.candidates if c.text == ranked[0].text)


def run_comparison(with_context: Engine, without_context: Engine, cases: list[dict],
                   progress=None) -> tuple[dict, list[CaseResult]]:
    """Same cases, one run: EM with and without REPL context; precision and compiles with and
    without REPL verification (the verdicts of the unverified top are still measured).
    Returns the comparison and the results of the engine as configured (context + verification)."""
    variants: dict[str, list[CaseResult]] = {"no_context": [], "context_verified": [], "context_unverified": []}
    for i, case in enumerate(cases, 1):
        variants["no_context"].append(_complete_case(without_context, case)[0])
        verified, result = _complete_case(with_context, case)
        variants["context_verified"].append(verified)
        top = _unverified_top(result)
        variants["context_unverified"].append(
            _score(case, top.text if top else None, top.checks if top else None, verified.ms, result.timings))
        if progress and (i % 25 == 0 or i == len(cases)):
            progress(f"  {i}/{len(cases)} cases (comparison)")

    def row(subset_ids: set[str] | None) -> dict:
        pick = lambda name: [r for r in variants[name] if subset_ids is None or r.id in subset_ids]  # noqa: E731
        s = {name: summarize(pick(name), repl=True) for name in variants}
        return {
            "n": s["no_context"]["n"],
            "EM_without_context": s["no_context"]["EM"], "EM_with_context": s["context_verified"]["EM"],
            "precision_without_verification": s["context_unverified"]["precision"],
            "precision_with_verification": s["context_verified"]["precision"],
            "compiles_without_verification": s["context_unverified"]["compiles"],
            "compiles_with_verification": s["context_verified"]["compiles"],
            "offered_without_verification": s["context_unverified"]["offered"],
            "offered_with_verification": s["context_verified"]["offered"],
        }

    by_category = {}
    for category in _ordered_categories(variants["no_context"]):
        by_category[category] = row({c["id"] for c in cases if c["category"] == category})
    xref_ids = {c["id"] for c in cases if c.get("xref")}
    comparison = {"overall": row(None), "by_category": by_category, "xref": row(xref_ids) if xref_ids else None,
                  "results": {name: [r.to_json() for r in rs] for name, rs in variants.items()}}
    return comparison, variants["context_verified"]


def _ordered_categories(results: list[CaseResult]) -> list[str]:
    return sorted({r.category for r in results}, key=lambda c: (CATEGORY_ORDER + (c,)).index(c))


def warm_up(engine: Engine) -> None:
    """One request outside the cases, then the engine's caches emptied, so it never answers a case."""
    engine.complete(WARM_UP_REQUEST, n=1)
    engine.clear_caches()


def run_bench(engine: Engine, cases: list[dict], repl_used: bool, model_name: str, progress=None) -> dict:
    results: list[CaseResult] = []
    speculated: list[dict] = []
    for i, case in enumerate(cases, 1):
        results.append(run_case(engine, case))
        if "speculation" in engine.model.last_stats:
            speculated.append(engine.model.last_stats["speculation"])
        if progress and (i % 25 == 0 or i == len(cases)):
            progress(f"  {i}/{len(cases)} cases")
    report = make_report(results, repl_used, model_name, engine)
    if speculated:
        report["speculation"] = speculation_totals(speculated)
    return report


def speculation_totals(per_request: list[dict]) -> dict:
    """The speculation stats of several requests (each as LocalModel.last_stats gives them) summed."""
    total = {key: sum(s[key] for s in per_request) for key in ("proposed", "accepted", "passes", "tokens")}
    total["acceptance"] = round(total["accepted"] / total["proposed"], 3) if total["proposed"] else 0.0
    total["tokens_per_pass"] = round(total["tokens"] / total["passes"], 3) if total["passes"] else 0.0
    return total


def make_report(results: list[CaseResult], repl_used: bool, model_name: str, engine: Engine | None = None) -> dict:
    return {
        "cases": len(results),
        "model": model_name,
        "repl": repl_used,
        # what the per-case scores mean and the threshold that held suggestions back
        "calibrated": engine is not None and engine.calibration is not None,
        "min_score": engine.min_score if engine is not None else None,
        "overall": summarize(results, repl_used),
        "by_category": {c: summarize([r for r in results if r.category == c], repl_used)
                        for c in _ordered_categories(results)},
        "results": [r.to_json() for r in results],
    }


COLUMNS = ("n", "offered", "EM", "precision", "ES", "balanced", "compiles", "p50_ms", "p95_ms", "model_share")


def format_table(report: dict) -> str:
    rows = [("category",) + COLUMNS]
    for name, summary in list(report["by_category"].items()) + [("overall", report["overall"])]:
        rows.append((name,) + tuple(_cell(summary.get(c)) for c in COLUMNS))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    peer = "   prompted as: llama.vim (peer)" if report.get("peer") else ""
    header = f"model: {report['model']}   repl: {'yes' if report['repl'] else 'no'}   cases: {report['cases']}{peer}"
    if report.get("speculation"):
        s = report["speculation"]
        header += (f"\nspeculation: {s['accepted']} of {s['proposed']} guessed tokens accepted "
                   f"({s['acceptance']:.3f}), {s['tokens_per_pass']:.2f} tokens per model pass")
    return header + "\n" + "\n".join(lines)


COMPARISON_COLUMNS = (
    ("n", "n"),
    ("EM_without_context", "EM -ctx"), ("EM_with_context", "EM +ctx"),
    ("precision_without_verification", "prec -verify"), ("precision_with_verification", "prec +verify"),
    ("compiles_without_verification", "compiles -verify"), ("compiles_with_verification", "compiles +verify"),
    ("offered_without_verification", "offered -verify"), ("offered_with_verification", "offered +verify"),
)


def format_comparison(comparison: dict) -> str:
    rows = [("category",) + tuple(label for _, label in COMPARISON_COLUMNS)]
    named = list(comparison["by_category"].items())
    if comparison.get("xref"):
        named.append(("xref", comparison["xref"]))
    for name, row in named + [("overall", comparison["overall"])]:
        rows.append((name,) + tuple(_cell(row.get(key)) for key, _ in COMPARISON_COLUMNS))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "with/without REPL context (verification on) and with/without REPL verification (context on):\n" + "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value <= 1.0 and not isinstance(value, bool):
        return f"{value:.3f}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def select_cases(path: Path, limit: int | None = None, sample: int | None = None) -> list:
    """The cases of ``path``: the first ``limit``, then ``sample`` of them evenly spaced."""
    cases = load_cases(path, limit)
    if sample:
        cases = evenly_spaced(cases, sample)
    if not cases:
        raise InputError(f"{path}: no cases")
    return cases


def run_bench_command(args) -> int:
    from cljassist.frontends.bootstrap import open_frontend, settings_from_args

    cases = select_cases(Path(args.cases), args.limit, args.sample)
    if args.json and not Path(args.json).absolute().parent.is_dir():
        # said before the run, not after it has taken an hour
        raise InputError(f"{args.json}: no such directory")
    settings = settings_from_args(args, Path.cwd())
    if args.peer and (args.compare or args.nrepl is not None):
        raise InputError("--peer runs without a REPL: leave out --compare and --nrepl")
    no_repl = args.no_repl or args.peer
    with open_frontend(settings, near=Path.cwd(), no_repl=no_repl, explicit=args.nrepl is not None) as front:
        report = run_peer(front.engine.model, cases) if args.peer else _bench_report(front, cases, args.compare)
    print(format_table(report))
    if "comparison" in report:
        print()
        print(format_comparison(report["comparison"]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return 0


def run_peer(model, cases: list[dict], progress=lambda m: print(m, file=sys.stderr)) -> dict:  # noqa: E731
    """The report of ``model`` prompted as llama.vim prompts it (cljassist/bench/peer.py), scored as ours."""
    from cljassist.bench.peer import run_peer_case

    # the same warm-up as ours, so neither side's first case pays llama.cpp's one-off costs
    run_peer_case(model, {"prefix": WARM_UP_REQUEST.prefix, "suffix": WARM_UP_REQUEST.suffix}, lambda *scored: None)
    results = []
    for i, case in enumerate(cases, 1):
        results.append(run_peer_case(model, case, _score))
        if i % 25 == 0 or i == len(cases):
            progress(f"  {i}/{len(cases)} cases (peer: llama.vim prompt)")
    report = make_report(results, False, model.name)
    report["peer"] = "llama.vim"
    return report


def _bench_report(front, cases: list[dict], compare: bool) -> dict:
    engine, provider = front.engine, front.provider
    if provider is not None:
        namespaces = sorted({c["ns"] for c in cases if c.get("ns")})
        loaded = sum(provider.ensure_loaded(ns) for ns in namespaces)
        print(f"REPL {front.repl_label}: loaded {loaded} of {len(namespaces)} case namespaces", file=sys.stderr)
    else:
        print(f"REPL {front.repl_label}", file=sys.stderr)
    progress = lambda m: print(m, file=sys.stderr)  # noqa: E731
    warm_up(engine)
    if not compare:
        return run_bench(engine, cases, provider is not None, engine.model.name, progress)
    if provider is None:
        raise InputError("--compare needs a REPL: pass --nrepl HOST:PORT or run where a .nrepl-port is found")
    without_context = Engine(engine.model, engine.settings, None, engine.verifier)
    comparison, verified = run_comparison(engine, without_context, cases, progress)
    report = make_report(verified, True, engine.model.name, engine)
    report["comparison"] = comparison
    return report
