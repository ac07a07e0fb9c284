"""The evidence for choosing models: every named model over the same cases, without the REPL, with
a REPL that has the cases' libraries loaded, and as the peer (a plain FIM prompt as llama.vim sends
it), scored the same way; then the table that decides the default models.

    python3 scripts/evidence.py run CASES.jsonl --out DIR [--models a,b] [--variants no-repl,repl,peer]
        [--sample N] [--limit N] [--threads 1] [--nrepl HOST:PORT]
    python3 scripts/evidence.py run CASES.jsonl --resume DIR [...]    # go on: finished runs are kept
    python3 scripts/evidence.py report DIR                            # merge: DIR/evidence.json, .md
    python3 scripts/evidence.py decide --evidence DIR/evidence.json --typing TYPING.json... [--readme README.md]

`run`: one `cljassist bench CASES` process per (model, variant), the variant's flags added (VARIANTS:
a name, the bench flags, whether it uses the REPL), so every number comes from the bench itself
(cljassist/bench/, shared/bench/FORMAT.md) and a variant is one line here. One model is loaded at
a time. The variants with a REPL share one bundled nREPL started once with the classpath of
scripts/bench_classpath.py (or the one --nrepl names), in which every case namespace is required
once before the first run; the bench's own warm-up request keeps one-off costs off the first case.
Each finished run is saved at once as DIR/runs/MODEL@VARIANT.json (its whole bench report, per-case
results included, with the cases it ran, the command, and the load average before and after: other
jobs on the cores show up there), so an interrupted run goes on with --resume, and two processes
(e.g. --models a,b and --models c, same DIR) split the work. A variant whose flag this checkout's
`cljassist bench` does not know is skipped with a note.

`report`: every saved run of DIR (all on the same cases, or an error) into DIR/evidence.json and
DIR/evidence.md (overall, per category side by side, xref cases apart), printed too.

`decide`: the one-shot and as-you-type tables of the default choice (EM on the cases from the
evidence, latency from the evidence and from `cljassist bench --typing --json` reports), each row
checked against the budgets, the chosen row marked; with --readme, written between the README's
default-models markers (tests/test_evidence.py checks that it is what this prints from the inputs it names).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cljassist.bench.metrics import CaseResult, percentile, starts_with_reference, summarize  # noqa: E402
from cljassist.bench.run import CATEGORY_ORDER, load_cases, select_cases  # noqa: E402
from cljassist.budgets import (  # noqa: E402
    ONE_SHOT_P50_TARGET, TYPING_WARM_P50_TARGET, TYPING_WARM_P95_TARGET,
)
from cljassist.errors import CljassistError, InputError  # noqa: E402
from cljassist.fileio import write_atomic  # noqa: E402
from cljassist.model.fim import LEFT_TO_RIGHT  # noqa: E402
from cljassist.model.registry import AS_YOU_TYPE, ONE_SHOT, default_model, known_names, named_model  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    flags: tuple[str, ...]  # added to `cljassist bench CASES`
    repl: bool  # against the shared nREPL (--nrepl); else --no-repl
    what: str  # the tables' legend
    default: bool = True  # run unless --variants names others
    needs_fim: bool = False  # prompts with the model's prefix-suffix-middle tokens, which some models lack

    def not_applicable(self, model: str) -> str | None:
        """Why this variant cannot run `model` (a registry name), or None."""
        named = named_model(model)
        if self.needs_fim and named is not None and named.fim_family == LEFT_TO_RIGHT:
            return f"{model} has no FIM tokens ({LEFT_TO_RIGHT})"
        return None


VARIANTS: tuple[Variant, ...] = (
    Variant("no-repl", (), False, "our engine, no REPL"),
    Variant("repl", (), True, "our engine with a REPL that has the cases' libraries loaded: context, "
                             "verification, REPL-steered candidates"),
    Variant("peer", ("--peer",), False, "the same model with a plain FIM prompt as llama.vim sends it "
                                        "(256 lines before, 64 after, greedy, no stop rules, no REPL)",
            needs_fim=True),
    Variant("no-repl-no-threshold", ("--min-score", "0"), False,
            "no REPL, every suggestion offered whatever its score (no calibrated threshold)", default=False),
    Variant("repl-no-threshold", ("--min-score", "0"), True,
            "with the REPL, every suggestion offered whatever its score (no calibrated threshold)", default=False),
    Variant("repl-no-steer", ("--no-steer",), True, "with the REPL, without REPL-steered candidates", default=False),
    Variant("no-repl-no-repo-prompt", ("--no-repo-prompt",), False,
            "no REPL, the model family's plain FIM prompt instead of the repo-level one", default=False),
    Variant("repl-no-repo-prompt", ("--no-repo-prompt",), True,
            "with the REPL, the model family's plain FIM prompt instead of the repo-level one", default=False),
    Variant("no-repl-n1", ("-n", "1"), False,
            "no REPL, one candidate instead of three (a default's settings may trade the choice for speed)",
            default=False),
)

OVERALL_COLUMNS = (("n", "n"), ("offered", "offered"), ("EM", "EM"), ("precision", "precision"), ("ES", "ES"),
                   ("balanced", "balanced"), ("compiles", "compiles"), ("p50_ms", "p50"), ("p95_ms", "p95"),
                   ("starts_right", "starts right"))
PERCENT_KEYS = {"offered", "EM", "precision", "balanced", "compiles", "matched_share", "offered_share",
                "starts_right"}
# what summarize() reads; the ranked top (saved as its own keys) is not needed for the tables
RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(CaseResult) if f.name != "top")
RUN_SUFFIX = ".json"


# ------------------------------------------------------------------ cases and saved runs


@dataclasses.dataclass(frozen=True)
class CaseSelection:
    cases_file: str
    limit: int | None
    sample: int | None
    ids: tuple[str, ...]
    xref_ids: tuple[str, ...]
    namespaces: tuple[str, ...]

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.ids).encode()).hexdigest()[:16]


def selection_of(cases_path: Path, limit: int | None, sample: int | None) -> CaseSelection:
    cases = select_cases(cases_path, limit, sample)
    return CaseSelection(str(cases_path), limit, sample, tuple(c["id"] for c in cases),
                         tuple(c["id"] for c in cases if c.get("xref")),
                         tuple(sorted({c["ns"] for c in cases if c.get("ns")})))


def run_key(model: str, variant: str) -> str:
    return f"{model}@{variant}"


def run_path(out: Path, model: str, variant: str) -> Path:
    return out / "runs" / (run_key(model, variant) + RUN_SUFFIX)


def load_runs(out: Path) -> list[dict]:
    """The saved runs of `out`, in file-name order."""
    runs_dir = out / "runs"
    if not runs_dir.is_dir():
        return []
    runs = []
    for path in sorted(runs_dir.glob("*" + RUN_SUFFIX)):
        try:
            run = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: not a saved run ({exc})") from None
        if not isinstance(run, dict) or "report" not in run or "fingerprint" not in run:
            raise InputError(f"{path}: not a saved run (no report or fingerprint)")
        runs.append(run)
    return runs


def pending(models: Iterable[str], variants: Iterable[Variant], saved: list[dict],
            selection: CaseSelection) -> list[tuple[str, Variant]]:
    """The (model, variant) runs still to do: those not saved. A saved run on other cases is an
    error (a directory holds one set of cases, so its tables compare like with like)."""
    done = {}
    for run in saved:
        if run["fingerprint"] != selection.fingerprint:
            raise InputError(f"{run_key(run['model'], run['variant'])} in this directory ran other cases "
                             f"({run['cases']} from {run['cases_file']}); use another directory")
        done[(run["model"], run["variant"])] = run
    variants = list(variants)
    return [(m, v) for m in models for v in variants if (m, v.name) not in done and not v.not_applicable(m)]


def check_same_cases(runs: list[dict]) -> None:
    prints = {r["fingerprint"] for r in runs}
    if len(prints) > 1:
        raise InputError("the saved runs are on different cases: "
                         + ", ".join(f"{run_key(r['model'], r['variant'])} ({r['cases']} cases)" for r in runs))


# ------------------------------------------------------------------ tables from saved runs


def _results(run: dict, ids: set[str] | None = None) -> list[CaseResult]:
    return [CaseResult(**{k: r[k] for k in RESULT_FIELDS}) for r in run["report"]["results"]
            if ids is None or r["id"] in ids]


def _cell(value, key: str) -> str:
    if value is None:
        return "-"
    if key in PERCENT_KEYS:
        return f"{value * 100:.1f} %"
    if key.endswith("_ms"):
        return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _md_table(header: list[str], rows: list[list[str]], text_columns: int) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < text_columns else "---:" for i in range(len(header))) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _ordered(runs: list[dict], variant_order: list[str]) -> list[dict]:
    models = list(dict.fromkeys(r["model"] for r in runs))
    rank = {name: i for i, name in enumerate(variant_order)}
    return sorted(runs, key=lambda r: (models.index(r["model"]), rank.get(r["variant"], len(rank)), r["variant"]))


def _variant_order(runs: list[dict]) -> list[str]:
    known = [v.name for v in VARIANTS]
    return known + sorted({r["variant"] for r in runs} - set(known))


def overall_table(runs: list[dict]) -> str:
    rows = [[r["model"], r["variant"]] + [_cell(r["report"]["overall"].get(k, r.get(k)), k) for k, _ in OVERALL_COLUMNS]
            for r in _ordered(runs, _variant_order(runs))]
    return _md_table(["model", "variant"] + [label for _, label in OVERALL_COLUMNS], rows, 2)


def category_table(runs: list[dict]) -> str:
    """Per category and model, EM then precision of each variant side by side."""
    order = _variant_order(runs)
    variants = [v for v in order if any(r["variant"] == v for r in runs)]
    by_key = {(r["model"], r["variant"]): r for r in runs}
    models = list(dict.fromkeys(r["model"] for r in runs))
    categories: list[str] = []
    for r in runs:
        categories += [c for c in r["report"]["by_category"] if c not in categories]
    categories.sort(key=lambda c: (CATEGORY_ORDER + (c,)).index(c))
    rows = []
    for category in categories:
        for model in models:
            cells = []
            for key in ("EM", "precision"):
                for v in variants:
                    run = by_key.get((model, v))
                    summary = run["report"]["by_category"].get(category, {}) if run else {}
                    cells.append(_cell(summary.get(key), key))
            n = next((by_key[(model, v)]["report"]["by_category"].get(category, {}).get("n")
                      for v in variants if (model, v) in by_key), None)
            rows.append([category, model, _cell(n, "n")] + cells)
    header = ["category", "model", "n"] + [f"EM {v}" for v in variants] + [f"precision {v}" for v in variants]
    return _md_table(header, rows, 2)


def xref_table(runs: list[dict]) -> str:
    """Cases that use a name from another file of their library, apart from the others."""
    rows = []
    for r in _ordered(runs, _variant_order(runs)):
        xref = set(r.get("xref_ids", ()))
        ids = {x["id"] for x in r["report"]["results"]}
        cells = []
        for subset in (xref, ids - xref):
            s = summarize(_results(r, subset), r["report"]["repl"])
            cells += [_cell(s["n"], "n"), _cell(s["EM"], "EM"), _cell(s["precision"], "precision")]
        rows.append([r["model"], r["variant"]] + cells)
    return _md_table(["model", "variant", "xref n", "xref EM", "xref precision", "other n", "other EM",
                      "other precision"], rows, 2)


def _middles(cases_file: Path) -> dict[str, str]:
    """Each case's reference by id, where the cases file is still there (else the column stays empty)."""
    try:
        return {c["id"]: c["middle"] for c in load_cases(cases_file)}
    except (InputError, OSError):
        return {}


