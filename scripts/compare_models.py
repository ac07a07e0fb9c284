"""Compare several GGUF models on the same benchmark cases in one run (issue 5, item 5 "Evidence").

    python3 scripts/compare_models.py CASES.jsonl --model LABEL=PATH|NAME [--model NAME ...]
        [--sample N] [--limit N] [--no-repl | --nrepl HOST:PORT] [-n 3] [--max-new-tokens 64]
        [--threads 1] [--json OUT.json] [--markdown OUT.md]

Every model runs the same cases through the same engine `cljassist bench` uses (same prompt, stop
rules, verification and ranking) with the same Settings. The models are loaded one at a time and
freed before the next is loaded, so two of them never compete for memory. Per model the report
records the GGUF's path, its sha256 and the FIM family the engine detected, and carries the full
`cljassist bench --json` report (shared/bench/FORMAT.md) of that model; the metrics come from
`cljassist/bench/` (`_complete_case`, `make_report`), never recomputed here.

The comparison adds, per model and per category, the EM difference from the FIRST model in
percentage points and the ratio of p50 latencies (this model's / the first's), and whether the
issue's bar for a new default is met against the first model: at least +20 EM points overall with
p50 no more than 1.3x. Put the base model first.

Settings start from the built-in defaults (a `.cljassist.edn` is NOT read, so a result does not
depend on who runs it), then the flags. Before timing, each model completes one small request
outside the cases (llama.cpp's first evaluation pays one-off costs that would otherwise land on
the first case). With a REPL, context and checks come from one connection shared by all models; its
per-namespace context cache is filled during the first model's pass, so for latency between
models, compare with --no-repl (the model alone), which is also what the issue's bar is about.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cljassist.bench.metrics import CaseResult  # noqa: E402
from cljassist.bench.run import _complete_case, make_report, select_cases, warm_up  # noqa: E402
from cljassist.config import Settings  # noqa: E402
from cljassist.engine import Engine  # noqa: E402
from cljassist.errors import CljassistError, InputError  # noqa: E402
from cljassist.model.locate import model_path_to_load  # noqa: E402
from cljassist.model.registry import named_model  # noqa: E402

# The columns of the comparison tables (keys of bench's summarize()).
OVERALL_KEYS = ("n", "offered", "EM", "precision", "ES", "balanced", "p50_ms", "p95_ms")
CATEGORY_KEYS = ("n", "EM", "ES", "precision", "balanced", "p50_ms", "p95_ms")
# Issue 5's bar for making a trained model the default, against the base (the first model).
DEFAULT_BAR_EM_POINTS = 20.0
DEFAULT_BAR_P50_RATIO = 1.3

ModelLoader = Callable[[Path, Settings], object]


@dataclass(frozen=True)
class ModelSpec:
    label: str
    path: Path


@dataclass
class ModelRun:
    """One model's pass over the cases."""
    spec: ModelSpec
    sha256: str
    name: str
    fim_family: str
    load_s: float
    run_s: float
    report: dict  # `cljassist bench --json` report (FORMAT.md) of this model
    sources: dict = field(default_factory=dict)  # CompletionResult.source -> count (model / caches)

    def to_json(self) -> dict:
        return {"label": self.spec.label, "path": str(self.spec.path), "sha256": self.sha256,
                "name": self.name, "fim_family": self.fim_family, "load_s": round(self.load_s, 2),
                "run_s": round(self.run_s, 2), "sources": self.sources, "report": self.report}


# ------------------------------------------------------------------ inputs


def parse_model_spec(text: str) -> ModelSpec:
    """LABEL=PATH, LABEL=NAME or a model NAME alone (`cljassist models`); the label is what the tables
    show. A name loads what the engine loads for it (assembled, or re-encoded, as the registry says)."""
    label, sep, path = text.partition("=")
    if not sep and named_model(text.strip()) is not None:
        label, sep, path = text, "=", text
    if not sep or not label.strip() or not path.strip():
        raise InputError(f"--model {text!r}: expected LABEL=PATH, LABEL=NAME or NAME "
                         "(e.g. base=/models/smollm2.gguf, qwen2.5-coder-1.5b)")
    if named_model(path.strip()) is not None:
        try:
            return ModelSpec(label.strip(), model_path_to_load(path.strip()))
        except CljassistError as exc:
            raise InputError(f"--model {label.strip()}: {exc}") from None
    p = Path(path.strip()).expanduser()
    if not p.is_file():
        raise InputError(f"--model {label}: no such file: {p}")
    return ModelSpec(label.strip(), p)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_local_model(path: Path, settings: Settings):
    from cljassist.model.llama import LocalModel

    return LocalModel(path, n_ctx=settings.n_ctx, n_threads=settings.threads)


# ------------------------------------------------------------------ running


