"""Fit a model's score calibration from `cljassist bench --json` results and draw the
precision-vs-offered curve.

    python3 scripts/calibrate.py BENCH.json[=LABEL]... [--model NAME [--write]] [--png CURVE.png]
        (a BENCH.json may also be a run saved by scripts/evidence.py, DIR/runs/MODEL@VARIANT.json)
        [--target-precision 0.5] [--min-offered 0.1]

Each bench JSON records, per case, the suggestion ranked first before any score threshold: its raw
confidence, its checks and whether it is exactly right (keys `confidence`, `checks`, `top_em`).

With --model NAME, every file given is that model's (with a REPL and without, say) and they are
pooled into one calibration (cljassist/calibration.py: a monotone table of raw confidence to the
probability of an exact match, per verification level) and one threshold, the rule printed below
the table; --write stores both in cljassist/resources/models.toml under that model, with this
command, the date and the cases. Without --model each file is fitted on its own (a comparison of
models in one picture); nothing is written.

Printed per file: the threshold sweep (threshold, offered share, precision, EM), the chosen threshold,
how well each cheap feature separates right from wrong (AUC: 0.5 is chance), and the precision and
offered share at the threshold chosen on the other folds (5-fold, by case order), the honest
number, since the table is fitted on the same cases it is judged on.

The PNG (matplotlib: `pip install -e .[plots]`) has one line per file: precision against the share of
cases offered a suggestion as the threshold rises, the chosen threshold marked.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cljassist.calibration import (  # noqa: E402
    LEVELS, Calibration, CurvePoint, TopSuggestion, fit_calibration, level_of, scored, sweep,
)
from cljassist.errors import InputError  # noqa: E402
from cljassist.fileio import write_atomic  # noqa: E402
from cljassist.model.registry import REGISTRY_FILE, RegistryError, named_model, parse_registry  # noqa: E402

DEFAULT_TARGET_PRECISION = 0.5
DEFAULT_MIN_OFFERED = 0.1
FOLDS = 5
FEATURES = ("confidence", "margin", "n_tokens")


@dataclass
class BenchRun:
    label: str
    path: Path
    model: str
    repl: bool
    cases: list[TopSuggestion]
    features: list[dict]  # per case with a top suggestion: the cheap features and whether it was right


def read_run(spec: str) -> BenchRun:
    """A bench JSON given as PATH or PATH=LABEL."""
    path, label = Path(spec), None
    if not path.is_file() and "=" in spec:
        head, label = spec.rsplit("=", 1)
        path = Path(head)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not JSON ({exc.msg})") from None
    if isinstance(report, dict) and isinstance(report.get("report"), dict):
        report = report["report"]  # a run saved by scripts/evidence.py: the bench report inside
    results = report.get("results") if isinstance(report, dict) else None
    if not results:
        raise InputError(f"{path}: not a `cljassist bench --json` report with results")
    if any("confidence" not in r or "top_em" not in r for r in results):
        raise InputError(f"{path}: its cases carry no 'confidence'/'top_em' (written by an older bench: run it again)")
    cases, features = [], []
    for r in results:
        if r["confidence"] is None:
            cases.append(TopSuggestion(None, level_of({}), False))
            continue
        cases.append(TopSuggestion(float(r["confidence"]), level_of(r.get("checks") or {}), bool(r["top_em"])))
        features.append({"right": bool(r["top_em"]), **{f: r.get(f) for f in FEATURES}})
    return BenchRun(label or path.stem, path, str(report.get("model")), bool(report.get("repl")), cases, features)


def auc(pairs: list[tuple[float, bool]]) -> float | None:
    """How often a right case has a higher feature than a wrong one (ties count half)."""
    right = [x for x, ok in pairs if ok]
    wrong = [x for x, ok in pairs if not ok]
    if not right or not wrong:
        return None
    wins = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
    return wins / (len(right) * len(wrong))


def held_out(cases: list[TopSuggestion], target: float, min_offered: float) -> tuple[float | None, float]:
    """(precision, offered share) on each fold at the threshold fitted on the other folds."""
    shown = right = 0
    for fold in range(FOLDS):
        train = [c for i, c in enumerate(cases) if i % FOLDS != fold]
        test = [c for i, c in enumerate(cases) if i % FOLDS == fold]
        if not train or not test:
            continue
        calibration = fit_calibration(train, target, min_offered)
        for score, ok in scored(test, calibration):
            if score is not None and score >= calibration.min_score:
                shown += 1
                right += ok
    return (right / shown if shown else None), shown / len(cases)


def format_sweep(curve: list[CurvePoint], chosen: float) -> str:
    lines = [f"{'threshold':>9}  {'offered':>7}  {'precision':>9}  {'EM':>6}"]
    for p in curve:
        precision = "-" if p.precision is None else f"{p.precision:.3f}"
        mark = "  <- chosen" if p.threshold == chosen else ""
        lines.append(f"{p.threshold:9.3f}  {p.offered:7.3f}  {precision:>9}  {p.em:6.3f}{mark}")
    return "\n".join(lines)


def report_run(run: BenchRun, calibration: Calibration, target: float, min_offered: float) -> list[CurvePoint]:
    curve = sweep(scored(run.cases, calibration))
    levels = ", ".join(f"{lv} {sum(c.level == lv and c.confidence is not None for c in run.cases)}" for lv in LEVELS)
    print(f"== {run.label}  ({run.path}; model {run.model}; repl {'yes' if run.repl else 'no'}; "
          f"{len(run.cases)} cases; ranked first by level: {levels})")
    print(format_sweep(curve, calibration.min_score))
    separation = []
    for feature in FEATURES:
        value = auc([(f[feature], f["right"]) for f in run.features if f[feature] is not None])
        separation.append(f"{feature} {'-' if value is None else f'{value:.3f}'}")
    print("AUC (right vs wrong): " + ", ".join(separation))
    precision, offered = held_out(run.cases, target, min_offered)
    print(f"held out ({FOLDS}-fold): precision {'-' if precision is None else f'{precision:.3f}'}, "
          f"offered {offered:.3f}")
    print()
    return curve


def plot(curves: list[tuple[str, list[CurvePoint], float]], png: Path, title: str) -> None:
    import matplotlib  # noqa: PLC0415  (only for the picture: the extra `plots`)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 5))
    for label, curve, chosen in curves:
        points = [p for p in curve if p.precision is not None]
        (line,) = ax.plot([p.offered for p in points], [p.precision for p in points], marker=".", label=label)
        at = next((p for p in points if p.threshold == chosen), None)
        if at is not None:
            ax.plot([at.offered], [at.precision], marker="o", markersize=11, markerfacecolor="none",
                    color=line.get_color())
            ax.annotate(f"min-score {chosen:.3f}", (at.offered, at.precision), textcoords="offset points",
                        xytext=(6, 6), fontsize=8, color=line.get_color())
    ax.set_xlabel("share of cases offered a suggestion")
    ax.set_ylabel("precision (offered suggestions exactly right)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- models.toml

def calibration_toml(calibration: Calibration, date: str, command: str, source: str, cases: str) -> str:
    lines = ["[model.calibration]", f"date = {json.dumps(date)}", f"command = {json.dumps(command)}",
             f"source = {json.dumps(source)}", f"cases = {json.dumps(cases)}", f"rule = {json.dumps(calibration.rule)}",
             f"min_score = {calibration.min_score}"]
    for level in LEVELS:
        if level in calibration.tables:
            steps = ", ".join(f"[{x}, {p}]" for x, p in calibration.tables[level])
            lines.append(f"{level} = [{steps}]")
    return "\n".join(lines) + "\n"


_HEADER = re.compile(r"^\s*\[")
_MODEL_HEADER = re.compile(r"^\s*\[\[model\]\]\s*$")
_CALIBRATION_HEADER = re.compile(r"^\s*\[model\.calibration\]\s*$")


def with_calibration(text: str, model: str, section: str) -> str:
    """The registry text with `section` as the [model.calibration] of `model` (replacing its old one)."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _MODEL_HEADER.match(line)] + [len(lines)]
    name_line = re.compile(r'^\s*name\s*=\s*"' + re.escape(model) + r'"\s*$')
    for begin, end in zip(starts, starts[1:]):
        if any(name_line.match(line) for line in lines[begin:end]):
            break
    else:
        raise InputError(f"{model}: no such [[model]] in the registry")
    block = lines[begin:end]
    at = next((i for i, line in enumerate(block) if _CALIBRATION_HEADER.match(line)), None)
    if at is not None:  # the old section runs to the next header of the block
        stop = next((j for j in range(at + 1, len(block)) if _HEADER.match(block[j])), len(block))
        block = block[:at] + block[stop:]
    while block and not block[-1].strip():
        block.pop()
    block += ["\n", section]
    if end < len(lines):
        block.append("\n")
    return "".join(lines[:begin] + block + lines[end:])


