"""`cljassist models`: every named model with its size, whether it is installed, the state of its
checksum, its FIM family and the numbers our own bench measured for it.

Nothing here loads a model; a chunked model's cached file is hashed only when it changed since it
was last verified (cljassist/model/assemble.py), so listing stays quick.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cljassist.errors import ModelNotFound
from cljassist.model.assemble import CacheState, cache_state, missing_part
from cljassist.model.locate import adapter_path, installed_model_path
from cljassist.model.registry import ChunkedGguf, Measurement, NamedModel, load_registry

NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class CatalogRow:
    model: NamedModel
    size: int | None  # bytes; None when unknown (a shipped model that is not installed)
    installed: bool
    problem: str | None  # why it is not installed: the first missing part, with the pip command
    checksum: str  # CacheState's text, or how a shipped file is checked


def catalog(cache_dir: Path | None = None) -> list[CatalogRow]:
    rows = []
    for model in load_registry().values():
        try:
            adapter_path(model)
        except ModelNotFound as exc:  # a tuned model whose adapter is not trained (or not the pinned one)
            rows.append(CatalogRow(model, None, False, str(exc), "-"))
            continue
        if isinstance(model.source, ChunkedGguf):
            problem = missing_part(model)
            state = cache_state(model, cache_dir)
            rows.append(CatalogRow(model, model.source.size, problem is None, problem, state.value))
            continue
        try:
            path = installed_model_path(model)
        except ModelNotFound as exc:
            rows.append(CatalogRow(model, None, False, str(exc), "-"))
            continue
        rows.append(CatalogRow(model, path.stat().st_size, True, None, "as pip installed it (not pinned)"))
    return rows


def measured_text(m: Measurement) -> str:
    """One measurement in a line: the metrics it has, then what was measured."""
    metrics = [f"{label} {fmt(v)}" for label, v, fmt in (
        ("EM", m.em, lambda v: f"{v:.1%}"), ("precision", m.precision, lambda v: f"{v:.1%}"),
        ("ES", m.es, lambda v: f"{v:.2f}"), ("p50", m.p50_ms, lambda v: f"{v / 1000:.1f} s"),
        ("p95", m.p95_ms, lambda v: f"{v / 1000:.1f} s")) if v is not None]
    threads = f", {m.threads} thread{'s' if m.threads != 1 else ''}" if m.threads else ""
    return f"{', '.join(metrics)} ({m.cases}; REPL {m.repl}{threads}; {m.date})"


def default_text(model: NamedModel) -> str:
    """Which uses (registry.USES) load this model when none is named, with the settings that go with it."""
    parts = []
    for use in model.default:
        settings = model.default_settings.get(use)
        parts.append(use + (" (" + ", ".join(f"{k} {v}" for k, v in settings.items()) + ")" if settings else ""))
    return ", ".join(parts) or "-"


def format_catalog(rows: list[CatalogRow]) -> str:
    """The table `cljassist models` prints, then each measurement's command and source."""
    header = ("name", "default for", "size", "installed", "checksum", "FIM family", "our bench")
    table = [header]
    for r in rows:
        bench = measured_text(r.model.measured[-1]) if r.model.measured else NOT_MEASURED
        table.append((r.model.name + (" (default)" if r.model.default else ""), default_text(r.model),
                      f"{r.size / 1e6:.0f} MB" if r.size is not None else "-",
                      "yes" if r.installed else "no", r.checksum, r.model.fim_family, bench))
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in table]
    for r in rows:
        lines.append("")
        lines.append(f"{r.model.name}: {r.model.description}; {r.model.license}")
        if r.problem:
            lines.append(f"  not installed: {r.problem}")
        elif isinstance(r.model.source, ChunkedGguf) and r.checksum != CacheState.VERIFIED.value:
            lines.append("  assembled and verified on first use")
        for m in r.model.measured:
            lines.append(f"  measured {m.date}: {m.command}")
            lines.append(f"    output kept in {m.source}")
        record = r.model.calibration_record
        if record is None:
            lines.append("  scores: raw confidence (no calibration), nothing held back by default")
        else:
            lines.append(f"  scores: calibrated {record.date}, default min-score {record.calibration.min_score}: "
                         f"{record.command}")
            lines.append(f"    curve in {record.source}")
    lines.append("")
    lines.append("Without --model or :model, complete, watch and bench CASES load the one-shot default; "
                 "serve, proxy, repl and bench --typing the as-you-type default.")
    lines.append("Use one with --model NAME or {:model \"NAME\"} in .cljassist.edn; "
                 "install one with: pip install $(cljassist models --requirements NAME)")
    return "\n".join(lines)


__all__ = ["CatalogRow", "catalog", "default_text", "format_catalog", "measured_text", "NOT_MEASURED"]
