"""`cljassist bench CASES.jsonl`: run cases through the same engine the front-ends use.

Each case's prefix and suffix are used exactly as given. Prints a table per category and overall,
and with `--json OUT.json` writes the machine-readable result described in bench/FORMAT.md.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from cljassist.bench.metrics import CaseResult, edit_similarity, exact_match, summarize
from cljassist.clojure_text.reader import is_balanced
from cljassist.engine import CompletionRequest, Engine
from cljassist.errors import InputError

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


def run_case(engine: Engine, case: dict) -> CaseResult:
    request = CompletionRequest(case["prefix"], case["suffix"], case.get("file"))
    started = time.perf_counter()
    result = engine.complete(request)
    ms = (time.perf_counter() - started) * 1000
    top = result.suggestions[0] if result.suggestions else None
    text = top.text if top else None
    reference_balanced = is_balanced(case["prefix"] + case["middle"] + case["suffix"])
    balanced = is_balanced(case["prefix"] + text + case["suffix"]) if (top and reference_balanced) else None
    compiles = top.checks.get("compiles") if top else None
    return CaseResult(
        id=case["id"], category=case["category"], offered=top is not None, suggestion=text,
        em=exact_match(text, case["middle"]), es=edit_similarity(text, case["middle"]),
        balanced=balanced, compiles=compiles, ms=ms, model_ms=result.timings.get("model", 0.0),
    )


def run_bench(engine: Engine, cases: list[dict], repl_used: bool, model_name: str, progress=None) -> dict:
    results: list[CaseResult] = []
    for i, case in enumerate(cases, 1):
        results.append(run_case(engine, case))
        if progress and (i % 25 == 0 or i == len(cases)):
            progress(f"  {i}/{len(cases)} cases")
    categories = sorted({r.category for r in results}, key=lambda c: (CATEGORY_ORDER + (c,)).index(c))
    return {
        "cases": len(results),
        "model": model_name,
        "repl": repl_used,
        "overall": summarize(results, repl_used),
        "by_category": {c: summarize([r for r in results if r.category == c], repl_used) for c in categories},
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
    header = f"model: {report['model']}   repl: {'yes' if report['repl'] else 'no'}   cases: {report['cases']}"
    return header + "\n" + "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value <= 1.0 and not isinstance(value, bool):
        return f"{value:.3f}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def run_bench_command(args) -> int:
    from cljassist.cli import connect_repl, load_model, settings_from_args

    cases_path = Path(args.cases)
    cases = load_cases(cases_path, args.limit)
    if not cases:
        raise InputError(f"{cases_path}: no cases")
    settings = settings_from_args(args, Path.cwd())
    provider, repl_label = connect_repl(settings, Path.cwd(), args.no_repl, explicit=args.nrepl is not None)
    model = load_model(settings)
    if provider is not None:
        namespaces = sorted({c["ns"] for c in cases if c.get("ns")})
        loaded = sum(provider.ensure_loaded(ns) for ns in namespaces)
        print(f"REPL {repl_label}: loaded {loaded} of {len(namespaces)} case namespaces", file=sys.stderr)
    else:
        print(f"REPL {repl_label}", file=sys.stderr)
    engine = Engine(model, settings, provider)
    report = run_bench(engine, cases, provider is not None, model.name, progress=lambda m: print(m, file=sys.stderr))
    print(format_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return 0