def merged_evidence(runs: list[dict]) -> dict:
    check_same_cases(runs)
    if not runs:
        raise InputError("no saved runs")
    first = runs[0]
    middles = _middles(Path(first["cases_file"]))
    for run in runs:
        results = run["report"]["results"]
        if middles and all(r["id"] in middles for r in results):
            run["starts_right"] = sum(starts_with_reference(r["suggestion"], middles[r["id"]])
                                      for r in results) / max(1, len(results))
    legend = {v.name: {"flags": list(v.flags), "repl": v.repl, "what": v.what} for v in VARIANTS}
    return {"cases_file": first["cases_file"], "cases": first["cases"], "sample": first.get("sample"),
            "limit": first.get("limit"), "fingerprint": first["fingerprint"], "variants": legend,
            "runs": _ordered(runs, _variant_order(runs))}


def evidence_markdown(evidence: dict) -> str:
    runs = evidence["runs"]
    sample = f", {evidence['sample']} evenly spaced (--sample)" if evidence.get("sample") else ""
    limit = f", the first {evidence['limit']} (--limit)" if evidence.get("limit") else ""
    threads = sorted({str(r.get("threads")) for r in runs})
    used = list(dict.fromkeys(r["variant"] for r in runs))
    parts = [f"# Evidence on `{evidence['cases_file']}`", "",
             f"{evidence['cases']} cases{limit}{sample}; {', '.join(threads)} thread(s) a run; "
             "one `cljassist bench` process per row; latency is one-shot, request to final suggestion; "
             "`starts right`: the reference is all at the start of what was shown (an editor's accept-word "
             "or accept-line could take it), which credits a suggestion that runs on past the gap.", ""]
    for name in used:
        v = evidence["variants"].get(name)
        parts.append(f"- `{name}`: {v['what']} (bench flags: `{' '.join(v['flags']) or 'none'}`"
                     f"{', --nrepl' if v['repl'] else ', --no-repl'})" if v else f"- `{name}`: not in this script's table")
    models = list(dict.fromkeys(r["model"] for r in runs))
    table = {v.name: v for v in VARIANTS}
    considered = used + [v.name for v in VARIANTS if v.default and v.name not in used]
    not_run = [f"{run_key(m, name)} ({table[name].not_applicable(m)})" for name in considered if name in table
               for m in models if table[name].not_applicable(m)]
    if not_run:
        parts.append(f"- not applicable, so not run: {'; '.join(not_run)}")
    loads = [f"{run_key(r['model'], r['variant'])} {r['loadavg'][0]:.1f}→{r['loadavg'][1]:.1f}"
             for r in runs if r.get("loadavg")]
    parts += ["", "## Overall", "", overall_table(runs), "",
              "## Per category: EM and precision, each variant side by side", "", category_table(runs), "",
              "## Cases that use a name from another file of their library (xref) and the others", "",
              xref_table(runs), ""]
    if loads:
        parts += ["Load average (1 min) before → after each run (other jobs on the cores slow latency): "
                  + "; ".join(loads) + ".", ""]
    return "\n".join(parts)