def write_calibration(model: str, calibration: Calibration, command: str, source: str, cases: str,
                      registry: Path = REGISTRY_FILE) -> None:
    date = datetime.date.today().isoformat()
    text = with_calibration(registry.read_text(encoding="utf-8"), model,
                            calibration_toml(calibration, date, command, source, cases))
    import tomllib  # noqa: PLC0415

    written = parse_registry(tomllib.loads(text), str(registry))[model].calibration
    if written != calibration:
        raise RegistryError(f"{registry}: the calibration written for {model} does not read back the same")
    write_atomic(registry, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="BENCH.json[=LABEL]")
    parser.add_argument("--model", help="a named model: pool the files into its calibration")
    parser.add_argument("--write", action="store_true", help="store the calibration in models.toml (needs --model)")
    parser.add_argument("--png", type=Path, help="draw the precision-vs-offered curve here")
    parser.add_argument("--target-precision", type=float, default=DEFAULT_TARGET_PRECISION)
    parser.add_argument("--min-offered", type=float, default=DEFAULT_MIN_OFFERED)
    args = parser.parse_args(argv)
    try:
        if args.write and not args.model:
            raise InputError("--write needs --model NAME")
        if args.model and named_model(args.model) is None:
            raise InputError(f"{args.model}: not a named model (cljassist models lists them)")
        for value, name in ((args.target_precision, "--target-precision"), (args.min_offered, "--min-offered")):
            if not 0 <= value <= 1:
                raise InputError(f"{name} must be between 0 and 1")
        runs = [read_run(spec) for spec in args.runs]
    except InputError as exc:
        print(f"calibrate: {exc}", file=sys.stderr)
        return 2
    target, min_offered = args.target_precision, args.min_offered
    curves = []
    if args.model:
        pooled = [c for run in runs for c in run.cases]
        calibration = fit_calibration(pooled, target, min_offered)
        for run in runs:
            curves.append((run.label, report_run(run, calibration, target, min_offered), calibration.min_score))
        if len(runs) > 1:
            everything = BenchRun("all files", Path("-"), args.model, any(r.repl for r in runs), pooled,
                                  [f for r in runs for f in r.features])
            report_run(everything, calibration, target, min_offered)
        print(f"{args.model}: min_score {calibration.min_score}: {calibration.rule}")
        for level, steps in calibration.tables.items():
            print(f"  {level}: " + ", ".join(f"from {x:.2f}: {p:.3f}" for x, p in steps))
        chosen = [calibration]
    else:
        chosen = []
        for run in runs:
            calibration = fit_calibration(run.cases, target, min_offered)
            curves.append((run.label, report_run(run, calibration, target, min_offered), calibration.min_score))
            print(f"{run.label}: min_score {calibration.min_score}")
            chosen.append(calibration)
    if args.png:
        title = (f"{args.model or 'per file'}: precision vs offered as min-score rises "
                 f"(target {target:.0%}, at least {min_offered:.0%} offered)")
        plot(curves, args.png, title)
        print(f"wrote {args.png}")
    if args.write:
        cases = "; ".join(f"{r.path.name}: {len(r.cases)} cases, REPL {'on' if r.repl else 'off'}" for r in runs)
        command = "python3 scripts/calibrate.py " + shlex.join(argv if argv is not None else sys.argv[1:])
        source = str(args.png) if args.png else "the table this command prints"
        write_calibration(args.model, chosen[0], command, source, cases)
        print(f"wrote the calibration of {args.model} into {REGISTRY_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