def run_model(spec: ModelSpec, cases: list[dict], settings: Settings, *, provider=None, verifier=None,
              load: ModelLoader = load_local_model, progress: Callable[[str], None] | None = None,
              warm: bool = True) -> ModelRun:
    """Load one model, run every case through a fresh engine, free the model."""
    sha = sha256_of(spec.path)
    started = time.perf_counter()
    model = load(spec.path, settings)
    load_s = time.perf_counter() - started
    try:
        engine = Engine(model, settings, provider, verifier)
        if warm:
            warm_up(engine)
        results: list[CaseResult] = []
        sources: Counter = Counter()
        started = time.perf_counter()
        for i, case in enumerate(cases, 1):
            scored, result = _complete_case(engine, case)
            results.append(scored)
            sources[getattr(result, "source", "model")] += 1
            if progress and (i % 25 == 0 or i == len(cases)):
                progress(f"  {spec.label}: {i}/{len(cases)} cases, {(time.perf_counter() - started) / i:.1f} s a case")
        run_s = time.perf_counter() - started
        fim = getattr(model, "fim", None)
        return ModelRun(spec=spec, sha256=sha, name=str(getattr(model, "name", spec.label)),
                        fim_family=str(getattr(fim, "family", "?")), load_s=load_s, run_s=run_s,
                        report=make_report(results, provider is not None, str(spec.path)), sources=dict(sources))
    finally:
        close = getattr(model, "close", None)
        if close is not None:
            close()
        del model
        gc.collect()  # llama.cpp frees its buffers when the Llama object goes: before the next load


# ------------------------------------------------------------------ comparing


def _ratio(value, base) -> float | None:
    return round(value / base, 3) if (value is not None and base) else None


def _delta_points(value, base) -> float | None:
    return round((value - base) * 100, 1) if (value is not None and base is not None) else None


def _row(summary: dict, base: dict, keys: tuple[str, ...]) -> dict:
    row = {k: summary.get(k) for k in keys}
    row["EM_delta_points"] = _delta_points(summary.get("EM"), base.get("EM"))
    row["p50_ratio"] = _ratio(summary.get("p50_ms"), base.get("p50_ms"))
    return row


def compare(runs: list[ModelRun]) -> dict:
    """Overall and per-category rows per model, with deltas against the first model."""
    if not runs:
        raise InputError("no models to compare")
    base = runs[0].report
    overall = {r.spec.label: _row(r.report["overall"], base["overall"], OVERALL_KEYS) for r in runs}
    categories: list[str] = []
    for r in runs:
        categories += [c for c in r.report["by_category"] if c not in categories]
    by_category = {}
    for category in categories:
        base_summary = base["by_category"].get(category, {})
        by_category[category] = {r.spec.label: _row(r.report["by_category"].get(category, {}), base_summary,
                                                    CATEGORY_KEYS) for r in runs}
    bar = {}
    for r in runs[1:]:
        row = overall[r.spec.label]
        em_ok = row["EM_delta_points"] is not None and row["EM_delta_points"] >= DEFAULT_BAR_EM_POINTS
        p50_ok = row["p50_ratio"] is not None and row["p50_ratio"] <= DEFAULT_BAR_P50_RATIO
        bar[r.spec.label] = {"EM_delta_points": row["EM_delta_points"], "p50_ratio": row["p50_ratio"],
                             "meets": bool(em_ok and p50_ok)}
    return {"baseline": runs[0].spec.label, "overall": overall, "by_category": by_category,
            "default_bar": {"rule": f"EM >= first + {DEFAULT_BAR_EM_POINTS:g} points and p50 <= "
                                    f"{DEFAULT_BAR_P50_RATIO:g} x first", "models": bar}}


def settings_json(settings: Settings) -> dict:
    keys = ("candidates", "max_new_tokens", "n_ctx", "threads", "verify", "cache", "reuse_prompt", "deadline_ms")
    return {k: getattr(settings, k) for k in keys}


def build_report(runs: list[ModelRun], cases_path: Path, cases: list[dict], settings: Settings,
                 repl_label: str, sample: int | None) -> dict:
    return {"cases_file": str(cases_path), "cases": len(cases), "sample": sample, "repl": repl_label,
            "settings": settings_json(settings), "models": [r.to_json() for r in runs], "comparison": compare(runs)}


# ------------------------------------------------------------------ printing


def _cell(value, key: str) -> str:
    if value is None:
        return "-"
    if key == "EM_delta_points":
        return f"{value:+.1f}"
    if key == "p50_ratio":
        return f"{value:.2f}x"
    if key in ("p50_ms", "p95_ms"):
        return f"{value:.0f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _columns(keys: tuple[str, ...], baseline: str) -> list[tuple[str, str]]:
    names = {"p50_ms": "p50 ms", "p95_ms": "p95 ms", "EM_delta_points": f"EM delta vs {baseline} (points)",
             "p50_ratio": "p50 ratio vs first"}
    return [(k, names.get(k, k)) for k in keys + ("EM_delta_points", "p50_ratio")]


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows])


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    text_columns = 2 if header[:2] == ["category", "model"] else 1  # left-aligned; numbers right-aligned
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < text_columns else "---:" for i in range(len(header))) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _tables(report: dict, table: Callable[[list[str], list[list[str]]], str]) -> list[tuple[str, str]]:
    comparison = report["comparison"]
    baseline = comparison["baseline"]
    out = []
    cols = _columns(OVERALL_KEYS, baseline)
    rows = [[label] + [_cell(row.get(k), k) for k, _ in cols] for label, row in comparison["overall"].items()]
    out.append(("overall", table(["model"] + [name for _, name in cols], rows)))
    cols = _columns(CATEGORY_KEYS, baseline)
    rows = []
    for category, per_model in comparison["by_category"].items():
        rows += [[category, label] + [_cell(row.get(k), k) for k, _ in cols] for label, row in per_model.items()]
    out.append(("per category", table(["category", "model"] + [name for _, name in cols], rows)))
    return out