# ------------------------------------------------------------------ running


def known_bench_flags(flags: tuple[str, ...]) -> bool:
    """Whether this checkout's `cljassist bench` accepts `flags`."""
    from cljassist.cli import build_parser

    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        try:
            build_parser().parse_args(["bench", "cases.jsonl", *flags])
        except SystemExit:
            return False
    return True


def bench_command(cases: Path, model: str, variant: Variant, selection: CaseSelection, threads: int,
                  nrepl: str | None, json_out: Path) -> list[str]:
    command = [sys.executable, "-m", "cljassist", "bench", str(cases), "--model", model, "--threads", str(threads),
               "--json", str(json_out)]
    if selection.limit:
        command += ["--limit", str(selection.limit)]
    if selection.sample:
        command += ["--sample", str(selection.sample)]
    command += ["--nrepl", nrepl] if variant.repl else ["--no-repl"]
    return command + list(variant.flags)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def shared_repl(out: Path, nrepl: str | None, selection: CaseSelection) -> Iterator[str]:
    """HOST:PORT of the REPL the REPL variants use: --nrepl's, or a bundled one started here with
    the bench classpath; either way every case namespace is required in it once, now."""
    from cljassist.context import ReplContextProvider
    from cljassist.repl.client import NreplClient
    from cljassist.repl.local_server import start_local_nrepl

    server = None
    if nrepl is None:
        sys.path.insert(0, str(ROOT / "scripts"))
        import bench_classpath  # noqa: PLC0415 - the script next to this one

        classpath = bench_classpath.classpath_roots()
        repl_dir = out / "repl"
        repl_dir.mkdir(parents=True, exist_ok=True)
        _progress(f"starting the bundled nREPL in {repl_dir} ({len(classpath)} source roots)")
        server = start_local_nrepl(repl_dir, classpath, timeout=120)
        nrepl = server.endpoint
    try:
        host, _, port = nrepl.rpartition(":")
        client = NreplClient.connect(host, int(port), timeout=30)
        provider = ReplContextProvider(client, timeout_s=30)
        try:
            started = time.perf_counter()
            loaded = [ns for ns in selection.namespaces if provider.ensure_loaded(ns)]
            _progress(f"REPL {nrepl}: loaded {len(loaded)} of {len(selection.namespaces)} case namespaces "
                      f"in {time.perf_counter() - started:.0f} s")
        finally:
            provider.close()
            client.close()
        yield nrepl
    finally:
        if server is not None:
            server.stop()


def run_one(cases: Path, out: Path, model: str, variant: Variant, selection: CaseSelection, threads: int,
            nrepl: str | None) -> dict:
    """One bench process; its report saved with what it ran as DIR/runs/MODEL@VARIANT.json."""
    target = run_path(out, model, variant.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    bench_json = target.with_suffix(".bench.partial")
    log = target.with_suffix(".log")
    command = bench_command(cases.resolve(), model, variant, selection, threads, nrepl, bench_json)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    _progress(f"{run_key(model, variant.name)}: {' '.join(command[2:])}")
    with open(log, "w", encoding="utf-8") as log_file:
        # in DIR: a .cljassist.edn of the checkout or of the cases' folder does not apply
        process = subprocess.Popen(command, cwd=out, env=env, stdout=log_file, stderr=subprocess.PIPE, text=True)
        for line in process.stderr:
            log_file.write(line)
            log_file.flush()
            _progress(f"  {run_key(model, variant.name)}: {line.rstrip()}")
        code = process.wait()
    if code != 0:
        raise CljassistError(f"{run_key(model, variant.name)}: cljassist bench exited with {code}; see {log}")
    report = json.loads(bench_json.read_text(encoding="utf-8"))
    ran = [r["id"] for r in report["results"]]
    if tuple(ran) != selection.ids:
        raise CljassistError(f"{run_key(model, variant.name)}: the bench ran other cases than selected")
    run = {"model": model, "variant": variant.name, "flags": list(variant.flags), "repl": variant.repl,
           "command": ["cljassist", *command[3:]], "cases_file": selection.cases_file, "cases": len(selection.ids),
           "limit": selection.limit, "sample": selection.sample, "fingerprint": selection.fingerprint,
           "xref_ids": list(selection.xref_ids), "threads": threads,
           "wall_s": round(time.perf_counter() - started, 1), "loadavg": [round(load_before, 2),
                                                                          round(os.getloadavg()[0], 2)],
           "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "report": report}
    write_atomic(target, json.dumps(run, ensure_ascii=False, indent=1) + "\n")
    bench_json.unlink()
    return run


def choose_variants(names: str | None) -> tuple[list[Variant], list[str]]:
    """(variants to run, notes on those skipped)."""
    table = {v.name: v for v in VARIANTS}
    if names:
        unknown = [n for n in names.split(",") if n not in table]
        if unknown:
            raise InputError(f"unknown variants {', '.join(unknown)} (known: {', '.join(table)})")
        wanted = [table[n] for n in names.split(",")]
    else:
        wanted = [v for v in VARIANTS if v.default]
    usable, notes = [], []
    for v in wanted:
        if known_bench_flags(v.flags):
            usable.append(v)
        else:
            notes.append(f"variant {v.name} skipped: this checkout's `cljassist bench` does not take {' '.join(v.flags)}")
    return usable, notes


def command_run(args: argparse.Namespace) -> int:
    out = Path(args.resume or args.out).absolute()  # each bench runs in DIR: its paths must not be relative to here
    selection = selection_of(Path(args.cases), args.limit, args.sample)
    models = args.models.split(",") if args.models else list(known_names())
    unknown = [m for m in models if m not in known_names()]
    if unknown:
        raise InputError(f"unknown models {', '.join(unknown)} (cljassist models lists them)")
    variants, notes = choose_variants(args.variants)
    for note in notes:
        _progress(note)
    saved = load_runs(out)
    if saved and not args.resume:
        raise InputError(f"{out} already holds {len(saved)} runs: go on with --resume {out}, or pick another --out")
    todo = pending(models, variants, saved, selection)
    for model in models:
        for v in variants:
            if v.not_applicable(model):
                _progress(f"variant {v.name} not run for {model}: {v.not_applicable(model)}")
    _progress(f"{len(selection.ids)} cases; {len(todo)} runs to do, {len(saved)} saved")
    out.mkdir(parents=True, exist_ok=True)
    needs_repl = any(v.repl for _, v in todo)
    failed = []
    with (shared_repl(out, args.nrepl, selection) if needs_repl else contextlib.nullcontext(None)) as nrepl:
        for model, variant in todo:
            try:
                run_one(Path(args.cases), out, model, variant, selection, args.threads, nrepl)
            except CljassistError as exc:  # the other runs go on; this one is done again on --resume
                _progress(f"evidence: {exc}")
                failed.append(run_key(model, variant.name))
    write_report(out)
    if failed:
        _progress(f"evidence: failed, not saved (rerun with --resume {out}): {', '.join(failed)}")
    return 1 if failed else 0


def write_report(out: Path) -> int:
    evidence = merged_evidence(load_runs(out))
    markdown = evidence_markdown(evidence)
    write_atomic(out / "evidence.json", json.dumps(evidence, ensure_ascii=False, indent=1) + "\n")
    write_atomic(out / "evidence.md", markdown)
    print(markdown, end="")
    return 0


# ------------------------------------------------------------------ the default choice (decide)

README_BEGIN = "<!-- default-models:begin -->"
README_END = "<!-- default-models:end -->"
ONE_SHOT_BUDGETS = (("p50_ms", ONE_SHOT_P50_TARGET),)
AS_YOU_TYPE_BUDGETS = (("warm_p50_ms", TYPING_WARM_P50_TARGET), ("warm_p95_ms", TYPING_WARM_P95_TARGET))
# What the README's section holds until `decide --readme` writes it.
PLACEHOLDER = "Not measured yet: `python3 scripts/evidence.py decide ... --readme README.md` writes the tables here."
RULE = "best EM on the cases whose latency fits the budget; if none fits, the fastest"


def _fits(row: dict, budgets) -> bool:
    return all(row.get(key) is not None and row[key] <= budget.value * (1000 if budget.unit == "s" else 1)
               for key, budget in budgets)


def _budget_text(budgets) -> str:
    names = {"p50_ms": "p50", "warm_p50_ms": "warm p50", "warm_p95_ms": "warm p95"}
    return ", ".join(f"{names[key]} ≤ {budget.shown()}" for key, budget in budgets)


def choose(rows: list[dict], budgets, speed_key: str) -> dict | None:
    """The rule: the best EM among the rows that fit the budgets (the faster on a tie); if none fits,
    the fastest."""
    fitting = [r for r in rows if r["fits"]]
    if fitting:
        return max(fitting, key=lambda r: (r["EM"] if r["EM"] is not None else -1, -(r[speed_key] or 0)))
    timed = [r for r in rows if r.get(speed_key) is not None]
    return min(timed, key=lambda r: r[speed_key]) if timed else None


def one_shot_rows(evidence: dict, variants: list[str], latency: dict | None = None) -> list[dict]:
    """EM and precision from `evidence`; p50/p95 from `latency` (an evidence file of a run with the
    cores to itself, on fewer cases) where it has the same model and variant, else from `evidence`."""
    timed = {(r["model"], r["variant"]): r["report"]["overall"] for r in (latency or {}).get("runs", ())}
    rows = []
    for run in evidence["runs"]:
        if run["variant"] not in variants:
            continue
        o = run["report"]["overall"]
        t = timed.get((run["model"], run["variant"]), o)
        row = {"model": run["model"], "variant": run["variant"], "EM": o.get("EM"), "precision": o.get("precision"),
               "p50_ms": t.get("p50_ms"), "p95_ms": t.get("p95_ms"),
               "timed_in_em_run": latency is not None and t is o}
        row["fits"] = _fits(row, ONE_SHOT_BUDGETS)
        rows.append(row)
    return rows


def typing_spread(report: dict) -> dict:
    """Warm latency over all keystrokes, and over the warm keystrokes that ran the model."""
    ours = report["paths"]["ours"]
    model_ms = [r["ms"] for r in report.get("records", {}).get("ours", [])
                if r.get("source") == "model" and not r.get("cold") and r.get("error") is None]
    return {"matched_share": ours.get("matched_share"), "offered_share": ours.get("offered_share"),
            "warm_p50_ms": ours["warm"]["p50_ms"], "warm_p95_ms": ours["warm"]["p95_ms"],
            "model_n": len(model_ms), "model_p50_ms": percentile(model_ms, 50), "model_p95_ms": percentile(model_ms, 95)}


def as_you_type_rows(evidence: dict, typing_reports: list[tuple[str, dict]], variant: str) -> list[dict]:
    """One row per typing report; its EM on the cases is the evidence's for the same model (matched
    by the model name both reports carry) in `variant`."""
    em_by_name = {}
    for run in evidence["runs"]:
        if run["variant"] == variant:
            em_by_name[run["report"]["model"]] = (run["model"], run["report"]["overall"].get("EM"))
            em_by_name[run["model"]] = (run["model"], run["report"]["overall"].get("EM"))
    rows = []
    for source, report in typing_reports:
        name, em = em_by_name.get(report.get("model"), (report.get("model"), None))
        options = report.get("options", {})
        row = {"model": name, "source": source, "candidates": options.get("candidates"), "EM": em,
               "repl": report.get("repl"), **typing_spread(report)}
        row["fits"] = _fits(row, AS_YOU_TYPE_BUDGETS)
        rows.append(row)
    return rows


def _load_span(evidence: dict) -> str:
    """The range of the 1-minute load averages its runs saw, before and after each."""
    loads = [x for r in evidence["runs"] for x in (r.get("loadavg") or ())]
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else "not recorded"


def decision_markdown(evidence: dict, typing_reports: list[tuple[str, dict]], one_shot_variants: list[str],
                      command: str, latency: dict | None = None, among: list[str] | None = None,
                      why_not: str = "") -> str:
    """`among`: the models that may be a default (None: all); the others are shown, marked `why_not`."""
    shot = one_shot_rows(evidence, one_shot_variants, latency)
    typing = as_you_type_rows(evidence, typing_reports, one_shot_variants[0])
    eligible = lambda rows: [r for r in rows if among is None or r["model"] in among]  # noqa: E731
    chosen_shot = choose(eligible(shot), ONE_SHOT_BUDGETS, "p50_ms")
    chosen_typing = choose(eligible(typing), AS_YOU_TYPE_BUDGETS, "warm_p50_ms")

    def mark(row, chosen):
        if among is not None and row["model"] not in among:
            return f"not a default: {why_not}" if why_not else "not a default"
        return "**chosen**" if row is chosen else ("fits" if row["fits"] else "too slow")

    parts = [f"Generated by `{command}` from the saved reports; do not edit by hand.", "",
             f"The rule, for each use: {RULE}"
             + (f", among {', '.join(f'`{m}`' for m in among)}" if among is not None else "")
             + f". Registry defaults now: one-shot `{default_model(ONE_SHOT).name}`, "
             f"as-you-type `{default_model(AS_YOU_TYPE).name}`.", "",
             f"**One-shot** (`complete`, `watch`, `bench CASES`): {evidence['cases']} cases of "
             f"`{evidence['cases_file']}`, budget {_budget_text(ONE_SHOT_BUDGETS)}"
             + (f"; p50 and p95 from a separate run of {latency['cases']} of those cases on a quieter machine "
                f"(1-min load average {_load_span(latency)} against {_load_span(evidence)} for the EM run)"
                if latency else "") + ".", ""]
    star = lambda r: " *" if r.get("timed_in_em_run") else ""  # noqa: E731
    rows = [[r["model"], r["variant"], _cell(r["EM"], "EM"), _cell(r["precision"], "precision"),
             _cell(r["p50_ms"], "p50_ms") + star(r), _cell(r["p95_ms"], "p95_ms") + star(r), mark(r, chosen_shot)]
            for r in shot]
    parts += [_md_table(["model", "variant", "EM", "precision", "p50", "p95", "budget"], rows, 2), ""]
    if any(r.get("timed_in_em_run") for r in shot):
        parts += ["\\* timed in the EM run only (the quieter run left that model out).", ""]
    parts += [f"**As you type** (`serve`, `proxy`, `repl`, `bench --typing`): `cljassist bench --typing`, "
              f"budget {_budget_text(AS_YOU_TYPE_BUDGETS)} over all keystrokes; EM from the one-shot table "
              f"({one_shot_variants[0]}).", ""]
    rows = [[r["model"], _cell(r["candidates"], "n"), _cell(r["EM"], "EM"), _cell(r["matched_share"], "matched_share"),
             _cell(r["offered_share"], "offered_share"), _cell(r["warm_p50_ms"], "warm_p50_ms"),
             _cell(r["warm_p95_ms"], "warm_p95_ms"), f"{_cell(r['model_p50_ms'], 'model_p50_ms')} / "
             f"{_cell(r['model_p95_ms'], 'model_p95_ms')} ({r['model_n']})", mark(r, chosen_typing)] for r in typing]
    parts += [_md_table(["model", "candidates", "EM", "matched", "offered", "warm p50", "warm p95",
                         "model ran: warm p50 / p95 (keys)", "budget"], rows, 1), ""]
    return "\n".join(parts)


def replace_between_markers(text: str, body: str) -> str:
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise InputError(f"README has no {README_BEGIN} ... {README_END} section")
    return text[:start + len(README_BEGIN)] + "\n" + body + text[end:]


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def command_decide(args: argparse.Namespace) -> int:
    evidence_path = Path(args.evidence)
    evidence = json.loads(evidence_path.read_text(encoding="utf-8"))
    typing = [(_relative(Path(p)), json.loads(Path(p).read_text(encoding="utf-8"))) for p in args.typing]
    variants = args.one_shot_variants.split(",")
    command = " ".join(["python3 scripts/evidence.py decide", "--evidence", _relative(evidence_path),
                        *(["--typing", *(p for p, _ in typing)] if typing else [])]
                       + ([f"--one-shot-variants {args.one_shot_variants}"] if variants != ["no-repl"] else []))
    latency = json.loads(Path(args.latency).read_text(encoding="utf-8")) if args.latency else None
    if latency:
        command += f" --latency {_relative(Path(args.latency))}"
    among = args.among.split(",") if args.among else None
    if among is not None:
        command += f" --among {args.among}" + (f" --why-not {shlex.quote(args.why_not)}" if args.why_not else "")
    body = decision_markdown(evidence, typing, variants, command, latency, among, args.why_not or "")
    print(body, end="")
    if args.readme:
        readme = Path(args.readme)
        write_atomic(readme, replace_between_markers(readme.read_text(encoding="utf-8"), body))
    return 0


# ------------------------------------------------------------------ command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evidence.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the bench for every model and variant; save each run")
    run.add_argument("cases", metavar="CASES.jsonl")
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", metavar="DIR", help="a new directory for the runs")
    where.add_argument("--resume", metavar="DIR", help="go on in DIR: its finished runs are kept")
    run.add_argument("--models", help="comma-separated names (default: every named model)")
    run.add_argument("--variants", help="comma-separated, from: " + ", ".join(
        v.name + ("" if v.default else " (opt-in)") for v in VARIANTS))
    run.add_argument("--sample", type=int, metavar="N", help="N cases evenly spaced through the file")
    run.add_argument("--limit", type=int, metavar="N", help="only the first N cases")
    run.add_argument("--threads", type=int, default=1, help="llama.cpp threads per bench process (1)")
    run.add_argument("--nrepl", metavar="HOST:PORT", help="a REPL that has the cases' libraries on its classpath "
                                                          "(default: start the bundled one)")
    report = sub.add_parser("report", help="merge DIR's saved runs into DIR/evidence.json and .md, and print it")
    report.add_argument("dir", metavar="DIR")
    decide = sub.add_parser("decide", help="the default-model tables from the evidence and typing reports")
    decide.add_argument("--evidence", required=True, metavar="EVIDENCE.json")
    decide.add_argument("--typing", nargs="+", action="extend", default=[], metavar="TYPING.json",
                        help="`cljassist bench --typing --json` reports, one per model (and settings)")
    decide.add_argument("--one-shot-variants", default="no-repl",
                        help="evidence variants the one-shot choice is made over (default no-repl: the model "
                             "as every user gets it); the first also gives the as-you-type EM")
    decide.add_argument("--among", metavar="MODEL,...", help="only these may be a default (the others are shown)")
    decide.add_argument("--why-not", metavar="TEXT", help="said of the models --among leaves out")
    decide.add_argument("--latency", metavar="EVIDENCE.json",
                        help="p50/p95 from this evidence file instead (a run on a quieter machine)")
    decide.add_argument("--readme", metavar="README.md", help="write the tables between its default-models markers")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return command_run(args)
        if args.command == "report":
            return write_report(Path(args.dir))
        return command_decide(args)
    except CljassistError as exc:
        print(f"evidence: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