def _model_lines(report: dict) -> list[str]:
    lines = []
    for m in report["models"]:
        per_case = m["run_s"] / max(1, m["report"]["cases"])
        lines.append(f"{m['label']}: {m['path']}  sha256 {m['sha256'][:12]}  FIM family {m['fim_family']}  "
                     f"({m['name']}; loaded in {m['load_s']:.1f} s; {per_case:.2f} s a case; sources {m['sources']})")
    return lines


def _bar_lines(report: dict) -> list[str]:
    bar = report["comparison"]["default_bar"]
    lines = []
    for label, verdict in bar["models"].items():
        lines.append(f"{label}: {'MEETS' if verdict['meets'] else 'does not meet'} the default bar ({bar['rule']}): "
                     f"EM {_cell(verdict['EM_delta_points'], 'EM_delta_points')} points, "
                     f"p50 {_cell(verdict['p50_ratio'], 'p50_ratio')}")
    return lines


def format_text(report: dict) -> str:
    head = (f"cases: {report['cases']} from {report['cases_file']}   repl: {report['repl']}   "
            f"settings: {json.dumps(report['settings'])}")
    parts = [head, *_model_lines(report), ""]
    for title, body in _tables(report, _text_table):
        parts += [title + ":", body, ""]
    return "\n".join(parts + _bar_lines(report))


def format_markdown(report: dict) -> str:
    parts = [f"# Model comparison on `{report['cases_file']}`", "",
             f"{report['cases']} cases, REPL: {report['repl']}, settings: `{json.dumps(report['settings'])}`. "
             f"Deltas are against the first model, `{report['comparison']['baseline']}`.", ""]
    parts += [f"- {line}" for line in _model_lines(report)] + [""]
    for title, body in _tables(report, _md_table):
        parts += [f"## {title.capitalize()}", "", body, ""]
    parts += [f"- {line}" for line in _bar_lines(report)]
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------ command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="compare_models.py", description=__doc__.split("\n\n")[0])
    p.add_argument("cases", metavar="CASES.jsonl")
    p.add_argument("--model", action="append", required=True, metavar="LABEL=PATH|NAME",
                   help="a GGUF to compare, repeatable; the first is the baseline of the deltas")
    p.add_argument("--sample", type=int, metavar="N", help="N cases evenly spaced through the file")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N cases")
    repl = p.add_mutually_exclusive_group()
    repl.add_argument("--no-repl", action="store_true", help="no REPL context or checks (the model alone)")
    repl.add_argument("--nrepl", metavar="HOST:PORT", help="REPL for context and checks (default: .nrepl-port discovery)")
    p.add_argument("-n", "--candidates", type=int, default=3, help="candidates per request (3)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: the engine's)")
    p.add_argument("--n-ctx", type=int, default=None, help="context window (default: the engine's)")
    p.add_argument("--no-cache", action="store_true", help="no type-through / recent-result caches")
    p.add_argument("--json", metavar="OUT.json")
    p.add_argument("--markdown", metavar="OUT.md")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _main(args)
    except CljassistError as exc:
        print(f"compare_models: {exc}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    from cljassist.frontends.common import connect_repl, make_verifier

    specs = [parse_model_spec(s) for s in args.model]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise InputError(f"--model labels must differ: {', '.join(labels)}")
    cases_path = Path(args.cases)
    cases = select_cases(cases_path, args.limit, args.sample)
    settings = Settings().with_overrides(candidates=args.candidates, max_new_tokens=args.max_new_tokens,
                                         threads=args.threads, n_ctx=args.n_ctx, nrepl=args.nrepl,
                                         cache=False if args.no_cache else None)
    progress = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    provider, repl_label = connect_repl(settings, Path.cwd(), args.no_repl, explicit=args.nrepl is not None)
    verifier = make_verifier(provider, settings)
    try:
        if provider is not None:
            namespaces = sorted({c["ns"] for c in cases if c.get("ns")})
            loaded = sum(provider.ensure_loaded(ns) for ns in namespaces)
            progress(f"REPL {repl_label}: loaded {loaded} of {len(namespaces)} case namespaces")
        runs = []
        for spec in specs:
            progress(f"{spec.label}: loading {spec.path}")
            runs.append(run_model(spec, cases, settings, provider=provider, verifier=verifier, progress=progress))
    finally:
        close = getattr(provider, "close", None)
        if close is not None:
            close()
    report = build_report(runs, cases_path, cases, settings, repl_label, args.sample)
    print(format_text(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(format_markdown(report), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
